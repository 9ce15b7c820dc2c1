//! Request failures, sorted into the kinds a load test counts: rejected by the server's
//! admission control, timed out, or anything else.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// How a load test counts a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The server refused the request at once: HTTP 429 / RESOURCE_EXHAUSTED (queue full).
    Rejected,
    /// The client's timeout ran out, or the server dropped the request at its deadline
    /// (HTTP 504 / DEADLINE_EXCEEDED).
    Timeout,
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the address (connection refused, unknown host, unreachable).
    #[error("cannot connect to {url}: {reason} (is csp-server running there?)")]
    Connect { url: String, reason: String },
    #[error("no response from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The server answered with an error status and (usually) its JSON message.
    #[error("server error {status} ({kind}): {message}")]
    Server { status: String, kind: String, message: String, class: ErrorKind },
    /// The connection broke, or the answer was not what the API promises.
    #[error("{0}")]
    Protocol(String),
    /// Bad input on the client side (unreadable image file, bad argument).
    #[error("{0}")]
    Input(String),
}

impl ClientError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Server { class, .. } => *class,
            _ => ErrorKind::Other,
        }
    }

    /// An HTTP error response: `status` and the body the server sent.
    pub fn from_http(status: u16, reason: &str, body: &str) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let field = |name: &str| parsed.as_ref().and_then(|v| v[name].as_str()).map(str::to_owned);
        let message = field("error").unwrap_or_else(|| {
            let text = body.trim();
            if text.is_empty() {
                "(empty body)".to_owned()
            } else {
                text.chars().take(500).collect()
            }
        });
        let class = match status {
            429 => ErrorKind::Rejected,
            504 | 408 => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        };
        ClientError::Server {
            status: format!("HTTP {status} {reason}").trim_end().to_owned(),
            kind: field("kind").unwrap_or_else(|| "unknown".to_owned()),
            message,
            class,
        }
    }

    /// A gRPC error status. Transport failures show up as UNAVAILABLE with the cause inside.
    pub fn from_status(url: &str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        let class = match status.code() {
            Code::ResourceExhausted => ErrorKind::Rejected,
            Code::DeadlineExceeded => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        };
        if status.code() == Code::Unavailable && looks_like_connect_failure(&format!("{status:?}")) {
            return ClientError::Connect { url: url.to_owned(), reason: "connection refused".to_owned() };
        }
        if status.code() == Code::Cancelled && message.contains("Timeout expired") {
            return ClientError::Timeout { url: url.to_owned(), timeout: Duration::ZERO };
        }
        ClientError::Server {
            status: format!("gRPC {:?}", status.code()),
            kind: grpc_kind(status.code()),
            message,
            class,
        }
    }

    /// A reqwest failure before any response came.
    pub fn from_reqwest(url: &str, timeout: Duration, e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            return ClientError::Timeout { url: url.to_owned(), timeout };
        }
        if e.is_connect() {
            return ClientError::Connect { url: url.to_owned(), reason: root_cause(e) };
        }
        ClientError::Protocol(format!("request to {url} failed: {}", root_cause(e)))
    }
}

fn grpc_kind(code: tonic::Code) -> String {
    format!("{code:?}").chars().fold(String::new(), |mut out, c| {
        if c.is_uppercase() && !out.is_empty() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
        out
    })
}

fn looks_like_connect_failure(debug: &str) -> bool {
    let text = debug.to_ascii_lowercase();
    ["connection refused", "tcp connect error", "dns error", "failed to lookup", "network is unreachable"]
        .iter()
        .any(|needle| text.contains(needle))
}

/// The innermost error message of a chain: "connection refused" rather than "error sending request".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_carry_the_servers_message_and_kind() {
        let e = ClientError::from_http(404, "Not Found", r#"{"error":"model `x` not found","kind":"model_not_found"}"#);
        assert_eq!(e.to_string(), "server error HTTP 404 Not Found (model_not_found): model `x` not found");
        assert_eq!(e.kind(), ErrorKind::Other);
        assert_eq!(ClientError::from_http(429, "Too Many Requests", "{}").kind(), ErrorKind::Rejected);
        assert_eq!(ClientError::from_http(504, "Gateway Timeout", "").kind(), ErrorKind::Timeout);
        let plain = ClientError::from_http(502, "Bad Gateway", "upstream down");
        assert!(plain.to_string().ends_with("upstream down"), "{plain}");
    }

    #[test]
    fn grpc_statuses_map_to_kinds() {
        let url = "http://x";
        let e = ClientError::from_status(url, &tonic::Status::resource_exhausted("queue full"));
        assert_eq!(e.kind(), ErrorKind::Rejected);
        assert!(e.to_string().contains("queue full"));
        assert!(e.to_string().contains("resource_exhausted"));
        let e = ClientError::from_status(url, &tonic::Status::deadline_exceeded("late"));
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let e = ClientError::from_status(url, &tonic::Status::invalid_argument("bad image"));
        assert_eq!(e.kind(), ErrorKind::Other);
    }
}

//! `x-request-id` on both transports: taken from the client when it sends a usable one, made here
//! otherwise, echoed on the response (HTTP header, gRPC metadata), and carried by every log line
//! of the request as the `id` field of its tracing span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

/// The header (gRPC: metadata key) both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id kept; a longer one, or one with other than visible ASCII, is replaced, so a
/// client cannot forge log lines or bloat them.
pub const MAX_LEN: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

/// Wraps a transport's whole service.
#[derive(Clone, Copy, Debug)]
pub struct RequestIdLayer(pub Transport);

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner, transport: self.0 }
    }
}

#[derive(Clone, Debug)]
pub struct RequestId<S> {
    inner: S,
    transport: Transport,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = request.headers().get(&HEADER).filter(|v| usable(v)).cloned().unwrap_or_else(generate);
        // Handlers (and anything they call) see the id the response will carry.
        request.headers_mut().insert(HEADER, id.clone());
        let span = tracing::info_span!(
            "request",
            id = id.to_str().unwrap_or_default(),
            method = %request.method(),
            path = request.uri().path(),
        );
        let transport = self.transport;
        let started = Instant::now();
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let mut result = response.await;
                if let Ok(response) = &mut result {
                    response.headers_mut().insert(HEADER, id);
                    log_outcome(transport, response, started);
                }
                result
            }
            .instrument(span),
        )
    }
}

/// A client id is kept when it is 1..=MAX_LEN visible ASCII characters.
fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A random (version 4) UUID.
fn generate() -> HeaderValue {
    let bits = (fastrand::u128(..) & !(0xf000 << 64) | (0x4000 << 64)) & !(0xc << 60) | (0x8 << 60);
    let hex = format!("{bits:032x}");
    let text = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// One line per finished request: errors at `info` (client's) or `warn` (server's), the rest at
/// `debug` (`RUST_LOG=debug` shows every request).
fn log_outcome<R>(transport: Transport, response: &Response<R>, started: Instant) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match transport {
        Transport::Http => {
            let status = response.status();
            if status.is_server_error() {
                tracing::warn!(status = status.as_u16(), ms, "request failed");
            } else if status.is_client_error() {
                tracing::info!(status = status.as_u16(), ms, "request refused");
            } else {
                tracing::debug!(status = status.as_u16(), ms, "request done");
            }
        }
        Transport::Grpc => {
            // An RPC that fails before its first message answers "trailers only": the status is in
            // the headers. Otherwise it comes in trailers, after this point.
            let code = response.headers().get("grpc-status").map(|v| tonic::Code::from_bytes(v.as_bytes()));
            match code {
                Some(tonic::Code::Ok) | None => tracing::debug!(ms, "rpc answered"),
                Some(code) if server_side(code) => tracing::warn!(code = ?code, ms, "rpc failed"),
                Some(code) => tracing::info!(code = ?code, ms, "rpc refused"),
            }
        }
    }
}

fn server_side(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Internal | Unknown | DataLoss | Unimplemented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_version_4_uuids() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(groups[2].starts_with('4'), "{text}");
        assert!("89ab".contains(&groups[3][..1]), "{text}");
        assert!(usable(&a));
    }

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        assert!(usable(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!usable(&HeaderValue::from_static("")));
        assert!(!usable(&HeaderValue::from_static("two words")));
        assert!(!usable(&HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).unwrap()));
        assert!(usable(&HeaderValue::from_str(&"a".repeat(MAX_LEN)).unwrap()));
        assert!(!usable(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
    }
}

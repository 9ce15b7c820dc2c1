//! What every RPC shares at the door: the one mapping from core errors to gRPC statuses, the API
//! key check, and the client's deadline.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::core::InferError;

/// Metadata key carrying [`InferError::kind`] on error statuses, for clients that branch on it.
pub const ERROR_KIND_KEY: &str = "csp-error-kind";

/// The gRPC code of each core error. Too-large inputs are the caller's to fix (INVALID_ARGUMENT);
/// RESOURCE_EXHAUSTED is kept for load, so clients know a retry may succeed.
pub fn code_of(err: &InferError) -> Code {
    match err {
        InferError::ModelNotFound(_) => Code::NotFound,
        InferError::InvalidInput(_) | InferError::BadImage { .. } | InferError::TooLarge(_) => Code::InvalidArgument,
        InferError::Overloaded(_) => Code::ResourceExhausted,
        InferError::DeadlineExceeded => Code::DeadlineExceeded,
        InferError::Unavailable(_) => Code::Unavailable,
        InferError::Internal(_) => Code::Internal,
    }
}

/// The status a unary RPC returns for `err`: its code, its message, and its kind in metadata.
pub fn to_status(err: &InferError) -> Status {
    let mut status = Status::new(code_of(err), err.to_string());
    if let Ok(kind) = err.kind().parse() {
        status.metadata_mut().insert(ERROR_KIND_KEY, kind);
    }
    status
}

/// Checks `authorization: Bearer <key>` when the server has an API key.
#[derive(Clone, Default)]
pub struct ApiKey(Option<std::sync::Arc<str>>);

/// Says whether a key is set, never which.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ApiKey(<redacted>)" } else { "ApiKey(none)" })
    }
}

impl ApiKey {
    pub fn new(key: Option<String>) -> Self {
        ApiKey(key.filter(|k| !k.is_empty()).map(Into::into))
    }

    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.0 else { return Ok(()) };
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <key>` metadata"));
        };
        let given = value.to_str().ok().and_then(bearer_token);
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("invalid API key")),
            None => Err(Status::unauthenticated("`authorization` metadata must be `Bearer <key>`")),
        }
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so response time does not leak how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The client's deadline from the `grpc-timeout` header, if it sent one. A malformed value is
/// ignored, as tonic's own timeout layer ignores it.
pub fn client_deadline(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    // tonic's transport answers CANCELLED when the same timeout fires first; end a little earlier
    // so the client gets DEADLINE_EXCEEDED from us.
    parse_grpc_timeout(value).map(|d| Instant::now() + d.saturating_sub(DEADLINE_MARGIN))
}

/// `grpc-timeout` is at most 8 ASCII digits followed by a unit: H, M, S, m (milli), u (micro), n (nano).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_code() {
        let cases = [
            (InferError::ModelNotFound("m".into()), Code::NotFound),
            (InferError::InvalidInput("x".into()), Code::InvalidArgument),
            (InferError::BadImage { index: 2, reason: "truncated".into() }, Code::InvalidArgument),
            (InferError::TooLarge("big".into()), Code::InvalidArgument),
            (InferError::Overloaded("m".into()), Code::ResourceExhausted),
            (InferError::DeadlineExceeded, Code::DeadlineExceeded),
            (InferError::Unavailable("stopping".into()), Code::Unavailable),
            (InferError::Internal("bug".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let status = to_status(&err);
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), err.to_string());
            assert_eq!(status.metadata().get(ERROR_KIND_KEY).unwrap().to_str().unwrap(), err.kind());
        }
        assert_eq!(to_status(&InferError::ModelNotFound("resnet".into())).message(), "unknown model `resnet`");
        assert_eq!(
            to_status(&InferError::BadImage { index: 1, reason: "not an image".into() }).message(),
            "image 1: not an image"
        );
    }

    fn with_auth(value: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("authorization", value.parse().unwrap());
        md
    }

    #[test]
    fn api_key_is_checked_only_when_set() {
        assert!(ApiKey::new(None).check(&MetadataMap::new()).is_ok());
        assert!(ApiKey::new(Some(String::new())).check(&MetadataMap::new()).is_ok());
        let key = ApiKey::new(Some("s3cret".into()));
        assert_eq!(key.check(&MetadataMap::new()).unwrap_err().code(), Code::Unauthenticated);
        assert!(key.check(&with_auth("Bearer s3cret")).is_ok());
        assert!(key.check(&with_auth("bearer  s3cret ")).is_ok());
        for bad in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "] {
            assert_eq!(key.check(&with_auth(bad)).unwrap_err().code(), Code::Unauthenticated, "{bad}");
        }
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "5", "5x", "123456789m", "-5m", "5.0S", "5é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "100m".parse().unwrap());
        let d = client_deadline(&md).unwrap();
        assert!(d > Instant::now() + Duration::from_millis(50) && d <= Instant::now() + Duration::from_millis(100));
    }

    #[test]
    fn earliest_deadline_wins() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(Some(now), Some(later)), Some(now));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(Some(now), None), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}

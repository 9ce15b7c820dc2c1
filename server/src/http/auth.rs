//! `--api-key`: inference endpoints require `Authorization: Bearer <key>`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Middleware for the inference routes: passes the request on only with the right key.
pub async fn require_api_key(State(key): State<Arc<str>>, request: Request, next: Next) -> Response {
    if authorized(request.headers(), &key) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

pub fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, token)) = value.trim().split_once(' ') else { return false };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(token.trim().as_bytes(), key.as_bytes())
}

/// Compares without an early exit, so timing does not reveal how much of the key matched.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, &byte) in given.iter().enumerate() {
        let want = if expected.is_empty() { 0 } else { expected[i % expected.len()] };
        diff |= usize::from(byte ^ want);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn accepts_only_the_right_bearer_key() {
        assert!(authorized(&with_auth("Bearer s3cret"), "s3cret"));
        assert!(authorized(&with_auth("bearer  s3cret "), "s3cret"));
        assert!(!authorized(&with_auth("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&with_auth("Bearer s3cret!"), "s3cret"));
        assert!(!authorized(&with_auth("Bearer S3cret"), "s3cret"));
        assert!(!authorized(&with_auth("Basic s3cret"), "s3cret"));
        assert!(!authorized(&with_auth("s3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abcabc", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"a", b""));
        assert!(constant_time_eq(b"", b""));
    }
}

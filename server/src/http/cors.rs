//! CORS, closed by default: without `--cors-allow-origin` no response carries
//! `Access-Control-Allow-Origin`, so pages on other origins cannot read the API's answers (the
//! server's own page at `/` is same-origin and needs none).

use std::time::Duration;

use anyhow::{bail, Result};
use axum::http::{header, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::request_id;

/// Any origin, when given as the only value: for public, key-less deployments.
pub const ANY: &str = "*";

/// Checks one `--cors-allow-origin` value: `*` or `scheme://host[:port]`, as browsers send it in
/// `Origin` (no path, no trailing slash).
pub fn check_origin(origin: &str) -> Result<()> {
    if origin == ANY {
        return Ok(());
    }
    let Some((scheme, host)) = origin.split_once("://") else {
        bail!("--cors-allow-origin `{origin}`: expected `*` or SCHEME://HOST[:PORT], e.g. https://app.example.com");
    };
    let scheme_ok = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && !b"/?#@,".contains(&b));
    if !(scheme_ok && host_ok) {
        bail!(
            "--cors-allow-origin `{origin}`: expected SCHEME://HOST[:PORT] with no path, e.g. https://app.example.com"
        );
    }
    Ok(())
}

/// The layer for the configured origins; `None` (no CORS headers at all) when there are none.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == ANY) {
        AllowOrigin::any()
    } else {
        // Values were checked by `check_origin` when the settings were read.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, request_id::HEADER])
            .expose_headers([request_id::HEADER])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host_only() {
        for ok in ["*", "https://app.example.com", "http://localhost:3000", "http://[::1]:8080"] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for bad in ["", "app.example.com", "https://", "https://a.com/", "https://a.com/x", "https://a b", "**"] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        assert!(layer(&[]).is_none());
        assert!(layer(&["https://a.com".into()]).is_some());
    }
}

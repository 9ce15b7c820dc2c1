//! The web demo page at `/`: static assets embedded in the binary (no CDN, works offline). The
//! page only talks to the friendly REST API (`/v1`), like any other client.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

const INDEX_HTML: &str = include_str!("../../static/index.html");

/// Files under `/static/`: name, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../static/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../static/app.css")),
];

/// Only this origin's scripts, styles and API; images from the user's files and camera.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; media-src 'self' blob: mediastream:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Assets are cached for a day: their URLs carry a hash of their contents, so a new build's
/// page asks for new URLs. The page itself is revalidated every time.
const ASSET_CACHE: &str = "public, max-age=86400";
const PAGE_CACHE: &str = "no-cache";

/// `GET /`
pub async fn index() -> Response {
    let mut response = index_html().to_owned().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /static/{file}`
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some(&(_, content_type, contents)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return ApiError::no_route("GET", &format!("/static/{file}")).into_response();
    };
    let mut response = contents.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The page with every `/static/NAME` reference turned into `/static/NAME?v=<hash>`.
fn index_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        ASSETS.iter().fold(INDEX_HTML.to_owned(), |page, (name, _, contents)| {
            let plain = format!("\"/static/{name}\"");
            page.replace(&plain, &format!("\"/static/{name}?v={:016x}\"", content_hash(contents)))
        })
    })
}

/// A stable hash (SipHash with fixed keys) of an asset, for cache busting.
fn content_hash(contents: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    contents.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn body_text(response: Response) -> String {
        let bytes = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 22)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn index_is_html_and_links_versioned_assets() {
        let response = futures::executor::block_on(index());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(response.headers()[header::CACHE_CONTROL], PAGE_CACHE);
        let html = body_text(response);
        assert!(html.starts_with("<!doctype html>"));
        for (name, _, contents) in ASSETS {
            let versioned = format!("/static/{name}?v={:016x}", content_hash(contents));
            assert!(html.contains(&versioned), "the page must link {versioned}");
        }
    }

    #[test]
    fn assets_have_their_content_types() {
        for (name, content_type, contents) in ASSETS {
            let response = futures::executor::block_on(asset(Path(name.to_string())));
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], *content_type);
            assert_eq!(response.headers()[header::CACHE_CONTROL], ASSET_CACHE);
            assert_eq!(body_text(response), *contents);
        }
        let missing = futures::executor::block_on(asset(Path("../Cargo.toml".into())));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn page_is_self_contained() {
        let files = std::iter::once(INDEX_HTML).chain(ASSETS.iter().map(|(_, _, contents)| *contents));
        for text in files {
            for external in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(external), "the page must not load `{external}` resources");
            }
        }
    }

    #[test]
    fn page_uses_only_served_api_routes() {
        let script = ASSETS.iter().find(|(name, _, _)| *name == "app.js").map(|a| a.2).unwrap();
        // GET /v1/models, then POST /v1/models/{name}/detect or .../classify by the model's task.
        for used in ["\"/v1/models\"", "`/v1/models/${", "\"detect\" : \"classify\""] {
            assert!(script.contains(used), "app.js should contain {used}");
        }
        let served: Vec<&str> = super::super::routes().iter().map(|r| r.path).collect();
        for path in ["/v1/models", "/v1/models/{name}/classify", "/v1/models/{name}/detect", "/", "/static/{file}"] {
            assert!(served.contains(&path), "{path} is not served");
        }
    }
}

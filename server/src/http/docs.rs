//! `/metrics`, `/openapi.json` and the offline `/docs` page (both documents are embedded).

use std::sync::OnceLock;

use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};

const OPENAPI: &str = include_str!("../../static/openapi.json");
const DOCS_HTML: &str = include_str!("../../static/docs.html");

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.infer.metrics_text().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

/// `GET /openapi.json`
pub async fn openapi() -> Response {
    let mut response = openapi_document().to_owned().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /docs`
pub async fn docs_page() -> Html<&'static str> {
    Html(DOCS_HTML)
}

/// The embedded document with `info.version` set to this build's version (a text replacement
/// keeps the file's key order, which the docs page shows).
fn openapi_document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        OPENAPI.replacen(r#""version": "0.0.0""#, &format!(r#""version": "{}""#, env!("CARGO_PKG_VERSION")), 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Task;
    use crate::http::{params, routes};
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn document() -> Value {
        serde_json::from_str(openapi_document()).expect("openapi.json must be valid JSON")
    }

    #[test]
    fn openapi_is_3_0_with_this_version() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |verb| (verb.clone(), path.clone())))
            .collect();
        let served: BTreeSet<(String, String)> =
            routes().iter().map(|r| (r.verb.as_str().to_owned(), r.path.to_owned())).collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn protected_routes_are_marked_in_openapi() {
        let doc = document();
        for route in routes() {
            let op = &doc["paths"][route.path][route.verb.as_str()];
            assert_eq!(op.get("security").is_some(), route.needs_key, "{}", route.path);
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_and_path_parameters_are_declared() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 50);
        for r in &refs {
            let pointer = r.strip_prefix('#').expect("local refs only");
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for op in item.as_object().unwrap().values() {
                let declared: BTreeSet<String> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let p = match p.get("$ref") {
                            Some(Value::String(r)) => doc.pointer(&r[1..]).unwrap(),
                            _ => p,
                        };
                        p.clone()
                    })
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect();
                let in_path: BTreeSet<String> = path
                    .split('/')
                    .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .map(str::to_owned)
                    .collect();
                assert_eq!(declared, in_path, "{path}");
            }
        }
    }

    #[test]
    fn documented_query_parameters_are_the_accepted_ones() {
        let doc = document();
        for (path, task) in [("/v1/models/{name}/classify", Task::Classify), ("/v1/models/{name}/detect", Task::Detect)]
        {
            let documented: BTreeSet<String> = doc["paths"][path]["post"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| doc.pointer(&p["$ref"].as_str().unwrap()[1..]).unwrap())
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let accepted: BTreeSet<String> = params::supported(task).iter().map(|k| k.to_string()).collect();
            assert_eq!(documented, accepted, "{path}");
        }
    }

    #[test]
    fn docs_page_is_self_contained() {
        assert!(DOCS_HTML.contains("openapi.json"));
        for external in ["http://", "https://", "<link", "src=\""] {
            assert!(!DOCS_HTML.contains(external), "docs page must not load `{external}` resources");
        }
    }
}

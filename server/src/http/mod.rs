//! The HTTP transport: the friendly REST API (`/v1`), the KServe Open Inference Protocol v2
//! with Triton's `config`/`stats` extensions (`/v2`), `/metrics`, `/openapi.json`, `/docs` and the
//! web demo page at `/`.
//! Handlers only translate between HTTP and [`Infer`]; every error leaves through
//! [`error::ApiError`].

mod auth;
mod body;
pub mod cors;
mod docs;
mod error;
pub mod fuzz;
mod page;
mod params;
mod triton;
mod unread;
mod v1;
mod v2;
mod v2_tensor;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, RawPathParams};
use axum::http::{request::Parts, Method, Uri};
use axum::middleware::from_fn_with_state;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::core::Infer;
use crate::request_id::{RequestIdLayer, Transport};
use crate::secret::Secret;
pub use error::ApiError;

#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// When set (and not empty), inference endpoints need `Authorization: Bearer <key>`.
    pub api_key: Option<Secret>,
    /// Origins whose pages may read responses (CORS); empty: no CORS headers at all.
    pub cors_allow_origins: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub infer: Infer,
}

/// The whole HTTP API for one server.
pub fn router(infer: Infer, opts: HttpOptions) -> Router {
    let key: Option<Arc<str>> = opts.api_key.filter(|k| !k.is_empty()).map(|k| Arc::from(k.expose()));
    let mut app = Router::new();
    for route in routes() {
        let handler = match (&key, route.needs_key) {
            (Some(key), true) => route.handler.layer(from_fn_with_state(key.clone(), auth::require_api_key)),
            _ => route.handler,
        };
        app = app.route(route.path, handler);
    }
    let mut app = app
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        // Bodies are read by `body::read_body` under `Limits::max_body_bytes`, with JSON errors.
        .layer(DefaultBodyLimit::disable())
        .with_state(AppState { infer });
    if let Some(cors) = cors::layer(&opts.cors_allow_origins) {
        app = app.layer(cors);
    }
    // Every response, errors from the head alone included, tells HTTP/1 clients when the
    // connection will close because the body was left unread.
    let app = app.layer(axum::middleware::from_fn(unread::close_if_unread));
    // Outermost, so every response (404s and CORS preflights too) carries an id.
    app.layer(RequestIdLayer(Transport::Http))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
}

#[cfg_attr(not(test), allow(dead_code))] // read by the OpenAPI test
impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))] // `verb` is read by the OpenAPI test
pub(crate) struct Route {
    pub verb: Verb,
    pub path: &'static str,
    /// Inference endpoints: guarded by `--api-key`.
    pub needs_key: bool,
    pub handler: MethodRouter<AppState>,
}

fn route<H, T>(verb: Verb, path: &'static str, needs_key: bool, handler: H) -> Route
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = match verb {
        Verb::Get => MethodFilter::GET,
        Verb::Post => MethodFilter::POST,
    };
    Route { verb, path, needs_key, handler: on(filter, handler) }
}

/// Every route, in one table: the router is built from it and the OpenAPI test checks it.
pub(crate) fn routes() -> Vec<Route> {
    use Verb::{Get, Post};
    vec![
        route(Get, "/v1/models", false, v1::list_models),
        route(Get, "/v1/models/{name}", false, v1::get_model),
        route(Post, "/v1/models/{name}/classify", true, v1::classify),
        route(Post, "/v1/models/{name}/detect", true, v1::detect),
        route(Get, "/v2", false, v2::server_metadata),
        route(Get, "/v2/health/live", false, v2::live),
        route(Get, "/v2/health/ready", false, v2::ready),
        route(Get, "/v2/models/stats", false, triton::all_stats),
        route(Get, "/v2/models/{name}", false, v2::model_metadata),
        route(Get, "/v2/models/{name}/ready", false, v2::model_ready),
        route(Post, "/v2/models/{name}/infer", true, v2::infer),
        route(Get, "/v2/models/{name}/config", false, triton::config),
        route(Get, "/v2/models/{name}/stats", false, triton::stats),
        route(Get, "/v2/models/{name}/versions/{version}", false, v2::model_metadata),
        route(Get, "/v2/models/{name}/versions/{version}/ready", false, v2::model_ready),
        route(Post, "/v2/models/{name}/versions/{version}/infer", true, v2::infer),
        route(Get, "/v2/models/{name}/versions/{version}/config", false, triton::config),
        route(Get, "/v2/models/{name}/versions/{version}/stats", false, triton::stats),
        route(Get, "/metrics", false, docs::metrics),
        route(Get, "/openapi.json", false, docs::openapi),
        route(Get, "/docs", false, docs::docs_page),
        route(Get, "/", false, page::index),
        route(Get, "/static/{file}", false, page::asset),
    ]
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

/// The only model version this server has (the v2 protocol's versions are strings).
pub(crate) const MODEL_VERSION: &str = "1";

/// `{name}` and the optional `{version}` of a model route.
pub(crate) struct ModelPath {
    pub name: String,
    pub version: Option<String>,
}

impl ModelPath {
    /// The model's info, or 404 for an unknown model or a version other than "1".
    pub fn resolve(&self, infer: &Infer) -> Result<crate::core::ModelInfo, ApiError> {
        let info = infer.model(&self.name)?;
        match &self.version {
            Some(version) if version != MODEL_VERSION => Err(ApiError::unknown_version(&self.name, version)),
            _ => Ok(info),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ModelPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("bad path: {}", e.body_text())))?;
        let mut path = ModelPath { name: String::new(), version: None };
        for (key, value) in &params {
            match key {
                "name" => path.name = value.to_owned(),
                "version" => path.version = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::core::{BatchingConfig, ModelInfo, Task};

    /// A tiny classifier description: 3 classes, input 4x2.
    pub fn classifier() -> ModelInfo {
        ModelInfo {
            name: "cls".into(),
            task: Task::Classify,
            architecture: "cspresnet50".into(),
            input_size: (4, 2),
            num_classes: 3,
            labels: vec!["a".into(), "b".into(), "c".into()],
            params: 10,
            bflops: 0.5,
            device: "cpu".into(),
            dtype: crate::core::Precision::F32,
            batching: BatchingConfig { max_batch_size: 8, max_queue_delay_ms: 2, max_queue_size: 64 },
            instances: 1,
            outputs: vec!["output".into()],
        }
    }

    /// A detector with two heads on CUDA device 1, two instances.
    pub fn detector() -> ModelInfo {
        ModelInfo {
            name: "det".into(),
            task: Task::Detect,
            architecture: "csp-yolov3".into(),
            input_size: (416, 416),
            num_classes: 80,
            labels: Vec::new(),
            params: 1000,
            bflops: 60.0,
            device: "cuda:1".into(),
            dtype: crate::core::Precision::Bf16,
            batching: BatchingConfig { max_batch_size: 4, max_queue_delay_ms: 5, max_queue_size: 32 },
            instances: 2,
            outputs: vec!["head_0".into(), "head_1".into()],
        }
    }
}

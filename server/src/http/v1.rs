//! The friendly REST API: model listing and `classify` / `detect` on encoded images.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::body::{body_kind, parse_images, read_body, ImagesBody};
use super::error::{ApiError, ApiResult};
use super::params::Params;
use super::{AppState, ModelPath};
use crate::core::{ModelInfo, Task, Timing};

/// `GET /v1/models` -> `{"models": [ModelInfo, ...]}`
pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "models": state.infer.models() }))
}

/// `GET /v1/models/{name}` -> ModelInfo
pub async fn get_model(State(state): State<AppState>, path: ModelPath) -> ApiResult<Json<ModelInfo>> {
    Ok(Json(path.resolve(&state.infer)?))
}

pub async fn classify(State(state): State<AppState>, path: ModelPath, request: Request) -> ApiResult<Response> {
    run_images(state, path, Task::Classify, request).await
}

pub async fn detect(State(state): State<AppState>, path: ModelPath, request: Request) -> ApiResult<Response> {
    run_images(state, path, Task::Detect, request).await
}

async fn run_images(state: AppState, path: ModelPath, task: Task, request: Request) -> ApiResult<Response> {
    let info = path.resolve(&state.infer)?;
    if info.task != task {
        return Err(wrong_task(&info));
    }
    let (parts, body) = request.into_parts();
    // Cheap checks first, so a bad request fails before its body is read.
    let mut params = Params::from_query(task, &parts.uri)?;
    body_kind(&parts.headers)?;
    let limits = state.infer.limits().clone();
    let bytes = read_body(&parts.headers, body, limits.max_body_bytes).await?;
    let ImagesBody { images, params: from_body } =
        parse_images(task, parts, bytes, limits.max_images_per_request).await?;
    params.merge(from_body)?;
    params.check_classes(info.num_classes)?;
    let opts = params.options();
    let response = match task {
        Task::Classify => state.infer.classify(&info.name, images, params.classify(), opts).await?,
        Task::Detect => state.infer.detect(&info.name, images, params.detect(), opts).await?,
    };
    let timing = response.timing;
    Ok(with_timing(Json(response).into_response(), &timing))
}

fn wrong_task(info: &ModelInfo) -> ApiError {
    let is = match info.task {
        Task::Classify => "a classifier",
        Task::Detect => "a detector",
    };
    let use_endpoint = info.task.as_str();
    ApiError::invalid(format!("model `{}` is {is}: use /v1/models/{}/{use_endpoint}", info.name, info.name))
}

/// Adds `x-queue-time`, `x-inference-time` and `x-total-time` (milliseconds, decimal).
pub fn with_timing(mut response: Response, timing: &Timing) -> Response {
    let headers = response.headers_mut();
    for (name, duration) in
        [("x-queue-time", timing.queue), ("x-inference-time", timing.inference), ("x-total-time", timing.total)]
    {
        let millis = format!("{:.3}", duration.as_secs_f64() * 1e3);
        if let Ok(value) = HeaderValue::from_str(&millis) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timing_headers_are_decimal_milliseconds() {
        let timing = Timing {
            decode: Duration::from_micros(100),
            queue: Duration::from_micros(1500),
            inference: Duration::from_millis(12),
            total: Duration::from_micros(13_750),
        };
        let response = with_timing(().into_response(), &timing);
        assert_eq!(response.headers()["x-queue-time"], "1.500");
        assert_eq!(response.headers()["x-inference-time"], "12.000");
        assert_eq!(response.headers()["x-total-time"], "13.750");
    }
}

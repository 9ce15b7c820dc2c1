//! KServe Open Inference Protocol v2 over REST: health, server and model metadata, model
//! readiness and `infer`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::read_body;
use super::error::{ApiError, ApiResult};
use super::params::{deadline_after, Params, Raw};
use super::v1::with_timing;
use super::v2_tensor::*;
use super::{AppState, ModelPath, MODEL_VERSION};
use crate::core::{InferError, ModelInfo, RequestOptions, Task, Timing};

pub const SERVER_NAME: &str = "cspserve";
pub const EXTENSIONS: &[&str] = &["model_configuration", "statistics", "binary_tensor_data"];

fn flag(status_ok: bool, body: Value) -> Response {
    let status = if status_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /v2/health/live`: 200 `{"live": true}`, else 503.
pub async fn live(State(state): State<AppState>) -> Response {
    let live = state.infer.health().live;
    flag(live, json!({ "live": live }))
}

/// `GET /v2/health/ready`: 200 `{"ready": true}` once every model is warm, 503 otherwise.
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.infer.health().ready;
    flag(ready, json!({ "ready": ready }))
}

/// `GET /v2`
pub async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }))
}

/// `GET /v2/models/{name}[/versions/{version}]`
pub async fn model_metadata(State(state): State<AppState>, path: ModelPath) -> ApiResult<Json<Value>> {
    Ok(Json(metadata(&path.resolve(&state.infer)?)))
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: 200 or 503, 404 for an unknown model.
pub async fn model_ready(State(state): State<AppState>, path: ModelPath) -> ApiResult<Response> {
    let info = path.resolve(&state.infer)?;
    let ready = state.infer.health().ready;
    Ok(flag(ready, json!({ "name": info.name, "ready": ready })))
}

/// Shape of a raw output: classifier logits [-1, classes]; detector heads vary per head.
pub fn output_shape(info: &ModelInfo) -> Vec<i64> {
    match info.task {
        Task::Classify => vec![-1, info.num_classes as i64],
        Task::Detect => vec![-1, -1, -1, -1],
    }
}

pub fn metadata(info: &ModelInfo) -> Value {
    let mut outputs: Vec<Value> = info
        .outputs
        .iter()
        .map(|name| json!({ "name": name, "datatype": "FP32", "shape": output_shape(info) }))
        .collect();
    outputs.push(json!({ "name": OUTPUT_RESULT, "datatype": "BYTES", "shape": [-1] }));
    json!({
        "name": info.name,
        "versions": [MODEL_VERSION],
        "platform": "candle",
        "inputs": [
            { "name": INPUT_TENSOR, "datatype": "FP32", "shape": tensor_shape(info) },
            { "name": INPUT_IMAGE, "datatype": "BYTES", "shape": [-1] },
        ],
        "outputs": outputs,
    })
}

/// Task parameters the `image` input accepts in the request's `parameters`.
const TASK_KEYS: &[&str] = &["top_k", "score_threshold", "iou_threshold", "max_detections", "classes"];

/// Request `parameters`: `timeout` (microseconds, as Triton) and, for `image` inputs, the
/// friendly task parameters. Triton's own keys (`binary_data_output`, `priority`, ...) pass; others are refused.
pub(crate) fn request_params(
    parameters: Option<&Map<String, Value>>,
    task: Option<Task>,
) -> ApiResult<(Option<Params>, RequestOptions)> {
    let empty = Map::new();
    let parameters = parameters.unwrap_or(&empty);
    // The same allow-list as gRPC: our own keys and those Triton's clients send on their own.
    if let Some(key) = parameters.keys().find(|k| {
        k.as_str() != "timeout"
            && !TASK_KEYS.contains(&k.as_str())
            && !crate::grpc::IGNORED_PARAMETERS.contains(&k.as_str())
    }) {
        return Err(ApiError::invalid(format!("unsupported parameter `{key}`")));
    }
    let timeout = match parameters.get("timeout") {
        None => None,
        Some(value) => match value.as_u64() {
            Some(micros) if micros > 0 => Some(Duration::from_micros(micros)),
            _ => {
                return Err(ApiError::invalid(format!(
                    "parameter `timeout` (microseconds) must be an integer > 0, got {value}"
                )))
            }
        },
    };
    let mut params: Option<Params> = None;
    for (key, value) in parameters.iter().filter(|(key, _)| TASK_KEYS.contains(&key.as_str())) {
        let Some(task) = task else {
            return Err(ApiError::invalid(format!("parameter `{key}` applies to the `image` input only")));
        };
        // `set` refuses keys of the other task.
        params.get_or_insert_with(Params::default).set(task, key, Raw::Json(value))?;
    }
    Ok((params, deadline_after(timeout)))
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`
pub async fn infer(State(state): State<AppState>, path: ModelPath, request: Request) -> ApiResult<Response> {
    let info = path.resolve(&state.infer)?;
    let (parts, body) = request.into_parts();
    let limits = state.infer.limits().clone();
    let bytes = read_body(&parts.headers, body, limits.max_body_bytes).await?;
    let header_length = match parts.headers.get(HEADER_LENGTH) {
        Some(value) => {
            Some(value.to_str().map_err(|_| ApiError::invalid("Inference-Header-Content-Length is not a number"))?)
        }
        None => None,
    };
    let (mut request, binary) = split_body(&bytes, header_length)?;
    let decoded = decode_input(&mut request, binary, &info, limits.max_images_per_request)?;
    let (outputs, timing) = match decoded {
        Decoded::Tensor { shape, data } => {
            let selected = select_outputs(&request, &info.outputs)?;
            let (_, opts) = request_params(request.parameters.as_ref(), None)?;
            let response = state.infer.run_tensor(&info.name, shape, data, opts).await?;
            let mut produced = response.outputs;
            let mut outputs = Vec::with_capacity(selected.len());
            for (name, binary) in selected {
                let index = produced.iter().position(|t| t.name == name).ok_or_else(|| {
                    ApiError::from(InferError::Internal(format!("the model produced no output `{name}`")))
                })?;
                let tensor = produced.swap_remove(index);
                outputs.push((OutTensor { name, shape: tensor.shape, data: OutData::Fp32(tensor.data) }, binary));
            }
            (outputs, response.timing)
        }
        Decoded::Images(images) => {
            let selected = select_outputs(&request, &[OUTPUT_RESULT.to_owned()])?;
            let (params, opts) = request_params(request.parameters.as_ref(), Some(info.task))?;
            let response = match params {
                None => state.infer.run_images(&info.name, images, opts).await?,
                Some(params) => {
                    params.check_classes(info.num_classes)?;
                    match info.task {
                        Task::Classify => state.infer.classify(&info.name, images, params.classify(), opts).await?,
                        Task::Detect => state.infer.detect(&info.name, images, params.detect(), opts).await?,
                    }
                }
            };
            let results = response
                .results
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::from(InferError::Internal(e.to_string())))?;
            let shape = vec![results.len()];
            let binary = selected.first().is_some_and(|(_, binary)| *binary);
            (
                vec![(OutTensor { name: OUTPUT_RESULT.into(), shape, data: OutData::Bytes(results) }, binary)],
                response.timing,
            )
        }
    };
    respond(&info.name, request.id.as_deref(), &outputs, &timing)
}

fn respond(model: &str, id: Option<&str>, outputs: &[(OutTensor, bool)], timing: &Timing) -> ApiResult<Response> {
    let encoded = encode_response(model, id, outputs)?;
    let mut response = encoded.body.into_response();
    let headers = response.headers_mut();
    match encoded.json_length {
        Some(length) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(HEADER_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(with_timing(response, timing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fixtures::{classifier, detector};

    #[test]
    fn model_metadata_lists_both_inputs_and_all_outputs() {
        let value = metadata(&classifier());
        assert_eq!(value["name"], "cls");
        assert_eq!(value["versions"], json!(["1"]));
        assert_eq!(value["platform"], "candle");
        assert_eq!(
            value["inputs"],
            json!([{"name": "input", "datatype": "FP32", "shape": [-1, 3, 4, 2]},
                   {"name": "image", "datatype": "BYTES", "shape": [-1]}])
        );
        assert_eq!(
            value["outputs"],
            json!([{"name": "output", "datatype": "FP32", "shape": [-1, 3]},
                   {"name": "result", "datatype": "BYTES", "shape": [-1]}])
        );
        let det = metadata(&detector());
        let names: Vec<&str> = det["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["head_0", "head_1", "result"]);
    }

    #[test]
    fn request_parameters() {
        let params = |v: Value, task: Option<Task>| {
            let map = v.as_object().cloned();
            request_params(map.as_ref(), task)
        };
        let (p, opts) = params(json!({"top_k": 2, "binary_data_output": true}), Some(Task::Classify)).unwrap();
        assert_eq!(p.unwrap().top_k, Some(2));
        assert!(opts.deadline.is_none());
        let (p, opts) = params(json!({"timeout": 5000}), Some(Task::Detect)).unwrap();
        assert!(p.is_none());
        assert!(opts.deadline.is_some());
        assert!(params(json!({"timeout": -1}), None).unwrap_err().message.contains("microseconds"));
        assert!(params(json!({"top_k": 2}), None).unwrap_err().message.contains("`image` input only"));
        assert!(params(json!({"top_k": 2}), Some(Task::Detect)).unwrap_err().message.contains("unsupported parameter"));
        assert!(params(json!({"score_threshold": 2}), Some(Task::Detect)).unwrap_err().message.contains("[0, 1]"));
    }

    #[test]
    fn server_metadata_names_the_extensions() {
        let Json(value) = futures::executor::block_on(server_metadata());
        assert_eq!(value["name"], "cspserve");
        assert_eq!(value["version"], env!("CARGO_PKG_VERSION"));
        let extensions = value["extensions"].as_array().unwrap();
        assert!(extensions.contains(&json!("model_configuration")) && extensions.contains(&json!("statistics")));
    }
}

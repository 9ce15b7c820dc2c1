//! Triton's extensions to the v2 protocol: model configuration (`/config`) and statistics
//! (`/stats`), in the JSON shapes Triton's clients and perf_analyzer read.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::v2::output_shape;
use super::v2_tensor::{INPUT_IMAGE, INPUT_TENSOR, OUTPUT_RESULT};
use super::{AppState, ModelPath, MODEL_VERSION};
use crate::core::{DeviceSpec, ModelInfo, ModelStats, Task};

/// `GET /v2/models/{name}[/versions/{version}]/config`
pub async fn config(State(state): State<AppState>, path: ModelPath) -> ApiResult<Json<Value>> {
    Ok(Json(model_config(&path.resolve(&state.infer)?)))
}

/// `GET /v2/models/{name}[/versions/{version}]/stats`
pub async fn stats(State(state): State<AppState>, path: ModelPath) -> ApiResult<Json<Value>> {
    let info = path.resolve(&state.infer)?;
    let stats = state.infer.stats(&info.name)?;
    Ok(Json(json!({ "model_stats": [model_stats(&info.name, &stats)] })))
}

/// `GET /v2/models/stats`: every model.
pub async fn all_stats(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let mut all = Vec::new();
    for info in state.infer.models() {
        all.push(model_stats(&info.name, &state.infer.stats(&info.name)?));
    }
    Ok(Json(json!({ "model_stats": all })))
}

/// Triton's model configuration. Dims exclude the batch dimension (`max_batch_size` > 0); the
/// BYTES `image`/`result` tensors are [N] on the wire, written as dims [1] reshaped to [].
/// Both inputs are optional: a request sends one of them.
pub fn model_config(info: &ModelInfo) -> Value {
    let (kind, gpus) = match info.device.parse::<DeviceSpec>() {
        Ok(DeviceSpec::Cuda(n)) => ("KIND_GPU", vec![n]),
        _ => ("KIND_CPU", Vec::new()),
    };
    let mut outputs: Vec<Value> = info
        .outputs
        .iter()
        .map(|name| json!({ "name": name, "data_type": "TYPE_FP32", "dims": &output_shape(info)[1..] }))
        .collect();
    outputs.push(json!({ "name": OUTPUT_RESULT, "data_type": "TYPE_STRING", "dims": [1], "reshape": { "shape": [] } }));
    let task = match info.task {
        Task::Classify => "classification",
        Task::Detect => "detection",
    };
    json!({
        "name": info.name,
        "platform": "candle",
        "backend": "candle",
        "version_policy": { "latest": { "num_versions": 1 } },
        "max_batch_size": info.batching.max_batch_size,
        "input": [
            {
                "name": INPUT_TENSOR,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NCHW",
                "dims": [3, info.input_size.0, info.input_size.1],
                "optional": true
            },
            {
                "name": INPUT_IMAGE,
                "data_type": "TYPE_STRING",
                "format": "FORMAT_NONE",
                "dims": [1],
                "reshape": { "shape": [] },
                "optional": true
            }
        ],
        "output": outputs,
        "dynamic_batching": {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": info.batching.max_queue_delay_ms * 1000,
            "preserve_ordering": false,
            "default_queue_policy": { "max_queue_size": info.batching.max_queue_size }
        },
        "instance_group": [
            { "name": format!("{}_0", info.name), "kind": kind, "count": info.instances, "gpus": gpus }
        ],
        "parameters": {
            "task": { "string_value": task },
            "architecture": { "string_value": info.architecture }
        }
    })
}

/// Triton's per-model statistics. The core keeps request counts and total queue and compute
/// time; `success.ns` is their sum, and input/output staging is not timed separately (0 ns).
pub fn model_stats(name: &str, stats: &ModelStats) -> Value {
    let duration = |count: u64, ns: u64| json!({ "count": count, "ns": ns });
    let ok = stats.success_count;
    json!({
        "name": name,
        "version": MODEL_VERSION,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": duration(ok, stats.queue_ns + stats.compute_ns),
            "fail": duration(stats.failure_count, 0),
            "queue": duration(ok, stats.queue_ns),
            "compute_input": duration(ok, 0),
            "compute_infer": duration(ok, stats.compute_ns),
            "compute_output": duration(ok, 0),
            "cache_hit": duration(0, 0),
            "cache_miss": duration(0, 0)
        },
        "batch_stats": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fixtures::{classifier, detector};

    #[test]
    fn config_of_a_cpu_classifier() {
        let config = model_config(&classifier());
        assert_eq!(config["name"], "cls");
        assert_eq!(config["max_batch_size"], 8);
        assert_eq!(config["input"][0]["dims"], json!([3, 4, 2]));
        assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(config["input"][1]["name"], "image");
        assert_eq!(config["output"][0], json!({"name": "output", "data_type": "TYPE_FP32", "dims": [3]}));
        assert_eq!(config["output"][1]["name"], "result");
        assert_eq!(config["dynamic_batching"]["max_queue_delay_microseconds"], 2000);
        assert_eq!(config["dynamic_batching"]["default_queue_policy"]["max_queue_size"], 64);
        assert_eq!(config["instance_group"], json!([{"name": "cls_0", "kind": "KIND_CPU", "count": 1, "gpus": []}]));
    }

    #[test]
    fn config_of_a_gpu_detector() {
        let config = model_config(&detector());
        assert_eq!(config["instance_group"][0]["kind"], "KIND_GPU");
        assert_eq!(config["instance_group"][0]["gpus"], json!([1]));
        assert_eq!(config["instance_group"][0]["count"], 2);
        assert_eq!(config["output"][1], json!({"name": "head_1", "data_type": "TYPE_FP32", "dims": [-1, -1, -1]}));
        assert_eq!(config["dynamic_batching"]["max_queue_delay_microseconds"], 5000);
    }

    #[test]
    fn stats_in_triton_shape() {
        let stats = ModelStats {
            success_count: 10,
            failure_count: 2,
            execution_count: 4,
            inference_count: 10,
            queue_ns: 1_000,
            compute_ns: 5_000,
            last_inference_ms: 1_700_000_000_000,
        };
        let value = model_stats("cls", &stats);
        assert_eq!(value["version"], "1");
        assert_eq!(value["execution_count"], 4);
        assert_eq!(value["last_inference"], 1_700_000_000_000u64);
        assert_eq!(value["inference_stats"]["success"], json!({"count": 10, "ns": 6000}));
        assert_eq!(value["inference_stats"]["fail"]["count"], 2);
        assert_eq!(value["inference_stats"]["queue"]["ns"], 1000);
        assert_eq!(value["inference_stats"]["compute_infer"]["ns"], 5000);
    }
}

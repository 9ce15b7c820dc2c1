//! Load and fault test helpers: the server's resident memory, latency percentiles, raw tensor
//! requests over both transports, and the server's request counters.

use std::time::Duration;

use serde_json::{json, Value};

use crate::pb::inference as kserve;

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// The `q` quantile (0..=1) of `values` by the nearest-rank method; zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Values of `n` inputs [n, 3, size, size], deterministic from `seed`, in [-1, 1].
pub fn tensor_values(n: usize, size: usize, seed: u32) -> Vec<f32> {
    (0..n * 3 * size * size)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// An Open Inference Protocol v2 JSON body with one FP32 `input` of shape [n, 3, size, size].
pub fn v2_json(values: &[f32], n: usize, size: usize) -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, size, size], "data": values}]})
}

/// A gRPC `ModelInfer` request with one FP32 `input` of shape [n, 3, size, size].
pub fn v2_grpc(model: &str, values: Vec<f32>, n: usize, size: usize) -> kserve::ModelInferRequest {
    kserve::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![kserve::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![n as i64, 3, size as i64, size as i64],
            parameters: Default::default(),
            contents: Some(kserve::InferTensorContents { fp32_contents: values, ..Default::default() }),
        }],
        ..Default::default()
    }
}

/// `csp_requests_total` of `model`, summed over endpoints, for one status (`ok`, `overloaded`, ...).
pub fn requests_with_status(metrics_text: &str, model: &str, status: &str) -> f64 {
    crate::metrics::sum(metrics_text, "csp_requests_total", &[("model", model), ("status", status)])
}

/// `csp_requests_total` of `model` over every status.
pub fn requests_total(metrics_text: &str, model: &str) -> f64 {
    crate::metrics::sum(metrics_text, "csp_requests_total", &[("model", model)])
}

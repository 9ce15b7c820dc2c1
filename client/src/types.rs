//! What a request asks for and what comes back, the same whichever protocol carried it.

use std::time::Duration;

use csp_models::heads::Detection;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classify,
    Detect,
}

impl Task {
    /// The REST endpoint's last path segment.
    pub fn endpoint(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Detect => "detect",
        }
    }
}

/// The model parameters of the friendly endpoints; unset ones take the server's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    pub top_k: Option<u32>,
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub max_detections: Option<u32>,
    pub classes: Vec<u32>,
    /// How long the request may wait in the server's queue before it runs (server-side deadline).
    pub server_timeout_ms: Option<u32>,
}

impl Params {
    /// `(name, value)` pairs for the REST query string, only those that apply to `task`.
    pub fn query(&self, task: Task) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        match task {
            Task::Classify => {
                if let Some(k) = self.top_k {
                    pairs.push(("top_k", k.to_string()));
                }
            }
            Task::Detect => {
                if let Some(v) = self.score_threshold {
                    pairs.push(("score_threshold", v.to_string()));
                }
                if let Some(v) = self.iou_threshold {
                    pairs.push(("iou_threshold", v.to_string()));
                }
                if let Some(v) = self.max_detections {
                    pairs.push(("max_detections", v.to_string()));
                }
            }
        }
        if !self.classes.is_empty() {
            let ids: Vec<String> = self.classes.iter().map(u32::to_string).collect();
            pairs.push(("classes", ids.join(",")));
        }
        if let Some(ms) = self.server_timeout_ms {
            pairs.push(("timeout", ms.to_string()));
        }
        pairs
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Class {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub score: f32,
}

/// One image's result: classes for a classifier, boxes (in original image pixels) for a detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<Class>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<Detection>>,
}

/// The server's account of where the time went, in milliseconds (REST names the fields
/// `decode`, `queue`, ...; gRPC `decode_ms`, ...: both read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    #[serde(default, alias = "decode")]
    pub decode_ms: f64,
    #[serde(default, alias = "queue")]
    pub queue_ms: f64,
    #[serde(default, alias = "inference")]
    pub inference_ms: f64,
    #[serde(default, alias = "total")]
    pub total_ms: f64,
}

/// A classify or detect response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    pub model: String,
    /// One per request image, in request order.
    pub results: Vec<ImageResult>,
    #[serde(default)]
    pub timing: Timing,
}

/// A response with the latency the client saw.
#[derive(Clone, Debug)]
pub struct Timed<T> {
    pub value: T,
    pub latency: Duration,
}

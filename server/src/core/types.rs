//! What the core exchanges with the transports: model descriptions, request parameters,
//! results, timings and errors. Transports translate these to and from the wire; they hold no
//! logic of their own.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Precision;

pub use csp_models::heads::Detection;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classify,
    Detect,
}

impl Task {
    /// The name used in URLs, configs, metrics and messages (`classify`, `detect`).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Detect => "detect",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchingConfig {
    /// Most images run in one forward pass.
    pub max_batch_size: usize,
    /// How long the scheduler may hold a partial batch waiting for more work (0 = greedy).
    pub max_queue_delay_ms: u64,
    /// Most images waiting in the queue; beyond it requests are rejected at once.
    pub max_queue_size: usize,
}

/// One served model, as `GET /v1/models/{name}` and the v2 metadata describe it.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub task: Task,
    pub architecture: String,
    /// Input (height, width): every batch is preprocessed to it.
    pub input_size: (usize, usize),
    pub num_classes: usize,
    pub labels: Vec<String>,
    pub params: usize,
    pub bflops: f64,
    pub device: String,
    /// What the forward pass computes in (`--dtype`).
    pub dtype: Precision,
    pub batching: BatchingConfig,
    pub instances: usize,
    /// Raw output tensor names: `output` for classifiers, `head_0`, `head_1`, ... for detectors.
    pub outputs: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ClassifyParams {
    pub top_k: usize,
    /// Only report these class ids.
    pub classes: Option<Vec<usize>>,
}

impl Default for ClassifyParams {
    fn default() -> Self {
        ClassifyParams { top_k: 5, classes: None }
    }
}

#[derive(Clone, Debug)]
pub struct DetectParams {
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
    pub classes: Option<Vec<usize>>,
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams { score_threshold: 0.25, iou_threshold: 0.45, max_detections: 300, classes: None }
    }
}

/// Per-request options that do not depend on the task.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// Drop the request (DeadlineExceeded) if it has not started computing by then.
    pub deadline: Option<Instant>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Class {
    pub index: usize,
    pub label: Option<String>,
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum ImageOutput {
    Classes { classes: Vec<Class> },
    Detections { detections: Vec<Detection> },
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    /// Original image size in pixels.
    pub width: u32,
    pub height: u32,
    #[serde(flatten)]
    pub output: ImageOutput,
}

/// Where a request's time went. For multi-image requests each figure is the slowest image's.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timing {
    #[serde(with = "millis")]
    pub decode: Duration,
    #[serde(with = "millis")]
    pub queue: Duration,
    #[serde(with = "millis")]
    pub inference: Duration,
    #[serde(with = "millis")]
    pub total: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImagesResponse {
    pub model: String,
    pub results: Vec<ImageResult>,
    pub timing: Timing,
}

/// A raw output tensor, row-major f32.
#[derive(Clone, Debug)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct TensorResponse {
    pub model: String,
    pub outputs: Vec<OutputTensor>,
    pub timing: Timing,
}

/// Everything that can go wrong with a request; the transports map each kind to one status.
#[derive(Clone, Debug, thiserror::Error)]
pub enum InferError {
    /// 404 / NOT_FOUND
    #[error("unknown model `{0}`")]
    ModelNotFound(String),
    /// 400 / INVALID_ARGUMENT: malformed request, bad parameter, wrong tensor shape or type.
    #[error("{0}")]
    InvalidInput(String),
    /// 400 / INVALID_ARGUMENT: the bytes are not a decodable image.
    #[error("image {index}: {reason}")]
    BadImage { index: usize, reason: String },
    /// 413 / INVALID_ARGUMENT (RESOURCE_EXHAUSTED is for load): over a configured size limit.
    #[error("{0}")]
    TooLarge(String),
    /// 429 / RESOURCE_EXHAUSTED: the model's queue is full.
    #[error("model `{0}` is overloaded: queue full, try again later")]
    Overloaded(String),
    /// 504 / DEADLINE_EXCEEDED
    #[error("deadline exceeded before the request could run")]
    DeadlineExceeded,
    /// 503 / UNAVAILABLE: shutting down or not ready.
    #[error("server is not accepting requests: {0}")]
    Unavailable(String),
    /// 500 / INTERNAL: a bug or a backend failure; never caused by input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InferError {
    /// Short machine-readable kind, used in JSON error bodies and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            InferError::ModelNotFound(_) => "model_not_found",
            InferError::InvalidInput(_) => "invalid_input",
            InferError::BadImage { .. } => "bad_image",
            InferError::TooLarge(_) => "too_large",
            InferError::Overloaded(_) => "overloaded",
            InferError::DeadlineExceeded => "deadline_exceeded",
            InferError::Unavailable(_) => "unavailable",
            InferError::Internal(_) => "internal",
        }
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }
}

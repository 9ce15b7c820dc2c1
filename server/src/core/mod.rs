//! The core: model loading, admission, per-model queues, batching and the backend threads.
//! Transports (`http`, `grpc`) only call [`Infer`].

mod backend;
mod decode;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod infer;
mod metrics;
mod postprocess;
mod queue;
mod shared;
pub mod types;

use std::path::PathBuf;
use std::time::Duration;

pub use infer::{Health, Infer, ModelStats};
pub use shared::{start, Core};
pub use types::*;

pub(crate) use shared::Shared;

/// Decodes and preprocesses one encoded image exactly as a request's image is (header checks,
/// EXIF orientation, flattening to RGB, the model's resize); returns the image's upright size.
/// Public for the fuzz targets (`fuzz/`).
pub fn prepare_image(
    bytes: &[u8],
    max_pixels: u64,
    preprocess: &csp_models::preprocess::Preprocess,
    input_size: (usize, usize),
) -> Result<(u32, u32), InferError> {
    let prepared = decode::prepare(0, bytes, max_pixels, preprocess, input_size)?;
    Ok((prepared.width, prepared.height))
}

/// A request body that sends nothing for this long is abandoned with 408: a stalled upload must
/// not hold its connection (and its `--max-connections` slot) forever.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not sent a whole request head within this long loses its connection: a
/// slow-headers client must not hold a `--max-connections` slot forever either.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole request body may take to arrive (a trickle of a byte at a time, under the
/// stall timeout, still ends here).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Request limits, all configurable. Transports check body size and image count at the door;
/// the core checks image headers before decoding.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body (HTTP) or message (gRPC) in bytes.
    pub max_body_bytes: usize,
    /// Most images in one request.
    pub max_images_per_request: usize,
    /// Most pixels (width x height) of one image, read from its header before decoding.
    pub max_image_pixels: u64,
    /// Default per-request timeout when the client sets none.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 << 20,
            max_images_per_request: 64,
            max_image_pixels: 40_000_000,
            request_timeout: Some(Duration::from_secs(30)),
        }
    }
}

pub use csp_models::device::{DeviceSpec, Precision};
pub use csp_models::model::Engine;

/// One model to serve.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub name: String,
    /// Built-in architecture name or darknet `.cfg` path.
    pub arch: Option<String>,
    /// Native/timm safetensors or darknet `.weights`. Required: the server never serves random weights.
    pub weights: PathBuf,
    /// Class names, one per line (default: none for classifiers, COCO's for 80-class detectors).
    pub labels: Option<PathBuf>,
    /// Override the model's input size (height, width).
    pub input_size: Option<(usize, usize)>,
    pub device: DeviceSpec,
    /// How the convolutions run on the CPU (`--engine`).
    pub engine: Engine,
    /// What the forward pass computes in (`--dtype`).
    pub dtype: Precision,
    pub batching: BatchingConfig,
    pub instances: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig { max_batch_size: 8, max_queue_delay_ms: 2, max_queue_size: 256 }
    }
}

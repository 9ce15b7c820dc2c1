//! The one handle the transports use: look up models, submit work, read health and statistics.
//! Cheap to clone (everything behind `Arc`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::types::*;

/// Server health: live from start-up, ready once every model is warmed up, not ready while
/// shutting down. HTTP readiness and the gRPC health service both read this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub live: bool,
    pub ready: bool,
}

/// Cumulative per-model figures for Triton's statistics extension.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ModelStats {
    pub success_count: u64,
    pub failure_count: u64,
    /// Number of forward passes (batches) and the images they carried.
    pub execution_count: u64,
    pub inference_count: u64,
    pub queue_ns: u64,
    pub compute_ns: u64,
    pub last_inference_ms: u64,
}

#[derive(Clone)]
pub struct Infer {
    pub(crate) inner: Arc<super::Shared>,
}

impl Infer {
    /// Every served model, in configuration order.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.inner.models.iter().map(|m| m.info.clone()).collect()
    }

    pub fn model(&self, name: &str) -> Result<ModelInfo, InferError> {
        Ok(self.inner.get(name)?.info.clone())
    }

    /// Classify encoded images (PNG, JPEG, GIF, BMP, WebP). Fails with InvalidInput on a detector.
    pub async fn classify(
        &self,
        model: &str,
        images: Vec<Bytes>,
        params: ClassifyParams,
        opts: RequestOptions,
    ) -> Result<ImagesResponse, InferError> {
        self.inner.images(model, images, Task::Classify, TaskParams::Classify(params), opts).await
    }

    /// Detect objects in encoded images; boxes in original image pixels. InvalidInput on a classifier.
    pub async fn detect(
        &self,
        model: &str,
        images: Vec<Bytes>,
        params: DetectParams,
        opts: RequestOptions,
    ) -> Result<ImagesResponse, InferError> {
        self.inner.images(model, images, Task::Detect, TaskParams::Detect(params), opts).await
    }

    /// Encoded images through whichever task the model has, with default parameters (v2 `image` input).
    pub async fn run_images(
        &self,
        model: &str,
        images: Vec<Bytes>,
        opts: RequestOptions,
    ) -> Result<ImagesResponse, InferError> {
        let task = self.inner.get(model)?.info.task;
        let params = match task {
            Task::Classify => TaskParams::Classify(ClassifyParams::default()),
            Task::Detect => TaskParams::Detect(DetectParams::default()),
        };
        self.inner.images(model, images, task, params, opts).await
    }

    /// A raw FP32 batch [N, 3, H, W] (row-major `data`), H x W = the model's input size. Returns the
    /// raw outputs: `output` [N, classes] logits, or `head_i` [N, A*(5+C), h, w] for detectors.
    pub async fn run_tensor(
        &self,
        model: &str,
        shape: Vec<usize>,
        data: Vec<f32>,
        opts: RequestOptions,
    ) -> Result<TensorResponse, InferError> {
        self.inner.tensor(model, shape, data, opts).await
    }

    pub fn stats(&self, model: &str) -> Result<ModelStats, InferError> {
        Ok(self.inner.get(model)?.stats())
    }

    pub fn health(&self) -> Health {
        *self.inner.health.borrow()
    }

    /// Follow health changes (gRPC health watch, shutdown).
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.inner.health.subscribe()
    }

    /// Request limits the transports enforce before calling in (body size, images per request).
    pub fn limits(&self) -> &super::Limits {
        &self.inner.limits
    }

    /// Prometheus text exposition of every metric.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.render()
    }
}

pub(crate) enum TaskParams {
    Classify(ClassifyParams),
    Detect(DetectParams),
}

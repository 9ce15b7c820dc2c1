//! Start-up (load, warm up, spawn), the per-request path (admit, decode, enqueue, await,
//! post-process) and graceful shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use candle_core::{Device, Tensor};
use csp_models::heads;
use csp_models::weights::{self, Arch};
use csp_models::{flops, Model};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::backend::{Instance, LoadedModel};
use super::decode::{prepare, Prepared};
use super::infer::{Health, Infer, ModelStats, TaskParams};
use super::metrics::Metrics;
use super::postprocess::{detect, post_config, task_name, top_classes, Post};
use super::queue::{Command, Entry, EntryOutput, QueueTask};
use super::types::*;
use super::{Limits, ModelConfig};

/// Cumulative statistics of one model, updated by its backend threads.
#[derive(Default)]
pub(crate) struct StatsCell {
    success: AtomicU64,
    failure: AtomicU64,
    executions: AtomicU64,
    inferences: AtomicU64,
    queue_ns: AtomicU64,
    compute_ns: AtomicU64,
    last_ms: AtomicU64,
}

impl StatsCell {
    pub fn record_batch(&self, n: usize, compute: Duration, queue_total: Duration) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.inferences.fetch_add(n as u64, Ordering::Relaxed);
        self.compute_ns.fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
        self.queue_ns.fetch_add(queue_total.as_nanos() as u64, Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }
}

pub(crate) struct ServedModel {
    pub info: ModelInfo,
    loaded: Arc<LoadedModel>,
    preprocess: csp_models::preprocess::Preprocess,
    queue: mpsc::UnboundedSender<Command>,
    admission: Arc<Semaphore>,
    stats: Arc<StatsCell>,
}

impl ServedModel {
    pub fn stats(&self) -> ModelStats {
        let s = &self.stats;
        ModelStats {
            success_count: s.success.load(Ordering::Relaxed),
            failure_count: s.failure.load(Ordering::Relaxed),
            execution_count: s.executions.load(Ordering::Relaxed),
            inference_count: s.inferences.load(Ordering::Relaxed),
            queue_ns: s.queue_ns.load(Ordering::Relaxed),
            compute_ns: s.compute_ns.load(Ordering::Relaxed),
            last_inference_ms: s.last_ms.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Shared {
    pub models: Vec<ServedModel>,
    pub health: watch::Sender<Health>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    decode_pool: rayon::ThreadPool,
    /// Requests admitted and not yet answered, across models (shutdown waits for zero).
    in_flight: AtomicU64,
}

/// The running core: hand out [`Infer`] handles, shut down gracefully.
pub struct Core {
    infer: Infer,
}

impl Core {
    pub fn infer(&self) -> Infer {
        self.infer.clone()
    }

    /// Readiness off, new work refused; waits for admitted work to finish, at most `grace`.
    /// Returns whether everything finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let shared = &self.infer.inner;
        shared.health.send_modify(|h| h.ready = false);
        let end = Instant::now() + grace;
        while shared.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Loads every model, starts its queue and backend threads, warms it up at every batch size it
/// will run, then reports ready. Must be called inside a tokio runtime.
pub fn start(configs: Vec<ModelConfig>, limits: Limits, decode_threads: usize) -> anyhow::Result<Core> {
    if configs.is_empty() {
        anyhow::bail!("no models to serve");
    }
    let max_batch = configs.iter().map(|c| c.batching.max_batch_size).max().unwrap_or(1);
    let metrics = Arc::new(Metrics::new(max_batch));
    let (health, _) = watch::channel(Health { live: true, ready: false });
    let mut models = Vec::new();
    for cfg in configs {
        if models.iter().any(|m: &ServedModel| m.info.name == cfg.name) {
            anyhow::bail!("model name `{}` is given twice", cfg.name);
        }
        models.push(load_one(cfg, &metrics)?);
    }
    let decode_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(decode_threads.max(1))
        .thread_name(|i| format!("csp-decode-{i}"))
        .build()?;
    let shared = Arc::new(Shared { models, health, limits, metrics, decode_pool, in_flight: AtomicU64::new(0) });
    shared.health.send_modify(|h| h.ready = true);
    Ok(Core { infer: Infer { inner: shared } })
}

fn load_one(cfg: ModelConfig, metrics: &Arc<Metrics>) -> anyhow::Result<ServedModel> {
    use anyhow::Context;
    let dev = cfg.device.open()?;
    let arch = cfg.arch.as_deref().map(Arch::parse);
    let mut model = weights::load_model(arch.as_ref(), Some(&cfg.weights), &dev, true)
        .and_then(|m| m.with_engine(cfg.engine))
        .and_then(|m| m.with_precision(cfg.dtype))
        .with_context(|| format!("model `{}`", cfg.name))?;
    if let Some(size) = cfg.input_size {
        model.net.input_size = size;
    }
    tracing::info!(model = %cfg.name, device = %cfg.device, dtype = %cfg.dtype, engine = model.engine().as_str(), "loaded");
    let net = &model.net;
    let (h, w) = net.input_size;
    let summary = flops::summarize(net, h, w).with_context(|| format!("model `{}` at {h}x{w}", cfg.name))?;
    let loaded = LoadedModel::new(model.clone(), dev.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let labels = match &cfg.labels {
        Some(p) => heads::load_labels(p).with_context(|| format!("labels of model `{}`", cfg.name))?,
        None if loaded.task == Task::Detect && net.num_classes == 80 => heads::coco_labels(),
        None => vec![],
    };
    let info = ModelInfo {
        name: cfg.name.clone(),
        task: loaded.task,
        architecture: net.arch.clone(),
        input_size: net.input_size,
        num_classes: net.num_classes,
        labels,
        params: summary.params,
        bflops: summary.bflops,
        device: cfg.device.to_string(),
        dtype: cfg.dtype,
        batching: cfg.batching.clone(),
        instances: cfg.instances.max(1),
        outputs: loaded.outputs.clone(),
    };
    metrics
        .model_info
        .with_label_values(&[&info.name, info.task.as_str(), &info.architecture, &info.device, info.dtype.as_str()])
        .set(1);
    let loaded = Arc::new(loaded);
    warm_up(&cfg.name, &loaded, &model, cfg.batching.max_batch_size)?;
    let (queue, rx) = mpsc::unbounded_channel();
    let task = QueueTask {
        model: cfg.name.clone(),
        max_delay: Duration::from_millis(cfg.batching.max_queue_delay_ms),
        metrics: metrics.clone(),
    };
    tokio::spawn(task.run(rx));
    let stats = Arc::new(StatsCell::default());
    for i in 0..info.instances {
        let instance = Instance {
            model_name: cfg.name.clone(),
            loaded: loaded.clone(),
            max_batch: cfg.batching.max_batch_size.max(1),
            queue: queue.clone(),
            metrics: metrics.clone(),
            stats: stats.clone(),
        };
        std::thread::Builder::new().name(format!("csp-{}-{i}", cfg.name)).spawn(move || instance.run())?;
    }
    let admission = Arc::new(Semaphore::new(cfg.batching.max_queue_size.max(1)));
    let preprocess = model.net.preprocess;
    Ok(ServedModel { info, loaded, preprocess, queue, admission, stats })
}

/// Runs every batch size once so the first requests do not pay for allocation and kernel set-up.
fn warm_up(name: &str, loaded: &LoadedModel, model: &Model, max_batch: usize) -> anyhow::Result<()> {
    let (h, w) = model.net.input_size;
    let started = Instant::now();
    for n in 1..=max_batch.max(1) {
        let x = Tensor::zeros((n, model.net.input_channels, h, w), candle_core::DType::F32, &Device::Cpu)?;
        loaded.forward(&x).map_err(|e| anyhow::anyhow!("warm-up of `{name}` at batch {n}: {e}"))?;
    }
    tracing::info!(model = name, batches = max_batch, seconds = started.elapsed().as_secs_f64(), "warmed up");
    Ok(())
}

/// Counts a request as in flight until dropped.
struct InFlight<'a> {
    shared: &'a Shared,
    model: &'a str,
}

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared, model: &'a str) -> Self {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        shared.metrics.in_flight.with_label_values(&[model]).inc();
        InFlight { shared, model }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.shared.metrics.in_flight.with_label_values(&[self.model]).dec();
    }
}

impl Shared {
    pub fn get(&self, name: &str) -> Result<&ServedModel, InferError> {
        self.models.iter().find(|m| m.info.name == name).ok_or_else(|| InferError::ModelNotFound(name.to_string()))
    }

    fn accepting(&self) -> Result<(), InferError> {
        if self.health.borrow().ready {
            Ok(())
        } else {
            Err(InferError::Unavailable("not ready (starting or shutting down)".into()))
        }
    }

    /// Admission at the door: `n` queue slots or an immediate Overloaded.
    fn admit(&self, m: &ServedModel, n: usize) -> Result<Vec<tokio::sync::OwnedSemaphorePermit>, InferError> {
        if n > m.info.batching.max_queue_size {
            return Err(InferError::TooLarge(format!(
                "{n} images is more than model `{}` can queue ({})",
                m.info.name, m.info.batching.max_queue_size
            )));
        }
        let mut permits = Vec::with_capacity(n);
        for _ in 0..n {
            match m.admission.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => {
                    self.metrics.rejections.with_label_values(&[&m.info.name, "queue_full"]).inc();
                    return Err(InferError::Overloaded(m.info.name.clone()));
                }
            }
        }
        Ok(permits)
    }

    fn deadline(&self, opts: &RequestOptions) -> Option<Instant> {
        opts.deadline.or_else(|| self.limits.request_timeout.map(|t| Instant::now() + t))
    }

    /// Enqueues one entry per input and waits for all of them (or the deadline).
    async fn run_entries(
        &self,
        m: &ServedModel,
        inputs: Vec<Tensor>,
        permits: Vec<tokio::sync::OwnedSemaphorePermit>,
        deadline: Option<Instant>,
    ) -> Result<Vec<EntryOutput>, InferError> {
        let now = Instant::now();
        let mut receivers = Vec::with_capacity(inputs.len());
        let mut entries = Vec::with_capacity(inputs.len());
        for (input, permit) in inputs.into_iter().zip(permits) {
            let (tx, rx) = oneshot::channel();
            entries.push(Entry { input, enqueued: now, deadline, reply: tx, permit: Some(permit) });
            receivers.push(rx);
        }
        m.queue.send(Command::Append(entries)).map_err(|_| InferError::Unavailable("model queue stopped".into()))?;
        let all = futures::future::join_all(receivers);
        let replies = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), all).await.map_err(|_| InferError::DeadlineExceeded)?,
            None => all.await,
        };
        replies
            .into_iter()
            .map(|r| r.map_err(|_| InferError::Internal("backend dropped the request".into()))?)
            .collect()
    }

    pub(crate) async fn images(
        &self,
        model: &str,
        images: Vec<Bytes>,
        task: Task,
        params: TaskParams,
        opts: RequestOptions,
    ) -> Result<ImagesResponse, InferError> {
        let endpoint = task.as_str();
        let started = Instant::now();
        let result = self.images_inner(model, images, task, params, opts, started).await;
        self.record(model, endpoint, started, result.as_ref().map(|_| ()));
        result
    }

    fn record(&self, model: &str, endpoint: &str, started: Instant, result: Result<(), &InferError>) {
        let status = match result {
            Ok(()) => "ok",
            Err(e) => e.kind(),
        };
        // Only known models get their own label values: unknown names must not grow the metrics.
        let Ok(m) = self.get(model) else { return };
        self.metrics.requests.with_label_values(&[model, endpoint, status]).inc();
        self.metrics.request_seconds.with_label_values(&[model]).observe(started.elapsed().as_secs_f64());
        let counter = if result.is_ok() { &m.stats.success } else { &m.stats.failure };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn images_inner(
        &self,
        model: &str,
        images: Vec<Bytes>,
        task: Task,
        params: TaskParams,
        opts: RequestOptions,
        started: Instant,
    ) -> Result<ImagesResponse, InferError> {
        self.accepting()?;
        let m = self.get(model)?;
        if m.info.task != task {
            return Err(InferError::InvalidInput(format!(
                "model `{model}` is a {} model; use its {} endpoint",
                task_name(m.info.task),
                task_name(m.info.task)
            )));
        }
        if images.is_empty() {
            return Err(InferError::InvalidInput("no images in the request".into()));
        }
        if images.len() > self.limits.max_images_per_request {
            return Err(InferError::TooLarge(format!(
                "{} images in one request, the limit is {}",
                images.len(),
                self.limits.max_images_per_request
            )));
        }
        let post = post_config(&params, m)?;
        let deadline = self.deadline(&opts);
        let _in_flight = InFlight::new(self, model);
        let permits = self.admit(m, images.len())?;
        let prepared = self.decode(m, images).await?;
        let decode = started.elapsed();
        self.metrics.decode_seconds.with_label_values(&[model]).observe(decode.as_secs_f64());
        let metas: Vec<(u32, u32, Option<heads::Letterbox>)> =
            prepared.iter().map(|p| (p.width, p.height, p.letterbox)).collect();
        let inputs = prepared.into_iter().map(|p| p.input).collect();
        let outputs = self.run_entries(m, inputs, permits, deadline).await?;
        let mut timing = Timing { decode, ..Timing::default() };
        let mut results = Vec::with_capacity(outputs.len());
        for (out, (width, height, letterbox)) in outputs.into_iter().zip(metas) {
            timing.queue = timing.queue.max(out.queue);
            timing.inference = timing.inference.max(out.inference);
            self.metrics.queue_seconds.with_label_values(&[model]).observe(out.queue.as_secs_f64());
            let output = match &post {
                Post::Classify(p) => ImageOutput::Classes { classes: top_classes(&out.outputs[0], p, &m.info.labels)? },
                Post::Detect(cfg) => {
                    let lb = letterbox.ok_or_else(|| InferError::Internal("detector without a letterbox".into()))?;
                    ImageOutput::Detections { detections: detect(&out.outputs, &m.loaded, &lb, cfg)? }
                }
            };
            results.push(ImageResult { width, height, output });
        }
        timing.total = started.elapsed();
        Ok(ImagesResponse { model: model.to_string(), results, timing })
    }

    /// Decodes and preprocesses every image on the decode pool, in parallel with compute.
    async fn decode(&self, m: &ServedModel, images: Vec<Bytes>) -> Result<Vec<Prepared>, InferError> {
        let (tx, rx) = oneshot::channel();
        let preprocess = m.preprocess;
        let size = m.info.input_size;
        let max_pixels = self.limits.max_image_pixels;
        self.decode_pool.spawn(move || {
            use rayon::prelude::*;
            let out: Result<Vec<Prepared>, InferError> = images
                .par_iter()
                .enumerate()
                .map(|(i, bytes)| prepare(i, bytes, max_pixels, &preprocess, size))
                .collect();
            let _ = tx.send(out);
        });
        rx.await.map_err(|_| InferError::Internal("decode worker stopped".into()))?
    }

    pub(crate) async fn tensor(
        &self,
        model: &str,
        shape: Vec<usize>,
        data: Vec<f32>,
        opts: RequestOptions,
    ) -> Result<TensorResponse, InferError> {
        let started = Instant::now();
        let result = self.tensor_inner(model, shape, data, opts, started).await;
        self.record(model, "tensor", started, result.as_ref().map(|_| ()));
        result
    }

    async fn tensor_inner(
        &self,
        model: &str,
        shape: Vec<usize>,
        data: Vec<f32>,
        opts: RequestOptions,
        started: Instant,
    ) -> Result<TensorResponse, InferError> {
        self.accepting()?;
        let m = self.get(model)?;
        let (h, w) = m.info.input_size;
        let c = m.loaded.model.net.input_channels;
        if shape.len() != 4 || shape[1..] != [c, h, w] || shape[0] == 0 {
            return Err(InferError::InvalidInput(format!(
                "input tensor must have shape [N, {c}, {h}, {w}] with N >= 1, got {shape:?}"
            )));
        }
        let n = shape[0];
        if data.len() != n * c * h * w {
            return Err(InferError::InvalidInput(format!(
                "input tensor of shape {shape:?} needs {} values, got {}",
                n * c * h * w,
                data.len()
            )));
        }
        if n > self.limits.max_images_per_request {
            return Err(InferError::TooLarge(format!(
                "batch of {n} in one request, the limit is {}",
                self.limits.max_images_per_request
            )));
        }
        // NaN or Inf would flow through every layer and come back as null scores.
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(InferError::InvalidInput(format!(
                "input tensor element {i} is {}: every value must be a finite number",
                data[i]
            )));
        }
        let deadline = self.deadline(&opts);
        let _in_flight = InFlight::new(self, model);
        let permits = self.admit(m, n)?;
        let x =
            Tensor::from_vec(data, (n, c, h, w), &Device::Cpu).map_err(|e| InferError::InvalidInput(e.to_string()))?;
        let inputs = (0..n).map(|i| x.get(i)).collect::<candle_core::Result<Vec<_>>>().map_err(internal)?;
        let outputs = self.run_entries(m, inputs, permits, deadline).await?;
        let mut timing = Timing::default();
        for o in &outputs {
            timing.queue = timing.queue.max(o.queue);
            timing.inference = timing.inference.max(o.inference);
        }
        let mut tensors = Vec::with_capacity(m.loaded.outputs.len());
        for (k, name) in m.loaded.outputs.iter().enumerate() {
            let parts: Vec<Tensor> = outputs.iter().map(|o| o.outputs[k].clone()).collect();
            let t = Tensor::stack(&parts, 0).map_err(internal)?;
            let data = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(internal)?;
            tensors.push(OutputTensor { name: name.clone(), shape: t.dims().to_vec(), data });
        }
        timing.total = started.elapsed();
        Ok(TensorResponse { model: model.to_string(), outputs: tensors, timing })
    }
}

pub(crate) fn internal(e: candle_core::Error) -> InferError {
    InferError::Internal(e.to_string())
}

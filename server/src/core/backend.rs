//! Model backends: each instance is an OS thread that takes batches from its model's queue and
//! runs the forward pass (candle compute blocks; it never runs on the async runtime).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use csp_models::heads::YoloHead;
use csp_models::network::Op;
use csp_models::Model;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use super::queue::{Command, Entry, EntryOutput};
use super::types::{InferError, Task};

/// A loaded model with what the core needs to run and post-process it.
pub(crate) struct LoadedModel {
    pub model: Model,
    pub device: Device,
    pub task: Task,
    /// One per detection head, in output order.
    pub heads: Vec<YoloHead>,
    /// Output tensor names: `output`, or `head_0`, `head_1`, ...
    pub outputs: Vec<String>,
}

impl LoadedModel {
    pub fn new(model: Model, device: Device) -> Result<Self, InferError> {
        let heads = model
            .net
            .layers
            .iter()
            .filter_map(|l| match &l.op {
                Op::Yolo(spec) => Some(spec),
                _ => None,
            })
            .map(|spec| {
                let anchors = spec.mask.iter().map(|&m| (spec.anchors[m][0], spec.anchors[m][1])).collect();
                YoloHead::new(anchors, spec.classes, spec.scale_x_y).map_err(|e| InferError::Internal(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (task, outputs) = if heads.is_empty() {
            (Task::Classify, vec!["output".to_string()])
        } else {
            (Task::Detect, (0..heads.len()).map(|i| format!("head_{i}")).collect())
        };
        Ok(LoadedModel { model, device, task, heads, outputs })
    }

    /// Forward pass on a CPU batch [N, 3, H, W]; outputs back on the CPU, batch-first.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let x = x.to_device(&self.device)?;
        let outs = match self.task {
            Task::Classify => vec![self.model.forward(&x).map_err(candle_core::Error::wrap)?],
            Task::Detect => self.model.forward_heads(&x).map_err(candle_core::Error::wrap)?,
        };
        outs.into_iter().map(|t| t.to_device(&Device::Cpu)).collect()
    }
}

pub(crate) struct Instance {
    pub model_name: String,
    pub loaded: Arc<LoadedModel>,
    pub max_batch: usize,
    pub queue: mpsc::UnboundedSender<Command>,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<super::shared::StatsCell>,
}

impl Instance {
    /// The thread body: ask for a batch, run it, answer every entry; stop when the queue is gone.
    pub fn run(self) {
        #[cfg(feature = "fault-injection")]
        super::fault::armed();
        loop {
            let (tx, rx) = oneshot::channel();
            if self.queue.send(Command::NextBatch { max: self.max_batch, reply: tx }).is_err() {
                return;
            }
            let Ok(batch) = rx.blocking_recv() else { return };
            if batch.is_empty() {
                continue;
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&self, batch: Vec<Entry>) {
        let start = Instant::now();
        let n = batch.len();
        // A panic in the forward pass (a bug in a kernel or a layer) must fail this batch only: the
        // thread lives on to serve the next one, instead of leaving the model without a backend.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.forward_batch(&batch))).unwrap_or_else(|panic| {
                Err(candle_core::Error::Msg(format!("panicked: {}", panic_message(panic.as_ref()))))
            });
        let inference = start.elapsed();
        self.metrics.inference_seconds.with_label_values(&[&self.model_name]).observe(inference.as_secs_f64());
        self.metrics.batch_size.with_label_values(&[&self.model_name]).observe(n as f64);
        self.stats.record_batch(n, inference, batch.iter().map(|e| start.saturating_duration_since(e.enqueued)).sum());
        match result {
            Ok(outputs) => {
                for (i, e) in batch.into_iter().enumerate() {
                    let mine = outputs.iter().map(|t| t.get(i)).collect::<candle_core::Result<Vec<_>>>();
                    let reply = mine
                        .map(|outputs| EntryOutput {
                            outputs,
                            queue: start.saturating_duration_since(e.enqueued),
                            inference,
                        })
                        .map_err(|err| InferError::Internal(err.to_string()));
                    let _ = e.reply.send(reply);
                }
            }
            Err(err) => {
                tracing::error!(model = %self.model_name, error = %err, "forward pass failed");
                for e in batch {
                    let _ = e.reply.send(Err(InferError::Internal(format!("forward pass failed: {err}"))));
                }
            }
        }
    }

    fn forward_batch(&self, batch: &[Entry]) -> candle_core::Result<Vec<Tensor>> {
        #[cfg(feature = "fault-injection")]
        super::fault::check(&batch.iter().map(|e| &e.input).collect::<Vec<_>>())?;
        let x = Tensor::stack(&batch.iter().map(|e| e.input.clone()).collect::<Vec<_>>(), 0)?;
        self.loaded.forward(&x)
    }
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

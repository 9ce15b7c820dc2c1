//! One queue per model, owned by one task. Transports append entries (one per image); backend
//! threads ask for the next batch. The queue answers a batch request as soon as it holds
//! `max_batch_size` entries, or when its oldest entry has waited `max_queue_delay`, so a batch
//! forms while the previous one computes. Expired and abandoned entries are dropped here,
//! before they cost compute.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::metrics::Metrics;
use super::types::InferError;

/// What one image gets back from the backend: its slice of every output, and its timings.
pub(crate) struct EntryOutput {
    pub outputs: Vec<Tensor>,
    pub queue: Duration,
    pub inference: Duration,
}

pub(crate) struct Entry {
    pub input: Tensor,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
    pub reply: oneshot::Sender<Result<EntryOutput, InferError>>,
    /// Admission slot, given back when the entry leaves the queue.
    pub permit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum Command {
    Append(Vec<Entry>),
    /// A backend instance is free and wants up to `max` entries.
    NextBatch {
        max: usize,
        reply: oneshot::Sender<Vec<Entry>>,
    },
}

pub(crate) struct QueueTask {
    pub model: String,
    pub max_delay: Duration,
    pub metrics: Arc<Metrics>,
}

impl QueueTask {
    /// Runs until every sender is gone (the server is exiting).
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut entries: VecDeque<Entry> = VecDeque::new();
        let mut waiting: VecDeque<(usize, oneshot::Sender<Vec<Entry>>)> = VecDeque::new();
        loop {
            self.drop_dead(&mut entries);
            // Serve free backends while there is work ready for them.
            let mut wake_at = None;
            while let Some(&(max, _)) = waiting.front() {
                let Some(oldest) = entries.front().map(|e| e.enqueued) else { break };
                let ready = entries.len() >= max || oldest.elapsed() >= self.max_delay;
                if !ready {
                    wake_at = Some(oldest + self.max_delay);
                    break;
                }
                let (max, reply) = waiting.pop_front().expect("checked non-empty");
                let mut batch: Vec<Entry> = entries.drain(..max.min(entries.len())).collect();
                for e in &mut batch {
                    e.permit = None;
                }
                if let Err(batch) = reply.send(batch) {
                    // That backend is gone; put the work back for the others.
                    for e in batch.into_iter().rev() {
                        entries.push_front(e);
                    }
                }
            }
            self.metrics.queue_depth.with_label_values(&[&self.model]).set(entries.len() as i64);
            // Wake for the batching delay, or for the earliest deadline so expired work is answered
            // even while every backend is busy.
            let next_deadline = entries.iter().filter_map(|e| e.deadline).min();
            let wake_at = [wake_at, next_deadline].into_iter().flatten().min();
            let sleep = async {
                match wake_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Append(new)) => entries.extend(new),
                    Some(Command::NextBatch { max, reply }) => waiting.push_back((max.max(1), reply)),
                    None => return,
                },
                _ = sleep => {}
            }
        }
    }

    /// Answers and removes entries whose deadline passed or whose caller went away.
    fn drop_dead(&self, entries: &mut VecDeque<Entry>) {
        let now = Instant::now();
        entries.retain_mut(|e| {
            if e.reply.is_closed() {
                return false;
            }
            if e.deadline.is_some_and(|d| d <= now) {
                // The reply channel is consumed by `retain_mut` dropping the entry; send first.
                let (tx, _) = oneshot::channel();
                let reply = std::mem::replace(&mut e.reply, tx);
                let _ = reply.send(Err(InferError::DeadlineExceeded));
                return false;
            }
            true
        });
    }
}

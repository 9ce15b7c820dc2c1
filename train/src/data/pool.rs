//! Worker threads that build batches ahead of the consumer. Worker `k` of `n` builds steps
//! `start + k, start + k + n, ...` into its own bounded channel and the iterator reads the
//! channels round-robin, so batches arrive in step order whatever the threads' timing.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};

type Make<T> = Arc<dyn Fn(usize) -> Result<T> + Send + Sync>;

/// Batches of one epoch, in step order. Dropping it stops the workers.
pub struct Batches<T: Send + 'static> {
    steps: Range<usize>,
    next: usize,
    receivers: Vec<Receiver<Result<T>>>,
    workers: Vec<JoinHandle<()>>,
    /// With no workers the batches are built on the calling thread.
    inline: Option<Make<T>>,
}

impl<T: Send + 'static> Batches<T> {
    /// `make(step)` builds one batch; `prefetch` batches per worker may wait in its channel.
    pub(crate) fn spawn(steps: Range<usize>, workers: usize, prefetch: usize, make: Make<T>) -> Self {
        let workers = workers.min(steps.len());
        if workers == 0 {
            return Batches {
                next: steps.start,
                steps,
                receivers: Vec::new(),
                workers: Vec::new(),
                inline: Some(make),
            };
        }
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (tx, rx) = sync_channel(prefetch.max(1));
            let worker_make = Arc::clone(&make);
            let mine = (steps.start + k..steps.end).step_by(workers);
            let spawned = std::thread::Builder::new().name(format!("csp-loader-{k}")).spawn(move || {
                for step in mine {
                    // A send error means the consumer is gone: stop quietly.
                    if tx.send(worker_make(step)).is_err() {
                        return;
                    }
                }
            });
            match spawned {
                Ok(handle) => {
                    receivers.push(rx);
                    handles.push(handle);
                }
                // No thread for this worker: build everything on the caller instead.
                Err(_) => {
                    drop(receivers);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Batches {
                        next: steps.start,
                        steps,
                        receivers: Vec::new(),
                        workers: Vec::new(),
                        inline: Some(make),
                    };
                }
            }
        }
        Batches { next: steps.start, steps, receivers, workers: handles, inline: None }
    }

    /// The step the next batch belongs to.
    pub fn next_step(&self) -> usize {
        self.next
    }
}

impl<T: Send + 'static> Iterator for Batches<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.next >= self.steps.end {
            return None;
        }
        let step = self.next;
        self.next += 1;
        if let Some(make) = &self.inline {
            return Some(make(step));
        }
        let k = (step - self.steps.start) % self.receivers.len();
        Some(self.receivers[k].recv().unwrap_or_else(|_| Err(anyhow!("loader worker {k} stopped at step {step}"))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.steps.end.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl<T: Send + 'static> Drop for Batches<T> {
    fn drop(&mut self) {
        self.receivers.clear();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

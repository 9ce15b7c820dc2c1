//! One load level's outcome: the record printed per level (`--json`: one line each).

use serde::Serialize;

use super::server_metrics::ServerDelta;
use super::stats::{ErrorCounts, Latency, Recorder};
use crate::Protocol;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelResult {
    pub protocol: Protocol,
    /// `closed` (fixed concurrency) or `open` (fixed arrival rate).
    pub mode: &'static str,
    /// Closed loop: requests kept in flight. `null` in an open loop (see `max_in_flight`).
    pub concurrency: Option<usize>,
    /// Open loop: requests per second scheduled. `null` in a closed loop.
    pub rate: Option<f64>,
    pub images_per_request: usize,
    /// From the first send to the last answer.
    pub duration_s: f64,
    /// Requests sent and answered (successes plus failures).
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: ErrorCounts,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Images in successful requests per second.
    pub images_per_s: f64,
    pub min_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p99_9_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Most requests outstanding at once.
    pub max_in_flight: usize,
    /// Open loop: how late the client sent its most delayed request (a large value means the
    /// client, not the server, could not keep the rate).
    pub max_send_lag_ms: Option<f64>,
    /// The server's own count of requests for the model during the measured phase.
    pub server_requests: Option<u64>,
    pub server_batches: Option<u64>,
    pub server_batch_mean: Option<f64>,
    pub server_queue_p50_ms: Option<f64>,
    pub server_queue_mean_ms: Option<f64>,
    pub warmup_requests: u64,
    pub warmup_errors: u64,
    /// The first message of each kind of failure.
    pub error_examples: Vec<String>,
}

/// What the runner measured in one phase.
pub struct Phase {
    pub recorder: Recorder,
    pub elapsed_s: f64,
    pub max_in_flight: usize,
    pub max_send_lag_ms: Option<f64>,
}

impl Phase {
    pub fn requests(&self) -> u64 {
        self.recorder.ok_count() + self.recorder.error_count()
    }
}

/// How the level was driven.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelSpec {
    pub protocol: Protocol,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub images_per_request: usize,
}

impl LevelResult {
    pub fn new(spec: LevelSpec, phase: &Phase, server: Option<ServerDelta>, warmup: Option<&Phase>) -> Self {
        let r = &phase.recorder;
        let ok = r.ok_count();
        let per_s = |n: f64| if phase.elapsed_s > 0.0 { n / phase.elapsed_s } else { 0.0 };
        let latency: Option<Latency> = r.latency();
        let pick = |f: fn(&Latency) -> f64| latency.as_ref().map(f);
        LevelResult {
            protocol: spec.protocol,
            mode: if spec.rate.is_some() { "open" } else { "closed" },
            concurrency: spec.concurrency,
            rate: spec.rate,
            images_per_request: spec.images_per_request,
            duration_s: phase.elapsed_s,
            requests: phase.requests(),
            errors: r.error_count(),
            errors_by_kind: r.errors_by_kind(),
            requests_per_s: per_s(ok as f64),
            images_per_s: per_s((ok * spec.images_per_request as u64) as f64),
            min_ms: pick(|l| l.min_ms),
            mean_ms: pick(|l| l.mean_ms),
            p50_ms: pick(|l| l.p50_ms),
            p90_ms: pick(|l| l.p90_ms),
            p99_ms: pick(|l| l.p99_ms),
            p99_9_ms: pick(|l| l.p99_9_ms),
            max_ms: pick(|l| l.max_ms),
            max_in_flight: phase.max_in_flight,
            max_send_lag_ms: phase.max_send_lag_ms,
            server_requests: server.map(|s| s.requests),
            server_batches: server.map(|s| s.batches),
            server_batch_mean: server.and_then(|s| s.batch_mean),
            server_queue_p50_ms: server.and_then(|s| s.queue_p50_ms),
            server_queue_mean_ms: server.and_then(|s| s.queue_mean_ms),
            warmup_requests: warmup.map_or(0, Phase::requests),
            warmup_errors: warmup.map_or(0, |w| w.recorder.error_count()),
            error_examples: r.error_examples(),
        }
    }

    /// `c=4` or `r=50/s`: the level's short name.
    pub fn load_label(&self) -> String {
        match (self.concurrency, self.rate) {
            (_, Some(rate)) => format!("r={rate}/s"),
            (Some(c), None) => format!("c={c}"),
            (None, None) => "-".into(),
        }
    }
}

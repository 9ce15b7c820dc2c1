//! Prometheus metrics, named `csp_<noun>_<unit>`, with explicit buckets.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Latency buckets in seconds: 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by model, endpoint (classify, detect, images, tensor) and status (ok or an error kind).
    pub requests: IntCounterVec,
    pub decode_seconds: HistogramVec,
    pub queue_seconds: HistogramVec,
    pub inference_seconds: HistogramVec,
    pub request_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    /// Images waiting in the queue.
    pub queue_depth: IntGaugeVec,
    /// Requests admitted and not yet answered.
    pub in_flight: IntGaugeVec,
    /// Requests refused at the door, by reason (queue_full, shutting_down).
    pub rejections: IntCounterVec,
    /// Always 1, one series per served model: where it runs and what it is (join on `model`).
    pub model_info: IntGaugeVec,
}

impl Metrics {
    pub fn new(max_batch: usize) -> Self {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["model"])
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let lat = LATENCY_BUCKETS.to_vec();
        let decode_seconds = hist("csp_decode_seconds", "Image decode and preprocessing time per request", lat.clone());
        let queue_seconds =
            hist("csp_queue_seconds", "Time from enqueue to the start of the forward pass", lat.clone());
        let inference_seconds = hist("csp_inference_seconds", "Forward pass time per batch", lat.clone());
        let request_seconds = hist("csp_request_seconds", "Total time per request inside the server", lat);
        let batch_buckets: Vec<f64> = (1..=max_batch.max(1)).map(|b| b as f64).collect();
        let batch_size = hist("csp_batch_size", "Images per forward pass", batch_buckets);
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let requests =
            counter("csp_requests_total", "Requests by model, endpoint and status", &["model", "endpoint", "status"]);
        let rejections = counter("csp_rejections_total", "Requests refused at admission", &["model", "reason"]);
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let queue_depth = gauge("csp_queue_depth", "Images waiting in the model's queue", &["model"]);
        let in_flight = gauge("csp_in_flight_requests", "Requests admitted and not yet answered", &["model"]);
        let model_info = gauge(
            "csp_model_info",
            "Served models: task, architecture, device and dtype (value always 1)",
            &["model", "task", "architecture", "device", "dtype"],
        );
        Metrics {
            registry,
            requests,
            decode_seconds,
            queue_seconds,
            inference_seconds,
            request_seconds,
            batch_size,
            queue_depth,
            in_flight,
            rejections,
            model_info,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

//! What a run records: latencies of successful requests in an HDR histogram (microseconds,
//! 3 significant digits, so percentiles are exact to 0.1%) and failures counted by kind.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{ClientError, ErrorKind};

/// Longest latency kept exactly: an hour (longer ones are clamped to it).
const MAX_MICROS: u64 = 3_600_000_000;

pub struct Recorder {
    latencies: Histogram<u64>,
    /// Failed requests by kind, with the first message of each kind.
    errors: BTreeMap<ErrorKind, (u64, String)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        // Bounds 1 us .. 1 h with 3 significant figures are always valid for hdrhistogram.
        let latencies = Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!());
        Recorder { latencies, errors: BTreeMap::new() }
    }

    pub fn ok(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
        self.latencies.saturating_record(micros);
    }

    pub fn error(&mut self, error: &ClientError) {
        let entry = self.errors.entry(error.kind()).or_insert_with(|| (0, error.to_string()));
        entry.0 += 1;
    }

    pub fn ok_count(&self) -> u64 {
        self.latencies.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }

    pub fn errors_by_kind(&self) -> ErrorCounts {
        let count = |kind| self.errors.get(&kind).map_or(0, |(n, _)| *n);
        ErrorCounts {
            rejected: count(ErrorKind::Rejected),
            timeout: count(ErrorKind::Timeout),
            other: count(ErrorKind::Other),
        }
    }

    /// The first message of each kind of failure seen, most common kind first.
    pub fn error_examples(&self) -> Vec<String> {
        let mut kinds: Vec<(&ErrorKind, &(u64, String))> = self.errors.iter().collect();
        kinds.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        kinds.into_iter().map(|(kind, (n, message))| format!("{n} {kind}: {message}")).collect()
    }

    /// Percentiles of the successful requests' latencies; `None` when none succeeded.
    pub fn latency(&self) -> Option<Latency> {
        if self.latencies.is_empty() {
            return None;
        }
        let h = &self.latencies;
        let ms = |micros: u64| micros as f64 / 1e3;
        Some(Latency {
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1e3,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub rejected: u64,
    pub timeout: u64,
    pub other: u64,
}

/// Latency percentiles in milliseconds (HDR histogram: each value is the bucket's highest
/// equivalent value, within 0.1% of the true one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 1e-3 + 1e-3
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_milliseconds() {
        let mut r = Recorder::new();
        for ms in 1..=1000u64 {
            r.ok(Duration::from_millis(ms));
        }
        let l = r.latency().unwrap();
        assert!(close(l.min_ms, 1.0), "{l:?}");
        assert!(close(l.p50_ms, 500.0), "{l:?}");
        assert!(close(l.p90_ms, 900.0), "{l:?}");
        assert!(close(l.p99_ms, 990.0), "{l:?}");
        assert!(close(l.p99_9_ms, 999.0), "{l:?}");
        assert!(close(l.max_ms, 1000.0), "{l:?}");
        assert!(close(l.mean_ms, 500.5), "{l:?}");
        assert_eq!(r.ok_count(), 1000);
    }

    #[test]
    fn a_slow_tail_moves_only_the_high_percentiles() {
        let mut r = Recorder::new();
        for _ in 0..980 {
            r.ok(Duration::from_millis(10));
        }
        for _ in 0..20 {
            r.ok(Duration::from_secs(2));
        }
        let l = r.latency().unwrap();
        assert!(close(l.p50_ms, 10.0) && close(l.p90_ms, 10.0), "{l:?}");
        assert!(close(l.p99_ms, 2000.0) && close(l.max_ms, 2000.0), "{l:?}");
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut r = Recorder::new();
        r.ok(Duration::ZERO);
        r.ok(Duration::from_secs(100_000));
        assert_eq!(r.ok_count(), 2);
        let l = r.latency().unwrap();
        assert!(l.min_ms <= 0.001 + 1e-9);
        assert!(close(l.max_ms, 3_600_000.0), "{l:?}");
    }

    #[test]
    fn errors_are_counted_by_kind_with_their_first_message() {
        let mut r = Recorder::new();
        assert!(r.latency().is_none());
        let rejected =
            ClientError::from_http(429, "Too Many Requests", r#"{"error":"queue full","kind":"overloaded"}"#);
        let timeout = ClientError::Timeout { url: "u".into(), timeout: Duration::from_secs(1) };
        let other = ClientError::from_http(400, "Bad Request", r#"{"error":"bad","kind":"bad_image"}"#);
        for e in [&rejected, &rejected, &rejected, &timeout, &other, &other] {
            r.error(e);
        }
        assert_eq!(r.error_count(), 6);
        assert_eq!(r.errors_by_kind(), ErrorCounts { rejected: 3, timeout: 1, other: 2 });
        let examples = r.error_examples();
        assert!(examples[0].starts_with("3 rejected: ") && examples[0].contains("queue full"), "{examples:?}");
        assert!(examples[1].starts_with("2 other: "), "{examples:?}");
    }
}

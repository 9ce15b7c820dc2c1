//! The server's own view of a run, from `/metrics` scraped before and after it: requests
//! counted, mean batch size, queue time. Only the benchmarked model's series are read.

use serde::Serialize;

/// One sample of Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses the text format (comments skipped, unparsable lines ignored; label values may hold
/// commas, spaces and escaped quotes).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(|line| parse_line(line.trim())).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest, labels) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], after, labels)
        }
        None => {
            let split = line.find(char::is_whitespace)?;
            (&line[..split], &line[split..], Vec::new())
        }
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.trim().to_owned(), labels, value })
}

/// `k="v",k2="v2"}` -> pairs and the text after `}`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].trim_start().char_indices();
        let quoted_from = text.len() - text[eq + 1..].trim_start().len();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => (value.push('\n'), escaped = false).1,
                (true, c) => (value.push(c), escaped = false).1,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(quoted_from + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.push((key, value));
        text = &text[end?..];
    }
}

/// The figures a load test reads, for one model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// `csp_requests_total` over every endpoint and status.
    pub requests: f64,
    pub batches: f64,
    pub batched_images: f64,
    pub queue_count: f64,
    pub queue_sum_seconds: f64,
    /// `csp_queue_seconds` cumulative buckets: (upper bound, count), ascending.
    pub queue_buckets: Vec<(f64, f64)>,
}

impl Snapshot {
    pub fn of(text: &str, model: &str) -> Snapshot {
        let mut snap = Snapshot::default();
        for s in parse(text) {
            if s.label("model") != Some(model) {
                continue;
            }
            match s.name.as_str() {
                "csp_requests_total" => snap.requests += s.value,
                "csp_batch_size_count" => snap.batches += s.value,
                "csp_batch_size_sum" => snap.batched_images += s.value,
                "csp_queue_seconds_count" => snap.queue_count += s.value,
                "csp_queue_seconds_sum" => snap.queue_sum_seconds += s.value,
                "csp_queue_seconds_bucket" => {
                    let le = s.label("le").and_then(|v| if v == "+Inf" { Some(f64::INFINITY) } else { v.parse().ok() });
                    if let Some(le) = le {
                        snap.queue_buckets.push((le, s.value));
                    }
                }
                _ => {}
            }
        }
        snap.queue_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        snap
    }
}

/// What the server did between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ServerDelta {
    /// Requests the server counted for the model.
    pub requests: u64,
    /// Forward passes run.
    pub batches: u64,
    /// Images per forward pass, on average (none when no batch ran).
    pub batch_mean: Option<f64>,
    pub queue_mean_ms: Option<f64>,
    /// The median queue time, interpolated within the histogram's buckets as Prometheus'
    /// `histogram_quantile` does.
    pub queue_p50_ms: Option<f64>,
}

pub fn diff(before: &Snapshot, after: &Snapshot) -> ServerDelta {
    let batches = (after.batches - before.batches).max(0.0);
    let images = (after.batched_images - before.batched_images).max(0.0);
    let queued = (after.queue_count - before.queue_count).max(0.0);
    let queue_sum = (after.queue_sum_seconds - before.queue_sum_seconds).max(0.0);
    let buckets: Vec<(f64, f64)> = after
        .queue_buckets
        .iter()
        .map(|&(le, n)| {
            let was = before.queue_buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, n)| *n);
            (le, (n - was).max(0.0))
        })
        .collect();
    ServerDelta {
        requests: (after.requests - before.requests).max(0.0).round() as u64,
        batches: batches.round() as u64,
        batch_mean: (batches > 0.0).then(|| images / batches),
        queue_mean_ms: (queued > 0.0).then(|| queue_sum / queued * 1e3),
        queue_p50_ms: quantile(&buckets, 0.5).map(|s| s * 1e3),
    }
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets: linear within the bucket it
/// falls in (from 0 for the first); the highest finite bound when it falls in `+Inf`.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let within = if width > 0.0 { (rank - lower.1) / width } else { 0.0 };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# HELP csp_requests_total r\n# TYPE csp_requests_total counter\n\
        csp_requests_total{endpoint=\"classify\",model=\"cls\",status=\"ok\"} 5\n\
        csp_requests_total{endpoint=\"classify\",model=\"other\",status=\"ok\"} 100\n\
        csp_batch_size_sum{model=\"cls\"} 5\n\
        csp_batch_size_count{model=\"cls\"} 5\n\
        csp_queue_seconds_bucket{model=\"cls\",le=\"0.001\"} 5\n\
        csp_queue_seconds_bucket{model=\"cls\",le=\"0.002\"} 5\n\
        csp_queue_seconds_bucket{model=\"cls\",le=\"+Inf\"} 5\n\
        csp_queue_seconds_sum{model=\"cls\"} 0.004\n\
        csp_queue_seconds_count{model=\"cls\"} 5\n";

    const AFTER: &str = "csp_requests_total{endpoint=\"classify\",model=\"cls\",status=\"ok\"} 25\n\
        csp_requests_total{endpoint=\"classify\",model=\"cls\",status=\"overloaded\"} 3\n\
        csp_requests_total{endpoint=\"classify\",model=\"other\",status=\"ok\"} 900\n\
        csp_batch_size_sum{model=\"cls\"} 25\n\
        csp_batch_size_count{model=\"cls\"} 10\n\
        csp_queue_seconds_bucket{model=\"cls\",le=\"0.001\"} 15\n\
        csp_queue_seconds_bucket{model=\"cls\",le=\"0.002\"} 25\n\
        csp_queue_seconds_bucket{model=\"cls\",le=\"+Inf\"} 25\n\
        csp_queue_seconds_sum{model=\"cls\"} 0.029\n\
        csp_queue_seconds_count{model=\"cls\"} 25\n";

    #[test]
    fn parses_names_labels_and_values() {
        let samples = parse("a 1\nb{x=\"1,2\",y=\"q\\\"uote\"} 2.5 1700000000\n# c 3\nbad\nd{le=\"+Inf\"} +Inf\n");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0], Sample { name: "a".into(), labels: vec![], value: 1.0 });
        assert_eq!(samples[1].label("x"), Some("1,2"));
        assert_eq!(samples[1].label("y"), Some("q\"uote"));
        assert_eq!(samples[1].value, 2.5);
        assert_eq!(samples[2].value, f64::INFINITY);
    }

    #[test]
    fn diff_counts_the_models_requests_batches_and_queue_time() {
        let d = diff(&Snapshot::of(BEFORE, "cls"), &Snapshot::of(AFTER, "cls"));
        assert_eq!(d.requests, 23);
        assert_eq!(d.batches, 5);
        assert_eq!(d.batch_mean, Some(4.0));
        assert!((d.queue_mean_ms.unwrap() - 1.25).abs() < 1e-9);
        // 20 new observations: 10 in (0, 1 ms], 10 in (1, 2 ms]: the median is at 1 ms.
        assert!((d.queue_p50_ms.unwrap() - 1.0).abs() < 1e-9, "{d:?}");
        let none = diff(&Snapshot::of(AFTER, "cls"), &Snapshot::of(AFTER, "cls"));
        assert_eq!((none.requests, none.batch_mean, none.queue_p50_ms), (0, None, None));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(1.0, 10.0), (2.0, 30.0), (4.0, 40.0), (f64::INFINITY, 40.0)];
        assert_eq!(quantile(&b, 0.125), Some(0.5));
        assert_eq!(quantile(&b, 0.5), Some(1.5));
        assert_eq!(quantile(&b, 0.875), Some(3.0));
        let overflow = [(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&overflow, 0.9), Some(1.0));
        assert_eq!(quantile(&[(1.0, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }
}

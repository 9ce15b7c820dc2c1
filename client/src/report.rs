//! Bench output: an aligned table (one row per level) or JSON lines (one record per level).

use crate::bench::LevelResult;

/// Columns: (header, cell) per level.
type Column = (&'static str, fn(&LevelResult) -> String);

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

const COLUMNS: &[Column] = &[
    ("protocol", |r| r.protocol.to_string()),
    ("load", |r| r.load_label()),
    ("requests", |r| r.requests.to_string()),
    ("errors", |r| r.errors.to_string()),
    ("req/s", |r| format!("{:.1}", r.requests_per_s)),
    ("img/s", |r| format!("{:.1}", r.images_per_s)),
    ("min ms", |r| ms(r.min_ms)),
    ("p50 ms", |r| ms(r.p50_ms)),
    ("p90 ms", |r| ms(r.p90_ms)),
    ("p99 ms", |r| ms(r.p99_ms)),
    ("p99.9 ms", |r| ms(r.p99_9_ms)),
    ("max ms", |r| ms(r.max_ms)),
    ("srv batch", |r| opt(r.server_batch_mean, 2)),
    ("srv queue p50 ms", |r| ms(r.server_queue_p50_ms)),
];

/// The table of every level, with error details under it.
pub fn table(results: &[LevelResult]) -> String {
    let cells: Vec<Vec<String>> = results.iter().map(|r| COLUMNS.iter().map(|(_, f)| f(r)).collect()).collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (h, _))| cells.iter().map(|row| row[i].len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let line = |row: Vec<&str>| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            // Text columns left-aligned, numbers right-aligned.
            .map(|(i, (cell, w))| if i < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(COLUMNS.iter().map(|(h, _)| *h).collect()) + "\n";
    for row in &cells {
        out += &line(row.iter().map(String::as_str).collect());
        out.push('\n');
    }
    for r in results.iter().filter(|r| r.errors > 0 || r.warmup_errors > 0) {
        let k = r.errors_by_kind;
        out += &format!(
            "{} {}: {} failed (rejected {}, timeout {}, other {}), {} in warmup\n",
            r.protocol,
            r.load_label(),
            r.errors,
            k.rejected,
            k.timeout,
            k.other,
            r.warmup_errors
        );
        for example in &r.error_examples {
            out += &format!("  {example}\n");
        }
    }
    out
}

/// One level as one line of JSON.
pub fn json_line(result: &LevelResult) -> String {
    serde_json::to_string(result).unwrap_or_else(|e| format!("{{\"error\": \"cannot encode the result: {e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::result::{LevelSpec, Phase};
    use crate::bench::server_metrics::ServerDelta;
    use crate::bench::stats::Recorder;
    use crate::{ClientError, Protocol};
    use std::time::Duration;

    fn level(concurrency: usize, errors: usize) -> LevelResult {
        let mut recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.ok(Duration::from_millis(ms));
        }
        for _ in 0..errors {
            recorder.error(&ClientError::from_http(
                429,
                "Too Many Requests",
                r#"{"error":"full","kind":"overloaded"}"#,
            ));
        }
        let phase = Phase { recorder, elapsed_s: 2.0, max_in_flight: concurrency, max_send_lag_ms: None };
        let spec =
            LevelSpec { protocol: Protocol::Rest, concurrency: Some(concurrency), rate: None, images_per_request: 2 };
        let server = ServerDelta {
            requests: 100 + errors as u64,
            batches: 25,
            batch_mean: Some(8.0),
            queue_mean_ms: Some(3.0),
            queue_p50_ms: Some(2.5),
        };
        LevelResult::new(spec, &phase, Some(server), None)
    }

    #[test]
    fn results_count_successes_for_throughput_and_failures_by_kind() {
        let r = level(4, 3);
        assert_eq!((r.requests, r.errors, r.errors_by_kind.rejected), (103, 3, 3));
        assert_eq!(r.requests_per_s, 50.0);
        assert_eq!(r.images_per_s, 100.0);
        assert!((r.p50_ms.unwrap() - 50.0).abs() < 0.1);
        assert!((r.p99_ms.unwrap() - 99.0).abs() < 0.1);
        assert_eq!(r.mode, "closed");
        assert_eq!(r.load_label(), "c=4");
    }

    #[test]
    fn json_has_the_promised_fields() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&level(8, 0))).unwrap();
        for key in ["concurrency", "requests", "errors", "requests_per_s", "images_per_s", "p50_ms", "p90_ms", "p99_ms"]
        {
            assert!(!v[key].is_null(), "{key} missing in {v}");
        }
        assert_eq!(v["concurrency"], 8);
        assert_eq!(v["protocol"], "rest");
        assert_eq!(v["server_batch_mean"], 8.0);
        assert_eq!(v["errors_by_kind"]["rejected"], 0);
        assert!(v["rate"].is_null());
    }

    #[test]
    fn table_rows_align_and_errors_are_explained() {
        let text = table(&[level(1, 0), level(16, 2)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("protocol") && lines[0].contains("p99 ms"), "{text}");
        assert!(lines[1].contains("c=1") && lines[2].contains("c=16"), "{text}");
        // Right-aligned numbers end in the same column as their header.
        let end = lines[0].find("p50 ms").unwrap() + "p50 ms".len();
        assert!(lines[1][..end].ends_with(|c: char| c.is_ascii_digit()), "{text}");
        assert!(text.contains("2 failed (rejected 2, timeout 0, other 0)"), "{text}");
        assert!(text.contains("full"), "{text}");
    }
}

//! `bench --plot FILE.png`: latency percentiles against achieved throughput, one point per level.

use std::path::Path;

use csp_models::draw::lines::{LineChart, Series};

use crate::bench::LevelResult;
use crate::ClientError;

/// A series name and how to read it from a level.
type Percentile = (&'static str, fn(&LevelResult) -> Option<f64>);

/// The chart for `results`; the y axis turns logarithmic when latencies span more than 20x.
pub fn latency_chart(results: &[LevelResult], title: &str) -> LineChart {
    let mut chart = LineChart::new(title, "throughput (successful requests/s)", "latency (ms)");
    let mut levels: Vec<&LevelResult> = results.iter().collect();
    levels.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
    let percentiles: [Percentile; 4] =
        [("p50", |r| r.p50_ms), ("p90", |r| r.p90_ms), ("p99", |r| r.p99_ms), ("p99.9", |r| r.p99_9_ms)];
    for (name, get) in percentiles {
        let points: Vec<(f64, f64)> = levels.iter().filter_map(|r| get(r).map(|ms| (r.requests_per_s, ms))).collect();
        chart.series.push(Series::new(name, points));
    }
    let values: Vec<f64> =
        chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| *v > 0.0).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    chart.log_y = hi > 20.0 * lo;
    chart
}

/// Draws the chart and writes it as PNG.
pub fn write_latency_plot(results: &[LevelResult], title: &str, path: &Path) -> Result<(), ClientError> {
    let img = latency_chart(results, title)
        .render()
        .map_err(|e| ClientError::Input(format!("cannot draw the plot: {e} (did every level fail?)")))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| ClientError::Input(format!("cannot write {}: {e}", path.display())))
}

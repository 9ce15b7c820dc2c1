//! PNG plots of the training curves, drawn from the metrics log and written next to
//! `metrics.csv`: loss (and its parts) vs step, learning rate vs step, validation metrics vs step.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use csp_models::draw::lines::{LineChart, Series};

use crate::metrics_log::MetricsLog;

pub const LOSS_PLOT: &str = "loss.png";
pub const LR_PLOT: &str = "lr.png";
pub const VAL_PLOT: &str = "val.png";

/// Loss columns, drawn together when the log has them.
const LOSS_COLUMNS: &[(&str, &str)] =
    &[("loss", "loss"), ("box_loss", "box"), ("obj_loss", "objectness"), ("cls_loss", "class")];
/// Validation columns, drawn in percent.
const VAL_COLUMNS: &[(&str, &str)] =
    &[("val_top1", "top-1"), ("val_top5", "top-5"), ("val_ap", "AP"), ("val_ap50", "AP50"), ("val_ap75", "AP75")];
/// Above this many points a chart draws plain lines without point markers.
const MARKER_LIMIT: usize = 40;

/// Draws every chart that has data into the log's directory (a chart without points, such as
/// validation before the first evaluation, is skipped). Returns the files written.
pub fn write_plots(log: &MetricsLog) -> Result<Vec<PathBuf>> {
    let dir = log.path().parent().unwrap_or(Path::new("."));
    let mut written = Vec::new();

    let losses = series_of(log, LOSS_COLUMNS, 1.0);
    // Losses span decades early in a run: a log axis keeps the tail readable.
    let all_positive = losses.iter().flat_map(|s| &s.points).all(|p| p.1 > 0.0);
    let mut loss = chart("training loss", "loss", losses);
    loss.log_y = all_positive;
    let lr = chart("learning rate", "lr", series_of(log, &[("lr", "lr")], 1.0));
    let val = chart("validation", "percent", series_of(log, VAL_COLUMNS, 100.0));
    for (name, c) in [(LOSS_PLOT, loss), (LR_PLOT, lr), (VAL_PLOT, val)] {
        if c.series.is_empty() {
            continue;
        }
        let path = dir.join(name);
        save_png(&c, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// The named columns that have at least one value, each scaled by `scale`.
fn series_of(log: &MetricsLog, columns: &[(&str, &str)], scale: f64) -> Vec<Series> {
    columns
        .iter()
        .map(|(column, name)| Series::new(*name, log.series(column).into_iter().map(|(x, y)| (x, y * scale)).collect()))
        .filter(|s| s.points.iter().any(|p| p.0.is_finite() && p.1.is_finite()))
        .collect()
}

fn chart(title: &str, y_label: &str, series: Vec<Series>) -> LineChart {
    let most = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let mut c = LineChart::new(title, "step", y_label);
    c.series = series;
    c.markers = most <= MARKER_LIMIT;
    c
}

/// Renders to a temporary file and renames it, so a viewer never reads half a PNG.
fn save_png(chart: &LineChart, path: &Path) -> Result<()> {
    let img = chart.render().with_context(|| format!("drawing {}", path.display()))?;
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

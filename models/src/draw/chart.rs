//! The per-layer BFLOPs bar chart (the paper's "computational bottleneck" view): one bar per
//! layer in network order, coloured by the kind of layer that spends the FLOPs, the neck
//! layers on a tinted band and the YOLO heads marked under the axis.

use image::{Rgb, RgbImage};

use super::{draw_rect, draw_text, fill_rect, font, nice_step, BLACK, WHITE};
use crate::error::{Error, Result};
use crate::flops::Summary;
use crate::network::{Network, Op};

/// Widest image the chart produces; networks with more layers than fit share pixel columns.
pub const MAX_WIDTH: usize = 2400;
const MIN_WIDTH: usize = 640;
/// Plot width the bar pitch aims at (narrower for short networks, never wider than fits).
const TARGET_PLOT_W: usize = 1600;
const MAX_PITCH: usize = 16;
const PLOT_H: usize = 320;
const LEFT: usize = 72;
const RIGHT: usize = 24;
const TOP: usize = 48;
const BOTTOM: usize = 64;

const AXIS: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const NECK_BAND: Rgb<u8> = Rgb([255, 240, 196]);
const HEAD_MARK: Rgb<u8> = Rgb([214, 39, 40]);

/// What a layer's bar is coloured by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Pointwise,
    Spatial,
    Grouped,
    Linear,
    Free,
}

impl Category {
    const SHOWN: [Category; 4] = [Category::Pointwise, Category::Spatial, Category::Grouped, Category::Linear];

    fn of(op: &Op) -> Self {
        match op {
            Op::Conv(c) if c.groups > 1 => Category::Grouped,
            Op::Conv(c) if c.kernel == 1 => Category::Pointwise,
            Op::Conv(_) => Category::Spatial,
            Op::Linear(_) => Category::Linear,
            _ => Category::Free,
        }
    }

    fn color(self) -> Rgb<u8> {
        match self {
            Category::Pointwise => Rgb([31, 119, 180]),
            Category::Spatial => Rgb([255, 127, 14]),
            Category::Grouped => Rgb([44, 160, 44]),
            Category::Linear => Rgb([148, 103, 189]),
            Category::Free => Rgb([150, 150, 150]),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Category::Pointwise => "1x1 conv",
            Category::Spatial => "kxk conv",
            Category::Grouped => "grouped conv",
            Category::Linear => "linear",
            Category::Free => "other",
        }
    }
}

/// One pixel column group of the plot: a layer, or the busiest of several when they share it.
#[derive(Clone, Copy)]
struct Column {
    bflops: f64,
    category: Category,
    neck: bool,
    head: bool,
}

/// Draws `summary` (from [`crate::flops::summarize`] of `net`) as a bar chart.
pub fn bflops_chart(net: &Network, summary: &Summary) -> Result<RgbImage> {
    let n = summary.layers.len();
    if n == 0 || n != net.layers.len() {
        return Err(Error::Input(format!(
            "chart needs the summary of this network: {} layers summarised, the network has {}",
            n,
            net.layers.len()
        )));
    }
    let columns = columns(net, summary);
    let cols = columns.len();
    // Nearest whole pitch to the target width, never wider than the image allows.
    let pitch = ((TARGET_PLOT_W + cols / 2) / cols).clamp(1, MAX_PITCH).min((MAX_WIDTH - LEFT - RIGHT) / cols);
    let plot_w = cols * pitch;
    let (h, w) = summary.input;
    let title = format!("{} @ {h}x{w}: total {:.3} BFLOPs", summary.arch, summary.bflops);
    let title_scale = if font::text_width(&title, 2) + LEFT + RIGHT <= MAX_WIDTH { 2 } else { 1 };
    let width =
        (plot_w + LEFT + RIGHT).max(font::text_width(&title, title_scale) + LEFT + RIGHT).clamp(MIN_WIDTH, MAX_WIDTH);
    let height = TOP + PLOT_H + BOTTOM;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, WHITE);
    let (x0, y_axis) = (LEFT as i64, (TOP + PLOT_H) as i64);

    draw_text(&mut img, 12, 14, &title, BLACK, title_scale);
    draw_text(&mut img, 8, TOP as i64 - 14, "BFLOPs / layer", AXIS, 1);

    // Neck band behind everything else.
    for (c, col) in columns.iter().enumerate() {
        if col.neck {
            let x = x0 + (c * pitch) as i64;
            fill_rect(&mut img, x, TOP as i64, x + pitch as i64, y_axis, NECK_BAND);
        }
    }

    // Y axis: grid lines and labels at a round step.
    let peak = columns.iter().map(|c| c.bflops).fold(0.0, f64::max);
    let (step, decimals) = nice_step(if peak > 0.0 { peak } else { 1.0 }, 5);
    let y_max = (peak / step).ceil().max(1.0) * step;
    let to_y = |v: f64| y_axis - ((v / y_max) * PLOT_H as f64).round() as i64;
    let mut k = 0.0;
    while k * step <= y_max + step * 1e-9 {
        let v = k * step;
        let y = to_y(v);
        if k > 0.0 {
            fill_rect(&mut img, x0, y, x0 + plot_w as i64, y + 1, GRID);
        }
        let label = format!("{v:.decimals$}");
        let lx = x0 - 6 - font::text_width(&label, 1) as i64;
        draw_text(&mut img, lx, y - (font::GLYPH_H as i64 - 1) / 2, &label, AXIS, 1);
        fill_rect(&mut img, x0 - 4, y, x0, y + 1, AXIS);
        k += 1.0;
    }

    // Bars; a gap between neighbours once they are wide enough to afford one.
    let bar_w = if pitch >= 3 { pitch - 1 } else { pitch };
    for (c, col) in columns.iter().enumerate() {
        if col.bflops <= 0.0 {
            continue;
        }
        let x = x0 + (c * pitch) as i64;
        // Any layer with FLOPs gets at least one pixel of bar.
        let top = to_y(col.bflops).min(y_axis - 1);
        fill_rect(&mut img, x, top, x + bar_w as i64, y_axis, col.category.color());
    }

    // Axes, then the head marks just under the x axis.
    fill_rect(&mut img, x0 - 1, TOP as i64, x0, y_axis + 1, AXIS);
    fill_rect(&mut img, x0 - 1, y_axis, x0 + plot_w as i64, y_axis + 1, AXIS);
    for (c, col) in columns.iter().enumerate() {
        if col.head {
            let x = x0 + (c * pitch) as i64 + pitch as i64 / 2;
            fill_rect(&mut img, x - 2, y_axis + 2, x + 3, y_axis + 7, HEAD_MARK);
        }
    }

    // X axis: layer indices at a round step, spaced at least ~70 px apart.
    let max_ticks = (plot_w / 70).max(1);
    let (xstep, _) = nice_step(n as f64, max_ticks);
    let xstep = (xstep as usize).max(1);
    for layer in (0..n).step_by(xstep) {
        let c = layer * cols / n;
        let x = x0 + (c * pitch) as i64 + pitch as i64 / 2;
        fill_rect(&mut img, x, y_axis + 1, x + 1, y_axis + 9, AXIS);
        let label = layer.to_string();
        draw_text(&mut img, x - font::text_width(&label, 1) as i64 / 2, y_axis + 11, &label, AXIS, 1);
    }
    let xlabel = format!("layer ({n} layers)");
    let xl = x0 + plot_w as i64 / 2 - font::text_width(&xlabel, 1) as i64 / 2;
    draw_text(&mut img, xl, y_axis + 24, &xlabel, AXIS, 1);

    legend(&mut img, &columns, x0, y_axis + 44);
    Ok(img)
}

/// The layers grouped into at most `MAX_WIDTH - LEFT - RIGHT` columns (one per layer unless the
/// network is longer); a shared column shows its busiest layer.
fn columns(net: &Network, summary: &Summary) -> Vec<Column> {
    let n = summary.layers.len();
    let cols = n.min(MAX_WIDTH - LEFT - RIGHT);
    let mut out = Vec::with_capacity(cols);
    for c in 0..cols {
        let (from, to) = (c * n / cols, ((c + 1) * n / cols).max(c * n / cols + 1));
        let mut col = Column { bflops: 0.0, category: Category::Free, neck: false, head: false };
        for i in from..to.min(n) {
            let (cost, layer) = (&summary.layers[i], &net.layers[i]);
            let bflops = cost.flops as f64 / 1e9;
            if bflops > col.bflops || (i == from && bflops == 0.0) {
                col.bflops = bflops;
                col.category = Category::of(&layer.op);
            }
            col.neck |= cost.neck;
            col.head |= matches!(layer.op, Op::Yolo(_));
        }
        out.push(col);
    }
    out
}

/// Colour keys for the categories present, the neck band and the head marks.
fn legend(img: &mut RgbImage, columns: &[Column], x0: i64, y: i64) {
    let mut x = x0;
    let mut entry = |img: &mut RgbImage, swatch: Rgb<u8>, text: &str| {
        fill_rect(img, x, y, x + 10, y + 10, swatch);
        draw_rect(img, x, y, x + 10, y + 10, AXIS, 1);
        draw_text(img, x + 15, y + 1, text, AXIS, 1);
        x += 15 + font::text_width(text, 1) as i64 + 18;
    };
    for cat in Category::SHOWN {
        if columns.iter().any(|c| c.category == cat && c.bflops > 0.0) {
            entry(img, cat.color(), cat.name());
        }
    }
    if columns.iter().any(|c| c.neck) {
        entry(img, NECK_BAND, "neck (pyramid) layers");
    }
    if columns.iter().any(|c| c.head) {
        entry(img, HEAD_MARK, "yolo head");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flops::summarize;

    #[test]
    fn nice_steps_are_round() {
        for (span, ticks, step, decimals) in
            [(1.0, 5, 0.2, 1), (3.7, 5, 1.0, 0), (0.0123, 5, 0.005, 3), (300.0, 10, 50.0, 0), (7.0, 1, 10.0, 0)]
        {
            let (s, d) = nice_step(span, ticks);
            assert!((s - step).abs() < 1e-12 * step, "{span}/{ticks}: {s}");
            assert_eq!(d, decimals, "{span}/{ticks}");
        }
    }

    #[test]
    fn long_detector_fits_and_short_classifier_is_readable() {
        let det = crate::backbones::build("cspdarknet53_panet_spp", 80).unwrap();
        let s = summarize(&det, 416, 416).unwrap();
        let img = bflops_chart(&det, &s).unwrap();
        assert!(img.width() as usize <= MAX_WIDTH);
        assert_eq!(img.height() as usize, TOP + PLOT_H + BOTTOM);
        // Bars in the 1x1 and kxk colours, and the neck band, made it onto the image.
        for c in [Category::Pointwise.color(), Category::Spatial.color(), NECK_BAND, HEAD_MARK] {
            assert!(img.pixels().any(|p| *p == c), "{c:?} missing");
        }

        let cls = crate::backbones::build("resnet10", 1000).unwrap();
        let s = summarize(&cls, 256, 256).unwrap();
        let img = bflops_chart(&cls, &s).unwrap();
        assert!(img.width() as usize >= MIN_WIDTH);
        assert!(img.pixels().any(|p| *p == Category::Linear.color()));
        assert!(!img.pixels().any(|p| *p == NECK_BAND), "a classifier has no neck");
    }

    #[test]
    fn very_long_networks_share_columns() {
        use crate::layers::Activation;
        use crate::network::NetworkBuilder;
        use crate::preprocess::Preprocess;
        let mut b = NetworkBuilder::new(3);
        for i in 0..3000 {
            // Every 100th layer is a 3x3 conv, ten times the cost of the 1x1s around it.
            let k = if i % 100 == 50 { 3 } else { 1 };
            b.conv(&format!("c{i}"), 4, k, 1, 1, Activation::Relu);
        }
        let net = b.finish("long", (8, 8), 0, Preprocess::DARKNET_CLASSIFIER);
        let s = summarize(&net, 8, 8).unwrap();
        let cols = columns(&net, &s);
        assert_eq!(cols.len(), MAX_WIDTH - LEFT - RIGHT);
        // The busiest layer of a shared column wins: all 30 3x3 convs stay visible.
        assert_eq!(cols.iter().filter(|c| c.category == Category::Spatial).count(), 30);
        let img = bflops_chart(&net, &s).unwrap();
        assert_eq!(img.width() as usize, MAX_WIDTH);
    }

    #[test]
    fn mismatched_summary_is_an_error() {
        let a = crate::backbones::build("resnet10", 10).unwrap();
        let b = crate::backbones::build("peleenet", 10).unwrap();
        let s = summarize(&b, 224, 224).unwrap();
        assert!(bflops_chart(&a, &s).is_err());
    }
}

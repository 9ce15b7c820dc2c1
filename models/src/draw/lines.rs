//! A line chart of named series of (x, y) points: axes with round tick labels, axis titles, a
//! legend, optional log-scale y. Generic: the client plots latency against throughput with it,
//! training plots loss curves.

use image::{Rgb, RgbImage};

use super::{draw_rect, draw_text, fill_rect, font, nice_step, BLACK, WHITE};
use crate::error::{Error, Result};

const AXIS: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const LEFT: i64 = 76;
const RIGHT: i64 = 24;
const TOP: i64 = 44;
/// Tick labels and the x axis title under the plot; the legend goes below them.
const BELOW_AXIS: i64 = 40;
const LEGEND_ROW: i64 = 18;

/// Distinct colours for series without one of their own (matplotlib's "tab10" order).
pub const PALETTE: [Rgb<u8>; 8] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
];

/// One named line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// Joined in the order given (sort by x first for a function plot).
    pub points: Vec<(f64, f64)>,
    /// `None`: the next colour of [`PALETTE`].
    pub color: Option<Rgb<u8>>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, color: None }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic y axis; points with y <= 0 are left out.
    pub log_y: bool,
    /// Plot area in pixels (the image adds margins, title and legend).
    pub plot_width: u32,
    pub plot_height: u32,
    /// Mark each point with a small square (useful when there are few points).
    pub markers: bool,
}

impl LineChart {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            log_y: false,
            plot_width: 640,
            plot_height: 360,
            markers: true,
        }
    }

    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// The points of each series that can be drawn (finite; y > 0 on a log axis).
    fn drawable(&self) -> Vec<Vec<(f64, f64)>> {
        let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0);
        self.series.iter().map(|s| s.points.iter().copied().filter(keep).collect()).collect()
    }

    /// Draws the chart. Errors when no series has a drawable point.
    pub fn render(&self) -> Result<RgbImage> {
        let points = self.drawable();
        let all: Vec<(f64, f64)> = points.iter().flatten().copied().collect();
        if all.is_empty() {
            return Err(Error::Input(format!("line chart `{}`: no finite points to draw", self.title)));
        }
        let x = Axis::linear(all.iter().map(|p| p.0), self.plot_width.max(50) as f64 / 80.0);
        let y = if self.log_y {
            Axis::log(all.iter().map(|p| p.1))
        } else {
            Axis::linear(all.iter().map(|p| p.1), self.plot_height.max(50) as f64 / 50.0)
        };
        let (pw, ph) = (self.plot_width.max(50) as i64, self.plot_height.max(50) as i64);
        let legend_rows = self.legend_rows(pw + LEFT + RIGHT);
        let width = LEFT + pw + RIGHT;
        let height = TOP + ph + BELOW_AXIS + legend_rows as i64 * LEGEND_ROW + 8;
        let mut img = RgbImage::from_pixel(width as u32, height as u32, WHITE);
        let (x0, y0) = (LEFT, TOP + ph);
        let px = |v: f64| x0 + (x.fraction(v) * (pw - 1) as f64).round() as i64;
        let py = |v: f64| y0 - 1 - (y.fraction(v) * (ph - 1) as f64).round() as i64;

        draw_text(&mut img, 12, 10, &self.title, BLACK, 2);
        draw_text(&mut img, 8, TOP - 14, &self.y_label, AXIS, 1);
        for tick in &y.ticks {
            let v = py(tick.value);
            fill_rect(&mut img, x0, v, x0 + pw, v + 1, GRID);
            fill_rect(&mut img, x0 - 4, v, x0, v + 1, AXIS);
            let lx = x0 - 6 - font::text_width(&tick.label, 1) as i64;
            draw_text(&mut img, lx, v - (font::GLYPH_H as i64 - 1) / 2, &tick.label, AXIS, 1);
        }
        for tick in &x.ticks {
            let h = px(tick.value);
            fill_rect(&mut img, h, TOP, h + 1, y0, GRID);
            fill_rect(&mut img, h, y0, h + 1, y0 + 5, AXIS);
            draw_text(&mut img, h - font::text_width(&tick.label, 1) as i64 / 2, y0 + 8, &tick.label, AXIS, 1);
        }
        fill_rect(&mut img, x0 - 1, TOP, x0, y0 + 1, AXIS);
        fill_rect(&mut img, x0 - 1, y0, x0 + pw, y0 + 1, AXIS);
        let xl = x0 + pw / 2 - font::text_width(&self.x_label, 1) as i64 / 2;
        draw_text(&mut img, xl, y0 + 22, &self.x_label, AXIS, 1);

        for (i, (series, pts)) in self.series.iter().zip(&points).enumerate() {
            let color = self.color(i, series);
            let pixels: Vec<(i64, i64)> = pts.iter().map(|&(a, b)| (px(a), py(b))).collect();
            for w in pixels.windows(2) {
                line(&mut img, w[0], w[1], color);
            }
            for &(a, b) in &pixels {
                if self.markers || pixels.len() == 1 {
                    fill_rect(&mut img, a - 2, b - 2, a + 3, b + 3, color);
                }
            }
        }
        self.legend(&mut img, y0 + BELOW_AXIS, width);
        Ok(img)
    }

    fn color(&self, index: usize, series: &Series) -> Rgb<u8> {
        series.color.unwrap_or(PALETTE[index % PALETTE.len()])
    }

    fn legend_entry_width(series: &Series) -> i64 {
        14 + font::text_width(&series.name, 1) as i64 + 18
    }

    /// Rows the legend wraps into within `width`.
    fn legend_rows(&self, width: i64) -> usize {
        let (mut rows, mut x) = (usize::from(!self.series.is_empty()), LEFT);
        for s in &self.series {
            let w = Self::legend_entry_width(s);
            if x + w > width && x > LEFT {
                rows += 1;
                x = LEFT;
            }
            x += w;
        }
        rows
    }

    fn legend(&self, img: &mut RgbImage, top: i64, width: i64) {
        let (mut x, mut y) = (LEFT, top);
        for (i, s) in self.series.iter().enumerate() {
            let w = Self::legend_entry_width(s);
            if x + w > width && x > LEFT {
                x = LEFT;
                y += LEGEND_ROW;
            }
            let color = self.color(i, s);
            fill_rect(img, x, y + 1, x + 10, y + 9, color);
            draw_rect(img, x, y + 1, x + 10, y + 9, AXIS, 1);
            draw_text(img, x + 14, y + 1, &s.name, AXIS, 1);
            x += w;
        }
    }
}

/// A 2-pixel-wide straight line (Bresenham), clipped to the image.
fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        fill_rect(img, x, y, x + 2, y + 2, color);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Tick {
    value: f64,
    label: String,
}

/// One axis: its range (log10 of it on a log axis) and ticks.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<Tick>,
}

impl Axis {
    /// Round ticks covering the data, about `max_ticks` of them; the range is widened to the
    /// ticks at both ends so the data sits inside the frame.
    fn linear(values: impl Iterator<Item = f64>, max_ticks: f64) -> Axis {
        let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        let (step, decimals) = nice_step(hi - lo, max_ticks.max(2.0) as usize);
        let (first, last) = ((lo / step).floor(), (hi / step).ceil());
        let ticks = (0..=(last - first) as i64)
            .map(|k| {
                let value = (first + k as f64) * step;
                // Avoid "-0".
                let value = if value.abs() < step * 1e-9 { 0.0 } else { value };
                Tick { value, label: format!("{value:.decimals$}") }
            })
            .collect();
        Axis { lo: first * step, hi: last * step, log: false, ticks }
    }

    /// Decades covering the data (at least one), ticks at 1, 2 and 5 times each power of ten
    /// when there are few decades, at the powers alone otherwise.
    fn log(values: impl Iterator<Item = f64>) -> Axis {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (mut lo, mut hi) = (lo.log10().floor(), hi.log10().ceil());
        if hi <= lo {
            hi = lo + 1.0;
        }
        if hi - lo > 12.0 {
            lo = hi - 12.0;
        }
        let multiples: &[f64] = if hi - lo <= 3.0 { &[1.0, 2.0, 5.0] } else { &[1.0] };
        let mut ticks = Vec::new();
        for decade in lo as i64..=hi as i64 {
            for &m in multiples {
                let value = m * 10f64.powi(decade as i32);
                if value.log10() <= hi + 1e-9 {
                    ticks.push(Tick { value, label: compact(value) });
                }
            }
        }
        Axis { lo, hi, log: true, ticks }
    }

    /// Where `v` falls between the axis ends, 0..=1 (clamped).
    fn fraction(&self, v: f64) -> f64 {
        let v = if self.log { v.log10() } else { v };
        ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }
}

/// 0.001, 0.5, 20, 1000, 1e+06: short labels for log ticks.
fn compact(v: f64) -> String {
    if (1e-3..1e5).contains(&v) {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(img: &RgbImage, color: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == color).count()
    }

    #[test]
    fn draws_every_series_in_its_colour_with_a_legend() {
        let chart = LineChart::new("latency", "requests/s", "ms")
            .series(Series::new("p50", vec![(10.0, 5.0), (20.0, 6.0), (40.0, 9.0)]))
            .series(Series::new("p99", vec![(10.0, 8.0), (20.0, 12.0), (40.0, 30.0)]))
            .series(Series { name: "own colour".into(), points: vec![(15.0, 20.0)], color: Some(Rgb([1, 2, 3])) });
        let img = chart.render().unwrap();
        assert_eq!(img.width(), (LEFT + 640 + RIGHT) as u32);
        // Lines and markers in the plot, plus the legend swatch; a lone point is its marker (5x5)
        // and the swatch (8x6 inside its border).
        for (color, least) in [(PALETTE[0], 200), (PALETTE[1], 200), (Rgb([1, 2, 3]), 25 + 48)] {
            assert!(count(&img, color) >= least, "{color:?}: {}", count(&img, color));
        }
        // The legend swatches sit below the plot area.
        let below =
            |c: Rgb<u8>| img.enumerate_pixels().any(|(_, y, p)| *p == c && y as i64 > TOP + 360 + BELOW_AXIS - 2);
        assert!(below(PALETTE[0]) && below(PALETTE[1]));
    }

    #[test]
    fn linear_axes_have_round_ticks_around_the_data() {
        let axis = Axis::linear([3.2, 47.9].into_iter(), 8.0);
        let values: Vec<f64> = axis.ticks.iter().map(|t| t.value).collect();
        assert_eq!(values, [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(axis.ticks[1].label, "10");
        assert_eq!((axis.fraction(0.0), axis.fraction(25.0), axis.fraction(50.0)), (0.0, 0.5, 1.0));
        let small = Axis::linear([0.012, 0.018].into_iter(), 5.0);
        let labels: Vec<&str> = small.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0.012", "0.014", "0.016", "0.018"]);
        // A single value still gets a range around it.
        let flat = Axis::linear([7.0, 7.0].into_iter(), 5.0);
        assert!(flat.lo < 7.0 && flat.hi > 7.0);
    }

    #[test]
    fn log_axis_spaces_decades_evenly_and_skips_non_positive_points() {
        let axis = Axis::log([1.0, 100.0].into_iter());
        assert_eq!((axis.fraction(1.0), axis.fraction(10.0), axis.fraction(100.0)), (0.0, 0.5, 1.0));
        let labels: Vec<&str> = axis.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["1", "2", "5", "10", "20", "50", "100"]);
        let mut chart = LineChart::new("loss", "step", "loss")
            .series(Series::new("train", vec![(0.0, 2.3), (1.0, 0.0), (2.0, 0.4), (3.0, -1.0)]));
        chart.log_y = true;
        assert_eq!(chart.drawable()[0].len(), 2);
        assert!(chart.render().is_ok());
        assert_eq!(compact(0.001), "0.001");
        assert_eq!(compact(1e6), "1e6");
    }

    #[test]
    fn nothing_to_draw_is_an_error() {
        let empty = LineChart::new("t", "x", "y");
        assert!(empty.render().is_err());
        let nan = LineChart::new("t", "x", "y").series(Series::new("s", vec![(f64::NAN, 1.0)]));
        assert!(nan.render().is_err());
    }
}

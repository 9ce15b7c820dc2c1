//! Drawing on `image::RgbImage` without font files or drawing crates: rectangles, filled label
//! backgrounds and text in the built-in [`font`], detections drawn as boxes with "label score"
//! tags, and the per-layer BFLOPs chart ([`chart`]). Coordinates are signed pixels; whatever
//! falls outside the image is clipped, so callers never check bounds.

pub mod chart;
pub mod font;
pub mod lines;

use image::{Rgb, RgbImage};

use crate::heads::Detection;

pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// Sets one pixel if it lies inside the image.
pub fn put_pixel(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < img.width() as i64 && y < img.height() as i64 {
        img.put_pixel(x as u32, y as u32, color);
    }
}

/// Fills the half-open rectangle [x0, x1) x [y0, y1), clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, x1) = (x0.clamp(0, w), x1.clamp(0, w));
    let (y0, y1) = (y0.clamp(0, h), y1.clamp(0, h));
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x as u32, y as u32, color);
        }
    }
}

/// Outlines the half-open rectangle [x0, x1) x [y0, y1) with lines `thickness` pixels wide,
/// drawn inside the rectangle (a thick border never grows the box).
pub fn draw_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>, thickness: usize) {
    let t = thickness.max(1) as i64;
    let (x0, x1) = (x0.min(x1), x0.max(x1));
    let (y0, y1) = (y0.min(y1), y0.max(y1));
    fill_rect(img, x0, y0, x1, (y0 + t).min(y1), color);
    fill_rect(img, x0, (y1 - t).max(y0), x1, y1, color);
    fill_rect(img, x0, y0, (x0 + t).min(x1), y1, color);
    fill_rect(img, (x1 - t).max(x0), y0, x1, y1, color);
}

/// Draws `text` with its top-left corner at (x, y), each font pixel a `scale` x `scale` square.
/// One line: newlines and other non-printable characters show as the unknown-glyph box.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, color: Rgb<u8>, scale: usize) {
    let s = scale.max(1) as i64;
    for (k, c) in text.chars().enumerate() {
        let left = x + (k * font::ADVANCE) as i64 * s;
        if left >= img.width() as i64 {
            break;
        }
        for row in 0..font::GLYPH_H {
            for col in 0..font::GLYPH_W {
                if font::pixel(c, col, row) {
                    let (px, py) = (left + col as i64 * s, y + row as i64 * s);
                    fill_rect(img, px, py, px + s, py + s, color);
                }
            }
        }
    }
}

/// Text on a filled background with a margin of one font pixel (`scale`) around it, top-left
/// corner at (x, y); returns the background's (width, height).
pub fn draw_label(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    fg: Rgb<u8>,
    bg: Rgb<u8>,
    scale: usize,
) -> (usize, usize) {
    let (w, h) = label_size(text, scale);
    fill_rect(img, x, y, x + w as i64, y + h as i64, bg);
    let pad = scale.max(1) as i64;
    draw_text(img, x + pad, y + pad, text, fg, scale);
    (w, h)
}

/// The background size [`draw_label`] fills for `text`.
pub fn label_size(text: &str, scale: usize) -> (usize, usize) {
    let s = scale.max(1);
    (font::text_width(text, s) + 2 * s, font::text_height(s) + 2 * s)
}

/// A stable, well-separated colour for class `id`: hues step by the golden ratio around the
/// colour wheel, so neighbouring ids differ strongly and the same id is always the same colour.
pub fn class_color(id: usize) -> Rgb<u8> {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    let hue = (0.1 + id as f64 * GOLDEN).fract();
    // Alternate brightness a little so ids whose hues land close still differ.
    let value = if id.is_multiple_of(2) { 0.95 } else { 0.8 };
    hsv_to_rgb(hue, 0.8, value)
}

/// HSV (each in [0, 1]) to 8-bit RGB.
pub fn hsv_to_rgb(h: f64, s: f64, v: f64) -> Rgb<u8> {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let sector = h6.floor() as u32 % 6;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    let byte = |c: f64| (c * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgb([byte(r), byte(g), byte(b)])
}

/// Black or white, whichever reads better on `bg` (by its luma).
pub fn text_color_on(bg: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = bg.0.map(f64::from);
    if 0.299 * r + 0.587 * g + 0.114 * b > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

/// Draws each detection as a box in its class colour with a "label score" tag above it (inside
/// the box when there is no room above). Line width and text size grow with the image.
pub fn draw_detections(img: &mut RgbImage, detections: &[Detection]) {
    let short_side = img.width().min(img.height()) as usize;
    let thickness = (short_side / 250).clamp(1, 6);
    let scale = (short_side / 300).clamp(1, 4);
    // Lowest score first, so the best boxes and their tags end up on top.
    let mut order: Vec<&Detection> = detections.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    for det in order {
        let color = class_color(det.class_id);
        let [x1, y1, x2, y2] = det.bbox.map(|v| if v.is_finite() { v.round() as i64 } else { 0 });
        // Boxes are inclusive of their far edge in pixel terms: draw at least one pixel.
        draw_rect(img, x1, y1, x2.max(x1 + 1), y2.max(y1 + 1), color, thickness);
        let name = det.label.clone().unwrap_or_else(|| det.class_id.to_string());
        let text = format!("{name} {:.2}", det.score);
        let (tag_w, tag_h) = label_size(&text, scale);
        let tag_y = if y1 >= tag_h as i64 { y1 - tag_h as i64 } else { y1 };
        // Keep the tag inside the image when the box touches the right edge.
        let tag_x = x1.clamp(0, (img.width() as i64 - tag_w as i64).max(0));
        draw_label(img, tag_x, tag_y, &text, text_color_on(color), color, scale);
    }
}

/// A round step (1, 2 or 5 times a power of ten) splitting `span` into at most `max_ticks`
/// intervals, and the decimals its labels need.
pub(crate) fn nice_step(span: f64, max_ticks: usize) -> (f64, usize) {
    let raw = span / max_ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude);
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    (step, decimals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, BLACK)
    }

    fn lit(img: &RgbImage) -> usize {
        img.pixels().filter(|p| **p != BLACK).count()
    }

    #[test]
    fn fill_and_outline_are_clipped_and_sized() {
        let mut img = blank(10, 10);
        fill_rect(&mut img, -5, -5, 3, 2, WHITE);
        assert_eq!(lit(&img), 6);
        let mut img = blank(10, 10);
        draw_rect(&mut img, 1, 1, 9, 9, WHITE, 1);
        assert_eq!(lit(&img), 8 * 4 - 4);
        assert_eq!(*img.get_pixel(1, 1), WHITE);
        assert_eq!(*img.get_pixel(8, 8), WHITE);
        assert_eq!(*img.get_pixel(9, 9), BLACK, "half-open: x1, y1 excluded");
        assert_eq!(*img.get_pixel(4, 4), BLACK, "hollow");
        // A border thicker than the box fills it and nothing else.
        let mut img = blank(10, 10);
        draw_rect(&mut img, 2, 2, 5, 5, WHITE, 4);
        assert_eq!(lit(&img), 9);
        // Entirely outside: nothing, no panic.
        draw_rect(&mut img, -50, -50, -10, -10, WHITE, 3);
        draw_text(&mut img, 100, 100, "far away", WHITE, 2);
        assert_eq!(lit(&img), 9);
    }

    #[test]
    fn text_covers_its_glyph_pixels_at_scale() {
        let mut img = blank(40, 20);
        draw_text(&mut img, 1, 1, "I", WHITE, 2);
        let set: u32 = font::glyph('I').iter().map(|r| r.count_ones()).sum();
        assert_eq!(lit(&img), set as usize * 4);
        // Nothing lands past the computed width.
        let w = font::text_width("I", 2) as u32;
        assert!(img.enumerate_pixels().all(|(x, _, p)| *p == BLACK || (x >= 1 && x < 1 + w)));
    }

    #[test]
    fn class_colours_are_stable_and_distinct() {
        assert_eq!(class_color(7), class_color(7));
        let first: Vec<Rgb<u8>> = (0..20).map(class_color).collect();
        for (i, a) in first.iter().enumerate() {
            for b in &first[i + 1..] {
                let d: i32 = a.0.iter().zip(b.0).map(|(&x, y)| (x as i32 - y as i32).abs()).sum();
                assert!(d > 20, "{a:?} vs {b:?}");
            }
        }
        assert_eq!(hsv_to_rgb(0.0, 1.0, 1.0), Rgb([255, 0, 0]));
        assert_eq!(hsv_to_rgb(1.0 / 3.0, 1.0, 1.0), Rgb([0, 255, 0]));
        assert_eq!(text_color_on(WHITE), BLACK);
        assert_eq!(text_color_on(BLACK), WHITE);
    }

    #[test]
    fn detections_draw_boxes_and_tags() {
        let mut img = blank(64, 48);
        let det = Detection { bbox: [10.0, 20.0, 40.0, 44.0], score: 0.9, class_id: 2, label: Some("car".into()) };
        draw_detections(&mut img, &[det]);
        let color = class_color(2);
        assert_eq!(*img.get_pixel(10, 30), color, "left edge");
        assert_eq!(*img.get_pixel(39, 30), color, "right edge");
        assert_eq!(*img.get_pixel(25, 43), color, "bottom edge");
        assert_eq!(*img.get_pixel(25, 32), BLACK, "inside stays untouched");
        // The tag sits right above the box, on the class colour.
        assert_eq!(*img.get_pixel(10, 19), color);
        // Degenerate and non-finite boxes draw without panicking.
        let odd = Detection { bbox: [f32::NAN, 5.0, 5.0, f32::INFINITY], score: 0.1, class_id: 0, label: None };
        draw_detections(&mut img, &[odd]);
    }
}

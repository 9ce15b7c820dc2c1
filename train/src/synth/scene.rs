//! Composes one image: a background, then shapes, then a little sensor noise.

use image::RgbImage;
use rand::Rng;

use super::background::background;
use super::canvas::Canvas;
use super::color::shape_color;
use super::shapes::{Shape, ShapeKind};

/// One labelled shape of a generated image: its class index (into the dataset's class list),
/// pixel box `[x0, y0, x1, y1)` and covered area.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SceneObject {
    pub class: usize,
    pub bbox: [u32; 4],
    pub area: f32,
}

/// How much of either box another may cover when placing shapes: some overlap, never hidden.
const MAX_COVER: f32 = 0.4;

/// Several shapes of the given classes, varied in size, rotation and colour; boxes are the tight
/// boxes of each shape's own pixels (a later shape may partly cover an earlier one).
pub fn detection_scene(
    (width, height): (usize, usize),
    classes: &[ShapeKind],
    max_objects: usize,
    rng: &mut impl Rng,
) -> (RgbImage, Vec<SceneObject>) {
    let mut canvas = background(width, height, rng);
    let short = width.min(height) as f32;
    let (r_min, r_max) = ((0.06 * short).max(5.0), (0.3 * short).max(6.0));
    let count = rng.random_range(1..=max_objects.max(1));
    let mut placed: Vec<[f32; 4]> = Vec::new();
    let mut objects = Vec::new();
    for _ in 0..count {
        let class = rng.random_range(0..classes.len());
        // Log-uniform radius: as many small shapes as large ones.
        let radius = (r_min.ln() + rng.random::<f32>() * (r_max / r_min).ln()).exp().min(short / 2.0);
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let mut chosen = None;
        for _ in 0..30 {
            let cx = rng.random_range(radius..=(width as f32 - radius).max(radius));
            let cy = rng.random_range(radius..=(height as f32 - radius).max(radius));
            let shape = Shape { kind: classes[class], cx, cy, radius, angle };
            let extent = shape.extent();
            if placed.iter().all(|p| cover(p, &extent) <= MAX_COVER && cover(&extent, p) <= MAX_COVER) {
                chosen = Some((shape, extent));
                break;
            }
        }
        let Some((shape, extent)) = chosen else { continue };
        let color = shape_color(mean_under(&canvas, extent), rng);
        if let Some(painted) = shape.paint(&mut canvas, color) {
            placed.push(extent);
            objects.push(SceneObject { class, bbox: painted.bbox, area: painted.area });
        }
    }
    add_noise(&mut canvas, rng);
    (canvas.to_image(), objects)
}

/// One shape of class `kind`, large and near the centre (an image-folder classification sample).
pub fn classification_image((width, height): (usize, usize), kind: ShapeKind, rng: &mut impl Rng) -> RgbImage {
    let mut canvas = background(width, height, rng);
    let short = width.min(height) as f32;
    let radius = rng.random_range(0.22 * short..=0.42 * short).max(3.0);
    let jitter = |rng: &mut _, side: f32| {
        let c = side / 2.0 + uniform_sym(rng, 0.1 * short);
        c.clamp(radius.min(side / 2.0), (side - radius).max(side / 2.0))
    };
    let (cx, cy) = (jitter(rng, width as f32), jitter(rng, height as f32));
    let shape = Shape { kind, cx, cy, radius, angle: rng.random_range(0.0..std::f32::consts::TAU) };
    let color = shape_color(mean_under(&canvas, shape.extent()), rng);
    shape.paint(&mut canvas, color);
    add_noise(&mut canvas, rng);
    canvas.to_image()
}

fn uniform_sym(rng: &mut impl Rng, half: f32) -> f32 {
    if half > 0.0 {
        rng.random_range(-half..half)
    } else {
        0.0
    }
}

/// Fraction of `a`'s area that `b` covers.
fn cover(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = ((a[2] - a[0]) * (a[3] - a[1])).max(1e-6);
    iw * ih / area
}

fn mean_under(canvas: &Canvas, [x0, y0, x1, y1]: [f32; 4]) -> [f32; 3] {
    let (w, h) = (canvas.width, canvas.height);
    let (x0, x1) = ((x0.max(0.0) as usize).min(w - 1), (x1.max(0.0).ceil() as usize).clamp(1, w));
    let (y0, y1) = ((y0.max(0.0) as usize).min(h - 1), (y1.max(0.0).ceil() as usize).clamp(1, h));
    let mut sum = [0f32; 3];
    let mut n = 0f32;
    for y in y0..y1.max(y0 + 1) {
        for x in x0..x1.max(x0 + 1) {
            let p = canvas.pixels[y * w + x];
            (0..3).for_each(|c| sum[c] += p[c]);
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

/// Independent per-pixel noise of a random strength (up to about 4% of full scale).
fn add_noise(canvas: &mut Canvas, rng: &mut impl Rng) {
    let strength = rng.random_range(0.0..0.04f32);
    if strength == 0.0 {
        return;
    }
    for p in &mut canvas.pixels {
        for v in p.iter_mut() {
            *v += rng.random_range(-strength..strength);
        }
    }
}

//! Augmentation on host images. Everything random draws from the RNG it is handed, so a sample's
//! augmentation is fixed by its stream (see [`super::sample_rng`]). Float images here are planar
//! RGB (`[3][h][w]`) in [0, 1] units, normalised only at the very end.

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng;

use super::BoxLabel;

/// Brightness, contrast and saturation factors are drawn from `[1 - x, 1 + x]`; the hue turns by
/// up to `hue` of a full circle (torchvision's `ColorJitter` ranges).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl ColorJitter {
    pub const NONE: ColorJitter = ColorJitter { brightness: 0.0, contrast: 0.0, saturation: 0.0, hue: 0.0 };
}

/// Classifier training augmentation: random resized crop, horizontal flip, colour jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassAugment {
    /// Fraction of the image area the crop covers (torchvision default (0.08, 1)).
    pub crop_scale: (f32, f32),
    /// Crop aspect ratio w/h range, drawn log-uniformly.
    pub crop_ratio: (f32, f32),
    /// Probability of a horizontal flip.
    pub flip: f32,
    pub jitter: ColorJitter,
}

impl Default for ClassAugment {
    /// A milder crop than ImageNet's (0.08 would often cut a single shape off its image).
    fn default() -> Self {
        ClassAugment {
            crop_scale: (0.35, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: 0.5,
            jitter: ColorJitter { brightness: 0.3, contrast: 0.3, saturation: 0.3, hue: 0.03 },
        }
    }
}

/// Detector training augmentation: letterbox with scale/aspect jitter and random placement,
/// horizontal flip, colour jitter (on the image, not the grey padding).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetAugment {
    /// Size factor relative to the plain letterbox fit (1 = fits exactly).
    pub scale: (f32, f32),
    /// Aspect distortion: width/height are stretched by up to `1 + aspect` against each other.
    pub aspect: f32,
    /// Place the resized image at a random offset instead of centring it.
    pub translate: bool,
    /// Probability of a horizontal flip.
    pub flip: f32,
    pub jitter: ColorJitter,
    /// Boxes narrower or lower than this many input pixels after clipping are dropped.
    pub min_box: f32,
    /// Boxes keeping less than this fraction of their area after clipping are dropped.
    pub min_visible: f32,
}

impl DetAugment {
    /// No augmentation: exactly the inference letterbox.
    pub const NONE: DetAugment = DetAugment {
        scale: (1.0, 1.0),
        aspect: 0.0,
        translate: false,
        flip: 0.0,
        jitter: ColorJitter::NONE,
        min_box: 2.0,
        min_visible: 0.25,
    };
}

impl Default for DetAugment {
    fn default() -> Self {
        DetAugment {
            scale: (0.6, 1.3),
            aspect: 0.2,
            translate: true,
            flip: 0.5,
            jitter: ColorJitter { brightness: 0.3, contrast: 0.2, saturation: 0.4, hue: 0.03 },
            ..DetAugment::NONE
        }
    }
}

/// Uniform in `[lo, hi)`, or `lo` for an empty range (rand panics on those).
pub(crate) fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        lo + (hi - lo) * rng.random::<f32>()
    } else {
        lo
    }
}

/// Uniform integer in `[lo, hi]`.
fn uniform_int(rng: &mut impl Rng, lo: i64, hi: i64) -> i64 {
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

/// torchvision's `RandomResizedCrop`: ten tries at a crop of random area and aspect that fits,
/// else a centre crop clamped to the ratio range; then resized to `(h, w)` (triangle filter, as
/// `Preprocess::apply` resizes).
pub fn random_resized_crop(
    img: &RgbImage,
    (h, w): (usize, usize),
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> RgbImage {
    let (iw, ih) = (img.width().max(1), img.height().max(1));
    let area = (iw * ih) as f32;
    let (log_lo, log_hi) = (ratio.0.max(1e-3).ln(), ratio.1.max(1e-3).ln());
    let mut chosen = None;
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= iw && ch <= ih {
            let x = uniform_int(rng, 0, (iw - cw) as i64) as u32;
            let y = uniform_int(rng, 0, (ih - ch) as i64) as u32;
            chosen = Some((x, y, cw, ch));
            break;
        }
    }
    let (x, y, cw, ch) = chosen.unwrap_or_else(|| {
        let in_ratio = iw as f32 / ih as f32;
        let (cw, ch) = if in_ratio < ratio.0 {
            (iw, ((iw as f32 / ratio.0).round() as u32).clamp(1, ih))
        } else if in_ratio > ratio.1 {
            (((ih as f32 * ratio.1).round() as u32).clamp(1, iw), ih)
        } else {
            (iw, ih)
        };
        ((iw - cw) / 2, (ih - ch) / 2, cw, ch)
    });
    let crop = imageops::crop_imm(img, x, y, cw, ch).to_image();
    imageops::resize(&crop, w as u32, h as u32, FilterType::Triangle)
}

/// An RGB image as planar floats in [0, 1].
pub(crate) fn to_planar(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = p.0[c] as f32 / 255.0;
        }
    }
    data
}

/// Mirrors a planar image left-right in place.
pub fn hflip_planar(data: &mut [f32], h: usize, w: usize) {
    for row in data.chunks_exact_mut(w).take(3 * h) {
        row.reverse();
    }
}

/// Mirrors boxes in an image `width` pixels wide.
pub fn hflip_boxes(boxes: &mut [BoxLabel], width: f32) {
    for b in boxes {
        (b.x0, b.x1) = (width - b.x1, width - b.x0);
    }
}

/// Colour jitter on a planar [0, 1] image: brightness, contrast (around the mean grey),
/// saturation (around each pixel's grey), hue (a rotation of the YIQ chroma plane); clamped.
pub fn color_jitter(data: &mut [f32], jitter: &ColorJitter, rng: &mut impl Rng) {
    let n = data.len() / 3;
    if n == 0 {
        return;
    }
    let factor = |rng: &mut _, x: f32| uniform(rng, (1.0 - x).max(0.0), 1.0 + x);
    let brightness = factor(rng, jitter.brightness);
    let contrast = factor(rng, jitter.contrast);
    let saturation = factor(rng, jitter.saturation);
    let angle = uniform(rng, -jitter.hue, jitter.hue) * std::f32::consts::TAU;
    let (r, rest) = data.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    let grey = |r: f32, g: f32, b: f32| 0.299 * r + 0.587 * g + 0.114 * b;
    if brightness != 1.0 {
        for v in r.iter_mut().chain(g.iter_mut()).chain(b.iter_mut()) {
            *v = (*v * brightness).clamp(0.0, 1.0);
        }
    }
    if contrast != 1.0 {
        let mean = (0..n).map(|i| grey(r[i], g[i], b[i])).sum::<f32>() / n as f32;
        for v in r.iter_mut().chain(g.iter_mut()).chain(b.iter_mut()) {
            *v = ((*v - mean) * contrast + mean).clamp(0.0, 1.0);
        }
    }
    if saturation != 1.0 {
        for i in 0..n {
            let y = grey(r[i], g[i], b[i]);
            r[i] = ((r[i] - y) * saturation + y).clamp(0.0, 1.0);
            g[i] = ((g[i] - y) * saturation + y).clamp(0.0, 1.0);
            b[i] = ((b[i] - y) * saturation + y).clamp(0.0, 1.0);
        }
    }
    if angle != 0.0 {
        let (sin, cos) = angle.sin_cos();
        for i in 0..n {
            let y = grey(r[i], g[i], b[i]);
            let ci = 0.596 * r[i] - 0.274 * g[i] - 0.322 * b[i];
            let cq = 0.211 * r[i] - 0.523 * g[i] + 0.312 * b[i];
            let (ci, cq) = (ci * cos - cq * sin, ci * sin + cq * cos);
            r[i] = (y + 0.956 * ci + 0.621 * cq).clamp(0.0, 1.0);
            g[i] = (y - 0.272 * ci - 0.647 * cq).clamp(0.0, 1.0);
            b[i] = (y - 1.106 * ci + 1.703 * cq).clamp(0.0, 1.0);
        }
    }
}

/// `(v - mean) / std` per channel of a planar image.
pub(crate) fn normalize(data: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    let n = data.len() / 3;
    for (c, plane) in data.chunks_exact_mut(n.max(1)).take(3).enumerate() {
        for v in plane {
            *v = (*v - mean[c]) / std[c];
        }
    }
}

/// Where a (jittered) image lands in the network input: resized to `resized` and pasted at
/// `offset`, which may be negative (the image then overhangs and is cut).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// Original image (width, height).
    pub src: (usize, usize),
    /// Network input (width, height).
    pub net: (usize, usize),
    pub resized: (usize, usize),
    pub offset: (i64, i64),
}

impl Placement {
    /// Original-image corners -> network-input corners (unclipped).
    pub fn forward_box(&self, [x0, y0, x1, y1]: [f32; 4]) -> [f32; 4] {
        let sx = self.resized.0 as f64 / self.src.0 as f64;
        let sy = self.resized.1 as f64 / self.src.1 as f64;
        let (ox, oy) = (self.offset.0 as f64, self.offset.1 as f64);
        let fx = |x: f32| (ox + x as f64 * sx) as f32;
        let fy = |y: f32| (oy + y as f64 * sy) as f32;
        [fx(x0), fy(y0), fx(x1), fy(y1)]
    }

    /// The image resized and pasted on a grey (0.5) canvas; `jitter` recolours the image only.
    pub(crate) fn render(&self, img: &RgbImage, jitter: &ColorJitter, rng: &mut impl Rng, grey: f32) -> Vec<f32> {
        let (nw, nh) = self.net;
        let (rw, rh) = self.resized;
        let resized = imageops::resize(img, rw as u32, rh as u32, FilterType::Triangle);
        let mut pixels = to_planar(&resized);
        if *jitter != ColorJitter::NONE {
            color_jitter(&mut pixels, jitter, rng);
        }
        let mut canvas = vec![grey; 3 * nh * nw];
        // Visible part of the resized image, in its own coordinates.
        let x_lo = (-self.offset.0).clamp(0, rw as i64) as usize;
        let x_hi = (nw as i64 - self.offset.0).clamp(0, rw as i64) as usize;
        let y_lo = (-self.offset.1).clamp(0, rh as i64) as usize;
        let y_hi = (nh as i64 - self.offset.1).clamp(0, rh as i64) as usize;
        if x_lo >= x_hi {
            return canvas;
        }
        for c in 0..3 {
            for y in y_lo..y_hi {
                let ny = (y as i64 + self.offset.1) as usize;
                let nx = (x_lo as i64 + self.offset.0) as usize;
                let src = &pixels[c * rh * rw + y * rw + x_lo..c * rh * rw + y * rw + x_hi];
                let dst = c * nh * nw + ny * nw + nx;
                canvas[dst..dst + src.len()].copy_from_slice(src);
            }
        }
        canvas
    }
}

/// Maps original-image boxes into the input, clips them, and drops the ones left too small
/// (`min_box` pixels) or too hidden (`min_visible` of their mapped area).
pub fn place_boxes(boxes: &[BoxLabel], placement: &Placement, min_box: f32, min_visible: f32) -> Vec<BoxLabel> {
    let (nw, nh) = (placement.net.0 as f32, placement.net.1 as f32);
    let mut out = Vec::with_capacity(boxes.len());
    for b in boxes {
        let [x0, y0, x1, y1] = placement.forward_box(b.corners());
        let full = (x1 - x0) * (y1 - y0);
        let clipped = BoxLabel {
            class: b.class,
            x0: x0.clamp(0.0, nw),
            y0: y0.clamp(0.0, nh),
            x1: x1.clamp(0.0, nw),
            y1: y1.clamp(0.0, nh),
        };
        let (w, h) = (clipped.width(), clipped.height());
        if w < min_box || h < min_box || w * h < min_visible * full {
            continue;
        }
        out.push(clipped);
    }
    out
}

//! The map between original-image pixels and network-input pixels for a letterboxed (or
//! stretched) image. `preprocess` builds its letterbox canvas from [`Letterbox::new`], so the
//! boxes mapped back here land on the pixels the network actually saw.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Grey of the letterbox padding in [0, 1] units (darknet's 0.5), applied to the float input
/// before mean/std normalisation.
pub const LETTERBOX_GREY: f32 = 0.5;

/// Where an image of size `src` sits inside a network input of size `net`: resized to
/// `resized` and pasted at `offset`. All sizes are (width, height) in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letterbox {
    pub src: (usize, usize),
    pub net: (usize, usize),
    pub resized: (usize, usize),
    pub offset: (usize, usize),
}

impl Letterbox {
    /// Aspect-preserving fit: scale = min(net_w / w, net_h / h). The limiting side fills the
    /// network input exactly; the other is `round(side * scale)` (at least one pixel), computed
    /// in integers so every caller gets the same size. The padding is split evenly, the odd
    /// pixel going to the right/bottom.
    pub fn new(src: (usize, usize), net: (usize, usize)) -> Result<Self> {
        check_sizes(src, net)?;
        let ((w, h), (nw, nh)) = (src, net);
        // nw / w <= nh / h  <=>  nw * h <= nh * w (in u128: no overflow, no float ties).
        let width_limited = (nw as u128) * (h as u128) <= (nh as u128) * (w as u128);
        let resized = if width_limited {
            (nw, rounded_ratio(h, nw, w).clamp(1, nh))
        } else {
            (rounded_ratio(w, nh, h).clamp(1, nw), nh)
        };
        let offset = ((nw - resized.0) / 2, (nh - resized.1) / 2);
        Ok(Letterbox { src, net, resized, offset })
    }

    /// The plain stretch (`Resize::Stretch`): the image fills the input, aspect not kept.
    pub fn stretched(src: (usize, usize), net: (usize, usize)) -> Result<Self> {
        check_sizes(src, net)?;
        Ok(Letterbox { src, net, resized: net, offset: (0, 0) })
    }

    /// Network pixels per original pixel along x and y (equal up to the rounding of `resized`).
    pub fn scale(&self) -> (f64, f64) {
        (self.resized.0 as f64 / self.src.0 as f64, self.resized.1 as f64 / self.src.1 as f64)
    }

    /// Original-image point -> network-input point.
    pub fn forward(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let (sx, sy) = self.scale();
        [(self.offset.0 as f64 + x as f64 * sx) as f32, (self.offset.1 as f64 + y as f64 * sy) as f32]
    }

    /// Network-input point -> original-image point, clamped to the image ([0, w] x [0, h]).
    pub fn inverse(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let (sx, sy) = self.scale();
        let ox = (x as f64 - self.offset.0 as f64) / sx;
        let oy = (y as f64 - self.offset.1 as f64) / sy;
        [clamp_finite(ox, self.src.0 as f64), clamp_finite(oy, self.src.1 as f64)]
    }

    /// [`Letterbox::forward`] on both corners of `[x1, y1, x2, y2]`.
    pub fn forward_box(&self, b: [f32; 4]) -> [f32; 4] {
        let [x1, y1] = self.forward([b[0], b[1]]);
        let [x2, y2] = self.forward([b[2], b[3]]);
        [x1, y1, x2, y2]
    }

    /// [`Letterbox::inverse`] on both corners of `[x1, y1, x2, y2]`.
    pub fn inverse_box(&self, b: [f32; 4]) -> [f32; 4] {
        let [x1, y1] = self.inverse([b[0], b[1]]);
        let [x2, y2] = self.inverse([b[2], b[3]]);
        [x1, y1, x2, y2]
    }
}

fn check_sizes(src: (usize, usize), net: (usize, usize)) -> Result<()> {
    if src.0 == 0 || src.1 == 0 || net.0 == 0 || net.1 == 0 {
        return Err(Error::Input(format!(
            "letterbox needs non-empty sizes, got image {}x{} and network input {}x{}",
            src.0, src.1, net.0, net.1
        )));
    }
    Ok(())
}

/// round(a * b / c) for positive integers, halves rounded up.
fn rounded_ratio(a: usize, b: usize, c: usize) -> usize {
    let (a, b, c) = (a as u128, b as u128, c as u128);
    ((2 * a * b + c) / (2 * c)) as usize
}

/// Clamps to [0, max]; NaN goes to 0 so callers never see it.
fn clamp_finite(v: f64, max: f64) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, max) as f32
    }
}

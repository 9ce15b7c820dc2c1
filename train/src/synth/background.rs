//! Textured backgrounds: smooth value noise, linear gradients, stripes and checkers, all in
//! muted colours so the saturated shapes stay the foreground.

use rand::Rng;

use super::canvas::Canvas;
use super::color::{hsv, muted_color};

/// A random background of one of the four textures.
pub fn background(width: usize, height: usize, rng: &mut impl Rng) -> Canvas {
    let mut canvas = Canvas::filled(width, height, [0.5; 3]);
    let (a, b) = (muted_color(rng), muted_color(rng));
    match rng.random_range(0..4) {
        0 => value_noise(&mut canvas, a, rng),
        1 => {
            let (dx, dy) = direction(rng);
            let span = (width as f32 * dx.abs() + height as f32 * dy.abs()).max(1.0);
            let start = (0.0f32).min(width as f32 * dx) + (0.0f32).min(height as f32 * dy);
            fill(&mut canvas, |x, y| mix(a, b, (x * dx + y * dy - start) / span));
        }
        2 => {
            let (dx, dy) = direction(rng);
            let period = rng.random_range(6.0..24.0f32);
            // A steep sine: stripes with soft one-pixel edges.
            let tau = std::f32::consts::TAU;
            fill(&mut canvas, |x, y| mix(a, b, (0.5 + 2.0 * ((x * dx + y * dy) * tau / period).sin()).clamp(0.0, 1.0)));
        }
        _ => {
            let cell = rng.random_range(6..20) as f32;
            fill(&mut canvas, |x, y| if ((x / cell).floor() + (y / cell).floor()) as i64 % 2 == 0 { a } else { b });
        }
    }
    canvas
}

fn direction(rng: &mut impl Rng) -> (f32, f32) {
    let angle = rng.random_range(0.0..std::f32::consts::TAU);
    (angle.cos(), angle.sin())
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn fill(canvas: &mut Canvas, color: impl Fn(f32, f32) -> [f32; 3]) {
    let w = canvas.width;
    for (i, p) in canvas.pixels.iter_mut().enumerate() {
        *p = color((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
    }
}

/// Bilinear interpolation of random colours near `base` on a coarse grid.
fn value_noise(canvas: &mut Canvas, base: [f32; 3], rng: &mut impl Rng) {
    let cell = rng.random_range(8.0..32.0f32);
    let gw = (canvas.width as f32 / cell).ceil() as usize + 2;
    let gh = (canvas.height as f32 / cell).ceil() as usize + 2;
    let grid: Vec<[f32; 3]> = (0..gw * gh)
        .map(|_| {
            let v = rng.random_range(-0.18..0.18f32);
            let tint = hsv(rng.random_range(0.0..1.0), 0.3, 0.1);
            [0, 1, 2].map(|c| base[c] + v + tint[c] - 0.05)
        })
        .collect();
    fill(canvas, |x, y| {
        let (gx, gy) = (x / cell, y / cell);
        let (ix, iy) = (gx.floor() as usize, gy.floor() as usize);
        let (tx, ty) = (gx - ix as f32, gy - iy as f32);
        let at = |i: usize, j: usize| grid[j * gw + i];
        let top = mix(at(ix, iy), at(ix + 1, iy), tx);
        let bottom = mix(at(ix, iy + 1), at(ix + 1, iy + 1), tx);
        mix(top, bottom, ty)
    });
}

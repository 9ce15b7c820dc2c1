//! Colour choices: muted backgrounds, saturated shapes that stand out from what is under them.

use rand::Rng;

/// HSV (all in [0, 1]) to RGB.
pub fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let c = v * s;
    let x = c * (1.0 - (h6 % 2.0 - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

pub fn muted_color(rng: &mut impl Rng) -> [f32; 3] {
    hsv(rng.random_range(0.0..1.0), rng.random_range(0.0..0.45), rng.random_range(0.15..0.85))
}

fn vivid_color(rng: &mut impl Rng) -> [f32; 3] {
    hsv(rng.random_range(0.0..1.0), rng.random_range(0.55..1.0), rng.random_range(0.45..1.0))
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// A vivid colour at least a fixed distance from `under` (the mean colour it will cover),
/// falling back to the farthest of a few tries.
pub fn shape_color(under: [f32; 3], rng: &mut impl Rng) -> [f32; 3] {
    let mut best = vivid_color(rng);
    for _ in 0..8 {
        if distance(best, under) >= 0.45 {
            break;
        }
        let next = vivid_color(rng);
        if distance(next, under) > distance(best, under) {
            best = next;
        }
    }
    best
}

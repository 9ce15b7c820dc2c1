//! Packing into the panel layouts the micro-kernel streams through.
//!
//! Weights, once at load: for each group, panels of MR output channels, k-major inside a panel
//! (`[group][panel][k][MR]`), the last panel zero-padded (and, for the transposed GEMM, panels of
//! NR channels, at first use). Inputs: a padded copy split into phases for shifted views
//! (`phase_image`); or the GEMM's other side (the image itself for a 1x1 conv, its im2col rows
//! otherwise) as panels of pixels (`[panel][k][W]`): of NR block by block, as the tasks that read
//! them go, or of MR once per image for the transposed GEMM.

use super::kernel::{MR, NR};

/// The sizes of one layer's GEMMs, per group: `m` output channels, `k` reduction length.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub groups: usize,
    pub m: usize,
    pub k: usize,
}

impl Gemm {
    pub fn m_panels(&self) -> usize {
        self.m.div_ceil(MR)
    }
}

/// `weight` in `[groups * m, k]` row-major order -> `[group][panel][k][MR]`.
pub fn pack_weights(weight: &[f32], gemm: Gemm) -> Vec<f32> {
    let Gemm { groups, m, k } = gemm;
    let panels = gemm.m_panels();
    let mut packed = vec![0f32; groups * panels * k * MR];
    for g in 0..groups {
        for row in 0..m {
            let src = &weight[(g * m + row) * k..(g * m + row + 1) * k];
            let base = (g * panels + row / MR) * k * MR + row % MR;
            for (p, v) in src.iter().enumerate() {
                packed[base + p * MR] = *v;
            }
        }
    }
    packed
}

/// Where one image's input comes from: a conv's geometry on an `h x w` image.
#[derive(Clone, Copy, Debug)]
pub struct Unfold {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Unfold {
    /// A 1x1, stride-1, unpadded conv reads its input rows as they are.
    pub fn is_identity(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    /// Rows and columns of one phase of the input (see [`phase_image`]): enough for every output
    /// plus the farthest tap's shift, `(kernel - 1) / stride`.
    pub fn phase_size(&self) -> (usize, usize) {
        let reach = (self.kernel - 1) / self.stride;
        (self.oh + reach, self.ow + reach)
    }
}

/// A raw pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub struct Shared(pub *mut f32);
// SAFETY: every user writes only its own disjoint part (see the call sites).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the whole `Shared`, which is `Sync`).
    pub fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// One group's whole input (`groups == 1`) into `packed` as `[panel][k][W]`, panels of `W` pixels
/// (MR: the left side of the transposed GEMM), split between threads.
pub fn pack_image<'a, const W: usize>(
    channel: &(impl Fn(usize) -> &'a [f32] + Sync),
    geometry: Unfold,
    gemm: Gemm,
    packed: &mut [f32],
) {
    const PIXELS_PER_TASK: usize = 64;
    let per_task = PIXELS_PER_TASK.div_ceil(W);
    let panels = (geometry.oh * geometry.ow).div_ceil(W);
    let packed = &mut packed[..panels * gemm.k * W];
    crate::team::for_each_chunk(packed, per_task * gemm.k * W, |task, out| {
        let first = task * per_task;
        let count = out.len() / (gemm.k * W);
        let mut line = [0f32; PIXELS_PER_TASK + NR];
        pack_block::<W>(channel, geometry, gemm, (0, 0, gemm.k), (first * W, count), &mut line, out);
    });
}

/// Input channels `0..channels` (`channel(c)`, `h x w` each) into `padded` as
/// `[c][phase][hq][wq]` (see [`Unfold::phase_size`]), channels split between threads. Phase
/// `(py, px)`, for py, px < stride, holds input pixel `(r * stride + py - pad, q * stride + px - pad)`
/// at `(r, q)`, zero outside the image: so tap `(ky, kx)` of output `(oy, ox)` is phase
/// `(ky % stride, kx % stride)` at `(oy + ky / stride, ox + kx / stride)`. At stride 1 the one
/// phase is the zero-padded image. The rest of `padded` (slack the shifted views may read for
/// dropped columns) is zeroed.
pub fn phase_image<'a>(
    channel: &(impl Fn(usize) -> &'a [f32] + Sync),
    channels: usize,
    geometry: Unfold,
    padded: &mut [f32],
) {
    let Unfold { h, w, stride, padding: pad, .. } = geometry;
    let (hq, wq) = geometry.phase_size();
    let (planes, rest) = padded.split_at_mut(channels * stride * stride * hq * wq);
    rest.fill(0.0);
    // Phase index q covers input column q * stride + offset: the q range inside [0, w).
    let inside = |offset: isize, len: usize, count: usize| {
        let s = stride as isize;
        let lo = (((-offset).max(0) + s - 1) / s).min(count as isize);
        let hi = ((len as isize - offset + s - 1) / s).min(count as isize).max(lo);
        (lo as usize, hi as usize)
    };
    // Tasks of whole channels, at least COPY_TASK_FLOATS each: one task per 7x7 channel would
    // spend more on taking it than on copying it.
    let per_channel = stride * stride * hq * wq;
    let per_task = COPY_TASK_FLOATS.div_ceil(per_channel.max(1));
    crate::team::for_each_chunk(planes, per_task * per_channel, |task, out| {
        for (c, out) in (task * per_task..).zip(out.chunks_exact_mut(per_channel)) {
            let source = channel(c);
            for (phase, out) in out.chunks_exact_mut(hq * wq).enumerate() {
                let (py, px) = ((phase / stride) as isize - pad as isize, (phase % stride) as isize - pad as isize);
                let (x_lo, x_hi) = inside(px, w, wq);
                let (y_lo, y_hi) = inside(py, h, hq);
                // Borders: on small maps one fill of the plane, where a fill per row end would be a call
                // for a float or two; on large ones just the borders, not the plane twice over.
                let whole = wq < 32;
                if whole {
                    out.fill(0.0);
                } else {
                    out[..y_lo * wq].fill(0.0);
                    out[y_hi * wq..].fill(0.0);
                }
                for (r, line) in out[y_lo * wq..y_hi * wq].chunks_exact_mut(wq).enumerate() {
                    let iy = ((y_lo + r) as isize * stride as isize + py) as usize;
                    if !whole {
                        line[..x_lo].fill(0.0);
                        line[x_hi..].fill(0.0);
                    }
                    let from = (x_lo as isize * stride as isize + px) as usize;
                    let row = &source[iy * w..(iy + 1) * w];
                    if stride == 1 {
                        line[x_lo..x_hi].copy_from_slice(&row[from..from + (x_hi - x_lo)]);
                    } else {
                        gather(&mut line[x_lo..x_hi], &row[from..], stride);
                    }
                }
            }
        }
    });
}

/// Smallest copy task: 16 KiB.
const COPY_TASK_FLOATS: usize = 4096;

/// `out[i] = from[i * stride]`. Stride 2 (every strided conv in the CSP models) as pairs, which the
/// compiler vectorizes, where a general stride stays a scalar loop.
fn gather(out: &mut [f32], from: &[f32], stride: usize) {
    let Some((last, rest)) = out.split_last_mut() else { return };
    if stride == 2 {
        // The last value may be the row's final float, with no partner: on its own.
        rest.iter_mut().zip(from.chunks_exact(2)).for_each(|(v, pair)| *v = pair[0]);
    } else {
        rest.iter_mut().zip(from.iter().step_by(stride)).for_each(|(v, x)| *v = *x);
    }
    *last = from[rest.len() * stride];
}

/// Rows `k0..k0 + kc` of group `g`'s GEMM input (the image itself for a 1x1 conv, its im2col rows
/// otherwise), columns `col0..col0 + panels * W`, into `out` as `[panel][kc][W]`. `channel(c)` is
/// input channel c's `h x w` plane; `line` is scratch of `panels * W` floats. Columns past the
/// last pixel keep whatever they held: their results are never stored.
pub fn pack_block<'a, const W: usize>(
    channel: &impl Fn(usize) -> &'a [f32],
    geometry: Unfold,
    gemm: Gemm,
    (g, k0, kc): (usize, usize, usize),
    (col0, panels): (usize, usize),
    line: &mut [f32],
    out: &mut [f32],
) {
    let plane = geometry.oh * geometry.ow;
    let cols = (panels * W).min(plane - col0);
    let taps = geometry.kernel * geometry.kernel;
    let out = &mut out[..panels * kc * W];
    for r in 0..kc {
        let row = g * gemm.k + k0 + r;
        let (c, tap) = (row / taps, row % taps);
        let source = channel(c);
        let values: &[f32] = if geometry.is_identity() {
            &source[col0..col0 + cols]
        } else {
            let line = &mut line[..cols];
            unfold_range(source, geometry, (tap / geometry.kernel, tap % geometry.kernel), col0, line);
            line
        };
        let (whole, tail) = values.split_at(values.len() / W * W);
        for (p, chunk) in whole.chunks_exact(W).enumerate() {
            // Fixed-size copies (vector moves), not memcpy calls.
            let to: &mut [f32; W] = (&mut out[(p * kc + r) * W..][..W]).try_into().expect("W floats");
            *to = chunk.try_into().expect("W floats");
        }
        if !tail.is_empty() {
            out[((whole.len() / W) * kc + r) * W..][..tail.len()].copy_from_slice(tail);
        }
    }
}

/// The weights as the right-hand side of the transposed GEMM (output channels along the kernel's
/// NR-wide side): `[group][panel][k][NR]` from `pack_weights`' `[group][panel][k][MR]`, zero-padded.
pub fn transpose_weights(packed: &[f32], gemm: Gemm) -> Vec<f32> {
    let Gemm { groups, m, k } = gemm;
    let (m_panels, n_panels) = (m.div_ceil(MR), m.div_ceil(NR));
    let mut out = vec![0f32; groups * n_panels * k * NR];
    for g in 0..groups {
        for row in 0..m {
            let from = ((g * m_panels + row / MR) * k) * MR + row % MR;
            let to = ((g * n_panels + row / NR) * k) * NR + row % NR;
            for p in 0..k {
                out[to + p * NR] = packed[from + p * MR];
            }
        }
    }
    out
}

/// Columns `n0..n0 + out.len()` of the im2col row (ky, kx) of one channel:
/// out[oy * ow + ox - n0] = x[oy*stride - pad + ky, ox*stride - pad + kx], zero outside the image.
fn unfold_range(plane: &[f32], g: Unfold, (ky, kx): (usize, usize), n0: usize, out: &mut [f32]) {
    let pad = g.padding as isize;
    let dx = kx as isize - pad;
    let (ow, w) = (g.ow as isize, g.w as isize);
    // Output columns whose input x = ox * stride + dx falls inside a line (stride 1).
    let inside_lo = (-dx).clamp(0, ow) as usize;
    let inside_hi = (w - dx).clamp(inside_lo as isize, ow) as usize;
    let mut n = n0;
    let end = n0 + out.len();
    while n < end {
        let (oy, ox0) = (n / g.ow, n % g.ow);
        let ox1 = g.ow.min(ox0 + (end - n));
        let segment = &mut out[n - n0..n - n0 + (ox1 - ox0)];
        n += ox1 - ox0;
        let iy = (oy * g.stride) as isize - pad + ky as isize;
        if iy < 0 || iy >= g.h as isize {
            segment.fill(0.0);
            continue;
        }
        let line = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
        if g.stride == 1 {
            let lo = inside_lo.clamp(ox0, ox1);
            let hi = inside_hi.clamp(lo, ox1);
            segment[..lo - ox0].fill(0.0);
            segment[hi - ox0..].fill(0.0);
            if hi > lo {
                let from = (lo as isize + dx) as usize;
                segment[lo - ox0..hi - ox0].copy_from_slice(&line[from..from + (hi - lo)]);
            }
        } else {
            // Inside the line: ox * stride + dx in [0, w).
            let s = g.stride as isize;
            let lo = ((-dx).max(0) + s - 1) / s;
            let hi = ((w - dx + s - 1) / s).max(lo);
            let (lo, hi) = ((lo as usize).clamp(ox0, ox1), (hi as usize).clamp(ox0, ox1));
            let hi = hi.max(lo);
            segment[..lo - ox0].fill(0.0);
            segment[hi - ox0..].fill(0.0);
            if hi > lo {
                let from = (lo as isize * s + dx) as usize;
                let picked = line[from..].iter().step_by(g.stride);
                segment[lo - ox0..hi - ox0].iter_mut().zip(picked).for_each(|(v, x)| *v = *x);
            }
        }
    }
}

//! Packing into the panel layouts the micro-kernel streams through.
//!
//! Weights, once at load: for each group, panels of MR output channels, k-major inside a panel
//! (`[group][panel][k][MR]`), the last panel zero-padded. Input, per image and layer: the GEMM's
//! right-hand side (the image itself for a 1x1 conv, its im2col rows otherwise) as panels of NR
//! output pixels (`[group][panel][k][NR]`). The unfolding happens row by row on the way into the
//! panels, so no im2col matrix is ever written in full.

use rayon::prelude::*;

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

thread_local! {
    /// One unfolded im2col row, reused.
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One image -> `packed` (`[group][panel][k][NR]`, at least `rows * panels * NR` floats,
/// rows = groups * k = channels * kernel^2). `channel(c)` is input channel c's `h x w` plane.
/// Columns past the last pixel keep whatever they held: their results are never stored.
pub fn pack_input<'a>(channel: impl Fn(usize) -> &'a [f32] + Sync, geometry: Unfold, gemm: Gemm, packed: &mut [f32]) {
    let plane = geometry.oh * geometry.ow;
    let panels = plane.div_ceil(NR);
    let rows = gemm.groups * gemm.k;
    assert!(packed.len() >= rows * panels * NR);
    let dst = Shared(packed.as_mut_ptr());
    let taps = geometry.kernel * geometry.kernel;
    let scatter = |row: usize, src: &[f32]| {
        let (g, kr) = (row / gemm.k, row % gemm.k);
        let at = |p: usize| ((g * panels + p) * gemm.k + kr) * NR;
        let (full, tail) = src.split_at(src.len() / NR * NR);
        for (p, chunk) in full.chunks_exact(NR).enumerate() {
            let chunk: &[f32; NR] = chunk.try_into().expect("NR floats");
            // SAFETY: row `row` of each panel is written by this task only, and `at(p) + NR` is
            // within `packed` (asserted above). A fixed-size copy: two vector moves, no memcpy call.
            unsafe { dst.ptr().add(at(p)).cast::<[f32; NR]>().write_unaligned(*chunk) };
        }
        if !tail.is_empty() {
            // SAFETY: as above, for the last, partial panel.
            unsafe { std::ptr::copy_nonoverlapping(tail.as_ptr(), dst.ptr().add(at(full.len() / NR)), tail.len()) };
        }
    };
    (0..rows).into_par_iter().with_min_len(16).for_each(|row| {
        if geometry.is_identity() {
            scatter(row, channel(row));
            return;
        }
        let (c, tap) = (row / taps, row % taps);
        let source = channel(c);
        ROW.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.resize(plane, 0.0);
                unfold_row(source, geometry, tap / geometry.kernel, tap % geometry.kernel, &mut line);
                scatter(row, &line);
            }
            // Re-entered on this thread (a nested forward pass): a fresh buffer.
            Err(_) => {
                let mut line = vec![0f32; plane];
                unfold_row(source, geometry, tap / geometry.kernel, tap % geometry.kernel, &mut line);
                scatter(row, &line);
            }
        });
    });
}

/// im2col row (ky, kx) of one channel: out[oy * ow + ox] = x[oy*stride - pad + ky, ox*stride - pad + kx],
/// zero outside the image.
fn unfold_row(plane: &[f32], g: Unfold, ky: usize, kx: usize, out: &mut [f32]) {
    let pad = g.padding as isize;
    let dx = kx as isize - pad;
    for (oy, line_out) in out.chunks_exact_mut(g.ow).enumerate() {
        let iy = (oy * g.stride) as isize - pad + ky as isize;
        if iy < 0 || iy >= g.h as isize {
            line_out.fill(0.0);
            continue;
        }
        let line = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
        if g.stride == 1 {
            // Columns whose input x = ox + dx falls inside the line, copied at once.
            let first = (-dx).clamp(0, g.ow as isize) as usize;
            let last = (g.w as isize - dx).clamp(first as isize, g.ow as isize) as usize;
            line_out[..first].fill(0.0);
            line_out[last..].fill(0.0);
            if last > first {
                let from = (first as isize + dx) as usize;
                line_out[first..last].copy_from_slice(&line[from..from + (last - first)]);
            }
        } else {
            for (ox, v) in line_out.iter_mut().enumerate() {
                let ix = (ox * g.stride) as isize + dx;
                *v = if ix >= 0 && ix < g.w as isize { line[ix as usize] } else { 0.0 };
            }
        }
    }
}

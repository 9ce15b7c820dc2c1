//! The blocked engine's micro-kernel: a tile of up to `MAX_PIXELS` consecutive output pixels of one
//! row by `NB` blocks of 16 output channels, its whole reduction summed in registers, then bias,
//! activation and the residual applied there and the tile stored: each output float is written
//! once, in 64-byte pieces, and never read back.
//!
//! Step p of the reduction broadcasts input value `base + r * step + offsets[p]` for each pixel r
//! (the layout and the conv's geometry are all in the offsets and the step) and multiplies it by
//! row p of the packed weights, `NB * 16` floats. Segments are the parts of a concatenated input,
//! read one after the other into the same sums.
//!
//! AVX-512: a block is one register, so an 8 x 2 tile is 16 accumulators, 2 loads and 8
//! broadcasts per 16 FMAs. AVX2 + FMA: two registers a block, 6 x 1 tiles (12 accumulators).
//! Elsewhere a portable loop.

use crate::layers::Activation;

/// Channels per block.
pub const LANES: usize = 16;
/// Most pixels a tile holds.
pub const MAX_PIXELS: usize = 8;

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F: a block of 16 channels per register.
    Avx512,
    /// AVX2 + FMA: a block in two registers.
    Avx2,
    /// Plain Rust, vectorized by the compiler for the baseline target (SSE2, NEON).
    Portable,
}

impl Isa {
    /// Those this CPU runs, fastest first; `Portable` always, last.
    pub fn supported() -> Vec<Isa> {
        let mut sets = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                sets.push(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                sets.push(Isa::Avx2);
            }
        }
        sets.push(Isa::Portable);
        sets
    }

    /// The set the fast engine uses: the fastest this CPU runs, or the one the `CSP_CPU_ISA`
    /// environment variable names (`avx512`, `avx2` or `portable`) where the CPU runs it (for
    /// comparisons, and for CPUs whose AVX-512 clocks down). Read once.
    pub fn fastest() -> Isa {
        static FASTEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *FASTEST.get_or_init(|| {
            let supported = Isa::supported();
            let named = std::env::var("CSP_CPU_ISA").ok().and_then(|v| Isa::parse(&v));
            match named {
                Some(isa) if supported.contains(&isa) => isa,
                _ => supported[0],
            }
        })
    }

    /// `avx512`, `avx2` or `portable`.
    pub fn parse(name: &str) -> Option<Isa> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "avx512" => Isa::Avx512,
            "avx2" => Isa::Avx2,
            "portable" => Isa::Portable,
            _ => return None,
        })
    }
}

/// Every (blocks, pixels) instance of a generic kernel.
macro_rules! table {
    ($kernel:ident) => {
        [
            [
                $kernel::<1, 1>,
                $kernel::<2, 1>,
                $kernel::<3, 1>,
                $kernel::<4, 1>,
                $kernel::<5, 1>,
                $kernel::<6, 1>,
                $kernel::<7, 1>,
                $kernel::<8, 1>,
            ],
            [
                $kernel::<1, 2>,
                $kernel::<2, 2>,
                $kernel::<3, 2>,
                $kernel::<4, 2>,
                $kernel::<5, 2>,
                $kernel::<6, 2>,
                $kernel::<7, 2>,
                $kernel::<8, 2>,
            ],
        ]
    };
}

/// One part of a tile's input: `len` reduction steps, step p reading `base + r * step + offsets[p]`
/// for pixel r.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub base: *const f32,
    pub offsets: *const u32,
    pub len: usize,
}

/// Where a tile goes and what happens to its sums on the way.
#[derive(Clone, Copy, Debug)]
pub struct Finish {
    /// `NB * 16` floats.
    pub bias: *const f32,
    pub activation: Activation,
    /// Pixel r of block j is stored at `out + j * out_block + r * 16`.
    pub out: *mut f32,
    pub out_block: usize,
    /// Added after the activation, laid out as the output (`residual + j * residual_block + r *
    /// 16`), then its own activation.
    pub residual: Option<(*const f32, usize, Activation)>,
}

/// A tile kernel: `segments` in order, pixel inputs `step` floats apart, weights `[steps][NB * 16]`.
///
/// # Safety
/// Every read the segments name is inside its input, `weights` holds a row for every step of every
/// segment, `finish` points at `NB * 16` biases and at tiles of the tile's size (output and
/// residual), and the output overlaps nothing read.
pub type Kernel = unsafe fn(segments: &[Segment], step: usize, weights: *const f32, finish: &Finish);

/// One instruction set's kernels: `tiles[nb - 1][pixels - 1]`.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// Output blocks a tile takes at most (1 or 2).
    pub blocks: usize,
    /// Pixels a tile takes at most.
    pub pixels: usize,
    tiles: [[Kernel; MAX_PIXELS]; 2],
}

impl Kernels {
    /// The kernel for tiles of `pixels` x `blocks`, within `self.pixels` and `self.blocks`.
    pub fn tile(&self, blocks: usize, pixels: usize) -> Kernel {
        assert!((1..=self.blocks).contains(&blocks) && (1..=self.pixels).contains(&pixels));
        self.tiles[blocks - 1][pixels - 1]
    }

    /// This set's kernels; None where the CPU lacks the instructions.
    pub fn of(isa: Isa) -> Option<Kernels> {
        if !Isa::supported().contains(&isa) {
            return None;
        }
        Some(match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Kernels { blocks: 2, pixels: 8, tiles: table!(avx512) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kernels { blocks: 1, pixels: 6, tiles: table!(avx2) },
            _ => Kernels { blocks: 2, pixels: MAX_PIXELS, tiles: table!(portable) },
        })
    }
}

/// bias, activation, residual and its activation on one block of 16 sums, as plain loops that the
/// caller's target features vectorize (`Activation::apply` is inlined).
#[inline(always)]
unsafe fn finish_block(values: &mut [f32; LANES], bias: *const f32, finish: &Finish, residual_at: usize) {
    for (i, v) in values.iter_mut().enumerate() {
        *v += *bias.add(i);
    }
    finish.activation.apply(values, 0.0);
    if let Some((residual, _, activation)) = finish.residual {
        for (i, v) in values.iter_mut().enumerate() {
            *v += *residual.add(residual_at + i);
        }
        activation.apply(values, 0.0);
    }
}

/// The reference kernel, on any CPU (and the tiles the others do not take).
///
/// # Safety
/// See [`Kernel`].
unsafe fn portable<const MR: usize, const NB: usize>(
    segments: &[Segment],
    step: usize,
    weights: *const f32,
    finish: &Finish,
) {
    let mut acc = [[[0f32; LANES]; NB]; MR];
    let mut w = weights;
    for s in segments {
        for p in 0..s.len {
            let o = *s.offsets.add(p) as usize;
            for (r, sums) in acc.iter_mut().enumerate() {
                let a = *s.base.add(r * step + o);
                for (j, block) in sums.iter_mut().enumerate() {
                    for (i, v) in block.iter_mut().enumerate() {
                        *v = a.mul_add(*w.add(j * LANES + i), *v);
                    }
                }
            }
            w = w.add(NB * LANES);
        }
    }
    for (r, sums) in acc.iter_mut().enumerate() {
        for (j, block) in sums.iter_mut().enumerate() {
            let residual_at = finish.residual.map_or(0, |(_, stride, _)| j * stride + r * LANES);
            finish_block(block, finish.bias.add(j * LANES), finish, residual_at);
            std::ptr::copy_nonoverlapping(block.as_ptr(), finish.out.add(j * finish.out_block + r * LANES), LANES);
        }
    }
}

/// # Safety
/// See [`Kernel`]; the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<const MR: usize, const NB: usize>(
    segments: &[Segment],
    step: usize,
    weights: *const f32,
    finish: &Finish,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NB]; MR];
    let mut w = weights;
    for s in segments {
        acc = avx512_steps::<MR, NB>(acc, s, step, w);
        w = w.add(s.len * NB * LANES);
    }
    for (j, sums) in (0..NB).map(|j| (j, acc.map(|row| row[j]))) {
        let bias = _mm512_loadu_ps(finish.bias.add(j * LANES));
        for (r, sum) in sums.iter().enumerate() {
            let mut v = act512(_mm512_add_ps(*sum, bias), finish.activation);
            if let Some((residual, stride, activation)) = finish.residual {
                v = act512(_mm512_add_ps(v, _mm512_loadu_ps(residual.add(j * stride + r * LANES))), activation);
            }
            _mm512_storeu_ps(finish.out.add(j * finish.out_block + r * LANES), v);
        }
    }
}

/// `activation` on 16 lanes: leaky ReLU and ReLU as a max (slopes of 0 to 1), the others through
/// the shared formulas, vectorized where this is inlined.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn act512(v: std::arch::x86_64::__m512, activation: Activation) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    match activation {
        Activation::Linear => v,
        Activation::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Activation::Leaky { slope } if (0.0..=1.0).contains(&slope) => {
            _mm512_max_ps(v, _mm512_mul_ps(v, _mm512_set1_ps(slope)))
        }
        other => {
            let mut lanes = [0f32; LANES];
            _mm512_storeu_ps(lanes.as_mut_ptr(), v);
            other.apply(&mut lanes, 0.0);
            _mm512_loadu_ps(lanes.as_ptr())
        }
    }
}

/// One segment's steps into the sums, which go in and come back by value: so they stay in
/// registers (summed in place across the segment loop, they were stored after every FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn avx512_steps<const MR: usize, const NB: usize>(
    mut acc: [[std::arch::x86_64::__m512; NB]; MR],
    s: &Segment,
    step: usize,
    mut w: *const f32,
) -> [[std::arch::x86_64::__m512; NB]; MR] {
    use std::arch::x86_64::*;
    for p in 0..s.len {
        let at = s.base.add(*s.offsets.add(p) as usize);
        let mut row = [_mm512_setzero_ps(); NB];
        for (j, v) in row.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(w.add(j * LANES));
        }
        for sums in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*at.add(sums.0 * step));
            for (sum, v) in sums.1.iter_mut().zip(&row) {
                *sum = _mm512_fmadd_ps(a, *v, *sum);
            }
        }
        w = w.add(NB * LANES);
    }
    acc
}

/// # Safety
/// See [`Kernel`]; the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const MR: usize, const NB: usize>(
    segments: &[Segment],
    step: usize,
    weights: *const f32,
    finish: &Finish,
) {
    use std::arch::x86_64::*;
    let mut acc = [[[_mm256_setzero_ps(); 2]; NB]; MR];
    let mut w = weights;
    for s in segments {
        acc = avx2_steps::<MR, NB>(acc, s, step, w);
        w = w.add(s.len * NB * LANES);
    }
    for (j, sums) in (0..NB).map(|j| (j, acc.map(|row| row[j]))) {
        let bias = [_mm256_loadu_ps(finish.bias.add(j * LANES)), _mm256_loadu_ps(finish.bias.add(j * LANES + 8))];
        for (r, sum) in sums.iter().enumerate() {
            let out = finish.out.add(j * finish.out_block + r * LANES);
            for half in 0..2 {
                let mut v = act256(_mm256_add_ps(sum[half], bias[half]), finish.activation);
                if let Some((residual, stride, activation)) = finish.residual {
                    let from = residual.add(j * stride + r * LANES + 8 * half);
                    v = act256(_mm256_add_ps(v, _mm256_loadu_ps(from)), activation);
                }
                _mm256_storeu_ps(out.add(8 * half), v);
            }
        }
    }
}

/// As [`act512`], on 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn act256(v: std::arch::x86_64::__m256, activation: Activation) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    match activation {
        Activation::Linear => v,
        Activation::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
        Activation::Leaky { slope } if (0.0..=1.0).contains(&slope) => {
            _mm256_max_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(slope)))
        }
        other => {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            other.apply(&mut lanes, 0.0);
            _mm256_loadu_ps(lanes.as_ptr())
        }
    }
}

/// As [`avx512_steps`], two registers a block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2_steps<const MR: usize, const NB: usize>(
    mut acc: [[[std::arch::x86_64::__m256; 2]; NB]; MR],
    s: &Segment,
    step: usize,
    mut w: *const f32,
) -> [[[std::arch::x86_64::__m256; 2]; NB]; MR] {
    use std::arch::x86_64::*;
    for p in 0..s.len {
        let at = s.base.add(*s.offsets.add(p) as usize);
        let mut row = [[_mm256_setzero_ps(); 2]; NB];
        for (j, v) in row.iter_mut().enumerate() {
            *v = [_mm256_loadu_ps(w.add(j * LANES)), _mm256_loadu_ps(w.add(j * LANES + 8))];
        }
        for (r, sums) in acc.iter_mut().enumerate() {
            let a = _mm256_broadcast_ss(&*at.add(r * step));
            for (sum, v) in sums.iter_mut().zip(&row) {
                sum[0] = _mm256_fmadd_ps(a, v[0], sum[0]);
                sum[1] = _mm256_fmadd_ps(a, v[1], sum[1]);
            }
        }
        w = w.add(NB * LANES);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instance of every set against the plain formula: two segments, a residual, Mish.
    #[test]
    fn every_tile_kernel_computes_the_formula() {
        let input: Vec<f32> = (0..4000).map(|i| ((i * 7 % 23) as f32 - 11.0) / 16.0).collect();
        let (first, second): (Vec<u32>, Vec<u32>) =
            ((0..21).map(|p| (p * 37 % 300) as u32).collect(), (0..10).map(|p| (p * 53 % 400) as u32).collect());
        let steps = first.len() + second.len();
        let weights: Vec<f32> = (0..steps * 2 * LANES).map(|i| ((i * 5 % 13) as f32 - 6.0) / 32.0).collect();
        let bias: Vec<f32> = (0..2 * LANES).map(|i| i as f32 / 64.0 - 0.25).collect();
        let residual: Vec<f32> = (0..3 * 200).map(|i| ((i * 3 % 11) as f32 - 5.0) / 8.0).collect();
        let step = 3;
        let (base0, base1) = (5usize, 2000usize);
        for isa in Isa::supported() {
            let kernels = Kernels::of(isa).expect("supported");
            for blocks in 1..=kernels.blocks {
                for pixels in 1..=kernels.pixels {
                    let segments = [
                        Segment { base: input[base0..].as_ptr(), offsets: first.as_ptr(), len: first.len() },
                        Segment { base: input[base1..].as_ptr(), offsets: second.as_ptr(), len: second.len() },
                    ];
                    // Weights for this tile: rows of `blocks * 16` taken from the first columns.
                    let packed: Vec<f32> =
                        (0..steps).flat_map(|p| weights[p * 2 * LANES..][..blocks * LANES].to_vec()).collect();
                    let (out_block, residual_block) = (300, 200);
                    let mut out = vec![f32::NAN; 2 * out_block];
                    let finish = Finish {
                        bias: bias.as_ptr(),
                        activation: Activation::Mish,
                        out: out.as_mut_ptr(),
                        out_block,
                        residual: Some((residual.as_ptr(), residual_block, Activation::TIMM_LEAKY)),
                    };
                    // SAFETY: every offset plus (pixels - 1) * step stays inside `input`; the
                    // output and residual hold two blocks of 8 pixels.
                    unsafe { (kernels.tile(blocks, pixels))(&segments, step, packed.as_ptr(), &finish) };
                    for r in 0..pixels {
                        for j in 0..blocks {
                            for i in 0..LANES {
                                let c = j * LANES + i;
                                let mut sum = bias[c];
                                for (p, &o) in first.iter().enumerate() {
                                    sum += input[base0 + r * step + o as usize] * weights[p * 2 * LANES + c];
                                }
                                for (p, &o) in second.iter().enumerate() {
                                    let p = p + first.len();
                                    sum += input[base1 + r * step + o as usize] * weights[p * 2 * LANES + c];
                                }
                                let mut v = [sum];
                                Activation::Mish.apply(&mut v, 0.0);
                                let mut v = [v[0] + residual[j * residual_block + r * LANES + i]];
                                Activation::TIMM_LEAKY.apply(&mut v, 0.0);
                                let got = out[j * out_block + r * LANES + i];
                                assert!(
                                    (got - v[0]).abs() <= 1e-5 * v[0].abs().max(1.0),
                                    "{isa:?} {blocks}x{pixels} pixel {r} channel {c}: {got} vs {}",
                                    v[0]
                                );
                            }
                        }
                    }
                    // Nothing outside the tile is written.
                    for j in 0..2 {
                        let written = if j < blocks { pixels * LANES } else { 0 };
                        assert!(out[j * out_block + written..(j + 1) * out_block].iter().all(|v| v.is_nan()));
                    }
                }
            }
        }
    }
}

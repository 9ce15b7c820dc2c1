//! The CPU inference path of a folded convolution: conv + bias + activation (+ a residual add) as
//! one blocked GEMM per group whose epilogue writes each output position once.
//!
//! - Weights are packed once, when the layer is prepared, into the micro-kernel's panel layout.
//! - The input reaches the micro-kernel in one of six ways ([`InputPath`]): a 1x1 conv reads
//!   its rows in place; a k x k conv reads shifted views of a padded copy, split into phases when
//!   strided (implicit GEMM, no im2col); on small maps the GEMM runs transposed, pixels along the
//!   kernel's short side, packed for a 1x1 conv and read from the padded copy for a k x k one;
//!   what remains (1x1 convs not read in place, strided 1x1 convs) packs its panels block by
//!   block, each task its own, in cache.
//! - The output is cut into blocks of output channels x pixels, for every group at once, and the
//!   blocks run in parallel: CSPResNeXt's 32-group convs become many small tasks rather than 32
//!   GEMMs in a row.
//! - Inside a block the reduction runs in chunks of KC so the input panel stays in L1 and the
//!   weight panels in L2; the sums go to a per-thread block buffer, where bias, activation and
//!   residual are applied before the block is copied to the output.
//! - Several inputs are read as their concatenation along channels (`run_fused`), so the executor
//!   never writes a concat that only a conv reads (see `crate::fusion`).

mod epilogue;
mod kernel;
mod pack;
mod tensors;

use std::cell::RefCell;
use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use super::activation::with_simd;
use super::{Activation, ConvSpec};
use epilogue::{BlockEpilogue, TransposedEpilogue};
pub use kernel::Isa;
use kernel::{Kernels, MR, NR};
use pack::{Gemm, Shared, Unfold};

/// Reduction chunk: a 16-column input panel of KC rows is 16 KiB, half an L1 data cache.
const KC: usize = 256;
/// Block size in panels: up to 8 x 6 output channels by 16 x 16 pixels (a 48 KiB block buffer).
const BLOCK_M_PANELS: usize = 8;
const BLOCK_N_PANELS: usize = 16;
/// Block size in weight panels where a task packs its own input panels, with one group.
const BLOCK_M_PANELS_PACKING: usize = 64;
/// The transposed GEMM's largest block: pixel panels (of MR) by channel panels (of NR).
const TRANSPOSED_BLOCK_PANELS: (usize, usize) = (2 * BLOCK_M_PANELS, BLOCK_N_PANELS / 2);
/// Inputs larger than this (floats: 1 MiB, the two L2s of a small machine) stream from L3 or memory.
const STREAMING_FLOATS: usize = 1 << 18;
/// Largest im2col (floats) the transposed GEMM packs per image: 2 MiB, a few L2s.
const TRANSPOSED_MAX_PACKED: usize = 1 << 19;
/// Largest output (pixels) the transposed GEMM reads from shifted views: 32 x 32. It gained 5-13%
/// on maps of 7 to 28; on large maps the usual GEMM, whose input panel stays in L1 across a
/// block's weight panels, wins (pixels read this way from a 112 x 112 map ran a fifth slower).
const TRANSPOSED_MAX_PIXELS: usize = 1024;
/// A prepared folded conv (see the module docs).
#[derive(Clone, Debug)]
pub struct CpuConv {
    spec: ConvSpec,
    gemm: Gemm,
    /// `[group][panel][k][MR]` (see `pack`).
    weight: Vec<f32>,
    /// `[group][panel][k][NR]`, for the transposed GEMM on small maps (see `multiply_transposed`): packed
    /// the first time a small map comes.
    weight_t: OnceLock<Vec<f32>>,
    bias: Vec<f32>,
    /// The micro-kernels (the fastest this CPU runs, unless `with_isa` chose others).
    kernels: Kernels,
}

thread_local! {
    /// The packed input of the layer being run on this thread, grown to the largest seen and kept.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A worker's packed input panels (and one unfolded line), likewise.
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A worker's block buffer.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` with a thread-local buffer of at least `len` floats; a fresh one if the thread is already
/// using it (a forward pass nested inside another's parallel section).
fn with_buffer<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len + ALIGN {
                buffer.resize(len + ALIGN, 0.0);
            }
            f(aligned(&mut buffer, len))
        }
        Err(_) => f(aligned(&mut vec![0f32; len + ALIGN], len)),
    })
}

/// Floats per cache line: panels start on a line, so no 32-byte load of a panel row splits two.
const ALIGN: usize = 16;

/// `len` floats of `buffer` (which has `ALIGN` to spare) from its first cache-line boundary.
fn aligned(buffer: &mut [f32], len: usize) -> &mut [f32] {
    let skip = buffer.as_ptr().align_offset(ALIGN * std::mem::size_of::<f32>());
    &mut buffer[skip..][..len]
}

impl CpuConv {
    /// `weight` in candle's `[out, in/groups, k, k]` order (contiguous), `bias` of `out`.
    pub fn new(spec: ConvSpec, weight: Vec<f32>, bias: Vec<f32>) -> Self {
        let gemm = Gemm {
            groups: spec.groups,
            m: spec.out_channels / spec.groups,
            k: spec.in_channels / spec.groups * spec.kernel * spec.kernel,
        };
        assert_eq!(weight.len(), gemm.groups * gemm.m * gemm.k, "{}: weight size", spec.name);
        assert_eq!(bias.len(), spec.out_channels, "{}: bias size", spec.name);
        let weight = pack::pack_weights(&weight, gemm);
        let kernels = Isa::fastest().kernels().expect("the fastest supported set");
        CpuConv { spec, gemm, weight, weight_t: OnceLock::new(), bias, kernels }
    }

    /// This conv on the kernels for `isa` (tests and comparisons); None where the CPU lacks it.
    pub fn with_isa(&self, isa: Isa) -> Option<Self> {
        Some(CpuConv { kernels: isa.kernels()?, ..self.clone() })
    }

    /// The output for one contiguous NCHW input.
    pub fn run(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let input = Planes { data: x, channels: self.spec.in_channels, image_stride: self.spec.in_channels * h * w };
        self.run_fused(&[input], n, h, w, None)
    }

    /// The output for the concatenation (along channels) of `inputs`, each `n` images of `h x w`,
    /// plus `residual` when given: `residual.activation(activation(conv + bias) + residual)`. So a
    /// concat feeding a conv is never written, and a residual add costs no pass of its own.
    pub fn run_fused(&self, inputs: &[Planes], n: usize, h: usize, w: usize, residual: Option<&Residual>) -> Vec<f32> {
        let s = &self.spec;
        assert_eq!(inputs.iter().map(|p| p.channels).sum::<usize>(), s.in_channels, "{}: input channels", s.name);
        let geometry = self.geometry(h, w);
        let (oh, ow, plane) = (geometry.oh, geometry.ow, geometry.oh * geometry.ow);
        for p in inputs {
            assert!(p.fits(n, h * w), "{}: input of {n} images of {} channels {h}x{w}", s.name, p.channels);
        }
        if let Some(r) = residual {
            assert!(r.planes.channels == s.out_channels && r.planes.fits(n, plane), "{}: residual shape", s.name);
        }
        // Input channel c of image b: which part holds it, at which offset.
        let mut parts = Vec::with_capacity(s.in_channels);
        for (index, p) in inputs.iter().enumerate() {
            parts.extend((0..p.channels).map(|c| (index, c * h * w)));
        }
        // Every position is written exactly once, by the block that computes it: no zeroing pass.
        let image_len = s.out_channels * plane;
        let mut out: Vec<f32> = Vec::with_capacity(n * image_len);
        let kernels = self.kernels;
        let path = self.input_path(h, w);
        let (phases, (hq, wq)) = (s.stride * s.stride, geometry.phase_size());
        let mut offsets = Vec::new();
        if matches!(path, InputPath::Shifted | InputPath::ShiftedTransposed) {
            // GEMM rows in weight order: group, channel, tap row, tap column.
            offsets.reserve(s.groups * self.gemm.k);
            for c in 0..s.in_channels {
                for ky in 0..s.kernel {
                    for kx in 0..s.kernel {
                        let phase = (ky % s.stride) * s.stride + kx % s.stride;
                        offsets.push((c * phases + phase) * hq * wq + (ky / s.stride) * wq + kx / s.stride);
                    }
                }
            }
        }
        // Where each output pixel's shifted views start in the padded copy (its tap (0, 0)), then
        // the first pixel's again up to a whole number of MR-pixel panels (computed and dropped).
        let mut positions = Vec::new();
        if path == InputPath::ShiftedTransposed {
            positions.extend((0..plane).map(|i| (i / ow) * wq + i % ow));
            positions.resize(plane.next_multiple_of(MR), 0);
        }
        for b in 0..n {
            // SAFETY: image b's part of the capacity reserved above.
            let dst = Output { ptr: Shared(unsafe { out.as_mut_ptr().add(b * image_len) }), len: image_len };
            let residual = residual.map(|r| (&r.planes.data[b * r.planes.image_stride..][..image_len], r.activation));
            let channel = |c: usize| {
                let (index, offset) = parts[c];
                let p = &inputs[index];
                &p.data[b * p.image_stride + offset..][..h * w]
            };
            let dense = Columns { count: plane, pitch: plane, valid: plane };
            match path {
                InputPath::Transposed => with_buffer(&PACKED, self.gemm.k * plane.next_multiple_of(MR), |packed| {
                    pack::pack_image::<MR>(&channel, geometry, self.gemm, packed);
                    self.multiply_transposed(kernels, Pixels::Packed(packed), plane, dst, residual);
                }),
                InputPath::ShiftedTransposed => with_buffer(&PACKED, s.in_channels * phases * hq * wq, |padded| {
                    pack::phase_image(&channel, s.in_channels, geometry, padded);
                    let pixels = Pixels::Shifted { padded, positions: &positions, offsets: &offsets };
                    self.multiply_transposed(kernels, pixels, plane, dst, residual);
                }),
                InputPath::Rows => {
                    let mut first = 0;
                    let rows = inputs
                        .iter()
                        .map(|p| {
                            let run = (first, &p.data[b * p.image_stride..][..p.channels * plane]);
                            first += p.channels;
                            run
                        })
                        .collect();
                    self.multiply(kernels, &Rhs::Rows(rows), dense, dst, residual);
                }
                InputPath::Shifted => {
                    // Reads reach up to k - 1 + NR floats past the last plane (dropped columns only).
                    let len = s.in_channels * phases * hq * wq + s.kernel + NR;
                    with_buffer(&PACKED, len, |padded| {
                        pack::phase_image(&channel, s.in_channels, geometry, padded);
                        let columns = Columns { count: oh * wq, pitch: wq, valid: ow };
                        self.multiply(kernels, &Rhs::Shifted { padded, offsets: &offsets }, columns, dst, residual);
                    });
                }
                InputPath::PackedPerBlock => {
                    self.multiply(kernels, &Rhs::Image { channel: &channel, geometry }, dense, dst, residual)
                }
            }
        }
        // SAFETY: `multiply` wrote every position of every image (see there).
        unsafe { out.set_len(n * image_len) };
        out
    }

    /// This conv on an `h x w` input.
    fn geometry(&self, h: usize, w: usize) -> Unfold {
        let s = &self.spec;
        let (oh, ow) = s.out_size(h, w);
        Unfold { h, w, oh, ow, kernel: s.kernel, stride: s.stride, padding: s.padding }
    }

    /// How an `h x w` input reaches the micro-kernel (see [`InputPath`]).
    pub fn input_path(&self, h: usize, w: usize) -> InputPath {
        let s = &self.spec;
        let geometry = self.geometry(h, w);
        let (oh, plane) = (geometry.oh, geometry.oh * geometry.ow);
        // A 1x1 conv reads its input rows in place when its panels are whole (no partial last panel
        // to read past a row's end); one group, so chunks of the reduction never straddle groups.
        // Only with kernels that take one panel at a time: where they take pairs (AVX-512), the
        // copy packed once per image ran 5-25% faster on maps of 28 to 112 (measured on 1x1 convs
        // of 32 to 512 channels; with AVX2 kernels reading in place stays 0-15% faster).
        let rows = geometry.is_identity() && s.groups == 1 && plane % NR == 0 && self.kernels.pairs.is_none();
        // A 1 x 1 strided conv would read one phase in stride^2 of a shifted copy: it packs.
        let shifted = !geometry.is_identity() && s.kernel >= s.stride;
        // The transposed GEMM where it computes clearly fewer outputs (padding and dropped columns
        // included) than the usual one would: on small maps. A 1x1 conv's pixels are packed (when
        // the copy stays small); a k x k conv's are read from the shifted views' padded copy.
        let transposed = {
            let m = self.gemm.m;
            let columns = if shifted { oh * geometry.phase_size().1 } else { plane };
            let usual = columns.next_multiple_of(NR) * m.next_multiple_of(MR);
            let swapped = plane.next_multiple_of(MR) * m.next_multiple_of(NR);
            10 * swapped < 9 * usual
        };
        let packed_transposed =
            transposed && s.kernel == 1 && s.groups == 1 && self.gemm.k * plane <= TRANSPOSED_MAX_PACKED;
        let shifted_transposed = transposed && shifted && plane <= TRANSPOSED_MAX_PIXELS;
        match () {
            _ if packed_transposed => InputPath::Transposed,
            _ if shifted_transposed => InputPath::ShiftedTransposed,
            _ if rows => InputPath::Rows,
            _ if shifted => InputPath::Shifted,
            _ => InputPath::PackedPerBlock,
        }
    }

    /// dst (`[out_channels, plane]`, each position written exactly once) =
    /// activation(weight x rhs + bias) (+ residual, then its activation), block by block in parallel.
    fn multiply(
        &self,
        kernels: Kernels,
        rhs: &Rhs,
        columns: Columns,
        dst: Output,
        residual: Option<(&[f32], Activation)>,
    ) {
        let Gemm { groups, k, .. } = self.gemm;
        let (m_panels, n_panels) = (self.gemm.m_panels(), columns.count.div_ceil(NR));
        // An input larger than the L2s comes from L3 or memory, once per block of output channels:
        // then the blocks take more channels (up to twice as many panels, balanced), and shifted
        // views prefetch the next panel's rows, one stream per row, which the hardware prefetcher
        // does not follow. (Measured on 3x3 and 1x1 convs at 56 to 416: 4-30% faster; slower on
        // grouped convs, whose few rows per block leave little to prefetch for.)
        let streaming = match rhs {
            Rhs::Shifted { padded, .. } => padded.len(),
            Rhs::Rows(runs) => runs.iter().map(|(_, data)| data.len()).sum(),
            Rhs::Image { .. } => 0,
        } > STREAMING_FLOATS
            && groups == 1;
        // A task packing its own panels packs them once for the weight panels of its block: with
        // one group, blocks take up to 64 weight panels (384 channels), balanced. (Measured on 1x1
        // convs of 32 to 512 channels at 28 to 128: 8-25% faster than packing the whole image in
        // a pass of its own, whose panels then came from the other core's cache or from L3.)
        let widest = match rhs {
            Rhs::Image { .. } if groups == 1 => m_panels.div_ceil(m_panels.div_ceil(BLOCK_M_PANELS_PACKING)),
            _ if streaming => m_panels.div_ceil(m_panels.div_ceil(2 * BLOCK_M_PANELS)),
            _ => BLOCK_M_PANELS,
        };
        let (bm, bn) = block_sizes(groups, (m_panels, n_panels), (widest, BLOCK_N_PANELS));
        let (m_blocks, n_blocks) = (m_panels.div_ceil(bm), n_panels.div_ceil(bn));
        // Reduction chunks (first row, rows, run): KC rows at most, inside one run of in-place rows.
        let chunks: Vec<(usize, usize, usize)> = match rhs {
            Rhs::Rows(runs) => runs
                .iter()
                .enumerate()
                .flat_map(|(run, &(first, data))| {
                    let rows = data.len() / columns.count;
                    chunks(rows, KC).map(move |(o, kc)| (first + o, kc, run))
                })
                .collect(),
            _ => chunks(k, KC).map(|(k0, kc)| (k0, kc, 0)).collect(),
        };
        // Shifted views: per group and chunk, the farthest row start (bounds the kernel's reads).
        let far: Vec<usize> = match rhs {
            Rhs::Shifted { offsets, .. } => (0..groups)
                .flat_map(|g| {
                    chunks
                        .iter()
                        .map(move |&(k0, kc, _)| offsets[g * k + k0..][..kc].iter().max().copied().unwrap_or(0))
                })
                .collect(),
            _ => vec![],
        };
        crate::team::for_each(groups * m_blocks * n_blocks, |task| {
            let (g, rest) = (task / (m_blocks * n_blocks), task % (m_blocks * n_blocks));
            let (mp0, np0) = ((rest / n_blocks) * bm, (rest % n_blocks) * bn);
            let (mps, nps) = (bm.min(m_panels - mp0), bn.min(n_panels - np0));
            let ld = nps * NR;
            let scratch = match rhs {
                Rhs::Image { .. } => (KC + 1) * ld,
                _ => 0,
            };
            with_buffer(&BLOCK, mps * MR * ld, |block| {
                with_buffer(&PANELS, scratch, |scratch| {
                    let (panels, line) = scratch.split_at_mut(scratch.len().saturating_sub(ld));
                    for (chunk, &(k0, kc, run)) in chunks.iter().enumerate() {
                        if let Rhs::Image { channel, geometry } = rhs {
                            pack::pack_block::<NR>(
                                channel,
                                *geometry,
                                self.gemm,
                                (g, k0, kc),
                                (np0 * NR, nps),
                                line,
                                panels,
                            );
                        }
                        let mut jp = 0;
                        while jp < nps {
                            // Two panels at a time where the kernels take pairs (see `Kernels::pairs`).
                            let pairs = kernels.pairs.filter(|_| jp + 1 < nps);
                            let width = if pairs.is_some() { 2 } else { 1 };
                            let col = (np0 + jp) * NR;
                            if let (true, Rhs::Shifted { padded, offsets }) = (streaming && jp + width < nps, rhs) {
                                for &o in &offsets[g * k + k0..][..kc] {
                                    for next in 0..width {
                                        prefetch(padded.as_ptr().wrapping_add(o + col + (width + next) * NR));
                                    }
                                }
                            }
                            for ip in 0..mps {
                                let a = &self.weight[((g * m_panels + mp0 + ip) * k + k0) * MR..][..kc * MR];
                                let c = &mut block[ip * MR * ld + jp * NR..];
                                assert!(c.len() >= (MR - 1) * ld + width * NR);
                                let (a, c) = (a.as_ptr(), c.as_mut_ptr());
                                // SAFETY: a holds kc panel rows and c the MR x (width NR) corner at
                                // stride ld (the slices and the assert above; block is this task's).
                                // The b rows of every panel are checked below, per layout.
                                unsafe {
                                    match rhs {
                                        Rhs::Image { .. } => {
                                            let b = &panels[jp * kc * NR..][..width * kc * NR];
                                            match pairs {
                                                Some(p) => (p.strided)(kc, a, b.as_ptr(), NR, kc * NR, c, ld, k0 > 0),
                                                None => (kernels.strided)(kc, a, b.as_ptr(), NR, c, ld, k0 > 0),
                                            }
                                        }
                                        Rhs::Rows(runs) => {
                                            let (first, data) = runs[run];
                                            let stride = columns.count;
                                            let b =
                                                &data[(k0 - first) * stride + col..][..(kc - 1) * stride + width * NR];
                                            match pairs {
                                                Some(p) => (p.strided)(kc, a, b.as_ptr(), stride, NR, c, ld, k0 > 0),
                                                None => (kernels.strided)(kc, a, b.as_ptr(), stride, c, ld, k0 > 0),
                                            }
                                        }
                                        Rhs::Shifted { padded, offsets } => {
                                            let offsets = &offsets[g * k + k0..][..kc];
                                            let base = &padded[col..];
                                            assert!(far[g * chunks.len() + chunk] + width * NR <= base.len());
                                            let shifted = pairs.map_or(kernels.shifted, |p| p.shifted);
                                            shifted(kc, a, base.as_ptr(), offsets.as_ptr(), c, ld, k0 > 0)
                                        }
                                    }
                                };
                            }
                            jp += width;
                        }
                    }
                });
                let first = g * self.gemm.m + mp0 * MR;
                let rows = first..(first + mps * MR).min((g + 1) * self.gemm.m);
                let cols = (np0 * NR)..((np0 + nps) * NR).min(columns.count);
                with_simd(BlockEpilogue { conv: self, block, ld, rows, cols, columns, residual, dst });
            });
        });
    }

    /// dst = activation(weight x input + bias) (+ residual, then its activation) as
    /// (input^T x weight^T)^T: the output's pixels along the kernel's MR side (see [`Pixels`]),
    /// `weight_t` as the right side; a block holds pixels x channels and its epilogue writes it
    /// back transposed. Groups as in `multiply`: every group's blocks in one parallel loop (packed
    /// pixels: one group only).
    fn multiply_transposed(
        &self,
        kernels: Kernels,
        pixels: Pixels,
        plane: usize,
        dst: Output,
        residual: Option<(&[f32], Activation)>,
    ) {
        let Gemm { groups, m, k } = self.gemm;
        let weight_t = self.weight_t.get_or_init(|| pack::transpose_weights(&self.weight, self.gemm));
        assert!(
            groups == 1 || matches!(pixels, Pixels::Shifted { .. }),
            "{}: packed pixels of one group",
            self.spec.name
        );
        if let Pixels::Shifted { padded, positions, offsets } = pixels {
            // The farthest read: the farthest pixel's farthest tap.
            let far = positions.iter().max().copied().unwrap_or(0) + offsets.iter().max().copied().unwrap_or(0);
            assert!(far < padded.len(), "{}: a shifted read past the padded copy", self.spec.name);
        }
        let (p_panels, c_panels) = (plane.div_ceil(MR), m.div_ceil(NR));
        // The weight panels of one step stay at 16 KiB (KC rows of NR, or half as many of a pair):
        // with pairs, full-length chunks ran 4-16% slower on single 3x3 and 1x1 layers at 7 to 28.
        let longest = if kernels.pairs.is_some() && c_panels > 1 { KC / 2 } else { KC };
        let (bp, bc) = block_sizes(groups, (p_panels, c_panels), TRANSPOSED_BLOCK_PANELS);
        let (p_blocks, c_blocks) = (p_panels.div_ceil(bp), c_panels.div_ceil(bc));
        crate::team::for_each(groups * p_blocks * c_blocks, |task| {
            let (g, rest) = (task / (p_blocks * c_blocks), task % (p_blocks * c_blocks));
            let (pp0, cp0) = ((rest / c_blocks) * bp, (rest % c_blocks) * bc);
            let (pps, cps) = (bp.min(p_panels - pp0), bc.min(c_panels - cp0));
            let ld = cps * NR;
            with_buffer(&BLOCK, pps * MR * ld, |block| {
                for (k0, kc) in chunks(k, longest) {
                    // A panel of weights (kc x NR) stays in L1 across the block's pixel panels.
                    let mut jc = 0;
                    while jc < cps {
                        // Two channel panels at a time where the kernels take pairs.
                        let pairs = kernels.pairs.filter(|_| jc + 1 < cps);
                        let width = if pairs.is_some() { 2 } else { 1 };
                        let b =
                            &weight_t[((g * c_panels + cp0 + jc) * k + k0) * NR..][..(width - 1) * k * NR + kc * NR];
                        let b = b.as_ptr();
                        for ip in 0..pps {
                            let c = &mut block[ip * MR * ld + jc * NR..];
                            assert!(c.len() >= (MR - 1) * ld + width * NR);
                            let (c, accumulate) = (c.as_mut_ptr(), k0 > 0);
                            // SAFETY: b holds kc rows of NR for each of the width panels and c the
                            // MR x (width NR) corner at stride ld (the slices and the assert; block
                            // is this task's); a holds kc panel rows (the slice), and shifted reads
                            // stay in `padded` (asserted above).
                            unsafe {
                                match pixels {
                                    Pixels::Packed(packed) => {
                                        let a = &packed[((pp0 + ip) * k + k0) * MR..][..kc * MR];
                                        match pairs {
                                            Some(p) => (p.strided)(kc, a.as_ptr(), b, NR, k * NR, c, ld, accumulate),
                                            None => (kernels.strided)(kc, a.as_ptr(), b, NR, c, ld, accumulate),
                                        }
                                    }
                                    Pixels::Shifted { padded, positions, offsets } => {
                                        let at = &positions[(pp0 + ip) * MR..][..MR];
                                        let rows = std::array::from_fn(|r| padded.as_ptr().wrapping_add(at[r]));
                                        let offsets = offsets[g * k + k0..][..kc].as_ptr();
                                        match pairs {
                                            Some(p) => (p.gathered)(kc, &rows, offsets, b, k * NR, c, ld, accumulate),
                                            None => (kernels.gathered)(kc, &rows, offsets, b, c, ld, accumulate),
                                        }
                                    }
                                }
                            };
                        }
                        jc += width;
                    }
                }
                let pixels = (pp0 * MR)..(plane.min((pp0 + pps) * MR));
                let channels = (g * m + cp0 * NR)..(g * m + m.min((cp0 + cps) * NR));
                with_simd(TransposedEpilogue { conv: self, block, ld, pixels, channels, plane, residual, dst });
            });
        });
    }
}

/// How a conv's input reaches the micro-kernel, which depends on the conv and the input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputPath {
    /// A 1x1 conv over whole panels of pixels reads its input rows in place.
    Rows,
    /// A k x k conv reads shifted views of a padded copy of its input instead of im2col rows: the
    /// GEMM runs over output rows as wide as the copy's, and the extra columns per row are dropped.
    /// A strided conv's copy is split into stride x stride phases (every stride-th row and column),
    /// so each of its taps is a shifted view too. One copy of the input instead of k^2 / stride^2
    /// (measured faster than a packed im2col at every width down to 7).
    Shifted,
    /// On small maps a panel of NR pixels can be mostly past the end (49 = 3 x 16 + 1 at 7x7). A
    /// 1x1 conv there puts pixels along the kernel's MR side and output channels along its NR side
    /// (its input packed once per image): the GEMM's padding is then a few pixels and the rounding
    /// of the channel count to NR. One group.
    Transposed,
    /// The transposed GEMM for a k x k conv on a small map: each output pixel read from the shifted
    /// views' padded copy, so the copy's extra columns are never computed (7x7 = 49 pixels pad to
    /// 54, where shifted views compute 64 columns). Grouped convs too, where a group's channels
    /// fill the NR side better than the MR side (CSPResNeXt's 16 and 32 per group).
    ShiftedTransposed,
    /// What remains (1x1 convs not read in place, grouped or not; strided 1x1 convs): each block
    /// packs the im2col panels it reads as it goes, into a buffer that stays in its core's cache.
    PackedPerBlock,
}

/// Starts loading the NR floats at `p` (two cache lines at most) into L1. Any address: a prefetch
/// never faults.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint to the cache; it reads nothing and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(NR - 1).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Block sizes, in panels, along the two sides of `groups` GEMMs of `panels` panels each: `widest`
/// at most, then halved (the second side first) until there are enough blocks to keep every thread
/// busy to the end.
fn block_sizes(groups: usize, panels: (usize, usize), widest: (usize, usize)) -> (usize, usize) {
    let wanted = 4 * crate::team::threads();
    let (mut a, mut b) = (widest.0.min(panels.0), widest.1.min(panels.1));
    while groups * panels.0.div_ceil(a) * panels.1.div_ceil(b) < wanted && (a > 1 || b > 1) {
        if b > 1 {
            b = b.div_ceil(2);
        } else {
            a = a.div_ceil(2);
        }
    }
    (a, b)
}

/// `0..k` in chunks of at most `longest`, as even as whole rows allow (288 as 144 + 144, not 256 + 32:
/// a short chunk pays a kernel call and a reload of the sums for little work): (first, length).
fn chunks(k: usize, longest: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = k.div_ceil(longest).max(1);
    (0..count).map(move |i| (i * k / count, (i + 1) * k / count - i * k / count)).filter(|&(_, kc)| kc > 0)
}

/// Where `multiply` writes: `len` floats from `ptr`, uninitialised until it returns.
#[derive(Clone, Copy)]
struct Output {
    ptr: Shared,
    len: usize,
}

/// The GEMM's columns: `count` of them, in grid rows of `pitch` whose first `valid` are output
/// pixels (the output plane is `count / pitch` rows of `valid`). Dense layouts: one row.
#[derive(Clone, Copy, Debug)]
struct Columns {
    count: usize,
    pitch: usize,
    valid: usize,
}

impl Columns {
    /// Output pixels.
    fn plane(&self) -> usize {
        self.count / self.pitch * self.valid
    }
}

/// The GEMM's right-hand side for one image.
enum Rhs<'a> {
    /// A padded copy of the input (`[channel][h + 2 pad][w + 2 pad]`) and, per GEMM row, where its
    /// shifted view starts.
    Shifted { padded: &'a [f32], offsets: &'a [usize] },
    /// Input channel planes, packed (and unfolded) block by block by the tasks that use them.
    Image { channel: &'a (dyn Fn(usize) -> &'a [f32] + Sync), geometry: Unfold },
    /// A 1x1 conv's input rows in place: runs of consecutive rows (the first row's index, the rows
    /// one after another), one run per input part.
    Rows(Vec<(usize, &'a [f32])>),
}

/// The transposed GEMM's left side: the output's pixels, MR to a panel.
#[derive(Clone, Copy)]
enum Pixels<'a> {
    /// A 1x1 conv's input packed as `[pixel panel][k][MR]`.
    Packed(&'a [f32]),
    /// A k x k conv's padded copy, read in place: GEMM row p of pixel i is
    /// `padded[positions[i] + offsets[p]]` (the shifted views, one pixel at a time).
    Shifted { padded: &'a [f32], positions: &'a [usize], offsets: &'a [usize] },
}

/// `channels` channels of an NCHW f32 map: image b's channel c is the plane at
/// `data[b * image_stride + c * h * w..]`. A contiguous tensor, or a channel slice of one.
#[derive(Clone, Copy, Debug)]
pub struct Planes<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub image_stride: usize,
}

impl Planes<'_> {
    fn fits(&self, n: usize, plane: usize) -> bool {
        n == 0 || (n - 1) * self.image_stride + self.channels * plane <= self.data.len()
    }
}

/// A map added to a conv's output (a residual connection), then `activation`.
#[derive(Clone, Copy, Debug)]
pub struct Residual<'a> {
    pub planes: Planes<'a>,
    pub activation: Activation,
}

impl CustomOp1 for CpuConv {
    fn name(&self) -> &'static str {
        "csp-cpu-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: f32 input expected, got {:?}", self.name(), storage.dtype())
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: contiguous input expected", self.name())
        };
        let &[n, c, h, w] = layout.shape().dims() else {
            candle_core::bail!("{}: NCHW input expected, got {:?}", self.name(), layout.shape())
        };
        if c != self.spec.in_channels {
            candle_core::bail!("{}: {} input channels, got {c}", self.spec.name, self.spec.in_channels)
        }
        let out = self.run(&data[start..end], n, h, w);
        let (oh, ow) = self.spec.out_size(h, w);
        Ok((CpuStorage::F32(out), Shape::from((n, self.spec.out_channels, oh, ow))))
    }
}

//! The CPU inference path of a folded convolution: conv + bias + activation in one candle custom
//! op, so each layer writes its output once.
//!
//! candle's own CPU conv copies the input through im2col for every group separately and adds bias
//! and activation as further passes over the output. Here:
//! - a 1x1, stride-1, unpadded conv is a GEMM straight on the NCHW input (no copy at all);
//! - any other conv unfolds the input once (for all groups) into a per-thread scratch buffer that
//!   is reused across layers and calls;
//! - grouped convs run their groups' GEMMs in parallel, one thread each, instead of one parallel
//!   GEMM per group after another (CSPResNeXt's 32-group convs are tiny GEMMs);
//! - bias and activation are applied to each output row while it is still in cache.
//!
//! The weights are copied once, when the layer is prepared, into the row-major
//! `[out_channels, in_channels / groups * k * k]` matrix the GEMM reads.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{Activation, ConvSpec};

/// A prepared folded conv (see the module docs).
#[derive(Clone, Debug)]
pub struct CpuConv {
    spec: ConvSpec,
    /// `[out_channels, in_channels / groups * kernel * kernel]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

thread_local! {
    /// im2col scratch, grown to the largest layer seen on this thread and kept.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl CpuConv {
    /// `weight` in candle's `[out, in/groups, k, k]` order (contiguous), `bias` of `out`.
    pub fn new(spec: ConvSpec, weight: Vec<f32>, bias: Vec<f32>) -> Self {
        debug_assert_eq!(weight.len(), spec.out_channels * spec.in_channels / spec.groups * spec.kernel * spec.kernel);
        debug_assert_eq!(bias.len(), spec.out_channels);
        CpuConv { spec, weight, bias }
    }

    /// The output for one contiguous NCHW input.
    pub fn run(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let s = &self.spec;
        let (oh, ow) = s.out_size(h, w);
        let (cin, cout, k) = (s.in_channels, s.out_channels, s.kernel);
        let out_plane = oh * ow;
        let mut out = vec![0f32; n * cout * out_plane];
        let direct = k == 1 && s.stride == 1 && s.padding == 0;
        for (image, dst) in x.chunks_exact(cin * h * w).zip(out.chunks_exact_mut(cout * out_plane)) {
            if direct {
                self.gemms(image, dst, out_plane);
            } else {
                SCRATCH.with(|scratch| {
                    let mut col = scratch.borrow_mut();
                    let len = cin * k * k * out_plane;
                    if col.len() < len {
                        col.resize(len, 0.0);
                    }
                    self.unfold(image, h, w, oh, ow, &mut col[..len]);
                    self.gemms(&col[..len], dst, out_plane);
                });
            }
        }
        let rows = out.par_chunks_mut(out_plane).with_min_len(8);
        rows.enumerate().for_each(|(row, values)| epilogue(values, self.bias[row % cout], s.activation));
        out
    }

    /// dst[cout, plane] = weight x cols, where cols is `[in/groups*k*k rows per group, plane]`.
    fn gemms(&self, cols: &[f32], dst: &mut [f32], plane: usize) {
        let s = &self.spec;
        let g = s.groups;
        let (m, kk) = (s.out_channels / g, s.in_channels / g * s.kernel * s.kernel);
        let threads = rayon::current_num_threads();
        let one = |group: usize, out: &mut [f32], parallelism: Parallelism| {
            let lhs = &self.weight[group * m * kk..(group + 1) * m * kk];
            let rhs = &cols[group * kk * plane..(group + 1) * kk * plane];
            // SAFETY: lhs is m x kk, rhs kk x plane and out m x plane, all row-major and in bounds
            // (the slices above have exactly these lengths); out does not alias either input.
            unsafe {
                gemm::gemm(
                    m,
                    plane,
                    kk,
                    out.as_mut_ptr(),
                    1,
                    plane as isize,
                    false,
                    lhs.as_ptr(),
                    1,
                    kk as isize,
                    rhs.as_ptr(),
                    1,
                    plane as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        };
        if g == 1 {
            let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
            one(0, dst, parallelism);
        } else {
            dst.par_chunks_mut(m * plane).enumerate().for_each(|(group, out)| one(group, out, Parallelism::None));
        }
    }

    /// im2col: row (c, ky, kx), column (oy, ox) = x[c, oy*stride - pad + ky, ox*stride - pad + kx],
    /// zero outside the image. Rows of one channel are written by one task.
    fn unfold(&self, image: &[f32], h: usize, w: usize, oh: usize, ow: usize, col: &mut [f32]) {
        let s = &self.spec;
        let (k, stride, pad) = (s.kernel, s.stride, s.padding as isize);
        let per_channel = k * k * oh * ow;
        col.par_chunks_mut(per_channel).enumerate().for_each(|(c, rows)| {
            let plane = &image[c * h * w..(c + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut rows[(ky * k + kx) * oh * ow..(ky * k + kx + 1) * oh * ow];
                    for oy in 0..oh {
                        let out = &mut row[oy * ow..(oy + 1) * ow];
                        let iy = (oy * stride) as isize - pad + ky as isize;
                        if iy < 0 || iy >= h as isize {
                            out.fill(0.0);
                            continue;
                        }
                        let line = &plane[iy as usize * w..(iy as usize + 1) * w];
                        let dx = kx as isize - pad;
                        if stride == 1 {
                            // Columns whose input x = ox + dx falls inside the line, copied at once.
                            let first = (-dx).clamp(0, ow as isize) as usize;
                            let last = (w as isize - dx).clamp(first as isize, ow as isize) as usize;
                            out[..first].fill(0.0);
                            out[last..].fill(0.0);
                            if last > first {
                                let from = (first as isize + dx) as usize;
                                out[first..last].copy_from_slice(&line[from..from + (last - first)]);
                            }
                        } else {
                            for (ox, v) in out.iter_mut().enumerate() {
                                let ix = (ox * stride) as isize + dx;
                                *v = if ix >= 0 && ix < w as isize { line[ix as usize] } else { 0.0 };
                            }
                        }
                    }
                }
            }
        });
    }
}

/// v = activation(v + bias), over one output channel's plane.
fn epilogue(values: &mut [f32], bias: f32, activation: Activation) {
    match activation {
        Activation::Linear => values.iter_mut().for_each(|v| *v += bias),
        Activation::Relu => values.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
        Activation::Leaky { slope } => values.iter_mut().for_each(|v| {
            let x = *v + bias;
            *v = if x < 0.0 { x * slope } else { x };
        }),
        Activation::Mish => values.iter_mut().for_each(|v| {
            let x = *v + bias;
            // x * tanh(ln(1 + e^x)) with one exp instead of exp, ln and tanh: with n = e^x (e^x + 2),
            // tanh(ln(1 + e^x)) = n / (n + 2). Above 20 it is x in f32, as on the candle path (and
            // e^2x would overflow further up).
            *v = if x > 20.0 {
                x
            } else {
                let e = x.exp();
                let n = e * (e + 2.0);
                x * n / (n + 2.0)
            };
        }),
        Activation::Swish => values.iter_mut().for_each(|v| {
            let x = *v + bias;
            *v = x / (1.0 + (-x).exp());
        }),
        Activation::Logistic => values.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-(*v + bias)).exp())),
    }
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

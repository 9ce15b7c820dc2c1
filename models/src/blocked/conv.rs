//! A folded conv on blocked maps: the output cut into tiles of a row's pixels by one or two blocks
//! of 16 channels, each tile one kernel call over the conv's whole reduction (every input part,
//! block, tap and lane), with bias, activation and residual applied before it is stored.
//!
//! Weights are packed once, per group of output blocks, as `[step][blocks * 16]` in the order the
//! kernel reads the input: part, block, tap row, tap column, lane. Grouped convs read, for each
//! output block, the input blocks that hold its groups' channels, with zero weights for the
//! channels of other groups: CSPResNeXt's 32 groups of 16 and 32 channels cost nothing extra; its
//! groups of 4 and 8 compute 4x and 2x their FLOPs, still faster than a group at a time.

use super::kernel::{Finish, Kernels, Segment, LANES};
use super::map::Map;
use super::Part;
use crate::layers::{Activation, ConvSpec};

/// Weights (floats: 256 KiB) up to which a task takes every call for its rows: whole models
/// 1.5-3% faster than a call per task (interleaved, batch 1, 2 threads); 1 MiB was no better.
const SMALL_WEIGHTS: usize = 1 << 16;

/// A prepared conv: its spec, how its input is split into parts, packed weights.
#[derive(Clone, Debug)]
pub struct Conv {
    pub spec: ConvSpec,
    /// Channels of each input part, in concatenation order, and the lanes of their blocks.
    parts: Vec<usize>,
    lanes: usize,
    /// Output blocks per kernel call.
    per_call: usize,
    /// Per group of `per_call` output blocks: its input, as (part, first block, blocks), and
    /// where its packed weights start.
    calls: Vec<Call>,
    weights: Vec<f32>,
    /// `per_call * 16` biases per call, zero past the last channel.
    bias: Vec<f32>,
    kernels: Kernels,
}

#[derive(Clone, Debug)]
struct Call {
    reads: Vec<(usize, usize, usize)>,
    weights: usize,
}

impl Conv {
    /// `weight` in candle's `[out, in / groups, k, k]` order, `bias` of `out`; the input comes as
    /// parts of `parts` channels each, in blocks of `lanes` (16, or 1 for a planar image).
    pub fn new(spec: &ConvSpec, weight: &[f32], bias: &[f32], parts: &[usize], lanes: usize, kernels: Kernels) -> Conv {
        let (cin, cout, k) = (spec.in_channels, spec.out_channels, spec.kernel);
        assert_eq!(parts.iter().sum::<usize>(), cin, "{}: input parts", spec.name);
        assert_eq!(weight.len(), cout * cin / spec.groups * k * k, "{}: weight size", spec.name);
        let (in_group, out_group) = (cin / spec.groups, cout / spec.groups);
        let out_blocks = cout.div_ceil(LANES);
        // Input channels output block `b`'s channels read: their groups' span.
        let span = |blocks: std::ops::Range<usize>| {
            let first = blocks.start * LANES / out_group;
            let last = ((blocks.end * LANES).min(cout) - 1) / out_group;
            first * in_group..(last + 1) * in_group
        };
        // Two blocks a call where they read the same inputs (always, with one group).
        let per_call = if (0..out_blocks.div_ceil(2)).all(|b| {
            let pair = 2 * b..(2 * b + 2).min(out_blocks);
            pair.len() == 1 || span(pair.start..pair.start + 1) == span(pair.clone())
        }) {
            kernels.blocks
        } else {
            1
        };
        // The parts' channel ranges in the concatenation.
        let starts: Vec<usize> = parts.iter().scan(0, |s, &c| Some(std::mem::replace(s, *s + c))).collect();
        let (mut calls, mut weights, mut biases) = (Vec::new(), Vec::new(), Vec::new());
        for first in (0..out_blocks).step_by(per_call) {
            let blocks = first..(first + per_call).min(out_blocks);
            let (wanted, width) = (span(blocks.clone()), blocks.len() * LANES);
            let mut reads = Vec::new();
            let start = weights.len();
            for (q, (&from, &count)) in starts.iter().zip(parts).enumerate() {
                let (lo, hi) = (wanted.start.max(from), wanted.end.min(from + count));
                if lo >= hi {
                    continue;
                }
                let (b0, b1) = ((lo - from) / lanes, (hi - from).div_ceil(lanes));
                reads.push((q, b0, b1 - b0));
                for block in b0..b1 {
                    for tap in 0..k * k {
                        for lane in 0..lanes {
                            let c = from + block * lanes + lane;
                            for o in 0..width {
                                let out = first * LANES + o;
                                let inside = c < from + count && out < cout && c / in_group == out / out_group;
                                weights.push(if inside {
                                    weight[(out * in_group + c % in_group) * k * k + tap]
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
            calls.push(Call { reads, weights: start });
            biases.extend((0..per_call * LANES).map(|o| bias.get(first * LANES + o).copied().unwrap_or(0.0)));
        }
        Conv { spec: spec.clone(), parts: parts.to_vec(), lanes, per_call, calls, weights, bias: biases, kernels }
    }

    /// The output of `inputs` (the parts, in order; each map with at least `padding` of border),
    /// plus `residual` after the activation when given, into a map with `border`.
    pub fn run(&self, inputs: &[Part<&Map>], residual: Option<(Part<&Map>, Activation)>, border: usize) -> Map {
        let s = &self.spec;
        assert_eq!(inputs.len(), self.parts.len(), "{}: input parts", s.name);
        let (h, w) = (inputs[0].map.h, inputs[0].map.w);
        for (part, &channels) in inputs.iter().zip(&self.parts) {
            let m = part.map;
            assert!(
                part.channels == channels
                    && (part.first_block * m.lanes + channels).div_ceil(m.lanes) <= m.blocks()
                    && (m.h, m.w) == (h, w)
                    && m.lanes == self.lanes
                    && m.border >= s.padding,
                "{}: an input part of {channels} channels from block {} of a {}x{} map (border {}, lanes {})",
                s.name,
                part.first_block,
                m.h,
                m.w,
                m.border,
                m.lanes
            );
        }
        let (oh, ow) = s.out_size(h, w);
        if let Some((r, _)) = &residual {
            let m = r.map;
            assert!(
                r.channels == s.out_channels
                    && r.first_block + s.out_channels.div_ceil(LANES) <= m.blocks()
                    && (m.h, m.w) == (oh, ow)
                    && m.lanes == LANES,
                "{}: residual",
                s.name
            );
        }
        // Per part, step offsets from a pixel's first input (tap (0, 0) of block 0), for every
        // block: block, tap row, tap column, lane.
        let k = s.kernel;
        let offsets: Vec<Vec<u32>> = inputs
            .iter()
            .map(|part| {
                let m = part.map;
                let (plane, wp) = (m.block_len(), m.wp());
                let blocks = part.channels.div_ceil(m.lanes);
                let mut o = Vec::with_capacity(blocks * k * k * m.lanes);
                for b in 0..blocks {
                    for ky in 0..k {
                        for kx in 0..k {
                            for lane in 0..m.lanes {
                                o.push(
                                    u32::try_from(b * plane + (ky * wp + kx) * m.lanes + lane)
                                        .expect("offsets fit u32"),
                                );
                            }
                        }
                    }
                }
                o
            })
            .collect();
        let write = |out: &Map, out_at: super::Shared| self.tiles(inputs, &residual, &offsets, out, out_at);
        // SAFETY: the tiles cover every pixel of every output block, all 16 lanes (see `tiles`).
        unsafe { Map::written(s.out_channels, oh, ow, border, write) }
    }

    /// Every tile of the output, in parallel (see `run`).
    fn tiles(
        &self,
        inputs: &[Part<&Map>],
        residual: &Option<(Part<&Map>, Activation)>,
        offsets: &[Vec<u32>],
        out: &Map,
        out_at: super::Shared,
    ) {
        let s = &self.spec;
        let k = s.kernel;
        let (oh, ow) = (out.h, out.w);
        let out_block = out.block_len();
        let out_len = out.blocks() * out_block;
        // Tiles along a row as even as the kernels allow. A task takes whole rows, for one call
        // (group of output blocks) where the weights are large (they stay in cache across the
        // rows), or for every call where they are small (the input tile stays in L1 across them).
        let tiles = ow.div_ceil(self.kernels.pixels);
        let calls_per_task = if self.weights.len() <= SMALL_WEIGHTS { self.calls.len() } else { 1 };
        let call_tasks = self.calls.len().div_ceil(calls_per_task);
        let mut rows_per_task = (4 * self.kernels.pixels).div_ceil(ow).clamp(1, oh.max(1));
        while rows_per_task > 1 && call_tasks * oh.div_ceil(rows_per_task) < 4 * crate::team::threads() {
            rows_per_task = rows_per_task.div_ceil(2);
        }
        let row_tasks = oh.div_ceil(rows_per_task);
        let step = s.stride * self.lanes;
        crate::team::for_each(call_tasks * row_tasks, |task| {
            let (first_call, rows) = ((task / row_tasks) * calls_per_task, task % row_tasks);
            let calls = first_call..(first_call + calls_per_task).min(self.calls.len());
            let mut segments = Vec::with_capacity(self.parts.len());
            for oy in rows * rows_per_task..((rows + 1) * rows_per_task).min(oh) {
                let mut ox = 0;
                for t in 0..tiles {
                    let pixels = (ow - ox).div_ceil(tiles - t);
                    for c in calls.clone() {
                        let call = &self.calls[c];
                        let first_block = c * self.per_call;
                        let blocks = self.per_call.min(out.blocks() - first_block);
                        segments.clear();
                        for &(q, b0, count) in &call.reads {
                            let m = inputs[q].map;
                            let y = (oy * s.stride) as isize - s.padding as isize;
                            let x = (ox * s.stride) as isize - s.padding as isize;
                            let first = (inputs[q].first_block + b0) * m.block_len() + m.at(y, x);
                            let len = count * k * k * m.lanes;
                            // The farthest read: the last step's offset from the last pixel.
                            let far = first + (pixels - 1) * step + offsets[q][len - 1] as usize;
                            assert!(far < m.data.len(), "{}: a read past its input", s.name);
                            segments.push(Segment {
                                base: m.data[first..].as_ptr(),
                                offsets: offsets[q].as_ptr(),
                                len,
                            });
                        }
                        let at = first_block * out_block + out.at(oy as isize, ox as isize);
                        assert!(at + (blocks - 1) * out_block + pixels * LANES <= out_len);
                        let residual = residual.as_ref().map(|(r, activation)| {
                            let m = r.map;
                            let from = (r.first_block + first_block) * m.block_len() + m.at(oy as isize, ox as isize);
                            assert!(from + (blocks - 1) * m.block_len() + pixels * LANES <= m.data.len());
                            (m.data[from..].as_ptr(), m.block_len(), *activation)
                        });
                        let finish = Finish {
                            bias: self.bias[c * self.per_call * LANES..].as_ptr(),
                            activation: s.activation,
                            out: out_at.ptr().wrapping_add(at),
                            out_block,
                            residual,
                        };
                        // SAFETY: the segments' reads are inside their parts (the farthest checked
                        // above), the call's weights hold a row per step, the output and residual
                        // tiles are inside their maps (asserted), and this task alone writes its
                        // tiles.
                        unsafe {
                            (self.kernels.tile(blocks, pixels))(
                                &segments,
                                step,
                                self.weights[call.weights..].as_ptr(),
                                &finish,
                            )
                        };
                    }
                    ox += pixels;
                }
            }
        });
    }
}

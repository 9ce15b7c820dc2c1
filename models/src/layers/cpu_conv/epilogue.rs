//! A block's epilogue: bias, activation and the residual applied to its sums, each result written
//! to its output position. Run through `with_simd`, so these loops are compiled for AVX-512 or AVX2
//! where the CPU has them: everything here is `#[inline(always)]` for that reason (see `SimdJob`).

use std::ops::Range;

use super::{Columns, CpuConv, Output};
use crate::layers::activation::SimdJob;
use crate::layers::Activation;

/// The usual GEMM's block: a row per output channel (`rows`), a column per GEMM column (`cols`),
/// `ld` floats a row.
pub(super) struct BlockEpilogue<'a> {
    pub conv: &'a CpuConv,
    pub block: &'a mut [f32],
    pub ld: usize,
    pub rows: Range<usize>,
    pub cols: Range<usize>,
    pub columns: Columns,
    pub residual: Option<(&'a [f32], Activation)>,
    pub dst: Output,
}

impl SimdJob for BlockEpilogue<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let BlockEpilogue { conv, block, ld, rows, cols, columns, residual, dst } = self;
        let plane = columns.plane();
        for (r, channel) in rows.enumerate() {
            // Block columns -> output positions: runs of valid columns, one per grid row.
            let mut j = cols.start;
            while j < cols.end {
                let (row, x) = (j / columns.pitch, j % columns.pitch);
                let next = cols.end.min((row + 1) * columns.pitch);
                let len = columns.valid.min(next - row * columns.pitch).saturating_sub(x);
                let (at, from) = (row * columns.valid + x, j - cols.start);
                j = next;
                if len == 0 {
                    continue;
                }
                finish_line(conv, &mut block[r * ld + from..][..len], channel, channel * plane + at, residual, dst);
            }
        }
    }
}

/// The transposed GEMM's block: a row per pixel (`pixels`), a column per output channel
/// (`channels`), `ld` floats a row. Each channel's column is gathered into a line, then finished.
pub(super) struct TransposedEpilogue<'a> {
    pub conv: &'a CpuConv,
    pub block: &'a mut [f32],
    pub ld: usize,
    pub pixels: Range<usize>,
    pub channels: Range<usize>,
    pub plane: usize,
    pub residual: Option<(&'a [f32], Activation)>,
    pub dst: Output,
}

/// Most pixels a transposed block holds.
const TRANSPOSED_BLOCK_PIXELS: usize = super::TRANSPOSED_BLOCK_PANELS.0 * super::MR;

impl SimdJob for TransposedEpilogue<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let TransposedEpilogue { conv, block, ld, pixels, channels, plane, residual, dst } = self;
        // Eight channels at a time: one read of 8 floats per pixel, not 8 reads a cache line apart.
        // (A block row is a whole number of NR-panels, so the 8 floats are always inside it.)
        let mut lines = [[0f32; TRANSPOSED_BLOCK_PIXELS]; 8];
        for first in channels.clone().step_by(8) {
            let j = first - channels.start;
            for (i, row) in block.chunks(ld).take(pixels.len()).enumerate() {
                let row: &[f32; 8] = row[j..][..8].try_into().expect("8 floats");
                for (line, v) in lines.iter_mut().zip(row) {
                    line[i] = *v;
                }
            }
            for (t, line) in lines.iter_mut().take(channels.end - first).enumerate() {
                let channel = first + t;
                finish_line(conv, &mut line[..pixels.len()], channel, channel * plane + pixels.start, residual, dst);
            }
        }
    }
}

/// One run of an output channel's sums, for output positions `to..`: bias, activation, the
/// residual (laid out as the output) and its activation, then out.
#[inline(always)]
fn finish_line(
    conv: &CpuConv,
    values: &mut [f32],
    channel: usize,
    to: usize,
    residual: Option<(&[f32], Activation)>,
    dst: Output,
) {
    let bias = conv.bias[channel];
    assert!(to + values.len() <= dst.len);
    // SAFETY (both writes): in bounds (asserted); this block is the only writer of these
    // positions, which nothing reads before `run_fused` returns.
    match residual {
        None => unsafe { conv.spec.activation.apply_into(values, bias, dst.ptr.ptr().add(to)) },
        Some((residual, activation)) => {
            conv.spec.activation.apply(values, bias);
            values.iter_mut().zip(&residual[to..]).for_each(|(v, r)| *v += r);
            unsafe { activation.apply_into(values, 0.0, dst.ptr.ptr().add(to)) };
        }
    }
}

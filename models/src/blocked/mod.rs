//! The fast CPU engine's network executor: feature maps in a blocked layout (16 channels per
//! pixel, contiguous: NCHW16c, as ONNX Runtime's MLAS uses), convs as tiles of pixels x 32
//! channels summed over their whole reduction in registers, with bias, activation and residual
//! applied before the one store of each output (see `kernel`).
//!
//! Against the NCHW GEMM engine it replaced, this drops every pass but the kernel's: no packing
//! of inputs (a pixel's 16 channels are the 16 floats a step broadcasts), no padded copy (each
//! map is written with the zero border its readers pad with), no block buffer and no separate
//! epilogue (the sums never leave the registers before they are final). Single layers of the CSP
//! backbones ran at 80-95% of a 2-core AMD EPYC's FMA peak, where the NCHW engine reached 60-80%.
//!
//! - A concat is never written: a conv reads its parts one after the other, and a channel slice
//!   on a block boundary is a view (see [`Part`]).
//! - A conv whose only reader is a residual add does the add in its epilogue (`crate::fusion`).
//! - The network input is read as it comes (one channel a block), so the stem's 3 channels are
//!   not padded to 16.
//! - Layers without a blocked version here (the classifier's head, SAM, ...) run on the usual
//!   ops, on their inputs converted back to NCHW; maps the caller asks for come back as NCHW.

mod conv;
mod exec;
mod kernel;
mod map;
mod ops;

pub use conv::Conv;
pub use exec::Prepared;
pub use kernel::{Isa, Kernels, LANES};
pub use map::Map;

/// A run of channels of a blocked map, starting on a block: a layer's output (all of its map), a
/// channel slice of one, or one part of a concat.
#[derive(Clone, Debug)]
pub struct Part<M> {
    pub map: M,
    pub first_block: usize,
    pub channels: usize,
}

impl<M: Clone> Part<M> {
    /// Channels `start..start + len` of the concatenation of `parts`, as parts of the same maps:
    /// None where a piece would start inside a block.
    pub fn slice(parts: &[Part<M>], start: usize, len: usize) -> Option<Vec<Part<M>>> {
        let (mut out, mut first) = (Vec::new(), 0);
        for p in parts {
            let (lo, hi) = (start.max(first), (start + len).min(first + p.channels));
            if lo < hi {
                let local = lo - first;
                if local % LANES != 0 {
                    return None;
                }
                out.push(Part { map: p.map.clone(), first_block: p.first_block + local / LANES, channels: hi - lo });
            }
            first += p.channels;
        }
        Some(out)
    }
}

impl Part<std::sync::Arc<Map>> {
    /// The same part, borrowed.
    pub fn as_ref(&self) -> Part<&Map> {
        Part { map: &self.map, first_block: self.first_block, channels: self.channels }
    }
}

/// A raw pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every user writes only its own disjoint part (see the call sites).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the whole `Shared`, which is `Sync`).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

//! PRN heads (the paper's CPU detectors): YOLOv3-tiny's head layout with partial residual
//! connections, on two or three scales.
//!
//! Coarsest scale: the backbone's map -> 1x1 reduce to `w`. Each finer scale: the coarser
//! scale's reduced map -> 1x1 to half its width -> 2x nearest upsampling, concatenated with the
//! backbone map of this scale -> 1x1 reduce to `w / 2^k` (YOLOv3-tiny's route + upsample
//! path). Every head then runs a 3x3 conv to `expansion` x its reduced width, and a partial
//! residual: darknet's shortcut between maps of different widths adds the reduced map onto the
//! leading channels only, so a share 1 / `expansion` of the channels gets a residual (PRN's
//! "partial residual"). Then the prediction conv.

use serde::{Deserialize, Serialize};

use super::{concat, feature, read, Feature, YoloHeads, ACTIVATION};
use crate::error::{Error, Result};
use crate::network::{NetworkBuilder, Op};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrnConfig {
    /// Reduced width at the coarsest head; halves at every finer head.
    pub channels: usize,
    /// Width of each head's 3x3 conv relative to its reduced width (> 1: the residual covers a
    /// share 1 / expansion of the channels).
    pub expansion: usize,
}

impl Default for PrnConfig {
    /// YOLOv3-tiny's widths: 256 reduced and 512 in the 3x3 at stride 32.
    fn default() -> Self {
        PrnConfig { channels: 256, expansion: 2 }
    }
}

impl PrnConfig {
    /// The coarsest head's width times `width`, rounded to a multiple of 8
    /// ([`crate::backbones::scale_channels`]); finer heads halve it as before.
    pub fn scaled(self, width: f64) -> Self {
        PrnConfig { channels: crate::backbones::scale_channels(self.channels, width), ..self }
    }

    /// Emits the PRN heads after the backbone in `b`; returns the yolo layers, coarsest first.
    pub fn build(&self, b: &mut NetworkBuilder, features: &[Feature], heads: &YoloHeads) -> Result<Vec<usize>> {
        heads.validate()?;
        let strides = heads.strides();
        if self.expansion < 2 || self.channels >> (strides.len() - 1) < 2 {
            return Err(Error::graph("prn: expansion must be at least 2, and every head at least 2 channels wide"));
        }
        let mut yolos = Vec::with_capacity(strides.len());
        // (stride, reduced map) of the previous, coarser head.
        let mut coarser: Option<(usize, usize)> = None;
        for (k, &s) in strides.iter().rev().enumerate() {
            let width = self.channels >> k;
            let f = feature(features, s)?;
            match coarser {
                None => read(b, f.layer, &format!("neck.p{s}.read")),
                Some((prev_stride, prev)) => {
                    if !prev_stride.is_multiple_of(s) {
                        return Err(Error::graph(format!("prn: stride {prev_stride} does not upsample to {s}")));
                    }
                    read(b, prev, &format!("neck.p{s}.read_p{prev_stride}"));
                    let half = b.channels(prev) / 2;
                    b.conv(&format!("neck.p{s}.up_conv"), half, 1, 1, 1, ACTIVATION);
                    let up = b.push(Op::Upsample { stride: prev_stride / s }, format!("neck.p{s}.up"));
                    concat(b, &[up, f.layer], &format!("neck.p{s}.concat"));
                }
            }
            let reduced = b.conv(&format!("neck.p{s}.reduce"), width, 1, 1, 1, ACTIVATION);
            coarser = Some((s, reduced));
            b.conv(&format!("head.p{s}.conv"), width * self.expansion, 3, 1, 1, ACTIVATION);
            b.push(Op::Shortcut { from: reduced, activation: ACTIVATION }, format!("head.p{s}.partial_residual"));
            yolos.push(heads.predict(b, s)?);
        }
        Ok(yolos)
    }
}

//! The paper's Exact Fusion Model (EFM, section 3.3) and the two designs it is compared with in
//! figure 6, Global Fusion Model (GFM) and Feature Pyramid Network (FPN), built by one config
//! with a switch ([`FusionMode`]) so the ablation differs in nothing else.
//!
//! Every pyramid level (a backbone feature at some stride) first goes through a 1x1 lateral conv
//! to `channels`. The head at stride s then fuses, resampled to s (nearest upsampling from
//! coarser maps, [`Downsampler`] from finer ones):
//! - EFM: the levels at s/2, s and 2s, those the backbone has (the scales that bound the
//!   anchors of the head; the finest and coarsest heads have fewer neighbours);
//! - GFM: every level;
//! - FPN: the level at s and the fused map of the previous, coarser head (top-down cascade).
//!
//! The concatenation of k maps of `channels` is compressed back to `channels` by Maxout: channel
//! g of the result is the maximum of channel g over the k maps (channel j goes to group j mod
//! `channels`). The head then runs the optional SAM gate x * sigmoid(conv1x1(x)) on the fused
//! map, a 3x3 conv to `head_channels`, and the prediction conv. The paper gives no widths; ours
//! are in [`FusionNeckConfig::efm_sam`].

use serde::{Deserialize, Serialize};

use super::{concat, feature, read, resample, Downsampler, Feature, YoloHeads, ACTIVATION};
use crate::error::{Error, Result};
use crate::layers::Activation;
use crate::network::{NetworkBuilder, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMode {
    /// EFM: the head's own scale and its two neighbours.
    Exact,
    /// GFM: every pyramid level at every head.
    Global,
    /// FPN: the head's scale and the previous (coarser) head's fused map.
    Pyramid,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusionNeckConfig {
    pub mode: FusionMode,
    /// Backbone strides that form the pyramid; every head stride must be one of them.
    pub levels: Vec<usize>,
    /// Width of the lateral convs and of every fused map.
    pub channels: usize,
    /// Width of the 3x3 conv each head runs before its prediction conv.
    pub head_channels: usize,
    pub downsample: Downsampler,
    /// Spatial attention on each fused map.
    pub sam: bool,
}

impl FusionNeckConfig {
    /// Our EFM(SAM) for the mobile models: levels at strides 4-32 (the stride-4 map is the
    /// finest head's s/2 neighbour), 128-channel laterals, 256-channel head convs, max-pool
    /// down-sampling (no parameters, so the modes differ only in what they fuse).
    pub fn efm_sam() -> Self {
        FusionNeckConfig {
            mode: FusionMode::Exact,
            levels: vec![4, 8, 16, 32],
            channels: 128,
            head_channels: 256,
            downsample: Downsampler::MaxPool,
            sam: true,
        }
    }

    /// Lateral and head widths times `width`, rounded to multiples of 8
    /// ([`crate::backbones::scale_channels`]).
    pub fn scaled(self, width: f64) -> Self {
        use crate::backbones::scale_channels;
        FusionNeckConfig {
            channels: scale_channels(self.channels, width),
            head_channels: scale_channels(self.head_channels, width),
            ..self
        }
    }

    pub fn with_mode(self, mode: FusionMode) -> Self {
        FusionNeckConfig { mode, ..self }
    }

    /// The pyramid levels the head at `stride` fuses directly (FPN adds the coarser head's map).
    pub fn sources(&self, stride: usize) -> Vec<usize> {
        let mut levels: Vec<usize> = match self.mode {
            FusionMode::Exact => {
                self.levels.iter().copied().filter(|&l| l == stride || l * 2 == stride || l == stride * 2).collect()
            }
            FusionMode::Global => self.levels.clone(),
            FusionMode::Pyramid => vec![stride],
        };
        levels.sort_unstable();
        levels
    }

    fn validate(&self, heads: &YoloHeads) -> Result<()> {
        let mut levels = self.levels.clone();
        levels.sort_unstable();
        levels.dedup();
        if levels.len() != self.levels.len() || levels.is_empty() || self.channels == 0 || self.head_channels == 0 {
            return Err(Error::graph("fusion neck: levels must be distinct and non-empty, widths positive"));
        }
        if let Some(s) = heads.strides().into_iter().find(|s| !levels.contains(s)) {
            return Err(Error::graph(format!("fusion neck: head stride {s} is not a pyramid level {levels:?}")));
        }
        Ok(())
    }

    /// Emits the laterals, the fusion and the heads after the backbone in `b`; returns the yolo
    /// layers, coarsest head first.
    pub fn build(&self, b: &mut NetworkBuilder, features: &[Feature], heads: &YoloHeads) -> Result<Vec<usize>> {
        heads.validate()?;
        self.validate(heads)?;
        let strides = heads.strides();
        // Laterals only for the levels some head reads.
        let mut used: Vec<usize> = strides.iter().flat_map(|&s| self.sources(s)).collect();
        used.sort_unstable();
        used.dedup();
        let mut laterals = Vec::with_capacity(used.len());
        for &level in &used {
            let f = feature(features, level)?;
            read(b, f.layer, &format!("neck.lateral{level}.read"));
            laterals.push((level, b.conv(&format!("neck.lateral{level}"), self.channels, 1, 1, 1, ACTIVATION)));
        }
        let lateral = |level: usize| laterals.iter().find(|l| l.0 == level).map(|l| l.1);
        let mut yolos = Vec::with_capacity(strides.len());
        // Coarse to fine, so FPN can read the previous head's fused map.
        let mut coarser: Option<(usize, usize)> = None;
        for &s in strides.iter().rev() {
            let mut inputs = Vec::new();
            for level in self.sources(s) {
                let from = lateral(level).ok_or_else(|| Error::graph(format!("no lateral at stride {level}")))?;
                inputs.push(resample(b, from, level, s, self.downsample, &format!("neck.p{s}.from{level}"))?);
            }
            if let (FusionMode::Pyramid, Some((prev_stride, prev))) = (self.mode, coarser) {
                inputs.push(resample(
                    b,
                    prev,
                    prev_stride,
                    s,
                    self.downsample,
                    &format!("neck.p{s}.from_p{prev_stride}"),
                )?);
            }
            let fused = if inputs.len() > 1 {
                concat(b, &inputs, &format!("neck.p{s}.concat"));
                b.push(Op::Maxout { out_channels: self.channels }, format!("neck.p{s}.maxout"))
            } else {
                inputs[0]
            };
            coarser = Some((s, fused));
            read(b, fused, &format!("head.p{s}.read"));
            if self.sam {
                b.conv(&format!("head.p{s}.sam_gate"), self.channels, 1, 1, 1, Activation::Logistic);
                b.push(Op::Sam { from: fused }, format!("head.p{s}.sam"));
            }
            b.conv(&format!("head.p{s}.conv"), self.head_channels, 3, 1, 1, ACTIVATION);
            yolos.push(heads.predict(b, s)?);
        }
        Ok(yolos)
    }
}

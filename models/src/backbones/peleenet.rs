//! PeleeNet (Wang, Li and Ling, NeurIPS 2018), CSPPeleeNet and the paper's lightweight "Ref."
//! backbones, all at 224x224.
//!
//! PeleeNet: stem block (32 channels, stride 4); four stages of two-way dense layers with growth
//! rate k = 32 and 3, 4, 8, 6 layers; the 1x1 bottleneck of each branch is
//! `bottleneck_width * k / 2` with widths 1, 2, 4, 4, capped at half the layer's input (the
//! dynamic bottleneck); every stage ends with a 1x1 transition without compression (128, 256,
//! 512, 704 channels) and stages 1-3 with a 2x2 pool; global pool and fc. 2.79M conv weights and
//! 1.017 BFLOPs, as published.
//!
//! CSPPeleeNet: the same with every stage a CSP stage, gamma 0.5 and CSPDenseNet's partial
//! transition (Fusion::Both: transition on the dense path, concatenation with the cross path,
//! transition). The paper does not say where the down-sampling sits; the table's FLOPs are met
//! when the fusing transition runs after the pool (`PoolAt::BeforeFusionTransition`).
//!
//! The Ref. models (CSPPeleeNet Ref., CSPDenseNet Ref., CSPDenseNetb Ref.) have no published
//! layer description at all. They are built here as CSP networks of this macro-architecture
//! (stem block, four stages at strides 4-32, gamma 0.5, fusion first with the transition after
//! the pool), and their free knobs (dense layer type, growth rate, depths, bottleneck widths)
//! are our calibration to the table's parameters and FLOPs, not the authors' values.

use super::native::{Head, NativeConfig, Stem, ACTIVATION};
use crate::csp::{BlockType, CspStage, Downsample, Fusion, PoolAt};

#[derive(Clone, Debug, PartialEq)]
pub struct PeleeNetConfig {
    pub stem_channels: usize,
    /// k: channels each dense layer adds.
    pub growth_rate: usize,
    /// Dense layers per stage.
    pub depths: Vec<usize>,
    /// Bottleneck width factor per stage (of k / 2 per branch for two-way layers, of k for
    /// one-way layers), capped at half the layer's input.
    pub bottleneck_widths: Vec<usize>,
    /// PeleeNet's two-way dense layer; false for DenseNet's one-way layer.
    pub two_way: bool,
    /// gamma: share of each stage's input that goes through its dense block (1 = plain).
    pub partial_ratio: f32,
    pub fusion: Fusion,
    /// Where the stride-2 pool of stages 1-3 sits relative to the transitions.
    pub pool_at: PoolAt,
}

impl PeleeNetConfig {
    pub fn peleenet() -> Self {
        PeleeNetConfig {
            stem_channels: 32,
            growth_rate: 32,
            depths: vec![3, 4, 8, 6],
            bottleneck_widths: vec![1, 2, 4, 4],
            two_way: true,
            partial_ratio: 1.0,
            fusion: Fusion::Both,
            pool_at: PoolAt::AfterTransition,
        }
    }

    pub fn csppeleenet() -> Self {
        PeleeNetConfig { partial_ratio: 0.5, pool_at: PoolAt::BeforeFusionTransition, ..Self::peleenet() }
    }

    /// Our calibration: CSPPeleeNet with deeper middle stages (3, 8, 12, 6) and fusion first.
    pub fn csppeleenet_ref() -> Self {
        PeleeNetConfig { depths: vec![3, 8, 12, 6], fusion: Fusion::First, ..Self::csppeleenet() }
    }

    /// Our calibration: one-way dense layers (k = 32) in the CSPPeleeNet layout, depths 3, 4, 12, 6,
    /// fusion first.
    pub fn cspdensenet_ref() -> Self {
        PeleeNetConfig { two_way: false, depths: vec![3, 4, 12, 6], fusion: Fusion::First, ..Self::csppeleenet() }
    }

    /// Our calibration: the smaller one-way variant, k = 24, depths 4, 6, 4, 4, bottleneck width 4.
    pub fn cspdensenetb_ref() -> Self {
        PeleeNetConfig {
            growth_rate: 24,
            depths: vec![4, 6, 4, 4],
            bottleneck_widths: vec![4; 4],
            ..Self::cspdensenet_ref()
        }
    }

    /// Stem width and growth rate times `width`, rounded to multiples of 8
    /// ([`super::scale_channels`]); stage widths follow from them. The two-way layer's branches
    /// (k / 2) and bottlenecks (multiples of 4) stay whole.
    pub fn scaled(self, width: f64) -> Self {
        PeleeNetConfig {
            stem_channels: super::scale_channels(self.stem_channels, width),
            growth_rate: super::scale_channels(self.growth_rate, width),
            ..self
        }
    }

    pub fn native(&self) -> NativeConfig {
        let mut channels = self.stem_channels;
        let n = self.depths.len();
        let stages = (0..n)
            .map(|i| {
                let depth = self.depths[i];
                let bottleneck_width = self.bottleneck_widths.get(i).copied().unwrap_or(4);
                let (growth_rate, bottleneck_cap) = (self.growth_rate, true);
                let block = if self.two_way {
                    BlockType::TwoWayDense { growth_rate, bottleneck_width, bottleneck_cap }
                } else {
                    BlockType::Dense { growth_rate, bottleneck_width, bottleneck_cap }
                };
                // Transitions without compression: the stage keeps every channel it produced.
                channels += depth * self.growth_rate;
                let downsample =
                    if i + 1 < n { Downsample::MaxPool { stride: 2, at: self.pool_at } } else { Downsample::None };
                CspStage {
                    depth,
                    out_channels: channels,
                    downsample,
                    expand_ratio: None,
                    bottle_ratio: 1.0,
                    block_ratio: 1.0,
                    partial_ratio: self.partial_ratio,
                    fusion: self.fusion,
                    transition_ratio: 1.0,
                    plain_transition: true,
                    block,
                    groups: 1,
                    cross_linear: false,
                    activation: ACTIVATION,
                }
            })
            .collect();
        NativeConfig {
            stem: Stem::Pelee { channels: self.stem_channels },
            stages,
            head: Head::PoolThenFc,
            input_size: 224,
        }
    }
}

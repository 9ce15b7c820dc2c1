//! DenseNet-201-Elastic (Wang et al., "Elastic", CVPR 2019) and CSPDenseNet-201-Elastic, at
//! 224x224 (the table does not state the size; 224 is where the baseline lands).
//!
//! DenseNet-201-Elastic: 7x7/2 conv (64) and 3x3/2 max pool; four dense stages of 10, 20, 40, 30
//! Elastic layers (growth rate 32, bottleneck 4k split over two branches: one at full
//! resolution, one at half resolution except in the last, 7x7 stage, their outputs added);
//! transitions compress by 0.5 and pool; then darknet's classifier (1x1 conv, global pool), as
//! in darknet's densenet201.cfg. Elastic's layer counts and branches follow its public model;
//! differences: post-activation conv-BN-leaky instead of BN-ReLU-conv, max instead of average
//! pooling, nearest instead of bilinear upsampling; none changes the parameter or FLOP count.
//! The plain DenseNet-201 (6, 12, 48, 32 layers, no branches) would count 19.78M / 8.77 BFLOPs
//! here, also within the table's figures; the table names the Elastic model, so that is built.
//!
//! CSPDenseNet-201-Elastic: every stage a CSP stage with gamma 0.5 and the paper's partial
//! transition (Fusion::Both) whose first transition compresses the dense path by DenseNet's 0.5.
//! The paper does not place the down-sampling; the table's numbers are met when both
//! transitions run after the 2x2 pool (`PoolAt::BeforeTransitions`).

use super::native::{Head, NativeConfig, Stem, ACTIVATION};
use crate::csp::{BlockType, CspStage, Downsample, Fusion, PoolAt};

#[derive(Clone, Debug, PartialEq)]
pub struct DenseNetConfig {
    pub stem_channels: usize,
    /// k: channels each dense layer adds.
    pub growth_rate: usize,
    /// Dense layers per stage.
    pub depths: Vec<usize>,
    /// Bottleneck width of a dense layer in units of k (DenseNet-BC: 4).
    pub bottleneck_width: usize,
    /// theta: transition output width relative to its input (stages 1-3).
    pub compression: f32,
    /// Elastic layers (two branches, one at half resolution) instead of plain dense layers.
    pub elastic: bool,
    /// gamma: share of each stage's input that goes through its dense block (1 = plain).
    pub partial_ratio: f32,
    pub fusion: Fusion,
    /// Width of the partial transition's first 1x1 relative to the dense path (Fusion::Both).
    pub transition_ratio: f32,
    /// Where the stride-2 pool of stages 1-3 sits relative to the transitions.
    pub pool_at: PoolAt,
}

impl DenseNetConfig {
    pub fn densenet201_elastic() -> Self {
        DenseNetConfig {
            stem_channels: 64,
            growth_rate: 32,
            depths: vec![10, 20, 40, 30],
            bottleneck_width: 4,
            compression: 0.5,
            elastic: true,
            partial_ratio: 1.0,
            fusion: Fusion::Both,
            transition_ratio: 1.0,
            pool_at: PoolAt::AfterTransition,
        }
    }

    pub fn cspdensenet201_elastic() -> Self {
        DenseNetConfig {
            partial_ratio: 0.5,
            transition_ratio: 0.5,
            pool_at: PoolAt::BeforeTransitions,
            ..Self::densenet201_elastic()
        }
    }

    /// Stem width and growth rate times `width`, rounded to multiples of 8
    /// ([`super::scale_channels`]); stage and transition widths follow from them.
    pub fn scaled(self, width: f64) -> Self {
        DenseNetConfig {
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
                let last = i + 1 == n;
                let (growth_rate, bottleneck_width) = (self.growth_rate, self.bottleneck_width);
                let block = if self.elastic {
                    // Elastic keeps the last stage (7x7 at 224) at full resolution in both branches.
                    BlockType::ElasticDense { growth_rate, bottleneck_width, low_res_branch: !last }
                } else {
                    BlockType::Dense { growth_rate, bottleneck_width, bottleneck_cap: false }
                };
                let produced = channels + depth * growth_rate;
                channels = if last { produced } else { (produced as f32 * self.compression) as usize };
                let downsample =
                    if last { Downsample::None } else { Downsample::MaxPool { stride: 2, at: self.pool_at } };
                CspStage {
                    depth,
                    out_channels: channels,
                    downsample,
                    expand_ratio: None,
                    bottle_ratio: 1.0,
                    block_ratio: 1.0,
                    partial_ratio: self.partial_ratio,
                    fusion: self.fusion,
                    transition_ratio: self.transition_ratio,
                    plain_transition: false,
                    block,
                    groups: 1,
                    cross_linear: false,
                    activation: ACTIVATION,
                }
            })
            .collect();
        NativeConfig {
            // PyTorch's MaxPool2d(3, 2, padding=1) is darknet's padding 2.
            stem: Stem::ConvPool { channels: self.stem_channels, kernel: 7, pool_size: 3, pool_padding: 2 },
            stages,
            head: Head::ConvThenPool,
            input_size: 224,
        }
    }
}

//! ResNet-10 (darknet's `resnet10.cfg`, mirrored layer for layer) and CSPResNet-10.
//!
//! ResNet-10: 7x7/2 conv (64), 2x2/2 max pool, then one basic block per stage with widths
//! 64, 128, 256, 512; stages 2-4 down-sample in the block's first conv, and the shortcut adds the
//! block input subsampled onto the leading channels (darknet's shortcut between unequal maps);
//! global average pool and a 1000-way classifier (the cfg's 1x1 conv on the pooled map is the
//! same as our fully connected layer). 5,240,000 conv weights, 2.272 BFLOPs at 256x256.
//!
//! CSPResNet-10: the paper gives only its size (2.73M, 1.905 BFLOPs). Its numbers pin the design
//! down: they are met when the last stage becomes a CSP stage (3x3/2 `conv_down` keeping 256
//! channels, gamma 0.5, one basic block on 128 channels, transition, concatenation, transition
//! to 512) and stages 1-3 stay plain ResNet stages. Putting the same CSP stage on all four stages
//! lands far below the table (1.90M, 0.90 BFLOPs): stage 1 at 64x64 carries much of ResNet-10's
//! FLOPs but few of its parameters, so the table's mild FLOP cut and halved parameters leave
//! room for a CSP stage only where the parameters are, in stage 4.

use super::native::{Head, NativeConfig, Stem};
use crate::csp::{BlockType, CspStage, Downsample, Fusion};

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Width of the 7x7 stem conv.
    pub stem_channels: usize,
    /// Output channels of each stage.
    pub widths: Vec<usize>,
    /// Basic blocks per stage.
    pub depths: Vec<usize>,
    /// gamma per stage: 1 keeps the plain ResNet stage, below 1 makes it a CSP stage.
    pub partial_ratios: Vec<f32>,
    /// Fusion of the CSP stages.
    pub fusion: Fusion,
}

impl ResNetConfig {
    pub fn resnet10() -> Self {
        ResNetConfig {
            stem_channels: 64,
            widths: vec![64, 128, 256, 512],
            depths: vec![1, 1, 1, 1],
            partial_ratios: vec![1.0; 4],
            fusion: Fusion::Both,
        }
    }

    pub fn cspresnet10() -> Self {
        ResNetConfig { partial_ratios: vec![1.0, 1.0, 1.0, 0.5], ..Self::resnet10() }
    }

    /// Stem and stage widths times `width`, rounded to multiples of 8 ([`super::scale_channels`]).
    /// A CSP stage splits its (scaled) input by gamma, so its blocks stay valid at any width.
    pub fn scaled(self, width: f64) -> Self {
        ResNetConfig {
            stem_channels: super::scale_channels(self.stem_channels, width),
            widths: self.widths.iter().map(|&w| super::scale_channels(w, width)).collect(),
            ..self
        }
    }

    pub fn native(&self) -> NativeConfig {
        let stem_channels = self.stem_channels;
        let mut in_ch = stem_channels;
        let mut stages = Vec::with_capacity(self.widths.len());
        for (i, (&width, &depth)) in self.widths.iter().zip(&self.depths).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let gamma = self.partial_ratios.get(i).copied().unwrap_or(1.0);
            let plain = gamma >= 1.0;
            // A CSP stage down-samples first and keeps its input width; its blocks then work on
            // the gamma share of it, so they are that wide.
            let (downsample, block_ratio) = if plain {
                (Downsample::FirstBlock { stride }, 1.0)
            } else {
                let part = (in_ch as f32 * gamma).round().max(1.0);
                (Downsample::Conv { stride, widen: false }, part / width as f32)
            };
            stages.push(CspStage {
                depth,
                out_channels: width,
                downsample,
                expand_ratio: None,
                bottle_ratio: 1.0,
                block_ratio,
                partial_ratio: gamma,
                fusion: self.fusion,
                transition_ratio: 1.0,
                plain_transition: false,
                block: BlockType::Basic,
                groups: 1,
                cross_linear: false,
                activation: super::native::ACTIVATION,
            });
            in_ch = width;
        }
        NativeConfig {
            stem: Stem::ConvPool { channels: stem_channels, kernel: 7, pool_size: 2, pool_padding: 1 },
            stages,
            head: Head::PoolThenFc,
            input_size: 256,
        }
    }
}

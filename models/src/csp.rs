//! The Cross Stage Partial stage (paper section 3.1), generic over its block type.
//!
//! A stage optionally down-samples, optionally expands with a 1x1 conv, then splits its channels:
//! a share `partial_ratio` (the paper's gamma) goes through the blocks, the rest crosses the stage
//! untouched. The two parts are merged according to `fusion`. With `partial_ratio = 1` there is no
//! cross path: the plain baseline stage of the same family.
//!
//! [`CspStageConfig`] is timm's set of knobs; [`CspStage`] is the full set the paper's own models
//! need (where the stage down-samples, transition widths, dense and basic blocks). Both build
//! through the same code, so a CSP model and its plain baseline differ only in their knobs.

use serde::{Deserialize, Serialize};

use crate::layers::{Activation, ConvSpec};
use crate::network::{NetworkBuilder, Op};

/// How the block path and the cross path are merged (paper figure 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// Concatenate, then one transition (the gradients of both paths are reused).
    First,
    /// Transition on the block path, then concatenate (gradient flow truncated: the paper's pick).
    Last,
    /// Transition, concatenate, transition (CSPDenseNet's partial transition layer, and timm's
    /// CSP models).
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BlockType {
    /// ResNet bottleneck: 1x1, 3x3 (grouped for ResNeXt), 1x1 without activation, add, activation.
    Bottleneck,
    /// Darknet residual: 1x1, 3x3, add without activation.
    Dark,
    /// ResNet basic block: 3x3, 3x3 without activation, add, activation.
    Basic,
    /// DenseNet layer: 1x1 to `bottleneck_width * growth_rate`, 3x3 to `growth_rate`, concatenated
    /// onto its input.
    Dense {
        growth_rate: usize,
        bottleneck_width: usize,
        /// PeleeNet's dynamic bottleneck: never wider than half the layer's input.
        #[serde(default)]
        bottleneck_cap: bool,
    },
    /// PeleeNet two-way dense layer: a 1x1 -> 3x3 branch and a 1x1 -> 3x3 -> 3x3 branch, each of
    /// `growth_rate / 2` channels with `bottleneck_width * growth_rate / 2` in the 1x1,
    /// concatenated onto the input.
    TwoWayDense {
        growth_rate: usize,
        bottleneck_width: usize,
        #[serde(default)]
        bottleneck_cap: bool,
    },
    /// Elastic DenseNet layer (Wang et al., CVPR 2019): two 1x1 -> 3x3 branches of half the
    /// bottleneck, each giving `growth_rate` channels, added; the second runs at half resolution
    /// (2x2 max pool before, nearest 2x upsampling after) when `low_res_branch`.
    ElasticDense { growth_rate: usize, bottleneck_width: usize, low_res_branch: bool },
}

impl BlockType {
    fn is_residual(&self) -> bool {
        matches!(self, BlockType::Bottleneck | BlockType::Dark | BlockType::Basic)
    }
}

/// Where a dense stage's 2x2 max pool (darknet's stand-in for DenseNet's average pool) sits
/// relative to its transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolAt {
    /// After the last transition (DenseNet, PeleeNet).
    AfterTransition,
    /// Before the transition that follows the concatenation (Fusion::Both and First).
    BeforeFusionTransition,
    /// Before every transition: both paths are pooled, the transitions run at the lower resolution.
    BeforeTransitions,
}

/// How (and whether) a stage halves its resolution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Downsample {
    None,
    /// A 3x3 `conv_down` with this stride opens the stage; `widen` makes it output the stage
    /// width (CSPDarknet) instead of keeping the input width.
    Conv {
        stride: usize,
        widen: bool,
    },
    /// The first block's first conv is strided and its shortcut reads the input subsampled
    /// (ResNet; darknet's shortcut between maps of different sizes). Non-residual blocks pool the
    /// stage input instead.
    FirstBlock {
        stride: usize,
    },
    /// A max pool of window and stride `stride` (darknet padding `stride - 1`) at `at`.
    MaxPool {
        stride: usize,
        at: PoolAt,
    },
}

/// One stage, in the paper's terms. Channel widths are derived from the ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CspStage {
    pub depth: usize,
    /// Output channels of the stage.
    pub out_channels: usize,
    pub downsample: Downsample,
    /// Width of the 1x1 `conv_exp` relative to `out_channels`; `None` splits the stage input as it is.
    pub expand_ratio: Option<f32>,
    /// Bottleneck width inside residual blocks relative to their output.
    pub bottle_ratio: f32,
    /// Residual block output width relative to `out_channels`.
    pub block_ratio: f32,
    /// gamma: the share of channels that goes through the blocks.
    pub partial_ratio: f32,
    pub fusion: Fusion,
    /// Width of `conv_transition_b` (Fusion::Both) relative to the block path: 1 keeps it (timm),
    /// 0.5 is DenseNet's compression.
    pub transition_ratio: f32,
    /// Plain stages: end with a 1x1 `conv_transition` even when the blocks already give
    /// `out_channels` (PeleeNet's transition layers without compression).
    pub plain_transition: bool,
    pub block: BlockType,
    /// Groups of the 3x3 convolutions of residual blocks (32 for ResNeXt).
    pub groups: usize,
    /// No activation after `conv_exp` (timm's `cross_linear`).
    pub cross_linear: bool,
    pub activation: Activation,
}

/// timm's stage knobs (see [`CspStage`] for their meaning); builds as the equivalent `CspStage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CspStageConfig {
    pub depth: usize,
    pub out_channels: usize,
    /// Stride of the 3x3 `conv_down` that opens the stage; 1 means no down-sampling conv.
    pub stride: usize,
    /// `conv_down` widens straight to `out_channels` (CSPDarknet) instead of keeping the input width.
    pub down_growth: bool,
    pub expand_ratio: Option<f32>,
    pub bottle_ratio: f32,
    pub block_ratio: f32,
    pub partial_ratio: f32,
    pub fusion: Fusion,
    pub block: BlockType,
    pub groups: usize,
    pub cross_linear: bool,
    pub activation: Activation,
}

impl From<&CspStageConfig> for CspStage {
    fn from(c: &CspStageConfig) -> Self {
        let downsample =
            if c.stride > 1 { Downsample::Conv { stride: c.stride, widen: c.down_growth } } else { Downsample::None };
        CspStage {
            depth: c.depth,
            out_channels: c.out_channels,
            downsample,
            expand_ratio: c.expand_ratio,
            bottle_ratio: c.bottle_ratio,
            block_ratio: c.block_ratio,
            partial_ratio: c.partial_ratio,
            fusion: c.fusion,
            transition_ratio: 1.0,
            plain_transition: false,
            block: c.block,
            groups: c.groups,
            cross_linear: c.cross_linear,
            activation: c.activation,
        }
    }
}

impl CspStageConfig {
    /// Emits the stage into `b` under key prefix `prefix`; returns the index of its output.
    pub fn build(&self, b: &mut NetworkBuilder, prefix: &str) -> usize {
        CspStage::from(self).build(b, prefix)
    }
}

impl CspStage {
    /// Emits the stage into `b` under key prefix `prefix`; returns the index of its output.
    /// Key names follow timm: `conv_down`, `conv_exp`, `blocks.{j}.conv{1,2,3}`,
    /// `conv_transition_b`, `conv_transition`.
    pub fn build(&self, b: &mut NetworkBuilder, prefix: &str) -> usize {
        let act = self.activation;
        let name = |n: &str| format!("{prefix}.{n}");
        match self.downsample {
            Downsample::Conv { stride, widen } if stride > 1 => {
                let down = if widen { self.out_channels } else { b.out_channels() };
                b.conv(&name("conv_down"), down, 3, stride, self.groups, act);
            }
            Downsample::FirstBlock { stride } if stride > 1 && !self.block.is_residual() => {
                max_pool(b, stride, &name("pool"));
            }
            _ => {}
        }
        let stage_in = match self.expand_ratio {
            Some(r) => {
                let exp = round(self.out_channels as f32 * r);
                let exp_act = if self.cross_linear { Activation::Linear } else { act };
                b.conv(&name("conv_exp"), exp, 1, 1, 1, exp_act)
            }
            None => b.last(),
        };
        let total = b.out_channels();
        let plain = self.partial_ratio >= 1.0 || total < 2;
        let part = if plain { total } else { round(total as f32 * self.partial_ratio).clamp(1, total - 1) };
        // Cross path first, block path second, as timm orders them.
        let cross = if plain { None } else { Some(b.slice(stage_in, 0, total - part)) };
        if !plain {
            b.slice(stage_in, total - part, part);
        }
        let block_out = round(self.out_channels as f32 * self.block_ratio).max(1);
        let first_stride = match self.downsample {
            Downsample::FirstBlock { stride } if self.block.is_residual() => stride,
            _ => 1,
        };
        for j in 0..self.depth {
            let stride = if j == 0 { first_stride } else { 1 };
            self.block(b, &format!("{prefix}.blocks.{j}"), block_out, stride);
        }
        let pool_stride = match self.downsample {
            Downsample::MaxPool { stride, at } if stride > 1 => Some((stride, at)),
            _ => None,
        };
        let pool_at = |at: PoolAt| pool_stride.filter(|&(_, a)| a == at).map(|(s, _)| s);
        let early_pool = pool_at(PoolAt::BeforeTransitions);
        let fusion_pool = early_pool.or(pool_at(PoolAt::BeforeFusionTransition));
        let late_pool = pool_at(PoolAt::AfterTransition);
        let pool = |b: &mut NetworkBuilder, s: Option<usize>, n: &str| {
            if let Some(s) = s {
                max_pool(b, s, &name(n));
            }
        };
        let Some(cross) = cross else {
            pool(b, fusion_pool, "pool");
            // Plain stage: a transition where asked for or where the blocks do not give the width.
            if self.plain_transition || b.out_channels() != self.out_channels {
                b.conv(&name("conv_transition"), self.out_channels, 1, 1, 1, act);
            }
            pool(b, late_pool, "pool");
            return b.last();
        };
        let cross_ch = b.channels(cross);
        // The cross path, pooled where the transitions run at the lower resolution.
        let cross_at = |b: &mut NetworkBuilder| match early_pool {
            Some(s) => {
                b.push(Op::Route { layers: vec![cross], groups: 1, group_id: 0 }, "");
                max_pool(b, s, &name("cross_pool"))
            }
            None => cross,
        };
        match self.fusion {
            Fusion::First => {
                let blocks = b.last();
                b.concat(&[cross, blocks]);
                pool(b, fusion_pool, "pool");
                b.conv(&name("conv_transition"), self.out_channels, 1, 1, 1, act);
                pool(b, late_pool, "pool");
            }
            Fusion::Last => {
                pool(b, early_pool, "pool");
                let width = self.out_channels.saturating_sub(cross_ch).max(1);
                let t = b.conv(&name("conv_transition_b"), width, 1, 1, 1, act);
                let c = cross_at(b);
                b.concat(&[c, t]);
                // No transition follows the concatenation: any later pool closes the stage.
                if early_pool.is_none() {
                    pool(b, fusion_pool.or(late_pool), "pool");
                }
            }
            Fusion::Both => {
                pool(b, early_pool, "pool");
                let width = round(b.out_channels() as f32 * self.transition_ratio).max(1);
                let t = b.conv(&name("conv_transition_b"), width, 1, 1, 1, act);
                let c = cross_at(b);
                b.concat(&[c, t]);
                if early_pool.is_none() {
                    pool(b, fusion_pool, "pool");
                }
                b.conv(&name("conv_transition"), self.out_channels, 1, 1, 1, act);
                pool(b, late_pool, "pool");
            }
        }
        b.last()
    }

    fn block(&self, b: &mut NetworkBuilder, p: &str, block_out: usize, stride: usize) {
        let act = self.activation;
        let name = |n: &str| format!("{p}.{n}");
        // A strided residual block adds its input subsampled, as darknet's shortcut does between
        // maps of different sizes: a 1x1 max pool picks every stride-th pixel.
        let input = b.last();
        let shortcut_from = if stride > 1 {
            let s = b.push(Op::MaxPool { size: 1, stride, padding: 0 }, name("subsample"));
            b.push(Op::Route { layers: vec![input], groups: 1, group_id: 0 }, "");
            s
        } else {
            input
        };
        match self.block {
            BlockType::Bottleneck => {
                let mid = round(block_out as f32 * self.bottle_ratio);
                b.conv(&name("conv1"), mid, 1, 1, 1, act);
                b.conv(&name("conv2"), mid, 3, stride, self.groups, act);
                b.conv(&name("conv3"), block_out, 1, 1, 1, Activation::Linear);
                b.push(Op::Shortcut { from: shortcut_from, activation: act }, p.to_string());
            }
            BlockType::Dark => {
                let mid = round(block_out as f32 * self.bottle_ratio);
                b.conv(&name("conv1"), mid, 1, 1, 1, act);
                b.conv(&name("conv2"), block_out, 3, stride, self.groups, act);
                b.push(Op::Shortcut { from: shortcut_from, activation: Activation::Linear }, p.to_string());
            }
            BlockType::Basic => {
                let mid = round(block_out as f32 * self.bottle_ratio);
                b.conv(&name("conv1"), mid, 3, stride, self.groups, act);
                b.conv(&name("conv2"), block_out, 3, 1, self.groups, Activation::Linear);
                b.push(Op::Shortcut { from: shortcut_from, activation: act }, p.to_string());
            }
            BlockType::Dense { growth_rate, bottleneck_width, bottleneck_cap } => {
                let inter = bottleneck(b.channels(input), bottleneck_width * growth_rate, bottleneck_cap);
                b.conv(&name("conv1"), inter, 1, 1, 1, act);
                let y = b.conv(&name("conv2"), growth_rate, 3, 1, 1, act);
                b.concat(&[input, y]);
            }
            BlockType::TwoWayDense { growth_rate, bottleneck_width, bottleneck_cap } => {
                let half = (growth_rate / 2).max(1);
                let inter = bottleneck(b.channels(input), bottleneck_width * half, bottleneck_cap);
                b.conv(&name("branch1a"), inter, 1, 1, 1, act);
                let y1 = b.conv(&name("branch1b"), half, 3, 1, 1, act);
                b.push(Op::Route { layers: vec![input], groups: 1, group_id: 0 }, "");
                b.conv(&name("branch2a"), inter, 1, 1, 1, act);
                b.conv(&name("branch2b"), half, 3, 1, 1, act);
                let y2 = b.conv(&name("branch2c"), half, 3, 1, 1, act);
                b.concat(&[input, y1, y2]);
            }
            BlockType::ElasticDense { growth_rate, bottleneck_width, low_res_branch } => {
                let inter = (bottleneck_width * growth_rate / 2).max(1);
                b.conv(&name("conv1"), inter, 1, 1, 1, act);
                let high = b.conv(&name("conv2"), growth_rate, 3, 1, 1, act);
                b.push(Op::Route { layers: vec![input], groups: 1, group_id: 0 }, "");
                if low_res_branch {
                    max_pool(b, 2, &name("pool_d"));
                }
                b.conv(&name("conv1_d"), inter, 1, 1, 1, act);
                b.conv(&name("conv2_d"), growth_rate, 3, 1, 1, act);
                if low_res_branch {
                    b.push(Op::Upsample { stride: 2 }, name("upsample_d"));
                }
                let y = b.push(Op::Shortcut { from: high, activation: Activation::Linear }, p.to_string());
                b.concat(&[input, y]);
            }
        }
    }
}

/// Darknet max pool of window and stride `stride`, with darknet's default padding `stride - 1`
/// (the output is ceil(size / stride), like a stride-`stride` 3x3 conv's).
pub(crate) fn max_pool(b: &mut NetworkBuilder, stride: usize, origin: &str) -> usize {
    b.push(Op::MaxPool { size: stride, stride, padding: stride - 1 }, origin.to_string())
}

/// A 1x1 classifier conv with bias and no batch norm (darknet's classifier layer).
pub(crate) fn classifier_conv(b: &mut NetworkBuilder, name: &str, classes: usize) -> usize {
    let spec = ConvSpec::new(name, b.out_channels(), classes, 1, 1).no_bn();
    b.push(Op::Conv(spec), name.to_string())
}

/// Bottleneck width of a dense layer reading `input` channels: `wanted`, rounded down to a
/// multiple of 4 and, with PeleeNet's cap, never above half the input.
fn bottleneck(input: usize, wanted: usize, cap: bool) -> usize {
    let width = if cap { (wanted / 4) * 4 } else { wanted };
    let width = if cap && width > input / 2 { (input / 8) * 4 } else { width };
    width.max(1)
}

pub(crate) fn round(x: f32) -> usize {
    x.round() as usize
}

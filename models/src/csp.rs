//! The Cross Stage Partial stage (paper section 3.1), generic over its block type.
//!
//! A stage optionally down-samples, optionally expands with a 1x1 conv, then splits its channels:
//! a share `partial_ratio` (the paper's gamma) goes through the blocks, the rest crosses the stage
//! untouched. The two parts are merged according to `fusion`. With `partial_ratio = 1` there is no
//! cross path: the plain baseline stage of the same family.

use serde::{Deserialize, Serialize};

use crate::layers::Activation;
use crate::network::{NetworkBuilder, Op};

/// How the block path and the cross path are merged (paper figure 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// Concatenate, then one transition (the gradients of both paths are reused).
    First,
    /// Transition on the block path, then concatenate (gradient flow truncated: the paper's pick).
    Last,
    /// Transition, concatenate, transition (CSPDenseNet, and timm's CSP models).
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BlockType {
    /// ResNet bottleneck: 1x1, 3x3 (grouped for ResNeXt), 1x1 without activation, add, activation.
    Bottleneck,
    /// Darknet residual: 1x1, 3x3, add without activation.
    Dark,
    /// DenseNet layer: 1x1 to `bottleneck_width * growth_rate`, 3x3 to `growth_rate`, concatenated
    /// onto its input.
    Dense { growth_rate: usize, bottleneck_width: usize },
    /// PeleeNet two-way dense layer: a 1x1 -> 3x3 branch and a 1x1 -> 3x3 -> 3x3 branch, each of
    /// `growth_rate / 2` channels, concatenated onto the input.
    TwoWayDense { growth_rate: usize, bottleneck_width: usize },
}

/// One stage, in the paper's terms. Channel widths are derived from the ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CspStageConfig {
    pub depth: usize,
    /// Output channels of the stage (for dense blocks without a final transition, the
    /// transition's width; see `fusion`).
    pub out_channels: usize,
    /// Stride of the 3x3 `conv_down` that opens the stage; 1 means no down-sampling conv.
    pub stride: usize,
    /// `conv_down` widens straight to `out_channels` (CSPDarknet) instead of keeping the input width.
    pub down_growth: bool,
    /// Width of the 1x1 `conv_exp` relative to `out_channels`; `None` splits the stage input as it is.
    pub expand_ratio: Option<f32>,
    /// Bottleneck width inside residual blocks relative to their output.
    pub bottle_ratio: f32,
    /// Block output width relative to `out_channels` (residual blocks).
    pub block_ratio: f32,
    /// gamma: the share of channels that goes through the blocks.
    pub partial_ratio: f32,
    pub fusion: Fusion,
    pub block: BlockType,
    /// Groups of the 3x3 convolutions (32 for ResNeXt).
    pub groups: usize,
    /// No activation after `conv_exp` (timm's `cross_linear`).
    pub cross_linear: bool,
    pub activation: Activation,
}

impl CspStageConfig {
    /// Emits the stage into `b` under key prefix `prefix`; returns the index of its output.
    /// Key names follow timm: `conv_down`, `conv_exp`, `blocks.{j}.conv{1,2,3}`,
    /// `conv_transition_b`, `conv_transition`.
    pub fn build(&self, b: &mut NetworkBuilder, prefix: &str) -> usize {
        let act = self.activation;
        let name = |n: &str| format!("{prefix}.{n}");
        let in_ch = b.out_channels();
        if self.stride > 1 {
            let down = if self.down_growth { self.out_channels } else { in_ch };
            b.conv(&name("conv_down"), down, 3, self.stride, self.groups, act);
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
        let plain = self.partial_ratio >= 1.0;
        let part = if plain { total } else { round(total as f32 * self.partial_ratio).clamp(1, total - 1) };
        // Cross path first, block path second, as timm orders them.
        let cross = if plain { None } else { Some(b.slice(stage_in, 0, total - part)) };
        if !plain {
            b.slice(stage_in, total - part, part);
        }
        let block_out = round(self.out_channels as f32 * self.block_ratio);
        for j in 0..self.depth {
            self.block(b, &format!("{prefix}.blocks.{j}"), block_out);
        }
        let Some(cross) = cross else {
            // Plain stage: a transition only where the blocks do not give the stage width.
            if b.out_channels() != self.out_channels {
                b.conv(&name("conv_transition"), self.out_channels, 1, 1, 1, act);
            }
            return b.last();
        };
        let cross_ch = b.channels(cross);
        match self.fusion {
            Fusion::First => {
                let blocks = b.last();
                b.concat(&[cross, blocks]);
                b.conv(&name("conv_transition"), self.out_channels, 1, 1, 1, act)
            }
            Fusion::Last => {
                let width = self.out_channels.saturating_sub(cross_ch).max(1);
                let t = b.conv(&name("conv_transition_b"), width, 1, 1, 1, act);
                b.concat(&[cross, t])
            }
            Fusion::Both => {
                // The block path keeps its width through its transition.
                let t = b.conv(&name("conv_transition_b"), b.out_channels(), 1, 1, 1, act);
                b.concat(&[cross, t]);
                b.conv(&name("conv_transition"), self.out_channels, 1, 1, 1, act)
            }
        }
    }

    fn block(&self, b: &mut NetworkBuilder, p: &str, block_out: usize) {
        let act = self.activation;
        let input = b.last();
        let name = |n: &str| format!("{p}.{n}");
        match self.block {
            BlockType::Bottleneck => {
                let mid = round(block_out as f32 * self.bottle_ratio);
                b.conv(&name("conv1"), mid, 1, 1, 1, act);
                b.conv(&name("conv2"), mid, 3, 1, self.groups, act);
                b.conv(&name("conv3"), block_out, 1, 1, 1, Activation::Linear);
                b.push(Op::Shortcut { from: input, activation: act }, p.to_string());
            }
            BlockType::Dark => {
                let mid = round(block_out as f32 * self.bottle_ratio);
                b.conv(&name("conv1"), mid, 1, 1, 1, act);
                b.conv(&name("conv2"), block_out, 3, 1, self.groups, act);
                b.push(Op::Shortcut { from: input, activation: Activation::Linear }, p.to_string());
            }
            BlockType::Dense { growth_rate, bottleneck_width } => {
                b.conv(&name("conv1"), bottleneck_width * growth_rate, 1, 1, 1, act);
                let y = b.conv(&name("conv2"), growth_rate, 3, 1, self.groups, act);
                b.concat(&[input, y]);
            }
            BlockType::TwoWayDense { growth_rate, bottleneck_width } => {
                let half = growth_rate / 2;
                let inter = bottleneck_width * half;
                b.conv(&name("branch1a"), inter, 1, 1, 1, act);
                let y1 = b.conv(&name("branch1b"), half, 3, 1, 1, act);
                b.push(Op::Route { layers: vec![input], groups: 1, group_id: 0 }, "");
                b.conv(&name("branch2a"), inter, 1, 1, 1, act);
                b.conv(&name("branch2b"), half, 3, 1, 1, act);
                let y2 = b.conv(&name("branch2c"), half, 3, 1, 1, act);
                b.concat(&[input, y1, y2]);
            }
        }
    }
}

pub(crate) fn round(x: f32) -> usize {
    x.round() as usize
}

//! Necks: the layers between a backbone and its YOLO heads that build the feature pyramid.
//!
//! - [`efm`]: the paper's Exact Fusion Model and its ablation partners (GFM, FPN), one config
//!   switch apart, with optional SAM;
//! - [`prn`]: YOLOv3-tiny-style heads with partial residual connections (the CPU models);
//! - [`panet`]: SPP + PANet as in the official CSPResNeXt50 / CSPDarknet53 detector cfgs.
//!
//! Naming convention (what [`crate::flops`] uses to measure pyramid memory): layers that build the
//! pyramid have an origin under `neck.`, the per-head layers (3x3 conv, SAM, prediction conv,
//! yolo layer) one under `head.p<stride>.`. Parameter names follow the origins.

pub mod efm;
pub mod panet;
pub mod prn;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{Activation, ConvSpec};
use crate::network::{NetworkBuilder, Op, YoloSpec};

/// Activation of every neck and head conv: darknet's leaky ReLU (0.1), as the detector cfgs.
pub const ACTIVATION: Activation = Activation::DARKNET_LEAKY;

/// YOLOv3's nine COCO anchors (width, height in input pixels), small to large.
pub const YOLOV3_ANCHORS: [[f32; 2]; 9] = [
    [10.0, 13.0],
    [16.0, 30.0],
    [33.0, 23.0],
    [30.0, 61.0],
    [62.0, 45.0],
    [59.0, 119.0],
    [116.0, 90.0],
    [156.0, 198.0],
    [373.0, 326.0],
];

/// YOLOv3-tiny's six COCO anchors, small to large.
pub const YOLOV3_TINY_ANCHORS: [[f32; 2]; 6] =
    [[10.0, 14.0], [23.0, 27.0], [37.0, 58.0], [81.0, 82.0], [135.0, 169.0], [344.0, 319.0]];

/// A backbone output a neck reads: its layer index and its stride relative to the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub stride: usize,
    pub layer: usize,
}

/// The backbone feature at `stride`.
pub fn feature(features: &[Feature], stride: usize) -> Result<Feature> {
    features.iter().copied().find(|f| f.stride == stride).ok_or_else(|| {
        let have: Vec<usize> = features.iter().map(|f| f.stride).collect();
        Error::graph(format!("the backbone has no stride-{stride} feature map (it has strides {have:?})"))
    })
}

/// One output scale: its stride and the anchors (indices into [`YoloHeads::anchors`]) it predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadScale {
    pub stride: usize,
    pub mask: Vec<usize>,
}

/// The detection heads of a detector: anchors, which scale predicts which, class count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct YoloHeads {
    pub anchors: Vec<[f32; 2]>,
    pub scales: Vec<HeadScale>,
    pub classes: usize,
    /// Darknet's `scale_x_y` (1 = plain YOLOv3 decoding).
    pub scale_x_y: f32,
}

impl YoloHeads {
    /// Three scales (strides 8, 16, 32) with YOLOv3's anchors and masks 0-2, 3-5, 6-8.
    pub fn yolov3(classes: usize) -> Self {
        let scales = [8, 16, 32]
            .iter()
            .enumerate()
            .map(|(i, &stride)| HeadScale { stride, mask: vec![3 * i, 3 * i + 1, 3 * i + 2] })
            .collect();
        YoloHeads { anchors: YOLOV3_ANCHORS.to_vec(), scales, classes, scale_x_y: 1.0 }
    }

    /// Two scales (strides 16, 32) with YOLOv3-tiny's anchors and masks 0-2, 3-5.
    pub fn yolov3_tiny(classes: usize) -> Self {
        let scales = vec![HeadScale { stride: 16, mask: vec![0, 1, 2] }, HeadScale { stride: 32, mask: vec![3, 4, 5] }];
        YoloHeads { anchors: YOLOV3_TINY_ANCHORS.to_vec(), scales, classes, scale_x_y: 1.0 }
    }

    /// Head strides, fine to coarse.
    pub fn strides(&self) -> Vec<usize> {
        let mut s: Vec<usize> = self.scales.iter().map(|h| h.stride).collect();
        s.sort_unstable();
        s
    }

    fn scale(&self, stride: usize) -> Result<&HeadScale> {
        self.scales
            .iter()
            .find(|h| h.stride == stride)
            .ok_or_else(|| Error::graph(format!("no head at stride {stride}")))
    }

    /// Checks what [`crate::network::Network::shapes`] cannot see early: masks within the
    /// anchors, at least one scale, distinct strides.
    pub fn validate(&self) -> Result<()> {
        if self.scales.is_empty() || self.classes == 0 {
            return Err(Error::graph("a detector needs at least one head scale and one class"));
        }
        let strides = self.strides();
        if strides.windows(2).any(|w| w[0] == w[1]) || strides.contains(&0) {
            return Err(Error::graph(format!("head strides must be distinct and positive, got {strides:?}")));
        }
        for h in &self.scales {
            if h.mask.is_empty() || h.mask.iter().any(|&m| m >= self.anchors.len()) {
                return Err(Error::graph(format!(
                    "stride-{} head: mask {:?} must name some of the {} anchors",
                    h.stride,
                    h.mask,
                    self.anchors.len()
                )));
            }
        }
        Ok(())
    }

    /// The prediction conv (1x1 to anchors x (5 + classes), linear, with bias, no batch norm)
    /// on the last output, then the yolo layer. Returns the yolo layer's index.
    pub fn predict(&self, b: &mut NetworkBuilder, stride: usize) -> Result<usize> {
        let head = self.scale(stride)?;
        let spec = YoloSpec {
            mask: head.mask.clone(),
            anchors: self.anchors.clone(),
            classes: self.classes,
            scale_x_y: self.scale_x_y,
        };
        let name = format!("head.p{stride}.pred");
        let conv = ConvSpec::new(&name, b.out_channels(), spec.channels(), 1, 1).no_bn();
        b.push(Op::Conv(conv), name);
        Ok(b.push(Op::Yolo(spec), format!("head.p{stride}.yolo")))
    }
}

/// How a map is brought to a coarser scale (finer to coarser always goes by nearest upsampling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsampler {
    /// One max pool with window and stride equal to the factor (no parameters).
    MaxPool,
    /// A chain of 3x3 stride-2 conv + BN + leaky, one per factor of two, keeping the width.
    StridedConv,
}

/// Makes `from` (an existing layer, so the builder is not empty) the input of the next layer:
/// nothing when it already is, a one-layer route (a re-read, no new map) otherwise.
pub(crate) fn read(b: &mut NetworkBuilder, from: usize, origin: &str) {
    if b.last() != from {
        b.push(Op::Route { layers: vec![from], groups: 1, group_id: 0 }, origin.to_string());
    }
}

/// Brings `from` (a map at `from_stride`) to `to_stride`; returns the resampled layer (`from`
/// itself when the strides agree). Layers are named `<name>.up`, `<name>.pool`, `<name>.down<k>`.
pub(crate) fn resample(
    b: &mut NetworkBuilder,
    from: usize,
    from_stride: usize,
    to_stride: usize,
    down: Downsampler,
    name: &str,
) -> Result<usize> {
    if from_stride == to_stride {
        return Ok(from);
    }
    let (lo, hi) = (from_stride.min(to_stride), from_stride.max(to_stride));
    if lo == 0 || !hi.is_multiple_of(lo) {
        return Err(Error::graph(format!("cannot resample stride {from_stride} to stride {to_stride}")));
    }
    let factor = hi / lo;
    read(b, from, &format!("{name}.read"));
    if from_stride > to_stride {
        return Ok(b.push(Op::Upsample { stride: factor }, format!("{name}.up")));
    }
    Ok(match down {
        Downsampler::MaxPool => {
            b.push(Op::MaxPool { size: factor, stride: factor, padding: factor - 1 }, format!("{name}.pool"))
        }
        Downsampler::StridedConv => {
            if !factor.is_power_of_two() {
                return Err(Error::graph(format!("strided convs halve the size: cannot go down by {factor}")));
            }
            let width = b.out_channels();
            for k in 0..factor.trailing_zeros() {
                b.conv(&format!("{name}.down{k}"), width, 3, 2, 1, ACTIVATION);
            }
            b.last()
        }
    })
}

/// A concatenation named `origin` (a plain re-read when there is one input).
pub(crate) fn concat(b: &mut NetworkBuilder, layers: &[usize], origin: &str) -> usize {
    if let [only] = layers {
        read(b, *only, origin);
        return b.last();
    }
    b.push(Op::Route { layers: layers.to_vec(), groups: 1, group_id: 0 }, origin.to_string())
}

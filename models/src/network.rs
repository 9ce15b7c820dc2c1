//! The network description every model compiles to: a list of layers in darknet's style, each
//! reading the previous layer's output unless it names others by index. timm models, native
//! paper models and darknet `.cfg` files all become a [`Network`], so execution, accounting and
//! weight files are written once. A `Network` is plain data (serde): our safetensors files carry
//! it in their metadata, which is what makes one file enough to rebuild a model.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{max_pool_out, Activation, ConvSpec};
use crate::preprocess::Preprocess;

/// Largest kernel, stride, padding or pooling window a network may have.
pub const MAX_WINDOW: usize = 1024;
/// Most channels of any layer or input.
pub const MAX_CHANNELS: usize = 1 << 20;
/// Largest input side.
pub const MAX_SIDE: usize = 1 << 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearSpec {
    /// Key prefix: `<name>.weight` [out, in], `<name>.bias` [out].
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
}

/// A darknet `[yolo]` head as plain data. The layer itself passes its input through unchanged;
/// decoding boxes from that map (layout [anchor][x, y, w, h, obj, classes...][H][W]) is the
/// detector's job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct YoloSpec {
    /// Indices into `anchors` of the anchors this head predicts, in channel-block order.
    pub mask: Vec<usize>,
    /// All `num` anchors of the network as (width, height) in input pixels.
    pub anchors: Vec<[f32; 2]>,
    pub classes: usize,
    /// Centre scaling: xy = sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2.
    pub scale_x_y: f32,
}

impl YoloSpec {
    /// Channels the head reads: (x, y, w, h, obj, classes...) per masked anchor.
    pub fn channels(&self) -> usize {
        self.mask.len() * (self.classes + 5)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    Conv(ConvSpec),
    /// Darknet max pooling (see [`crate::layers::max_pool`]).
    MaxPool {
        size: usize,
        stride: usize,
        padding: usize,
    },
    /// Global average pooling to 1x1.
    AvgPool,
    /// Concatenation of earlier outputs along channels; with `groups > 1` each input contributes
    /// its channel slice `[group_id * C / groups, (group_id + 1) * C / groups)`.
    Route {
        layers: Vec<usize>,
        groups: usize,
        group_id: usize,
    },
    /// Channels `[start, start + len)` of layer `from` (uneven CSP splits).
    Slice {
        from: usize,
        start: usize,
        len: usize,
    },
    /// Previous output + output of `from` on the leading channels both have, then `activation`.
    Shortcut {
        from: usize,
        activation: Activation,
    },
    /// Nearest-neighbour upsampling.
    Upsample {
        stride: usize,
    },
    /// Channel max-out: out[g] = max over channels k with k mod out_channels == g.
    Maxout {
        out_channels: usize,
    },
    /// Fully connected layer on a globally pooled map; output [N, out].
    Linear(LinearSpec),
    /// Softmax over channels. `forward` stops before a trailing softmax (it returns logits).
    Softmax,
    /// Detection head: identity on the map (see [`YoloSpec`]).
    Yolo(YoloSpec),
    /// Spatial attention (darknet `[sam]`): previous output * output of `from`, elementwise. The
    /// gate's sigmoid is the activation of the conv that produced it.
    Sam {
        from: usize,
    },
    /// Channel attention (darknet `[scale_channels]`): output of `from` scaled per channel by the
    /// previous output, which is [C, 1, 1].
    ScaleChannels {
        from: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub op: Op,
    /// Where the layer came from (cfg line or builder path), for error messages and summaries.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Architecture name (`cspresnet50`, or the cfg file name).
    pub arch: String,
    pub input_channels: usize,
    /// Default input (height, width), the size the model was trained for.
    pub input_size: (usize, usize),
    pub num_classes: usize,
    pub preprocess: Preprocess,
    pub layers: Vec<Layer>,
}

/// Output shape of a layer for one image: channels, height, width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn elems(&self) -> usize {
        self.c * self.h * self.w
    }
}

impl Op {
    /// Earlier layers this op reads besides (or instead of) the previous one.
    pub fn references(&self) -> Vec<usize> {
        match self {
            Op::Route { layers, .. } => layers.clone(),
            Op::Slice { from, .. } | Op::Shortcut { from, .. } | Op::Sam { from } | Op::ScaleChannels { from } => {
                vec![*from]
            }
            _ => vec![],
        }
    }
    /// Whether the op reads the previous layer's output.
    pub fn reads_previous(&self) -> bool {
        !matches!(self, Op::Route { .. } | Op::Slice { .. })
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::MaxPool { .. } => "maxpool",
            Op::AvgPool => "avgpool",
            Op::Route { .. } => "route",
            Op::Slice { .. } => "slice",
            Op::Shortcut { .. } => "shortcut",
            Op::Upsample { .. } => "upsample",
            Op::Maxout { .. } => "maxout",
            Op::Linear(_) => "linear",
            Op::Softmax => "softmax",
            Op::Yolo(_) => "yolo",
            Op::Sam { .. } => "sam",
            Op::ScaleChannels { .. } => "scale_channels",
        }
    }
}

impl Network {
    /// Output shapes of every layer for an input of `h` x `w`, checking that the graph is
    /// consistent (channel counts, references to earlier layers only, equal spatial sizes).
    pub fn shapes(&self, h: usize, w: usize) -> Result<Vec<Shape>> {
        if h > MAX_SIDE || w > MAX_SIDE || self.input_channels > MAX_CHANNELS {
            return Err(Error::graph(format!(
                "input {}x{h}x{w} out of range (sides at most {MAX_SIDE}, channels {MAX_CHANNELS})",
                self.input_channels
            )));
        }
        let mut out: Vec<Shape> = Vec::with_capacity(self.layers.len());
        let input = Shape { c: self.input_channels, h, w };
        for (i, layer) in self.layers.iter().enumerate() {
            let err = |msg: String| Error::graph(format!("layer {i} ({}{}): {msg}", layer.op.kind(), origin(layer)));
            let prev = if i == 0 { input } else { out[i - 1] };
            for &r in &layer.op.references() {
                if r >= i {
                    return Err(err(format!("refers to layer {r}, which is not before it")));
                }
            }
            let s = match &layer.op {
                Op::Conv(c) => {
                    // Bounds that keep every size and cost below u64 (found by fuzzing a cfg with
                    // size=42949672961).
                    if [c.kernel, c.stride, c.padding].iter().any(|&k| k > MAX_WINDOW)
                        || c.in_channels > MAX_CHANNELS
                        || c.out_channels > MAX_CHANNELS
                    {
                        return Err(err(format!(
                            "kernel {}, stride {}, padding {} or channels {} -> {} out of range (at most {MAX_WINDOW} \
                             and {MAX_CHANNELS})",
                            c.kernel, c.stride, c.padding, c.in_channels, c.out_channels
                        )));
                    }
                    if prev.c != c.in_channels {
                        return Err(err(format!("expects {} input channels, gets {}", c.in_channels, prev.c)));
                    }
                    if c.groups == 0
                        || !c.in_channels.is_multiple_of(c.groups)
                        || !c.out_channels.is_multiple_of(c.groups)
                    {
                        return Err(err(format!(
                            "groups {} do not divide {} -> {}",
                            c.groups, c.in_channels, c.out_channels
                        )));
                    }
                    if prev.h + 2 * c.padding < c.kernel || prev.w + 2 * c.padding < c.kernel || c.stride == 0 {
                        return Err(err(format!("input {}x{} is too small", prev.h, prev.w)));
                    }
                    let (h, w) = c.out_size(prev.h, prev.w);
                    Shape { c: c.out_channels, h, w }
                }
                Op::MaxPool { size, stride, padding } => {
                    if *stride == 0 || *size == 0 {
                        return Err(err("size and stride must be positive".into()));
                    }
                    if [*size, *stride, *padding].iter().any(|&k| k > MAX_WINDOW) {
                        return Err(err(format!("size, stride or padding above {MAX_WINDOW}")));
                    }
                    let h = max_pool_out(prev.h, *size, *stride, *padding);
                    let w = max_pool_out(prev.w, *size, *stride, *padding);
                    Shape { c: prev.c, h, w }
                }
                Op::AvgPool => Shape { c: prev.c, h: 1, w: 1 },
                Op::Route { layers, groups, group_id } => {
                    if layers.is_empty() || *groups == 0 || group_id >= groups {
                        return Err(err("needs at least one layer and group_id < groups".into()));
                    }
                    let first = out[layers[0]];
                    let mut c = 0;
                    for &l in layers {
                        let s = out[l];
                        if (s.h, s.w) != (first.h, first.w) {
                            return Err(err(format!(
                                "layer {l} is {}x{}, layer {} is {}x{}",
                                s.h, s.w, layers[0], first.h, first.w
                            )));
                        }
                        if !s.c.is_multiple_of(*groups) {
                            return Err(err(format!(
                                "{} channels of layer {l} do not split into {groups} groups",
                                s.c
                            )));
                        }
                        c += s.c / groups;
                    }
                    Shape { c, h: first.h, w: first.w }
                }
                Op::Slice { from, start, len } => {
                    let s = out[*from];
                    if start + len > s.c || *len == 0 {
                        return Err(err(format!("channels {start}..{} of a {}-channel map", start + len, s.c)));
                    }
                    Shape { c: *len, ..s }
                }
                Op::Shortcut { from, .. } => {
                    let s = out[*from];
                    // Darknet also adds a larger map, read every `stride` pixels where stride is the
                    // integer size ratio (the strided residual blocks of resnet10.cfg).
                    let stride = s.w / prev.w.max(1);
                    if s.h < prev.h || s.w < prev.w || s.h / prev.h.max(1) != stride {
                        return Err(err(format!("adds a {}x{} map to a {}x{} one", s.h, s.w, prev.h, prev.w)));
                    }
                    prev
                }
                Op::Upsample { stride } => Shape { c: prev.c, h: prev.h * stride, w: prev.w * stride },
                Op::Maxout { out_channels } => {
                    if *out_channels == 0 || !prev.c.is_multiple_of(*out_channels) {
                        return Err(err(format!("{} channels do not max-out to {out_channels}", prev.c)));
                    }
                    Shape { c: *out_channels, ..prev }
                }
                Op::Linear(l) => {
                    if prev.elems() != l.in_features {
                        return Err(err(format!("expects {} features, gets {}", l.in_features, prev.elems())));
                    }
                    Shape { c: l.out_features, h: 1, w: 1 }
                }
                Op::Softmax => prev,
                Op::Yolo(y) => {
                    if prev.c != y.channels() {
                        return Err(err(format!(
                            "expects {} channels ({} anchors x ({} classes + 5)), gets {}",
                            y.channels(),
                            y.mask.len(),
                            y.classes,
                            prev.c
                        )));
                    }
                    if let Some(&m) = y.mask.iter().find(|&&m| m >= y.anchors.len()) {
                        return Err(err(format!("mask {m} names a missing anchor (there are {})", y.anchors.len())));
                    }
                    prev
                }
                Op::Sam { from } => {
                    if out[*from] != prev {
                        return Err(err(format!("gates a {:?} map with a {:?} one", out[*from], prev)));
                    }
                    prev
                }
                Op::ScaleChannels { from } => {
                    let s = out[*from];
                    if (prev.h, prev.w) != (1, 1) || prev.c != s.c {
                        return Err(err(format!("scales {} channels by a {}x{}x{} map", s.c, prev.c, prev.h, prev.w)));
                    }
                    s
                }
            };
            out.push(s);
        }
        Ok(out)
    }

    /// Index of the layer whose output `forward` returns: the last one, or the one before a
    /// trailing softmax (so classifiers return logits).
    pub fn output_layer(&self) -> usize {
        let n = self.layers.len();
        if n > 1 && matches!(self.layers[n - 1].op, Op::Softmax) {
            n - 2
        } else {
            n - 1
        }
    }

    pub fn convs(&self) -> impl Iterator<Item = &ConvSpec> {
        self.layers.iter().filter_map(|l| match &l.op {
            Op::Conv(c) => Some(c),
            _ => None,
        })
    }
}

fn origin(layer: &Layer) -> String {
    if layer.origin.is_empty() {
        String::new()
    } else {
        format!(", {}", layer.origin)
    }
}

/// Appends layers and hands back their indices, so model builders read like the paper's diagrams.
#[derive(Debug)]
pub struct NetworkBuilder {
    layers: Vec<Layer>,
    channels: Vec<usize>,
    input_channels: usize,
}

impl NetworkBuilder {
    pub fn new(input_channels: usize) -> Self {
        NetworkBuilder { layers: vec![], channels: vec![], input_channels }
    }
    /// Index of the last layer added.
    pub fn last(&self) -> usize {
        self.layers.len() - 1
    }
    /// Channels of layer `i`'s output.
    pub fn channels(&self, i: usize) -> usize {
        self.channels[i]
    }
    /// Channels of the last output (the network input's when empty).
    pub fn out_channels(&self) -> usize {
        self.channels.last().copied().unwrap_or(self.input_channels)
    }
    pub fn push(&mut self, op: Op, origin: impl Into<String>) -> usize {
        let prev = self.out_channels();
        let c = match &op {
            Op::Conv(c) => c.out_channels,
            Op::Route { layers, groups, .. } => layers.iter().map(|&l| self.channels[l] / groups).sum(),
            Op::Slice { len, .. } => *len,
            Op::Maxout { out_channels } => *out_channels,
            Op::Linear(l) => l.out_features,
            _ => prev,
        };
        self.layers.push(Layer { op, origin: origin.into() });
        self.channels.push(c);
        self.last()
    }
    /// Conv + BN + activation named `name`, reading the previous output.
    pub fn conv(&mut self, name: &str, cout: usize, k: usize, stride: usize, groups: usize, act: Activation) -> usize {
        let spec = ConvSpec::new(name, self.out_channels(), cout, k, stride).groups(groups).act(act);
        self.push(Op::Conv(spec), name.to_string())
    }
    pub fn concat(&mut self, layers: &[usize]) -> usize {
        self.push(Op::Route { layers: layers.to_vec(), groups: 1, group_id: 0 }, "")
    }
    pub fn slice(&mut self, from: usize, start: usize, len: usize) -> usize {
        self.push(Op::Slice { from, start, len }, "")
    }
    pub fn finish(self, arch: &str, input_size: (usize, usize), num_classes: usize, preprocess: Preprocess) -> Network {
        Network {
            arch: arch.to_string(),
            input_channels: self.input_channels,
            input_size,
            num_classes,
            preprocess,
            layers: self.layers,
        }
    }
}

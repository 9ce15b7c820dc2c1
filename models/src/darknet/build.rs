//! Darknet sections -> [`Network`]: one section, one layer, so darknet's layer index `i` is ours
//! and a conv's parameters are named `layers.{i}`.

use super::cfg::{Options, Section};
use crate::error::{Error, Result};
use crate::layers::{Activation, ConvSpec};
use crate::network::{Layer, Network, Op, YoloSpec};
use crate::preprocess::Preprocess;

/// Settings that only affect training; accepted anywhere and ignored.
const TRAINING: &[&str] = &["stopbackward", "train_only_bn", "dont_update", "burnin_update"];

/// `[yolo]` settings of the loss, NMS and tracking: nothing the forward pass or box decoding uses.
const YOLO_TRAINING: &[&str] = &[
    "jitter",
    "ignore_thresh",
    "truth_thresh",
    "random",
    "iou_thresh",
    "iou_loss",
    "iou_normalizer",
    "cls_normalizer",
    "obj_normalizer",
    "uc_normalizer",
    "delta_normalizer",
    "nms_kind",
    "beta_nms",
    "beta1",
    "max_delta",
    "counters_per_class",
    "label_smooth_eps",
    "objectness_smooth",
    "resize",
    "focal_loss",
    "max",
    "show_details",
    "iou_thresh_kind",
    "track_history_size",
    "sim_thresh",
    "dets_for_track",
    "dets_for_show",
    "track_ciou_norm",
];

/// Darknet's `nms_kind` values for `[yolo]` (anything else falls back to `default` there; we refuse it).
const NMS_KINDS: &[&str] = &["default", "greedynms", "diounms"];

/// The parameter prefix of darknet layer `i`.
pub fn layer_name(i: usize) -> String {
    format!("layers.{i}")
}

struct Builder<'a> {
    path: &'a str,
    layers: Vec<Layer>,
    /// Output channels of each layer so far.
    channels: Vec<usize>,
    input_channels: usize,
}

pub fn build_network(sections: &[Section], path: &str, arch: &str) -> Result<Network> {
    let Some((net, body)) = sections.split_first() else {
        return Err(Error::Cfg { path: path.to_string(), line: 1, msg: "no sections: expected [net] first".into() });
    };
    if net.name != "net" && net.name != "network" {
        return Err(Error::Cfg {
            path: path.to_string(),
            line: net.line,
            msg: format!("the first section must be [net], found [{}]", net.name),
        });
    }
    let net_opts = Options::new(net, path);
    // [net] carries mostly training settings (batch, augmentation, schedule): read what inference needs.
    let width = net_opts.parse_or::<usize>("width", 0)?;
    let height = net_opts.parse_or::<usize>("height", 0)?;
    if width == 0 || height == 0 {
        return Err(net_opts.error("needs a positive `width` and `height`"));
    }
    let input_channels = net_opts.positive_or("channels", 3)?;
    if body.is_empty() {
        return Err(net_opts.error("the cfg has no layers after [net]"));
    }

    let mut b = Builder { path, layers: vec![], channels: vec![], input_channels };
    let mut yolo_classes: Option<usize> = None;
    for section in body {
        let opts = Options::new(section, path);
        let op = b.op(&opts)?;
        if let Op::Yolo(y) = &op {
            match yolo_classes {
                Some(c) if c != y.classes => {
                    return Err(opts.error(format!("classes={} differs from an earlier [yolo] ({c})", y.classes)))
                }
                _ => yolo_classes = Some(y.classes),
            }
        }
        b.push(op, section.line);
    }

    let (num_classes, preprocess) = match yolo_classes {
        Some(c) => (c, Preprocess::DARKNET_DETECTOR),
        None => {
            let last_conv = b.layers.iter().rev().find_map(|l| match &l.op {
                Op::Conv(c) => Some(c.out_channels),
                _ => None,
            });
            (last_conv.unwrap_or(*b.channels.last().unwrap_or(&0)), Preprocess::DARKNET_CLASSIFIER)
        }
    };
    let network = Network {
        arch: arch.to_string(),
        input_channels,
        input_size: (height, width),
        num_classes,
        preprocess,
        layers: b.layers,
    };
    check_shapes(&network, body, path)?;
    Ok(network)
}

/// Runs shape inference at the [net] size; a failure is reported at the line of the first layer
/// that fails.
fn check_shapes(net: &Network, body: &[Section], path: &str) -> Result<()> {
    let (h, w) = net.input_size;
    let Err(e) = net.shapes(h, w) else {
        return Ok(());
    };
    let msg = match e {
        Error::Graph(m) => m,
        other => return Err(other),
    };
    let mut prefix = Network { layers: vec![], ..net.clone() };
    for (layer, section) in net.layers.iter().zip(body) {
        prefix.layers.push(layer.clone());
        if prefix.shapes(h, w).is_err() {
            return Err(Error::Cfg {
                path: path.to_string(),
                line: section.line,
                msg: format!("[{}]: {msg}", section.name),
            });
        }
    }
    Err(Error::Graph(msg))
}

impl Builder<'_> {
    fn index(&self) -> usize {
        self.layers.len()
    }

    fn prev_channels(&self) -> usize {
        self.channels.last().copied().unwrap_or(self.input_channels)
    }

    fn push(&mut self, op: Op, line: usize) {
        let c = match &op {
            Op::Conv(c) => c.out_channels,
            Op::Route { layers, groups, .. } => layers.iter().map(|&l| self.channels[l] / groups).sum(),
            Op::Maxout { out_channels } => *out_channels,
            Op::ScaleChannels { from } => self.channels[*from],
            _ => self.prev_channels(),
        };
        self.layers.push(Layer { op, origin: format!("{}:{line}", self.path) });
        self.channels.push(c);
    }

    fn op(&self, o: &Options) -> Result<Op> {
        match o.section.name.as_str() {
            "convolutional" | "conv" => self.convolutional(o),
            "maxpool" | "max" => self.maxpool(o),
            "avgpool" | "avg" => {
                o.check_keys(&[], TRAINING)?;
                Ok(Op::AvgPool)
            }
            "route" => self.route(o),
            "shortcut" => self.shortcut(o),
            "upsample" => upsample(o),
            "softmax" | "soft" => softmax(o),
            "yolo" => yolo(o),
            "sam" => Ok(Op::Sam { from: self.gate_source(o, &[])? }),
            "scale_channels" => self.scale_channels(o),
            "net" | "network" => Err(o.error("only the first section may be [net]")),
            other => Err(o.error(format!("unsupported section [{other}] (supported: net, convolutional, maxpool, avgpool, route, shortcut, upsample, softmax, yolo, sam, scale_channels)"))),
        }
    }

    fn convolutional(&self, o: &Options) -> Result<Op> {
        o.check_keys(
            &[
                "filters",
                "size",
                "stride",
                "stride_x",
                "stride_y",
                "pad",
                "padding",
                "groups",
                "batch_normalize",
                "activation",
                "dilation",
            ],
            TRAINING,
        )?;
        let filters = o.positive_or("filters", 1)?;
        let size = o.positive_or("size", 1)?;
        let stride = o.positive_or("stride", 1)?;
        for key in ["stride_x", "stride_y"] {
            if o.positive_or(key, stride)? != stride {
                return Err(o.error(format!("`{key}` different from `stride` is not supported")));
            }
        }
        if o.positive_or("dilation", 1)? != 1 {
            return Err(o.error("dilated convolutions are not supported"));
        }
        // pad=1 overrides `padding` with size/2.
        let padding = if o.flag("pad")? { size / 2 } else { o.parse_or::<usize>("padding", 0)? };
        let act_name = o.str_or("activation", "logistic");
        let activation = parse_activation(o, act_name)?;
        let spec = ConvSpec {
            name: layer_name(self.index()),
            in_channels: self.prev_channels(),
            out_channels: filters,
            kernel: size,
            stride,
            padding,
            groups: o.positive_or("groups", 1)?,
            batch_norm: o.flag("batch_normalize")?,
            activation,
        };
        Ok(Op::Conv(spec))
    }

    fn maxpool(&self, o: &Options) -> Result<Op> {
        o.check_keys(
            &["size", "stride", "stride_x", "stride_y", "padding", "maxpool_depth", "out_channels"],
            TRAINING,
        )?;
        if o.flag("maxpool_depth")? {
            // Channel max-out; darknet ignores size and stride here.
            return Ok(Op::Maxout { out_channels: o.positive_or("out_channels", 1)? });
        }
        let stride = o.positive_or("stride", 1)?;
        for key in ["stride_x", "stride_y"] {
            if o.positive_or(key, stride)? != stride {
                return Err(o.error(format!("`{key}` different from `stride` is not supported")));
            }
        }
        let size = o.positive_or("size", stride)?;
        let padding = o.parse_or::<usize>("padding", size - 1)?;
        Ok(Op::MaxPool { size, stride, padding })
    }

    fn route(&self, o: &Options) -> Result<Op> {
        o.check_keys(&["layers", "groups", "group_id"], TRAINING)?;
        let Some(raw) = o.list::<i64>("layers")? else {
            return Err(o.error("missing `layers`"));
        };
        if raw.is_empty() {
            return Err(o.error("`layers` is empty"));
        }
        let entry = o.entry("layers").ok_or_else(|| o.error("missing `layers`"))?;
        let layers = raw
            .iter()
            .map(|&r| self.resolve(r).ok_or_else(|| o.entry_error(entry, self.bad_ref(r))))
            .collect::<Result<Vec<_>>>()?;
        let groups = o.positive_or("groups", 1)?;
        let group_id = o.parse_or::<usize>("group_id", 0)?;
        if group_id >= groups {
            return Err(o.error(format!("group_id={group_id} needs groups > {group_id} (groups={groups})")));
        }
        for &l in &layers {
            if !self.channels[l].is_multiple_of(groups) {
                return Err(o.entry_error(
                    entry,
                    format!("layer {l} has {} channels, not divisible into {groups} groups", self.channels[l]),
                ));
            }
        }
        Ok(Op::Route { layers, groups, group_id })
    }

    fn shortcut(&self, o: &Options) -> Result<Op> {
        o.check_keys(&["from", "activation", "weights_type", "weights_normalization"], TRAINING)?;
        let weights_type = o.str_or("weights_type", "none");
        if weights_type != "none" {
            return Err(o.error(format!("weighted shortcuts (weights_type={weights_type}) are not supported")));
        }
        let Some(from) = o.list::<i64>("from")? else {
            return Err(o.error("missing `from`"));
        };
        let entry = o.entry("from").ok_or_else(|| o.error("missing `from`"))?;
        let [from] = from[..] else {
            return Err(o.entry_error(entry, "exactly one layer is supported"));
        };
        let from = self.resolve(from).ok_or_else(|| o.entry_error(entry, self.bad_ref(from)))?;
        let activation = parse_activation(o, o.str_or("activation", "linear"))?;
        Ok(Op::Shortcut { from, activation })
    }

    fn scale_channels(&self, o: &Options) -> Result<Op> {
        if let Some(e) = o.entry("scale_wh") {
            if o.flag("scale_wh")? {
                return Err(o.entry_error(e, "per-pixel scaling (scale_wh=1) is not supported"));
            }
        }
        Ok(Op::ScaleChannels { from: self.gate_source(o, &["scale_wh"])? })
    }

    /// The `from` layer of `[sam]` and `[scale_channels]`. Both multiply the previous output
    /// with it, then apply `activation` (darknet's default linear, the only one supported).
    fn gate_source(&self, o: &Options, extra_keys: &[&str]) -> Result<usize> {
        let known: Vec<&str> = ["from", "activation"].iter().chain(extra_keys).copied().collect();
        o.check_keys(&known, TRAINING)?;
        if let Some(e) = o.entry("activation").filter(|e| e.value != "linear") {
            return Err(o.entry_error(e, "only activation=linear is supported after the product"));
        }
        let entry = o.entry("from").ok_or_else(|| o.error("missing `from`"))?;
        let Some(from) = o.list::<i64>("from")? else {
            return Err(o.error("missing `from`"));
        };
        let [from] = from[..] else {
            return Err(o.entry_error(entry, "exactly one layer is expected"));
        };
        self.resolve(from).ok_or_else(|| o.entry_error(entry, self.bad_ref(from)))
    }

    /// Darknet indices: negative ones count back from the current layer.
    fn resolve(&self, r: i64) -> Option<usize> {
        let here = self.index() as i64;
        let abs = if r < 0 { here + r } else { r };
        (0..here).contains(&abs).then_some(abs as usize)
    }

    fn bad_ref(&self, r: i64) -> String {
        let i = self.index();
        if r < 0 {
            format!("{r} from layer {i} points before the first layer")
        } else {
            format!("layer {r} does not exist before layer {i}")
        }
    }
}

fn parse_activation(o: &Options, name: &str) -> Result<Activation> {
    Activation::from_darknet(name).ok_or_else(|| match o.entry("activation") {
        Some(e) => o.entry_error(e, "unsupported activation"),
        None => o.error(format!("unsupported activation `{name}`")),
    })
}

fn upsample(o: &Options) -> Result<Op> {
    o.check_keys(&["stride", "scale"], TRAINING)?;
    // Darknet's negative stride downsamples; only upsampling is supported.
    let stride = o.parse_or::<i64>("stride", 2)?;
    if stride < 1 {
        return Err(o.error(format!("stride={stride} is not supported (positive strides only)")));
    }
    if o.parse_or::<f32>("scale", 1.0)? != 1.0 {
        return Err(o.error("`scale` other than 1 is not supported"));
    }
    Ok(Op::Upsample { stride: stride as usize })
}

fn softmax(o: &Options) -> Result<Op> {
    o.check_keys(&["groups", "temperature"], TRAINING)?;
    if o.positive_or("groups", 1)? != 1 {
        return Err(o.error("grouped softmax is not supported"));
    }
    if o.parse_or::<f32>("temperature", 1.0)? != 1.0 {
        return Err(o.error("softmax temperature other than 1 is not supported"));
    }
    Ok(Op::Softmax)
}

fn yolo(o: &Options) -> Result<Op> {
    o.check_keys(&["mask", "anchors", "classes", "num", "scale_x_y", "new_coords"], YOLO_TRAINING)?;
    if let Some(e) = o.entry("new_coords") {
        if o.flag("new_coords")? {
            return Err(o.entry_error(e, "scaled-YOLOv4 box decoding (new_coords=1) is not supported"));
        }
    }
    // Detection-time NMS settings: checked here, chosen at detection time (they are not part of
    // the head's forward pass).
    if let Some(e) = o.entry("nms_kind").filter(|e| !NMS_KINDS.contains(&e.value.as_str())) {
        return Err(o.entry_error(e, format!("unknown NMS kind (expected one of {})", NMS_KINDS.join(", "))));
    }
    for key in ["beta_nms", "iou_thresh", "ignore_thresh", "truth_thresh", "jitter", "max_delta"] {
        o.parse_or::<f32>(key, 0.0)?;
    }
    let num = o.positive_or("num", 1)?;
    let classes = o.parse_or::<usize>("classes", 20)?;
    let mask = o.list::<usize>("mask")?.unwrap_or_else(|| (0..num).collect());
    let Some(flat) = o.list::<f32>("anchors")? else {
        return Err(o.error("missing `anchors`"));
    };
    let entry = o.entry("anchors").ok_or_else(|| o.error("missing `anchors`"))?;
    if flat.len() != 2 * num {
        return Err(o.entry_error(entry, format!("{} values for num={num} anchors (expected {})", flat.len(), 2 * num)));
    }
    if flat.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(o.entry_error(entry, "anchor sizes must be positive"));
    }
    if let Some(&m) = mask.iter().find(|&&m| m >= num) {
        let e = o.entry("mask").unwrap_or(entry);
        return Err(o.entry_error(e, format!("mask {m} is not below num={num}")));
    }
    let scale_x_y = o.parse_or::<f32>("scale_x_y", 1.0)?;
    if !(scale_x_y.is_finite() && scale_x_y > 0.0) {
        return Err(o.error("`scale_x_y` must be positive"));
    }
    let anchors = flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
    Ok(Op::Yolo(YoloSpec { mask, anchors, classes, scale_x_y }))
}

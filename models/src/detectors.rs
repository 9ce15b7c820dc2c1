//! The paper's detectors, built by name: a built-in backbone without its classifier, a neck from
//! [`crate::necks`] and YOLO heads. All take RGB in [0, 1], letterboxed
//! ([`Preprocess::DARKNET_DETECTOR`]), and return one raw map per head
//! ([`crate::Model::forward_heads`]).
//!
//! The backbone keeps its parameter names (`stem.*`, `stages.*`), so a classifier checkpoint's
//! tensors initialise it; the neck's are `neck.*`, the heads' `head.p<stride>.*`. The feature
//! at stride s is the last backbone layer whose output is input / s wide: the deepest map at
//! that resolution (for the PeleeNet family, the stage's concatenation before its pool).

use crate::backbones;
use crate::error::{Error, Result};
use crate::necks::efm::{FusionMode, FusionNeckConfig};
use crate::necks::panet::PanetSppConfig;
use crate::necks::prn::PrnConfig;
use crate::necks::{Feature, YoloHeads};
use crate::network::{Network, NetworkBuilder};
use crate::preprocess::Preprocess;

/// Class count of the detectors when none is given: COCO's 80.
pub const DEFAULT_CLASSES: usize = 80;

/// Whether `name` is a named detector (they are listed in [`crate::backbones::ARCHITECTURES`]),
/// with or without a width suffix ([`backbones::scaled_name`]).
pub fn is_detector(name: &str) -> bool {
    let base = backbones::split_width(name).map_or(name, |(base, _)| base);
    DetectorConfig::by_name(base).is_some()
}

#[derive(Clone, Debug, PartialEq)]
pub enum Neck {
    Fusion(FusionNeckConfig),
    Prn(PrnConfig),
    PanetSpp(PanetSppConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// A built-in classifier name; its classifier head is dropped.
    pub backbone: String,
    pub neck: Neck,
    /// Anchors and scales (the class count is replaced at build time).
    pub heads: YoloHeads,
    /// Square input size the detector is specified (and accounted) at; a multiple of 32.
    pub input_size: usize,
}

impl DetectorConfig {
    fn new(backbone: &str, neck: Neck, heads: YoloHeads, input_size: usize) -> Self {
        DetectorConfig { backbone: backbone.into(), neck, heads, input_size }
    }

    /// The configuration behind a name of [`DETECTORS`].
    pub fn by_name(name: &str) -> Option<Self> {
        let classes = DEFAULT_CLASSES;
        let efm = |backbone: &str, mode: FusionMode| {
            let neck = Neck::Fusion(FusionNeckConfig::efm_sam().with_mode(mode));
            DetectorConfig::new(backbone, neck, YoloHeads::yolov3(classes), 320)
        };
        let prn = |backbone: &str, heads: YoloHeads| {
            DetectorConfig::new(backbone, Neck::Prn(PrnConfig::default()), heads, 416)
        };
        let panet = |backbone: &str| {
            DetectorConfig::new(backbone, Neck::PanetSpp(PanetSppConfig::default()), YoloHeads::yolov3(classes), 416)
        };
        Some(match name {
            "csppeleenet_efm_sam" => efm("csppeleenet", FusionMode::Exact),
            "csppeleenet_efm_sam_gfm" => efm("csppeleenet", FusionMode::Global),
            "csppeleenet_efm_sam_fpn" => efm("csppeleenet", FusionMode::Pyramid),
            "csppeleenet_ref_efm_sam" => efm("csppeleenet_ref", FusionMode::Exact),
            "csppeleenet_ref_efm_sam_gfm" => efm("csppeleenet_ref", FusionMode::Global),
            "csppeleenet_ref_efm_sam_fpn" => efm("csppeleenet_ref", FusionMode::Pyramid),
            "cspdensenetb_ref_prn" => prn("cspdensenetb_ref", YoloHeads::yolov3_tiny(classes)),
            "csppeleenet_ref_prn3l" => prn("csppeleenet_ref", YoloHeads::yolov3(classes)),
            "cspresnext50_panet_spp" => panet("cspresnext50"),
            "cspdarknet53_panet_spp" => panet("cspdarknet53"),
            _ => return None,
        })
    }

    /// The detector with its backbone and neck widths times `width` (see
    /// [`backbones::build_scaled`]); the heads keep their anchors. The PANet detectors sit on
    /// timm-layout backbones, which only build at width 1.
    pub fn scaled(self, width: f64) -> Result<Self> {
        backbones::check_width(width)?;
        if width == 1.0 {
            return Ok(self);
        }
        if backbones::split_width(&self.backbone).is_some() {
            return Err(Error::Input(format!("backbone `{}` is already scaled", self.backbone)));
        }
        let neck = match self.neck {
            Neck::Fusion(n) => Neck::Fusion(n.scaled(width)),
            Neck::Prn(n) => Neck::Prn(n.scaled(width)),
            Neck::PanetSpp(_) => {
                return Err(Error::Input(format!(
                    "SPP + PANet on `{}`: the timm-layout backbones only build at width 1, got {width}",
                    self.backbone
                )))
            }
        };
        Ok(DetectorConfig { backbone: backbones::scaled_name(&self.backbone, width), neck, ..self })
    }

    /// The detector network for `num_classes` classes, named `arch`.
    pub fn build(&self, arch: &str, num_classes: usize) -> Result<Network> {
        if num_classes == 0 {
            return Err(Error::Input(format!("{arch}: a detector needs at least one class")));
        }
        let (mut b, features) = backbone_features(&self.backbone, self.input_size)?;
        let heads = YoloHeads { classes: num_classes, ..self.heads.clone() };
        match &self.neck {
            Neck::Fusion(n) => n.build(&mut b, &features, &heads)?,
            Neck::Prn(n) => n.build(&mut b, &features, &heads)?,
            Neck::PanetSpp(n) => n.build(&mut b, &features, &heads)?,
        };
        let size = (self.input_size, self.input_size);
        let net = b.finish(arch, size, num_classes, Preprocess::DARKNET_DETECTOR);
        net.shapes(size.0, size.1)?;
        Ok(net)
    }
}

/// Builds the detector `name` for `num_classes` classes.
pub fn build(name: &str, num_classes: usize) -> Result<Network> {
    DetectorConfig::by_name(name).ok_or_else(|| Error::UnknownArch(name.to_string()))?.build(name, num_classes)
}

/// Builds the detector `name` at channel width `width` for `num_classes` classes, named
/// [`backbones::scaled_name`]`(name, width)`.
pub fn build_scaled(name: &str, num_classes: usize, width: f64) -> Result<Network> {
    let config = DetectorConfig::by_name(name).ok_or_else(|| Error::UnknownArch(name.to_string()))?;
    config.scaled(width)?.build(&backbones::scaled_name(name, width), num_classes)
}

/// The built-in classifier `backbone` (a width suffix allowed) up to (not including) its `head.*` layers, in a builder,
/// and its feature maps by stride at a square input of `input_size`.
pub fn backbone_features(backbone: &str, input_size: usize) -> Result<(NetworkBuilder, Vec<Feature>)> {
    if is_detector(backbone) {
        return Err(Error::Input(format!("`{backbone}` is a detector, not a backbone")));
    }
    let mut net = backbones::build(backbone, 1)?;
    let end = net.layers.iter().position(|l| l.origin.starts_with("head.")).unwrap_or(net.layers.len());
    net.layers.truncate(end);
    if net.layers.is_empty() || input_size == 0 || !input_size.is_multiple_of(32) {
        return Err(Error::Input(format!(
            "{backbone}: detector input must be a positive multiple of 32, got {input_size}"
        )));
    }
    let shapes = net.shapes(input_size, input_size)?;
    let mut features: Vec<Feature> = Vec::new();
    for (layer, s) in shapes.iter().enumerate() {
        if s.h == 0 || s.h != s.w || !input_size.is_multiple_of(s.h) {
            continue;
        }
        let stride = input_size / s.h;
        if stride < 2 || !stride.is_power_of_two() {
            continue;
        }
        match features.iter_mut().find(|f| f.stride == stride) {
            Some(f) => f.layer = layer,
            None => features.push(Feature { stride, layer }),
        }
    }
    features.sort_by_key(|f| f.stride);
    let mut b = NetworkBuilder::new(net.input_channels);
    for l in net.layers {
        b.push(l.op, l.origin);
    }
    Ok((b, features))
}

//! Built-in architectures by name: classifiers (backbones) and detectors ([`crate::detectors`]).

pub mod densenet;
pub mod native;
pub mod peleenet;
pub mod resnet;
pub mod timm;

use crate::error::{Error, Result};
use crate::network::Network;

/// Every built-in architecture name, with a one-line description.
pub const ARCHITECTURES: &[(&str, &str)] = &[
    ("cspresnet50", "CSPResNet-50, timm layout (loads timm weights)"),
    ("cspresnext50", "CSPResNeXt-50, timm layout (loads timm weights)"),
    ("cspdarknet53", "CSPDarknet-53, timm layout (loads timm weights)"),
    ("resnet10", "ResNet-10, darknet resnet10.cfg layout (256x256)"),
    ("cspresnet10", "CSPResNet-10: ResNet-10 with a CSP last stage (256x256)"),
    ("peleenet", "PeleeNet (224x224)"),
    ("csppeleenet", "CSPPeleeNet: PeleeNet with CSP stages, gamma 0.5 (224x224)"),
    ("densenet201", "DenseNet-201-Elastic (224x224)"),
    ("cspdensenet201", "CSPDenseNet-201-Elastic (224x224)"),
    ("csppeleenet_ref", "CSPPeleeNet Ref., lightweight backbone (224x224)"),
    ("cspdensenet_ref", "CSPDenseNet Ref., lightweight backbone (224x224)"),
    ("cspdensenetb_ref", "CSPDenseNetb Ref., lightweight backbone (224x224)"),
    ("csppeleenet_efm_sam", "detector: CSPPeleeNet + EFM(SAM), 3 YOLO heads (320x320)"),
    ("csppeleenet_efm_sam_gfm", "detector: CSPPeleeNet + GFM(SAM), EFM ablation (320x320)"),
    ("csppeleenet_efm_sam_fpn", "detector: CSPPeleeNet + FPN(SAM), EFM ablation (320x320)"),
    ("csppeleenet_ref_efm_sam", "detector: CSPPeleeNet Ref. + EFM(SAM), 3 YOLO heads (320x320)"),
    ("csppeleenet_ref_efm_sam_gfm", "detector: CSPPeleeNet Ref. + GFM(SAM), EFM ablation (320x320)"),
    ("csppeleenet_ref_efm_sam_fpn", "detector: CSPPeleeNet Ref. + FPN(SAM), EFM ablation (320x320)"),
    ("cspdensenetb_ref_prn", "detector: CSPDenseNetb Ref. + PRN, 2 YOLO heads (416x416)"),
    ("csppeleenet_ref_prn3l", "detector: CSPPeleeNet Ref. + PRN, 3 YOLO heads (416x416)"),
    ("cspresnext50_panet_spp", "detector: CSPResNeXt-50 (timm layout) + SPP + PANet, 3 YOLO heads (416x416)"),
    ("cspdarknet53_panet_spp", "detector: CSPDarknet-53 (timm layout) + SPP + PANet, 3 YOLO heads (416x416)"),
];

/// What a built-in architecture does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classification,
    Detection,
}

/// The task of a built-in architecture, `None` for an unknown name. A width suffix
/// (`cspresnet10_w0.5`, see [`scaled_name`]) does not change the task.
pub fn task(name: &str) -> Option<Task> {
    let base = split_width(name).map_or(name, |(base, _)| base);
    if crate::detectors::is_detector(base) {
        Some(Task::Detection)
    } else if ARCHITECTURES.iter().any(|(n, _)| *n == base) {
        Some(Task::Classification)
    } else {
        None
    }
}

/// Class count of a built-in architecture when none is given: COCO's 80 for detectors,
/// ImageNet's 1000 for classifiers.
pub fn default_num_classes(name: &str) -> usize {
    match task(name) {
        Some(Task::Detection) => crate::detectors::DEFAULT_CLASSES,
        _ => 1000,
    }
}

/// Widest channel multiplier accepted; far beyond anything useful, it keeps channel counts sane.
pub const MAX_WIDTH: f64 = 16.0;

/// Checks a channel-width multiplier: finite, positive, at most [`MAX_WIDTH`].
pub fn check_width(width: f64) -> Result<()> {
    if width.is_finite() && width > 0.0 && width <= MAX_WIDTH {
        Ok(())
    } else {
        Err(Error::Input(format!("width multiplier must be in (0, {MAX_WIDTH}], got {width}")))
    }
}

/// `channels` scaled by `width`, rounded to a multiple of 8 and at least 8. Every width of the
/// native models is a multiple of 8, so width 1 leaves them as they are.
pub fn scale_channels(channels: usize, width: f64) -> usize {
    let eighths = (channels as f64 * width / 8.0).round().max(1.0);
    eighths as usize * 8
}

/// The architecture name of `name` at `width`: `name` itself at width 1, `name_w<width>`
/// otherwise (`cspresnet10_w0.5`). [`build`] understands these names.
pub fn scaled_name(name: &str, width: f64) -> String {
    if width == 1.0 {
        name.to_string()
    } else {
        format!("{name}_w{width}")
    }
}

/// Splits a [`scaled_name`] into the base name and the width; `None` without a width suffix.
pub fn split_width(name: &str) -> Option<(&str, f64)> {
    let (base, width) = name.rsplit_once("_w")?;
    // Only plain decimals: no sign, exponent, `inf` or `nan` spelled into a name.
    if base.is_empty() || width.is_empty() || !width.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    Some((base, width.parse().ok()?))
}

/// Builds a built-in architecture for `num_classes` classes (see [`default_num_classes`]).
/// A name with a width suffix (`cspresnet10_w0.5`) builds that width ([`build_scaled`]).
pub fn build(name: &str, num_classes: usize) -> Result<Network> {
    match split_width(name) {
        Some((base, width)) => build_scaled(base, num_classes, width),
        None => build_scaled(name, num_classes, 1.0),
    }
}

/// Builds a built-in architecture with every channel count (stem, stages, growth rates, neck)
/// multiplied by `width` and rounded to a multiple of 8 (see [`scale_channels`]); width 1 is
/// [`build`]. The network is named by [`scaled_name`]. The timm-layout models and the detectors
/// on them exist to load timm / darknet weights and only build at width 1.
pub fn build_scaled(name: &str, num_classes: usize, width: f64) -> Result<Network> {
    check_width(width)?;
    if split_width(name).is_some() {
        return Err(Error::Input(format!("`{name}` already names a width; give the base name")));
    }
    let arch = scaled_name(name, width);
    let timm = |config: timm::TimmCspConfig| {
        if width == 1.0 {
            Ok(config.build(name, num_classes))
        } else {
            Err(Error::Input(format!("{name}: the timm-layout models only build at width 1, got {width}")))
        }
    };
    Ok(match name {
        "cspresnet50" => timm(timm::TimmCspConfig::cspresnet50())?,
        "cspresnext50" => timm(timm::TimmCspConfig::cspresnext50())?,
        "cspdarknet53" => timm(timm::TimmCspConfig::cspdarknet53())?,
        "resnet10" => resnet::ResNetConfig::resnet10().scaled(width).native().build(&arch, num_classes),
        "cspresnet10" => resnet::ResNetConfig::cspresnet10().scaled(width).native().build(&arch, num_classes),
        "peleenet" => peleenet::PeleeNetConfig::peleenet().scaled(width).native().build(&arch, num_classes),
        "csppeleenet" => peleenet::PeleeNetConfig::csppeleenet().scaled(width).native().build(&arch, num_classes),
        "densenet201" => {
            densenet::DenseNetConfig::densenet201_elastic().scaled(width).native().build(&arch, num_classes)
        }
        "cspdensenet201" => {
            densenet::DenseNetConfig::cspdensenet201_elastic().scaled(width).native().build(&arch, num_classes)
        }
        "csppeleenet_ref" => {
            peleenet::PeleeNetConfig::csppeleenet_ref().scaled(width).native().build(&arch, num_classes)
        }
        "cspdensenet_ref" => {
            peleenet::PeleeNetConfig::cspdensenet_ref().scaled(width).native().build(&arch, num_classes)
        }
        "cspdensenetb_ref" => {
            peleenet::PeleeNetConfig::cspdensenetb_ref().scaled(width).native().build(&arch, num_classes)
        }
        _ if crate::detectors::is_detector(name) => return crate::detectors::build_scaled(name, num_classes, width),
        _ => return Err(Error::UnknownArch(name.to_string())),
    })
}

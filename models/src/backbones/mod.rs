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

/// The task of a built-in architecture, `None` for an unknown name.
pub fn task(name: &str) -> Option<Task> {
    if crate::detectors::is_detector(name) {
        Some(Task::Detection)
    } else if ARCHITECTURES.iter().any(|(n, _)| *n == name) {
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

/// Builds a built-in architecture for `num_classes` classes (see [`default_num_classes`]).
pub fn build(name: &str, num_classes: usize) -> Result<Network> {
    Ok(match name {
        "cspresnet50" => timm::TimmCspConfig::cspresnet50().build(name, num_classes),
        "cspresnext50" => timm::TimmCspConfig::cspresnext50().build(name, num_classes),
        "cspdarknet53" => timm::TimmCspConfig::cspdarknet53().build(name, num_classes),
        "resnet10" => resnet::ResNetConfig::resnet10().native().build(name, num_classes),
        "cspresnet10" => resnet::ResNetConfig::cspresnet10().native().build(name, num_classes),
        "peleenet" => peleenet::PeleeNetConfig::peleenet().native().build(name, num_classes),
        "csppeleenet" => peleenet::PeleeNetConfig::csppeleenet().native().build(name, num_classes),
        "densenet201" => densenet::DenseNetConfig::densenet201_elastic().native().build(name, num_classes),
        "cspdensenet201" => densenet::DenseNetConfig::cspdensenet201_elastic().native().build(name, num_classes),
        "csppeleenet_ref" => peleenet::PeleeNetConfig::csppeleenet_ref().native().build(name, num_classes),
        "cspdensenet_ref" => peleenet::PeleeNetConfig::cspdensenet_ref().native().build(name, num_classes),
        "cspdensenetb_ref" => peleenet::PeleeNetConfig::cspdensenetb_ref().native().build(name, num_classes),
        _ if crate::detectors::is_detector(name) => return crate::detectors::build(name, num_classes),
        _ => return Err(Error::UnknownArch(name.to_string())),
    })
}

//! Built-in architectures by name.

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
];

/// Builds a built-in architecture for `num_classes` classes.
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
        _ => return Err(Error::UnknownArch(name.to_string())),
    })
}

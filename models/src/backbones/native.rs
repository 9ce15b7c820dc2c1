//! The paper's own classifiers that have no public configuration: ResNet-10 / CSPResNet-10,
//! PeleeNet / CSPPeleeNet, DenseNet-201-Elastic / CSPDenseNet-201-Elastic and the lightweight
//! "Ref." backbones. Each family has a config struct that names the paper's knobs
//! ([`super::resnet::ResNetConfig`], [`super::peleenet::PeleeNetConfig`],
//! [`super::densenet::DenseNetConfig`]) and lowers to a [`NativeConfig`]: stem, generic
//! [`CspStage`]s, classifier head. A CSP model and its plain baseline differ only in knobs.
//!
//! Conventions shared by all of them (darknet style, as the paper's models were trained in
//! darknet): conv + batch norm + leaky ReLU (0.1), input RGB in [0, 1] without mean/std,
//! short-side resize and centre crop, 2x2 max pools where DenseNet and PeleeNet use average
//! pools (the same parameters and FLOPs). The classifier's trailing softmax is left to the
//! caller, as for the timm models. Table targets and how close each model lands are in
//! `tests/native.rs`.

use crate::csp::{classifier_conv, max_pool, CspStage};
use crate::layers::Activation;
use crate::network::{LinearSpec, Network, NetworkBuilder, Op};
use crate::preprocess::Preprocess;

/// The activation of every native model: darknet's leaky ReLU.
pub const ACTIVATION: Activation = Activation::DARKNET_LEAKY;

/// How the network turns the image into its first feature map.
#[derive(Clone, Debug, PartialEq)]
pub enum Stem {
    /// A `kernel` x `kernel` / 2 conv, then a max pool of `pool_size` with stride 2 and darknet
    /// padding `pool_padding` (ResNet: 2 / 1, DenseNet: 3 / 2, which is PyTorch's padding 1).
    ConvPool { channels: usize, kernel: usize, pool_size: usize, pool_padding: usize },
    /// PeleeNet's stem block: 3x3/2 conv; a 1x1 -> 3x3/2 branch next to a 2x2 max pool of it;
    /// concatenated, then a 1x1 conv. Stride 4 in all.
    Pelee { channels: usize },
}

/// Where the classifier sits relative to the global average pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Global average pool, then a fully connected layer `head.fc` (PeleeNet, ResNet).
    PoolThenFc,
    /// A 1x1 classifier conv with bias `head.fc` on the last map, then the global pool (darknet's
    /// classifier cfgs, densenet201.cfg among them). Same parameters, FLOPs x H x W.
    ConvThenPool,
}

/// A native classifier: stem, stages, head.
#[derive(Clone, Debug, PartialEq)]
pub struct NativeConfig {
    pub stem: Stem,
    pub stages: Vec<CspStage>,
    pub head: Head,
    /// Square input size the model is specified (and accounted) at.
    pub input_size: usize,
}

impl NativeConfig {
    pub fn build(&self, arch: &str, num_classes: usize) -> Network {
        let mut b = NetworkBuilder::new(3);
        match self.stem {
            Stem::ConvPool { channels, kernel, pool_size, pool_padding } => {
                b.conv("stem.conv1", channels, kernel, 2, 1, ACTIVATION);
                b.push(Op::MaxPool { size: pool_size, stride: 2, padding: pool_padding }, "stem.pool");
            }
            Stem::Pelee { channels } => {
                let first = b.conv("stem.conv1", channels, 3, 2, 1, ACTIVATION);
                b.conv("stem.branch_a", (channels / 2).max(1), 1, 1, 1, ACTIVATION);
                let strided = b.conv("stem.branch_b", channels, 3, 2, 1, ACTIVATION);
                b.push(Op::Route { layers: vec![first], groups: 1, group_id: 0 }, "");
                let pooled = max_pool(&mut b, 2, "stem.pool");
                b.concat(&[strided, pooled]);
                b.conv("stem.fuse", channels, 1, 1, 1, ACTIVATION);
            }
        }
        for (i, stage) in self.stages.iter().enumerate() {
            stage.build(&mut b, &format!("stages.{i}"));
        }
        match self.head {
            Head::PoolThenFc => {
                let features = b.out_channels();
                b.push(Op::AvgPool, "head.global_pool");
                let fc = LinearSpec { name: "head.fc".into(), in_features: features, out_features: num_classes };
                b.push(Op::Linear(fc), "head.fc");
            }
            Head::ConvThenPool => {
                classifier_conv(&mut b, "head.fc", num_classes);
                b.push(Op::AvgPool, "head.global_pool");
            }
        }
        let size = self.input_size;
        b.finish(arch, (size, size), num_classes, Preprocess::DARKNET_CLASSIFIER)
    }
}

//! timm's CSP models (`cspresnet50`, `cspresnext50`, `cspdarknet53`): the same architecture and
//! the same state-dict keys, so a timm `model.safetensors` loads as it is.

use crate::csp::{BlockType, CspStageConfig, Fusion};
use crate::layers::Activation;
use crate::network::{LinearSpec, Network, NetworkBuilder, Op};
use crate::preprocess::Preprocess;

/// timm's stem: one conv, optionally followed by a 3x3/2 max pool with padding 1.
#[derive(Clone, Debug)]
pub struct StemConfig {
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub max_pool: bool,
}

/// A timm-layout CSP classifier: stem, CSP stages, global pool, `head.fc`.
#[derive(Clone, Debug)]
pub struct TimmCspConfig {
    pub stem: StemConfig,
    pub stages: Vec<CspStageConfig>,
}

#[allow(clippy::too_many_arguments)]
fn stages(
    depth: &[usize],
    out: &[usize],
    stride: &[usize],
    expand: &[f32],
    bottle: &[f32],
    block_ratio: &[f32],
    groups: usize,
    block: BlockType,
    down_growth: bool,
    cross_linear: bool,
) -> Vec<CspStageConfig> {
    // Per-stage values given as one entry apply to every stage after it, as in timm.
    let at = |v: &[f32], i: usize| v[i.min(v.len() - 1)];
    (0..depth.len())
        .map(|i| CspStageConfig {
            depth: depth[i],
            out_channels: out[i],
            stride: stride[i.min(stride.len() - 1)],
            down_growth,
            expand_ratio: Some(at(expand, i)),
            bottle_ratio: at(bottle, i),
            block_ratio: at(block_ratio, i),
            partial_ratio: 0.5,
            fusion: Fusion::Both,
            block,
            groups,
            cross_linear,
            activation: Activation::TIMM_LEAKY,
        })
        .collect()
}

impl TimmCspConfig {
    pub fn cspresnet50() -> Self {
        TimmCspConfig {
            stem: StemConfig { out_channels: 64, kernel: 7, stride: 2, max_pool: true },
            stages: stages(
                &[3, 3, 5, 2],
                &[128, 256, 512, 1024],
                &[1, 2],
                &[2.0],
                &[0.5],
                &[1.0],
                1,
                BlockType::Bottleneck,
                false,
                true,
            ),
        }
    }
    pub fn cspresnext50() -> Self {
        TimmCspConfig {
            stem: StemConfig { out_channels: 64, kernel: 7, stride: 2, max_pool: true },
            stages: stages(
                &[3, 3, 5, 2],
                &[256, 512, 1024, 2048],
                &[1, 2],
                &[1.0],
                &[1.0],
                &[0.5],
                32,
                BlockType::Bottleneck,
                false,
                true,
            ),
        }
    }
    pub fn cspdarknet53() -> Self {
        TimmCspConfig {
            stem: StemConfig { out_channels: 32, kernel: 3, stride: 1, max_pool: false },
            stages: stages(
                &[1, 2, 8, 8, 4],
                &[64, 128, 256, 512, 1024],
                &[2],
                &[2.0, 1.0],
                &[0.5, 1.0],
                &[1.0, 0.5],
                1,
                BlockType::Dark,
                true,
                false,
            ),
        }
    }

    pub fn build(&self, arch: &str, num_classes: usize) -> Network {
        let act = Activation::TIMM_LEAKY;
        let mut b = NetworkBuilder::new(3);
        b.conv("stem.conv1", self.stem.out_channels, self.stem.kernel, self.stem.stride, 1, act);
        if self.stem.max_pool {
            // PyTorch MaxPool2d(3, 2, padding=1) is darknet's padding 2.
            b.push(Op::MaxPool { size: 3, stride: 2, padding: 2 }, "stem.pool");
        }
        for (i, stage) in self.stages.iter().enumerate() {
            stage.build(&mut b, &format!("stages.{i}"));
        }
        let features = b.out_channels();
        b.push(Op::AvgPool, "head.global_pool");
        b.push(
            Op::Linear(LinearSpec { name: "head.fc".into(), in_features: features, out_features: num_classes }),
            "head.fc",
        );
        b.finish(arch, (256, 256), num_classes, Preprocess::TIMM)
    }
}

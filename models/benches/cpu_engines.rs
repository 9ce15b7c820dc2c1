//! CPU engines side by side: the blocked engine (`Engine::Fast`) against candle's ops
//! (`Engine::Candle`), on single layers of the shapes CSP models spend their time in and on whole
//! models at batch 1. A layer on the blocked engine reads and writes blocked maps, as inside a
//! network (no layout conversion timed). Throughput is in FLOPs (2 per multiply-add), so
//! criterion's "elem/s" reads as FLOP/s.
//!
//!   cargo bench -p csp-models --bench cpu_engines               (all)
//!   cargo bench -p csp-models --bench cpu_engines -- layer/     (layers only)
//! RAYON_NUM_THREADS sets the thread count, as `--threads` does for the binaries.

use std::collections::HashMap;
use std::time::Duration;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use csp_models::blocked::{Conv, Isa, Kernels, Map, Part, LANES};
use csp_models::layers::{Activation, ConvLayer, ConvSpec};
use csp_models::model::Engine;
use csp_models::weights::random::random_model;

/// (name, in, out, kernel, stride, groups, input side, activation)
type LayerCase = (&'static str, usize, usize, usize, usize, usize, usize, Activation);

/// Leaky ReLU as in timm's CSPResNet/CSPResNeXt, and one with darknet's Mish, whose epilogue costs more.
const LAYERS: [LayerCase; 6] = [
    ("3x3_128_128_56", 128, 128, 3, 1, 1, 56, Activation::TIMM_LEAKY),
    ("1x1_128_256_56", 128, 256, 1, 1, 1, 56, Activation::TIMM_LEAKY),
    ("3x3g32_128_128_56", 128, 128, 3, 1, 32, 56, Activation::TIMM_LEAKY),
    ("3x3s2_64_128_112", 64, 128, 3, 2, 1, 112, Activation::TIMM_LEAKY),
    ("1x1_512_256_14", 512, 256, 1, 1, 1, 14, Activation::TIMM_LEAKY),
    ("3x3_128_128_56_mish", 128, 128, 3, 1, 1, 56, Activation::Mish),
];

fn layer(name: &str, cin: usize, cout: usize, k: usize, stride: usize, groups: usize, act: Activation) -> ConvLayer {
    let spec = ConvSpec::new(name, cin, cout, k, stride).groups(groups).act(act).no_bn();
    let (o, i, k, _) = spec.weight_shape();
    let dev = Device::Cpu;
    let tensors = HashMap::from([
        (format!("{name}.conv.weight"), Tensor::randn(0f32, 0.1, (o, i, k, k), &dev).unwrap()),
        (format!("{name}.conv.bias"), Tensor::randn(0f32, 0.1, o, &dev).unwrap()),
    ]);
    ConvLayer::load(&spec, VarBuilder::from_tensors(tensors, DType::F32, &dev)).unwrap()
}

fn layers(c: &mut Criterion) {
    for (name, cin, cout, k, stride, groups, side, act) in LAYERS {
        let candle = layer(name, cin, cout, k, stride, groups, act);
        let weight = candle.weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bias = candle.bias.as_ref().unwrap().to_vec1::<f32>().unwrap();
        let fast = Conv::new(&candle.spec, &weight, &bias, &[cin], LANES, Kernels::of(Isa::fastest()).unwrap());
        let x = Tensor::randn(0f32, 1.0, (1, cin, side, side), &Device::Cpu).unwrap();
        let planes = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let map = Map::from_planes(|c| &planes[c * side * side..][..side * side], cin, side, side, 1);
        let input = [Part { map: &map, first_block: 0, channels: cin }];
        let (oh, ow) = candle.spec.out_size(side, side);
        let flops = 2 * cout * oh * ow * cin / groups * k * k;
        let mut group = c.benchmark_group(format!("layer/{name}"));
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function("candle", |b| b.iter(|| candle.forward(&x).unwrap()));
        group.bench_function("fast", |b| b.iter(|| fast.run(&input, None, 1)));
        group.finish();
    }
}

fn models(c: &mut Criterion) {
    for (arch, side) in [("cspresnet50", 224), ("cspresnext50", 224), ("cspdarknet53", 256)] {
        let net = csp_models::backbones::build(arch, 1000).unwrap();
        let fast = random_model(net, &Device::Cpu).unwrap().folded().unwrap();
        let candle = fast.with_engine(Engine::Candle).unwrap();
        let flops = csp_models::flops::summarize(&fast.net, side, side).unwrap().bflops * 1e9;
        let x = Tensor::randn(0f32, 1.0, (1, 3, side, side), &Device::Cpu).unwrap();
        let mut group = c.benchmark_group(format!("model/{arch}_{side}_b1"));
        group.sample_size(10).measurement_time(Duration::from_secs(10));
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function("candle", |b| b.iter(|| candle.forward(&x).unwrap()));
        group.bench_function("fast", |b| b.iter(|| fast.forward(&x).unwrap()));
        group.finish();
    }
}

criterion_group!(benches, layers, models);
criterion_main!(benches);

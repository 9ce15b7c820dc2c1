//! The fast CPU engine (`csp_models::blocked`, `Engine::Fast`) against candle's own ops
//! (`Engine::Candle`, the reference path): single convs over odd sizes, strides, paddings, groups,
//! split inputs and every activation, on every instruction set the CPU runs, and whole
//! classifiers, within 1e-4 relative; a detector within its f32 rounding noise.

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use csp_models::blocked::{Conv, Isa, Kernels, Map, Part, LANES};
use csp_models::layers::{Activation, ConvLayer, ConvSpec};
use csp_models::model::Engine;
use csp_models::weights::random::random_model;

const TOLERANCE: f32 = 1e-4;

/// Deterministic values in [-1, 1) (a 64-bit LCG).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(values(shape.iter().product(), seed), shape, &Device::Cpu).unwrap()
}

/// max |a - b| / max(1, max |b|).
fn relative_diff(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims());
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

struct Case {
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    n: usize,
    h: usize,
    w: usize,
}

const fn case(cin: usize, cout: usize, kernel: usize, stride: usize, padding: usize, groups: usize) -> Case {
    Case { cin, cout, kernel, stride, padding, groups, n: 1, h: 13, w: 9 }
}

const ACTIVATIONS: [Activation; 6] = [
    Activation::Linear,
    Activation::Relu,
    Activation::Leaky { slope: 0.1 },
    Activation::Mish,
    Activation::Swish,
    Activation::Logistic,
];

fn layer(c: &Case, activation: Activation, seed: u64) -> ConvLayer {
    let spec = ConvSpec {
        name: "c".into(),
        in_channels: c.cin,
        out_channels: c.cout,
        kernel: c.kernel,
        stride: c.stride,
        padding: c.padding,
        groups: c.groups,
        batch_norm: false,
        activation,
    };
    let (o, i, k, _) = spec.weight_shape();
    let tensors = HashMap::from([
        ("c.conv.weight".to_string(), tensor(&[o, i, k, k], seed)),
        ("c.conv.bias".to_string(), tensor(&[o], seed + 1)),
    ]);
    ConvLayer::load(&spec, VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu)).unwrap()
}

#[test]
fn single_layers_match_candle() {
    let mut cases = vec![
        case(8, 16, 1, 1, 0, 1),   // 1x1, half a block of input channels
        case(8, 16, 1, 2, 0, 1),   // 1x1 with stride
        case(6, 10, 1, 1, 1, 1),   // 1x1 with padding (read from the border)
        case(7, 5, 3, 1, 1, 1),    // odd channel counts: partial input and output blocks
        case(8, 12, 3, 2, 1, 1),   // stride 2 over odd sizes
        case(4, 6, 3, 1, 0, 1),    // no padding
        case(5, 7, 5, 1, 2, 1),    // 5x5
        case(5, 7, 3, 3, 2, 1),    // stride 3, padding wider than k/2
        case(64, 64, 3, 1, 1, 32), // CSPResNeXt's grouped 3x3 (2 channels per group)
        case(12, 18, 3, 2, 1, 3),  // groups with stride
        case(16, 16, 3, 1, 1, 16), // depthwise
        case(8, 8, 1, 1, 0, 4),    // grouped 1x1
    ];
    // A batch.
    cases.push(Case { n: 3, h: 7, w: 11, ..case(6, 9, 3, 1, 1, 1) });
    // Rows of whole tiles (8 and 16 pixels), a batch of them, and a reduction over 19 input blocks.
    cases.push(Case { n: 2, h: 8, w: 8, ..case(9, 13, 1, 1, 0, 1) });
    cases.push(Case { n: 1, h: 4, w: 16, ..case(300, 7, 1, 1, 0, 1) });
    cases.push(case(8, 12, 1, 1, 0, 1));
    // Wide rows cut into uneven tiles: 3x3 and 5x5, padding wider than k/2, a batch of grouped
    // ones, and several input blocks.
    cases.push(Case { h: 5, w: 40, ..case(5, 7, 3, 1, 1, 1) });
    cases.push(Case { h: 3, w: 29, ..case(4, 6, 5, 1, 3, 1) });
    cases.push(Case { n: 2, h: 6, w: 31, ..case(12, 6, 3, 1, 1, 3) });
    cases.push(Case { h: 4, w: 30, ..case(40, 8, 3, 1, 1, 1) });
    // A 1x1 image, a thin one.
    cases.push(Case { h: 1, w: 1, ..case(4, 4, 3, 1, 1, 1) });
    cases.push(Case { h: 2, w: 17, ..case(3, 8, 3, 2, 1, 1) });
    // Strided k x k convs: a 7x7 stem over odd and even sizes, no padding, k = stride, padding
    // wider than k/2, a batch, several input blocks, an image smaller than the window.
    cases.push(Case { h: 17, w: 22, ..case(3, 8, 7, 2, 3, 1) });
    cases.push(Case { h: 16, w: 15, ..case(4, 6, 3, 2, 0, 1) });
    cases.push(Case { h: 9, w: 10, ..case(5, 7, 2, 2, 0, 1) });
    cases.push(Case { n: 2, h: 11, w: 12, ..case(6, 9, 3, 2, 2, 1) });
    cases.push(Case { h: 40, w: 66, ..case(40, 8, 3, 2, 1, 1) });
    cases.push(Case { h: 2, w: 1, ..case(4, 4, 5, 2, 2, 1) });
    // A large input, strided, with an odd number of output blocks (the last call takes one).
    cases.push(Case { h: 110, w: 100, ..case(24, 70, 3, 2, 1, 1) });
    // Small maps: fewer rows than tasks, several output blocks, a batch.
    cases.push(Case { h: 7, w: 7, ..case(300, 70, 1, 1, 0, 1) });
    cases.push(Case { n: 2, h: 7, w: 7, ..case(64, 35, 1, 1, 0, 1) });
    cases.push(Case { h: 7, w: 7, ..case(16, 32, 3, 1, 1, 1) });
    cases.push(Case { h: 14, w: 13, ..case(16, 64, 3, 2, 1, 1) });
    cases.push(Case { h: 5, w: 7, ..case(6, 32, 5, 1, 3, 1) });
    cases.push(Case { h: 5, w: 7, ..case(16, 32, 3, 1, 1, 1) });
    cases.push(Case { n: 2, h: 7, w: 9, ..case(40, 48, 3, 1, 1, 1) });
    // Weights past `SMALL_WEIGHTS` (each task takes one call, not all of them): 32 x 9 x 256.
    cases.push(Case { h: 7, w: 7, ..case(32, 256, 3, 1, 1, 1) });
    // Grouped ones as in CSPResNeXt's late stages: 32 channels per group (a pair of output blocks
    // reads the same input blocks, one call takes both), 16 per group (each block its own call)
    // over a row that ends mid-tile, strided, and a batch with partial blocks.
    cases.push(Case { h: 7, w: 7, ..case(64, 64, 3, 1, 1, 2) });
    cases.push(Case { h: 5, w: 7, ..case(48, 48, 3, 1, 1, 3) });
    cases.push(Case { h: 14, w: 13, ..case(96, 96, 3, 2, 1, 3) });
    cases.push(Case { n: 2, h: 6, w: 6, ..case(70, 64, 3, 1, 1, 2) });
    // Every instruction set this CPU runs (AVX-512 tiles take two blocks of output channels),
    // inputs read as 16-channel blocks (every conv but a network's first) and as planes (the
    // first, which reads the image as it comes).
    for (i, c, isa) in
        cases.iter().enumerate().flat_map(|(i, c)| Isa::supported().into_iter().map(move |isa| (i, c, isa)))
    {
        for (j, activation) in ACTIVATIONS.iter().enumerate() {
            let seed = (i * 10 + j) as u64;
            let reference = layer(c, *activation, seed);
            // Scaled so that activations see both signs and their saturated ranges.
            let x = (tensor(&[c.n, c.cin, c.h, c.w], seed + 100) * 3.0).unwrap();
            let want = reference.forward(&x).unwrap();
            for lanes in [LANES, 1] {
                let got = blocked(&reference, &[c.cin], lanes, isa, &x);
                let diff = relative_diff(&got, &want);
                let what = format!(
                    "{isa:?}, {lanes} lanes: cin {} cout {} k {} stride {} pad {} groups {} {}x{}x{} {activation:?}",
                    c.cin, c.cout, c.kernel, c.stride, c.padding, c.groups, c.n, c.h, c.w
                );
                assert!(diff <= TOLERANCE, "{what}: relative difference {diff:e}");
            }
        }
    }
}

/// `layer` on the blocked engine: its input `x` split into parts of `parts` channels (read one
/// after the other, as a concat), in blocks of `lanes`, one image at a time, back as NCHW.
fn blocked(layer: &ConvLayer, parts: &[usize], lanes: usize, isa: Isa, x: &Tensor) -> Tensor {
    let s = &layer.spec;
    let weight = layer.weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bias = layer.bias.as_ref().unwrap().to_vec1::<f32>().unwrap();
    let conv = Conv::new(s, &weight, &bias, parts, lanes, Kernels::of(isa).unwrap());
    let (n, c, h, w) = x.dims4().unwrap();
    let data = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (oh, ow) = s.out_size(h, w);
    let mut out = Vec::new();
    for image in data.chunks_exact(c * h * w) {
        let mut first = 0;
        let maps: Vec<Map> = parts
            .iter()
            .map(|&p| {
                let planes = &image[first * h * w..(first + p) * h * w];
                first += p;
                match lanes {
                    1 => Map::planar(planes, p, h, w, s.padding),
                    _ => Map::from_planes(|ch| &planes[ch * h * w..][..h * w], p, h, w, s.padding),
                }
            })
            .collect();
        let inputs: Vec<Part<&Map>> =
            maps.iter().map(|m| Part { map: m, first_block: 0, channels: m.channels }).collect();
        // A border on the output too: its readers' padding, around what this conv writes.
        conv.run(&inputs, None, 1).planes_into(0, s.out_channels, &mut out);
    }
    Tensor::from_vec(out, (n, s.out_channels, oh, ow), &Device::Cpu).unwrap()
}

/// A conv reading a concat of parts whose channel counts are not whole blocks (so the blocks of
/// the parts hold unused lanes between the real channels), grouped and not.
#[test]
fn split_inputs_match_candle() {
    for (parts, groups, cout) in
        [(vec![5, 20], 1, 12), (vec![5, 20], 5, 10), (vec![16, 3, 33], 4, 40), (vec![40, 8], 3, 33)]
    {
        let cin = parts.iter().sum();
        let c = Case { h: 9, w: 11, ..case(cin, cout, 3, 1, 1, groups) };
        let reference = layer(&c, Activation::Leaky { slope: 0.1 }, 7);
        let x = tensor(&[2, cin, c.h, c.w], 8);
        let want = reference.forward(&x).unwrap();
        for isa in Isa::supported() {
            let diff = relative_diff(&blocked(&reference, &parts, LANES, isa, &x), &want);
            assert!(diff <= TOLERANCE, "{isa:?}: parts {parts:?} groups {groups}: relative difference {diff:e}");
        }
    }
}

#[test]
fn non_contiguous_input_is_read_correctly() {
    use csp_models::network::NetworkBuilder;
    use csp_models::preprocess::Preprocess;
    let mut b = NetworkBuilder::new(6);
    b.conv("a", 8, 3, 1, 2, Activation::Mish);
    b.conv("b", 4, 1, 1, 1, Activation::Linear);
    let fast = random_model(b.finish("t", (13, 9), 0, Preprocess::TIMM), &Device::Cpu).unwrap().folded().unwrap();
    let reference = fast.with_engine(Engine::Candle).unwrap();
    // Transposed H and W: the same values in a strided layout.
    let x = tensor(&[1, 6, 9, 13], 8).transpose(2, 3).unwrap();
    assert!(!x.is_contiguous());
    let diff = relative_diff(&fast.forward(&x).unwrap(), &reference.forward(&x).unwrap());
    assert!(diff <= TOLERANCE, "{diff:e}");
}

/// Whole models, random weights (batch-norm statistics calibrated, so outputs depend on the input).
#[test]
fn models_match_candle() {
    for (arch, side) in [("cspresnext50", 64), ("cspdarknet53", 64), ("cspresnet50", 64)] {
        let net = csp_models::backbones::build(arch, 10).unwrap();
        let fast = random_model(net, &Device::Cpu).unwrap().folded().unwrap();
        assert_eq!(fast.engine(), Engine::Fast, "folded CPU models use the fast engine by default");
        let reference = fast.with_engine(Engine::Candle).unwrap();
        assert_eq!(reference.engine(), Engine::Candle);
        let x = ((tensor(&[2, 3, side, side], 3) + 1.0).unwrap() * 0.5).unwrap();
        let want = reference.forward(&x).unwrap();
        // On every instruction set this CPU runs.
        for isa in Isa::supported() {
            let fast = fast.with_cpu_isa(isa).unwrap();
            let diff = relative_diff(&fast.forward(&x).unwrap(), &want);
            assert!(diff <= TOLERANCE, "{arch} on {isa:?}: relative difference {diff:e}");
        }
    }
}

#[test]
fn a_detector_matches_candle() {
    let mut net = csp_models::detectors::build("cspresnext50_panet_spp", 3).unwrap();
    net.input_size = (128, 128);
    let unfolded = random_model(net, &Device::Cpu).unwrap();
    let fast = unfolded.folded().unwrap();
    let reference = fast.with_engine(Engine::Candle).unwrap();
    let x = ((tensor(&[1, 3, 128, 128], 4) + 1.0).unwrap() * 0.5).unwrap();
    let (a, b) = (fast.forward_heads(&x).unwrap(), reference.forward_heads(&x).unwrap());
    assert_eq!(a.len(), b.len());
    // A detector is deep enough that f32 rounding alone moves its raw outputs by a few 1e-4: candle
    // itself differs that much between the folded and the unfolded model. The fused kernel must
    // stay within twice that noise (and within 1e-4 where the noise is smaller).
    let c = unfolded.forward_heads(&x).unwrap();
    for (i, ((p, q), r)) in a.iter().zip(&b).zip(&c).enumerate() {
        let (diff, noise) = (relative_diff(p, q), relative_diff(q, r));
        let bound = TOLERANCE.max(2.0 * noise);
        assert!(diff <= bound, "head {i}: relative difference {diff:e}, candle's own folding noise {noise:e}");
    }
}

/// The executor's fusions and their fallbacks against candle's ops on a small graph: a residual
/// fused into its conv, a concat of a conv output and a channel slice read by a conv, and two
/// shortcuts the kernel cannot take (fewer channels than the residual; a residual twice the size,
/// read at every other pixel), at batch 3 and odd sizes.
#[test]
fn fused_graphs_match_candle() {
    use csp_models::network::{NetworkBuilder, Op};
    use csp_models::preprocess::Preprocess;
    let leaky = Activation::DARKNET_LEAKY;
    let mut b = NetworkBuilder::new(3);
    let a = b.conv("a", 8, 3, 1, 1, leaky); // 0
    let c1 = b.conv("b", 8, 1, 1, 1, leaky); // 1
    b.conv("c", 8, 3, 1, 1, Activation::Linear); // 2: run with the shortcut
    let sum = b.push(Op::Shortcut { from: c1, activation: leaky }, "fused residual"); // 3
    let part = b.slice(sum, 2, 4); // 4
    b.concat(&[a, part]); // 5: read by the conv
    b.conv("d", 6, 1, 1, 1, Activation::Mish); // 6
    b.push(Op::Shortcut { from: a, activation: Activation::Linear }, "6 + 8 channels"); // 7
    let down = b.conv("e", 8, 3, 2, 1, leaky); // 8
    b.conv("f", 8, 1, 1, 1, leaky); // 9
    let strided = b.push(Op::Shortcut { from: a, activation: Activation::Linear }, "2x map"); // 10
    b.concat(&[strided, down]); // 11
    b.conv("g", 4, 3, 1, 2, leaky); // 12
    let net = b.finish("fusions", (13, 11), 0, Preprocess::TIMM);
    let fast = random_model(net, &Device::Cpu).unwrap().folded().unwrap();
    let reference = fast.with_engine(Engine::Candle).unwrap();
    let x = tensor(&[3, 3, 13, 11], 9);
    for layer in [3, 6, 7, 10, 12] {
        let ours = fast.run_many(&x, &[layer]).unwrap();
        let theirs = reference.run_many(&x, &[layer]).unwrap();
        let diff = relative_diff(&ours[0], &theirs[0]);
        assert!(diff <= TOLERANCE, "layer {layer}: relative difference {diff:e}");
    }
    // Every output at once: nothing asked for may be folded away.
    let all: Vec<usize> = (0..13).collect();
    for (layer, (ours, theirs)) in
        fast.run_many(&x, &all).unwrap().iter().zip(reference.run_many(&x, &all).unwrap()).enumerate()
    {
        let diff = relative_diff(ours, &theirs);
        assert!(diff <= TOLERANCE, "layer {layer} (all kept): relative difference {diff:e}");
    }
}

/// Max pooling and upsampling on blocked maps against candle's ops: darknet's windows (even and
/// odd sizes, strides 1-3, paddings 0 to size - 1, SPP's 5, 9 and 13 at stride 1), upsampling by
/// 2 and 3, over odd map sizes, 20 channels (a partial block) and a batch of 2.
#[test]
fn pooling_and_upsampling_match_candle() {
    use csp_models::network::{NetworkBuilder, Op};
    use csp_models::preprocess::Preprocess;
    let leaky = Activation::DARKNET_LEAKY;
    let mut b = NetworkBuilder::new(3);
    let a = b.conv("a", 20, 3, 1, 1, leaky); // 0
    let mut outputs = Vec::new();
    for (size, stride, padding) in
        [(2, 2, 0), (2, 2, 1), (3, 2, 1), (3, 2, 2), (2, 1, 1), (3, 3, 0), (5, 1, 4), (9, 1, 8), (13, 1, 12)]
    {
        b.push(Op::Route { layers: vec![a], groups: 1, group_id: 0 }, "input");
        outputs.push(b.push(Op::MaxPool { size, stride, padding }, format!("maxpool {size} {stride} {padding}")));
    }
    for stride in [2, 3] {
        b.push(Op::Route { layers: vec![a], groups: 1, group_id: 0 }, "input");
        outputs.push(b.push(Op::Upsample { stride }, format!("upsample {stride}")));
    }
    let net = b.finish("pooling", (13, 11), 0, Preprocess::TIMM);
    let fast = random_model(net, &Device::Cpu).unwrap().folded().unwrap();
    let reference = fast.with_engine(Engine::Candle).unwrap();
    let x = tensor(&[2, 3, 13, 11], 10);
    for isa in Isa::supported() {
        let fast = fast.with_cpu_isa(isa).unwrap();
        let (ours, theirs) = (fast.run_many(&x, &outputs).unwrap(), reference.run_many(&x, &outputs).unwrap());
        for ((layer, p), q) in outputs.iter().zip(&ours).zip(&theirs) {
            assert_eq!(p.dims(), q.dims(), "layer {layer}");
            let diff = relative_diff(p, q);
            assert!(
                diff <= TOLERANCE,
                "{isa:?} layer {layer} ({:?}): relative difference {diff:e}",
                fast.net.layers[*layer].op
            );
        }
    }
}

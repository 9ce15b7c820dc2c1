//! Darknet `.cfg` parsing against the official cfgs' published costs, `.weights` round trips,
//! error reporting, and a forward pass over every supported layer kind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use csp_models::darknet::{parse_cfg_file, parse_cfg_str};
use csp_models::network::Op;
use csp_models::preprocess::Preprocess;
use csp_models::weights::darknet::{read_weights, write_model_weights, write_weights};
use csp_models::{flops, Error, Model, Network};

const REFERENCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/darknet");

/// (cfg stem, BFLOPs at the [net] size, conv-weight parameters) from the reference README.
const REFERENCE: &[(&str, Option<f64>, Option<usize>)] = &[
    ("csdarknet53", Some(13.067), Some(27_605_856)),
    ("csresnet50", Some(8.967), Some(21_566_656)),
    ("csresnext50", Some(7.929), Some(20_499_136)),
    ("resnet10", Some(2.272), Some(5_240_000)),
    ("resnext50", Some(10.110), Some(22_190_784)),
    ("darknet53", Some(18.570), Some(41_573_216)),
    ("densenet201", Some(10.848), None),
    ("csresnext50-panet-spp", Some(47.063), None),
    ("csdarknet53-panet-spp", Some(60.105), None),
    ("csresnext50-panet-spp-original-optimal", Some(71.291), None),
    ("csresnet50-panet-spp", Some(49.278), None),
    ("resnet50", None, None),
];

fn tmp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-darknet-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn reference_cfgs_match_published_costs() {
    let mut found = vec![];
    for entry in std::fs::read_dir(REFERENCE_DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cfg") {
            found.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    found.sort();
    let mut known: Vec<String> = REFERENCE.iter().map(|r| r.0.to_string()).collect();
    known.sort();
    assert_eq!(found, known, "reference cfgs and the table here differ");

    for &(stem, bflops, params) in REFERENCE {
        let path = Path::new(REFERENCE_DIR).join(format!("{stem}.cfg"));
        let net = parse_cfg_file(&path).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(net.arch, stem);
        let (h, w) = net.input_size;
        let s = flops::summarize(&net, h, w).unwrap();
        println!(
            "{stem:40} {w}x{h}  {:8.3} BFLOPs (reference {bflops:?})  {} conv weights",
            s.bflops, s.conv_weight_params
        );
        if let Some(expected) = bflops {
            let rel = (s.bflops - expected).abs() / expected;
            assert!(rel <= 1e-3, "{stem}: {:.4} BFLOPs, reference {expected}", s.bflops);
        }
        if let Some(expected) = params {
            assert_eq!(s.conv_weight_params, expected, "{stem}");
        }
        let is_detector = net.layers.iter().any(|l| matches!(l.op, Op::Yolo(_)));
        assert_eq!(stem.contains("panet"), is_detector, "{stem}");
        if is_detector {
            assert_eq!(net.preprocess, Preprocess::DARKNET_DETECTOR);
            assert_eq!(net.num_classes, 80, "{stem}");
        } else {
            assert_eq!(net.preprocess, Preprocess::DARKNET_CLASSIFIER);
            assert_eq!(net.num_classes, 1000, "{stem}");
        }
    }
}

#[test]
fn layers_keep_darknet_indices_names_and_lines() {
    let net = parse_cfg_file(&Path::new(REFERENCE_DIR).join("resnet10.cfg")).unwrap();
    assert_eq!(net.input_size, (256, 256));
    assert_eq!(net.input_channels, 3);
    // resnet10.cfg: [convolutional] at line 31, [maxpool] at 39; 16 layers ending in [softmax].
    assert!(net.layers[0].origin.ends_with("resnet10.cfg:31"), "{}", net.layers[0].origin);
    assert!(net.layers[1].origin.ends_with("resnet10.cfg:39"), "{}", net.layers[1].origin);
    let Op::Conv(c) = &net.layers[0].op else { panic!("layer 0 is {:?}", net.layers[0].op) };
    assert_eq!((c.name.as_str(), c.kernel, c.stride, c.padding, c.batch_norm), ("layers.0", 7, 2, 3, true));
    assert_eq!(net.layers[1].op, Op::MaxPool { size: 2, stride: 2, padding: 1 });
    assert_eq!(net.layers[4].op.references(), vec![1]);
    assert!(matches!(net.layers.last().unwrap().op, Op::Softmax));
    let Op::Conv(fc) = &net.layers[net.layers.len() - 2].op else { panic!() };
    assert_eq!(fc.name, format!("layers.{}", net.layers.len() - 2));
    assert!(!fc.batch_norm);
}

/// A small detector: BN and plain convs, a grouped conv, a yolo head.
const SMALL: &str = "
[net]
width=32
height=24
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
groups=2
activation=mish

[route]
layers=-1,-2

[convolutional]
filters=14
size=1
activation=linear

[yolo]
mask=0,1
anchors=10,13, 16,30, 33,23
num=3
classes=2
scale_x_y=1.05
";

fn random_params(net: &Network) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    for c in net.convs() {
        let n = c.out_channels;
        let name = &c.name;
        t.insert(format!("{name}.conv.weight"), Tensor::randn(0f32, 0.5, c.weight_shape(), &dev).unwrap());
        if c.batch_norm {
            t.insert(format!("{name}.bn.weight"), Tensor::randn(1f32, 0.2, n, &dev).unwrap());
            t.insert(format!("{name}.bn.bias"), Tensor::randn(0f32, 0.2, n, &dev).unwrap());
            t.insert(format!("{name}.bn.running_mean"), Tensor::randn(0f32, 0.2, n, &dev).unwrap());
            let var = (Tensor::randn(0f32, 0.3, n, &dev).unwrap().abs().unwrap() + 0.5).unwrap();
            t.insert(format!("{name}.bn.running_var"), var);
        } else {
            t.insert(format!("{name}.conv.bias"), Tensor::randn(0f32, 0.2, n, &dev).unwrap());
        }
    }
    t
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn model_from(net: &Network, tensors: HashMap<String, Tensor>) -> Model {
    Model::load_unfolded(net.clone(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap()
}

#[test]
fn weights_round_trip_through_model() {
    let net = parse_cfg_str(SMALL, "small.cfg").unwrap();
    assert_eq!(net.arch, "small");
    assert_eq!(net.num_classes, 2);
    assert_eq!(net.preprocess, Preprocess::DARKNET_DETECTOR);
    let Op::Yolo(y) = &net.layers[4].op else { panic!() };
    assert_eq!(
        (y.mask.clone(), y.anchors.len(), y.anchors[2], y.classes, y.scale_x_y),
        (vec![0, 1], 3, [33.0, 23.0], 2, 1.05)
    );

    let params = random_params(&net);
    let model = model_from(&net, params.clone());
    let path = tmp_path("small.weights");
    write_weights(&path, &net, &params).unwrap();
    let n_floats: usize = params.values().map(|t| t.elem_count()).sum();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, 20 + 4 * n_floats);

    let read = read_weights(&path, &net, &Device::Cpu).unwrap();
    assert!(read.incomplete().is_none());
    assert_eq!((read.version, read.seen, read.convs_read, read.convs_total), ((0, 2, 0), 0, 3, 3));
    assert_eq!(read.tensors.len(), params.len());
    for (k, v) in &params {
        assert_eq!(max_abs_diff(v, &read.tensors[k]), 0.0, "{k}");
    }

    let loaded = model_from(&net, read.tensors);
    let x = Tensor::rand(0f32, 1f32, (2, 3, 24, 32), &Device::Cpu).unwrap();
    let want = model.forward(&x).unwrap();
    let got = loaded.forward(&x).unwrap();
    // The yolo layer passes its 14-channel input map through.
    assert_eq!(got.dims(), &[2, 14, 12, 16]);
    assert_eq!(max_abs_diff(&want, &got), 0.0);
    // Folded inference agrees with the unfolded model.
    let folded = loaded.folded().unwrap().forward(&x).unwrap();
    assert!(max_abs_diff(&want, &folded) < 1e-4);

    // Writing from a model gives the same bytes.
    let again = tmp_path("small-model.weights");
    write_model_weights(&again, &loaded).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
}

fn weights_error(bytes: &[u8], name: &str) -> String {
    let net = parse_cfg_str(SMALL, "small.cfg").unwrap();
    let path = tmp_path(name);
    std::fs::write(&path, bytes).unwrap();
    match read_weights(&path, &net, &Device::Cpu) {
        Err(e @ Error::Weights { .. }) => e.to_string(),
        Err(e) => panic!("expected a weights error, got {e}"),
        Ok(_) => panic!("{name} was accepted"),
    }
}

#[test]
fn truncated_weights_stop_cleanly_and_say_where() {
    let net = parse_cfg_str(SMALL, "small.cfg").unwrap();
    let params = random_params(&net);
    let full_path = tmp_path("full.weights");
    write_weights(&full_path, &net, &params).unwrap();
    let full = std::fs::read(&full_path).unwrap();

    // Cut inside the last conv (layer 3).
    let cut = full.len() - 10;
    let path = tmp_path("cut.weights");
    std::fs::write(&path, &full[..cut]).unwrap();
    let read = read_weights(&path, &net, &Device::Cpu).unwrap();
    let msg = read.incomplete().expect("truncation is reported");
    assert!(msg.contains(&format!("byte offset {cut} inside layer 3 (conv 3 of 3)")), "{msg}");
    assert_eq!(read.convs_read, 2);
    assert!(read.tensors.contains_key("layers.1.bn.running_var"));
    assert!(!read.tensors.contains_key("layers.3.conv.weight"));

    // Cut exactly after the first conv: 8 x (4 vectors + 3*3*3 weights) floats after a 20-byte header.
    let boundary = 20 + 4 * 8 * (4 + 27);
    std::fs::write(&path, &full[..boundary]).unwrap();
    let read = read_weights(&path, &net, &Device::Cpu).unwrap();
    let msg = read.incomplete().unwrap();
    assert!(msg.contains(&format!("byte offset {boundary} before layer 1 (conv 2 of 3)")), "{msg}");
    assert_eq!(read.convs_read, 1);

    // The loader refuses partial files for a full model.
    let err = csp_models::weights::load_model(
        Some(&csp_models::weights::Arch::DarknetCfg(write_cfg("small.cfg", SMALL))),
        Some(&path),
        &Device::Cpu,
        true,
    );
    assert!(matches!(err, Err(Error::Weights { .. })));

    // Extra bytes mean the file belongs to another cfg.
    let mut long = full.clone();
    long.extend_from_slice(&[0u8; 8]);
    let msg = weights_error(&long, "long.weights");
    assert!(msg.contains("8 bytes remain"), "{msg}");
}

fn write_cfg(name: &str, text: &str) -> PathBuf {
    let path = tmp_path(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_weight_headers_are_errors() {
    let msg = weights_error(&[0, 0, 0, 0, 2, 0], "short.weights");
    assert!(msg.contains("offset 4"), "{msg}");
    let msg = weights_error(b"", "empty.weights");
    assert!(msg.contains("offset 0"), "{msg}");
    // Version 0.2 needs a u64 `seen`: 16 bytes are not enough.
    let mut header = vec![];
    for v in [0i32, 2, 0, 0] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    let msg = weights_error(&header, "no-seen.weights");
    assert!(msg.contains("offset 12"), "{msg}");
    let msg = weights_error(b"this is certainly not a darknet weights file", "text.weights");
    assert!(msg.contains("header at byte offset 0"), "{msg}");
    let mut absurd = vec![];
    for v in [11i32, 0, 0, 0, 0] {
        absurd.extend_from_slice(&v.to_le_bytes());
    }
    let msg = weights_error(&absurd, "major.weights");
    assert!(msg.contains("version 11.0.0"), "{msg}");
}

#[test]
fn version_01_headers_use_a_u32_seen() {
    let net = parse_cfg_str(SMALL, "small.cfg").unwrap();
    let params = random_params(&net);
    let path = tmp_path("v02.weights");
    write_weights(&path, &net, &params).unwrap();
    let v02 = std::fs::read(&path).unwrap();
    // Rewrite as version 0.1 with seen = 7 in 4 bytes.
    let mut v01 = vec![];
    for v in [0i32, 1, 0, 7] {
        v01.extend_from_slice(&v.to_le_bytes());
    }
    v01.extend_from_slice(&v02[20..]);
    std::fs::write(&path, &v01).unwrap();
    let read = read_weights(&path, &net, &Device::Cpu).unwrap();
    assert!(read.incomplete().is_none());
    assert_eq!((read.version, read.seen), ((0, 1, 0), 7));
    assert_eq!(max_abs_diff(&read.tensors["layers.3.conv.weight"], &params["layers.3.conv.weight"]), 0.0);
}

/// The error and line of a cfg that must not parse.
fn cfg_error(text: &str) -> (usize, String) {
    match parse_cfg_str(text, "bad.cfg") {
        Err(Error::Cfg { path, line, msg }) => {
            assert_eq!(path, "bad.cfg");
            (line, msg)
        }
        Err(e) => panic!("expected a cfg error, got {e}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

const HEAD: &str =
    "[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n";

#[test]
fn cfg_errors_name_the_line() {
    // HEAD is lines 1-9.
    let (line, msg) = cfg_error(&format!("{HEAD}[crop]\ncrop_width=8\n"));
    assert_eq!(line, 10);
    assert!(msg.contains("[crop]"), "{msg}");

    let (line, msg) = cfg_error(&format!("{HEAD}[route]\nlayers=-3\n"));
    assert_eq!(line, 11);
    assert!(msg.contains("layers=-3"), "{msg}");
    let (line, msg) = cfg_error(&format!("{HEAD}[route]\nlayers=1\n"));
    assert_eq!(line, 11);
    assert!(msg.contains("layer 1 does not exist"), "{msg}");
    let (line, _) = cfg_error(&format!("{HEAD}[shortcut]\nfrom=-2\n"));
    assert_eq!(line, 11);

    let (line, msg) = cfg_error(&format!("{HEAD}[convolutional]\nfilters=abc\n"));
    assert_eq!(line, 11);
    assert!(msg.contains("filters=abc"), "{msg}");
    let (line, msg) = cfg_error(&format!("{HEAD}[convolutional]\nfilters=4\nactivation=gelu2\n"));
    assert_eq!(line, 12);
    assert!(msg.contains("activation"), "{msg}");
    let (line, msg) = cfg_error(&format!("{HEAD}[convolutional]\nfilters=4\nxnor=1\n"));
    assert_eq!(line, 12);
    assert!(msg.contains("xnor"), "{msg}");
    let (line, msg) = cfg_error(&format!("{HEAD}size 3\n"));
    assert_eq!(line, 10);
    assert!(msg.contains("key=value"), "{msg}");

    let (line, msg) =
        cfg_error(&format!("{HEAD}[convolutional]\nfilters=4\n[shortcut]\nfrom=-2\nweights_type=per_channel\n"));
    assert_eq!(line, 12);
    assert!(msg.contains("weighted shortcut"), "{msg}");

    // Graph checks (shape inference) report the offending layer's line too.
    let (line, msg) = cfg_error(&format!("{HEAD}[convolutional]\nfilters=6\ngroups=4\n"));
    assert_eq!(line, 10);
    assert!(msg.contains("groups"), "{msg}");
    let (line, msg) = cfg_error(&format!("{HEAD}[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n"));
    assert_eq!(line, 13);
    assert!(msg.contains("8x8"), "{msg}");
    let (line, msg) = cfg_error(&format!("{HEAD}[yolo]\nmask=0\nanchors=1,2\nnum=1\nclasses=3\n"));
    assert_eq!(line, 10);
    assert!(msg.contains("channels"), "{msg}");

    let (line, _) = cfg_error("[convolutional]\nfilters=4\n");
    assert_eq!(line, 1);
    let (line, _) = cfg_error("# no size\n[net]\nchannels=3\n[avgpool]\n");
    assert_eq!(line, 2);
    let (line, msg) = cfg_error(&format!("{HEAD}[convolutional]\nfilters=4\nfilters=5\n"));
    assert_eq!(line, 12);
    assert!(msg.contains("twice"), "{msg}");
}

/// One of every layer kind, with the cases where darknet's semantics are unusual.
const EVERY_KIND: &str = "
[net]
width=16
height=16
channels=3

# 0: 8x16x16
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

# 1: second half of the channels, 4x16x16
[route]
layers=-1
groups=2
group_id=1

# 2: 4x16x16
[convolutional]
batch_normalize=1
filters=4
size=1
activation=mish

# 3: 4 channels + leading 4 of layer 0's 8
[shortcut]
from=0
activation=linear

# 4: 12x16x16
[convolutional]
batch_normalize=1
filters=12
size=1
stride=1
activation=swish

# 5: 12 channels + layer 2's 4 on the first 4
[shortcut]
from=-3
activation=leaky

# 6: size 2 stride 1, padding 1: stays 16x16
[maxpool]
size=2
stride=1

# 7: size 3 stride 2, padding 2: 8x8
[maxpool]
size=3
stride=2

# 8: max-out to 4 channels
[maxpool]
maxpool_depth=1
out_channels=4

# 9: 4x16x16
[upsample]
stride=2

# 10: 12x16x16
[route]
layers=-1,0

# 11: grouped strided conv, darknet's default activation (logistic)
[convolutional]
batch_normalize=1
filters=6
size=3
stride=2
pad=1
groups=2

[avgpool]

[convolutional]
filters=5
size=1
activation=linear

[softmax]
groups=1
";

#[test]
fn every_layer_kind_runs_with_darknet_shapes() {
    let net = parse_cfg_str(EVERY_KIND, "every.cfg").unwrap();
    assert_eq!(net.num_classes, 5);
    assert_eq!(net.preprocess, Preprocess::DARKNET_CLASSIFIER);
    assert_eq!(net.layers[1].op, Op::Route { layers: vec![0], groups: 2, group_id: 1 });
    assert_eq!(net.layers[6].op, Op::MaxPool { size: 2, stride: 1, padding: 1 });
    assert_eq!(net.layers[7].op, Op::MaxPool { size: 3, stride: 2, padding: 2 });
    assert_eq!(net.layers[8].op, Op::Maxout { out_channels: 4 });
    assert_eq!(net.layers[10].op.references(), vec![9, 0]);
    let Op::Conv(c) = &net.layers[11].op else { panic!() };
    assert_eq!(c.activation, csp_models::layers::Activation::Logistic);

    let expect = [
        (8, 16),
        (4, 16),
        (4, 16),
        (4, 16),
        (12, 16),
        (12, 16),
        (12, 16),
        (12, 8),
        (4, 8),
        (4, 16),
        (12, 16),
        (6, 8),
        (6, 1),
        (5, 1),
        (5, 1),
    ];
    let shapes = net.shapes(16, 16).unwrap();
    let got: Vec<(usize, usize)> = shapes.iter().map(|s| (s.c, s.h)).collect();
    assert_eq!(got, expect);

    let params = random_params(&net);
    let model = model_from(&net, params);
    let x = Tensor::rand(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
    for (i, &(c, hw)) in expect.iter().enumerate() {
        let y = model.run(&x, i).unwrap();
        let dims = if hw == 1 { vec![2, c] } else { vec![2, c, hw, hw] };
        assert_eq!(y.dims(), dims.as_slice(), "layer {i}");
        let finite = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().is_finite();
        assert!(finite, "layer {i} has non-finite values");
    }
    // forward returns the logits before the softmax.
    let logits = model.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&logits, &model.run(&x, 13).unwrap()), 0.0);
    let probs = model.run(&x, 14).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(probs.iter().all(|p| (p - 1.0).abs() < 1e-5), "{probs:?}");
}

#[test]
fn maxpool_padding_on_odd_sizes() {
    let cfg = "[net]\nwidth=13\nheight=11\nchannels=2\n[maxpool]\nsize=2\nstride=2\n[maxpool]\nsize=3\nstride=1\n";
    let net = parse_cfg_str(cfg, "odd.cfg").unwrap();
    let s = net.shapes(11, 13).unwrap();
    // Darknet: (len + size - 1 - size) / stride + 1.
    assert_eq!((s[0].h, s[0].w), (6, 7));
    assert_eq!((s[1].h, s[1].w), (6, 7));
    let model = model_from(&net, HashMap::new());
    // Values 1..: every output is a max over real pixels, never the -inf padding.
    let x = Tensor::arange(1f32, 1.0 + 2.0 * 11.0 * 13.0, &Device::Cpu).unwrap().reshape((1, 2, 11, 13)).unwrap();
    let y = model.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2, 6, 7]);
    // Bottom-right of the first pool covers only pixel (10, 12) of channel 0: 10*13+12+1 = 143.
    let first = model.run(&x, 0).unwrap();
    let v = first.get(0).unwrap().get(0).unwrap().get(5).unwrap().get(6).unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(v, 143.0);
}

#[test]
fn shortcut_from_a_larger_map_reads_every_stride_pixel() {
    // Layer 0 is an identity pool, layer 1 keeps pixels (2j, 2i); the shortcut adds layer 0 read
    // at the same pixels (darknet's strided residual, as in resnet10.cfg), so the sum doubles layer 1.
    let cfg = "[net]\nwidth=8\nheight=6\nchannels=2\n[maxpool]\nsize=1\nstride=1\n[maxpool]\nsize=1\nstride=2\n[shortcut]\nfrom=0\nactivation=linear\n";
    let net = parse_cfg_str(cfg, "strided.cfg").unwrap();
    let model = model_from(&net, HashMap::new());
    let x = Tensor::randn(0f32, 1f32, (1, 2, 6, 8), &Device::Cpu).unwrap();
    let sub = model.run(&x, 1).unwrap();
    assert_eq!(sub.dims(), &[1, 2, 3, 4]);
    let sum = model.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&sum, &(&sub * 2.0).unwrap()), 0.0);
    // A smaller map onto a larger one is refused, at the shortcut's line.
    let (line, msg) = cfg_error("[net]\nwidth=8\nheight=8\nchannels=2\n[maxpool]\nsize=2\nstride=2\n[upsample]\nstride=2\n[shortcut]\nfrom=-2\n");
    assert_eq!(line, 10);
    assert!(msg.contains("adds a 4x4 map to a 8x8 one"), "{msg}");
}

#[test]
fn every_reference_cfg_runs_at_a_small_size() {
    for &(stem, _, _) in REFERENCE {
        let net = parse_cfg_file(&Path::new(REFERENCE_DIR).join(format!("{stem}.cfg"))).unwrap();
        let vm = candle_nn::VarMap::new();
        let model = Model::load_unfolded(net.clone(), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::rand(0f32, 1f32, (1, 3, 64, 64), &Device::Cpu).unwrap();
        let y = model.forward(&x).unwrap();
        let shapes = net.shapes(64, 64).unwrap();
        let out = shapes[net.output_layer()];
        if net.preprocess == Preprocess::DARKNET_DETECTOR {
            // The last [yolo] head: 3 anchors x (80 classes + 5) at its grid.
            assert_eq!(y.dims(), &[1, 255, out.h, out.w], "{stem}");
        } else {
            assert_eq!(y.dims(), &[1, 1000], "{stem}");
        }
    }
}

/// Channel attention then spatial attention, as YOLOv4-family cfgs write them.
const ATTENTION: &str = "
[net]
width=8
height=6
channels=3

# 0: 4x6x8
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=mish

# 1: 4x1x1
[avgpool]

# 2: per-channel gate
[convolutional]
filters=4
size=1
stride=1
pad=1
activation=logistic

# 3: layer 0 scaled per channel by layer 2
[scale_channels]
from=-3

# 4: spatial gate
[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=logistic

# 5: gate * layer 3
[sam]
from=-2
activation=linear

# 6: max-out 4 -> 2; size and stride do not apply
[maxpool]
maxpool_depth=1
out_channels=2
size=2
stride=2
";

#[test]
fn sam_and_scale_channels_multiply_the_right_maps() {
    let net = parse_cfg_str(ATTENTION, "attention.cfg").unwrap();
    assert_eq!(net.layers[3].op, Op::ScaleChannels { from: 0 });
    assert_eq!(net.layers[5].op, Op::Sam { from: 3 });
    assert_eq!(net.layers[6].op, Op::Maxout { out_channels: 2 });
    assert!(net.layers[5].origin.ends_with("attention.cfg:41"), "{}", net.layers[5].origin);
    let shapes = net.shapes(6, 8).unwrap();
    let got: Vec<(usize, usize, usize)> = shapes.iter().map(|s| (s.c, s.h, s.w)).collect();
    assert_eq!(got, [(4, 6, 8), (4, 1, 1), (4, 1, 1), (4, 6, 8), (4, 6, 8), (4, 6, 8), (2, 6, 8)]);

    let model = model_from(&net, random_params(&net));
    let x = Tensor::rand(0f32, 1f32, (2, 3, 6, 8), &Device::Cpu).unwrap();
    let features = model.run(&x, 0).unwrap();
    // `run` flattens a 1x1 map to [N, C].
    let gate = model.run(&x, 2).unwrap().reshape((2, 4, 1, 1)).unwrap();
    let scaled = model.run(&x, 3).unwrap();
    assert_eq!(max_abs_diff(&scaled, &features.broadcast_mul(&gate).unwrap()), 0.0);
    let spatial = model.run(&x, 4).unwrap();
    let attended = model.run(&x, 5).unwrap();
    assert_eq!(max_abs_diff(&attended, &(&spatial * &scaled).unwrap()), 0.0);
}

#[test]
fn maxout_takes_the_max_over_channels_k_mod_m() {
    let cfg = "[net]\nwidth=3\nheight=2\nchannels=6\n[maxpool]\nmaxpool_depth=1\nout_channels=2\n";
    let net = parse_cfg_str(cfg, "maxout.cfg").unwrap();
    let model = model_from(&net, HashMap::new());
    // Channel k is constant v[k]. Groups by k mod 2: {1, 5, 3} and {6, 2, 4}; contiguous groups
    // ({1, 6, 5}, {2, 3, 4}) would give 6 and 4 instead.
    let v = [1f32, 6., 5., 2., 3., 4.];
    let data: Vec<f32> = v.iter().flat_map(|&c| std::iter::repeat_n(c, 6)).collect();
    let x = Tensor::from_vec(data, (1, 6, 2, 3), &Device::Cpu).unwrap();
    let y = model.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2, 2, 3]);
    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(y[..6].iter().all(|&a| a == 5.0) && y[6..].iter().all(|&a| a == 6.0), "{y:?}");
    // Channels that do not split into the groups are refused at the section's line.
    let (line, msg) = cfg_error("[net]\nwidth=3\nheight=2\nchannels=6\n[maxpool]\nmaxpool_depth=1\nout_channels=4\n");
    assert_eq!(line, 5);
    assert!(msg.contains("max-out"), "{msg}");
}

/// A head with the [yolo] settings of the YOLOv4-family cfgs.
const YOLOV4_HEAD: &str = "[net]
width=16
height=16
channels=3
[convolutional]
filters=16
size=1
activation=linear
[yolo]
mask = 0,1
anchors = 12, 16, 19, 36, 40, 28
classes=3
num=3
jitter=.3
ignore_thresh = .7
truth_thresh = 1
scale_x_y = 1.2
iou_thresh=0.213
cls_normalizer=1.0
iou_normalizer=0.07
iou_loss=ciou
nms_kind=greedynms
beta_nms=0.6
max_delta=5
random=1
resize=1.5
";

#[test]
fn yolov4_yolo_options_parse() {
    let net = parse_cfg_str(YOLOV4_HEAD, "v4.cfg").unwrap();
    let Op::Yolo(y) = &net.layers[1].op else { panic!("{:?}", net.layers[1].op) };
    assert_eq!((y.mask.clone(), y.anchors[1], y.classes, y.scale_x_y), (vec![0, 1], [19.0, 36.0], 3, 1.2));
    assert_eq!(net.preprocess, Preprocess::DARKNET_DETECTOR);
    assert_eq!(net.num_classes, 3);
    let diou = YOLOV4_HEAD.replace("nms_kind=greedynms", "nms_kind=diounms");
    assert!(parse_cfg_str(&diou, "v4.cfg").is_ok());

    // The [yolo] section starts on line 9; `nms_kind` is on line 22, `beta_nms` on 23, and an
    // appended option on 27.
    let (line, msg) = cfg_error(&YOLOV4_HEAD.replace("nms_kind=greedynms", "nms_kind=softnms"));
    assert_eq!(line, 22);
    assert!(msg.contains("nms_kind=softnms") && msg.contains("diounms"), "{msg}");
    let (line, msg) = cfg_error(&YOLOV4_HEAD.replace("beta_nms=0.6", "beta_nms=high"));
    assert_eq!(line, 23);
    assert!(msg.contains("beta_nms"), "{msg}");
    let (line, msg) = cfg_error(&format!("{YOLOV4_HEAD}new_coords=1\n"));
    assert_eq!(line, 27);
    assert!(msg.contains("new_coords"), "{msg}");
    assert!(parse_cfg_str(&format!("{YOLOV4_HEAD}new_coords=0\n"), "v4.cfg").is_ok());
    // Tracking embeddings and class maps change what the head means: refused, not ignored.
    let (line, msg) = cfg_error(&format!("{YOLOV4_HEAD}embedding_layer=-2\n"));
    assert_eq!(line, 27);
    assert!(msg.contains("embedding_layer") && msg.contains("unsupported"), "{msg}");
    let (line, _) = cfg_error(&format!("{YOLOV4_HEAD}map=data/inet9k.map\n"));
    assert_eq!(line, 27);
}

#[test]
fn attention_errors_name_the_line() {
    // ATTENTION: [scale_channels] header on line 28, `from` on 29; [sam] header 41, `from` 42,
    // `activation` 43.
    let with = |old: &str, new: &str| {
        assert!(ATTENTION.contains(old), "{old}");
        ATTENTION.replacen(old, new, 1)
    };
    let (line, msg) = cfg_error(&with("from=-3\n", "from=-3\nscale_wh=1\n"));
    assert_eq!(line, 30);
    assert!(msg.contains("scale_wh=1"), "{msg}");
    assert!(parse_cfg_str(&with("from=-3\n", "from=-3\nscale_wh=0\n"), "ok.cfg").is_ok());
    let (line, msg) = cfg_error(&with("activation=linear\n\n# 6", "activation=logistic\n\n# 6"));
    assert_eq!(line, 43);
    assert!(msg.contains("activation=logistic"), "{msg}");
    let (line, msg) = cfg_error(&with("from=-3\n", "from=-30\n"));
    assert_eq!(line, 29);
    assert!(msg.contains("before the first layer"), "{msg}");
    let (line, msg) = cfg_error(&with("from=-2\nactivation", "from=-2,-3\nactivation"));
    assert_eq!(line, 42);
    assert!(msg.contains("one layer"), "{msg}");
    let (line, msg) = cfg_error(&with("from=-3\n", "\n"));
    assert_eq!(line, 28);
    assert!(msg.contains("missing `from`"), "{msg}");
    let (line, msg) = cfg_error(&with("from=-2\nactivation", "from=-2\nweights_type=1\nactivation"));
    assert_eq!(line, 43);
    assert!(msg.contains("unsupported option"), "{msg}");
    // Shape checks: [sam] of maps that differ (layer 1 is 4x1x1), [scale_channels] by a map
    // that is not 1x1 (a size-1 max pool in place of the global mean makes the gate 4x6x8).
    let (line, msg) = cfg_error(&with("from=-2\nactivation", "from=1\nactivation"));
    assert_eq!(line, 41);
    assert!(msg.contains("sam"), "{msg}");
    let (line, msg) = cfg_error(&with("# 1: 4x1x1\n[avgpool]", "# 1\n[maxpool]\nsize=1"));
    assert_eq!(line, 29);
    assert!(msg.contains("scale"), "{msg}");
}

//! The named detectors: each builds, runs `forward_heads` with random weights and returns one
//! map per head of the right shape; class counts are respected; the EFM / GFM / FPN ablation
//! keeps its cost claims; the PANet-SPP necks match the official cfgs layer for layer in cost.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use csp_models::backbones::{self, Task};
use csp_models::detectors::{backbone_features, DetectorConfig, Neck};
use csp_models::necks::efm::FusionMode;
use csp_models::necks::YoloHeads;
use csp_models::network::{Network, Op};
use csp_models::weights::{load_model, Arch};
use csp_models::{darknet, flops, Error, Model};

const REFERENCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/darknet");

fn detector_names() -> Vec<&'static str> {
    backbones::ARCHITECTURES.iter().map(|(n, _)| *n).filter(|n| backbones::task(n) == Some(Task::Detection)).collect()
}

/// (stride, expected channels) of every yolo layer, in layer order; the stride is read from the
/// layer's origin `head.p<stride>.yolo`.
fn heads_of(net: &Network) -> Vec<(usize, usize)> {
    net.layers
        .iter()
        .filter_map(|l| match &l.op {
            Op::Yolo(y) => {
                let stride = l.origin.strip_prefix("head.p").and_then(|s| s.strip_suffix(".yolo")).unwrap();
                Some((stride.parse().unwrap(), y.mask.len() * (5 + y.classes)))
            }
            _ => None,
        })
        .collect()
}

fn random_model(net: Network) -> Model {
    let vm = VarMap::new();
    Model::load_unfolded(net, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap().folded().unwrap()
}

#[test]
fn the_named_detectors_are_all_registered() {
    let mut names = detector_names();
    names.sort();
    let mut expected = vec![
        "csppeleenet_efm_sam",
        "csppeleenet_efm_sam_gfm",
        "csppeleenet_efm_sam_fpn",
        "csppeleenet_ref_efm_sam",
        "csppeleenet_ref_efm_sam_gfm",
        "csppeleenet_ref_efm_sam_fpn",
        "cspdensenetb_ref_prn",
        "csppeleenet_ref_prn3l",
        "cspresnext50_panet_spp",
        "cspdarknet53_panet_spp",
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(backbones::task("cspdarknet53"), Some(Task::Classification));
    assert_eq!(backbones::task("nope"), None);
    assert_eq!(backbones::default_num_classes("csppeleenet_efm_sam"), 80);
    assert_eq!(backbones::default_num_classes("csppeleenet"), 1000);
}

#[test]
fn every_detector_runs_forward_heads_with_the_right_shapes() {
    let x = Tensor::randn(0f32, 1.0, (1, 3, 128, 128), &Device::Cpu).unwrap();
    for name in detector_names() {
        let model = load_model(Some(&Arch::Builtin(name.into())), None, &Device::Cpu, true).unwrap();
        let net = &model.net;
        assert_eq!(net.num_classes, 80, "{name}: COCO by default");
        assert_eq!(net.preprocess, csp_models::preprocess::Preprocess::DARKNET_DETECTOR);
        let expected_size = if name.contains("efm") { 320 } else { 416 };
        assert_eq!(net.input_size, (expected_size, expected_size), "{name}");
        let heads = heads_of(net);
        let scales = if name == "cspdensenetb_ref_prn" { 2 } else { 3 };
        assert_eq!(heads.len(), scales, "{name}: head count");
        let maps = model.forward_heads(&x).unwrap();
        assert_eq!(maps.len(), heads.len(), "{name}");
        for (map, &(stride, channels)) in maps.iter().zip(&heads) {
            assert_eq!(channels, 3 * 85, "{name}: three anchors per head");
            assert_eq!(map.dims(), &[1, channels, 128 / stride, 128 / stride], "{name}: stride-{stride} head");
            let finite = map.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite());
            assert!(finite, "{name}: stride-{stride} head has non-finite values");
        }
    }
}

#[test]
fn the_class_count_sets_every_head_width() {
    let x = Tensor::randn(0f32, 1.0, (2, 3, 96, 160), &Device::Cpu).unwrap();
    for name in ["cspdensenetb_ref_prn", "csppeleenet_efm_sam_fpn"] {
        let net = backbones::build(name, 3).unwrap();
        assert_eq!(net.num_classes, 3);
        let heads = heads_of(&net);
        assert!(heads.iter().all(|&(_, c)| c == 3 * 8), "{name}: {heads:?}");
        let maps = random_model(net).forward_heads(&x).unwrap();
        for (map, &(stride, _)) in maps.iter().zip(&heads) {
            assert_eq!(map.dims(), &[2, 24, 96 / stride, 160 / stride], "{name}");
        }
    }
    assert!(backbones::build("csppeleenet_efm_sam", 0).is_err(), "zero classes");
}

#[test]
fn forward_heads_returns_the_yolo_inputs_of_one_pass() {
    let net = backbones::build("csppeleenet_ref_prn3l", 4).unwrap();
    let yolos: Vec<usize> =
        net.layers.iter().enumerate().filter(|(_, l)| matches!(l.op, Op::Yolo(_))).map(|(i, _)| i).collect();
    let model = random_model(net);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let maps = model.forward_heads(&x).unwrap();
    for (map, &i) in maps.iter().zip(&yolos) {
        // The yolo layer passes its input through: its output is the prediction conv's.
        let alone = model.run(&x, i - 1).unwrap();
        let diff = (map - &alone).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "layer {i}");
    }
    // Several outputs at once, in the order asked, including one that a later layer reads.
    let both = model.run_many(&x, &[yolos[2], yolos[0]]).unwrap();
    assert_eq!(both[0].dims(), maps[2].dims());
    assert_eq!(both[1].dims(), maps[0].dims());
    assert!(matches!(model.run_many(&x, &[model.net.layers.len()]), Err(Error::Input(_))));
    assert!(model.run_many(&x, &[]).unwrap().is_empty());
}

#[test]
fn bad_detector_inputs_are_errors() {
    let classifier = load_model(Some(&Arch::Builtin("cspdensenetb_ref".into())), None, &Device::Cpu, true).unwrap();
    let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(classifier.forward_heads(&x), Err(Error::Input(_))), "a classifier has no heads");
    assert!(backbone_features("csppeleenet", 300).is_err(), "not a multiple of 32");
    assert!(backbone_features("csppeleenet_efm_sam", 320).is_err(), "a detector is no backbone");
    assert!(matches!(backbone_features("nope", 320), Err(Error::UnknownArch(_))));

    // A head stride the EFM pyramid has no level for.
    let mut cfg = DetectorConfig::by_name("csppeleenet_efm_sam").unwrap();
    if let Neck::Fusion(n) = &mut cfg.neck {
        n.levels = vec![8, 16];
    }
    assert!(matches!(cfg.build("x", 80), Err(Error::Graph(_))));
    // Masks naming missing anchors, and a head at a stride the backbone does not have.
    let mut cfg = DetectorConfig::by_name("cspdensenetb_ref_prn").unwrap();
    cfg.heads.scales[0].mask = vec![0, 7];
    assert!(matches!(cfg.build("x", 80), Err(Error::Graph(_))));
    let mut cfg = DetectorConfig::by_name("cspdarknet53_panet_spp").unwrap();
    cfg.heads = YoloHeads::yolov3(80);
    cfg.heads.scales[2].stride = 64;
    assert!(matches!(cfg.build("x", 80), Err(Error::Graph(_))));
}

/// Params (conv weights), BFLOPs and fused-feature-map memory of the three fusion designs on one
/// backbone, at the detectors' 320x320.
#[test]
fn efm_fuses_less_memory_than_gfm() {
    println!("{:30} {:>10} {:>8} {:>12} {:>8}", "detector", "params", "BFLOPs", "neck elems", "vs GFM");
    for backbone in ["csppeleenet", "csppeleenet_ref"] {
        let cost = |suffix: &str| {
            let name = format!("{backbone}_efm_sam{suffix}");
            let net = backbones::build(&name, 80).unwrap();
            (name, flops::summarize(&net, 320, 320).unwrap())
        };
        let (efm, gfm, fpn) = (cost(""), cost("_gfm"), cost("_fpn"));
        for (name, s) in [&efm, &gfm, &fpn] {
            let ratio = s.neck_elems as f64 / gfm.1.neck_elems as f64;
            println!("{name:30} {:>10} {:>8.3} {:>12} {ratio:>8.3}", s.conv_weight_params, s.bflops, s.neck_elems);
        }
        assert!(efm.1.neck_elems < gfm.1.neck_elems, "{backbone}: EFM must fuse less than GFM");
        assert!(fpn.1.neck_elems < efm.1.neck_elems, "{backbone}: FPN fuses the fewest maps");
        // Max pools and Maxout have no weights: EFM and GFM differ in memory only.
        assert_eq!(efm.1.conv_weight_params, gfm.1.conv_weight_params);
        assert_eq!(efm.1.flops, gfm.1.flops);
        // Hand count at 320 (128 channels; laterals at strides 4-32 = 1,088,000 elements): EFM's
        // heads make 1,228,800 + 307,200 + 51,200 more, GFM's 1,638,400 + 409,600 + 102,400.
        assert_eq!(efm.1.neck_elems, 2_675_200);
        assert_eq!(gfm.1.neck_elems, 3_238_400);
    }
}

/// The PANet-SPP necks and heads reproduce the official cfgs' exactly (same widths and the same
/// backbone channels at strides 8, 16, 32); only the backbones differ (timm layout).
#[test]
fn panet_spp_matches_the_official_cfgs() {
    // (detector, cfg, darknet index of the first neck layer, reference BFLOPs at 416)
    let cases = [
        ("cspresnext50_panet_spp", "csresnext50-panet-spp", 81, 47.063),
        ("cspdarknet53_panet_spp", "csdarknet53-panet-spp", 105, 60.105),
    ];
    for (name, cfg, first_neck, reference) in cases {
        let ours = flops::summarize(&backbones::build(name, 80).unwrap(), 416, 416).unwrap();
        let theirs_net = darknet::parse_cfg_file(&Path::new(REFERENCE_DIR).join(format!("{cfg}.cfg"))).unwrap();
        let theirs = flops::summarize(&theirs_net, 416, 416).unwrap();
        let after_backbone = |s: &flops::Summary, neck: &dyn Fn(&flops::LayerCost) -> bool| {
            let l: Vec<_> = s.layers.iter().filter(|l| neck(l)).collect();
            (l.iter().map(|l| l.flops).sum::<u64>(), l.iter().map(|l| l.conv_weight_params).sum::<usize>())
        };
        let ours_neck = after_backbone(&ours, &|l| !l.name.starts_with("stem.") && !l.name.starts_with("stages."));
        let theirs_neck = after_backbone(&theirs, &|l| l.index >= first_neck);
        println!(
            "{name:24} {:.3} BFLOPs at 416 (cfg {cfg}: {:.3}, README {reference}); neck + heads {:.3} BFLOPs, {} conv weights \
             (cfg: {:.3}, {})",
            ours.bflops,
            theirs.bflops,
            ours_neck.0 as f64 / 1e9,
            ours_neck.1,
            theirs_neck.0 as f64 / 1e9,
            theirs_neck.1
        );
        assert_eq!(ours_neck, theirs_neck, "{name}: neck and heads differ from {cfg}");
        assert!((ours.bflops / reference - 1.0).abs() < 0.01, "{name}: {:.3} BFLOPs", ours.bflops);
        // Same anchors and masks as the cfg, finest head first.
        let specs = |net: &Network| -> Vec<_> {
            net.layers.iter().filter_map(|l| if let Op::Yolo(y) = &l.op { Some(y.clone()) } else { None }).collect()
        };
        assert_eq!(specs(&backbones::build(name, 80).unwrap()), specs(&theirs_net), "{name}");
    }
}

#[test]
fn fusion_modes_pick_their_sources() {
    let Neck::Fusion(efm) = DetectorConfig::by_name("csppeleenet_efm_sam").unwrap().neck else { panic!() };
    assert_eq!(efm.sources(8), vec![4, 8, 16]);
    assert_eq!(efm.sources(16), vec![8, 16, 32]);
    assert_eq!(efm.sources(32), vec![16, 32]);
    let gfm = efm.clone().with_mode(FusionMode::Global);
    assert_eq!(gfm.sources(16), vec![4, 8, 16, 32]);
    let fpn = efm.with_mode(FusionMode::Pyramid);
    assert_eq!(fpn.sources(16), vec![16]);
    // FPN's stride-16 head reads the stride-32 head's map upsampled.
    let net = backbones::build("csppeleenet_efm_sam_fpn", 80).unwrap();
    assert!(net.layers.iter().any(|l| l.origin == "neck.p16.from_p32.up"));
    assert!(!net.layers.iter().any(|l| l.origin == "neck.lateral4"), "FPN needs no stride-4 lateral");
    // Every EFM head is gated by SAM.
    let efm_net = backbones::build("csppeleenet_efm_sam", 80).unwrap();
    assert_eq!(efm_net.layers.iter().filter(|l| matches!(l.op, Op::Sam { .. })).count(), 3);
}

#[test]
fn a_saved_detector_reloads_from_its_file_alone() {
    let net = backbones::build("cspdensenetb_ref_prn", 3).unwrap();
    let vm = VarMap::new();
    let model = Model::load_unfolded(net, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let dir = std::env::temp_dir().join(format!("csp-detectors-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prn.safetensors");
    csp_models::weights::native::save(&model, &path).unwrap();
    let loaded = load_model(None, Some(&path), &Device::Cpu, true).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded.net.num_classes, 3);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let (a, b) = (model.forward_heads(&x).unwrap(), loaded.forward_heads(&x).unwrap());
    assert_eq!(a.len(), 2);
    for (a, b) in a.iter().zip(&b) {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-4 * scale.max(1.0), "folded reload differs by {diff}");
    }
}

#[test]
fn the_backbone_keeps_the_classifier_parameter_names() {
    let names = |net: Network| -> Vec<String> { random_model(net).tensors().into_iter().map(|(n, _)| n).collect() };
    let classifier = names(backbones::build("cspdarknet53", 1000).unwrap());
    let detector = names(backbones::build("cspdarknet53_panet_spp", 80).unwrap());
    let trunk: Vec<&String> = detector.iter().filter(|n| n.starts_with("stem.") || n.starts_with("stages.")).collect();
    let body: Vec<&String> = classifier.iter().filter(|n| !n.starts_with("head.")).collect();
    assert_eq!(trunk, body);
    assert!(detector.iter().all(|n| n.starts_with("stem.")
        || n.starts_with("stages.")
        || n.starts_with("neck.")
        || n.starts_with("head.p")));
}

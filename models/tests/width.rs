//! Channel-width multiplier: width 1 is the registry's network, narrower widths build, run and
//! shrink as expected, names carry the width and round-trip, bad widths are errors.

use candle_core::{DType, Device, Tensor};
use csp_models::backbones::densenet::DenseNetConfig;
use csp_models::backbones::peleenet::PeleeNetConfig;
use csp_models::backbones::resnet::ResNetConfig;
use csp_models::backbones::{self, Task};
use csp_models::error::Error;
use csp_models::necks::efm::FusionNeckConfig;
use csp_models::necks::prn::PrnConfig;
use csp_models::network::{Network, Op};
use csp_models::weights::{self, native, Arch};
use csp_models::{flops, Model};

/// The native models and the detectors on them: every name that scales.
const SCALABLE: &[&str] = &[
    "resnet10",
    "cspresnet10",
    "peleenet",
    "csppeleenet",
    "csppeleenet_ref",
    "cspdensenet_ref",
    "cspdensenetb_ref",
    "densenet201",
    "cspdensenet201",
    "csppeleenet_efm_sam",
    "csppeleenet_ref_efm_sam",
    "csppeleenet_ref_efm_sam_gfm",
    "csppeleenet_ref_efm_sam_fpn",
    "cspdensenetb_ref_prn",
    "csppeleenet_ref_prn3l",
];

fn json(net: &Network) -> String {
    serde_json::to_string(net).unwrap()
}

fn conv_weights(net: &Network) -> usize {
    let (h, w) = net.input_size;
    flops::summarize(net, h, w).unwrap().conv_weight_params
}

fn random_model(net: Network) -> Model {
    let varmap = candle_nn::VarMap::new();
    Model::load_unfolded(net, candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap()
}

#[test]
fn width_one_is_the_registry_network() {
    for (name, _) in backbones::ARCHITECTURES {
        let classes = backbones::default_num_classes(name);
        let built = backbones::build(name, classes).unwrap();
        let scaled = backbones::build_scaled(name, classes, 1.0).unwrap();
        assert_eq!(json(&scaled), json(&built), "{name}");
        assert_eq!(scaled.arch, *name);
    }
    // The configs themselves are unchanged by width 1 (all their widths are multiples of 8).
    for c in [ResNetConfig::resnet10(), ResNetConfig::cspresnet10()] {
        assert_eq!(c.clone().scaled(1.0), c);
    }
    for c in [
        PeleeNetConfig::peleenet(),
        PeleeNetConfig::csppeleenet(),
        PeleeNetConfig::csppeleenet_ref(),
        PeleeNetConfig::cspdensenet_ref(),
        PeleeNetConfig::cspdensenetb_ref(),
    ] {
        assert_eq!(c.clone().scaled(1.0), c);
    }
    for c in [DenseNetConfig::densenet201_elastic(), DenseNetConfig::cspdensenet201_elastic()] {
        assert_eq!(c.clone().scaled(1.0), c);
    }
    assert_eq!(FusionNeckConfig::efm_sam().scaled(1.0), FusionNeckConfig::efm_sam());
    assert_eq!(PrnConfig::default().scaled(1.0), PrnConfig::default());
    // Exact counts of the paper's models, as before the multiplier existed.
    for (name, classes, params) in [
        ("resnet10", 1000, 5_240_000),
        ("cspresnet10", 1000, 2_733_248),
        ("csppeleenet_ref", 1000, 4_143_200),
        ("csppeleenet_ref_efm_sam", 80, 4_599_648),
    ] {
        assert_eq!(conv_weights(&backbones::build(name, classes).unwrap()), params, "{name}");
    }
}

#[test]
fn half_width_builds_with_about_a_quarter_of_the_weights() {
    for name in SCALABLE {
        let full = backbones::build(name, 10).unwrap();
        let half = backbones::build_scaled(name, 10, 0.5).unwrap();
        assert_eq!(half.arch, format!("{name}_w0.5"));
        assert_eq!(half.input_size, full.input_size, "{name}");
        let (h, w) = half.input_size;
        half.shapes(h, w).unwrap();
        let ratio = conv_weights(&half) as f64 / conv_weights(&full) as f64;
        println!("{name:30} conv weights x{ratio:.3}");
        // 1/4 in theory; rounding to multiples of 8 (growth 24 -> 16 in cspdensenetb_ref) and
        // the class count's share move it a little.
        assert!((0.18..0.45).contains(&ratio), "{name}: ratio {ratio}");
    }
}

#[test]
fn scaled_widths_are_multiples_of_eight_and_never_vanish() {
    for width in [0.01, 0.25, 0.3, 0.5, 0.75, 2.0] {
        let c = ResNetConfig::cspresnet10().scaled(width);
        for ch in c.widths.iter().chain([&c.stem_channels]) {
            assert!(*ch >= 8 && ch.is_multiple_of(8), "width {width}: {ch}");
        }
        let p = PeleeNetConfig::cspdensenetb_ref().scaled(width);
        assert!(p.growth_rate >= 8 && p.growth_rate.is_multiple_of(8) && p.stem_channels.is_multiple_of(8));
        // Every named model still has a valid graph (CSP splits, groups, routes).
        for name in SCALABLE {
            let net = backbones::build_scaled(name, 3, width).unwrap();
            let (h, w) = net.input_size;
            net.shapes(h, w).unwrap_or_else(|e| panic!("{name} at width {width}: {e}"));
        }
    }
    assert_eq!(backbones::scale_channels(64, 0.5), 32);
    assert_eq!(backbones::scale_channels(24, 0.5), 16);
    assert_eq!(backbones::scale_channels(32, 0.1), 8);
}

#[test]
fn narrow_classifiers_run_a_forward_pass() {
    for name in ["resnet10", "cspresnet10", "csppeleenet_ref"] {
        let model = random_model(backbones::build_scaled(name, 7, 0.5).unwrap());
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        let y = model.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 7], "{name}");
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}

#[test]
fn narrow_detector_runs_a_forward_pass() {
    let net = backbones::build_scaled("csppeleenet_ref_efm_sam", 6, 0.5).unwrap();
    assert_eq!(net.arch, "csppeleenet_ref_efm_sam_w0.5");
    let model = random_model(net);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 96, 96), &Device::Cpu).unwrap();
    let heads = model.forward_heads(&x).unwrap();
    let mut sizes: Vec<Vec<usize>> = heads.iter().map(|t| t.dims().to_vec()).collect();
    sizes.sort();
    // Three anchors x (5 + 6 classes) at strides 32, 16, 8.
    assert_eq!(sizes, vec![vec![1, 33, 3, 3], vec![1, 33, 6, 6], vec![1, 33, 12, 12]]);
}

#[test]
fn scaled_names_round_trip() {
    assert_eq!(backbones::scaled_name("cspresnet10", 0.5), "cspresnet10_w0.5");
    assert_eq!(backbones::scaled_name("cspresnet10", 1.0), "cspresnet10");
    assert_eq!(backbones::split_width("cspresnet10_w0.25"), Some(("cspresnet10", 0.25)));
    assert_eq!(backbones::split_width("cspresnet10"), None);
    assert_eq!(backbones::split_width("cspresnet10_wnan"), None);
    assert_eq!(backbones::split_width("cspresnet10_w-1"), None);
    for name in ["cspresnet10", "csppeleenet_ref_efm_sam", "cspdensenetb_ref_prn"] {
        let net = backbones::build_scaled(name, 6, 0.25).unwrap();
        // The arch name alone rebuilds the same network.
        assert_eq!(json(&backbones::build(&net.arch, 6).unwrap()), json(&net), "{name}");
    }
    assert_eq!(backbones::task("csppeleenet_ref_efm_sam_w0.5"), Some(Task::Detection));
    assert_eq!(backbones::task("cspresnet10_w0.5"), Some(Task::Classification));
    assert_eq!(backbones::default_num_classes("csppeleenet_ref_efm_sam_w0.5"), 80);
    assert!(csp_models::detectors::is_detector("csppeleenet_ref_prn3l_w0.25"));
    // A scaled detector's name is no backbone.
    assert!(csp_models::detectors::backbone_features("csppeleenet_ref_efm_sam_w0.5", 320).is_err());
}

#[test]
fn a_scaled_model_reloads_from_its_own_file() {
    let dir = std::env::temp_dir().join(format!("csp-width-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cspresnet10_w0.5.safetensors");
    let model =
        weights::load_model(Some(&Arch::Builtin("cspresnet10_w0.5".into())), None, &Device::Cpu, false).unwrap();
    assert_eq!(model.net.arch, "cspresnet10_w0.5");
    native::save(&model, &path).unwrap();
    // No architecture given: the file's network is used as it is.
    let loaded = weights::load_model(None, Some(&path), &Device::Cpu, false).unwrap();
    assert_eq!(json(&loaded.net), json(&model.net));
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let diff = (model.forward(&x).unwrap() - loaded.forward(&x).unwrap()).unwrap().abs().unwrap();
    assert!(diff.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_widths_are_errors() {
    for width in [0.0, -0.5, f64::NAN, f64::INFINITY, 17.0] {
        for name in ["cspresnet10", "csppeleenet_ref_efm_sam"] {
            let r = backbones::build_scaled(name, 10, width);
            assert!(matches!(r, Err(Error::Input(_))), "{name} at {width}: {r:?}");
        }
    }
    assert!(matches!(backbones::build("cspresnet10_w0", 10), Err(Error::Input(_))));
    // The timm-layout models and their detectors only build at width 1.
    for name in ["cspresnet50", "cspresnext50", "cspdarknet53", "cspresnext50_panet_spp", "cspdarknet53_panet_spp"] {
        assert!(backbones::build_scaled(name, 10, 1.0).is_ok(), "{name}");
        assert!(matches!(backbones::build_scaled(name, 10, 0.5), Err(Error::Input(_))), "{name}");
    }
    // A name that already carries a width takes no second one.
    assert!(matches!(backbones::build_scaled("cspresnet10_w0.5", 10, 0.5), Err(Error::Input(_))));
    assert!(matches!(backbones::build_scaled("nope", 10, 0.5), Err(Error::UnknownArch(_))));
    // Layers the width does not touch: the heads keep their anchors and class count.
    let net = backbones::build_scaled("csppeleenet_ref_efm_sam", 6, 0.25).unwrap();
    let yolos = net.layers.iter().filter(|l| matches!(&l.op, Op::Yolo(y) if y.classes == 6)).count();
    assert_eq!(yolos, 3);
}

fn csp_model(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_csp-model")).args(args).output().expect("run csp-model");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_width_flag() {
    let (ok, out, err) =
        csp_model(&["summary", "--arch", "cspresnet10", "--width", "0.5", "--classes", "10", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let net = backbones::build_scaled("cspresnet10", 10, 0.5).unwrap();
    assert_eq!(v["arch"], "cspresnet10_w0.5");
    assert_eq!(v["conv_weight_params"], conv_weights(&net));
    // The suffixed name works as an --arch too.
    let (ok, out2, err) = csp_model(&["summary", "--arch", "cspresnet10_w0.5", "--classes", "10", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(out2, out);
    for bad in [
        &["summary", "--arch", "cspresnet10", "--width", "0"][..],
        &["summary", "--arch", "cspresnet50", "--width", "0.5"],
        &["summary", "--cfg", "some.cfg", "--width", "0.5"],
        &["bench", "--width", "0.5"],
    ] {
        let (ok, _, err) = csp_model(bad);
        assert!(!ok && err.contains("width"), "{bad:?}: {err}");
    }
}

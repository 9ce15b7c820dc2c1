//! The `csp-model` binary, run as a user would.

use std::path::PathBuf;
use std::process::Command;

use candle_core::{Device, Tensor};

fn csp_model(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_csp-model")).args(args).output().expect("run csp-model");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn list_names_every_builtin() {
    let (ok, out, _) = csp_model(&["list"]);
    assert!(ok);
    for (name, _) in csp_models::backbones::ARCHITECTURES {
        assert!(out.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} missing from:\n{out}");
    }
}

#[test]
fn summary_json_has_the_totals() {
    let (ok, out, err) = csp_model(&["summary", "--arch", "cspresnet50", "--size", "256", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"], 21_616_168);
    for key in ["conv_weight_params", "bflops", "cio", "layers"] {
        assert!(!v[key].is_null(), "no `{key}`");
    }
    assert!(v["layers"].as_array().unwrap().len() > 50);
    // The table form prints the same totals.
    let (ok, out, _) = csp_model(&["summary", "--arch", "cspresnet50", "--size", "256"]);
    assert!(ok && out.contains("21616168"), "{out}");
}

#[test]
fn unknown_arch_is_a_clear_error() {
    let (ok, _, err) = csp_model(&["summary", "--arch", "resnet9000"]);
    assert!(!ok);
    assert!(err.contains("unknown architecture `resnet9000`"), "{err}");
}

#[test]
fn convert_then_predict_raw_tensors() {
    // A random-weight model saved in our format, then run from that file alone.
    let model = csp_models::weights::load_model(
        Some(&csp_models::weights::Arch::Builtin("cspdarknet53".into())),
        None,
        &Device::Cpu,
        false,
    )
    .unwrap();
    let weights = tmp("model.safetensors");
    csp_models::weights::native::save(&model, &weights).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let input = tmp("in.safetensors");
    let output = tmp("out.safetensors");
    candle_core::safetensors::save(&[("input", x.clone())].into_iter().collect(), &input).unwrap();
    let (ok, _, err) = csp_model(&[
        "predict",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let y = candle_core::safetensors::load(&output, &Device::Cpu).unwrap().remove("output").unwrap();
    assert_eq!(y.dims(), &[1, 1000]);
    let expected = model.folded().unwrap().forward(&x).unwrap();
    let diff = (y - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn predict_classifies_an_image_file() {
    let img = tmp("img.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128])).save(&img).unwrap();
    let model = csp_models::weights::load_model(
        Some(&csp_models::weights::Arch::Builtin("cspresnet50".into())),
        None,
        &Device::Cpu,
        false,
    )
    .unwrap();
    let weights = tmp("r50.safetensors");
    csp_models::weights::native::save(&model, &weights).unwrap();
    let (ok, out, err) = csp_model(&[
        "predict",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let classes = v[0]["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 3);
    let scores: Vec<f64> = classes.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0);
    // A file that is not an image is an error, not a panic.
    let (ok, _, err) =
        csp_model(&["predict", "--weights", weights.to_str().unwrap(), "--image", weights.to_str().unwrap()]);
    assert!(!ok && err.contains("image"), "{err}");
}

#[test]
fn bench_json_reports_median_and_throughput() {
    let (ok, out, err) = csp_model(&[
        "bench",
        "--arch",
        "cspdarknet53",
        "--batch",
        "1",
        "--size",
        "64",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["threads"], 1);
}

#[test]
fn predict_raw_tensors_of_a_detector_writes_every_head() {
    // The scaled-down detector fixture: three [yolo] heads at strides 8, 16 and 32.
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures");
    let cfg = fixtures.join("darknet_csdarknet53_panet_spp.cfg");
    let weights = fixtures.join("darknet_csdarknet53_panet_spp.weights");
    let io_path = fixtures.join("darknet_csdarknet53_panet_spp_io.safetensors");
    let io = candle_core::safetensors::load(io_path, &Device::Cpu).unwrap();
    let input = tmp("detector-in.safetensors");
    let output = tmp("detector-out.safetensors");
    candle_core::safetensors::save(&[("input", io["input"].clone())].into_iter().collect(), &input).unwrap();
    let (ok, _, err) = csp_model(&[
        "predict",
        "--cfg",
        cfg.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let heads = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    let mut names: Vec<&String> = heads.keys().collect();
    names.sort();
    assert_eq!(names, ["head_0", "head_1", "head_2"]);
    // Raw maps: 3 anchors x (3 classes + 5) channels on 64x96 / 8, 16, 32, equal to the reference.
    for (k, (h, w)) in [(8, 12), (4, 6), (2, 3)].into_iter().enumerate() {
        let name = format!("head_{k}");
        assert_eq!(heads[&name].dims(), &[1, 24, h, w], "{name}");
        let reference = &io[&name];
        let scale = reference.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
        let diff = (&heads[&name] - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-4 * scale, "{name}: {diff} vs scale {scale}");
    }
}

#[test]
fn device_flag_picks_the_device_or_says_why_not() {
    let bench = |device: &str| {
        csp_model(&[
            "bench", "--arch", "resnet10", "--size", "32", "--iters", "1", "--warmup", "0", "--json", "--device",
            device,
        ])
    };
    let (ok, out, err) = bench("cpu");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["device"], "cpu");
    let (ok, _, err) = bench("gpu0");
    assert!(!ok && err.contains("unknown device `gpu0`"), "{err}");
    let (ok, _, err) = bench("cuda:x");
    assert!(!ok && err.contains("unknown device `cuda:x`"), "{err}");
    // A CPU-only build names the feature it lacks instead of failing somewhere deeper.
    #[cfg(not(feature = "cuda"))]
    {
        let (ok, _, err) = bench("cuda:0");
        assert!(!ok && err.contains("--features cuda"), "{err}");
    }
}

#[test]
fn convert_without_weights_writes_a_random_model_that_loads_alone() {
    let out = tmp("random-resnet10.safetensors");
    let (ok, stdout, err) = csp_model(&["convert", "--arch", "resnet10", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("resnet10"), "{stdout}");
    let model = csp_models::weights::load_model(None, Some(&out), &Device::Cpu, true).unwrap();
    assert_eq!(model.net.arch, "resnet10");
    // Neither weights nor an architecture: nothing to convert.
    let (ok, _, err) = csp_model(&["convert", "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("give --weights"), "{err}");
}

//! `csp-model detect` and `csp-model summary --plot`, run as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use csp_models::heads::{postprocess, Letterbox, PostprocessConfig, YoloHead, COCO_CLASSES};
use csp_models::weights::{self, Arch};
use serde_json::Value;

fn csp_model(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_csp-model")).args(args).output().expect("run csp-model");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh directory per test (tests run in parallel).
fn tmp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-detect-test-{}", std::process::id())).join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(name);
    p.to_str().unwrap().to_string()
}

/// A wide test picture: a gradient with two flat blocks.
fn write_image(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        if (10..40).contains(&x) && (8..30).contains(&y) {
            image::Rgb([220, 30, 30])
        } else if x > w / 2 && y > h / 3 {
            image::Rgb([30, 200, 240])
        } else {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
        }
    })
    .save(path)
    .unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Each detection of a record: box inside the image, ordered, score above `thr`.
fn check_record(rec: &Value, w: f64, h: f64, thr: f64, classes: u64) -> Vec<Value> {
    assert_eq!(rec["width"].as_f64().unwrap(), w);
    assert_eq!(rec["height"].as_f64().unwrap(), h);
    let dets = rec["detections"].as_array().unwrap().clone();
    let mut last = f64::INFINITY;
    for d in &dets {
        let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(b.len(), 4);
        assert!(0.0 <= b[0] && b[0] <= b[2] && b[2] <= w, "x outside the image: {b:?}");
        assert!(0.0 <= b[1] && b[1] <= b[3] && b[3] <= h, "y outside the image: {b:?}");
        let score = d["score"].as_f64().unwrap();
        assert!(score > thr && score <= 1.0, "{score}");
        assert!(score <= last, "detections are sorted by score");
        last = score;
        assert!(d["class_id"].as_u64().unwrap() < classes);
        assert!(d["label"].is_string());
    }
    dets
}

#[test]
fn darknet_detector_json_matches_the_library_and_annotates() {
    let dir = tmp_dir("darknet");
    let img = dir.join("wide.png");
    write_image(&img, 100, 50);
    let out_dir = dir.join("annotated");
    let (cfg, weights) = (fixture("darknet_detector_layers.cfg"), fixture("darknet_detector_layers.weights"));
    let (ok, out, err) = csp_model(&[
        "detect",
        "--cfg",
        &cfg,
        "--weights",
        &weights,
        s(&img),
        "--score-threshold",
        "0.3",
        "--out-dir",
        s(&out_dir),
    ]);
    assert!(ok, "{err}");
    let records: Value = serde_json::from_str(&out).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["image"], s(&img));
    let dets = check_record(&records[0], 100.0, 50.0, 0.3, 3);
    assert!(!dets.is_empty(), "the fixture's random weights give boxes at 0.3");
    // Three classes, no labels file: labels are the class ids.
    for d in &dets {
        assert_eq!(d["label"].as_str().unwrap(), d["class_id"].as_u64().unwrap().to_string());
    }

    // The same pipeline in-process, sizes written out: the 100x50 image letterboxed into the
    // cfg's 32 (wide) x 24 (high) input.
    let model =
        weights::load_model(Some(&Arch::DarknetCfg(cfg.clone().into())), Some(Path::new(&weights)), &Device::Cpu, true)
            .unwrap();
    let picture = image::open(&img).unwrap();
    let x = model.net.preprocess.apply(&picture, (24, 32), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let heads = YoloHead::from_network(&model.net).unwrap().into_iter().map(|(_, h)| h);
    let maps: Vec<_> = model.forward_heads(&x).unwrap().into_iter().zip(heads).collect();
    let lb = Letterbox::new((100, 50), (32, 24)).unwrap();
    let cfg_post = PostprocessConfig { score_threshold: 0.3, ..Default::default() };
    let expected = postprocess(&maps, &lb, &cfg_post).unwrap().remove(0);
    assert_eq!(dets.len(), expected.len());
    for (got, want) in dets.iter().zip(&expected) {
        assert_eq!(got["class_id"].as_u64().unwrap() as usize, want.class_id);
        assert!((got["score"].as_f64().unwrap() - want.score as f64).abs() < 1e-5);
        for (g, w) in got["bbox"].as_array().unwrap().iter().zip(want.bbox) {
            assert!((g.as_f64().unwrap() - w as f64).abs() < 1e-3, "{got} vs {want:?}");
        }
    }

    // The annotated copy: same stem, PNG, original size, boxes drawn on it.
    let annotated = out_dir.join("wide.png");
    assert_eq!(records[0]["annotated"], s(&annotated));
    let drawn = image::open(&annotated).unwrap().to_rgb8();
    let original = picture.to_rgb8();
    assert_eq!(drawn.dimensions(), (100, 50));
    let changed = drawn.pixels().zip(original.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed > 50, "only {changed} pixels differ");
    // Every drawn pixel is the colour of one of the detected classes or label text.
    let mut allowed: Vec<image::Rgb<u8>> =
        dets.iter().map(|d| csp_models::draw::class_color(d["class_id"].as_u64().unwrap() as usize)).collect();
    allowed.extend([csp_models::draw::BLACK, csp_models::draw::WHITE]);
    for (a, b) in drawn.pixels().zip(original.pixels()) {
        assert!(a == b || allowed.contains(a), "unexpected colour {a:?}");
    }
}

#[test]
fn detect_filters_and_labels() {
    let dir = tmp_dir("filters");
    let img = dir.join("pic.png");
    write_image(&img, 64, 80);
    let labels = dir.join("names.txt");
    std::fs::write(&labels, "cat\ndog\nbird\n").unwrap();
    let (cfg, weights) = (fixture("darknet_detector_layers.cfg"), fixture("darknet_detector_layers.weights"));
    let run = |extra: &[&str]| {
        let mut args = vec!["detect", "--cfg", &cfg, "--weights", &weights, s(&img), "--score-threshold", "0.2"];
        args.extend_from_slice(extra);
        let (ok, out, err) = csp_model(&args);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        check_record(&v[0], 64.0, 80.0, 0.2, 3)
    };
    let all = run(&[]);
    assert!(all.len() > 2, "{} detections", all.len());
    assert_eq!(run(&["--max-detections", "2"]).len(), 2);
    let only_one = run(&["--classes", "1"]);
    assert!(only_one.iter().all(|d| d["class_id"] == 1));
    assert_eq!(only_one.len(), all.iter().filter(|d| d["class_id"] == 1).count());
    // Class-agnostic NMS never keeps more than per-class NMS.
    assert!(run(&["--agnostic"]).len() <= all.len());
    assert!(!run(&["--diou"]).is_empty());
    let names = ["cat", "dog", "bird"];
    for d in run(&["--labels", s(&labels)]) {
        assert_eq!(d["label"].as_str().unwrap(), names[d["class_id"].as_u64().unwrap() as usize]);
    }
}

#[test]
fn native_detector_file_alone_is_enough() {
    let dir = tmp_dir("native");
    // A built-in COCO detector with random weights, shrunk to a small non-square input.
    let mut net = csp_models::backbones::build("csppeleenet_ref_prn3l", 80).unwrap();
    net.input_size = (96, 128);
    let vm = VarMap::new();
    let model = csp_models::Model::load_unfolded(net, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let file = dir.join("prn3l.safetensors");
    weights::native::save(&model, &file).unwrap();
    let (a, b) = (dir.join("a.png"), dir.join("b.jpg"));
    write_image(&a, 120, 90);
    write_image(&b, 50, 70);
    let out_dir = dir.join("out");
    let (ok, out, err) = csp_model(&[
        "detect",
        "--weights",
        s(&file),
        s(&a),
        s(&b),
        "--score-threshold",
        "0.05",
        "--max-detections",
        "20",
        "--out-dir",
        s(&out_dir),
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 2);
    let first = check_record(&recs[0], 120.0, 90.0, 0.05, 80);
    let second = check_record(&recs[1], 50.0, 70.0, 0.05, 80);
    assert!(!first.is_empty() && first.len() <= 20);
    assert!(second.len() <= 20);
    // 80 classes: COCO names.
    for d in first.iter().chain(&second) {
        assert_eq!(d["label"].as_str().unwrap(), COCO_CLASSES[d["class_id"].as_u64().unwrap() as usize]);
    }
    assert_eq!(image::open(out_dir.join("a.png")).unwrap().width(), 120);
    assert_eq!(image::open(out_dir.join("b.png")).unwrap().height(), 70);
}

#[test]
fn classifier_is_a_clear_error() {
    let dir = tmp_dir("classifier");
    let img = dir.join("x.png");
    write_image(&img, 40, 40);
    let (ok, _, err) = csp_model(&[
        "detect",
        "--cfg",
        &fixture("darknet_classifier.cfg"),
        "--weights",
        &fixture("darknet_classifier.weights"),
        s(&img),
    ]);
    assert!(!ok);
    assert!(err.contains("classifier") && err.contains("no [yolo] heads"), "{err}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tmp_dir("bad");
    let img = dir.join("x.png");
    write_image(&img, 40, 40);
    let (cfg, weights) = (fixture("darknet_detector_layers.cfg"), fixture("darknet_detector_layers.weights"));
    let base = ["detect", "--cfg", &cfg, "--weights", &weights, s(&img)];
    let fails = |extra: &[&str], expect: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (ok, out, err) = csp_model(&args);
        assert!(!ok, "{extra:?} succeeded: {out}");
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fails(&["--score-threshold", "1.5"], "--score-threshold must be in [0, 1], got 1.5");
    fails(&["--iou-threshold=-0.1"], "--iou-threshold must be in [0, 1]");
    fails(&["--score-threshold", "nan"], "--score-threshold must be in [0, 1]");
    fails(&["--max-detections", "0"], "--max-detections must be at least 1");
    fails(&["--classes", "0,7"], "class id 7 does not exist (the model has 3 classes");
    fails(&[s(&dir.join("missing.jpg"))], "missing.jpg not found");
    let labels = dir.join("empty.txt");
    std::fs::write(&labels, "\n\n").unwrap();
    fails(&["--labels", s(&labels)], "has no names");
    // Two inputs that would be written to the same annotated file.
    let other = dir.join("sub");
    std::fs::create_dir_all(&other).unwrap();
    write_image(&other.join("x.png"), 20, 20);
    fails(&[s(&other.join("x.png")), "--out-dir", s(&dir.join("o"))], "would both be annotated as");
    // Annotating into the input's own folder would overwrite it.
    fails(&["--out-dir", s(&dir)], "would overwrite an input image");
    // Not an image at all.
    let junk = dir.join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    fails(&[s(&junk)], "decoding");

    let (ok, _, err) = csp_model(&["detect", "--cfg", &cfg, "--weights", s(&dir.join("nope.weights")), s(&img)]);
    assert!(!ok && err.contains("nope.weights not found"), "{err}");
}

#[test]
fn summary_plot_writes_the_bflops_chart() {
    let dir = tmp_dir("plot");
    let plot = dir.join("prn3l.png");
    let (ok, out, err) = csp_model(&["summary", "--arch", "csppeleenet_ref_prn3l", "--json", "--plot", s(&plot)]);
    assert!(ok, "{err}");
    // stdout stays pure JSON with --plot; the detector defaults to 80 classes.
    let v: Value = serde_json::from_str(&out).unwrap();
    let layers = v["layers"].as_array().unwrap().len();
    assert!(layers > 100, "{layers}");
    let img = image::open(&plot).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    assert!((640..=2400).contains(&w) && h > 300, "{w}x{h}");
    // Title, bars and background: more than two colours, mostly white.
    let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    assert!(white > (w * h) as usize / 2 && white < (w * h) as usize);
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(distinct.len() >= 5, "{} colours", distinct.len());

    // A darknet cfg with more than 300 layers keeps within the width limit.
    let big = dir.join("big.png");
    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/darknet/densenet201.cfg");
    let arch = if cfg.is_file() { vec!["--cfg", cfg.to_str().unwrap()] } else { vec!["--arch", "densenet201"] };
    let mut args = vec!["summary"];
    args.extend(arch);
    args.extend(["--plot", s(&big)]);
    let (ok, _, err) = csp_model(&args);
    assert!(ok, "{err}");
    let img = image::open(&big).unwrap();
    assert!(img.width() <= 2400 && img.width() >= 640);

    // Unwritable target: an error, no panic.
    let (ok, _, err) = csp_model(&["summary", "--arch", "resnet10", "--plot", s(&dir.join("no/such/dir/p.png"))]);
    assert!(!ok && err.contains("writing"), "{err}");
}

//! The `csp-train` binary end to end on tiny generated data: `classify` split in two by
//! `--resume` ends with exactly the weights of an uninterrupted run; `eval` prints sane JSON
//! for a classifier and a detector; training writes validation metrics and PNG curves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_csp-train");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-train-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn csp_train(args: &[&str]) -> Output {
    // One compute thread: the CI runner has two cores, and candle's pool spin-waits.
    Command::new(BIN).args(args).env("RAYON_NUM_THREADS", "1").output().expect("running csp-train")
}

fn ok(args: &[&str]) -> String {
    let out = csp_train(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "csp-train {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn fraction(v: &Value, key: &str) -> f64 {
    let x = v[key].as_f64().unwrap_or_else(|| panic!("`{key}` is not a number in {v}"));
    assert!((0.0..=1.0).contains(&x), "`{key}` = {x} outside [0, 1]");
    x
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
    assert!(img.width() > 100 && img.height() > 100);
    // Something is drawn: more than the white background and the axis grey.
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 4, "{} is nearly blank", path.display());
}

/// A run of `steps` updates of a tiny classifier. The learning rate is constant: the split run's
/// first half is its own `--steps` run, so a decaying schedule would differ by design.
fn classify(data: &Path, out: &Path, steps: usize, resume: bool) {
    let steps = steps.to_string();
    let mut args = vec![
        "classify",
        "--data",
        s(data),
        "--out",
        s(out),
        "--arch",
        "cspresnet10",
        "--width",
        "0.25",
        "--size",
        "32",
        "--batch-size",
        "4",
        "--steps",
        &steps,
        "--lr",
        "0.05",
        "--policy",
        "constant",
        "--warmup",
        "0",
        "--workers",
        "1",
        "--seed",
        "3",
        "--log-every",
        "1",
        "--quiet",
    ];
    if resume {
        args.extend(["--resume", s(out)]);
    }
    ok(&args);
}

#[test]
fn classify_resume_matches_one_run_and_eval_prints_accuracy() {
    let data = temp_dir("cls-data");
    // 20 images: 16 train (4 batches, so the 6 steps cross an epoch boundary), 4 val.
    ok(&["synth", "--out", s(&data), "--images", "20", "--seed", "5", "--format", "folder", "--size", "32"]);

    let whole = temp_dir("cls-whole");
    classify(&data, &whole, 6, false);
    let split = temp_dir("cls-split");
    classify(&data, &split, 3, false);
    let halfway = tensors(&split.join("model.safetensors"));
    classify(&data, &split, 6, true);

    let (a, b) = (tensors(&whole.join("model.safetensors")), tensors(&split.join("model.safetensors")));
    assert_eq!(a.len(), b.len());
    let mut moved = false;
    for (name, ta) in &a {
        let tb = b.get(name).unwrap_or_else(|| panic!("resumed run lacks `{name}`"));
        let (va, vb) =
            (ta.flatten_all().unwrap().to_vec1::<f32>().unwrap(), tb.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(va == vb, "`{name}` differs after resume");
        moved |= halfway[name].flatten_all().unwrap().to_vec1::<f32>().unwrap() != va;
    }
    assert!(moved, "the second half changed nothing: the comparison would be vacuous");

    // The resumed run's log continues the first half's: one loss row per step, no duplicates.
    let csv = std::fs::read_to_string(split.join("metrics.csv")).unwrap();
    let loss_steps: Vec<&str> =
        csv.lines().skip(1).filter(|l| l.split(',').nth(2).is_some_and(|c| !c.is_empty())).collect();
    assert_eq!(loss_steps.len(), 6, "{csv}");
    for plot in ["loss.png", "lr.png", "val.png"] {
        assert_png(&split.join(plot));
    }

    let stdout = ok(&["eval", "--weights", s(&whole.join("model.safetensors")), "--data", s(&data), "--json"]);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["task"], "classification");
    assert_eq!(v["images"], 4);
    let (top1, top5) = (fraction(&v, "top1"), fraction(&v, "top5"));
    assert!(top5 >= top1);
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 6);
    let counted: u64 = per_class.iter().map(|c| c["images"].as_u64().unwrap()).sum();
    assert_eq!(counted, 4);
    // The table form names every class.
    let table = ok(&["eval", "--weights", s(&whole.join("model.safetensors")), "--data", s(&data)]);
    assert!(table.contains("top-1") && table.contains("circle"), "{table}");
    // A classifier refuses detection annotations.
    let wrong =
        csp_train(&["eval", "--weights", s(&whole.join("model.safetensors")), "--data", s(&data), "--format", "coco"]);
    assert!(!wrong.status.success());
    for dir in [data, whole, split] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn detector_training_logs_val_ap_and_eval_prints_ap() {
    let data = temp_dir("det-data");
    ok(&["synth", "--out", s(&data), "--images", "10", "--seed", "6", "--format", "coco", "--size", "80x64"]);
    let out = temp_dir("det-run");
    let run = [
        "detect",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--arch",
        "csppeleenet_ref_efm_sam",
        "--width",
        "0.25",
        "--size",
        "64",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--lr",
        "0.001",
        "--eval-every",
        "1",
        "--log-every",
        "1",
        "--workers",
        "1",
        "--quiet",
    ];
    ok(&run);

    // metrics.csv: a validation row at each evaluation point (steps 1 and 2), AP values in [0, 1].
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (step, ap, ap50) = (col("step"), col("val_ap"), col("val_ap50"));
    let mut evaluated = Vec::new();
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells[ap].is_empty() {
            continue;
        }
        for c in [ap, ap50] {
            let v: f64 = cells[c].parse().unwrap();
            assert!((0.0..=1.0).contains(&v), "{line}");
        }
        evaluated.push(cells[step].parse::<f64>().unwrap());
    }
    assert_eq!(evaluated, [1.0, 2.0], "{csv}");
    for plot in ["loss.png", "lr.png", "val.png"] {
        assert_png(&out.join(plot));
    }

    let weights = out.join("model.safetensors");
    let stdout = ok(&["eval", "--weights", s(&weights), "--data", s(&data), "--json", "--batch-size", "3"]);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["task"], "detection");
    assert_eq!(v["images"], 2);
    for key in ["ap", "ap50", "ap75"] {
        fraction(&v, key);
    }
    assert!(v["ap50"].as_f64() >= v["ap75"].as_f64());
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 6);
    for c in per_class.iter().filter(|c| !c["ap"].is_null()) {
        fraction(c, "ap");
        fraction(c, "ap50");
    }
    // A detector refuses image folders; YOLO labels are missing here.
    for format in ["folder", "yolo"] {
        let wrong = csp_train(&["eval", "--weights", s(&weights), "--data", s(&data), "--format", format]);
        assert!(!wrong.status.success(), "--format {format} should fail");
    }
    // Not a weights file: an error, not a panic.
    let bogus = csp_train(&["eval", "--weights", s(&out.join("metrics.csv")), "--data", s(&data)]);
    assert!(!bogus.status.success());
    assert!(String::from_utf8_lossy(&bogus.stderr).contains("Error"), "{:?}", bogus);
    for dir in [data, out] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

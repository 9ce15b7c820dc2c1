//! The detector evaluation path below the network (decode, NMS, letterbox back to original
//! pixels, matching against the dataset's ground truth) fed with maps that encode the ground
//! truth itself; and the training-curve PNGs.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use csp_models::draw::lines::PALETTE;
use csp_models::heads::YoloHead;
use csp_models::preprocess::Preprocess;
use csp_train::data::{BoxLabel, DetBatch, DetDataset, DetFormat, DetLoader, LoaderConfig};
use csp_train::evaluate::{eval_postprocess, evaluate_head_maps, DetReport};
use csp_train::metrics_log::MetricsLog;
use csp_train::plots::{write_plots, LOSS_PLOT, LR_PLOT, VAL_PLOT};
use csp_train::synth::{run, SynthArgs, SynthFormat};

const NET: (usize, usize) = (96, 96);
/// A logit whose sigmoid is 1 - 2e-9: certain objectness and class, or (negated) none.
const SURE: f32 = 20.0;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csp-train-evalpath-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// Two heads (strides 8 and 4 on a 96x96 input), three anchors each.
fn heads(classes: usize) -> Vec<(YoloHead, usize)> {
    vec![
        (YoloHead::new(vec![(24.0, 24.0), (40.0, 30.0), (30.0, 40.0)], classes, 1.0).unwrap(), 12),
        (YoloHead::new(vec![(8.0, 8.0), (14.0, 10.0), (10.0, 14.0)], classes, 1.0).unwrap(), 24),
    ]
}

/// Raw maps that decode to exactly `boxes` (network-input pixels) per image, each with score
/// ~1 for its class: every box takes a free (head, anchor) slot at the cell of its centre.
fn encode(heads: &[(YoloHead, usize)], boxes: &[Vec<BoxLabel>]) -> Vec<Tensor> {
    let n = boxes.len();
    let mut maps: Vec<Vec<f32>> = heads.iter().map(|(h, g)| vec![-SURE; n * h.channels() * g * g]).collect();
    for (img, image_boxes) in boxes.iter().enumerate() {
        let mut used = std::collections::HashSet::new();
        'boxes: for b in image_boxes {
            let (cx, cy) = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
            for (k, (head, g)) in heads.iter().enumerate() {
                let (gx, gy) = (cx / NET.0 as f32 * *g as f32, cy / NET.1 as f32 * *g as f32);
                let (col, row) = ((gx.floor() as usize).min(g - 1), (gy.floor() as usize).min(g - 1));
                for (a, &(aw, ah)) in head.anchors.iter().enumerate() {
                    if !used.insert((k, a, row, col)) {
                        continue;
                    }
                    let stride = head.classes + 5;
                    let at = |ch: usize| (((img * head.anchors.len() + a) * stride + ch) * g + row) * g + col;
                    let map = &mut maps[k];
                    map[at(0)] = logit(gx - col as f32);
                    map[at(1)] = logit(gy - row as f32);
                    map[at(2)] = (b.width() / aw).ln();
                    map[at(3)] = (b.height() / ah).ln();
                    map[at(4)] = SURE;
                    map[at(5 + b.class)] = SURE;
                    continue 'boxes;
                }
            }
            panic!("no free slot for {b:?}");
        }
    }
    heads
        .iter()
        .zip(maps)
        .map(|((h, g), m)| Tensor::from_vec(m, (n, h.channels(), *g, *g), &Device::Cpu).unwrap())
        .collect()
}

fn loader(root: &Path) -> DetLoader {
    let config = LoaderConfig {
        batch_size: 3,
        workers: 0,
        prefetch: 1,
        seed: 0,
        train: false,
        size: NET,
        preprocess: Preprocess::DARKNET_DETECTOR,
    };
    DetLoader::new(DetDataset::open(root, "train", DetFormat::Coco).unwrap(), config).unwrap()
}

/// Evaluates maps encoding the ground truth boxes that `keep(image, box index)` selects,
/// mapped into the network input with each image's letterbox.
fn evaluate_encoded(loader: &DetLoader, keep: impl Fn(usize, usize) -> bool) -> DetReport {
    let classes = loader.dataset().classes.len();
    let heads = heads(classes);
    let plain: Vec<YoloHead> = heads.iter().map(|(h, _)| h.clone()).collect();
    // No suppression: same-class ground-truth boxes of the generated scenes may overlap.
    let cfg = eval_postprocess(0.001, 1.0);
    evaluate_head_maps(loader, &plain, &cfg, |batch: &DetBatch| {
        let boxes: Vec<Vec<BoxLabel>> = batch
            .indices
            .iter()
            .zip(&batch.letterboxes)
            .map(|(&i, lb)| {
                let gt = &loader.dataset().samples[i].boxes;
                let kept = gt.iter().enumerate().filter(|&(j, _)| keep(i, j));
                kept.map(|(_, b)| BoxLabel::from_corners(b.class, lb.forward_box(b.corners()))).collect()
            })
            .collect();
        Ok(encode(&heads, &boxes))
    })
    .unwrap()
}

#[test]
fn ground_truth_as_predictions_scores_ap_one_and_missed_boxes_cost_recall() {
    let root = temp_dir("data");
    // 160x128 images letterboxed into 96x96: the mapping back has to undo scale and padding.
    run(&SynthArgs::new(&root, 12, 9, SynthFormat::Coco)).unwrap();
    let loader = loader(&root);
    let dataset = loader.dataset();
    assert!(dataset.samples.len() >= 9 && dataset.samples.iter().any(|s| s.width != s.height));

    let perfect = evaluate_encoded(&loader, |_, _| true);
    assert_eq!(perfect.images, dataset.samples.len());
    let m = &perfect.summary;
    assert!(m.ap > 0.9999 && m.ap50 > 0.9999 && m.ap75 > 0.9999, "{m:?}");

    // Every other box missing: precision stays 1 up to each class's recall, then the curve ends.
    let keep = |i: usize, j: usize| (i + j).is_multiple_of(2);
    let half = evaluate_encoded(&loader, keep);
    let mut expected = Vec::new();
    for class in 0..dataset.classes.len() {
        let (mut kept, mut total) = (0usize, 0usize);
        for (i, s) in dataset.samples.iter().enumerate() {
            for (j, b) in s.boxes.iter().enumerate() {
                if b.class == class {
                    total += 1;
                    kept += usize::from(keep(i, j));
                }
            }
        }
        if total > 0 {
            let recall = kept as f64 / total as f64;
            expected.push((0..101).filter(|&k| recall >= k as f64 * 0.01).count() as f64 / 101.0);
        }
    }
    let want = expected.iter().sum::<f64>() / expected.len() as f64;
    let got = &half.summary;
    assert!(want < 0.9, "the crafted case should lose recall: {want}");
    for v in [got.ap, got.ap50, got.ap75] {
        assert!((v - want).abs() < 1e-9, "AP {v}, hand-computed {want}");
    }
    let _ = std::fs::remove_dir_all(root);
}

fn assert_png_with(path: &Path, colours: &[image::Rgb<u8>]) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert!(img.width() > 100 && img.height() > 100);
    for c in colours {
        assert!(img.pixels().any(|p| p == c), "{}: no {c:?} series", path.display());
    }
}

#[test]
fn plots_are_written_for_the_logged_curves() {
    let dir = temp_dir("plots");
    std::fs::create_dir_all(&dir).unwrap();
    let columns = ["step", "epoch", "loss", "box_loss", "obj_loss", "cls_loss", "lr", "val_ap", "val_ap50"];
    let mut log = MetricsLog::open(&dir, &columns, None).unwrap();
    for step in 1..=30 {
        let s = step as f64;
        let (b, o, c) = (2.0 / s, 1.0 / s, 0.5 / s);
        let row = [("step", s), ("loss", b + o + c), ("box_loss", b), ("obj_loss", o), ("cls_loss", c), ("lr", 0.01)];
        log.log(&row).unwrap();
    }
    // Before any validation only the loss and learning-rate charts exist.
    let written = write_plots(&log).unwrap();
    assert_eq!(written, [dir.join(LOSS_PLOT), dir.join(LR_PLOT)]);
    assert!(!dir.join(VAL_PLOT).exists());
    for step in [10.0, 20.0, 30.0] {
        log.log(&[("step", step), ("val_ap", step / 100.0), ("val_ap50", step / 50.0)]).unwrap();
    }
    let written = write_plots(&log).unwrap();
    assert_eq!(written.len(), 3);
    assert_png_with(&dir.join(LOSS_PLOT), &PALETTE[..4]);
    assert_png_with(&dir.join(LR_PLOT), &PALETTE[..1]);
    assert_png_with(&dir.join(VAL_PLOT), &PALETTE[..2]);
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    let _ = std::fs::remove_dir_all(dir);
}

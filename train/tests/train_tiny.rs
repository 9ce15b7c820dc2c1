//! End-to-end training on tiny generated data: the loss falls, and a resumed run ends with
//! exactly the parameters of an uninterrupted one.

use candle_core::{Device, Tensor};
use csp_models::layers::{Activation, ConvSpec};
use csp_models::network::{LinearSpec, Network, NetworkBuilder, Op, YoloSpec};
use csp_models::preprocess::Preprocess;
use csp_train::checkpoint::{self, TrainState};
use csp_train::data::{BoxLabel, ImageBatch};
use csp_train::loss::cross_entropy;
use csp_train::loss::yolo::{yolo_loss, YoloLossConfig};
use csp_train::optim::SgdConfig;
use csp_train::params::named_vars;
use csp_train::schedule::{Decay, Schedule};
use csp_train::trainer::Trainer;

const LEAKY: Activation = Activation::DARKNET_LEAKY;

fn tiny_classifier() -> Network {
    let mut b = NetworkBuilder::new(3);
    b.conv("stem", 8, 3, 2, 1, LEAKY);
    b.push(Op::MaxPool { size: 3, stride: 1, padding: 2 }, "pool");
    b.conv("mid", 16, 3, 2, 1, LEAKY);
    b.push(Op::AvgPool, "gap");
    b.push(Op::Linear(LinearSpec { name: "head.fc".into(), in_features: 16, out_features: 2 }), "head.fc");
    b.finish("tiny", (16, 16), 2, Preprocess::DARKNET_CLASSIFIER)
}

fn tiny_detector() -> Network {
    let mut b = NetworkBuilder::new(3);
    b.conv("c1", 8, 3, 2, 1, LEAKY);
    b.conv("c2", 16, 3, 2, 1, LEAKY);
    let c2 = b.last();
    b.conv("c3", 16, 3, 2, 1, LEAKY);
    b.push(Op::Upsample { stride: 2 }, "up");
    let up = b.last();
    b.concat(&[up, c2]);
    b.conv("c4", 16, 3, 1, 1, LEAKY);
    let spec = ConvSpec::new("pred", 16, 2 * 7, 1, 1).no_bn();
    b.push(Op::Conv(spec), "pred");
    let anchors = vec![[8.0, 8.0], [14.0, 14.0]];
    b.push(Op::Yolo(YoloSpec { mask: vec![0, 1], anchors, classes: 2, scale_x_y: 1.0 }), "yolo");
    b.finish("tinydet", (32, 32), 2, Preprocess::DARKNET_DETECTOR)
}

/// A deterministic pseudo-random number in [0, 1) from a counter.
fn noise(i: usize) -> f32 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    ((x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 40) as f32) / (1u64 << 24) as f32
}

/// Class 0: bright top half; class 1: bright bottom half; plus noise. Depends only on `step`.
fn class_batch(step: usize, n: usize) -> (ImageBatch, Vec<usize>) {
    let (h, w) = (16, 16);
    let mut data = Vec::with_capacity(n * 3 * h * w);
    let mut labels = Vec::new();
    for k in 0..n {
        let label = (k + step) % 2;
        labels.push(label);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let bright = (y < h / 2) == (label == 0);
                    let i = ((step * n + k) * 3 + c) * h * w + y * w + x;
                    data.push(if bright { 0.8 } else { 0.2 } + 0.3 * (noise(i) - 0.5));
                }
            }
        }
    }
    (ImageBatch { data, n, height: h, width: w }, labels)
}

/// One bright square per image (class 0: small, class 1: large) on a dark background.
fn det_batch(step: usize, n: usize) -> (ImageBatch, Vec<Vec<BoxLabel>>) {
    let (h, w) = (32usize, 32usize);
    let mut data = vec![0.1f32; n * 3 * h * w];
    let mut boxes = Vec::new();
    for k in 0..n {
        let r = step * n + k;
        let class = r % 2;
        let side = if class == 0 { 8 } else { 14 };
        let x0 = (noise(r * 2) * (w - side) as f32) as usize;
        let y0 = (noise(r * 2 + 1) * (h - side) as f32) as usize;
        for c in 0..3 {
            for y in y0..y0 + side {
                for x in x0..x0 + side {
                    data[((k * 3 + c) * h + y) * w + x] = 0.9;
                }
            }
        }
        let (x0, y0) = (x0 as f32, y0 as f32);
        boxes.push(vec![BoxLabel { class, x0, y0, x1: x0 + side as f32, y1: y0 + side as f32 }]);
    }
    (ImageBatch { data, n, height: h, width: w }, boxes)
}

fn trainer(net: Network, seed: u64, lr: f64, steps: usize) -> Trainer {
    let schedule =
        Schedule { base_lr: lr, total_steps: steps, decay: Decay::Poly { power: 1.0 }, warmup: 2, warmup_power: 1.0 };
    let sgd = SgdConfig { momentum: 0.9, weight_decay: 5e-4 };
    Trainer::new(net, &Device::Cpu, seed, sgd, schedule, 0.1, None).unwrap().0
}

fn classify_step(t: &mut Trainer, step: usize) -> f64 {
    let (images, labels) = class_batch(step, 8);
    let x = t.images(&images).unwrap();
    let (outs, stats) = t.model.forward_train(&x, &[t.model.net.output_layer()]).unwrap();
    let loss = cross_entropy(&outs[0], &labels).unwrap();
    t.update(&loss, &stats).unwrap();
    loss.to_scalar::<f32>().unwrap() as f64
}

fn detect_step(t: &mut Trainer, step: usize) -> f64 {
    let (images, boxes) = det_batch(step, 8);
    let x = t.images(&images).unwrap();
    let heads = t.model.head_layers();
    let specs: Vec<YoloSpec> = heads
        .iter()
        .map(|&i| match &t.model.net.layers[i].op {
            Op::Yolo(y) => y.clone(),
            _ => unreachable!("head_layers lists yolo layers"),
        })
        .collect();
    let (maps, stats) = t.model.forward_train(&x, &heads).unwrap();
    let parts = yolo_loss(&maps, &specs, &boxes, (32, 32), &YoloLossConfig::default()).unwrap();
    t.update(&parts.total, &stats).unwrap();
    parts.total.to_scalar::<f32>().unwrap() as f64
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn classifier_loss_falls() {
    let mut t = trainer(tiny_classifier(), 1, 0.05, 40);
    let losses: Vec<f64> = (0..40).map(|s| classify_step(&mut t, s)).collect();
    let (first, last) = (mean(&losses[..5]), mean(&losses[35..]));
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
    // Inference mode (running statistics) classifies held-out batches.
    let (images, labels) = class_batch(1000, 16);
    let logits = t.model.forward(&t.images(&images).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    let right = logits.iter().zip(&labels).filter(|(l, &y)| (l[1] > l[0]) == (y == 1)).count();
    assert!(right >= 14, "{right}/16 right in eval mode");
}

#[test]
fn detector_loss_falls() {
    let mut t = trainer(tiny_detector(), 2, 0.01, 60);
    let losses: Vec<f64> = (0..60).map(|s| detect_step(&mut t, s)).collect();
    let (first, last) = (mean(&losses[..5]), mean(&losses[55..]));
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}

fn snapshot(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    named_vars(&t.varmap)
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn resume_matches_uninterrupted_run() {
    let dir = std::env::temp_dir().join(format!("csp-train-resume-{}", std::process::id()));
    let total = 6;
    let mut straight = trainer(tiny_detector(), 3, 0.01, total);
    for s in 0..total {
        detect_step(&mut straight, s);
    }

    let mut first = trainer(tiny_detector(), 3, 0.01, total);
    for s in 0..3 {
        detect_step(&mut first, s);
    }
    let state = TrainState { step: 3, epoch: 0, step_in_epoch: 3, settings: serde_json::Value::Null };
    checkpoint::save(&dir, &first, &state).unwrap();
    drop(first);

    // A different seed: everything must come from the checkpoint.
    let ck = checkpoint::load(&dir, &Device::Cpu).unwrap();
    let mut resumed = trainer(ck.network.clone(), 99, 0.01, total);
    let restored = checkpoint::restore(&mut resumed, ck).unwrap();
    assert_eq!(restored, state);
    for s in restored.step..total {
        detect_step(&mut resumed, s);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (snapshot(&straight), snapshot(&resumed));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let same = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "`{na}` differs after resuming");
    }
    // The momentum buffers drive the next update: they must match too.
    let ma: Vec<Vec<f32>> = straight.sgd.state().iter().map(|(_, t)| flat(t)).collect();
    let mb: Vec<Vec<f32>> = resumed.sgd.state().iter().map(|(_, t)| flat(t)).collect();
    assert_eq!(ma, mb);
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

//! Finite differences against autograd for the losses, in f64.

use candle_core::{DType, Device, Tensor, Var};
use csp_models::network::YoloSpec;
use csp_train::data::BoxLabel;
use csp_train::loss::cross_entropy;
use csp_train::loss::yolo::{yolo_loss, BoxLoss, YoloLossConfig};

fn anchors() -> Vec<[f32; 2]> {
    vec![[6.0, 8.0], [12.0, 10.0], [20.0, 24.0], [30.0, 18.0]]
}

fn heads() -> Vec<YoloSpec> {
    vec![
        YoloSpec { mask: vec![2, 3], anchors: anchors(), classes: 3, scale_x_y: 1.05 },
        YoloSpec { mask: vec![0, 1], anchors: anchors(), classes: 3, scale_x_y: 1.0 },
    ]
}

fn truth() -> Vec<Vec<BoxLabel>> {
    vec![
        vec![
            BoxLabel { class: 0, x0: 3.0, y0: 5.0, x1: 11.0, y1: 12.0 },
            BoxLabel { class: 2, x0: 14.0, y0: 6.0, x1: 40.0, y1: 30.0 },
        ],
        vec![BoxLabel { class: 1, x0: 20.0, y0: 20.0, x1: 31.0, y1: 29.0 }],
    ]
}

/// Maps for a 32x32 input: stride 16 (2x2) and stride 8 (4x4), 2 anchors x 8 channels each.
fn maps(seed: u64) -> Vec<Var> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    [(2usize, 2usize), (4, 4)]
        .iter()
        .map(|&(h, w)| {
            let v: Vec<f64> = (0..2 * 16 * h * w).map(|_| next() * 1.5).collect();
            Var::from_tensor(&Tensor::from_vec(v, (2, 16, h, w), &Device::Cpu).unwrap()).unwrap()
        })
        .collect()
}

fn loss_value(maps: &[Tensor], cfg: &YoloLossConfig) -> f64 {
    let parts = yolo_loss(maps, &heads(), &truth(), (32, 32), cfg).unwrap();
    parts.total.to_scalar::<f64>().unwrap()
}

fn check_yolo(box_loss: BoxLoss) {
    // Ignore threshold high enough that no prediction sits near it: the loss is smooth here.
    let cfg = YoloLossConfig { box_loss, ignore_thresh: 0.99, ..Default::default() };
    let vars = maps(7);
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let parts = yolo_loss(&tensors, &heads(), &truth(), (32, 32), &cfg).unwrap();
    assert_eq!(parts.positives, 3);
    let grads = parts.total.backward().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (h, var) in vars.iter().enumerate() {
        let g = grads.get(var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // Every coordinate of the small map; a stride through the larger one.
        let step = if h == 0 { 1 } else { 7 };
        for i in (0..base.len()).step_by(step) {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let moved = Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap();
                let ms: Vec<Tensor> =
                    tensors.iter().enumerate().map(|(j, t)| if j == h { moved.clone() } else { t.clone() }).collect();
                loss_value(&ms, &cfg)
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let tol = 1e-5 * numeric.abs().max(1.0);
            assert!(
                (numeric - g[i]).abs() < tol,
                "{box_loss:?} head {h} coordinate {i}: autograd {} numeric {numeric}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 50);
}

#[test]
fn yolo_mse_gradient() {
    check_yolo(BoxLoss::Mse);
}

#[test]
fn yolo_giou_gradient() {
    check_yolo(BoxLoss::Giou);
}

#[test]
fn yolo_ciou_gradient() {
    check_yolo(BoxLoss::Ciou);
}

#[test]
fn yolo_positive_slots_get_box_gradient() {
    // The box columns of a cell without ground truth get no gradient; the responsible one does.
    let cfg = YoloLossConfig::default();
    let vars = maps(3);
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = yolo_loss(&tensors, &heads(), &truth(), (32, 32), &cfg).unwrap().total.backward().unwrap();
    // Box (14..40, 6..30) is 26x24: best anchor 20x24 = anchor 2 = head 0, slot 0; centre (27, 18)
    // at stride 16 is cell (row 1, col 1); image 0.
    let g = grads.get(&vars[0]).unwrap().to_dtype(DType::F64).unwrap();
    let tx = g.get(0).unwrap().get(0).unwrap().get(1).unwrap().get(1).unwrap().to_scalar::<f64>().unwrap();
    let tx_empty = g.get(0).unwrap().get(0).unwrap().get(0).unwrap().get(0).unwrap().to_scalar::<f64>().unwrap();
    assert!(tx.abs() > 1e-6);
    assert_eq!(tx_empty, 0.0);
}

#[test]
fn cross_entropy_gradient() {
    let v: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.7).collect();
    let logits = Var::from_tensor(&Tensor::from_vec(v.clone(), (3, 4), &Device::Cpu).unwrap()).unwrap();
    let labels = [1usize, 3, 0];
    let loss = cross_entropy(logits.as_tensor(), &labels).unwrap();
    let g = loss.backward().unwrap().get(&logits).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-6;
    for i in 0..12 {
        let at = |d: f64| {
            let mut w = v.clone();
            w[i] += d;
            let t = Tensor::from_vec(w, (3, 4), &Device::Cpu).unwrap();
            cross_entropy(&t, &labels).unwrap().to_scalar::<f64>().unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!((numeric - g[i]).abs() < 1e-7, "logit {i}: {} vs {numeric}", g[i]);
    }
}

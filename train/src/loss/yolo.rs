//! The YOLOv3 loss, consistent with the decoding of `csp_models::heads::yolo`:
//! centre = (cell + sigmoid(t) * s - (s - 1) / 2) / grid * input, size = exp(t) * anchor.
//!
//! Each ground-truth box goes to the one anchor, among all anchors of all heads, whose (w, h)
//! overlaps it best; the head owning that anchor predicts it at the grid cell holding the box
//! centre. That prediction gets the box loss (MSE on the raw offsets, or GIoU/CIoU on the
//! decoded box), class BCE against a one-hot target and objectness BCE towards 1. Every other
//! prediction gets objectness BCE towards 0, except those already overlapping some ground-truth
//! box by more than `ignore_thresh` (no objectness loss at all, as darknet).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use csp_models::network::YoloSpec;
use serde::{Deserialize, Serialize};

use super::bce_with_logits;
use super::boxes::{ciou_loss, giou_loss, CxCyWh};
use crate::data::BoxLabel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BoxLoss {
    /// Squared error on (tx, ty, tw, th) weighted by 2 - relative box area (YOLOv3).
    Mse,
    Giou,
    Ciou,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct YoloLossConfig {
    pub ignore_thresh: f32,
    pub box_loss: BoxLoss,
    pub box_weight: f64,
    pub obj_weight: f64,
    pub cls_weight: f64,
}

impl Default for YoloLossConfig {
    fn default() -> Self {
        YoloLossConfig { ignore_thresh: 0.7, box_loss: BoxLoss::Mse, box_weight: 1.0, obj_weight: 1.0, cls_weight: 1.0 }
    }
}

/// The loss (summed over predictions, divided by the batch size) and its parts as numbers.
pub struct LossParts {
    pub total: Tensor,
    pub boxes: f64,
    pub objectness: f64,
    pub classes: f64,
    /// Ground-truth boxes that got a prediction (after same-cell collisions).
    pub positives: usize,
}

/// A prediction slot responsible for one ground-truth box.
#[derive(Clone, Debug)]
struct Positive {
    row: usize,
    col: usize,
    anchor: (f32, f32),
    /// Target centre offset within the cell, in [0, 1).
    tx: f32,
    ty: f32,
    /// Target log size ratio to the anchor.
    tw: f32,
    th: f32,
    class: usize,
    /// Ground truth as centre/size in input pixels.
    gt: [f32; 4],
    /// 2 - w * h / (input area): small boxes weigh more.
    weight: f32,
}

/// IoU of two boxes sharing a centre, from their (w, h).
fn wh_iou(a: (f32, f32), b: (f32, f32)) -> f32 {
    let inter = a.0.min(b.0) * a.1.min(b.1);
    inter / (a.0 * a.1 + b.0 * b.1 - inter)
}

fn corner_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `maps[i]` is the raw map of head `heads[i]` ([N, A * (5 + C), H, W]); `truth[n]` the boxes of
/// image n in input pixels; `net` the input (width, height).
pub fn yolo_loss(
    maps: &[Tensor],
    heads: &[YoloSpec],
    truth: &[Vec<BoxLabel>],
    net: (usize, usize),
    cfg: &YoloLossConfig,
) -> Result<LossParts> {
    if maps.len() != heads.len() || maps.is_empty() {
        bail!("{} maps for {} yolo heads", maps.len(), heads.len());
    }
    let n = maps[0].dim(0)?;
    if truth.len() != n {
        bail!("{} box lists for a batch of {n}", truth.len());
    }
    let (net_w, net_h) = (net.0 as f32, net.1 as f32);

    // Anchor assignment over all heads' anchors.
    let mut candidates: Vec<(usize, usize, (f32, f32))> = Vec::new();
    for (h, spec) in heads.iter().enumerate() {
        for (a, &m) in spec.mask.iter().enumerate() {
            let Some(anchor) = spec.anchors.get(m) else { bail!("yolo mask {m} names a missing anchor") };
            candidates.push((h, a, (anchor[0], anchor[1])));
        }
    }
    let mut positives: Vec<BTreeMap<(usize, usize, usize), Positive>> = vec![BTreeMap::new(); heads.len()];
    let mut grids = Vec::with_capacity(heads.len());
    for (map, spec) in maps.iter().zip(heads) {
        let (_, c, gh, gw) = map.dims4()?;
        if c != spec.channels() {
            bail!("yolo map has {c} channels, the head expects {}", spec.channels());
        }
        grids.push((gh, gw));
    }
    for (img, boxes) in truth.iter().enumerate() {
        for b in boxes {
            let (w, h) = (b.width(), b.height());
            if !(w > 0.0 && h > 0.0 && w.is_finite() && h.is_finite()) {
                continue;
            }
            let best = candidates.iter().map(|&(hd, a, anc)| (hd, a, anc, wh_iou((w, h), anc))).fold(
                None,
                |best: Option<(usize, usize, (f32, f32), f32)>, c| match best {
                    Some(b) if b.3 >= c.3 => Some(b),
                    _ => Some(c),
                },
            );
            let Some((hd, a, anchor, _)) = best else { continue };
            let classes = heads[hd].classes;
            if b.class >= classes {
                bail!("box class {} but the detector has {classes} classes", b.class);
            }
            let (gh, gw) = grids[hd];
            let (cx, cy) = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
            let fx = cx / net_w * gw as f32;
            let fy = cy / net_h * gh as f32;
            let col = (fx.floor().max(0.0) as usize).min(gw - 1);
            let row = (fy.floor().max(0.0) as usize).min(gh - 1);
            let pos = Positive {
                row,
                col,
                anchor,
                tx: fx - col as f32,
                ty: fy - row as f32,
                tw: (w / anchor.0).ln(),
                th: (h / anchor.1).ln(),
                class: b.class,
                gt: [cx, cy, w, h],
                weight: 2.0 - (w * h) / (net_w * net_h),
            };
            // Two boxes on one slot: the later wins, as in darknet.
            positives[hd].insert((img, a, row * gw + col), pos);
        }
    }

    let dtype = maps[0].dtype();
    let device = maps[0].device();
    let zero = Tensor::zeros((), dtype, device)?;
    let (mut box_sum, mut obj_sum, mut cls_sum) = (zero.clone(), zero.clone(), zero);
    let mut positive_count = 0;
    for ((map, spec), (slots, &(gh, gw))) in maps.iter().zip(heads).zip(positives.iter().zip(&grids)) {
        let anchors: Vec<(f32, f32)> = spec.mask.iter().map(|&m| (spec.anchors[m][0], spec.anchors[m][1])).collect();
        let a_count = anchors.len();
        let per = spec.classes + 5;
        let cells = gh * gw;
        let s = spec.scale_x_y;
        let shift = 0.5 * (s - 1.0);

        // Objectness targets and the ignore mask, from the current (detached) predictions.
        let raw = map.detach().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let rows = n * a_count * cells;
        let mut obj_target = vec![0f32; rows];
        let mut obj_mask = vec![1f32; rows];
        for img in 0..n {
            let gts: Vec<[f32; 4]> = truth[img].iter().map(|b| b.corners()).collect();
            if gts.is_empty() {
                continue;
            }
            for (a, &(aw, ah)) in anchors.iter().enumerate() {
                let base = (img * a_count + a) * per * cells;
                for cell in 0..cells {
                    let at = |k: usize| raw[base + k * cells + cell];
                    let (row, col) = ((cell / gw) as f32, (cell % gw) as f32);
                    let cx = (col + sigmoid(at(0)) * s - shift) / gw as f32 * net_w;
                    let cy = (row + sigmoid(at(1)) * s - shift) / gh as f32 * net_h;
                    let (bw, bh) = (at(2).min(20.0).exp() * aw, at(3).min(20.0).exp() * ah);
                    let pred = [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0];
                    if gts.iter().any(|g| corner_iou(pred, *g) > cfg.ignore_thresh) {
                        obj_mask[(img * a_count + a) * cells + cell] = 0.0;
                    }
                }
            }
        }
        for &(img, a, cell) in slots.keys() {
            let r = (img * a_count + a) * cells + cell;
            obj_target[r] = 1.0;
            obj_mask[r] = 1.0;
        }

        // Rows (image, anchor, cell), columns (x, y, w, h, obj, classes...).
        let table = map.reshape((n, a_count, per, cells))?.transpose(2, 3)?.reshape((rows, per))?;
        let obj_logits = table.narrow(1, 4, 1)?.squeeze(1)?;
        let target = Tensor::from_vec(obj_target, rows, device)?.to_dtype(dtype)?;
        let mask = Tensor::from_vec(obj_mask, rows, device)?.to_dtype(dtype)?;
        obj_sum = (obj_sum + (bce_with_logits(&obj_logits, &target)? * mask)?.sum_all()?)?;

        if slots.is_empty() {
            continue;
        }
        positive_count += slots.len();
        let idx: Vec<u32> = slots.keys().map(|&(img, a, cell)| ((img * a_count + a) * cells + cell) as u32).collect();
        let p: Vec<&Positive> = slots.values().collect();
        let sel = table.index_select(&Tensor::new(idx.as_slice(), device)?, 0)?;
        let column = |f: &dyn Fn(&Positive) -> f32| -> Result<Tensor> {
            let v: Vec<f32> = p.iter().map(|q| f(q)).collect();
            Ok(Tensor::from_vec(v, p.len(), device)?.to_dtype(dtype)?)
        };

        let mut onehot = vec![0f32; p.len() * spec.classes];
        for (i, q) in p.iter().enumerate() {
            onehot[i * spec.classes + q.class] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (p.len(), spec.classes), device)?.to_dtype(dtype)?;
        cls_sum = (cls_sum + bce_with_logits(&sel.narrow(1, 5, spec.classes)?, &onehot)?.sum_all()?)?;

        let t = |k: usize| -> Result<Tensor> { Ok(sel.narrow(1, k, 1)?.squeeze(1)?) };
        let offset =
            |k: usize| -> Result<Tensor> { Ok(((candle_nn::ops::sigmoid(&t(k)?)? * s as f64)? - shift as f64)?) };
        let (ox, oy) = (offset(0)?, offset(1)?);
        let weight = column(&|q| q.weight)?;
        let per_box = match cfg.box_loss {
            BoxLoss::Mse => {
                let sq =
                    |pred: &Tensor, f: &dyn Fn(&Positive) -> f32| -> Result<Tensor> { Ok((pred - column(f)?)?.sqr()?) };
                let sum = (((sq(&ox, &|q| q.tx)? + sq(&oy, &|q| q.ty)?)? + sq(&t(2)?, &|q| q.tw)?)?
                    + sq(&t(3)?, &|q| q.th)?)?;
                (sum * weight)?
            }
            BoxLoss::Giou | BoxLoss::Ciou => {
                let cx = ((column(&|q| q.col as f32)? + ox)? * (net_w as f64 / gw as f64))?;
                let cy = ((column(&|q| q.row as f32)? + oy)? * (net_h as f64 / gh as f64))?;
                let w = (t(2)?.clamp(-20.0, 20.0)?.exp()? * column(&|q| q.anchor.0)?)?;
                let h = (t(3)?.clamp(-20.0, 20.0)?.exp()? * column(&|q| q.anchor.1)?)?;
                let (gx, gy, gw_, gh_) =
                    (column(&|q| q.gt[0])?, column(&|q| q.gt[1])?, column(&|q| q.gt[2])?, column(&|q| q.gt[3])?);
                let pred = CxCyWh { cx: &cx, cy: &cy, w: &w, h: &h };
                let gt = CxCyWh { cx: &gx, cy: &gy, w: &gw_, h: &gh_ };
                let l = if cfg.box_loss == BoxLoss::Giou { giou_loss(&pred, &gt)? } else { ciou_loss(&pred, &gt)? };
                (l * weight)?
            }
        };
        box_sum = (box_sum + per_box.sum_all()?)?;
    }
    let scale = 1.0 / n.max(1) as f64;
    let total =
        ((((&box_sum * cfg.box_weight)? + (&obj_sum * cfg.obj_weight)?)? + (&cls_sum * cfg.cls_weight)?)? * scale)?;
    let value = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()? * scale) };
    Ok(LossParts {
        boxes: value(&box_sum)?,
        objectness: value(&obj_sum)?,
        classes: value(&cls_sum)?,
        total,
        positives: positive_count,
    })
}

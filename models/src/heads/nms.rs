//! Greedy non-maximum suppression on CPU data: plain IoU or DIoU (darknet's `nms_kind`),
//! per class or across classes.

use serde::{Deserialize, Serialize};

/// A box with one class and its score, corners `[x1, y1, x2, y2]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredBox {
    pub bbox: [f32; 4],
    pub score: f32,
    pub class_id: usize,
}

/// How overlap is measured when deciding whether a box suppresses another.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NmsKind {
    /// Suppress when IoU > threshold (darknet `greedynms`).
    Greedy,
    /// Suppress when IoU - (d² / c²)^beta > threshold, d the distance between centres and c the
    /// diagonal of the smallest box enclosing both (darknet `diounms`, `beta_nms`): boxes whose
    /// centres are far apart survive overlaps that plain NMS would remove.
    Diou { beta: f32 },
}

impl NmsKind {
    /// DIoU with darknet's default `beta_nms=0.6`.
    pub const DIOU: NmsKind = NmsKind::Diou { beta: 0.6 };

    /// The overlap this kind compares with the threshold.
    pub fn overlap(&self, a: &[f32; 4], b: &[f32; 4]) -> f32 {
        match *self {
            NmsKind::Greedy => iou(a, b),
            NmsKind::Diou { beta } => iou(a, b) - diou_penalty(a, b, beta),
        }
    }
}

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union; 0 when the union is empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// (d² / c²)^beta: squared centre distance over the squared diagonal of the enclosing box;
/// 0 when that diagonal is 0.
pub fn diou_penalty(a: &[f32; 4], b: &[f32; 4], beta: f32) -> f32 {
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let c2 = cw * cw + ch * ch;
    if c2 <= 0.0 {
        return 0.0;
    }
    let dx = (a[0] + a[2] - b[0] - b[2]) / 2.0;
    let dy = (a[1] + a[3] - b[1] - b[3]) / 2.0;
    ((dx * dx + dy * dy) / c2).powf(beta)
}

/// Greedy NMS: boxes in descending score order are kept unless a kept box (of the same class,
/// or of any class when `class_agnostic`) overlaps them by more than `iou_threshold`. Stops at
/// `max_detections` kept boxes. Boxes with a NaN score or non-finite corners are dropped. The
/// result is sorted by descending score; equal scores keep their input order.
pub fn nms(
    boxes: &[ScoredBox],
    kind: NmsKind,
    iou_threshold: f32,
    class_agnostic: bool,
    max_detections: usize,
) -> Vec<ScoredBox> {
    let mut order: Vec<&ScoredBox> =
        boxes.iter().filter(|b| !b.score.is_nan() && b.bbox.iter().all(|v| v.is_finite())).collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<ScoredBox> = Vec::new();
    for cand in order {
        if kept.len() >= max_detections {
            break;
        }
        let suppressed = kept.iter().any(|k| {
            (class_agnostic || k.class_id == cand.class_id) && kind.overlap(&k.bbox, &cand.bbox) > iou_threshold
        });
        if !suppressed {
            kept.push(*cand);
        }
    }
    kept
}

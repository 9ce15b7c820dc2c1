//! COCO-style detection average precision, following `pycocotools`' COCOeval for bounding boxes
//! (all areas, `maxDets` per image and class): per class and IoU threshold, predictions sorted
//! by score match greedily the unmatched ground truth they overlap best (IoU >= threshold); the
//! precision/recall curve is made monotone and read at the 101 recall points 0, 0.01, ..., 1.

use anyhow::{bail, Result};
use csp_models::heads::Detection;

use crate::data::BoxLabel;

/// 0.50, 0.55, ..., 0.95.
pub const COCO_IOU_THRESHOLDS: [f64; 10] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// IoU of two `[x0, y0, x1, y1]` boxes (continuous areas, as COCO; 0 when both are empty).
pub fn box_iou(a: [f32; 4], b: [f32; 4]) -> f64 {
    let [a, b] = [a, b].map(|v| v.map(f64::from));
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |v: [f64; 4]| (v[2] - v[0]).max(0.0) * (v[3] - v[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// One class's result.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAp {
    /// Mean over the IoU thresholds.
    pub ap: f64,
    /// AP at each of [`COCO_IOU_THRESHOLDS`].
    pub per_threshold: Vec<f64>,
    pub ground_truth: usize,
    pub predictions: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApSummary {
    /// Means over the classes that have ground truth (0 when none has).
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    /// Per class; `None` for a class without ground truth (left out of the means, as COCO does).
    pub per_class: Vec<Option<ClassAp>>,
}

/// Accumulates images, then computes AP.
#[derive(Clone, Debug)]
pub struct DetectionEval {
    num_classes: usize,
    max_dets: usize,
    images: Vec<(Vec<Detection>, Vec<BoxLabel>)>,
}

impl DetectionEval {
    /// COCO's default of 100 detections per image and class.
    pub fn new(num_classes: usize) -> Self {
        Self::with_max_dets(num_classes, 100)
    }

    pub fn with_max_dets(num_classes: usize, max_dets: usize) -> Self {
        DetectionEval { num_classes, max_dets, images: Vec::new() }
    }

    /// One image's predictions and ground truth, in the same pixel frame.
    pub fn add_image(&mut self, predictions: &[Detection], ground_truth: &[BoxLabel]) -> Result<()> {
        for p in predictions {
            if p.class_id >= self.num_classes {
                bail!("prediction class {} is out of range ({} classes)", p.class_id, self.num_classes);
            }
            if !p.score.is_finite() || !p.bbox.iter().all(|v| v.is_finite()) {
                bail!("prediction has a non-finite score or box: {p:?}");
            }
        }
        if let Some(g) = ground_truth.iter().find(|g| g.class >= self.num_classes) {
            bail!("ground-truth class {} is out of range ({} classes)", g.class, self.num_classes);
        }
        self.images.push((predictions.to_vec(), ground_truth.to_vec()));
        Ok(())
    }

    pub fn summarize(&self) -> ApSummary {
        let per_class: Vec<Option<ClassAp>> = (0..self.num_classes).map(|c| self.class_ap(c)).collect();
        let evaluated: Vec<&ClassAp> = per_class.iter().flatten().collect();
        let mean = |f: &dyn Fn(&ClassAp) -> f64| {
            if evaluated.is_empty() {
                0.0
            } else {
                evaluated.iter().map(|c| f(c)).sum::<f64>() / evaluated.len() as f64
            }
        };
        ApSummary {
            ap: mean(&|c| c.ap),
            ap50: mean(&|c| c.per_threshold[0]),
            ap75: mean(&|c| c.per_threshold[5]),
            per_class,
        }
    }

    fn class_ap(&self, class: usize) -> Option<ClassAp> {
        // Per image: this class's ground truth, and its predictions best first, capped.
        let mut ground_truth = Vec::with_capacity(self.images.len());
        let mut predictions = Vec::new();
        for (image, (preds, gts)) in self.images.iter().enumerate() {
            ground_truth.push(gts.iter().filter(|g| g.class == class).map(BoxLabel::corners).collect::<Vec<_>>());
            let mut mine: Vec<&Detection> = preds.iter().filter(|p| p.class_id == class).collect();
            mine.sort_by(|a, b| b.score.total_cmp(&a.score));
            predictions.extend(mine.into_iter().take(self.max_dets).map(|p| (p.score, image, p.bbox)));
        }
        let n_gt: usize = ground_truth.iter().map(Vec::len).sum();
        if n_gt == 0 {
            return None;
        }
        // Stable: equal scores keep image order, as COCOeval's mergesort does.
        predictions.sort_by(|a, b| b.0.total_cmp(&a.0));
        let per_threshold: Vec<f64> =
            COCO_IOU_THRESHOLDS.iter().map(|&t| threshold_ap(&predictions, &ground_truth, n_gt, t)).collect();
        Some(ClassAp {
            ap: per_threshold.iter().sum::<f64>() / per_threshold.len() as f64,
            per_threshold,
            ground_truth: n_gt,
            predictions: predictions.len(),
        })
    }
}

/// AP of score-sorted predictions against one class's ground truth at one IoU threshold.
fn threshold_ap(predictions: &[(f32, usize, [f32; 4])], ground_truth: &[Vec<[f32; 4]>], n_gt: usize, t: f64) -> f64 {
    let mut matched: Vec<Vec<bool>> = ground_truth.iter().map(|g| vec![false; g.len()]).collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut recall = Vec::with_capacity(predictions.len());
    let mut precision = Vec::with_capacity(predictions.len());
    for &(_, image, bbox) in predictions {
        let mut best: Option<(usize, f64)> = None;
        for (j, g) in ground_truth[image].iter().enumerate() {
            if matched[image][j] {
                continue;
            }
            let iou = box_iou(bbox, *g);
            if iou >= t && best.is_none_or(|(_, b)| iou > b) {
                best = Some((j, iou));
            }
        }
        match best {
            Some((j, _)) => {
                matched[image][j] = true;
                tp += 1;
            }
            None => fp += 1,
        }
        recall.push(tp as f64 / n_gt as f64);
        precision.push(tp as f64 / (tp + fp) as f64);
    }
    // Precision envelope: the best precision at any recall at least this high.
    for i in (0..precision.len().saturating_sub(1)).rev() {
        precision[i] = precision[i].max(precision[i + 1]);
    }
    let points = 101;
    let total: f64 = (0..points)
        .map(|k| {
            // numpy's `linspace(0, 1, 101)` is exactly `k * 0.01` (0.57 comes out 0.5700000000000001).
            let r = k as f64 * 0.01;
            recall.iter().position(|&v| v >= r).map_or(0.0, |i| precision[i])
        })
        .sum();
    total / points as f64
}

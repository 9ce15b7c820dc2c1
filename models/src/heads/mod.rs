//! Detection post-processing shared by every detector: YOLO box decoding, letterbox geometry,
//! NMS and class names. A detector's forward pass yields one map per `[yolo]` head;
//! [`postprocess`] turns those maps into [`Detection`]s in original-image pixels.

pub mod coco;
pub mod detection;
pub mod letterbox;
pub mod nms;
pub mod yolo;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use coco::{coco_labels, load_labels, parse_labels, COCO_CATEGORY_IDS, COCO_CLASSES};
pub use detection::Detection;
pub use letterbox::{Letterbox, LETTERBOX_GREY};
pub use nms::{diou_penalty, iou, nms, NmsKind, ScoredBox};
pub use yolo::{decode, decode_heads, Candidate, YoloHead};

use crate::error::{Error, Result};

/// The knobs of [`postprocess`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostprocessConfig {
    /// A (box, class) pair is a candidate when its score (obj * cls) is strictly above this.
    pub score_threshold: f32,
    /// A kept box suppresses another when their overlap is strictly above this.
    pub iou_threshold: f32,
    /// Most detections per image (the highest scoring survive).
    pub max_detections: usize,
    /// Suppress across classes (each box then keeps only its best class), instead of per class.
    pub class_agnostic: bool,
    /// Plain IoU or DIoU suppression.
    pub nms: NmsKind,
    /// Only these class ids, when given.
    pub classes: Option<Vec<usize>>,
    /// Class names for [`Detection::label`]; ids past the end get no label.
    pub labels: Vec<String>,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        PostprocessConfig {
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 300,
            class_agnostic: false,
            nms: NmsKind::Greedy,
            classes: None,
            labels: Vec::new(),
        }
    }
}

impl PostprocessConfig {
    /// The defaults with COCO's class names.
    pub fn coco() -> Self {
        PostprocessConfig { labels: coco_labels(), ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        if !self.score_threshold.is_finite() {
            return Err(Error::Input(format!("score threshold must be a number, got {}", self.score_threshold)));
        }
        if !self.iou_threshold.is_finite() {
            return Err(Error::Input(format!("IoU threshold must be a number, got {}", self.iou_threshold)));
        }
        if let NmsKind::Diou { beta } = self.nms {
            if !(beta.is_finite() && beta > 0.0) {
                return Err(Error::Input(format!("DIoU beta must be positive, got {beta}")));
            }
        }
        Ok(())
    }

    fn wants(&self, class_id: usize) -> bool {
        self.classes.as_ref().is_none_or(|only| only.contains(&class_id))
    }

    /// The (box, class) pairs NMS sees: every wanted class above the threshold, or with
    /// `class_agnostic` each box's best wanted class.
    pub fn scored_boxes(&self, candidates: &[Candidate]) -> Vec<ScoredBox> {
        let thr = self.score_threshold;
        let mut out = Vec::new();
        for cand in candidates {
            let wanted = cand.scores.iter().copied().enumerate().filter(|&(c, _)| self.wants(c));
            if self.class_agnostic {
                if let Some((class_id, score)) = yolo::best_of(wanted) {
                    if score > thr {
                        out.push(ScoredBox { bbox: cand.bbox, score, class_id });
                    }
                }
            } else {
                out.extend(wanted.filter(|&(_, s)| s > thr).map(|(class_id, score)| ScoredBox {
                    bbox: cand.bbox,
                    score,
                    class_id,
                }));
            }
        }
        out
    }

    /// Thresholds, filters and suppresses one image's candidates (network-input pixels) and maps
    /// the survivors to original-image pixels, highest score first.
    pub fn detections(&self, candidates: &[Candidate], letterbox: &Letterbox) -> Result<Vec<Detection>> {
        self.validate()?;
        let boxes = self.scored_boxes(candidates);
        let kept = nms(&boxes, self.nms, self.iou_threshold, self.class_agnostic, self.max_detections);
        Ok(kept
            .into_iter()
            .map(|b| Detection {
                bbox: letterbox.inverse_box(b.bbox),
                score: b.score,
                class_id: b.class_id,
                label: self.labels.get(b.class_id).cloned(),
            })
            .collect())
    }
}

/// Every image of the batch went through the same `letterbox` (one image, or equal sizes).
/// Returns one list per image; no heads means no images.
pub fn postprocess(
    heads: &[(Tensor, YoloHead)],
    letterbox: &Letterbox,
    cfg: &PostprocessConfig,
) -> Result<Vec<Vec<Detection>>> {
    cfg.validate()?;
    let per_image = decode_heads(heads, letterbox.net, cfg.score_threshold)?;
    per_image.iter().map(|cands| cfg.detections(cands, letterbox)).collect()
}

/// Like [`postprocess`] with one letterbox per image of the batch (images of different sizes).
pub fn postprocess_batch(
    heads: &[(Tensor, YoloHead)],
    letterboxes: &[Letterbox],
    cfg: &PostprocessConfig,
) -> Result<Vec<Vec<Detection>>> {
    cfg.validate()?;
    let Some(first) = letterboxes.first() else {
        return Err(Error::Input("postprocess needs one letterbox per image, got none".into()));
    };
    if let Some(lb) = letterboxes.iter().find(|lb| lb.net != first.net) {
        return Err(Error::Input(format!(
            "all images of a batch share the network input size, got {:?} and {:?}",
            first.net, lb.net
        )));
    }
    let mut per_image = decode_heads(heads, first.net, cfg.score_threshold)?;
    if heads.is_empty() {
        per_image = vec![Vec::new(); letterboxes.len()];
    }
    if per_image.len() != letterboxes.len() {
        return Err(Error::Input(format!(
            "{} letterboxes for a batch of {} images",
            letterboxes.len(),
            per_image.len()
        )));
    }
    per_image.iter().zip(letterboxes).map(|(cands, lb)| cfg.detections(cands, lb)).collect()
}

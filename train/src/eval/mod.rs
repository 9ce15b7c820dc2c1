//! Evaluation metrics: top-k accuracy and COCO-style average precision.
//!
//! - [`Accuracy`]: feed it `[n, classes]` logits and labels batch by batch; `top1()`, `top5()`.
//! - [`DetectionEval`]: feed it each image's `Detection`s (from `heads::postprocess`, original
//!   pixels) and its ground-truth [`BoxLabel`](crate::data::BoxLabel)s in the same frame;
//!   `summarize()` gives AP (IoU 0.50:0.05:0.95), AP50, AP75 and per-class values, computed as
//!   `pycocotools` does (greedy score-ordered matching, 101-point interpolated precision).

mod ap;
mod topk;

pub use ap::{box_iou, ApSummary, ClassAp, DetectionEval, COCO_IOU_THRESHOLDS};
pub use topk::{topk_correct, Accuracy};

//! Evaluation of a model on a dataset split, shared by `csp-train eval` and the trainers'
//! validation: top-1/top-5 for classifiers, COCO AP/AP50/AP75 for detectors (predictions mapped
//! back to original-image pixels through each batch's letterboxes, matched against the
//! dataset's ground truth).

pub mod command;
mod report;

pub use report::{ClassAccuracy, ClassReport, DetReport, Report};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use csp_models::heads::{postprocess_batch, PostprocessConfig, YoloHead};
use csp_models::network::Op;
use csp_models::{Model, Network};

use crate::data::{ClassLoader, DetBatch, DetLoader, ImageBatch};
use crate::eval::{topk_correct, Accuracy, DetectionEval};

/// Detections kept per image when measuring AP (COCO's `maxDets`).
pub const EVAL_MAX_DETECTIONS: usize = 100;
/// Candidates below this score are dropped before NMS: low, so the precision/recall curve
/// reaches as far as the model's recall goes.
pub const EVAL_SCORE_THRESHOLD: f32 = 0.001;
pub const EVAL_IOU_THRESHOLD: f32 = 0.45;

/// What a network does, read from its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classification,
    Detection,
}

/// A network with `[yolo]` heads is a detector, anything else a classifier.
pub fn task_of(net: &Network) -> Task {
    if net.layers.iter().any(|l| matches!(l.op, Op::Yolo(_))) {
        Task::Detection
    } else {
        Task::Classification
    }
}

/// Post-processing for AP: per-class NMS at `iou_threshold`, candidates above
/// `score_threshold`, at most [`EVAL_MAX_DETECTIONS`] per image.
pub fn eval_postprocess(score_threshold: f32, iou_threshold: f32) -> PostprocessConfig {
    PostprocessConfig {
        score_threshold,
        iou_threshold,
        max_detections: EVAL_MAX_DETECTIONS,
        ..PostprocessConfig::default()
    }
}

/// A host batch as an [N, 3, H, W] tensor on `device`.
pub fn batch_tensor(b: &ImageBatch, device: &Device) -> Result<Tensor> {
    let t = Tensor::from_slice(&b.data, (b.n, 3, b.height, b.width), &Device::Cpu)?;
    Ok(t.to_device(device)?)
}

/// Top-1/top-5 accuracy, overall and per class, of `model` (inference mode: running
/// statistics or folded batch norm) over an evaluation loader.
pub fn evaluate_classifier(model: &Model, loader: &ClassLoader) -> Result<ClassReport> {
    let classes = loader.dataset().classes.clone();
    let num_classes = classes.len();
    if model.net.num_classes != num_classes {
        bail!("the model has {} classes, the dataset {num_classes}", model.net.num_classes);
    }
    let mut overall = Accuracy::default();
    let mut per_class = vec![Accuracy::default(); num_classes];
    for batch in loader.batches(0) {
        let batch = batch?;
        let logits = model.forward(&batch_tensor(&batch.images, model.device())?)?;
        let logits = logits.flatten_from(1)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        if logits.dim(1)? != num_classes {
            bail!("the model gives {} outputs for {num_classes} classes", logits.dim(1)?);
        }
        let values = logits.flatten_all()?.to_vec1::<f32>()?;
        overall.add(&values, num_classes, &batch.labels)?;
        for (row, &label) in values.chunks_exact(num_classes).zip(&batch.labels) {
            let acc = per_class.get_mut(label).with_context(|| format!("label {label} out of range"))?;
            acc.top1 += topk_correct(row, num_classes, &[label], 1)?;
            acc.top5 += topk_correct(row, num_classes, &[label], 5)?;
            acc.total += 1;
        }
    }
    let per_class = classes
        .into_iter()
        .zip(per_class)
        .map(|(name, a)| ClassAccuracy { name, images: a.total, top1: a.top1(), top5: a.top5() })
        .collect();
    Ok(ClassReport { images: overall.total, top1: overall.top1(), top5: overall.top5(), per_class })
}

/// COCO AP of a detector over an evaluation loader (inference mode).
pub fn evaluate_detector(model: &Model, loader: &DetLoader, cfg: &PostprocessConfig) -> Result<DetReport> {
    let heads: Vec<YoloHead> = YoloHead::from_network(&model.net)?.into_iter().map(|(_, h)| h).collect();
    if heads.is_empty() {
        bail!("`{}` is not a detector (no yolo heads)", model.net.arch);
    }
    let num_classes = loader.dataset().classes.len();
    if let Some(h) = heads.iter().find(|h| h.classes != num_classes) {
        bail!("the model detects {} classes, the dataset has {num_classes}", h.classes);
    }
    evaluate_head_maps(loader, &heads, cfg, |batch| {
        Ok(model.forward_heads(&batch_tensor(&batch.images, model.device())?)?)
    })
}

/// The evaluation path below the network: `maps` gives each batch's raw `[yolo]` maps (one per
/// head, in `heads` order); they are decoded, suppressed, mapped to original pixels with the
/// batch's letterboxes and matched against `dataset.samples[index].boxes`.
pub fn evaluate_head_maps(
    loader: &DetLoader,
    heads: &[YoloHead],
    cfg: &PostprocessConfig,
    mut maps: impl FnMut(&DetBatch) -> Result<Vec<Tensor>>,
) -> Result<DetReport> {
    let dataset = loader.dataset();
    let mut eval = DetectionEval::with_max_dets(dataset.classes.len(), EVAL_MAX_DETECTIONS);
    let mut images = 0;
    for batch in loader.batches(0) {
        let batch = batch?;
        let batch_maps = maps(&batch)?;
        if batch_maps.len() != heads.len() {
            bail!("{} maps for {} yolo heads", batch_maps.len(), heads.len());
        }
        let pairs: Vec<(Tensor, YoloHead)> = batch_maps.into_iter().zip(heads.iter().cloned()).collect();
        let detections = postprocess_batch(&pairs, &batch.letterboxes, cfg)?;
        for (found, &index) in detections.iter().zip(&batch.indices) {
            let sample = dataset.samples.get(index).with_context(|| format!("no sample {index}"))?;
            eval.add_image(found, &sample.boxes)?;
            images += 1;
        }
    }
    Ok(DetReport { images, summary: eval.summarize(), classes: dataset.classes.clone() })
}

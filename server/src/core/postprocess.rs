//! Turning raw model outputs into answers: top-k classes, or decoded and suppressed boxes in
//! original image pixels.

use candle_core::Tensor;
use csp_models::heads::{self, PostprocessConfig};
use csp_models::Model;

use super::backend::LoadedModel;
use super::infer::TaskParams;
use super::shared::{internal, ServedModel};
use super::types::*;

pub(crate) fn task_name(t: Task) -> &'static str {
    match t {
        Task::Classify => "classification",
        Task::Detect => "detection",
    }
}

pub(crate) enum Post {
    Classify(ClassifyParams),
    Detect(PostprocessConfig),
}

pub(crate) fn post_config(params: &TaskParams, m: &ServedModel) -> Result<Post, InferError> {
    let classes = m.info.num_classes;
    let check_classes = |only: &Option<Vec<usize>>| match only.as_ref().and_then(|c| c.iter().find(|&&c| c >= classes))
    {
        Some(bad) => Err(InferError::InvalidInput(format!("class {bad} does not exist (the model has {classes})"))),
        None => Ok(()),
    };
    match params {
        TaskParams::Classify(p) => {
            if p.top_k == 0 {
                return Err(InferError::InvalidInput("top_k must be at least 1".into()));
            }
            check_classes(&p.classes)?;
            Ok(Post::Classify(p.clone()))
        }
        TaskParams::Detect(p) => {
            for (name, v) in [("score_threshold", p.score_threshold), ("iou_threshold", p.iou_threshold)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(InferError::InvalidInput(format!("{name} must be in [0, 1], got {v}")));
                }
            }
            if p.max_detections == 0 {
                return Err(InferError::InvalidInput("max_detections must be at least 1".into()));
            }
            check_classes(&p.classes)?;
            Ok(Post::Detect(PostprocessConfig {
                score_threshold: p.score_threshold,
                iou_threshold: p.iou_threshold,
                max_detections: p.max_detections,
                classes: p.classes.clone(),
                labels: m.info.labels.clone(),
                ..PostprocessConfig::default()
            }))
        }
    }
}

pub(crate) fn top_classes(logits: &Tensor, p: &ClassifyParams, labels: &[String]) -> Result<Vec<Class>, InferError> {
    let probs = Model::probabilities(&logits.unsqueeze(0).map_err(internal)?)
        .and_then(|t| Ok(t.squeeze(0)?.to_vec1::<f32>()?))
        .map_err(|e| InferError::Internal(e.to_string()))?;
    let mut order: Vec<usize> = match &p.classes {
        Some(only) => only.clone(),
        None => (0..probs.len()).collect(),
    };
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    Ok(order
        .into_iter()
        .take(p.top_k)
        .map(|i| Class { index: i, label: labels.get(i).cloned(), score: probs[i] })
        .collect())
}

pub(crate) fn detect(
    outputs: &[Tensor],
    loaded: &LoadedModel,
    letterbox: &heads::Letterbox,
    cfg: &PostprocessConfig,
) -> Result<Vec<Detection>, InferError> {
    let heads: Vec<(Tensor, heads::YoloHead)> = outputs
        .iter()
        .zip(&loaded.heads)
        .map(|(t, h)| Ok((t.unsqueeze(0)?, h.clone())))
        .collect::<candle_core::Result<_>>()
        .map_err(internal)?;
    let mut per_image = heads::postprocess(&heads, letterbox, cfg).map_err(|e| InferError::Internal(e.to_string()))?;
    Ok(per_image.pop().unwrap_or_default())
}

//! Training losses: cross-entropy for classifiers, the YOLOv3 loss for detectors.

pub mod boxes;
pub mod yolo;

use anyhow::Result;
use candle_core::Tensor;

/// Mean cross-entropy of logits [N, classes] against class indices.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let targets: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    let targets = Tensor::new(targets.as_slice(), logits.device())?;
    Ok(candle_nn::loss::cross_entropy(logits, &targets)?)
}

/// Elementwise binary cross-entropy on logits, numerically stable:
/// max(x, 0) - x * t + ln(1 + exp(-|x|)).
pub fn bce_with_logits(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    let soft = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    Ok(((x.relu()? - (x * target)?)? + soft)?)
}

//! Top-k classification accuracy.

use anyhow::{bail, Result};

/// How many rows of `logits` (`labels.len()` rows of `num_classes`) rank their label among the
/// `k` highest. Ties rank the lower class index first (a stable descending sort), so a constant
/// output is not counted as right for every class; a NaN label logit is never right.
pub fn topk_correct(logits: &[f32], num_classes: usize, labels: &[usize], k: usize) -> Result<usize> {
    if num_classes == 0 || logits.len() != labels.len() * num_classes {
        bail!("{} logits do not form {} rows of {num_classes} classes", logits.len(), labels.len());
    }
    let mut correct = 0;
    for (row, &label) in logits.chunks_exact(num_classes).zip(labels) {
        if label >= num_classes {
            bail!("label {label} is out of range ({num_classes} classes)");
        }
        let target = row[label];
        if target.is_nan() {
            continue;
        }
        let ahead = row.iter().enumerate().filter(|&(j, &v)| v > target || (v == target && j < label)).count();
        if ahead < k {
            correct += 1;
        }
    }
    Ok(correct)
}

/// Running top-1 / top-5 accuracy over batches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    pub top1: usize,
    pub top5: usize,
    pub total: usize,
}

impl Accuracy {
    pub fn add(&mut self, logits: &[f32], num_classes: usize, labels: &[usize]) -> Result<()> {
        self.top1 += topk_correct(logits, num_classes, labels, 1)?;
        self.top5 += topk_correct(logits, num_classes, labels, 5)?;
        self.total += labels.len();
        Ok(())
    }

    /// Fraction in [0, 1] (0 before any sample).
    pub fn top1(&self) -> f64 {
        self.top1 as f64 / self.total.max(1) as f64
    }

    pub fn top5(&self) -> f64 {
        self.top5 as f64 / self.total.max(1) as f64
    }
}

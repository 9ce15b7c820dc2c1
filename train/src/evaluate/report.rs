//! Evaluation results as a printed table or one JSON object.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::eval::ApSummary;

/// One class's share of a classifier's accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAccuracy {
    pub name: String,
    pub images: usize,
    pub top1: f64,
    pub top5: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClassReport {
    pub images: usize,
    /// Fractions in [0, 1].
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<ClassAccuracy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetReport {
    pub images: usize,
    pub summary: ApSummary,
    /// Class names, in class-index order (as `summary.per_class`).
    pub classes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Classification(ClassReport),
    Detection(DetReport),
}

impl Report {
    /// `{task, images, top1, top5, per_class}` or `{task, images, ap, ap50, ap75, per_class}`;
    /// a class without ground truth has null AP values.
    pub fn to_json(&self) -> Value {
        match self {
            Report::Classification(r) => json!({
                "task": "classification",
                "images": r.images,
                "top1": r.top1,
                "top5": r.top5,
                "per_class": r.per_class.iter().map(|c| json!({
                    "class": c.name, "images": c.images, "top1": c.top1, "top5": c.top5,
                })).collect::<Vec<_>>(),
            }),
            Report::Detection(r) => {
                let per_class: Vec<Value> = r
                    .classes
                    .iter()
                    .zip(&r.summary.per_class)
                    .map(|(name, c)| match c {
                        Some(c) => json!({
                            "class": name, "ground_truth": c.ground_truth, "predictions": c.predictions,
                            "ap": c.ap, "ap50": c.per_threshold[0], "ap75": c.per_threshold[5],
                        }),
                        None => json!({"class": name, "ground_truth": 0, "ap": null, "ap50": null, "ap75": null}),
                    })
                    .collect();
                json!({
                    "task": "detection",
                    "images": r.images,
                    "ap": r.summary.ap,
                    "ap50": r.summary.ap50,
                    "ap75": r.summary.ap75,
                    "per_class": per_class,
                })
            }
        }
    }

    /// Human-readable summary with a per-class table (percentages).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let width = |names: &mut dyn Iterator<Item = &String>| names.map(|n| n.len()).max().unwrap_or(0).max(5);
        match self {
            Report::Classification(r) => {
                let _ = writeln!(s, "{} images: top-1 {:.2}%  top-5 {:.2}%", r.images, pct(r.top1), pct(r.top5));
                let w = width(&mut r.per_class.iter().map(|c| &c.name));
                let _ = writeln!(s, "{:<w$}  {:>7}  {:>7}  {:>7}", "class", "images", "top-1", "top-5");
                for c in &r.per_class {
                    let _ =
                        writeln!(s, "{:<w$}  {:>7}  {:>6.2}%  {:>6.2}%", c.name, c.images, pct(c.top1), pct(c.top5));
                }
            }
            Report::Detection(r) => {
                let m = &r.summary;
                let _ = writeln!(
                    s,
                    "{} images: AP {:.2}  AP50 {:.2}  AP75 {:.2}  (COCO, IoU 0.50:0.95, in %)",
                    r.images,
                    pct(m.ap),
                    pct(m.ap50),
                    pct(m.ap75)
                );
                let w = width(&mut r.classes.iter());
                let _ = writeln!(
                    s,
                    "{:<w$}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}",
                    "class", "gt", "preds", "AP", "AP50", "AP75"
                );
                for (name, c) in r.classes.iter().zip(&m.per_class) {
                    match c {
                        Some(c) => {
                            let (ap, ap50, ap75) = (pct(c.ap), pct(c.per_threshold[0]), pct(c.per_threshold[5]));
                            let (gt, preds) = (c.ground_truth, c.predictions);
                            let _ = writeln!(s, "{name:<w$}  {gt:>6}  {preds:>6}  {ap:>6.2}  {ap50:>6.2}  {ap75:>6.2}");
                        }
                        None => {
                            let _ = writeln!(s, "{name:<w$}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}", 0, "-", "-", "-", "-");
                        }
                    }
                }
            }
        }
        s
    }
}

fn pct(v: f64) -> f64 {
    v * 100.0
}

//! Detection datasets: images with class-labelled boxes in original-image pixels.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::coco::read_coco;
use super::labels::{read_labels_file, LABELS_FILE};
use super::yolo::read_yolo;
use super::BoxLabel;

/// Annotation format of a detection dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetFormat {
    /// COCO JSON: `<split>/annotations.json` next to `<split>/images/`.
    Coco,
    /// YOLO txt: `<split>/labels/<stem>.txt` per `<split>/images/<stem>.<ext>`, `class cx cy w h`
    /// normalised to [0, 1].
    Yolo,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetSample {
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    /// Ground truth in original-image pixels, clipped to the image.
    pub boxes: Vec<BoxLabel>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetDataset {
    pub classes: Vec<String>,
    pub samples: Vec<DetSample>,
}

impl DetDataset {
    /// The `csp-train synth` layout: `root/<split>/images/` with `root/<split>/annotations.json`
    /// (COCO; class names from its categories) or `root/<split>/labels/` (YOLO; class names from
    /// `root/labels.txt`, else `root/classes.txt`).
    pub fn open(root: &Path, split: &str, format: DetFormat) -> Result<Self> {
        let dir = root.join(split);
        match format {
            DetFormat::Coco => read_coco(&dir.join("annotations.json"), &dir.join("images")),
            DetFormat::Yolo => {
                let names = [LABELS_FILE, "classes.txt"].iter().map(|n| root.join(n)).find(|p| p.is_file());
                let Some(names) = names else {
                    bail!("YOLO dataset `{}`: no {LABELS_FILE} or classes.txt with the class names", root.display());
                };
                read_yolo(&dir.join("images"), &dir.join("labels"), read_labels_file(&names)?)
            }
        }
    }

    /// Number of ground-truth boxes per class.
    pub fn box_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for b in self.samples.iter().flat_map(|s| &s.boxes) {
            counts[b.class] += 1;
        }
        counts
    }
}

/// Clips `[x0, y0, x1, y1]` to a `w` x `h` image; `None` when nothing with positive area is left.
pub(crate) fn clip_box(class: usize, [x0, y0, x1, y1]: [f32; 4], w: usize, h: usize) -> Option<BoxLabel> {
    let (w, h) = (w as f32, h as f32);
    let b = BoxLabel { class, x0: x0.clamp(0.0, w), y0: y0.clamp(0.0, h), x1: x1.clamp(0.0, w), y1: y1.clamp(0.0, h) };
    (b.width() > 0.0 && b.height() > 0.0).then_some(b)
}

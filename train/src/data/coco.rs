//! COCO JSON detection annotations (the `instances_*.json` subset detection needs).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::det_data::{clip_box, DetDataset, DetSample};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoFile {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: usize,
    pub height: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, width, height]` in pixels, top-left origin.
    pub bbox: [f64; 4],
    #[serde(default)]
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub supercategory: String,
}

/// Reads `json` with images under `image_dir`. Classes are the categories sorted by id (class
/// index = rank, so COCO's sparse ids 1..90 become 0..79). Crowd annotations (`iscrowd: 1`) are
/// skipped; boxes are clipped to their image and dropped when nothing is left.
pub fn read_coco(json: &Path, image_dir: &Path) -> Result<DetDataset> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading COCO annotations `{}`", json.display()))?;
    let file: CocoFile =
        serde_json::from_str(&text).with_context(|| format!("COCO annotations `{}` are malformed", json.display()))?;
    dataset_from_coco(&file, image_dir).with_context(|| format!("COCO annotations `{}`", json.display()))
}

fn dataset_from_coco(file: &CocoFile, image_dir: &Path) -> Result<DetDataset> {
    let mut categories: Vec<&CocoCategory> = file.categories.iter().collect();
    categories.sort_by_key(|c| c.id);
    if categories.is_empty() {
        bail!("no categories");
    }
    let mut class_of = HashMap::new();
    for (index, c) in categories.iter().enumerate() {
        if class_of.insert(c.id, index).is_some() {
            bail!("category id {} appears twice", c.id);
        }
    }
    let mut sample_of = HashMap::new();
    let mut samples = Vec::with_capacity(file.images.len());
    for image in &file.images {
        if image.width == 0 || image.height == 0 {
            bail!("image {} (`{}`) has size {}x{}", image.id, image.file_name, image.width, image.height);
        }
        if sample_of.insert(image.id, samples.len()).is_some() {
            bail!("image id {} appears twice", image.id);
        }
        samples.push(DetSample {
            path: image_dir.join(&image.file_name),
            width: image.width,
            height: image.height,
            boxes: Vec::new(),
        });
    }
    for ann in &file.annotations {
        let Some(&index) = sample_of.get(&ann.image_id) else {
            bail!("annotation {} refers to unknown image id {}", ann.id, ann.image_id);
        };
        let Some(&class) = class_of.get(&ann.category_id) else {
            bail!("annotation {} refers to unknown category id {}", ann.id, ann.category_id);
        };
        let [x, y, w, h] = ann.bbox;
        if !ann.bbox.iter().all(|v| v.is_finite()) || w < 0.0 || h < 0.0 {
            bail!("annotation {} has an invalid bbox {:?} (expected finite [x, y, w, h], w, h >= 0)", ann.id, ann.bbox);
        }
        if ann.iscrowd != 0 {
            continue;
        }
        let sample = &mut samples[index];
        let corners = [x as f32, y as f32, (x + w) as f32, (y + h) as f32];
        if let Some(b) = clip_box(class, corners, sample.width, sample.height) {
            sample.boxes.push(b);
        }
    }
    Ok(DetDataset { classes: categories.iter().map(|c| c.name.clone()).collect(), samples })
}

/// Writes a COCO file as JSON.
pub fn write_coco(path: &Path, file: &CocoFile) -> Result<()> {
    let text = serde_json::to_string(file)?;
    std::fs::write(path, text).with_context(|| format!("writing COCO annotations `{}`", path.display()))
}

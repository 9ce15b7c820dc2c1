//! YOLO txt detection labels: one `<stem>.txt` per image, a line `class cx cy w h` per box with
//! the centre and size normalised by the image width and height.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::class_data::image_files;
use super::det_data::{clip_box, DetDataset, DetSample};
use super::BoxLabel;

/// Slack allowed on the [0, 1] range of normalised values (rounding in label writers).
const RANGE_SLACK: f64 = 1e-3;

/// Every image in `image_dir` with its labels from `label_dir/<stem>.txt`. An image without a
/// label file has no objects (a background image, as darknet treats it).
pub fn read_yolo(image_dir: &Path, label_dir: &Path, classes: Vec<String>) -> Result<DetDataset> {
    let images = image_files(image_dir)?;
    if images.is_empty() {
        bail!("YOLO image folder `{}` has no images", image_dir.display());
    }
    if !label_dir.is_dir() {
        bail!("YOLO label folder `{}` does not exist", label_dir.display());
    }
    let mut samples = Vec::with_capacity(images.len());
    for path in images {
        let (w, h) = image::image_dimensions(&path).with_context(|| format!("reading image `{}`", path.display()))?;
        let (width, height) = (w as usize, h as usize);
        let stem = path.file_stem().unwrap_or_default();
        let label_path = label_dir.join(stem).with_extension("txt");
        let boxes = match std::fs::read_to_string(&label_path) {
            Ok(text) => parse_yolo(&text, classes.len(), width, height)
                .with_context(|| format!("YOLO labels `{}`", label_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading YOLO labels `{}`", label_path.display())),
        };
        samples.push(DetSample { path, width, height, boxes });
    }
    Ok(DetDataset { classes, samples })
}

fn parse_yolo(text: &str, num_classes: usize, width: usize, height: usize) -> Result<Vec<BoxLabel>> {
    let mut boxes = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            bail!("line {number}: expected `class cx cy w h`, got {} fields: `{line}`", fields.len());
        }
        let class: usize =
            fields[0].parse().with_context(|| format!("line {number}: class `{}` is not an index", fields[0]))?;
        if class >= num_classes {
            bail!("line {number}: class {class} is out of range ({num_classes} class names)");
        }
        // f64 so that exact pixel boxes survive the normalisation round trip.
        let mut v = [0f64; 4];
        for (slot, field) in v.iter_mut().zip(&fields[1..]) {
            *slot = field.parse().with_context(|| format!("line {number}: `{field}` is not a number"))?;
            if !slot.is_finite() || *slot < -RANGE_SLACK || *slot > 1.0 + RANGE_SLACK {
                bail!("line {number}: `{field}` is outside [0, 1] (values are normalised by the image size)");
            }
        }
        let [cx, cy, bw, bh] = v;
        let (w, h) = (width as f64, height as f64);
        let corners =
            [(cx - bw / 2.0) * w, (cy - bh / 2.0) * h, (cx + bw / 2.0) * w, (cy + bh / 2.0) * h].map(|v| v as f32);
        if let Some(b) = clip_box(class, corners, width, height) {
            boxes.push(b);
        }
    }
    Ok(boxes)
}

/// Writes the labels of one image of `width` x `height` pixels.
pub fn write_yolo_labels(path: &Path, boxes: &[BoxLabel], width: usize, height: usize) -> Result<()> {
    let (w, h) = (width as f32, height as f32);
    let mut text = String::new();
    for b in boxes {
        let (cx, cy) = ((b.x0 + b.x1) / 2.0 / w, (b.y0 + b.y1) / 2.0 / h);
        writeln!(text, "{} {cx:.6} {cy:.6} {:.6} {:.6}", b.class, b.width() / w, b.height() / h)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing YOLO labels `{}`", path.display()))
}

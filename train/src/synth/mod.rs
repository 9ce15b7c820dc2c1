//! `csp-train synth`: a synthetic shapes dataset (circles, squares, triangles, stars, hexagons,
//! crosses on textured backgrounds), deterministic by seed: image `i` draws everything from its
//! own random stream keyed by (seed, i), so the output does not depend on the worker count.
//!
//! Layouts (`DIR/labels.txt` always holds the class names, one per line):
//! - `coco`: `DIR/{train,val}/images/NNNNNN.png` + `DIR/{train,val}/annotations.json`
//! - `yolo`: `DIR/{train,val}/images/NNNNNN.png` + `DIR/{train,val}/labels/NNNNNN.txt`
//! - `folder`: `DIR/{train,val}/<class>/NNNNNN.png`, one centred shape per image
//!
//! The first `images - round(images * val_fraction)` images form the train split, the rest val.

mod background;
mod canvas;
mod color;
mod scene;
mod shapes;

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::RgbImage;
use serde::Serialize;

pub use scene::{classification_image, detection_scene, SceneObject};
pub use shapes::{Shape, ShapeKind};

use crate::data::{
    stream_rng, write_coco, write_labels_file, write_yolo_labels, BoxLabel, CocoAnnotation, CocoCategory, CocoFile,
    CocoImage, LABELS_FILE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthFormat {
    /// Detection, COCO JSON annotations
    Coco,
    /// Detection, YOLO txt labels
    Yolo,
    /// Classification, one sub-folder per class
    Folder,
}

/// Image size as `WxH` or `N` (square).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ImageSize {
    pub width: usize,
    pub height: usize,
}

impl std::str::FromStr for ImageSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("`{s}` is not WxH or N (pixels)"));
        let (width, height) = match s.split_once(['x', 'X']) {
            Some((w, h)) => (parse(w)?, parse(h)?),
            None => (parse(s)?, parse(s)?),
        };
        if !(8..=4096).contains(&width) || !(8..=4096).contains(&height) {
            return Err(format!("image size {width}x{height} is outside 8..=4096 pixels per side"));
        }
        Ok(ImageSize { width, height })
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct SynthArgs {
    /// Output directory (created; must be empty if it exists)
    #[arg(long, env = "CSP_SYNTH_OUT")]
    pub out: PathBuf,
    /// Number of images, train and val together
    #[arg(long, env = "CSP_SYNTH_IMAGES", default_value_t = 1000)]
    pub images: usize,
    /// Random seed: the same seed writes byte-identical files
    #[arg(long, env = "CSP_SYNTH_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Annotation layout: detection (coco, yolo) or classification (folder)
    #[arg(long, env = "CSP_SYNTH_FORMAT", value_enum, default_value_t = SynthFormat::Coco)]
    pub format: SynthFormat,
    /// Image size, `WxH` or `N`; default 160x128 for detection, 64 for folder
    #[arg(long, env = "CSP_SYNTH_SIZE")]
    pub size: Option<ImageSize>,
    /// Fraction of the images that go to the val split
    #[arg(long, env = "CSP_SYNTH_VAL_FRACTION", default_value_t = 0.2)]
    pub val_fraction: f32,
    /// Comma-separated classes to draw, in label order (default: all of circle, square,
    /// triangle, star, hexagon, cross)
    #[arg(long, env = "CSP_SYNTH_CLASSES", value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Most shapes per detection image (each image has 1..=this)
    #[arg(long, env = "CSP_SYNTH_MAX_OBJECTS", default_value_t = 5)]
    pub max_objects: usize,
    /// Generator threads (default: available cores); the output does not depend on it
    #[arg(long, env = "CSP_SYNTH_WORKERS")]
    pub workers: Option<usize>,
}

impl SynthArgs {
    /// Arguments with the CLI defaults.
    pub fn new(out: impl Into<PathBuf>, images: usize, seed: u64, format: SynthFormat) -> Self {
        SynthArgs {
            out: out.into(),
            images,
            seed,
            format,
            size: None,
            val_fraction: 0.2,
            classes: Vec::new(),
            max_objects: 5,
            workers: None,
        }
    }

    pub fn image_size(&self) -> ImageSize {
        self.size.unwrap_or(match self.format {
            SynthFormat::Folder => ImageSize { width: 64, height: 64 },
            _ => ImageSize { width: 160, height: 128 },
        })
    }

    pub fn class_kinds(&self) -> Result<Vec<ShapeKind>> {
        if self.classes.is_empty() {
            return Ok(ShapeKind::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for name in &self.classes {
            let known = ShapeKind::ALL.map(ShapeKind::name);
            let Some(kind) = ShapeKind::from_name(name.trim()) else {
                bail!("unknown class `{name}` (known: {})", known.join(", "));
            };
            if kinds.contains(&kind) {
                bail!("class `{name}` is listed twice");
            }
            kinds.push(kind);
        }
        Ok(kinds)
    }

    /// Images in the train split; the rest are val.
    pub fn train_count(&self) -> usize {
        self.images - (self.images as f64 * self.val_fraction as f64).round() as usize
    }
}

/// What one generated image turned into.
struct Generated {
    /// Path relative to the split directory's image folder (or class folder).
    file_name: String,
    objects: Vec<SceneObject>,
}

/// A summary written as `DIR/synth.json` so a dataset records how it was made.
#[derive(Serialize)]
struct Manifest<'a> {
    generator: &'static str,
    format: SynthFormat,
    seed: u64,
    images: usize,
    train_images: usize,
    val_images: usize,
    size: ImageSize,
    max_objects: usize,
    classes: &'a [String],
}

pub fn run(args: &SynthArgs) -> Result<()> {
    if args.images == 0 {
        bail!("--images must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.val_fraction) {
        bail!("--val-fraction must be in [0, 1], got {}", args.val_fraction);
    }
    if args.max_objects == 0 {
        bail!("--max-objects must be at least 1");
    }
    let kinds = args.class_kinds()?;
    let names: Vec<String> = kinds.iter().map(|k| k.name().to_string()).collect();
    prepare_out_dir(&args.out)?;
    let n_train = args.train_count();
    let split_of = |i: usize| if i < n_train { "train" } else { "val" };
    for split in ["train", "val"] {
        match args.format {
            SynthFormat::Folder => {
                for name in &names {
                    create_dir(&args.out.join(split).join(name))?;
                }
            }
            SynthFormat::Coco => create_dir(&args.out.join(split).join("images"))?,
            SynthFormat::Yolo => {
                create_dir(&args.out.join(split).join("images"))?;
                create_dir(&args.out.join(split).join("labels"))?;
            }
        }
    }
    let generated = generate_all(args, &kinds, &names, &split_of)?;
    write_annotations(args, &names, &generated, n_train)?;
    write_labels_file(&args.out.join(LABELS_FILE), &names)?;
    let manifest = Manifest {
        generator: "csp-train synth",
        format: args.format,
        seed: args.seed,
        images: args.images,
        train_images: n_train,
        val_images: args.images - n_train,
        size: args.image_size(),
        max_objects: args.max_objects,
        classes: &names,
    };
    let manifest_path = args.out.join("synth.json");
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing `{}`", manifest_path.display()))?;
    Ok(())
}

fn prepare_out_dir(out: &Path) -> Result<()> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).with_context(|| format!("output `{}`", out.display()))?;
        if entries.next().is_some() {
            bail!("output directory `{}` is not empty (synth writes a fresh dataset)", out.display());
        }
    }
    create_dir(out)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating directory `{}`", dir.display()))
}

/// Generates and writes every image on worker threads (image `i` on worker `i % workers`), and
/// returns the records in image order.
fn generate_all(
    args: &SynthArgs,
    kinds: &[ShapeKind],
    names: &[String],
    split_of: &(dyn Fn(usize) -> &'static str + Sync),
) -> Result<Vec<Generated>> {
    let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(default_workers).clamp(1, args.images);
    let results: Vec<Result<Vec<(usize, Generated)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|k| {
                scope.spawn(move || {
                    (k..args.images)
                        .step_by(workers)
                        .map(|i| generate_one(args, kinds, names, i, split_of(i)).map(|g| (i, g)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("a generator thread panicked"))).collect()
    });
    let mut all = Vec::with_capacity(args.images);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, g)| g).collect())
}

fn generate_one(args: &SynthArgs, kinds: &[ShapeKind], names: &[String], i: usize, split: &str) -> Result<Generated> {
    let size = args.image_size();
    let mut rng = stream_rng(args.seed, &[crate::data::SYNTH_TAG, i as u64]);
    let file_name = format!("{i:06}.png");
    let split_dir = args.out.join(split);
    match args.format {
        SynthFormat::Folder => {
            // Classes take turns, so every split is balanced.
            let class = i % kinds.len();
            let img = classification_image((size.width, size.height), kinds[class], &mut rng);
            write_png(&split_dir.join(&names[class]).join(&file_name), &img)?;
            let bbox = [0, 0, size.width as u32, size.height as u32];
            Ok(Generated { file_name, objects: vec![SceneObject { class, bbox, area: 0.0 }] })
        }
        SynthFormat::Coco | SynthFormat::Yolo => {
            let (img, objects) = detection_scene((size.width, size.height), kinds, args.max_objects, &mut rng);
            write_png(&split_dir.join("images").join(&file_name), &img)?;
            if args.format == SynthFormat::Yolo {
                let label = split_dir.join("labels").join(format!("{i:06}.txt"));
                let boxes: Vec<BoxLabel> = objects.iter().map(box_label).collect();
                write_yolo_labels(&label, &boxes, size.width, size.height)?;
            }
            Ok(Generated { file_name, objects })
        }
    }
}

fn box_label(o: &SceneObject) -> BoxLabel {
    let [x0, y0, x1, y1] = o.bbox.map(|v| v as f32);
    BoxLabel { class: o.class, x0, y0, x1, y1 }
}

fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating `{}`", path.display()))?;
    let encoder = PngEncoder::new_with_quality(BufWriter::new(file), CompressionType::Fast, FilterType::Adaptive);
    img.write_with_encoder(encoder).with_context(|| format!("writing PNG `{}`", path.display()))
}

fn write_annotations(args: &SynthArgs, names: &[String], generated: &[Generated], n_train: usize) -> Result<()> {
    if args.format != SynthFormat::Coco {
        return Ok(());
    }
    let size = args.image_size();
    let categories: Vec<CocoCategory> = names
        .iter()
        .enumerate()
        .map(|(c, name)| CocoCategory { id: c as u64 + 1, name: name.clone(), supercategory: "shape".into() })
        .collect();
    for (split, range) in [("train", 0..n_train), ("val", n_train..generated.len())] {
        let mut file = CocoFile { images: Vec::new(), annotations: Vec::new(), categories: categories.clone() };
        for i in range {
            let g = &generated[i];
            let image_id = i as u64 + 1;
            file.images.push(CocoImage {
                id: image_id,
                file_name: g.file_name.clone(),
                width: size.width,
                height: size.height,
            });
            for o in &g.objects {
                let [x0, y0, x1, y1] = o.bbox.map(|v| v as f64);
                file.annotations.push(CocoAnnotation {
                    id: file.annotations.len() as u64 + 1,
                    image_id,
                    category_id: o.class as u64 + 1,
                    bbox: [x0, y0, x1 - x0, y1 - y0],
                    area: (o.area as f64 * 100.0).round() / 100.0,
                    iscrowd: 0,
                });
            }
        }
        write_coco(&args.out.join(split).join("annotations.json"), &file)?;
    }
    Ok(())
}

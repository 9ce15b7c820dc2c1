//! Datasets and batches. Batches are plain host memory (NCHW f32) so the loader threads never
//! touch a device; the trainer turns them into tensors.
//!
//! # Reading datasets
//! - [`ClassDataset::open`]`(root, "train")`: an image folder, `root/<split>/<class>/*.png|jpg|...`;
//!   class indices follow `root/labels.txt` when present, else the sorted sub-folder names of
//!   `root/train` (so train and val always agree).
//! - [`DetDataset::open`]`(root, "train", DetFormat::Coco | DetFormat::Yolo)`: the layout
//!   `csp-train synth` writes (`root/<split>/images/` plus `root/<split>/annotations.json` or
//!   `root/<split>/labels/*.txt`, class names in `root/labels.txt`). The lower-level
//!   [`read_coco`] and [`read_yolo`] take explicit paths.
//!
//! # Loading batches
//! ```ignore
//! let config = LoaderConfig { batch_size: 32, workers: 2, seed: 7, train: true, size: (224, 224),
//!                             preprocess: net.preprocess, ..LoaderConfig::default() };
//! let loader = ClassLoader::new(ClassDataset::open(root, "train")?, config)?;
//! for batch in loader.batches_from(epoch, start_step) { let batch: ClassBatch = batch?; ... }
//! ```
//! [`DetLoader`] works the same way and yields [`DetBatch`]es; its [`MultiScale`] schedule picks
//! a square input size per group of steps, and [`DetLoader::batch_at`] builds any batch at any
//! size. Batch contents depend only on (seed, epoch, step): every sample's randomness comes from
//! [`sample_rng`]`(seed, epoch, dataset index)`, so worker count and timing never change them and a
//! resumed run sees exactly the batches the uninterrupted one would.
//!
//! Training batches are augmented ([`ClassAugment`], [`DetAugment`]); evaluation batches
//! (`train: false`) are exactly what `Preprocess::apply` gives the served model for the same file.

mod augment;
mod class_data;
mod coco;
mod det_data;
mod labels;
mod loader;
mod pool;
mod rng;
mod yolo;

pub use augment::{
    color_jitter, hflip_boxes, hflip_planar, place_boxes, random_resized_crop, ClassAugment, ColorJitter, DetAugment,
    Placement,
};
pub use class_data::{ClassDataset, ClassSample, IMAGE_EXTENSIONS};
pub use coco::{read_coco, write_coco, CocoAnnotation, CocoCategory, CocoFile, CocoImage};
pub use det_data::{DetDataset, DetFormat, DetSample};
pub use labels::{read_labels_file, write_labels_file, LABELS_FILE};
pub use loader::{ClassLoader, DetLoader, LoaderConfig, MultiScale};
pub use pool::Batches;
pub use rng::{sample_rng, stream_rng, SYNTH_TAG};
pub use yolo::{read_yolo, write_yolo_labels};

use csp_models::heads::Letterbox;

/// Images in NCHW layout, RGB, already normalised with the network's `Preprocess` mean/std.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    pub data: Vec<f32>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
}

#[derive(Clone, Debug)]
pub struct ClassBatch {
    pub images: ImageBatch,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// Index of each image in the loader's dataset (`dataset.samples[i]`).
    pub indices: Vec<usize>,
}

/// A ground-truth box, corners in pixels of the frame it belongs to (network input for
/// training batches, original image for evaluation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxLabel {
    pub class: usize,
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BoxLabel {
    pub fn width(&self) -> f32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> f32 {
        self.y1 - self.y0
    }
    /// Corners as `[x0, y0, x1, y1]` (the layout of `Detection::bbox` and `Letterbox::forward_box`).
    pub fn corners(&self) -> [f32; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }
    pub fn from_corners(class: usize, [x0, y0, x1, y1]: [f32; 4]) -> Self {
        BoxLabel { class, x0, y0, x1, y1 }
    }
}

#[derive(Clone, Debug)]
pub struct DetBatch {
    pub images: ImageBatch,
    /// Boxes per image, in network-input pixels after augmentation and letterboxing.
    pub boxes: Vec<Vec<BoxLabel>>,
    /// Index of each image in the loader's dataset; `dataset.samples[i].boxes` are its
    /// ground-truth boxes in original-image pixels (what evaluation compares against).
    pub indices: Vec<usize>,
    /// Evaluation batches: how each original image sits in the input (`Preprocess`'s letterbox or
    /// stretch), to map predictions back with `postprocess`. Training batches: the plain letterbox
    /// of the image at this input size (the jittered placement and flips are already in `boxes`).
    pub letterboxes: Vec<Letterbox>,
}

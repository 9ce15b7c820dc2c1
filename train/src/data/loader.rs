//! Batch loaders for classification and detection (see the module doc of [`crate::data`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use csp_models::heads::{Letterbox, LETTERBOX_GREY};
use csp_models::preprocess::{Preprocess, Resize};
use image::DynamicImage;
use rand::seq::SliceRandom;
use rand::Rng;

use super::augment::{
    color_jitter, hflip_boxes, hflip_planar, normalize, place_boxes, random_resized_crop, to_planar, uniform,
    ClassAugment, DetAugment, Placement,
};
use super::pool::Batches;
use super::rng::{sample_rng, stream_rng, tag};
use super::{BoxLabel, ClassBatch, ClassDataset, DetBatch, DetDataset, ImageBatch};

/// What every loader needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Threads building batches; 0 builds them on the caller's thread.
    pub workers: usize,
    /// Finished batches each worker may hold ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
    /// Training: shuffle each epoch, augment, drop the last partial batch (when there is at
    /// least one full one). Evaluation: dataset order, `Preprocess::apply`, every sample once.
    pub train: bool,
    /// Network input (height, width); a detector's [`MultiScale`] overrides it in training.
    pub size: (usize, usize),
    /// The network's preprocessing: mean/std always, resize for evaluation batches.
    pub preprocess: Preprocess,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            workers: 2,
            prefetch: 2,
            seed: 0,
            train: true,
            size: (224, 224),
            preprocess: Preprocess::TIMM,
        }
    }
}

impl LoaderConfig {
    fn check(&self, len: usize) -> Result<()> {
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if self.size.0 == 0 || self.size.1 == 0 {
            bail!("input size must be non-empty, got {}x{}", self.size.0, self.size.1);
        }
        if len == 0 {
            bail!("the dataset has no samples");
        }
        Ok(())
    }

    fn steps(&self, len: usize) -> usize {
        if self.train && len >= self.batch_size {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }

    /// Dataset indices in this epoch's order.
    fn order(&self, len: usize, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        if self.train {
            order.shuffle(&mut stream_rng(self.seed, &[tag::SHUFFLE, epoch as u64]));
        }
        order
    }

    /// The dataset indices of one step.
    fn step_indices<'a>(&self, order: &'a [usize], step: usize) -> Result<&'a [usize]> {
        let steps = self.steps(order.len());
        if step >= steps {
            bail!("step {step} is past the end of the epoch ({steps} steps)");
        }
        let start = step * self.batch_size;
        Ok(&order[start..(start + self.batch_size).min(order.len())])
    }
}

/// Square multi-scale training (YOLOv3's): every `every` steps a new input side, a multiple of
/// 32 in `[min, max]`, drawn from (seed, epoch, step / every).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiScale {
    pub min: usize,
    pub max: usize,
    pub every: usize,
}

impl MultiScale {
    fn check(&self) -> Result<()> {
        if self.min == 0
            || !self.min.is_multiple_of(32)
            || !self.max.is_multiple_of(32)
            || self.min > self.max
            || self.every == 0
        {
            bail!(
                "multi-scale needs sides that are multiples of 32 with min <= max and a period >= 1, got {}..{} every {}",
                self.min,
                self.max,
                self.every
            );
        }
        Ok(())
    }
}

fn open_rgb(path: &Path) -> Result<DynamicImage> {
    image::open(path).with_context(|| format!("reading image `{}`", path.display()))
}

/// `Preprocess::apply` on the CPU, as host floats.
fn preprocess_host(preprocess: &Preprocess, img: &DynamicImage, size: (usize, usize), path: &Path) -> Result<Vec<f32>> {
    let t = preprocess.apply(img, size, &Device::Cpu).with_context(|| format!("preprocessing `{}`", path.display()))?;
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn stack(images: Vec<Vec<f32>>, (height, width): (usize, usize)) -> ImageBatch {
    let n = images.len();
    ImageBatch { data: images.concat(), n, height, width }
}

#[derive(Clone)]
struct ClassInner {
    dataset: ClassDataset,
    config: LoaderConfig,
    augment: ClassAugment,
}

impl ClassInner {
    fn sample(&self, epoch: usize, index: usize) -> Result<Vec<f32>> {
        let path = &self.dataset.samples[index].path;
        let img = open_rgb(path)?;
        let c = &self.config;
        if !c.train {
            return preprocess_host(&c.preprocess, &img, c.size, path);
        }
        let mut rng = sample_rng(c.seed, epoch, index);
        let a = &self.augment;
        let crop = random_resized_crop(&img.to_rgb8(), c.size, a.crop_scale, a.crop_ratio, &mut rng);
        let mut data = to_planar(&crop);
        if rng.random::<f32>() < a.flip {
            hflip_planar(&mut data, c.size.0, c.size.1);
        }
        color_jitter(&mut data, &a.jitter, &mut rng);
        normalize(&mut data, c.preprocess.mean, c.preprocess.std);
        Ok(data)
    }

    fn batch(&self, order: &[usize], epoch: usize, step: usize) -> Result<ClassBatch> {
        let indices = self.config.step_indices(order, step)?.to_vec();
        let images = indices.iter().map(|&i| self.sample(epoch, i)).collect::<Result<Vec<_>>>()?;
        let labels = indices.iter().map(|&i| self.dataset.samples[i].label).collect();
        Ok(ClassBatch { images: stack(images, self.config.size), labels, indices })
    }
}

/// Classification batches from an image-folder dataset.
#[derive(Clone)]
pub struct ClassLoader {
    inner: Arc<ClassInner>,
}

impl ClassLoader {
    pub fn new(dataset: ClassDataset, config: LoaderConfig) -> Result<Self> {
        config.check(dataset.samples.len())?;
        Ok(ClassLoader { inner: Arc::new(ClassInner { dataset, config, augment: ClassAugment::default() }) })
    }

    /// Replaces the training augmentation ([`ClassAugment::default`] otherwise).
    pub fn with_augment(self, augment: ClassAugment) -> Self {
        let ClassInner { dataset, config, .. } = Arc::unwrap_or_clone(self.inner);
        ClassLoader { inner: Arc::new(ClassInner { dataset, config, augment }) }
    }

    pub fn dataset(&self) -> &ClassDataset {
        &self.inner.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.inner.config.steps(self.inner.dataset.samples.len())
    }

    /// One batch, built on this thread; the same content the iterators give for that step.
    pub fn batch(&self, epoch: usize, step: usize) -> Result<ClassBatch> {
        let order = self.inner.config.order(self.inner.dataset.samples.len(), epoch);
        self.inner.batch(&order, epoch, step)
    }

    pub fn batches(&self, epoch: usize) -> Batches<ClassBatch> {
        self.batches_from(epoch, 0)
    }

    /// The epoch's batches from `start_step` on (resuming mid-epoch).
    pub fn batches_from(&self, epoch: usize, start_step: usize) -> Batches<ClassBatch> {
        let inner = Arc::clone(&self.inner);
        let order = inner.config.order(inner.dataset.samples.len(), epoch);
        let steps = start_step.min(self.steps_per_epoch())..self.steps_per_epoch();
        let (workers, prefetch) = (inner.config.workers, inner.config.prefetch);
        Batches::spawn(steps, workers, prefetch, Arc::new(move |step| inner.batch(&order, epoch, step)))
    }
}

#[derive(Clone)]
struct DetInner {
    dataset: DetDataset,
    config: LoaderConfig,
    augment: DetAugment,
    multi_scale: Option<MultiScale>,
}

/// One letterboxed sample: planar normalised pixels, boxes in input pixels, base geometry.
type DetSampleOut = (Vec<f32>, Vec<BoxLabel>, Letterbox);

impl DetInner {
    fn size_for(&self, epoch: usize, step: usize) -> (usize, usize) {
        match self.multi_scale {
            Some(ms) if self.config.train => {
                let group = (step / ms.every) as u64;
                let mut rng = stream_rng(self.config.seed, &[tag::SCALE, epoch as u64, group]);
                let side = 32 * rng.random_range(ms.min / 32..=ms.max / 32);
                (side, side)
            }
            _ => self.config.size,
        }
    }

    fn sample(&self, epoch: usize, index: usize, (h, w): (usize, usize)) -> Result<DetSampleOut> {
        let sample = &self.dataset.samples[index];
        let img = open_rgb(&sample.path)?;
        let src = (img.width() as usize, img.height() as usize);
        if src != (sample.width, sample.height) {
            bail!(
                "image `{}` is {}x{} but its annotations say {}x{}",
                sample.path.display(),
                src.0,
                src.1,
                sample.width,
                sample.height
            );
        }
        let c = &self.config;
        let base = match c.preprocess.resize {
            Resize::Letterbox => Letterbox::new(src, (w, h))?,
            Resize::Stretch => Letterbox::stretched(src, (w, h))?,
            Resize::CenterCrop { .. } => bail!("detection needs a letterbox or stretch preprocess, not a centre crop"),
        };
        if !c.train {
            let placement = Placement { src, net: (w, h), resized: base.resized, offset: offset_of(&base) };
            let boxes = place_boxes(&sample.boxes, &placement, 0.0, 0.0);
            return Ok((preprocess_host(&c.preprocess, &img, (h, w), &sample.path)?, boxes, base));
        }
        let mut rng = sample_rng(c.seed, epoch, index);
        let a = &self.augment;
        let s = uniform(&mut rng, a.scale.0, a.scale.1);
        let stretch = (1.0 + a.aspect.max(0.0)).ln();
        let aspect = uniform(&mut rng, -stretch, stretch).exp().sqrt();
        let resized = (
            ((base.resized.0 as f32 * s * aspect).round() as usize).max(1),
            ((base.resized.1 as f32 * s / aspect).round() as usize).max(1),
        );
        let slack = (w as i64 - resized.0 as i64, h as i64 - resized.1 as i64);
        let offset = if a.translate {
            (pick(&mut rng, slack.0), pick(&mut rng, slack.1))
        } else {
            (slack.0.div_euclid(2), slack.1.div_euclid(2))
        };
        let placement = Placement { src, net: (w, h), resized, offset };
        let mut data = placement.render(&img.to_rgb8(), &a.jitter, &mut rng, LETTERBOX_GREY);
        let mut boxes = place_boxes(&sample.boxes, &placement, a.min_box, a.min_visible);
        if rng.random::<f32>() < a.flip {
            hflip_planar(&mut data, h, w);
            hflip_boxes(&mut boxes, w as f32);
        }
        normalize(&mut data, c.preprocess.mean, c.preprocess.std);
        Ok((data, boxes, base))
    }

    fn batch(&self, order: &[usize], epoch: usize, step: usize, size: (usize, usize)) -> Result<DetBatch> {
        let indices = self.config.step_indices(order, step)?.to_vec();
        let (mut images, mut boxes, mut letterboxes) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &indices {
            let (data, b, lb) = self.sample(epoch, i, size)?;
            images.push(data);
            boxes.push(b);
            letterboxes.push(lb);
        }
        Ok(DetBatch { images: stack(images, size), boxes, indices, letterboxes })
    }
}

/// Uniform offset between `slack` and 0 (either sign).
fn pick(rng: &mut impl Rng, slack: i64) -> i64 {
    let (lo, hi) = (slack.min(0), slack.max(0));
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

fn offset_of(lb: &Letterbox) -> (i64, i64) {
    (lb.offset.0 as i64, lb.offset.1 as i64)
}

/// Detection batches from a COCO or YOLO dataset.
#[derive(Clone)]
pub struct DetLoader {
    inner: Arc<DetInner>,
}

impl DetLoader {
    pub fn new(dataset: DetDataset, config: LoaderConfig) -> Result<Self> {
        config.check(dataset.samples.len())?;
        if matches!(config.preprocess.resize, Resize::CenterCrop { .. }) {
            bail!("detection needs a letterbox or stretch preprocess, not a centre crop");
        }
        let inner = DetInner { dataset, config, augment: DetAugment::default(), multi_scale: None };
        Ok(DetLoader { inner: Arc::new(inner) })
    }

    /// Replaces the training augmentation ([`DetAugment::default`] otherwise).
    pub fn with_augment(self, augment: DetAugment) -> Self {
        let inner = Arc::unwrap_or_clone(self.inner);
        DetLoader { inner: Arc::new(DetInner { augment, ..inner }) }
    }

    /// Multi-scale training; evaluation batches keep `config.size`.
    pub fn with_multi_scale(self, multi_scale: MultiScale) -> Result<Self> {
        multi_scale.check()?;
        let inner = Arc::unwrap_or_clone(self.inner);
        Ok(DetLoader { inner: Arc::new(DetInner { multi_scale: Some(multi_scale), ..inner }) })
    }

    pub fn dataset(&self) -> &DetDataset {
        &self.inner.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.inner.config.steps(self.inner.dataset.samples.len())
    }

    /// The (height, width) the iterators use for this step.
    pub fn size_for(&self, epoch: usize, step: usize) -> (usize, usize) {
        self.inner.size_for(epoch, step)
    }

    /// One batch at the scheduled size, built on this thread.
    pub fn batch(&self, epoch: usize, step: usize) -> Result<DetBatch> {
        self.batch_at(epoch, step, self.size_for(epoch, step))
    }

    /// One batch at any (height, width).
    pub fn batch_at(&self, epoch: usize, step: usize, size: (usize, usize)) -> Result<DetBatch> {
        if size.0 == 0 || size.1 == 0 {
            bail!("input size must be non-empty, got {}x{}", size.0, size.1);
        }
        let order = self.inner.config.order(self.inner.dataset.samples.len(), epoch);
        self.inner.batch(&order, epoch, step, size)
    }

    pub fn batches(&self, epoch: usize) -> Batches<DetBatch> {
        self.batches_from(epoch, 0)
    }

    /// The epoch's batches from `start_step` on, each at [`DetLoader::size_for`].
    pub fn batches_from(&self, epoch: usize, start_step: usize) -> Batches<DetBatch> {
        let inner = Arc::clone(&self.inner);
        let order = inner.config.order(inner.dataset.samples.len(), epoch);
        let steps = start_step.min(self.steps_per_epoch())..self.steps_per_epoch();
        let (workers, prefetch) = (inner.config.workers, inner.config.prefetch);
        let make = move |step| inner.batch(&order, epoch, step, inner.size_for(epoch, step));
        Batches::spawn(steps, workers, prefetch, Arc::new(make))
    }
}

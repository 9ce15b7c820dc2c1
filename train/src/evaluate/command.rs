//! `csp-train eval`: loads a native weights file (the network travels in it), picks
//! classification or detection from the network, and evaluates it on one split of a dataset.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use csp_models::weights::{load_model, native};

use super::{eval_postprocess, evaluate_classifier, evaluate_detector, task_of, Report, Task};
use crate::data::{ClassDataset, ClassLoader, DetDataset, DetFormat, DetLoader, LoaderConfig};
use crate::trainer::common::open_device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EvalFormat {
    /// Folder for classifiers; for detectors COCO when `<split>/annotations.json` exists, else YOLO.
    Auto,
    /// `<split>/images/` + `<split>/annotations.json`.
    Coco,
    /// `<split>/images/` + `<split>/labels/*.txt`, names in `labels.txt`.
    Yolo,
    /// `<split>/<class>/*` image folders.
    Folder,
}

#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// Native weights file (what `csp-train classify|detect` writes); it carries its network.
    #[arg(long)]
    pub weights: PathBuf,
    /// Dataset root (see `csp-train synth` for the layout).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Dataset format; `auto` picks folder for classifiers, and for detectors COCO when
    /// `<data>/<split>/annotations.json` exists, else YOLO.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: EvalFormat,
    /// Square input side (default: the network's own input size).
    #[arg(long)]
    pub size: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Loader threads (0: load on the evaluating thread).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Detectors: candidates scoring at most this are dropped before NMS.
    #[arg(long, default_value_t = super::EVAL_SCORE_THRESHOLD)]
    pub score_threshold: f32,
    /// Detectors: per-class NMS overlap.
    #[arg(long, default_value_t = super::EVAL_IOU_THRESHOLD)]
    pub iou_threshold: f32,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let report = evaluate(args)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Everything `run` does except printing.
pub fn evaluate(args: &EvalArgs) -> Result<Report> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let device = open_device(&args.device)?;
    let path = &args.weights;
    if native::read_network(path).with_context(|| format!("reading {}", path.display()))?.is_none() {
        bail!("{} is not a cspserve weights file (no network in its metadata)", path.display());
    }
    let model = load_model(None, Some(path), &device, true).with_context(|| format!("loading {}", path.display()))?;
    let mut size = model.net.input_size;
    if let Some(s) = args.size {
        model.net.shapes(s, s).with_context(|| format!("`{}` at {s}x{s}", model.net.arch))?;
        size = (s, s);
    }
    let config = LoaderConfig {
        batch_size: args.batch_size,
        workers: args.workers,
        prefetch: 2,
        seed: 0,
        train: false,
        size,
        preprocess: model.net.preprocess,
    };
    match task_of(&model.net) {
        Task::Classification => {
            if let f @ (EvalFormat::Coco | EvalFormat::Yolo) = args.format {
                bail!("`{}` is a classifier: it evaluates on image folders, not {f:?} annotations", model.net.arch);
            }
            let dataset = ClassDataset::open(&args.data, &args.split)?;
            let loader = ClassLoader::new(dataset, config)?;
            Ok(Report::Classification(evaluate_classifier(&model, &loader)?))
        }
        Task::Detection => {
            let format = match args.format {
                EvalFormat::Coco => DetFormat::Coco,
                EvalFormat::Yolo => DetFormat::Yolo,
                EvalFormat::Folder => {
                    bail!("`{}` is a detector: it needs COCO or YOLO annotations, not image folders", model.net.arch)
                }
                EvalFormat::Auto => split_format(&args.data, &args.split)?,
            };
            let dataset = DetDataset::open(&args.data, &args.split, format)?;
            let loader = DetLoader::new(dataset, config)?;
            let cfg = eval_postprocess(args.score_threshold, args.iou_threshold);
            Ok(Report::Detection(evaluate_detector(&model, &loader, &cfg)?))
        }
    }
}

/// COCO when the split has `annotations.json`, YOLO when it has `labels/`.
fn split_format(root: &Path, split: &str) -> Result<DetFormat> {
    let dir = root.join(split);
    if dir.join("annotations.json").is_file() {
        Ok(DetFormat::Coco)
    } else if dir.join("labels").is_dir() {
        Ok(DetFormat::Yolo)
    } else {
        bail!("`{}` has neither annotations.json (COCO) nor labels/ (YOLO); give --format", dir.display())
    }
}

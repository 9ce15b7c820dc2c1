//! `csp-train detect`: YOLOv3-loss training of a detector on COCO JSON or YOLO txt annotations.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::DType;
use clap::Args;
use csp_models::network::{Op, YoloSpec};
use serde_json::json;

use super::common::{open_device, prepare_out, progress_bar, say, Preset, Throughput, TrainArgs};
use super::Trainer;
use crate::checkpoint::{self, TrainState};
use crate::data::{write_labels_file, DetDataset, DetFormat, DetLoader, LoaderConfig, MultiScale};
use crate::evaluate::{eval_postprocess, evaluate_detector, EVAL_IOU_THRESHOLD, EVAL_SCORE_THRESHOLD};
use crate::loss::yolo::{yolo_loss, BoxLoss, YoloLossConfig};
use crate::metrics_log::MetricsLog;
use crate::plots::write_plots;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const LABELS_FILE: &str = "labels.txt";
const COLUMNS: &[&str] = &[
    "step",
    "epoch",
    "loss",
    "box_loss",
    "obj_loss",
    "cls_loss",
    "lr",
    "images_per_s",
    "val_ap",
    "val_ap50",
    "val_ap75",
];

#[derive(Args, Clone, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Annotation format; by default COCO when `<data>/train/annotations.json` exists, else YOLO.
    #[arg(long, value_enum)]
    pub format: Option<DetFormat>,
    #[arg(long, value_enum, default_value = "mse")]
    pub box_loss: BoxLoss,
    /// Predictions overlapping a ground-truth box by more than this get no objectness loss.
    #[arg(long, default_value_t = 0.7)]
    pub ignore_thresh: f32,
    /// Multi-scale training: a new random side, multiple of 32 in [0.6, 1.4] x --size, every N steps (0: off).
    #[arg(long, default_value_t = 0)]
    pub multi_scale_every: usize,
}

/// The format of a dataset root in the `csp-train synth` layout.
pub fn detect_format(root: &Path) -> Result<DetFormat> {
    if root.join("train").join("annotations.json").is_file() {
        Ok(DetFormat::Coco)
    } else if root.join("train").join("labels").is_dir() {
        Ok(DetFormat::Yolo)
    } else {
        bail!("`{}` has neither train/annotations.json (COCO) nor train/labels/ (YOLO); give --format", root.display())
    }
}

/// The `[yolo]` heads of a network with their layer indices.
pub fn yolo_specs(net: &csp_models::Network) -> Vec<(usize, YoloSpec)> {
    net.layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match &l.op {
            Op::Yolo(y) => Some((i, y.clone())),
            _ => None,
        })
        .collect()
}

pub fn run(args: &DetectArgs) -> Result<()> {
    let t = &args.train;
    let device = open_device(&t.device)?;
    prepare_out(&t.out)?;
    let format = match args.format {
        Some(f) => f,
        None => detect_format(&t.data)?,
    };
    let train_set = DetDataset::open(&t.data, "train", format)?;
    let classes = train_set.classes.clone();
    let val_set = if t.data.join("val").is_dir() { Some(DetDataset::open(&t.data, "val", format)?) } else { None };

    let resume = t.resume.as_deref().map(|d| checkpoint::load(d, &device)).transpose()?;
    let net = match &resume {
        Some(ck) => ck.network.clone(),
        None => t.network("csppeleenet_ref_efm_sam", classes.len(), None)?,
    };
    if net.num_classes != classes.len() {
        bail!("the model has {} classes, the dataset {}", net.num_classes, classes.len());
    }
    let heads = yolo_specs(&net);
    if heads.is_empty() {
        bail!("`{}` is not a detector (no yolo heads)", net.arch);
    }
    let (head_layers, specs): (Vec<usize>, Vec<YoloSpec>) = heads.into_iter().unzip();
    let side = net.input_size.0;
    let config = LoaderConfig {
        batch_size: t.batch_size,
        workers: t.workers,
        prefetch: 2,
        seed: t.seed,
        train: true,
        size: net.input_size,
        preprocess: net.preprocess,
    };
    let mut loader = DetLoader::new(train_set, config)?;
    let val_loader = match val_set {
        Some(v) => Some(DetLoader::new(v, LoaderConfig { train: false, ..config })?),
        None => None,
    };
    let val_postprocess = eval_postprocess(EVAL_SCORE_THRESHOLD, EVAL_IOU_THRESHOLD);
    if args.multi_scale_every > 0 {
        let round = |f: f64| (((side as f64 * f) / 32.0).round() as usize).max(1) * 32;
        loader =
            loader.with_multi_scale(MultiScale { min: round(0.6), max: round(1.4), every: args.multi_scale_every })?;
    }
    let per_epoch = loader.steps_per_epoch();
    let total = t.total_steps(per_epoch)?;
    let (sgd, schedule) = t.recipe(Preset::PaperDetector, total)?;
    let pretrained = if resume.is_some() { None } else { t.pretrained.as_deref() };
    let (mut trainer, report) = Trainer::new(net, &device, t.seed, sgd, schedule, t.bn_momentum, pretrained)?;
    if let Some(r) = report {
        eprintln!("pretrained: {}", r.summary());
    }
    let (mut epoch, mut in_epoch) = (0, 0);
    if let Some(ck) = resume {
        let state = checkpoint::restore(&mut trainer, ck)?;
        (epoch, in_epoch) = (state.epoch, state.step_in_epoch);
        eprintln!("resumed at step {} (epoch {epoch}, batch {in_epoch})", trainer.step);
    }
    let loss_cfg = YoloLossConfig { ignore_thresh: args.ignore_thresh, box_loss: args.box_loss, ..Default::default() };
    write_labels_file(&t.out.join(LABELS_FILE), &classes)?;
    let settings = json!({"command": "detect", "args": t, "box_loss": args.box_loss, "ignore_thresh": args.ignore_thresh,
        "multi_scale_every": args.multi_scale_every, "format": format});
    let mut log = MetricsLog::open(&t.out, COLUMNS, (trainer.step > 0).then_some(trainer.step))?;
    let bar = progress_bar(total, trainer.step, t.quiet);
    let mut speed = Throughput::new();
    let mut acc = [0.0f64; 4];
    let mut acc_n = 0usize;

    while trainer.step < total {
        for batch in loader.batches_from(epoch, in_epoch) {
            let batch = batch?;
            let x = trainer.images(&batch.images)?;
            let (maps, stats) = trainer.model.forward_train(&x, &head_layers)?;
            let input = (batch.images.width, batch.images.height);
            let parts = yolo_loss(&maps, &specs, &batch.boxes, input, &loss_cfg)?;
            let lr = trainer.update(&parts.total, &stats)?;
            let value = parts.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                bail!("loss is {value} at step {}: lower --lr", trainer.step);
            }
            in_epoch += 1;
            speed.add(batch.images.n);
            for (a, v) in acc.iter_mut().zip([value, parts.boxes, parts.objectness, parts.classes]) {
                *a += v;
            }
            acc_n += 1;
            let step = trainer.step;
            bar.set_position(step as u64);
            if step % t.log_every.max(1) == 0 || step == total {
                let m: Vec<f64> = acc.iter().map(|a| a / acc_n.max(1) as f64).collect();
                let ips = speed.rate();
                (acc, acc_n) = ([0.0; 4], 0);
                bar.set_message(format!(
                    "loss {:.3} (box {:.3} obj {:.3} cls {:.3}) lr {lr:.2e} {ips:.1} img/s",
                    m[0], m[1], m[2], m[3]
                ));
                if t.quiet {
                    eprintln!(
                        "step {step}/{total} epoch {epoch} loss {:.4} box {:.4} obj {:.4} cls {:.4} lr {lr:.3e} {ips:.1} img/s",
                        m[0], m[1], m[2], m[3]
                    );
                }
                log.log(&[
                    ("step", step as f64),
                    ("epoch", epoch as f64),
                    ("loss", m[0]),
                    ("box_loss", m[1]),
                    ("obj_loss", m[2]),
                    ("cls_loss", m[3]),
                    ("lr", lr),
                    ("images_per_s", ips),
                ])?;
            }
            let at_end = step == total;
            if t.eval_due(step, total) {
                if let Some(v) = &val_loader {
                    let r = evaluate_detector(&trainer.model, v, &val_postprocess)?;
                    let m = &r.summary;
                    let (ap, ap50, ap75) = (m.ap * 100.0, m.ap50 * 100.0, m.ap75 * 100.0);
                    let line =
                        format!("step {step}: val AP {ap:.2} AP50 {ap50:.2} AP75 {ap75:.2} ({} images)", r.images);
                    say(&bar, t.quiet, line);
                    log.log(&[
                        ("step", step as f64),
                        ("epoch", epoch as f64),
                        ("val_ap", m.ap),
                        ("val_ap50", m.ap50),
                        ("val_ap75", m.ap75),
                    ])?;
                }
                write_plots(&log)?;
            }
            if t.checkpoint_due(step, total) {
                let state = TrainState { step, epoch, step_in_epoch: in_epoch, settings: settings.clone() };
                checkpoint::save(&t.out, &trainer, &state)?;
            }
            if at_end {
                break;
            }
        }
        if in_epoch >= per_epoch {
            epoch += 1;
            in_epoch = 0;
        }
    }
    bar.finish();
    trainer.write_final(&t.out)
}

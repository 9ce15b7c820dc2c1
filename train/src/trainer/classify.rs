//! `csp-train classify`: cross-entropy training of a classifier on an image-folder dataset.

use anyhow::{bail, Result};
use candle_core::DType;
use clap::Args;
use serde_json::json;

use super::common::{open_device, prepare_out, progress_bar, say, Preset, Throughput, TrainArgs};
use super::Trainer;
use crate::checkpoint::{self, TrainState};
use crate::data::{write_labels_file, ClassDataset, ClassLoader, LoaderConfig};
use crate::evaluate::evaluate_classifier;
use crate::loss::cross_entropy;
use crate::metrics_log::MetricsLog;
use crate::plots::write_plots;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const LABELS_FILE: &str = "labels.txt";
const COLUMNS: &[&str] = &["step", "epoch", "loss", "lr", "images_per_s", "val_top1", "val_top5"];

#[derive(Args, Clone, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub train: TrainArgs,
}

pub fn run(args: &ClassifyArgs) -> Result<()> {
    let t = &args.train;
    let device = open_device(&t.device)?;
    prepare_out(&t.out)?;
    let train_set = ClassDataset::open(&t.data, "train")?;
    let classes = train_set.classes.clone();
    let val_set = if t.data.join("val").is_dir() { Some(ClassDataset::open(&t.data, "val")?) } else { None };

    let resume = t.resume.as_deref().map(|d| checkpoint::load(d, &device)).transpose()?;
    let net = match &resume {
        Some(ck) => ck.network.clone(),
        None => t.network("csppeleenet", classes.len(), None)?,
    };
    if net.num_classes != classes.len() {
        bail!("the model has {} classes, the dataset {}", net.num_classes, classes.len());
    }
    let config = LoaderConfig {
        batch_size: t.batch_size,
        workers: t.workers,
        prefetch: 2,
        seed: t.seed,
        train: true,
        size: net.input_size,
        preprocess: net.preprocess,
    };
    let loader = ClassLoader::new(train_set, config)?;
    let val_loader = match val_set {
        Some(v) => Some(ClassLoader::new(v, LoaderConfig { train: false, ..config })?),
        None => None,
    };
    let per_epoch = loader.steps_per_epoch();
    let total = t.total_steps(per_epoch)?;
    let (sgd, schedule) = t.recipe(Preset::PaperClassifier, total)?;
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
    write_labels_file(&t.out.join(LABELS_FILE), &classes)?;
    let settings = json!({"command": "classify", "args": t});
    let mut log = MetricsLog::open(&t.out, COLUMNS, (trainer.step > 0).then_some(trainer.step))?;
    let bar = progress_bar(total, trainer.step, t.quiet);
    let mut speed = Throughput::new();
    let mut loss_acc = (0.0, 0usize);

    while trainer.step < total {
        for batch in loader.batches_from(epoch, in_epoch) {
            let batch = batch?;
            let x = trainer.images(&batch.images)?;
            let (outs, stats) = trainer.model.forward_train(&x, &[trainer.model.net.output_layer()])?;
            let logits = outs[0].flatten_from(1)?;
            let loss = cross_entropy(&logits, &batch.labels)?;
            let lr = trainer.update(&loss, &stats)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                bail!("loss is {value} at step {}: lower --lr", trainer.step);
            }
            in_epoch += 1;
            speed.add(batch.images.n);
            loss_acc = (loss_acc.0 + value, loss_acc.1 + 1);
            let step = trainer.step;
            bar.set_position(step as u64);
            if step % t.log_every.max(1) == 0 || step == total {
                let (mean, ips) = (loss_acc.0 / loss_acc.1.max(1) as f64, speed.rate());
                loss_acc = (0.0, 0);
                bar.set_message(format!("loss {mean:.4} lr {lr:.2e} {ips:.1} img/s"));
                if t.quiet {
                    eprintln!("step {step}/{total} epoch {epoch} loss {mean:.4} lr {lr:.3e} {ips:.1} img/s");
                }
                let row =
                    [("step", step as f64), ("epoch", epoch as f64), ("loss", mean), ("lr", lr), ("images_per_s", ips)];
                log.log(&row)?;
            }
            let at_end = step == total;
            if t.eval_due(step, total) {
                if let Some(v) = &val_loader {
                    let r = evaluate_classifier(&trainer.model, v)?;
                    let (top1, top5) = (r.top1 * 100.0, r.top5 * 100.0);
                    let line = format!("step {step}: val top-1 {top1:.2}% top-5 {top5:.2}% ({} images)", r.images);
                    say(&bar, t.quiet, line);
                    log.log(&[
                        ("step", step as f64),
                        ("epoch", epoch as f64),
                        ("val_top1", r.top1),
                        ("val_top5", r.top5),
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

//! Flags and plumbing shared by `classify` and `detect`: presets, schedule, device, output
//! directory, checkpoints, metrics and the progress bar.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use csp_models::device::DeviceSpec;
use serde::Serialize;

use crate::optim::SgdConfig;
use crate::schedule::{parse_steps, Decay, Schedule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// SGD momentum 0.9, weight decay 0.005, lr 0.1, polynomial decay (power 4).
    PaperClassifier,
    /// SGD momentum 0.9, weight decay 0.0005, lr 0.001, step decay x0.1 at 80% and 90%.
    PaperDetector,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Poly,
    Steps,
    Constant,
}

#[derive(Args, Clone, Debug, Serialize)]
pub struct TrainArgs {
    /// Dataset root (see `csp-train synth` for the layout).
    #[arg(long)]
    pub data: PathBuf,
    /// Built-in architecture name.
    #[arg(long)]
    pub arch: Option<String>,
    /// Channel-width multiplier of the native architectures.
    #[arg(long)]
    pub width: Option<f64>,
    /// Square training input side.
    #[arg(long)]
    pub size: Option<usize>,
    /// Training length in epochs (ignored when --steps is given).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training length in updates.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Recipe defaults for the optimiser and schedule; explicit flags override them.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub momentum: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long, value_enum)]
    pub policy: Option<Policy>,
    /// Exponent of the polynomial decay.
    #[arg(long)]
    pub power: Option<f64>,
    /// Step decay points: fractions of the run (0.8,0.9) or step numbers (4000,4500).
    #[arg(long)]
    pub decay_steps: Option<String>,
    #[arg(long)]
    pub decay_scale: Option<f64>,
    /// Warm-up steps (darknet burn_in); default min(1000, 5% of the run).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Warm-up exponent: 4 as darknet, 1 for linear.
    #[arg(long, default_value_t = 4.0)]
    pub warmup_power: f64,
    /// Batch weight in the batch-norm running statistics.
    #[arg(long, default_value_t = 0.1)]
    pub bn_momentum: f64,
    /// Loader threads (0: load on the training thread).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: weights, labels, metrics, plots, checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Write a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Continue the run whose checkpoint is in this directory (the flags must describe the same run).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Initial weights: native or timm safetensors, or darknet .weights; tensors are matched by
    /// name and shape.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Evaluate on the validation split every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Write a metrics row every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress bar (plain log lines instead).
    #[arg(long)]
    pub quiet: bool,
}

pub fn open_device(spec: &str) -> Result<Device> {
    Ok(spec.parse::<DeviceSpec>()?.open()?)
}

impl TrainArgs {
    /// Whether `step` (of `total`) is an evaluation point: every `--eval-every` steps, and the last.
    pub fn eval_due(&self, step: usize, total: usize) -> bool {
        step == total || (self.eval_every > 0 && step.is_multiple_of(self.eval_every))
    }

    /// Whether `step` (of `total`) writes a checkpoint: every `--checkpoint-every` steps, and the last.
    pub fn checkpoint_due(&self, step: usize, total: usize) -> bool {
        step == total || (self.checkpoint_every > 0 && step.is_multiple_of(self.checkpoint_every))
    }

    /// Optimiser and schedule from the preset (the task's default) overridden by flags.
    pub fn recipe(&self, default: Preset, total_steps: usize) -> Result<(SgdConfig, Schedule)> {
        let preset = self.preset.unwrap_or(default);
        let (lr, wd, policy) = match preset {
            Preset::PaperClassifier => (0.1, 0.005, Policy::Poly),
            Preset::PaperDetector => (0.001, 0.0005, Policy::Steps),
        };
        let lr = self.lr.unwrap_or(lr);
        let sgd = SgdConfig { momentum: self.momentum.unwrap_or(0.9), weight_decay: self.weight_decay.unwrap_or(wd) };
        let momentum_ok = (0.0..1.0).contains(&sgd.momentum);
        if !(lr.is_finite() && lr > 0.0 && momentum_ok) || sgd.weight_decay < 0.0 {
            bail!("need lr > 0, 0 <= momentum < 1, weight decay >= 0");
        }
        let decay = match self.policy.unwrap_or(policy) {
            Policy::Poly => Decay::Poly { power: self.power.unwrap_or(4.0) },
            Policy::Steps => Decay::Steps {
                at: parse_steps(self.decay_steps.as_deref().unwrap_or("0.8,0.9"), total_steps)?,
                scale: self.decay_scale.unwrap_or(0.1),
            },
            Policy::Constant => Decay::Constant,
        };
        let warmup = self.warmup.unwrap_or_else(|| 1000.min(total_steps / 20));
        Ok((sgd, Schedule { base_lr: lr, total_steps, decay, warmup, warmup_power: self.warmup_power }))
    }

    /// Total updates from --steps, or --epochs times the epoch length.
    pub fn total_steps(&self, steps_per_epoch: usize) -> Result<usize> {
        match (self.steps, self.epochs) {
            (Some(s), _) if s > 0 => Ok(s),
            (None, Some(e)) if e > 0 => Ok(e * steps_per_epoch),
            _ => bail!("give --steps N or --epochs N (positive)"),
        }
    }

    /// The network for `arch` with the requested width and input size.
    pub fn network(
        &self,
        default_arch: &str,
        classes: usize,
        default_size: Option<usize>,
    ) -> Result<csp_models::Network> {
        let arch = self.arch.as_deref().unwrap_or(default_arch);
        let mut net = build_network(arch, classes, self.width)?;
        if let Some(s) = self.size.or(default_size) {
            net.input_size = (s, s);
        }
        let (h, w) = net.input_size;
        net.shapes(h, w).with_context(|| format!("`{arch}` at {h}x{w}"))?;
        Ok(net)
    }
}

/// A built-in architecture, scaled when `width` is given.
pub fn build_network(arch: &str, classes: usize, width: Option<f64>) -> Result<csp_models::Network> {
    Ok(match width {
        None => csp_models::backbones::build(arch, classes)?,
        Some(w) => csp_models::backbones::build_scaled(arch, classes, w)?,
    })
}

/// Steps per second over the recent window, for images/s.
pub struct Throughput {
    since: Instant,
    images: usize,
}

impl Throughput {
    pub fn new() -> Self {
        Throughput { since: Instant::now(), images: 0 }
    }
    pub fn add(&mut self, images: usize) {
        self.images += images;
    }
    /// Images per second since the last call, then restarts the window.
    pub fn rate(&mut self) -> f64 {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let r = self.images as f64 / secs;
        *self = Throughput::new();
        r
    }
}

impl Default for Throughput {
    fn default() -> Self {
        Self::new()
    }
}

pub fn progress_bar(total: usize, done: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done as u64);
    bar
}

/// Creates the output directory; with `--resume` it may already hold the run.
pub fn prepare_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// A line above the progress bar, or on stderr when the bar is hidden.
pub fn say(bar: &indicatif::ProgressBar, quiet: bool, line: String) {
    if quiet {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

//! `csp-model`: inspect, run, convert and benchmark CSP models.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};

use csp_models::weights::{self, Arch};
use csp_models::{backbones, flops, Model};

#[derive(Parser)]
#[command(name = "csp-model", version, about = "Inspect, run, convert and benchmark CSPNet models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every built-in architecture name (a darknet .cfg path works wherever a name does).
    List,
    /// Per-layer table and totals: parameters, FLOPs, CIO memory traffic.
    Summary {
        #[command(flatten)]
        arch: ArchArgs,
        /// Input size (square); default: the model's own.
        #[arg(long)]
        size: Option<usize>,
        /// Class count for built-in architectures.
        #[arg(long, default_value_t = 1000)]
        classes: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Classify images, or run raw tensors from a safetensors file.
    Predict {
        #[command(flatten)]
        arch: ArchArgs,
        /// Weights: native or timm safetensors, or darknet .weights (with --cfg).
        #[arg(long)]
        weights: PathBuf,
        /// Images to classify with the model's preprocessing.
        #[arg(long, num_args = 1.., conflicts_with = "input")]
        image: Vec<PathBuf>,
        /// safetensors file with tensor `input` [N,3,H,W] f32.
        #[arg(long, requires = "output")]
        input: Option<PathBuf>,
        /// Where to write the result: tensor `output` (logits for classifiers), or for detectors
        /// `head_0`, `head_1`, ... (each [yolo] head's raw map, [N, anchors*(5+classes), H, W]).
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Class names, one per line.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Convert timm safetensors or darknet .weights into our safetensors (network in the metadata).
    Convert {
        #[command(flatten)]
        arch: ArchArgs,
        #[arg(long)]
        weights: PathBuf,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Store batch norm folded into the convolutions (smaller, inference only).
        #[arg(long)]
        fold: bool,
    },
    /// Time forward passes on random input (random weights unless --weights).
    Bench {
        #[command(flatten)]
        arch: ArchArgs,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// CPU threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed iterations after warm-up.
        #[arg(long, default_value_t = 20)]
        iters: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ArchArgs {
    /// Built-in architecture name (see `csp-model list`).
    #[arg(long, conflicts_with = "cfg")]
    arch: Option<String>,
    /// Darknet .cfg file.
    #[arg(long)]
    cfg: Option<PathBuf>,
}

impl ArchArgs {
    fn get(&self) -> Option<Arch> {
        match (&self.arch, &self.cfg) {
            (Some(a), _) => Some(Arch::parse(a)),
            (None, Some(c)) => Some(Arch::DarknetCfg(c.clone())),
            _ => None,
        }
    }
    fn required(&self) -> Result<Arch> {
        self.get().context("give --arch NAME or --cfg FILE")
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Bench { threads: Some(t), .. } = &cli.command {
        // candle's CPU kernels size their thread pools from this variable; set it before any runs.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    match cli.command {
        Command::List => {
            for (name, about) in backbones::ARCHITECTURES {
                println!("{name:<20} {about}");
            }
            println!("{:<20} any darknet .cfg file path", "<file>.cfg");
            Ok(())
        }
        Command::Summary { arch, size, classes, json } => summary(&arch.required()?, size, classes, json),
        Command::Predict { arch, weights, image, input, output, top_k, labels, json } => {
            let model = weights::load_model(arch.get().as_ref(), Some(&weights), &Device::Cpu, true)?;
            match (input, output) {
                (Some(i), Some(o)) => predict_tensors(&model, &i, &o),
                _ if !image.is_empty() => predict_images(&model, &image, top_k, labels.as_deref(), json),
                _ => bail!("give --image FILE... or --input IN.safetensors --output OUT.safetensors"),
            }
        }
        Command::Convert { arch, weights, out, fold } => {
            let model = weights::load_model(arch.get().as_ref(), Some(&weights), &Device::Cpu, fold)?;
            weights::native::save(&model, &out)?;
            let s = flops::summarize(&model.net, model.net.input_size.0, model.net.input_size.1)?;
            println!(
                "wrote {} ({}, {} classes, {} parameters)",
                out.display(),
                model.net.arch,
                model.net.num_classes,
                s.params
            );
            Ok(())
        }
        Command::Bench { arch, weights, batch, size, threads, iters, warmup, json } => {
            bench(&arch, weights.as_deref(), batch, size, threads, iters, warmup, json)
        }
    }
}

fn summary(arch: &Arch, size: Option<usize>, classes: usize, json: bool) -> Result<()> {
    let net = arch.network(classes)?;
    let (h, w) = size.map(|s| (s, s)).unwrap_or(net.input_size);
    let s = flops::summarize(&net, h, w)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{:>4} {:<9} {:<34} {:>16} {:>11} {:>9} {:>11}",
        "#", "layer", "name", "output", "params", "MFLOPs", "CIO"
    );
    for l in &s.layers {
        let out = format!("{}x{}x{}", l.output.c, l.output.h, l.output.w);
        println!(
            "{:>4} {:<9} {:<34} {:>16} {:>11} {:>9.1} {:>11}",
            l.index,
            l.kind,
            l.name,
            out,
            l.params,
            l.flops as f64 / 1e6,
            l.cio
        );
    }
    println!("{} at {h}x{w}", s.arch);
    println!("  params (all):          {:>12}", s.params);
    println!("  params (conv weights): {:>12}", s.conv_weight_params);
    println!("  BFLOPs:                {:>12.3}", s.bflops);
    println!("  CIO (elements):        {:>12}", s.cio);
    Ok(())
}

fn predict_tensors(model: &Model, input: &Path, output: &Path) -> Result<()> {
    let tensors =
        candle_core::safetensors::load(input, &Device::Cpu).with_context(|| format!("reading {}", input.display()))?;
    let x = tensors.get("input").with_context(|| format!("{} has no tensor `input`", input.display()))?;
    let x = x.to_dtype(DType::F32)?;
    // Detectors: one raw map per [yolo] head, [N, anchors * (5 + classes), H, W], before decoding.
    let is_detector = model.net.layers.iter().any(|l| matches!(l.op, csp_models::network::Op::Yolo(_)));
    let named: std::collections::HashMap<String, Tensor> = if is_detector {
        model.forward_heads(&x)?.into_iter().enumerate().map(|(k, t)| (format!("head_{k}"), t)).collect()
    } else {
        [("output".to_string(), model.forward(&x)?)].into_iter().collect()
    };
    candle_core::safetensors::save(&named, output)?;
    Ok(())
}

fn predict_images(model: &Model, images: &[PathBuf], top_k: usize, labels: Option<&Path>, json: bool) -> Result<()> {
    let labels: Vec<String> = match labels {
        Some(p) => std::fs::read_to_string(p)?.lines().map(str::to_string).collect(),
        None => vec![],
    };
    let net = &model.net;
    let mut records = vec![];
    for path in images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let img = csp_models::preprocess::Preprocess::decode(&bytes)?;
        let x = net.preprocess.apply(&img, net.input_size, model.device())?.unsqueeze(0)?;
        let probs = Model::probabilities(&model.forward(&x)?)?.squeeze(0)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<(usize, f32)> = order.into_iter().take(top_k).map(|i| (i, probs[i])).collect();
        if json {
            let classes: Vec<_> =
                top.iter().map(|&(i, p)| serde_json::json!({"index": i, "label": labels.get(i), "score": p})).collect();
            records.push(serde_json::json!({"image": path.display().to_string(), "classes": classes}));
        } else {
            println!("{}", path.display());
            for (i, p) in top {
                let name = labels.get(i).map(String::as_str).unwrap_or("");
                println!("  {i:>5} {p:>8.4} {name}");
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    arch: &ArchArgs,
    weights: Option<&Path>,
    batch: usize,
    size: usize,
    threads: Option<usize>,
    iters: usize,
    warmup: usize,
    json: bool,
) -> Result<()> {
    if batch == 0 || size == 0 || iters == 0 {
        bail!("--batch, --size and --iters must be positive");
    }
    let model = weights::load_model(arch.get().as_ref(), weights, &Device::Cpu, true)?;
    let x = Tensor::randn(0f32, 1f32, (batch, model.net.input_channels, size, size), &Device::Cpu)?;
    for _ in 0..warmup {
        model.forward(&x)?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        model.forward(&x)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let threads = threads.unwrap_or_else(candle_core::utils::get_num_threads);
    let ips = batch as f64 * 1e3 / median;
    if json {
        let rec = serde_json::json!({
            "arch": model.net.arch, "batch": batch, "size": size, "threads": threads, "iters": iters,
            "median_ms": median, "min_ms": times[0], "max_ms": times[times.len() - 1], "images_per_s": ips,
        });
        println!("{rec}");
    } else {
        println!(
            "{} batch {batch} {size}x{size} threads {threads}: median {median:.2} ms (min {:.2}, max {:.2}), {ips:.1} images/s",
            model.net.arch,
            times[0],
            times[times.len() - 1]
        );
    }
    Ok(())
}

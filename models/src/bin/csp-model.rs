//! `csp-model`: inspect, run, convert and benchmark CSP models.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};

use csp_models::device::{DeviceSpec, Precision};
use csp_models::heads::{
    coco_labels, load_labels, postprocess, Detection, Letterbox, NmsKind, PostprocessConfig, YoloHead, COCO_CLASSES,
};
use csp_models::model::Engine;
use csp_models::preprocess::{Preprocess, Resize};
use csp_models::weights::{self, Arch};
use csp_models::{backbones, draw, flops, Model};
use image::ImageFormat;
use serde::Serialize;

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
        /// Class count for built-in architectures (default: 80 for detectors, 1000 for classifiers).
        #[arg(long)]
        classes: Option<usize>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also draw the per-layer BFLOPs bar chart into this PNG file.
        #[arg(long)]
        plot: Option<PathBuf>,
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
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Detect objects in images with a detector: JSON on stdout, annotated copies with --out-dir.
    Detect {
        #[command(flatten)]
        arch: ArchArgs,
        /// Weights: our safetensors (enough alone), or darknet .weights (with --cfg).
        #[arg(long)]
        weights: PathBuf,
        /// Image files (PNG, JPEG, BMP, WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Keep a (box, class) pair when objectness x class probability is above this, in [0, 1].
        #[arg(long, default_value_t = 0.25)]
        score_threshold: f32,
        /// NMS: a kept box removes another of its class overlapping it by more than this IoU, in [0, 1].
        #[arg(long, default_value_t = 0.45)]
        iou_threshold: f32,
        /// Most detections per image.
        #[arg(long, default_value_t = 300)]
        max_detections: usize,
        /// Only these class ids (comma separated).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<usize>,
        /// Suppress across classes (each box keeps its best class).
        #[arg(long)]
        agnostic: bool,
        /// DIoU-NMS (darknet's diounms, beta 0.6) instead of plain IoU.
        #[arg(long)]
        diou: bool,
        /// Class names, one per line (default: COCO's for 80-class models, else class ids).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Write annotated copies here as PNG (boxes and "label score"), one per image, same file stem.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Convert timm safetensors or darknet .weights into our safetensors (network in the metadata);
    /// without --weights, write randomly initialised weights (for tests and CPU/GPU parity checks).
    Convert {
        #[command(flatten)]
        arch: ArchArgs,
        #[arg(long)]
        weights: Option<PathBuf>,
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
        /// CPU convolutions: `fast` (the blocked engine: conv, bias, activation and residual in
        /// one kernel) or `candle` (candle's ops, the reference).
        #[arg(long, value_enum, default_value_t = Engine::Fast)]
        engine: Engine,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        device: DeviceArg,
    },
}

#[derive(Args)]
struct DeviceArg {
    /// Where the model runs: cpu, cuda (= cuda:0) or cuda:N (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What the model computes in: f32, or f16 / bf16 for GPUs (on the CPU these run on candle's
    /// slower reference ops). Inputs and outputs stay f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    dtype: Precision,
}

impl DeviceArg {
    fn open(&self) -> Result<Device> {
        Ok(self.device.parse::<DeviceSpec>()?.open()?)
    }
}

#[derive(Args)]
struct ArchArgs {
    /// Built-in architecture name (see `csp-model list`).
    #[arg(long, conflicts_with = "cfg")]
    arch: Option<String>,
    /// Darknet .cfg file.
    #[arg(long)]
    cfg: Option<PathBuf>,
    /// Channel-width multiplier for a built-in --arch (0.5: half the channels, rounded to
    /// multiples of 8); the model is named `NAME_w<W>`, which --arch also accepts.
    #[arg(long)]
    width: Option<f64>,
}

impl ArchArgs {
    fn get(&self) -> Result<Option<Arch>> {
        let arch = match (&self.arch, &self.cfg) {
            (Some(a), _) => Arch::parse(a),
            (None, Some(c)) => Arch::DarknetCfg(c.clone()),
            (None, None) if self.width.is_some() => bail!("--width needs --arch NAME"),
            (None, None) => return Ok(None),
        };
        let Some(width) = self.width else { return Ok(Some(arch)) };
        backbones::check_width(width)?;
        match arch {
            Arch::Builtin(name) => Ok(Some(Arch::Builtin(backbones::scaled_name(&name, width)))),
            Arch::DarknetCfg(path) => bail!("--width scales built-in architectures, not {}", path.display()),
        }
    }
    fn required(&self) -> Result<Arch> {
        self.get()?.context("give --arch NAME or --cfg FILE")
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
        Command::Summary { arch, size, classes, json, plot } => {
            summary(&arch.required()?, size, classes, json, plot.as_deref())
        }
        Command::Predict { arch, weights, image, input, output, top_k, labels, json, device } => {
            let model = weights::load_model(arch.get()?.as_ref(), Some(&weights), &device.open()?, true)?
                .with_precision(device.dtype)?;
            match (input, output) {
                (Some(i), Some(o)) => predict_tensors(&model, &i, &o),
                _ if !image.is_empty() => predict_images(&model, &image, top_k, labels.as_deref(), json),
                _ => bail!("give --image FILE... or --input IN.safetensors --output OUT.safetensors"),
            }
        }
        Command::Detect {
            arch,
            weights,
            images,
            score_threshold,
            iou_threshold,
            max_detections,
            classes,
            agnostic,
            diou,
            labels,
            out_dir,
        } => {
            let post = PostprocessConfig {
                score_threshold,
                iou_threshold,
                max_detections,
                class_agnostic: agnostic,
                nms: if diou { NmsKind::DIOU } else { NmsKind::Greedy },
                classes: (!classes.is_empty()).then_some(classes),
                labels: vec![],
            };
            detect(arch.get()?.as_ref(), &weights, &images, post, labels.as_deref(), out_dir.as_deref())
        }
        Command::Convert { arch, weights, out, fold } => {
            let arch = arch.get()?;
            if weights.is_none() && arch.is_none() {
                bail!("give --weights FILE, or --arch NAME / --cfg FILE for random weights");
            }
            let model = weights::load_model(arch.as_ref(), weights.as_deref(), &Device::Cpu, fold)?;
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
        Command::Bench { arch, weights, batch, size, threads, iters, warmup, engine, json, device } => {
            bench(&arch, weights.as_deref(), &device, batch, size, threads, iters, warmup, engine, json)
        }
    }
}

fn summary(arch: &Arch, size: Option<usize>, classes: Option<usize>, json: bool, plot: Option<&Path>) -> Result<()> {
    let net = arch.network(classes.unwrap_or_else(|| arch.default_num_classes()))?;
    let (h, w) = size.map(|s| (s, s)).unwrap_or(net.input_size);
    let s = flops::summarize(&net, h, w)?;
    if let Some(path) = plot {
        let chart = draw::chart::bflops_chart(&net, &s)?;
        chart.save_with_format(path, ImageFormat::Png).with_context(|| format!("writing {}", path.display()))?;
        // Keep stdout clean for --json; say where the chart went on stderr.
        eprintln!("wrote {} ({}x{})", path.display(), chart.width(), chart.height());
    }
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
    let x = x.to_dtype(DType::F32)?.to_device(model.device())?;
    // Detectors: one raw map per [yolo] head, [N, anchors * (5 + classes), H, W], before decoding.
    let is_detector = model.net.layers.iter().any(|l| matches!(l.op, csp_models::network::Op::Yolo(_)));
    let outputs = if is_detector { model.forward_heads(&x)? } else { vec![model.forward(&x)?] };
    let mut named = std::collections::HashMap::new();
    for (k, t) in outputs.into_iter().enumerate() {
        let name = if is_detector { format!("head_{k}") } else { "output".to_string() };
        named.insert(name, t.to_device(&Device::Cpu)?);
    }
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
        let img = Preprocess::decode(&bytes)?;
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

/// `detect`: each image through the detector's own preprocessing, heads and post-processing;
/// one JSON record per image on stdout, annotated PNG copies in `out_dir`.
fn detect(
    arch: Option<&Arch>,
    weights_path: &Path,
    images: &[PathBuf],
    mut post: PostprocessConfig,
    labels: Option<&Path>,
    out_dir: Option<&Path>,
) -> Result<()> {
    for (flag, v) in [("--score-threshold", post.score_threshold), ("--iou-threshold", post.iou_threshold)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} must be in [0, 1], got {v}");
        }
    }
    if post.max_detections == 0 {
        bail!("--max-detections must be at least 1");
    }
    if !weights_path.is_file() {
        bail!("weights file {} not found", weights_path.display());
    }
    if let Some(missing) = images.iter().find(|p| !p.is_file()) {
        bail!("image {} not found", missing.display());
    }
    let outputs = annotated_paths(images, out_dir)?;

    let model = weights::load_model(arch, Some(weights_path), &Device::Cpu, true)?;
    let net = &model.net;
    let heads: Vec<YoloHead> = YoloHead::from_network(net)?.into_iter().map(|(_, h)| h).collect();
    let Some(classes) = heads.iter().map(|h| h.classes).max() else {
        bail!(
            "`{}` is a classifier, not a detector: it has no [yolo] heads (use `csp-model predict --image`)",
            net.arch
        );
    };
    if let Some(bad) = post.classes.iter().flatten().find(|&&c| c >= classes) {
        bail!("--classes: class id {bad} does not exist (the model has {classes} classes, ids 0..{classes})");
    }
    post.labels = match labels {
        Some(path) => {
            let names = load_labels(path)?;
            if names.len() < classes {
                eprintln!(
                    "warning: {} names {} classes, the model has {classes}; the rest are shown by id",
                    path.display(),
                    names.len()
                );
            }
            names
        }
        None if classes == COCO_CLASSES.len() => coco_labels(),
        None => (0..classes).map(|c| c.to_string()).collect(),
    };
    // Boxes must map back onto the whole image: only letterbox and stretch allow that.
    let (net_h, net_w) = net.input_size;
    let fit: FitImage = match net.preprocess.resize {
        Resize::Letterbox => Letterbox::new,
        Resize::Stretch => Letterbox::stretched,
        Resize::CenterCrop { .. } => {
            bail!("`{}` crops its input, so its boxes cannot be mapped back onto the whole image", net.arch)
        }
    };
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let mut records = Vec::with_capacity(images.len());
    for (path, out) in images.iter().zip(&outputs) {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let img = Preprocess::decode(&bytes).with_context(|| format!("decoding {}", path.display()))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let letterbox = fit((w, h), (net_w, net_h))?;
        let x = net.preprocess.apply(&img, net.input_size, model.device())?.unsqueeze(0)?;
        let maps: Vec<(Tensor, YoloHead)> = model.forward_heads(&x)?.into_iter().zip(heads.iter().cloned()).collect();
        let mut detections = postprocess(&maps, &letterbox, &post)?.pop().unwrap_or_default();
        for d in &mut detections {
            d.label.get_or_insert_with(|| d.class_id.to_string());
        }
        if let Some(out) = out {
            let mut canvas = img.to_rgb8();
            draw::draw_detections(&mut canvas, &detections);
            canvas.save_with_format(out, ImageFormat::Png).with_context(|| format!("writing {}", out.display()))?;
        }
        records.push(DetectRecord {
            image: path.display().to_string(),
            width: w,
            height: h,
            detections,
            annotated: out.as_ref().map(|p| p.display().to_string()),
        });
    }
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(())
}

/// Places an image of (width, height) into the network input (width, height).
type FitImage = fn((usize, usize), (usize, usize)) -> csp_models::Result<Letterbox>;

/// What `detect` prints for one image (a struct, so fields keep this order and f32s stay short).
#[derive(Serialize)]
struct DetectRecord {
    image: String,
    width: usize,
    height: usize,
    detections: Vec<Detection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotated: Option<String>,
}

/// `<out_dir>/<stem>.png` for each image, refusing names that would collide or overwrite an input.
fn annotated_paths(images: &[PathBuf], out_dir: Option<&Path>) -> Result<Vec<Option<PathBuf>>> {
    let Some(dir) = out_dir else { return Ok(vec![None; images.len()]) };
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(images.len());
    for path in images {
        let stem = path.file_stem().with_context(|| format!("{} has no file name", path.display()))?;
        // Push rather than with_extension: a stem may itself contain dots ("a.b.jpg" -> "a.b.png").
        let mut name = stem.to_os_string();
        name.push(".png");
        let target = dir.join(name);
        if let Some(other) = seen.insert(target.clone(), path) {
            bail!(
                "{} and {} would both be annotated as {}; use different file names",
                other.display(),
                path.display(),
                target.display()
            );
        }
        if images.iter().any(|p| same_file(p, &target)) {
            bail!("the annotated copy {} would overwrite an input image; choose another --out-dir", target.display());
        }
        out.push(Some(target));
    }
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn bench(
    arch: &ArchArgs,
    weights: Option<&Path>,
    device: &DeviceArg,
    batch: usize,
    size: usize,
    threads: Option<usize>,
    iters: usize,
    warmup: usize,
    engine: Engine,
    json: bool,
) -> Result<()> {
    if batch == 0 || size == 0 || iters == 0 {
        bail!("--batch, --size and --iters must be positive");
    }
    let precision = device.dtype;
    let device = &device.open()?;
    let model = weights::load_model(arch.get()?.as_ref(), weights, device, true)?
        .with_engine(engine)?
        .with_precision(precision)?;
    let engine = model.engine().as_str();
    let gflops = flops::summarize(&model.net, size, size)?.bflops * batch as f64;
    let x = Tensor::randn(0f32, 1f32, (batch, model.net.input_channels, size, size), device)?;
    // GPU kernels run asynchronously: wait for each pass, so a time covers the whole forward.
    for _ in 0..warmup {
        model.forward(&x)?;
        device.synchronize()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        model.forward(&x)?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let threads = threads.unwrap_or_else(candle_core::utils::get_num_threads);
    let ips = batch as f64 * 1e3 / median;
    let gflops_per_s = gflops * 1e3 / median;
    let device = match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    };
    if json {
        let rec = serde_json::json!({
            "arch": model.net.arch, "device": device, "dtype": precision.as_str(), "engine": engine, "batch": batch, "size": size, "threads": threads,
            "iters": iters, "median_ms": median, "min_ms": times[0], "max_ms": times[times.len() - 1], "images_per_s": ips,
            "gflops_per_s": gflops_per_s,
        });
        println!("{rec}");
    } else {
        println!(
            "{} on {device} ({engine}, {precision}) batch {batch} {size}x{size} threads {threads}: median {median:.2} ms (min {:.2}, max {:.2}), {ips:.1} images/s, {gflops_per_s:.1} GFLOP/s",
            model.net.arch,
            times[0],
            times[times.len() - 1]
        );
    }
    Ok(())
}

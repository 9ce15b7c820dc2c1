//! Command line, environment (`CSP_*`) and TOML configuration, resolved into core settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;

use crate::core::{BatchingConfig, DeviceSpec, Limits, ModelConfig};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "csp-server",
    version,
    about = "Serve CSPNet classifiers and detectors over REST and gRPC with dynamic batching"
)]
pub struct Args {
    /// A model to serve, `NAME=ARCH@WEIGHTS` (repeatable, or comma-separated in CSP_MODEL). ARCH is a
    /// built-in architecture (`csp-model list`) or a darknet .cfg path; WEIGHTS a native or timm
    /// safetensors file or darknet .weights. Our own safetensors carry their architecture:
    /// `NAME=FILE.safetensors` is enough.
    #[arg(long = "model", env = "CSP_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,

    /// TOML file with per-model settings (task, input size, labels, device, batching, instances).
    #[arg(long, env = "CSP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Models served when neither --model nor --config is given: the bundled defaults, trained by
    /// `scripts/train-default.sh` and committed under models/default/.
    #[arg(long, env = "CSP_DEFAULT_CONFIG", default_value = DEFAULT_CONFIG)]
    pub default_config: PathBuf,

    /// REST address.
    #[arg(long, env = "CSP_HTTP_ADDR", default_value = "0.0.0.0:8000")]
    pub http_addr: SocketAddr,

    /// gRPC address.
    #[arg(long, env = "CSP_GRPC_ADDR", default_value = "0.0.0.0:8001")]
    pub grpc_addr: SocketAddr,

    /// Device for models that do not set their own: cpu, cuda or cuda:N.
    #[arg(long, env = "CSP_DEVICE", default_value = "cpu")]
    pub device: String,

    /// CPU threads for model compute (default: all cores).
    #[arg(long, env = "CSP_THREADS")]
    pub threads: Option<usize>,

    /// Threads that decode and preprocess images (default: half the cores, at least 1).
    #[arg(long, env = "CSP_DECODE_THREADS")]
    pub decode_threads: Option<usize>,

    /// Most images per forward pass (default for every model).
    #[arg(long, env = "CSP_MAX_BATCH_SIZE", default_value_t = 8)]
    pub max_batch_size: usize,

    /// Longest wait for a fuller batch, in milliseconds (0 = run whatever is queued at once).
    #[arg(long, env = "CSP_MAX_QUEUE_DELAY_MS", default_value_t = 2)]
    pub max_queue_delay_ms: u64,

    /// Most images waiting per model; beyond it requests get 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "CSP_MAX_QUEUE_SIZE", default_value_t = 256)]
    pub max_queue_size: usize,

    /// Model replicas, each on its own thread.
    #[arg(long, env = "CSP_INSTANCES", default_value_t = 1)]
    pub instances: usize,

    /// Largest request body or gRPC message, in bytes.
    #[arg(long, env = "CSP_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,

    /// Most images in one request.
    #[arg(long, env = "CSP_MAX_IMAGES_PER_REQUEST", default_value_t = 64)]
    pub max_images_per_request: usize,

    /// Most pixels of one image (checked from its header before decoding).
    #[arg(long, env = "CSP_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Default request timeout in milliseconds when the client sets none (0 = none).
    #[arg(long, env = "CSP_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Require `Authorization: Bearer KEY` (gRPC metadata `authorization`) on inference endpoints.
    #[arg(long, env = "CSP_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Seconds to let queued and running work finish after SIGTERM/SIGINT.
    #[arg(long, env = "CSP_SHUTDOWN_GRACE", default_value_t = 30.0)]
    pub shutdown_grace: f64,
}

/// The bundled default models' config, where the source tree has it.
const DEFAULT_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default/models.toml");

/// The TOML file: `[[models]]` tables.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    models: Vec<FileModel>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FileModel {
    name: String,
    arch: Option<String>,
    weights: PathBuf,
    /// `classify` or `detect`: checked against what the model is.
    task: Option<String>,
    labels: Option<PathBuf>,
    input_size: Option<[usize; 2]>,
    device: Option<String>,
    instances: Option<usize>,
    max_batch_size: Option<usize>,
    max_queue_delay_ms: Option<u64>,
    max_queue_size: Option<usize>,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub models: Vec<ModelConfig>,
    /// Expected task per model name, from the TOML file, checked once loaded.
    pub tasks: Vec<(String, String)>,
    pub limits: Limits,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub threads: Option<usize>,
    pub decode_threads: usize,
    pub api_key: Option<String>,
    pub shutdown_grace: Duration,
}

impl Args {
    pub fn settings(&self) -> Result<Settings> {
        let device: DeviceSpec = self.device.parse().map_err(anyhow::Error::msg)?;
        let batching = BatchingConfig {
            max_batch_size: positive(self.max_batch_size, "--max-batch-size")?,
            max_queue_delay_ms: self.max_queue_delay_ms,
            max_queue_size: positive(self.max_queue_size, "--max-queue-size")?,
        };
        let instances = positive(self.instances, "--instances")?;
        let mut models = Vec::new();
        let mut tasks = Vec::new();
        for spec in &self.models {
            models.push(parse_model_flag(spec, &device, &batching, instances)?);
        }
        if let Some(path) = &self.config {
            let (m, t) = read_file(path, &device, &batching, instances)?;
            models.extend(m);
            tasks.extend(t);
        }
        if models.is_empty() {
            if !self.default_config.is_file() {
                bail!(
                    "no model to serve: pass --model NAME=ARCH@WEIGHTS or --config FILE.toml; the bundled default \
                     models were expected at {} (set --default-config / CSP_DEFAULT_CONFIG); the server never \
                     serves random weights",
                    self.default_config.display()
                );
            }
            let (m, t) = read_file(&self.default_config, &device, &batching, instances)?;
            models.extend(m);
            tasks.extend(t);
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if !(self.shutdown_grace.is_finite() && self.shutdown_grace >= 0.0) {
            bail!("--shutdown-grace must be a non-negative number of seconds");
        }
        Ok(Settings {
            models,
            tasks,
            limits: Limits {
                max_body_bytes: positive(self.max_body_bytes, "--max-body-bytes")?,
                max_images_per_request: positive(self.max_images_per_request, "--max-images-per-request")?,
                max_image_pixels: self.max_image_pixels.max(1),
                request_timeout: (self.request_timeout_ms > 0).then(|| Duration::from_millis(self.request_timeout_ms)),
            },
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            threads: self.threads,
            decode_threads: self.decode_threads.unwrap_or((cores / 2).max(1)),
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            shutdown_grace: Duration::from_secs_f64(self.shutdown_grace),
        })
    }
}

fn positive(v: usize, flag: &str) -> Result<usize> {
    if v == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(v)
}

/// `NAME=ARCH@WEIGHTS` or `NAME=WEIGHTS.safetensors`.
fn parse_model_flag(
    spec: &str,
    device: &DeviceSpec,
    batching: &BatchingConfig,
    instances: usize,
) -> Result<ModelConfig> {
    let (name, rest) = spec.split_once('=').with_context(|| format!("--model `{spec}`: expected NAME=ARCH@WEIGHTS"))?;
    check_name(name)?;
    let (arch, weights) = match rest.rsplit_once('@') {
        Some((arch, weights)) => (Some(arch.to_string()).filter(|a| !a.is_empty()), PathBuf::from(weights)),
        None if rest.ends_with(".safetensors") => (None, PathBuf::from(rest)),
        None => bail!("--model `{spec}`: no weights given (NAME=ARCH@WEIGHTS); the server never serves random weights"),
    };
    Ok(ModelConfig {
        name: name.to_string(),
        arch,
        weights,
        labels: None,
        input_size: None,
        device: device.clone(),
        batching: batching.clone(),
        instances,
    })
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("model name `{name}` must be non-empty and use only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

type FileModels = (Vec<ModelConfig>, Vec<(String, String)>);

fn read_file(path: &Path, device: &DeviceSpec, batching: &BatchingConfig, instances: usize) -> Result<FileModels> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut models = Vec::new();
    let mut tasks = Vec::new();
    for m in file.models {
        check_name(&m.name)?;
        // Relative paths in the file are relative to the file.
        let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        if let Some(task) = &m.task {
            if task != "classify" && task != "detect" {
                bail!("{}: model `{}`: task must be `classify` or `detect`, got `{task}`", path.display(), m.name);
            }
            tasks.push((m.name.clone(), task.clone()));
        }
        let device = match &m.device {
            Some(d) => d.parse().map_err(anyhow::Error::msg)?,
            None => device.clone(),
        };
        models.push(ModelConfig {
            arch: m.arch.map(|a| if a.ends_with(".cfg") { rel(Path::new(&a)).display().to_string() } else { a }),
            weights: rel(&m.weights),
            labels: m.labels.as_deref().map(rel),
            input_size: m.input_size.map(|[h, w]| (h, w)),
            device,
            batching: BatchingConfig {
                max_batch_size: positive(m.max_batch_size.unwrap_or(batching.max_batch_size), "max_batch_size")?,
                max_queue_delay_ms: m.max_queue_delay_ms.unwrap_or(batching.max_queue_delay_ms),
                max_queue_size: positive(m.max_queue_size.unwrap_or(batching.max_queue_size), "max_queue_size")?,
            },
            instances: positive(m.instances.unwrap_or(instances), "instances")?,
            name: m.name,
        });
    }
    Ok((models, tasks))
}

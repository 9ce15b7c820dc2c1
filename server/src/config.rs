//! Command line, environment (`CSP_*`) and TOML configuration, resolved into core settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Deserialize;

use crate::core::{BatchingConfig, DeviceSpec, Engine, Limits, ModelConfig, Precision};
use crate::secret::Secret;

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

    /// How CPU models run their convolutions: `fast` (conv + bias + activation fused in one
    /// kernel per layer) or `candle` (candle's own ops, the reference path). GPU models use
    /// candle's ops either way.
    #[arg(long, env = "CSP_ENGINE", value_enum, default_value_t = Engine::Fast)]
    pub engine: Engine,

    /// What models that do not set their own compute in: f32, or f16 / bf16 on a GPU (half the
    /// memory traffic, tensor cores). bf16 needs a GPU; f16 on the CPU runs on candle's slower
    /// ops. Requests and responses stay f32 either way.
    #[arg(long, env = "CSP_DTYPE", value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,

    /// CPU threads for model compute (default: all cores).
    #[arg(long, env = "CSP_THREADS")]
    pub threads: Option<usize>,

    /// Threads that decode and preprocess images (default: half the cores, at least 1).
    #[arg(long, env = "CSP_DECODE_THREADS")]
    pub decode_threads: Option<usize>,

    /// Most images per forward pass, for every model that does not set its own (default: 8 on CPU,
    /// 32 on a GPU, which needs bigger batches to be busy).
    #[arg(long, env = "CSP_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,

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
    /// Compared in constant time; never printed (logs and `Debug` show `<redacted>`).
    #[arg(long, env = "CSP_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// Origin allowed to call the REST API from a browser page (CORS), as SCHEME://HOST[:PORT]
    /// (repeatable, or comma-separated in the variable; `*` allows any). Default none: no response
    /// carries Access-Control-Allow-Origin, so other sites' pages cannot read it.
    #[arg(long = "cors-allow-origin", env = "CSP_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Most open connections on each transport (REST and gRPC each). A connection beyond it is
    /// accepted and closed at once, before any request is read; open ones are not disturbed.
    #[arg(long, env = "CSP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most concurrent HTTP/2 streams (gRPC calls, or HTTP/2 requests) per connection; a client
    /// waits for a free stream beyond it.
    #[arg(long, env = "CSP_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// PEM certificate chain: serve both REST (HTTPS, HTTP/2 or 1.1 by ALPN) and gRPC over TLS,
    /// on the same ports. Needs --tls-key. Without it both are plain text.
    #[arg(long, env = "CSP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, env = "CSP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): also require every client to present a certificate issued by one of
    /// them (mutual TLS). Needs --tls-cert.
    #[arg(long, env = "CSP_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

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
    engine: Option<Engine>,
    dtype: Option<Precision>,
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
    pub api_key: Option<Secret>,
    pub shutdown_grace: Duration,
    /// Checked origins for CORS; empty: CORS closed.
    pub cors_allow_origins: Vec<String>,
    pub connections: ConnectionLimits,
    /// TLS on both transports; read and checked when the server starts.
    pub tls: Option<crate::net::TlsFiles>,
}

/// Per-transport limits on what clients may hold open.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
}

impl Args {
    pub fn settings(&self) -> Result<Settings> {
        let defaults = Defaults {
            device: self.device.parse()?,
            engine: self.engine,
            dtype: self.dtype,
            max_batch_size: self.max_batch_size.map(|b| positive(b, "--max-batch-size")).transpose()?,
            max_queue_delay_ms: self.max_queue_delay_ms,
            max_queue_size: positive(self.max_queue_size, "--max-queue-size")?,
            instances: positive(self.instances, "--instances")?,
        };
        let mut models = Vec::new();
        let mut tasks = Vec::new();
        for spec in &self.models {
            models.push(parse_model_flag(spec, &defaults)?);
        }
        if let Some(path) = &self.config {
            let (m, t) = read_file(path, &defaults)?;
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
            let (m, t) = read_file(&self.default_config, &defaults)?;
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
            cors_allow_origins: self.cors_origins()?,
            connections: ConnectionLimits {
                max_connections: positive(self.max_connections, "--max-connections")?,
                max_concurrent_streams: u32::try_from(positive(
                    self.max_concurrent_streams as usize,
                    "--max-concurrent-streams",
                )?)?,
            },
            tls: self.tls_cert.clone().zip(self.tls_key.clone()).map(|(cert, key)| crate::net::TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca.clone(),
            }),
        })
    }

    fn cors_origins(&self) -> Result<Vec<String>> {
        let origins: Vec<String> =
            self.cors_allow_origins.iter().map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect();
        for origin in &origins {
            crate::http::cors::check_origin(origin)?;
        }
        Ok(origins)
    }
}

/// What the command line sets for every model that does not set its own.
struct Defaults {
    device: DeviceSpec,
    engine: Engine,
    dtype: Precision,
    /// None: by device (`default_max_batch_size`).
    max_batch_size: Option<usize>,
    max_queue_delay_ms: u64,
    max_queue_size: usize,
    instances: usize,
}

impl Defaults {
    fn batching(&self, device: DeviceSpec) -> BatchingConfig {
        BatchingConfig {
            max_batch_size: self.max_batch_size.unwrap_or(default_max_batch_size(device)),
            max_queue_delay_ms: self.max_queue_delay_ms,
            max_queue_size: self.max_queue_size,
        }
    }
}

/// A CPU is busy at batch 8; a GPU needs larger batches before its throughput levels off.
pub fn default_max_batch_size(device: DeviceSpec) -> usize {
    if device.is_gpu() {
        32
    } else {
        8
    }
}

fn positive(v: usize, flag: &str) -> Result<usize> {
    if v == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(v)
}

/// `NAME=ARCH@WEIGHTS` or `NAME=WEIGHTS.safetensors`.
fn parse_model_flag(spec: &str, defaults: &Defaults) -> Result<ModelConfig> {
    let (name, rest) = spec.split_once('=').with_context(|| format!("--model `{spec}`: expected NAME=ARCH@WEIGHTS"))?;
    check_name(name)?;
    let (arch, weights) = match rest.rsplit_once('@') {
        Some((arch, weights)) => (Some(arch.to_string()).filter(|a| !a.is_empty()), PathBuf::from(weights)),
        None if rest.ends_with(".safetensors") => (None, PathBuf::from(rest)),
        None => bail!("--model `{spec}`: no weights given (NAME=ARCH@WEIGHTS); the server never serves random weights"),
    };
    check_dtype(name, defaults.device, defaults.dtype)?;
    Ok(ModelConfig {
        name: name.to_string(),
        arch,
        weights,
        labels: None,
        input_size: None,
        device: defaults.device,
        engine: defaults.engine,
        dtype: defaults.dtype,
        batching: defaults.batching(defaults.device),
        instances: defaults.instances,
    })
}

/// Refused before anything loads: a precision the model's device cannot run.
fn check_dtype(model: &str, device: DeviceSpec, dtype: Precision) -> Result<()> {
    if !device.is_gpu() {
        dtype.check_cpu().with_context(|| format!("model `{model}` on {device}"))?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("model name `{name}` must be non-empty and use only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

type FileModels = (Vec<ModelConfig>, Vec<(String, String)>);

fn read_file(path: &Path, defaults: &Defaults) -> Result<FileModels> {
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
            Some(d) => d.parse::<DeviceSpec>().with_context(|| format!("{}: model `{}`", path.display(), m.name))?,
            None => defaults.device,
        };
        let dtype = m.dtype.unwrap_or(defaults.dtype);
        check_dtype(&m.name, device, dtype).with_context(|| path.display().to_string())?;
        let batching = defaults.batching(device);
        models.push(ModelConfig {
            arch: m.arch.map(|a| if a.ends_with(".cfg") { rel(Path::new(&a)).display().to_string() } else { a }),
            weights: rel(&m.weights),
            labels: m.labels.as_deref().map(rel),
            input_size: m.input_size.map(|[h, w]| (h, w)),
            device,
            engine: m.engine.unwrap_or(defaults.engine),
            dtype,
            batching: BatchingConfig {
                max_batch_size: positive(m.max_batch_size.unwrap_or(batching.max_batch_size), "max_batch_size")?,
                max_queue_delay_ms: m.max_queue_delay_ms.unwrap_or(batching.max_queue_delay_ms),
                max_queue_size: positive(m.max_queue_size.unwrap_or(batching.max_queue_size), "max_queue_size")?,
            },
            instances: positive(m.instances.unwrap_or(defaults.instances), "instances")?,
            name: m.name,
        });
    }
    Ok((models, tasks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(args: &[&str]) -> Vec<usize> {
        let argv = ["csp-server"].iter().chain(args).copied();
        let settings = Args::try_parse_from(argv).unwrap().settings().unwrap();
        settings.models.iter().map(|m| m.batching.max_batch_size).collect()
    }

    #[test]
    fn batch_size_defaults_by_device_unless_set() {
        assert_eq!(batch_of(&["--model", "a=a.safetensors"]), [8]);
        assert_eq!(batch_of(&["--model", "a=a.safetensors", "--device", "cuda:1"]), [32]);
        assert_eq!(batch_of(&["--model", "a=a.safetensors", "--device", "cuda", "--max-batch-size", "4"]), [4]);
        assert!(Args::try_parse_from(["csp-server", "--model", "a=a.safetensors", "--device", "tpu"])
            .unwrap()
            .settings()
            .is_err());
    }

    #[test]
    fn the_api_key_is_never_in_debug_output() {
        let argv = ["csp-server", "--model", "a=a.safetensors", "--api-key", "k3y-do-not-print"];
        let args = Args::try_parse_from(argv).unwrap();
        let settings = args.settings().unwrap();
        assert_eq!(settings.api_key.as_ref().map(Secret::expose), Some("k3y-do-not-print"));
        let shown = format!("{args:?} {settings:?} {args:#?} {settings:#?}");
        assert!(!shown.contains("k3y-do-not-print"), "{shown}");
    }

    #[test]
    fn cors_origins_are_checked_and_closed_by_default() {
        let parse = |extra: &[&str]| {
            let argv = ["csp-server", "--model", "a=a.safetensors"].iter().chain(extra).copied();
            Args::try_parse_from(argv).unwrap().settings().map(|s| s.cors_allow_origins)
        };
        assert!(parse(&[]).unwrap().is_empty());
        let origins = parse(&["--cors-allow-origin", "https://a.example,http://localhost:3000"]).unwrap();
        assert_eq!(origins, ["https://a.example", "http://localhost:3000"]);
        assert!(parse(&["--cors-allow-origin", "a.example"]).is_err());
        assert!(parse(&["--max-connections", "0"]).is_err());
        assert!(parse(&["--max-concurrent-streams", "0"]).is_err());
    }

    #[test]
    fn a_model_on_its_own_gpu_gets_the_gpu_default() {
        let dir = std::env::temp_dir().join(format!("csp-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("models.toml");
        let toml = "[[models]]\nname = \"g\"\nweights = \"g.safetensors\"\ndevice = \"cuda:0\"\n\n\
                    [[models]]\nname = \"c\"\nweights = \"c.safetensors\"\n";
        std::fs::write(&path, toml).unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(batch_of(&["--config", p]), [32, 8]);
        assert_eq!(batch_of(&["--config", p, "--max-batch-size", "2"]), [2, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dtype_defaults_to_f32_and_bf16_needs_a_gpu() {
        let settings = |args: &[&str]| {
            let argv = ["csp-server"].iter().chain(args).copied();
            Args::try_parse_from(argv).unwrap().settings()
        };
        let dtypes = |args: &[&str]| settings(args).unwrap().models.iter().map(|m| m.dtype).collect::<Vec<_>>();
        assert_eq!(dtypes(&["--model", "a=a.safetensors"]), [Precision::F32]);
        assert_eq!(dtypes(&["--model", "a=a.safetensors", "--dtype", "f16"]), [Precision::F16]);
        assert_eq!(dtypes(&["--model", "a=a.safetensors", "--dtype", "bf16", "--device", "cuda"]), [Precision::Bf16]);
        let err = settings(&["--model", "a=a.safetensors", "--dtype", "bf16"]).unwrap_err();
        assert!(format!("{err:#}").contains("bf16 runs on CUDA only"), "{err:#}");
        assert!(Args::try_parse_from(["csp-server", "--dtype", "f64"]).is_err());

        let dir = std::env::temp_dir().join(format!("csp-config-dtype-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("models.toml");
        let toml = "[[models]]\nname = \"g\"\nweights = \"g.safetensors\"\ndevice = \"cuda:0\"\ndtype = \"bf16\"\n\n\
                    [[models]]\nname = \"c\"\nweights = \"c.safetensors\"\n";
        std::fs::write(&path, toml).unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(dtypes(&["--config", p]), [Precision::Bf16, Precision::F32]);
        assert_eq!(dtypes(&["--config", p, "--dtype", "f16"]), [Precision::Bf16, Precision::F16]);
        std::fs::write(&path, "[[models]]\nname = \"c\"\nweights = \"c.safetensors\"\ndtype = \"bf16\"\n").unwrap();
        let err = settings(&["--config", p]).unwrap_err();
        assert!(format!("{err:#}").contains("model `c` on cpu"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

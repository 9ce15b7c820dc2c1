//! `csp-client`: try and measure csp-server from the command line. Parses arguments and calls
//! the `csp_client` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use csp_client::app::{self, BenchOutput, InferArgs, StreamArgs};
use csp_client::bench::{Arrivals, BenchConfig, Load, Stop, Workload};
use csp_client::cli::{parse_duration, parse_list, List};
use csp_client::images::{self, ImageFile};
use csp_client::{ClientError, Connection, Params, Protocol, Task, TlsOptions};

#[derive(Parser, Debug)]
#[command(name = "csp-client", version, about = "Client for csp-server: classify, detect, stream, load-test")]
struct Cli {
    /// The server's HTTP address (https://... for a server started with --tls-cert).
    #[arg(long, global = true, env = "CSP_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The server's gRPC address.
    #[arg(long, global = true, env = "CSP_GRPC_URL", default_value = "http://127.0.0.1:8001")]
    grpc_url: String,
    /// For https:// addresses: also trust this PEM CA certificate (or self-signed server
    /// certificate), beside the system's roots.
    #[arg(long, global = true, env = "CSP_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// For servers that require client certificates (mutual TLS): PEM certificate chain...
    #[arg(long, global = true, env = "CSP_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// ...and its PEM private key.
    #[arg(long, global = true, env = "CSP_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Use gRPC (unary calls) instead of REST.
    #[arg(long, global = true)]
    grpc: bool,
    /// REST: send images as multipart/form-data instead of a raw image body.
    #[arg(long, global = true)]
    multipart: bool,
    /// Give up on a request after this long (e.g. 30s, 500ms).
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// API key for servers started with --api-key (sent as a Bearer token).
    #[arg(long, global = true, env = "CSP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Machine-readable output (JSON lines).
    #[arg(long, global = true)]
    json: bool,
    /// Exit 0 even when some requests failed.
    #[arg(long, global = true)]
    allow_errors: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Classify images (one request per image).
    Classify(ClassifyCmd),
    /// Detect objects in images (one request per image).
    Detect(DetectCmd),
    /// Send images over the bidirectional gRPC stream, several in flight, answers in order.
    Stream(StreamCmd),
    /// List the server's models.
    Models,
    /// Check the server's liveness and readiness.
    Health,
    /// Load-test the server: closed or open loop, sweeps, latency percentiles.
    Bench(BenchCmd),
}

#[derive(Args, Debug)]
struct Common {
    /// Model name, as `csp-client models` lists it.
    #[arg(long, short)]
    model: String,
    /// Only report these class ids (comma-separated).
    #[arg(long, value_parser = parse_list::<u32>)]
    classes: Option<List<u32>>,
    /// Ask the server to drop the request if it has not started running within this many ms.
    #[arg(long)]
    server_timeout_ms: Option<u32>,
}

#[derive(Args, Debug)]
struct ClassifyArgs {
    /// Classes reported per image.
    #[arg(long)]
    top_k: Option<u32>,
}

#[derive(Args, Debug)]
struct DetectArgs {
    /// Minimum box score (objectness x class probability).
    #[arg(long)]
    score_threshold: Option<f32>,
    /// Non-maximum suppression IoU threshold.
    #[arg(long)]
    iou_threshold: Option<f32>,
    /// At most this many boxes per image.
    #[arg(long)]
    max_detections: Option<u32>,
}

#[derive(Args, Debug)]
struct ClassifyCmd {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    classify: ClassifyArgs,
    /// Image files or folders.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct DetectCmd {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    detect: DetectArgs,
    /// Write copies of the images with their boxes drawn into this folder.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// Image files or folders.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TaskArg {
    Classify,
    Detect,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Task {
        match t {
            TaskArg::Classify => Task::Classify,
            TaskArg::Detect => Task::Detect,
        }
    }
}

#[derive(Args, Debug)]
struct StreamCmd {
    #[command(flatten)]
    common: Common,
    /// What to ask of the model (default: its own task, from the server's model list).
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    #[command(flatten)]
    classify: ClassifyArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Image files or folders.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchCmd {
    #[command(flatten)]
    common: Common,
    /// What to ask of the model (default: its own task, from the server's model list).
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    #[command(flatten)]
    classify: ClassifyArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// rest, grpc (unary) or grpc-stream; default rest (grpc with --grpc).
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Closed loop: requests kept in flight; a list (1,2,4,8) runs a sweep.
    #[arg(long, short, value_parser = parse_list::<usize>, conflicts_with = "rate")]
    concurrency: Option<List<usize>>,
    /// Open loop: requests per second sent on schedule; a list runs a sweep.
    #[arg(long, short, value_parser = parse_list::<f64>)]
    rate: Option<List<f64>>,
    /// Open loop: exponential gaps between requests (Poisson arrivals) instead of even ones.
    #[arg(long, requires = "rate")]
    poisson: bool,
    /// How long each level runs (default 10s unless --requests is given).
    #[arg(long, short, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Send exactly this many requests per level.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Unmeasured warmup before each level.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Images in each request.
    #[arg(long, default_value_t = 1)]
    images_per_request: usize,
    /// Synthetic JPEG images of this size (WxH) instead of files.
    #[arg(long, value_parser = images::parse_size, conflicts_with = "images")]
    image_size: Option<(u32, u32)>,
    /// How many different synthetic images to cycle through.
    #[arg(long, default_value_t = 8)]
    synthetic_images: usize,
    /// Draw latency percentiles against throughput into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Image files or folders to cycle through.
    images: Vec<PathBuf>,
}

fn params(common: &Common, classify: Option<&ClassifyArgs>, detect: Option<&DetectArgs>) -> Params {
    Params {
        top_k: classify.and_then(|c| c.top_k),
        score_threshold: detect.and_then(|d| d.score_threshold),
        iou_threshold: detect.and_then(|d| d.iou_threshold),
        max_detections: detect.and_then(|d| d.max_detections),
        classes: common.classes.clone().map(|l| l.0).unwrap_or_default(),
        server_timeout_ms: common.server_timeout_ms,
    }
}

fn bench_config(cli: &Cli, cmd: &BenchCmd, task: Task) -> Result<BenchConfig, ClientError> {
    let images: Vec<ImageFile> = match (cmd.image_size, cmd.images.is_empty()) {
        (Some((w, h)), _) => images::synthetic(w, h, cmd.synthetic_images)?,
        (None, false) => images::load(&cmd.images)?,
        (None, true) => images::synthetic(640, 480, cmd.synthetic_images)?,
    };
    let loads = match (&cmd.rate, &cmd.concurrency) {
        (Some(List(rates)), _) => rates
            .iter()
            .map(|&rate| Load::Open {
                rate,
                arrivals: if cmd.poisson { Arrivals::Poisson { seed: 42 } } else { Arrivals::Uniform },
            })
            .collect(),
        (None, Some(List(levels))) => levels.iter().map(|&concurrency| Load::Closed { concurrency }).collect(),
        (None, None) => vec![Load::Closed { concurrency: 1 }],
    };
    if loads.iter().any(|l| matches!(l, Load::Closed { concurrency: 0 })) {
        return Err(ClientError::Input("--concurrency must be at least 1".into()));
    }
    let stop = match (cmd.requests, cmd.duration) {
        (Some(0), _) => return Err(ClientError::Input("--requests must be at least 1".into())),
        (Some(n), _) => Stop::Requests(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let (classify, detect) = match task {
        Task::Classify => (Some(&cmd.classify), None),
        Task::Detect => (None, Some(&cmd.detect)),
    };
    Ok(BenchConfig {
        protocol: cmd.protocol.unwrap_or(if cli.grpc { Protocol::Grpc } else { Protocol::Rest }),
        workload: Workload {
            task,
            model: cmd.common.model.clone(),
            params: params(&cmd.common, classify, detect),
            images: images.into_iter().map(|i| i.bytes).collect(),
            images_per_request: cmd.images_per_request.max(1),
        },
        loads,
        stop,
        warmup: cmd.warmup,
        progress: !cmd.quiet && !cli.json,
    })
}

/// The task given with `--task`, else the model's own, from the server's model list.
async fn resolve_task(conn: &Connection, grpc: bool, given: Option<TaskArg>, model: &str) -> Result<Task, ClientError> {
    if let Some(task) = given {
        return Ok(task.into());
    }
    let models = if grpc { conn.grpc.models().await? } else { conn.rest.models().await? };
    match models.iter().find(|m| m.name == model).map(|m| m.task.as_str()) {
        Some("detect") => Ok(Task::Detect),
        Some("classify") => Ok(Task::Classify),
        Some(other) => {
            Err(ClientError::Protocol(format!("model `{model}` has an unknown task `{other}`; pass --task")))
        }
        None => {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            Err(ClientError::Input(format!("the server has no model `{model}` (it serves: {})", names.join(", "))))
        }
    }
}

async fn run(cli: &Cli) -> Result<usize, ClientError> {
    let tls = TlsOptions {
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
    };
    let conn = Connection::new(&cli.url, &cli.grpc_url, cli.api_key.clone(), cli.timeout, cli.multipart, &tls)?;
    let protocol = if cli.grpc { Protocol::Grpc } else { Protocol::Rest };
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Classify(cmd) => {
            let args = InferArgs {
                task: Task::Classify,
                model: cmd.common.model.clone(),
                images: images::load(&cmd.images)?,
                params: params(&cmd.common, Some(&cmd.classify), None),
                protocol,
                json: cli.json,
                draw: None,
            };
            app::infer(&conn, &args, &mut out).await
        }
        Command::Detect(cmd) => {
            let args = InferArgs {
                task: Task::Detect,
                model: cmd.common.model.clone(),
                images: images::load(&cmd.images)?,
                params: params(&cmd.common, None, Some(&cmd.detect)),
                protocol,
                json: cli.json,
                draw: cmd.draw.clone(),
            };
            app::infer(&conn, &args, &mut out).await
        }
        Command::Stream(cmd) => {
            let task = resolve_task(&conn, cli.grpc, cmd.task, &cmd.common.model).await?;
            let (classify, detect) = match task {
                Task::Classify => (Some(&cmd.classify), None),
                Task::Detect => (None, Some(&cmd.detect)),
            };
            let args = StreamArgs {
                task,
                model: cmd.common.model.clone(),
                images: images::load(&cmd.images)?,
                params: params(&cmd.common, classify, detect),
                window: cmd.window.max(1),
                json: cli.json,
            };
            app::stream(&conn, &args, &mut out).await
        }
        Command::Models => app::models(&conn, cli.grpc, cli.json, &mut out).await,
        Command::Health => app::health(&conn, cli.grpc, cli.json, &mut out).await,
        Command::Bench(cmd) => {
            let task = resolve_task(&conn, cli.grpc, cmd.task, &cmd.common.model).await?;
            let config = bench_config(cli, cmd, task)?;
            let output = BenchOutput { json: cli.json, plot: cmd.plot.clone() };
            app::bench(&conn, &config, &output, &mut out).await.map(|(_, failed)| failed)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("csp-client: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) if cli.allow_errors => {
            eprintln!("csp-client: {failed} request(s) failed (allowed by --allow-errors)");
            ExitCode::SUCCESS
        }
        Ok(failed) => {
            eprintln!("csp-client: {failed} request(s) failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("csp-client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_lists_and_defaults_parse() {
        let cli = Cli::try_parse_from(["csp-client", "bench", "-m", "cls", "-c", "1,2,4", "--classes", "3,4"]).unwrap();
        let Command::Bench(cmd) = &cli.command else { panic!("not bench") };
        assert_eq!(cmd.concurrency, Some(List(vec![1, 2, 4])));
        assert_eq!(cmd.common.classes, Some(List(vec![3, 4])));
        let config = bench_config(&cli, cmd, Task::Classify).unwrap();
        assert_eq!(config.loads.len(), 3);
        assert_eq!(config.stop, Stop::Duration(Duration::from_secs(10)));
        assert_eq!(config.protocol, Protocol::Rest);
        let cli = Cli::try_parse_from(["csp-client", "--grpc", "bench", "-m", "c", "--rate", "5", "-n", "3"]).unwrap();
        let Command::Bench(cmd) = &cli.command else { panic!("not bench") };
        let config = bench_config(&cli, cmd, Task::Classify).unwrap();
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.stop, Stop::Requests(3));
        assert!(matches!(config.loads[0], Load::Open { rate, .. } if rate == 5.0));
        assert!(Cli::try_parse_from(["csp-client", "bench", "-m", "c", "-c", "2", "--rate", "5"]).is_err());
    }
}

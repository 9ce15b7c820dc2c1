//! The commands behind `csp-client`'s subcommands, writing their output to any `Write` (the
//! binary passes stdout; tests pass a buffer). Each returns how many requests failed.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt;

use crate::annotate::{write_annotated, Names};
use crate::bench::{self, BenchConfig};
use crate::images::ImageFile;
use crate::output::{error_json, health_text, image_json, image_text, models_text};
use crate::report;
use crate::stream::{run_ordered, StreamSession};
use crate::target::Connection;
use crate::types::{Params, Task};
use crate::{ClientError, Protocol};

fn io(e: std::io::Error) -> ClientError {
    ClientError::Input(format!("cannot write the output: {e}"))
}

/// `classify` / `detect`.
#[derive(Clone, Debug)]
pub struct InferArgs {
    pub task: Task,
    pub model: String,
    pub images: Vec<ImageFile>,
    pub params: Params,
    /// REST or unary gRPC.
    pub protocol: Protocol,
    pub json: bool,
    /// Detections: write annotated copies into this folder.
    pub draw: Option<PathBuf>,
}

/// Sends each image in its own request, in order, printing each answer. Connection failures
/// end the command at once (every other image would fail the same way).
pub async fn infer(conn: &Connection, args: &InferArgs, out: &mut dyn Write) -> Result<usize, ClientError> {
    if let Some(dir) = &args.draw {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClientError::Input(format!("cannot create {}: {e}", dir.display())))?;
    }
    let target = conn.target(args.protocol, args.task).await?;
    let mut names = Names::default();
    let mut failed = 0;
    for (index, image) in args.images.iter().enumerate() {
        match target.infer(args.task, &args.model, std::slice::from_ref(&image.bytes), &args.params).await {
            Ok(response) => {
                let Some(result) = response.value.results.first() else {
                    return Err(ClientError::Protocol(format!("no result for {}", image.name)));
                };
                if args.json {
                    writeln!(out, "{}", image_json(&image.name, index, &response, result)).map_err(io)?;
                } else {
                    let latency = response.latency.as_secs_f64() * 1e3;
                    write!(out, "{}", image_text(&image.name, result, latency, response.value.timing.total_ms))
                        .map_err(io)?;
                }
                if let (Some(dir), Some(dets)) = (&args.draw, &result.detections) {
                    let path = names.next(dir, &image.name, &image.bytes);
                    write_annotated(&image.bytes, dets, &path)?;
                    if !args.json {
                        writeln!(out, "  drawn to {}", path.display()).map_err(io)?;
                    }
                }
            }
            Err(e @ ClientError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed += 1;
                if args.json {
                    writeln!(out, "{}", error_json(&image.name, index, &e)).map_err(io)?;
                } else {
                    writeln!(out, "{}: error: {e}", image.name).map_err(io)?;
                }
            }
        }
    }
    Ok(failed)
}

/// `stream`.
#[derive(Clone, Debug)]
pub struct StreamArgs {
    pub task: Task,
    pub model: String,
    pub images: Vec<ImageFile>,
    pub params: Params,
    /// Requests in flight at once.
    pub window: usize,
    pub json: bool,
}

/// Sends every image on one bidirectional stream, `window` at a time, printing the answers in
/// request order as they arrive, each with its latency.
pub async fn stream(conn: &Connection, args: &StreamArgs, out: &mut dyn Write) -> Result<usize, ClientError> {
    let session = StreamSession::open_for(&conn.grpc, args.task).await?;
    let bytes: Vec<Bytes> = args.images.iter().map(|i| i.bytes.clone()).collect();
    let mut answers = std::pin::pin!(run_ordered(&session, &args.model, &bytes, &args.params, args.window));
    let mut failed = 0;
    while let Some(item) = answers.next().await {
        let name = &args.images[item.index].name;
        match item.result {
            Ok(response) => {
                let Some(result) = response.value.results.first() else {
                    return Err(ClientError::Protocol(format!("no result for {name}")));
                };
                if args.json {
                    writeln!(out, "{}", image_json(name, item.index, &response, result)).map_err(io)?;
                } else {
                    let latency = response.latency.as_secs_f64() * 1e3;
                    let text = image_text(name, result, latency, response.value.timing.total_ms);
                    write!(out, "[{}] {text}", item.index).map_err(io)?;
                }
            }
            Err(e) => {
                failed += 1;
                if args.json {
                    writeln!(out, "{}", error_json(name, item.index, &e)).map_err(io)?;
                } else {
                    writeln!(out, "[{}] {name}: error: {e}", item.index).map_err(io)?;
                }
            }
        }
    }
    Ok(failed)
}

/// `models`.
pub async fn models(conn: &Connection, grpc: bool, json: bool, out: &mut dyn Write) -> Result<usize, ClientError> {
    let models = if grpc { conn.grpc.models().await? } else { conn.rest.models().await? };
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "models": models }))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        writeln!(out, "{text}").map_err(io)?;
    } else {
        write!(out, "{}", models_text(&models)).map_err(io)?;
    }
    Ok(0)
}

/// `health`: counts "not live" and "not ready" as one failure each.
pub async fn health(conn: &Connection, grpc: bool, json: bool, out: &mut dyn Write) -> Result<usize, ClientError> {
    let (url, health) =
        if grpc { (conn.grpc.url(), conn.grpc.health().await?) } else { (conn.rest.base(), conn.rest.health().await?) };
    if json {
        writeln!(out, "{}", serde_json::json!({ "url": url, "live": health.live, "ready": health.ready }))
            .map_err(io)?;
    } else {
        write!(out, "{}", health_text(url, health)).map_err(io)?;
    }
    Ok(usize::from(!health.live) + usize::from(!health.ready))
}

/// `bench` output options.
#[derive(Clone, Debug, Default)]
pub struct BenchOutput {
    pub json: bool,
    pub plot: Option<PathBuf>,
}

/// `bench`: runs every level, prints JSON lines as levels finish or the table at the end,
/// draws the plot. Returns the results and the number of failed requests (warmup included).
pub async fn bench(
    conn: &Connection,
    config: &BenchConfig,
    output: &BenchOutput,
    out: &mut dyn Write,
) -> Result<(Vec<bench::LevelResult>, usize), ClientError> {
    let mut write_error = None;
    let results = bench::run_all(conn, config, |level| {
        if output.json {
            if let Err(e) = writeln!(out, "{}", report::json_line(level)).and_then(|_| out.flush()) {
                write_error.get_or_insert(e);
            }
        }
    })
    .await?;
    if let Some(e) = write_error {
        return Err(io(e));
    }
    if !output.json {
        write!(out, "{}", report::table(&results)).map_err(io)?;
    }
    if let Some(path) = &output.plot {
        let title = format!("{} {} over {}", config.workload.model, config.workload.task.endpoint(), config.protocol);
        crate::plot::write_latency_plot(&results, &title, path)?;
        if !output.json {
            writeln!(out, "plot written to {}", path.display()).map_err(io)?;
        }
    }
    let failed = results.iter().map(|r| r.errors + r.warmup_errors).sum::<u64>();
    Ok((results, failed as usize))
}

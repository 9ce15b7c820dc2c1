//! Where requests go: the server's two addresses, the protocol chosen, and what both protocols
//! answer in common (model descriptions, health).

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::grpc::GrpcClient;
use crate::pb::cspserve::v1 as csp;
use crate::rest::RestClient;
use crate::stream::StreamSession;
use crate::tls::TlsOptions;
use crate::types::{InferResponse, Params, Task, Timed};
use crate::ClientError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Rest,
    /// Unary gRPC calls.
    Grpc,
    /// The bidirectional gRPC stream.
    GrpcStream,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::GrpcStream => "grpc-stream",
        })
    }
}

/// How to reach a server: both addresses and the settings every request shares.
#[derive(Clone, Debug)]
pub struct Connection {
    pub rest: RestClient,
    pub grpc: GrpcClient,
}

impl Connection {
    pub fn new(
        http_url: &str,
        grpc_url: &str,
        api_key: Option<String>,
        timeout: Duration,
        multipart: bool,
        tls: &TlsOptions,
    ) -> Result<Self, ClientError> {
        let api_key = api_key.filter(|k| !k.is_empty());
        let tls = tls.load()?;
        Ok(Connection {
            rest: RestClient::new(http_url, api_key.clone(), timeout, multipart, &tls)?,
            grpc: GrpcClient::new(grpc_url, api_key, timeout, &tls)?,
        })
    }

    /// A request sender over `protocol`. For the stream, a new bidirectional stream is opened.
    pub async fn target(&self, protocol: Protocol, task: Task) -> Result<Target, ClientError> {
        Ok(match protocol {
            Protocol::Rest => Target::Rest(self.rest.clone()),
            Protocol::Grpc => Target::Grpc(self.grpc.clone()),
            Protocol::GrpcStream => Target::Stream(StreamSession::open_for(&self.grpc, task).await?),
        })
    }
}

/// Sends one classify/detect request over one protocol. Cheap to clone (shared connections).
#[derive(Clone)]
pub enum Target {
    Rest(RestClient),
    Grpc(GrpcClient),
    /// Requests multiplexed on one open bidirectional stream.
    Stream(StreamSession),
}

impl Target {
    pub async fn infer(
        &self,
        task: Task,
        model: &str,
        images: &[Bytes],
        params: &Params,
    ) -> Result<Timed<InferResponse>, ClientError> {
        match self {
            Target::Rest(c) => c.infer(task, model, images, params).await,
            Target::Grpc(c) => c.infer(task, model, images, params).await,
            Target::Stream(s) => s.infer(task, model, images, params).await,
        }
    }
}

/// Liveness and readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    pub live: bool,
    pub ready: bool,
}

/// A served model, as either protocol describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub task: String,
    pub architecture: String,
    pub input_height: u64,
    pub input_width: u64,
    pub num_classes: u64,
    pub params: u64,
    pub bflops: f64,
    pub device: String,
    pub dtype: String,
    pub max_batch_size: u64,
    pub max_queue_delay_ms: u64,
    pub max_queue_size: u64,
    pub instances: u64,
}

impl ModelSummary {
    /// From one entry of `GET /v1/models` (`input_size` is `[height, width]`).
    pub fn from_rest(v: &serde_json::Value) -> Result<Self, ClientError> {
        let text = |key: &str| v[key].as_str().map(str::to_owned);
        let int = |value: &serde_json::Value| value.as_u64().unwrap_or(0);
        let name = text("name").ok_or_else(|| ClientError::Protocol(format!("model without a name: {v}")))?;
        let batching = &v["batching"];
        Ok(ModelSummary {
            name,
            task: text("task").unwrap_or_default(),
            architecture: text("architecture").unwrap_or_default(),
            input_height: int(&v["input_size"][0]),
            input_width: int(&v["input_size"][1]),
            num_classes: int(&v["num_classes"]),
            params: int(&v["params"]),
            bflops: v["bflops"].as_f64().unwrap_or(0.0),
            device: text("device").unwrap_or_default(),
            dtype: text("dtype").unwrap_or_default(),
            max_batch_size: int(&batching["max_batch_size"]),
            max_queue_delay_ms: int(&batching["max_queue_delay_ms"]),
            max_queue_size: int(&batching["max_queue_size"]),
            instances: int(&v["instances"]),
        })
    }

    pub fn from_grpc(m: &csp::Model) -> Self {
        let task = match csp::Task::try_from(m.task) {
            Ok(csp::Task::Classify) => "classify",
            Ok(csp::Task::Detect) => "detect",
            _ => "unknown",
        };
        let batching = m.batching.unwrap_or_default();
        ModelSummary {
            name: m.name.clone(),
            task: task.to_owned(),
            architecture: m.architecture.clone(),
            input_height: m.input_height.into(),
            input_width: m.input_width.into(),
            num_classes: m.num_classes.into(),
            params: m.params,
            bflops: m.bflops,
            device: m.device.clone(),
            dtype: m.dtype.clone(),
            max_batch_size: batching.max_batch_size.into(),
            max_queue_delay_ms: batching.max_queue_delay_ms,
            max_queue_size: batching.max_queue_size.into(),
            instances: m.instances.into(),
        }
    }
}

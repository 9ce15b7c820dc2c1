//! `inference.GRPCInferenceService`: the KServe v2 protocol with Triton's model configuration and
//! statistics extensions. Every model has version "1".

use std::pin::Pin;
use std::time::Instant;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::params::V2Params;
use super::pb::inference as pb;
use super::pb::inference::grpc_inference_service_server::GrpcInferenceService;
use super::pb::inference::model_infer_response::InferOutputTensor;
use super::status::{client_deadline, earliest, to_status, ApiKey};
use super::stream::{in_order, STREAM_WINDOW};
use super::tensor::{f32_to_le, join_bytes_elements, parse_input, V2Input, IMAGE_INPUT, RESULTS_OUTPUT, TENSOR_INPUT};
use crate::core::{DeviceSpec, Infer, InferError, ModelInfo, RequestOptions, Task};

pub const SERVER_NAME: &str = "cspserve";
pub const PLATFORM: &str = "candle";
/// The protocol extensions this server implements.
pub const EXTENSIONS: [&str; 3] = ["model_configuration", "statistics", "parameters"];
const MODEL_VERSION: &str = "1";

#[derive(Clone)]
pub struct KServe {
    pub infer: Infer,
    pub api_key: ApiKey,
}

fn check_version(model: &str, version: &str) -> Result<(), InferError> {
    if version.is_empty() || version == MODEL_VERSION {
        Ok(())
    } else {
        Err(InferError::ModelNotFound(format!("{model}` version `{version}")))
    }
}

fn tensor_meta(name: &str, datatype: &str, shape: Vec<i64>) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata { name: name.into(), datatype: datatype.into(), shape }
}

/// Raw output shapes without the batch dimension, where the model description knows them.
fn output_dims(info: &ModelInfo, output: &str) -> Vec<i64> {
    match info.task {
        Task::Classify if output == "output" => vec![info.num_classes as i64],
        // Detector head grids depend on the head's stride; the description does not carry them.
        _ => vec![-1, -1, -1],
    }
}

pub fn model_metadata(info: &ModelInfo) -> pb::ModelMetadataResponse {
    let (h, w) = info.input_size;
    let mut outputs: Vec<_> = info
        .outputs
        .iter()
        .map(|o| {
            let mut shape = vec![-1];
            shape.extend(output_dims(info, o));
            tensor_meta(o, "FP32", shape)
        })
        .collect();
    outputs.push(tensor_meta(RESULTS_OUTPUT, "BYTES", vec![-1]));
    pb::ModelMetadataResponse {
        name: info.name.clone(),
        versions: vec![MODEL_VERSION.into()],
        platform: PLATFORM.into(),
        inputs: vec![
            tensor_meta(TENSOR_INPUT, "FP32", vec![-1, 3, h as i64, w as i64]),
            tensor_meta(IMAGE_INPUT, "BYTES", vec![-1, 1]),
        ],
        outputs,
    }
}

pub fn model_config(info: &ModelInfo, default_timeout_us: u64) -> pb::ModelConfig {
    use pb::{model_input::Format, model_instance_group::Kind, DataType};
    let (h, w) = info.input_size;
    let input = |name: &str, data_type: DataType, format: Format, dims: Vec<i64>| pb::ModelInput {
        name: name.into(),
        data_type: data_type as i32,
        format: format as i32,
        dims,
        // Either input may be sent, never both.
        optional: true,
    };
    let mut output: Vec<pb::ModelOutput> = info
        .outputs
        .iter()
        .map(|o| pb::ModelOutput {
            name: o.clone(),
            data_type: DataType::TypeFp32 as i32,
            dims: output_dims(info, o),
            label_filename: String::new(),
        })
        .collect();
    output.push(pb::ModelOutput {
        name: RESULTS_OUTPUT.into(),
        data_type: DataType::TypeString as i32,
        dims: vec![1],
        label_filename: String::new(),
    });
    let gpu = match info.device.parse::<DeviceSpec>() {
        Ok(DeviceSpec::Cuda(n)) => i32::try_from(n).ok(),
        _ => None,
    };
    let b = &info.batching;
    pb::ModelConfig {
        name: info.name.clone(),
        platform: PLATFORM.into(),
        backend: PLATFORM.into(),
        max_batch_size: i32::try_from(b.max_batch_size).unwrap_or(i32::MAX),
        input: vec![
            input(TENSOR_INPUT, DataType::TypeFp32, Format::Nchw, vec![3, h as i64, w as i64]),
            input(IMAGE_INPUT, DataType::TypeString, Format::None, vec![1]),
        ],
        output,
        instance_group: vec![pb::ModelInstanceGroup {
            name: format!("{}_0", info.name),
            count: i32::try_from(info.instances).unwrap_or(i32::MAX),
            gpus: gpu.into_iter().collect(),
            kind: (if gpu.is_some() { Kind::Gpu } else { Kind::Cpu }) as i32,
        }],
        scheduling_choice: Some(pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            preferred_batch_size: vec![i32::try_from(b.max_batch_size).unwrap_or(i32::MAX)],
            max_queue_delay_microseconds: b.max_queue_delay_ms.saturating_mul(1000),
            preserve_ordering: true,
            default_queue_policy: Some(pb::ModelQueuePolicy {
                timeout_action: pb::model_queue_policy::TimeoutAction::Reject as i32,
                default_timeout_microseconds: default_timeout_us,
                allow_timeout_override: true,
                max_queue_size: u32::try_from(b.max_queue_size).unwrap_or(u32::MAX),
            }),
        })),
    }
}

pub fn model_statistics(name: &str, s: &crate::core::ModelStats) -> pb::ModelStatistics {
    let d = |count: u64, ns: u64| Some(pb::StatisticDuration { count, ns });
    pb::ModelStatistics {
        name: name.into(),
        version: MODEL_VERSION.into(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            // The core does not total request durations; only counts are reported for these.
            success: d(s.success_count, 0),
            fail: d(s.failure_count, 0),
            // Queue time is summed per image; compute time per forward pass (each image of a
            // batch waits for the whole pass, as Triton counts it).
            queue: d(s.inference_count, s.queue_ns),
            compute_input: d(0, 0),
            compute_infer: d(s.execution_count, s.compute_ns),
            compute_output: d(0, 0),
        }),
        batch_stats: vec![],
    }
}

fn output_tensor(name: &str, datatype: &str, shape: Vec<i64>) -> InferOutputTensor {
    InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents: None,
    }
}

/// Which outputs the request may ask for: the raw ones for `input`, `results` for `image`.
fn check_requested(req: &pb::ModelInferRequest, available: &[String]) -> Result<(), InferError> {
    for out in &req.outputs {
        if !available.contains(&out.name) {
            return Err(InferError::InvalidInput(format!(
                "unknown output `{}` for this input (available: {})",
                out.name,
                available.join(", ")
            )));
        }
        if !out.parameters.is_empty() {
            let keys: Vec<&str> = out.parameters.keys().map(String::as_str).collect();
            return Err(InferError::InvalidInput(format!(
                "output parameters are not supported (`{}` on output `{}`)",
                keys.join(", "),
                out.name
            )));
        }
    }
    Ok(())
}

fn wanted(req: &pb::ModelInferRequest, name: &str) -> bool {
    req.outputs.is_empty() || req.outputs.iter().any(|o| o.name == name)
}

impl KServe {
    /// One v2 inference request, from wire message to wire message. `deadline` is the RPC's.
    pub async fn infer_one(
        &self,
        req: pb::ModelInferRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::ModelInferResponse, InferError> {
        check_version(&req.model_name, &req.model_version)?;
        let info = self.infer.model(&req.model_name)?;
        let params = V2Params::parse(&req.parameters)?;
        let opts = RequestOptions { deadline: earliest(deadline, params.deadline(Instant::now())) };
        let input = parse_input(&req.inputs, &req.raw_input_contents)?;
        let mut outputs = Vec::new();
        let mut raw = Vec::new();
        match input {
            V2Input::Tensor { shape, data } => {
                params.check_raw()?;
                check_requested(&req, &info.outputs)?;
                let res = self.infer.run_tensor(&req.model_name, shape, data, opts).await?;
                for t in res.outputs.into_iter().filter(|t| wanted(&req, &t.name)) {
                    outputs.push(output_tensor(&t.name, "FP32", t.shape.iter().map(|&d| d as i64).collect()));
                    raw.push(f32_to_le(&t.data));
                }
            }
            V2Input::Images(images) => {
                check_requested(&req, &[RESULTS_OUTPUT.to_string()])?;
                let n = images.len();
                let res = match info.task {
                    Task::Classify => self.infer.classify(&req.model_name, images, params.classify()?, opts).await?,
                    Task::Detect => self.infer.detect(&req.model_name, images, params.detect()?, opts).await?,
                };
                let docs = res
                    .results
                    .iter()
                    .map(serde_json::to_vec)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| InferError::Internal(format!("encoding results: {e}")))?;
                outputs.push(output_tensor(RESULTS_OUTPUT, "BYTES", vec![n as i64]));
                raw.push(join_bytes_elements(&docs)?);
            }
        }
        Ok(pb::ModelInferResponse {
            model_name: req.model_name,
            model_version: MODEL_VERSION.into(),
            id: req.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: raw,
        })
    }

    fn stats_for(&self, info: &ModelInfo) -> Result<pb::ModelStatistics, Status> {
        let stats = self.infer.stats(&info.name).map_err(|e| to_status(&e))?;
        Ok(model_statistics(&info.name, &stats))
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl GrpcInferenceService for KServe {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: self.infer.health().live }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.infer.health().ready }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let req = request.into_inner();
        check_version(&req.name, &req.version).map_err(|e| to_status(&e))?;
        self.infer.model(&req.name).map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ModelReadyResponse { ready: self.infer.health().ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let req = request.into_inner();
        check_version(&req.name, &req.version).map_err(|e| to_status(&e))?;
        let info = self.infer.model(&req.name).map_err(|e| to_status(&e))?;
        Ok(Response::new(model_metadata(&info)))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        self.api_key.check(request.metadata())?;
        let deadline = client_deadline(request.metadata());
        let res = self.infer_one(request.into_inner(), deadline).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(res))
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        self.api_key.check(request.metadata())?;
        let deadline = client_deadline(request.metadata());
        let svc = self.clone();
        let out = in_order(request.into_inner(), STREAM_WINDOW, move |req: pb::ModelInferRequest| {
            let svc = svc.clone();
            async move {
                let (model_name, id) = (req.model_name.clone(), req.id.clone());
                match svc.infer_one(req, deadline).await {
                    Ok(res) => pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(res) },
                    Err(e) => pb::ModelStreamInferResponse {
                        error_message: e.to_string(),
                        // Carries the request id so clients can tell which request failed.
                        infer_response: Some(pb::ModelInferResponse { model_name, id, ..Default::default() }),
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let req = request.into_inner();
        check_version(&req.name, &req.version).map_err(|e| to_status(&e))?;
        let info = self.infer.model(&req.name).map_err(|e| to_status(&e))?;
        let timeout_us = self.infer.limits().request_timeout.map_or(0, |t| t.as_micros() as u64);
        Ok(Response::new(pb::ModelConfigResponse { config: Some(model_config(&info, timeout_us)) }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let req = request.into_inner();
        let model_stats: Vec<pb::ModelStatistics> = if req.name.is_empty() {
            self.infer.models().iter().map(|m| self.stats_for(m)).collect::<Result<_, _>>()?
        } else {
            check_version(&req.name, &req.version).map_err(|e| to_status(&e))?;
            let info = self.infer.model(&req.name).map_err(|e| to_status(&e))?;
            vec![self.stats_for(&info)?]
        };
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::BatchingConfig;

    fn info(task: Task) -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            task,
            architecture: "cspresnet50".into(),
            input_size: (224, 256),
            num_classes: 10,
            labels: vec![],
            params: 1,
            bflops: 1.0,
            device: "cuda:1".into(),
            dtype: crate::core::Precision::F32,
            batching: BatchingConfig { max_batch_size: 8, max_queue_delay_ms: 2, max_queue_size: 64 },
            instances: 2,
            outputs: match task {
                Task::Classify => vec!["output".into()],
                Task::Detect => vec!["head_0".into(), "head_1".into()],
            },
        }
    }

    #[test]
    fn metadata_describes_both_inputs_and_every_output() {
        let md = model_metadata(&info(Task::Classify));
        assert_eq!(md.versions, vec!["1"]);
        assert_eq!(md.inputs[0].shape, vec![-1, 3, 224, 256]);
        assert_eq!((md.inputs[1].name.as_str(), md.inputs[1].datatype.as_str()), ("image", "BYTES"));
        let outs: Vec<(&str, &[i64])> = md.outputs.iter().map(|o| (o.name.as_str(), o.shape.as_slice())).collect();
        assert_eq!(outs, vec![("output", &[-1i64, 10][..]), ("result", &[-1][..])]);
        let det = model_metadata(&info(Task::Detect));
        assert_eq!(det.outputs.len(), 3);
    }

    #[test]
    fn config_carries_batching_and_instances() {
        let cfg = model_config(&info(Task::Classify), 30_000_000);
        assert_eq!(cfg.max_batch_size, 8);
        assert_eq!(cfg.input[0].dims, vec![3, 224, 256]);
        assert_eq!(cfg.input[0].data_type, pb::DataType::TypeFp32 as i32);
        assert_eq!(cfg.input[1].data_type, pb::DataType::TypeString as i32);
        assert_eq!(cfg.instance_group[0].count, 2);
        assert_eq!(cfg.instance_group[0].gpus, vec![1]);
        assert_eq!(cfg.instance_group[0].kind, pb::model_instance_group::Kind::Gpu as i32);
        let Some(pb::model_config::SchedulingChoice::DynamicBatching(db)) = cfg.scheduling_choice else {
            panic!("no dynamic batching")
        };
        assert_eq!(db.max_queue_delay_microseconds, 2000);
        let policy = db.default_queue_policy.unwrap();
        assert_eq!((policy.max_queue_size, policy.default_timeout_microseconds), (64, 30_000_000));
    }

    #[test]
    fn version_other_than_one_is_not_found() {
        assert!(check_version("m", "").is_ok());
        assert!(check_version("m", "1").is_ok());
        let err = check_version("m", "2").unwrap_err();
        assert_eq!(err.to_string(), "unknown model `m` version `2`");
        assert_eq!(super::super::status::to_status(&err).code(), tonic::Code::NotFound);
    }

    #[test]
    fn requested_outputs_must_exist_and_carry_no_parameters() {
        let ask = |names: &[&str]| pb::ModelInferRequest {
            outputs: names
                .iter()
                .map(|n| pb::model_infer_request::InferRequestedOutputTensor {
                    name: n.to_string(),
                    parameters: Default::default(),
                })
                .collect(),
            ..Default::default()
        };
        let available = vec!["head_0".to_string(), "head_1".to_string()];
        assert!(check_requested(&ask(&[]), &available).is_ok());
        assert!(check_requested(&ask(&["head_1"]), &available).is_ok());
        let err = check_requested(&ask(&["output"]), &available).unwrap_err();
        assert!(err.to_string().contains("unknown output `output`"), "{err}");
        assert!(wanted(&ask(&["head_1"]), "head_1") && !wanted(&ask(&["head_1"]), "head_0"));
        assert!(wanted(&ask(&[]), "head_0"));
    }

    #[test]
    fn statistics_map_counts_and_durations() {
        let s = crate::core::ModelStats {
            success_count: 5,
            failure_count: 1,
            execution_count: 2,
            inference_count: 7,
            queue_ns: 700,
            compute_ns: 400,
            last_inference_ms: 123,
        };
        let st = model_statistics("m", &s);
        assert_eq!((st.inference_count, st.execution_count, st.last_inference), (7, 2, 123));
        let inf = st.inference_stats.unwrap();
        assert_eq!(inf.success.unwrap().count, 5);
        assert_eq!(inf.fail.unwrap().count, 1);
        let q = inf.queue.unwrap();
        assert_eq!((q.count, q.ns), (7, 700));
        let c = inf.compute_infer.unwrap();
        assert_eq!((c.count, c.ns), (2, 400));
    }
}

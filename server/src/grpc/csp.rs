//! `cspserve.v1.CspService`: classification and detection of encoded images, unary and
//! streaming, and model descriptions.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::cspserve::v1 as pb;
use super::pb::cspserve::v1::csp_service_server::CspService;
use super::status::{client_deadline, code_of, earliest, to_status, ApiKey};
use super::stream::{in_order, STREAM_WINDOW};
use crate::core::{
    ClassifyParams, DetectParams, ImageOutput, ImagesResponse, Infer, InferError, ModelInfo, RequestOptions, Task,
    Timing,
};

#[derive(Clone)]
pub struct Csp {
    pub infer: Infer,
    pub api_key: ApiKey,
}

fn to_usize(v: u32) -> usize {
    v as usize
}

fn classes(list: &[u32]) -> Option<Vec<usize>> {
    (!list.is_empty()).then(|| list.iter().copied().map(to_usize).collect())
}

/// The request's deadline: the RPC's, or its own `timeout_ms` if that comes first.
fn deadline(rpc: Option<Instant>, timeout_ms: Option<u32>) -> RequestOptions {
    let own = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
    RequestOptions { deadline: earliest(rpc, own) }
}

pub fn classify_params(req: &pb::ClassifyRequest) -> ClassifyParams {
    let mut p = ClassifyParams { classes: classes(&req.classes), ..ClassifyParams::default() };
    if let Some(k) = req.top_k {
        p.top_k = to_usize(k);
    }
    p
}

pub fn detect_params(req: &pb::DetectRequest) -> Result<DetectParams, InferError> {
    let mut p = DetectParams { classes: classes(&req.classes), ..DetectParams::default() };
    for (name, value, slot) in [
        ("score_threshold", req.score_threshold, &mut p.score_threshold),
        ("iou_threshold", req.iou_threshold, &mut p.iou_threshold),
    ] {
        if let Some(v) = value {
            if !v.is_finite() {
                return Err(InferError::InvalidInput(format!("`{name}` must be a finite number")));
            }
            *slot = v;
        }
    }
    if let Some(m) = req.max_detections {
        p.max_detections = to_usize(m);
    }
    Ok(p)
}

fn timing(t: &Timing) -> pb::Timing {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    pb::Timing { decode_ms: ms(t.decode), queue_ms: ms(t.queue), inference_ms: ms(t.inference), total_ms: ms(t.total) }
}

pub fn classify_response(res: ImagesResponse) -> Result<pb::ClassifyResponse, InferError> {
    let results = res
        .results
        .into_iter()
        .map(|r| match r.output {
            ImageOutput::Classes { classes } => Ok(pb::ImageClasses {
                width: r.width,
                height: r.height,
                classes: classes
                    .into_iter()
                    .map(|c| pb::ClassScore { index: c.index as u32, label: c.label, score: c.score })
                    .collect(),
            }),
            ImageOutput::Detections { .. } => Err(InferError::Internal("classification returned detections".into())),
        })
        .collect::<Result<_, _>>()?;
    Ok(pb::ClassifyResponse { model: res.model, results, timing: Some(timing(&res.timing)) })
}

pub fn detect_response(res: ImagesResponse) -> Result<pb::DetectResponse, InferError> {
    let results = res
        .results
        .into_iter()
        .map(|r| match r.output {
            ImageOutput::Detections { detections } => Ok(pb::ImageDetections {
                width: r.width,
                height: r.height,
                detections: detections
                    .into_iter()
                    .map(|d| pb::Detection {
                        bbox: Some(pb::BoundingBox { x1: d.bbox[0], y1: d.bbox[1], x2: d.bbox[2], y2: d.bbox[3] }),
                        score: d.score,
                        class_id: d.class_id as u32,
                        label: d.label,
                    })
                    .collect(),
            }),
            ImageOutput::Classes { .. } => Err(InferError::Internal("detection returned classes".into())),
        })
        .collect::<Result<_, _>>()?;
    Ok(pb::DetectResponse { model: res.model, results, timing: Some(timing(&res.timing)) })
}

/// The per-request error of a stream response.
pub fn stream_error(err: &InferError) -> pb::Error {
    pb::Error { code: code_of(err) as i32, kind: err.kind().into(), message: err.to_string() }
}

pub fn model(info: &ModelInfo) -> pb::Model {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    pb::Model {
        name: info.name.clone(),
        task: match info.task {
            Task::Classify => pb::Task::Classify,
            Task::Detect => pb::Task::Detect,
        } as i32,
        architecture: info.architecture.clone(),
        input_height: clamp(info.input_size.0),
        input_width: clamp(info.input_size.1),
        num_classes: clamp(info.num_classes),
        labels: info.labels.clone(),
        params: info.params as u64,
        bflops: info.bflops,
        device: info.device.clone(),
        dtype: info.dtype.to_string(),
        batching: Some(pb::Batching {
            max_batch_size: clamp(info.batching.max_batch_size),
            max_queue_delay_ms: info.batching.max_queue_delay_ms,
            max_queue_size: clamp(info.batching.max_queue_size),
        }),
        instances: clamp(info.instances),
        outputs: info.outputs.clone(),
    }
}

/// A request without a body in a stream is the client's mistake, reported for its id.
fn missing_request() -> InferError {
    InferError::InvalidInput("stream message has no `request`".into())
}

impl Csp {
    async fn classify_one(
        &self,
        req: pb::ClassifyRequest,
        rpc: Option<Instant>,
    ) -> Result<pb::ClassifyResponse, InferError> {
        let params = classify_params(&req);
        let opts = deadline(rpc, req.timeout_ms);
        classify_response(self.infer.classify(&req.model, req.images, params, opts).await?)
    }

    async fn detect_one(&self, req: pb::DetectRequest, rpc: Option<Instant>) -> Result<pb::DetectResponse, InferError> {
        let params = detect_params(&req)?;
        let opts = deadline(rpc, req.timeout_ms);
        detect_response(self.infer.detect(&req.model, req.images, params, opts).await?)
    }
}

type ClassifyStream = Pin<Box<dyn Stream<Item = Result<pb::ClassifyStreamResponse, Status>> + Send + 'static>>;
type DetectStream = Pin<Box<dyn Stream<Item = Result<pb::DetectStreamResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CspService for Csp {
    async fn classify(&self, request: Request<pb::ClassifyRequest>) -> Result<Response<pb::ClassifyResponse>, Status> {
        self.api_key.check(request.metadata())?;
        let rpc = client_deadline(request.metadata());
        let res = self.classify_one(request.into_inner(), rpc).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(res))
    }

    async fn detect(&self, request: Request<pb::DetectRequest>) -> Result<Response<pb::DetectResponse>, Status> {
        self.api_key.check(request.metadata())?;
        let rpc = client_deadline(request.metadata());
        let res = self.detect_one(request.into_inner(), rpc).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(res))
    }

    type ClassifyStreamStream = ClassifyStream;

    async fn classify_stream(
        &self,
        request: Request<Streaming<pb::ClassifyStreamRequest>>,
    ) -> Result<Response<Self::ClassifyStreamStream>, Status> {
        self.api_key.check(request.metadata())?;
        let rpc = client_deadline(request.metadata());
        let svc = self.clone();
        let out = in_order(request.into_inner(), STREAM_WINDOW, move |msg: pb::ClassifyStreamRequest| {
            let svc = svc.clone();
            async move {
                let result = match msg.request {
                    Some(req) => svc.classify_one(req, rpc).await,
                    None => Err(missing_request()),
                };
                let outcome = match result {
                    Ok(res) => pb::classify_stream_response::Outcome::Response(res),
                    Err(e) => pb::classify_stream_response::Outcome::Error(stream_error(&e)),
                };
                pb::ClassifyStreamResponse { id: msg.id, outcome: Some(outcome) }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    type DetectStreamStream = DetectStream;

    async fn detect_stream(
        &self,
        request: Request<Streaming<pb::DetectStreamRequest>>,
    ) -> Result<Response<Self::DetectStreamStream>, Status> {
        self.api_key.check(request.metadata())?;
        let rpc = client_deadline(request.metadata());
        let svc = self.clone();
        let out = in_order(request.into_inner(), STREAM_WINDOW, move |msg: pb::DetectStreamRequest| {
            let svc = svc.clone();
            async move {
                let result = match msg.request {
                    Some(req) => svc.detect_one(req, rpc).await,
                    None => Err(missing_request()),
                };
                let outcome = match result {
                    Ok(res) => pb::detect_stream_response::Outcome::Response(res),
                    Err(e) => pb::detect_stream_response::Outcome::Error(stream_error(&e)),
                };
                pb::DetectStreamResponse { id: msg.id, outcome: Some(outcome) }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_models(&self, _: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(pb::ListModelsResponse { models: self.infer.models().iter().map(model).collect() }))
    }

    async fn get_model(&self, request: Request<pb::GetModelRequest>) -> Result<Response<pb::Model>, Status> {
        let info = self.infer.model(&request.get_ref().name).map_err(|e| to_status(&e))?;
        Ok(Response::new(model(&info)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Class, Detection, ImageResult};

    fn response(output: ImageOutput) -> ImagesResponse {
        ImagesResponse {
            model: "m".into(),
            results: vec![ImageResult { width: 640, height: 480, output }],
            timing: Timing {
                decode: Duration::from_micros(1500),
                queue: Duration::from_millis(2),
                inference: Duration::from_millis(10),
                total: Duration::from_millis(14),
            },
        }
    }

    #[test]
    fn classify_results_and_timing_convert() {
        let classes = vec![
            Class { index: 3, label: Some("cat".into()), score: 0.9 },
            Class { index: 1, label: None, score: 0.05 },
        ];
        let res = classify_response(response(ImageOutput::Classes { classes })).unwrap();
        assert_eq!(res.model, "m");
        let img = &res.results[0];
        assert_eq!((img.width, img.height), (640, 480));
        assert_eq!(img.classes[0], pb::ClassScore { index: 3, label: Some("cat".into()), score: 0.9 });
        assert_eq!(img.classes[1].label, None);
        let t = res.timing.unwrap();
        assert_eq!((t.decode_ms, t.queue_ms, t.inference_ms, t.total_ms), (1.5, 2.0, 10.0, 14.0));
        let wrong = classify_response(response(ImageOutput::Detections { detections: vec![] })).unwrap_err();
        assert_eq!(wrong.kind(), "internal");
    }

    #[test]
    fn detections_convert_with_boxes_in_pixels() {
        let det = Detection { bbox: [1.0, 2.0, 30.5, 40.0], score: 0.8, class_id: 16, label: Some("dog".into()) };
        let res = detect_response(response(ImageOutput::Detections { detections: vec![det] })).unwrap();
        let d = &res.results[0].detections[0];
        assert_eq!(d.bbox, Some(pb::BoundingBox { x1: 1.0, y1: 2.0, x2: 30.5, y2: 40.0 }));
        assert_eq!((d.class_id, d.score, d.label.as_deref()), (16, 0.8, Some("dog")));
    }

    #[test]
    fn request_parameters_fill_in_defaults() {
        let req = pb::ClassifyRequest { model: "m".into(), top_k: Some(3), ..Default::default() };
        let p = classify_params(&req);
        assert_eq!((p.top_k, p.classes), (3, None));
        let p = classify_params(&pb::ClassifyRequest { classes: vec![2, 5], ..Default::default() });
        assert_eq!((p.top_k, p.classes), (ClassifyParams::default().top_k, Some(vec![2, 5])));

        let defaults = DetectParams::default();
        let p = detect_params(&pb::DetectRequest { iou_threshold: Some(0.7), ..Default::default() }).unwrap();
        assert_eq!((p.score_threshold, p.iou_threshold, p.max_detections), (defaults.score_threshold, 0.7, 300));
        let nan = pb::DetectRequest { score_threshold: Some(f32::NAN), ..Default::default() };
        assert_eq!(detect_params(&nan).unwrap_err().kind(), "invalid_input");
    }

    #[test]
    fn deadline_is_the_earlier_of_rpc_and_request() {
        let soon = Instant::now() + Duration::from_millis(5);
        assert_eq!(deadline(Some(soon), Some(60_000)).deadline, Some(soon));
        let own = deadline(None, Some(50)).deadline.unwrap();
        assert!(own <= Instant::now() + Duration::from_millis(50));
        assert_eq!(deadline(None, None).deadline, None);
    }

    #[test]
    fn stream_errors_carry_code_and_kind() {
        let e = stream_error(&InferError::Overloaded("m".into()));
        assert_eq!((e.code, e.kind.as_str()), (tonic::Code::ResourceExhausted as i32, "overloaded"));
        assert!(e.message.contains("overloaded"));
        let e = stream_error(&missing_request());
        assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
    }
}

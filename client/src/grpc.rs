//! The gRPC client: csp-server's own `CspService` (unary Classify / Detect, model listing) and
//! the KServe v2 health RPCs. Streams are in [`crate::stream`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use csp_models::heads::Detection;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::pb::cspserve::v1 as csp;
use crate::pb::inference as kserve;
use crate::target::{Health, ModelSummary};
use crate::tls::TlsMaterial;
use crate::types::{Class, ImageResult, InferResponse, Params, Task, Timed, Timing};
use crate::ClientError;

/// Responses carry few numbers, but allow big ones (many boxes) rather than fail.
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Clone, Debug)]
pub struct GrpcClient {
    url: String,
    channel: Channel,
    api_key: Option<String>,
    timeout: Duration,
}

impl GrpcClient {
    /// Connects lazily: a server that is not there shows up as a connect error on the first call.
    pub(crate) fn new(
        url: &str,
        api_key: Option<String>,
        timeout: Duration,
        tls: &TlsMaterial,
    ) -> Result<Self, ClientError> {
        let url = crate::rest::normalize_base(url)?;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::Input(format!("bad gRPC URL `{url}`: {e}")))?
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tls.grpc())
                .map_err(|e| ClientError::Input(format!("gRPC TLS settings for `{url}`: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(GrpcClient { url, channel, api_key, timeout })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn csp(&self) -> csp::csp_service_client::CspServiceClient<Channel> {
        csp::csp_service_client::CspServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn kserve(&self) -> kserve::grpc_inference_service_client::GrpcInferenceServiceClient<Channel> {
        kserve::grpc_inference_service_client::GrpcInferenceServiceClient::new(self.channel.clone())
    }

    /// A request with the API key and the deadline (sent as `grpc-timeout`, so the server drops
    /// the request when the client has given up on it).
    pub fn request<T>(&self, message: T) -> Result<Request<T>, ClientError> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        self.authorize(&mut request)?;
        Ok(request)
    }

    /// Adds `authorization: Bearer <key>` when there is a key.
    pub fn authorize<T>(&self, request: &mut Request<T>) -> Result<(), ClientError> {
        if let Some(key) = &self.api_key {
            let value: MetadataValue<_> = format!("Bearer {key}")
                .parse()
                .map_err(|_| ClientError::Input("the API key must be printable ASCII".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(())
    }

    fn status(&self, status: &tonic::Status) -> ClientError {
        match ClientError::from_status(&self.url, status) {
            ClientError::Timeout { url, .. } => ClientError::Timeout { url, timeout: self.timeout },
            other => other,
        }
    }

    /// Unary Classify or Detect.
    pub async fn infer(
        &self,
        task: Task,
        model: &str,
        images: &[Bytes],
        params: &Params,
    ) -> Result<Timed<InferResponse>, ClientError> {
        if images.is_empty() {
            return Err(ClientError::Input("no images to send".into()));
        }
        let mut api = self.csp();
        let started = Instant::now();
        let value = match task {
            Task::Classify => {
                let request = self.request(classify_request(model, images, params))?;
                let response = api.classify(request).await.map_err(|s| self.status(&s))?;
                from_classify(response.into_inner())
            }
            Task::Detect => {
                let request = self.request(detect_request(model, images, params))?;
                let response = api.detect(request).await.map_err(|s| self.status(&s))?;
                from_detect(response.into_inner())
            }
        };
        Ok(Timed { value, latency: started.elapsed() })
    }

    pub async fn models(&self) -> Result<Vec<ModelSummary>, ClientError> {
        let request = self.request(csp::ListModelsRequest {})?;
        let response = self.csp().list_models(request).await.map_err(|s| self.status(&s))?;
        Ok(response.into_inner().models.iter().map(ModelSummary::from_grpc).collect())
    }

    /// KServe `ServerLive` and `ServerReady`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let mut api = self.kserve();
        let live = api
            .server_live(self.request(kserve::ServerLiveRequest {})?)
            .await
            .map_err(|s| self.status(&s))?
            .into_inner()
            .live;
        let ready = api
            .server_ready(self.request(kserve::ServerReadyRequest {})?)
            .await
            .map_err(|s| self.status(&s))?
            .into_inner()
            .ready;
        Ok(Health { live, ready })
    }
}

pub fn classify_request(model: &str, images: &[Bytes], params: &Params) -> csp::ClassifyRequest {
    csp::ClassifyRequest {
        model: model.to_owned(),
        images: images.to_vec(),
        top_k: params.top_k,
        classes: params.classes.clone(),
        timeout_ms: params.server_timeout_ms,
    }
}

pub fn detect_request(model: &str, images: &[Bytes], params: &Params) -> csp::DetectRequest {
    csp::DetectRequest {
        model: model.to_owned(),
        images: images.to_vec(),
        score_threshold: params.score_threshold,
        iou_threshold: params.iou_threshold,
        max_detections: params.max_detections,
        classes: params.classes.clone(),
        timeout_ms: params.server_timeout_ms,
    }
}

fn timing(t: Option<csp::Timing>) -> Timing {
    let t = t.unwrap_or_default();
    Timing { decode_ms: t.decode_ms, queue_ms: t.queue_ms, inference_ms: t.inference_ms, total_ms: t.total_ms }
}

pub fn from_classify(r: csp::ClassifyResponse) -> InferResponse {
    let results = r
        .results
        .into_iter()
        .map(|image| ImageResult {
            width: image.width,
            height: image.height,
            classes: Some(
                image
                    .classes
                    .into_iter()
                    .map(|c| Class { index: c.index as usize, label: c.label, score: c.score })
                    .collect(),
            ),
            detections: None,
        })
        .collect();
    InferResponse { model: r.model, results, timing: timing(r.timing) }
}

pub fn from_detect(r: csp::DetectResponse) -> InferResponse {
    let results = r
        .results
        .into_iter()
        .map(|image| ImageResult {
            width: image.width,
            height: image.height,
            classes: None,
            detections: Some(
                image
                    .detections
                    .into_iter()
                    .map(|d| {
                        let b = d.bbox.unwrap_or_default();
                        Detection {
                            bbox: [b.x1, b.y1, b.x2, b.y2],
                            score: d.score,
                            class_id: d.class_id as usize,
                            label: d.label,
                        }
                    })
                    .collect(),
            ),
        })
        .collect();
    InferResponse { model: r.model, results, timing: timing(r.timing) }
}

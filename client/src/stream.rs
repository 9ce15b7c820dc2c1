//! The bidirectional gRPC streams (`ClassifyStream` / `DetectStream`): one open stream carries
//! many requests at once, each tagged with an id; the server answers in request order.
//! [`StreamSession`] lets any number of callers share one stream, each awaiting its own answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::grpc::{classify_request, detect_request, from_classify, from_detect, GrpcClient};
use crate::pb::cspserve::v1 as csp;
use crate::types::{InferResponse, Params, Task, Timed};
use crate::{ClientError, ErrorKind};

type Reply = oneshot::Sender<Result<InferResponse, ClientError>>;

enum Outbound {
    Classify(mpsc::UnboundedSender<csp::ClassifyStreamRequest>),
    Detect(mpsc::UnboundedSender<csp::DetectStreamRequest>),
}

struct Shared {
    outbound: Outbound,
    /// Requests sent and not answered yet, by id.
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    url: String,
    timeout: std::time::Duration,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<String, Reply>,
    /// Why the stream ended, once it has: later requests fail with it at once.
    closed: Option<ClientError>,
}

/// One open stream, shared: clone it freely.
#[derive(Clone)]
pub struct StreamSession {
    shared: Arc<Shared>,
    task: Task,
}

impl StreamSession {
    /// Opens a stream for `task`'s RPC. Fails when the server cannot be reached.
    pub async fn open_for(grpc: &GrpcClient, task: Task) -> Result<Self, ClientError> {
        let mut api = grpc.csp();
        let url = grpc.url().to_owned();
        let status = |s: tonic::Status| ClientError::from_status(&url, &s);
        let (outbound, inbound) = match task {
            Task::Classify => {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
                grpc.authorize(&mut request)?;
                let inbound = api.classify_stream(request).await.map_err(status)?.into_inner();
                let inbound = inbound.map(|item| item.map(classify_outcome)).boxed();
                (Outbound::Classify(tx), inbound)
            }
            Task::Detect => {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
                grpc.authorize(&mut request)?;
                let inbound = api.detect_stream(request).await.map_err(status)?.into_inner();
                let inbound = inbound.map(|item| item.map(detect_outcome)).boxed();
                (Outbound::Detect(tx), inbound)
            }
        };
        let shared = Arc::new(Shared {
            outbound,
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(0),
            url,
            timeout: grpc.timeout(),
        });
        tokio::spawn(deliver(inbound, shared.clone()));
        Ok(StreamSession { shared, task })
    }

    /// Sends one request on the stream and waits for its answer (the client's timeout applies).
    pub async fn infer(
        &self,
        task: Task,
        model: &str,
        images: &[Bytes],
        params: &Params,
    ) -> Result<Timed<InferResponse>, ClientError> {
        if task != self.task {
            return Err(ClientError::Input(format!("this stream carries {:?} requests", self.task)));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = &pending.closed {
                return Err(e.clone());
            }
            pending.waiting.insert(id.clone(), tx);
        }
        let started = Instant::now();
        let sent = match &self.shared.outbound {
            Outbound::Classify(out) => out
                .send(csp::ClassifyStreamRequest {
                    id: id.clone(),
                    request: Some(classify_request(model, images, params)),
                })
                .is_ok(),
            Outbound::Detect(out) => out
                .send(csp::DetectStreamRequest { id: id.clone(), request: Some(detect_request(model, images, params)) })
                .is_ok(),
        };
        if !sent {
            self.forget(&id);
            return Err(ClientError::Protocol(format!("the stream to {} has closed", self.shared.url)));
        }
        match tokio::time::timeout(self.shared.timeout, rx).await {
            Ok(Ok(result)) => result.map(|value| Timed { value, latency: started.elapsed() }),
            Ok(Err(_)) => Err(ClientError::Protocol(format!("the stream to {} ended early", self.shared.url))),
            Err(_) => {
                self.forget(&id);
                Err(ClientError::Timeout { url: self.shared.url.clone(), timeout: self.shared.timeout })
            }
        }
    }

    fn forget(&self, id: &str) {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).waiting.remove(id);
    }
}

type Outcome = (String, Result<InferResponse, ClientError>);

fn classify_outcome(r: csp::ClassifyStreamResponse) -> Outcome {
    let result = match r.outcome {
        Some(csp::classify_stream_response::Outcome::Response(response)) => Ok(from_classify(response)),
        Some(csp::classify_stream_response::Outcome::Error(e)) => Err(stream_error(e)),
        None => Err(ClientError::Protocol("stream response without an outcome".into())),
    };
    (r.id, result)
}

fn detect_outcome(r: csp::DetectStreamResponse) -> Outcome {
    let result = match r.outcome {
        Some(csp::detect_stream_response::Outcome::Response(response)) => Ok(from_detect(response)),
        Some(csp::detect_stream_response::Outcome::Error(e)) => Err(stream_error(e)),
        None => Err(ClientError::Protocol("stream response without an outcome".into())),
    };
    (r.id, result)
}

/// A failed request inside a stream, sorted like the unary RPC's status would be.
fn stream_error(e: csp::Error) -> ClientError {
    let code = tonic::Code::from_i32(e.code);
    let class = match code {
        tonic::Code::ResourceExhausted => ErrorKind::Rejected,
        tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    };
    ClientError::Server { status: format!("gRPC {code:?}"), kind: e.kind, message: e.message, class }
}

/// Hands each answer to its waiting caller; when the stream ends, fails everyone still waiting.
async fn deliver(
    mut inbound: futures::stream::BoxStream<'static, Result<Outcome, tonic::Status>>,
    shared: Arc<Shared>,
) {
    let end = loop {
        match inbound.next().await {
            Some(Ok((id, result))) => {
                let waiter = shared.pending.lock().unwrap_or_else(|e| e.into_inner()).waiting.remove(&id);
                // A caller that timed out is gone: its late answer is dropped.
                if let Some(tx) = waiter {
                    let _ = tx.send(result);
                }
            }
            Some(Err(status)) => break ClientError::from_status(&shared.url, &status),
            None => break ClientError::Protocol(format!("the server closed the stream from {}", shared.url)),
        }
    };
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    for (_, tx) in pending.waiting.drain() {
        let _ = tx.send(Err(end.clone()));
    }
    pending.closed = Some(end);
}

/// One image's answer in `csp-client stream`.
#[derive(Debug)]
pub struct StreamItem {
    pub index: usize,
    pub result: Result<Timed<InferResponse>, ClientError>,
}

/// Sends `images` (one per request) on one stream with at most `window` in flight and yields
/// the answers in request order, as they arrive.
pub fn run_ordered<'a>(
    session: &'a StreamSession,
    model: &'a str,
    images: &'a [Bytes],
    params: &'a Params,
    window: usize,
) -> impl futures::Stream<Item = StreamItem> + 'a {
    let task = session.task;
    futures::stream::iter(images.iter().enumerate())
        .map(move |(index, image)| async move {
            let result = session.infer(task, model, std::slice::from_ref(image), params).await;
            StreamItem { index, result }
        })
        .buffered(window.max(1))
}

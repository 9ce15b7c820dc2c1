//! Entry points into the gRPC request parsers for the fuzz targets (`fuzz/`): a wire message
//! decoded as each request type and taken up to the core, without a running server.

use prost::Message;

use super::csp::{classify_params, detect_params};
use super::params::V2Params;
use super::pb::cspserve::v1 as csp_pb;
use super::pb::inference as v2_pb;
use super::tensor::{parse_input, V2Input};
use crate::core::InferError;

/// Decodes `bytes` as a `ModelInferRequest`, `ClassifyRequest` and `DetectRequest` in turn and
/// runs what the services do with each before inference. Returns whether any of them was accepted.
pub fn request_messages(bytes: &[u8]) -> bool {
    let v2 = v2_pb::ModelInferRequest::decode(bytes).ok().map(|req| v2_infer(&req).is_ok());
    let classify = csp_pb::ClassifyRequest::decode(bytes).ok().map(|req| classify_params(&req));
    let detect = csp_pb::DetectRequest::decode(bytes).ok().map(|req| detect_params(&req).is_ok());
    v2 == Some(true) || classify.is_some() || detect == Some(true)
}

fn v2_infer(req: &v2_pb::ModelInferRequest) -> Result<(), InferError> {
    let params = V2Params::parse(&req.parameters)?;
    let _ = params.deadline(std::time::Instant::now());
    match parse_input(&req.inputs, &req.raw_input_contents)? {
        V2Input::Tensor { .. } => params.check_raw(),
        // The model's task picks one; a request is fine when it suits either kind of model.
        V2Input::Images(_) => params.classify().map(drop).or_else(|_| params.detect().map(drop)),
    }
}

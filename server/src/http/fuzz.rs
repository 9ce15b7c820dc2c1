//! Entry points into the HTTP request parsers for the fuzz targets (`fuzz/`): the steps the
//! handlers take between the raw request and the core, on bytes, without a running server.

use axum::http::{header, Request, Uri};
use bytes::Bytes;

use super::body::{body_kind, parse_images};
use super::error::{ApiError, ApiResult};
use super::params::Params;
use super::v2::request_params;
use super::v2_tensor::{decode_input, select_outputs, split_body, Decoded, OUTPUT_RESULT};
use crate::core::{ModelInfo, Task};

/// A friendly endpoint's request (`/v1/models/{m}/classify|detect`) up to the core: the query
/// string of `uri`, the body in the form `content_type` selects (raw, multipart or JSON), and the
/// merged parameters checked against a model of `num_classes` classes. Returns the image count.
pub fn images_request(
    task: Task,
    uri: &str,
    content_type: Option<&str>,
    body: Bytes,
    max_images: usize,
    num_classes: usize,
) -> ApiResult<usize> {
    let uri: Uri = uri.parse().map_err(|e| ApiError::invalid(format!("bad URI: {e}")))?;
    let mut builder = Request::builder().uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    // hyper refuses such header values before a handler runs.
    let (parts, ()) = builder.body(()).map_err(|e| ApiError::invalid(format!("bad header: {e}")))?.into_parts();
    let mut params = Params::from_query(task, &parts.uri)?;
    body_kind(&parts.headers)?;
    // Parsing an in-memory body never waits on I/O, so no runtime is needed.
    let parsed = futures::executor::block_on(parse_images(task, parts, body, max_images))?;
    params.merge(parsed.params)?;
    params.check_classes(num_classes)?;
    let _ = (params.classify(), params.detect(), params.options());
    Ok(parsed.images.len())
}

/// A v2 `infer` body (JSON, with binary tensor data after it when `header_length` is given) up
/// to the core, against the model `info`.
pub fn v2_infer_request(
    body: Bytes,
    header_length: Option<&str>,
    info: &ModelInfo,
    max_images: usize,
) -> ApiResult<()> {
    let (mut request, binary) = split_body(&body, header_length)?;
    match decode_input(&mut request, binary, info, max_images)? {
        Decoded::Tensor { .. } => {
            select_outputs(&request, &info.outputs)?;
            request_params(request.parameters.as_ref(), None)?;
        }
        Decoded::Images(_) => {
            select_outputs(&request, &[OUTPUT_RESULT.to_owned()])?;
            let (params, _) = request_params(request.parameters.as_ref(), Some(info.task))?;
            if let Some(params) = params {
                params.check_classes(info.num_classes)?;
                let _ = (params.classify(), params.detect());
            }
        }
    }
    Ok(())
}

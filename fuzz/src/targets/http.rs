//! HTTP request bodies: the friendly endpoints (query string, raw / multipart / JSON-with-base64
//! bodies) and the v2 `infer` body (JSON, binary tensor data).

use std::sync::OnceLock;

use bytes::Bytes;
use csp_server::core::{BatchingConfig, ModelInfo, Task};
use csp_server::http::fuzz::{images_request as parse_images_request, v2_infer_request};

use crate::split_line;

const MAX_IMAGES: usize = 4;
const NUM_CLASSES: usize = 80;

/// Input: the request URI (path and query) on the first line, the Content-Type on the second
/// (empty: none), then the body. Run as both a classify and a detect request.
pub fn images_request(bytes: &[u8]) -> bool {
    let Some((uri, rest)) = split_line(bytes) else { return false };
    let Some((content_type, body)) = split_line(rest) else { return false };
    let (Ok(uri), Ok(content_type)) = (std::str::from_utf8(uri), std::str::from_utf8(content_type)) else {
        return false;
    };
    let content_type = Some(content_type).filter(|ct| !ct.is_empty());
    let body = Bytes::copy_from_slice(body);
    let mut accepted = false;
    for task in [Task::Classify, Task::Detect] {
        accepted |= parse_images_request(task, uri, content_type, body.clone(), MAX_IMAGES, NUM_CLASSES).is_ok();
    }
    accepted
}

/// Input: the Inference-Header-Content-Length value on the first line (empty: no header, the
/// body is all JSON), then the body. Run against a classifier and a detector.
pub fn v2_infer(bytes: &[u8]) -> bool {
    let Some((header, body)) = split_line(bytes) else { return false };
    let Ok(header) = std::str::from_utf8(header) else { return false };
    let header = Some(header).filter(|h| !h.is_empty());
    let body = Bytes::copy_from_slice(body);
    let mut accepted = false;
    for info in models() {
        accepted |= v2_infer_request(body.clone(), header, info, MAX_IMAGES).is_ok();
    }
    accepted
}

/// Models as the v2 handler sees them; an 8x8 input keeps tensor payloads small.
fn models() -> &'static [ModelInfo; 2] {
    static MODELS: OnceLock<[ModelInfo; 2]> = OnceLock::new();
    MODELS.get_or_init(|| {
        let model = |name: &str, task, outputs: &[&str]| ModelInfo {
            name: name.into(),
            task,
            architecture: "fuzz".into(),
            input_size: (8, 8),
            num_classes: NUM_CLASSES,
            labels: Vec::new(),
            params: 0,
            bflops: 0.0,
            device: "cpu".into(),
            dtype: Default::default(),
            batching: BatchingConfig::default(),
            instances: 1,
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        };
        [model("cls", Task::Classify, &["output"]), model("det", Task::Detect, &["head_0", "head_1"])]
    })
}

pub const IMAGES_DICTIONARY: &[&[u8]] = &[
    b"/v1/models/m/detect?",
    b"top_k=",
    b"classes=",
    b"score_threshold=",
    b"iou_threshold=",
    b"max_detections=",
    b"timeout=",
    b"&",
    b"%",
    b"multipart/form-data; boundary=",
    b"application/json",
    b"image/png",
    b"--XBOUNDARY",
    b"\r\n",
    b"Content-Disposition: form-data; name=\"",
    b"; filename=\"",
    b"Content-Type: ",
    b"{\"images\": [\"",
    b"data:image/png;base64,",
    b"\"top_k\": ",
    b"\"classes\": [",
    b"1e400",
    b"-1",
    b"NaN",
    b"null",
    b"\\u0000",
];

pub const V2_DICTIONARY: &[&[u8]] = &[
    b"{\"inputs\": [",
    b"\"name\": \"input\"",
    b"\"name\": \"image\"",
    b"\"datatype\": \"FP32\"",
    b"\"datatype\": \"BYTES\"",
    b"\"shape\": [",
    b"\"data\": [",
    b"\"parameters\": {",
    b"\"binary_data_size\": ",
    b"\"binary_data\": true",
    b"\"outputs\": [",
    b"\"timeout\": ",
    b"\"top_k\": ",
    b"\"classes\": ",
    b"\"score_threshold\": ",
    b"\"id\": ",
    b"18446744073709551615",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1e400",
    b"[[[[",
    b"]]]]",
    b"\xff\xff\xff\x7f",
];

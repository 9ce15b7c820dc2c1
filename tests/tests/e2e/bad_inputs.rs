//! A table of bad requests: each gets a 4xx with a JSON error body (or INVALID_ARGUMENT /
//! NOT_FOUND over gRPC) saying what was wrong, never a 5xx, and the server stays healthy.

use base64::Engine;
use bytes::Bytes;
use csp_e2e::fixtures::{fixtures, random_values, INPUT_ELEMENTS};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::pb::inference as kserve;
use csp_e2e::rest::{self, api_error, client};
use csp_e2e::{images, metrics, ServerBuilder};
use kserve::model_infer_request::InferInputTensor;
use reqwest::multipart::{Form, Part};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tonic::Code;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const MAX_BODY: usize = 300_000;
const MAX_IMAGES: usize = 4;
const MAX_PIXELS: u64 = 1_000_000;

fn limited_server() -> csp_e2e::Server {
    ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-body-bytes", &MAX_BODY.to_string()])
        .args(["--max-images-per-request", &MAX_IMAGES.to_string()])
        .args(["--max-image-pixels", &MAX_PIXELS.to_string()])
        .start()
}

fn tensor(shape: &[i64], datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rest_requests_get_4xx_json_errors() {
    let server = limited_server();
    let http = client();
    let classify = server.url("/v1/models/cls/classify");
    let detect = server.url("/v1/models/det/detect");
    let infer = server.url("/v2/models/cls/infer");
    let raw =
        |url: &str, content_type: &str, body: Vec<u8>| http.post(url).header("content-type", content_type).body(body);
    let png = images::png(48, 48, 1);
    let five_images: Vec<String> = (0..5).map(|i| B64.encode(images::png(16, 16, i))).collect();
    let mut five_parts = Form::new();
    for i in 0..5 {
        five_parts = five_parts.part("image", Part::bytes(images::png(16, 16, i)).file_name(format!("{i}.png")));
    }
    // Over the 4-image limit as one binary FP32 batch (fits the body limit: 5 * 48 KiB + header).
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 3, 64, 64],
                                    "parameters": {"binary_data_size": 5 * INPUT_ELEMENTS * 4}}]})
    .to_string();
    let mut big_batch = header.clone().into_bytes();
    big_batch.extend(std::iter::repeat_n(0u8, 5 * INPUT_ELEMENTS * 4));
    let one_input = random_values(INPUT_ELEMENTS, 1);

    use StatusCode as S;
    let cases: Vec<(&str, RequestBuilder, StatusCode, Option<&str>)> = vec![
        ("empty body", raw(&classify, "image/png", vec![]), S::BAD_REQUEST, Some("invalid_input")),
        ("text with an image type", raw(&classify, "image/jpeg", b"hello, not a picture".to_vec()), S::BAD_REQUEST, Some("bad_image")),
        ("text/plain body", raw(&classify, "text/plain", b"hello".to_vec()), S::UNSUPPORTED_MEDIA_TYPE, None),
        ("truncated JPEG", raw(&classify, "image/jpeg", images::truncated_jpeg()), S::BAD_REQUEST, Some("bad_image")),
        ("truncated PNG", raw(&classify, "image/png", images::truncated_png()), S::BAD_REQUEST, Some("bad_image")),
        ("PNG bomb header 100000x100000", raw(&classify, "image/png", images::png_bomb(100_000, 100_000)), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("JPEG header claiming 60000x50000", raw(&detect, "image/jpeg", images::jpeg_with_claimed_size(60_000, 50_000)), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("real image over the pixel limit", raw(&classify, "image/png", images::solid_png(1200, 1000)), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("unknown model", raw(&server.url("/v1/models/nope/classify"), "image/png", png.clone()), S::NOT_FOUND, Some("model_not_found")),
        ("unknown parameter", raw(&format!("{classify}?foo=1"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("detect parameter on classify", raw(&format!("{classify}?score_threshold=0.5"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("top_k = 0", raw(&format!("{classify}?top_k=0"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("top_k not a number", raw(&format!("{classify}?top_k=many"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("class id out of range", raw(&format!("{classify}?classes=3,99"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("score_threshold > 1", raw(&format!("{detect}?score_threshold=1.5"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("iou_threshold < 0", raw(&format!("{detect}?iou_threshold=-0.1"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("max_detections = 0", raw(&format!("{detect}?max_detections=0"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("timeout = 0", raw(&format!("{classify}?timeout=0"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("too many images (JSON)", http.post(&classify).json(&json!({"images": five_images})), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("too many images (multipart)", http.post(&classify).multipart(five_parts), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("body over --max-body-bytes", raw(&classify, "image/png", vec![0x89; MAX_BODY + 50_000]), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("malformed JSON", raw(&classify, "application/json", b"{\"images\": [".to_vec()), S::BAD_REQUEST, Some("invalid_input")),
        ("JSON images not a list", http.post(&classify).json(&json!({"images": B64.encode(&png)})), S::BAD_REQUEST, Some("invalid_input")),
        ("invalid base64", http.post(&classify).json(&json!({"images": ["%%% not base64 %%%"]})), S::BAD_REQUEST, Some("bad_image")),
        ("unknown JSON field", http.post(&classify).json(&json!({"images": [B64.encode(&png)], "colour": "red"})), S::BAD_REQUEST, Some("invalid_input")),
        ("classify on a detector", raw(&server.url("/v1/models/det/classify"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("detect on a classifier", raw(&server.url("/v1/models/cls/detect"), "image/png", png.clone()), S::BAD_REQUEST, Some("invalid_input")),
        ("wrong tensor shape", http.post(&infer).json(&tensor(&[1, 3, 32, 32], "FP32", json!(vec![0.5; 3 * 32 * 32]))), S::BAD_REQUEST, Some("invalid_input")),
        ("tensor of rank 3", http.post(&infer).json(&tensor(&[3, 64, 64], "FP32", json!(one_input))), S::BAD_REQUEST, Some("invalid_input")),
        ("wrong tensor datatype", http.post(&infer).json(&tensor(&[1, 3, 64, 64], "INT8", json!(vec![1; INPUT_ELEMENTS]))), S::BAD_REQUEST, Some("invalid_input")),
        ("FP16 tensor", http.post(&infer).json(&tensor(&[1, 3, 64, 64], "FP16", json!(one_input))), S::BAD_REQUEST, Some("invalid_input")),
        ("element count mismatch", http.post(&infer).json(&tensor(&[2, 3, 64, 64], "FP32", json!(one_input))), S::BAD_REQUEST, Some("invalid_input")),
        ("strings in an FP32 tensor", http.post(&infer).json(&tensor(&[1, 3, 1, 1], "FP32", json!(["a", "b", "c"]))), S::BAD_REQUEST, Some("invalid_input")),
        ("unknown input name", http.post(&infer).json(&json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": one_input}]})), S::BAD_REQUEST, Some("invalid_input")),
        ("no inputs", http.post(&infer).json(&json!({"inputs": []})), S::BAD_REQUEST, Some("invalid_input")),
        ("unknown v2 parameter", http.post(&infer).json(&json!({"parameters": {"colour": "red"}, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": one_input}]})), S::BAD_REQUEST, Some("invalid_input")),
        ("too many images in a tensor", raw(&infer, "application/octet-stream", big_batch).header("inference-header-content-length", header.len()), S::PAYLOAD_TOO_LARGE, Some("too_large")),
        ("garbage in a BYTES image", http.post(&infer).json(&json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [B64.encode(b"GIF89a nope")]}]})), S::BAD_REQUEST, Some("bad_image")),
        ("malformed v2 JSON", raw(&infer, "application/json", b"{\"inputs\": 3}".to_vec()), S::BAD_REQUEST, Some("invalid_input")),
        ("v2 unknown model", http.post(server.url("/v2/models/nope/infer")).json(&tensor(&[1, 3, 64, 64], "FP32", json!(one_input))), S::NOT_FOUND, Some("model_not_found")),
        ("v2 unknown version", http.post(server.url("/v2/models/cls/versions/9/infer")).json(&tensor(&[1, 3, 64, 64], "FP32", json!(one_input))), S::NOT_FOUND, Some("model_not_found")),
        ("GET on an inference route", http.get(&classify), S::METHOD_NOT_ALLOWED, None),
        ("unknown route", http.get(server.url("/v3/everything")), S::NOT_FOUND, None),
    ];

    let mut failures = Vec::new();
    for (name, request, want_status, want_kind) in cases {
        let response = request.send().await.unwrap_or_else(|e| panic!("{name}: request failed: {e}"));
        let status = response.status();
        if !status.is_client_error() {
            let body = response.text().await.unwrap_or_default();
            failures.push(format!("{name}: got {status}, want {want_status}: {body}"));
            continue;
        }
        let error = api_error(response).await;
        if error.status != want_status || want_kind.is_some_and(|k| k != error.kind) {
            failures.push(format!(
                "{name}: got {} `{}` ({}), want {want_status} {want_kind:?}",
                error.status, error.kind, error.message
            ));
        }
    }
    assert!(failures.is_empty(), "{} bad requests were mishandled:\n{}", failures.len(), failures.join("\n"));

    rest::assert_healthy(&http, &server, "cls").await;
    let text = rest::metrics(&http, &server).await;
    assert_eq!(metrics::sum(&text, "csp_requests_total", &[("status", "internal")]), 0.0, "{text}");
    assert!(!server.output().contains("panicked"), "the server panicked:\n{}", server.output());
}

fn image_request(model: &str, images: Vec<Vec<u8>>) -> csp::ClassifyRequest {
    csp::ClassifyRequest {
        model: model.into(),
        images: images.into_iter().map(Bytes::from).collect(),
        ..Default::default()
    }
}

fn infer_request(model: &str, inputs: Vec<InferInputTensor>) -> kserve::ModelInferRequest {
    kserve::ModelInferRequest { model_name: model.into(), inputs, ..Default::default() }
}

fn fp32(shape: Vec<i64>, datatype: &str, values: Vec<f32>) -> InferInputTensor {
    InferInputTensor {
        name: "input".into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents: Some(kserve::InferTensorContents { fp32_contents: values, ..Default::default() }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_requests_get_invalid_argument() {
    let server = limited_server();
    let mut api = server.csp().await;
    let mut v2 = server.kserve().await;
    let png = images::png(48, 48, 1);
    let one = random_values(INPUT_ELEMENTS, 1);
    let mut failures = Vec::new();
    let mut check = |name: &str, result: Result<(), tonic::Status>, want: Code| match result {
        Ok(()) => failures.push(format!("{name}: succeeded, want {want:?}")),
        Err(status) if status.code() != want => {
            failures.push(format!("{name}: got {:?} ({}), want {want:?}", status.code(), status.message()))
        }
        Err(status) if status.message().is_empty() => failures.push(format!("{name}: no error message")),
        Err(_) => {}
    };

    let classify_cases: Vec<(&str, csp::ClassifyRequest, Code)> = vec![
        ("no images", image_request("cls", vec![]), Code::InvalidArgument),
        ("text image", image_request("cls", vec![b"plain text".to_vec()]), Code::InvalidArgument),
        ("empty image", image_request("cls", vec![vec![]]), Code::InvalidArgument),
        ("truncated JPEG", image_request("cls", vec![images::truncated_jpeg()]), Code::InvalidArgument),
        ("truncated PNG", image_request("cls", vec![images::truncated_png()]), Code::InvalidArgument),
        ("PNG bomb", image_request("cls", vec![images::png_bomb(100_000, 100_000)]), Code::InvalidArgument),
        ("over the pixel limit", image_request("cls", vec![images::solid_png(1200, 1000)]), Code::InvalidArgument),
        ("unknown model", image_request("nope", vec![png.clone()]), Code::NotFound),
        ("classify on a detector", image_request("det", vec![png.clone()]), Code::InvalidArgument),
        ("too many images", image_request("cls", vec![png.clone(); MAX_IMAGES + 1]), Code::InvalidArgument),
        (
            "top_k = 0",
            csp::ClassifyRequest { top_k: Some(0), ..image_request("cls", vec![png.clone()]) },
            Code::InvalidArgument,
        ),
        (
            "class out of range",
            csp::ClassifyRequest { classes: vec![99], ..image_request("cls", vec![png.clone()]) },
            Code::InvalidArgument,
        ),
    ];
    for (name, request, want) in classify_cases {
        check(name, api.classify(request).await.map(|_| ()), want);
    }
    let detect = |score: Option<f32>, iou: Option<f32>| csp::DetectRequest {
        model: "det".into(),
        images: vec![Bytes::from(png.clone())],
        score_threshold: score,
        iou_threshold: iou,
        ..Default::default()
    };
    check("score_threshold > 1", api.detect(detect(Some(1.5), None)).await.map(|_| ()), Code::InvalidArgument);
    check("iou_threshold NaN", api.detect(detect(None, Some(f32::NAN))).await.map(|_| ()), Code::InvalidArgument);
    let on_classifier = csp::DetectRequest { model: "cls".into(), ..detect(None, None) };
    check("detect on a classifier", api.detect(on_classifier).await.map(|_| ()), Code::InvalidArgument);

    let unknown_param = kserve::ModelInferRequest {
        parameters: [(
            "colour".to_string(),
            kserve::InferParameter {
                parameter_choice: Some(kserve::infer_parameter::ParameterChoice::StringParam("red".into())),
            },
        )]
        .into(),
        ..infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP32", one.clone())])
    };
    let mismatched_raw = kserve::ModelInferRequest {
        raw_input_contents: vec![Bytes::from(vec![0u8; 100])],
        ..infer_request("cls", vec![InferInputTensor { contents: None, ..fp32(vec![1, 3, 64, 64], "FP32", vec![]) }])
    };
    let infer_cases: Vec<(&str, kserve::ModelInferRequest, Code)> = vec![
        (
            "wrong shape",
            infer_request("cls", vec![fp32(vec![1, 3, 32, 32], "FP32", vec![0.0; 3 * 32 * 32])]),
            Code::InvalidArgument,
        ),
        (
            "wrong datatype",
            infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP64", one.clone())]),
            Code::InvalidArgument,
        ),
        (
            "count mismatch",
            infer_request("cls", vec![fp32(vec![2, 3, 64, 64], "FP32", one.clone())]),
            Code::InvalidArgument,
        ),
        (
            "negative dimension",
            infer_request("cls", vec![fp32(vec![-1, 3, 64, 64], "FP32", one.clone())]),
            Code::InvalidArgument,
        ),
        ("no inputs", infer_request("cls", vec![]), Code::InvalidArgument),
        ("unknown parameter", unknown_param, Code::InvalidArgument),
        ("raw contents of the wrong size", mismatched_raw, Code::InvalidArgument),
        ("unknown model", infer_request("nope", vec![fp32(vec![1, 3, 64, 64], "FP32", one.clone())]), Code::NotFound),
        (
            "unknown version",
            kserve::ModelInferRequest {
                model_version: "9".into(),
                ..infer_request("cls", vec![fp32(vec![1, 3, 64, 64], "FP32", one.clone())])
            },
            Code::NotFound,
        ),
    ];
    for (name, request, want) in infer_cases {
        check(name, v2.model_infer(request).await.map(|_| ()), want);
    }
    // A message over --max-body-bytes is refused by the transport itself, before any handler:
    // tonic reports OUT_OF_RANGE for an oversized message.
    let huge = image_request("cls", vec![vec![7u8; MAX_BODY + 50_000]]);
    check("message over --max-body-bytes", api.classify(huge).await.map(|_| ()), Code::OutOfRange);
    assert!(failures.is_empty(), "{} bad gRPC requests were mishandled:\n{}", failures.len(), failures.join("\n"));

    assert!(v2.server_ready(kserve::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ok = api.classify(image_request("cls", vec![png])).await.expect("a good request after the bad ones");
    assert_eq!(ok.into_inner().results.len(), 1);
    assert!(!server.output().contains("panicked"), "the server panicked:\n{}", server.output());
}

//! Deadlines: a request whose timeout (REST `timeout`, v2 `timeout` parameter, gRPC deadline or
//! `timeout_ms`) passes while it waits in the queue gets 504 / DEADLINE_EXCEEDED and is dropped
//! before compute.

use std::time::Duration;

use bytes::Bytes;
use csp_e2e::fixtures::{fixtures, random_values, INPUT_ELEMENTS};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::pb::inference as kserve;
use csp_e2e::rest::{self, api_error, client, ok_json};
use csp_e2e::{images, metrics, ServerBuilder};
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

/// A lone request waits this long for its batch to fill: far past every timeout below.
const QUEUE_DELAY_MS: &str = "1500";

fn tensor_request(timeout_us: Option<u64>) -> serde_json::Value {
    let mut body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64],
                                      "data": random_values(INPUT_ELEMENTS, 1)}]});
    if let Some(us) = timeout_us {
        body["parameters"] = json!({"timeout": us});
    }
    body
}

fn infer_message() -> kserve::ModelInferRequest {
    kserve::ModelInferRequest {
        model_name: "cls".into(),
        inputs: vec![kserve::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3, 64, 64],
            parameters: Default::default(),
            contents: Some(kserve::InferTensorContents {
                fp32_contents: random_values(INPUT_ELEMENTS, 2),
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_requests_get_504_or_deadline_exceeded_and_never_run() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", QUEUE_DELAY_MS])
        .start();
    let http = client();
    let png = images::png(48, 48, 1);

    let response = rest::classify_raw(&http, &server, "cls", png.clone(), "?timeout=200").await;
    let error = api_error(response).await;
    assert_eq!(
        (error.status, error.kind.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        "{}",
        error.message
    );

    // v2 `timeout` is in microseconds, as Triton's.
    let response =
        http.post(server.url("/v2/models/cls/infer")).json(&tensor_request(Some(200_000))).send().await.unwrap();
    let error = api_error(response).await;
    assert_eq!((error.status, error.kind.as_str()), (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"));

    let mut api = server.csp().await;
    let request = csp::ClassifyRequest {
        model: "cls".into(),
        images: vec![Bytes::from(png.clone())],
        timeout_ms: Some(200),
        ..Default::default()
    };
    assert_eq!(api.classify(request).await.unwrap_err().code(), Code::DeadlineExceeded);

    let mut v2 = server.kserve().await;
    let mut with_timeout_parameter = infer_message();
    with_timeout_parameter.parameters.insert(
        "timeout".into(),
        kserve::InferParameter {
            parameter_choice: Some(kserve::infer_parameter::ParameterChoice::Int64Param(200_000)),
        },
    );
    assert_eq!(v2.model_infer(with_timeout_parameter).await.unwrap_err().code(), Code::DeadlineExceeded);

    // None of them reached the model.
    let text = rest::metrics(&http, &server).await;
    assert_eq!(
        metrics::sample_or_zero(&text, "csp_batch_size_count", &[("model", "cls")]),
        0.0,
        "expired work was computed"
    );
    let expired = metrics::sum(&text, "csp_requests_total", &[("model", "cls"), ("status", "deadline_exceeded")]);
    assert_eq!(expired, 4.0, "deadline_exceeded requests counted\n{text}");

    // A timeout longer than the wait is met, and a request without one still runs.
    let body = ok_json(rest::classify_raw(&http, &server, "cls", png.clone(), "?timeout=20000").await).await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(1));
    let response = http.post(server.url("/v2/models/cls/infer")).json(&tensor_request(None)).send().await.unwrap();
    ok_json(response).await;
    let mut request = infer_message();
    request.parameters.insert(
        "timeout".into(),
        kserve::InferParameter {
            parameter_choice: Some(kserve::infer_parameter::ParameterChoice::Int64Param(20_000_000)),
        },
    );
    v2.model_infer(request).await.expect("a generous v2 timeout is met");
    rest::assert_healthy(&http, &server, "cls").await;
}

/// The RPC's own deadline (the `grpc-timeout` header every gRPC client sends for a deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_deadline_gives_deadline_exceeded() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", QUEUE_DELAY_MS])
        .start();
    let png = images::png(48, 48, 1);
    let mut v2 = server.kserve().await;
    let mut api = server.csp().await;
    let mut request = tonic::Request::new(infer_message());
    request.set_timeout(Duration::from_millis(200));
    let status = v2.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "gRPC deadline: {status:?}");
    let mut request = tonic::Request::new(csp::ClassifyRequest {
        model: "cls".into(),
        images: vec![Bytes::from(png.clone())],
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(200));
    let status = api.classify(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "gRPC deadline: {status:?}");

    let http = client();
    let text = rest::metrics(&http, &server).await;
    assert_eq!(
        metrics::sample_or_zero(&text, "csp_batch_size_count", &[("model", "cls")]),
        0.0,
        "expired work was computed"
    );
    let mut request = tonic::Request::new(infer_message());
    request.set_timeout(Duration::from_secs(30));
    v2.model_infer(request).await.expect("a generous gRPC deadline is met");
}

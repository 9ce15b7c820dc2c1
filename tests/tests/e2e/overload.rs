//! Overload: a full queue rejects at once (429 / RESOURCE_EXHAUSTED), and every request it
//! accepted comes back complete and correct.

use base64::Engine;
use bytes::Bytes;
use csp_e2e::fixtures::fixtures;
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::rest::{self, api_error, client, ok_json, scores, scores_diff};
use csp_e2e::{images, metrics, ServerBuilder};
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

/// Four queue slots, batches of up to eight that wait 1.5 s to fill: the first four requests
/// occupy the queue for 1.5 s, and everything sent meanwhile finds it full.
const QUEUE_SIZE: usize = 4;
const CONCURRENT: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_rejects_and_loses_nothing_accepted() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", "1500"])
        .args(["--max-queue-size", &QUEUE_SIZE.to_string()])
        .start();
    let http = client();
    let pictures: Vec<Vec<u8>> = (0..QUEUE_SIZE as u32).map(|i| images::png(60 + i, 50, 20 + i)).collect();
    let b64 = base64::engine::general_purpose::STANDARD;

    // References: the four images in one request (it fills the queue exactly).
    let body = json!({"images": pictures.iter().map(|p| b64.encode(p)).collect::<Vec<_>>(), "top_k": 10});
    let reference = ok_json(http.post(server.url("/v1/models/cls/classify")).json(&body).send().await.unwrap()).await;
    let expected: Vec<_> = reference["results"].as_array().unwrap().iter().map(scores).collect();

    // REST flood.
    let requests = (0..CONCURRENT)
        .map(|i| rest::classify_raw(&http, &server, "cls", pictures[i % QUEUE_SIZE].clone(), "?top_k=10"));
    let responses = futures::future::join_all(requests).await;
    let (mut accepted, mut rejected) = (0, 0);
    for (i, response) in responses.into_iter().enumerate() {
        match response.status() {
            StatusCode::OK => {
                let body = ok_json(response).await;
                let result = &body["results"][0];
                assert_eq!(result["width"], 60 + (i % QUEUE_SIZE), "request {i} got another image's answer");
                let diff = scores_diff(&scores(result), &expected[i % QUEUE_SIZE]);
                assert!(diff < 1e-5, "request {i}: accepted result is wrong by {diff}");
                accepted += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let error = api_error(response).await;
                assert_eq!(error.kind, "overloaded", "{}", error.message);
                rejected += 1;
            }
            other => panic!("request {i}: status {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    assert!(rejected >= 1, "{CONCURRENT} requests against {QUEUE_SIZE} queue slots: none rejected");
    assert!(accepted >= 1, "every request was rejected");
    let text = rest::metrics(&http, &server).await;
    let ok = metrics::sample_or_zero(
        &text,
        "csp_requests_total",
        &[("model", "cls"), ("endpoint", "classify"), ("status", "ok")],
    );
    assert_eq!(ok, (accepted + 1) as f64, "accepted requests must all be answered (plus the reference)");
    let full = metrics::sample_or_zero(&text, "csp_rejections_total", &[("model", "cls"), ("reason", "queue_full")]);
    assert_eq!(full, rejected as f64, "{text}");
    let overloaded = metrics::sum(&text, "csp_requests_total", &[("model", "cls"), ("status", "overloaded")]);
    assert_eq!(overloaded, rejected as f64);

    // gRPC flood.
    let api = server.csp().await;
    let calls = (0..CONCURRENT).map(|i| {
        let mut api = api.clone();
        let request = csp::ClassifyRequest {
            model: "cls".into(),
            images: vec![Bytes::from(pictures[i % QUEUE_SIZE].clone())],
            top_k: Some(10),
            ..Default::default()
        };
        async move { api.classify(request).await }
    });
    let (mut accepted, mut rejected) = (0, 0);
    for (i, result) in futures::future::join_all(calls).await.into_iter().enumerate() {
        match result {
            Ok(response) => {
                let response = response.into_inner();
                let image = &response.results[0];
                assert_eq!(image.width as usize, 60 + i % QUEUE_SIZE, "request {i} got another image's answer");
                for class in &image.classes {
                    let want = expected[i % QUEUE_SIZE][&u64::from(class.index)];
                    assert!((class.score - want).abs() < 1e-5, "request {i}: accepted result is wrong");
                }
                accepted += 1;
            }
            Err(status) if status.code() == Code::ResourceExhausted => rejected += 1,
            Err(status) => panic!("request {i}: {status:?}"),
        }
    }
    assert!(rejected >= 1 && accepted >= 1, "gRPC: {accepted} accepted, {rejected} rejected");

    rest::assert_healthy(&http, &server, "cls").await;
}

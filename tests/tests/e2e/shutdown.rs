//! Graceful shutdown: on SIGTERM readiness turns false and new work is refused, while queued
//! requests still complete; then the process exits 0 within the grace period.

use std::time::Duration;

use bytes::Bytes;
use csp_e2e::fixtures::fixtures;
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::pb::inference as kserve;
use csp_e2e::rest::{self, api_error, client};
use csp_e2e::{images, metrics, wait_until, ServerBuilder};
use reqwest::StatusCode;
use tonic::Code;

/// Queued requests wait this long for their batch: the window in which the drain is observed.
const QUEUE_DELAY_MS: &str = "2500";
const GRACE_S: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_queued_requests_and_exits_zero() {
    let mut server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", QUEUE_DELAY_MS])
        .args(["--shutdown-grace", &GRACE_S.to_string()])
        .start();
    let http = client();

    // Three REST requests and one gRPC request, all waiting in the queue.
    let rest_calls: Vec<_> = (0..3u32)
        .map(|i| {
            let request = http
                .post(server.url("/v1/models/cls/classify"))
                .header("content-type", "image/png")
                .body(images::png(40 + i, 30, i));
            tokio::spawn(async move {
                let response = request.send().await.expect("in-flight REST request");
                (response.status(), response.text().await.unwrap_or_default())
            })
        })
        .collect();
    let mut api = server.csp().await;
    let grpc_call = {
        let mut api = api.clone();
        let request = csp::ClassifyRequest {
            model: "cls".into(),
            images: vec![Bytes::from(images::png(50, 30, 7))],
            ..Default::default()
        };
        tokio::spawn(async move { api.classify(request).await })
    };
    wait_until("4 requests to be queued", Duration::from_secs(20), || async {
        let text = rest::metrics(&http, &server).await;
        (metrics::sample_or_zero(&text, "csp_queue_depth", &[("model", "cls")]) == 4.0).then_some(())
    })
    .await;

    server.terminate();

    // Readiness goes false on both transports ...
    wait_until("readiness to turn false", Duration::from_secs(5), || async {
        let response = http.get(server.url("/v2/health/ready")).send().await.ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let mut v2 = server.kserve().await;
    assert!(!v2.server_ready(kserve::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    wait_until("gRPC health to report NOT_SERVING", Duration::from_secs(5), || {
        let mut health = health.clone();
        async move {
            let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?;
            let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
            (status.into_inner().status == not_serving).then_some(())
        }
    })
    .await;

    // ... new work is refused ...
    let refused = api_error(rest::classify_raw(&http, &server, "cls", images::png(30, 30, 9), "").await).await;
    assert_eq!(
        (refused.status, refused.kind.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{}",
        refused.message
    );
    let request = csp::ClassifyRequest {
        model: "cls".into(),
        images: vec![Bytes::from(images::png(30, 30, 9))],
        ..Default::default()
    };
    assert_eq!(api.classify(request).await.unwrap_err().code(), Code::Unavailable);

    // ... and the queued requests complete.
    for (i, call) in rest_calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "queued request {i} was not drained: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["results"][0]["width"], 40 + i, "{body}");
    }
    let drained = grpc_call.await.unwrap().expect("queued gRPC request drained");
    assert_eq!(drained.into_inner().results[0].width, 50);

    let status = server.wait_exit(Duration::from_secs(GRACE_S + 15)).await;
    assert!(status.success(), "csp-server exited with {status}:\n{}", server.output());
    assert!(!server.output().contains("grace period over"), "the drain overran the grace period:\n{}", server.output());
}

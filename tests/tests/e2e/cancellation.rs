//! Client cancellation: requests whose client went away while they waited are skipped (never
//! computed), nothing leaks, and the server keeps serving.

use std::time::Duration;

use bytes::Bytes;
use csp_e2e::fixtures::fixtures;
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::rest::{self, client, ok_json};
use csp_e2e::{images, metrics, wait_until, ServerBuilder};

const QUEUE_DELAY: Duration = Duration::from_millis(1000);
const ABANDONED: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_are_skipped_and_the_server_keeps_serving() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", &QUEUE_DELAY.as_millis().to_string()])
        .start();
    let http = client();

    // REST clients that give up after 150 ms, while their requests wait for a batch.
    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(150)).build().unwrap();
    let requests = (0..ABANDONED).map(|i| {
        impatient
            .post(server.url("/v1/models/cls/classify"))
            .header("content-type", "image/png")
            .body(images::png(40, 40, i))
            .send()
    });
    for result in futures::future::join_all(requests).await {
        let error = result.expect_err("the client must time out first");
        assert!(error.is_timeout(), "{error}");
    }

    // gRPC calls dropped mid-flight (the client resets the stream).
    let api = server.csp().await;
    let calls = (0..ABANDONED).map(|i| {
        let mut api = api.clone();
        let request = csp::ClassifyRequest {
            model: "cls".into(),
            images: vec![Bytes::from(images::png(40, 40, i))],
            ..Default::default()
        };
        async move { tokio::time::timeout(Duration::from_millis(150), api.classify(request)).await }
    });
    for call in futures::future::join_all(calls).await {
        assert!(call.is_err(), "the call must still be waiting when dropped");
    }

    // Every abandoned request leaves: nothing in flight, nothing queued ...
    let cls = [("model", "cls")];
    wait_until("abandoned requests to leave", Duration::from_secs(10), || async {
        let text = rest::metrics(&http, &server).await;
        let in_flight = metrics::sample_or_zero(&text, "csp_in_flight_requests", &cls);
        let queued = metrics::sample_or_zero(&text, "csp_queue_depth", &cls);
        (in_flight == 0.0 && queued == 0.0).then_some(())
    })
    .await;
    // ... and, once their batch would have run, none of them was computed.
    tokio::time::sleep(QUEUE_DELAY + Duration::from_millis(300)).await;
    let text = rest::metrics(&http, &server).await;
    assert_eq!(
        metrics::sample_or_zero(&text, "csp_batch_size_count", &cls),
        0.0,
        "abandoned requests were computed\n{text}"
    );

    // The server still serves, over both transports.
    rest::assert_healthy(&http, &server, "cls").await;
    let mut api = api.clone();
    let request = csp::ClassifyRequest {
        model: "cls".into(),
        images: vec![Bytes::from(images::png(40, 40, 0))],
        ..Default::default()
    };
    assert_eq!(api.classify(request).await.unwrap().into_inner().results.len(), 1);
    let body = ok_json(rest::classify_raw(&http, &server, "cls", images::png(30, 30, 1), "").await).await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(1));
}

//! `stream`: images sent on one bidirectional gRPC stream with several in flight; answers come
//! back in request order, each one the image's own (equal to a unary request for it), and a bad
//! image fails alone.

use csp_client::app::{self, StreamArgs};
use csp_client::images::ImageFile;
use csp_client::{Params, Protocol, Task};
use csp_e2e::fixtures::fixtures;
use csp_e2e::ServerBuilder;

use crate::client_support::{connection, pngs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_answers_in_order_with_per_image_latency() {
    // A batching delay lets several streamed requests meet in one batch, finishing together.
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "4", "--max-queue-delay-ms", "20"])
        .start();
    let conn = connection(&server);
    let mut images = pngs(10);
    images[6] = ImageFile { name: "broken.png".into(), bytes: bytes::Bytes::from_static(b"\x89PNG broken") };
    let params = Params { top_k: Some(2), ..Params::default() };
    let args = StreamArgs {
        task: Task::Classify,
        model: "cls".into(),
        images: images.clone(),
        params: params.clone(),
        window: 4,
        json: true,
    };
    let mut out = Vec::new();
    let failed = app::stream(&conn, &args, &mut out).await.unwrap();
    assert_eq!(failed, 1);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    let unary = conn.target(Protocol::Grpc, Task::Classify).await.unwrap();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i, "answers out of order: {lines:?}");
        assert_eq!(line["image"], images[i].name.as_str());
        if i == 6 {
            assert!(line["error"].as_str().unwrap().contains("image"), "{line}");
            continue;
        }
        assert!(line["latency_ms"].as_f64().unwrap() > 0.0, "{line}");
        let alone = unary.infer(Task::Classify, "cls", std::slice::from_ref(&images[i].bytes), &params).await.unwrap();
        let want = alone.value.results[0].classes.as_ref().unwrap();
        let got = line["classes"].as_array().unwrap();
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["index"], w.index, "image {i}: {line}");
            assert!((g["score"].as_f64().unwrap() as f32 - w.score).abs() < 1e-5, "image {i}: {line}");
        }
    }

    // Text output: one block per image, numbered in order; detection over the stream too.
    let args = StreamArgs {
        task: Task::Detect,
        model: "det".into(),
        images: pngs(5),
        params: Params { score_threshold: Some(0.0), max_detections: Some(2), ..Params::default() },
        window: 3,
        json: false,
    };
    let mut out = Vec::new();
    assert_eq!(app::stream(&conn, &args, &mut out).await.unwrap(), 0);
    let text = String::from_utf8(out).unwrap();
    let heads: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(heads.len(), 5, "{text}");
    for (i, head) in heads.iter().enumerate() {
        assert!(head.starts_with(&format!("[{i}] img-{i}.png ")) && head.contains(" ms"), "{text}");
    }
}

//! Dynamic batching: concurrent requests are served in batches larger than one, and an image's
//! result does not depend on what it was batched with.

use bytes::Bytes;
use csp_e2e::fixtures::{fixtures, random_values, CLASSES, INPUT_ELEMENTS};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::rest::{self, client, ok_json, scores, scores_diff};
use csp_e2e::{images, max_abs_diff, metrics, ServerBuilder};
use serde_json::json;

/// Long enough that requests sent together on a busy machine still meet in one batch.
const QUEUE_DELAY_MS: &str = "200";
const IMAGES: u32 = 8;

fn batch_counts(text: &str) -> (f64, f64, f64) {
    let cls = [("model", "cls")];
    let batches = metrics::sample_or_zero(text, "csp_batch_size_count", &cls);
    let singles = metrics::sample_or_zero(text, "csp_batch_size_bucket", &[("model", "cls"), ("le", "1")]);
    let images = metrics::sample_or_zero(text, "csp_batch_size_sum", &cls);
    (batches, singles, images)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_match_single_results() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "8", "--max-queue-delay-ms", QUEUE_DELAY_MS])
        .start();
    let http = client();
    let pictures: Vec<Vec<u8>> = (0..IMAGES).map(|i| images::png(64 + 4 * i, 64, i)).collect();

    // Each image alone: every batch holds one image.
    let mut alone = Vec::new();
    for picture in &pictures {
        let body = ok_json(rest::classify_raw(&http, &server, "cls", picture.clone(), "?top_k=10").await).await;
        alone.push(scores(&body["results"][0]));
    }
    let (batches, singles, images_run) = batch_counts(&rest::metrics(&http, &server).await);
    assert_eq!((batches, singles, images_run), (IMAGES as f64, IMAGES as f64, IMAGES as f64));

    // All at once over REST.
    let requests = pictures.iter().map(|p| rest::classify_raw(&http, &server, "cls", p.clone(), "?top_k=10"));
    let responses = futures::future::join_all(requests).await;
    for (i, response) in responses.into_iter().enumerate() {
        let body = ok_json(response).await;
        let diff = scores_diff(&scores(&body["results"][0]), &alone[i]);
        assert!(diff < 1e-5, "image {i}: batched result differs from its single result by {diff}");
    }
    let (after, after_singles, after_images) = batch_counts(&rest::metrics(&http, &server).await);
    assert_eq!(after_images - images_run, IMAGES as f64, "every image ran exactly once");
    let multi = (after - batches) - (after_singles - singles);
    assert!(multi >= 1.0, "no batch of more than one image among {} batches", after - batches);
    assert!(after - batches < IMAGES as f64, "{IMAGES} concurrent requests ran in {} batches", after - batches);

    // All at once over gRPC: the same results.
    let api = server.csp().await;
    let calls = pictures.iter().map(|p| {
        let mut api = api.clone();
        let request = csp::ClassifyRequest {
            model: "cls".into(),
            images: vec![Bytes::from(p.clone())],
            top_k: Some(10),
            ..Default::default()
        };
        async move { api.classify(request).await }
    });
    for (i, result) in futures::future::join_all(calls).await.into_iter().enumerate() {
        let result = result.unwrap().into_inner();
        assert_eq!(result.results[0].classes.len(), CLASSES);
        for class in &result.results[0].classes {
            let single = alone[i][&u64::from(class.index)];
            assert!(
                (class.score - single).abs() < 1e-5,
                "image {i}, class {}: {} vs {single}",
                class.index,
                class.score
            );
        }
    }
    let (last, last_singles, _) = batch_counts(&rest::metrics(&http, &server).await);
    assert!((last - after) - (last_singles - after_singles) >= 1.0, "gRPC requests were never batched");
}

/// Raw tensors: each row of a batch of four equals the same input run alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_tensor_rows_equal_single_runs() {
    let server = ServerBuilder::new()
        .config(&fixtures().standard_config)
        .args(["--max-batch-size", "4", "--max-queue-delay-ms", "0"])
        .start();
    let http = client();
    let rows: Vec<Vec<f32>> = (0..4).map(|i| random_values(INPUT_ELEMENTS, 100 + i)).collect();
    let infer = |model: &str, n: usize, data: Vec<f32>| {
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, 64, 64], "data": data}]});
        http.post(server.url(&format!("/v2/models/{model}/infer"))).json(&body).send()
    };
    for model in ["cls", "det"] {
        let mut singles: Vec<Vec<Vec<f32>>> = Vec::new();
        for row in &rows {
            let body = ok_json(infer(model, 1, row.clone()).await.unwrap()).await;
            let outs = body["outputs"].as_array().unwrap();
            singles.push(
                outs.iter()
                    .map(|o| o["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
                    .collect(),
            );
        }
        let before = batch_counts_for(&rest::metrics(&http, &server).await, model);
        let body = ok_json(infer(model, 4, rows.concat()).await.unwrap()).await;
        let after = batch_counts_for(&rest::metrics(&http, &server).await, model);
        assert_eq!(after.0 - before.0, 1.0, "{model}: a 4-image request must run as one batch");
        for (k, out) in body["outputs"].as_array().unwrap().iter().enumerate() {
            let data: Vec<f32> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let per_row = data.len() / 4;
            for (i, single) in singles.iter().enumerate() {
                let diff = max_abs_diff(&data[i * per_row..(i + 1) * per_row], &single[k]);
                assert!(diff < 1e-5, "{model} output {k} row {i}: batch vs single differ by {diff}");
            }
        }
    }
}

fn batch_counts_for(text: &str, model: &str) -> (f64, f64) {
    let labels = [("model", model)];
    (
        metrics::sample_or_zero(text, "csp_batch_size_count", &labels),
        metrics::sample_or_zero(text, "csp_batch_size_sum", &labels),
    )
}

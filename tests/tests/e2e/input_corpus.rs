//! The input corpus: unusual but valid images must be served as users expect, and malformed or
//! hostile requests must get the documented 4xx with a clear message. Both run against the bundled
//! default models (a shapes detector and classifier), so answers mean something; after every single
//! case the server must still be ready and classify a picture correctly.
//!
//! Files live in tests/fixtures/corpus/ (written once by scripts/gen_corpus.py, committed; CI never
//! runs Python). The request-level cases (parameters, routes, JSON and tensor shapes) are built here.

mod hostile;
mod valid;

use std::time::Duration;

use csp_e2e::rest::{ok_json, scores};
use csp_e2e::{Server, ServerBuilder};
use reqwest::{Client, StatusCode};
use serde_json::Value;

pub const CLASSIFIER: &str = "shapes-classifier";
pub const DETECTOR: &str = "shapes-detector";
pub const MAX_BODY: usize = 300_000;
pub const MAX_IMAGES: usize = 4;
pub const MAX_PIXELS: u64 = 1_000_000;
/// No single case may take longer than this (a hang is a failure, not a stuck test run).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default models with tight, known limits.
fn corpus_server() -> Server {
    ServerBuilder::new()
        .args(["--max-body-bytes", &MAX_BODY.to_string()])
        .args(["--max-images-per-request", &MAX_IMAGES.to_string()])
        .args(["--max-image-pixels", &MAX_PIXELS.to_string()])
        .start()
}

/// A fresh connection per request: a case that leaves its connection closing (an error sent before
/// the body was read) must not fail the next case's request on that connection.
fn client() -> Client {
    Client::builder().no_proxy().timeout(REQUEST_TIMEOUT).pool_max_idle_per_host(0).build().expect("HTTP client")
}

/// A committed corpus file.
pub fn corpus(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("corpus file {}: {e}", path.display()))
}

/// `POST /v1/models/{model}/{task}{query}` with one raw body.
pub async fn post_raw(
    http: &Client,
    server: &Server,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    http.post(server.url(path)).header("content-type", content_type).body(body).send().await
}

/// The check after every case: ready, and the reference cross is still classified as a cross.
/// Returns what went wrong instead of panicking, so one table run lists every failure.
pub async fn still_serving(http: &Client, server: &Server) -> Result<(), String> {
    let ready = http.get(server.url("/v2/health/ready")).send().await.map_err(|e| format!("GET ready: {e:?}"))?;
    if ready.status() != StatusCode::OK {
        return Err(format!("not ready afterwards ({})", ready.status()));
    }
    let response = post_raw(http, server, &format!("/v1/models/{CLASSIFIER}/classify"), "image/png", corpus("cls.png"))
        .await
        .map_err(|e| format!("valid request afterwards failed: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("valid request afterwards got {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| format!("valid request afterwards: {e}"))?;
    match top_class(&body["results"][0]) {
        Some((_, label)) if label == "cross" => Ok(()),
        other => Err(format!("valid request afterwards classified the cross as {other:?}")),
    }
}

/// (index, label) of the best class of one classification result.
pub fn top_class(result: &Value) -> Option<(u64, String)> {
    let best = result["classes"].as_array()?.first()?;
    Some((best["index"].as_u64()?, best["label"].as_str()?.to_owned()))
}

/// After a table: nothing answered 500, nothing panicked.
async fn assert_no_internal_errors(http: &Client, server: &Server) {
    let text = csp_e2e::rest::metrics(http, server).await;
    assert_eq!(csp_e2e::metrics::sum(&text, "csp_requests_total", &[("status", "internal")]), 0.0, "{text}");
    assert!(!server.output().contains("panicked"), "the server panicked:\n{}", server.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_valid_images_get_the_answer_of_the_same_upright_rgb_pixels() {
    let server = corpus_server();
    let http = client();
    // The animation case is only meaningful if its two frames get different answers.
    let cross = classify(&http, &server, corpus("cls.png")).await;
    let triangle = classify(&http, &server, corpus("cls2.jpg")).await;
    assert_eq!(top_class(&cross).map(|c| c.1).as_deref(), Some("cross"), "{cross}");
    assert_ne!(top_class(&cross), top_class(&triangle), "the animation's two frames must differ: {triangle}");

    let cases = valid::cases();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = valid::check(&http, &server, case).await {
            failures.push(format!("{}: {e}", case.file));
        }
        if let Err(e) = still_serving(&http, &server).await {
            failures.push(format!("{}: {e}", case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid images mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_no_internal_errors(&http, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_requests_get_clear_4xx_errors() {
    let server = corpus_server();
    let http = client();
    let cases = hostile::cases(&http, &server);
    let count = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        if let Err(e) = hostile::check(case.request, &case.expect).await {
            failures.push(format!("{}: {e}", case.name));
        }
        if let Err(e) = still_serving(&http, &server).await {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of {count} bad requests mishandled:\n{}", failures.len(), failures.join("\n"));
    assert_no_internal_errors(&http, &server).await;
}

/// All class scores of one image (`top_k` = every class of the six).
pub async fn classify(http: &Client, server: &Server, image: Vec<u8>) -> Value {
    let path = format!("/v1/models/{CLASSIFIER}/classify?top_k=6");
    let response = post_raw(http, server, &path, "application/octet-stream", image).await.expect("classify");
    ok_json(response).await["results"][0].clone()
}

/// Class index -> score, for comparing two classification results.
pub fn class_scores(result: &Value) -> std::collections::BTreeMap<u64, f32> {
    scores(result)
}

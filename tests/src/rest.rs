//! REST helpers: a loopback client, JSON error bodies, result readers.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

use crate::Server;

/// A client that never goes through a proxy (everything here is on 127.0.0.1) and gives up
/// on a request after a minute.
pub fn client() -> Client {
    Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("HTTP client")
}

/// An error response as the API promises it: a status, and a JSON body with `error` and `kind`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: String,
    pub message: String,
}

/// Reads an error response, asserting its body is `{"error": "<message>", "kind": "<kind>"}`.
pub async fn api_error(response: Response) -> ApiError {
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = response.text().await.expect("error body");
    assert!(content_type.starts_with("application/json"), "{status}: error body is `{content_type}`, not JSON: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: error body is not JSON ({e}): {text}"));
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{status}: no `error` string in {body}"));
    let kind = body["kind"].as_str().unwrap_or_else(|| panic!("{status}: no `kind` string in {body}"));
    assert!(!message.is_empty(), "{status}: empty error message");
    ApiError { status, kind: kind.to_owned(), message: message.to_owned() }
}

/// `GET url` -> (status, JSON body).
pub async fn get_json(client: &Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url} ({status}): not JSON ({e}): {text}"));
    (status, body)
}

/// Reads a successful JSON response, panicking with the body on any other status.
pub async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "unexpected status, body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
}

/// `POST /v1/models/{model}/classify` with one raw image body.
pub async fn classify_raw(client: &Client, server: &Server, model: &str, image: Vec<u8>, query: &str) -> Response {
    client
        .post(server.url(&format!("/v1/models/{model}/classify{query}")))
        .header("content-type", "image/png")
        .body(image)
        .send()
        .await
        .expect("classify request")
}

/// Class index -> score of one classification result (`{"classes": [{"index", "score"}, ...]}`).
pub fn scores(result: &Value) -> BTreeMap<u64, f32> {
    result["classes"]
        .as_array()
        .unwrap_or_else(|| panic!("no `classes` in {result}"))
        .iter()
        .map(|c| (c["index"].as_u64().expect("class index"), c["score"].as_f64().expect("class score") as f32))
        .collect()
}

/// Largest score difference between two results over the same classes.
pub fn scores_diff(a: &BTreeMap<u64, f32>, b: &BTreeMap<u64, f32>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "different classes reported");
    a.iter().map(|(k, v)| (v - b[k]).abs()).fold(0.0, f32::max)
}

/// The server's `/metrics` text.
pub async fn metrics(client: &Client, server: &Server) -> String {
    let response = client.get(server.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("metrics body")
}

/// Asserts the server is ready and still answers a classification correctly shaped.
pub async fn assert_healthy(client: &Client, server: &Server, model: &str) {
    let ready = client.get(server.url("/v2/health/ready")).send().await.expect("GET ready");
    assert_eq!(ready.status(), StatusCode::OK, "server not ready; output:\n{}", server.output());
    let image = crate::images::png(48, 40, 9);
    let body = ok_json(classify_raw(client, server, model, image, "?top_k=3").await).await;
    assert_eq!(body["results"][0]["classes"].as_array().map(Vec::len), Some(3), "{body}");
}

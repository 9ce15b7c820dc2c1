//! `--api-key`: inference needs `Authorization: Bearer <key>` (gRPC metadata `authorization`);
//! health, metadata, metrics and docs stay open.

use bytes::Bytes;
use csp_e2e::fixtures::{fixtures, random_values, INPUT_ELEMENTS};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::pb::inference as kserve;
use csp_e2e::rest::{api_error, client, ok_json};
use csp_e2e::{images, ServerBuilder};
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

const KEY: &str = "s3cret-key";

fn with_key<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_inference_only() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).args(["--api-key", KEY]).start();
    let http = client();
    let png = images::png(48, 48, 1);
    let classify =
        || http.post(server.url("/v1/models/cls/classify")).header("content-type", "image/png").body(png.clone());

    let missing = classify().send().await.unwrap();
    assert_eq!(missing.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    let missing = api_error(missing).await;
    assert_eq!((missing.status, missing.kind.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    for wrong in ["Bearer wrong", "Basic s3cret-key", "s3cret-key", &format!("Bearer {KEY}x")] {
        let response = classify().header("authorization", wrong).send().await.unwrap();
        assert_eq!(api_error(response).await.status, StatusCode::UNAUTHORIZED, "`{wrong}` was accepted");
    }
    let body = ok_json(classify().bearer_auth(KEY).send().await.unwrap()).await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(1));

    let infer = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64],
                                   "data": random_values(INPUT_ELEMENTS, 1)}]});
    let response = http.post(server.url("/v2/models/cls/infer")).json(&infer).send().await.unwrap();
    assert_eq!(api_error(response).await.status, StatusCode::UNAUTHORIZED);
    let response = http.post(server.url("/v2/models/cls/infer")).bearer_auth(KEY).json(&infer).send().await.unwrap();
    ok_json(response).await;
    let detect = http.post(server.url("/v1/models/det/detect")).header("content-type", "image/png").body(png.clone());
    assert_eq!(api_error(detect.send().await.unwrap()).await.status, StatusCode::UNAUTHORIZED);

    for open in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/cls",
        "/v2/models/cls/ready",
        "/v2/models/cls/config",
        "/v2/models/cls/stats",
        "/v1/models",
        "/metrics",
        "/openapi.json",
        "/docs",
    ] {
        let response = http.get(server.url(open)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{open} must not need the key");
    }

    // gRPC: the same rule with `authorization` metadata.
    let mut api = server.csp().await;
    let request =
        || csp::ClassifyRequest { model: "cls".into(), images: vec![Bytes::from(png.clone())], ..Default::default() };
    assert_eq!(api.classify(request()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(api.classify(with_key(request(), "Bearer nope")).await.unwrap_err().code(), Code::Unauthenticated);
    let ok = api.classify(with_key(request(), &format!("Bearer {KEY}"))).await.unwrap().into_inner();
    assert_eq!(ok.results.len(), 1);
    let stream = api.classify_stream(tokio_stream::iter(Vec::<csp::ClassifyStreamRequest>::new())).await;
    assert_eq!(stream.map(|_| ()).unwrap_err().code(), Code::Unauthenticated);
    api.list_models(csp::ListModelsRequest {}).await.expect("model listing stays open");
    api.get_model(csp::GetModelRequest { name: "cls".into() }).await.expect("model description stays open");

    let mut v2 = server.kserve().await;
    let infer = || kserve::ModelInferRequest {
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
    };
    assert_eq!(v2.model_infer(infer()).await.unwrap_err().code(), Code::Unauthenticated);
    v2.model_infer(with_key(infer(), &format!("Bearer {KEY}"))).await.expect("the key opens v2 inference");
    assert!(v2.server_live(kserve::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(v2.server_ready(kserve::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    v2.model_metadata(kserve::ModelMetadataRequest { name: "cls".into(), version: String::new() })
        .await
        .expect("metadata stays open");
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health stays open");
}

/// A refusal decided from the head alone leaves the body unread, so the server closes the HTTP/1
/// connection after it; the response says `Connection: close`, so a pooling client never sends its
/// next request on that connection. Alternating refused and accepted requests on one client all
/// get their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_announce_the_connection_close() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).args(["--api-key", KEY]).start();
    let http = client();
    let png = images::png(48, 48, 2);
    let classify =
        || http.post(server.url("/v1/models/cls/classify")).header("content-type", "image/png").body(png.clone());
    let connection = |r: &reqwest::Response| r.headers().get("connection").map(|v| v.to_str().unwrap().to_owned());

    let refused = classify().send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(connection(&refused).as_deref(), Some("close"), "401 before the body was read");
    let accepted = classify().bearer_auth(KEY).send().await.unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(connection(&accepted), None, "the body was read: the connection stays open");
    let no_body = http.get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(connection(&no_body), None);

    for i in 0..40 {
        let request = if i % 2 == 0 { classify() } else { classify().bearer_auth(KEY) };
        let response = request.send().await.unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        let want = if i % 2 == 0 { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        assert_eq!(response.status(), want, "request {i}");
        response.bytes().await.unwrap();
    }
}

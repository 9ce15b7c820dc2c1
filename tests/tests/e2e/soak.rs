//! Soak: many mixed requests against the bundled classifier; the server's resident memory must stay
//! flat. `CSP_SOAK_REQUESTS` sets the count (default [`DEFAULT_REQUESTS`]; the README's Reliability
//! section gives the 100k run, about 11 minutes on a busy 2-core machine).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use csp_e2e::load::{rss_kib, tensor_values, v2_grpc, v2_json};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::rest::{self, client, get_json};
use csp_e2e::{images, Server, ServerBuilder};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Enough for CI (about a minute here); memory growth shows well before it.
const DEFAULT_REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 8;
const MODEL: &str = "shapes-classifier";
/// End RSS may exceed the warmed-up RSS by this fraction plus [`RSS_SLACK_KIB`].
const RSS_GROWTH: f64 = 1.25;
const RSS_SLACK_KIB: u64 = 8 * 1024;

fn requests() -> usize {
    std::env::var("CSP_SOAK_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_REQUESTS)
}

/// Every kind of request the soak sends, built once and reused.
struct Payloads {
    pngs: Vec<Vec<u8>>,
    jpegs: Vec<Vec<u8>>,
    /// JSON `{"images": [base64...]}` bodies of 2 to 4 images.
    multi: Vec<Value>,
    tensor_json: Value,
    tensor: Vec<f32>,
    size: usize,
}

impl Payloads {
    fn new(size: usize) -> Self {
        let sizes = [(16, 16), (33, 20), (64, 64), (96, 72), (128, 128), (200, 150)];
        let pngs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &(w, h))| images::png(w, h, i as u32)).collect();
        let jpegs: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &(w, h))| images::jpeg(w, h, 10 + i as u32)).collect();
        let b64 = base64::engine::general_purpose::STANDARD;
        let multi = (2..=4)
            .map(|n| json!({"images": pngs.iter().take(n).map(|p| b64.encode(p)).collect::<Vec<_>>(), "top_k": 3}))
            .collect();
        let tensor = tensor_values(1, size, 7);
        Payloads { pngs, jpegs, multi, tensor_json: v2_json(&tensor, 1, size), tensor, size }
    }
}

type CspClient = csp::csp_service_client::CspServiceClient<tonic::transport::Channel>;
type KserveClient =
    csp_e2e::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>;

/// Request `i` of the mix; `Err` describes a failure.
async fn one(
    i: usize,
    http: &reqwest::Client,
    server_url: &str,
    api: &mut CspClient,
    v2: &mut KserveClient,
    p: &Payloads,
) -> Result<(), String> {
    let pick = i / 6;
    match i % 6 {
        0 | 1 => {
            let image = p.pngs[pick % p.pngs.len()].clone();
            let url = format!("{server_url}/v1/models/{MODEL}/classify?top_k=3");
            let r = http.post(url).header("content-type", "image/png").body(image).send().await;
            check_rest(r).await
        }
        2 => {
            let url = format!("{server_url}/v1/models/{MODEL}/classify");
            check_rest(http.post(url).json(&p.multi[pick % p.multi.len()]).send().await).await
        }
        3 => {
            let url = format!("{server_url}/v2/models/{MODEL}/infer");
            check_rest(http.post(url).json(&p.tensor_json).send().await).await
        }
        4 => {
            let n = 1 + pick % 3;
            let images = (0..n).map(|k| Bytes::from(p.jpegs[(pick + k) % p.jpegs.len()].clone())).collect();
            let request = csp::ClassifyRequest { model: MODEL.into(), images, top_k: Some(3), ..Default::default() };
            let answer = api.classify(request).await.map_err(|s| format!("gRPC classify: {s:?}"))?;
            (answer.into_inner().results.len() == n).then_some(()).ok_or_else(|| "gRPC: wrong result count".into())
        }
        _ => {
            let request = v2_grpc(MODEL, p.tensor.clone(), 1, p.size);
            v2.model_infer(request).await.map(|_| ()).map_err(|s| format!("gRPC infer: {s:?}"))
        }
    }
}

async fn check_rest(response: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    let response = response.map_err(|e| format!("REST: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("REST body: {e}"))?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("REST {status}: {}", String::from_utf8_lossy(&body)))
    }
}

/// Sends requests `from..to` of the mix with [`CONCURRENCY`] clients; returns the failures.
async fn run(server: &Server, payloads: &Arc<Payloads>, from: usize, to: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(from));
    let http = client();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (next, http, payloads, url) = (next.clone(), http.clone(), payloads.clone(), server.url(""));
        let (mut api, mut v2) = (server.csp().await, server.kserve().await);
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return failures;
                }
                let call = one(i, &http, &url, &mut api, &mut v2, &payloads);
                match tokio::time::timeout(Duration::from_secs(60), call).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("request {i}: {e}")),
                    Err(_) => failures.push(format!("request {i}: no answer in 60 s")),
                }
            }
        }));
    }
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.expect("soak worker"));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_many_mixed_requests() {
    let total = requests();
    let default_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    let config = csp_e2e::fixtures::fixtures().dir.join("soak.toml");
    let weights = default_dir.join(format!("{MODEL}.safetensors")).canonicalize().expect("bundled classifier");
    let labels = default_dir.join(format!("{MODEL}.labels.txt")).canonicalize().expect("bundled labels");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"{MODEL}\"\ntask = \"classify\"\nweights = {:?}\nlabels = {:?}\n",
            weights.display().to_string(),
            labels.display().to_string()
        ),
    )
    .unwrap();
    let server = ServerBuilder::new().config(&config).start();
    let (status, info) = get_json(&client(), &server.url(&format!("/v1/models/{MODEL}"))).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let size = info["input_size"][0].as_u64().expect("input size") as usize;
    assert_eq!(info["input_size"][1].as_u64(), Some(size as u64), "square input expected: {info}");
    let payloads = Arc::new(Payloads::new(size));

    let rss_start = rss_kib(server.pid());
    let warm_up = (total / 20).clamp(600, 5000).min(total);
    let started = Instant::now();
    let mut failures = run(&server, &payloads, 0, warm_up).await;
    let rss_warm = rss_kib(server.pid());
    failures.extend(run(&server, &payloads, warm_up, total).await);
    let elapsed = started.elapsed();
    let rss_end = rss_kib(server.pid());
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "soak: {total} requests ({CONCURRENCY} clients, REST + gRPC, images and tensors) in {elapsed:.1?} = \
         {rate:.0} req/s, {} failed; RSS start {rss_start} KiB, after {warm_up} warm-up {rss_warm} KiB, end {rss_end} KiB",
        failures.len()
    );
    assert!(failures.is_empty(), "{} failures, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    let limit = (rss_warm as f64 * RSS_GROWTH) as u64 + RSS_SLACK_KIB;
    assert!(rss_end <= limit, "RSS grew: {rss_warm} KiB after warm-up, {rss_end} KiB at the end (limit {limit})");
    let text = rest::metrics(&client(), &server).await;
    let ok = csp_e2e::load::requests_with_status(&text, MODEL, "ok");
    assert_eq!(ok, total as f64, "the server's count of answered requests disagrees");
}

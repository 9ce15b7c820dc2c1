//! Security guarantees of the real server (issue #11): request ids on both transports and in the
//! logs, CORS closed unless configured, connection and stream limits, no secret in the logs, and
//! model names that never reach the filesystem.

use std::time::Duration;

use csp_e2e::fixtures::fixtures;
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::rest::{api_error, client};
use csp_e2e::{wait_until, Server, ServerBuilder};
use reqwest::StatusCode;
use tonic::Code;

const REQUEST_ID: &str = "x-request-id";

fn standard() -> ServerBuilder {
    ServerBuilder::new().config(&fixtures().standard_config)
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// A generated id: a version-4 UUID.
fn assert_generated(id: &str) {
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "`{id}` is not a UUID");
    assert_eq!(id.as_bytes()[14], b'4', "`{id}` is not a version-4 UUID");
}

/// Waits until the server's log names `text` (log lines are written as the request finishes).
async fn wait_logged(server: &Server, text: &str) {
    let found = wait_until(&format!("`{text}` in the server log"), Duration::from_secs(10), || async {
        server.output().lines().any(|line| line.contains(text)).then_some(())
    })
    .await;
    found
}

fn with_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(REQUEST_ID, id.parse().expect("ASCII id"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated_and_logged() {
    let server = standard().start();
    let http = client();

    // REST: the client's id comes back; without one (or with an unusable one) the server makes one.
    let response = http.get(server.url("/v2/health/ready")).header(REQUEST_ID, "client-id-42").send().await.unwrap();
    assert_eq!(header(&response, REQUEST_ID).as_deref(), Some("client-id-42"));
    let mut generated = Vec::new();
    for sent in [None, Some("two words"), Some(&*"x".repeat(129))] {
        let mut request = http.get(server.url("/v1/models"));
        if let Some(id) = sent {
            request = request.header(REQUEST_ID, id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = header(&response, REQUEST_ID).unwrap_or_else(|| panic!("no {REQUEST_ID} for {sent:?}"));
        assert_generated(&id);
        generated.push(id);
    }
    generated.dedup();
    assert_eq!(generated.len(), 3, "generated ids repeat: {generated:?}");

    // An error carries the id on the response and in the server's log line for it.
    let response = http
        .post(server.url("/v1/models/no-such-model/classify"))
        .header(REQUEST_ID, "rest-error-7f3a")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, REQUEST_ID).as_deref(), Some("rest-error-7f3a"));
    assert_eq!(api_error(response).await.status, StatusCode::NOT_FOUND);
    wait_logged(&server, "rest-error-7f3a").await;
    let logged = server.output();
    let line = logged.lines().find(|l| l.contains("rest-error-7f3a")).expect("logged");
    assert!(line.contains("404") && line.contains("/v1/models/no-such-model/classify"), "log line: {line}");

    // gRPC: the same with metadata, on success and on error.
    let mut api = server.csp().await;
    let answer = api.list_models(with_id(csp::ListModelsRequest {}, "grpc-id-42")).await.unwrap();
    assert_eq!(answer.metadata().get(REQUEST_ID).and_then(|v| v.to_str().ok()), Some("grpc-id-42"));
    let answer = api.list_models(csp::ListModelsRequest {}).await.unwrap();
    let id = answer.metadata().get(REQUEST_ID).and_then(|v| v.to_str().ok()).expect("a generated gRPC id");
    assert_generated(id);
    let status = api
        .get_model(with_id(csp::GetModelRequest { name: "no-such-model".into() }, "grpc-error-9c1d"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.metadata().get(REQUEST_ID).and_then(|v| v.to_str().ok()), Some("grpc-error-9c1d"));
    wait_logged(&server, "grpc-error-9c1d").await;
}

/// A browser's CORS preflight for a POST with a JSON body and a key.
async fn preflight(server: &Server, origin: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, server.url("/v1/models/cls/classify"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_closed_unless_an_origin_is_listed() {
    const ALLOW: &str = "access-control-allow-origin";
    let closed = standard().start();
    let response = preflight(&closed, "https://evil.example").await;
    assert_eq!(header(&response, ALLOW), None, "CORS must be closed by default");
    let response =
        client().get(closed.url("/v1/models")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, ALLOW), None);

    let open = standard().env("CSP_CORS_ALLOW_ORIGIN", "https://app.example,http://localhost:3000").start();
    let response = preflight(&open, "https://evil.example").await;
    assert_eq!(header(&response, ALLOW), None, "an unlisted origin was allowed");
    let response = preflight(&open, "https://app.example").await;
    assert_eq!(header(&response, ALLOW).as_deref(), Some("https://app.example"));
    let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "allowed methods: {methods}");
    let headers = header(&response, "access-control-allow-headers").unwrap_or_default().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("content-type"), "allowed headers: {headers}");
    let response = client().get(open.url("/v1/models")).header("origin", "http://localhost:3000").send().await.unwrap();
    assert_eq!(header(&response, ALLOW).as_deref(), Some("http://localhost:3000"));
    let exposed = header(&response, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains(REQUEST_ID), "pages must be able to read the request id: {exposed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_reaches_the_log() {
    const KEY: &str = "k3y-that-must-not-be-logged-5d1e";
    const WRONG: &str = "wrong-k3y-also-unlogged-77aa";
    // Debug level: every request's line, and whatever the libraries log at that level.
    let mut server = standard().env("CSP_API_KEY", KEY).env("RUST_LOG", "debug").start();
    let http = client();
    let png = csp_e2e::images::png(32, 32, 3);
    for key in [KEY, WRONG] {
        let response = http
            .post(server.url("/v1/models/cls/classify"))
            .bearer_auth(key)
            .header("content-type", "image/png")
            .body(png.clone())
            .send()
            .await
            .unwrap();
        let want = if key == KEY { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
        assert_eq!(response.status(), want);
    }
    let mut api = server.csp().await;
    for key in [KEY, WRONG] {
        let images = vec![bytes::Bytes::from(png.clone())];
        let mut request =
            tonic::Request::new(csp::ClassifyRequest { model: "cls".into(), images, ..Default::default() });
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        let result = api.classify(request).await;
        assert_eq!(result.is_ok(), key == KEY, "{:?}", result.err());
    }
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).await.success());
    let log = server.output();
    assert!(log.contains("request refused"), "the refused requests were not logged:\n{log}");
    for secret in [KEY, WRONG] {
        assert!(!log.contains(secret), "`{secret}` is in the server's output:\n{log}");
    }
}

fn encode_path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_names_from_requests_never_reach_the_filesystem() {
    let server = standard().start();
    let http = client();
    // A real, loadable model file named by path must not be served: names are keys of the
    // configured models, nothing else.
    let model_file = fixtures().classifier.display().to_string();
    let names = [
        "../../../../../../etc/passwd".to_owned(),
        "..%2F..%2Fetc%2Fpasswd".to_owned(),
        model_file.clone(),
        "../classifier.safetensors".to_owned(),
        "./cls".to_owned(),
        "cls/../cls".to_owned(),
    ];
    let png = csp_e2e::images::png(32, 32, 5);
    for name in &names {
        let segment = encode_path_segment(name);
        for path in [
            format!("/v1/models/{segment}/classify"),
            format!("/v2/models/{segment}/infer"),
            format!("/v1/models/{segment}"),
            format!("/v2/models/{segment}/config"),
        ] {
            let request = if path.ends_with("classify") || path.ends_with("infer") {
                http.post(server.url(&path)).header("content-type", "image/png").body(png.clone())
            } else {
                http.get(server.url(&path))
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            let body = response.text().await.unwrap();
            assert!(!body.contains("root:"), "{path} answered with a file: {body}");
        }
    }
    // Encoded traversal straight in the URL, for a model route and the static-asset route.
    let raw = [
        (reqwest::Method::POST, "/v1/models/..%2F..%2F..%2Fetc%2Fpasswd/classify"),
        (reqwest::Method::GET, "/v2/models/..%2F..%2Fetc%2Fpasswd"),
        (reqwest::Method::GET, "/static/..%2F..%2FCargo.toml"),
        (reqwest::Method::GET, "/static/%2Fetc%2Fpasswd"),
    ];
    for (method, path) in raw {
        let response = http.request(method, server.url(path)).body("x").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("root:") && !body.contains("[package]"), "{path} answered with a file: {body}");
    }
    let mut api = server.csp().await;
    for name in &names {
        let images = vec![bytes::Bytes::from(png.clone())];
        let request = csp::ClassifyRequest { model: name.clone(), images, ..Default::default() };
        assert_eq!(api.classify(request).await.unwrap_err().code(), Code::NotFound, "{name}");
        let status = api.get_model(csp::GetModelRequest { name: name.clone() }).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{name}");
    }
    // The configured model still answers.
    let images = vec![bytes::Bytes::from(png)];
    api.classify(csp::ClassifyRequest { model: "cls".into(), images, ..Default::default() }).await.unwrap();
}

/// Whether the server closed `stream` without answering (EOF or reset) within a few seconds.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A request, so an open connection would answer rather than wait.
    let _ = stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection over the limit was neither served nor closed"),
    }
}

/// One HTTP/1.1 request on an open connection: the status line's code.
async fn status_on(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_open_ones_keep_working() {
    use tokio::net::TcpStream;
    let server = standard().args(["--max-connections", "2"]).start();

    // REST: two connections held open, the third is closed at once, the two still serve.
    let mut first = TcpStream::connect(server.http).await.unwrap();
    let mut second = TcpStream::connect(server.http).await.unwrap();
    assert_eq!(status_on(&mut first).await, "200");
    assert_eq!(status_on(&mut second).await, "200");
    let mut third = TcpStream::connect(server.http).await.unwrap();
    assert!(closed_by_server(&mut third).await, "a third connection was served with --max-connections 2");
    assert_eq!(status_on(&mut first).await, "200", "an open connection stopped working");
    // A closed connection frees its slot.
    drop(second);
    wait_until("a free slot after a connection closed", Duration::from_secs(10), || async {
        let mut stream = TcpStream::connect(server.http).await.ok()?;
        (status_on_or_closed(&mut stream).await.as_deref() == Some("200")).then_some(())
    })
    .await;

    // gRPC: the same limit on its own port.
    let held: Vec<TcpStream> =
        vec![TcpStream::connect(server.grpc).await.unwrap(), TcpStream::connect(server.grpc).await.unwrap()];
    // Let the server accept both before the next one comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    match refused {
        Err(_) => {}
        Ok(channel) => {
            let mut api = csp_e2e::pb::cspserve::v1::csp_service_client::CspServiceClient::new(channel);
            let result = api.list_models(csp::ListModelsRequest {}).await;
            assert!(result.is_err(), "a third gRPC connection was served with --max-connections 2");
        }
    }
    drop(held);
    wait_until("a gRPC call once the held connections closed", Duration::from_secs(10), || async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc)).ok()?.connect().await.ok()?;
        let mut api = csp_e2e::pb::cspserve::v1::csp_service_client::CspServiceClient::new(channel);
        api.list_models(csp::ListModelsRequest {}).await.ok().map(|_| ())
    })
    .await;
}

/// The status code of one request, or `None` when the server closed the connection.
async fn status_on_or_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.ok()?.ok()?;
    String::from_utf8_lossy(&buf[..n]).split_whitespace().nth(1).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grpc_calls_per_connection_are_capped() {
    // Calls wait in the queue for the whole delay (a batch of 16 never fills), so without the cap
    // all five would be in flight at once.
    let server = standard()
        .args(["--max-concurrent-streams", "2", "--max-batch-size", "16", "--max-queue-delay-ms", "1500"])
        .start();
    let mut api = server.csp().await; // one connection for all calls
                                      // One call first, so the client has the server's SETTINGS (the cap) before the burst: streams
                                      // opened before they arrive would be refused by the server (REFUSED_STREAM), not queued.
    api.list_models(csp::ListModelsRequest {}).await.unwrap();
    let png = csp_e2e::images::png(32, 32, 9);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut api = api.clone();
            let images = vec![bytes::Bytes::from(png.clone())];
            tokio::spawn(async move {
                api.classify(csp::ClassifyRequest { model: "cls".into(), images, ..Default::default() }).await
            })
        })
        .collect();
    let http = client();
    let mut most = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while calls.iter().any(|c| !c.is_finished()) {
        assert!(std::time::Instant::now() < deadline, "calls did not finish");
        let text = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let in_flight = csp_e2e::metrics::sample_or_zero(&text, "csp_in_flight_requests", &[("model", "cls")]);
        most = most.max(in_flight);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        if let Err(status) = call.await.unwrap() {
            panic!("a call was not answered: {status:?}");
        }
    }
    assert!(most <= 2.0, "{most} calls in flight on one connection with --max-concurrent-streams 2");
    assert_eq!(most, 2.0, "the calls never ran two at a time");
}

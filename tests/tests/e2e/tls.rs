//! TLS (issue #11): with `--tls-cert`/`--tls-key` both transports speak TLS on their usual ports
//! (REST over HTTP/1.1 or HTTP/2 by ALPN, gRPC over HTTP/2); `--tls-client-ca` adds mutual TLS.
//! Plain-text, untrusted, certificate-less and stalled clients are turned away without harm to
//! the server. The client library and the `csp-client` binary reach it with `--ca-cert`.

use std::path::Path;
use std::time::{Duration, Instant};

use csp_client::{Connection, Params, Protocol, Task, TlsOptions};
use csp_e2e::fixtures::fixtures;
use csp_e2e::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use csp_e2e::pb::inference::ServerReadyRequest;
use csp_e2e::tls::Pki;
use csp_e2e::{images, Server, ServerBuilder};
use reqwest::{Certificate, Client, Identity, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate as GrpcCertificate, ClientTlsConfig, Endpoint, Identity as GrpcIdentity};

use crate::client_support::{client_bin, temp_dir};

fn tls_server(pki: &Pki, client_ca: Option<&Path>) -> Server {
    let mut builder = ServerBuilder::new().config(&fixtures().standard_config).args([
        "--tls-cert".to_string(),
        pki.server_cert.display().to_string(),
        "--tls-key".to_string(),
        pki.server_key.display().to_string(),
    ]);
    if let Some(ca) = client_ca {
        builder = builder.args(["--tls-client-ca".to_string(), ca.display().to_string()]);
    }
    builder.start()
}

fn https(server: &Server, path: &str) -> String {
    format!("https://{}{path}", server.http)
}

fn pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read PEM")
}

/// A REST client trusting `ca` (and nothing else), with an optional client certificate.
fn rest_client(ca: &Path, identity: Option<(&Path, &Path)>) -> Client {
    let mut builder = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_pem(&pem(ca)).expect("CA"));
    if let Some((cert, key)) = identity {
        let mut both = pem(key);
        both.extend(pem(cert));
        builder = builder.identity(Identity::from_pem(&both).expect("identity"));
    }
    builder.build().expect("HTTPS client")
}

/// A gRPC readiness call over TLS trusting `ca`, with an optional client certificate.
async fn grpc_ready(server: &Server, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<bool, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(GrpcCertificate::from_pem(pem(ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(GrpcIdentity::from_pem(pem(cert), pem(key)));
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", server.grpc))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(|e| format!("{e:?}"))?;
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let response = GrpcInferenceServiceClient::new(channel)
        .server_ready(ServerReadyRequest {})
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.into_inner().ready)
}

/// What a failed request says, the whole error chain, lower-cased.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text.to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_serve_over_tls_and_turn_away_other_clients() {
    let pki = Pki::generate(&temp_dir("tls-server"));
    let server = tls_server(&pki, None);
    assert!(server.output().contains("TLS on"), "{}", server.output());
    let http = rest_client(&pki.ca, None);

    // REST over TLS: health, and a real classification of an uploaded image.
    let ready = http.get(https(&server, "/v2/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.version(), Version::HTTP_11, "reqwest here speaks HTTP/1.1 through ALPN");
    let response = http
        .post(https(&server, "/v1/models/cls/classify?top_k=3"))
        .header("content-type", "image/png")
        .body(images::png(64, 48, 7))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["classes"].as_array().map(Vec::len), Some(3), "{body}");

    // gRPC over TLS (HTTP/2 by ALPN).
    assert_eq!(grpc_ready(&server, &pki.ca, None).await, Ok(true));

    // The client library: REST, unary gRPC and the stream, with --ca-cert's trust.
    let tls = TlsOptions { ca_cert: Some(pki.ca.clone()), ..TlsOptions::default() };
    let conn = Connection::new(
        &https(&server, ""),
        &format!("https://{}", server.grpc),
        None,
        Duration::from_secs(60),
        false,
        &tls,
    )
    .unwrap();
    let image = [bytes::Bytes::from(images::png(40, 40, 3))];
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::GrpcStream] {
        let target = conn.target(protocol, Task::Classify).await.unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let answer = target.infer(Task::Classify, "cls", &image, &Params::default()).await;
        let answer = answer.unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(answer.value.results.len(), 1, "{protocol}");
    }

    // Plain text on the TLS port: no answer, only a closed connection.
    let plain = csp_e2e::rest::client().get(format!("http://{}/v2/health/ready", server.http)).send().await;
    assert!(plain.is_err(), "plain HTTP got an answer on the TLS port: {plain:?}");

    // A client that does not trust the server's CA refuses it.
    let stranger = rest_client(&pki.other_ca, None);
    let err = stranger.get(https(&server, "/v2/health/ready")).send().await.expect_err("untrusted server accepted");
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));
    assert!(grpc_ready(&server, &pki.other_ca, None).await.is_err());

    // A connection that never starts its handshake is closed after the handshake timeout (10 s),
    // so it cannot hold a connection slot for ever.
    let mut idle = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "stalled handshake not closed: {read:?}");
    assert!(started.elapsed() >= Duration::from_secs(9), "closed too early: {:?}", started.elapsed());
    // Garbage instead of a ClientHello is closed at once.
    let mut junk = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), junk.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "junk handshake left open: {read:?}");

    // After all that, the server is healthy on both transports.
    let ready = http.get(https(&server, "/v2/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(grpc_ready(&server, &pki.ca, None).await, Ok(true));

    // The csp-client binary: health over REST and gRPC with --ca-cert.
    for extra in [&[][..], &["--grpc"][..]] {
        let output = std::process::Command::new(client_bin())
            .args(["--url", &https(&server, ""), "--grpc-url", &format!("https://{}", server.grpc)])
            .args(["--ca-cert", &pki.ca.display().to_string()])
            .args(extra)
            .arg("health")
            .env_remove("CSP_CA_CERT")
            .output()
            .expect("run csp-client");
        let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "csp-client {extra:?} health failed:\n{out}\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = Pki::generate(&temp_dir("tls-mutual"));
    let server = tls_server(&pki, Some(&pki.ca));
    let ours = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let theirs = Some((pki.other_client_cert.as_path(), pki.other_client_key.as_path()));

    // With a certificate from the CA: served on both transports.
    let response = rest_client(&pki.ca, ours).get(https(&server, "/v2/health/ready")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(grpc_ready(&server, &pki.ca, ours).await, Ok(true));
    let tls = TlsOptions {
        ca_cert: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
    };
    let conn = Connection::new(&https(&server, ""), "https://127.0.0.1:1", None, Duration::from_secs(60), false, &tls)
        .unwrap();
    assert!(conn.rest.health().await.unwrap().ready);

    // Without a certificate, or with one from another CA: refused, on both transports.
    for identity in [None, theirs] {
        let result = rest_client(&pki.ca, identity).get(https(&server, "/v2/health/ready")).send().await;
        assert!(result.is_err(), "served a client without a certificate from the CA: {result:?}");
        assert!(grpc_ready(&server, &pki.ca, identity).await.is_err());
    }

    // Still serving the right clients afterwards.
    let response = rest_client(&pki.ca, ours).get(https(&server, "/v2/health/ready")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

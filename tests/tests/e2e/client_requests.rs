//! The client library's single requests against a real server: classify and detect over REST
//! (raw body and multipart) and gRPC agree, `detect --draw` writes annotated images, models and
//! health, error messages, the API key.

use std::time::Duration;

use bytes::Bytes;
use csp_client::app::{self, InferArgs};
use csp_client::{ClientError, Connection, Params, Protocol, Task, TlsOptions};
use csp_e2e::fixtures::{fixtures, DETECTOR_CLASSES};
use csp_e2e::ServerBuilder;
use serde_json::Value;

use crate::client_support::{connection, connection_with_key, pngs, temp_dir};

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_and_detect_agree_over_every_transport_and_draw_boxes() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).start();
    let conn = connection(&server);
    let images = pngs(3);

    // classify through the command layer, JSON lines.
    let args = InferArgs {
        task: Task::Classify,
        model: "cls".into(),
        images: images.clone(),
        params: Params { top_k: Some(3), ..Params::default() },
        protocol: Protocol::Rest,
        json: true,
        draw: None,
    };
    let mut out = Vec::new();
    assert_eq!(app::infer(&conn, &args, &mut out).await.unwrap(), 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["image"], format!("img-{i}.png"));
        assert_eq!(line["width"], 48 + 8 * i);
        let classes = line["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 3, "{line}");
        assert!(classes[0]["label"].as_str().unwrap().starts_with("class"), "{line}");
        assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    }

    // The same image over REST raw, REST multipart, unary gRPC and the stream: same answer.
    let image = [images[1].bytes.clone()];
    let params = Params { top_k: Some(5), ..Params::default() };
    let multipart = Connection::new(
        &server.url(""),
        "http://127.0.0.1:1",
        None,
        Duration::from_secs(60),
        true,
        &TlsOptions::default(),
    )
    .unwrap();
    let mut answers = Vec::new();
    for target in [
        conn.target(Protocol::Rest, Task::Classify).await.unwrap(),
        multipart.target(Protocol::Rest, Task::Classify).await.unwrap(),
        conn.target(Protocol::Grpc, Task::Classify).await.unwrap(),
        conn.target(Protocol::GrpcStream, Task::Classify).await.unwrap(),
    ] {
        let response = target.infer(Task::Classify, "cls", &image, &params).await.unwrap();
        assert_eq!(response.value.model, "cls");
        assert!(response.value.timing.total_ms > 0.0, "{:?}", response.value.timing);
        answers.push(response.value.results[0].clone());
    }
    for other in &answers[1..] {
        assert_eq!((other.width, other.height), (answers[0].width, answers[0].height));
        let (a, b) = (answers[0].classes.as_ref().unwrap(), other.classes.as_ref().unwrap());
        assert_eq!(a.len(), 5);
        for (x, y) in a.iter().zip(b) {
            assert_eq!((x.index, &x.label), (y.index, &y.label));
            assert!((x.score - y.score).abs() < 1e-5, "{x:?} vs {y:?}");
        }
    }

    // Several images in one request go as multipart even without --multipart.
    let two: Vec<Bytes> = images[..2].iter().map(|i| i.bytes.clone()).collect();
    let both = conn.rest.infer(Task::Classify, "cls", &two, &params).await.unwrap();
    assert_eq!(both.value.results.len(), 2);

    // detect --draw: boxes drawn on copies of the images, same size as the originals.
    let draw_dir = temp_dir("client_draw");
    for protocol in [Protocol::Rest, Protocol::Grpc] {
        let args = InferArgs {
            task: Task::Detect,
            model: "det".into(),
            images: images.clone(),
            params: Params { score_threshold: Some(0.0), max_detections: Some(4), ..Params::default() },
            protocol,
            json: false,
            draw: Some(draw_dir.clone()),
        };
        let mut out = Vec::new();
        assert_eq!(app::infer(&conn, &args, &mut out).await.unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches(" objects ").count() + text.matches(" object ").count(), 3, "{text}");
        assert_eq!(text.matches("drawn to ").count(), 3, "{text}");
    }
    let mut drawn: Vec<_> = std::fs::read_dir(&draw_dir).unwrap().map(|e| e.unwrap().path()).collect();
    drawn.sort();
    assert_eq!(drawn.len(), 3, "{drawn:?}: the second run overwrites the first one's files");
    for (path, original) in drawn.iter().zip(&images) {
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), original.name);
        let img = image::open(path).unwrap().to_rgb8();
        let source = image::load_from_memory(&original.bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), source.dimensions());
        assert_ne!(img.as_raw(), source.as_raw(), "{}: nothing drawn", path.display());
        let colors: Vec<_> = (0..DETECTOR_CLASSES).map(csp_models::draw::class_color).collect();
        assert!(img.pixels().any(|p| colors.contains(p)), "{}: no box in a class colour", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_errors() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).start();
    let conn = connection(&server);

    let rest_models = conn.rest.models().await.unwrap();
    let names: Vec<&str> = rest_models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["cls", "det"]);
    assert_eq!(rest_models[0].task, "classify");
    assert_eq!(rest_models[1].task, "detect");
    assert_eq!((rest_models[0].input_width, rest_models[0].num_classes), (64, 10));
    assert_eq!(conn.grpc.models().await.unwrap(), rest_models, "REST and gRPC describe the models alike");
    let mut out = Vec::new();
    app::models(&conn, false, false, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("name") && text.contains("tiny_cspdarknet"), "{text}");

    for grpc in [false, true] {
        let mut out = Vec::new();
        assert_eq!(app::health(&conn, grpc, true, &mut out).await.unwrap(), 0);
        let health = &json_lines(&out)[0];
        assert_eq!((health["live"].as_bool(), health["ready"].as_bool()), (Some(true), Some(true)), "{health}");
    }

    // The server's own message comes through, with its kind.
    let image = [pngs(1)[0].bytes.clone()];
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::GrpcStream] {
        let target = conn.target(protocol, Task::Classify).await.unwrap();
        let e = target.infer(Task::Classify, "nope", &image, &Params::default()).await.unwrap_err();
        assert!(matches!(e, ClientError::Server { .. }), "{protocol}: {e:?}");
        assert!(e.to_string().contains("nope"), "{protocol}: {e}");
        let e = target.infer(Task::Classify, "cls", &[Bytes::from_static(b"not an image")], &Params::default()).await;
        let e = e.unwrap_err();
        assert!(e.to_string().contains("image"), "{protocol}: {e}");
    }
    let e = conn.rest.infer(Task::Classify, "det", &image, &Params::default()).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 400") && e.to_string().contains("use /v1/models/det/detect"), "{e}");

    // Nothing listening: a connect error that says so.
    let dead = Connection::new(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        None,
        Duration::from_secs(5),
        false,
        &TlsOptions::default(),
    )
    .unwrap();
    let e = dead.rest.health().await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot connect to http://127.0.0.1:1"), "{e}");
    let e = dead.grpc.infer(Task::Classify, "cls", &image, &Params::default()).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_sent_over_rest_and_grpc() {
    let server = ServerBuilder::new().config(&fixtures().standard_config).args(["--api-key", "s3cret"]).start();
    let image = [pngs(1)[0].bytes.clone()];
    let without = connection(&server);
    let with = connection_with_key(&server, Some("s3cret"));
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::GrpcStream] {
        let refused = match without.target(protocol, Task::Classify).await {
            Ok(target) => target.infer(Task::Classify, "cls", &image, &Params::default()).await.unwrap_err(),
            Err(e) => e,
        };
        let text = refused.to_string().to_lowercase();
        assert!(text.contains("unauthorized") || text.contains("unauthenticated"), "{protocol}: {refused}");
        let target = with.target(protocol, Task::Classify).await.unwrap();
        target.infer(Task::Classify, "cls", &image, &Params::default()).await.unwrap();
    }
}

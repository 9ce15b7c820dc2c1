//! The gRPC transport over a real loopback socket, with the core serving the small darknet test
//! networks of `models/tests/fixtures`: every service answers through the generated clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request};

use super::pb::cspserve::v1 as csp;
use super::pb::cspserve::v1::csp_service_client::CspServiceClient;
use super::pb::inference as v2;
use super::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use super::tensor::{f32_from_le, f32_to_le, join_bytes_elements, split_bytes_elements};
use super::{routes, GrpcOptions};
use crate::core::{self, BatchingConfig, DeviceSpec, Engine, Infer, Limits, ModelConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures").join(name)
}

fn model(name: &str, stem: &str) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        arch: Some(fixture(&format!("{stem}.cfg")).display().to_string()),
        weights: fixture(&format!("{stem}.weights")),
        labels: None,
        input_size: None,
        device: DeviceSpec::Cpu,
        engine: Engine::Fast,
        dtype: Default::default(),
        batching: BatchingConfig { max_batch_size: 4, max_queue_delay_ms: 1, max_queue_size: 64 },
        instances: 1,
    }
}

async fn serve(infer: Infer, api_key: Option<&str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = routes(infer, GrpcOptions { api_key: api_key.map(Into::into) });
    tokio::spawn(
        tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn png(width: u32, height: u32) -> Bytes {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    Bytes::from(out.into_inner())
}

fn fp32_input(shape: Vec<i64>) -> v2::model_infer_request::InferInputTensor {
    v2::model_infer_request::InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape,
        ..Default::default()
    }
}

fn infer_request(model: &str, input: v2::model_infer_request::InferInputTensor, raw: Bytes) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        id: "req-1".into(),
        inputs: vec![input],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_over_a_socket() {
    let core = core::start(
        vec![model("cls", "darknet_classifier"), model("det", "darknet_detector_layers")],
        Limits { max_body_bytes: 1 << 20, ..Limits::default() },
        1,
    )
    .unwrap();
    let addr = serve(core.infer(), None).await;
    let url = format!("http://{addr}");
    let mut v2c = GrpcInferenceServiceClient::connect(url.clone()).await.unwrap();

    // Health, metadata, configuration.
    assert!(v2c.server_live(v2::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(v2c.server_ready(v2::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = v2c.model_ready(v2::ModelReadyRequest { name: "cls".into(), version: String::new() }).await;
    assert!(ready.unwrap().into_inner().ready);
    let missing = v2c.model_metadata(v2::ModelMetadataRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let md = v2c.model_metadata(v2::ModelMetadataRequest { name: "cls".into(), version: "1".into() }).await;
    let md = md.unwrap().into_inner();
    assert_eq!(md.inputs[0].shape, vec![-1, 3, 26, 26]);
    let cfg = v2c.model_config(v2::ModelConfigRequest { name: "det".into(), version: String::new() }).await;
    let cfg = cfg.unwrap().into_inner().config.unwrap();
    assert_eq!((cfg.max_batch_size, cfg.input[0].dims.as_slice()), (4, &[3i64, 24, 32][..]));

    // Raw FP32 in, raw FP32 out; a batch of two equals the two images alone.
    let per_image = 3 * 26 * 26;
    let data: Vec<f32> = (0..2 * per_image).map(|i| ((i % 97) as f32) / 97.0).collect();
    let req = infer_request("cls", fp32_input(vec![2, 3, 26, 26]), f32_to_le(&data));
    let res = v2c.model_infer(req).await.unwrap().into_inner();
    assert_eq!((res.id.as_str(), res.model_version.as_str()), ("req-1", "1"));
    assert_eq!(res.outputs[0].name, "output");
    assert_eq!(res.outputs[0].shape[0], 2);
    let classes = res.outputs[0].shape[1] as usize;
    let batch = f32_from_le(&res.raw_output_contents[0]);
    assert_eq!(batch.len(), 2 * classes);
    for (i, chunk) in data.chunks(per_image).enumerate() {
        let one = infer_request("cls", fp32_input(vec![1, 3, 26, 26]), f32_to_le(chunk));
        let single = f32_from_le(&v2c.model_infer(one).await.unwrap().into_inner().raw_output_contents[0]);
        for (a, b) in single.iter().zip(&batch[i * classes..(i + 1) * classes]) {
            assert!((a - b).abs() < 1e-4, "batch {b} vs single {a}");
        }
    }

    // Typed FP32 contents work too; a detector returns one raw output per head.
    let typed = v2::model_infer_request::InferInputTensor {
        contents: Some(v2::InferTensorContents { fp32_contents: vec![0.5; 3 * 24 * 32], ..Default::default() }),
        ..fp32_input(vec![1, 3, 24, 32])
    };
    let req = v2::ModelInferRequest { model_name: "det".into(), inputs: vec![typed], ..Default::default() };
    let res = v2c.model_infer(req).await.unwrap().into_inner();
    let names: Vec<&str> = res.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["head_0", "head_1"]);
    assert_eq!(res.raw_output_contents.len(), 2);

    // Encoded images in, one JSON document per image out.
    let image = v2::model_infer_request::InferInputTensor {
        name: "image".into(),
        datatype: "BYTES".into(),
        shape: vec![2, 1],
        ..Default::default()
    };
    let raw = join_bytes_elements(&[png(40, 30), png(20, 20)]).unwrap();
    let mut req = infer_request("cls", image.clone(), raw.clone());
    req.parameters.insert(
        "top_k".into(),
        v2::InferParameter { parameter_choice: Some(v2::infer_parameter::ParameterChoice::Int64Param(2)) },
    );
    let res = v2c.model_infer(req).await.unwrap().into_inner();
    assert_eq!((res.outputs[0].name.as_str(), res.outputs[0].shape.as_slice()), ("result", &[2i64][..]));
    let docs = split_bytes_elements(&res.raw_output_contents[0]).unwrap();
    let first: serde_json::Value = serde_json::from_slice(&docs[0]).unwrap();
    assert_eq!((first["width"].as_u64(), first["height"].as_u64()), (Some(40), Some(30)));
    assert_eq!(first["classes"].as_array().unwrap().len(), 2);

    // Bad inputs are INVALID_ARGUMENT with a message saying what was wrong.
    let wrong_type =
        v2::model_infer_request::InferInputTensor { datatype: "INT8".into(), ..fp32_input(vec![1, 3, 26, 26]) };
    let err = v2c.model_infer(infer_request("cls", wrong_type, f32_to_le(&[0.0; 3 * 26 * 26]))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("must be FP32"), "{}", err.message());
    let wrong_shape = infer_request("cls", fp32_input(vec![1, 3, 20, 20]), f32_to_le(&[0.0; 3 * 20 * 20]));
    assert_eq!(v2c.model_infer(wrong_shape).await.unwrap_err().code(), Code::InvalidArgument);
    let not_image = join_bytes_elements(&[b"hello".as_slice()]).unwrap();
    let bad =
        infer_request("cls", v2::model_infer_request::InferInputTensor { shape: vec![1], ..image.clone() }, not_image);
    let err = v2c.model_infer(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.metadata().get("csp-error-kind").unwrap(), "bad_image");

    // Triton's streaming RPC: responses in order, a failed request reported in its place.
    let reqs = vec![
        infer_request("cls", image.clone(), raw.clone()),
        infer_request("nope", image.clone(), raw.clone()),
        infer_request("cls", image.clone(), raw.clone()),
    ];
    let reqs: Vec<_> =
        reqs.into_iter().enumerate().map(|(i, r)| v2::ModelInferRequest { id: i.to_string(), ..r }).collect();
    let mut out = v2c.model_stream_infer(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(msg) = out.message().await.unwrap() {
        got.push((msg.infer_response.unwrap().id, msg.error_message.is_empty()));
    }
    assert_eq!(got, vec![("0".into(), true), ("1".into(), false), ("2".into(), true)]);

    // Statistics count what ran.
    let stats = v2c.model_statistics(v2::ModelStatisticsRequest::default()).await.unwrap().into_inner();
    let cls = stats.model_stats.iter().find(|s| s.name == "cls").unwrap();
    assert!(cls.inference_count >= 6 && cls.execution_count >= 3, "{cls:?}");

    // Our own service: unary, streaming in order with per-request errors, model descriptions.
    let mut cc = CspServiceClient::connect(url.clone()).await.unwrap();
    let res = cc
        .classify(csp::ClassifyRequest {
            model: "cls".into(),
            images: vec![png(50, 40)],
            top_k: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((res.results[0].width, res.results[0].classes.len()), (50, 3));
    assert!(res.timing.unwrap().total_ms > 0.0);
    let err =
        cc.detect(csp::DetectRequest { model: "cls".into(), images: vec![png(8, 8)], ..Default::default() }).await;
    assert_eq!(err.unwrap_err().code(), Code::InvalidArgument);
    let det = cc
        .detect(csp::DetectRequest {
            model: "det".into(),
            images: vec![png(64, 48)],
            score_threshold: Some(0.0),
            max_detections: Some(5),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(det.results[0].width, 64);
    assert!(det.results[0].detections.len() <= 5);

    let items: Vec<csp::ClassifyStreamRequest> = (0..10)
        .map(|i| csp::ClassifyStreamRequest {
            id: format!("item-{i}"),
            request: Some(csp::ClassifyRequest {
                model: "cls".into(),
                images: vec![if i == 4 { Bytes::from_static(b"\xff\xd8\xff truncated jpeg") } else { png(30 + i, 30) }],
                ..Default::default()
            }),
        })
        .collect();
    let mut out = cc.classify_stream(tokio_stream::iter(items)).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(msg) = out.message().await.unwrap() {
        match msg.outcome.unwrap() {
            csp::classify_stream_response::Outcome::Response(r) => {
                let i: u32 = msg.id.trim_start_matches("item-").parse().unwrap();
                assert_eq!(r.results[0].width, 30 + i);
            }
            csp::classify_stream_response::Outcome::Error(e) => {
                assert_eq!(
                    (msg.id.as_str(), e.code, e.kind.as_str()),
                    ("item-4", Code::InvalidArgument as i32, "bad_image")
                );
            }
        }
        ids.push(msg.id);
    }
    assert_eq!(ids, (0..10).map(|i| format!("item-{i}")).collect::<Vec<_>>());

    let models = cc.list_models(csp::ListModelsRequest {}).await.unwrap().into_inner().models;
    assert_eq!(models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["cls", "det"]);
    let det_model = cc.get_model(csp::GetModelRequest { name: "det".into() }).await.unwrap().into_inner();
    assert_eq!((det_model.task, det_model.input_width, det_model.input_height), (csp::Task::Detect as i32, 32, 24));

    // Standard health service.
    let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let mut hc = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |service: &str| tonic_health::pb::HealthCheckRequest { service: service.into() };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    for service in ["", "cls", "inference.GRPCInferenceService"] {
        assert_eq!(hc.check(status(service)).await.unwrap().into_inner().status, serving, "{service}");
    }

    // Shutdown turns readiness and health off; new work is refused with UNAVAILABLE.
    assert!(core.shutdown(Duration::from_secs(5)).await);
    assert!(!v2c.server_ready(v2::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let err =
        cc.classify(csp::ClassifyRequest { model: "cls".into(), images: vec![png(8, 8)], ..Default::default() }).await;
    assert_eq!(err.unwrap_err().code(), Code::Unavailable);
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let mut last = None;
    for _ in 0..100 {
        last = Some(hc.check(status("")).await.unwrap().into_inner().status);
        if last == Some(not_serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last, Some(not_serving));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_inference_only_and_messages_over_the_limit_are_refused() {
    let core = core::start(
        vec![model("cls", "darknet_classifier")],
        Limits { max_body_bytes: 64 << 10, ..Limits::default() },
        1,
    )
    .unwrap();
    let addr = serve(core.infer(), Some("k3y")).await;
    let url = format!("http://{addr}");
    let mut v2c = GrpcInferenceServiceClient::connect(url.clone()).await.unwrap();
    let mut cc = CspServiceClient::connect(url).await.unwrap();

    // Open without a key: health, metadata, model descriptions.
    assert!(v2c.server_ready(v2::ServerReadyRequest {}).await.is_ok());
    assert!(v2c.model_metadata(v2::ModelMetadataRequest { name: "cls".into(), version: String::new() }).await.is_ok());
    assert!(cc.list_models(csp::ListModelsRequest {}).await.is_ok());

    let classify = || csp::ClassifyRequest { model: "cls".into(), images: vec![png(16, 16)], ..Default::default() };
    assert_eq!(cc.classify(classify()).await.unwrap_err().code(), Code::Unauthenticated);
    let mut wrong = Request::new(classify());
    wrong.metadata_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(cc.classify(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut right = Request::new(classify());
    right.metadata_mut().insert("authorization", "Bearer k3y".parse().unwrap());
    assert!(cc.classify(right).await.is_ok());

    let tensor = infer_request("cls", fp32_input(vec![1, 3, 26, 26]), f32_to_le(&[0.0; 3 * 26 * 26]));
    assert_eq!(v2c.model_infer(tensor.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let stream = v2c.model_stream_infer(tokio_stream::iter(vec![tensor.clone()])).await;
    assert_eq!(stream.unwrap_err().code(), Code::Unauthenticated);

    // A message over max_body_bytes is refused before it reaches the core.
    let mut big = Request::new(csp::ClassifyRequest {
        model: "cls".into(),
        images: vec![Bytes::from(vec![0u8; 100 << 10])],
        ..Default::default()
    });
    big.metadata_mut().insert("authorization", "Bearer k3y".parse().unwrap());
    assert_eq!(cc.classify(big).await.unwrap_err().code(), Code::OutOfRange);

    // A deadline that has passed before the request can run.
    let mut late = Request::new(tensor);
    late.metadata_mut().insert("authorization", "Bearer k3y".parse().unwrap());
    late.set_timeout(Duration::from_nanos(1));
    let err = v2c.model_infer(late).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
}

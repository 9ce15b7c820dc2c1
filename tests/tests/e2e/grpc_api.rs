//! Every gRPC service: KServe v2 (`inference.GRPCInferenceService`), `cspserve.v1.CspService`
//! unary and streaming, the health service and reflection.

use bytes::Bytes;
use csp_e2e::fixtures::{fixtures, random_values, CLASSES, DETECTOR_CLASSES, INPUT_ELEMENTS, INPUT_SIZE};
use csp_e2e::pb::cspserve::v1 as csp;
use csp_e2e::pb::inference as kserve;
use csp_e2e::rest::{self, client, get_json, ok_json, scores, scores_diff};
use csp_e2e::{images, max_abs_diff, ServerBuilder};
use futures::StreamExt;
use kserve::model_infer_request::InferInputTensor;
use serde_json::Value;
use tonic::Code;

fn standard() -> csp_e2e::Server {
    ServerBuilder::new().config(&fixtures().standard_config).start()
}

fn fp32_input(n: usize, contents: Option<Vec<f32>>) -> InferInputTensor {
    InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![n as i64, 3, INPUT_SIZE as i64, INPUT_SIZE as i64],
        parameters: Default::default(),
        contents: contents.map(|fp32| kserve::InferTensorContents { fp32_contents: fp32, ..Default::default() }),
    }
}

fn image_input(n: usize, contents: Option<Vec<Bytes>>) -> InferInputTensor {
    InferInputTensor {
        name: "image".into(),
        datatype: "BYTES".into(),
        shape: vec![n as i64],
        parameters: Default::default(),
        contents: contents.map(|b| kserve::InferTensorContents { bytes_contents: b, ..Default::default() }),
    }
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// BYTES elements as raw contents: each a 4-byte little-endian length, then the bytes.
fn length_prefixed(elements: &[&[u8]]) -> Bytes {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    Bytes::from(out)
}

fn split_length_prefixed(mut raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        out.push(raw[4..4 + len].to_vec());
        raw = &raw[4 + len..];
    }
    out
}

/// The outputs of a v2 response by name: values from raw_output_contents (or typed contents).
fn outputs(res: &kserve::ModelInferResponse) -> Vec<(String, Vec<i64>, Vec<u8>)> {
    res.outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let raw = match res.raw_output_contents.get(i) {
                Some(raw) => raw.to_vec(),
                None => {
                    let c = o.contents.as_ref().expect("output has neither raw nor typed contents");
                    c.fp32_contents.iter().flat_map(|v| v.to_le_bytes()).collect()
                }
            };
            (o.name.clone(), o.shape.clone(), raw)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_health_metadata_config_and_statistics() {
    let server = standard();
    let mut v2 = server.kserve().await;
    assert!(v2.server_live(kserve::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(v2.server_ready(kserve::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let meta = v2.server_metadata(kserve::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert!(!meta.name.is_empty() && !meta.version.is_empty());
    for ext in ["model_configuration", "statistics"] {
        assert!(meta.extensions.iter().any(|e| e == ext), "{ext} missing from {:?}", meta.extensions);
    }
    let ready = v2.model_ready(kserve::ModelReadyRequest { name: "det".into(), version: String::new() }).await;
    assert!(ready.unwrap().into_inner().ready);
    let unknown = v2.model_ready(kserve::ModelReadyRequest { name: "nope".into(), version: String::new() }).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let md = v2.model_metadata(kserve::ModelMetadataRequest { name: "cls".into(), version: "1".into() }).await;
    let md = md.unwrap().into_inner();
    assert_eq!((md.name.as_str(), md.versions.as_slice()), ("cls", &["1".to_string()][..]));
    let input = md.inputs.iter().find(|i| i.name == "input").expect("`input` in metadata");
    assert_eq!((input.datatype.as_str(), input.shape.as_slice()), ("FP32", &[-1, 3, 64, 64][..]));
    assert!(md.inputs.iter().any(|i| i.name == "image" && i.datatype == "BYTES"));
    assert!(md.outputs.iter().any(|o| o.name == "output" && o.datatype == "FP32"));
    let det = v2.model_metadata(kserve::ModelMetadataRequest { name: "det".into(), version: String::new() }).await;
    let names: Vec<String> = det.unwrap().into_inner().outputs.into_iter().map(|o| o.name).collect();
    assert!(names.starts_with(&["head_0".into(), "head_1".into()]), "{names:?}");

    let config = v2.model_config(kserve::ModelConfigRequest { name: "cls".into(), version: String::new() }).await;
    let config = config.unwrap().into_inner().config.expect("config");
    assert_eq!((config.name.as_str(), config.max_batch_size), ("cls", 8));
    let input = config.input.iter().find(|i| i.name == "input").expect("`input` in config");
    assert_eq!((input.data_type, input.dims.as_slice()), (kserve::DataType::TypeFp32 as i32, &[3, 64, 64][..]));
    assert_eq!(config.instance_group.first().map(|g| g.count), Some(1));
    assert!(config.scheduling_choice.is_some(), "dynamic batching settings missing");

    let x = random_values(INPUT_ELEMENTS, 3);
    let request = kserve::ModelInferRequest {
        model_name: "cls".into(),
        inputs: vec![fp32_input(1, Some(x))],
        ..Default::default()
    };
    v2.model_infer(request).await.unwrap();
    let stats =
        v2.model_statistics(kserve::ModelStatisticsRequest { name: "cls".into(), version: String::new() }).await;
    let stats = stats.unwrap().into_inner().model_stats;
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].name.as_str(), stats[0].inference_count, stats[0].execution_count), ("cls", 1, 1));
    let success = stats[0].inference_stats.as_ref().and_then(|s| s.success.as_ref()).map(|d| d.count);
    assert_eq!(success, Some(1));
    let all = v2.model_statistics(kserve::ModelStatisticsRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.model_stats.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["cls", "det"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_infer_typed_raw_bytes_and_streaming() {
    let server = standard();
    let mut v2 = server.kserve().await;
    let x = random_values(2 * INPUT_ELEMENTS, 5);

    // Typed fp32_contents and raw_input_contents give the same logits.
    let typed = kserve::ModelInferRequest {
        model_name: "cls".into(),
        id: "typed".into(),
        inputs: vec![fp32_input(2, Some(x.clone()))],
        ..Default::default()
    };
    let typed = v2.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(typed.id, "typed");
    let typed_out = outputs(&typed);
    assert_eq!(typed_out.len(), 1);
    assert_eq!((typed_out[0].0.as_str(), typed_out[0].1.as_slice()), ("output", &[2, CLASSES as i64][..]));
    let typed_logits = le_f32(&typed_out[0].2);
    let raw = kserve::ModelInferRequest {
        model_name: "cls".into(),
        inputs: vec![fp32_input(2, None)],
        raw_input_contents: vec![Bytes::from(x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())],
        ..Default::default()
    };
    let raw_logits = le_f32(&outputs(&v2.model_infer(raw).await.unwrap().into_inner())[0].2);
    assert!(max_abs_diff(&typed_logits, &raw_logits) < 1e-6);

    // The same input over REST v2 gives the same logits.
    let http = client();
    let body =
        serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": x}]});
    let rest_body = ok_json(http.post(server.url("/v2/models/cls/infer")).json(&body).send().await.unwrap()).await;
    let rest_logits: Vec<f32> =
        rest_body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert!(max_abs_diff(&typed_logits, &rest_logits) < 1e-5);

    // Detector: one raw map per head.
    let det = kserve::ModelInferRequest {
        model_name: "det".into(),
        inputs: vec![fp32_input(2, Some(x.clone()))],
        ..Default::default()
    };
    let heads = outputs(&v2.model_infer(det).await.unwrap().into_inner());
    let per_anchor = 3 * (5 + DETECTOR_CLASSES as i64);
    assert_eq!(heads.len(), 2);
    assert_eq!((heads[0].0.as_str(), heads[0].1.as_slice()), ("head_0", &[2, per_anchor, 2, 2][..]));
    assert_eq!((heads[1].0.as_str(), heads[1].1.as_slice()), ("head_1", &[2, per_anchor, 4, 4][..]));

    // BYTES images, raw (length-prefixed) and typed: one JSON document per image.
    let (png, jpeg) = (images::png(80, 60, 1), images::jpeg(50, 70, 2));
    let raw_images = kserve::ModelInferRequest {
        model_name: "cls".into(),
        inputs: vec![image_input(2, None)],
        raw_input_contents: vec![length_prefixed(&[&png, &jpeg])],
        ..Default::default()
    };
    let res = v2.model_infer(raw_images).await.unwrap().into_inner();
    let outs = outputs(&res);
    assert_eq!(outs.len(), 1);
    assert_eq!(res.outputs[0].datatype, "BYTES");
    assert_eq!(outs[0].1.first(), Some(&2));
    let docs: Vec<Value> =
        split_length_prefixed(&outs[0].2).iter().map(|d| serde_json::from_slice(d).unwrap()).collect();
    assert_eq!((docs.len(), &docs[0]["width"], &docs[1]["height"]), (2, &Value::from(80), &Value::from(70)));
    let v1 = ok_json(rest::classify_raw(&http, &server, "cls", png.clone(), "").await).await;
    assert!(scores_diff(&scores(&docs[0]), &scores(&v1["results"][0])) < 1e-5);
    let typed_images = kserve::ModelInferRequest {
        model_name: "det".into(),
        inputs: vec![image_input(1, Some(vec![Bytes::from(jpeg.clone())]))],
        ..Default::default()
    };
    let res = v2.model_infer(typed_images).await.unwrap().into_inner();
    let doc: Value = serde_json::from_slice(&split_length_prefixed(&outputs(&res)[0].2)[0]).unwrap();
    assert!(doc["detections"].is_array() && doc["width"] == 50, "{doc}");

    // Streaming: one response per request, in order, ids echoed; a bad request fails alone.
    let requests: Vec<kserve::ModelInferRequest> = (0..5)
        .map(|i| kserve::ModelInferRequest {
            model_name: if i == 2 { "nope".into() } else { "cls".into() },
            id: format!("s{i}"),
            inputs: vec![fp32_input(1, Some(random_values(INPUT_ELEMENTS, i)))],
            ..Default::default()
        })
        .collect();
    let stream = v2.model_stream_infer(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let responses: Vec<kserve::ModelStreamInferResponse> = stream.map(|r| r.unwrap()).collect().await;
    let ids: Vec<&str> = responses.iter().map(|r| r.infer_response.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(ids, ["s0", "s1", "s2", "s3", "s4"]);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.error_message.is_empty(), i != 2, "response {i}: {:?}", r.error_message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_service_unary_and_model_descriptions() {
    let server = standard();
    let mut api = server.csp().await;
    let list = api.list_models(csp::ListModelsRequest {}).await.unwrap().into_inner();
    assert_eq!(list.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["cls", "det"]);
    let cls = api.get_model(csp::GetModelRequest { name: "cls".into() }).await.unwrap().into_inner();
    assert_eq!(cls.task, csp::Task::Classify as i32);
    assert_eq!((cls.input_height, cls.input_width, cls.num_classes), (64, 64, CLASSES as u32));
    assert_eq!(cls.labels.len(), CLASSES);
    assert_eq!(cls.outputs, ["output"]);
    assert!(cls.params > 0 && cls.bflops > 0.0 && cls.device == "cpu");
    assert_eq!(cls.batching.as_ref().map(|b| b.max_batch_size), Some(8));
    let det = api.get_model(csp::GetModelRequest { name: "det".into() }).await.unwrap().into_inner();
    assert_eq!((det.task, det.num_classes), (csp::Task::Detect as i32, DETECTOR_CLASSES as u32));
    let missing = api.get_model(csp::GetModelRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let (png, jpeg) = (images::png(80, 60, 1), images::jpeg(50, 70, 2));
    let request = csp::ClassifyRequest {
        model: "cls".into(),
        images: vec![Bytes::from(png.clone()), Bytes::from(jpeg.clone())],
        top_k: Some(3),
        ..Default::default()
    };
    let res = api.classify(request).await.unwrap().into_inner();
    assert_eq!(res.model, "cls");
    assert_eq!(res.results.len(), 2);
    assert_eq!((res.results[0].width, res.results[0].height, res.results[1].width), (80, 60, 50));
    for r in &res.results {
        assert_eq!(r.classes.len(), 3);
        assert!(r.classes.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(r.classes.iter().all(|c| c.label.as_deref() == Some(format!("class{}", c.index).as_str())));
    }
    let timing = res.timing.expect("timing");
    assert!(timing.total_ms >= timing.inference_ms && timing.inference_ms >= 0.0);

    // The same image classified over REST gets the same scores.
    let http = client();
    let v1 = ok_json(rest::classify_raw(&http, &server, "cls", png, "?top_k=3").await).await;
    let rest_scores = scores(&v1["results"][0]);
    for c in &res.results[0].classes {
        assert!(
            (rest_scores[&u64::from(c.index)] - c.score).abs() < 1e-6,
            "REST and gRPC disagree on class {}",
            c.index
        );
    }

    let request = csp::DetectRequest {
        model: "det".into(),
        images: vec![Bytes::from(images::jpeg(200, 100, 4))],
        score_threshold: Some(0.0),
        max_detections: Some(10),
        ..Default::default()
    };
    let res = api.detect(request).await.unwrap().into_inner();
    let image = &res.results[0];
    assert_eq!((image.width, image.height), (200, 100));
    assert!(!image.detections.is_empty() && image.detections.len() <= 10);
    for d in &image.detections {
        let b = d.bbox.as_ref().expect("bbox");
        assert!(0.0 <= b.x1 && b.x1 <= b.x2 && b.x2 <= 200.0 && 0.0 <= b.y1 && b.y1 <= b.y2 && b.y2 <= 100.0, "{b:?}");
        assert!(d.class_id < DETECTOR_CLASSES as u32 && (0.0..=1.0).contains(&d.score));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_stream_answers_in_request_order_with_ids() {
    let server = standard();
    let mut api = server.csp().await;
    // Widths 40, 41, ... identify which image each answer is about.
    let requests: Vec<csp::ClassifyStreamRequest> = (0..12u32)
        .map(|i| {
            let image = if i == 4 { b"not an image at all".to_vec() } else { images::png(40 + i, 32, i) };
            let model = if i == 7 { "nope" } else { "cls" };
            csp::ClassifyStreamRequest {
                id: format!("req-{i}"),
                request: Some(csp::ClassifyRequest {
                    model: model.into(),
                    images: vec![Bytes::from(image)],
                    top_k: Some(2),
                    ..Default::default()
                }),
            }
        })
        .collect();
    let stream = api.classify_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let responses: Vec<csp::ClassifyStreamResponse> = stream.map(|r| r.unwrap()).collect().await;
    assert_eq!(responses.len(), 12);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.id, format!("req-{i}"), "responses out of order");
        match (i, r.outcome.as_ref().expect("outcome")) {
            (4, csp::classify_stream_response::Outcome::Error(e)) => {
                assert_eq!((e.code, e.kind.as_str()), (Code::InvalidArgument as i32, "bad_image"), "{e:?}")
            }
            (7, csp::classify_stream_response::Outcome::Error(e)) => {
                assert_eq!((e.code, e.kind.as_str()), (Code::NotFound as i32, "model_not_found"), "{e:?}")
            }
            (_, csp::classify_stream_response::Outcome::Response(res)) if i != 4 && i != 7 => {
                assert_eq!(res.results.len(), 1);
                assert_eq!(res.results[0].width, 40 + i as u32, "answer {i} is about another image");
                assert_eq!(res.results[0].classes.len(), 2);
            }
            (_, other) => panic!("request {i}: unexpected outcome {other:?}"),
        }
    }

    let requests: Vec<csp::DetectStreamRequest> = (0..3u32)
        .map(|i| csp::DetectStreamRequest {
            id: format!("d{i}"),
            request: Some(csp::DetectRequest {
                model: "det".into(),
                images: vec![Bytes::from(images::jpeg(60 + i, 50, i))],
                score_threshold: Some(0.0),
                ..Default::default()
            }),
        })
        .collect();
    let stream = api.detect_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let responses: Vec<csp::DetectStreamResponse> = stream.map(|r| r.unwrap()).collect().await;
    assert_eq!(responses.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["d0", "d1", "d2"]);
    for (i, r) in responses.iter().enumerate() {
        let Some(csp::detect_stream_response::Outcome::Response(res)) = &r.outcome else {
            panic!("detect stream request {i} failed: {r:?}")
        };
        assert_eq!(res.results[0].width, 60 + i as u32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_service_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = standard();
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "inference.GRPCInferenceService", "cspserve.v1.CspService", "cls", "det"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await;
        let status = status.unwrap_or_else(|e| panic!("health of `{service}`: {e}")).into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "`{service}`");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.next().await.expect("a reflection response").unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["inference.GRPCInferenceService", "cspserve.v1.CspService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == service), "{service} not listed by reflection: {names:?}");
    }

    // The descriptor of our own service is served too (what grpcurl needs to call it).
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("cspserve.v1.CspService".into())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.next().await.expect("a reflection response").unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("no descriptor for cspserve.v1.CspService: {response:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// Both transports describe the same model and the same server with the same names: a client
/// written against one protocol binding works against the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_metadata_agrees_across_rest_and_grpc() {
    let server = standard();
    let http = client();
    let mut v2 = server.kserve().await;
    let mut differences = Vec::new();
    let (_, rest_server) = get_json(&http, &server.url("/v2")).await;
    let grpc_server = v2.server_metadata(kserve::ServerMetadataRequest {}).await.unwrap().into_inner();
    if rest_server["name"] != grpc_server.name.as_str() {
        differences.push(format!("server name: REST {} vs gRPC {:?}", rest_server["name"], grpc_server.name));
    }
    for model in ["cls", "det"] {
        let (_, rest_md) = get_json(&http, &server.url(&format!("/v2/models/{model}"))).await;
        let grpc_md = v2.model_metadata(kserve::ModelMetadataRequest { name: model.into(), version: String::new() });
        let grpc_md = grpc_md.await.unwrap().into_inner();
        let rest_tensors = |key: &str| -> Vec<(String, String)> {
            rest_md[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["name"].as_str().unwrap().to_owned(), t["datatype"].as_str().unwrap().to_owned()))
                .collect()
        };
        let grpc_tensors = |list: &[kserve::model_metadata_response::TensorMetadata]| -> Vec<(String, String)> {
            list.iter().map(|t| (t.name.clone(), t.datatype.clone())).collect()
        };
        for (what, rest, grpc) in [
            ("inputs", rest_tensors("inputs"), grpc_tensors(&grpc_md.inputs)),
            ("outputs", rest_tensors("outputs"), grpc_tensors(&grpc_md.outputs)),
        ] {
            if rest != grpc {
                differences.push(format!("{model} {what}: REST {rest:?} vs gRPC {grpc:?}"));
            }
        }
    }
    assert!(differences.is_empty(), "REST and gRPC v2 metadata differ:\n{}", differences.join("\n"));
}

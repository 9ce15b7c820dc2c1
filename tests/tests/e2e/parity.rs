//! Parity: raw tensors through the server (REST and gRPC v2 `input`) equal `csp-model predict
//! --input/--output` on the same weights and the same input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use candle_core::{Device, Tensor};
use csp_e2e::fixtures::{fixtures, random_values, INPUT_ELEMENTS, INPUT_SIZE};
use csp_e2e::pb::inference as kserve;
use csp_e2e::rest::client;
use csp_e2e::{max_abs_diff, workspace_binary, ServerBuilder};
use serde_json::{json, Value};

const BATCH: usize = 2;

/// Runs `csp-model predict` with `arch_args` on `input`, returning its named outputs.
fn csp_model_predict(arch_args: &[&str], weights: &Path, input: &Path, tag: &str) -> HashMap<String, Vec<f32>> {
    let bin = workspace_binary("csp-model", "CSP_MODEL_BIN", "cargo build -p csp-models --bin csp-model");
    let output = fixtures().dir.join(format!("parity-{tag}-out.safetensors"));
    let mut child = Command::new(bin)
        .arg("predict")
        .args(arch_args)
        .arg("--weights")
        .arg(weights)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start csp-model");
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for csp-model") {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("csp-model predict did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("csp-model output");
    assert!(status.success(), "csp-model predict failed: {}", String::from_utf8_lossy(&out.stderr));
    let tensors = candle_core::safetensors::load(&output, &Device::Cpu).expect("read csp-model output");
    tensors.into_iter().map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn write_input(values: &[f32], tag: &str) -> PathBuf {
    let path = fixtures().dir.join(format!("parity-{tag}-in.safetensors"));
    let x = Tensor::from_vec(values.to_vec(), (BATCH, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("input".to_string(), x)]), &path).unwrap();
    path
}

/// REST v2 with binary tensors both ways: no decimal round trip.
async fn rest_infer(server: &csp_e2e::Server, model: &str, values: &[f32]) -> HashMap<String, Vec<f32>> {
    let header = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [BATCH, 3, INPUT_SIZE, INPUT_SIZE],
                    "parameters": {"binary_data_size": values.len() * 4}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    let response = client()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let length: usize = response.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = response.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    let mut at = length;
    let mut out = HashMap::new();
    for o in head["outputs"].as_array().unwrap() {
        let size = o["parameters"]["binary_data_size"].as_u64().expect("binary output") as usize;
        let data = bytes[at..at + size].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        out.insert(o["name"].as_str().unwrap().to_owned(), data);
        at += size;
    }
    assert_eq!(at, bytes.len(), "trailing bytes after the binary outputs");
    out
}

async fn grpc_infer(server: &csp_e2e::Server, model: &str, values: &[f32]) -> HashMap<String, Vec<f32>> {
    let request = kserve::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![kserve::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![BATCH as i64, 3, INPUT_SIZE as i64, INPUT_SIZE as i64],
            parameters: Default::default(),
            contents: None,
        }],
        raw_input_contents: vec![Bytes::from(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())],
        ..Default::default()
    };
    let response = server.kserve().await.model_infer(request).await.unwrap().into_inner();
    response
        .outputs
        .iter()
        .zip(&response.raw_output_contents)
        .map(|(o, raw)| {
            (o.name.clone(), raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
        })
        .collect()
}

fn assert_same(reference: &HashMap<String, Vec<f32>>, served: &HashMap<String, Vec<f32>>, what: &str) {
    let mut names: Vec<&String> = reference.keys().collect();
    names.sort();
    let mut served_names: Vec<&String> = served.keys().collect();
    served_names.sort();
    assert_eq!(names, served_names, "{what}: different outputs");
    for name in names {
        let diff = max_abs_diff(&reference[name], &served[name]);
        assert!(diff < 1e-5, "{what}: `{name}` differs from csp-model predict by {diff}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tensor_outputs_equal_csp_model_predict() {
    let f = fixtures();
    let server = ServerBuilder::new().config(&f.standard_config).start();
    let values = random_values(BATCH * INPUT_ELEMENTS, 77);
    let input = write_input(&values, "shared");

    let classifier = csp_model_predict(&[], &f.classifier, &input, "cls");
    assert_eq!(classifier["output"].len(), BATCH * csp_e2e::fixtures::CLASSES);
    assert_same(&classifier, &rest_infer(&server, "cls", &values).await, "classifier over REST");
    assert_same(&classifier, &grpc_infer(&server, "cls", &values).await, "classifier over gRPC");

    let cfg = f.detector_cfg.display().to_string();
    let detector = csp_model_predict(&["--cfg", &cfg], &f.detector_weights, &input, "det");
    assert_eq!(detector.len(), 2, "two YOLO heads");
    assert_same(&detector, &rest_infer(&server, "det", &values).await, "detector over REST");
    assert_same(&detector, &grpc_infer(&server, "det", &values).await, "detector over gRPC");
}

/// `--engine candle` (candle's ops) and the default fast (blocked) engine serve the same outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_cpu_engines_serve_the_same_outputs() {
    let f = fixtures();
    let fast = ServerBuilder::new().config(&f.standard_config).start();
    let candle = ServerBuilder::new().config(&f.standard_config).args(["--engine", "candle"]).start();
    assert!(fast.output().contains("engine=\"fast\""), "{}", fast.output());
    assert!(candle.output().contains("engine=\"candle\""), "{}", candle.output());
    let values = random_values(BATCH * INPUT_ELEMENTS, 78);
    for model in ["cls", "det"] {
        let (a, b) = (rest_infer(&fast, model, &values).await, rest_infer(&candle, model, &values).await);
        assert_eq!(a.len(), b.len());
        for (name, reference) in &b {
            let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&a[name], reference) / scale;
            assert!(diff <= 1e-4, "{model} `{name}`: engines differ by {diff:e} (relative)");
        }
    }
}

/// `--dtype f16`: the server computes in half precision (its outputs differ from f32) and serves
/// exactly what `csp-model predict --dtype f16` computes on the same input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f16_serves_what_csp_model_predict_computes_in_f16() {
    let f = fixtures();
    let server = ServerBuilder::new().config(&f.standard_config).args(["--dtype", "f16"]).start();
    assert!(server.output().contains("dtype=f16"), "{}", server.output());
    let values = random_values(BATCH * INPUT_ELEMENTS, 79);
    let input = write_input(&values, "f16");
    let cfg = f.detector_cfg.display().to_string();
    for (model, arch_args, weights) in
        [("cls", vec![], &f.classifier), ("det", vec!["--cfg", cfg.as_str()], &f.detector_weights)]
    {
        let half_args: Vec<&str> = arch_args.iter().copied().chain(["--dtype", "f16"]).collect();
        let half = csp_model_predict(&half_args, weights, &input, &format!("{model}-f16"));
        let full = csp_model_predict(&arch_args, weights, &input, &format!("{model}-f32"));
        assert_same(&half, &rest_infer(&server, model, &values).await, &format!("{model} f16 over REST"));
        assert_same(&half, &grpc_infer(&server, model, &values).await, &format!("{model} f16 over gRPC"));
        for (name, reference) in &full {
            let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&half[name], reference) / scale;
            eprintln!("{model} `{name}`: f16 against f32 {diff:e} (relative)");
            assert!(diff > 0.0 && diff <= 5e-3, "{model} `{name}`: f16 differs from f32 by {diff:e} (relative)");
        }
    }
}

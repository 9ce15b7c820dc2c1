//! Every REST endpoint on a server with a classifier (`cls`, labelled) and a detector (`det`).

use base64::Engine;
use csp_e2e::fixtures::{fixtures, random_values, CLASSES, DETECTOR_CLASSES, INPUT_ELEMENTS, INPUT_SIZE};
use csp_e2e::rest::{self, api_error, client, get_json, ok_json, scores, scores_diff};
use csp_e2e::{images, metrics, ServerBuilder};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn standard() -> csp_e2e::Server {
    ServerBuilder::new().config(&fixtures().standard_config).start()
}

fn timing_header(response: &reqwest::Response, name: &str) -> f64 {
    let value = response.headers().get(name).unwrap_or_else(|| panic!("no `{name}` header"));
    let millis: f64 = value.to_str().unwrap().parse().unwrap_or_else(|_| panic!("`{name}` is not a number: {value:?}"));
    assert!(millis >= 0.0 && millis.is_finite(), "{name} = {millis}");
    millis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_models_describe_every_model() {
    let server = standard();
    let http = client();
    let (status, list) = get_json(&http, &server.url("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let models = list["models"].as_array().expect("models array");
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cls", "det"]);

    let cls = &models[0];
    assert_eq!(cls["task"], "classify");
    assert_eq!(cls["architecture"], "tiny_cspdarknet");
    assert_eq!(cls["input_size"], json!([INPUT_SIZE, INPUT_SIZE]));
    assert_eq!(cls["num_classes"], CLASSES);
    let labels: Vec<String> = (0..CLASSES).map(|i| format!("class{i}")).collect();
    assert_eq!(cls["labels"], json!(labels));
    assert!(cls["params"].as_u64().unwrap() > 1000, "{cls}");
    assert!(cls["bflops"].as_f64().unwrap() > 0.0, "{cls}");
    assert_eq!(cls["device"], "cpu");
    assert_eq!(cls["dtype"], "f32");
    assert_eq!(cls["batching"]["max_batch_size"], 8);
    assert!(cls["batching"]["max_queue_size"].as_u64().unwrap() >= 1);
    assert!(cls["batching"]["max_queue_delay_ms"].is_u64());
    assert_eq!(cls["instances"], 1);
    assert_eq!(cls["outputs"], json!(["output"]));

    let det = &models[1];
    assert_eq!(det["task"], "detect");
    assert_eq!(det["architecture"], "tiny_yolo");
    assert_eq!(det["num_classes"], DETECTOR_CLASSES);
    assert_eq!(det["outputs"], json!(["head_0", "head_1"]));

    let (status, one) = get_json(&http, &server.url("/v1/models/cls")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&one, cls);
    let missing = api_error(http.get(server.url("/v1/models/nope")).send().await.unwrap()).await;
    assert_eq!((missing.status, missing.kind.as_str()), (StatusCode::NOT_FOUND, "model_not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_classify_accepts_raw_multipart_and_json_bodies() {
    let server = standard();
    let http = client();
    let png = images::png(80, 60, 1);
    let jpeg = images::jpeg(50, 70, 2);

    // Raw body: default top 5, labels, original size, timing headers.
    let response = rest::classify_raw(&http, &server, "cls", png.clone(), "").await;
    for name in ["x-queue-time", "x-inference-time", "x-total-time"] {
        timing_header(&response, name);
    }
    let body = ok_json(response).await;
    assert_eq!(body["model"], "cls");
    let result = &body["results"][0];
    assert_eq!((result["width"].as_u64(), result["height"].as_u64()), (Some(80), Some(60)));
    let classes = result["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 5);
    let mut previous = f64::INFINITY;
    for class in classes {
        let (index, score) = (class["index"].as_u64().unwrap(), class["score"].as_f64().unwrap());
        assert!(index < CLASSES as u64);
        assert_eq!(class["label"], format!("class{index}"));
        assert!((0.0..=1.0).contains(&score) && score <= previous, "scores must be probabilities, best first: {body}");
        previous = score;
    }

    // Every class: a probability distribution.
    let all = ok_json(rest::classify_raw(&http, &server, "cls", png.clone(), "?top_k=10").await).await;
    let png_scores = scores(&all["results"][0]);
    assert_eq!(png_scores.len(), CLASSES);
    let total: f32 = png_scores.values().sum();
    assert!((total - 1.0).abs() < 1e-4, "softmax sums to {total}");

    // Multipart: two image parts (PNG, JPEG) and a text parameter; results in part order.
    let form = Form::new()
        .part("image", Part::bytes(png.clone()).file_name("a.png").mime_str("image/png").unwrap())
        .part("image", Part::bytes(jpeg.clone()).file_name("b.jpg").mime_str("image/jpeg").unwrap())
        .text("top_k", "10");
    let response = http.post(server.url("/v1/models/cls/classify")).multipart(form).send().await.unwrap();
    let multi = ok_json(response).await;
    let results = multi["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!((results[1]["width"].as_u64(), results[1]["height"].as_u64()), (Some(50), Some(70)));
    assert!(scores_diff(&scores(&results[0]), &png_scores) < 1e-5, "same image, different scores");
    let jpeg_scores = scores(&results[1]);

    // JSON: a data URL and plain base64, with parameters in the body.
    let body = json!({
        "images": [format!("data:image/jpeg;base64,{}", B64.encode(&jpeg)), B64.encode(&png)],
        "top_k": 2,
        "classes": [1, 2, 7],
    });
    let response = http.post(server.url("/v1/models/cls/classify")).json(&body).send().await.unwrap();
    let from_json = ok_json(response).await;
    let results = from_json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (result, reference) in results.iter().zip([&jpeg_scores, &png_scores]) {
        let got = scores(result);
        assert_eq!(got.len(), 2);
        for (index, score) in &got {
            assert!([1, 2, 7].contains(index), "class {index} was not asked for");
            assert!((score - reference[index]).abs() < 1e-5);
        }
    }
}

/// Asserts detections are well-formed boxes inside a `width` x `height` image, best first.
fn check_detections(result: &Value, width: f64, height: f64) -> Vec<Value> {
    assert_eq!((result["width"].as_f64(), result["height"].as_f64()), (Some(width), Some(height)));
    let detections = result["detections"].as_array().unwrap_or_else(|| panic!("no detections array: {result}")).clone();
    let mut previous = f64::INFINITY;
    for d in &detections {
        let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(b.len(), 4);
        assert!(0.0 <= b[0] && b[0] <= b[2] && b[2] <= width, "x out of the image: {d}");
        assert!(0.0 <= b[1] && b[1] <= b[3] && b[3] <= height, "y out of the image: {d}");
        assert!(d["class_id"].as_u64().unwrap() < DETECTOR_CLASSES as u64);
        let score = d["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score) && score <= previous, "scores best first: {result}");
        previous = score;
    }
    detections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_detect_gives_boxes_in_original_pixels() {
    let server = standard();
    let http = client();
    let wide = images::jpeg(200, 100, 4);
    let url = |q: &str| server.url(&format!("/v1/models/det/detect{q}"));

    let response = http
        .post(url("?score_threshold=0&max_detections=40"))
        .header("content-type", "image/jpeg")
        .body(wide.clone())
        .send()
        .await
        .unwrap();
    timing_header(&response, "x-total-time");
    let body = ok_json(response).await;
    let boxes = check_detections(&body["results"][0], 200.0, 100.0);
    assert!(!boxes.is_empty() && boxes.len() <= 40, "{} boxes", boxes.len());
    // The network sees 64x64; boxes past x = 64 show they were mapped back to the 200-pixel image.
    let right = boxes.iter().map(|d| d["bbox"][2].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(right > 64.0, "boxes are not in original pixels (rightmost x2 = {right})");

    let few = ok_json(
        http.post(url("?score_threshold=0&max_detections=3&classes=1"))
            .header("content-type", "image/jpeg")
            .body(wide.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let few = check_detections(&few["results"][0], 200.0, 100.0);
    assert!(few.len() <= 3 && few.iter().all(|d| d["class_id"] == 1), "{few:?}");

    let form = Form::new()
        .part("image", Part::bytes(wide.clone()).file_name("wide.jpg").mime_str("image/jpeg").unwrap())
        .part("image", Part::bytes(images::png(70, 90, 5)).file_name("tall.png").mime_str("image/png").unwrap())
        .text("score_threshold", "0")
        .text("iou_threshold", "0.3");
    let multi = ok_json(http.post(url("")).multipart(form).send().await.unwrap()).await;
    check_detections(&multi["results"][0], 200.0, 100.0);
    check_detections(&multi["results"][1], 70.0, 90.0);

    let body = json!({"images": [B64.encode(&wide)], "score_threshold": 0.0, "max_detections": 5});
    let from_json = ok_json(http.post(url("")).json(&body).send().await.unwrap()).await;
    let boxes = check_detections(&from_json["results"][0], 200.0, 100.0);
    assert!(!boxes.is_empty() && boxes.len() <= 5);
}

/// The v2 JSON request for an FP32 `input` tensor.
fn tensor_request(values: &[f32], n: usize) -> Value {
    json!({"id": "req-7", "inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, INPUT_SIZE, INPUT_SIZE], "data": values}]})
}

/// Splits a binary v2 response into its JSON header and the bytes after it.
async fn binary_response(response: reqwest::Response) -> (Value, Vec<u8>) {
    assert_eq!(response.status(), StatusCode::OK);
    let length: usize = response
        .headers()
        .get("inference-header-content-length")
        .expect("binary response carries Inference-Header-Content-Length")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    (serde_json::from_slice(&bytes[..length]).unwrap(), bytes[length..].to_vec())
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .and_then(|outs| outs.iter().find(|o| o["name"] == name))
        .unwrap_or_else(|| panic!("no output `{name}` in {body}"))
}

fn f32s(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_protocol_over_rest() {
    let server = standard();
    let http = client();

    let (status, meta) = get_json(&http, &server.url("/v2")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(meta["name"].as_str().is_some_and(|n| !n.is_empty()) && meta["version"].is_string(), "{meta}");
    let extensions = meta["extensions"].as_array().unwrap();
    assert!(extensions.contains(&json!("model_configuration")) && extensions.contains(&json!("statistics")));
    assert_eq!(get_json(&http, &server.url("/v2/health/live")).await, (StatusCode::OK, json!({"live": true})));
    assert_eq!(get_json(&http, &server.url("/v2/health/ready")).await, (StatusCode::OK, json!({"ready": true})));

    let (status, model) = get_json(&http, &server.url("/v2/models/cls")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model["name"], "cls");
    assert_eq!(model["versions"], json!(["1"]));
    let inputs = model["inputs"].as_array().unwrap();
    assert!(inputs.contains(&json!({"name": "input", "datatype": "FP32", "shape": [-1, 3, INPUT_SIZE, INPUT_SIZE]})));
    assert!(inputs.iter().any(|i| i["name"] == "image" && i["datatype"] == "BYTES"), "{model}");
    assert!(model["outputs"].as_array().unwrap().iter().any(|o| o["name"] == "output" && o["datatype"] == "FP32"));
    let (status, versioned) = get_json(&http, &server.url("/v2/models/cls/versions/1")).await;
    assert_eq!((status, &versioned), (StatusCode::OK, &model));
    for path in ["/v2/models/cls/ready", "/v2/models/det/versions/1/ready"] {
        let (status, body) = get_json(&http, &server.url(path)).await;
        assert_eq!((status, &body["ready"]), (StatusCode::OK, &json!(true)), "{path}: {body}");
    }
    let wrong_version = api_error(http.get(server.url("/v2/models/cls/versions/2/ready")).send().await.unwrap()).await;
    assert_eq!(wrong_version.status, StatusCode::NOT_FOUND);

    // FP32 tensor in JSON -> raw logits in JSON, the request id echoed.
    let x = random_values(INPUT_ELEMENTS, 11);
    let response = http.post(server.url("/v2/models/cls/infer")).json(&tensor_request(&x, 1)).send().await.unwrap();
    let body = ok_json(response).await;
    assert_eq!((&body["model_name"], &body["id"]), (&json!("cls"), &json!("req-7")));
    let logits = output(&body, "output");
    assert_eq!((&logits["datatype"], &logits["shape"]), (&json!("FP32"), &json!([1, CLASSES])));
    let logits = f32s(&logits["data"]);

    // The same with binary tensor data both ways (Triton's binary extension).
    let header = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, INPUT_SIZE, INPUT_SIZE],
                    "parameters": {"binary_data_size": INPUT_ELEMENTS * 4}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut payload = header.clone().into_bytes();
    payload.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    let response = http
        .post(server.url("/v2/models/cls/versions/1/infer"))
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(payload)
        .send()
        .await
        .unwrap();
    let (head, raw) = binary_response(response).await;
    assert_eq!(output(&head, "output")["parameters"]["binary_data_size"], CLASSES * 4);
    let binary: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(binary, logits, "binary and JSON outputs of the same input differ");

    // BYTES images -> one JSON result per image, as /v1 classify gives them.
    let (png, jpeg) = (images::png(80, 60, 1), images::jpeg(50, 70, 2));
    let request = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                      "data": [B64.encode(&png), B64.encode(&jpeg)]}]});
    let body = ok_json(http.post(server.url("/v2/models/cls/infer")).json(&request).send().await.unwrap()).await;
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{body}");
    assert_eq!((&outputs[0]["datatype"], &outputs[0]["shape"][0]), (&json!("BYTES"), &json!(2)));
    let docs: Vec<Value> = outputs[0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_str(d.as_str().unwrap()).unwrap())
        .collect();
    let v1 = ok_json(rest::classify_raw(&http, &server, "cls", png, "").await).await;
    assert_eq!(docs[0]["width"], 80);
    assert_eq!(docs[1]["height"], 70);
    assert!(scores_diff(&scores(&docs[0]), &scores(&v1["results"][0])) < 1e-5);

    // Detector raw heads: [N, anchors*(5+classes), h, w] at strides 32 and 16.
    let response = http.post(server.url("/v2/models/det/infer")).json(&tensor_request(&x, 1)).send().await.unwrap();
    let body = ok_json(response).await;
    let per_anchor = 3 * (5 + DETECTOR_CLASSES);
    assert_eq!(output(&body, "head_0")["shape"], json!([1, per_anchor, 2, 2]));
    assert_eq!(output(&body, "head_1")["shape"], json!([1, per_anchor, 4, 4]));

    // Triton's configuration and statistics extensions.
    let (status, config) = get_json(&http, &server.url("/v2/models/cls/config")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&config["name"], &config["max_batch_size"]), (&json!("cls"), &json!(8)));
    let input = config["input"].as_array().unwrap().iter().find(|i| i["name"] == "input").expect("input in config");
    assert_eq!((&input["data_type"], &input["dims"]), (&json!("TYPE_FP32"), &json!([3, INPUT_SIZE, INPUT_SIZE])));
    assert!(config["dynamic_batching"].is_object());
    let (status, stats) = get_json(&http, &server.url("/v2/models/cls/stats")).await;
    assert_eq!(status, StatusCode::OK);
    let cls_stats = &stats["model_stats"][0];
    assert_eq!(cls_stats["name"], "cls");
    // 2 tensor requests of 1 image, 2 images, 1 image.
    assert!(cls_stats["inference_count"].as_u64().unwrap() >= 5, "{stats}");
    assert!(cls_stats["execution_count"].as_u64().unwrap() >= 1, "{stats}");
    assert!(cls_stats["inference_stats"]["success"]["count"].as_u64().unwrap() >= 4, "{stats}");
    let (status, all) = get_json(&http, &server.url("/v2/models/stats")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = all["model_stats"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cls", "det"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_openapi_and_offline_docs() {
    let server = standard();
    let http = client();
    ok_json(rest::classify_raw(&http, &server, "cls", images::png(40, 40, 0), "").await).await;

    let text = rest::metrics(&http, &server).await;
    let cls = [("model", "cls")];
    let ok = [("model", "cls"), ("endpoint", "classify"), ("status", "ok")];
    assert_eq!(metrics::sample(&text, "csp_requests_total", &ok), Some(1.0), "{text}");
    for histogram in
        ["csp_decode_seconds", "csp_queue_seconds", "csp_inference_seconds", "csp_request_seconds", "csp_batch_size"]
    {
        let count = metrics::sample(&text, &format!("{histogram}_count"), &cls);
        assert!(count.is_some_and(|c| c >= 1.0), "{histogram}_count = {count:?}\n{text}");
    }
    for gauge in ["csp_queue_depth", "csp_in_flight_requests"] {
        assert!(metrics::sample(&text, gauge, &cls).is_some(), "no {gauge} gauge\n{text}");
    }

    let response = http.get(server.url("/openapi.json")).send().await.unwrap();
    let doc = ok_json(response).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    for path in ["/v1/models/{name}/classify", "/v1/models/{name}/detect", "/v2/models/{name}/infer", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from openapi.json");
    }

    let response = http.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap().to_ascii_lowercase();
    assert!(page.contains("openapi.json"), "the docs page does not read /openapi.json");
    // Works offline: nothing is loaded from another host.
    for external in ["src=\"http", "src='http", "src=\"//", "src='//", "@import", "url(http", "url(//"] {
        assert!(!page.contains(external), "the docs page loads an external resource (`{external}`)");
    }
    for link in page.split("<link").skip(1) {
        let tag = link.split('>').next().unwrap_or_default();
        assert!(
            !tag.contains("http") && !tag.contains("\"//"),
            "the docs page links an external resource: <link{tag}>"
        );
    }
}

/// `--model NAME=FILE.safetensors`, `--model NAME=CFG@WEIGHTS`, flags as defaults, TOML overrides
/// (input size, batching, instances) and `CSP_*` environment settings all reach the served models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_from_flags_environment_and_config_overrides() {
    let f = fixtures();
    let http = client();
    let server = ServerBuilder::new()
        .model("plain", &f.classifier)
        .model_with_arch("yolo", &f.detector_cfg, &f.detector_weights)
        .args(["--max-batch-size", "2", "--instances", "2"])
        .start();
    let (_, list) = get_json(&http, &server.url("/v1/models")).await;
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(), ["plain", "yolo"]);
    for m in models {
        assert_eq!((&m["batching"]["max_batch_size"], &m["instances"]), (&json!(2), &json!(2)), "{m}");
    }
    assert_eq!(models[0]["labels"], json!([]), "no labels file was given");
    let body = ok_json(rest::classify_raw(&http, &server, "plain", images::png(30, 20, 1), "").await).await;
    assert!(body["results"][0]["classes"][0]["label"].is_null(), "{body}");
    let response = http.post(server.url("/v1/models/yolo/detect")).header("content-type", "image/png");
    ok_json(response.body(images::png(30, 20, 1)).send().await.unwrap()).await;
    drop(server);

    // The environment sets what flags set.
    let server = ServerBuilder::new()
        .env("CSP_MODEL", format!("envmodel={}", f.classifier.display()))
        .env("CSP_MAX_BATCH_SIZE", "3")
        .start();
    let (_, model) = get_json(&http, &server.url("/v1/models/envmodel")).await;
    assert_eq!(model["batching"]["max_batch_size"], 3, "{model}");
    drop(server);

    // Per-model TOML settings: a larger detector input, its own batching.
    let config = csp_e2e::fixtures::write_config(
        "overrides",
        &format!(
            "[[models]]\nname = \"big\"\narch = {:?}\nweights = {:?}\ninput_size = [96, 96]\n\
             max_batch_size = 5\nmax_queue_delay_ms = 7\nmax_queue_size = 11\n",
            f.detector_cfg.display().to_string(),
            f.detector_weights.display().to_string(),
        ),
    );
    let server = ServerBuilder::new().config(&config).start();
    let (_, model) = get_json(&http, &server.url("/v1/models/big")).await;
    assert_eq!(model["input_size"], json!([96, 96]));
    assert_eq!(model["batching"], json!({"max_batch_size": 5, "max_queue_delay_ms": 7, "max_queue_size": 11}));
    let x = random_values(3 * 96 * 96, 1);
    let request = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 96, 96], "data": x}]});
    let body = ok_json(http.post(server.url("/v2/models/big/infer")).json(&request).send().await.unwrap()).await;
    let per_anchor = 3 * (5 + DETECTOR_CLASSES);
    assert_eq!(output(&body, "head_0")["shape"], json!([1, per_anchor, 3, 3]));
    assert_eq!(output(&body, "head_1")["shape"], json!([1, per_anchor, 6, 6]));
}

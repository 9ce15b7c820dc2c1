//! Malformed and hostile REST requests, one table: each must get its documented 4xx (README,
//! "Server") with a JSON body `{"error", "kind"}` whose message names the problem, never a 5xx,
//! within the client's timeout. (The gRPC counterparts are in bad_inputs.rs.)

use base64::Engine;
use csp_e2e::fixtures::{random_values, INPUT_ELEMENTS};
use csp_e2e::rest::api_error;
use csp_e2e::{images, Server};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use super::{corpus, CLASSIFIER, DETECTOR, MAX_BODY};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub struct Expect {
    status: StatusCode,
    /// The JSON `kind`; None where the body is the framework's own (405, 415 before routing).
    kind: Option<&'static str>,
    /// A word the message must contain (case-insensitive), so it says what was wrong.
    word: &'static str,
}

pub struct Case {
    pub name: &'static str,
    pub request: RequestBuilder,
    pub expect: Expect,
}

fn tensor(shape: &[i64], datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]})
}

/// An FP32 `input` in Triton's binary tensor extension: JSON header, then little-endian floats.
fn binary_tensor(shape: &[usize], values: &[f32]) -> (Vec<u8>, usize) {
    let bytes = values.len() * 4;
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
                                    "parameters": {"binary_data_size": bytes}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    (body, header.len())
}

fn nested(depth: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth))
}

pub fn cases(http: &Client, server: &Server) -> Vec<Case> {
    let classify = server.url(&format!("/v1/models/{CLASSIFIER}/classify"));
    let detect = server.url(&format!("/v1/models/{DETECTOR}/detect"));
    let infer = server.url(&format!("/v2/models/{CLASSIFIER}/infer"));
    let raw =
        |url: &str, content_type: &str, body: Vec<u8>| http.post(url).header("content-type", content_type).body(body);
    let file = |url: &str, name: &str| raw(url, "application/octet-stream", corpus(name));
    let png = corpus("cls.png");
    let five_images: Vec<String> = (0..5).map(|i| B64.encode(images::png(16, 16, i))).collect();
    let mut five_parts = Form::new();
    for i in 0..5 {
        five_parts = five_parts.part("image", Part::bytes(images::png(16, 16, i)).file_name(format!("{i}.png")));
    }
    let text_parts = Form::new().text("comment", "no image here");
    let one_input = random_values(INPUT_ELEMENTS, 1);
    // Over the 4-image limit as one binary FP32 batch (fits the body limit: 5 * 48 KiB + header).
    let (big_batch, big_header) = binary_tensor(&[5, 3, 64, 64], &vec![0.0; 5 * INPUT_ELEMENTS]);
    let mut with_nan = one_input.clone();
    with_nan[1234] = f32::NAN;
    let (nan_tensor, nan_header) = binary_tensor(&[1, 3, 64, 64], &with_nan);
    let mut with_inf = one_input.clone();
    with_inf[7] = f32::NEG_INFINITY;
    let (inf_tensor, inf_header) = binary_tensor(&[1, 3, 64, 64], &with_inf);
    let mut overflowing = serde_json::to_value(&one_input).unwrap_or_default();
    overflowing[0] = json!(1e300);
    let binary = |body: Vec<u8>, header: usize| {
        raw(&infer, "application/octet-stream", body).header("inference-header-content-length", header)
    };
    let deep_images = format!("{{\"images\": {}}}", nested(100_000, "\"AAAA\""));
    let deep_tensor = format!(
        "{{\"inputs\": [{{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [1, 3, 64, 64], \"data\": {}}}]}}",
        nested(100_000, "0.5")
    );
    let huge_json = json!({"images": [B64.encode(vec![0u8; MAX_BODY])]}).to_string().into_bytes();
    let many_strings = json!({"images": vec!["A"; 60_000]}).to_string().into_bytes();
    let bytes_batch: Vec<String> = (0..5).map(|_| B64.encode(&png)).collect();
    let v2_bytes_batch = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [5], "data": bytes_batch}]});

    use StatusCode as S;
    let e = |status, kind, word| Expect { status, kind: Some(kind), word };
    let framework = |status, word| Expect { status, kind: None, word };
    let c = |name, request, expect| Case { name, request, expect };
    vec![
        // Not images at all.
        c("zero bytes", raw(&classify, "image/png", vec![]), e(S::BAD_REQUEST, "invalid_input", "empty")),
        c("zero bytes, octet-stream", raw(&detect, "application/octet-stream", vec![]), e(S::BAD_REQUEST, "invalid_input", "empty")),
        c("text with an image type", raw(&classify, "image/jpeg", b"hello, not a picture".to_vec()), e(S::BAD_REQUEST, "bad_image", "text")),
        c("text/plain body", raw(&classify, "text/plain", b"hello".to_vec()), framework(S::UNSUPPORTED_MEDIA_TYPE, "content type")),
        c("HTML page as text/html", raw(&classify, "text/html", corpus("page.html")), framework(S::UNSUPPORTED_MEDIA_TYPE, "content type")),
        c("HTML page as an image", file(&classify, "page.html"), e(S::BAD_REQUEST, "bad_image", "HTML")),
        c("SVG as image/svg+xml", raw(&classify, "image/svg+xml", corpus("shape.svg")), e(S::BAD_REQUEST, "bad_image", "SVG")),
        c("JSON sent as an image", raw(&detect, "image/png", b"{\"images\": []}".to_vec()), e(S::BAD_REQUEST, "bad_image", "JSON")),
        c("base64 of an HTML page", http.post(&classify).json(&json!({"images": [B64.encode(corpus("page.html"))]})), e(S::BAD_REQUEST, "bad_image", "HTML")),
        c("multipart with a text part only", http.post(&classify).multipart(text_parts), e(S::BAD_REQUEST, "invalid_input", "comment")),
        // Truncated and corrupt files.
        c("truncated JPEG", raw(&classify, "image/jpeg", images::truncated_jpeg()), e(S::BAD_REQUEST, "bad_image", "truncated")),
        c("truncated PNG", raw(&classify, "image/png", images::truncated_png()), e(S::BAD_REQUEST, "bad_image", "decode")),
        c("PNG cut after its header", file(&classify, "header-only.png"), e(S::BAD_REQUEST, "bad_image", "PNG")),
        c("truncated GIF", file(&classify, "truncated.gif"), e(S::BAD_REQUEST, "bad_image", "GIF")),
        c("truncated WebP", file(&classify, "truncated.webp"), e(S::BAD_REQUEST, "bad_image", "WebP")),
        c("truncated BMP", file(&detect, "truncated.bmp"), e(S::BAD_REQUEST, "bad_image", "BMP")),
        c("PNG with corrupt image data", file(&classify, "corrupt.png"), e(S::BAD_REQUEST, "bad_image", "decode")),
        c("JPEG with zero colour components", file(&classify, "corrupt-sof.jpg"), e(S::BAD_REQUEST, "bad_image", "JPEG")),
        c("PNG of 0x0 pixels", file(&classify, "zero-size.png"), e(S::BAD_REQUEST, "bad_image", "PNG")),
        c("GIF without frames", file(&classify, "gif-no-frames.gif"), e(S::BAD_REQUEST, "bad_image", "GIF")),
        // Decompression bombs: refused from the header, before any pixel is allocated.
        c("PNG header 65535x65535", file(&classify, "bomb-65535.png"), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("JPEG header 65535x65535", file(&detect, "bomb-65535.jpg"), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("GIF header 65535x65535", file(&classify, "bomb-65535.gif"), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("BMP header 65535x65535", file(&classify, "bomb-65535.bmp"), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("real 16383x16383 WebP in 38 bytes", file(&classify, "bomb-16383.webp"), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("real 4000x4000 PNG of zeros in 2 KB", file(&detect, "bomb-deflate-4000.png"), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("PNG bomb header 100000x100000", raw(&classify, "image/png", images::png_bomb(100_000, 100_000)), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("JPEG header claiming 60000x50000", raw(&detect, "image/jpeg", images::jpeg_with_claimed_size(60_000, 50_000)), e(S::PAYLOAD_TOO_LARGE, "too_large", "pixels")),
        c("real image over the pixel limit", raw(&classify, "image/png", images::solid_png(1200, 1000)), e(S::PAYLOAD_TOO_LARGE, "too_large", "limit")),
        // Huge and deeply nested JSON.
        c("JSON over --max-body-bytes", raw(&classify, "application/json", huge_json), e(S::PAYLOAD_TOO_LARGE, "too_large", "body")),
        c("JSON nested 100000 deep", raw(&classify, "application/json", deep_images.into_bytes()), e(S::BAD_REQUEST, "invalid_input", "JSON")),
        c("v2 tensor data nested 100000 deep", raw(&infer, "application/json", deep_tensor.into_bytes()), e(S::BAD_REQUEST, "invalid_input", "JSON")),
        c("60000 images in one JSON body", raw(&classify, "application/json", many_strings), e(S::PAYLOAD_TOO_LARGE, "too_large", "images")),
        c("malformed JSON", raw(&classify, "application/json", b"{\"images\": [".to_vec()), e(S::BAD_REQUEST, "invalid_input", "JSON")),
        c("JSON images not a list", http.post(&classify).json(&json!({"images": B64.encode(&png)})), e(S::BAD_REQUEST, "invalid_input", "images")),
        c("invalid base64", http.post(&classify).json(&json!({"images": ["%%% not base64 %%%"]})), e(S::BAD_REQUEST, "bad_image", "base64")),
        c("unknown JSON field", http.post(&classify).json(&json!({"images": [B64.encode(&png)], "colour": "red"})), e(S::BAD_REQUEST, "invalid_input", "colour")),
        c("malformed v2 JSON", raw(&infer, "application/json", b"{\"inputs\": 3}".to_vec()), e(S::BAD_REQUEST, "invalid_input", "malformed")),
        // Tensors: shapes, datatypes, values.
        c("wrong tensor shape", http.post(&infer).json(&tensor(&[1, 3, 32, 32], "FP32", json!(vec![0.5; 3 * 32 * 32]))), e(S::BAD_REQUEST, "invalid_input", "shape")),
        c("tensor of rank 3", http.post(&infer).json(&tensor(&[3, 64, 64], "FP32", json!(one_input))), e(S::BAD_REQUEST, "invalid_input", "shape")),
        c("batch of 0", http.post(&infer).json(&tensor(&[0, 3, 64, 64], "FP32", json!([]))), e(S::BAD_REQUEST, "invalid_input", "shape")),
        c("negative batch", http.post(&infer).json(&tensor(&[-1, 3, 64, 64], "FP32", json!(one_input))), e(S::BAD_REQUEST, "invalid_input", "shape")),
        c("batch of i64::MAX", http.post(&infer).json(&tensor(&[i64::MAX, 3, 64, 64], "FP32", json!(one_input))), e(S::PAYLOAD_TOO_LARGE, "too_large", "batch")),
        c("INT8 tensor", http.post(&infer).json(&tensor(&[1, 3, 64, 64], "INT8", json!(vec![1; INPUT_ELEMENTS]))), e(S::BAD_REQUEST, "invalid_input", "FP32")),
        c("FP16 tensor", http.post(&infer).json(&tensor(&[1, 3, 64, 64], "FP16", json!(one_input))), e(S::BAD_REQUEST, "invalid_input", "FP32")),
        c("BOOL tensor", http.post(&infer).json(&tensor(&[1, 3, 64, 64], "BOOL", json!(vec![true; INPUT_ELEMENTS]))), e(S::BAD_REQUEST, "invalid_input", "boolean")),
        c("element count mismatch", http.post(&infer).json(&tensor(&[2, 3, 64, 64], "FP32", json!(one_input))), e(S::BAD_REQUEST, "invalid_input", "elements")),
        c("strings in an FP32 tensor", http.post(&infer).json(&tensor(&[1, 3, 1, 1], "FP32", json!(["a", "b", "c"]))), e(S::BAD_REQUEST, "invalid_input", "shape")),
        c("NaN in a binary FP32 tensor", binary(nan_tensor, nan_header), e(S::BAD_REQUEST, "invalid_input", "finite")),
        c("-Inf in a binary FP32 tensor", binary(inf_tensor, inf_header), e(S::BAD_REQUEST, "invalid_input", "finite")),
        c("1e300 in a JSON FP32 tensor", http.post(&infer).json(&tensor(&[1, 3, 64, 64], "FP32", overflowing)), e(S::BAD_REQUEST, "invalid_input", "finite")),
        c("NaN literal in JSON", raw(&infer, "application/json", br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1, 1], "data": [NaN]}]}"#.to_vec()), e(S::BAD_REQUEST, "invalid_input", "JSON")),
        c("binary tensor of the wrong size", binary(short_tensor(), nan_header), e(S::BAD_REQUEST, "invalid_input", "bytes")),
        c("unknown input name", http.post(&infer).json(&json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": one_input}]})), e(S::BAD_REQUEST, "invalid_input", "pixels")),
        c("no inputs", http.post(&infer).json(&json!({"inputs": []})), e(S::BAD_REQUEST, "invalid_input", "input")),
        c("unknown v2 parameter", http.post(&infer).json(&json!({"parameters": {"colour": "red"}, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": one_input}]})), e(S::BAD_REQUEST, "invalid_input", "colour")),
        c("garbage in a BYTES image", http.post(&infer).json(&json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [B64.encode(b"GIF89a nope")]}]})), e(S::BAD_REQUEST, "bad_image", "GIF")),
        // Unknown models and versions.
        c("unknown model", raw(&server.url("/v1/models/nope/classify"), "image/png", png.clone()), e(S::NOT_FOUND, "model_not_found", "nope")),
        c("model name with a path", raw(&server.url("/v1/models/..%2F..%2Fetc%2Fpasswd/classify"), "image/png", png.clone()), e(S::NOT_FOUND, "model_not_found", "model")),
        c("v2 unknown model", http.post(server.url("/v2/models/nope/infer")).json(&tensor(&[1, 3, 64, 64], "FP32", json!(one_input))), e(S::NOT_FOUND, "model_not_found", "nope")),
        c("v2 unknown version", http.post(server.url(&format!("/v2/models/{CLASSIFIER}/versions/9/infer"))).json(&tensor(&[1, 3, 64, 64], "FP32", json!(one_input))), e(S::NOT_FOUND, "model_not_found", "version")),
        // Oversized batches and bodies.
        c("too many images (JSON)", http.post(&classify).json(&json!({"images": five_images})), e(S::PAYLOAD_TOO_LARGE, "too_large", "images")),
        c("too many images (multipart)", http.post(&classify).multipart(five_parts), e(S::PAYLOAD_TOO_LARGE, "too_large", "images")),
        c("too many images in a tensor", binary(big_batch, big_header), e(S::PAYLOAD_TOO_LARGE, "too_large", "batch")),
        c("too many BYTES images", http.post(&infer).json(&v2_bytes_batch), e(S::PAYLOAD_TOO_LARGE, "too_large", "images")),
        c("body over --max-body-bytes", raw(&classify, "image/png", vec![0x89; MAX_BODY + 50_000]), e(S::PAYLOAD_TOO_LARGE, "too_large", "body")),
        // Parameters and routes.
        c("unknown parameter", raw(&format!("{classify}?foo=1"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "foo")),
        c("detect parameter on classify", raw(&format!("{classify}?score_threshold=0.5"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "score_threshold")),
        c("top_k = 0", raw(&format!("{classify}?top_k=0"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "top_k")),
        c("top_k not a number", raw(&format!("{classify}?top_k=many"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "top_k")),
        c("class id out of range", raw(&format!("{classify}?classes=3,99"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "99")),
        c("score_threshold > 1", raw(&format!("{detect}?score_threshold=1.5"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "score_threshold")),
        c("iou_threshold < 0", raw(&format!("{detect}?iou_threshold=-0.1"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "iou_threshold")),
        c("iou_threshold NaN", raw(&format!("{detect}?iou_threshold=NaN"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "iou_threshold")),
        c("max_detections = 0", raw(&format!("{detect}?max_detections=0"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "max_detections")),
        c("timeout = 0", raw(&format!("{classify}?timeout=0"), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "timeout")),
        c("classify on a detector", raw(&server.url(&format!("/v1/models/{DETECTOR}/classify")), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "detect")),
        c("detect on a classifier", raw(&server.url(&format!("/v1/models/{CLASSIFIER}/detect")), "image/png", png.clone()), e(S::BAD_REQUEST, "invalid_input", "classif")),
        c("GET on an inference route", http.get(&classify), framework(S::METHOD_NOT_ALLOWED, "GET")),
        c("unknown route", http.get(server.url("/v3/everything")), framework(S::NOT_FOUND, "/v3/everything")),
    ]
}

/// A binary FP32 tensor body one float short of what its shape needs.
fn short_tensor() -> Vec<u8> {
    let (mut body, _) = binary_tensor(&[1, 3, 64, 64], &random_values(INPUT_ELEMENTS, 2));
    body.truncate(body.len() - 4);
    body
}

pub async fn check(request: RequestBuilder, expect: &Expect) -> Result<(), String> {
    let response = request.send().await.map_err(|e| format!("request failed (hang or reset?): {e:?}"))?;
    let status = response.status();
    if !status.is_client_error() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("got {status}, want {}: {body}", expect.status));
    }
    let error = api_error(response).await;
    if error.status != expect.status || expect.kind.is_some_and(|k| k != error.kind) {
        return Err(format!(
            "got {} `{}` ({}), want {} {:?}",
            error.status, error.kind, error.message, expect.status, expect.kind
        ));
    }
    if !error.message.to_lowercase().contains(&expect.word.to_lowercase()) {
        return Err(format!("message `{}` does not mention `{}`", error.message, expect.word));
    }
    Ok(())
}

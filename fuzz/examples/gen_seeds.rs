//! Writes the seed corpus, fuzz/corpus/<target>/: small valid inputs for every target, so
//! mutations start next to inputs the code accepts. Deterministic; rerun after a format change:
//! `cargo run -p csp-fuzz --example gen_seeds`.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use candle_core::{Device, Tensor};
use csp_fuzz::targets::darknet::WEIGHTS_CFG;
use csp_models::darknet::parse_cfg_str;
use csp_models::weights::{darknet, native, random};
use csp_server::grpc::pb::cspserve::v1 as csp_pb;
use csp_server::grpc::pb::inference::infer_parameter::ParameterChoice;
use csp_server::grpc::pb::inference::model_infer_request::InferInputTensor;
use csp_server::grpc::pb::inference::{InferParameter, InferTensorContents, ModelInferRequest};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use prost::Message;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    images(&root.join("image"))?;
    http_images(&root.join("http_images"))?;
    http_v2(&root.join("http_v2"))?;
    grpc(&root.join("grpc"))?;
    darknet_cfg(&root.join("darknet_cfg"))?;
    weights(&root.join("darknet_weights"), &root.join("safetensors"))?;
    println!("seeds written under {}", root.display());
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Res<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)?;
    Ok(out.into_inner())
}

fn small_rgb() -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(6, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 60, 128])))
}

fn images(dir: &Path) -> Res<()> {
    let rgb = small_rgb();
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(3, 5, |x, y| Rgba([200, x as u8 * 80, 30, y as u8 * 60])));
    let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(4, 4, |x, y| Luma([(x * 16000 + y * 300) as u16])));
    let grey_alpha =
        DynamicImage::ImageLumaA8(ImageBuffer::from_fn(2, 3, |x, y| LumaA([x as u8 * 100, 255 - y as u8])));
    write(dir, "rgb.png", &encode(&rgb, ImageFormat::Png)?)?;
    write(dir, "rgba.png", &encode(&rgba, ImageFormat::Png)?)?;
    write(dir, "grey16.png", &encode(&grey16, ImageFormat::Png)?)?;
    write(dir, "grey_alpha.png", &encode(&grey_alpha, ImageFormat::Png)?)?;
    write(dir, "rgb.jpg", &encode(&rgb, ImageFormat::Jpeg)?)?;
    write(dir, "rgba.gif", &encode(&rgba, ImageFormat::Gif)?)?;
    write(dir, "rgb.bmp", &encode(&rgb, ImageFormat::Bmp)?)?;
    write(dir, "rgba.webp", &encode(&rgba, ImageFormat::WebP)?)?;
    Ok(())
}

/// One form part: field name, file name, content type, data.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A multipart body with the boundary `XBOUNDARY`.
fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, content_type, data) in parts {
        body.extend_from_slice(format!("--XBOUNDARY\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file_name {
            body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--XBOUNDARY--\r\n");
    body
}

fn http_images(dir: &Path) -> Res<()> {
    let png = encode(&small_rgb(), ImageFormat::Png)?;
    let request = |uri: &str, content_type: &str, body: &[u8]| {
        [uri.as_bytes(), b"\n", content_type.as_bytes(), b"\n", body].concat()
    };
    write(dir, "raw.txt", &request("/v1/models/m/classify?top_k=3", "image/png", &png))?;
    write(dir, "no_content_type.txt", &request("/v1/models/m/detect", "", &png))?;
    let form = multipart(&[
        ("image", Some("a.png"), Some("image/png"), &png),
        ("score_threshold", None, None, b"0.4"),
        ("classes", None, Some("text/plain"), b"0,2,7"),
        ("images", None, None, &png),
    ]);
    write(
        dir,
        "multipart.txt",
        &request("/v1/models/m/detect?max_detections=10", "multipart/form-data; boundary=XBOUNDARY", &form),
    )?;
    let b64 = B64.encode(&png);
    let json = format!(r#"{{"images": ["{b64}", "data:image/png;base64,{b64}"], "top_k": 2, "classes": [1, 3]}}"#);
    write(dir, "json.txt", &request("/v1/models/m/classify?timeout=500", "application/json", json.as_bytes()))?;
    let json = format!(r#"{{"images": ["{b64}"], "iou_threshold": 0.5, "score_threshold": "0.3", "classes": "1,2"}}"#);
    write(dir, "json_detect.txt", &request("/v1/models/m/detect", "application/json; charset=utf-8", json.as_bytes()))?;
    Ok(())
}

fn http_v2(dir: &Path) -> Res<()> {
    let png = encode(&small_rgb(), ImageFormat::Png)?;
    let numbers: Vec<String> = (0..3 * 8 * 8).map(|i| format!("{}", i as f32 / 100.0)).collect();
    let tensor = format!(
        r#"{{"id": "t1", "inputs": [{{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [{}]}}], "outputs": [{{"name": "output"}}], "parameters": {{"timeout": 1000000}}}}"#,
        numbers.join(",")
    );
    write(dir, "tensor_json.txt", &[b"\n", tensor.as_bytes()].concat())?;
    let nested = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [[{}], [{}], [{}]]}}]}}"#,
        numbers[..64].join(","),
        numbers[64..128].join(","),
        numbers[128..].join(",")
    );
    write(dir, "tensor_nested.txt", &[b"\n", nested.as_bytes()].concat())?;
    let b64 = B64.encode(&png);
    let images = format!(
        r#"{{"inputs": [{{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["{b64}", "{b64}"]}}], "parameters": {{"top_k": 2, "classes": [0, 4]}}}}"#
    );
    write(dir, "images_json.txt", &[b"\n", images.as_bytes()].concat())?;
    // Binary tensor data: the JSON's length on the first line, the raw bytes after the JSON.
    let raw: Vec<u8> = (0..3 * 8 * 8).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    let json = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "parameters": {{"binary_data_size": {}}}}}], "outputs": [{{"name": "output", "parameters": {{"binary_data": true}}}}]}}"#,
        raw.len()
    );
    write(dir, "tensor_binary.txt", &[format!("{}\n{json}", json.len()).as_bytes(), &raw].concat())?;
    let mut elements = Vec::new();
    for _ in 0..2 {
        elements.extend_from_slice(&(png.len() as u32).to_le_bytes());
        elements.extend_from_slice(&png);
    }
    let json = format!(
        r#"{{"inputs": [{{"name": "image", "shape": [2, 1], "datatype": "BYTES", "parameters": {{"binary_data_size": {}}}}}], "parameters": {{"score_threshold": 0.3}}}}"#,
        elements.len()
    );
    write(dir, "images_binary.txt", &[format!("{}\n{json}", json.len()).as_bytes(), &elements].concat())?;
    Ok(())
}

fn grpc(dir: &Path) -> Res<()> {
    let png = encode(&small_rgb(), ImageFormat::Png)?;
    let param = |choice| InferParameter { parameter_choice: Some(choice) };
    let raw: Vec<u8> = (0..3 * 8 * 8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let tensor = ModelInferRequest {
        model_name: "m".into(),
        id: "1".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3, 8, 8],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        parameters: HashMap::from([("timeout".to_string(), param(ParameterChoice::Int64Param(5_000_000)))]),
        ..Default::default()
    };
    write(dir, "v2_tensor_raw.bin", &tensor.encode_to_vec())?;
    let images = ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![2],
            contents: Some(InferTensorContents {
                bytes_contents: vec![png.clone().into(), png.clone().into()],
                ..Default::default()
            }),
            ..Default::default()
        }],
        parameters: HashMap::from([
            ("top_k".to_string(), param(ParameterChoice::Int64Param(3))),
            ("classes".to_string(), param(ParameterChoice::StringParam("1,2".into()))),
        ]),
        ..Default::default()
    };
    write(dir, "v2_images_typed.bin", &images.encode_to_vec())?;
    let mut elements = (png.len() as u32).to_le_bytes().to_vec();
    elements.extend_from_slice(&png);
    let images_raw = ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![elements.into()],
        parameters: HashMap::from([("score_threshold".to_string(), param(ParameterChoice::DoubleParam(0.3)))]),
        ..Default::default()
    };
    write(dir, "v2_images_raw.bin", &images_raw.encode_to_vec())?;
    let classify = csp_pb::ClassifyRequest {
        model: "m".into(),
        images: vec![png.clone().into()],
        top_k: Some(5),
        classes: vec![1, 2],
        timeout_ms: Some(100),
    };
    write(dir, "classify.bin", &classify.encode_to_vec())?;
    let detect = csp_pb::DetectRequest {
        model: "m".into(),
        images: vec![png.into()],
        score_threshold: Some(0.25),
        iou_threshold: Some(0.45),
        max_detections: Some(100),
        classes: vec![0],
        timeout_ms: None,
    };
    write(dir, "detect.bin", &detect.encode_to_vec())?;
    Ok(())
}

fn darknet_cfg(dir: &Path) -> Res<()> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures");
    for name in [
        "darknet_plain",
        "darknet_route_groups",
        "darknet_detector_layers",
        "darknet_csp_features",
        "darknet_classifier",
    ] {
        let text = std::fs::read(fixtures.join(format!("{name}.cfg")))?;
        write(dir, &format!("{name}.cfg"), &text)?;
    }
    write(dir, "weights_target.cfg", WEIGHTS_CFG.as_bytes())?;
    Ok(())
}

fn weights(darknet_dir: &Path, safetensors_dir: &Path) -> Res<()> {
    let device = Device::Cpu;
    let net = parse_cfg_str(WEIGHTS_CFG, "fuzz.cfg")?;
    let model = random::random_model(net, &device)?;
    std::fs::create_dir_all(darknet_dir)?;
    let v2 = darknet_dir.join("v0.2.weights");
    darknet::write_model_weights(&v2, &model)?;
    // Version 0.1 stores `seen` as a u32: same records after a 16-byte header.
    let bytes = std::fs::read(&v2)?;
    let v1 =
        [&0i32.to_le_bytes()[..], &1i32.to_le_bytes(), &0i32.to_le_bytes(), &7u32.to_le_bytes(), &bytes[20..]].concat();
    write(darknet_dir, "v0.1.weights", &v1)?;
    std::fs::create_dir_all(safetensors_dir)?;
    native::save(&model, &safetensors_dir.join("native.safetensors"))?;
    native::save(&model.folded()?, &safetensors_dir.join("native_folded.safetensors"))?;
    let generic = HashMap::from([
        ("head.fc.weight".to_string(), Tensor::arange(0f32, 6.0, &device)?.reshape((2, 3))?),
        ("head.fc.bias".to_string(), Tensor::zeros(2, candle_core::DType::F16, &device)?),
    ]);
    candle_core::safetensors::save(&generic, safetensors_dir.join("generic.safetensors"))?;
    Ok(())
}

//! The v2 `infer` wire format: request JSON (flat or nested `data`), Triton's binary tensor data
//! extension (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`), input
//! validation against the model, and the response encoding.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::body::decode_base64;
use super::error::{ApiError, ApiResult};
use crate::core::ModelInfo;

/// Header of the binary tensor data extension: the JSON part's length in the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub const INPUT_TENSOR: &str = "input";
pub const INPUT_IMAGE: &str = "image";
pub const OUTPUT_RESULT: &str = "result";

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub data: Option<TensorData>,
}

#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// A `data` array, flattened in row-major order whatever its nesting.
#[derive(Debug, Default, PartialEq)]
pub struct TensorData {
    pub numbers: Vec<f32>,
    pub strings: Vec<String>,
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut data = TensorData::default();
        deserializer.deserialize_any(Flatten(&mut data))?;
        Ok(data)
    }
}

/// Pushes every leaf into the one `TensorData` (serde_json's recursion limit bounds nesting).
struct Flatten<'a>(&'a mut TensorData);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers or strings, in arrays nested to any depth")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.numbers.push(v as f32);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.strings.push(v.to_owned());
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.0.strings.push(v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Splits the body into the JSON request and the binary tensor data after it.
pub fn split_body(body: &Bytes, header_length: Option<&str>) -> ApiResult<(InferRequest, Bytes)> {
    let json_len = match header_length {
        None => body.len(),
        Some(text) => text.trim().parse::<usize>().ok().filter(|&n| n <= body.len()).ok_or_else(|| {
            ApiError::invalid(format!(
                "bad Inference-Header-Content-Length `{text}` for a body of {} bytes",
                body.len()
            ))
        })?,
    };
    let request: InferRequest = serde_json::from_slice(&body[..json_len])
        .map_err(|e| ApiError::invalid(format!("malformed inference request JSON: {e}")))?;
    Ok((request, body.slice(json_len..)))
}

/// What an inference request asks the core for.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// FP32 `input` [N, 3, H, W].
    Tensor { shape: Vec<usize>, data: Vec<f32> },
    /// BYTES `image`: encoded images.
    Images(Vec<Bytes>),
}

/// Validates the one input against the model and decodes its data (JSON or binary).
pub fn decode_input(
    request: &mut InferRequest,
    binary: Bytes,
    info: &ModelInfo,
    max_images: usize,
) -> ApiResult<Decoded> {
    let inputs = request.inputs.len();
    let [input] = request.inputs.as_mut_slice() else {
        return Err(ApiError::invalid(format!(
            "expected exactly one input (`input` FP32 {} or `image` BYTES [-1]), got {}",
            fmt_shape(&tensor_shape(info)),
            inputs
        )));
    };
    let binary_size = parameter(&input.parameters, "binary_data_size")
        .map(|v| v.as_u64().ok_or_else(|| ApiError::invalid("`binary_data_size` must be a non-negative integer")))
        .transpose()?;
    let binary = match (binary_size, &input.data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(format!("input `{}` has both `data` and `binary_data_size`", input.name)))
        }
        (None, None) => return Err(ApiError::invalid(format!("input `{}` has no `data`", input.name))),
        (Some(size), None) => {
            if size != binary.len() as u64 {
                return Err(ApiError::invalid(format!(
                    "input `{}`: binary_data_size is {size} but {} bytes follow the JSON",
                    input.name,
                    binary.len()
                )));
            }
            Some(binary)
        }
        (None, Some(_)) => {
            if !binary.is_empty() {
                return Err(ApiError::invalid(format!("{} unexpected bytes after the JSON request", binary.len())));
            }
            None
        }
    };
    match input.name.as_str() {
        INPUT_TENSOR => decode_tensor(input, binary, info, max_images),
        INPUT_IMAGE => decode_images(input, binary, max_images),
        other => Err(ApiError::invalid(format!(
            "unknown input `{other}`: model `{}` takes `input` (FP32 {}) or `image` (BYTES [-1])",
            info.name,
            fmt_shape(&tensor_shape(info))
        ))),
    }
}

fn parameter<'a>(parameters: &'a Option<Map<String, Value>>, key: &str) -> Option<&'a Value> {
    parameters.as_ref().and_then(|p| p.get(key))
}

/// The `input` tensor's shape with a variable batch: [-1, 3, H, W].
pub fn tensor_shape(info: &ModelInfo) -> [i64; 4] {
    [-1, 3, info.input_size.0 as i64, info.input_size.1 as i64]
}

fn fmt_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

fn check_batch(n: i64, max_images: usize) -> ApiResult<usize> {
    if n > max_images as i64 {
        Err(ApiError::too_large(format!("too many images: batch of {n}, at most {max_images} per request")))
    } else {
        Ok(n as usize)
    }
}

fn decode_tensor(
    input: &mut RequestInput,
    binary: Option<Bytes>,
    info: &ModelInfo,
    max_images: usize,
) -> ApiResult<Decoded> {
    if input.datatype != "FP32" {
        return Err(ApiError::invalid(format!("input `input` must be FP32, got datatype `{}`", input.datatype)));
    }
    let expected = tensor_shape(info);
    let fits = input.shape.len() == 4 && input.shape[0] >= 1 && input.shape[1..] == expected[1..];
    if !fits {
        return Err(ApiError::invalid(format!(
            "input `input` must have shape {} (N >= 1), got {}",
            fmt_shape(&expected),
            fmt_shape(&input.shape)
        )));
    }
    let n = check_batch(input.shape[0], max_images)?;
    let shape = vec![n, 3, info.input_size.0, info.input_size.1];
    let count: usize = shape.iter().product();
    let data = match (binary, &mut input.data) {
        (Some(bytes), _) => {
            if bytes.len() != count * 4 {
                return Err(ApiError::invalid(format!(
                    "input `input`: {} binary bytes for {count} FP32 elements ({} bytes expected)",
                    bytes.len(),
                    count * 4
                )));
            }
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        (None, Some(data)) => {
            if !data.strings.is_empty() {
                return Err(ApiError::invalid("input `input` (FP32) data must be numbers, found strings"));
            }
            if data.numbers.len() != count {
                return Err(ApiError::invalid(format!(
                    "input `input`: shape {} needs {count} elements, data has {}",
                    fmt_shape(&input.shape),
                    data.numbers.len()
                )));
            }
            std::mem::take(&mut data.numbers)
        }
        (None, None) => return Err(ApiError::invalid("input `input` has no `data`")),
    };
    Ok(Decoded::Tensor { shape, data })
}

fn decode_images(input: &mut RequestInput, binary: Option<Bytes>, max_images: usize) -> ApiResult<Decoded> {
    if input.datatype != "BYTES" {
        return Err(ApiError::invalid(format!("input `image` must be BYTES, got datatype `{}`", input.datatype)));
    }
    let n = match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 1 => check_batch(*n, max_images)?,
        _ => {
            return Err(ApiError::invalid(format!(
                "input `image` must have shape [N] or [N,1] (N >= 1), got {}",
                fmt_shape(&input.shape)
            )))
        }
    };
    let images = match (binary, &input.data) {
        (Some(bytes), _) => split_length_prefixed(&bytes)?,
        (None, Some(data)) => {
            if !data.numbers.is_empty() {
                return Err(ApiError::invalid("input `image` (BYTES) data must be base64 strings, found numbers"));
            }
            data.strings
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    decode_base64(text)
                        .map(Bytes::from)
                        .map_err(|e| ApiError::bad_image(index, format!("invalid base64: {e}")))
                })
                .collect::<ApiResult<Vec<_>>>()?
        }
        (None, None) => return Err(ApiError::invalid("input `image` has no `data`")),
    };
    if images.len() != n {
        return Err(ApiError::invalid(format!(
            "input `image`: shape {} needs {n} elements, data has {}",
            fmt_shape(&input.shape),
            images.len()
        )));
    }
    if let Some(index) = images.iter().position(Bytes::is_empty) {
        return Err(ApiError::bad_image(index, "empty image"));
    }
    Ok(Decoded::Images(images))
}

/// BYTES in binary form: each element is a little-endian u32 length, then that many bytes.
fn split_length_prefixed(bytes: &Bytes) -> ApiResult<Vec<Bytes>> {
    let mut elements = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(prefix) = bytes.get(at..at + 4) else {
            return Err(ApiError::invalid("input `image`: binary BYTES data ends inside a length prefix"));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        if len > bytes.len() - start {
            return Err(ApiError::invalid(format!(
                "input `image`: element {} claims {len} bytes, only {} remain",
                elements.len(),
                bytes.len() - start
            )));
        }
        elements.push(bytes.slice(start..start + len));
        at = start + len;
    }
    Ok(elements)
}

/// An output tensor on its way out.
#[derive(Debug)]
pub struct OutTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: OutData,
}

#[derive(Debug)]
pub enum OutData {
    Fp32(Vec<f32>),
    /// One element per entry (BYTES).
    Bytes(Vec<String>),
}

impl OutData {
    fn datatype(&self) -> &'static str {
        match self {
            OutData::Fp32(_) => "FP32",
            OutData::Bytes(_) => "BYTES",
        }
    }

    fn binary(&self) -> Bytes {
        match self {
            OutData::Fp32(values) => {
                let mut buf = BytesMut::with_capacity(values.len() * 4);
                values.iter().for_each(|v| buf.put_f32_le(*v));
                buf.freeze()
            }
            OutData::Bytes(items) => {
                let mut buf = BytesMut::with_capacity(items.iter().map(|s| s.len() + 4).sum());
                for item in items {
                    buf.put_u32_le(item.len() as u32);
                    buf.put_slice(item.as_bytes());
                }
                buf.freeze()
            }
        }
    }
}

/// Picks the requested outputs (all of `available` when the request names none), in request
/// order, each with whether it goes out as binary data.
pub fn select_outputs(request: &InferRequest, available: &[String]) -> ApiResult<Vec<(String, bool)>> {
    let all_binary = parameter(&request.parameters, "binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let Some(requested) = request.outputs.as_ref().filter(|r| !r.is_empty()) else {
        return Ok(available.iter().map(|name| (name.clone(), all_binary)).collect());
    };
    requested
        .iter()
        .map(|output| {
            if !available.contains(&output.name) {
                return Err(ApiError::invalid(format!(
                    "unknown output `{}` (available for this input: {})",
                    output.name,
                    available.join(", ")
                )));
            }
            let binary = parameter(&output.parameters, "binary_data").and_then(Value::as_bool).unwrap_or(all_binary);
            Ok((output.name.clone(), binary))
        })
        .collect()
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<ResponseOutput<'a>>,
}

#[derive(Serialize)]
struct ResponseOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataRef<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    Fp32(&'a [f32]),
    Bytes(&'a [String]),
}

/// An encoded response body; `json_length` is set when binary data follows the JSON.
pub struct Encoded {
    pub body: Bytes,
    pub json_length: Option<usize>,
}

pub fn encode_response(model: &str, id: Option<&str>, outputs: &[(OutTensor, bool)]) -> ApiResult<Encoded> {
    let mut binary_parts = Vec::new();
    let json_outputs = outputs
        .iter()
        .map(|(tensor, binary)| {
            let mut out = ResponseOutput {
                name: &tensor.name,
                datatype: tensor.data.datatype(),
                shape: &tensor.shape,
                parameters: None,
                data: None,
            };
            if *binary {
                let bytes = tensor.data.binary();
                out.parameters = Some(serde_json::json!({ "binary_data_size": bytes.len() }));
                binary_parts.push(bytes);
            } else {
                out.data = Some(match &tensor.data {
                    OutData::Fp32(values) => DataRef::Fp32(values),
                    OutData::Bytes(items) => DataRef::Bytes(items),
                });
            }
            out
        })
        .collect();
    let response = ResponseJson { model_name: model, model_version: super::MODEL_VERSION, id, outputs: json_outputs };
    let json =
        serde_json::to_vec(&response).map_err(|e| ApiError::from(crate::core::InferError::Internal(e.to_string())))?;
    if binary_parts.is_empty() {
        return Ok(Encoded { body: Bytes::from(json), json_length: None });
    }
    let json_length = json.len();
    let mut body = BytesMut::with_capacity(json_length + binary_parts.iter().map(Bytes::len).sum::<usize>());
    body.put_slice(&json);
    binary_parts.iter().for_each(|part| body.put_slice(part));
    Ok(Encoded { body: body.freeze(), json_length: Some(json_length) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fixtures::classifier;
    use serde_json::json;

    fn decode(request: Value, binary: &[u8]) -> ApiResult<Decoded> {
        let body = Bytes::from(request.to_string());
        let (mut request, _) = split_body(&body, None)?;
        decode_input(&mut request, Bytes::copy_from_slice(binary), &classifier(), 4)
    }

    fn tensor_request(shape: Value, data: Value) -> Value {
        json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]})
    }

    #[test]
    fn nested_and_flat_data_flatten_alike() {
        let flat: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let nested = json!([[
            [[0, 1], [2, 3], [4, 5], [6, 7]],
            [[8, 9], [10, 11], [12, 13], [14, 15]],
            [[16, 17], [18, 19], [20, 21], [22, 23]]
        ]]);
        let expected = Decoded::Tensor { shape: vec![1, 3, 4, 2], data: flat.clone() };
        assert_eq!(decode(tensor_request(json!([1, 3, 4, 2]), json!(flat)), &[]).unwrap(), expected);
        assert_eq!(decode(tensor_request(json!([1, 3, 4, 2]), nested), &[]).unwrap(), expected);
    }

    #[test]
    fn tensor_errors_are_clear() {
        let data = json!(vec![0.5; 24]);
        let msg = |r: Value| decode(r, &[]).unwrap_err().message;
        assert!(msg(tensor_request(json!([1, 3, 2, 4]), data.clone())).contains("must have shape [-1,3,4,2]"));
        assert!(msg(tensor_request(json!([1, 3, 4]), data.clone())).contains("must have shape"));
        assert!(msg(tensor_request(json!([0, 3, 4, 2]), json!([]))).contains("N >= 1"));
        assert!(msg(tensor_request(json!([2, 3, 4, 2]), data.clone())).contains("needs 48 elements, data has 24"));
        let int8 = json!({"inputs": [{"name": "input", "datatype": "INT8", "shape": [1, 3, 4, 2], "data": data}]});
        assert!(msg(int8).contains("must be FP32"));
        let wrong = json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 4, 2], "data": data}]});
        assert!(msg(wrong).contains("unknown input `pixels`"));
        assert!(msg(json!({"inputs": []})).contains("exactly one input"));
        let strings = tensor_request(json!([1, 3, 4, 2]), json!(vec!["x"; 24]));
        assert!(msg(strings).contains("must be numbers"));
        let big = decode(tensor_request(json!([5, 3, 4, 2]), json!(vec![0.0; 120])), &[]).unwrap_err();
        assert_eq!(big.status.as_u16(), 413);
        assert!(msg(json!({"inputs": 3})).contains("malformed inference request JSON"));
    }

    #[test]
    fn binary_fp32_input() {
        let values: Vec<f32> = (0..24).map(|v| v as f32 * 0.25).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 4, 2],
            "parameters": {"binary_data_size": 96}}]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&bytes);
        let body = Bytes::from(body);
        let (mut request, binary) = split_body(&body, Some(&header.len().to_string())).unwrap();
        let decoded = decode_input(&mut request, binary, &classifier(), 4).unwrap();
        assert_eq!(decoded, Decoded::Tensor { shape: vec![1, 3, 4, 2], data: values });
        let (mut request, binary) = split_body(&body.slice(..body.len() - 4), Some(&header.len().to_string())).unwrap();
        assert!(decode_input(&mut request, binary, &classifier(), 4)
            .unwrap_err()
            .message
            .contains("binary_data_size is 96"));
        assert!(split_body(&body, Some("99999")).unwrap_err().message.contains("Inference-Header-Content-Length"));
    }

    #[test]
    fn image_input_json_and_binary() {
        let request = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
            "data": ["AAEC", "/w=="]}]});
        let expected = Decoded::Images(vec![Bytes::from_static(&[0, 1, 2]), Bytes::from_static(&[0xff])]);
        assert_eq!(decode(request, &[]).unwrap(), expected);
        let nested = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 1],
            "data": [["AAEC"], ["/w=="]]}]});
        assert_eq!(decode(nested, &[]).unwrap(), expected);
        let binary = [3u32.to_le_bytes().as_slice(), &[0, 1, 2], &1u32.to_le_bytes(), &[0xff]].concat();
        let request = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
            "parameters": {"binary_data_size": binary.len()}}]});
        assert_eq!(decode(request, &binary).unwrap(), expected);
    }

    #[test]
    fn image_input_errors() {
        let msg = |r: Value, bin: &[u8]| decode(r, bin).unwrap_err().message;
        let count = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["AAEC"]}]});
        assert!(msg(count, &[]).contains("needs 2 elements"));
        let dtype = json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]});
        assert!(msg(dtype, &[]).contains("must be BYTES"));
        let b64 = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]});
        assert!(msg(b64, &[]).starts_with("image 0: invalid base64"));
        let truncated = [10u32.to_le_bytes().as_slice(), &[1, 2]].concat();
        let request = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
            "parameters": {"binary_data_size": truncated.len()}}]});
        assert!(msg(request, &truncated).contains("claims 10 bytes"));
        let both = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AA"],
            "parameters": {"binary_data_size": 1}}]});
        assert!(msg(both, &[0]).contains("both"));
        let none = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1]}]});
        assert!(msg(none, &[]).contains("no `data`"));
    }

    #[test]
    fn output_selection_and_binary_flags() {
        let available = vec!["output".to_string()];
        let parse = |v: Value| split_body(&Bytes::from(v.to_string()), None).unwrap().0;
        let all = parse(json!({"inputs": []}));
        assert_eq!(select_outputs(&all, &available).unwrap(), vec![("output".into(), false)]);
        let binary = parse(json!({"inputs": [], "parameters": {"binary_data_output": true}}));
        assert_eq!(select_outputs(&binary, &available).unwrap(), vec![("output".into(), true)]);
        let one = parse(json!({"inputs": [], "outputs": [{"name": "output", "parameters": {"binary_data": true}}]}));
        assert_eq!(select_outputs(&one, &available).unwrap(), vec![("output".into(), true)]);
        let unknown = parse(json!({"inputs": [], "outputs": [{"name": "logits"}]}));
        assert!(select_outputs(&unknown, &available).unwrap_err().message.contains("unknown output `logits`"));
    }

    #[test]
    fn response_json_and_binary_encoding() {
        let outputs = vec![
            (OutTensor { name: "output".into(), shape: vec![1, 2], data: OutData::Fp32(vec![1.5, -2.0]) }, false),
            (OutTensor { name: "result".into(), shape: vec![1], data: OutData::Bytes(vec!["{}".into()]) }, false),
        ];
        let encoded = encode_response("cls", Some("req-1"), &outputs).unwrap();
        assert!(encoded.json_length.is_none());
        let value: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(
            value,
            json!({"model_name": "cls", "model_version": "1", "id": "req-1", "outputs": [
                {"name": "output", "datatype": "FP32", "shape": [1, 2], "data": [1.5, -2.0]},
                {"name": "result", "datatype": "BYTES", "shape": [1], "data": ["{}"]}]})
        );
        let outputs =
            vec![(OutTensor { name: "output".into(), shape: vec![2], data: OutData::Fp32(vec![1.0, 2.0]) }, true)];
        let encoded = encode_response("cls", None, &outputs).unwrap();
        let n = encoded.json_length.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..n]).unwrap();
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(header["outputs"][0].get("data").is_none());
        assert_eq!(&encoded.body[n..], [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat().as_slice());
        let strings = OutData::Bytes(vec!["ab".into()]).binary();
        assert_eq!(&strings[..], [2, 0, 0, 0, b'a', b'b']);
    }
}

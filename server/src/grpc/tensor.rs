//! Tensor data of the v2 protocol: typed `contents` or `raw_input_contents` in, raw bytes out.
//! Raw FP32 is little-endian with no padding; raw BYTES is, per element, a 4-byte little-endian
//! length followed by that many bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::pb::inference::model_infer_request::InferInputTensor;
use super::pb::inference::InferTensorContents;
use crate::core::InferError;

/// Name of the FP32 [N, 3, H, W] input that returns raw model outputs.
pub const TENSOR_INPUT: &str = "input";
/// Name of the BYTES [N] (or [N, 1]) input of encoded images that returns decoded results.
pub const IMAGE_INPUT: &str = "image";
/// Name of the BYTES [N, 1] output of the `image` input: one JSON document per image.
pub const RESULTS_OUTPUT: &str = "result";

/// The one input of a v2 request, checked against its declared datatype and shape.
#[derive(Debug, PartialEq)]
pub enum V2Input {
    Tensor { shape: Vec<usize>, data: Vec<f32> },
    Images(Vec<Bytes>),
}

fn invalid(msg: impl Into<String>) -> InferError {
    InferError::InvalidInput(msg.into())
}

/// Reads the request's single input. `raw` is the request's `raw_input_contents`.
pub fn parse_input(inputs: &[InferInputTensor], raw: &[Bytes]) -> Result<V2Input, InferError> {
    let input = match inputs {
        [one] => one,
        [] => {
            return Err(invalid(format!(
                "the request has no inputs: send `{TENSOR_INPUT}` (FP32 [N,3,H,W]) or `{IMAGE_INPUT}` (BYTES [N])"
            )))
        }
        _ => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(invalid(format!(
                "send exactly one input, `{TENSOR_INPUT}` or `{IMAGE_INPUT}`; got {} ({})",
                inputs.len(),
                names.join(", ")
            )));
        }
    };
    let raw = match raw {
        [] => None,
        [one] => Some(one),
        _ => {
            return Err(invalid(format!(
                "raw_input_contents has {} entries for {} input; it needs one per input",
                raw.len(),
                inputs.len()
            )))
        }
    };
    let typed = input.contents.as_ref().filter(|c| !contents_empty(c));
    if raw.is_some() && typed.is_some() {
        return Err(invalid(format!(
            "input `{}` has both typed contents and raw_input_contents; send one of them",
            input.name
        )));
    }
    let source = match (raw, typed) {
        (Some(raw), _) => Data::Raw(raw),
        (None, Some(typed)) => Data::Typed(typed),
        (None, None) => Data::Typed(&EMPTY_CONTENTS),
    };
    match input.name.as_str() {
        TENSOR_INPUT => parse_fp32(input, source),
        IMAGE_INPUT => parse_images(input, source),
        other => Err(invalid(format!(
            "unknown input `{other}`: this server takes `{TENSOR_INPUT}` (FP32 [N,3,H,W]) or `{IMAGE_INPUT}` (BYTES [N])"
        ))),
    }
}

static EMPTY_CONTENTS: InferTensorContents = InferTensorContents {
    bool_contents: Vec::new(),
    int_contents: Vec::new(),
    int64_contents: Vec::new(),
    uint_contents: Vec::new(),
    uint64_contents: Vec::new(),
    fp32_contents: Vec::new(),
    fp64_contents: Vec::new(),
    bytes_contents: Vec::new(),
};

enum Data<'a> {
    Raw(&'a Bytes),
    Typed(&'a InferTensorContents),
}

fn contents_empty(c: &InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

/// Dimensions as sizes, and their product, refusing negative dimensions and overflow.
fn dims(name: &str, shape: &[i64]) -> Result<(Vec<usize>, usize), InferError> {
    let mut sizes = Vec::with_capacity(shape.len());
    let mut count: usize = 1;
    for &d in shape {
        let d =
            usize::try_from(d).map_err(|_| invalid(format!("input `{name}` has a negative dimension in {shape:?}")))?;
        count = count.checked_mul(d).ok_or_else(|| invalid(format!("input `{name}` shape {shape:?} is too large")))?;
        sizes.push(d);
    }
    Ok((sizes, count))
}

fn parse_fp32(input: &InferInputTensor, data: Data<'_>) -> Result<V2Input, InferError> {
    if input.datatype != "FP32" {
        return Err(invalid(format!("input `{TENSOR_INPUT}` must be FP32, got `{}`", input.datatype)));
    }
    let (shape, count) = dims(&input.name, &input.shape)?;
    let data = match data {
        Data::Raw(raw) => {
            let expected = count.checked_mul(4).ok_or_else(|| invalid("input shape is too large"))?;
            if raw.len() != expected {
                return Err(invalid(format!(
                    "input `{TENSOR_INPUT}` shape {:?} needs {expected} bytes of FP32, raw_input_contents has {}",
                    input.shape,
                    raw.len()
                )));
            }
            f32_from_le(raw)
        }
        Data::Typed(c) => {
            if c.fp32_contents.len() != count {
                return Err(invalid(format!(
                    "input `{TENSOR_INPUT}` shape {:?} needs {count} values in fp32_contents, got {}",
                    input.shape,
                    c.fp32_contents.len()
                )));
            }
            c.fp32_contents.clone()
        }
    };
    Ok(V2Input::Tensor { shape, data })
}

fn parse_images(input: &InferInputTensor, data: Data<'_>) -> Result<V2Input, InferError> {
    if input.datatype != "BYTES" {
        return Err(invalid(format!("input `{IMAGE_INPUT}` must be BYTES, got `{}`", input.datatype)));
    }
    let (shape, count) = dims(&input.name, &input.shape)?;
    if !matches!(shape.as_slice(), [_] | [_, 1]) {
        return Err(invalid(format!("input `{IMAGE_INPUT}` must have shape [N] or [N,1], got {:?}", input.shape)));
    }
    let images = match data {
        Data::Raw(raw) => split_bytes_elements(raw)?,
        Data::Typed(c) => {
            if !c.fp32_contents.is_empty() || !c.int_contents.is_empty() || !c.uint_contents.is_empty() {
                return Err(invalid(format!("input `{IMAGE_INPUT}` is BYTES: put the images in bytes_contents")));
            }
            c.bytes_contents.clone()
        }
    };
    if images.len() != count {
        return Err(invalid(format!(
            "input `{IMAGE_INPUT}` shape {:?} declares {count} images, the data holds {}",
            input.shape,
            images.len()
        )));
    }
    Ok(V2Input::Images(images))
}

/// Little-endian FP32 bytes to values (the length is a multiple of 4, checked by the caller).
pub fn f32_from_le(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn f32_to_le(values: &[f32]) -> Bytes {
    let mut out = BytesMut::with_capacity(values.len() * 4);
    for v in values {
        out.put_f32_le(*v);
    }
    out.freeze()
}

/// Splits raw BYTES tensor data into its elements without copying them.
pub fn split_bytes_elements(raw: &Bytes) -> Result<Vec<Bytes>, InferError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < raw.len() {
        let Some(prefix) = raw.get(at..at + 4) else {
            return Err(invalid(format!(
                "raw BYTES data is truncated: element {} starts at byte {at} but its 4-byte length prefix does not fit in {} bytes",
                out.len(),
                raw.len()
            )));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        let end = start.checked_add(len).filter(|&e| e <= raw.len()).ok_or_else(|| {
            invalid(format!(
                "raw BYTES data is truncated: element {} declares {len} bytes, only {} remain",
                out.len(),
                raw.len() - start
            ))
        })?;
        out.push(raw.slice(start..end));
        at = end;
    }
    Ok(out)
}

/// Encodes BYTES elements as raw tensor data (4-byte little-endian length, then the bytes).
pub fn join_bytes_elements<T: AsRef<[u8]>>(elements: &[T]) -> Result<Bytes, InferError> {
    let total: usize = elements.iter().map(|e| 4 + e.as_ref().len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for e in elements {
        let e = e.as_ref();
        let len = u32::try_from(e.len()).map_err(|_| InferError::Internal("BYTES element over 4 GiB".into()))?;
        out.put_u32_le(len);
        out.put_slice(e);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, datatype: &str, shape: &[i64], contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents,
        }
    }

    fn fp32(values: Vec<f32>) -> InferTensorContents {
        InferTensorContents { fp32_contents: values, ..Default::default() }
    }

    fn message(err: InferError) -> String {
        match err {
            InferError::InvalidInput(m) => m,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn raw_fp32_round_trip_is_little_endian() {
        let values = [1.0f32, -2.5, 0.0, f32::MAX, 1e-30];
        let raw = f32_to_le(&values);
        assert_eq!(&raw[..8], &[0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
        assert_eq!(f32_from_le(&raw), values);
    }

    #[test]
    fn raw_fp32_input() {
        let values: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| i as f32 * 0.5).collect();
        let raw = f32_to_le(&values);
        let input = tensor("input", "FP32", &[2, 3, 2, 2], None);
        let parsed = parse_input(std::slice::from_ref(&input), std::slice::from_ref(&raw)).unwrap();
        assert_eq!(parsed, V2Input::Tensor { shape: vec![2, 3, 2, 2], data: values.clone() });

        // One byte short, one element short, and typed plus raw at once.
        let short = raw.slice(..raw.len() - 1);
        assert!(message(parse_input(std::slice::from_ref(&input), &[short]).unwrap_err()).contains("needs 96 bytes"));
        let typed = tensor("input", "FP32", &[2, 3, 2, 2], Some(fp32(values[1..].to_vec())));
        assert!(message(parse_input(std::slice::from_ref(&typed), &[]).unwrap_err()).contains("needs 24 values"));
        assert!(message(parse_input(&[typed], &[raw]).unwrap_err()).contains("both typed contents and raw"));
    }

    #[test]
    fn typed_fp32_input() {
        let input = tensor("input", "FP32", &[1, 3, 1, 1], Some(fp32(vec![0.1, 0.2, 0.3])));
        assert_eq!(
            parse_input(&[input], &[]).unwrap(),
            V2Input::Tensor { shape: vec![1, 3, 1, 1], data: vec![0.1, 0.2, 0.3] }
        );
    }

    #[test]
    fn wrong_name_type_or_shape_is_invalid_argument() {
        let raw = f32_to_le(&[0.0; 3]);
        let wrong_type = tensor("input", "FP16", &[1, 3, 1, 1], None);
        assert!(message(parse_input(&[wrong_type], std::slice::from_ref(&raw)).unwrap_err()).contains("must be FP32"));
        let wrong_name = tensor("pixels", "FP32", &[1, 3, 1, 1], None);
        assert!(message(parse_input(&[wrong_name], std::slice::from_ref(&raw)).unwrap_err())
            .contains("unknown input `pixels`"));
        let negative = tensor("input", "FP32", &[1, -3, 1, 1], None);
        assert!(
            message(parse_input(&[negative], std::slice::from_ref(&raw)).unwrap_err()).contains("negative dimension")
        );
        let huge = tensor("input", "FP32", &[i64::MAX, i64::MAX], None);
        assert!(message(parse_input(&[huge], std::slice::from_ref(&raw)).unwrap_err()).contains("too large"));
        let image_as_fp32 = tensor("image", "FP32", &[1], None);
        assert!(
            message(parse_input(&[image_as_fp32], std::slice::from_ref(&raw)).unwrap_err()).contains("must be BYTES")
        );
        let image_2d = tensor("image", "BYTES", &[1, 2], None);
        assert!(message(parse_input(&[image_2d], &[]).unwrap_err()).contains("shape [N] or [N,1]"));
        assert!(message(parse_input(&[], &[]).unwrap_err()).contains("no inputs"));
        let both = [tensor("input", "FP32", &[1, 3, 1, 1], None), tensor("image", "BYTES", &[1], None)];
        assert!(message(parse_input(&both, &[raw.clone(), raw.clone()]).unwrap_err()).contains("exactly one input"));
        let one = tensor("input", "FP32", &[1, 3, 1, 1], None);
        assert!(message(parse_input(&[one], &[raw.clone(), raw]).unwrap_err()).contains("one per input"));
    }

    #[test]
    fn bytes_length_prefix_parsing() {
        let raw = Bytes::from_static(b"\x03\x00\x00\x00abc\x00\x00\x00\x00\x02\x00\x00\x00xy");
        let parts = split_bytes_elements(&raw).unwrap();
        assert_eq!(parts, vec![Bytes::from_static(b"abc"), Bytes::new(), Bytes::from_static(b"xy")]);
        assert_eq!(join_bytes_elements(&parts).unwrap(), raw);
        assert!(split_bytes_elements(&Bytes::new()).unwrap().is_empty());

        // A prefix cut short, and a length past the end.
        let cut = Bytes::from_static(b"\x01\x00\x00\x00a\x05\x00");
        assert!(message(split_bytes_elements(&cut).unwrap_err()).contains("element 1 starts at byte 5"));
        let over = Bytes::from_static(b"\x09\x00\x00\x00abc");
        assert!(message(split_bytes_elements(&over).unwrap_err()).contains("declares 9 bytes, only 3 remain"));
        let max = Bytes::from_static(b"\xff\xff\xff\xff");
        assert!(message(split_bytes_elements(&max).unwrap_err()).contains("truncated"));
    }

    #[test]
    fn image_input_raw_and_typed() {
        let raw = join_bytes_elements(&[b"png1".as_slice(), b"jpeg2"]).unwrap();
        for shape in [&[2i64][..], &[2, 1]] {
            let input = tensor("image", "BYTES", shape, None);
            let parsed = parse_input(&[input], std::slice::from_ref(&raw)).unwrap();
            assert_eq!(parsed, V2Input::Images(vec![Bytes::from_static(b"png1"), Bytes::from_static(b"jpeg2")]));
        }
        let typed = InferTensorContents { bytes_contents: vec![Bytes::from_static(b"img")], ..Default::default() };
        let input = tensor("image", "BYTES", &[1, 1], Some(typed));
        assert_eq!(parse_input(&[input], &[]).unwrap(), V2Input::Images(vec![Bytes::from_static(b"img")]));

        let miscounted = tensor("image", "BYTES", &[3], None);
        assert!(
            message(parse_input(&[miscounted], &[raw]).unwrap_err()).contains("declares 3 images, the data holds 2")
        );
        let no_data = tensor("image", "BYTES", &[1], None);
        assert!(message(parse_input(&[no_data], &[]).unwrap_err()).contains("declares 1 images, the data holds 0"));
    }
}

//! Request bodies: reading them under the size limit, and turning the friendly endpoints' three
//! body forms (raw image, multipart, JSON) into encoded images plus parameters.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, request::Parts, HeaderMap};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::params::{Params, Raw};
use crate::core::{Task, BODY_READ_TIMEOUT, BODY_STALL_TIMEOUT};

/// Reads the whole body, refusing more than `limit` bytes with 413 (from Content-Length when the
/// client announces it, else while streaming) and an empty body with 400.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = announced {
        if length > limit as u64 {
            return Err(body_too_large(limit));
        }
    }
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    let give_up = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    loop {
        let next =
            tokio::time::timeout_at(give_up.min(tokio::time::Instant::now() + BODY_STALL_TIMEOUT), stream.next());
        let Some(chunk) = next.await.map_err(|_| body_timeout(total))? else { break };
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("could not read the request body: {e}")))?;
        total += chunk.len();
        if total > limit {
            return Err(body_too_large(limit));
        }
        // One chunk (the common case for small bodies) is kept without copying.
        match (&mut first, &mut joined) {
            (None, None) => first = Some(chunk),
            (Some(_), None) => {
                let mut buf = BytesMut::with_capacity(announced.map_or(total, |n| n as usize).max(total));
                buf.extend_from_slice(&first.take().unwrap_or_default());
                buf.extend_from_slice(&chunk);
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    let bytes = joined.map(BytesMut::freeze).or(first).unwrap_or_default();
    if bytes.is_empty() {
        return Err(ApiError::invalid("empty request body"));
    }
    Ok(bytes)
}

fn body_timeout(received: usize) -> ApiError {
    ApiError::body_timeout(format!(
        "the request body did not arrive in time ({received} bytes received; at most {} s without data, {} s in all)",
        BODY_STALL_TIMEOUT.as_secs(),
        BODY_READ_TIMEOUT.as_secs()
    ))
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("request body is larger than the limit of {limit} bytes"))
}

/// How a friendly endpoint's body is encoded, from its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// One encoded image (`image/*`, `application/octet-stream`, or no Content-Type).
    Raw,
    Multipart,
    Json,
}

pub fn body_kind(headers: &HeaderMap) -> ApiResult<BodyKind> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(BodyKind::Raw) };
    let text = value.to_str().map_err(|_| ApiError::unsupported_media_type("<not ASCII>"))?;
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(BodyKind::Json)
    } else if essence == "multipart/form-data" {
        Ok(BodyKind::Multipart)
    } else if essence.starts_with("image/") || essence == "application/octet-stream" {
        Ok(BodyKind::Raw)
    } else {
        Err(ApiError::unsupported_media_type(text))
    }
}

/// Encoded images and the parameters found in the body.
#[derive(Debug)]
pub struct ImagesBody {
    pub images: Vec<Bytes>,
    pub params: Params,
}

/// Splits a friendly endpoint's body into images and parameters. `parts` are the request's
/// head (multipart needs its headers and extensions).
pub async fn parse_images(task: Task, parts: Parts, bytes: Bytes, max_images: usize) -> ApiResult<ImagesBody> {
    let body = match body_kind(&parts.headers)? {
        BodyKind::Raw => ImagesBody { images: vec![bytes], params: Params::default() },
        BodyKind::Json => parse_json(task, &bytes, max_images)?,
        BodyKind::Multipart => parse_multipart(task, Request::from_parts(parts, Body::from(bytes)), max_images).await?,
    };
    if body.images.is_empty() {
        return Err(ApiError::invalid("no images in the request"));
    }
    Ok(body)
}

fn too_many_images(max_images: usize) -> ApiError {
    ApiError::too_large(format!("too many images: at most {max_images} per request"))
}

/// `{"images": ["<base64 or data URL>", ...], "<parameter>": ...}`
pub fn parse_json(task: Task, bytes: &[u8], max_images: usize) -> ApiResult<ImagesBody> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid("JSON body must be an object: {\"images\": [\"<base64>\", ...]}"));
    };
    let mut params = Params::default();
    let mut images = None;
    for (key, value) in &fields {
        if key == "images" {
            images = Some(value);
        } else {
            params.set(task, key, Raw::Json(value))?;
        }
    }
    let Some(Value::Array(items)) = images else {
        return Err(ApiError::invalid("JSON body needs `images`: an array of base64 strings or data URLs"));
    };
    if items.len() > max_images {
        return Err(too_many_images(max_images));
    }
    let images = items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(text) => decode_image_string(index, text),
            _ => Err(ApiError::bad_image(index, "expected a base64 string or data URL")),
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(ImagesBody { images, params })
}

/// Parts with a file name, a non-text content type, or named image/images/file are images;
/// other parts are parameters.
async fn parse_multipart(task: Task, request: Request, max_images: usize) -> ApiResult<ImagesBody> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::invalid(format!("malformed multipart body: {}", e.body_text())))?;
    let mut images = Vec::new();
    let mut params = Params::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if is_image_part(&name, field.file_name(), field.content_type()) {
            if images.len() == max_images {
                return Err(too_many_images(max_images));
            }
            let data = field.bytes().await.map_err(multipart_error)?;
            if data.is_empty() {
                return Err(ApiError::bad_image(images.len(), "empty image part"));
            }
            images.push(data);
        } else {
            let text = field.text().await.map_err(multipart_error)?;
            params.set(task, &name, Raw::Text(&text))?;
        }
    }
    Ok(ImagesBody { images, params })
}

fn is_image_part(name: &str, file_name: Option<&str>, content_type: Option<&str>) -> bool {
    file_name.is_some()
        || content_type.is_some_and(|ct| !ct.trim_start().to_ascii_lowercase().starts_with("text/"))
        || matches!(name, "image" | "images" | "file")
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(e.body_text())
    } else {
        ApiError::invalid(format!("malformed multipart body: {}", e.body_text()))
    }
}

const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 (standard or URL-safe alphabet, padding optional, line breaks allowed) or a
/// `data:<type>;base64,<payload>` URL. `index` names the image in errors.
pub fn decode_image_string(index: usize, text: &str) -> ApiResult<Bytes> {
    let payload = match text.strip_prefix("data:") {
        Some(url) => {
            let (meta, payload) =
                url.split_once(',').ok_or_else(|| ApiError::bad_image(index, "data URL without `,`"))?;
            if !meta.to_ascii_lowercase().ends_with(";base64") {
                return Err(ApiError::bad_image(index, "data URL must be base64-encoded (`;base64,`)"));
            }
            payload
        }
        None => text,
    };
    let decoded = decode_base64(payload).map_err(|e| ApiError::bad_image(index, format!("invalid base64: {e}")))?;
    if decoded.is_empty() {
        return Err(ApiError::bad_image(index, "empty image"));
    }
    Ok(Bytes::from(decoded))
}

pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: std::borrow::Cow<str> = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        text.chars().filter(|c| !c.is_ascii_whitespace()).collect::<String>().into()
    } else {
        text.into()
    };
    match BASE64_STANDARD.decode(compact.as_bytes()) {
        Err(e) if compact.contains(['-', '_']) => BASE64_URL_SAFE.decode(compact.as_bytes()).map_err(|_| e),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        h
    }

    fn parts(content_type: &str) -> Parts {
        let request = Request::builder().header(header::CONTENT_TYPE, content_type).body(()).unwrap();
        request.into_parts().0
    }

    #[test]
    fn content_types_select_the_body_form() {
        assert_eq!(body_kind(&headers(None)).unwrap(), BodyKind::Raw);
        assert_eq!(body_kind(&headers(Some("image/jpeg"))).unwrap(), BodyKind::Raw);
        assert_eq!(body_kind(&headers(Some("application/octet-stream"))).unwrap(), BodyKind::Raw);
        assert_eq!(body_kind(&headers(Some("Application/JSON; charset=utf-8"))).unwrap(), BodyKind::Json);
        assert_eq!(body_kind(&headers(Some("multipart/form-data; boundary=x"))).unwrap(), BodyKind::Multipart);
        let err = body_kind(&headers(Some("text/plain"))).unwrap_err();
        assert_eq!(err.status.as_u16(), 415);
    }

    #[test]
    fn body_reading_enforces_limit_and_rejects_empty() {
        let h = headers(None);
        assert_eq!(block(read_body(&h, Body::from("abc"), 3)).unwrap(), Bytes::from("abc"));
        assert_eq!(block(read_body(&h, Body::from("abcd"), 3)).unwrap_err().status.as_u16(), 413);
        assert_eq!(block(read_body(&h, Body::empty(), 3)).unwrap_err().status.as_u16(), 400);
        let mut announced = HeaderMap::new();
        announced.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        assert_eq!(block(read_body(&announced, Body::from("a"), 10)).unwrap_err().status.as_u16(), 413);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let chunks = futures::stream::iter(["ab", "cd", "e"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))));
        let body = Body::from_stream(chunks);
        assert_eq!(block(read_body(&headers(None), body, 5)).unwrap(), Bytes::from("abcde"));
        let chunks = futures::stream::iter(["ab", "cd", "ef"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))));
        let err = block(read_body(&headers(None), Body::from_stream(chunks), 5)).unwrap_err();
        assert_eq!(err.status.as_u16(), 413);
    }

    #[test]
    fn base64_variants_decode() {
        let raw = b"\x89PNG\r\n\x1a\n\xff\xfe";
        let standard = base64::engine::general_purpose::STANDARD.encode(raw);
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(raw);
        assert!(url_safe.contains(['-', '_']), "fixture must exercise the URL-safe alphabet");
        for text in [standard.clone(), unpadded, url_safe, format!("data:image/png;base64,{standard}")] {
            assert_eq!(&decode_image_string(0, &text).unwrap()[..], raw, "{text}");
        }
        let wrapped = format!("{}\n{}", &standard[..4], &standard[4..]);
        assert_eq!(&decode_image_string(0, &wrapped).unwrap()[..], raw);
    }

    #[test]
    fn bad_base64_names_the_image() {
        let err = decode_image_string(3, "not base64!").unwrap_err();
        assert_eq!((err.status.as_u16(), err.kind), (400, "bad_image"));
        assert!(err.message.starts_with("image 3: invalid base64"), "{}", err.message);
        assert!(decode_image_string(0, "data:image/png,abcd").unwrap_err().message.contains("base64"));
        assert!(decode_image_string(0, "").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn json_body_gives_images_and_parameters() {
        let body = json!({"images": ["AAEC", "data:image/jpeg;base64,/w=="], "top_k": 2, "classes": [1, 3]});
        let parsed = parse_json(Task::Classify, body.to_string().as_bytes(), 4).unwrap();
        assert_eq!(parsed.images, vec![Bytes::from_static(&[0, 1, 2]), Bytes::from_static(&[0xff])]);
        assert_eq!(parsed.params.top_k, Some(2));
        assert_eq!(parsed.params.classes, Some(vec![1, 3]));
    }

    #[test]
    fn json_body_errors() {
        let err = |body: &str| parse_json(Task::Detect, body.as_bytes(), 2).unwrap_err();
        assert!(err("{").message.starts_with("malformed JSON"));
        assert!(err("[1]").message.contains("must be an object"));
        assert!(err(r#"{"top_k": 1}"#).message.contains("unsupported parameter `top_k`"));
        assert!(err(r#"{"score_threshold": 0.5}"#).message.contains("needs `images`"));
        assert!(err(r#"{"images": [1]}"#).message.starts_with("image 0"));
        assert_eq!(err(r#"{"images": ["AA", "AA", "AA"]}"#).status.as_u16(), 413);
        assert!(err(r#"{"images": "AA"}"#).message.contains("needs `images`"));
    }

    /// (field name, file name, content type, data)
    type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

    fn multipart_body(parts_spec: &[Part]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, file_name, content_type, data) in parts_spec {
            body.extend_from_slice(b"--XBOUNDARY\r\n");
            let mut disposition = format!("Content-Disposition: form-data; name=\"{name}\"");
            if let Some(f) = file_name {
                disposition.push_str(&format!("; filename=\"{f}\""));
            }
            body.extend_from_slice(disposition.as_bytes());
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

    const MULTIPART: &str = "multipart/form-data; boundary=XBOUNDARY";

    #[test]
    fn multipart_images_and_text_fields() {
        let body = multipart_body(&[
            ("image", Some("a.jpg"), Some("image/jpeg"), b"\xff\xd8one"),
            ("score_threshold", None, None, b"0.6"),
            ("more", Some("b.png"), None, b"two"),
            ("image", None, None, b"three"),
            ("classes", None, Some("text/plain"), b"0,5"),
        ]);
        let parsed = block(parse_images(Task::Detect, parts(MULTIPART), Bytes::from(body), 8)).unwrap();
        assert_eq!(parsed.images, vec![Bytes::from_static(b"\xff\xd8one"), Bytes::from("two"), Bytes::from("three")]);
        assert_eq!(parsed.params.score_threshold, Some(0.6));
        assert_eq!(parsed.params.classes, Some(vec![0, 5]));
    }

    #[test]
    fn multipart_errors() {
        let run = |spec: &[Part], max: usize| {
            let body = Bytes::from(multipart_body(spec));
            block(parse_images(Task::Classify, parts(MULTIPART), body, max)).unwrap_err()
        };
        let unknown = run(&[("image", Some("a"), None, b"x"), ("foo", None, None, b"1")], 4);
        assert!(unknown.message.contains("unsupported parameter `foo`"));
        let too_many = run(&[("a", Some("a"), None, b"x"), ("b", Some("b"), None, b"y")], 1);
        assert_eq!(too_many.status.as_u16(), 413);
        let none = run(&[("top_k", None, None, b"3")], 4);
        assert!(none.message.contains("no images"));
        let empty = run(&[("image", Some("a"), None, b"")], 4);
        assert_eq!(empty.kind, "bad_image");
        let truncated = Bytes::from_static(b"--XBOUNDARY\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc");
        let err = block(parse_images(Task::Classify, parts(MULTIPART), truncated, 4)).unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
        let no_boundary = block(parse_images(Task::Classify, parts("multipart/form-data"), Bytes::from("x"), 4));
        assert_eq!(no_boundary.unwrap_err().status.as_u16(), 400);
    }

    #[test]
    fn raw_body_is_one_image() {
        let parsed = block(parse_images(Task::Classify, parts("image/png"), Bytes::from("png"), 1)).unwrap();
        assert_eq!(parsed.images, vec![Bytes::from("png")]);
        assert_eq!(parsed.params, Params::default());
    }
}

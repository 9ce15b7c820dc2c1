//! The one place where errors become HTTP statuses and JSON bodies
//! (`{"error": "<message>", "kind": "<kind>"}`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::core::InferError;

/// An HTTP error response. Core errors map through [`From<InferError>`]; the few kinds that
/// only exist at the transport (auth, routing, media type) have their own constructors.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        let status = match &e {
            InferError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            InferError::InvalidInput(_) | InferError::BadImage { .. } => StatusCode::BAD_REQUEST,
            InferError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            InferError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            InferError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            InferError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            InferError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, kind: e.kind(), message: e.to_string() }
    }
}

impl ApiError {
    /// 408: the client did not send its request body in time.
    pub fn body_timeout(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::REQUEST_TIMEOUT, kind: "request_timeout", message: message.into() }
    }

    /// 400: malformed request or parameter.
    pub fn invalid(message: impl Into<String>) -> Self {
        InferError::InvalidInput(message.into()).into()
    }

    /// 400: image `index` (0-based, request order) cannot be used.
    pub fn bad_image(index: usize, reason: impl Into<String>) -> Self {
        InferError::BadImage { index, reason: reason.into() }.into()
    }

    /// 413: over a configured limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        InferError::TooLarge(message.into()).into()
    }

    /// 404: the model exists but not in this version.
    pub fn unknown_version(model: &str, version: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "model_not_found",
            message: format!("model `{model}` has no version `{version}` (only \"{}\")", super::MODEL_VERSION),
        }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            message: "missing or invalid API key: send `Authorization: Bearer <key>`".into(),
        }
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "unsupported_media_type",
            message: format!(
                "unsupported content type `{content_type}`: send image/*, application/octet-stream, \
                 multipart/form-data or application/json"
            ),
        }
    }

    pub fn no_route(method: &str, path: &str) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, kind: "not_found", message: format!("no route for {method} {path}") }
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "method_not_allowed",
            message: format!("method {method} is not allowed on {path}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message, "kind": self.kind }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_error_maps_to_its_status() {
        let cases = [
            (InferError::ModelNotFound("m".into()), 404, "model_not_found"),
            (InferError::InvalidInput("x".into()), 400, "invalid_input"),
            (InferError::BadImage { index: 1, reason: "truncated".into() }, 400, "bad_image"),
            (InferError::TooLarge("big".into()), 413, "too_large"),
            (InferError::Overloaded("m".into()), 429, "overloaded"),
            (InferError::DeadlineExceeded, 504, "deadline_exceeded"),
            (InferError::Unavailable("stopping".into()), 503, "unavailable"),
            (InferError::Internal("bug".into()), 500, "internal"),
        ];
        for (error, status, kind) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status.as_u16(), status, "{kind}");
            assert_eq!(api.kind, kind);
        }
    }

    #[test]
    fn error_body_is_json_with_message_and_kind() {
        let response = ApiError::bad_image(2, "truncated JPEG").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 16)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"], "image 2: truncated JPEG");
        assert_eq!(value["kind"], "bad_image");
    }

    #[test]
    fn unauthorized_carries_bearer_challenge() {
        let response = ApiError::unauthorized().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}

//! Google-shaped HTTP responses: plain text, JSON, protobuf, Google's JSON error, its
//! HTML 404 page, and the failures injected with [`crate::Emulator::fail_next`].
//!
//! May use `types` only; the router and the handlers build their answers with it.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde_json::json;

use crate::types::{Endpoint, HttpFailure};

/// The `google.rpc.Code` name Google's JSON APIs pair with an HTTP status.
pub(crate) fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_owned()),
    )
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    build(
        status,
        "application/json; charset=UTF-8",
        Bytes::from(value.to_string()),
    )
}

/// A `200 OK` JSON response.
pub(crate) fn ok_json(value: &serde_json::Value) -> Response<Bytes> {
    json(StatusCode::OK, value)
}

/// A protobuf response.
pub(crate) fn protobuf(body: Vec<u8>) -> Response<Bytes> {
    build(StatusCode::OK, "application/x-protobuf", Bytes::from(body))
}

/// Google's JSON error: `{"error": {"code", "message", "status"[, "details"]}}`.
pub(crate) fn google_error(
    status: StatusCode,
    status_text: &str,
    message: &str,
    details: Option<serde_json::Value>,
) -> Response<Bytes> {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": status_text,
    });
    if let (Some(details), Some(object)) = (details, error.as_object_mut()) {
        object.insert("details".into(), details);
    }
    json(status, &json!({ "error": error }))
}

/// Google's JSON error with the `status` name that goes with the HTTP status.
pub(crate) fn api_error(status: StatusCode, message: &str) -> Response<Bytes> {
    google_error(status, status_name(status), message, None)
}

/// Google's HTML 404 page.
pub(crate) fn html_404() -> Response<Bytes> {
    build(
        StatusCode::NOT_FOUND,
        "text/html; charset=UTF-8",
        Bytes::from_static(
            b"<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n  <p><b>404.</b> <ins>That\xe2\x80\x99s an error.</ins>\n  <p>The requested URL was not found on this server.  <ins>That\xe2\x80\x99s all we know.</ins>\n",
        ),
    )
}

/// Whether an endpoint answers in plain text (check-in, register3, Web Push) rather than
/// with Google's JSON errors.
fn answers_in_text(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Checkin | Endpoint::Register3 | Endpoint::WebPush
    )
}

/// The answer to a request for the wrong method on a known path.
pub(crate) fn method_not_allowed(endpoint: Endpoint) -> Response<Bytes> {
    if answers_in_text(endpoint) {
        text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    } else {
        google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Method not found.",
            None,
        )
    }
}

/// The answer an armed [`HttpFailure`] makes `endpoint` give.
pub(crate) fn injected_failure(endpoint: Endpoint, failure: &HttpFailure) -> Response<Bytes> {
    match failure {
        HttpFailure::Html404 => html_404(),
        HttpFailure::Register3Error(code) => {
            let status = if endpoint == Endpoint::Register3 {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            text(status, &format!("Error={code}"))
        }
        HttpFailure::Status(code) => status_failure(endpoint, *code),
        HttpFailure::RetryAfter { status, seconds } => {
            let mut response = status_failure(endpoint, *status);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*seconds));
            response
        }
    }
}

/// `code` with the endpoint's usual error body: text for check-in, register3 and Web Push,
/// Google's JSON error for the JSON APIs.
fn status_failure(endpoint: Endpoint, code: u16) -> Response<Bytes> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    if answers_in_text(endpoint) {
        text(status, reason)
    } else {
        api_error(status, reason)
    }
}

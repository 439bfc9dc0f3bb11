//! The HTTPS server: routing, body limits, Google-shaped responses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, warn};

use crate::emulator::Shared;
use crate::handlers;
use crate::mcs::shutdown_signal;
use crate::types::{Endpoint, HttpFailure};

/// Chrome's VAPID key, the default `sender` of web-persona registrations.
pub(crate) const CHROME_VAPID_KEY: &str =
    "BDOU99-h67HcA6JeFXHbSNMu7e2yNNu3RzoMj8TM4W88jITfq7ZmPvIM1Iv-4_l2LxQcYwhqby2xGpWwzjfAnG4";

/// The largest request body accepted: far above any legitimate request.
const MAX_BODY: usize = 64 * 1024;

/// Accepts HTTPS connections until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            () = shutdown_signal(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let span = tracing::debug_span!("http", %peer);
                    tokio::spawn(
                        connection(acceptor.clone(), tcp, Arc::clone(&shared), shutdown.clone(), done.clone())
                            .instrument(span),
                    );
                }
                Err(e) => {
                    warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(done);
}

async fn connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let tls = tokio::select! {
        () = shutdown_signal(&mut shutdown) => return,
        tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)) => match tls {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!("TLS handshake failed: {e}");
                return;
            }
            Err(_) => return,
        },
    };
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(respond(&shared, request).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!("HTTP connection error: {e}");
            }
        }
        () = shutdown_signal(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
    drop(done);
}

async fn respond(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large").map(Full::new);
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Cannot read the body: {e}"),
            )
            .map(Full::new);
        }
    };
    let request = Request::from_parts(parts, body);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = route(shared, &request);
    tracing::info!(%method, %path, status = response.status().as_u16(), "HTTP");
    response.map(Full::new)
}

/// Splits a path into percent-decoded segments.
fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect()
}

pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Dispatches a buffered request to its handler.
pub(crate) fn route(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let segments = segments(request.uri().path());
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method();
    let (endpoint, allowed) = match parts.as_slice() {
        ["checkin"] => (Endpoint::Checkin, Method::POST),
        ["c2dm", "register3"] => (Endpoint::Register3, Method::POST),
        ["v1", "projects", _, "installations"] => (Endpoint::CreateInstallation, Method::POST),
        [
            "v1",
            "projects",
            _,
            "installations",
            _,
            "authTokens:generate",
        ] => (Endpoint::GenerateAuthToken, Method::POST),
        ["v1", "projects", _, "registrations"] => (Endpoint::CreateRegistration, Method::POST),
        ["v1", "projects", _, "registrations", _] => (Endpoint::DeleteRegistration, Method::DELETE),
        ["v1", "projects", _, "messages:send"] => (Endpoint::Send, Method::POST),
        ["fcm", "send", _] => (Endpoint::WebPush, Method::POST),
        _ => return html_404(),
    };
    if *method != allowed {
        return match endpoint {
            Endpoint::Checkin | Endpoint::Register3 | Endpoint::WebPush => {
                text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            }
            _ => google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Method not found.",
                None,
            ),
        };
    }
    let injected = shared.lock().take_http_failure(endpoint);
    if let Some(failure) = injected {
        debug!(?endpoint, ?failure, "injected HTTP failure");
        return injected_failure(endpoint, &failure);
    }
    match (endpoint, parts.as_slice()) {
        (Endpoint::Checkin, _) => handlers::checkin(shared, request),
        (Endpoint::Register3, _) => handlers::register3(shared, request),
        (Endpoint::CreateInstallation, [_, _, project, ..]) => {
            handlers::create_installation(shared, request, project)
        }
        (Endpoint::GenerateAuthToken, [_, _, project, _, fid, _]) => {
            handlers::generate_auth_token(shared, request, project, fid)
        }
        (Endpoint::CreateRegistration, [_, _, project, ..]) => {
            handlers::create_registration(shared, request, project)
        }
        (Endpoint::DeleteRegistration, [_, _, project, _, token]) => {
            handlers::delete_registration(shared, request, project, token)
        }
        (Endpoint::Send, [_, _, project, _]) => handlers::send(shared, request, project),
        (Endpoint::WebPush, [_, _, token]) => handlers::webpush(shared, request, token),
        _ => html_404(),
    }
}

fn injected_failure(endpoint: Endpoint, failure: &HttpFailure) -> Response<Bytes> {
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
                .insert(http::header::RETRY_AFTER, HeaderValue::from(*seconds));
            response
        }
    }
}

/// `code` with the endpoint's usual error body: text for check-in, register3 and Web Push,
/// Google's JSON error for the JSON APIs.
fn status_failure(endpoint: Endpoint, code: u16) -> Response<Bytes> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match endpoint {
        Endpoint::Checkin | Endpoint::Register3 | Endpoint::WebPush => {
            text(status, status.canonical_reason().unwrap_or("Error"))
        }
        _ => google_error(
            status,
            status_name(status),
            status.canonical_reason().unwrap_or("Error"),
            None,
        ),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("a%3"), "a%3");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("x%41"), "xA");
        assert_eq!(
            segments("/v1/projects/p/messages:send"),
            ["v1", "projects", "p", "messages:send"]
        );
    }
}

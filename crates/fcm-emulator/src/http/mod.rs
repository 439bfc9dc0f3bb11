//! The HTTPS server: Google's HTTP APIs under one base URL. Here live the server (the
//! accept loop's per-connection hyper service, body limits) and the router; the
//! handlers, the response builders and path decoding are the modules below.
//!
//! Arrows: `http` -> `handlers` -> `respond`, `path`; all of them may use `shared`,
//! `state`, `types`, `delivery`, `ids` and `error`, and this module uses `accept`.
//! Nothing here uses `mcs` or the `emulator` facade.

mod handlers;
mod path;
mod respond;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tracing::debug;

use crate::accept::{Bound, Listener, Tls, shutdown_signal};
use crate::shared::Shared;
use crate::types::Endpoint;
use respond::{html_404, injected_failure, method_not_allowed, text};

/// The largest request body accepted: far above any legitimate request.
const MAX_BODY: usize = 64 * 1024;

/// Accepts HTTPS connections until shutdown.
pub(crate) async fn serve(bound: Bound, shared: Arc<Shared>) {
    let settings = Listener {
        name: "HTTP",
        nodelay: false,
        handshake_timeout: Duration::from_secs(10),
        span: |peer: SocketAddr| tracing::debug_span!("http", %peer),
    };
    bound
        .serve(settings, move |tls, shutdown| {
            connection(tls, Arc::clone(&shared), shutdown)
        })
        .await;
}

/// Serves HTTP/1.1 on one TLS connection; at shutdown the request in flight may finish
/// (for at most 2 s).
async fn connection(tls: Tls, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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
}

/// Buffers the body (at most [`MAX_BODY`]), routes the request and logs the answer.
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

/// Dispatches a buffered request to its handler.
fn route(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let segments = path::segments(request.uri().path());
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method();
    let (endpoint, allowed) = match parts.as_slice() {
        ["checkin"] => (Endpoint::Checkin, Method::POST),
        ["c2dm", "register3"] => (Endpoint::Register3, Method::POST),
        ["v1", "projects", _, "installations"] => (Endpoint::CreateInstallation, Method::POST),
        ["v1", "projects", _, "installations", _] => (Endpoint::DeleteInstallation, Method::DELETE),
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
        return method_not_allowed(endpoint);
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
        (Endpoint::DeleteInstallation, [_, _, project, _, fid]) => {
            handlers::delete_installation(shared, request, project, fid)
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

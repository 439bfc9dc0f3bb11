//! The MCS server: the accept loop, the login handshake (docs/protocol.md §3) and its
//! checks against the known devices; each accepted login is then served by `conn`.
//!
//! Arrows: `mcs` -> `conn`; both may use `accept`, `shared`, `state`, `types` and `ids`.
//! Nothing here uses `http` or the `emulator` facade.

mod conn;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use mcs_codec::proto::{ErrorInfo, HeartbeatConfig, LoginRequest, LoginResponse};
use mcs_codec::{McsCodec, McsMessage, Role};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio_util::codec::Framed;
use tracing::{debug, info};

use crate::accept::{Bound, Listener, Tls, shutdown_signal};
use crate::ids::unix_ms;
use crate::shared::Shared;
use crate::state::ConnLink;

/// The `ErrorInfo.code` of a refused login.
pub(crate) const LOGIN_ERROR_CODE: i32 = 401;

/// Accepts MCS connections until shutdown.
pub(crate) async fn serve(bound: Bound, shared: Arc<Shared>) {
    let settings = Listener {
        name: "MCS",
        nodelay: true,
        handshake_timeout: shared.config.login_timeout,
        span: |peer: SocketAddr| tracing::info_span!("mcs", %peer),
    };
    bound
        .serve(settings, move |tls, shutdown| {
            handle(tls, Arc::clone(&shared), shutdown)
        })
        .await;
}

/// Waits (at most the login timeout) for the LoginRequest; answers a refused login with
/// an error LoginResponse and closes, hands an accepted one to [`conn::serve`].
async fn handle(tls: Tls, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let timeout = shared.config.login_timeout;
    let codec = McsCodec::builder()
        .role(Role::Server)
        .max_frame_length(shared.config.max_frame_length)
        .new_codec();
    let mut framed = Framed::new(tls, codec);
    let first = tokio::select! {
        () = shutdown_signal(&mut shutdown) => return,
        first = tokio::time::timeout(timeout, framed.next()) => first,
    };
    let request = match first {
        Ok(Some(Ok(McsMessage::LoginRequest(request)))) => request,
        Ok(Some(Ok(other))) => {
            info!(
                tag = other.tag(),
                "first frame is not a LoginRequest; closing"
            );
            return;
        }
        Ok(Some(Err(e))) => {
            info!("bad first frame: {e}");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            info!("no LoginRequest within {timeout:?}; closing");
            return;
        }
    };
    let Some((android_id, link)) = login(&shared, &request) else {
        let mut response = McsMessage::from(LoginResponse {
            id: request.id.clone(),
            error: Some(ErrorInfo {
                code: LOGIN_ERROR_CODE,
                message: Some("authentication failed".to_owned()),
                r#type: Some("auth".to_owned()),
                extension: None,
            }),
            server_timestamp: Some(unix_ms()),
            ..Default::default()
        });
        conn::stamp(&mut response, 1, 1);
        info!(user = %request.user, "login refused");
        if framed.send(response).await.is_ok() {
            let _ = framed.get_mut().shutdown().await;
        }
        return;
    };
    // Created with no await since the login registered the session, so the session ends
    // however this task does.
    let session = conn::LoggedIn::new(Arc::clone(&shared), android_id, link.id);
    info!(android_id, conn = link.id, "logged in");
    let response = login_response(&shared, &request, android_id);
    conn::serve(shared, framed, session, link, response, shutdown).await;
}

/// Checks a LoginRequest against the known devices; on success registers the new
/// connection as the device's current one (telling the older ones to close, unless
/// `close_superseded` is off), applies `received_persistent_id` and schedules every
/// unacknowledged message for redelivery.
fn login(shared: &Shared, request: &LoginRequest) -> Option<(u64, ConnLink)> {
    let now = shared.clock();
    let mut state = shared.lock();
    state.last_login = Some(request.clone());
    let android_id = request.user.trim().parse::<u64>().ok();
    let token = request.auth_token.trim().parse::<u64>().ok();
    let auth_ok = request.auth_service.is_none_or(|s| s == 2);
    let valid = match (android_id, token) {
        (Some(id), Some(token)) if auth_ok => state
            .devices
            .get(&id)
            .is_some_and(|d| d.credentials.security_token == token),
        _ => false,
    };
    let Some(android_id) = android_id.filter(|_| valid) else {
        state.failed_logins += 1;
        return None;
    };
    let id = state.next_conn_id;
    state.next_conn_id += 1;
    let device = state.devices.get_mut(&android_id)?;
    device.logins += 1;
    device.last_login = Some(request.clone());
    let received: HashSet<&str> = request
        .received_persistent_id
        .iter()
        .map(String::as_str)
        .collect();
    let acked = device.ack_where(|q| received.contains(q.persistent_id.as_str()));
    // Nothing past its time to live is redelivered, and a TTL-0 message was for the
    // connection that is gone (docs/protocol.md §7.5).
    device.purge_expired(now, true);
    for queued in &mut device.queue {
        queued.sent = None;
    }
    let link = ConnLink {
        id,
        notify: Arc::new(Notify::new()),
    };
    debug!(
        android_id,
        acked,
        redeliver = device.queue.len(),
        "login accepted"
    );
    // An older connection told to close sees it on its next wake and ends; it counts as
    // logged in (for the overlap) until it has.
    let now = shared.elapsed();
    state.add_session(
        android_id,
        link.clone(),
        now,
        shared.config.close_superseded,
    );
    Some((android_id, link))
}

fn login_response(shared: &Shared, request: &LoginRequest, android_id: u64) -> LoginResponse {
    LoginResponse {
        id: request.id.clone(),
        jid: Some(format!("{android_id}@mcs.android.com/{}", request.resource)),
        heartbeat_config: shared
            .config
            .heartbeat_interval
            .map(|interval| HeartbeatConfig {
                upload_stat: None,
                ip: None,
                interval_ms: Some(i32::try_from(interval.as_millis()).unwrap_or(i32::MAX)),
            }),
        server_timestamp: Some(unix_ms()),
        ..Default::default()
    }
}

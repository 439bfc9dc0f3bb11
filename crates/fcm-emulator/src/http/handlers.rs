//! The HTTP API handlers (docs/protocol.md §2), each taking a buffered request and
//! answering with a response built by `respond`.
//!
//! May use `respond`, `path`, `shared`, `state`, `types`, `delivery`, `ids` and `error`;
//! never the router above it, `mcs` or the facade.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use gcm_checkin::proto::{AndroidCheckinRequest, AndroidCheckinResponse, GservicesSetting};
use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;

use super::path::percent_decode;
use super::respond::{api_error, google_error, ok_json, protobuf, status_name, text};
use crate::delivery::{self, MAX_PAYLOAD, WebPushEncoding};
use crate::error::Error;
use crate::ids::{self, unix_ms};
use crate::shared::Audience;
use crate::shared::Shared;
use crate::state::WEB_APP;
use crate::topics::{is_valid_topic_name, parse_condition};
use crate::types::{DeviceCredentials, Notification, Persona, SendMessage};
use crate::vapid;
use gcm_checkin::CHROME_VAPID_KEY;

/// The lifetime of FIS auth tokens.
const AUTH_TOKEN_LIFETIME: &str = "604800s";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn invalid_json(e: &serde_json::Error) -> Response<Bytes> {
    api_error(
        StatusCode::BAD_REQUEST,
        &format!("Invalid JSON payload received. {e}"),
    )
}

/// Decodes base64 in any of its variants (url-safe or standard, padded or not).
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .ok()
}

// ---------------------------------------------------------------- check-in

/// `POST /checkin`: a new device, or a re-check-in with `id` + `security_token`.
pub(crate) fn checkin(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let content_type = header(request.headers(), CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type.contains("protobuf") {
        return text(
            StatusCode::BAD_REQUEST,
            "Bad Request: expected Content-Type application/x-protobuf",
        );
    }
    let Ok(body) = AndroidCheckinRequest::decode(request.body().as_ref()) else {
        return text(StatusCode::BAD_REQUEST, "Bad Request: undecodable protobuf");
    };
    let mut state = shared.lock();
    let credentials = match (body.id.filter(|id| *id != 0), body.security_token) {
        (None, _) => state.new_device(),
        (Some(id), Some(token)) => {
            // The id travels as int64; the same 64 bits as the u64 handed out.
            let android_id = id as u64;
            match state.devices.get_mut(&android_id) {
                Some(device) if device.credentials.security_token == token => {
                    device.checkins += 1;
                    device.credentials
                }
                _ => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            }
        }
        (Some(_), None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Bad Request: id without security_token",
            );
        }
    };
    let setting = state
        .checkin_settings
        .iter()
        .map(|(name, value)| GservicesSetting {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    drop(state);
    let DeviceCredentials {
        android_id,
        security_token,
    } = credentials;
    tracing::info!(android_id, "check-in");
    let response = AndroidCheckinResponse {
        setting,
        stats_ok: true,
        time_msec: Some(unix_ms()),
        digest: Some(ids::random_b64(18)),
        settings_diff: Some(false),
        market_ok: Some(true),
        android_id: Some(android_id),
        security_token: Some(security_token),
        version_info: Some("fcm-emulator".to_owned()),
        ..Default::default()
    };
    protobuf(response.encode_to_vec())
}

// ---------------------------------------------------------------- register3

fn register3_error(code: &str) -> Response<Bytes> {
    text(StatusCode::OK, &format!("Error={code}"))
}

/// Parses `AidLogin <android_id>:<security_token>`.
fn aid_login(headers: &HeaderMap) -> Option<(u64, u64)> {
    let value = header(headers, AUTHORIZATION.as_str())?;
    let rest = value.strip_prefix("AidLogin ")?;
    let (id, token) = rest.trim().split_once(':')?;
    Some((id.parse().ok()?, token.parse().ok()?))
}

fn is_vapid_key(text: &str) -> bool {
    decode_b64(text).is_some_and(|k| k.len() == 65 && k[0] == 4)
}

/// The most topics one registration may be subscribed to; beyond it register3 answers
/// `Error=TOO_MANY_SUBSCRIBERS`.
const MAX_TOPICS_PER_REGISTRATION: usize = 2000;

/// `POST /c2dm/register3`: `token=<t>`, `deleted=<app>` or `Error=<CODE>`, all with HTTP
/// 200 (docs/protocol.md §2.2, §7.1): a registration, a topic subscription (`X-gcm.topic`),
/// a topic unsubscription or a token deletion (`delete=1`).
pub(crate) fn register3(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let Some((android_id, security_token)) = aid_login(request.headers()) else {
        return register3_error("AUTHENTICATION_FAILED");
    };
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(request.body())
        .into_owned()
        .collect();
    let field = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut state = shared.lock();
    match state.devices.get(&android_id) {
        Some(device) if device.credentials.security_token == security_token => {}
        _ => return register3_error("AUTHENTICATION_FAILED"),
    }
    if field("device").and_then(|d| d.parse::<u64>().ok()) != Some(android_id) {
        return register3_error("INVALID_PARAMETERS");
    }
    let Some(app) = field("app") else {
        return register3_error("INVALID_PARAMETERS");
    };
    if let Some(fis) = field("X-Goog-Firebase-Installations-Auth")
        && !state.fis_tokens.contains_key(fis)
    {
        return register3_error("AUTHENTICATION_FAILED");
    }
    let subtype = field("X-subtype");
    let fid = field("X-appid");
    // The server reads both `delete` and `X-delete` (docs/protocol.md §7.1).
    let delete = [field("delete"), field("X-delete")]
        .into_iter()
        .flatten()
        .any(|d| d == "true" || d == "1");
    let topic =
        field("X-gcm.topic").or_else(|| field("X-scope").filter(|s| s.starts_with("/topics/")));
    if let Some(topic) = topic {
        return topic_request(&mut state, android_id, app, &field, topic, delete);
    }
    if delete {
        let removed = state.unregister_gcm(android_id, app, subtype, field("sender"));
        tracing::info!(android_id, app, removed, "unregister");
        return text(StatusCode::OK, &format!("deleted={app}"));
    }
    if state.is_invalidated(android_id, app, fid) {
        tracing::info!(android_id, app, "register3 of an invalidated instance: RST");
        return register3_error("RST");
    }
    let Some(sender) = field("sender") else {
        return register3_error("INVALID_SENDER");
    };
    let web = app == WEB_APP && subtype.is_some_and(|s| s.starts_with("wp:"));
    if web && !is_vapid_key(sender) {
        return register3_error("INVALID_SENDER");
    }
    if !(web || is_sender_list(sender) || is_vapid_key(sender)) {
        return register3_error("INVALID_SENDER");
    }
    let registration = state.register_gcm(android_id, app, subtype, sender, fid);
    tracing::info!(
        android_id,
        app,
        persona = ?registration.persona,
        "register3"
    );
    text(StatusCode::OK, &format!("token={}", registration.token))
}

/// Numeric sender ids, one or several joined with `,` (docs/protocol.md §7.1).
fn is_sender_list(sender: &str) -> bool {
    sender
        .split(',')
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// A topic subscription or, with `delete`, unsubscription (docs/protocol.md §7.1):
/// `sender` and `X-subtype` carry the token, `X-gcm.topic` and `X-scope` the topic
/// `/topics/<name>`. Answers `token=<token>`.
fn topic_request<'a>(
    state: &mut crate::state::State,
    android_id: u64,
    app: &str,
    field: &dyn Fn(&str) -> Option<&'a str>,
    topic: &str,
    delete: bool,
) -> Response<Bytes> {
    let scope = field("X-scope");
    let Some(name) = topic.strip_prefix("/topics/") else {
        return register3_error("INVALID_PARAMETERS");
    };
    if scope.is_some_and(|s| s != topic) || !is_valid_topic_name(name) {
        return register3_error("INVALID_PARAMETERS");
    }
    let Some(token) = field("sender") else {
        return register3_error("INVALID_SENDER");
    };
    if field("X-subtype").is_some_and(|s| s != token) {
        return register3_error("INVALID_PARAMETERS");
    }
    if state.is_invalidated(android_id, app, field("X-appid")) {
        return register3_error("RST");
    }
    let Some(gcm_token) = state.gcm_token_of(token).filter(|t| {
        state
            .gcm
            .get(t)
            .is_some_and(|g| g.android_id == android_id && g.app == app)
    }) else {
        return register3_error("INVALID_PARAMETERS");
    };
    if delete {
        let was = state.unsubscribe_topic(&gcm_token, name);
        tracing::info!(android_id, app, topic = name, was, "topic unsubscribed");
    } else {
        let count = state.token_topics.get(&gcm_token).map_or(0, |t| t.len());
        let known = state
            .token_topics
            .get(&gcm_token)
            .is_some_and(|t| t.contains(name));
        if !known && count >= MAX_TOPICS_PER_REGISTRATION {
            return register3_error("TOO_MANY_SUBSCRIBERS");
        }
        state.subscribe_topic(&gcm_token, name);
        tracing::info!(android_id, app, topic = name, "topic subscribed");
    }
    text(StatusCode::OK, &format!("token={token}"))
}

// ---------------------------------------------------------------- Firebase Installations

/// Checks `x-goog-api-key`.
#[allow(clippy::result_large_err)] // an early-return response, built once per request
fn check_api_key(shared: &Shared, headers: &HeaderMap) -> Result<(), Response<Bytes>> {
    match (header(headers, "x-goog-api-key"), &shared.config.api_key) {
        (None, _) => Err(api_error(
            StatusCode::FORBIDDEN,
            "The request is missing a valid API key.",
        )),
        (Some(given), Some(expected)) if given != expected => Err(api_error(
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
        )),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInstallationBody {
    fid: Option<String>,
    app_id: Option<String>,
    auth_version: Option<String>,
    #[allow(dead_code)]
    sdk_version: Option<String>,
}

/// `POST /v1/projects/{p}/installations`.
pub(crate) fn create_installation(
    shared: &Shared,
    request: &Request<Bytes>,
    project: &str,
) -> Response<Bytes> {
    if let Err(response) = check_api_key(shared, request.headers()) {
        return response;
    }
    let body: CreateInstallationBody = match serde_json::from_slice(request.body()) {
        Ok(body) => body,
        Err(e) => return invalid_json(&e),
    };
    let Some(app_id) = body.app_id.filter(|a| !a.is_empty()) else {
        return api_error(StatusCode::BAD_REQUEST, "The appId field is required.");
    };
    if body.auth_version.as_deref().is_some_and(|v| v != "FIS_v2") {
        return api_error(StatusCode::BAD_REQUEST, "Unsupported authVersion.");
    }
    // The SDKs' 22 url-safe characters, or the 24 of padded standard base64 other
    // clients send; either way the answer's `fid` is the one to use (docs/protocol.md
    // §7.5).
    let fid = match body.fid.filter(|f| !f.is_empty()) {
        None => None,
        Some(given) => match ids::canonical_fid(&given) {
            Some(fid) => Some(fid),
            None => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid value at 'installation.fid': the FID is malformed.",
                );
            }
        },
    };
    let installation = shared
        .lock()
        .create_installation(project, fid.as_deref(), &app_id);
    tracing::info!(fid = %installation.fid, project, "installation created");
    ok_json(&json!({
        "name": format!("projects/{project}/installations/{}", installation.fid),
        "fid": installation.fid,
        "refreshToken": installation.refresh_token,
        "authToken": {
            "token": installation.auth_tokens.last(),
            "expiresIn": AUTH_TOKEN_LIFETIME,
        },
    }))
}

/// The installation's refresh token from `Authorization: FIS_v2 <refresh token>`, or the
/// 401 answer when it is missing.
#[allow(clippy::result_large_err)] // an early-return response, as check_api_key's
fn fis_refresh_token(request: &Request<Bytes>) -> Result<&str, Response<Bytes>> {
    header(request.headers(), AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("FIS_v2 "))
        .map(str::trim)
        .ok_or_else(|| {
            api_error(
                StatusCode::UNAUTHORIZED,
                "Request is missing required authentication credential. Expected `FIS_v2 <refresh token>`.",
            )
        })
}

/// `POST /v1/projects/{p}/installations/{fid}/authTokens:generate`.
pub(crate) fn generate_auth_token(
    shared: &Shared,
    request: &Request<Bytes>,
    _project: &str,
    fid: &str,
) -> Response<Bytes> {
    if let Err(response) = check_api_key(shared, request.headers()) {
        return response;
    }
    let refresh = match fis_refresh_token(request) {
        Ok(refresh) => refresh,
        Err(response) => return response,
    };
    if !request.body().is_empty()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(request.body())
            .is_err()
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Invalid JSON payload received: expected an object.",
        );
    }
    let mut state = shared.lock();
    let Some(installation) = state.installations.get(fid) else {
        return api_error(StatusCode::NOT_FOUND, "Requested entity was not found.");
    };
    if installation.refresh_token != refresh {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    let Some(token) = state.new_auth_token(fid) else {
        return api_error(StatusCode::NOT_FOUND, "Requested entity was not found.");
    };
    tracing::info!(fid, "FIS auth token refreshed");
    ok_json(&json!({ "token": token, "expiresIn": AUTH_TOKEN_LIFETIME }))
}

/// `DELETE /v1/projects/{p}/installations/{fid}` (docs/protocol.md §7.1): the
/// installation's refresh token as `Authorization: FIS_v2 <refresh token>`; its auth
/// tokens stop being valid, and so do the FCM registrations it made. An unknown FID
/// (or one of another project) is 404, a wrong refresh token 401.
pub(crate) fn delete_installation(
    shared: &Shared,
    request: &Request<Bytes>,
    project: &str,
    fid: &str,
) -> Response<Bytes> {
    if let Err(response) = check_api_key(shared, request.headers()) {
        return response;
    }
    let refresh = match fis_refresh_token(request) {
        Ok(refresh) => refresh,
        Err(response) => return response,
    };
    let mut state = shared.lock();
    let Some(installation) = state
        .installations
        .get(fid)
        .filter(|installation| installation.project == project)
    else {
        return api_error(StatusCode::NOT_FOUND, "Requested entity was not found.");
    };
    if installation.refresh_token != refresh {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    }
    state.delete_installation(fid);
    drop(state);
    tracing::info!(fid, project, "installation deleted");
    ok_json(&json!({}))
}

// ---------------------------------------------------------------- FCM registrations

/// Checks the API key and `x-goog-firebase-installations-auth`; returns the FID.
#[allow(clippy::result_large_err)] // an early-return response, built once per request
fn check_fis_auth(shared: &Shared, headers: &HeaderMap) -> Result<String, Response<Bytes>> {
    check_api_key(shared, headers)?;
    let Some(token) = header(headers, "x-goog-firebase-installations-auth") else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "Request is missing required authentication credential. Expected a Firebase Installations auth token.",
        ));
    };
    let token = token.strip_prefix("FIS ").unwrap_or(token).trim();
    shared.lock().fis_tokens.get(token).cloned().ok_or_else(|| {
        api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRegistrationBody {
    web: Option<WebBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebBody {
    application_pub_key: Option<String>,
    auth: Option<String>,
    endpoint: Option<String>,
    p256dh: Option<String>,
}

/// `POST /v1/projects/{p}/registrations`.
pub(crate) fn create_registration(
    shared: &Shared,
    request: &Request<Bytes>,
    project: &str,
) -> Response<Bytes> {
    let fid = match check_fis_auth(shared, request.headers()) {
        Ok(fid) => fid,
        Err(response) => return response,
    };
    let body: CreateRegistrationBody = match serde_json::from_slice(request.body()) {
        Ok(body) => body,
        Err(e) => return invalid_json(&e),
    };
    let Some(web) = body.web else {
        return api_error(StatusCode::BAD_REQUEST, "The web field is required.");
    };
    let (Some(endpoint), Some(auth), Some(p256dh)) = (&web.endpoint, &web.auth, &web.p256dh) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "web.endpoint, web.auth and web.p256dh are required.",
        );
    };
    if let Err(e) = webpush_ece::SubscriptionKeys::from_base64(p256dh, auth) {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid web push keys (p256dh/auth): {e}"),
        );
    }
    if let Some(key) = &web.application_pub_key
        && !is_vapid_key(key)
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Invalid value at 'registration.web.application_pub_key'.",
        );
    }
    let gcm_token = endpoint
        .split_once("/fcm/send/")
        .map(|(_, rest)| percent_decode(rest.trim_end_matches('/')));
    let mut state = shared.lock();
    let Some(gcm_token) = gcm_token.filter(|t| state.gcm.contains_key(t)) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Invalid value at 'registration.web.endpoint': it does not name a registered GCM token.",
        );
    };
    let registration = state.create_fcm_registration(
        project,
        &fid,
        &gcm_token,
        endpoint,
        p256dh,
        auth,
        web.application_pub_key.as_deref(),
    );
    drop(state);
    tracing::info!(project, fid, "FCM registration created");
    let mut web_json = json!({
        "endpoint": registration.endpoint,
        "p256dh": registration.p256dh,
        "auth": registration.auth,
    });
    if let (Some(key), Some(object)) = (&registration.application_pub_key, web_json.as_object_mut())
    {
        object.insert("applicationPubKey".into(), json!(key));
    }
    ok_json(&json!({
        "name": format!("projects/{project}/registrations/{}", registration.token),
        "token": registration.token,
        "web": web_json,
    }))
}

/// `DELETE /v1/projects/{p}/registrations/{token}`.
pub(crate) fn delete_registration(
    shared: &Shared,
    request: &Request<Bytes>,
    _project: &str,
    token: &str,
) -> Response<Bytes> {
    if let Err(response) = check_fis_auth(shared, request.headers()) {
        return response;
    }
    if !shared.lock().delete_fcm_registration(token) {
        return api_error(StatusCode::NOT_FOUND, "Requested entity was not found.");
    }
    tracing::info!("FCM registration deleted");
    ok_json(&json!({}))
}

// ---------------------------------------------------------------- send API

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    message: Option<MessageBody>,
    #[serde(default, alias = "validateOnly")]
    validate_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    #[allow(dead_code)]
    name: Option<String>,
    token: Option<String>,
    topic: Option<String>,
    condition: Option<String>,
    data: Option<BTreeMap<String, String>>,
    notification: Option<Notification>,
    android: Option<serde_json::Value>,
    webpush: Option<serde_json::Value>,
    #[allow(dead_code)]
    apns: Option<serde_json::Value>,
    #[serde(alias = "fcmOptions")]
    #[allow(dead_code)]
    fcm_options: Option<serde_json::Value>,
}

fn is_reserved_data_key(key: &str) -> bool {
    matches!(
        key,
        "from" | "notification" | "message_type" | "collapse_key"
    ) || key.starts_with("google.")
        || key.starts_with("gcm.")
}

/// Parses `"3.5s"`-style durations.
fn parse_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && (0.0..=2_419_200.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

fn send_error(status: StatusCode, message: &str, code: &str) -> Response<Bytes> {
    google_error(
        status,
        status_name(status),
        message,
        Some(json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }])),
    )
}

/// `POST /v1/projects/{p}/messages:send`.
pub(crate) fn send(shared: &Shared, request: &Request<Bytes>, project: &str) -> Response<Bytes> {
    if header(request.headers(), AUTHORIZATION.as_str())
        .is_none_or(|v| !v.starts_with("Bearer ") || v.len() <= "Bearer ".len())
    {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    let body: SendBody = match serde_json::from_slice(request.body()) {
        Ok(body) => body,
        Err(e) => return invalid_json(&e),
    };
    let Some(message) = body.message else {
        return send_error(
            StatusCode::BAD_REQUEST,
            "The message field is required.",
            "INVALID_ARGUMENT",
        );
    };
    let target = match (
        message.token.filter(|t| !t.is_empty()),
        message.topic.filter(|t| !t.is_empty()),
        message.condition.filter(|c| !c.is_empty()),
    ) {
        (Some(token), None, None) => Target::Token(token),
        (None, Some(topic), None) => {
            let name = topic.strip_prefix("/topics/").unwrap_or(&topic);
            if !is_valid_topic_name(name) {
                return send_error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Invalid topic name {name:?}: it must match [a-zA-Z0-9-_.~%]{{1,900}}."
                    ),
                    "INVALID_ARGUMENT",
                );
            }
            Target::Audience(Audience::Topic(name.to_owned()))
        }
        (None, None, Some(condition)) => match parse_condition(&condition) {
            Ok(parsed) => Target::Audience(Audience::Condition(parsed)),
            Err(e) => {
                return send_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid condition: {e}."),
                    "INVALID_ARGUMENT",
                );
            }
        },
        (None, None, None) => {
            return send_error(
                StatusCode::BAD_REQUEST,
                "Recipient of the message is not set.",
                "INVALID_ARGUMENT",
            );
        }
        _ => {
            return send_error(
                StatusCode::BAD_REQUEST,
                "Exactly one of message.token, message.topic and message.condition may be set.",
                "INVALID_ARGUMENT",
            );
        }
    };
    let data = message.data.unwrap_or_default();
    if let Some(key) = data.keys().find(|k| is_reserved_data_key(k)) {
        return send_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid data payload key: {key}"),
            "INVALID_ARGUMENT",
        );
    }
    let android = message.android.as_ref();
    let android_field = |name: &str| android.and_then(|a| a.get(name)).and_then(|v| v.as_str());
    let webpush_urgency = message
        .webpush
        .as_ref()
        .and_then(|w| w.get("headers"))
        .and_then(|h| h.get("Urgency").or_else(|| h.get("urgency")))
        .and_then(|v| v.as_str());
    let high = android_field("priority").is_some_and(|p| p.eq_ignore_ascii_case("high"))
        || webpush_urgency.is_some_and(|u| u.eq_ignore_ascii_case("high"));
    let ttl = match android_field("ttl") {
        Some(text) => match parse_duration(text) {
            Some(ttl) => Some(ttl),
            None => {
                return send_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid value at 'message.android.ttl'.",
                    "INVALID_ARGUMENT",
                );
            }
        },
        None => None,
    };
    let to_send = SendMessage {
        data,
        notification: message.notification,
        from: Some(project.to_owned()),
        priority: Some(if high { "high" } else { "normal" }.to_owned()),
        collapse_key: android_field("collapse_key").map(str::to_owned),
        ttl,
    };
    let token = match target {
        Target::Token(token) => token,
        Target::Audience(audience) => {
            if body.validate_only {
                return ok_json(
                    &json!({ "name": format!("projects/{project}/messages/fake_message_id") }),
                );
            }
            // Topic messages are named by a number (docs/protocol.md §7.5).
            return match shared.send_to_audience(&audience, &to_send) {
                Ok(_) => ok_json(&json!({
                    "name": format!("projects/{project}/messages/{}", ids::random_id()),
                })),
                Err(e) => send_failure(&e),
            };
        }
    };
    match shared.prepare_message(&token, &to_send) {
        Ok(_) if body.validate_only => {
            ok_json(&json!({ "name": format!("projects/{project}/messages/fake_message_id") }))
        }
        Ok((android_id, stanza, _)) => match shared.enqueue_message(android_id, stanza, &to_send) {
            Ok(persistent_id) => {
                ok_json(&json!({ "name": format!("projects/{project}/messages/{persistent_id}") }))
            }
            Err(e) => send_failure(&e),
        },
        Err(e) => send_failure(&e),
    }
}

/// Whom a `messages:send` addresses.
enum Target {
    Token(String),
    Audience(Audience),
}

fn send_failure(e: &Error) -> Response<Bytes> {
    match e {
        Error::UnknownToken(_) | Error::UnknownDevice(_) => send_error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            "UNREGISTERED",
        ),
        Error::InvalidInput(message) => {
            send_error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT")
        }
        Error::ShutDown => send_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is shutting down.",
            "UNAVAILABLE",
        ),
        other => send_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &other.to_string(),
            "INTERNAL",
        ),
    }
}

// ---------------------------------------------------------------- Web Push

/// The longest Web Push `Topic` (RFC 8030 §5.4).
const MAX_WEBPUSH_TOPIC: usize = 32;

/// `POST /fcm/send/{token}`: an RFC 8030 push with an RFC 8291 (`aes128gcm`) or legacy
/// (`aesgcm`) body, signed with VAPID (RFC 8292); 201 Created (docs/protocol.md §7.5).
/// Headers: `TTL` (seconds; 0 = now or never), `Urgency`, `Topic` (replaces an
/// undelivered message of the same topic).
pub(crate) fn webpush(shared: &Shared, request: &Request<Bytes>, token: &str) -> Response<Bytes> {
    let headers = request.headers();
    let body = request.body().clone();
    if body.len() > MAX_PAYLOAD {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large: at most 4096 bytes",
        );
    }
    let (gcm, fcm) = match shared.resolve(token) {
        Ok(found) => found,
        Err(_) => return text(StatusCode::NOT_FOUND, "Not Found: unknown subscription"),
    };
    let authorization = header(headers, AUTHORIZATION.as_str());
    if !(authorization.is_none() && shared.config.accept_unsigned_webpush) {
        // The subscription's application server key, when it was made with one.
        let bound = fcm
            .as_ref()
            .and_then(|f| f.application_pub_key.as_deref())
            .or_else(|| {
                (gcm.persona == Persona::Web && gcm.sender != CHROME_VAPID_KEY)
                    .then_some(gcm.sender.as_str())
            })
            .and_then(vapid::decode_key);
        let mut origins = vec![shared.base_url.origin().ascii_serialization()];
        if let Some(host) = header(headers, "host") {
            origins.push(format!("https://{host}"));
        }
        match vapid::check(
            authorization,
            header(headers, "crypto-key"),
            &origins,
            bound.as_deref(),
            shared.unix_secs(),
        ) {
            Ok(()) => {}
            Err(vapid::Refusal::Missing) => {
                return text(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: a VAPID Authorization (vapid t=<JWT>, k=<key>) is required",
                );
            }
            Err(vapid::Refusal::Invalid(reason)) => {
                return text(
                    StatusCode::FORBIDDEN,
                    &format!("Forbidden: invalid VAPID authorization: {reason}"),
                );
            }
        }
    }
    let ttl = match header(headers, "ttl") {
        None => delivery::DEFAULT_TTL,
        Some(value) => match value.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs.min(2_419_200)),
            Err(_) => return text(StatusCode::BAD_REQUEST, "Bad Request: invalid TTL header"),
        },
    };
    if let Some(urgency) = header(headers, "urgency")
        && !["very-low", "low", "normal", "high"]
            .iter()
            .any(|u| urgency.eq_ignore_ascii_case(u))
    {
        return text(
            StatusCode::BAD_REQUEST,
            "Bad Request: Urgency must be very-low, low, normal or high",
        );
    }
    let topic = header(headers, "topic").map(str::to_owned);
    if let Some(topic) = &topic
        && (topic.len() > MAX_WEBPUSH_TOPIC
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return text(
            StatusCode::BAD_REQUEST,
            "Bad Request: Topic must be at most 32 characters of base64url",
        );
    }
    let encoding = header(headers, "content-encoding").map(str::to_ascii_lowercase);
    let encoding = match (encoding.as_deref(), body.is_empty()) {
        (Some("aes128gcm"), false) => {
            if let Err(e) = webpush_ece::aes128gcm::Header::parse(&body) {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Bad Request: invalid aes128gcm header: {e}"),
                );
            }
            WebPushEncoding::Aes128Gcm
        }
        (Some("aesgcm"), false) => {
            let (Some(crypto_key), Some(encryption)) =
                (header(headers, "crypto-key"), header(headers, "encryption"))
            else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: aesgcm needs Crypto-Key and Encryption headers",
                );
            };
            WebPushEncoding::AesGcm {
                crypto_key: crypto_key.to_owned(),
                encryption: encryption.to_owned(),
            }
        }
        (None, true) => WebPushEncoding::None,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "Bad Request: unsupported or missing Content-Encoding",
            );
        }
    };
    match shared.send_webpush(token, body, encoding, ttl, topic) {
        Ok(sent) => {
            let mut response = text(StatusCode::CREATED, "");
            let location = format!("{}fcm/send/message/{}", shared.base_url, sent.persistent_id);
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, value);
            }
            response
        }
        Err(Error::UnknownToken(_) | Error::UnknownDevice(_)) => {
            text(StatusCode::NOT_FOUND, "Not Found: unknown subscription")
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_parsers() {
        assert_eq!(parse_duration("3.5s"), Some(Duration::from_millis(3500)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("10"), None);
        assert!(is_reserved_data_key("google.x"));
        assert!(is_reserved_data_key("from"));
        assert!(!is_reserved_data_key("title"));
        assert_eq!(decode_b64("AQID").as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(decode_b64("AQI=").as_deref(), Some(&[1u8, 2][..]));
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("AidLogin 12:34"));
        assert_eq!(aid_login(&headers), Some((12, 34)));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("AidLogin 12"));
        assert_eq!(aid_login(&headers), None);
    }
}

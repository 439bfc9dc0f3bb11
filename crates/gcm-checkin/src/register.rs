//! GCM register3 (docs/protocol.md §2.2): a form `POST` authorised with `AidLogin`,
//! answered by `token=<token>` or `Error=<CODE>` — both with HTTP 200 — or by other
//! shapes that are all typed here. The same endpoint subscribes the Android persona to
//! topics, unsubscribes it and deletes its token (docs/protocol.md §7.1).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use fcm_http::{Endpoints, HttpClient, RetryPolicy, excerpt};
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Response};
use sha1::{Digest, Sha1};

use crate::checkin::is_html;
use crate::send::{send_with_retry, with_body};
use crate::{CheckinCredentials, Error, GcmToken, Register3Code};

/// The `app` of the Chrome/web persona.
pub const CHROME_APP: &str = "org.chromium.linux";
/// The default bundle in the web persona's `X-subtype=wp:<bundle>#<uuid4>`.
pub const DEFAULT_WEB_BUNDLE: &str = "receiver.push.com";
/// Chrome's own VAPID public key (base64url), the default web-persona `sender`.
pub const CHROME_VAPID_KEY: &str =
    "BDOU99-h67HcA6JeFXHbSNMu7e2yNNu3RzoMj8TM4W88jITfq7ZmPvIM1Iv-4_l2LxQcYwhqby2xGpWwzjfAnG4";
/// The default Android signing-certificate SHA-1 (of nothing).
pub const DEFAULT_ANDROID_CERT: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
/// The default Firebase app name, whose hash goes into `X-firebase-app-name-hash`.
pub const DEFAULT_FIREBASE_APP_NAME: &str = "[DEFAULT]";

const FORM: &str = "application/x-www-form-urlencoded";

/// `X-firebase-app-name-hash`: SHA-1 of the Firebase app name, base64url without
/// padding, as the Firebase Android SDK computes it.
///
/// ```
/// assert_eq!(gcm_checkin::firebase_app_name_hash("[DEFAULT]"), "R1dAH9Ui7M-ynoznwBdw01tLxhI");
/// ```
pub fn firebase_app_name_hash(app_name: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha1::digest(app_name.as_bytes()))
}

/// The Chrome/web persona: `app=org.chromium.linux`,
/// `X-subtype=wp:<bundle>#<uuid4>`, `sender=<VAPID public key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebRegistration {
    /// `app` (default [`CHROME_APP`]).
    pub app: String,
    /// `X-subtype`, `wp:<bundle>#<uuid4>`; keep it with the credentials.
    pub subtype: String,
    /// `sender`: the VAPID public key, base64url (default [`CHROME_VAPID_KEY`]).
    pub sender: String,
}

impl Default for WebRegistration {
    fn default() -> Self {
        Self::new()
    }
}

impl WebRegistration {
    /// Chrome's app and VAPID key, bundle [`DEFAULT_WEB_BUNDLE`], a fresh UUID.
    pub fn new() -> Self {
        Self::with_bundle(DEFAULT_WEB_BUNDLE)
    }

    /// Like [`new`](Self::new) with another bundle in the subtype.
    pub fn with_bundle(bundle: &str) -> Self {
        Self {
            app: CHROME_APP.to_owned(),
            subtype: format!("wp:{bundle}#{}", uuid::Uuid::new_v4()),
            sender: CHROME_VAPID_KEY.to_owned(),
        }
    }

    /// The same registration with another VAPID key as sender.
    pub fn with_sender(mut self, vapid_public_key: impl Into<String>) -> Self {
        self.sender = vapid_public_key.into();
        self
    }

    /// The same registration with a given subtype (e.g. a stored one).
    pub fn with_subtype(mut self, subtype: impl Into<String>) -> Self {
        self.subtype = subtype.into();
        self
    }
}

/// The Firebase installation fields of an Android-persona registration.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallationAuth {
    /// `X-appid`: the Firebase installation id.
    pub fid: String,
    /// `X-Goog-Firebase-Installations-Auth`: the FIS auth token (redacted in `Debug`).
    pub auth_token: String,
}

impl InstallationAuth {
    /// From a FID and its auth token.
    pub fn new(fid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            fid: fid.into(),
            auth_token: auth_token.into(),
        }
    }
}

impl fmt::Debug for InstallationAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationAuth")
            .field("fid", &self.fid)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

/// The prefix of a topic's scope and of the `from` of messages sent to a topic.
pub const TOPIC_PREFIX: &str = "/topics/";

/// Whether `name` is a topic name register3 accepts: `[a-zA-Z0-9-_.~%]{1,900}`
/// (docs/protocol.md §7.1), without the `/topics/` prefix.
///
/// ```
/// assert!(gcm_checkin::is_valid_topic_name("news-2024_eu.~%20"));
/// assert!(!gcm_checkin::is_valid_topic_name("news/eu"));
/// assert!(!gcm_checkin::is_valid_topic_name(""));
/// ```
pub fn is_valid_topic_name(name: &str) -> bool {
    (1..=900).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
}

/// The Android-app persona (that of the Python `pullkin` library): every field an FCM
/// Android client sends. The defaults are those of docs/protocol.md §2.2.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AndroidRegistration {
    /// `sender` and `X-subtype`: the sender id (project number), several joined by `,`
    /// (docs/protocol.md §7.1); for a topic request, the app's current token (see
    /// [`for_topic`](Self::for_topic)).
    pub sender_id: String,
    /// `app` (form and header): the Android package name.
    pub package: String,
    /// `cert`: the signing certificate SHA-1, hex (default [`DEFAULT_ANDROID_CERT`]).
    pub cert: String,
    /// `X-gmp_app_id`: the Firebase app id (`1:<number>:android:<hex>`), when known.
    pub gmp_app_id: Option<String>,
    /// The Firebase installation; its fields (`X-appid`,
    /// `X-Goog-Firebase-Installations-Auth`, `X-firebase-app-name-hash`) are sent only
    /// when present.
    pub installation: Option<InstallationAuth>,
    /// The Firebase app name hashed into `X-firebase-app-name-hash` (default
    /// [`DEFAULT_FIREBASE_APP_NAME`]).
    pub firebase_app_name: String,
    /// `X-app_ver`, `app_ver` (form and header); default `1111`.
    pub app_ver: String,
    /// `X-app_ver_name`; default `1.1.1.1`.
    pub app_ver_name: String,
    /// `X-osv`; default `25`.
    pub osv: String,
    /// `X-cliv`; default `fcm-23.1.1`.
    pub cliv: String,
    /// `X-gmsv`, `gcm_ver` (form and header); default `231114044`.
    pub gmsv: String,
    /// `target_ver`; default `28`.
    pub target_ver: String,
    /// `User-Agent`; default `Android-GCM/1.5`.
    pub user_agent: String,
    /// `X-scope`: `*` for the token itself (the default), `/topics/<T>` for a topic.
    pub scope: String,
    /// `X-gcm.topic`: `/topics/<T>` for a topic request, else not sent.
    pub gcm_topic: Option<String>,
}

impl AndroidRegistration {
    /// A registration of `package` for `sender_id`, with the default versions and cert.
    pub fn new(sender_id: impl Into<String>, package: impl Into<String>) -> Self {
        Self {
            sender_id: sender_id.into(),
            package: package.into(),
            cert: DEFAULT_ANDROID_CERT.to_owned(),
            gmp_app_id: None,
            installation: None,
            firebase_app_name: DEFAULT_FIREBASE_APP_NAME.to_owned(),
            app_ver: "1111".to_owned(),
            app_ver_name: "1.1.1.1".to_owned(),
            osv: "25".to_owned(),
            cliv: "fcm-23.1.1".to_owned(),
            gmsv: "231114044".to_owned(),
            target_ver: "28".to_owned(),
            user_agent: "Android-GCM/1.5".to_owned(),
            scope: "*".to_owned(),
            gcm_topic: None,
        }
    }

    /// The same persona's request about topic `topic` (a name without the `/topics/`
    /// prefix) for the app's current `token` (docs/protocol.md §7.1): `sender` and
    /// `X-subtype` become the token, `X-scope` and `X-gcm.topic` become `/topics/<topic>`.
    /// As it is, the request subscribes; [`RegisterRequest::deleting`] makes it
    /// unsubscribe. The name is not checked here: see [`is_valid_topic_name`].
    pub fn for_topic(mut self, token: &GcmToken, topic: &str) -> Self {
        let scope = format!("{TOPIC_PREFIX}{topic}");
        self.sender_id = token.as_str().to_owned();
        self.gcm_topic = Some(scope.clone());
        self.scope = scope;
        self
    }

    /// With the signing-certificate SHA-1 (hex; lower-cased).
    pub fn with_cert(mut self, cert_sha1_hex: impl Into<String>) -> Self {
        self.cert = cert_sha1_hex.into().to_ascii_lowercase();
        self
    }

    /// With the Firebase app id.
    pub fn with_gmp_app_id(mut self, app_id: impl Into<String>) -> Self {
        self.gmp_app_id = Some(app_id.into());
        self
    }

    /// With a Firebase installation.
    pub fn with_installation(mut self, installation: InstallationAuth) -> Self {
        self.installation = Some(installation);
        self
    }
}

/// Who registers: the Chrome/web persona or the Android-app persona.
// Built once per registration: boxing the larger variant would only cost ergonomics.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Persona {
    /// Chrome / web push.
    Web(WebRegistration),
    /// An Android app.
    Android(AndroidRegistration),
}

/// A register3 call: the checked-in device and the persona.
///
/// ```
/// use gcm_checkin::{CheckinCredentials, RegisterRequest, WebRegistration};
/// let request = RegisterRequest::web(CheckinCredentials::new(1, 2), WebRegistration::new())
///     .build_request(&fcm_http::Endpoints::default())
///     .unwrap();
/// assert_eq!(request.headers()["authorization"], "AidLogin 1:2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisterRequest {
    /// The device (from a check-in).
    pub credentials: CheckinCredentials,
    /// The persona and its fields.
    pub persona: Persona,
    /// Whether this deletes instead of registering: `delete=1` (docs/protocol.md §7.1).
    pub delete: bool,
}

impl RegisterRequest {
    /// A web-persona registration.
    pub fn web(credentials: CheckinCredentials, web: WebRegistration) -> Self {
        Self {
            credentials,
            persona: Persona::Web(web),
            delete: false,
        }
    }

    /// An Android-persona registration.
    pub fn android(credentials: CheckinCredentials, android: AndroidRegistration) -> Self {
        Self {
            credentials,
            persona: Persona::Android(android),
            delete: false,
        }
    }

    /// The same request as a delete (`delete=1`, docs/protocol.md §7.1): of the token
    /// (an Android registration with scope `*`, or a web registration), or of a topic
    /// subscription (see [`AndroidRegistration::for_topic`]). Send it with [`unregister`].
    #[must_use]
    pub fn deleting(mut self) -> Self {
        self.delete = true;
        self
    }

    /// The form fields, in the order they are sent.
    pub fn form_fields(&self) -> Vec<(&'static str, String)> {
        let device = self.credentials.android_id.to_string();
        let mut fields = self.persona_fields(device);
        if self.delete {
            fields.push(("delete", "1".to_owned()));
        }
        fields
    }

    fn persona_fields(&self, device: String) -> Vec<(&'static str, String)> {
        match &self.persona {
            Persona::Web(web) => vec![
                ("app", web.app.clone()),
                ("X-subtype", web.subtype.clone()),
                ("device", device),
                ("sender", web.sender.clone()),
            ],
            Persona::Android(a) => {
                let fis = a.installation.as_ref();
                let mut fields = vec![
                    ("X-subtype", a.sender_id.clone()),
                    ("sender", a.sender_id.clone()),
                    ("X-app_ver", a.app_ver.clone()),
                    ("X-osv", a.osv.clone()),
                    ("X-cliv", a.cliv.clone()),
                    ("X-gmsv", a.gmsv.clone()),
                ];
                if let Some(fis) = fis {
                    fields.push(("X-appid", fis.fid.clone()));
                }
                fields.push(("X-scope", a.scope.clone()));
                if let Some(topic) = &a.gcm_topic {
                    fields.push(("X-gcm.topic", topic.clone()));
                }
                if let Some(fis) = fis {
                    fields.push(("X-Goog-Firebase-Installations-Auth", fis.auth_token.clone()));
                }
                if let Some(app_id) = &a.gmp_app_id {
                    fields.push(("X-gmp_app_id", app_id.clone()));
                }
                if fis.is_some() {
                    fields.push((
                        "X-firebase-app-name-hash",
                        firebase_app_name_hash(&a.firebase_app_name),
                    ));
                }
                fields.extend([
                    ("X-app_ver_name", a.app_ver_name.clone()),
                    ("app", a.package.clone()),
                    ("device", device),
                    ("app_ver", a.app_ver.clone()),
                    ("gcm_ver", a.gmsv.clone()),
                    ("plat", "0".to_owned()),
                    ("cert", a.cert.clone()),
                    ("target_ver", a.target_ver.clone()),
                ]);
                fields
            }
        }
    }

    /// The HTTP request: `POST <endpoints.register3>`, form-encoded
    /// [`form_fields`](Self::form_fields), `Authorization: AidLogin <id>:<token>`, and
    /// for the Android persona the `app`, `app_ver`, `gcm_ver` and `User-Agent` headers.
    pub fn build_request(&self, endpoints: &Endpoints) -> Result<Request<Bytes>, Error> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.form_fields() {
            form.append_pair(name, &value);
        }
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(fcm_http::to_uri(&endpoints.register3)?)
            .header(AUTHORIZATION, self.credentials.aid_login())
            .header(CONTENT_TYPE, FORM);
        if let Persona::Android(a) = &self.persona {
            builder = builder
                .header("app", &a.package)
                .header("app_ver", &a.app_ver)
                .header("gcm_ver", &a.gmsv)
                .header(USER_AGENT, &a.user_agent);
        }
        with_body(builder, Bytes::from(form.finish()))
    }
}

/// Parses a register3 answer, checking status, content and shape (never splitting
/// blindly on `=`):
///
/// - `Error=<CODE>` (any status) → [`Error::Register3`];
/// - an HTML page (any status) → [`Error::HtmlPage`];
/// - another non-2xx answer → [`fcm_http::Error::Status`];
/// - `token=` → [`Error::EmptyToken`]; `token=<token>` → the token;
/// - anything else → [`Error::UnexpectedResponse`].
pub fn parse_register_response(response: &Response<Bytes>) -> Result<GcmToken, Error> {
    let status = response.status();
    let body = response.body();
    let unexpected = || Error::UnexpectedResponse {
        status,
        body_excerpt: excerpt(body),
    };
    let text = std::str::from_utf8(body).map(str::trim);
    if let Ok(Some(code)) = text.map(|t| t.strip_prefix("Error="))
        && is_code(code)
    {
        return Err(Error::Register3 {
            code: Register3Code::parse(code),
            status,
            retry_after: fcm_http::retry_after(response.headers(), std::time::SystemTime::now()),
        });
    }
    if is_html(response) {
        return Err(Error::HtmlPage {
            status,
            body_excerpt: excerpt(body),
        });
    }
    if !status.is_success() {
        return Err(fcm_http::Error::status(response).into());
    }
    match text.map(|t| t.strip_prefix("token=")) {
        Ok(Some("")) => Err(Error::EmptyToken),
        Ok(Some(token)) if token.bytes().all(is_token_byte) => Ok(GcmToken::new(token)),
        _ => Err(unexpected()),
    }
}

/// Parses the answer to a delete ([`RegisterRequest::deleting`]): `deleted=<app>`, or
/// `token=<app>` as microG also accepts (docs/protocol.md §7.1); returns what follows
/// the `=`. `Error=<CODE>`, HTML pages and error statuses are typed as by
/// [`parse_register_response`]; any other body is [`Error::UnexpectedDeleteResponse`].
pub fn parse_delete_response(response: &Response<Bytes>) -> Result<String, Error> {
    let unexpected = || Error::UnexpectedDeleteResponse {
        status: response.status(),
        body_excerpt: excerpt(response.body()),
    };
    let text = std::str::from_utf8(response.body()).map(str::trim);
    if response.status().is_success()
        && let Ok(text) = text
        && let Some(what) = text
            .strip_prefix("deleted=")
            .or_else(|| text.strip_prefix("token="))
    {
        return if what.bytes().all(is_token_byte) {
            Ok(what.to_owned())
        } else {
            Err(unexpected())
        };
    }
    match parse_register_response(response) {
        Err(Error::UnexpectedResponse { .. } | Error::EmptyToken) => Err(unexpected()),
        Err(error) => Err(error),
        // Unreachable: a 2xx `token=` body was taken above.
        Ok(_) => Err(unexpected()),
    }
}

fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_:.~+/".contains(&b)
}

/// Registers with register3, retrying [`Error::is_transient`] failures (by default
/// `PHONE_REGISTRATION_ERROR`, `InternalServerError`, 5xx, 429, timeouts and
/// connection failures) as `retry` allows, never sooner than the server's `Retry-After`
/// asks. The very same request (same subtype UUID) is repeated.
pub async fn register<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    request: &RegisterRequest,
    retry: &RetryPolicy,
) -> Result<GcmToken, Error> {
    register_with(client, endpoints, request, retry, Error::is_transient).await
}

/// Sends a delete (the request is sent as [`RegisterRequest::deleting`] makes it, whether
/// or not it was): the token's (unregister) or a topic subscription's (unsubscribe). The
/// answer is parsed by [`parse_delete_response`]; [`Error::is_transient`] failures are
/// retried as `retry` allows, never sooner than a `Retry-After` asks.
pub async fn unregister<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    request: &RegisterRequest,
    retry: &RetryPolicy,
) -> Result<String, Error> {
    let http_request = request.clone().deleting().build_request(endpoints)?;
    send_with_retry(
        client,
        http_request,
        retry,
        Error::is_transient,
        parse_delete_response,
    )
    .await
}

/// [`register`] with the caller's choice of retryable errors.
pub async fn register_with<C, P>(
    client: &C,
    endpoints: &Endpoints,
    request: &RegisterRequest,
    retry: &RetryPolicy,
    is_retryable: P,
) -> Result<GcmToken, Error>
where
    C: HttpClient + ?Sized,
    P: Fn(&Error) -> bool,
{
    let http_request = request.build_request(endpoints)?;
    send_with_retry(
        client,
        http_request,
        retry,
        is_retryable,
        parse_register_response,
    )
    .await
}

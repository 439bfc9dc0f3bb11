//! Firebase Installations (docs/protocol.md §2.3): create an installation, refresh its
//! auth token (`authTokens:generate`, which the auth token's 7-day life makes necessary)
//! and delete it (docs/protocol.md §7.1).

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use fcm_http::{Endpoints, HttpClient, RetryPolicy, join, to_uri};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response};
use serde::{Deserialize, Serialize};

use crate::error::error_response;
use crate::{AuthToken, Error, RefreshToken};

/// The SDK version the web persona reports.
pub const WEB_SDK_VERSION: &str = "w:0.6.6";
/// The SDK version the Android persona reports.
pub const ANDROID_SDK_VERSION: &str = "a:18.0.0";
/// The `x-firebase-client` value the web persona sends: base64 of
/// `{"heartbeats":[],"version":2}`.
pub const DEFAULT_FIREBASE_CLIENT: &str = "eyJoZWFydGJlYXRzIjpbXSwidmVyc2lvbiI6Mn0=";

const JSON: &str = "application/json";

/// Who talks to Firebase: a web app, or an Android app (which adds `x-android-package`
/// and `x-android-cert` to every request).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Persona {
    /// A web (JavaScript SDK) client.
    Web,
    /// An Android app.
    Android {
        /// The package name.
        package: String,
        /// The signing certificate's SHA-1, hex.
        cert: String,
    },
}

/// A Firebase app as the installation and registration endpoints know it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirebaseApp {
    /// The Firebase project id (`projects/<this>/…`).
    pub project_id: String,
    /// The API key (`x-goog-api-key`).
    pub api_key: String,
    /// The Firebase app id (`1:<number>:web:<hex>` or `…:android:…`).
    pub app_id: String,
    /// Web or Android.
    pub persona: Persona,
    /// The reported SDK version ([`WEB_SDK_VERSION`] or [`ANDROID_SDK_VERSION`]).
    pub sdk_version: String,
    /// The `x-firebase-client` header, if any ([`DEFAULT_FIREBASE_CLIENT`] for web).
    pub firebase_client: Option<String>,
}

impl FirebaseApp {
    /// A web app.
    pub fn web(
        project_id: impl Into<String>,
        api_key: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Self {
        Self {
            project_id: project_id.into(),
            api_key: api_key.into(),
            app_id: app_id.into(),
            persona: Persona::Web,
            sdk_version: WEB_SDK_VERSION.to_owned(),
            firebase_client: Some(DEFAULT_FIREBASE_CLIENT.to_owned()),
        }
    }

    /// An Android app with its package and signing-certificate SHA-1 (hex).
    pub fn android(
        project_id: impl Into<String>,
        api_key: impl Into<String>,
        app_id: impl Into<String>,
        package: impl Into<String>,
        cert_sha1_hex: impl Into<String>,
    ) -> Self {
        Self {
            project_id: project_id.into(),
            api_key: api_key.into(),
            app_id: app_id.into(),
            persona: Persona::Android {
                package: package.into(),
                cert: cert_sha1_hex.into(),
            },
            sdk_version: ANDROID_SDK_VERSION.to_owned(),
            firebase_client: None,
        }
    }

    /// A request with the headers every Firebase Installations request carries.
    fn fis_request(&self, method: Method, url: &url::Url) -> Result<http::request::Builder, Error> {
        let mut builder = Request::builder()
            .method(method)
            .uri(to_uri(url)?)
            .header("x-goog-api-key", &self.api_key)
            .header(CONTENT_TYPE, JSON)
            .header(ACCEPT, JSON);
        if let Some(client) = &self.firebase_client {
            builder = builder.header("x-firebase-client", client);
        }
        if let Persona::Android { package, cert } = &self.persona {
            builder = builder
                .header("x-android-package", package)
                .header("x-android-cert", cert);
        }
        Ok(builder)
    }
}

/// The `x-firebase-client` value for a heartbeat JSON document (base64, padded).
pub fn firebase_client_header(heartbeat_json: &str) -> String {
    STANDARD.encode(heartbeat_json)
}

/// A Firebase installation: its id, its refresh token and a current auth token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Installation {
    /// The resource name, `projects/<number>/installations/<fid>`.
    pub name: String,
    /// The installation id (the server may replace the one proposed).
    pub fid: String,
    /// The refresh token.
    pub refresh_token: RefreshToken,
    /// The auth token and its expiry.
    pub auth_token: AuthToken,
}

impl Installation {
    /// An installation from its parts (e.g. read from stored credentials).
    pub fn new(
        name: impl Into<String>,
        fid: impl Into<String>,
        refresh_token: RefreshToken,
        auth_token: AuthToken,
    ) -> Self {
        Self {
            name: name.into(),
            fid: fid.into(),
            refresh_token,
            auth_token,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    fid: &'a str,
    app_id: &'a str,
    auth_version: &'a str,
    sdk_version: &'a str,
}

#[derive(Serialize)]
struct RefreshBody<'a> {
    installation: RefreshInstallation<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RefreshInstallation<'a> {
    sdk_version: &'a str,
    app_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateAnswer {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    fid: Option<String>,
    refresh_token: String,
    auth_token: TokenAnswer,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    token: String,
    expires_in: String,
}

fn json_body<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}

fn installations_url(endpoints: &Endpoints, app: &FirebaseApp) -> Result<url::Url, Error> {
    Ok(join(
        &endpoints.installations,
        &["projects", &app.project_id, "installations"],
    )?)
}

/// `POST <installations>/projects/<project>/installations` with
/// `{"fid", "appId", "authVersion": "FIS_v2", "sdkVersion"}` and the persona's headers.
pub fn create_installation_request(
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fid: &str,
) -> Result<Request<Bytes>, Error> {
    let body = json_body(&CreateBody {
        fid,
        app_id: &app.app_id,
        auth_version: "FIS_v2",
        sdk_version: &app.sdk_version,
    })?;
    app.fis_request(Method::POST, &installations_url(endpoints, app)?)?
        .body(body)
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}

/// Parses the answer to [`create_installation_request`]; `requested_fid` is used when
/// the answer names none, `now` is when the answer arrived (the expiry is relative).
pub fn parse_create_installation_response(
    response: &Response<Bytes>,
    requested_fid: &str,
    now: SystemTime,
) -> Result<Installation, Error> {
    const WHAT: &str = "installation";
    if !response.status().is_success() {
        return Err(error_response(response));
    }
    let answer: CreateAnswer = serde_json::from_slice(response.body())
        .map_err(|e| fcm_http::Error::decode(WHAT, e.to_string()))?;
    if answer.refresh_token.is_empty() {
        return Err(fcm_http::Error::decode(WHAT, "empty refreshToken").into());
    }
    let auth_token = auth_token(answer.auth_token, now, WHAT)?;
    let fid = answer
        .fid
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| requested_fid.to_owned());
    Ok(Installation {
        name: answer.name.unwrap_or_default(),
        fid,
        refresh_token: RefreshToken::new(answer.refresh_token),
        auth_token,
    })
}

/// `POST <installations>/projects/<project>/installations/<fid>/authTokens:generate`,
/// `Authorization: FIS_v2 <refresh token>`, body
/// `{"installation": {"sdkVersion", "appId"}}`.
pub fn refresh_auth_token_request(
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fid: &str,
    refresh_token: &RefreshToken,
) -> Result<Request<Bytes>, Error> {
    let url = join(
        &installations_url(endpoints, app)?,
        &[fid, "authTokens:generate"],
    )?;
    let body = json_body(&RefreshBody {
        installation: RefreshInstallation {
            sdk_version: &app.sdk_version,
            app_id: &app.app_id,
        },
    })?;
    app.fis_request(Method::POST, &url)?
        .header(AUTHORIZATION, format!("FIS_v2 {}", refresh_token.as_str()))
        .body(body)
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}

/// `DELETE <installations>/projects/<project>/installations/<fid>`,
/// `Authorization: FIS_v2 <refresh token>` and the persona's headers, no body
/// (docs/protocol.md §7.1).
pub fn delete_installation_request(
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fid: &str,
    refresh_token: &RefreshToken,
) -> Result<Request<Bytes>, Error> {
    let url = join(&installations_url(endpoints, app)?, &[fid])?;
    app.fis_request(Method::DELETE, &url)?
        .header(AUTHORIZATION, format!("FIS_v2 {}", refresh_token.as_str()))
        .body(Bytes::new())
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}

/// Parses the answer to [`delete_installation_request`]: any 2xx is success, else
/// Google's JSON error ([`Error::Api`]; a 404 means the installation was gone already).
pub fn parse_delete_installation_response(response: &Response<Bytes>) -> Result<(), Error> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(error_response(response))
    }
}

/// Parses the answer to [`refresh_auth_token_request`]: `{"token", "expiresIn"}`.
pub fn parse_auth_token_response(
    response: &Response<Bytes>,
    now: SystemTime,
) -> Result<AuthToken, Error> {
    const WHAT: &str = "auth token";
    if !response.status().is_success() {
        return Err(error_response(response));
    }
    let answer: TokenAnswer = serde_json::from_slice(response.body())
        .map_err(|e| fcm_http::Error::decode(WHAT, e.to_string()))?;
    auth_token(answer, now, WHAT)
}

fn auth_token(
    answer: TokenAnswer,
    now: SystemTime,
    what: &'static str,
) -> Result<AuthToken, Error> {
    if answer.token.is_empty() {
        return Err(fcm_http::Error::decode(what, "empty auth token").into());
    }
    let lifetime = parse_google_duration(&answer.expires_in).ok_or_else(|| {
        fcm_http::Error::decode(what, format!("bad expiresIn {:?}", answer.expires_in))
    })?;
    let expires_at = now
        .checked_add(lifetime)
        .ok_or_else(|| fcm_http::Error::decode(what, "expiresIn out of range"))?;
    Ok(AuthToken::new(answer.token, expires_at))
}

/// Parses a protobuf-JSON duration such as `"604800s"` or `"3.5s"`.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(fcm_install::parse_google_duration("604800s"), Some(Duration::from_secs(604_800)));
/// assert_eq!(fcm_install::parse_google_duration("1.25s"), Some(Duration::from_millis(1250)));
/// assert_eq!(fcm_install::parse_google_duration("-1s"), None);
/// ```
pub fn parse_google_duration(text: &str) -> Option<Duration> {
    let number = text.trim().strip_suffix('s')?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos))
}

/// Creates an installation with `fid` (see [`crate::generate_fid`]), retrying
/// [`Error::is_transient`] failures as `retry` allows.
pub async fn create_installation<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fid: &str,
    retry: &RetryPolicy,
) -> Result<Installation, Error> {
    let request = create_installation_request(endpoints, app, fid)?;
    crate::send_with_retry(client, request, retry, |response| {
        parse_create_installation_response(response, fid, SystemTime::now())
    })
    .await
}

/// Obtains a fresh auth token for an installation, retrying [`Error::is_transient`]
/// failures as `retry` allows.
pub async fn refresh_auth_token<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fid: &str,
    refresh_token: &RefreshToken,
    retry: &RetryPolicy,
) -> Result<AuthToken, Error> {
    let request = refresh_auth_token_request(endpoints, app, fid, refresh_token)?;
    crate::send_with_retry(client, request, retry, |response| {
        parse_auth_token_response(response, SystemTime::now())
    })
    .await
}

/// Deletes an installation (and with it every FCM registration and auth token it holds),
/// retrying [`Error::is_transient`] failures as `retry` allows.
pub async fn delete_installation<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fid: &str,
    refresh_token: &RefreshToken,
    retry: &RetryPolicy,
) -> Result<(), Error> {
    let request = delete_installation_request(endpoints, app, fid, refresh_token)?;
    crate::send_with_retry(client, request, retry, parse_delete_installation_response).await
}

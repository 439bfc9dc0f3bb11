//! FCM registrations (docs/protocol.md §2.4): bind a web-push subscription (the GCM
//! token's endpoint and the receiver's keys) to an FCM token, and delete it again.

use std::fmt;

use bytes::Bytes;
use fcm_http::{Endpoints, HttpClient, RetryPolicy, join, to_uri};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Response};
use serde::{Deserialize, Serialize};

use crate::error::error_response;
use crate::{Error, FcmToken, FirebaseApp};

const JSON: &str = "application/json";

/// The web-push subscription FCM registers: where pushes go and how to encrypt them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WebPushSubscription {
    /// The sender's VAPID public key (base64url); `None` for Chrome's default key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_pub_key: Option<String>,
    /// The receiver's 16-byte auth secret, base64url (redacted in `Debug`).
    pub auth: String,
    /// The push endpoint, `https://fcm.googleapis.com/fcm/send/<gcm token>`
    /// (see [`fcm_send_endpoint`]); redacted in `Debug` (it holds the token).
    pub endpoint: String,
    /// The receiver's P-256 public key, uncompressed, base64url.
    pub p256dh: String,
}

impl WebPushSubscription {
    /// A subscription with Chrome's default VAPID key.
    pub fn new(
        endpoint: impl Into<String>,
        p256dh: impl Into<String>,
        auth: impl Into<String>,
    ) -> Self {
        Self {
            application_pub_key: None,
            auth: auth.into(),
            endpoint: endpoint.into(),
            p256dh: p256dh.into(),
        }
    }

    /// The same subscription for a sender's own VAPID key.
    pub fn with_application_pub_key(mut self, vapid_public_key: impl Into<String>) -> Self {
        self.application_pub_key = Some(vapid_public_key.into());
        self
    }
}

impl fmt::Debug for WebPushSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushSubscription")
            .field("application_pub_key", &self.application_pub_key)
            .field("auth", &"<redacted>")
            .field("endpoint", &"<redacted>")
            .field("p256dh", &self.p256dh)
            .finish()
    }
}

/// The push endpoint of a GCM token: `<endpoints.fcm_send>/<gcm token>`.
///
/// ```
/// let e = fcm_install::fcm_send_endpoint(&fcm_http::Endpoints::default(), "abc:APA91").unwrap();
/// assert_eq!(e, "https://fcm.googleapis.com/fcm/send/abc:APA91");
/// ```
pub fn fcm_send_endpoint(endpoints: &Endpoints, gcm_token: &str) -> Result<String, Error> {
    Ok(join(&endpoints.fcm_send, &[gcm_token])?.into())
}

/// A created FCM registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FcmRegistration {
    /// The resource name, `projects/<project>/registrations/<token>`, for deletion.
    pub name: String,
    /// The FCM token senders address.
    pub token: FcmToken,
}

impl fmt::Debug for FcmRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The name ends with the token: both are redacted.
        f.debug_struct("FcmRegistration")
            .field("name", &"<redacted>")
            .field("token", &self.token)
            .finish()
    }
}

impl FcmRegistration {
    /// A registration from its parts (e.g. read from stored credentials).
    pub fn new(name: impl Into<String>, token: FcmToken) -> Self {
        Self {
            name: name.into(),
            token,
        }
    }
}

#[derive(Serialize)]
struct CreateBody<'a> {
    web: &'a WebPushSubscription,
}

#[derive(Deserialize)]
struct CreateAnswer {
    #[serde(default)]
    name: Option<String>,
    token: String,
}

fn fcm_request(
    method: Method,
    url: &url::Url,
    app: &FirebaseApp,
    fis_auth_token: &str,
) -> Result<http::request::Builder, Error> {
    Ok(Request::builder()
        .method(method)
        .uri(to_uri(url)?)
        .header("x-goog-api-key", &app.api_key)
        .header("x-goog-firebase-installations-auth", fis_auth_token)
        .header(ACCEPT, JSON))
}

/// `POST <fcm_registrations>/projects/<project>/registrations` with
/// `{"web": {…subscription}}`, authorised by the FIS auth token.
pub fn create_registration_request(
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fis_auth_token: &str,
    subscription: &WebPushSubscription,
) -> Result<Request<Bytes>, Error> {
    let url = join(
        &endpoints.fcm_registrations,
        &["projects", &app.project_id, "registrations"],
    )?;
    let body = serde_json::to_vec(&CreateBody { web: subscription })
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()))?;
    fcm_request(Method::POST, &url, app, fis_auth_token)?
        .header(CONTENT_TYPE, JSON)
        .body(Bytes::from(body))
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}

/// Parses the answer to [`create_registration_request`]: `{"name", "token", "web"}`, or
/// Google's JSON error ([`Error::Api`]).
pub fn parse_create_registration_response(
    response: &Response<Bytes>,
) -> Result<FcmRegistration, Error> {
    const WHAT: &str = "FCM registration";
    if !response.status().is_success() {
        return Err(error_response(response));
    }
    let answer: CreateAnswer = serde_json::from_slice(response.body())
        .map_err(|e| fcm_http::Error::decode(WHAT, e.to_string()))?;
    if answer.token.is_empty() {
        return Err(fcm_http::Error::decode(WHAT, "empty token").into());
    }
    Ok(FcmRegistration {
        name: answer.name.unwrap_or_default(),
        token: FcmToken::new(answer.token),
    })
}

/// `DELETE <fcm_registrations>/<name>`, `name` being a registration's resource name
/// (`projects/<project>/registrations/<token>`).
pub fn delete_registration_request(
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fis_auth_token: &str,
    name: &str,
) -> Result<Request<Bytes>, Error> {
    let segments: Vec<&str> = name.split('/').collect();
    if segments.first() != Some(&"projects") || segments.len() < 4 {
        return Err(
            fcm_http::Error::InvalidRequest(format!("not a registration name: {name:?}")).into(),
        );
    }
    let url = join(&endpoints.fcm_registrations, &segments)?;
    fcm_request(Method::DELETE, &url, app, fis_auth_token)?
        .body(Bytes::new())
        .map_err(|e| fcm_http::Error::InvalidRequest(e.to_string()).into())
}

/// Parses the answer to [`delete_registration_request`]: any 2xx is success.
pub fn parse_delete_registration_response(response: &Response<Bytes>) -> Result<(), Error> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(error_response(response))
    }
}

/// Creates an FCM registration, retrying [`Error::is_transient`] failures as `retry`
/// allows.
pub async fn create_registration<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fis_auth_token: &str,
    subscription: &WebPushSubscription,
    retry: &RetryPolicy,
) -> Result<FcmRegistration, Error> {
    let request = create_registration_request(endpoints, app, fis_auth_token, subscription)?;
    crate::send_with_retry(client, request, retry, parse_create_registration_response).await
}

/// Deletes an FCM registration by name, retrying [`Error::is_transient`] failures as
/// `retry` allows.
pub async fn delete_registration<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    app: &FirebaseApp,
    fis_auth_token: &str,
    name: &str,
    retry: &RetryPolicy,
) -> Result<(), Error> {
    let request = delete_registration_request(endpoints, app, fis_auth_token, name)?;
    crate::send_with_retry(client, request, retry, parse_delete_registration_response).await
}

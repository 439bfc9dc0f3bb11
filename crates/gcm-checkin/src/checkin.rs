//! Check-in (docs/protocol.md §2.1): `POST /checkin` with an `AndroidCheckinRequest`,
//! answered by an `AndroidCheckinResponse` carrying `android_id`, `security_token` and
//! settings ([`CheckinSettings`]).

use bytes::Bytes;
use fcm_http::{Endpoints, HttpClient, RetryPolicy, excerpt};
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use prost::Message;

use crate::proto::chrome_build_proto::{Channel, Platform};
use crate::proto::{AndroidCheckinProto, AndroidCheckinRequest, AndroidCheckinResponse};
use crate::proto::{ChromeBuildProto, DeviceType};
use crate::send::{send_with_retry, with_body};
use crate::settings::CheckinSettings;
use crate::{CheckinCredentials, Error};

/// The Chrome version a check-in claims by default (one of the versions seen working).
pub const DEFAULT_CHROME_VERSION: &str = "140.0.7339.16";

/// The media type of check-in requests and responses.
const PROTOBUF: &str = "application/x-protobuf";

/// The Chrome build a check-in describes. The default is Chrome
/// [`DEFAULT_CHROME_VERSION`], stable channel, on Linux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChromeBuild {
    /// The platform (`LINUX`; some peers send `MAC`).
    pub platform: Platform,
    /// The Chrome version, e.g. `"140.0.7339.16"`.
    pub version: String,
    /// The release channel.
    pub channel: Channel,
}

impl Default for ChromeBuild {
    fn default() -> Self {
        Self {
            platform: Platform::Linux,
            version: DEFAULT_CHROME_VERSION.to_owned(),
            channel: Channel::Stable,
        }
    }
}

/// A check-in: as a new device, or a re-check-in with stored credentials.
///
/// ```
/// use gcm_checkin::{CheckinCredentials, CheckinRequest};
/// let endpoints = fcm_http::Endpoints::default();
/// let request = CheckinRequest::recheck(CheckinCredentials::new(42, 7))
///     .build_request(&endpoints)
///     .unwrap();
/// assert_eq!(request.uri(), "https://android.clients.google.com/checkin");
/// assert_eq!(request.headers()["content-type"], "application/x-protobuf");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CheckinRequest {
    /// Stored credentials for a re-check-in; `None` for a new device.
    pub credentials: Option<CheckinCredentials>,
    /// The Chrome build to describe.
    pub chrome: ChromeBuild,
}

impl CheckinRequest {
    /// A check-in of a new device.
    pub fn new_device() -> Self {
        Self::default()
    }

    /// A re-check-in with stored credentials.
    pub fn recheck(credentials: CheckinCredentials) -> Self {
        Self {
            credentials: Some(credentials),
            chrome: ChromeBuild::default(),
        }
    }

    /// The same request, describing another Chrome build.
    pub fn with_chrome_build(mut self, chrome: ChromeBuild) -> Self {
        self.chrome = chrome;
        self
    }

    /// Whether this is a re-check-in with stored credentials.
    pub fn is_recheck(&self) -> bool {
        self.credentials.is_some()
    }

    /// The protobuf body: `user_serial_number=0`, `version=3`, a `CHROME_BROWSER`
    /// check-in with the Chrome build, and `id`/`security_token` when re-checking in.
    pub fn to_proto(&self) -> AndroidCheckinRequest {
        AndroidCheckinRequest {
            user_serial_number: Some(0),
            version: Some(3),
            checkin: AndroidCheckinProto {
                r#type: Some(DeviceType::ChromeBrowser as i32),
                chrome_build: Some(ChromeBuildProto {
                    platform: Some(self.chrome.platform as i32),
                    chrome_version: Some(self.chrome.version.clone()),
                    channel: Some(self.chrome.channel as i32),
                }),
                ..Default::default()
            },
            // The proto field is int64 while ids are u64: the same 64 bits, as Chromium
            // sends them.
            id: self.credentials.map(|c| c.android_id as i64),
            security_token: self.credentials.map(|c| c.security_token.expose()),
            ..Default::default()
        }
    }

    /// The HTTP request: `POST <endpoints.checkin>`, `Content-Type:
    /// application/x-protobuf`, the encoded [`to_proto`](Self::to_proto).
    pub fn build_request(&self, endpoints: &Endpoints) -> Result<Request<Bytes>, Error> {
        let builder = Request::builder()
            .method(Method::POST)
            .uri(fcm_http::to_uri(&endpoints.checkin)?)
            .header(CONTENT_TYPE, PROTOBUF);
        with_body(builder, Bytes::from(self.to_proto().encode_to_vec()))
    }
}

/// A successful check-in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckinResponse {
    /// The device identity to store and use for register3 and MCS.
    pub credentials: CheckinCredentials,
    /// `stats_ok` as the server sent it.
    pub stats_ok: bool,
    /// The server time (`time_msec`), if sent.
    pub time_msec: Option<i64>,
    /// The settings digest, if sent.
    pub digest: Option<String>,
    /// `version_info`, if sent.
    pub version_info: Option<String>,
    /// The settings sent (`setting`), among them the re-check-in interval
    /// (docs/protocol.md §2.1).
    pub settings: CheckinSettings,
}

/// Parses the answer to `request`.
///
/// - 2xx with an `AndroidCheckinResponse` holding a non-zero `android_id` and
///   `security_token` → the new credentials;
/// - 4xx (except 429) to a re-check-in → [`Error::DeadCredentials`];
/// - any other non-2xx → [`fcm_http::Error::Status`];
/// - an HTML page, an empty body, undecodable protobuf or missing ids →
///   [`fcm_http::Error::Decode`].
pub fn parse_checkin_response(
    request: &CheckinRequest,
    response: &Response<Bytes>,
) -> Result<CheckinResponse, Error> {
    const WHAT: &str = "check-in response";
    let status = response.status();
    if !status.is_success() {
        if request.is_recheck()
            && status.is_client_error()
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            return Err(Error::DeadCredentials {
                status,
                body_excerpt: excerpt(response.body()),
            });
        }
        return Err(fcm_http::Error::status(response).into());
    }
    let body = response.body();
    if is_html(response) {
        return Err(fcm_http::Error::decode(
            WHAT,
            format!("an HTML page instead of protobuf: {:?}", excerpt(body)),
        )
        .into());
    }
    if body.is_empty() {
        return Err(fcm_http::Error::decode(WHAT, "empty body").into());
    }
    let decoded = AndroidCheckinResponse::decode(body.as_ref())
        .map_err(|e| fcm_http::Error::decode(WHAT, e.to_string()))?;
    let (android_id, security_token) = match (decoded.android_id, decoded.security_token) {
        (Some(id), Some(token)) if id != 0 && token != 0 => (id, token),
        _ => {
            return Err(fcm_http::Error::decode(
                WHAT,
                "android_id or security_token missing or zero",
            )
            .into());
        }
    };
    Ok(CheckinResponse {
        credentials: CheckinCredentials::new(android_id, security_token),
        stats_ok: decoded.stats_ok,
        time_msec: decoded.time_msec,
        digest: decoded.digest,
        version_info: decoded.version_info,
        settings: CheckinSettings::from_proto(&decoded.setting),
    })
}

/// Whether the response declares itself HTML or its body starts like markup.
pub(crate) fn is_html(response: &Response<Bytes>) -> bool {
    let declared = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    declared || response.body().trim_ascii_start().starts_with(b"<")
}

/// Checks in (see [`parse_checkin_response`]), retrying transient failures
/// ([`Error::is_transient`]) as `retry` allows, never sooner than the server's
/// `Retry-After` ([`Error::retry_after`]) asks.
pub async fn check_in<C: HttpClient + ?Sized>(
    client: &C,
    endpoints: &Endpoints,
    request: &CheckinRequest,
    retry: &RetryPolicy,
) -> Result<CheckinResponse, Error> {
    let http_request = request.build_request(endpoints)?;
    send_with_retry(
        client,
        http_request,
        retry,
        Error::is_transient,
        |response| parse_checkin_response(request, response),
    )
    .await
}

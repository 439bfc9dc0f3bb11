#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod fid;
mod installations;
mod registrations;
mod secret;

use bytes::Bytes;
use fcm_http::{HttpClient, RetryPolicy};
use http::{Request, Response};

/// Sends `request` and parses the answer, retrying [`Error::is_transient`] failures as
/// `retry` allows, never sooner than a server's `Retry-After` asks: the one loop behind
/// every async call of this crate.
async fn send_with_retry<C, T>(
    client: &C,
    request: Request<Bytes>,
    retry: &RetryPolicy,
    parse: impl Fn(&Response<Bytes>) -> Result<T, Error>,
) -> Result<T, Error>
where
    C: HttpClient + ?Sized,
{
    let parse = &parse;
    retry
        .run_hinted(
            |_| {
                let request = request.clone();
                async move { parse(&client.send(request).await?) }
            },
            Error::is_transient,
            Error::retry_after,
        )
        .await
}

pub use error::{Error, GoogleApiError};
pub use fid::{fid_from_bytes, generate_fid, is_valid_fid};
pub use installations::{
    ANDROID_SDK_VERSION, DEFAULT_FIREBASE_CLIENT, FirebaseApp, Installation, Persona,
    WEB_SDK_VERSION, create_installation, create_installation_request, delete_installation,
    delete_installation_request, firebase_client_header, parse_auth_token_response,
    parse_create_installation_response, parse_delete_installation_response, parse_google_duration,
    refresh_auth_token, refresh_auth_token_request,
};
pub use registrations::{
    FcmRegistration, WebPushSubscription, create_registration, create_registration_request,
    delete_registration, delete_registration_request, fcm_send_endpoint,
    parse_create_registration_response, parse_delete_registration_response,
};
pub use secret::{AuthToken, FcmToken, RefreshToken};

//! The error type of this crate and Google's JSON error body.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

/// Everything that can go wrong with Firebase Installations or FCM registrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Transport (connect, TLS, timeout), an HTTP error status without a Google error
    /// body, a malformed success body ([`fcm_http::Error::Decode`]), or a request that
    /// cannot be built.
    #[error(transparent)]
    Http(#[from] fcm_http::Error),
    /// Google answered its JSON error, `{"error": {"code", "message", "status"}}`.
    #[error("Google API error (HTTP {status}): {} {}: {}", error.code, error.status, error.message)]
    Api {
        /// The HTTP status of the answer.
        status: StatusCode,
        /// The error Google described.
        error: GoogleApiError,
        /// How long Google asked to wait before trying again (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
}

impl Error {
    /// Whether retrying may succeed: transient transport failures ([`fcm_http::Error::is_transient`])
    /// and API errors with HTTP 5xx or 429. The default retry predicate of this crate's
    /// async functions.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http(e) => e.is_transient(),
            Error::Api { status, .. } => fcm_http::is_transient_status(*status),
        }
    }

    /// The HTTP status of an error answer, if the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Http(e) => e.status_code(),
            Error::Api { status, .. } => Some(*status),
        }
    }

    /// How long the server asked to wait before the next attempt (its `Retry-After`
    /// header), for an error answer that carried one. The retries of this crate's async
    /// functions honour it (see [`fcm_http::RetryPolicy::run_hinted`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http(e) => e.retry_after(),
            Error::Api { retry_after, .. } => *retry_after,
        }
    }

    /// Google's error description, for an [`Api`](Error::Api) error.
    pub fn api_error(&self) -> Option<&GoogleApiError> {
        match self {
            Error::Api { error, .. } => Some(error),
            Error::Http(_) => None,
        }
    }

    /// Whether the credentials were refused (HTTP 401, or `UNAUTHENTICATED`): for an
    /// FCM registration call, refresh the FIS auth token and try again.
    pub fn is_unauthenticated(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED)
            || self
                .api_error()
                .is_some_and(|e| e.status == "UNAUTHENTICATED")
    }
}

/// Google's JSON error: `{"error": {"code": 400, "message": "…", "status": "INVALID_ARGUMENT"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleApiError {
    /// The HTTP-like code (e.g. 400, 403, 429).
    #[serde(default)]
    pub code: i64,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// The canonical status (e.g. `INVALID_ARGUMENT`, `PERMISSION_DENIED`).
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GoogleApiError,
}

/// The error for a non-2xx answer: [`Error::Api`] when the body is Google's JSON error,
/// else [`fcm_http::Error::Status`].
pub(crate) fn error_response(response: &Response<Bytes>) -> Error {
    match serde_json::from_slice::<ErrorEnvelope>(response.body()) {
        Ok(envelope) => Error::Api {
            status: response.status(),
            error: envelope.error,
            retry_after: fcm_http::retry_after(response.headers(), SystemTime::now()),
        },
        Err(_) => fcm_http::Error::status(response).into(),
    }
}

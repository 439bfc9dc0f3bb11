//! The error type of this crate and the `Error=` codes of register3.

use std::fmt;

use http::StatusCode;

/// Everything that can go wrong in a check-in or a register3 call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Transport (connect, TLS, timeout), an HTTP status with no more specific meaning, or
    /// an undecodable body (e.g. a check-in answer that is not an
    /// `AndroidCheckinResponse`, or lacks its ids).
    #[error(transparent)]
    Http(#[from] fcm_http::Error),
    /// A re-check-in with stored credentials was refused (HTTP 4xx): the credentials are
    /// dead and the device must check in anew and register again.
    #[error("the check-in server refused the stored credentials (HTTP {status}): register again")]
    DeadCredentials {
        /// The refusing status (typically 400 or 401).
        status: StatusCode,
        /// The start of the body.
        body_excerpt: String,
    },
    /// register3 answered `Error=<code>` (usually with HTTP 200).
    #[error("register3 refused the request: Error={code} (HTTP {status})")]
    Register3 {
        /// The error code.
        code: Register3Code,
        /// The HTTP status it came with.
        status: StatusCode,
        /// How long the answer's `Retry-After` asked to wait, if it carried one
        /// (docs/protocol.md §7.1: a value without `:` is seconds).
        retry_after: Option<std::time::Duration>,
    },
    /// register3 answered an HTML page (as during Google's 2024 migration, with 404).
    #[error("register3 answered an HTML page (HTTP {status}): {body_excerpt:?}")]
    HtmlPage {
        /// The HTTP status of the page.
        status: StatusCode,
        /// The start of the page.
        body_excerpt: String,
    },
    /// register3 answered `token=` with nothing after it.
    #[error("register3 answered an empty token")]
    EmptyToken,
    /// A delete (unregister or unsubscribe) was answered with no known shape: neither
    /// `deleted=<app>` nor `token=<app>` (docs/protocol.md §7.1).
    #[error(
        "register3 answered a delete with an unexpected body (HTTP {status}): {body_excerpt:?}"
    )]
    UnexpectedDeleteResponse {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body.
        body_excerpt: String,
    },
    /// register3 answered a success status with a body of no known shape.
    #[error("register3 answered an unexpected body (HTTP {status}): {body_excerpt:?}")]
    UnexpectedResponse {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the body.
        body_excerpt: String,
    },
}

impl Error {
    /// Whether retrying the same request may succeed, the default retry predicate of
    /// [`check_in`](crate::check_in) and [`register`](crate::register):
    /// transient transport failures, HTTP 5xx and 429, HTML pages served with a 5xx
    /// status, and the transient register3 codes (see [`Register3Code::is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http(e) => e.is_transient(),
            Error::Register3 { code, .. } => code.is_transient(),
            Error::HtmlPage { status, .. } => fcm_http::is_transient_status(*status),
            Error::DeadCredentials { .. }
            | Error::EmptyToken
            | Error::UnexpectedResponse { .. }
            | Error::UnexpectedDeleteResponse { .. } => false,
        }
    }

    /// How long the server asked to wait before the next attempt (its `Retry-After`
    /// header), for an HTTP error status or an `Error=<code>` answer that carried one.
    /// [`check_in`](crate::check_in) and [`register`](crate::register) honour it between
    /// their retries.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Http(e) => e.retry_after(),
            Error::Register3 { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether register3 said the instance id is invalid (`Error=RST`, docs/protocol.md
    /// §7.1): retrying cannot help, the device needs a new identity.
    pub fn is_instance_id_reset(&self) -> bool {
        matches!(
            self,
            Error::Register3 {
                code: Register3Code::InstanceIdReset,
                ..
            }
        )
    }

    /// The register3 code, for a [`Register3`](Error::Register3) error.
    pub fn register3_code(&self) -> Option<&Register3Code> {
        match self {
            Error::Register3 { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the stored check-in credentials were refused (see
    /// [`DeadCredentials`](Error::DeadCredentials)).
    pub fn is_dead_credentials(&self) -> bool {
        matches!(self, Error::DeadCredentials { .. })
    }
}

/// The codes register3 sends as `Error=<CODE>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Register3Code {
    /// `PHONE_REGISTRATION_ERROR`: often transient; identical retries succeed.
    PhoneRegistrationError,
    /// `AUTHENTICATION_FAILED`: the `AidLogin` credentials were refused.
    AuthenticationFailed,
    /// `INVALID_SENDER`: the sender id / VAPID key is not accepted.
    InvalidSender,
    /// `INVALID_PARAMETERS`: a form field is missing or malformed.
    InvalidParameters,
    /// `InternalServerError`, also spelt `INTERNAL_SERVER_ERROR`: Google's side failed;
    /// transient. Shown as `InternalServerError`.
    InternalServerError,
    /// `SERVICE_NOT_AVAILABLE`: transient (docs/protocol.md §7.1).
    ServiceNotAvailable,
    /// `TOO_MANY_SUBSCRIBERS`: a topic's subscriber quota; retried with backoff
    /// (docs/protocol.md §7.1).
    TooManySubscribers,
    /// `RST`: the instance id is invalid (a duplicate, or wiped); the device must make a
    /// new identity (docs/protocol.md §7.1). Never retried.
    InstanceIdReset,
    /// `QUOTA_EXCEEDED`.
    QuotaExceeded,
    /// `TOO_MANY_REGISTRATIONS`.
    TooManyRegistrations,
    /// Any other code, verbatim.
    Other(String),
}

impl Register3Code {
    /// Parses a code as it appears after `Error=`.
    pub fn parse(code: &str) -> Self {
        match code {
            "PHONE_REGISTRATION_ERROR" => Self::PhoneRegistrationError,
            "AUTHENTICATION_FAILED" => Self::AuthenticationFailed,
            "INVALID_SENDER" => Self::InvalidSender,
            "INVALID_PARAMETERS" => Self::InvalidParameters,
            "InternalServerError" | "INTERNAL_SERVER_ERROR" => Self::InternalServerError,
            "SERVICE_NOT_AVAILABLE" => Self::ServiceNotAvailable,
            "TOO_MANY_SUBSCRIBERS" => Self::TooManySubscribers,
            "RST" => Self::InstanceIdReset,
            "QUOTA_EXCEEDED" => Self::QuotaExceeded,
            "TOO_MANY_REGISTRATIONS" => Self::TooManyRegistrations,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as register3 spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::PhoneRegistrationError => "PHONE_REGISTRATION_ERROR",
            Self::AuthenticationFailed => "AUTHENTICATION_FAILED",
            Self::InvalidSender => "INVALID_SENDER",
            Self::InvalidParameters => "INVALID_PARAMETERS",
            Self::InternalServerError => "InternalServerError",
            Self::ServiceNotAvailable => "SERVICE_NOT_AVAILABLE",
            Self::TooManySubscribers => "TOO_MANY_SUBSCRIBERS",
            Self::InstanceIdReset => "RST",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::TooManyRegistrations => "TOO_MANY_REGISTRATIONS",
            Self::Other(code) => code,
        }
    }

    /// Whether the code is known to be transient, so that the same request is retried
    /// with backoff: `PHONE_REGISTRATION_ERROR`, `InternalServerError`
    /// (`INTERNAL_SERVER_ERROR`), `SERVICE_NOT_AVAILABLE` and `TOO_MANY_SUBSCRIBERS`
    /// (docs/protocol.md §2.2, §7.1).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::PhoneRegistrationError
                | Self::InternalServerError
                | Self::ServiceNotAvailable
                | Self::TooManySubscribers
        )
    }
}

impl fmt::Display for Register3Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [
            "PHONE_REGISTRATION_ERROR",
            "AUTHENTICATION_FAILED",
            "INVALID_SENDER",
            "INVALID_PARAMETERS",
            "InternalServerError",
            "QUOTA_EXCEEDED",
            "TOO_MANY_REGISTRATIONS",
            "SERVICE_NOT_AVAILABLE",
            "TOO_MANY_SUBSCRIBERS",
            "RST",
            "SOMETHING_NEW",
        ] {
            assert_eq!(Register3Code::parse(code).as_str(), code);
        }
        assert_eq!(
            Register3Code::parse("SOMETHING_NEW"),
            Register3Code::Other("SOMETHING_NEW".into())
        );
        assert!(Register3Code::PhoneRegistrationError.is_transient());
        assert!(!Register3Code::AuthenticationFailed.is_transient());
        assert_eq!(
            Register3Code::parse("INTERNAL_SERVER_ERROR"),
            Register3Code::InternalServerError
        );
        assert!(Register3Code::TooManySubscribers.is_transient());
        assert!(Register3Code::ServiceNotAvailable.is_transient());
        assert!(!Register3Code::InstanceIdReset.is_transient());
    }
}

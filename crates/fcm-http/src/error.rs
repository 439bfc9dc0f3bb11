//! The one error type of this crate.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

/// A boxed error, as kept for the causes of transport failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How many bytes of a response body an error message quotes.
pub const EXCERPT_LEN: usize = 256;

/// Everything that can go wrong while talking HTTP to a Google endpoint.
///
/// [`HttpClient::send`](crate::HttpClient::send) only ever returns the transport
/// variants ([`Connect`](Error::Connect), [`Tls`](Error::Tls), [`Timeout`](Error::Timeout),
/// [`Transport`](Error::Transport), [`BodyTooLarge`](Error::BodyTooLarge),
/// [`InvalidRequest`](Error::InvalidRequest)): a response with any status is a success at
/// that level. The response parsers of the protocol crates build
/// [`Status`](Error::Status) and [`Decode`](Error::Decode).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is unusable (e.g. a root certificate that does not parse).
    #[error("invalid HTTP client configuration: {0}")]
    Config(String),
    /// The request cannot be sent as it is (bad URL, plain `http` with `https_only`, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No connection could be made (DNS, refused, unreachable).
    #[error("cannot connect to {host}: {source}")]
    Connect {
        /// The host that was dialled.
        host: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed, e.g. because the certificate is not trusted.
    #[error("TLS failure with {host}: {source}")]
    Tls {
        /// The host of the failed handshake.
        host: String,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// The whole exchange (connect, request, response body) did not finish in time.
    #[error("no complete answer from {host} within {after:?}")]
    Timeout {
        /// The host that was too slow.
        host: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection failed after it was established (reset, closed early, bad HTTP).
    #[error("HTTP transport failure with {host}: {source}")]
    Transport {
        /// The host of the failed exchange.
        host: String,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },
    /// The response body is larger than the configured limit.
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The server answered with a status the caller did not expect.
    #[error("HTTP status {status}: {body_excerpt:?}")]
    Status {
        /// The status of the response.
        status: StatusCode,
        /// The start of the response body, as lossy UTF-8 (see [`excerpt`]).
        body_excerpt: String,
    },
    /// The response body does not have the expected shape.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was being decoded (e.g. `"check-in response"`).
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

impl Error {
    /// A [`Status`](Error::Status) error for `response`, quoting the start of its body.
    pub fn status(response: &Response<Bytes>) -> Self {
        Error::Status {
            status: response.status(),
            body_excerpt: excerpt(response.body()),
        }
    }

    /// A [`Decode`](Error::Decode) error.
    pub fn decode(what: &'static str, message: impl Into<String>) -> Self {
        Error::Decode {
            what,
            message: message.into(),
        }
    }

    /// The HTTP status, for a [`Status`](Error::Status) error.
    pub fn status_code(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether this is a [`Timeout`](Error::Timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Whether an identical request may well succeed later: connection failures,
    /// timeouts, broken transports, HTTP 5xx and HTTP 429. TLS failures, bad requests,
    /// other statuses and undecodable bodies are not transient.
    ///
    /// This is a sensible default for [`RetryPolicy::run`](crate::RetryPolicy::run); the
    /// protocol crates refine it.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } | Error::Transport { .. } => true,
            Error::Status { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }
}

/// HTTP statuses worth retrying: 5xx and 429 (Too Many Requests).
pub fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// The start of a body for error messages: at most [`EXCERPT_LEN`] bytes, lossy UTF-8,
/// control characters replaced by spaces, trimmed.
pub fn excerpt(body: &[u8]) -> String {
    let cut = body.get(..EXCERPT_LEN).unwrap_or(body);
    let text: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = text.trim();
    if body.len() > EXCERPT_LEN {
        format!("{trimmed}…")
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_short_and_printable() {
        assert_eq!(excerpt(b"  Error=X\r\n"), "Error=X");
        let long = vec![b'a'; 1000];
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_LEN + 1);
        assert_eq!(excerpt(&[0xff, b'\n', b'x']), "\u{fffd} x");
    }

    #[test]
    fn transient_classification() {
        let status = |s: u16| Error::Status {
            status: StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
            body_excerpt: String::new(),
        };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(401).is_transient());
        assert!(!status(404).is_transient());
        assert!(!Error::decode("x", "y").is_transient());
        assert!(
            Error::Timeout {
                host: "h".into(),
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
    }
}

//! The one error type of this crate.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header::RETRY_AFTER};

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
        /// How long the server asked the client to wait before trying again (its
        /// `Retry-After` header, see [`retry_after`]), typically with 429 or 503.
        retry_after: Option<Duration>,
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
            retry_after: retry_after(response.headers(), SystemTime::now()),
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

    /// How long the server asked to wait before the next attempt, for a
    /// [`Status`](Error::Status) error whose response carried `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
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

/// The longest wait a `Retry-After` header is taken to ask for (one day): a larger value
/// is read as this one, so that a garbled header cannot overflow a deadline.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The wait a response's `Retry-After` header asks for (RFC 9110 §10.2.3): either
/// delay-seconds (`120`) or an HTTP date, counted from `now` (a date in the past means no
/// wait). `None` without the header, or when it is neither form; at most
/// [`MAX_RETRY_AFTER`].
///
/// ```
/// # use std::time::{Duration, SystemTime};
/// # use fcm_http::http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
/// let mut headers = HeaderMap::new();
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
/// let wait = fcm_http::retry_after(&headers, SystemTime::now());
/// assert_eq!(wait, Some(Duration::from_secs(120)));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only an overflow fails, and that is "very long".
        Duration::from_secs(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_RETRY_AFTER.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
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
            retry_after: None,
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

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, http::HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 GMT
        let wait = |value: &[u8]| retry_after(&headers(value), now);
        assert_eq!(wait(b"120"), Some(Duration::from_secs(120)));
        assert_eq!(wait(b" 0 "), Some(Duration::ZERO));
        assert_eq!(
            wait(b"Wed, 21 Oct 2015 07:29:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(wait(b"Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(wait(b"99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            wait(b"Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        for garbage in [&b""[..], b"-5", b"1.5", b"soon", b"\xff\xfe", b"12 s"] {
            assert_eq!(
                wait(garbage),
                None,
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn status_errors_carry_the_servers_wait() {
        let response = Response::builder()
            .status(503)
            .header(RETRY_AFTER, "7")
            .body(Bytes::from_static(b"busy"))
            .unwrap();
        let error = Error::status(&response);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(error.is_transient());
        let plain = Response::builder().status(503).body(Bytes::new()).unwrap();
        assert_eq!(Error::status(&plain).retry_after(), None);
        assert_eq!(Error::decode("x", "y").retry_after(), None);
    }
}

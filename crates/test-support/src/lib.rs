#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// A test helper reports a broken expectation the way a test does: by panicking, with a
// message saying what was expected.
#![allow(clippy::expect_used, clippy::panic)]

#[cfg(feature = "pullkin")]
pub mod devices;
#[cfg(feature = "emulator")]
pub mod emulator;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::time::Duration;

/// The wiremock crate the fakes are built with, for tests whose crate does not depend on
/// it themselves (e.g. the command line's, which drive its binary against a fake).
pub use wiremock;

use fcm_http::url::form_urlencoded;
use fcm_http::{Client, Endpoints, RetryPolicy};
use tokio::io::{AsyncRead, AsyncReadExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The timeout of [`client`]: the fakes answer at once, and a test of a slow server
/// delays its answer well beyond this.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(500);

/// The HTTP client of the tests: [`CLIENT_TIMEOUT`], plain `http://` allowed (the fakes
/// speak it), the default roots.
///
/// # Panics
///
/// If the client cannot be built (it can, with these settings).
pub fn client() -> Client {
    client_with_timeout(CLIENT_TIMEOUT)
}

/// [`client`] with another timeout.
///
/// # Panics
///
/// If the client cannot be built.
pub fn client_with_timeout(timeout: Duration) -> Client {
    Client::builder()
        .timeout(timeout)
        .build()
        .expect("a test HTTP client")
}

/// A retry policy that keeps tests fast: `attempts` attempts in all, 1 ms before the
/// first retry, at most 5 ms between two (jitter as by default).
pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
}

/// Every endpoint (check-in, register3, installations, registrations, send) at `server`.
///
/// # Panics
///
/// If the server's URI is not a base URL (a wiremock URI always is).
pub fn endpoints(server: &MockServer) -> Endpoints {
    Endpoints::at(&server.uri()).expect("the fake's URI is a base URL")
}

/// Mounts on `server` a mock answering `verb route` (`"POST"`, `"/checkin"`) with
/// `template`, expecting exactly `calls` such requests (checked when `server` drops).
pub async fn mount(
    server: &MockServer,
    verb: &str,
    route: &str,
    template: ResponseTemplate,
    calls: u64,
) {
    Mock::given(method(verb))
        .and(path(route))
        .respond_with(template)
        .expect(calls)
        .mount(server)
        .await;
}

/// A new server whose one route, `verb route`, answers `template` and expects exactly
/// `calls` requests (checked when the server drops); other requests get a 404.
pub async fn server_answering(
    verb: &str,
    route: &str,
    template: ResponseTemplate,
    calls: u64,
) -> MockServer {
    let server = MockServer::start().await;
    mount(&server, verb, route, template, calls).await;
    server
}

/// A new server whose route `verb route` answers the first `failures` requests with
/// `failure` and the next one with `success`, expecting exactly `failures + 1` requests
/// (checked when the server drops): a retrying caller succeeds on attempt
/// `failures + 1`.
pub async fn failing_then_answering(
    verb: &str,
    route: &str,
    failure: ResponseTemplate,
    failures: u64,
    success: ResponseTemplate,
) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb))
        .and(path(route))
        .respond_with(failure)
        .up_to_n_times(failures)
        .with_priority(1)
        .expect(failures)
        .mount(&server)
        .await;
    mount(&server, verb, route, success, 1).await;
    server
}

/// A request a fake received, in owned parts that are easy to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The method, e.g. `"POST"`.
    pub method: String,
    /// The path, e.g. `"/c2dm/register3"`.
    pub path: String,
    /// The headers in the order received, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Sent {
    /// The value of the first header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as form fields (`application/x-www-form-urlencoded`), in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

impl From<&wiremock::Request> for Sent {
    /// # Panics
    ///
    /// If a header value is not visible ASCII (the crates under test send none such).
    fn from(request: &wiremock::Request) -> Self {
        Self {
            method: request.method.as_str().to_owned(),
            path: request.url.path().to_owned(),
            headers: request
                .headers
                .iter()
                .map(|(k, v)| {
                    let value = v.to_str().expect("a visible-ASCII header value");
                    (k.as_str().to_owned(), value.to_owned())
                })
                .collect(),
            body: request.body.clone(),
        }
    }
}

/// Every request `server` received, oldest first.
///
/// # Panics
///
/// If the server does not record requests (wiremock's do by default).
pub async fn received(server: &MockServer) -> Vec<Sent> {
    server
        .received_requests()
        .await
        .expect("the fake records requests")
        .iter()
        .map(Sent::from)
        .collect()
}

/// The last request `server` received.
///
/// # Panics
///
/// If it received none.
pub async fn last_request(server: &MockServer) -> Sent {
    received(server)
        .await
        .pop()
        .expect("the fake received a request")
}

/// Reads from `stream` until the end of an HTTP request head (an empty line) has been
/// read, and returns all that was read, or `None` if the stream ends or fails first.
/// For hand-made servers (a TLS endpoint, a proxy) that answer once the head is in.
pub async fn read_request_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_head_is_read_up_to_its_empty_line() {
        let mut whole: &[u8] = b"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n";
        let head = read_request_head(&mut whole).await;
        assert_eq!(
            head.as_deref(),
            Some(&b"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n"[..])
        );
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n";
        assert_eq!(read_request_head(&mut cut).await, None);
    }

    #[test]
    fn sent_parses_its_body_and_finds_headers_in_any_case() {
        let sent = Sent {
            method: "POST".into(),
            path: "/x".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"a=1&b=two%20words".to_vec(),
        };
        assert_eq!(sent.header("Content-Type"), Some("text/plain"));
        assert_eq!(sent.header("accept"), None);
        assert_eq!(
            sent.form(),
            [("a".into(), "1".into()), ("b".into(), "two words".into())]
        );
        let json = Sent {
            body: br#"{"k":[1]}"#.to_vec(),
            ..sent
        };
        assert_eq!(json.json()["k"][0], 1);
    }

    #[test]
    fn fast_retry_is_fast() {
        let policy = fast_retry(4);
        assert_eq!(policy.max_attempts(), 4);
        assert_eq!(policy.max_delay(), Duration::from_millis(5));
        assert_eq!(policy.base_delay(1), Duration::from_millis(1));
    }
}

//! [`WebhookSink`]: each message POSTed as JSON to an HTTPS endpoint, taken once it
//! answers 2xx.
//!
//! Guarantee: a message is acknowledged to FCM only once the endpoint answered 2xx for
//! it (or a 4xx rejecting it for good, which `Pullkin::forward` reports and parks), and
//! until then it is POSTed again, always with the same `Idempotency-Key:
//! <app>:<persistent_id>` by which the receiver drops repeats.
//!
//! Order: up to `window` requests overlap, so with a window above 1 the receiver may see
//! one app's messages out of order; `window = 1` keeps each app's order.
//!
//! Signature: with a secret, `X-Pullkin-Signature: sha256=<hex of HMAC-SHA256(secret,
//! body)>` over the exact body bytes.
//!
//! The details are on [`WebhookSink`] (this module is private).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use fcm_http::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT,
};
use fcm_http::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use fcm_http::{Client, HttpClient, Secret};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use pullkin::{Outcome, Sink, SinkError, SinkFuture, SinkMessage};
use sha2::Sha256;
use tokio::sync::Semaphore;
use url::Url;

use crate::Error;

/// The default [`WebhookConfig::signature_header`].
const DEFAULT_SIGNATURE_HEADER: &str = "X-Pullkin-Signature";

/// The header carrying [`SinkMessage::key`].
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Settings of a [`WebhookSink`].
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// The HMAC-SHA256 key of the body signature; `None` (the default): unsigned.
    pub secret: Option<Secret<String>>,
    /// The header of the signature (default `X-Pullkin-Signature`), valued
    /// `sha256=<hex>`.
    pub signature_header: String,
    /// At most this many requests in flight at once, over all apps (default 16; at
    /// least 1). 1 keeps each app's messages in order.
    pub window: usize,
    /// The timeout of each request, from connecting to the end of the answer (default
    /// 10 s).
    pub timeout: Duration,
    /// PEM bundles whose certificates are trusted as roots, e.g. a private CA.
    pub root_certificates_pem: Vec<Vec<u8>>,
    /// Whether the Mozilla roots (`webpki-roots`) are trusted too (default `true`).
    pub webpki_roots: bool,
    /// Extra headers of every request (e.g. `Authorization`). The sink's own headers
    /// (`Content-Type`, `Idempotency-Key`, the signature, framing) cannot be set here.
    pub headers: Vec<(String, String)>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            secret: None,
            signature_header: DEFAULT_SIGNATURE_HEADER.to_owned(),
            window: 16,
            timeout: Duration::from_secs(10),
            root_certificates_pem: Vec::new(),
            webpki_roots: true,
            headers: Vec::new(),
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: names only.
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("WebhookConfig")
            .field("secret", &self.secret)
            .field("signature_header", &self.signature_header)
            .field("window", &self.window)
            .field("timeout", &self.timeout)
            .field("root_certificates_pem", &self.root_certificates_pem.len())
            .field("webpki_roots", &self.webpki_roots)
            .field("headers", &headers)
            .finish()
    }
}

/// Delivers messages by POSTing each to an HTTPS endpoint, over keep-alive connections
/// and rustls ([`fcm_http::Client`]).
///
/// **Guarantee**: a message is acknowledged to FCM only once the endpoint answered 2xx
/// for it (or a 4xx rejecting it for good, which `Pullkin::forward` reports and parks),
/// and until then it is POSTed again, always with the same `Idempotency-Key:
/// <app>:<persistent_id>` by which the receiver drops repeats.
///
/// ## Requests
///
/// One `POST` per message to the URL as given (query included), with
/// - the body [`SinkMessage::line`], one JSON object, and `Content-Type:
///   application/json`;
/// - `Idempotency-Key: <app>:<persistent_id>` ([`SinkMessage::key`]; absent for the rare
///   message without a persistent id, which the server never redelivers);
/// - with [`WebhookConfig::secret`] set, the signature header (default
///   `X-Pullkin-Signature`): `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`,
///   computed over the exact body bytes. The receiver recomputes it over the raw body
///   before parsing and compares in constant time. The signature covers the body only:
///   a replayed request is a repeat, dropped by its `Idempotency-Key`;
/// - [`WebhookConfig::headers`] (e.g. `Authorization`), and `Authorization: Basic …` when
///   the URL has credentials (`https://user:password@host/…`).
///
/// ## Answers
///
/// - 2xx: taken;
/// - 4xx other than 408 and 429: rejected for good ([`Outcome::Rejected`] with
///   `HTTP <status>: <start of the body>`): `Pullkin::forward` reports it, parks it and
///   acknowledges it. A receiver that is merely misconfigured (401, 403, 404) rejects
///   every message this way, so give `forward` a park;
/// - 5xx, 408, 429, other statuses, timeouts ([`WebhookConfig::timeout`]), connection
///   and TLS failures: the whole batch fails with [`SinkError::Unavailable`] (carrying the
///   answer's `Retry-After`) and comes again later — messages of it that were already
///   taken are POSTed again, with the same `Idempotency-Key`.
///
/// ## Order
///
/// Up to [`WebhookConfig::window`] requests are in flight at once (for the sink as a
/// whole, over all apps), so with a window above 1 the receiver may see one app's
/// messages out of order: the requests overlap. Set `window = 1` for strict per-app
/// order (once repeats are dropped).
///
/// ## URLs
///
/// `https://…`; plain `http://` only to `localhost` or a loopback address (a relay on
/// the same host), never across a network. Requests go through the proxy of
/// `HTTPS_PROXY`/`NO_PROXY` like pullkin's other HTTP traffic (loopback never does). The
/// sink's [`name`](Sink::name) — in events, logs and errors — is the URL without
/// credentials and query; keep secrets out of the path (a query parameter or a header
/// stays out of the logs).
pub struct WebhookSink {
    name: String,
    uri: Uri,
    client: Client,
    /// Every request's headers but the per-message ones.
    headers: HeaderMap,
    secret: Option<Secret<String>>,
    signature_header: HeaderName,
    window: usize,
    /// One permit per request in flight, shared by concurrent batches (several apps).
    permits: Arc<Semaphore>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("window", &self.window)
            .field("timeout", &self.client.timeout())
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A sink POSTing to `url` (`https://…`, or `http://` to a loopback host). Fails with
    /// [`Error::Config`] for an unusable URL or setting; it does not connect yet.
    pub fn new(url: &str, config: WebhookConfig) -> Result<Self, Error> {
        let parsed =
            Url::parse(url).map_err(|e| config_error(redact(url), format!("not a URL: {e}")))?;
        let name = display_name(&parsed);
        let fail = |reason: String| config_error(name.clone(), reason);

        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| fail("the URL has no host".into()))?;
        let https = match parsed.scheme() {
            "https" => true,
            "http" if is_loopback(host) => false,
            "http" => {
                return Err(fail(
                    "plain http is only allowed to localhost or a loopback address: use https"
                        .into(),
                ));
            }
            other => return Err(fail(format!("the scheme must be https, not {other:?}"))),
        };
        if config.window == 0 {
            return Err(fail("the window must be at least 1".into()));
        }
        if config.timeout.is_zero() {
            return Err(fail("the timeout must not be zero".into()));
        }

        let signature_header =
            HeaderName::from_bytes(config.signature_header.as_bytes()).map_err(|_| {
                fail(format!(
                    "the signature header {:?} is not a header name",
                    config.signature_header
                ))
            })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("pullkin-sink/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(basic) = basic_authorization(&parsed) {
            headers.insert(AUTHORIZATION, basic);
        }
        let reserved = [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            HOST,
            HeaderName::from_static(IDEMPOTENCY_KEY),
            signature_header.clone(),
        ];
        let mut replaced_user_agent = false;
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| fail(format!("{name:?} is not a header name")))?;
            if reserved.contains(&header) {
                return Err(fail(format!("the header {header} is set by the sink")));
            }
            if header == AUTHORIZATION && headers.contains_key(AUTHORIZATION) {
                return Err(fail(
                    "Authorization is given twice (in the URL or the headers)".into(),
                ));
            }
            // The value may be a credential: never quoted.
            let mut value = HeaderValue::from_str(value.trim())
                .map_err(|_| fail(format!("the value of the header {header} is not valid")))?;
            value.set_sensitive(true);
            if header == USER_AGENT && !replaced_user_agent {
                headers.remove(USER_AGENT);
                replaced_user_agent = true;
            }
            headers.append(header, value);
        }

        let mut request_url = parsed.clone();
        // Cannot fail for http(s) URLs, which have a host.
        let _ = request_url.set_username("");
        let _ = request_url.set_password(None);
        request_url.set_fragment(None);
        let uri: Uri = request_url
            .as_str()
            .parse()
            .map_err(|e| fail(format!("not a request URI: {e}")))?;

        let trusts_nothing = !config.webpki_roots && config.root_certificates_pem.is_empty();
        // Plain http to loopback uses no TLS; the client still wants a root to build.
        let mut builder = Client::builder()
            .webpki_roots(config.webpki_roots || (!https && trusts_nothing))
            .timeout(config.timeout)
            .https_only(https);
        for pem in &config.root_certificates_pem {
            builder = builder
                .add_root_certificates_pem(pem)
                .map_err(|e| fail(e.to_string()))?;
        }
        let client = builder.build().map_err(|e| fail(e.to_string()))?;

        Ok(Self {
            name,
            uri,
            client,
            headers,
            secret: config.secret,
            signature_header,
            window: config.window,
            permits: Arc::new(Semaphore::new(config.window)),
        })
    }

    /// POSTs one message; its outcome, or why the batch must come again.
    async fn post(&self, msg: &SinkMessage) -> Result<Outcome, SinkError> {
        let body = match serde_json::to_vec(&msg.line) {
            Ok(body) => Bytes::from(body),
            Err(e) => return Err(SinkError::unavailable(&self.name, e)),
        };
        let mut headers = self.headers.clone();
        if let Some(key) = &msg.key {
            match HeaderValue::from_str(key) {
                Ok(value) => {
                    headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY), value);
                }
                Err(_) => {
                    return Ok(Outcome::Rejected(format!(
                        "the idempotency key {key:?} cannot be a header value"
                    )));
                }
            }
        }
        if let Some(secret) = &self.secret {
            headers.insert(self.signature_header.clone(), sign(secret, &body));
        }
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;

        let answer = {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|e| SinkError::unavailable(&self.name, e))?;
            self.client.send(request).await
        };
        let response = answer.map_err(|e| SinkError::unavailable(&self.name, one_line(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome::Taken);
        }
        if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            let excerpt = fcm_http::excerpt(response.body());
            let reason = if excerpt.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {excerpt}")
            };
            tracing::debug!(sink = %self.name, key = ?msg.key, "rejected: {reason}");
            return Ok(Outcome::Rejected(reason));
        }
        Err(SinkError::Unavailable {
            sink: self.name.clone(),
            retry_after: fcm_http::retry_after(response.headers(), SystemTime::now()),
            source: Box::new(fcm_http::Error::status(&response)),
        })
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, batch: &'a [SinkMessage]) -> SinkFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            // `buffered` answers in the batch's order; the first failure ends the batch
            // (dropping the requests still in flight: the whole batch comes again).
            // Futures do nothing until polled: `buffered` starts at most `window` at once.
            // (Collected first: a closure in the stream's type trips the `Send` check.)
            let requests: Vec<SinkFuture<'a, Outcome>> = batch
                .iter()
                .map(|msg| -> SinkFuture<'a, Outcome> { Box::pin(self.post(msg)) })
                .collect();
            let mut answers = futures_util::stream::iter(requests).buffered(self.window);
            let mut outcomes = Vec::with_capacity(batch.len());
            while let Some(answer) = answers.next().await {
                outcomes.push(answer?);
            }
            Ok(outcomes)
        })
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
fn sign(secret: &Secret<String>, body: &[u8]) -> HeaderValue {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    let hex = hex::encode(mac.finalize().into_bytes());
    HeaderValue::from_str(&format!("sha256={hex}"))
        .unwrap_or_else(|_| unreachable!("hex is a valid header value"))
}

/// An error and its causes on one line (`cannot connect to host: client error
/// (Connect): tcp connect error: Connection refused`): the transport's own message
/// often hides the cause that tells what to fix.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace(['\r', '\n'], " ")
}

/// `Authorization: Basic …` from the URL's credentials, percent-decoded.
fn basic_authorization(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut pair = decode(url.username());
    pair.push(b':');
    pair.extend(decode(url.password().unwrap_or_default()));
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Whether plain http may go to `host`: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL without credentials, query and fragment.
fn display_name(url: &Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.set_fragment(None);
    clean.to_string()
}

/// A URL that did not parse, without what may be credentials (userinfo, query,
/// fragment) or control characters, and not too long: fit for an error message.
fn redact(raw: &str) -> String {
    let raw = raw.trim();
    let cut = raw.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match cut.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), cut),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let clean: String = format!("{scheme}{host}{path}")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect();
    if clean.is_empty() {
        "webhook".to_owned()
    } else {
        clean
    }
}

fn config_error(sink: String, reason: String) -> Error {
    Error::Config { sink, reason }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_leave_out_credentials_and_queries() {
        let url = Url::parse("https://user:pw@example.com:8443/hook?token=abc#x").unwrap();
        assert_eq!(display_name(&url), "https://example.com:8443/hook");
        assert_eq!(
            redact("https://user:pw@exa mple.com/hook?token=abc"),
            "https://exa mple.com/hook"
        );
        assert_eq!(redact("user:pw@host:99999/x?q"), "host:99999/x");
        assert_eq!(redact("?secret"), "webhook");
        assert_eq!(redact("https://h\n/x"), "https://h?/x");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]", "LocalHost"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "[::2]", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let value = sign(
            &Secret::new("Jefe".to_owned()),
            b"what do ya want for nothing?",
        );
        assert_eq!(
            value.to_str().unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn url_credentials_become_basic_authorization() {
        let url = Url::parse("https://us%40er:p%3Aw@example.com/").unwrap();
        let value = basic_authorization(&url).unwrap();
        // base64("us@er:p:w")
        assert_eq!(value.to_str().unwrap(), "Basic dXNAZXI6cDp3");
        assert!(basic_authorization(&Url::parse("https://example.com/").unwrap()).is_none());
    }
}

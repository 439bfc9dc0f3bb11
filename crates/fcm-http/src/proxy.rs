//! HTTP proxies: which one a connection takes ([`Proxy::select`]: the caller's setting,
//! else the standard environment variables read by [`ProxyEnv`]), and the `CONNECT`
//! tunnel through it ([`connect_through`]), for networks that reach Google only that
//! way. TLS runs end to end inside the tunnel, so the proxy sees host names and ports,
//! never the traffic.
//!
//! From hyper-util: [`HttpConnector`] reaches the proxy (happy eyeballs, connect timeout,
//! `TCP_NODELAY`), and its proxy [`Matcher`] reads the environment's proxy URLs and
//! `NO_PROXY` rules the way curl and reqwest do.
//!
//! Kept ours: the `CONNECT` exchange itself. hyper-util's `Tunnel` (feature
//! `client-proxy`) was run against the fake proxy answers of this crate's tests
//! (hyper-util 0.1.21):
//!
//! | proxy answer | `Tunnel` | [`connect_through`] |
//! | --- | --- | --- |
//! | `403 Forbidden` | `tunnel error: unsuccessful` | `ConnectionRefused`, "…refused the tunnel to …: HTTP/1.1 403 Forbidden" |
//! | `407 …` | `proxy authorization required` | `ConnectionRefused`, quoting the 407 status line |
//! | `SSH-2.0-OpenSSH` (not a proxy) | `tunnel error: unsuccessful` | `ConnectionRefused`, quoting the line |
//! | `200 OK` then `surprise` | `Ok`, the 8 bytes silently dropped | `InvalidData`, "sent data after its CONNECT answer" |
//! | no answer | still waiting after 3 s (no timeout of its own) | `TimedOut` at the given timeout |
//!
//! The status line is what tells a user behind a corporate proxy what went wrong, the
//! MCS connection needs the timeout and `io::Error` kinds, and one handshake serves both
//! the HTTP client and the MCS connection.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service as _;
use url::Url;

use crate::{BoxError, Error};

/// The longest answer head a proxy may send to a `CONNECT`.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// How long a connection attempt to one address of the proxy runs alone before the
/// next address is tried beside it (RFC 8305's recommendation).
const HAPPY_EYEBALLS: Duration = Duration::from_millis(250);

/// A proxy setting: an HTTP proxy, `http://[user:password@]host:port`, or
/// [`none`](Proxy::none) (connect directly, whatever the environment says).
///
/// Where a setting is an `Option<Proxy>` (e.g.
/// [`ClientBuilder::proxy`](crate::ClientBuilder::proxy)), `None` leaves the choice to
/// the environment: see [`Proxy::select`].
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `None` for [`Proxy::none`].
    target: Option<Target>,
}

#[derive(Clone, PartialEq, Eq)]
struct Target {
    /// `host:port` of the proxy.
    addr: String,
    /// The `Proxy-Authorization` header value (`Basic …`), from the URL's user and
    /// password.
    authorization: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials stay out of logs.
        match &self.target {
            None => f.write_str("Proxy::none()"),
            Some(target) => f
                .debug_struct("Proxy")
                .field("addr", &target.addr)
                .field("authorization", &target.authorization.as_ref().map(|_| "…"))
                .finish(),
        }
    }
}

impl Proxy {
    /// Reads a proxy URL: `http://host:port` (port 80 when left out), optionally with
    /// `user:password@` for Basic authentication (percent-encoded as in any URL).
    ///
    /// ```
    /// let proxy = fcm_http::Proxy::parse("http://proxy.example:3128").unwrap();
    /// assert_eq!(proxy.addr(), Some("proxy.example:3128"));
    /// assert!(fcm_http::Proxy::parse("socks5://proxy.example:1080").is_err());
    /// ```
    ///
    /// Errors never quote the URL: it may carry a password.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("proxy URL: {why}"));
        let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad("only http:// proxies (HTTP CONNECT) are supported"));
        }
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        let authorization = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| bad("the user or password is not valid UTF-8"))
            };
            let user = decode(parsed.username())?;
            let password = decode(parsed.password().unwrap_or(""))?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {token}"))
        };
        Ok(Self {
            target: Some(Target {
                addr: format!("{host}:{port}"),
                authorization,
            }),
        })
    }

    /// No proxy: connect directly, and ignore the proxy environment variables.
    ///
    /// ```
    /// let direct = fcm_http::Proxy::none();
    /// assert!(direct.is_none() && direct.addr().is_none());
    /// ```
    pub fn none() -> Self {
        Self { target: None }
    }

    /// Whether this is [`Proxy::none`].
    pub fn is_none(&self) -> bool {
        self.target.is_none()
    }

    /// `host:port` of the proxy; `None` for [`Proxy::none`].
    pub fn addr(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.addr.as_str())
    }

    /// The proxy of a connection to `uri` (`https://host[:port]`, or `http://…`), or
    /// `None` to connect directly:
    ///
    /// 1. the caller's setting, when there is one: `Some(proxy)` for every host, or
    ///    `Some(Proxy::none())` for none;
    /// 2. otherwise the environment's (see [`ProxyEnv`]), unless `NO_PROXY` lists the
    ///    host, or the host is loopback (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`:
    ///    a proxy elsewhere cannot reach it).
    ///
    /// Fails when the environment names a proxy of a kind this crate cannot use
    /// (`https://` or `socks5://`); it is not skipped silently, since going around a
    /// configured proxy may be what the network forbids.
    ///
    /// ```
    /// use fcm_http::{Proxy, ProxyEnv};
    /// let env = ProxyEnv::from_vars(|name| match name {
    ///     "HTTPS_PROXY" => Some("http://proxy.corp:3128".to_owned()),
    ///     "NO_PROXY" => Some(".internal".to_owned()),
    ///     _ => None,
    /// });
    /// let uri = |s: &str| s.parse::<http::Uri>().unwrap();
    /// let mcs = Proxy::select(None, &env, &uri("https://mtalk.google.com:5228")).unwrap();
    /// assert_eq!(mcs.unwrap().addr(), Some("proxy.corp:3128"));
    /// assert_eq!(Proxy::select(None, &env, &uri("https://fcm.internal")).unwrap(), None);
    /// let none = Proxy::none();
    /// assert_eq!(Proxy::select(Some(&none), &env, &uri("https://mtalk.google.com")).unwrap(), None);
    /// ```
    pub fn select(
        explicit: Option<&Proxy>,
        env: &ProxyEnv,
        uri: &Uri,
    ) -> Result<Option<Proxy>, Error> {
        match explicit {
            Some(proxy) if proxy.is_none() => Ok(None),
            Some(proxy) => Ok(Some(proxy.clone())),
            None => env.proxy_for(uri),
        }
    }

    fn target(&self) -> io::Result<&Target> {
        self.target.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "Proxy::none() names no proxy to tunnel through",
            )
        })
    }
}

/// The proxies that the standard environment variables name, read the way curl and
/// reqwest read them (through hyper-util's proxy [`Matcher`]):
///
/// - `HTTPS_PROXY` / `https_proxy`: the proxy of `https://` connections (and of the MCS
///   connection, TLS too); `HTTP_PROXY` / `http_proxy`: that of `http://` requests;
///   `ALL_PROXY` / `all_proxy`: either, when the other is not set. A URL without a scheme
///   is taken as `http://`; `user:password@` is sent as Basic authentication.
/// - `NO_PROXY` / `no_proxy`: comma-separated hosts that are reached directly: a name
///   matches itself and its subdomains (`google.com` and `.google.com` both match
///   `mtalk.google.com`), an IP address or network (`10.0.0.0/8`) the addresses in it,
///   and `*` every host.
///
/// The upper-case name wins over the lower-case one, and an empty value counts as not
/// set. In a CGI program (`REQUEST_METHOD` set) no proxy is taken from the environment:
/// a request's `Proxy:` header would reach it as `HTTP_PROXY` ("httpoxy").
///
/// [`ProxyEnv::from_env`] reads the process's environment; [`ProxyEnv::from_vars`] takes
/// the variables from anywhere (a test, a configuration file).
#[derive(Clone, Debug, Default)]
pub struct ProxyEnv {
    /// `None` when no variable names a proxy.
    matcher: Option<Arc<Matcher>>,
    /// `NO_PROXY` holds `*`: every host is reached directly.
    bypass_all: bool,
}

impl ProxyEnv {
    /// The proxy variables of this process's environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The proxy variables as `lookup` gives them (`lookup("HTTPS_PROXY")`, …), without
    /// reading the process's environment.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let first = |names: [&str; 2]| {
            names
                .into_iter()
                .filter_map(&lookup)
                .map(|value| value.trim().to_owned())
                .find(|value| !value.is_empty())
        };
        if lookup("REQUEST_METHOD").is_some() {
            return Self::empty();
        }
        let all = first(["ALL_PROXY", "all_proxy"]);
        let http = first(["HTTP_PROXY", "http_proxy"]);
        let https = first(["HTTPS_PROXY", "https_proxy"]);
        if all.is_none() && http.is_none() && https.is_none() {
            return Self::empty();
        }
        let no = first(["NO_PROXY", "no_proxy"]).unwrap_or_default();
        let bypass_all = no.split(',').any(|entry| entry.trim() == "*");
        let matcher = Matcher::builder()
            .all(all.unwrap_or_default())
            .http(http.unwrap_or_default())
            .https(https.unwrap_or_default())
            .no(no)
            .build();
        Self {
            matcher: Some(Arc::new(matcher)),
            bypass_all,
        }
    }

    /// No proxy variable set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The environment's proxy for `uri`, or `None` to connect directly (see
    /// [`Proxy::select`], which puts the caller's setting first).
    pub fn proxy_for(&self, uri: &Uri) -> Result<Option<Proxy>, Error> {
        let Some(matcher) = &self.matcher else {
            return Ok(None);
        };
        let host = uri.host().unwrap_or_default();
        if self.bypass_all || is_loopback(host) {
            return Ok(None);
        }
        let Some(intercept) = matcher.intercept(uri) else {
            return Ok(None);
        };
        // The matcher's URI carries no user or password: it may be quoted.
        let proxy = intercept.uri();
        let variables = match uri.scheme_str() {
            Some("http") => "HTTP_PROXY, http_proxy or ALL_PROXY",
            _ => "HTTPS_PROXY, https_proxy or ALL_PROXY",
        };
        if proxy.scheme_str() != Some("http") {
            return Err(Error::Config(format!(
                "the proxy environment variable ({variables}) names {proxy}: only http:// proxies \
                 (HTTP CONNECT) are supported; list the host in NO_PROXY, or set a proxy \
                 (or none) explicitly"
            )));
        }
        let host = proxy
            .host()
            .ok_or_else(|| Error::Config(format!("the proxy {proxy} has no host")))?;
        let authorization = intercept
            .basic_auth()
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(Some(Proxy {
            target: Some(Target {
                addr: format!("{host}:{}", proxy.port_u16().unwrap_or(80)),
                authorization,
            }),
        }))
    }
}

/// `localhost`, a name under `.localhost`, or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The connector that reaches proxies: hyper-util's, with happy eyeballs and no Nagle.
fn proxy_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_happy_eyeballs_timeout(Some(HAPPY_EYEBALLS));
    http.set_nodelay(true);
    http
}

/// Opens a TCP connection to `host:port` through `proxy` (`CONNECT`), within `timeout`
/// for the whole of it. The stream is ready for TLS with the target. With
/// [`Proxy::none`], fails with [`io::ErrorKind::InvalidInput`].
pub async fn connect_through(
    proxy: &Proxy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    tunnel(
        proxy_connector(timeout),
        proxy.target()?,
        host,
        port,
        timeout,
    )
    .await
}

/// [`connect_through`] with this connector to reach the proxy.
async fn tunnel(
    mut http: HttpConnector,
    proxy: &Target,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let tunnel = async {
        let cannot = |e: &(dyn std::error::Error + 'static)| {
            let kind = io_kind(e).unwrap_or(io::ErrorKind::Other);
            let cause = e.source().map(|c| format!(": {c}")).unwrap_or_default();
            io::Error::new(
                kind,
                format!("cannot connect to the proxy {}: {e}{cause}", proxy.addr),
            )
        };
        let proxy_uri: Uri = format!("http://{}/", proxy.addr)
            .parse()
            .map_err(|e| cannot(&e))?;
        let mut stream = http
            .call(proxy_uri)
            .await
            .map_err(|e| cannot(&e))?
            .into_inner();
        // An IPv6 literal goes in brackets.
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &proxy.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(authorization);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        read_connect_answer(&mut stream, &proxy.addr, &target).await?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, tunnel).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no tunnel through the proxy {} within {timeout:?}",
                proxy.addr
            ),
        )
    })?
}

/// The kind of the first `io::Error` among an error's causes.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// Reads the proxy's answer head; anything but a 2xx status is an error naming it.
async fn read_connect_answer(stream: &mut TcpStream, proxy: &str, target: &str) -> io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0_u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the proxy {proxy} closed the connection before answering CONNECT"),
            ));
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > MAX_ANSWER_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the proxy {proxy} answered CONNECT with more than {MAX_ANSWER_HEAD} bytes of head"
                ),
            ));
        }
    }
    let status_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/1.") && (200..300).contains(&code) => {
            // The target speaks only after the client's TLS hello: nothing may follow the
            // head of an answer that opens the tunnel (a refusal may carry a page).
            let end = head.windows(4).position(|w| w == b"\r\n\r\n");
            if end.is_some_and(|end| end + 4 != head.len()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the proxy {proxy} sent data after its CONNECT answer"),
                ));
            }
            Ok(())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "the proxy {proxy} refused the tunnel to {target}: {}",
                status_line.trim_end()
            ),
        )),
    }
}

/// How the HTTP client reaches a host: per connection, directly with hyper-util's
/// connector, or through the proxy [`Proxy::select`] picks for the host.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    pub(crate) http: HttpConnector,
    pub(crate) proxy: Option<Arc<Proxy>>,
    pub(crate) env: ProxyEnv,
    pub(crate) connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let proxy = match Proxy::select(self.proxy.as_deref(), &self.env, &uri) {
            Ok(Some(proxy)) => proxy,
            Ok(None) => {
                let connecting = self.http.call(uri);
                return Box::pin(async move { connecting.await.map_err(Into::into) });
            }
            Err(error) => return Box::pin(std::future::ready(Err(error.into()))),
        };
        let (http, timeout) = (self.http.clone(), self.connect_timeout);
        let from_env = self.proxy.is_none();
        Box::pin(async move {
            let target = proxy.target()?;
            // A tunnel to port 80 is refused by most proxies, and a local fake's address
            // would be resolved by the proxy: plain HTTP is not proxied.
            if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
                let hint = if from_env {
                    " (named by HTTP_PROXY or ALL_PROXY; list the host in NO_PROXY to reach it directly)"
                } else {
                    ""
                };
                return Err(format!(
                    "plain http:// requests do not go through the proxy {}{hint}: use https://",
                    target.addr
                )
                .into());
            }
            let host = uri.host().ok_or("the URL has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let stream = tunnel(http, target, host, port, timeout).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn authorization(proxy: &Proxy) -> Option<&str> {
        proxy.target.as_ref()?.authorization.as_deref()
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://proxy.example:3128").unwrap();
        assert_eq!(p.addr(), Some("proxy.example:3128"));
        assert_eq!(authorization(&p), None);
        assert_eq!(
            Proxy::parse("http://proxy.example").unwrap().addr(),
            Some("proxy.example:80")
        );
        assert_eq!(
            Proxy::parse("http://[::1]:8080/").unwrap().addr(),
            Some("[::1]:8080")
        );
        let p = Proxy::parse("http://al%40ice:s%3Acret@10.0.0.1:3128").unwrap();
        // base64("al@ice:s:cret")
        assert_eq!(authorization(&p), Some("Basic YWxAaWNlOnM6Y3JldA=="));
        assert!(!format!("{p:?}").contains("YWx"), "{p:?}");
        // A `%` that starts no escape stays as it is: base64("a b%zz:x").
        let p = Proxy::parse("http://a%20b%zz:x@10.0.0.1:3128").unwrap();
        assert_eq!(authorization(&p), Some("Basic YSBiJXp6Ong="));
        for bad in [
            "https://proxy.example:443",
            "socks5://proxy.example:1080",
            "proxy.example:3128",
            "http://proxy.example:3128/path",
            "http://",
            "",
        ] {
            assert!(
                matches!(Proxy::parse(bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        // Errors never quote the URL, which may carry a password.
        for bad in [
            "https://u:hunter2@proxy.example",
            "http://u:hunter2@proxy.example:3128/x",
            "http://u:hunter2@proxy.example:99999",
            "http://u:%ff%fehunter2@proxy.example:3128",
        ] {
            let message = Proxy::parse(bad).unwrap_err().to_string();
            assert!(!message.contains("hunter2"), "{message}");
        }
        assert!(Proxy::none().is_none() && Proxy::none().addr().is_none());
        assert_eq!(format!("{:?}", Proxy::none()), "Proxy::none()");
    }

    /// An environment of these variables only.
    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyEnv::from_vars(move |name| vars.get(name).cloned())
    }

    /// The `host:port` of the proxy chosen for `uri` (`None`: direct).
    fn chosen(explicit: Option<&Proxy>, env: &ProxyEnv, uri: &str) -> Option<String> {
        let uri: Uri = uri.parse().unwrap();
        Proxy::select(explicit, env, &uri)
            .unwrap()
            .map(|p| p.addr().unwrap().to_owned())
    }

    #[test]
    fn the_environment_names_a_proxy_per_scheme() {
        let mcs = "https://mtalk.google.com:5228";
        assert_eq!(chosen(None, &ProxyEnv::empty(), mcs), None);
        assert_eq!(chosen(None, &env(&[]), mcs), None);
        let e = env(&[("HTTPS_PROXY", "http://secure:3128")]);
        assert_eq!(chosen(None, &e, mcs).as_deref(), Some("secure:3128"));
        assert_eq!(chosen(None, &e, "http://plain.example/"), None);
        // Lower case, a URL without a scheme (http), a default port.
        let e = env(&[("https_proxy", "lower.example")]);
        assert_eq!(chosen(None, &e, mcs).as_deref(), Some("lower.example:80"));
        // Upper case first; an empty value is not set.
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
        ]);
        assert_eq!(chosen(None, &e, mcs).as_deref(), Some("upper:1"));
        let e = env(&[("HTTPS_PROXY", " "), ("https_proxy", "http://lower:2")]);
        assert_eq!(chosen(None, &e, mcs).as_deref(), Some("lower:2"));
        // HTTP_PROXY is for http:// only; ALL_PROXY for whichever is not set.
        let e = env(&[
            ("HTTP_PROXY", "http://plain:8080"),
            ("ALL_PROXY", "http://all:1"),
        ]);
        assert_eq!(chosen(None, &e, mcs).as_deref(), Some("all:1"));
        assert_eq!(
            chosen(None, &e, "http://fake.example/").as_deref(),
            Some("plain:8080")
        );
        // A user and password become Basic authentication, kept out of Debug.
        let e = env(&[("HTTPS_PROXY", "http://al%40ice:s%3Acret@proxy:3128")]);
        let proxy = Proxy::select(None, &e, &mcs.parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(authorization(&proxy), Some("Basic YWxAaWNlOnM6Y3JldA=="));
        assert!(!format!("{e:?} {proxy:?}").contains("cret"), "{e:?}");
        // httpoxy: a CGI program takes no proxy from the environment.
        let e = env(&[("HTTPS_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(chosen(None, &e, mcs), None);
    }

    #[test]
    fn no_proxy_and_loopback_go_direct() {
        let with_no = |no: &str| env(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", no)]);
        let proxied =
            |e: &ProxyEnv, host: &str| chosen(None, e, &format!("https://{host}:5228/")).is_some();
        let e = with_no("google.com, .example.org,10.0.0.0/8, 192.168.1.7");
        for host in [
            "google.com",
            "mtalk.google.com",
            "MTALK.Google.COM",
            "example.org",
            "a.b.example.org",
            "10.1.2.3",
            "192.168.1.7",
        ] {
            assert!(!proxied(&e, host), "{host} is in NO_PROXY");
        }
        for host in [
            "notgoogle.com",
            "google.com.evil",
            "11.0.0.1",
            "192.168.1.8",
        ] {
            assert!(proxied(&e, host), "{host} is not in NO_PROXY");
        }
        // `*` is every host, names and addresses alike; lower case is read too.
        let e = with_no("*");
        for host in ["mtalk.google.com", "203.0.113.9", "[2001:db8::1]"] {
            assert!(!proxied(&e, host), "{host}");
        }
        let e = env(&[("HTTPS_PROXY", "http://p:3128"), ("no_proxy", "google.com")]);
        assert!(!proxied(&e, "mtalk.google.com"));
        // Loopback is never sent to a proxy from the environment.
        let e = with_no("");
        for host in [
            "localhost",
            "emulator.localhost",
            "127.0.0.1",
            "127.3.4.5",
            "[::1]",
        ] {
            assert!(!proxied(&e, host), "{host}");
        }
        assert!(proxied(&e, "[2001:db8::1]"));
    }

    #[test]
    fn the_explicit_setting_comes_first() {
        let e = env(&[("HTTPS_PROXY", "http://from-env:1"), ("NO_PROXY", "*")]);
        let explicit = Proxy::parse("http://explicit:2").unwrap();
        let mcs = "https://mtalk.google.com:5228";
        // An explicit proxy takes every host, NO_PROXY and loopback included.
        assert_eq!(
            chosen(Some(&explicit), &e, mcs).as_deref(),
            Some("explicit:2")
        );
        assert_eq!(
            chosen(Some(&explicit), &e, "https://127.0.0.1:4443/").as_deref(),
            Some("explicit:2")
        );
        // Proxy::none() turns the environment off.
        let e = env(&[("HTTPS_PROXY", "http://from-env:1")]);
        assert_eq!(chosen(Some(&Proxy::none()), &e, mcs), None);
        assert_eq!(chosen(None, &e, mcs).as_deref(), Some("from-env:1"));
    }

    #[test]
    fn an_unusable_proxy_in_the_environment_is_an_error_not_a_bypass() {
        let mcs: Uri = "https://mtalk.google.com:5228".parse().unwrap();
        for value in [
            "socks5://u:hunter2@socks:1080",
            "https://u:hunter2@tls-proxy:443",
        ] {
            let e = env(&[("ALL_PROXY", value)]);
            let error = Proxy::select(None, &e, &mcs).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{error:?}");
            assert!(message.contains("only http://"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
            // Still fine where it does not apply.
            let local: Uri = "https://127.0.0.1:1/".parse().unwrap();
            assert_eq!(Proxy::select(None, &e, &local).unwrap(), None);
        }
    }

    #[tokio::test]
    async fn no_tunnel_through_proxy_none_and_a_clear_error_for_an_unreachable_proxy() {
        let error = connect_through(
            &Proxy::none(),
            "mtalk.google.com",
            5228,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let proxy = Proxy::parse(&format!("http://{addr}")).unwrap();
        let error = connect_through(&proxy, "mtalk.google.com", 5228, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("cannot connect to the proxy {addr}")),
            "{message}"
        );
    }
}

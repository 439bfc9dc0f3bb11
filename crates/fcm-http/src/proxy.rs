//! Tunnels through an HTTP proxy (`CONNECT host:port`), for networks that reach Google
//! only that way: the HTTP client uses it for every request, and the MCS connection can
//! use [`connect_through`] too. TLS runs end to end inside the tunnel, so the proxy sees
//! host names and ports, never the traffic.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use crate::{BoxError, Error};

/// The longest answer head a proxy may send to a `CONNECT`.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// An HTTP proxy: `http://[user:password@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `host:port` of the proxy.
    addr: String,
    /// The `Proxy-Authorization` header value (`Basic …`), from the URL's user and
    /// password.
    authorization: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials stay out of logs.
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Proxy {
    /// Reads a proxy URL: `http://host:port` (port 80 when left out), optionally with
    /// `user:password@` for Basic authentication (percent-encoded as in any URL).
    ///
    /// ```
    /// let proxy = fcm_http::Proxy::parse("http://proxy.example:3128").unwrap();
    /// assert_eq!(proxy.addr(), "proxy.example:3128");
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
                percent_decode(s).ok_or_else(|| bad("the user or password is not valid UTF-8"))
            };
            let user = decode(parsed.username())?;
            let password = decode(parsed.password().unwrap_or(""))?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {token}"))
        };
        Ok(Self {
            addr: format!("{host}:{port}"),
            authorization,
        })
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// `%XX` sequences decoded; `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Opens a TCP connection to `host:port` through `proxy` (`CONNECT`), within `timeout`
/// for the whole of it. The stream is ready for TLS with the target.
pub async fn connect_through(
    proxy: &Proxy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let tunnel = async {
        let mut stream = TcpStream::connect(proxy.addr.as_str()).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot connect to the proxy {}: {e}", proxy.addr),
            )
        })?;
        let _ = stream.set_nodelay(true);
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

/// How the HTTP client reaches a host: directly, or through a proxy.
#[derive(Clone, Debug)]
pub(crate) enum Dialer {
    Direct(HttpConnector),
    Proxy {
        proxy: Arc<Proxy>,
        connect_timeout: Duration,
    },
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Dialer::Direct(http) => http.poll_ready(cx).map_err(Into::into),
            Dialer::Proxy { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            Dialer::Direct(http) => {
                let connecting = http.call(uri);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Dialer::Proxy {
                proxy,
                connect_timeout,
            } => {
                let (proxy, timeout) = (Arc::clone(proxy), *connect_timeout);
                Box::pin(async move {
                    // A tunnel to port 80 is refused by most proxies, and a local fake's
                    // address would be resolved by the proxy: plain HTTP is not proxied.
                    if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
                        return Err(format!(
                            "plain http:// requests do not go through the proxy {}: use https://",
                            proxy.addr
                        )
                        .into());
                    }
                    let host = uri.host().ok_or("the URL has no host")?;
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let port = uri.port_u16().unwrap_or(443);
                    let stream = connect_through(&proxy, host, port, timeout).await?;
                    Ok(TokioIo::new(stream))
                })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://proxy.example:3128").unwrap();
        assert_eq!(p.addr(), "proxy.example:3128");
        assert_eq!(p.authorization, None);
        assert_eq!(
            Proxy::parse("http://proxy.example").unwrap().addr(),
            "proxy.example:80"
        );
        assert_eq!(
            Proxy::parse("http://[::1]:8080/").unwrap().addr(),
            "[::1]:8080"
        );
        let p = Proxy::parse("http://al%40ice:s%3Acret@10.0.0.1:3128").unwrap();
        // base64("al@ice:s:cret")
        assert_eq!(
            p.authorization.as_deref(),
            Some("Basic YWxAaWNlOnM6Y3JldA==")
        );
        assert!(!format!("{p:?}").contains("YWx"), "{p:?}");
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
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%zz%4").as_deref(), Some("a b%zz%4"));
        assert_eq!(percent_decode("%ff"), None);
    }
}

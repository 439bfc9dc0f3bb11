//! Reaching the MCS server: resolve, dial (RFC 8305 alternation, or an HTTP proxy's
//! `CONNECT` tunnel), TCP options, TLS, and the framed connection the driver reads.
//!
//! The only module of the crate that opens sockets. It may use `mcs-codec` (for the
//! framing) and `fcm-http` (for the choice of proxy and the tunnel); nothing here knows
//! the session.
//!
//! The proxy of a connection is [`fcm_http::Proxy::select`]'s: the configured one
//! ([`ListenerConfig::proxy`](crate::ListenerConfig::proxy)), else the environment's for
//! `https://<mcs host>` (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read once per process).
//! Through a proxy, fcm-http reaches the proxy with hyper-util's `HttpConnector`;
//! directly, [`dial`] stays ours rather than hyper-util's (its module doc has the
//! measurement: 250 ms instead of half the connect timeout behind a black-holed address).
//!
//! The MCS server has several endpoints, as Chromium's connection factory has
//! (docs/protocol.md §7.2): `mtalk.google.com:5228`, then `mtalk.google.com:443` for
//! networks that only let port 443 out. An attempt tries them in turn, each within the
//! connect timeout, starting with the one that last worked for the listener (a network
//! that blocks 5228 blocks it for every app): [`EndpointOrder`].

mod dial;
mod tls;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use fcm_http::{Proxy, ProxyEnv};
use mcs_codec::McsCodec;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tracing::{debug, info};

use crate::error::ConnectionError;
use tls::TlsStream;

/// A logged-out MCS connection: TLS over TCP, framed by the MCS codec.
pub(crate) type McsConnection = Framed<TlsStream, McsCodec>;

/// The read buffer of an idle connection, in bytes.
pub(crate) const IDLE_BUFFER: usize = 256;

/// One endpoint of the MCS server.
#[derive(Clone, Debug)]
pub(crate) struct McsEndpoint {
    /// `host:port`.
    pub addr: String,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
}

/// The order in which an attempt tries the endpoints: from the one that last worked, in
/// the configured order, wrapping around (docs/protocol.md §7.2). Shared by the apps of a
/// listener; only the choice of where to start is kept, as a number.
#[derive(Debug, Default)]
pub(crate) struct EndpointOrder {
    last_good: AtomicUsize,
}

impl EndpointOrder {
    /// The indexes of `count` endpoints in the order to try them.
    pub(crate) fn order(&self, count: usize) -> impl Iterator<Item = usize> {
        let start = match count {
            0 => 0,
            _ => self.last_good.load(Ordering::Relaxed) % count,
        };
        (0..count).map(move |i| (start + i) % count)
    }

    /// The endpoint `index` made a connection: start with it from now on.
    pub(crate) fn worked(&self, index: usize) {
        self.last_good.store(index, Ordering::Relaxed);
    }
}

/// What the driver needs to reach the MCS server.
pub(crate) struct McsTarget {
    /// The endpoints, in the configured order; never empty (the listener's build checks).
    pub endpoints: Vec<McsEndpoint>,
    /// Where the next attempt starts.
    pub order: EndpointOrder,
    /// Shared by every connection.
    pub tls: Arc<ClientConfig>,
    /// Limit on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Permits for handshakes in progress, shared by every app of a listener.
    pub handshakes: Arc<tokio::sync::Semaphore>,
    /// The proxy setting; `None` leaves the choice to the environment.
    pub proxy: Option<Proxy>,
}

/// Opens a connection to the MCS server: to each endpoint in turn ([`EndpointOrder`]),
/// each within the connect timeout, until one answers. The error, when none does, is the
/// last endpoint's.
pub(crate) async fn connect(target: &McsTarget) -> Result<McsConnection, ConnectionError> {
    let mut last = None;
    for index in target.order.order(target.endpoints.len()) {
        let Some(endpoint) = target.endpoints.get(index) else {
            continue;
        };
        match connect_to(target, endpoint).await {
            Ok(connection) => {
                target.order.worked(index);
                return Ok(connection);
            }
            Err(error) => {
                if target.endpoints.len() > 1 {
                    info!("MCS endpoint {} failed: {error}", endpoint.addr);
                }
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectionError::Address {
        addr: String::new(),
        reason: "is missing: no endpoint is configured",
    }))
}

/// Opens a connection to one endpoint, within the connect timeout for the whole of it.
async fn connect_to(
    target: &McsTarget,
    endpoint: &McsEndpoint,
) -> Result<McsConnection, ConnectionError> {
    let addr = || endpoint.addr.clone();
    let connect = async {
        // Closed only when the listener is dropped, and then nobody waits for this.
        let _permit = target.handshakes.acquire().await.ok();
        let tcp = match select_proxy(target, &endpoint.addr)? {
            Some(proxy) => {
                let (host, port) = split_host_port(&endpoint.addr)?;
                fcm_http::connect_through(&proxy, host, port, target.connect_timeout)
                    .await
                    .map_err(|e| ConnectionError::Connect {
                        addr: addr(),
                        source: Arc::new(e),
                    })?
            }
            None => {
                let addrs: Vec<_> = tokio::net::lookup_host(endpoint.addr.as_str())
                    .await
                    .map_err(|e| ConnectionError::Resolve {
                        addr: addr(),
                        source: Arc::new(e),
                    })?
                    .collect();
                dial::connect_first(&addrs, dial::ATTEMPT_DELAY, TcpStream::connect)
                    .await
                    .map_err(|e| ConnectionError::Connect {
                        addr: addr(),
                        source: Arc::new(e),
                    })?
            }
        };
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            debug!("cannot set TCP keepalive: {e}");
        }
        let tls = TlsStream::connect(Arc::clone(&target.tls), endpoint.server_name.clone(), tcp)
            .await
            .map_err(|e| ConnectionError::Tls {
                addr: addr(),
                source: Arc::new(e),
            })?;
        // Start with small buffers: they grow with bursts, and an idle connection
        // should cost little (thousands of them may be held at once).
        let mut framed = Framed::with_capacity(tls, McsCodec::client(), IDLE_BUFFER);
        *framed.write_buffer_mut() = BytesMut::new();
        Ok(framed)
    };
    tokio::time::timeout(target.connect_timeout, connect)
        .await
        .map_err(|_| ConnectionError::Timeout {
            addr: addr(),
            after: target.connect_timeout,
        })?
}

/// The proxies of the process's environment, read at the first connection.
fn env_proxies() -> &'static ProxyEnv {
    static ENV: OnceLock<ProxyEnv> = OnceLock::new();
    ENV.get_or_init(ProxyEnv::from_env)
}

/// The proxy to tunnel through to `addr`, or `None` to dial directly.
fn select_proxy(target: &McsTarget, addr: &str) -> Result<Option<Proxy>, ConnectionError> {
    select_proxy_with(target.proxy.as_ref(), addr, || env_proxies())
}

/// [`select_proxy`] with the environment from `env` (tests pass their own).
fn select_proxy_with<'a>(
    explicit: Option<&Proxy>,
    addr: &str,
    env: impl FnOnce() -> &'a ProxyEnv,
) -> Result<Option<Proxy>, ConnectionError> {
    if let Some(proxy) = explicit {
        return Ok((!proxy.is_none()).then(|| proxy.clone()));
    }
    // An address that is no URI authority is the dialler's to report.
    let Ok(uri) = fcm_http::http::Uri::try_from(format!("https://{addr}/")) else {
        return Ok(None);
    };
    Proxy::select(None, env(), &uri).map_err(|e| ConnectionError::Connect {
        addr: addr.to_owned(),
        source: Arc::new(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
    })
}

/// `host` and `port` of `host:port` (`[v6]:port` too).
pub(crate) fn split_host_port(addr: &str) -> Result<(&str, u16), ConnectionError> {
    let bad = |reason| ConnectionError::Address {
        addr: addr.to_owned(),
        reason,
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port = port.parse().map_err(|_| bad("has no valid port"))?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6,
        None if host.contains(':') => return Err(bad("needs its IPv6 host in brackets")),
        None => host,
    };
    Ok((host, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{EndpointOrder, select_proxy_with, split_host_port};

    #[test]
    fn endpoints_are_tried_in_turn_from_the_one_that_last_worked() {
        let order = EndpointOrder::default();
        let all = |n| order.order(n).collect::<Vec<_>>();
        assert_eq!(all(2), [0, 1], "the configured order at first");
        assert_eq!(all(0), Vec::<usize>::new());
        order.worked(1);
        assert_eq!(all(2), [1, 0], "443 first once it worked");
        assert_eq!(all(3), [1, 2, 0]);
        order.worked(0);
        assert_eq!(all(2), [0, 1], "back to the first when it works again");
        // An index beyond a shorter list wraps.
        order.worked(5);
        assert_eq!(all(2), [1, 0]);
        assert_eq!(all(1), [0]);
    }
    use fcm_http::{Proxy, ProxyEnv};

    #[test]
    fn the_mcs_connection_takes_the_setting_else_the_environment_for_its_host() {
        let env = ProxyEnv::from_vars(|name| match name {
            "HTTPS_PROXY" => Some("http://corp-proxy:3128".to_owned()),
            "NO_PROXY" => Some("internal.example".to_owned()),
            _ => None,
        });
        let chosen = |explicit: Option<&Proxy>, addr: &str| {
            select_proxy_with(explicit, addr, || &env)
                .unwrap()
                .map(|p| p.addr().unwrap().to_owned())
        };
        let mcs = "mtalk.google.com:5228";
        assert_eq!(chosen(None, mcs).as_deref(), Some("corp-proxy:3128"));
        assert_eq!(chosen(None, "mcs.internal.example:5228"), None);
        assert_eq!(chosen(None, "localhost:5228"), None);
        assert_eq!(chosen(None, "[::1]:5228"), None);
        let explicit = Proxy::parse("http://explicit:8080").unwrap();
        assert_eq!(
            chosen(Some(&explicit), mcs).as_deref(),
            Some("explicit:8080")
        );
        assert_eq!(chosen(Some(&Proxy::none()), mcs), None);
        // The environment is not read when a proxy is set.
        let unread = select_proxy_with(Some(&Proxy::none()), mcs, || unreachable!());
        assert!(unread.unwrap().is_none());
        // A proxy of another kind in the environment is a connect error naming it.
        let socks = ProxyEnv::from_vars(|name| {
            (name == "ALL_PROXY").then(|| "socks5://socks:1080".to_owned())
        });
        let error = select_proxy_with(None, mcs, || &socks).unwrap_err();
        assert!(error.to_string().contains("only http://"), "{error}");
    }

    #[test]
    fn mcs_addresses_split_into_host_and_port() {
        assert_eq!(
            split_host_port("mtalk.google.com:5228").unwrap(),
            ("mtalk.google.com", 5228)
        );
        assert_eq!(split_host_port("[::1]:5228").unwrap(), ("::1", 5228));
        assert_eq!(
            split_host_port("127.0.0.1:443").unwrap(),
            ("127.0.0.1", 443)
        );
        for bad in [
            "mtalk.google.com",
            "host:port",
            "host:70000",
            "::1:5228",
            "",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad:?}");
        }
    }
}

//! [`ListenerConfig`]: the settings of a listener, as public fields (set them on
//! [`ListenerConfig::default`]).

use std::time::Duration;

use fcm_http::RetryPolicy;
use rustls::pki_types::ServerName;

use super::resume;
use crate::PullkinError;
use crate::net::McsEndpoint;
use crate::session::SessionConfig;

/// The endpoints of Google's MCS server, in the order Chromium tries them
/// (docs/protocol.md §7.2): port 5228, then port 443 for networks that only let 443 out.
pub const GOOGLE_MCS_ENDPOINTS: [&str; 2] = ["mtalk.google.com:5228", "mtalk.google.com:443"];

/// Settings of the listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// The MCS server's endpoints, `host:port` each, tried in turn until one answers,
    /// starting with the one that last worked (default [`GOOGLE_MCS_ENDPOINTS`],
    /// docs/protocol.md §7.2). At least one.
    pub mcs_endpoints: Vec<String>,
    /// The name the server's certificate must carry (default: the host of each endpoint).
    pub mcs_server_name: Option<String>,
    /// Limit on TCP connect plus TLS handshake, per endpoint tried (default 20 s).
    pub connect_timeout: Duration,
    /// Send a ping after this long without a frame (default 60 s).
    pub heartbeat_interval: Duration,
    /// A connection is dead when nothing arrives this long after a ping (default 30 s).
    pub heartbeat_timeout: Duration,
    /// Ask the server to ping this often (default 60 s; `None` to not ask).
    pub server_heartbeat: Option<Duration>,
    /// The client version string of the login (default `chrome-63.0.3234.0`).
    pub client_id: String,
    /// Acknowledge taken messages at the latest this long after the first of them
    /// (default 1 s); every 10 messages an acknowledgement goes out at once.
    pub ack_delay: Duration,
    /// Store writes of the acknowledgement state are grouped: at most one per this
    /// interval per app (default 20 ms). Messages keep flowing meanwhile; their
    /// acknowledgements wait for the write that records them.
    pub store_interval: Duration,
    /// Backoff between attempts (its attempt count is not used: see `max_failures`). When
    /// a check-in before connecting was answered with `Retry-After`, the next attempt
    /// waits that long, up to the policy's longest delay.
    pub reconnect: RetryPolicy,
    /// A listener with a [`PullkinCore`](crate::PullkinCore) checks each device in before
    /// every connection attempt and again this often while connected, without dropping
    /// the connection (default 2 days, Chromium's `kDefaultCheckinInterval`,
    /// docs/protocol.md §7.2; `None`: only before connecting). The renewal refreshes the
    /// Firebase auth token when it is due, and a new identity (the old one refused) is
    /// logged in with at once. A failed re-check-in is tried again a minute later (or
    /// after this interval, when shorter); the connection stays. When a check-in's answer
    /// sets an interval (its `checkin_interval` setting, docs/protocol.md §2.1), that one
    /// is used until the next check-in instead of this one (at least 12 hours, as in
    /// Chromium); `None` here keeps re-check-ins off whatever the server sets.
    pub checkin_interval: Option<Duration>,
    /// Stop after this many failures in a row; `None` (the default) never gives up.
    pub max_failures: Option<u32>,
    /// The reset window (default 10 s, Chromium's, docs/protocol.md §7.2): a login starts
    /// the failure count over, but a connection reset sooner than this after its login
    /// restores the backoff of before, so that a server which accepts and at once closes
    /// meets a growing backoff rather than a tight loop.
    pub stable_after: Duration,
    /// An acknowledged id the server never confirmed is forgotten after this long
    /// (default 7 days, docs/protocol.md §7.3).
    pub id_expiry: Duration,
    /// A LoginRequest carries at most this many unconfirmed ids; the oldest beyond it are
    /// forgotten first (default 1 000, docs/protocol.md §7.3).
    pub max_login_ids: usize,
    /// Messages decoded ahead of the application, per app (default 256).
    pub queue_capacity: usize,
    /// How many connections may be in their TCP + TLS handshake at once, across all
    /// apps (default 16): thousands of apps starting together neither storm the server
    /// nor hold thousands of handshakes' worth of memory at the same time (the memory of
    /// the handshakes in flight is freed, but what the allocator keeps of it after the
    /// start follows this number: 2 000 idle apps held 15.3–15.6 KiB each at 16, 15.9–16.4
    /// at 32). Each attempt takes a few round trips, so at a 50 ms round trip 2 000 apps
    /// are connected in about half a minute at 16; raise it where start-up time matters
    /// more than memory. A listener
    /// with a [`PullkinCore`](crate::PullkinCore) runs as many credential renewals
    /// (check-ins) at once, at most: the HTTPS client then opens, and keeps pooled, that
    /// many connections rather than one per app.
    pub concurrent_handshakes: usize,
    /// Compare the wall clock with the monotonic clock this often (default 2 s, one timer
    /// per listener, not per connection) to notice that the system was suspended: the
    /// heartbeat timers stand still while it sleeps, so after a resume every connection is
    /// [probed](crate::Pullkin::probe) at once instead of after its heartbeat interval. At least
    /// 0.5 s; `None` turns this off.
    pub resume_check: Option<Duration>,
    /// How to reach the MCS server:
    ///
    /// - `Some(proxy)`: through this HTTP proxy ([`fcm_http::Proxy::parse`]; a `CONNECT`
    ///   tunnel, TLS stays end to end);
    /// - `Some(Proxy::none())` ([`fcm_http::Proxy::none`]): directly, whatever the
    ///   environment says;
    /// - `None` (the default): a listener built with
    ///   [`PullkinBuilder::core`](crate::PullkinBuilder::core) takes the core's setting;
    ///   without one (or when that is `None` too), the standard variables choose for
    ///   the host of each of the [`mcs_endpoints`](Self::mcs_endpoints), as for an
    ///   `https://` URL:
    ///   `HTTPS_PROXY` / `https_proxy`, else `ALL_PROXY` / `all_proxy`, unless
    ///   `NO_PROXY` / `no_proxy` lists the host (a name matches its subdomains too,
    ///   `.google.com` or `google.com` matches `mtalk.google.com`; `*` matches every
    ///   host). Loopback hosts are always reached directly then. They are read once per
    ///   process, at the first connection; see [`fcm_http::ProxyEnv`].
    ///
    /// A `socks5://` or `https://` proxy in those variables is refused (each attempt
    /// fails with [`ConnectionError::Connect`](crate::ConnectionError::Connect)) rather
    /// than silently gone around.
    pub proxy: Option<fcm_http::Proxy>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            mcs_endpoints: GOOGLE_MCS_ENDPOINTS.map(str::to_owned).to_vec(),
            mcs_server_name: None,
            connect_timeout: Duration::from_secs(20),
            heartbeat_interval: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(30),
            server_heartbeat: Some(Duration::from_secs(60)),
            client_id: "chrome-63.0.3234.0".to_owned(),
            ack_delay: Duration::from_secs(1),
            store_interval: Duration::from_millis(20),
            reconnect: RetryPolicy::default()
                .with_initial_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(300)),
            checkin_interval: Some(Duration::from_secs(2 * 24 * 60 * 60)),
            max_failures: None,
            stable_after: Duration::from_secs(10),
            id_expiry: SessionConfig::new(0, 0).id_expiry,
            max_login_ids: SessionConfig::new(0, 0).max_login_ids,
            queue_capacity: 256,
            concurrent_handshakes: 16,
            resume_check: Some(resume::CHECK_EVERY),
            proxy: None,
        }
    }
}

impl ListenerConfig {
    /// The MCS endpoints with the name each one's certificate must carry; at least one.
    pub(crate) fn endpoints(&self) -> Result<Vec<McsEndpoint>, PullkinError> {
        if self.mcs_endpoints.is_empty() {
            return Err(PullkinError::Config(
                "no MCS endpoint is configured (mcs_endpoints is empty)".to_owned(),
            ));
        }
        self.mcs_endpoints
            .iter()
            .map(|addr| {
                Ok(McsEndpoint {
                    addr: addr.clone(),
                    server_name: self.server_name(addr)?,
                })
            })
            .collect()
    }

    /// The name the certificate of the MCS endpoint `addr` must carry.
    fn server_name(&self, addr: &str) -> Result<ServerName<'static>, PullkinError> {
        let host = match &self.mcs_server_name {
            Some(name) => name.clone(),
            None => {
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }
        };
        ServerName::try_from(host.clone())
            .map_err(|_| PullkinError::Config(format!("{host:?} is not a valid server name")))
    }

    /// The session settings of an app with this device identity.
    pub(crate) fn session_config(&self, android_id: u64, security_token: u64) -> SessionConfig {
        let mut config = SessionConfig::new(android_id, security_token);
        config.client_id.clone_from(&self.client_id);
        config.heartbeat_interval = self.heartbeat_interval;
        config.heartbeat_timeout = self.heartbeat_timeout;
        config.server_heartbeat = self.server_heartbeat;
        config.ack_delay = self.ack_delay;
        config.store_interval = self.store_interval;
        config.id_expiry = self.id_expiry;
        config.max_login_ids = self.max_login_ids;
        config
    }
}

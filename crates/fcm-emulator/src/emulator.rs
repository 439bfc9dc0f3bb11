//! The public facade: the [`Emulator`] handle, its builder and the library API.
//!
//! The top of the crate's arrows: it starts the servers (`http`, `mcs`) and works on
//! their shared state (`shared`, `state`) through the same paths they use (`delivery`,
//! `tls`, `types`, `error`); no other module uses it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gcm_checkin::CHROME_VAPID_KEY;
use mcs_codec::proto::{DataMessageStanza, LoginRequest};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use url::Url;

use crate::accept::Bound;
use crate::delivery::{self, WebPushEncoding};
use crate::error::Error;
use crate::shared::{Audience, Config, Shared};
use crate::state::{Action, WEB_APP};
use crate::topics::{is_valid_topic_name, parse_condition};
use crate::types::{
    DeviceCredentials, DeviceInfo, Endpoint, Fault, FcmRegistration, GcmRegistration, HttpFailure,
    IidCommand, Installation, LoginRecord, Overlap, SendMessage, Sent, Target,
};
use crate::{http, mcs, tls};

/// Configures and starts an [`Emulator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EmulatorBuilder {
    http_addr: SocketAddr,
    mcs_addr: SocketAddr,
    names: Vec<String>,
    config: Config,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        let localhost = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            http_addr: localhost,
            mcs_addr: localhost,
            names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            config: Config::default(),
        }
    }
}

impl EmulatorBuilder {
    /// Where the HTTPS server listens (default `127.0.0.1:0`, an ephemeral port).
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.http_addr = addr;
        self
    }

    /// Where the MCS server listens (default `127.0.0.1:0`, an ephemeral port).
    pub fn mcs_addr(mut self, addr: SocketAddr) -> Self {
        self.mcs_addr = addr;
        self
    }

    /// Adds a DNS name or IP address to the server certificate (it always covers
    /// `localhost` and `127.0.0.1`).
    pub fn subject_alt_name(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// The most messages queued per device (default 10,000); beyond it the oldest are
    /// dropped and counted in [`DeviceInfo::dropped_messages`].
    pub fn max_queued_messages(mut self, max: usize) -> Self {
        self.config.max_queued_messages = max;
        self
    }

    /// How long a new MCS connection may take to send its LoginRequest (default 10 s).
    pub fn login_timeout(mut self, timeout: Duration) -> Self {
        self.config.login_timeout = timeout;
        self
    }

    /// Makes the server announce this heartbeat interval in every LoginResponse
    /// (`heartbeat_config.interval_ms`) and send its own HeartbeatPing after each such
    /// idle period. Off by default: the server then pings only on demand.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = Some(interval);
        self
    }

    /// Whether *any* client frame's `last_stream_id_received` acknowledges the data
    /// messages sent up to that stream id (Chromium's reading), instead of only StreamAck
    /// IQs (default `false`).
    pub fn ack_on_any_frame(mut self, enabled: bool) -> Self {
        self.config.ack_on_any_frame = enabled;
        self
    }

    /// Requires this `x-goog-api-key` on the Firebase endpoints (by default any non-empty
    /// key is accepted).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// The largest MCS frame accepted from clients (default
    /// [`mcs_codec::DEFAULT_MAX_FRAME_LENGTH`]).
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.config.max_frame_length = max;
        self
    }

    /// What a second successful login for a device that already has a logged-in MCS
    /// connection does to the older one.
    ///
    /// By default (`true`) the newer login takes over and the server closes the older
    /// connection, without a frame, as soon as its task wakes: one connection per device,
    /// the usual account of Google's MCS (a receiver started twice with the same
    /// credentials sees its older instance cut off). The two still count as logged in together until the older
    /// socket is closed, which [`Emulator::overlap`] measures (normally well under a
    /// millisecond).
    ///
    /// With `false` the older connections stay open until their clients leave (or
    /// [`Emulator::disconnect`]): they answer heartbeats and take global faults, but
    /// messages, pings and per-device faults go to the newest one only; if that one ends
    /// first, the newest remaining connection takes over and gets every unacknowledged
    /// message. This models a fleet takeover in which the old worker lets go on its own,
    /// so a test can measure how long both held the device.
    pub fn close_superseded_connections(mut self, close: bool) -> Self {
        self.config.close_superseded = close;
        self
    }

    /// Whether the Web Push endpoint (`POST /fcm/send/<token>`) takes pushes without a
    /// VAPID `Authorization` (default `false`: like Google, it answers them 401).
    ///
    /// A push that does carry one is checked either way (docs/protocol.md §7.5): an
    /// ES256 JWT with `aud` the endpoint's origin and `exp` in the next 24 hours, signed
    /// by the subscription's application server key when it was made with one; else 403.
    /// [`crate::VapidKey`] signs them. The library's [`Emulator::send_webpush`] needs no
    /// signature.
    pub fn accept_unsigned_webpush(mut self, accept: bool) -> Self {
        self.config.accept_unsigned_webpush = accept;
        self
    }

    /// Generates the certificates, binds both listeners and starts serving. Must be
    /// called inside a tokio runtime.
    pub async fn start(self) -> Result<Emulator, Error> {
        let certs = tls::generate(&self.names)?;
        let http_tls = tls::server_config(&certs, &[b"http/1.1"])?;
        let mcs_tls = tls::server_config(&certs, &[])?;
        let client_tls = tls::client_config(&certs.ca_der)?;

        let http_listener = TcpListener::bind(self.http_addr).await?;
        let mcs_listener = TcpListener::bind(self.mcs_addr).await?;
        let http_addr = reachable(http_listener.local_addr()?);
        let mcs_addr = reachable(mcs_listener.local_addr()?);
        let base_url = Url::parse(&format!("https://{http_addr}"))
            .map_err(|e| Error::InvalidInput(format!("base URL: {e}")))?;

        let shared = Arc::new(Shared::new(self.config, base_url.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let bound = |listener, tls| Bound {
            listener,
            tls,
            shutdown: shutdown_rx.clone(),
            done: done_tx.clone(),
        };
        tokio::spawn(http::serve(
            bound(http_listener, http_tls),
            Arc::clone(&shared),
        ));
        tokio::spawn(mcs::serve(
            bound(mcs_listener, mcs_tls),
            Arc::clone(&shared),
        ));
        tracing::info!(%base_url, %mcs_addr, "fcm-emulator started");
        Ok(Emulator {
            shared,
            http_addr,
            mcs_addr,
            base_url,
            ca_pem: certs.ca_pem,
            ca_der: certs.ca_der,
            client_tls,
            shutdown_tx,
            done_rx: tokio::sync::Mutex::new(Some(done_rx)),
        })
    }
}

/// An address clients can connect to: an unspecified bind address becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// A running emulator: Google's check-in, register3, Firebase Installations, FCM
/// registrations and send APIs over HTTPS, and the MCS push server over TLS.
///
/// Dropping it stops the servers (without waiting); [`Emulator::shutdown`] stops them
/// gracefully, sending `Close` to every MCS client first.
pub struct Emulator {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    mcs_addr: SocketAddr,
    base_url: Url,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    client_tls: Arc<rustls::ClientConfig>,
    shutdown_tx: watch::Sender<bool>,
    done_rx: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url.as_str())
            .field("mcs_addr", &self.mcs_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}

fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url
}

/// Addresses and certificates.
impl Emulator {
    /// A builder for an emulator with non-default settings.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// Starts an emulator with the defaults: both servers on 127.0.0.1, ephemeral ports.
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start().await
    }

    /// The HTTPS base URL, `https://127.0.0.1:<port>`: every HTTP API lives under it with
    /// Google's paths (so `fcm_http::Endpoints::at(base_url)` points a client at it).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The HTTPS server's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The check-in URL, `<base>/checkin`.
    pub fn checkin_url(&self) -> Url {
        join(&self.base_url, "/checkin")
    }

    /// The register3 URL, `<base>/c2dm/register3`.
    pub fn register3_url(&self) -> Url {
        join(&self.base_url, "/c2dm/register3")
    }

    /// The Firebase Installations base, `<base>/v1` (`/projects/<p>/installations` follows).
    pub fn installations_base(&self) -> Url {
        join(&self.base_url, "/v1")
    }

    /// The FCM registrations base, `<base>/v1` (`/projects/<p>/registrations` follows).
    pub fn fcm_registrations_base(&self) -> Url {
        join(&self.base_url, "/v1")
    }

    /// The send API base, `<base>/v1` (`/projects/<p>/messages:send` follows).
    pub fn send_api_base(&self) -> Url {
        join(&self.base_url, "/v1")
    }

    /// The Web Push endpoint base, `<base>/fcm/send` (`/<gcm token>` follows).
    pub fn webpush_endpoint_base(&self) -> Url {
        join(&self.base_url, "/fcm/send")
    }

    /// The Web Push endpoint of one GCM token, `<base>/fcm/send/<token>`.
    pub fn webpush_endpoint(&self, gcm_token: &str) -> Url {
        let mut url = self.webpush_endpoint_base();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(gcm_token);
        }
        url
    }

    /// The MCS server's address (TLS; the certificate names `localhost` and `127.0.0.1`).
    pub fn mcs_addr(&self) -> SocketAddr {
        self.mcs_addr
    }

    /// The CA certificate (PEM) that signed the servers' certificate: clients add it as
    /// a root.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate (DER).
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A rustls client configuration (ring provider) trusting only the emulator's CA, for
    /// tests that talk to it directly.
    pub fn client_tls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.client_tls)
    }

    /// Stops both servers: every MCS connection gets a `Close` frame, HTTP connections
    /// finish their current request. Waits (at most 5 s) until every task has ended.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.shared.lock().shut_down = true;
        self.shutdown_tx.send_replace(true);
        let Some(mut done) = self.done_rx.lock().await.take() else {
            return;
        };
        let wait = async { while done.recv().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            tracing::warn!("fcm-emulator: some tasks did not end within 5 s of shutdown");
        }
        tracing::info!("fcm-emulator stopped");
    }
}

/// State: creating and inspecting devices and registrations.
impl Emulator {
    /// Creates a device as a first check-in would.
    pub fn create_device(&self) -> DeviceCredentials {
        self.shared.lock().new_device()
    }

    /// Makes a GCM registration for a device, as register3 would: `app`
    /// `org.chromium.linux` with a `wp:` subtype makes it web persona.
    pub fn register_gcm(
        &self,
        android_id: u64,
        app: &str,
        subtype: Option<&str>,
        sender: &str,
    ) -> Result<GcmRegistration, Error> {
        let mut state = self.shared.lock();
        if !state.devices.contains_key(&android_id) {
            return Err(Error::UnknownDevice(android_id));
        }
        Ok(state.register_gcm(android_id, app, subtype, sender, None))
    }

    /// Creates a web-persona GCM registration for a device and binds a web-push
    /// subscription (`p256dh`, `auth`, base64url) to it, as register3 + FIS + FCM
    /// registration would; returns the FCM registration (its `token` is what senders
    /// target).
    pub fn subscribe_web(
        &self,
        android_id: u64,
        p256dh: &str,
        auth: &str,
    ) -> Result<FcmRegistration, Error> {
        webpush_ece::SubscriptionKeys::from_base64(p256dh, auth)?;
        let mut state = self.shared.lock();
        if !state.devices.contains_key(&android_id) {
            return Err(Error::UnknownDevice(android_id));
        }
        let subtype = format!("wp:receiver.push.com#{}", uuid::Uuid::new_v4());
        let gcm = state.register_gcm(android_id, WEB_APP, Some(&subtype), CHROME_VAPID_KEY, None);
        let installation = state.create_installation("fcm-emulator", None, "1:0:web:0");
        let endpoint = format!("{}/{}", self.webpush_endpoint_base(), gcm.token);
        Ok(state.create_fcm_registration(
            "fcm-emulator",
            &installation.fid,
            &gcm.token,
            &endpoint,
            p256dh,
            auth,
            None,
        ))
    }

    /// A snapshot of every device.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.shared
            .lock()
            .devices
            .values()
            .map(|d| d.info())
            .collect()
    }

    /// A snapshot of one device (messages whose time to live ran out are dropped first).
    pub fn device(&self, android_id: u64) -> Option<DeviceInfo> {
        let now = self.shared.clock();
        let mut state = self.shared.lock();
        let device = state.devices.get_mut(&android_id)?;
        device.purge_expired(now, false);
        Some(device.info())
    }

    /// Persistent ids queued for a device and not yet sent on its current connection.
    pub fn pending_ids(&self, android_id: u64) -> Vec<String> {
        self.device(android_id)
            .map(|d| d.pending)
            .unwrap_or_default()
    }

    /// Persistent ids sent to a device on its current connection and not acknowledged.
    pub fn unacked_ids(&self, android_id: u64) -> Vec<String> {
        self.device(android_id)
            .map(|d| d.unacked)
            .unwrap_or_default()
    }

    /// How many successful MCS logins a device made.
    pub fn login_count(&self, android_id: u64) -> u32 {
        self.shared
            .lock()
            .devices
            .get(&android_id)
            .map_or(0, |d| d.logins)
    }

    /// Whether a device has a logged-in MCS connection the server is not ending (the one
    /// that gets its messages).
    pub fn is_connected(&self, android_id: u64) -> bool {
        self.shared
            .lock()
            .devices
            .get(&android_id)
            .is_some_and(|d| d.current().is_some())
    }

    /// The last LoginRequest received on any connection (failed logins included).
    pub fn last_login_request(&self) -> Option<LoginRequest> {
        self.shared.lock().last_login.clone()
    }

    /// How many logins were refused.
    pub fn failed_logins(&self) -> u64 {
        self.shared.lock().failed_logins
    }

    /// A GCM registration by token.
    pub fn gcm_registration(&self, token: &str) -> Option<GcmRegistration> {
        self.shared.lock().gcm.get(token).cloned()
    }

    /// Every GCM registration.
    pub fn gcm_registrations(&self) -> Vec<GcmRegistration> {
        self.shared.lock().gcm.values().cloned().collect()
    }

    /// A Firebase installation by FID.
    pub fn installation(&self, fid: &str) -> Option<Installation> {
        self.shared.lock().installations.get(fid).cloned()
    }

    /// An FCM registration by FCM token.
    pub fn fcm_registration(&self, token: &str) -> Option<FcmRegistration> {
        self.shared.lock().fcm.get(token).cloned()
    }

    /// Every FCM registration.
    pub fn fcm_registrations(&self) -> Vec<FcmRegistration> {
        self.shared.lock().fcm.values().cloned().collect()
    }

    /// When the emulator started: the origin of the times in [`Overlap`] and
    /// [`LoginRecord`].
    pub fn started_at(&self) -> Instant {
        self.shared.started
    }

    /// The time since the emulator started, on the clock of [`Overlap`] and
    /// [`LoginRecord`] (e.g. taken when a test kills a worker, to compare with the next
    /// login's [`LoginRecord::logged_in_at`]).
    pub fn elapsed(&self) -> Duration {
        self.shared.elapsed()
    }

    /// How many MCS connections of a device are logged in right now (0 for an unknown
    /// device). A connection counts from the moment the server accepts its LoginRequest
    /// until the server has closed it; so, by default, a newer login makes this 2 only
    /// until the older connection is closed (see
    /// [`EmulatorBuilder::close_superseded_connections`]).
    pub fn concurrent_logins(&self, android_id: u64) -> usize {
        self.shared
            .lock()
            .devices
            .get(&android_id)
            .map_or(0, |d| d.sessions.len())
    }

    /// For how long a device had two or more MCS connections logged in at once (counted
    /// as for [`Emulator::concurrent_logins`]): the intervals, their total (an interval
    /// still open counts up to now) and the highest concurrency seen. An unknown device,
    /// or one that never overlapped, has no intervals.
    ///
    /// By default a newer login closes the older connection, so each takeover leaves one
    /// short interval; with [`EmulatorBuilder::close_superseded_connections`]`(false)` an
    /// interval lasts until the clients themselves bring it back to one connection.
    pub fn overlap(&self, android_id: u64) -> Overlap {
        let now = self.shared.elapsed();
        self.shared
            .lock()
            .devices
            .get(&android_id)
            .map(|d| d.overlap.snapshot(now))
            .unwrap_or_default()
    }

    /// [`Emulator::overlap`] of every device that ever had two or more connections logged
    /// in at once, by Android id (ascending); empty when none did.
    pub fn overlap_report(&self) -> Vec<(u64, Overlap)> {
        let now = self.shared.elapsed();
        let state = self.shared.lock();
        state
            .overlapping
            .iter()
            .filter_map(|id| {
                let device = state.devices.get(id)?;
                Some((*id, device.overlap.snapshot(now)))
            })
            .collect()
    }

    /// A device's successful MCS logins, oldest first (at most the last 1,000): when each
    /// connection logged in and when the server ended it. The time from a worker's kill
    /// ([`Emulator::elapsed`] then) to the next record's `logged_in_at` is the takeover
    /// time.
    pub fn login_history(&self, android_id: u64) -> Vec<LoginRecord> {
        self.shared
            .lock()
            .devices
            .get(&android_id)
            .map(|d| d.history.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Polls `condition` every 5 ms until it holds or `timeout` passes; returns whether
    /// it held. For tests waiting on the emulator's state.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Sending messages.
impl Emulator {
    /// Sends a message to a GCM or FCM token, exactly as `POST messages:send` does:
    /// encrypted (`aesgcm`) for web registrations with keys, plain `app_data` otherwise.
    pub fn send(&self, token: &str, message: &SendMessage) -> Result<Sent, Error> {
        self.shared.send_message(token, message)
    }

    /// Sends an already encrypted RFC 8291 `aes128gcm` body to a GCM (or FCM) token, as
    /// `POST /fcm/send/<token>` does.
    pub fn send_webpush(&self, token: &str, body: impl Into<Bytes>) -> Result<Sent, Error> {
        self.shared.send_webpush(
            token,
            body.into(),
            WebPushEncoding::Aes128Gcm,
            delivery::DEFAULT_TTL,
            None,
        )
    }

    /// Queues any stanza for a device, as is (its persistent id is assigned unless set).
    /// Returns the persistent id.
    pub fn send_raw(&self, android_id: u64, stanza: DataMessageStanza) -> Result<String, Error> {
        self.shared.enqueue(android_id, stanza)
    }

    /// Queues a `deleted_messages` notice (`message_type=deleted_messages`,
    /// `total_deleted=<n>`) for the device behind a GCM or FCM token.
    pub fn send_deleted_messages(&self, token: &str, total_deleted: u32) -> Result<Sent, Error> {
        self.shared.send_deleted_messages(token, total_deleted)
    }

    /// Sends a HeartbeatPing to the target's connected devices now (on each one's current
    /// connection); returns how many.
    pub fn ping(&self, target: Target) -> usize {
        let mut state = self.shared.lock();
        let mut n = 0;
        for device in state.targets(target) {
            if device.current().is_some() {
                device.push_action(Action::Ping);
                n += 1;
            }
        }
        n
    }

    /// Closes the target's logged-in connections now (every one of a device that has
    /// several), without a frame; returns how many connections.
    pub fn disconnect(&self, target: Target) -> usize {
        let mut state = self.shared.lock();
        state
            .targets(target)
            .into_iter()
            .map(|device| device.disconnect_all())
            .sum()
    }
}

/// Topics, Instance ID resets and the clock (docs/protocol.md §7.1, §7.5).
///
/// register3 keeps the topic subscriptions (`X-gcm.topic=/topics/T` with the token as
/// `sender` and `X-subtype`, `delete=1` to unsubscribe) and the send API's `topic` and
/// `condition` reach them; these methods do the same from a test, and inspect the
/// result. Topic names are given without the `/topics/` prefix.
impl Emulator {
    /// The topics a registration (by GCM or FCM token) is subscribed to, sorted.
    pub fn topics(&self, token: &str) -> Vec<String> {
        let state = self.shared.lock();
        state
            .gcm_token_of(token)
            .and_then(|t| state.token_topics.get(&t))
            .map(|topics| topics.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The GCM tokens subscribed to a topic, sorted.
    pub fn topic_subscribers(&self, topic: &str) -> Vec<String> {
        self.shared.audience(&Audience::Topic(topic.to_owned()))
    }

    /// Subscribes a registration (by GCM or FCM token) to a topic, as register3 would.
    pub fn subscribe_topic(&self, token: &str, topic: &str) -> Result<(), Error> {
        if !is_valid_topic_name(topic) {
            return Err(Error::InvalidInput(format!("invalid topic name {topic:?}")));
        }
        let mut state = self.shared.lock();
        let gcm = state
            .gcm_token_of(token)
            .ok_or_else(|| Error::UnknownToken(token.to_owned()))?;
        state.subscribe_topic(&gcm, topic);
        Ok(())
    }

    /// Unsubscribes a registration from a topic; returns whether it was subscribed.
    pub fn unsubscribe_topic(&self, token: &str, topic: &str) -> Result<bool, Error> {
        let mut state = self.shared.lock();
        let gcm = state
            .gcm_token_of(token)
            .ok_or_else(|| Error::UnknownToken(token.to_owned()))?;
        Ok(state.unsubscribe_topic(&gcm, topic))
    }

    /// Sends a message to every registration subscribed to `topic`, as `messages:send`
    /// with `"topic"` does: each gets it with `from = /topics/<topic>`. Returns one
    /// [`Sent`] per registration (empty when nobody is subscribed).
    pub fn send_to_topic(&self, topic: &str, message: &SendMessage) -> Result<Vec<Sent>, Error> {
        let name = topic.strip_prefix("/topics/").unwrap_or(topic);
        if !is_valid_topic_name(name) {
            return Err(Error::InvalidInput(format!("invalid topic name {name:?}")));
        }
        self.shared
            .send_to_audience(&Audience::Topic(name.to_owned()), message)
    }

    /// Sends a message to every registration whose topics satisfy `condition` (e.g.
    /// `'a' in topics && !('b' in topics)`, at most five topics), as `messages:send` with
    /// `"condition"` does; `from` is the message's `from`, as for a token. Only
    /// registrations subscribed to at least one topic are considered.
    pub fn send_to_condition(
        &self,
        condition: &str,
        message: &SendMessage,
    ) -> Result<Vec<Sent>, Error> {
        let parsed = parse_condition(condition)?;
        self.shared
            .send_to_audience(&Audience::Condition(parsed), message)
    }

    /// Invalidates the instance behind a GCM or FCM token, as Google does to a wiped or
    /// duplicated instance id: the registration is deleted (sends to it answer
    /// `UNREGISTERED`, its topics are gone) and every later register3 of the same device
    /// and app answers `Error=RST` — unless it carries an `X-appid` other than the FID
    /// the registration was made with, or comes from another device (a new check-in).
    /// Deletes (`delete=1`) are still answered. Returns the deleted registration.
    ///
    /// For a one-off `Error=RST` instead, use [`Emulator::fail_register3`]`(1, "RST")`.
    pub fn invalidate_instance(&self, token: &str) -> Result<GcmRegistration, Error> {
        let mut state = self.shared.lock();
        let gcm = state
            .gcm_token_of(token)
            .ok_or_else(|| Error::UnknownToken(token.to_owned()))?;
        let registration = state
            .remove_gcm(&gcm)
            .ok_or_else(|| Error::UnknownToken(token.to_owned()))?;
        state.invalidated.insert(
            (registration.android_id, registration.app.clone()),
            registration.fid.clone(),
        );
        tracing::info!(android_id = registration.android_id, app = %registration.app, "instance invalidated");
        Ok(registration)
    }

    /// Queues an Instance ID control message (`RST`, `RST_FULL` or `SYNC`) for the device
    /// behind a GCM or FCM token: a DataMessageStanza `from = "google.com/iid"`, category
    /// the registration's app, `app_data` `CMD=<command>` (and `subtype` when the
    /// registration has one), delivered and acknowledged like any message. It changes
    /// nothing on the server side; pair it with [`Emulator::invalidate_instance`] to make
    /// the old identity fail too.
    pub fn send_iid_command(&self, token: &str, command: IidCommand) -> Result<Sent, Error> {
        self.shared.send_iid_command(token, command)
    }

    /// Makes every check-in response from now on carry these settings, `(name, value)` in
    /// order, as a complete list (`settings_diff` false; docs/protocol.md §2.1); an empty
    /// list (the start) carries none. The values are sent as given, readable or not.
    pub fn set_checkin_settings<N, V>(&self, settings: impl IntoIterator<Item = (N, V)>)
    where
        N: Into<Bytes>,
        V: Into<Bytes>,
    {
        let settings = settings
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        self.shared.lock().checkin_settings = settings;
    }

    /// Makes every check-in response from now on set the re-check-in interval to
    /// `interval` (the `checkin_interval` setting, in whole seconds; docs/protocol.md
    /// §2.1), or, with `None`, carry no settings. Replaces the settings of
    /// [`set_checkin_settings`](Self::set_checkin_settings).
    pub fn set_checkin_interval(&self, interval: Option<Duration>) {
        let settings = interval.map(|interval| {
            (
                gcm_checkin::CHECKIN_INTERVAL_SETTING,
                interval.as_secs().to_string(),
            )
        });
        self.set_checkin_settings(settings);
    }

    /// Moves the emulator's clock forward by `by`: times to live run out (messages past
    /// theirs are dropped instead of delivered, docs/protocol.md §7.5) and VAPID `exp`
    /// claims are judged against the moved clock. The clock of [`Emulator::elapsed`]
    /// (logins, overlaps) is not moved.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(by);
        let state = self.shared.lock();
        for device in state.devices.values() {
            device.wake();
        }
    }
}

/// Fault injection.
impl Emulator {
    /// Arms a fault (see [`Fault`] for when each fires): on one device it fires once
    /// ([`Fault::Stall`] lasts until cleared); on [`Target::All`] it fires on every
    /// connection until [`Emulator::clear_faults`].
    pub fn inject_fault(&self, target: Target, fault: Fault) -> Result<(), Error> {
        let mut state = self.shared.lock();
        match target {
            Target::Device(id) => {
                let device = state.devices.get_mut(&id).ok_or(Error::UnknownDevice(id))?;
                if fault == Fault::Stall {
                    device.stalled = true;
                } else {
                    device.push_action(Action::Fault(fault));
                }
                device.wake();
            }
            Target::All => {
                if fault == Fault::Stall {
                    state.global_stall = true;
                } else {
                    let id = state.next_fault_id;
                    state.next_fault_id += 1;
                    state.global_faults.push((id, fault));
                }
                for device in state.devices.values() {
                    device.wake();
                }
            }
        }
        tracing::info!(?target, "fault armed");
        Ok(())
    }

    /// Clears the target's armed faults and stall. [`Target::All`] clears the global
    /// faults and every device's.
    pub fn clear_faults(&self, target: Target) {
        let mut state = self.shared.lock();
        if target == Target::All {
            state.global_faults.clear();
            state.global_stall = false;
        }
        for device in state.targets(target) {
            device.stalled = false;
            device.actions.retain(|a| !matches!(a, Action::Fault(_)));
            device.wake();
        }
    }

    /// Makes the next `count` requests to `endpoint` fail with `failure` (queued after
    /// any failures already armed).
    pub fn fail_next(&self, endpoint: Endpoint, count: u32, failure: HttpFailure) {
        let mut state = self.shared.lock();
        let queue = state.http_failures.entry(endpoint).or_default();
        for _ in 0..count.min(10_000) {
            queue.push_back(failure.clone());
        }
    }

    /// Makes the next `count` check-ins fail with this HTTP status.
    pub fn fail_checkins(&self, count: u32, status: u16) {
        self.fail_next(Endpoint::Checkin, count, HttpFailure::Status(status));
    }

    /// Makes the next `count` register3 calls answer `Error=<code>` (HTTP 200), e.g.
    /// `PHONE_REGISTRATION_ERROR`.
    pub fn fail_register3(&self, count: u32, code: &str) {
        self.fail_next(
            Endpoint::Register3,
            count,
            HttpFailure::Register3Error(code.to_owned()),
        );
    }
}

//! The driver of one app's push connection: TLS socket, codec, [`Session`], timers and
//! the reconnect loop, as one tokio task.
//!
//! The loop never gives up by default: every failure (check-in, TCP, TLS, login, a dead
//! or closed connection) is logged with its cause and followed by a new attempt after an
//! exponential backoff with jitter; the backoff starts over once a connection stayed up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use fcm_http::RetryPolicy;
use futures_util::{FutureExt, SinkExt, StreamExt};
use mcs_codec::{McsCodec, McsError, McsMessage};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use webpush_ece::ReceiverKeys;

use crate::dial;
use crate::event::{Delivery, Event, Taken, Work};
use crate::handoff;
use crate::message;
use crate::session::{AckState, Session, SessionConfig, SessionEvent};
use crate::store::{Store, StoreError};
use crate::tls::TlsStream;
use mcs_codec::proto::DataMessageStanza;
use tokio::task::JoinHandle;

/// Where an app's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not started yet.
    Idle,
    /// Checking in, connecting and logging in; `attempt` counts the failures since the
    /// last good connection plus one.
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// Logged in and receiving.
    Connected {
        /// Since when.
        since: SystemTime,
    },
    /// Waiting before the next attempt.
    BackingOff {
        /// When the next attempt starts.
        until: SystemTime,
        /// Why the last attempt or connection failed.
        cause: String,
        /// How many attempts failed in a row.
        failures: u32,
    },
    /// Stopped: by [`crate::Pullkin::stop`], or after the configured number of failures.
    Stopped {
        /// Why, when it was not a requested stop.
        cause: Option<String>,
    },
}

/// The health of an app's connection, to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The connection state.
    pub state: ConnectionState,
    /// When the last frame arrived from the server.
    pub last_frame_at: Option<SystemTime>,
    /// How many logins succeeded.
    pub logins: u64,
    /// How many attempts or connections failed.
    pub failures: u64,
}

/// What the driver needs to reach the MCS server.
#[derive(Clone)]
pub(crate) struct McsTarget {
    /// `host:port`.
    pub addr: String,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
    /// Shared by every connection.
    pub tls: Arc<ClientConfig>,
    /// Limit on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Permits for handshakes in progress, shared by every app of a listener.
    pub handshakes: Arc<tokio::sync::Semaphore>,
    /// The HTTP proxy to tunnel through, if any.
    pub proxy: Option<fcm_http::Proxy>,
}

/// The device identity to log in with, from [`Prepare`].
#[derive(Clone)]
pub(crate) struct Identity {
    pub android_id: u64,
    pub security_token: u64,
    /// New Web Push keys, when the credentials were renewed with other keys.
    pub keys: Option<Arc<ReceiverKeys>>,
}

/// Run before each connection attempt (check-in, credential upkeep): returns the identity
/// to log in with, or why it cannot.
pub(crate) type Prepare =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Identity, Failure>> + Send>> + Send + Sync>;

/// Why a connection attempt failed, and how long the server asked to wait before the next
/// one (an HTTP `Retry-After` during check-in), if it did.
pub(crate) struct Failure {
    pub cause: String,
    pub retry_after: Option<Duration>,
}

impl From<String> for Failure {
    fn from(cause: String) -> Self {
        Self {
            cause,
            retry_after: None,
        }
    }
}

/// What the driver tasks of one listener share (one copy, not one per app).
pub(crate) struct Settings {
    pub target: McsTarget,
    pub store: Arc<dyn Store>,
    pub reconnect: RetryPolicy,
    /// Give up after this many failures in a row (`None`: never).
    pub max_failures: Option<u32>,
    /// A connection that stayed up this long resets the backoff.
    pub stable_after: Duration,
    /// At most one store write per this interval while connected.
    pub store_interval: Duration,
    pub events: broadcast::Sender<Event>,
}

/// Everything one app's driver task needs.
pub(crate) struct Worker {
    pub app: Arc<str>,
    /// Taken by [`Worker::run`] to make the session.
    pub session_config: Option<SessionConfig>,
    pub keys: Option<Arc<ReceiverKeys>>,
    pub settings: Arc<Settings>,
    pub prepare: Option<Prepare>,
    /// Boxed: a queue of pointers, not of deliveries.
    pub deliveries: handoff::Sender<Box<Delivery>>,
    /// Ids the application took.
    pub taken: Arc<Taken>,
    pub health: watch::Sender<Health>,
    pub last_frame_ms: Arc<AtomicU64>,
    pub stop: CancellationToken,
    /// Changes when the connections are to be checked now ([`crate::Pullkin::probe`]).
    pub probe: watch::Receiver<u64>,
}

type Connection = Framed<TlsStream, McsCodec>;

/// The read buffer of an idle connection, in bytes.
const IDLE_BUFFER: usize = 256;

/// The room the read buffer gets during a burst of frames, in bytes.
const BURST_BUFFER: usize = 16 * 1024;

/// How a connection ended.
enum Ended {
    Stopped,
    Lost { cause: String, online_for: Duration },
}

impl Worker {
    /// Runs until stopped (or until `max_failures`).
    pub(crate) async fn run(mut self) {
        let restored = match self.settings.store.load_ack_state(&self.app) {
            Ok(state) => state,
            Err(error) => {
                // Starting over would deliver every message again: refuse instead.
                let cause = format!("cannot read the stored state: {error}");
                warn!(app = %self.app, "{cause}");
                let _ = self.settings.events.send(Event::Failed {
                    app: self.app.to_string(),
                    cause: cause.clone(),
                });
                self.set_state(ConnectionState::Stopped { cause: Some(cause) });
                return;
            }
        };
        let Some(config) = self.session_config.take() else {
            return;
        };
        let mut session = Session::new(config, restored);
        let mut failures: u32 = 0;
        let mut stop_cause = None;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            self.set_state(ConnectionState::Connecting {
                attempt: failures + 1,
            });
            // Boxed, here and below: an async fn's state is as large as its largest await
            // point, and every idle connection holds one (thousands may be held at once).
            let ended = Box::pin(self.connect_once(&mut session)).await;
            session.disconnected();
            let (cause, asked) = match ended {
                Ok(Ended::Stopped) => break,
                Ok(Ended::Lost { cause, online_for }) => {
                    if online_for >= self.settings.stable_after {
                        failures = 0;
                    }
                    (cause, None)
                }
                Err(Failure { cause, retry_after }) => (cause, retry_after),
            };
            failures = failures.saturating_add(1);
            self.health.send_modify(|h| h.failures += 1);
            if self
                .settings
                .max_failures
                .is_some_and(|max| failures >= max)
            {
                warn!(app = %self.app, failures, "giving up: {cause}");
                stop_cause = Some(format!("gave up after {failures} failures: {cause}"));
                break;
            }
            let reconnect = &self.settings.reconnect;
            let backoff = reconnect.delay(failures, &mut rand::thread_rng());
            // No sooner than the server asked, but never beyond the longest backoff.
            let server_wait =
                asked.map_or(Duration::ZERO, |asked| asked.min(reconnect.max_delay()));
            let delay = server_wait.max(backoff);
            warn!(app = %self.app, failures, ?delay, ?asked, "connection failed: {cause}; retrying");
            self.set_state(ConnectionState::BackingOff {
                until: SystemTime::now() + delay,
                cause,
                failures,
            });
            let stop = self.stop.clone();
            // A probe (network change, system resume) since the connection ended cuts the
            // backoff short, but not the part of it the server asked for.
            let server_until = Instant::now() + server_wait;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
                Ok(()) = self.probe.changed() => {
                    info!(app = %self.app, "probed: reconnecting now, or once the server's wait is over");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = sleep_until(Some(server_until)) => {}
                    }
                }
            }
        }
        // Ids taken since the last write must not be lost.
        self.take_delivered(&mut session);
        if session.ack_state_dirty()
            && let Err(error) = self.persist(session.ack_state()).await
        {
            warn!(app = %self.app, "cannot store the acknowledgement state: {error}");
        }
        if let Some(cause) = &stop_cause {
            let _ = self.settings.events.send(Event::Failed {
                app: self.app.to_string(),
                cause: cause.clone(),
            });
        }
        self.set_state(ConnectionState::Stopped { cause: stop_cause });
        info!(app = %self.app, "listener stopped");
    }

    /// Tells the session which messages the application took meanwhile.
    fn take_delivered(&self, session: &mut Session) {
        let now = Instant::now();
        for id in self.taken.take() {
            session.delivered(&id, now);
        }
    }

    fn set_state(&self, state: ConnectionState) {
        let event = Event::State {
            app: self.app.to_string(),
            state: state.clone(),
        };
        self.health.send_modify(|h| h.state = state);
        let _ = self.settings.events.send(event);
    }

    async fn persist(&self, state: AckState) -> Result<(), String> {
        let store = Arc::clone(&self.settings.store);
        let app = Arc::clone(&self.app);
        tokio::task::spawn_blocking(move || store.save_ack_state(&app, &state))
            .await
            .map_err(|e| format!("store task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    async fn open(&self) -> Result<Connection, String> {
        let target = &self.settings.target;
        let connect = async {
            let _permit = target
                .handshakes
                .acquire()
                .await
                .map_err(|_| "the listener is shutting down".to_owned())?;
            let tcp = match &target.proxy {
                Some(proxy) => {
                    let (host, port) = split_host_port(&target.addr)?;
                    fcm_http::connect_through(proxy, host, port, target.connect_timeout)
                        .await
                        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?
                }
                None => {
                    let addrs: Vec<_> = tokio::net::lookup_host(target.addr.as_str())
                        .await
                        .map_err(|e| format!("cannot resolve {}: {e}", target.addr))?
                        .collect();
                    dial::connect_first(&addrs, dial::ATTEMPT_DELAY, TcpStream::connect)
                        .await
                        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?
                }
            };
            let _ = tcp.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(60))
                .with_interval(Duration::from_secs(10));
            if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
                debug!("cannot set TCP keepalive: {e}");
            }
            let tls = TlsStream::connect(Arc::clone(&target.tls), target.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS with {} failed: {e}", target.addr))?;
            // Start with small buffers: they grow with bursts, and an idle connection
            // should cost little (thousands of them may be held at once).
            let mut framed = Framed::with_capacity(tls, McsCodec::client(), IDLE_BUFFER);
            *framed.write_buffer_mut() = BytesMut::new();
            Ok::<_, String>(framed)
        };
        tokio::time::timeout(target.connect_timeout, connect)
            .await
            .map_err(|_| {
                format!(
                    "connecting to {} took longer than {:?}",
                    target.addr, target.connect_timeout
                )
            })?
    }

    /// One connection: prepare, connect, log in, receive until it ends.
    async fn connect_once(&mut self, session: &mut Session) -> Result<Ended, Failure> {
        if let Some(prepare) = &self.prepare {
            let stop = self.stop.clone();
            let identity = tokio::select! {
                () = stop.cancelled() => return Ok(Ended::Stopped),
                identity = prepare() => identity?,
            };
            if let Some(keys) = identity.keys {
                self.keys = Some(keys);
            }
            let current = session.config();
            if identity.android_id != current.android_id
                || identity.security_token != current.security_token
            {
                // A new device identity: the old acknowledgement state belongs to the old one.
                let mut config = current.clone();
                config.android_id = identity.android_id;
                config.security_token = identity.security_token;
                *session = Session::new(config, AckState::default());
                self.persist(AckState::default()).await?;
            }
        }
        let stop = self.stop.clone();
        let mut connection = tokio::select! {
            () = stop.cancelled() => return Ok(Ended::Stopped),
            connection = Box::pin(self.open()) => connection?,
        };
        session.connect(Instant::now());
        // Probes from before this connection are answered by the connection itself.
        self.probe.borrow_and_update();
        let mut online_since: Option<Instant> = None;
        let lost = |cause: String, since: Option<Instant>| {
            Ok(Ended::Lost {
                cause,
                online_for: since.map(|s| s.elapsed()).unwrap_or_default(),
            })
        };
        // The store write in flight and the state version it records. Writes run beside
        // the connection (group commit): frames keep being read meanwhile, and the session
        // acknowledges an id only once a write that names it has finished.
        let mut persisting: Option<(u64, JoinHandle<Result<(), StoreError>>)> = None;
        // When the last write started: each write records the whole state, so during a
        // burst they are spaced by `store_interval` (their cost grows with the state).
        let mut last_write: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let write_due = last_write.map_or(now, |at| at + self.settings.store_interval);
            if persisting.is_none() && session.ack_state_dirty() && now >= write_due {
                last_write = Some(now);
                let version = session.ack_state_version();
                let state = session.ack_state();
                let store = Arc::clone(&self.settings.store);
                let app = Arc::clone(&self.app);
                persisting = Some((
                    version,
                    tokio::task::spawn_blocking(move || store.save_ack_state(&app, &state)),
                ));
            }
            let mut wrote = false;
            while let Some(frame) = session.poll_transmit() {
                if let Err(e) = connection.feed(frame).await {
                    return lost(format!("write failed: {e}"), online_since);
                }
                wrote = true;
            }
            if wrote && let Err(e) = SinkExt::<McsMessage>::flush(&mut connection).await {
                return lost(format!("write failed: {e}"), online_since);
            }
            // A write that is wanted but not yet due wakes the loop when its turn comes.
            let write_waiting =
                persisting.is_none() && session.ack_state_dirty() && now < write_due;
            let session_deadline = session.poll_timeout();
            let deadline = match (session_deadline, write_waiting) {
                (Some(at), true) => Some(at.min(write_due)),
                (None, true) => Some(write_due),
                (at, false) => at,
            };
            let stop = self.stop.clone();
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    if let Some((version, write)) = persisting.take()
                        && let Ok(Ok(())) = write.await
                    {
                        session.mark_persisted_up_to(version);
                    }
                    Box::pin(self.close_gracefully(session, &mut connection)).await;
                    return Ok(Ended::Stopped);
                }
                written = wait_for(&mut persisting) => {
                    let version = persisting.take().map_or(0, |(version, _)| version);
                    match written {
                        Ok(Ok(())) => session.mark_persisted_up_to(version),
                        Ok(Err(error)) => {
                            return Err(format!("cannot store the acknowledgement state: {error}").into());
                        }
                        Err(error) => return Err(format!("the store task failed: {error}").into()),
                    }
                }
                frame = connection.next() => {
                    // One clock reading for the frames of one wake-up.
                    let now = Instant::now();
                    self.last_frame_ms.store(unix_ms(), Ordering::Relaxed);
                    let mut next = Some(frame);
                    let mut frames = 0_usize;
                    // Take every frame already buffered before writing anything back.
                    while let Some(frame) = next.take() {
                        frames += 1;
                        match frame {
                            Some(Ok(message)) => session.handle_frame(message, now),
                            Some(Err(e)) => return lost(describe(&e), online_since),
                            None => return lost("the server ended the stream".into(), online_since),
                        }
                        next = connection.next().now_or_never();
                    }
                    // A burst: read it in large pieces (the room is given back when idle).
                    let buffer = connection.read_buffer_mut();
                    if frames > 1 && buffer.capacity() - buffer.len() < BURST_BUFFER / 2 {
                        buffer.reserve(BURST_BUFFER);
                    }
                    // Under a steady stream of frames the branch below may never win:
                    // take what the application finished meanwhile here too.
                    self.take_delivered(session);
                }
                ids = self.taken.wait() => {
                    let now = Instant::now();
                    for id in ids {
                        session.delivered(&id, now);
                    }
                }
                Ok(()) = self.probe.changed() => {
                    debug!(app = %self.app, "probed: pinging the server now");
                    session.probe(Instant::now());
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    if session_deadline.is_none_or(|at| now < at) {
                        // Only a store write's turn came.
                        continue;
                    }
                    session.handle_timeout(now);
                    // Idle: give back buffers a burst grew.
                    if connection.read_buffer().is_empty()
                        && connection.read_buffer().capacity() > IDLE_BUFFER
                    {
                        *connection.read_buffer_mut() = BytesMut::with_capacity(IDLE_BUFFER);
                    }
                    if connection.write_buffer().is_empty() {
                        *connection.write_buffer_mut() = BytesMut::new();
                    }
                }
            }
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::LoggedIn { heartbeat_interval } => {
                        info!(app = %self.app, ?heartbeat_interval, "logged in");
                        online_since = Some(Instant::now());
                        self.health.send_modify(|h| h.logins += 1);
                        self.set_state(ConnectionState::Connected {
                            since: SystemTime::now(),
                        });
                    }
                    SessionEvent::Message(stanza, id) => {
                        let delivery = self.delivery(stanza, id);
                        if !self.hand_over(delivery).await? {
                            return Ok(Ended::Stopped);
                        }
                    }
                    SessionEvent::UnknownFrame { tag } => {
                        debug!(app = %self.app, tag, "ignoring a frame with an unknown tag");
                    }
                    SessionEvent::Disconnected(reason) => {
                        return lost(reason.to_string(), online_since);
                    }
                }
            }
        }
    }

    /// On a requested stop: acknowledge what the application took, store it, and write
    /// the acknowledgement (for at most a second) before the connection is dropped.
    async fn close_gracefully(&mut self, session: &mut Session, connection: &mut Connection) {
        self.take_delivered(session);
        session.flush_acks();
        if session.ack_state_dirty() {
            match self.persist(session.ack_state()).await {
                Ok(()) => session.mark_persisted(),
                Err(error) => {
                    warn!(app = %self.app, "cannot store the acknowledgement state: {error}");
                    return;
                }
            }
        }
        let write = async {
            while let Some(frame) = session.poll_transmit() {
                connection.feed(frame).await?;
            }
            SinkExt::<McsMessage>::close(connection).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }

    /// Prepares a data message for the hand-over. Decoding happens on the consumer's
    /// side, and decryption on the blocking pool, so that several messages are decrypted
    /// in parallel while the connection task goes on reading; the consumer takes them in
    /// order.
    fn delivery(
        &self,
        stanza: Box<DataMessageStanza>,
        persistent_id: Option<Arc<str>>,
    ) -> Box<Delivery> {
        let keys = self.keys.clone();
        let work = if keys.is_some() && message::is_encrypted(&stanza) {
            Work::Decrypting(tokio::task::spawn_blocking(move || {
                let decoded = message::decode(&stanza, keys.as_deref());
                (decoded, stanza)
            }))
        } else {
            Work::Plain(stanza, keys)
        };
        Box::new(Delivery {
            app: Arc::clone(&self.app),
            persistent_id,
            work,
            delivered: Arc::clone(&self.taken),
            events: self.settings.events.clone(),
        })
    }

    /// Hands a message over, waiting while the application's queue is full. Only a boxed
    /// delivery is held across the wait: this future is part of every connection's state.
    /// `Ok(false)`: stopped meanwhile.
    async fn hand_over(&self, delivery: Box<Delivery>) -> Result<bool, String> {
        tokio::select! {
            () = self.stop.cancelled() => Ok(false),
            sent = self.deliveries.send(delivery) => sent
                .map(|()| true)
                .map_err(|_| "the application stopped taking messages".to_owned()),
        }
    }
}

/// The result of the store write in flight; never ready when there is none.
async fn wait_for(
    persisting: &mut Option<(u64, JoinHandle<Result<(), StoreError>>)>,
) -> Result<Result<(), StoreError>, tokio::task::JoinError> {
    match persisting {
        Some((_, write)) => write.await,
        None => std::future::pending().await,
    }
}

/// `host` and `port` of `host:port` (`[v6]:port` too).
fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("the MCS address {addr} has no port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("the MCS address {addr} has no valid port"))?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6,
        None if host.contains(':') => {
            return Err(format!(
                "the MCS address {addr}: write an IPv6 host in brackets"
            ));
        }
        None => host,
    };
    Ok((host, port))
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn describe(error: &McsError) -> String {
    match error {
        McsError::Io(e) => format!("read failed: {e}"),
        other => format!("bad data from the server: {other}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::split_host_port;

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

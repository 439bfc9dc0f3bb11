//! [`Pullkin`]: the listener. One connection per app, handlers and streams on top.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use fcm_http::RetryPolicy;
use futures_util::FutureExt;
use futures_util::stream::{self, SelectAll, Stream, StreamExt};
use mcs_codec::proto::DataMessageStanza;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::PullkinError;
use crate::connection::{
    ConnectionState, Failure, Health, Identity, McsTarget, Prepare, Settings, Worker,
};
use crate::core::PullkinCore;
use crate::credentials::AppCredentials;
use crate::event::{Delivery, Event, Incoming, Ready};
use crate::handoff;
use crate::message::Message;
use crate::resume;
use crate::session::SessionConfig;
use crate::store::{MemoryStore, Store};

/// The MCS server of Google.
pub const GOOGLE_MCS_ADDR: &str = "mtalk.google.com:5228";

/// Settings of the listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// The MCS server, `host:port` (default [`GOOGLE_MCS_ADDR`]).
    pub mcs_addr: String,
    /// The name the server's certificate must carry (default: the host of `mcs_addr`).
    pub mcs_server_name: Option<String>,
    /// Limit on TCP connect plus TLS handshake (default 20 s).
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
    /// Stop after this many failures in a row; `None` (the default) never gives up.
    pub max_failures: Option<u32>,
    /// A connection that stayed up this long resets the backoff (default 60 s).
    pub stable_after: Duration,
    /// Messages decoded ahead of the application, per app (default 256).
    pub queue_capacity: usize,
    /// How many connections may be in their TCP + TLS handshake at once, across all
    /// apps (default 32): thousands of apps starting together neither storm the server
    /// nor hold thousands of handshakes' worth of memory at the same time.
    pub concurrent_handshakes: usize,
    /// Compare the wall clock with the monotonic clock this often (default 2 s, one timer
    /// per listener, not per connection) to notice that the system was suspended: the
    /// heartbeat timers stand still while it sleeps, so after a resume every connection is
    /// [probed](Pullkin::probe) at once instead of after its heartbeat interval. At least
    /// 0.5 s; `None` turns this off.
    pub resume_check: Option<Duration>,
    /// Reach the MCS server through this HTTP proxy (`CONNECT`; TLS stays end to end),
    /// or directly with `None` (the default). [`Pullkin::with_core`] takes the core's
    /// proxy when this is `None`.
    pub proxy: Option<fcm_http::Proxy>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            mcs_addr: GOOGLE_MCS_ADDR.to_owned(),
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
            max_failures: None,
            stable_after: Duration::from_secs(60),
            queue_capacity: 256,
            concurrent_handshakes: 32,
            resume_check: Some(resume::CHECK_EVERY),
            proxy: None,
        }
    }
}

impl ListenerConfig {
    /// The default settings with another MCS server (e.g. a local emulator).
    #[must_use]
    pub fn with_mcs_addr(mut self, addr: impl Into<String>) -> Self {
        self.mcs_addr = addr.into();
        self
    }

    /// The default settings with other heartbeat timing.
    #[must_use]
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// The default settings with another backoff.
    #[must_use]
    pub fn with_reconnect(mut self, policy: RetryPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Give up after this many failures in a row.
    #[must_use]
    pub fn with_max_failures(mut self, max: Option<u32>) -> Self {
        self.max_failures = max;
        self
    }

    fn server_name(&self) -> Result<ServerName<'static>, PullkinError> {
        let host = match &self.mcs_server_name {
            Some(name) => name.clone(),
            None => {
                let addr = self.mcs_addr.as_str();
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }
        };
        ServerName::try_from(host.clone())
            .map_err(|_| PullkinError::Config(format!("{host:?} is not a valid server name")))
    }
}

/// What a handler returns: `()` or a `Result` whose error is reported.
pub trait HandlerResult {
    /// The error to report, if any.
    fn into_error(self) -> Option<String>;
}

impl HandlerResult for () {
    fn into_error(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display> HandlerResult for Result<(), E> {
    fn into_error(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

type Filter = Box<dyn Fn(&Message, &DataMessageStanza) -> bool + Send + Sync>;
type SyncCallback = Box<dyn Fn(&Message, &DataMessageStanza) -> Option<String> + Send + Sync>;
/// Makes the [`Prepare`] step of an app, by app name.
pub(crate) type PrepareFactory = Arc<dyn Fn(&str) -> Option<Prepare> + Send + Sync>;
type BoxFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

enum Callback {
    Sync(SyncCallback),
    Async(Box<dyn Fn(Message, DataMessageStanza) -> BoxFuture + Send + Sync>),
}

struct Handler {
    filter: Filter,
    callback: Callback,
}

struct App {
    stop: CancellationToken,
    task: JoinHandle<()>,
    receiver: Option<handoff::Receiver<Box<Delivery>>>,
    health: watch::Receiver<Health>,
}

/// The listener (the seed's `Pullkin`): holds one MCS connection per app, delivers each
/// message once to the handlers whose filter matches, or to a stream.
///
/// See the crate documentation for an example.
pub struct Pullkin {
    config: ListenerConfig,
    tls: Arc<ClientConfig>,
    store: Arc<dyn Store>,
    prepare: Option<PrepareFactory>,
    /// Shared: the map's entries stay small (thousands of apps may be held).
    credentials: Arc<Mutex<HashMap<String, Arc<AppCredentials>>>>,
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Copied on write: a dispatch takes one `Arc` clone, not one per handler.
    handlers: RwLock<Arc<Vec<Arc<Handler>>>>,
    apps: Mutex<HashMap<String, App>>,
    events: broadcast::Sender<Event>,
    /// Shared by every app's driver; made on the first `add_app`.
    worker_settings: Mutex<Option<Arc<Settings>>>,
    /// Bumped to make every connection check itself now (see [`Pullkin::probe`]).
    probe: watch::Sender<u64>,
    /// Ends the watch for system resumes (started on the first `add_app`).
    resume_watch: CancellationToken,
}

impl std::fmt::Debug for Pullkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pullkin")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Pullkin {
    /// A listener with these settings, TLS configuration (shared by every connection) and
    /// store (`None`: in memory, nothing survives a restart).
    #[must_use]
    pub fn new(
        config: ListenerConfig,
        tls: Arc<ClientConfig>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(
            config.concurrent_handshakes.max(1),
        ));
        Self {
            config,
            tls,
            store: store.unwrap_or_else(|| Arc::new(MemoryStore::default())),
            prepare: None,
            credentials: Arc::default(),
            handshakes,
            handlers: RwLock::new(Arc::new(Vec::new())),
            apps: Mutex::new(HashMap::new()),
            events,
            worker_settings: Mutex::new(None),
            probe: watch::Sender::new(0),
            resume_watch: CancellationToken::new(),
        }
    }

    /// A listener that keeps each app's credentials alive with `core`: before every
    /// connection attempt it checks the device in (PROTOCOL: check-in, TLS and login in
    /// one retry loop), refreshes the Firebase auth token before it expires, and registers
    /// anew when Google declared the identity dead. Renewed credentials are stored and
    /// announced with [`Event::CredentialsChanged`]. The MCS connections share the TLS
    /// configuration of `core`.
    #[must_use]
    pub fn with_core(
        core: Arc<PullkinCore>,
        config: ListenerConfig,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let mut config = config;
        if config.proxy.is_none() {
            config.proxy = core.proxy().cloned();
        }
        let mut pullkin = Self::new(config, core.tls_config(), store);
        let credentials = Arc::clone(&pullkin.credentials);
        let store = Arc::clone(&pullkin.store);
        let events = pullkin.events.clone();
        pullkin.prepare = Some(Arc::new(move |app: &str| {
            let app: Arc<str> = Arc::from(app);
            let core = Arc::clone(&core);
            let credentials = Arc::clone(&credentials);
            let store = Arc::clone(&store);
            let events = events.clone();
            let prepare: Prepare = Arc::new(move || {
                let app = Arc::clone(&app);
                let core = Arc::clone(&core);
                let credentials = Arc::clone(&credentials);
                let store = Arc::clone(&store);
                let events = events.clone();
                Box::pin(async move {
                    let current = lock(&credentials)
                        .get(&*app)
                        .cloned()
                        .ok_or_else(|| format!("no credentials for app {app}"))?;
                    let renewal = core.renew(&current).await.map_err(|e| Failure {
                        cause: format!("check-in failed: {e}"),
                        retry_after: e.retry_after(),
                    })?;
                    let creds = renewal.credentials;
                    let mut keys = None;
                    if renewal.changed {
                        let json = serde_json::to_value(&creds)
                            .map_err(|e| format!("cannot serialize credentials: {e}"))?;
                        let (store, name) = (Arc::clone(&store), Arc::clone(&app));
                        tokio::task::spawn_blocking(move || {
                            store.save_credentials_json(&name, &json)
                        })
                        .await
                        .map_err(|e| format!("store task failed: {e}"))?
                        .map_err(|e| format!("cannot store renewed credentials: {e}"))?;
                        keys = Some(Arc::new(
                            creds
                                .keys
                                .receiver_keys()
                                .map_err(|e| format!("renewed keys unusable: {e}"))?,
                        ));
                        lock(&credentials).insert(app.to_string(), Arc::new(creds.clone()));
                        let _ = events.send(Event::CredentialsChanged {
                            app: app.to_string(),
                        });
                    }
                    Ok(Identity {
                        android_id: creds.gcm.android_id,
                        security_token: creds.gcm.security_token.expose(),
                        keys,
                    })
                })
            });
            Some(prepare)
        }));
        pullkin
    }

    /// The current credentials of an app (renewed ones included).
    #[must_use]
    pub fn credentials(&self, app: &str) -> Option<AppCredentials> {
        lock(&self.credentials)
            .get(app)
            .map(|c| AppCredentials::clone(c))
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Registers a handler called with each message for which `filter` returns true (the
    /// seed's `on_notification`). A handler that returns an error or panics is reported as
    /// [`Event::HandlerFailed`]; the message is still acknowledged and nothing stops.
    pub fn on_notification<F, H, R>(&self, filter: F, handler: H)
    where
        F: Fn(&Message, &DataMessageStanza) -> bool + Send + Sync + 'static,
        H: Fn(&Message, &DataMessageStanza) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.push_handler(Handler {
            filter: Box::new(filter),
            callback: Callback::Sync(Box::new(move |m, d| handler(m, d).into_error())),
        });
    }

    /// Registers an async handler; see [`Pullkin::on_notification`].
    pub fn on_notification_async<F, H, Fut, R>(&self, filter: F, handler: H)
    where
        F: Fn(&Message, &DataMessageStanza) -> bool + Send + Sync + 'static,
        H: Fn(Message, DataMessageStanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        self.push_handler(Handler {
            filter: Box::new(filter),
            callback: Callback::Async(Box::new(move |m, d| {
                let future = handler(m, d);
                Box::pin(async move { future.await.into_error() })
            })),
        });
    }

    fn push_handler(&self, handler: Handler) {
        let mut handlers = self
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut updated: Vec<Arc<Handler>> = handlers.as_ref().clone();
        updated.push(Arc::new(handler));
        *handlers = Arc::new(updated);
    }

    /// Subscribes to what the listener reports (state changes, undecryptable messages,
    /// failing handlers, …). Slow subscribers miss the oldest events, never block.
    #[must_use]
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Watches the health of an app's connection.
    #[must_use]
    pub fn health(&self, app: &str) -> Option<watch::Receiver<Health>> {
        self.lock_apps().get(app).map(|a| a.health.clone())
    }

    /// The apps added and not stopped.
    #[must_use]
    pub fn apps(&self) -> Vec<String> {
        self.lock_apps().keys().cloned().collect()
    }

    fn lock_apps(&self) -> std::sync::MutexGuard<'_, HashMap<String, App>> {
        lock(&self.apps)
    }

    /// Starts listening for an app (the seed's `add_app`): `app` names it (the sender
    /// id), `credentials` are its registration, and `persistent_ids` are ids already
    /// received elsewhere, which are then neither delivered again nor left unacknowledged.
    /// Must be called inside a tokio runtime.
    pub fn add_app(
        &self,
        app: &str,
        credentials: &AppCredentials,
        persistent_ids: impl IntoIterator<Item = String>,
    ) -> Result<(), PullkinError> {
        if self.lock_apps().contains_key(app) {
            return Err(PullkinError::AppExists(app.to_owned()));
        }
        let keys = credentials.keys.receiver_keys()?;
        lock(&self.credentials).insert(app.to_owned(), Arc::new(credentials.clone()));
        let extra: Vec<String> = persistent_ids.into_iter().collect();
        if !extra.is_empty() {
            let mut state = self.store.load_ack_state(app)?;
            let mut known: std::collections::HashSet<std::sync::Arc<str>> =
                state.unconfirmed.iter().cloned().collect();
            for id in extra {
                let id = std::sync::Arc::<str>::from(id);
                if known.insert(std::sync::Arc::clone(&id)) {
                    state.unconfirmed.push(id);
                }
            }
            self.store.save_ack_state(app, &state)?;
        }
        let mut session_config = SessionConfig::new(
            credentials.gcm.android_id,
            credentials.gcm.security_token.expose(),
        );
        session_config.client_id = self.config.client_id.clone();
        session_config.heartbeat_interval = self.config.heartbeat_interval;
        session_config.heartbeat_timeout = self.config.heartbeat_timeout;
        session_config.server_heartbeat = self.config.server_heartbeat;
        session_config.ack_delay = self.config.ack_delay;
        let (deliveries, receiver) = handoff::channel(self.config.queue_capacity);
        let (health_tx, health) = watch::channel(Health {
            state: ConnectionState::Idle,
            last_frame_at: None,
            logins: 0,
            failures: 0,
        });
        let stop = CancellationToken::new();
        let worker = Worker {
            app: Arc::from(app),
            session_config: Some(session_config),
            keys: Some(Arc::new(keys)),
            settings: self.worker_settings()?,
            prepare: self.prepare.as_ref().and_then(|p| p(app)),
            deliveries,
            taken: Arc::default(),
            health: health_tx,
            last_frame_ms: Arc::new(AtomicU64::new(0)),
            stop: stop.clone(),
            probe: self.probe.subscribe(),
        };
        let task = tokio::spawn(worker.run());
        drop(self.lock_apps().insert(
            app.to_owned(),
            App {
                stop,
                task,
                receiver: Some(receiver),
                health,
            },
        ));
        Ok(())
    }

    /// The messages of one app, as a stream (the seed's `listen_coroutine`). Each
    /// message is acknowledged when the application drops the [`Incoming`] (see there).
    /// Only one consumer per app: a second call, or [`Pullkin::run`] on the same app, is
    /// an error. The stream is not `Unpin`: pin it (`Box::pin`, `pin!`).
    pub fn listen(&self, app: &str) -> Result<impl Stream<Item = Incoming> + use<>, PullkinError> {
        let receiver = self.take_receiver(app)?;
        Ok(receiver_stream(receiver)
            .then(|delivery| delivery.resolve())
            .filter_map(|ready| std::future::ready(ready.map(Ready::taken))))
    }

    /// What every app's driver shares, made on the first `add_app`.
    fn worker_settings(&self) -> Result<Arc<Settings>, PullkinError> {
        let mut settings = lock(&self.worker_settings);
        if let Some(settings) = &*settings {
            return Ok(Arc::clone(settings));
        }
        let made = Arc::new(Settings {
            target: McsTarget {
                addr: self.config.mcs_addr.clone(),
                server_name: self.config.server_name()?,
                tls: Arc::clone(&self.tls),
                connect_timeout: self.config.connect_timeout,
                handshakes: Arc::clone(&self.handshakes),
                proxy: self.config.proxy.clone(),
            },
            store: Arc::clone(&self.store),
            reconnect: self.config.reconnect.clone(),
            max_failures: self.config.max_failures,
            stable_after: self.config.stable_after,
            store_interval: self.config.store_interval,
            events: self.events.clone(),
        });
        *settings = Some(Arc::clone(&made));
        if let Some(every) = self.config.resume_check {
            tokio::spawn(resume::watch_for_resume(
                self.probe.clone(),
                self.resume_watch.clone(),
                every,
                SystemTime::now,
            ));
        }
        Ok(made)
    }

    fn take_receiver(&self, app: &str) -> Result<handoff::Receiver<Box<Delivery>>, PullkinError> {
        let mut apps = self.lock_apps();
        let entry = apps
            .get_mut(app)
            .ok_or_else(|| PullkinError::UnknownApp(app.to_owned()))?;
        entry
            .receiver
            .take()
            .ok_or_else(|| PullkinError::AlreadyListening(app.to_owned()))
    }

    /// Receives and hands every message of the given apps (all when `None`) to the
    /// handlers whose filters match, until those apps are stopped (the seed's `run`).
    pub async fn run(&self, apps: Option<&[&str]>) -> Result<(), PullkinError> {
        let names: Vec<String> = match apps {
            Some(list) => list.iter().map(|s| (*s).to_owned()).collect(),
            None => self.apps(),
        };
        let mut merged: SelectAll<_> = SelectAll::new();
        for name in &names {
            merged.push(receiver_stream(self.take_receiver(name)?).boxed());
        }
        while let Some(delivery) = merged.next().await {
            if let Some(ready) = delivery.resolve().await {
                self.dispatch(ready).await;
            }
        }
        Ok(())
    }

    /// Calls the matching handlers, then acknowledges the message.
    async fn dispatch(&self, delivery: Ready) {
        let handlers = Arc::clone(&self.handlers.read().unwrap_or_else(PoisonError::into_inner));
        let message = &delivery.message;
        let stanza = &delivery.stanza;
        for handler in handlers.iter() {
            let matched =
                std::panic::catch_unwind(AssertUnwindSafe(|| (handler.filter)(message, stanza)));
            let error = match matched {
                Ok(false) => continue,
                Err(panic) => Some(format!("filter panicked: {}", panic_message(&panic))),
                Ok(true) => match &handler.callback {
                    Callback::Sync(callback) => {
                        std::panic::catch_unwind(AssertUnwindSafe(|| callback(message, stanza)))
                            .unwrap_or_else(|panic| {
                                Some(format!("handler panicked: {}", panic_message(&panic)))
                            })
                    }
                    Callback::Async(callback) => {
                        let future = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            callback((**message).clone(), (**stanza).clone())
                        }));
                        match future {
                            Ok(future) => AssertUnwindSafe(future)
                                .catch_unwind()
                                .await
                                .unwrap_or_else(|panic| {
                                    Some(format!("handler panicked: {}", panic_message(&panic)))
                                }),
                            Err(panic) => {
                                Some(format!("handler panicked: {}", panic_message(&panic)))
                            }
                        }
                    }
                },
            };
            if let Some(error) = error {
                warn!(app = %delivery.app, "handler failed: {error}");
                let _ = self.events.send(Event::HandlerFailed {
                    app: delivery.app.to_string(),
                    persistent_id: message.persistent_id.clone(),
                    error,
                });
            }
        }
        delivery.handled();
    }

    /// Makes every connection check now that it still carries anything, instead of
    /// waiting for its heartbeat interval: a connected one sends a heartbeat ping and
    /// reconnects unless the server answers within [`ListenerConfig::heartbeat_timeout`];
    /// one waiting to reconnect tries at once (or once the wait a server asked for with
    /// `Retry-After` is over). Call it when the network changed (new address, Wi-Fi to cellular):
    /// messages flow again within the timeout rather than after minutes. After a system
    /// suspension the listener does it by itself (see [`ListenerConfig::resume_check`]).
    pub fn probe(&self) {
        self.probe.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops one app (`Some`) or all (`None`), waiting until each connection is closed
    /// and its state stored. No timer of a stopped app fires afterwards.
    pub async fn stop(&self, app: Option<&str>) {
        let stopping: Vec<(String, App)> = {
            let mut apps = self.lock_apps();
            match app {
                Some(name) => apps
                    .remove(name)
                    .map(|a| (name.to_owned(), a))
                    .into_iter()
                    .collect(),
                None => apps.drain().collect(),
            }
        };
        for (name, app) in stopping {
            lock(&self.credentials).remove(&name);
            app.stop.cancel();
            if let Err(error) = app.task.await {
                warn!(app = %name, "listener task ended abnormally: {error}");
            }
        }
    }
}

impl Drop for Pullkin {
    fn drop(&mut self) {
        self.resume_watch.cancel();
        for app in self.lock_apps().values() {
            app.stop.cancel();
        }
    }
}

fn receiver_stream(
    receiver: handoff::Receiver<Box<Delivery>>,
) -> impl Stream<Item = Box<Delivery>> + Send {
    stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|delivery| (delivery, receiver))
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned lock holds sound data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

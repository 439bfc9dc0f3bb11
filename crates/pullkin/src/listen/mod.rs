//! The listener: [`Pullkin`] (built with [`PullkinBuilder`]) holds one MCS connection
//! per app and hands each message once to the handlers or to a stream.
//!
//! What lives here, from the top:
//! - this file: the facade — apps, handlers, streams, `run`, `stop`, `probe`;
//! - `config`: [`ListenerConfig`];
//! - `dispatch`: the handlers and the dispatch of a message to them;
//! - `delivery`: a message on its way to the application and its id on the way back;
//! - `handoff`: the bounded queue between a driver and its consumer;
//! - `driver`: one app's connection task (bytes, timers, store calls);
//! - `identity`: credential upkeep with a [`PullkinCore`]: before each attempt, every
//!   check-in interval while connected, and in answer to identity resets;
//! - `resume`: the watch that notices a system suspension;
//! - `sink`: [`Sink`] and [`Pullkin::forward`], handing messages onward durably.
//!
//! It may use every other module of the crate: `session` (the sans-IO protocol), `net`
//! (sockets), `store`, `registration`, `message`, `event`, `error`. Nothing else in the
//! crate uses it.

mod config;
mod delivery;
mod dispatch;
mod driver;
mod handoff;
mod identity;
mod resume;
mod sink;

pub use config::{GOOGLE_MCS_ENDPOINTS, ListenerConfig};
pub use delivery::{Ack, Incoming};
pub use dispatch::HandlerResult;
pub use sink::{ForwardConfig, Outcome, Sink, SinkEvent, SinkFuture, SinkMessage, deliver_batch};

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use futures_util::stream::{SelectAll, Stream, StreamExt};
use rustls::ClientConfig;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use crate::PullkinError;
use crate::event::{Event, Health};
use crate::message::{Message, Stanza};
use crate::net::{EndpointOrder, McsTarget};
use crate::registration::{AppCredentials, PullkinCore};
use crate::session::ReconnectPolicy;
use crate::store::{MemoryStore, Store};
use delivery::Handover;
use dispatch::Handler;
use driver::{Driver, DriverShared};
use identity::{CredentialsMap, Upkeep, lock};

/// One app's driver task and the ends the facade keeps.
struct App {
    stop: CancellationToken,
    task: JoinHandle<()>,
    receiver: Option<handoff::Receiver<Box<Handover>>>,
    health: watch::Receiver<Health>,
}

/// Builds a [`Pullkin`]: a [`PullkinCore`] for credential upkeep (or only a TLS
/// configuration), a [`Store`], and the [`ListenerConfig`].
///
/// ```no_run
/// # async fn demo() -> Result<(), pullkin::PullkinError> {
/// use std::sync::Arc;
/// use pullkin::{DirStore, ListenerConfig, Pullkin, PullkinCore};
///
/// let pullkin = Pullkin::builder()
///     .core(Arc::new(PullkinCore::new()?))
///     .store(Arc::new(DirStore::open("pullkin-state")?))
///     .config(ListenerConfig::default())
///     .build()?;
/// # drop(pullkin); Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct PullkinBuilder {
    core: Option<Arc<PullkinCore>>,
    tls: Option<Arc<ClientConfig>>,
    store: Option<Arc<dyn Store>>,
    config: ListenerConfig,
}

impl std::fmt::Debug for PullkinBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullkinBuilder")
            .field("core", &self.core.is_some())
            .field("tls", &self.tls.is_some())
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl PullkinBuilder {
    /// Keeps each app's credentials alive with `core`: before every connection attempt
    /// the device is checked in (check-in, TLS and login are one retry loop), the
    /// Firebase auth token is refreshed before it expires, and the app registers anew
    /// when Google declared its identity dead; a connected device checks in again every
    /// [`ListenerConfig::checkin_interval`] without dropping its connection. Identity
    /// resets are answered (docs/protocol.md §7.1): the Instance ID control messages
    /// `RST`/`RST_FULL` and register3's `Error=RST` with a new identity (the stored topics
    /// subscribed again, the connection logged in with it, the messages received before
    /// still delivered once), `SYNC` with a token sync; the control messages are
    /// acknowledged and not handed to the application (without a core they are, as any
    /// message: see [`IidCommand`](crate::IidCommand)). Changed credentials are stored
    /// and announced with [`Event::CredentialsChanged`]. The MCS connections use the core's
    /// TLS configuration (unless [`tls`](Self::tls) gives one) and its proxy (unless
    /// [`ListenerConfig::proxy`] names one).
    pub fn core(mut self, core: Arc<PullkinCore>) -> Self {
        self.core = Some(core);
        self
    }

    /// The TLS configuration every MCS connection shares (default: the core's, or
    /// without a core, the Mozilla roots of `webpki-roots`).
    pub fn tls(mut self, tls: Arc<ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Where acknowledgement state and renewed credentials are kept (default: in
    /// memory, so nothing survives a restart).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The settings (default [`ListenerConfig::default`]).
    pub fn config(mut self, config: ListenerConfig) -> Self {
        self.config = config;
        self
    }

    /// The listener. Fails when the MCS server name is not a valid TLS name, or when no
    /// TLS configuration can be made.
    pub fn build(self) -> Result<Pullkin, PullkinError> {
        let mut config = self.config;
        if config.proxy.is_none() {
            config.proxy = self.core.as_ref().and_then(|core| core.proxy().cloned());
        }
        let tls = match (self.tls, &self.core) {
            (Some(tls), _) => tls,
            (None, Some(core)) => core.tls_config(),
            (None, None) => fcm_http::Client::builder().build_tls_config()?,
        };
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let (events, _) = broadcast::channel(1024);
        let credentials = CredentialsMap::default();
        let upkeep = self.core.map(|core| {
            Arc::new(Upkeep {
                core,
                credentials: Arc::clone(&credentials),
                store: Arc::clone(&store),
                events: events.clone(),
                renewals: tokio::sync::Semaphore::new(config.concurrent_handshakes.max(1)),
                checkin_interval: config.checkin_interval,
            })
        });
        let shared = Arc::new(DriverShared {
            target: McsTarget {
                endpoints: config.endpoints()?,
                order: EndpointOrder::default(),
                tls,
                connect_timeout: config.connect_timeout,
                handshakes: Arc::new(tokio::sync::Semaphore::new(
                    config.concurrent_handshakes.max(1),
                )),
                proxy: config.proxy.clone(),
            },
            store: Arc::clone(&store),
            reconnect: ReconnectPolicy::new(
                config.reconnect.clone(),
                config.max_failures,
                config.stable_after,
            ),
            events: events.clone(),
            upkeep,
        });
        Ok(Pullkin {
            config,
            store,
            credentials,
            handlers: RwLock::new(Arc::new(Vec::new())),
            apps: Mutex::new(HashMap::new()),
            events,
            shared,
            probe: watch::Sender::new(0),
            resume_watch: Mutex::new(None),
        })
    }
}

/// The listener (`Pullkin` in the Python `pullkin` library): holds one MCS connection
/// per app, delivers each message once to the handlers whose filter matches, or to a
/// stream. Made with [`Pullkin::builder`].
///
/// See the crate documentation for an example.
pub struct Pullkin {
    config: ListenerConfig,
    store: Arc<dyn Store>,
    credentials: CredentialsMap,
    /// Copied on write: a dispatch takes one `Arc` clone, not one per handler.
    handlers: RwLock<Arc<Vec<Arc<Handler>>>>,
    apps: Mutex<HashMap<String, App>>,
    events: broadcast::Sender<Event>,
    /// Shared by every app's driver.
    shared: Arc<DriverShared>,
    /// Bumped to make every connection check itself now (see [`Pullkin::probe`]).
    probe: watch::Sender<u64>,
    /// Ends the watch for system resumes (started on the first `add_app`).
    resume_watch: Mutex<Option<CancellationToken>>,
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
    /// A builder: core (or TLS configuration), store, settings.
    pub fn builder() -> PullkinBuilder {
        PullkinBuilder::default()
    }

    // ---- getters ----

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

    /// Subscribes to what the listener reports (state changes, undecryptable messages,
    /// failing handlers, …). Slow subscribers miss the oldest events, never block.
    #[must_use]
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Watches the health of an app's connection. Its state changes wake the watcher;
    /// `last_frame_at` is kept current without waking it.
    #[must_use]
    pub fn health(&self, app: &str) -> Option<watch::Receiver<Health>> {
        lock(&self.apps).get(app).map(|a| a.health.clone())
    }

    /// The apps added and not stopped.
    #[must_use]
    pub fn apps(&self) -> Vec<String> {
        lock(&self.apps).keys().cloned().collect()
    }

    // ---- handlers ----

    /// Registers a handler called with each message for which `filter` returns true
    /// (`on_notification` of the Python `pullkin` library). A handler that returns an
    /// error or panics is reported as [`Event::HandlerFailed`]; the message is still
    /// acknowledged and nothing stops.
    pub fn on_notification<F, H, R>(&self, filter: F, handler: H)
    where
        F: Fn(&Message, &Stanza) -> bool + Send + Sync + 'static,
        H: Fn(&Message, &Stanza) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.push_handler(Handler::sync(filter, handler));
    }

    /// Registers an async handler; see [`Pullkin::on_notification`].
    pub fn on_notification_async<F, H, Fut, R>(&self, filter: F, handler: H)
    where
        F: Fn(&Message, &Stanza) -> bool + Send + Sync + 'static,
        H: Fn(Message, Stanza) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        self.push_handler(Handler::spawned(filter, handler));
    }

    fn push_handler(&self, handler: Handler) {
        let mut handlers = self
            .handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut updated: Vec<Arc<Handler>> = handlers.as_ref().clone();
        updated.push(Arc::new(handler));
        *handlers = Arc::new(updated);
    }

    // ---- apps ----

    /// Starts listening for an app (`add_app` of the Python `pullkin` library): `app`
    /// names it (the sender id), `credentials` are its registration, and
    /// `persistent_ids` are ids already received elsewhere, which are then neither
    /// delivered again nor left unacknowledged (they are merged into the stored state
    /// before the first connection). Must be called inside a tokio runtime.
    pub fn add_app(
        &self,
        app: &str,
        credentials: &AppCredentials,
        persistent_ids: impl IntoIterator<Item = String>,
    ) -> Result<(), PullkinError> {
        if lock(&self.apps).contains_key(app) {
            return Err(PullkinError::AppExists(app.to_owned()));
        }
        let keys = credentials.keys.receiver_keys()?;
        lock(&self.credentials).insert(app.to_owned(), Arc::new(credentials.clone()));
        let (handover, receiver) = handoff::channel(self.config.queue_capacity);
        let (health_tx, health) = watch::channel(Health::default());
        let stop = CancellationToken::new();
        self.start_resume_watch();
        let driver = Driver {
            app: Arc::from(app),
            session_config: self.config.session_config(
                credentials.gcm.android_id,
                credentials.gcm.security_token.expose(),
            ),
            received_elsewhere: persistent_ids.into_iter().collect(),
            keys: Some(Arc::new(keys)),
            shared: Arc::clone(&self.shared),
            handover,
            taken: Arc::default(),
            health: health_tx,
            stop: stop.clone(),
            probe: self.probe.subscribe(),
        };
        let span = tracing::info_span!("app", app = %app);
        let task = tokio::spawn(driver.run().instrument(span));
        drop(lock(&self.apps).insert(
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

    /// The watch for system resumes, one per listener, started with the first app.
    fn start_resume_watch(&self) {
        let Some(every) = self.config.resume_check else {
            return;
        };
        let mut watch = lock(&self.resume_watch);
        if watch.is_some() {
            return;
        }
        let token = CancellationToken::new();
        tokio::spawn(resume::watch_for_resume(
            self.probe.clone(),
            token.clone(),
            every,
            SystemTime::now,
        ));
        *watch = Some(token);
    }

    // ---- receiving ----

    /// The messages of one app, as a stream (`listen_coroutine` of the Python `pullkin`
    /// library). Each message is acknowledged when the application drops the
    /// [`Incoming`] (see there). Only one consumer per app: a second call, or
    /// [`Pullkin::run`] on the same app, is an error.
    pub fn listen(&self, app: &str) -> Result<impl Stream<Item = Incoming> + use<>, PullkinError> {
        Ok(Deliveries {
            receiver: self.take_receiver(app)?,
            decrypting: None,
        })
    }

    fn take_receiver(&self, app: &str) -> Result<handoff::Receiver<Box<Handover>>, PullkinError> {
        let mut apps = lock(&self.apps);
        let entry = apps
            .get_mut(app)
            .ok_or_else(|| PullkinError::UnknownApp(app.to_owned()))?;
        entry
            .receiver
            .take()
            .ok_or_else(|| PullkinError::AlreadyListening(app.to_owned()))
    }

    /// Receives and hands every message of every app added so far to the handlers whose
    /// filters match, until those apps are stopped (`run` of the Python `pullkin`
    /// library).
    pub async fn run_all(&self) -> Result<(), PullkinError> {
        let names = self.apps();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.run(&names).await
    }

    /// Like [`Pullkin::run_all`], for the named apps only.
    pub async fn run(&self, apps: &[&str]) -> Result<(), PullkinError> {
        let mut merged: SelectAll<_> = SelectAll::new();
        for name in apps {
            merged.push(self.take_receiver(name)?);
        }
        while let Some(handover) = merged.next().await {
            if let Some(ready) = handover.resolve().await {
                let handlers = Arc::clone(
                    &self
                        .handlers
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                dispatch::dispatch(&handlers, ready, &self.events).await;
            }
        }
        Ok(())
    }

    // ---- commands ----

    /// Makes every connection check now that it still carries anything, instead of
    /// waiting for its heartbeat interval: a connected one sends a heartbeat ping and
    /// reconnects unless the server answers within [`ListenerConfig::heartbeat_timeout`];
    /// one waiting to reconnect tries at once (or once the wait a server asked for with
    /// `Retry-After` is over). Call it when the network changed (new address, Wi-Fi to
    /// cellular): messages flow again within the timeout rather than after minutes. After
    /// a system suspension the listener does it by itself (see
    /// [`ListenerConfig::resume_check`]).
    pub fn probe(&self) {
        self.probe.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops one app, waiting until its connection is closed and its state stored. No
    /// timer of the stopped app fires afterwards. Stopping an app that is not there does
    /// nothing.
    pub async fn stop(&self, app: &str) {
        let stopping = lock(&self.apps).remove(app);
        if let Some(entry) = stopping {
            self.stop_app(app, entry).await;
        }
    }

    /// Stops every app, as [`Pullkin::stop`] does for one.
    pub async fn shutdown(&self) {
        let stopping: Vec<(String, App)> = lock(&self.apps).drain().collect();
        for (name, entry) in stopping {
            self.stop_app(&name, entry).await;
        }
    }

    async fn stop_app(&self, name: &str, app: App) {
        lock(&self.credentials).remove(name);
        app.stop.cancel();
        if let Err(error) = app.task.await {
            warn!(app = %name, "listener task ended abnormally: {error}");
        }
    }
}

impl Drop for Pullkin {
    fn drop(&mut self) {
        if let Some(watch) = lock(&self.resume_watch).take() {
            watch.cancel();
        }
        for app in lock(&self.apps).values() {
            app.stop.cancel();
        }
    }
}

/// The stream of [`Pullkin::listen`]: the app's queue, and the message whose decryption
/// it waits for. Nothing else is kept between polls: thousands of idle apps' streams
/// cost a pointer or two each (a combinator would keep room for a whole decoding future
/// per app).
struct Deliveries {
    receiver: handoff::Receiver<Box<Handover>>,
    decrypting: Option<Box<Handover>>,
}

impl Stream for Deliveries {
    type Item = Incoming;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            let handover = match this.decrypting.take() {
                Some(handover) => handover,
                None => match this.receiver.poll_recv(cx) {
                    Poll::Ready(Some(handover)) => handover,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
            };
            match handover.poll_resolve(cx) {
                Ok(Some(ready)) => return Poll::Ready(Some(ready.taken())),
                // Reported and acknowledged: the next one.
                Ok(None) => {}
                Err(handover) => {
                    this.decrypting = Some(handover);
                    return Poll::Pending;
                }
            }
        }
    }
}

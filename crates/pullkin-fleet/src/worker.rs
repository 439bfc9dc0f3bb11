//! [`Worker`]: one process of the fleet. It registers itself, claims identities up to
//! its fair share, listens for each one it holds with one [`Pullkin`], stores what
//! arrives through the [`FleetStore`], renews its leases, rebalances, fences itself
//! when it cannot renew, and hands everything off on shutdown.
//!
//! The loop is sequential: each turn it stops what [`LeasePolicy::poll_expired`]
//! reports, renews when due, balances when due, records the connection states, then
//! sleeps until the policy's next deadline, a refused write, a listener event or the
//! shutdown signal.
//!
//! Stopping many identities is done all at once, not one after another: when leases
//! are about to expire (self-fencing), every one of them is refused in the store first
//! (no write can land from then on), then all their listeners are cancelled together,
//! so the last connection closes within milliseconds of the first however many there
//! are — the margin before expiry does not have to grow with the identities held.
//! Graceful hand-offs (rebalancing, shutdown) run concurrently too, their flushes
//! gathered by the group commit and their leases released in one statement.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use pullkin::{ConnectionState, Event, ListenerConfig, Pullkin, PullkinCore};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::crypto::FleetKey;
use crate::db::Database;
use crate::error::{FleetError, db};
use crate::identities::open_credentials;
use crate::lease::{Balance, Lease, LeaseConfig, LeasePolicy, Leases, WorkerInfo};
use crate::schema;
use crate::store::{FleetStore, NotificationRow};

/// How long a worker leaves an identity it could not start to the others before it
/// tries again itself.
const UNSTARTABLE_FOR: Duration = Duration::from_secs(60);

/// How long a stop of one identity's listener may take before the worker goes on.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection states that changed are written at most this often (one statement for
/// all of them): a connect storm of thousands of identities is a few writes, not one
/// per event.
const STATES_EVERY: Duration = Duration::from_secs(1);

/// At most this many graceful hand-offs run at once (each stops a listener, flushes
/// through the group commit and releases its lease).
const HAND_OFFS_AT_ONCE: usize = 256;

/// Builds a [`Worker`].
#[must_use]
pub struct WorkerBuilder {
    database: Database,
    key: FleetKey,
    lease: LeaseConfig,
    listener: ListenerConfig,
    core: Option<Arc<PullkinCore>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    id: Option<String>,
    migrate: bool,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("database", &self.database)
            .field("lease", &self.lease)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Hold at most `capacity` identities (`pullkin fleet worker --capacity N`).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.lease.capacity = Some(capacity);
        self
    }

    /// The lease TTL (default 15 s); renewals, retries, the self-fencing margin and the
    /// balance interval follow from it ([`LeaseConfig::new`]).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        let capacity = self.lease.capacity;
        self.lease = LeaseConfig::new(ttl).with_capacity(capacity);
        self
    }

    /// Every lease setting at once.
    pub fn lease_config(mut self, config: LeaseConfig) -> Self {
        self.lease = config;
        self
    }

    /// The listener's settings (MCS server, heartbeats, backoff, …).
    pub fn listener_config(mut self, config: ListenerConfig) -> Self {
        self.listener = config;
        self
    }

    /// Check in and renew credentials with this core before connecting (see
    /// `PullkinBuilder::core`); renewed credentials are sealed into the database.
    pub fn core(mut self, core: Arc<PullkinCore>) -> Self {
        self.core = Some(core);
        self
    }

    /// The TLS configuration of the MCS connections.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The worker's id (default: a fresh UUID). Two running workers must not share one.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Whether the worker migrates the schema when it starts (default true); when not,
    /// it refuses to start on any other version than its own.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The worker (nothing runs until [`Worker::run`]).
    pub fn build(self) -> Result<Worker, FleetError> {
        let mut info = WorkerInfo::this_process(self.lease.capacity);
        if let Some(id) = self.id {
            info.id = id;
        }
        Ok(Worker {
            database: self.database,
            key: self.key,
            lease: self.lease,
            listener: self.listener,
            core: self.core,
            tls: self.tls,
            info,
            migrate: self.migrate,
            handle: WorkerHandle {
                events: broadcast::channel(1024).0,
                probe: Arc::new(Notify::new()),
            },
        })
    }
}

/// A way into a running [`Worker`] from outside (`pullkin fleet worker` uses it for its
/// `[name] connected` lines and SIGUSR1): the listener's events and a probe of every
/// connection. Taken with [`Worker::handle`] before [`Worker::run`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    events: broadcast::Sender<Event>,
    probe: Arc<Notify>,
}

impl WorkerHandle {
    /// The listener's events from now on, for every identity the worker holds (each
    /// event's app is the identity's name).
    #[must_use]
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Checks every connection now, as `Pullkin::probe` does (a connected one pings, one
    /// waiting to reconnect tries at once). Asked before the worker runs, it probes as
    /// soon as it does.
    pub fn probe(&self) {
        self.probe.notify_one();
    }
}

/// One process of the fleet; see the module docs.
pub struct Worker {
    database: Database,
    key: FleetKey,
    lease: LeaseConfig,
    listener: ListenerConfig,
    core: Option<Arc<PullkinCore>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    info: WorkerInfo,
    migrate: bool,
    handle: WorkerHandle,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.info.id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// An identity this worker listens for.
struct Running {
    name: String,
    epoch: i64,
    /// Moves the identity's messages into the store's pending list.
    consumer: JoinHandle<()>,
}

impl Worker {
    /// A builder for a worker on `database`, opening credentials with `key`.
    pub fn builder(database: &Database, key: FleetKey) -> WorkerBuilder {
        WorkerBuilder {
            database: database.clone(),
            key,
            lease: LeaseConfig::default(),
            listener: ListenerConfig::default(),
            core: None,
            tls: None,
            id: None,
            migrate: true,
        }
    }

    /// The worker's id, as `pullkin.workers` and the leases name it.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The way into this worker while it runs: its events, a probe.
    #[must_use]
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// Runs until `shutdown` completes, then hands every identity off (stop, flush,
    /// release) and removes its worker row. Fails at the start when the schema is not
    /// this build's (or cannot be migrated) or the listener cannot be built; after
    /// that, database failures are logged and retried, never fatal.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), FleetError> {
        if self.migrate {
            schema::migrate(&self.database).await?;
        } else {
            schema::check_schema(&self.database).await?;
        }
        let leases = Leases::new(
            self.database.clone(),
            self.info.clone(),
            self.lease.ttl,
            self.key.id(),
        );
        leases.register().await?;
        let (store, fenced) = FleetStore::new(
            self.database.clone(),
            self.key.clone(),
            self.info.id.clone(),
        );
        let mut builder = Pullkin::builder()
            .config(self.listener.clone())
            .store(Arc::new(store.clone()));
        if let Some(core) = &self.core {
            builder = builder.core(Arc::clone(core));
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls(Arc::clone(tls));
        }
        let pullkin = builder.build()?;
        let events = pullkin.events();
        info!(worker = %self.info.id, "worker started");
        let mut turn = Turns {
            database: self.database.clone(),
            key: self.key.clone(),
            leases,
            store,
            pullkin,
            policy: LeasePolicy::new(self.lease.clone()),
            running: HashMap::new(),
            names: HashMap::new(),
            unstartable: HashMap::new(),
            dirty: HashSet::new(),
            states_written_at: None,
            handle: self.handle.clone(),
        };
        let span = tracing::info_span!("worker", id = %self.info.id);
        turn.run(shutdown, fenced, events).instrument(span).await;
        Ok(())
    }
}

/// The worker's state while it runs.
struct Turns {
    database: Database,
    key: FleetKey,
    leases: Leases,
    store: FleetStore,
    pullkin: Pullkin,
    policy: LeasePolicy,
    running: HashMap<i64, Running>,
    /// Identity by name, for the listener's events.
    names: HashMap<String, i64>,
    /// Identities this worker claimed but could not start (credentials that do not
    /// open or parse, a listener that failed for good), and until when this worker
    /// leaves them to others.
    unstartable: HashMap<i64, Instant>,
    /// Identities whose connection state changed since it was last written.
    dirty: HashSet<i64>,
    states_written_at: Option<Instant>,
    /// Where the events go on to, and the probe requests come from.
    handle: WorkerHandle,
}

impl Turns {
    async fn run(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
        mut fenced: tokio::sync::mpsc::UnboundedReceiver<crate::store::FencedIdentity>,
        mut events: broadcast::Receiver<Event>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let probe = Arc::clone(&self.handle.probe);
        loop {
            self.turn().await;
            let timeout = self.poll_timeout();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(refused) = fenced.recv() => {
                    let mut refused = vec![refused];
                    while let Ok(more) = fenced.try_recv() {
                        refused.push(more);
                    }
                    let stale: Vec<i64> = refused
                        .into_iter()
                        .filter(|r| self.running.get(&r.identity).is_some_and(|run| run.epoch == r.epoch))
                        .map(|r| r.identity)
                        .collect();
                    if !stale.is_empty() {
                        warn!(identities = stale.len(), "leases moved on: dropping the identities");
                        self.drop_identities(stale).await;
                    }
                }
                event = events.recv() => {
                    if let Ok(event) = &event {
                        // Nobody listening is no error.
                        let _ = self.handle.events.send(event.clone());
                    }
                    self.handle_event(event).await;
                }
                () = probe.notified() => self.pullkin.probe(),
                () = sleep_until(timeout) => {}
            }
        }
        self.shut_down().await;
    }

    /// One turn of the loop: self-fence, renew, balance, record states.
    async fn turn(&mut self) {
        let now = Instant::now();
        let expired = self.policy.poll_expired(now);
        if !expired.is_empty() {
            let identities = expired.len();
            warn!(
                identities,
                "could not renew the leases in time: stopping their connections"
            );
            let started = Instant::now();
            self.drop_identities(expired).await;
            warn!(
                identities,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "self-fenced: every connection stopped"
            );
        }
        if self.policy.renewal_due(now) {
            self.renew().await;
        }
        let now = Instant::now();
        if self.policy.balance_due(now) {
            self.balance(now).await;
        }
        let since = self.states_written_at.map(|at| at.elapsed());
        if since.is_none_or(|since| since >= self.policy.config().renew_every) {
            self.dirty.extend(self.running.keys().copied());
        }
        if !self.dirty.is_empty() && since.is_none_or(|since| since >= STATES_EVERY) {
            self.write_states().await;
        }
    }

    /// When the loop must wake next: the policy's deadline, or the next write of
    /// changed connection states.
    fn poll_timeout(&self) -> Option<Instant> {
        let policy = self.policy.poll_timeout();
        let states = (!self.dirty.is_empty())
            .then(|| self.states_written_at.map(|at| at + STATES_EVERY))
            .flatten();
        match (policy, states) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn renew(&mut self) {
        let sent = Instant::now();
        match self.leases.renew().await {
            Ok(found) => {
                let found: Vec<(i64, i64)> = found.iter().map(|l| (l.identity, l.epoch)).collect();
                let renewed = self.policy.handle_renewed(sent, &found);
                let mut release: Vec<Lease> = renewed
                    .stray
                    .iter()
                    .map(|&(identity, epoch)| Lease { identity, epoch })
                    .collect();
                if !renewed.lost.is_empty() {
                    for &identity in &renewed.lost {
                        warn!(identity, "lease lost (taken over, disabled or removed)");
                        if let Some(running) = self.running.get(&identity) {
                            release.push(Lease {
                                identity,
                                epoch: running.epoch,
                            });
                        }
                    }
                    self.drop_identities(renewed.lost).await;
                }
                if !release.is_empty() {
                    // Frees a disabled identity's lease; does nothing to a new holder's.
                    let _ = self.leases.release_many(&release).await;
                }
            }
            Err(error) => {
                warn!("cannot renew the leases: {error}");
                self.policy.handle_renew_failed(Instant::now());
            }
        }
    }

    async fn balance(&mut self, now: Instant) {
        let observed = match self.leases.observe().await {
            Ok(observed) => observed,
            Err(error) => {
                debug!("cannot read the fleet's counts: {error}");
                // Balanced again at the next interval.
                self.policy.balance(now, &crate::lease::Observed::default());
                return;
            }
        };
        match self.policy.balance(now, &observed) {
            Balance::Claim(n) => self.claim(n).await,
            Balance::Release(n) => {
                // The newest holdings go first: the oldest connections stay put.
                let mut held: Vec<(i64, i64)> = self.policy.held().collect();
                held.sort_by_key(|(identity, _)| std::cmp::Reverse(*identity));
                let identities: Vec<i64> = held
                    .into_iter()
                    .take(n)
                    .map(|(identity, _)| identity)
                    .collect();
                info!(
                    identities = identities.len(),
                    "handing off for a fair share"
                );
                self.hand_off(identities).await;
            }
            Balance::Steady => {}
        }
    }

    async fn claim(&mut self, n: usize) {
        let now = Instant::now();
        self.unstartable.retain(|_, until| *until > now);
        let exclude: Vec<i64> = self.unstartable.keys().copied().collect();
        let sent = Instant::now();
        let claimed = match self.leases.claim_excluding(n, &exclude).await {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!("cannot claim leases: {error}");
                return;
            }
        };
        if claimed.is_empty() {
            return;
        }
        let pairs: Vec<(i64, i64)> = claimed.iter().map(|l| (l.identity, l.epoch)).collect();
        self.policy.handle_claimed(sent, &pairs);
        if let Err(error) = self.start(&claimed).await {
            warn!("cannot start the claimed identities: {error}");
            for lease in claimed {
                self.policy.handle_released(lease.identity);
                let _ = self.leases.release(lease).await;
            }
        }
    }

    /// Opens the claimed identities' credentials and starts listening for each.
    async fn start(&mut self, claimed: &[Lease]) -> Result<(), FleetError> {
        let ids: Vec<i64> = claimed.iter().map(|l| l.identity).collect();
        let client = self.database.client().await?;
        let rows = client
            .query(
                "SELECT id, name, credentials, nonce FROM pullkin.identities WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db)?;
        drop(client);
        let mut found = HashSet::new();
        for row in rows {
            let identity: i64 = row.get(0);
            let name: String = row.get(1);
            found.insert(identity);
            let Some(lease) = claimed.iter().find(|l| l.identity == identity).copied() else {
                continue;
            };
            let credentials = match open_credentials(&self.key, identity, row.get(2), row.get(3)) {
                Ok(credentials) => credentials,
                Err(error) => {
                    warn!(identity, %name, "cannot start: {error}");
                    self.give_up_start(lease).await;
                    continue;
                }
            };
            self.store.hold(&name, identity, lease.epoch);
            if let Err(error) = self.pullkin.add_app(&name, &credentials, []) {
                warn!(identity, %name, "cannot start: {error}");
                self.store.forget(&name);
                self.give_up_start(lease).await;
                continue;
            }
            let stream = match self.pullkin.listen(&name) {
                Ok(stream) => stream,
                Err(error) => {
                    warn!(identity, %name, "cannot listen: {error}");
                    self.pullkin.stop(&name).await;
                    self.store.forget(&name);
                    self.give_up_start(lease).await;
                    continue;
                }
            };
            let consumer = tokio::spawn(consume(self.store.clone(), name.clone(), stream));
            info!(identity, %name, epoch = lease.epoch, "holding");
            self.names.insert(name.clone(), identity);
            self.running.insert(
                identity,
                Running {
                    name,
                    epoch: lease.epoch,
                    consumer,
                },
            );
            self.dirty.insert(identity);
        }
        // Removed between the claim and the read.
        for lease in claimed.iter().filter(|l| !found.contains(&l.identity)) {
            self.policy.handle_released(lease.identity);
        }
        Ok(())
    }

    async fn give_up_start(&mut self, lease: Lease) {
        self.unstartable
            .insert(lease.identity, Instant::now() + UNSTARTABLE_FOR);
        self.policy.handle_released(lease.identity);
        let _ = self.leases.release(lease).await;
    }

    /// Stops identities whose leases are (or may be) no longer this worker's: first
    /// their writes are refused, all of them, without asking the database; then their
    /// listeners are stopped together. Nothing is released.
    async fn drop_identities(&mut self, identities: Vec<i64>) {
        let mut stopping = Vec::with_capacity(identities.len());
        for identity in identities {
            self.policy.handle_released(identity);
            self.dirty.remove(&identity);
            if let Some(running) = self.running.remove(&identity) {
                self.names.remove(&running.name);
                self.store.refuse(&running.name);
                stopping.push(running);
            }
        }
        // Each stop cancels its listener when first polled: join_all polls them all
        // before any is awaited to its end.
        futures_util::future::join_all(stopping.iter().map(|running| self.stop_listener(running)))
            .await;
        for running in &stopping {
            self.store.forget(&running.name);
        }
    }

    /// Graceful hand-offs: stop each listener (it stores and acknowledges what the
    /// application took), flush what is pending, then record the states and release
    /// the leases, each in one statement. Runs [`HAND_OFFS_AT_ONCE`] at a time.
    async fn hand_off(&mut self, identities: Vec<i64>) {
        let mut stopping = Vec::with_capacity(identities.len());
        for identity in identities {
            self.dirty.remove(&identity);
            match self.running.remove(&identity) {
                Some(running) => {
                    self.names.remove(&running.name);
                    stopping.push((identity, running));
                }
                None => self.policy.handle_released(identity),
            }
        }
        let this = &*self;
        futures_util::stream::iter(&stopping)
            .for_each_concurrent(HAND_OFFS_AT_ONCE, |(identity, running)| async move {
                this.stop_listener(running).await;
                if let Err(error) = this.store.flush(&running.name).await {
                    warn!(identity, "flushing before the hand-off failed: {error}");
                }
                this.store.forget(&running.name);
            })
            .await;
        if stopping.is_empty() {
            return;
        }
        let ids: Vec<i64> = stopping.iter().map(|(identity, _)| *identity).collect();
        let released = vec!["released".to_owned(); ids.len()];
        if let Err(error) = self
            .upsert_states(
                &ids,
                &released,
                &vec![None; ids.len()],
                &vec![None; ids.len()],
            )
            .await
        {
            debug!("cannot record the connection states: {error}");
        }
        let leases: Vec<Lease> = stopping
            .iter()
            .map(|(identity, running)| Lease {
                identity: *identity,
                epoch: running.epoch,
            })
            .collect();
        if let Err(error) = self.leases.release_many(&leases).await {
            warn!(
                identities = leases.len(),
                "cannot release the leases (they will expire): {error}"
            );
        }
        for identity in ids {
            self.policy.handle_released(identity);
        }
    }

    async fn stop_listener(&self, running: &Running) {
        if tokio::time::timeout(STOP_TIMEOUT, self.pullkin.stop(&running.name))
            .await
            .is_err()
        {
            warn!(name = %running.name, "the listener did not stop in time");
        }
        // The stream ended with the listener: the consumer has pushed everything.
        let consumer = &running.consumer;
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while !consumer.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        consumer.abort();
    }

    async fn handle_event(&mut self, event: Result<Event, broadcast::error::RecvError>) {
        match event {
            Ok(Event::State { app, .. }) => {
                if let Some(identity) = self.names.get(&app) {
                    self.dirty.insert(*identity);
                }
            }
            Ok(Event::Failed { app, error }) => {
                if let Some(&identity) = self.names.get(&app) {
                    warn!(
                        identity,
                        "the listener stopped for good ({error}): handing off"
                    );
                    self.hand_off(vec![identity]).await;
                    self.unstartable
                        .insert(identity, Instant::now() + UNSTARTABLE_FOR);
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.dirty.extend(self.running.keys().copied());
            }
            // The listener is gone: only at shutdown.
            Err(broadcast::error::RecvError::Closed) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Writes the connection state of the dirty identities, in one statement.
    async fn write_states(&mut self) {
        let mut ids = Vec::new();
        let mut states = Vec::new();
        let mut details = Vec::new();
        let mut frames: Vec<Option<SystemTime>> = Vec::new();
        for identity in self.dirty.drain() {
            let Some(running) = self.running.get(&identity) else {
                continue;
            };
            let Some(health) = self.pullkin.health(&running.name) else {
                continue;
            };
            let health = health.borrow().clone();
            let (state, detail) = describe(&health.state);
            ids.push(identity);
            states.push(state);
            details.push(detail);
            frames.push(health.last_frame_at);
        }
        self.states_written_at = Some(Instant::now());
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.upsert_states(&ids, &states, &details, &frames).await {
            debug!("cannot record connection states: {error}");
        }
    }

    async fn upsert_states(
        &self,
        ids: &[i64],
        states: &[String],
        details: &[Option<String>],
        frames: &[Option<SystemTime>],
    ) -> Result<(), FleetError> {
        let client = self.database.client().await?;
        client
            .execute(
                "INSERT INTO pullkin.connection_state
                     (identity_id, worker_id, state, detail, last_frame_at, updated_at)
                 SELECT u.id, $1, u.state, u.detail, u.frame, now()
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
                     AS u(id, state, detail, frame)
                 JOIN pullkin.leases l ON l.identity_id = u.id AND l.worker_id = $1
                 ON CONFLICT (identity_id) DO UPDATE SET worker_id = EXCLUDED.worker_id,
                     state = EXCLUDED.state, detail = EXCLUDED.detail,
                     last_frame_at = coalesce(EXCLUDED.last_frame_at,
                                              pullkin.connection_state.last_frame_at),
                     updated_at = now()",
                &[&self.leases.worker().id, &ids, &states, &details, &frames],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Hands every identity off, stops the listener, removes the worker's row.
    async fn shut_down(&mut self) {
        info!(
            held = self.running.len(),
            "shutting down: handing off every identity"
        );
        let held: Vec<i64> = self.running.keys().copied().collect();
        self.hand_off(held).await;
        self.pullkin.shutdown().await;
        if let Err(error) = self.leases.release_all().await {
            warn!("cannot release the leases (they will expire): {error}");
        }
        if let Err(error) = self.leases.deregister().await {
            warn!("cannot remove the worker's row: {error}");
        }
        info!("worker stopped");
    }
}

/// The state column and its detail for a connection state.
fn describe(state: &ConnectionState) -> (String, Option<String>) {
    match state {
        ConnectionState::Idle => ("idle".to_owned(), None),
        ConnectionState::Connecting { attempt } => {
            ("connecting".to_owned(), Some(format!("attempt {attempt}")))
        }
        ConnectionState::Connected { .. } => ("connected".to_owned(), None),
        ConnectionState::BackingOff {
            error, failures, ..
        } => (
            "backing-off".to_owned(),
            Some(format!("{failures} failures, last: {error}")),
        ),
        ConnectionState::Stopped { error } => (
            "stopped".to_owned(),
            error.as_ref().map(ToString::to_string),
        ),
        _ => ("unknown".to_owned(), None),
    }
}

/// Moves one identity's messages into the store's pending list: the row first, then
/// the `Incoming` is dropped (the listener counts it taken, and acknowledges it once a
/// store write that carries the row has returned).
async fn consume(
    store: FleetStore,
    name: String,
    stream: impl futures_util::Stream<Item = pullkin::Incoming> + Send,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(incoming) = stream.next().await {
        let row = NotificationRow::from_incoming(&incoming);
        let unkeyed = row.persistent_id.is_none();
        store.push(&name, row);
        drop(incoming);
        if unkeyed {
            // No ack write follows a message without a persistent id: flush it now.
            let store = store.clone();
            let name = name.clone();
            tokio::spawn(async move {
                if let Err(error) = store.flush(&name).await {
                    debug!(%name, "flush failed (retried with the next write): {error}");
                }
            });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => tokio::task::yield_now().await,
    }
}

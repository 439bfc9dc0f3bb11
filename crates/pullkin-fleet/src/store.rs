//! [`FleetStore`]: the `pullkin::Store` of a worker, on PostgreSQL, for the identities
//! it holds — fenced by their epochs, with group commit of messages and ack state.
//!
//! ## Exactly once into `notifications`
//!
//! The worker's consumer of each identity's stream does not write messages itself: it
//! puts each message's row into the identity's pending list here ([`FleetStore::push`])
//! and then drops the `Incoming`, which tells the listener the message was taken. The
//! listener acknowledges a taken message to the server only after a store write of an
//! ack state recording it returned ([`pullkin::Store::save_ack_state`]), and that write
//! is where the pending rows go: inserted (`ON CONFLICT (identity_id, persistent_id) DO
//! NOTHING`) in the same transaction as the new ack state. So:
//!
//! - a crash before the commit loses nothing: the message was not acknowledged, the
//!   server delivers it again (to whichever worker holds the identity next);
//! - a crash after the commit duplicates nothing: a redelivery finds its row and is a
//!   no-op;
//! - a failed commit (the database down) leaves the rows pending, in order, and fails
//!   the write; the listener then reconnects and retries, and the messages stay with the
//!   server meanwhile.
//!
//! ## Dedupe
//!
//! The unique key `(identity_id, persistent_id)` of `notifications` is what keeps a
//! message from being stored twice, whoever receives it again. So of the listener's ack
//! state only the ids the server has not confirmed yet are kept (a new holder names them
//! when it logs in, and the server does not send them again); the recent ids the
//! listener remembers to drop late duplicates stay in the worker's memory — rewriting
//! thousands of them with every write was most of the database's work. A late
//! duplicate after a takeover is inserted `ON CONFLICT DO NOTHING`: a no-op.
//!
//! Each unconfirmed id is kept with its arrival time (`received_ms`, Unix milliseconds,
//! parallel to `unconfirmed`; schema version 4), so that its age survives a takeover or a
//! restart and it expires on time (docs/protocol.md §7.3). A row written before has no
//! times: its ids count as arrived when they are loaded. A null id, or times that do not
//! match the ids or lie outside 1970 to 9999, make the load fail
//! ([`FleetError::CorruptAckState`]); a time outside that range is written as its nearest
//! end.
//!
//! ## Group commit
//!
//! Writes of every identity go to one committer task. It takes everything queued, does
//! it in one transaction, and answers each write: while one transaction runs, the next
//! batch gathers. The cost of a message is a row, not a round trip.
//!
//! ## Fencing
//!
//! Every write names the identity and the epoch this worker holds it at. The
//! transaction first reads those leases with `FOR KEY SHARE` (a lock a claim conflicts
//! with, a renewal does not): a lease that is no longer this worker's at that epoch
//! refuses its writes ([`FleetError::Fenced`], as `StoreError::Backend`), the others go
//! on. The worker is told ([`FleetStore::new`]'s receiver) and drops the identity; its
//! pending rows are discarded (they were not acknowledged: the new holder receives them).
//! A transaction left idle for 2 s (the worker frozen mid-commit) is ended by the server
//! (`idle_in_transaction_session_timeout`), so its locks never outlive a lease.
//!
//! ## Commit order
//!
//! Inserts of notifications take a transaction-scoped advisory lock first, so they
//! commit in the order of their `seq`. A consumer reading `seq > cursor` therefore never
//! skips a row that commits later with a smaller `seq`. The lock is held for the insert
//! and the commit only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use pullkin::session::{AckState, UnconfirmedId};
use pullkin::{AppCredentials, Incoming, Store, StoreError, StoreFuture};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tracing::{debug, warn};

use crate::crypto::FleetKey;
use crate::db::Database;
use crate::error::{FleetError, db, one_line};
use crate::identities::{open_credentials, seal_credentials};

/// The channel consumers `LISTEN` on; a commit that inserted rows notifies it.
pub const NOTIFY_CHANNEL: &str = "pullkin_notifications";

/// The advisory lock that orders inserts into `notifications` (`pullkin` + 1).
const INSERT_LOCK: i64 = 0x0070_756c_6c6b_696f;

/// At most this many writes go into one transaction.
const MAX_BATCH: usize = 512;

/// At most this many rows go into one `INSERT` statement (several are pipelined in one
/// transaction).
const ROWS_PER_STATEMENT: usize = 500;

/// The arrival time of `id` in Unix milliseconds, as a row holds it (the range of
/// [`UnconfirmedId::received_unix_ms`] fits a `bigint`).
fn unix_ms(id: &UnconfirmedId) -> i64 {
    i64::try_from(id.received_unix_ms()).unwrap_or(i64::MAX)
}

/// The unconfirmed ids of a row, with their times (`None`: a row from before the times
/// were kept; a null time: not known either); unknown times are `loaded_at`.
fn unconfirmed_of(
    ids: Vec<Option<String>>,
    times: Option<Vec<Option<i64>>>,
    loaded_at: SystemTime,
) -> Result<Vec<UnconfirmedId>, String> {
    if let Some(times) = &times
        && times.len() != ids.len()
    {
        return Err(format!(
            "{} arrival times for {} unconfirmed ids",
            times.len(),
            ids.len()
        ));
    }
    let mut times = times.into_iter().flatten();
    ids.into_iter()
        .map(|id| {
            let id = id.ok_or("a null unconfirmed id")?;
            match times.next().flatten() {
                None => Ok(UnconfirmedId::new(id, loaded_at)),
                Some(ms) => u64::try_from(ms)
                    .ok()
                    .and_then(|ms| UnconfirmedId::from_unix_ms(id, ms))
                    .ok_or_else(|| format!("the arrival time {ms} ms is out of range")),
            }
        })
        .collect()
}

/// The rows of one `INSERT`, column by column (the `unnest` arrays).
struct Columns<'a> {
    identity_ids: Vec<i64>,
    persistent_ids: Vec<Option<&'a str>>,
    received: Vec<SystemTime>,
    sent: Vec<Option<SystemTime>>,
    senders: Vec<Option<&'a str>>,
    encodings: Vec<Option<&'a str>>,
    data: Vec<&'a Value>,
    notifications: Vec<Option<&'a Value>>,
    payloads: Vec<Option<&'a [u8]>>,
    lines: Vec<&'a Value>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[(i64, &'a NotificationRow)]) -> Self {
        let mut columns = Self {
            identity_ids: Vec::with_capacity(rows.len()),
            persistent_ids: Vec::with_capacity(rows.len()),
            received: Vec::with_capacity(rows.len()),
            sent: Vec::with_capacity(rows.len()),
            senders: Vec::with_capacity(rows.len()),
            encodings: Vec::with_capacity(rows.len()),
            data: Vec::with_capacity(rows.len()),
            notifications: Vec::with_capacity(rows.len()),
            payloads: Vec::with_capacity(rows.len()),
            lines: Vec::with_capacity(rows.len()),
        };
        for &(identity, row) in rows {
            columns.identity_ids.push(identity);
            columns.persistent_ids.push(row.persistent_id.as_deref());
            columns.received.push(row.received_at);
            columns.sent.push(row.sent_at);
            columns.senders.push(row.sender.as_deref());
            columns.encodings.push(row.encoding.as_deref());
            columns.data.push(&row.data);
            columns.notifications.push(row.notification.as_ref());
            columns.payloads.push(row.payload.as_deref());
            columns.lines.push(&row.line);
        }
        columns
    }
}

/// A received message on its way into `pullkin.notifications`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NotificationRow {
    /// The MCS persistent id (the unique key with the identity).
    pub persistent_id: Option<String>,
    /// When the worker received it.
    pub received_at: SystemTime,
    /// When the server says it was sent.
    pub sent_at: Option<SystemTime>,
    /// The sender (`from`).
    pub sender: Option<String>,
    /// `aesgcm` or `aes128gcm` when it was encrypted.
    pub encoding: Option<String>,
    /// The data pairs, as a JSON object.
    pub data: Value,
    /// The notification object, if any.
    pub notification: Option<Value>,
    /// The payload bytes, if any.
    pub payload: Option<Vec<u8>>,
    /// The JSON line of `pullkin listen` (`Incoming::to_json`).
    pub line: Value,
}

impl NotificationRow {
    /// A row with these fields and no others (sender, encoding, notification, payload
    /// and sending time unset): for tools and tests that store messages of their own.
    #[must_use]
    pub fn new(
        persistent_id: Option<String>,
        received_at: SystemTime,
        data: Value,
        line: Value,
    ) -> Self {
        Self {
            persistent_id,
            received_at,
            sent_at: None,
            sender: None,
            encoding: None,
            data,
            notification: None,
            payload: None,
            line,
        }
    }

    /// The row of a received message.
    #[must_use]
    pub fn from_incoming(incoming: &Incoming) -> Self {
        let message = &incoming.message;
        Self {
            persistent_id: message.persistent_id.clone(),
            received_at: SystemTime::now(),
            sent_at: message.sent,
            sender: message
                .sender_id
                .clone()
                .or_else(|| Some(incoming.stanza.sender().to_owned()).filter(|s| !s.is_empty())),
            encoding: message.encoding.map(|e| e.as_str().to_owned()),
            data: Value::Object(
                message
                    .data
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
            notification: message
                .notification
                .as_ref()
                .map(|n| Value::Object(n.fields.clone().into_iter().collect())),
            payload: (!message.payload.is_empty()).then(|| message.payload.to_vec()),
            line: incoming.to_json(),
        }
    }
}

/// An identity whose lease moved on: its writes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FencedIdentity {
    /// The identity's name (the listener's app name).
    pub name: String,
    /// Its id.
    pub identity: i64,
    /// The epoch the refused write carried.
    pub epoch: i64,
}

/// How many transactions the committer made, and what went into them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Writes (ack states and flushes) they carried.
    pub writes: u64,
    /// Notification rows they carried (inserted or found there already).
    pub rows: u64,
}

/// One identity held by this worker.
#[derive(Debug)]
struct Held {
    identity: i64,
    epoch: i64,
    pending: Vec<NotificationRow>,
    /// Persistent ids in `pending`, so a redelivery while pending is not queued twice.
    pending_ids: HashSet<String>,
    /// Writes are refused from now on (fenced, or self-fenced).
    refused: bool,
}

/// One write for the committer.
struct Job {
    identity: i64,
    epoch: i64,
    rows: Vec<NotificationRow>,
    ack: Option<AckState>,
    reply: oneshot::Sender<Outcome>,
}

enum Outcome {
    Committed,
    Fenced,
    /// The transaction failed; the rows come back to be pending again.
    Failed {
        unreachable: bool,
        reason: String,
        rows: Vec<NotificationRow>,
    },
}

struct Inner {
    database: Database,
    key: FleetKey,
    worker_id: String,
    held: Mutex<HashMap<String, Held>>,
    committer: mpsc::UnboundedSender<Job>,
    fenced: mpsc::UnboundedSender<FencedIdentity>,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    transactions: AtomicU64,
    writes: AtomicU64,
    rows: AtomicU64,
}

/// The store of one worker's identities; see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct FleetStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetStore")
            .field("worker", &self.inner.worker_id)
            .field("held", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl FleetStore {
    /// A store for worker `worker_id`, and the receiver of the identities whose writes
    /// were refused (drop them). Starts the committer task: call inside a tokio runtime.
    #[must_use]
    pub fn new(
        database: Database,
        key: FleetKey,
        worker_id: String,
    ) -> (Self, mpsc::UnboundedReceiver<FencedIdentity>) {
        let (committer, jobs) = mpsc::unbounded_channel();
        let (fenced, fenced_receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(commit_loop(
            database.clone(),
            worker_id.clone(),
            jobs,
            Arc::clone(&stats),
        ));
        let store = Self {
            inner: Arc::new(Inner {
                database,
                key,
                worker_id,
                held: Mutex::new(HashMap::new()),
                committer,
                fenced,
                stats,
            }),
        };
        (store, fenced_receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // Every critical section is a few map operations: a poisoned map is consistent.
        self.inner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker's id.
    #[must_use]
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Starts storing for identity `identity` (named `name`), held at `epoch`.
    pub fn hold(&self, name: &str, identity: i64, epoch: i64) {
        self.lock().insert(
            name.to_owned(),
            Held {
                identity,
                epoch,
                pending: Vec::new(),
                pending_ids: HashSet::new(),
                refused: false,
            },
        );
    }

    /// Refuses every further write for the identity at once, without asking the
    /// database (self-fencing: its lease may expire before a write could finish), and
    /// discards its pending rows (they were not acknowledged).
    pub fn refuse(&self, name: &str) {
        if let Some(held) = self.lock().get_mut(name) {
            held.refused = true;
            held.pending.clear();
            held.pending_ids.clear();
        }
    }

    /// Forgets the identity (after its listener stopped).
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The epoch an identity is held at here, if held and not refused.
    #[must_use]
    pub fn epoch(&self, name: &str) -> Option<i64> {
        self.lock()
            .get(name)
            .filter(|held| !held.refused)
            .map(|held| held.epoch)
    }

    /// Queues a received message's row for the identity's next write; returns false
    /// when the identity is not held (or refused), or the message is pending already.
    pub fn push(&self, name: &str, row: NotificationRow) -> bool {
        let mut held = self.lock();
        let Some(held) = held.get_mut(name).filter(|held| !held.refused) else {
            return false;
        };
        if let Some(id) = &row.persistent_id
            && !held.pending_ids.insert(id.clone())
        {
            return false;
        }
        held.pending.push(row);
        true
    }

    /// How many rows wait for the identity's next write.
    #[must_use]
    pub fn pending(&self, name: &str) -> usize {
        self.lock().get(name).map_or(0, |held| held.pending.len())
    }

    /// Commits the identity's pending rows now, without an ack state (messages without
    /// a persistent id trigger no ack write; a hand-off flushes before releasing).
    pub async fn flush(&self, name: &str) -> Result<(), FleetError> {
        self.write(name, None).await
    }

    /// What the committer did so far.
    #[must_use]
    pub fn stats(&self) -> CommitStats {
        let stats = &self.inner.stats;
        CommitStats {
            transactions: stats.transactions.load(Ordering::Relaxed),
            writes: stats.writes.load(Ordering::Relaxed),
            rows: stats.rows.load(Ordering::Relaxed),
        }
    }

    /// The identity and epoch of a held, unrefused identity.
    fn holding(&self, name: &str) -> Result<(i64, i64), FleetError> {
        match self.lock().get(name) {
            Some(held) if held.refused => Err(FleetError::Fenced {
                identity: held.identity,
                epoch: held.epoch,
            }),
            Some(held) => Ok((held.identity, held.epoch)),
            None => Err(FleetError::UnknownIdentity(name.to_owned())),
        }
    }

    /// One write through the committer: the pending rows, and the ack state if any.
    async fn write(&self, name: &str, ack: Option<AckState>) -> Result<(), FleetError> {
        let (identity, epoch, rows) = {
            let mut held = self.lock();
            match held.get_mut(name) {
                Some(held) if held.refused => {
                    return Err(FleetError::Fenced {
                        identity: held.identity,
                        epoch: held.epoch,
                    });
                }
                Some(held) => {
                    held.pending_ids.clear();
                    (held.identity, held.epoch, std::mem::take(&mut held.pending))
                }
                None => return Err(FleetError::UnknownIdentity(name.to_owned())),
            }
        };
        if rows.is_empty() && ack.is_none() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            identity,
            epoch,
            rows,
            ack,
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = self.inner.committer.send(job) {
            self.restore(name, epoch, job.rows);
            return Err(FleetError::ShuttingDown);
        }
        match answer.await {
            Ok(Outcome::Committed) => Ok(()),
            Ok(Outcome::Fenced) => {
                self.fence(name, identity, epoch);
                Err(FleetError::Fenced { identity, epoch })
            }
            Ok(Outcome::Failed {
                unreachable,
                reason,
                rows,
            }) => {
                self.restore(name, epoch, rows);
                Err(if unreachable {
                    FleetError::Unreachable { reason }
                } else {
                    FleetError::Commit { reason }
                })
            }
            // The committer dropped the job: only when the runtime shuts down.
            Err(_) => Err(FleetError::ShuttingDown),
        }
    }

    /// Puts rows of a failed write back in front of the ones pending since.
    fn restore(&self, name: &str, epoch: i64, rows: Vec<NotificationRow>) {
        let mut held = self.lock();
        let Some(held) = held
            .get_mut(name)
            .filter(|held| held.epoch == epoch && !held.refused)
        else {
            return;
        };
        let mut seen = HashSet::new();
        let restored: Vec<NotificationRow> = rows
            .into_iter()
            .chain(std::mem::take(&mut held.pending))
            .filter(|row| {
                row.persistent_id
                    .as_ref()
                    .is_none_or(|id| seen.insert(id.clone()))
            })
            .collect();
        held.pending_ids = seen;
        held.pending = restored;
    }

    /// Marks the identity refused and tells the worker.
    fn fence(&self, name: &str, identity: i64, epoch: i64) {
        let newly = {
            let mut held = self.lock();
            match held.get_mut(name) {
                Some(held) if held.epoch == epoch => {
                    let newly = !held.refused;
                    held.refused = true;
                    held.pending.clear();
                    held.pending_ids.clear();
                    newly
                }
                _ => false,
            }
        };
        if newly {
            warn!(
                identity,
                epoch, "the lease moved on: writes refused, dropping the identity"
            );
            let _ = self.inner.fenced.send(FencedIdentity {
                name: name.to_owned(),
                identity,
                epoch,
            });
        }
    }

    async fn load_ack(&self, name: &str) -> Result<AckState, FleetError> {
        let (identity, _) = self.holding(name)?;
        let client = self.inner.database.client().await?;
        let row = client
            .query_opt(
                "SELECT unconfirmed, received_ms FROM pullkin.ack_state WHERE identity_id = $1",
                &[&identity],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(AckState::default());
        };
        let corrupt = |reason: String| FleetError::CorruptAckState { identity, reason };
        let ids: Vec<Option<String>> = row.try_get(0).map_err(|e| corrupt(one_line(&e)))?;
        let times: Option<Vec<Option<i64>>> = row.try_get(1).map_err(|e| corrupt(one_line(&e)))?;
        Ok(AckState {
            unconfirmed: unconfirmed_of(ids, times, SystemTime::now()).map_err(corrupt)?,
            // Not kept: see the module docs (Dedupe).
            recent: Vec::new(),
        })
    }

    async fn load_sealed(&self, name: &str) -> Result<Option<AppCredentials>, FleetError> {
        let (identity, _) = self.holding(name)?;
        let client = self.inner.database.client().await?;
        let row = client
            .query_opt(
                "SELECT credentials, nonce FROM pullkin.identities WHERE id = $1",
                &[&identity],
            )
            .await
            .map_err(db)?;
        row.map(|row| open_credentials(&self.inner.key, identity, row.get(0), row.get(1)))
            .transpose()
    }

    async fn save_sealed(
        &self,
        name: &str,
        credentials: &AppCredentials,
    ) -> Result<(), FleetError> {
        let (identity, epoch) = self.holding(name)?;
        let (sealed, nonce) = seal_credentials(&self.inner.key, identity, credentials)?;
        let client = self.inner.database.client().await?;
        let updated = client
            .execute(
                "UPDATE pullkin.identities SET credentials = $2, nonce = $3, key_id = $4
                 WHERE id = $1 AND EXISTS (
                     SELECT 1 FROM pullkin.leases
                     WHERE identity_id = $1 AND worker_id = $5 AND epoch = $6)",
                &[
                    &identity,
                    &sealed,
                    &nonce,
                    &self.inner.key.id(),
                    &self.inner.worker_id,
                    &epoch,
                ],
            )
            .await
            .map_err(db)?;
        if updated == 0 {
            self.fence(name, identity, epoch);
            return Err(FleetError::Fenced { identity, epoch });
        }
        Ok(())
    }
}

fn backend(error: FleetError) -> StoreError {
    StoreError::Backend(Box::new(error))
}

impl Store for FleetStore {
    fn load_ack_state<'a>(&'a self, app: &'a str) -> StoreFuture<'a, AckState> {
        Box::pin(async move { self.load_ack(app).await.map_err(backend) })
    }

    fn save_ack_state<'a>(&'a self, app: &'a str, state: AckState) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.write(app, Some(state)).await.map_err(backend) })
    }

    fn load_credentials<'a>(&'a self, app: &'a str) -> StoreFuture<'a, Option<AppCredentials>> {
        Box::pin(async move { self.load_sealed(app).await.map_err(backend) })
    }

    fn save_credentials<'a>(
        &'a self,
        app: &'a str,
        credentials: &'a AppCredentials,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.save_sealed(app, credentials).await.map_err(backend) })
    }
}

/// The committer: one transaction per batch of queued writes, until every store handle
/// is gone.
async fn commit_loop(
    database: Database,
    worker_id: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    stats: Arc<Stats>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&database, &worker_id, batch, &stats).await;
    }
}

/// Commits one batch and answers each of its writes.
async fn commit_batch(database: &Database, worker_id: &str, batch: Vec<Job>, stats: &Stats) {
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match transact(database, worker_id, &batch).await {
            // A deadlock or serialization failure is the database's way to say "again".
            Err(FleetError::Database(e))
                if attempt < 3
                    && matches!(
                        e.code(),
                        Some(&SqlState::T_R_DEADLOCK_DETECTED)
                            | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                    ) =>
            {
                debug!("group commit retried: {e}");
            }
            other => break other,
        }
    };
    match result {
        Ok(fenced) => {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            for job in batch {
                let outcome = if fenced.contains(&job.identity) {
                    Outcome::Fenced
                } else {
                    stats.writes.fetch_add(1, Ordering::Relaxed);
                    stats
                        .rows
                        .fetch_add(job.rows.len() as u64, Ordering::Relaxed);
                    Outcome::Committed
                };
                let _ = job.reply.send(outcome);
            }
        }
        Err(error) => {
            let unreachable = error.is_unreachable();
            let reason = match &error {
                FleetError::Unreachable { reason } => reason.clone(),
                other => one_line(other),
            };
            warn!("group commit of {} writes failed: {reason}", batch.len());
            for job in batch {
                let _ = job.reply.send(Outcome::Failed {
                    unreachable,
                    reason: reason.clone(),
                    rows: job.rows,
                });
            }
        }
    }
}

/// The transaction of one batch; returns the identities whose writes were refused.
async fn transact(
    database: &Database,
    worker_id: &str,
    batch: &[Job],
) -> Result<HashSet<i64>, FleetError> {
    let mut client = database.client().await?;
    let transaction = client.transaction().await.map_err(db)?;
    // A worker frozen in the middle of this transaction (stopped, swapped out) would
    // keep its leases locked and delay their takeover past their expiry: the server
    // ends such a transaction after a while without a statement. A healthy batch sends
    // its statements back to back.
    transaction
        .batch_execute("SET LOCAL idle_in_transaction_session_timeout = '2s'")
        .await
        .map_err(db)?;
    let identities: Vec<i64> = batch.iter().map(|job| job.identity).collect();
    let rows = transaction
        .query(
            "SELECT identity_id, epoch FROM pullkin.leases
             WHERE worker_id = $1 AND identity_id = ANY($2)
             FOR KEY SHARE",
            &[&worker_id, &identities],
        )
        .await
        .map_err(db)?;
    let leases: HashMap<i64, i64> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let fenced: HashSet<i64> = batch
        .iter()
        .filter(|job| leases.get(&job.identity) != Some(&job.epoch))
        .map(|job| job.identity)
        .collect();
    let live = || batch.iter().filter(|job| !fenced.contains(&job.identity));

    // The newest ack state per identity (the jobs of one identity are queued in order).
    let mut acks: HashMap<i64, (&AckState, i64)> = HashMap::new();
    for job in live() {
        if let Some(ack) = &job.ack {
            acks.insert(job.identity, (ack, job.epoch));
        }
    }
    let upserts = acks.iter().map(|(identity, (ack, epoch))| {
        let unconfirmed: Vec<&str> = ack.unconfirmed.iter().map(|u| &*u.id).collect();
        let received: Vec<i64> = ack.unconfirmed.iter().map(unix_ms).collect();
        let transaction = &transaction;
        async move {
            transaction
                .execute(
                    "INSERT INTO pullkin.ack_state (identity_id, unconfirmed, received_ms, epoch)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (identity_id) DO UPDATE
                     SET unconfirmed = EXCLUDED.unconfirmed,
                         received_ms = EXCLUDED.received_ms,
                         epoch = EXCLUDED.epoch, updated_at = now()
                     WHERE pullkin.ack_state.epoch <= EXCLUDED.epoch",
                    &[identity, &unconfirmed, &received, epoch],
                )
                .await
        }
    });
    // Pipelined on the one connection.
    futures_util::future::try_join_all(upserts)
        .await
        .map_err(db)?;

    let rows: Vec<(i64, &NotificationRow)> = live()
        .flat_map(|job| job.rows.iter().map(move |row| (job.identity, row)))
        .collect();
    if !rows.is_empty() {
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&INSERT_LOCK])
            .await
            .map_err(db)?;
        // Prepared once per connection (deadpool's statement cache): no parse per batch.
        let insert = transaction
            .prepare_cached(
                "INSERT INTO pullkin.notifications
                     (identity_id, persistent_id, received_at, sent_at, sender, encoding,
                      data, notification, payload, line)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[],
                     $4::timestamptz[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[],
                     $9::bytea[], $10::json[])
                 ON CONFLICT (identity_id, persistent_id) DO NOTHING",
            )
            .await
            .map_err(db)?;
        // Statements of a bounded size, pipelined: one statement of all the rows made
        // the server allocate (and the kernel zero) tens of megabytes for its arrays.
        let statements = rows.chunks(ROWS_PER_STATEMENT).map(|chunk| {
            let columns = Columns::of(chunk);
            let transaction = &transaction;
            let insert = &insert;
            async move {
                transaction
                    .execute(
                        insert,
                        &[
                            &columns.identity_ids,
                            &columns.persistent_ids,
                            &columns.received,
                            &columns.sent,
                            &columns.senders,
                            &columns.encodings,
                            &columns.data,
                            &columns.notifications,
                            &columns.payloads,
                            &columns.lines,
                        ],
                    )
                    .await
            }
        });
        let inserted: u64 = futures_util::future::try_join_all(statements)
            .await
            .map_err(db)?
            .into_iter()
            .sum();
        if inserted > 0 {
            transaction
                .execute("SELECT pg_notify($1, '')", &[&NOTIFY_CHANNEL])
                .await
                .map_err(db)?;
        }
    }
    transaction.commit().await.map_err(db)?;
    Ok(fenced)
}

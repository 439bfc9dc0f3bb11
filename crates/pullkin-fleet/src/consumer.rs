//! Reading what the workers stored: [`Consumer`] (a durable cursor by name),
//! [`Follower`] (waits for new rows on `LISTEN pullkin_notifications`), and [`prune`].
//!
//! Rows are read in `seq` order, `seq > cursor`. The store commits inserts in `seq`
//! order (they take one advisory lock), so once a row is visible every row with a
//! smaller `seq` is too, and a cursor never jumps over one. A consumer processes a
//! batch, then commits the last `seq` it finished: after a crash it resumes after that,
//! so what it does with a row must tolerate seeing the row again (each row carries its
//! `(identity, persistent_id)` key for that).

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::db::Database;
use crate::error::{FleetError, db};
use crate::store::NOTIFY_CHANNEL;

/// A stored message, as a consumer reads it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredNotification {
    /// Its position; grows in commit order.
    pub seq: i64,
    /// The identity's id.
    pub identity_id: i64,
    /// The identity's name (`None` when it was removed since).
    pub identity: Option<String>,
    /// The MCS persistent id.
    pub persistent_id: Option<String>,
    /// When the worker received it.
    pub received_at: SystemTime,
    /// When the server says it was sent.
    pub sent_at: Option<SystemTime>,
    /// The sender.
    pub sender: Option<String>,
    /// `aesgcm` or `aes128gcm` when it was encrypted.
    pub encoding: Option<String>,
    /// The data pairs (a JSON object).
    pub data: Value,
    /// The notification object, if any.
    pub notification: Option<Value>,
    /// The payload bytes, if any.
    pub payload: Option<Vec<u8>>,
    /// The JSON line of `pullkin listen`, with its `app`.
    pub line: Value,
}

impl StoredNotification {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            seq: row.get(0),
            identity_id: row.get(1),
            identity: row.get(2),
            persistent_id: row.get(3),
            received_at: row.get(4),
            sent_at: row.get(5),
            sender: row.get(6),
            encoding: row.get(7),
            data: row.get(8),
            notification: row.get(9),
            payload: row.get(10),
            line: row.get(11),
        }
    }
}

/// A reader of the stored messages. A named consumer's cursor is durable
/// (`pullkin.consumers`): it resumes where it committed, and retention keeps what it
/// has not passed. A transient one ([`Consumer::transient`]) keeps its cursor in
/// memory only.
#[derive(Debug, Clone)]
pub struct Consumer {
    database: Database,
    /// `None`: transient.
    name: Option<String>,
    /// The last `seq` handed out.
    position: i64,
    /// The last `seq` committed.
    committed: i64,
}

impl Consumer {
    /// The consumer named `name`, created at the start (cursor 0) when new.
    pub async fn open(database: &Database, name: &str) -> Result<Self, FleetError> {
        let client = database.client().await?;
        client
            .execute(
                "INSERT INTO pullkin.consumers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await
            .map_err(db)?;
        let committed: i64 = client
            .query_one(
                "SELECT last_seq FROM pullkin.consumers WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .get(0);
        Ok(Self {
            database: database.clone(),
            name: Some(name.to_owned()),
            position: committed,
            committed,
        })
    }

    /// A consumer without a durable cursor, starting after the newest stored row
    /// (`tail` without `--consumer`); [`Consumer::seek`] starts it elsewhere.
    pub async fn transient(database: &Database) -> Result<Self, FleetError> {
        let latest = latest_seq(database).await?;
        Ok(Self {
            database: database.clone(),
            name: None,
            position: latest,
            committed: latest,
        })
    }

    /// The name, for a durable consumer.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The last `seq` handed out by [`Consumer::next_batch`] (or the cursor it started
    /// from).
    #[must_use]
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The last `seq` committed.
    #[must_use]
    pub fn committed(&self) -> i64 {
        self.committed
    }

    /// The next batch starts at `seq` (inclusive) instead (`--from SEQ`). Not durable
    /// until a commit.
    pub fn seek(&mut self, seq: i64) {
        self.position = seq.saturating_sub(1).max(0);
    }

    /// Up to `limit` rows after the position, in `seq` order; the position moves to the
    /// last one. An empty batch: nothing new yet.
    pub async fn next_batch(
        &mut self,
        limit: usize,
    ) -> Result<Vec<StoredNotification>, FleetError> {
        let client = self.database.client().await?;
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT n.seq, n.identity_id, i.name, n.persistent_id, n.received_at,
                        n.sent_at, n.sender, n.encoding, n.data, n.notification, n.payload,
                        n.line
                 FROM pullkin.notifications n
                 LEFT JOIN pullkin.identities i ON i.id = n.identity_id
                 WHERE n.seq > $1 ORDER BY n.seq LIMIT $2",
                &[&self.position, &limit],
            )
            .await
            .map_err(db)?;
        let batch: Vec<StoredNotification> =
            rows.iter().map(StoredNotification::from_row).collect();
        if let Some(last) = batch.last() {
            self.position = last.seq;
        }
        Ok(batch)
    }

    /// Records that everything up to `seq` is processed (durably, for a named
    /// consumer). The cursor may move back as well as forward.
    pub async fn commit(&mut self, seq: i64) -> Result<(), FleetError> {
        if let Some(name) = &self.name {
            let client = self.database.client().await?;
            client
                .execute(
                    "UPDATE pullkin.consumers SET last_seq = $2, updated_at = now()
                     WHERE name = $1",
                    &[name, &seq],
                )
                .await
                .map_err(db)?;
        }
        self.committed = seq;
        self.position = self.position.max(seq);
        Ok(())
    }

    /// This consumer, waiting for new rows instead of returning empty batches.
    pub async fn follow(self) -> Result<Follower, FleetError> {
        let mut follower = Follower {
            consumer: self,
            listener: None,
            poll_every: Duration::from_secs(1),
        };
        // Listening before the first read: nothing committed after it goes unnoticed.
        follower.listen().await?;
        Ok(follower)
    }
}

/// A [`Consumer`] that waits for new rows: a dedicated connection (not a pooled one)
/// listens on `pullkin_notifications`, which every commit that stored rows notifies,
/// and a poll every [`Follower::poll_every`] covers a lost notification or a lost
/// connection (which it re-opens).
#[derive(Debug)]
pub struct Follower {
    consumer: Consumer,
    listener: Option<Listening>,
    poll_every: Duration,
}

#[derive(Debug)]
struct Listening {
    /// Kept: dropping it closes the connection.
    _client: tokio_postgres::Client,
    notifications: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
}

impl Follower {
    /// Polls this often when no notification comes (default 1 s).
    #[must_use]
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every.max(Duration::from_millis(10));
        self
    }

    /// The consumer.
    #[must_use]
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Whether the dedicated connection is listening now.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }

    async fn listen(&mut self) -> Result<(), FleetError> {
        let (client, notifications) = self.consumer.database.dedicated().await?;
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
            .map_err(db)?;
        self.listener = Some(Listening {
            _client: client,
            notifications,
        });
        Ok(())
    }

    /// The next non-empty batch (up to `limit` rows), waiting as long as it takes. While
    /// the database is out of reach it keeps trying, every poll interval; other errors
    /// are returned.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<StoredNotification>, FleetError> {
        loop {
            if self.listener.is_none()
                && let Err(error) = self.listen().await
            {
                debug!("cannot listen for notifications (polling): {error}");
            }
            // What arrived before this read is covered by it.
            if let Some(listening) = &mut self.listener {
                while listening.notifications.try_recv().is_ok() {}
            }
            match self.consumer.next_batch(limit).await {
                Ok(batch) if !batch.is_empty() => return Ok(batch),
                Ok(_) => {}
                Err(error) if error.is_unreachable() => {
                    warn!("reading notifications: {error}; retrying");
                }
                Err(error) => return Err(error),
            }
            let poll = tokio::time::sleep(self.poll_every);
            match &mut self.listener {
                Some(listening) => {
                    tokio::select! {
                        notified = listening.notifications.recv() => {
                            if notified.is_none() {
                                // The connection closed: open another at the next turn.
                                self.listener = None;
                            }
                        }
                        () = poll => {}
                    }
                }
                None => poll.await,
            }
        }
    }

    /// [`Consumer::commit`]; while the database is out of reach (down, restarting,
    /// "shutting down") it keeps trying every poll interval, as [`Follower::next`] does,
    /// so a follower rides out a database restart instead of failing after the rows
    /// were handed on. Other errors are returned.
    pub async fn commit(&mut self, seq: i64) -> Result<(), FleetError> {
        loop {
            match self.consumer.commit(seq).await {
                Err(error) if error.is_unreachable() => {
                    warn!("committing the cursor: {error}; retrying");
                    tokio::time::sleep(self.poll_every).await;
                }
                other => return other,
            }
        }
    }

    /// The consumer back, no longer listening.
    #[must_use]
    pub fn into_consumer(self) -> Consumer {
        self.consumer
    }
}

/// The newest `seq` stored (0 when none).
pub async fn latest_seq(database: &Database) -> Result<i64, FleetError> {
    let client = database.client().await?;
    Ok(client
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM pullkin.notifications",
            &[],
        )
        .await
        .map_err(db)?
        .get(0))
}

/// Removes a named consumer (retention no longer waits for it). Returns whether it
/// existed.
pub async fn remove_consumer(database: &Database, name: &str) -> Result<bool, FleetError> {
    let client = database.client().await?;
    Ok(client
        .execute("DELETE FROM pullkin.consumers WHERE name = $1", &[&name])
        .await
        .map_err(db)?
        > 0)
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruned {
    /// Stored messages.
    pub notifications: u64,
    /// Rows of workers not seen for as long, holding no live lease.
    pub workers: u64,
}

/// Retention: deletes the stored messages received more than `older_than` ago that
/// every consumer has passed (all of those when there is no consumer), and the rows of
/// workers not seen for `older_than` that hold no live lease. `Duration::ZERO` deletes
/// everything every consumer has passed.
pub async fn prune(database: &Database, older_than: Duration) -> Result<Pruned, FleetError> {
    let client = database.client().await?;
    let age = older_than.as_secs_f64();
    let notifications = client
        .execute(
            "DELETE FROM pullkin.notifications
             WHERE received_at <= now() - $1::float8 * interval '1 second'
               AND seq <= coalesce((SELECT min(last_seq) FROM pullkin.consumers),
                                   9223372036854775807)",
            &[&age],
        )
        .await
        .map_err(db)?;
    let workers = client
        .execute(
            "DELETE FROM pullkin.workers w
             WHERE w.last_seen < now() - $1::float8 * interval '1 second'
               AND NOT EXISTS (SELECT 1 FROM pullkin.leases l
                               WHERE l.worker_id = w.id AND l.expires_at > now())",
            &[&age],
        )
        .await
        .map_err(db)?;
    Ok(Pruned {
        notifications,
        workers,
    })
}

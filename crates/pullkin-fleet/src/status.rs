//! [`status`]: the fleet at a glance, as `pullkin fleet status` shows it.

use std::time::{Duration, SystemTime};

use crate::db::Database;
use crate::error::{FleetError, db};
use crate::schema;

/// One identity, as the database knows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityStatus {
    /// The id.
    pub id: i64,
    /// The name.
    pub name: String,
    /// `android` or `web`.
    pub persona: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// The worker named in its lease (`None`: free).
    pub holder: Option<String>,
    /// The lease's epoch.
    pub epoch: i64,
    /// When the lease expires (`None`: free).
    pub lease_expires_at: Option<SystemTime>,
    /// Whether the lease is held and not expired.
    pub lease_live: bool,
    /// The connection state its worker last recorded (`connected`, `connecting`,
    /// `backing-off`, `stopped`, `released`, …).
    pub state: Option<String>,
    /// What goes with the state (the last error, the attempt).
    pub detail: Option<String>,
    /// When the last frame arrived from the server.
    pub last_frame_at: Option<SystemTime>,
    /// When the state was recorded.
    pub state_updated_at: Option<SystemTime>,
    /// Its stored messages not yet passed by every consumer (all of them when there is
    /// no consumer).
    pub waiting: i64,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The id.
    pub id: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// When it started.
    pub started_at: SystemTime,
    /// Its last heartbeat.
    pub last_seen: SystemTime,
    /// Its capacity, if capped.
    pub capacity: Option<i32>,
    /// The version it runs.
    pub version: String,
    /// How many live leases it holds.
    pub held: i64,
    /// Whether it was seen within the liveness window.
    pub live: bool,
}

/// One consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// Its name.
    pub name: String,
    /// Its cursor.
    pub last_seq: i64,
    /// Stored messages after its cursor.
    pub behind: i64,
}

/// The whole fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// The schema version.
    pub schema_version: i32,
    /// Every identity, by id.
    pub identities: Vec<IdentityStatus>,
    /// Every worker row, oldest first.
    pub workers: Vec<WorkerStatus>,
    /// Every consumer, by name.
    pub consumers: Vec<ConsumerStatus>,
    /// Stored messages.
    pub notifications: i64,
    /// The newest `seq` (0 when none).
    pub last_seq: i64,
}

/// The fleet's state; a worker counts as live when seen within `live_within` (its
/// lease TTL, 15 s by default).
pub async fn status(database: &Database, live_within: Duration) -> Result<FleetStatus, FleetError> {
    let schema_version = schema::schema_version(database).await?;
    let client = database.client().await?;
    let identities = client
        .query(
            "WITH cursor AS (SELECT coalesce(min(last_seq), 0) AS seq FROM pullkin.consumers)
             SELECT i.id, i.name, i.persona, i.disabled, l.worker_id, coalesce(l.epoch, 0),
                    CASE WHEN l.worker_id IS NULL THEN NULL ELSE l.expires_at END,
                    coalesce(l.worker_id IS NOT NULL AND l.expires_at > now(), false),
                    c.state, c.detail, c.last_frame_at, c.updated_at,
                    (SELECT count(*) FROM pullkin.notifications n, cursor
                     WHERE n.identity_id = i.id AND n.seq > cursor.seq)
             FROM pullkin.identities i
             LEFT JOIN pullkin.leases l ON l.identity_id = i.id
             LEFT JOIN pullkin.connection_state c ON c.identity_id = i.id
             ORDER BY i.id",
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| IdentityStatus {
            id: row.get(0),
            name: row.get(1),
            persona: row.get(2),
            disabled: row.get(3),
            holder: row.get(4),
            epoch: row.get(5),
            lease_expires_at: row.get(6),
            lease_live: row.get(7),
            state: row.get(8),
            detail: row.get(9),
            last_frame_at: row.get(10),
            state_updated_at: row.get(11),
            waiting: row.get(12),
        })
        .collect();
    let workers = client
        .query(
            "SELECT w.id, w.host, w.pid, w.started_at, w.last_seen, w.capacity, w.version,
                    (SELECT count(*) FROM pullkin.leases l
                     WHERE l.worker_id = w.id AND l.expires_at > now()),
                    w.last_seen > now() - $1::float8 * interval '1 second'
             FROM pullkin.workers w ORDER BY w.started_at, w.id",
            &[&live_within.as_secs_f64()],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| WorkerStatus {
            id: row.get(0),
            host: row.get(1),
            pid: row.get(2),
            started_at: row.get(3),
            last_seen: row.get(4),
            capacity: row.get(5),
            version: row.get(6),
            held: row.get(7),
            live: row.get(8),
        })
        .collect();
    let consumers = client
        .query(
            "SELECT c.name, c.last_seq,
                    (SELECT count(*) FROM pullkin.notifications n WHERE n.seq > c.last_seq)
             FROM pullkin.consumers c ORDER BY c.name",
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| ConsumerStatus {
            name: row.get(0),
            last_seq: row.get(1),
            behind: row.get(2),
        })
        .collect();
    let totals = client
        .query_one(
            "SELECT count(*), coalesce(max(seq), 0) FROM pullkin.notifications",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(FleetStatus {
        schema_version,
        identities,
        workers,
        consumers,
        notifications: totals.get(0),
        last_seq: totals.get(1),
    })
}

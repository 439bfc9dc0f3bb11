//! [`Leases`]: the statements behind one worker's leases and heartbeat.
//!
//! Locks, and why they cannot deadlock: a claim locks the lease rows it takes with
//! `FOR UPDATE SKIP LOCKED`, so it never waits; a renewal updates only this worker's
//! rows (a `FOR NO KEY UPDATE` lock); the store's writes check their lease with
//! `FOR KEY SHARE`, which a renewal does not conflict with but a claim does (a claim
//! skips a lease whose holder is writing, and a write waiting for a claim re-reads the
//! new epoch and is refused).

use std::time::Duration;

use tokio_postgres::types::ToSql;

use crate::db::Database;
use crate::error::{FleetError, db};
use crate::lease::Observed;

/// One held lease: the identity and the epoch it is held at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lease {
    /// The identity's id.
    pub identity: i64,
    /// The epoch (fencing token) of this holding.
    pub epoch: i64,
}

/// How a worker describes itself in `pullkin.workers`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id (unique; a UUID by default).
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its capacity, if capped.
    pub capacity: Option<usize>,
    /// The version of this crate it runs.
    pub version: String,
}

impl WorkerInfo {
    /// This process: a fresh id, the host name, the pid, this crate's version.
    #[must_use]
    pub fn this_process(capacity: Option<usize>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            host: host_name(),
            pid: std::process::id(),
            capacity,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The host name, as the kernel has it (or `HOSTNAME`, or `unknown`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The lease statements of one worker. [`crate::Worker`] drives them; tools and tests
/// may use them directly.
#[derive(Debug, Clone)]
pub struct Leases {
    database: Database,
    worker: WorkerInfo,
    ttl: Duration,
    key_id: String,
}

fn capacity_sql(capacity: Option<usize>) -> Option<i32> {
    capacity.map(|c| i32::try_from(c).unwrap_or(i32::MAX))
}

fn leases(rows: &[tokio_postgres::Row]) -> Vec<Lease> {
    let mut leases: Vec<Lease> = rows
        .iter()
        .map(|row| Lease {
            identity: row.get(0),
            epoch: row.get(1),
        })
        .collect();
    leases.sort();
    leases
}

impl Leases {
    /// The statements for `worker`, with leases of `ttl`, claiming only identities
    /// sealed with the key of fingerprint `key_id` ([`crate::FleetKey::id`]).
    #[must_use]
    pub fn new(database: Database, worker: WorkerInfo, ttl: Duration, key_id: String) -> Self {
        Self {
            database,
            worker,
            ttl,
            key_id,
        }
    }

    /// The worker.
    #[must_use]
    pub fn worker(&self) -> &WorkerInfo {
        &self.worker
    }

    /// The lease TTL.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records the worker (or refreshes its row): its heartbeat starts now.
    pub async fn register(&self) -> Result<(), FleetError> {
        let client = self.database.client().await?;
        let pid = i32::try_from(self.worker.pid).unwrap_or(i32::MAX);
        client
            .execute(
                "INSERT INTO pullkin.workers (id, host, pid, capacity, version)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET last_seen = now(), host = EXCLUDED.host,
                     pid = EXCLUDED.pid, capacity = EXCLUDED.capacity, version = EXCLUDED.version",
                &[
                    &self.worker.id,
                    &self.worker.host,
                    &pid,
                    &capacity_sql(self.worker.capacity),
                    &self.worker.version,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Removes the worker's row (after releasing everything, on a graceful stop).
    pub async fn deregister(&self) -> Result<(), FleetError> {
        let client = self.database.client().await?;
        client
            .execute(
                "DELETE FROM pullkin.workers WHERE id = $1",
                &[&self.worker.id],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Claims up to `max` leases that are free or expired, of enabled identities sealed
    /// with this worker's key; each claimed epoch is one more than before.
    pub async fn claim(&self, max: usize) -> Result<Vec<Lease>, FleetError> {
        self.claim_excluding(max, &[]).await
    }

    /// Like [`Leases::claim`], leaving out the identities `exclude` names (ones this
    /// worker found it cannot start).
    pub async fn claim_excluding(
        &self,
        max: usize,
        exclude: &[i64],
    ) -> Result<Vec<Lease>, FleetError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let client = self.database.client().await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "UPDATE pullkin.leases l
                 SET worker_id = $1, epoch = l.epoch + 1,
                     expires_at = now() + $2::float8 * interval '1 second'
                 WHERE l.identity_id IN (
                     SELECT f.identity_id FROM pullkin.leases f
                     JOIN pullkin.identities i ON i.id = f.identity_id
                     WHERE NOT i.disabled AND i.key_id = $4
                       AND (f.worker_id IS NULL OR f.expires_at < now())
                       AND NOT (f.identity_id = ANY($5))
                     ORDER BY f.identity_id
                     LIMIT $3
                     FOR UPDATE OF f SKIP LOCKED)
                 RETURNING l.identity_id, l.epoch",
                &[
                    &self.worker.id,
                    &self.ttl.as_secs_f64(),
                    &limit,
                    &self.key_id,
                    &exclude,
                ],
            )
            .await
            .map_err(db)?;
        Ok(leases(&rows))
    }

    /// The heartbeat, and every lease of this worker's enabled identities extended by
    /// the TTL, in one statement; returns the leases this worker still has. A lease
    /// that is missing was taken over (after expiring), removed or disabled.
    pub async fn renew(&self) -> Result<Vec<Lease>, FleetError> {
        let client = self.database.client().await?;
        let pid = i32::try_from(self.worker.pid).unwrap_or(i32::MAX);
        let params: [&(dyn ToSql + Sync); 6] = [
            &self.worker.id,
            &self.ttl.as_secs_f64(),
            &self.worker.host,
            &pid,
            &capacity_sql(self.worker.capacity),
            &self.worker.version,
        ];
        let rows = client
            .query(
                "WITH beat AS (
                     INSERT INTO pullkin.workers (id, host, pid, capacity, version)
                     VALUES ($1, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE SET last_seen = now()
                 )
                 UPDATE pullkin.leases l
                 SET expires_at = now() + $2::float8 * interval '1 second'
                 FROM pullkin.identities i
                 WHERE l.worker_id = $1 AND i.id = l.identity_id AND NOT i.disabled
                 RETURNING l.identity_id, l.epoch",
                &params,
            )
            .await
            .map_err(db)?;
        Ok(leases(&rows))
    }

    /// Gives a lease up (free at once for any worker), if this worker still holds it
    /// at that epoch; returns whether it did. The epoch stays: the next claim makes it
    /// one more.
    pub async fn release(&self, lease: Lease) -> Result<bool, FleetError> {
        let client = self.database.client().await?;
        let released = client
            .execute(
                "UPDATE pullkin.leases SET worker_id = NULL, expires_at = '-infinity'
                 WHERE identity_id = $1 AND worker_id = $2 AND epoch = $3",
                &[&lease.identity, &self.worker.id, &lease.epoch],
            )
            .await
            .map_err(db)?;
        Ok(released > 0)
    }

    /// [`Leases::release`] for many leases in one statement; returns how many were
    /// released.
    pub async fn release_many(&self, leases: &[Lease]) -> Result<u64, FleetError> {
        if leases.is_empty() {
            return Ok(0);
        }
        let identities: Vec<i64> = leases.iter().map(|l| l.identity).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
        let client = self.database.client().await?;
        client
            .execute(
                "UPDATE pullkin.leases l SET worker_id = NULL, expires_at = '-infinity'
                 FROM unnest($1::bigint[], $2::bigint[]) AS r(identity_id, epoch)
                 WHERE l.identity_id = r.identity_id AND l.epoch = r.epoch
                   AND l.worker_id = $3",
                &[&identities, &epochs, &self.worker.id],
            )
            .await
            .map_err(db)
    }

    /// Gives up every lease this worker holds; returns how many.
    pub async fn release_all(&self) -> Result<u64, FleetError> {
        let client = self.database.client().await?;
        client
            .execute(
                "UPDATE pullkin.leases SET worker_id = NULL, expires_at = '-infinity'
                 WHERE worker_id = $1",
                &[&self.worker.id],
            )
            .await
            .map_err(db)
    }

    /// The fleet's counts for [`crate::LeasePolicy::balance`]: active identities, the
    /// ones this worker could claim now, and the capacities of the live workers (seen
    /// within the TTL).
    pub async fn observe(&self) -> Result<Observed, FleetError> {
        let client = self.database.client().await?;
        let row = client
            .query_one(
                "SELECT
                     (SELECT count(*) FROM pullkin.identities WHERE NOT disabled),
                     (SELECT count(*) FROM pullkin.leases l
                      JOIN pullkin.identities i ON i.id = l.identity_id
                      WHERE NOT i.disabled AND i.key_id = $2
                        AND (l.worker_id IS NULL OR l.expires_at < now())),
                     (SELECT coalesce(array_agg(coalesce(capacity, -1) ORDER BY id), '{}')
                      FROM pullkin.workers
                      WHERE last_seen > now() - $1::float8 * interval '1 second')",
                &[&self.ttl.as_secs_f64(), &self.key_id],
            )
            .await
            .map_err(db)?;
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        let capacities: Vec<i32> = row.get(2);
        Ok(Observed::new(
            count(row.get(0)),
            count(row.get(1)),
            capacities
                .into_iter()
                .map(|c| usize::try_from(c).ok())
                .collect(),
        ))
    }
}

//! The schema `pullkin` and its versioned migrations.
//!
//! Each migration is applied in a transaction of its own that also records it in
//! `pullkin.schema_migrations (version, applied_at)`, so a migration is either wholly
//! there or not at all. Migrating takes a session advisory lock on a dedicated
//! connection first: two processes migrating at once (two workers starting together)
//! apply each migration once, the second finding it done. A database whose recorded
//! version is newer than this build's newest is refused ([`FleetError::WrongSchema`]):
//! an old worker must not write into tables whose meaning it does not know.
//!
//! The tables:
//!
//! | table | what it holds |
//! |---|---|
//! | `identities` | one row per identity: name, persona, sender and app ids, the credentials JSON encrypted (`credentials`, `nonce`, `key_id`), `disabled` |
//! | `leases` | one row per identity, kept for its whole life: the holder (`worker_id`, null when free), `epoch` (only grows), `expires_at` (database time) |
//! | `workers` | one row per running worker: host, pid, start, `last_seen` (its heartbeat), capacity, version |
//! | `ack_state` | what the listener keeps per identity: the persistent ids not yet confirmed by the server, and the epoch that wrote them ((version 3) the recent ids are not kept: the unique key of `notifications` drops a late duplicate; (version 4) `received_ms`, each unconfirmed id's arrival time in Unix milliseconds, parallel to `unconfirmed`, null in rows written before) |
//! | `notifications` | every received message, `seq` in commit order, `UNIQUE (identity_id, persistent_id)`; `line` is the JSON line of `pullkin listen` (`json` since version 3: the text as printed) |
//! | `consumers` | durable cursors: the last `seq` each named consumer has processed |
//! | `connection_state` | (version 2) each identity's connection as its worker last saw it, for `status` |

use crate::db::Database;
use crate::error::{FleetError, db};

/// One migration: its version and SQL (several statements).
struct Migration {
    version: i32,
    sql: &'static str,
}

/// Every migration, in order. Never edit one that was released: add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r"
CREATE TABLE pullkin.identities (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    persona     text NOT NULL,
    sender_id   text,
    app_id      text,
    credentials bytea NOT NULL,
    nonce       bytea NOT NULL,
    key_id      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled    boolean NOT NULL DEFAULT false
);
CREATE TABLE pullkin.workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    capacity    integer,
    version     text NOT NULL
);
CREATE TABLE pullkin.leases (
    identity_id bigint PRIMARY KEY REFERENCES pullkin.identities (id) ON DELETE CASCADE,
    worker_id   text,
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE INDEX leases_worker ON pullkin.leases (worker_id);
CREATE TABLE pullkin.ack_state (
    identity_id bigint PRIMARY KEY REFERENCES pullkin.identities (id) ON DELETE CASCADE,
    unconfirmed text[] NOT NULL DEFAULT '{}',
    recent      text[] NOT NULL DEFAULT '{}',
    epoch       bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE pullkin.notifications (
    seq           bigserial PRIMARY KEY,
    identity_id   bigint NOT NULL,
    persistent_id text,
    received_at   timestamptz NOT NULL,
    sent_at       timestamptz,
    sender        text,
    encoding      text,
    data          jsonb NOT NULL,
    notification  jsonb,
    payload       bytea,
    line          jsonb NOT NULL,
    UNIQUE (identity_id, persistent_id)
);
CREATE TABLE pullkin.consumers (
    name        text PRIMARY KEY,
    last_seq    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
",
    },
    Migration {
        version: 2,
        sql: r"
CREATE TABLE pullkin.connection_state (
    identity_id   bigint PRIMARY KEY REFERENCES pullkin.identities (id) ON DELETE CASCADE,
    worker_id     text,
    state         text NOT NULL,
    detail        text,
    last_frame_at timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_identity_seq ON pullkin.notifications (identity_id, seq);
CREATE INDEX notifications_received_at ON pullkin.notifications (received_at);
",
    },
    Migration {
        version: 3,
        // The recent ids were rewritten whole with every ack-state write (thousands of
        // ids, compressed each time): the unique key of `notifications` is the fleet's
        // dedupe, so they are not kept. The index on `received_at` (used by retention
        // only, and in step with `seq`) becomes a BRIN index, a few pages to maintain.
        // `line` becomes `json`: kept as the text `pullkin listen` prints, byte for byte,
        // checked but not rebuilt into a tree on every insert.
        sql: r"
ALTER TABLE pullkin.ack_state DROP COLUMN recent;
ALTER TABLE pullkin.notifications ALTER COLUMN line TYPE json USING line::json;
DROP INDEX pullkin.notifications_received_at;
CREATE INDEX notifications_received_at ON pullkin.notifications USING brin (received_at);
",
    },
    Migration {
        version: 4,
        // Each unconfirmed id's arrival time (Unix milliseconds, parallel to
        // `unconfirmed`), so that its age survives a takeover or a restart
        // (docs/protocol.md §7.3). Null in rows written before: their ids count as
        // arrived when they are loaded.
        sql: r"
ALTER TABLE pullkin.ack_state ADD COLUMN received_ms bigint[];
",
    },
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 4;

/// The key of the advisory lock held while migrating (`pullkin` in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_756c_6c6b_696e;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migrated {
    /// The version before.
    pub from: i32,
    /// The version now.
    pub to: i32,
}

/// Creates or upgrades the schema to [`SCHEMA_VERSION`]; does nothing when it is there
/// already. Refuses a database that is newer than this build.
pub async fn migrate(database: &Database) -> Result<Migrated, FleetError> {
    migrate_to(database, SCHEMA_VERSION).await
}

/// Like [`migrate`], up to `target` only (for tests of upgrades, and for rolling out a
/// schema step by step).
pub async fn migrate_to(database: &Database, target: i32) -> Result<Migrated, FleetError> {
    if target > SCHEMA_VERSION {
        return Err(FleetError::WrongSchema {
            database: target,
            build: SCHEMA_VERSION,
        });
    }
    // A dedicated connection: the session lock goes with it, whatever happens.
    let (mut client, _notifications) = database.dedicated().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pullkin;
             CREATE TABLE IF NOT EXISTS pullkin.schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .map_err(db)?;
    let from = recorded_version(&client).await?;
    if from > SCHEMA_VERSION {
        return Err(FleetError::WrongSchema {
            database: from,
            build: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        let transaction = client.transaction().await.map_err(db)?;
        transaction.batch_execute(migration.sql).await.map_err(db)?;
        transaction
            .execute(
                "INSERT INTO pullkin.schema_migrations (version) VALUES ($1)",
                &[&migration.version],
            )
            .await
            .map_err(db)?;
        transaction.commit().await.map_err(db)?;
        tracing::info!(version = migration.version, "schema migrated");
    }
    let to = recorded_version(&client).await?;
    // Unlocked by closing the connection too; this only makes it prompt.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    Ok(Migrated { from, to })
}

async fn recorded_version(client: &tokio_postgres::Client) -> Result<i32, FleetError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pullkin.schema_migrations",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(row.get(0))
}

/// The schema version recorded in the database (0 when it was never migrated).
pub async fn schema_version(database: &Database) -> Result<i32, FleetError> {
    let client = database.client().await?;
    // Two statements: a query naming a missing table fails when it is parsed.
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pullkin.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    recorded_version(&client).await
}

/// Fails unless the database has exactly the schema this build knows.
pub async fn check_schema(database: &Database) -> Result<(), FleetError> {
    let version = schema_version(database).await?;
    if version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(FleetError::WrongSchema {
            database: version,
            build: SCHEMA_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one_up_to_the_schema_version() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).ok(), Some(index + 1));
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | `db` | [`Database`]: the pool, TLS by `sslmode`, dedicated connections |
//! | `schema` | the versioned migrations, [`migrate`], [`check_schema`] |
//! | `crypto` | [`FleetKey`]: AES-256-GCM sealing of the credentials |
//! | `identities` | [`add_identity`], [`remove_identity`], [`list_identities`], [`rotate_key`] |
//! | `lease` | [`LeasePolicy`] (sans-IO: renewals, self-fencing, fair share) and [`Leases`] (the statements) |
//! | `store` | [`FleetStore`]: `pullkin::Store` fenced by epochs, group commit of messages with ack state |
//! | `worker` | [`Worker`]: registers, claims, listens, stores, renews, rebalances, fences itself, hands off |
//! | `consumer` | [`Consumer`] and [`Follower`]: durable cursors, `LISTEN`-driven waiting; [`prune`] |
//! | `status` | [`status`]: identities, holders, connection states, waiting messages, workers |
//! | `error` | [`FleetError`] |

mod consumer;
mod crypto;
mod db;
mod error;
mod identities;
mod lease;
mod schema;
mod status;
mod store;
mod worker;

pub use consumer::{
    Consumer, Follower, Pruned, StoredNotification, latest_seq, prune, remove_consumer,
};
pub use crypto::{FleetKey, KEY_FILE_ENV};
pub use db::{DATABASE_URL_ENV, Database, DatabaseBuilder};
pub use error::FleetError;
pub use identities::{
    IdentitySummary, add_identity, list_identities, load_credentials, remove_identity, rotate_key,
    set_disabled,
};
pub use lease::{
    Balance, Lease, LeaseConfig, LeasePolicy, Leases, Observed, Renewed, WorkerInfo, fair_share,
};
pub use schema::{Migrated, SCHEMA_VERSION, check_schema, migrate, migrate_to, schema_version};
pub use status::{ConsumerStatus, FleetStatus, IdentityStatus, WorkerStatus, status};
pub use store::{CommitStats, FencedIdentity, FleetStore, NOTIFY_CHANNEL, NotificationRow};
pub use worker::{Worker, WorkerBuilder, WorkerHandle};

//! Leases: who holds which identity, and until when.
//!
//! A lease row per identity (`pullkin.leases`) names its holder, an `epoch` and an
//! `expires_at` in the database's time. Claiming a lease (free, or expired) adds one to
//! its epoch, so the epoch only grows and names one holding: every write a worker makes
//! for an identity carries the epoch it holds, and the database refuses it once the
//! epoch moved on (see the store). A worker renews all its leases in one statement, its
//! heartbeat in the same one, every `ttl/3`.
//!
//! Expiry is judged by the database's clock alone; the worker's own deadline for
//! stopping (self-fencing) is measured on its monotonic clock from the moment it *sent*
//! the renewal, which is before the database set `expires_at = now() + ttl`. So the
//! worker stops at the latest `ttl − margin` after the database's expiry base, whatever
//! the clocks of the two machines say: a partitioned or paused worker has closed its
//! connections before anyone may claim them.
//!
//! - `policy`: [`LeasePolicy`], the sans-IO decisions (when to renew, which leases to
//!   give up, how many to claim or release for a fair share), driven by `now`;
//! - `sql`: [`Leases`], the statements (register, claim, renew, release, observe).

mod policy;
mod sql;

pub use policy::{Balance, LeaseConfig, LeasePolicy, Observed, Renewed, fair_share};
pub use sql::{Lease, Leases, WorkerInfo};

//! [`FleetError`]: everything that can go wrong in the fleet, one line per cause.

use std::path::PathBuf;

/// The errors of this crate. Each message is one line that names the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The database cannot be reached (connection refused, closed, timed out).
    #[error("cannot reach the database: {reason}")]
    Unreachable {
        /// What the client said.
        reason: String,
    },
    /// The database URL does not parse.
    #[error("bad database URL: {reason}")]
    BadUrl {
        /// Why.
        reason: String,
    },
    /// The schema in the database is not the one this build works with.
    #[error("wrong schema version: database {database}, this build {build}")]
    WrongSchema {
        /// The version recorded in `pullkin.schema_migrations` (0: none).
        database: i32,
        /// The newest version this build knows.
        build: i32,
    },
    /// No fleet key was given.
    #[error(
        "no fleet key: set PULLKIN_FLEET_KEY_FILE to a file holding the 32-byte key (64 hex characters or 32 raw bytes)"
    )]
    MissingKey,
    /// The key file cannot be read or does not hold a key.
    #[error("the fleet key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A stored identity's credentials do not decrypt with this key.
    #[error("the fleet key does not open identity {identity} (wrong key?)")]
    BadKey {
        /// The identity's id.
        identity: i64,
    },
    /// A write for an identity was refused: its lease is no longer this worker's at this
    /// epoch (another worker holds it now, or it was removed).
    #[error("identity {identity}: the lease moved on from epoch {epoch}; the write was refused")]
    Fenced {
        /// The identity's id.
        identity: i64,
        /// The epoch the write carried.
        epoch: i64,
    },
    /// A statement failed.
    #[error("database: {}", one_line(.0))]
    Database(#[from] tokio_postgres::Error),
    /// Credentials do not parse, or do not serialize.
    #[error("credentials: {0}")]
    Credentials(String),
    /// An identity of that name exists already.
    #[error("an identity named {0:?} exists already")]
    IdentityExists(String),
    /// No identity has that name.
    #[error("no identity named {0:?}")]
    UnknownIdentity(String),
    /// The listener refused an identity.
    #[error("listener: {0}")]
    Listener(#[from] pullkin::PullkinError),
    /// The TLS configuration for the database connection cannot be made.
    #[error("TLS for the database: {0}")]
    Tls(String),
    /// A group commit failed for a reason other than the database being out of reach.
    #[error("the commit failed: {reason}")]
    Commit {
        /// The database's error, on one line.
        reason: String,
    },
    /// The worker's commit task is gone (the worker is shutting down).
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// A stored ack state cannot be read (a null id, arrival times that do not match
    /// the ids or lie outside 1970 to 9999).
    #[error("the stored ack state of identity {identity} is corrupt: {reason}")]
    CorruptAckState {
        /// The identity's id.
        identity: i64,
        /// What is wrong with it.
        reason: String,
    },
}

impl FleetError {
    /// Whether the database was out of reach (as opposed to refusing a statement): the
    /// call may succeed when it is back.
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A statement's error: a closed connection, an I/O failure or the server saying it is
/// going away or not ready ([`server_unavailable`]) counts as the database being out of
/// reach, anything else as the statement's own failure.
pub(crate) fn db(error: tokio_postgres::Error) -> FleetError {
    if error.is_closed()
        || error.as_db_error().is_none() && io_cause(&error)
        || server_unavailable(&error)
    {
        FleetError::Unreachable {
            reason: one_line(&error),
        }
    } else {
        FleetError::Database(error)
    }
}

/// Whether the server refused because it is shutting down, restarting or starting up
/// (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now, e.g.
/// "the database system is shutting down"), or reported a connection exception (class
/// `08`): the database is back in a moment, not refusing the statement.
pub(crate) fn server_unavailable(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.code().is_some_and(|code| {
        *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || code.code().starts_with("08")
    })
}

fn io_cause(error: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error and its causes on one line.
pub(crate) fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', "; ")
}

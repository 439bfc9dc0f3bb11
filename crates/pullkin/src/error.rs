//! The errors of the crate: [`PullkinError`] for calls that fail at once, and
//! [`ConnectionError`] for why a push connection failed or ended, as carried by
//! [`ConnectionState`](crate::ConnectionState), [`Event`](crate::Event) and the logs.
//!
//! Both keep the typed errors of the crates below (`fcm_http::Error`, `McsError`,
//! [`StoreError`], …) as their sources, so callers match on variants instead of text.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mcs_codec::McsError;

use crate::registration::{CredentialsError, ParamsError, TopicError};
use crate::session::Disconnect;
use crate::store::StoreError;

/// Errors of the `pullkin` facade's calls (registration, adding apps, building).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullkinError {
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The credentials are unusable.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An app of that name was added already.
    #[error("app {0:?} was added already")]
    AppExists(String),
    /// No app of that name was added.
    #[error("no app {0:?} was added")]
    UnknownApp(String),
    /// The app's messages already go to another stream or `run`.
    #[error("app {0:?} already has a consumer")]
    AlreadyListening(String),
    /// The registration parameters are malformed; found before any request.
    #[error(transparent)]
    InvalidParams(#[from] ParamsError),
    /// A topic request cannot be made (a malformed name, or the web persona).
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// register3 answered `Error=RST`: Google declared this identity invalid (a
    /// duplicate, or wiped). Retrying cannot help: make a new identity with
    /// [`PullkinCore::reset_identity`](crate::PullkinCore::reset_identity)
    /// (docs/protocol.md §7.1).
    #[error(
        "Google reset this device identity (register3 Error=RST): make a new one \
         (PullkinCore::reset_identity; `pullkin register` again on the command line)"
    )]
    IdentityReset(#[source] gcm_checkin::Error),
    /// Check-in or GCM registration failed.
    #[error(transparent)]
    Checkin(#[from] gcm_checkin::Error),
    /// Firebase Installations or FCM registration failed.
    #[error(transparent)]
    Install(#[from] fcm_install::Error),
    /// The HTTP client could not be set up or a request failed.
    #[error(transparent)]
    Http(#[from] fcm_http::Error),
}

impl PullkinError {
    /// How long Google asked to wait before trying again (an HTTP `Retry-After`), for a
    /// failed request whose answer carried one. The retries inside
    /// [`PullkinCore`](crate::PullkinCore) wait at least that long; the listener's
    /// reconnection does too.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PullkinError::Checkin(e) | PullkinError::IdentityReset(e) => e.retry_after(),
            PullkinError::Install(e) => e.retry_after(),
            PullkinError::Http(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Why a push connection attempt failed or a connection ended.
///
/// Cheap to clone (sources are shared), so that it can travel in states and events.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The MCS address cannot be dialled as written.
    #[error("the MCS address {addr:?} {reason}")]
    Address {
        /// The address, as configured.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The MCS host name did not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address.
        addr: String,
        /// The resolver's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// No TCP connection could be made, directly or through the HTTP proxy.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The socket's (or the proxy tunnel's) error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The TLS handshake failed (e.g. an untrusted certificate).
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The address.
        addr: String,
        /// rustls' error, as an I/O error.
        #[source]
        source: Arc<io::Error>,
    },
    /// TCP connect plus TLS handshake took longer than the connect timeout.
    #[error("connecting to {addr} took longer than {after:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The server refused the login.
    #[error("login refused with code {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    LoginRefused {
        /// The error code of the LoginResponse.
        code: i32,
        /// Its message, if any.
        message: Option<String>,
    },
    /// The server sent a StreamErrorStanza.
    #[error("stream error {kind}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
    StreamError {
        /// The error's type.
        kind: String,
        /// Its text, if any.
        text: Option<String>,
    },
    /// The server closed the connection (a Close frame, or the end of the stream).
    #[error("the server ended the stream")]
    ServerClosed,
    /// Nothing arrived within the heartbeat deadline (after a ping, or after the login).
    #[error("no answer within the heartbeat deadline")]
    HeartbeatTimeout,
    /// The server sent something other than a LoginResponse before logging in.
    #[error("unexpected frame with tag {tag} before the login answer")]
    UnexpectedFrame {
        /// The frame's tag.
        tag: u8,
    },
    /// Reading from the connection failed.
    #[error("read failed: {0}")]
    Read(#[source] Arc<io::Error>),
    /// Writing to the connection failed.
    #[error("write failed: {0}")]
    Write(#[source] Arc<io::Error>),
    /// The server sent bytes that are not MCS frames.
    #[error("bad data from the server: {0}")]
    Decode(#[source] Arc<McsError>),
    /// The acknowledgement state could not be read or stored.
    #[error("cannot store the acknowledgement state: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The check-in (and credential upkeep) before connecting failed.
    #[error("check-in failed: {0}")]
    Checkin(#[source] Arc<PullkinError>),
    /// The application dropped the app's message stream.
    #[error("the application stopped taking messages")]
    ConsumerGone,
    /// The configured number of failures in a row was reached.
    #[error("gave up after {failures} failures: {last}")]
    GaveUp {
        /// How many attempts failed in a row.
        failures: u32,
        /// The last failure.
        #[source]
        last: Box<ConnectionError>,
    },
}

impl ConnectionError {
    /// How long the server asked to wait before the next attempt (an HTTP `Retry-After`
    /// during the check-in), if it did.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectionError::Checkin(error) => error.retry_after(),
            _ => None,
        }
    }

    /// An MCS read error: the stream's I/O error, or bad data.
    pub(crate) fn from_mcs(error: McsError) -> Self {
        match error {
            McsError::Io(e) => ConnectionError::Read(Arc::new(e)),
            other => ConnectionError::Decode(Arc::new(other)),
        }
    }
}

impl From<Disconnect> for ConnectionError {
    fn from(reason: Disconnect) -> Self {
        match reason {
            Disconnect::LoginFailed { code, message } => {
                ConnectionError::LoginRefused { code, message }
            }
            Disconnect::ServerClosed => ConnectionError::ServerClosed,
            Disconnect::StreamError { kind, text } => ConnectionError::StreamError { kind, text },
            Disconnect::HeartbeatTimeout => ConnectionError::HeartbeatTimeout,
            Disconnect::UnexpectedFrame { tag } => ConnectionError::UnexpectedFrame { tag },
        }
    }
}

impl From<StoreError> for ConnectionError {
    fn from(error: StoreError) -> Self {
        ConnectionError::Store(Arc::new(error))
    }
}

impl From<PullkinError> for ConnectionError {
    fn from(error: PullkinError) -> Self {
        ConnectionError::Checkin(Arc::new(error))
    }
}

/// What a failing handler returns, and what [`Event::HandlerFailed`](crate::Event)
/// carries.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler or filter panicked; its message is kept.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} panicked: {message}")]
pub struct Panicked {
    /// What panicked: `"handler"` or `"filter"`.
    pub what: &'static str,
    /// The panic's message.
    pub message: String,
}

impl Panicked {
    /// From a caught panic's payload.
    pub(crate) fn new(what: &'static str, panic: &(dyn std::any::Any + Send)) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Self { what, message }
    }
}

/// Why a whole batch was not taken. Nothing of it is known to be taken: it is retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The destination is unreachable, failing or slow; try again later.
    #[error("sink {sink}: {source}")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// Why.
        #[source]
        source: HandlerError,
        /// How long the destination asked to wait, if it did.
        retry_after: Option<Duration>,
    },
}

impl SinkError {
    /// An unavailable destination.
    pub fn unavailable(sink: impl Into<String>, source: impl Into<HandlerError>) -> Self {
        SinkError::Unavailable {
            sink: sink.into(),
            source: source.into(),
            retry_after: None,
        }
    }

    /// How long the destination asked to wait, if it did.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Unavailable { retry_after, .. } => *retry_after,
        }
    }
}

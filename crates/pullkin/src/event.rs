//! What the listener reports besides messages: [`Event`]s, each app's
//! [`ConnectionState`] and its [`Health`].

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{ConnectionError, HandlerError, SinkError};
use crate::message::Stanza;

/// Where an app's connection stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not started yet.
    Idle,
    /// Checking in, connecting and logging in; `attempt` counts the failures since the
    /// last good connection plus one.
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// Logged in and receiving.
    Connected {
        /// Since when.
        since: SystemTime,
    },
    /// Waiting before the next attempt.
    BackingOff {
        /// When the next attempt starts.
        until: SystemTime,
        /// Why the last attempt or connection failed.
        error: ConnectionError,
        /// How many attempts failed in a row.
        failures: u32,
    },
    /// Stopped: by [`Pullkin::stop`](crate::Pullkin::stop) or
    /// [`Pullkin::shutdown`](crate::Pullkin::shutdown) (no error), or for good (the
    /// error: a stored state it cannot read, or [`ConnectionError::GaveUp`]).
    Stopped {
        /// Why, when it was not a requested stop.
        error: Option<ConnectionError>,
    },
}

/// The health of an app's connection, to watch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Health {
    /// The connection state.
    pub state: ConnectionState,
    /// When the last frame arrived from the server.
    pub last_frame_at: Option<SystemTime>,
    /// How many logins succeeded.
    pub logins: u64,
    /// How many attempts or connections failed.
    pub failures: u64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: ConnectionState::Idle,
            last_frame_at: None,
            logins: 0,
            failures: 0,
        }
    }
}

/// Something the listener reports, for logs and health checks. Received messages go to
/// the handlers and streams instead.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An app's connection changed state.
    State {
        /// The app.
        app: String,
        /// Its new state.
        state: ConnectionState,
    },
    /// A message could not be decrypted; it was acknowledged so that the server does not
    /// send it again.
    Undecryptable {
        /// The app.
        app: String,
        /// The message's persistent id.
        persistent_id: Option<String>,
        /// Why it could not be decrypted.
        error: webpush_ece::Error,
        /// The frame, as received.
        stanza: Stanza,
    },
    /// The task decrypting a message panicked (a bug, never the input's fault); the
    /// message was acknowledged and the connection goes on.
    DecryptionPanicked {
        /// The app.
        app: String,
        /// The message's persistent id.
        persistent_id: Option<String>,
        /// What the task's failure said.
        message: String,
    },
    /// The server dropped messages it could not deliver (`deleted_messages`).
    DeletedMessages {
        /// The app.
        app: String,
        /// How many, when the server says.
        count: Option<u64>,
    },
    /// A handler returned an error or panicked ([`Panicked`](crate::Panicked)); the
    /// message was acknowledged.
    HandlerFailed {
        /// The app.
        app: String,
        /// The message's persistent id.
        persistent_id: Option<String>,
        /// The handler's error.
        error: Arc<HandlerError>,
    },
    /// An app's listener stopped for good: a stored state it cannot read, or
    /// [`ConnectionError::GaveUp`] after the configured number of failures.
    Failed {
        /// The app.
        app: String,
        /// Why.
        error: ConnectionError,
    },
    /// A sink failed to take a batch; it is retried (nothing of it is acknowledged
    /// meanwhile).
    SinkFailed {
        /// The app.
        app: String,
        /// The sink's name.
        sink: String,
        /// Why.
        error: Arc<SinkError>,
        /// How many attempts of this batch failed so far.
        failures: u32,
    },
    /// A sink rejected a message for good; it was parked (when a park is configured)
    /// and acknowledged.
    SinkRejected {
        /// The app.
        app: String,
        /// The sink's name.
        sink: String,
        /// The message's persistent id.
        persistent_id: Option<String>,
        /// The sink's reason.
        reason: String,
    },
    /// An app's credentials changed: renewed, registered anew, reset by Google or their
    /// token synced (see [`CredentialsChange`]). They are in the listener's store already
    /// and in [`Pullkin::credentials`](crate::Pullkin::credentials); when the FCM token
    /// changed, hand it to the senders.
    #[non_exhaustive]
    CredentialsChanged {
        /// The app.
        app: String,
        /// Why.
        reason: CredentialsChange,
    },
}

/// Why an app's credentials changed ([`Event::CredentialsChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsChange {
    /// The renewal before a connection, or the periodic re-check-in while connected
    /// (docs/protocol.md §7.2), refreshed the Firebase auth token or repaired the FCM
    /// registration; the device identity stays.
    Renewed,
    /// The renewal found the device identity dead (its check-in refused, or another
    /// identity handed out) and registered anew: a new identity, the stored topics
    /// subscribed again; the listener logs in with it.
    Reregistered,
    /// Google reset the identity (docs/protocol.md §7.1): an Instance ID control message
    /// over MCS (`command`: [`IidCommand::Reset`](crate::IidCommand::Reset) or
    /// [`IidCommand::ResetAll`](crate::IidCommand::ResetAll)), or register3 answering
    /// `Error=RST` (`command` `None`, or [`IidCommand::Sync`](crate::IidCommand::Sync)
    /// when that was the answer to a `SYNC`). A new identity from the stored config, the
    /// stored topics subscribed again; the listener logs in with it, and the messages
    /// received before stay received.
    IdentityReset {
        /// The control message that asked for it, if one did.
        command: Option<crate::registration::IidCommand>,
    },
    /// The Instance ID control message `SYNC` (docs/protocol.md §7.1): register3 again
    /// on the same identity handed out another token (registered with FCM and the topics
    /// again). The connection stays.
    TokenSynced,
}

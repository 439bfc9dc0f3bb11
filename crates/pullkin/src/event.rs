//! What the listener reports besides messages, and the hand-over of a message.

use std::sync::Arc;

use mcs_codec::proto::DataMessageStanza;
use tokio::sync::mpsc;

use crate::connection::ConnectionState;
use crate::message::Message;

/// A message received by one of the apps of a [`crate::Pullkin`], with the MCS frame it
/// came in.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The app (sender id) it is for.
    pub app: String,
    /// The message.
    pub message: Message,
    /// The data message frame it came in.
    pub stanza: DataMessageStanza,
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
        error: String,
        /// The frame, as received.
        stanza: Box<DataMessageStanza>,
    },
    /// The server dropped messages it could not deliver (`deleted_messages`).
    DeletedMessages {
        /// The app.
        app: String,
        /// How many, when the server says.
        count: Option<u64>,
    },
    /// A handler returned an error or panicked; the message was acknowledged.
    HandlerFailed {
        /// The app.
        app: String,
        /// The message's persistent id.
        persistent_id: Option<String>,
        /// The error, or the panic's message.
        error: String,
    },
    /// An app's listener stopped for good (a stored state it cannot read, or the
    /// configured number of failures).
    Failed {
        /// The app.
        app: String,
        /// Why.
        cause: String,
    },
    /// An app's credentials were renewed; store them (they are in the store already when
    /// the listener has one).
    CredentialsChanged {
        /// The app.
        app: String,
    },
}

/// A message on its way to the application. Its id is acknowledged once the application
/// took it ([`Delivery::taken`]).
#[derive(Debug)]
pub(crate) struct Delivery {
    pub app: Arc<str>,
    pub message: Box<Message>,
    pub stanza: Box<DataMessageStanza>,
    pub delivered: mpsc::UnboundedSender<String>,
}

impl Delivery {
    /// The application has the message: it may be acknowledged.
    pub(crate) fn taken(self) -> Incoming {
        if let Some(id) = &self.message.persistent_id {
            let _ = self.delivered.send(id.clone());
        }
        Incoming {
            app: self.app.to_string(),
            message: *self.message,
            stanza: *self.stanza,
        }
    }
}

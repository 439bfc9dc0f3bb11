//! What the listener reports besides messages, and the hand-over of a message.

use std::sync::Arc;

use mcs_codec::proto::DataMessageStanza;
use std::sync::{Mutex, PoisonError};

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::warn;
use webpush_ece::ReceiverKeys;

use crate::connection::ConnectionState;
use crate::message::{self, Decoded, Message};

/// A message received by one of the apps of a [`crate::Pullkin`], with the MCS frame it
/// came in.
///
/// The message is acknowledged to the server when this value is dropped — when the
/// application is done with it (a panic while handling it drops it too, so a message
/// that crashes its handler does not come back forever). A process killed before it
/// dropped the value gets the message again after a restart.
#[derive(Debug)]
pub struct Incoming {
    /// The app (sender id) it is for.
    pub app: String,
    /// The message.
    pub message: Message,
    /// The data message frame it came in.
    pub stanza: DataMessageStanza,
    _ack: Ack,
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

/// The ids the application took, on their way back to the connection task. An idle
/// connection holds an empty vector and a notifier here, nothing more (a channel would
/// keep a block of slots per connection).
#[derive(Debug, Default)]
pub(crate) struct Taken {
    ids: Mutex<Vec<Arc<str>>>,
    notify: Notify,
}

impl Taken {
    /// Reports one id as taken.
    pub(crate) fn push(&self, id: Arc<str>) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        self.notify.notify_one();
    }

    /// The ids taken since the last call, oldest first.
    pub(crate) fn take(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits for ids to be taken; returns them.
    pub(crate) async fn wait(&self) -> Vec<Arc<str>> {
        loop {
            // A push between `take` and `notified` leaves a permit: no wake-up is lost.
            let ids = self.take();
            if !ids.is_empty() {
                return ids;
            }
            self.notify.notified().await;
        }
    }
}

/// How a handed-over message is being turned into a [`Message`].
pub(crate) enum Work {
    /// Not encrypted: decoded by the consumer (cheap).
    Plain(Box<DataMessageStanza>, Option<Arc<ReceiverKeys>>),
    /// Being decrypted on the blocking pool.
    Decrypting(JoinHandle<(Decoded, Box<DataMessageStanza>)>),
}

/// A message on its way to the application. Its id is acknowledged once the application
/// took it ([`Ready::taken`]); a message that is not for the application (undecryptable,
/// a `deleted_messages` notice) is reported and acknowledged by [`Delivery::resolve`].
pub(crate) struct Delivery {
    pub app: Arc<str>,
    pub persistent_id: Option<Arc<str>>,
    pub work: Work,
    pub delivered: Arc<Taken>,
    pub events: broadcast::Sender<Event>,
}

/// A decoded message, ready for the application.
pub(crate) struct Ready {
    pub app: Arc<str>,
    pub message: Box<Message>,
    pub stanza: Box<DataMessageStanza>,
    persistent_id: Option<Arc<str>>,
    delivered: Arc<Taken>,
}

impl Delivery {
    /// Waits for the decoding; `None` when there is nothing for the application: an
    /// undecryptable message or a `deleted_messages` notice is reported as an [`Event`]
    /// and acknowledged here (a poison message must not come back forever).
    pub(crate) async fn resolve(self) -> Option<Ready> {
        let outcome = match self.work {
            Work::Plain(stanza, keys) => Ok((message::decode(&stanza, keys.as_deref()), stanza)),
            Work::Decrypting(handle) => handle.await,
        };
        let app = self.app.to_string();
        let (decoded, stanza) = match outcome {
            Ok(done) => done,
            Err(error) => {
                warn!(%app, "the decryption task failed: {error}");
                acknowledge(&self.delivered, self.persistent_id.clone());
                let _ = self.events.send(Event::Failed {
                    app,
                    cause: format!(
                        "decrypting message {:?} failed: {error}",
                        self.persistent_id
                    ),
                });
                return None;
            }
        };
        match decoded {
            Decoded::Message(message) => Some(Ready {
                app: self.app,
                message,
                stanza,
                persistent_id: self.persistent_id,
                delivered: self.delivered,
            }),
            Decoded::DeletedMessages { count } => {
                warn!(%app, ?count, "the server dropped messages it could not deliver");
                acknowledge(&self.delivered, self.persistent_id.clone());
                let _ = self.events.send(Event::DeletedMessages { app, count });
                None
            }
            Decoded::Undecryptable(error) => {
                warn!(%app, persistent_id = ?self.persistent_id, "cannot decrypt a message: {error}");
                acknowledge(&self.delivered, self.persistent_id.clone());
                let _ = self.events.send(Event::Undecryptable {
                    app,
                    persistent_id: self.persistent_id.as_deref().map(str::to_owned),
                    error: error.to_string(),
                    stanza,
                });
                None
            }
        }
    }
}

impl Ready {
    /// The handlers are done with the message: acknowledge it.
    pub(crate) fn handled(self) {
        acknowledge(&self.delivered, self.persistent_id);
    }

    /// Hands the message to the application; it is acknowledged when the [`Incoming`]
    /// is dropped.
    pub(crate) fn taken(self) -> Incoming {
        Incoming {
            app: self.app.to_string(),
            _ack: Ack {
                id: self.persistent_id,
                delivered: self.delivered,
            },
            message: *self.message,
            stanza: *self.stanza,
        }
    }
}

/// Acknowledges one message when dropped.
#[derive(Debug)]
pub(crate) struct Ack {
    id: Option<Arc<str>>,
    delivered: Arc<Taken>,
}

impl Drop for Ack {
    fn drop(&mut self) {
        acknowledge(&self.delivered, self.id.take());
    }
}

fn acknowledge(delivered: &Taken, id: Option<Arc<str>>) {
    if let Some(id) = id {
        delivered.push(id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn taken_ids_come_back_in_order_and_wake_the_waiter() {
        let taken = Arc::new(Taken::default());
        assert!(taken.take().is_empty());
        let waiter = {
            let taken = Arc::clone(&taken);
            tokio::spawn(async move { taken.wait().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        taken.push(Arc::from("0:a"));
        taken.push(Arc::from("0:b"));
        let ids = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        // The waiter may have run between the two pushes.
        let mut all: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        all.extend(taken.take().iter().map(|id| id.to_string()));
        assert_eq!(all, ["0:a", "0:b"]);
        // A push before anyone waits is not lost either.
        taken.push(Arc::from("0:c"));
        let ids = tokio::time::timeout(Duration::from_secs(5), taken.wait())
            .await
            .expect("the pushed id is there");
        assert_eq!(&*ids[0], "0:c");
    }
}

//! A message on its way from the driver to the application, and the way its id comes
//! back to be acknowledged: [`Handover`] (queued, being decoded), [`ReadyMessage`]
//! (decoded), [`Incoming`] (taken by a stream consumer) and [`TakenIds`] (the return
//! path).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::warn;
use webpush_ece::ReceiverKeys;

use crate::event::Event;
use crate::message::{self, Decoded, Message, Stanza};
use mcs_codec::proto::DataMessageStanza;

/// A message received by one of the apps of a [`crate::Pullkin`], with the MCS frame it
/// came in.
///
/// The message is acknowledged to the server when this value is dropped — when the
/// application is done with it (a panic while handling it drops it too, so a message
/// that crashes its handler does not come back forever). A process killed before it
/// dropped the value gets the message again after a restart.
#[derive(Debug)]
#[non_exhaustive]
pub struct Incoming {
    /// The app (sender id) it is for.
    pub app: String,
    /// The message.
    pub message: Message,
    /// The data message frame it came in.
    pub stanza: Stanza,
    _ack: AckOnDrop,
}

impl Incoming {
    /// `<app>:<persistent_id>`: a key that names the message across redeliveries and
    /// restarts, for a destination to drop duplicates by (`Nats-Msg-Id`,
    /// `Idempotency-Key`). `None` for a message without a persistent id (the server
    /// does not redeliver those).
    #[must_use]
    pub fn key(&self) -> Option<String> {
        self.message
            .persistent_id
            .as_deref()
            .map(|id| format!("{}:{id}", self.app))
    }

    /// The message as one JSON line (as `pullkin listen` prints it), with its app.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        self.message.to_json(&self.app)
    }

    /// Separates the message from its acknowledgement: the app, message and frame to
    /// use, and the [`Ack`] that acknowledges it when dropped. For an application done
    /// with the values before the message may be acknowledged (`pullkin listen` frees
    /// each message once its line is in the output buffer, and acknowledges it once the
    /// buffer is written).
    pub fn into_parts(self) -> (String, Message, Stanza, Ack) {
        (self.app, self.message, self.stanza, Ack { _ack: self._ack })
    }
}

/// The acknowledgement of an [`Incoming`] taken apart ([`Incoming::into_parts`]): the
/// message is acknowledged when this is dropped.
#[derive(Debug)]
#[must_use = "dropping it acknowledges the message at once"]
pub struct Ack {
    _ack: AckOnDrop,
}

/// The ids the application took, on their way back to the driver. An idle
/// connection holds an empty vector and a notifier here, nothing more (a channel would
/// keep a block of slots per connection).
#[derive(Debug, Default)]
pub(crate) struct TakenIds {
    ids: Mutex<Vec<Arc<str>>>,
    notify: Notify,
}

impl TakenIds {
    /// Reports one id as taken.
    pub(crate) fn push(&self, id: Arc<str>) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let first = ids.is_empty();
        ids.push(id);
        drop(ids);
        // The waiter takes every id at once: it needs a word only for the first one since
        // its last take (the later ones find the word given, or the waiter running).
        if first {
            self.notify.notify_one();
        }
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
pub(crate) enum Decoding {
    /// Not encrypted: decoded by the consumer (cheap). With the arrival time.
    Plain(
        Box<DataMessageStanza>,
        Option<Arc<ReceiverKeys>>,
        SystemTime,
    ),
    /// Being decrypted on the blocking pool.
    Decrypting(JoinHandle<(Decoded, Box<DataMessageStanza>)>),
}

/// A message on its way to the application. Its id is acknowledged once the application
/// took it ([`ReadyMessage::taken`]); a message that is not for the application
/// (undecryptable, a `deleted_messages` notice) is reported and acknowledged by
/// [`Handover::resolve`].
pub(crate) struct Handover {
    pub app: Arc<str>,
    pub persistent_id: Option<Arc<str>>,
    pub decoding: Decoding,
    pub taken: Arc<TakenIds>,
    pub events: broadcast::Sender<Event>,
}

/// A decoded message, ready for the application.
pub(crate) struct ReadyMessage {
    pub app: Arc<str>,
    pub message: Box<Message>,
    pub stanza: Stanza,
    persistent_id: Option<Arc<str>>,
    taken: Arc<TakenIds>,
}

impl Handover {
    /// Waits for the decoding; `None` when there is nothing for the application: an
    /// undecryptable message or a `deleted_messages` notice is reported as an [`Event`]
    /// and acknowledged here (a poison message must not come back forever).
    pub(crate) async fn resolve(self: Box<Self>) -> Option<ReadyMessage> {
        let mut waiting = Some(self);
        std::future::poll_fn(|cx| match waiting.take() {
            None => Poll::Ready(None),
            Some(handover) => match handover.poll_resolve(cx) {
                Ok(ready) => Poll::Ready(ready),
                Err(handover) => {
                    waiting = Some(handover);
                    Poll::Pending
                }
            },
        })
        .await
    }

    /// [`Handover::resolve`] without a future of its own (a stream keeps only the boxed
    /// hand-over between polls): the outcome when the decoding is done (a plain message
    /// is decoded now), else the hand-over back, to be polled again when `cx` is woken.
    // The queue holds boxes: taking the box frees it here.
    #[allow(clippy::boxed_local)]
    pub(crate) fn poll_resolve(
        self: Box<Self>,
        cx: &mut Context<'_>,
    ) -> Result<Option<ReadyMessage>, Box<Self>> {
        let Handover {
            app,
            persistent_id,
            decoding,
            taken,
            events,
        } = *self;
        let outcome = match decoding {
            Decoding::Plain(stanza, keys, received) => {
                Ok((message::decode(&stanza, keys.as_deref(), received), stanza))
            }
            Decoding::Decrypting(mut handle) => match Pin::new(&mut handle).poll(cx) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => {
                    return Err(Box::new(Handover {
                        app,
                        persistent_id,
                        decoding: Decoding::Decrypting(handle),
                        taken,
                        events,
                    }));
                }
            },
        };
        // The app's name and the id are copied for the reports only: a message for the
        // application takes none.
        let report = |persistent_id: &Option<Arc<str>>| {
            (app.to_string(), persistent_id.as_deref().map(str::to_owned))
        };
        let (decoded, stanza) = match outcome {
            Ok(done) => done,
            Err(error) => {
                let (app, id) = report(&persistent_id);
                warn!(%app, ?id, "the decryption task failed: {error}");
                acknowledge(&taken, persistent_id);
                let _ = events.send(Event::DecryptionPanicked {
                    app,
                    persistent_id: id,
                    message: error.to_string(),
                });
                return Ok(None);
            }
        };
        Ok(match decoded {
            Decoded::Message(message) => Some(ReadyMessage {
                app,
                message,
                stanza: Stanza::from(stanza),
                persistent_id,
                taken,
            }),
            Decoded::DeletedMessages { count } => {
                let (app, _) = report(&persistent_id);
                warn!(%app, ?count, "the server dropped messages it could not deliver");
                acknowledge(&taken, persistent_id);
                let _ = events.send(Event::DeletedMessages { app, count });
                None
            }
            Decoded::Undecryptable(error) => {
                let (app, id) = report(&persistent_id);
                warn!(%app, ?id, "cannot decrypt a message: {error}");
                acknowledge(&taken, persistent_id);
                let _ = events.send(Event::Undecryptable {
                    app,
                    persistent_id: id,
                    error,
                    stanza: Stanza::from(stanza),
                });
                None
            }
        })
    }
}

impl ReadyMessage {
    /// The handlers are done with the message: acknowledge it.
    pub(crate) fn handled(self) {
        acknowledge(&self.taken, self.persistent_id);
    }

    /// Hands the message to the application; it is acknowledged when the [`Incoming`]
    /// is dropped.
    pub(crate) fn taken(self) -> Incoming {
        Incoming {
            app: self.app.to_string(),
            _ack: AckOnDrop {
                id: self.persistent_id,
                taken: self.taken,
            },
            message: *self.message,
            stanza: self.stanza,
        }
    }
}

/// Acknowledges one message when dropped.
#[derive(Debug)]
struct AckOnDrop {
    id: Option<Arc<str>>,
    taken: Arc<TakenIds>,
}

impl Drop for AckOnDrop {
    fn drop(&mut self) {
        acknowledge(&self.taken, self.id.take());
    }
}

fn acknowledge(taken: &TakenIds, id: Option<Arc<str>>) {
    if let Some(id) = id {
        taken.push(id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn taken_ids_come_back_in_order_and_wake_the_waiter() {
        let taken = Arc::new(TakenIds::default());
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_id_is_left_waiting_when_only_the_first_of_a_run_wakes() {
        // Only a push into an empty list notifies: ids pushed while the waiter runs, or
        // between its take and its wait, must still reach it.
        let taken = Arc::new(TakenIds::default());
        let waiter = {
            let taken = Arc::clone(&taken);
            tokio::spawn(async move {
                let mut seen = 0;
                while seen < 10_000 {
                    seen += taken.wait().await.len();
                }
                seen
            })
        };
        for i in 0..10_000 {
            taken.push(Arc::from(format!("0:{i}")));
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("every id reached the waiter")
            .unwrap();
        assert_eq!(seen, 10_000);
    }
}

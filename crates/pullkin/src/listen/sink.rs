//! Handing messages onward durably: the [`Sink`] trait, [`deliver_batch`] (the retry and
//! park loop) and [`Pullkin::forward`], which acknowledges a message to Google only once
//! a sink has durably taken it.
//!
//! A sink takes plain records, [`SinkMessage`]s (the app, the idempotency key, the
//! persistent id and the JSON line), not live [`Incoming`]s: anything that holds
//! messages — the listener, or a reader of messages stored elsewhere, such as the
//! fleet's consumers — can hand them to the same sinks.
//!
//! [`deliver_batch`] calls [`Sink::deliver`] until the sink answers for every message of
//! the batch: while it fails, the batch is retried with backoff (each failure reported
//! as [`SinkEvent::Failed`]); a message the sink rejects for good is reported as
//! [`SinkEvent::Rejected`] and parked in [`ForwardConfig::park`] (a dead-letter sink):
//! never dropped silently, never retried forever. Only once it returns may the caller
//! count the batch as handed on (acknowledge it, commit a cursor).
//!
//! The forwarder takes each app's messages in batches (whatever arrived, up to
//! [`ForwardConfig::batch`]) and hands their records to [`deliver_batch`], holding the
//! [`Incoming`]s meanwhile. Only when it returns are the messages released — and
//! releasing is what lets the listener store their ids and acknowledge them. While a
//! sink fails, the batch is held: the app's queue fills, its connection stops reading,
//! and nothing is acknowledged, so the messages stay with Google. The events become
//! [`Event::SinkFailed`] and [`Event::SinkRejected`].
//!
//! Order: batches of one app go to the sink one after the other, in the order the
//! server sent them; apps are forwarded side by side. A sink that keeps several
//! requests in flight says in its documentation what order its destination sees.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fcm_http::RetryPolicy;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::broadcast;
use tracing::warn;

use super::Pullkin;
use super::delivery::Incoming;
use crate::PullkinError;
use crate::error::SinkError;
use crate::event::Event;

/// What [`Sink::deliver`] returns.
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The destination has it, durably.
    Taken,
    /// The destination refused it for good (retrying cannot help); the reason.
    Rejected(String),
}

/// One message as a [`Sink`] takes it: a plain record, built from a live [`Incoming`]
/// (`From<&Incoming>`) or from a message stored elsewhere ([`SinkMessage::new`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SinkMessage {
    /// The app (the identity) the message came to.
    pub app: String,
    /// The idempotency key, `<app>:<persistent_id>` ([`Incoming::key`]); `None` for the
    /// rare message without a persistent id.
    pub key: Option<String>,
    /// The message's persistent id.
    pub persistent_id: Option<String>,
    /// The message as one JSON line ([`Incoming::to_json`], as `pullkin listen` prints it).
    pub line: serde_json::Value,
}

impl SinkMessage {
    /// A record of a message.
    #[must_use]
    pub fn new(
        app: impl Into<String>,
        key: Option<String>,
        persistent_id: Option<String>,
        line: serde_json::Value,
    ) -> Self {
        Self {
            app: app.into(),
            key,
            persistent_id,
            line,
        }
    }
}

impl From<&Incoming> for SinkMessage {
    fn from(incoming: &Incoming) -> Self {
        Self {
            app: incoming.app.clone(),
            key: incoming.key(),
            persistent_id: incoming.message.persistent_id.clone(),
            line: incoming.to_json(),
        }
    }
}

/// A destination that takes messages durably: a broker, a webhook, a file, a database.
pub trait Sink: Send + Sync + fmt::Debug {
    /// The sink's name, for events and logs (e.g. its URL without credentials).
    fn name(&self) -> &str;

    /// Takes a batch of messages (in order; from [`Pullkin::forward`], one app's);
    /// returns only once the destination has durably taken them, with one [`Outcome`]
    /// per message, in order. An `Err` means nothing is known to be taken: the batch
    /// comes again, so a sink should make redeliveries harmless (each message has an
    /// [`idempotency key`](SinkMessage::key)).
    fn deliver<'a>(&'a self, batch: &'a [SinkMessage]) -> SinkFuture<'a, Vec<Outcome>>;
}

/// What [`deliver_batch`] reports while it delivers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SinkEvent {
    /// A sink (the main one or the park) failed to take a batch; it is retried.
    Failed {
        /// The sink's name.
        sink: String,
        /// Why.
        error: Arc<SinkError>,
        /// How many attempts of this batch failed so far.
        failures: u32,
        /// How long until the next attempt.
        delay: Duration,
    },
    /// The sink rejected a message for good; it is parked next (when a park is
    /// configured).
    Rejected {
        /// The sink's name.
        sink: String,
        /// The message's app.
        app: String,
        /// The message's idempotency key.
        key: Option<String>,
        /// The message's persistent id.
        persistent_id: Option<String>,
        /// The sink's reason.
        reason: String,
    },
}

/// How [`Pullkin::forward`] batches and retries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForwardConfig {
    /// At most this many messages per [`Sink::deliver`] (default 256).
    pub batch: usize,
    /// Backoff between attempts of a failing batch (its attempt count is not used: a
    /// batch is retried until it is taken or the listener stops; default 100 ms doubling
    /// up to 10 s, with jitter). A destination's `Retry-After` is waited for too.
    pub retry: RetryPolicy,
    /// Where messages the sink rejects for good are parked (default: nowhere: they are
    /// reported and logged, then released).
    pub park: Option<Arc<dyn Sink>>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            retry: RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(10)),
            park: None,
        }
    }
}

impl Pullkin {
    /// Hands every message of the named apps to `sink`, acknowledging each to Google only
    /// once the sink took it (see the module documentation), until those apps are
    /// stopped. Only one consumer per app: as with [`Pullkin::listen`], an app already
    /// consumed is an error.
    pub async fn forward(
        &self,
        apps: &[&str],
        sink: Arc<dyn Sink>,
        config: ForwardConfig,
    ) -> Result<(), PullkinError> {
        let mut streams = Vec::with_capacity(apps.len());
        for app in apps {
            streams.push(((*app).to_owned(), Box::pin(self.listen(app)?)));
        }
        let config = Arc::new(config);
        let forwards = streams.into_iter().map(|(app, stream)| {
            forward_app(
                app,
                stream,
                Arc::clone(&sink),
                Arc::clone(&config),
                self.events.clone(),
            )
        });
        futures_util::future::join_all(forwards).await;
        Ok(())
    }
}

/// Forwards one app's stream until it ends.
async fn forward_app(
    app: String,
    mut stream: Pin<Box<impl Stream<Item = Incoming>>>,
    sink: Arc<dyn Sink>,
    config: Arc<ForwardConfig>,
    events: broadcast::Sender<Event>,
) {
    let max = config.batch.max(1);
    while let Some(first) = stream.next().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match stream.next().now_or_never() {
                Some(Some(incoming)) => batch.push(incoming),
                _ => break,
            }
        }
        let records: Vec<SinkMessage> = batch.iter().map(SinkMessage::from).collect();
        deliver_batch(&*sink, &records, &config, |event| {
            let _ = events.send(match event {
                SinkEvent::Failed {
                    sink,
                    error,
                    failures,
                    delay,
                } => {
                    warn!(%app, %sink, failures, ?delay, "sink failed: {error}; retrying");
                    Event::SinkFailed {
                        app: app.clone(),
                        sink,
                        error,
                        failures,
                    }
                }
                SinkEvent::Rejected {
                    sink,
                    key,
                    persistent_id,
                    reason,
                    ..
                } => {
                    warn!(%app, %sink, ?key, "rejected for good: {reason}");
                    Event::SinkRejected {
                        app: app.clone(),
                        sink,
                        persistent_id,
                        reason,
                    }
                }
            });
        })
        .await;
        // Released: the listener may now store the ids and acknowledge them.
        drop(batch);
    }
}

/// Delivers `batch` to `sink` with the semantics of [`Pullkin::forward`]: retries with
/// backoff ([`ForwardConfig::retry`], and a destination's `Retry-After`) until the sink
/// answers for every message, reporting each failure as [`SinkEvent::Failed`]; then
/// reports each message rejected for good as [`SinkEvent::Rejected`] and parks it in
/// [`ForwardConfig::park`] (retried likewise). Returns the sink's outcomes, one per
/// message; once it returns, every message is taken or rejected and parked, so the
/// caller may count the batch as handed on (acknowledge it, commit a cursor). It logs
/// nothing itself: `on_event` reports (as [`Pullkin::forward`] does, with `tracing`).
/// [`ForwardConfig::batch`] is not used: the caller sizes the batch.
///
/// It never gives up: drop the future to stop (nothing is then known to be taken).
pub async fn deliver_batch(
    sink: &dyn Sink,
    batch: &[SinkMessage],
    config: &ForwardConfig,
    on_event: impl Fn(SinkEvent),
) -> Vec<Outcome> {
    let outcomes = deliver_until_taken(sink, batch, &config.retry, &on_event).await;
    for (message, outcome) in batch.iter().zip(&outcomes) {
        if let Outcome::Rejected(reason) = outcome {
            on_event(SinkEvent::Rejected {
                sink: sink.name().to_owned(),
                app: message.app.clone(),
                key: message.key.clone(),
                persistent_id: message.persistent_id.clone(),
                reason: reason.clone(),
            });
            if let Some(park) = &config.park {
                let single = std::slice::from_ref(message);
                deliver_until_taken(&**park, single, &config.retry, &on_event).await;
            }
        }
    }
    outcomes
}

/// Delivers a batch, retrying with backoff until the sink answers for every message.
async fn deliver_until_taken(
    sink: &dyn Sink,
    batch: &[SinkMessage],
    retry: &RetryPolicy,
    on_event: &impl Fn(SinkEvent),
) -> Vec<Outcome> {
    let mut failures: u32 = 0;
    loop {
        let error = match sink.deliver(batch).await {
            Ok(outcomes) if outcomes.len() == batch.len() => return outcomes,
            Ok(outcomes) => SinkError::unavailable(
                sink.name(),
                format!(
                    "answered for {} messages of a batch of {}",
                    outcomes.len(),
                    batch.len()
                ),
            ),
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        let backoff = retry.delay(failures, &mut rand::thread_rng());
        let delay = error
            .retry_after()
            .map_or(backoff, |asked| asked.min(retry.max_delay()).max(backoff));
        on_event(SinkEvent::Failed {
            sink: sink.name().to_owned(),
            error: Arc::new(error),
            failures,
            delay,
        });
        tokio::time::sleep(delay).await;
    }
}

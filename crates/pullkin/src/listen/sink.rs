//! Handing messages onward durably: the [`Sink`] trait and [`Pullkin::forward`], which
//! acknowledges a message to Google only once a sink has durably taken it.
//!
//! The forwarder takes each app's messages in batches (whatever arrived, up to
//! [`ForwardConfig::batch`]) and calls [`Sink::deliver`]. Only when it returns are the
//! messages released — and releasing is what lets the listener store their ids and
//! acknowledge them. While a sink fails, the batch is held and retried with backoff:
//! the app's queue fills, its connection stops reading, and nothing is acknowledged, so
//! the messages stay with Google. A message the sink rejects for good is reported as
//! [`Event::SinkRejected`] and parked in [`ForwardConfig::park`] (a dead-letter sink)
//! before it is released: never dropped silently, never retried forever.
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

/// A destination that takes messages durably: a broker, a webhook, a file, a database.
pub trait Sink: Send + Sync + fmt::Debug {
    /// The sink's name, for events and logs (e.g. its URL without credentials).
    fn name(&self) -> &str;

    /// Takes a batch of messages (one app's, in order); returns only once the
    /// destination has durably taken them, with one [`Outcome`] per message, in order.
    /// An `Err` means nothing is known to be taken: the batch comes again, so a sink
    /// should make redeliveries harmless (each message has an
    /// [`idempotency key`](Incoming::key)).
    fn deliver<'a>(&'a self, batch: &'a [Incoming]) -> SinkFuture<'a, Vec<Outcome>>;
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
        let outcomes = deliver_until_taken(&app, &*sink, &batch, &config.retry, &events).await;
        for (incoming, outcome) in batch.iter().zip(&outcomes) {
            if let Outcome::Rejected(reason) = outcome {
                warn!(%app, sink = sink.name(), key = ?incoming.key(), "rejected for good: {reason}");
                let _ = events.send(Event::SinkRejected {
                    app: app.clone(),
                    sink: sink.name().to_owned(),
                    persistent_id: incoming.message.persistent_id.clone(),
                    reason: reason.clone(),
                });
                if let Some(park) = &config.park {
                    let single = std::slice::from_ref(incoming);
                    deliver_until_taken(&app, &**park, single, &config.retry, &events).await;
                }
            }
        }
        // Released: the listener may now store the ids and acknowledge them.
        drop(batch);
    }
}

/// Delivers a batch, retrying with backoff until the sink answers for every message.
async fn deliver_until_taken(
    app: &str,
    sink: &dyn Sink,
    batch: &[Incoming],
    retry: &RetryPolicy,
    events: &broadcast::Sender<Event>,
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
        warn!(%app, sink = sink.name(), failures, ?delay, "sink failed: {error}; retrying");
        let _ = events.send(Event::SinkFailed {
            app: app.to_owned(),
            sink: sink.name().to_owned(),
            error: Arc::new(error),
            failures,
        });
        tokio::time::sleep(delay).await;
    }
}

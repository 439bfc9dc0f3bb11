//! A real `nats-server` with JetStream for the sink soak and benchmarks (on 127.0.0.1, a
//! free port and a store directory of its own, which it keeps across a kill and a
//! restart; killed when dropped; the binary is `NATS_SERVER`, or where Debian installs
//! it), and what they read of its streams.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use serde_json::Value;

use crate::Result;

/// The server itself is the tests' (`pullkin-test-support`'s `nats` feature), used
/// through its `try_` calls, which fail with a message instead of panicking.
pub(crate) use pullkin_test_support::nats::NatsServer;

/// Creates the stream `name` (file storage) for `subjects`, dropping repeated
/// `Nats-Msg-Id`s within `window`.
pub(crate) async fn create_stream(
    client: &async_nats::Client,
    name: &str,
    subjects: &str,
    window: Duration,
) -> Result {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            duplicate_window: window,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| format!("creating the stream {name}: {e}"))
}

/// How many messages the stream holds; `None` when the server does not answer.
pub(crate) async fn stream_count(client: &async_nats::Client, name: &str) -> Option<u64> {
    let mut stream = jetstream::new(client.clone()).get_stream(name).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// The stream's last sequence number; `None` when the server does not answer.
pub(crate) async fn last_sequence(client: &async_nats::Client, name: &str) -> Option<u64> {
    let mut stream = jetstream::new(client.clone()).get_stream(name).await.ok()?;
    Some(stream.info().await.ok()?.state.last_sequence)
}

/// A message as the stream holds it.
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) msg_id: Option<String>,
    /// The payload, parsed (`Null` when it is not JSON).
    pub(crate) json: Value,
}

/// Every message of the stream, read from the start with a pull consumer.
pub(crate) async fn read_stream(client: &async_nats::Client, name: &str) -> Result<Vec<Stored>> {
    let error = |what: &str, e: &dyn std::fmt::Display| format!("reading {name}: {what}: {e}");
    let mut stream = jetstream::new(client.clone())
        .get_stream(name)
        .await
        .map_err(|e| error("the stream", &e))?;
    let held = stream
        .info()
        .await
        .map_err(|e| error("its info", &e))?
        .state
        .messages;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| error("a consumer", &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| error("the messages", &e))?;
    let mut out = Vec::new();
    while (out.len() as u64) < held {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .map_err(|_| format!("reading {name}: only {} of {held} messages came", out.len()))?
            .ok_or_else(|| format!("reading {name}: the consumer ended"))?
            .map_err(|e| error("a message", &e))?;
        let sequence = message
            .info()
            .map_err(|e| error("a message's info", &e))?
            .stream_sequence;
        out.push(Stored {
            sequence,
            subject: message.subject.to_string(),
            msg_id: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned()),
            json: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

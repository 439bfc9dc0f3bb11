#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

//! ## Layout
//!
//! - `nats`: [`NatsSink`], JetStream publishing with `Nats-Msg-Id` and awaited PubAcks;
//! - `webhook`: [`WebhookSink`], HTTPS POSTs with `Idempotency-Key` and an optional
//!   HMAC-SHA256 signature;
//! - `file`: [`FileSink`], JSON lines appended and synced to a file (a dead-letter park).
//!
//! Each implements [`pullkin::Sink`]; this crate uses `pullkin`, `fcm-http` (the
//! webhook's HTTP client) and `async-nats`, and nothing uses it but the command line.

mod file;
mod nats;
mod webhook;

pub use file::FileSink;
pub use nats::{NatsConfig, NatsSink, Storage, StreamSpec};
pub use webhook::{WebhookConfig, WebhookSink};

/// Errors setting up a sink (a delivery's errors are [`pullkin::SinkError`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sink's URL or settings are unusable.
    #[error("sink {sink}: {reason}")]
    Config {
        /// The sink, as given.
        sink: String,
        /// What is wrong.
        reason: String,
    },
    /// The destination could not be reached while setting up.
    #[error("sink {sink}: {source}")]
    Connect {
        /// The sink.
        sink: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

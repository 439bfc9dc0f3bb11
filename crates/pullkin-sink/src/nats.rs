//! [`NatsSink`]: to be written.

/// Settings of a [`NatsSink`].
#[derive(Debug, Clone, Default)]
pub struct NatsConfig {}

/// A NATS JetStream sink.
#[derive(Debug)]
pub struct NatsSink {}

//! [`WebhookSink`]: to be written.

/// Settings of a [`WebhookSink`].
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {}

/// A webhook sink.
#[derive(Debug)]
pub struct WebhookSink {}

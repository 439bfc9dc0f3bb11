//! [`NatsSink`]: messages published to NATS JetStream, each with `Nats-Msg-Id:
//! <app>:<persistent_id>`, and counted as taken only once the stream's PubAck came.
//!
//! **Guarantee.** A message is acknowledged to FCM only after JetStream stored it, and a
//! redelivery (FCM's, or this sink's own retry of a failed batch) within the stream's
//! duplicate window is dropped by the server by its message id: every message is in the
//! stream exactly once (a redelivery later than the window — e.g. after a listener was
//! down longer — is stored again, with the same `Nats-Msg-Id` header for consumers to
//! drop).
//!
//! **Order.** The sink publishes over one connection, in the order of each batch, and
//! pullkin hands one app's batches over one after the other: a stream sees one app's
//! messages in the order the FCM server sent them. Apps are forwarded side by side, so
//! messages of different apps interleave. After a connection loss a retried batch may
//! store a message that was lost in flight after later ones that got through.
//!
//! **Why PubAcks are awaited after the whole batch.** Waiting for each PubAck before the
//! next publish would cost one round trip per message; the sink publishes every message
//! of the batch first (pipelined on the connection) and then awaits all PubAcks
//! together, so a batch costs about one round trip and throughput is bounded by the
//! server, not by latency.
//!
//! **Errors.** A PubAck error the server gives again for the same message (larger than
//! the server's `max_payload` or the stream's maximum message size) makes that message
//! [`Outcome::Rejected`]; anything else (no stream, no responders, timeout,
//! disconnected) fails the batch with [`SinkError`] and pullkin retries it — the message
//! ids make the repeat harmless. A message without a persistent id has no key and is
//! published without `Nats-Msg-Id`: a retried batch may store it twice.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode, stream};
use async_nats::{ConnectOptions, HeaderMap, HeaderValue, header::NATS_MESSAGE_ID};
use bytes::Bytes;
use pullkin::{Outcome, Sink, SinkError, SinkFuture, SinkMessage};
use tokio::sync::Semaphore;
use url::Url;

use crate::Error;

/// The subject template when the URL has no path.
const DEFAULT_TEMPLATE: &str = "pullkin.{app}";
/// The placeholder of the subject template.
const APP: &str = "{app}";
/// The NATS port when the URL names none.
const DEFAULT_PORT: u16 = 4222;
/// Messages published before their PubAcks are awaited, at most (a longer batch goes in
/// windows of this many).
const WINDOW: usize = 512;
/// PubAcks awaited at once across all apps: a window takes its permits all at once, so
/// apps forwarded side by side never each hold part of what they need.
const IN_FLIGHT: usize = 8 * WINDOW;

/// Settings of a [`NatsSink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Limit on connecting (TCP, TLS, the server's greeting) plus creating or confirming
    /// the stream in [`NatsSink::connect`] (default 5 s).
    pub connect_timeout: Duration,
    /// How long a published message's PubAck is waited for before the batch counts as
    /// failed (default 5 s).
    pub ack_timeout: Duration,
    /// The stream to create at connect if it does not exist yet (default: none; the
    /// messages then need a stream that exists and takes their subjects). An existing
    /// stream of that name is used as it is.
    pub create_stream: Option<StreamSpec>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            create_stream: None,
        }
    }
}

impl NatsConfig {
    /// These settings, creating the stream `name` at connect if it is missing (file
    /// storage, a duplicate window of 2 minutes, the subjects of the URL's template).
    #[must_use]
    pub fn with_stream(mut self, name: impl Into<String>) -> Self {
        self.create_stream = Some(StreamSpec::new(name));
        self
    }
}

/// A JetStream stream for [`NatsConfig::create_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSpec {
    /// Its name.
    pub name: String,
    /// The subjects it takes; empty (the default) means those of the URL's subject
    /// template: `{app}` as `*`, or as `>` when it is the last token.
    pub subjects: Vec<String>,
    /// Messages with a `Nats-Msg-Id` seen within this window are dropped (default
    /// 2 minutes): how long a redelivery stays harmless.
    pub duplicate_window: Duration,
    /// Where it keeps messages (default [`Storage::File`]).
    pub storage: Storage,
}

impl StreamSpec {
    /// A stream of this name, with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subjects: Vec::new(),
            duplicate_window: Duration::from_secs(120),
            storage: Storage::File,
        }
    }
}

/// Where a created stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Storage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// Publishes each message to JetStream (`nats://[user:pass@]host:port/<subject
/// template>`, the template's `{app}` replaced by the message's app) and awaits its
/// PubAck; see the module documentation for the guarantee and order.
pub struct NatsSink {
    name: String,
    template: String,
    jetstream: jetstream::Context,
    in_flight: Arc<Semaphore>,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A parsed sink URL.
#[derive(PartialEq, Eq)]
struct Target {
    /// `nats://host:port` or `tls://host:port`, for the client.
    server: String,
    /// The subject template.
    template: String,
    user: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("template", &self.template)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Target {
    /// The sink's name: the URL without credentials.
    fn name(&self) -> String {
        format!("{}/{}", self.server, self.template)
    }

    fn parse(raw: &str) -> Result<Self, Error> {
        let config = |reason: String| Error::Config {
            sink: redact(raw),
            reason,
        };
        let url = Url::parse(raw).map_err(|e| config(format!("not a URL: {e}")))?;
        let scheme = url.scheme();
        if scheme != "nats" && scheme != "tls" {
            return Err(config(format!(
                "the scheme is {scheme:?}; a NATS sink is nats://host:port/subject or tls://…"
            )));
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| config("no host".to_owned()))?;
        let port = url.port().unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(config("port 0".to_owned()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(config(
                "a query or fragment is not understood (the path is the subject)".to_owned(),
            ));
        }
        let path = percent_decode(url.path().trim_start_matches('/'))
            .ok_or_else(|| config("the subject is not UTF-8".to_owned()))?;
        let template = if path.is_empty() {
            DEFAULT_TEMPLATE.to_owned()
        } else {
            path
        };
        let example = template.replace(APP, "app");
        if example.contains(['{', '}']) {
            return Err(config(format!(
                "subject template {template:?}: the only placeholder is {APP}"
            )));
        }
        if let Some(problem) = subject_problem(&example) {
            return Err(config(format!("subject template {template:?}: {problem}")));
        }
        let decode = |part: &str| {
            percent_decode(part).ok_or_else(|| config("the credentials are not UTF-8".to_owned()))
        };
        let user = Some(url.username())
            .filter(|user| !user.is_empty())
            .map(decode)
            .transpose()?;
        let password = url.password().map(decode).transpose()?;
        Ok(Self {
            server: format!("{scheme}://{host}:{port}"),
            template,
            user,
            password,
        })
    }

    /// The subjects a created stream takes when its spec names none.
    fn stream_subjects(&self) -> Vec<String> {
        let template = &self.template;
        let subject = match template.strip_suffix(APP) {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('.') => {
                format!("{}>", prefix.replace(APP, "*"))
            }
            _ => template.replace(APP, "*"),
        };
        vec![subject]
    }
}

/// What makes `subject` unusable as a NATS publish subject, if anything.
fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        Some("it is empty")
    } else if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("NATS subjects cannot hold white space or control characters")
    } else if subject.split('.').any(str::is_empty) {
        Some("NATS subjects cannot hold an empty token (a leading, trailing or double '.')")
    } else if subject.split('.').any(|token| token == "*" || token == ">") {
        Some("messages cannot be published to a wildcard ('*' or '>')")
    } else {
        None
    }
}

/// `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let value = hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The URL as given with any user info replaced by `***`, for naming a sink whose URL
/// could not be used.
fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        // No authority: nothing looks like credentials, unless an '@' does.
        return match raw.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => raw.to_owned(),
        };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => raw.to_owned(),
    }
}

impl NatsSink {
    /// Connects to the server of `url` (`nats://[user:pass@]host:port/<subject
    /// template>`, or `tls://` for TLS; the template may hold `{app}` and defaults to
    /// `pullkin.{app}`), and creates or confirms the stream of
    /// [`NatsConfig::create_stream`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL that is not one or a subject template NATS cannot
    /// take; [`Error::Connect`] when the server cannot be reached, refuses the
    /// credentials, or the stream cannot be created, within
    /// [`NatsConfig::connect_timeout`]. Neither shows the password.
    pub async fn connect(url: &str, config: NatsConfig) -> Result<Self, Error> {
        let target = Target::parse(url)?;
        let name = target.name();
        let connect_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
            sink: name.clone(),
            source,
        };
        let mut options = ConnectOptions::new()
            .name("pullkin")
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.ack_timeout));
        match (&target.user, &target.password) {
            (Some(user), Some(password)) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            (Some(token), None) => options = options.token(token.clone()),
            (None, Some(password)) => {
                options = options.user_and_password(String::new(), password.clone());
            }
            (None, None) => {}
        }
        let setting_up = async {
            let client = options.connect(target.server.as_str()).await?;
            let jetstream = jetstream::ContextBuilder::new()
                .timeout(config.ack_timeout)
                // The sink bounds its PubAcks itself (`IN_FLIGHT`); never wait for a
                // permit inside the client.
                .backpressure_on_inflight(false)
                .max_ack_inflight(4 * IN_FLIGHT)
                .build(client);
            if let Some(spec) = &config.create_stream {
                let subjects = if spec.subjects.is_empty() {
                    target.stream_subjects()
                } else {
                    spec.subjects.clone()
                };
                jetstream
                    .get_or_create_stream(stream::Config {
                        name: spec.name.clone(),
                        subjects,
                        duplicate_window: spec.duplicate_window,
                        storage: match spec.storage {
                            Storage::File => stream::StorageType::File,
                            Storage::Memory => stream::StorageType::Memory,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("stream {:?}: {e}", spec.name))?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(jetstream)
        };
        let jetstream = tokio::time::timeout(config.connect_timeout, setting_up)
            .await
            .map_err(|_| {
                connect_error(format!("no connection within {:?}", config.connect_timeout).into())
            })?
            .map_err(connect_error)?;
        Ok(Self {
            name,
            template: target.template,
            jetstream,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
        })
    }

    /// Publishes a window of messages, then awaits their PubAcks.
    async fn deliver_window(&self, window: &[SinkMessage]) -> Result<Vec<Outcome>, SinkError> {
        let permits = u32::try_from(window.len()).unwrap_or(u32::MAX);
        let _permits = self
            .in_flight
            .acquire_many(permits)
            .await
            .map_err(|e| SinkError::unavailable(&self.name, e))?;
        let mut pending = Vec::with_capacity(window.len());
        for msg in window {
            pending.push(match self.publish(msg).await {
                Ok(ack) => Pending::Ack(ack),
                Err(Failure::Rejected(reason)) => Pending::Done(Outcome::Rejected(reason)),
                Err(Failure::Unavailable(error)) => return Err(error),
            });
        }
        let answers = futures_util::future::join_all(pending.into_iter().map(|p| async move {
            match p {
                Pending::Ack(ack) => ack.await.map(|_| Outcome::Taken),
                Pending::Done(outcome) => Ok(outcome),
            }
        }))
        .await;
        let mut outcomes = Vec::with_capacity(window.len());
        for (msg, answer) in window.iter().zip(answers) {
            outcomes.push(match answer {
                Ok(outcome) => outcome,
                Err(e) if is_permanent(&e) => Outcome::Rejected(e.to_string()),
                Err(e) => return Err(self.unavailable(msg, &e)),
            });
        }
        Ok(outcomes)
    }

    /// Sends one message; the future of its PubAck.
    async fn publish(&self, msg: &SinkMessage) -> Result<PublishAckFuture, Failure> {
        let subject = self.template.replace(APP, &msg.app);
        if let Some(problem) = subject_problem(&subject) {
            return Err(Failure::Rejected(format!(
                "subject {subject:?} (app {:?}): {problem}",
                msg.app
            )));
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = &msg.key {
            let value: HeaderValue = key.parse().map_err(|_| {
                Failure::Rejected(format!("key {key:?} cannot be a Nats-Msg-Id header"))
            })?;
            headers.insert(NATS_MESSAGE_ID, value);
        }
        let payload = Bytes::from(msg.line.to_string());
        match self
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await
        {
            Ok(ack) => Ok(ack),
            Err(e) if is_permanent(&e) => Err(Failure::Rejected(e.to_string())),
            Err(e) => Err(Failure::Unavailable(self.unavailable(msg, &e))),
        }
    }

    fn unavailable(&self, msg: &SinkMessage, error: &impl fmt::Display) -> SinkError {
        let what = msg.key.clone().unwrap_or_else(|| msg.app.clone());
        SinkError::unavailable(&self.name, format!("{what}: {error}"))
    }
}

/// A message published, or already decided.
enum Pending {
    Ack(PublishAckFuture),
    Done(Outcome),
}

/// Why a message was not published.
enum Failure {
    Rejected(String),
    Unavailable(SinkError),
}

/// Whether the server would refuse the same message again: too large for the
/// connection or for the stream.
fn is_permanent(error: &jetstream::context::PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::MaxPayloadExceeded => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| {
                matches!(
                    e.error_code(),
                    ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                        | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
                )
            }),
        _ => false,
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, batch: &'a [SinkMessage]) -> SinkFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for window in batch.chunks(WINDOW) {
                outcomes.extend(self.deliver_window(window).await?);
            }
            Ok(outcomes)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(raw: &str) -> Result<Target, String> {
        Target::parse(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn nats_urls_parse_into_server_template_and_credentials() {
        let target = parse("nats://alice:s%40cret@example.com:4333/fcm.{app}.in").unwrap();
        assert_eq!(target.server, "nats://example.com:4333");
        assert_eq!(target.template, "fcm.{app}.in");
        assert_eq!(target.user.as_deref(), Some("alice"));
        assert_eq!(target.password.as_deref(), Some("s@cret"));
        assert_eq!(target.name(), "nats://example.com:4333/fcm.{app}.in");
        assert_eq!(target.stream_subjects(), ["fcm.*.in"]);

        let target = parse("nats://127.0.0.1").unwrap();
        assert_eq!(target.name(), "nats://127.0.0.1:4222/pullkin.{app}");
        assert_eq!(target.stream_subjects(), ["pullkin.>"]);
        assert_eq!(target.user, None);

        let target = parse("tls://[::1]:4222/all").unwrap();
        assert_eq!(target.name(), "tls://[::1]:4222/all");
        assert_eq!(target.stream_subjects(), ["all"]);

        let target = parse("nats://tok@h/{app}").unwrap();
        assert_eq!(target.user.as_deref(), Some("tok"));
        assert_eq!(target.stream_subjects(), [">"]);
    }

    #[test]
    fn nats_urls_that_cannot_work_are_config_errors_without_the_password() {
        for raw in [
            "nats://:0/",
            "http://x",
            "nats://h:0/x",
            "nats://h/a b",
            "nats://h/a..{app}",
            "nats://h/a.*",
            "nats://h/a.>",
            "nats://h/{ap}",
            "nats://h/x?y=1",
            "nats://u:hunter2@h/a%20b",
            "nats://u:hunter2@/x",
            "not a url u:hunter2@x",
        ] {
            let error = Target::parse(raw).unwrap_err();
            assert!(matches!(error, Error::Config { .. }), "{raw}: {error:?}");
            let text = error.to_string();
            assert!(!text.contains("hunter2"), "{raw}: {text}");
            assert!(text.starts_with("sink "), "{raw}: {text}");
            assert!(!text.contains('\n'), "{raw}: {text}");
        }
    }

    #[test]
    fn nats_redaction_hides_user_info() {
        assert_eq!(redact("nats://u:p@h:1/x@y"), "nats://***@h:1/x@y");
        assert_eq!(redact("nats://h:1/x"), "nats://h:1/x");
        assert_eq!(redact("u:p@h"), "***@h");
    }
}

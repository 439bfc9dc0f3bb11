//! What the server tasks share with the [`crate::Emulator`] handle: the settings fixed
//! at start ([`Config`]) and the locked [`State`], with the queuing paths every send API
//! goes through ([`Shared`]).
//!
//! May use `state`, `delivery`, `ids`, `types` and `error`; never the servers or the
//! facade.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mcs_codec::proto::DataMessageStanza;
use url::Url;

use crate::delivery::{self, WebPushEncoding};
use crate::error::Error;
use crate::ids;
use crate::state::{Queued, State};
use crate::topics::Condition;
use crate::types::{FcmRegistration, GcmRegistration, IidCommand, SendMessage, Sent};

/// The settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_queued_messages: usize,
    pub(crate) login_timeout: Duration,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) ack_on_any_frame: bool,
    pub(crate) api_key: Option<String>,
    pub(crate) max_frame_length: usize,
    /// Whether a newer login for a device closes its older connections.
    pub(crate) close_superseded: bool,
    /// Whether `/fcm/send` takes pushes without a VAPID `Authorization`.
    pub(crate) accept_unsigned_webpush: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_queued_messages: 10_000,
            login_timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            ack_on_any_frame: false,
            api_key: None,
            max_frame_length: mcs_codec::DEFAULT_MAX_FRAME_LENGTH,
            close_superseded: true,
            accept_unsigned_webpush: false,
        }
    }
}

/// What the server tasks share with the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) config: Config,
    pub(crate) base_url: Url,
    /// The emulator's start, the origin of every time it records.
    pub(crate) started: Instant,
    /// How far [`crate::Emulator::advance_clock`] moved the clock, in nanoseconds.
    clock_offset: AtomicU64,
}

/// How a queued message may expire or be replaced (docs/protocol.md §7.5).
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueOptions {
    /// The time to live; `None`: never expires. Zero: now or never.
    pub(crate) ttl: Option<Duration>,
    /// A Web Push `Topic`, with the token it was sent to.
    pub(crate) replace_key: Option<(String, String)>,
}

impl Shared {
    /// A fresh, empty state with these settings, served under `base_url`.
    pub(crate) fn new(config: Config, base_url: Url) -> Self {
        Self {
            state: Mutex::new(State::default()),
            config,
            base_url,
            started: Instant::now(),
            clock_offset: AtomicU64::new(0),
        }
    }

    /// The emulator's clock for times to live and VAPID expiry: the time since its start
    /// plus every [`crate::Emulator::advance_clock`].
    pub(crate) fn clock(&self) -> Duration {
        self.elapsed() + self.offset()
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Moves the emulator's clock forward.
    pub(crate) fn advance_clock(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .clock_offset
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(old.saturating_add(nanos))
            });
    }

    /// Seconds since the Unix epoch on the emulator's clock (wall clock plus the
    /// advances).
    pub(crate) fn unix_secs(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (wall + self.offset()).as_secs()
    }

    /// The time since the emulator's start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Locks the state. A panic while it was held cannot leave it inconsistent in a way
    /// that matters to an emulator, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `stanza` for a device (assigning its persistent id) and wakes its
    /// connection; it never expires.
    pub(crate) fn enqueue(
        &self,
        android_id: u64,
        stanza: DataMessageStanza,
    ) -> Result<String, Error> {
        self.enqueue_with(android_id, stanza, QueueOptions::default())
    }

    /// Queues `stanza` with a time to live and a replacement key (docs/protocol.md §7.5):
    /// a TTL-0 message for a device not connected now is dropped at once (counted as
    /// expired; its persistent id is still returned, as Google still accepts it).
    pub(crate) fn enqueue_with(
        &self,
        android_id: u64,
        mut stanza: DataMessageStanza,
        options: QueueOptions,
    ) -> Result<String, Error> {
        let now = self.clock();
        let mut state = self.lock();
        if state.shut_down {
            return Err(Error::ShutDown);
        }
        let device = state
            .devices
            .get_mut(&android_id)
            .ok_or(Error::UnknownDevice(android_id))?;
        let persistent_id = match stanza.persistent_id.take() {
            Some(id) if !id.is_empty() => id,
            _ => ids::persistent_id(),
        };
        stanza.persistent_id = Some(persistent_id.clone());
        let now_or_never = options.ttl == Some(Duration::ZERO);
        if now_or_never && device.current().is_none() {
            device.expired_messages += 1;
            tracing::debug!(android_id, %persistent_id, "TTL 0 and not connected: dropped");
            return Ok(persistent_id);
        }
        if let Some(key) = &options.replace_key {
            let replaced = device
                .queue
                .iter()
                .filter(|q| q.sent.is_none() && q.replace_key.as_ref() == Some(key))
                .count();
            device
                .queue
                .retain(|q| !(q.sent.is_none() && q.replace_key.as_ref() == Some(key)));
            if replaced > 0 {
                tracing::debug!(
                    android_id,
                    replaced,
                    "replaced by a newer message of its topic"
                );
            }
        }
        device.purge_expired(now, false);
        while device.queue.len() >= self.config.max_queued_messages.max(1) {
            device.queue.pop_front();
            device.dropped_messages += 1;
        }
        device.queue.push_back(Queued {
            persistent_id: persistent_id.clone(),
            stanza,
            sent: None,
            expires: options.ttl.filter(|t| !t.is_zero()).map(|t| now + t),
            now_or_never,
            replace_key: options.replace_key,
            waiting_since: device.current().is_none().then_some(now),
        });
        device.wake();
        tracing::debug!(android_id, %persistent_id, "message queued");
        Ok(persistent_id)
    }

    /// The registration behind a GCM or FCM token, with the web-push keys bound to it.
    pub(crate) fn resolve(
        &self,
        token: &str,
    ) -> Result<(GcmRegistration, Option<FcmRegistration>), Error> {
        self.lock()
            .resolve_token(token)
            .ok_or_else(|| Error::UnknownToken(token.to_owned()))
    }

    /// Resolves a token, builds its stanza (outside the lock) and queues it.
    fn queue_for_token(
        &self,
        token: &str,
        encrypted: bool,
        options: QueueOptions,
        build: impl FnOnce(&GcmRegistration) -> DataMessageStanza,
    ) -> Result<Sent, Error> {
        let (gcm, _) = self.resolve(token)?;
        let persistent_id = self.enqueue_with(gcm.android_id, build(&gcm), options)?;
        Ok(Sent {
            persistent_id,
            android_id: gcm.android_id,
            encrypted,
        })
    }

    /// Resolves a token and builds the stanza `messages:send` delivers, without queuing it.
    pub(crate) fn prepare_message(
        &self,
        token: &str,
        message: &SendMessage,
    ) -> Result<(u64, DataMessageStanza, bool), Error> {
        let (gcm, keys) = self.resolve(token)?;
        let from = message.from.as_deref().unwrap_or(delivery::DEFAULT_FROM);
        // Encryption runs outside the lock.
        let (stanza, encrypted) = delivery::send_stanza(&gcm, keys.as_ref(), message, from)?;
        Ok((gcm.android_id, stanza, encrypted))
    }

    /// Queues a stanza [`Shared::prepare_message`] built, with the message's TTL.
    pub(crate) fn enqueue_message(
        &self,
        android_id: u64,
        stanza: DataMessageStanza,
        message: &SendMessage,
    ) -> Result<String, Error> {
        let options = QueueOptions {
            ttl: Some(message.ttl.unwrap_or(delivery::DEFAULT_TTL)),
            replace_key: None,
        };
        self.enqueue_with(android_id, stanza, options)
    }

    /// The `messages:send` path: resolves the token, builds and queues the stanza.
    pub(crate) fn send_message(&self, token: &str, message: &SendMessage) -> Result<Sent, Error> {
        let (android_id, stanza, encrypted) = self.prepare_message(token, message)?;
        let persistent_id = self.enqueue_message(android_id, stanza, message)?;
        Ok(Sent {
            persistent_id,
            android_id,
            encrypted,
        })
    }

    /// The GCM tokens a topic or a condition reaches, in token order
    /// (docs/protocol.md §7.5): for a condition, every token subscribed to some topic
    /// whose topics satisfy it.
    pub(crate) fn audience(&self, target: &Audience) -> Vec<String> {
        let state = self.lock();
        match target {
            Audience::Topic(topic) => state
                .topics
                .get(topic)
                .map(|tokens| tokens.iter().cloned().collect())
                .unwrap_or_default(),
            Audience::Condition(condition) => {
                let mut tokens: Vec<String> = state
                    .token_topics
                    .iter()
                    .filter(|(_, topics)| condition.matches(&|t| topics.contains(t)))
                    .map(|(token, _)| token.clone())
                    .collect();
                tokens.sort();
                tokens
            }
        }
    }

    /// Sends a message to every registration a topic or condition reaches, `from` =
    /// `/topics/<topic>` for a topic (docs/protocol.md §7.1); returns one [`Sent`] per
    /// registration (none when nobody is subscribed).
    pub(crate) fn send_to_audience(
        &self,
        target: &Audience,
        message: &SendMessage,
    ) -> Result<Vec<Sent>, Error> {
        let mut message = message.clone();
        if let Audience::Topic(topic) = target {
            message.from = Some(format!("/topics/{topic}"));
        }
        let mut sent = Vec::new();
        for token in self.audience(target) {
            match self.send_message(&token, &message) {
                Ok(one) => sent.push(one),
                // Unregistered meanwhile: no longer in the audience.
                Err(Error::UnknownToken(_) | Error::UnknownDevice(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// The Web Push path: queues an already encrypted body for a GCM (or FCM) token,
    /// with its TTL; a `topic` replaces an undelivered message of the same topic.
    pub(crate) fn send_webpush(
        &self,
        token: &str,
        body: Bytes,
        encoding: WebPushEncoding,
        ttl: Duration,
        topic: Option<String>,
    ) -> Result<Sent, Error> {
        let options = QueueOptions {
            ttl: Some(ttl),
            replace_key: topic.clone().map(|t| (token.to_owned(), t)),
        };
        self.queue_for_token(token, true, options, |gcm| {
            delivery::webpush_stanza(gcm, body, encoding, ttl, topic)
        })
    }

    /// Queues a `deleted_messages` notice (`message_type=deleted_messages`,
    /// `total_deleted=<n>`) for the device behind a GCM or FCM token.
    pub(crate) fn send_deleted_messages(
        &self,
        token: &str,
        total_deleted: u32,
    ) -> Result<Sent, Error> {
        self.queue_for_token(token, false, QueueOptions::default(), |gcm| {
            delivery::deleted_messages_stanza(gcm, total_deleted)
        })
    }

    /// Queues an Instance ID control message for the device behind a GCM or FCM token
    /// (docs/protocol.md §7.5).
    pub(crate) fn send_iid_command(&self, token: &str, command: IidCommand) -> Result<Sent, Error> {
        self.queue_for_token(token, false, QueueOptions::default(), |gcm| {
            delivery::iid_stanza(gcm, command)
        })
    }
}

/// Who a topic or condition message goes to.
#[derive(Debug, Clone)]
pub(crate) enum Audience {
    /// The registrations subscribed to this topic (the name without `/topics/`).
    Topic(String),
    /// The registrations whose topics satisfy this condition.
    Condition(Condition),
}

//! What the server tasks share with the [`crate::Emulator`] handle: the settings fixed
//! at start ([`Config`]) and the locked [`State`], with the queuing paths every send API
//! goes through ([`Shared`]).
//!
//! May use `state`, `delivery`, `ids`, `types` and `error`; never the servers or the
//! facade.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcs_codec::proto::DataMessageStanza;
use url::Url;

use crate::delivery::{self, WebPushEncoding};
use crate::error::Error;
use crate::ids;
use crate::state::{Queued, State};
use crate::types::{FcmRegistration, GcmRegistration, SendMessage, Sent};

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
}

impl Shared {
    /// A fresh, empty state with these settings, served under `base_url`.
    pub(crate) fn new(config: Config, base_url: Url) -> Self {
        Self {
            state: Mutex::new(State::default()),
            config,
            base_url,
            started: Instant::now(),
        }
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

    /// Queues `stanza` for a device (assigning its persistent id) and wakes its connection.
    pub(crate) fn enqueue(
        &self,
        android_id: u64,
        mut stanza: DataMessageStanza,
    ) -> Result<String, Error> {
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
        while device.queue.len() >= self.config.max_queued_messages.max(1) {
            device.queue.pop_front();
            device.dropped_messages += 1;
        }
        device.queue.push_back(Queued {
            persistent_id: persistent_id.clone(),
            stanza,
            sent: None,
        });
        device.wake();
        tracing::debug!(android_id, %persistent_id, "message queued");
        Ok(persistent_id)
    }

    /// The registration behind a GCM or FCM token, with the web-push keys bound to it.
    fn resolve(&self, token: &str) -> Result<(GcmRegistration, Option<FcmRegistration>), Error> {
        self.lock()
            .resolve_token(token)
            .ok_or_else(|| Error::UnknownToken(token.to_owned()))
    }

    /// Resolves a token, builds its stanza (outside the lock) and queues it.
    fn queue_for_token(
        &self,
        token: &str,
        encrypted: bool,
        build: impl FnOnce(&GcmRegistration) -> DataMessageStanza,
    ) -> Result<Sent, Error> {
        let (gcm, _) = self.resolve(token)?;
        let persistent_id = self.enqueue(gcm.android_id, build(&gcm))?;
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

    /// The `messages:send` path: resolves the token, builds and queues the stanza.
    pub(crate) fn send_message(&self, token: &str, message: &SendMessage) -> Result<Sent, Error> {
        let (android_id, stanza, encrypted) = self.prepare_message(token, message)?;
        let persistent_id = self.enqueue(android_id, stanza)?;
        Ok(Sent {
            persistent_id,
            android_id,
            encrypted,
        })
    }

    /// The Web Push path: queues an already encrypted body for a GCM (or FCM) token.
    pub(crate) fn send_webpush(
        &self,
        token: &str,
        body: Bytes,
        encoding: WebPushEncoding,
        ttl: Duration,
        topic: Option<String>,
    ) -> Result<Sent, Error> {
        self.queue_for_token(token, true, |gcm| {
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
        self.queue_for_token(token, false, |gcm| {
            delivery::deleted_messages_stanza(gcm, total_deleted)
        })
    }
}

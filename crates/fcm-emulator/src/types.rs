//! The public data types of the emulator's library API.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use mcs_codec::proto::{DataMessageStanza, LoginRequest};
use serde::{Deserialize, Serialize};

/// Which devices a fault or a command applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// One device, by its Android id.
    Device(u64),
    /// Every device. For [`crate::Emulator::inject_fault`] this arms the fault globally:
    /// it applies to every MCS connection (present and future) until
    /// [`crate::Emulator::clear_faults`]; for commands such as
    /// [`crate::Emulator::ping`] it means every device connected now.
    All,
}

/// A misbehaviour of the MCS server, for reliability tests.
///
/// Armed on one device ([`Target::Device`]), a fault fires once, on the device's current
/// connection or, when it is not connected, right after its next successful login; then
/// it is used up ([`Fault::Stall`] instead lasts until cleared). Armed on [`Target::All`],
/// a fault fires once on *every* connection, present and future, until
/// [`crate::Emulator::clear_faults`].
///
/// One-shot sends fire after the LoginResponse and before queued messages are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Close the TCP connection (no Close frame) once the server has sent this many more
    /// frames on it (counting from when the fault takes effect; on a new connection the
    /// LoginResponse is the first). `0` drops it at once.
    DropAfterFrames(u32),
    /// Write only the first half of the next frame the server sends, then close the
    /// connection.
    DropMidFrame,
    /// Send nothing at all — no messages, no heartbeat answers, no LoginResponse — until
    /// the fault is cleared. Incoming frames are still read and acknowledgements processed.
    Stall,
    /// Send a `Close` frame, then close the connection.
    SendClose,
    /// Send a `StreamErrorStanza`, then close the connection.
    SendStreamError {
        /// The stanza's `type` (e.g. `"conflict"`).
        error_type: String,
        /// The stanza's optional `text`.
        text: Option<String>,
    },
    /// Write these raw bytes on the connection (between frames) and keep it open.
    SendGarbage(Bytes),
    /// Send a frame with a tag the protocol has no schema for, and keep the connection open.
    SendUnknownTag {
        /// The tag byte (e.g. 15, `TalkMetadata`, or anything above 15).
        tag: u8,
        /// The frame's body.
        body: Bytes,
    },
}

/// The HTTP endpoints of the emulator, to make the next requests to one of them fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /checkin`.
    Checkin,
    /// `POST /c2dm/register3`.
    Register3,
    /// `POST /v1/projects/{p}/installations`.
    CreateInstallation,
    /// `POST /v1/projects/{p}/installations/{fid}/authTokens:generate`.
    GenerateAuthToken,
    /// `DELETE /v1/projects/{p}/installations/{fid}`.
    DeleteInstallation,
    /// `POST /v1/projects/{p}/registrations`.
    CreateRegistration,
    /// `DELETE /v1/projects/{p}/registrations/{token}`.
    DeleteRegistration,
    /// `POST /v1/projects/{p}/messages:send`.
    Send,
    /// `POST /fcm/send/{gcm token}`.
    WebPush,
}

/// How an injected HTTP failure answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpFailure {
    /// This HTTP status, with the endpoint's usual error body (Google's JSON error for the
    /// JSON APIs, text for check-in and register3).
    Status(u16),
    /// HTTP 200 with the body `Error=<code>`, the way register3 reports failures (e.g.
    /// `PHONE_REGISTRATION_ERROR`). On other endpoints the same body with HTTP 500.
    Register3Error(String),
    /// An HTML 404 page, as Google served during its 2024 migration.
    Html404,
    /// This HTTP status (typically 429 or 503) with the endpoint's usual error body, and a
    /// `Retry-After` header asking the client to wait this many seconds.
    RetryAfter {
        /// The HTTP status.
        status: u16,
        /// The seconds of the `Retry-After` header.
        seconds: u32,
    },
}

/// The two registration personas (docs/protocol.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persona {
    /// Registered as an Android app: messages arrive as plain `app_data`.
    Android,
    /// Registered as Chrome (`app=org.chromium.linux`, `X-subtype=wp:…`): messages to a
    /// registration with web-push keys arrive encrypted.
    Web,
}

/// A device identity as check-in hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceCredentials {
    /// The Android id (MCS `user`).
    pub android_id: u64,
    /// The security token (MCS `auth_token`).
    pub security_token: u64,
}

/// A snapshot of one device's state in the emulator.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The device's credentials.
    pub credentials: DeviceCredentials,
    /// How many check-ins named this device (the first included).
    pub checkins: u32,
    /// How many successful MCS logins it made.
    pub logins: u32,
    /// Whether it has a logged-in MCS connection now (one the server is not closing: the
    /// connection that gets its messages).
    pub connected: bool,
    /// Persistent ids of messages queued and not yet sent on the current connection.
    pub pending: Vec<String>,
    /// Persistent ids of messages sent on the current connection and not yet acknowledged.
    pub unacked: Vec<String>,
    /// The most recently acknowledged persistent ids (at most the last 1,000), oldest first.
    pub acked: Vec<String>,
    /// The last LoginRequest it sent.
    pub last_login_request: Option<LoginRequest>,
    /// Data messages the device sent upstream (at most the last 100).
    pub upstream: Vec<DataMessageStanza>,
    /// HeartbeatPings received from it.
    pub pings_received: u64,
    /// HeartbeatAcks received from it.
    pub heartbeat_acks_received: u64,
    /// Messages dropped because its queue was full.
    pub dropped_messages: u64,
    /// Messages dropped undelivered because their time to live ran out, TTL-0 messages
    /// sent while it was not connected included (docs/protocol.md §7.5).
    pub expired_messages: u64,
}

/// A GCM registration made through register3 (or the library).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcmRegistration {
    /// The GCM token.
    pub token: String,
    /// The device it belongs to.
    pub android_id: u64,
    /// The `app` field (`org.chromium.linux` for the web persona, else the package).
    pub app: String,
    /// The `X-subtype` field, if any.
    pub subtype: Option<String>,
    /// The `sender` field.
    pub sender: String,
    /// The persona, from `app` and `X-subtype`.
    pub persona: Persona,
    /// The FID (`X-appid`) it was registered with, if any.
    pub fid: Option<String>,
}

/// A Firebase installation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Installation {
    /// The project named in the URL.
    pub project: String,
    /// The FID.
    pub fid: String,
    /// The app id it was created for.
    pub app_id: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The auth tokens handed out so far (all stay valid), newest last.
    pub auth_tokens: Vec<String>,
}

/// An FCM registration: a web-push subscription bound to a GCM token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FcmRegistration {
    /// The project named in the URL.
    pub project: String,
    /// The FCM token a sender targets.
    pub token: String,
    /// The GCM token named by the subscription's endpoint.
    pub gcm_token: String,
    /// The installation whose auth token created it.
    pub fid: String,
    /// The endpoint as sent.
    pub endpoint: String,
    /// The receiver's public key (base64url, as sent).
    pub p256dh: String,
    /// The auth secret (base64url, as sent).
    pub auth: String,
    /// The VAPID key, if one was sent.
    pub application_pub_key: Option<String>,
}

/// The notification part of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notification {
    /// The title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The body text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// An image URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Notification {
    /// A notification with a title and a body.
    #[must_use]
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            title: Some(title.into()),
            body: Some(body.into()),
            image: None,
        }
    }
}

/// A message to send, as the FCM HTTP v1 API takes it (without the target).
///
/// ```
/// use fcm_emulator::{Notification, SendMessage};
/// let message = SendMessage::new()
///     .data("key", "value")
///     .notification(Notification::new("Hello", "World"));
/// assert_eq!(message.data["key"], "value");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendMessage {
    /// Key/value data.
    pub data: BTreeMap<String, String>,
    /// The notification, if any.
    pub notification: Option<Notification>,
    /// The sender (`from`); the project when sent over HTTP, `"fcm-emulator"` by default.
    pub from: Option<String>,
    /// The priority, `"normal"` (default) or `"high"`.
    pub priority: Option<String>,
    /// The collapse key.
    pub collapse_key: Option<String>,
    /// The time to live; four weeks by default.
    pub ttl: Option<Duration>,
}

impl SendMessage {
    /// An empty message.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one data entry.
    #[must_use]
    pub fn data(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// Sets the notification.
    #[must_use]
    pub fn notification(mut self, notification: Notification) -> Self {
        self.notification = Some(notification);
        self
    }

    /// Sets the sender (`from`).
    #[must_use]
    pub fn from(mut self, from: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self
    }

    /// Sets the priority (`"normal"` or `"high"`).
    #[must_use]
    pub fn priority(mut self, priority: impl Into<String>) -> Self {
        self.priority = Some(priority.into());
        self
    }

    /// Sets the collapse key.
    #[must_use]
    pub fn collapse_key(mut self, key: impl Into<String>) -> Self {
        self.collapse_key = Some(key.into());
        self
    }

    /// Sets the time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// What sending a message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// The persistent id of the queued DataMessageStanza (`0:<unix ms>%<hex>`); the HTTP
    /// API names the message `projects/<p>/messages/<persistent id>`.
    pub persistent_id: String,
    /// The device it is queued for.
    pub android_id: u64,
    /// Whether it was encrypted (web registrations).
    pub encrypted: bool,
}

/// How long a device had two or more MCS connections logged in at once, for failover
/// tests ([`crate::Emulator::overlap`]).
///
/// A connection counts as logged in from the moment the server accepts its LoginRequest
/// until the server has ended it (the client left, a fault, [`crate::Emulator::disconnect`],
/// shutdown, or — by default — a newer login for the same device, see
/// [`crate::EmulatorBuilder::close_superseded_connections`]). Times are measured from the
/// emulator's start ([`crate::Emulator::elapsed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Overlap {
    /// The most connections the device ever had logged in at once (0 if it never logged
    /// in, 1 if it never overlapped).
    pub max: usize,
    /// The summed length of every overlap interval, an open one counted up to now.
    pub total: Duration,
    /// `(start, end)` of each interval during which two or more connections were logged
    /// in, oldest first (at most the last 10,000; `total` counts them all). An interval
    /// still open ends at now.
    pub intervals: Vec<(Duration, Duration)>,
}

/// One successful MCS login of a device ([`crate::Emulator::login_history`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoginRecord {
    /// The emulator's id of the connection (unique, increasing with each login).
    pub connection_id: u64,
    /// When the server accepted the LoginRequest, since the emulator's start.
    pub logged_in_at: Duration,
    /// When the server ended the connection, since the emulator's start; `None` while it
    /// is still logged in.
    pub ended_at: Option<Duration>,
}

/// An Instance ID control message the server can send over MCS (docs/protocol.md §7.1,
/// §7.5): a DataMessageStanza `from = "google.com/iid"` whose `app_data` has
/// `CMD=<command>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IidCommand {
    /// `RST`: this identity is reset; the client makes a new one.
    Rst,
    /// `RST_FULL`: every identity of the app is reset.
    RstFull,
    /// `SYNC`: the client fetches its token again.
    Sync,
}

impl IidCommand {
    /// The `CMD` value on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rst => "RST",
            Self::RstFull => "RST_FULL",
            Self::Sync => "SYNC",
        }
    }
}

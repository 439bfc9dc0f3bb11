//! What the application receives: [`Message`], built from a data message and its
//! payload, and [`Stanza`], the data message frame it came in.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mcs_codec::proto::DataMessageStanza;
use serde_json::Value;
use webpush_ece::{ContentEncoding, Payload, ReceiverKeys};

/// The `notification` part of a message (title, body, and whatever else it carries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// The title, if any.
    pub title: Option<String>,
    /// The body, if any.
    pub body: Option<String>,
    /// Every field of the notification object, title and body included.
    pub fields: BTreeMap<String, Value>,
}

/// A push notification, as the application sees it (the `Message` of the Python
/// `pullkin` library).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// The data key/value pairs.
    pub data: BTreeMap<String, String>,
    /// Who sent it (`from`): the sender id, or the VAPID key for web push.
    pub sender_id: Option<String>,
    /// The priority the sender asked for (`normal`, `high`), if given.
    pub priority: Option<String>,
    /// The notification part, if any.
    pub notification: Option<Notification>,
    /// FCM's id of the message, if given.
    pub fcm_message_id: Option<String>,
    /// The MCS persistent id, used for acknowledgement and deduplication.
    pub persistent_id: Option<String>,
    /// When the server says the message was sent.
    pub sent: Option<SystemTime>,
    /// The payload bytes: the plaintext of an encrypted message, or `raw_data`.
    pub payload: Bytes,
    /// The encoding the payload was encrypted with, if it was.
    pub encoding: Option<ContentEncoding>,
    /// The payload parsed as JSON, when it is a JSON object (FCM's web push payloads
    /// are); a non-JSON payload is in [`Message::payload`] only.
    pub json: Option<Value>,
    /// The collapse key (docs/protocol.md §7.4): the DataMessageStanza's `token`, else an
    /// `app_data` or payload `collapse_key`. FCM sends `do_not_collapse` when the sender
    /// gave none; for Web Push it is the push's `Topic`.
    pub collapse_key: Option<String>,
    /// The time to live the sender gave (the stanza's `ttl`, in seconds), if any.
    pub ttl: Option<Duration>,
    /// How long the server held the message before sending it (the stanza's `queued`),
    /// if it says.
    pub queued: Option<Duration>,
    /// When it arrived at the receiver.
    pub received: SystemTime,
    /// Its time to live had run out when it arrived (`sent + ttl` before
    /// [`received`](Self::received)), as for a backlog delivered after a long time
    /// offline. It is delivered all the same, flagged. A TTL of 0 ("now or never") never
    /// counts as expired.
    pub expired: bool,
    /// The priority the sender asked for, as the server reports it
    /// (`google.original_priority`).
    pub original_priority: Option<String>,
    /// The priority the message was delivered with (`google.delivered_priority`): lower
    /// than the original when the server reduced it.
    pub delivered_priority: Option<String>,
    /// The topic of a topic message (`from` = `/topics/<topic>`), without the prefix.
    pub topic: Option<String>,
}

impl Message {
    /// The message as the JSON object `pullkin listen` prints on one line (and the
    /// sinks hand onward): `app`, `persistent_id`, `fcm_message_id`, `sender_id`,
    /// `priority`, `sent_ms`, `received_ms` (when it arrived), `encoding`, `data`,
    /// `notification`, `raw`, and a payload that is not JSON as `payload` (UTF-8) or
    /// `payload_base64`. The metadata of docs/protocol.md §7.4 follow, each only when the
    /// message has it: `collapse_key`, `ttl_s`, `queued_ms`, `expired` (when `sent_ms`
    /// and `ttl_s` are known), `original_priority`, `delivered_priority` and `topic`.
    #[must_use]
    pub fn to_json(&self, app: &str) -> Value {
        use base64::Engine as _;
        let mut line = serde_json::json!({
            "app": app,
            "persistent_id": self.persistent_id,
            "fcm_message_id": self.fcm_message_id,
            "sender_id": self.sender_id,
            "priority": self.priority,
            "sent_ms": self.sent.and_then(unix_ms),
            "received_ms": unix_ms(self.received),
            "encoding": self.encoding.map(ContentEncoding::as_str),
            "data": self.data,
            "notification": self.notification.as_ref().map(|n| &n.fields),
            "raw": self.raw(),
        });
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                line[key] = value;
            }
        };
        let text = |value: &Option<String>| value.clone().map(Value::String);
        put("collapse_key", text(&self.collapse_key));
        put("ttl_s", self.ttl.map(|ttl| ttl.as_secs().into()));
        put("queued_ms", self.queued.and_then(ms).map(Value::from));
        put(
            "expired",
            (self.sent.is_some() && self.ttl.is_some()).then_some(Value::Bool(self.expired)),
        );
        put("original_priority", text(&self.original_priority));
        put("delivered_priority", text(&self.delivered_priority));
        put("topic", text(&self.topic));
        // A payload that is not JSON (any Web Push sender may post text or bytes) is shown
        // as it came: text when it is UTF-8, base64 otherwise.
        if self.json.is_none() && !self.payload.is_empty() {
            let (key, value) = match std::str::from_utf8(&self.payload) {
                Ok(text) => ("payload", text.to_owned()),
                Err(_) => (
                    "payload_base64",
                    base64::engine::general_purpose::STANDARD.encode(&self.payload),
                ),
            };
            line[key] = Value::String(value);
        }
        line
    }

    /// The whole notification as JSON (`raw` in the Python `pullkin` library): the payload when it is JSON,
    /// otherwise an object of `data`, `from`, `priority`, `notification` and
    /// `fcmMessageId` built from the message. Built on demand.
    #[must_use]
    pub fn raw(&self) -> Value {
        if let Some(json) = &self.json {
            return json.clone();
        }
        let mut object = serde_json::Map::new();
        object.insert(
            "data".to_owned(),
            Value::Object(
                self.data
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                object.insert(key.to_owned(), Value::String(value.clone()));
            }
        };
        put("from", &self.sender_id);
        put("priority", &self.priority);
        put("fcmMessageId", &self.fcm_message_id);
        if let Some(notification) = &self.notification {
            object.insert(
                "notification".to_owned(),
                Value::Object(notification.fields.clone().into_iter().collect()),
            );
        }
        Value::Object(object)
    }
}

/// A data message frame as received (MCS `DataMessageStanza`, docs/protocol.md §4):
/// who sent it, its category, its persistent id and the key/value pairs it carried. The
/// protobuf type itself is behind [`Stanza::proto`], for fields this type has no
/// accessor for.
#[derive(Debug, Clone, PartialEq)]
pub struct Stanza(Box<DataMessageStanza>);

impl Stanza {
    /// Wraps a received frame.
    #[must_use]
    pub fn new(stanza: DataMessageStanza) -> Self {
        Self(Box::new(stanza))
    }

    /// The sender (the `from` field): the sender id, or the VAPID key for Web Push.
    #[must_use]
    pub fn sender(&self) -> &str {
        &self.0.from
    }

    /// The category (the app's package, or `org.chromium.linux` for Web Push).
    #[must_use]
    pub fn category(&self) -> &str {
        &self.0.category
    }

    /// The persistent id, used for acknowledgement and deduplication.
    #[must_use]
    pub fn persistent_id(&self) -> Option<&str> {
        self.0.persistent_id.as_deref()
    }

    /// The value of an `app_data` key (the first, when it repeats).
    #[must_use]
    pub fn app_data(&self, key: &str) -> Option<&str> {
        app_data_value(&self.0, key)
    }

    /// Every `app_data` pair, in the order received.
    pub fn app_data_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .app_data
            .iter()
            .map(|d| (d.key.as_str(), d.value.as_str()))
    }

    /// The `raw_data` bytes (the ciphertext of an encrypted message), if any.
    #[must_use]
    pub fn raw_data(&self) -> Option<&[u8]> {
        self.0.raw_data.as_deref()
    }

    /// The collapse key (the `token` field, docs/protocol.md §7.4), if any.
    #[must_use]
    pub fn collapse_key(&self) -> Option<&str> {
        self.0.token.as_deref()
    }

    /// The time-to-live the sender gave, in seconds, if any.
    #[must_use]
    pub fn ttl(&self) -> Option<i32> {
        self.0.ttl
    }

    /// When the server says it was sent.
    #[must_use]
    pub fn sent(&self) -> Option<SystemTime> {
        sent(&self.0)
    }

    /// The protobuf frame.
    #[must_use]
    pub fn proto(&self) -> &DataMessageStanza {
        &self.0
    }

    /// The protobuf frame, owned.
    #[must_use]
    pub fn into_proto(self) -> DataMessageStanza {
        *self.0
    }
}

impl From<Box<DataMessageStanza>> for Stanza {
    fn from(stanza: Box<DataMessageStanza>) -> Self {
        Self(stanza)
    }
}

/// What a data message turned out to be.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A message for the application.
    Message(Box<Message>),
    /// The server dropped messages it could not deliver.
    DeletedMessages {
        /// How many, when the server says.
        count: Option<u64>,
    },
    /// The payload could not be decrypted.
    Undecryptable(webpush_ece::Error),
}

fn app_data_value<'a>(stanza: &'a DataMessageStanza, key: &str) -> Option<&'a str> {
    stanza
        .app_data
        .iter()
        .find(|d| d.key == key)
        .map(|d| d.value.as_str())
}

/// Whether a data message carries Web Push encryption parameters.
pub(crate) fn is_encrypted(stanza: &DataMessageStanza) -> bool {
    stanza.app_data.iter().any(|d| {
        d.key.eq_ignore_ascii_case("crypto-key")
            || d.key.eq_ignore_ascii_case("encryption")
            || d.key.eq_ignore_ascii_case("content-encoding")
    })
}

/// Turns a data message that arrived at `received` into what the application receives,
/// decrypting with `keys` when the message is encrypted.
pub(crate) fn decode(
    stanza: &DataMessageStanza,
    keys: Option<&ReceiverKeys>,
    received: SystemTime,
) -> Decoded {
    if app_data_value(stanza, "message_type") == Some("deleted_messages") {
        let count = app_data_value(stanza, "total_deleted").and_then(|n| n.trim().parse().ok());
        return Decoded::DeletedMessages { count };
    }
    let raw_data = stanza.raw_data.clone().unwrap_or_default();
    let app_data = stanza
        .app_data
        .iter()
        .map(|d| (d.key.as_str(), d.value.as_str()));
    let payload = match keys {
        Some(keys) => webpush_ece::decrypt_message(keys, app_data, &raw_data),
        None if is_encrypted(stanza) => Err(webpush_ece::Error::MissingParameter("receiver keys")),
        None => Ok(Payload::NotEncrypted),
    };
    let mut message = match payload {
        Ok(Payload::Decrypted {
            encoding,
            plaintext,
        }) => from_plaintext(stanza, Bytes::from(plaintext), encoding),
        Ok(_) => unencrypted(stanza, raw_data),
        Err(error) => return Decoded::Undecryptable(error),
    };
    add_metadata(&mut message, stanza, received);
    Decoded::Message(Box::new(message))
}

/// The metadata of docs/protocol.md §7.4, from the stanza and its `app_data` (and what
/// the payload said, already in `message`), judged against the arrival time `received`.
fn add_metadata(message: &mut Message, stanza: &DataMessageStanza, received: SystemTime) {
    let nonempty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
    message.collapse_key = nonempty(stanza.token.as_deref())
        .or_else(|| nonempty(app_data_value(stanza, "collapse_key")))
        .or_else(|| {
            message
                .json
                .as_ref()
                .and_then(|json| string_field(json, "collapse_key"))
        });
    message.ttl = stanza
        .ttl
        .and_then(|ttl| u64::try_from(ttl).ok())
        .map(Duration::from_secs);
    message.queued = stanza
        .queued
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis);
    message.received = received;
    message.expired = match (message.sent, message.ttl) {
        // TTL 0 is "now or never": delivered at all, it was in time.
        (Some(sent), Some(ttl)) if !ttl.is_zero() => sent
            .checked_add(ttl)
            .is_some_and(|deadline| deadline < received),
        _ => false,
    };
    message.original_priority = nonempty(app_data_value(stanza, "google.original_priority"));
    message.delivered_priority = nonempty(app_data_value(stanza, "google.delivered_priority"));
    message.topic = [Some(stanza.from.as_str()), message.sender_id.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|from| from.strip_prefix("/topics/"))
        .filter(|topic| !topic.is_empty())
        .map(str::to_owned);
    if message.fcm_message_id.is_none() {
        message.fcm_message_id = nonempty(app_data_value(stanza, "google.message_id"))
            .or_else(|| nonempty(stanza.id.as_deref()));
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms(time: SystemTime) -> Option<u64> {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(ms)
}

/// A duration in whole milliseconds.
fn ms(duration: Duration) -> Option<u64> {
    u64::try_from(duration.as_millis()).ok()
}

fn sent(stanza: &DataMessageStanza) -> Option<SystemTime> {
    let ms = u64::try_from(stanza.sent?).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

fn string_field(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn notification(value: &Value) -> Option<Notification> {
    let object = value.get("notification")?.as_object()?;
    Some(Notification {
        title: object
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned),
        body: object
            .get("body")
            .and_then(Value::as_str)
            .map(str::to_owned),
        fields: object.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn data_map(value: &Value) -> BTreeMap<String, String> {
    value
        .get("data")
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A decrypted Web Push payload: FCM's JSON (`data`, `notification`, `from`, `priority`,
/// `fcmMessageId`), or anything else a Web Push sender posted.
fn from_plaintext(
    stanza: &DataMessageStanza,
    plaintext: Bytes,
    encoding: ContentEncoding,
) -> Message {
    let json = serde_json::from_slice::<Value>(&plaintext)
        .ok()
        .filter(Value::is_object);
    let (data, sender_id, priority, notification, fcm_message_id) = match &json {
        Some(raw) => (
            data_map(raw),
            string_field(raw, "from"),
            string_field(raw, "priority"),
            notification(raw),
            string_field(raw, "fcmMessageId").or_else(|| string_field(raw, "fcm_message_id")),
        ),
        None => (BTreeMap::new(), None, None, None, None),
    };
    Message {
        data,
        sender_id: sender_id.or_else(|| Some(stanza.from.clone())),
        priority,
        notification,
        fcm_message_id,
        persistent_id: stanza.persistent_id.clone(),
        sent: sent(stanza),
        payload: plaintext,
        encoding: Some(encoding),
        json,
        collapse_key: None,
        ttl: None,
        queued: None,
        received: SystemTime::UNIX_EPOCH,
        expired: false,
        original_priority: None,
        delivered_priority: None,
        topic: None,
    }
}

/// An unencrypted (Android-style) message: its app data are the data, Google's
/// `gcm.notification.*` keys its notification; a JSON object in `raw_data` adds to them.
fn unencrypted(stanza: &DataMessageStanza, raw_data: Bytes) -> Message {
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    let mut fields = BTreeMap::new();
    let mut priority = None;
    let mut fcm_message_id = None;
    for entry in &stanza.app_data {
        if let Some(name) = entry.key.strip_prefix("gcm.notification.") {
            fields.insert(name.to_owned(), Value::String(entry.value.clone()));
        }
        match entry.key.as_str() {
            "google.priority" | "priority" if priority.is_none() => {
                priority = Some(entry.value.clone());
            }
            "google.message_id" => fcm_message_id = Some(entry.value.clone()),
            _ => {}
        }
        data.insert(entry.key.clone(), entry.value.clone());
    }
    let json = if raw_data.first() == Some(&b'{') {
        serde_json::from_slice::<Value>(&raw_data)
            .ok()
            .filter(Value::is_object)
    } else {
        None
    };
    let mut notification_part = (!fields.is_empty()).then(|| Notification {
        title: fields
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned),
        body: fields
            .get("body")
            .and_then(Value::as_str)
            .map(str::to_owned),
        fields,
    });
    if let Some(raw) = &json {
        for (key, value) in data_map(raw) {
            data.entry(key).or_insert(value);
        }
        notification_part = notification_part.or_else(|| notification(raw));
        priority = priority.or_else(|| string_field(raw, "priority"));
        fcm_message_id = fcm_message_id.or_else(|| string_field(raw, "fcmMessageId"));
    }
    Message {
        data,
        sender_id: Some(stanza.from.clone()),
        priority,
        notification: notification_part,
        // The stanza's `google.message_id` and `id` come in with the metadata.
        fcm_message_id,
        persistent_id: stanza.persistent_id.clone(),
        sent: sent(stanza),
        payload: raw_data,
        encoding: None,
        json,
        collapse_key: None,
        ttl: None,
        queued: None,
        received: SystemTime::UNIX_EPOCH,
        expired: false,
        original_priority: None,
        delivered_priority: None,
        topic: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use mcs_codec::proto::AppData;
    use webpush_ece::{EncryptOptions, aes128gcm};

    fn pair(key: &str, value: &str) -> AppData {
        AppData {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn message(
        stanza: &DataMessageStanza,
        keys: Option<&ReceiverKeys>,
        received: SystemTime,
    ) -> Message {
        match decode(stanza, keys, received) {
            Decoded::Message(message) => *message,
            other => panic!("{other:?}"),
        }
    }

    /// A plain (Android) message as FCM sends it: collapse key, TTL, sent and queued
    /// times, both priorities, from a topic.
    fn android_stanza() -> DataMessageStanza {
        DataMessageStanza {
            id: Some("stanza-id".into()),
            from: "/topics/news".into(),
            category: "com.example".into(),
            token: Some("scores".into()),
            persistent_id: Some("0:1%abc".into()),
            ttl: Some(60),
            sent: Some(1_000_000),
            queued: Some(1500),
            app_data: vec![
                pair("score", "3:1"),
                pair("google.original_priority", "high"),
                pair("google.delivered_priority", "normal"),
                pair("google.message_id", "0:1%msg"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_metadata_of_a_plain_message_are_read_from_the_stanza() {
        let stanza = android_stanza();
        let m = message(&stanza, None, at(1_000_500));
        assert_eq!(m.collapse_key.as_deref(), Some("scores"));
        assert_eq!(m.ttl, Some(Duration::from_secs(60)));
        assert_eq!(m.sent, Some(at(1_000_000)));
        assert_eq!(m.queued, Some(Duration::from_millis(1500)));
        assert_eq!(m.received, at(1_000_500));
        assert!(!m.expired);
        assert_eq!(m.original_priority.as_deref(), Some("high"));
        assert_eq!(m.delivered_priority.as_deref(), Some("normal"));
        assert_eq!(m.topic.as_deref(), Some("news"));
        assert_eq!(m.fcm_message_id.as_deref(), Some("0:1%msg"));
        assert_eq!(m.data.get("score").map(String::as_str), Some("3:1"));
    }

    #[test]
    fn a_message_past_its_ttl_on_arrival_is_delivered_flagged_expired() {
        let stanza = android_stanza();
        // sent + ttl = 1 060 000 ms: in time up to that instant, expired after it.
        assert!(!message(&stanza, None, at(1_060_000)).expired);
        let late = message(&stanza, None, at(1_060_001));
        assert!(late.expired);
        assert_eq!(late.data.get("score").map(String::as_str), Some("3:1"));
        let line = late.to_json("app");
        assert_eq!(line["expired"], true);
        assert_eq!(line["received_ms"], 1_060_001);
        // TTL 0 ("now or never") is never expired; nor is a message without a TTL or a
        // sent time.
        let mut now_or_never = stanza.clone();
        now_or_never.ttl = Some(0);
        assert!(!message(&now_or_never, None, at(9_000_000)).expired);
        let mut no_ttl = stanza.clone();
        no_ttl.ttl = None;
        let m = message(&no_ttl, None, at(9_000_000));
        assert!(!m.expired);
        assert!(
            m.to_json("app").get("expired").is_none(),
            "unknown: omitted"
        );
        let mut no_sent = stanza;
        no_sent.sent = None;
        assert!(!message(&no_sent, None, at(9_000_000)).expired);
    }

    #[test]
    fn odd_values_are_absent_not_wrong() {
        let stanza = DataMessageStanza {
            from: "123".into(),
            token: Some(String::new()),
            ttl: Some(-5),
            sent: Some(-1),
            queued: Some(-1),
            app_data: vec![pair("google.original_priority", "")],
            ..Default::default()
        };
        let m = message(&stanza, None, at(1));
        assert_eq!(m.collapse_key, None);
        assert_eq!(m.ttl, None);
        assert_eq!(m.sent, None);
        assert_eq!(m.queued, None);
        assert_eq!(m.original_priority, None);
        assert_eq!(m.topic, None);
        assert!(!m.expired);
        // "/topics/" alone names no topic.
        let stanza = DataMessageStanza {
            from: "/topics/".into(),
            ..Default::default()
        };
        assert_eq!(message(&stanza, None, at(1)).topic, None);
    }

    #[test]
    fn an_encrypted_message_takes_its_id_from_the_payload_else_the_stanza() {
        let keys = ReceiverKeys::generate();
        let encrypt = |payload: &[u8]| {
            aes128gcm::encrypt(&keys.subscription_keys(), payload, &EncryptOptions::new()).unwrap()
        };
        let stanza = |body: Vec<u8>, app_data: Vec<AppData>| DataMessageStanza {
            from: "BPublicKey".into(),
            token: Some("push-topic".into()),
            ttl: Some(30),
            sent: Some(5_000),
            raw_data: Some(body.into()),
            app_data: [vec![pair("content-encoding", "aes128gcm")], app_data].concat(),
            ..Default::default()
        };
        let from_payload = stanza(
            encrypt(br#"{"data":{"a":"1"},"fcmMessageId":"payload-id","from":"/topics/t1"}"#),
            vec![pair("google.message_id", "stanza-id")],
        );
        let m = message(&from_payload, Some(&keys), at(40_000));
        assert_eq!(m.fcm_message_id.as_deref(), Some("payload-id"));
        assert_eq!(m.encoding, Some(ContentEncoding::Aes128Gcm));
        assert_eq!(m.collapse_key.as_deref(), Some("push-topic"));
        assert_eq!(m.ttl, Some(Duration::from_secs(30)));
        assert!(m.expired, "5 s + 30 s is before 40 s");
        assert_eq!(m.topic.as_deref(), Some("t1"), "the payload's from");
        let from_stanza = stanza(
            encrypt(b"just text"),
            vec![pair("google.message_id", "stanza-id")],
        );
        let m = message(&from_stanza, Some(&keys), at(6_000));
        assert_eq!(m.fcm_message_id.as_deref(), Some("stanza-id"));
        assert!(!m.expired);
        assert_eq!(m.topic, None);
    }

    #[test]
    fn the_collapse_key_falls_back_to_app_data_and_the_payload() {
        let mut stanza = DataMessageStanza {
            app_data: vec![pair("collapse_key", "from-app-data")],
            ..Default::default()
        };
        assert_eq!(
            message(&stanza, None, at(1)).collapse_key.as_deref(),
            Some("from-app-data")
        );
        stanza.app_data.clear();
        stanza.raw_data = Some(Bytes::from_static(br#"{"collapse_key":"from-payload"}"#));
        assert_eq!(
            message(&stanza, None, at(1)).collapse_key.as_deref(),
            Some("from-payload")
        );
    }

    #[test]
    fn the_json_line_gains_the_metadata_keys_only_when_present() {
        let m = message(&android_stanza(), None, at(1_000_500));
        let line = m.to_json("app");
        assert_eq!(line["collapse_key"], "scores");
        assert_eq!(line["ttl_s"], 60);
        assert_eq!(line["queued_ms"], 1500);
        assert_eq!(line["expired"], false);
        assert_eq!(line["original_priority"], "high");
        assert_eq!(line["delivered_priority"], "normal");
        assert_eq!(line["topic"], "news");
        assert_eq!(line["sent_ms"], 1_000_000);
        assert_eq!(line["received_ms"], 1_000_500);
        // A bare message: the keys of before, and none of the new ones.
        let bare = message(&DataMessageStanza::default(), None, at(7));
        let line = bare.to_json("app");
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "app",
                "data",
                "encoding",
                "fcm_message_id",
                "notification",
                "persistent_id",
                "priority",
                "raw",
                "received_ms",
                "sender_id",
                "sent_ms",
            ]
        );
    }
}

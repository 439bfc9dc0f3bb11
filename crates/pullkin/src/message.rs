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
}

impl Message {
    /// The message as the JSON object `pullkin listen` prints on one line (and the
    /// sinks hand onward): `app`, `persistent_id`, `fcm_message_id`, `sender_id`,
    /// `priority`, `sent_ms`, `received_ms` (now), `encoding`, `data`, `notification`,
    /// `raw`, and a payload that is not JSON as `payload` (UTF-8) or `payload_base64`.
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
            "received_ms": unix_ms(SystemTime::now()),
            "encoding": self.encoding.map(ContentEncoding::as_str),
            "data": self.data,
            "notification": self.notification.as_ref().map(|n| &n.fields),
            "raw": self.raw(),
        });
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

/// Turns a data message into what the application receives, decrypting with `keys`
/// when the message is encrypted.
pub(crate) fn decode(stanza: &DataMessageStanza, keys: Option<&ReceiverKeys>) -> Decoded {
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
    match payload {
        Ok(Payload::Decrypted {
            encoding,
            plaintext,
        }) => Decoded::Message(Box::new(from_plaintext(
            stanza,
            Bytes::from(plaintext),
            encoding,
        ))),
        Ok(_) => Decoded::Message(Box::new(unencrypted(stanza, raw_data))),
        Err(error) => Decoded::Undecryptable(error),
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms(time: SystemTime) -> Option<u64> {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
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
        fcm_message_id: fcm_message_id.or_else(|| stanza.id.clone()),
        persistent_id: stanza.persistent_id.clone(),
        sent: sent(stanza),
        payload: raw_data,
        encoding: None,
        json,
    }
}

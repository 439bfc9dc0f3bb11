//! What the application receives: [`Message`], built from a data message and its payload.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mcs_codec::proto::DataMessageStanza;
use serde_json::Value;
use webpush_ece::{ContentEncoding, Payload, ReceiverKeys};

/// The `notification` part of a message (title, body, and whatever else it carries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    /// The title, if any.
    pub title: Option<String>,
    /// The body, if any.
    pub body: Option<String>,
    /// Every field of the notification object, title and body included.
    pub fields: BTreeMap<String, Value>,
}

/// A push notification, as the application sees it (the seed's `Message`).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The whole notification as JSON: the decrypted Web Push payload when it is JSON,
    /// otherwise an object built from the data message (`data`, `from`, …).
    pub raw: Value,
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
        None if stanza.app_data.iter().any(|d| {
            d.key.eq_ignore_ascii_case("crypto-key")
                || d.key.eq_ignore_ascii_case("encryption")
                || d.key.eq_ignore_ascii_case("content-encoding")
        }) =>
        {
            Err(webpush_ece::Error::MissingParameter("receiver keys"))
        }
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
    let raw = serde_json::from_slice::<Value>(&plaintext)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&plaintext).into_owned()));
    Message {
        data: data_map(&raw),
        sender_id: string_field(&raw, "from").or_else(|| Some(stanza.from.clone())),
        priority: string_field(&raw, "priority"),
        notification: notification(&raw),
        fcm_message_id: string_field(&raw, "fcmMessageId")
            .or_else(|| string_field(&raw, "fcm_message_id")),
        persistent_id: stanza.persistent_id.clone(),
        sent: sent(stanza),
        payload: plaintext,
        encoding: Some(encoding),
        raw,
    }
}

/// An unencrypted (Android-style) message: its app data are the data; a JSON `raw_data`
/// is taken as the message itself.
fn unencrypted(stanza: &DataMessageStanza, raw_data: Bytes) -> Message {
    let data: BTreeMap<String, String> = stanza
        .app_data
        .iter()
        .map(|d| (d.key.clone(), d.value.clone()))
        .collect();
    let from_raw = serde_json::from_slice::<Value>(&raw_data)
        .ok()
        .filter(Value::is_object);
    let mut raw = from_raw.clone().unwrap_or_else(|| {
        serde_json::json!({
            "data": data,
            "from": stanza.from,
        })
    });
    // Google puts the notification of an Android message in `gcm.notification.*` keys.
    let mut fields = BTreeMap::new();
    for (key, value) in &data {
        if let Some(name) = key.strip_prefix("gcm.notification.") {
            fields.insert(name.to_owned(), Value::String(value.clone()));
        }
    }
    if !fields.is_empty()
        && raw.get("notification").is_none()
        && let Some(object) = raw.as_object_mut()
    {
        object.insert(
            "notification".to_owned(),
            Value::Object(fields.into_iter().collect()),
        );
    }
    let priority = data
        .get("google.priority")
        .or_else(|| data.get("priority"))
        .cloned()
        .or_else(|| string_field(&raw, "priority"));
    let fcm_message_id = data
        .get("google.message_id")
        .cloned()
        .or_else(|| stanza.id.clone())
        .or_else(|| string_field(&raw, "fcmMessageId"));
    let data = if from_raw.is_some() {
        let mut merged = data_map(&raw);
        merged.extend(data);
        merged
    } else {
        data
    };
    Message {
        notification: notification(&raw),
        sender_id: Some(stanza.from.clone()),
        priority,
        fcm_message_id,
        persistent_id: stanza.persistent_id.clone(),
        sent: sent(stanza),
        payload: raw_data,
        encoding: None,
        data,
        raw,
    }
}

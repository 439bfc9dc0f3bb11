//! Building the DataMessageStanzas the send APIs deliver (docs/protocol.md §5).

use std::time::Duration;

use bytes::Bytes;
use mcs_codec::proto::{AppData, DataMessageStanza};
use serde_json::json;
use webpush_ece::{EncryptOptions, SubscriptionKeys, aesgcm};

use crate::error::Error;
use crate::ids::unix_ms;
use crate::types::{FcmRegistration, GcmRegistration, IidCommand, SendMessage};

/// FCM's default time to live: four weeks.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(2_419_200);
/// The largest payload FCM accepts: 4 KiB.
pub(crate) const MAX_PAYLOAD: usize = 4096;
/// The sender named when none is given.
pub(crate) const DEFAULT_FROM: &str = "fcm-emulator";

fn app_data(key: &str, value: impl Into<String>) -> AppData {
    AppData {
        key: key.to_owned(),
        value: value.into(),
    }
}

fn ttl_secs(ttl: Option<Duration>) -> i32 {
    i32::try_from(ttl.unwrap_or(DEFAULT_TTL).as_secs()).unwrap_or(i32::MAX)
}

/// A stanza skeleton for a registration: sender, category, timestamps. The persistent id
/// is filled in when the message is queued.
fn stanza(gcm: &GcmRegistration, from: &str, ttl: i32) -> DataMessageStanza {
    DataMessageStanza {
        id: Some(format!("{:016x}", rand::random::<u64>())),
        from: from.to_owned(),
        category: gcm.app.clone(),
        device_user_id: Some(0),
        ttl: Some(ttl),
        sent: Some(unix_ms()),
        ..Default::default()
    }
}

/// The JSON FCM puts in a web-push payload: `{data, notification, from, priority,
/// fcmMessageId}` (the shape the Python `pullkin` `Message` reads).
pub(crate) fn web_payload(message: &SendMessage, from: &str) -> serde_json::Value {
    let mut payload = serde_json::Map::new();
    if !message.data.is_empty() {
        payload.insert("data".into(), json!(message.data));
    }
    if let Some(notification) = &message.notification {
        payload.insert("notification".into(), json!(notification));
    }
    payload.insert("from".into(), json!(from));
    payload.insert(
        "priority".into(),
        json!(message.priority.as_deref().unwrap_or("normal")),
    );
    if let Some(key) = &message.collapse_key {
        payload.insert("collapse_key".into(), json!(key));
    }
    payload.insert(
        "fcmMessageId".into(),
        json!(uuid::Uuid::new_v4().to_string()),
    );
    serde_json::Value::Object(payload)
}

/// Builds the stanza for a `messages:send` to a registration. Returns the stanza and
/// whether it is encrypted.
///
/// - with web-push `keys` (the caller passes them for an FCM token, or for a web-persona
///   GCM token with an FCM registration): the JSON payload encrypted with `aesgcm`,
///   `crypto-key` and `encryption` in `app_data`;
/// - otherwise: plain `app_data` (data entries, `gcm.notification.*`, `google.*`).
pub(crate) fn send_stanza(
    gcm: &GcmRegistration,
    keys: Option<&FcmRegistration>,
    message: &SendMessage,
    from: &str,
) -> Result<(DataMessageStanza, bool), Error> {
    let ttl = ttl_secs(message.ttl);
    let mut out = stanza(gcm, from, ttl);
    out.token = Some(
        message
            .collapse_key
            .clone()
            .unwrap_or_else(|| "do_not_collapse".to_owned()),
    );
    if let Some(fcm) = keys {
        let payload = serde_json::to_vec(&web_payload(message, from))
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::InvalidInput(format!(
                "message is too big: {} bytes of payload, at most {MAX_PAYLOAD}",
                payload.len()
            )));
        }
        let to = SubscriptionKeys::from_base64(&fcm.p256dh, &fcm.auth)?;
        let encrypted = aesgcm::encrypt(&to, &payload, &EncryptOptions::new())?;
        out.app_data.push(app_data("google.source", "webpush"));
        out.app_data
            .push(app_data("crypto-key", encrypted.crypto_key_header()));
        out.app_data
            .push(app_data("encryption", encrypted.encryption_header()));
        if let Some(subtype) = &gcm.subtype {
            out.app_data.push(app_data("subtype", subtype.clone()));
        }
        out.raw_data = Some(Bytes::from(encrypted.ciphertext));
        return Ok((out, true));
    }
    let mut size = 0usize;
    for (key, value) in &message.data {
        size += key.len() + value.len();
        out.app_data.push(app_data(key, value.clone()));
    }
    if let Some(n) = &message.notification {
        for (key, value) in [("title", &n.title), ("body", &n.body), ("image", &n.image)] {
            if let Some(value) = value {
                size += value.len();
                out.app_data
                    .push(app_data(&format!("gcm.notification.{key}"), value.clone()));
            }
        }
        out.app_data.push(app_data("gcm.n.e", "1"));
    }
    if size > MAX_PAYLOAD {
        return Err(Error::InvalidInput(format!(
            "message is too big: {size} bytes of payload, at most {MAX_PAYLOAD}"
        )));
    }
    let priority = message.priority.as_deref().unwrap_or("normal");
    out.app_data
        .push(app_data("google.original_priority", priority));
    out.app_data
        .push(app_data("google.delivered_priority", priority));
    out.app_data
        .push(app_data("google.sent_time", unix_ms().to_string()));
    out.app_data.push(app_data("google.ttl", ttl.to_string()));
    Ok((out, false))
}

/// The stanza for a Web Push request (`POST /fcm/send/<token>`): the body as `raw_data`,
/// with `content-encoding: aes128gcm`, or with `crypto-key`/`encryption` for `aesgcm`.
pub(crate) fn webpush_stanza(
    gcm: &GcmRegistration,
    body: Bytes,
    encoding: WebPushEncoding,
    ttl: Duration,
    topic: Option<String>,
) -> DataMessageStanza {
    let mut out = stanza(gcm, &gcm.sender, ttl_secs(Some(ttl)));
    out.token = topic;
    match encoding {
        WebPushEncoding::Aes128Gcm => {
            out.app_data.push(app_data("content-encoding", "aes128gcm"));
        }
        WebPushEncoding::AesGcm {
            crypto_key,
            encryption,
        } => {
            out.app_data.push(app_data("crypto-key", crypto_key));
            out.app_data.push(app_data("encryption", encryption));
        }
        WebPushEncoding::None => {}
    }
    if let Some(subtype) = &gcm.subtype {
        out.app_data.push(app_data("subtype", subtype.clone()));
    }
    if !body.is_empty() {
        out.raw_data = Some(body);
    }
    out
}

/// The encoding of a Web Push request body.
pub(crate) enum WebPushEncoding {
    /// An empty push (no body).
    None,
    Aes128Gcm,
    AesGcm {
        crypto_key: String,
        encryption: String,
    },
}

/// A `deleted_messages` notice.
pub(crate) fn deleted_messages_stanza(gcm: &GcmRegistration, total: u32) -> DataMessageStanza {
    let mut out = stanza(gcm, "google.com", 0);
    out.app_data
        .push(app_data("message_type", "deleted_messages"));
    out.app_data
        .push(app_data("total_deleted", total.to_string()));
    out
}

/// The sender of Instance ID control messages (docs/protocol.md §7.5).
pub(crate) const IID_FROM: &str = "google.com/iid";

/// An Instance ID control message: `from = google.com/iid`, the registration's app as
/// category, `app_data CMD=<command>` (and the subtype, when the registration has one).
pub(crate) fn iid_stanza(gcm: &GcmRegistration, command: IidCommand) -> DataMessageStanza {
    let mut out = stanza(gcm, IID_FROM, 0);
    out.app_data.push(app_data("CMD", command.as_str()));
    if let Some(subtype) = &gcm.subtype {
        out.app_data.push(app_data("subtype", subtype.clone()));
    }
    out
}

//! The JSON line `listen` prints for a message, written straight into the output buffer.
//!
//! It is the object of [`pullkin::Message::to_json`], byte for byte (compact, keys in
//! the sorted order `serde_json`'s map keeps), without building that `Value` first: at
//! line rate the tree of small allocations it takes cost more than everything else the
//! command does per message. Strings, maps and the payload's own JSON go through
//! `serde_json`'s serializer, so escaping is `serde_json`'s.

use std::time::SystemTime;

use base64::Engine as _;
use pullkin::Message;

/// Serializes a value with `serde_json` into `out`. Writing into a vector fails only for
/// a map with keys that are not strings, which none of these has; `null` keeps the line
/// valid JSON all the same.
macro_rules! value {
    ($out:expr, $value:expr) => {{
        let out: &mut Vec<u8> = $out;
        let mark = out.len();
        if serde_json::to_writer(&mut *out, $value).is_err() {
            out.truncate(mark);
            out.extend_from_slice(b"null");
        }
    }};
}

/// Appends the line of `message` (of `app`), without its newline.
pub(crate) fn write(out: &mut Vec<u8>, app: &str, message: &Message) {
    out.extend_from_slice(b"{\"app\":");
    string(out, app);
    present(out, b",\"collapse_key\":", message.collapse_key.as_deref());
    out.extend_from_slice(b",\"data\":");
    let data_at = out.len();
    value!(out, &message.data);
    // `raw` repeats it (when the payload is not JSON): copied, not escaped again.
    let data = data_at..out.len();
    present(
        out,
        b",\"delivered_priority\":",
        message.delivered_priority.as_deref(),
    );
    out.extend_from_slice(b",\"encoding\":");
    optional(out, message.encoding.map(|e| e.as_str()));
    // Known when the sent time and the TTL are.
    if message.sent.is_some() && message.ttl.is_some() {
        out.extend_from_slice(b",\"expired\":");
        out.extend_from_slice(if message.expired { b"true" } else { b"false" });
    }
    out.extend_from_slice(b",\"fcm_message_id\":");
    optional(out, message.fcm_message_id.as_deref());
    out.extend_from_slice(b",\"notification\":");
    match &message.notification {
        Some(notification) => value!(out, &notification.fields),
        None => out.extend_from_slice(b"null"),
    }
    present(
        out,
        b",\"original_priority\":",
        message.original_priority.as_deref(),
    );
    // A payload that is not JSON is shown as it came: text when UTF-8, base64 otherwise.
    if message.json.is_none() && !message.payload.is_empty() {
        match std::str::from_utf8(&message.payload) {
            Ok(text) => {
                out.extend_from_slice(b",\"payload\":");
                string(out, text);
            }
            Err(_) => {
                out.extend_from_slice(b",\"payload_base64\":");
                let encoded = base64::engine::general_purpose::STANDARD.encode(&message.payload);
                string(out, &encoded);
            }
        }
    }
    out.extend_from_slice(b",\"persistent_id\":");
    optional(out, message.persistent_id.as_deref());
    out.extend_from_slice(b",\"priority\":");
    optional(out, message.priority.as_deref());
    if let Some(queued) = message.queued {
        out.extend_from_slice(b",\"queued_ms\":");
        number(out, u64::try_from(queued.as_millis()).ok());
    }
    out.extend_from_slice(b",\"raw\":");
    raw(out, message, data);
    out.extend_from_slice(b",\"received_ms\":");
    number(out, unix_ms(message.received));
    out.extend_from_slice(b",\"sender_id\":");
    optional(out, message.sender_id.as_deref());
    out.extend_from_slice(b",\"sent_ms\":");
    number(out, message.sent.and_then(unix_ms));
    present(out, b",\"topic\":", message.topic.as_deref());
    if let Some(ttl) = message.ttl {
        out.extend_from_slice(b",\"ttl_s\":");
        number(out, Some(ttl.as_secs()));
    }
    out.push(b'}');
}

/// [`Message::raw`]: the payload's JSON, or an object built from the message (its
/// `data`, serialized already, at `data` in `out`).
fn raw(out: &mut Vec<u8>, message: &Message, data: std::ops::Range<usize>) {
    if let Some(json) = &message.json {
        value!(out, json);
        return;
    }
    out.extend_from_slice(b"{\"data\":");
    out.extend_from_within(data);
    let mut put = |key: &[u8], text: Option<&str>| {
        if let Some(text) = text {
            out.extend_from_slice(key);
            string(out, text);
        }
    };
    put(b",\"fcmMessageId\":", message.fcm_message_id.as_deref());
    put(b",\"from\":", message.sender_id.as_deref());
    if let Some(notification) = &message.notification {
        out.extend_from_slice(b",\"notification\":");
        value!(out, &notification.fields);
    }
    if let Some(priority) = message.priority.as_deref() {
        out.extend_from_slice(b",\"priority\":");
        string(out, priority);
    }
    out.push(b'}');
}

fn string(out: &mut Vec<u8>, text: &str) {
    value!(out, text);
}

/// `key` and the string, only when there is one (the metadata keys, omitted when absent).
fn present(out: &mut Vec<u8>, key: &[u8], text: Option<&str>) {
    if let Some(text) = text {
        out.extend_from_slice(key);
        string(out, text);
    }
}

fn optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

fn number(out: &mut Vec<u8>, number: Option<u64>) {
    match number {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn unix_ms(time: SystemTime) -> Option<u64> {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use fcm_emulator::{Emulator, Notification, SendMessage};
    use fcm_install::{FcmRegistration, FcmToken};
    use gcm_checkin::{GcmToken, SecurityToken};
    use pullkin::{AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys};
    use webpush_ece::{EncryptOptions, ReceiverKeys};

    /// The line without its `received_ms` (the time it was made).
    fn without_received(line: &[u8]) -> String {
        let text = String::from_utf8(line.to_vec()).unwrap();
        let start = text.find(",\"received_ms\":").unwrap();
        let end = start + 1 + text[start + 1..].find(',').unwrap();
        format!("{}{}", &text[..start], &text[end..])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_line_is_the_messages_to_json_byte_for_byte() {
        let emulator = Emulator::start().await.unwrap();
        let keys = ReceiverKeys::generate();
        // An Android device (plain data) and a web one (aesgcm JSON, aes128gcm text and
        // bytes).
        let android = emulator.create_device();
        let gcm = emulator
            .register_gcm(android.android_id, "com.example.app", None, "1234567890")
            .unwrap();
        let web = emulator.create_device();
        let subscription = emulator
            .subscribe_web(
                web.android_id,
                &keys.public_key_base64(),
                &keys.auth_secret_base64(),
            )
            .unwrap();
        let credentials =
            |android_id, security_token, token: &str, fcm: AppCredentialsFcm| AppCredentials {
                gcm: AppCredentialsGcm {
                    token: GcmToken::new(token.to_owned()),
                    app_id: "com.example.app".into(),
                    android_id,
                    security_token: SecurityToken::new(security_token),
                    installation: None,
                },
                fcm,
                keys: AppCredentialsKeys::from_keys(&keys).unwrap(),
                config: None,
            };
        let mut config = pullkin::ListenerConfig::default();
        config.mcs_endpoints = vec![format!("localhost:{}", emulator.mcs_addr().port())];
        let pullkin = pullkin::Pullkin::builder()
            .tls(emulator.client_tls_config())
            .config(config)
            .build()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = Arc::clone(&lines);
            pullkin.on_notification(
                |_, _| true,
                move |message, _| {
                    let mut ours = Vec::new();
                    super::write(&mut ours, "app \"x\"", message);
                    let theirs = serde_json::to_vec(&message.to_json("app \"x\"")).unwrap();
                    lines.lock().unwrap().push((ours, theirs));
                },
            );
        }
        pullkin
            .add_app(
                "android",
                &credentials(
                    android.android_id,
                    android.security_token,
                    &gcm.token,
                    AppCredentialsFcm::default(),
                ),
                [],
            )
            .unwrap();
        pullkin
            .add_app(
                "web",
                &credentials(
                    web.android_id,
                    web.security_token,
                    &subscription.gcm_token,
                    AppCredentialsFcm {
                        registration: Some(FcmRegistration::new(
                            format!("projects/p/registrations/{}", subscription.token),
                            FcmToken::new(subscription.token.clone()),
                        )),
                        error: None,
                    },
                ),
                [],
            )
            .unwrap();
        let pullkin = Arc::new(pullkin);
        let runner = {
            let pullkin = Arc::clone(&pullkin);
            tokio::spawn(async move { pullkin.run_all().await })
        };
        let mut notification = Notification::default();
        notification.title = Some("Tïtle \"quoted\"".into());
        notification.body = Some("line\nbreak".into());
        let plain = SendMessage::new()
            .data("order", "42")
            .data("text", "ünïcode \u{1} \\ \"")
            .priority("high")
            .notification(notification.clone());
        emulator.send(&gcm.token, &plain).unwrap();
        emulator.send(&gcm.token, &SendMessage::new()).unwrap();
        emulator
            .send(
                &subscription.token,
                &SendMessage::new().data("k", "v").notification(notification),
            )
            .unwrap();
        let subscription_keys = keys.subscription_keys();
        for body in [&b"plain text"[..], &[0xff, 0xfe, 0x00][..]] {
            let encrypted =
                webpush_ece::aes128gcm::encrypt(&subscription_keys, body, &EncryptOptions::new())
                    .unwrap();
            emulator
                .send_webpush(&subscription.token, encrypted)
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while lines.lock().unwrap().len() < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "not every message arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pullkin.shutdown().await;
        let _ = runner.await;
        let lines = lines.lock().unwrap().clone();
        let mut kinds = std::collections::BTreeSet::new();
        for (ours, theirs) in &lines {
            assert_eq!(without_received(ours), without_received(theirs));
            let parsed: serde_json::Value = serde_json::from_slice(ours).unwrap();
            assert!(parsed["received_ms"].is_u64(), "{parsed}");
            for key in ["payload", "payload_base64", "notification"] {
                if !parsed[key].is_null() {
                    kinds.insert(key.to_owned());
                }
            }
            kinds.insert(parsed["encoding"].as_str().unwrap_or("plain").to_owned());
        }
        // Every shape was seen.
        for kind in [
            "payload",
            "payload_base64",
            "notification",
            "plain",
            "aesgcm",
            "aes128gcm",
        ] {
            assert!(kinds.contains(kind), "no {kind} line in {kinds:?}");
        }
        emulator.shutdown().await;
    }
}

//! No device secret appears in logs at any level, nor in `Debug` output: registration
//! through the emulator, listening and receiving a message of each kind, with every
//! `tracing` event of the client crates captured at TRACE.
//!
//! Alone in its test binary because it installs the process-wide subscriber: the
//! listener's work runs on several threads (the runtime's workers, the blocking pool),
//! which a thread-local default would not see. The emulator — Google's side, which
//! knows every token by necessity — is filtered out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use fcm_emulator::SendMessage;
use pullkin::{AppCredentials, Event};
use pullkin_e2e::{Harness, next, wait_connected};
use tracing_subscriber::EnvFilter;
use webpush_ece::EncryptOptions;

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every secret of a registration, as it would appear in text.
fn secrets(credentials: &AppCredentials) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            "security token",
            credentials.gcm.security_token.expose().to_string(),
        ),
        ("GCM token", credentials.gcm.token.as_str().to_owned()),
        ("private key", credentials.keys.private.expose().clone()),
        ("auth secret", credentials.keys.secret.expose().clone()),
    ];
    if let Some(token) = credentials.fcm.token() {
        out.push(("FCM token", token.to_owned()));
    }
    if let Some(installation) = &credentials.gcm.installation {
        out.push((
            "FIS refresh token",
            installation.refresh_token.as_str().to_owned(),
        ));
        out.push(("FIS auth token", installation.auth_token.token().to_owned()));
    }
    for (name, value) in &out {
        assert!(
            value.len() >= 8,
            "{name} is too short to search for: {value:?}"
        );
    }
    out
}

fn assert_hidden(what: &str, text: &str, secrets: &[(&str, String)]) {
    for (name, value) in secrets {
        assert!(
            !text.contains(value.as_str()),
            "the {name} appears in {what}:\n{}",
            text.lines()
                .filter(|l| l.contains(value.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace,fcm_emulator=off"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let harness = Harness::start().await.unwrap();
    let web = harness.register_web().await.unwrap();
    let android = harness.register_android().await.unwrap();
    let renewed = harness.core.renew(&web).await.unwrap();
    let mut all = secrets(&web);
    all.extend(secrets(&android));
    all.extend(secrets(&renewed.credentials));

    let pullkin = harness.listener(None);
    let mut events = pullkin.events();
    pullkin.add_app("web", &web, []).unwrap();
    pullkin.add_app("android", &android, []).unwrap();
    let mut web_stream = Box::pin(pullkin.listen("web").unwrap());
    let mut android_stream = Box::pin(pullkin.listen("android").unwrap());
    wait_connected(&pullkin, "web").await;
    wait_connected(&pullkin, "android").await;

    // One that cannot be decrypted (its event carries the stanza; taking the next web
    // message reports it), then one message of each kind.
    let emulator = &harness.emulator;
    emulator
        .send_webpush(web.fcm.token().unwrap(), vec![0u8; 40])
        .unwrap();
    emulator
        .send(
            web.fcm.token().unwrap(),
            &SendMessage::new().data("kind", "aesgcm"),
        )
        .unwrap();
    let keys = web.keys.receiver_keys().unwrap();
    let body = webpush_ece::aes128gcm::encrypt(
        &keys.subscription_keys(),
        br#"{"data":{"kind":"aes128gcm"}}"#,
        &EncryptOptions::new(),
    )
    .unwrap();
    emulator
        .send_webpush(web.fcm.token().unwrap(), body)
        .unwrap();
    emulator
        .send(
            android.gcm.token.as_str(),
            &SendMessage::new().data("kind", "plain"),
        )
        .unwrap();
    let mut incoming = vec![
        next(&mut web_stream).await,
        next(&mut web_stream).await,
        next(&mut android_stream).await,
    ];
    let mut undecryptable = None;
    while let Ok(event) = events.try_recv() {
        if matches!(event, Event::Undecryptable { .. }) {
            undecryptable = Some(event);
        }
    }
    let undecryptable = undecryptable.expect("the undecryptable message was reported");
    incoming.sort_by_key(|i| i.message.data["kind"].clone());
    let kinds: Vec<&str> = incoming
        .iter()
        .map(|i| i.message.data["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["aes128gcm", "aesgcm", "plain"]);
    pullkin.shutdown().await;

    // Debug output of everything that holds or touched a secret.
    let mut shown = vec![
        (
            "the credentials' Debug",
            format!("{web:?} {android:?} {:?}", renewed.credentials),
        ),
        (
            "the credentials' parts' Debug",
            format!("{:?} {:?} {:?}", web.gcm, web.fcm, web.keys),
        ),
        ("the core's Debug", format!("{:?}", harness.core)),
        ("the listener's Debug", format!("{pullkin:?}")),
        ("the renewal's Debug", format!("{renewed:?}")),
        ("the events' Debug", format!("{undecryptable:?}")),
        ("the receiver keys' Debug", format!("{keys:?}")),
        ("the harness' Debug", format!("{harness:?}")),
    ];
    for message in &incoming {
        // The stanza may hold the payload; never the device's secrets.
        shown.push(("a message's Debug", format!("{:?}", message.message)));
        shown.push(("a stanza's Debug", format!("{:?}", message.stanza)));
        shown.push(("an Incoming's Debug", format!("{message:?}")));
    }
    for (what, text) in &shown {
        assert_hidden(what, text, &all);
    }

    harness.emulator.shutdown().await;
    let logs = captured.text();
    // The capture works, and saw the levels and crates that handle secrets.
    for needle in ["DEBUG", "INFO", "pullkin::", "fcm_http"] {
        assert!(logs.contains(needle), "no {needle} in the captured logs");
    }
    assert_hidden("the logs", &logs, &all);
}

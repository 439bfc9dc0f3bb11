//! The library crates together: `PullkinCore::register` over HTTPS to the emulator for
//! both personas, `Pullkin` over TLS, every payload encoding, and restarts on a
//! `DirStore` that deliver nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use fcm_emulator::{Notification, Persona, SendMessage};
use futures_util::StreamExt;
use pullkin::{DirStore, Store};
use pullkin_e2e::{Harness, WAIT, next, wait_connected};
use webpush_ece::{ContentEncoding, EncryptOptions, SubscriptionKeys, aes128gcm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_devices_receive_every_encoding_once_across_restarts() {
    let harness = Harness::start().await.unwrap();
    let android = harness.register_android().await.unwrap();
    let web = harness.register_web().await.unwrap();
    let emulator = &harness.emulator;

    // The emulator saw both personas, each with a Firebase installation and FCM token.
    let android_gcm = emulator
        .gcm_registration(android.gcm.token.as_str())
        .unwrap();
    assert_eq!(android_gcm.persona, Persona::Android);
    assert_eq!(android_gcm.app, "com.example.e2e");
    let web_gcm = emulator.gcm_registration(web.gcm.token.as_str()).unwrap();
    assert_eq!(web_gcm.persona, Persona::Web);
    let web_fcm_token = web.fcm.token().unwrap().to_owned();
    let web_fcm = emulator.fcm_registration(&web_fcm_token).unwrap();
    assert_eq!(web_fcm.p256dh, web.keys.public);
    assert!(android.gcm.installation.is_some() && web.gcm.installation.is_some());

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).unwrap());
    let pullkin = harness.listener(Some(Arc::clone(&store)));
    pullkin.add_app("android", &android, Vec::new()).unwrap();
    pullkin.add_app("web", &web, Vec::new()).unwrap();
    let mut messages = futures_util::stream::select(
        pullkin.listen("android").unwrap().boxed(),
        pullkin.listen("web").unwrap().boxed(),
    );
    wait_connected(&pullkin, "android").await;
    wait_connected(&pullkin, "web").await;

    let message = |kind: &str| {
        SendMessage::new()
            .data("kind", kind)
            .notification(Notification::new("e2e", kind))
    };
    emulator
        .send(android.gcm.token.as_str(), &message("plain"))
        .unwrap();
    emulator.send(&web_fcm_token, &message("aesgcm")).unwrap();
    let subscription =
        SubscriptionKeys::from_base64(&web.keys.public, web.keys.secret.expose()).unwrap();
    let body = aes128gcm::encrypt(
        &subscription,
        br#"{"data":{"kind":"aes128gcm"}}"#,
        &EncryptOptions::new(),
    )
    .unwrap();
    emulator.send_webpush(web.gcm.token.as_str(), body).unwrap();

    let mut seen = HashSet::new();
    for _ in 0..3 {
        let incoming = next(&mut messages).await;
        let message = &incoming.message;
        let expected = match message.data["kind"].as_str() {
            "plain" => ("android", None),
            "aesgcm" => ("web", Some(ContentEncoding::AesGcm)),
            "aes128gcm" => ("web", Some(ContentEncoding::Aes128Gcm)),
            other => panic!("unexpected message {other}"),
        };
        assert_eq!((incoming.app.as_str(), message.encoding), expected);
        assert!(seen.insert(message.persistent_id.clone().unwrap()));
    }
    pullkin.shutdown().await;
    drop(messages);

    // Restarted on the same store: only what is new arrives.
    let pullkin = harness.listener(Some(Arc::clone(&store)));
    pullkin.add_app("android", &android, Vec::new()).unwrap();
    pullkin.add_app("web", &web, Vec::new()).unwrap();
    let mut messages = futures_util::stream::select(
        pullkin.listen("android").unwrap().boxed(),
        pullkin.listen("web").unwrap().boxed(),
    );
    emulator
        .send(android.gcm.token.as_str(), &message("after"))
        .unwrap();
    emulator.send(&web_fcm_token, &message("after")).unwrap();
    for _ in 0..2 {
        let incoming = next(&mut messages).await;
        assert_eq!(incoming.message.data["kind"], "after");
        assert!(!seen.contains(incoming.message.persistent_id.as_deref().unwrap()));
    }
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_matching_messages_and_renewal_keeps_live_credentials() {
    let harness = Harness::start().await.unwrap();
    let web = harness.register_web().await.unwrap();

    // Fresh credentials need nothing: the check-in answers the same identity.
    let renewal = harness.core.renew(&web).await.unwrap();
    assert!(!renewal.changed && !renewal.identity_changed);
    assert_eq!(renewal.credentials, web);

    let pullkin = Arc::new(harness.listener(None));
    let titles = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let titles = Arc::clone(&titles);
        pullkin.on_notification(
            |m, _| m.priority.as_deref() == Some("high"),
            move |m, _| {
                let title = m.notification.as_ref().and_then(|n| n.title.clone());
                titles.lock().unwrap().push(title.unwrap_or_default());
                let _ = done_tx.send(());
            },
        );
    }
    pullkin.add_app("web", &web, Vec::new()).unwrap();
    let runner = {
        let pullkin = Arc::clone(&pullkin);
        tokio::spawn(async move { pullkin.run_all().await })
    };
    let token = web.fcm.token().unwrap();
    for (title, priority) in [("low", "normal"), ("urgent", "high")] {
        let message = SendMessage::new()
            .priority(priority)
            .notification(Notification::new(title, "body"));
        harness.emulator.send(token, &message).unwrap();
    }
    tokio::time::timeout(WAIT, done_rx.recv()).await.unwrap();
    // Both were taken in order, so the normal one is past the filter already.
    assert_eq!(*titles.lock().unwrap(), ["urgent"]);
    pullkin.shutdown().await;
    tokio::time::timeout(WAIT, runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

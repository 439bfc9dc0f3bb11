//! Message metadata (docs/protocol.md §7.4) over MCS from `fcm-emulator`: collapse key,
//! TTL, sent and queued times, both priorities, the topic, and FCM's message id of an
//! encrypted message; and the same in the JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use crate::support::{listener_config, next, shutdown};
use fcm_emulator::{Emulator, SendMessage};
use pullkin::Pullkin;
use pullkin_test_support::devices::{android_device, web_device};

fn listener(emulator: &Emulator) -> Pullkin {
    Pullkin::builder()
        .config(listener_config(emulator))
        .tls(pullkin_test_support::emulator::tls(emulator))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_arrives_with_its_collapse_key_ttl_times_and_priorities() {
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let before = SystemTime::now();
    // Sent while the device is offline; it waits 30 s on the server's clock.
    emulator
        .send(
            &android.token,
            &SendMessage::new()
                .data("score", "3:1")
                .collapse_key("scores")
                .ttl(Duration::from_secs(600))
                .priority("high"),
        )
        .unwrap();
    emulator.advance_clock(Duration::from_secs(30));
    let pullkin = listener(&emulator);
    pullkin
        .add_app("android", &android.credentials, [])
        .unwrap();
    let mut stream = Box::pin(pullkin.listen("android").unwrap());
    let incoming = next(&mut stream).await;
    let message = &incoming.message;
    assert_eq!(message.data.get("score").map(String::as_str), Some("3:1"));
    assert_eq!(message.collapse_key.as_deref(), Some("scores"));
    assert_eq!(message.ttl, Some(Duration::from_secs(600)));
    let sent = message.sent.expect("a sent time");
    assert!(sent >= before - Duration::from_secs(1), "{sent:?}");
    assert!(message.received >= sent, "arrival after sending");
    let queued = message.queued.expect("it waited for a connection");
    assert!(queued >= Duration::from_secs(30), "{queued:?}");
    assert!(!message.expired);
    assert_eq!(message.original_priority.as_deref(), Some("high"));
    assert_eq!(message.delivered_priority.as_deref(), Some("high"));
    assert_eq!(message.topic, None);
    let line = incoming.to_json();
    assert_eq!(line["collapse_key"], "scores");
    assert_eq!(line["ttl_s"], 600);
    assert!(line["queued_ms"].as_u64().unwrap() >= 30_000, "{line}");
    assert_eq!(line["expired"], false);
    assert_eq!(line["original_priority"], "high");
    assert!(line.get("topic").is_none(), "{line}");
    drop(incoming);

    // A topic message, sent while connected: the topic, and no waiting time.
    emulator.subscribe_topic(&android.token, "news").unwrap();
    emulator
        .send_to_topic("news", &SendMessage::new().data("headline", "x"))
        .unwrap();
    let incoming = next(&mut stream).await;
    assert_eq!(incoming.message.topic.as_deref(), Some("news"));
    assert_eq!(incoming.message.queued, None);
    assert_eq!(incoming.to_json()["topic"], "news");
    drop(incoming);
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_message_has_its_fcm_message_id_and_collapse_key() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    let pullkin = listener(&emulator);
    pullkin.add_app("web", &web.credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());
    emulator
        .send(
            &web.token,
            &SendMessage::new()
                .data("k", "v")
                .collapse_key("updates")
                .ttl(Duration::from_secs(60)),
        )
        .unwrap();
    let incoming = next(&mut stream).await;
    let message = &incoming.message;
    assert!(message.encoding.is_some(), "encrypted");
    let id = message.fcm_message_id.as_deref().expect("FCM's message id");
    assert_eq!(
        message
            .json
            .as_ref()
            .and_then(|json| json["fcmMessageId"].as_str()),
        Some(id),
        "the payload's"
    );
    assert_eq!(message.collapse_key.as_deref(), Some("updates"));
    assert_eq!(message.ttl, Some(Duration::from_secs(60)));
    assert!(!message.expired);
    drop(incoming);
    shutdown(&pullkin, &emulator).await;
}

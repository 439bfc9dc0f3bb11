//! Topics, identity resets, several senders and unregistering end to end against
//! `fcm-emulator` (docs/protocol.md §7.1, §7.5): register3 over TLS as Google's side
//! answers it, and the messages that reach the listener over MCS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fcm_emulator::{Emulator, SendMessage};
use fcm_http::RetryPolicy;
use pullkin::{AppCredentials, Incoming, Pullkin, PullkinCore, PullkinError, RegisterParams};

use crate::support::{WAIT, core_builder, listener_config, next};

const API_KEY: &str = "AIzaSyEmulatorKey";
const PROJECT: &str = "emulated-project";
const SENDER: &str = "998877665544";
const APP_ID: &str = "1:998877665544:android:0123abcd";

async fn emulator() -> Emulator {
    Emulator::builder().api_key(API_KEY).start().await.unwrap()
}

fn core(emulator: &Emulator) -> PullkinCore {
    core_builder(emulator)
        .retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(1))
                .with_max_delay(Duration::from_millis(5)),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn android(senders: &str) -> RegisterParams {
    RegisterParams::android(senders, APP_ID, API_KEY, PROJECT).app_name("com.example.topics")
}

fn gcm(credentials: &AppCredentials) -> &str {
    credentials.gcm.token.as_str()
}

/// The `n` of the next message and whom it came from.
async fn next_n(
    stream: &mut (impl futures_util::Stream<Item = Incoming> + Unpin),
) -> (String, String) {
    let incoming = next(stream).await;
    (
        incoming.message.data["n"].clone(),
        incoming.stanza.sender().to_owned(),
    )
}

fn n(value: &str) -> SendMessage {
    SendMessage::new().data("n", value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_subscribed_topics_and_conditions_arrive() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core.register(&android(SENDER)).await.unwrap();
    core.subscribe_topic(&mut credentials, "a").await.unwrap();
    core.subscribe_topic(&mut credentials, "b").await.unwrap();
    assert_eq!(emulator.topics(gcm(&credentials)), ["a", "b"]);
    assert_eq!(credentials.topics().collect::<Vec<_>>(), ["a", "b"]);

    let pullkin = Pullkin::builder()
        .config(listener_config(&emulator))
        .tls(emulator.client_tls_config())
        .build()
        .unwrap();
    pullkin.add_app("app", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("app").unwrap());

    assert_eq!(emulator.send_to_topic("a", &n("1")).unwrap().len(), 1);
    assert_eq!(next_n(&mut stream).await, ("1".into(), "/topics/a".into()));
    let both = "'a' in topics && 'b' in topics";
    assert_eq!(emulator.send_to_condition(both, &n("2")).unwrap().len(), 1);
    assert_eq!(next_n(&mut stream).await.0, "2");

    core.unsubscribe_topic(&mut credentials, "a").await.unwrap();
    assert_eq!(emulator.topics(gcm(&credentials)), ["b"]);
    assert_eq!(credentials.topics().collect::<Vec<_>>(), ["b"]);

    // Nothing for `a` any more, neither as a topic nor in a condition; `b` still.
    assert!(emulator.send_to_topic("a", &n("lost")).unwrap().is_empty());
    assert!(
        emulator
            .send_to_condition(both, &n("lost"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(emulator.send_to_topic("b", &n("3")).unwrap().len(), 1);
    let either = "'a' in topics || 'b' in topics";
    assert_eq!(
        emulator.send_to_condition(either, &n("4")).unwrap().len(),
        1
    );
    assert_eq!(next_n(&mut stream).await, ("3".into(), "/topics/b".into()));
    assert_eq!(next_n(&mut stream).await.0, "4");
    // And nothing else came: a last message to the token is the next one.
    emulator.send(gcm(&credentials), &n("end")).unwrap();
    assert_eq!(next_n(&mut stream).await.0, "end");
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_instance_is_reset_with_its_topics() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core.register(&android(SENDER)).await.unwrap();
    core.subscribe_topic(&mut credentials, "news")
        .await
        .unwrap();
    core.subscribe_topic(&mut credentials, "sport")
        .await
        .unwrap();
    let old_token = gcm(&credentials).to_owned();

    emulator.invalidate_instance(&old_token).unwrap();
    let error = core
        .subscribe_topic(&mut credentials, "more")
        .await
        .unwrap_err();
    assert!(matches!(error, PullkinError::IdentityReset(_)), "{error:?}");
    assert_eq!(credentials.topics().collect::<Vec<_>>(), ["news", "sport"]);

    let renewal = core.reset_identity(&credentials).await.unwrap();
    assert!(renewal.identity_changed && renewal.changed);
    assert!(
        renewal.topics_failed.is_empty(),
        "{:?}",
        renewal.topics_failed
    );
    let renewed = renewal.credentials;
    assert_ne!(renewed.gcm.android_id, credentials.gcm.android_id);
    assert_ne!(gcm(&renewed), old_token);
    assert_eq!(emulator.topics(gcm(&renewed)), ["news", "sport"]);
    assert!(emulator.topics(&old_token).is_empty());
    assert_eq!(renewed.topics().collect::<Vec<_>>(), ["news", "sport"]);

    // The new identity receives the topics' messages.
    let pullkin = Pullkin::builder()
        .config(listener_config(&emulator))
        .tls(emulator.client_tls_config())
        .build()
        .unwrap();
    pullkin.add_app("app", &renewed, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("app").unwrap());
    assert_eq!(emulator.send_to_topic("sport", &n("5")).unwrap().len(), 1);
    assert_eq!(
        next_n(&mut stream).await,
        ("5".into(), "/topics/sport".into())
    );
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_senders_and_a_changed_set() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core
        .register(&android("998877665544,111222333"))
        .await
        .unwrap();
    let registration = emulator.gcm_registration(gcm(&credentials)).unwrap();
    assert_eq!(registration.sender, "998877665544,111222333");
    core.subscribe_topic(&mut credentials, "news")
        .await
        .unwrap();

    let renewal = core
        .set_senders(&credentials, &["998877665544", "111222333", "444555666"])
        .await
        .unwrap();
    assert!(renewal.changed && !renewal.identity_changed);
    let renewed = renewal.credentials;
    assert_eq!(renewed.gcm.android_id, credentials.gcm.android_id);
    let registration = emulator.gcm_registration(gcm(&renewed)).unwrap();
    assert_eq!(registration.sender, "998877665544,111222333,444555666");
    assert_eq!(emulator.topics(gcm(&renewed)), ["news"]);
    assert!(renewed.fcm.is_success(), "{:?}", renewed.fcm.error);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistering_deletes_the_registrations() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core.register(&android(SENDER)).await.unwrap();
    core.subscribe_topic(&mut credentials, "news")
        .await
        .unwrap();
    let fcm_token = credentials.fcm.token().unwrap().to_owned();
    assert!(emulator.fcm_registration(&fcm_token).is_some());

    let outcome = tokio::time::timeout(WAIT, core.unregister(&credentials))
        .await
        .unwrap()
        .unwrap();

    assert!(outcome.fcm_registration_deleted);
    assert!(outcome.installation_deleted);
    let fid = &credentials.gcm.installation.as_ref().unwrap().fid;
    assert!(emulator.installation(fid).is_none());
    assert!(emulator.gcm_registration(gcm(&credentials)).is_none());
    assert!(emulator.fcm_registration(&fcm_token).is_none());
    assert!(emulator.topic_subscribers("news").is_empty());
    assert!(emulator.send(&fcm_token, &n("x")).is_err());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iid_control_messages_are_recognised_and_answered() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core.register(&android(SENDER)).await.unwrap();
    core.subscribe_topic(&mut credentials, "news")
        .await
        .unwrap();
    let pullkin = Pullkin::builder()
        .config(listener_config(&emulator))
        .tls(emulator.client_tls_config())
        .build()
        .unwrap();
    pullkin.add_app("app", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("app").unwrap());

    let token = gcm(&credentials).to_owned();
    for (command, expected) in [
        (fcm_emulator::IidCommand::Sync, pullkin::IidCommand::Sync),
        (fcm_emulator::IidCommand::Rst, pullkin::IidCommand::Reset),
        (
            fcm_emulator::IidCommand::RstFull,
            pullkin::IidCommand::ResetAll,
        ),
    ] {
        emulator.send_iid_command(&token, command).unwrap();
        let incoming = next(&mut stream).await;
        let data = incoming
            .message
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let parsed = pullkin::IidCommand::from_app_data(incoming.stanza.sender(), data);
        assert_eq!(parsed, Some(expected));
    }
    // SYNC: the same identity, nothing changed at the emulator.
    let synced = core.sync_token(&credentials).await.unwrap();
    assert!(!synced.identity_changed);
    // RST after the server invalidated the instance: a new identity, the topic again.
    emulator.invalidate_instance(&token).unwrap();
    let renewal = core.reset_identity(&credentials).await.unwrap();
    assert!(renewal.identity_changed);
    assert_eq!(emulator.topics(gcm(&renewal.credentials)), ["news"]);
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

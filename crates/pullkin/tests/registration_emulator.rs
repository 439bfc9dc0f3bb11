//! Topics, identity resets, several senders and unregistering end to end against
//! `fcm-emulator` (docs/protocol.md §7.1, §7.5): register3 over TLS as Google's side
//! answers it, and the messages that reach the listener over MCS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fcm_emulator::SendMessage;
use pullkin::{AppCredentials, Incoming, PullkinCore, PullkinError, RegisterParams};

use crate::support::emulated::{API_KEY, APP_ID, PROJECT, SENDER};
use crate::support::{WAIT, emulator, emulator_core as core, listen, next, shutdown};

fn android(senders: &str) -> RegisterParams {
    RegisterParams::android(senders, APP_ID, API_KEY, PROJECT).app_name("com.example.topics")
}

/// Android credentials for [`SENDER`], subscribed to `topics`.
async fn subscribed(core: &PullkinCore, topics: &[&str]) -> AppCredentials {
    let mut credentials = core.register(&android(SENDER)).await.unwrap();
    for topic in topics {
        core.subscribe_topic(&mut credentials, topic).await.unwrap();
    }
    credentials
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
    let mut credentials = subscribed(&core, &["a", "b"]).await;
    assert_eq!(emulator.topics(gcm(&credentials)), ["a", "b"]);
    assert_eq!(credentials.topics().collect::<Vec<_>>(), ["a", "b"]);

    let (pullkin, mut stream) = listen(&emulator, &credentials);

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
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_instance_is_reset_with_its_topics() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = subscribed(&core, &["news", "sport"]).await;
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
    let (pullkin, mut stream) = listen(&emulator, &renewed);
    assert_eq!(emulator.send_to_topic("sport", &n("5")).unwrap().len(), 1);
    assert_eq!(
        next_n(&mut stream).await,
        ("5".into(), "/topics/sport".into())
    );
    shutdown(&pullkin, &emulator).await;
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
    let credentials = subscribed(&core, &["news"]).await;
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
    let credentials = subscribed(&core, &["news"]).await;
    let (pullkin, mut stream) = listen(&emulator, &credentials);

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
    shutdown(&pullkin, &emulator).await;
}

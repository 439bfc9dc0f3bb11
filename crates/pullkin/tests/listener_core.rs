//! The listener with credential upkeep (`Pullkin::with_core`) against `fcm-emulator`:
//! check-in before each connection, and a dead identity replaced while listening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::{connected, core_builder, listener_config, wait_for_state};
use fcm_emulator::{ConnectProxy, Emulator, Endpoint, HttpFailure, SendMessage, Target};
use fcm_http::RetryPolicy;
use futures_util::StreamExt;
use pullkin::{
    ConnectionError, ConnectionState, DirStore, Event, Incoming, ListenerConfig, Pullkin,
    PullkinCore, RegisterParams, Store,
};

const WAIT: Duration = Duration::from_secs(10);

async fn next(stream: &mut (impl futures_util::Stream<Item = Incoming> + Unpin)) -> Incoming {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
}

fn core(emulator: &Emulator) -> Arc<PullkinCore> {
    Arc::new(
        core_builder(emulator)
            .retry(
                RetryPolicy::default()
                    .with_max_attempts(2)
                    .with_initial_delay(Duration::from_millis(5)),
            )
            .build()
            .unwrap(),
    )
}

fn config(emulator: &Emulator) -> ListenerConfig {
    listener_config(emulator)
}

/// A listener that keeps its apps' credentials alive with `core`.
fn listener(
    core: &Arc<PullkinCore>,
    config: ListenerConfig,
    store: Option<Arc<dyn Store>>,
) -> Pullkin {
    let mut builder = Pullkin::builder().core(Arc::clone(core)).config(config);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_in_before_connecting_and_replaces_a_dead_identity() {
    let emulator = Emulator::start().await.unwrap();
    let core = core(&emulator);
    let credentials = core
        .register(&RegisterParams::web(
            "1234567890",
            "1:1234567890:web:abc",
            "api-key",
            "demo-project",
        ))
        .await
        .unwrap();
    assert!(credentials.fcm.is_success(), "{:?}", credentials.fcm.error);
    let first_id = credentials.gcm.android_id;
    let checkins_before = emulator.device(first_id).unwrap().checkins;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).unwrap());
    let pullkin = listener(&core, config(&emulator), Some(Arc::clone(&store)));
    let mut events = pullkin.events();
    pullkin.add_app("web", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());

    let token = credentials.fcm.token().unwrap().to_owned();
    emulator
        .send(&token, &SendMessage::new().data("n", "1"))
        .unwrap();
    assert_eq!(next(&mut stream).await.message.data["n"], "1");
    assert!(
        emulator.device(first_id).unwrap().checkins > checkins_before,
        "checked in before connecting"
    );

    // Google declares the identity dead: the next check-in is refused.
    emulator.fail_checkins(1, 401);
    emulator.disconnect(Target::Device(first_id));
    let mut changed = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !changed && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Event::CredentialsChanged { app })) => {
                assert_eq!(app, "web");
                changed = true;
            }
            Ok(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(changed, "credentials-changed was announced");
    let renewed = pullkin.credentials("web").unwrap();
    assert_ne!(renewed.gcm.android_id, first_id, "a new device identity");
    // The renewed credentials are stored.
    let stored = store.load_credentials("web").await.unwrap().unwrap();
    assert_eq!(stored.gcm.android_id, renewed.gcm.android_id);
    assert_eq!(stored.fcm.token(), renewed.fcm.token());
    // And the listener receives on the new identity.
    let new_token = renewed.fcm.token().unwrap().to_owned();
    assert!(
        emulator
            .wait_until(WAIT, |e| e.is_connected(renewed.gcm.android_id))
            .await
    );
    emulator
        .send(&new_token, &SendMessage::new().data("n", "2"))
        .unwrap();
    assert_eq!(next(&mut stream).await.message.data["n"], "2");
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_answered_with_retry_after_delays_the_next_attempt() {
    let emulator = Emulator::start().await.unwrap();
    let core = core(&emulator);
    let credentials = core
        .register(&RegisterParams::android(
            "1234567890",
            "1:1234567890:android:abc",
            "api-key",
            "demo-project",
        ))
        .await
        .unwrap();
    // Both check-in attempts of the core's retry policy are answered 503 with
    // "Retry-After: 1": the core gives up after the second, and the listener's own backoff
    // (10 ms here) must stretch to the second Google asked for.
    emulator.fail_next(
        Endpoint::Checkin,
        2,
        HttpFailure::RetryAfter {
            status: 503,
            seconds: 1,
        },
    );
    let mut config = config(&emulator);
    config.reconnect = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_secs(5));
    let pullkin = listener(&core, config, None);
    let mut events = pullkin.events();
    pullkin.add_app("android", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("android").unwrap());

    let deadline = tokio::time::Instant::now() + WAIT;
    let backing_off = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Event::State {
                state: ConnectionState::BackingOff { error, .. },
                ..
            })) => break error,
            Ok(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    // The listener sees the server's wait (its policy waits that long: see the
    // reconnect-policy tests, which check it on a fake clock).
    assert!(
        matches!(backing_off, ConnectionError::Checkin(_)),
        "{backing_off}"
    );
    assert_eq!(backing_off.retry_after(), Some(Duration::from_secs(1)));
    pullkin.probe();
    let mut health = pullkin.health("android").unwrap();
    wait_for_state(&mut health, connected).await;

    // Then it receives.
    let token = credentials.fcm.token().unwrap().to_owned();
    emulator
        .send(&token, &SendMessage::new().data("n", "1"))
        .unwrap();
    assert_eq!(next(&mut stream).await.message.data["n"], "1");
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_listens_through_an_http_proxy() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = ConnectProxy::start().await.unwrap();
    let core = Arc::new(
        core_builder(&emulator)
            .proxy(Some(fcm_http::Proxy::parse(&proxy.url()).unwrap()))
            .build()
            .unwrap(),
    );
    let credentials = core
        .register(&RegisterParams::web(
            "1234567890",
            "1:1234567890:web:abc",
            "api-key",
            "demo-project",
        ))
        .await
        .unwrap();
    assert!(credentials.fcm.is_success(), "{:?}", credentials.fcm.error);
    let http_tunnels = proxy.tunnels().len();
    assert!(http_tunnels >= 1);
    // The listener takes the core's proxy for the MCS connection too.
    let pullkin = listener(&core, config(&emulator), None);
    pullkin.add_app("web", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());
    let token = credentials.fcm.token().unwrap().to_owned();
    emulator
        .send(&token, &SendMessage::new().data("n", "1"))
        .unwrap();
    assert_eq!(next(&mut stream).await.message.data["n"], "1");
    let mcs = format!("localhost:{}", emulator.mcs_addr().port());
    assert!(
        proxy.tunnels().contains(&mcs),
        "{:?} has no tunnel to {mcs}",
        proxy.tunnels()
    );
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

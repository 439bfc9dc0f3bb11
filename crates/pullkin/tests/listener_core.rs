//! The listener with credential upkeep (`Pullkin::with_core`) against `fcm-emulator`:
//! check-in before each connection, and a dead identity replaced while listening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    WAIT, connected, core_builder, listener_config, next, shutdown, wait_for_state,
};
use fcm_emulator::{ConnectProxy, Emulator, Endpoint, HttpFailure, SendMessage, Target};
use fcm_http::RetryPolicy;
use pullkin::{
    AppCredentials, ConnectionError, ConnectionState, DirStore, Event, Incoming, ListenerConfig,
    Pullkin, PullkinCore, RegisterParams, Store,
};
use tokio::sync::broadcast;

/// The web persona of the emulator's demo project.
fn web_params() -> RegisterParams {
    RegisterParams::web(
        "1234567890",
        "1:1234567890:web:abc",
        "api-key",
        "demo-project",
    )
}

/// The Android persona of the emulator's demo project.
fn android_params() -> RegisterParams {
    RegisterParams::android(
        "1234567890",
        "1:1234567890:android:abc",
        "api-key",
        "demo-project",
    )
}

/// Sends `{"n": n}` to the FCM token of `credentials`; what the stream's next message
/// has as `n`.
async fn send_and_receive(
    emulator: &Emulator,
    credentials: &AppCredentials,
    stream: &mut (impl futures_util::Stream<Item = Incoming> + Unpin),
    n: &str,
) -> String {
    let token = credentials.fcm.token().expect("an FCM token");
    emulator
        .send(token, &SendMessage::new().data("n", n))
        .unwrap();
    next(stream).await.message.data["n"].clone()
}

/// Waits (at most 10 s) for the first event that `pick` takes, passing over the others;
/// panics, naming `what`, when none comes.
async fn first_event<T>(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            other => panic!("{what}: {other:?}"),
        }
    }
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
    let credentials = core.register(&web_params()).await.unwrap();
    assert!(credentials.fcm.is_success(), "{:?}", credentials.fcm.error);
    let first_id = credentials.gcm.android_id;
    let checkins_before = emulator.device(first_id).unwrap().checkins;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).unwrap());
    let pullkin = listener(&core, config(&emulator), Some(Arc::clone(&store)));
    let mut events = pullkin.events();
    pullkin.add_app("web", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());

    assert_eq!(
        send_and_receive(&emulator, &credentials, &mut stream, "1").await,
        "1"
    );
    assert!(
        emulator.device(first_id).unwrap().checkins > checkins_before,
        "checked in before connecting"
    );

    // Google declares the identity dead: the next check-in is refused.
    emulator.fail_checkins(1, 401);
    emulator.disconnect(Target::Device(first_id));
    let app = first_event(
        &mut events,
        "credentials-changed was announced",
        |e| match e {
            Event::CredentialsChanged {
                app,
                reason: pullkin::CredentialsChange::Reregistered,
                ..
            } => Some(app),
            _ => None,
        },
    )
    .await;
    assert_eq!(app, "web");
    let renewed = pullkin.credentials("web").unwrap();
    assert_ne!(renewed.gcm.android_id, first_id, "a new device identity");
    // The renewed credentials are stored.
    let stored = store.load_credentials("web").await.unwrap().unwrap();
    assert_eq!(stored.gcm.android_id, renewed.gcm.android_id);
    assert_eq!(stored.fcm.token(), renewed.fcm.token());
    // And the listener receives on the new identity.
    assert!(
        emulator
            .wait_until(WAIT, |e| e.is_connected(renewed.gcm.android_id))
            .await
    );
    assert_eq!(
        send_and_receive(&emulator, &renewed, &mut stream, "2").await,
        "2"
    );
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_answered_with_retry_after_delays_the_next_attempt() {
    let emulator = Emulator::start().await.unwrap();
    let core = core(&emulator);
    let credentials = core.register(&android_params()).await.unwrap();
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

    let backing_off = first_event(&mut events, "backing off", |e| match e {
        Event::State {
            state: ConnectionState::BackingOff { error, .. },
            ..
        } => Some(error),
        _ => None,
    })
    .await;
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
    assert_eq!(
        send_and_receive(&emulator, &credentials, &mut stream, "1").await,
        "1"
    );
    shutdown(&pullkin, &emulator).await;
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
    let credentials = core.register(&web_params()).await.unwrap();
    assert!(credentials.fcm.is_success(), "{:?}", credentials.fcm.error);
    let http_tunnels = proxy.tunnels().len();
    assert!(http_tunnels >= 1);
    // The listener takes the core's proxy for the MCS connection too.
    let pullkin = listener(&core, config(&emulator), None);
    pullkin.add_app("web", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());
    assert_eq!(
        send_and_receive(&emulator, &credentials, &mut stream, "1").await,
        "1"
    );
    let mcs = format!("localhost:{}", emulator.mcs_addr().port());
    assert!(
        proxy.tunnels().contains(&mcs),
        "{:?} has no tunnel to {mcs}",
        proxy.tunnels()
    );
    shutdown(&pullkin, &emulator).await;
}

//! The listener with credential upkeep (`Pullkin::with_core`) against `fcm-emulator`:
//! check-in before each connection, and a dead identity replaced while listening.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::{connected, wait_for_state};
use fcm_emulator::{ConnectProxy, Emulator, Endpoint, HttpFailure, SendMessage, Target};
use fcm_http::{Endpoints, RetryPolicy};
use futures_util::StreamExt;
use pullkin::{
    ConnectionState, DirStore, Event, Incoming, ListenerConfig, Pullkin, PullkinCore,
    RegisterParams, Store,
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
        PullkinCore::builder()
            .endpoints(Endpoints::at(emulator.base_url().as_str()).unwrap())
            .webpki_roots(false)
            .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
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
    ListenerConfig::default()
        .with_mcs_addr(format!("localhost:{}", emulator.mcs_addr().port()))
        .with_reconnect(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(100)),
        )
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
    let pullkin = Pullkin::with_core(
        Arc::clone(&core),
        config(&emulator),
        Some(Arc::clone(&store)),
    );
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
    let stored = store.load_credentials_json("web").unwrap().unwrap();
    assert_eq!(
        stored["gcm"]["android_id"].as_u64(),
        Some(renewed.gcm.android_id)
    );
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
    pullkin.stop(None).await;
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
    let config = ListenerConfig::default()
        .with_mcs_addr(format!("localhost:{}", emulator.mcs_addr().port()))
        .with_reconnect(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_secs(5)),
        );
    let pullkin = Pullkin::with_core(Arc::clone(&core), config, None);
    let mut events = pullkin.events();
    let started = SystemTime::now();
    pullkin.add_app("android", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("android").unwrap());

    let deadline = tokio::time::Instant::now() + WAIT;
    let backing_off = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Event::State {
                state: ConnectionState::BackingOff { until, cause, .. },
                ..
            })) => break (until, cause),
            Ok(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    let (until, cause) = backing_off;
    assert!(cause.contains("check-in failed"), "{cause}");
    // 1 s waited inside the core's retries, then 1 s more by the listener: the next attempt
    // is at least 2 s after the start (without the listener's share, about 1 s).
    let next_attempt = until.duration_since(started).unwrap_or_default();
    assert!(
        next_attempt >= Duration::from_millis(1_950),
        "next attempt {next_attempt:?} after the start: the listener did not wait the 1 s asked"
    );

    // A probe (a network change) does not cut short the wait the server asked for.
    pullkin.probe();
    let mut health = pullkin.health("android").unwrap();
    wait_for_state(&mut health, connected).await;
    let early = until.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        early < Duration::from_millis(100),
        "connected {early:?} before the end of the server's wait"
    );

    // Then it receives.
    let token = credentials.fcm.token().unwrap().to_owned();
    emulator
        .send(&token, &SendMessage::new().data("n", "1"))
        .unwrap();
    assert_eq!(next(&mut stream).await.message.data["n"], "1");
    pullkin.stop(None).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_listens_through_an_http_proxy() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = ConnectProxy::start().await.unwrap();
    let core = Arc::new(
        PullkinCore::builder()
            .endpoints(Endpoints::at(emulator.base_url().as_str()).unwrap())
            .webpki_roots(false)
            .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
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
    let pullkin = Pullkin::with_core(Arc::clone(&core), config(&emulator), None);
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
    pullkin.stop(None).await;
    emulator.shutdown().await;
}

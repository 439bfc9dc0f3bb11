//! Chromium's connection rules for the MCS endpoints (docs/protocol.md §7.2): an ordered
//! list, each tried in turn when the one before fails, the one that worked tried first
//! from then on; against `fcm-emulator` and local sockets that fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{WAIT, connected, listener_config, next, shutdown, wait_for_state};
use fcm_emulator::{Emulator, SendMessage, Target};
use pullkin::{ConnectionState, GOOGLE_MCS_ENDPOINTS, ListenerConfig, Pullkin, PullkinError};
use pullkin_test_support::devices::android_device;
use tokio::net::TcpListener;

fn listener(emulator: &Emulator, config: ListenerConfig) -> Pullkin {
    Pullkin::builder()
        .config(config)
        .tls(pullkin_test_support::emulator::tls(emulator))
        .build()
        .unwrap()
}

/// A local endpoint that accepts TCP connections and closes them at once (no TLS), and
/// how many it accepted.
async fn closing_endpoint() -> (String, Arc<AtomicUsize>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("localhost:{}", socket.local_addr().unwrap().port());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, accepted)
}

/// An address nothing listens on (connection refused).
async fn refused_endpoint() -> String {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    format!("localhost:{port}")
}

#[test]
fn google_s_endpoints_are_5228_then_443() {
    assert_eq!(
        GOOGLE_MCS_ENDPOINTS,
        ["mtalk.google.com:5228", "mtalk.google.com:443"]
    );
    assert_eq!(
        ListenerConfig::default().mcs_endpoints,
        GOOGLE_MCS_ENDPOINTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_endpoint_falls_back_to_the_next_and_the_good_one_is_kept() {
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let (closing, accepted) = closing_endpoint().await;
    let mut config = listener_config(&emulator);
    let emulator_endpoint = config.mcs_endpoints[0].clone();
    config.mcs_endpoints = vec![refused_endpoint().await, closing, emulator_endpoint];
    let pullkin = listener(&emulator, config);
    pullkin
        .add_app("android", &android.credentials, [])
        .unwrap();
    let mut health = pullkin.health("android").unwrap();
    let mut stream = Box::pin(pullkin.listen("android").unwrap());
    emulator
        .send(&android.token, &SendMessage::new().data("n", "1"))
        .unwrap();
    let incoming = next(&mut stream).await;
    assert_eq!(
        incoming.message.data.get("n").map(String::as_str),
        Some("1")
    );
    drop(incoming);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "tried once, in turn");
    assert_eq!(health.borrow().failures, 0, "one attempt, not a failure");

    // The server drops the connection: the next attempt starts with the endpoint that
    // worked.
    emulator.disconnect(Target::Device(android.android_id));
    tokio::time::timeout(WAIT, async {
        while emulator.login_count(android.android_id) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a second login");
    wait_for_state(&mut health, connected).await;
    emulator
        .send(&android.token, &SendMessage::new().data("n", "2"))
        .unwrap();
    let incoming = next(&mut stream).await;
    assert_eq!(
        incoming.message.data.get("n").map(String::as_str),
        Some("2")
    );
    drop(incoming);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the failing endpoints were not tried again"
    );
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_fails_the_attempt_fails_with_the_last_error() {
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let (closing, accepted) = closing_endpoint().await;
    let mut config = listener_config(&emulator);
    config.mcs_endpoints = vec![refused_endpoint().await, closing.clone()];
    let pullkin = listener(&emulator, config);
    pullkin
        .add_app("android", &android.credentials, [])
        .unwrap();
    let mut health = pullkin.health("android").unwrap();
    let _stream = Box::pin(pullkin.listen("android").unwrap());
    tokio::time::timeout(
        WAIT,
        health.wait_for(|h| matches!(h.state, ConnectionState::BackingOff { failures: 2.., .. })),
    )
    .await
    .expect("failures in time")
    .unwrap();
    let state = health.borrow().state.clone();
    let ConnectionState::BackingOff { error, .. } = state else {
        panic!("{state:?}");
    };
    // The closing endpoint's, tried last.
    assert!(error.to_string().contains(&closing), "{error}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "each attempt tried both"
    );
    shutdown(&pullkin, &emulator).await;
}

#[test]
fn an_empty_endpoint_list_is_refused_when_the_listener_is_built() {
    let mut config = ListenerConfig::default();
    config.mcs_endpoints.clear();
    let error = Pullkin::builder().config(config).build().unwrap_err();
    assert!(matches!(error, PullkinError::Config(_)), "{error}");
}

//! The listener against `fcm-emulator` over real TLS: delivery of every payload kind,
//! faults, restarts, poison messages, failing handlers, several apps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    WAIT, backing_off, connected, idle_notification, listener_config, next, shutdown, stopped,
    wait_for_state,
};
use bytes::Bytes;
use fcm_emulator::{Emulator, Fault, Notification, SendMessage, Target};
use fcm_http::RetryPolicy;
use futures_util::{Stream, StreamExt};
use gcm_checkin::SecurityToken;
use mcs_codec::proto::{AppData, DataMessageStanza};
use pullkin::session::AckState;
use pullkin::{
    AppCredentials, ConnectionError, ConnectionState, DirStore, Event, Incoming, ListenerConfig,
    Pullkin, PullkinError, Stanza, Store, StoreFuture,
};
use pullkin_test_support::devices::{Device, android_device, wait_acked, web_device};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use webpush_ece::EncryptOptions;

fn config(emulator: &Emulator) -> ListenerConfig {
    let mut config = listener_config(emulator);
    config.heartbeat_interval = Duration::from_millis(400);
    config.heartbeat_timeout = Duration::from_millis(400);
    config
}

/// A listener with these settings, TLS configuration and store.
fn build(
    config: ListenerConfig,
    tls: Arc<rustls::ClientConfig>,
    store: Option<Arc<dyn Store>>,
) -> Pullkin {
    let mut builder = Pullkin::builder().config(config).tls(tls);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    builder.build().unwrap()
}

fn tls(emulator: &Emulator) -> Arc<rustls::ClientConfig> {
    pullkin_test_support::emulator::tls(emulator)
}

fn listener(emulator: &Emulator, store: Option<Arc<dyn Store>>) -> Pullkin {
    build(config(emulator), tls(emulator), store)
}

/// An emulator with one web device, and a listener (this file's settings, no store) that
/// has the device as app "web"; the listener's events, subscribed before the app was added.
async fn web_app() -> (Emulator, Device, Pullkin, broadcast::Receiver<Event>) {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    let pullkin = listener(&emulator, None);
    let events = pullkin.events();
    pullkin.add_app("web", &web.credentials, []).unwrap();
    (emulator, web, pullkin, events)
}

/// [`web_app`], and the app's messages.
async fn listening_web_app() -> (
    Emulator,
    Device,
    Pullkin,
    broadcast::Receiver<Event>,
    Pin<Box<impl Stream<Item = Incoming>>>,
) {
    let (emulator, web, pullkin, events) = web_app().await;
    let stream = Box::pin(pullkin.listen("web").unwrap());
    (emulator, web, pullkin, events, stream)
}

/// The events sent so far, in order.
fn events_so_far(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// What `pick` takes from the events sent so far, in order.
fn picked<T>(
    events: &mut broadcast::Receiver<Event>,
    pick: impl FnMut(Event) -> Option<T>,
) -> Vec<T> {
    events_so_far(events).into_iter().filter_map(pick).collect()
}

/// What `pick` takes from the last event sent so far that it takes anything from.
fn last_picked<T>(
    events: &mut broadcast::Receiver<Event>,
    pick: impl FnMut(Event) -> Option<T>,
) -> Option<T> {
    picked(events, pick).pop()
}

/// Runs every app of `pullkin` on a task of its own.
fn spawn_run_all(pullkin: &Arc<Pullkin>) -> JoinHandle<Result<(), PullkinError>> {
    let pullkin = Arc::clone(pullkin);
    tokio::spawn(async move { pullkin.run_all().await })
}

/// Shuts the listener down, checks that `run_all` then ends in time and well, and shuts
/// the emulator down.
async fn shutdown_running(
    pullkin: &Pullkin,
    runner: JoinHandle<Result<(), PullkinError>>,
    emulator: &Emulator,
) {
    pullkin.shutdown().await;
    tokio::time::timeout(WAIT, runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    emulator.shutdown().await;
}

/// Whether the stored state of `app` names no unconfirmed id within [`WAIT`].
async fn nothing_unconfirmed_within(store: &dyn Store, app: &str) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if store
            .load_ack_state(app)
            .await
            .unwrap()
            .unconfirmed
            .is_empty()
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(n: usize) -> SendMessage {
    SendMessage::new().data("n", n.to_string())
}

/// The `n` values of `range`, as [`text`] sends them.
fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| n.to_string()).collect()
}

/// `n` values in numeric order.
fn sorted(mut ns: Vec<String>) -> Vec<String> {
    ns.sort_by_key(|s| s.parse::<u32>().unwrap());
    ns
}

/// Collects `count` messages' `n` values.
async fn collect_n(
    stream: &mut (impl futures_util::Stream<Item = Incoming> + Unpin),
    count: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..count {
        let incoming = next(stream).await;
        out.push(incoming.message.data.get("n").cloned().unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_aesgcm_aes128gcm_and_plain_messages() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    let android = android_device(&emulator);
    let pullkin = listener(&emulator, None);
    pullkin.add_app("web", &web.credentials, []).unwrap();
    pullkin
        .add_app("android", &android.credentials, [])
        .unwrap();
    let mut web_stream = Box::pin(pullkin.listen("web").unwrap());
    let mut android_stream = Box::pin(pullkin.listen("android").unwrap());

    // aesgcm, through the FCM send API.
    emulator
        .send(
            &web.token,
            &SendMessage::new()
                .data("kind", "aesgcm")
                .notification(Notification::new("Hello", "World")),
        )
        .unwrap();
    let incoming = next(&mut web_stream).await;
    assert_eq!(incoming.app, "web");
    let message = &incoming.message;
    assert_eq!(message.encoding, Some(webpush_ece::ContentEncoding::AesGcm));
    assert_eq!(message.data.get("kind").map(String::as_str), Some("aesgcm"));
    let notification = message.notification.as_ref().unwrap();
    assert_eq!(notification.title.as_deref(), Some("Hello"));
    assert_eq!(notification.body.as_deref(), Some("World"));
    assert!(message.persistent_id.is_some());
    assert!(message.fcm_message_id.is_some());

    // aes128gcm, as a standard Web Push sender would post it.
    let body = webpush_ece::aes128gcm::encrypt(
        &web.keys.subscription_keys(),
        br#"{"hello":"web push"}"#,
        &EncryptOptions::new(),
    )
    .unwrap();
    emulator.send_webpush(&web.token, body).unwrap();
    drop(incoming);
    let incoming = next(&mut web_stream).await;
    assert_eq!(
        incoming.message.encoding,
        Some(webpush_ece::ContentEncoding::Aes128Gcm)
    );
    assert_eq!(incoming.message.raw()["hello"], "web push");
    assert_eq!(&incoming.message.payload[..], br#"{"hello":"web push"}"#);

    // Plain, to the Android persona.
    emulator
        .send(&android.token, &SendMessage::new().data("kind", "plain"))
        .unwrap();
    drop(incoming);
    let incoming = next(&mut android_stream).await;
    assert_eq!(incoming.app, "android");
    assert_eq!(incoming.message.encoding, None);
    assert_eq!(
        incoming.message.data.get("kind").map(String::as_str),
        Some("plain")
    );

    // Still held: not acknowledged yet.
    assert_eq!(emulator.unacked_ids(android.android_id).len(), 1);
    // Done with them: acknowledged.
    drop(incoming);
    wait_acked(&emulator, &web, WAIT).await;
    wait_acked(&emulator, &android, WAIT).await;
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_what_their_filters_match_and_failures_do_not_stop_anything() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    let pullkin = Arc::new(listener(&emulator, None));
    let high: Arc<Mutex<Vec<String>>> = Arc::default();
    let all: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen_async: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let high = Arc::clone(&high);
        pullkin.on_notification(
            |m, _| m.priority.as_deref() == Some("high"),
            move |m, _| {
                high.lock().unwrap().push(m.data["n"].clone());
            },
        );
    }
    {
        let all = Arc::clone(&all);
        pullkin.on_notification(
            |_, _| true,
            move |m, _| -> Result<(), String> {
                let n = m.data["n"].clone();
                all.lock().unwrap().push(n.clone());
                match n.as_str() {
                    "1" => panic!("a handler bug"),
                    "2" => Err("a handler error".into()),
                    _ => Ok(()),
                }
            },
        );
    }
    {
        let seen = Arc::clone(&seen_async);
        pullkin.on_notification_async(
            |_, _| true,
            move |m, _| {
                let seen = Arc::clone(&seen);
                async move {
                    tokio::task::yield_now().await;
                    seen.lock().unwrap().push(m.data["n"].clone());
                }
            },
        );
    }
    let mut events = pullkin.events();
    pullkin.add_app("web", &web.credentials, []).unwrap();
    let runner = spawn_run_all(&pullkin);
    for n in 0..5 {
        let mut message = text(n);
        if n % 2 == 0 {
            message = message.priority("high");
        }
        emulator.send(&web.token, &message).unwrap();
    }
    assert!(
        emulator
            .wait_until(WAIT, |_| seen_async.lock().unwrap().len() == 5)
            .await
    );
    assert_eq!(*high.lock().unwrap(), vec!["0", "2", "4"]);
    assert_eq!(*all.lock().unwrap(), vec!["0", "1", "2", "3", "4"]);
    let failures = picked(&mut events, |event| match event {
        Event::HandlerFailed { error, .. } => Some(error),
        _ => None,
    });
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].is::<pullkin::Panicked>(), "{}", failures[0]);
    assert!(failures[0].to_string().contains("a handler bug"));
    assert!(!failures[1].is::<pullkin::Panicked>(), "{}", failures[1]);
    assert!(failures[1].to_string().contains("a handler error"));
    wait_acked(&emulator, &web, WAIT).await;
    shutdown_running(&pullkin, runner, &emulator).await;
}

/// Sends `count` messages with a fault armed, checks each arrives exactly once.
async fn survive(fault: Fault, expect_reconnect: bool) {
    let (emulator, web, pullkin, _, mut stream) = listening_web_app().await;
    for n in 0..5 {
        emulator.send(&web.token, &text(n)).unwrap();
    }
    let mut got = collect_n(&mut stream, 5).await;
    let logins_before = emulator.login_count(web.android_id);
    emulator
        .inject_fault(Target::Device(web.android_id), fault.clone())
        .unwrap();
    for n in 5..20 {
        emulator.send(&web.token, &text(n)).unwrap();
    }
    if matches!(fault, Fault::Stall) {
        // Stalled: the heartbeat deadline must notice; then the stall is lifted.
        assert!(
            emulator
                .wait_until(WAIT, |e| e.login_count(web.android_id) > logins_before
                    || !e.is_connected(web.android_id))
                .await
        );
        emulator.clear_faults(Target::Device(web.android_id));
    }
    got.extend(collect_n(&mut stream, 15).await);
    assert_eq!(
        sorted(got),
        numbers(0..20),
        "every message exactly once ({fault:?})"
    );
    // Nothing more comes: no duplicate after the reconnect.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "no duplicate: {extra:?}");
    if expect_reconnect {
        assert!(
            emulator.login_count(web.android_id) > logins_before,
            "reconnected after {fault:?}"
        );
    }
    wait_acked(&emulator, &web, WAIT).await;
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_cut_in_the_middle_of_a_frame() {
    survive(Fault::DropMidFrame, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_dropped_connection() {
    survive(Fault::DropAfterFrames(3), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_stalled_connection() {
    survive(Fault::Stall, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_close() {
    survive(Fault::SendClose, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_stream_error() {
    survive(
        Fault::SendStreamError {
            error_type: "conflict".into(),
            text: None,
        },
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_garbage() {
    survive(
        Fault::SendGarbage(Bytes::from_static(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ])),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignores_unknown_tags() {
    survive(
        Fault::SendUnknownTag {
            tag: 15,
            body: Bytes::from_static(b"\x0a\x01x"),
        },
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_is_noticed_within_the_heartbeat_deadline() {
    let (emulator, web, pullkin, _) = web_app().await;
    let mut health = pullkin.health("web").unwrap();
    wait_for_state(&mut health, connected).await;
    emulator
        .inject_fault(Target::Device(web.android_id), Fault::Stall)
        .unwrap();
    let started = tokio::time::Instant::now();
    wait_for_state(&mut health, backing_off).await;
    let noticed = started.elapsed();
    // Interval 400 ms of silence, then 400 ms for the answer to the ping.
    assert!(
        noticed <= Duration::from_millis(1500),
        "noticed after {noticed:?}"
    );
    let error = match &health.borrow().state {
        ConnectionState::BackingOff { error, .. } => error.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(error, ConnectionError::HeartbeatTimeout),
        "{error}"
    );
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_finds_a_dead_connection_at_once_and_cuts_the_backoff_short() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    // A minute between heartbeats and half a minute or more between reconnections: without
    // probes, the stall below would go unnoticed for a minute, and the reconnection would
    // wait 30 s; each wait below gives up after 10 s.
    let mut config = config(&emulator);
    config.heartbeat_interval = Duration::from_secs(60);
    config.heartbeat_timeout = Duration::from_secs(2);
    config.reconnect = RetryPolicy::default()
        .with_initial_delay(Duration::from_secs(30))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter(0.0);
    config.resume_check = None;
    let pullkin = build(config, tls(&emulator), None);
    pullkin.add_app("web", &web.credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());
    let mut health = pullkin.health("web").unwrap();
    wait_for_state(&mut health, connected).await;
    // The network went away under the connection: nothing arrives any more.
    emulator
        .inject_fault(Target::Device(web.android_id), Fault::Stall)
        .unwrap();
    pullkin.probe();
    wait_for_state(&mut health, backing_off).await;
    let until = match &health.borrow().state {
        ConnectionState::BackingOff { error, until, .. } => {
            assert!(
                matches!(error, ConnectionError::HeartbeatTimeout),
                "{error}"
            );
            *until
        }
        other => panic!("{other:?}"),
    };
    let backoff = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(backoff > Duration::from_secs(20), "{backoff:?}");
    // The network is back: a probe reconnects now rather than after the backoff.
    emulator.clear_faults(Target::Device(web.android_id));
    pullkin.probe();
    wait_for_state(&mut health, connected).await;
    emulator.send(&web.token, &text(1)).unwrap();
    assert_eq!(collect_n(&mut stream, 1).await, vec!["1"]);
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_the_store_neither_loses_nor_duplicates() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).unwrap());
    let mut seen: Vec<String> = Vec::new();

    let first = listener(&emulator, Some(Arc::clone(&store)));
    first.add_app("web", &web.credentials, []).unwrap();
    let mut stream = Box::pin(first.listen("web").unwrap());
    for n in 0..7 {
        emulator.send(&web.token, &text(n)).unwrap();
    }
    seen.extend(collect_n(&mut stream, 7).await);
    // Stop without waiting for the server's confirmation: the ids must be in the store.
    first.shutdown().await;
    drop(stream);
    let stored = store.load_ack_state("web").await.unwrap();
    assert!(
        stored.unconfirmed.len() + stored.recent.len() >= 7,
        "taken ids are stored: {stored:?}"
    );
    for n in 7..12 {
        emulator.send(&web.token, &text(n)).unwrap();
    }

    let second = listener(&emulator, Some(Arc::clone(&store)));
    second.add_app("web", &web.credentials, []).unwrap();
    let mut stream = Box::pin(second.listen("web").unwrap());
    seen.extend(collect_n(&mut stream, 5).await);
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "no duplicate after the restart: {extra:?}");
    assert_eq!(sorted(seen), numbers(0..12));
    wait_acked(&emulator, &web, WAIT).await;
    // Confirmed ids leave the unconfirmed list: the stored state stays small.
    assert!(
        nothing_unconfirmed_within(&*store, "web").await || {
            // The confirmation rides on the next server frame: ask for one.
            emulator.ping(Target::Device(web.android_id));
            nothing_unconfirmed_within(&*store, "web").await
        }
    );
    shutdown(&second, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_reported_acknowledged_and_never_redelivered() {
    let (emulator, web, pullkin, mut events, mut stream) = listening_web_app().await;
    let poison = emulator
        .send_raw(
            web.android_id,
            DataMessageStanza {
                from: "evil".into(),
                category: "org.chromium.linux".into(),
                app_data: vec![
                    AppData {
                        key: "crypto-key".into(),
                        value: "dh=BNoRDbb84JGm8g5Z5CFxurSqsXWJ11ItfXEWYVLE85Y7CYkDjXsIEc4aqxYaQ1G8BqkXCJ6DPpDrWtdWj_mugHU".into(),
                    },
                    AppData {
                        key: "encryption".into(),
                        value: "salt=lngarbyKfMoi9Z75xYXmkg".into(),
                    },
                ],
                raw_data: Some(Bytes::from_static(b"not a ciphertext at all")),
                ..Default::default()
            },
        )
        .unwrap();
    emulator.send(&web.token, &text(1)).unwrap();
    assert_eq!(collect_n(&mut stream, 1).await, vec!["1"]);
    let reported = last_picked(&mut events, |event| match event {
        Event::Undecryptable { persistent_id, .. } => Some(persistent_id),
        _ => None,
    })
    .flatten();
    assert_eq!(reported.as_deref(), Some(poison.as_str()));
    wait_acked(&emulator, &web, WAIT).await;
    // A reconnect does not bring it back.
    emulator.disconnect(Target::Device(web.android_id));
    emulator.send(&web.token, &text(2)).unwrap();
    assert_eq!(collect_n(&mut stream, 1).await, vec!["2"]);
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(extra.is_err());
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_messages_notice_is_an_event() {
    let (emulator, web, pullkin, mut events, mut stream) = listening_web_app().await;
    emulator.send_deleted_messages(&web.token, 42).unwrap();
    emulator.send(&web.token, &text(1)).unwrap();
    assert_eq!(collect_n(&mut stream, 1).await, vec!["1"]);
    let count = last_picked(&mut events, |event| match event {
        Event::DeletedMessages { count, .. } => Some(count),
        _ => None,
    })
    .flatten();
    assert_eq!(count, Some(42));
    wait_acked(&emulator, &web, WAIT).await;
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_notification_is_answered_acknowledged_and_not_delivered() {
    let (emulator, web, pullkin, _, mut stream) = listening_web_app().await;
    // The MCS server's own notice (docs/protocol.md §3), with a persistent id as any queued
    // stanza gets; then an ordinary message behind it.
    let notice_id = emulator
        .send_raw(web.android_id, idle_notification())
        .unwrap();
    emulator.send(&web.token, &text(1)).unwrap();
    // The application gets only the ordinary message.
    assert_eq!(collect_n(&mut stream, 1).await, vec!["1"]);
    // The client answered the notice the way Chromium does.
    assert!(
        emulator
            .wait_until(WAIT, |e| !e
                .device(web.android_id)
                .unwrap()
                .upstream
                .is_empty())
            .await,
        "an answer to the idle notification"
    );
    let answer = emulator.device(web.android_id).unwrap().upstream[0].clone();
    assert_eq!(answer.from, "gcm@android.com");
    assert_eq!(answer.category, "com.google.android.gsf.gtalkservice");
    assert_eq!(answer.ttl, Some(0));
    assert_eq!(
        answer.app_data,
        vec![AppData {
            key: "IdleNotification".into(),
            value: "false".into(),
        }]
    );
    // And the notice's id is acknowledged like any other, so it is not sent again.
    wait_acked(&emulator, &web, WAIT).await;
    let device = emulator.device(web.android_id).unwrap();
    assert!(device.acked.contains(&notice_id), "{:?}", device.acked);
    emulator.disconnect(Target::Device(web.android_id));
    emulator.send(&web.token, &text(2)).unwrap();
    assert_eq!(collect_n(&mut stream, 1).await, vec!["2"]);
    assert_eq!(emulator.device(web.android_id).unwrap().upstream.len(), 1);
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_taken_apart_is_acknowledged_when_its_ack_is_dropped() {
    let (emulator, web, pullkin, _, mut stream) = listening_web_app().await;
    emulator.send(&web.token, &text(1)).unwrap();
    let incoming = next(&mut stream).await;
    let (app, message, stanza, ack) = incoming.into_parts();
    assert_eq!(app, "web");
    assert_eq!(message.data["n"], "1");
    // The values are gone; the acknowledgement is held: the server has no ack yet (the
    // session acknowledges within its ack delay once the id is taken).
    drop((message, stanza));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !emulator.unacked_ids(web.android_id).is_empty(),
        "not acknowledged while the Ack is held"
    );
    drop(ack);
    wait_acked(&emulator, &web, WAIT).await;
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_apps_one_stopped_the_others_keep_receiving() {
    let emulator = Emulator::start().await.unwrap();
    let devices: Vec<Device> = (0..3).map(|_| web_device(&emulator)).collect();
    let pullkin = Arc::new(listener(&emulator, None));
    let received: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    {
        let received = Arc::clone(&received);
        pullkin.on_notification(
            |_, _| true,
            move |m, d: &Stanza| {
                let _ = d;
                received
                    .lock()
                    .unwrap()
                    .entry(m.data["app"].clone())
                    .or_default()
                    .push(m.data["n"].clone());
            },
        );
    }
    for (i, device) in devices.iter().enumerate() {
        pullkin
            .add_app(&format!("app{i}"), &device.credentials, [])
            .unwrap();
    }
    let runner = spawn_run_all(&pullkin);
    let send = |i: usize, n: usize| {
        emulator
            .send(
                &devices[i].token,
                &SendMessage::new()
                    .data("app", format!("app{i}"))
                    .data("n", n.to_string()),
            )
            .unwrap();
    };
    for i in 0..3 {
        send(i, 0);
    }
    assert!(
        emulator
            .wait_until(WAIT, |_| received
                .lock()
                .unwrap()
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == 3)
            .await
    );
    pullkin.stop("app1").await;
    assert!(
        !emulator.is_connected(devices[1].android_id) || {
            emulator
                .wait_until(WAIT, |e| !e.is_connected(devices[1].android_id))
                .await
        }
    );
    for i in 0..3 {
        send(i, 1);
    }
    assert!(
        emulator
            .wait_until(WAIT, |_| {
                let r = received.lock().unwrap();
                r.get("app0").map(Vec::len) == Some(2) && r.get("app2").map(Vec::len) == Some(2)
            })
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snapshot: BTreeMap<String, Vec<String>> =
        received.lock().unwrap().clone().into_iter().collect();
    assert_eq!(
        snapshot["app1"],
        vec!["0"],
        "a stopped app receives nothing"
    );
    assert_eq!(
        emulator.pending_ids(devices[1].android_id).len(),
        1,
        "kept for later"
    );
    assert_eq!(pullkin.apps().len(), 2);
    let ids: HashSet<String> = snapshot.keys().cloned().collect();
    assert_eq!(ids.len(), 3);
    shutdown_running(&pullkin, runner, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_backs_off_and_retries() {
    let emulator = Emulator::start().await.unwrap();
    let mut web = web_device(&emulator);
    web.credentials.gcm.security_token = SecurityToken::new(1);
    let mut config = config(&emulator);
    config.max_failures = Some(3);
    let pullkin = build(config, tls(&emulator), None);
    let mut events = pullkin.events();
    pullkin.add_app("web", &web.credentials, []).unwrap();
    let mut health = pullkin.health("web").unwrap();
    wait_for_state(&mut health, stopped).await;
    assert_eq!(health.borrow().failures, 3);
    assert!(emulator.failed_logins() >= 3);
    assert!(
        events_so_far(&mut events)
            .iter()
            .any(|event| matches!(event, Event::Failed { .. }))
    );
    shutdown(&pullkin, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_refused() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    // Trust only the public roots: the emulator's own CA is unknown.
    let tls = fcm_http::Client::builder().build_tls_config().unwrap();
    let mut config = config(&emulator);
    config.max_failures = Some(1);
    let pullkin = build(config, tls, None);
    pullkin.add_app("web", &web.credentials, []).unwrap();
    let mut health = pullkin.health("web").unwrap();
    wait_for_state(&mut health, stopped).await;
    let state = health.borrow().state.clone();
    let ConnectionState::Stopped {
        error: Some(ConnectionError::GaveUp { last, .. }),
    } = state
    else {
        panic!("{state:?}");
    };
    assert!(matches!(*last, ConnectionError::Tls { .. }), "{last}");
    assert_eq!(emulator.login_count(web.android_id), 0);
    shutdown(&pullkin, &emulator).await;
}

/// A store that records when each acknowledgement-state write happened.
#[derive(Debug, Default)]
struct TimedStore {
    inner: pullkin::MemoryStore,
    writes: Mutex<Vec<std::time::Instant>>,
}

impl Store for TimedStore {
    fn load_ack_state<'a>(&'a self, app: &'a str) -> StoreFuture<'a, AckState> {
        self.inner.load_ack_state(app)
    }
    fn save_ack_state<'a>(&'a self, app: &'a str, state: AckState) -> StoreFuture<'a, ()> {
        self.writes.lock().unwrap().push(std::time::Instant::now());
        self.inner.save_ack_state(app, state)
    }
    fn load_credentials<'a>(&'a self, app: &'a str) -> StoreFuture<'a, Option<AppCredentials>> {
        self.inner.load_credentials(app)
    }
    fn save_credentials<'a>(
        &'a self,
        app: &'a str,
        credentials: &'a AppCredentials,
    ) -> StoreFuture<'a, ()> {
        self.inner.save_credentials(app, credentials)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_writes_are_spaced_by_the_store_interval_and_every_message_is_acknowledged() {
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let store = Arc::new(TimedStore::default());
    let mut config = config(&emulator);
    config.store_interval = Duration::from_millis(200);
    let pullkin = build(
        config,
        tls(&emulator),
        Some(Arc::clone(&store) as Arc<dyn Store>),
    );
    pullkin
        .add_app("android", &android.credentials, [])
        .unwrap();
    let mut stream = Box::pin(pullkin.listen("android").unwrap());
    let mut seen = HashSet::new();
    for round in 0..3 {
        for n in 0..100 {
            emulator
                .send(&android.token, &text(round * 100 + n))
                .unwrap();
        }
        seen.extend(collect_n(&mut stream, 100).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), 300, "every message once");
    wait_acked(&emulator, &android, WAIT).await;
    let writes = store.writes.lock().unwrap().clone();
    pullkin.shutdown().await;
    assert!(
        writes.len() >= 2,
        "the state was stored: {} writes",
        writes.len()
    );
    assert!(
        writes.len() < 60,
        "300 messages took {} writes: they are grouped",
        writes.len()
    );
    for pair in writes.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(100),
            "two writes {gap:?} apart while connected"
        );
    }
    emulator.shutdown().await;
}

/// A sink that records what it took and can be made to wait, fail or reject.
#[derive(Debug, Default)]
struct TestSink {
    taken: Mutex<Vec<String>>,
    /// Calls before this many fail (a destination that is down).
    fail_first: usize,
    calls: std::sync::atomic::AtomicUsize,
    /// `data.n` values rejected for good.
    reject: HashSet<String>,
    /// While set, `deliver` waits for a permit.
    gate: Option<tokio::sync::Semaphore>,
}

impl pullkin::Sink for TestSink {
    fn name(&self) -> &str {
        "test"
    }

    fn deliver<'a>(
        &'a self,
        batch: &'a [pullkin::SinkMessage],
    ) -> pullkin::SinkFuture<'a, Vec<pullkin::Outcome>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if call < self.fail_first {
                return Err(pullkin::SinkError::unavailable("test", "down"));
            }
            let mut outcomes = Vec::new();
            for message in batch {
                let n = message.line["data"]["n"].as_str().unwrap().to_owned();
                if self.reject.contains(&n) {
                    outcomes.push(pullkin::Outcome::Rejected(format!("no {n}")));
                } else {
                    assert!(message.key.as_ref().unwrap().starts_with("app:"));
                    assert_eq!(message.app, "app");
                    assert!(message.persistent_id.is_some());
                    self.taken.lock().unwrap().push(n);
                    outcomes.push(pullkin::Outcome::Taken);
                }
            }
            Ok(outcomes)
        })
    }
}

/// Forwards an Android app's messages to `sink` in a task.
async fn forwarding(
    sink: Arc<TestSink>,
    config: pullkin::ForwardConfig,
) -> (
    Emulator,
    Device,
    Arc<Pullkin>,
    broadcast::Receiver<Event>,
    JoinHandle<()>,
) {
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let pullkin = Arc::new(listener(&emulator, None));
    let events = pullkin.events();
    pullkin.add_app("app", &android.credentials, []).unwrap();
    let task = {
        let pullkin = Arc::clone(&pullkin);
        tokio::spawn(async move { pullkin.forward(&["app"], sink, config).await.unwrap() })
    };
    let mut health = pullkin.health("app").unwrap();
    wait_for_state(&mut health, connected).await;
    (emulator, android, pullkin, events, task)
}

/// Waits until `sink` took `count` messages.
async fn taken(sink: &TestSink, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let taken = sink.taken.lock().unwrap().clone();
        if taken.len() >= count || tokio::time::Instant::now() >= deadline {
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_acknowledges_only_what_the_sink_took() {
    let sink = Arc::new(TestSink {
        gate: Some(tokio::sync::Semaphore::new(0)),
        ..TestSink::default()
    });
    let (emulator, android, pullkin, _, task) =
        forwarding(Arc::clone(&sink), pullkin::ForwardConfig::default()).await;
    for n in 0..5 {
        emulator.send(&android.token, &text(n)).unwrap();
    }
    // The sink holds the first batch: nothing may be acknowledged meanwhile.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sink.calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink was called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = emulator.unacked_ids(android.android_id).len()
        + emulator.pending_ids(android.android_id).len();
    assert_eq!(waiting, 5, "nothing acknowledged before the sink confirmed");
    sink.gate.as_ref().unwrap().add_permits(100);
    assert_eq!(sorted(taken(&sink, 5).await), numbers(0..5));
    wait_acked(&emulator, &android, WAIT).await;
    pullkin.shutdown().await;
    task.await.unwrap();
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_retried_with_backoff_and_loses_nothing() {
    let sink = Arc::new(TestSink {
        fail_first: 3,
        ..TestSink::default()
    });
    let mut config = pullkin::ForwardConfig::default();
    config.retry = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50));
    let (emulator, android, pullkin, mut events, task) =
        forwarding(Arc::clone(&sink), config).await;
    for n in 0..20 {
        emulator.send(&android.token, &text(n)).unwrap();
    }
    let got = taken(&sink, 20).await;
    assert_eq!(
        sorted(got.clone()),
        numbers(0..20),
        "each message once: {got:?}"
    );
    wait_acked(&emulator, &android, WAIT).await;
    let failed = picked(&mut events, |e| match e {
        Event::SinkFailed { failures, sink, .. } => Some((sink, failures)),
        _ => None,
    });
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(failed[2], ("test".to_owned(), 3));
    pullkin.shutdown().await;
    task.await.unwrap();
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_parked_reported_and_the_rest_go_on() {
    let sink = Arc::new(TestSink {
        reject: HashSet::from(["1".to_owned()]),
        ..TestSink::default()
    });
    let park = Arc::new(TestSink::default());
    let mut config = pullkin::ForwardConfig::default();
    config.park = Some(Arc::clone(&park) as Arc<dyn pullkin::Sink>);
    let (emulator, android, pullkin, mut events, task) =
        forwarding(Arc::clone(&sink), config).await;
    for n in 0..4 {
        emulator.send(&android.token, &text(n)).unwrap();
    }
    assert_eq!(sorted(taken(&sink, 3).await), ["0", "2", "3"]);
    assert_eq!(taken(&park, 1).await, ["1"], "parked");
    wait_acked(&emulator, &android, WAIT).await;
    let rejected = picked(&mut events, |e| match e {
        Event::SinkRejected { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(rejected, ["no 1"]);
    pullkin.shutdown().await;
    task.await.unwrap();
    emulator.shutdown().await;
}

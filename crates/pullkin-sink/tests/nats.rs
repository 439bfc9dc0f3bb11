//! Tests of the nats sink, against a real `nats-server` with JetStream (each test starts
//! its own on a free port, from the installed binary) and `fcm-emulator`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer::pull, stream};
use fcm_emulator::{Emulator, SendMessage};
use futures_util::StreamExt;
use pullkin::{Event, ForwardConfig, ListenerConfig, Outcome, Pullkin, Sink, SinkMessage};
use pullkin_sink::{Error, FileSink, NatsConfig, NatsSink};
use pullkin_test_support::devices::{Device, android_device, web_device};
use pullkin_test_support::nats::{NatsServer, free_port};
use serde_json::Value;
use tokio::task::JoinHandle;
use webpush_ece::EncryptOptions;

/// How long anything may take before a test fails.
const WAIT: Duration = Duration::from_secs(30);
/// The stream the sinks of these tests create.
const STREAM: &str = "PULLKIN";

/// A listener of the emulator with these apps.
fn listener(emulator: &Emulator, apps: &[(&str, &Device)]) -> Arc<Pullkin> {
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![pullkin_test_support::emulator::mcs_addr(emulator)];
    config.reconnect = fcm_http::RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100));
    let pullkin = Pullkin::builder()
        .config(config)
        .tls(pullkin_test_support::emulator::tls(emulator))
        .build()
        .unwrap();
    for (app, device) in apps {
        pullkin.add_app(app, &device.credentials, []).unwrap();
    }
    Arc::new(pullkin)
}

/// `pullkin.forward(apps, sink, config)` on a task of its own.
fn spawn_forward(
    pullkin: &Arc<Pullkin>,
    apps: &[&str],
    sink: Arc<dyn Sink>,
    config: ForwardConfig,
) -> JoinHandle<()> {
    let pullkin = Arc::clone(pullkin);
    let apps: Vec<String> = apps.iter().map(|&app| app.to_owned()).collect();
    tokio::spawn(async move {
        let apps: Vec<&str> = apps.iter().map(String::as_str).collect();
        pullkin.forward(&apps, sink, config).await.unwrap();
    })
}

/// Stops the listener (which ends the forwarding) and the emulator.
async fn stop(pullkin: &Pullkin, forward: JoinHandle<()>, emulator: &Emulator) {
    pullkin.shutdown().await;
    tokio::time::timeout(WAIT, forward).await.unwrap().unwrap();
    emulator.shutdown().await;
}

/// A sink of `server` creating [`STREAM`] (subjects `pullkin.>`).
async fn sink(server: &NatsServer, mut config: NatsConfig) -> NatsSink {
    config = config.with_stream(STREAM);
    NatsSink::connect(&server.url("pullkin.{app}"), config)
        .await
        .unwrap()
}

/// How many messages the stream holds; `None` when the server does not answer.
async fn count(client: &async_nats::Client, name: &str) -> Option<u64> {
    let mut stream = jetstream::new(client.clone()).get_stream(name).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// Waits until the stream holds at least `n` messages; how many it holds.
async fn wait_for_count(client: &async_nats::Client, name: &str, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let held = count(client, name).await.unwrap_or(0);
        if held >= n || tokio::time::Instant::now() >= deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message as the stream holds it.
#[derive(Debug)]
struct Stored {
    subject: String,
    msg_id: Option<String>,
    json: Value,
    /// When the server stored it.
    published: SystemTime,
}

/// Every message of the stream, read with a pull consumer from the start.
async fn stored(client: &async_nats::Client, name: &str) -> Vec<Stored> {
    let held = count(client, name).await.unwrap();
    let mut stream = jetstream::new(client.clone())
        .get_stream(name)
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, held);
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < usize::try_from(held).unwrap() {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let info = message.info().unwrap();
        out.push(Stored {
            subject: message.subject.to_string(),
            msg_id: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned()),
            json: serde_json::from_slice(&message.payload).unwrap(),
            published: SystemTime::from(info.published),
        });
    }
    out
}

/// Checks that every stored message is there once, under its key, and returns them by
/// persistent id.
fn by_persistent_id(stored: Vec<Stored>) -> HashMap<String, Stored> {
    let mut out = HashMap::new();
    for message in stored {
        let app = message.json["app"].as_str().unwrap().to_owned();
        let id = message.json["persistent_id"].as_str().unwrap().to_owned();
        assert_eq!(message.msg_id, Some(format!("{app}:{id}")));
        assert_eq!(message.subject, format!("pullkin.{app}"));
        let again = out.insert(id.clone(), message);
        assert!(again.is_none(), "{id} is in the stream twice");
    }
    out
}

/// What the emulator recorded as acknowledged by the device, all of it.
fn acked(emulator: &Emulator, device: &Device) -> Vec<String> {
    emulator.device(device.android_id).unwrap().acked
}

/// Waits until the device acknowledged every message sent to it.
async fn wait_all_acked(emulator: &Emulator, device: &Device, sent: usize) {
    let acked_all = emulator
        .wait_until(WAIT, |e| {
            let info = e.device(device.android_id).unwrap();
            info.unacked.is_empty() && info.pending.is_empty() && info.acked.len() >= sent
        })
        .await;
    let info = emulator.device(device.android_id).unwrap();
    assert!(
        acked_all,
        "acked {} of {sent}; unacked {}, pending {}",
        info.acked.len(),
        info.unacked.len(),
        info.pending.len()
    );
}

/// The events sent so far (those a lagging receiver missed left out).
fn drain(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => out.push(event),
            Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return out,
        }
    }
}

/// Records of `n` messages of `app` (data `i` = 0..n), built directly.
fn records(app: &str, n: usize) -> Vec<SinkMessage> {
    (0..n)
        .map(|i| {
            let id = format!("0:direct-{i}");
            let line = serde_json::json!({
                "app": app,
                "persistent_id": id,
                "data": { "i": i.to_string() },
            });
            SinkMessage::new(app, Some(format!("{app}:{id}")), Some(id), line)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_forwards_every_encoding_once_and_acknowledges_all() {
    const N: usize = 500;
    let server = NatsServer::start().await;
    let client = server.client().await;
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let web = web_device(&emulator);
    let pullkin = listener(&emulator, &[("android", &android), ("web", &web)]);
    let sink = sink(&server, NatsConfig::default()).await;
    assert_eq!(
        sink.name(),
        format!("nats://127.0.0.1:{}/pullkin.{{app}}", server.port())
    );

    // A third each: plain (Android), aesgcm (the send API to the web device) and
    // aes128gcm (a Web Push sender's body); all queued before forwarding starts, so
    // that the time to the last one measures the forwarding.
    let mut sent = HashMap::new();
    for i in 0..N {
        let (app, encoding, persistent_id) = match i % 3 {
            0 => {
                let message = SendMessage::new().data("i", i.to_string());
                let sent = emulator.send(&android.token, &message).unwrap();
                ("android", Value::Null, sent.persistent_id)
            }
            1 => {
                let message = SendMessage::new().data("i", i.to_string());
                let sent = emulator.send(&web.token, &message).unwrap();
                assert!(sent.encrypted);
                ("web", "aesgcm".into(), sent.persistent_id)
            }
            _ => {
                let body = webpush_ece::aes128gcm::encrypt(
                    &web.keys.subscription_keys(),
                    format!(r#"{{"i":"{i}"}}"#).as_bytes(),
                    &EncryptOptions::new(),
                )
                .unwrap();
                let sent = emulator.send_webpush(&web.token, body).unwrap();
                ("web", "aes128gcm".into(), sent.persistent_id)
            }
        };
        sent.insert(persistent_id, (i, app, encoding));
    }
    let started = Instant::now();
    let forward = spawn_forward(
        &pullkin,
        &["android", "web"],
        Arc::new(sink),
        ForwardConfig::default(),
    );
    let held = wait_for_count(&client, STREAM, N as u64).await;
    let elapsed = started.elapsed();
    assert_eq!(held, N as u64, "the stream holds {held} of {N}");
    eprintln!(
        "forwarded {N} queued messages to JetStream in {elapsed:?}: {:.0} messages/s",
        N as f64 / elapsed.as_secs_f64()
    );

    let stored = by_persistent_id(stored(&client, STREAM).await);
    assert_eq!(stored.len(), N);
    for (persistent_id, (i, app, encoding)) in &sent {
        let json = &stored
            .get(persistent_id)
            .unwrap_or_else(|| panic!("{persistent_id} is not in the stream"))
            .json;
        assert_eq!(json["app"], *app, "{json}");
        assert_eq!(json["encoding"], *encoding, "{json}");
        if *encoding == "aes128gcm" {
            assert_eq!(json["raw"]["i"], i.to_string(), "{json}");
        } else {
            assert_eq!(json["data"]["i"], i.to_string(), "{json}");
        }
        assert!(json["received_ms"].is_u64(), "{json}");
    }

    let per_device = |app: &str| sent.values().filter(|(_, a, _)| *a == app).count();
    wait_all_acked(&emulator, &android, per_device("android")).await;
    wait_all_acked(&emulator, &web, per_device("web")).await;
    assert!(emulator.unacked_ids(android.android_id).is_empty());
    assert!(emulator.unacked_ids(web.android_id).is_empty());
    assert_eq!(count(&client, STREAM).await, Some(N as u64));
    stop(&pullkin, forward, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_drops_a_redelivered_batch_by_its_message_ids() {
    let server = NatsServer::start().await;
    let client = server.client().await;
    let batch = records("android", 5);

    let first = sink(&server, NatsConfig::default()).await;
    assert_eq!(
        first.deliver(&batch).await.unwrap(),
        vec![Outcome::Taken; 5]
    );
    assert_eq!(
        first.deliver(&batch).await.unwrap(),
        vec![Outcome::Taken; 5]
    );
    // Another connection, as after a restart: the server drops them, not the client.
    let second = sink(&server, NatsConfig::default()).await;
    assert_eq!(
        second.deliver(&batch).await.unwrap(),
        vec![Outcome::Taken; 5]
    );

    assert_eq!(count(&client, STREAM).await, Some(5));
    let stored = by_persistent_id(stored(&client, STREAM).await);
    for message in &batch {
        let id = message.persistent_id.as_ref().unwrap();
        assert_eq!(stored[id].json["data"], message.line["data"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_server_restarted_mid_run_loses_nothing_and_nothing_is_acked_early() {
    const N: usize = 500;
    let mut server = NatsServer::start().await;
    let client = server.client().await;
    let emulator = Arc::new(Emulator::start().await.unwrap());
    let android = android_device(&emulator);
    let pullkin = listener(&emulator, &[("android", &android)]);
    let mut events = pullkin.events();
    let mut config = NatsConfig::default();
    config.ack_timeout = Duration::from_millis(500);
    let sink = sink(&server, config).await;
    let forward = spawn_forward(
        &pullkin,
        &["android"],
        Arc::new(sink),
        ForwardConfig::default(),
    );

    // What the emulator saw acknowledged, sampled every 10 ms with the time of the
    // sample: each such id must have been in the stream by then.
    let samples = Arc::new(Mutex::new(Vec::<(SystemTime, Vec<String>)>::new()));
    let sampling = {
        let (emulator, samples, id) = (
            Arc::clone(&emulator),
            Arc::clone(&samples),
            android.android_id,
        );
        tokio::spawn(async move {
            loop {
                let acked = emulator.device(id).unwrap().acked;
                samples.lock().unwrap().push((SystemTime::now(), acked));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // N messages over about 3 s; the server is down from about 1 s to 2 s.
    let sending = {
        let (emulator, token) = (Arc::clone(&emulator), android.token.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let message = SendMessage::new().data("i", i.to_string());
                emulator.send(&token, &message).unwrap();
                tokio::time::sleep(Duration::from_millis(6)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = count(&client, STREAM).await.unwrap();
    server.kill().await;
    let killed = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_while_down = acked(&emulator, &android).len();
    // Nothing can be stored before the new process starts.
    let restarted = SystemTime::now();
    server.restart().await;
    sending.await.unwrap();

    let held = wait_for_count(&client, STREAM, N as u64).await;
    assert_eq!(held, N as u64, "the stream holds {held} of {N}");
    wait_all_acked(&emulator, &android, N).await;
    sampling.abort();
    let stored = by_persistent_id(stored(&client, STREAM).await);
    assert_eq!(stored.len(), N);
    let in_stream_at_kill = stored.values().filter(|m| m.published < killed).count();
    eprintln!(
        "stream: {before} before the kill, {in_stream_at_kill} at it; \
         {acked_while_down} acknowledged at the end of the downtime"
    );
    assert!(
        before > 0 && in_stream_at_kill < N,
        "the restart was not mid-run ({in_stream_at_kill} of {N} stored before it)"
    );
    assert!(
        stored
            .values()
            .all(|m| m.published < killed || m.published > restarted),
        "stored while the server was down?"
    );
    assert!(acked_while_down <= in_stream_at_kill);
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    for (at, acked) in &samples {
        for id in acked {
            let stored_at = stored
                .get(id)
                .unwrap_or_else(|| panic!("{id} was acknowledged and is not in the stream"))
                .published;
            assert!(
                stored_at <= *at,
                "{id} was acknowledged at {at:?}, before the stream had it ({stored_at:?})"
            );
        }
    }
    let failures = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e, Event::SinkFailed { .. }))
        .count();
    assert!(
        failures > 0,
        "the sink never failed while the server was down"
    );
    stop(&pullkin, forward, &emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_parks_messages_too_large_and_goes_on() {
    let server = NatsServer::start_with("max_payload: 4096\n").await;
    let client = server.client().await;
    // A stream taking messages of at most 2,500 bytes; the connection at most 4,096.
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["pullkin.>".to_owned()],
            max_message_size: 2_500,
            ..Default::default()
        })
        .await
        .unwrap();
    let emulator = Emulator::start().await.unwrap();
    let android = android_device(&emulator);
    let pullkin = listener(&emulator, &[("android", &android)]);
    let mut events = pullkin.events();
    let dir = tempfile::tempdir().unwrap();
    let park = FileSink::new(dir.path().join("parked.jsonl"));
    let sink = NatsSink::connect(&server.url("pullkin.{app}"), NatsConfig::default())
        .await
        .unwrap();
    let sink_name = sink.name().to_owned();
    let mut config = ForwardConfig::default();
    config.park = Some(Arc::new(park.clone()));
    let forward = spawn_forward(&pullkin, &["android"], Arc::new(sink), config);

    let send = |i: usize, pad: usize| {
        let message = SendMessage::new()
            .data("i", i.to_string())
            .data("pad", "x".repeat(pad));
        emulator
            .send(&android.token, &message)
            .unwrap()
            .persistent_id
    };
    let small = send(0, 10);
    // About 3.4 KB of JSON (the data is in it twice, as `data` and `raw`): over the
    // stream's limit, refused by the server.
    let over_stream = send(1, 1_500);
    // About 6.4 KB: over the connection's max_payload, refused before it is sent.
    let over_payload = send(2, 3_000);
    let later = send(3, 10);

    assert_eq!(wait_for_count(&client, STREAM, 2).await, 2);
    wait_all_acked(&emulator, &android, 4).await;
    let stored = by_persistent_id(stored(&client, STREAM).await);
    let mut ids: Vec<&String> = stored.keys().collect();
    ids.sort();
    let mut expected = vec![&small, &later];
    expected.sort();
    assert_eq!(ids, expected);

    let parked = std::fs::read_to_string(park.path()).unwrap();
    let parked: Vec<Value> = parked
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let parked_ids: Vec<&str> = parked
        .iter()
        .map(|line| line["persistent_id"].as_str().unwrap())
        .collect();
    assert_eq!(parked_ids, [over_stream.as_str(), over_payload.as_str()]);
    assert_eq!(parked[1]["key"], format!("android:{over_payload}"));

    let rejected: Vec<(String, String, String)> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::SinkRejected {
                sink,
                persistent_id,
                reason,
                ..
            } => Some((sink, persistent_id.unwrap_or_default(), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert_eq!(rejected[0].0, sink_name);
    assert_eq!(rejected[0].1, over_stream);
    assert!(rejected[0].2.contains("maximum"), "{}", rejected[0].2);
    assert_eq!(rejected[1].1, over_payload);
    assert!(rejected[1].2.contains("max payload"), "{}", rejected[1].2);
    stop(&pullkin, forward, &emulator).await;
}

/// Connects with a short timeout; the error and how long it took.
async fn connect_error(url: &str) -> (Error, Duration) {
    let mut config = NatsConfig::default();
    config.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = NatsSink::connect(url, config).await.unwrap_err();
    (error, started.elapsed())
}

#[tokio::test]
async fn nats_bad_urls_and_unreachable_servers_are_one_line_errors_naming_the_sink() {
    for url in [
        "nats://:0/",
        "http://x",
        "nats://u:hunter2@127.0.0.1:4222/a b",
    ] {
        let (error, _) = connect_error(url).await;
        assert!(matches!(error, Error::Config { .. }), "{url}: {error:?}");
        let text = error.to_string();
        eprintln!("{text}");
        assert!(text.starts_with("sink "), "{text}");
        assert!(!text.contains('\n') && !text.contains("hunter2"), "{text}");
    }

    // Nothing listens: refused at once.
    let port = free_port();
    let (error, took) = connect_error(&format!("nats://u:hunter2@127.0.0.1:{port}/x")).await;
    let text = error.to_string();
    eprintln!("{text} ({took:?})");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(
        text.starts_with(&format!("sink nats://127.0.0.1:{port}/x: ")),
        "{text}"
    );
    assert!(!text.contains('\n') && !text.contains("hunter2"), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Something listens and never greets: given up after the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let (error, took) = connect_error(&format!("nats://127.0.0.1:{port}")).await;
    let text = error.to_string();
    eprintln!("{text} ({took:?})");
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(
        text.starts_with(&format!("sink nats://127.0.0.1:{port}/pullkin.{{app}}: ")),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    holding.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_without_a_stream_is_unavailable_and_then_takes_the_batch() {
    let server = NatsServer::start().await;
    let client = server.client().await;
    let batch = records("android", 3);
    let sink = NatsSink::connect(&server.url("pullkin.{app}"), NatsConfig::default())
        .await
        .unwrap();
    let error = sink.deliver(&batch).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("sink {}: ", sink.name())),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");

    // Once the stream exists, the same batch goes in.
    let _created = self::sink(&server, NatsConfig::default()).await;
    assert_eq!(sink.deliver(&batch).await.unwrap(), vec![Outcome::Taken; 3]);
    assert_eq!(count(&client, STREAM).await, Some(3));
    let keys: HashSet<Option<String>> = stored(&client, STREAM)
        .await
        .into_iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(keys, batch.iter().map(|m| m.key.clone()).collect());
}

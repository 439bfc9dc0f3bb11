//! Hostile input at every boundary of the library, table-driven: MCS frames, push
//! payloads, HTTP answers, credentials documents, and a server certificate nobody trusts.
//! Each row asserts a typed error — and, for the listener, that it is still alive: a
//! normal message sent after the bad input arrives.
//!
//! Malformed *successful* HTTP bodies (a check-in answer that is not protobuf, an
//! Installations or FCM answer that is not the expected JSON, register3's unknown shapes)
//! cannot be served by the emulator; the registration crates test them against wiremock:
//! `gcm-checkin/tests/checkin.rs` (`malformed_answers_are_decode_errors_and_not_retried`),
//! `gcm-checkin/tests/register.rs` (`empty_token_and_unknown_shapes`,
//! `error_code_with_an_error_status_is_still_the_code`),
//! `fcm-install/tests/installations.rs` (`non_json_error_bodies_are_status_errors`,
//! `malformed_success_bodies_are_decode_errors`) and
//! `fcm-install/tests/registrations.rs` (`malformed_and_empty_answers`). Here the same
//! kinds of failure go through the whole `PullkinCore::register` path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fcm_emulator::{Emulator, Endpoint, Fault, HttpFailure, SendMessage, Target};
use fcm_http::{Endpoints, RetryPolicy};
use futures_util::Stream;
use mcs_codec::proto::{AppData, DataMessageStanza};
use mcs_codec::{McsCodec, McsError};
use pullkin::{
    AppCredentials, ConnectionError, ConnectionState, CredentialsError, Event, Incoming,
    ListenerConfig, Pullkin, PullkinCore, PullkinError, StoreError,
};
use pullkin_e2e::{Harness, WAIT, next};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::codec::Decoder;
use webpush_ece::Error as EceError;

/// A listener with a fast reconnect, so that many cut connections take little time.
fn fast_listener(harness: &Harness) -> Pullkin {
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![harness.emulator.mcs_addr().to_string()];
    config.reconnect = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(50));
    config.ack_delay = Duration::from_millis(20);
    harness.listener_with(config, None)
}

/// Sends a plain message `n=<n>` and waits for it: the listener is alive.
async fn alive(
    harness: &Harness,
    token: &str,
    stream: &mut (impl Stream<Item = Incoming> + Unpin),
    n: &str,
) {
    harness
        .emulator
        .send(token, &SendMessage::new().data("n", n))
        .unwrap();
    loop {
        let incoming = next(stream).await;
        if incoming.message.data.get("n").map(String::as_str) == Some(n) {
            return;
        }
    }
}

/// Waits for a `BackingOff` state whose error is a decode error the server's bytes
/// caused, for which `is` holds and whose text contains `needle`.
async fn backing_off_because(
    events: &mut broadcast::Receiver<Event>,
    is: impl Fn(&McsError) -> bool,
    needle: &str,
) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(Event::State {
                    state: ConnectionState::BackingOff { error, .. },
                    ..
                }) if matches!(&error, ConnectionError::Decode(mcs) if is(mcs))
                    && error.to_string().contains(needle) =>
                {
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the listener went away"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no reconnect because of {needle:?}"));
}

/// A frame body that cannot be any schema'd message: field 1, length-delimited, claims
/// five bytes and has one.
const BAD_PROTOBUF: &[u8] = &[0x0a, 0x05, 0x61];

/// Tags with a schema (MCS §2): a bad body is an error, never a guess.
const SCHEMA_TAGS: &[u8] = &[0, 1, 2, 3, 4, 7, 8, 10];

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(body);
    out
}

/// What a hostile frame must do to the decoder.
enum Expect {
    /// Decoding fails with an error matching this, whose text names the cause.
    Error(fn(&McsError) -> bool, &'static str),
    /// Decoded as an unknown frame and ignored; the connection stays.
    Ignored,
}

fn frame_table() -> Vec<(String, Vec<u8>, Expect)> {
    let mut table: Vec<(String, Vec<u8>, Expect)> = vec![
        (
            "size varint beyond the frame limit".into(),
            vec![8, 0xff, 0xff, 0xff, 0x7f],
            Expect::Error(
                |e| matches!(e, McsError::FrameTooLarge { .. }),
                "exceeds the limit",
            ),
        ),
        (
            "6-byte size varint".into(),
            vec![8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            Expect::Error(
                |e| matches!(e, McsError::SizeOverflow),
                "longer than 5 bytes",
            ),
        ),
        (
            "size varint overflowing 32 bits".into(),
            vec![8, 0xff, 0xff, 0xff, 0xff, 0x7f],
            Expect::Error(
                |e| matches!(e, McsError::SizeOverflow | McsError::FrameTooLarge { .. }),
                "MCS frame",
            ),
        ),
    ];
    for &tag in SCHEMA_TAGS {
        table.push((
            format!("bad protobuf with tag {tag}"),
            frame(tag, BAD_PROTOBUF),
            Expect::Error(
                |e| matches!(e, McsError::Decode { .. }),
                "cannot decode the protobuf body",
            ),
        ));
    }
    for tag in [5u8, 6, 9, 11, 12, 13, 14, 15, 16, 42, 255] {
        table.push((
            format!("unknown tag {tag}"),
            frame(tag, b"\x0a\x03abc"),
            Expect::Ignored,
        ));
    }
    table
}

#[test]
fn hostile_frames_are_typed_decoder_errors() {
    for (name, bytes, expect) in frame_table() {
        let mut codec = McsCodec::builder().version_exchange(false).new_codec();
        let mut buffer = BytesMut::from(&bytes[..]);
        let result = codec.decode(&mut buffer);
        match expect {
            Expect::Error(is, text) => {
                let error = result.expect_err(&name);
                assert!(is(&error), "{name}: {error:?}");
                assert!(error.to_string().contains(text), "{name}: {error}");
            }
            Expect::Ignored => {
                let message = result.unwrap().unwrap();
                assert_eq!(message.tag(), bytes[0], "{name}");
            }
        }
    }
    // Truncated: the stream ends inside a frame (header, then half a body).
    for bytes in [&[8u8][..], &[8, 10, 1, 2, 3], &[8, 0x80]] {
        let mut codec = McsCodec::builder().version_exchange(false).new_codec();
        let mut buffer = BytesMut::from(bytes);
        assert!(codec.decode(&mut buffer).unwrap().is_none());
        let error = codec.decode_eof(&mut buffer).unwrap_err();
        assert!(matches!(error, McsError::Truncated { .. }), "{error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_cut_the_connection_and_the_listener_lives() {
    let harness = Harness::start().await.unwrap();
    let credentials = harness.register_android().await.unwrap();
    let android_id = credentials.gcm.android_id;
    let token = credentials.gcm.token.as_str().to_owned();
    let pullkin = fast_listener(&harness);
    let mut events = pullkin.events();
    pullkin.add_app("app", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("app").unwrap());
    alive(&harness, &token, &mut stream, "start").await;

    let target = Target::Device(android_id);
    for (i, (name, bytes, expect)) in frame_table().into_iter().enumerate() {
        let logins = harness.emulator.login_count(android_id);
        harness
            .emulator
            .inject_fault(target, Fault::SendGarbage(Bytes::from(bytes)))
            .unwrap();
        match expect {
            Expect::Error(is, text) => {
                backing_off_because(&mut events, is, text).await;
                alive(&harness, &token, &mut stream, &i.to_string()).await;
                assert!(harness.emulator.login_count(android_id) > logins, "{name}");
            }
            Expect::Ignored => {
                alive(&harness, &token, &mut stream, &i.to_string()).await;
                assert_eq!(
                    harness.emulator.login_count(android_id),
                    logins,
                    "{name}: the connection stays"
                );
            }
        }
    }
    // The emulator's own unknown-tag fault, and a frame cut in half.
    harness
        .emulator
        .inject_fault(
            target,
            Fault::SendUnknownTag {
                tag: 200,
                body: Bytes::from_static(&[0xff; 64]),
            },
        )
        .unwrap();
    alive(&harness, &token, &mut stream, "after unknown").await;
    harness
        .emulator
        .inject_fault(target, Fault::DropMidFrame)
        .unwrap();
    harness
        .emulator
        .send(&token, &SendMessage::new().data("n", "cut"))
        .unwrap();
    backing_off_because(
        &mut events,
        |e| matches!(e, McsError::Truncated { .. }),
        "ended inside a frame",
    )
    .await;
    alive(&harness, &token, &mut stream, "after cut").await;
    pullkin.shutdown().await;
    harness.emulator.shutdown().await;
}

/// A data message for a web device, as is.
fn stanza(app_data: &[(&str, &str)], raw_data: &[u8]) -> DataMessageStanza {
    DataMessageStanza {
        from: "hostile".into(),
        category: "org.chromium.linux".into(),
        app_data: app_data
            .iter()
            .map(|(key, value)| AppData {
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        raw_data: Some(Bytes::copy_from_slice(raw_data)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_reported_acknowledged_and_the_listener_lives() {
    let harness = Harness::start().await.unwrap();
    let credentials = harness.register_web().await.unwrap();
    let android_id = credentials.gcm.android_id;
    let token = credentials.fcm.token().unwrap().to_owned();
    let keys = credentials.keys.receiver_keys().unwrap();
    let good = webpush_ece::aesgcm::encrypt(
        &keys.subscription_keys(),
        br#"{"data":{"n":"x"}}"#,
        &webpush_ece::EncryptOptions::new(),
    )
    .unwrap();
    let crypto_key = good.crypto_key_header();
    let encryption = good.encryption_header();
    let mut flipped = good.ciphertext.clone();
    flipped[0] ^= 1;
    let garbage_128 = vec![0x5a; 120];

    type Row<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        fn(&EceError) -> bool,
    );
    let table: Vec<Row> = vec![
        (
            "Crypto-Key that is not a parameter list",
            vec![("crypto-key", ";;=;"), ("encryption", &encryption)],
            good.ciphertext.clone(),
            |e| {
                matches!(
                    e,
                    EceError::InvalidCryptoKeyHeader
                        | EceError::InvalidDh
                        | EceError::MissingParameter(_)
                )
            },
        ),
        (
            "dh that is not base64",
            vec![("crypto-key", "dh=A"), ("encryption", &encryption)],
            good.ciphertext.clone(),
            |e| matches!(e, EceError::InvalidBase64 | EceError::InvalidDh),
        ),
        (
            "Crypto-Key with characters no header allows",
            vec![
                ("crypto-key", "dh=!!!not*base64!!!"),
                ("encryption", &encryption),
            ],
            good.ciphertext.clone(),
            |e| matches!(e, EceError::InvalidCryptoKeyHeader),
        ),
        (
            "dh that is not a curve point",
            vec![("crypto-key", "dh=AAAA"), ("encryption", &encryption)],
            good.ciphertext.clone(),
            |e| matches!(e, EceError::InvalidPublicKey | EceError::InvalidDh),
        ),
        (
            "salt that is not base64",
            vec![("crypto-key", &crypto_key), ("encryption", "salt=A")],
            good.ciphertext.clone(),
            |e| matches!(e, EceError::InvalidBase64 | EceError::InvalidSalt),
        ),
        (
            "missing Encryption",
            vec![("crypto-key", &crypto_key)],
            good.ciphertext.clone(),
            |e| matches!(e, EceError::MissingParameter("encryption")),
        ),
        (
            "missing Crypto-Key",
            vec![("encryption", &encryption)],
            good.ciphertext.clone(),
            |e| matches!(e, EceError::MissingParameter("crypto-key")),
        ),
        (
            "aesgcm ciphertext altered",
            vec![("crypto-key", &crypto_key), ("encryption", &encryption)],
            flipped,
            |e| matches!(e, EceError::BadTag),
        ),
        (
            "aes128gcm header cut short",
            vec![("content-encoding", "aes128gcm")],
            vec![0u8; 10],
            |e| matches!(e, EceError::ShortHeader),
        ),
        (
            "aes128gcm garbage",
            vec![("content-encoding", "aes128gcm")],
            garbage_128,
            |e| !matches!(e, EceError::MissingParameter(_)),
        ),
        (
            "unknown content-encoding",
            vec![("content-encoding", "rot13")],
            b"hello".to_vec(),
            |e| matches!(e, EceError::UnsupportedContentEncoding(_)),
        ),
    ];

    let pullkin = fast_listener(&harness);
    let mut events = pullkin.events();
    pullkin.add_app("web", &credentials, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("web").unwrap());
    for (i, (name, app_data, raw, is_expected)) in table.into_iter().enumerate() {
        // The typed error the decryption gives for this input…
        let direct =
            webpush_ece::decrypt_message(&keys, app_data.iter().copied(), &raw).expect_err(name);
        assert!(is_expected(&direct), "{name}: {direct:?}");
        // …is what the listener reports, and the message is acknowledged.
        let id = harness
            .emulator
            .send_raw(android_id, stanza(&app_data, &raw))
            .unwrap();
        // Taking messages from the stream resolves the poison one first (decoding happens
        // on the consumer's side), then the good one arrives: the listener lives.
        alive(&harness, &token, &mut stream, &i.to_string()).await;
        let mut reported = None;
        while let Ok(event) = events.try_recv() {
            if let Event::Undecryptable {
                persistent_id,
                error,
                ..
            } = event
                && persistent_id.as_deref() == Some(id.as_str())
            {
                reported = Some(error);
            }
        }
        let reported = reported.unwrap_or_else(|| panic!("{name}: not reported"));
        assert_eq!(reported, direct, "{name}");
        assert!(
            harness
                .emulator
                .wait_until(WAIT, |e| !e.unacked_ids(android_id).contains(&id)
                    && !e.pending_ids(android_id).contains(&id))
                .await,
            "{name}: acknowledged"
        );
    }
    pullkin.shutdown().await;
    harness.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_answers_are_typed_errors_and_the_core_recovers() {
    let harness = Harness::start().await.unwrap();
    type Check = fn(&PullkinError) -> bool;
    let table: Vec<(&str, Endpoint, HttpFailure, Check)> = vec![
        (
            "check-in: HTML 404",
            Endpoint::Checkin,
            HttpFailure::Html404,
            |e| matches!(e, PullkinError::Checkin(_) | PullkinError::Http(_)),
        ),
        (
            "check-in: 400",
            Endpoint::Checkin,
            HttpFailure::Status(400),
            |e| matches!(e, PullkinError::Checkin(_) | PullkinError::Http(_)),
        ),
        (
            "register3: Error=",
            Endpoint::Register3,
            HttpFailure::Register3Error("INVALID_SENDER".into()),
            |e| {
                matches!(
                    e,
                    PullkinError::Checkin(gcm_checkin::Error::Register3 { .. })
                )
            },
        ),
        (
            "register3: HTML",
            Endpoint::Register3,
            HttpFailure::Html404,
            |e| {
                matches!(
                    e,
                    PullkinError::Checkin(
                        gcm_checkin::Error::HtmlPage { .. } | gcm_checkin::Error::Http(_)
                    )
                )
            },
        ),
        (
            "installations: 403",
            Endpoint::CreateInstallation,
            HttpFailure::Status(403),
            |e| matches!(e, PullkinError::Install(_)),
        ),
        (
            "installations: HTML",
            Endpoint::CreateInstallation,
            HttpFailure::Html404,
            |e| matches!(e, PullkinError::Install(_)),
        ),
        (
            "FCM registration: 400",
            Endpoint::CreateRegistration,
            HttpFailure::Status(400),
            |e| matches!(e, PullkinError::Install(_)),
        ),
        (
            "FCM registration: Error= body",
            Endpoint::CreateRegistration,
            HttpFailure::Register3Error("BOGUS".into()),
            |e| matches!(e, PullkinError::Install(_)),
        ),
    ];
    for (name, endpoint, failure, is_expected) in table {
        // More failures than the core tries: the error comes out (or, for the FCM half,
        // is recorded in the credentials).
        harness.emulator.fail_next(endpoint, 8, failure);
        let outcome = harness.register_web().await;
        match outcome {
            Err(error) => assert!(is_expected(&error), "{name}: {error:?}"),
            // The FCM half failing is recorded in the credentials, as the seed does.
            Ok(credentials) => assert!(
                matches!(
                    endpoint,
                    Endpoint::CreateRegistration | Endpoint::CreateInstallation
                ) && credentials.fcm.error.is_some(),
                "{name}: {credentials:?}"
            ),
        }
        // Once the failures left over are used up, the same core registers again.
        let mut recovered = false;
        for _ in 0..9 {
            if let Ok(credentials) = harness.register_web().await
                && credentials.fcm.is_success()
            {
                recovered = true;
                break;
            }
        }
        assert!(recovered, "{name}: the core recovers");
    }
    harness.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_an_untrusted_certificate() {
    let emulator = Emulator::start().await.unwrap();
    // The public roots only: the emulator's CA is unknown.
    let core = PullkinCore::builder()
        .endpoints(Endpoints::at(emulator.base_url().as_str()).unwrap())
        .retry(RetryPolicy::default().with_max_attempts(1))
        .build()
        .unwrap();
    let params = pullkin::RegisterParams::web("42", "1:42:web:0a1b", "AIza-e2e", "p");
    let error = core.register(&params).await.unwrap_err();
    let shown = format!("{error}");
    assert!(
        matches!(
            &error,
            PullkinError::Checkin(gcm_checkin::Error::Http(fcm_http::Error::Tls { .. }))
                | PullkinError::Http(fcm_http::Error::Tls { .. })
        ),
        "{error:?}"
    );
    assert!(shown.contains("TLS"), "{shown}");
    assert!(emulator.devices().is_empty(), "no check-in got through");
    emulator.shutdown().await;
}

/// A valid credentials document as JSON, to spoil.
async fn good_document(harness: &Harness) -> Value {
    let credentials = harness.register_web().await.unwrap();
    serde_json::from_str(&credentials.to_json().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_credentials_are_typed_errors_and_other_apps_keep_listening() {
    let harness = Harness::start().await.unwrap();
    let good = good_document(&harness).await;
    let other: Value = good_document(&harness).await;

    let pullkin = fast_listener(&harness);
    let live = harness.register_android().await.unwrap();
    let token = live.gcm.token.as_str().to_owned();
    pullkin.add_app("live", &live, []).unwrap();
    let mut stream = Box::pin(pullkin.listen("live").unwrap());

    let spoil = |f: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        f(&mut doc);
        doc.to_string()
    };
    type Check = fn(&PullkinError) -> bool;
    let json_error: Check = |e| {
        matches!(
            e,
            PullkinError::Credentials(CredentialsError::Json(_) | CredentialsError::Shape(_))
        )
    };
    let key_error: Check = |e| {
        matches!(
            e,
            PullkinError::Credentials(CredentialsError::Keys(_) | CredentialsError::Shape(_))
        )
    };
    let table: Vec<(&str, String, Check)> = vec![
        ("empty", String::new(), json_error),
        ("not JSON", "{ gcm: ".into(), json_error),
        ("an array", "[1, 2]".into(), json_error),
        ("a string", "\"credentials\"".into(), json_error),
        (
            "no keys",
            spoil(&|d| {
                d.as_object_mut().unwrap().remove("keys");
            }),
            json_error,
        ),
        (
            "android_id not a number",
            spoil(&|d| d["gcm"]["android_id"] = "twelve".into()),
            json_error,
        ),
        (
            "negative security token",
            spoil(&|d| d["gcm"]["security_token"] = (-1).into()),
            json_error,
        ),
        (
            "private key not base64",
            spoil(&|d| d["keys"]["private"] = "%%%".into()),
            key_error,
        ),
        (
            "private key not PKCS#8",
            spoil(&|d| d["keys"]["private"] = "bm90IGEga2V5".into()),
            key_error,
        ),
        (
            "auth secret of the wrong length",
            spoil(&|d| d["keys"]["secret"] = "AAAA".into()),
            key_error,
        ),
        (
            "public key of another device",
            spoil(&|d| d["keys"]["public"] = other["keys"]["public"].clone()),
            key_error,
        ),
    ];
    for (i, (name, document, is_expected)) in table.into_iter().enumerate() {
        let outcome = AppCredentials::from_json(&document)
            .map_err(PullkinError::from)
            .and_then(|credentials| {
                pullkin
                    .add_app(&format!("bad{i}"), &credentials, [])
                    .map(|()| credentials)
            });
        let error = outcome.expect_err(name);
        assert!(is_expected(&error), "{name}: {error:?}");
        // The message names no secret of the document.
        let shown = format!("{error} {error:?}");
        for secret in ["private", "secret"] {
            if let Some(value) = good["keys"][secret].as_str() {
                assert!(!shown.contains(value), "{name} shows the {secret} key");
            }
        }
        alive(&harness, &token, &mut stream, &i.to_string()).await;
    }
    assert_eq!(pullkin.apps(), vec!["live".to_owned()]);
    pullkin.shutdown().await;
    harness.emulator.shutdown().await;
}

/// A state file that cannot be read stops its app with the store's error (no fresh start,
/// which would deliver everything again); the other apps go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_stops_that_app_only() {
    let harness = Harness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.acks.json"), b"\x00not json").unwrap();
    let store: Arc<dyn pullkin::Store> = Arc::new(pullkin::DirStore::open(dir.path()).unwrap());
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![harness.emulator.mcs_addr().to_string()];
    config.ack_delay = Duration::from_millis(20);
    let pullkin = harness.listener_with(config, Some(store));
    let bad = harness.register_web().await.unwrap();
    let live = harness.register_android().await.unwrap();
    pullkin.add_app("bad", &bad, []).unwrap();
    pullkin.add_app("live", &live, []).unwrap();
    let mut health = pullkin.health("bad").unwrap();
    let state = tokio::time::timeout(
        WAIT,
        health.wait_for(|h| matches!(h.state, ConnectionState::Stopped { .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .state
    .clone();
    let ConnectionState::Stopped {
        error: Some(ConnectionError::Store(error)),
    } = state
    else {
        panic!("{state:?}");
    };
    assert!(matches!(*error, StoreError::Corrupt { .. }), "{error:?}");
    let mut stream = Box::pin(pullkin.listen("live").unwrap());
    alive(&harness, live.gcm.token.as_str(), &mut stream, "still").await;
    pullkin.shutdown().await;
    harness.emulator.shutdown().await;
}

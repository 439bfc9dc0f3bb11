#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Web Push endpoint's VAPID check, and times to live, `Urgency` and `Topic`
//! (docs/protocol.md §7.5), over real HTTPS and MCS. Expiry is driven by the emulator's
//! clock (`advance_clock`), never by waiting.

use std::time::Duration;

use crate::common;

use bytes::Bytes;
use common::{Api, McsClient, app_data, body_json, body_text, decrypted};
use fcm_emulator::{DeviceCredentials, Emulator, FcmRegistration, SendMessage, VapidKey};
use serde_json::json;
use webpush_ece::{EncryptOptions, ReceiverKeys, aes128gcm};

const JSON: (&str, &str) = ("content-type", "application/json");
const BEARER: (&str, &str) = ("authorization", "Bearer test-access-token");
const API_KEY: (&str, &str) = ("x-goog-api-key", "AIzaTestKey");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A device subscribed with Chrome's default key (no application server key).
fn subscribed(emu: &Emulator) -> (DeviceCredentials, ReceiverKeys, FcmRegistration) {
    let keys = ReceiverKeys::generate();
    let (creds, fcm) = common::subscribe_web(emu, &keys);
    (creds, keys, fcm)
}

fn encrypt(keys: &ReceiverKeys, text: &str) -> Vec<u8> {
    aes128gcm::encrypt(
        &keys.subscription_keys(),
        text.as_bytes(),
        &EncryptOptions::new(),
    )
    .unwrap()
}

/// Posts an aes128gcm push to a GCM token's endpoint with these extra headers.
async fn push(
    api: &Api,
    gcm_token: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> http::Response<Bytes> {
    let mut all = vec![
        ("content-encoding", "aes128gcm"),
        ("content-type", "application/octet-stream"),
    ];
    all.extend_from_slice(headers);
    api.post(&format!("/fcm/send/{gcm_token}"), &all, body)
        .await
}

/// The origin of the emulator's endpoints, the `aud` a JWT must name.
fn origin(emu: &Emulator) -> String {
    emu.base_url().origin().ascii_serialization()
}

#[tokio::test]
async fn vapid_is_required_and_checked() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let (creds, keys, fcm) = subscribed(&emu);
    let endpoint = emu.webpush_endpoint(&fcm.gcm_token).to_string();
    let key = VapidKey::generate().unwrap();
    let body = || encrypt(&keys, "{\"n\":1}");

    // Missing: 401; an unrelated scheme counts as missing.
    let response = push(&api, &fcm.gcm_token, &[], body()).await;
    assert_eq!(response.status(), 401, "{}", body_text(&response));
    let response = push(
        &api,
        &fcm.gcm_token,
        &[("authorization", "key=AIzaLegacy")],
        body(),
    )
    .await;
    assert_eq!(response.status(), 401);

    // Signed (any key, the subscription has none of its own): 201, delivered.
    let good = key.authorization(&endpoint).unwrap();
    let response = push(&api, &fcm.gcm_token, &[("authorization", &good)], body()).await;
    assert_eq!(response.status(), 201, "{}", body_text(&response));
    // The same JWT may be used again (RFC 8292 §2).
    let response = push(&api, &fcm.gcm_token, &[("authorization", &good)], body()).await;
    assert_eq!(response.status(), 201);
    // The older `WebPush <jwt>` + `Crypto-Key: p256ecdsa=` form.
    let jwt = key
        .jwt(&json!({ "aud": origin(&emu), "exp": now() + 600 }))
        .unwrap();
    let webpush = format!("WebPush {jwt}");
    let crypto_key = format!("p256ecdsa={}", key.public_key_base64());
    let response = push(
        &api,
        &fcm.gcm_token,
        &[("authorization", &webpush), ("crypto-key", &crypto_key)],
        body(),
    )
    .await;
    assert_eq!(response.status(), 201, "{}", body_text(&response));

    // Invalid: 403, each saying why.
    let signed = |claims: serde_json::Value| key.authorization_for(&key.jwt(&claims).unwrap());
    let other = VapidKey::generate().unwrap();
    let forged = format!("vapid t={jwt}, k={}", other.public_key_base64());
    let cases = [
        (
            signed(json!({ "aud": "https://fcm.googleapis.com", "exp": now() + 600 })),
            "aud",
        ),
        (
            signed(json!({ "aud": origin(&emu), "exp": now() + 25 * 3600 })),
            "24 hours",
        ),
        (
            signed(json!({ "aud": origin(&emu), "exp": now() - 10 })),
            "expired",
        ),
        (signed(json!({ "aud": origin(&emu) })), "exp"),
        (forged, "signature"),
        ("vapid t=not.a.jwt, k=nope".to_owned(), "P-256"),
        (format!("vapid k={}", key.public_key_base64()), "t= and k="),
    ];
    for (authorization, needle) in cases {
        let response = push(
            &api,
            &fcm.gcm_token,
            &[("authorization", &authorization)],
            body(),
        )
        .await;
        assert_eq!(response.status(), 403, "{authorization}");
        let text = body_text(&response);
        assert!(text.contains(needle), "{needle}: {text}");
    }

    // A JWT valid now is refused once the emulator's clock passed its exp.
    let short = signed(json!({ "aud": origin(&emu), "exp": now() + 60 }));
    assert_eq!(
        push(&api, &fcm.gcm_token, &[("authorization", &short)], body())
            .await
            .status(),
        201
    );
    emu.advance_clock(Duration::from_secs(120));
    assert_eq!(
        push(&api, &fcm.gcm_token, &[("authorization", &short)], body())
            .await
            .status(),
        403
    );

    // Exactly the accepted pushes arrive.
    let mut mcs = McsClient::logged_in(&emu, creds).await;
    for stanza in mcs.expect_data_n(4).await {
        assert_eq!(decrypted(&keys, &stanza), b"{\"n\":1}");
    }
    assert!(emu.device(creds.android_id).unwrap().pending.is_empty());
}

#[tokio::test]
async fn vapid_key_must_be_the_subscriptions() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let app_key = VapidKey::generate().unwrap();
    let stranger = VapidKey::generate().unwrap();
    let keys = ReceiverKeys::generate();
    let body = || encrypt(&keys, "x");

    // The web persona's register3 `sender` is the application server key.
    let creds = emu.create_device();
    let gcm = emu
        .register_gcm(
            creds.android_id,
            "org.chromium.linux",
            Some("wp:https://app.example/#1"),
            &app_key.public_key_base64(),
        )
        .unwrap();
    let endpoint = emu.webpush_endpoint(&gcm.token).to_string();
    let by_stranger = stranger.authorization(&endpoint).unwrap();
    let response = push(&api, &gcm.token, &[("authorization", &by_stranger)], body()).await;
    assert_eq!(response.status(), 403);
    assert!(body_text(&response).contains("application server key"));
    let by_app = app_key.authorization(&endpoint).unwrap();
    assert_eq!(
        push(&api, &gcm.token, &[("authorization", &by_app)], body())
            .await
            .status(),
        201
    );

    // An FCM registration's `applicationPubKey`, bound to a GCM token made with
    // Chrome's key: that key is the one.
    let (_, keys2, chrome) = subscribed(&emu);
    let installation = api
        .post(
            "/v1/projects/p/installations",
            &[JSON, API_KEY],
            json!({ "appId": "1:1:web:1", "authVersion": "FIS_v2" }).to_string(),
        )
        .await;
    let auth = body_json(&installation)["authToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let registration = api
        .post(
            "/v1/projects/p/registrations",
            &[JSON, API_KEY, ("x-goog-firebase-installations-auth", &auth)],
            json!({ "web": {
                "endpoint": emu.webpush_endpoint(&chrome.gcm_token).to_string(),
                "p256dh": keys2.public_key_base64(),
                "auth": keys2.auth_secret_base64().as_str(),
                "applicationPubKey": app_key.public_key_base64(),
            }})
            .to_string(),
        )
        .await;
    assert_eq!(registration.status(), 200, "{}", body_text(&registration));
    let fcm_token = body_json(&registration)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = emu.webpush_endpoint(&fcm_token).to_string();
    let by_stranger = stranger.authorization(&endpoint).unwrap();
    assert_eq!(
        push(&api, &fcm_token, &[("authorization", &by_stranger)], body())
            .await
            .status(),
        403
    );
    let by_app = app_key.authorization(&endpoint).unwrap();
    assert_eq!(
        push(&api, &fcm_token, &[("authorization", &by_app)], body())
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn unsigned_pushes_on_request() {
    let (emu, api) = common::unsigned_webpush_emulator().await;
    let (_, keys, fcm) = subscribed(&emu);
    let response = push(&api, &fcm.gcm_token, &[], encrypt(&keys, "x")).await;
    assert_eq!(response.status(), 201, "{}", body_text(&response));
    // A signature that is there is still checked.
    let key = VapidKey::generate().unwrap();
    let wrong = key
        .authorization("https://elsewhere.example/fcm/send/x")
        .unwrap();
    let response = push(
        &api,
        &fcm.gcm_token,
        &[("authorization", &wrong)],
        encrypt(&keys, "x"),
    )
    .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn webpush_ttl_urgency_and_topic() {
    let (emu, api) = common::unsigned_webpush_emulator().await;
    let (creds, keys, fcm) = subscribed(&emu);
    let token = fcm.gcm_token.as_str();
    let pending = |emu: &Emulator| emu.device(creds.android_id).unwrap().pending;
    let expired = |emu: &Emulator| emu.device(creds.android_id).unwrap().expired_messages;

    // Bad Urgency and Topic values.
    for headers in [
        [("urgency", "urgent"), ("ttl", "60")],
        [("topic", "not a topic"), ("ttl", "60")],
        [("topic", &*"a".repeat(33)), ("ttl", "60")],
    ] {
        let response = push(&api, token, &headers, encrypt(&keys, "x")).await;
        assert_eq!(response.status(), 400, "{headers:?}");
    }

    // TTL 0 while the device is not connected: accepted, dropped.
    let response = push(&api, token, &[("ttl", "0")], encrypt(&keys, "ttl0-offline")).await;
    assert_eq!(response.status(), 201);
    assert!(pending(&emu).is_empty());
    assert_eq!(expired(&emu), 1);

    for (headers, text) in [
        // A TTL that runs out before the device connects.
        ([("ttl", "30"), ("urgency", "high")], "short"),
        ([("ttl", "3600"), ("urgency", "very-low")], "long"),
        // The same Topic twice: the newer replaces the older, undelivered one.
        ([("ttl", "3600"), ("topic", "score")], "score 1-0"),
        ([("ttl", "3600"), ("topic", "score")], "score 2-0"),
        ([("ttl", "3600"), ("topic", "other")], "other"),
    ] {
        push(&api, token, &headers, encrypt(&keys, text)).await;
    }
    assert_eq!(pending(&emu).len(), 4);
    emu.advance_clock(Duration::from_secs(31));
    assert_eq!(pending(&emu).len(), 3);
    assert_eq!(expired(&emu), 2);

    let mut mcs = McsClient::logged_in(&emu, creds).await;
    let texts: Vec<String> = mcs
        .expect_data_n(3)
        .await
        .iter()
        .map(|s| String::from_utf8(decrypted(&keys, s)).unwrap())
        .collect();
    assert_eq!(texts, ["long", "score 2-0", "other"]);
    // TTL 0 to the connected device: delivered.
    push(&api, token, &[("ttl", "0")], encrypt(&keys, "ttl0-online")).await;
    let stanza = mcs.expect_data().await;
    assert_eq!(decrypted(&keys, &stanza), b"ttl0-online");
    assert_eq!(stanza.ttl, Some(0));
}

#[tokio::test]
async fn send_api_ttl() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let (creds, token) = common::android_device(&emu);
    let send = |ttl: &str, n: &str| {
        let body = json!({ "message": {
            "token": token, "data": { "n": n }, "android": { "ttl": ttl },
        }})
        .to_string();
        let api = &api;
        async move {
            let response = api
                .post("/v1/projects/p/messages:send", &[JSON, BEARER], body)
                .await;
            assert_eq!(response.status(), 200, "{}", body_text(&response));
        }
    };
    send("0s", "now-or-never").await;
    send("60s", "one-minute").await;
    send("7200s", "two-hours").await;
    let info = emu.device(creds.android_id).unwrap();
    assert_eq!(info.pending.len(), 2);
    assert_eq!(info.expired_messages, 1);

    // Received but not acknowledged, then the connection is gone.
    let mut mcs = McsClient::logged_in(&emu, creds).await;
    let got: Vec<_> = mcs.expect_data_n(2).await;
    assert_eq!(app_data(&got[0], "n"), Some("one-minute"));
    assert_eq!(app_data(&got[1], "n"), Some("two-hours"));
    // A TTL-0 message to the connected device arrives; unacknowledged, it is not
    // redelivered on the next connection.
    send("0s", "now").await;
    assert_eq!(app_data(&mcs.expect_data().await, "n"), Some("now"));
    drop(mcs);
    common::eventually(&emu, |e| !e.is_connected(creds.android_id)).await;

    // An hour later only the two-hour message is still worth redelivering.
    emu.advance_clock(Duration::from_secs(3600));
    let mut mcs = McsClient::logged_in(&emu, creds).await;
    let stanza = mcs.expect_data().await;
    assert_eq!(app_data(&stanza, "n"), Some("two-hours"));
    // Nothing else follows: the next frame is a marker sent now.
    emu.send(&token, &SendMessage::new().data("n", "marker"))
        .unwrap();
    assert_eq!(app_data(&mcs.expect_data().await, "n"), Some("marker"));
    assert_eq!(emu.device(creds.android_id).unwrap().expired_messages, 3);
}

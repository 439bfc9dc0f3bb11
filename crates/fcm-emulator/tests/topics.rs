#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Topics, token deletes, instance resets and FID shapes (docs/protocol.md §7.1, §7.5),
//! over real HTTPS and MCS.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use common::{Api, McsClient, app_data, body_json, body_text, register3};
use fcm_emulator::{DeviceCredentials, Emulator, IidCommand, SendMessage};
use serde_json::json;

const JSON: (&str, &str) = ("content-type", "application/json");
const API_KEY: (&str, &str) = ("x-goog-api-key", "AIzaTestKey");
const BEARER: (&str, &str) = ("authorization", "Bearer test-access-token");
const APP: &str = "com.example.topics";
const SENDER: &str = "987654321";

/// The Android persona's registration (docs/protocol.md §2.2); returns the token.
async fn register_android(api: &Api, creds: DeviceCredentials, fid: Option<&str>) -> String {
    let id = creds.android_id.to_string();
    let mut form = vec![
        ("app", APP),
        ("X-subtype", SENDER),
        ("sender", SENDER),
        ("device", id.as_str()),
        ("X-scope", "*"),
    ];
    if let Some(fid) = fid {
        form.push(("X-appid", fid));
    }
    let body = register3(api, creds, &form).await;
    body.strip_prefix("token=").expect(&body).to_owned()
}

/// A topic (un)subscription as the Firebase SDK asks for it (docs/protocol.md §7.1).
async fn topic_request(
    api: &Api,
    creds: DeviceCredentials,
    token: &str,
    topic: &str,
    delete: Option<(&str, &str)>,
) -> String {
    let id = creds.android_id.to_string();
    let scope = format!("/topics/{topic}");
    let mut form = vec![
        ("app", APP),
        ("device", id.as_str()),
        ("sender", token),
        ("X-subtype", token),
        ("X-gcm.topic", scope.as_str()),
        ("X-scope", scope.as_str()),
    ];
    form.extend(delete);
    register3(api, creds, &form).await
}

/// `messages:send` with this `message` object; returns the HTTP response.
async fn send(api: &Api, message: serde_json::Value) -> http::Response<Bytes> {
    api.post(
        "/v1/projects/p/messages:send",
        &[JSON, BEARER],
        json!({ "message": message }).to_string(),
    )
    .await
}

async fn send_ok(api: &Api, message: serde_json::Value) -> String {
    let response = send(api, message).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    body_json(&response)["name"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn topic_subscriptions_and_sends() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = emu.create_device();
    let token = register_android(&api, creds, None).await;
    let other = emu.create_device();
    let other_token = register_android(&api, other, None).await;

    for topic in ["news", "sport"] {
        let body = topic_request(&api, creds, &token, topic, None).await;
        assert_eq!(body, format!("token={token}"));
    }
    assert_eq!(
        topic_request(&api, other, &other_token, "news", None).await,
        format!("token={other_token}")
    );
    assert_eq!(emu.topics(&token), ["news", "sport"]);
    let mut subscribers = vec![token.clone(), other_token.clone()];
    subscribers.sort();
    assert_eq!(emu.topic_subscribers("news"), subscribers);

    let mut client = McsClient::logged_in(&emu, creds).await;
    let mut other_client = McsClient::logged_in(&emu, other).await;

    // To a topic: both subscribers, from /topics/news.
    let name = send_ok(&api, json!({ "topic": "news", "data": { "n": "1" } })).await;
    assert!(name.starts_with("projects/p/messages/"), "{name}");
    for c in [&mut client, &mut other_client] {
        let stanza = c.expect_data().await;
        assert_eq!(stanza.from, "/topics/news");
        assert_eq!(stanza.category, APP);
        assert_eq!(app_data(&stanza, "n"), Some("1"));
    }
    // The `/topics/` prefix is accepted too.
    send_ok(
        &api,
        json!({ "topic": "/topics/sport", "data": { "n": "2" } }),
    )
    .await;
    let stanza = client.expect_data().await;
    assert_eq!(stanza.from, "/topics/sport");
    assert_eq!(app_data(&stanza, "n"), Some("2"));

    // A condition: only the device on both topics.
    let both = "'news' in topics && ('sport' in topics || 'weather' in topics)";
    send_ok(&api, json!({ "condition": both, "data": { "n": "3" } })).await;
    let stanza = client.expect_data().await;
    assert_eq!(app_data(&stanza, "n"), Some("3"));
    assert_eq!(stanza.from, "p");
    // A negation: only the other device.
    send_ok(
        &api,
        json!({ "condition": "\"news\" in topics && !('sport' in topics)", "data": { "n": "4" } }),
    )
    .await;
    assert_eq!(app_data(&other_client.expect_data().await, "n"), Some("4"));

    // Unsubscribe with `delete=1`, then with `X-delete=1`.
    let body = topic_request(&api, creds, &token, "sport", Some(("delete", "1"))).await;
    assert_eq!(body, format!("token={token}"));
    assert_eq!(emu.topics(&token), ["news"]);
    let body = topic_request(&api, other, &other_token, "news", Some(("X-delete", "1"))).await;
    assert_eq!(body, format!("token={other_token}"));
    assert!(emu.topics(&other_token).is_empty());

    // The condition now reaches nobody; a topic message reaches the one left. The next
    // frames show exactly what arrived, in order.
    send_ok(&api, json!({ "condition": both, "data": { "n": "5" } })).await;
    send_ok(&api, json!({ "topic": "sport", "data": { "n": "6" } })).await;
    send_ok(&api, json!({ "topic": "news", "data": { "n": "7" } })).await;
    send_ok(&api, json!({ "token": other_token, "data": { "n": "8" } })).await;
    assert_eq!(app_data(&client.expect_data().await, "n"), Some("7"));
    assert_eq!(app_data(&other_client.expect_data().await, "n"), Some("8"));
    // A topic nobody is on is accepted, and goes nowhere.
    send_ok(&api, json!({ "topic": "empty", "data": { "n": "9" } })).await;
    assert!(emu.device(creds.android_id).unwrap().pending.is_empty());

    // The library API does the same.
    emu.subscribe_topic(&token, "lib").unwrap();
    let sent = emu
        .send_to_topic("lib", &SendMessage::new().data("n", "10"))
        .unwrap();
    assert_eq!(sent.len(), 1);
    let stanza = client.expect_data().await;
    assert_eq!(
        stanza.persistent_id.as_deref(),
        Some(sent[0].persistent_id.as_str())
    );
    assert_eq!(stanza.from, "/topics/lib");
    let sent = emu
        .send_to_condition("'lib' in topics && 'news' in topics", &SendMessage::new())
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert!(emu.unsubscribe_topic(&token, "lib").unwrap());
    assert!(!emu.unsubscribe_topic(&token, "lib").unwrap());
}

#[tokio::test]
async fn topic_and_condition_errors() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = emu.create_device();
    let token = register_android(&api, creds, None).await;
    let id = creds.android_id.to_string();

    // register3: bad names, a token of another app or unknown, subtype not the token.
    let bad = "a b".to_owned();
    assert_eq!(
        topic_request(&api, creds, &token, &bad, None).await,
        "Error=INVALID_PARAMETERS"
    );
    let long = "x".repeat(901);
    assert_eq!(
        topic_request(&api, creds, &token, &long, None).await,
        "Error=INVALID_PARAMETERS"
    );
    let ok_long = "x".repeat(900);
    assert!(
        topic_request(&api, creds, &token, &ok_long, None)
            .await
            .starts_with("token=")
    );
    assert_eq!(
        topic_request(&api, creds, "unknown-token", "news", None).await,
        "Error=INVALID_PARAMETERS"
    );
    let mismatch = [
        ("app", APP),
        ("device", id.as_str()),
        ("sender", token.as_str()),
        ("X-subtype", "something-else"),
        ("X-gcm.topic", "/topics/news"),
        ("X-scope", "/topics/news"),
    ];
    let no_prefix = [
        ("app", APP),
        ("device", id.as_str()),
        ("sender", token.as_str()),
        ("X-gcm.topic", "news"),
    ];
    let other_app = [
        ("app", "com.other"),
        ("device", id.as_str()),
        ("sender", token.as_str()),
        ("X-gcm.topic", "/topics/news"),
    ];
    for form in [&mismatch[..], &no_prefix, &other_app] {
        assert_eq!(
            register3(&api, creds, form).await,
            "Error=INVALID_PARAMETERS",
            "{form:?}"
        );
    }
    // Injected: the topic quota.
    emu.fail_register3(1, "TOO_MANY_SUBSCRIBERS");
    assert_eq!(
        topic_request(&api, creds, &token, "news", None).await,
        "Error=TOO_MANY_SUBSCRIBERS"
    );

    // messages:send: each refusal is a 400 INVALID_ARGUMENT that says why.
    for (message, needle) in [
        (json!({ "topic": "a b" }), "Invalid topic name"),
        (
            json!({ "condition": "'a' in topics &&" }),
            "Invalid condition",
        ),
        (
            json!({ "condition": "'a' in topics & 'b' in topics" }),
            "unexpected character",
        ),
        (json!({ "condition": "('a' in topics" }), "ends early"),
        (
            json!({ "condition": "'a' in topics || 'b' in topics || 'c' in topics || 'd' in topics || 'e' in topics || 'f' in topics" }),
            "at most 5",
        ),
        (
            json!({ "condition": "'a' in topics", "topic": "a" }),
            "Exactly one",
        ),
        (json!({ "token": token, "topic": "a" }), "Exactly one"),
        (
            json!({ "condition": "(".repeat(5000) }),
            "nested too deeply",
        ),
    ] {
        let response = send(&api, message.clone()).await;
        assert_eq!(response.status(), 400, "{message}");
        let error = body_json(&response);
        assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{error}");
        assert_eq!(
            error["error"]["details"][0]["errorCode"],
            "INVALID_ARGUMENT"
        );
        let text = error["error"]["message"].as_str().unwrap();
        assert!(text.contains(needle), "{message}: {text}");
    }
    // validate_only checks a condition without sending.
    let response = api
        .post(
            "/v1/projects/p/messages:send",
            &[JSON, BEARER],
            json!({ "validate_only": true, "message": { "condition": "'a' in topics" } })
                .to_string(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(emu.send_to_condition("!", &SendMessage::new()).is_err());
    assert!(emu.send_to_topic("a b", &SendMessage::new()).is_err());
}

#[tokio::test]
async fn token_delete_unregisters() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = emu.create_device();
    let token = register_android(&api, creds, None).await;
    topic_request(&api, creds, &token, "news", None).await;
    let id = creds.android_id.to_string();

    // Another sender's registration of the same app survives the delete.
    let other_sender = [
        ("app", APP),
        ("X-subtype", "111"),
        ("sender", "111"),
        ("device", id.as_str()),
    ];
    let body = register3(&api, creds, &other_sender).await;
    let kept = body.strip_prefix("token=").expect(&body).to_owned();

    let delete = [
        ("app", APP),
        ("device", id.as_str()),
        ("delete", "1"),
        ("X-scope", "*"),
        ("sender", SENDER),
    ];
    assert_eq!(
        register3(&api, creds, &delete).await,
        format!("deleted={APP}")
    );
    assert!(emu.gcm_registration(&token).is_none());
    assert!(emu.topic_subscribers("news").is_empty());
    assert!(emu.gcm_registration(&kept).is_some());
    let response = send(&api, json!({ "token": token, "data": { "k": "v" } })).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        body_json(&response)["error"]["details"][0]["errorCode"],
        "UNREGISTERED"
    );
    // Deleting again still answers deleted=.
    assert_eq!(
        register3(&api, creds, &delete).await,
        format!("deleted={APP}")
    );
    // Registering again gives a new token.
    assert_ne!(register_android(&api, creds, None).await, token);
}

#[tokio::test]
async fn invalidated_instances_answer_rst_until_a_new_identity() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = emu.create_device();
    let old_fid = "cAAAAAAAAAAAAAAAAAAAAA";
    let token = register_android(&api, creds, Some(old_fid)).await;
    topic_request(&api, creds, &token, "news", None).await;
    assert_eq!(
        emu.gcm_registration(&token).unwrap().fid.as_deref(),
        Some(old_fid)
    );

    let gone = emu.invalidate_instance(&token).unwrap();
    assert_eq!(gone.token, token);
    assert!(emu.gcm_registration(&token).is_none());
    assert!(emu.topic_subscribers("news").is_empty());
    let id = creds.android_id.to_string();
    let form = [
        ("app", APP),
        ("X-subtype", SENDER),
        ("sender", SENDER),
        ("device", id.as_str()),
        ("X-appid", old_fid),
    ];
    assert_eq!(register3(&api, creds, &form).await, "Error=RST");
    // Without a FID it is the same instance.
    assert_eq!(register3(&api, creds, &form[..4]).await, "Error=RST");
    assert_eq!(
        topic_request(&api, creds, &token, "news", None).await,
        "Error=RST"
    );
    // A new FID is a new identity.
    let new_token = register_android(&api, creds, Some("dBBBBBBBBBBBBBBBBBBBBB")).await;
    assert_ne!(new_token, token);
    // So is a new device.
    let fresh = emu.create_device();
    assert!(register_android(&api, fresh, Some(old_fid)).await.len() > 100);
    // A one-off RST.
    emu.fail_register3(1, "RST");
    assert_eq!(register3(&api, fresh, &[("app", APP)]).await, "Error=RST");
}

#[tokio::test]
async fn iid_control_messages_over_mcs() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = emu.create_device();
    let token = register_android(&api, creds, None).await;
    let mut client = McsClient::logged_in(&emu, creds).await;
    for command in [IidCommand::Rst, IidCommand::RstFull, IidCommand::Sync] {
        let sent = emu.send_iid_command(&token, command).unwrap();
        let stanza = client.expect_data().await;
        assert_eq!(stanza.from, "google.com/iid");
        assert_eq!(stanza.category, APP);
        assert_eq!(app_data(&stanza, "CMD"), Some(command.as_str()));
        assert_eq!(app_data(&stanza, "subtype"), Some(SENDER));
        assert_eq!(
            stanza.persistent_id.as_deref(),
            Some(sent.persistent_id.as_str())
        );
    }
    client.stream_ack().await;
    common::eventually(&emu, |e| e.unacked_ids(creds.android_id).is_empty()).await;
    assert!(emu.send_iid_command("unknown", IidCommand::Sync).is_err());
}

#[tokio::test]
async fn fid_shapes_real_clients_send() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let create = |fid: String| {
        let body = json!({ "fid": fid, "appId": "1:1:android:1", "authVersion": "FIS_v2" });
        let api = &api;
        async move {
            api.post(
                "/v1/projects/p/installations",
                &[JSON, API_KEY],
                body.to_string(),
            )
            .await
        }
    };
    // 17 bytes, high nibble 0111, chosen so that standard base64 has '+' and '/'.
    let bytes: [u8; 17] = [
        0x7b, 0xef, 0xff, 0xfb, 0xef, 0xbe, 0xfb, 0xff, 0xbf, 0xfe, 0xfb, 0xef, 0xff, 0xbf, 0xfb,
        0xef, 0xbe,
    ];
    let padded = STANDARD.encode(bytes);
    assert_eq!(padded.len(), 24);
    assert!(padded.contains('/') || padded.contains('+'), "{padded}");
    let canonical = URL_SAFE_NO_PAD.encode(bytes)[..22].to_owned();

    // The SDKs' 22 url-safe characters: kept as they are.
    let sdk = "fQm3xK9-_aB1cD2eF3gH4i".to_owned();
    let response = create(sdk.clone()).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    assert_eq!(body_json(&response)["fid"], sdk.as_str());

    // 24 characters of padded standard base64: accepted, answered with the fid to use.
    let response = create(padded.clone()).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let answer = body_json(&response);
    assert_eq!(answer["fid"], canonical.as_str());
    assert_eq!(
        answer["name"],
        format!("projects/p/installations/{canonical}")
    );
    assert!(emu.installation(&canonical).is_some());
    // The answered fid is the one the installation is known by: its refresh works.
    let refresh = format!("FIS_v2 {}", answer["refreshToken"].as_str().unwrap());
    let response = api
        .post(
            &format!("/v1/projects/p/installations/{canonical}/authTokens:generate"),
            &[JSON, API_KEY, ("authorization", refresh.as_str())],
            "{}",
        )
        .await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));

    // Not a FID: wrong high nibble, wrong length.
    let mut wrong = bytes;
    wrong[0] = 0x9b;
    for fid in [
        STANDARD.encode(wrong),
        STANDARD.encode([0x70u8; 16]),
        "x".repeat(24),
    ] {
        let response = create(fid.clone()).await;
        assert_eq!(response.status(), 400, "{fid}");
    }
}

#[tokio::test]
async fn several_senders_on_one_registration() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = emu.create_device();
    let id = creds.android_id.to_string();
    let form = [("app", APP), ("sender", "111,222"), ("device", id.as_str())];
    let body = register3(&api, creds, &form).await;
    let token = body.strip_prefix("token=").expect(&body);
    assert_eq!(emu.gcm_registration(token).unwrap().sender, "111,222");
    // Another set of senders is another registration.
    let body = register3(&api, creds, &[("sender", "111,222,333"), form[0], form[2]]).await;
    assert_ne!(body.strip_prefix("token=").expect(&body), token);
    for bad in ["111,", ",111", "111,abc"] {
        let body = register3(&api, creds, &[("sender", bad), form[0], form[2]]).await;
        assert_eq!(body, "Error=INVALID_SENDER", "{bad}");
    }
}

#[tokio::test]
async fn hostile_conditions_are_answered_400() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    for condition in [
        "'",
        "\"",
        "))))",
        "!",
        "&&",
        "'a' in",
        "'a' in topics ||",
        "'a' in topics 'b' in topics",
        "'\u{0}' in topics",
        "'é' in topics",
        "\u{1F600}",
        "in topics",
        "topics",
        "'a' IN topics",
    ] {
        let response = send(&api, json!({ "condition": condition })).await;
        assert_eq!(
            response.status(),
            400,
            "{condition:?}: {}",
            body_text(&response)
        );
    }
    let deep = format!("{}'a' in topics{}", "(".repeat(60), ")".repeat(60));
    send_ok(&api, json!({ "condition": deep })).await;
}

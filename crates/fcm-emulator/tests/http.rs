#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The HTTP APIs over real TLS, and the payloads they deliver over MCS.

use crate::common;

use bytes::Bytes;
use common::{
    Api, McsClient, android_device, app_data, body_json, body_text, decrypt, decrypted,
    decrypted_json, register3,
};
use fcm_emulator::proto::{AndroidCheckinRequest, AndroidCheckinResponse};
use fcm_emulator::{
    CHROME_VAPID_KEY, DeviceCredentials, Emulator, Endpoint, HttpFailure, Notification, Persona,
    SendMessage,
};
use prost::Message as _;
use webpush_ece::{EncryptOptions, Payload, ReceiverKeys, aes128gcm};

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");
const API_KEY: (&str, &str) = ("x-goog-api-key", "AIzaTestKey");
const BEARER: (&str, &str) = ("authorization", "Bearer test-access-token");

fn checkin_body(creds: Option<DeviceCredentials>) -> Vec<u8> {
    let mut request = AndroidCheckinRequest {
        user_serial_number: Some(0),
        version: Some(3),
        ..Default::default()
    };
    request.checkin.r#type = Some(3);
    if let Some(c) = creds {
        request.id = Some(c.android_id as i64);
        request.security_token = Some(c.security_token);
    }
    request.encode_to_vec()
}

async fn check_in(api: &Api, creds: Option<DeviceCredentials>) -> http::Response<Bytes> {
    api.post("/checkin", &[PROTOBUF], checkin_body(creds)).await
}

fn creds_of(response: &http::Response<Bytes>) -> DeviceCredentials {
    assert_eq!(response.status(), 200, "{}", body_text(response));
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let decoded = AndroidCheckinResponse::decode(response.body().as_ref()).unwrap();
    assert!(decoded.stats_ok);
    DeviceCredentials {
        android_id: decoded.android_id.unwrap(),
        security_token: decoded.security_token.unwrap(),
    }
}

/// register3 for the web persona, as Chrome asks; returns the GCM token.
async fn register_web(api: &Api, creds: DeviceCredentials) -> String {
    let id = creds.android_id.to_string();
    let form = [
        ("app", "org.chromium.linux"),
        (
            "X-subtype",
            "wp:receiver.push.com#5b1e1f0a-2a4b-4c1e-9a55-0f3d2b9a1c77",
        ),
        ("device", id.as_str()),
        ("sender", CHROME_VAPID_KEY),
    ];
    let body = register3(api, creds, &form).await;
    body.strip_prefix("token=").expect(&body).to_owned()
}

/// `POST /v1/projects/{project}/installations`.
async fn create_installation(
    api: &Api,
    project: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response<Bytes> {
    let path = format!("/v1/projects/{project}/installations");
    api.post(&path, headers, body.to_owned()).await
}

/// `POST /v1/projects/{project}/registrations` with the API key and, when given, this
/// `x-goog-firebase-installations-auth`.
async fn create_registration(
    api: &Api,
    project: &str,
    fis_auth: Option<&str>,
    body: String,
) -> http::Response<Bytes> {
    let mut headers = vec![JSON, API_KEY];
    headers.extend(fis_auth.map(|auth| ("x-goog-firebase-installations-auth", auth)));
    let path = format!("/v1/projects/{project}/registrations");
    api.post(&path, &headers, body).await
}

#[tokio::test]
async fn checkin_new_device_and_recheck() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = creds_of(&check_in(&api, None).await);
    assert!(emu.device(creds.android_id).is_some());

    let again = creds_of(&check_in(&api, Some(creds)).await);
    assert_eq!(again, creds);
    assert_eq!(emu.device(creds.android_id).unwrap().checkins, 2);

    let dead = DeviceCredentials {
        security_token: creds.security_token ^ 1,
        ..creds
    };
    assert_eq!(check_in(&api, Some(dead)).await.status(), 401);

    let wrong_type = api.post("/checkin", &[JSON], "{}").await;
    assert_eq!(wrong_type.status(), 400);
    let garbage = api.post("/checkin", &[PROTOBUF], vec![0xff, 0xff]).await;
    assert_eq!(garbage.status(), 400);
}

/// The settings a check-in response carries, `(name, value)` as text.
fn settings_of(response: &http::Response<Bytes>) -> Vec<(String, String)> {
    let decoded = AndroidCheckinResponse::decode(response.body().as_ref()).unwrap();
    decoded
        .setting
        .iter()
        .map(|s| {
            (
                String::from_utf8_lossy(&s.name).into_owned(),
                String::from_utf8_lossy(&s.value).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn checkin_responses_carry_the_settings_set() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let first = check_in(&api, None).await;
    assert!(settings_of(&first).is_empty(), "none at the start");
    let creds = creds_of(&first);

    emu.set_checkin_interval(Some(std::time::Duration::from_secs(3 * 24 * 60 * 60)));
    let again = check_in(&api, Some(creds)).await;
    assert_eq!(
        settings_of(&again),
        [("checkin_interval".to_owned(), "259200".to_owned())]
    );
    let decoded = AndroidCheckinResponse::decode(again.body().as_ref()).unwrap();
    assert_eq!(decoded.settings_diff, Some(false));
    // A new device gets them too.
    assert_eq!(settings_of(&check_in(&api, None).await).len(), 1);

    // Any settings, readable or not, in order.
    emu.set_checkin_settings([("checkin_interval", "soon"), ("gcm_hostname", "h")]);
    assert_eq!(
        settings_of(&check_in(&api, Some(creds)).await),
        [
            ("checkin_interval".to_owned(), "soon".to_owned()),
            ("gcm_hostname".to_owned(), "h".to_owned())
        ]
    );
    emu.set_checkin_interval(None);
    assert!(settings_of(&check_in(&api, Some(creds)).await).is_empty());
}

#[tokio::test]
async fn register3_personas_and_errors() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let creds = creds_of(&check_in(&api, None).await);
    let id = creds.android_id.to_string();

    let token = register_web(&api, creds).await;
    let gcm = emu.gcm_registration(&token).unwrap();
    assert_eq!(gcm.persona, Persona::Web);
    assert_eq!(gcm.android_id, creds.android_id);
    // Registering again gives the same token.
    assert_eq!(register_web(&api, creds).await, token);

    let android = [
        ("app", "com.example.app"),
        ("X-subtype", "1234"),
        ("sender", "1234"),
        ("device", id.as_str()),
        ("X-scope", "*"),
    ];
    let body = register3(&api, creds, &android).await;
    let token = body.strip_prefix("token=").expect(&body);
    assert_eq!(
        emu.gcm_registration(token).unwrap().persona,
        Persona::Android
    );

    let wrong = DeviceCredentials {
        security_token: creds.security_token + 1,
        ..creds
    };
    assert_eq!(
        register3(&api, wrong, &android).await,
        "Error=AUTHENTICATION_FAILED"
    );
    let no_sender = [("app", "com.example.app"), ("device", id.as_str())];
    assert_eq!(
        register3(&api, creds, &no_sender).await,
        "Error=INVALID_SENDER"
    );
    let bad_vapid = [
        ("app", "org.chromium.linux"),
        ("X-subtype", "wp:x#y"),
        ("device", id.as_str()),
        ("sender", "not-a-key"),
    ];
    assert_eq!(
        register3(&api, creds, &bad_vapid).await,
        "Error=INVALID_SENDER"
    );
    let other_device = [("app", "a"), ("sender", "1"), ("device", "1")];
    assert_eq!(
        register3(&api, creds, &other_device).await,
        "Error=INVALID_PARAMETERS"
    );
    let unauthenticated = api.post("/c2dm/register3", &[FORM], "app=a").await;
    assert_eq!(body_text(&unauthenticated), "Error=AUTHENTICATION_FAILED");
}

#[tokio::test]
async fn injected_http_failures() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    emu.fail_checkins(2, 503);
    assert_eq!(check_in(&api, None).await.status(), 503);
    assert_eq!(check_in(&api, None).await.status(), 503);
    let creds = creds_of(&check_in(&api, None).await);

    emu.fail_register3(1, "PHONE_REGISTRATION_ERROR");
    let id = creds.android_id.to_string();
    let android = [("app", "a.b"), ("sender", "1"), ("device", id.as_str())];
    assert_eq!(
        register3(&api, creds, &android).await,
        "Error=PHONE_REGISTRATION_ERROR"
    );
    assert!(register3(&api, creds, &android).await.starts_with("token="));

    let create = || create_installation(&api, "p", &[JSON, API_KEY], r#"{"appId":"1:1:web:1"}"#);
    emu.fail_next(Endpoint::CreateInstallation, 1, HttpFailure::Status(429));
    let response = create().await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        body_json(&response)["error"]["status"],
        "RESOURCE_EXHAUSTED"
    );

    emu.fail_next(
        Endpoint::CreateInstallation,
        1,
        HttpFailure::RetryAfter {
            status: 503,
            seconds: 42,
        },
    );
    let response = create().await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "42");
    assert_eq!(body_json(&response)["error"]["status"], "UNAVAILABLE");

    emu.fail_next(Endpoint::Register3, 1, HttpFailure::Html404);
    let response = api.post("/c2dm/register3", &[FORM], "").await;
    assert_eq!(response.status(), 404);
    assert!(body_text(&response).contains("<html"));
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let response = api.request("GET", "/nowhere", &[], "").await;
    assert_eq!(response.status(), 404);
    assert!(body_text(&response).contains("Error 404"));
    let response = api.request("GET", "/checkin", &[], "").await;
    assert_eq!(response.status(), 405);
    let big = vec![b'x'; 100 * 1024];
    let response = api.post("/checkin", &[PROTOBUF], big).await;
    assert_eq!(response.status(), 413);
}

/// Check-in, web register3, FIS, FCM registration over HTTP; returns the FCM token.
async fn full_web_registration(
    api: &Api,
    keys: &ReceiverKeys,
) -> (DeviceCredentials, String, String) {
    let creds = creds_of(&check_in(api, None).await);
    let gcm_token = register_web(api, creds).await;

    let response = create_installation(
        api,
        "demo",
        &[JSON, API_KEY],
        r#"{"fid":"dIsVQ2QVRT-xeWoQW9b-Gu","appId":"1:1234:web:abc","authVersion":"FIS_v2","sdkVersion":"w:0.6.6"}"#,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let fis = body_json(&response);
    assert_eq!(fis["fid"], "dIsVQ2QVRT-xeWoQW9b-Gu");
    assert_eq!(
        fis["name"],
        "projects/demo/installations/dIsVQ2QVRT-xeWoQW9b-Gu"
    );
    assert_eq!(fis["authToken"]["expiresIn"], "604800s");
    let auth_token = fis["authToken"]["token"].as_str().unwrap().to_owned();

    let registration = serde_json::json!({
        "web": {
            "endpoint": format!("https://fcm.googleapis.com/fcm/send/{gcm_token}"),
            "p256dh": keys.public_key_base64(),
            "auth": keys.auth_secret_base64().as_str(),
        }
    });
    let response =
        create_registration(api, "demo", Some(&auth_token), registration.to_string()).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let answer = body_json(&response);
    let fcm_token = answer["token"].as_str().unwrap().to_owned();
    assert_eq!(
        answer["name"],
        format!("projects/demo/registrations/{fcm_token}")
    );
    assert_eq!(answer["web"]["p256dh"], keys.public_key_base64());
    (creds, gcm_token, fcm_token)
}

#[tokio::test]
async fn web_registration_and_encrypted_delivery() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let keys = ReceiverKeys::generate();
    let (creds, gcm_token, fcm_token) = full_web_registration(&api, &keys).await;
    assert_eq!(
        emu.fcm_registration(&fcm_token).unwrap().gcm_token,
        gcm_token
    );

    let mut mcs = McsClient::logged_in(&emu, creds).await;
    let send = serde_json::json!({
        "message": {
            "token": fcm_token,
            "data": {"key": "value"},
            "notification": {"title": "Hello", "body": "World"},
        }
    });
    let response = api
        .post(
            "/v1/projects/demo/messages:send",
            &[JSON, BEARER],
            send.to_string(),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let name = body_json(&response)["name"].as_str().unwrap().to_owned();

    let stanza = mcs.expect_data().await;
    assert_eq!(
        name,
        format!(
            "projects/demo/messages/{}",
            stanza.persistent_id.clone().unwrap()
        )
    );
    assert_eq!(stanza.category, "org.chromium.linux");
    assert!(app_data(&stanza, "crypto-key").unwrap().starts_with("dh="));
    assert!(
        app_data(&stanza, "encryption")
            .unwrap()
            .starts_with("salt=")
    );
    assert!(app_data(&stanza, "subtype").unwrap().starts_with("wp:"));
    let message = decrypted_json(&keys, &stanza);
    assert_eq!(message["data"]["key"], "value");
    assert_eq!(message["notification"]["title"], "Hello");
    assert_eq!(message["notification"]["body"], "World");
    assert_eq!(message["from"], "demo");
    assert_eq!(message["priority"], "normal");
    assert!(message["fcmMessageId"].is_string());

    // Sending to the GCM token of a web registration also encrypts.
    let sent = emu
        .send(&gcm_token, &SendMessage::new().data("via", "gcm"))
        .unwrap();
    assert!(sent.encrypted);
    let stanza = mcs.expect_data().await;
    assert!(matches!(decrypt(&keys, &stanza), Payload::Decrypted { .. }));
}

#[tokio::test]
async fn send_api_validation() {
    let emu = Emulator::start().await.unwrap();
    let api = Api::new(&emu);
    let (creds, token) = android_device(&emu);
    let path = "/v1/projects/demo/messages:send";
    let send = |body: serde_json::Value, auth: bool| {
        let api = &api;
        async move {
            let headers: &[(&str, &str)] = if auth { &[JSON, BEARER] } else { &[JSON] };
            api.post(path, headers, body.to_string()).await
        }
    };
    let ok = serde_json::json!({"message": {"token": token, "data": {"a": "b"}}});
    assert_eq!(send(ok.clone(), false).await.status(), 401);

    let response = send(serde_json::json!({"message": {"token": "nope"}}), true).await;
    assert_eq!(response.status(), 404);
    let error = body_json(&response);
    assert_eq!(error["error"]["status"], "NOT_FOUND");
    assert_eq!(error["error"]["details"][0]["errorCode"], "UNREGISTERED");

    for bad in [
        serde_json::json!({"message": {"data": {"a": "b"}}}),
        serde_json::json!({"message": {"token": token, "data": {"a": 1}}}),
        serde_json::json!({"message": {"token": token, "bogus": 1}}),
        serde_json::json!({"message": {"token": token, "data": {"google.x": "y"}}}),
        serde_json::json!({"message": {"topic": "not a topic"}}),
        serde_json::json!({"message": {"token": token, "data": {"big": "x".repeat(5000)}}}),
    ] {
        let response = send(bad.clone(), true).await;
        assert_eq!(response.status(), 400, "{bad}: {}", body_text(&response));
        assert_eq!(body_json(&response)["error"]["status"], "INVALID_ARGUMENT");
    }
    let response = api.post(path, &[JSON, BEARER], "{not json").await;
    assert_eq!(response.status(), 400);

    let dry = serde_json::json!({"message": {"token": token}, "validate_only": true});
    let response = send(dry, true).await;
    assert_eq!(response.status(), 200);
    assert!(emu.pending_ids(creds.android_id).is_empty());

    let high = serde_json::json!({"message": {"token": token, "data": {"a": "b"}, "android": {"priority": "high", "ttl": "60s", "collapse_key": "ck"}}});
    assert_eq!(send(high, true).await.status(), 200);
    let mut mcs = McsClient::logged_in(&emu, creds).await;
    let stanza = mcs.expect_data().await;
    assert_eq!(app_data(&stanza, "a"), Some("b"));
    assert_eq!(app_data(&stanza, "google.original_priority"), Some("high"));
    assert_eq!(stanza.ttl, Some(60));
    assert_eq!(stanza.token.as_deref(), Some("ck"));
    assert_eq!(stanza.from, "demo");
}

#[tokio::test]
async fn webpush_endpoint_passes_aes128gcm_through() {
    // Unsigned pushes, as this test sends them (VAPID: tests/webpush.rs).
    let (emu, api) = common::unsigned_webpush_emulator().await;
    let keys = ReceiverKeys::generate();
    let (creds, fcm) = common::subscribe_web(&emu, &keys);
    let body = aes128gcm::encrypt(
        &keys.subscription_keys(),
        b"{\"hello\":\"web push\"}",
        &EncryptOptions::new(),
    )
    .unwrap();
    let path = format!("/fcm/send/{}", fcm.gcm_token);
    let response = api
        .post(
            &path,
            &[
                ("content-encoding", "aes128gcm"),
                ("ttl", "60"),
                ("urgency", "high"),
                ("content-type", "application/octet-stream"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", body_text(&response));
    assert!(response.headers().contains_key("location"));

    let mut mcs = McsClient::logged_in(&emu, creds).await;
    let stanza = mcs.expect_data().await;
    assert_eq!(app_data(&stanza, "content-encoding"), Some("aes128gcm"));
    assert_eq!(stanza.raw_data.as_deref(), Some(&body[..]));
    assert_eq!(stanza.ttl, Some(60));
    assert_eq!(decrypted(&keys, &stanza), b"{\"hello\":\"web push\"}");

    // Errors: unknown token, bad encoding, bad header, bad TTL.
    let bad = [
        (
            "/fcm/send/unknown",
            ("content-encoding", "aes128gcm"),
            "60",
            404,
        ),
        (path.as_str(), ("content-encoding", "gzip"), "60", 400),
        (
            path.as_str(),
            ("content-encoding", "aes128gcm"),
            "soon",
            400,
        ),
    ];
    for (path, encoding, ttl, status) in bad {
        let response = api
            .post(path, &[encoding, ("ttl", ttl)], body.clone())
            .await;
        assert_eq!(response.status(), status, "{path} {encoding:?} {ttl}");
    }
    let response = api
        .post(&path, &[("content-encoding", "aes128gcm")], vec![1u8, 2, 3])
        .await;
    assert_eq!(response.status(), 400);
    let response = api
        .post(&path, &[("content-encoding", "aes128gcm")], vec![0u8; 5000])
        .await;
    assert_eq!(response.status(), 413);
}

/// `authTokens:generate` for `fid` in project `p`, with this `Authorization`.
async fn generate_auth_token(api: &Api, fid: &str, authorization: &str) -> http::Response<Bytes> {
    let path = format!("/v1/projects/p/installations/{fid}/authTokens:generate");
    let body = r#"{"installation":{"sdkVersion":"w:0.6.6","appId":"1:1:web:1"}}"#;
    let headers = [JSON, API_KEY, ("authorization", authorization)];
    api.post(&path, &headers, body).await
}

#[tokio::test]
async fn fis_refresh_and_registration_errors() {
    let (emu, api) = common::keyed_emulator().await;
    let create = |headers: Vec<(&'static str, &'static str)>, body: &'static str| {
        let api = &api;
        async move { create_installation(api, "p", &headers, body).await }
    };
    let body = r#"{"appId":"1:1:web:1","authVersion":"FIS_v2","sdkVersion":"w:0.6.6"}"#;
    assert_eq!(create(vec![JSON], body).await.status(), 403);
    assert_eq!(
        create(vec![JSON, ("x-goog-api-key", "wrong")], body)
            .await
            .status(),
        400
    );
    assert_eq!(create(vec![JSON, API_KEY], "[1]").await.status(), 400);
    assert_eq!(
        create(vec![JSON, API_KEY], r#"{"appId":"a","fid":"bad"}"#)
            .await
            .status(),
        400
    );
    assert_eq!(create(vec![JSON, API_KEY], "{}").await.status(), 400);
    let response = create(vec![JSON, API_KEY], body).await;
    assert_eq!(response.status(), 200);
    let fis = body_json(&response);
    let fid = fis["fid"].as_str().unwrap().to_owned();
    assert!(matches!(fid.as_bytes()[0], b'c'..=b'f'));
    let refresh = fis["refreshToken"].as_str().unwrap().to_owned();

    let auth = format!("FIS_v2 {refresh}");
    let response = generate_auth_token(&api, &fid, &auth).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let token = body_json(&response);
    assert_eq!(token["expiresIn"], "604800s");
    let new_auth = token["token"].as_str().unwrap().to_owned();
    assert_eq!(emu.installation(&fid).unwrap().auth_tokens.len(), 2);

    let response = generate_auth_token(&api, &fid, "FIS_v2 wrong").await;
    assert_eq!(response.status(), 401);
    assert_eq!(body_json(&response)["error"]["status"], "UNAUTHENTICATED");
    let response = generate_auth_token(&api, "fAAAAAAAAAAAAAAAAAAAAA", &auth).await;
    assert_eq!(response.status(), 404);

    // Registrations: missing FIS auth, unknown endpoint token, bad keys.
    let keys = ReceiverKeys::generate();
    let registration = |endpoint: &str, p256dh: &str| {
        serde_json::json!({"web": {
            "endpoint": endpoint,
            "p256dh": p256dh,
            "auth": keys.auth_secret_base64().as_str(),
        }})
        .to_string()
    };
    let p256dh = keys.public_key_base64();
    let fis_auth = Some(new_auth.as_str());
    let body = registration("https://x/fcm/send/t", &p256dh);
    let response = create_registration(&api, "p", None, body).await;
    assert_eq!(response.status(), 401);
    let body = registration("https://x/fcm/send/unknown", &p256dh);
    let response = create_registration(&api, "p", fis_auth, body).await;
    assert_eq!(response.status(), 400);

    let (_, gcm_token) = android_device(&emu);
    let endpoint = emu.webpush_endpoint(&gcm_token).to_string();
    let body = registration(&endpoint, "AAAA");
    let response = create_registration(&api, "p", fis_auth, body).await;
    assert_eq!(response.status(), 400);
    // The `FIS ` prefix is accepted too.
    let prefixed = format!("FIS {new_auth}");
    let body = registration(&endpoint, &p256dh);
    let response = create_registration(&api, "p", Some(&prefixed), body).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let token = body_json(&response)["token"].as_str().unwrap().to_owned();

    // Delete, then sending to it is UNREGISTERED.
    let path = format!("/v1/projects/p/registrations/{token}");
    let headers = [
        API_KEY,
        ("x-goog-firebase-installations-auth", new_auth.as_str()),
    ];
    let delete = || api.request("DELETE", &path, &headers, "");
    assert_eq!(delete().await.status(), 200);
    let response = delete().await;
    assert_eq!(response.status(), 404);
    assert!(emu.fcm_registration(&token).is_none());
    assert!(matches!(
        emu.send(
            &token,
            &SendMessage::new().notification(Notification::new("a", "b"))
        ),
        Err(fcm_emulator::Error::UnknownToken(_))
    ));
}

#[tokio::test]
async fn fis_installation_delete() {
    let (emu, api) = common::keyed_emulator().await;
    let body = r#"{"appId":"1:1:web:1","authVersion":"FIS_v2","sdkVersion":"w:0.6.6"}"#;
    let response = create_installation(&api, "p", &[JSON, API_KEY], body).await;
    assert_eq!(response.status(), 200);
    let fis = body_json(&response);
    let fid = fis["fid"].as_str().unwrap().to_owned();
    let refresh = fis["refreshToken"].as_str().unwrap().to_owned();
    let auth = fis["authToken"]["token"].as_str().unwrap().to_owned();

    // An FCM registration made by the installation goes with it.
    let keys = ReceiverKeys::generate();
    let (_, gcm_token) = android_device(&emu);
    let registration = serde_json::json!({"web": {
        "endpoint": emu.webpush_endpoint(&gcm_token).to_string(),
        "p256dh": keys.public_key_base64(),
        "auth": keys.auth_secret_base64().as_str(),
    }})
    .to_string();
    let response = create_registration(&api, "p", Some(&auth), registration).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    let token = body_json(&response)["token"].as_str().unwrap().to_owned();

    let path = format!("/v1/projects/p/installations/{fid}");
    let authorization = format!("FIS_v2 {refresh}");
    let delete = |headers: Vec<(&'static str, String)>, path: String| {
        let api = &api;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            api.request("DELETE", &path, &headers, "").await
        }
    };
    let key = || ("x-goog-api-key", "AIzaTestKey".to_owned());
    // No API key, no or a wrong refresh token, another project: refused, nothing deleted.
    let response = delete(vec![("authorization", authorization.clone())], path.clone()).await;
    assert_eq!(response.status(), 403);
    assert_eq!(delete(vec![key()], path.clone()).await.status(), 401);
    let wrong = ("authorization", "FIS_v2 wrong".to_owned());
    assert_eq!(delete(vec![key(), wrong], path.clone()).await.status(), 401);
    let other = format!("/v1/projects/q/installations/{fid}");
    let good = || ("authorization", authorization.clone());
    assert_eq!(delete(vec![key(), good()], other).await.status(), 404);
    assert!(emu.installation(&fid).is_some());

    let response = delete(vec![key(), good()], path.clone()).await;
    assert_eq!(response.status(), 200, "{}", body_text(&response));
    assert!(emu.installation(&fid).is_none());
    assert!(emu.fcm_registration(&token).is_none());
    // Its auth token is no longer valid; a second delete is 404.
    let response = generate_auth_token(&api, &fid, &authorization).await;
    assert_eq!(response.status(), 404);
    assert_eq!(delete(vec![key(), good()], path).await.status(), 404);
}

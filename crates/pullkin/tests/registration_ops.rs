//! What an Android app does with its registration (docs/protocol.md §7.1), against
//! wiremock fakes of Google's endpoints, request bodies checked field by field: topics,
//! unregistering, several senders, identity resets and token syncs, the parameter checks
//! before any request, and imported credentials completed and renewed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use fcm_http::Endpoints;
use gcm_checkin::proto::AndroidCheckinRequest;
use prost::Message;
use pullkin::{
    AppCredentials, CredentialsError, ImportConfig, ParamsError, Persona, PullkinCore,
    PullkinError, RegisterParams, TopicError,
};
use pullkin_test_support::Sent;
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{checkin_answer, wiremock_core as core};

const PROJECT: &str = "my-project";
const API_KEY: &str = "AIzaSyFakeKeyForTests";
const SENDER: &str = "123456789012";
const APP_ID: &str = "1:123456789012:android:0a1b2c3d4e5f";
const PACKAGE: &str = "com.example.app";
const FID: &str = "cAAAAAAAAAAAAAAAAAAAAA";
const REGISTER3: &str = "/c2dm/register3";
const INSTALLATIONS: &str = "/v1/projects/my-project/installations";
const REGISTRATIONS: &str = "/v1/projects/my-project/registrations";

fn text(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string(body)
}

/// A Google that registers device (`android_id`, `security_token`) with GCM token `gcm`,
/// installation `fid` and FCM token `fcm`, and answers topic requests and deletes.
async fn mount_google(server: &MockServer, android_id: u64, gcm: &str, fid: &str, fcm: &str) {
    Mock::given(method("POST"))
        .and(path("/checkin"))
        .respond_with(checkin_answer(android_id, android_id + 1))
        .mount(server)
        .await;
    // Topic requests are answered with a token, deletes with `deleted=`.
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .and(body_string_contains("delete=1"))
        .respond_with(text(&format!("deleted={PACKAGE}")))
        .with_priority(2)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .respond_with(text(&format!("token={gcm}")))
        .with_priority(3)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(INSTALLATIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{SENDER}/installations/{fid}"),
            "fid": fid,
            "refreshToken": format!("refresh-{fid}"),
            "authToken": {"token": format!("auth-{fid}"), "expiresIn": "604800s"},
        })))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(REGISTRATIONS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/registrations/{fcm}"),
            "token": fcm,
        })))
        .mount(server)
        .await;
}

async fn google(android_id: u64, gcm: &str, fid: &str, fcm: &str) -> MockServer {
    let server = MockServer::start().await;
    mount_google(&server, android_id, gcm, fid, fcm).await;
    server
}

fn android_params() -> RegisterParams {
    RegisterParams::android(SENDER, APP_ID, API_KEY, PROJECT).app_name(PACKAGE)
}

/// A Google as [`google`] makes it, Android credentials registered there, and the
/// same Google mounted again after their requests were forgotten.
async fn registered_at(
    android_id: u64,
    gcm: &str,
    fid: &str,
    fcm: &str,
) -> (MockServer, AppCredentials) {
    let server = google(android_id, gcm, fid, fcm).await;
    let credentials = registered(&server).await;
    mount_google(&server, android_id, gcm, fid, fcm).await;
    (server, credentials)
}

/// Android credentials registered at `server`, whose requests are then forgotten.
async fn registered(server: &MockServer) -> AppCredentials {
    let credentials = core(server).register(&android_params()).await.unwrap();
    server.reset().await;
    credentials
}

async fn requests(server: &MockServer) -> Vec<Sent> {
    pullkin_test_support::received(server).await
}

async fn register3_forms(server: &MockServer) -> Vec<Vec<(String, String)>> {
    requests(server)
        .await
        .into_iter()
        .filter(|r| r.path == REGISTER3)
        .map(|r| r.form())
        .collect()
}

/// Subscribes `credentials` to each of `topics`, in order.
async fn subscribe(core: &PullkinCore, credentials: &mut AppCredentials, topics: &[&str]) {
    for topic in topics {
        core.subscribe_topic(credentials, topic).await.unwrap();
    }
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn subscribing_sends_the_topic_form_and_stores_the_topic() {
    let (server, mut credentials) = registered_at(7001, "gcm-7001", FID, "fcm-7001").await;

    let core = core(&server);
    subscribe(&core, &mut credentials, &["news", "/topics/weather.eu"]).await;

    let forms = register3_forms(&server).await;
    assert_eq!(forms.len(), 2);
    let expected: Vec<(String, String)> = [
        ("X-subtype", "gcm-7001"),
        ("sender", "gcm-7001"),
        ("X-app_ver", "1111"),
        ("X-osv", "25"),
        ("X-cliv", "fcm-23.1.1"),
        ("X-gmsv", "231114044"),
        ("X-appid", FID),
        ("X-scope", "/topics/news"),
        ("X-gcm.topic", "/topics/news"),
        (
            "X-Goog-Firebase-Installations-Auth",
            "auth-cAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("X-gmp_app_id", APP_ID),
        ("X-firebase-app-name-hash", "R1dAH9Ui7M-ynoznwBdw01tLxhI"),
        ("X-app_ver_name", "1.1.1.1"),
        ("app", PACKAGE),
        ("device", "7001"),
        ("app_ver", "1111"),
        ("gcm_ver", "231114044"),
        ("plat", "0"),
        ("cert", gcm_checkin::DEFAULT_ANDROID_CERT),
        ("target_ver", "28"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(forms[0], expected);
    assert_eq!(field(&forms[1], "X-gcm.topic"), Some("/topics/weather.eu"));
    let sent = &requests(&server).await[0];
    assert_eq!(sent.header("authorization"), Some("AidLogin 7001:7002"));

    // Stored, listed in order, and kept through JSON.
    assert_eq!(
        credentials.topics().collect::<Vec<_>>(),
        ["news", "weather.eu"]
    );
    let again = AppCredentials::from_json(&credentials.to_json().unwrap()).unwrap();
    assert_eq!(again.topics().collect::<Vec<_>>(), ["news", "weather.eu"]);
}

#[tokio::test]
async fn unsubscribing_adds_delete_and_forgets_the_topic() {
    let (server, mut credentials) = registered_at(7002, "gcm-7002", FID, "fcm-7002").await;
    let core = core(&server);
    subscribe(&core, &mut credentials, &["a", "b"]).await;

    core.unsubscribe_topic(&mut credentials, "a").await.unwrap();

    assert_eq!(credentials.topics().collect::<Vec<_>>(), ["b"]);
    let forms = register3_forms(&server).await;
    let mut subscription = forms[0].clone();
    subscription.push(("delete".into(), "1".into()));
    assert_eq!(forms[2], subscription);
}

#[tokio::test]
async fn too_many_subscribers_is_retried_with_backoff() {
    let server = google(7003, "gcm-7003", FID, "fcm-7003").await;
    let mut credentials = registered(&server).await;
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .respond_with(text("Error=TOO_MANY_SUBSCRIBERS"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_google(&server, 7003, "gcm-7003", FID, "fcm-7003").await;

    core(&server)
        .subscribe_topic(&mut credentials, "busy")
        .await
        .unwrap();

    let forms = register3_forms(&server).await;
    assert_eq!(forms.len(), 3);
    assert!(forms.iter().all(|f| f == &forms[0]));
    assert_eq!(credentials.topics().collect::<Vec<_>>(), ["busy"]);
}

#[tokio::test]
async fn bad_topic_requests_fail_before_any_request() {
    let server = google(7004, "gcm-7004", FID, "fcm-7004").await;
    let mut credentials = registered(&server).await;
    let core = core(&server);

    for bad in ["", "a/b", "sp ace", "/topics/", &"x".repeat(901)] {
        let error = core
            .subscribe_topic(&mut credentials, bad)
            .await
            .unwrap_err();
        assert!(
            matches!(error, PullkinError::Topic(TopicError::InvalidName { .. })),
            "{bad:?}: {error:?}"
        );
    }
    let mut web = credentials.clone();
    web.config.as_mut().unwrap().persona = Persona::Web { bundle: "b".into() };
    let error = core.subscribe_topic(&mut web, "news").await.unwrap_err();
    assert!(
        matches!(error, PullkinError::Topic(TopicError::WebPersona)),
        "{error:?}"
    );
    assert!(error.to_string().contains("server side"), "{error}");
    let mut bare = credentials.clone();
    bare.config = None;
    let error = core.unsubscribe_topic(&mut bare, "news").await.unwrap_err();
    assert!(matches!(error, PullkinError::Config(_)), "{error:?}");

    assert!(requests(&server).await.is_empty());
    assert_eq!(credentials.topics().count(), 0);
}

#[tokio::test]
async fn credentials_written_before_topics_existed_read_as_without_topics() {
    let server = google(7005, "gcm-7005", FID, "fcm-7005").await;
    let credentials = registered(&server).await;
    let json = credentials.to_json().unwrap();
    assert!(!json.contains("topics"), "{json}");
    let read = AppCredentials::from_json(&json).unwrap();
    assert_eq!(read.to_json().unwrap(), json);
    assert_eq!(read.config.unwrap().topics, BTreeSet::new());
}

#[tokio::test]
async fn rst_is_an_identity_reset_and_a_new_identity_gets_the_topics_again() {
    let (server, mut credentials) =
        registered_at(7006, "gcm-old", "cOLDAAAAAAAAAAAAAAAAAA", "fcm-old").await;
    let core = core(&server);
    subscribe(&core, &mut credentials, &["news", "sport"]).await;

    // Google resets the identity.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .respond_with(text("Error=RST"))
        .expect(1)
        .mount(&server)
        .await;
    let error = core
        .subscribe_topic(&mut credentials, "more")
        .await
        .unwrap_err();
    assert!(matches!(error, PullkinError::IdentityReset(_)), "{error:?}");
    assert!(error.to_string().contains("Error=RST"), "{error}");
    assert_eq!(error.retry_after(), None);

    server.reset().await;
    mount_google(
        &server,
        8006,
        "gcm-new",
        "cNEWAAAAAAAAAAAAAAAAAA",
        "fcm-new",
    )
    .await;
    let renewal = core.reset_identity(&credentials).await.unwrap();

    assert!(renewal.changed && renewal.identity_changed);
    assert!(renewal.topics_failed.is_empty());
    let renewed = &renewal.credentials;
    assert_eq!(renewed.gcm.android_id, 8006);
    assert_eq!(renewed.gcm.token.as_str(), "gcm-new");
    assert_eq!(renewed.fcm.token(), Some("fcm-new"));
    assert_eq!(renewed.topics().collect::<Vec<_>>(), ["news", "sport"]);
    // A fresh check-in (no stored id), then register3 for the token and one per topic,
    // each with the new token, the new device and the new installation.
    let sent = requests(&server).await;
    let checkin = AndroidCheckinRequest::decode(sent[0].body.as_slice()).unwrap();
    assert_eq!(checkin.id, None);
    let forms = register3_forms(&server).await;
    assert_eq!(forms.len(), 3);
    assert_eq!(field(&forms[0], "sender"), Some(SENDER));
    for (form, topic) in forms[1..].iter().zip(["/topics/news", "/topics/sport"]) {
        assert_eq!(field(form, "X-gcm.topic"), Some(topic));
        assert_eq!(field(form, "sender"), Some("gcm-new"));
        assert_eq!(field(form, "device"), Some("8006"));
        assert_eq!(field(form, "X-appid"), Some("cNEWAAAAAAAAAAAAAAAAAA"));
    }
}

#[tokio::test]
async fn a_topic_that_fails_after_a_reset_is_reported_not_fatal() {
    let (server, mut credentials) = registered_at(7007, "gcm-a", FID, "fcm-a").await;
    let core = core(&server);
    subscribe(&core, &mut credentials, &["ok", "refused"]).await;

    server.reset().await;
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .and(body_string_contains("refused"))
        .respond_with(text("Error=INVALID_PARAMETERS"))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_google(&server, 8007, "gcm-b", FID, "fcm-b").await;
    let renewal = core.reset_identity(&credentials).await.unwrap();

    assert_eq!(renewal.topics_failed, ["refused"]);
    assert_eq!(renewal.credentials.topics().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(renewal.credentials.gcm.android_id, 8007);
}

#[tokio::test]
async fn unregistering_deletes_the_token_the_fcm_registration_and_the_installation() {
    let (server, credentials) = registered_at(7008, "gcm-7008", FID, "fcm-7008").await;
    let registration = format!("{REGISTRATIONS}/fcm-7008");
    let installation = format!("{INSTALLATIONS}/{FID}");
    for route in [&registration, &installation] {
        Mock::given(method("DELETE"))
            .and(path(route.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
    }

    let outcome = core(&server).unregister(&credentials).await.unwrap();

    assert!(outcome.fcm_registration_deleted);
    assert!(outcome.installation_deleted);
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    let form = sent[0].form();
    for (name, value) in [
        ("sender", SENDER),
        ("X-subtype", SENDER),
        ("X-scope", "*"),
        ("delete", "1"),
        ("app", PACKAGE),
        ("device", "7008"),
    ] {
        assert_eq!(field(&form, name), Some(value), "{name} in {form:?}");
    }
    assert_eq!(field(&form, "X-gcm.topic"), None);
    assert_eq!(sent[1].method, "DELETE");
    assert_eq!(sent[1].path, registration);
    assert_eq!(
        sent[1].header("x-goog-firebase-installations-auth"),
        Some("auth-cAAAAAAAAAAAAAAAAAAAAA")
    );
    assert_eq!(sent[1].header("x-goog-api-key"), Some(API_KEY));
    assert_eq!(sent[2].method, "DELETE");
    assert_eq!(sent[2].path, installation);
    assert_eq!(
        sent[2].header("authorization"),
        Some("FIS_v2 refresh-cAAAAAAAAAAAAAAAAAAAAA")
    );
    assert_eq!(sent[2].header("x-android-package"), Some(PACKAGE));
}

#[tokio::test]
async fn unregistering_what_google_forgot_already_succeeds() {
    let (server, credentials) = registered_at(7009, "gcm-7009", FID, "fcm-7009").await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}
        })))
        .expect(2)
        .mount(&server)
        .await;

    let outcome = core(&server).unregister(&credentials).await.unwrap();
    assert!(!outcome.fcm_registration_deleted);
    assert!(!outcome.installation_deleted);

    // An RST answer to the delete is typed too.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .respond_with(text("Error=RST"))
        .mount(&server)
        .await;
    let error = core(&server).unregister(&credentials).await.unwrap_err();
    assert!(matches!(error, PullkinError::IdentityReset(_)), "{error:?}");
}

#[tokio::test]
async fn several_senders_share_one_registration_and_a_new_set_registers_again() {
    let server = google(7010, "gcm-two", FID, "fcm-two").await;
    let params = RegisterParams::android(
        "123456789012, 998877,123456789012",
        APP_ID,
        API_KEY,
        PROJECT,
    )
    .app_name(PACKAGE);
    assert_eq!(params.sender_ids(), ["123456789012", "998877"]);
    let core = core(&server);
    let mut credentials = core.register(&params).await.unwrap();
    let forms = register3_forms(&server).await;
    assert_eq!(field(&forms[0], "sender"), Some("123456789012,998877"));
    assert_eq!(field(&forms[0], "X-subtype"), Some("123456789012,998877"));
    let config = credentials.config.as_ref().unwrap();
    assert_eq!(config.sender_id, "123456789012,998877");
    assert_eq!(config.sender_ids(), ["123456789012", "998877"]);
    core.subscribe_topic(&mut credentials, "news")
        .await
        .unwrap();

    // The same set in another order: nothing to do.
    server.reset().await;
    let same = core
        .set_senders(&credentials, &["998877", "123456789012"])
        .await
        .unwrap();
    assert!(!same.changed);
    assert!(requests(&server).await.is_empty());

    // A third sender: register3 again on the same device, then FCM and the topic.
    mount_google(&server, 7010, "gcm-three", FID, "fcm-three").await;
    Mock::given(method("DELETE"))
        .and(path(format!("{REGISTRATIONS}/fcm-two")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let renewal = core
        .set_senders(&credentials, &["123456789012", "998877", "55555"])
        .await
        .unwrap();

    assert!(renewal.changed);
    assert!(!renewal.identity_changed);
    let renewed = &renewal.credentials;
    assert_eq!(renewed.gcm.android_id, credentials.gcm.android_id);
    assert_eq!(renewed.gcm.token.as_str(), "gcm-three");
    assert_eq!(renewed.fcm.token(), Some("fcm-three"));
    assert_eq!(renewed.keys, credentials.keys);
    assert_eq!(
        renewed.config.as_ref().unwrap().sender_id,
        "123456789012,998877,55555"
    );
    assert_eq!(renewed.topics().collect::<Vec<_>>(), ["news"]);
    let sent = requests(&server).await;
    assert!(
        sent.iter()
            .all(|r| r.path != "/checkin" && r.path != INSTALLATIONS)
    );
    let forms = register3_forms(&server).await;
    assert_eq!(forms.len(), 2);
    assert_eq!(
        field(&forms[0], "sender"),
        Some("123456789012,998877,55555")
    );
    assert_eq!(field(&forms[1], "sender"), Some("gcm-three"));
    assert_eq!(field(&forms[1], "X-gcm.topic"), Some("/topics/news"));

    // A set without the app's own project is refused before any request.
    server.reset().await;
    let error = core
        .set_senders(&credentials, &["55555"])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PullkinError::InvalidParams(ParamsError::SenderNotInAppId { .. })
        ),
        "{error:?}"
    );
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn sync_token_registers_again_and_reports_a_new_token() {
    let (server, credentials) = registered_at(7011, "gcm-same", FID, "fcm-same").await;
    let core = core(&server);

    let same = core.sync_token(&credentials).await.unwrap();
    assert!(!same.changed);
    assert_eq!(same.credentials, credentials);
    assert_eq!(register3_forms(&server).await.len(), 1);

    server.reset().await;
    mount_google(&server, 7011, "gcm-synced", FID, "fcm-synced").await;
    let synced = core.sync_token(&credentials).await.unwrap();
    assert!(synced.changed && !synced.identity_changed);
    assert_eq!(synced.credentials.gcm.token.as_str(), "gcm-synced");
    assert_eq!(synced.credentials.fcm.token(), Some("fcm-synced"));
    assert_eq!(
        synced.credentials.gcm.android_id,
        credentials.gcm.android_id
    );
}

#[tokio::test]
async fn malformed_parameters_fail_before_any_request() {
    let server = MockServer::start().await;
    let core = core(&server);
    type Expected = fn(&ParamsError) -> bool;
    let cases: [(RegisterParams, Expected); 4] = [
        (
            RegisterParams::android("123456789013", APP_ID, API_KEY, PROJECT),
            |e| matches!(e, ParamsError::SenderNotInAppId { .. }),
        ),
        (
            RegisterParams::android(SENDER, "123456789012:android", API_KEY, PROJECT),
            |e| matches!(e, ParamsError::AppId { .. }),
        ),
        (
            RegisterParams::android(SENDER, APP_ID, "AIza key", PROJECT),
            |e| matches!(e, ParamsError::ApiKey { .. }),
        ),
        (
            RegisterParams::web(SENDER, "1:123456789012:web:ab", API_KEY, "My Project"),
            |e| matches!(e, ParamsError::ProjectId { .. }),
        ),
    ];
    for (params, expected) in cases {
        for error in [
            core.register(&params).await.unwrap_err(),
            core.gcm_register(&params).await.unwrap_err(),
        ] {
            match &error {
                PullkinError::InvalidParams(e) => assert!(expected(e), "{e:?}"),
                other => panic!("{params:?}: {other:?}"),
            }
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message}");
        }
    }
    assert!(requests(&server).await.is_empty());
}

const FIREBASE_MESSAGING: &str = include_str!("fixtures/firebase_messaging_credentials.json");

#[tokio::test]
async fn an_imported_firebase_messaging_file_completed_by_the_user_renews() {
    // Without the missing config, none is made; with part of it, the rest is named.
    let bare = AppCredentials::import(FIREBASE_MESSAGING, &ImportConfig::new()).unwrap();
    assert!(bare.config.is_none());
    let error = AppCredentials::import(FIREBASE_MESSAGING, &ImportConfig::new().api_key(API_KEY))
        .unwrap_err();
    assert!(
        matches!(&error, CredentialsError::IncompleteConfig { missing } if missing == &["app id"]),
        "{error:?}"
    );
    assert!(error.to_string().contains("--app-id"), "{error}");

    let supplied = ImportConfig::new()
        .app_id("1:123456789012:web:0a1b2c3d")
        .api_key(API_KEY);
    let credentials = AppCredentials::import(FIREBASE_MESSAGING, &supplied).unwrap();
    let config = credentials.config.clone().unwrap();
    // What the file knew is kept: project, persona and bundle, VAPID key.
    assert_eq!(config.project_id, "my-web-project");
    assert_eq!(config.sender_id, "123456789012");
    assert_eq!(
        config.persona,
        Persona::Web {
            bundle: "receiver.push.com".into()
        }
    );
    assert_eq!(
        config.vapid_key.as_deref(),
        Some(gcm_checkin::CHROME_VAPID_KEY)
    );
    // The monotonic created_at: an auth token of unknown age, due at once.
    let installation = credentials.gcm.installation.as_ref().unwrap();
    assert_eq!(installation.auth_token.expires_at(), SystemTime::UNIX_EPOCH);

    // Renewal: the stored device checks in, the auth token is refreshed at once.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/checkin"))
        .respond_with(checkin_answer(
            4_987_654_321_098_765_432,
            8_765_432_109_876_543_210,
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/v1/projects/my-web-project/installations/dX3d1gR0Sl3oM2cYzAb9qR/authTokens:generate",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"token": "refreshed", "expiresIn": "604800s"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let renewal = core(&server).renew(&credentials).await.unwrap();
    assert!(renewal.changed && !renewal.identity_changed);
    let token = &renewal
        .credentials
        .gcm
        .installation
        .as_ref()
        .unwrap()
        .auth_token;
    assert_eq!(token.token(), "refreshed");
    assert!(!token.expires_within(SystemTime::now(), Duration::from_secs(6 * 24 * 3600)));
    let sent = requests(&server).await;
    let refresh: &Request = &server.received_requests().await.unwrap()[1];
    assert_eq!(
        sent[1].header("authorization"),
        Some("FIS_v2 3_AS3qfwFmFixtureRefreshToken")
    );
    assert_eq!(sent[1].header("x-goog-api-key"), Some(API_KEY));
    let body: serde_json::Value = serde_json::from_slice(&refresh.body).unwrap();
    assert_eq!(body["installation"]["appId"], "1:123456789012:web:0a1b2c3d");
}

#[tokio::test]
async fn a_unix_created_at_is_kept_and_an_android_import_is_completed() {
    let mut document: serde_json::Value = serde_json::from_str(FIREBASE_MESSAGING).unwrap();
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    document["fcm"]["installation"]["created_at"] = created.into();
    let credentials = AppCredentials::from_json(&document.to_string()).unwrap();
    let expires = credentials
        .gcm
        .installation
        .unwrap()
        .auth_token
        .expires_at_unix();
    assert_eq!(expires, created + 604_800);

    // The Python pullkin's files are of the Android persona.
    let pullkin = include_str!("fixtures/pullkin_credentials.json");
    let supplied = ImportConfig::new()
        .api_key(API_KEY)
        .project_id(PROJECT)
        .app_name(PACKAGE);
    let error = AppCredentials::import(pullkin, &supplied).unwrap_err();
    assert!(
        matches!(&error, CredentialsError::IncompleteConfig { missing } if missing == &["app id"]),
        "{error:?}"
    );
    let imported = AppCredentials::import(pullkin, &supplied.app_id(APP_ID)).unwrap();
    let config = imported.config.unwrap();
    assert_eq!(config.sender_id, SENDER);
    assert_eq!(
        config.persona,
        Persona::Android {
            package: PACKAGE.into(),
            cert: gcm_checkin::DEFAULT_ANDROID_CERT.into()
        }
    );
    let local = Endpoints::at("https://127.0.0.1:4443").unwrap();
    assert_eq!(RegisterParams::from_config(&config).check(&local), Ok(()));
}

#[test]
fn an_older_web_config_with_the_vapid_key_as_sender_registers_again() {
    let mut document: serde_json::Value = serde_json::from_str(FIREBASE_MESSAGING).unwrap();
    document["config"]["app_id"] = "1:123456789012:web:0a1b2c3d".into();
    document["config"]["api_key"] = API_KEY.into();
    let mut config = AppCredentials::from_json(&document.to_string())
        .unwrap()
        .config
        .unwrap();
    config.sender_id = gcm_checkin::CHROME_VAPID_KEY.to_owned();
    let params = RegisterParams::from_config(&config);
    assert_eq!(params.sender_id(), SENDER);
    let local = Endpoints::at("https://127.0.0.1:4443").unwrap();
    assert_eq!(params.check(&local), Ok(()));
}

#[tokio::test]
async fn unregistering_with_a_forgotten_installation_deletes_only_the_token() {
    let server = google(7012, "gcm-7012", FID, "fcm-7012").await;
    let mut credentials = registered(&server).await;
    let installation = credentials.gcm.installation.as_mut().unwrap();
    installation.auth_token = fcm_install::AuthToken::new("old", SystemTime::UNIX_EPOCH);
    mount_google(&server, 7012, "gcm-7012", FID, "fcm-7012").await;
    Mock::given(method("POST"))
        .and(path(format!("{INSTALLATIONS}/{FID}/authTokens:generate")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"code": 404, "message": "gone", "status": "NOT_FOUND"}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = core(&server).unregister(&credentials).await.unwrap();

    assert!(!outcome.fcm_registration_deleted && !outcome.installation_deleted);
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].path, REGISTER3);
    assert!(sent.iter().all(|r| r.method != "DELETE"));
}

#[tokio::test]
async fn rst_during_a_registration_is_an_identity_reset_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(REGISTER3))
        .respond_with(text("Error=RST"))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_google(&server, 7013, "never", FID, "never").await;
    let error = core(&server).register(&android_params()).await.unwrap_err();
    match &error {
        PullkinError::IdentityReset(source) => assert_eq!(
            source.register3_code(),
            Some(&gcm_checkin::Register3Code::InstanceIdReset)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(register3_forms(&server).await.len(), 1);
}

//! `PullkinCore` against wiremock fakes of Google's endpoints: the whole registration of
//! both personas, and the error paths — transient register3 errors retried, an FCM
//! refusal reported in the result, the Firebase auth token refreshed, a dead device
//! registered again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fcm_install::{AuthToken, FirebaseApp};
use gcm_checkin::proto::AndroidCheckinRequest;
use gcm_checkin::{CHROME_VAPID_KEY, CheckinCredentials, GcmToken};
use prost::Message;
use pullkin::{
    AppCredentials, FcmRegisterParams, Persona, PullkinCore, PullkinError, RegisterParams,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

use crate::support::{checkin_answer, wiremock_core as core};

const PROJECT: &str = "my-project";
const API_KEY: &str = "AIzaSyFakeKeyForTests";
const APP_ID: &str = "1:123456789012:android:0a1b2c3d4e5f";
const SENDER: &str = "123456789012";
const INSTALLATIONS: &str = "/v1/projects/my-project/installations";
const REGISTRATIONS: &str = "/v1/projects/my-project/registrations";
/// Longer than any margin a renewal refreshes the auth token within.
const SIX_DAYS: Duration = Duration::from_secs(6 * 24 * 3600);

/// Matches check-ins that carry stored credentials (`true`) or come from a new device.
struct Recheck(bool);

impl wiremock::Match for Recheck {
    fn matches(&self, request: &Request) -> bool {
        AndroidCheckinRequest::decode(request.body.as_slice())
            .is_ok_and(|r| r.id.is_some() == self.0)
    }
}

fn installation_answer(fid: &str, token: &str, expires_in: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "name": format!("projects/123456789012/installations/{fid}"),
        "fid": fid,
        "refreshToken": format!("refresh-{fid}"),
        "authToken": {"token": token, "expiresIn": expires_in},
    }))
}

fn registration_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "name": format!("projects/{PROJECT}/registrations/{token}"),
        "token": token,
        "web": {"endpoint": "https://fcm.googleapis.com/fcm/send/x", "p256dh": "p", "auth": "a"},
    }))
}

/// A Google that accepts everything: device (`android_id`, `security_token`), GCM token,
/// FID, FCM token.
async fn google(
    android_id: u64,
    security_token: u64,
    gcm: &str,
    fid: &str,
    fcm: &str,
) -> MockServer {
    let server = MockServer::start().await;
    mount_google(&server, android_id, security_token, gcm, fid, fcm).await;
    server
}

async fn mount_google(
    server: &MockServer,
    android_id: u64,
    security_token: u64,
    gcm: &str,
    fid: &str,
    fcm: &str,
) {
    Mock::given(method("POST"))
        .and(path("/checkin"))
        .respond_with(checkin_answer(android_id, security_token))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/c2dm/register3"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("token={gcm}")))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(INSTALLATIONS))
        .and(header("x-goog-api-key", API_KEY))
        .respond_with(installation_answer(fid, &format!("auth-{fid}"), "604800s"))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(REGISTRATIONS))
        .and(header("x-goog-api-key", API_KEY))
        .respond_with(registration_answer(fcm))
        .mount(server)
        .await;
}

/// A POST to `to` answered with `answer`, ahead of what [`mount_google`] mounts.
fn ahead(to: &str, answer: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path(to))
        .respond_with(answer)
        .with_priority(1)
}

/// A register3 refusal: HTTP 200, as register3 sends them, with `Error=<code>`.
fn register3_error(code: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_string(format!("Error={code}"))
}

/// A Google API error.
fn google_error(code: u16, message: &str, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message, "status": status}
    }))
}

/// A check-in with stored credentials (priority as [`mount_google`]'s), answered `answer`.
fn recheck_in(answer: ResponseTemplate) -> Mock {
    Mock::given(method("POST"))
        .and(path("/checkin"))
        .and(Recheck(true))
        .respond_with(answer)
}

/// Where the installation `fid` gets a new auth token.
fn generate_auth_token(fid: &str) -> String {
    format!("{INSTALLATIONS}/{fid}/authTokens:generate")
}

/// A new auth token, valid for a week.
fn auth_token_answer(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"token": token, "expiresIn": "604800s"}))
}

async fn requests_to(server: &MockServer, to: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == to)
        .collect()
}

fn form(request: &Request) -> HashMap<String, String> {
    fcm_http::url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn json_body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn android_params() -> RegisterParams {
    RegisterParams::android(SENDER, APP_ID, API_KEY, PROJECT).app_name("com.example.app")
}

#[tokio::test]
async fn android_registration_runs_the_whole_pipeline() {
    let server = google(
        4001,
        5001,
        "gcm-token-1",
        "cAAAAAAAAAAAAAAAAAAAAA",
        "fcm-token-1",
    )
    .await;
    let core = core(&server);

    let credentials = core.register(&android_params()).await.unwrap();

    assert_eq!(credentials.gcm.android_id, 4001);
    assert_eq!(credentials.gcm.security_token.expose(), 5001);
    assert_eq!(credentials.gcm.token.as_str(), "gcm-token-1");
    assert_eq!(credentials.gcm.app_id, APP_ID);
    let installation = credentials.gcm.installation.as_ref().unwrap();
    assert_eq!(installation.fid, "cAAAAAAAAAAAAAAAAAAAAA");
    assert!(credentials.fcm.is_success());
    assert_eq!(credentials.fcm.token(), Some("fcm-token-1"));
    // The keys are usable and are the ones FCM was given.
    let keys = credentials.keys.receiver_keys().unwrap();
    let config = credentials.config.as_ref().unwrap();
    assert_eq!(config.project_id, PROJECT);
    assert_eq!(config.api_key, API_KEY);
    assert_eq!(config.sender_id, SENDER);
    assert_eq!(
        config.persona,
        Persona::Android {
            package: "com.example.app".into(),
            cert: gcm_checkin::DEFAULT_ANDROID_CERT.into()
        }
    );

    // register3: the Android form, with the installation's fields.
    let register = requests_to(&server, "/c2dm/register3").await;
    assert_eq!(register.len(), 1);
    assert_eq!(
        register[0].headers.get("authorization").unwrap(),
        "AidLogin 4001:5001"
    );
    let fields = form(&register[0]);
    assert_eq!(fields["app"], "com.example.app");
    assert_eq!(fields["sender"], SENDER);
    assert_eq!(fields["X-subtype"], SENDER);
    assert_eq!(fields["X-gmp_app_id"], APP_ID);
    assert_eq!(fields["X-appid"], "cAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        fields["X-Goog-Firebase-Installations-Auth"],
        "auth-cAAAAAAAAAAAAAAAAAAAAA"
    );
    assert_eq!(fields["cert"], gcm_checkin::DEFAULT_ANDROID_CERT);

    // FIS: the Android persona's headers and body.
    let fis = requests_to(&server, INSTALLATIONS).await;
    assert_eq!(fis.len(), 1);
    assert_eq!(
        fis[0].headers.get("x-android-package").unwrap(),
        "com.example.app"
    );
    let body = json_body(&fis[0]);
    assert_eq!(body["appId"], APP_ID);
    assert_eq!(body["authVersion"], "FIS_v2");

    // FCM: the keys, the GCM token's endpoint, the FIS token; no VAPID key for Chrome's.
    let fcm = requests_to(&server, REGISTRATIONS).await;
    assert_eq!(fcm.len(), 1);
    assert_eq!(
        fcm[0]
            .headers
            .get("x-goog-firebase-installations-auth")
            .unwrap(),
        "auth-cAAAAAAAAAAAAAAAAAAAAA"
    );
    let web = &json_body(&fcm[0])["web"];
    assert_eq!(
        web["endpoint"],
        format!("{}/fcm/send/gcm-token-1", server.uri())
    );
    assert_eq!(web["p256dh"], keys.public_key_base64());
    assert_eq!(web["auth"], credentials.keys.secret.expose().as_str());
    assert!(web.get("applicationPubKey").is_none());
}

#[tokio::test]
async fn web_registration_uses_the_chrome_form_and_the_vapid_key() {
    let server = google(
        4002,
        5002,
        "gcm-token-2",
        "dAAAAAAAAAAAAAAAAAAAAA",
        "fcm-token-2",
    )
    .await;
    let core = core(&server);
    let vapid =
        "BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3qBUYIHBQFLXYp5Nksh8U";
    let params = RegisterParams::web(SENDER, "1:123456789012:web:ab", API_KEY, PROJECT)
        .bundle("com.example.web")
        .vapid_key(vapid);

    let credentials = core.register(&params).await.unwrap();

    assert_eq!(credentials.fcm.token(), Some("fcm-token-2"));
    assert!(
        credentials.gcm.app_id.starts_with("wp:com.example.web#"),
        "{}",
        credentials.gcm.app_id
    );
    let config = credentials.config.as_ref().unwrap();
    assert_eq!(
        config.persona,
        Persona::Web {
            bundle: "com.example.web".into()
        }
    );
    assert_eq!(config.vapid_key.as_deref(), Some(vapid));

    let register = requests_to(&server, "/c2dm/register3").await;
    let fields = form(&register[0]);
    assert_eq!(fields["app"], "org.chromium.linux");
    assert_eq!(fields["X-subtype"], credentials.gcm.app_id);
    assert_eq!(fields["sender"], vapid);
    assert_eq!(fields["device"], "4002");
    assert!(!fields.contains_key("X-appid"));

    let fis = requests_to(&server, INSTALLATIONS).await;
    assert!(fis[0].headers.get("x-android-package").is_none());
    assert_eq!(json_body(&fis[0])["sdkVersion"], "w:0.6.6");

    let fcm = requests_to(&server, REGISTRATIONS).await;
    assert_eq!(json_body(&fcm[0])["web"]["applicationPubKey"], vapid);
}

#[tokio::test]
async fn web_registration_defaults_to_chromes_vapid_key() {
    let server = google(
        4003,
        5003,
        "gcm-token-3",
        "eAAAAAAAAAAAAAAAAAAAAA",
        "fcm-token-3",
    )
    .await;
    let params = RegisterParams::web(SENDER, "1:123456789012:web:1", API_KEY, PROJECT);
    core(&server).register(&params).await.unwrap();
    let register = requests_to(&server, "/c2dm/register3").await;
    let fields = form(&register[0]);
    assert_eq!(fields["sender"], CHROME_VAPID_KEY);
    assert!(fields["X-subtype"].starts_with("wp:receiver.push.com#"));
    let fcm = requests_to(&server, REGISTRATIONS).await;
    assert!(json_body(&fcm[0])["web"].get("applicationPubKey").is_none());
}

#[tokio::test]
async fn phone_registration_error_is_retried_until_it_succeeds() {
    let server = google(
        4004,
        5004,
        "gcm-after-retries",
        "fAAAAAAAAAAAAAAAAAAAAA",
        "fcm-4",
    )
    .await;
    // Two transient refusals, then the token.
    ahead(
        "/c2dm/register3",
        register3_error("PHONE_REGISTRATION_ERROR"),
    )
    .up_to_n_times(2)
    .mount(&server)
    .await;

    let credentials = core(&server).register(&android_params()).await.unwrap();

    assert_eq!(credentials.gcm.token.as_str(), "gcm-after-retries");
    let register = requests_to(&server, "/c2dm/register3").await;
    assert_eq!(register.len(), 3);
    // The very same request each time.
    assert_eq!(register[0].body, register[2].body);
}

#[tokio::test]
async fn retries_are_bounded_by_the_params() {
    let server = google(4005, 5005, "never", "gAAAAAAAAAAAAAAAAAAAAA", "never").await;
    ahead(
        "/c2dm/register3",
        register3_error("PHONE_REGISTRATION_ERROR"),
    )
    .mount(&server)
    .await;

    let error = core(&server)
        .register(&android_params().retries(3))
        .await
        .unwrap_err();

    match &error {
        PullkinError::Checkin(e) => assert_eq!(
            e.register3_code().map(|c| c.as_str()),
            Some("PHONE_REGISTRATION_ERROR")
        ),
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(requests_to(&server, "/c2dm/register3").await.len(), 3);
}

#[tokio::test]
async fn a_permanent_register3_error_is_not_retried() {
    let server = google(4006, 5006, "never", "hAAAAAAAAAAAAAAAAAAAAA", "never").await;
    ahead("/c2dm/register3", register3_error("INVALID_SENDER"))
        .mount(&server)
        .await;

    let error = core(&server).register(&android_params()).await.unwrap_err();
    assert!(error.to_string().contains("INVALID_SENDER"), "{error}");
    assert_eq!(requests_to(&server, "/c2dm/register3").await.len(), 1);
}

#[tokio::test]
async fn an_fcm_refusal_is_reported_in_the_credentials() {
    let server = google(4007, 5007, "gcm-7", "iAAAAAAAAAAAAAAAAAAAAA", "never").await;
    let blocked = "Requests to this API are blocked.";
    ahead(
        REGISTRATIONS,
        google_error(403, blocked, "PERMISSION_DENIED"),
    )
    .mount(&server)
    .await;

    let credentials = core(&server).register(&android_params()).await.unwrap();

    assert!(!credentials.fcm.is_success());
    assert_eq!(credentials.fcm.token(), None);
    let error = credentials.fcm.error.as_deref().unwrap();
    assert!(error.contains("PERMISSION_DENIED"), "{error}");
    // Everything else is there: the device can still listen to GCM.
    assert_eq!(credentials.gcm.token.as_str(), "gcm-7");
    credentials.keys.receiver_keys().unwrap();
    assert!(credentials.config.is_some());
    // A 403 is not transient: one attempt.
    assert_eq!(requests_to(&server, REGISTRATIONS).await.len(), 1);
}

#[tokio::test]
async fn fcm_register_alone_reports_failure_in_its_result() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(REGISTRATIONS))
        .respond_with(google_error(400, "bad key", "INVALID_ARGUMENT"))
        .mount(&server)
        .await;
    let core = core(&server);
    let installation = fcm_install::Installation::new(
        "projects/1/installations/jAAAAAAAAAAAAAAAAAAAAA",
        "jAAAAAAAAAAAAAAAAAAAAA",
        fcm_install::RefreshToken::new("r"),
        AuthToken::new("a", SystemTime::now() + Duration::from_secs(3600)),
    );
    let (keys, fcm) = core
        .fcm_register(
            &GcmToken::new("gcm"),
            &installation,
            &FcmRegisterParams::new(API_KEY, PROJECT),
        )
        .await
        .unwrap();
    assert!(!fcm.is_success());
    assert!(fcm.error.unwrap().contains("INVALID_ARGUMENT"));
    keys.receiver_keys().unwrap();
}

#[tokio::test]
async fn gcm_register_skips_the_installation_without_a_project() {
    let server = google(4008, 5008, "gcm-8", "unused", "unused").await;
    let core = core(&server);

    let gcm = core
        .gcm_register(&RegisterParams::new(SENDER, APP_ID))
        .await
        .unwrap();

    assert_eq!(gcm.token.as_str(), "gcm-8");
    assert!(gcm.installation.is_none());
    assert!(requests_to(&server, INSTALLATIONS).await.is_empty());
    let fields = form(&requests_to(&server, "/c2dm/register3").await[0]);
    assert_eq!(fields["app"], "org.chromium.linux");
    assert!(!fields.contains_key("X-appid"));
    assert!(!fields.contains_key("X-Goog-Firebase-Installations-Auth"));

    // `register` needs the project: a configuration error, before any request.
    let before = server.received_requests().await.unwrap().len();
    let error = core
        .register(&RegisterParams::new(SENDER, APP_ID))
        .await
        .unwrap_err();
    assert!(matches!(error, PullkinError::Config(_)), "{error:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), before);
}

#[tokio::test]
async fn fcm_installation_makes_a_valid_fid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(INSTALLATIONS))
        .respond_with(|request: &Request| {
            // Echo the proposed FID, as Google does.
            let fid = json_body(request)["fid"].as_str().unwrap().to_owned();
            installation_answer(&fid, "tok", "604800s")
        })
        .mount(&server)
        .await;
    let app = FirebaseApp::android(
        PROJECT,
        API_KEY,
        APP_ID,
        "com.example.app",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    );
    let installation = core(&server).fcm_installation(&app).await.unwrap();
    assert!(
        fcm_install::is_valid_fid(&installation.fid),
        "{}",
        installation.fid
    );
    assert_eq!(installation.auth_token.token(), "tok");
}

#[tokio::test]
async fn gcm_check_in_sends_stored_credentials() {
    let server = MockServer::start().await;
    recheck_in(checkin_answer(77, 88))
        .expect(1)
        .mount(&server)
        .await;
    let answer = core(&server)
        .gcm_check_in(Some(&CheckinCredentials::new(77, 88)))
        .await
        .unwrap();
    assert_eq!(answer.credentials, CheckinCredentials::new(77, 88));
    let request = &server.received_requests().await.unwrap()[0];
    let sent = AndroidCheckinRequest::decode(request.body.as_slice()).unwrap();
    assert_eq!(sent.id, Some(77));
    assert_eq!(sent.security_token, Some(88));
}

/// Credentials as `register` makes them, against `server`, with the auth token expiring
/// at `expires_at`.
async fn registered(server: &MockServer, expires_at: SystemTime) -> AppCredentials {
    let mut credentials = core(server).register(&android_params()).await.unwrap();
    let installation = credentials.gcm.installation.as_mut().unwrap();
    installation.auth_token = AuthToken::new("old-auth-token", expires_at);
    server.reset().await;
    credentials
}

#[tokio::test]
async fn an_expiring_auth_token_is_refreshed() {
    let server = google(4009, 5009, "gcm-9", "kAAAAAAAAAAAAAAAAAAAAA", "fcm-9").await;
    let mut credentials = registered(&server, SystemTime::now() + Duration::from_secs(60)).await;
    let generate = generate_auth_token("kAAAAAAAAAAAAAAAAAAAAA");
    Mock::given(method("POST"))
        .and(path(generate.as_str()))
        .and(header(
            "authorization",
            "FIS_v2 refresh-kAAAAAAAAAAAAAAAAAAAAA",
        ))
        .and(header("x-goog-api-key", API_KEY))
        .respond_with(auth_token_answer("new-auth-token"))
        .expect(1)
        .mount(&server)
        .await;
    let core = core(&server);

    // Not due yet with a margin shorter than the remaining minute.
    assert!(
        !core
            .refresh_installation(&mut credentials, Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(requests_to(&server, &generate).await.is_empty());

    // Due within an hour: refreshed.
    assert!(
        core.refresh_installation(&mut credentials, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    let token = &credentials.gcm.installation.as_ref().unwrap().auth_token;
    assert_eq!(token.token(), "new-auth-token");
    assert!(!token.expires_within(SystemTime::now(), SIX_DAYS));
    let sent = requests_to(&server, &generate).await;
    assert_eq!(sent.len(), 1);
    let body = json_body(&sent[0]);
    assert_eq!(body["installation"]["appId"], APP_ID);
    assert_eq!(body["installation"]["sdkVersion"], "a:18.0.0");
    assert_eq!(
        sent[0].headers.get("x-android-package").unwrap(),
        "com.example.app"
    );
}

#[tokio::test]
async fn renew_refreshes_an_expired_auth_token_and_keeps_the_identity() {
    let server = google(4010, 5010, "gcm-10", "lAAAAAAAAAAAAAAAAAAAAA", "fcm-10").await;
    let credentials = registered(&server, SystemTime::now() - Duration::from_secs(1)).await;
    recheck_in(checkin_answer(4010, 5010))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(generate_auth_token("lAAAAAAAAAAAAAAAAAAAAA")))
        .respond_with(auth_token_answer("fresh"))
        .expect(1)
        .mount(&server)
        .await;

    let renewal = core(&server).renew(&credentials).await.unwrap();

    assert!(renewal.changed);
    assert!(!renewal.identity_changed);
    let renewed = &renewal.credentials;
    assert_eq!(renewed.gcm.android_id, 4010);
    assert_eq!(renewed.gcm.token, credentials.gcm.token);
    assert_eq!(renewed.fcm, credentials.fcm);
    assert_eq!(renewed.keys, credentials.keys);
    assert_eq!(
        renewed
            .gcm
            .installation
            .as_ref()
            .unwrap()
            .auth_token
            .token(),
        "fresh"
    );
}

#[tokio::test]
async fn renew_changes_nothing_when_all_is_well() {
    let server = google(4011, 5011, "gcm-11", "mAAAAAAAAAAAAAAAAAAAAA", "fcm-11").await;
    let credentials = registered(&server, SystemTime::now() + SIX_DAYS).await;
    recheck_in(checkin_answer(4011, 5011))
        .expect(1)
        .mount(&server)
        .await;

    let renewal = core(&server).renew(&credentials).await.unwrap();

    assert!(!renewal.changed);
    assert!(!renewal.identity_changed);
    assert_eq!(renewal.credentials, credentials);
    // Only the check-in went out.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_dead_device_is_registered_again() {
    let server = google(4012, 5012, "gcm-old", "nAAAAAAAAAAAAAAAAAAAAA", "fcm-old").await;
    let credentials = registered(&server, SystemTime::now() + SIX_DAYS).await;
    // The stored identity is refused; a new device gets new ids.
    recheck_in(ResponseTemplate::new(401).set_body_string("Unauthorized"))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_google(
        &server,
        9012,
        9912,
        "gcm-new",
        "oAAAAAAAAAAAAAAAAAAAAA",
        "fcm-new",
    )
    .await;

    let renewal = core(&server).renew(&credentials).await.unwrap();

    assert!(renewal.changed);
    assert!(renewal.identity_changed);
    let renewed = &renewal.credentials;
    assert_eq!(renewed.gcm.android_id, 9012);
    assert_eq!(renewed.gcm.security_token.expose(), 9912);
    assert_eq!(renewed.gcm.token.as_str(), "gcm-new");
    assert_eq!(renewed.fcm.token(), Some("fcm-new"));
    assert_ne!(renewed.keys, credentials.keys);
    assert_eq!(renewed.config, credentials.config);
    // One refused re-check-in, then a new device's check-in.
    let checkins = requests_to(&server, "/checkin").await;
    assert_eq!(checkins.len(), 2);
    assert!(Recheck(true).matches(&checkins[0]));
    assert!(Recheck(false).matches(&checkins[1]));
}

#[tokio::test]
async fn a_dead_device_without_config_is_an_error() {
    let server = google(4013, 5013, "gcm-13", "pAAAAAAAAAAAAAAAAAAAAA", "fcm-13").await;
    let mut credentials = registered(&server, SystemTime::now() + SIX_DAYS).await;
    credentials.config = None;
    Mock::given(method("POST"))
        .and(path("/checkin"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;

    let error = core(&server).renew(&credentials).await.unwrap_err();
    assert!(matches!(error, PullkinError::Config(_)), "{error:?}");
    // Nothing but the refused check-in.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_new_identity_from_the_check_in_is_registered() {
    let server = google(4014, 5014, "gcm-14", "qAAAAAAAAAAAAAAAAAAAAA", "fcm-14").await;
    let credentials = registered(&server, SystemTime::now() + SIX_DAYS).await;
    mount_google(
        &server,
        4114,
        5114,
        "gcm-14b",
        "rAAAAAAAAAAAAAAAAAAAAA",
        "fcm-14b",
    )
    .await;

    let renewal = core(&server).renew(&credentials).await.unwrap();

    assert!(renewal.identity_changed);
    assert_eq!(renewal.credentials.gcm.android_id, 4114);
    assert_eq!(renewal.credentials.gcm.token.as_str(), "gcm-14b");
    // No second check-in: register3 ran on the identity the check-in handed out.
    assert_eq!(requests_to(&server, "/checkin").await.len(), 1);
    let register = requests_to(&server, "/c2dm/register3").await;
    assert_eq!(
        register[0].headers.get("authorization").unwrap(),
        "AidLogin 4114:5114"
    );
}

#[tokio::test]
async fn renew_retries_a_failed_fcm_registration_with_the_same_keys() {
    let server = google(4015, 5015, "gcm-15", "sAAAAAAAAAAAAAAAAAAAAA", "fcm-15").await;
    ahead(
        REGISTRATIONS,
        google_error(403, "blocked", "PERMISSION_DENIED"),
    )
    .up_to_n_times(1)
    .mount(&server)
    .await;
    let core = core(&server);
    let credentials = core.register(&android_params()).await.unwrap();
    assert!(!credentials.fcm.is_success());

    let renewal = core.renew(&credentials).await.unwrap();

    assert!(renewal.changed);
    assert!(!renewal.identity_changed);
    assert_eq!(renewal.credentials.fcm.token(), Some("fcm-15"));
    assert_eq!(renewal.credentials.keys, credentials.keys);
    let fcm = requests_to(&server, REGISTRATIONS).await;
    assert_eq!(
        json_body(&fcm[1])["web"]["p256dh"],
        credentials.keys.public.as_str()
    );
}

#[tokio::test]
async fn a_lost_installation_is_replaced() {
    let server = google(4016, 5016, "gcm-16", "tAAAAAAAAAAAAAAAAAAAAA", "fcm-16").await;
    let credentials = registered(&server, SystemTime::now() - Duration::from_secs(1)).await;
    let generate = generate_auth_token("tAAAAAAAAAAAAAAAAAAAAA");
    ahead(&generate, google_error(404, "not found", "NOT_FOUND"))
        .mount(&server)
        .await;
    mount_google(
        &server,
        4016,
        5016,
        "gcm-16",
        "uAAAAAAAAAAAAAAAAAAAAA",
        "fcm-16b",
    )
    .await;

    let renewal = core(&server).renew(&credentials).await.unwrap();

    assert!(renewal.changed);
    assert!(!renewal.identity_changed);
    let renewed = &renewal.credentials;
    assert_eq!(
        renewed.gcm.installation.as_ref().unwrap().fid,
        "uAAAAAAAAAAAAAAAAAAAAA"
    );
    assert_eq!(renewed.fcm.token(), Some("fcm-16b"));
    assert_eq!(renewed.keys, credentials.keys);
    assert_eq!(renewed.gcm.token, credentials.gcm.token);
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let params = RegisterParams::android(SENDER, APP_ID, "AIzaSecretKey", PROJECT);
    let shown = format!("{params:?}");
    assert!(!shown.contains("AIzaSecretKey"), "{shown}");
    let shown = format!("{:?}", FcmRegisterParams::new("AIzaSecretKey", PROJECT));
    assert!(!shown.contains("AIzaSecretKey"), "{shown}");
    let core = PullkinCore::new().unwrap();
    assert!(format!("{core:?}").contains("PullkinCore"));
}

#[test]
fn builder_rejects_a_pem_without_certificates() {
    let error = PullkinCore::builder()
        .add_root_certificates_pem(b"not a certificate")
        .build()
        .unwrap_err();
    assert!(matches!(error, PullkinError::Http(_)), "{error:?}");
}

/// Compile-time check: the futures can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(core: &PullkinCore, credentials: &mut AppCredentials, params: &RegisterParams) {
    fn send<T: Send>(_: T) {}
    send(core.register(params));
    send(core.gcm_register(params));
    send(core.gcm_check_in(None));
    send(core.renew(credentials));
    send(core.refresh_installation(credentials, Duration::ZERO));
    fn sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    sync(core);
}

//! Firebase Installations against a wiremock fake: create and refresh, both personas,
//! every error shape.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use fcm_http::RetryPolicy;
use fcm_install::{
    Error, FirebaseApp, Installation, RefreshToken, create_installation, delete_installation,
    generate_fid, is_valid_fid, refresh_auth_token,
};
use pullkin_test_support::{
    Sent, client, endpoints, failing_then_answering, fast_retry, last_request, server_answering,
};
use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

const FID: &str = "cAAAAAAAAAAAAAAAAAAAAA";
const INSTALLATIONS: &str = "/v1/projects/my-project/installations";

fn web_app() -> FirebaseApp {
    FirebaseApp::web("my-project", "AIzaWebKey", "1:1234:web:abcd")
}

fn android_app() -> FirebaseApp {
    FirebaseApp::android(
        "my-project",
        "AIzaAndroidKey",
        "1:1234:android:ef01",
        "com.example.app",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    )
}

fn created() -> Value {
    json!({
        "name": format!("projects/1234/installations/{FID}"),
        "fid": FID,
        "refreshToken": "2_refresh",
        "authToken": {"token": "eyJauth", "expiresIn": "604800s"}
    })
}

/// A server whose one route, `POST route`, answers `template`, expecting `calls` calls.
async fn server_at(route: &str, template: ResponseTemplate, calls: u64) -> MockServer {
    server_answering("POST", route, template, calls).await
}

/// The web app's installation of [`FID`] at `server`.
async fn create_web(server: &MockServer, retry: &RetryPolicy) -> Result<Installation, Error> {
    create_installation(&client(), &endpoints(server), &web_app(), FID, retry).await
}

/// [`FID`]'s auth-token refresh at `server`, with the refresh token `refresh`.
async fn refresh(
    server: &MockServer,
    app: &FirebaseApp,
    refresh: &str,
) -> Result<fcm_install::AuthToken, Error> {
    refresh_auth_token(
        &client(),
        &endpoints(server),
        app,
        FID,
        &RefreshToken::new(refresh),
        &fast_retry(3),
    )
    .await
}

/// The last request `server` received, which must be a `POST`.
async fn sent(server: &MockServer) -> Sent {
    let sent = last_request(server).await;
    assert_eq!(sent.method, "POST");
    sent
}

#[tokio::test]
async fn create_web_installation() {
    let server = server_at(
        INSTALLATIONS,
        ResponseTemplate::new(200).set_body_json(created()),
        1,
    )
    .await;
    let before = SystemTime::now();
    let installation = create_web(&server, &fast_retry(3)).await.unwrap();
    let after = SystemTime::now();
    assert_eq!(
        installation.name,
        format!("projects/1234/installations/{FID}")
    );
    assert_eq!(installation.fid, FID);
    assert_eq!(installation.refresh_token.as_str(), "2_refresh");
    assert_eq!(installation.auth_token.token(), "eyJauth");
    let week = Duration::from_secs(604_800);
    let expiry = installation.auth_token.expires_at();
    assert!(expiry >= before + week && expiry <= after + week);

    let sent = sent(&server).await;
    assert_eq!(sent.path, INSTALLATIONS);
    assert_eq!(
        sent.json(),
        json!({"fid": FID, "appId": "1:1234:web:abcd", "authVersion": "FIS_v2", "sdkVersion": "w:0.6.6"})
    );
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaWebKey"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.header("x-firebase-client"),
        Some(fcm_install::DEFAULT_FIREBASE_CLIENT)
    );
    assert_eq!(sent.header("x-android-package"), None);
    assert_eq!(sent.header("x-android-cert"), None);
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn create_android_installation_with_a_generated_fid() {
    let fid = generate_fid();
    assert!(is_valid_fid(&fid));
    // The server may assign another FID, and may leave out the name.
    let answer = json!({
        "fid": "dBBBBBBBBBBBBBBBBBBBBB",
        "refreshToken": "2_r",
        "authToken": {"token": "t", "expiresIn": "3600.5s"}
    });
    let server = server_at(
        INSTALLATIONS,
        ResponseTemplate::new(201).set_body_json(answer),
        1,
    )
    .await;
    let installation = create_installation(
        &client(),
        &endpoints(&server),
        &android_app(),
        &fid,
        &fast_retry(1),
    )
    .await
    .unwrap();
    assert_eq!(installation.fid, "dBBBBBBBBBBBBBBBBBBBBB");
    assert_eq!(installation.name, "");

    let sent = sent(&server).await;
    assert_eq!(
        sent.json(),
        json!({"fid": fid, "appId": "1:1234:android:ef01", "authVersion": "FIS_v2", "sdkVersion": "a:18.0.0"})
    );
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaAndroidKey"));
    assert_eq!(sent.header("x-android-package"), Some("com.example.app"));
    assert_eq!(
        sent.header("x-android-cert"),
        Some("da39a3ee5e6b4b0d3255bfef95601890afd80709")
    );
    assert_eq!(sent.header("x-firebase-client"), None);
}

#[tokio::test]
async fn refresh_auth_token_request_and_answer() {
    let route = format!("{INSTALLATIONS}/{FID}/authTokens:generate");
    let server = server_at(
        &route,
        ResponseTemplate::new(200)
            .set_body_json(json!({"token": "eyJnew", "expiresIn": "604800s"})),
        1,
    )
    .await;
    let before = SystemTime::now();
    let token = refresh(&server, &android_app(), "2_refresh").await.unwrap();
    assert_eq!(token.token(), "eyJnew");
    assert!(token.expires_at() >= before + Duration::from_secs(604_800));
    assert!(!token.expires_within(SystemTime::now(), Duration::from_secs(3600)));
    assert!(token.expires_within(SystemTime::now(), Duration::from_secs(8 * 24 * 3600)));

    let sent = sent(&server).await;
    assert_eq!(sent.path, route);
    assert_eq!(sent.header("authorization"), Some("FIS_v2 2_refresh"));
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaAndroidKey"));
    assert_eq!(sent.header("x-android-package"), Some("com.example.app"));
    assert_eq!(
        sent.json(),
        json!({"installation": {"sdkVersion": "a:18.0.0", "appId": "1:1234:android:ef01"}})
    );
}

fn google_error(code: u16, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": format!("{status} happened"), "status": status}
    }))
}

#[tokio::test]
async fn google_json_errors_are_typed_and_client_errors_not_retried() {
    for (code, status) in [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
    ] {
        let server = server_at(INSTALLATIONS, google_error(code, status), 1).await;
        let err = create_web(&server, &fast_retry(5)).await.unwrap_err();
        let api = err.api_error().unwrap_or_else(|| panic!("{err:?}"));
        assert_eq!(api.code, i64::from(code));
        assert_eq!(api.status, status);
        assert_eq!(api.message, format!("{status} happened"));
        assert_eq!(err.status().unwrap().as_u16(), code);
        assert!(!err.is_transient());
        assert_eq!(err.is_unauthenticated(), code == 401);
    }
}

/// A server that answers the first `failures` calls with `failure`, then creates the
/// installation, and expects exactly that many calls.
async fn failing_then_creating(failure: ResponseTemplate, failures: u64) -> MockServer {
    let created = ResponseTemplate::new(200).set_body_json(created());
    failing_then_answering("POST", INSTALLATIONS, failure, failures, created).await
}

#[tokio::test]
async fn too_many_requests_and_server_errors_are_retried() {
    for template in [
        google_error(429, "RESOURCE_EXHAUSTED"),
        google_error(503, "UNAVAILABLE"),
        ResponseTemplate::new(500),
    ] {
        let server = failing_then_creating(template, 2).await;
        let installation = create_web(&server, &fast_retry(5)).await.unwrap();
        assert_eq!(installation.fid, FID);
    }
}

#[tokio::test]
async fn googles_retry_after_is_waited_for_and_reported() {
    let failure = google_error(429, "RESOURCE_EXHAUSTED").insert_header("retry-after", "1");
    let server = failing_then_creating(failure, 1).await;
    let started = std::time::Instant::now();
    // The policy's own backoff is a few ms; Google asked for 1 s.
    let installation = create_web(&server, &fast_retry(3)).await.unwrap();
    assert_eq!(installation.fid, FID);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A wait beyond the policy's limit ends the retries with Google's error and its wait.
    let busy = google_error(503, "UNAVAILABLE").insert_header("retry-after", "120");
    let server = server_at(INSTALLATIONS, busy, 1).await;
    let policy = fast_retry(5).with_max_retry_after(Duration::from_secs(60));
    let err = create_web(&server, &policy).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn non_json_error_bodies_are_status_errors() {
    let server = server_at(
        INSTALLATIONS,
        ResponseTemplate::new(404)
            .insert_header("content-type", "text/html")
            .set_body_string("<html>Not Found</html>"),
        1,
    )
    .await;
    let err = create_web(&server, &fast_retry(5)).await.unwrap_err();
    match err {
        Error::Http(fcm_http::Error::Status {
            status,
            body_excerpt,
            ..
        }) => {
            assert_eq!(status.as_u16(), 404);
            assert_eq!(body_excerpt, "<html>Not Found</html>");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_success_bodies_are_decode_errors() {
    let bodies: [&[u8]; 6] = [
        b"",
        b"not json",
        br#"{"fid": "x"}"#,
        br#"{"refreshToken": "r", "authToken": {"token": "t", "expiresIn": "soon"}}"#,
        br#"{"refreshToken": "r", "authToken": {"token": "", "expiresIn": "1s"}}"#,
        br#"{"refreshToken": "", "authToken": {"token": "t", "expiresIn": "1s"}}"#,
    ];
    for body in bodies {
        let server = server_at(
            INSTALLATIONS,
            ResponseTemplate::new(200).set_body_bytes(body.to_vec()),
            1,
        )
        .await;
        let err = create_web(&server, &fast_retry(5)).await.unwrap_err();
        assert!(
            matches!(&err, Error::Http(fcm_http::Error::Decode { .. })),
            "{:?}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    let route = format!("{INSTALLATIONS}/{FID}/authTokens:generate");
    let server = server_at(&route, ResponseTemplate::new(200).set_body_string("{}"), 1).await;
    let err = refresh(&server, &web_app(), "r").await.unwrap_err();
    assert!(
        matches!(&err, Error::Http(fcm_http::Error::Decode { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = server_at(
        INSTALLATIONS,
        ResponseTemplate::new(200)
            .set_body_json(created())
            .set_delay(Duration::from_secs(3)),
        1,
    )
    .await;
    let err = create_web(&server, &RetryPolicy::no_retry())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Http(e) if e.is_timeout()), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn delete_installation_request_and_answer() {
    let route = format!("{INSTALLATIONS}/{FID}");
    let server = server_answering("DELETE", &route, ResponseTemplate::new(200), 1).await;
    delete_installation(
        &client(),
        &endpoints(&server),
        &android_app(),
        FID,
        &RefreshToken::new("2_refresh"),
        &fast_retry(3),
    )
    .await
    .unwrap();
    let sent = last_request(&server).await;
    assert_eq!(sent.method, "DELETE");
    assert_eq!(sent.path, route);
    assert_eq!(sent.header("authorization"), Some("FIS_v2 2_refresh"));
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaAndroidKey"));
    assert_eq!(sent.header("x-android-package"), Some("com.example.app"));
    assert!(sent.body.is_empty());
}

#[tokio::test]
async fn a_gone_installation_is_a_typed_404_and_server_errors_are_retried() {
    let route = format!("{INSTALLATIONS}/{FID}");
    let server = server_answering("DELETE", &route, google_error(404, "NOT_FOUND"), 1).await;
    let delete = |server: &MockServer| {
        let endpoints = endpoints(server);
        async move {
            delete_installation(
                &client(),
                &endpoints,
                &web_app(),
                FID,
                &RefreshToken::new("r"),
                &fast_retry(3),
            )
            .await
        }
    };
    let error = delete(&server).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(error.api_error().unwrap().status, "NOT_FOUND");

    let server = failing_then_answering(
        "DELETE",
        &route,
        ResponseTemplate::new(503),
        2,
        ResponseTemplate::new(200),
    )
    .await;
    delete(&server).await.unwrap();
}

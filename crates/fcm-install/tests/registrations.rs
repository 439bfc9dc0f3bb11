//! FCM registrations against a wiremock fake: create and delete, every error shape.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use fcm_http::{Client, Endpoints, RetryPolicy};
use fcm_install::{
    Error, FirebaseApp, WebPushSubscription, create_registration, delete_registration,
    delete_registration_request, fcm_send_endpoint,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REGISTRATIONS: &str = "/v1/projects/my-project/registrations";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
}

fn app() -> FirebaseApp {
    FirebaseApp::web("my-project", "AIzaKey", "1:1234:web:abcd")
}

fn subscription(endpoints: &Endpoints) -> WebPushSubscription {
    WebPushSubscription::new(
        fcm_send_endpoint(endpoints, "gcm:TOKEN").unwrap(),
        "BPublicKey",
        "authSecret",
    )
}

async fn server_with(
    verb: &str,
    route: &str,
    template: ResponseTemplate,
    calls: u64,
) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb))
        .and(path(route))
        .respond_with(template)
        .expect(calls)
        .mount(&server)
        .await;
    server
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn create_registration_request_and_answer() {
    let server = server_with(
        "POST",
        REGISTRATIONS,
        ResponseTemplate::new(200).set_body_json(json!({
            "name": "projects/my-project/registrations/fcmTOKEN",
            "token": "fcmTOKEN",
            "web": {"endpoint": "x", "p256dh": "BPublicKey", "auth": "authSecret"}
        })),
        1,
    )
    .await;
    let endpoints = Endpoints::at(&server.uri()).unwrap();
    let registration = create_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        &subscription(&endpoints),
        &fast_retry(3),
    )
    .await
    .unwrap();
    assert_eq!(
        registration.name,
        "projects/my-project/registrations/fcmTOKEN"
    );
    assert_eq!(registration.token.as_str(), "fcmTOKEN");

    let requests = server.received_requests().await.unwrap();
    let r = &requests[0];
    assert_eq!(r.url.path(), REGISTRATIONS);
    assert_eq!(header(r, "x-goog-api-key"), Some("AIzaKey"));
    assert_eq!(
        header(r, "x-goog-firebase-installations-auth"),
        Some("eyJfis")
    );
    assert_eq!(header(r, "content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        json!({"web": {
            "auth": "authSecret",
            "endpoint": format!("{}/fcm/send/gcm:TOKEN", server.uri()),
            "p256dh": "BPublicKey"
        }})
    );
}

#[tokio::test]
async fn create_registration_with_a_vapid_key() {
    let server = server_with(
        "POST",
        REGISTRATIONS,
        ResponseTemplate::new(200)
            .set_body_json(json!({"name": "projects/p/registrations/t", "token": "t"})),
        1,
    )
    .await;
    let endpoints = Endpoints::at(&server.uri()).unwrap();
    let sub = subscription(&endpoints).with_application_pub_key("BVapid");
    create_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        &sub,
        &fast_retry(1),
    )
    .await
    .unwrap();
    let requests = server.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["web"]["applicationPubKey"], "BVapid");
}

#[tokio::test]
async fn google_errors_are_typed() {
    for (code, status, calls) in [
        (400, "INVALID_ARGUMENT", 1),
        (401, "UNAUTHENTICATED", 1),
        (403, "PERMISSION_DENIED", 1),
        (429, "RESOURCE_EXHAUSTED", 3),
        (503, "UNAVAILABLE", 3),
    ] {
        let server = server_with(
            "POST",
            REGISTRATIONS,
            ResponseTemplate::new(code).set_body_json(json!({
                "error": {"code": code, "message": "Request contains an invalid argument.", "status": status}
            })),
            calls,
        )
        .await;
        let endpoints = Endpoints::at(&server.uri()).unwrap();
        let err = create_registration(
            &client(),
            &endpoints,
            &app(),
            "eyJfis",
            &subscription(&endpoints),
            &fast_retry(3),
        )
        .await
        .unwrap_err();
        match &err {
            Error::Api {
                status: s, error, ..
            } => {
                assert_eq!(s.as_u16(), code);
                assert_eq!(error.code, i64::from(code));
                assert_eq!(error.status, status);
                assert_eq!(error.message, "Request contains an invalid argument.");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn malformed_and_empty_answers() {
    let bodies: [&[u8]; 4] = [
        b"",
        b"[1,2]",
        br#"{"name": "n"}"#,
        br#"{"name": "n", "token": ""}"#,
    ];
    for body in bodies {
        let server = server_with(
            "POST",
            REGISTRATIONS,
            ResponseTemplate::new(200).set_body_bytes(body.to_vec()),
            1,
        )
        .await;
        let endpoints = Endpoints::at(&server.uri()).unwrap();
        let err = create_registration(
            &client(),
            &endpoints,
            &app(),
            "eyJfis",
            &subscription(&endpoints),
            &fast_retry(3),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::Http(fcm_http::Error::Decode { .. })),
            "{err:?}"
        );
    }
    // An error status with a body that is not Google's error JSON.
    let server = server_with(
        "POST",
        REGISTRATIONS,
        ResponseTemplate::new(403).set_body_string("{\"error\": 7}"),
        1,
    )
    .await;
    let endpoints = Endpoints::at(&server.uri()).unwrap();
    let err = create_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        &subscription(&endpoints),
        &fast_retry(3),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Http(fcm_http::Error::Status { status, .. }) if status.as_u16() == 403),
        "{err:?}"
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = server_with(
        "POST",
        REGISTRATIONS,
        ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
        1,
    )
    .await;
    let endpoints = Endpoints::at(&server.uri()).unwrap();
    let err = create_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        &subscription(&endpoints),
        &RetryPolicy::no_retry(),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, Error::Http(e) if e.is_timeout()), "{err:?}");
}

#[tokio::test]
async fn delete_registration_request_and_answers() {
    let name = "projects/my-project/registrations/fcmTOKEN";
    let server = server_with(
        "DELETE",
        &format!("/v1/{name}"),
        ResponseTemplate::new(200).set_body_string("{}"),
        1,
    )
    .await;
    let endpoints = Endpoints::at(&server.uri()).unwrap();
    delete_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        name,
        &fast_retry(3),
    )
    .await
    .unwrap();
    let requests = server.received_requests().await.unwrap();
    let r = &requests[0];
    assert_eq!(r.method.as_str(), "DELETE");
    assert_eq!(header(r, "x-goog-api-key"), Some("AIzaKey"));
    assert_eq!(
        header(r, "x-goog-firebase-installations-auth"),
        Some("eyJfis")
    );
    assert!(r.body.is_empty());

    let server = server_with(
        "DELETE",
        &format!("/v1/{name}"),
        ResponseTemplate::new(404).set_body_json(
            json!({"error": {"code": 404, "message": "gone", "status": "NOT_FOUND"}}),
        ),
        1,
    )
    .await;
    let endpoints = Endpoints::at(&server.uri()).unwrap();
    let err = delete_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        name,
        &fast_retry(3),
    )
    .await
    .unwrap_err();
    assert_eq!(err.api_error().unwrap().status, "NOT_FOUND");
}

#[test]
fn delete_refuses_names_that_are_not_registrations() {
    let endpoints = Endpoints::default();
    for name in [
        "",
        "registrations/x",
        "projects/p",
        "projects/../registrations/x",
        "projects/p/registrations/",
    ] {
        let err = delete_registration_request(&endpoints, &app(), "t", name).unwrap_err();
        assert!(
            matches!(&err, Error::Http(fcm_http::Error::InvalidRequest(_))),
            "{name:?}: {err:?}"
        );
    }
    let ok = delete_registration_request(&endpoints, &app(), "t", "projects/p/registrations/a:b")
        .unwrap();
    assert_eq!(
        ok.uri(),
        "https://fcmregistrations.googleapis.com/v1/projects/p/registrations/a:b"
    );
}

#[test]
fn subscription_debug_hides_secrets() {
    let shown = format!("{:?}", subscription(&Endpoints::default()));
    assert!(
        !shown.contains("authSecret") && !shown.contains("TOKEN"),
        "{shown}"
    );
}

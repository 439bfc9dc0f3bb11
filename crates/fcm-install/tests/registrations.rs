//! FCM registrations against a wiremock fake: create and delete, every error shape.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use fcm_http::{Endpoints, RetryPolicy};
use fcm_install::{
    Error, FcmRegistration, FirebaseApp, WebPushSubscription, create_registration,
    delete_registration, delete_registration_request, fcm_send_endpoint,
};
use pullkin_test_support::{client, endpoints, fast_retry, last_request, server_answering};
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

const REGISTRATIONS: &str = "/v1/projects/my-project/registrations";
const NAME: &str = "projects/my-project/registrations/fcmTOKEN";

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

/// A server whose registrations route answers `POST`s with `template`, expecting `calls`.
async fn registrations_answering(template: ResponseTemplate, calls: u64) -> MockServer {
    server_answering("POST", REGISTRATIONS, template, calls).await
}

/// A server whose route of [`NAME`] answers `DELETE`s with `template`, once.
async fn deletion_answering(template: ResponseTemplate) -> MockServer {
    server_answering("DELETE", &format!("/v1/{NAME}"), template, 1).await
}

/// Registers `sub` at `server`, authorised by the FIS token `eyJfis`.
async fn create_with(
    server: &MockServer,
    sub: &WebPushSubscription,
    retry: &RetryPolicy,
) -> Result<FcmRegistration, Error> {
    create_registration(&client(), &endpoints(server), &app(), "eyJfis", sub, retry).await
}

/// Registers the subscription of `gcm:TOKEN` at `server` (see [`create_with`]).
async fn create(server: &MockServer, retry: &RetryPolicy) -> Result<FcmRegistration, Error> {
    create_with(server, &subscription(&endpoints(server)), retry).await
}

/// Deletes the registration [`NAME`] at `server`, authorised by the FIS token `eyJfis`.
async fn delete(server: &MockServer) -> Result<(), Error> {
    let endpoints = endpoints(server);
    delete_registration(
        &client(),
        &endpoints,
        &app(),
        "eyJfis",
        NAME,
        &fast_retry(3),
    )
    .await
}

#[tokio::test]
async fn create_registration_request_and_answer() {
    let server = registrations_answering(
        ResponseTemplate::new(200).set_body_json(json!({
            "name": NAME,
            "token": "fcmTOKEN",
            "web": {"endpoint": "x", "p256dh": "BPublicKey", "auth": "authSecret"}
        })),
        1,
    )
    .await;
    let registration = create(&server, &fast_retry(3)).await.unwrap();
    assert_eq!(registration.name, NAME);
    assert_eq!(registration.token.as_str(), "fcmTOKEN");

    let sent = last_request(&server).await;
    assert_eq!(sent.path, REGISTRATIONS);
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaKey"));
    assert_eq!(
        sent.header("x-goog-firebase-installations-auth"),
        Some("eyJfis")
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.json(),
        json!({"web": {
            "auth": "authSecret",
            "endpoint": format!("{}/fcm/send/gcm:TOKEN", server.uri()),
            "p256dh": "BPublicKey"
        }})
    );
}

#[tokio::test]
async fn create_registration_with_a_vapid_key() {
    let server = registrations_answering(
        ResponseTemplate::new(200)
            .set_body_json(json!({"name": "projects/p/registrations/t", "token": "t"})),
        1,
    )
    .await;
    let sub = subscription(&endpoints(&server)).with_application_pub_key("BVapid");
    create_with(&server, &sub, &fast_retry(1)).await.unwrap();
    let body = last_request(&server).await.json();
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
        let server = registrations_answering(
            ResponseTemplate::new(code).set_body_json(json!({
                "error": {"code": code, "message": "Request contains an invalid argument.", "status": status}
            })),
            calls,
        )
        .await;
        let err = create(&server, &fast_retry(3)).await.unwrap_err();
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
        let server =
            registrations_answering(ResponseTemplate::new(200).set_body_bytes(body.to_vec()), 1)
                .await;
        let err = create(&server, &fast_retry(3)).await.unwrap_err();
        assert!(
            matches!(&err, Error::Http(fcm_http::Error::Decode { .. })),
            "{err:?}"
        );
    }
    // An error status with a body that is not Google's error JSON.
    let server = registrations_answering(
        ResponseTemplate::new(403).set_body_string("{\"error\": 7}"),
        1,
    )
    .await;
    let err = create(&server, &fast_retry(3)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http(fcm_http::Error::Status { status, .. }) if status.as_u16() == 403),
        "{err:?}"
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = registrations_answering(
        ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
        1,
    )
    .await;
    let err = create(&server, &RetryPolicy::no_retry()).await.unwrap_err();
    assert!(matches!(&err, Error::Http(e) if e.is_timeout()), "{err:?}");
}

#[tokio::test]
async fn delete_registration_request_and_answers() {
    let server = deletion_answering(ResponseTemplate::new(200).set_body_string("{}")).await;
    delete(&server).await.unwrap();
    let sent = last_request(&server).await;
    assert_eq!(sent.method, "DELETE");
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaKey"));
    assert_eq!(
        sent.header("x-goog-firebase-installations-auth"),
        Some("eyJfis")
    );
    assert!(sent.body.is_empty());

    let server =
        deletion_answering(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"code": 404, "message": "gone", "status": "NOT_FOUND"}}),
        ))
        .await;
    let err = delete(&server).await.unwrap_err();
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

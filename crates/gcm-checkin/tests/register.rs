//! register3 against a wiremock fake: both personas' exact requests, tokens, every error
//! shape and the retry behaviour.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use fcm_http::RetryPolicy;
use gcm_checkin::{
    AndroidRegistration, CHROME_VAPID_KEY, CheckinCredentials, Error, GcmToken, InstallationAuth,
    Register3Code, RegisterRequest, WebRegistration, register, register_with, unregister,
};
use pullkin_test_support::{self as support, Sent, client, endpoints, fast_retry, last_request};
use wiremock::{MockServer, ResponseTemplate};

const REGISTER3: &str = "/c2dm/register3";
const DEVICE: CheckinCredentials = CheckinCredentials::new(4_242_424_242_424_242_424, 77_777);

fn web_request() -> RegisterRequest {
    RegisterRequest::web(DEVICE, WebRegistration::new())
}

/// A server whose register3 route answers `template`, expecting `expected_calls` calls.
async fn server_answering(template: ResponseTemplate, expected_calls: u64) -> MockServer {
    support::server_answering("POST", REGISTER3, template, expected_calls).await
}

/// A server whose register3 route answers the first two calls with `failure`, then
/// `success`, expecting exactly three calls.
async fn failing_twice_then(failure: ResponseTemplate, success: ResponseTemplate) -> MockServer {
    support::failing_then_answering("POST", REGISTER3, failure, 2, success).await
}

/// A server whose register3 route answers the first two calls with `Error=<code>`,
/// then `token=<token>`, expecting exactly three calls.
async fn erring_twice_then_token(code: &str, token: &str) -> MockServer {
    failing_twice_then(
        text(200, &format!("Error={code}")),
        text(200, &format!("token={token}")),
    )
    .await
}

fn text(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "text/plain; charset=utf-8")
        .set_body_string(body)
}

async fn run(
    server: &MockServer,
    request: &RegisterRequest,
    retry: &RetryPolicy,
) -> Result<String, Error> {
    register(&client(), &endpoints(server), request, retry)
        .await
        .map(|t| t.as_str().to_owned())
}

/// A web-persona registration at `server`, with up to `attempts` attempts.
async fn run_web(server: &MockServer, attempts: u32) -> Result<String, Error> {
    run(server, &web_request(), &fast_retry(attempts)).await
}

/// The error of a web-persona registration (up to 5 attempts) at a server answering
/// `template` once: the answer is not retried.
async fn web_error(template: ResponseTemplate) -> Error {
    let server = server_answering(template, 1).await;
    run_web(&server, 5).await.unwrap_err()
}

/// The last request the server saw, which must be a register3 form `POST` of [`DEVICE`].
async fn sent(server: &MockServer) -> Sent {
    let sent = last_request(server).await;
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, REGISTER3);
    assert_eq!(
        sent.header("authorization"),
        Some("AidLogin 4242424242424242424:77777")
    );
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    sent
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn web_persona_request_and_token() {
    let server = server_answering(text(200, "token=cXkAbC:APA91bH_x-y\n"), 1).await;
    let request = web_request();
    let token = run(&server, &request, &fast_retry(3)).await.unwrap();
    assert_eq!(token, "cXkAbC:APA91bH_x-y");

    let sent = sent(&server).await;
    let form = sent.form();
    let subtype = &form[1].1;
    assert_eq!(
        form,
        pairs(&[
            ("app", "org.chromium.linux"),
            ("X-subtype", subtype),
            ("device", "4242424242424242424"),
            ("sender", CHROME_VAPID_KEY),
        ])
    );
    let uuid = subtype.strip_prefix("wp:receiver.push.com#").unwrap();
    assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
    assert_eq!(sent.header("app"), None);
    assert_eq!(sent.header("gcm_ver"), None);
}

#[tokio::test]
async fn web_persona_with_own_bundle_and_vapid_key() {
    let server = server_answering(text(200, "token=t"), 1).await;
    let web = WebRegistration::with_bundle("my.bundle").with_sender("BMyVapidKey");
    let request = RegisterRequest::web(DEVICE, web.clone());
    run(&server, &request, &fast_retry(1)).await.unwrap();
    let form = sent(&server).await.form();
    assert_eq!(form[1], ("X-subtype".into(), web.subtype.clone()));
    assert!(web.subtype.starts_with("wp:my.bundle#"));
    assert_eq!(form[3], ("sender".into(), "BMyVapidKey".into()));
}

#[tokio::test]
async fn android_persona_sends_every_field_and_header() {
    let server = server_answering(text(200, "token=android-token"), 1).await;
    let android = AndroidRegistration::new("123456789012", "com.example.app")
        .with_cert("5D08264B44E0E53FBCCC70B4F016474CC6C5AB5C")
        .with_gmp_app_id("1:123456789012:android:abcdef")
        .with_installation(InstallationAuth::new(
            "cAAAAAAAAAAAAAAAAAAAAA",
            "eyJ.fis.token",
        ));
    let request = RegisterRequest::android(DEVICE, android);
    assert_eq!(
        run(&server, &request, &fast_retry(1)).await.unwrap(),
        "android-token"
    );

    let sent = sent(&server).await;
    assert_eq!(
        sent.form(),
        pairs(&[
            ("X-subtype", "123456789012"),
            ("sender", "123456789012"),
            ("X-app_ver", "1111"),
            ("X-osv", "25"),
            ("X-cliv", "fcm-23.1.1"),
            ("X-gmsv", "231114044"),
            ("X-appid", "cAAAAAAAAAAAAAAAAAAAAA"),
            ("X-scope", "*"),
            ("X-Goog-Firebase-Installations-Auth", "eyJ.fis.token"),
            ("X-gmp_app_id", "1:123456789012:android:abcdef"),
            ("X-firebase-app-name-hash", "R1dAH9Ui7M-ynoznwBdw01tLxhI"),
            ("X-app_ver_name", "1.1.1.1"),
            ("app", "com.example.app"),
            ("device", "4242424242424242424"),
            ("app_ver", "1111"),
            ("gcm_ver", "231114044"),
            ("plat", "0"),
            ("cert", "5d08264b44e0e53fbccc70b4f016474cc6c5ab5c"),
            ("target_ver", "28"),
        ])
    );
    assert_eq!(sent.header("app"), Some("com.example.app"));
    assert_eq!(sent.header("app_ver"), Some("1111"));
    assert_eq!(sent.header("gcm_ver"), Some("231114044"));
    assert_eq!(sent.header("user-agent"), Some("Android-GCM/1.5"));
}

#[tokio::test]
async fn android_persona_without_installation_omits_the_fis_fields() {
    let server = server_answering(text(200, "token=t"), 1).await;
    let request = RegisterRequest::android(
        DEVICE,
        AndroidRegistration::new("42", "org.chromium.linux").with_gmp_app_id("1:42:android:0"),
    );
    run(&server, &request, &fast_retry(1)).await.unwrap();
    let names: Vec<String> = sent(&server)
        .await
        .form()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        names,
        [
            "X-subtype",
            "sender",
            "X-app_ver",
            "X-osv",
            "X-cliv",
            "X-gmsv",
            "X-scope",
            "X-gmp_app_id",
            "X-app_ver_name",
            "app",
            "device",
            "app_ver",
            "gcm_ver",
            "plat",
            "cert",
            "target_ver"
        ]
    );
    let form = sent(&server).await.form();
    assert!(form.contains(&("cert".into(), gcm_checkin::DEFAULT_ANDROID_CERT.into())));
}

#[tokio::test]
async fn error_codes_with_http_200_are_typed_and_permanent_ones_not_retried() {
    let cases = [
        ("AUTHENTICATION_FAILED", Register3Code::AuthenticationFailed),
        ("INVALID_SENDER", Register3Code::InvalidSender),
        ("INVALID_PARAMETERS", Register3Code::InvalidParameters),
        ("QUOTA_EXCEEDED", Register3Code::QuotaExceeded),
        (
            "TOO_MANY_REGISTRATIONS",
            Register3Code::TooManyRegistrations,
        ),
        (
            "DEPRECATED_ENDPOINT",
            Register3Code::Other("DEPRECATED_ENDPOINT".into()),
        ),
    ];
    for (body, code) in cases {
        let err = web_error(text(200, &format!("Error={body}"))).await;
        match &err {
            Error::Register3 {
                code: c, status, ..
            } => {
                assert_eq!(c, &code);
                assert_eq!(status.as_u16(), 200);
            }
            other => panic!("expected Register3, got {other:?}"),
        }
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn two_phone_registration_errors_then_a_token_succeeds_on_the_third_attempt() {
    let server = erring_twice_then_token("PHONE_REGISTRATION_ERROR", "third-time-lucky").await;
    let request = web_request();
    let token = run(&server, &request, &fast_retry(5)).await.unwrap();
    assert_eq!(token, "third-time-lucky");
    // The identical request was repeated, subtype UUID included.
    let requests = support::received(&server).await;
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
}

#[tokio::test]
async fn persistent_phone_registration_error_gives_up_after_max_attempts() {
    let server = server_answering(text(200, "Error=PHONE_REGISTRATION_ERROR"), 4).await;
    let err = run_web(&server, 4).await.unwrap_err();
    assert_eq!(
        err.register3_code(),
        Some(&Register3Code::PhoneRegistrationError)
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn internal_server_error_code_is_retried() {
    let server = server_answering(text(200, "Error=InternalServerError"), 2).await;
    let err = run_web(&server, 2).await.unwrap_err();
    assert_eq!(
        err.register3_code(),
        Some(&Register3Code::InternalServerError)
    );
}

#[tokio::test]
async fn a_caller_predicate_can_forbid_retries() {
    let server = server_answering(text(200, "Error=PHONE_REGISTRATION_ERROR"), 1).await;
    let err = register_with(
        &client(),
        &endpoints(&server),
        &web_request(),
        &fast_retry(5),
        |_| false,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.register3_code(),
        Some(&Register3Code::PhoneRegistrationError)
    );
}

#[tokio::test]
async fn html_404_page_is_typed_and_not_retried() {
    let page = "<!DOCTYPE html><html lang=en><title>Error 404 (Not Found)!!1</title></html>";
    let err = web_error(
        ResponseTemplate::new(404)
            .insert_header("content-type", "text/html; charset=UTF-8")
            .set_body_string(page),
    )
    .await;
    match &err {
        Error::HtmlPage {
            status,
            body_excerpt,
        } => {
            assert_eq!(status.as_u16(), 404);
            assert!(body_excerpt.starts_with("<!DOCTYPE html>"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn html_with_200_is_typed_too() {
    let err = web_error(text(200, "<html><body>hello</body></html>")).await;
    assert!(
        matches!(err, Error::HtmlPage { status, .. } if status.as_u16() == 200),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_error_statuses_are_not_retried() {
    for status in [400, 401, 403] {
        let err = web_error(ResponseTemplate::new(status)).await;
        assert!(
            matches!(&err, Error::Http(e) if e.status_code().map(|s| s.as_u16()) == Some(status)),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn error_code_with_an_error_status_is_still_the_code() {
    let err = web_error(text(401, "Error=AUTHENTICATION_FAILED")).await;
    assert!(
        matches!(&err, Error::Register3 { code: Register3Code::AuthenticationFailed, status, .. } if status.as_u16() == 401),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_errors_and_429_are_retried() {
    for status in [429, 500, 503] {
        let busy = ResponseTemplate::new(status).set_body_string("busy");
        let server = failing_twice_then(busy, text(200, "token=after-busy")).await;
        assert_eq!(run_web(&server, 5).await.unwrap(), "after-busy");
    }
}

#[tokio::test]
async fn empty_token_and_unknown_shapes() {
    let err = web_error(text(200, "token=")).await;
    assert!(matches!(err, Error::EmptyToken), "{err:?}");

    for body in [
        "",
        "hello",
        "foo=bar",
        "token=has space",
        "token=a\ntoken=b",
        "Error=",
    ] {
        let err = web_error(text(200, body)).await;
        assert!(
            matches!(&err, Error::UnexpectedResponse { status, .. } if status.as_u16() == 200),
            "{body:?}: {err:?}"
        );
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn slow_server_times_out() {
    let server =
        server_answering(text(200, "token=late").set_delay(Duration::from_secs(3)), 1).await;
    let err = run(&server, &web_request(), &RetryPolicy::no_retry())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Http(e) if e.is_timeout()), "{err:?}");
}

/// The Android persona of the topic and delete tests, with an installation.
fn android_app() -> AndroidRegistration {
    AndroidRegistration::new("123456789012", "com.example.app")
        .with_gmp_app_id("1:123456789012:android:abcdef")
        .with_installation(InstallationAuth::new(
            "cAAAAAAAAAAAAAAAAAAAAA",
            "eyJ.fis.token",
        ))
}

#[tokio::test]
async fn a_topic_subscription_names_the_token_as_sender_and_the_topic_as_scope() {
    let server = server_answering(text(200, "token=topic-token"), 1).await;
    let token = GcmToken::new("cXk:APA91bAppToken");
    let request = RegisterRequest::android(DEVICE, android_app().for_topic(&token, "news"));
    assert_eq!(
        run(&server, &request, &fast_retry(1)).await.unwrap(),
        "topic-token"
    );
    assert_eq!(
        sent(&server).await.form(),
        pairs(&[
            ("X-subtype", "cXk:APA91bAppToken"),
            ("sender", "cXk:APA91bAppToken"),
            ("X-app_ver", "1111"),
            ("X-osv", "25"),
            ("X-cliv", "fcm-23.1.1"),
            ("X-gmsv", "231114044"),
            ("X-appid", "cAAAAAAAAAAAAAAAAAAAAA"),
            ("X-scope", "/topics/news"),
            ("X-gcm.topic", "/topics/news"),
            ("X-Goog-Firebase-Installations-Auth", "eyJ.fis.token"),
            ("X-gmp_app_id", "1:123456789012:android:abcdef"),
            ("X-firebase-app-name-hash", "R1dAH9Ui7M-ynoznwBdw01tLxhI"),
            ("X-app_ver_name", "1.1.1.1"),
            ("app", "com.example.app"),
            ("device", "4242424242424242424"),
            ("app_ver", "1111"),
            ("gcm_ver", "231114044"),
            ("plat", "0"),
            ("cert", gcm_checkin::DEFAULT_ANDROID_CERT),
            ("target_ver", "28"),
        ])
    );
}

#[tokio::test]
async fn an_unsubscription_is_the_subscription_plus_delete() {
    let server = server_answering(text(200, "deleted=com.example.app"), 1).await;
    let token = GcmToken::new("cXk:APA91bAppToken");
    let request = RegisterRequest::android(DEVICE, android_app().for_topic(&token, "news"));
    let deleted = unregister(&client(), &endpoints(&server), &request, &fast_retry(1))
        .await
        .unwrap();
    assert_eq!(deleted, "com.example.app");
    let mut expected = request.form_fields();
    expected.push(("delete", "1".to_owned()));
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(sent(&server).await.form(), expected);
}

#[tokio::test]
async fn unregistering_sends_delete_scope_star_and_the_sender_id() {
    let server = server_answering(text(200, "token=com.example.app"), 1).await;
    let senders = AndroidRegistration::new("123456789012,998877", "com.example.app");
    let request = RegisterRequest::android(DEVICE, senders);
    let deleted = unregister(&client(), &endpoints(&server), &request, &fast_retry(1))
        .await
        .unwrap();
    // microG's `token=<package>` is a success too.
    assert_eq!(deleted, "com.example.app");
    let form = sent(&server).await.form();
    for field in [
        ("sender", "123456789012,998877"),
        ("X-subtype", "123456789012,998877"),
        ("X-scope", "*"),
        ("delete", "1"),
    ] {
        assert!(
            form.contains(&(field.0.to_owned(), field.1.to_owned())),
            "{field:?} not in {form:?}"
        );
    }
    assert!(!form.iter().any(|(k, _)| k == "X-gcm.topic"));
}

#[tokio::test]
async fn delete_answers_of_other_shapes_are_typed() {
    for (answer, check) in [
        (
            text(200, "Error=RST"),
            (|e: &Error| e.is_instance_id_reset()) as fn(&Error) -> bool,
        ),
        (text(200, "nothing=here"), |e| {
            matches!(e, Error::UnexpectedDeleteResponse { .. })
        }),
        (text(200, "deleted=a b"), |e| {
            matches!(e, Error::UnexpectedDeleteResponse { .. })
        }),
        (text(403, "deleted=x"), |e| matches!(e, Error::Http(_))),
    ] {
        let server = server_answering(answer, 1).await;
        let request = RegisterRequest::android(DEVICE, android_app());
        let error = unregister(&client(), &endpoints(&server), &request, &fast_retry(3))
            .await
            .unwrap_err();
        assert!(check(&error), "{error:?}");
        assert!(!error.is_transient());
    }
}

#[tokio::test]
async fn too_many_subscribers_is_retried_and_rst_is_not() {
    let server = erring_twice_then_token("TOO_MANY_SUBSCRIBERS", "at-last").await;
    let token = GcmToken::new("t");
    let request = RegisterRequest::android(DEVICE, android_app().for_topic(&token, "busy"));
    assert_eq!(
        run(&server, &request, &fast_retry(5)).await.unwrap(),
        "at-last"
    );

    let server = server_answering(text(200, "Error=RST"), 1).await;
    let error = run(&server, &request, &fast_retry(5)).await.unwrap_err();
    assert!(error.is_instance_id_reset(), "{error:?}");
    assert_eq!(
        error.register3_code(),
        Some(&Register3Code::InstanceIdReset)
    );
    assert!(error.to_string().contains("Error=RST"), "{error}");
}

#[tokio::test]
async fn an_error_answer_keeps_its_retry_after_in_seconds() {
    let answer = text(200, "Error=SERVICE_NOT_AVAILABLE").insert_header("retry-after", "7");
    let server = server_answering(answer, 1).await;
    let error = run(&server, &web_request(), &fast_retry(1))
        .await
        .unwrap_err();
    assert_eq!(
        error.register3_code(),
        Some(&Register3Code::ServiceNotAvailable)
    );
    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
}

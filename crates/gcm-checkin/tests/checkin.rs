//! Check-in against a wiremock fake: exact requests, answers and every error shape.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use fcm_http::RetryPolicy;
use gcm_checkin::proto::{
    AndroidCheckinProto, AndroidCheckinRequest, AndroidCheckinResponse, ChromeBuildProto,
    GservicesSetting,
};
use gcm_checkin::{
    CHECKIN_INTERVAL_SETTING, Channel, CheckinCredentials, CheckinRequest, ChromeBuild, Error,
    MIN_CHECKIN_INTERVAL, Platform, check_in,
};
use prost::Message;
use pullkin_test_support::{self as support, client, endpoints, fast_retry, last_request};
use wiremock::{MockServer, ResponseTemplate};

const ANDROID_ID: u64 = 5_123_456_789_012_345_678;
const TOKEN: u64 = 9_876_543_210_987_654_321;

fn answer(android_id: u64, token: u64) -> ResponseTemplate {
    let body = AndroidCheckinResponse {
        stats_ok: true,
        time_msec: Some(1_700_000_000_000),
        android_id: Some(android_id),
        security_token: Some(token),
        version_info: Some("v".into()),
        ..Default::default()
    }
    .encode_to_vec();
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/x-protobuf")
        .set_body_bytes(body)
}

/// A server whose check-in route answers `template`, expecting `expected_calls` calls.
async fn server_answering(template: ResponseTemplate, expected_calls: u64) -> MockServer {
    support::server_answering("POST", "/checkin", template, expected_calls).await
}

/// A server that answers the first `failures` check-ins with `failure`, then a check-in
/// response, and expects exactly that many calls.
async fn failing_then_answering(failure: ResponseTemplate, failures: u64) -> MockServer {
    let answer = answer(ANDROID_ID, TOKEN);
    support::failing_then_answering("POST", "/checkin", failure, failures, answer).await
}

/// A new device's check-in against `server`, with up to `attempts` attempts.
async fn check_in_new_device(
    server: &MockServer,
    attempts: u32,
) -> Result<gcm_checkin::CheckinResponse, Error> {
    check_in(
        &client(),
        &endpoints(server),
        &CheckinRequest::new_device(),
        &fast_retry(attempts),
    )
    .await
}

/// The only request the server saw, decoded.
async fn sent_request(server: &MockServer) -> AndroidCheckinRequest {
    let request = last_request(server).await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/checkin");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    AndroidCheckinRequest::decode(request.body.as_slice()).unwrap()
}

fn expected_body(
    credentials: Option<CheckinCredentials>,
    chrome: ChromeBuildProto,
) -> AndroidCheckinRequest {
    AndroidCheckinRequest {
        user_serial_number: Some(0),
        version: Some(3),
        checkin: AndroidCheckinProto {
            r#type: Some(3),
            chrome_build: Some(chrome),
            ..Default::default()
        },
        id: credentials.map(|c| c.android_id as i64),
        security_token: credentials.map(|c| c.security_token.expose()),
        ..Default::default()
    }
}

fn default_chrome() -> ChromeBuildProto {
    ChromeBuildProto {
        platform: Some(3),
        chrome_version: Some(gcm_checkin::DEFAULT_CHROME_VERSION.into()),
        channel: Some(1),
    }
}

#[tokio::test]
async fn new_device_check_in() {
    let server = server_answering(answer(ANDROID_ID, TOKEN), 1).await;
    let response = check_in_new_device(&server, 3).await.unwrap();
    assert_eq!(
        response.credentials,
        CheckinCredentials::new(ANDROID_ID, TOKEN)
    );
    assert!(response.stats_ok);
    assert_eq!(response.time_msec, Some(1_700_000_000_000));
    assert_eq!(response.version_info.as_deref(), Some("v"));
    assert!(response.settings.is_empty());
    assert_eq!(response.settings.checkin_interval, None);
    assert_eq!(
        sent_request(&server).await,
        expected_body(None, default_chrome())
    );
}

/// A check-in answer carrying these settings.
fn answer_with_settings(settings: &[(&'static str, &'static str)]) -> ResponseTemplate {
    let body = AndroidCheckinResponse {
        stats_ok: true,
        android_id: Some(ANDROID_ID),
        security_token: Some(TOKEN),
        settings_diff: Some(false),
        setting: settings
            .iter()
            .map(|(name, value)| GservicesSetting {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/x-protobuf")
        .set_body_bytes(body)
}

#[tokio::test]
async fn the_answers_settings_and_checkin_interval_are_read() {
    let template = answer_with_settings(&[
        ("gcm_hostname", "mtalk.example"),
        (CHECKIN_INTERVAL_SETTING, "259200"),
    ]);
    let server = server_answering(template, 1).await;
    let response = check_in_new_device(&server, 1).await.unwrap();
    assert_eq!(
        response.settings.checkin_interval,
        Some(Duration::from_secs(3 * 24 * 60 * 60))
    );
    assert_eq!(
        response.settings.get("gcm_hostname"),
        Some(&b"mtalk.example"[..])
    );

    // Below the minimum: raised to 12 h. Unreadable: ignored, the check-in still succeeds.
    for (value, expected) in [
        ("3600", Some(MIN_CHECKIN_INTERVAL)),
        ("two days", None),
        ("", None),
    ] {
        let template = answer_with_settings(&[(CHECKIN_INTERVAL_SETTING, value)]);
        let server = server_answering(template, 1).await;
        let response = check_in_new_device(&server, 1).await.unwrap();
        assert_eq!(response.settings.checkin_interval, expected, "{value:?}");
        assert_eq!(
            response.credentials,
            CheckinCredentials::new(ANDROID_ID, TOKEN)
        );
    }
}

#[tokio::test]
async fn re_check_in_sends_the_stored_credentials() {
    let server = server_answering(answer(ANDROID_ID, TOKEN), 1).await;
    let stored = CheckinCredentials::new(ANDROID_ID, TOKEN);
    let chrome = ChromeBuild {
        platform: Platform::Mac,
        version: "63.0.3234.0".into(),
        channel: Channel::Beta,
    };
    let request = CheckinRequest::recheck(stored).with_chrome_build(chrome);
    let response = check_in(&client(), &endpoints(&server), &request, &fast_retry(3))
        .await
        .unwrap();
    assert_eq!(response.credentials, stored);
    let sent = sent_request(&server).await;
    assert_eq!(
        sent,
        expected_body(
            Some(stored),
            ChromeBuildProto {
                platform: Some(2),
                chrome_version: Some("63.0.3234.0".into()),
                channel: Some(2),
            }
        )
    );
    // The u64 id survives the int64 field bit for bit.
    assert_eq!(sent.id.unwrap() as u64, ANDROID_ID);
}

#[tokio::test]
async fn refused_re_check_in_is_dead_credentials_and_not_retried() {
    for status in [400, 401, 403] {
        let server =
            server_answering(ResponseTemplate::new(status).set_body_string("nope"), 1).await;
        let request = CheckinRequest::recheck(CheckinCredentials::new(1, 2));
        let err = check_in(&client(), &endpoints(&server), &request, &fast_retry(5))
            .await
            .unwrap_err();
        match &err {
            Error::DeadCredentials {
                status: s,
                body_excerpt,
            } => {
                assert_eq!(s.as_u16(), status);
                assert_eq!(body_excerpt, "nope");
            }
            other => panic!("expected DeadCredentials, got {other:?}"),
        }
        assert!(err.is_dead_credentials() && !err.is_transient());
    }
}

#[tokio::test]
async fn refused_new_device_is_a_status_error() {
    for status in [401, 403] {
        let server = server_answering(ResponseTemplate::new(status), 1).await;
        let err = check_in_new_device(&server, 5).await.unwrap_err();
        assert!(
            matches!(&err, Error::Http(e) if e.status_code().map(|s| s.as_u16()) == Some(status)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_and_429_are_retried_even_on_re_check_in() {
    for status in [429, 500, 503] {
        let server = failing_then_answering(ResponseTemplate::new(status), 2).await;
        let request = CheckinRequest::recheck(CheckinCredentials::new(ANDROID_ID, TOKEN));
        let response = check_in(&client(), &endpoints(&server), &request, &fast_retry(5))
            .await
            .unwrap();
        assert_eq!(response.credentials.android_id, ANDROID_ID);
    }
}

#[tokio::test]
async fn the_servers_retry_after_is_waited_for() {
    let failure = ResponseTemplate::new(503).insert_header("retry-after", "1");
    let server = failing_then_answering(failure, 1).await;
    let started = std::time::Instant::now();
    // The policy's own backoff is 1 ms; the server asked for 1 s.
    let response = check_in_new_device(&server, 3).await.unwrap();
    assert_eq!(response.credentials.android_id, ANDROID_ID);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_policys_limit_is_reported_not_retried() {
    let server = server_answering(
        ResponseTemplate::new(429).insert_header("retry-after", "3600"),
        1,
    )
    .await;
    let err = check_in_new_device(&server, 5).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_attempts() {
    let server =
        server_answering(ResponseTemplate::new(502).set_body_string("bad gateway"), 3).await;
    let err = check_in_new_device(&server, 3).await.unwrap_err();
    match err {
        Error::Http(fcm_http::Error::Status {
            status,
            body_excerpt,
            ..
        }) => {
            assert_eq!(status.as_u16(), 502);
            assert_eq!(body_excerpt, "bad gateway");
        }
        other => panic!("{other:?}"),
    }
}

async fn decode_error_for(template: ResponseTemplate) -> String {
    let server = server_answering(template, 1).await;
    let err = check_in_new_device(&server, 5).await.unwrap_err();
    match err {
        Error::Http(fcm_http::Error::Decode { what, message }) => {
            assert_eq!(what, "check-in response");
            message
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_answers_are_decode_errors_and_not_retried() {
    let garbage =
        decode_error_for(ResponseTemplate::new(200).set_body_bytes(vec![0xff, 0xff, 0xff, 0xff]))
            .await;
    assert!(!garbage.is_empty());
    let empty = decode_error_for(ResponseTemplate::new(200)).await;
    assert_eq!(empty, "empty body");
    let html = decode_error_for(
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/html; charset=UTF-8")
            .set_body_string("<html><body>Moved</body></html>"),
    )
    .await;
    assert!(html.contains("HTML"), "{html}");
    let no_ids = decode_error_for(answer(0, 0)).await;
    assert!(no_ids.contains("android_id"), "{no_ids}");
    let no_token = decode_error_for(answer(ANDROID_ID, 0)).await;
    assert!(no_token.contains("security_token"), "{no_token}");
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = server_answering(answer(1, 2).set_delay(Duration::from_secs(3)), 1).await;
    let err = check_in(
        &client(),
        &endpoints(&server),
        &CheckinRequest::new_device(),
        &RetryPolicy::no_retry(),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, Error::Http(e) if e.is_timeout()), "{err:?}");
    assert!(err.is_transient());
}

//! `pullkin topic`, `pullkin unregister` and `pullkin credentials import` with the
//! Firebase config supplied, the binary driven against a wiremock fake of Google's
//! endpoints (plain http, in this process), every request it sent checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;

use pullkin_test_support::wiremock::matchers::{body_string_contains, method, path};
use pullkin_test_support::wiremock::{Mock, MockServer, ResponseTemplate};
use pullkin_test_support::{Sent, received};
use serde_json::{Value, json};

use crate::common::{run, text};

const SENDER: &str = "123456789012";
const APP_ID: &str = "1:123456789012:android:0a1b2c3d";
const FID: &str = "cAAAAAAAAAAAAAAAAAAAAA";

/// Runs the binary off the async runtime (the fake answers on it meanwhile).
async fn pullkin(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed ({}): {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn checkin_answer(android_id: u64) -> ResponseTemplate {
    // AndroidCheckinResponse: stats_ok (1) = true, android_id (7) and security_token (8)
    // as fixed64.
    let mut body = vec![0x08, 0x01, 0x39];
    body.extend_from_slice(&android_id.to_le_bytes());
    body.push(0x41);
    body.extend_from_slice(&(android_id + 1).to_le_bytes());
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/x-protobuf")
        .set_body_bytes(body)
}

/// A Google answering registrations, topic requests, deletes and FIS/FCM.
async fn google() -> MockServer {
    let server = MockServer::start().await;
    mount(&server).await;
    server
}

/// What [`google`] answers, mounted on `server`.
async fn mount(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/checkin"))
        .respond_with(checkin_answer(9001))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/c2dm/register3"))
        .and(body_string_contains("delete=1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("deleted=com.example.app"))
        .with_priority(2)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/c2dm/register3"))
        .respond_with(ResponseTemplate::new(200).set_body_string("token=gcm-9001"))
        .with_priority(3)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/my-project/installations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{SENDER}/installations/{FID}"),
            "fid": FID,
            "refreshToken": "refresh",
            "authToken": {"token": "auth", "expiresIn": "604800s"},
        })))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/my-project/registrations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": "projects/my-project/registrations/fcm-9001",
            "token": "fcm-9001",
        })))
        .mount(server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(server)
        .await;
}

/// `pullkin register` (Android persona) at `server` into `out`.
async fn register(server: &MockServer, out: &Path) {
    let out = out.to_str().unwrap();
    let uri = server.uri();
    ok(&pullkin(&[
        "register",
        "--sender-id",
        SENDER,
        "--app-id",
        APP_ID,
        "--api-key",
        "AIza-test",
        "--project-id",
        "my-project",
        "--app-name",
        "com.example.app",
        "--out",
        out,
        "--endpoints",
        &uri,
    ])
    .await);
}

/// A [`google`] with an Android registration in `app.json` of a new directory; the
/// registration's requests forgotten (and the mocks mounted again).
async fn registered() -> (MockServer, tempfile::TempDir, PathBuf) {
    let server = google().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    register(&server, &file).await;
    server.reset().await;
    mount(&server).await;
    (server, dir, file)
}

fn register3_forms(sent: &[Sent]) -> Vec<Vec<(String, String)>> {
    sent.iter()
        .filter(|r| r.path == "/c2dm/register3")
        .map(Sent::form)
        .collect()
}

fn has(form: &[(String, String)], name: &str, value: &str) -> bool {
    form.iter().any(|(k, v)| k == name && v == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_subscribed_listed_and_unsubscribed() {
    let (server, _dir, file) = registered().await;
    let uri = server.uri();
    let file_arg = file.to_str().unwrap();

    let out = ok(&pullkin(&[
        "topic",
        "subscribe",
        file_arg,
        "news",
        "/topics/sport",
        "--endpoints",
        &uri,
    ])
    .await);
    assert_eq!(out, "news\nsport\n");
    assert_eq!(
        ok(&pullkin(&["topic", "list", file_arg]).await),
        "news\nsport\n"
    );
    let forms = register3_forms(&received(&server).await);
    assert_eq!(forms.len(), 2);
    assert!(
        has(&forms[0], "X-gcm.topic", "/topics/news"),
        "{:?}",
        forms[0]
    );
    assert!(has(&forms[0], "sender", "gcm-9001"), "{:?}", forms[0]);
    assert!(has(&forms[1], "X-scope", "/topics/sport"), "{:?}", forms[1]);

    let out = ok(&pullkin(&[
        "topic",
        "unsubscribe",
        file_arg,
        "news",
        "--endpoints",
        &uri,
    ])
    .await);
    assert_eq!(out, "news\n");
    assert_eq!(ok(&pullkin(&["topic", "list", file_arg]).await), "sport\n");
    let forms = register3_forms(&received(&server).await);
    assert!(has(&forms[2], "delete", "1") && has(&forms[2], "X-gcm.topic", "/topics/news"));

    // A bad name: a usage error, no request.
    let before = received(&server).await.len();
    let bad = pullkin(&["topic", "subscribe", file_arg, "a/b", "--endpoints", &uri]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let stderr = text(&bad.stderr);
    assert!(stderr.contains("is not a topic name"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(received(&server).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_deletes_everything_and_removes_the_file() {
    let (server, _dir, file) = registered().await;
    let uri = server.uri();

    let output = pullkin(&[
        "unregister",
        file.to_str().unwrap(),
        "--remove",
        "--endpoints",
        &uri,
    ])
    .await;
    ok(&output);
    assert!(!file.exists());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("FCM registration deleted"), "{stderr}");
    let sent = received(&server).await;
    let paths: Vec<(&str, &str)> = sent
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", "/c2dm/register3"),
            ("DELETE", "/v1/projects/my-project/registrations/fcm-9001"),
            (
                "DELETE",
                &*format!("/v1/projects/my-project/installations/{FID}")
            ),
        ]
    );
    let form = sent[0].form();
    assert!(
        has(&form, "delete", "1") && has(&form, "X-scope", "*") && has(&form, "sender", SENDER)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_id_that_is_not_the_app_ids_number_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("app.json");
    let output = pullkin(&[
        "register",
        "--sender-id",
        "123456789013",
        "--app-id",
        APP_ID,
        "--api-key",
        "AIza-test",
        "--project-id",
        "my-project",
        "--out",
        out.to_str().unwrap(),
        "--endpoints",
        &server.uri(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(78), "EX_CONFIG");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--sender-id 123456789012"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(received(&server).await.is_empty());
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firebase_messaging_import_takes_the_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fm.json");
    std::fs::write(
        &input,
        include_str!("../../pullkin/tests/fixtures/firebase_messaging_credentials.json"),
    )
    .unwrap();
    let out = dir.path().join("web.json");
    let (input, out_arg) = (input.to_str().unwrap(), out.to_str().unwrap());

    // Part of the config: the rest is named, nothing is written.
    let partial = pullkin(&[
        "credentials",
        "import",
        input,
        "--out",
        out_arg,
        "--api-key",
        "AIza-x",
    ])
    .await;
    assert_eq!(partial.status.code(), Some(78));
    assert!(
        text(&partial.stderr).contains("app id"),
        "{}",
        text(&partial.stderr)
    );
    assert!(!out.exists());

    let output = pullkin(&[
        "credentials",
        "import",
        input,
        "--out",
        out_arg,
        "--app-id",
        "1:123456789012:web:0a1b2c3d",
        "--api-key",
        "AIza-x",
    ])
    .await;
    ok(&output);
    assert!(
        text(&output.stderr).contains("age is unknown"),
        "{}",
        text(&output.stderr)
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let config = &written["config"];
    assert_eq!(config["app_id"], "1:123456789012:web:0a1b2c3d");
    assert_eq!(config["api_key"], "AIza-x");
    assert_eq!(config["project_id"], "my-web-project");
    assert_eq!(config["sender_id"], "123456789012");
    assert_eq!(config["persona"]["kind"], "web");
    assert_eq!(
        written["gcm"]["installation"]["auth_token"]["expires_at_unix"],
        0
    );

    // Topics of a web-persona registration: the server's business.
    let topic = pullkin(&["topic", "subscribe", out_arg, "news"]).await;
    assert_eq!(topic.status.code(), Some(78));
    assert!(
        text(&topic.stderr).contains("server side"),
        "{}",
        text(&topic.stderr)
    );
}

#[test]
fn help_shows_examples() {
    for (args, wanted) in [
        (
            &["topic", "--help"][..],
            "pullkin topic subscribe app.json news",
        ),
        (&["topic", "subscribe", "--help"][..], "TOPIC"),
        (
            &["unregister", "--help"][..],
            "pullkin unregister app.json --remove",
        ),
        (&["credentials", "import", "--help"][..], "--app-id"),
        (
            &["register", "--help"][..],
            "Several senders may be joined by `,`",
        ),
        (&["--help"][..], "unregister"),
    ] {
        let output = run(args);
        assert!(output.status.success(), "{args:?}");
        let help = text(&output.stdout);
        assert!(help.contains(wanted), "{args:?}: {help}");
    }
}

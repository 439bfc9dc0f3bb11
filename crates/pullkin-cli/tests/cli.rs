//! The `pullkin` binary driven as a subprocess, end to end: a standalone emulator process,
//! `register` (both personas), `credentials show`, `listen`, `send` (plain, aesgcm,
//! aes128gcm), SIGTERM and a restart without duplicates, usage errors, corrupt files,
//! `credentials import`, and `pullkin demo` itself. Nothing here touches the internet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
#[cfg(unix)]
use common::mode;
use common::{WAIT, pullkin, run, text};

/// Runs the binary and expects success; returns stdout.
pub(crate) fn run_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "pullkin {args:?} failed ({}):\n{}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A running child whose output lines arrive on channels (and are kept for reports).
pub(crate) struct Proc {
    pub(crate) child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    err_log: Arc<Mutex<Vec<String>>>,
}

fn forward(
    stream: impl Read + Send + 'static,
    log: Option<Arc<Mutex<Vec<String>>>>,
) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = &log {
                log.lock().unwrap().push(line.clone());
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    pub(crate) fn spawn(args: &[&str]) -> Self {
        let mut command = pullkin();
        command.args(args);
        Self::spawn_command(command)
    }

    /// Runs this command (the binary with its arguments and environment).
    pub(crate) fn spawn_command(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err_log = Arc::new(Mutex::new(Vec::new()));
        let out = forward(child.stdout.take().unwrap(), None);
        let err = forward(child.stderr.take().unwrap(), Some(Arc::clone(&err_log)));
        Self {
            child,
            out,
            err,
            err_log,
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.err_log.lock().unwrap().join("\n")
    }

    /// The next stdout line.
    pub(crate) fn next_line(&self, what: &str) -> String {
        match self.out.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("timed out waiting for {what}; stderr:\n{}", self.stderr())
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "stdout closed waiting for {what}; stderr:\n{}",
                    self.stderr()
                )
            }
        }
    }

    /// Reads stderr until a line contains each of `needles`.
    pub(crate) fn wait_stderr(&self, needles: &[&str]) {
        let mut missing: HashSet<&str> = needles.iter().copied().collect();
        let deadline = Instant::now() + WAIT;
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) => missing.retain(|n| !line.contains(n)),
                Err(_) => panic!(
                    "no stderr line with {missing:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Sends a signal (`kill -<name>`).
    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), pid.as_str()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain what is left.
                while self.err.recv_timeout(Duration::from_secs(2)).is_ok() {}
                return (status, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `pullkin emulator` as its own process.
pub(crate) struct EmulatorProc {
    _proc: Proc,
    pub(crate) endpoints: String,
    pub(crate) mcs: String,
    pub(crate) ca: String,
}

impl EmulatorProc {
    pub(crate) fn start(dir: &Path) -> Self {
        let ca = dir.join("ca.pem");
        let proc = Proc::spawn(&["emulator", "--ca-out", ca.to_str().unwrap()]);
        let mut values = HashMap::new();
        for _ in 0..3 {
            let line = proc.next_line("the emulator's addresses");
            let (key, value) = line.split_once('=').unwrap();
            values.insert(key.to_owned(), value.to_owned());
        }
        assert_eq!(values["ca"], ca.to_str().unwrap());
        assert!(values["endpoints"].starts_with("https://127.0.0.1:"));
        assert!(
            std::fs::read_to_string(&ca)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        Self {
            endpoints: values["endpoints"].clone(),
            mcs: values["mcs"].clone(),
            ca: values["ca"].clone(),
            _proc: proc,
        }
    }

    /// `--endpoints … --ca …`.
    pub(crate) fn net(&self) -> Vec<&str> {
        vec!["--endpoints", &self.endpoints, "--ca", &self.ca]
    }

    /// Registers a device with `pullkin register`; returns its file and FCM token.
    fn register(&self, dir: &Path, name: &str, web: bool) -> (PathBuf, String) {
        let out = dir.join(format!("{name}.json"));
        let kind = if web { "web" } else { "android" };
        let app_id = format!("1:42:{kind}:0a1b");
        let mut args = vec![
            "register",
            "--sender-id",
            "42",
            "--app-id",
            &app_id,
            "--api-key",
            "AIza-test",
            "--project-id",
            "e2e",
            "--out",
            out.to_str().unwrap(),
        ];
        if web {
            args.extend(["--web", "--bundle-id", "com.example.e2e"]);
        } else {
            args.extend(["--app-name", "com.example.e2e"]);
        }
        args.extend(self.net());
        let token = run_ok(&args).trim().to_owned();
        assert!(!token.is_empty() && !token.contains('\n'));
        (out, token)
    }

    /// `pullkin credentials show` as a map.
    fn show(&self, file: &Path) -> HashMap<String, String> {
        let mut args = vec!["credentials", "show", file.to_str().unwrap()];
        args.extend(self.net());
        run_ok(&args)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn listen(&self, files: &[&Path], state: &Path) -> Proc {
        Proc::spawn(&self.listen_args(files, state, &[]))
    }

    /// The arguments of `pullkin listen` for these files, with `extra` flags.
    fn listen_args<'a>(
        &'a self,
        files: &[&'a Path],
        state: &'a Path,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut args = vec!["listen"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        args.extend(["--state-dir", state.to_str().unwrap(), "--mcs", &self.mcs]);
        args.extend(self.net());
        args.extend_from_slice(extra);
        args
    }

    /// `pullkin send --token` through the emulator's send API.
    pub(crate) fn send_token(&self, token: &str, kind: &str) {
        let data = format!("kind={kind}");
        let mut args = vec!["send", "--token", token, "--data", &data, "--title", "hi"];
        args.extend(self.net());
        let name = run_ok(&args);
        assert!(name.starts_with("projects/pullkin/messages/"), "{name}");
    }

    /// `pullkin send --webpush` (aes128gcm) to a device's subscription.
    fn send_webpush(&self, show: &HashMap<String, String>, kind: &str) {
        let data = format!("kind={kind}");
        let args = [
            "send",
            "--webpush",
            &show["webpush_endpoint"],
            "--p256dh",
            &show["p256dh"],
            "--auth",
            &show["auth"],
            "--data",
            &data,
            "--ca",
            &self.ca,
        ];
        let location = run_ok(&args);
        assert!(location.contains("/fcm/send/message/"), "{location}");
    }
}

#[test]
fn register_send_and_listen_through_an_http_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = EmulatorProc::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime
        .block_on(fcm_emulator::ConnectProxy::start())
        .unwrap();
    let url = proxy.url();
    let with_proxy = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(emulator.net());
        all.extend(["--proxy", url.as_str()]);
        all.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let out = dir.path().join("web.json");
    let register = with_proxy(&[
        "register",
        "--web",
        "--sender-id",
        "42",
        "--app-id",
        "1:42:web:0a1b",
        "--api-key",
        "AIza-test",
        "--project-id",
        "e2e",
        "--bundle-id",
        "com.example.e2e",
        "--out",
        out.to_str().unwrap(),
    ]);
    let token = run_ok(&register.iter().map(String::as_str).collect::<Vec<_>>());
    let http = emulator
        .endpoints
        .trim_start_matches("https://")
        .trim_end_matches('/');
    assert!(!proxy.tunnels().is_empty());
    assert!(
        proxy.tunnels().iter().all(|t| t == http),
        "{:?}",
        proxy.tunnels()
    );

    let state = dir.path().join("state");
    let listen = with_proxy(&[
        "listen",
        out.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--mcs",
        emulator.mcs.as_str(),
    ]);
    let listener = Proc::spawn(&listen.iter().map(String::as_str).collect::<Vec<_>>());
    listener.wait_stderr(&["[web] connected"]);
    assert!(
        proxy.tunnels().contains(&emulator.mcs),
        "{:?} has no tunnel to {}",
        proxy.tunnels(),
        emulator.mcs
    );
    let send = with_proxy(&["send", "--token", token.trim(), "--data", "via=proxy"]);
    run_ok(&send.iter().map(String::as_str).collect::<Vec<_>>());
    let message = json(&listener.next_line("the message sent through the proxy"));
    assert_eq!(message["data"]["via"], "proxy", "{message}");
    let (status, stderr) = listener.terminate();
    assert!(status.success(), "{stderr}");

    // A proxy URL of another kind is an error naming the flag, and never quoting the URL
    // (it may carry a password).
    let socks = "socks5://user:hunter2@127.0.0.1:1080";
    let mut bad = vec!["send", "--token", "t", "--proxy", socks];
    bad.extend(emulator.net());
    assert_fails_with(78, &bad, &["--proxy", "only http://"]);
    assert!(!text(&run(&bad).stderr).contains("hunter2"));
    // Nor does --help show it when it comes from the environment.
    let help = pullkin()
        .env("PULLKIN_PROXY", "http://user:hunter2@127.0.0.1:3128")
        .args(["listen", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(
        help.contains("PULLKIN_PROXY") && !help.contains("hunter2"),
        "{help}"
    );
}

pub(crate) fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn register_listen_send_every_encoding_then_restart_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = EmulatorProc::start(dir.path());
    let (web, web_fcm_token) = emulator.register(dir.path(), "web", true);
    let (android, _) = emulator.register(dir.path(), "android", false);
    #[cfg(unix)]
    {
        assert_eq!(mode(&web), 0o600);
        assert_eq!(mode(&android), 0o600);
    }
    let web_show = emulator.show(&web);
    let android_show = emulator.show(&android);
    assert_eq!(web_show["persona"], "web");
    assert_eq!(web_show["fcm_token"], web_fcm_token);
    assert_eq!(android_show["persona"], "android");
    assert!(web_show["webpush_endpoint"].starts_with(&format!("{}/fcm/send/", emulator.endpoints)));

    let state = dir.path().join("state");
    let listener = emulator.listen(&[&web, &android], &state);
    listener.wait_stderr(&["[web] connected", "[android] connected"]);

    emulator.send_token(&android_show["gcm_token"], "plain");
    emulator.send_token(&web_fcm_token, "aesgcm");
    emulator.send_webpush(&web_show, "aes128gcm");
    let mut seen = HashSet::new();
    let mut kinds = HashMap::new();
    for _ in 0..3 {
        let message = json(&listener.next_line("a notification"));
        let kind = message["data"]["kind"].as_str().unwrap().to_owned();
        assert!(seen.insert(message["persistent_id"].as_str().unwrap().to_owned()));
        assert!(message["sent_ms"].as_u64().is_some());
        assert!(message["sender_id"].is_string());
        kinds.insert(kind, message);
    }
    assert_eq!(kinds["plain"]["app"], "android");
    assert_eq!(kinds["plain"]["encoding"], Value::Null);
    assert_eq!(kinds["plain"]["notification"]["title"], "hi");
    assert_eq!(kinds["aesgcm"]["app"], "web");
    assert_eq!(kinds["aesgcm"]["encoding"], "aesgcm");
    assert_eq!(kinds["aesgcm"]["notification"]["title"], "hi");
    assert_eq!(kinds["aes128gcm"]["app"], "web");
    assert_eq!(kinds["aes128gcm"]["encoding"], "aes128gcm");

    // A Web Push payload that is not JSON comes out as it went in.
    run_ok(&[
        "send",
        "--webpush",
        &web_show["webpush_endpoint"],
        "--p256dh",
        &web_show["p256dh"],
        "--auth",
        &web_show["auth"],
        "--payload",
        "just text ✓",
        "--ca",
        &emulator.ca,
    ]);
    let message = json(&listener.next_line("the text message"));
    assert_eq!(message["payload"], "just text ✓", "{message}");
    assert!(seen.insert(message["persistent_id"].as_str().unwrap().to_owned()));

    // Refusals, by the send API and by a push endpoint, are one-line errors naming them.
    let mut args = vec!["send", "--token", "no-such-token", "--data", "k=v"];
    args.extend(emulator.net());
    assert_fails(&args, &["the send API at", "answered 404", "UNREGISTERED"]);
    let unknown_endpoint = format!("{}/fcm/send/no-such-subscription", emulator.endpoints);
    assert_fails(
        &[
            "send",
            "--webpush",
            &unknown_endpoint,
            "--p256dh",
            &web_show["p256dh"],
            "--auth",
            &web_show["auth"],
            "--payload",
            "x",
            "--ca",
            &emulator.ca,
        ],
        &["the push endpoint", "answered 404", "unknown subscription"],
    );

    // SIGUSR1 (a network change) checks the connections; the listener goes on receiving.
    listener.signal("USR1");
    listener.wait_stderr(&["SIGUSR1: checking every connection now"]);
    emulator.send_token(&android_show["gcm_token"], "after-probe");
    let message = json(&listener.next_line("the message after the probe"));
    assert_eq!(message["data"]["kind"], "after-probe", "{message}");
    assert!(seen.insert(message["persistent_id"].as_str().unwrap().to_owned()));

    // Stop at once, before the delayed acknowledgements would have gone out.
    let (status, stderr) = listener.terminate();
    assert!(status.success(), "listen exited with {status}:\n{stderr}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    assert!(state.join("web.acks.json").is_file());

    // A restart delivers the new messages, and nothing received before.
    let listener = emulator.listen(&[&web, &android], &state);
    listener.wait_stderr(&["[web] connected", "[android] connected"]);
    emulator.send_token(&android_show["gcm_token"], "after-restart");
    emulator.send_webpush(&web_show, "after-restart");
    let mut apps = HashSet::new();
    for _ in 0..2 {
        let message = json(&listener.next_line("a notification after the restart"));
        let id = message["persistent_id"].as_str().unwrap();
        assert!(!seen.contains(id), "delivered twice: {message}");
        assert_eq!(message["data"]["kind"], "after-restart", "{message}");
        apps.insert(message["app"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        apps,
        HashSet::from(["web".to_owned(), "android".to_owned()])
    );
    let (status, stderr) = listener.terminate();
    assert!(status.success(), "listen exited with {status}:\n{stderr}");
}

#[test]
fn demo_runs_the_whole_pipeline() {
    let started = Instant::now();
    let output = run(&["demo"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("all 3 messages arrived intact"), "{stdout}");
    for kind in ["plain", "aesgcm", "aes128gcm"] {
        assert!(stdout.contains(&format!("the {kind} message arrived intact")));
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// Asserts a usage error: exit code 2 and an `error:` message naming `needle`.
fn assert_usage_error(args: &[&str], needle: &str) {
    let output = run(args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?} should mention {needle:?}: {stderr}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    // No command at all: the overview, as a usage error.
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("Usage: pullkin"));
    assert_usage_error(&["frobnicate"], "unrecognized subcommand");
    assert_usage_error(&["listen"], "CREDENTIALS");
    let register = [
        "register",
        "--sender-id",
        "1",
        "--app-id",
        "a",
        "--api-key",
        "k",
        "--project-id",
        "p",
        "--out",
        "x.json",
    ];
    assert_usage_error(
        &[&register[..], &["--web", "--app-name", "com.x"]].concat(),
        "cannot be used with",
    );
    assert_usage_error(&[&register[..], &["--vapid-key", "B"]].concat(), "--web");
    assert_usage_error(&["send", "--token", "t", "--data", "novalue"], "KEY=VALUE");
    assert_usage_error(&["send", "--webpush", "https://x/fcm/send/t"], "--p256dh");
    assert_usage_error(&["send", "--token", "t", "--priority", "urgent"], "urgent");
    assert_usage_error(&["emulator", "--http-port", "70000"], "70000");
}

/// Asserts a failure: exit code 1 and one `error: …` line containing each needle.
fn assert_fails(args: &[&str], needles: &[&str]) {
    assert_fails_with(1, args, needles);
}

/// Asserts a failure with this exit code (78: configuration, 2: usage) and one `error: …`
/// line containing each needle.
pub(crate) fn assert_fails_with(code: i32, args: &[&str], needles: &[&str]) {
    let output = run(args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?} should mention {needle:?}: {stderr}"
        );
    }
}

#[test]
fn corrupt_or_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let bad = bad.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    // The port is never reached: the file is read first.
    let listen = [
        "listen",
        "--no-renew",
        "--mcs",
        "127.0.0.1:9",
        "--state-dir",
        state,
    ];
    assert_fails_with(
        78,
        &[&listen[..], &[bad]].concat(),
        &[
            "reading the credentials file",
            "bad.json",
            "malformed credentials JSON",
        ],
    );

    let shape = dir.path().join("shape.json");
    std::fs::write(&shape, r#"{"gcm": {"token": "t"}, "keys": {}}"#).unwrap();
    assert_fails_with(
        78,
        &[&listen[..], &[shape.to_str().unwrap()]].concat(),
        &["shape.json", "not a credentials document", "is missing"],
    );

    let missing = dir.path().join("missing.json");
    assert_fails_with(
        78,
        &[&listen[..], &[missing.to_str().unwrap()]].concat(),
        &["missing.json"],
    );

    let out = dir.path().join("out.json");
    assert_fails_with(
        78,
        &["credentials", "import", bad, "--out", out.to_str().unwrap()],
        &["bad.json", "malformed credentials JSON"],
    );
    assert!(!out.exists());

    // Flags that do not fit together: a usage error, as clap's own.
    assert_fails_with(
        2,
        &["listen", bad, "--endpoints", "https://127.0.0.1:9"],
        &["--mcs"],
    );
    let missing_ca = dir.path().join("no-ca.pem");
    assert_fails_with(
        78,
        &[
            "send",
            "--token",
            "t",
            "--endpoints",
            "https://127.0.0.1:9",
            "--ca",
            missing_ca.to_str().unwrap(),
        ],
        &["no-ca.pem"],
    );
}

/// A credentials file as the Python `pullkin` writes it, with real keys.
pub(crate) fn python_credentials() -> String {
    let keys = webpush_ece::ReceiverKeys::generate();
    serde_json::json!({
        "gcm": {
            "token": "cXyZ:APA91b-python-gcm-token",
            "app_id": "1:42:android:0a1b",
            "android_id": "5678901234567890123",
            "security_token": "1234567890123456789",
        },
        "fcm": {
            "token": "python-fcm-token",
            "name": "projects/p/registrations/python-fcm-token",
        },
        "keys": {
            "private": keys.private_key_pkcs8_base64().unwrap().as_str(),
            "public": keys.public_key_base64(),
            "secret": keys.auth_secret_base64().as_str(),
        },
    })
    .to_string()
}

#[test]
fn credentials_import_converts_python_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("python.json");
    std::fs::write(&input, python_credentials()).unwrap();
    let out = dir.path().join("app.json");
    let args = [
        "credentials",
        "import",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    run_ok(&args);
    #[cfg(unix)]
    assert_eq!(mode(&out), 0o600);
    let shown: HashMap<String, String> = run_ok(&["credentials", "show", out.to_str().unwrap()])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(shown["android_id"], "5678901234567890123");
    assert_eq!(shown["fcm_token"], "python-fcm-token");
    assert_eq!(
        shown["webpush_endpoint"],
        "https://fcm.googleapis.com/fcm/send/cXyZ:APA91b-python-gcm-token"
    );
    // The converted file is in this tool's format and holds no fewer secrets.
    let converted: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        converted["gcm"]["security_token"],
        1_234_567_890_123_456_789_u64
    );
    // An existing file is not replaced without --force.
    assert_fails(&args, &["exists already", "--force"]);
    run_ok(&[&args[..], &["--force"]].concat());
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in [
        &["demo"][..],
        &["register"],
        &["listen"],
        &["send"],
        &["emulator"],
        &["credentials", "import"],
        &["credentials", "show"],
    ] {
        let help = run_ok(&[command, &["--help"]].concat());
        assert!(help.contains("Example"), "{command:?} --help:\n{help}");
    }
    assert!(run_ok(&["--version"]).starts_with("pullkin "));
}

#[test]
fn listen_hands_messages_to_a_sink_and_sink_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = EmulatorProc::start(dir.path());
    let (android, _) = emulator.register(dir.path(), "android", false);
    let android_show = emulator.show(&android);
    let state = dir.path().join("state");
    let out = dir.path().join("out.jsonl");
    let sink = format!("android=file:{}", out.display());
    let listener = Proc::spawn(&emulator.listen_args(&[&android], &state, &["--sink", &sink]));
    listener.wait_stderr(&["[android] connected"]);
    for kind in ["a", "b", "c"] {
        emulator.send_token(&android_show["gcm_token"], kind);
    }
    let deadline = std::time::Instant::now() + WAIT;
    let lines = loop {
        let lines: Vec<String> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let kinds: HashSet<String> = lines
        .iter()
        .map(|line| {
            let message = json(line);
            let id = message["persistent_id"].as_str().unwrap();
            assert_eq!(message["key"], format!("android:{id}"));
            assert_eq!(message["app"], "android");
            message["data"]["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        HashSet::from(["a", "b", "c"].map(str::to_owned)),
        "{lines:?}"
    );
    drop(listener);

    // A destination that cannot be reached, or is no destination: one line naming it.
    let files = [android.as_path()];
    assert_fails(
        &emulator.listen_args(&files, &state, &["--sink", "nats://127.0.0.1:1/x"]),
        &["sink nats://127.0.0.1:1/x"],
    );
    assert_fails_with(
        2,
        &emulator.listen_args(&files, &state, &["--sink", "gopher://x"]),
        &["--sink gopher://x", "not a destination"],
    );
    assert_fails_with(
        2,
        &emulator.listen_args(&files, &state, &["--sink", "nobody=file:x"]),
        &["no app \"nobody\""],
    );
}

#[test]
fn listen_tries_the_mcs_endpoints_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = EmulatorProc::start(dir.path());
    let (file, token) = emulator.register(dir.path(), "app", false);
    // A port nothing listens on first (bound, then closed: refused), the emulator second.
    let refused = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let endpoints = format!("{refused},{}", emulator.mcs);
    let state = dir.path().join("state");
    let mut args = vec!["listen", file.to_str().unwrap()];
    args.extend(["--state-dir", state.to_str().unwrap(), "--mcs", &endpoints]);
    args.extend(emulator.net());
    let listener = Proc::spawn(&args);
    listener.wait_stderr(&["[app] connected"]);
    emulator.send_token(&token, "fallback");
    let line: serde_json::Value = serde_json::from_str(&listener.next_line("the message")).unwrap();
    assert_eq!(line["data"]["kind"], "fallback");
}

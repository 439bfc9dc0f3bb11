//! `pullkin listen` when its pipes fail and when it holds many apps: a closed stderr does
//! not stop it (it goes on receiving), a closed stdout stops it cleanly with what it
//! printed stored (and what it could not print delivered again after a restart), and
//! every app's `connected` is reported on stderr and in `--status FILE` even when the
//! event channel lags. The emulator runs in this process; nothing touches the internet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fcm_emulator::SendMessage;
use gcm_checkin::{GcmToken, SecurityToken};
use pullkin::{AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys};
use serde_json::Value;
use webpush_ece::ReceiverKeys;

use crate::common::{WAIT, pullkin};
use crate::hostile::Env;

/// `pullkin listen FILES… --state-dir STATE` against the emulator of `env`, both pipes
/// given to the caller.
fn spawn(env: &Env, files: &[&Path], state: &Path, extra: &[&str]) -> Child {
    let endpoints = env
        .emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let mcs = format!("localhost:{}", env.emulator.mcs_addr().port());
    pullkin()
        .arg("listen")
        .args(files)
        .arg("--state-dir")
        .arg(state)
        .args(["--mcs", &mcs, "--endpoints", &endpoints, "--ca"])
        .arg(&env.ca)
        .args(["--max-retry-delay", "0.2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Lines of a pipe, on a channel.
fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads stderr until a line contains `needle`, then closes it (the reader goes away, as
/// a log reader that dies would); what was read.
fn read_stderr_then_close(stderr: ChildStderr, needle: &str) -> Vec<String> {
    let mut read = Vec::new();
    let mut reader = BufReader::new(stderr);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stderr ended before {needle:?}:\n{}",
            read.join("\n")
        );
        let found = line.contains(needle);
        read.push(line.trim_end().to_owned());
        if found {
            return read;
        }
        assert!(Instant::now() < deadline, "no {needle:?} on stderr");
    }
}

fn next_line(rx: &Receiver<String>, what: &str) -> String {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no {what}: {e}"))
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn fcm_token(path: &Path) -> String {
    AppCredentials::from_json(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .fcm
        .token()
        .unwrap()
        .to_owned()
}

fn message(n: u32) -> SendMessage {
    SendMessage::new().data("n", n.to_string())
}

fn n_of(line: &str) -> u32 {
    let line: Value = serde_json::from_str(line).unwrap();
    line["data"]["n"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_closed_stderr_never_stops_the_listener() {
    let env = Env::start();
    let web = env.register("web");
    let token = fcm_token(&web);
    let state = env.path("state");
    // -v: the library's logs go to stderr too (through tracing's writer).
    let mut child = spawn(&env, &[&web], &state, &["-v"]);
    let stdout = lines(child.stdout.take().unwrap());
    read_stderr_then_close(child.stderr.take().unwrap(), "[web] connected");
    // Stderr is closed now. Everything that writes to it: a probe (SIGUSR1), a cut
    // connection (failure, retry, reconnection), the messages' own log lines.
    env.emulator.send(&token, &message(1)).unwrap();
    assert_eq!(n_of(&next_line(&stdout, "the first message")), 1);
    signal(&child, "USR1");
    env.emulator.disconnect(fcm_emulator::Target::Device(
        AppCredentials::from_json(&std::fs::read_to_string(&web).unwrap())
            .unwrap()
            .gcm
            .android_id,
    ));
    for n in 2..=20 {
        env.emulator.send(&token, &message(n)).unwrap();
    }
    let mut seen: Vec<u32> = (2..=20)
        .map(|_| n_of(&next_line(&stdout, "a message after stderr closed")))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (2..=20).collect::<Vec<_>>());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the listener is still running"
    );
    // And it stops as cleanly as ever.
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn a_closed_stdout_stops_the_listener_with_what_it_printed_stored() {
    let env = Env::start();
    let web = env.register("web");
    let token = fcm_token(&web);
    let state = env.path("state");
    let mut child = spawn(&env, &[&web], &state, &[]);
    let stderr_log = Arc::new(Mutex::new(Vec::new()));
    let stderr = {
        let log = Arc::clone(&stderr_log);
        let rx = lines(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                log.lock().unwrap().push(line);
            }
        })
    };
    let deadline = Instant::now() + WAIT;
    while !stderr_log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "[web] connected")
    {
        assert!(Instant::now() < deadline, "never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    // One message printed and read, then stdout's reader goes away.
    let mut stdout: BufReader<ChildStdout> = BufReader::new(child.stdout.take().unwrap());
    env.emulator.send(&token, &message(1)).unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(n_of(&first), 1);
    drop(stdout);
    for n in 2..=5 {
        env.emulator.send(&token, &message(n)).unwrap();
    }
    let status = wait_exit(&mut child);
    stderr.join().unwrap();
    let stderr = stderr_log.lock().unwrap().join("\n");
    assert!(!status.success(), "{status}: {stderr}");
    assert_ne!(status.code(), Some(101), "no panic: {stderr}");
    assert!(stderr.contains("writing to stdout"), "{stderr}");
    assert!(stderr.contains("stopped; state kept in"), "{stderr}");

    // After a restart: the printed message is not delivered again, every other one is
    // (they were not acknowledged, since they were never printed).
    let mut child = spawn(&env, &[&web], &state, &[]);
    let stdout = lines(child.stdout.take().unwrap());
    let _stderr = lines(child.stderr.take().unwrap());
    let mut again: Vec<u32> = (2..=5)
        .map(|_| n_of(&next_line(&stdout, "a message not printed before")))
        .collect();
    again.sort_unstable();
    assert_eq!(again, [2, 3, 4, 5]);
    assert!(
        stdout.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing else, the printed one least of all"
    );
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

/// Android-persona credentials files for `n` devices of the emulator (no registration
/// through the command: thousands would take minutes); their tokens.
fn many_apps(env: &Env, n: usize) -> (Vec<PathBuf>, Vec<String>) {
    let keys = ReceiverKeys::generate();
    let mut files = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let device = env.emulator.create_device();
        let gcm = env
            .emulator
            .register_gcm(device.android_id, "com.example.app", None, "1234567890")
            .unwrap();
        let credentials = AppCredentials {
            gcm: AppCredentialsGcm {
                token: GcmToken::new(gcm.token.clone()),
                app_id: "com.example.app".into(),
                android_id: device.android_id,
                security_token: SecurityToken::new(device.security_token),
                installation: None,
            },
            fcm: AppCredentialsFcm::default(),
            keys: AppCredentialsKeys::from_keys(&keys).unwrap(),
            config: None,
        };
        let path = env.path(&format!("app{i}.json"));
        std::fs::write(&path, credentials.to_json().unwrap()).unwrap();
        files.push(path);
        tokens.push(gcm.token);
    }
    (files, tokens)
}

/// 600 apps in one listener: as many as a debug build connects within the tests' waits
/// on two cores (`pullkin-bench listen-idle --apps 2000` checks 2 000 on a release
/// build). Their `connecting`/`connected` events outrun the channel's 1 024 places.
#[test]
fn every_app_is_reported_connected_and_in_the_status_file() {
    const APPS: usize = 600;
    let env = Env::start();
    let (files, tokens) = many_apps(&env, APPS);
    let status = env.path("status.json");
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let mut child = spawn(
        &env,
        &files,
        &env.path("state"),
        &["--status", status.to_str().unwrap()],
    );
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut reported = HashSet::new();
    let mut stderr_lines = Vec::new();
    let deadline = Instant::now() + WAIT * 4;
    while reported.len() < APPS {
        let line = stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {APPS} apps reported connected:\n{}",
                    reported.len(),
                    stderr_lines[stderr_lines.len().saturating_sub(20)..].join("\n")
                )
            });
        if let Some(app) = line
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix("] connected"))
        {
            assert!(reported.insert(app.to_owned()), "{app} reported twice");
        }
        stderr_lines.push(line);
    }
    // The status file says the same, for every app.
    let deadline = Instant::now() + WAIT;
    let doc = loop {
        let doc: Option<Value> = std::fs::read(&status)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(doc) = doc
            && doc["connected"] == APPS
        {
            break doc;
        }
        assert!(Instant::now() < deadline, "the status file never said all");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(doc["total"], APPS);
    for i in 0..APPS {
        let app = &doc["apps"][format!("app{i}")];
        assert_eq!(app["state"], "connected", "app{i}: {app}");
        assert_eq!(app["logins"], 1, "app{i}: {app}");
        assert!(app["since_ms"].is_u64(), "app{i}: {app}");
    }
    // And every app receives.
    env.emulator.send(&tokens[APPS - 1], &message(7)).unwrap();
    let line: Value = serde_json::from_str(&next_line(&stdout, "the message")).unwrap();
    assert_eq!(line["app"], format!("app{}", APPS - 1));
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let doc: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(doc["connected"], 0, "written again at the end");
    assert_eq!(doc["stopped"], APPS);
}

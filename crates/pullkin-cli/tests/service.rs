//! `pullkin listen` as a service: the readiness protocol (this test plays the service
//! manager's `NOTIFY_SOCKET`), the exit statuses an operator's unit relies on, and
//! `--log-format json` for a log shipper. Nothing here touches the internet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

use pullkin::AppCredentials;
use serde_json::Value;

use crate::cli::python_credentials;
use crate::common::{WAIT, pullkin, run, text};
use crate::hostile::{Env, Proc, assert_hidden, secrets_of};

/// The service manager's end of `NOTIFY_SOCKET`: a datagram socket in a directory.
#[cfg(unix)]
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
    seen: Vec<String>,
}

#[cfg(unix)]
impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    fn var(&self) -> [(&'static str, &OsStr); 1] {
        [("NOTIFY_SOCKET", self.path.as_os_str())]
    }

    /// The next datagram that has this line; the ones before are kept in `seen`.
    fn wait_for(&mut self, line: &str, listener: &Proc) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buffer) else {
                continue;
            };
            let datagram = String::from_utf8(buffer[..n].to_vec()).unwrap();
            self.seen.push(datagram.clone());
            if datagram.lines().any(|l| l == line) {
                return datagram;
            }
        }
        panic!(
            "no {line} on the notify socket; got {:?}; stderr:\n{}",
            self.seen,
            listener.stderr()
        );
    }
}

#[cfg(unix)]
#[test]
fn readiness_status_reload_and_stop_reach_the_notify_socket() {
    let env = Env::start();
    let web = env.register("web");
    let android_id = AppCredentials::from_json(&std::fs::read_to_string(&web).unwrap())
        .unwrap()
        .gcm
        .android_id;
    let mut notify = NotifySocket::bind(env.dir.path());
    let mut listener =
        env.listen_with_env(&[&web], &env.path("state"), &env.ca, &[], &notify.var());

    // READY=1 comes once the app has logged in, with the count of connected apps.
    let ready = notify.wait_for("READY=1", &listener);
    assert!(ready.contains("STATUS=1/1 connected"), "{ready}");
    assert!(
        env.emulator.login_count(android_id) >= 1,
        "READY=1 before the login"
    );
    assert!(
        notify.seen.iter().all(|d| !d.contains("STOPPING=1")),
        "{:?}",
        notify.seen
    );
    listener.wait_stderr("[web] connected");

    // The unit's ExecReload= (SIGUSR1): RELOADING=1, the probe, READY=1 again.
    listener.signal("USR1");
    notify.wait_for("RELOADING=1", &listener);
    notify.wait_for("READY=1", &listener);
    listener.wait_stderr("SIGUSR1: checking every connection now");

    // SIGTERM: STOPPING=1 first, then a clean exit.
    let status = listener.stop("TERM");
    let stopping = notify.wait_for("STOPPING=1", &listener);
    assert!(stopping.contains("STATUS=stopping: SIGTERM"), "{stopping}");
    assert_eq!(status.code(), Some(0), "{}", listener.stderr());
}

#[cfg(unix)]
#[test]
fn ready_also_when_the_first_attempt_fails_and_sigint_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("python.json");
    std::fs::write(&file, python_credentials()).unwrap();
    // A port where nothing listens: every attempt fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mcs = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut notify = NotifySocket::bind(dir.path());
    let state = dir.path().join("state");
    let args = [
        "listen",
        file.to_str().unwrap(),
        "--no-renew",
        "--mcs",
        &mcs,
        "--state-dir",
        state.to_str().unwrap(),
        "--max-retry-delay",
        "0.2",
    ];
    let mut listener = Proc::spawn_with_env(&args, &notify.var());
    // Started (not stuck in "activating" while the network is down), and saying so.
    let ready = notify.wait_for("READY=1", &listener);
    assert!(ready.contains("STATUS=0/1 connected"), "{ready}");
    listener.wait_stderr("[python] connection failed");

    let status = listener.stop("INT");
    notify.wait_for("STOPPING=1", &listener);
    assert_eq!(status.code(), Some(0), "{}", listener.stderr());
    assert!(listener.stderr().contains("SIGINT: stopping"));
}

/// Runs the binary; asserts the exit status, an `error: …` line and each needle; returns
/// stderr.
fn assert_exit(code: i32, args: &[&str], needles: &[&str]) -> String {
    let output = run(args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("error: ")),
        "{args:?}: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{args:?}: {needle:?}: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

#[test]
fn exit_statuses_tell_usage_configuration_and_stored_state_apart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("python.json");
    std::fs::write(&file, python_credentials()).unwrap();
    let file = file.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    // Nothing is ever reached: each fails before connecting.
    fn listen<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["listen", "--no-renew", "--mcs", "127.0.0.1:9"];
        args.extend_from_slice(extra);
        args
    }

    // 2: usage, clap's and the flags that do not fit together.
    assert_exit(2, &["listen"], &["CREDENTIALS"]);
    assert_exit(2, &["listen", file, "--heartbeat", "0"], &["out of range"]);
    assert_exit(
        2,
        &["listen", file, "--endpoints", "https://127.0.0.1:9"],
        &["--mcs"],
    );

    // 78: configuration. A missing credentials file, an unusable state directory, a CA
    // file that is not there.
    let missing = dir.path().join("missing.json");
    let output = run(&listen(&[missing.to_str().unwrap(), "--state-dir", state]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: reading the credentials file")
            && stderr.contains("missing.json"),
        "{stderr}"
    );
    assert_exit(
        78,
        &listen(&[file, "--state-dir", file]),
        &["state directory"],
    );
    assert_exit(
        78,
        &listen(&[file, "--state-dir", state, "--ca", "/nonexistent/ca.pem"]),
        &["/nonexistent/ca.pem"],
    );

    // 65: stored state that cannot be used (here a corrupt acknowledgement file).
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(Path::new(state).join("python.acks.json"), "{ not json").unwrap();
    let stderr = assert_exit(
        65,
        &listen(&[file, "--state-dir", state]),
        &["python.acks.json", "corrupt"],
    );
    assert!(
        stderr.contains("error: [python] the stored state cannot be used"),
        "{stderr}"
    );

    // The table is in `pullkin --help`.
    let help = text(&run(&["--help"]).stdout);
    for line in ["Exit status:", "  2 ", "  65 ", "  78 ", "SIGINT/SIGTERM"] {
        assert!(help.contains(line), "{line:?} in:\n{help}");
    }
}

/// Asserts that every line is a JSON object of tracing's JSON format; returns them.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line}"));
            assert!(value["level"].is_string(), "{line}");
            assert!(value["target"].is_string(), "{line}");
            assert!(value["fields"].is_object(), "{line}");
            value
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_and_hold_no_secret() {
    let env = Env::start();
    let web = env.register("web");
    let secrets = secrets_of(&web);
    let mut listener = env.listen(
        &[&web],
        &env.path("state"),
        &env.ca,
        &["--log-format", "json", "-vvv"],
    );
    listener.wait_stderr(r#""message":"connected""#);
    let token = AppCredentials::from_json(&std::fs::read_to_string(&web).unwrap())
        .unwrap()
        .fcm
        .token()
        .unwrap()
        .to_owned();
    env.emulator
        .send(&token, &fcm_emulator::SendMessage::new().data("n", "1"))
        .unwrap();
    listener.wait_stdout(1);
    assert!(listener.terminate());

    let stderr = listener.stderr();
    let lines = json_lines(&stderr);
    let reports: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "pullkin_cli")
        .collect();
    let connected = reports
        .iter()
        .find(|l| l["fields"]["message"] == "connected")
        .unwrap_or_else(|| panic!("no connected report:\n{stderr}"));
    assert_eq!(connected["fields"]["app"], "web");
    assert_eq!(connected["level"], "INFO");
    assert!(
        reports
            .iter()
            .any(|l| l["fields"]["message"] == "SIGTERM: stopping"),
        "{stderr}"
    );
    // -vvv reached the library's own events too, as JSON (with their span's fields).
    let library = |l: &&Value| {
        l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("pullkin::"))
    };
    assert!(lines.iter().any(|l| library(&l)), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" || l["level"] == "TRACE"),
        "{stderr}"
    );
    assert_hidden("listen's JSON stderr", &stderr, &secrets);
    // Stdout is the notification, as in text mode.
    let message: Value = serde_json::from_str(&listener.stdout()[0]).unwrap();
    assert_eq!(message["data"]["n"], "1");
    assert_eq!(message["app"], "web");

    // From the environment too; the error that ends a command is an ERROR object with
    // its exit status.
    let missing = env.path("missing.json");
    let output = pullkin()
        .env("PULLKIN_LOG_FORMAT", "json")
        .args(["listen", missing.to_str().unwrap(), "--no-renew"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = text(&output.stderr);
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(lines[0]["fields"]["exit_code"], 78);
    let message = lines[0]["fields"]["message"].as_str().unwrap();
    assert!(message.contains("missing.json"), "{message}");
}

//! The `pullkin` binary against hostile input: bad flags, credentials files that are not
//! credentials, a server whose certificate nobody trusts; and its promises about secrets:
//! private files and directories, no secret on stderr even at `-vvv`. The emulator runs
//! in this process; nothing touches the internet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fcm_emulator::{Emulator, SendMessage};
use pullkin::AppCredentials;
use serde_json::Value;

use crate::common;
#[cfg(unix)]
use common::mode;
use common::{WAIT, pullkin, run, text};

/// An emulator in this process (on its own runtime) and a directory for files.
pub(crate) struct Env {
    pub(crate) emulator: Emulator,
    runtime: tokio::runtime::Runtime,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
}

impl Env {
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(Emulator::start()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, emulator.ca_cert_pem()).unwrap();
        Self {
            emulator,
            runtime,
            dir,
            ca,
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn endpoints(&self) -> String {
        self.emulator
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    }

    fn mcs(&self) -> String {
        format!("localhost:{}", self.emulator.mcs_addr().port())
    }

    /// `pullkin register` (web persona) trusting `ca`; the output and the file.
    fn register_with(&self, name: &str, ca: &Path, verbose: bool) -> (Output, PathBuf) {
        let out = self.path(&format!("{name}.json"));
        let endpoints = self.endpoints();
        let mut args = vec![
            "register",
            "--sender-id",
            "42",
            "--app-id",
            "1:42:web:0a1b",
            "--api-key",
            "AIza-test",
            "--project-id",
            "e2e",
            "--web",
            "--out",
            out.to_str().unwrap(),
            "--endpoints",
            &endpoints,
            "--ca",
            ca.to_str().unwrap(),
        ];
        if verbose {
            args.push("-vvv");
        }
        (run(&args), out)
    }

    pub(crate) fn register(&self, name: &str) -> PathBuf {
        let (output, path) = self.register_with(name, &self.ca, false);
        assert!(output.status.success(), "{}", text(&output.stderr));
        path
    }

    /// `pullkin listen` on these files.
    pub(crate) fn listen(&self, files: &[&Path], state: &Path, ca: &Path, extra: &[&str]) -> Proc {
        self.listen_with_env(files, state, ca, extra, &[])
    }

    /// `pullkin listen` on these files, with these environment variables.
    pub(crate) fn listen_with_env(
        &self,
        files: &[&Path],
        state: &Path,
        ca: &Path,
        extra: &[&str],
        vars: &[(&str, &std::ffi::OsStr)],
    ) -> Proc {
        let endpoints = self.endpoints();
        let mcs = self.mcs();
        let mut args: Vec<&str> = vec!["listen"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        args.extend([
            "--state-dir",
            state.to_str().unwrap(),
            "--mcs",
            &mcs,
            "--endpoints",
            &endpoints,
            "--ca",
            ca.to_str().unwrap(),
            "--max-retry-delay",
            "0.2",
        ]);
        args.extend_from_slice(extra);
        Proc::spawn_with_env(&args, vars)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.runtime.block_on(self.emulator.shutdown());
    }
}

/// A running child whose output is collected by two threads.
pub(crate) struct Proc {
    pub(crate) child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Proc {
    pub(crate) fn spawn_with_env(args: &[&str], vars: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut child = pullkin()
            .args(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Self { child, out, err }
    }

    pub(crate) fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    pub(crate) fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle`.
    pub(crate) fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.err.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until stdout has `n` lines.
    pub(crate) fn wait_stdout(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.out.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} lines on stdout:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`kill -<name>`).
    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), pid.as_str()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGTERM, then the exit; returns whether it exited successfully.
    pub(crate) fn terminate(&mut self) -> bool {
        self.stop("TERM").success()
    }

    /// A signal, then the exit status.
    pub(crate) fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIG{signal}");
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

/// Every secret in a credentials file, as text.
pub(crate) fn secrets_of(path: &Path) -> Vec<(&'static str, String)> {
    let credentials = AppCredentials::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = vec![
        (
            "security token",
            credentials.gcm.security_token.expose().to_string(),
        ),
        ("GCM token", credentials.gcm.token.as_str().to_owned()),
        ("private key", credentials.keys.private.expose().clone()),
        ("auth secret", credentials.keys.secret.expose().clone()),
    ];
    if let Some(installation) = &credentials.gcm.installation {
        out.push((
            "FIS refresh token",
            installation.refresh_token.as_str().to_owned(),
        ));
        out.push(("FIS auth token", installation.auth_token.token().to_owned()));
    }
    out
}

pub(crate) fn assert_hidden(what: &str, text: &str, secrets: &[(&str, String)]) {
    for (name, value) in secrets {
        assert!(
            !text.contains(value.as_str()),
            "the {name} appears in {what}:\n{text}"
        );
    }
}

#[test]
fn hostile_flags_are_usage_errors() {
    // (arguments, the exit code, a word the message must contain)
    let table: &[(&[&str], i32, &str)] = &[
        (&["listen", "a.json", "--heartbeat", "0"], 2, "out of range"),
        (&["listen", "a.json", "--heartbeat", "soon"], 2, "seconds"),
        (
            &["listen", "a.json", "--heartbeat", "NaN"],
            2,
            "out of range",
        ),
        (
            &["listen", "a.json", "--heartbeat", "1e30"],
            2,
            "out of range",
        ),
        (&["listen", "a.json", "--max-retry-delay", "-1"], 2, "-1"),
        (&["listen", "a.json", "--count", "-5"], 2, "-5"),
        (
            &["listen", "a.json", "--count", "99999999999999999999999"],
            2,
            "--count",
        ),
        (&["listen", "a.json", "--mcs"], 2, "--mcs"),
        (&["listen", "a.json", "--no-such-flag"], 2, "--no-such-flag"),
        (&["send", "--token", "t", "--data", "=v"], 2, "KEY=VALUE"),
        (&["emulator", "--bind", "not-an-ip"], 2, "not-an-ip"),
        (&["emulator", "--mcs-port", "-1"], 2, "-1"),
        (&["credentials", "show"], 2, "Usage"),
        (&["register", "--web"], 2, "required"),
        // Well-formed flags with values that cannot work: configuration errors.
        (
            &["send", "--token", "t", "--endpoints", "not a url"],
            78,
            "--endpoints",
        ),
        (
            &[
                "send",
                "--token",
                "t",
                "--endpoints",
                "ftp://x",
                "--ca",
                "/nonexistent/ca.pem",
            ],
            78,
            "error:",
        ),
    ];
    for (args, code, needle) in table {
        let output = run(args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn hostile_credentials_files_are_clear_errors() {
    let env = Env::start();
    let good = env.register("good");
    let other = env.register("other");
    let good_json: Value = serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    let other_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    let spoil = |f: &dyn Fn(&mut Value)| {
        let mut doc = good_json.clone();
        f(&mut doc);
        doc.to_string().into_bytes()
    };
    // (name, file contents, words the error must contain)
    let table: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("empty", Vec::new(), &["malformed credentials JSON"]),
        ("binary", vec![0, 159, 146, 150, 255], &["credentials file"]),
        (
            "array",
            b"[1,2,3]".to_vec(),
            &["not a credentials document"],
        ),
        (
            "deeply nested",
            "[".repeat(100_000).into_bytes(),
            &["malformed credentials JSON"],
        ),
        (
            "no keys",
            spoil(&|d| {
                d.as_object_mut().unwrap().remove("keys");
            }),
            &["not a credentials document"],
        ),
        (
            "private key not base64",
            spoil(&|d| d["keys"]["private"] = "%%%".into()),
            &["keys are unusable"],
        ),
        (
            "auth secret of the wrong length",
            spoil(&|d| d["keys"]["secret"] = "AAAA".into()),
            &["keys are unusable"],
        ),
        (
            "public key of another device",
            spoil(&|d| d["keys"]["public"] = other_json["keys"]["public"].clone()),
            &["does not belong"],
        ),
    ];
    let secrets = secrets_of(&good);
    let state = env.path("state");
    for (name, contents, needles) in table {
        let file = env.path(&format!("bad-{}.json", name.replace(' ', "-")));
        std::fs::write(&file, &contents).unwrap();
        let output = run(&[
            "listen",
            file.to_str().unwrap(),
            "--no-renew",
            "--mcs",
            &env.mcs(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(stderr.contains("bad-"), "{name} names the file: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{name}: {stderr}");
        }
        assert_hidden(name, &stderr, &secrets);
    }
    // A directory where a file should be, and a state directory that is a file.
    let output = run(&[
        "listen",
        env.dir.path().to_str().unwrap(),
        "--no-renew",
        "--mcs",
        "x:1",
    ]);
    assert_eq!(output.status.code(), Some(78), "{}", text(&output.stderr));
    let output = run(&[
        "listen",
        good.to_str().unwrap(),
        "--no-renew",
        "--mcs",
        "x:1",
        "--state-dir",
        good.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("state directory"), "{stderr}");
}

#[test]
fn an_untrusted_emulator_is_refused() {
    let env = Env::start();
    // The CA of another emulator: a valid certificate, not the one that signed this
    // emulator's.
    let stranger = Env::start();
    let (output, out) = env.register_with("refused", &stranger.ca, false);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(!out.exists());
    assert!(env.emulator.devices().is_empty(), "no check-in got through");

    // Listening: neither the check-in of the renewal nor the MCS login gets through.
    let good = env.register("good");
    let android_id = AppCredentials::from_json(&std::fs::read_to_string(&good).unwrap())
        .unwrap()
        .gcm
        .android_id;
    let mut listener = env.listen(&[&good], &env.path("state"), &stranger.ca, &[]);
    // Each connection attempt (the first one too) checks the device in first, over the
    // same untrusted TLS.
    listener.wait_stderr("connection failed (check-in failed");
    let stderr = listener.stderr();
    let failure = stderr
        .lines()
        .find(|l| l.contains("connection failed (check-in failed"))
        .unwrap();
    assert!(failure.contains("TLS"), "{failure}");
    assert_eq!(env.emulator.login_count(android_id), 0);
    assert!(listener.terminate());
    assert!(listener.stdout().is_empty());
}

#[test]
fn files_are_private_and_no_secret_reaches_stderr_even_at_trace() {
    let env = Env::start();
    // Register at -vvv: stdout is the FCM token (that is the command's answer), stderr
    // holds no secret.
    let (output, file) = env.register_with("web", &env.ca, true);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let secrets = secrets_of(&file);
    let register_stderr = text(&output.stderr);
    assert!(register_stderr.contains("TRACE") || register_stderr.contains("DEBUG"));
    assert_hidden("register's stderr", &register_stderr, &secrets);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);

    let state = env.path("state");
    let mut listener = env.listen(&[&file], &state, &env.ca, &["-vvv"]);
    listener.wait_stderr("[web] connected");
    let token = AppCredentials::from_json(&std::fs::read_to_string(&file).unwrap())
        .unwrap()
        .fcm
        .token()
        .unwrap()
        .to_owned();
    env.emulator
        .send(&token, &SendMessage::new().data("n", "1"))
        .unwrap();
    listener.wait_stdout(1);
    assert!(listener.terminate());
    let listen_stderr = listener.stderr();
    assert!(listen_stderr.contains("TRACE") || listen_stderr.contains("DEBUG"));
    assert_hidden("listen's stderr", &listen_stderr, &secrets);
    let line: Value = serde_json::from_str(&listener.stdout()[0]).unwrap();
    assert_eq!(line["data"]["n"], "1");
    assert_hidden("listen's stdout", &listener.stdout()[0], &secrets);

    #[cfg(unix)]
    {
        assert_eq!(mode(&state), 0o700, "the state directory");
        let mut files = 0;
        for entry in std::fs::read_dir(&state).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
        assert!(files >= 2, "acks and credentials are stored");
    }
}

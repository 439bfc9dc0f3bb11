//! `pullkin-bench soak`: the emulator in this process, `pullkin listen` as a child
//! process, K apps, M messages of the three kinds (plain, `aesgcm`, `aes128gcm`) sent while
//! faults are injected at random and the listener is killed with SIGKILL and restarted.
//!
//! ```text
//! pullkin-bench soak [--full] [--sink nats|webhook] [--pullkin PATH] [--messages M]
//!                    [--apps K] [--kills N] [--faults F] [--rate MSG_PER_S] [--seed S]
//!                    [--drain-timeout S] [--log]
//! ```
//!
//! Short form (CI): 2 000 messages, 3 apps, 1 kill, ≥ 24 faults. `--full`: 20 000
//! messages, 4 kills, ≥ 200 faults.
//!
//! What must hold at the end (any violation fails the run, after the JSON summary):
//!
//! - **No loss**: every message (each carries a unique data key `n`) was printed by some
//!   listener instance, for the app it was sent to, with the encoding it was sent with.
//! - **No duplicate outside the crash window**: a message may be printed twice only when
//!   every earlier print of it came from an instance that was later SIGKILLed (the window
//!   between handing a message over and storing its id); those duplicates are counted and
//!   reported separately. Any other duplicate fails.
//! - **Bounded stored ids**: `unconfirmed + recent` of every app's stored state (its
//!   snapshot `<app>.acks.json` with the log `<app>.acks.log` replayed, read as the
//!   listener reads it) stays at most [`STORED_IDS_BOUND`] (the session's recent-id cap, 4 096, plus slack for ids
//!   delivered and not yet confirmed), sampled throughout the run and at the end.
//! - **Stable memory**: the listener's VmRSS, sampled every 500 ms, does not grow past
//!   twice its first sample after a warm-up of [`RSS_WARM_UP`], in any instance.
//!   (Measured: under glibc, RSS creeps up with the per-thread malloc arenas of the
//!   blocking pool's threads — 11 → 36 MiB over 30 000 messages in one instance — while
//!   with `MALLOC_ARENA_MAX=1` it levels off at ~19 MiB once the recent-id caps are full.
//!   `trend_kib` in the summary shows the shape.)
//! - Every message is acknowledged to the server, and the last listener exits cleanly on
//!   SIGTERM; no message is reported undecryptable.
//!
//! ## Through a sink: `--sink nats` or `--sink webhook`
//!
//! The listener forwards every app to a sink instead of printing (`pullkin listen
//! --sink …`), so a message is acknowledged to the emulator only once the sink took it.
//! Short form: 5 000 messages at 250/s, 3 SIGKILLs at random points, 12 MCS faults;
//! `--full`: 20 000 messages, 6 kills, 60 faults.
//!
//! - `nats`: the soak starts its own `nats-server -js` (`NATS_SERVER`, default
//!   `/usr/sbin/nats-server`) and creates the stream `SOAK` (subjects `soak.>`, file
//!   storage, a duplicate window of 10 minutes: longer than any run, so that every
//!   redelivery is dropped by its `Nats-Msg-Id`); the listener runs with `--sink
//!   nats://127.0.0.1:PORT/soak.{app} --create-stream SOAK`. The server is SIGKILLed
//!   mid-run and started again on the same port and store (twice with `--full`). At the
//!   end the stream is read from the start: every message sent must be in it **exactly
//!   once** — by `Nats-Msg-Id` (`<app>:<persistent_id>`, which must match the payload),
//!   by persistent id and by the sent number `n` — on subject `soak.<app>`, with the
//!   app and encoding it was sent with.
//! - `webhook`: the soak runs a local HTTPS receiver (its CA and the emulator's in one
//!   `--ca` bundle) that records every request and, at random times, answers 503 for
//!   1–2 s (an outage), holds a request for 1–2 s and closes the connection unanswered
//!   (a hang), or takes a request and closes before answering (a lost answer). Every
//!   message must be taken at least once (none missing), and every request for one
//!   message must carry the same `Idempotency-Key`, `<app>:<persistent_id>`: repeats
//!   are expected (a lost answer, a failed batch sent again, a kill) and counted —
//!   `repeats` (requests after a message's first) and `duplicates` (requests after one
//!   that took it, which the receiver drops by the key).
//!
//! The other checks (stored ids, memory, all acknowledged, clean exit) hold as above;
//! the listener must print nothing on stdout and report no rejected message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcm_emulator::{Emulator, Fault, SendMessage, Target};
use gcm_checkin::{GcmToken, SecurityToken};
use pullkin::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, DirStore, Store,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use webpush_ece::{EncryptOptions, ReceiverKeys};

use crate::hook::{Answer, Hook};
use crate::natsd::{self, NatsServer};
use crate::{Result, flag};

/// The most ids an app's stored acknowledgement state may hold: the session's cap on
/// recently confirmed ids (4 096) plus ids taken and not yet confirmed by the server (at
/// most the listener's queue, 256, plus one ack batch in flight).
pub(crate) const STORED_IDS_BOUND: usize = 4096 + 512;

/// RSS samples taken earlier than this after an instance started are not judged.
const RSS_WARM_UP: Duration = Duration::from_secs(3);

/// The heartbeat the listener is started with (`--heartbeat`): it pings after this long
/// without a frame and drops the connection when nothing answers as long again.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A stall is cleared this long after it was armed: past the heartbeat deadline, so
/// that the listener has to notice the silent connection and reconnect.
pub(crate) const STALL_FOR: Duration = Duration::from_millis(2_600);

/// Where the listener sends the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkKind {
    /// Printed on stdout (no `--sink`).
    Stdout,
    /// A JetStream stream of a `nats-server` the soak runs.
    Nats,
    /// A local HTTPS receiver the soak runs.
    Webhook,
}

impl SinkKind {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Nats => "nats",
            Self::Webhook => "webhook",
        }
    }
}

struct Settings {
    full: bool,
    sink: SinkKind,
    messages: usize,
    apps: usize,
    kills: usize,
    faults: usize,
    rate: f64,
    seed: u64,
    pullkin: PathBuf,
    drain_timeout: Duration,
}

fn settings(args: &[String]) -> Result<Settings> {
    let full = args.iter().any(|a| a == "--full");
    let sink = match flag(args, "--sink", "stdout".to_owned())?.as_str() {
        "stdout" | "-" => SinkKind::Stdout,
        "nats" => SinkKind::Nats,
        "webhook" => SinkKind::Webhook,
        other => return Err(format!("--sink {other}: nats or webhook")),
    };
    let (messages, kills, faults, rate) = match (sink, full) {
        (SinkKind::Stdout, true) => (20_000, 4, 200, 180.0),
        (SinkKind::Stdout, false) => (2_000, 1, 24, 120.0),
        (_, true) => (20_000, 6, 60, 250.0),
        (_, false) => (5_000, 3, 12, 250.0),
    };
    let default_pullkin = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pullkin")))
        .unwrap_or_else(|| PathBuf::from("pullkin"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let settings = Settings {
        full,
        sink,
        messages: flag(args, "--messages", messages)?,
        apps: flag(args, "--apps", 3usize)?,
        kills: flag(args, "--kills", kills)?,
        faults: flag(args, "--faults", faults)?,
        rate: flag(args, "--rate", rate)?,
        seed: flag(args, "--seed", seed)?,
        pullkin: flag(args, "--pullkin", default_pullkin)?,
        drain_timeout: Duration::from_secs(flag(args, "--drain-timeout", 60u64)?),
    };
    if settings.apps < 2 {
        return Err("--apps must be at least 2 (one Android, one web persona)".into());
    }
    if settings.messages == 0 || settings.rate <= 0.0 {
        return Err("--messages and --rate must be positive".into());
    }
    if !settings.pullkin.is_file() {
        return Err(format!(
            "no pullkin binary at {} (build it: cargo build --release -p pullkin-cli, or \
             pass --pullkin)",
            settings.pullkin.display()
        ));
    }
    Ok(settings)
}

/// A small deterministic generator (xorshift64*), so that a seed replays a run's choices.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `[low, high)`.
    pub(crate) fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_micros().max(1) as u64;
        low + Duration::from_micros(self.next() % span)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Plain,
    Aesgcm,
    Aes128gcm,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Aesgcm => "aesgcm",
            Self::Aes128gcm => "aes128gcm",
        }
    }

    /// The `encoding` the listener prints for this kind.
    pub(crate) fn encoding(self) -> Value {
        match self {
            Self::Plain => Value::Null,
            Self::Aesgcm => json!("aesgcm"),
            Self::Aes128gcm => json!("aes128gcm"),
        }
    }
}

pub(crate) struct App {
    pub(crate) name: String,
    pub(crate) android_id: u64,
    /// GCM token (Android persona) or FCM token (web persona).
    pub(crate) token: String,
    /// Web persona: where `aes128gcm` messages are encrypted to.
    pub(crate) subscription: Option<webpush_ece::SubscriptionKeys>,
}

/// Registers K devices in the emulator and writes their credentials files.
fn make_apps(emulator: &Emulator, count: usize, dir: &Path) -> Result<(Vec<App>, Vec<PathBuf>)> {
    let mut apps = Vec::new();
    let mut files = Vec::new();
    for i in 0..count {
        // The first app is Android, the others web, so that every kind has a target.
        let (app, credentials) = make_device(emulator, i, i == 0)?;
        let path = dir.join(format!("{}.json", app.name));
        let json = credentials.to_json().map_err(|e| e.to_string())?;
        pullkin::write_private_file(&path, json.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(path);
        apps.push(app);
    }
    Ok((apps, files))
}

/// Registers one device in the emulator, of the Android persona (`android{i}`) or the
/// web one (`web{i}`), and returns it with its credentials.
pub(crate) fn make_device(
    emulator: &Emulator,
    i: usize,
    android: bool,
) -> Result<(App, AppCredentials)> {
    let device = emulator.create_device();
    let keys = ReceiverKeys::generate();
    let (name, token, gcm_token, app_id, fcm, subscription) = if android {
        let gcm = emulator
            .register_gcm(device.android_id, "com.example.soak", None, "1234567890")
            .map_err(|e| e.to_string())?;
        (
            format!("android{i}"),
            gcm.token.clone(),
            gcm.token,
            "com.example.soak".to_owned(),
            AppCredentialsFcm::default(),
            None,
        )
    } else {
        let fcm = emulator
            .subscribe_web(
                device.android_id,
                &keys.public_key_base64(),
                &keys.auth_secret_base64(),
            )
            .map_err(|e| e.to_string())?;
        let registration = fcm_install::FcmRegistration::new(
            format!("projects/soak/registrations/{}", fcm.token),
            fcm_install::FcmToken::new(fcm.token.clone()),
        );
        (
            format!("web{i}"),
            fcm.token.clone(),
            fcm.gcm_token.clone(),
            "org.chromium.linux".to_owned(),
            AppCredentialsFcm {
                registration: Some(registration),
                error: None,
            },
            Some(keys.subscription_keys()),
        )
    };
    let credentials = AppCredentials {
        gcm: AppCredentialsGcm {
            token: GcmToken::new(gcm_token),
            app_id,
            android_id: device.android_id,
            security_token: SecurityToken::new(device.security_token),
            installation: None,
        },
        fcm,
        keys: AppCredentialsKeys::from_keys(&keys).map_err(|e| e.to_string())?,
        config: None,
    };
    let app = App {
        name,
        android_id: device.android_id,
        token,
        subscription,
    };
    Ok((app, credentials))
}

/// Sends message number `n` of `kind` to `app` (data keys `n` and `kind`): plain and
/// `aesgcm` through the send API (encrypted for a web registration), `aes128gcm`
/// encrypted here and posted as Web Push.
pub(crate) fn send_message(
    emulator: &Emulator,
    app: &App,
    kind: Kind,
    n: usize,
) -> Result<fcm_emulator::Sent> {
    let n = n.to_string();
    let result = match kind {
        Kind::Plain | Kind::Aesgcm => emulator.send(
            &app.token,
            &SendMessage::new().data("n", &n).data("kind", kind.name()),
        ),
        Kind::Aes128gcm => {
            let body = json!({ "data": { "n": n, "kind": kind.name() } }).to_string();
            let subscription = app.subscription.as_ref().ok_or("no subscription")?;
            let encrypted = webpush_ece::aes128gcm::encrypt(
                subscription,
                body.as_bytes(),
                &EncryptOptions::new(),
            )
            .map_err(|e| e.to_string())?;
            emulator.send_webpush(&app.token, encrypted)
        }
    };
    result.map_err(|e| format!("sending message {n}: {e}"))
}

/// One print of a message by a listener instance.
struct Print {
    instance: usize,
    persistent_id: String,
}

/// What the listeners printed, by message number.
#[derive(Default)]
struct Ledger {
    prints: HashMap<usize, Vec<Print>>,
    /// Lines that are not a message of this run, or a message with the wrong app or
    /// encoding.
    unexpected: Vec<String>,
    lines: usize,
    /// Stderr: connections made, failures reported, and problems (which fail the run).
    connects: usize,
    connection_failures: usize,
    /// `SinkFailed` reports: a batch the sink did not take, to be retried.
    sink_failures: usize,
    /// Listeners that exited at start-up because the sink was down.
    sink_unreachable_at_start: usize,
    problems: Vec<String>,
    stderr_tail: Vec<String>,
}

struct Expected {
    app: String,
    kind: Kind,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running `pullkin listen`.
struct Instance {
    index: usize,
    child: Child,
    pid: u32,
    started: Instant,
    readers: Vec<JoinHandle<()>>,
}

struct Launcher {
    pullkin: PathBuf,
    files: Vec<PathBuf>,
    endpoints: String,
    mcs: String,
    ca: PathBuf,
    state: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
    expected: Arc<Vec<Expected>>,
    /// Copy the listeners' stderr to ours (`--log`).
    log: bool,
    /// `--sink …` and the like.
    extra_args: Vec<String>,
    /// Set while the sink is down (and for a moment after): a listener that cannot reach
    /// it at start-up exits, which is then expected.
    sink_down: Arc<AtomicBool>,
}

impl Launcher {
    fn spawn(&self, index: usize) -> Result<Instance> {
        let mut command = Command::new(&self.pullkin);
        command.arg("listen").args(&self.files).args([
            "--endpoints".as_ref(),
            self.endpoints.as_ref(),
            "--mcs".as_ref(),
            self.mcs.as_ref(),
            "--ca".as_ref(),
            self.ca.as_os_str(),
            "--state-dir".as_ref(),
            self.state.as_os_str(),
            "--heartbeat".as_ref(),
            format!("{}", HEARTBEAT.as_secs_f64()).as_ref(),
            "--max-retry-delay".as_ref(),
            "0.25".as_ref(),
        ]);
        command.args(&self.extra_args);
        for var in [
            "PULLKIN_ENDPOINTS",
            "PULLKIN_MCS",
            "PULLKIN_CA",
            "PULLKIN_STATE_DIR",
            "PULLKIN_SINK",
            "PULLKIN_PARK",
            "PULLKIN_SINK_SECRET_FILE",
            "RUST_LOG",
        ] {
            command.env_remove(var);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.pullkin.display()))?;
        let pid = child.id().ok_or("the listener exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let ledger = Arc::clone(&self.ledger);
        let expected = Arc::clone(&self.expected);
        let out = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                record_print(&mut lock(&ledger), &expected, index, &line);
            }
        });
        let ledger = Arc::clone(&self.ledger);
        let log = self.log;
        let sink_down = Arc::clone(&self.sink_down);
        let err = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if log {
                    eprintln!("[listener {index}] {line}");
                }
                let mut ledger = lock(&ledger);
                // Count the command's own `[app] …` lines (its tracing log repeats them).
                if line.starts_with('[') && line.ends_with("] connected") {
                    ledger.connects += 1;
                } else if line.starts_with('[') && line.contains("connection failed") {
                    ledger.connection_failures += 1;
                } else if line.starts_with("error: sink ") && sink_down.load(Ordering::SeqCst) {
                    // Started while the sink was down: `listen` reaches its sinks before
                    // anything else, and exits when it cannot (a supervisor restarts it).
                    ledger.sink_unreachable_at_start += 1;
                } else if line.starts_with("SinkFailed {") {
                    // The command's report of a batch the sink did not take (a fault the
                    // soak injected); the library logs the same as "sink failed".
                    ledger.sink_failures += 1;
                } else if !(line.contains("sink failed:") && line.contains("retrying"))
                    && [
                        "could not be decrypted",
                        "handler failed",
                        "gave up",
                        "error:",
                        "SinkRejected",
                        "rejected for good",
                    ]
                    .iter()
                    .any(|p| line.contains(p))
                {
                    ledger.problems.push(format!("listener {index}: {line}"));
                }
                ledger.stderr_tail.push(format!("[{index}] {line}"));
                let excess = ledger.stderr_tail.len().saturating_sub(40);
                ledger.stderr_tail.drain(..excess);
            }
        });
        Ok(Instance {
            index,
            child,
            pid,
            started: Instant::now(),
            readers: vec![out, err],
        })
    }
}

/// The message number and persistent id of a delivered message (a printed line, a
/// webhook body, a stream message), when it is a message of this run with the app and
/// encoding it was sent with.
fn delivered(v: &Value, expected: &[Expected]) -> Option<(usize, String)> {
    let n: usize = v["data"]["n"].as_str()?.parse().ok()?;
    let wanted = expected.get(n)?;
    let right = v["app"] == wanted.app.as_str()
        && v["encoding"] == wanted.kind.encoding()
        && v["data"]["kind"] == wanted.kind.name();
    right.then(|| (n, v["persistent_id"].as_str().unwrap_or("").to_owned()))
}

fn record_print(ledger: &mut Ledger, expected: &[Expected], instance: usize, line: &str) {
    ledger.lines += 1;
    let parsed = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| delivered(&v, expected));
    match parsed {
        Some((n, persistent_id)) => ledger.prints.entry(n).or_default().push(Print {
            instance,
            persistent_id,
        }),
        None => {
            if ledger.unexpected.len() < 20 {
                ledger.unexpected.push(line.to_owned());
            }
        }
    }
}

fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `unconfirmed + recent` of each app's stored acknowledgement state, read through
/// `DirStore` (the snapshot and the lines of its log, as the listener reads them; a store
/// on the directory reads, never writes). A state that cannot be read fails the run.
async fn stored_ids(state: &Path, apps: &[App]) -> Result<BTreeMap<String, usize>> {
    let store = DirStore::open(state).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for app in apps {
        let stored = store
            .load_ack_state(&app.name)
            .await
            .map_err(|e| format!("the stored state of {}: {e}", app.name))?;
        out.insert(
            app.name.clone(),
            stored.unconfirmed.len() + stored.recent.len(),
        );
    }
    Ok(out)
}

/// SIGKILLs an instance and waits until everything it printed has been read.
async fn kill(instance: &mut Instance) -> Result {
    instance
        .child
        .start_kill()
        .map_err(|e| format!("cannot kill the listener: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(10), instance.child.wait())
        .await
        .map_err(|_| "the killed listener did not exit")?;
    for reader in instance.readers.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    }
    Ok(())
}

/// Waits until everything an instance that exited printed has been read.
async fn reap(instance: &mut Instance) {
    let _ = instance.child.wait().await;
    for reader in instance.readers.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    }
}

/// SIGTERMs an instance; returns whether it exited successfully.
async fn terminate(instance: &mut Instance) -> Result<bool> {
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &instance.pid.to_string()])
        .status()
        .await
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if !status.success() {
        return Err(format!("kill -TERM {} failed", instance.pid));
    }
    let exit = tokio::time::timeout(Duration::from_secs(15), instance.child.wait())
        .await
        .map_err(|_| "the listener did not exit within 15 s of SIGTERM")?
        .map_err(|e| e.to_string())?;
    for reader in instance.readers.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    }
    Ok(exit.success())
}

/// The faults of the MCS server, by name.
pub(crate) const FAULTS: &[&str] = &[
    "drop_mid_frame",
    "drop_after_frames",
    "stall",
    "close",
    "stream_error",
    "garbage",
    "unknown_tag",
    "cut",
];

/// Bytes that can never be a valid frame, written between frames.
pub(crate) fn garbage(rng: &mut Rng) -> Bytes {
    let variants: [&[u8]; 4] = [
        // A DataMessageStanza tag with a size far beyond the frame limit.
        &[8, 0xff, 0xff, 0xff, 0x7f],
        // A six-byte size varint.
        &[8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        // A DataMessageStanza whose protobuf ends inside a field.
        &[8, 3, 0x0a, 0x05, 0x61],
        // A LoginResponse whose body is a truncated varint.
        &[3, 2, 0xff, 0xff],
    ];
    Bytes::from_static(variants[rng.below(variants.len())])
}

/// Per-instance RSS samples after warm-up.
#[derive(Default)]
struct Rss {
    samples: Vec<(usize, u64)>,
}

impl Rss {
    fn summary(&self) -> (Value, Vec<String>) {
        let mut failures = Vec::new();
        let mut per_instance = Vec::new();
        let mut instances: Vec<usize> = self.samples.iter().map(|(i, _)| *i).collect();
        instances.dedup();
        for instance in instances {
            let values: Vec<u64> = self
                .samples
                .iter()
                .filter(|(i, _)| *i == instance)
                .map(|(_, v)| *v)
                .collect();
            let (Some(first), Some(last)) = (values.first(), values.last()) else {
                continue;
            };
            let max = values.iter().copied().max().unwrap_or(0);
            if max > first * 2 {
                failures.push(format!(
                    "listener {instance}: RSS grew from {first} KiB to {max} KiB after warm-up"
                ));
            }
            // Up to 8 samples spread over the instance's life, to show the trend.
            let step = values.len().div_ceil(8).max(1);
            let trend: Vec<u64> = values.iter().step_by(step).copied().collect();
            per_instance.push(json!({
                "instance": instance, "samples": values.len(),
                "first_kib": first, "last_kib": last, "max_kib": max, "trend_kib": trend,
            }));
        }
        let all: Vec<u64> = self.samples.iter().map(|(_, v)| *v).collect();
        let summary = json!({
            "first_kib": all.first(),
            "last_kib": all.last(),
            "max_kib": all.iter().max(),
            "per_instance": per_instance,
        });
        (summary, failures)
    }
}

/// Runs the soak.
pub(crate) async fn run(args: &[String]) -> Result {
    let settings = settings(args)?;
    let started = Instant::now();
    let mut rng = Rng::new(settings.seed);
    let emulator = Emulator::builder()
        .max_queued_messages(settings.messages + 10_000)
        .start()
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (apps, files) = make_apps(&emulator, settings.apps, dir.path())?;
    let ca = dir.path().join("ca.pem");
    // The sink side; `--ca` is the emulator's CA, with the webhook receiver's beside it.
    let mut side = SinkSide::start(settings.sink).await?;
    let mut ca_pem = emulator.ca_cert_pem().to_owned();
    if let SinkSide::Webhook(hook) = &side {
        ca_pem.push('\n');
        ca_pem.push_str(&hook.ca_pem);
    }
    std::fs::write(&ca, ca_pem).map_err(|e| e.to_string())?;
    let state = dir.path().join("state");

    // Plan every message: kinds in turn, each to an app of the right persona.
    let android: Vec<usize> = (0..apps.len())
        .filter(|i| apps[*i].subscription.is_none())
        .collect();
    let web: Vec<usize> = (0..apps.len())
        .filter(|i| apps[*i].subscription.is_some())
        .collect();
    let plan: Vec<(usize, Kind)> = (0..settings.messages)
        .map(|n| {
            let kind = [Kind::Plain, Kind::Aesgcm, Kind::Aes128gcm][n % 3];
            let app = match kind {
                Kind::Plain => android[(n / 3) % android.len()],
                _ => web[(n / 3) % web.len()],
            };
            (app, kind)
        })
        .collect();
    let expected: Arc<Vec<Expected>> = Arc::new(
        plan.iter()
            .map(|(app, kind)| Expected {
                app: apps[*app].name.clone(),
                kind: *kind,
            })
            .collect(),
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let launcher = Launcher {
        pullkin: settings.pullkin.clone(),
        files,
        endpoints: emulator
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        mcs: format!("localhost:{}", emulator.mcs_addr().port()),
        ca,
        state: state.clone(),
        ledger: Arc::clone(&ledger),
        expected: Arc::clone(&expected),
        log: args.iter().any(|a| a == "--log"),
        extra_args: side.listener_args(),
        sink_down: Arc::new(AtomicBool::new(false)),
    };

    // The schedule: kills spread evenly over the messages (through a sink, each at a
    // random point of the middle half of its share), faults at random intervals whose
    // mean spreads the wanted number over the sending time.
    let send_time = Duration::from_secs_f64(settings.messages as f64 / settings.rate);
    let share = settings.messages / (settings.kills + 1);
    let kill_at: Vec<usize> = (1..=settings.kills)
        .map(|k| {
            let even = k * share;
            if settings.sink == SinkKind::Stdout || share < 4 {
                even
            } else {
                even - share / 4 + rng.below(share / 2)
            }
        })
        .collect();
    let mut sink_plan = side.plan(settings.full, send_time, &mut rng);
    let mut sink_faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let planned_sink_faults = sink_plan.len();
    let mut nats_down_until: Option<Instant> = None;
    let mut sink_up_since: Option<Instant> = None;
    let mut hold_kills_until: Option<Instant> = None;
    let mut self_exits = 0usize;
    let mut kill_snapshots: Vec<(u64, HashSet<String>)> = Vec::new();
    let mean_gap = send_time.div_f64((settings.faults.max(1) as f64) * 1.15);
    let mut next_fault = Instant::now() + rng.between(mean_gap / 2, mean_gap * 3 / 2);
    let mut stalls: Vec<(Instant, u64)> = Vec::new();
    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut order: Vec<&'static str> = Vec::new();
    let mut failed_checkins = 0usize;
    let mut kills = 0usize;
    let mut instance_count = 0usize;
    let mut instance = Some(launcher.spawn(instance_count)?);
    instance_count += 1;
    let mut restart_at: Option<Instant> = None;
    let mut killed: HashSet<usize> = HashSet::new();
    let mut rss = Rss::default();
    let mut stored_max = 0usize;
    let mut next_sample = Instant::now();
    let mut sent = 0usize;
    let mut sending_started = Instant::now();
    let mut sent_kinds: BTreeMap<&'static str, usize> = BTreeMap::new();

    // Wait for the first connections, so that the first messages are not all backlog.
    let connected_deadline = Instant::now() + Duration::from_secs(20);
    while lock(&ledger).connects < apps.len() {
        if Instant::now() > connected_deadline {
            let tail = lock(&ledger).stderr_tail.join("\n");
            return Err(format!("the listener did not connect:\n{tail}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sending_started = sending_started.max(Instant::now());

    let total_faults = |faults: &BTreeMap<&str, usize>, checkins: usize| -> usize {
        faults.values().sum::<usize>() + checkins
    };
    loop {
        let now = Instant::now();
        let sending = sent < settings.messages;
        let faulting = sending || total_faults(&faults, failed_checkins) < settings.faults;
        if !sending
            && !faulting
            && stalls.is_empty()
            && restart_at.is_none()
            && sink_plan.is_empty()
            && nats_down_until.is_none()
        {
            break;
        }

        // The sink's faults, when due.
        while let Some((at, _)) = sink_plan.first()
            && sending_started + *at <= now
        {
            let (_, fault) = sink_plan.remove(0);
            *sink_faults.entry(fault.name()).or_default() += 1;
            match (&mut side, fault) {
                (SinkSide::Nats { server, .. }, SinkFault::NatsRestart(down)) => {
                    launcher.sink_down.store(true, Ordering::SeqCst);
                    server.try_kill().await?;
                    nats_down_until = Some(Instant::now() + down);
                    // The listener lives through a long outage (no kill meanwhile), so
                    // that its batches time out and are published again.
                    if down > SINK_ACK_TIMEOUT {
                        hold_kills_until = Some(Instant::now() + SINK_ACK_TIMEOUT * 6 / 5);
                    }
                }
                (SinkSide::Webhook(hook), SinkFault::Outage(span)) => hook.outage(span),
                (SinkSide::Webhook(hook), SinkFault::Hang(span)) => hook.hang_next(1, span),
                (SinkSide::Webhook(hook), SinkFault::Close) => hook.close_next(1),
                _ => {}
            }
        }
        if let Some(until) = nats_down_until
            && now >= until
            && let SinkSide::Nats { server, .. } = &mut side
        {
            server.try_restart().await?;
            nats_down_until = None;
            sink_up_since = Some(Instant::now());
        }
        // A listener started while the sink was down may still be failing to reach it.
        if let Some(since) = sink_up_since
            && now >= since + Duration::from_secs(3)
        {
            launcher.sink_down.store(false, Ordering::SeqCst);
            sink_up_since = None;
        }
        // A listener that exited by itself is started again, as a supervisor would (when
        // the sink was down at its start-up, that is expected; otherwise a failure).
        if let Some(current) = instance.as_mut()
            && let Ok(Some(status)) = current.child.try_wait()
        {
            let expected = launcher.sink_down.load(Ordering::SeqCst);
            if !expected {
                lock(&ledger).problems.push(format!(
                    "listener {} exited by itself ({status})",
                    current.index
                ));
            }
            if let Some(mut gone) = instance.take() {
                reap(&mut gone).await;
            }
            self_exits += 1;
            restart_at = Some(Instant::now() + Duration::from_millis(500));
        }

        // Send what is due at the configured rate.
        let due = ((now - sending_started).as_secs_f64() * settings.rate) as usize;
        let due = due.min(settings.messages);
        while sent < due {
            // A kill point reached: SIGKILL the listener mid-stream, restart it later.
            let held = hold_kills_until.is_some_and(|until| Instant::now() < until);
            if kills < kill_at.len() && sent >= kill_at[kills] && instance.is_some() && !held {
                if let Some(mut current) = instance.take() {
                    kill(&mut current).await?;
                    killed.insert(current.index);
                }
                kills += 1;
                // (Not while the server is down: the request would wait for it.)
                if let SinkSide::Nats { client, .. } = &side
                    && nats_down_until.is_none()
                    && let Ok(Some(last)) = tokio::time::timeout(
                        Duration::from_secs(1),
                        natsd::last_sequence(client, STREAM),
                    )
                    .await
                {
                    // What the server still waits an acknowledgement for, and how far
                    // the stream got: those stored already come back as repeats.
                    let outstanding: HashSet<String> = apps
                        .iter()
                        .flat_map(|a| {
                            let mut ids = emulator.unacked_ids(a.android_id);
                            ids.extend(emulator.pending_ids(a.android_id));
                            ids
                        })
                        .collect();
                    kill_snapshots.push((last, outstanding));
                }
                // Every other restart begins with a failing check-in (the renewal at
                // start-up retries, then goes on with the stored credentials).
                if kills % 2 == 1 {
                    emulator.fail_checkins(1, 503);
                    failed_checkins += 1;
                }
                restart_at = Some(
                    Instant::now()
                        + rng.between(Duration::from_millis(200), Duration::from_millis(1200)),
                );
            }
            let (app, kind) = plan[sent];
            send_message(&emulator, &apps[app], kind, sent)?;
            *sent_kinds.entry(kind.name()).or_default() += 1;
            sent += 1;
        }

        if let Some(at) = restart_at
            && now >= at
        {
            instance = Some(launcher.spawn(instance_count)?);
            instance_count += 1;
            restart_at = None;
        }

        // Clear the stalls that lasted long enough.
        stalls.retain(|(until, android_id)| {
            if now >= *until {
                emulator.clear_faults(Target::Device(*android_id));
                false
            } else {
                true
            }
        });

        if faulting && now >= next_fault {
            let app = &apps[rng.below(apps.len())];
            let target = Target::Device(app.android_id);
            let stalled = stalls.iter().any(|(_, id)| *id == app.android_id);
            // Every kind in turn, in a fresh random order each round.
            if order.is_empty() {
                order = FAULTS.to_vec();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
            }
            let name = order.pop().unwrap_or("cut");
            let fault = match name {
                "drop_mid_frame" => Some(Fault::DropMidFrame),
                "drop_after_frames" => Some(Fault::DropAfterFrames(1 + rng.below(40) as u32)),
                "stall" if !stalled => {
                    stalls.push((now + STALL_FOR, app.android_id));
                    Some(Fault::Stall)
                }
                "stall" => None,
                "close" => Some(Fault::SendClose),
                "stream_error" => Some(Fault::SendStreamError {
                    error_type: "conflict".into(),
                    text: Some("soak".into()),
                }),
                "garbage" => Some(Fault::SendGarbage(garbage(&mut rng))),
                "unknown_tag" => Some(Fault::SendUnknownTag {
                    tag: [15u8, 16, 42, 200, 255][rng.below(5)],
                    body: Bytes::from_static(b"\x0a\x03abc"),
                }),
                _ => {
                    emulator.disconnect(target);
                    None
                }
            };
            if let Some(fault) = fault {
                emulator
                    .inject_fault(target, fault)
                    .map_err(|e| e.to_string())?;
            }
            if name != "stall" || !stalled {
                *faults.entry(name).or_default() += 1;
            }
            next_fault = now + rng.between(mean_gap / 2, mean_gap * 3 / 2);
        }

        if now >= next_sample {
            sample(
                instance.as_ref().map(view),
                &mut rss,
                &state,
                &apps,
                &mut stored_max,
            )
            .await?;
            next_sample = now + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sending_seconds = sending_started.elapsed().as_secs_f64();

    // Drain: wait until every message was printed (or taken by the sink), sampling as
    // before.
    let drain_deadline = Instant::now() + settings.drain_timeout;
    loop {
        let seen = side.delivered(&ledger, settings.messages).await;
        if seen >= settings.messages || Instant::now() > drain_deadline {
            break;
        }
        if Instant::now() >= next_sample {
            sample(
                instance.as_ref().map(view),
                &mut rss,
                &state,
                &apps,
                &mut stored_max,
            )
            .await?;
            next_sample = Instant::now() + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every message acknowledged to the server.
    let acked = emulator
        .wait_until(Duration::from_secs(20), |e| {
            apps.iter().all(|a| {
                e.pending_ids(a.android_id).is_empty() && e.unacked_ids(a.android_id).is_empty()
            })
        })
        .await;
    let mut clean_exit = false;
    if let Some(mut last) = instance.take() {
        sample(Some(view(&last)), &mut rss, &state, &apps, &mut stored_max).await?;
        clean_exit = terminate(&mut last).await?;
    }
    let stored_end = stored_ids(&state, &apps).await?;
    stored_max = stored_max.max(stored_end.values().copied().max().unwrap_or(0));
    emulator.shutdown().await;

    // What the sink holds (before the ledger is locked: reading the stream awaits).
    let sink_verdict = side.verdict(&expected, &kill_snapshots).await?;
    if settings.sink != SinkKind::Stdout {
        return finish_sink(SinkRun {
            settings: &settings,
            started,
            sending_seconds,
            verdict: sink_verdict,
            ledger: &lock(&ledger),
            sink_faults,
            planned_sink_faults,
            kills,
            instance_count,
            self_exits,
            faults: total_faults(&faults, failed_checkins),
            faults_by_kind: {
                let mut by_kind: BTreeMap<&str, usize> = faults.clone();
                by_kind.insert("failing_checkin", failed_checkins);
                by_kind
            },
            stored_max,
            stored_end,
            acked,
            clean_exit,
            rss,
            sent_kinds,
        });
    }

    // The verdict.
    let ledger = lock(&ledger);
    let mut failures: Vec<String> = Vec::new();
    let missing: Vec<usize> = (0..settings.messages)
        .filter(|n| !ledger.prints.contains_key(n))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "{} messages never arrived (first: {:?})",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let mut in_window = 0usize;
    let mut outside = Vec::new();
    for (n, prints) in &ledger.prints {
        for (j, later) in prints.iter().enumerate().skip(1) {
            let explained = prints[..j]
                .iter()
                .all(|p| killed.contains(&p.instance) && p.instance < later.instance);
            if explained {
                in_window += 1;
            } else {
                outside.push(format!(
                    "message {n} ({}) printed by listeners {:?}",
                    later.persistent_id,
                    prints.iter().map(|p| p.instance).collect::<Vec<_>>()
                ));
            }
        }
    }
    if !outside.is_empty() {
        failures.push(format!(
            "{} duplicates outside the crash window: {:?}",
            outside.len(),
            &outside[..outside.len().min(5)]
        ));
    }
    if !ledger.unexpected.is_empty() {
        failures.push(format!(
            "unexpected output lines: {:?}",
            &ledger.unexpected[..ledger.unexpected.len().min(3)]
        ));
    }
    if !ledger.problems.is_empty() {
        failures.push(format!(
            "the listener reported problems: {:?}",
            &ledger.problems[..ledger.problems.len().min(5)]
        ));
    }
    if stored_max > STORED_IDS_BOUND {
        failures.push(format!(
            "a stored acknowledgement state held {stored_max} ids (bound {STORED_IDS_BOUND})"
        ));
    }
    if !acked {
        failures.push("the server still holds unacknowledged messages".into());
    }
    if !clean_exit {
        failures.push("the last listener did not exit cleanly on SIGTERM".into());
    }
    if kills < settings.kills {
        failures.push(format!("only {kills} of {} kills happened", settings.kills));
    }
    let (rss_summary, rss_failures) = rss.summary();
    failures.extend(rss_failures);
    let fault_count = total_faults(&faults, failed_checkins);
    if fault_count < settings.faults {
        failures.push(format!(
            "only {fault_count} of {} faults were injected",
            settings.faults
        ));
    }
    let duplicates: usize = ledger
        .prints
        .values()
        .map(|p| p.len().saturating_sub(1))
        .sum();
    let mut faults_by_kind: BTreeMap<&str, usize> = faults.clone();
    faults_by_kind.insert("failing_checkin", failed_checkins);
    let summary = json!({
        "soak": if settings.full { "full" } else { "short" },
        "ok": failures.is_empty(),
        "seed": settings.seed,
        "messages": settings.messages,
        "sent_by_kind": sent_kinds,
        "apps": apps.len(),
        "delivered": ledger.prints.len(),
        "missing": missing.len(),
        "printed_lines": ledger.lines,
        "duplicates": duplicates,
        "duplicates_in_crash_window": in_window,
        "duplicates_outside_crash_window": outside.len(),
        "kills": kills,
        "listener_instances": instance_count,
        "faults": fault_count,
        "faults_by_kind": faults_by_kind,
        "listener_connects": ledger.connects,
        "connection_failures_reported": ledger.connection_failures,
        "stored_ids_max": stored_max,
        "stored_ids_end": stored_end,
        "stored_ids_bound": STORED_IDS_BOUND,
        "server_all_acked": acked,
        "clean_exit_on_sigterm": clean_exit,
        "rss": rss_summary,
        "sending_seconds": (sending_seconds * 10.0).round() / 10.0,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "failures": failures,
    });
    println!("{summary}");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "soak failed (seed {}); last listener output:\n{}",
            settings.seed,
            ledger.stderr_tail.join("\n")
        ))
    }
}

/// What [`sample`] needs of an instance.
struct View {
    index: usize,
    pid: u32,
    started: Instant,
}

fn view(instance: &Instance) -> View {
    View {
        index: instance.index,
        pid: instance.pid,
        started: instance.started,
    }
}

/// Samples the listener's RSS (after its warm-up) and the stored-id counts.
async fn sample(
    instance: Option<View>,
    rss: &mut Rss,
    state: &Path,
    apps: &[App],
    stored_max: &mut usize,
) -> Result {
    if let Some(view) = instance
        && view.started.elapsed() >= RSS_WARM_UP
        && let Some(kib) = rss_kib_of(view.pid)
    {
        rss.samples.push((view.index, kib));
    }
    let stored = stored_ids(state, apps).await?;
    *stored_max = (*stored_max).max(stored.values().copied().max().unwrap_or(0));
    Ok(())
}

// ---- through a sink ----

/// The stream the NATS soak creates, its subjects, and the listener's subject template.
const STREAM: &str = "SOAK";
const STREAM_SUBJECTS: &str = "soak.>";
const SUBJECT_TEMPLATE: &str = "soak.{app}";
/// The stream's duplicate window: longer than any run, so that every redelivery (a
/// listener killed before it stored an id, a batch retried after a lost PubAck) is
/// dropped by its `Nats-Msg-Id`. (The listener's `--create-stream` would make one of
/// 2 minutes; it finds this one instead and uses it as it is.)
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// How long the NATS sink waits for a PubAck (`NatsConfig::ack_timeout`'s default).
const SINK_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The sink side of the soak.
enum SinkSide {
    Stdout,
    Nats {
        server: Box<NatsServer>,
        client: async_nats::Client,
    },
    Webhook(Hook),
}

/// A fault of the sink, injected at a planned time.
#[derive(Debug, Clone, Copy)]
enum SinkFault {
    /// nats-server SIGKILLed, started again after this long.
    NatsRestart(Duration),
    /// The receiver answers 503 for this long.
    Outage(Duration),
    /// The next request is held this long, then its connection closed unanswered.
    Hang(Duration),
    /// The next request is taken, then its connection closed before the answer.
    Close,
}

impl SinkFault {
    fn name(self) -> &'static str {
        match self {
            Self::NatsRestart(_) => "nats_server_restart",
            Self::Outage(_) => "outage_503",
            Self::Hang(_) => "hang_then_close",
            Self::Close => "taken_then_closed",
        }
    }
}

impl SinkSide {
    async fn start(kind: SinkKind) -> Result<Self> {
        match kind {
            SinkKind::Stdout => Ok(Self::Stdout),
            SinkKind::Nats => {
                let server = NatsServer::try_start().await?;
                let client = server.try_client().await?;
                natsd::create_stream(&client, STREAM, STREAM_SUBJECTS, DUPLICATE_WINDOW).await?;
                Ok(Self::Nats {
                    server: Box::new(server),
                    client,
                })
            }
            SinkKind::Webhook => Ok(Self::Webhook(Hook::start(true)?)),
        }
    }

    fn listener_args(&self) -> Vec<String> {
        match self {
            Self::Stdout => Vec::new(),
            Self::Nats { server, .. } => vec![
                "--sink".into(),
                server.url(SUBJECT_TEMPLATE),
                "--create-stream".into(),
                STREAM.into(),
            ],
            Self::Webhook(hook) => vec!["--sink".into(), hook.url()],
        }
    }

    /// The sink's faults, at random times in the sending (sorted by time).
    fn plan(&self, full: bool, send_time: Duration, rng: &mut Rng) -> Vec<(Duration, SinkFault)> {
        let mut at =
            |from: f64, to: f64| rng.between(send_time.mul_f64(from), send_time.mul_f64(to));
        let mut plan = Vec::new();
        match self {
            Self::Stdout => {}
            Self::Nats { .. } => {
                // Down longer than the sink's PubAck timeout (5 s), so that batches fail
                // and are published again (the repeats dropped by their Nats-Msg-Id);
                // with --full also once briefly (the client's buffer bridges the gap).
                let long = |when: Duration| {
                    SINK_ACK_TIMEOUT + Duration::from_millis(500 + (when.as_micros() % 1500) as u64)
                };
                let short =
                    |when: Duration| Duration::from_millis(500 + (when.as_micros() % 1000) as u64);
                if full {
                    let when = at(0.2, 0.4);
                    plan.push((when, SinkFault::NatsRestart(short(when))));
                    let when = at(0.6, 0.8);
                    plan.push((when, SinkFault::NatsRestart(long(when))));
                } else {
                    let when = at(0.3, 0.6);
                    plan.push((when, SinkFault::NatsRestart(long(when))));
                }
            }
            Self::Webhook(_) => {
                let (outages, hangs, closes) = if full { (6, 10, 30) } else { (2, 3, 8) };
                for _ in 0..outages {
                    let when = at(0.1, 0.85);
                    let span = Duration::from_millis(1000 + (when.as_micros() % 1000) as u64);
                    plan.push((when, SinkFault::Outage(span)));
                }
                for _ in 0..hangs {
                    let when = at(0.1, 0.85);
                    let span = Duration::from_millis(1000 + (when.as_micros() % 1000) as u64);
                    plan.push((when, SinkFault::Hang(span)));
                }
                for _ in 0..closes {
                    plan.push((at(0.05, 0.9), SinkFault::Close));
                }
            }
        }
        plan.sort_by_key(|(when, _)| *when);
        plan
    }

    /// How many messages were delivered so far (an estimate good enough to stop
    /// waiting: the verdict counts exactly).
    async fn delivered(&self, ledger: &Mutex<Ledger>, messages: usize) -> usize {
        match self {
            Self::Stdout => lock(ledger).prints.len(),
            Self::Nats { client, .. } => natsd::stream_count(client, STREAM)
                .await
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            Self::Webhook(hook) => {
                // Counting distinct messages reads every request: only once enough were
                // taken to be worth it.
                if hook.taken() < messages {
                    return hook.taken().min(messages.saturating_sub(1));
                }
                let mut taken = HashSet::new();
                for request in hook.requests() {
                    if request.answer.took() {
                        taken.insert(request.json["data"]["n"].as_str().map(str::to_owned));
                    }
                }
                taken.len()
            }
        }
    }

    /// What the sink holds at the end, judged.
    async fn verdict(
        &self,
        expected: &[Expected],
        kill_snapshots: &[(u64, HashSet<String>)],
    ) -> Result<SinkVerdict> {
        let mut verdict = SinkVerdict::default();
        match self {
            Self::Stdout => {}
            Self::Nats { client, server } => {
                let stored = natsd::read_stream(client, STREAM)
                    .await
                    .map_err(|e| format!("{e}\nnats-server log:\n{}", server.log_tail()))?;
                let mut keys: HashMap<String, usize> = HashMap::new();
                for message in &stored {
                    let Some((n, persistent_id)) = delivered(&message.json, expected) else {
                        verdict.unexpected.push(format!(
                            "{} {:?}: {}",
                            message.subject, message.msg_id, message.json
                        ));
                        continue;
                    };
                    let app = &expected[n].app;
                    let key = format!("{app}:{persistent_id}");
                    if message.msg_id.as_deref() != Some(key.as_str()) {
                        verdict.key_mismatches.push(format!(
                            "message {n}: Nats-Msg-Id {:?}, payload {key}",
                            message.msg_id
                        ));
                    }
                    if message.subject != format!("soak.{app}") {
                        verdict
                            .unexpected
                            .push(format!("message {n} on subject {}", message.subject));
                    }
                    *keys.entry(key).or_default() += 1;
                    verdict.by_n.entry(n).or_default().push(persistent_id);
                }
                verdict.duplicate_keys = keys.values().map(|c| c - 1).sum();
                verdict.duplicates = verdict
                    .by_n
                    .values()
                    .map(|ids| ids.len().saturating_sub(1))
                    .sum();
                verdict.taken_n = verdict.by_n.keys().copied().collect();
                // Messages the stream held at a kill while the FCM server still waited
                // for their acknowledgement: each came back after the restart (unless
                // the listener's stored ids covered it), and only its Nats-Msg-Id kept
                // it from being stored twice.
                let stored_unacked_at_kills: usize = kill_snapshots
                    .iter()
                    .map(|(last, outstanding)| {
                        stored
                            .iter()
                            .filter(|m| {
                                m.sequence <= *last
                                    && m.json["persistent_id"]
                                        .as_str()
                                        .is_some_and(|id| outstanding.contains(id))
                            })
                            .count()
                    })
                    .sum();
                verdict.extra = json!({
                    "stream": STREAM,
                    "stream_messages": stored.len(),
                    "duplicate_window_s": DUPLICATE_WINDOW.as_secs(),
                    "stored_unacked_at_kills": stored_unacked_at_kills,
                });
            }
            Self::Webhook(hook) => {
                let requests = hook.requests();
                let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
                // Per message: its keys, requests and takes.
                let mut seen: HashMap<usize, (HashSet<Option<String>>, usize, usize)> =
                    HashMap::new();
                for request in &requests {
                    *answers.entry(answer_name(request.answer)).or_default() += 1;
                    let Some((n, persistent_id)) = delivered(&request.json, expected) else {
                        verdict
                            .unexpected
                            .push(format!("{:?}: {}", request.key, request.json));
                        continue;
                    };
                    let key = format!("{}:{persistent_id}", expected[n].app);
                    if request.key.as_deref() != Some(key.as_str()) {
                        verdict.key_mismatches.push(format!(
                            "message {n}: Idempotency-Key {:?}, payload {key}",
                            request.key
                        ));
                    }
                    let entry = seen.entry(n).or_default();
                    entry.0.insert(request.key.clone());
                    entry.1 += 1;
                    if request.answer.took() {
                        entry.2 += 1;
                        verdict.by_n.entry(n).or_default().push(persistent_id);
                    }
                }
                for (n, (keys, requests, takes)) in &seen {
                    if keys.len() > 1 {
                        verdict
                            .key_mismatches
                            .push(format!("message {n} came with keys {keys:?}"));
                    }
                    verdict.repeats += requests - 1;
                    verdict.duplicates += takes.saturating_sub(1);
                }
                verdict.taken_n = verdict.by_n.keys().copied().collect();
                verdict.extra = json!({
                    "requests": requests.len(),
                    "answers": answers,
                    "connections": hook.connections(),
                    "received": hook.received(),
                });
            }
        }
        Ok(verdict)
    }
}

fn answer_name(answer: Answer) -> &'static str {
    match answer {
        Answer::Taken => "200",
        Answer::Unavailable => "503",
        Answer::Hung => "hung_then_closed",
        Answer::TakenThenClosed => "taken_then_closed",
    }
}

/// What the sink held at the end.
#[derive(Default)]
struct SinkVerdict {
    /// Per message number, the persistent ids it was taken with (the stream's messages,
    /// or the webhook requests that took it).
    by_n: HashMap<usize, Vec<String>>,
    taken_n: HashSet<usize>,
    /// Takes beyond a message's first (in the stream: must be none).
    duplicates: usize,
    /// Stream messages beyond the first of a `Nats-Msg-Id`.
    duplicate_keys: usize,
    /// Webhook requests beyond a message's first.
    repeats: usize,
    /// A `Nats-Msg-Id` or `Idempotency-Key` that is not the message's `<app>:<id>`, or one
    /// message under several keys.
    key_mismatches: Vec<String>,
    /// Deliveries that are no message of this run, or went to the wrong place.
    unexpected: Vec<String>,
    extra: Value,
}

/// Everything the sink soak's verdict looks at.
struct SinkRun<'a> {
    settings: &'a Settings,
    started: Instant,
    sending_seconds: f64,
    verdict: SinkVerdict,
    ledger: &'a Ledger,
    sink_faults: BTreeMap<&'static str, usize>,
    planned_sink_faults: usize,
    kills: usize,
    instance_count: usize,
    /// Listeners that exited by themselves (and were started again).
    self_exits: usize,
    faults: usize,
    faults_by_kind: BTreeMap<&'static str, usize>,
    stored_max: usize,
    stored_end: BTreeMap<String, usize>,
    acked: bool,
    clean_exit: bool,
    rss: Rss,
    sent_kinds: BTreeMap<&'static str, usize>,
}

/// The verdict of a soak through a sink: the JSON summary, and an error when any check
/// failed.
fn finish_sink(run: SinkRun<'_>) -> Result {
    let settings = run.settings;
    let verdict = &run.verdict;
    let ledger = run.ledger;
    let mut failures: Vec<String> = Vec::new();
    let first = |list: &[String]| list[..list.len().min(5)].to_vec();
    let missing: Vec<usize> = (0..settings.messages)
        .filter(|n| !verdict.taken_n.contains(n))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "{} messages never reached the sink (first: {:?})",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    if settings.sink == SinkKind::Nats && (verdict.duplicates > 0 || verdict.duplicate_keys > 0) {
        let twice: Vec<String> = verdict
            .by_n
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .take(5)
            .map(|(n, ids)| format!("message {n}: {ids:?}"))
            .collect();
        failures.push(format!(
            "the stream holds {} duplicates ({} by Nats-Msg-Id): {twice:?}",
            verdict.duplicates, verdict.duplicate_keys
        ));
    }
    if !verdict.key_mismatches.is_empty() {
        failures.push(format!(
            "{} deliveries with the wrong key: {:?}",
            verdict.key_mismatches.len(),
            first(&verdict.key_mismatches)
        ));
    }
    if !verdict.unexpected.is_empty() {
        failures.push(format!(
            "{} unexpected deliveries: {:?}",
            verdict.unexpected.len(),
            first(&verdict.unexpected)
        ));
    }
    if !ledger.unexpected.is_empty() {
        failures.push(format!(
            "the listener printed on stdout: {:?}",
            first(&ledger.unexpected)
        ));
    }
    if !ledger.problems.is_empty() {
        failures.push(format!(
            "the listener reported problems: {:?}",
            first(&ledger.problems)
        ));
    }
    if run.stored_max > STORED_IDS_BOUND {
        failures.push(format!(
            "a stored acknowledgement state held {} ids (bound {STORED_IDS_BOUND})",
            run.stored_max
        ));
    }
    if !run.acked {
        failures.push("the server still holds unacknowledged messages".into());
    }
    if !run.clean_exit {
        failures.push("the last listener did not exit cleanly on SIGTERM".into());
    }
    if run.kills < settings.kills {
        failures.push(format!(
            "only {} of {} kills happened",
            run.kills, settings.kills
        ));
    }
    if run.faults < settings.faults {
        failures.push(format!(
            "only {} of {} MCS faults were injected",
            run.faults, settings.faults
        ));
    }
    let sink_fault_count: usize = run.sink_faults.values().sum();
    if sink_fault_count < run.planned_sink_faults {
        failures.push(format!(
            "only {sink_fault_count} of {} sink faults were injected",
            run.planned_sink_faults
        ));
    }
    let (rss_summary, rss_failures) = run.rss.summary();
    failures.extend(rss_failures);
    let mut summary = json!({
        "soak": if settings.full { "full" } else { "short" },
        "sink": settings.sink.name(),
        "ok": failures.is_empty(),
        "seed": settings.seed,
        "messages": settings.messages,
        "sent_by_kind": run.sent_kinds,
        "apps": settings.apps,
        "delivered": verdict.taken_n.len(),
        "missing": missing.len(),
        "duplicates": verdict.duplicates,
        "kills": run.kills,
        "listener_instances": run.instance_count,
        "listener_exits": run.self_exits,
        "listener_exits_sink_unreachable": ledger.sink_unreachable_at_start,
        "sink_faults": run.sink_faults,
        "sink_failures_reported": ledger.sink_failures,
        "faults": run.faults,
        "faults_by_kind": run.faults_by_kind,
        "listener_connects": ledger.connects,
        "stored_ids_max": run.stored_max,
        "stored_ids_end": run.stored_end,
        "server_all_acked": run.acked,
        "clean_exit_on_sigterm": run.clean_exit,
        "rss": rss_summary,
        "sending_seconds": (run.sending_seconds * 10.0).round() / 10.0,
        "seconds": (run.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "failures": failures,
    });
    match settings.sink {
        SinkKind::Webhook => {
            summary["repeats"] = json!(verdict.repeats);
            summary["key_mismatches"] = json!(verdict.key_mismatches.len());
            summary["webhook"] = verdict.extra.clone();
        }
        _ => {
            summary["duplicate_msg_ids"] = json!(verdict.duplicate_keys);
            summary["nats"] = verdict.extra.clone();
        }
    }
    println!("{summary}");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "soak failed (seed {}); last listener output:\n{}",
            settings.seed,
            ledger.stderr_tail.join("\n")
        ))
    }
}

//! `pullkin-bench soak`: the emulator in this process, `pullkin listen` as a child
//! process, K apps, M messages of the three kinds (plain, `aesgcm`, `aes128gcm`) sent while
//! faults are injected at random and the listener is killed with SIGKILL and restarted.
//!
//! ```text
//! pullkin-bench soak [--full] [--pullkin PATH] [--messages M] [--apps K] [--kills N]
//!                    [--faults F] [--rate MSG_PER_S] [--seed S] [--drain-timeout S] [--log]
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
//! - **Bounded stored ids**: `unconfirmed + recent` of every `<app>.acks.json` stays at
//!   most [`STORED_IDS_BOUND`] (the session's recent-id cap, 4 096, plus slack for ids
//!   delivered and not yet confirmed), sampled throughout the run and at the end.
//! - **Stable memory**: the listener's VmRSS, sampled every 500 ms, does not grow past
//!   twice its first sample after a warm-up of [`RSS_WARM_UP`], in any instance.
//!   (Measured: under glibc, RSS creeps up with the per-thread malloc arenas of the
//!   blocking pool's threads — 11 → 36 MiB over 30 000 messages in one instance — while
//!   with `MALLOC_ARENA_MAX=1` it levels off at ~19 MiB once the recent-id caps are full.
//!   `trend_kib` in the summary shows the shape.)
//! - Every message is acknowledged to the server, and the last listener exits cleanly on
//!   SIGTERM; no message is reported undecryptable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcm_emulator::{Emulator, Fault, SendMessage, Target};
use gcm_checkin::{GcmToken, SecurityToken};
use pullkin::{AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use webpush_ece::{EncryptOptions, ReceiverKeys};

use crate::{Result, flag};

/// The most ids an app's acknowledgement file may hold: the session's cap on recently
/// confirmed ids (4 096) plus ids taken and not yet confirmed by the server (at most
/// the listener's queue, 256, plus one ack batch in flight).
pub(crate) const STORED_IDS_BOUND: usize = 4096 + 512;

/// RSS samples taken earlier than this after an instance started are not judged.
const RSS_WARM_UP: Duration = Duration::from_secs(3);

/// The heartbeat the listener is started with (`--heartbeat`): it pings after this long
/// without a frame and drops the connection when nothing answers as long again.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A stall is cleared this long after it was armed: past the heartbeat deadline, so
/// that the listener has to notice the silent connection and reconnect.
const STALL_FOR: Duration = Duration::from_millis(2_600);

struct Settings {
    full: bool,
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
    let (messages, kills, faults, rate) = if full {
        (20_000, 4, 200, 180.0)
    } else {
        (2_000, 1, 24, 120.0)
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
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `[low, high)`.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_micros().max(1) as u64;
        low + Duration::from_micros(self.next() % span)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Plain,
    Aesgcm,
    Aes128gcm,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Aesgcm => "aesgcm",
            Self::Aes128gcm => "aes128gcm",
        }
    }

    /// The `encoding` the listener prints for this kind.
    fn encoding(self) -> Value {
        match self {
            Self::Plain => Value::Null,
            Self::Aesgcm => json!("aesgcm"),
            Self::Aes128gcm => json!("aes128gcm"),
        }
    }
}

struct App {
    name: String,
    android_id: u64,
    /// GCM token (Android persona) or FCM token (web persona).
    token: String,
    /// Web persona: where `aes128gcm` messages are encrypted to.
    subscription: Option<webpush_ece::SubscriptionKeys>,
}

/// Registers K devices in the emulator and writes their credentials files.
fn make_apps(emulator: &Emulator, count: usize, dir: &Path) -> Result<(Vec<App>, Vec<PathBuf>)> {
    let mut apps = Vec::new();
    let mut files = Vec::new();
    for i in 0..count {
        let device = emulator.create_device();
        let keys = ReceiverKeys::generate();
        // The first app is Android, the others web, so that every kind has a target.
        let android = i == 0;
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
        let path = dir.join(format!("{name}.json"));
        let json = credentials.to_json().map_err(|e| e.to_string())?;
        pullkin::write_private_file(&path, json.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(path);
        apps.push(App {
            name,
            android_id: device.android_id,
            token,
            subscription,
        });
    }
    Ok((apps, files))
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
        for var in [
            "PULLKIN_ENDPOINTS",
            "PULLKIN_MCS",
            "PULLKIN_CA",
            "PULLKIN_STATE_DIR",
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
                } else if [
                    "could not be decrypted",
                    "handler failed",
                    "gave up",
                    "error:",
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

fn record_print(ledger: &mut Ledger, expected: &[Expected], instance: usize, line: &str) {
    ledger.lines += 1;
    let parsed: Option<(usize, String)> = serde_json::from_str::<Value>(line).ok().and_then(|v| {
        let n: usize = v["data"]["n"].as_str()?.parse().ok()?;
        let wanted = expected.get(n)?;
        let right = v["app"] == wanted.app.as_str()
            && v["encoding"] == wanted.kind.encoding()
            && v["data"]["kind"] == wanted.kind.name();
        right.then(|| (n, v["persistent_id"].as_str().unwrap_or("").to_owned()))
    });
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

/// `unconfirmed + recent` of each app's acknowledgement file.
fn stored_ids(state: &Path, apps: &[App]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for app in apps {
        let path = state.join(format!("{}.acks.json", app.name));
        let count = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .map_or(0, |v| {
                let len = |key: &str| v[key].as_array().map_or(0, Vec::len);
                len("unconfirmed") + len("recent")
            });
        out.insert(app.name.clone(), count);
    }
    out
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
const FAULTS: &[&str] = &[
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
fn garbage(rng: &mut Rng) -> Bytes {
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
    std::fs::write(&ca, emulator.ca_cert_pem()).map_err(|e| e.to_string())?;
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
    };

    // The schedule: kills spread evenly over the messages, faults at random intervals
    // whose mean spreads the wanted number over the sending time.
    let send_time = Duration::from_secs_f64(settings.messages as f64 / settings.rate);
    let kill_at: Vec<usize> = (1..=settings.kills)
        .map(|k| k * settings.messages / (settings.kills + 1))
        .collect();
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
        if !sending && !faulting && stalls.is_empty() && restart_at.is_none() {
            break;
        }

        // Send what is due at the configured rate.
        let due = ((now - sending_started).as_secs_f64() * settings.rate) as usize;
        let due = due.min(settings.messages);
        while sent < due {
            // A kill point reached: SIGKILL the listener mid-stream, restart it later.
            if kills < kill_at.len() && sent >= kill_at[kills] && instance.is_some() {
                if let Some(mut current) = instance.take() {
                    kill(&mut current).await?;
                    killed.insert(current.index);
                }
                kills += 1;
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
            let app = &apps[app];
            let n = sent.to_string();
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
            result.map_err(|e| format!("sending message {n}: {e}"))?;
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
            );
            next_sample = now + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sending_seconds = sending_started.elapsed().as_secs_f64();

    // Drain: wait until every message was printed, sampling as before.
    let drain_deadline = Instant::now() + settings.drain_timeout;
    loop {
        let seen = lock(&ledger).prints.len();
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
            );
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
        sample(Some(view(&last)), &mut rss, &state, &apps, &mut stored_max);
        clean_exit = terminate(&mut last).await?;
    }
    let stored_end = stored_ids(&state, &apps);
    stored_max = stored_max.max(stored_end.values().copied().max().unwrap_or(0));
    emulator.shutdown().await;

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
            "an acknowledgement file held {stored_max} ids (bound {STORED_IDS_BOUND})"
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
fn sample(
    instance: Option<View>,
    rss: &mut Rss,
    state: &Path,
    apps: &[App],
    stored_max: &mut usize,
) {
    if let Some(view) = instance
        && view.started.elapsed() >= RSS_WARM_UP
        && let Some(kib) = rss_kib_of(view.pid)
    {
        rss.samples.push((view.index, kib));
    }
    let stored = stored_ids(state, apps);
    *stored_max = (*stored_max).max(stored.values().copied().max().unwrap_or(0));
}

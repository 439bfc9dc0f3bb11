//! `pullkin-bench listen-*`: the `pullkin listen` binary measured from outside, as a user
//! runs it: credentials files, a state directory (`DirStore`), stdout read by the bench.
//!
//! ```text
//! pullkin-bench listen-throughput --pullkin PATH [--payload plain|aesgcm|aes128gcm] [--messages N]
//! pullkin-bench listen-latency --pullkin PATH [--rate R] [--messages N]
//! pullkin-bench listen-idle --pullkin PATH [--apps K] [--no-renew] [--seconds S]
//! pullkin-bench listen-store [--ids N] [--changed C] [--writes W]
//! ```
//!
//! - `listen-throughput`: one app against the line-rate peer of `peer.rs` (frames
//!   pre-encoded, written as fast as TLS takes them, acknowledgements confirmed);
//!   `pullkin listen --no-renew --count N` (the peer answers no check-in); messages/s from
//!   the login to the N-th line on stdout, the rate over the second half, the listener's
//!   CPU and peak RSS.
//! - `listen-latency`: the paced peer stamps each frame with the time it was written; the
//!   bench takes the time each JSON line arrives on stdout (`data.t` tells which frame):
//!   frame written → line read, p50/p99/max.
//! - `listen-idle`: the emulator in this process (check-in, MCS), K devices and K
//!   credentials files, one `pullkin listen` with `--status FILE`, renewal on unless
//!   `--no-renew`. Reports the time from the start of the process until the status file
//!   says every app is connected, the check-ins the emulator counted per app, how many
//!   apps stderr reported `connected` for, and the RSS per connection: (RSS at K apps −
//!   RSS of the same command with one app) / (K − 1), both after S seconds idle.
//! - `listen-store`: `DirStore` itself with N unconfirmed ids: each write drops the C
//!   oldest and adds C new ones (the pattern of a server confirming late); the mean time
//!   and bytes written per write, beside a whole rewrite of the same state (what a write
//!   cost before the log).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pullkin::session::{AckState, UnconfirmedId};
use pullkin::{AppCredentials, DirStore, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use webpush_ece::ReceiverKeys;

use crate::peer::{Payload, Peer};
use crate::{Result, credentials, flag};

/// Runs one of the `listen-*` measurements.
pub(crate) async fn run(command: &str, args: &[String]) -> Result {
    let pullkin = || -> Result<PathBuf> {
        let path: String = flag(args, "--pullkin", String::new())?;
        if path.is_empty() {
            return Err(format!(
                "{command} needs --pullkin PATH (the pullkin binary)"
            ));
        }
        Ok(PathBuf::from(path))
    };
    match command {
        "listen-throughput" => {
            let payload: String = flag(args, "--payload", "plain".to_owned())?;
            let messages = flag(args, "--messages", 200_000usize)?;
            throughput(&pullkin()?, Payload::parse(&payload)?, messages).await
        }
        "listen-latency" => {
            let rate = flag(args, "--rate", 10_000u32)?;
            let messages = flag(args, "--messages", 50_000usize)?;
            latency(&pullkin()?, rate, messages).await
        }
        "listen-idle" => {
            let apps = flag(args, "--apps", 2_000usize)?;
            let seconds = flag(args, "--seconds", 5u64)?;
            let renew = !args.iter().any(|a| a == "--no-renew");
            idle(&pullkin()?, apps, renew, seconds).await
        }
        "listen-store" => {
            let ids = flag(args, "--ids", 100_000usize)?;
            let changed = flag(args, "--changed", 100usize)?;
            let writes = flag(args, "--writes", 200usize)?;
            store(ids, changed, writes).await
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// `pullkin listen` with the bench's environment only (none of the caller's `PULLKIN_*`).
fn listen_command(pullkin: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(pullkin);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("PULLKIN_")
            || var == "NOTIFY_SOCKET"
            || var == "RUST_LOG"
        {
            command.env_remove(var);
        }
    }
    command
        .arg("listen")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A field of `/proc/<pid>/status`, in KiB.
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU seconds of a process.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')').map(|(_, r)| r)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Sends a signal to the child (`kill -<name>`).
async fn signal(child: &Child, name: &str) -> Result {
    let pid = child.id().ok_or("the listener has exited")?;
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid} failed"))
    }
}

/// Collects the child's stderr lines (the last ones, and the apps reported connected).
fn collect_stderr(child: &mut Child) -> Result<tokio::task::JoinHandle<Vec<String>>> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    Ok(tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.push(line);
        }
        lines
    }))
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn credentials_json(credentials: &AppCredentials) -> Result<String> {
    credentials.to_json().map_err(|e| e.to_string())
}

/// `pullkin listen --count messages` of one app (Android id `android_id`, keys `keys`)
/// against `peer`, renewal off, in a temporary directory (dropped with the guard; the
/// state directory is its `state`).
fn listen_one(
    pullkin: &Path,
    peer: &Peer,
    keys: &ReceiverKeys,
    android_id: u64,
    messages: usize,
) -> Result<(tempfile::TempDir, Child)> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = dir.path().join("ca.pem");
    write_file(&ca, peer.ca_pem.as_bytes())?;
    let app = dir.path().join("bench.json");
    write_file(
        &app,
        credentials_json(&credentials(android_id, keys)?)?.as_bytes(),
    )?;
    let state = dir.path().join("state");
    let mcs = format!("localhost:{}", peer.addr.port());
    let count = messages.to_string();
    let child = listen_command(
        pullkin,
        &[
            path_str(&app)?,
            "--state-dir",
            path_str(&state)?,
            "--mcs",
            &mcs,
            "--ca",
            path_str(&ca)?,
            "--no-renew",
            "--count",
            &count,
        ],
    )
    .spawn()
    .map_err(|e| format!("cannot start {}: {e}", pullkin.display()))?;
    Ok((dir, child))
}

/// Messages/s through `pullkin listen` on one connection.
async fn throughput(pullkin: &Path, payload: Payload, messages: usize) -> Result {
    let keys = ReceiverKeys::generate();
    let peer = Peer::start(payload, messages, &keys).await?;
    let (dir, mut child) = listen_one(pullkin, &peer, &keys, 4242, messages)?;
    let state = dir.path().join("state");
    let pid = child.id().ok_or("no pid")?;
    let stderr = collect_stderr(&mut child)?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let started = peer.logged_in().await?;
    let cpu_before = proc_cpu(pid).unwrap_or(0.0);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut lines = 0usize;
    let mut half = None;
    let mut cpu = cpu_before;
    let mut peak_rss = 0;
    let mut sampled = Instant::now();
    let reading = async {
        loop {
            let n = stdout.read(&mut buffer).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            lines += buffer[..n].iter().filter(|&&b| b == b'\n').count();
            if half.is_none() && lines >= messages / 2 {
                half = Some((Instant::now(), lines));
            }
            // The listener's CPU time and peak RSS (a high-water mark), read at most every
            // 100 ms and at the last line: reading `/proc` at each read of the pipe (some
            // 10 000 a second) took CPU from the listener on the same two cores.
            let last = lines >= messages;
            if last || sampled.elapsed() >= Duration::from_millis(100) {
                sampled = Instant::now();
                if let Some(now) = proc_cpu(pid) {
                    cpu = now;
                }
                peak_rss = peak_rss.max(proc_kib(pid, "VmHWM:").unwrap_or(0));
            }
            if last {
                break;
            }
        }
        Ok::<_, String>(Instant::now())
    };
    let done = tokio::time::timeout(Duration::from_secs(300), reading)
        .await
        .map_err(|_| format!("only {lines} of {messages} lines in 300 s"))??;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .map_err(|_| "the listener did not exit after --count")?
        .map_err(|e| e.to_string())?;
    let stderr = stderr.await.map_err(|e| e.to_string())?;
    if lines < messages {
        return Err(format!(
            "only {lines} of {messages} lines; stderr:\n{}",
            tail(&stderr)
        ));
    }
    if !status.success() {
        return Err(format!(
            "the listener exited with {status}:\n{}",
            tail(&stderr)
        ));
    }
    let elapsed = done.duration_since(started).as_secs_f64();
    let (half_at, half_lines) = half.unwrap_or((started, 0));
    let steady = (lines - half_lines) as f64 / done.duration_since(half_at).as_secs_f64();
    let store = DirStore::open(&state).map_err(|e| e.to_string())?;
    let stored = store
        .load_ack_state("bench")
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        json!({
            "bench": "listen-throughput",
            "payload": payload.name(),
            "messages": messages,
            "seconds": elapsed,
            "messages_per_second": (messages as f64 / elapsed).round(),
            "second_half_messages_per_second": steady.round(),
            "listener_cpu_cores_busy": ((cpu - cpu_before) / elapsed * 100.0).round() / 100.0,
            "listener_peak_rss_kib": peak_rss,
            "stored_unconfirmed_ids": stored.unconfirmed.len(),
            "store_writes_acknowledged": peer.acks_received(),
        })
    );
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

/// Frame written by the peer → JSON line read from stdout, at a fixed offered rate.
async fn latency(pullkin: &Path, rate: u32, messages: usize) -> Result {
    let keys = ReceiverKeys::generate();
    let peer = Peer::start_paced(messages, rate).await?;
    let (_dir, mut child) = listen_one(pullkin, &peer, &keys, 4343, messages)?;
    let stderr = collect_stderr(&mut child)?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let epoch = peer.epoch;
    let mut samples = Vec::with_capacity(messages);
    let reading = async {
        let mut lines = BufReader::with_capacity(256 * 1024, stdout).lines();
        while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
            let now = epoch.elapsed().as_micros();
            let line: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            let sent: u128 = line["data"]["t"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .ok_or("a line without data.t")?;
            samples.push(now.saturating_sub(sent));
            if samples.len() >= messages {
                break;
            }
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(Duration::from_secs(300), reading)
        .await
        .map_err(|_| "not every line arrived within 300 s".to_owned())??;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let stderr = stderr.await.map_err(|e| e.to_string())?;
    if samples.len() < messages {
        return Err(format!(
            "only {} of {messages} lines:\n{}",
            samples.len(),
            tail(&stderr)
        ));
    }
    crate::print_latency("listen-latency", rate, messages, samples);
    Ok(())
}

/// One idle `pullkin listen` of `apps` apps against the emulator.
struct IdleRun {
    /// Process start → the status file says every app is connected.
    all_connected: Duration,
    rss_kib: u64,
    checkins_per_app: f64,
    connected_on_stderr: usize,
    stderr_lines: usize,
    missed_summaries: usize,
    clean_exit: bool,
}

async fn idle_run(
    pullkin: &Path,
    emulator: &fcm_emulator::Emulator,
    apps: usize,
    renew: bool,
    seconds: u64,
) -> Result<IdleRun> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ca = dir.path().join("ca.pem");
    write_file(&ca, emulator.ca_cert_pem().as_bytes())?;
    let keys = ReceiverKeys::generate();
    let mut files = Vec::with_capacity(apps);
    let mut devices = Vec::with_capacity(apps);
    for i in 0..apps {
        let device = emulator.create_device();
        let mut credentials = credentials(device.android_id, &keys)?;
        credentials.gcm.security_token = gcm_checkin::SecurityToken::new(device.security_token);
        let path = dir.path().join(format!("app{i}.json"));
        write_file(&path, credentials_json(&credentials)?.as_bytes())?;
        let checkins = emulator.device(device.android_id).map_or(0, |d| d.checkins);
        devices.push((device.android_id, checkins));
        files.push(path);
    }
    let state = dir.path().join("state");
    let status = dir.path().join("status.json");
    let endpoints = emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let mcs = format!("localhost:{}", emulator.mcs_addr().port());
    let mut args: Vec<&str> = Vec::with_capacity(apps + 12);
    for file in &files {
        args.push(path_str(file)?);
    }
    args.extend([
        "--state-dir",
        path_str(&state)?,
        "--mcs",
        &mcs,
        "--endpoints",
        &endpoints,
        "--ca",
        path_str(&ca)?,
        "--status",
        path_str(&status)?,
    ]);
    if !renew {
        args.push("--no-renew");
    }
    let start = Instant::now();
    let mut child = listen_command(pullkin, &args)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", pullkin.display()))?;
    let pid = child.id().ok_or("no pid")?;
    let stderr = collect_stderr(&mut child)?;
    let deadline = start + Duration::from_secs(120);
    let all_connected = loop {
        let connected = std::fs::read(&status)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|doc| doc["connected"].as_u64())
            .unwrap_or(0);
        if connected as usize == apps {
            break start.elapsed();
        }
        if Instant::now() > deadline {
            return Err(format!("only {connected} of {apps} connected after 120 s"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the listener exited with {status}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rss_kib = proc_kib(pid, "VmRSS:").ok_or("no VmRSS")?;
    let mut checkins = 0u64;
    for (android_id, before) in &devices {
        let now = emulator.device(*android_id).map_or(0, |d| d.checkins);
        checkins += u64::from(now.saturating_sub(*before));
    }
    signal(&child, "TERM").await?;
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .map_err(|_| "no exit after SIGTERM")?
        .map_err(|e| e.to_string())?;
    let lines = stderr.await.map_err(|e| e.to_string())?;
    let mut reported = std::collections::HashSet::new();
    for line in &lines {
        if let Some(app) = line
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix("] connected"))
        {
            reported.insert(app.to_owned());
        }
    }
    Ok(IdleRun {
        all_connected,
        rss_kib,
        checkins_per_app: checkins as f64 / apps as f64,
        connected_on_stderr: reported.len(),
        stderr_lines: lines.len(),
        missed_summaries: lines
            .iter()
            .filter(|l| l.contains("events were missed"))
            .count(),
        clean_exit: exit.success(),
    })
}

/// RSS per idle connection, start-up time and check-ins of `apps` apps in one process.
async fn idle(pullkin: &Path, apps: usize, renew: bool, seconds: u64) -> Result {
    rlimit::increase_nofile_limit((apps as u64) * 3 + 256)
        .map_err(|e| format!("cannot raise the fd limit: {e}"))?;
    let emulator = fcm_emulator::Emulator::start()
        .await
        .map_err(|e| e.to_string())?;
    let one = idle_run(pullkin, &emulator, 1, renew, seconds).await?;
    let many = idle_run(pullkin, &emulator, apps, renew, seconds).await?;
    emulator.shutdown().await;
    let per_connection =
        many.rss_kib.saturating_sub(one.rss_kib) as f64 / (apps.saturating_sub(1).max(1)) as f64;
    println!(
        "{}",
        json!({
            "bench": "listen-idle",
            "apps": apps,
            "renew": renew,
            "rss_one_app_kib": one.rss_kib,
            "rss_kib": many.rss_kib,
            "rss_per_connection_kib": (per_connection * 10.0).round() / 10.0,
            "all_connected_seconds": (many.all_connected.as_secs_f64() * 1000.0).round() / 1000.0,
            "checkins_per_app": many.checkins_per_app,
            "apps_reported_connected_on_stderr": many.connected_on_stderr,
            "stderr_lines": many.stderr_lines,
            "missed_event_summaries": many.missed_summaries,
            "clean_exit": many.clean_exit && one.clean_exit,
            "idle_seconds": seconds,
        })
    );
    Ok(())
}

/// Unconfirmed ids `start..start + n`, arrived a millisecond apart (whole milliseconds, as
/// the store keeps them).
fn ids(start: usize, n: usize) -> Vec<UnconfirmedId> {
    (start..start + n)
        .map(|i| {
            UnconfirmedId::new(
                Arc::<str>::from(format!("0:17001234{i:08}%7031b2e6f9fd7ecd")),
                arrival(i),
            )
        })
        .collect()
}

/// When id `i` of [`ids`] arrived.
fn arrival(i: usize) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i as u64)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `DirStore` writes of a state of `ids` unconfirmed ids, `changed` of them replaced each
/// time, beside whole rewrites of the same state.
async fn store(ids_held: usize, changed: usize, writes: usize) -> Result {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = DirStore::open(dir.path()).map_err(|e| e.to_string())?;
    let mut state = AckState {
        unconfirmed: ids(0, ids_held),
        recent: Vec::new(),
    };
    store
        .save_ack_state("bench", state.clone())
        .await
        .map_err(|e| e.to_string())?;
    let snapshot_bytes = dir_bytes(dir.path());
    // Bytes written = growth of the log, plus every snapshot rewritten meanwhile.
    let log = dir.path().join("bench.acks.log");
    let snapshot = dir.path().join("bench.acks.json");
    let mut written = 0u64;
    let mut snapshots = 0usize;
    let started = Instant::now();
    let mut next = ids_held;
    for _ in 0..writes {
        state
            .unconfirmed
            .drain(..changed.min(state.unconfirmed.len()));
        state.unconfirmed.extend(ids(next, changed));
        next += changed;
        let log_before = std::fs::metadata(&log).map_or(0, |m| m.len());
        let modified = std::fs::metadata(&snapshot).and_then(|m| m.modified()).ok();
        store
            .save_ack_state("bench", state.clone())
            .await
            .map_err(|e| e.to_string())?;
        let log_after = std::fs::metadata(&log).map_or(0, |m| m.len());
        if std::fs::metadata(&snapshot).and_then(|m| m.modified()).ok() != modified {
            snapshots += 1;
            written += std::fs::metadata(&snapshot).map_or(0, |m| m.len()) + log_after;
        } else {
            written += log_after.saturating_sub(log_before);
        }
    }
    let per_write = started.elapsed().as_secs_f64() / writes as f64;
    // A whole rewrite of the same state, as every write was before the log.
    let whole = dir.path().join("whole.json");
    let started = Instant::now();
    let rewrites = 20.min(writes).max(1);
    for _ in 0..rewrites {
        let millis = |at: SystemTime| at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let bytes = serde_json::to_vec(&json!({
            "format": "pullkin-acks/3",
            "generation": 1,
            "unconfirmed": state.unconfirmed.iter().map(|u| &*u.id).collect::<Vec<_>>(),
            "received_ms": state.unconfirmed.iter().map(|u| millis(u.received)).collect::<Vec<_>>(),
            "recent": [],
        }))
        .map_err(|e| e.to_string())?;
        pullkin::write_private_file(&whole, &bytes).map_err(|e| e.to_string())?;
    }
    let per_rewrite = started.elapsed().as_secs_f64() / rewrites as f64;
    let whole_bytes = std::fs::metadata(&whole).map_or(0, |m| m.len());
    let again = DirStore::open(dir.path()).map_err(|e| e.to_string())?;
    let loaded = again
        .load_ack_state("bench")
        .await
        .map_err(|e| e.to_string())?;
    if loaded != state {
        return Err("the state read back differs from the one written".into());
    }
    println!(
        "{}",
        json!({
            "bench": "listen-store",
            "unconfirmed_ids": ids_held,
            "changed_per_write": changed,
            "writes": writes,
            "ms_per_write": (per_write * 1e5).round() / 100.0,
            "bytes_per_write": written / writes as u64,
            "snapshots_rewritten": snapshots,
            "snapshot_bytes": snapshot_bytes,
            "whole_rewrite_ms": (per_rewrite * 1e5).round() / 100.0,
            "whole_rewrite_bytes": whole_bytes,
        })
    );
    Ok(())
}

//! End-to-end measurements of pullkin, printed as JSON lines (one per measurement).
//!
//! ```text
//! pullkin-bench throughput --payload plain|aesgcm|aes128gcm --messages N
//! pullkin-bench latency --rate R --messages N
//! pullkin-bench idle --connections N --seconds S
//! pullkin-bench recovery
//! pullkin-bench sink-throughput --sink nats|webhook [--messages N]  (see sink_bench.rs)
//! pullkin-bench sink-latency [--rate R] [--messages N]
//! pullkin-bench soak [--full] [--sink nats|webhook] [--pullkin PATH]  (faults and SIGKILLs;
//!                                                                      see soak.rs)
//! pullkin-bench soak --fleet [--full] [--postgres url|own]  (`pullkin fleet worker` failover;
//!                                                           see fleet_soak.rs)
//! pullkin-bench fleet-throughput|fleet-idle|fleet-takeover|fleet-follow [options]
//!                                             (pullkin-fleet on PostgreSQL; see fleet_bench.rs)
//! pullkin-bench listen-throughput|listen-latency|listen-idle|listen-store [options]
//!                                             (the `pullkin listen` binary; see listen_bench.rs)
//! pullkin-bench idle-server --port P          (used by `idle`, in its own process)
//! ```
//!
//! The peer of `throughput` and `latency` is a bench-only MCS server on `mcs-codec` that
//! pre-encodes its frames and writes them at line rate after the login, so that the
//! client is what is measured: TLS, codec, session, decryption, hand-over to a handler,
//! and the durable store (group-committed) all run as in production.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

mod fleet_bench;
mod fleet_pg;
mod fleet_soak;
mod hook;
mod listen_bench;
mod natsd;
mod peer;
mod sink_bench;
mod soak;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fcm_http::RetryPolicy;
use gcm_checkin::{GcmToken, SecurityToken};
use pullkin::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, ConnectionState,
    DirStore, ListenerConfig, Pullkin, Store,
};
use serde_json::json;
use webpush_ece::ReceiverKeys;

use crate::peer::{Payload, Peer};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Decryption and store writes run on the blocking pool: a few threads keep both
        // cores busy, and few threads mean few allocator arenas (a steadier RSS).
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pullkin-bench: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pullkin-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("bad value for {name}")),
    }
}

async fn run(args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        Some("throughput") => {
            let payload: String = flag(args, "--payload", "plain".to_owned())?;
            let messages = flag(args, "--messages", 100_000usize)?;
            throughput(Payload::parse(&payload)?, messages).await
        }
        Some("latency") => {
            let rate = flag(args, "--rate", 10_000u32)?;
            let messages = flag(args, "--messages", 50_000usize)?;
            latency(rate, messages).await
        }
        Some("idle") => {
            let connections = flag(args, "--connections", 1_000usize)?;
            let seconds = flag(args, "--seconds", 10u64)?;
            idle(connections, seconds).await
        }
        Some("recovery") => recovery().await,
        Some("sink-throughput") => {
            let sink: String = flag(args, "--sink", "nats".to_owned())?;
            let messages = flag(args, "--messages", 100_000usize)?;
            let window = flag(args, "--window", 16usize)?;
            sink_bench::throughput(&sink, messages, window).await
        }
        Some("sink-latency") => {
            let rate = flag(args, "--rate", 1_000u32)?;
            let messages = flag(args, "--messages", 10_000usize)?;
            sink_bench::latency(rate, messages).await
        }
        Some("soak") if args.iter().any(|a| a == "--fleet") => fleet_soak::run(&args[1..]).await,
        Some("soak") => soak::run(&args[1..]).await,
        Some(command) if command.starts_with("fleet-") => fleet_bench::run(command, args).await,
        Some(command) if command.starts_with("listen-") => listen_bench::run(command, args).await,
        Some("idle-server") => {
            let port = flag(args, "--port", 0u16)?;
            peer::idle_server(port).await
        }
        _ => Err(
            "usage: pullkin-bench throughput|latency|idle|recovery|sink-throughput|sink-latency|soak \
             |fleet-throughput|fleet-idle|fleet-takeover|fleet-follow [options]"
                .into(),
        ),
    }
}

/// Credentials a bench peer accepts (it checks nothing but the shape).
fn credentials(android_id: u64, keys: &ReceiverKeys) -> Result<AppCredentials> {
    Ok(AppCredentials {
        gcm: AppCredentialsGcm {
            token: GcmToken::new(format!("bench-token-{android_id}")),
            app_id: "org.chromium.linux".into(),
            android_id,
            security_token: SecurityToken::new(android_id ^ 0x5eed),
            installation: None,
        },
        fcm: AppCredentialsFcm::default(),
        keys: AppCredentialsKeys::from_keys(keys).map_err(|e| e.to_string())?,
        config: None,
    })
}

fn listener_config(addr: std::net::SocketAddr) -> ListenerConfig {
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![format!("localhost:{}", addr.port())];
    config.reconnect = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(200));
    config
}

/// A listener with `config`, `tls` and `store` (in memory when `None`).
fn listener(
    config: ListenerConfig,
    tls: Arc<rustls::ClientConfig>,
    store: Option<Arc<dyn Store>>,
) -> Result<Pullkin> {
    let mut builder = Pullkin::builder().config(config).tls(tls);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    builder.build().map_err(|e| e.to_string())
}

fn tls_for(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    fcm_http::Client::builder()
        .webpki_roots(false)
        .add_root_certificates_pem(ca_pem.as_bytes())
        .and_then(|b| b.build_tls_config())
        .map_err(|e| e.to_string())
}

/// Messages per second through the whole pipeline on one connection, store on.
async fn throughput(payload: Payload, messages: usize) -> Result {
    let keys = ReceiverKeys::generate();
    let peer = Peer::start(payload, messages, &keys).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).map_err(|e| e.to_string())?);
    let pullkin = listener(
        listener_config(peer.addr),
        tls_for(&peer.ca_pem)?,
        Some(Arc::clone(&store)),
    )?;
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    {
        let received = Arc::clone(&received);
        let done = Arc::clone(&done);
        pullkin.on_notification(
            |_, _| true,
            move |_, _| {
                if received.fetch_add(1, Ordering::Relaxed) + 1 == messages {
                    done.notify_one();
                }
            },
        );
    }
    let credentials = credentials(4242, &keys)?;
    pullkin
        .add_app("bench", &credentials, [])
        .map_err(|e| e.to_string())?;
    let pullkin = Arc::new(pullkin);
    let runner = {
        let pullkin = Arc::clone(&pullkin);
        tokio::spawn(async move { pullkin.run_all().await })
    };
    let started = peer.logged_in().await?;
    let cpu_before = cpu_seconds()?;
    tokio::time::timeout(Duration::from_secs(120), done.notified())
        .await
        .map_err(|_| {
            format!(
                "only {} of {messages} messages arrived",
                received.load(Ordering::Relaxed)
            )
        })?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds()? - cpu_before;
    pullkin.shutdown().await;
    let _ = runner.await;
    let stored = store
        .load_ack_state("bench")
        .await
        .map_err(|e| e.to_string())?;
    let rate = messages as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "throughput",
            "payload": payload.name(),
            "messages": messages,
            "seconds": elapsed.as_secs_f64(),
            "messages_per_second": rate.round(),
            "stored_unconfirmed_ids": stored.unconfirmed.len(),
            "store_writes": peer.acks_received(),
            "cpu_cores_busy": (cpu / elapsed.as_secs_f64() * 100.0).round() / 100.0,
        })
    );
    Ok(())
}

/// Latency from a frame leaving the peer to the handler call, at a fixed offered rate.
async fn latency(rate: u32, messages: usize) -> Result {
    let keys = ReceiverKeys::generate();
    let peer = Peer::start_paced(messages, rate).await?;
    let pullkin = listener(
        listener_config(peer.addr),
        tls_for(&peer.ca_pem)?,
        Some(Arc::new(pullkin::MemoryStore::default())),
    )?;
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(messages)));
    let done = Arc::new(tokio::sync::Notify::new());
    {
        let samples = Arc::clone(&samples);
        let done = Arc::clone(&done);
        let epoch = peer.epoch;
        pullkin.on_notification(
            |_, _| true,
            move |message, _| {
                let now = epoch.elapsed().as_micros();
                let sent: u128 = message
                    .data
                    .get("t")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(now);
                let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
                samples.push(now.saturating_sub(sent));
                if samples.len() == messages {
                    done.notify_one();
                }
            },
        );
    }
    pullkin
        .add_app("bench", &credentials(4343, &keys)?, [])
        .map_err(|e| e.to_string())?;
    let pullkin = Arc::new(pullkin);
    let runner = {
        let pullkin = Arc::clone(&pullkin);
        tokio::spawn(async move { pullkin.run_all().await })
    };
    tokio::time::timeout(Duration::from_secs(120), done.notified())
        .await
        .map_err(|_| "not every message arrived".to_owned())?;
    pullkin.shutdown().await;
    let _ = runner.await;
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    print_latency("latency", rate, messages, samples);
    Ok(())
}

/// Prints a latency bench's JSON line: p50, p99 and the largest of `samples` (µs).
fn print_latency(bench: &str, rate: u32, messages: usize, mut samples: Vec<u128>) {
    samples.sort_unstable();
    let pct = |p: f64| {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(index).copied().unwrap_or(0)
    };
    println!(
        "{}",
        json!({
            "bench": bench,
            "offered_per_second": rate,
            "messages": messages,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "max_us": pct(1.0),
        })
    );
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
}

fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or(&stat);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// RSS per idle connection and idle CPU with heartbeats running, the peer in its own
/// process.
async fn idle(connections: usize, seconds: u64) -> Result {
    let wanted = (connections as u64) * 2 + 256;
    rlimit::increase_nofile_limit(wanted).map_err(|e| format!("cannot raise the fd limit: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .args(["idle-server", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the idle server: {e}"))?;
    let (port, ca_pem) = peer::read_idle_server_banner(&mut child).await?;
    let keys = ReceiverKeys::generate();
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![format!("localhost:{port}")];
    config.heartbeat_interval = Duration::from_secs(5);
    config.heartbeat_timeout = Duration::from_secs(30);
    config.server_heartbeat = None;
    config.queue_capacity = 16;
    let pullkin = listener(config, tls_for(&ca_pem)?, None)?;
    // Warm up the runtime and allocator with one connection, then measure the rest.
    let before = rss_kib()?;
    for i in 0..connections {
        let credentials = credentials(10_000 + i as u64, &keys)?;
        pullkin
            .add_app(&format!("app{i}"), &credentials, [])
            .map_err(|e| e.to_string())?;
        if i % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let connected = pullkin
            .apps()
            .iter()
            .filter(|app| {
                pullkin
                    .health(app)
                    .is_some_and(|h| matches!(h.borrow().state, ConnectionState::Connected { .. }))
            })
            .count();
        if connected == connections {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {connected} of {connections} connected"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected_rss = rss_kib()?;
    let cpu_before = cpu_seconds()?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds()? - cpu_before;
    let idle_rss = rss_kib()?;
    let per_connection = (idle_rss.saturating_sub(before)) as f64 / connections as f64;
    println!(
        "{}",
        json!({
            "bench": "idle",
            "connections": connections,
            "rss_before_kib": before,
            "rss_connected_kib": connected_rss,
            "rss_idle_kib": idle_rss,
            "rss_per_connection_kib": (per_connection * 10.0).round() / 10.0,
            "idle_cpu_percent": (cpu / wall.elapsed().as_secs_f64() * 1000.0).round() / 10.0,
            "heartbeat_interval_s": 5,
        })
    );
    pullkin.shutdown().await;
    let _ = child.kill().await;
    Ok(())
}

/// Time from a cut to the next login, and from a stall to its detection.
async fn recovery() -> Result {
    let emulator = fcm_emulator::Emulator::start()
        .await
        .map_err(|e| e.to_string())?;
    let device = emulator.create_device();
    let keys = ReceiverKeys::generate();
    let mut credentials = credentials(device.android_id, &keys)?;
    credentials.gcm.security_token = SecurityToken::new(device.security_token);
    let heartbeat = Duration::from_millis(500);
    let mut config = listener_config(emulator.mcs_addr());
    config.heartbeat_interval = heartbeat;
    config.heartbeat_timeout = heartbeat;
    let pullkin = listener(config, tls_for(emulator.ca_cert_pem())?, None)?;
    pullkin
        .add_app("bench", &credentials, [])
        .map_err(|e| e.to_string())?;
    let mut health = pullkin.health("bench").ok_or("no health")?;
    let connected = |h: &pullkin::Health| matches!(h.state, ConnectionState::Connected { .. });
    let wait = Duration::from_secs(30);
    tokio::time::timeout(wait, health.wait_for(connected))
        .await
        .map_err(|_| "never connected")?
        .map_err(|e| e.to_string())?;
    let mut cuts = Vec::new();
    for _ in 0..5 {
        let logins = health.borrow().logins;
        let cut = Instant::now();
        emulator.disconnect(fcm_emulator::Target::Device(device.android_id));
        tokio::time::timeout(wait, health.wait_for(|h| h.logins > logins && connected(h)))
            .await
            .map_err(|_| "no login after a cut")?
            .map_err(|e| e.to_string())?;
        cuts.push(cut.elapsed().as_secs_f64() * 1000.0);
    }
    let stall = Instant::now();
    emulator
        .inject_fault(
            fcm_emulator::Target::Device(device.android_id),
            fcm_emulator::Fault::Stall,
        )
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        wait,
        health.wait_for(|h| matches!(h.state, ConnectionState::BackingOff { .. })),
    )
    .await
    .map_err(|_| "the stall was not noticed")?
    .map_err(|e| e.to_string())?;
    let noticed = stall.elapsed();
    pullkin.shutdown().await;
    emulator.shutdown().await;
    cuts.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "bench": "recovery",
            "cut_to_login_ms_median": (cuts[cuts.len() / 2] * 10.0).round() / 10.0,
            "cut_to_login_ms_max": (cuts[cuts.len() - 1] * 10.0).round() / 10.0,
            "stall_detected_ms": noticed.as_millis(),
            "heartbeat_deadline_ms": (heartbeat * 2).as_millis(),
        })
    );
    Ok(())
}

//! Benchmarks of `pullkin-fleet` on PostgreSQL (the server of
//! `PULLKIN_TEST_DATABASE_URL`, default 127.0.0.1:5432; each run in a scratch database
//! of its own, dropped at the end), one JSON line each:
//!
//! ```text
//! pullkin-bench fleet-throughput [--identities 100] [--messages 100000]
//! pullkin-bench fleet-idle [--identities 10000] [--rounds 10]
//! pullkin-bench fleet-takeover [--identities 2000] [--lease-ttl 15]
//! pullkin-bench fleet-follow [--rate 1000] [--messages 10000]
//! pullkin-bench fleet-worker --database URL --key-file F --mcs ADDR --ca PEM ...  (used by
//!                                                             fleet-takeover, a process)
//! ```
//!
//! - `fleet-throughput`: one [`Worker`] in this process, a multi-connection bench peer
//!   (a thread of its own) writing plain messages at line rate to every identity once it
//!   logged in; messages/s from the first login until every row is committed in
//!   `pullkin.notifications` (counted there). The worker acknowledges a message only
//!   after the transaction that inserted it committed (the store's group commit).
//! - `fleet-idle`: one worker holding every identity, each connected to the idle bench
//!   server (a process of its own): RSS per identity (this process, before the worker
//!   started → every identity connected), and the lease renewal of all of them — the
//!   worker's own statement ([`Leases::renew`] under its worker id) timed from the
//!   client, round trip included, an upper bound of its database time.
//! - `fleet-takeover`: the emulator in this process, two `fleet-worker` processes holding
//!   half of the identities each; one is SIGKILLed; the time from the kill to each of
//!   its identities' next login at the emulator (the other worker took it over).
//! - `fleet-follow`: a [`FleetStore`] committing single messages at a fixed rate and a
//!   [`Follower`] (what `pullkin fleet tail --follow` runs) in this process; the time
//!   from the start of each commit to the follower returning the row.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use fcm_http::RetryPolicy;
use mcs_codec::McsMessage;
use pullkin::{AppCredentials, ListenerConfig};
use pullkin_fleet::{
    Consumer, Database, FleetKey, FleetStore, Leases, NotificationRow, Worker, WorkerInfo,
    add_identity, migrate,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio_util::codec::Encoder;
use webpush_ece::ReceiverKeys;

use crate::fleet_pg::{self, ScratchDatabase};
use crate::peer::{self, Payload};
use crate::{Result, cpu_seconds, credentials, flag, rss_kib, tls_for};

pub(crate) async fn run(command: &str, args: &[String]) -> Result {
    match command {
        "fleet-throughput" => {
            let identities = flag(args, "--identities", 100usize)?;
            let messages = flag(args, "--messages", 100_000usize)?;
            // For diagnosis: server settings for the worker's sessions, e.g.
            // `-c synchronous_commit=off` (how much of the time is waiting for the WAL).
            let options: String = flag(args, "--pg-options", String::new())?;
            throughput(identities, messages, &options).await
        }
        "fleet-idle" => {
            let identities = flag(args, "--identities", 10_000usize)?;
            let rounds = flag(args, "--rounds", 10usize)?;
            idle(identities, rounds).await
        }
        "fleet-takeover" => {
            let identities = flag(args, "--identities", 2_000usize)?;
            let ttl = flag(args, "--lease-ttl", 15u64)?;
            takeover(identities, Duration::from_secs(ttl)).await
        }
        "fleet-follow" => {
            let rate = flag(args, "--rate", 1_000u32)?;
            let messages = flag(args, "--messages", 10_000usize)?;
            follow(rate, messages).await
        }
        "fleet-worker" => worker_process(args).await,
        other => Err(format!("unknown command {other}")),
    }
}

/// A scratch database with the fleet's schema, and the fleet on it.
async fn fleet_db(prefix: &str, max_connections: usize) -> Result<(ScratchDatabase, Database)> {
    let mut scratch = ScratchDatabase::try_create(&fleet_pg::server_url(), prefix).await?;
    let database = Database::builder(&scratch.url)
        .max_connections(max_connections)
        .build()
        .map_err(|e| chain(&e))?;
    if let Err(e) = migrate(&database).await {
        let _ = scratch.try_drop().await;
        return Err(format!("migrating: {e}"));
    }
    Ok((scratch, database))
}

/// Adds identities `bench-0` … with these credentials, `parallel` at a time; returns
/// their ids in order.
async fn add_all(
    database: &Database,
    key: &FleetKey,
    credentials: Vec<AppCredentials>,
    parallel: usize,
) -> Result<Vec<i64>> {
    let total = credentials.len();
    let queue = Arc::new(Mutex::new(
        credentials.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let ids = Arc::new(Mutex::new(vec![0i64; total]));
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let queue = Arc::clone(&queue);
        let ids = Arc::clone(&ids);
        let database = database.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let Some((i, credentials)) = next else {
                    return Ok::<(), String>(());
                };
                let id = add_identity(&database, &key, &format!("bench-{i}"), &credentials)
                    .await
                    .map_err(|e| chain(&e))?;
                ids.lock().unwrap_or_else(PoisonError::into_inner)[i] = id;
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| chain(&e))??;
    }
    let ids = ids.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(ids)
}

fn bench_listener_config(mcs_port: u16) -> ListenerConfig {
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![format!("localhost:{mcs_port}")];
    config.reconnect = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(200));
    config
}

/// A worker running in this process until [`Running::stop`].
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::result::Result<(), pullkin_fleet::FleetError>>,
}

impl Running {
    fn start(worker: Worker) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(self) -> Result {
        self.stop_within(Duration::from_secs(60)).await
    }

    /// Asks the worker to stop (it hands every identity off) and waits for it.
    async fn stop_within(mut self, limit: Duration) -> Result {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(limit, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("the worker failed: {e}")),
            Ok(Err(e)) => Err(format!("the worker task failed: {e}")),
            Err(_) => {
                self.task.abort();
                Err(format!(
                    "the worker did not stop within {} s",
                    limit.as_secs()
                ))
            }
        }
    }
}

async fn count_rows(client: &tokio_postgres::Client) -> Result<i64> {
    client
        .query_one("SELECT count(*) FROM pullkin.notifications", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| chain(&e))
}

async fn max_seq(client: &tokio_postgres::Client) -> Result<i64> {
    client
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM pullkin.notifications",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| chain(&e))
}

async fn xact_commits(client: &tokio_postgres::Client) -> Result<i64> {
    client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(|e| chain(&e))
}

/// CPU seconds (user + system) of a process (`/proc/PID/stat`), e.g. a PostgreSQL backend.
fn cpu_seconds_of(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')').map(|(_, r)| r)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The CPU seconds of every PostgreSQL process on this machine (when it is local and
/// readable: otherwise `None`).
fn postgres_cpu() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres"
            && let Some(cpu) = cpu_seconds_of(pid)
        {
            total += cpu;
            found = true;
        }
    }
    found.then_some(total)
}

// ---- fleet-throughput ----

/// A bench peer serving any number of identities: the k-th connection to log in gets
/// the k-th share of the pre-encoded messages, written at line rate, with the
/// confirmations of the client's acknowledgements Google's next frames would carry.
struct MultiPeer {
    addr: std::net::SocketAddr,
    ca_pem: String,
    first_login: watch::Receiver<Option<Instant>>,
    logins: Arc<AtomicUsize>,
    acks: Arc<AtomicUsize>,
}

impl MultiPeer {
    fn start(connections: usize, per_connection: usize) -> Result<Self> {
        let keys = ReceiverKeys::generate();
        let template = peer::template(Payload::Plain, &keys)?;
        let mut codec = peer::bare_codec();
        let mut shares: Vec<Vec<Bytes>> = Vec::with_capacity(connections);
        for k in 0..connections {
            let mut batches = Vec::new();
            let mut wire = BytesMut::new();
            for j in 0..per_connection {
                codec
                    .encode(
                        McsMessage::from(peer::stanza(k * per_connection + j, &template)),
                        &mut wire,
                    )
                    .map_err(|e| chain(&e))?;
                if wire.len() >= 64 * 1024 {
                    batches.push(wire.split().freeze());
                }
            }
            batches.push(wire.freeze());
            shares.push(batches);
        }
        let shares = Arc::new(shares);
        let (listener, acceptor, ca_pem) = peer::bind()?;
        let addr = listener.local_addr().map_err(|e| chain(&e))?;
        let (login_tx, first_login) = watch::channel(None);
        let logins = Arc::new(AtomicUsize::new(0));
        let acks = Arc::new(AtomicUsize::new(0));
        let (logins_c, acks_c) = (Arc::clone(&logins), Arc::clone(&acks));
        peer::serve(listener, move |listener| async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shares = Arc::clone(&shares);
                let logins = Arc::clone(&logins_c);
                let acks = Arc::clone(&acks_c);
                let login_tx = login_tx.clone();
                tokio::spawn(async move {
                    let Ok(framed) = peer::login_on(tcp, &acceptor).await else {
                        return;
                    };
                    let k = logins.fetch_add(1, Ordering::Relaxed);
                    login_tx.send_if_modified(|at| {
                        at.is_none().then(|| *at = Some(Instant::now())).is_some()
                    });
                    let parts = framed.into_parts();
                    let (reader, mut writer) = tokio::io::split(parts.io);
                    let client_frames = Arc::new(AtomicUsize::new(1));
                    tokio::spawn(peer::count_acks(
                        reader,
                        parts.read_buf,
                        acks,
                        Arc::clone(&client_frames),
                    ));
                    let mut confirmations = peer::Confirmations::default();
                    if let Some(batches) = shares.get(k) {
                        for batch in batches {
                            if writer.write_all(batch).await.is_err() {
                                return;
                            }
                            if let Some(frame) = confirmations.due(&client_frames)
                                && writer.write_all(&frame).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    let _ = writer.flush().await;
                    // Keep confirming what the client acknowledges, as Google's
                    // heartbeats would, until it leaves.
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if let Some(frame) = confirmations.due(&client_frames)
                            && writer.write_all(&frame).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        })?;
        Ok(Self {
            addr,
            ca_pem,
            first_login,
            logins,
            acks,
        })
    }
}

async fn throughput(identities: usize, messages: usize, options: &str) -> Result {
    let per = messages.div_ceil(identities.max(1));
    let messages = per * identities;
    let peer = MultiPeer::start(identities, per)?;
    let (mut scratch, _migrated) = fleet_db("pullkin_fleet_bench", 8).await?;
    let result = async {
        // The worker's connections carry a name of their own (pg_stat_activity, profiles).
        let mut url = fleet_pg::with_param(&scratch.url, "application_name", "bench-throughput");
        if !options.is_empty() {
            url = fleet_pg::with_param(&url, "options", &options.replace(' ', "%20"));
        }
        let database = Database::builder(&url)
            .build()
            .map_err(|e| chain(&e))?;
        let key = FleetKey::generate();
        let keys = ReceiverKeys::generate();
        let all = (0..identities)
            .map(|i| credentials(60_000 + i as u64, &keys))
            .collect::<Result<Vec<_>>>()?;
        add_all(&database, &key, all, 8).await?;
        let client = fleet_pg::connect(&scratch.url).await?;
        let commits_before = xact_commits(&client).await?;
        let worker = Worker::builder(&database, key)
            .worker_id("bench-throughput")
            .listener_config(bench_listener_config(peer.addr.port()))
            .tls(tls_for(&peer.ca_pem)?)
            .build()
            .map_err(|e| chain(&e))?;
        let cpu_before = cpu_seconds()?;
        let pg_cpu_before = postgres_cpu();
        let running = Running::start(worker);
        let mut first = peer.first_login.clone();
        let started = tokio::time::timeout(
            Duration::from_secs(60),
            first.wait_for(Option::is_some),
        )
        .await
        .map_err(|_| "no identity logged in within 60 s")?
        .map_err(|e| chain(&e))?
        .ok_or("no login")?;
        // Polled by the newest seq (an index lookup: a count would scan the table fifty
        // times a second, and be a good part of the database's work), then counted.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut committed;
        loop {
            let newest = max_seq(&client).await?;
            committed = if newest >= messages as i64 {
                count_rows(&client).await?
            } else {
                0
            };
            if committed >= messages as i64 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_seconds()? - cpu_before;
        let pg_cpu = pg_cpu_before.and_then(|b| postgres_cpu().map(|a| a - b));
        if committed < messages as i64 {
            return Err(format!(
                "only {committed} of {messages} messages committed within 300 s ({} logins)",
                peer.logins.load(Ordering::Relaxed)
            ));
        }
        let acks = peer.acks.load(Ordering::Relaxed);
        running.stop().await?;
        // The statistics collector flushes at most once a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let commits = xact_commits(&client).await? - commits_before;
        // When the worker took the messages (received_at is set as each one is taken):
        // how much of the time was taking them, and how much committing.
        let span: f64 = client
            .query_one(
                "SELECT extract(epoch FROM max(received_at) - min(received_at))::float8
                 FROM pullkin.notifications",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .map_err(|e| chain(&e))?;
        let rate = messages as f64 / elapsed.as_secs_f64();
        println!(
            "{}",
            json!({
                "bench": "fleet-throughput",
                "payload": "plain",
                "pg_options": (!options.is_empty()).then_some(options),
                "identities": identities,
                "messages": messages,
                "committed": committed,
                "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "messages_per_second": rate.round(),
                "logins": peer.logins.load(Ordering::Relaxed),
                "taking_seconds": (span * 1000.0).round() / 1000.0,
                "stream_acks_received": acks,
                "database_commits": commits,
                "rows_per_commit": ((messages as f64 / commits.max(1) as f64) * 10.0).round() / 10.0,
                "bench_process_cpu_cores": (cpu / elapsed.as_secs_f64() * 100.0).round() / 100.0,
                "postgres_cpu_cores": pg_cpu.map(|c| (c / elapsed.as_secs_f64() * 100.0).round() / 100.0),
            })
        );
        Ok(())
    }
    .await;
    let dropped = scratch.try_drop().await;
    result.and(dropped)
}

// ---- fleet-idle ----

async fn idle(identities: usize, rounds: usize) -> Result {
    rlimit::increase_nofile_limit((identities as u64) * 2 + 512)
        .map_err(|e| format!("cannot raise the fd limit: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| chain(&e))?;
    let mut server = tokio::process::Command::new(exe)
        .args(["idle-server", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the idle server: {e}"))?;
    let (port, ca_pem) = peer::read_idle_server_banner(&mut server).await?;
    let (mut scratch, database) = fleet_db("pullkin_fleet_bench", 16).await?;
    let result = async {
        let key = FleetKey::generate();
        let keys = ReceiverKeys::generate();
        let all = (0..identities)
            .map(|i| credentials(100_000 + i as u64, &keys))
            .collect::<Result<Vec<_>>>()?;
        let added = Instant::now();
        add_all(&database, &key, all, 16).await?;
        let adding = added.elapsed();
        let client = fleet_pg::connect(&scratch.url).await?;
        let ttl = Duration::from_secs(15);
        let worker = Worker::builder(&database, key.clone())
            .worker_id("bench-idle")
            .lease_ttl(ttl)
            .listener_config(bench_listener_config(port))
            .tls(tls_for(&ca_pem)?)
            .build()
            .map_err(|e| chain(&e))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib()?;
        let commits_before = xact_commits(&client).await?;
        let start = Instant::now();
        let running = Running::start(worker);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let connected: i64 = client
                .query_one(
                    "SELECT count(*) FROM pullkin.connection_state
                     WHERE state = 'connected' AND worker_id = 'bench-idle'",
                    &[],
                )
                .await
                .map_err(|e| chain(&e))?
                .get(0);
            if connected >= identities as i64 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {connected} of {identities} connected within 600 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let all_connected = start.elapsed();
        let commits_connecting = xact_commits(&client).await? - commits_before;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_kib()?;
        // The worker's renewal statement, under its id: round trips from here, one after
        // another, and the server's own execution time of the same statement.
        let mut info = WorkerInfo::this_process(None);
        info.id = "bench-idle".into();
        let leases = Leases::new(database.clone(), info, ttl, key.id());
        let mut times = Vec::new();
        let mut server_times = Vec::new();
        let mut renewed = 0;
        for _ in 0..rounds.max(1) {
            let sent = Instant::now();
            renewed = leases.renew().await.map_err(|e| chain(&e))?.len();
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
            server_times.push(explain_renewal(&client, "bench-idle", ttl).await?);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        times.sort_by(f64::total_cmp);
        server_times.sort_by(f64::total_cmp);
        let idle_cpu_before = cpu_seconds()?;
        let wall = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle_cpu = (cpu_seconds()? - idle_cpu_before) / wall.elapsed().as_secs_f64();
        let per_identity = after.saturating_sub(before) as f64 / identities as f64;
        let stopping = Instant::now();
        let stopped = running.stop_within(Duration::from_secs(600)).await;
        let shutdown = stopping.elapsed();
        let round = |x: f64| (x * 10.0).round() / 10.0;
        println!(
            "{}",
            json!({
                "bench": "fleet-idle",
                "identities": identities,
                "adding_seconds": round(adding.as_secs_f64()),
                "all_connected_seconds": round(all_connected.as_secs_f64()),
                "database_commits_while_connecting": commits_connecting,
                "rss_before_kib": before,
                "rss_connected_kib": after,
                "rss_per_identity_kib": round(per_identity),
                "renewed_leases": renewed,
                "renew_round_trip_ms_median": round(times[times.len() / 2]),
                "renew_round_trip_ms_max": round(times[times.len() - 1]),
                "renew_server_ms_median": round(server_times[server_times.len() / 2]),
                "renew_server_ms_max": round(server_times[server_times.len() - 1]),
                "renew_rounds": times.len(),
                "lease_ttl_s": ttl.as_secs(),
                "idle_cpu_percent": round(idle_cpu * 100.0),
                "graceful_shutdown_seconds": round(shutdown.as_secs_f64()),
                "graceful_shutdown": stopped.as_ref().map_or_else(|e| e.clone(), |()| "ok".to_owned()),
            })
        );
        Ok(())
    }
    .await;
    let _ = server.kill().await;
    let dropped = scratch.try_drop().await;
    result.and(dropped)
}

/// The server's execution time (planning included) of the worker's renewal statement,
/// by `EXPLAIN ANALYZE` (which runs it: it renews the leases as the worker would). The
/// text is `Leases::renew`'s, with its parameters written in.
async fn explain_renewal(
    client: &tokio_postgres::Client,
    worker: &str,
    ttl: Duration,
) -> Result<f64> {
    let sql = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON)
         WITH beat AS (
             INSERT INTO pullkin.workers (id, host, pid, capacity, version)
             VALUES ('{worker}', 'bench', 0, NULL, 'bench')
             ON CONFLICT (id) DO UPDATE SET last_seen = now()
         )
         UPDATE pullkin.leases l
         SET expires_at = now() + {}::float8 * interval '1 second'
         FROM pullkin.identities i
         WHERE l.worker_id = '{worker}' AND i.id = l.identity_id AND NOT i.disabled
         RETURNING l.identity_id, l.epoch",
        ttl.as_secs_f64()
    );
    let rows = client.query(&sql, &[]).await.map_err(|e| chain(&e))?;
    let plan: serde_json::Value = rows
        .first()
        .map(|r| r.get(0))
        .ok_or("EXPLAIN returned nothing")?;
    let field = |name: &str| plan[0][name].as_f64().unwrap_or(0.0);
    Ok(field("Planning Time") + field("Execution Time"))
}

// ---- fleet-takeover ----

/// `fleet-worker`: a library worker in a process of its own, until it is killed.
async fn worker_process(args: &[String]) -> Result {
    let url: String = flag(args, "--database", String::new())?;
    let key_file: PathBuf = flag(args, "--key-file", PathBuf::new())?;
    let mcs: String = flag(args, "--mcs", String::new())?;
    let ca: PathBuf = flag(args, "--ca", PathBuf::new())?;
    let ttl = flag(args, "--lease-ttl", 15u64)?;
    let id: String = flag(args, "--worker-id", String::new())?;
    let key = FleetKey::from_file(&key_file).map_err(|e| chain(&e))?;
    let database = Database::connect(&url).map_err(|e| chain(&e))?;
    let ca_pem = std::fs::read_to_string(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut config = bench_listener_config(0);
    config.mcs_endpoints = vec![mcs];
    let worker = Worker::builder(&database, key)
        .worker_id(id)
        .lease_ttl(Duration::from_secs(ttl))
        .listener_config(config)
        .tls(tls_for(&ca_pem)?)
        .build()
        .map_err(|e| chain(&e))?;
    worker
        .run(std::future::pending::<()>())
        .await
        .map_err(|e| chain(&e))
}

async fn takeover(identities: usize, ttl: Duration) -> Result {
    rlimit::increase_nofile_limit((identities as u64) * 3 + 512)
        .map_err(|e| format!("cannot raise the fd limit: {e}"))?;
    let emulator = fcm_emulator::Emulator::builder()
        .close_superseded_connections(false)
        .start()
        .await
        .map_err(|e| chain(&e))?;
    let (mut scratch, database) = fleet_db("pullkin_fleet_bench", 16).await?;
    let dir = tempfile::tempdir().map_err(|e| chain(&e))?;
    let mut children = Vec::new();
    let result = async {
        let key_file = dir.path().join("fleet.key");
        let key = fleet_pg::write_key_file(&key_file)?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, emulator.ca_cert_pem()).map_err(|e| chain(&e))?;
        let mut devices = Vec::new();
        let mut all = Vec::new();
        for _ in 0..identities {
            let (app, credentials) = crate::soak::make_device(&emulator, devices.len(), true)?;
            devices.push(app.android_id);
            all.push(credentials);
        }
        let ids = add_all(&database, &key, all, 16).await?;
        let android_of: HashMap<i64, u64> =
            ids.iter().copied().zip(devices.iter().copied()).collect();
        let exe = std::env::current_exe().map_err(|e| chain(&e))?;
        for name in ["A", "B"] {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))
                .map_err(|e| chain(&e))?;
            let child = tokio::process::Command::new(&exe)
                .arg("fleet-worker")
                .args(["--database", &scratch.url, "--key-file"])
                .arg(&key_file)
                .args([
                    "--mcs",
                    &format!("localhost:{}", emulator.mcs_addr().port()),
                    "--ca",
                ])
                .arg(&ca)
                .args([
                    "--lease-ttl",
                    &ttl.as_secs().to_string(),
                    "--worker-id",
                    name,
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))?;
            children.push(child);
        }
        let client = fleet_pg::connect(&scratch.url).await?;
        let held = |worker: &'static str| {
            let client = &client;
            async move {
                client
                    .query(
                        "SELECT identity_id FROM pullkin.leases
                         WHERE worker_id = $1 AND expires_at > now()",
                        &[&worker],
                    )
                    .await
                    .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
                    .map_err(|e| chain(&e))
            }
        };
        let half = identities / 2;
        let deadline = Instant::now() + Duration::from_secs(300);
        let victims = loop {
            let a = held("A").await?;
            let b = held("B").await?;
            let connected = devices.iter().all(|d| emulator.is_connected(*d));
            if connected
                && a.len() >= half
                && b.len() >= half
                && emulator.overlap_report().is_empty()
            {
                break a;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the workers did not split the identities within 300 s (A {}, B {})",
                    a.len(),
                    b.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // Let both settle a renewal round, then kill A.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed_at = emulator.elapsed();
        let victim = children.first_mut().ok_or("no worker")?;
        victim.start_kill().map_err(|e| chain(&e))?;
        let _ = victim.wait().await;
        let limit = ttl + Duration::from_secs(30);
        let mut times: Vec<f64> = Vec::new();
        let wait_deadline = Instant::now() + limit;
        loop {
            times.clear();
            for id in &victims {
                let android_id = android_of.get(id).copied().unwrap_or(0);
                if let Some(record) = emulator
                    .login_history(android_id)
                    .into_iter()
                    .find(|r| r.logged_in_at > killed_at)
                {
                    times.push((record.logged_in_at - killed_at).as_secs_f64() * 1000.0);
                }
            }
            if times.len() == victims.len() || Instant::now() > wait_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        times.sort_by(f64::total_cmp);
        let bound = (ttl + Duration::from_secs(5)).as_secs_f64() * 1000.0;
        let within = times.iter().filter(|t| **t <= bound).count();
        let taken = held("B").await?.len();
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{}",
            json!({
                "bench": "fleet-takeover",
                "identities": identities,
                "killed_worker_held": victims.len(),
                "reconnected": times.len(),
                "reconnected_within_ttl_plus_5s": within,
                "takeover_ms_min": pct(0.0).round(),
                "takeover_ms_p50": pct(0.5).round(),
                "takeover_ms_p99": pct(0.99).round(),
                "takeover_ms_max": pct(1.0).round(),
                "lease_ttl_s": ttl.as_secs(),
                "bound_ms": bound,
                "survivor_holds": taken,
                "overlapping_devices": emulator.overlap_report().len(),
            })
        );
        Ok(())
    }
    .await;
    for child in &mut children {
        let _ = child.kill().await;
    }
    emulator.shutdown().await;
    let dropped = scratch.try_drop().await;
    result.and(dropped)
}

// ---- fleet-follow ----

async fn follow(rate: u32, messages: usize) -> Result {
    let (mut scratch, database) = fleet_db("pullkin_fleet_bench", 8).await?;
    let result = async {
        let key = FleetKey::generate();
        let keys = ReceiverKeys::generate();
        let ids = add_all(&database, &key, vec![credentials(7_000, &keys)?], 1).await?;
        let identity = *ids.first().ok_or("no identity")?;
        let mut info = WorkerInfo::this_process(None);
        info.id = "bench-follow".into();
        let leases = Leases::new(database.clone(), info, Duration::from_secs(600), key.id());
        leases.register().await.map_err(|e| chain(&e))?;
        let lease = *leases
            .claim(1)
            .await
            .map_err(|e| chain(&e))?
            .first()
            .ok_or("no lease claimed")?;
        let (store, _fenced) =
            FleetStore::new(database.clone(), key.clone(), "bench-follow".into());
        store.hold("bench-0", identity, lease.epoch);

        // The follower: when each message came out of `next`.
        let delivered: Arc<Mutex<Vec<Option<Instant>>>> =
            Arc::new(Mutex::new(vec![None; messages]));
        let mut follower = Consumer::open(&database, "bench")
            .await
            .map_err(|e| chain(&e))?
            .follow()
            .await
            .map_err(|e| chain(&e))?;
        let reader = {
            let delivered = Arc::clone(&delivered);
            tokio::spawn(async move {
                let mut seen = 0usize;
                while seen < messages {
                    let batch = follower.next(1000).await.map_err(|e| chain(&e))?;
                    let now = Instant::now();
                    {
                        let mut delivered =
                            delivered.lock().unwrap_or_else(PoisonError::into_inner);
                        for row in &batch {
                            if let Some(i) =
                                row.data["i"].as_u64().and_then(|i| usize::try_from(i).ok())
                                && let Some(slot) = delivered.get_mut(i)
                                && slot.is_none()
                            {
                                *slot = Some(now);
                                seen += 1;
                            }
                        }
                    }
                    if let Some(last) = batch.last() {
                        follower.commit(last.seq).await.map_err(|e| chain(&e))?;
                    }
                }
                Ok::<(), String>(())
            })
        };
        // The writer: commits of what is due, one after another.
        let mut commit_started: Vec<Option<Instant>> = vec![None; messages];
        let mut commit_done: Vec<Option<Instant>> = vec![None; messages];
        let mut commit_ms = Vec::new();
        let started = Instant::now();
        let mut sent = 0usize;
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sent < messages {
            ticker.tick().await;
            let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(messages);
            if due <= sent {
                continue;
            }
            let first = sent;
            while sent < due {
                let row = NotificationRow::new(
                    Some(format!("0:follow%{sent:08}")),
                    SystemTime::now(),
                    json!({ "i": sent }),
                    json!({ "app": "bench-0", "data": { "i": sent } }),
                );
                store.push("bench-0", row);
                sent += 1;
            }
            let at = Instant::now();
            store.flush("bench-0").await.map_err(|e| chain(&e))?;
            let done = Instant::now();
            commit_ms.push((done - at).as_secs_f64() * 1000.0);
            for i in first..sent {
                commit_started[i] = Some(at);
                commit_done[i] = Some(done);
            }
        }
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .map_err(|_| "the follower did not see every message within 30 s")?
            .map_err(|e| chain(&e))??;
        let delivered = delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut from_start = Vec::new();
        let mut from_done = Vec::new();
        for i in 0..messages {
            if let (Some(at), Some(done), Some(got)) =
                (commit_started[i], commit_done[i], delivered[i])
            {
                from_start.push(got.saturating_duration_since(at).as_secs_f64() * 1000.0);
                from_done.push(got.saturating_duration_since(done).as_secs_f64() * 1000.0);
            }
        }
        from_start.sort_by(f64::total_cmp);
        from_done.sort_by(f64::total_cmp);
        commit_ms.sort_by(f64::total_cmp);
        let pct = |v: &[f64], p: f64| {
            let x = v
                .get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN);
            (x * 100.0).round() / 100.0
        };
        println!(
            "{}",
            json!({
                "bench": "fleet-follow",
                "offered_per_second": rate,
                "messages": messages,
                "delivered": from_start.len(),
                "commits": commit_ms.len(),
                "p50_ms": pct(&from_start, 0.5),
                "p99_ms": pct(&from_start, 0.99),
                "max_ms": pct(&from_start, 1.0),
                "p99_ms_after_commit_returned": pct(&from_done, 0.99),
                "commit_ms_p50": pct(&commit_ms, 0.5),
                "commit_ms_p99": pct(&commit_ms, 0.99),
            })
        );
        Ok(())
    }
    .await;
    let dropped = scratch.try_drop().await;
    result.and(dropped)
}

/// An error and its causes on one line (a `tokio_postgres` error alone says only "db
/// error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

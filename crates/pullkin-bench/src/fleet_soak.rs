//! `pullkin-bench soak --fleet`: the failover soak of `pullkin fleet worker`. The
//! emulator runs in this process (older MCS connections of a device kept open, so that
//! two workers holding one identity at once shows as an overlap); the identities, of
//! both personas, are added to a database of the soak's own; three `pullkin fleet
//! worker` processes (lease TTL 3 s) share them while messages of the three encodings
//! (plain, `aesgcm`, `aes128gcm`) are sent at a steady rate, and meanwhile:
//!
//! - a worker is SIGKILLed (the one holding the most identities);
//! - a new worker is started (the others hand some identities off to it);
//! - a worker is SIGSTOPped for its lease TTL + 2 s, then SIGCONTed (the others take its
//!   identities over while it is frozen with its connections open; on waking it must
//!   stop them and write nothing);
//! - PostgreSQL is stopped (`pg_ctl stop -m fast`) for 1.5 s and started again — only
//!   with `--postgres own`, where the soak runs a throwaway server of its own (`auto`:
//!   when `initdb` and `pg_ctl` are installed, as `cargo xtask soak --fleet` asks); on
//!   the server of `PULLKIN_TEST_DATABASE_URL` (the default, `url`: shared with others)
//!   this fault is skipped and the summary says so. Either way the soak works in a
//!   database of its own (a random name, dropped at the end);
//! - the emulator cuts connections and misbehaves (the faults of the listener soak) on
//!   random identities;
//! - `pullkin fleet tail --consumer soak --follow` reads the stored messages throughout.
//!
//! ```text
//! pullkin-bench soak --fleet [--full] [--pullkin PATH] [--postgres url|own|auto]
//!                    [--identities N] [--messages M] [--rate R] [--seed S] [--log]
//! ```
//!
//! Short form (CI): 30 identities, 2 000 messages at 60/s, one of each fault. `--full`:
//! 300 identities, 30 000 messages at 250/s, every fault twice.
//!
//! What must hold (any violation fails the run, after the JSON summary):
//!
//! - **Exactly once**: every message sent is in `pullkin.notifications` once — by
//!   persistent id (the one the emulator assigned when it was sent) and by its payload
//!   id (data key `n`, decrypted for the encrypted kinds) — for the identity it was sent
//!   to, with the encoding it was sent with; nothing else is there. Every message is
//!   acknowledged to the emulator at the end.
//! - **No write from a stale holding**: the schema does not record who wrote a row, so
//!   the soak adds audit triggers to its database. Each worker connects with
//!   `application_name` = its worker id; the triggers record, for every statement
//!   inserting notifications, every ack-state write and every credentials update, the
//!   writer and the lease (holder, epoch) as the writing transaction sees it — which
//!   is the lease at commit: the store's transaction holds it `FOR KEY SHARE`, which a
//!   claim conflicts with. Every write must come from the lease's holder, and every
//!   ack-state write carry the lease's current epoch. (The fenced refusals and the
//!   self-fencing the workers log are counted and reported, and so are the writes that
//!   committed on a lease already expired in database time but not yet claimed by
//!   anyone — allowed, fencing goes by epoch — by writer and time.)
//! - **Takeover**: every identity of the killed and of the stopped worker logs in again
//!   (the emulator's login history: the time from the signal to the next login is its
//!   takeover time, reported per identity).
//! - **Overlap**: the emulator's account of how long two connections of one device were
//!   logged in at once is reported, split into overlaps while a stopped worker was
//!   frozen (its connections stay open until it wakes: expected), in the other
//!   takeovers (after a kill, around a database restart) and outside any takeover; any
//!   overlap but the first kind fails the run (the old holder must have stopped first).
//! - The tail printed every message, none twice but the last batch of an instance that
//!   exited (it is started again as a supervisor would; its exits are reported); the
//!   workers left at the end exit 0 on SIGTERM; none panicked or exited by itself;
//!   every planned fault happened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcm_emulator::{Emulator, Fault, Target};
use pullkin_fleet::{Database, FleetKey};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::fleet_pg::{self, OwnServer, ScratchDatabase};
use crate::soak::{App, FAULTS, Kind, Rng, STALL_FOR, garbage, make_device, send_message};
use crate::{Result, flag};

/// The lease TTL the workers run with (`--lease-ttl`).
const LEASE_TTL: Duration = Duration::from_secs(3);
/// A stopped worker stays frozen this much longer than its lease.
const STOP_PAST_LEASE: Duration = Duration::from_secs(2);
/// How long PostgreSQL stays down.
const PG_DOWN: Duration = Duration::from_millis(1500);
/// The heartbeat the workers run with (`--heartbeat`, seconds).
const HEARTBEAT: &str = "1";
/// After a kill, a takeover window lasts this long beyond the lease TTL; after a stop,
/// this long beyond the wake-up.
const TAKEOVER_GRACE: Duration = Duration::from_secs(5);

struct Settings {
    full: bool,
    identities: usize,
    messages: usize,
    rate: f64,
    seed: u64,
    pullkin: PathBuf,
    own_postgres: bool,
    drain_timeout: Duration,
    log: bool,
}

fn settings(args: &[String]) -> Result<Settings> {
    let full = args.iter().any(|a| a == "--full");
    let (identities, messages, rate) = if full {
        (300, 30_000, 250.0)
    } else {
        (30, 2_000, 60.0)
    };
    let default_pullkin = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pullkin")))
        .unwrap_or_else(|| PathBuf::from("pullkin"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let own_postgres = match flag(args, "--postgres", "url".to_owned())?.as_str() {
        "url" => false,
        "own" => true,
        "auto" => fleet_pg::postgres_bin().is_some(),
        other => return Err(format!("--postgres {other}: url, own or auto")),
    };
    let settings = Settings {
        full,
        identities: flag(args, "--identities", identities)?,
        messages: flag(args, "--messages", messages)?,
        rate: flag(args, "--rate", rate)?,
        seed: flag(args, "--seed", seed)?,
        pullkin: flag(args, "--pullkin", default_pullkin)?,
        own_postgres,
        drain_timeout: Duration::from_secs(flag(args, "--drain-timeout", 45u64)?),
        log: args.iter().any(|a| a == "--log"),
    };
    if settings.identities < 6 {
        return Err("--identities must be at least 6 (both personas, three workers)".into());
    }
    if settings.messages == 0 || settings.rate <= 0.0 {
        return Err("--messages and --rate must be positive".into());
    }
    if !settings.pullkin.is_file() {
        return Err(format!(
            "no pullkin binary at {} (build it: cargo build -p pullkin-cli, or pass --pullkin)",
            settings.pullkin.display()
        ));
    }
    Ok(settings)
}

/// The faults of the run, at fractions of the sending time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Kill,
    Start,
    Stop,
    PgRestart,
}

fn plan(full: bool) -> Vec<(f64, Step)> {
    if full {
        vec![
            (0.08, Step::Kill),
            (0.18, Step::Start),
            (0.28, Step::Stop),
            (0.40, Step::PgRestart),
            (0.52, Step::Kill),
            (0.62, Step::Start),
            (0.72, Step::Stop),
            (0.85, Step::PgRestart),
        ]
    } else {
        vec![
            (0.15, Step::Kill),
            (0.30, Step::Start),
            (0.45, Step::Stop),
            (0.75, Step::PgRestart),
        ]
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Running,
    Stopped,
    Killed,
    /// Exited by itself (a failure).
    Exited,
    /// Exited on the final SIGTERM.
    Terminated {
        clean: bool,
    },
}

struct WorkerProc {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
    fate: Fate,
}

/// How to start a worker.
struct Launcher {
    pullkin: PathBuf,
    database_url: String,
    key_file: PathBuf,
    endpoints: String,
    mcs: String,
    ca: PathBuf,
    dir: PathBuf,
}

impl Launcher {
    fn command(&self, application: &str) -> Command {
        let mut command = Command::new(&self.pullkin);
        for var in [
            "PULLKIN_ENDPOINTS",
            "PULLKIN_MCS",
            "PULLKIN_CA",
            "PULLKIN_LOG_FORMAT",
            "PULLKIN_PROXY",
        ] {
            command.env_remove(var);
        }
        command
            .env(
                "PULLKIN_DATABASE_URL",
                fleet_pg::with_param(&self.database_url, "application_name", application),
            )
            .env("PULLKIN_FLEET_KEY_FILE", &self.key_file)
            .env(
                "RUST_LOG",
                "warn,pullkin_fleet=info,pullkin::listen::driver=info",
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    fn spawn(&self, name: &str) -> Result<WorkerProc> {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let out = file.try_clone().map_err(|e| e.to_string())?;
        let mut command = self.command(name);
        command
            .args(["fleet", "worker", "--worker-id", name, "--lease-ttl"])
            .arg(LEASE_TTL.as_secs().to_string())
            .args(["--heartbeat", HEARTBEAT, "--max-retry-delay", "0.25"])
            .args(["--endpoints", &self.endpoints, "--mcs", &self.mcs, "--ca"])
            .arg(&self.ca)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(file));
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.pullkin.display()))?;
        let pid = child.id().ok_or("the worker exited at once")?;
        Ok(WorkerProc {
            name: name.to_owned(),
            child,
            pid,
            log,
            fate: Fate::Running,
        })
    }
}

async fn signal(pid: u32, name: &str) -> Result {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .await
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid} failed"))
    }
}

/// A connection of the soak's own to its database that reconnects after a restart.
struct Probe {
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl Probe {
    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        if self
            .client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            self.client = Some(fleet_pg::connect(&self.url).await?);
        }
        let client = self.client.as_ref().ok_or("no connection")?;
        match client.query(sql, params).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                self.client = None;
                Err(e.to_string())
            }
        }
    }

    /// The live leases of a worker: identity ids.
    async fn held_by(&mut self, worker: &str) -> Result<Vec<i64>> {
        let rows = self
            .query(
                "SELECT identity_id FROM pullkin.leases WHERE worker_id = $1 AND expires_at > now()",
                &[&worker],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn count(&mut self) -> Result<i64> {
        let rows = self
            .query("SELECT count(*) FROM pullkin.notifications", &[])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }
}

/// The audit tables and triggers (see the module docs).
const AUDIT: &str = r"
CREATE SCHEMA soak_audit;
CREATE TABLE soak_audit.rows (
    seq bigint, identity_id bigint, writer text, holder text, lease_epoch bigint,
    lease_expired boolean, txid bigint, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE soak_audit.acks (
    identity_id bigint, writer text, holder text, carried_epoch bigint, lease_epoch bigint,
    lease_expired boolean, txid bigint, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE soak_audit.credentials (
    identity_id bigint, writer text, holder text, lease_epoch bigint,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION soak_audit.rows_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_audit.rows (seq, identity_id, writer, holder, lease_epoch, lease_expired, txid)
    SELECT n.seq, n.identity_id, current_setting('application_name'), l.worker_id, l.epoch,
           l.expires_at < clock_timestamp(), txid_current()
    FROM inserted n LEFT JOIN pullkin.leases l ON l.identity_id = n.identity_id;
    RETURN NULL;
END $$;
CREATE TRIGGER soak_audit_rows AFTER INSERT ON pullkin.notifications
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION soak_audit.rows_written();
CREATE FUNCTION soak_audit.ack_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_audit.acks
        (identity_id, writer, holder, carried_epoch, lease_epoch, lease_expired, txid)
    SELECT NEW.identity_id, current_setting('application_name'), l.worker_id, NEW.epoch,
           l.epoch, l.expires_at < clock_timestamp(), txid_current()
    FROM (SELECT 1) AS one LEFT JOIN pullkin.leases l ON l.identity_id = NEW.identity_id;
    RETURN NULL;
END $$;
CREATE TRIGGER soak_audit_acks AFTER INSERT OR UPDATE ON pullkin.ack_state
    FOR EACH ROW EXECUTE FUNCTION soak_audit.ack_written();
CREATE FUNCTION soak_audit.credentials_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_audit.credentials (identity_id, writer, holder, lease_epoch)
    SELECT NEW.id, current_setting('application_name'), l.worker_id, l.epoch
    FROM (SELECT 1) AS one LEFT JOIN pullkin.leases l ON l.identity_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER soak_audit_credentials AFTER UPDATE OF credentials ON pullkin.identities
    FOR EACH ROW EXECUTE FUNCTION soak_audit.credentials_written();
";

/// An identity of the run.
struct Identity {
    id: i64,
    app: App,
}

/// A kill or a stop, and what it left to take over.
struct Takeover {
    step: &'static str,
    worker: String,
    /// The emulator's clock at the signal.
    at: Duration,
    /// At the SIGCONT (stops only).
    woke: Option<Duration>,
    /// The identities the worker held then (ids).
    held: Vec<i64>,
    /// Persistent ids the emulator still waited an acknowledgement for, of those
    /// identities, and the newest `seq` then: rows of these already stored came back
    /// to the new holder and were not stored again.
    unacked: HashSet<String>,
    max_seq: Option<i64>,
}

impl Takeover {
    /// Until when an overlap on one of its identities belongs to it.
    fn window_end(&self) -> Duration {
        match self.woke {
            Some(woke) => woke + TAKEOVER_GRACE,
            None => self.at + LEASE_TTL + TAKEOVER_GRACE,
        }
    }
}

/// A database restart.
struct Restart {
    down_at: Duration,
    up_at: Option<Duration>,
}

/// The state of a database restart in progress.
enum Pg {
    Up,
    Stopping(JoinHandle<Result>),
    Down(Instant),
    Starting(JoinHandle<Result>),
}

/// What `tail --follow` printed: message numbers, and lines that were no message.
#[derive(Default)]
struct TailLedger {
    lines: usize,
    by_n: HashMap<usize, usize>,
    unexpected: Vec<String>,
}

/// `pullkin fleet tail` reads this many messages at a time (its default `--batch`).
const TAIL_BATCH: usize = 100;

/// The running `pullkin fleet tail --consumer soak --follow`, started again half a
/// second after it exits (what a supervisor would do), its exits recorded.
struct Tail {
    child: Child,
    reader: Option<JoinHandle<()>>,
    /// The current instance's stderr.
    log: PathBuf,
    instances: usize,
    /// Why each instance exited by itself: the last line of its stderr.
    exits: Vec<String>,
    restart_at: Option<Instant>,
}

impl Tail {
    fn start(launcher: &Launcher, ledger: &Arc<Mutex<TailLedger>>) -> Result<Self> {
        let (child, reader, log) = Self::spawn(launcher, 0, ledger)?;
        Ok(Self {
            child,
            reader: Some(reader),
            log,
            instances: 1,
            exits: Vec::new(),
            restart_at: None,
        })
    }

    fn spawn(
        launcher: &Launcher,
        index: usize,
        ledger: &Arc<Mutex<TailLedger>>,
    ) -> Result<(Child, JoinHandle<()>, PathBuf)> {
        let log = launcher.dir.join(format!("tail-{index}.log"));
        let mut command = launcher.command("tail");
        command
            .args(["fleet", "tail", "--consumer", "soak", "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&log).map_err(|e| e.to_string())?,
            ));
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the tail: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let ledger = Arc::clone(ledger);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut ledger = lock(&ledger);
                ledger.lines += 1;
                let n = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["data"]["n"].as_str().and_then(|n| n.parse().ok()));
                match n {
                    Some(n) => *ledger.by_n.entry(n).or_default() += 1,
                    None if ledger.unexpected.len() < 5 => ledger.unexpected.push(line),
                    None => {}
                }
            }
        });
        Ok((child, reader, log))
    }

    /// Notices an exit, and starts the next instance when due.
    fn supervise(&mut self, launcher: &Launcher, ledger: &Arc<Mutex<TailLedger>>) -> Result {
        if self.restart_at.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_owned();
            self.exits.push(format!("{status}: {last}"));
            self.restart_at = Some(Instant::now() + Duration::from_millis(500));
        }
        if let Some(at) = self.restart_at
            && Instant::now() >= at
        {
            let (child, reader, log) = Self::spawn(launcher, self.instances, ledger)?;
            self.child = child;
            // The previous reader ends with its instance's stdout.
            self.reader = Some(reader);
            self.log = log;
            self.instances += 1;
            self.restart_at = None;
        }
        Ok(())
    }

    async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = signal(pid, "TERM").await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs the fleet soak.
pub(crate) async fn run(args: &[String]) -> Result {
    let settings = settings(args)?;
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The server: a throwaway one of the soak's own (restartable), or the shared one.
    let own = if settings.own_postgres {
        Some(OwnServer::start()?)
    } else {
        None
    };
    let server_url = own
        .as_ref()
        .map_or_else(fleet_pg::server_url, |own| own.url.clone());
    let mut scratch = ScratchDatabase::try_create(&server_url, "pullkin_fleet_soak").await?;
    let outcome = soak(&settings, &scratch, own.as_ref(), dir.path(), started).await;
    let dropped = scratch.try_drop().await;
    drop(own);
    match (outcome, dropped) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

async fn soak(
    settings: &Settings,
    scratch: &ScratchDatabase,
    own: Option<&OwnServer>,
    dir: &Path,
    started: Instant,
) -> Result {
    let mut rng = Rng::new(settings.seed);
    let emulator = Emulator::builder()
        .max_queued_messages(settings.messages + 10_000)
        .close_superseded_connections(false)
        .start()
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emulator.ca_cert_pem()).map_err(|e| e.to_string())?;
    let key_file = dir.join("fleet.key");
    let key: FleetKey = fleet_pg::write_key_file(&key_file)?;

    // The schema, the audit triggers, the identities (half of each persona).
    let database = Database::connect(&fleet_pg::with_param(
        &scratch.url,
        "application_name",
        "soak-setup",
    ))
    .map_err(|e| e.to_string())?;
    pullkin_fleet::migrate(&database)
        .await
        .map_err(|e| format!("migrating: {e}"))?;
    fleet_pg::connect(&scratch.url)
        .await?
        .batch_execute(AUDIT)
        .await
        .map_err(|e| format!("creating the audit triggers: {e}"))?;
    let mut identities: Vec<Identity> = Vec::new();
    for i in 0..settings.identities {
        let (app, credentials) = make_device(&emulator, i, i % 2 == 0)?;
        let id = pullkin_fleet::add_identity(&database, &key, &app.name, &credentials)
            .await
            .map_err(|e| format!("adding {}: {e}", app.name))?;
        identities.push(Identity { id, app });
    }
    let by_id: HashMap<i64, usize> = identities
        .iter()
        .enumerate()
        .map(|(i, identity)| (identity.id, i))
        .collect();
    let android: Vec<usize> = (0..identities.len())
        .filter(|i| identities[*i].app.subscription.is_none())
        .collect();
    let web: Vec<usize> = (0..identities.len())
        .filter(|i| identities[*i].app.subscription.is_some())
        .collect();
    let plan_messages: Vec<(usize, Kind)> = (0..settings.messages)
        .map(|n| {
            let kind = [Kind::Plain, Kind::Aesgcm, Kind::Aes128gcm][n % 3];
            let target = match kind {
                Kind::Plain => android[(n / 3) % android.len()],
                _ => web[(n / 3) % web.len()],
            };
            (target, kind)
        })
        .collect();

    let launcher = Launcher {
        pullkin: settings.pullkin.clone(),
        database_url: scratch.url.clone(),
        key_file: key_file.clone(),
        endpoints: emulator
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        mcs: format!("localhost:{}", emulator.mcs_addr().port()),
        ca: ca.clone(),
        dir: dir.to_path_buf(),
    };
    let mut workers: Vec<WorkerProc> = Vec::new();
    for _ in 0..3 {
        let name = format!("w{}", workers.len() + 1);
        workers.push(launcher.spawn(&name)?);
    }
    // The consumer: `pullkin fleet tail --consumer soak --follow` throughout (started
    // again, as a supervisor would, when it exits).
    let tail_ledger = Arc::new(Mutex::new(TailLedger::default()));
    let mut tail = Tail::start(&launcher, &tail_ledger)?;

    let mut probe = Probe {
        url: fleet_pg::with_param(&scratch.url, "application_name", "soak"),
        client: None,
    };
    // Every identity held and connected, by every worker, before the first message.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connected = identities
            .iter()
            .all(|i| emulator.is_connected(i.app.android_id));
        let mut spread = true;
        for worker in &workers {
            spread &= !probe
                .held_by(&worker.name)
                .await
                .unwrap_or_default()
                .is_empty();
        }
        if connected && spread {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the workers did not hold and connect every identity within 60 s; {}",
                log_tails(&workers)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup_seconds = started.elapsed().as_secs_f64();

    // Sending, with the planned faults.
    let send_time = Duration::from_secs_f64(settings.messages as f64 / settings.rate);
    let mut steps = plan(settings.full);
    let planned_steps = steps.clone();
    let mut takeovers: Vec<Takeover> = Vec::new();
    let mut restarts: Vec<Restart> = Vec::new();
    let mut restart_skipped: Option<String> = None;
    let mut pg = Pg::Up;
    let mut wake: Option<(usize, Instant)> = None;
    let mut persistent_ids: Vec<Option<String>> = vec![None; settings.messages];
    let mut sent_kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut order: Vec<&'static str> = Vec::new();
    let mut stalls: Vec<(Instant, u64)> = Vec::new();
    let wanted_faults = if settings.full { 200 } else { 30 };
    let mean_gap = send_time.div_f64(wanted_faults as f64 * 1.15);
    let mut next_fault = Instant::now() + rng.between(mean_gap / 2, mean_gap * 3 / 2);
    let mut sent = 0usize;
    let sending_started = Instant::now();
    let mut step_log: Vec<Value> = Vec::new();
    let mut self_exits: Vec<String> = Vec::new();
    loop {
        let now = Instant::now();
        if sent >= settings.messages
            && steps.is_empty()
            && wake.is_none()
            && matches!(pg, Pg::Up)
            && stalls.is_empty()
        {
            break;
        }
        // Workers that exited by themselves.
        for worker in &mut workers {
            if matches!(worker.fate, Fate::Running | Fate::Stopped)
                && let Ok(Some(status)) = worker.child.try_wait()
            {
                worker.fate = Fate::Exited;
                self_exits.push(format!("{} ({status})", worker.name));
            }
        }

        tail.supervise(&launcher, &tail_ledger)?;

        // The planned steps, when due.
        if let Some(&(at, step)) = steps.first()
            && now >= sending_started + send_time.mul_f64(at)
        {
            steps.remove(0);
            let elapsed = emulator.elapsed();
            match step {
                Step::Kill | Step::Stop => {
                    // The running worker holding the most identities.
                    let mut best: Option<(usize, Vec<i64>)> = None;
                    for (index, worker) in workers.iter().enumerate() {
                        if worker.fate != Fate::Running {
                            continue;
                        }
                        let held = probe.held_by(&worker.name).await.unwrap_or_default();
                        if best.as_ref().is_none_or(|(_, b)| held.len() > b.len()) {
                            best = Some((index, held));
                        }
                    }
                    let Some((index, held)) = best else {
                        return Err("no running worker to kill or stop".into());
                    };
                    let unacked: HashSet<String> = held
                        .iter()
                        .filter_map(|id| by_id.get(id))
                        .flat_map(|i| {
                            let android_id = identities[*i].app.android_id;
                            let mut ids = emulator.unacked_ids(android_id);
                            ids.extend(emulator.pending_ids(android_id));
                            ids
                        })
                        .collect();
                    let max_seq = probe
                        .query("SELECT max(seq) FROM pullkin.notifications", &[])
                        .await
                        .ok()
                        .and_then(|rows| rows.first().and_then(|r| r.get(0)));
                    let worker = &mut workers[index];
                    let at = emulator.elapsed();
                    if step == Step::Kill {
                        worker
                            .child
                            .start_kill()
                            .map_err(|e| format!("cannot kill {}: {e}", worker.name))?;
                        let _ = worker.child.wait().await;
                        worker.fate = Fate::Killed;
                    } else {
                        signal(worker.pid, "STOP").await?;
                        worker.fate = Fate::Stopped;
                        wake = Some((index, Instant::now() + LEASE_TTL + STOP_PAST_LEASE));
                    }
                    step_log.push(json!({
                        "step": if step == Step::Kill { "sigkill" } else { "sigstop" },
                        "worker": worker.name,
                        "at_s": (at.as_secs_f64() * 10.0).round() / 10.0,
                        "held": held.len(),
                    }));
                    takeovers.push(Takeover {
                        step: if step == Step::Kill {
                            "sigkill"
                        } else {
                            "sigstop"
                        },
                        worker: worker.name.clone(),
                        at,
                        woke: None,
                        held,
                        unacked,
                        max_seq,
                    });
                }
                Step::Start => {
                    let name = format!("w{}", workers.len() + 1);
                    workers.push(launcher.spawn(&name)?);
                    step_log.push(json!({
                        "step": "new_worker", "worker": name,
                        "at_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
                    }));
                }
                Step::PgRestart => match own {
                    Some(server) if matches!(pg, Pg::Up) => {
                        step_log.push(json!({
                            "step": "postgres_stop", "port": server.port,
                            "at_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
                        }));
                        restarts.push(Restart {
                            down_at: elapsed,
                            up_at: None,
                        });
                        pg = Pg::Stopping(stop_in_background(server));
                    }
                    Some(_) => {}
                    None => {
                        restart_skipped = Some(format!(
                            "the soak uses the server of PULLKIN_TEST_DATABASE_URL ({}), not one \
                             it started: restarting it would disturb others (--postgres own \
                             runs a throwaway server and restarts it)",
                            fleet_pg::shown(&fleet_pg::server_url())
                        ));
                    }
                },
            }
        }
        // A stopped worker woken.
        if let Some((index, at)) = wake
            && now >= at
        {
            let worker = &mut workers[index];
            signal(worker.pid, "CONT").await?;
            if worker.fate == Fate::Stopped {
                worker.fate = Fate::Running;
            }
            let woke = emulator.elapsed();
            if let Some(takeover) = takeovers
                .iter_mut()
                .rev()
                .find(|t| t.worker == worker.name && t.woke.is_none())
            {
                takeover.woke = Some(woke);
            }
            step_log.push(json!({
                "step": "sigcont", "worker": worker.name,
                "at_s": (woke.as_secs_f64() * 10.0).round() / 10.0,
            }));
            wake = None;
        }
        // The database restart, step by step.
        pg = match pg {
            Pg::Stopping(handle) if handle.is_finished() => {
                handle.await.map_err(|e| e.to_string())??;
                Pg::Down(Instant::now() + PG_DOWN)
            }
            Pg::Down(until) if now >= until => match own {
                Some(server) => Pg::Starting(start_in_background(server)),
                None => Pg::Up,
            },
            Pg::Starting(handle) if handle.is_finished() => {
                handle.await.map_err(|e| e.to_string())??;
                if let Some(restart) = restarts.last_mut() {
                    restart.up_at = Some(emulator.elapsed());
                }
                Pg::Up
            }
            other => other,
        };

        // Send what is due.
        let due = ((now - sending_started).as_secs_f64() * settings.rate) as usize;
        while sent < due.min(settings.messages) {
            let (target, kind) = plan_messages[sent];
            let receipt = send_message(&emulator, &identities[target].app, kind, sent)?;
            persistent_ids[sent] = Some(receipt.persistent_id);
            *sent_kinds.entry(kind.name()).or_default() += 1;
            sent += 1;
        }

        // Stalls that lasted long enough.
        stalls.retain(|(until, android_id)| {
            if now >= *until {
                emulator.clear_faults(Target::Device(*android_id));
                false
            } else {
                true
            }
        });
        // The emulator's faults, at random intervals.
        if sent < settings.messages && now >= next_fault {
            let identity = &identities[rng.below(identities.len())];
            let android_id = identity.app.android_id;
            if order.is_empty() {
                order = FAULTS.to_vec();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
            }
            let name = order.pop().unwrap_or("cut");
            let stalled = stalls.iter().any(|(_, id)| *id == android_id);
            let fault = match name {
                "drop_mid_frame" => Some(Fault::DropMidFrame),
                "drop_after_frames" => Some(Fault::DropAfterFrames(1 + rng.below(20) as u32)),
                "stall" if !stalled => {
                    stalls.push((now + STALL_FOR, android_id));
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
                    emulator.disconnect(Target::Device(android_id));
                    None
                }
            };
            if let Some(fault) = fault {
                emulator
                    .inject_fault(Target::Device(android_id), fault)
                    .map_err(|e| e.to_string())?;
            }
            if name != "stall" || !stalled {
                *faults.entry(name).or_default() += 1;
            }
            next_fault = now + rng.between(mean_gap / 2, mean_gap * 3 / 2);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sending_seconds = sending_started.elapsed().as_secs_f64();

    // Drain: every message stored, every message acknowledged.
    let drain_deadline = Instant::now() + settings.drain_timeout;
    let mut stored = 0i64;
    while Instant::now() < drain_deadline {
        tail.supervise(&launcher, &tail_ledger)?;
        stored = probe.count().await.unwrap_or(stored);
        if stored >= settings.messages as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked = emulator
        .wait_until(Duration::from_secs(20), |e| {
            identities.iter().all(|i| {
                e.pending_ids(i.app.android_id).is_empty()
                    && e.unacked_ids(i.app.android_id).is_empty()
            })
        })
        .await;
    // The tail reads what was stored.
    let tail_deadline = Instant::now() + Duration::from_secs(15);
    while lock(&tail_ledger).by_n.len() < settings.messages && Instant::now() < tail_deadline {
        tail.supervise(&launcher, &tail_ledger)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The workers left: SIGTERM, each must hand off and exit 0.
    for worker in &mut workers {
        if worker.fate == Fate::Stopped {
            let _ = signal(worker.pid, "CONT").await;
            worker.fate = Fate::Running;
        }
        if worker.fate == Fate::Running {
            signal(worker.pid, "TERM").await?;
        }
    }
    for worker in &mut workers {
        if worker.fate == Fate::Running {
            let clean = tokio::time::timeout(Duration::from_secs(20), worker.child.wait())
                .await
                .ok()
                .and_then(std::result::Result::ok)
                .is_some_and(|s| s.success());
            worker.fate = Fate::Terminated { clean };
        }
    }
    tail.terminate().await;
    emulator.shutdown().await;

    // ---- the verdict ----
    let mut failures: Vec<String> = Vec::new();
    let rows = probe
        .query(
            "SELECT n.seq, n.identity_id, n.persistent_id, n.encoding, n.line
             FROM pullkin.notifications n ORDER BY n.seq",
            &[],
        )
        .await?;
    let mut by_n: HashMap<usize, Vec<(i64, Option<String>)>> = HashMap::new();
    let mut by_pid: HashMap<(i64, String), usize> = HashMap::new();
    let mut unexpected: Vec<String> = Vec::new();
    let mut wrong: Vec<String> = Vec::new();
    for row in &rows {
        let seq: i64 = row.get(0);
        let identity: i64 = row.get(1);
        let persistent_id: Option<String> = row.get(2);
        let encoding: Option<String> = row.get(3);
        let line: Value = row.get(4);
        if let Some(pid) = &persistent_id {
            *by_pid.entry((identity, pid.clone())).or_default() += 1;
        }
        let n: Option<usize> = line["data"]["n"].as_str().and_then(|n| n.parse().ok());
        let Some(n) = n.filter(|n| *n < settings.messages) else {
            if unexpected.len() < 5 {
                unexpected.push(format!("seq {seq}: {line}"));
            }
            continue;
        };
        let (target, kind) = plan_messages[n];
        let identity_ok = identities[target].id == identity
            && line["app"] == identities[target].app.name.as_str();
        let encoding_ok = line["encoding"] == kind.encoding()
            && encoding.as_deref() == kind.encoding().as_str()
            && line["data"]["kind"] == kind.name();
        let pid_ok = persistent_id.is_some() && persistent_id == persistent_ids[n];
        if !(identity_ok && encoding_ok && pid_ok) && wrong.len() < 5 {
            wrong.push(format!(
                "message {n} (seq {seq}): identity {identity} {}, encoding {encoding:?}, \
                 persistent id {persistent_id:?} (sent as {:?})",
                line["app"], persistent_ids[n]
            ));
        }
        by_n.entry(n).or_default().push((seq, persistent_id));
    }
    let missing: Vec<usize> = (0..settings.messages)
        .filter(|n| !by_n.contains_key(n))
        .collect();
    let duplicates_by_n: usize = by_n.values().map(|v| v.len() - 1).sum();
    let duplicates_by_pid: usize = by_pid.values().map(|c| c - 1).sum();
    if !missing.is_empty() {
        failures.push(format!(
            "{} messages are not in pullkin.notifications (first: {:?})",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    if duplicates_by_n > 0 || duplicates_by_pid > 0 {
        let twice: Vec<String> = by_n
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .take(5)
            .map(|(n, v)| format!("message {n}: {v:?}"))
            .collect();
        failures.push(format!(
            "stored more than once: {duplicates_by_n} by payload id, {duplicates_by_pid} by \
             persistent id: {twice:?}"
        ));
    }
    if !wrong.is_empty() {
        failures.push(format!(
            "rows with the wrong identity, encoding or id: {wrong:?}"
        ));
    }
    if !unexpected.is_empty() {
        failures.push(format!(
            "rows that are no message of this run: {unexpected:?}"
        ));
    }
    if !acked {
        failures.push("the emulator still holds unacknowledged messages".into());
    }

    // Fencing, from the audit.
    let audit_rows = probe
        .query(
            "SELECT count(*),
                    count(*) FILTER (WHERE holder IS DISTINCT FROM writer),
                    count(*) FILTER (WHERE lease_expired)
             FROM soak_audit.rows",
            &[],
        )
        .await?;
    let audit_acks = probe
        .query(
            "SELECT count(*),
                    count(*) FILTER (WHERE holder IS DISTINCT FROM writer),
                    count(*) FILTER (WHERE carried_epoch IS DISTINCT FROM lease_epoch),
                    count(*) FILTER (WHERE lease_expired)
             FROM soak_audit.acks",
            &[],
        )
        .await?;
    let audit_credentials = probe
        .query(
            "SELECT count(*), count(*) FILTER (WHERE holder IS DISTINCT FROM writer)
             FROM soak_audit.credentials",
            &[],
        )
        .await?;
    // Writes on a lease that had expired (in database time) and nobody had claimed yet:
    // by whom and when (seconds on the emulator's clock, as the steps), in runs of
    // writes no more than a second apart.
    let emulator_epoch = std::time::SystemTime::now()
        .checked_sub(emulator.elapsed())
        .unwrap_or(std::time::UNIX_EPOCH);
    let expired_rows = probe
        .query(
            "SELECT writer, at FROM soak_audit.rows WHERE lease_expired
             UNION ALL SELECT writer, at FROM soak_audit.acks WHERE lease_expired
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    let mut expired_runs: Vec<(String, f64, f64, usize)> = Vec::new();
    for row in &expired_rows {
        let writer: Option<String> = row.get(0);
        let writer = writer.unwrap_or_default();
        let at: std::time::SystemTime = row.get(1);
        let at = at
            .duration_since(emulator_epoch)
            .map_or(0.0, |d| d.as_secs_f64());
        match expired_runs.last_mut() {
            Some(run) if run.0 == writer && at - run.2 <= 1.0 => {
                run.2 = at;
                run.3 += 1;
            }
            _ => expired_runs.push((writer, at, at, 1)),
        }
    }
    let expired_runs: Vec<Value> = expired_runs
        .iter()
        .map(|(writer, from, to, count)| {
            json!({
                "writer": writer,
                "writes": count,
                "from_s": (from * 10.0).round() / 10.0,
                "to_s": (to * 10.0).round() / 10.0,
            })
        })
        .collect();
    let stale_examples = probe
        .query(
            "(SELECT 'row seq ' || seq || ' of identity ' || identity_id || ' written by ' ||
                     writer || ', lease held by ' || coalesce(holder, 'nobody') || ' at epoch ' ||
                     coalesce(lease_epoch::text, '?')
              FROM soak_audit.rows WHERE holder IS DISTINCT FROM writer LIMIT 3)
             UNION ALL
             (SELECT 'ack state of identity ' || identity_id || ' written by ' || writer ||
                     ' at epoch ' || carried_epoch || ', lease held by ' ||
                     coalesce(holder, 'nobody') || ' at epoch ' || coalesce(lease_epoch::text, '?')
              FROM soak_audit.acks
              WHERE holder IS DISTINCT FROM writer OR carried_epoch IS DISTINCT FROM lease_epoch
              LIMIT 3)",
            &[],
        )
        .await?;
    let get = |rows: &[tokio_postgres::Row], i: usize| -> i64 {
        rows.first().map_or(0, |r| r.get::<_, i64>(i))
    };
    let stale_rows = get(&audit_rows, 1);
    let stale_acks = get(&audit_acks, 1) + get(&audit_acks, 2);
    let stale_credentials = get(&audit_credentials, 1);
    if stale_rows + stale_acks + stale_credentials > 0 {
        let examples: Vec<String> = stale_examples.iter().map(|r| r.get(0)).collect();
        failures.push(format!(
            "writes accepted from a worker that did not hold the lease at that epoch: {stale_rows} \
             row inserts, {stale_acks} ack states, {stale_credentials} credentials: {examples:?}"
        ));
    }
    // What the workers logged.
    let mut logged: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut panics: Vec<String> = Vec::new();
    // Self-fencing: each time a worker stops the connections of leases it could not
    // renew, how many and how long from the decision until the last was stopped.
    let mut fence_bursts: Vec<Value> = Vec::new();
    for worker in &workers {
        let text = std::fs::read_to_string(&worker.log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("self-fenced:")) {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(name))
                    .and_then(|value| value.trim_end_matches(',').parse::<f64>().ok())
            };
            fence_bursts.push(json!({
                "worker": worker.name,
                "identities": field("identities="),
                "span_ms": field("ms=").map(|ms| (ms * 10.0).round() / 10.0),
            }));
        }
        for line in text.lines() {
            for (pattern, name) in [
                ("writes refused", "fenced_writes_refused"),
                ("could not renew the leases in time", "self_fencings"),
                ("lease lost", "leases_lost_at_renewal"),
                ("handing off for a fair share", "hand_offs"),
                ("cannot renew the leases", "renewals_failed"),
                ("group commit of", "group_commits_failed"),
                (" holding", "claims_started"),
            ] {
                if line.contains(pattern) {
                    *logged.entry(name).or_default() += 1;
                }
            }
            if line.contains("panicked") && panics.len() < 3 {
                panics.push(format!("{}: {line}", worker.name));
            }
        }
    }
    if !panics.is_empty() {
        failures.push(format!("a worker panicked: {panics:?}"));
    }
    if !self_exits.is_empty() {
        failures.push(format!("workers exited by themselves: {self_exits:?}"));
    }
    let unclean: Vec<&str> = workers
        .iter()
        .filter(|w| w.fate == Fate::Terminated { clean: false })
        .map(|w| w.name.as_str())
        .collect();
    if !unclean.is_empty() {
        failures.push(format!("workers did not exit 0 on SIGTERM: {unclean:?}"));
    }

    // Takeovers: the first login after the signal, per identity.
    let mut takeover_summary = Vec::new();
    let mut committed_unacked_at_kills = 0usize;
    for takeover in &takeovers {
        let mut times: Vec<f64> = Vec::new();
        let mut per_identity = BTreeMap::new();
        let mut never = Vec::new();
        for id in &takeover.held {
            let Some(&index) = by_id.get(id) else {
                continue;
            };
            let identity = &identities[index];
            let next = emulator
                .login_history(identity.app.android_id)
                .into_iter()
                .find(|r| r.logged_in_at > takeover.at);
            match next {
                Some(record) => {
                    let t = ms(record.logged_in_at - takeover.at);
                    times.push(t);
                    per_identity.insert(identity.app.name.clone(), t);
                }
                None => never.push(identity.app.name.clone()),
            }
        }
        if !never.is_empty() {
            failures.push(format!(
                "after the {} of {}, {} identities never logged in again: {never:?}",
                takeover.step,
                takeover.worker,
                never.len()
            ));
        }
        // Stored before the signal, not acknowledged then: came back, not stored again.
        if let Some(max_seq) = takeover.max_seq {
            committed_unacked_at_kills += rows
                .iter()
                .filter(|r| {
                    r.get::<_, i64>(0) <= max_seq
                        && r.get::<_, Option<String>>(2)
                            .is_some_and(|p| takeover.unacked.contains(&p))
                })
                .count();
        }
        times.sort_by(f64::total_cmp);
        let mut entry = json!({
            "step": takeover.step,
            "worker": takeover.worker,
            "identities": takeover.held.len(),
            "taken_over": times.len(),
            "takeover_ms_p50": percentile(&times, 0.5),
            "takeover_ms_max": times.last().copied().unwrap_or(0.0),
        });
        if let Some(woke) = takeover.woke {
            // Taken over only once the frozen worker woke: its leases were locked by a
            // transaction it had open (the store's `FOR KEY SHARE`), which claims skip.
            let frozen = ms(woke - takeover.at);
            entry["frozen_ms"] = json!(frozen);
            entry["taken_over_after_wake"] = json!(times.iter().filter(|t| **t > frozen).count());
        }
        if per_identity.len() <= 60 {
            entry["takeover_ms"] = json!(per_identity);
        }
        takeover_summary.push(entry);
    }
    if takeovers.is_empty() {
        failures.push("no worker was killed or stopped".into());
    }

    // Overlaps, by what explains them. A frozen worker cannot close its connections: an
    // overlap that starts while it is frozen (or just after it woke) on one of its
    // identities is expected. After a kill (the kernel closes the sockets) and around a
    // database restart (the old holder stops its connections before its leases can
    // expire) the old connection should be gone before the new login: an overlap there
    // breaks "one holder per identity", as does one outside any takeover.
    let mut overlap_total = Duration::ZERO;
    let mut overlap_max_identity = Duration::ZERO;
    let mut overlapping = 0usize;
    // (intervals, total, longest)
    let mut frozen = (0usize, Duration::ZERO, Duration::ZERO);
    let mut other_takeover = (0usize, Duration::ZERO, Duration::ZERO);
    let mut outside = (0usize, Duration::ZERO, Duration::ZERO);
    let mut examples = Vec::new();
    let by_android: HashMap<u64, &Identity> =
        identities.iter().map(|i| (i.app.android_id, i)).collect();
    for (android_id, overlap) in emulator.overlap_report() {
        if overlap.max < 2 {
            continue;
        }
        overlapping += 1;
        overlap_total += overlap.total;
        overlap_max_identity = overlap_max_identity.max(overlap.total);
        let identity = by_android.get(&android_id);
        for (start, end) in &overlap.intervals {
            let length = end.saturating_sub(*start);
            let held_in = |t: &&Takeover| {
                identity.is_some_and(|i| t.held.contains(&i.id))
                    && *start >= t.at
                    && *start <= t.window_end()
            };
            let while_frozen = takeovers
                .iter()
                .filter(|t| t.woke.is_some())
                .any(|t| held_in(&t));
            let after_kill = takeovers
                .iter()
                .filter(|t| t.woke.is_none())
                .any(|t| held_in(&t));
            let around_restart = restarts.iter().any(|r| {
                *start >= r.down_at
                    && r.up_at
                        .is_none_or(|up| *start <= up + LEASE_TTL + TAKEOVER_GRACE)
            });
            let (bucket, what) = if while_frozen {
                (&mut frozen, "")
            } else if after_kill {
                (&mut other_takeover, "after a SIGKILL")
            } else if around_restart {
                (&mut other_takeover, "around a database restart")
            } else {
                (&mut outside, "outside any takeover")
            };
            bucket.0 += 1;
            bucket.1 += length;
            bucket.2 = bucket.2.max(length);
            if !while_frozen && examples.len() < 5 {
                examples.push(format!(
                    "{} at {:.3} s for {:.1} ms ({what})",
                    identity.map_or("?", |i| i.app.name.as_str()),
                    start.as_secs_f64(),
                    ms(length)
                ));
            }
        }
    }
    if other_takeover.0 + outside.0 > 0 {
        failures.push(format!(
            "{} times two connections of one identity were logged in at once while no worker \
             was frozen (the old holder should have stopped first): {examples:?}",
            other_takeover.0 + outside.0
        ));
    }

    // The planned steps all happened.
    let kills = takeovers.iter().filter(|t| t.step == "sigkill").count();
    let stops = takeovers.iter().filter(|t| t.step == "sigstop").count();
    let planned = |s: Step| planned_steps.iter().filter(|(_, p)| *p == s).count();
    if kills < planned(Step::Kill) || stops < planned(Step::Stop) {
        failures.push(format!(
            "only {kills} kills and {stops} stops of {} and {}",
            planned(Step::Kill),
            planned(Step::Stop)
        ));
    }
    let done_restarts = restarts.iter().filter(|r| r.up_at.is_some()).count();
    if own.is_some() && done_restarts < planned(Step::PgRestart) {
        failures.push(format!(
            "only {done_restarts} of {} database restarts happened",
            planned(Step::PgRestart)
        ));
    }
    let fault_count: usize = faults.values().sum();
    if fault_count < wanted_faults * 3 / 4 {
        failures.push(format!(
            "only {fault_count} of {wanted_faults} emulator faults were injected"
        ));
    }
    // The tail: every message printed; a message twice only after an exit (the batch
    // printed and not committed yet is printed again by the next instance).
    let ledger = lock(&tail_ledger);
    let tail_missing = (0..settings.messages)
        .filter(|n| !ledger.by_n.contains_key(n))
        .count();
    let tail_duplicates: usize = ledger.by_n.values().map(|c| c - 1).sum();
    let allowed = tail.exits.len() * TAIL_BATCH;
    if tail_missing > 0 || tail_duplicates > allowed || !ledger.unexpected.is_empty() {
        let log = std::fs::read_to_string(&tail.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        failures.push(format!(
            "`pullkin fleet tail --consumer soak --follow` printed {} lines: {tail_missing} \
             messages missing, {tail_duplicates} twice (at most {allowed} allowed after {} \
             exits), unexpected: {:?}; its stderr ends: {:?}",
            ledger.lines,
            tail.exits.len(),
            ledger.unexpected,
            &lines[lines.len().saturating_sub(5)..]
        ));
    }

    let postgres = json!({
        "server": if own.is_some() { "own (throwaway, started by the soak)" } else { "PULLKIN_TEST_DATABASE_URL" },
        "database": scratch.name,
        "restarts": done_restarts,
        "down_ms": restarts.iter().filter_map(|r| r.up_at.map(|up| ms(up - r.down_at))).collect::<Vec<_>>(),
        "restart_skipped": restart_skipped,
    });
    let summary = json!({
        "soak": if settings.full { "full" } else { "short" },
        "mode": "fleet",
        "ok": failures.is_empty(),
        "seed": settings.seed,
        "identities": identities.len(),
        "personas": {"android": android.len(), "web": web.len()},
        "messages": settings.messages,
        "sent_by_kind": sent_kinds,
        "stored_rows": rows.len(),
        "stored_messages": by_n.len(),
        "missing": missing.len(),
        "duplicates_by_payload_id": duplicates_by_n,
        "duplicates_by_persistent_id": duplicates_by_pid,
        "server_all_acked": acked,
        "committed_unacked_at_signals": committed_unacked_at_kills,
        "fencing": {
            "audited_row_inserts": get(&audit_rows, 0),
            "audited_ack_writes": get(&audit_acks, 0),
            "audited_credential_writes": get(&audit_credentials, 0),
            "rows_by_non_holder": stale_rows,
            "acks_by_non_holder_or_stale_epoch": stale_acks,
            "credentials_by_non_holder": stale_credentials,
            "self_fencing_bursts": fence_bursts,
            "self_fencing_margin_ms": (LEASE_TTL / 5).as_millis(),
            "writes_on_expired_unclaimed_lease": get(&audit_rows, 2) + get(&audit_acks, 3),
            "expired_lease_writes": expired_runs,
            "logged": logged,
        },
        "takeovers": takeover_summary,
        "overlap": {
            "identities_with_overlap": overlapping,
            "total_ms": ms(overlap_total),
            "max_per_identity_ms": ms(overlap_max_identity),
            "while_a_worker_was_frozen": {"intervals": frozen.0, "total_ms": ms(frozen.1), "max_ms": ms(frozen.2)},
            "in_other_takeovers": {"intervals": other_takeover.0, "total_ms": ms(other_takeover.1), "max_ms": ms(other_takeover.2)},
            "outside_takeovers": {"intervals": outside.0, "total_ms": ms(outside.1), "max_ms": ms(outside.2)},
            "any_outside_takeover": outside.0 > 0,
            "examples": examples,
        },
        "postgres": postgres,
        "steps": step_log,
        "workers": workers.iter().map(|w| json!({
            "worker": w.name,
            "fate": match w.fate {
                Fate::Running => "running",
                Fate::Stopped => "stopped",
                Fate::Killed => "sigkilled",
                Fate::Exited => "exited by itself",
                Fate::Terminated { clean: true } => "exited 0 on SIGTERM",
                Fate::Terminated { clean: false } => "failed on SIGTERM",
            },
        })).collect::<Vec<_>>(),
        "faults": fault_count,
        "faults_by_kind": faults,
        "tail_follow": {
            "lines": ledger.lines,
            "distinct": ledger.by_n.len(),
            "missing": tail_missing,
            "duplicates": tail_duplicates,
            "instances": tail.instances,
            "exits": tail.exits,
        },
        "lease_ttl_s": LEASE_TTL.as_secs(),
        "setup_seconds": (setup_seconds * 10.0).round() / 10.0,
        "sending_seconds": (sending_seconds * 10.0).round() / 10.0,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "failures": failures,
    });
    println!("{summary}");
    if settings.log {
        eprintln!("{}", log_tails(&workers));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        // The logs outlive the run's directory, for a look at what happened.
        let kept = std::env::temp_dir().join(format!("pullkin-fleet-soak-{}", settings.seed));
        let _ = std::fs::create_dir_all(&kept);
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log")
                && let Some(name) = path.file_name()
            {
                let _ = std::fs::copy(&path, kept.join(name));
            }
        }
        Err(format!(
            "fleet soak failed (seed {}; the logs are in {}); {}",
            settings.seed,
            kept.display(),
            log_tails(&workers)
        ))
    }
}

fn stop_in_background(server: &OwnServer) -> JoinHandle<Result> {
    let control = server.control();
    tokio::task::spawn_blocking(move || control.stop())
}

fn start_in_background(server: &OwnServer) -> JoinHandle<Result> {
    let control = server.control();
    tokio::task::spawn_blocking(move || control.start_again())
}

/// The last lines of every worker's log.
fn log_tails(workers: &[WorkerProc]) -> String {
    let mut out = String::from("last worker output:");
    for worker in workers {
        let text = std::fs::read_to_string(&worker.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- {} ---\n", worker.name));
        out.push_str(&lines[lines.len().saturating_sub(12)..].join("\n"));
    }
    out
}

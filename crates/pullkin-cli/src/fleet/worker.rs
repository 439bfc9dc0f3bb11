//! `pullkin fleet worker`: one process of the fleet. It claims a fair share of the
//! identities, listens for each one it holds, stores every message once, and hands
//! everything off on SIGINT/SIGTERM; SIGUSR1 checks every connection. Stderr gets the
//! `[name] connecting/connected/retrying …` lines `pullkin listen` prints.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pullkin::{ConnectionState, Event};
use pullkin_fleet::Worker;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

use super::{DbArgs, KeyArgs, parse_ttl};
use crate::common::NetArgs;
use crate::error::{CliError, Kind, Result};
use crate::listen::{ConnectionArgs, report};
use crate::notify::Notifier;
use crate::{log, signal};

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin fleet worker                              # as many identities as its fair share
  pullkin fleet worker --capacity 5000 --lease-ttl 30
  # Against the local emulator (`pullkin emulator` prints these):
  pullkin fleet worker --endpoints https://127.0.0.1:4443 --mcs 127.0.0.1:5228 --ca ca.pem

Run one on each machine (or several on one): they share the identities through the
database alone, each aiming at its fair share and taking over the identities of a worker
that stopped renewing its leases within --lease-ttl. Every message is stored once (read
them with `pullkin fleet tail`). Stderr gets `[name] connecting|connected|retrying …`.
SIGINT/SIGTERM hand every identity off (stop, store, release) and exit 0; SIGUSR1 checks
every connection now. Under systemd (`Type=notify`) it reports READY=1 once it runs, and
`STATUS=<n>/<m> connected`. It refuses a key that seals none of the identities and a
schema of another version (run `pullkin fleet migrate`, or pass --migrate).";

/// Arguments of `pullkin fleet worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Hold at most this many identities.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    capacity: Option<u64>,
    /// The lease TTL in seconds: renewed every third of it; another worker takes over
    /// the identities of one that stopped renewing after as long.
    #[arg(long, value_name = "SECONDS", default_value = "15", value_parser = parse_ttl)]
    lease_ttl: Duration,
    /// This worker's id in the database (default: a fresh UUID). Two running workers
    /// must not share one.
    #[arg(long, value_name = "ID")]
    worker_id: Option<String>,
    /// Create or upgrade the schema at start (default: refuse one of another version).
    #[arg(long)]
    migrate: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    net: NetArgs,
}

/// Runs `pullkin fleet worker`.
pub(crate) async fn run(args: WorkerArgs) -> Result<ExitCode> {
    // Watch the signals first: one that arrives during start-up still stops us cleanly.
    let stop = signal::watch()?;
    let mut probes = signal::ProbeRequests::watch()?;
    let notifier = Notifier::from_env();
    args.connection.check(&args.net)?;
    let key = args.key.load()?;
    let config = args.connection.config(&args.net).config_error()?;
    // Building the clients reads --endpoints, --ca and --proxy; nothing is sent yet.
    let core = args.net.core(None).config_error()?;
    let db = args.db.open()?;
    if args.migrate {
        pullkin_fleet::migrate(&db.database)
            .await
            .map_err(|error| db.error(error, "migrating the schema"))?;
    } else {
        db.check_schema().await?;
    }
    db.check_key(&key).await?;

    let mut builder = Worker::builder(&db.database, key)
        .lease_ttl(args.lease_ttl)
        .listener_config(config)
        .migrate(false);
    if let Some(capacity) = args.capacity {
        builder = builder.capacity(usize::try_from(capacity).unwrap_or(usize::MAX));
    }
    if let Some(id) = &args.worker_id {
        builder = builder.worker_id(id.clone());
    }
    builder = if args.connection.no_renew {
        builder.tls(core.tls_config())
    } else {
        builder.core(Arc::new(core))
    };
    let worker = builder
        .build()
        .map_err(|error| db.error(error, "setting up the worker"))?;
    let id = worker.id().to_owned();
    let handle = worker.handle();
    let mut events = handle.events();
    let (stop_worker, stopped) = oneshot::channel::<()>();
    let mut task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    log::info(
        None,
        format_args!(
            "worker {id} started (lease TTL {} s{})",
            args.lease_ttl.as_secs_f64(),
            args.capacity
                .map(|c| format!(", capacity {c}"))
                .unwrap_or_default()
        ),
    );
    let mut readiness = Readiness::new(notifier);

    tokio::pin!(stop);
    let mut stop_worker = Some(stop_worker);
    let ended = loop {
        tokio::select! {
            signal = &mut stop, if stop_worker.is_some() => {
                log::info(None, format_args!("{signal}: stopping (handing every identity off)"));
                readiness.stopping(signal);
                if let Some(stop) = stop_worker.take() {
                    let _ = stop.send(());
                }
            }
            () = probes.recv() => {
                log::info(None, "SIGUSR1: checking every connection now");
                readiness.probing(|| handle.probe());
            }
            event = events.recv() => match event {
                Ok(event) => {
                    report(&event);
                    readiness.update(&event);
                }
                Err(RecvError::Lagged(n)) => log::warn(None, format_args!("({n} events were missed)")),
                Err(RecvError::Closed) => {}
            },
            ended = &mut task => break ended,
        }
    };
    let outcome = match ended {
        Ok(Ok(())) => {
            log::info(None, format_args!("worker {id} stopped"));
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(error)) => Err(db.error(error, "running the worker")),
        Err(error) => Err(CliError::msg(format!("the worker task failed: {error}"))),
    };
    if let Err(error) = &outcome {
        readiness.stopping(&error.chain());
    }
    outcome
}

/// What the service manager is told (when `NOTIFY_SOCKET` is set): `READY=1` once the
/// worker runs (the schema and the key checked, its row about to be written; it claims
/// and connects from then on), `STATUS=<connected>/<held> connected` on every change,
/// `RELOADING=1` … `READY=1` around a SIGUSR1 probe, `STOPPING=1` when it stops.
struct Readiness {
    notifier: Notifier,
    /// Every identity the listener told of, and whether it is connected now.
    connected: BTreeMap<String, bool>,
    status: String,
}

impl Readiness {
    fn new(notifier: Notifier) -> Self {
        let mut readiness = Self {
            notifier,
            connected: BTreeMap::new(),
            status: String::new(),
        };
        readiness.status = readiness.line();
        readiness.notifier.send(&["READY=1", &readiness.status]);
        readiness
    }

    fn line(&self) -> String {
        let connected = self.connected.values().filter(|c| **c).count();
        format!("STATUS={connected}/{} connected", self.connected.len())
    }

    fn update(&mut self, event: &Event) {
        let Event::State { app, state } = event else {
            return;
        };
        match state {
            // Handed off, or dropped: no longer held.
            ConnectionState::Stopped { .. } => {
                self.connected.remove(app);
            }
            state => {
                self.connected.insert(
                    app.clone(),
                    matches!(state, ConnectionState::Connected { .. }),
                );
            }
        }
        let status = self.line();
        if status != self.status {
            self.notifier.send(&[&status]);
            self.status = status;
        }
    }

    fn probing(&mut self, probe: impl FnOnce()) {
        self.notifier
            .send(&["RELOADING=1", "STATUS=checking every connection"]);
        probe();
        self.notifier.send(&["READY=1", &self.status]);
    }

    fn stopping(&self, why: &str) {
        let status = format!("STATUS=stopping: {}", why.replace(['\n', '\r'], " "));
        self.notifier.send(&["STOPPING=1", &status]);
    }
}

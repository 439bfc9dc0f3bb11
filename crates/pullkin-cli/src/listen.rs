//! `pullkin listen`: one MCS connection per credentials file, each notification as one
//! JSON line on stdout, the connection state on stderr (and, under a service manager, in
//! its readiness notifications: see [`Readiness`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use pullkin::{
    AppCredentials, ConnectionError, ConnectionState, CredentialsChange, DirStore, Event,
    ListenerConfig, Pullkin, Store, StoreError,
};
use tokio::sync::broadcast::error::RecvError;

use crate::common::{self, NetArgs};
use crate::error::{CliError, Context, ErrorKind, Kind, Result};
use crate::notify::Notifier;
use crate::output::Output;
use crate::sinks::SinkArgs;
use crate::status::{StatusFile, Table};
use crate::{log, signal};

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin listen web.json app.json
  pullkin listen web.json --state-dir /var/lib/pullkin | jq .data
  # Against the local emulator (`pullkin emulator` prints these):
  pullkin listen web.json --endpoints https://127.0.0.1:4443 --mcs 127.0.0.1:5228 --ca ca.pem

Each app is named after its file (`web.json` is app `web`). Stdout gets one JSON object per
notification: app, persistent_id, fcm_message_id, sender_id, priority, sent_ms,
received_ms, encoding (null, \"aesgcm\" or \"aes128gcm\"), data, notification, raw,
and payload (or payload_base64) when the payload is not JSON; when the message carries
them, collapse_key, ttl_s, queued_ms, expired, original_priority, delivered_priority and
topic. --mcs takes several endpoints (repeated or comma-separated), tried in turn.
Stderr gets `[app] connecting|connected|retrying …` lines (JSON objects with
--log-format json). The state directory keeps the ids of received messages, so a restart
delivers nothing twice. SIGINT/SIGTERM stop it cleanly (exit status 0), SIGUSR1 checks
every connection now. Under systemd (`Type=notify`) it reports READY=1 once every app
has logged in or failed once, and `STATUS=<n>/<m> connected`; see contrib/ for a unit.";

/// Arguments of `pullkin listen`.
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Credentials files (`pullkin register`, `pullkin credentials import`, or the Python
    /// libraries' files); each is one app, named after the file.
    #[arg(required = true, value_name = "CREDENTIALS")]
    credentials: Vec<PathBuf>,
    /// Where the ids of received messages (and the latest credentials) are kept.
    #[arg(
        long,
        env = "PULLKIN_STATE_DIR",
        value_name = "DIR",
        default_value = "pullkin-state"
    )]
    state_dir: PathBuf,
    /// Exit (cleanly) after this many notifications.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Keep every app's connection state in this file, as one JSON document replaced
    /// atomically whenever a state changes (at most every 100 ms, at least every 10 s):
    /// `{"total", "connected", "retrying", "stopped", "updated_ms", "apps": {"<app>":
    /// {"state": "connected", "since_ms", "logins", "failures", "last_frame_ms"}, …}}`.
    #[arg(long, value_name = "FILE")]
    status: Option<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    sink: SinkArgs,
}

/// A positive number of seconds (fractions allowed), at most a day.
pub(crate) fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))?;
    if !(0.001..=86_400.0).contains(&seconds) {
        return Err(format!("{text} s is out of range (0.001 to 86400 seconds)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

struct App {
    name: String,
    path: PathBuf,
    /// Until the app is added to the listener (which keeps the current credentials).
    credentials: Option<AppCredentials>,
    /// Whether the file is in this tool's format, so renewed credentials may replace it.
    native: bool,
    /// The device the credentials are of: another one after a renewal means the device
    /// was registered again.
    android_id: u64,
}

/// The app name of a credentials file: its name without the extension.
pub(crate) fn app_name(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{} names no file to name an app after", path.display()))
}

/// How many messages `listen` lets each app's connection decode ahead of the output, for
/// `apps` apps of at least `least` (the library's default): a few apps get a deeper queue,
/// out of one budget of [`QUEUE_BUDGET`] messages for all. With a deeper queue the
/// connection goes on reading while the loop writes lines, instead of the two taking
/// turns: one app at line rate printed some 11 % more plain messages a second at 1 024
/// than at 256. A queued message holds about a kilobyte (its frame), so the budget is
/// some 8 MB however many apps burst at once, and many apps keep the library's depth.
fn queue_depth(apps: usize, least: usize) -> usize {
    (QUEUE_BUDGET / apps.max(1)).clamp(least, QUEUE_MOST.max(least))
}

/// The messages decoded ahead of the output across the apps of a deeper queue.
const QUEUE_BUDGET: usize = 8 * 1024;
/// The deepest queue of one app.
const QUEUE_MOST: usize = 1024;

/// Runs `pullkin listen`.
pub(crate) async fn run(args: ListenArgs) -> Result<ExitCode> {
    // Watch the signals first: one that arrives during start-up still stops us cleanly.
    let stop = signal::watch()?;
    let mut probes = signal::ProbeRequests::watch()?;
    let notifier = Notifier::from_env();
    args.connection.check(&args.net)?;
    let mut apps = Vec::new();
    let mut names = HashSet::new();
    for path in &args.credentials {
        let name = app_name(path).config_error()?;
        if !names.insert(name.clone()) {
            return Err(CliError::config(format!(
                "two credentials files are named {name:?}: app names come from file names and \
                 must differ"
            )));
        }
        let (credentials, native) = common::read_credentials_and_format(path).config_error()?;
        apps.push(App {
            name,
            path: path.clone(),
            android_id: credentials.gcm.android_id,
            credentials: Some(credentials),
            native,
        });
    }
    // Where the messages go: sinks are reached now, before anything is received.
    let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
    let ca_pem = args.net.ca_pem().config_error()?;
    let routes = args
        .sink
        .open(&names, ca_pem.as_deref(), &args.state_dir)
        .await?;
    let store = DirStore::open(&args.state_dir)
        .with_context(|| format!("opening the state directory {}", args.state_dir.display()))
        .config_error()?;
    // Building the clients reads --endpoints, --ca and --proxy; nothing is sent yet.
    let core = args.net.core(None).config_error()?;
    save_credentials(&store, &apps, &args.state_dir).await?;

    let mut config = args.connection.config(&args.net).config_error()?;
    config.queue_capacity = queue_depth(apps.len(), config.queue_capacity);
    let store: Arc<dyn Store> = Arc::new(store);
    // Unless told otherwise, keep the credentials alive: a check-in before every
    // connection (the first one included: that is the check-in at start, one per app,
    // a bounded number at a time), the Firebase token refreshed before it expires, a
    // dead identity registered anew. Renewed credentials come back as
    // `CredentialsChanged` events and are written back to their files below.
    let builder = Pullkin::builder().config(config).store(store);
    let pullkin = Arc::new(
        if args.connection.no_renew {
            builder.tls(core.tls_config())
        } else {
            builder.core(Arc::new(core))
        }
        .build()
        .context("setting up the listener")
        .config_error()?,
    );
    let mut events = pullkin.events();
    let mut messages = SelectAll::new();
    let mut health = Vec::new();
    for app in &mut apps {
        // The listener keeps the credentials from here on: no second copy per app.
        let Some(credentials) = app.credentials.take() else {
            continue;
        };
        pullkin
            .add_app(&app.name, &credentials, Vec::new())
            .with_context(|| format!("starting {} ({})", app.name, app.path.display()))
            .config_error()?;
        health.extend(pullkin.health(&app.name).map(|h| (app.name.clone(), h)));
    }
    let mut table = Table::new(health);
    let mut status_file = args.status.clone().map(StatusFile::new);
    let mut status_ticks = tokio::time::interval(StatusFile::EVERY);
    status_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Output::start()?;
    for app in &routes.stdout {
        messages.push(
            pullkin
                .listen(app)
                .with_context(|| format!("listening for {app}"))?
                .boxed(),
        );
    }
    // The apps with a sink: acknowledged once the sink took each message.
    let mut forwards = futures_util::stream::FuturesUnordered::new();
    for (sink, apps) in routes.forwards {
        log::info(None, format_args!("{} → {}", apps.join(", "), sink.name()));
        let pullkin = Arc::clone(&pullkin);
        let mut config = pullkin::ForwardConfig::default();
        config.park = Some(Arc::clone(&routes.park));
        forwards.push(tokio::spawn(async move {
            let apps: Vec<&str> = apps.iter().map(String::as_str).collect();
            pullkin.forward(&apps, sink, config).await
        }));
    }
    let mut readiness = Readiness::new(notifier);
    readiness.update(&table);

    tokio::pin!(stop);
    let mut received = 0u64;
    let outcome: Result<ExitCode> = loop {
        if args.count.is_some_and(|n| received >= n) {
            readiness.stopping(&format!("{received} notifications received"));
            break Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            signal = &mut stop => {
                log::info(None, format_args!("{signal}: stopping"));
                readiness.stopping(signal);
                break Ok(ExitCode::SUCCESS);
            }
            () = probes.recv() => {
                log::info(None, "SIGUSR1: checking every connection now");
                readiness.probing(&table, || pullkin.probe());
            }
            () = out.news() => {
                // The writer is free again (or stopped): the lines waiting go now.
                if let Err(error) = out.hand_over() {
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
            }
            _ = status_ticks.tick(), if status_file.is_some() => {
                if let Some(file) = &mut status_file {
                    file.tick(&table);
                }
            }
            Some(forwarded) = forwards.next(), if !forwards.is_empty() => {
                if let Ok(Err(error)) = forwarded {
                    let error = CliError::msg(error.to_string());
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
                if forwards.is_empty() && messages.is_empty() {
                    let error = every_listener_stopped(&table);
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
            }
            incoming = messages.next(), if !messages.is_empty() && out.accepting() => match incoming {
                Some(incoming) => {
                    // This message and every one already waiting behind it, as one write.
                    let room = args.count.map_or(usize::MAX, |n| {
                        usize::try_from(n - received).unwrap_or(usize::MAX)
                    });
                    let batch = out.print(incoming, room, &mut messages);
                    match batch {
                        Ok(n) => received += n as u64,
                        Err(error) => {
                            readiness.stopping(&error.chain());
                            break Err(error);
                        }
                    }
                }
                None if !forwards.is_empty() => {}
                None => {
                    let error = every_listener_stopped(&table);
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
            },
            event = events.recv() => match event {
                Ok(event) => {
                    if let Event::State { app, .. } = &event {
                        table.changed(app);
                        if let Some(file) = &mut status_file {
                            file.mark();
                        }
                    } else {
                        report(&event);
                    }
                    readiness.update(&table);
                    if let Event::Failed { app, error } = &event
                        && let Some(error) = unusable_state(app, error)
                    {
                        readiness.stopping(&error.chain());
                        break Err(error);
                    }
                    if let Event::CredentialsChanged { app, .. } = &event {
                        renewed(&pullkin, &mut apps, app);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    table.catch_up(n);
                    if let Some(file) = &mut status_file {
                        file.mark();
                    }
                    readiness.update(&table);
                }
                Err(RecvError::Closed) => {}
            },
        }
    };
    // Every line handed over is written (and its message acknowledged) before the
    // listener stores its state and stops.
    let outcome = match (outcome, out.finish()) {
        (Ok(_), Err(error)) => {
            readiness.stopping(&error.chain());
            Err(error)
        }
        (outcome, _) => outcome,
    };
    pullkin.shutdown().await;
    // The forwarders end with their apps' streams.
    while forwards.next().await.is_some() {}
    if let Some(file) = &mut status_file {
        file.flush(&table).await;
    }
    log::info(
        None,
        format_args!("stopped; state kept in {}", args.state_dir.display()),
    );
    outcome
}

/// The connection flags `listen` and `fleet worker` share: `--mcs`, `--no-renew`,
/// `--heartbeat`, `--max-retry-delay`.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// The MCS servers, HOST:PORT, tried in turn when one fails (repeat the flag or
    /// separate them with commas; the emulator's: `pullkin emulator` prints it).
    /// Default: Google's, mtalk.google.com:5228 then mtalk.google.com:443.
    #[arg(
        long,
        env = "PULLKIN_MCS",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    mcs: Vec<String>,
    /// Do not check the devices in and refresh their credentials (at start and before
    /// every reconnection).
    #[arg(long)]
    pub(crate) no_renew: bool,
    /// Ping the server after this many seconds without a frame, and count the connection
    /// as dead when nothing answers within as long again (default: 60 s, dead 30 s later).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    heartbeat: Option<Duration>,
    /// The longest wait between reconnection attempts, in seconds (default 300).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    max_retry_delay: Option<Duration>,
}

impl ConnectionArgs {
    /// Refuses `--endpoints` without `--mcs` (the emulator's HTTP endpoints with
    /// Google's MCS servers).
    pub(crate) fn check(&self, net: &NetArgs) -> Result<()> {
        if net.endpoints.is_some() && self.mcs.is_empty() {
            return Err(CliError::usage(
                "--endpoints needs --mcs too: the emulator's MCS address (`pullkin emulator` \
                 prints both)",
            ));
        }
        Ok(())
    }

    /// The listener's settings from these flags and `--proxy`.
    pub(crate) fn config(&self, net: &NetArgs) -> Result<ListenerConfig> {
        let mut config = ListenerConfig::default();
        config.proxy = net.proxy()?;
        if !self.mcs.is_empty() {
            config.mcs_endpoints.clone_from(&self.mcs);
        }
        if let Some(interval) = self.heartbeat {
            config.heartbeat_interval = interval;
            config.heartbeat_timeout = interval;
        }
        if let Some(max) = self.max_retry_delay {
            // The default first delay is 1 s; a smaller cap lowers it too.
            config.reconnect = config
                .reconnect
                .clone()
                .with_initial_delay(Duration::from_secs(1).min(max))
                .with_max_delay(max);
        }
        Ok(config)
    }
}

/// The exit status for a store that failed: what is in it cannot be used (65), or it
/// cannot be used at all (78: e.g. a state directory this user may not write).
fn store_error_kind(error: &StoreError) -> ErrorKind {
    match error {
        StoreError::Io { .. } | StoreError::BadKey(_) => ErrorKind::Config,
        StoreError::Corrupt { .. }
        | StoreError::Foreign { .. }
        | StoreError::Credentials { .. } => ErrorKind::Data,
        _ => ErrorKind::Failure,
    }
}

/// The error that stops `listen` when an app stopped for good because its stored state
/// cannot be read: starting over without it would deliver every message again, and
/// restarting reads the same file, so the operator has to look (exit status 65 or 78).
fn unusable_state(app: &str, error: &ConnectionError) -> Option<CliError> {
    let ConnectionError::Store(store) = error else {
        return None;
    };
    Some(
        CliError::msg(format!(
            "[{app}] the stored state cannot be used ({store}); fix or remove the file (without \
             it, recent messages may be delivered again)"
        ))
        .kind(store_error_kind(store)),
    )
}

/// What the service manager is told (when `NOTIFY_SOCKET` is set, see [`Notifier`]):
///
/// - `READY=1` once every app has settled: logged in once, or failed once (an attempt
///   that failed, or a stop for good). A listener that cannot reach Google at boot is
///   still started: it goes on retrying, and the status says how many are connected;
///   waiting for every login instead would make systemd kill and restart it while the
///   network is down.
/// - `STATUS=<n>/<m> connected` whenever that number changes.
/// - `RELOADING=1` … `READY=1` around a SIGUSR1 probe (the unit's `ExecReload=`), once
///   ready. The probe itself runs on in the background.
/// - `STOPPING=1` (and the reason as the status) when it stops, whatever the reason.
struct Readiness {
    notifier: Notifier,
    ready: bool,
    status: String,
}

impl Readiness {
    fn new(notifier: Notifier) -> Self {
        Self {
            notifier,
            ready: false,
            status: String::new(),
        }
    }

    /// Looks at every app's state; tells readiness once and the status on changes.
    fn update(&mut self, table: &Table) {
        if !self.notifier.is_active() {
            return;
        }
        let counts = table.counts();
        let status = format!("STATUS={}/{} connected", counts.connected, counts.total);
        if !self.ready && counts.settled == counts.total {
            self.ready = true;
            self.notifier.send(&["READY=1", &status]);
        } else if status != self.status {
            self.notifier.send(&[&status]);
        }
        self.status = status;
    }

    /// Runs the probe between `RELOADING=1` and `READY=1` (once ready: before, `READY=1`
    /// would come too early).
    fn probing(&mut self, table: &Table, probe: impl FnOnce()) {
        let around = self.ready && self.notifier.is_active();
        if around {
            self.notifier
                .send(&["RELOADING=1", "STATUS=checking every connection"]);
        }
        probe();
        if around {
            self.status.clear();
            self.notifier.send(&["READY=1"]);
            self.update(table);
        }
    }

    fn stopping(&self, why: &str) {
        // One line: a newline would start another assignment.
        let status = format!("STATUS=stopping: {}", why.replace(['\n', '\r'], " "));
        self.notifier.send(&["STOPPING=1", &status]);
    }
}

/// The error when every app's listener has stopped: that of an unusable stored state if
/// one is why, else a failure.
fn every_listener_stopped(table: &Table) -> CliError {
    table
        .states()
        .find_map(|(app, health)| match &health.state {
            ConnectionState::Stopped { error: Some(error) } => unusable_state(app, error),
            _ => None,
        })
        .unwrap_or_else(|| CliError::msg("every listener stopped"))
}

/// Stores each app's credentials in the state directory (where renewed ones are kept
/// too), unless it holds these already: a restart of many apps rewrites no file.
async fn save_credentials(store: &DirStore, apps: &[App], state_dir: &Path) -> Result<()> {
    let saves = apps.iter().filter_map(|app| {
        let credentials = app.credentials.as_ref()?;
        Some(async move {
            let stored = store.load_credentials(&app.name).await;
            if matches!(&stored, Ok(Some(stored)) if stored == credentials) {
                return Ok(());
            }
            let saved = store.save_credentials(&app.name, credentials).await;
            let kind = saved
                .as_ref()
                .err()
                .map_or(ErrorKind::Failure, store_error_kind);
            saved
                .with_context(|| {
                    format!(
                        "storing the credentials of {} in {}",
                        app.name,
                        state_dir.display()
                    )
                })
                .error_kind(kind)
        })
    });
    // A few at a time: each is a blocking read and perhaps a synced write.
    let mut saves = futures_util::stream::iter(saves).buffer_unordered(16);
    while let Some(saved) = saves.next().await {
        saved?;
    }
    Ok(())
}

/// The listener renewed an app's credentials (and stored them in the state directory):
/// writes them back to the app's file when it is in this tool's format and writable, and
/// says when the device was registered again.
fn renewed(pullkin: &Pullkin, apps: &mut [App], name: &str) {
    let Some(app) = apps.iter_mut().find(|a| a.name == name) else {
        return;
    };
    let Some(renewed) = pullkin.credentials(name) else {
        return;
    };
    let name = Some(name);
    if renewed.gcm.android_id != app.android_id {
        app.android_id = renewed.gcm.android_id;
        log::warn(
            name,
            format_args!(
                "the device was registered again; new FCM token: {}",
                renewed.fcm.token().unwrap_or("(none)")
            ),
        );
    }
    if !app.native {
        // Another library's file keeps its shape; `credentials import` makes a file of
        // the renewed credentials.
        log::warn(
            name,
            format_args!(
                "{} is not in pullkin's format, so the renewed credentials were not written \
                 back to it (they are kept in the state directory); convert it with `pullkin \
                 credentials import`",
                app.path.display()
            ),
        );
        return;
    }
    // A read-only file (systemd's LoadCredential=, a file root owns) is no reason to
    // stop: the state directory keeps the renewed credentials.
    if let Err(error) = common::write_credentials(&app.path, &renewed, true) {
        log::warn(
            name,
            format_args!(
                "cannot write the renewed credentials back ({}); they are kept in the state \
                 directory",
                error.chain()
            ),
        );
    }
}

/// Reports what the listener tells, one line on stderr (see [`log`]).
pub(crate) fn report(event: &Event) {
    match event {
        Event::State { app, state } => report_state(app, state),
        Event::Undecryptable {
            app,
            persistent_id,
            error,
            ..
        } => log::warn(
            Some(app),
            format_args!(
                "message {} could not be decrypted: {error}",
                persistent_id.as_deref().unwrap_or("(no id)")
            ),
        ),
        Event::DeletedMessages { app, count } => match count {
            Some(n) => log::warn(
                Some(app),
                format_args!("the server dropped {n} messages it could not deliver"),
            ),
            None => log::warn(
                Some(app),
                "the server dropped messages it could not deliver",
            ),
        },
        Event::HandlerFailed { app, error, .. } => {
            log::warn(Some(app), format_args!("handler failed: {error}"));
        }
        Event::Failed { app, error } => {
            log::warn(Some(app), format_args!("stopped for good: {error}"));
        }
        Event::DecryptionPanicked {
            app,
            persistent_id,
            message,
        } => log::warn(
            Some(app),
            format_args!(
                "decrypting message {} failed ({message}); acknowledged, going on",
                persistent_id.as_deref().unwrap_or("(no id)")
            ),
        ),
        Event::CredentialsChanged { app, reason, .. } => {
            log::info(Some(app), credentials_change(*reason));
        }
        other => log::info(None, format_args!("{other:?}")),
    }
}

/// What a credentials change is called on stderr.
fn credentials_change(reason: CredentialsChange) -> &'static str {
    match reason {
        CredentialsChange::Renewed => "credentials renewed",
        CredentialsChange::Reregistered => {
            "the device identity was dead: registered anew (new FCM token)"
        }
        CredentialsChange::IdentityReset { command: None } => {
            "register3 answered Error=RST: a new identity (new FCM token)"
        }
        CredentialsChange::IdentityReset { command: Some(_) } => {
            "Google reset the identity: a new one (new FCM token)"
        }
        CredentialsChange::TokenSynced => "token synced (new FCM token)",
        _ => "credentials changed",
    }
}

/// Reports an app's connection state, one line on stderr (see [`log`]).
pub(crate) fn report_state(app: &str, state: &ConnectionState) {
    let app = Some(app);
    match state {
        ConnectionState::Idle => {}
        ConnectionState::Connecting { attempt } => {
            log::info(app, format_args!("connecting (attempt {attempt})"));
        }
        ConnectionState::Connected { .. } => log::info(app, "connected"),
        ConnectionState::BackingOff {
            until,
            error,
            failures,
        } => {
            let wait = until
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs_f64();
            log::warn(
                app,
                format_args!(
                    "connection failed ({error}); retrying in {wait:.1} s (failure {failures})"
                ),
            );
        }
        ConnectionState::Stopped { error: None } => log::info(app, "stopped"),
        ConnectionState::Stopped { error: Some(error) } => {
            log::warn(app, format_args!("stopped: {error}"));
        }
        other => log::info(app, format_args!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_apps_get_deeper_queues_out_of_one_budget() {
        assert_eq!(queue_depth(1, 256), QUEUE_MOST);
        assert_eq!(queue_depth(8, 256), QUEUE_MOST);
        assert_eq!(queue_depth(16, 256), 512);
        // Many apps keep the library's depth: the budget is not a cap below it.
        assert_eq!(queue_depth(2000, 256), 256);
        // A depth set deeper than the most stays.
        assert_eq!(queue_depth(1, 4096), 4096);
        for apps in 1..3000 {
            let depth = queue_depth(apps, 256);
            assert!(depth >= 256);
            assert!(
                depth * apps <= QUEUE_BUDGET || depth == 256,
                "{apps} apps: {depth}"
            );
        }
    }
}

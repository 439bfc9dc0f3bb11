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
    AppCredentials, ConnectionError, ConnectionState, DirStore, Event, Health, ListenerConfig,
    Pullkin, Store, StoreError,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::common::{self, NetArgs, print_line};
use crate::error::{CliError, Context, ErrorKind, Kind, Result};
use crate::notify::Notifier;
use crate::sinks::SinkArgs;
use crate::{log, signal};

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin listen web.json app.json
  pullkin listen web.json --state-dir /var/lib/pullkin | jq .data
  # Against the local emulator (`pullkin emulator` prints these):
  pullkin listen web.json --endpoints https://127.0.0.1:4443 --mcs 127.0.0.1:5228 --ca ca.pem

Each app is named after its file (`web.json` is app `web`). Stdout gets one JSON object per
notification: app, persistent_id, fcm_message_id, sender_id, priority, sent_ms,
received_ms, encoding (null, \"aesgcm\" or \"aes128gcm\"), data, notification, raw,
and payload (or payload_base64) when the payload is not JSON.
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
    /// The MCS server, HOST:PORT (the emulator's: `pullkin emulator` prints it).
    /// Default: Google's, mtalk.google.com:5228.
    #[arg(long, env = "PULLKIN_MCS", value_name = "HOST:PORT")]
    mcs: Option<String>,
    /// Exit (cleanly) after this many notifications.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Do not check the devices in and refresh their credentials (at start and before
    /// every reconnection).
    #[arg(long)]
    no_renew: bool,
    /// Ping the server after this many seconds without a frame, and count the connection
    /// as dead when nothing answers within as long again (default: 60 s, dead 30 s later).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    heartbeat: Option<Duration>,
    /// The longest wait between reconnection attempts, in seconds (default 300).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    max_retry_delay: Option<Duration>,
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
    credentials: AppCredentials,
    /// Whether the file is in this tool's format, so renewed credentials may replace it.
    native: bool,
}

/// The app name of a credentials file: its name without the extension.
pub(crate) fn app_name(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{} names no file to name an app after", path.display()))
}

/// Runs `pullkin listen`.
pub(crate) async fn run(args: ListenArgs) -> Result<ExitCode> {
    // Watch the signals first: one that arrives during start-up still stops us cleanly.
    let stop = signal::watch()?;
    let mut probes = signal::ProbeRequests::watch()?;
    let notifier = Notifier::from_env();
    if args.net.endpoints.is_some() && args.mcs.is_none() {
        return Err(CliError::usage(
            "--endpoints needs --mcs too: the emulator's MCS address (`pullkin emulator` prints \
             both)",
        ));
    }
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
            credentials,
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
    if !args.no_renew {
        for app in &mut apps {
            renew(&core, app).await;
        }
    }
    for app in &apps {
        let saved = store.save_credentials(&app.name, &app.credentials).await;
        let kind = saved
            .as_ref()
            .err()
            .map_or(ErrorKind::Failure, store_error_kind);
        saved
            .with_context(|| {
                format!(
                    "storing the credentials of {} in {}",
                    app.name,
                    args.state_dir.display()
                )
            })
            .error_kind(kind)?;
    }

    let config = listener_config(
        &args.net,
        args.mcs.as_deref(),
        args.heartbeat,
        args.max_retry_delay,
    )
    .config_error()?;
    let store: Arc<dyn Store> = Arc::new(store);
    // Unless told otherwise, keep the credentials alive while listening too: a check-in
    // before every connection, the Firebase token refreshed before it expires, a dead
    // identity registered anew.
    let builder = Pullkin::builder().config(config).store(store);
    let pullkin = Arc::new(
        if args.no_renew {
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
    for app in &apps {
        pullkin
            .add_app(&app.name, &app.credentials, Vec::new())
            .with_context(|| format!("starting {} ({})", app.name, app.path.display()))
            .config_error()?;
        health.extend(pullkin.health(&app.name).map(|h| (app.name.clone(), h)));
    }
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
    let mut readiness = Readiness::new(notifier, health);
    readiness.update();

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
                readiness.probing(|| pullkin.probe());
            }
            Some(forwarded) = forwards.next(), if !forwards.is_empty() => {
                if let Ok(Err(error)) = forwarded {
                    let error = CliError::msg(error.to_string());
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
                if forwards.is_empty() && messages.is_empty() {
                    let error = readiness.every_listener_stopped();
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
            }
            incoming = messages.next(), if !messages.is_empty() => match incoming {
                Some(incoming) => {
                    let line = incoming.to_json().to_string();
                    if let Err(error) = print_line(&line) {
                        readiness.stopping(&error.chain());
                        break Err(error);
                    }
                    received += 1;
                }
                None if !forwards.is_empty() => {}
                None => {
                    let error = readiness.every_listener_stopped();
                    readiness.stopping(&error.chain());
                    break Err(error);
                }
            },
            event = events.recv() => match event {
                Ok(event) => {
                    report(&event);
                    readiness.update();
                    if let Event::Failed { app, error } = &event
                        && let Some(error) = unusable_state(app, error)
                    {
                        readiness.stopping(&error.chain());
                        break Err(error);
                    }
                    if let Event::CredentialsChanged { app } = &event
                        && let Some(listened) = apps.iter().find(|a| &a.name == app)
                        && listened.native
                        && let Some(renewed) = pullkin.credentials(app)
                        && let Err(error) = common::write_credentials(&listened.path, &renewed, true)
                    {
                        log::warn(
                            Some(app),
                            format_args!(
                                "cannot write the renewed credentials back ({}); they are kept \
                                 in the state directory",
                                error.chain()
                            ),
                        );
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    log::warn(None, format_args!("({n} events were missed)"));
                    readiness.update();
                }
                Err(RecvError::Closed) => {}
            },
        }
    };
    pullkin.shutdown().await;
    // The forwarders end with their apps' streams.
    while forwards.next().await.is_some() {}
    log::info(
        None,
        format_args!("stopped; state kept in {}", args.state_dir.display()),
    );
    outcome
}

/// The listener's settings from the flags `listen` and `fleet worker` share: `--proxy`,
/// `--mcs`, `--heartbeat`, `--max-retry-delay`.
pub(crate) fn listener_config(
    net: &NetArgs,
    mcs: Option<&str>,
    heartbeat: Option<Duration>,
    max_retry_delay: Option<Duration>,
) -> Result<ListenerConfig> {
    let mut config = ListenerConfig::default();
    config.proxy = net.proxy()?;
    if let Some(mcs) = mcs {
        mcs.clone_into(&mut config.mcs_addr);
    }
    if let Some(interval) = heartbeat {
        config.heartbeat_interval = interval;
        config.heartbeat_timeout = interval;
    }
    if let Some(max) = max_retry_delay {
        // The default first delay is 1 s; a smaller cap lowers it too.
        config.reconnect = config
            .reconnect
            .clone()
            .with_initial_delay(Duration::from_secs(1).min(max))
            .with_max_delay(max);
    }
    Ok(config)
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
    health: Vec<(String, watch::Receiver<Health>)>,
    ready: bool,
    status: String,
}

impl Readiness {
    fn new(notifier: Notifier, health: Vec<(String, watch::Receiver<Health>)>) -> Self {
        Self {
            notifier,
            health,
            ready: false,
            status: String::new(),
        }
    }

    /// Looks at every app's health; tells readiness once and the status on changes.
    fn update(&mut self) {
        if !self.notifier.is_active() {
            return;
        }
        let (mut connected, mut settled) = (0, 0);
        for (_, health) in &self.health {
            let health = health.borrow();
            let is_connected = matches!(health.state, ConnectionState::Connected { .. });
            let stopped_for_good =
                matches!(health.state, ConnectionState::Stopped { error: Some(_) });
            connected += usize::from(is_connected);
            settled += usize::from(
                is_connected || health.logins > 0 || health.failures > 0 || stopped_for_good,
            );
        }
        let status = format!("STATUS={connected}/{} connected", self.health.len());
        if !self.ready && settled == self.health.len() {
            self.ready = true;
            self.notifier.send(&["READY=1", &status]);
        } else if status != self.status {
            self.notifier.send(&[&status]);
        }
        self.status = status;
    }

    /// Runs the probe between `RELOADING=1` and `READY=1` (once ready: before, `READY=1`
    /// would come too early).
    fn probing(&mut self, probe: impl FnOnce()) {
        let around = self.ready && self.notifier.is_active();
        if around {
            self.notifier
                .send(&["RELOADING=1", "STATUS=checking every connection"]);
        }
        probe();
        if around {
            self.status.clear();
            self.notifier.send(&["READY=1"]);
            self.update();
        }
    }

    fn stopping(&self, why: &str) {
        // One line: a newline would start another assignment.
        let status = format!("STATUS=stopping: {}", why.replace(['\n', '\r'], " "));
        self.notifier.send(&["STOPPING=1", &status]);
    }

    /// The error when every app's listener has stopped: that of an unusable stored state
    /// if one is why, else a failure.
    fn every_listener_stopped(&self) -> CliError {
        self.health
            .iter()
            .find_map(|(app, health)| match &health.borrow().state {
                ConnectionState::Stopped { error: Some(error) } => unusable_state(app, error),
                _ => None,
            })
            .unwrap_or_else(|| CliError::msg("every listener stopped"))
    }
}

/// Checks the device in and refreshes its credentials; stores them back in their file
/// when they changed (and the file is in this tool's format and writable). A failure is
/// reported and the stored credentials are used as they are; the renewed ones are kept in
/// the state directory in any case.
async fn renew(core: &pullkin::PullkinCore, app: &mut App) {
    let name = Some(app.name.as_str());
    match core.renew(&app.credentials).await {
        Ok(renewal) if renewal.changed => {
            if app.native {
                // A read-only file (systemd's LoadCredential=, a file root owns) is no
                // reason to stop: the state directory keeps the renewed credentials.
                if let Err(error) = common::write_credentials(&app.path, &renewal.credentials, true)
                {
                    log::warn(
                        name,
                        format_args!(
                            "cannot write the renewed credentials back ({}); they are kept in \
                             the state directory",
                            error.chain()
                        ),
                    );
                }
            } else {
                // Another library's file keeps its shape; the renewed credentials are in
                // the state directory, and `credentials import` makes a file of them.
                log::warn(
                    name,
                    format_args!(
                        "{} is not in pullkin's format, so the renewed credentials were not \
                         written back to it (they are kept in the state directory); convert \
                         it with `pullkin credentials import`",
                        app.path.display()
                    ),
                );
            }
            if renewal.identity_changed {
                log::warn(
                    name,
                    format_args!(
                        "the device was registered again; new FCM token: {}",
                        renewal.credentials.fcm.token().unwrap_or("(none)")
                    ),
                );
            } else {
                log::info(name, "credentials refreshed");
            }
            app.credentials = renewal.credentials;
        }
        Ok(_) => {}
        Err(error) => {
            let error = Err::<(), _>(error)
                .context("could not renew the credentials")
                .err()
                .map(|e| e.chain())
                .unwrap_or_default();
            log::warn(name, format_args!("{error}; using them as they are"));
        }
    }
}

/// Reports what the listener tells, one line on stderr (see [`log`]).
pub(crate) fn report(event: &Event) {
    match event {
        Event::State { app, state } => {
            let app = Some(app.as_str());
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
                            "connection failed ({error}); retrying in {wait:.1} s (failure \
                             {failures})"
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
        Event::CredentialsChanged { app } => log::info(Some(app), "credentials renewed"),
        other => log::info(None, format_args!("{other:?}")),
    }
}

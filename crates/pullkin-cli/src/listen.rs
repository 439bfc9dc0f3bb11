//! `pullkin listen`: one MCS connection per credentials file, each notification as one
//! JSON line on stdout, the connection state on stderr.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use pullkin::{AppCredentials, ConnectionState, DirStore, Event, ListenerConfig, Pullkin, Store};
use tokio::sync::broadcast::error::RecvError;

use crate::common::{self, NetArgs, message_json, print_line};
use crate::error::{CliError, Context, Result};
use crate::signal;

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin listen web.json app.json
  pullkin listen web.json --state-dir /var/lib/pullkin | jq .data
  # Against the local emulator (`pullkin emulator` prints these):
  pullkin listen web.json --endpoints https://127.0.0.1:4443 --mcs 127.0.0.1:5228 --ca ca.pem

Each app is named after its file (`web.json` is app `web`). Stdout gets one JSON object per
notification: app, persistent_id, fcm_message_id, sender_id, priority, sent_ms,
received_ms, encoding (null, \"aesgcm\" or \"aes128gcm\"), data, notification, raw,
and payload (or payload_base64) when the payload is not JSON.
Stderr gets `[app] connecting|connected|retrying …` lines. The state directory keeps the
ids of received messages, so a restart delivers nothing twice.";

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
}

/// A positive number of seconds (fractions allowed), at most a day.
fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
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
fn app_name(path: &Path) -> Result<String> {
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
    if args.net.endpoints.is_some() && args.mcs.is_none() {
        return Err(CliError::msg(
            "--endpoints needs --mcs too: the emulator's MCS address (`pullkin emulator` prints \
             both)",
        ));
    }
    let mut apps = Vec::new();
    let mut names = HashSet::new();
    for path in &args.credentials {
        let name = app_name(path)?;
        if !names.insert(name.clone()) {
            return Err(CliError::msg(format!(
                "two credentials files are named {name:?}: app names come from file names and \
                 must differ"
            )));
        }
        let (credentials, native) = common::read_credentials_and_format(path)?;
        apps.push(App {
            name,
            path: path.clone(),
            credentials,
            native,
        });
    }
    let store = DirStore::open(&args.state_dir)
        .with_context(|| format!("opening the state directory {}", args.state_dir.display()))?;
    let core = args.net.core(None)?;
    if !args.no_renew {
        for app in &mut apps {
            renew(&core, app).await?;
        }
    }
    for app in &apps {
        store
            .save_credentials(&app.name, &app.credentials)
            .await
            .with_context(|| format!("storing the credentials of {}", app.name))?;
    }

    let mut config = ListenerConfig::default();
    config.proxy = args.net.proxy()?;
    if let Some(mcs) = &args.mcs {
        config.mcs_addr.clone_from(mcs);
    }
    if let Some(interval) = args.heartbeat {
        config.heartbeat_interval = interval;
        config.heartbeat_timeout = interval;
    }
    if let Some(max) = args.max_retry_delay {
        // The default first delay is 1 s; a smaller cap lowers it too.
        config.reconnect = config
            .reconnect
            .clone()
            .with_initial_delay(Duration::from_secs(1).min(max))
            .with_max_delay(max);
    }
    let store: Arc<dyn Store> = Arc::new(store);
    // Unless told otherwise, keep the credentials alive while listening too: a check-in
    // before every connection, the Firebase token refreshed before it expires, a dead
    // identity registered anew.
    let builder = Pullkin::builder().config(config).store(store);
    let pullkin = if args.no_renew {
        builder.tls(core.tls_config())
    } else {
        builder.core(Arc::new(core))
    }
    .build()
    .context("setting up the listener")?;
    let mut events = pullkin.events();
    let mut messages = SelectAll::new();
    for app in &apps {
        pullkin
            .add_app(&app.name, &app.credentials, Vec::new())
            .with_context(|| format!("starting {} ({})", app.name, app.path.display()))?;
        messages.push(
            pullkin
                .listen(&app.name)
                .with_context(|| format!("listening for {}", app.name))?
                .boxed(),
        );
    }

    tokio::pin!(stop);
    let mut received = 0u64;
    let outcome: Result<ExitCode> = loop {
        if args.count.is_some_and(|n| received >= n) {
            break Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            signal = &mut stop => {
                eprintln!("{signal}: stopping");
                break Ok(ExitCode::SUCCESS);
            }
            () = probes.recv() => {
                eprintln!("SIGUSR1: checking every connection now");
                pullkin.probe();
            }
            incoming = messages.next() => match incoming {
                Some(incoming) => {
                    let line = message_json(&incoming.app, &incoming.message).to_string();
                    if let Err(error) = print_line(&line) {
                        break Err(error);
                    }
                    received += 1;
                }
                None => break Err(CliError::msg("every listener stopped")),
            },
            event = events.recv() => match event {
                Ok(event) => {
                    report(&event);
                    if let Event::CredentialsChanged { app } = &event
                        && let Some(listened) = apps.iter().find(|a| &a.name == app)
                        && listened.native
                        && let Some(renewed) = pullkin.credentials(app)
                        && let Err(error) = common::write_credentials(&listened.path, &renewed, true)
                    {
                        eprintln!("[{app}] cannot write the renewed credentials back: {error}");
                    }
                }
                Err(RecvError::Lagged(n)) => eprintln!("({n} events were missed)"),
                Err(RecvError::Closed) => {}
            },
        }
    };
    pullkin.shutdown().await;
    eprintln!("stopped; state kept in {}", args.state_dir.display());
    outcome
}

/// Checks the device in and refreshes its credentials; stores them back in their file
/// when they changed (and the file is in this tool's format). A failure is reported and the stored credentials are used as
/// they are.
async fn renew(core: &pullkin::PullkinCore, app: &mut App) -> Result<()> {
    match core.renew(&app.credentials).await {
        Ok(renewal) if renewal.changed => {
            if app.native {
                common::write_credentials(&app.path, &renewal.credentials, true)?;
            } else {
                // Another library's file keeps its shape; the renewed credentials are in
                // the state directory, and `credentials import` makes a file of them.
                eprintln!(
                    "[{}] {} is not in pullkin's format, so the renewed credentials were not \
                     written back to it (they are kept in the state directory); convert it \
                     with `pullkin credentials import`",
                    app.name,
                    app.path.display()
                );
            }
            if renewal.identity_changed {
                eprintln!(
                    "[{}] the device was registered again; new FCM token: {}",
                    app.name,
                    renewal.credentials.fcm.token().unwrap_or("(none)")
                );
            } else {
                eprintln!("[{}] credentials refreshed", app.name);
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
            eprintln!("[{}] {error}; using them as they are", app.name);
        }
    }
    Ok(())
}

/// Prints what the listener reports, one line on stderr.
fn report(event: &Event) {
    match event {
        Event::State { app, state } => match state {
            ConnectionState::Idle => {}
            ConnectionState::Connecting { attempt } => {
                eprintln!("[{app}] connecting (attempt {attempt})");
            }
            ConnectionState::Connected { .. } => eprintln!("[{app}] connected"),
            ConnectionState::BackingOff {
                until,
                error,
                failures,
            } => {
                let wait = until
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .as_secs_f64();
                eprintln!(
                    "[{app}] connection failed ({error}); retrying in {wait:.1} s (failure \
                     {failures})"
                );
            }
            ConnectionState::Stopped { error: None } => eprintln!("[{app}] stopped"),
            ConnectionState::Stopped { error: Some(error) } => {
                eprintln!("[{app}] stopped: {error}");
            }
            other => eprintln!("[{app}] {other:?}"),
        },
        Event::Undecryptable {
            app,
            persistent_id,
            error,
            ..
        } => eprintln!(
            "[{app}] message {} could not be decrypted: {error}",
            persistent_id.as_deref().unwrap_or("(no id)")
        ),
        Event::DeletedMessages { app, count } => match count {
            Some(n) => eprintln!("[{app}] the server dropped {n} messages it could not deliver"),
            None => eprintln!("[{app}] the server dropped messages it could not deliver"),
        },
        Event::HandlerFailed { app, error, .. } => eprintln!("[{app}] handler failed: {error}"),
        Event::Failed { app, error } => eprintln!("[{app}] stopped for good: {error}"),
        Event::DecryptionPanicked {
            app,
            persistent_id,
            message,
        } => eprintln!(
            "[{app}] decrypting message {} failed ({message}); acknowledged, going on",
            persistent_id.as_deref().unwrap_or("(no id)")
        ),
        Event::CredentialsChanged { app } => eprintln!("[{app}] credentials renewed"),
        other => eprintln!("{other:?}"),
    }
}

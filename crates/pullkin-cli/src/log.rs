//! Where the command's own reports (`[web] connected`, `error: …`) and the library's logs
//! go: stderr, as text lines (the default), or with `--log-format json`
//! (`PULLKIN_LOG_FORMAT=json`) as one JSON object per line for a log shipper:
//! `{"timestamp":…,"level":"INFO","fields":{"message":"connected","app":"web"},"target":"pullkin_cli"}`.
//!
//! Under JSON the reports are tracing events of target `pullkin_cli` (always let through
//! at INFO, whatever `-v` says), so that stderr holds nothing but JSON lines. Stdout (the
//! notifications of `listen`, the answers of the other commands) is the same either way.
//!
//! Stderr is a courtesy, never a reason to stop: a write to it that fails (a closed pipe,
//! a full disk) is dropped, here and in tracing's writer (its own report of a failed
//! write, which would go to stderr again, is turned off). A listener whose log reader
//! went away goes on receiving.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::error::CliError;

/// The shape of stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people: `[app] connected`, and tracing's text format for the logs.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format): level, target, fields.
    Json,
}

/// The target of the command's own reports under JSON.
const TARGET: &str = "pullkin_cli";

static JSON: AtomicBool = AtomicBool::new(false);

/// Sets up the logs: `verbose` (`-v` count) picks the level unless `RUST_LOG` is set.
pub(crate) fn init(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    match format {
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(true)
                .log_internal_errors(false)
                .try_init();
        }
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            // The reports are what text mode prints unconditionally: never filter them out,
            // unless RUST_LOG names the target itself.
            let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(TARGET));
            if !named && let Ok(directive) = format!("{TARGET}=info").parse::<Directive>() {
                filter = filter.add_directive(directive);
            }
            let _ = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(true)
                .log_internal_errors(false)
                .try_init();
        }
    }
}

fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A report of how things go: `[app] message` (or `message`) on stderr, an INFO event
/// under JSON.
pub(crate) fn info(app: Option<&str>, message: impl Display) {
    if json() {
        match app {
            Some(app) => tracing::info!(target: TARGET, app, "{message}"),
            None => tracing::info!(target: TARGET, "{message}"),
        }
    } else {
        print_text(app, &message);
    }
}

/// A report of something going wrong that the command survives: a WARN event under JSON.
pub(crate) fn warn(app: Option<&str>, message: impl Display) {
    if json() {
        match app {
            Some(app) => tracing::warn!(target: TARGET, app, "{message}"),
            None => tracing::warn!(target: TARGET, "{message}"),
        }
    } else {
        print_text(app, &message);
    }
}

/// The error that ends the command: `error: …` on stderr, or an ERROR event with the exit
/// status under JSON.
pub(crate) fn fatal(error: &CliError) {
    let line = error.chain();
    if json() {
        tracing::error!(target: TARGET, exit_code = error.exit_code(), "{line}");
    } else {
        to_stderr(format_args!("error: {line}"));
    }
}

fn print_text(app: Option<&str>, message: &dyn Display) {
    match app {
        Some(app) => to_stderr(format_args!("[{app}] {message}")),
        None => to_stderr(format_args!("{message}")),
    }
}

/// One line on stderr; a failed write is dropped (`eprintln!` would panic on it).
fn to_stderr(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

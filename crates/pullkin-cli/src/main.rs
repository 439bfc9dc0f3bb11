//! `pullkin`: receive Firebase Cloud Messaging push notifications from the command line.
//!
//! `pullkin demo` shows the whole pipeline against a local emulator of Google's side;
//! `register`, `listen`, `send`, `emulator` and `credentials` are the parts of it, one by
//! one; `fleet` runs many identities across worker processes on PostgreSQL. See the crate
//! README for an example session.
#![forbid(unsafe_code)]
// A command line prints on purpose.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;
mod credentials;
mod demo;
mod emulator;
mod error;
mod fleet;
mod line;
mod listen;
mod log;
mod notify;
mod output;
mod register;
mod send;
mod signal;
mod sinks;
mod status;
mod topic;
mod unregister;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

use crate::error::{Context, EXIT_STATUS_HELP, Result};
use crate::log::LogFormat;

/// The end of `pullkin --help`: where to start, the logs, the exit statuses.
fn after_help() -> String {
    format!(
        "Start with `pullkin demo`: the whole pipeline against a local emulator, no Google \
         account needed.\n\nLogs go to stderr: -v (info), -vv (debug), -vvv (trace), or \
         RUST_LOG (e.g. RUST_LOG=pullkin=debug); --log-format json for one JSON object per \
         line.\n\n{EXIT_STATUS_HELP}"
    )
}

/// Receive Firebase Cloud Messaging (FCM/GCM) push notifications as an Android app or
/// Chrome would, offline against a local emulator or for real against Google.
#[derive(Debug, Parser)]
#[command(
    name = "pullkin",
    version,
    propagate_version = true,
    after_help = after_help()
)]
struct Cli {
    /// More log output on stderr (repeat for more); RUST_LOG overrides it.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// The shape of stderr: `text` lines, or `json` (one object per line: timestamp,
    /// level, fields, target) for a log shipper. Stdout is the same either way.
    #[arg(
        long,
        global = true,
        env = "PULLKIN_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline against an in-process emulator: register an Android and a
    /// web device, listen, send a plain, an aesgcm and an aes128gcm message, check that
    /// each arrives intact.
    #[command(
        after_help = "Example:\n  pullkin demo\n  cargo xtask demo   # the same, \
                            built in release mode"
    )]
    Demo(demo::DemoArgs),
    /// Register a device (Android persona, or Chrome with --web) and write its
    /// credentials file; prints the FCM token.
    #[command(after_help = register::EXAMPLES)]
    Register(register::RegisterArgs),
    /// Listen for notifications: one JSON line per message on stdout, connection state
    /// on stderr; stops cleanly on SIGINT/SIGTERM, checks its connections on SIGUSR1.
    #[command(after_help = listen::EXAMPLES)]
    Listen(listen::ListenArgs),
    /// Send a test message through the FCM send API (e.g. of the emulator), or to a Web
    /// Push endpoint with --webpush (aes128gcm).
    #[command(after_help = send::EXAMPLES)]
    Send(send::SendArgs),
    /// Run the FCM emulator (Google's side, locally, over TLS) until SIGINT/SIGTERM;
    /// prints `key=value` lines: endpoints, mcs, ca.
    #[command(after_help = emulator::EXAMPLES)]
    Emulator(emulator::EmulatorArgs),
    /// Work with credentials files: import those of the Python libraries, show one.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Subscribe an Android-persona registration to topics, unsubscribe it, list its
    /// topics (kept in the credentials file).
    #[command(subcommand, after_help = topic::EXAMPLES)]
    Topic(topic::TopicCommand),
    /// Delete a device's registration at Google: its register3 token, FCM registration
    /// and Firebase installation.
    #[command(after_help = unregister::EXAMPLES)]
    Unregister(unregister::UnregisterArgs),
    /// Many identities across worker processes on PostgreSQL: migrate, register, add,
    /// remove, worker, status, tail, prune, rotate-key, generate-key.
    #[command(subcommand, after_help = fleet::EXAMPLES)]
    Fleet(fleet::FleetCommand),
}

fn main() -> ExitCode {
    // A usage error exits here, with status 2.
    let cli = Cli::parse();
    log::init(cli.verbose, cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            log::fatal(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Decryption and store writes run on the blocking pool: a few threads keep both
        // cores busy, and few threads mean few allocator arenas (a steadier RSS).
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Demo(args) => demo::run(args).await,
            Command::Register(args) => register::run(args).await,
            Command::Listen(args) => listen::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Emulator(args) => emulator::run(args).await,
            Command::Credentials(command) => credentials::run(command),
            Command::Topic(command) => topic::run(command).await,
            Command::Unregister(args) => unregister::run(args).await,
            Command::Fleet(command) => fleet::run(command).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn base64url_values_may_begin_with_a_hyphen() {
        // One key or token in 64 begins with `-` (two in 4 096 with `--`).
        let parsed = Cli::try_parse_from([
            "pullkin",
            "send",
            "--webpush",
            "https://127.0.0.1:1/fcm/send/x",
            "--p256dh",
            "-BAeiEqtMVDoWZ2W3",
            "--auth",
            "--UO-3w_NIff93rq2NpF6g",
            "--payload",
            "-x",
        ]);
        let Ok(Cli {
            command: Command::Send(args),
            ..
        }) = parsed
        else {
            panic!("not parsed: {parsed:?}");
        };
        let rendered = format!("{args:?}");
        assert!(rendered.contains("-BAeiEqtMVDoWZ2W3"), "{rendered}");
        assert!(rendered.contains("--UO-3w_NIff93rq2NpF6g"), "{rendered}");
        let token = Cli::try_parse_from(["pullkin", "send", "--token", "-abc", "--data", "a=b"]);
        assert!(token.is_ok(), "{token:?}");
    }
}

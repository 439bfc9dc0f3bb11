//! `pullkin credentials`: import the files of the Python libraries, show a file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::common::{self, NetArgs, print_line};
use crate::error::{Context, Kind, Result};
use crate::log;

/// `pullkin credentials …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Convert a credentials file of the Python `pullkin` or `firebase-messaging` (or of
    /// this tool) into this tool's format, so the device needs no new registration.
    #[command(
        after_help = "Example:\n  pullkin credentials import old-pullkin-creds.json \
                            --out app.json\n  pullkin listen app.json"
    )]
    Import(ImportArgs),
    /// Print what senders need from a credentials file, as `key=value` lines: app id,
    /// android_id, gcm_token, fcm_token, and the Web Push subscription (endpoint,
    /// p256dh, auth). No private key or device secret is printed.
    #[command(
        after_help = "Example:\n  pullkin credentials show web.json --endpoints \
                            https://127.0.0.1:4443\n  # webpush_endpoint is under \
                            --endpoints (default: Google's fcm.googleapis.com)"
    )]
    Show(ShowArgs),
}

/// Arguments of `pullkin credentials import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file to read.
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Where to write the converted credentials (mode 0600).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

/// Arguments of `pullkin credentials show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The credentials file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    net: NetArgs,
}

/// Runs `pullkin credentials …`.
pub(crate) fn run(command: CredentialsCommand) -> Result<ExitCode> {
    match command {
        CredentialsCommand::Import(args) => {
            let credentials = common::read_credentials(&args.input).config_error()?;
            common::write_credentials(&args.out, &credentials, args.force)?;
            log::info(
                None,
                format_args!(
                    "imported {} (android_id {}{}) into {} (mode 0600)",
                    args.input.display(),
                    credentials.gcm.android_id,
                    if credentials.fcm.is_success() {
                        ""
                    } else {
                        ", no FCM registration"
                    },
                    args.out.display()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        CredentialsCommand::Show(args) => {
            let credentials = common::read_credentials(&args.file).config_error()?;
            let endpoints = args.net.endpoints().config_error()?;
            let endpoint =
                fcm_install::fcm_send_endpoint(&endpoints, credentials.gcm.token.as_str())
                    .context("building the Web Push endpoint")?;
            let persona = match credentials.config.as_ref().map(|c| &c.persona) {
                Some(pullkin::Persona::Web { .. }) => "web",
                Some(pullkin::Persona::Android { .. }) => "android",
                _ => "unknown",
            };
            let lines = [
                ("persona", persona.to_owned()),
                ("app_id", credentials.gcm.app_id.clone()),
                ("android_id", credentials.gcm.android_id.to_string()),
                ("gcm_token", credentials.gcm.token.as_str().to_owned()),
                (
                    "fcm_token",
                    credentials.fcm.token().unwrap_or_default().to_owned(),
                ),
                ("webpush_endpoint", endpoint),
                ("p256dh", credentials.keys.public.clone()),
                ("auth", credentials.keys.secret.expose().clone()),
            ];
            for (key, value) in lines {
                print_line(&format!("{key}={value}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

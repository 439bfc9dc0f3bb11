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
    /// this tool) into this tool's format, so the device needs no new registration; the
    /// Firebase config such files lack can be supplied, so that the Firebase auth token
    /// can be refreshed and the device registered again later.
    #[command(after_help = IMPORT_EXAMPLES)]
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

const IMPORT_EXAMPLES: &str = "Examples:
  pullkin credentials import old-pullkin-creds.json --out app.json
  pullkin listen app.json
  # firebase-messaging keeps only the project id: supply the rest of the Firebase config
  # (the web app's values), so that renewal and re-registration work:
  pullkin credentials import fm-creds.json --out web.json \\
      --app-id 1:123456789012:web:0a1b2c3d --api-key AIzaSy...
  # The Python pullkin keeps none (its package and certificate default as it registered):
  pullkin credentials import old-pullkin-creds.json --out app.json --app-id \\
      1:123456789012:android:0a1b2c3d --api-key AIzaSy... --project-id my-project \\
      --app-name com.example.app

Values given replace the file's. A firebase-messaging auth token's age is unknown (the
file holds a monotonic clock reading): it is refreshed at the first renewal.";

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
    /// The Firebase app id the device was registered for (`1:<project number>:web:<hex>`
    /// or `…:android:…`); the sender id is its project number.
    #[arg(long, value_name = "ID")]
    app_id: Option<String>,
    /// The Firebase API key (`AIza…`).
    #[arg(
        long,
        env = "PULLKIN_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// The Firebase project id.
    #[arg(long, value_name = "ID")]
    project_id: Option<String>,
    /// The Android package the device registered as (Android persona).
    #[arg(long, value_name = "PACKAGE")]
    app_name: Option<String>,
    /// The SHA-1 of the Android app's signing certificate, hex (Android persona).
    #[arg(long, value_name = "SHA1")]
    android_cert: Option<String>,
}

impl ImportArgs {
    /// The Firebase config given on the command line.
    fn supplied(&self) -> pullkin::ImportConfig {
        let mut supplied = pullkin::ImportConfig::new();
        if let Some(value) = &self.app_id {
            supplied = supplied.app_id(value.as_str());
        }
        if let Some(value) = &self.api_key {
            supplied = supplied.api_key(value.as_str());
        }
        if let Some(value) = &self.project_id {
            supplied = supplied.project_id(value.as_str());
        }
        if let Some(value) = &self.app_name {
            supplied = supplied.app_name(value.as_str());
        }
        if let Some(value) = &self.android_cert {
            supplied = supplied.android_cert(value.as_str());
        }
        supplied
    }
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
            let reading = || format!("reading the credentials file {}", args.input.display());
            let text = std::fs::read_to_string(&args.input)
                .with_context(reading)
                .config_error()?;
            let credentials = pullkin::AppCredentials::import(&text, &args.supplied())
                .with_context(reading)
                .config_error()?;
            common::write_credentials(&args.out, &credentials, args.force)?;
            log::info(
                None,
                format_args!(
                    "imported {} (android_id {}{}{}) into {} (mode 0600)",
                    args.input.display(),
                    credentials.gcm.android_id,
                    if credentials.fcm.is_success() {
                        ""
                    } else {
                        ", no FCM registration"
                    },
                    if credentials.config.is_some() {
                        ""
                    } else {
                        ", no Firebase config: it can listen, not renew (give --app-id, \
                         --api-key, --project-id)"
                    },
                    args.out.display()
                ),
            );
            if credentials
                .gcm
                .installation
                .as_ref()
                .is_some_and(|i| i.auth_token.expires_at_unix() == 0)
            {
                log::info(
                    None,
                    format_args!(
                        "the Firebase auth token's age is unknown: it is refreshed at the first \
                         renewal (pullkin listen does one at start)"
                    ),
                );
            }
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

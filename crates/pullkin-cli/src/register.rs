//! `pullkin register`: check-in, GCM, Firebase Installations and FCM in one go; the
//! credentials file it writes is what `pullkin listen` reads.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use gcm_checkin::{DEFAULT_ANDROID_CERT, DEFAULT_WEB_BUNDLE};
use pullkin::{AppCredentials, DEFAULT_APP_NAME, DEFAULT_RETRIES, RegisterParams};

use crate::common::{self, NetArgs, print_line, short};
use crate::error::{CliError, Kind, Result};
use crate::log;
use crate::topic::pullkin_error;

pub(crate) const EXAMPLES: &str = "Examples:
  # As an Android app of a Firebase project (the values of google-services.json):
  pullkin register --sender-id 123456789012 --app-id 1:123456789012:android:0a1b2c3d \\
      --api-key AIzaSy... --project-id my-project --app-name com.example.app --out app.json
  # As Chrome, for Web Push with a sender's VAPID key:
  pullkin register --web --sender-id 123456789012 --app-id 1:123456789012:web:0a1b2c3d \\
      --api-key AIzaSy... --project-id my-project --vapid-key BEl62i... --out web.json
  # Against the local emulator (`pullkin emulator` prints these):
  pullkin register --web --endpoints https://127.0.0.1:4443 --ca ca.pem \\
      --sender-id 1 --app-id 1:1:web:1 --api-key k --project-id p --out web.json

Stdout gets the FCM token (what senders push to); stderr a summary. The credentials file
is written atomically with mode 0600 and holds private keys: keep it private.";

/// Arguments of `pullkin register` (the seed's `register`).
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Where to write the credentials (JSON, mode 0600).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Replace the file if it exists (its registration is then lost).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    net: NetArgs,
}

/// What a registration is made as: the Firebase app and the persona (Android, or Chrome
/// with `--web`), as `pullkin register` and `pullkin fleet register` take them.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// The sender id: the Firebase project number (the number in the app id). Several
    /// senders may be joined by `,` (`123456789012,998877665544`); one of them must be the
    /// app id's project number.
    #[arg(long, value_name = "ID[,ID…]")]
    sender_id: String,
    /// The Firebase app id (`1:<project number>:android:<hex>` or `…:web:…`).
    #[arg(long, value_name = "ID")]
    app_id: String,
    /// The Firebase API key (`AIza…`).
    #[arg(
        long,
        env = "PULLKIN_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: String,
    /// The Firebase project id.
    #[arg(long, value_name = "ID")]
    project_id: String,
    /// The SHA-1 of the Android app's signing certificate, hex.
    #[arg(long, value_name = "SHA1", default_value = DEFAULT_ANDROID_CERT, conflicts_with = "web")]
    android_cert: String,
    /// The Android package to register as.
    #[arg(long, value_name = "PACKAGE", default_value = DEFAULT_APP_NAME, conflicts_with = "web")]
    app_name: String,
    /// Register as Chrome receiving Web Push (the web persona) instead of an Android app.
    #[arg(long)]
    web: bool,
    /// The bundle id in the web persona's subtype (`wp:<bundle>#<uuid>`).
    #[arg(long, value_name = "BUNDLE", requires = "web")]
    bundle_id: Option<String>,
    /// The sender's VAPID public key (base64url); Chrome's own key by default.
    #[arg(long, value_name = "KEY", requires = "web", allow_hyphen_values = true)]
    vapid_key: Option<String>,
    /// Attempts per registration step.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES)]
    pub(crate) retries: u32,
}

impl DeviceArgs {
    /// `web` or `Android`, for messages.
    pub(crate) fn persona(&self) -> &'static str {
        if self.web { "web" } else { "Android" }
    }

    /// What to register.
    pub(crate) fn params(&self) -> RegisterParams {
        if self.web {
            let mut params = RegisterParams::web(
                &*self.sender_id,
                &*self.app_id,
                &*self.api_key,
                &*self.project_id,
            )
            .bundle(self.bundle_id.as_deref().unwrap_or(DEFAULT_WEB_BUNDLE));
            if let Some(key) = &self.vapid_key {
                params = params.vapid_key(key.as_str());
            }
            params.retries(self.retries)
        } else {
            RegisterParams::android(
                &*self.sender_id,
                &*self.app_id,
                &*self.api_key,
                &*self.project_id,
            )
            .android_cert(&*self.android_cert)
            .app_name(&*self.app_name)
            .retries(self.retries)
        }
    }
}

/// Runs `pullkin register`.
pub(crate) async fn run(args: RegisterArgs) -> Result<ExitCode> {
    if !args.force && args.out.exists() {
        return Err(CliError::msg(format!(
            "{} exists already (pass --force to replace it)",
            args.out.display()
        )));
    }
    let core = args.net.core(Some(args.device.retries)).config_error()?;
    let persona = args.device.persona();
    // Malformed parameters (`PullkinError::InvalidParams`, found before any request) are
    // a configuration error: exit 78 with their one-line message.
    let credentials = core
        .register(&args.device.params())
        .await
        .map_err(|error| pullkin_error(error, &format!("registering the {persona} device")))?;
    common::write_credentials(&args.out, &credentials, args.force)?;
    summarize(persona, &args.out, &credentials);
    match credentials.fcm.token() {
        Some(token) => {
            print_line(token)?;
            Ok(ExitCode::SUCCESS)
        }
        None => Err(CliError::msg(format!(
            "the FCM registration failed: {} (the credentials were saved to {}; the device \
             can still listen, and Android-persona senders can use its GCM token)",
            credentials
                .fcm
                .error
                .as_deref()
                .unwrap_or("no token in the answer"),
            args.out.display()
        ))),
    }
}

fn summarize(persona: &str, out: &std::path::Path, credentials: &AppCredentials) {
    log::info(
        None,
        format_args!(
            "registered a {persona} device: android_id {}, GCM token {}",
            credentials.gcm.android_id,
            short(credentials.gcm.token.as_str())
        ),
    );
    log::info(
        None,
        format_args!("credentials written to {} (mode 0600)", out.display()),
    );
}

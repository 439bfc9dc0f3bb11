//! `pullkin unregister`: delete a device's registration at Google (register3 delete, the
//! FCM registration, the Firebase installation; docs/protocol.md §7.1).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::common::NetArgs;
use crate::error::{Context, Kind, Result};
use crate::log;
use crate::topic::{pullkin_error, read_own};

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin unregister app.json            # the file stays; senders can no longer reach it
  pullkin unregister app.json --remove   # and remove the file afterwards
  pullkin unregister web.json --endpoints https://127.0.0.1:4443 --ca ca.pem

Deletes the register3 token, then the FCM registration and the Firebase installation
where the credentials hold them (what Google no longer knows counts as deleted). The
credentials are useless afterwards. Needs the Firebase config in the file (`pullkin
credentials import … --app-id --api-key --project-id` adds it to imported files).";

/// Arguments of `pullkin unregister`.
#[derive(Debug, Args)]
pub(crate) struct UnregisterArgs {
    /// The credentials file (pullkin's format).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Remove the credentials file once the registration is deleted.
    #[arg(long)]
    remove: bool,
    #[command(flatten)]
    net: NetArgs,
}

/// Runs `pullkin unregister`.
pub(crate) async fn run(args: UnregisterArgs) -> Result<ExitCode> {
    let credentials = read_own(&args.file)?;
    let core = args.net.core(None).config_error()?;
    let outcome = core
        .unregister(&credentials)
        .await
        .map_err(|error| pullkin_error(error, "unregistering"))?;
    let done = |deleted: bool| if deleted { "deleted" } else { "none" };
    log::info(
        None,
        format_args!(
            "unregistered android_id {}: register3 token deleted, FCM registration {}, \
             Firebase installation {}",
            credentials.gcm.android_id,
            done(outcome.fcm_registration_deleted),
            done(outcome.installation_deleted)
        ),
    );
    if args.remove {
        std::fs::remove_file(&args.file)
            .with_context(|| format!("removing {}", args.file.display()))?;
        log::info(None, format_args!("removed {}", args.file.display()));
    } else {
        log::info(
            None,
            format_args!(
                "{} holds a dead registration now: remove it (or pass --remove)",
                args.file.display()
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `pullkin fleet register`, `add` and `remove`: the identities in the database.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use futures_util::StreamExt;

use super::{DbArgs, KeyArgs};
use crate::common::{self, NetArgs, print_line};
use crate::error::{CliError, Context, Kind, Result};
use crate::listen::app_name;
use crate::log;
use crate::register::DeviceArgs;

pub(crate) const REGISTER_EXAMPLES: &str = "Examples:
  # 100 Chrome (Web Push) devices of a Firebase project, named shop-1 … shop-100:
  pullkin fleet register --count 100 --web --sender-id 123456789012 \\
      --app-id 1:123456789012:web:0a1b2c3d --api-key AIzaSy... --project-id my-project \\
      --prefix shop
  # Three Android-persona devices against the local emulator:
  pullkin fleet register --count 3 --sender-id 1 --app-id 1:1:android:1 --api-key k \\
      --project-id p --endpoints https://127.0.0.1:4443 --ca ca.pem

Each device is registered (check-in, GCM, Firebase Installations, FCM, with --retries
attempts per step) and added at once, its credentials sealed with the fleet key. Names go
on from the highest <prefix>-<n> in use. Stdout gets `<name> <FCM token>` per device (the
token is what senders push to).";

pub(crate) const ADD_EXAMPLES: &str = "Examples:
  pullkin fleet add web.json app.json             # identities `web` and `app`
  pullkin fleet add old-python-creds.json --name shop-frontend

Reads pullkin's credentials files and those of the Python `pullkin` and
`firebase-messaging` libraries. Every file is read before anything is added. The
credentials are sealed with the fleet key; the database never sees them in clear.";

pub(crate) const REMOVE_EXAMPLES: &str = "Examples:
  pullkin fleet remove shop-7 shop-8

The worker holding one stops it at its next renewal. Its stored messages stay for the
consumers (`prune` deletes them in time).";

/// Arguments of `pullkin fleet register`.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// How many devices to register.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Names are `<PREFIX>-<n>`.
    #[arg(long, value_name = "PREFIX", default_value = "device", value_parser = parse_prefix)]
    prefix: String,
    /// Registrations in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: u32,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    net: NetArgs,
}

fn parse_prefix(text: &str) -> std::result::Result<String, String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{text:?}: a prefix is a non-empty name without spaces"
        ));
    }
    Ok(text.to_owned())
}

/// Arguments of `pullkin fleet add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Credentials files (`pullkin register`, `pullkin credentials import`, or the Python
    /// libraries' files).
    #[arg(required = true, value_name = "CREDENTIALS")]
    files: Vec<PathBuf>,
    /// The identity's name, for a single file (default: the file's name without its
    /// extension).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    key: KeyArgs,
}

/// Arguments of `pullkin fleet remove`.
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The identities' names.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    #[command(flatten)]
    db: DbArgs,
}

/// Runs `pullkin fleet register`.
pub(crate) async fn register(args: RegisterArgs) -> Result<ExitCode> {
    let key = args.key.load()?;
    // Building the client reads --endpoints, --ca and --proxy; nothing is sent yet.
    let core = args.net.core(Some(args.device.retries)).config_error()?;
    let db = args.db.open_checked().await?;
    db.check_key(&key).await?;
    let existing = pullkin_fleet::list_identities(&db.database)
        .await
        .map_err(|error| db.error(error, "listing the identities"))?;
    let first = existing
        .iter()
        .filter_map(|identity| {
            identity
                .name
                .strip_prefix(args.prefix.as_str())?
                .strip_prefix('-')?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
        + 1;
    let names: Vec<String> = (first..first + u64::from(args.count))
        .map(|n| format!("{}-{n}", args.prefix))
        .collect();
    let persona = args.device.persona();
    let params = args.device.params();
    let (core, params) = (&core, &params);
    // Registered --parallel at a time, added in name order (ids follow the names).
    let mut registrations = futures_util::stream::iter(names.iter().cloned())
        .map(|name| async move {
            let credentials = core
                .register(params)
                .await
                .with_context(|| format!("registering {name} (a {persona} device)"))?;
            Ok::<_, CliError>((name, credentials))
        })
        .buffered(usize::try_from(args.parallel).unwrap_or(1));
    let mut added = 0_usize;
    let mut without_fcm = Vec::new();
    while let Some(registered) = registrations.next().await {
        let added_one = match registered {
            Ok((name, credentials)) => {
                pullkin_fleet::add_identity(&db.database, &key, &name, &credentials)
                    .await
                    .map(|id| (name.clone(), id, credentials))
                    .map_err(|error| db.error(error, &format!("adding {name}")))
            }
            Err(error) => Err(error),
        };
        let (name, id, credentials) = match added_one {
            Ok(added_one) => added_one,
            Err(error) => {
                if added > 0 {
                    log::info(
                        None,
                        format_args!(
                            "{added} of {} devices were registered and added before this \
                             failure",
                            names.len()
                        ),
                    );
                }
                return Err(error);
            }
        };
        added += 1;
        log::info(
            Some(&name),
            format_args!(
                "registered and added (identity {id}, android_id {})",
                credentials.gcm.android_id
            ),
        );
        match credentials.fcm.token() {
            Some(token) => print_line(&format!("{name} {token}"))?,
            None => {
                log::warn(
                    Some(&name),
                    format_args!(
                        "no FCM token: {}",
                        credentials
                            .fcm
                            .error
                            .as_deref()
                            .unwrap_or("no token in the answer")
                    ),
                );
                without_fcm.push(name);
            }
        }
    }
    if !without_fcm.is_empty() {
        return Err(CliError::msg(format!(
            "the FCM registration failed for {} (added all the same: they can listen, and \
             Android-persona senders can use their GCM tokens)",
            without_fcm.join(", ")
        )));
    }
    log::info(
        None,
        format_args!(
            "registered {added} {persona} devices: {} to {}",
            names.first().map_or("", String::as_str),
            names.last().map_or("", String::as_str)
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `pullkin fleet add`.
pub(crate) async fn add(args: AddArgs) -> Result<ExitCode> {
    if args.name.is_some() && args.files.len() > 1 {
        return Err(CliError::usage(format!(
            "--name names one identity, but {} files were given",
            args.files.len()
        )));
    }
    // Every file first: a bad one adds nothing.
    let mut identities = Vec::new();
    let mut names = HashSet::new();
    for path in &args.files {
        let name = match &args.name {
            Some(name) if name.trim().is_empty() => {
                return Err(CliError::usage("--name is empty"));
            }
            Some(name) => name.clone(),
            None => app_name(path).config_error()?,
        };
        if !names.insert(name.clone()) {
            return Err(CliError::config(format!(
                "two credentials files are named {name:?}: names come from file names and must \
                 differ (or use --name, one file at a time)"
            )));
        }
        let credentials = common::read_credentials(path).config_error()?;
        identities.push((name, path, credentials));
    }
    let key = args.key.load()?;
    let db = args.db.open_checked().await?;
    db.check_key(&key).await?;
    for (name, path, credentials) in &identities {
        let id = pullkin_fleet::add_identity(&db.database, &key, name, credentials)
            .await
            .map_err(|error| db.error(error, &format!("adding {}", path.display())))?;
        log::info(
            Some(name),
            format_args!("added from {} (identity {id})", path.display()),
        );
        print_line(name)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `pullkin fleet remove`.
pub(crate) async fn remove(args: RemoveArgs) -> Result<ExitCode> {
    let db = args.db.open_checked().await?;
    let mut unknown = Vec::new();
    for name in &args.names {
        let removed = pullkin_fleet::remove_identity(&db.database, name)
            .await
            .map_err(|error| db.error(error, &format!("removing {name}")))?;
        if removed {
            log::info(Some(name), "removed");
            print_line(name)?;
        } else {
            unknown.push(format!("{name:?}"));
        }
    }
    if unknown.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::msg(format!(
            "no identity named {}",
            unknown.join(", ")
        )))
    }
}

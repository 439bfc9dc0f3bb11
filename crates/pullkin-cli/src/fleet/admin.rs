//! `pullkin fleet migrate`, `prune`, `rotate-key` and `generate-key`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pullkin_fleet::FleetKey;

use super::{DbArgs, KeyArgs, fleet_error, parse_age};
use crate::common::print_line;
use crate::error::{CliError, Context, Result};
use crate::log;

pub(crate) const MIGRATE_EXAMPLES: &str = "Examples:
  pullkin fleet migrate --database postgres://pullkin@db.internal/pullkin
  PULLKIN_DATABASE_URL=postgres://postgres@127.0.0.1/fleet pullkin fleet migrate

Prints the schema version (stdout) after creating or upgrading the schema `pullkin`.
Running it again changes nothing; several at once apply each version once. A database
newer than this build is refused (exit status 78).";

pub(crate) const PRUNE_EXAMPLES: &str = "Examples:
  pullkin fleet prune                      # older than 7 days
  pullkin fleet prune --older-than 36h
  pullkin fleet prune --older-than 0       # everything every consumer has passed

Deletes the stored messages received longer ago than --older-than that every consumer
(`tail --consumer`) has passed (all of them when there is no consumer), and the rows of
workers not seen for as long. Prints notifications=N and workers=N.";

pub(crate) const ROTATE_EXAMPLES: &str = "Examples:
  pullkin fleet generate-key new.key
  pullkin fleet rotate-key --key-file old.key --new-key-file new.key
  # then restart every worker with --key-file new.key

Every identity's credentials are re-encrypted under the new key in one transaction:
all or none. Rows already under the new key are left alone, so running it again is
harmless. Workers claim only identities sealed with their own key: running ones keep
what they hold, and a worker with the old key refuses to start.";

pub(crate) const GENERATE_EXAMPLES: &str = "Examples:
  pullkin fleet generate-key /etc/pullkin/fleet.key
  export PULLKIN_FLEET_KEY_FILE=/etc/pullkin/fleet.key

Writes 64 hex characters (32 random bytes) with mode 0600 and prints the key's id, the
fingerprint the database keeps beside each identity it seals. Keep the file private and
backed up: without it no stored identity can be opened.";

/// Arguments of `pullkin fleet migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    db: DbArgs,
}

/// Arguments of `pullkin fleet prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only what was received longer ago than this: a number and s, m, h or d.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_age)]
    older_than: Duration,
}

/// Arguments of `pullkin fleet rotate-key`.
#[derive(Debug, Args)]
pub(crate) struct RotateKeyArgs {
    #[command(flatten)]
    db: DbArgs,
    // The key the identities are sealed with now.
    #[command(flatten)]
    key: KeyArgs,
    /// The file of the key to seal them with from now on (`generate-key` writes one).
    #[arg(long, value_name = "FILE")]
    new_key_file: PathBuf,
}

/// Arguments of `pullkin fleet generate-key`.
#[derive(Debug, Args)]
pub(crate) struct GenerateKeyArgs {
    /// Where to write the key (mode 0600).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Replace the file if it exists (whatever it sealed can then not be opened).
    #[arg(long)]
    force: bool,
}

/// Runs `pullkin fleet migrate`.
pub(crate) async fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    let db = args.db.open()?;
    let migrated = pullkin_fleet::migrate(&db.database)
        .await
        .map_err(|error| db.error(error, "migrating the schema"))?;
    if migrated.from == migrated.to {
        log::info(
            None,
            format_args!("the schema is at version {} already", migrated.to),
        );
    } else {
        log::info(
            None,
            format_args!(
                "migrated the schema from version {} to {}",
                migrated.from, migrated.to
            ),
        );
    }
    print_line(&migrated.to.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `pullkin fleet prune`.
pub(crate) async fn prune(args: PruneArgs) -> Result<ExitCode> {
    let db = args.db.open_checked().await?;
    let pruned = pullkin_fleet::prune(&db.database, args.older_than)
        .await
        .map_err(|error| db.error(error, "pruning"))?;
    log::info(
        None,
        format_args!(
            "deleted {} stored messages and {} rows of workers gone",
            pruned.notifications, pruned.workers
        ),
    );
    print_line(&format!("notifications={}", pruned.notifications))?;
    print_line(&format!("workers={}", pruned.workers))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `pullkin fleet rotate-key`.
pub(crate) async fn rotate_key(args: RotateKeyArgs) -> Result<ExitCode> {
    let old = args.key.load()?;
    let new = FleetKey::from_file(&args.new_key_file).map_err(|error| {
        fleet_error(
            error,
            "reading the new key",
            &args.new_key_file.display().to_string(),
        )
    })?;
    if old.id() == new.id() {
        return Err(CliError::usage(format!(
            "--new-key-file {} holds the key of --key-file: nothing to rotate",
            args.new_key_file.display()
        )));
    }
    let db = args.db.open_checked().await?;
    let rotated = pullkin_fleet::rotate_key(&db.database, &old, &new)
        .await
        .map_err(|error| db.error(error, "re-encrypting the identities"))?;
    log::info(
        None,
        format_args!(
            "re-encrypted {rotated} identities under key {}; restart every worker with \
             --key-file {}",
            new.id(),
            args.new_key_file.display()
        ),
    );
    print_line(&format!("rotated={rotated}"))?;
    print_line(&format!("key_id={}", new.id()))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `pullkin fleet generate-key`.
pub(crate) fn generate_key(args: &GenerateKeyArgs) -> Result<ExitCode> {
    if !args.force && args.file.exists() {
        return Err(CliError::msg(format!(
            "{} exists already (pass --force to replace it: whatever its key sealed can then \
             not be opened)",
            args.file.display()
        )));
    }
    let key = FleetKey::generate();
    let mut text = key.to_hex();
    text.push('\n');
    pullkin::write_private_file(&args.file, text.as_bytes())
        .with_context(|| format!("writing the key file {}", args.file.display()))?;
    log::info(
        None,
        format_args!(
            "a new fleet key written to {} (mode 0600)",
            args.file.display()
        ),
    );
    print_line(&key.id())?;
    Ok(ExitCode::SUCCESS)
}

//! `pullkin fleet …`: many identities across worker processes, coordinated through one
//! PostgreSQL database (the `pullkin-fleet` crate). The identities' credentials live in
//! the database sealed with the fleet key (a file the database never sees); workers
//! claim identities with leases and store every message exactly once; `tail` reads them
//! with a durable cursor.
//!
//! Every command takes `--database URL` (`PULLKIN_DATABASE_URL`); the ones that read or
//! write secrets (`register`, `add`, `worker`, `rotate-key`) take `--key-file FILE`
//! (`PULLKIN_FLEET_KEY_FILE`). Errors are one line naming the cause, with exit statuses
//! by kind: an unreachable database 1 (a restart may work), a missing or wrong key, a
//! bad URL or a schema of another version 78, bad flags 2, stored credentials that do
//! not parse 65.

mod admin;
mod identities;
mod status;
mod tail;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use pullkin_fleet::{Database, FleetError, FleetKey};

use crate::error::{CliError, Context, ErrorKind, Kind, Result};

/// What `pullkin fleet --help` ends with.
pub(crate) const EXAMPLES: &str = "Examples:
  export PULLKIN_DATABASE_URL=postgres://pullkin@db.internal/pullkin?sslmode=require
  export PULLKIN_FLEET_KEY_FILE=/etc/pullkin/fleet.key
  pullkin fleet generate-key /etc/pullkin/fleet.key
  pullkin fleet migrate
  pullkin fleet add web.json app.json
  pullkin fleet register --count 100 --web --sender-id 1234 --app-id 1:1234:web:ab \\
      --api-key AIza... --project-id my-project --prefix shop
  pullkin fleet worker --capacity 5000          # on each machine, as many as you like
  pullkin fleet status
  pullkin fleet tail --consumer billing --follow | my-handler

The database is PostgreSQL (`sslmode=require` for TLS, verified with the Mozilla roots);
the key file holds 64 hex characters (or 32 raw bytes) and never enters the database.
Every command but `migrate` refuses a database whose schema is of another version.";

/// `pullkin fleet …`.
#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
    /// Create or upgrade the fleet's schema (schema `pullkin`); prints the version.
    #[command(after_help = admin::MIGRATE_EXAMPLES)]
    Migrate(admin::MigrateArgs),
    /// Register N devices (Android persona, or Chrome with --web) straight into the
    /// database, named `<prefix>-<n>`; prints `<name> <FCM token>` for each.
    #[command(after_help = identities::REGISTER_EXAMPLES)]
    Register(identities::RegisterArgs),
    /// Add identities from credentials files (pullkin's, or the Python `pullkin` and
    /// `firebase-messaging` ones), each named after its file unless --name.
    #[command(after_help = identities::ADD_EXAMPLES)]
    Add(identities::AddArgs),
    /// Remove identities (their stored messages stay for the consumers).
    #[command(after_help = identities::REMOVE_EXAMPLES)]
    Remove(identities::RemoveArgs),
    /// Run a worker: claim a fair share of the identities, listen for each, store every
    /// message once; SIGINT/SIGTERM hand everything off, SIGUSR1 checks the connections.
    #[command(after_help = worker::EXAMPLES)]
    Worker(worker::WorkerArgs),
    /// Show every identity (worker, connection, last frame, messages waiting), worker
    /// and consumer; --json for machines.
    #[command(after_help = status::EXAMPLES)]
    Status(status::StatusArgs),
    /// Print the stored messages as `pullkin listen` prints them, one JSON line each;
    /// with --consumer NAME from where that consumer left off, committing as it goes.
    #[command(after_help = tail::EXAMPLES)]
    Tail(tail::TailArgs),
    /// Delete stored messages older than --older-than that every consumer has passed,
    /// and the rows of workers long gone.
    #[command(after_help = admin::PRUNE_EXAMPLES)]
    Prune(admin::PruneArgs),
    /// Re-encrypt every identity's credentials under a new key, in one transaction.
    #[command(after_help = admin::ROTATE_EXAMPLES)]
    RotateKey(admin::RotateKeyArgs),
    /// Write a new random fleet key to a file (mode 0600); prints its id.
    #[command(after_help = admin::GENERATE_EXAMPLES)]
    GenerateKey(admin::GenerateKeyArgs),
}

/// Runs `pullkin fleet …`.
pub(crate) async fn run(command: FleetCommand) -> Result<ExitCode> {
    match command {
        FleetCommand::Migrate(args) => admin::migrate(args).await,
        FleetCommand::Register(args) => identities::register(args).await,
        FleetCommand::Add(args) => identities::add(args).await,
        FleetCommand::Remove(args) => identities::remove(args).await,
        FleetCommand::Worker(args) => worker::run(args).await,
        FleetCommand::Status(args) => status::run(args).await,
        FleetCommand::Tail(args) => tail::run(args).await,
        FleetCommand::Prune(args) => admin::prune(args).await,
        FleetCommand::RotateKey(args) => admin::rotate_key(args).await,
        FleetCommand::GenerateKey(args) => admin::generate_key(&args),
    }
}

/// `--database`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DbArgs {
    /// The fleet's PostgreSQL database:
    /// `postgres://user[:password]@host[:port]/dbname[?sslmode=require]` (or libpq's
    /// `host=… dbname=…` form). Prefer the variable: a flag shows in the process list.
    #[arg(
        long,
        env = "PULLKIN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database: String,
}

/// A database opened from [`DbArgs`], with the way to name it in messages (without its
/// password).
pub(crate) struct Db {
    pub(crate) database: Database,
    /// `postgres://user@host:port/dbname`.
    pub(crate) shown: String,
}

impl DbArgs {
    /// The database (nothing is connected yet).
    pub(crate) fn open(&self) -> Result<Db> {
        let shown = redacted(&self.database);
        let database = Database::builder(&self.database)
            .build()
            .map_err(|error| fleet_error(error, "opening the database", &shown))?;
        Ok(Db { database, shown })
    }

    /// The database, checked to have this build's schema.
    pub(crate) async fn open_checked(&self) -> Result<Db> {
        let db = self.open()?;
        db.check_schema().await?;
        Ok(db)
    }
}

impl Db {
    /// Fails unless the schema is this build's.
    pub(crate) async fn check_schema(&self) -> Result<()> {
        pullkin_fleet::check_schema(&self.database)
            .await
            .map_err(|error| self.error(error, "reading the schema version"))
    }

    /// A fleet error, as a command's error.
    pub(crate) fn error(&self, error: FleetError, doing: &str) -> CliError {
        fleet_error(error, doing, &self.shown)
    }

    /// Checks that `key` is the one the stored identities are sealed with: a key none of
    /// them is sealed with is refused (a wrong key file, or the old key after
    /// `rotate-key`); identities under another key beside this one's are reported.
    pub(crate) async fn check_key(&self, key: &FleetKey) -> Result<()> {
        let identities = pullkin_fleet::list_identities(&self.database)
            .await
            .map_err(|error| self.error(error, "listing the identities"))?;
        let mine = key.id();
        let mut others: BTreeMap<String, usize> = BTreeMap::new();
        for identity in identities.iter().filter(|i| i.key_id != mine) {
            *others.entry(identity.key_id.clone()).or_default() += 1;
        }
        if others.is_empty() {
            return Ok(());
        }
        let listed = others
            .iter()
            .map(|(id, n)| format!("{n} under key {id}"))
            .collect::<Vec<_>>()
            .join(", ");
        if others.values().sum::<usize>() == identities.len() {
            return Err(CliError::config(format!(
                "wrong fleet key: the key in the key file (id {mine}) seals none of the {} \
                 identities in the database ({listed}); after `pullkin fleet rotate-key`, use \
                 the new key file",
                identities.len()
            )));
        }
        crate::log::warn(
            None,
            format_args!(
                "{listed} in the database: this key (id {mine}) cannot open them, so workers \
                 with it leave them to workers with that key"
            ),
        );
        Ok(())
    }
}

/// `--key-file`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeyArgs {
    /// The file holding the fleet key that seals every identity's credentials: 64 hex
    /// characters or 32 raw bytes (`pullkin fleet generate-key FILE` writes one).
    #[arg(long, env = "PULLKIN_FLEET_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key, read.
    pub(crate) fn load(&self) -> Result<FleetKey> {
        let Some(path) = self
            .key_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Err(CliError::config(
                "no fleet key: pass --key-file FILE or set PULLKIN_FLEET_KEY_FILE (a file of 64 \
                 hex characters or 32 raw bytes; `pullkin fleet generate-key FILE` writes one)",
            ));
        };
        FleetKey::from_file(path).map_err(|error| {
            fleet_error(error, "reading the fleet key", &path.display().to_string())
        })
    }
}

/// A fleet error as a command's error: one line naming the cause, of the kind that
/// gives the exit status (see the module docs). `shown` names the database (or the file).
pub(crate) fn fleet_error(error: FleetError, doing: &str, shown: &str) -> CliError {
    match error {
        FleetError::Unreachable { reason } => {
            CliError::msg(format!("cannot reach the database {shown}: {reason}"))
        }
        FleetError::WrongSchema { database, build } => {
            CliError::config(wrong_schema(database, build, shown))
        }
        FleetError::MissingKey => CliError::config(
            "no fleet key: pass --key-file FILE or set PULLKIN_FLEET_KEY_FILE".to_owned(),
        ),
        FleetError::KeyFile { path, reason } => {
            CliError::config(format!("bad fleet key file {}: {reason}", path.display()))
        }
        FleetError::BadKey { identity } => CliError::config(format!(
            "{doing}: wrong fleet key: it does not open identity {identity} (is this the key \
             the identities are sealed with?)"
        )),
        FleetError::BadUrl { reason } => CliError::config(format!(
            "bad database URL (--database / PULLKIN_DATABASE_URL): {reason}"
        )),
        FleetError::Database(e) => {
            // Refused logins and missing databases are configuration, not bad luck.
            let kind = match e.code().map(|c| c.code()) {
                Some(code) if code.starts_with("28") || code.starts_with("3D") => ErrorKind::Config,
                _ => ErrorKind::Failure,
            };
            let cause = match e.as_db_error() {
                Some(db) => {
                    let mut cause = format!("{}: {}", db.severity(), db.message());
                    if let Some(detail) = db.detail() {
                        cause.push_str(&format!(" ({detail})"));
                    }
                    if let Some(hint) = db.hint() {
                        cause.push_str(&format!("; hint: {hint}"));
                    }
                    cause
                }
                None => e.to_string(),
            };
            CliError::msg(format!(
                "{doing} ({shown}): {}",
                cause.replace(['\n', '\r'], " ")
            ))
            .kind(kind)
        }
        other => {
            let kind = match &other {
                FleetError::Credentials(_) => ErrorKind::Data,
                FleetError::Listener(_) | FleetError::Tls(_) => ErrorKind::Config,
                _ => ErrorKind::Failure,
            };
            let error = Err::<(), _>(other).context(doing).error_kind(kind);
            error
                .err()
                .unwrap_or_else(|| CliError::msg(doing.to_owned()))
        }
    }
}

/// The message for a schema of another version: both numbers, and what to do.
fn wrong_schema(database: i32, build: i32, shown: &str) -> String {
    if database < build {
        let none = if database == 0 {
            " (no fleet schema yet)"
        } else {
            ""
        };
        format!(
            "wrong schema version: database {database}{none}, this build {build}: run `pullkin \
             fleet migrate` (database {shown})"
        )
    } else {
        format!(
            "wrong schema version: database {database}, this build {build}: the database is \
             newer than this pullkin; upgrade pullkin (`pullkin fleet migrate` does not go back \
             a version) (database {shown})"
        )
    }
}

/// The database URL without its password or parameters, to name it in messages:
/// `postgres://user@host:port/dbname`, or the host, port, user and dbname of libpq's
/// `key=value` form.
pub(crate) fn redacted(url: &str) -> String {
    let url = url.trim();
    if let Some((scheme, rest)) = url.split_once("://") {
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let host = match authority.rsplit_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{user}@{host}")
            }
            None => authority.to_owned(),
        };
        return format!("{scheme}://{host}{path}");
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|pair| {
            pair.split_once('=').is_some_and(|(key, _)| {
                matches!(key, "host" | "hostaddr" | "port" | "user" | "dbname")
            })
        })
        .collect();
    if kept.is_empty() {
        "(--database)".to_owned()
    } else {
        kept.join(" ")
    }
}

/// An age for `prune --older-than` and the like: a number with a unit, `s`, `m`, `h` or
/// `d` (`7d`, `36h`, `1.5h`, `90s`; a bare number is seconds; `0` is now).
pub(crate) fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use s, m, h or d (e.g. 7d, 36h, 90s)"
            ));
        }
    };
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration like 7d, 36h or 90s, got {text:?}"))?;
    let seconds = number * seconds_per;
    if !(0.0..=3.2e9).contains(&seconds) {
        return Err(format!("{text} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The lease TTL of `worker` and `status`: at least a second, at most an hour.
pub(crate) fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    let ttl = crate::listen::parse_seconds(text)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&ttl) {
        return Err(format!("{text} s is out of range (1 to 3600 seconds)"));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            redacted("postgres://pullkin:hunter2@db.internal:5432/fleet?sslmode=require"),
            "postgres://pullkin@db.internal:5432/fleet"
        );
        assert_eq!(redacted("postgresql://db/fleet"), "postgresql://db/fleet");
        let shown = redacted("host=db user=pullkin password=hunter2 dbname=fleet");
        assert_eq!(shown, "host=db user=pullkin dbname=fleet");
        assert!(!redacted("password=hunter2").contains("hunter2"));
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        assert!(parse_age("7w").is_err());
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn schema_messages_say_what_to_do() {
        let old = wrong_schema(1, 2, "postgres://db/x");
        assert!(old.contains("database 1, this build 2"), "{old}");
        assert!(old.contains("run `pullkin fleet migrate`"), "{old}");
        let new = wrong_schema(3, 2, "postgres://db/x");
        assert!(new.contains("database 3, this build 2"), "{new}");
        assert!(new.contains("upgrade pullkin"), "{new}");
        assert!(new.contains("pullkin fleet migrate"), "{new}");
    }
}

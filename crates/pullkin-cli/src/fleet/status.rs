//! `pullkin fleet status`: every identity, worker and consumer, as tables or JSON.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;
use pullkin_fleet::{FleetStatus, IdentityStatus, WorkerStatus};
use serde_json::{Value, json};

use super::{DbArgs, parse_ttl};
use crate::common::print_line;
use crate::error::Result;

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin fleet status
  pullkin fleet status --json | jq '.identities[] | select(.state != \"connected\")'

Per identity: the worker holding it (`-` when free, `(expired)` after a lease ran out),
the lease epoch, the connection state its worker recorded (connected, connecting,
backing-off, stopped, released), when the last frame arrived, and how many stored
messages are waiting for a consumer. Per worker: host, pid, identities held, last seen,
live or gone. Per consumer: its cursor and how far behind it is. With --json one object:
schema_version, identities, workers, consumers, notifications, last_seq; times are
milliseconds since the Unix epoch (`…_ms`).";

/// Arguments of `pullkin fleet status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// The workers' lease TTL in seconds: a worker not seen for as long counts as gone.
    #[arg(long, value_name = "SECONDS", default_value = "15", value_parser = parse_ttl)]
    lease_ttl: Duration,
    #[command(flatten)]
    db: DbArgs,
}

/// Runs `pullkin fleet status`.
pub(crate) async fn run(args: StatusArgs) -> Result<ExitCode> {
    let db = args.db.open_checked().await?;
    let status = pullkin_fleet::status(&db.database, args.lease_ttl)
        .await
        .map_err(|error| db.error(error, "reading the status"))?;
    if args.json {
        print_line(&to_json(&status).to_string())?;
    } else {
        for line in to_text(&status, SystemTime::now()) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn identity_json(identity: &IdentityStatus) -> Value {
    json!({
        "id": identity.id,
        "name": identity.name,
        "persona": identity.persona,
        "disabled": identity.disabled,
        "worker": identity.holder.as_ref().filter(|_| identity.lease_live),
        "holder": identity.holder,
        "lease_live": identity.lease_live,
        "epoch": identity.epoch,
        "lease_expires_ms": identity.lease_expires_at.map(ms),
        "state": identity.state,
        "detail": identity.detail,
        "last_frame_ms": identity.last_frame_at.map(ms),
        "state_updated_ms": identity.state_updated_at.map(ms),
        "waiting": identity.waiting,
    })
}

fn worker_json(worker: &WorkerStatus) -> Value {
    json!({
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "started_ms": ms(worker.started_at),
        "last_seen_ms": ms(worker.last_seen),
        "capacity": worker.capacity,
        "version": worker.version,
        "held": worker.held,
        "live": worker.live,
    })
}

/// `status --json`.
fn to_json(status: &FleetStatus) -> Value {
    json!({
        "schema_version": status.schema_version,
        "identities": status.identities.iter().map(identity_json).collect::<Vec<_>>(),
        "workers": status.workers.iter().map(worker_json).collect::<Vec<_>>(),
        "consumers": status.consumers.iter().map(|c| json!({
            "name": c.name,
            "last_seq": c.last_seq,
            "behind": c.behind,
        })).collect::<Vec<_>>(),
        "notifications": status.notifications,
        "last_seq": status.last_seq,
    })
}

/// How long ago (or, for a time ahead, how soon), shortly: `3 s ago`, `in 12 s`.
fn relative(time: SystemTime, now: SystemTime) -> String {
    let (span, ahead) = match now.duration_since(time) {
        Ok(past) => (past, false),
        Err(future) => (future.duration(), true),
    };
    let seconds = span.as_secs();
    let text = match seconds {
        0..120 => format!("{seconds} s"),
        120..7200 => format!("{} min", seconds / 60),
        7200..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    };
    if ahead {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = width - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.trim_end().to_owned()
    };
    let mut lines = vec![line(header.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| line(row.iter().map(String::as_str).collect())),
    );
    lines
}

/// `status` for people.
fn to_text(status: &FleetStatus, now: SystemTime) -> Vec<String> {
    let live = status.workers.iter().filter(|w| w.live).count();
    let held = status.identities.iter().filter(|i| i.lease_live).count();
    let connected = status
        .identities
        .iter()
        .filter(|i| i.lease_live && i.state.as_deref() == Some("connected"))
        .count();
    let mut lines = vec![format!(
        "schema version {}; {} identities ({held} held, {connected} connected); {live} live \
         workers; {} stored messages (last seq {})",
        status.schema_version,
        status.identities.len(),
        status.notifications,
        status.last_seq
    )];
    lines.push(String::new());
    let rows: Vec<Vec<String>> = status
        .identities
        .iter()
        .map(|identity| {
            let worker = match (&identity.holder, identity.lease_live) {
                (Some(holder), true) => holder.clone(),
                (Some(holder), false) => format!("{holder} (expired)"),
                (None, _) => "-".to_owned(),
            };
            let mut state = identity.state.clone().unwrap_or_else(|| "-".to_owned());
            // What a worker that is gone recorded last.
            if identity.holder.is_some() && !identity.lease_live && identity.state.is_some() {
                state.push_str(" (stale)");
            }
            if identity.disabled {
                state = format!("disabled; {state}");
            }
            vec![
                identity.name.clone(),
                identity.persona.clone(),
                worker,
                identity.epoch.to_string(),
                state,
                identity
                    .last_frame_at
                    .map_or_else(|| "-".to_owned(), |t| relative(t, now)),
                identity.waiting.to_string(),
            ]
        })
        .collect();
    lines.extend(table(
        &[
            "IDENTITY",
            "PERSONA",
            "WORKER",
            "EPOCH",
            "STATE",
            "LAST FRAME",
            "WAITING",
        ],
        &rows,
    ));
    lines.push(String::new());
    let rows: Vec<Vec<String>> = status
        .workers
        .iter()
        .map(|worker| {
            vec![
                worker.id.clone(),
                worker.host.clone(),
                worker.pid.to_string(),
                worker
                    .capacity
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                worker.held.to_string(),
                relative(worker.last_seen, now),
                if worker.live { "live" } else { "gone" }.to_owned(),
            ]
        })
        .collect();
    lines.extend(table(
        &[
            "WORKER",
            "HOST",
            "PID",
            "CAPACITY",
            "HELD",
            "LAST SEEN",
            "STATE",
        ],
        &rows,
    ));
    if !status.consumers.is_empty() {
        lines.push(String::new());
        let rows: Vec<Vec<String>> = status
            .consumers
            .iter()
            .map(|c| vec![c.name.clone(), c.last_seq.to_string(), c.behind.to_string()])
            .collect();
        lines.extend(table(&["CONSUMER", "LAST SEQ", "BEHIND"], &rows));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_short_and_relative() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(relative(now - Duration::from_secs(3), now), "3 s ago");
        assert_eq!(relative(now - Duration::from_secs(600), now), "10 min ago");
        assert_eq!(relative(now + Duration::from_secs(12), now), "in 12 s");
        assert_eq!(
            relative(now - Duration::from_secs(3 * 86_400), now),
            "3 d ago"
        );
    }

    #[test]
    fn tables_line_up() {
        let lines = table(
            &["A", "BB"],
            &[
                vec!["long-name".into(), "1".into()],
                vec!["x".into(), "22".into()],
            ],
        );
        assert_eq!(lines, ["A          BB", "long-name  1", "x          22"]);
    }
}

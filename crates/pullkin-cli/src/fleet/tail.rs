//! `pullkin fleet tail`: the stored messages as `pullkin listen` prints them, one JSON
//! line each, read with a durable cursor (`--consumer NAME`) or a transient one.

use std::io::Write;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use clap::Args;
use pullkin_fleet::{Consumer, StoredNotification};
use serde_json::{Value, json};

use super::DbArgs;
use crate::error::{Context, Result};
use crate::{log, signal};

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin fleet tail --consumer billing                  # what billing has not seen yet
  pullkin fleet tail --consumer billing --follow | my-handler
  pullkin fleet tail --follow                            # from now on, remembered nowhere
  pullkin fleet tail --consumer audit --from 1 --count 10

Stdout gets one JSON object per message, the line `pullkin listen` printed for it (app is
the identity's name), in the order the workers stored them. A named consumer's cursor is
committed after each batch is written, so a run resumes after what the last one printed
(a batch cut off by a crash may be printed again: each line's app and persistent_id say
which message it is). Without --consumer it starts after the newest message (or at
--from) and remembers nothing. --follow waits for new messages (LISTEN/NOTIFY) until
SIGINT/SIGTERM (exit status 0).";

/// Arguments of `pullkin fleet tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// A durable cursor by this name: start where it was committed, commit as batches
    /// are written (created at the start when new).
    #[arg(long, value_name = "NAME")]
    consumer: Option<String>,
    /// Wait for new messages instead of stopping at the newest.
    #[arg(long, short)]
    follow: bool,
    /// Start at this sequence number (inclusive) instead; committed with the next batch.
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(1..))]
    from: Option<i64>,
    /// Stop after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Read (and commit) up to this many messages at a time.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// Add each message's sequence number to its line, as `seq` (for --from).
    #[arg(long)]
    with_seq: bool,
    #[command(flatten)]
    db: DbArgs,
}

/// Runs `pullkin fleet tail`.
pub(crate) async fn run(args: TailArgs) -> Result<ExitCode> {
    let stop = signal::watch()?;
    let db = args.db.open_checked().await?;
    let mut consumer = match &args.consumer {
        Some(name) => Consumer::open(&db.database, name).await,
        None => Consumer::transient(&db.database).await,
    }
    .map_err(|error| db.error(error, "opening the consumer"))?;
    if let Some(from) = args.from {
        consumer.seek(from);
    }
    let batch = usize::try_from(args.batch).unwrap_or(100);
    let mut left = args.count;
    let limit = |left: Option<u64>| {
        left.map_or(batch, |left| {
            batch.min(usize::try_from(left).unwrap_or(usize::MAX))
        })
    };
    if !args.follow {
        while left != Some(0) {
            let rows = consumer
                .next_batch(limit(left))
                .await
                .map_err(|error| db.error(error, "reading the stored messages"))?;
            let Some(last) = rows.last().map(|row| row.seq) else {
                break;
            };
            write_batch(&rows, args.with_seq)?;
            consumer
                .commit(last)
                .await
                .map_err(|error| db.error(error, "committing the cursor"))?;
            left = left.map(|n| n.saturating_sub(rows.len() as u64));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut follower = consumer
        .follow()
        .await
        .map_err(|error| db.error(error, "listening for new messages"))?;
    tokio::pin!(stop);
    while left != Some(0) {
        let rows = tokio::select! {
            signal = &mut stop => {
                log::info(None, format_args!("{signal}: stopping"));
                break;
            }
            rows = follower.next(limit(left)) => {
                rows.map_err(|error| db.error(error, "reading the stored messages"))?
            }
        };
        let Some(last) = rows.last().map(|row| row.seq) else {
            continue;
        };
        write_batch(&rows, args.with_seq)?;
        follower
            .commit(last)
            .await
            .map_err(|error| db.error(error, "committing the cursor"))?;
        left = left.map(|n| n.saturating_sub(rows.len() as u64));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a batch, one line per message, and flushes it: only then is it committed.
fn write_batch(rows: &[StoredNotification], with_seq: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = line(row);
        if with_seq && let Value::Object(object) = &mut line {
            object.insert("seq".to_owned(), Value::from(row.seq));
        }
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")
}

/// The line `pullkin listen` printed for a message: the stored one, or (for a row
/// stored without it) one rebuilt from the row's columns.
fn line(row: &StoredNotification) -> Value {
    if row.line.as_object().is_some_and(|line| !line.is_empty()) {
        return row.line.clone();
    }
    let ms = |time: std::time::SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
    };
    let mut line = json!({
        "app": row.identity.clone().unwrap_or_else(|| format!("identity-{}", row.identity_id)),
        "persistent_id": row.persistent_id,
        "fcm_message_id": null,
        "sender_id": row.sender,
        "priority": null,
        "sent_ms": row.sent_at.and_then(ms),
        "received_ms": ms(row.received_at),
        "encoding": row.encoding,
        "data": row.data,
        "notification": row.notification,
        "raw": { "data": row.data },
    });
    if let Some(payload) = row.payload.as_deref().filter(|p| !p.is_empty()) {
        use base64::Engine as _;
        match std::str::from_utf8(payload) {
            Ok(text) if serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()) => {
                if let Ok(raw) = serde_json::from_str::<Value>(text) {
                    line["raw"] = raw;
                }
            }
            Ok(text) => line["payload"] = Value::String(text.to_owned()),
            Err(_) => {
                line["payload_base64"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(payload));
            }
        }
    }
    line
}

//! `pullkin fleet tail`: the stored messages as `pullkin listen` prints them, one JSON
//! line each, read with a durable cursor (`--consumer NAME`) or a transient one; or, with
//! `--sink URL`, handed to the same sinks as `pullkin listen --sink`, the cursor
//! committed only once the sink took each batch (`pullkin::deliver_batch`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use clap::Args;
use pullkin::{ForwardConfig, Outcome, Sink, SinkEvent, SinkMessage};
use pullkin_fleet::{Consumer, StoredNotification};
use serde_json::{Value, json};

use super::DbArgs;
use crate::error::{CliError, Context, Result};
use crate::sinks::{SinkOptions, is_stdout};
use crate::{log, signal};

pub(crate) const EXAMPLES: &str = "Examples:
  pullkin fleet tail --consumer billing                  # what billing has not seen yet
  pullkin fleet tail --consumer billing --follow | my-handler
  pullkin fleet tail --follow                            # from now on, remembered nowhere
  pullkin fleet tail --consumer audit --from 1 --count 10
  pullkin fleet tail --consumer bus --follow --sink 'nats://127.0.0.1:4222/pullkin.{app}' \
      --create-stream PULLKIN --park file:/var/lib/pullkin/rejected.jsonl

Stdout gets one JSON object per message, the line `pullkin listen` printed for it (app is
the identity's name), in the order the workers stored them. A named consumer's cursor is
committed after each batch is written, so a run resumes after what the last one printed
(a batch cut off by a crash may be printed again: each line's app and persistent_id say
which message it is). Without --consumer it starts after the newest message (or at
--from) and remembers nothing. --follow waits for new messages (LISTEN/NOTIFY) until
SIGINT/SIGTERM (exit status 0).

With --sink URL (nats://…, https://…, file:PATH, as for `pullkin listen --sink`) the
lines go to that sink instead, keyed `<identity>:<persistent_id>` as `listen` keys them
(so a destination drops a message that came both ways), and the cursor is committed only
once the sink took the batch. While the sink fails the batch is retried with backoff and
nothing is committed; a message it rejects for good is reported and parked in --park
(without --park it is only reported: it stays in the database, for --from SEQ).";

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
    /// Hand the messages to this sink instead of stdout: `nats://HOST:PORT/SUBJECT`
    /// (`{app}` is the identity's name), `https://…` (a webhook), `file:PATH` or `-`.
    #[arg(long, value_name = "URL")]
    sink: Option<String>,
    /// Where messages the sink rejects for good are parked: a URL as for --sink (default:
    /// nowhere; they are reported and stay in the database).
    #[arg(long, value_name = "URL", requires = "sink")]
    park: Option<String>,
    #[command(flatten)]
    sink_options: SinkOptions,
    #[command(flatten)]
    db: DbArgs,
}

/// Where a batch goes.
enum Output {
    Stdout {
        with_seq: bool,
    },
    Sink {
        sink: Arc<dyn Sink>,
        config: ForwardConfig,
    },
}

impl Output {
    /// Opens the sink, if any (connecting now, before anything is read).
    async fn open(args: &TailArgs) -> Result<Self> {
        let Some(url) = args.sink.as_deref().filter(|url| !is_stdout(url)) else {
            return Ok(Self::Stdout {
                with_seq: args.with_seq,
            });
        };
        let opener = args.sink_options.opener(None)?;
        let sink = opener.open(url).await?;
        let mut config = ForwardConfig::default();
        if let Some(park) = &args.park {
            config.park = Some(opener.open_park(park).await?);
        }
        log::info(None, format_args!("stored messages → {}", sink.name()));
        Ok(Self::Sink { sink, config })
    }

    /// Hands a batch on; once this returns it may be committed.
    async fn hand_on(&self, rows: &[StoredNotification]) -> Result<()> {
        match self {
            Self::Stdout { with_seq } => write_batch(rows, *with_seq),
            Self::Sink { sink, config } => {
                let batch: Vec<SinkMessage> = rows.iter().map(record).collect();
                let outcomes = pullkin::deliver_batch(&**sink, &batch, config, report).await;
                for (row, outcome) in rows.iter().zip(&outcomes) {
                    if let Outcome::Rejected(_) = outcome {
                        let parked = config.park.as_ref().map_or_else(
                            || "not parked (no --park): it stays in the database".to_owned(),
                            |park| format!("parked in {}", park.name()),
                        );
                        log::warn(
                            row.identity.as_deref(),
                            format_args!("message seq {} {parked}", row.seq),
                        );
                    }
                }
                Ok(())
            }
        }
    }
}

/// Reports what `deliver_batch` meets.
fn report(event: SinkEvent) {
    match event {
        // The error names the sink.
        SinkEvent::Failed {
            error,
            failures,
            delay,
            ..
        } => log::warn(
            None,
            format_args!(
                "{error} (failure {failures} of this batch); nothing committed, retrying in \
                 {delay:.1?}",
            ),
        ),
        SinkEvent::Rejected {
            sink,
            app,
            key,
            reason,
            ..
        } => log::warn(
            Some(&app),
            format_args!(
                "sink {sink} rejected {} for good: {reason}",
                key.as_deref()
                    .unwrap_or("a message without a persistent id")
            ),
        ),
        _ => {}
    }
}

/// The record of a stored message for a sink: the app is the identity's name, the key
/// the one `pullkin listen` gives (`<identity>:<persistent_id>`).
fn record(row: &StoredNotification) -> SinkMessage {
    let app = app_name(row);
    let key = row.persistent_id.as_ref().map(|id| format!("{app}:{id}"));
    SinkMessage::new(app, key, row.persistent_id.clone(), line(row))
}

/// The identity's name (or, for an identity removed since, `identity-<id>`).
fn app_name(row: &StoredNotification) -> String {
    row.identity
        .clone()
        .unwrap_or_else(|| format!("identity-{}", row.identity_id))
}

/// Runs `pullkin fleet tail`.
pub(crate) async fn run(args: TailArgs) -> Result<ExitCode> {
    let stop = signal::watch()?;
    let db = args.db.open_checked().await?;
    let output = Output::open(&args).await?;
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
    tokio::pin!(stop);
    if !args.follow {
        while left != Some(0) {
            let step = async {
                let rows = consumer
                    .next_batch(limit(left))
                    .await
                    .map_err(|error| db.error(error, "reading the stored messages"))?;
                let Some(last) = rows.last().map(|row| row.seq) else {
                    return Ok(None);
                };
                output.hand_on(&rows).await?;
                consumer
                    .commit(last)
                    .await
                    .map_err(|error| db.error(error, "committing the cursor"))?;
                Ok::<_, CliError>(Some(rows.len()))
            };
            let taken = tokio::select! {
                signal = &mut stop => {
                    log::info(None, format_args!("{signal}: stopping"));
                    break;
                }
                taken = step => taken?,
            };
            let Some(taken) = taken else {
                break;
            };
            left = left.map(|n| n.saturating_sub(taken as u64));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut follower = consumer
        .follow()
        .await
        .map_err(|error| db.error(error, "listening for new messages"))?;
    while left != Some(0) {
        let step = async {
            let rows = follower
                .next(limit(left))
                .await
                .map_err(|error| db.error(error, "reading the stored messages"))?;
            let Some(last) = rows.last().map(|row| row.seq) else {
                return Ok(0);
            };
            output.hand_on(&rows).await?;
            follower
                .commit(last)
                .await
                .map_err(|error| db.error(error, "committing the cursor"))?;
            Ok::<_, CliError>(rows.len())
        };
        let taken = tokio::select! {
            signal = &mut stop => {
                log::info(None, format_args!("{signal}: stopping"));
                break;
            }
            taken = step => taken?,
        };
        left = left.map(|n| n.saturating_sub(taken as u64));
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
        "app": app_name(row),
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

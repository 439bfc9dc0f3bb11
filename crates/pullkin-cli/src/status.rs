//! What `listen` knows of every app's connection: [`Table`], read from each app's health
//! watch, which always holds the app's latest state. The events that announce changes
//! travel through a bounded channel that drops the oldest when its reader falls behind
//! (thousands of apps connecting at once do that); the table does not depend on them:
//! an event only says which app to look at again, and after a gap every app is looked
//! at. So each app's current state is reported even when events were missed, and never
//! an older state after a newer one.
//!
//! `--status FILE` ([`StatusFile`]) writes the table as one JSON document, replaced
//! atomically (see `pullkin::write_private_file`), for a supervisor to read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use pullkin::{ConnectionState, Health};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log;

/// What was last reported of an app: the state's kind and the number that tells two
/// reports of the same kind apart (the attempt, the failures, the logins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Idle,
    Connecting(u32),
    Connected(u64),
    BackingOff(u32),
    Stopped,
}

impl Seen {
    fn of(health: &Health) -> Self {
        match &health.state {
            ConnectionState::Connecting { attempt } => Self::Connecting(*attempt),
            ConnectionState::Connected { .. } => Self::Connected(health.logins),
            ConnectionState::BackingOff { failures, .. } => Self::BackingOff(*failures),
            ConnectionState::Stopped { .. } => Self::Stopped,
            _ => Self::Idle,
        }
    }
}

struct Row {
    name: Arc<str>,
    health: watch::Receiver<Health>,
    reported: Seen,
}

/// Every app's connection, as its health watch has it, and what was reported of it.
pub(crate) struct Table {
    rows: Vec<Row>,
    index: HashMap<Arc<str>, usize>,
}

/// How many apps are in which state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) total: usize,
    pub(crate) connected: usize,
    /// Logged in once, failed once, or stopped for good: what readiness waits for.
    pub(crate) settled: usize,
    pub(crate) retrying: usize,
    pub(crate) stopped: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} connected", self.connected, self.total)?;
        if self.retrying > 0 {
            write!(f, ", {} retrying", self.retrying)?;
        }
        if self.stopped > 0 {
            write!(f, ", {} stopped", self.stopped)?;
        }
        Ok(())
    }
}

impl Table {
    /// The table of these apps, nothing reported yet.
    pub(crate) fn new(apps: Vec<(String, watch::Receiver<Health>)>) -> Self {
        let mut rows = Vec::with_capacity(apps.len());
        let mut index = HashMap::with_capacity(apps.len());
        for (name, health) in apps {
            let name: Arc<str> = Arc::from(name);
            index.insert(Arc::clone(&name), rows.len());
            rows.push(Row {
                name,
                health,
                reported: Seen::Idle,
            });
        }
        Self { rows, index }
    }

    /// The app changed state: reports its current state, unless that was reported.
    pub(crate) fn changed(&mut self, app: &str) {
        if let Some(&row) = self.index.get(app)
            && let Some(row) = self.rows.get_mut(row)
        {
            Self::report_row(row);
        }
    }

    /// Events were missed: reports the current state of every app whose state moved on
    /// since its last report, then a summary (`1990/2000 connected, 10 retrying`).
    pub(crate) fn catch_up(&mut self, missed: u64) {
        for row in &mut self.rows {
            Self::report_row(row);
        }
        log::warn(
            None,
            format_args!("{missed} events were missed; {}", self.counts()),
        );
    }

    fn report_row(row: &mut Row) {
        // Cloned so that no lock of the watch is held while stderr is written.
        let health = row.health.borrow().clone();
        let seen = Seen::of(&health);
        if seen != row.reported {
            row.reported = seen;
            crate::listen::report_state(&row.name, &health.state);
        }
    }

    /// How many apps are in which state now.
    pub(crate) fn counts(&self) -> Counts {
        let mut counts = Counts {
            total: self.rows.len(),
            ..Counts::default()
        };
        for row in &self.rows {
            let health = row.health.borrow();
            let connected = matches!(health.state, ConnectionState::Connected { .. });
            let for_good = matches!(health.state, ConnectionState::Stopped { error: Some(_) });
            counts.connected += usize::from(connected);
            counts.retrying +=
                usize::from(matches!(health.state, ConnectionState::BackingOff { .. }));
            counts.stopped += usize::from(matches!(health.state, ConnectionState::Stopped { .. }));
            counts.settled +=
                usize::from(connected || health.logins > 0 || health.failures > 0 || for_good);
        }
        counts
    }

    /// The apps and their current states.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&str, Health)> {
        self.rows
            .iter()
            .map(|row| (&*row.name, row.health.borrow().clone()))
    }

    /// The document `--status FILE` holds: the counts and every app's state.
    pub(crate) fn to_json(&self) -> Value {
        let counts = self.counts();
        let apps: serde_json::Map<String, Value> = self
            .states()
            .map(|(name, health)| (name.to_owned(), app_json(&health)))
            .collect();
        json!({
            "format": "pullkin-listen-status/1",
            "pid": std::process::id(),
            "updated_ms": unix_ms(SystemTime::now()),
            "total": counts.total,
            "connected": counts.connected,
            "retrying": counts.retrying,
            "stopped": counts.stopped,
            "apps": apps,
        })
    }
}

fn unix_ms(time: SystemTime) -> Option<u64> {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// One app's entry: `state` (`idle`, `connecting`, `connected`, `retrying`, `stopped`)
/// with what belongs to it, logins, failures and the time of the last frame.
fn app_json(health: &Health) -> Value {
    let mut entry = match &health.state {
        ConnectionState::Connecting { attempt } => {
            json!({"state": "connecting", "attempt": attempt})
        }
        ConnectionState::Connected { since } => {
            json!({"state": "connected", "since_ms": unix_ms(*since)})
        }
        ConnectionState::BackingOff {
            until,
            error,
            failures,
        } => json!({
            "state": "retrying",
            "until_ms": unix_ms(*until),
            "error": error.to_string(),
            "failures_in_a_row": failures,
        }),
        ConnectionState::Stopped { error } => json!({
            "state": "stopped",
            "error": error.as_ref().map(ToString::to_string),
        }),
        _ => json!({"state": "idle"}),
    };
    entry["logins"] = json!(health.logins);
    entry["failures"] = json!(health.failures);
    entry["last_frame_ms"] = json!(health.last_frame_at.and_then(unix_ms));
    entry
}

/// `--status FILE`: the table written whenever it changed (at most every
/// [`StatusFile::EVERY`], one write at a time, on the blocking pool), and at least every
/// [`StatusFile::REFRESH`] so that its `updated_ms` and `last_frame_ms` stay current.
pub(crate) struct StatusFile {
    path: PathBuf,
    dirty: bool,
    last: Option<Instant>,
    writing: Option<JoinHandle<std::io::Result<()>>>,
    /// The last write error reported, so that a lasting one is reported once.
    failing: Option<String>,
}

impl StatusFile {
    /// The shortest time between two writes.
    pub(crate) const EVERY: Duration = Duration::from_millis(100);
    /// The longest time between two writes.
    pub(crate) const REFRESH: Duration = Duration::from_secs(10);

    /// A status file at `path`, written first at the next [`StatusFile::tick`].
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            dirty: true,
            last: None,
            writing: None,
            failing: None,
        }
    }

    /// Something changed: write at the next tick.
    pub(crate) fn mark(&mut self) {
        self.dirty = true;
    }

    /// Starts a write if one is due and none is running.
    pub(crate) fn tick(&mut self, table: &Table) {
        if let Some(writing) = &self.writing {
            if !writing.is_finished() {
                return;
            }
            if let Some(done) = self.writing.take().and_then(FutureExt::now_or_never) {
                self.outcome(done.unwrap_or_else(|e| Err(std::io::Error::other(e))));
            }
        }
        let due = match self.last {
            None => true,
            Some(last) => {
                (self.dirty && last.elapsed() >= Self::EVERY) || last.elapsed() >= Self::REFRESH
            }
        };
        if !due {
            return;
        }
        self.dirty = false;
        self.last = Some(Instant::now());
        let bytes = document(table);
        let path = self.path.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            pullkin::write_private_file(&path, &bytes)
        }));
    }

    /// Writes the table now, after any write still running (at the end: every app
    /// stopped).
    pub(crate) async fn flush(&mut self, table: &Table) {
        if let Some(writing) = self.writing.take() {
            let done = writing
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            self.outcome(done);
        }
        let bytes = document(table);
        let path = self.path.clone();
        let done = tokio::task::spawn_blocking(move || pullkin::write_private_file(&path, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.outcome(done);
    }

    fn outcome(&mut self, done: std::io::Result<()>) {
        match done {
            Ok(()) => self.failing = None,
            Err(error) => {
                let error = error.to_string();
                if self.failing.as_deref() != Some(error.as_str()) {
                    log::warn(
                        None,
                        format_args!(
                            "cannot write the status file {}: {error}",
                            self.path.display()
                        ),
                    );
                    self.failing = Some(error);
                }
            }
        }
    }
}

fn document(table: &Table) -> Vec<u8> {
    let mut bytes = table.to_json().to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_a_summary() {
        let counts = Counts {
            total: 2000,
            connected: 1990,
            settled: 2000,
            retrying: 10,
            stopped: 0,
        };
        assert_eq!(counts.to_string(), "1990/2000 connected, 10 retrying");
        let all = Counts {
            total: 3,
            connected: 3,
            settled: 3,
            ..Counts::default()
        };
        assert_eq!(all.to_string(), "3/3 connected");
    }

    #[test]
    fn the_document_has_every_app_and_its_state() {
        let (connected_tx, connected) = watch::channel(Health::default());
        connected_tx.send_modify(|h| {
            h.state = ConnectionState::Connected {
                since: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            };
            h.logins = 1;
        });
        let (_idle_tx, idle) = watch::channel(Health::default());
        let table = Table::new(vec![("a".into(), connected), ("b".into(), idle)]);
        let doc = table.to_json();
        assert_eq!(doc["total"], 2);
        assert_eq!(doc["connected"], 1);
        assert_eq!(doc["apps"]["a"]["state"], "connected");
        assert_eq!(doc["apps"]["a"]["since_ms"], 1000);
        assert_eq!(doc["apps"]["a"]["logins"], 1);
        assert_eq!(doc["apps"]["b"]["state"], "idle");
        let counts = table.counts();
        assert_eq!((counts.connected, counts.settled), (1, 1));
    }
}

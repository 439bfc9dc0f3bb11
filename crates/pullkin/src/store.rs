//! What must survive a restart: each app's credentials and its acknowledgement state.
//!
//! [`Store`] is the interface the listener writes through; it is async, so that a store
//! on a database or over the network implements it directly. [`DirStore`], the default,
//! keeps JSON files per app and kind in a directory and does its blocking file work on
//! tokio's blocking pool. Files are created with mode 0600. A file that is not valid JSON
//! of the expected kind is an error ([`StoreError::Corrupt`] or [`StoreError::Foreign`]):
//! silently starting over would deliver every message again.
//!
//! Credentials, and the snapshots of the acknowledgement state, are written to a
//! temporary file that is flushed to disk and then renamed over the old one (and the
//! directory is synced), so a crash at any point leaves either the old or the new file
//! readable, never a torn one ([`write_private_file`], which the command line uses for
//! credential files too).
//!
//! The acknowledgement state changes a little with every write (ids come in at the end,
//! confirmed ones leave), while a server slow to confirm lets it hold a hundred thousand
//! ids; so a write costs what changed, not what is stored. `<app>.acks.json` is a
//! snapshot, tagged with a random generation; `<app>.acks.log` holds one line per write
//! since, with the ids that left and the ids that came (each line appended and synced
//! before the write counts as done). A load reads the snapshot and replays the lines of
//! its generation. Once the lines outweigh the snapshot (and 64 KiB), the next write is a
//! new snapshot of a new generation, after which the log is emptied: a crash between the
//! two leaves lines of the old generation, which are skipped. A last line without its
//! newline is a write that never finished (it was never reported as stored) and is
//! skipped too; the write after such a load is a snapshot, so that nothing is appended
//! behind it. So every write is atomic, and a load after a crash returns the state of
//! the last write that finished or of the one before it.
//!
//! Each unconfirmed id is stored with its arrival time ([`UnconfirmedId::received`], in
//! Unix milliseconds: `received_ms` in the snapshot, parallel to `unconfirmed`, and `t+`
//! in a line, parallel to its `u+`), so that its age survives a restart
//! (docs/protocol.md §7.3). The formats before (`pullkin-acks/1`, a snapshot without a
//! log, and `pullkin-acks/2`, whose snapshot and lines hold no times) are still read: an
//! id without a time gets the time of the load, and the next write replaces the snapshot
//! with one of the current format. A time that is not a whole number of milliseconds
//! from 1970 to the end of 9999, or a list of times that does not match its ids, is
//! [`StoreError::Corrupt`]. Times are kept to the millisecond; one outside that range is
//! written as its nearest end.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize, Serializer, de::DeserializeOwned};

use crate::registration::AppCredentials;
use crate::session::{AckState, UnconfirmedId};

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but is not valid JSON of its kind.
    #[error("store file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file exists but was written by something else (or a newer version).
    #[error("store file {path} is not a pullkin {expected} file (found format {found:?})")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The kind of file expected.
        expected: &'static str,
        /// The format tag found, if any.
        found: Option<String>,
    },
    /// The app key cannot name a file.
    #[error("app key {0:?} is empty or too long to name a store file")]
    BadKey(String),
    /// Stored credentials do not parse.
    #[error("the stored credentials of app {app:?} are unusable: {source}")]
    Credentials {
        /// The app.
        app: String,
        /// Why.
        #[source]
        source: crate::registration::CredentialsError,
    },
    /// The store's own backend failed (a database, a network store).
    #[error("store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The blocking task doing the store's work did not finish (it panicked).
    #[error("the store task failed: {0}")]
    Task(String),
}

/// What a [`Store`] method returns: a future that is `Send`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Durable state per app. Implementations must make each save atomic: after a crash, a
/// load returns either the previous or the new value. The listener calls it from its
/// tasks and never holds a lock across a call; a slow store slows only the app it
/// stores for (messages go on flowing, their acknowledgements wait for the write).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The stored acknowledgement state of an app (empty when none was stored).
    fn load_ack_state<'a>(&'a self, app: &'a str) -> StoreFuture<'a, AckState>;
    /// Replaces the acknowledgement state of an app.
    fn save_ack_state<'a>(&'a self, app: &'a str, state: AckState) -> StoreFuture<'a, ()>;
    /// The stored credentials of an app (none when none were stored).
    fn load_credentials<'a>(&'a self, app: &'a str) -> StoreFuture<'a, Option<AppCredentials>>;
    /// Replaces the stored credentials of an app.
    fn save_credentials<'a>(
        &'a self,
        app: &'a str,
        credentials: &'a AppCredentials,
    ) -> StoreFuture<'a, ()>;
}

/// A [`Store`] in a directory of JSON files: `<app>.acks.json` with `<app>.acks.log`
/// (see the module docs), and `<app>.credentials.json`.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
    /// What each app's files hold, as of its last load or write: the base of the next
    /// write's difference.
    acks: Arc<Mutex<HashMap<String, Arc<Mutex<AckFiles>>>>>,
}

/// The snapshot format written, with arrival times; [`ACKS_FORMAT_V2`] (a snapshot and
/// a log without times) and [`ACKS_FORMAT_V1`] (a snapshot without a log) are read too.
const ACKS_FORMAT: &str = "pullkin-acks/3";
const ACKS_FORMAT_V2: &str = "pullkin-acks/2";
const ACKS_FORMAT_V1: &str = "pullkin-acks/1";
const CREDENTIALS_FORMAT: &str = "pullkin-credentials/1";
/// The log is folded into a new snapshot once it is larger than the snapshot and this.
const LOG_FOLD_MIN: u64 = 64 * 1024;

/// `<app>.acks.json` as read (its `format` is checked before).
#[derive(Deserialize)]
struct AckFile {
    format: String,
    /// Absent in `pullkin-acks/1`, which has no log.
    #[serde(default)]
    generation: Option<u64>,
    #[serde(default)]
    unconfirmed: Vec<Arc<str>>,
    /// The arrival time of each unconfirmed id, Unix milliseconds; from
    /// `pullkin-acks/3` on.
    #[serde(default)]
    received_ms: Option<Vec<u64>>,
    #[serde(default)]
    recent: Vec<Arc<str>>,
}

/// [`AckFile`] as written: borrowed, so a write copies no id.
#[derive(Serialize)]
struct AckFileRef<'a> {
    format: &'a str,
    generation: u64,
    unconfirmed: Ids<'a>,
    received_ms: Millis<'a>,
    recent: &'a [Arc<str>],
}

/// The ids of unconfirmed ids, serialized as a list.
struct Ids<'a>(&'a [UnconfirmedId]);

impl Serialize for Ids<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|u| &*u.id))
    }
}

/// The arrival times of unconfirmed ids, serialized as a list of Unix milliseconds.
struct Millis<'a>(&'a [UnconfirmedId]);

impl Serialize for Millis<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(UnconfirmedId::received_unix_ms))
    }
}

/// The ids of a list read back, with their arrival times (`None`: the format kept none,
/// they arrived at `loaded_at` as far as anyone knows).
fn dated(
    ids: Vec<Arc<str>>,
    times: Option<Vec<u64>>,
    loaded_at: SystemTime,
    path: &Path,
) -> Result<Vec<UnconfirmedId>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let Some(times) = times else {
        return Ok(ids
            .into_iter()
            .map(|id| UnconfirmedId::new(id, loaded_at))
            .collect());
    };
    if times.len() != ids.len() {
        return Err(corrupt(format!(
            "{} arrival times for {} unconfirmed ids",
            times.len(),
            ids.len()
        )));
    }
    ids.into_iter()
        .zip(times)
        .map(|(id, ms)| {
            UnconfirmedId::from_unix_ms(id, ms)
                .ok_or_else(|| corrupt(format!("the arrival time {ms} ms is out of range")))
        })
        .collect()
}

/// One line of `<app>.acks.log`: the generation of the snapshot it follows, and the ids
/// that left (`-`) and came (`+`, in order, after the others) of each list, with the
/// arrival times of the unconfirmed ids that came (`t+`, Unix milliseconds; absent in
/// the lines of a `pullkin-acks/2` snapshot).
#[derive(Serialize, Deserialize, Default)]
struct AckDelta<S> {
    #[serde(rename = "g")]
    generation: u64,
    #[serde(rename = "u-", default, skip_serializing_if = "Vec::is_empty")]
    unconfirmed_left: Vec<S>,
    #[serde(rename = "u+", default, skip_serializing_if = "Vec::is_empty")]
    unconfirmed_came: Vec<S>,
    #[serde(rename = "t+", default, skip_serializing_if = "Option::is_none")]
    unconfirmed_received: Option<Vec<u64>>,
    #[serde(rename = "r-", default, skip_serializing_if = "Vec::is_empty")]
    recent_left: Vec<S>,
    #[serde(rename = "r+", default, skip_serializing_if = "Vec::is_empty")]
    recent_came: Vec<S>,
}

/// What an app's acknowledgement files hold.
#[derive(Default)]
struct AckFiles {
    /// `None`: not known (never loaded or written here, or a write failed midway); the
    /// next write is a snapshot.
    state: Option<AckState>,
    generation: u64,
    snapshot_bytes: u64,
    log_bytes: u64,
}

impl std::fmt::Debug for AckFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckFiles")
            .field("known", &self.state.is_some())
            .field("generation", &self.generation)
            .field("snapshot_bytes", &self.snapshot_bytes)
            .field("log_bytes", &self.log_bytes)
            .finish()
    }
}

/// An entry of a stored list: an id (recent ids) or an id with its time (unconfirmed).
trait Listed {
    /// The id.
    fn key(&self) -> &str;
    /// Whether the two entries are the same, id and time.
    fn same(&self, other: &Self) -> bool;
}

impl Listed for Arc<str> {
    fn key(&self) -> &str {
        self
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other) || self == other
    }
}

impl Listed for UnconfirmedId {
    fn key(&self) -> &str {
        &self.id
    }

    fn same(&self, other: &Self) -> bool {
        self.received == other.received && self.id.same(&other.id)
    }
}

/// How `new` differs from `old`: the ids of `old` that are not kept, and the tail of
/// `new` that follows the kept ones. Removing the first from `old` and appending the
/// second gives `new` exactly, whatever the two lists are; the difference is as small
/// as what changed when, as in an acknowledgement state, ids come in at the end and
/// leave from anywhere (an id whose time changed leaves and comes again). Ids are
/// compared by pointer first: the session hands back the same shared strings from write
/// to write.
fn difference<'a, T: Listed>(old: &'a [T], new: &'a [T]) -> (Vec<&'a str>, &'a [T]) {
    let (mut i, mut j) = (0, 0);
    let mut left = Vec::new();
    while let (Some(a), Some(b)) = (old.get(i), new.get(j)) {
        if a.same(b) {
            j += 1;
        } else {
            left.push(a.key());
        }
        i += 1;
    }
    left.extend(old.get(i..).unwrap_or_default().iter().map(Listed::key));
    (left, new.get(j..).unwrap_or_default())
}

/// Applies one list's part of a log line.
fn replay<T: Listed>(list: &mut Vec<T>, left: &[String], came: impl IntoIterator<Item = T>) {
    if !left.is_empty() {
        let left: HashSet<&str> = left.iter().map(String::as_str).collect();
        list.retain(|entry| !left.contains(entry.key()));
    }
    list.extend(came);
}

#[derive(Deserialize)]
struct CredentialsFile {
    credentials: serde_json::Value,
}

/// [`CredentialsFile`] as written.
#[derive(Serialize)]
struct CredentialsFileRef<'a> {
    format: &'a str,
    credentials: &'a AppCredentials,
}

impl DirStore {
    /// A store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_dir(dir.into())
    }

    fn open_dir(dir: PathBuf) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.create(&dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(Self {
            dir,
            acks: Arc::default(),
        })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, app: &str, kind: &str) -> Result<PathBuf, StoreError> {
        if app.is_empty() || app.len() > 128 {
            return Err(StoreError::BadKey(app.to_owned()));
        }
        // Keep safe characters; encode everything else so no key can escape the directory.
        let mut name = String::with_capacity(app.len());
        for byte in app.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                name.push(char::from(byte));
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        Ok(self.dir.join(format!("{name}.{kind}.json")))
    }

    /// The snapshot and the log of an app's acknowledgement state.
    fn ack_paths(&self, app: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        let snapshot = self.path(app, "acks")?;
        let log = snapshot.with_extension("log");
        Ok((snapshot, log))
    }

    /// The files of an app's acknowledgement state, as known to this store.
    fn ack_files(&self, app: &str) -> Arc<Mutex<AckFiles>> {
        Arc::clone(locked(&self.acks).entry(app.to_owned()).or_default())
    }

    fn read<T: DeserializeOwned>(
        path: &Path,
        expected: &'static str,
        format: &str,
    ) -> Result<Option<T>, StoreError> {
        Self::read_any(path, expected, &[format])
    }

    fn read_any<T: DeserializeOwned>(
        path: &Path,
        expected: &'static str,
        formats: &[&str],
    ) -> Result<Option<T>, StoreError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let found = value.get("format").and_then(|f| f.as_str());
        if !found.is_some_and(|found| formats.contains(&found)) {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                expected,
                found: found.map(str::to_owned),
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Reads an app's snapshot and replays its log: the state, and what the files hold
    /// (with no state known when the next write must be a snapshot). Ids stored without
    /// a time (older formats) get `loaded_at`.
    fn load_acks(
        snapshot: &Path,
        log: &Path,
        loaded_at: SystemTime,
    ) -> Result<(AckState, AckFiles), StoreError> {
        let formats = [ACKS_FORMAT, ACKS_FORMAT_V2, ACKS_FORMAT_V1];
        let Some(file) = Self::read_any::<AckFile>(snapshot, "acknowledgement state", &formats)?
        else {
            // Nothing was stored: a log without a snapshot is from no write that finished
            // (the first write is a snapshot).
            return Ok((AckState::default(), AckFiles::default()));
        };
        let snapshot_bytes = fs::metadata(snapshot).map_or(0, |m| m.len());
        // Lines after a snapshot with times carry times too.
        let timed = file.format == ACKS_FORMAT;
        if timed && file.received_ms.is_none() {
            return Err(StoreError::Corrupt {
                path: snapshot.to_owned(),
                reason: "the arrival times of the unconfirmed ids are missing".to_owned(),
            });
        }
        let mut state = AckState {
            unconfirmed: dated(file.unconfirmed, file.received_ms, loaded_at, snapshot)?,
            recent: file.recent,
        };
        let Some(generation) = file.generation else {
            // `pullkin-acks/1`: no log; the next write makes a snapshot of this format.
            return Ok((state, AckFiles::default()));
        };
        // The next write of an older format is a snapshot of the current one, so that no
        // line with times follows a snapshot without.
        let known = timed;
        let bytes = match fs::read(log) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: log.to_owned(),
                    source,
                });
            }
        };
        let mut rest = bytes.as_slice();
        let mut torn = false;
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                // A write that never finished.
                torn = true;
                break;
            };
            let (line, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            let delta: AckDelta<String> =
                serde_json::from_slice(line).map_err(|e| StoreError::Corrupt {
                    path: log.to_owned(),
                    reason: e.to_string(),
                })?;
            if delta.generation != generation {
                // Written before the snapshot that replaced them.
                continue;
            }
            if timed && delta.unconfirmed_received.is_none() && !delta.unconfirmed_came.is_empty() {
                return Err(StoreError::Corrupt {
                    path: log.to_owned(),
                    reason: "a line without the arrival times of its ids".to_owned(),
                });
            }
            let came = delta.unconfirmed_came.into_iter().map(Arc::from).collect();
            let came = dated(came, delta.unconfirmed_received, loaded_at, log)?;
            replay(&mut state.unconfirmed, &delta.unconfirmed_left, came);
            replay(
                &mut state.recent,
                &delta.recent_left,
                delta.recent_came.into_iter().map(Arc::from),
            );
        }
        let files = AckFiles {
            // After a torn line nothing may be appended: the next write is a snapshot.
            state: (!torn && known).then(|| state.clone()),
            generation,
            snapshot_bytes,
            log_bytes: bytes.len() as u64,
        };
        Ok((state, files))
    }

    /// Stores `state` for an app: a line of what changed since the last write, or a new
    /// snapshot when the log has grown past it (or nothing is known of the files).
    fn save_acks(
        files: &mut AckFiles,
        snapshot: &Path,
        log: &Path,
        state: AckState,
    ) -> Result<(), StoreError> {
        let fold = files.log_bytes > files.snapshot_bytes.max(LOG_FOLD_MIN);
        if let (Some(old), false) = (&files.state, fold) {
            let (unconfirmed_left, unconfirmed_came) =
                difference(&old.unconfirmed, &state.unconfirmed);
            let (recent_left, recent_came) = difference(&old.recent, &state.recent);
            if unconfirmed_left.is_empty()
                && unconfirmed_came.is_empty()
                && recent_left.is_empty()
                && recent_came.is_empty()
            {
                files.state = Some(state);
                return Ok(());
            }
            let delta = AckDelta {
                generation: files.generation,
                unconfirmed_left,
                unconfirmed_came: unconfirmed_came.iter().map(|u| &*u.id).collect(),
                unconfirmed_received: (!unconfirmed_came.is_empty()).then(|| {
                    unconfirmed_came
                        .iter()
                        .map(UnconfirmedId::received_unix_ms)
                        .collect()
                }),
                recent_left,
                recent_came: recent_came.iter().map(|id| &**id).collect(),
            };
            let mut line = serde_json::to_vec(&delta).map_err(|e| StoreError::Corrupt {
                path: log.to_owned(),
                reason: e.to_string(),
            })?;
            line.push(b'\n');
            // Unknown until the append finished: a failed one may have left part of it.
            files.state = None;
            append_synced(log, &line).map_err(|source| StoreError::Io {
                path: log.to_owned(),
                source,
            })?;
            files.log_bytes += line.len() as u64;
            files.state = Some(state);
            return Ok(());
        }
        // A new snapshot, then the log emptied (its lines are of the old generation).
        let generation = loop {
            let generation = rand::random::<u64>();
            if generation != files.generation {
                break generation;
            }
        };
        let json = serde_json::to_vec(&AckFileRef {
            format: ACKS_FORMAT,
            generation,
            unconfirmed: Ids(&state.unconfirmed),
            received_ms: Millis(&state.unconfirmed),
            recent: &state.recent,
        })
        .map_err(|e| StoreError::Corrupt {
            path: snapshot.to_owned(),
            reason: e.to_string(),
        })?;
        files.state = None;
        write_private_file(snapshot, &json).map_err(|source| StoreError::Io {
            path: snapshot.to_owned(),
            source,
        })?;
        files.generation = generation;
        files.snapshot_bytes = json.len() as u64;
        match fs::OpenOptions::new().write(true).truncate(true).open(log) {
            Ok(file) => file.sync_all().map_err(|source| StoreError::Io {
                path: log.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path: log.to_owned(),
                    source,
                });
            }
        }
        files.log_bytes = 0;
        files.state = Some(state);
        Ok(())
    }
}

/// Appends `bytes` to `path` (created with mode 0600, and the directory synced then) and
/// syncs the data before returning.
fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let existed = path.exists();
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    if !existed
        && let Some(dir) = path.parent()
        && let Ok(dir) = File::open(dir)
    {
        dir.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, created with mode 0600: into a temporary file
/// beside it (`.<name>.tmp<pid>`), flushed to disk, renamed over `path`, and the
/// directory synced so that the rename is durable too. After a crash at any point,
/// `path` holds the old content or the new, never a torn mix; on an error the temporary
/// file is removed.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Make the rename durable too; not every platform can open a directory.
        if let Ok(dir) = File::open(&dir) {
            dir.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Runs a store's blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

impl Store for DirStore {
    fn load_ack_state<'a>(&'a self, app: &'a str) -> StoreFuture<'a, AckState> {
        let paths = self.ack_paths(app);
        Box::pin(async move {
            let (snapshot, log) = paths?;
            let files = self.ack_files(app);
            blocking(move || {
                let mut files = locked(&files);
                let (state, loaded) = Self::load_acks(&snapshot, &log, SystemTime::now())?;
                *files = loaded;
                Ok(state)
            })
            .await
        })
    }

    fn save_ack_state<'a>(&'a self, app: &'a str, state: AckState) -> StoreFuture<'a, ()> {
        let paths = self.ack_paths(app);
        Box::pin(async move {
            let (snapshot, log) = paths?;
            let files = self.ack_files(app);
            blocking(move || Self::save_acks(&mut locked(&files), &snapshot, &log, state)).await
        })
    }

    fn load_credentials<'a>(&'a self, app: &'a str) -> StoreFuture<'a, Option<AppCredentials>> {
        let path = self.path(app, "credentials");
        Box::pin(async move {
            let path = path?;
            let file = blocking(move || {
                Self::read::<CredentialsFile>(&path, "credentials", CREDENTIALS_FORMAT)
            })
            .await?;
            file.map(|file| {
                AppCredentials::from_value(file.credentials).map_err(|source| {
                    StoreError::Credentials {
                        app: app.to_owned(),
                        source,
                    }
                })
            })
            .transpose()
        })
    }

    fn save_credentials<'a>(
        &'a self,
        app: &'a str,
        credentials: &'a AppCredentials,
    ) -> StoreFuture<'a, ()> {
        let path = self.path(app, "credentials");
        Box::pin(async move {
            let path = path?;
            let json = serde_json::to_vec_pretty(&CredentialsFileRef {
                format: CREDENTIALS_FORMAT,
                credentials,
            })
            .map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            blocking(move || {
                write_private_file(&path, &json).map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })
            })
            .await
        })
    }
}

/// A [`Store`] in memory, for tests and for applications that keep state elsewhere.
#[derive(Debug, Default)]
pub struct MemoryStore {
    acks: std::sync::Mutex<std::collections::HashMap<String, AckState>>,
    credentials: std::sync::Mutex<std::collections::HashMap<String, AppCredentials>>,
}

fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock still holds consistent data: every critical section is one call.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store for MemoryStore {
    fn load_ack_state<'a>(&'a self, app: &'a str) -> StoreFuture<'a, AckState> {
        let state = locked(&self.acks).get(app).cloned().unwrap_or_default();
        Box::pin(std::future::ready(Ok(state)))
    }

    fn save_ack_state<'a>(&'a self, app: &'a str, state: AckState) -> StoreFuture<'a, ()> {
        locked(&self.acks).insert(app.to_owned(), state);
        Box::pin(std::future::ready(Ok(())))
    }

    fn load_credentials<'a>(&'a self, app: &'a str) -> StoreFuture<'a, Option<AppCredentials>> {
        let credentials = locked(&self.credentials).get(app).cloned();
        Box::pin(std::future::ready(Ok(credentials)))
    }

    fn save_credentials<'a>(
        &'a self,
        app: &'a str,
        credentials: &'a AppCredentials,
    ) -> StoreFuture<'a, ()> {
        locked(&self.credentials).insert(app.to_owned(), credentials.clone());
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn ids(range: std::ops::Range<usize>) -> Vec<Arc<str>> {
        range
            .map(|i| Arc::from(format!("0:{i:08}%7031b2e6")))
            .collect()
    }

    /// When id `i` of [`unconfirmed`] arrived: a second apart, in November 2023.
    fn arrival(i: usize) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 1_000 * i as u64)
    }

    /// The ids of `range`, each arrived at its [`arrival`].
    fn unconfirmed(range: std::ops::Range<usize>) -> Vec<UnconfirmedId> {
        let start = range.start;
        ids(range)
            .into_iter()
            .enumerate()
            .map(|(i, id)| UnconfirmedId::new(id, arrival(start + i)))
            .collect()
    }

    fn state(unconfirmed: Vec<UnconfirmedId>, recent: Vec<Arc<str>>) -> AckState {
        AckState {
            unconfirmed,
            recent,
        }
    }

    /// The ids of a list, as text.
    fn keys(list: &[UnconfirmedId]) -> Vec<&str> {
        list.iter().map(|u| &*u.id).collect()
    }

    fn len(path: &Path) -> u64 {
        fs::metadata(path).map_or(0, |m| m.len())
    }

    #[test]
    fn the_difference_replays_to_the_new_list_whatever_the_lists() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&[], &["a", "b"]),
            (&["a", "b"], &[]),
            (&["a", "b", "c"], &["b", "c", "d"]),
            (&["a", "b", "c"], &["c", "b", "a"]),
            (&["a", "b", "c"], &["a", "x", "c"]),
            (&["a", "b"], &["a", "b"]),
            (&["a", "b", "c", "d"], &["b", "d", "e"]),
        ];
        for (old, new) in cases {
            let old: Vec<Arc<str>> = old.iter().map(|s| Arc::from(*s)).collect();
            let new: Vec<Arc<str>> = new.iter().map(|s| Arc::from(*s)).collect();
            let (left, came) = difference(&old, &new);
            let mut replayed = old.clone();
            replay(
                &mut replayed,
                &left.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                came.iter().cloned(),
            );
            assert_eq!(replayed, new, "{old:?} -> {new:?}");
        }
        // Ids in at the end, out at the front: exactly what changed.
        let old = unconfirmed(0..1000);
        let mut new = old[10..].to_vec();
        new.extend(unconfirmed(1000..1010));
        let (left, came) = difference(&old, &new);
        assert_eq!(left.len(), 10);
        assert_eq!(came.len(), 10);
        // An id whose time changed leaves and comes again, with its new time.
        let mut retimed = old.clone();
        retimed[999].received = arrival(5_000);
        let (left, came) = difference(&old, &retimed);
        assert_eq!(left, [&*old[999].id]);
        assert_eq!(came, &retimed[999..]);
        let mut replayed = old.clone();
        replay(
            &mut replayed,
            &left.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            came.iter().cloned(),
        );
        assert_eq!(replayed, retimed);
    }

    #[tokio::test]
    async fn a_write_costs_what_changed_and_a_restart_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let snapshot = dir.path().join("app.acks.json");
        let log = dir.path().join("app.acks.log");
        assert_eq!(
            store.load_ack_state("app").await.unwrap(),
            AckState::default()
        );
        // The first write is a snapshot: 100 000 unconfirmed ids.
        let mut current = state(unconfirmed(0..100_000), ids(200_000..200_100));
        store.save_ack_state("app", current.clone()).await.unwrap();
        let snapshot_bytes = len(&snapshot);
        assert!(snapshot_bytes > 2_000_000, "{snapshot_bytes}");
        assert_eq!(len(&log), 0);
        // Then each write appends one line of what changed: 10 confirmed, 10 new.
        for round in 0..20 {
            let before = len(&log);
            current.unconfirmed.drain(..10);
            let start = 100_000 + round * 10;
            current.unconfirmed.extend(unconfirmed(start..start + 10));
            current.recent.push(Arc::from(format!("0:recent{round}")));
            store.save_ack_state("app", current.clone()).await.unwrap();
            let line = len(&log) - before;
            assert!(line < 1_200, "a line of {line} bytes for 21 changed ids");
            assert_eq!(len(&snapshot), snapshot_bytes, "the snapshot is left alone");
        }
        // Nothing changed: nothing written.
        let before = len(&log);
        store.save_ack_state("app", current.clone()).await.unwrap();
        assert_eq!(len(&log), before);
        // A restart reads the snapshot and replays the log.
        let again = DirStore::open(dir.path()).unwrap();
        assert_eq!(again.load_ack_state("app").await.unwrap(), current);
        // And goes on appending after its load.
        current.unconfirmed.drain(..5);
        again.save_ack_state("app", current.clone()).await.unwrap();
        assert_eq!(len(&snapshot), snapshot_bytes);
        let third = DirStore::open(dir.path()).unwrap();
        assert_eq!(third.load_ack_state("app").await.unwrap(), current);
    }

    #[tokio::test]
    async fn the_log_is_folded_into_a_snapshot_once_it_outweighs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let log = dir.path().join("app.acks.log");
        let mut current = state(unconfirmed(0..10), Vec::new());
        store.save_ack_state("app", current.clone()).await.unwrap();
        let mut folded = false;
        let mut largest = 0;
        for round in 0..2_000 {
            current.unconfirmed.drain(..5);
            let start = 10 + round * 5;
            current.unconfirmed.extend(unconfirmed(start..start + 5));
            let before = len(&log);
            store.save_ack_state("app", current.clone()).await.unwrap();
            largest = largest.max(len(&log));
            folded |= len(&log) < before;
        }
        assert!(folded, "the log was emptied at some point");
        assert!(
            largest <= LOG_FOLD_MIN + 1_000,
            "the log stays bounded: {largest}"
        );
        let again = DirStore::open(dir.path()).unwrap();
        assert_eq!(again.load_ack_state("app").await.unwrap(), current);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped_and_the_next_write_is_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let log = dir.path().join("app.acks.log");
        let first = state(unconfirmed(0..3), Vec::new());
        store.save_ack_state("app", first.clone()).await.unwrap();
        let second = state(unconfirmed(1..4), Vec::new());
        store.save_ack_state("app", second.clone()).await.unwrap();
        // A crash in the middle of the third write's append.
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(br#"{"g":1,"u-":["0:000"#).unwrap();
        drop(file);
        let again = DirStore::open(dir.path()).unwrap();
        assert_eq!(again.load_ack_state("app").await.unwrap(), second);
        // Nothing is appended behind the torn line: a new snapshot, the log emptied.
        let third = state(unconfirmed(2..6), Vec::new());
        again.save_ack_state("app", third.clone()).await.unwrap();
        assert_eq!(len(&log), 0);
        let fourth = state(unconfirmed(3..7), Vec::new());
        again.save_ack_state("app", fourth.clone()).await.unwrap();
        let reread = DirStore::open(dir.path()).unwrap();
        assert_eq!(reread.load_ack_state("app").await.unwrap(), fourth);
    }

    #[tokio::test]
    async fn lines_of_a_replaced_snapshot_are_skipped_and_a_bad_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let log = dir.path().join("app.acks.log");
        store
            .save_ack_state("app", state(unconfirmed(0..3), Vec::new()))
            .await
            .unwrap();
        store
            .save_ack_state("app", state(unconfirmed(1..3), Vec::new()))
            .await
            .unwrap();
        let old_lines = fs::read(&log).unwrap();
        assert!(!old_lines.is_empty());
        // A crash after a new snapshot was renamed into place, before the log was
        // emptied: the lines of the old generation are still there.
        let fresh = DirStore::open(dir.path()).unwrap();
        let current = state(unconfirmed(5..8), Vec::new());
        fresh.save_ack_state("app", current.clone()).await.unwrap();
        fs::write(&log, &old_lines).unwrap();
        let again = DirStore::open(dir.path()).unwrap();
        assert_eq!(again.load_ack_state("app").await.unwrap(), current);
        // A whole line that is not a record: corrupt, not a fresh start.
        fs::write(&log, b"not json\n").unwrap();
        let err = again.load_ack_state("app").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("app.acks.log"), "{err}");
    }

    #[tokio::test]
    async fn a_snapshot_of_the_first_format_is_read_with_the_load_time_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("app.acks.json");
        let log = dir.path().join("app.acks.log");
        fs::write(
            &snapshot,
            br#"{"format": "pullkin-acks/1", "unconfirmed": ["0:a"], "recent": ["0:r"]}"#,
        )
        .unwrap();
        // No time stored: the id arrived when it was loaded, as far as anyone knows.
        let (loaded, _) = DirStore::load_acks(&snapshot, &log, arrival(7)).unwrap();
        assert_eq!(
            loaded,
            state(
                vec![UnconfirmedId::new("0:a", arrival(7))],
                vec!["0:r".into()]
            )
        );
        let store = DirStore::open(dir.path()).unwrap();
        let before = SystemTime::now();
        let loaded = store.load_ack_state("app").await.unwrap();
        let after = SystemTime::now();
        assert_eq!(keys(&loaded.unconfirmed), ["0:a"]);
        let received = loaded.unconfirmed[0].received;
        assert!(before <= received && received <= after, "{received:?}");
        let mut next = loaded.clone();
        next.unconfirmed.push(UnconfirmedId::new("0:b", arrival(8)));
        store.save_ack_state("app", next.clone()).await.unwrap();
        let text = fs::read_to_string(&snapshot).unwrap();
        assert!(text.contains(ACKS_FORMAT), "{text}");
        let again = DirStore::open(dir.path()).unwrap();
        let reread = again.load_ack_state("app").await.unwrap();
        // Kept to the millisecond.
        assert_eq!(keys(&reread.unconfirmed), ["0:a", "0:b"]);
        assert_eq!(
            reread.unconfirmed[0].received,
            UNIX_EPOCH + Duration::from_millis(UnconfirmedId::new("", received).received_unix_ms())
        );
        assert_eq!(reread.unconfirmed[1].received, arrival(8));
        assert_eq!(reread.recent, next.recent);
    }

    #[tokio::test]
    async fn a_snapshot_and_log_of_the_second_format_are_read_and_the_next_write_is_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("app.acks.json");
        let log = dir.path().join("app.acks.log");
        fs::write(
            &snapshot,
            br#"{"format":"pullkin-acks/2","generation":7,"unconfirmed":["0:a","0:b"],"recent":["0:r"]}"#,
        )
        .unwrap();
        fs::write(
            &log,
            concat!(
                r#"{"g":7,"u-":["0:a"],"u+":["0:c"]}"#,
                "\n",
                r#"{"g":6,"u+":["0:old"]}"#,
                "\n",
                r#"{"g":7,"r+":["0:s"]}"#,
                "\n"
            ),
        )
        .unwrap();
        let (loaded, files) = DirStore::load_acks(&snapshot, &log, arrival(3)).unwrap();
        assert_eq!(
            loaded,
            state(
                vec![
                    UnconfirmedId::new("0:b", arrival(3)),
                    UnconfirmedId::new("0:c", arrival(3)),
                ],
                vec!["0:r".into(), "0:s".into()]
            )
        );
        assert!(files.state.is_none(), "the next write is a snapshot");
        // Through the store: the next write replaces both files with a snapshot with
        // times, which a restart reads back exactly.
        let store = DirStore::open(dir.path()).unwrap();
        let mut current = store.load_ack_state("app").await.unwrap();
        assert_eq!(keys(&current.unconfirmed), ["0:b", "0:c"]);
        current.unconfirmed = vec![
            UnconfirmedId::new("0:b", arrival(1)),
            UnconfirmedId::new("0:c", arrival(2)),
            UnconfirmedId::new("0:d", arrival(4)),
        ];
        store.save_ack_state("app", current.clone()).await.unwrap();
        assert!(fs::read_to_string(&snapshot).unwrap().contains(ACKS_FORMAT));
        assert_eq!(len(&log), 0);
        // And lines with times after it.
        current.unconfirmed.remove(0);
        current
            .unconfirmed
            .push(UnconfirmedId::new("0:e", arrival(5)));
        store.save_ack_state("app", current.clone()).await.unwrap();
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains(r#""t+":[1700000005000]"#), "{text}");
        let again = DirStore::open(dir.path()).unwrap();
        assert_eq!(again.load_ack_state("app").await.unwrap(), current);
    }

    #[tokio::test]
    async fn arrival_times_survive_snapshots_and_lines_and_are_clamped_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let mut current = state(unconfirmed(0..3), Vec::new());
        store.save_ack_state("app", current.clone()).await.unwrap();
        current
            .unconfirmed
            .push(UnconfirmedId::new("0:late", arrival(100)));
        store.save_ack_state("app", current.clone()).await.unwrap();
        assert!(len(&dir.path().join("app.acks.log")) > 0);
        let again = DirStore::open(dir.path()).unwrap();
        let reread = again.load_ack_state("app").await.unwrap();
        assert_eq!(reread, current);
        assert_eq!(reread.unconfirmed[3].received, arrival(100));
        // Before 1970, and past the year 9999: written as the nearest end of the range.
        let far = UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 24 * 3600);
        let early = UNIX_EPOCH - Duration::from_secs(1);
        let odd = state(
            vec![
                UnconfirmedId::new("0:early", early),
                UnconfirmedId::new("0:far", far),
            ],
            Vec::new(),
        );
        let fresh = tempfile::tempdir().unwrap();
        let store = DirStore::open(fresh.path()).unwrap();
        store.save_ack_state("app", odd).await.unwrap();
        let reread = DirStore::open(fresh.path())
            .unwrap()
            .load_ack_state("app")
            .await
            .unwrap();
        assert_eq!(reread.unconfirmed[0].received, UNIX_EPOCH);
        assert_eq!(
            reread.unconfirmed[1].received,
            UNIX_EPOCH + Duration::from_millis(UnconfirmedId::MAX_RECEIVED_UNIX_MS)
        );
    }

    #[tokio::test]
    async fn bad_arrival_times_are_corrupt() {
        let snapshots: &[&str] = &[
            // One time for two ids.
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a","0:b"],"received_ms":[1],"recent":[]}"#,
            // Past the year 9999.
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":[253402300800000],"recent":[]}"#,
            // Negative, fractional, text, far too large for any clock.
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":[-1],"recent":[]}"#,
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":[1.5],"recent":[]}"#,
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":["1"],"recent":[]}"#,
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":[18446744073709551615],"recent":[]}"#,
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":[1e300],"recent":[]}"#,
            // The current format without its times.
            r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"recent":[]}"#,
        ];
        for text in snapshots {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("app.acks.json"), text).unwrap();
            let store = DirStore::open(dir.path()).unwrap();
            let err = store.load_ack_state("app").await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{text}: {err}");
            assert!(err.to_string().contains("app.acks.json"), "{err}");
        }
        let lines: &[&str] = &[
            // Times that do not match the ids that came.
            r#"{"g":1,"u+":["0:b","0:c"],"t+":[1]}"#,
            r#"{"g":1,"u+":["0:b"],"t+":[253402300800000]}"#,
            r#"{"g":1,"u+":["0:b"],"t+":[-5]}"#,
            // After a snapshot with times, a line without.
            r#"{"g":1,"u+":["0:b"]}"#,
        ];
        for line in lines {
            let dir = tempfile::tempdir().unwrap();
            fs::write(
                dir.path().join("app.acks.json"),
                r#"{"format":"pullkin-acks/3","generation":1,"unconfirmed":["0:a"],"received_ms":[1],"recent":[]}"#,
            )
            .unwrap();
            fs::write(dir.path().join("app.acks.log"), format!("{line}\n")).unwrap();
            let store = DirStore::open(dir.path()).unwrap();
            let err = store.load_ack_state("app").await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{line}: {err}");
            assert!(err.to_string().contains("app.acks.log"), "{err}");
        }
        // Lines of another generation are skipped, as before, once they parse (a line
        // that does not, like the negative time above, is corrupt wherever it is).
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("app.acks.json"),
            r#"{"format":"pullkin-acks/3","generation":2,"unconfirmed":["0:a"],"received_ms":[1],"recent":[]}"#,
        )
        .unwrap();
        let parsing: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.contains("[-5]"))
            .collect();
        assert_eq!(parsing.len(), 3);
        fs::write(
            dir.path().join("app.acks.log"),
            format!("{}\n", parsing.join("\n")),
        )
        .unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let loaded = store.load_ack_state("app").await.unwrap();
        assert_eq!(
            loaded.unconfirmed,
            [UnconfirmedId::new(
                "0:a",
                UNIX_EPOCH + Duration::from_millis(1)
            )]
        );
    }
}

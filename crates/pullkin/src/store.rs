//! What must survive a restart: each app's credentials and its acknowledgement state.
//!
//! [`Store`] is the interface the listener writes through; it is async, so that a store
//! on a database or over the network implements it directly. [`DirStore`], the default,
//! keeps one JSON file per app and kind in a directory and does its blocking file work on
//! tokio's blocking pool. Every write goes to a temporary file that is flushed to disk and
//! then renamed over the old one (and the directory is synced), so a crash at any point
//! leaves either the old or the new state readable, never a torn file
//! ([`write_private_file`], which the command line uses for credential files too). Files
//! are created with mode 0600. A file that is not valid JSON of the expected kind is an
//! error ([`StoreError::Corrupt`] or [`StoreError::Foreign`]): silently starting over
//! would deliver every message again.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::registration::AppCredentials;
use crate::session::AckState;

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

/// A [`Store`] in a directory of JSON files: `<app>.acks.json` and
/// `<app>.credentials.json`.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

const ACKS_FORMAT: &str = "pullkin-acks/1";
const CREDENTIALS_FORMAT: &str = "pullkin-credentials/1";

/// `<app>.acks.json` as read (its `format` is checked before).
#[derive(Deserialize)]
struct AckFile {
    #[serde(default)]
    unconfirmed: Vec<Arc<str>>,
    #[serde(default)]
    recent: Vec<Arc<str>>,
}

/// [`AckFile`] as written: borrowed, so a write copies no id.
#[derive(Serialize)]
struct AckFileRef<'a> {
    format: &'a str,
    unconfirmed: &'a [Arc<str>],
    recent: &'a [Arc<str>],
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
        let dir = dir.into();
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
        Ok(Self { dir })
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

    fn read<T: DeserializeOwned>(
        path: &Path,
        expected: &'static str,
        format: &str,
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
        if found != Some(format) {
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

    fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        write_private_file(path, &json).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })
    }
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
        let path = self.path(app, "acks");
        Box::pin(async move {
            let path = path?;
            blocking(move || {
                Ok(
                    Self::read::<AckFile>(&path, "acknowledgement state", ACKS_FORMAT)?
                        .map(|file| AckState {
                            unconfirmed: file.unconfirmed,
                            recent: file.recent,
                        })
                        .unwrap_or_default(),
                )
            })
            .await
        })
    }

    fn save_ack_state<'a>(&'a self, app: &'a str, state: AckState) -> StoreFuture<'a, ()> {
        let path = self.path(app, "acks");
        Box::pin(async move {
            let path = path?;
            blocking(move || {
                Self::write(
                    &path,
                    &AckFileRef {
                        format: ACKS_FORMAT,
                        unconfirmed: &state.unconfirmed,
                        recent: &state.recent,
                    },
                )
            })
            .await
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

//! What must survive a restart: each app's credentials and its acknowledgement state.
//!
//! [`DirStore`], the default, keeps one JSON file per app and kind in a directory. Every
//! write goes to a temporary file that is flushed to disk and then renamed over the old
//! one (and the directory is synced), so a crash at any point leaves either the old or the
//! new state readable, never a torn file. Files are created with mode 0600. A file that
//! is not valid JSON of the expected kind is an error ([`StoreError::Corrupt`] or
//! [`StoreError::Foreign`]): silently starting over would deliver every message again.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

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
}

/// Durable state per app. Implementations must make each save atomic: after a crash, a
/// load returns either the previous or the new value.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The stored acknowledgement state of an app (empty when none was stored).
    fn load_ack_state(&self, app: &str) -> Result<AckState, StoreError>;
    /// Replaces the acknowledgement state of an app.
    fn save_ack_state(&self, app: &str, state: &AckState) -> Result<(), StoreError>;
    /// The stored credentials of an app, as JSON (none when none were stored).
    fn load_credentials_json(&self, app: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Replaces the stored credentials of an app.
    fn save_credentials_json(&self, app: &str, json: &serde_json::Value) -> Result<(), StoreError>;
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

#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    format: String,
    credentials: serde_json::Value,
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

    fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut file = options.open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, path)?;
            // Make the rename itself durable.
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

impl Store for DirStore {
    fn load_ack_state(&self, app: &str) -> Result<AckState, StoreError> {
        let path = self.path(app, "acks")?;
        Ok(
            Self::read::<AckFile>(&path, "acknowledgement state", ACKS_FORMAT)?
                .map(|file| AckState {
                    unconfirmed: file.unconfirmed,
                    recent: file.recent,
                })
                .unwrap_or_default(),
        )
    }

    fn save_ack_state(&self, app: &str, state: &AckState) -> Result<(), StoreError> {
        let path = self.path(app, "acks")?;
        self.write(
            &path,
            &AckFileRef {
                format: ACKS_FORMAT,
                unconfirmed: &state.unconfirmed,
                recent: &state.recent,
            },
        )
    }

    fn load_credentials_json(&self, app: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let path = self.path(app, "credentials")?;
        Ok(
            Self::read::<CredentialsFile>(&path, "credentials", CREDENTIALS_FORMAT)?
                .map(|file| file.credentials),
        )
    }

    fn save_credentials_json(&self, app: &str, json: &serde_json::Value) -> Result<(), StoreError> {
        let path = self.path(app, "credentials")?;
        self.write(
            &path,
            &CredentialsFile {
                format: CREDENTIALS_FORMAT.to_owned(),
                credentials: json.clone(),
            },
        )
    }
}

/// A [`Store`] in memory, for tests and for applications that keep state elsewhere.
#[derive(Debug, Default)]
pub struct MemoryStore {
    acks: std::sync::Mutex<std::collections::HashMap<String, AckState>>,
    credentials: std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>,
}

fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock still holds consistent data: every critical section is one call.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store for MemoryStore {
    fn load_ack_state(&self, app: &str) -> Result<AckState, StoreError> {
        Ok(locked(&self.acks).get(app).cloned().unwrap_or_default())
    }

    fn save_ack_state(&self, app: &str, state: &AckState) -> Result<(), StoreError> {
        locked(&self.acks).insert(app.to_owned(), state.clone());
        Ok(())
    }

    fn load_credentials_json(&self, app: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(locked(&self.credentials).get(app).cloned())
    }

    fn save_credentials_json(&self, app: &str, json: &serde_json::Value) -> Result<(), StoreError> {
        locked(&self.credentials).insert(app.to_owned(), json.clone());
        Ok(())
    }
}

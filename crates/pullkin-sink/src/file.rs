//! [`FileSink`]: JSON lines appended to a file and synced to disk before the batch counts
//! as taken — the park for messages another sink rejected for good, or a durable log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pullkin::{Outcome, Sink, SinkError, SinkFuture, SinkMessage};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Appends each message as one JSON line ([`SinkMessage::line`], plus its `key`) to a
/// file, created with mode 0600 if missing, and syncs it before returning. Lines of one
/// batch are written in one write; batches are written one at a time.
#[derive(Debug, Clone)]
pub struct FileSink {
    name: String,
    path: PathBuf,
    /// One writer at a time: lines of two batches never interleave.
    lock: Arc<Mutex<()>>,
}

impl FileSink {
    /// A sink appending to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: format!("file:{}", path.display()),
            path,
            lock: Arc::default(),
        }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, batch: &'a [SinkMessage]) -> SinkFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut lines = Vec::new();
            for msg in batch {
                let mut line = msg.line.clone();
                if let Some(object) = line.as_object_mut() {
                    object.insert("key".to_owned(), msg.key.clone().into());
                }
                lines.extend_from_slice(line.to_string().as_bytes());
                lines.push(b'\n');
            }
            let _guard = self.lock.lock().await;
            let unavailable = |e: std::io::Error| SinkError::unavailable(&self.name, e);
            let mut options = tokio::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            options.mode(0o600);
            let mut file = options.open(&self.path).await.map_err(unavailable)?;
            file.write_all(&lines).await.map_err(unavailable)?;
            file.sync_data().await.map_err(unavailable)?;
            Ok(vec![Outcome::Taken; batch.len()])
        })
    }
}

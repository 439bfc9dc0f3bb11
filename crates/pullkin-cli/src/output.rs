//! Stdout of `listen`: the JSON lines of the messages, written by a thread of their own.
//!
//! The listening loop takes every message already waiting (up to [`Output::BATCH`]),
//! writes their lines into one buffer and hands buffer and messages to the writer
//! thread, then goes on decoding while the writer waits for the pipe. The writer writes
//! the whole buffer, flushes, and only then drops the messages, which acknowledges them:
//! a message is acknowledged only once its line was written. When stdout fails (its
//! reader went away), the messages of that batch are not acknowledged (the server
//! delivers them again after a restart), the writer stops and tells the loop
//! ([`Output::failed`]).

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use pullkin::Incoming;
use tokio::sync::Notify;

use crate::error::{CliError, Result};

/// One write: the lines, and the messages they are of.
struct Batch {
    bytes: Vec<u8>,
    messages: Vec<Incoming>,
}

/// The writer thread and the way to it.
pub(crate) struct Output {
    to_writer: Option<mpsc::SyncSender<Batch>>,
    /// Emptied batches coming back, to be filled again (no allocation per batch).
    spare: mpsc::Receiver<Batch>,
    writer: Option<JoinHandle<Option<String>>>,
    /// Told once the writer stopped on an error.
    failure: Arc<Notify>,
}

impl Output {
    /// The most messages written at once.
    pub(crate) const BATCH: usize = 256;

    /// Starts the writer thread.
    pub(crate) fn start() -> Result<Self> {
        // One batch being written, one waiting: enough to overlap decoding with writing,
        // and the loop waits beyond that (stdout's backpressure reaches the server).
        let (to_writer, batches) = mpsc::sync_channel::<Batch>(1);
        let (give_back, spare) = mpsc::sync_channel::<Batch>(2);
        let failure = Arc::new(Notify::new());
        let failed = Arc::clone(&failure);
        let writer = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                for mut batch in batches {
                    let written = {
                        let mut out = stdout.lock();
                        out.write_all(&batch.bytes).and_then(|()| out.flush())
                    };
                    if let Err(error) = written {
                        // Not acknowledged (an `Incoming` acknowledges when dropped). The
                        // command is stopping; the few leaked values go with it.
                        for unprinted in batch.messages.drain(..) {
                            std::mem::forget(unprinted);
                        }
                        failed.notify_one();
                        return Some(error.to_string());
                    }
                    batch.messages.clear();
                    batch.bytes.clear();
                    if batch.bytes.capacity() <= 1 << 20 {
                        let _ = give_back.try_send(batch);
                    }
                }
                None
            })
            .map_err(|e| CliError::msg(format!("cannot start the stdout writer: {e}")))?;
        Ok(Self {
            to_writer: Some(to_writer),
            spare,
            writer: Some(writer),
            failure,
        })
    }

    /// Ready once the writer stopped on an error (see [`Output::finish`] for it).
    pub(crate) async fn failed(&self) {
        self.failure.notified().await;
    }

    /// Hands `first` and the messages that are ready behind it (at most `room` in all) to
    /// the writer; how many. An error when stdout failed (now or earlier).
    pub(crate) fn print<S>(
        &mut self,
        first: Incoming,
        room: usize,
        messages: &mut S,
    ) -> Result<usize>
    where
        S: futures_util::Stream<Item = Incoming> + Unpin,
    {
        use futures_util::{FutureExt, StreamExt};
        let mut batch = self.spare.try_recv().unwrap_or_else(|_| Batch {
            bytes: Vec::with_capacity(64 * 1024),
            messages: Vec::with_capacity(Self::BATCH),
        });
        batch.messages.push(first);
        let most = room.clamp(1, Self::BATCH);
        while batch.messages.len() < most {
            match messages.next().now_or_never() {
                Some(Some(incoming)) => batch.messages.push(incoming),
                _ => break,
            }
        }
        for incoming in &batch.messages {
            crate::line::write(&mut batch.bytes, &incoming.app, &incoming.message);
            batch.bytes.push(b'\n');
        }
        let n = batch.messages.len();
        let sent = match &self.to_writer {
            Some(to_writer) => to_writer.send(batch).map_err(|unsent| unsent.0),
            None => Err(batch),
        };
        if let Err(unsent) = sent {
            // The writer stopped on an error: these are not acknowledged either.
            for unprinted in unsent.messages {
                std::mem::forget(unprinted);
            }
            return Err(self.finish().err().unwrap_or_else(|| {
                CliError::msg("writing to stdout: the writer stopped".to_owned())
            }));
        }
        Ok(n)
    }

    /// Waits until every line handed over is written (and its message acknowledged); the
    /// error of a failed write.
    pub(crate) fn finish(&mut self) -> Result<()> {
        drop(self.to_writer.take());
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        match writer.join() {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(CliError::msg(format!("writing to stdout: {error}"))),
            Err(_) => Err(CliError::msg("writing to stdout: the writer panicked")),
        }
    }
}

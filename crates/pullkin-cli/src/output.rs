//! Stdout of `listen`: the JSON lines of the messages, written by a thread of their own.
//!
//! The listening loop takes every message already waiting, writes their lines into a
//! buffer and hands buffer and messages to the writer thread, then goes on decoding
//! while the writer waits for the pipe. While the writer is busy, the lines of the
//! messages that keep arriving gather in the next buffer, and the writer takes all of
//! them at once when it is done: the slower stdout is read, the larger and fewer the
//! writes (a line at a time when it keeps up). Past [`Output::MOST`] messages waiting
//! the loop stops taking more, which holds the connection back.
//!
//! A message is freed as soon as its line is in the buffer; what the batch keeps of it
//! is its acknowledgement ([`pullkin::Ack`], two pointers). The writer writes a whole
//! buffer, flushes, and only then gives the batch back; the loop drops its
//! acknowledgements, which acknowledges the messages: a message is acknowledged only
//! once its line was written. When stdout fails (its reader went away), the messages of
//! that buffer are not acknowledged (the server delivers them again after a restart),
//! the writer stops and tells the loop ([`Output::news`]).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TrySendError};
use std::thread::JoinHandle;

use pullkin::{Ack, Incoming};
use tokio::sync::Notify;

use crate::error::{CliError, Result};

/// One write: the lines, and the acknowledgements of the messages they are of.
struct Batch {
    bytes: Vec<u8>,
    acks: Vec<Ack>,
}

impl Batch {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(64 * 1024),
            acks: Vec::with_capacity(256),
        }
    }
}

/// The writer thread and the way to it.
pub(crate) struct Output {
    to_writer: Option<mpsc::SyncSender<Batch>>,
    /// Written batches coming back, their messages to be acknowledged.
    spare: mpsc::Receiver<Batch>,
    /// Emptied batches, to be filled again (no allocation per batch).
    written: Vec<Batch>,
    writer: Option<JoinHandle<Option<String>>>,
    /// Lines waiting for the writer to be free.
    pending: Option<Batch>,
    /// Told each time the writer finished a batch, and when it stopped on an error.
    news: Arc<Notify>,
    /// Set (before the word) when the writer stopped on an error: it may not have ended
    /// yet when the loop hears of it.
    failed: Arc<AtomicBool>,
}

impl Output {
    /// The most messages waiting for the writer before the loop stops taking more.
    pub(crate) const MOST: usize = 4096;

    /// Starts the writer thread.
    pub(crate) fn start() -> Result<Self> {
        // One batch being written and one queued: what arrives meanwhile gathers in
        // `pending`, to go as one write. (A queued one, not none: the writer tells of a
        // finished batch before it waits for the next, so a hand-over without a place
        // could miss it and wait for a word that never comes. With the place, a batch
        // that finds it taken finds a batch in progress, whose end is told.)
        let (to_writer, batches) = mpsc::sync_channel::<Batch>(1);
        let (give_back, spare) = mpsc::sync_channel::<Batch>(4);
        let news = Arc::new(Notify::new());
        let tell = Arc::clone(&news);
        let failed = Arc::new(AtomicBool::new(false));
        let fail = Arc::clone(&failed);
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
                        // Not acknowledged (an `Ack` acknowledges when dropped). The
                        // command is stopping; the leaked values go with it.
                        for unprinted in batch.acks.drain(..) {
                            std::mem::forget(unprinted);
                        }
                        fail.store(true, Ordering::SeqCst);
                        tell.notify_one();
                        return Some(error.to_string());
                    }
                    batch.bytes.clear();
                    if batch.bytes.capacity() > 1 << 20 {
                        batch.bytes = Vec::new();
                    }
                    // Written: the loop acknowledges its messages (or, when it has not
                    // taken the batches before, this thread does).
                    if let Err(TrySendError::Full(mut batch)) = give_back.try_send(batch) {
                        batch.acks.clear();
                    }
                    tell.notify_one();
                }
                None
            })
            .map_err(|e| CliError::msg(format!("cannot start the stdout writer: {e}")))?;
        Ok(Self {
            to_writer: Some(to_writer),
            spare,
            written: Vec::new(),
            writer: Some(writer),
            pending: None,
            news,
            failed,
        })
    }

    /// Whether the loop may take more messages (fewer than [`Output::MOST`] wait).
    pub(crate) fn accepting(&self) -> bool {
        self.pending
            .as_ref()
            .is_none_or(|batch| batch.acks.len() < Self::MOST)
    }

    /// Takes `first` and the messages that are ready behind it (at most `room` in all)
    /// for the writer; how many. An error when stdout failed.
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
        self.acknowledge_written();
        let mut batch = match self.pending.take() {
            Some(batch) => batch,
            None => self.written.pop().unwrap_or_else(Batch::new),
        };
        let before = batch.acks.len();
        let most = before.saturating_add(room.max(1));
        let mut next = Some(first);
        while let Some(incoming) = next.take() {
            crate::line::write(&mut batch.bytes, &incoming.app, &incoming.message);
            batch.bytes.push(b'\n');
            // The message is freed here, on the thread that decoded it; its
            // acknowledgement waits for the write.
            let (_, _, _, ack) = incoming.into_parts();
            batch.acks.push(ack);
            if batch.acks.len() >= most.min(Self::MOST) {
                break;
            }
            if let Some(Some(incoming)) = messages.next().now_or_never() {
                next = Some(incoming);
            }
        }
        let taken = batch.acks.len() - before;
        self.pending = Some(batch);
        self.hand_over()?;
        Ok(taken)
    }

    /// The writer finished a batch (or stopped): hands it what waits. An error when
    /// stdout failed.
    pub(crate) fn news(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let news = Arc::clone(&self.news);
        async move { news.notified().await }
    }

    /// Hands the waiting lines to the writer if it is free; the error of a writer that
    /// stopped.
    pub(crate) fn hand_over(&mut self) -> Result<()> {
        self.acknowledge_written();
        let Some(batch) = self.pending.take() else {
            return self.check();
        };
        let Some(to_writer) = &self.to_writer else {
            self.unsent(batch);
            return self.check();
        };
        match to_writer.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch)) => {
                self.pending = Some(batch);
                self.check()
            }
            Err(TrySendError::Disconnected(batch)) => {
                self.unsent(batch);
                self.finish()
            }
        }
    }

    /// Drops the messages of the batches the writer wrote (acknowledging them), and
    /// keeps the batches to be filled again.
    fn acknowledge_written(&mut self) {
        while let Ok(mut batch) = self.spare.try_recv() {
            batch.acks.clear();
            if self.written.len() < 2 {
                self.written.push(batch);
            }
        }
    }

    /// The error of a writer that stopped; nothing while it runs.
    fn check(&mut self) -> Result<()> {
        if self.failed.load(Ordering::SeqCst)
            || self.writer.as_ref().is_some_and(JoinHandle::is_finished)
        {
            return self.finish();
        }
        Ok(())
    }

    /// Lines the writer will not take: their messages are not acknowledged.
    fn unsent(&mut self, batch: Batch) {
        for unprinted in batch.acks {
            std::mem::forget(unprinted);
        }
    }

    /// Waits until every line taken is written (and its message acknowledged); the
    /// error of a failed write.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Some(batch) = self.pending.take() {
            let unsent = match &self.to_writer {
                // Blocks until the writer is free: the end of the command.
                Some(to_writer) => to_writer.send(batch).err().map(|unsent| unsent.0),
                None => Some(batch),
            };
            if let Some(batch) = unsent {
                self.unsent(batch);
            }
        }
        drop(self.to_writer.take());
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let joined = writer.join();
        self.acknowledge_written();
        match joined {
            Ok(None) => Ok(()),
            Ok(Some(error)) => Err(CliError::msg(format!("writing to stdout: {error}"))),
            Err(_) => Err(CliError::msg("writing to stdout: the writer panicked")),
        }
    }
}

//! One logged-in MCS connection: delivery from the device's queue, stream ids and
//! acknowledgements (docs/protocol.md §3), heartbeats and the armed faults.
//!
//! May use `accept` (the shutdown signal), `shared`, `state` and `types`; never the
//! login code above it, `http` or the facade.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use mcs_codec::proto::{
    Close, HeartbeatAck, HeartbeatPing, LoginResponse, SelectiveAck, StreamErrorStanza,
};
use mcs_codec::{McsCodec, McsMessage, SELECTIVE_ACK_EXTENSION, STREAM_ACK_EXTENSION};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, Framed};
use tracing::{debug, info};

use crate::accept::shutdown_signal;
use crate::shared::Shared;
use crate::state::{Action, ConnLink, Device};
use crate::types::Fault;

/// At most this many queued messages are sent between two reads of the socket.
const BATCH: usize = 100;

/// Why a connection ended (for the logs).
#[derive(Debug)]
struct End(Cow<'static, str>);

impl End {
    fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self(reason.into())
    }
}

impl From<mcs_codec::McsError> for End {
    fn from(e: mcs_codec::McsError) -> Self {
        Self::new(format!("MCS error: {e}"))
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        Self::new(format!("I/O error: {e}"))
    }
}

/// A logged-in connection's place in its device's sessions: dropping it (however the
/// connection's task ends) unlinks the connection and records when it ended.
pub(super) struct LoggedIn {
    shared: Arc<Shared>,
    android_id: u64,
    id: u64,
}

impl LoggedIn {
    pub(super) fn new(shared: Arc<Shared>, android_id: u64, id: u64) -> Self {
        Self {
            shared,
            android_id,
            id,
        }
    }
}

impl Drop for LoggedIn {
    fn drop(&mut self) {
        let now = self.shared.elapsed();
        self.shared
            .lock()
            .end_session(self.android_id, self.id, now);
    }
}

/// Serves a device's connection from its accepted login until it ends: sends
/// `login_response` (unless a stall holds it back), then delivers and acknowledges until
/// the client leaves, a fault, a disconnect or a newer login ends it, or shutdown (which
/// sends `Close`). Then `session` unlinks it from the device, after the socket is closed.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    framed: Framed<S, McsCodec>,
    session: LoggedIn,
    link: ConnLink,
    login_response: LoginResponse,
    shutdown: watch::Receiver<bool>,
) {
    let android_id = session.android_id;
    let mut conn = Conn {
        shared: Arc::clone(&shared),
        framed,
        id: link.id,
        android_id,
        notify: link.notify,
        stream_id_in: 1,
        stream_id_out: 0,
        drop_after: None,
        drop_mid_frame: false,
        applied_global: HashSet::new(),
        login_response: Some(login_response),
        last_send: Instant::now(),
        ping_due: false,
        shutdown,
    };
    let end = conn.run().await;
    let id = conn.id;
    // The socket closes here, then the session ends.
    drop(conn);
    drop(session);
    info!(android_id, conn = id, reason = %end.0, "connection ended");
}

/// Sets a frame's `stream_id` (when it has one) and `last_stream_id_received`.
pub(super) fn stamp(message: &mut McsMessage, stream_id: i32, last_received: i32) {
    message.set_last_stream_id_received(last_received);
    match message {
        McsMessage::HeartbeatPing(m) => m.stream_id = Some(stream_id),
        McsMessage::HeartbeatAck(m) => m.stream_id = Some(stream_id),
        McsMessage::LoginResponse(m) => m.stream_id = Some(stream_id),
        McsMessage::IqStanza(m) => m.stream_id = Some(stream_id),
        McsMessage::DataMessageStanza(m) => m.stream_id = Some(stream_id),
        _ => {}
    }
}

/// What one pass of [`Conn::work`] does, decided under the lock.
#[derive(Default)]
struct Plan {
    faults: Vec<Fault>,
    pings: usize,
    messages: Vec<(String, mcs_codec::proto::DataMessageStanza)>,
    more: bool,
    stalled: bool,
}

/// One logged-in MCS connection.
struct Conn<S> {
    shared: Arc<Shared>,
    framed: Framed<S, McsCodec>,
    id: u64,
    android_id: u64,
    notify: Arc<Notify>,
    /// Frames received (the LoginRequest is 1).
    stream_id_in: i32,
    /// Frames sent (the LoginResponse is 1).
    stream_id_out: i32,
    drop_after: Option<u32>,
    drop_mid_frame: bool,
    applied_global: HashSet<u64>,
    /// The LoginResponse, until it is sent (a stall holds it back).
    login_response: Option<LoginResponse>,
    last_send: Instant,
    ping_due: bool,
    shutdown: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn run(&mut self) -> End {
        loop {
            if let Err(end) = self.work().await {
                return end;
            }
            let heartbeat = self
                .shared
                .config
                .heartbeat_interval
                .map(|interval| self.last_send + interval);
            let next = tokio::select! {
                biased;
                () = shutdown_signal(&mut self.shutdown) => {
                    self.close_gracefully().await;
                    return End::new("emulator shut down");
                }
                frame = self.framed.next() => frame,
                () = self.notify.notified() => continue,
                () = sleep_until(heartbeat) => {
                    self.ping_due = true;
                    self.last_send = Instant::now();
                    continue;
                }
            };
            let result = match next {
                None => Err(End::new("client closed the connection")),
                Some(Err(e)) => Err(End::from(e)),
                Some(Ok(message)) => self.handle_frame(message).await,
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    fn is_stalled(&self) -> bool {
        let state = self.shared.lock();
        state.global_stall
            || state
                .devices
                .get(&self.android_id)
                .is_some_and(|d| d.stalled)
    }

    /// Decides under the lock what to send now.
    fn plan(&mut self) -> Result<Plan, End> {
        let now = self.shared.clock();
        let mut state = self.shared.lock();
        let globals = state.pending_global_faults(&self.applied_global);
        let global_stall = state.global_stall;
        let device = state
            .devices
            .get_mut(&self.android_id)
            .ok_or_else(|| End::new("device removed"))?;
        match device.sessions.iter().find(|s| s.link.id == self.id) {
            None => return Err(End::new("unlinked from the device")),
            Some(session) => {
                if let Some(reason) = session.closing {
                    return Err(End::new(reason));
                }
            }
        }
        let current = device.current().is_some_and(|c| c.id == self.id);
        let mut plan = Plan::default();
        if global_stall || device.stalled {
            plan.stalled = true;
            return Ok(plan);
        }
        for (id, fault) in globals {
            self.applied_global.insert(id);
            plan.faults.push(fault);
        }
        if !current {
            // An older connection kept open: it answers heartbeats and takes global
            // faults, while messages and the device's actions go to the current one.
            return Ok(plan);
        }
        for action in device.actions.drain(..) {
            match action {
                Action::Fault(fault) => plan.faults.push(fault),
                Action::Ping => plan.pings += 1,
            }
        }
        // Past their time to live: dropped, not delivered (docs/protocol.md §7.5).
        device.purge_expired(now, false);
        let mut unsent = device.queue.iter().filter(|q| q.sent.is_none());
        for queued in unsent.by_ref().take(BATCH) {
            let mut stanza = queued.stanza.clone();
            // Queued for a device with no connection: how long it waited (§7.4).
            if let Some(since) = queued.waiting_since {
                let waited = now.saturating_sub(since).as_millis();
                stanza.queued = Some(i32::try_from(waited).unwrap_or(i32::MAX));
            }
            plan.messages.push((queued.persistent_id.clone(), stanza));
        }
        plan.more = unsent.next().is_some();
        Ok(plan)
    }

    /// Sends what is due: the LoginResponse, armed faults, pings, queued messages.
    async fn work(&mut self) -> Result<(), End> {
        let plan = self.plan()?;
        if plan.stalled {
            return Ok(());
        }
        let mut one_shots = Vec::new();
        for fault in plan.faults {
            match fault {
                Fault::DropAfterFrames(0) => return Err(End::new("fault: dropped")),
                Fault::DropAfterFrames(n) => self.drop_after = Some(n),
                Fault::DropMidFrame => self.drop_mid_frame = true,
                Fault::Stall => {}
                other => one_shots.push(other),
            }
        }
        if let Some(response) = self.login_response.take() {
            self.send(McsMessage::from(response)).await?;
        }
        for fault in one_shots {
            self.fire(fault).await?;
        }
        for _ in 0..plan.pings {
            self.send(McsMessage::from(HeartbeatPing::default()))
                .await?;
        }
        if std::mem::take(&mut self.ping_due) {
            self.send(McsMessage::from(HeartbeatPing::default()))
                .await?;
        }
        for (persistent_id, stanza) in plan.messages {
            let stream_id = self.stream_id_out + 1;
            if !self.mark_sent(&persistent_id, stream_id) {
                continue;
            }
            debug!(android_id = self.android_id, %persistent_id, stream_id, "delivering");
            self.send(McsMessage::from(stanza)).await?;
        }
        if plan.more {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Records that a queued message goes out at `stream_id` on this connection; false
    /// when it is no longer queued (acknowledged meanwhile), already sent, or this
    /// connection stopped being the device's current one (a newer login took over).
    fn mark_sent(&self, persistent_id: &str, stream_id: i32) -> bool {
        let mut state = self.shared.lock();
        let Some(device) = state.devices.get_mut(&self.android_id) else {
            return false;
        };
        if device.current().is_none_or(|c| c.id != self.id) {
            return false;
        }
        match device
            .queue
            .iter_mut()
            .find(|q| q.persistent_id == persistent_id && q.sent.is_none())
        {
            Some(queued) => {
                queued.sent = Some((self.id, stream_id));
                true
            }
            None => false,
        }
    }

    /// Fires a one-shot fault.
    async fn fire(&mut self, fault: Fault) -> Result<(), End> {
        info!(android_id = self.android_id, ?fault, "firing fault");
        match fault {
            Fault::SendClose => {
                self.send(McsMessage::from(Close {})).await?;
                let _ = self.framed.get_mut().shutdown().await;
                Err(End::new("fault: sent Close"))
            }
            Fault::SendStreamError { error_type, text } => {
                let stanza = StreamErrorStanza {
                    r#type: error_type,
                    text,
                };
                self.send(McsMessage::from(stanza)).await?;
                let _ = self.framed.get_mut().shutdown().await;
                Err(End::new("fault: sent StreamErrorStanza"))
            }
            Fault::SendGarbage(bytes) => {
                SinkExt::<McsMessage>::flush(&mut self.framed).await?;
                let stream = self.framed.get_mut();
                stream.write_all(&bytes).await?;
                stream.flush().await?;
                Ok(())
            }
            Fault::SendUnknownTag { tag, body } => {
                self.send(McsMessage::Unknown { tag, bytes: body }).await
            }
            Fault::DropAfterFrames(_) | Fault::DropMidFrame | Fault::Stall => Ok(()),
        }
    }

    /// Sends one frame, honouring the drop faults.
    async fn send(&mut self, mut message: McsMessage) -> Result<(), End> {
        let stream_id = self.stream_id_out + 1;
        stamp(&mut message, stream_id, self.stream_id_in);
        if self.drop_mid_frame {
            let mut wire = BytesMut::new();
            Encoder::<&McsMessage>::encode(self.framed.codec_mut(), &message, &mut wire)?;
            SinkExt::<McsMessage>::flush(&mut self.framed).await?;
            let half = (wire.len() / 2).max(1);
            let stream = self.framed.get_mut();
            stream.write_all(&wire[..half]).await?;
            stream.flush().await?;
            // A clean TLS close right after the half frame: the peer's decoder is left
            // with a truncated frame at end of stream.
            let _ = stream.shutdown().await;
            return Err(End::new("fault: dropped mid-frame"));
        }
        self.framed.send(message).await?;
        self.stream_id_out = stream_id;
        self.last_send = Instant::now();
        if let Some(left) = self.drop_after.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                return Err(End::new("fault: dropped after N frames"));
            }
        }
        Ok(())
    }

    async fn handle_frame(&mut self, message: McsMessage) -> Result<(), End> {
        self.stream_id_in = self.stream_id_in.saturating_add(1);
        let last_received = message.last_stream_id_received();
        match message {
            McsMessage::HeartbeatPing(_) => {
                self.with_device(|d| d.pings_received += 1);
                if !self.is_stalled() {
                    self.send(McsMessage::from(HeartbeatAck::default())).await?;
                }
            }
            McsMessage::HeartbeatAck(_) => {
                self.with_device(|d| d.heartbeat_acks_received += 1);
            }
            McsMessage::IqStanza(iq) => match iq.extension {
                Some(ext) if ext.id == STREAM_ACK_EXTENSION => {
                    if let Some(last) = last_received {
                        self.ack_through(last);
                    }
                }
                Some(ext) if ext.id == SELECTIVE_ACK_EXTENSION => {
                    match SelectiveAck::decode(ext.data) {
                        Ok(ack) => {
                            let ids: HashSet<String> = ack.id.into_iter().collect();
                            let n = self
                                .with_device(|d| d.ack_where(|q| ids.contains(&q.persistent_id)));
                            debug!(android_id = self.android_id, acked = ?n, "selective ack");
                        }
                        Err(e) => debug!("undecodable SelectiveAck: {e}"),
                    }
                }
                other => debug!(extension = ?other.map(|e| e.id), "IqStanza ignored"),
            },
            McsMessage::DataMessageStanza(stanza) => {
                debug!(android_id = self.android_id, "upstream data message");
                self.with_device(|d| d.record_upstream(stanza));
            }
            McsMessage::LoginRequest(_) => {
                return Err(End::new("protocol error: second LoginRequest"));
            }
            McsMessage::Close(_) => return Err(End::new("client sent Close")),
            McsMessage::StreamErrorStanza(e) => {
                return Err(End::new(format!("client sent StreamError {:?}", e.r#type)));
            }
            other => debug!(tag = other.tag(), "frame ignored"),
        }
        if self.shared.config.ack_on_any_frame
            && let Some(last) = last_received
        {
            self.ack_through(last);
        }
        Ok(())
    }

    /// Acknowledges every message sent on this connection at a stream id `<= last`.
    fn ack_through(&self, last: i32) {
        let id = self.id;
        let n = self.with_device(|d| {
            d.ack_where(|q| matches!(q.sent, Some((conn, sid)) if conn == id && sid <= last))
        });
        debug!(android_id = self.android_id, last, acked = ?n, "stream ack");
    }

    fn with_device<T>(&self, f: impl FnOnce(&mut Device) -> T) -> Option<T> {
        let mut state = self.shared.lock();
        state.devices.get_mut(&self.android_id).map(f)
    }

    async fn close_gracefully(&mut self) {
        self.drop_mid_frame = false;
        self.drop_after = None;
        if self.send(McsMessage::from(Close {})).await.is_ok() {
            let _ = self.framed.get_mut().shutdown().await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

//! The driver of one app's push connection, as one tokio task: it moves bytes between
//! the socket and the [`Session`], runs the session's timers, calls the store when the
//! session asks, and hands messages to the application. Every decision — when to
//! acknowledge, when to store, when to ping, when to reconnect, what an identity change
//! means — is the session's or the [`ReconnectPolicy`]'s, both sans-IO.
//!
//! The loop never gives up by default: every failure is logged with its cause and
//! followed by a new attempt when the policy says.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::{FutureExt, SinkExt, StreamExt};
use mcs_codec::{McsError, McsMessage};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use webpush_ece::ReceiverKeys;

use super::delivery::{Decoding, Handover, TakenIds};
use super::handoff::{self, PushError};
use super::identity::{Action, AppUpkeep, Identity, Upkeep};
use crate::error::ConnectionError;
use crate::event::{ConnectionState, Event, Health};
use crate::message;
use crate::net::{self, IDLE_BUFFER, McsConnection, McsTarget};
use crate::registration::IidCommand;
use crate::session::{
    AckState, Reconnect, ReconnectPolicy, Session, SessionConfig, SessionEvent, UnconfirmedId,
};
use crate::store::{Store, StoreError};
use mcs_codec::proto::DataMessageStanza;

/// What the drivers of one listener share (one copy, not one per app).
pub(crate) struct DriverShared {
    pub target: McsTarget,
    pub store: Arc<dyn Store>,
    /// Each driver starts from a copy.
    pub reconnect: ReconnectPolicy,
    pub events: broadcast::Sender<Event>,
    /// Credential upkeep before each attempt, for a listener built with a core.
    pub upkeep: Option<Arc<Upkeep>>,
}

/// Everything one app's driver task needs.
pub(crate) struct Driver {
    pub app: Arc<str>,
    pub session_config: SessionConfig,
    /// Ids received elsewhere ([`crate::Pullkin::add_app`]): merged into the stored state.
    pub received_elsewhere: Vec<String>,
    pub keys: Option<Arc<ReceiverKeys>>,
    pub shared: Arc<DriverShared>,
    /// Boxed: a queue of pointers, not of hand-overs.
    pub handover: handoff::Sender<Box<Handover>>,
    /// Ids the application took.
    pub taken: Arc<TakenIds>,
    pub health: watch::Sender<Health>,
    pub stop: CancellationToken,
    /// Changes when the connections are to be checked now ([`crate::Pullkin::probe`]).
    pub probe: watch::Receiver<u64>,
}

/// The room the read buffer gets during a burst of frames, in bytes.
const BURST_BUFFER: usize = 16 * 1024;

/// How a connection (or an attempt) ended.
enum Ended {
    Stopped,
    Failed(ConnectionError),
    /// The upkeep made a new identity (docs/protocol.md §7.1): log in with it now.
    NewIdentity,
}

impl From<ConnectionError> for Ended {
    fn from(error: ConnectionError) -> Self {
        Ended::Failed(error)
    }
}

/// The store write in flight, with the state version it records.
type Writing = Option<(u64, JoinHandle<Result<(), StoreError>>)>;

impl Driver {
    /// Runs until stopped (or until the policy gives up).
    pub(crate) async fn run(mut self) {
        let mut session = match self.restore().await {
            Ok(session) => session,
            Err(error) => {
                // Starting over would deliver every message again: refuse instead.
                warn!("cannot read the stored state: {error}");
                self.finish(None, Some(error)).await;
                return;
            }
        };
        let mut policy = self.shared.reconnect.clone();
        let mut upkeep = AppUpkeep::default();
        let stop_error = loop {
            if self.stop.is_cancelled() {
                break None;
            }
            self.set_state(ConnectionState::Connecting {
                attempt: policy.attempt(),
            });
            // Boxed, here and below: an async fn's state is as large as its largest await
            // point, and every idle connection holds one (thousands may be held at once).
            let ended = Box::pin(self.connect_once(&mut session, &mut policy, &mut upkeep)).await;
            session.disconnected();
            let error = match ended {
                Ended::Stopped => break None,
                Ended::Failed(error) => error,
                Ended::NewIdentity => continue,
            };
            self.health.send_modify(|h| h.failures += 1);
            let now = Instant::now();
            // Bound first: the thread's generator must not live across an await.
            let verdict = policy.handle_failure(now, error.retry_after(), &mut rand::thread_rng());
            match verdict {
                Reconnect::GiveUp { failures } => {
                    warn!(failures, "giving up: {error}");
                    break Some(ConnectionError::GaveUp {
                        failures,
                        last: Box::new(error),
                    });
                }
                Reconnect::After {
                    delay,
                    at,
                    not_before,
                    failures,
                } => {
                    let asked = error.retry_after();
                    warn!(
                        failures,
                        ?delay,
                        ?asked,
                        "connection failed: {error}; retrying"
                    );
                    self.set_state(ConnectionState::BackingOff {
                        until: SystemTime::now() + delay,
                        error,
                        failures,
                    });
                    if !self.back_off(at, not_before).await {
                        break None;
                    }
                }
            }
        };
        upkeep.abort();
        self.finish(Some(&mut session), stop_error).await;
    }

    /// The session, from the stored state and the ids received elsewhere (which count
    /// as arrived now). The one place the session's clocks are read: the session
    /// converts stored arrival times through this pair (docs/protocol.md §7.3).
    async fn restore(&mut self) -> Result<Session, ConnectionError> {
        let store = &self.shared.store;
        let mut state = store.load_ack_state(&self.app).await?;
        let extra = std::mem::take(&mut self.received_elsewhere);
        if !extra.is_empty() {
            let arrived = SystemTime::now();
            let mut known: std::collections::HashSet<Arc<str>> = state
                .unconfirmed
                .iter()
                .map(|u| Arc::clone(&u.id))
                .collect();
            let before = state.unconfirmed.len();
            for id in extra {
                let id = Arc::<str>::from(id);
                if known.insert(Arc::clone(&id)) {
                    state.unconfirmed.push(UnconfirmedId::new(id, arrived));
                }
            }
            if state.unconfirmed.len() != before {
                store.save_ack_state(&self.app, state.clone()).await?;
            }
        }
        Ok(Session::new(
            self.session_config.clone(),
            state,
            Instant::now(),
            SystemTime::now(),
        ))
    }

    /// After the last connection: store what the application took meanwhile, report why
    /// the listener stopped.
    async fn finish(&self, session: Option<&mut Session>, error: Option<ConnectionError>) {
        if let Some(session) = session {
            // Ids taken since the last write must not be lost.
            self.take_delivered(session);
            if let Some(write) = session.flush_store() {
                match self.persist(write.state).await {
                    Ok(()) => session.handle_stored(write.version),
                    Err(error) => warn!("cannot store the acknowledgement state: {error}"),
                }
            }
        }
        if let Some(error) = &error {
            let _ = self.shared.events.send(Event::Failed {
                app: self.app.to_string(),
                error: error.clone(),
            });
        }
        self.set_state(ConnectionState::Stopped { error });
        info!("listener stopped");
    }

    /// Waits until `at`; a probe cuts the wait short, but not before `not_before`.
    /// `false`: stopped meanwhile.
    async fn back_off(&mut self, at: Instant, not_before: Instant) -> bool {
        let stop = self.stop.clone();
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep_until(at.into()) => true,
            Ok(()) = self.probe.changed() => {
                info!("probed: reconnecting now, or once the server's wait is over");
                tokio::select! {
                    () = stop.cancelled() => false,
                    () = tokio::time::sleep_until(not_before.into()) => true,
                }
            }
        }
    }

    /// Tells the session which messages the application took meanwhile.
    fn take_delivered(&self, session: &mut Session) {
        let now = Instant::now();
        for id in self.taken.take() {
            session.delivered(&id, now);
        }
    }

    fn set_state(&self, state: ConnectionState) {
        let event = Event::State {
            app: self.app.to_string(),
            state: state.clone(),
        };
        self.health.send_modify(|h| h.state = state);
        let _ = self.shared.events.send(event);
    }

    async fn persist(&self, state: AckState) -> Result<(), StoreError> {
        self.shared.store.save_ack_state(&self.app, state).await
    }

    /// Starts a store write beside the connection (group commit: frames keep being read
    /// meanwhile).
    fn spawn_persist(&self, state: AckState) -> JoinHandle<Result<(), StoreError>> {
        let store = Arc::clone(&self.shared.store);
        let app = Arc::clone(&self.app);
        tokio::spawn(async move { store.save_ack_state(&app, state).await })
    }

    /// Renews the credentials (when the listener has a core) and applies the identity to
    /// the session: the identity a run beside the last connection made, else the answer
    /// to an Instance ID command still owed, else a renewal (docs/protocol.md §7.1, §7.2).
    async fn refresh_identity(
        &mut self,
        session: &mut Session,
        app_upkeep: &mut AppUpkeep,
    ) -> Result<(), Ended> {
        let Some(upkeep) = self.shared.upkeep.clone() else {
            return Ok(());
        };
        let stop = self.stop.clone();
        if let Some((action, mut task)) = app_upkeep.running.take() {
            // What ran beside the connection finishes first: its result is the newest.
            let done = tokio::select! {
                () = stop.cancelled() => {
                    task.abort();
                    return Err(Ended::Stopped);
                }
                done = &mut task => done,
            };
            app_upkeep.ready = self.upkeep_done(app_upkeep, action, done, upkeep.checkin_interval);
        }
        let identity = match app_upkeep.ready.take() {
            Some(identity) => identity,
            None => {
                let action = app_upkeep.before_connecting();
                let identity = tokio::select! {
                    () = stop.cancelled() => return Err(Ended::Stopped),
                    // Boxed: renewal (check-in, HTTP) is a large future, and it would
                    // otherwise be part of every idle connection's state.
                    identity = Box::pin(upkeep.run(&self.app, action)) => identity,
                };
                let now = Instant::now();
                match identity {
                    Ok(identity) => {
                        app_upkeep.succeeded(
                            action,
                            now,
                            upkeep.checkin_interval,
                            identity.server_interval,
                        );
                        identity
                    }
                    Err(error) => {
                        app_upkeep.failed(now, upkeep.checkin_interval);
                        return Err(error.into());
                    }
                }
            }
        };
        if let Some(keys) = identity.keys {
            self.keys = Some(keys);
        }
        if session.set_identity(identity.android_id, identity.security_token)
            && let Some(write) = session.flush_store()
        {
            // The old device's state must not be restored with the new identity.
            self.persist(write.state)
                .await
                .map_err(ConnectionError::from)?;
            session.handle_stored(write.version);
        }
        Ok(())
    }

    /// Takes the result of a run beside the connection into the schedule; the identity
    /// it left, when it succeeded. New keys are used from now on.
    fn upkeep_done(
        &mut self,
        app_upkeep: &mut AppUpkeep,
        action: Action,
        done: Result<Result<Identity, ConnectionError>, tokio::task::JoinError>,
        interval: Option<std::time::Duration>,
    ) -> Option<Identity> {
        let now = Instant::now();
        let identity = match done {
            Ok(Ok(identity)) => identity,
            Ok(Err(error)) => {
                warn!(
                    ?action,
                    "credential upkeep failed: {error}; trying again later"
                );
                app_upkeep.failed(now, interval);
                return None;
            }
            Err(error) => {
                warn!(?action, "credential upkeep task ended abnormally: {error}");
                app_upkeep.failed(now, interval);
                return None;
            }
        };
        app_upkeep.succeeded(action, now, interval, identity.server_interval);
        if let Some(keys) = &identity.keys {
            self.keys = Some(Arc::clone(keys));
        }
        Some(identity)
    }

    /// Starts what the upkeep schedule says is due, beside the connection.
    fn start_upkeep(&self, app_upkeep: &mut AppUpkeep) {
        let Some(upkeep) = self.shared.upkeep.clone() else {
            return;
        };
        let action = app_upkeep.start();
        debug!(?action, "credential upkeep beside the connection");
        let app = Arc::clone(&self.app);
        let task = tokio::spawn(async move { upkeep.run(&app, action).await });
        app_upkeep.running = Some((action, task));
    }

    /// One connection: prepare, connect, log in, receive until it ends.
    async fn connect_once(
        &mut self,
        session: &mut Session,
        policy: &mut ReconnectPolicy,
        app_upkeep: &mut AppUpkeep,
    ) -> Ended {
        if let Err(ended) = self.refresh_identity(session, app_upkeep).await {
            return ended;
        }
        let stop = self.stop.clone();
        let mut connection = tokio::select! {
            () = stop.cancelled() => return Ended::Stopped,
            connection = Box::pin(net::connect(&self.shared.target)) => match connection {
                Ok(connection) => connection,
                Err(error) => return Ended::Failed(error),
            },
        };
        session.connect(Instant::now());
        // Probes from before this connection are answered by the connection itself.
        self.probe.borrow_and_update();
        let mut writing: Writing = None;
        let ended = self
            .receive(session, &mut connection, policy, &mut writing, app_upkeep)
            .await;
        // A write still running finishes before the next one may start.
        if let Some((version, write)) = writing.take() {
            match write.await {
                Ok(Ok(())) => session.handle_stored(version),
                _ => session.handle_store_failed(),
            }
        }
        if matches!(ended, Ended::Stopped | Ended::NewIdentity) {
            // A new identity: what the application took is stored and acknowledged on
            // the old one first (then the session starts over, `Session::set_identity`).
            Box::pin(self.close_gracefully(session, &mut connection)).await;
        }
        ended
    }

    /// Receives until the connection ends or the listener stops.
    async fn receive(
        &mut self,
        session: &mut Session,
        connection: &mut McsConnection,
        policy: &mut ReconnectPolicy,
        writing: &mut Writing,
        app_upkeep: &mut AppUpkeep,
    ) -> Ended {
        loop {
            if writing.is_none()
                && let Some(write) = session.poll_store(Instant::now())
            {
                *writing = Some((write.version, self.spawn_persist(write.state)));
            }
            if let Err(error) = write_frames(session, connection).await {
                return error.into();
            }
            let deadline = session.poll_timeout();
            let upkeep_due = app_upkeep.due();
            let stop = self.stop.clone();
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ended::Stopped,
                written = wait_for(writing) => {
                    let version = writing.take().map_or(0, |(version, _)| version);
                    match written {
                        Ok(()) => session.handle_stored(version),
                        Err(error) => {
                            session.handle_store_failed();
                            return ConnectionError::from(error).into();
                        }
                    }
                }
                frame = connection.next() => {
                    if let Err(error) = self.read_burst(session, connection, frame) {
                        return error.into();
                    }
                }
                ids = self.taken.wait() => {
                    let now = Instant::now();
                    for id in ids {
                        session.delivered(&id, now);
                    }
                }
                Ok(()) = self.probe.changed() => {
                    debug!("probed: pinging the server now");
                    session.probe(Instant::now());
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    session.handle_timeout(Instant::now());
                    give_back_buffers(connection);
                    self.handover.shrink();
                }
                () = sleep_until(upkeep_due), if upkeep_due.is_some() => {
                    self.start_upkeep(app_upkeep);
                }
                done = wait_for_upkeep(app_upkeep) => {
                    if let Some(ended) = self.upkeep_finished(session, app_upkeep, done) {
                        return ended;
                    }
                }
            }
            let ended = self.handle_events(session, policy, app_upkeep).await;
            // The messages of the burst were queued quietly: one wake-up for them all.
            self.handover.wake();
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    /// Takes one frame and every frame already buffered behind it, before anything is
    /// written back.
    fn read_burst(
        &self,
        session: &mut Session,
        connection: &mut McsConnection,
        first: Option<Result<McsMessage, McsError>>,
    ) -> Result<(), ConnectionError> {
        // One clock reading for the frames of one wake-up.
        let now = Instant::now();
        // Watchers are not woken for this: it changes with every frame.
        self.health.send_if_modified(|h| {
            h.last_frame_at = Some(SystemTime::now());
            false
        });
        let mut next = Some(first);
        let mut frames = 0_usize;
        while let Some(frame) = next.take() {
            frames += 1;
            match frame {
                Some(Ok(message)) => session.handle_frame(message, now),
                Some(Err(e)) => return Err(ConnectionError::from_mcs(e)),
                None => return Err(ConnectionError::ServerClosed),
            }
            next = connection.next().now_or_never();
        }
        // A burst: read it in large pieces (the room is given back when idle).
        let buffer = connection.read_buffer_mut();
        if frames > 1 && buffer.capacity() - buffer.len() < BURST_BUFFER / 2 {
            buffer.reserve(BURST_BUFFER);
        }
        // Under a steady stream of frames the branch of taken ids may never win: take
        // what the application finished meanwhile here too.
        self.take_delivered(session);
        Ok(())
    }

    /// A run beside the connection finished: a new identity ends the connection (to log
    /// in with it at once), anything else leaves it up.
    fn upkeep_finished(
        &mut self,
        session: &Session,
        app_upkeep: &mut AppUpkeep,
        done: Result<Result<Identity, ConnectionError>, tokio::task::JoinError>,
    ) -> Option<Ended> {
        let (action, _) = app_upkeep.running.take()?;
        let interval = self.shared.upkeep.as_ref()?.checkin_interval;
        let identity = self.upkeep_done(app_upkeep, action, done, interval)?;
        let config = session.config();
        if identity.android_id == config.android_id
            && identity.security_token == config.security_token
        {
            return None;
        }
        info!(?action, "a new device identity: logging in with it");
        app_upkeep.ready = Some(identity);
        Some(Ended::NewIdentity)
    }

    /// Acts on what the session reports; `Some` when the connection is over.
    async fn handle_events(
        &mut self,
        session: &mut Session,
        policy: &mut ReconnectPolicy,
        app_upkeep: &mut AppUpkeep,
    ) -> Option<Ended> {
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::LoggedIn { heartbeat_interval } => {
                    info!(?heartbeat_interval, "logged in");
                    policy.handle_online(Instant::now());
                    self.health.send_modify(|h| h.logins += 1);
                    self.set_state(ConnectionState::Connected {
                        since: SystemTime::now(),
                    });
                }
                SessionEvent::Message(stanza, id) => {
                    if self.shared.upkeep.is_some()
                        && let Some(command) = iid_command(&stanza)
                    {
                        // An Instance ID control message (docs/protocol.md §7.1): answered
                        // by the upkeep, acknowledged, not the application's.
                        let now = Instant::now();
                        info!(?command, "Instance ID control message");
                        if let Some(id) = id {
                            session.delivered(&id, now);
                        }
                        app_upkeep.owe(command, now);
                        continue;
                    }
                    let handover = self.handover_of(stanza, id);
                    if let Some(ended) = self.hand_over(handover).await {
                        return Some(ended);
                    }
                }
                SessionEvent::UnknownFrame { tag } => {
                    debug!(tag, "ignoring a frame with an unknown tag");
                }
                SessionEvent::Disconnected(reason) => {
                    return Some(Ended::Failed(reason.into()));
                }
            }
        }
        None
    }

    /// On a requested stop: store what the application took, acknowledge it, and write
    /// the acknowledgement (for at most a second) before the connection is dropped.
    async fn close_gracefully(&mut self, session: &mut Session, connection: &mut McsConnection) {
        self.take_delivered(session);
        if let Some(write) = session.flush_store() {
            match self.persist(write.state).await {
                Ok(()) => session.handle_stored(write.version),
                Err(error) => {
                    session.handle_store_failed();
                    warn!("cannot store the acknowledgement state: {error}");
                    return;
                }
            }
        }
        session.flush_acks();
        let write = async {
            while let Some(frame) = session.poll_transmit() {
                connection.feed(frame).await?;
            }
            SinkExt::<McsMessage>::close(connection).await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
    }

    /// Prepares a data message for the hand-over. Decoding happens on the consumer's
    /// side, and decryption on the blocking pool, so that several messages are decrypted
    /// in parallel while the connection task goes on reading; the consumer takes them in
    /// order.
    fn handover_of(
        &self,
        stanza: Box<DataMessageStanza>,
        persistent_id: Option<Arc<str>>,
    ) -> Box<Handover> {
        let keys = self.keys.clone();
        // The arrival time, for the message's metadata (docs/protocol.md §7.4).
        let received = SystemTime::now();
        let decoding = if keys.is_some() && message::is_encrypted(&stanza) {
            Decoding::Decrypting(tokio::task::spawn_blocking(move || {
                let decoded = message::decode(&stanza, keys.as_deref(), received);
                (decoded, stanza)
            }))
        } else {
            Decoding::Plain(stanza, keys, received)
        };
        Box::new(Handover {
            app: Arc::clone(&self.app),
            persistent_id,
            decoding,
            taken: Arc::clone(&self.taken),
            events: self.shared.events.clone(),
        })
    }

    /// Hands a message over, waiting while the application's queue is full. Only a boxed
    /// hand-over is held across the wait: this future is part of every connection's
    /// state. `Some` when the connection is over: stopped meanwhile, or no consumer.
    async fn hand_over(&self, handover: Box<Handover>) -> Option<Ended> {
        // Room in the queue (the common case): queued at once, the consumer woken at the
        // end of the burst.
        let handover = match self.handover.push(handover) {
            Ok(()) => return None,
            Err(PushError::Closed(_)) => return Some(Ended::Failed(ConnectionError::ConsumerGone)),
            Err(PushError::Full(handover)) => handover,
        };
        tokio::select! {
            () = self.stop.cancelled() => Some(Ended::Stopped),
            sent = self.handover.send(handover) => match sent {
                Ok(()) => None,
                Err(_) => Some(Ended::Failed(ConnectionError::ConsumerGone)),
            },
        }
    }
}

/// The Instance ID command a data message carries, if it is a control message
/// (docs/protocol.md §7.1).
fn iid_command(stanza: &DataMessageStanza) -> Option<IidCommand> {
    let data = stanza
        .app_data
        .iter()
        .map(|d| (d.key.as_str(), d.value.as_str()));
    IidCommand::from_app_data(&stanza.from, data)
}

/// The result of the upkeep running beside the connection; never ready when none runs.
async fn wait_for_upkeep(
    app_upkeep: &mut AppUpkeep,
) -> Result<Result<Identity, ConnectionError>, tokio::task::JoinError> {
    match &mut app_upkeep.running {
        Some((_, task)) => task.await,
        None => std::future::pending().await,
    }
}

/// Writes every frame the session has for the connection, then flushes.
async fn write_frames(
    session: &mut Session,
    connection: &mut McsConnection,
) -> Result<(), ConnectionError> {
    let write_error = |e: McsError| match e {
        McsError::Io(e) => ConnectionError::Write(Arc::new(e)),
        other => ConnectionError::Decode(Arc::new(other)),
    };
    let mut wrote = false;
    while let Some(frame) = session.poll_transmit() {
        connection.feed(frame).await.map_err(write_error)?;
        wrote = true;
    }
    if wrote {
        SinkExt::<McsMessage>::flush(connection)
            .await
            .map_err(write_error)?;
    }
    Ok(())
}

/// Idle: gives back the buffers a burst grew.
fn give_back_buffers(connection: &mut McsConnection) {
    if connection.read_buffer().is_empty() && connection.read_buffer().capacity() > IDLE_BUFFER {
        *connection.read_buffer_mut() = bytes::BytesMut::with_capacity(IDLE_BUFFER);
    }
    if connection.write_buffer().is_empty() {
        *connection.write_buffer_mut() = bytes::BytesMut::new();
    }
}

/// The result of the store write in flight; never ready when there is none.
async fn wait_for(writing: &mut Writing) -> Result<(), StoreError> {
    match writing {
        Some((_, write)) => write.await.map_err(|e| StoreError::Task(e.to_string()))?,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

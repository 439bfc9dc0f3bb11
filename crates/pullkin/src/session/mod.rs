//! The MCS session: every protocol rule of the push connection, with no I/O.
//!
//! A [`Session`] lives as long as one app's listener, across any number of connections.
//! It is driven from outside, in the style of a sans-IO state machine:
//!
//! - inputs: [`Session::connect`] when a new connection is up, [`Session::handle_frame`]
//!   for each frame received, [`Session::handle_timeout`] when the time from
//!   [`Session::poll_timeout`] has come, [`Session::delivered`] once the application
//!   took a message, and [`Session::handle_stored`] when a store write finished;
//! - outputs: [`Session::poll_transmit`] for the frames to write, [`Session::poll_event`]
//!   for what the application and the driver must know, [`Session::poll_store`] for the
//!   acknowledgement state to store now, and [`Session::poll_timeout`] for the next
//!   deadline (heartbeat, acknowledgement delay or store turn, whichever comes first).
//!
//! Driving it, after every input:
//!
//! 1. write every frame of [`Session::poll_transmit`];
//! 2. start the write of [`Session::poll_store`], if any, and report its end with
//!    [`Session::handle_stored`] (or [`Session::handle_store_failed`]);
//! 3. act on every [`Session::poll_event`];
//! 4. sleep until [`Session::poll_timeout`] or the next input, then call
//!    [`Session::handle_timeout`] if the time came.
//!
//! [`ReconnectPolicy`] (in `reconnect`) is the same kind of state for the time between
//! connections. Nothing in this folder does I/O or reads a clock; it uses `mcs-codec`'s
//! frames and nothing else of the crate, and `listen`'s driver is its one user here.
//! Everything here takes the time as an argument: tests drive it with a fake clock.
//!
//! ## Acknowledgements
//!
//! Both sides count the frames they send and receive (the LoginRequest is the client's
//! stream id 1, the LoginResponse the server's). Every frame the client writes carries
//! `last_stream_id_received`: it tells the server which of its frames arrived, and the
//! server treats the messages of those frames as acknowledged. This session reports a
//! stream id only once every persistent message up to it was taken by the application,
//! so a message is never acknowledged before the application has it.
//!
//! Delivered persistent ids are *unacked* until a frame reporting their stream id (or a
//! SelectiveAck naming them) is written; they are then *awaiting confirmation*, keyed by
//! that frame's stream id, until the server reports having received that frame. Both sets
//! go into the next LoginRequest's `received_persistent_id` after a reconnect, and into
//! [`Session::ack_state`], so that the ids survive a restart. Store writes are grouped
//! (at most one per [`SessionConfig::store_interval`], running beside the connection):
//! a taken id is acknowledged only once a write that records it has finished. Confirmed
//! ids are forgotten (apart from a bounded list of recent ones kept to drop late
//! duplicates), so the stored state stays small. The rules are those of
//! docs/protocol.md §3.
//!
//! ## Stored ids expire, and a login carries a bounded number
//!
//! As Chromium does (docs/protocol.md §7.3), an id the server never confirmed is not kept
//! forever: at each [`Session::connect`], ids older than [`SessionConfig::id_expiry`]
//! (7 days by default) are forgotten instead of going into the LoginRequest, and the
//! LoginRequest carries at most [`SessionConfig::max_login_ids`] (1 000 by default): the
//! oldest beyond that are forgotten first. A receiver that sent some 28 000 ids had every
//! login closed by the server. A forgotten id joins the recent ids, so that a redelivery
//! of it is acknowledged again and not handed to the application twice (while the recent
//! list still holds it).
//!
//! An id's age counts from when it arrived, and survives a restart: [`AckState`] carries
//! each unconfirmed id's arrival as a time of day ([`UnconfirmedId::received`]). The
//! session reads no clock, so [`Session::new`] takes one moment on both clocks (an
//! [`Instant`] and a [`SystemTime`]) and converts between the two through it: a restored
//! id's arrival becomes an instant that far before, and [`Session::ack_state`] turns the
//! instants back into times of day. A stored time in the future (the wall clock went
//! back) counts as the moment the session was made; a time too old for an [`Instant`] is
//! no problem (ages are kept as signed offsets from that moment), and it expires at the
//! next connection like any other. An id whose time a store does not know (a state
//! written before times were stored) is given the time it was loaded at: its age starts
//! at the restore, so it is never forgotten early.

mod reconnect;

pub use reconnect::{Reconnect, ReconnectPolicy};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mcs_codec::proto::{
    AppData, DataMessageStanza, Extension, HeartbeatAck, HeartbeatPing, IqStanza, LoginRequest,
    SelectiveAck, Setting, iq_stanza::IqType, login_request::AuthService,
};
use mcs_codec::{McsMessage, SELECTIVE_ACK_EXTENSION, STREAM_ACK_EXTENSION};
use prost::Message as _;

/// The category of data messages addressed to the client itself.
const GTALK_SERVICE_CATEGORY: &str = "com.google.android.gsf.gtalkservice";

/// Settings of a [`Session`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The device's android id (from check-in).
    pub android_id: u64,
    /// The device's security token (from check-in). Never logged.
    pub security_token: u64,
    /// The client version string sent as the LoginRequest id.
    pub client_id: String,
    /// Send a HeartbeatPing after this long without receiving anything.
    pub heartbeat_interval: Duration,
    /// Consider the connection dead when nothing arrives this long after a ping (or after
    /// the LoginRequest).
    pub heartbeat_timeout: Duration,
    /// Ask the server to ping at this interval (the `hbping` login setting).
    pub server_heartbeat: Option<Duration>,
    /// Follow the heartbeat interval the server sets in its LoginResponse.
    pub follow_server_heartbeat_config: bool,
    /// Send a StreamAck once this many delivered ids are unacked.
    pub ack_batch: usize,
    /// Send a StreamAck at the latest this long after an id was delivered, even when
    /// fewer than `ack_batch` are waiting.
    pub ack_delay: Duration,
    /// How many confirmed ids to remember to drop late duplicates.
    pub recent_ids: usize,
    /// At most one store write of the acknowledgement state per this interval.
    pub store_interval: Duration,
    /// An unconfirmed id older than this (counted from its arrival, across restarts) is
    /// forgotten at the next connection instead of going into its LoginRequest
    /// (docs/protocol.md §7.3).
    pub id_expiry: Duration,
    /// A LoginRequest carries at most this many ids; the oldest beyond it are forgotten
    /// first (docs/protocol.md §7.3).
    pub max_login_ids: usize,
}

impl SessionConfig {
    /// Settings for a device with the defaults: `chrome-63.0.3234.0`, a ping after 60 s of
    /// silence with a 30 s deadline, the server asked to ping every 60 s, acks every 10
    /// messages or after 1 s, 4 096 recent ids remembered, a store write at most every
    /// 20 ms, unconfirmed ids forgotten after 7 days and at most 1 000 of them in a login.
    #[must_use]
    pub fn new(android_id: u64, security_token: u64) -> Self {
        Self {
            android_id,
            security_token,
            client_id: "chrome-63.0.3234.0".to_owned(),
            heartbeat_interval: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(30),
            server_heartbeat: Some(Duration::from_secs(60)),
            follow_server_heartbeat_config: true,
            ack_batch: 10,
            ack_delay: Duration::from_secs(1),
            recent_ids: 4096,
            store_interval: Duration::from_millis(20),
            id_expiry: DEFAULT_ID_EXPIRY,
            max_login_ids: DEFAULT_MAX_LOGIN_IDS,
        }
    }
}

/// How long an unconfirmed id is kept by default: 7 days (docs/protocol.md §7.3).
pub(crate) const DEFAULT_ID_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many ids a LoginRequest carries at most by default (docs/protocol.md §7.3): far
/// below the 28 000 at which the server was seen closing every login.
pub(crate) const DEFAULT_MAX_LOGIN_IDS: usize = 1000;

/// What must survive a restart: the ids whose acknowledgement the server has not yet
/// confirmed, with when each arrived, and recently confirmed ids (to drop late
/// duplicates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckState {
    /// Delivered ids not yet confirmed by the server, with their arrival times. They go
    /// into the next LoginRequest's `received_persistent_id`, unless older than
    /// [`SessionConfig::id_expiry`] by then (docs/protocol.md §7.3).
    pub unconfirmed: Vec<UnconfirmedId>,
    /// Ids the server confirmed recently, oldest first; bounded.
    pub recent: Vec<Arc<str>>,
}

/// A delivered id not yet confirmed by the server, and when it arrived (the time of day,
/// so that its age survives a restart; docs/protocol.md §7.3).
///
/// A store that does not know an id's time (one written before times were stored) gives
/// it the time it was loaded at: its age then starts at the restore.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct UnconfirmedId {
    /// The persistent id (shared with the session: no copy).
    pub id: Arc<str>,
    /// When it arrived.
    pub received: SystemTime,
}

impl UnconfirmedId {
    /// The latest arrival time a store keeps, in Unix milliseconds: the end of the year
    /// 9999. A later one read back is corrupt.
    pub const MAX_RECEIVED_UNIX_MS: u64 = 253_402_300_799_999;

    /// The id `id`, arrived at `received`.
    #[must_use]
    pub fn new(id: impl Into<Arc<str>>, received: SystemTime) -> Self {
        Self {
            id: id.into(),
            received,
        }
    }

    /// The id `id`, arrived `ms` milliseconds after the Unix epoch, as a store keeps it;
    /// `None` past [`UnconfirmedId::MAX_RECEIVED_UNIX_MS`].
    #[must_use]
    pub fn from_unix_ms(id: impl Into<Arc<str>>, ms: u64) -> Option<Self> {
        let received = (ms <= Self::MAX_RECEIVED_UNIX_MS)
            .then(|| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
            .flatten()?;
        Some(Self::new(id, received))
    }

    /// The arrival time in Unix milliseconds, as a store keeps it: 0 for a time before
    /// 1970, at most [`UnconfirmedId::MAX_RECEIVED_UNIX_MS`].
    #[must_use]
    pub fn received_unix_ms(&self) -> u64 {
        self.received
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(Self::MAX_RECEIVED_UNIX_MS)
            })
            .min(Self::MAX_RECEIVED_UNIX_MS)
    }
}

/// The moment a [`Session`] was made, on both clocks: times of day (stored arrival times)
/// and instants convert through it.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    wall: SystemTime,
}

/// A moment as signed nanoseconds from [`Clock::instant`] (negative: before it). Any
/// stored arrival time fits, however old, where an [`Instant`] may not.
type Stamp = i128;

/// `duration` in nanoseconds (at most about 1.8e28: it fits).
fn nanos(duration: Duration) -> Stamp {
    Stamp::try_from(duration.as_nanos()).unwrap_or(Stamp::MAX)
}

impl Clock {
    /// The stamp of an instant.
    fn stamp(&self, at: Instant) -> Stamp {
        match at.checked_duration_since(self.instant) {
            Some(after) => nanos(after),
            None => -nanos(self.instant.duration_since(at)),
        }
    }

    /// The stamp of a time of day; one after [`Clock::wall`] (in the future) counts as
    /// the clock's moment.
    fn stamp_wall(&self, at: SystemTime) -> Stamp {
        self.wall.duration_since(at).map_or(0, |age| -nanos(age))
    }

    /// The time of day of a stamp.
    fn wall_at(&self, stamp: Stamp) -> SystemTime {
        let magnitude = stamp.unsigned_abs();
        let billion = 1_000_000_000;
        let duration = u64::try_from(magnitude / billion).map_or(Duration::MAX, |secs| {
            // The remainder is below a billion: it fits.
            Duration::new(secs, u32::try_from(magnitude % billion).unwrap_or(0))
        });
        let at = if stamp < 0 {
            self.wall.checked_sub(duration)
        } else {
            self.wall.checked_add(duration)
        };
        // Only a stamp made from a time of day is far from the clock's moment, and that
        // time is representable; any other gives the clock's moment, not a panic.
        at.unwrap_or(self.wall)
    }
}

/// A store write to make: the acknowledgement state as of `version`. Report its end
/// with [`Session::handle_stored`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreWrite {
    /// The version of the state, for [`Session::handle_stored`].
    pub version: u64,
    /// The state to store.
    pub state: AckState,
}

/// A frame to write, or an acknowledgement to encode when its turn comes.
#[derive(Debug)]
// Frames are queued inline, as they were before acknowledgements became intents: boxing
// each would cost an allocation per heartbeat and acknowledgement.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    Frame(McsMessage),
    /// A StreamAck: reports the highest stream id whose messages were all taken.
    StreamAck,
    /// A SelectiveAck naming ids of an earlier connection.
    SelectiveAck(Vec<Id>),
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No connection: before [`Session::connect`] or after the connection ended.
    Disconnected,
    /// The LoginRequest is out; waiting for the LoginResponse.
    LoggingIn,
    /// Logged in and receiving.
    Online,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The server refused the login.
    LoginFailed {
        /// The error code of the LoginResponse.
        code: i32,
        /// Its message, if any.
        message: Option<String>,
    },
    /// The server closed the connection (Close frame).
    ServerClosed,
    /// The server sent a StreamErrorStanza.
    StreamError {
        /// The error's type.
        kind: String,
        /// Its text, if any.
        text: Option<String>,
    },
    /// Nothing arrived within the heartbeat deadline.
    HeartbeatTimeout,
    /// The server sent something other than a LoginResponse before logging in.
    UnexpectedFrame {
        /// The frame's tag.
        tag: u8,
    },
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LoginFailed { code, message } => {
                write!(f, "login refused with code {code}")?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Self::ServerClosed => f.write_str("the server closed the connection"),
            Self::StreamError { kind, text } => {
                write!(f, "stream error {kind}")?;
                if let Some(text) = text {
                    write!(f, ": {text}")?;
                }
                Ok(())
            }
            Self::HeartbeatTimeout => f.write_str("no answer within the heartbeat deadline"),
            Self::UnexpectedFrame { tag } => {
                write!(f, "unexpected frame with tag {tag} before the login answer")
            }
        }
    }
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The login succeeded.
    LoggedIn {
        /// The heartbeat interval now in force.
        heartbeat_interval: Duration,
    },
    /// A push message for the application, with its persistent id if it has one (shared
    /// with the session: no copy). Call [`Session::delivered`] with that id once the
    /// application took it.
    Message(Box<DataMessageStanza>, Option<Arc<str>>),
    /// A frame with a tag this client has no use for.
    UnknownFrame {
        /// The frame's tag.
        tag: u8,
    },
    /// The connection is over; the driver reconnects.
    Disconnected(Disconnect),
}

/// Where a persistent id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdState {
    /// Handed to the application, not yet taken: the stream id it arrived with on the
    /// current connection (0 when it arrived on an earlier one), and whether the server
    /// asked for an immediate acknowledgement.
    Pending(i32, bool),
    /// Taken; not yet reported to the server.
    Unacked,
    /// Reported in the frame with this outgoing stream id; awaiting confirmation.
    Acked(i32),
}

/// A persistent id, shared by the maps and queues that track it (no copy per move).
type Id = Arc<str>;

/// Maps keyed by ids use foldhash: several lookups per message, and its per-process
/// random seed keeps the protection against chosen keys.
type IdMap<V> = foldhash::HashMap<Id, V>;
type IdSet = foldhash::HashSet<Id>;

/// A taken id waiting to be stored before it may be acknowledged.
#[derive(Debug)]
struct Undurable {
    id: Id,
    /// The stream id it arrived with on this connection (0: an earlier one).
    stream: i32,
    /// The state version that recorded it.
    version: u64,
    /// The server asked for an immediate acknowledgement.
    immediate: bool,
}

/// The MCS session state machine. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: SessionState,
    /// Frames sent on this connection (the LoginRequest is 1).
    stream_id_out: i32,
    /// Frames received on this connection (the LoginResponse is 1).
    stream_id_in: i32,
    /// The `last_stream_id_received` most recently sent.
    reported_in: i32,
    /// Every id not yet confirmed, with its state.
    ids: IdMap<IdState>,
    /// When each id of `ids` arrived, for its expiry (restored ids: their stored time).
    /// Kept in step with `ids`.
    since: IdMap<Stamp>,
    /// The moment the session was made, on both clocks.
    clock: Clock,
    /// How many pending ids arrived with each stream id of this connection: the lowest
    /// bounds what may be reported as received.
    pending_streams: BTreeMap<i32, u32>,
    /// Taken ids not yet stored durably, in delivery order, with their stream id and the
    /// state version that recorded them: not to be acknowledged before they are stored.
    undurable: VecDeque<Undurable>,
    /// Unacked ids in delivery order, with the stream id that covers them (0: an earlier
    /// connection's, which needs a SelectiveAck).
    unacked: VecDeque<(Id, i32)>,
    /// Acked ids by the outgoing stream id of the frame that acked them.
    awaiting: BTreeMap<i32, Vec<Id>>,
    /// Recently confirmed ids, for dropping late duplicates.
    recent: VecDeque<Id>,
    recent_set: IdSet,
    /// An ack should go out now (batch full or `immediate_ack`).
    ack_wanted: bool,
    /// When the oldest unacked id must be acknowledged at the latest.
    ack_due: Option<Instant>,
    transmit: VecDeque<Outgoing>,
    events: VecDeque<SessionEvent>,
    heartbeat_interval: Duration,
    last_received: Option<Instant>,
    /// When set, the connection is dead unless a frame arrives by then.
    deadline: Option<Instant>,
    /// Bumped by every change of [`Session::ack_state`].
    version: u64,
    /// The version stored last.
    persisted_version: u64,
    /// The version of the store write in flight.
    store_in_flight: Option<u64>,
    /// The next store write may start then.
    next_store_at: Option<Instant>,
}

impl Session {
    /// A session for the device in `config`, resuming from a stored [`AckState`]. `now`
    /// and `wall` are the same moment on the monotonic clock and the clock of the day:
    /// the restored ids' ages are counted from their arrival times against `wall`, and
    /// [`Session::ack_state`] converts back through the same pair (see the module docs).
    #[must_use]
    pub fn new(config: SessionConfig, restored: AckState, now: Instant, wall: SystemTime) -> Self {
        let mut session = Self {
            clock: Clock { instant: now, wall },
            heartbeat_interval: config.heartbeat_interval,
            config,
            state: SessionState::Disconnected,
            stream_id_out: 0,
            stream_id_in: 0,
            reported_in: 0,
            ids: IdMap::default(),
            since: IdMap::default(),
            pending_streams: BTreeMap::new(),
            undurable: VecDeque::new(),
            unacked: VecDeque::new(),
            awaiting: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_set: IdSet::default(),
            ack_wanted: false,
            ack_due: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_received: None,
            deadline: None,
            version: 0,
            persisted_version: 0,
            store_in_flight: None,
            next_store_at: None,
        };
        for id in restored.recent {
            session.remember_recent(id);
        }
        for UnconfirmedId { id, received } in restored.unconfirmed {
            if !session.ids.contains_key(&id) {
                session.recent_set.remove(&id);
                session
                    .since
                    .insert(Arc::clone(&id), session.clock.stamp_wall(received));
                session.ids.insert(Arc::clone(&id), IdState::Unacked);
                session.unacked.push_back((id, 0));
            }
        }
        session
    }

    // ---- getters ----

    /// Where the session stands.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The heartbeat interval in force.
    #[must_use]
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// When the last frame arrived.
    #[must_use]
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    /// What must survive a restart: the ids not yet confirmed, with their arrival times
    /// (converted to times of day through the pair given to [`Session::new`]), and the
    /// recent ones.
    #[must_use]
    pub fn ack_state(&self) -> AckState {
        // Shared, not copied: a snapshot is taken for every store write, and thousands of
        // ids may await confirmation during a burst.
        let dated = |id: &Id| {
            // Every id of `ids` has its time; the clock's moment would only stand in.
            let since = self.since.get(id).copied().unwrap_or(0);
            UnconfirmedId {
                id: Arc::clone(id),
                received: self.clock.wall_at(since),
            }
        };
        let mut unconfirmed: Vec<UnconfirmedId> = Vec::with_capacity(self.ids.len());
        unconfirmed.extend(self.awaiting.values().flatten().map(dated));
        unconfirmed.extend(self.unacked.iter().map(|(id, _)| dated(id)));
        unconfirmed.extend(self.undurable.iter().map(|u| dated(&u.id)));
        AckState {
            unconfirmed,
            recent: self.recent.iter().cloned().collect(),
        }
    }

    /// Whether [`Session::ack_state`] changed since it was last stored.
    #[must_use]
    pub fn ack_state_dirty(&self) -> bool {
        self.version != self.persisted_version
    }

    /// A store write whose turn came at `now`: the state changed since the last write,
    /// no write is in flight, and the last one started at least
    /// [`SessionConfig::store_interval`] ago (each write records the whole state, so
    /// during a burst they are spaced out). While connected only; see
    /// [`Session::flush_store`] for the last write before stopping.
    pub fn poll_store(&mut self, now: Instant) -> Option<StoreWrite> {
        if self.state == SessionState::Disconnected
            || !self.ack_state_dirty()
            || self.store_in_flight.is_some()
            || self.next_store_at.is_some_and(|at| now < at)
        {
            return None;
        }
        self.next_store_at = Some(now + self.config.store_interval);
        self.store_in_flight = Some(self.version);
        Some(StoreWrite {
            version: self.version,
            state: self.ack_state(),
        })
    }

    /// The write to make now, whatever the turn, when the state changed since it was
    /// stored: before stopping, or after [`Session::set_identity`] reset it.
    pub fn flush_store(&mut self) -> Option<StoreWrite> {
        if !self.ack_state_dirty() {
            return None;
        }
        self.store_in_flight = Some(self.version);
        Some(StoreWrite {
            version: self.version,
            state: self.ack_state(),
        })
    }

    /// The store write of `version` finished: ids taken up to then may now be
    /// acknowledged.
    pub fn handle_stored(&mut self, version: u64) {
        self.store_in_flight = None;
        self.persisted_up_to(version);
    }

    /// The store write in flight failed; the state stays dirty.
    pub fn handle_store_failed(&mut self) {
        self.store_in_flight = None;
    }

    /// Records that [`Session::ack_state`] as of `version` is stored.
    fn persisted_up_to(&mut self, version: u64) {
        self.persisted_version = self.persisted_version.max(version.min(self.version));
        let mut moved = false;
        while self
            .undurable
            .front()
            .is_some_and(|u| u.version <= self.persisted_version)
        {
            if let Some(u) = self.undurable.pop_front() {
                // Only a SelectiveAck can name an id of an earlier connection: send it now.
                if u.immediate || u.stream == 0 {
                    self.ack_wanted = true;
                }
                self.unacked.push_back((u.id, u.stream));
                moved = true;
            }
        }
        // A full batch goes out now; so do ids whose ack delay ran out while stored.
        if moved && (self.unacked.len() >= self.config.ack_batch.max(1) || self.ack_due.is_none()) {
            self.ack_wanted = true;
        }
    }

    /// How many ids are handed out and not yet taken by the application.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.ids
            .values()
            .filter(|state| matches!(state, IdState::Pending(..)))
            .count()
    }

    // ---- inputs ----

    /// The device identity to log in with from the next [`Session::connect`] on. A new
    /// identity starts over with an empty acknowledgement state (the old state belongs
    /// to the old device): returns whether it did; the empty state is then dirty, for
    /// [`Session::flush_store`].
    pub fn set_identity(&mut self, android_id: u64, security_token: u64) -> bool {
        if android_id == self.config.android_id && security_token == self.config.security_token {
            return false;
        }
        let mut config = self.config.clone();
        config.android_id = android_id;
        config.security_token = security_token;
        let version = self.version;
        *self = Session::new(
            config,
            AckState::default(),
            self.clock.instant,
            self.clock.wall,
        );
        // Dirty: the store still holds the old device's state.
        self.version = version.wrapping_add(1);
        self.persisted_version = version;
        true
    }

    /// A new connection is up (TLS established): queues the LoginRequest. Any previous
    /// connection's per-connection state is dropped; ids carry over.
    pub fn connect(&mut self, now: Instant) {
        self.transmit.clear();
        self.stream_id_out = 0;
        self.stream_id_in = 0;
        self.reported_in = 0;
        self.ack_wanted = false;
        self.ack_due = None;
        self.heartbeat_interval = self.config.heartbeat_interval;
        self.last_received = None;
        // Ids pending from an earlier connection no longer have a stream id here.
        self.pending_streams.clear();
        for entry in &mut self.undurable {
            entry.stream = 0;
        }
        for state in self.ids.values_mut() {
            if let IdState::Pending(stream, _) = state {
                *stream = 0;
            }
        }
        // Everything not confirmed goes into the login and counts as acked by it.
        let mut received = Vec::new();
        for (_, ids) in std::mem::take(&mut self.awaiting) {
            received.extend(ids);
        }
        received.extend(self.unacked.drain(..).map(|(id, _)| id));
        let received = self.expire_and_bound(received, now);
        for id in &received {
            self.ids.insert(Arc::clone(id), IdState::Acked(1));
        }
        let login = self.login_request(received.iter().map(|id| id.to_string()).collect());
        if !received.is_empty() {
            self.awaiting.insert(1, received);
        }
        self.stream_id_out = 1;
        self.transmit.push_back(Outgoing::Frame(login.into()));
        self.state = SessionState::LoggingIn;
        self.deadline = Some(now + self.config.heartbeat_timeout);
    }

    /// The ids for a LoginRequest: without those older than the expiry, and at most the
    /// bound, the oldest dropped first (docs/protocol.md §7.3); the ones left out are
    /// forgotten (kept as recent ids).
    fn expire_and_bound(&mut self, received: Vec<Id>, now: Instant) -> Vec<Id> {
        let now = self.clock.stamp(now);
        let mut dated: Vec<(Stamp, Id)> = received
            .into_iter()
            .map(|id| (*self.since.entry(Arc::clone(&id)).or_insert(now), id))
            .collect();
        // Oldest first; ids of the same age keep their order (a restored state's order is
        // oldest first).
        dated.sort_by_key(|(since, _)| *since);
        let expiry = nanos(self.config.id_expiry);
        let expired = dated
            .iter()
            .take_while(|(since, _)| now.saturating_sub(*since) >= expiry)
            .count();
        let over = dated
            .len()
            .saturating_sub(expired)
            .saturating_sub(self.config.max_login_ids);
        let kept = dated.split_off(expired + over);
        for (_, id) in dated {
            self.forget(id);
        }
        kept.into_iter().map(|(_, id)| id).collect()
    }

    /// Forgets an unconfirmed id (expired, or beyond a login's bound): it joins the recent
    /// ids, so that a redelivery is acknowledged again, not delivered.
    fn forget(&mut self, id: Id) {
        self.ids.remove(&id);
        self.since.remove(&id);
        self.remember_recent(id);
        self.touch();
    }

    /// The connection ended from the outside (I/O error, end of stream). No event is
    /// emitted: the caller knows why.
    pub fn disconnected(&mut self) {
        self.state = SessionState::Disconnected;
        self.transmit.clear();
        self.deadline = None;
    }

    /// A frame arrived.
    pub fn handle_frame(&mut self, message: McsMessage, now: Instant) {
        if self.state == SessionState::Disconnected {
            return;
        }
        self.stream_id_in = self.stream_id_in.saturating_add(1);
        self.last_received = Some(now);
        self.deadline = None;
        if let Some(last) = message.last_stream_id_received() {
            self.confirm_up_to(last);
        }
        if self.state == SessionState::LoggingIn
            && !matches!(
                message,
                McsMessage::Close(_) | McsMessage::StreamErrorStanza(_)
            )
        {
            self.handle_login_response(message);
            return;
        }
        match message {
            McsMessage::HeartbeatPing(_) => {
                self.transmit
                    .push_back(Outgoing::Frame(McsMessage::HeartbeatAck(
                        HeartbeatAck::default(),
                    )));
            }
            McsMessage::HeartbeatAck(_) | McsMessage::LoginResponse(_) => {}
            McsMessage::Close(_) => self.end(Disconnect::ServerClosed),
            McsMessage::StreamErrorStanza(error) => self.end(Disconnect::StreamError {
                kind: error.r#type,
                text: error.text,
            }),
            McsMessage::IqStanza(iq) => self.handle_iq(&iq),
            McsMessage::DataMessageStanza(message) => self.handle_data(message, now),
            other => self
                .events
                .push_back(SessionEvent::UnknownFrame { tag: other.tag() }),
        }
    }

    /// The time from [`Session::poll_timeout`] has come (or passed).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == SessionState::Disconnected {
            return;
        }
        if self.ack_due.is_some_and(|due| now >= due) {
            self.ack_due = None;
            self.ack_wanted = true;
        }
        if let Some(deadline) = self.deadline {
            if now >= deadline {
                self.end(Disconnect::HeartbeatTimeout);
            }
            return;
        }
        // Idle: give back what bursts grew (thousands of idle connections add up).
        if self.transmit.is_empty() {
            self.transmit.shrink_to_fit();
        }
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
        if self.state == SessionState::Online
            && let Some(last) = self.last_received
            && now >= last + self.heartbeat_interval
        {
            self.ping(now);
        }
    }

    /// Checks now that the connection still carries anything, as after a system resume or
    /// a network change, instead of waiting for the heartbeat interval: when online with no
    /// ping outstanding, a HeartbeatPing is queued and the connection ends
    /// ([`Disconnect::HeartbeatTimeout`]) unless a frame arrives within the heartbeat
    /// timeout. While logging in (its own deadline runs), with a ping outstanding, or
    /// disconnected, nothing changes.
    pub fn probe(&mut self, now: Instant) {
        if self.state == SessionState::Online && self.deadline.is_none() {
            self.ping(now);
        }
    }

    /// Queues a HeartbeatPing; the connection ends unless a frame arrives within the
    /// heartbeat timeout.
    fn ping(&mut self, now: Instant) {
        self.transmit
            .push_back(Outgoing::Frame(McsMessage::HeartbeatPing(
                HeartbeatPing::default(),
            )));
        self.deadline = Some(now + self.config.heartbeat_timeout);
    }

    /// The application took the message with this persistent id: it may now be
    /// acknowledged. Unknown or repeated ids are ignored.
    pub fn delivered(&mut self, persistent_id: &str, now: Instant) {
        let Some((id, state)) = self.ids.get_key_value(persistent_id) else {
            return;
        };
        let IdState::Pending(stream, immediate) = *state else {
            return;
        };
        let id = Arc::clone(id);
        self.ids.insert(Arc::clone(&id), IdState::Unacked);
        unblock(&mut self.pending_streams, stream);
        self.touch();
        self.undurable.push_back(Undurable {
            id,
            stream,
            version: self.version,
            immediate,
        });
        if self.ack_due.is_none() {
            self.ack_due = Some(now + self.config.ack_delay);
        }
    }

    // ---- outputs ----

    /// The next frame to write, with its acknowledgement fields filled in. Store
    /// [`Session::ack_state`] first when [`Session::ack_state_dirty`] says so.
    pub fn poll_transmit(&mut self) -> Option<McsMessage> {
        if self.state == SessionState::Online && self.ack_wanted && self.transmit.is_empty() {
            self.ack_wanted = false;
            self.queue_acks();
        }
        let outgoing = self.transmit.pop_front()?;
        if self.transmit.is_empty() {
            // Frames are large (a LoginRequest inline): an idle connection keeps no room
            // for them (thousands of idle connections add up).
            self.transmit = VecDeque::new();
        }
        let mut message = match outgoing {
            Outgoing::Frame(message @ McsMessage::LoginRequest(_)) => return Some(message),
            Outgoing::Frame(message) => message,
            Outgoing::StreamAck => {
                let report = self.reportable_in();
                self.acked_by_stream_ack(report);
                ack_iq(STREAM_ACK_EXTENSION, Bytes::new())
            }
            Outgoing::SelectiveAck(ids) => {
                let ack = SelectiveAck {
                    id: ids.iter().map(|id| id.to_string()).collect(),
                };
                self.acked_selectively(ids);
                ack_iq(SELECTIVE_ACK_EXTENSION, Bytes::from(ack.encode_to_vec()))
            }
        };
        // The stream id this frame takes; the acks above were booked under it.
        self.stream_id_out = self.stream_id_out.saturating_add(1);
        message.set_last_stream_id_received(self.reportable_in());
        Some(message)
    }

    /// Acknowledges every delivered id now (e.g. before a clean shutdown).
    pub fn flush_acks(&mut self) {
        if !self.unacked.is_empty() {
            self.ack_wanted = true;
        }
    }

    /// Whether delivered ids are waiting to be acknowledged on this connection.
    #[must_use]
    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty() || !self.undurable.is_empty() || self.ack_wanted
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next (and [`Session::poll_store`]
    /// asked again).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == SessionState::Disconnected {
            return None;
        }
        let liveness = match (self.deadline, self.state, self.last_received) {
            (Some(deadline), _, _) => Some(deadline),
            (None, SessionState::Online, Some(last)) => Some(last + self.heartbeat_interval),
            _ => None,
        };
        let ack = self.ack_due.filter(|_| self.state == SessionState::Online);
        // A store write that is wanted but waits for its turn.
        let store = self
            .next_store_at
            .filter(|_| self.ack_state_dirty() && self.store_in_flight.is_none());
        [liveness, ack, store].into_iter().flatten().min()
    }

    // ---- internals ----

    fn login_request(&self, received: Vec<String>) -> LoginRequest {
        let android_id = self.config.android_id.to_string();
        let mut setting = vec![Setting {
            name: "new_vc".to_owned(),
            value: "1".to_owned(),
        }];
        if let Some(interval) = self.config.server_heartbeat {
            setting.push(Setting {
                name: "hbping".to_owned(),
                value: interval.as_millis().to_string(),
            });
        }
        LoginRequest {
            id: self.config.client_id.clone(),
            domain: "mcs.android.com".to_owned(),
            user: android_id.clone(),
            resource: android_id,
            auth_token: self.config.security_token.to_string(),
            device_id: Some(format!("android-{:x}", self.config.android_id)),
            setting,
            received_persistent_id: received,
            adaptive_heartbeat: Some(false),
            use_rmq2: Some(true),
            auth_service: Some(AuthService::AndroidId as i32),
            network_type: Some(1),
            ..Default::default()
        }
    }

    fn handle_login_response(&mut self, message: McsMessage) {
        let McsMessage::LoginResponse(response) = message else {
            self.end(Disconnect::UnexpectedFrame { tag: message.tag() });
            return;
        };
        if let Some(error) = response.error.filter(|e| e.code != 0) {
            self.end(Disconnect::LoginFailed {
                code: error.code,
                message: error.message,
            });
            return;
        }
        if self.config.follow_server_heartbeat_config
            && let Some(ms) = response.heartbeat_config.and_then(|c| c.interval_ms)
            && ms > 0
        {
            self.heartbeat_interval = Duration::from_millis(u64::from(ms.unsigned_abs()));
        }
        self.state = SessionState::Online;
        self.events.push_back(SessionEvent::LoggedIn {
            heartbeat_interval: self.heartbeat_interval,
        });
        // Ids restored from an earlier connection but pending are delivered later and
        // acked selectively; anything already unacked goes out now.
        if !self.unacked.is_empty() {
            self.ack_wanted = true;
        }
    }

    fn handle_iq(&mut self, iq: &IqStanza) {
        let Some(extension) = &iq.extension else {
            return;
        };
        if extension.id == SELECTIVE_ACK_EXTENSION
            && let Ok(ack) = SelectiveAck::decode(extension.data.clone())
        {
            for id in ack.id {
                let id = Id::from(id);
                if let Some(IdState::Acked(stream)) = self.ids.get(&id).copied() {
                    if let Some(ids) = self.awaiting.get_mut(&stream) {
                        ids.retain(|other| other != &id);
                        if ids.is_empty() {
                            self.awaiting.remove(&stream);
                        }
                    }
                    self.ids.remove(&id);
                    self.since.remove(&id);
                    self.remember_recent(id);
                    self.touch();
                }
            }
        }
    }

    fn handle_data(&mut self, message: DataMessageStanza, now: Instant) {
        if message.category == GTALK_SERVICE_CATEGORY {
            if message.app_data.iter().any(|d| d.key == "IdleNotification") {
                self.transmit.push_back(Outgoing::Frame(
                    DataMessageStanza {
                        from: "gcm@android.com".to_owned(),
                        category: GTALK_SERVICE_CATEGORY.to_owned(),
                        app_data: vec![AppData {
                            key: "IdleNotification".to_owned(),
                            value: "false".to_owned(),
                        }],
                        ttl: Some(0),
                        ..Default::default()
                    }
                    .into(),
                ));
            }
            return;
        }
        let immediate = message.immediate_ack == Some(true);
        let Some(id) = message
            .persistent_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map(Id::from)
        else {
            self.events
                .push_back(SessionEvent::Message(Box::new(message), None));
            return;
        };
        let stream = self.stream_id_in;
        let arrived = self.clock.stamp(now);
        match self.ids.get_mut(&id) {
            None if self.recent_set.contains(&id) => {
                // Confirmed already, yet redelivered: acknowledge it again, deliver nothing.
                self.recent_set.remove(&id);
                self.recent.retain(|other| other != &id);
                self.since.insert(id.clone(), arrived);
                self.ids.insert(id.clone(), IdState::Unacked);
                self.unacked.push_back((id, stream));
                self.touch();
                self.ack_wanted = true;
            }
            None => {
                self.since.insert(Arc::clone(&id), arrived);
                self.ids
                    .insert(Arc::clone(&id), IdState::Pending(stream, immediate));
                *self.pending_streams.entry(stream).or_default() += 1;
                self.events
                    .push_back(SessionEvent::Message(Box::new(message), Some(id)));
            }
            Some(IdState::Pending(old, wants_now)) => {
                // Still with the application: this copy's stream id is the one to report.
                unblock(&mut self.pending_streams, *old);
                *self.pending_streams.entry(stream).or_default() += 1;
                *old = stream;
                *wants_now |= immediate;
            }
            Some(_) if self.undurable.iter().any(|u| u.id == id) => {
                // Taken but not stored yet: acknowledge it once stored, with this stream id.
                // The server sent it again: acknowledge it as soon as it is stored.
                for entry in &mut self.undurable {
                    if entry.id == id {
                        entry.stream = stream;
                        entry.immediate = true;
                    }
                }
            }
            Some(state) => {
                // Delivered before: acknowledge this copy, deliver nothing.
                *state = IdState::Unacked;
                for (_, ids) in self.awaiting.iter_mut() {
                    ids.retain(|other| other != &id);
                }
                self.awaiting.retain(|_, ids| !ids.is_empty());
                self.unacked.retain(|(other, _)| other != &id);
                self.unacked.push_back((id, stream));
                self.touch();
                self.ack_wanted = true;
            }
        }
    }

    /// The highest incoming stream id whose persistent messages were all taken.
    fn reportable_in(&self) -> i32 {
        // Ids not yet taken, or taken but not yet stored, bound what may be reported.
        let undurable = self
            .undurable
            .iter()
            .map(|u| u.stream)
            .filter(|stream| *stream > 0)
            .min();
        let pending = self.pending_streams.keys().next().copied();
        let blocked = match (pending, undurable) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match blocked.as_ref() {
            Some(&stream) => (stream - 1).min(self.stream_id_in),
            None => self.stream_id_in,
        }
    }

    /// Queues a StreamAck for ids of this connection and a SelectiveAck for the others.
    fn queue_acks(&mut self) {
        let report = self.reportable_in();
        let mut selective = Vec::new();
        let mut by_stream = false;
        for (id, stream) in &self.unacked {
            if *stream == 0 {
                selective.push(Arc::clone(id));
            } else if *stream <= report {
                by_stream = true;
            }
        }
        if !selective.is_empty() {
            self.transmit.push_back(Outgoing::SelectiveAck(selective));
        }
        if by_stream {
            self.transmit.push_back(Outgoing::StreamAck);
        }
    }

    /// A StreamAck reporting `report` is being written (as the next outgoing stream id):
    /// the ids of this connection up to `report` are acknowledged by it.
    fn acked_by_stream_ack(&mut self, report: i32) {
        self.reported_in = self.reported_in.max(report);
        let mut acked = Vec::new();
        self.unacked.retain(|(id, stream)| {
            if *stream > 0 && *stream <= report {
                acked.push(Arc::clone(id));
                false
            } else {
                true
            }
        });
        self.book_acked(acked);
    }

    /// A SelectiveAck naming `ids` is being written (as the next outgoing stream id).
    fn acked_selectively(&mut self, ids: Vec<Id>) {
        let named: IdSet = ids.into_iter().collect();
        let mut acked = Vec::new();
        self.unacked.retain(|(id, _)| {
            if named.contains(id) {
                acked.push(Arc::clone(id));
                false
            } else {
                true
            }
        });
        self.book_acked(acked);
    }

    /// `acked` await the server's confirmation of the frame being written.
    fn book_acked(&mut self, acked: Vec<Id>) {
        if self.unacked.is_empty() {
            self.ack_due = None;
        }
        if acked.is_empty() {
            return;
        }
        let out = self.stream_id_out.saturating_add(1);
        for id in &acked {
            self.ids.insert(Arc::clone(id), IdState::Acked(out));
        }
        self.awaiting.entry(out).or_default().extend(acked);
        self.touch();
    }

    /// The server received our frames up to `last`: forget the ids they acknowledged.
    fn confirm_up_to(&mut self, last: i32) {
        let later = self.awaiting.split_off(&last.saturating_add(1));
        let confirmed = std::mem::replace(&mut self.awaiting, later);
        for id in confirmed.into_values().flatten() {
            self.ids.remove(&id);
            self.since.remove(&id);
            self.remember_recent(id);
            self.touch();
        }
    }

    fn remember_recent(&mut self, id: Id) {
        if self.config.recent_ids == 0 || !self.recent_set.insert(id.clone()) {
            return;
        }
        self.recent.push_back(id);
        while self.recent.len() > self.config.recent_ids {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
    }

    /// Records a change of the acknowledgement state.
    fn touch(&mut self) {
        self.version = self.version.wrapping_add(1);
    }

    fn end(&mut self, reason: Disconnect) {
        self.state = SessionState::Disconnected;
        self.transmit.clear();
        self.deadline = None;
        self.events.push_back(SessionEvent::Disconnected(reason));
    }
}

/// Forgets one pending id that arrived with `stream` (0: an earlier connection's).
fn unblock(pending_streams: &mut BTreeMap<i32, u32>, stream: i32) {
    if stream == 0 {
        return;
    }
    if let Some(count) = pending_streams.get_mut(&stream) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            pending_streams.remove(&stream);
        }
    }
}

/// An acknowledgement IQ (`set`) with the extension `id` and its encoded `data`.
fn ack_iq(id: i32, data: Bytes) -> McsMessage {
    IqStanza {
        r#type: IqType::Set as i32,
        id: String::new(),
        extension: Some(Extension { id, data }),
        ..Default::default()
    }
    .into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn clock() -> Clock {
        Clock {
            instant: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn times_of_day_and_instants_convert_through_the_pair() {
        let clock = clock();
        assert_eq!(clock.stamp(clock.instant), 0);
        assert_eq!(
            clock.stamp(clock.instant + Duration::from_millis(1500)),
            1_500_000_000
        );
        let day_ago = clock.wall - DAY;
        assert_eq!(clock.stamp_wall(day_ago), -nanos(DAY));
        assert_eq!(clock.wall_at(clock.stamp_wall(day_ago)), day_ago);
        let later = clock.instant + Duration::new(3, 7);
        assert_eq!(
            clock.wall_at(clock.stamp(later)),
            clock.wall + Duration::new(3, 7)
        );
        // An instant before the pair's (a caller's clock that went back) converts too.
        if let Some(before) = clock.instant.checked_sub(Duration::from_millis(2)) {
            assert_eq!(clock.stamp(before), -2_000_000);
        }
    }

    #[test]
    fn future_times_count_as_the_pair_and_ancient_ones_do_not_panic() {
        let clock = clock();
        assert_eq!(clock.stamp_wall(clock.wall + DAY), 0);
        // Far beyond any instant's range, both ways.
        let ancient = SystemTime::UNIX_EPOCH - Duration::from_secs(u64::MAX / 4);
        let stamp = clock.stamp_wall(ancient);
        assert!(stamp < -nanos(DAY * 365 * 1_000_000));
        assert_eq!(clock.wall_at(stamp), ancient);
        // A stamp no time of day can hold gives the pair's time, not a panic.
        assert_eq!(clock.wall_at(Stamp::MIN + 1), clock.wall);
        assert_eq!(clock.wall_at(Stamp::MAX), clock.wall);
    }
}

//! The emulator's shared state: devices, registrations, message queues and faults.
//!
//! Everything lives behind one mutex held only for short, non-blocking updates; the MCS
//! connection tasks are woken through a per-connection [`Notify`]. Every lookup on a
//! hot path (login, send, register) goes through a map or a per-device list, never a
//! scan over all devices or registrations, so thousands of devices cost no more per
//! operation than one.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mcs_codec::proto::{DataMessageStanza, LoginRequest};
use tokio::sync::Notify;

use crate::ids;

use crate::types::{
    DeviceCredentials, DeviceInfo, Endpoint, Fault, FcmRegistration, GcmRegistration, HttpFailure,
    Installation, LoginRecord, Overlap, Persona, Target,
};

/// How many acknowledged ids a device remembers for inspection.
const ACKED_HISTORY: usize = 1000;
/// How many upstream messages a device remembers for inspection.
const UPSTREAM_HISTORY: usize = 100;
/// How many one-shot actions may wait for a device.
const MAX_ACTIONS: usize = 64;
/// How many logins a device remembers for [`LoginRecord`]s.
const LOGIN_HISTORY: usize = 1000;
/// How many closed overlap intervals a device remembers.
const OVERLAP_HISTORY: usize = 10_000;

/// Something a connection must do the next time it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// A fault armed for the device.
    Fault(Fault),
    /// Send a HeartbeatPing.
    Ping,
}

/// A queued data message.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) persistent_id: String,
    pub(crate) stanza: DataMessageStanza,
    /// `(connection id, stream id)` once sent on a connection.
    pub(crate) sent: Option<(u64, i32)>,
    /// When it expires, on the emulator's clock ([`crate::shared::Shared::clock`]);
    /// `None`: never (docs/protocol.md §7.5).
    pub(crate) expires: Option<Duration>,
    /// TTL 0: delivered on the connection that was current when it was sent, or never.
    pub(crate) now_or_never: bool,
    /// A Web Push `Topic`: `(token, topic)`; a newer message with the same key replaces
    /// this one while it is undelivered (docs/protocol.md §7.5).
    pub(crate) replace_key: Option<(String, String)>,
    /// When it was queued for a device with no connection (emulator clock): it then
    /// carries `queued`, the milliseconds it waited, when sent (docs/protocol.md §7.4).
    pub(crate) waiting_since: Option<Duration>,
}

impl Queued {
    /// Whether it expired by `now` (emulator clock).
    pub(crate) fn expired(&self, now: Duration) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }
}

/// The link from a device to one of its logged-in connections.
#[derive(Debug, Clone)]
pub(crate) struct ConnLink {
    pub(crate) id: u64,
    pub(crate) notify: Arc<Notify>,
}

/// A logged-in connection of a device, from its accepted login until its task ended.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) link: ConnLink,
    /// Why the server is ending it, once decided (a newer login, a disconnect on demand);
    /// it still counts as logged in until its task has closed the socket.
    pub(crate) closing: Option<&'static str>,
}

/// The intervals during which a device had two or more connections logged in.
#[derive(Debug, Default)]
pub(crate) struct OverlapLog {
    max: usize,
    open_since: Option<Duration>,
    closed_total: Duration,
    intervals: VecDeque<(Duration, Duration)>,
}

impl OverlapLog {
    /// Records that `count` connections are logged in as of `now`.
    fn update(&mut self, count: usize, now: Duration) {
        self.max = self.max.max(count);
        match (count >= 2, self.open_since) {
            (true, None) => self.open_since = Some(now),
            (false, Some(start)) => {
                self.open_since = None;
                let end = now.max(start);
                self.closed_total += end - start;
                if self.intervals.len() >= OVERLAP_HISTORY {
                    self.intervals.pop_front();
                }
                self.intervals.push_back((start, end));
            }
            _ => {}
        }
    }

    /// The public view, an open interval ending at `now`.
    pub(crate) fn snapshot(&self, now: Duration) -> Overlap {
        let mut intervals: Vec<_> = self.intervals.iter().copied().collect();
        let mut total = self.closed_total;
        if let Some(start) = self.open_since {
            let end = now.max(start);
            intervals.push((start, end));
            total += end - start;
        }
        Overlap {
            max: self.max,
            total,
            intervals,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) credentials: DeviceCredentials,
    pub(crate) checkins: u32,
    pub(crate) logins: u32,
    pub(crate) last_login: Option<LoginRequest>,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) acked: VecDeque<String>,
    pub(crate) upstream: VecDeque<DataMessageStanza>,
    /// The logged-in connections, oldest first; the newest not closing is the current one.
    pub(crate) sessions: Vec<Session>,
    pub(crate) overlap: OverlapLog,
    pub(crate) history: VecDeque<LoginRecord>,
    /// This device's GCM tokens (the index `register_gcm` and unregister look in).
    pub(crate) gcm_tokens: Vec<String>,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) stalled: bool,
    pub(crate) pings_received: u64,
    pub(crate) heartbeat_acks_received: u64,
    pub(crate) dropped_messages: u64,
    /// Messages dropped because their time to live ran out (TTL 0 included).
    pub(crate) expired_messages: u64,
}

impl Device {
    pub(crate) fn new(credentials: DeviceCredentials) -> Self {
        Self {
            credentials,
            checkins: 0,
            logins: 0,
            last_login: None,
            queue: VecDeque::new(),
            acked: VecDeque::new(),
            upstream: VecDeque::new(),
            sessions: Vec::new(),
            overlap: OverlapLog::default(),
            history: VecDeque::new(),
            gcm_tokens: Vec::new(),
            actions: VecDeque::new(),
            stalled: false,
            pings_received: 0,
            heartbeat_acks_received: 0,
            dropped_messages: 0,
            expired_messages: 0,
        }
    }

    /// Drops the queued messages not sent on a connection whose time to live ran out by
    /// `now`, and with `reconnect` also every TTL-0 message (its connection is gone) and
    /// every expired one (docs/protocol.md §7.5). Returns how many.
    pub(crate) fn purge_expired(&mut self, now: Duration, reconnect: bool) -> usize {
        let before = self.queue.len();
        self.queue.retain(|q| {
            let unsent = q.sent.is_none() || reconnect;
            !(unsent && (q.expired(now) || (reconnect && q.now_or_never)))
        });
        let n = before - self.queue.len();
        self.expired_messages += n as u64;
        n
    }

    /// The connection that gets deliveries and the device's actions: the newest logged-in
    /// one the server is not ending.
    pub(crate) fn current(&self) -> Option<&ConnLink> {
        self.sessions
            .iter()
            .rev()
            .find(|s| s.closing.is_none())
            .map(|s| &s.link)
    }

    /// Wakes every logged-in connection (older ones only apply global faults or end).
    pub(crate) fn wake(&self) {
        for session in &self.sessions {
            session.link.notify.notify_one();
        }
    }

    /// Makes every logged-in connection close without a frame; returns how many.
    pub(crate) fn disconnect_all(&mut self) -> usize {
        let mut n = 0;
        for session in &mut self.sessions {
            if session.closing.is_none() {
                session.closing = Some("disconnected on demand");
                session.link.notify.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Registers an accepted login; with `close_older` the older connections are told to
    /// close. Returns whether two or more are now logged in.
    fn add_session(&mut self, link: ConnLink, now: Duration, close_older: bool) -> bool {
        if close_older {
            for session in &mut self.sessions {
                if session.closing.is_none() {
                    session.closing = Some("superseded by a newer login");
                    session.link.notify.notify_one();
                }
            }
        }
        if self.history.len() >= LOGIN_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(LoginRecord {
            connection_id: link.id,
            logged_in_at: now,
            ended_at: None,
        });
        self.sessions.push(Session {
            link,
            closing: None,
        });
        self.overlap.update(self.sessions.len(), now);
        self.sessions.len() >= 2
    }

    /// Unlinks a connection whose task ended. When it was the current one and an older
    /// connection is still logged in (kept open), that one becomes current and gets every
    /// message not acknowledged yet.
    fn end_session(&mut self, conn_id: u64, now: Duration) {
        let Some(pos) = self.sessions.iter().position(|s| s.link.id == conn_id) else {
            return;
        };
        let was_current = self.current().is_some_and(|c| c.id == conn_id);
        self.sessions.remove(pos);
        self.overlap.update(self.sessions.len(), now);
        if let Some(record) = self
            .history
            .iter_mut()
            .rev()
            .find(|r| r.connection_id == conn_id)
        {
            record.ended_at = Some(now);
        }
        if was_current && let Some(next) = self.current() {
            let next = next.id;
            for queued in &mut self.queue {
                if queued.sent.is_some_and(|(conn, _)| conn != next) {
                    queued.sent = None;
                }
            }
            self.wake();
        }
    }

    pub(crate) fn push_action(&mut self, action: Action) {
        if self.actions.len() >= MAX_ACTIONS {
            self.actions.pop_front();
        }
        self.actions.push_back(action);
        self.wake();
    }

    fn record_acked(&mut self, id: String) {
        if self.acked.len() >= ACKED_HISTORY {
            self.acked.pop_front();
        }
        self.acked.push_back(id);
    }

    /// Removes the queued messages matching `pred`, recording them as acknowledged.
    pub(crate) fn ack_where(&mut self, mut pred: impl FnMut(&Queued) -> bool) -> usize {
        let mut removed = Vec::new();
        self.queue.retain(|q| {
            if pred(q) {
                removed.push(q.persistent_id.clone());
                false
            } else {
                true
            }
        });
        let n = removed.len();
        for id in removed {
            self.record_acked(id);
        }
        n
    }

    pub(crate) fn record_upstream(&mut self, stanza: DataMessageStanza) {
        if self.upstream.len() >= UPSTREAM_HISTORY {
            self.upstream.pop_front();
        }
        self.upstream.push_back(stanza);
    }

    pub(crate) fn info(&self) -> DeviceInfo {
        let current = self.current().map(|c| c.id);
        let mut pending = Vec::new();
        let mut unacked = Vec::new();
        for q in &self.queue {
            match q.sent {
                Some((conn, _)) if Some(conn) == current => unacked.push(q.persistent_id.clone()),
                _ => pending.push(q.persistent_id.clone()),
            }
        }
        DeviceInfo {
            credentials: self.credentials,
            checkins: self.checkins,
            logins: self.logins,
            connected: self.current().is_some(),
            pending,
            unacked,
            acked: self.acked.iter().cloned().collect(),
            last_login_request: self.last_login.clone(),
            upstream: self.upstream.iter().cloned().collect(),
            pings_received: self.pings_received,
            heartbeat_acks_received: self.heartbeat_acks_received,
            dropped_messages: self.dropped_messages,
            expired_messages: self.expired_messages,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) devices: HashMap<u64, Device>,
    pub(crate) gcm: HashMap<String, GcmRegistration>,
    pub(crate) installations: HashMap<String, Installation>,
    /// FIS auth token → FID.
    pub(crate) fis_tokens: HashMap<String, String>,
    pub(crate) fcm: HashMap<String, FcmRegistration>,
    /// GCM token → the FCM tokens bound to it, oldest first.
    pub(crate) fcm_by_gcm: HashMap<String, Vec<String>>,
    /// Globally armed faults, each with an id so a connection applies it once.
    pub(crate) global_faults: Vec<(u64, Fault)>,
    pub(crate) global_stall: bool,
    pub(crate) next_fault_id: u64,
    pub(crate) next_conn_id: u64,
    pub(crate) http_failures: HashMap<Endpoint, VecDeque<HttpFailure>>,
    pub(crate) failed_logins: u64,
    pub(crate) last_login: Option<LoginRequest>,
    pub(crate) shut_down: bool,
    /// The devices that ever had two or more connections logged in at once.
    pub(crate) overlapping: BTreeSet<u64>,
    /// Topic → the GCM tokens subscribed to it.
    pub(crate) topics: HashMap<String, BTreeSet<String>>,
    /// GCM token → its topics.
    pub(crate) token_topics: HashMap<String, BTreeSet<String>>,
    /// Instances invalidated by [`crate::Emulator::invalidate_instance`]: (android id,
    /// app) → the FID they had. register3 answers `Error=RST` to them until the client
    /// comes back with another FID or another device (docs/protocol.md §7.5).
    pub(crate) invalidated: HashMap<(u64, String), Option<String>>,
    /// The settings every check-in response carries, `(name, value)` in order
    /// ([`crate::Emulator::set_checkin_settings`], docs/protocol.md §2.1).
    pub(crate) checkin_settings: Vec<(Bytes, Bytes)>,
}

impl State {
    /// Takes the next injected failure for `endpoint`, if any.
    pub(crate) fn take_http_failure(&mut self, endpoint: Endpoint) -> Option<HttpFailure> {
        let queue = self.http_failures.get_mut(&endpoint)?;
        let failure = queue.pop_front();
        if queue.is_empty() {
            self.http_failures.remove(&endpoint);
        }
        failure
    }

    /// The devices a target names (only existing ones).
    pub(crate) fn targets(&mut self, target: Target) -> Vec<&mut Device> {
        match target {
            Target::Device(id) => self.devices.get_mut(&id).into_iter().collect(),
            Target::All => self.devices.values_mut().collect(),
        }
    }

    /// The GCM registration a GCM or FCM token leads to, with the web-push keys to encrypt
    /// with: the FCM registration itself for an FCM token; for a web-persona GCM token the
    /// newest FCM registration bound to it; none for an Android-persona GCM token.
    pub(crate) fn resolve_token(
        &self,
        token: &str,
    ) -> Option<(GcmRegistration, Option<FcmRegistration>)> {
        if let Some(fcm) = self.fcm.get(token) {
            let gcm = self.gcm.get(&fcm.gcm_token)?;
            return Some((gcm.clone(), Some(fcm.clone())));
        }
        let gcm = self.gcm.get(token)?;
        if gcm.persona == Persona::Android {
            return Some((gcm.clone(), None));
        }
        // The newest FCM registration bound to this GCM token carries the keys.
        let fcm = self
            .fcm_by_gcm
            .get(token)
            .and_then(|tokens| tokens.last())
            .and_then(|t| self.fcm.get(t))
            .cloned();
        Some((gcm.clone(), fcm))
    }

    /// Global fault ids a connection has not applied yet.
    pub(crate) fn pending_global_faults(&self, applied: &HashSet<u64>) -> Vec<(u64, Fault)> {
        self.global_faults
            .iter()
            .filter(|(id, _)| !applied.contains(id))
            .cloned()
            .collect()
    }
}

/// MCS sessions.
impl State {
    /// Registers an accepted login of a known device (see [`Device::add_session`]).
    pub(crate) fn add_session(
        &mut self,
        android_id: u64,
        link: ConnLink,
        now: Duration,
        close_older: bool,
    ) {
        if let Some(device) = self.devices.get_mut(&android_id)
            && device.add_session(link, now, close_older)
        {
            self.overlapping.insert(android_id);
        }
    }

    /// Unlinks a connection whose task ended (see [`Device::end_session`]).
    pub(crate) fn end_session(&mut self, android_id: u64, conn_id: u64, now: Duration) {
        if let Some(device) = self.devices.get_mut(&android_id) {
            device.end_session(conn_id, now);
        }
    }
}

/// Operations shared by the HTTP handlers and the library API.
impl State {
    /// A new device, as a first check-in creates it.
    pub(crate) fn new_device(&mut self) -> DeviceCredentials {
        loop {
            let credentials = DeviceCredentials {
                android_id: ids::random_id(),
                security_token: ids::random_id(),
            };
            if let std::collections::hash_map::Entry::Vacant(slot) =
                self.devices.entry(credentials.android_id)
            {
                let mut device = Device::new(credentials);
                device.checkins = 1;
                slot.insert(device);
                return credentials;
            }
        }
    }

    /// A GCM registration for a device; registering the same (app, subtype, sender) again
    /// returns the same token, as Google does.
    pub(crate) fn register_gcm(
        &mut self,
        android_id: u64,
        app: &str,
        subtype: Option<&str>,
        sender: &str,
        fid: Option<&str>,
    ) -> GcmRegistration {
        let existing = self.devices.get(&android_id).and_then(|device| {
            device
                .gcm_tokens
                .iter()
                .filter_map(|t| self.gcm.get(t))
                .find(|g| g.app == app && g.subtype.as_deref() == subtype && g.sender == sender)
        });
        if let Some(existing) = existing {
            return existing.clone();
        }
        let persona = if app == WEB_APP && subtype.is_some_and(|s| s.starts_with("wp:")) {
            Persona::Web
        } else {
            Persona::Android
        };
        let registration = GcmRegistration {
            token: ids::registration_token(None),
            android_id,
            app: app.to_owned(),
            subtype: subtype.map(str::to_owned),
            sender: sender.to_owned(),
            persona,
            fid: fid.map(str::to_owned),
        };
        self.gcm
            .insert(registration.token.clone(), registration.clone());
        if let Some(device) = self.devices.get_mut(&android_id) {
            device.gcm_tokens.push(registration.token.clone());
        }
        registration
    }

    /// Deletes a device's GCM registrations of `app`, as register3 with `delete=1` does
    /// (docs/protocol.md §7.1): those with this `subtype` and this `sender` where they are
    /// given. Their topic subscriptions go with them. Returns how many.
    pub(crate) fn unregister_gcm(
        &mut self,
        android_id: u64,
        app: &str,
        subtype: Option<&str>,
        sender: Option<&str>,
    ) -> usize {
        let Some(device) = self.devices.get(&android_id) else {
            return 0;
        };
        let doomed: Vec<String> = device
            .gcm_tokens
            .iter()
            .filter(|token| {
                self.gcm.get(*token).is_none_or(|g| {
                    g.app == app
                        && subtype.is_none_or(|s| g.subtype.as_deref() == Some(s))
                        && sender.is_none_or(|s| g.sender == s)
                })
            })
            .cloned()
            .collect();
        for token in &doomed {
            self.remove_gcm(token);
        }
        doomed.len()
    }

    /// Removes one GCM registration with its topic subscriptions; returns it.
    pub(crate) fn remove_gcm(&mut self, token: &str) -> Option<GcmRegistration> {
        let registration = self.gcm.remove(token);
        if let Some(device) = registration
            .as_ref()
            .and_then(|g| self.devices.get_mut(&g.android_id))
        {
            device.gcm_tokens.retain(|t| t != token);
        }
        for topic in self.token_topics.remove(token).unwrap_or_default() {
            if let Some(tokens) = self.topics.get_mut(&topic) {
                tokens.remove(token);
                if tokens.is_empty() {
                    self.topics.remove(&topic);
                }
            }
        }
        registration
    }

    /// Subscribes a GCM token to a topic; false when it already was.
    pub(crate) fn subscribe_topic(&mut self, token: &str, topic: &str) -> bool {
        self.topics
            .entry(topic.to_owned())
            .or_default()
            .insert(token.to_owned());
        self.token_topics
            .entry(token.to_owned())
            .or_default()
            .insert(topic.to_owned())
    }

    /// Unsubscribes a GCM token from a topic; false when it was not subscribed.
    pub(crate) fn unsubscribe_topic(&mut self, token: &str, topic: &str) -> bool {
        if let Some(tokens) = self.topics.get_mut(topic) {
            tokens.remove(token);
            if tokens.is_empty() {
                self.topics.remove(topic);
            }
        }
        let Some(topics) = self.token_topics.get_mut(token) else {
            return false;
        };
        let removed = topics.remove(topic);
        if topics.is_empty() {
            self.token_topics.remove(token);
        }
        removed
    }

    /// The GCM token behind a GCM or FCM token.
    pub(crate) fn gcm_token_of(&self, token: &str) -> Option<String> {
        if self.gcm.contains_key(token) {
            return Some(token.to_owned());
        }
        self.fcm
            .get(token)
            .map(|f| f.gcm_token.clone())
            .filter(|t| self.gcm.contains_key(t))
    }

    /// Whether register3 must answer `Error=RST` to this device and app with this FID.
    pub(crate) fn is_invalidated(&self, android_id: u64, app: &str, fid: Option<&str>) -> bool {
        self.invalidated
            .get(&(android_id, app.to_owned()))
            .is_some_and(|old| fid.is_none() || old.as_deref() == fid)
    }

    /// A new Firebase installation with a first auth token.
    pub(crate) fn create_installation(
        &mut self,
        project: &str,
        fid: Option<&str>,
        app_id: &str,
    ) -> Installation {
        let fid = fid.map_or_else(ids::fid, str::to_owned);
        if let Some(old) = self.installations.remove(&fid) {
            for token in old.auth_tokens {
                self.fis_tokens.remove(&token);
            }
        }
        let auth = ids::fis_auth_token();
        let installation = Installation {
            project: project.to_owned(),
            fid: fid.clone(),
            app_id: app_id.to_owned(),
            refresh_token: ids::refresh_token(),
            auth_tokens: vec![auth.clone()],
        };
        self.fis_tokens.insert(auth, fid.clone());
        self.installations.insert(fid, installation.clone());
        installation
    }

    /// Deletes an installation: its auth tokens and the FCM registrations it made go
    /// with it. Returns whether it existed.
    pub(crate) fn delete_installation(&mut self, fid: &str) -> bool {
        let Some(installation) = self.installations.remove(fid) else {
            return false;
        };
        for token in installation.auth_tokens {
            self.fis_tokens.remove(&token);
        }
        let registrations: Vec<String> = self
            .fcm
            .values()
            .filter(|registration| registration.fid == fid)
            .map(|registration| registration.token.clone())
            .collect();
        for token in registrations {
            self.delete_fcm_registration(&token);
        }
        true
    }

    /// A fresh auth token for an installation; older ones stay valid.
    pub(crate) fn new_auth_token(&mut self, fid: &str) -> Option<String> {
        let installation = self.installations.get_mut(fid)?;
        let auth = ids::fis_auth_token();
        if installation.auth_tokens.len() >= 16 {
            let old = installation.auth_tokens.remove(0);
            self.fis_tokens.remove(&old);
        }
        installation.auth_tokens.push(auth.clone());
        self.fis_tokens.insert(auth.clone(), fid.to_owned());
        Some(auth)
    }

    /// Binds a web-push subscription to a GCM token; returns the new FCM registration.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_fcm_registration(
        &mut self,
        project: &str,
        fid: &str,
        gcm_token: &str,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        application_pub_key: Option<&str>,
    ) -> FcmRegistration {
        let registration = FcmRegistration {
            project: project.to_owned(),
            token: ids::registration_token(Some(fid)),
            gcm_token: gcm_token.to_owned(),
            fid: fid.to_owned(),
            endpoint: endpoint.to_owned(),
            p256dh: p256dh.to_owned(),
            auth: auth.to_owned(),
            application_pub_key: application_pub_key.map(str::to_owned),
        };
        self.fcm_by_gcm
            .entry(gcm_token.to_owned())
            .or_default()
            .push(registration.token.clone());
        self.fcm
            .insert(registration.token.clone(), registration.clone());
        registration
    }

    /// Deletes an FCM registration; returns whether it existed.
    pub(crate) fn delete_fcm_registration(&mut self, token: &str) -> bool {
        let Some(registration) = self.fcm.remove(token) else {
            return false;
        };
        if let Some(tokens) = self.fcm_by_gcm.get_mut(&registration.gcm_token) {
            tokens.retain(|t| t != token);
            if tokens.is_empty() {
                self.fcm_by_gcm.remove(&registration.gcm_token);
            }
        }
        true
    }
}

/// The `app` of the Chrome (web) persona.
pub(crate) const WEB_APP: &str = "org.chromium.linux";

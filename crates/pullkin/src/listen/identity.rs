//! Credential upkeep of a listener built with a [`PullkinCore`]: before each connection
//! attempt (check in, refresh the Firebase auth token, register anew when Google declared
//! the identity dead), again every check-in interval while connected (docs/protocol.md
//! §7.2), and in answer to identity resets (docs/protocol.md §7.1: the Instance ID
//! control messages `RST`, `RST_FULL` and `SYNC` over MCS, and register3's `Error=RST`).
//! Renewed credentials are stored and announced.
//!
//! [`Upkeep`] does the work (it is shared by every app of a listener); [`AppUpkeep`] is
//! one app's schedule, kept by its driver: what is owed, what runs beside the connection,
//! when the next re-check-in is due. The schedule is sans-IO: it takes the time as input.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use webpush_ece::ReceiverKeys;

use crate::PullkinError;
use crate::error::ConnectionError;
use crate::event::{CredentialsChange, Event};
use crate::registration::{AppCredentials, IidCommand, PullkinCore, Renewal};
use crate::store::Store;

/// How long after a failed renewal or answer beside the connection the next one starts
/// (at most: a shorter check-in interval is used when it is shorter).
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The device identity to log in with.
#[derive(Clone)]
pub(crate) struct Identity {
    pub android_id: u64,
    pub security_token: u64,
    /// New Web Push keys, when the credentials were renewed with other keys.
    pub keys: Option<Arc<ReceiverKeys>>,
    /// The re-check-in interval the server set at the check-in of this run
    /// (docs/protocol.md §2.1); `None` when it set none or the run made no check-in.
    pub server_interval: Option<Duration>,
}

/// The current credentials of every app of a listener. Shared: the map's entries stay
/// small (thousands of apps may be held).
pub(crate) type CredentialsMap = Arc<Mutex<HashMap<String, Arc<AppCredentials>>>>;

/// What the upkeep of every app of a listener shares.
pub(crate) struct Upkeep {
    pub core: Arc<PullkinCore>,
    pub credentials: CredentialsMap,
    pub store: Arc<dyn Store>,
    pub events: broadcast::Sender<Event>,
    /// Bounds the renewals (check-ins, token refreshes) in flight across the apps: a
    /// listener starting thousands of apps makes a few HTTPS connections at a time, not
    /// one per app, and keeps only those few in the client's pool afterwards.
    pub renewals: tokio::sync::Semaphore,
    /// Check in again this often while connected
    /// ([`ListenerConfig::checkin_interval`](crate::ListenerConfig::checkin_interval)).
    pub checkin_interval: Option<Duration>,
}

/// What an upkeep run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// [`PullkinCore::renew`]: check in, refresh, register anew when dead.
    Renew,
    /// Answer an Instance ID control message (docs/protocol.md §7.1).
    Answer(IidCommand),
}

impl Upkeep {
    /// Runs `action` for `app`: stores and announces changed credentials; the identity to
    /// log in with. register3's `Error=RST` ([`PullkinError::IdentityReset`]) during a
    /// renewal or a token sync is answered with a new identity at once
    /// (docs/protocol.md §7.1).
    pub(crate) async fn run(&self, app: &str, action: Action) -> Result<Identity, ConnectionError> {
        let current = lock(&self.credentials)
            .get(app)
            .cloned()
            .ok_or_else(|| PullkinError::UnknownApp(app.to_owned()))?;
        let (renewal, reason) = {
            // Never closed: the semaphore lives as long as `self`.
            let _permit = self.renewals.acquire().await;
            self.renewal(&current, action).await?
        };
        if !renewal.topics_failed.is_empty() {
            warn!(
                topics = ?renewal.topics_failed,
                "the new registration could not be subscribed to these topics again"
            );
        }
        let server_interval = renewal.checkin.as_ref().and_then(|c| c.checkin_interval);
        let credentials = renewal.credentials;
        let mut keys = None;
        if renewal.changed {
            self.store.save_credentials(app, &credentials).await?;
            keys = Some(Arc::new(
                credentials
                    .keys
                    .receiver_keys()
                    .map_err(PullkinError::Credentials)?,
            ));
            info!(?reason, "credentials changed");
        }
        let identity = Identity {
            android_id: credentials.gcm.android_id,
            security_token: credentials.gcm.security_token.expose(),
            keys,
            server_interval,
        };
        if renewal.changed {
            // Only while the app is still there: a renewal finishing as the app is
            // stopped must not bring its entry back.
            if let Some(entry) = lock(&self.credentials).get_mut(app) {
                *entry = Arc::new(credentials);
            }
            let _ = self.events.send(Event::CredentialsChanged {
                app: app.to_owned(),
                reason,
            });
        }
        Ok(identity)
    }

    /// The core's answer to `action`, and what to call the change.
    async fn renewal(
        &self,
        current: &AppCredentials,
        action: Action,
    ) -> Result<(Renewal, CredentialsChange), PullkinError> {
        let answered = match action {
            Action::Renew => self.core.renew(current).await.map(|renewal| {
                let reason = if renewal.identity_changed {
                    CredentialsChange::Reregistered
                } else {
                    CredentialsChange::Renewed
                };
                (renewal, reason)
            }),
            Action::Answer(command @ (IidCommand::Reset | IidCommand::ResetAll)) => {
                let renewal = self.core.reset_identity(current).await?;
                let reason = CredentialsChange::IdentityReset {
                    command: Some(command),
                };
                return Ok((renewal, reason));
            }
            Action::Answer(IidCommand::Sync) => self
                .core
                .sync_token(current)
                .await
                .map(|renewal| (renewal, CredentialsChange::TokenSynced)),
        };
        match answered {
            Err(PullkinError::IdentityReset(error)) => {
                warn!(%error, "register3 answered Error=RST; making a new identity");
                let renewal = self.core.reset_identity(current).await?;
                let command = match action {
                    Action::Answer(command) => Some(command),
                    Action::Renew => None,
                };
                Ok((renewal, CredentialsChange::IdentityReset { command }))
            }
            other => other,
        }
    }
}

/// A renewal or answer running beside the connection, and what it does.
pub(crate) type Running = (Action, JoinHandle<Result<Identity, ConnectionError>>);

/// One app's upkeep schedule, kept by its driver across connections. Sans-IO: every
/// decision takes the time as input; the driver spawns what [`AppUpkeep::start`] asks.
#[derive(Default)]
pub(crate) struct AppUpkeep {
    /// An Instance ID command received and not yet answered.
    owed: Option<IidCommand>,
    /// When the next run beside the connection is due: a re-check-in, an answer owed, a
    /// retry. `None`: nothing is due (re-check-ins off, nothing owed).
    due: Option<Instant>,
    /// The run beside the connection, if one is running.
    pub running: Option<Running>,
    /// An identity a run beside the connection made, for the next connection to log in
    /// with (without checking in again).
    pub ready: Option<Identity>,
}

impl AppUpkeep {
    /// An Instance ID control message arrived at `now`: it is owed an answer, due at
    /// once. One reset answers every reset and sync received before it is done; a reset
    /// received while a sync is owed or running is answered after it.
    pub(crate) fn owe(&mut self, command: IidCommand, now: Instant) {
        let is_reset =
            |c: Option<IidCommand>| matches!(c, Some(IidCommand::Reset | IidCommand::ResetAll));
        let running = self.running.as_ref().and_then(|(action, _)| match action {
            Action::Answer(command) => Some(*command),
            Action::Renew => None,
        });
        if is_reset(self.owed) || is_reset(running) {
            return;
        }
        if command == IidCommand::Sync && (self.owed.is_some() || running.is_some()) {
            return;
        }
        self.owed = Some(command);
        self.due = Some(now);
    }

    /// The action to run before the next connection: the answer owed, else a renewal.
    pub(crate) fn before_connecting(&self) -> Action {
        self.owed.map_or(Action::Renew, Action::Answer)
    }

    /// When the next run beside the connection is due, while none is running.
    pub(crate) fn due(&self) -> Option<Instant> {
        if self.running.is_some() {
            None
        } else {
            self.due
        }
    }

    /// The action to run now that it is due (the answer owed, else a re-check-in).
    pub(crate) fn start(&mut self) -> Action {
        self.due = None;
        self.before_connecting()
    }

    /// `action` succeeded at `now`: an answer is no longer owed, and a renewal or reset
    /// (both check in) sets the next re-check-in [`next_checkin_interval`] from now
    /// (`configured` the listener's interval, `server` the one its check-in response
    /// set).
    pub(crate) fn succeeded(
        &mut self,
        action: Action,
        now: Instant,
        configured: Option<Duration>,
        server: Option<Duration>,
    ) {
        let interval = next_checkin_interval(configured, server);
        if let Action::Answer(command) = action
            && self.owed == Some(command)
        {
            self.owed = None;
        }
        let checked_in = !matches!(action, Action::Answer(IidCommand::Sync));
        if self.owed.is_some() {
            self.due = Some(now);
        } else if checked_in {
            // An interval too long to add is never due.
            self.due = interval.and_then(|interval| now.checked_add(interval));
        }
    }

    /// `action` failed at `now`: tried again after [`RETRY_AFTER_FAILURE`] (or the
    /// check-in interval, when shorter); an answer stays owed.
    pub(crate) fn failed(&mut self, now: Instant, interval: Option<Duration>) {
        let wait = interval.map_or(RETRY_AFTER_FAILURE, |i| i.min(RETRY_AFTER_FAILURE));
        if self.owed.is_some() || interval.is_some() {
            self.due = now.checked_add(wait);
        }
    }

    /// Stops the run beside the connection, if any (the listener stops).
    pub(crate) fn abort(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// The interval to the next re-check-in after a check-in (docs/protocol.md §7.2): the
/// one the server's response set (`server`), raised to
/// [`MIN_CHECKIN_INTERVAL`](gcm_checkin::MIN_CHECKIN_INTERVAL) when shorter, as Chromium
/// does; else the listener's `configured` one. The server's wins when both are set: the
/// configured interval has a default and stands for the client's own choice only when the
/// server makes none. `configured` `None` (re-check-ins off) stays off whatever the
/// server sets.
pub(crate) fn next_checkin_interval(
    configured: Option<Duration>,
    server: Option<Duration>,
) -> Option<Duration> {
    let configured = configured?;
    Some(server.map_or(configured, |server| {
        server.max(gcm_checkin::MIN_CHECKIN_INTERVAL)
    }))
}

/// Every critical section is a single map operation: a poisoned lock holds sound data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn spawned(action: Action) -> Running {
        // A task that never finishes: only its presence matters here.
        (action, tokio::spawn(std::future::pending()))
    }

    #[test]
    fn rechecks_every_interval_after_a_check_in() {
        let start = Instant::now();
        let mut upkeep = AppUpkeep::default();
        assert_eq!(upkeep.due(), None);
        assert_eq!(upkeep.before_connecting(), Action::Renew);
        upkeep.succeeded(Action::Renew, start, Some(2 * DAY), None);
        assert_eq!(upkeep.due(), Some(start + 2 * DAY));
        let later = start + 2 * DAY;
        assert_eq!(upkeep.start(), Action::Renew);
        assert_eq!(upkeep.due(), None);
        upkeep.succeeded(Action::Renew, later, Some(2 * DAY), None);
        assert_eq!(upkeep.due(), Some(later + 2 * DAY));
        // A failure retries within a minute, or sooner with a shorter interval.
        upkeep.failed(later, Some(2 * DAY));
        assert_eq!(upkeep.due(), Some(later + RETRY_AFTER_FAILURE));
        upkeep.failed(later, Some(Duration::from_secs(5)));
        assert_eq!(upkeep.due(), Some(later + Duration::from_secs(5)));
        // An interval too long to add to the clock is never due, and does not panic.
        upkeep.succeeded(Action::Renew, later, Some(Duration::MAX), None);
        assert_eq!(upkeep.due(), None);
        // Re-check-ins off: nothing due.
        let mut off = AppUpkeep::default();
        off.succeeded(Action::Renew, start, None, None);
        off.failed(start, None);
        assert_eq!(off.due(), None);
    }

    #[test]
    fn the_servers_interval_sets_the_next_re_check_in() {
        let start = Instant::now();
        let hour = Duration::from_secs(60 * 60);
        let mut upkeep = AppUpkeep::default();
        // The server's interval wins over the configured one, longer or shorter.
        upkeep.succeeded(Action::Renew, start, Some(2 * DAY), Some(3 * DAY));
        assert_eq!(upkeep.due(), Some(start + 3 * DAY));
        let later = start + 3 * DAY;
        assert_eq!(upkeep.start(), Action::Renew);
        upkeep.succeeded(Action::Renew, later, Some(2 * DAY), Some(DAY));
        assert_eq!(upkeep.due(), Some(later + DAY));
        // Shorter than 12 h: raised to it, even when the configured one is shorter still.
        upkeep.succeeded(
            Action::Renew,
            later,
            Some(Duration::from_secs(1)),
            Some(hour),
        );
        assert_eq!(upkeep.due(), Some(later + 12 * hour));
        upkeep.succeeded(Action::Renew, later, Some(2 * DAY), Some(Duration::ZERO));
        assert_eq!(upkeep.due(), Some(later + 12 * hour));
        // A check-in whose answer sets none: the configured interval again.
        upkeep.succeeded(Action::Renew, later, Some(2 * DAY), None);
        assert_eq!(upkeep.due(), Some(later + 2 * DAY));
        // A reset checks in: its answer's interval counts too.
        upkeep.owe(IidCommand::Reset, later);
        assert_eq!(upkeep.start(), Action::Answer(IidCommand::Reset));
        upkeep.succeeded(
            Action::Answer(IidCommand::Reset),
            later,
            Some(2 * DAY),
            Some(5 * DAY),
        );
        assert_eq!(upkeep.due(), Some(later + 5 * DAY));
        // A failure still retries within a minute, whatever the server set last.
        upkeep.failed(later, Some(2 * DAY));
        assert_eq!(upkeep.due(), Some(later + RETRY_AFTER_FAILURE));
        // A server interval too long to add to the clock: never due, no panic.
        upkeep.succeeded(Action::Renew, later, Some(2 * DAY), Some(Duration::MAX));
        assert_eq!(upkeep.due(), None);
        // Re-check-ins off stay off whatever the server sets.
        let mut off = AppUpkeep::default();
        off.succeeded(Action::Renew, start, None, Some(3 * DAY));
        assert_eq!(off.due(), None);
        assert_eq!(next_checkin_interval(None, Some(DAY)), None);
        assert_eq!(next_checkin_interval(Some(DAY), None), Some(DAY));
    }

    /// An upkeep for one app of `core`, its credentials in memory.
    fn upkeep_for(core: PullkinCore, app: &str, credentials: AppCredentials) -> Upkeep {
        let credentials = Arc::new(Mutex::new(HashMap::from([(
            app.to_owned(),
            Arc::new(credentials),
        )])));
        Upkeep {
            core: Arc::new(core),
            credentials,
            store: Arc::new(crate::MemoryStore::default()),
            events: broadcast::channel(16).0,
            renewals: tokio::sync::Semaphore::new(1),
            checkin_interval: Some(2 * DAY),
        }
    }

    /// End to end against the emulator, the time given: the interval set by the
    /// emulator's check-in answers (a renewal, a reset, none set, an unreadable value)
    /// schedules the next re-check-in.
    #[tokio::test]
    async fn the_emulators_checkin_interval_schedules_the_next_re_check_in() {
        let emulator = fcm_emulator::Emulator::builder()
            .api_key("AIzaSyEmulatorKey")
            .start()
            .await
            .unwrap();
        let core = PullkinCore::builder()
            .endpoints(pullkin_test_support::emulator::endpoints(&emulator))
            .webpki_roots(false)
            .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
            .build()
            .unwrap();
        let params = crate::RegisterParams::android(
            "998877665544",
            "1:998877665544:android:0123abcd",
            "AIzaSyEmulatorKey",
            "emulated-project",
        );
        let credentials = core.register(&params).await.unwrap();
        let upkeep = upkeep_for(core, "app", credentials);
        let start = Instant::now();
        let mut schedule = AppUpkeep::default();
        let run = async |action: Action, now: Instant, schedule: &mut AppUpkeep| {
            let identity = upkeep.run("app", action).await.unwrap();
            schedule.succeeded(
                action,
                now,
                upkeep.checkin_interval,
                identity.server_interval,
            );
        };

        emulator.set_checkin_interval(Some(3 * DAY));
        run(Action::Renew, start, &mut schedule).await;
        assert_eq!(schedule.due(), Some(start + 3 * DAY));

        // Below the minimum: 12 h.
        emulator.set_checkin_interval(Some(Duration::from_secs(60)));
        let later = start + 3 * DAY;
        run(Action::Renew, later, &mut schedule).await;
        assert_eq!(schedule.due(), Some(later + DAY / 2));

        // A reset checks in as a new device: that answer's interval.
        emulator.set_checkin_interval(Some(4 * DAY));
        let reset = Action::Answer(IidCommand::Reset);
        schedule.owe(IidCommand::Reset, later);
        assert_eq!(schedule.start(), reset);
        run(reset, later, &mut schedule).await;
        assert_eq!(schedule.due(), Some(later + 4 * DAY));

        // None set, or one that cannot be read: the configured 2 days.
        emulator.set_checkin_interval(None);
        run(Action::Renew, later, &mut schedule).await;
        assert_eq!(schedule.due(), Some(later + 2 * DAY));
        emulator.set_checkin_settings([("checkin_interval", "every other day")]);
        run(Action::Renew, later, &mut schedule).await;
        assert_eq!(schedule.due(), Some(later + 2 * DAY));
        emulator.shutdown().await;
    }

    #[test]
    fn commands_are_owed_until_answered() {
        let now = Instant::now();
        let mut upkeep = AppUpkeep::default();
        upkeep.succeeded(Action::Renew, now, Some(2 * DAY), None);
        upkeep.owe(IidCommand::Sync, now);
        assert_eq!(upkeep.due(), Some(now));
        assert_eq!(upkeep.before_connecting(), Action::Answer(IidCommand::Sync));
        // A failed answer stays owed, retried after a minute even without re-check-ins.
        upkeep.failed(now, None);
        assert_eq!(upkeep.due(), Some(now + RETRY_AFTER_FAILURE));
        assert_eq!(upkeep.start(), Action::Answer(IidCommand::Sync));
        // A sync does not check in: the re-check-in is not moved by it.
        upkeep.succeeded(Action::Answer(IidCommand::Sync), now, Some(2 * DAY), None);
        assert_eq!(upkeep.before_connecting(), Action::Renew);
        assert_eq!(upkeep.due(), None);
        // A reset checks in.
        upkeep.owe(IidCommand::ResetAll, now);
        assert_eq!(upkeep.start(), Action::Answer(IidCommand::ResetAll));
        upkeep.succeeded(
            Action::Answer(IidCommand::ResetAll),
            now,
            Some(2 * DAY),
            None,
        );
        assert_eq!(upkeep.due(), Some(now + 2 * DAY));
    }

    #[tokio::test]
    async fn one_reset_answers_the_commands_received_before_it_is_done() {
        let now = Instant::now();
        let mut upkeep = AppUpkeep::default();
        upkeep.owe(IidCommand::Reset, now);
        upkeep.owe(IidCommand::Reset, now);
        upkeep.owe(IidCommand::Sync, now);
        assert_eq!(upkeep.start(), Action::Answer(IidCommand::Reset));
        upkeep.running = Some(spawned(Action::Answer(IidCommand::Reset)));
        upkeep.owe(IidCommand::ResetAll, now);
        upkeep.owe(IidCommand::Sync, now);
        upkeep.abort();
        upkeep.succeeded(Action::Answer(IidCommand::Reset), now, None, None);
        assert_eq!(upkeep.before_connecting(), Action::Renew);
        assert_eq!(upkeep.due(), None);

        // A reset during a sync is answered after it; another sync is not.
        upkeep.owe(IidCommand::Sync, now);
        assert_eq!(upkeep.start(), Action::Answer(IidCommand::Sync));
        upkeep.running = Some(spawned(Action::Answer(IidCommand::Sync)));
        upkeep.owe(IidCommand::Sync, now);
        assert_eq!(upkeep.due(), None);
        upkeep.owe(IidCommand::Reset, now);
        upkeep.abort();
        upkeep.succeeded(Action::Answer(IidCommand::Sync), now, None, None);
        assert_eq!(upkeep.due(), Some(now));
        assert_eq!(upkeep.start(), Action::Answer(IidCommand::Reset));
    }
}

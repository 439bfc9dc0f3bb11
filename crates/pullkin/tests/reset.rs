//! Identity resets and re-check-ins of a listener with a core, end to end against
//! `fcm-emulator` (docs/protocol.md §7.1, §7.2): the Instance ID control messages over
//! MCS and register3's `Error=RST` at a renewal make a new identity while messages flow
//! — none lost, none twice, the new token and a stored topic reaching the new identity,
//! the change announced and stored — and a connected device checks in again without
//! dropping its connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fcm_emulator::{Emulator, IidCommand as Command, SendMessage, Target};
use futures_util::Stream;
use pullkin::{
    AppCredentials, CredentialsChange, DirStore, Event, IidCommand, Incoming, ListenerConfig,
    Pullkin, RegisterParams, Store,
};
use tokio::sync::broadcast;

use crate::support::{WAIT, core_builder, emulator, fast_retry, listener_config, next, shutdown};

use crate::support::emulated::{API_KEY, APP_ID, PROJECT, SENDER};

/// One app, its listener, its store and its stream.
struct Setup {
    emulator: Emulator,
    credentials: AppCredentials,
    store: Arc<dyn Store>,
    pullkin: Pullkin,
    events: broadcast::Receiver<Event>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// An Android registration subscribed to `news`, listened to by a listener with a
    /// core and a `DirStore`, connected.
    async fn start(configure: impl FnOnce(&mut ListenerConfig)) -> Self {
        let emulator = emulator().await;
        let core = Arc::new(
            core_builder(&emulator)
                .retry(fast_retry().with_max_attempts(2))
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        );
        let params =
            RegisterParams::android(SENDER, APP_ID, API_KEY, PROJECT).app_name("com.example.reset");
        let mut credentials = core.register(&params).await.unwrap();
        core.subscribe_topic(&mut credentials, "news")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).unwrap());
        let mut config = listener_config(&emulator);
        configure(&mut config);
        let pullkin = Pullkin::builder()
            .core(Arc::clone(&core))
            .store(Arc::clone(&store))
            .config(config)
            .build()
            .unwrap();
        let events = pullkin.events();
        pullkin.add_app("app", &credentials, []).unwrap();
        let id = credentials.gcm.android_id;
        assert!(
            emulator
                .wait_until(WAIT, |e| e.is_connected(id) && e.login_count(id) == 1)
                .await,
            "connected"
        );
        Self {
            emulator,
            credentials,
            store,
            pullkin,
            events,
            _dir: dir,
        }
    }

    /// [`Self::start`] with the default settings, the credentials registered, and the
    /// app's stream.
    async fn listening() -> (
        Self,
        AppCredentials,
        std::pin::Pin<Box<impl Stream<Item = Incoming> + use<>>>,
    ) {
        let setup = Self::start(|_| {}).await;
        let credentials = setup.credentials.clone();
        let stream = setup.listen();
        (setup, credentials, stream)
    }

    /// The app's stream of messages.
    fn listen(&self) -> std::pin::Pin<Box<impl Stream<Item = Incoming> + use<>>> {
        Box::pin(self.pullkin.listen("app").unwrap())
    }

    /// Sends each number of `range` to `credentials`, in order.
    fn send_numbers(&self, credentials: &AppCredentials, range: std::ops::RangeInclusive<u32>) {
        for n in range {
            self.send(credentials, &n.to_string());
        }
    }

    fn send(&self, credentials: &AppCredentials, n: &str) -> fcm_emulator::Sent {
        self.emulator
            .send(credentials.fcm.token().unwrap(), &message(n))
            .unwrap()
    }

    /// Waits until everything queued for `android_id` was written to its connection.
    async fn wait_sent(&self, android_id: u64, count: usize) {
        assert!(
            self.emulator
                .wait_until(WAIT, |e| {
                    e.pending_ids(android_id).is_empty() && e.unacked_ids(android_id).len() >= count
                })
                .await,
            "the messages reached the connection"
        );
    }

    /// The reason of the next `CredentialsChanged` of the app (at most 10 s).
    async fn credentials_changed(&mut self) -> CredentialsChange {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(Event::CredentialsChanged { app, reason, .. })) => {
                    assert_eq!(app, "app");
                    return reason;
                }
                Ok(Ok(_)) => {}
                other => panic!("no CredentialsChanged: {other:?}"),
            }
        }
    }

    /// Checks that the next `CredentialsChanged` of the app is for `reason`, and that
    /// the new identity is in place ([`Self::check_new_identity`]); returns it.
    async fn changed_to_new_identity(&mut self, reason: CredentialsChange) -> AppCredentials {
        assert_eq!(self.credentials_changed().await, reason);
        self.check_new_identity().await
    }

    /// Sends the Instance ID control message `command` to `credentials`' GCM token.
    fn send_iid(&self, credentials: &AppCredentials, command: Command) -> fcm_emulator::Sent {
        self.emulator
            .send_iid_command(credentials.gcm.token.as_str(), command)
            .unwrap()
    }

    /// After a reset: the listener's credentials are new, stored, subscribed to `news`,
    /// and logged in with.
    async fn check_new_identity(&self) -> AppCredentials {
        let old = &self.credentials;
        let new = self.pullkin.credentials("app").unwrap();
        assert_ne!(new.gcm.android_id, old.gcm.android_id, "a new device");
        assert_ne!(new.gcm.token, old.gcm.token, "a new GCM token");
        assert_ne!(new.fcm.token(), old.fcm.token(), "a new FCM token");
        assert!(new.fcm.is_success(), "{:?}", new.fcm.error);
        assert_eq!(new.topics().collect::<Vec<_>>(), ["news"]);
        assert_eq!(self.emulator.topics(new.gcm.token.as_str()), ["news"]);
        let stored = self.store.load_credentials("app").await.unwrap().unwrap();
        assert_eq!(stored.gcm.android_id, new.gcm.android_id, "stored");
        assert_eq!(stored.gcm.token, new.gcm.token, "stored");
        assert_eq!(stored.fcm.token(), new.fcm.token(), "stored");
        assert_eq!(stored.keys.public, new.keys.public, "stored");
        assert_eq!(stored.topics().collect::<Vec<_>>(), ["news"], "stored");
        let id = new.gcm.android_id;
        assert!(
            self.emulator.wait_until(WAIT, |e| e.is_connected(id)).await,
            "logged in with the new identity"
        );
        new
    }
}

fn message(n: &str) -> SendMessage {
    SendMessage::new().data("n", n)
}

/// The `n` of the stream's next `count` messages, in order.
async fn receive(stream: &mut (impl Stream<Item = Incoming> + Unpin), count: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..count {
        let incoming = next(stream).await;
        let n = incoming.message.data.get("n").cloned();
        got.push(n.unwrap_or_else(|| panic!("not a test message: {:?}", incoming.message.data)));
    }
    got
}

fn numbers(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iid_reset_over_mcs_makes_a_new_identity_and_loses_nothing() {
    let (mut setup, old, mut stream) = Setup::listening().await;
    let old_id = old.gcm.android_id;

    // Taken and acknowledged before the reset.
    setup.send_numbers(&old, 1..=3);
    assert_eq!(receive(&mut stream, 3).await, numbers(1..=3));
    // Received but not yet taken by the application when the reset comes.
    setup.send_numbers(&old, 4..=10);
    setup.send_iid(&old, Command::Rst);
    setup.wait_sent(old_id, 1).await;
    // Google's side forgets the old instance: it answers Error=RST from now on.
    setup
        .emulator
        .invalidate_instance(old.gcm.token.as_str())
        .unwrap();

    let new = setup
        .changed_to_new_identity(CredentialsChange::IdentityReset {
            command: Some(IidCommand::Reset),
        })
        .await;
    // The control message is taken by the listener itself; its acknowledgement (a
    // cumulative stream ack) waits behind messages 4..=10, which the application takes
    // only now, after the old connection is gone: the old identity's server side keeps
    // them, never to deliver them again (`sync_keeps_the_identity…` checks the
    // acknowledgement of a control message with nothing before it).
    setup.send(&new, "11");
    let topic = setup
        .emulator
        .send_to_topic("news", &message("12"))
        .unwrap();
    assert_eq!(topic.len(), 1, "one subscriber: the new token");
    assert_eq!(topic[0].android_id, new.gcm.android_id);
    // Every message once, in order; the control message not among them.
    assert_eq!(receive(&mut stream, 9).await, numbers(4..=12));
    setup.send(&new, "end");
    assert_eq!(receive(&mut stream, 1).await, ["end"]);
    // Sends to the old token fail: the instance is gone.
    assert!(
        setup
            .emulator
            .send(old.fcm.token().unwrap(), &message("x"))
            .is_err()
    );
    shutdown(&setup.pullkin, &setup.emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rst_at_a_renewal_makes_a_new_identity_and_loses_nothing() {
    let (mut setup, old, mut stream) = Setup::listening().await;
    let old_id = old.gcm.android_id;
    setup.send_numbers(&old, 1..=3);
    assert_eq!(receive(&mut stream, 3).await, numbers(1..=3));
    setup.send_numbers(&old, 4..=8);
    setup.wait_sent(old_id, 5).await;

    // The renewal before the next connection: the check-in is refused (a dead identity),
    // and the registration anew is answered Error=RST.
    // Google's side has forgotten the instance (its topics too).
    setup.emulator.fail_checkins(1, 401);
    setup.emulator.fail_register3(1, "RST");
    setup
        .emulator
        .invalidate_instance(old.gcm.token.as_str())
        .unwrap();
    setup.emulator.disconnect(Target::Device(old_id));

    let new = setup
        .changed_to_new_identity(CredentialsChange::IdentityReset { command: None })
        .await;
    setup.send(&new, "9");
    assert_eq!(
        setup
            .emulator
            .send_to_topic("news", &message("10"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(receive(&mut stream, 7).await, numbers(4..=10));
    setup.send(&new, "end");
    assert_eq!(receive(&mut stream, 1).await, ["end"]);
    shutdown(&setup.pullkin, &setup.emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_keeps_the_identity_and_error_rst_answering_it_resets() {
    let (mut setup, old, mut stream) = Setup::listening().await;
    let old_id = old.gcm.android_id;

    // SYNC on a live instance: register3 answers the same token; nothing changes, the
    // connection stays, the control message is not the application's.
    let sync = setup.send_iid(&old, Command::Sync);
    setup.send(&old, "1");
    assert_eq!(receive(&mut stream, 1).await, ["1"]);
    assert!(
        setup
            .emulator
            .wait_until(WAIT, |e| e
                .device(old_id)
                .is_some_and(|d| d.acked.contains(&sync.persistent_id)))
            .await,
        "the SYNC was acknowledged"
    );
    assert_eq!(
        setup.emulator.login_count(old_id),
        1,
        "the connection stayed"
    );
    assert_eq!(setup.pullkin.credentials("app").unwrap(), old);

    // A SYNC answered by register3 with Error=RST: a new identity.
    setup.emulator.fail_register3(1, "RST");
    setup.send_iid(&old, Command::Sync);
    setup.send(&old, "2");
    let new = setup
        .changed_to_new_identity(CredentialsChange::IdentityReset {
            command: Some(IidCommand::Sync),
        })
        .await;
    setup.send(&new, "3");
    assert_eq!(receive(&mut stream, 2).await, ["2", "3"]);
    shutdown(&setup.pullkin, &setup.emulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_device_checks_in_again_without_reconnecting() {
    let mut setup = Setup::start(|config| {
        config.checkin_interval = Some(Duration::from_millis(50));
    })
    .await;
    let old = setup.credentials.clone();
    let id = old.gcm.android_id;
    let mut stream = setup.listen();
    let before = setup.emulator.device(id).unwrap().checkins;
    assert!(
        setup
            .emulator
            .wait_until(WAIT, |e| e.device(id).unwrap().checkins >= before + 3)
            .await,
        "checked in again while connected"
    );
    assert_eq!(setup.emulator.login_count(id), 1, "the connection stayed");
    setup.send(&old, "1");
    assert_eq!(receive(&mut stream, 1).await, ["1"]);

    // A re-check-in that finds the identity dead registers anew and logs in with it.
    setup.emulator.fail_checkins(1, 401);
    let new = setup
        .changed_to_new_identity(CredentialsChange::Reregistered)
        .await;
    setup.send(&new, "2");
    assert_eq!(receive(&mut stream, 1).await, ["2"]);
    shutdown(&setup.pullkin, &setup.emulator).await;
}

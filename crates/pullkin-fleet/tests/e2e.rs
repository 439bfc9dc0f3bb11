//! End to end with `fcm-emulator` and real workers in this process: identities split
//! between two workers, every message stored exactly once, a worker shut down and the
//! other taking over; a worker whose lease moved on dropping the identity; a worker cut
//! off from the database stopping its connections before its leases expire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::support::{Proxy, TestDb, WAIT, eventually, key};
use fcm_emulator::{Emulator, SendMessage};
use gcm_checkin::{GcmToken, SecurityToken};
use pullkin::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, ListenerConfig,
};
use pullkin_fleet::{Database, FleetKey, Worker, add_identity, status};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An Android-persona device registered in the emulator: its credentials and the token
/// senders push to.
fn android_device(emulator: &Emulator) -> (AppCredentials, String, u64) {
    let device = emulator.create_device();
    let gcm = emulator
        .register_gcm(device.android_id, "com.example.app", None, "1234567890")
        .unwrap();
    let keys = webpush_ece::ReceiverKeys::generate();
    let credentials = AppCredentials {
        gcm: AppCredentialsGcm {
            token: GcmToken::new(gcm.token.clone()),
            app_id: "com.example.app".into(),
            android_id: device.android_id,
            security_token: SecurityToken::new(device.security_token),
            installation: None,
        },
        fcm: AppCredentialsFcm::default(),
        keys: AppCredentialsKeys::from_keys(&keys).unwrap(),
        config: None,
    };
    (credentials, gcm.token, device.android_id)
}

fn listener_config(emulator: &Emulator) -> ListenerConfig {
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![pullkin_test_support::emulator::mcs_addr(emulator)];
    config.reconnect = fcm_http::RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(200));
    config.ack_delay = Duration::from_millis(50);
    config
}

/// A running worker and the way to stop it.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), pullkin_fleet::FleetError>>,
}

impl Running {
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the worker stopped")
            .unwrap()
            .unwrap();
    }
}

fn start(db: &Database, key: &FleetKey, emulator: &Emulator, id: &str, ttl: Duration) -> Running {
    let worker = Worker::builder(db, key.clone())
        .worker_id(id)
        .lease_ttl(ttl)
        .listener_config(listener_config(emulator))
        .tls(pullkin_test_support::emulator::tls(emulator))
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

struct Fleet {
    test: TestDb,
    emulator: Emulator,
    key: FleetKey,
    /// name → (token, android id)
    devices: BTreeMap<String, (String, u64)>,
}

async fn fleet(n: usize) -> Fleet {
    let test = TestDb::migrated().await;
    let emulator = Emulator::start().await.unwrap();
    let key = key();
    let mut devices = BTreeMap::new();
    for i in 0..n {
        let (credentials, token, android_id) = android_device(&emulator);
        let name = format!("d{i}");
        add_identity(&test.db, &key, &name, &credentials)
            .await
            .unwrap();
        devices.insert(name, (token, android_id));
    }
    Fleet {
        test,
        emulator,
        key,
        devices,
    }
}

impl Fleet {
    /// Holders by identity name, once every identity is held, live and connected (and
    /// `accept` agrees with the holders).
    async fn wait_connected_where(
        &self,
        holders: &[&str],
        accept: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = status(&self.test.db, Duration::from_secs(60))
                .await
                .unwrap();
            let ready = status.identities.iter().all(|i| {
                i.lease_live
                    && i.state.as_deref() == Some("connected")
                    && i.holder.as_deref().is_some_and(|h| holders.contains(&h))
            }) && self
                .devices
                .values()
                .all(|(_, android_id)| self.emulator.is_connected(*android_id));
            let found: BTreeMap<String, String> = status
                .identities
                .iter()
                .map(|i| (i.name.clone(), i.holder.clone().unwrap_or_default()))
                .collect();
            if ready && accept(&found) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for every identity held by {holders:?} and connected: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_all_connected(&self, holders: &[&str]) -> BTreeMap<String, String> {
        self.wait_connected_where(holders, |_| true).await
    }

    fn send_round(&self, round: &str) {
        for (name, (token, _)) in &self.devices {
            self.emulator
                .send(
                    token,
                    &SendMessage::new().data("n", format!("{name}/{round}")),
                )
                .unwrap();
        }
    }

    /// The stored `(identity, n)` pairs, checking that no persistent id repeats.
    async fn stored(&self) -> Vec<(String, String)> {
        let client = self.test.client().await;
        let rows = client
            .query(
                "SELECT i.name, n.data->>'n', n.persistent_id
                 FROM pullkin.notifications n JOIN pullkin.identities i ON i.id = n.identity_id
                 ORDER BY n.seq",
                &[],
            )
            .await
            .unwrap();
        let keys: BTreeSet<(String, String)> = rows
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, String>(2)))
            .collect();
        assert_eq!(keys.len(), rows.len(), "a persistent id is stored twice");
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    }

    async fn wait_stored(&self, expected: usize) -> Vec<(String, String)> {
        eventually("every message stored", || async {
            self.stored().await.len() >= expected
        })
        .await;
        let stored = self.stored().await;
        assert_eq!(stored.len(), expected, "{stored:?}");
        let distinct: BTreeSet<&(String, String)> = stored.iter().collect();
        assert_eq!(
            distinct.len(),
            expected,
            "a message is stored twice: {stored:?}"
        );
        stored
    }

    /// Waits until the emulator has no unacknowledged message left for any device.
    async fn wait_acknowledged(&self) {
        eventually("every message acknowledged to the server", || async {
            self.devices.values().all(|(_, android_id)| {
                self.emulator.unacked_ids(*android_id).is_empty()
                    && self.emulator.pending_ids(*android_id).is_empty()
            })
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_identities_store_each_message_once_and_take_over() {
    let fleet = fleet(6).await;
    let ttl = Duration::from_secs(2);
    let a = start(&fleet.test.db, &fleet.key, &fleet.emulator, "A", ttl);
    let b = start(&fleet.test.db, &fleet.key, &fleet.emulator, "B", ttl);

    // Split evenly: whoever came first hands the excess to the other.
    let split = fleet
        .wait_connected_where(&["A", "B"], |holders| {
            holders.values().filter(|h| *h == "A").count() == 3
        })
        .await;

    let epochs_before: BTreeMap<String, i64> = status(&fleet.test.db, Duration::from_secs(60))
        .await
        .unwrap()
        .identities
        .into_iter()
        .map(|i| (i.name, i.epoch))
        .collect();
    fleet.send_round("1");
    fleet.send_round("2");
    let stored = fleet.wait_stored(12).await;
    for name in fleet.devices.keys() {
        for round in ["1", "2"] {
            let n = format!("{name}/{round}");
            assert_eq!(
                stored.iter().filter(|(i, m)| i == name && *m == n).count(),
                1,
                "{n}"
            );
        }
    }
    fleet.wait_acknowledged().await;

    // A goes away gracefully: B takes over everything, within a few seconds.
    let handed_off = std::time::Instant::now();
    a.shut_down().await;
    let holders = fleet.wait_all_connected(&["B"]).await;
    assert!(holders.values().all(|h| h == "B"));
    assert!(
        handed_off.elapsed() < ttl + Duration::from_secs(3),
        "{:?}",
        handed_off.elapsed()
    );
    let after_takeover = status(&fleet.test.db, Duration::from_secs(60))
        .await
        .unwrap();
    for identity in &after_takeover.identities {
        let was_a = split.get(&identity.name).is_some_and(|h| h == "A");
        let before = epochs_before[&identity.name];
        // A's were claimed again, so their epoch moved on; B's stayed.
        if was_a {
            assert_eq!(identity.epoch, before + 1, "{identity:?}");
        } else {
            assert_eq!(identity.epoch, before, "{identity:?}");
        }
    }
    assert_eq!(
        after_takeover
            .workers
            .iter()
            .map(|w| w.id.as_str())
            .collect::<Vec<_>>(),
        ["B"]
    );

    fleet.send_round("3");
    let stored = fleet.wait_stored(18).await;
    assert!(stored.iter().any(|(_, n)| n == "d0/3"));
    fleet.wait_acknowledged().await;
    b.shut_down().await;
    // Nothing held, nobody registered, nothing left unacknowledged.
    let at_end = status(&fleet.test.db, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        at_end.identities.iter().all(|i| i.holder.is_none()),
        "{at_end:?}"
    );
    assert!(at_end.workers.is_empty());
    fleet.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_moved_on_drops_the_identity() {
    let fleet = fleet(2).await;
    let a = start(
        &fleet.test.db,
        &fleet.key,
        &fleet.emulator,
        "A",
        Duration::from_secs(2),
    );
    fleet.wait_all_connected(&["A"]).await;
    let (_, stolen_device) = fleet.devices["d0"];
    // Another holder takes d0 (as after a partition), with a lease far in the future.
    let client = fleet.test.client().await;
    client
        .execute(
            "UPDATE pullkin.leases SET worker_id = 'thief', epoch = epoch + 1,
                 expires_at = now() + interval '1 hour'
             WHERE identity_id = (SELECT id FROM pullkin.identities WHERE name = 'd0')",
            &[],
        )
        .await
        .unwrap();
    eventually("A dropped d0", || async {
        !fleet.emulator.is_connected(stolen_device)
    })
    .await;
    // d1 is still A's and working; d0's messages are no longer stored by A.
    fleet.send_round("1");
    let stored = fleet.wait_stored(1).await;
    assert_eq!(stored, [("d1".to_owned(), "d1/1".to_owned())]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fleet.stored().await.len(), 1);
    a.shut_down().await;
    fleet.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_database_stops_before_its_leases_expire() {
    let fleet = fleet(2).await;
    let proxy = Proxy::start().await;
    let through_proxy = Database::builder(&proxy.url(&fleet.test))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let ttl = Duration::from_secs(3);
    let a = start(&through_proxy, &fleet.key, &fleet.emulator, "A", ttl);
    fleet.wait_all_connected(&["A"]).await;
    // Let a renewal happen, then cut the database off.
    tokio::time::sleep(ttl / 2).await;
    proxy.take_down();
    let client = fleet.test.client().await;
    let expires: Vec<SystemTime> = client
        .query(
            "SELECT expires_at FROM pullkin.leases ORDER BY identity_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let first_expiry = *expires.iter().min().unwrap();
    // Every connection closes, before any lease could be claimed by another worker.
    eventually("the connections closed", || async {
        fleet
            .devices
            .values()
            .all(|(_, android_id)| !fleet.emulator.is_connected(*android_id))
    })
    .await;
    let closed_at = SystemTime::now();
    assert!(
        closed_at < first_expiry,
        "closed {:?} after the expiry",
        closed_at.duration_since(first_expiry)
    );
    // The lease did not move in the database meanwhile (nobody renewed through the proxy).
    let after: Vec<SystemTime> = client
        .query(
            "SELECT expires_at FROM pullkin.leases ORDER BY identity_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(after, expires);

    // The database comes back: the worker claims its identities again and reconnects.
    proxy.bring_up();
    fleet.wait_all_connected(&["A"]).await;
    fleet.send_round("1");
    fleet.wait_stored(2).await;
    a.shut_down().await;
    fleet.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_s_identities_are_taken_over_once_its_leases_expire() {
    let fleet = fleet(4).await;
    let ttl = Duration::from_secs(2);
    let a = start(&fleet.test.db, &fleet.key, &fleet.emulator, "A", ttl);
    let b = start(&fleet.test.db, &fleet.key, &fleet.emulator, "B", ttl);
    let split = fleet
        .wait_connected_where(&["A", "B"], |holders| {
            holders.values().filter(|h| *h == "A").count() == 2
        })
        .await;
    fleet.send_round("1");
    fleet.wait_stored(4).await;

    // A dies: no hand-off, no release; its leases run out.
    let died = std::time::Instant::now();
    a.task.abort();
    let _ = a.task.await;
    // Sent while nobody listens for A's identities: they wait at the server.
    fleet.send_round("2");
    let holders = fleet.wait_all_connected(&["B"]).await;
    let took = died.elapsed();
    assert!(holders.values().all(|h| h == "B"));
    assert!(
        took < ttl + Duration::from_secs(2),
        "took over after {took:?}"
    );
    let stored = fleet.wait_stored(8).await;
    for (name, holder) in &split {
        let n = format!("{name}/2");
        assert_eq!(
            stored.iter().filter(|(i, m)| i == name && *m == n).count(),
            1,
            "{n} (was on {holder})"
        );
    }
    fleet.wait_acknowledged().await;
    b.shut_down().await;
    fleet.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_nothing_is_acknowledged_and_nothing_is_lost() {
    let fleet = fleet(2).await;
    let proxy = Proxy::start().await;
    let through_proxy = Database::builder(&proxy.url(&fleet.test))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // Leases long enough to outlast the outage: the worker keeps its connections.
    let a = start(
        &through_proxy,
        &fleet.key,
        &fleet.emulator,
        "A",
        Duration::from_secs(20),
    );
    fleet.wait_all_connected(&["A"]).await;
    fleet.send_round("1");
    fleet.wait_stored(2).await;
    fleet.wait_acknowledged().await;

    proxy.take_down();
    fleet.send_round("2");
    fleet.send_round("3");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Received perhaps, but not acknowledged: the server still has every one of them.
    for (name, (_, android_id)) in &fleet.devices {
        let waiting = fleet.emulator.unacked_ids(*android_id).len()
            + fleet.emulator.pending_ids(*android_id).len();
        assert_eq!(waiting, 2, "{name}: acknowledged without being stored");
    }
    assert_eq!(fleet.stored().await.len(), 2);

    proxy.bring_up();
    let stored = fleet.wait_stored(6).await;
    for name in fleet.devices.keys() {
        for round in ["2", "3"] {
            let n = format!("{name}/{round}");
            assert_eq!(
                stored.iter().filter(|(i, m)| i == name && *m == n).count(),
                1,
                "{n}"
            );
        }
    }
    fleet.wait_acknowledged().await;
    a.shut_down().await;
    fleet.emulator.shutdown().await;
}

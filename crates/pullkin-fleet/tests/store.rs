//! The fleet store: messages and ack state in one transaction, redeliveries as no-ops,
//! fencing by epoch, group commit, and a commit that fails while the database is down.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Proxy, TestDb, credentials, key};
use pullkin::session::{AckState, UnconfirmedId};
use pullkin::{Store, StoreError};
use pullkin_fleet::{
    Database, FleetError, FleetKey, FleetStore, Lease, Leases, NotificationRow, WorkerInfo,
    add_identity,
};

pub(crate) fn row(persistent_id: &str) -> NotificationRow {
    let mut row = NotificationRow::new(
        Some(persistent_id.to_owned()),
        SystemTime::now(),
        serde_json::json!({ "n": persistent_id }),
        serde_json::json!({ "app": "x", "persistent_id": persistent_id }),
    );
    row.sender = Some("1234".to_owned());
    row
}

/// When the `i`th id of [`ack`] arrived: a minute apart, in November 2023.
fn arrival(i: usize) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 60 * i as u64)
}

fn ack(ids: &[&str]) -> AckState {
    AckState {
        unconfirmed: ids
            .iter()
            .enumerate()
            .map(|(i, id)| UnconfirmedId::new(*id, arrival(i)))
            .collect(),
        recent: Vec::new(),
    }
}

fn leases(db: &Database, worker: &str, ttl: Duration, key: &FleetKey) -> Leases {
    let mut info = WorkerInfo::this_process(None);
    info.id = worker.to_owned();
    Leases::new(db.clone(), info, ttl, key.id())
}

/// `n` identities claimed by worker `a` and held by its store.
async fn held(
    test: &TestDb,
    db: &Database,
    n: usize,
    ttl: Duration,
) -> (
    FleetKey,
    Leases,
    FleetStore,
    tokio::sync::mpsc::UnboundedReceiver<pullkin_fleet::FencedIdentity>,
    Vec<Lease>,
) {
    let key = key();
    for i in 0..n {
        add_identity(&test.db, &key, &format!("s{i}"), &credentials(i as u64 + 1))
            .await
            .unwrap();
    }
    let a = leases(db, "a", ttl, &key);
    a.register().await.unwrap();
    let claimed = a.claim(n).await.unwrap();
    assert_eq!(claimed.len(), n);
    let (store, fenced) = FleetStore::new(db.clone(), key.clone(), "a".to_owned());
    for lease in &claimed {
        store.hold(
            &format!("s{}", lease.identity - 1),
            lease.identity,
            lease.epoch,
        );
    }
    (key, a, store, fenced, claimed)
}

async fn count(test: &TestDb, sql: &str) -> i64 {
    test.client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn messages_and_ack_state_commit_in_one_write_and_redeliveries_are_no_ops() {
    let test = TestDb::migrated().await;
    let (_key, _a, store, _fenced, _) = held(&test, &test.db, 1, Duration::from_secs(30)).await;
    for id in ["0:1", "0:2", "0:3"] {
        assert!(store.push("s0", row(id)));
    }
    assert!(!store.push("s0", row("0:2")), "pending once");
    assert_eq!(store.pending("s0"), 3);
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        0
    );
    store
        .save_ack_state("s0", ack(&["0:1", "0:2", "0:3"]))
        .await
        .unwrap();
    assert_eq!(store.pending("s0"), 0);
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        3
    );
    let loaded = store.load_ack_state("s0").await.unwrap();
    assert_eq!(loaded, ack(&["0:1", "0:2", "0:3"]));

    // The server delivers two of them again (say, after a crash before the ack).
    store.push("s0", row("0:2"));
    store.push("s0", row("0:3"));
    store.push("s0", row("0:4"));
    store.save_ack_state("s0", ack(&["0:4"])).await.unwrap();
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        4
    );
    // In the order they were received, seq growing.
    let client = test.client().await;
    let ids: Vec<String> = client
        .query(
            "SELECT persistent_id FROM pullkin.notifications ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, ["0:1", "0:2", "0:3", "0:4"]);
    // A message without persistent id goes in with a flush.
    store.push(
        "s0",
        NotificationRow::new(
            None,
            SystemTime::now(),
            serde_json::json!({}),
            serde_json::json!({}),
        ),
    );
    store.flush("s0").await.unwrap();
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        5
    );
}

#[tokio::test]
async fn a_write_with_an_old_epoch_is_refused_and_the_worker_told() {
    let test = TestDb::migrated().await;
    let ttl = Duration::from_millis(500);
    let (key, _a, store, mut fenced, claimed) = held(&test, &test.db, 1, ttl).await;
    store.push("s0", row("0:1"));
    store.save_ack_state("s0", ack(&["0:1"])).await.unwrap();

    // A stalls past its lease; B takes the identity over.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let b = leases(&test.db, "b", Duration::from_secs(30), &key);
    let taken = b.claim(1).await.unwrap();
    assert_eq!(taken[0].epoch, claimed[0].epoch + 1);

    // A wakes up and writes: refused, nothing written.
    store.push("s0", row("0:2"));
    let error = store
        .save_ack_state("s0", ack(&["0:1", "0:2"]))
        .await
        .unwrap_err();
    let StoreError::Backend(cause) = &error else {
        panic!("{error:?}")
    };
    let cause = cause.downcast_ref::<FleetError>().unwrap();
    assert!(
        matches!(cause, FleetError::Fenced { identity, epoch } if *identity == claimed[0].identity && *epoch == claimed[0].epoch),
        "{cause:?}"
    );
    let told = tokio::time::timeout(Duration::from_secs(5), fenced.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(told.name, "s0");
    assert_eq!(told.epoch, claimed[0].epoch);
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        1
    );
    let state: Vec<String> = test
        .client()
        .await
        .query_one("SELECT unconfirmed FROM pullkin.ack_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, ["0:1"]);
    // Refused from now on, without asking the database; nothing more is queued.
    assert!(!store.push("s0", row("0:3")));
    assert!(
        store
            .save_ack_state("s0", AckState::default())
            .await
            .is_err()
    );
    let creds = credentials(1);
    assert!(store.save_credentials("s0", &creds).await.is_err());
}

#[tokio::test]
async fn a_removed_identity_fences_its_writes() {
    let test = TestDb::migrated().await;
    let (_key, _a, store, mut fenced, _) = held(&test, &test.db, 1, Duration::from_secs(30)).await;
    pullkin_fleet::remove_identity(&test.db, "s0")
        .await
        .unwrap();
    store.push("s0", row("0:1"));
    assert!(store.save_ack_state("s0", ack(&["0:1"])).await.is_err());
    assert_eq!(fenced.recv().await.unwrap().name, "s0");
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        0
    );
}

#[tokio::test]
async fn concurrent_writes_of_many_identities_share_transactions() {
    let test = TestDb::migrated().await;
    let n = 40;
    let (_key, _a, store, _fenced, _) = held(&test, &test.db, n, Duration::from_secs(30)).await;
    let mut writes = Vec::new();
    for i in 0..n {
        let name = format!("s{i}");
        for m in 0..5 {
            store.push(&name, row(&format!("0:{i}-{m}")));
        }
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            store.save_ack_state(&name, ack(&["x"])).await
        }));
    }
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.writes, n as u64);
    assert_eq!(stats.rows, 5 * n as u64);
    assert!(stats.transactions < n as u64, "{stats:?}");
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.notifications").await,
        5 * n as i64
    );
    assert_eq!(
        count(&test, "SELECT count(*) FROM pullkin.ack_state").await,
        n as i64
    );
}

#[tokio::test]
async fn a_commit_while_the_database_is_down_fails_and_keeps_the_rows_pending() {
    let test = TestDb::migrated().await;
    let proxy = Proxy::start().await;
    let db = Database::builder(&proxy.url(&test))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (_key, _a, store, _fenced, _) = held(&test, &db, 1, Duration::from_secs(60)).await;
    store.push("s0", row("0:1"));
    store.push("s0", row("0:2"));

    proxy.take_down();
    let error = store
        .save_ack_state("s0", ack(&["0:1", "0:2"]))
        .await
        .unwrap_err();
    let StoreError::Backend(cause) = &error else {
        panic!("{error:?}")
    };
    assert!(
        cause.downcast_ref::<FleetError>().unwrap().is_unreachable(),
        "{cause}"
    );
    // Kept, in order, with what arrived meanwhile behind them.
    store.push("s0", row("0:3"));
    assert_eq!(store.pending("s0"), 3);

    proxy.bring_up();
    store
        .save_ack_state("s0", ack(&["0:1", "0:2", "0:3"]))
        .await
        .unwrap();
    let client = test.client().await;
    let ids: Vec<String> = client
        .query(
            "SELECT persistent_id FROM pullkin.notifications ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, ["0:1", "0:2", "0:3"]);
}

#[tokio::test]
async fn renewed_credentials_are_stored_sealed() {
    let test = TestDb::migrated().await;
    let (key, _a, store, _fenced, _) = held(&test, &test.db, 1, Duration::from_secs(30)).await;
    let mut renewed = credentials(1);
    renewed.gcm.android_id = 99;
    store.save_credentials("s0", &renewed).await.unwrap();
    assert_eq!(
        store
            .load_credentials("s0")
            .await
            .unwrap()
            .unwrap()
            .gcm
            .android_id,
        99
    );
    let opened = pullkin_fleet::load_credentials(&test.db, &key, "s0")
        .await
        .unwrap();
    assert_eq!(opened.gcm.android_id, 99);
}

#[tokio::test]
async fn a_large_batch_commits_whole_in_order_with_each_line_as_printed() {
    let test = TestDb::migrated().await;
    let (_key, _a, store, _fenced, _) = held(&test, &test.db, 3, Duration::from_secs(30)).await;
    // More rows than one INSERT statement carries, over three identities.
    let mut expected = Vec::new();
    for i in 0..1_234 {
        let name = format!("s{}", i % 3);
        let id = format!("0:{i}");
        let mut row = row(&id);
        row.line = serde_json::json!({
            "persistent_id": id, "app": name, "data": { "z": "1", "a": "2 \u{e9}" },
        });
        // The stored text is the line exactly as `pullkin listen` prints it.
        expected.push((name.clone(), id, serde_json::to_string(&row.line).unwrap()));
        assert!(store.push(&name, row));
    }
    let mut state = ack(&["0:1"]);
    state.recent = vec![Arc::from("0:0")];
    let names = ["s0", "s1", "s2"];
    let writes = names.map(|name| store.save_ack_state(name, state.clone()));
    for result in futures_util::future::join_all(writes).await {
        result.unwrap();
    }
    let client = test.client().await;
    let rows = client
        .query(
            "SELECT i.name, n.persistent_id, n.line::text FROM pullkin.notifications n
             JOIN pullkin.identities i ON i.id = n.identity_id ORDER BY n.seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    // Each identity's rows in the order they were received.
    for name in names {
        let stored: Vec<(String, String, String)> = rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .filter(|(n, _, _): &(String, String, String)| n == name)
            .collect();
        let sent: Vec<(String, String, String)> = expected
            .iter()
            .filter(|(n, _, _)| n == name)
            .cloned()
            .collect();
        assert_eq!(stored, sent);
    }
    // Only the unconfirmed ids are kept: the unique key is the dedupe.
    let loaded = store.load_ack_state("s0").await.unwrap();
    assert_eq!(loaded, ack(&["0:1"]));
}

#[tokio::test]
async fn unconfirmed_ids_keep_their_arrival_times() {
    let test = TestDb::migrated().await;
    let (_key, _a, store, _fenced, _) = held(&test, &test.db, 1, Duration::from_secs(30)).await;
    let mut state = ack(&["0:1", "0:2"]);
    // Before 1970 and past 9999: stored as the nearest end of the range.
    state.unconfirmed.push(UnconfirmedId::new(
        "0:early",
        UNIX_EPOCH - Duration::from_secs(1),
    ));
    state.unconfirmed.push(UnconfirmedId::new(
        "0:far",
        UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 24 * 3600),
    ));
    store.save_ack_state("s0", state).await.unwrap();
    let times: Vec<i64> = test
        .client()
        .await
        .query_one("SELECT received_ms FROM pullkin.ack_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        times,
        [1_700_000_000_000, 1_700_000_060_000, 0, 253_402_300_799_999]
    );
    let loaded = store.load_ack_state("s0").await.unwrap();
    let mut expected = ack(&["0:1", "0:2"]);
    expected
        .unconfirmed
        .push(UnconfirmedId::new("0:early", UNIX_EPOCH));
    expected.unconfirmed.push(UnconfirmedId::new(
        "0:far",
        UNIX_EPOCH + Duration::from_millis(253_402_300_799_999),
    ));
    assert_eq!(loaded, expected);
    // A later write replaces the times with the ids.
    store.save_ack_state("s0", ack(&["0:9"])).await.unwrap();
    assert_eq!(store.load_ack_state("s0").await.unwrap(), ack(&["0:9"]));
}

#[tokio::test]
async fn ids_without_a_stored_time_count_as_arrived_when_loaded() {
    let test = TestDb::migrated().await;
    let (_key, _a, store, _fenced, _) = held(&test, &test.db, 1, Duration::from_secs(30)).await;
    store
        .save_ack_state("s0", ack(&["0:1", "0:2"]))
        .await
        .unwrap();
    let client = test.client().await;
    for unknown in [
        "UPDATE pullkin.ack_state SET received_ms = NULL",
        "UPDATE pullkin.ack_state SET received_ms = ARRAY[NULL, 1700000060000]::bigint[]",
    ] {
        client.batch_execute(unknown).await.unwrap();
        let before = SystemTime::now();
        let loaded = store.load_ack_state("s0").await.unwrap();
        let after = SystemTime::now();
        assert_eq!(loaded.unconfirmed.len(), 2, "{unknown}");
        assert_eq!(&*loaded.unconfirmed[0].id, "0:1");
        let received = loaded.unconfirmed[0].received;
        assert!(
            before <= received && received <= after,
            "{unknown}: {received:?}"
        );
        if unknown.contains("ARRAY") {
            assert_eq!(loaded.unconfirmed[1], UnconfirmedId::new("0:2", arrival(1)));
        }
    }
}

#[tokio::test]
async fn a_row_written_before_version_4_loads_with_the_load_time() {
    let test = TestDb::empty().await;
    pullkin_fleet::migrate_to(&test.db, 3).await.unwrap();
    let key = key();
    let identity = add_identity(&test.db, &key, "s0", &credentials(1))
        .await
        .unwrap();
    test.client()
        .await
        .execute(
            "INSERT INTO pullkin.ack_state (identity_id, unconfirmed, epoch)
             VALUES ($1, ARRAY['0:a', '0:b'], 0)",
            &[&identity],
        )
        .await
        .unwrap();
    pullkin_fleet::migrate(&test.db).await.unwrap();
    let a = leases(&test.db, "a", Duration::from_secs(30), &key);
    a.register().await.unwrap();
    let claimed = a.claim(1).await.unwrap();
    let (store, _fenced) = FleetStore::new(test.db.clone(), key.clone(), "a".to_owned());
    store.hold("s0", claimed[0].identity, claimed[0].epoch);
    let before = SystemTime::now();
    let loaded = store.load_ack_state("s0").await.unwrap();
    let after = SystemTime::now();
    let ids: Vec<&str> = loaded.unconfirmed.iter().map(|u| &*u.id).collect();
    assert_eq!(ids, ["0:a", "0:b"]);
    assert!(
        loaded
            .unconfirmed
            .iter()
            .all(|u| before <= u.received && u.received <= after),
        "{loaded:?}"
    );
    // The next write stores the times.
    store.save_ack_state("s0", loaded.clone()).await.unwrap();
    let reloaded = store.load_ack_state("s0").await.unwrap();
    let ms = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(
        reloaded
            .unconfirmed
            .iter()
            .map(|u| ms(u.received))
            .collect::<Vec<_>>(),
        loaded
            .unconfirmed
            .iter()
            .map(|u| ms(u.received))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_unreadable_ack_row_is_a_typed_error() {
    let test = TestDb::migrated().await;
    let (_key, _a, store, _fenced, claimed) =
        held(&test, &test.db, 1, Duration::from_secs(30)).await;
    store
        .save_ack_state("s0", ack(&["0:1", "0:2"]))
        .await
        .unwrap();
    let client = test.client().await;
    for bad in [
        "UPDATE pullkin.ack_state SET received_ms = ARRAY[1]::bigint[]",
        "UPDATE pullkin.ack_state SET received_ms = ARRAY[1, -1]::bigint[]",
        "UPDATE pullkin.ack_state SET received_ms = ARRAY[1, 253402300800000]::bigint[]",
        "UPDATE pullkin.ack_state SET received_ms = ARRAY[[1, 2]]::bigint[]",
        "UPDATE pullkin.ack_state SET unconfirmed = ARRAY['0:1', NULL], received_ms = NULL",
    ] {
        client.batch_execute(bad).await.unwrap();
        let error = store.load_ack_state("s0").await.unwrap_err();
        let StoreError::Backend(cause) = &error else {
            panic!("{bad}: {error:?}")
        };
        let cause = cause.downcast_ref::<FleetError>().unwrap();
        assert!(
            matches!(cause, FleetError::CorruptAckState { identity, .. } if *identity == claimed[0].identity),
            "{bad}: {cause:?}"
        );
        assert!(!cause.to_string().contains('\n'), "{cause}");
        // Put the good row back for the next case.
        store
            .save_ack_state("s0", ack(&["0:1", "0:2"]))
            .await
            .unwrap();
    }
}

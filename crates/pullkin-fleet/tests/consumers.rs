//! Consumers and retention: batches in order, durable cursors that resume, `--from
//! SEQ`, following on NOTIFY without polling, pruning what every consumer passed,
//! the status view.

use std::time::Duration;

use crate::store::row;
use crate::support::{Proxy, TestDb, credentials, key};
use pullkin::Store as _;
use pullkin::session::AckState;
use pullkin_fleet::{
    Consumer, FleetStore, Leases, WorkerInfo, add_identity, latest_seq, prune, remove_consumer,
    status,
};

/// A store holding one identity `c0`, and a way to store `n` messages through it.
async fn stored(test: &TestDb) -> FleetStore {
    let key = key();
    add_identity(&test.db, &key, "c0", &credentials(1))
        .await
        .unwrap();
    let mut info = WorkerInfo::this_process(None);
    info.id = "w".to_owned();
    let leases = Leases::new(test.db.clone(), info, Duration::from_secs(60), key.id());
    leases.register().await.unwrap();
    let lease = leases.claim(1).await.unwrap()[0];
    let (store, _fenced) = FleetStore::new(test.db.clone(), key, "w".to_owned());
    store.hold("c0", lease.identity, lease.epoch);
    store
}

async fn store_messages(store: &FleetStore, ids: std::ops::Range<u32>) {
    for n in ids {
        store.push("c0", row(&format!("0:{n}")));
    }
    store
        .save_ack_state("c0", AckState::default())
        .await
        .unwrap();
}

fn ids(batch: &[pullkin_fleet::StoredNotification]) -> Vec<String> {
    batch
        .iter()
        .map(|n| n.persistent_id.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn a_consumer_reads_in_order_commits_and_resumes_where_it_committed() {
    let test = TestDb::migrated().await;
    let store = stored(&test).await;
    store_messages(&store, 0..10).await;

    let mut consumer = Consumer::open(&test.db, "app").await.unwrap();
    assert_eq!(consumer.committed(), 0);
    let first = consumer.next_batch(4).await.unwrap();
    assert_eq!(ids(&first), ["0:0", "0:1", "0:2", "0:3"]);
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(first[0].identity.as_deref(), Some("c0"));
    assert_eq!(first[0].line["persistent_id"], "0:0");
    consumer.commit(first[3].seq).await.unwrap();
    // Read further without committing: a restart resumes after the commit.
    let unfinished = consumer.next_batch(3).await.unwrap();
    assert_eq!(ids(&unfinished), ["0:4", "0:5", "0:6"]);
    drop(consumer);

    let mut resumed = Consumer::open(&test.db, "app").await.unwrap();
    assert_eq!(resumed.committed(), first[3].seq);
    let rest = resumed.next_batch(100).await.unwrap();
    assert_eq!(ids(&rest), ["0:4", "0:5", "0:6", "0:7", "0:8", "0:9"]);
    assert!(resumed.next_batch(100).await.unwrap().is_empty());

    // Another consumer has a cursor of its own; --from SEQ starts anywhere.
    let mut other = Consumer::open(&test.db, "audit").await.unwrap();
    other.seek(rest[2].seq);
    assert_eq!(ids(&other.next_batch(2).await.unwrap()), ["0:6", "0:7"]);

    // A transient consumer starts at the end.
    let mut tail = Consumer::transient(&test.db).await.unwrap();
    assert_eq!(tail.position(), latest_seq(&test.db).await.unwrap());
    assert!(tail.next_batch(10).await.unwrap().is_empty());
    store_messages(&store, 10..11).await;
    assert_eq!(ids(&tail.next_batch(10).await.unwrap()), ["0:10"]);
}

#[tokio::test]
async fn follow_wakes_on_notify_without_waiting_for_the_poll() {
    let test = TestDb::migrated().await;
    let store = stored(&test).await;
    let consumer = Consumer::open(&test.db, "follower").await.unwrap();
    // A poll far longer than the test may wait: only the notification can wake it.
    let mut follower = consumer
        .follow()
        .await
        .unwrap()
        .poll_every(Duration::from_secs(600));
    assert!(follower.is_listening());
    let waiting = tokio::spawn(async move {
        let batch = follower.next(10).await.unwrap();
        (follower, batch)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    store_messages(&store, 0..2).await;
    let (mut follower, batch) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by NOTIFY")
        .unwrap();
    assert_eq!(ids(&batch), ["0:0", "0:1"]);
    follower.commit(batch[1].seq).await.unwrap();
    // Rows already there are returned at once.
    store_messages(&store, 2..3).await;
    let batch = tokio::time::timeout(Duration::from_secs(5), follower.next(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&batch), ["0:2"]);
}

#[tokio::test]
async fn follow_falls_back_to_polling() {
    let test = TestDb::migrated().await;
    let store = stored(&test).await;
    let consumer = Consumer::open(&test.db, "poller").await.unwrap();
    let mut follower = consumer
        .follow()
        .await
        .unwrap()
        .poll_every(Duration::from_millis(100));
    // Rows inserted by hand, without NOTIFY: the poll finds them.
    store_messages(&store, 0..1).await;
    let client = test.client().await;
    client
        .execute(
            "INSERT INTO pullkin.notifications (identity_id, persistent_id, received_at, data, line)
             SELECT identity_id, 'manual', now(), '{}', '{}' FROM pullkin.leases LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(5), follower.next(10))
            .await
            .unwrap()
            .unwrap();
        seen.extend(ids(&batch));
    }
    assert_eq!(seen, ["0:0", "manual"]);
}

#[tokio::test]
async fn retention_deletes_only_what_every_consumer_passed() {
    let test = TestDb::migrated().await;
    let store = stored(&test).await;
    store_messages(&store, 0..6).await;
    let count = || async {
        let client = test.client().await;
        let n: i64 = client
            .query_one("SELECT count(*) FROM pullkin.notifications", &[])
            .await
            .unwrap()
            .get(0);
        n
    };

    let mut fast = Consumer::open(&test.db, "fast").await.unwrap();
    let mut slow = Consumer::open(&test.db, "slow").await.unwrap();
    let all = fast.next_batch(10).await.unwrap();
    fast.commit(all[5].seq).await.unwrap();
    let some = slow.next_batch(2).await.unwrap();
    slow.commit(some[1].seq).await.unwrap();

    // Younger than the age: kept, whatever the cursors.
    assert_eq!(
        prune(&test.db, Duration::from_secs(3600))
            .await
            .unwrap()
            .notifications,
        0
    );
    // What the slow consumer passed goes; the rest waits for it.
    assert_eq!(
        prune(&test.db, Duration::ZERO).await.unwrap().notifications,
        2
    );
    assert_eq!(count().await, 4);
    let status = status(&test.db, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.identities[0].waiting, 4);
    let slow_status = status.consumers.iter().find(|c| c.name == "slow").unwrap();
    assert_eq!(slow_status.behind, 4);
    // Without consumers, the age alone decides.
    remove_consumer(&test.db, "fast").await.unwrap();
    remove_consumer(&test.db, "slow").await.unwrap();
    assert_eq!(
        prune(&test.db, Duration::ZERO).await.unwrap().notifications,
        4
    );
    assert_eq!(count().await, 0);
}

#[tokio::test]
async fn status_shows_holders_epochs_and_workers() {
    let test = TestDb::migrated().await;
    let _store = stored(&test).await;
    let key = key();
    add_identity(&test.db, &key, "free", &credentials(2))
        .await
        .unwrap();
    let status = status(&test.db, Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.schema_version, pullkin_fleet::SCHEMA_VERSION);
    let held = &status.identities[0];
    assert_eq!(held.name, "c0");
    assert_eq!(held.holder.as_deref(), Some("w"));
    assert_eq!(held.epoch, 1);
    assert!(held.lease_live);
    let free = &status.identities[1];
    assert_eq!(free.holder, None);
    assert!(!free.lease_live);
    assert_eq!(free.lease_expires_at, None);
    assert_eq!(status.workers.len(), 1);
    assert_eq!(status.workers[0].id, "w");
    assert_eq!(status.workers[0].held, 1);
    assert!(status.workers[0].live);
}

#[tokio::test]
async fn a_follower_rides_out_the_database_going_away() {
    let test = TestDb::migrated().await;
    let store = stored(&test).await;
    // The follower reaches the database through a proxy that can be taken down.
    let proxy = Proxy::start().await;
    let db = pullkin_fleet::Database::builder(&proxy.url(&test))
        .build()
        .unwrap();
    let consumer = Consumer::open(&db, "survivor").await.unwrap();
    let mut follower = consumer
        .follow()
        .await
        .unwrap()
        .poll_every(Duration::from_millis(50));
    store_messages(&store, 0..2).await;
    let first = tokio::time::timeout(Duration::from_secs(5), follower.next(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&first), ["0:0", "0:1"]);
    let seq = first.last().unwrap().seq;

    // Down after the rows were handed on: the commit of the cursor waits, not fails.
    proxy.take_down();
    let committing = tokio::spawn(async move { follower.commit(seq).await.map(|()| follower) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !committing.is_finished(),
        "the commit waited for the database"
    );
    proxy.bring_up();
    let mut follower = tokio::time::timeout(Duration::from_secs(10), committing)
        .await
        .expect("the commit went through once the database was back")
        .unwrap()
        .unwrap();
    let cursor: i64 = test
        .client()
        .await
        .query_one(
            "SELECT last_seq FROM pullkin.consumers WHERE name = 'survivor'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursor, seq);

    // And it goes on following.
    store_messages(&store, 2..3).await;
    let next = tokio::time::timeout(Duration::from_secs(10), follower.next(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&next), ["0:2"]);
}

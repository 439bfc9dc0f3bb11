//! Leases on the database: claim, renew, expire, take-over only after expiry, the epoch
//! growing with every holding, release, the fleet's counts.

use std::time::Duration;

use crate::support::{TestDb, credentials, key};
use pullkin_fleet::{Lease, Leases, WorkerInfo, add_identity, set_disabled};

fn worker(test: &TestDb, name: &str, ttl: Duration, key_id: &str) -> Leases {
    let mut info = WorkerInfo::this_process(None);
    info.id = name.to_owned();
    Leases::new(test.db.clone(), info, ttl, key_id.to_owned())
}

async fn lease_row(test: &TestDb, identity: i64) -> (Option<String>, i64) {
    let row = test
        .client()
        .await
        .query_one(
            "SELECT worker_id, epoch FROM pullkin.leases WHERE identity_id = $1",
            &[&identity],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn claims_take_only_free_leases_and_the_epoch_grows() {
    let test = TestDb::migrated().await;
    let key = key();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            add_identity(&test.db, &key, &format!("i{n}"), &credentials(n))
                .await
                .unwrap(),
        );
    }
    let a = worker(&test, "a", Duration::from_secs(30), &key.id());
    let b = worker(&test, "b", Duration::from_secs(30), &key.id());
    a.register().await.unwrap();
    b.register().await.unwrap();

    let claimed_a = a.claim(3).await.unwrap();
    assert_eq!(claimed_a.len(), 3);
    assert!(claimed_a.iter().all(|lease| lease.epoch == 1));
    // B gets what is left, never A's.
    let claimed_b = b.claim(10).await.unwrap();
    assert_eq!(claimed_b.len(), 2);
    assert!(
        claimed_b
            .iter()
            .all(|l| !claimed_a.iter().any(|a| a.identity == l.identity))
    );
    assert!(b.claim(10).await.unwrap().is_empty());
    assert!(a.claim(10).await.unwrap().is_empty());

    // Renewal returns exactly what each holds.
    assert_eq!(a.renew().await.unwrap(), claimed_a);
    assert_eq!(b.renew().await.unwrap(), claimed_b);

    // A released lease is claimable at once, at the next epoch.
    assert!(a.release(claimed_a[0]).await.unwrap());
    assert!(!a.release(claimed_a[0]).await.unwrap());
    assert_eq!(lease_row(&test, claimed_a[0].identity).await, (None, 1));
    let again = b.claim(10).await.unwrap();
    assert_eq!(
        again,
        [Lease {
            identity: claimed_a[0].identity,
            epoch: 2
        }]
    );
    assert_eq!(a.renew().await.unwrap(), claimed_a[1..]);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_holder_learns_it() {
    let test = TestDb::migrated().await;
    let key = key();
    let id = add_identity(&test.db, &key, "solo", &credentials(1))
        .await
        .unwrap();
    let ttl = Duration::from_millis(800);
    let a = worker(&test, "a", ttl, &key.id());
    let b = worker(&test, "b", ttl, &key.id());
    assert_eq!(
        a.claim(1).await.unwrap(),
        [Lease {
            identity: id,
            epoch: 1
        }]
    );
    // Not before it expired, however often B asks; renewals keep it A's.
    for _ in 0..3 {
        assert!(b.claim(1).await.unwrap().is_empty());
        tokio::time::sleep(ttl / 3).await;
        assert_eq!(a.renew().await.unwrap().len(), 1);
    }
    // A stops renewing: once expired, B takes it over at the next epoch.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(
        b.claim(1).await.unwrap(),
        [Lease {
            identity: id,
            epoch: 2
        }]
    );
    assert_eq!(lease_row(&test, id).await, (Some("b".to_owned()), 2));
    // A's renewal no longer finds it, and A's release does nothing to B's lease.
    assert!(a.renew().await.unwrap().is_empty());
    assert!(
        !a.release(Lease {
            identity: id,
            epoch: 1
        })
        .await
        .unwrap()
    );
    assert_eq!(lease_row(&test, id).await, (Some("b".to_owned()), 2));
}

#[tokio::test]
async fn disabled_identities_and_other_keys_are_not_claimed_and_renewal_drops_them() {
    let test = TestDb::migrated().await;
    let key = key();
    let other_key = crate::support::key();
    add_identity(&test.db, &key, "mine", &credentials(1))
        .await
        .unwrap();
    add_identity(&test.db, &other_key, "theirs", &credentials(2))
        .await
        .unwrap();
    let a = worker(&test, "a", Duration::from_secs(30), &key.id());
    let claimed = a.claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the identity sealed with its key");
    set_disabled(&test.db, "mine", true).await.unwrap();
    assert!(a.renew().await.unwrap().is_empty());
    assert!(a.claim(10).await.unwrap().is_empty());
    set_disabled(&test.db, "mine", false).await.unwrap();
    assert_eq!(a.renew().await.unwrap(), claimed);
}

#[tokio::test]
async fn the_counts_see_live_workers_and_free_identities() {
    let test = TestDb::migrated().await;
    let key = key();
    for n in 0..4 {
        add_identity(&test.db, &key, &format!("c{n}"), &credentials(n))
            .await
            .unwrap();
    }
    let ttl = Duration::from_millis(600);
    let mut capped = WorkerInfo::this_process(Some(2));
    capped.id = "capped".to_owned();
    let a = Leases::new(test.db.clone(), capped, ttl, key.id());
    let b = worker(&test, "b", ttl, &key.id());
    a.register().await.unwrap();
    b.register().await.unwrap();
    a.claim(1).await.unwrap();
    let observed = b.observe().await.unwrap();
    assert_eq!(observed.active, 4);
    assert_eq!(observed.free, 3);
    assert_eq!(observed.capacities, [None, Some(2)]);
    // A worker not seen within the TTL is not live; its renewal brings it back.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    b.renew().await.unwrap();
    let observed = b.observe().await.unwrap();
    assert_eq!(observed.capacities, [None]);
    assert_eq!(observed.free, 4, "a's lease expired too");
    a.deregister().await.unwrap();
    b.release_all().await.unwrap();
}

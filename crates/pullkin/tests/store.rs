//! The directory store: round trips, crash safety, permissions, bad files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::{Duration, SystemTime};

use pullkin::session::{AckState, UnconfirmedId};
use pullkin::{AppCredentials, DirStore, MemoryStore, Store, StoreError};

fn credentials() -> AppCredentials {
    AppCredentials::from_json(include_str!("fixtures/pullkin_credentials.json")).unwrap()
}

/// A state with these unconfirmed ids (arrived a minute apart, in November 2023) and one
/// recent id.
fn state(ids: &[&str]) -> AckState {
    let arrived =
        |i: usize| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 60 * i as u64);
    AckState {
        unconfirmed: ids
            .iter()
            .enumerate()
            .map(|(i, id)| UnconfirmedId::new(*id, arrived(i)))
            .collect(),
        recent: vec!["0:old".into()],
    }
}

#[tokio::test]
async fn round_trips_and_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("state")).unwrap();
    assert_eq!(
        store.load_ack_state("app").await.unwrap(),
        AckState::default()
    );
    assert_eq!(store.load_credentials("app").await.unwrap(), None);
    store
        .save_ack_state("app", state(&["0:1", "0:2"]))
        .await
        .unwrap();
    store.save_credentials("app", &credentials()).await.unwrap();
    // A second store on the same directory (a restart) reads it back.
    let again = DirStore::open(dir.path().join("state")).unwrap();
    assert_eq!(
        again.load_ack_state("app").await.unwrap(),
        state(&["0:1", "0:2"])
    );
    assert_eq!(
        again.load_credentials("app").await.unwrap(),
        Some(credentials())
    );
    assert_eq!(
        again.load_ack_state("other").await.unwrap(),
        AckState::default()
    );
}

#[cfg(unix)]
#[tokio::test]
async fn files_and_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let store = DirStore::open(&root).unwrap();
    store.save_ack_state("app", state(&["0:1"])).await.unwrap();
    store.save_credentials("app", &credentials()).await.unwrap();
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in fs::read_dir(&root).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[tokio::test]
async fn an_interrupted_write_leaves_the_old_state_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    store.save_ack_state("app", state(&["0:1"])).await.unwrap();
    // A crash mid-write leaves a partial temporary file beside the real one.
    fs::write(
        dir.path().join(".app.acks.json.tmp999"),
        b"{\"format\":\"pullkin-ac",
    )
    .unwrap();
    assert_eq!(store.load_ack_state("app").await.unwrap(), state(&["0:1"]));
    // The next write succeeds over it.
    store.save_ack_state("app", state(&["0:2"])).await.unwrap();
    assert_eq!(store.load_ack_state("app").await.unwrap(), state(&["0:2"]));
}

#[tokio::test]
async fn a_failed_write_keeps_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    // The first write is a snapshot. Make its rename fail: a directory stands where the
    // temporary file would go.
    let tmp = dir
        .path()
        .join(format!(".app.acks.json.tmp{}", std::process::id()));
    fs::create_dir(&tmp).unwrap();
    let err = store
        .save_ack_state("app", state(&["0:1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert_eq!(
        store.load_ack_state("app").await.unwrap(),
        AckState::default()
    );
    fs::remove_dir(&tmp).unwrap();
    store.save_ack_state("app", state(&["0:1"])).await.unwrap();
    // The next ones append to the log. Make that fail: a directory stands where it goes.
    let log = dir.path().join("app.acks.log");
    let _ = fs::remove_file(&log);
    fs::create_dir(&log).unwrap();
    let err = store
        .save_ack_state("app", state(&["0:2"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    fs::remove_dir(&log).unwrap();
    assert_eq!(store.load_ack_state("app").await.unwrap(), state(&["0:1"]));
}

#[tokio::test]
async fn corrupt_and_foreign_files_are_errors_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    fs::write(dir.path().join("a.acks.json"), b"{ not json").unwrap();
    let err = store.load_ack_state("a").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("a.acks.json"));

    fs::write(dir.path().join("b.acks.json"), br#"{"persistent_ids": []}"#).unwrap();
    let err = store.load_ack_state("b").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Foreign { found: None, .. }),
        "{err}"
    );

    fs::write(
        dir.path().join("c.acks.json"),
        br#"{"format": "pullkin-acks/1", "unconfirmed": "nope"}"#,
    )
    .unwrap();
    let err = store.load_ack_state("c").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    fs::write(
        dir.path().join("d.credentials.json"),
        br#"{"format": "pullkin-acks/1", "credentials": {}}"#,
    )
    .unwrap();
    let err = store.load_credentials("d").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Foreign { found: Some(ref f), .. } if f == "pullkin-acks/1"),
        "{err}"
    );
}

#[tokio::test]
async fn app_keys_cannot_escape_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let store = DirStore::open(&root).unwrap();
    store
        .save_ack_state("../evil", state(&["0:1"]))
        .await
        .unwrap();
    store
        .save_ack_state("1234:web/app", state(&["0:2"]))
        .await
        .unwrap();
    assert!(!dir.path().join("evil.acks.json").exists());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 2);
    assert_eq!(
        store.load_ack_state("../evil").await.unwrap(),
        state(&["0:1"])
    );
    assert!(matches!(
        store.load_ack_state("").await,
        Err(StoreError::BadKey(_))
    ));
    assert!(matches!(
        store.load_ack_state(&"x".repeat(129)).await,
        Err(StoreError::BadKey(_))
    ));
}

#[tokio::test]
async fn memory_store_round_trips() {
    let store = MemoryStore::default();
    assert_eq!(
        store.load_ack_state("a").await.unwrap(),
        AckState::default()
    );
    store.save_ack_state("a", state(&["0:1"])).await.unwrap();
    assert_eq!(store.load_ack_state("a").await.unwrap(), state(&["0:1"]));
    store.save_credentials("a", &credentials()).await.unwrap();
    assert_eq!(
        store.load_credentials("a").await.unwrap(),
        Some(credentials())
    );
}

#[tokio::test]
async fn stored_credentials_that_do_not_parse_are_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    fs::write(
        dir.path().join("e.credentials.json"),
        br#"{"format": "pullkin-credentials/1", "credentials": {"gcm": 1}}"#,
    )
    .unwrap();
    let err = store.load_credentials("e").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Credentials { ref app, .. } if app == "e"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn private_files_are_written_whole_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.json");
    pullkin::write_private_file(&path, b"one").unwrap();
    pullkin::write_private_file(&path, b"two").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No temporary file is left beside it.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    // A path that names no file is an error, not a panic.
    assert!(pullkin::write_private_file(std::path::Path::new("/"), b"x").is_err());
}

//! The directory store: round trips, crash safety, permissions, bad files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use pullkin::session::AckState;
use pullkin::store::{DirStore, MemoryStore, Store, StoreError};
use serde_json::json;

fn state(ids: &[&str]) -> AckState {
    AckState {
        unconfirmed: ids.iter().map(|s| std::sync::Arc::from(*s)).collect(),
        recent: vec!["0:old".into()],
    }
}

#[test]
fn round_trips_and_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("state")).unwrap();
    assert_eq!(store.load_ack_state("app").unwrap(), AckState::default());
    assert_eq!(store.load_credentials_json("app").unwrap(), None);
    store
        .save_ack_state("app", &state(&["0:1", "0:2"]))
        .unwrap();
    store
        .save_credentials_json("app", &json!({"gcm": {"token": "t"}}))
        .unwrap();
    // A second store on the same directory (a restart) reads it back.
    let again = DirStore::open(dir.path().join("state")).unwrap();
    assert_eq!(again.load_ack_state("app").unwrap(), state(&["0:1", "0:2"]));
    assert_eq!(
        again.load_credentials_json("app").unwrap(),
        Some(json!({"gcm": {"token": "t"}}))
    );
    assert_eq!(again.load_ack_state("other").unwrap(), AckState::default());
}

#[cfg(unix)]
#[test]
fn files_and_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let store = DirStore::open(&root).unwrap();
    store.save_ack_state("app", &state(&["0:1"])).unwrap();
    store.save_credentials_json("app", &json!({})).unwrap();
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in fs::read_dir(&root).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn an_interrupted_write_leaves_the_old_state_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    store.save_ack_state("app", &state(&["0:1"])).unwrap();
    // A crash mid-write leaves a partial temporary file beside the real one.
    fs::write(
        dir.path().join("app.acks.tmp999"),
        b"{\"format\":\"pullkin-ac",
    )
    .unwrap();
    assert_eq!(store.load_ack_state("app").unwrap(), state(&["0:1"]));
    // The next write succeeds over it.
    store.save_ack_state("app", &state(&["0:2"])).unwrap();
    assert_eq!(store.load_ack_state("app").unwrap(), state(&["0:2"]));
}

#[test]
fn a_failed_write_keeps_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    store.save_ack_state("app", &state(&["0:1"])).unwrap();
    // Make the rename fail: a directory stands where the temporary file would go.
    let tmp = dir
        .path()
        .join(format!("app.acks.tmp{}", std::process::id()));
    fs::create_dir(&tmp).unwrap();
    let err = store.save_ack_state("app", &state(&["0:2"])).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert_eq!(store.load_ack_state("app").unwrap(), state(&["0:1"]));
}

#[test]
fn corrupt_and_foreign_files_are_errors_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    fs::write(dir.path().join("a.acks.json"), b"{ not json").unwrap();
    let err = store.load_ack_state("a").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("a.acks.json"));

    fs::write(dir.path().join("b.acks.json"), br#"{"persistent_ids": []}"#).unwrap();
    let err = store.load_ack_state("b").unwrap_err();
    assert!(
        matches!(err, StoreError::Foreign { found: None, .. }),
        "{err}"
    );

    fs::write(
        dir.path().join("c.acks.json"),
        br#"{"format": "pullkin-acks/1", "unconfirmed": "nope"}"#,
    )
    .unwrap();
    let err = store.load_ack_state("c").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    fs::write(
        dir.path().join("d.credentials.json"),
        br#"{"format": "pullkin-acks/1", "credentials": {}}"#,
    )
    .unwrap();
    let err = store.load_credentials_json("d").unwrap_err();
    assert!(
        matches!(err, StoreError::Foreign { found: Some(ref f), .. } if f == "pullkin-acks/1"),
        "{err}"
    );
}

#[test]
fn app_keys_cannot_escape_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let store = DirStore::open(&root).unwrap();
    store.save_ack_state("../evil", &state(&["0:1"])).unwrap();
    store
        .save_ack_state("1234:web/app", &state(&["0:2"]))
        .unwrap();
    assert!(!dir.path().join("evil.acks.json").exists());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 2);
    assert_eq!(store.load_ack_state("../evil").unwrap(), state(&["0:1"]));
    assert!(matches!(
        store.load_ack_state(""),
        Err(StoreError::BadKey(_))
    ));
    assert!(matches!(
        store.load_ack_state(&"x".repeat(129)),
        Err(StoreError::BadKey(_))
    ));
}

#[test]
fn memory_store_round_trips() {
    let store = MemoryStore::default();
    assert_eq!(store.load_ack_state("a").unwrap(), AckState::default());
    store.save_ack_state("a", &state(&["0:1"])).unwrap();
    assert_eq!(store.load_ack_state("a").unwrap(), state(&["0:1"]));
    store.save_credentials_json("a", &json!({"x": 1})).unwrap();
    assert_eq!(
        store.load_credentials_json("a").unwrap(),
        Some(json!({"x": 1}))
    );
}

//! Stored ids expire and a LoginRequest carries a bounded number of them
//! (docs/protocol.md §7.3), on a fake clock; their ages survive a restart, through the
//! session's state and through `DirStore` into a listener's login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::{WAIT, connected, listener_config, shutdown, wait_for_state};
use fcm_emulator::Emulator;
use mcs_codec::McsMessage;
use mcs_codec::proto::{DataMessageStanza, LoginRequest, LoginResponse};
use pullkin::session::{AckState, Session, SessionConfig, SessionEvent, UnconfirmedId};
use pullkin::{DirStore, Pullkin, Store};
use pullkin_test_support::devices::web_device;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A moment on the clock of the day for the sessions here (a fixed one: nothing depends
/// on the machine's date).
fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A session with nothing restored, made now ([`wall`] on the clock of the day).
fn fresh(config: SessionConfig) -> Session {
    Session::new(config, AckState::default(), Instant::now(), wall())
}

/// `ids`, each arrived at `received`.
fn arrived(ids: &[&str], received: SystemTime) -> Vec<UnconfirmedId> {
    ids.iter()
        .map(|id| UnconfirmedId::new(*id, received))
        .collect()
}

/// The ids of a list, as text.
fn keys(list: &[UnconfirmedId]) -> Vec<&str> {
    list.iter().map(|u| &*u.id).collect()
}

/// The recent ids of a state, as text.
fn recent(state: &AckState) -> Vec<&str> {
    state.recent.iter().map(|id| &**id).collect()
}

/// Whether handing `id` to the session again delivers it to the application.
fn delivered_again(session: &mut Session, id: &str, now: Instant) -> bool {
    session.handle_frame(data(id), now);
    std::iter::from_fn(|| session.poll_event()).any(|e| matches!(e, SessionEvent::Message(..)))
}

fn data(id: &str) -> McsMessage {
    DataMessageStanza {
        persistent_id: Some(id.into()),
        ..Default::default()
    }
    .into()
}

/// Connects at `now` and returns the LoginRequest written.
fn connect(session: &mut Session, now: Instant) -> LoginRequest {
    session.connect(now);
    let login = match session.poll_transmit() {
        Some(McsMessage::LoginRequest(login)) => login,
        other => panic!("expected a LoginRequest, got {other:?}"),
    };
    while session.poll_transmit().is_some() {}
    login
}

/// Logs in at `now` without confirming anything.
fn log_in(session: &mut Session, now: Instant) -> LoginRequest {
    let login = connect(session, now);
    session.handle_frame(LoginResponse::default().into(), now);
    while session.poll_event().is_some() {}
    login
}

/// Receives `id` at `now`, the application takes it, the state is stored, and the
/// acknowledgement is written (the server never confirms it).
fn take(session: &mut Session, id: &str, now: Instant) {
    session.handle_frame(data(id), now);
    while session.poll_event().is_some() {}
    session.delivered(id, now);
    if let Some(write) = session.poll_store(now) {
        session.handle_stored(write.version);
    }
    session.flush_acks();
    while session.poll_transmit().is_some() {}
}

/// `n` ids, each arrived at `received`.
fn ids(n: usize, received: SystemTime) -> Vec<UnconfirmedId> {
    (0..n)
        .map(|i| UnconfirmedId::new(Arc::<str>::from(format!("0:{i:05}%x")), received))
        .collect()
}

#[test]
fn a_store_of_50_000_ids_logs_in_with_the_bound_newest_kept() {
    let restored = AckState {
        unconfirmed: ids(50_000, wall() - DAY),
        recent: Vec::new(),
    };
    let now = Instant::now();
    let mut session = Session::new(SessionConfig::new(1, 2), restored, now, wall());
    let login = connect(&mut session, now);
    assert_eq!(
        login.received_persistent_id.len(),
        1000,
        "the default bound"
    );
    // The restored list is oldest first: the oldest are dropped.
    assert_eq!(login.received_persistent_id[0], "0:49000%x");
    assert_eq!(login.received_persistent_id[999], "0:49999%x");
    let state = session.ack_state();
    assert_eq!(state.unconfirmed.len(), 1000, "the rest forgotten");
    assert!(
        session.ack_state_dirty(),
        "the smaller state is to be stored"
    );
}

#[test]
fn the_bound_is_configurable_and_drops_the_oldest_by_arrival() {
    let mut config = SessionConfig::new(1, 2);
    config.max_login_ids = 2;
    let mut session = fresh(config);
    let t0 = Instant::now();
    log_in(&mut session, t0);
    for (i, id) in ["0:a", "0:b", "0:c"].into_iter().enumerate() {
        take(&mut session, id, t0 + Duration::from_secs(i as u64));
    }
    session.disconnected();
    let login = connect(&mut session, t0 + Duration::from_secs(10));
    assert_eq!(login.received_persistent_id, ["0:b", "0:c"]);
}

#[test]
fn unconfirmed_ids_expire_after_seven_days_and_stay_recent() {
    let mut session = fresh(SessionConfig::new(1, 2));
    let t0 = Instant::now();
    log_in(&mut session, t0);
    take(&mut session, "0:old", t0);
    take(&mut session, "0:new", t0 + 2 * DAY);
    session.disconnected();
    // Just under 7 days for the older one: both go into the login.
    let login = log_in(&mut session, t0 + 7 * DAY - Duration::from_secs(1));
    assert_eq!(login.received_persistent_id, ["0:old", "0:new"]);
    session.disconnected();
    // 7 days: the older one is forgotten.
    let login = log_in(&mut session, t0 + 7 * DAY);
    assert_eq!(login.received_persistent_id, ["0:new"]);
    assert_eq!(
        session
            .ack_state()
            .recent
            .iter()
            .map(|id| &**id)
            .collect::<Vec<_>>(),
        ["0:old"]
    );
    // Redelivered: acknowledged again, not handed to the application.
    session.handle_frame(data("0:old"), t0 + 7 * DAY);
    let events: Vec<SessionEvent> = std::iter::from_fn(|| session.poll_event()).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SessionEvent::Message(..))),
        "{events:?}"
    );
}

#[test]
fn ids_restored_with_the_load_time_count_from_the_restore_and_the_expiry_is_configurable() {
    let mut config = SessionConfig::new(1, 2);
    config.id_expiry = Duration::from_secs(60);
    // What a store gives ids whose time it does not know: the time of the load.
    let t0 = Instant::now();
    let restored = AckState {
        unconfirmed: ids(3, wall()),
        recent: Vec::new(),
    };
    let mut session = Session::new(config, restored, t0, wall());
    let login = log_in(&mut session, t0);
    assert_eq!(login.received_persistent_id.len(), 3);
    session.disconnected();
    let login = log_in(&mut session, t0 + Duration::from_secs(59));
    assert_eq!(login.received_persistent_id.len(), 3);
    session.disconnected();
    let login = log_in(&mut session, t0 + Duration::from_secs(60));
    assert!(login.received_persistent_id.is_empty());
    assert!(session.ack_state().unconfirmed.is_empty());
}

#[test]
fn confirmed_ids_are_not_carried_or_aged() {
    let mut session = fresh(SessionConfig::new(1, 2));
    let t0 = Instant::now();
    log_in(&mut session, t0);
    take(&mut session, "0:a", t0);
    // The server confirms every frame so far.
    session.handle_frame(
        mcs_codec::proto::HeartbeatAck {
            last_stream_id_received: Some(100),
            ..Default::default()
        }
        .into(),
        t0,
    );
    session.disconnected();
    let login = log_in(&mut session, t0 + Duration::from_secs(1));
    assert!(login.received_persistent_id.is_empty());
    assert!(session.ack_state().unconfirmed.is_empty());
}

#[test]
fn ids_restored_from_8_days_ago_are_forgotten_and_from_1_day_ago_logged_in_with() {
    let t0 = Instant::now();
    let mut unconfirmed = arrived(&["0:old-a", "0:old-b"], wall() - 8 * DAY);
    unconfirmed.extend(arrived(&["0:new-a", "0:new-b"], wall() - DAY));
    let restored = AckState {
        unconfirmed,
        recent: vec!["0:r".into()],
    };
    let mut session = Session::new(SessionConfig::new(1, 2), restored, t0, wall());
    let login = log_in(&mut session, t0);
    assert_eq!(login.received_persistent_id, ["0:new-a", "0:new-b"]);
    let state = session.ack_state();
    assert_eq!(keys(&state.unconfirmed), ["0:new-a", "0:new-b"]);
    assert!(
        state.unconfirmed.iter().all(|u| u.received == wall() - DAY),
        "{state:?}"
    );
    assert_eq!(recent(&state), ["0:r", "0:old-a", "0:old-b"]);
    assert!(
        session.ack_state_dirty(),
        "the smaller state is to be stored"
    );
    // The 1-day-old ones have 6 days left, not 7.
    session.disconnected();
    let login = log_in(&mut session, t0 + 6 * DAY - Duration::from_secs(1));
    assert_eq!(login.received_persistent_id, ["0:new-a", "0:new-b"]);
    session.disconnected();
    let login = log_in(&mut session, t0 + 6 * DAY);
    assert!(login.received_persistent_id.is_empty(), "{login:?}");
    assert!(session.ack_state().unconfirmed.is_empty());
    // A redelivery of a forgotten one is acknowledged again, not delivered.
    assert!(!delivered_again(&mut session, "0:old-a", t0 + 6 * DAY));
}

#[test]
fn arrival_times_round_trip_through_the_state_and_ages_go_on_after_a_restart() {
    let t0 = Instant::now();
    let restored = AckState {
        unconfirmed: arrived(&["0:restored"], wall() - 2 * DAY),
        recent: Vec::new(),
    };
    let mut session = Session::new(SessionConfig::new(1, 2), restored.clone(), t0, wall());
    assert_eq!(
        session.ack_state(),
        restored,
        "as restored, before any connection"
    );
    log_in(&mut session, t0);
    // One more arrives an hour after the session was made.
    let hour = Duration::from_secs(3600);
    take(&mut session, "0:live", t0 + hour);
    let stored = session.ack_state();
    assert_eq!(
        stored.unconfirmed,
        [
            UnconfirmedId::new("0:restored", wall() - 2 * DAY),
            UnconfirmedId::new("0:live", wall() + hour),
        ]
    );
    // A restart 3 days later, on a monotonic clock that started over.
    let t1 = Instant::now();
    let wall1 = wall() + 3 * DAY;
    let mut again = Session::new(SessionConfig::new(1, 2), stored.clone(), t1, wall1);
    assert_eq!(again.ack_state(), stored, "the times round-trip");
    // The restored id is 5 days old now: 2 days left; the live one has 4 days and 1 h.
    let login = log_in(&mut again, t1 + 2 * DAY - Duration::from_secs(1));
    assert_eq!(login.received_persistent_id, ["0:restored", "0:live"]);
    again.disconnected();
    let login = log_in(&mut again, t1 + 2 * DAY);
    assert_eq!(login.received_persistent_id, ["0:live"]);
    again.disconnected();
    let login = log_in(&mut again, t1 + 4 * DAY + hour - Duration::from_secs(1));
    assert_eq!(login.received_persistent_id, ["0:live"]);
    again.disconnected();
    let login = log_in(&mut again, t1 + 4 * DAY + hour);
    assert!(login.received_persistent_id.is_empty());
}

#[test]
fn a_time_in_the_future_counts_as_now_and_one_older_than_any_instant_does_not_panic() {
    let t0 = Instant::now();
    // Farther back than an instant can go (here, `Instant` and `SystemTime` both count
    // seconds in 64 bits; the age below does not fit beside the machine's uptime).
    let ancient = SystemTime::UNIX_EPOCH
        .checked_sub(Duration::from_secs(i64::MAX.unsigned_abs() - 1))
        .unwrap();
    assert!(
        t0.checked_sub(wall().duration_since(ancient).unwrap())
            .is_none()
    );
    let restored = AckState {
        unconfirmed: vec![
            UnconfirmedId::new("0:ancient", ancient),
            UnconfirmedId::new("0:future", wall() + 30 * DAY),
        ],
        recent: Vec::new(),
    };
    let mut session = Session::new(SessionConfig::new(1, 2), restored.clone(), t0, wall());
    let state = session.ack_state();
    assert_eq!(
        state.unconfirmed,
        [
            UnconfirmedId::new("0:ancient", ancient),
            UnconfirmedId::new("0:future", wall()),
        ],
        "the future one counts as arrived when the session was made"
    );
    let login = log_in(&mut session, t0);
    assert_eq!(
        login.received_persistent_id,
        ["0:future"],
        "the ancient one expired"
    );
    session.disconnected();
    let login = log_in(&mut session, t0 + 7 * DAY - Duration::from_secs(1));
    assert_eq!(login.received_persistent_id, ["0:future"]);
    session.disconnected();
    let login = log_in(&mut session, t0 + 7 * DAY);
    assert!(login.received_persistent_id.is_empty());
    // With no expiry to speak of, even the ancient one is kept, its time intact.
    let mut config = SessionConfig::new(1, 2);
    config.id_expiry = Duration::MAX;
    let mut session = Session::new(config, restored, t0, wall());
    let login = log_in(&mut session, t0);
    assert_eq!(login.received_persistent_id, ["0:ancient", "0:future"]);
    assert_eq!(session.ack_state().unconfirmed[0].received, ancient);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_ages_of_stored_ids_through_the_dir_store() {
    let emulator = Emulator::start().await.unwrap();
    let web = web_device(&emulator);
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    // A listener stored these before it stopped: two ids 8 days old (in the snapshot),
    // then two 1 day old (in a line of the log).
    let first = DirStore::open(dir.path()).unwrap();
    let mut state = AckState {
        unconfirmed: arrived(&["0:8d-a", "0:8d-b"], now - 8 * DAY),
        recent: Vec::new(),
    };
    first.save_ack_state("web", state.clone()).await.unwrap();
    state
        .unconfirmed
        .extend(arrived(&["0:1d-a", "0:1d-b"], now - DAY));
    first.save_ack_state("web", state.clone()).await.unwrap();
    assert!(
        std::fs::metadata(dir.path().join("web.acks.log"))
            .unwrap()
            .len()
            > 0,
        "the newer ids are in the log"
    );
    drop(first);

    // The restart: a new store on the directory, a listener on it.
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).unwrap());
    let pullkin = Pullkin::builder()
        .config(listener_config(&emulator))
        .tls(pullkin_test_support::emulator::tls(&emulator))
        .store(Arc::clone(&store))
        .build()
        .unwrap();
    pullkin.add_app("web", &web.credentials, []).unwrap();
    let mut health = pullkin.health("web").unwrap();
    wait_for_state(&mut health, connected).await;
    let login = emulator.last_login_request().expect("a login");
    assert_eq!(login.received_persistent_id, ["0:1d-a", "0:1d-b"]);
    // The 8-day-old ids are no longer stored as unconfirmed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = store.load_ack_state("web").await.unwrap();
        if stored.unconfirmed.iter().all(|u| !u.id.starts_with("0:8d")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stored:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown(&pullkin, &emulator).await;
}

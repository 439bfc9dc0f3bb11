//! Stored ids expire and a LoginRequest carries a bounded number of them
//! (docs/protocol.md §7.3), on a fake clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcs_codec::McsMessage;
use mcs_codec::proto::{DataMessageStanza, LoginRequest, LoginResponse};
use pullkin::session::{AckState, Session, SessionConfig, SessionEvent};

const DAY: Duration = Duration::from_secs(24 * 3600);

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

fn ids(n: usize) -> Vec<Arc<str>> {
    (0..n).map(|i| Arc::from(format!("0:{i:05}%x"))).collect()
}

#[test]
fn a_store_of_50_000_ids_logs_in_with_the_bound_newest_kept() {
    let restored = AckState {
        unconfirmed: ids(50_000),
        recent: Vec::new(),
    };
    let mut session = Session::new(SessionConfig::new(1, 2), restored);
    let now = Instant::now();
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
    let mut session = Session::new(config, AckState::default());
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
    let mut session = Session::new(SessionConfig::new(1, 2), AckState::default());
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
fn restored_ids_count_from_the_first_connection_and_the_expiry_is_configurable() {
    let mut config = SessionConfig::new(1, 2);
    config.id_expiry = Duration::from_secs(60);
    let restored = AckState {
        unconfirmed: ids(3),
        recent: Vec::new(),
    };
    let mut session = Session::new(config, restored);
    let t0 = Instant::now();
    let login = log_in(&mut session, t0);
    assert_eq!(
        login.received_persistent_id.len(),
        3,
        "their age is unknown"
    );
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
    let mut session = Session::new(SessionConfig::new(1, 2), AckState::default());
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

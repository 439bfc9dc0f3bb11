//! The reconnect policy and the store turns of the session, on a fake clock: `now` is an
//! argument, so every wait is computed, never slept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime};

use fcm_http::RetryPolicy;
use mcs_codec::McsMessage;
use mcs_codec::proto::{DataMessageStanza, LoginResponse};
use pullkin::session::{
    AckState, Reconnect, ReconnectPolicy, Session, SessionConfig, UnconfirmedId,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn backoff() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter(0.0)
}

fn after(verdict: Reconnect) -> (Duration, Instant, Instant, u32) {
    match verdict {
        Reconnect::After {
            delay,
            at,
            not_before,
            failures,
        } => (delay, at, not_before, failures),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_backoff_doubles_up_to_its_longest_delay() {
    let mut policy = ReconnectPolicy::new(backoff(), None, Duration::from_secs(60));
    let mut rng = StdRng::seed_from_u64(1);
    let start = Instant::now();
    assert_eq!(policy.attempt(), 1);
    let mut delays = Vec::new();
    for n in 0..10 {
        let now = start + Duration::from_secs(n * 1000);
        let (delay, at, not_before, failures) = after(policy.handle_failure(now, None, &mut rng));
        assert_eq!(at, now + delay);
        assert_eq!(not_before, now, "no server wait asked");
        assert_eq!(failures, u32::try_from(n).unwrap() + 1);
        delays.push(delay.as_secs());
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    assert_eq!(policy.attempt(), 11);
}

#[test]
fn jitter_only_shortens_the_wait() {
    let jittery = backoff().with_jitter(0.5);
    let mut rng = StdRng::seed_from_u64(7);
    let now = Instant::now();
    for _ in 0..200 {
        let mut policy = ReconnectPolicy::new(jittery.clone(), None, Duration::from_secs(60));
        policy.handle_failure(now, None, &mut rng);
        let (delay, ..) = after(policy.handle_failure(now, None, &mut rng));
        assert!(
            delay >= Duration::from_secs(1) && delay <= Duration::from_secs(2),
            "{delay:?}"
        );
    }
}

#[test]
fn a_server_wait_is_honoured_but_never_beyond_the_longest_backoff() {
    let mut policy = ReconnectPolicy::new(backoff(), None, Duration::from_secs(60));
    let mut rng = StdRng::seed_from_u64(2);
    let now = Instant::now();
    // The server asks for 30 s: more than the first backoff (1 s).
    let (delay, at, not_before, _) =
        after(policy.handle_failure(now, Some(Duration::from_secs(30)), &mut rng));
    assert_eq!(delay, Duration::from_secs(30));
    assert_eq!(
        not_before,
        now + Duration::from_secs(30),
        "a probe waits for it too"
    );
    assert_eq!(at, not_before);
    // A shorter wait than the backoff: the backoff wins, and a probe may go after 1 s.
    let (delay, _, not_before, _) =
        after(policy.handle_failure(now, Some(Duration::from_secs(1)), &mut rng));
    assert_eq!(delay, Duration::from_secs(2));
    assert_eq!(not_before, now + Duration::from_secs(1));
    // An hour: capped at the longest backoff.
    let (delay, _, not_before, _) =
        after(policy.handle_failure(now, Some(Duration::from_secs(3600)), &mut rng));
    assert_eq!(delay, Duration::from_secs(300));
    assert_eq!(not_before, now + Duration::from_secs(300));
}

#[test]
fn a_stable_connection_starts_the_count_over_and_a_short_one_does_not() {
    let mut policy = ReconnectPolicy::new(backoff(), None, Duration::from_secs(60));
    let mut rng = StdRng::seed_from_u64(3);
    let t0 = Instant::now();
    for _ in 0..3 {
        policy.handle_failure(t0, None, &mut rng);
    }
    assert_eq!(policy.failures(), 3);
    // Online for 59 s: not stable, the count goes on.
    policy.handle_online(t0);
    let (delay, ..) = after(policy.handle_failure(t0 + Duration::from_secs(59), None, &mut rng));
    assert_eq!(policy.failures(), 4);
    assert_eq!(delay, Duration::from_secs(8));
    // Online for 60 s: stable, this failure is the first.
    let t1 = t0 + Duration::from_secs(100);
    policy.handle_online(t1);
    let (delay, ..) = after(policy.handle_failure(t1 + Duration::from_secs(60), None, &mut rng));
    assert_eq!(policy.failures(), 1);
    assert_eq!(delay, Duration::from_secs(1));
    // A failure before any login counts on from there.
    policy.handle_failure(t1 + Duration::from_secs(61), None, &mut rng);
    assert_eq!(policy.failures(), 2);
}

#[test]
fn with_a_limit_it_gives_up_after_that_many_failures_in_a_row() {
    let mut policy = ReconnectPolicy::new(backoff(), Some(3), Duration::from_secs(60));
    let mut rng = StdRng::seed_from_u64(4);
    let now = Instant::now();
    after(policy.handle_failure(now, None, &mut rng));
    after(policy.handle_failure(now, None, &mut rng));
    assert_eq!(
        policy.handle_failure(now, None, &mut rng),
        Reconnect::GiveUp { failures: 3 }
    );
}

#[test]
fn without_a_limit_it_never_gives_up() {
    let mut policy = ReconnectPolicy::new(backoff(), None, Duration::from_secs(60));
    let mut rng = StdRng::seed_from_u64(5);
    let now = Instant::now();
    for _ in 0..10_000 {
        after(policy.handle_failure(now, None, &mut rng));
    }
}

fn online_session(config: SessionConfig, now: Instant) -> Session {
    let mut session = Session::new(config, AckState::default(), now, SystemTime::now());
    session.connect(now);
    while session.poll_transmit().is_some() {}
    session.handle_frame(LoginResponse::default().into(), now);
    session
}

fn data(id: &str) -> McsMessage {
    DataMessageStanza {
        persistent_id: Some(id.into()),
        ..Default::default()
    }
    .into()
}

#[test]
fn store_writes_wait_their_turn_and_the_timer_says_when() {
    let mut config = SessionConfig::new(1, 2);
    config.store_interval = Duration::from_millis(20);
    let t0 = Instant::now();
    let mut session = online_session(config, t0);
    assert!(session.poll_store(t0).is_none(), "nothing changed");
    session.handle_frame(data("0:a"), t0);
    session.delivered("0:a", t0);
    let first = session
        .poll_store(t0)
        .expect("the first write goes at once");
    assert_eq!(first.state.unconfirmed.len(), 1);
    // While it runs, another id is taken: no second write in flight.
    session.handle_frame(data("0:b"), t0);
    session.delivered("0:b", t0);
    assert!(session.poll_store(t0).is_none(), "one write at a time");
    session.handle_stored(first.version);
    // Its turn comes 20 ms after the first started, and the timer says so.
    let t1 = t0 + Duration::from_millis(5);
    assert!(session.poll_store(t1).is_none(), "not yet its turn");
    let due = session.poll_timeout().expect("a timer");
    assert_eq!(due, t0 + Duration::from_millis(20));
    let second = session.poll_store(due).expect("its turn came");
    assert_eq!(second.state.unconfirmed.len(), 2);
    session.handle_stored(second.version);
    assert!(!session.ack_state_dirty());
}

#[test]
fn a_failed_store_write_leaves_the_state_dirty_for_the_next_turn() {
    let t0 = Instant::now();
    let mut session = online_session(SessionConfig::new(1, 2), t0);
    session.handle_frame(data("0:a"), t0);
    session.delivered("0:a", t0);
    let write = session.poll_store(t0).unwrap();
    session.handle_store_failed();
    assert!(session.ack_state_dirty());
    let again = session
        .poll_store(t0 + Duration::from_secs(1))
        .expect("written again");
    assert_eq!(again.state, write.state);
}

#[test]
fn a_new_identity_starts_over_with_an_empty_state_to_store() {
    let restored = AckState {
        unconfirmed: vec![UnconfirmedId::new("0:old", SystemTime::now())],
        recent: vec!["0:older".into()],
    };
    let mut session = Session::new(
        SessionConfig::new(1, 2),
        restored,
        Instant::now(),
        SystemTime::now(),
    );
    assert!(
        !session.set_identity(1, 2),
        "the same identity changes nothing"
    );
    assert!(!session.ack_state_dirty());
    assert!(session.set_identity(3, 4));
    assert_eq!(session.config().android_id, 3);
    assert_eq!(session.config().security_token, 4);
    assert_eq!(session.ack_state(), AckState::default());
    let write = session
        .flush_store()
        .expect("the empty state is to be stored");
    assert_eq!(write.state, AckState::default());
    session.handle_stored(write.version);
    assert!(!session.ack_state_dirty());
}

/// Chromium's reset window (docs/protocol.md §7.2).
const RESET_WINDOW: Duration = Duration::from_secs(10);

#[test]
fn a_server_that_accepts_and_closes_at_once_meets_a_growing_backoff() {
    let mut policy = ReconnectPolicy::new(backoff(), None, RESET_WINDOW);
    let mut rng = StdRng::seed_from_u64(6);
    let mut now = Instant::now();
    let mut delays = Vec::new();
    for _ in 0..10 {
        // Each connection logs in, then is closed a second later.
        policy.handle_online(now);
        assert_eq!(policy.failures(), 0, "a login starts the count over");
        now += Duration::from_secs(1);
        let (delay, at, ..) = after(policy.handle_failure(now, None, &mut rng));
        delays.push(delay.as_secs());
        now = at;
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
}

#[test]
fn a_reset_within_the_window_restores_the_backoff_and_one_after_it_starts_over() {
    let mut policy = ReconnectPolicy::new(backoff(), None, RESET_WINDOW);
    let mut rng = StdRng::seed_from_u64(8);
    let t0 = Instant::now();
    for _ in 0..4 {
        policy.handle_failure(t0, None, &mut rng);
    }
    // Reset 9.999 s after its login: the fifth failure in a row.
    policy.handle_online(t0);
    let (delay, _, _, failures) =
        after(policy.handle_failure(t0 + RESET_WINDOW - Duration::from_millis(1), None, &mut rng));
    assert_eq!((delay.as_secs(), failures), (16, 5));
    // Reset exactly 10 s after its login: the first failure of a new count.
    let t1 = t0 + Duration::from_secs(100);
    policy.handle_online(t1);
    let (delay, _, _, failures) = after(policy.handle_failure(t1 + RESET_WINDOW, None, &mut rng));
    assert_eq!((delay.as_secs(), failures), (1, 1));
    // Then a quick reset restores that short backoff, not the long one of before.
    let t2 = t1 + Duration::from_secs(200);
    policy.handle_online(t2);
    let (delay, _, _, failures) =
        after(policy.handle_failure(t2 + Duration::from_secs(1), None, &mut rng));
    assert_eq!((delay.as_secs(), failures), (2, 2));
}

#[test]
fn quick_resets_count_towards_the_failure_limit() {
    let mut policy = ReconnectPolicy::new(backoff(), Some(3), RESET_WINDOW);
    let mut rng = StdRng::seed_from_u64(9);
    let now = Instant::now();
    after(policy.handle_failure(now, None, &mut rng));
    policy.handle_online(now);
    after(policy.handle_failure(now + Duration::from_secs(2), None, &mut rng));
    policy.handle_online(now);
    assert_eq!(
        policy.handle_failure(now + Duration::from_secs(2), None, &mut rng),
        Reconnect::GiveUp { failures: 3 }
    );
}

#[test]
fn the_listener_uses_chromiums_reset_window() {
    assert_eq!(
        pullkin::ListenerConfig::default().stable_after,
        RESET_WINDOW
    );
}

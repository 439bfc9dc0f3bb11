//! Noticing that the system slept: the monotonic clock (tokio's timers, the heartbeat
//! deadlines) stands still while a machine is suspended, the wall clock does not. After a
//! resume the connections' sockets are usually dead (the NAT mapping or the network is
//! gone), yet the heartbeat timer would take its whole interval to find out; the watch
//! below probes every connection at once instead.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How often the clocks are compared.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The shortest interval between two checks, whatever the configuration says: the watch
/// must not keep a sleeping laptop's CPU busy.
pub(crate) const MIN_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How far the wall clock must run ahead of the monotonic clock between two checks to
/// count as a suspension (a wall clock set forward by as much also counts: the cost is one
/// heartbeat ping per connection).
pub(crate) const MIN_GAP: Duration = Duration::from_secs(5);

/// Compares the two clocks from one check to the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Detector {
    wall: SystemTime,
    mono: Instant,
}

impl Detector {
    pub(crate) fn new(wall: SystemTime, mono: Instant) -> Self {
        Self { wall, mono }
    }

    /// The time the machine seems to have been suspended since the last check, when the
    /// wall clock ran ahead of the monotonic clock by at least `min_gap`. A wall clock set
    /// back counts as nothing. The readings become the base of the next check.
    pub(crate) fn check(
        &mut self,
        wall: SystemTime,
        mono: Instant,
        min_gap: Duration,
    ) -> Option<Duration> {
        let wall_elapsed = wall.duration_since(self.wall).unwrap_or_default();
        let mono_elapsed = mono.saturating_duration_since(self.mono);
        *self = Self { wall, mono };
        wall_elapsed
            .checked_sub(mono_elapsed)
            .filter(|gap| *gap >= min_gap)
    }
}

/// Probes every connection (bumps `probe`) whenever the clocks show that the system was
/// suspended, checking every `every` (at least [`MIN_CHECK_EVERY`]), until `stop`. `wall` reads the wall clock (a
/// parameter so that tests can move it).
pub(crate) async fn watch_for_resume(
    probe: watch::Sender<u64>,
    stop: CancellationToken,
    every: Duration,
    wall: impl Fn() -> SystemTime,
) {
    // tokio's clock: the same as std's, but for tests that pause it.
    let now = || tokio::time::Instant::now().into_std();
    let mut detector = Detector::new(wall(), now());
    let every = every.max(MIN_CHECK_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Some(gap) = detector.check(wall(), now(), MIN_GAP) {
            info!(
                suspended_for = ?gap,
                "the system was suspended: checking every connection now"
            );
            probe.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_wall_clock_ahead_of_the_monotonic_one_is_a_suspension() {
        let (wall, mono) = (SystemTime::UNIX_EPOCH, Instant::now());
        let mut detector = Detector::new(wall, mono);
        let secs = Duration::from_secs;
        // Both clocks moved alike: nothing.
        assert_eq!(
            detector.check(wall + secs(2), mono + secs(2), MIN_GAP),
            None
        );
        // A little drift: nothing.
        assert_eq!(
            detector.check(wall + secs(6), mono + secs(4), MIN_GAP),
            None
        );
        // An hour asleep between two checks 2 s apart (monotonic).
        let gap = detector.check(wall + secs(3_608), mono + secs(6), MIN_GAP);
        assert_eq!(gap, Some(secs(3_600)));
        // The base moved with the check: the next ordinary check is quiet again.
        assert_eq!(
            detector.check(wall + secs(3_610), mono + secs(8), MIN_GAP),
            None
        );
        // A wall clock set back is not a suspension.
        assert_eq!(detector.check(wall, mono + secs(10), MIN_GAP), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_probes_after_a_suspension_and_stops_when_told() {
        let (probe, mut probed) = watch::channel(0_u64);
        let stop = CancellationToken::new();
        let wall = Arc::new(Mutex::new(SystemTime::UNIX_EPOCH));
        let clock = Arc::clone(&wall);
        let task = tokio::spawn(watch_for_resume(
            probe,
            stop.clone(),
            CHECK_EVERY,
            move || *clock.lock().unwrap(),
        ));
        let tick = |wall: &Mutex<SystemTime>, by: Duration| {
            *wall.lock().unwrap() += by;
        };
        // Ordinary time: both clocks advance alike, no probe.
        for _ in 0..5 {
            tick(&wall, CHECK_EVERY);
            tokio::time::sleep(CHECK_EVERY).await;
        }
        tokio::task::yield_now().await;
        assert!(!probed.has_changed().unwrap_or(true));
        // The machine sleeps for ten minutes: only the wall clock moves.
        tick(&wall, Duration::from_secs(600) + CHECK_EVERY);
        tokio::time::sleep(CHECK_EVERY).await;
        tokio::time::timeout(Duration::from_secs(1), probed.changed())
            .await
            .expect("a probe after the suspension")
            .expect("the watch goes on");
        assert_eq!(*probed.borrow_and_update(), 1);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the watch ends when stopped")
            .unwrap();
    }
}

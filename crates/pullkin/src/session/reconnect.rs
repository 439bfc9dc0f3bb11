//! [`ReconnectPolicy`]: when to try the next connection, as pure state driven by `now`.
//!
//! Every failure (check-in, TCP, TLS, login, a dead or closed connection) counts; the
//! next attempt waits an exponential backoff with jitter ([`RetryPolicy::delay`]), and at
//! least as long as the server asked with `Retry-After` (never beyond the backoff's
//! longest delay). With a failure limit, the policy says when to give up; without one (the
//! default) it never does.
//!
//! A login starts the count over, as Chromium's connection factory does
//! (docs/protocol.md §7.2), but the backoff before it is kept: when the connection is
//! reset within the reset window (`stable_after`, Chromium's 10 s) of its login, that
//! backoff is restored and goes on growing, so that a server which accepts and at once
//! closes cannot cause a tight loop. A connection that outlived the window fails as the
//! first failure of a new count.

use std::time::{Duration, Instant};

use fcm_http::RetryPolicy;
use rand::Rng;

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconnect {
    /// Try again at `at` (`now + delay`). A [`probe`](crate::Pullkin::probe) may cut the
    /// wait short, but not before `not_before`: the part of the wait the server asked
    /// for.
    After {
        /// How long to wait.
        delay: Duration,
        /// When the next attempt starts.
        at: Instant,
        /// The server's wait is over then (`now` when it asked for none).
        not_before: Instant,
        /// Failures in a row so far.
        failures: u32,
    },
    /// The failure limit was reached: stop.
    GiveUp {
        /// Failures in a row.
        failures: u32,
    },
}

/// The reconnection rules of one app's listener. See the module documentation.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    backoff: RetryPolicy,
    max_failures: Option<u32>,
    stable_after: Duration,
    failures: u32,
    /// The failures in a row before the current connection's login: restored when it is
    /// reset within `stable_after`.
    previous: u32,
    /// When the current connection logged in, if it did.
    online_since: Option<Instant>,
}

impl ReconnectPolicy {
    /// A policy with this backoff (its attempt count is not used), failure limit (`None`:
    /// never give up) and reset window: a connection reset sooner than `stable_after`
    /// after its login restores the backoff of before the login (docs/protocol.md §7.2).
    #[must_use]
    pub fn new(backoff: RetryPolicy, max_failures: Option<u32>, stable_after: Duration) -> Self {
        Self {
            backoff,
            max_failures,
            stable_after,
            failures: 0,
            previous: 0,
            online_since: None,
        }
    }

    /// Failures in a row: since the last login, or, once a connection was reset within
    /// the reset window, since the last connection that outlived it.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The number of the next attempt: failures in a row plus one.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.failures.saturating_add(1)
    }

    /// The connection logged in at `now`: the count starts over, the backoff before the
    /// login is kept in case the connection is reset within the reset window.
    pub fn handle_online(&mut self, now: Instant) {
        if self.online_since.is_none() {
            self.previous = self.failures;
        }
        self.failures = 0;
        self.online_since = Some(now);
    }

    /// The attempt or connection failed at `now`; the server asked to wait `retry_after`
    /// if it did. `rng` draws the jitter.
    pub fn handle_failure<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Reconnect {
        if let Some(since) = self.online_since.take()
            && now.saturating_duration_since(since) < self.stable_after
        {
            // Reset soon after its login: the backoff of before goes on (§7.2).
            self.failures = self.previous;
        }
        self.failures = self.failures.saturating_add(1);
        if self.max_failures.is_some_and(|max| self.failures >= max) {
            return Reconnect::GiveUp {
                failures: self.failures,
            };
        }
        let backoff = self.backoff.delay(self.failures, rng);
        // No sooner than the server asked, but never beyond the longest backoff.
        let server_wait =
            retry_after.map_or(Duration::ZERO, |asked| asked.min(self.backoff.max_delay()));
        let delay = server_wait.max(backoff);
        Reconnect::After {
            delay,
            at: now + delay,
            not_before: now + server_wait,
            failures: self.failures,
        }
    }
}

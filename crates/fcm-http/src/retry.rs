//! Retries with exponential backoff and jitter; the caller says what is retryable.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// How often and how patiently to retry an operation.
///
/// The delay before retry `n` (1 for the first retry) is
/// `min(initial_delay × multiplierⁿ⁻¹, max_delay)`, of which a random fraction of up to
/// `jitter` is taken off, so that many clients failing together do not retry together.
///
/// ```
/// # use std::time::Duration;
/// use fcm_http::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .with_max_attempts(3)
///     .with_initial_delay(Duration::from_millis(1));
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// let mut calls = 0;
/// let result: Result<u32, &str> = rt.block_on(policy.run(
///     |attempt| {
///         calls += 1;
///         async move { if attempt < 3 { Err("busy") } else { Ok(attempt) } }
///     },
///     |error| *error == "busy",
/// ));
/// assert_eq!(result, Ok(3));
/// assert_eq!(calls, 3);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: f64,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s initial delay doubling up to 30 s, up to 50 % jitter; a server's
    /// `Retry-After` of up to 60 s is waited for.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn no_retry() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// The total number of attempts, the first included (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The delay before the first retry.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The longest delay between two attempts.
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The growth factor of the delay (at least 1; default 2).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The largest fraction of each delay taken off at random, in `0.0..=1.0`
    /// (0 = deterministic delays; default 0.5).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The longest server-requested wait (`Retry-After`) that is waited for before the
    /// next attempt; when a server asks for more, [`run_hinted`](Self::run_hinted) returns
    /// its error instead of retrying sooner than asked (default 60 s).
    pub fn with_max_retry_after(mut self, wait: Duration) -> Self {
        self.max_retry_after = wait;
        self
    }

    /// The longest delay between two attempts.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The total number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before retry number `retry` (1 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.powi(exponent);
        let max = self.max_delay.as_secs_f64();
        let secs = (self.initial_delay.as_secs_f64() * factor).min(max);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
    }

    /// The delay before retry number `retry`, jitter applied with `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let base = self.base_delay(retry);
        if self.jitter <= 0.0 {
            return base;
        }
        let cut: f64 = rng.gen_range(0.0..=self.jitter);
        base.mul_f64(1.0 - cut)
    }

    /// Runs `operation` (given the attempt number, from 1) until it succeeds, fails with
    /// an error `is_retryable` rejects, or the attempts are used up; sleeps
    /// [`delay`](Self::delay) between attempts with `tokio::time::sleep`. Returns the
    /// last error.
    pub async fn run<T, E, Op, Fut, P>(&self, operation: Op, is_retryable: P) -> Result<T, E>
    where
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: Fn(&E) -> bool,
        E: std::fmt::Display,
    {
        self.run_hinted(operation, is_retryable, |_| None).await
    }

    /// [`run`](Self::run), with `retry_after` reading from an error how long the server
    /// asked to wait (e.g. [`Error::retry_after`](crate::Error::retry_after)): the next
    /// attempt comes no sooner than that, and a wait longer than
    /// [`with_max_retry_after`](Self::with_max_retry_after) returns the error at once.
    pub async fn run_hinted<T, E, Op, Fut, P, H>(
        &self,
        mut operation: Op,
        is_retryable: P,
        retry_after: H,
    ) -> Result<T, E>
    where
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: Fn(&E) -> bool,
        H: Fn(&E) -> Option<Duration>,
        E: std::fmt::Display,
    {
        let mut attempt = 1;
        loop {
            match operation(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) if attempt < self.max_attempts && is_retryable(&error) => {
                    let backoff = self.delay(attempt, &mut rand::thread_rng());
                    let asked = retry_after(&error);
                    if let Some(asked) = asked.filter(|asked| *asked > self.max_retry_after) {
                        tracing::warn!(
                            attempt,
                            ?asked,
                            max_retry_after = ?self.max_retry_after,
                            %error,
                            "the server asks for a longer wait than allowed, not retrying"
                        );
                        return Err(error);
                    }
                    let delay = asked.map_or(backoff, |asked| asked.max(backoff));
                    tracing::warn!(
                        attempt,
                        max_attempts = self.max_attempts,
                        ?delay,
                        ?asked,
                        %error,
                        "attempt failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = RetryPolicy::default()
            .with_initial_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(500))
            .with_jitter(0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<_> = (1..=5).map(|n| p.delay(n, &mut rng).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default()
            .with_initial_delay(Duration::from_millis(1000))
            .with_jitter(0.5);
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let d = p.delay(1, &mut rng);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn settings_are_sanitised() {
        let p = RetryPolicy::default()
            .with_max_attempts(0)
            .with_multiplier(f64::NAN)
            .with_jitter(7.0);
        assert_eq!(p.max_attempts(), 1);
        assert_eq!(p.multiplier, 1.0);
        assert_eq!(p.jitter, 1.0);
        assert_eq!(RetryPolicy::no_retry().max_attempts(), 1);
    }

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy::default()
            .with_max_attempts(attempts)
            .with_initial_delay(Duration::from_millis(1))
    }

    #[tokio::test]
    async fn stops_on_non_retryable_errors() {
        let mut calls = 0;
        let r: Result<(), String> = fast(5)
            .run(
                |_| {
                    calls += 1;
                    async { Err("fatal".to_owned()) }
                },
                |e| e != "fatal",
            )
            .await;
        assert_eq!(r, Err("fatal".to_owned()));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let mut seen = Vec::new();
        let r: Result<(), String> = fast(4)
            .run(
                |attempt| {
                    seen.push(attempt);
                    async move { Err(format!("busy {attempt}")) }
                },
                |_| true,
            )
            .await;
        assert_eq!(r, Err("busy 4".to_owned()));
        assert_eq!(seen, [1, 2, 3, 4]);
    }

    /// Attempts of an operation whose first attempts fail, one per entry of `failures`,
    /// each asking for that wait (`None`: no wait asked), and whose next attempt succeeds;
    /// returns the result and when each attempt started, on tokio's paused clock.
    async fn attempt_times(
        policy: &RetryPolicy,
        failures: &[Option<Duration>],
    ) -> (Result<u32, String>, Vec<Duration>) {
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        let result = policy
            .run_hinted(
                |attempt| {
                    times.push(start.elapsed());
                    let failure = failures.get(attempt as usize - 1).copied();
                    async move {
                        match failure {
                            Some(wait) => Err(crate::Error::Status {
                                status: http::StatusCode::SERVICE_UNAVAILABLE,
                                body_excerpt: format!("busy {attempt}"),
                                retry_after: wait,
                            }),
                            None => Ok(attempt),
                        }
                    }
                },
                |_| true,
                crate::Error::retry_after,
            )
            .await
            .map_err(|error| match error {
                crate::Error::Status { body_excerpt, .. } => body_excerpt,
                other => other.to_string(),
            });
        (result, times)
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_wait_is_honoured_when_longer_than_the_backoff() {
        let policy = fast(5).with_jitter(0.0);
        // Attempts 1 and 3 fail asking 7 s and 0 s; attempt 2 fails asking nothing.
        let failures = [Some(Duration::from_secs(7)), None, Some(Duration::ZERO)];
        let (result, times) = attempt_times(&policy, &failures).await;
        assert_eq!(result, Ok(4));
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        // 7 s asked, then the 2 ms and 4 ms backoffs (longer than the 0 s asked).
        assert_eq!(ms, [0, 7_000, 7_002, 7_006]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_the_limit_ends_the_retries_with_the_servers_error() {
        let policy = fast(5).with_max_retry_after(Duration::from_secs(10));
        let failures = [Some(Duration::from_secs(10)), Some(Duration::from_secs(11))];
        let (result, times) = attempt_times(&policy, &failures).await;
        assert_eq!(result, Err("busy 2".to_owned()));
        assert_eq!(times.len(), 2);
        assert!(times[1] >= Duration::from_secs(10));
    }
}

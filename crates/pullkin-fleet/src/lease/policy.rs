//! [`LeasePolicy`]: a worker's lease decisions with no I/O, driven by `now`.
//!
//! Driving it (the worker's loop does this):
//!
//! 1. sleep until [`LeasePolicy::poll_timeout`] (or another input);
//! 2. stop the connections of every identity [`LeasePolicy::poll_expired`] returns
//!    (self-fencing: the renewals failed for too long);
//! 3. when [`LeasePolicy::renewal_due`], renew every lease in one statement and report
//!    the leases the database still has for this worker with
//!    [`LeasePolicy::handle_renewed`] (passing the instant the statement was sent), or
//!    the failure with [`LeasePolicy::handle_renew_failed`]; stop what it reports lost,
//!    release what it reports stray;
//! 4. with the counts of the fleet ([`Observed`]), ask [`LeasePolicy::balance`] how many
//!    leases to claim or to release, and report claims with
//!    [`LeasePolicy::handle_claimed`] and releases with [`LeasePolicy::handle_released`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Lease settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// How long a lease lasts after each claim or renewal (default 15 s).
    pub ttl: Duration,
    /// Renew this often (default `ttl / 3`).
    pub renew_every: Duration,
    /// After a failed renewal, try again this soon (default `ttl / 15`, at least 100 ms).
    pub retry_every: Duration,
    /// Stop an identity's connection this long before its lease could expire when it
    /// could not be renewed (default `ttl / 5`): time for the stop itself.
    pub margin: Duration,
    /// Look at the fleet's counts (and claim or release) this often (default
    /// `min(ttl / 3, 1 s)`): a lease that expired or was released is claimed within
    /// this long.
    pub balance_every: Duration,
    /// Hold at most this many identities (default: no cap).
    pub capacity: Option<usize>,
    /// Identities left free this long by the fair share (every other worker full, or
    /// unable to open them) are claimed beyond the share, up to the capacity (default:
    /// `ttl`).
    pub starving_after: Duration,
}

impl LeaseConfig {
    /// Settings for leases of `ttl`, the rest derived from it.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            renew_every: ttl / 3,
            retry_every: (ttl / 15).max(Duration::from_millis(100)),
            margin: ttl / 5,
            balance_every: (ttl / 3).min(Duration::from_secs(1)),
            capacity: None,
            starving_after: ttl,
        }
    }

    /// The same, with a capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: Option<usize>) -> Self {
        self.capacity = capacity;
        self
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::new(Duration::from_secs(15))
    }
}

/// What the fleet looks like, as one statement read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Observed {
    /// Identities that are not disabled.
    pub active: usize,
    /// Of those, the ones free or expired that this worker could claim.
    pub free: usize,
    /// The capacity of every live worker, this one included (`None`: no cap).
    pub capacities: Vec<Option<usize>>,
}

impl Observed {
    /// Counts as read from the database.
    #[must_use]
    pub fn new(active: usize, free: usize, capacities: Vec<Option<usize>>) -> Self {
        Self {
            active,
            free,
            capacities,
        }
    }
}

/// What to do about the share of identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Claim up to this many free or expired leases.
    Claim(usize),
    /// Hand off this many identities gracefully (stop, flush, release).
    Release(usize),
    /// Nothing to do.
    Steady,
}

/// What a renewal changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewed {
    /// Held before, and no longer this worker's (taken over after expiring, disabled,
    /// removed): stop them, and release them (the release does nothing when another
    /// worker holds them now).
    pub lost: Vec<i64>,
    /// Still this worker's in the database but no longer held here (given up by
    /// self-fencing meanwhile): release them.
    pub stray: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// Stop the connection at this instant unless renewed before.
    deadline: Instant,
    /// When the claim that got it was sent.
    since: Instant,
}

/// The leases one worker holds, and its decisions about them. See the module docs for
/// the order of calls.
#[derive(Debug, Clone)]
pub struct LeasePolicy {
    config: LeaseConfig,
    held: BTreeMap<i64, Held>,
    /// When to renew next; `None` before the first renewal (due at once).
    next_renewal: Option<Instant>,
    /// When the free identities were first seen free while this worker was at its share.
    free_since: Option<Instant>,
    /// When to balance next; `None`: at once.
    next_balance: Option<Instant>,
}

impl LeasePolicy {
    /// A worker holding nothing yet.
    #[must_use]
    pub fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            held: BTreeMap::new(),
            next_renewal: None,
            free_since: None,
            next_balance: None,
        }
    }

    // ---- getters ----

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The identities held, with their epochs, by id.
    pub fn held(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.held.iter().map(|(id, held)| (*id, held.epoch))
    }

    /// How many identities are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The epoch an identity is held at, if held.
    #[must_use]
    pub fn epoch(&self, identity: i64) -> Option<i64> {
        self.held.get(&identity).map(|held| held.epoch)
    }

    /// When the identity's connection must stop unless its lease is renewed first.
    #[must_use]
    pub fn deadline(&self, identity: i64) -> Option<Instant> {
        self.held.get(&identity).map(|held| held.deadline)
    }

    /// The next instant something is due: a renewal, a balance or a self-fencing
    /// deadline. `None`: something is due now.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.held.values().map(|held| held.deadline).min();
        let (renewal, balance) = (self.next_renewal?, self.next_balance?);
        Some(deadline.map_or(renewal, |d| d.min(renewal)).min(balance))
    }

    /// Whether it is time to look at the fleet's counts and [balance](Self::balance).
    #[must_use]
    pub fn balance_due(&self, now: Instant) -> bool {
        self.next_balance.is_none_or(|at| now >= at)
    }

    /// Whether a renewal (and heartbeat) is due at `now`.
    #[must_use]
    pub fn renewal_due(&self, now: Instant) -> bool {
        self.next_renewal.is_none_or(|at| now >= at)
    }

    // ---- inputs ----

    /// The leases whose deadline came (renewals failed for `ttl − margin`): they are no
    /// longer held here; stop their connections now.
    pub fn poll_expired(&mut self, now: Instant) -> Vec<i64> {
        let expired: Vec<i64> = self
            .held
            .iter()
            .filter(|(_, held)| held.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.held.remove(id);
        }
        expired
    }

    /// A claim sent at `sent_at` returned these leases (identity, epoch).
    pub fn handle_claimed(&mut self, sent_at: Instant, claimed: &[(i64, i64)]) {
        let deadline = self.deadline_from(sent_at);
        for &(identity, epoch) in claimed {
            self.held.insert(
                identity,
                Held {
                    epoch,
                    deadline,
                    since: sent_at,
                },
            );
        }
        // Claims count as renewed at `sent_at`; the next renewal stays where it is.
        if self.next_renewal.is_none() {
            self.next_renewal = Some(sent_at + self.config.renew_every);
        }
    }

    /// A renewal sent at `sent_at` found these leases (identity, epoch) still this
    /// worker's. Those held here get a new deadline; see [`Renewed`] for the rest.
    pub fn handle_renewed(&mut self, sent_at: Instant, still_held: &[(i64, i64)]) -> Renewed {
        let deadline = self.deadline_from(sent_at);
        let found: BTreeMap<i64, i64> = still_held.iter().copied().collect();
        let mut renewed = Renewed::default();
        let mut lost = Vec::new();
        for (identity, held) in &mut self.held {
            match found.get(identity) {
                Some(&epoch) if epoch == held.epoch => {
                    held.deadline = held.deadline.max(deadline);
                }
                // Claimed after the renewal was sent: not a loss.
                _ if held.since > sent_at => {}
                _ => lost.push(*identity),
            }
        }
        for identity in &lost {
            self.held.remove(identity);
        }
        renewed.lost = lost;
        renewed.stray = still_held
            .iter()
            .filter(|(identity, _)| !self.held.contains_key(identity))
            .filter(|(identity, _)| !renewed.lost.contains(identity))
            .copied()
            .collect();
        self.next_renewal = Some(sent_at + self.config.renew_every);
        renewed
    }

    /// A renewal failed at `now` (the database out of reach): try again soon. The
    /// deadlines stay; [`LeasePolicy::poll_expired`] reports the leases whose time ran out.
    pub fn handle_renew_failed(&mut self, now: Instant) {
        self.next_renewal = Some(now + self.config.retry_every);
    }

    /// The identity was handed off, lost or stopped: no longer held.
    pub fn handle_released(&mut self, identity: i64) {
        self.held.remove(&identity);
    }

    /// How many leases to claim or release at `now`, given the fleet's counts.
    ///
    /// The share: the smallest `t` such that the live workers, each taking
    /// `min(t, its capacity)`, hold every active identity ([`fair_share`]), capped by
    /// this worker's capacity. Below it, claim the difference. Above it, release the
    /// excess, but only while nothing is free (free identities are for the workers
    /// below their share to take first). At the share with identities still free after
    /// [`LeaseConfig::starving_after`] (no other worker takes them), claim them up to
    /// the capacity.
    pub fn balance(&mut self, now: Instant, observed: &Observed) -> Balance {
        self.next_balance = Some(now + self.config.balance_every);
        let capacity = self.config.capacity.unwrap_or(usize::MAX);
        let mut capacities = observed.capacities.clone();
        if capacities.is_empty() {
            capacities.push(self.config.capacity);
        }
        let target = fair_share(observed.active, &capacities).min(capacity);
        let held = self.held.len();
        if observed.free == 0 || held >= capacity {
            self.free_since = None;
        }
        if held < target {
            self.free_since = None;
            return Balance::Claim(target - held);
        }
        if observed.free > 0 && held < capacity {
            let since = *self.free_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.config.starving_after {
                self.free_since = None;
                return Balance::Claim(observed.free.min(capacity - held));
            }
            return Balance::Steady;
        }
        if held > target && observed.free == 0 {
            return Balance::Release(held - target);
        }
        Balance::Steady
    }

    /// The self-fencing deadline of a lease whose claim or renewal was sent at `sent_at`.
    fn deadline_from(&self, sent_at: Instant) -> Instant {
        sent_at + self.config.ttl.saturating_sub(self.config.margin)
    }
}

/// The fair share of `active` identities among workers of these capacities (`None`:
/// no cap): the smallest `t` such that `Σ min(t, capacity)` reaches `active`, i.e.
/// `ceil(active / workers)` when no worker is capped. When the capacities cannot hold
/// them all, it is the largest capacity.
#[must_use]
pub fn fair_share(active: usize, capacities: &[Option<usize>]) -> usize {
    if active == 0 || capacities.is_empty() {
        return 0;
    }
    let held_at = |t: usize| -> usize {
        capacities
            .iter()
            .map(|c| c.map_or(t, |c| c.min(t)))
            .fold(0_usize, usize::saturating_add)
    };
    // `ceil(active / workers)` always suffices for uncapped workers; capped ones may
    // push it up to `active`.
    let (mut low, mut high) = (0_usize, active);
    if held_at(high) < active {
        return capacities
            .iter()
            .map(|c| c.unwrap_or(active))
            .max()
            .unwrap_or(0);
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if held_at(middle) >= active {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    high
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(15);

    fn policy() -> LeasePolicy {
        LeasePolicy::new(LeaseConfig::new(TTL))
    }

    #[test]
    fn the_fair_share_is_the_ceiling_of_identities_over_workers() {
        assert_eq!(fair_share(10, &[None, None]), 5);
        assert_eq!(fair_share(10, &[None, None, None]), 4);
        assert_eq!(fair_share(1, &[None, None, None]), 1);
        assert_eq!(fair_share(0, &[None]), 0);
        assert_eq!(fair_share(7, &[]), 0);
        // A capped worker leaves more to the others.
        assert_eq!(fair_share(10, &[Some(2), None]), 8);
        assert_eq!(fair_share(10, &[Some(2), Some(3), None]), 5);
        // More identities than every capacity together: the largest capacity.
        assert_eq!(fair_share(10, &[Some(2), Some(3)]), 3);
    }

    #[test]
    fn a_renewal_is_due_at_once_then_every_third_of_the_ttl() {
        let mut policy = policy();
        let start = Instant::now();
        assert!(policy.renewal_due(start));
        policy.handle_claimed(start, &[(1, 1), (2, 1)]);
        let renewed = policy.handle_renewed(start, &[(1, 1), (2, 1)]);
        assert_eq!(renewed, Renewed::default());
        assert!(!policy.renewal_due(start + TTL / 3 - Duration::from_millis(1)));
        assert!(policy.renewal_due(start + TTL / 3));
        // The first balance is due at once, then every second.
        assert_eq!(policy.poll_timeout(), None);
        assert!(policy.balance_due(start));
        policy.balance(start, &Observed::new(2, 0, vec![None]));
        assert_eq!(policy.poll_timeout(), Some(start + Duration::from_secs(1)));
        assert!(!policy.balance_due(start + Duration::from_millis(999)));
        assert_eq!(policy.held().collect::<Vec<_>>(), [(1, 1), (2, 1)]);
    }

    #[test]
    fn a_worker_that_cannot_renew_stops_before_its_leases_could_expire() {
        let mut policy = policy();
        let start = Instant::now();
        policy.handle_claimed(start, &[(7, 3)]);
        // Every renewal fails: retried soon, and the deadline stays.
        let mut now = start + TTL / 3;
        while now < start + TTL {
            if policy.renewal_due(now) {
                policy.handle_renew_failed(now);
                assert!(!policy.renewal_due(now));
            }
            let expired = policy.poll_expired(now);
            if !expired.is_empty() {
                assert_eq!(expired, [7]);
                break;
            }
            now += Duration::from_millis(500);
        }
        // Stopped at ttl − margin after the claim was sent, well before the expiry.
        assert!(now >= start + TTL - TTL / 5, "{:?}", now - start);
        assert!(now < start + TTL, "{:?}", now - start);
        assert!(policy.is_empty());
        assert_eq!(policy.epoch(7), None);
    }

    #[test]
    fn a_renewal_extends_the_deadline_from_when_it_was_sent() {
        let mut policy = policy();
        let start = Instant::now();
        policy.handle_claimed(start, &[(1, 1)]);
        let sent = start + Duration::from_secs(5);
        policy.handle_renewed(sent, &[(1, 1)]);
        assert_eq!(policy.deadline(1), Some(sent + TTL - TTL / 5));
        assert!(
            policy
                .poll_expired(sent + TTL - TTL / 5 - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(policy.poll_expired(sent + TTL - TTL / 5), [1]);
    }

    #[test]
    fn a_lease_missing_from_a_renewal_is_lost_and_an_unknown_one_is_stray() {
        let mut policy = policy();
        let start = Instant::now();
        policy.handle_claimed(start, &[(1, 1), (2, 4), (3, 1)]);
        // 2 moved on to another epoch (taken over), 3 is gone, 9 is still ours in the
        // database though given up here.
        let renewed = policy.handle_renewed(start + TTL / 3, &[(1, 1), (2, 5), (9, 2)]);
        assert_eq!(renewed.lost, [2, 3]);
        assert_eq!(renewed.stray, [(9, 2)]);
        assert_eq!(policy.held().collect::<Vec<_>>(), [(1, 1)]);
        // A claim sent after the renewal is not lost by it.
        let later = start + TTL / 2;
        policy.handle_claimed(later, &[(4, 1)]);
        let renewed = policy.handle_renewed(later - Duration::from_millis(1), &[(1, 1)]);
        assert!(renewed.lost.is_empty());
        assert_eq!(policy.epoch(4), Some(1));
    }

    fn holding(n: i64, now: Instant) -> LeasePolicy {
        let mut policy = policy();
        let leases: Vec<(i64, i64)> = (1..=n).map(|id| (id, 1)).collect();
        policy.handle_claimed(now, &leases);
        policy
    }

    #[test]
    fn below_the_share_claim_above_it_release() {
        let now = Instant::now();
        let mut alone = policy();
        assert_eq!(
            alone.balance(now, &Observed::new(10, 10, vec![None])),
            Balance::Claim(10)
        );
        // A second worker came: half goes.
        let mut full = holding(10, now);
        assert_eq!(
            full.balance(now, &Observed::new(10, 0, vec![None, None])),
            Balance::Release(5)
        );
        // ...but not while identities are free for the other to take first.
        assert_eq!(
            full.balance(now, &Observed::new(12, 2, vec![None, None])),
            Balance::Steady
        );
        let mut half = holding(5, now);
        assert_eq!(
            half.balance(now, &Observed::new(10, 0, vec![None, None])),
            Balance::Steady
        );
        // The other worker died: its identities expire and are claimed.
        assert_eq!(
            half.balance(now, &Observed::new(10, 5, vec![None])),
            Balance::Claim(5)
        );
    }

    #[test]
    fn the_capacity_caps_the_share() {
        let now = Instant::now();
        let mut capped = LeasePolicy::new(LeaseConfig::new(TTL).with_capacity(Some(3)));
        assert_eq!(
            capped.balance(now, &Observed::new(10, 10, vec![Some(3)])),
            Balance::Claim(3)
        );
        capped.handle_claimed(now, &[(1, 1), (2, 1), (3, 1)]);
        assert_eq!(
            capped.balance(now + TTL * 2, &Observed::new(10, 7, vec![Some(3)])),
            Balance::Steady
        );
    }

    #[test]
    fn identities_nobody_takes_are_claimed_beyond_the_share_after_a_while() {
        let start = Instant::now();
        let mut policy = holding(5, start);
        // Two workers, ten identities, five free: the other worker does not take them.
        let observed = Observed::new(10, 5, vec![None, None]);
        assert_eq!(policy.balance(start, &observed), Balance::Steady);
        assert_eq!(
            policy.balance(start + TTL - Duration::from_millis(1), &observed),
            Balance::Steady
        );
        assert_eq!(policy.balance(start + TTL, &observed), Balance::Claim(5));
        // Taken meanwhile by the other: the wait starts over.
        assert_eq!(
            policy.balance(start + TTL, &Observed::new(10, 0, vec![None, None])),
            Balance::Steady
        );
        assert_eq!(policy.balance(start + TTL * 2, &observed), Balance::Steady);
    }

    #[test]
    fn a_released_identity_is_no_longer_held() {
        let now = Instant::now();
        let mut policy = holding(2, now);
        policy.handle_released(1);
        assert_eq!(policy.held().collect::<Vec<_>>(), [(2, 1)]);
        assert_eq!(policy.len(), 1);
    }
}

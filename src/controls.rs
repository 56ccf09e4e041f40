//! Flow control: pausing a queue, a cap on messages in flight, and a
//! receive rate limit (a token bucket on the queue's clock).
//!
//! All three act where a receive takes messages from the ready queue
//! (`Shared::pop_one` and `Shared::pop_batch`, shared by the blocking and
//! the async receives), and nowhere else: sends go on as before.
//!
//! The path that uses none of them pays one atomic load ([`Controls::on`])
//! per receive and per acknowledgement. When any is on, a receive asks
//! [`Controls::admit`] how many messages it may take, under a lock that
//! only such receives take; what it took but did not lease yet is counted
//! as `pending`, so that two receives cannot both see room for the last
//! slot. A receive that is refused waits on the ready signal like one that
//! found nothing: resuming, an acknowledgement (a slot freed) and a token
//! coming due (a deadline, as a delay's) wake it.
//!
//! The token bucket holds up to `n` tokens and gains `n` per `period`,
//! counted in whole nanoseconds with 128-bit products, so that neither
//! `u32::MAX` tokens nor a period of `Duration::MAX` overflows.

use crate::clock::{self, Nanos};
use crate::error::LimitError;
use parking_lot::Mutex;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

/// A receive rate limit: at most `n` messages per `period`, with bursts of
/// up to `n` (a token bucket that starts full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    n: NonZeroU32,
    period: Duration,
}

impl RateLimit {
    /// At most `n` receives per `period`. A zero `n` would never let a
    /// message through, and a zero period has no rate: both are refused.
    ///
    /// ```
    /// use spool::{LimitError, RateLimit};
    /// use std::time::Duration;
    ///
    /// let limit = RateLimit::new(10, Duration::from_secs(1)).unwrap();
    /// assert_eq!((limit.n(), limit.period()), (10, Duration::from_secs(1)));
    /// assert_eq!(RateLimit::new(0, Duration::from_secs(1)), Err(LimitError::ZeroRate));
    /// ```
    pub fn new(n: u32, period: Duration) -> Result<RateLimit, LimitError> {
        let n = NonZeroU32::new(n).ok_or(LimitError::ZeroRate)?;
        if period.is_zero() {
            return Err(LimitError::ZeroPeriod);
        }
        Ok(RateLimit { n, period })
    }

    /// The messages allowed per period.
    pub fn n(&self) -> u32 {
        self.n.get()
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// A token bucket, as of the queue's clock.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: RateLimit,
    tokens: u64,
    /// The time the tokens were counted up to.
    since: Nanos,
}

impl Bucket {
    fn new(limit: RateLimit, now: Nanos) -> Self {
        Bucket {
            limit,
            tokens: u64::from(limit.n.get()),
            since: now,
        }
    }

    fn period(&self) -> u128 {
        u128::from(clock::duration_nanos(self.limit.period)).max(1)
    }

    /// Adds the tokens earned since `since`.
    fn refill(&mut self, now: Nanos) {
        let n = u128::from(self.limit.n.get());
        if now <= self.since {
            return;
        }
        let earned = u128::from(now - self.since) * n / self.period();
        if earned == 0 {
            return;
        }
        let full = u64::from(self.limit.n.get());
        self.tokens = (u128::from(self.tokens) + earned).min(n) as u64;
        self.since = if self.tokens == full {
            now
        } else {
            // Keep the fraction of a token already earned.
            let used = earned * self.period() / n;
            self.since
                .saturating_add(used.min(u128::from(u64::MAX)) as u64)
        };
    }

    /// When the next token comes, once the bucket is empty.
    fn next_token(&self) -> Nanos {
        let n = u128::from(self.limit.n.get());
        let wait = self.period().div_ceil(n);
        self.since
            .saturating_add(wait.min(u128::from(u64::MAX)) as u64)
    }
}

#[derive(Debug, Default)]
struct State {
    paused: bool,
    max_in_flight: Option<usize>,
    bucket: Option<Bucket>,
    /// Taken by admitted receives and not yet leased (or given back).
    pending: usize,
}

impl State {
    fn on(&self) -> bool {
        self.paused || self.max_in_flight.is_some() || self.bucket.is_some()
    }
}

/// What [`Controls::admit`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Take up to this many (at least one).
    Take(usize),
    /// Take nothing; look again when woken (paused, or the in-flight cap
    /// reached).
    Wait,
    /// Take nothing; a token comes at this time.
    WaitUntil(Nanos),
}

/// A queue's flow controls.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    /// Whether any control is on: the one load the plain path pays.
    on: AtomicBool,
    state: Mutex<State>,
}

impl Controls {
    /// Whether any control is on.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.on.load(SeqCst)
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock();
        change(&mut state);
        self.on.store(state.on(), SeqCst);
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.update(|state| state.paused = paused);
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.on() && self.state.lock().paused
    }

    pub(crate) fn set_max_in_flight(&self, max: Option<usize>) {
        self.update(|state| state.max_in_flight = max);
    }

    pub(crate) fn max_in_flight(&self) -> Option<usize> {
        self.state.lock().max_in_flight
    }

    /// Sets (or clears) the rate limit; a new limit starts with a full
    /// bucket at `now`.
    pub(crate) fn set_rate_limit(&self, limit: Option<RateLimit>, now: Nanos) {
        self.update(|state| state.bucket = limit.map(|limit| Bucket::new(limit, now)));
    }

    pub(crate) fn rate_limit(&self) -> Option<RateLimit> {
        self.state.lock().bucket.map(|bucket| bucket.limit)
    }

    /// How many of `want` messages a receive may take at `now`, with
    /// `in_flight` messages leased. What it admits is counted as pending
    /// (and its tokens spent) until [`leased`](Self::leased) or
    /// [`refund`](Self::refund).
    pub(crate) fn admit(&self, want: usize, now: Nanos, in_flight: usize) -> Admit {
        let mut state = self.state.lock();
        if state.paused {
            return Admit::Wait;
        }
        let mut n = want;
        if let Some(max) = state.max_in_flight {
            n = n.min(max.saturating_sub(in_flight.saturating_add(state.pending)));
            if n == 0 {
                return Admit::Wait;
            }
        }
        if let Some(bucket) = &mut state.bucket {
            bucket.refill(now);
            if bucket.tokens == 0 {
                return Admit::WaitUntil(bucket.next_token());
            }
            n = n.min(usize::try_from(bucket.tokens).unwrap_or(usize::MAX));
            bucket.tokens -= n as u64;
        }
        state.pending = state.pending.saturating_add(n);
        Admit::Take(n)
    }

    /// `taken` of `admitted` messages were taken: the rest are given back
    /// (their tokens too); the taken ones stay pending until leased.
    pub(crate) fn refund(&self, admitted: usize, taken: usize) {
        let unused = admitted.saturating_sub(taken);
        if unused == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.pending = state.pending.saturating_sub(unused);
        if let Some(bucket) = &mut state.bucket {
            let full = u64::from(bucket.limit.n.get());
            bucket.tokens = bucket.tokens.saturating_add(unused as u64).min(full);
        }
    }

    /// `n` admitted messages are leased now (or put back): no longer
    /// pending.
    pub(crate) fn leased(&self, n: usize) {
        if n > 0 {
            let mut state = self.state.lock();
            state.pending = state.pending.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn the_bucket_allows_n_per_period_with_bursts_of_n() {
        let controls = Controls::default();
        assert!(!controls.on());
        let limit = RateLimit::new(2, Duration::from_secs(1)).unwrap();
        controls.set_rate_limit(Some(limit), 0);
        assert!(controls.on());
        assert_eq!(controls.admit(5, 0, 0), Admit::Take(2));
        controls.leased(2);
        assert_eq!(controls.admit(1, 0, 0), Admit::WaitUntil(SEC / 2));
        assert_eq!(controls.admit(1, SEC / 2 - 1, 0), Admit::WaitUntil(SEC / 2));
        assert_eq!(controls.admit(5, SEC / 2, 0), Admit::Take(1));
        controls.refund(1, 0);
        assert_eq!(controls.admit(5, SEC / 2, 0), Admit::Take(1), "refunded");
        assert_eq!(
            controls.admit(5, 100 * SEC, 0),
            Admit::Take(2),
            "capped at n"
        );
        controls.set_rate_limit(None, 0);
        controls.leased(4);
        assert!(!controls.on());
    }

    #[test]
    fn extreme_limits_do_not_overflow() {
        assert_eq!(
            RateLimit::new(0, Duration::from_secs(1)),
            Err(LimitError::ZeroRate)
        );
        assert_eq!(
            RateLimit::new(1, Duration::ZERO),
            Err(LimitError::ZeroPeriod)
        );
        let controls = Controls::default();
        let slow = RateLimit::new(1, Duration::MAX).unwrap();
        controls.set_rate_limit(Some(slow), u64::MAX - 1);
        assert_eq!(controls.admit(usize::MAX, u64::MAX - 1, 0), Admit::Take(1));
        assert_eq!(controls.admit(1, u64::MAX, 0), Admit::WaitUntil(u64::MAX));
        let fast = RateLimit::new(u32::MAX, Duration::from_nanos(1)).unwrap();
        controls.set_rate_limit(Some(fast), 0);
        assert_eq!(
            controls.admit(usize::MAX, u64::MAX, 0),
            Admit::Take(u32::MAX as usize)
        );
    }

    #[test]
    fn the_in_flight_cap_counts_pending_receives() {
        let controls = Controls::default();
        controls.set_max_in_flight(Some(3));
        assert_eq!(controls.admit(2, 0, 0), Admit::Take(2));
        assert_eq!(controls.admit(5, 0, 0), Admit::Take(1), "two pending");
        assert_eq!(controls.admit(1, 0, 0), Admit::Wait);
        controls.leased(3);
        assert_eq!(controls.admit(1, 0, 3), Admit::Wait, "three leased");
        assert_eq!(controls.admit(9, 0, 1), Admit::Take(2));
        controls.set_max_in_flight(Some(usize::MAX));
        assert_eq!(controls.admit(usize::MAX, 0, usize::MAX), Admit::Wait);
    }

    #[test]
    fn a_paused_queue_admits_nothing() {
        let controls = Controls::default();
        controls.set_paused(true);
        assert!(controls.is_paused());
        assert_eq!(controls.admit(1, 0, 0), Admit::Wait);
        controls.set_paused(false);
        assert!(!controls.on());
        assert_eq!(controls.admit(1, 0, 0), Admit::Take(1));
    }
}

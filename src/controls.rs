//! Flow control: pausing a queue, a cap on messages in flight, and a
//! receive rate limit (a token bucket on the queue's clock).
//!
//! The same switch turns on the ordered receive path for good once a
//! message with a priority or a group is sent (`order.rs`); such a
//! receive asks [`Controls::admit`] only while a limit is on
//! ([`Controls::limited`]), and a message leaving flight wakes waiting
//! receives only then.
//!
//! All three act where a receive takes messages from the ready queue
//! (`Shared::pop_one` and `Shared::pop_batch`, shared by the blocking and
//! the async receives), and nowhere else: sends go on as before.
//!
//! The path that uses none of them pays one atomic load ([`Controls::on`])
//! per receive and per acknowledgement, and nothing else: no field is
//! added to what a receive carries. When any is on, a receive asks
//! [`Controls::admit`] how many messages it may take and takes them from
//! the ready queue under a lock that only such receives take, so that two
//! receives cannot both see room for the last slot. The count in flight
//! it is given is the capacity held less what is ready or delayed: a
//! message taken and not leased yet, or a send not pushed yet, counts as
//! in flight, so the count errs only high (a receive waits a moment
//! longer, never takes past the cap). A receive that is refused waits on
//! the ready signal like one that found nothing: resuming, a message
//! leaving flight and a token coming due (a deadline, as a delay's) wake
//! it. A control turned on while a receive is between its check and its
//! take applies from the next receive.
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
    /// A message with a priority or a group was sent: receives take the
    /// ordered path (`order.rs`) from now on.
    ordered: bool,
}

impl State {
    fn on(&self) -> bool {
        self.limited() || self.ordered
    }

    /// Whether a receive must be admitted: paused, capped or rate-limited.
    fn limited(&self) -> bool {
        self.paused || self.max_in_flight.is_some() || self.bucket.is_some()
    }
}

/// What [`Controls::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Took this many (none if nothing was ready).
    Took(usize),
    /// Take nothing; look again when woken (paused, or the in-flight cap
    /// reached).
    Wait,
    /// Take nothing; a token comes at this time.
    WaitUntil(Nanos),
}

/// A queue's flow controls.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    /// Whether any control is on, or the queue is ordered: the one load
    /// the plain path pays.
    on: AtomicBool,
    /// Whether the queue has seen a message with a priority or a group.
    ordered: AtomicBool,
    /// Whether a pause, the in-flight cap or the rate limit is on.
    limited: AtomicBool,
    state: Mutex<State>,
    /// Held by a pause or resume from its record to its change, so that
    /// the last record written is the state in memory.
    pub(crate) pausing: Mutex<()>,
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
        self.limited.store(state.limited(), SeqCst);
        self.on.store(state.on(), SeqCst);
    }

    /// Turns the ordered receive path on for good (the first message with
    /// a priority or a group); one load once it is.
    #[inline]
    pub(crate) fn set_ordered(&self) {
        if !self.ordered.load(SeqCst) {
            self.order_from_now();
        }
    }

    #[cold]
    fn order_from_now(&self) {
        self.update(|state| state.ordered = true);
        self.ordered.store(true, SeqCst);
    }

    /// Whether a pause, the in-flight cap or the rate limit is on: a
    /// receive must be admitted, and a message leaving flight may let a
    /// waiting one go on.
    #[inline]
    pub(crate) fn limited(&self) -> bool {
        self.limited.load(SeqCst)
    }

    /// Whether receives take the ordered path.
    #[inline]
    pub(crate) fn ordered(&self) -> bool {
        self.ordered.load(SeqCst)
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

    /// Lets a receive take up to `want` messages at `now`: under the lock,
    /// asks `in_flight` how many are in flight, then hands `take` how many
    /// it may take (at least one) and spends a token for each it took.
    /// `take` must not call back into the queue's controls or its event
    /// hook (it only pops the ready queue).
    pub(crate) fn admit(
        &self,
        want: usize,
        now: Nanos,
        in_flight: impl FnOnce() -> usize,
        take: impl FnOnce(usize) -> usize,
    ) -> Admit {
        let mut state = self.state.lock();
        if state.paused {
            return Admit::Wait;
        }
        let mut n = want;
        if let Some(max) = state.max_in_flight {
            n = n.min(max.saturating_sub(in_flight()));
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
        }
        let took = take(n).min(n);
        if let Some(bucket) = &mut state.bucket {
            bucket.tokens -= took as u64;
        }
        Admit::Took(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    /// Admits up to `want` messages, with as many ready.
    fn admit(controls: &Controls, want: usize, now: Nanos, in_flight: usize) -> Admit {
        controls.admit(want, now, || in_flight, |n| n)
    }

    #[test]
    fn the_bucket_allows_n_per_period_with_bursts_of_n() {
        let controls = Controls::default();
        assert!(!controls.on());
        let limit = RateLimit::new(2, Duration::from_secs(1)).unwrap();
        controls.set_rate_limit(Some(limit), 0);
        assert!(controls.on());
        assert_eq!(admit(&controls, 5, 0, 0), Admit::Took(2));
        assert_eq!(admit(&controls, 1, 0, 0), Admit::WaitUntil(SEC / 2));
        assert_eq!(
            admit(&controls, 1, SEC / 2 - 1, 0),
            Admit::WaitUntil(SEC / 2)
        );
        assert_eq!(
            controls.admit(5, SEC / 2, || 0, |_| 0),
            Admit::Took(0),
            "nothing ready: no token spent"
        );
        assert_eq!(admit(&controls, 5, SEC / 2, 0), Admit::Took(1));
        assert_eq!(
            admit(&controls, 5, 100 * SEC, 0),
            Admit::Took(2),
            "capped at n"
        );
        controls.set_rate_limit(None, 0);
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
        assert_eq!(
            admit(&controls, usize::MAX, u64::MAX - 1, 0),
            Admit::Took(1)
        );
        assert_eq!(admit(&controls, 1, u64::MAX, 0), Admit::WaitUntil(u64::MAX));
        let fast = RateLimit::new(u32::MAX, Duration::from_nanos(1)).unwrap();
        controls.set_rate_limit(Some(fast), 0);
        assert_eq!(
            admit(&controls, usize::MAX, u64::MAX, 0),
            Admit::Took(u32::MAX as usize)
        );
    }

    #[test]
    fn the_in_flight_cap_takes_what_is_left() {
        let controls = Controls::default();
        controls.set_max_in_flight(Some(3));
        assert_eq!(admit(&controls, 2, 0, 0), Admit::Took(2));
        assert_eq!(admit(&controls, 5, 0, 2), Admit::Took(1));
        assert_eq!(admit(&controls, 1, 0, 3), Admit::Wait);
        assert_eq!(admit(&controls, 1, 0, usize::MAX), Admit::Wait);
        controls.set_max_in_flight(Some(usize::MAX));
        assert_eq!(admit(&controls, usize::MAX, 0, usize::MAX), Admit::Wait);
        assert_eq!(admit(&controls, usize::MAX, 0, 0), Admit::Took(usize::MAX));
    }

    #[test]
    fn a_paused_queue_admits_nothing() {
        let controls = Controls::default();
        controls.set_paused(true);
        assert!(controls.is_paused());
        assert_eq!(admit(&controls, 1, 0, 0), Admit::Wait);
        controls.set_paused(false);
        assert!(!controls.on());
        assert_eq!(admit(&controls, 1, 0, 0), Admit::Took(1));
    }
}

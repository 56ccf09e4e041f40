//! Time, as the queue reads it.
//!
//! Every time-dependent rule (lease expiry, delays, retry backoff, the
//! deduplication window) reads one [`Clock`]. Production code uses
//! [`SystemClock`]; tests use a [`ManualClock`] and move time forward with
//! [`ManualClock::advance`], so that a thirty-second lease expires in a
//! test without sleeping.
//!
//! Internally the queue keeps instants as nanoseconds since the Unix epoch
//! ([`Nanos`]): they fit in a `u64` until the year 2554, compare cheaply, and
//! can be written to disk.
//!
//! Time saturates: a reading past 2554 is `Nanos::MAX` (the end of time),
//! and so is every deadline that would lie beyond it. A deadline that
//! saturated is never [`reached`]: a lease or an idempotency window that
//! would end after the end of time does not run out, even while the clock
//! stands at the end of time too (else a lease granted there would be
//! expired at once). A delay or backoff that would end beyond it comes due
//! there (`due <= now`): it cannot end any later, and a message must not
//! be stranded.

use crate::monotonic::Monotonic;
use parking_lot::Mutex;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub(crate) type Nanos = u64;

/// A source of the current time for a queue.
///
/// Implementations must never go backwards. [`SystemClock`] is the default;
/// [`ManualClock`] is for tests.
///
/// The queue counts time in nanoseconds since the Unix epoch, so it
/// saturates: a time before 1970 reads as 1970, a time after
/// 2554-07-21T23:34:33.709551615Z (the end of time) as the end of time,
/// and every deadline that would lie beyond the end of time (a lease, an
/// idempotency window, a delay or a backoff, e.g. given `Duration::MAX`)
/// is set there. A lease or an idempotency window ending there never runs
/// out, even once the clock stands there too; a delay or backoff ending
/// there comes due when the clock gets there. So on a clock at the end of
/// time leases still work (they just never expire) and delays end at once.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time in nanoseconds since the Unix epoch, saturating.
    ///
    /// The queue reads this on every operation; override it when the clock
    /// can answer without building a [`SystemTime`].
    fn now_nanos(&self) -> u64 {
        to_nanos(self.now())
    }

    /// A cheaper reading of the current time, in nanoseconds since the Unix
    /// epoch, that may lag [`now_nanos`](Self::now_nanos) by up to
    /// [`coarse_lag`](Self::coarse_lag) and is never ahead of it.
    ///
    /// The queue reads it where a millisecond does not matter and speed
    /// does: to set a lease's deadline on receive (the deadline adds the
    /// lag, so a lease does not run out early), to check the lease on
    /// acknowledge, and for the `enqueued_at` of a send without a key or
    /// a delay to an in-memory queue. The default is
    /// [`now_nanos`](Self::now_nanos).
    fn now_coarse_nanos(&self) -> u64 {
        self.now_nanos()
    }

    /// How far [`now_coarse_nanos`](Self::now_coarse_nanos) may lag behind
    /// [`now_nanos`](Self::now_nanos). The default is zero.
    fn coarse_lag(&self) -> Duration {
        Duration::ZERO
    }

    /// Registers a waker to call whenever this clock jumps forward by other
    /// means than the passing of real time.
    ///
    /// Consumers blocked in [`recv`](crate::Consumer::recv) sleep until the
    /// next deadline measured in real time; a clock that can jump (such as
    /// [`ManualClock`]) calls the registered wakers so that they look again.
    /// The default does nothing, which is right for a clock that follows
    /// real time.
    fn register_waker(&self, waker: ClockWaker) {
        let _ = waker;
    }
}

/// A handle that a [`Clock`] calls to wake a queue's blocked consumers.
#[derive(Clone)]
pub struct ClockWaker(pub(crate) Weak<dyn ClockListener>);

/// What a queue does when its clock jumps.
pub(crate) trait ClockListener: Send + Sync {
    fn clock_jumped(&self);
}

impl ClockWaker {
    /// Wakes the queue's blocked consumers so they read the clock again.
    ///
    /// Returns `false` once the queue is gone, so the clock can forget it.
    pub fn wake(&self) -> bool {
        match self.0.upgrade() {
            Some(queue) => {
                queue.clock_jumped();
                true
            }
            None => false,
        }
    }
}

impl fmt::Debug for ClockWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClockWaker")
    }
}

/// The wall clock, made monotonic.
///
/// It reads [`SystemTime`] once when created and then adds the elapsed
/// monotonic time, so that a wall-clock step (NTP, a user changing the
/// time) cannot make leases expire early or late.
///
/// On Linux its [coarse reading](Clock::now_coarse_nanos) is the kernel's
/// `CLOCK_MONOTONIC_COARSE` (as of the last timer tick, 1 to 4 ms), which
/// costs a few loads where a precise reading costs tens of nanoseconds; its
/// [lag](Clock::coarse_lag) is two ticks, as the kernel may apply a tick
/// late. Elsewhere both readings are precise.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    wall_at_start: SystemTime,
    nanos_at_start: Nanos,
    monotonic: Monotonic,
}

impl SystemClock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let wall_at_start = SystemTime::now();
        SystemClock {
            wall_at_start,
            nanos_at_start: to_nanos(wall_at_start),
            monotonic: Monotonic::start(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        self.wall_at_start + Duration::from_nanos(self.monotonic.elapsed())
    }

    fn now_nanos(&self) -> u64 {
        self.nanos_at_start.saturating_add(self.monotonic.elapsed())
    }

    fn now_coarse_nanos(&self) -> u64 {
        self.nanos_at_start
            .saturating_add(self.monotonic.elapsed_coarse())
    }

    fn coarse_lag(&self) -> Duration {
        Duration::from_nanos(self.monotonic.coarse_lag())
    }
}

/// A clock that moves only when told to, for exact tests.
///
/// Clones share the same time. Advancing it wakes every queue built with
/// it, so blocked consumers notice expired leases and due delays at once.
///
/// ```
/// use spool::{ManualClock, Queue};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let queue: Queue<u32> = Queue::builder()
///     .visibility_timeout(Duration::from_secs(30))
///     .clock(clock.clone())
///     .open()?;
/// queue.producer().send(7)?;
/// let first = queue.consumer().try_recv()?;
/// clock.advance(Duration::from_secs(31)); // the lease runs out
/// let again = queue.consumer().try_recv()?;
/// assert_eq!(again.receive_count(), 2);
/// assert!(first.ack().is_err()); // the old lease is fenced off
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Default)]
struct ManualInner {
    since_start: Mutex<Duration>,
    wakers: Mutex<Vec<ClockWaker>>,
}

impl ManualClock {
    /// A manual clock that starts at 2025-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by` and wakes the queues that use this clock.
    ///
    /// Time stops at the end of what a queue can represent,
    /// 2554-07-21T23:34:33.709551615Z (`u64::MAX` nanoseconds after the
    /// Unix epoch): advancing past it, by `Duration::MAX` say, leaves the
    /// clock there. A lease granted there holds until settled, and delays
    /// come due at once: see [`Clock`].
    pub fn advance(&self, by: Duration) {
        {
            let mut since_start = self.inner.since_start.lock();
            *since_start = since_start.saturating_add(by).min(MANUAL_MAX);
        }
        let wakers = self.inner.wakers.lock().clone();
        let alive: Vec<bool> = wakers.iter().map(ClockWaker::wake).collect();
        if alive.contains(&false) {
            self.inner.wakers.lock().retain(|w| w.0.strong_count() > 0);
        }
    }

    /// How far this clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        *self.inner.since_start.lock()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// 2025-01-01T00:00:00Z, where every [`ManualClock`] starts.
const MANUAL_EPOCH: Duration = Duration::from_secs(1_735_689_600);
/// How far a [`ManualClock`] goes: to `Nanos::MAX`, the end of time.
const MANUAL_MAX: Duration = Duration::from_nanos(Nanos::MAX).saturating_sub(MANUAL_EPOCH);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        // At most `Nanos::MAX` after the epoch: representable everywhere.
        UNIX_EPOCH + MANUAL_EPOCH + self.elapsed()
    }

    fn now_nanos(&self) -> u64 {
        duration_nanos(MANUAL_EPOCH.saturating_add(self.elapsed()))
    }

    fn register_waker(&self, waker: ClockWaker) {
        self.inner.wakers.lock().push(waker);
    }
}

/// Converts a time to [`Nanos`], saturating outside 1970..2554.
pub(crate) fn to_nanos(time: SystemTime) -> Nanos {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

/// Converts [`Nanos`] back to a time.
pub(crate) fn from_nanos(nanos: Nanos) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// Whether `deadline` has come at `now`. A deadline that saturated at
/// `Nanos::MAX` never comes (see the module docs): for leases and
/// idempotency windows, not for delays.
pub(crate) fn reached(deadline: Nanos, now: Nanos) -> bool {
    deadline <= now && deadline != Nanos::MAX
}

/// A duration in [`Nanos`], saturating.
pub(crate) fn duration_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            clock.now().duration_since(start).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn manual_clock_stops_at_the_end_of_time() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        let end = UNIX_EPOCH + Duration::from_nanos(u64::MAX);
        assert_eq!((clock.now(), clock.now_nanos()), (end, u64::MAX));
        clock.advance(Duration::from_nanos(1));
        assert_eq!(clock.now(), end);
        assert_eq!(clock.elapsed(), MANUAL_MAX);
        let near = ManualClock::new();
        near.advance(MANUAL_MAX - Duration::from_nanos(1));
        assert_eq!(near.now_nanos(), u64::MAX - 1);
        assert_eq!(to_nanos(near.now()), u64::MAX - 1);
    }

    #[test]
    fn conversions_saturate_at_both_ends() {
        let end = UNIX_EPOCH + Duration::from_nanos(u64::MAX);
        assert_eq!(to_nanos(end), u64::MAX);
        assert_eq!(from_nanos(u64::MAX), end);
        assert_eq!(to_nanos(end + Duration::from_nanos(1)), u64::MAX);
        assert_eq!(to_nanos(end + Duration::from_secs(1 << 40)), u64::MAX);
        assert_eq!(to_nanos(UNIX_EPOCH), 0);
        assert_eq!(to_nanos(UNIX_EPOCH - Duration::from_nanos(1)), 0);
        assert_eq!(from_nanos(0), UNIX_EPOCH);
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
        assert_eq!(duration_nanos(Duration::from_nanos(u64::MAX)), u64::MAX);
    }

    #[test]
    fn a_saturated_deadline_is_never_reached() {
        assert!(reached(5, 5) && reached(5, 6) && !reached(6, 5));
        assert!(reached(Nanos::MAX - 1, Nanos::MAX));
        assert!(!reached(Nanos::MAX, Nanos::MAX));
    }

    #[test]
    fn nanos_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        assert_eq!(from_nanos(to_nanos(t)), t);
        assert_eq!(to_nanos(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn system_clock_does_not_go_backwards() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}

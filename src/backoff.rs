//! How long a failed message waits before it is visible again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The queue-wide retry policy, applied when a consumer nacks, fails or
/// drops a delivery, and when a lease expires.
///
/// [`Delivery::retry_after`](crate::Delivery::retry_after) overrides it for
/// one message.
///
/// The default ([`Backoff::DEFAULT`]) is exponential from 1 s up to 5 min
/// with jitter, so that a failing job is not retried `max_receives` times
/// within milliseconds; [`Backoff::None`] retries at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backoff {
    /// Visible again at once.
    None,
    /// The same delay after every failed attempt.
    Fixed(Duration),
    /// `initial × 2^(attempt − 1)`, capped at `max`; with `jitter`, a
    /// uniformly random delay between half of that and all of it ("equal
    /// jitter"), so that a burst of failures does not retry in lockstep.
    Exponential {
        /// Delay after the first failed attempt.
        initial: Duration,
        /// Upper bound on any delay.
        max: Duration,
        /// Spread each delay over `[d/2, d]`.
        jitter: bool,
    },
}

impl Default for Backoff {
    /// [`Backoff::DEFAULT`].
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

impl Backoff {
    /// A queue's backoff unless it sets one: 1 s after the first failed
    /// attempt, 2 s after the second, doubling up to 5 min, each spread
    /// over its upper half by jitter (so 0.5–1 s, then 1–2 s, ...).
    pub const DEFAULT: Backoff = Backoff::Exponential {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
        jitter: true,
    };

    /// Exponential backoff from `initial` up to `max`, with jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            initial,
            max,
            jitter: true,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        match *self {
            Backoff::Exponential { initial, max, .. } if initial.is_zero() => {
                let _ = max;
                Err("exponential backoff needs a non-zero initial delay")
            }
            Backoff::Exponential { initial, max, .. } if max < initial => {
                Err("exponential backoff needs max >= initial")
            }
            _ => Ok(()),
        }
    }

    /// The delay before attempt `receive_count + 1`, given that
    /// `receive_count` attempts have failed.
    pub(crate) fn delay(&self, receive_count: u32, random: &Random) -> Duration {
        match *self {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed(d) => d,
            Backoff::Exponential {
                initial,
                max,
                jitter,
            } => {
                let doublings = receive_count.saturating_sub(1).min(63);
                let full = initial
                    .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
                    .unwrap_or(max)
                    .min(max);
                if jitter {
                    let half = full / 2;
                    let spread = (full - half).as_nanos() as u64;
                    half + Duration::from_nanos(random.below(spread.saturating_add(1)))
                } else {
                    full
                }
            }
        }
    }
}

/// A lock-free source of jitter: SplitMix64 over an atomic counter.
#[derive(Debug)]
pub(crate) struct Random(AtomicU64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Random(AtomicU64::new(seed))
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub(crate) fn below(&self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let mut z = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z as u128 * bound as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let policy = Backoff::Exponential {
            initial: 100 * MS,
            max: 1000 * MS,
            jitter: false,
        };
        let random = Random::new(1);
        let delays: Vec<_> = (1..=6).map(|n| policy.delay(n, &random)).collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(policy.delay(u32::MAX, &random), 1000 * MS);
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let policy = Backoff::exponential(100 * MS, 10_000 * MS);
        let random = Random::new(42);
        for attempt in 1..=8 {
            let full = (100 * MS * (1 << (attempt - 1))).min(10_000 * MS);
            for _ in 0..200 {
                let d = policy.delay(attempt, &random);
                assert!(
                    d >= full / 2 && d <= full,
                    "{d:?} outside [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert!(Backoff::exponential(Duration::ZERO, MS).validate().is_err());
        assert!(Backoff::exponential(2 * MS, MS).validate().is_err());
        assert!(Backoff::Fixed(Duration::ZERO).validate().is_ok());
    }
}

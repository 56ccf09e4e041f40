//! When a schedule's ticks fall: pure arithmetic on the queue's clock.
//!
//! Ticks are fixed points in time, the same in every process and after
//! every restart, so that a tick's idempotency key names it everywhere:
//! an interval ticks at every whole multiple of it since the Unix epoch
//! (plus an offset), and a cron expression at its matching instants.

use crate::clock::Nanos;

/// What decides the ticks.
#[derive(Debug, Clone)]
pub(crate) enum Ticks {
    /// At `offset + k * every` since the epoch, `every` > 0, `offset` < `every`.
    Every { every: Nanos, offset: Nanos },
    #[cfg(feature = "cron")]
    Cron(Box<super::cron::CronTicks>),
}

/// The most ticks a catch-up looks at between two instants, whatever the
/// span: bounds the work after a long sleep (the most recent are kept).
const MAX_SCAN: usize = 100_000;

impl Ticks {
    /// The first tick strictly after `t`, if there is one before the end
    /// of time.
    pub(crate) fn next_after(&self, t: Nanos) -> Option<Nanos> {
        match self {
            Ticks::Every { every, offset } => {
                let k = t.checked_sub(*offset).map_or(0, |since| since / every + 1);
                k.checked_mul(*every)?.checked_add(*offset)
            }
            #[cfg(feature = "cron")]
            Ticks::Cron(cron) => cron.next_after(t),
        }
    }

    /// How many ticks fall in `(after, upto]` (for a cron expression, at
    /// most `MAX_SCAN`).
    pub(crate) fn count(&self, after: Nanos, upto: Nanos) -> u64 {
        match self {
            Ticks::Every { every, offset } => {
                let index = |t: Nanos| t.checked_sub(*offset).map_or(0, |s| s / every + 1);
                index(upto).saturating_sub(index(after))
            }
            #[cfg(feature = "cron")]
            Ticks::Cron(_) => self.due(after, upto, MAX_SCAN).len() as u64,
        }
    }

    /// The last `max` ticks in `(after, upto]`, oldest first.
    pub(crate) fn due(&self, after: Nanos, upto: Nanos, max: usize) -> Vec<Nanos> {
        let mut due = std::collections::VecDeque::with_capacity(max.min(64));
        if max == 0 {
            return Vec::new();
        }
        let mut from = match self {
            // Jump straight to the first of the last `max` ticks.
            Ticks::Every { every, .. } => {
                let span = (max as u64).saturating_mul(*every);
                after.max(upto.saturating_sub(span))
            }
            #[cfg(feature = "cron")]
            Ticks::Cron(_) => after,
        };
        for _ in 0..MAX_SCAN {
            match self.next_after(from) {
                Some(tick) if tick <= upto => {
                    if due.len() == max {
                        due.pop_front();
                    }
                    due.push_back(tick);
                    from = tick;
                }
                _ => break,
            }
        }
        due.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_ticks_at_whole_multiples_plus_its_offset() {
        let ticks = Ticks::Every {
            every: 10,
            offset: 3,
        };
        assert_eq!(ticks.next_after(0), Some(3));
        assert_eq!(ticks.next_after(3), Some(13));
        assert_eq!(ticks.next_after(12), Some(13));
        assert_eq!(ticks.next_after(u64::MAX - 5), Some(u64::MAX - 2));
        assert_eq!(ticks.next_after(u64::MAX - 2), None);
        assert_eq!(ticks.due(3, 43, 10), [13, 23, 33, 43]);
        assert_eq!(ticks.due(3, 42, 2), [23, 33]);
        assert_eq!(ticks.due(3, 12, 2), Vec::<u64>::new());
        assert_eq!(ticks.due(0, u64::MAX, 1), [u64::MAX - 2]);
        assert_eq!(ticks.due(0, 100, 0), Vec::<u64>::new());
        assert_eq!(
            (ticks.count(3, 43), ticks.count(2, 43), ticks.count(0, 2)),
            (4, 5, 0)
        );
    }
}

//! Pacing a compaction's writes, so that the writer's syncs do not queue
//! behind them on the disk.
//!
//! A compaction rewrites the live state (about 100 MB for 1,000,000 live
//! 64-byte messages) and syncs it a MiB at a time. Unpaced, on this
//! project's 2-core VM, it writes 170-270 MB/s, and a `Sync` send that
//! meets one of its syncs waits for it: in one traced run of
//! `benches/compaction.rs`, 36 of the 42 writer's syncs slower than 1.5 ms
//! overlapped one. A
//! plain process writing and syncing 1 MiB chunks beside a loop of small
//! appends and `fdatasync`s shows what the rate does to that loop's
//! p99.9 (0.95-1.0 ms alone): unpaced 11-13 ms, 100 MB/s 1.3-2.6 ms,
//! 50 MB/s 1.1-1.6 ms. The size of the chunks (128 KiB to 1 MiB) did not
//! matter, nor did skipping the journal commit of each chunk
//! (`sync_file_range`): the disk is what the two share.
//!
//! So a compaction writes its first [`PACE_BURST`] bytes at full speed
//! (a compaction of a mostly acknowledged log is never slowed) and then
//! at most [`DEFAULT_COMPACTION_RATE`] (`Builder::compaction_rate`). It
//! does not hold anyone up by that: when the writer waits for it (the
//! sealed files far behind, see `compactor`), the compaction stops
//! pacing itself, and a closing log does not wait for it either.

use std::time::{Duration, Instant};

/// Bytes per second a compaction writes at most, after its first
/// [`PACE_BURST`] bytes, unless the queue's builder says otherwise:
/// 48 MiB/s, about the 50 MB/s measured above.
pub(crate) const DEFAULT_COMPACTION_RATE: u64 = 48 << 20;

/// The least rate a builder may set: below it, a compaction of a large
/// queue would last hours.
pub(crate) const MIN_COMPACTION_RATE: u64 = 1 << 20;

/// Bytes a compaction writes before pacing starts.
pub(crate) const PACE_BURST: u64 = 4 << 20;

/// A token bucket over one compaction's written bytes: by time `t` after
/// it started, it may have written `PACE_BURST + rate * t` bytes.
#[derive(Debug)]
pub(crate) struct Pace {
    /// Bytes per second; `u64::MAX`: unpaced.
    rate: u64,
    started: Instant,
    written: u64,
}

impl Pace {
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Pace {
            rate,
            started: now,
            written: 0,
        }
    }

    /// Notes `bytes` more written by `now`; returns how long to wait
    /// before writing more.
    pub(crate) fn wrote(&mut self, bytes: u64, now: Instant) -> Duration {
        self.written = self.written.saturating_add(bytes);
        let paced = self.written.saturating_sub(PACE_BURST);
        if paced == 0 || self.rate == u64::MAX {
            return Duration::ZERO;
        }
        // At most 2^64 * 10^9: no overflow in u128.
        let nanos = u128::from(paced) * 1_000_000_000 / u128::from(self.rate.max(1));
        let due = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        due.saturating_sub(now.saturating_duration_since(self.started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_burst_is_not_paced() {
        let start = Instant::now();
        let mut pace = Pace::new(MIB, start);
        for _ in 0..4 {
            assert_eq!(pace.wrote(MIB, start), Duration::ZERO);
        }
        // The fifth MiB is due a second after the start.
        assert_eq!(pace.wrote(MIB, start), Duration::from_secs(1));
    }

    #[test]
    fn past_the_burst_the_bytes_follow_the_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(8 * MIB, start);
        assert_eq!(pace.wrote(PACE_BURST, start), Duration::ZERO);
        // 16 MiB more at 8 MiB/s: due at 2 s; 0.5 s have passed.
        let now = start + Duration::from_millis(500);
        assert_eq!(pace.wrote(16 * MIB, now), Duration::from_millis(1500));
        // A compaction slower than the rate never waits.
        let late = start + Duration::from_secs(10);
        assert_eq!(pace.wrote(MIB, late), Duration::ZERO);
    }

    #[test]
    fn an_unlimited_rate_never_waits_and_extremes_do_not_overflow() {
        let start = Instant::now();
        let mut unpaced = Pace::new(u64::MAX, start);
        assert_eq!(unpaced.wrote(u64::MAX, start), Duration::ZERO);
        assert_eq!(unpaced.wrote(u64::MAX, start), Duration::ZERO);
        let mut slowest = Pace::new(0, start);
        let wait = slowest.wrote(u64::MAX, start);
        assert!(wait >= Duration::from_secs(u64::MAX / 1_000_000_000 - 1));
    }
}

//! The operating system's monotonic clock, read cheaply.
//!
//! [`SystemClock`](crate::SystemClock) counts time from a monotonic reading
//! taken when it was created. A precise reading (`CLOCK_MONOTONIC`) costs a
//! vDSO call that reads the time-stamp counter, tens of nanoseconds on a
//! virtual machine and the biggest single cost of a receive and an ack. On
//! Linux the kernel also keeps `CLOCK_MONOTONIC_COARSE`, the same clock as
//! of the last timer tick (1 to 4 ms ago, a little more when the kernel
//! applies a tick late): reading it is a few loads, and it is never ahead
//! of the precise one. Elsewhere the coarse reading is the precise one.

use crate::clock::Nanos;

/// Coarse clocks that tick slower than this are not worth their
/// imprecision.
const MAX_COARSE_TICK: Nanos = 10_000_000;

/// Monotonic time since a start, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Monotonic {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    start: Nanos,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    start: std::time::Instant,
    /// How far a coarse reading may lag a precise one; 0 when the coarse
    /// clock is not used.
    coarse_lag: Nanos,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Monotonic {
    pub(crate) fn start() -> Self {
        // The coarse clock is as of the last tick, but the kernel may apply
        // a tick late (measured: 4.5 ms behind with 4 ms ticks, after a
        // sleep), so the lag allowed for is two ticks.
        let coarse_lag = linux::resolution(libc::CLOCK_MONOTONIC_COARSE)
            .filter(|&tick| tick <= MAX_COARSE_TICK)
            .filter(|_| linux::read(libc::CLOCK_MONOTONIC_COARSE).is_some())
            .map_or(0, |tick| 2 * tick);
        Monotonic {
            start: linux::read(libc::CLOCK_MONOTONIC).unwrap_or(0),
            coarse_lag,
        }
    }

    /// Nanoseconds since the start.
    pub(crate) fn elapsed(&self) -> Nanos {
        self.since(libc::CLOCK_MONOTONIC)
    }

    /// [`elapsed`](Self::elapsed) as of the last timer tick: at most
    /// [`coarse_lag`](Self::coarse_lag) behind, never ahead.
    pub(crate) fn elapsed_coarse(&self) -> Nanos {
        if self.coarse_lag == 0 {
            return self.elapsed();
        }
        self.since(libc::CLOCK_MONOTONIC_COARSE)
    }

    fn since(&self, clock: libc::clockid_t) -> Nanos {
        // Neither clock can fail once it was read at the start; were it to,
        // time would stand still rather than jump.
        linux::read(clock).map_or(0, |now| now.saturating_sub(self.start))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl Monotonic {
    pub(crate) fn start() -> Self {
        Monotonic {
            start: std::time::Instant::now(),
            coarse_lag: 0,
        }
    }

    pub(crate) fn elapsed(&self) -> Nanos {
        crate::clock::duration_nanos(self.start.elapsed())
    }

    pub(crate) fn elapsed_coarse(&self) -> Nanos {
        self.elapsed()
    }
}

impl Monotonic {
    /// How far a coarse reading may lag a precise one.
    pub(crate) fn coarse_lag(&self) -> Nanos {
        self.coarse_lag
    }
}

/// Unsafe code: two calls into the C library (the crate's only other
/// unsafe call lowers the compactor thread's priority, in
/// `wal/compactor.rs`).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
mod linux {
    use crate::clock::Nanos;

    /// The clock's time in nanoseconds, if it can be read.
    pub(super) fn read(clock: libc::clockid_t) -> Option<Nanos> {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid, writable `timespec` that lives across
        // the call; `clock_gettime` writes only to it and keeps no pointer.
        let failed = unsafe { libc::clock_gettime(clock, &mut time) } != 0;
        nanos(time).filter(|_| !failed)
    }

    /// The clock's resolution in nanoseconds, if it can be read.
    pub(super) fn resolution(clock: libc::clockid_t) -> Option<Nanos> {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `read`.
        let failed = unsafe { libc::clock_getres(clock, &mut time) } != 0;
        nanos(time).filter(|_| !failed)
    }

    fn nanos(time: libc::timespec) -> Option<Nanos> {
        let secs = u64::try_from(time.tv_sec).ok()?;
        let nanos = u64::try_from(time.tv_nsec).ok()?;
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // How far the coarse clock lags is up to the kernel (a descheduled
    // virtual CPU can delay its tick), so only its direction is tested.
    #[test]
    fn a_coarse_reading_is_never_ahead_of_a_precise_one() {
        let clock = Monotonic::start();
        for _ in 0..10_000 {
            let coarse = clock.elapsed_coarse();
            let after = clock.elapsed();
            assert!(coarse <= after, "coarse {coarse} ahead of {after}");
        }
    }

    #[test]
    fn readings_do_not_go_backwards() {
        let clock = Monotonic::start();
        let (mut precise, mut coarse) = (0, 0);
        for _ in 0..10_000 {
            let (p, c) = (clock.elapsed(), clock.elapsed_coarse());
            assert!(p >= precise && c >= coarse);
            (precise, coarse) = (p, c);
        }
    }
}

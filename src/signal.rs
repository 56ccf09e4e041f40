//! Blocking without a lock on the fast path: an event count.
//!
//! The ready queue and the capacity counter are lock-free; threads that
//! find nothing to do must still sleep and be woken. [`Signal`] is the
//! classic *event count* (Vyukov; the same idea as crossbeam-channel's
//! `SyncWaker`): a waiter registers, takes the current epoch, tries once
//! more, and sleeps only if the epoch has not moved. A notifier changes the
//! state first, then looks for registered waiters, and only if there are
//! any bumps the epoch and takes the mutex. No wake-up can be lost: either
//! the waiter's last try sees the new state, or the notifier sees the
//! waiter (and then the epoch check or the condition variable catches the
//! wake-up).
//!
//! The `attempt` closure runs without the signal's mutex held, so it may
//! itself notify this or any other signal. Like crossbeam's `Backoff`, a
//! waiter first retries while spinning and yielding for a few microseconds,
//! because the other side is usually about to act.

use crate::padded::Padded;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Instant;

/// Tries with a doubling spin (1, 2, 4, … 64 pauses) before yielding.
const SPIN_STEPS: u32 = 7;
/// Tries with a yield of the thread before sleeping.
const YIELD_STEPS: u32 = 4;

#[derive(Default)]
pub(crate) struct Signal {
    waiters: Padded<AtomicUsize>,
    epoch: AtomicU64,
    lock: Mutex<()>,
    condvar: Condvar,
}

impl Signal {
    /// Wakes one waiter, if any. Call after the state change is visible.
    pub(crate) fn notify_one(&self) {
        if self.has_waiters() {
            self.epoch.fetch_add(1, SeqCst);
            let _guard = self.lock.lock();
            self.condvar.notify_one();
        }
    }

    /// Wakes every waiter, if any. Call after the state change is visible.
    pub(crate) fn notify_all(&self) {
        if self.has_waiters() {
            self.epoch.fetch_add(1, SeqCst);
            let _guard = self.lock.lock();
            self.condvar.notify_all();
        }
    }

    /// [`notify_all`](Self::notify_all) after a state change made by a
    /// `SeqCst` read-modify-write that waiters check with `SeqCst` loads.
    /// The change, the waiter's registration, its check of the state and
    /// this check of the waiters all take part in the single total order of
    /// `SeqCst` operations, which forbids both checks missing: the fence of
    /// [`has_waiters`](Self::has_waiters) is not needed (it costs as much
    /// as the rest of a notify without waiters).
    pub(crate) fn notify_all_after_seqcst_rmw(&self) {
        if self.waiters.load(SeqCst) > 0 {
            self.epoch.fetch_add(1, SeqCst);
            let _guard = self.lock.lock();
            self.condvar.notify_all();
        }
    }

    /// Whether anyone is registered. The fence pairs with the waiter's
    /// registration: either this load sees the waiter, or the waiter's
    /// second attempt (after registering) sees the state change made before
    /// this call. Without waiters a notify costs a fence and a load.
    fn has_waiters(&self) -> bool {
        std::sync::atomic::fence(SeqCst);
        self.waiters.load(SeqCst) > 0
    }

    /// Calls `attempt` until it returns `Some`, sleeping between tries until
    /// notified or until the wake-up time that `wake_at` gives for this
    /// round. Gives up with `None` once `deadline` has passed.
    ///
    /// `wake_at` lets a caller sleep no later than its next internal
    /// deadline (an expiring lease) even when nobody notifies.
    pub(crate) fn wait<R>(
        &self,
        deadline: Option<Instant>,
        mut wake_at: impl FnMut() -> Option<Instant>,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        loop {
            // Spin, then yield, before sleeping: the other side is usually
            // about to act, and a futex round trip costs microseconds.
            for step in 0..SPIN_STEPS + YIELD_STEPS {
                if let Some(done) = attempt() {
                    return Some(done);
                }
                if step < SPIN_STEPS {
                    for _ in 0..1 << step {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::yield_now();
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            self.waiters.fetch_add(1, SeqCst);
            std::sync::atomic::fence(SeqCst); // pairs with `has_waiters`
            let epoch = self.epoch.load(SeqCst);
            if let Some(done) = attempt() {
                self.waiters.fetch_sub(1, SeqCst);
                return Some(done);
            }
            let until = match (deadline, wake_at()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mut guard = self.lock.lock();
            if self.epoch.load(SeqCst) == epoch {
                match until {
                    Some(until) => {
                        self.condvar.wait_until(&mut guard, until);
                    }
                    None => self.condvar.wait(&mut guard),
                }
            }
            drop(guard);
            self.waiters.fetch_sub(1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wait_times_out_when_nothing_happens() {
        let signal = Signal::default();
        let deadline = Instant::now() + Duration::from_millis(20);
        let got: Option<()> = signal.wait(Some(deadline), || None, || None);
        assert!(got.is_none());
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn notify_wakes_a_sleeping_waiter() {
        let signal = Arc::new(Signal::default());
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (signal, flag) = (signal.clone(), flag.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                signal.wait(Some(deadline), || None, || flag.load(SeqCst).then_some(()))
            })
        };
        flag.store(true, SeqCst);
        signal.notify_all();
        assert_eq!(waiter.join().unwrap(), Some(()));
    }
}

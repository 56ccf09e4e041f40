//! Blocking without a lock on the fast path: an event count.
//!
//! Sending to the ready queue and the capacity counter are lock-free (and a
//! pop holds its lock for a few instructions); threads that find nothing to
//! do must still sleep and be woken. [`Signal`] is the
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
//!
//! Waking a sleeping thread takes the operating system tens of
//! microseconds (more on a virtual machine), which is most of the latency
//! of a message that finds its consumer asleep. A signal made
//! [`with_spin`](Signal::with_spin) therefore lets one waiter at a time
//! keep trying for up to that long before it sleeps (and across all
//! signals, no more waiters than half the cores: [`Spinners`]), but only
//! while waits have recently ended within that time: a steady flow of messages is
//! picked up in well under a microsecond, and an idle queue costs no more
//! than a few microseconds of spinning per wait.
//!
//! Tasks wait on the same signal ([`poll_wait`](Signal::poll_wait)): a
//! task's [`Registration`] holds its `Waker` in a list under the signal's
//! mutex and counts among the waiters, so a notifier that finds no waiter
//! still pays only its fence and load. A notify wakes the tasks it would
//! wake as threads: `notify_all` every one, `notify_one` the task that
//! waited longest and a sleeping thread (one of each when both kinds wait:
//! a thread counted as waiting may be about to leave, and the wake-up
//! must not be lost with it). A task that was woken by `notify_one` but is
//! dropped before it looked, or that found what it waited for by itself,
//! passes the wake-up on, so that nothing another waiter needed is lost.
//!
//! loom checks the protocol (`src/loom_tests.rs`, built with `--cfg loom`):
//! waits without a deadline against `notify_one` and `notify_all`, with
//! one try before registering. Timed waits (loom has no clock; a deadline
//! only adds a way out) and the long spin (a matter of time alone) are
//! not modelled, nor is the fence-free
//! [`notify_all_after_seqcst_rmw`](Signal::notify_all_after_seqcst_rmw)
//! (see there).

use crate::padded::Padded;
use crate::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use crate::sync::{thread, Condvar, Mutex};
// The long spin's flag and places are a matter of time alone, which loom
// does not model: they are std's under loom too (see `src/sync/mod.rs`).
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize as StdAtomicUsize};
use std::sync::OnceLock;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Tries with a doubling spin (1, 2, 4, … 64 pauses) before yielding.
#[cfg(not(loom))]
const SPIN_STEPS: u32 = 7;
/// Tries with a yield of the thread before sleeping.
#[cfg(not(loom))]
const YIELD_STEPS: u32 = 4;
// Under loom one try before registering: more tries of the same kind add
// interleavings to explore and no new ones.
#[cfg(loom)]
const SPIN_STEPS: u32 = 1;
#[cfg(loom)]
const YIELD_STEPS: u32 = 0;
/// How often a waiter spinning for long tries.
const POLL: Duration = Duration::from_micros(1);

#[derive(Default)]
pub(crate) struct Signal {
    waiters: Padded<AtomicUsize>,
    epoch: AtomicU64,
    /// Guards the sleeping threads' condition variable and the tasks.
    lock: Mutex<Tasks>,
    condvar: Condvar,
    /// How long one waiter may keep trying before it sleeps; zero for the
    /// short spin only.
    spin: Duration,
    /// Where it gets a place to spin (one per core for the process).
    spinners: Option<&'static Spinners>,
    /// Written by waiters only: apart from what notifiers read.
    spinning: Padded<Spinning>,
}

/// The tasks waiting on a signal, oldest first.
#[derive(Default)]
struct Tasks {
    wakers: VecDeque<(u64, Waker)>,
    /// The key of the next registration.
    next: u64,
}

/// A task's place among a signal's waiters, kept across polls of one
/// wait (see [`Signal::poll_wait`]). Give it back with
/// [`Signal::cancel`] when the wait is dropped before it ended.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    key: Option<u64>,
}

#[derive(Default)]
struct Spinning {
    /// Whether a waiter is spinning for `spin` now.
    now: AtomicBool,
    /// Whether the last wait that ended took at most `spin`: spinning pays
    /// only then.
    pays: AtomicBool,
}

impl Signal {
    /// A signal whose waiters spin for up to `spin` (see the module docs).
    pub(crate) fn with_spin(spin: Duration) -> Self {
        Self::with_spin_in(spin, Spinners::process())
    }

    /// [`with_spin`](Self::with_spin), with places to spin from `spinners`.
    fn with_spin_in(spin: Duration, spinners: &'static Spinners) -> Self {
        Signal {
            spin,
            spinners: Some(spinners),
            spinning: Padded(Spinning {
                now: AtomicBool::new(false),
                pays: AtomicBool::new(true),
            }),
            ..Signal::default()
        }
    }

    /// Wakes one waiter, if any. Call after the state change is visible.
    pub(crate) fn notify_one(&self) {
        if self.has_waiters() {
            self.epoch.fetch_add(1, SeqCst);
            let mut tasks = self.lock.lock();
            // A thread counted among the waiters may be about to sleep, or
            // done: with tasks waiting too, both kinds are woken, as a
            // wake-up given to a thread that no longer sleeps would be lost
            // to the task. (A spare wake-up costs one more look.)
            if self.waiters.load(SeqCst) > tasks.wakers.len() {
                self.condvar.notify_one();
            }
            let Some((_, waker)) = tasks.wakers.pop_front() else {
                return;
            };
            self.waiters.fetch_sub(1, SeqCst);
            drop(tasks);
            waker.wake();
        }
    }

    /// Wakes every waiter, if any. Call after the state change is visible.
    pub(crate) fn notify_all(&self) {
        fence(SeqCst); // as in `has_waiters`
        self.notify_all_after_seqcst_rmw();
    }

    /// [`notify_all`](Self::notify_all) after a state change made by a
    /// `SeqCst` read-modify-write that waiters check with `SeqCst` loads.
    /// The change, the waiter's registration, its check of the state and
    /// this check of the waiters all take part in the single total order of
    /// `SeqCst` operations, which forbids both checks missing: the fence of
    /// [`has_waiters`](Self::has_waiters) is not needed (it costs as much
    /// as the rest of a notify without waiters).
    ///
    /// loom cannot check this argument: it takes `SeqCst` loads and
    /// read-modify-writes for acquire and release only, under which both
    /// checks can miss, and it then reports a lost wake-up (the capacity
    /// model `capacity_batch_and_single_waiters_both_wake` does). So under
    /// loom this is [`notify_all`](Self::notify_all), fence included, and
    /// the models check the rest of the protocol.
    pub(crate) fn notify_all_after_seqcst_rmw(&self) {
        #[cfg(loom)]
        fence(SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            self.epoch.fetch_add(1, SeqCst);
            let mut tasks = self.lock.lock();
            self.condvar.notify_all();
            if tasks.wakers.is_empty() {
                return;
            }
            let woken = std::mem::take(&mut tasks.wakers);
            self.waiters.fetch_sub(woken.len(), SeqCst);
            drop(tasks);
            for (_, waker) in woken {
                waker.wake();
            }
        }
    }

    /// Whether anyone is registered. The fence pairs with the waiter's
    /// registration: either this load sees the waiter, or the waiter's
    /// second attempt (after registering) sees the state change made before
    /// this call. Without waiters a notify costs a fence and a load.
    fn has_waiters(&self) -> bool {
        fence(SeqCst);
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
        // When the wait got past the short spin: read only then, as most
        // waits end in their first attempt and a clock read costs as much
        // as the rest of it.
        let mut started: Option<Instant> = None;
        let pays = |pays: bool| {
            if self.spinning.pays.load(Relaxed) != pays {
                self.spinning.pays.store(pays, Relaxed);
            }
        };
        let done = |started: Option<Instant>, done: R| {
            let short = started.is_none_or(|started| started.elapsed() <= self.spin);
            if !self.spin.is_zero() {
                pays(short);
            }
            Some(done)
        };
        loop {
            // Spin, then yield, before sleeping: the other side is usually
            // about to act, and a futex round trip costs microseconds.
            for step in 0..SPIN_STEPS + YIELD_STEPS {
                if let Some(result) = attempt() {
                    return done(started, result);
                }
                if step < SPIN_STEPS {
                    for _ in 0..1 << step {
                        std::hint::spin_loop();
                    }
                } else {
                    thread::yield_now();
                }
            }
            if !self.spin.is_zero() {
                let since = *started.get_or_insert_with(Instant::now);
                if let Some(result) = self.spin_until(since, deadline, &mut attempt) {
                    return done(started, result);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            // Registered until this round ends, even if `attempt` panics
            // (a panicking clock): a waiter counted for ever would make
            // every notify take the mutex.
            let _registered = Registered::new(&self.waiters);
            fence(SeqCst); // pairs with `has_waiters`
            let epoch = self.epoch.load(SeqCst);
            if let Some(result) = attempt() {
                return done(started, result);
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
        }
    }

    /// Keeps trying until `spin` after `started` (or `deadline`), if
    /// spinning pays and no other waiter is spinning.
    fn spin_until<R>(
        &self,
        started: Instant,
        deadline: Option<Instant>,
        attempt: &mut impl FnMut() -> Option<R>,
    ) -> Option<R> {
        let spin_end = started.checked_add(self.spin)?;
        let until = deadline.map_or(spin_end, |d| d.min(spin_end));
        if Instant::now() >= until
            || !self.spinning.pays.load(Relaxed)
            || self.spinning.now.swap(true, SeqCst)
        {
            return None;
        }
        // Let go of the spinner's place however this ends (`attempt` may
        // panic): held for ever, no waiter would spin again.
        let _spinner = Flag(&self.spinning.now);
        let _core = self.spinners?.take()?;
        let mut round = 0u32;
        loop {
            if let Some(result) = attempt() {
                break Some(result);
            }
            // Look about once a microsecond: looking reads the lines the
            // other side writes, and looking more often would slow it.
            let next = Instant::now() + POLL;
            if next > until {
                break None;
            }
            // Now and then give the core to another thread, which may be
            // the one this waiter waits for.
            round = round.wrapping_add(1);
            if round.is_multiple_of(16) {
                std::thread::yield_now();
            }
            while Instant::now() < next {
                for _ in 0..8 {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

impl Signal {
    /// The task's form of [`wait`](Self::wait): tries `attempt`, and if it
    /// finds nothing, registers `waker` (through `registration`, kept
    /// across polls) and tries once more, returning `Pending` only if that
    /// fails too. A notify after the registration wakes the task, which
    /// then polls again. It neither spins nor sleeps, and has no deadline:
    /// a caller that needs one sets an alarm (`src/alarm.rs`).
    ///
    /// Once it returns `Ready` the registration is given back (see
    /// `finish`). A wait dropped while `Pending` must call
    /// [`cancel`](Self::cancel).
    pub(crate) fn poll_wait<R>(
        &self,
        registration: &mut Registration,
        waker: &Waker,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        if let Some(result) = attempt() {
            self.finish(registration);
            return Poll::Ready(result);
        }
        {
            let mut tasks = self.lock.lock();
            let listed = registration
                .key
                .and_then(|key| tasks.wakers.iter_mut().find(|(k, _)| *k == key));
            match listed {
                Some((_, listed)) => {
                    if !listed.will_wake(waker) {
                        listed.clone_from(waker);
                    }
                }
                None => {
                    let key = tasks.next;
                    tasks.next += 1;
                    tasks.wakers.push_back((key, waker.clone()));
                    self.waiters.fetch_add(1, SeqCst);
                    registration.key = Some(key);
                }
            }
        }
        fence(SeqCst); // pairs with `has_waiters`, as a thread's registration
        match attempt() {
            Some(result) => {
                self.finish(registration);
                Poll::Ready(result)
            }
            None => Poll::Pending,
        }
    }

    /// Gives back the registration of a wait that ended. If a `notify_one`
    /// took it meanwhile, that wake-up was meant for another state change
    /// than the one this wait found (which it would have found anyway):
    /// it goes to another waiter, or a thread asleep beside this task could
    /// stay asleep with its message ready (loom found this).
    fn finish(&self, registration: &mut Registration) {
        if !self.unregister(registration) {
            self.notify_one();
        }
    }

    /// Gives back the registration of a wait dropped before it ended. If a
    /// `notify_one` had already woken it, the wake-up goes to another
    /// waiter: this one will not look.
    pub(crate) fn cancel(&self, registration: &mut Registration) {
        if !self.unregister(registration) {
            self.notify_one();
        }
    }

    /// Takes a task off the list; false if a notify took it first (it was
    /// woken). Without a registration, true: nothing to give back.
    fn unregister(&self, registration: &mut Registration) -> bool {
        let Some(key) = registration.key.take() else {
            return true;
        };
        let mut tasks = self.lock.lock();
        match tasks.wakers.iter().position(|(k, _)| *k == key) {
            Some(at) => {
                tasks.wakers.remove(at);
                self.waiters.fetch_sub(1, SeqCst);
                true
            }
            None => false,
        }
    }
}

/// A waiter's registration, undone on drop.
struct Registered<'a>(&'a AtomicUsize);

impl<'a> Registered<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, SeqCst);
        Registered(waiters)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Places to spin, shared by signals. Each signal lets one of its waiters
/// spin; with many busy queues (a topic's subscriptions) that could be
/// more spinners than cores, which would slow the threads they wait for.
/// [`Spinners::process`] allows half the cores (at least one).
pub(crate) struct Spinners {
    spinning: StdAtomicUsize,
    limit: usize,
}

impl Spinners {
    /// The process's places to spin.
    pub(crate) fn process() -> &'static Spinners {
        static PROCESS: OnceLock<Spinners> = OnceLock::new();
        PROCESS.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Spinners::new((cores / 2).max(1))
        })
    }

    fn new(limit: usize) -> Spinners {
        Spinners {
            spinning: StdAtomicUsize::new(0),
            limit,
        }
    }

    fn take(&self) -> Option<SpinningCore<'_>> {
        self.spinning
            .fetch_update(SeqCst, SeqCst, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| SpinningCore(self))
    }
}

/// A place to spin, given back on drop.
struct SpinningCore<'a>(&'a Spinners);

impl Drop for SpinningCore<'_> {
    fn drop(&mut self) {
        self.0.spinning.fetch_sub(1, SeqCst);
    }
}

/// A flag held, cleared on drop.
struct Flag<'a>(&'a AtomicBool);

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
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

    #[test]
    fn a_spinning_waiter_sees_a_change_nobody_notifies() {
        // Without the spin the waiter would sleep until its deadline, as
        // nothing notifies it.
        // Places of its own: other tests' waiters may hold the process's.
        let spinners = Box::leak(Box::new(Spinners::new(1)));
        let signal = Arc::new(Signal::with_spin_in(Duration::from_secs(2), spinners));
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (signal, flag) = (signal.clone(), flag.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                let got = signal.wait(Some(deadline), || None, || flag.load(SeqCst).then_some(()));
                (got, Instant::now() < deadline)
            })
        };
        std::thread::sleep(Duration::from_millis(1));
        flag.store(true, SeqCst);
        assert_eq!(waiter.join().unwrap(), (Some(()), true));
        assert!(!signal.spinning.now.load(SeqCst), "the spinner let go");
        assert_eq!(spinners.spinning.load(SeqCst), 0, "and its place");
    }

    #[test]
    fn no_more_spin_than_there_are_places() {
        let spinners = Spinners::new(2);
        let first = spinners.take().unwrap();
        let _second = spinners.take().unwrap();
        assert!(spinners.take().is_none());
        drop(first);
        assert!(spinners.take().is_some());
    }
}

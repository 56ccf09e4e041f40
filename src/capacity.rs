//! The bound: a counting semaphore over ready, in-flight and delayed
//! messages.
//!
//! A slot is taken when a message is sent (or redriven) and given back when
//! it is acknowledged or dead-lettered. A message whose lease expires keeps
//! its slot all along, so it always has room to come back. Producers that
//! find no room sleep on a [`Signal`].
//!
//! The slots held are `taken - returned`, two counters that only grow:
//! producers bump `taken`, consumers bump `returned`, each on its own cache
//! line, so a steady flow does not bounce one line between the two sides.
//! Producers compare against `returned_seen`, a copy of `returned` that
//! they keep on their own line. It can only lag (the counter only grows),
//! so it over-counts what is held: it never lets in a message that does not
//! fit, and a producer reads the consumers' line only when the copy says
//! the queue is full, about once per `limit - held` sends.
//!
//! loom checks that concurrent takes and give-backs never let in more
//! than the limit, lose no slot, and leave no producer asleep with room
//! free (`src/loom_tests.rs`).

use crate::padded::Padded;
use crate::signal::Signal;
use crate::sync::atomic::{AtomicUsize, Ordering::SeqCst};

pub(crate) struct Capacity {
    limit: usize,
    producers: Padded<ProducerSide>,
    /// Slots given back, ever. Written by consumers only.
    returned: Padded<AtomicUsize>,
    /// Producers wait here for room (or for the queue to close).
    pub(crate) signal: Signal,
}

#[derive(Default)]
struct ProducerSide {
    /// Slots taken, ever.
    taken: AtomicUsize,
    /// A value `returned` had; never ahead of it.
    returned_seen: AtomicUsize,
}

impl Capacity {
    pub(crate) fn new(limit: usize) -> Self {
        Capacity {
            limit,
            producers: Padded::default(),
            returned: Padded::default(),
            signal: Signal::default(),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Slots taken: ready + in flight + delayed, plus messages in transit.
    ///
    /// `returned` is read first: every slot returned by then was taken by
    /// then, so the result never undercounts what was held when `taken`
    /// is read (a closed queue is not seen drained early).
    pub(crate) fn held(&self) -> usize {
        let returned = self.returned.load(SeqCst);
        self.producers.taken.load(SeqCst).wrapping_sub(returned)
    }

    /// Takes `n` slots if they are all free.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        let side = &self.producers;
        let mut taken = side.taken.load(SeqCst);
        let mut returned = side.returned_seen.load(SeqCst);
        loop {
            if !self.fits(taken, returned, n) {
                // The copy may be stale: look at the real counter.
                returned = self.returned.load(SeqCst);
                side.returned_seen.fetch_max(returned, SeqCst);
                // `taken` may have grown meanwhile: read it again so that
                // `taken - returned` is never computed from an older one.
                taken = side.taken.load(SeqCst);
                if !self.fits(taken, returned, n) {
                    return false;
                }
            }
            match side
                .taken
                .compare_exchange_weak(taken, taken + n, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => taken = now,
            }
        }
    }

    fn fits(&self, taken: usize, returned: usize, n: usize) -> bool {
        // `returned` was read before `taken` (or is an older value of it),
        // so the difference is at least what was held: no underflow.
        let held = taken.wrapping_sub(returned);
        held <= self.limit && n <= self.limit - held
    }

    /// Takes `n` slots whatever the limit: messages restored from disk were
    /// admitted before.
    pub(crate) fn force_take(&self, n: usize) {
        self.producers.taken.fetch_add(n, SeqCst);
    }

    /// Gives `n` slots back and wakes waiting producers.
    ///
    /// All of them: a producer waiting for a batch may not fit where a
    /// single send would, and waking only the first could leave the other
    /// asleep with room free. Nobody pays for this unless someone waits.
    pub(crate) fn give_back(&self, n: usize) {
        self.returned.fetch_add(n, SeqCst);
        // Waiters read `returned` with SeqCst loads (`try_take` reads it
        // before it gives up), so the fetch_add above orders itself with
        // their registration: no fence needed.
        self.signal.notify_all_after_seqcst_rmw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_what_fits() {
        let capacity = Capacity::new(3);
        assert!(capacity.try_take(2));
        assert!(!capacity.try_take(2));
        assert!(capacity.try_take(1));
        assert!(!capacity.try_take(1));
        capacity.give_back(3);
        assert!(capacity.try_take(3));
        assert_eq!(capacity.held(), 3);
    }

    #[test]
    fn a_stale_copy_of_returned_is_refreshed_when_it_says_full() {
        let capacity = Capacity::new(2);
        assert!(capacity.try_take(2));
        // The producers' copy still says 0 returned.
        capacity.give_back(1);
        assert!(capacity.try_take(1), "room seen through the real counter");
        assert!(!capacity.try_take(1));
        assert_eq!(capacity.held(), 2);
    }

    #[test]
    fn forced_slots_count_against_the_limit() {
        let capacity = Capacity::new(2);
        capacity.force_take(3);
        assert_eq!(capacity.held(), 3);
        assert!(!capacity.try_take(1));
        capacity.give_back(2);
        assert!(capacity.try_take(1));
        assert_eq!(capacity.held(), 2);
    }
}

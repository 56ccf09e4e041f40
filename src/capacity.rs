//! The bound: a counting semaphore over ready, in-flight and delayed
//! messages.
//!
//! A slot is taken when a message is sent (or redriven) and given back when
//! it is acknowledged or dead-lettered. A message whose lease expires keeps
//! its slot all along, so it always has room to come back. Taking a slot is
//! one compare-and-swap; producers that find no room sleep on a [`Signal`].

use crate::padded::Padded;
use crate::signal::Signal;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

pub(crate) struct Capacity {
    limit: usize,
    held: Padded<AtomicUsize>,
    /// Producers wait here for room (or for the queue to close).
    pub(crate) signal: Signal,
}

impl Capacity {
    pub(crate) fn new(limit: usize) -> Self {
        Capacity {
            limit,
            held: Padded(AtomicUsize::new(0)),
            signal: Signal::default(),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Slots taken: ready + in flight + delayed, plus messages in transit.
    pub(crate) fn held(&self) -> usize {
        self.held.load(SeqCst)
    }

    /// Takes `n` slots if they are all free.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        let mut held = self.held.load(SeqCst);
        loop {
            if held > self.limit || n > self.limit - held {
                return false;
            }
            match self
                .held
                .compare_exchange_weak(held, held + n, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Takes `n` slots whatever the limit: messages restored from disk were
    /// admitted before.
    pub(crate) fn force_take(&self, n: usize) {
        self.held.fetch_add(n, SeqCst);
    }

    /// Gives `n` slots back and wakes waiting producers.
    ///
    /// All of them: a producer waiting for a batch may not fit where a
    /// single send would, and waking only the first could leave the other
    /// asleep with room free. Nobody pays for this unless someone waits.
    pub(crate) fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, SeqCst);
        self.signal.notify_all();
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
}

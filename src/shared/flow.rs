//! Pause, resume and the receive limits of an open queue (the rules are
//! in `controls.rs`).

use super::receive::Taken;
use super::Shared;
use crate::clock::Nanos;
use crate::controls::{Admit, RateLimit};
use crate::error::RecvError;
use crate::error::StorageError;
use crate::message::Queued;
use crate::wal::Record;

impl<T> Shared<T> {
    /// Pauses (`true`) or resumes the queue, once the change is recorded:
    /// receives wait while paused, sends go on. Resuming wakes every
    /// waiting receive, threads and tasks.
    /// Concurrent calls are applied in the order of their records.
    pub(crate) fn set_paused(&self, paused: bool) -> Result<(), StorageError> {
        let _in_order = self.controls.pausing.lock();
        let ticket = self.log(&[Record::Pause { paused }])?;
        self.durable(ticket)?;
        self.controls.set_paused(paused);
        if !paused {
            self.ready.signal.notify_all();
        }
        Ok(())
    }

    pub(crate) fn set_max_in_flight(&self, max: Option<usize>) {
        self.controls.set_max_in_flight(max);
        // A raised cap may let waiting receives go on.
        self.ready.signal.notify_all();
    }

    pub(crate) fn max_in_flight(&self) -> Option<usize> {
        self.controls.max_in_flight()
    }

    pub(crate) fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.controls.set_rate_limit(limit, self.now());
        self.ready.signal.notify_all();
    }

    pub(crate) fn rate_limit(&self) -> Option<RateLimit> {
        self.controls.rate_limit()
    }

    /// Lets a receive take up to `want` messages at `now` while a control
    /// is on: `take(n)` pops up to `n` from the ready queue (under the
    /// controls' lock) and returns how many it popped, as this does. A
    /// token's time is registered as a deadline, so that waiting receives
    /// wake for it.
    #[cold]
    pub(super) fn admit(
        &self,
        want: usize,
        now: Nanos,
        take: impl FnOnce(usize) -> usize,
    ) -> usize {
        let in_flight = || {
            let waiting = self.ready_len().saturating_add(self.delayed.len());
            self.capacity.held().saturating_sub(waiting)
        };
        match self.controls.admit(want, now, in_flight, take) {
            Admit::Took(n) => n,
            Admit::Wait => 0,
            Admit::WaitUntil(at) => {
                self.register_deadline(at);
                0
            }
        }
    }

    /// [`pop_one`](Self::pop_one) while a control is on: expired messages
    /// met on the way are buried after the controls' lock is released
    /// (burying tells the event hook, which may call back).
    #[cold]
    pub(super) fn pop_one_admitted(
        &self,
        now: Nanos,
    ) -> Result<Option<Taken<Queued<T>>>, RecvError> {
        let mut expired = Vec::new();
        let mut found = None;
        let mut take = |_| {
            while let Some(entry) = self.take_ready_one() {
                if !entry.expired(now) {
                    found = Some(entry);
                    return 1;
                }
                expired.push(entry);
            }
            0
        };
        if self.controls.limited() {
            self.admit(1, now, take);
        } else {
            // Ordered, with no limit: the order's own lock is enough.
            take(1);
        }
        for entry in expired {
            self.bury_expired(entry);
        }
        match found {
            Some(mut entry) => {
                entry.receive_count = entry.receive_count.saturating_add(1);
                self.receive_entry(entry, now)
            }
            None => Ok(None),
        }
    }

    /// A message left flight (settled, dead-lettered, or released): a
    /// receive waiting under the in-flight cap may go on. One load when
    /// no control is on. (A group's next message wakes a receive of its
    /// own: `order.rs`.)
    #[inline]
    pub(super) fn left_flight(&self) {
        if self.controls.limited() {
            self.ready.signal.notify_all();
        }
    }
}

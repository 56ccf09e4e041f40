//! Pause, resume and the receive limits of an open queue (the rules are
//! in `controls.rs`).

use super::Shared;
use crate::clock::Nanos;
use crate::controls::{Admit, RateLimit};
use crate::error::StorageError;
use crate::wal::Record;

impl<T> Shared<T> {
    /// Pauses (`true`) or resumes the queue, once the change is recorded:
    /// receives wait while paused, sends go on. Resuming wakes every
    /// waiting receive, threads and tasks.
    pub(crate) fn set_paused(&self, paused: bool) -> Result<(), StorageError> {
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

    /// How many of `want` messages a receive may take at `now` while a
    /// control is on (at least one, or zero: wait). A token's time is
    /// registered as a deadline, so that waiting receives wake for it.
    #[cold]
    pub(super) fn admit(&self, want: usize, now: Nanos) -> usize {
        match self.controls.admit(want, now, self.leases.len()) {
            Admit::Take(n) => n,
            Admit::Wait => 0,
            Admit::WaitUntil(at) => {
                self.register_deadline(at);
                0
            }
        }
    }

    /// A message left flight (settled, dead-lettered, or released): a
    /// receive waiting under the in-flight cap may go on. One load when
    /// no control is on.
    #[inline]
    pub(super) fn left_flight(&self) {
        if self.controls.on() {
            self.ready.signal.notify_all();
        }
    }
}

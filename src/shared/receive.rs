//! Receiving, and the deadlines that bring messages back.

use super::{Next, Shared, Wait};
use crate::batch::Batch;
use crate::clock::{self, Nanos};
use crate::delivery::{Delivery, Origin};
use crate::error::{RecvError, StorageError};
use crate::event::Event;
use crate::message::{BatchBuilder, Held, Queued};
use crate::stats::Counters;
use crate::wal::Record;
use crate::wal::Ticket;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages taken from the ready queue for a receive, with their receives
/// appended: leased once `ticket` (if any) is durable, put back if not.
pub(crate) struct Taken<E> {
    pub(crate) entries: E,
    /// The receive record to wait for; `None` if nothing waits.
    pub(crate) ticket: Option<Ticket>,
    /// When they were taken.
    now: Nanos,
}

impl<E> Taken<E> {
    /// Nothing taken, and nothing to wait for.
    pub(crate) fn nothing(now: Nanos) -> Taken<Option<E>> {
        Taken {
            entries: None,
            ticket: None,
            now,
        }
    }

    pub(crate) fn map<F>(self, f: impl FnOnce(E) -> F) -> Taken<F> {
        Taken {
            entries: f(self.entries),
            ticket: self.ticket,
            now: self.now,
        }
    }
}

impl<E> Taken<Option<E>> {
    /// What was taken, if anything.
    pub(crate) fn transpose(self) -> Option<Taken<E>> {
        let (ticket, now) = (self.ticket, self.now);
        self.entries.map(|entries| Taken {
            entries,
            ticket,
            now,
        })
    }
}

/// Receive records per frame in a batch (about 13 bytes each, far below the
/// smallest frame limit).
const RECEIVES_PER_FRAME: usize = 65_536;

impl<T> Shared<T> {
    /// What a new consumer handle's deliveries will hold: the queue, and
    /// the lease shard they use.
    pub(crate) fn origin(self: &Arc<Self>) -> Arc<Origin<T>> {
        Arc::new(Origin {
            shared: Arc::clone(self),
            home: self.leases.home(),
        })
    }

    /// Receives one message.
    pub(crate) fn receive_one(
        &self,
        origin: &Arc<Origin<T>>,
        wait: Wait,
    ) -> Result<Delivery<T>, RecvError> {
        self.receive_with(wait, |now| self.take_one(origin, now))
    }

    /// Receives up to `max` messages (at least one).
    pub(crate) fn receive_batch(
        &self,
        origin: &Arc<Origin<T>>,
        max: usize,
        wait: Wait,
    ) -> Result<Batch<T>, RecvError> {
        self.receive_with(wait, |now| self.take_batch(origin, max, now))
    }

    /// Receives one message for a worker of a pool: waits until one is
    /// ready (`Ok(Some(_))`), the queue is drained (`Closed`), `stop` is
    /// set, or `until_idle` is set and the queue is closed with nothing
    /// ready or delayed, all that is left being in flight (`Ok(None)`).
    /// Who sets a flag then calls [`wake_consumers`](Self::wake_consumers).
    pub(crate) fn receive_for_worker(
        &self,
        origin: &Arc<Origin<T>>,
        stop: &AtomicBool,
        until_idle: &AtomicBool,
    ) -> Result<Option<Delivery<T>>, RecvError> {
        self.receive_with(Wait::Forever, |now| {
            if stop.load(SeqCst) {
                return Ok(Some(None));
            }
            match self.take_one(origin, now)? {
                Some(delivery) => Ok(Some(Some(delivery))),
                None if until_idle.load(SeqCst) && self.nothing_to_take() => Ok(Some(None)),
                None => Ok(None),
            }
        })
    }

    /// Closed, and nothing ready or delayed (messages may be in flight).
    pub(super) fn nothing_to_take(&self) -> bool {
        self.is_closed() && self.ready_len() == 0 && self.delayed.len() == 0
    }

    /// Wakes every blocked consumer, so that it looks again (a worker pool
    /// stopping).
    pub(crate) fn wake_consumers(&self) {
        self.ready.signal.notify_all();
    }

    /// Tries `take` until it finds something, the queue is drained, or the
    /// wait runs out.
    fn receive_with<R>(
        &self,
        wait: Wait,
        take: impl Fn(Nanos) -> Result<Option<R>, RecvError>,
    ) -> Result<R, RecvError> {
        let attempt = || {
            let now = self.now_for_tick();
            self.tick(now);
            match take(now) {
                Ok(Some(taken)) => Some(Ok(taken)),
                Ok(None) => self.is_drained().then_some(Err(RecvError::Closed)),
                Err(error) => Some(Err(error)),
            }
        };
        let signal = &self.ready.signal;
        match wait {
            Wait::No => attempt().unwrap_or(Err(RecvError::Empty)),
            Wait::Forever => signal
                .wait(None, || self.next_wake(), attempt)
                .unwrap_or(Err(RecvError::Timeout)),
            Wait::Until(deadline) => signal
                .wait(Some(deadline), || self.next_wake(), attempt)
                .unwrap_or(Err(RecvError::Timeout)),
        }
    }

    /// Leases the oldest ready message, if any, once its receive is
    /// recorded. (The parts of [`pop_one`](Self::pop_one) and
    /// [`lease_one`](Self::lease_one), without moving the message between
    /// them: this is the hot path.)
    fn take_one(
        &self,
        origin: &Arc<Origin<T>>,
        now: Nanos,
    ) -> Result<Option<Delivery<T>>, RecvError> {
        if self.controls.on() {
            // Pause, the in-flight cap or the rate limit: admitted first.
            let Some(taken) = self.pop_one_admitted(now)? else {
                return Ok(None);
            };
            let durable = self.durable(taken.ticket);
            return self.lease_one(origin, taken, durable).map(Some);
        }
        let Some(entry) = self.pop_ready(now) else {
            return Ok(None);
        };
        let ticket = match self.record_receive(&entry) {
            Ok(ticket) => ticket,
            Err(error) => {
                self.unreceive(vec![entry], now);
                return Err(RecvError::Storage(error));
            }
        };
        let now = self.lease_from(ticket, now);
        if let Err(error) = self.durable(ticket) {
            self.unreceive(vec![entry], now);
            return Err(RecvError::Storage(error));
        }
        Ok(Some(self.lease_entry(origin, entry, now)))
    }

    /// The oldest ready message that has not expired, its receive counted.
    /// A tick moves expired messages out first; this catches one that
    /// expired while another thread held the tick.
    #[inline(always)]
    fn pop_ready(&self, now: Nanos) -> Option<Queued<T>> {
        loop {
            let mut entry = self.ready.pop()?;
            if !entry.expired(now) {
                entry.receive_count = entry.receive_count.saturating_add(1);
                return Some(entry);
            }
            self.bury_expired(entry);
        }
    }

    /// Appends the receive of a message popped by
    /// [`pop_ready`](Self::pop_ready); returns the ticket to wait for.
    #[inline(always)]
    fn record_receive(&self, entry: &Queued<T>) -> Result<Option<Ticket>, StorageError> {
        if self.journal.is_none() {
            return Ok(None);
        }
        self.log_receive(&[Record::Receive {
            id: entry.id.0,
            receive_count: entry.receive_count,
        }])
    }

    /// The time a lease taken at `now` runs from: now again if its receive
    /// waited for the disk (`ticket`), so that the wait does not shorten it.
    #[inline(always)]
    fn lease_from(&self, ticket: Option<Ticket>, now: Nanos) -> Nanos {
        match ticket {
            None => now,
            Some(_) => self.now_for_tick(),
        }
    }

    /// Puts a popped message in flight under a lease from `now`.
    #[inline(always)]
    fn lease_entry(&self, origin: &Arc<Origin<T>>, entry: Queued<T>, now: Nanos) -> Delivery<T> {
        let deadline = self.lease_deadline(now);
        let delivery = self.lease(origin, entry.into_held(), deadline);
        self.register_deadline(deadline);
        delivery
    }

    /// Takes the oldest ready message, if any, and appends its receive.
    /// It is leased by [`lease_one`](Self::lease_one) once the receive is
    /// durable (`ticket`, if the queue waits for that).
    pub(crate) fn pop_one(&self, now: Nanos) -> Result<Option<Taken<Queued<T>>>, RecvError> {
        if self.controls.on() {
            return self.pop_one_admitted(now);
        }
        let Some(entry) = self.pop_ready(now) else {
            return Ok(None);
        };
        self.receive_entry(entry, now)
    }

    /// Appends the receive of `entry`, taken from the ready queue with its
    /// receive counted. Always
    /// inlined: on the hot path, a call here moves the entry once more
    /// (measured with callgrind).
    #[inline(always)]
    pub(super) fn receive_entry(
        &self,
        entry: Queued<T>,
        now: Nanos,
    ) -> Result<Option<Taken<Queued<T>>>, RecvError> {
        match self.record_receive(&entry) {
            Ok(ticket) => Ok(Some(Taken {
                entries: entry,
                ticket,
                now,
            })),
            Err(error) => {
                self.unreceive(vec![entry], now);
                Err(RecvError::Storage(error))
            }
        }
    }

    /// Leases a message taken by [`pop_one`](Self::pop_one), once its
    /// receive is `durable` (put back if that failed).
    pub(crate) fn lease_one(
        &self,
        origin: &Arc<Origin<T>>,
        taken: Taken<Queued<T>>,
        durable: Result<(), StorageError>,
    ) -> Result<Delivery<T>, RecvError> {
        let now = self.lease_from(taken.ticket, taken.now);
        if let Err(error) = durable {
            self.unreceive(vec![taken.entries], now);
            return Err(RecvError::Storage(error));
        }
        Ok(self.lease_entry(origin, taken.entries, now))
    }

    /// Leases up to `max` of the oldest ready messages as one batch, if
    /// any is ready. Their receives are recorded (as one frame) before the
    /// batch is handed out.
    fn take_batch(
        &self,
        origin: &Arc<Origin<T>>,
        max: usize,
        now: Nanos,
    ) -> Result<Option<Batch<T>>, RecvError> {
        let Some(taken) = self.pop_batch(max, now)? else {
            return Ok(None);
        };
        let durable = self.durable(taken.ticket);
        self.lease_batch(origin, taken, durable).map(Some)
    }

    /// Takes up to `max` of the oldest ready messages, if any, and appends
    /// their receives; [`lease_batch`](Self::lease_batch) leases them.
    pub(crate) fn pop_batch(
        &self,
        max: usize,
        now: Nanos,
    ) -> Result<Option<Taken<BatchBuilder<T>>>, RecvError> {
        let mut batch = BatchBuilder::with_capacity(max.min(self.ready_len()).max(1));
        let mut pop = |max: usize| {
            self.take_ready(max, |mut entry| {
                entry.receive_count = entry.receive_count.saturating_add(1);
                entry.next_lease();
                batch.push(entry);
            })
        };
        let taken = match self.controls.limited() {
            false => pop(max),
            true => self.admit(max, now, pop),
        };
        if taken == 0 {
            return Ok(None);
        }
        let mut ticket = None;
        if self.journal.is_some() {
            match self.log_receives(&batch) {
                Ok(logged) => ticket = logged,
                Err(error) => {
                    self.unreceive(batch.into_queued(), now);
                    return Err(RecvError::Storage(error));
                }
            }
        }
        Ok(Some(Taken {
            entries: batch,
            ticket,
            now,
        }))
    }

    /// Leases a batch taken by [`pop_batch`](Self::pop_batch), once its
    /// receives are `durable` (put back if that failed).
    pub(crate) fn lease_batch(
        &self,
        origin: &Arc<Origin<T>>,
        taken: Taken<BatchBuilder<T>>,
        durable: Result<(), StorageError>,
    ) -> Result<Batch<T>, RecvError> {
        let now = self.lease_from(taken.ticket, taken.now);
        if let Err(error) = durable {
            self.unreceive(taken.entries.into_queued(), now);
            return Err(RecvError::Storage(error));
        }
        let deadline = self.lease_deadline(now);
        let batch = Arc::new(taken.entries.finish());
        let token = self
            .leases
            .insert_batch(origin.home, Arc::clone(&batch), deadline);
        self.register_deadline(deadline);
        Ok(Batch::new(Arc::clone(origin), batch, token))
    }

    /// Puts back messages taken for a receive that was dropped before it
    /// leased them (a task's), at the front of the ready queue where they
    /// were: their receive counts, already appended, are appended again as
    /// they were, so that a reopen counts no receive.
    pub(crate) fn abandon_receive(&self, entries: Vec<Queued<T>>) {
        if self.journal.is_some() {
            let records: Vec<Record<'_>> = entries
                .iter()
                .map(|entry| Record::Receive {
                    id: entry.id.0,
                    receive_count: entry.receive_count.saturating_sub(1),
                })
                .collect();
            for chunk in records.chunks(RECEIVES_PER_FRAME) {
                // A failure poisons the journal and is reported there; the
                // messages go back in memory all the same.
                let _ = self.log(chunk);
            }
        }
        let entries: Vec<Queued<T>> = entries
            .into_iter()
            .map(|mut entry| {
                entry.receive_count = entry.receive_count.saturating_sub(1);
                entry
            })
            .collect();
        self.untake(entries);
        self.ready.signal.notify_all();
    }

    /// Appends a receive's record; returns the ticket to wait for, unless
    /// the queue was opened with `durable_receives(false)`.
    fn log_receive(&self, records: &[Record<'_>]) -> Result<Option<Ticket>, StorageError> {
        let ticket = self.log(records)?;
        Ok(self.receive_ticket(ticket))
    }

    /// The ticket of a receive to wait for: none if receives do not wait.
    fn receive_ticket(&self, ticket: Option<Ticket>) -> Option<Ticket> {
        match &self.journal {
            Some(journal) if !journal.durable_receives() => None,
            _ => ticket,
        }
    }

    /// Records the receives of a batch, in frames of at most
    /// `RECEIVES_PER_FRAME` records; returns the last one's ticket to wait
    /// for, as [`log_receive`](Self::log_receive).
    fn log_receives(&self, batch: &BatchBuilder<T>) -> Result<Option<Ticket>, StorageError> {
        let records: Vec<Record<'_>> = batch
            .receives()
            .map(|(id, receive_count)| Record::Receive {
                id: id.0,
                receive_count,
            })
            .collect();
        let mut ticket = None;
        for chunk in records.chunks(RECEIVES_PER_FRAME) {
            ticket = self.log(chunk)?;
        }
        Ok(self.receive_ticket(ticket))
    }

    /// The deadline of a lease granted at `now`, a coarse reading.
    fn lease_deadline(&self, now: Nanos) -> Nanos {
        now.saturating_add(self.coarse_lag)
            .saturating_add(clock::duration_nanos(self.config.visibility_timeout))
    }

    /// Puts `entry` in flight under a new lease and hands out its delivery.
    fn lease(&self, origin: &Arc<Origin<T>>, entry: Held<T>, deadline: Nanos) -> Delivery<T> {
        self.leases
            .insert(origin.home, entry, deadline, |entry, token| {
                Delivery::new(Arc::clone(origin), entry, token)
            })
    }

    /// Receives that could not be recorded are undone: back to the queue.
    fn unreceive(&self, entries: Vec<Queued<T>>, now: Nanos) {
        for mut entry in entries {
            entry.receive_count -= 1;
            self.push_ready(entry, now);
        }
        self.ready.signal.notify_all();
    }

    /// Moves whatever is due at `now`: expired leases are released (with
    /// backoff, or to the dead-letter queue), due delayed messages become
    /// ready. Each happens as of the time it came due, however late the
    /// tick: a backoff runs from the lease's expiry. Messages made visible
    /// in one tick go in order of the time they became visible, then of id.
    pub(crate) fn tick(&self, now: Nanos) {
        if now < self.next_deadline.load(SeqCst) {
            return;
        }
        let Some(guard) = self.ticking.try_lock() else {
            return; // another thread is on it
        };
        self.next_deadline.store(Nanos::MAX, SeqCst);
        let mut expired = Vec::new();
        let mut due = Vec::new();
        let mut expiring = Vec::new();
        let next = self
            .leases
            .expire(now, &mut expired)
            .min(self.delayed.pop_due(now, &mut due))
            .min(self.expiry.pop_due(now, &mut expiring));
        self.next_deadline.fetch_min(next, SeqCst);
        drop(guard);
        if !expiring.is_empty() {
            self.expire(expiring, &mut due, now);
        }

        expired.sort_by_key(|(at, entry)| (*at, entry.id));
        let mut visible = due;
        for (expired_at, entry) in expired {
            Counters::bump(&self.counters.expired, 1);
            let (id, receive_count) = (entry.id, entry.receive_count);
            self.emit(|| Event::LeaseExpired {
                queue: self.name(),
                id,
                receive_count,
            });
            // A failed record poisons the journal and is reported there;
            // the message still moves on in memory.
            match self.after_failure(entry, None, expired_at) {
                Next::Dead(entry, reason) => {
                    let _ = self.bury(entry, reason, expired_at, None);
                }
                Next::VisibleAt(at, entry) => {
                    let _ = self.log(&[Record::Release {
                        id: id.0,
                        visible_at: at,
                        error: None,
                    }]);
                    if at <= now {
                        visible.push((at, entry.into_queued()));
                    } else {
                        self.hold_until(at, entry.into_queued());
                    }
                }
            }
        }
        visible.sort_by_key(|(at, entry)| (*at, entry.id));
        for (at, entry) in visible {
            self.push_ready(entry, at);
        }
        // Also when nothing moved: a consumer that read `next_deadline`
        // while it was reset must recompute how long to sleep.
        self.ready.signal.notify_all();
    }

    /// The next instant a sleeping consumer should look again.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.instant_of(self.next_deadline.load(SeqCst))
    }

    /// The instant the queue's clock reads `at` (`None` for never).
    pub(super) fn instant_of(&self, at: Nanos) -> Option<Instant> {
        if at == Nanos::MAX {
            return None;
        }
        let wait = Duration::from_nanos(at.saturating_sub(self.now()));
        Instant::now().checked_add(wait)
    }
}

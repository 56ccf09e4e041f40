//! Settling deliveries: ack, release (nack, fail, retry_after, drop),
//! extend, and dead-lettering.

use super::{Next, Shared};
use crate::clock::{self, Nanos};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::error::{SettleError, StorageError};
use crate::event::Event;
use crate::message::{BatchMessages, Batched, Entry, Held, MessageId};
use crate::stats::Counters;
use crate::wal::{ReasonRef, Record, Ticket};

/// A settlement's record, appended and not yet waited for: `None` when
/// there is nothing to wait for (no journal, or a release that retries).
pub(crate) type Logged = Option<Ticket>;
use std::sync::Arc;
use std::time::Duration;

/// Ack records per frame in a batch ack (9 bytes each).
const ACKS_PER_FRAME: usize = 65_536;

impl<T> Shared<T> {
    pub(crate) fn ack(&self, id: MessageId, token: u64) -> Result<(), SettleError> {
        self.ack_logged(id, token)
            .and_then(|logged| self.settled(logged))
    }

    /// [`ack`](Self::ack) without waiting for the record: returns it (a
    /// task waits with [`durable_async`](Self::durable_async)).
    pub(crate) fn ack_logged(&self, id: MessageId, token: u64) -> Result<Logged, SettleError> {
        let now = self.now_coarse();
        self.tick(now);
        let mut group = None;
        self.leases.ack(id, token, now, |entry| {
            if let Some(its) = entry.group() {
                group = Some(Arc::clone(its));
            }
        })?;
        let logged = self.log(&[Record::Ack { id: id.0 }]);
        // Its group moves on only after its ack is appended: a group's
        // next receive is then always logged after it, so no reopen can
        // bring this message back after the next one was received.
        self.left_group(group, id);
        self.free_slots(1);
        logged.map_err(SettleError::Storage)
    }

    /// Acknowledges every current lease of `leases`, skipping expired
    /// ones; returns how many, and the record to wait for. One capacity
    /// release, one wait for the disk.
    pub(crate) fn ack_batch_logged(
        &self,
        leases: &[(MessageId, u64)],
    ) -> Result<(usize, Logged), SettleError> {
        let now = self.now_coarse();
        self.tick(now);
        let removed = self.leases.ack_many(leases, now);
        let acked: Vec<MessageId> = removed.iter().map(|entry| entry.id).collect();
        if acked.is_empty() {
            return Ok((0, None));
        }
        let logged = self.log_acks(&acked);
        // After the acks are appended (see `ack_logged`).
        removed.iter().for_each(|entry| self.left_queue(entry));
        drop(removed);
        self.free_slots(acked.len());
        let logged = logged.map_err(SettleError::Storage)?;
        Ok((acked.len(), logged))
    }

    /// Acknowledges the batch whose lease is `token` (named by its first
    /// message, `id`): one capacity release, one wait for the disk.
    pub(crate) fn ack_batch_lease(&self, id: MessageId, token: u64) -> Result<(), SettleError> {
        (self.ack_batch_lease_logged(id, token)).and_then(|logged| self.settled(logged))
    }

    /// [`ack_batch_lease`](Self::ack_batch_lease) without waiting.
    pub(crate) fn ack_batch_lease_logged(
        &self,
        id: MessageId,
        token: u64,
    ) -> Result<Logged, SettleError> {
        let now = self.now_coarse();
        self.tick(now);
        let batch = self.leases.remove_batch(id, token, now, true)?;
        let mut logged = Ok(None);
        if self.journal.is_some() {
            let ids: Vec<MessageId> = batch.ids().collect();
            logged = self.log_acks(&ids);
        }
        // After the acks are appended (see `ack_logged`).
        (0..batch.len()).for_each(|i| self.left_queue(batch.entry(i)));
        self.free_slots(batch.len());
        logged.map_err(SettleError::Storage)
    }

    /// Records the acks of `ids`, in frames of at most `ACKS_PER_FRAME`
    /// records; returns the ticket of the last (not waited for).
    fn log_acks(&self, ids: &[MessageId]) -> Result<Option<Ticket>, StorageError> {
        let mut logged = Ok(None);
        if self.journal.is_some() {
            for chunk in ids.chunks(ACKS_PER_FRAME) {
                let records: Vec<Record<'_>> =
                    chunk.iter().map(|id| Record::Ack { id: id.0 }).collect();
                logged = self.log(&records);
                if logged.is_err() {
                    break;
                }
            }
        }
        logged
    }

    /// Ends the lease of a batch early: each message is retried after
    /// `delay` (or its backoff), or dead-lettered if it has used up its
    /// receives; `error` is recorded as each one's failed attempt. `ours`
    /// is the settling [`Batch`](crate::Batch)'s reference to the
    /// messages, given up so that they can leave the batch's store.
    /// Reports the first failure to record any of them; returns the
    /// record to wait for of the last message it dead-letters (not
    /// waited for).
    pub(crate) fn release_batch_logged(
        &self,
        id: MessageId,
        token: u64,
        delay: Option<Duration>,
        error: Option<String>,
        ours: Batched<T>,
    ) -> Result<Logged, SettleError> {
        let now = self.now();
        self.tick(now);
        let batch = self.leases.remove_batch(id, token, now, false);
        drop(ours);
        let mut first_error = Ok(None);
        for entry in BatchMessages::into_held(batch?) {
            let released = self.release_entry(entry, delay, error.clone(), now);
            first_error = match (first_error, released) {
                (Ok(last), Ok(logged)) => Ok(logged.max(last)),
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
        }
        first_error
    }

    /// Replaces the lease of a batch by one lease per message (see
    /// [`LeaseTable::split`](crate::lease::LeaseTable::split)).
    pub(crate) fn split_batch<R>(
        &self,
        id: MessageId,
        token: u64,
        ours: Batched<T>,
        deliver: impl FnMut(&Held<T>, u64) -> R,
    ) -> Result<Vec<R>, Batched<T>> {
        let now = self.now();
        self.tick(now);
        self.leases.split(id, token, now, ours, deliver)
    }

    /// Ends a lease early: the message is retried after `delay` (or the
    /// backoff), or dead-lettered if it has used up its receives.
    pub(crate) fn release(
        &self,
        id: MessageId,
        token: u64,
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), SettleError> {
        (self.release_logged(id, token, delay, error)).and_then(|logged| self.settled(logged))
    }

    /// [`release`](Self::release) without waiting for the record of a
    /// dead-lettering (a release that retries waits for nothing).
    pub(crate) fn release_logged(
        &self,
        id: MessageId,
        token: u64,
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<Logged, SettleError> {
        let now = self.now();
        self.tick(now);
        let entry = self.leases.remove(id, token, now)?;
        self.release_entry(entry, delay, error, now)
    }

    /// Where a message whose lease was ended early at `now` goes next.
    fn release_entry(
        &self,
        mut entry: Held<T>,
        delay: Option<Duration>,
        error: Option<String>,
        now: Nanos,
    ) -> Result<Logged, SettleError> {
        let id = entry.id;
        if let Some(error) = &error {
            entry.push_error(error.clone());
        }
        Counters::bump(&self.counters.nacked, 1);
        match self.after_failure(entry, delay.map(clock::duration_nanos), now) {
            Next::Dead(entry, reason) => {
                let logged = self.bury(entry, reason, now, error);
                logged.map_err(SettleError::Storage)
            }
            Next::VisibleAt(due, entry) => {
                // Not waited for: if it is lost, the message comes back
                // ready anyway, only without this backoff and error text.
                let logged = self.log(&[Record::Release {
                    id: id.0,
                    visible_at: due,
                    error: error.as_deref(),
                }]);
                self.place(due, entry.into_queued(), now);
                self.left_flight();
                // Nothing to wait for.
                logged.map(|_| None).map_err(SettleError::Storage)
            }
        }
    }

    pub(crate) fn extend(
        &self,
        id: MessageId,
        token: u64,
        by: Duration,
    ) -> Result<(), SettleError> {
        self.extend_to(id, token, by).map(drop)
    }

    /// [`extend`](Self::extend), returning the lease's new deadline.
    pub(crate) fn extend_to(
        &self,
        id: MessageId,
        token: u64,
        by: Duration,
    ) -> Result<Nanos, SettleError> {
        let now = self.now();
        self.tick(now);
        let deadline = now.saturating_add(clock::duration_nanos(by));
        self.leases.extend(id, token, now, deadline)?;
        self.register_deadline(deadline);
        Ok(deadline)
    }

    /// The deadline of lease `token` on `id`, if it is current.
    pub(crate) fn lease_deadline_of(&self, id: MessageId, token: u64) -> Option<Nanos> {
        let now = self.now();
        self.tick(now);
        self.leases.deadline(id, token, now)
    }

    pub(crate) fn reject(
        &self,
        id: MessageId,
        token: u64,
        reason: String,
    ) -> Result<(), SettleError> {
        (self.reject_logged(id, token, reason)).and_then(|logged| self.settled(logged))
    }

    /// [`reject`](Self::reject) without waiting for the record.
    pub(crate) fn reject_logged(
        &self,
        id: MessageId,
        token: u64,
        reason: String,
    ) -> Result<Logged, SettleError> {
        let now = self.now();
        self.tick(now);
        let entry = self.leases.remove(id, token, now)?;
        let logged = self.bury(entry, DeadLetterReason::Rejected(reason), now, None);
        logged.map_err(SettleError::Storage)
    }

    /// Waits for a settlement's record, if it was logged.
    pub(crate) fn settled(&self, logged: Logged) -> Result<(), SettleError> {
        self.durable(logged).map_err(SettleError::Storage)
    }

    /// Where a message goes after a failed attempt at `at`.
    pub(super) fn after_failure(&self, entry: Held<T>, delay: Option<Nanos>, at: Nanos) -> Next<T> {
        if self.used_up(&entry) {
            let reason = DeadLetterReason::MaxReceives(entry.receive_count);
            return Next::Dead(entry, reason);
        }
        let delay = delay.unwrap_or_else(|| {
            let backoff = self.config.backoff.delay(entry.receive_count, &self.random);
            clock::duration_nanos(backoff)
        });
        Next::VisibleAt(at.saturating_add(delay), entry)
    }

    /// Whether a message has had all the receives it is allowed (its own
    /// `max_receives`, or the queue's): the rule of the live queue and of
    /// a restore alike.
    pub(super) fn used_up<P>(&self, entry: &Entry<P>) -> bool {
        let max = entry.max_receives().unwrap_or(self.config.max_receives);
        entry.receive_count >= max
    }

    /// Moves a message to the dead-letter queue at `at`; `error` is the
    /// failure text that sent it there, if any (already in its errors).
    pub(super) fn bury(
        &self,
        entry: Held<T>,
        reason: DeadLetterReason,
        at: Nanos,
        error: Option<String>,
    ) -> Result<Option<Ticket>, StorageError> {
        let id = entry.id;
        let group = entry.group().cloned();
        let letter = DeadLetter::new(entry, reason, at);
        let event_reason = self
            .config
            .on_event
            .is_some()
            .then(|| letter.reason().clone());
        crate::observe::dead_lettered(&self.config.name, id, letter.reason());
        let logged = self.dead.insert_logged(letter, |letter| {
            self.append(&[Record::DeadLetter {
                id: id.0,
                at,
                reason: match letter.reason() {
                    DeadLetterReason::MaxReceives(n) => ReasonRef::MaxReceives(*n),
                    DeadLetterReason::Rejected(text) => ReasonRef::Rejected(text),
                    DeadLetterReason::Expired => ReasonRef::Expired,
                },
                error: error.as_deref(),
            }])
        });
        let logged = logged.map_err(|e| self.failed(e));
        Counters::bump(&self.counters.dead_lettered, 1);
        // Its group moves on, now that it is recorded as a dead letter.
        self.left_group(group, id);
        self.free_slots(1);
        if let Some(reason) = event_reason {
            self.emit(|| Event::DeadLettered {
                queue: self.name(),
                id,
                reason,
            });
        }
        logged
    }
}

//! Cancelling a message that no consumer holds: ready or delayed.
//!
//! A cancel takes the message out of the ready queue (see
//! `ReadyQueue::remove`) or the delay queue, then records it as gone with
//! an `ACK` record (FORMAT.md: an ack removes a message whatever its
//! state), so a reopen does not bring it back. Its idempotency key stays
//! remembered for the rest of its window, as an acknowledged message's
//! does.

use super::Shared;
use crate::error::CancelError;
use crate::message::{MessageId, Queued};
use crate::queue::Cancelled;
use crate::stats::Counters;
use crate::wal::{Record, Ticket};

impl<T> Shared<T> {
    /// Cancels message `id` if it is ready or delayed.
    pub(crate) fn cancel(&self, id: MessageId) -> Result<Cancelled, CancelError> {
        let (found, ticket) = self.cancel_logged(id)?;
        self.durable(ticket).map_err(CancelError::Storage)?;
        Ok(found)
    }

    /// [`cancel`](Self::cancel) without waiting for its record: returns
    /// it (a task waits with `durable_async`).
    pub(crate) fn cancel_logged(
        &self,
        id: MessageId,
    ) -> Result<(Cancelled, Option<Ticket>), CancelError> {
        let now = self.now();
        // Whatever came due is ready before we look.
        self.tick(now);
        let removed = self.ready.remove(id).or_else(|| self.order.remove(id));
        let (entry, found, due) = if let Some(entry) = removed {
            (entry, Cancelled::Ready, now)
        } else if let Some((due, entry)) = self.delayed.remove(id) {
            (entry, Cancelled::Delayed, due)
        } else {
            return Err(CancelError::NotFound(id));
        };
        let ticket = match self.append(&[Record::Ack { id: id.0 }]) {
            Ok(ticket) => ticket,
            Err(error) => {
                // Not recorded: put it back where it was.
                self.put_back(entry, found, due, now);
                return Err(CancelError::Storage(self.failed(error)));
            }
        };
        Counters::bump(&self.counters.cancelled, 1);
        self.left_queue(&entry);
        drop(entry);
        self.free_slots(1);
        Ok((found, ticket))
    }

    /// Cancels the message sent with idempotency key `key`, if the key is
    /// remembered (within its window) and its message ready or delayed.
    pub(crate) fn cancel_key(&self, key: &str) -> Result<(MessageId, Cancelled), CancelError> {
        let id = self.id_of_key(key)?;
        self.cancel(id).map(|found| (id, found))
    }

    /// The id of the message sent with `key`, if the key is remembered.
    pub(crate) fn id_of_key(&self, key: &str) -> Result<MessageId, CancelError> {
        (self.dedup)
            .id_of(key, self.now())
            .ok_or_else(|| CancelError::UnknownKey(key.to_owned()))
    }

    fn put_back(&self, entry: Queued<T>, found: Cancelled, due: u64, now: u64) {
        match found {
            Cancelled::Ready => {
                self.push_ready(entry, now);
                self.ready.signal.notify_one();
            }
            Cancelled::Delayed => self.hold_until(due, entry),
        }
    }
}

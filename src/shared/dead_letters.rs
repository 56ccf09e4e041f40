//! The dead-letter queue's operations that move messages: redrive, purge.

use super::{NoRoom, Shared, Wait};
use crate::codec;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::error::{RedriveError, StorageError};
use crate::event::Event;
use crate::message::{MessageId, Payload};
use crate::stats::Counters;
use crate::wal::{Record, Ticket};
use serde::Serialize;

impl<T> Shared<T> {
    /// The dead-letter store, after processing what came due (an expiry
    /// may dead-letter a message).
    pub(crate) fn dead_letters(&self) -> &DeadLetterStore<T> {
        self.tick(self.now());
        &self.dead
    }

    /// Deletes every dead letter; returns how many.
    pub(crate) fn purge(&self) -> Result<usize, StorageError> {
        let (purged, ticket) = self
            .dead
            .clear_logged(|| self.append(&[Record::PurgeDeadLetters]))
            .map_err(|e| self.failed(e))?;
        Counters::bump(&self.counters.purged, purged as u64);
        self.durable(ticket)?;
        Ok(purged)
    }

    /// Deletes the dead letter `id`, if there is one; returns it. Recorded
    /// as an `ACK` (which removes a message in any state on replay).
    pub(crate) fn remove_dead_letter(
        &self,
        id: MessageId,
    ) -> Result<Option<DeadLetter<T>>, StorageError> {
        let (letter, ticket) = self.remove_dead_letter_logged(id)?;
        self.durable(ticket)?;
        Ok(letter)
    }

    /// [`remove_dead_letter`](Self::remove_dead_letter) without waiting
    /// for its record.
    pub(crate) fn remove_dead_letter_logged(
        &self,
        id: MessageId,
    ) -> Result<(Option<DeadLetter<T>>, Option<crate::wal::Ticket>), StorageError> {
        let removed = self
            .dead
            .remove_logged(id, |_| self.append(&[Record::Ack { id: id.0 }]));
        match removed {
            None => Ok((None, None)),
            Some(Err(error)) => Err(self.failed(error)),
            Some(Ok((letter, ticket))) => {
                Counters::bump(&self.counters.purged, 1);
                Ok((Some(letter), ticket))
            }
        }
    }
}

impl<T: Serialize> Shared<T> {
    /// Moves one dead letter back to the ready queue with a fresh receive
    /// count, optionally with a corrected payload.
    pub(crate) fn redrive(
        &self,
        id: MessageId,
        replacement: Option<T>,
    ) -> Result<(), RedriveError> {
        let ticket = self.redrive_logged(id, replacement)?;
        self.durable(ticket).map_err(RedriveError::Storage)
    }

    /// [`redrive`](Self::redrive) without waiting for its record to be
    /// durable: returns what to wait for.
    fn redrive_logged(
        &self,
        id: MessageId,
        replacement: Option<T>,
    ) -> Result<Option<Ticket>, RedriveError> {
        if !self.dead.contains(id) {
            return Err(RedriveError::NotFound(id));
        }
        let encoded = match (&self.journal, &replacement) {
            (Some(_), Some(payload)) => Some(codec::encode(payload).map_err(RedriveError::Encode)?),
            _ => None,
        };
        if let Some(size) = encoded.as_ref().map(Vec::len) {
            let max = self.config.max_message_bytes;
            if size > max {
                return Err(RedriveError::TooLarge { size, max });
            }
        }
        match self.take_slots(1, Wait::No) {
            Ok(_) => {}
            Err(NoRoom::Closed) => return Err(RedriveError::Closed),
            Err(_) => return Err(RedriveError::Full { redriven: 0 }),
        }
        let now = self.now();
        let removed = self.dead.remove_logged(id, |_| {
            self.append(&[Record::Redrive {
                id: id.0,
                at: now,
                payload: encoded.as_deref(),
            }])
        });
        let (letter, ticket) = match removed {
            Some(Ok(removed)) => removed,
            Some(Err(error)) => {
                self.free_slots(1);
                return Err(RedriveError::Storage(self.failed(error)));
            }
            None => {
                self.free_slots(1); // redriven or purged meanwhile
                return Err(RedriveError::NotFound(id));
            }
        };
        let mut entry = letter.into_entry().into_queued();
        entry.receive_count = 0;
        entry.set_errors(Vec::new());
        entry.clear_expiry();
        if let Some(payload) = replacement {
            entry.payload = Payload::Owned(payload);
        }
        Counters::bump(&self.counters.redriven, 1);
        // Back in its group, by its id (`order.rs`).
        self.join_order(&entry);
        self.push_ready(entry, now);
        self.ready.signal.notify_one();
        self.emit(|| Event::Redriven {
            queue: self.name(),
            id,
        });
        Ok(ticket)
    }

    /// Redrives each of `ids` in turn, stopping at the first refusal, and
    /// waits once for all their records to be durable (one group commit,
    /// not one per message) before it reports any as redriven.
    pub(crate) fn redrive_each(&self, ids: Vec<MessageId>) -> Result<usize, RedriveError> {
        let mut redriven = 0;
        let mut last = None;
        let mut refusal = None;
        for id in ids {
            match self.redrive_logged(id, None) {
                Ok(ticket) => {
                    redriven += 1;
                    last = ticket.or(last);
                }
                Err(RedriveError::NotFound(_)) => {} // purged or redriven meanwhile
                Err(RedriveError::Full { .. }) => {
                    refusal = Some(RedriveError::Full { redriven });
                    break;
                }
                Err(other) => {
                    refusal = Some(other);
                    break;
                }
            }
        }
        let committed = self.durable(last);
        match (refusal, committed) {
            (Some(failed @ RedriveError::Storage(_)), _) => Err(failed),
            (_, Err(failed)) => Err(RedriveError::Storage(failed)),
            (Some(refusal), Ok(())) => Err(refusal),
            (None, Ok(())) => Ok(redriven),
        }
    }
}

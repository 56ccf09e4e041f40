//! Times to live: a message sent with one
//! ([`SendOptions::ttl`](crate::SendOptions::ttl)) that no consumer has
//! received when it runs out is dead-lettered with
//! [`DeadLetterReason::Expired`], as of its expiry time.
//!
//! The expiry heap (`expiry.rs`) says which ids come due; the tick then
//! takes those messages out of wherever they wait (the delayed messages it
//! has just popped, the delay queue, the ready queue: one pass over each,
//! only when something expires) and buries them. A message received once
//! is out of reach of its time to live: it was delivered, and its retries
//! follow `max_receives`. Receive also checks each message it pops, for
//! one that expired while another thread held the tick.

use super::Shared;
use crate::clock::Nanos;
use crate::dead_letter::DeadLetterReason;
use crate::message::{MessageId, Queued};
use std::collections::HashMap;

impl<T> Shared<T> {
    /// Dead-letters the never-received messages among `expiring` (ids
    /// with their expiry time, come due at `now`); `due` holds the delayed
    /// messages this tick is about to make ready.
    pub(super) fn expire(
        &self,
        expiring: Vec<(Nanos, MessageId)>,
        due: &mut Vec<(Nanos, Queued<T>)>,
        now: Nanos,
    ) {
        let at: HashMap<MessageId, Nanos> = expiring.into_iter().map(|(at, id)| (id, at)).collect();
        let picked = |entry: &Queued<T>| at.contains_key(&entry.id) && entry.expired(now);
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(due)
            .into_iter()
            .partition(|(_, entry)| picked(entry));
        *due = kept;
        let mut gone: Vec<Queued<T>> = gone.into_iter().map(|(_, entry)| entry).collect();
        gone.extend(
            self.delayed
                .remove_where(picked)
                .into_iter()
                .map(|(_, e)| e),
        );
        gone.extend(self.ready.remove_where(picked));
        if self.order.len() > 0 {
            gone.extend(self.order.remove_where(picked));
        }
        gone.sort_by_key(|entry| (entry.expires_at(), entry.id));
        for entry in gone {
            self.bury_expired(entry);
        }
    }

    /// Dead-letters a message whose time to live ran out, as of then. A
    /// failed record poisons the journal and is reported there; a reopen
    /// then finds the message expired again.
    pub(super) fn bury_expired(&self, entry: Queued<T>) {
        let at = entry.expires_at().unwrap_or_else(|| self.now());
        let _ = self.bury(entry.into_held(), DeadLetterReason::Expired, at, None);
    }

    /// Watches a message sent (or restored) with a time to live.
    pub(super) fn expire_at(&self, at: Nanos, id: MessageId) {
        self.expiry.push(at, id);
        self.register_deadline(at);
    }
}

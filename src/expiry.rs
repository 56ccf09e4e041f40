//! Times to live: which messages expire when, if no consumer has received
//! them by then.
//!
//! A min-heap of (expiry time, id), one entry per message sent with a time
//! to live ([`SendOptions::ttl`](crate::SendOptions::ttl)). The heap holds
//! ids only: the message itself stays in the ready or delay queue. When an
//! entry comes due, the queue's tick looks for the message there and
//! dead-letters it if it was never received (see `Shared::expire`); an
//! entry whose message was received, acknowledged or cancelled meanwhile
//! finds nothing and is dropped. Only sends with a time to live and ticks
//! with one due take this lock.

use crate::clock::Nanos;
use crate::message::MessageId;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Default)]
pub(crate) struct ExpiryQueue {
    heap: Mutex<BinaryHeap<Reverse<(Nanos, u64)>>>,
}

impl ExpiryQueue {
    /// Message `id` expires at `at` unless received before.
    pub(crate) fn push(&self, at: Nanos, id: MessageId) {
        self.heap.lock().push(Reverse((at, id.0)));
    }

    /// Moves every entry due at or before `now` to `due`, earliest first.
    /// Returns the next expiry left, or `Nanos::MAX`.
    pub(crate) fn pop_due(&self, now: Nanos, due: &mut Vec<(Nanos, MessageId)>) -> Nanos {
        let mut heap = self.heap.lock();
        while let Some(&Reverse((at, id))) = heap.peek() {
            if at > now {
                return at;
            }
            heap.pop();
            due.push((at, MessageId(id)));
        }
        Nanos::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_what_is_due_earliest_first() {
        let expiry = ExpiryQueue::default();
        expiry.push(30, MessageId(1));
        expiry.push(10, MessageId(2));
        expiry.push(50, MessageId(3));
        let mut due = Vec::new();
        assert_eq!(expiry.pop_due(9, &mut due), 10);
        assert!(due.is_empty());
        assert_eq!(expiry.pop_due(30, &mut due), 50);
        assert_eq!(due, [(10, MessageId(2)), (30, MessageId(1))]);
        assert_eq!(expiry.pop_due(u64::MAX, &mut due), Nanos::MAX);
        assert_eq!(due.len(), 3);
    }
}

//! Reading the next ready messages without leasing them.

use super::Shared;
use crate::clock::{self, Nanos};
use crate::message::MessageId;
use std::time::SystemTime;

/// A ready message seen by [`Queue::peek`](crate::Queue::peek): a copy,
/// not a delivery. It stays ready, and may be received (or settled, or
/// cancelled) by the time the caller looks at it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Peeked<T> {
    /// The message's id.
    pub id: MessageId,
    /// Its receives so far (retries have at least one).
    pub receive_count: u32,
    /// When it was first sent.
    pub enqueued_at: SystemTime,
    /// A copy of the message.
    pub message: T,
}

impl<T: Clone> Shared<T> {
    /// Copies of up to `max` of the next ready messages, in the order
    /// receives would take them. Runs the tick first, as a receive does.
    pub(crate) fn peek(&self, max: usize) -> Vec<Peeked<T>> {
        let now = self.now();
        self.tick(now);
        let mut seen = Vec::with_capacity(max.min(self.ready.len()));
        self.ready.peek(max, |entry| {
            if entry.expired(now) {
                return;
            }
            seen.push(Peeked {
                id: entry.id,
                receive_count: entry.receive_count,
                enqueued_at: wall(entry.enqueued_at),
                message: T::clone(&entry.payload),
            });
        });
        seen
    }
}

fn wall(at: Nanos) -> SystemTime {
    clock::from_nanos(at)
}

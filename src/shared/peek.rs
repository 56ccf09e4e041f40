//! Reading the next ready messages without leasing them.

use super::Shared;
use crate::clock::{self, Nanos};
use crate::message::{MessageId, Queued};
use crate::order::Priority;
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
    /// receives would take them (by priority, the starvation rule aside;
    /// a message held back by its group is not next). Runs the tick
    /// first, as a receive does.
    pub(crate) fn peek(&self, max: usize) -> Vec<Peeked<T>> {
        let now = self.now();
        self.tick(now);
        let copy = |entry: &Queued<T>| Peeked {
            id: entry.id,
            receive_count: entry.receive_count,
            enqueued_at: wall(entry.enqueued_at),
            message: T::clone(&entry.payload),
        };
        let mut plain = Vec::with_capacity(max.min(self.ready.len()));
        self.ready.peek(max, |entry| {
            if !entry.expired(now) {
                plain.push(copy(entry));
            }
        });
        if !self.controls.ordered() {
            return plain;
        }
        let mut levels: [Vec<Peeked<T>>; Priority::LEVELS] = Default::default();
        self.order.peek(max, |level, entry| {
            if !entry.expired(now) {
                levels[level].push(copy(entry));
            }
        });
        // The normal level merges the plain lane by id, as receives do.
        let [high, normal, low] = levels;
        let mut seen = high;
        let (mut plain, mut normal) = (plain.into_iter().peekable(), normal.into_iter().peekable());
        loop {
            let next = match (plain.peek(), normal.peek()) {
                (Some(p), Some(n)) if p.id < n.id => plain.next(),
                (Some(_), Some(_)) | (None, Some(_)) => normal.next(),
                (Some(_), None) => plain.next(),
                (None, None) => break,
            };
            seen.extend(next);
        }
        seen.extend(low);
        seen.truncate(max);
        seen
    }
}

fn wall(at: Nanos) -> SystemTime {
    clock::from_nanos(at)
}

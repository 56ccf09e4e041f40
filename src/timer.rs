//! Delayed messages: sent with a delay, or waiting out a retry backoff.
//!
//! A min-heap ordered by due time (ties broken by arrival order, so that
//! messages due at the same instant keep their order). Popping what is due
//! costs O(due · log n). Only delayed sends and retries take this lock; the
//! plain send → recv → ack path never does.

use crate::clock::Nanos;
use crate::message::{MessageId, Queued};
use parking_lot::Mutex;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub(crate) struct DelayQueue<T> {
    heap: Mutex<Heap<T>>,
    len: AtomicUsize,
}

struct Heap<T> {
    items: BinaryHeap<Reverse<Delayed<T>>>,
    arrivals: u64,
}

struct Delayed<T> {
    due: Nanos,
    arrival: u64,
    entry: Queued<T>,
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.arrival) == (other.due, other.arrival)
    }
}
impl<T> Eq for Delayed<T> {}
impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Delayed<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.arrival).cmp(&(other.due, other.arrival))
    }
}

impl<T> DelayQueue<T> {
    pub(crate) fn new() -> Self {
        DelayQueue {
            heap: Mutex::new(Heap {
                items: BinaryHeap::new(),
                arrivals: 0,
            }),
            len: AtomicUsize::new(0),
        }
    }

    /// How many messages wait for their time.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Holds `entry` back until `due`.
    pub(crate) fn push(&self, due: Nanos, entry: Queued<T>) {
        let mut heap = self.heap.lock();
        let arrival = heap.arrivals;
        heap.arrivals += 1;
        heap.items.push(Reverse(Delayed {
            due,
            arrival,
            entry,
        }));
        drop(heap);
        self.len.fetch_add(1, Relaxed);
    }

    /// Takes the delayed message `id` out, if it is here; returns it and
    /// when it was due. O(delayed messages), for rare calls (a
    /// cancellation).
    pub(crate) fn remove(&self, id: MessageId) -> Option<(Nanos, Queued<T>)> {
        self.remove_where(|entry| entry.id == id).pop()
    }

    /// Takes every delayed message that `remove` picks, with its due time
    /// (expired messages). O(delayed messages).
    pub(crate) fn remove_where(
        &self,
        mut remove: impl FnMut(&Queued<T>) -> bool,
    ) -> Vec<(Nanos, Queued<T>)> {
        let mut heap = self.heap.lock();
        if !heap.items.iter().any(|Reverse(d)| remove(&d.entry)) {
            return Vec::new();
        }
        let items = std::mem::take(&mut heap.items).into_vec();
        let (removed, kept): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|Reverse(d)| remove(&d.entry));
        heap.items = BinaryHeap::from(kept);
        drop(heap);
        self.len.fetch_sub(removed.len(), Relaxed);
        removed
            .into_iter()
            .map(|Reverse(d)| (d.due, d.entry))
            .collect()
    }

    /// Moves every message due at or before `now` to `due` with its due
    /// time, earliest first. Returns the next due time left, or `Nanos::MAX`.
    pub(crate) fn pop_due(&self, now: Nanos, due: &mut Vec<(Nanos, Queued<T>)>) -> Nanos {
        let mut heap = self.heap.lock();
        while heap.items.peek().is_some_and(|Reverse(d)| d.due <= now) {
            let Reverse(item) = heap.items.pop().expect("peeked");
            self.len.fetch_sub(1, Relaxed);
            due.push((item.due, item.entry));
        }
        heap.items.peek().map_or(Nanos::MAX, |Reverse(d)| d.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Entry;

    fn entry(id: u64) -> Queued<()> {
        Entry::new(MessageId(id), (), 0, None)
    }

    #[test]
    fn pops_due_messages_in_due_then_arrival_order() {
        let delays = DelayQueue::new();
        delays.push(30, entry(1));
        delays.push(10, entry(2));
        delays.push(10, entry(3));
        delays.push(50, entry(4));
        let mut due = Vec::new();
        assert_eq!(delays.pop_due(9, &mut due), 10);
        assert!(due.is_empty());
        assert_eq!(delays.pop_due(30, &mut due), 50);
        let ids: Vec<u64> = due.iter().map(|(_, e)| e.id.0).collect();
        assert_eq!(ids, [2, 3, 1]);
        assert_eq!(delays.len(), 1);
    }

    #[test]
    fn remove_takes_one_message_out_and_keeps_the_order_of_the_rest() {
        let delays = DelayQueue::new();
        for (due, id) in [(30, 1), (10, 2), (10, 3), (50, 4)] {
            delays.push(due, entry(id));
        }
        assert_eq!(
            delays.remove(MessageId(2)).map(|(due, e)| (due, e.id.0)),
            Some((10, 2))
        );
        assert!(delays.remove(MessageId(2)).is_none());
        assert_eq!(delays.len(), 3);
        let mut due = Vec::new();
        delays.pop_due(100, &mut due);
        let ids: Vec<u64> = due.iter().map(|(_, e)| e.id.0).collect();
        assert_eq!(ids, [3, 1, 4]);
    }
}

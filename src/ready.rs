//! The ready queue: messages visible to consumers, in FIFO order.
//!
//! An unbounded crossbeam channel (a lock-free linked list of blocks);
//! its bound is the queue's capacity, enforced before anything is pushed.
//! Consumers that find it empty sleep on a [`Signal`].
//!
//! For the age of the oldest ready message, every push takes a sequence
//! number and writes its time into a ring at that position, with the
//! sequence number beside it. Pops follow push order, so the oldest ready
//! message is the one at position `pushed - len` (the channel counts what
//! it holds, so consumers need no counter of their own). A reader takes
//! that slot's time only if the slot holds that sequence number: a push
//! (or a whole batch) that took its positions and has not written them
//! yet is never read as a time of zero or of one lap before; the reader
//! looks further along, at younger messages, instead. The ring has one
//! slot per unit of capacity, up to [`MAX_AGE_SLOTS`]; beyond that many
//! ready messages the age reported is that of a younger message. Under
//! concurrent pushes the sequence order and the channel order can differ
//! by the few messages in transit; when the queue is still the age is
//! exact.

use crate::clock::Nanos;
use crate::message::Queued;
use crate::padded::Padded;
use crate::signal::Signal;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{fence, AtomicU64, Ordering::Acquire, Ordering::Relaxed};
use std::sync::atomic::{Ordering::Release, Ordering::SeqCst};
use std::time::Duration;

/// The most slots the age ring uses (16 MiB).
pub(crate) const MAX_AGE_SLOTS: usize = 1 << 20;

/// How far past `pushed - len` a reader looks for a slot already written.
const MAX_AGE_PROBES: u64 = 64;

/// No sequence number: a slot being written, or never written.
const WRITING: u64 = u64::MAX;

/// When the message pushed as `sequence` became ready.
struct AgeSlot {
    sequence: AtomicU64,
    since: AtomicU64,
}

pub(crate) struct ReadyQueue<T> {
    sender: Sender<Queued<T>>,
    receiver: Receiver<Queued<T>>,
    /// Bumped by producers.
    pushed: Padded<AtomicU64>,
    ready_since: Box<[AgeSlot]>,
    /// Consumers wait here for a message (or a deadline, or the end).
    pub(crate) signal: Signal,
}

impl<T> ReadyQueue<T> {
    /// A ready queue for up to `capacity` messages whose waiting consumers
    /// spin for up to `spin` (see [`Signal::with_spin`]).
    pub(crate) fn new(capacity: usize, spin: Duration) -> Self {
        let slots = capacity.clamp(1, MAX_AGE_SLOTS).next_power_of_two();
        let (sender, receiver) = crossbeam_channel::unbounded();
        ReadyQueue {
            sender,
            receiver,
            pushed: Padded::default(),
            ready_since: (0..slots)
                .map(|_| AgeSlot {
                    sequence: AtomicU64::new(WRITING),
                    since: AtomicU64::new(0),
                })
                .collect(),
            signal: Signal::with_spin(spin),
        }
    }

    fn slot(&self, sequence: u64) -> &AgeSlot {
        &self.ready_since[sequence as usize & (self.ready_since.len() - 1)]
    }

    /// Writes the time of `sequence` into its slot (a seqlock write: the
    /// slot says `WRITING` while its time changes).
    fn stamp(&self, sequence: u64, now: Nanos) {
        let slot = self.slot(sequence);
        slot.sequence.store(WRITING, Relaxed);
        fence(Release);
        slot.since.store(now, Relaxed);
        slot.sequence.store(sequence, Release);
    }

    /// The time in the slot of `sequence`, if the slot holds it.
    fn stamped(&self, sequence: u64) -> Option<Nanos> {
        let slot = self.slot(sequence);
        if slot.sequence.load(Acquire) != sequence {
            return None;
        }
        let since = slot.since.load(Relaxed);
        fence(Acquire);
        (slot.sequence.load(Relaxed) == sequence).then_some(since)
    }

    /// Makes `entry` visible; the caller wakes a consumer.
    pub(crate) fn push(&self, entry: Queued<T>, now: Nanos) {
        let sequence = self.pushed.fetch_add(1, SeqCst);
        self.stamp(sequence, now);
        // Cannot fail: `self.receiver` keeps the channel connected.
        let _ = self.sender.send(entry);
    }

    /// Makes several entries visible, in order, all as of `now`; the caller
    /// wakes consumers.
    pub(crate) fn push_many(&self, entries: impl ExactSizeIterator<Item = Queued<T>>, now: Nanos) {
        let first = self.pushed.fetch_add(entries.len() as u64, SeqCst);
        for (sequence, entry) in (first..).zip(entries) {
            self.stamp(sequence, now);
            let _ = self.sender.send(entry);
        }
    }

    /// Takes the oldest ready message, if any.
    pub(crate) fn pop(&self) -> Option<Queued<T>> {
        self.receiver.try_recv().ok()
    }

    /// How many messages are ready.
    pub(crate) fn len(&self) -> usize {
        self.receiver.len()
    }

    /// When the oldest ready message became ready, if any is; `now` if
    /// the ready messages are all still being pushed.
    pub(crate) fn oldest_since(&self, now: Nanos) -> Option<Nanos> {
        let len = self.receiver.len() as u64;
        if len == 0 {
            return None;
        }
        // Read after the length: a push counted in `len` is counted here.
        let pushed = self.pushed.load(SeqCst);
        let oldest = pushed.saturating_sub(len);
        let probes = (pushed - oldest).min(MAX_AGE_PROBES);
        let since = (oldest..oldest + probes).find_map(|sequence| self.stamped(sequence));
        Some(since.unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Entry, MessageId};

    fn entry(id: u64) -> Queued<u32> {
        Entry::new(MessageId(id), id as u32, 0, None)
    }

    #[test]
    fn the_oldest_age_comes_from_the_oldest_ready_message() {
        let ready = ReadyQueue::new(4, Duration::ZERO);
        assert_eq!(ready.oldest_since(500), None);
        ready.push(entry(1), 100);
        ready.push_many([entry(2), entry(3)].into_iter(), 200);
        assert_eq!(ready.oldest_since(500), Some(100));
        ready.pop();
        assert_eq!(ready.oldest_since(500), Some(200));
    }

    #[test]
    fn a_position_taken_and_not_yet_written_is_not_read_as_a_time() {
        let ready = ReadyQueue::new(2, Duration::ZERO);
        // Two laps of the two-slot ring, then all popped.
        for id in 0..4 {
            ready.push(entry(id), 100 + id);
            ready.pop();
        }
        // A push that took position 4 (slot 0, last written for position
        // 2) and is in the channel before its time is written.
        let sequence = ready.pushed.fetch_add(1, SeqCst);
        let _ = ready.sender.send(entry(4));
        assert_eq!(ready.oldest_since(900), Some(900), "not position 2's time");
        ready.stamp(sequence, 104);
        assert_eq!(ready.oldest_since(900), Some(104));
    }
}

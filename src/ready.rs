//! The ready queue: messages visible to consumers, in FIFO order.
//!
//! An unbounded crossbeam channel (a lock-free linked list of blocks);
//! its bound is the queue's capacity, enforced before anything is pushed.
//! Consumers that find it empty sleep on a [`Signal`].
//!
//! For the age of the oldest ready message, every push takes a sequence
//! number and writes its time into a ring at that position. Pops follow
//! push order, so the oldest ready message is the one at position
//! `pushed - len` (the channel counts what it holds, so consumers need no
//! counter of their own), and its time is in the ring as long as it holds
//! at least as many slots as there are ready messages. The ring has one
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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

/// The most slots the age ring uses (8 MiB).
pub(crate) const MAX_AGE_SLOTS: usize = 1 << 20;

pub(crate) struct ReadyQueue<T> {
    sender: Sender<Queued<T>>,
    receiver: Receiver<Queued<T>>,
    /// Bumped by producers.
    pushed: Padded<AtomicU64>,
    ready_since: Box<[AtomicU64]>,
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
            ready_since: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            signal: Signal::with_spin(spin),
        }
    }

    fn slot(&self, sequence: u64) -> &AtomicU64 {
        &self.ready_since[sequence as usize & (self.ready_since.len() - 1)]
    }

    /// Makes `entry` visible; the caller wakes a consumer.
    pub(crate) fn push(&self, entry: Queued<T>, now: Nanos) {
        let sequence = self.pushed.fetch_add(1, SeqCst);
        self.slot(sequence).store(now, Relaxed);
        // Cannot fail: `self.receiver` keeps the channel connected.
        let _ = self.sender.send(entry);
    }

    /// Makes several entries visible, in order, all as of `now`; the caller
    /// wakes consumers.
    pub(crate) fn push_many(&self, entries: impl ExactSizeIterator<Item = Queued<T>>, now: Nanos) {
        let first = self.pushed.fetch_add(entries.len() as u64, SeqCst);
        for (sequence, entry) in (first..).zip(entries) {
            self.slot(sequence).store(now, Relaxed);
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

    /// When the oldest ready message became ready, if any is.
    pub(crate) fn oldest_since(&self) -> Option<Nanos> {
        let len = self.receiver.len() as u64;
        if len == 0 {
            return None;
        }
        // Read after the length: a push counted in `len` is counted here.
        let popped = self.pushed.load(SeqCst).saturating_sub(len);
        Some(self.slot(popped).load(Relaxed))
    }
}

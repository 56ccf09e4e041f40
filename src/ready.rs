//! The ready queue: messages visible to consumers, in FIFO order.
//!
//! An unbounded crossbeam channel (a lock-free linked list of blocks);
//! its bound is the queue's capacity, enforced before anything is pushed.
//! Consumers that find it empty sleep on a [`Signal`].
//!
//! The channel carries chunks: one message, or a whole batch sent at once.
//! A batch then costs the channel one push and one pop, and producer and
//! consumer hand each other one cache line per batch instead of one per
//! message. A consumer that takes fewer messages than a chunk holds keeps
//! the rest at the front, where the next pop looks first. Consumers pop
//! under one lock (producers never take it): without it, a consumer could
//! take a later chunk while another is still putting back the rest of an
//! earlier one, and see messages out of order. loom checks this hand-off
//! (`src/loom_tests.rs`), with the channel replaced by a stand-in that
//! keeps its contract (`src/sync/channel.rs`).
//!
//! For the age of the oldest ready message, every push takes a sequence
//! number and writes its time into a ring at that position, with the
//! sequence number beside it. Pops follow push order, so the oldest ready
//! message is the one at position `popped` (counted under the consumers'
//! lock, a plain store). A reader takes
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
use crate::message::{MessageId, Queued};
use crate::padded::Padded;
use crate::signal::Signal;
use crate::sync::atomic::{fence, AtomicU64, Ordering::Acquire, Ordering::Relaxed};
use crate::sync::atomic::{Ordering::Release, Ordering::SeqCst};
use crate::sync::channel::{self, Receiver, Sender};
use crate::sync::Mutex;
use std::time::Duration;
use std::vec;

/// The most slots the age ring uses (16 MiB).
pub(crate) const MAX_AGE_SLOTS: usize = 1 << 20;

/// How far past `popped` a reader looks for a slot already written.
const MAX_AGE_PROBES: u64 = 64;

/// No sequence number: a slot being written, or never written.
const WRITING: u64 = u64::MAX;

/// When the message pushed as `sequence` became ready.
struct AgeSlot {
    sequence: AtomicU64,
    since: AtomicU64,
}

pub(crate) struct ReadyQueue<T> {
    sender: Sender<Chunk<T>>,
    receiver: Receiver<Chunk<T>>,
    /// What consumers alone touch: the rest of a chunk partly taken.
    front: Padded<Mutex<vec::IntoIter<Queued<T>>>>,
    /// Messages popped, ever: written under the `front` lock.
    popped: Padded<AtomicU64>,
    /// Messages pushed, ever: bumped by producers before they push.
    pushed: Padded<AtomicU64>,
    ready_since: Box<[AgeSlot]>,
    /// Consumers wait here for a message (or a deadline, or the end).
    pub(crate) signal: Signal,
}

/// Frees the buffer of a chunk taken to the end (a drained iterator still
/// holds it, which could be a large batch's).
fn free_if_drained<T>(front: &mut vec::IntoIter<T>) {
    if front.len() == 0 {
        *front = Vec::new().into_iter();
    }
}

/// What the channel carries.
enum Chunk<T> {
    One(Queued<T>),
    /// Several messages, in order (never fewer than two).
    Many(vec::IntoIter<Queued<T>>),
}

impl<T> ReadyQueue<T> {
    /// A ready queue for up to `capacity` messages whose waiting consumers
    /// spin for up to `spin` (see [`Signal::with_spin`]).
    pub(crate) fn new(capacity: usize, spin: Duration) -> Self {
        let slots = capacity.clamp(1, MAX_AGE_SLOTS).next_power_of_two();
        let (sender, receiver) = channel::unbounded();
        ReadyQueue {
            sender,
            receiver,
            front: Padded(Mutex::new(Vec::new().into_iter())),
            popped: Padded::default(),
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
        let _ = self.sender.send(Chunk::One(entry));
    }

    /// Makes several entries visible, in order, all as of `now`, as one
    /// chunk; the caller wakes consumers.
    pub(crate) fn push_many(&self, mut entries: Vec<Queued<T>>, now: Nanos) {
        let first = self.pushed.fetch_add(entries.len() as u64, SeqCst);
        for sequence in first..first + entries.len() as u64 {
            self.stamp(sequence, now);
        }
        let chunk = match entries.len() {
            0 => return,
            1 => Chunk::One(entries.pop().expect("one entry")),
            _ => Chunk::Many(entries.into_iter()),
        };
        let _ = self.sender.send(chunk);
    }

    /// Takes the oldest ready message, if any. ([`pop_many`](Self::pop_many)
    /// of one does the same, about 10 ns slower on this hot path.) Always
    /// inlined: with the ordered path calling it too, the compiler stopped
    /// inlining it into the plain receive (+48 instructions a receive,
    /// callgrind).
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<Queued<T>> {
        let mut front = self.front.lock();
        let entry = match front.next() {
            Some(entry) => {
                free_if_drained(&mut front);
                entry
            }
            None => match self.receiver.try_recv().ok()? {
                Chunk::One(entry) => entry,
                Chunk::Many(mut entries) => {
                    let entry = entries.next();
                    *front = entries;
                    entry?
                }
            },
        };
        self.count_popped(1);
        Some(entry)
    }

    /// The id of the oldest ready message, if any, which stays where it is
    /// (the ordered receive path compares it with its own: `order.rs`).
    pub(crate) fn front_id(&self) -> Option<MessageId> {
        let mut front = self.front.lock();
        if front.len() == 0 {
            *front = match self.receiver.try_recv().ok()? {
                Chunk::One(entry) => vec![entry].into_iter(),
                Chunk::Many(entries) => entries,
            };
        }
        front.as_slice().first().map(|entry| entry.id)
    }

    /// Takes up to `max` of the oldest ready messages, in order, handing
    /// each to `take`; returns how many.
    pub(crate) fn pop_many(&self, max: usize, mut take: impl FnMut(Queued<T>)) -> usize {
        let mut front = self.front.lock();
        let mut want = max;
        loop {
            if front.len() > 0 {
                let taken = want.min(front.len());
                front.by_ref().take(taken).for_each(&mut take);
                want -= taken;
            }
            if want == 0 {
                break;
            }
            match self.receiver.try_recv() {
                Ok(Chunk::One(entry)) => {
                    take(entry);
                    want -= 1;
                }
                Ok(Chunk::Many(entries)) => *front = entries,
                Err(_) => break,
            }
        }
        free_if_drained(&mut front);
        let popped = max - want;
        self.count_popped(popped);
        popped
    }

    /// Takes the ready message `id` out of the queue, wherever it is, and
    /// keeps the others in order: under the consumers' lock, it moves
    /// every message the channel holds to the front (where pops look
    /// first) and leaves out `id`. O(ready messages), for rare calls (a
    /// cancellation). The times in the age ring move with the messages
    /// kept, so the oldest age stays exact when no push is under way.
    pub(crate) fn remove(&self, id: MessageId) -> Option<Queued<T>> {
        self.remove_where(|entry| entry.id == id).pop()
    }

    /// Takes every ready message that `remove` picks out of the queue, in
    /// queue order, as [`remove`](Self::remove) does one (expired
    /// messages).
    pub(crate) fn remove_where(
        &self,
        mut remove: impl FnMut(&Queued<T>) -> bool,
    ) -> Vec<Queued<T>> {
        let mut front = self.front.lock();
        let mut all: Vec<Queued<T>> = std::mem::take(&mut *front).collect();
        while let Ok(chunk) = self.receiver.try_recv() {
            match chunk {
                Chunk::One(entry) => all.push(entry),
                Chunk::Many(entries) => all.extend(entries),
            }
        }
        // The message at index i of `all` was pushed as `popped + i`.
        let popped = self.popped.load(Relaxed);
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(all.len());
        let mut since = Vec::new();
        for (i, entry) in (0u64..).zip(all) {
            if remove(&entry) {
                removed.push(entry);
            } else {
                since.push(self.stamped(popped + i));
                kept.push(entry);
            }
        }
        if !removed.is_empty() {
            // Kept message j is now the one at `popped + removed + j`: a
            // later slot than its own (or the same), so writing from the
            // back reads each time before anything overwrites it.
            let first = popped + removed.len() as u64;
            for (j, since) in since.into_iter().enumerate().rev() {
                if let Some(since) = since {
                    self.stamp(first + j as u64, since);
                }
            }
        }
        *front = kept.into_iter();
        free_if_drained(&mut front);
        self.count_popped(removed.len());
        removed
    }

    /// Puts messages a pop took back at the front, in their order, as if
    /// they had not been taken: a receive dropped before it leased them
    /// (a task's) keeps their place. O(the rest of the front chunk). The
    /// age ring is not rewritten: until they are taken again, the oldest
    /// age may read another message's time.
    pub(crate) fn unpop(&self, entries: Vec<Queued<T>>) {
        if entries.is_empty() {
            return;
        }
        let mut front = self.front.lock();
        let n = entries.len() as u64;
        let mut all = entries;
        all.extend(std::mem::take(&mut *front));
        *front = all.into_iter();
        // Under the `front` lock, as `count_popped`.
        let popped = self.popped.load(Relaxed).saturating_sub(n);
        self.popped.store(popped, Release);
    }

    /// Shows up to `max` of the oldest ready messages, in order, to `see`,
    /// and leaves them where they are: under the consumers' lock, it
    /// moves chunks from the channel to the front (where pops look first)
    /// until the front holds `max` messages or the channel is empty. The
    /// order and the positions in the age ring do not change. O(messages
    /// at the front), for inspection.
    pub(crate) fn peek(&self, max: usize, mut see: impl FnMut(&Queued<T>)) {
        if max == 0 {
            return;
        }
        let mut front = self.front.lock();
        if front.len() < max {
            let mut all: Vec<Queued<T>> = std::mem::take(&mut *front).collect();
            while all.len() < max {
                match self.receiver.try_recv() {
                    Ok(Chunk::One(entry)) => all.push(entry),
                    Ok(Chunk::Many(entries)) => all.extend(entries),
                    Err(_) => break,
                }
            }
            *front = all.into_iter();
        }
        front.as_slice().iter().take(max).for_each(&mut see);
        free_if_drained(&mut front);
    }

    /// Counts `n` pops; called under the `front` lock, so a plain store
    /// (not a fence: a reader of a stale count takes the queue for a
    /// little longer than it is, never shorter).
    fn count_popped(&self, n: usize) {
        let popped = self.popped.load(Relaxed) + n as u64;
        self.popped.store(popped, Release);
    }

    /// How many messages are ready (counting those being pushed).
    pub(crate) fn len(&self) -> usize {
        let popped = self.popped.load(SeqCst);
        // Read after `popped`: every pop counted there was pushed before.
        (self.pushed.load(SeqCst) - popped) as usize
    }

    /// When the oldest ready message became ready, if any is; `now` if
    /// the ready messages are all still being pushed.
    pub(crate) fn oldest_since(&self, now: Nanos) -> Option<Nanos> {
        let oldest = self.popped.load(SeqCst);
        // Read after `popped`: every pop counted there was pushed before.
        let pushed = self.pushed.load(SeqCst);
        if pushed == oldest {
            return None;
        }
        let probes = (pushed - oldest).min(MAX_AGE_PROBES);
        let since = (oldest..oldest + probes).find_map(|sequence| self.stamped(sequence));
        Some(since.unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Entry;

    fn entry(id: u64) -> Queued<u32> {
        Entry::new(MessageId(id), id as u32, 0, None)
    }

    #[test]
    fn remove_takes_one_message_out_and_keeps_the_others_in_order() {
        let ready = ReadyQueue::new(8, Duration::ZERO);
        ready.push(entry(1), 100);
        ready.push_many(vec![entry(2), entry(3), entry(4)], 200);
        ready.push(entry(5), 300);
        assert_eq!(ready.pop().map(|e| e.id.0), Some(1));
        assert_eq!(ready.remove(MessageId(3)).map(|e| e.id.0), Some(3));
        assert!(ready.remove(MessageId(3)).is_none());
        assert!(ready.remove(MessageId(1)).is_none());
        assert_eq!(ready.len(), 3);
        ready.push(entry(6), 400);
        assert_eq!(ready.oldest_since(500), Some(200), "2 is the oldest");
        assert_eq!(ready.remove(MessageId(2)).map(|e| e.id.0), Some(2));
        assert_eq!(ready.oldest_since(500), Some(200), "4 came with it");
        assert_eq!(ready.remove(MessageId(4)).map(|e| e.id.0), Some(4));
        assert_eq!(ready.oldest_since(500), Some(300));
        let mut left = Vec::new();
        ready.pop_many(10, |e| left.push(e.id.0));
        assert_eq!(left, [5, 6]);
        assert_eq!((ready.len(), ready.oldest_since(500)), (0, None));
    }

    #[test]
    fn peek_shows_the_oldest_and_takes_nothing() {
        let ready = ReadyQueue::new(8, Duration::ZERO);
        let mut seen = Vec::new();
        ready.peek(3, |e| seen.push(e.id.0));
        assert!(seen.is_empty());
        ready.push(entry(1), 100);
        ready.push_many(vec![entry(2), entry(3), entry(4)], 200);
        ready.push(entry(5), 300);
        ready.peek(2, |e| seen.push(e.id.0));
        assert_eq!(seen, [1, 2]);
        seen.clear();
        ready.peek(usize::MAX, |e| seen.push(e.id.0));
        assert_eq!(seen, [1, 2, 3, 4, 5]);
        ready.peek(0, |_| unreachable!());
        assert_eq!((ready.len(), ready.oldest_since(500)), (5, Some(100)));
        let mut taken = Vec::new();
        ready.pop_many(10, |e| taken.push(e.id.0));
        assert_eq!(taken, [1, 2, 3, 4, 5], "in order, all still there");
    }

    #[test]
    fn the_oldest_age_comes_from_the_oldest_ready_message() {
        let ready = ReadyQueue::new(4, Duration::ZERO);
        assert_eq!(ready.oldest_since(500), None);
        ready.push(entry(1), 100);
        ready.push_many(vec![entry(2), entry(3)], 200);
        assert_eq!(ready.oldest_since(500), Some(100));
        ready.pop();
        assert_eq!(ready.oldest_since(500), Some(200));
    }

    fn ids(entries: &[Queued<u32>]) -> Vec<u64> {
        entries.iter().map(|entry| entry.id.0).collect()
    }

    #[test]
    fn chunks_are_taken_in_order_whole_or_in_part() {
        let ready = ReadyQueue::new(64, Duration::ZERO);
        ready.push(entry(0), 0);
        ready.push_many((1..6).map(entry).collect(), 0);
        ready.push_many(vec![entry(6)], 0);
        ready.push_many((7..10).map(entry).collect(), 0);
        ready.push_many(Vec::new(), 0);
        assert_eq!(ready.len(), 10);

        let mut taken = Vec::new();
        assert_eq!(
            ready.pop_many(3, |e| taken.push(e)),
            3,
            "across a chunk's edge"
        );
        assert_eq!(ids(&taken), [0, 1, 2]);
        assert_eq!(ready.pop().map(|e| e.id.0), Some(3), "the rest comes first");
        assert_eq!(ready.len(), 6);
        taken.clear();
        assert_eq!(ready.pop_many(5, |e| taken.push(e)), 5);
        assert_eq!(ids(&taken), [4, 5, 6, 7, 8]);
        taken.clear();
        assert_eq!(ready.pop_many(5, |e| taken.push(e)), 1);
        assert_eq!(ids(&taken), [9]);
        assert_eq!(ready.pop_many(5, |e| taken.push(e)), 0);
        assert!(ready.pop().is_none());
        assert_eq!(ready.len(), 0);
    }

    #[test]
    fn a_chunk_taken_to_the_end_leaves_no_buffer_behind() {
        let ready = ReadyQueue::new(1 << 12, Duration::ZERO);
        let chunk: Vec<Queued<u32>> = (0..1000).map(entry).collect();
        let buffer = chunk.as_ptr_range();
        let (start, end) = (buffer.start as usize, buffer.end as usize);
        let in_buffer = |ready: &ReadyQueue<u32>| {
            let at = ready.front.lock().as_slice().as_ptr() as usize;
            (start..=end).contains(&at)
        };
        ready.push_many(chunk, 0);
        let mut taken = Vec::new();
        ready.pop_many(999, |e| taken.push(e));
        assert!(in_buffer(&ready), "one message left in it");
        assert!(ready.pop().is_some());
        assert!(!in_buffer(&ready), "drained by pop: freed");

        let chunk: Vec<Queued<u32>> = (0..10).map(entry).collect();
        let buffer = chunk.as_ptr_range();
        let (start, end) = (buffer.start as usize, buffer.end as usize);
        ready.push_many(chunk, 0);
        ready.pop_many(10, |e| taken.push(e));
        let at = ready.front.lock().as_slice().as_ptr() as usize;
        assert!(!(start..=end).contains(&at), "drained by pop_many: freed");
    }

    #[test]
    fn consumers_splitting_chunks_see_messages_in_order() {
        // One producer sends batches; consumers take one or a few at a
        // time. Whatever the interleaving, each consumer sees increasing
        // ids, and together they see each once.
        let ready = ReadyQueue::new(1 << 12, Duration::ZERO);
        let total = 20_000u64;
        let taken: Vec<Vec<u64>> = std::thread::scope(|s| {
            let ready = &ready;
            s.spawn(move || {
                for first in (0..total).step_by(7) {
                    let last = (first + 7).min(total);
                    ready.push_many((first..last).map(entry).collect(), 0);
                }
            });
            let consumers: Vec<_> = (0..3usize)
                .map(|c| {
                    s.spawn(move || {
                        let mut seen = Vec::new();
                        let mut batch = Vec::new();
                        let deadline = std::time::Instant::now() + Duration::from_secs(20);
                        while ready.popped.load(SeqCst) < total {
                            assert!(std::time::Instant::now() < deadline, "stuck");
                            if c == 0 {
                                seen.extend(ready.pop().map(|e| e.id.0));
                            } else {
                                batch.clear();
                                ready.pop_many(c * 2, |e| batch.push(e));
                                seen.extend(ids(&batch));
                            }
                        }
                        seen
                    })
                })
                .collect();
            consumers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for seen in &taken {
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
        }
        let mut all: Vec<u64> = taken.concat();
        all.sort_unstable();
        assert_eq!(all, (0..total).collect::<Vec<_>>());
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
        let _ = ready.sender.send(Chunk::One(entry(4)));
        assert_eq!(ready.oldest_since(900), Some(900), "not position 2's time");
        ready.stamp(sequence, 104);
        assert_eq!(ready.oldest_since(900), Some(104));
    }
}

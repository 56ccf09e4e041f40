//! The live messages of a replay, in id order, in as little memory as a
//! million of them allow.
//!
//! A [`Live`] message is its id, times and receive count inline, its
//! payload as the replay holds it (the bytes for recovery, where they lie
//! for compaction: see `payload`), and the rarely used idempotency key,
//! error texts and dead-letter record behind one optional box: 56 bytes
//! for compaction, where a `BTreeMap` of whole messages took about 250
//! plus the payload (issue 10).
//!
//! [`LiveTable`] keeps them in one vector sorted by id. The log appends
//! messages in about id order (a producer takes its ids just before it
//! appends), so an insert is almost always a push. A message that arrives
//! after a higher id (two producers racing) goes to an unsorted tail,
//! merged in before the next lookup: sorting only the region from the
//! first out-of-order id on, which is as long as the race was. Removed
//! messages are marked gone and swept out once they are half the vector,
//! so the vector stays within twice the live messages.
//!
//! The vector reserves room for [`RESERVE_BYTES`] at once. Only the pages
//! written are ever backed by memory, but an allocation that large is one
//! the allocator maps on its own, grows in place (`mremap`) and unmaps
//! when freed. Grown from small, it was copied at each doubling and, with
//! glibc, left the last copies behind as free memory the process kept
//! (after a freed 18 MB table, glibc raises its thresholds so that the
//! next tables grow in its heap): 36 MB of RSS after a compaction of
//! 600,000 messages.

use super::payload::Hold;
use super::state::{DeadLettered, RecoveredKey};

/// Room a table reserves: above glibc's largest mmap threshold (32 MiB).
pub(crate) const RESERVE_BYTES: usize = (32 << 20) + (1 << 20);

/// A live message as a replay keeps it; `P`: how its payload is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live<P> {
    pub(crate) id: u64,
    pub(crate) enqueued_at: u64,
    pub(crate) visible_at: u64,
    pub(crate) receive_count: u32,
    /// Removed (an entry of [`LiveTable`] waiting to be swept out).
    gone: bool,
    pub(crate) payload: P,
    rare: Option<Box<Rare>>,
}

/// What few messages have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rare {
    pub(crate) key: Option<RecoveredKey>,
    /// Error texts of failed attempts, oldest first.
    pub(crate) errors: Vec<String>,
    pub(crate) dead: Option<DeadLettered>,
    /// Its own `max_receives`, if it was sent with one.
    pub(crate) max_receives: Option<u32>,
    /// When its time to live runs out, if it was sent with one.
    pub(crate) expires_at: Option<u64>,
    /// Its priority level, if not the normal one (an `OPTIONS` record).
    pub(crate) priority: Option<u8>,
    /// Its message group (an `OPTIONS` record).
    pub(crate) group: Option<String>,
    /// The file (index in a compaction's replay) of the record that
    /// created it, once a redrive put its payload in a later file; until
    /// then the payload's file says it (see [`Live::origin`]).
    pub(crate) origin: Option<u32>,
}

impl<P> Live<P> {
    pub(crate) fn new(id: u64, enqueued_at: u64, visible_at: u64, payload: P) -> Self {
        Live {
            id,
            enqueued_at,
            visible_at,
            receive_count: 0,
            gone: false,
            payload,
            rare: None,
        }
    }

    pub(crate) fn key(&self) -> Option<&RecoveredKey> {
        self.rare.as_ref()?.key.as_ref()
    }

    pub(crate) fn errors(&self) -> &[String] {
        self.rare.as_ref().map_or(&[], |r| &r.errors)
    }

    pub(crate) fn dead(&self) -> Option<&DeadLettered> {
        self.rare.as_ref()?.dead.as_ref()
    }

    /// The key, errors and dead-letter record, allocated on first use.
    pub(crate) fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Its own `max_receives`, if any.
    pub(crate) fn max_receives(&self) -> Option<u32> {
        self.rare.as_ref()?.max_receives
    }

    /// When its time to live runs out, if it has one.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.rare.as_ref()?.expires_at
    }

    /// Its priority level, if not the normal one.
    pub(crate) fn priority(&self) -> Option<u8> {
        self.rare.as_ref()?.priority
    }

    /// Its message group, if it has one.
    pub(crate) fn group(&self) -> Option<&str> {
        self.rare.as_ref()?.group.as_deref()
    }

    /// The file (index in a compaction's replay) of the record that
    /// created it.
    pub(crate) fn origin(&self) -> u32
    where
        P: Hold,
    {
        self.rare
            .as_ref()
            .and_then(|r| r.origin)
            .unwrap_or_else(|| self.payload.file())
    }

    /// Takes the key, errors and dead-letter record out.
    pub(crate) fn take_rare(&mut self) -> Rare {
        self.rare.take().map(|r| *r).unwrap_or_default()
    }
}

/// Live messages by id (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct LiveTable<P> {
    /// Sorted by id, ids unique, up to `sorted`; after it, the unsorted tail.
    entries: Vec<Live<P>>,
    sorted: usize,
    /// Entries marked gone.
    gone: usize,
    /// Messages replaced by a later one with the same id.
    pub(crate) replaced: u64,
}

impl<P> Default for LiveTable<P> {
    fn default() -> Self {
        LiveTable {
            entries: Vec::new(),
            sorted: 0,
            gone: 0,
            replaced: 0,
        }
    }
}

impl<P: Default> LiveTable<P> {
    /// Adds `m`, replacing any message with its id.
    pub(crate) fn insert(&mut self, m: Live<P>) {
        if self.entries.capacity() == 0 {
            self.entries
                .reserve_exact(RESERVE_BYTES / std::mem::size_of::<Live<P>>().max(1));
        }
        let in_order = self.sorted == self.entries.len()
            && self.entries.last().is_none_or(|last| last.id < m.id);
        self.entries.push(m);
        if in_order {
            self.sorted += 1;
        }
    }

    /// The live message `id`.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Live<P>> {
        self.settle();
        let at = self.entries.binary_search_by_key(&id, |m| m.id).ok()?;
        Some(&mut self.entries[at]).filter(|m| !m.gone)
    }

    /// Removes the live message `id`; gives back its key, errors and
    /// dead-letter record, and its payload.
    pub(crate) fn remove(&mut self, id: u64) -> Option<(Rare, P)> {
        let m = self.get_mut(id)?;
        m.gone = true;
        let payload = std::mem::take(&mut m.payload);
        let rare = m.take_rare();
        self.gone += 1;
        if self.gone > 64 && self.gone * 2 > self.entries.len() {
            self.entries.retain(|m| !m.gone);
            self.sorted = self.entries.len();
            self.gone = 0;
        }
        Some((rare, payload))
    }

    /// Removes the live messages `remove` says yes to; gives back their
    /// ids, key, errors and dead-letter records, and payloads.
    pub(crate) fn remove_where(
        &mut self,
        remove: impl Fn(&Live<P>) -> bool,
    ) -> Vec<(u64, Rare, P)> {
        self.settle();
        let mut removed = Vec::new();
        for m in self.entries.iter_mut().filter(|m| !m.gone && remove(m)) {
            m.gone = true;
            let payload = std::mem::take(&mut m.payload);
            removed.push((m.id, m.take_rare(), payload));
        }
        self.entries.retain(|m| !m.gone);
        self.sorted = self.entries.len();
        self.gone = 0;
        removed
    }

    /// Merges the unsorted tail in.
    pub(crate) fn settle(&mut self) {
        if self.sorted == self.entries.len() {
            return;
        }
        let first = self.entries[self.sorted..]
            .iter()
            .map(|m| m.id)
            .min()
            .unwrap_or(u64::MAX);
        let from = self.entries[..self.sorted].partition_point(|m| m.id < first);
        let region = &mut self.entries[from..];
        // Stable: of two entries with one id, the later stays after.
        region.sort_by_key(|m| m.id);
        let mut keep = vec![true; region.len()];
        for i in 1..region.len() {
            if region[i - 1].id == region[i].id {
                keep[i - 1] = false;
                match region[i - 1].gone {
                    true => self.gone -= 1,
                    false => self.replaced += 1,
                }
            }
        }
        let mut keep = keep.into_iter();
        let mut index = 0;
        self.entries.retain(|_| {
            index += 1;
            index <= from || keep.next().unwrap_or(true)
        });
        self.sorted = self.entries.len();
    }

    /// Empties the table but keeps its memory: a compaction's second
    /// replay reuses the first one's, whose pages are already backed
    /// (allocating it afresh faulted in and zeroed every page again).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.sorted = 0;
        self.gone = 0;
        self.replaced = 0;
    }

    /// Where the live message `id` is, searching from index `from` on:
    /// for ids looked up in increasing order, each search starting where
    /// the last one ended (a gallop, so about free for ids close together).
    /// Gives back where the next search starts, and the message's index
    /// (for [`at`](Self::at)) if it is live. Indexes hold until the table
    /// next changes.
    pub(crate) fn seek(&mut self, from: usize, id: u64) -> (usize, Option<usize>) {
        self.settle();
        let at = gallop(&self.entries, from, |m| m.id < id);
        let found = self.entries.get(at).filter(|m| m.id == id && !m.gone);
        (at, found.map(|_| at))
    }

    /// How many indexes [`seek`](Self::seek) may give.
    pub(crate) fn slots(&self) -> usize {
        self.entries.len()
    }

    /// The message at `index`, from [`seek`](Self::seek).
    pub(crate) fn at(&self, index: usize) -> &Live<P> {
        &self.entries[index]
    }

    /// Live messages in id order (after [`settle`](Self::settle)).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Live<P>> {
        debug_assert_eq!(self.sorted, self.entries.len(), "settle first");
        self.entries.iter().filter(|m| !m.gone)
    }

    /// Takes the live messages out in id order.
    pub(crate) fn into_iter(mut self) -> impl Iterator<Item = Live<P>> {
        self.settle();
        self.entries.into_iter().filter(|m| !m.gone)
    }

    /// How many are live.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.gone
    }
}

/// The first index from `from` on whose entry `before` says no to, in a
/// slice where `before` says yes to a prefix: steps of 1, 2, 4... from
/// `from`, then a binary search in the last step, so a search that ends
/// near where it starts costs a few comparisons.
pub(crate) fn gallop<T>(s: &[T], from: usize, before: impl Fn(&T) -> bool) -> usize {
    let mut low = from.min(s.len());
    let mut step = 1;
    while low + step <= s.len() && before(&s[low + step - 1]) {
        low += step;
        step *= 2;
    }
    let high = (low + step).min(s.len());
    low + s[low..high].partition_point(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(t: &mut LiveTable<u32>) -> Vec<(u64, u32)> {
        t.settle();
        t.iter().map(|m| (m.id, m.payload)).collect()
    }

    #[test]
    fn out_of_order_inserts_come_out_sorted_and_the_later_of_one_id_wins() {
        let mut t = LiveTable::default();
        for (id, p) in [(1, 0), (5, 0), (6, 0), (3, 0), (2, 0), (5, 1), (7, 0)] {
            t.insert(Live::new(id, 0, 0, p));
        }
        assert_eq!(
            ids(&mut t),
            vec![(1, 0), (2, 0), (3, 0), (5, 1), (6, 0), (7, 0)]
        );
        assert_eq!(t.replaced, 1);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn removed_messages_are_gone_and_swept_out() {
        let mut t = LiveTable::default();
        for id in 1..=1000 {
            t.insert(Live::new(id, 0, 0, id as u32));
        }
        for id in (1..=1000).filter(|id| id % 10 != 0) {
            assert!(t.remove(id).is_some(), "{id}");
        }
        assert!(t.remove(3).is_none());
        assert!(t.get_mut(3).is_none());
        assert_eq!(t.len(), 100);
        assert!(t.entries.len() < 200, "swept: {}", t.entries.len());
        // A removed id sent again is live again, and not a replacement.
        t.insert(Live::new(3, 0, 0, 33));
        assert_eq!(t.get_mut(3).map(|m| m.payload), Some(33));
        assert_eq!(t.replaced, 0);
        let gone = t.remove_where(|m| m.payload % 20 == 0);
        assert_eq!(gone.len(), 50);
        assert_eq!(ids(&mut t).len(), 51);
    }

    #[test]
    fn gallop_finds_the_first_index_not_before() {
        let s: Vec<u64> = (0..100).map(|i| i * 2).collect();
        for from in [0, 1, 7, 50, 99, 100, 150] {
            for x in 0..210 {
                let want = s.partition_point(|&v| v < x).max(from.min(s.len()));
                assert_eq!(gallop(&s, from, |&v| v < x), want, "from {from}, x {x}");
            }
        }
        assert_eq!(gallop(&[] as &[u64], 0, |&v| v < 3), 0);
    }

    #[test]
    fn seek_finds_live_ids_in_order_and_clear_empties() {
        let mut t = LiveTable::default();
        for id in [1, 3, 5, 7, 9] {
            t.insert(Live::new(id, 0, 0, id as u32));
        }
        t.remove(5);
        let mut from = 0;
        let mut found = Vec::new();
        for id in 0..11 {
            let (next, at) = t.seek(from, id);
            from = next;
            found.extend(at.map(|i| t.at(i).payload));
        }
        assert_eq!(found, vec![1, 3, 7, 9]);
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(t.entries.capacity() > 0);
        assert_eq!(t.seek(0, 3), (0, None));
    }

    #[test]
    fn racing_batches_merge_only_their_region() {
        let mut t = LiveTable::default();
        // Producer B appends 1000..2000 before producer A appends 0..1000.
        for id in (1000..2000).chain(0..1000) {
            t.insert(Live::new(id, 0, 0, 0));
        }
        assert!(t.get_mut(500).is_some());
        assert_eq!(t.sorted, 2000);
        let got: Vec<u64> = t.iter().map(|m| m.id).collect();
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
    }
}

//! Priorities and message groups: the ready messages that need more than
//! the ready queue's FIFO order.
//!
//! A message sent with neither (priority [`Priority::Normal`], no group)
//! never comes here: it stays in the lock-free ready queue (`ready.rs`),
//! and so does every message of a queue that never sees one of the
//! others. The first message sent (or restored) with a priority or a
//! group turns on the queue's controlled receive path (`controls.rs`),
//! which then takes every message through [`Order::take`], under one lock.
//!
//! # Levels
//!
//! Three levels, high to low. A receive takes from the highest level that
//! has a message ready. [`Priority::Normal`] is shared with the plain
//! ready queue: at that level the two lanes are merged by message id, so
//! that sent first goes first.
//!
//! **Against starvation**: while a lower level has messages waiting, at
//! most [`FAIR_SHARE`] − 1 receives in a row take from a higher one; the
//! next takes, from the levels below the highest, the waiting message
//! sent first (lowest id). So a level never waits for more than
//! `FAIR_SHARE` − 1 messages of the levels above it per message it gets,
//! however many keep coming. Counted in messages (a batch counts each),
//! not in time.
//!
//! # Groups
//!
//! A group is the messages sent with one group key that are alive (ready,
//! delayed, in flight or waiting to retry), in id (send) order. Only one
//! of them is ever out of the group at a time, its **current** message:
//! from the moment it is the group's next ready message until it is
//! acknowledged, dead-lettered, cancelled or expires. Released, its lease
//! expired or its retry delayed, it stays current: when it comes back it
//! is the group's next message again, so a failing message holds its
//! group, and only its group. A group without a current message offers
//! its lowest id, once that one is ready (a delayed send holds the
//! messages sent after it in its group too).
//!
//! When the current message leaves (acknowledged, dead-lettered, cancelled,
//! expired), the next in id order becomes current. A message redriven
//! from the dead-letter queue rejoins its group by its id: it is the
//! group's next message once the current one (if any) leaves, ahead of
//! any later message still waiting.

use crate::error::PriorityError;
use crate::message::{MessageId, Queued};
use crate::ready::ReadyQueue;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// The longest message group key accepted, in bytes.
pub const MAX_GROUP_BYTES: usize = 1024;

/// While a lower level waits, every `FAIR_SHARE`th receive takes from the
/// levels below the highest (see the module docs).
pub const FAIR_SHARE: u32 = 8;

/// A message's priority: one of three levels. A receive takes the highest
/// level first; while lower levels wait, at least one receive in every
/// [`FAIR_SHARE`] takes from them, so none starves.
///
/// ```
/// use spool::{Priority, PriorityError};
///
/// assert_eq!(Priority::default(), Priority::Normal);
/// assert_eq!(Priority::from_level(0), Ok(Priority::High));
/// assert_eq!(Priority::Low.level(), 2);
/// assert_eq!(Priority::from_level(3), Err(PriorityError::OutOfRange { level: 3, max: 2 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// Taken before the others.
    High = 0,
    /// The default: what a send without a priority gets.
    #[default]
    Normal = 1,
    /// Taken after the others.
    Low = 2,
}

impl Priority {
    /// How many levels there are.
    pub const LEVELS: usize = 3;

    /// Its level, 0 the highest ([`High`](Priority::High)) to 2 the lowest.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// The priority of `level`, 0 the highest; a level above 2 is refused.
    pub fn from_level(level: u8) -> Result<Priority, PriorityError> {
        match level {
            0 => Ok(Priority::High),
            1 => Ok(Priority::Normal),
            2 => Ok(Priority::Low),
            _ => Err(PriorityError::OutOfRange {
                level,
                max: Priority::LEVELS as u8 - 1,
            }),
        }
    }
}

impl TryFrom<u8> for Priority {
    type Error = PriorityError;

    /// [`Priority::from_level`].
    fn try_from(level: u8) -> Result<Priority, PriorityError> {
        Priority::from_level(level)
    }
}

/// The normal level's index.
const NORMAL: usize = Priority::Normal as usize;

/// The ready messages with a priority or a group, and every group's
/// members (see the module docs).
pub(crate) struct Order<T> {
    inner: Mutex<Inner<T>>,
    /// Ready messages held here (offered or held back by their group).
    len: AtomicUsize,
}

struct Inner<T> {
    /// The messages a receive may take, per level, in the order they
    /// became takeable.
    levels: [VecDeque<Queued<T>>; Priority::LEVELS],
    groups: HashMap<Arc<str>, Group<T>>,
    /// Member lists of groups that emptied, kept for new groups (a group
    /// often holds one message at a time: its list would be allocated
    /// and freed for each).
    spare: Vec<Members<T>>,
    /// Receives in a row that took from a higher level while a lower one
    /// waited.
    passed_over: u32,
}

/// At most this many spare member lists are kept, each of at most
/// [`SPARE_BYTES`] (they hold ready messages by value: a pool of large
/// lists would keep the memory a burst once needed): at most 1 MiB. With
/// 1,000 groups churning, a pool of 64 lists gave 4.5-4.9x the plain
/// queue, of 1,024 3.5-3.7x (`benches/ordering.rs`).
const SPARE_GROUPS: usize = 1024;
const SPARE_BYTES: usize = 1024;

/// A group's live members, sorted by id: `Some` if ready and held back,
/// `None` if elsewhere (delayed, in flight, or offered on its level).
/// Ids mostly arrive in order, so an insert is a push at the back and
/// the member leaving is the front.
type Members<T> = VecDeque<(u64, Option<Queued<T>>)>;

struct Group<T> {
    members: Members<T>,
    /// The member out of the group (see the module docs).
    current: Option<u64>,
}

impl<T> Group<T> {
    /// The member `id`'s slot, inserted (as `None`) if it is not there.
    fn slot(&mut self, id: u64) -> &mut Option<Queued<T>> {
        let at = match self.members.back() {
            Some(&(last, _)) if last < id => self.members.len(),
            None => 0,
            _ => match self.members.binary_search_by_key(&id, |(m, _)| *m) {
                Ok(at) => return &mut self.members[at].1,
                Err(at) => at,
            },
        };
        self.members.insert(at, (id, None));
        &mut self.members[at].1
    }

    /// Takes member `id` out; what it held, if it was a member.
    fn remove(&mut self, id: u64) -> Option<Option<Queued<T>>> {
        if self.members.front().is_some_and(|(m, _)| *m == id) {
            return self.members.pop_front().map(|(_, slot)| slot);
        }
        let at = self.members.binary_search_by_key(&id, |(m, _)| *m).ok()?;
        self.members.remove(at).map(|(_, slot)| slot)
    }

    /// Offers its next message on its level, if it has none out and that
    /// message is ready; whether it did.
    fn offer(&mut self, levels: &mut [VecDeque<Queued<T>>; Priority::LEVELS]) -> bool {
        let next = match self.current {
            Some(current) => current,
            None => match self.members.front() {
                Some(&(first, _)) => first,
                None => return false,
            },
        };
        let Ok(at) = self.members.binary_search_by_key(&next, |(m, _)| *m) else {
            return false;
        };
        let Some(entry) = self.members[at].1.take() else {
            return false;
        };
        self.current = Some(next);
        let level = entry.priority() as usize;
        levels[level].push_back(entry);
        true
    }
}

impl<T> Default for Order<T> {
    fn default() -> Self {
        Order {
            inner: Mutex::new(Inner {
                levels: Default::default(),
                groups: HashMap::new(),
                spare: Vec::new(),
                passed_over: 0,
            }),
            len: AtomicUsize::new(0),
        }
    }
}

impl<T> Order<T> {
    /// Ready messages held here.
    pub(crate) fn len(&self) -> usize {
        self.len.load(SeqCst)
    }

    /// Makes message `id` a member of `group` (a send, a redrive or a
    /// restore, before it is ready or delayed).
    pub(crate) fn join(&self, group: &Arc<str>, id: MessageId) {
        let mut inner = self.inner.lock();
        inner.group(group).slot(id.0);
    }

    /// Makes `entry` ready (at the back of its level, or held back by its
    /// group); whether a receive can take something new.
    pub(crate) fn push(&self, entry: Queued<T>) -> bool {
        self.len.fetch_add(1, SeqCst);
        let mut inner = self.inner.lock();
        inner.push(entry)
    }

    /// Puts messages taken from here back at the front of their levels,
    /// in their order, as if they had not been taken (a receive that
    /// could not go on).
    pub(crate) fn put_back(&self, entries: Vec<Queued<T>>) {
        self.len.fetch_add(entries.len(), SeqCst);
        let mut inner = self.inner.lock();
        for entry in entries.into_iter().rev() {
            let level = entry.priority() as usize;
            inner.levels[level].push_front(entry);
        }
    }

    /// Message `id` left `group` (acknowledged, dead-lettered, cancelled or
    /// expired): the next member may be offered. Whether one was.
    pub(crate) fn leave(&self, group: &str, id: MessageId) -> bool {
        let mut inner = self.inner.lock();
        let Inner {
            levels,
            groups,
            spare,
            ..
        } = &mut *inner;
        let Some(state) = groups.get_mut(group) else {
            return false;
        };
        if let Some(Some(_)) = state.remove(id.0) {
            // Ready and held back: it leaves the ready messages too.
            self.len.fetch_sub(1, SeqCst);
        }
        if state.current == Some(id.0) {
            state.current = None;
        }
        if state.members.is_empty() {
            if let Some(gone) = groups.remove(group) {
                let bytes =
                    gone.members.capacity() * std::mem::size_of::<(u64, Option<Queued<T>>)>();
                if spare.len() < SPARE_GROUPS && bytes <= SPARE_BYTES {
                    spare.push(gone.members);
                }
            }
            return false;
        }
        state.offer(levels)
    }

    /// Takes up to `max` messages, handing each to `take`, in the order of
    /// the rules (see the module docs); `ready` is the plain lane of the
    /// normal level. Returns how many.
    pub(crate) fn take(
        &self,
        ready: &ReadyQueue<T>,
        max: usize,
        mut take: impl FnMut(Queued<T>),
    ) -> usize {
        let mut inner = self.inner.lock();
        let mut taken = 0;
        while taken < max {
            match inner.take_next(ready, &self.len) {
                Some(entry) => {
                    take(entry);
                    taken += 1;
                }
                None => break,
            }
        }
        taken
    }

    /// Takes ready message `id` out, if it is here; it stays a member of
    /// its group (the caller makes it [`leave`](Self::leave) or puts it
    /// back).
    pub(crate) fn remove(&self, id: MessageId) -> Option<Queued<T>> {
        self.remove_where(|entry| entry.id == id).pop()
    }

    /// Takes out every ready message here that `pick` picks, as
    /// [`remove`](Self::remove) does one.
    pub(crate) fn remove_where(&self, mut pick: impl FnMut(&Queued<T>) -> bool) -> Vec<Queued<T>> {
        let mut inner = self.inner.lock();
        let mut removed = Vec::new();
        for level in inner.levels.iter_mut() {
            if level.iter().any(&mut pick) {
                let (gone, kept): (VecDeque<_>, VecDeque<_>) =
                    std::mem::take(level).into_iter().partition(&mut pick);
                *level = kept;
                removed.extend(gone);
            }
        }
        for group in inner.groups.values_mut() {
            for (_, member) in group.members.iter_mut() {
                if member.as_ref().is_some_and(&mut pick) {
                    removed.extend(member.take());
                }
            }
        }
        self.len.fetch_sub(removed.len(), SeqCst);
        removed.sort_by_key(|entry| entry.id);
        removed
    }

    /// Shows up to `max` of the messages each level offers next, in
    /// order, to `see` with their level (high first).
    pub(crate) fn peek(&self, max: usize, mut see: impl FnMut(usize, &Queued<T>)) {
        let inner = self.inner.lock();
        for (level, entries) in inner.levels.iter().enumerate() {
            entries.iter().take(max).for_each(|entry| see(level, entry));
        }
    }

    /// When the oldest message here was first enqueued, if any is here.
    pub(crate) fn oldest_enqueued(&self) -> Option<u64> {
        if self.len() == 0 {
            return None;
        }
        let inner = self.inner.lock();
        let offered = inner.levels.iter().flatten().map(|e| e.enqueued_at);
        let held = inner
            .groups
            .values()
            .filter_map(|g| g.members.iter().find_map(|(_, slot)| slot.as_ref()))
            .map(|e| e.enqueued_at);
        offered.chain(held).min()
    }
}

impl<T> Inner<T> {
    fn push(&mut self, entry: Queued<T>) -> bool {
        let Some(group) = entry.group().cloned() else {
            let level = entry.priority() as usize;
            self.levels[level].push_back(entry);
            return true;
        };
        let id = entry.id.0;
        let Inner {
            levels,
            groups,
            spare,
            ..
        } = self;
        let state = groups.entry(group).or_insert_with(|| Group {
            members: spare.pop().unwrap_or_default(),
            current: None,
        });
        *state.slot(id) = Some(entry);
        state.offer(levels)
    }

    /// `group`'s state, created (from a spare member list) if it has none.
    fn group(&mut self, group: &Arc<str>) -> &mut Group<T> {
        let spare = &mut self.spare;
        self.groups
            .entry(Arc::clone(group))
            .or_insert_with(|| Group {
                members: spare.pop().unwrap_or_default(),
                current: None,
            })
    }

    /// The next message a receive takes (see the module docs).
    fn take_next(&mut self, ready: &ReadyQueue<T>, len: &AtomicUsize) -> Option<Queued<T>> {
        let plain = ready.front_id().map(|id| id.0);
        let mut heads: [Option<u64>; Priority::LEVELS] = [None; Priority::LEVELS];
        for (level, head) in heads.iter_mut().enumerate() {
            *head = self.levels[level].front().map(|entry| entry.id.0);
        }
        let from_plain = match (plain, heads[NORMAL]) {
            (Some(p), Some(h)) => p < h,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_plain {
            heads[NORMAL] = plain;
        }
        let top = heads.iter().position(Option::is_some)?;
        let lower = (top + 1..Priority::LEVELS)
            .filter_map(|level| heads[level].map(|id| (id, level)))
            .min();
        let level = match lower {
            Some((_, level)) if self.passed_over + 1 >= FAIR_SHARE => {
                self.passed_over = 0;
                level
            }
            Some(_) => {
                self.passed_over += 1;
                top
            }
            None => {
                self.passed_over = 0;
                top
            }
        };
        if level == NORMAL && from_plain {
            // Another receive on the plain path may have taken it since.
            if let Some(entry) = ready.pop() {
                return Some(entry);
            }
        }
        let entry = self.levels[level].pop_front()?;
        len.fetch_sub(1, SeqCst);
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Entry;
    use std::time::Duration;

    fn entry(id: u64, priority: Priority, group: Option<&str>) -> Queued<u64> {
        let mut entry = Entry::new(MessageId(id), id, 0, None);
        entry.set_order(priority, group.map(Arc::from));
        entry
    }

    fn take_all(order: &Order<u64>, ready: &ReadyQueue<u64>) -> Vec<u64> {
        let mut ids = Vec::new();
        order.take(ready, usize::MAX, |e| ids.push(e.id.0));
        ids
    }

    #[test]
    fn a_higher_level_goes_first_and_normal_merges_with_the_plain_lane_by_id() {
        let order = Order::default();
        let ready = ReadyQueue::new(16, Duration::ZERO);
        ready.push(Entry::new(MessageId(1), 1, 0, None), 0);
        order.push(entry(2, Priority::Low, None));
        order.push(entry(3, Priority::High, None));
        order.push(entry(4, Priority::Normal, Some("g")));
        ready.push(Entry::new(MessageId(5), 5, 0, None), 0);
        assert_eq!(order.len(), 3);
        assert_eq!(take_all(&order, &ready), [3, 1, 4, 5, 2]);
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn every_eighth_receive_takes_from_a_lower_level_while_one_waits() {
        let order = Order::default();
        let ready = ReadyQueue::new(64, Duration::ZERO);
        for id in 0..4 {
            order.push(entry(id, Priority::Low, None));
        }
        for id in 10..30 {
            order.push(entry(id, Priority::High, None));
        }
        let taken = take_all(&order, &ready);
        let lows: Vec<usize> = (0..taken.len()).filter(|&i| taken[i] < 10).collect();
        assert_eq!(lows, [7, 15, 22, 23], "{taken:?}");
        assert_eq!(taken.len(), 24);
        // In their order; once the highs are gone, the rest of the lows.
        assert_eq!([taken[7], taken[15], taken[22], taken[23]], [0, 1, 2, 3]);
    }

    #[test]
    fn the_oldest_lower_level_gets_the_fair_share() {
        let order = Order::default();
        let ready = ReadyQueue::new(64, Duration::ZERO);
        order.push(entry(2, Priority::Low, None));
        order.push(entry(5, Priority::Normal, None));
        for id in 10..17 {
            order.push(entry(id, Priority::High, None));
        }
        order.push(entry(20, Priority::High, None));
        let taken = take_all(&order, &ready);
        assert_eq!(taken[7], 2, "the low one was sent first: {taken:?}");
    }

    #[test]
    fn a_group_offers_one_message_at_a_time_in_id_order() {
        let order = Order::default();
        let ready = ReadyQueue::new(16, Duration::ZERO);
        let g: Arc<str> = Arc::from("g");
        for id in 1..=3 {
            order.join(&g, MessageId(id));
        }
        order.push(entry(2, Priority::Normal, Some("g")));
        order.push(entry(3, Priority::Normal, Some("g")));
        assert_eq!(
            take_all(&order, &ready),
            Vec::<u64>::new(),
            "1 is not ready"
        );
        order.push(entry(1, Priority::Normal, Some("g")));
        order.push(entry(9, Priority::Normal, Some("h")));
        assert_eq!(take_all(&order, &ready), [1, 9]);
        // 1 fails and comes back: it is still the group's next.
        order.push(entry(1, Priority::Normal, Some("g")));
        assert_eq!(take_all(&order, &ready), [1]);
        assert!(order.leave("g", MessageId(1)));
        assert_eq!(take_all(&order, &ready), [2]);
        assert!(order.leave("g", MessageId(2)));
        assert!(!order.leave("h", MessageId(9)));
        assert_eq!(order.remove(MessageId(3)).map(|e| e.id.0), Some(3));
        assert!(!order.leave("g", MessageId(3)));
        assert_eq!(order.len(), 0);
        assert!(order.inner.lock().groups.is_empty());
    }

    #[test]
    fn put_back_keeps_the_place() {
        let order = Order::default();
        let ready = ReadyQueue::new(16, Duration::ZERO);
        order.push(entry(1, Priority::High, None));
        order.push(entry(2, Priority::High, None));
        let mut taken = Vec::new();
        order.take(&ready, 1, |e| taken.push(e));
        order.put_back(taken);
        assert_eq!(take_all(&order, &ready), [1, 2]);
    }

    #[test]
    fn levels_out_of_range_are_refused() {
        for level in 0..=2 {
            assert_eq!(Priority::from_level(level).map(Priority::level), Ok(level));
        }
        assert!(Priority::try_from(200).is_err());
    }
}

//! The lease table: which messages are in flight, under which lease, until
//! when.
//!
//! Leases live in 16 shards, each behind its own mutex. Every consumer
//! handle has a home shard (handed out in turn) where the leases of its
//! deliveries go, so consumers on different threads lock different shards,
//! and a batch receive locks one. A shard keeps its
//! leases in a slab: a vector of slots and a list of free ones. A lease's
//! token names its slot, so settling finds it by index, without hashing,
//! and the slot freed last is the one reused next, still in cache: a
//! hundred thousand leases held for long cost the leases that come and go
//! almost nothing.
//!
//! Beside the slab, a min-heap of deadlines. Settling a lease empties its
//! slot only; its heap entry goes stale and is skipped when it comes up
//! (lazy deletion). Expiry therefore pops only what is due: O(expired ·
//! log n), never a scan of everything in flight. So that stale entries
//! cannot pile up while leases are settled faster than they expire, a shard
//! rebuilds its heap from the live leases once it holds more than twice as
//! many entries as the shard has messages in flight (a batch lease is one
//! entry for all its messages), which costs O(1) amortised per lease.
//!
//! A lease covers one message (a delivery) or a whole batch received as
//! one; a batch's lease is named by its first message, and settling one
//! kind of lease with the other's operation finds nothing.
//!
//! Fencing: a token is the lease's shard, its slot and the message's lease
//! count (see [`Entry::next_lease`](crate::message::Entry::next_lease)),
//! so with the message id it names one lease. Settling needs the token of the current
//! lease and a deadline not yet [`reached`] (one saturated at the end of
//! time never is); a delivery whose lease expired
//! (and whose message may have been delivered again under a new token) can
//! change nothing.

use crate::clock::{reached, Nanos};
use crate::error::SettleError;
use crate::message::{BatchMessages, Batched, Held, MessageId};
use crate::padded::Padded;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SHARDS: usize = 16;

/// A token: the shard in its top 4 bits, then 30 bits of slot, then 30
/// bits of the message's lease count.
const SHARD_SHIFT: u32 = 60;
const SLOT_SHIFT: u32 = 30;
const FIELD_MASK: u64 = (1 << 30) - 1;

/// A token no lease ever has: its slot, the last of shard 15, is never
/// used (a shard holds fewer than 2^30 - 1 leases).
pub(crate) const NO_LEASE: u64 = u64::MAX;

pub(crate) struct LeaseTable<T> {
    shards: Box<[Padded<Mutex<Shard<T>>>]>,
    /// The home shard for the next consumer handle.
    next_home: AtomicUsize,
}

struct Shard<T> {
    /// Its place in the table, part of every token it hands out.
    index: usize,
    slots: Vec<Option<Lease<T>>>,
    /// Empty slots; the last freed is reused first.
    free: Vec<u32>,
    /// Messages in flight (a batch lease counts all of its messages).
    live: usize,
    /// (deadline, message id, token); may hold stale entries. The id is
    /// needed: a slot reused by another message on its first lease has
    /// the same token as the one before.
    deadlines: BinaryHeap<Reverse<(Nanos, u64, u64)>>,
    /// Messages whose lease ended by an acknowledgement, ever: counted
    /// here, under the lock the ack takes anyway, rather than in a shared
    /// atomic.
    acked: u64,
}

struct Lease<T> {
    /// The message that names it (kept beside what it covers, so that
    /// checking a token reads no further).
    id: MessageId,
    token: u64,
    deadline: Nanos,
    leased: Leased<T>,
}

/// What one lease covers.
enum Leased<T> {
    /// One message (a [`Delivery`](crate::Delivery)).
    One(Held<T>),
    /// The messages of a [`Batch`](crate::Batch), all or nothing. The
    /// lease is named by its first message.
    Batch(Batched<T>),
}

impl<T> Leased<T> {
    /// The message that names the lease.
    fn id(&self) -> MessageId {
        match self {
            Leased::One(entry) => entry.id,
            Leased::Batch(batch) => batch.entry(0).id,
        }
    }

    fn len(&self) -> usize {
        match self {
            Leased::One(_) => 1,
            Leased::Batch(batch) => batch.len(),
        }
    }
}

fn slot_of(token: u64) -> usize {
    (token >> SLOT_SHIFT & FIELD_MASK) as usize
}

fn shard_of(token: u64) -> usize {
    (token >> SHARD_SHIFT) as usize
}

impl<T> Shard<T> {
    fn new(index: usize) -> Self {
        Shard {
            index,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            deadlines: BinaryHeap::new(),
            acked: 0,
        }
    }

    /// Takes a free slot for a lease whose message has the lease count
    /// `lease_count`, and returns the lease's token; [`fill`](Self::fill)
    /// must follow.
    #[inline]
    fn claim(&mut self, lease_count: u32) -> u64 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            // In flight is bounded by the capacity (at most 2^30 - 1).
            let slot = self.slots.len() - 1;
            assert!(
                (slot as u64) < FIELD_MASK,
                "fewer than 2^30 - 1 leases per shard"
            );
            slot as u32
        });
        (self.index as u64) << SHARD_SHIFT
            | u64::from(slot) << SLOT_SHIFT
            | u64::from(lease_count) & FIELD_MASK
    }

    /// Puts `leased` in flight until `deadline` in the slot of `token`.
    #[inline]
    fn fill(&mut self, token: u64, leased: Leased<T>, deadline: Nanos) {
        let id = leased.id();
        self.live += leased.len();
        self.slots[slot_of(token)] = Some(Lease {
            id,
            token,
            deadline,
            leased,
        });
        self.push_deadline(deadline, id.0, token);
    }

    /// Puts `entry` in flight until `deadline` under a new lease, first
    /// handing it and the lease's token to `deliver`.
    fn put<R>(
        &mut self,
        mut entry: Held<T>,
        deadline: Nanos,
        deliver: impl FnOnce(&Held<T>, u64) -> R,
    ) -> R {
        let token = self.claim(entry.next_lease());
        let delivered = deliver(&entry, token);
        self.fill(token, Leased::One(entry), deadline);
        delivered
    }

    /// The lease `token` names, if it is still current.
    fn lease(&self, token: u64) -> Option<&Lease<T>> {
        let lease = self.slots.get(slot_of(token))?.as_ref()?;
        (lease.token == token).then_some(lease)
    }

    /// The lease of `id` under `token`, if it is current and has not run
    /// out at `now` (the fencing rule).
    fn current(&mut self, id: MessageId, token: u64, now: Nanos) -> Option<&mut Lease<T>> {
        let lease = self.slots.get_mut(slot_of(token))?.as_mut()?;
        (lease.token == token && lease.id == id && !reached(lease.deadline, now)).then_some(lease)
    }

    /// Ends the lease of one message, `id` under `token`, if it is current
    /// at `now`.
    fn take_one(&mut self, id: MessageId, token: u64, now: Nanos) -> Option<Held<T>> {
        let slot = slot_of(token);
        let lease = self.slots.get_mut(slot)?;
        match lease {
            Some(Lease {
                id: leased_id,
                token: leased_token,
                deadline,
                leased: Leased::One(_),
            }) if *leased_token == token && *leased_id == id && !reached(*deadline, now) => {}
            _ => return None,
        }
        let Some(Lease {
            leased: Leased::One(entry),
            ..
        }) = lease.take()
        else {
            return None;
        };
        self.free.push(slot as u32);
        self.live -= 1;
        Some(entry)
    }

    /// Ends the lease of a batch, named by `id` under `token`, if it is
    /// current at `now`; returns the batch and the lease's deadline.
    fn take_batch(&mut self, id: MessageId, token: u64, now: Nanos) -> Option<(Batched<T>, Nanos)> {
        let lease = self.current(id, token, now)?;
        matches!(lease.leased, Leased::Batch(_)).then_some(())?;
        let lease = self.take(token);
        match lease.leased {
            Leased::Batch(batch) => Some((batch, lease.deadline)),
            Leased::One(_) => None,
        }
    }

    /// Empties the slot of a lease known to be there.
    fn take(&mut self, token: u64) -> Lease<T> {
        let slot = slot_of(token);
        let lease = self.slots[slot].take().expect("a current lease");
        self.free.push(slot as u32);
        self.live -= lease.leased.len();
        lease
    }

    fn is_live(&self, &(deadline, id, token): &(Nanos, u64, u64)) -> bool {
        self.lease(token)
            .is_some_and(|l| l.deadline == deadline && l.id.0 == id)
    }

    fn push_deadline(&mut self, deadline: Nanos, id: u64, token: u64) {
        self.deadlines.push(Reverse((deadline, id, token)));
        if self.deadlines.len() > 2 * self.live + 64 {
            let mut deadlines = std::mem::take(&mut self.deadlines).into_vec();
            deadlines.retain(|Reverse(due)| self.is_live(due));
            self.deadlines = BinaryHeap::from(deadlines);
        }
    }

    fn earliest(&self) -> Nanos {
        self.deadlines.peek().map_or(Nanos::MAX, |Reverse(d)| d.0)
    }
}

impl<T> LeaseTable<T> {
    pub(crate) fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|index| Padded(Mutex::new(Shard::new(index))))
            .collect();
        LeaseTable {
            shards,
            next_home: AtomicUsize::new(0),
        }
    }

    /// A home shard for a new consumer handle: each in turn.
    pub(crate) fn home(&self) -> usize {
        self.next_home.fetch_add(1, Relaxed) % SHARDS
    }

    /// The shard that handed out `token`.
    fn shard(&self, token: u64) -> &Mutex<Shard<T>> {
        &self.shards[shard_of(token)].0
    }

    /// How many messages are in flight: counted shard by shard, so exact
    /// only when no lease changes meanwhile (a count kept in one atomic
    /// would cost every receive and settle a shared write).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.lock().live).sum()
    }

    /// Puts `entry` in flight in shard `home` until `deadline` under a new
    /// lease, and returns what `deliver` makes of it and the lease's token.
    pub(crate) fn insert<R>(
        &self,
        home: usize,
        entry: Held<T>,
        deadline: Nanos,
        deliver: impl FnOnce(&Held<T>, u64) -> R,
    ) -> R {
        self.shards[home].0.lock().put(entry, deadline, deliver)
    }

    /// Puts a non-empty `batch` in flight in shard `home` until `deadline`
    /// under one lease, and returns its token. The caller has counted the
    /// lease on every message of the batch
    /// ([`next_lease`](crate::message::Entry::next_lease)).
    pub(crate) fn insert_batch(&self, home: usize, batch: Batched<T>, deadline: Nanos) -> u64 {
        let mut shard = self.shards[home].0.lock();
        let token = shard.claim(batch.entry(0).leases());
        shard.fill(token, Leased::Batch(batch), deadline);
        token
    }

    /// Acknowledgements so far (see [`ack`](Self::ack)).
    pub(crate) fn acked(&self) -> u64 {
        self.shards.iter().map(|shard| shard.0.lock().acked).sum()
    }

    /// [`remove`](Self::remove), counted as an acknowledgement; the
    /// message is shown to `gone` (outside the shard's lock) and dropped.
    #[inline]
    pub(crate) fn ack(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
        gone: impl FnOnce(&Held<T>),
    ) -> Result<(), SettleError> {
        let mut shard = self.shard(token).lock();
        let entry = shard.take_one(id, token, now);
        shard.acked += u64::from(entry.is_some());
        drop(shard);
        match entry {
            Some(entry) => {
                gone(&entry);
                Ok(())
            }
            None => Err(SettleError::LeaseExpired { id }),
        }
    }

    /// Acknowledges every current lease of `leases` (skipping expired
    /// ones), locking each shard once; returns the messages.
    pub(crate) fn ack_many(&self, leases: &[(MessageId, u64)], now: Nanos) -> Vec<Held<T>> {
        let mut order: Vec<usize> = (0..leases.len()).collect();
        order.sort_by_key(|&i| shard_of(leases[i].1));
        let mut removed = Vec::with_capacity(leases.len());
        let mut i = 0;
        while i < order.len() {
            let index = shard_of(leases[order[i]].1);
            let mut shard = self.shards[index].0.lock();
            while i < order.len() && shard_of(leases[order[i]].1) == index {
                let (id, token) = leases[order[i]];
                if let Some(entry) = shard.take_one(id, token, now) {
                    shard.acked += 1;
                    removed.push(entry);
                }
                i += 1;
            }
        }
        removed
    }

    /// Ends lease `token` on `id` and hands the message back, if the lease
    /// is current and has not run out at `now`.
    pub(crate) fn remove(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
    ) -> Result<Held<T>, SettleError> {
        let entry = self.shard(token).lock().take_one(id, token, now);
        entry.ok_or(SettleError::LeaseExpired { id })
    }

    /// Ends the lease `token` of the batch whose first message is `id`, if
    /// it is current and has not run out at `now`; `acked` counts its
    /// messages as acknowledged. Returns the batch.
    pub(crate) fn remove_batch(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
        acked: bool,
    ) -> Result<Batched<T>, SettleError> {
        let mut shard = self.shard(token).lock();
        let (batch, _) = shard
            .take_batch(id, token, now)
            .ok_or(SettleError::LeaseExpired { id })?;
        if acked {
            shard.acked += batch.len() as u64;
        }
        Ok(batch)
    }

    /// Replaces the current lease `token` of the batch whose first message
    /// is `id` by one lease per message, with the same deadline, in the
    /// same shard; returns what `deliver` makes of each, in batch order.
    /// `ours` is the caller's own reference to the batch, given up so
    /// that the payloads can move out of it; it comes back if the lease is
    /// not current.
    pub(crate) fn split<R>(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
        ours: Batched<T>,
        mut deliver: impl FnMut(&Held<T>, u64) -> R,
    ) -> Result<Vec<R>, Batched<T>> {
        let mut shard = self.shard(token).lock();
        let Some((batch, deadline)) = shard.take_batch(id, token, now) else {
            return Err(ours);
        };
        drop(ours);
        let messages = BatchMessages::into_held(batch);
        Ok(messages
            .into_iter()
            .map(|entry| shard.put(entry, deadline, &mut deliver))
            .collect())
    }

    /// The deadline of lease `token` on `id`, if it is current at `now`.
    pub(crate) fn deadline(&self, id: MessageId, token: u64, now: Nanos) -> Option<Nanos> {
        let mut shard = self.shard(token).lock();
        shard.current(id, token, now).map(|lease| lease.deadline)
    }

    /// Moves the deadline of a current lease to `deadline`.
    pub(crate) fn extend(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
        deadline: Nanos,
    ) -> Result<(), SettleError> {
        let mut shard = self.shard(token).lock();
        let lease = shard
            .current(id, token, now)
            .ok_or(SettleError::LeaseExpired { id })?;
        lease.deadline = deadline;
        shard.push_deadline(deadline, id.0, token);
        Ok(())
    }

    /// Removes every lease whose deadline is at or before `now`, appending
    /// its deadline and each of its messages to `expired`. Returns the
    /// earliest deadline left (which may be that of a stale entry, never
    /// later than a live one).
    pub(crate) fn expire(&self, now: Nanos, expired: &mut Vec<(Nanos, Held<T>)>) -> Nanos {
        let mut earliest = Nanos::MAX;
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            while let Some(&Reverse(top)) = shard.deadlines.peek() {
                if !reached(top.0, now) {
                    break; // the rest are later (or saturated: never)
                }
                shard.deadlines.pop();
                if shard.is_live(&top) {
                    match shard.take(top.2).leased {
                        Leased::One(entry) => expired.push((top.0, entry)),
                        Leased::Batch(batch) => expired.extend(
                            BatchMessages::into_held(batch)
                                .into_iter()
                                .map(|entry| (top.0, entry)),
                        ),
                    }
                }
            }
            earliest = earliest.min(shard.earliest());
        }
        earliest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{BatchBuilder, Entry};

    fn entry(id: u64) -> Held<u32> {
        let mut entry = Entry::new(MessageId(id), id as u32, 0, None).into_held();
        entry.receive_count = 1;
        entry
    }

    fn lease(table: &LeaseTable<u32>, id: u64, deadline: Nanos) -> u64 {
        table.insert(0, entry(id), deadline, |_, token| token)
    }

    #[test]
    fn remove_needs_the_current_token_and_a_live_deadline() {
        let table = LeaseTable::new();
        let token = lease(&table, 1, 100);
        assert!(
            table.remove(MessageId(1), token + 1, 50).is_err(),
            "wrong token"
        );
        assert!(table.remove(MessageId(2), token, 50).is_err(), "wrong id");
        assert!(
            table.remove(MessageId(1), token, 100).is_err(),
            "deadline reached"
        );
        assert_eq!(
            table.remove(MessageId(1), token, 99).unwrap().id,
            MessageId(1)
        );
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_reused_slot_does_not_accept_the_token_of_its_last_lease() {
        let table = LeaseTable::new();
        let first = lease(&table, 16, 100);
        table.remove(MessageId(16), first, 0).unwrap();
        // Same slot, same lease count: only the id differs.
        let second = lease(&table, 32, 100);
        assert_eq!(first, second);
        assert!(table.remove(MessageId(16), first, 0).is_err());
        // The same message leased again gets a new token.
        let entry = table.remove(MessageId(32), second, 0).unwrap();
        let third = table.insert(0, entry, 100, |_, token| token);
        assert_ne!(third, second);
        assert!(table.remove(MessageId(32), second, 0).is_err());
        assert!(table.remove(MessageId(32), third, 0).is_ok());
    }

    #[test]
    fn expire_pops_only_what_is_due_and_skips_settled_and_extended() {
        let table = LeaseTable::new();
        let tokens: Vec<u64> = (0..10).map(|id| lease(&table, id, 100 + id)).collect();
        table.remove(MessageId(3), tokens[3], 0).unwrap();
        table.extend(MessageId(4), tokens[4], 0, 1_000).unwrap();
        let mut expired = Vec::new();
        let earliest = table.expire(105, &mut expired);
        let mut ids: Vec<u64> = expired.iter().map(|(_, e)| e.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 5]);
        assert_eq!(earliest, 106);
        assert_eq!(table.len(), 5);
    }

    #[test]
    fn many_acked_at_once_behave_as_one_at_a_time() {
        let table = LeaseTable::new();
        let leased: Vec<(MessageId, u64)> = (0..100u64)
            .map(|id| {
                (
                    MessageId(id),
                    table.insert(id as usize % 3, entry(id), 500, |_, t| t),
                )
            })
            .collect();
        assert_eq!(table.len(), 100);
        // Current tokens for the even ids, wrong ones for the odd ids.
        let settle: Vec<(MessageId, u64)> = leased
            .iter()
            .map(|&(id, token)| (id, if id.0 % 2 == 0 { token } else { token + 1 }))
            .collect();
        let mut removed: Vec<u64> = table
            .ack_many(&settle, 499)
            .iter()
            .map(|e| e.id.0)
            .collect();
        removed.sort_unstable();
        assert_eq!(removed, (0..100).step_by(2).collect::<Vec<_>>());
        assert_eq!(table.len(), 50);
        assert_eq!(table.acked(), 50);
        assert!(table.ack_many(&[leased[1]], 500).is_empty(), "expired");
        let mut expired = Vec::new();
        table.expire(500, &mut expired);
        assert_eq!(expired.len(), 50);
    }

    fn batch(ids: std::ops::Range<u64>) -> Batched<u32> {
        let mut batch = BatchBuilder::with_capacity(ids.end as usize);
        for id in ids {
            let mut entry = Entry::new(MessageId(id), id as u32, 0, None);
            entry.receive_count = 1;
            entry.next_lease();
            batch.push(entry);
        }
        std::sync::Arc::new(batch.finish())
    }

    #[test]
    fn a_batch_lease_counts_its_messages_and_is_settled_only_as_a_batch() {
        let table = LeaseTable::new();
        let token = table.insert_batch(2, batch(10..20), 100);
        assert_eq!(table.len(), 10);
        let first = MessageId(10);
        assert!(table.remove(first, token, 0).is_err(), "not one message");
        assert!(
            table.ack(first, token, 0, |_| ()).is_err(),
            "not one message"
        );
        assert!(table.remove_batch(MessageId(11), token, 0, true).is_err());
        assert!(table.remove_batch(first, token + 1, 0, true).is_err());
        assert!(
            table.remove_batch(first, token, 100, true).is_err(),
            "ran out"
        );
        table.extend(first, token, 0, 200).unwrap();
        let acked = table.remove_batch(first, token, 150, true).unwrap();
        assert_eq!(acked.len(), 10);
        assert_eq!((table.len(), table.acked()), (0, 10));
        assert!(table.remove_batch(first, token, 150, true).is_err(), "once");
        // A single lease in the same slot is not the batch's, and the
        // other way round.
        let single = lease(&table, 10, 100);
        assert!(table.remove_batch(first, single, 0, false).is_err());
    }

    #[test]
    fn an_expired_batch_lease_brings_back_every_message() {
        let table = LeaseTable::new();
        let token = table.insert_batch(0, batch(0..5), 100);
        lease(&table, 7, 300);
        let mut expired = Vec::new();
        assert_eq!(table.expire(100, &mut expired), 300);
        let ids: Vec<u64> = expired.iter().map(|(_, e)| e.id.0).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4], "in batch order");
        assert!(expired
            .iter()
            .all(|&(at, ref e)| at == 100 && *e.payload == e.id.0 as u32));
        assert_eq!(table.len(), 1);
        assert!(table.remove_batch(MessageId(0), token, 0, false).is_err());
    }

    #[test]
    fn a_split_batch_becomes_one_lease_per_message_with_its_deadline() {
        let table = LeaseTable::new();
        let ours = batch(0..4);
        let token = table.insert_batch(4, ours.clone(), 100);
        let split = table
            .split(MessageId(0), token, 10, ours, |entry, token| {
                (entry.id, token, *entry.payload)
            })
            .ok()
            .expect("a current lease");
        assert_eq!(split.len(), 4);
        assert_eq!(table.len(), 4);
        assert!(
            table.remove_batch(MessageId(0), token, 10, false).is_err(),
            "gone"
        );
        assert!(split
            .iter()
            .all(|&(_, t, _)| t != token && shard_of(t) == 4));
        let (id, first, payload) = split[0];
        assert_eq!((id, payload), (MessageId(0), 0));
        table.ack(id, first, 10, |_| ()).unwrap();
        let mut expired = Vec::new();
        table.expire(100, &mut expired);
        assert_eq!(
            expired.len(),
            3,
            "the others ran out with the batch's deadline"
        );
        let ours = batch(0..4);
        assert!(table
            .split(MessageId(0), token, 10, ours, |_, t| t)
            .is_err());
    }

    #[test]
    fn a_deadline_saturated_at_the_end_of_time_never_expires() {
        let table = LeaseTable::new();
        let end = lease(&table, 1, Nanos::MAX);
        let before = lease(&table, 2, Nanos::MAX - 1);
        let mut expired = Vec::new();
        assert_eq!(table.expire(Nanos::MAX, &mut expired), Nanos::MAX);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.id, MessageId(2));
        assert!(table.ack(MessageId(2), before, Nanos::MAX, |_| ()).is_err());
        table
            .extend(MessageId(1), end, Nanos::MAX, Nanos::MAX)
            .unwrap();
        assert!(table.ack(MessageId(1), end, Nanos::MAX, |_| ()).is_ok());
    }

    #[test]
    fn homes_take_turns_and_a_token_finds_its_shard() {
        let table = LeaseTable::new();
        let homes: Vec<usize> = (0..SHARDS + 1).map(|_| table.home()).collect();
        assert_eq!(homes[..3], [0, 1, 2]);
        assert_eq!(homes[SHARDS], 0);
        let token = table.insert(5, entry(1), 100, |_, token| token);
        assert_eq!(table.shards[5].0.lock().live, 1);
        table.extend(MessageId(1), token, 0, 200).unwrap();
        let mut acked = None;
        table
            .ack(MessageId(1), token, 150, |entry| acked = Some(entry.id))
            .unwrap();
        assert_eq!(acked, Some(MessageId(1)));
        assert_eq!(table.shards[5].0.lock().acked, 1);
    }

    #[test]
    fn stale_deadlines_are_compacted_and_slots_reused() {
        let table = LeaseTable::new();
        for id in 0..10_000u64 {
            let token = lease(&table, id, 1_000);
            table.remove(MessageId(id), token, 0).unwrap();
        }
        let shard = table.shards[0].0.lock();
        assert!(
            shard.deadlines.len() <= 65,
            "{} stale",
            shard.deadlines.len()
        );
        assert_eq!(shard.slots.len(), 1, "one slot, reused");
    }
}

//! The lease table: which messages are in flight, under which lease, until
//! when.
//!
//! Leases live in shards keyed by message id, each behind its own mutex, so
//! consumers settling different messages rarely meet. Each shard keeps a
//! min-heap of deadlines beside its map. Settling a lease removes it from
//! the map only; its heap entry goes stale and is skipped when it comes up
//! (lazy deletion). Expiry therefore pops only what is due: O(expired ·
//! log n), never a scan of everything in flight. So that stale entries
//! cannot pile up while leases are settled faster than they expire, a shard
//! rebuilds its heap from the live leases once stale entries outnumber live
//! ones by two to one, which costs O(1) amortised per lease.
//!
//! Fencing: every lease has a token unique within the queue. Settling needs
//! the token of the current lease and a deadline still in the future; a
//! delivery whose lease expired (and whose message may have been delivered
//! again under a new token) can change nothing.

use crate::clock::Nanos;
use crate::error::SettleError;
use crate::message::{Held, MessageId};
use crate::padded::Padded;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

const SHARDS: usize = 16;

pub(crate) struct LeaseTable<T> {
    shards: Box<[Padded<Mutex<Shard<T>>>]>,
}

struct Shard<T> {
    leases: HashMap<u64, Lease<T>, BuildHasherDefault<IdHasher>>,
    /// (deadline, message id, token); may hold stale entries.
    deadlines: BinaryHeap<Reverse<(Nanos, u64, u64)>>,
    /// Leases ended by an acknowledgement, ever: counted here, under the
    /// lock the ack takes anyway, rather than in a shared atomic.
    acked: u64,
}

struct Lease<T> {
    entry: Held<T>,
    token: u64,
    deadline: Nanos,
}

impl<T> Shard<T> {
    /// Puts `entry` in flight under `token` until `deadline`.
    fn put(&mut self, entry: Held<T>, token: u64, deadline: Nanos) {
        let id = entry.id.0;
        self.push_deadline(deadline, id, token);
        self.leases.insert(
            id,
            Lease {
                entry,
                token,
                deadline,
            },
        );
    }

    /// Removes the lease on `id` if `token` is current and it has not run
    /// out at `now` (the fencing rule).
    fn take_current(&mut self, id: MessageId, token: u64, now: Nanos) -> Option<Held<T>> {
        let current = self.leases.get(&id.0)?;
        if current.token != token || current.deadline <= now {
            return None;
        }
        self.leases.remove(&id.0).map(|lease| lease.entry)
    }

    fn is_live(&self, &(deadline, id, token): &(Nanos, u64, u64)) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|l| l.token == token && l.deadline == deadline)
    }

    fn push_deadline(&mut self, deadline: Nanos, id: u64, token: u64) {
        self.deadlines.push(Reverse((deadline, id, token)));
        if self.deadlines.len() > 2 * self.leases.len() + 64 {
            let leases = &self.leases;
            self.deadlines.retain(|Reverse((deadline, id, token))| {
                leases
                    .get(id)
                    .is_some_and(|l| l.token == *token && l.deadline == *deadline)
            });
        }
    }

    fn earliest(&self) -> Nanos {
        self.deadlines.peek().map_or(Nanos::MAX, |Reverse(d)| d.0)
    }
}

impl<T> LeaseTable<T> {
    pub(crate) fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    leases: HashMap::default(),
                    deadlines: BinaryHeap::new(),
                    acked: 0,
                }))
            })
            .collect();
        LeaseTable { shards }
    }

    fn shard(&self, id: MessageId) -> &Mutex<Shard<T>> {
        &self.shards[shard_of(id)].0
    }

    /// How many messages are in flight: counted shard by shard, so exact
    /// only when no lease changes meanwhile (a count kept in one atomic
    /// would cost every receive and settle a shared write).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.0.lock().leases.len())
            .sum()
    }

    /// Puts `entry` in flight under lease `token` until `deadline`.
    pub(crate) fn insert(&self, entry: Held<T>, token: u64, deadline: Nanos) {
        self.shard(entry.id).lock().put(entry, token, deadline);
    }

    /// Puts several entries in flight until `deadline`, each under its own
    /// token, locking each shard once.
    pub(crate) fn insert_many(&self, mut leases: Vec<(Held<T>, u64)>, deadline: Nanos) {
        leases.sort_by_key(|(entry, _)| shard_of(entry.id));
        let mut leases = leases.into_iter().peekable();
        while let Some((entry, token)) = leases.next() {
            let index = shard_of(entry.id);
            let mut shard = self.shards[index].0.lock();
            let mut next = Some((entry, token));
            while let Some((entry, token)) = next {
                shard.put(entry, token, deadline);
                next = leases.next_if(|(entry, _)| shard_of(entry.id) == index);
            }
        }
    }

    /// Acknowledgements so far (see [`ack`](Self::ack)).
    pub(crate) fn acked(&self) -> u64 {
        self.shards.iter().map(|shard| shard.0.lock().acked).sum()
    }

    /// [`remove`](Self::remove), counted as an acknowledgement.
    pub(crate) fn ack(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
    ) -> Result<Held<T>, SettleError> {
        let mut shard = self.shard(id).lock();
        let entry = shard.take_current(id, token, now);
        shard.acked += u64::from(entry.is_some());
        drop(shard);
        entry.ok_or(SettleError::LeaseExpired { id })
    }

    /// Acknowledges every current lease of `leases` (skipping expired
    /// ones), locking each shard once; returns the messages.
    pub(crate) fn ack_many(&self, leases: &[(MessageId, u64)], now: Nanos) -> Vec<Held<T>> {
        let mut order: Vec<usize> = (0..leases.len()).collect();
        order.sort_by_key(|&i| shard_of(leases[i].0));
        let mut removed = Vec::with_capacity(leases.len());
        let mut i = 0;
        while i < order.len() {
            let index = shard_of(leases[order[i]].0);
            let mut shard = self.shards[index].0.lock();
            while i < order.len() && shard_of(leases[order[i]].0) == index {
                let (id, token) = leases[order[i]];
                if let Some(entry) = shard.take_current(id, token, now) {
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
        let entry = self.shard(id).lock().take_current(id, token, now);
        entry.ok_or(SettleError::LeaseExpired { id })
    }

    /// Moves the deadline of a current lease to `deadline`.
    pub(crate) fn extend(
        &self,
        id: MessageId,
        token: u64,
        now: Nanos,
        deadline: Nanos,
    ) -> Result<(), SettleError> {
        let mut shard = self.shard(id).lock();
        match shard.leases.get_mut(&id.0) {
            Some(lease) if lease.token == token && lease.deadline > now => {
                lease.deadline = deadline
            }
            _ => return Err(SettleError::LeaseExpired { id }),
        }
        shard.push_deadline(deadline, id.0, token);
        Ok(())
    }

    /// Removes every lease whose deadline is at or before `now`, appending
    /// its deadline and message to `expired`. Returns the earliest deadline
    /// left (which may be that of a stale entry, never later than a live
    /// one).
    pub(crate) fn expire(&self, now: Nanos, expired: &mut Vec<(Nanos, Held<T>)>) -> Nanos {
        let mut earliest = Nanos::MAX;
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            while let Some(&Reverse(top)) = shard.deadlines.peek() {
                if top.0 > now {
                    break;
                }
                shard.deadlines.pop();
                if shard.is_live(&top) {
                    let lease = shard.leases.remove(&top.1).expect("live lease");
                    expired.push((top.0, lease.entry));
                }
            }
            earliest = earliest.min(shard.earliest());
        }
        earliest
    }
}

fn shard_of(id: MessageId) -> usize {
    id.0 as usize % SHARDS
}

/// A hasher for message ids: a multiply and a fold, much cheaper than SipHash.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Ids in one shard share their low bits; fold the high half of the
        // product back so that the low bits hashbrown indexes by vary.
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Entry;

    fn entry(id: u64) -> Held<u32> {
        let mut entry = Entry::new(MessageId(id), id as u32, 0, None).into_held();
        entry.receive_count = 1;
        entry
    }

    #[test]
    fn remove_needs_the_current_token_and_a_live_deadline() {
        let table = LeaseTable::new();
        table.insert(entry(1), 10, 100);
        assert!(table.remove(MessageId(1), 11, 50).is_err(), "wrong token");
        assert!(
            table.remove(MessageId(1), 10, 100).is_err(),
            "deadline reached"
        );
        assert_eq!(table.remove(MessageId(1), 10, 99).unwrap().id, MessageId(1));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn expire_pops_only_what_is_due_and_skips_settled_and_extended() {
        let table = LeaseTable::new();
        for id in 0..10 {
            table.insert(entry(id), id, 100 + id);
        }
        table.remove(MessageId(3), 3, 0).unwrap();
        table.extend(MessageId(4), 4, 0, 1_000).unwrap();
        let mut expired = Vec::new();
        let earliest = table.expire(105, &mut expired);
        let mut ids: Vec<u64> = expired.iter().map(|(_, e)| e.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 5]);
        assert_eq!(earliest, 106);
        assert_eq!(table.len(), 5);
    }

    #[test]
    fn many_at_once_behave_as_one_at_a_time() {
        let table = LeaseTable::new();
        let leases = (0..100u64).map(|id| (entry(id), id + 1_000)).collect();
        table.insert_many(leases, 500);
        assert_eq!(table.len(), 100);
        // Current tokens for the even ids, stale ones for the odd ids.
        let settle: Vec<(MessageId, u64)> = (0..100u64)
            .map(|id| (MessageId(id), if id % 2 == 0 { id + 1_000 } else { id }))
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
        assert!(
            table.ack_many(&[(MessageId(1), 1_001)], 500).is_empty(),
            "expired"
        );
        let mut expired = Vec::new();
        table.expire(500, &mut expired);
        assert_eq!(expired.len(), 50);
    }

    #[test]
    fn stale_deadlines_are_compacted() {
        let table = LeaseTable::new();
        for id in 0..10_000u64 {
            table.insert(entry(id), id, 1_000);
            table.remove(MessageId(id), id, 0).unwrap();
        }
        let stale: usize = table
            .shards
            .iter()
            .map(|s| s.0.lock().deadlines.len())
            .sum();
        assert!(stale <= SHARDS * 65, "{stale} stale deadlines kept");
    }
}

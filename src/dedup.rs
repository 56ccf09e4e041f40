//! Idempotency keys: which keys were sent within the dedup window.
//!
//! Keys live in shards keyed by the key's hash. Each shard also keeps its
//! keys in a FIFO by expiry time; the window is the same for every key, so
//! the FIFO is (nearly) sorted and forgetting expired keys pops only what
//! has expired, on the next insert into that shard. A lookup also checks the
//! expiry itself, so the window is exact even before the FIFO catches up.

use crate::clock::{reached, Nanos};
use crate::message::MessageId;
use parking_lot::Mutex;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const SHARDS: usize = 8;

pub(crate) struct Dedup {
    window: Nanos,
    /// Compare keys only: a reused key is a duplicate whatever its payload.
    key_only: bool,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<Arc<str>, Seen>,
    by_expiry: VecDeque<(Nanos, Arc<str>)>,
}

#[derive(Clone, Copy)]
struct Seen {
    id: MessageId,
    payload_hash: u64,
    expires: Nanos,
}

/// What the table knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyStatus {
    /// Not seen within the window: the send goes ahead.
    New,
    /// Seen with the same payload: report `Duplicate(id)`.
    Duplicate(MessageId),
    /// Seen with another payload: refuse with `KeyConflict`.
    Conflict(MessageId),
}

impl Dedup {
    #[cfg(test)]
    pub(crate) fn new(window: Nanos) -> Self {
        Self::with_keys_only(window, false)
    }

    /// A table where, with `key_only`, a key seen within the window is a
    /// duplicate whatever the payload (never a conflict).
    pub(crate) fn with_keys_only(window: Nanos, key_only: bool) -> Self {
        Dedup {
            window,
            key_only,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// How long a key is remembered.
    pub(crate) fn window(&self) -> Nanos {
        self.window
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    /// Looks a key up without recording anything.
    pub(crate) fn check(&self, key: &str, payload_hash: u64, now: Nanos) -> KeyStatus {
        let shard = self.shard(key).lock();
        match shard.keys.get(key) {
            Some(seen) if !reached(seen.expires, now) => seen.status(payload_hash, self.key_only),
            _ => KeyStatus::New,
        }
    }

    /// The message first sent with `key`, if the key is remembered at `now`.
    pub(crate) fn id_of(&self, key: &str, now: Nanos) -> Option<MessageId> {
        let shard = self.shard(key).lock();
        let seen = shard.keys.get(key)?;
        (!reached(seen.expires, now)).then_some(seen.id)
    }

    /// Records `key` for message `id` unless it is live already; returns
    /// what was there. Only `New` means the key is now taken by `id`.
    #[cfg(test)]
    pub(crate) fn claim(
        &self,
        key: &Arc<str>,
        payload_hash: u64,
        id: MessageId,
        now: Nanos,
    ) -> KeyStatus {
        let claimed = self.claim_with(key, payload_hash, id, now, || Ok::<(), ()>(()));
        claimed.unwrap_or(KeyStatus::New)
    }

    /// Like `claim`, but takes the key only if `record` (called under the
    /// shard's lock, only when the key is new) succeeds. A persistent queue
    /// appends the message's record here, so that a duplicate send, which
    /// needs this lock to see the key, can only find it once the original's
    /// record is in the log (and then waits for that record to be durable).
    pub(crate) fn claim_with<E>(
        &self,
        key: &Arc<str>,
        payload_hash: u64,
        id: MessageId,
        now: Nanos,
        record: impl FnOnce() -> Result<(), E>,
    ) -> Result<KeyStatus, E> {
        let mut shard = self.shard(key).lock();
        shard.forget_expired(now);
        if let Some(seen) = shard
            .keys
            .get(key)
            .filter(|seen| !reached(seen.expires, now))
        {
            return Ok(seen.status(payload_hash, self.key_only));
        }
        record()?;
        let expires = now.saturating_add(self.window);
        shard.put(
            key,
            Seen {
                id,
                payload_hash,
                expires,
            },
        );
        Ok(KeyStatus::New)
    }

    /// Restores a key with a known expiry; of two entries for one key, the
    /// one that expires later wins.
    pub(crate) fn restore(
        &self,
        key: &Arc<str>,
        payload_hash: u64,
        id: MessageId,
        expires: Nanos,
        now: Nanos,
    ) {
        let mut shard = self.shard(key).lock();
        shard.forget_expired(now);
        if reached(expires, now)
            || shard
                .keys
                .get(key)
                .is_some_and(|seen| seen.expires >= expires)
        {
            return;
        }
        shard.put(
            key,
            Seen {
                id,
                payload_hash,
                expires,
            },
        );
    }

    /// How many keys are remembered (including some that expired but were
    /// not yet forgotten).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.shards.iter().map(|s| s.lock().keys.len()).sum()
    }
}

impl Seen {
    fn status(&self, payload_hash: u64, key_only: bool) -> KeyStatus {
        if key_only || self.payload_hash == payload_hash {
            KeyStatus::Duplicate(self.id)
        } else {
            KeyStatus::Conflict(self.id)
        }
    }
}

impl Shard {
    fn put(&mut self, key: &Arc<str>, seen: Seen) {
        self.by_expiry.push_back((seen.expires, Arc::clone(key)));
        self.keys.insert(Arc::clone(key), seen);
    }

    fn forget_expired(&mut self, now: Nanos) {
        while let Some((expires, _)) = self.by_expiry.front() {
            if !reached(*expires, now) {
                break;
            }
            let (expires, key) = self.by_expiry.pop_front().expect("peeked");
            if self
                .keys
                .get(&key)
                .is_some_and(|seen| seen.expires == expires)
            {
                self.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_duplicate_within_the_window_and_new_after_it() {
        let dedup = Dedup::new(100);
        let key: Arc<str> = "k".into();
        assert_eq!(dedup.claim(&key, 7, MessageId(1), 0), KeyStatus::New);
        assert_eq!(dedup.check(&key, 7, 99), KeyStatus::Duplicate(MessageId(1)));
        assert_eq!(dedup.check(&key, 8, 99), KeyStatus::Conflict(MessageId(1)));
        assert_eq!(
            dedup.claim(&key, 8, MessageId(2), 99),
            KeyStatus::Conflict(MessageId(1))
        );
        assert_eq!(dedup.check(&key, 7, 100), KeyStatus::New);
        assert_eq!(dedup.claim(&key, 8, MessageId(3), 100), KeyStatus::New);
        assert_eq!(dedup.check(&key, 7, 150), KeyStatus::Conflict(MessageId(3)));
    }

    #[test]
    fn with_keys_only_another_payload_is_a_duplicate_too() {
        let dedup = Dedup::with_keys_only(100, true);
        let key: Arc<str> = "k".into();
        assert_eq!(dedup.claim(&key, 7, MessageId(1), 0), KeyStatus::New);
        assert_eq!(dedup.check(&key, 8, 99), KeyStatus::Duplicate(MessageId(1)));
        assert_eq!(dedup.claim(&key, 8, MessageId(2), 100), KeyStatus::New);
    }

    #[test]
    fn expired_keys_are_forgotten() {
        let dedup = Dedup::new(10);
        for i in 0..1_000u64 {
            let key: Arc<str> = format!("key-{i}").into();
            dedup.claim(&key, 0, MessageId(i), i);
        }
        // A shard forgets on insert, so each keeps at most the keys of its
        // own last window: ten per shard, out of a thousand claimed.
        assert!(dedup.remembered() <= 10 * SHARDS, "{}", dedup.remembered());
    }
}

//! A message as the queue holds it, between states.
//!
//! An [`Entry`] has exactly one owner at a time: the ready queue, the delay
//! queue, the lease table or the dead-letter store. Moving it between them
//! is what a state change is, so a message can never be in two states. (A
//! [`Batch`](crate::Batch) keeps a read-only copy of its messages, shared
//! with their lease, for its holder to read; it settles nothing once the
//! lease has ended.)

use crate::clock::Nanos;
use crate::order::Priority;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The identity of a message, unique within a queue and increasing in send
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub(crate) u64);

impl MessageId {
    /// The number behind this id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A message with the metadata that travels with it; `P` is how its payload
/// is held (see [`Queued`] and [`Held`]).
///
/// Kept small (the payload plus 40 bytes) because a deep queue holds
/// millions: the rarely used idempotency key and error texts live behind
/// one optional box.
pub(crate) struct Entry<P> {
    pub(crate) id: MessageId,
    pub(crate) payload: P,
    /// When the message was first enqueued (kept across retries and redrives).
    pub(crate) enqueued_at: Nanos,
    /// Deliveries so far; reset by a redrive.
    pub(crate) receive_count: u32,
    /// Leases granted so far in this process, never reset: the number of
    /// the current lease, part of its token (a delivery from before a
    /// redrive cannot settle a later one).
    leases: u32,
    extra: Option<Box<Extra>>,
}

/// A message in the ready or the delay queue. A message never delivered
/// carries its payload by value: nothing is allocated for it between the
/// producer and the consumer, and the consumer that receives it allocates
/// its shared copy (or, for a batch, one store for all the batch's
/// payloads).
pub(crate) type Queued<T> = Entry<Payload<T>>;

/// A message in flight or dead-lettered: deliveries and dead letters handed
/// out share its payload, which stays readable while they live.
pub(crate) type Held<T> = Entry<SharedPayload<T>>;

/// A queued message's payload: by value until its first delivery, shared
/// after (an expired delivery may still be reading it).
pub(crate) enum Payload<T> {
    Owned(T),
    Shared(SharedPayload<T>),
}

/// A payload readable from several places at once.
pub(crate) enum SharedPayload<T> {
    /// Shared on its own.
    Alone(Arc<T>),
    /// In the store of the batch it was received in, at this index. A store
    /// holds payloads only, so this keeps alive nothing but that batch's
    /// payloads.
    InBatch(Arc<Vec<T>>, u32),
}

impl<T> Payload<T> {
    fn share(self) -> SharedPayload<T> {
        match self {
            Payload::Owned(payload) => SharedPayload::Alone(Arc::new(payload)),
            Payload::Shared(payload) => payload,
        }
    }
}

impl<T> Deref for Payload<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Payload::Owned(payload) => payload,
            Payload::Shared(payload) => payload,
        }
    }
}

impl<T> Deref for SharedPayload<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match self {
            SharedPayload::Alone(payload) => payload,
            SharedPayload::InBatch(store, index) => &store[*index as usize],
        }
    }
}

impl<T> Clone for SharedPayload<T> {
    #[inline]
    fn clone(&self) -> Self {
        match self {
            SharedPayload::Alone(payload) => SharedPayload::Alone(Arc::clone(payload)),
            SharedPayload::InBatch(store, index) => {
                SharedPayload::InBatch(Arc::clone(store), *index)
            }
        }
    }
}

/// The messages of a batch received as one, as its lease and its
/// [`Batch`](crate::Batch) share them. The payloads that came by value
/// (never delivered before) are moved into one store: one allocation for
/// the batch instead of one shared payload per message.
pub(crate) struct BatchMessages<T> {
    entries: Vec<Entry<Slot<T>>>,
    store: Arc<Vec<T>>,
}

pub(crate) type Batched<T> = Arc<BatchMessages<T>>;

/// Where a batch's message finds its payload.
enum Slot<T> {
    /// In the batch's store, at this index.
    Stored(u32),
    /// Shared already (the message was delivered before).
    Shared(SharedPayload<T>),
}

impl<T> Default for BatchMessages<T> {
    fn default() -> Self {
        BatchMessages {
            entries: Vec::new(),
            store: Arc::default(),
        }
    }
}

/// A batch being taken from the ready queue, before it is shared.
pub(crate) struct BatchBuilder<T> {
    entries: Vec<Entry<Slot<T>>>,
    store: Vec<T>,
}

impl<T> BatchBuilder<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        BatchBuilder {
            entries: Vec::with_capacity(capacity),
            store: Vec::with_capacity(capacity),
        }
    }

    /// Adds a message; a payload that came by value moves into the store.
    pub(crate) fn push(&mut self, entry: Queued<T>) {
        let store = &mut self.store;
        self.entries
            .push(entry.map_payload(|payload| match payload {
                Payload::Owned(payload) => {
                    store.push(payload);
                    Slot::Stored(store.len() as u32 - 1)
                }
                Payload::Shared(payload) => Slot::Shared(payload),
            }));
    }

    /// Each message's id and receive count.
    pub(crate) fn receives(&self) -> impl Iterator<Item = (MessageId, u32)> + '_ {
        self.entries
            .iter()
            .map(|entry| (entry.id, entry.receive_count))
    }

    /// The messages as they were pushed (to put them back).
    pub(crate) fn into_queued(self) -> Vec<Queued<T>> {
        // `push` stored the owned payloads in entry order.
        let mut stored = self.store.into_iter();
        self.entries
            .into_iter()
            .map(|entry| {
                entry.map_payload(|slot| match slot {
                    Slot::Stored(_) => {
                        Payload::Owned(stored.next().expect("one stored payload per slot"))
                    }
                    Slot::Shared(payload) => Payload::Shared(payload),
                })
            })
            .collect()
    }

    /// The batch, ready to share. Sized for the messages ready when it
    /// began, it gives back room it holds more than twice over (other
    /// consumers took them first, or the payloads were shared already).
    pub(crate) fn finish(mut self) -> BatchMessages<T> {
        if self.entries.capacity() > 2 * self.entries.len() {
            self.entries.shrink_to_fit();
        }
        if self.store.capacity() > 2 * self.store.len() {
            self.store.shrink_to_fit();
        }
        BatchMessages {
            entries: self.entries,
            store: Arc::new(self.store),
        }
    }
}

impl<T> BatchMessages<T> {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `index`th message's metadata (its payload is [`payload`](Self::payload)).
    pub(crate) fn entry(&self, index: usize) -> &Entry<impl Sized> {
        &self.entries[index]
    }

    pub(crate) fn payload(&self, index: usize) -> &T {
        match &self.entries[index].payload {
            Slot::Stored(at) => &self.store[*at as usize],
            Slot::Shared(payload) => payload,
        }
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.entries.iter().map(|entry| entry.id)
    }

    /// The `index`th message on its own, sharing the batch's store.
    pub(crate) fn share(&self, index: usize) -> Held<T> {
        self.entries[index].clone_with(|slot| match slot {
            Slot::Stored(at) => SharedPayload::InBatch(Arc::clone(&self.store), *at),
            Slot::Shared(payload) => payload.clone(),
        })
    }

    /// Each message on its own, in order. If `batch` was the last holder
    /// of its store, the payloads move out of it (each into its own shared
    /// allocation) and nothing of the batch stays alive; otherwise they
    /// share it.
    pub(crate) fn into_held(batch: Batched<T>) -> Vec<Held<T>> {
        let batch = match Arc::try_unwrap(batch) {
            Ok(batch) => batch,
            Err(shared) => return (0..shared.len()).map(|i| shared.share(i)).collect(),
        };
        let store = match Arc::try_unwrap(batch.store) {
            Ok(store) => store,
            Err(store) => {
                let batch = BatchMessages { store, ..batch };
                return (0..batch.len()).map(|i| batch.share(i)).collect();
            }
        };
        let messages = BatchBuilder {
            entries: batch.entries,
            store,
        };
        let queued = messages.into_queued();
        queued.into_iter().map(Queued::into_held).collect()
    }
}

#[derive(Clone, Default)]
struct Extra {
    key: Option<Arc<str>>,
    /// The error texts consumers gave through `fail`, oldest first.
    errors: Vec<String>,
    /// Its own `max_receives`, instead of the queue's.
    max_receives: Option<u32>,
    /// When its time to live runs out, if it is never received.
    expires_at: Option<Nanos>,
    /// Its priority (see `order.rs`).
    priority: Priority,
    /// Its message group (see `order.rs`).
    group: Option<Arc<str>>,
}

impl<T> Queued<T> {
    /// A message as sent: no receives, no errors.
    pub(crate) fn new(
        id: MessageId,
        payload: T,
        enqueued_at: Nanos,
        key: Option<Arc<str>>,
    ) -> Self {
        let mut entry = Entry {
            id,
            payload: Payload::Owned(payload),
            enqueued_at,
            receive_count: 0,
            leases: 0,
            extra: None,
        };
        if key.is_some() {
            entry.extra_mut().key = key;
        }
        entry
    }

    /// Its payload made shareable, to put it in flight or in the
    /// dead-letter queue.
    pub(crate) fn into_held(self) -> Held<T> {
        self.map_payload(Payload::share)
    }
}

impl<T> Held<T> {
    /// Back in the queue (after an expiry, a release or a redrive).
    pub(crate) fn into_queued(self) -> Queued<T> {
        self.map_payload(Payload::Shared)
    }
}

impl<P> Entry<P> {
    fn map_payload<Q>(self, f: impl FnOnce(P) -> Q) -> Entry<Q> {
        Entry {
            id: self.id,
            payload: f(self.payload),
            enqueued_at: self.enqueued_at,
            receive_count: self.receive_count,
            leases: self.leases,
            extra: self.extra,
        }
    }

    /// A copy of its metadata, with the payload `f` makes of its own.
    fn clone_with<Q>(&self, f: impl FnOnce(&P) -> Q) -> Entry<Q> {
        Entry {
            id: self.id,
            payload: f(&self.payload),
            enqueued_at: self.enqueued_at,
            receive_count: self.receive_count,
            leases: self.leases,
            extra: self.extra.clone(),
        }
    }

    /// Counts a new lease on it and returns the count: unique for this
    /// message in this process (it would take 2^30 deliveries of one
    /// message, while a delivery from the first is still held, to repeat).
    pub(crate) fn next_lease(&mut self) -> u32 {
        self.leases = self.leases.wrapping_add(1);
        self.leases
    }

    /// The count of its current (or last) lease.
    pub(crate) fn leases(&self) -> u32 {
        self.leases
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The idempotency key it was sent with.
    pub(crate) fn key(&self) -> Option<&Arc<str>> {
        self.extra.as_ref()?.key.as_ref()
    }

    /// The error texts of its failed attempts, oldest first.
    pub(crate) fn errors(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |extra| &extra.errors)
    }

    /// Its own `max_receives`, if it was sent with one.
    pub(crate) fn max_receives(&self) -> Option<u32> {
        self.extra.as_ref()?.max_receives
    }

    /// When its time to live runs out, if it was sent with one (and not
    /// redriven since).
    pub(crate) fn expires_at(&self) -> Option<Nanos> {
        self.extra.as_ref()?.expires_at
    }

    /// Whether it was never received and its time to live has run out at
    /// `now`.
    pub(crate) fn expired(&self, now: Nanos) -> bool {
        self.expires_at().is_some_and(|at| at <= now) && self.receive_count == 0
    }

    /// Sets its per-message overrides.
    pub(crate) fn set_limits(&mut self, max_receives: Option<u32>, expires_at: Option<Nanos>) {
        if max_receives.is_some() || expires_at.is_some() {
            let extra = self.extra_mut();
            extra.max_receives = max_receives;
            extra.expires_at = expires_at;
        }
    }

    /// Its priority ([`Priority::Normal`] unless sent with another).
    #[inline]
    pub(crate) fn priority(&self) -> Priority {
        self.extra
            .as_ref()
            .map_or(Priority::Normal, |extra| extra.priority)
    }

    /// The message group it was sent with.
    #[inline]
    pub(crate) fn group(&self) -> Option<&Arc<str>> {
        self.extra.as_ref()?.group.as_ref()
    }

    /// Whether it needs more than FIFO order: a priority or a group (see
    /// `order.rs`). One test of a pointer for a message with no extras.
    #[inline(always)]
    pub(crate) fn is_ordered(&self) -> bool {
        match &self.extra {
            None => false,
            Some(extra) => extra.priority != Priority::Normal || extra.group.is_some(),
        }
    }

    /// Sets its priority and group.
    pub(crate) fn set_order(&mut self, priority: Priority, group: Option<Arc<str>>) {
        if priority != Priority::Normal || group.is_some() {
            let extra = self.extra_mut();
            extra.priority = priority;
            extra.group = group;
        }
    }

    /// Drops its time to live (a redrive starts a new life).
    pub(crate) fn clear_expiry(&mut self) {
        if let Some(extra) = &mut self.extra {
            extra.expires_at = None;
        }
    }

    pub(crate) fn push_error(&mut self, error: String) {
        self.extra_mut().errors.push(error);
    }

    pub(crate) fn set_errors(&mut self, errors: Vec<String>) {
        if !errors.is_empty() || self.extra.is_some() {
            self.extra_mut().errors = errors;
        }
    }
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        self.clone_with(SharedPayload::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_key_or_errors_stays_small() {
        assert!(std::mem::size_of::<Held<[u64; 8]>>() <= 48);
        assert!(std::mem::size_of::<Queued<[u64; 8]>>() <= 64 + 40);
        let mut entry = Entry::new(MessageId(1), 7u32, 0, None);
        assert!(entry.key().is_none() && entry.errors().is_empty());
        entry.push_error("boom".into());
        assert_eq!(entry.errors(), ["boom"]);
        entry.set_errors(Vec::new());
        assert!(entry.errors().is_empty());
    }
}

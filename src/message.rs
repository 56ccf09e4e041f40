//! A message as the queue holds it, between states.
//!
//! An [`Entry`] has exactly one owner at a time: the ready queue, the delay
//! queue, the lease table or the dead-letter store. Moving it between them
//! is what a state change is, so a message can never be in two states.

use crate::clock::Nanos;
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
/// (and later frees) its shared copy on its own thread.
pub(crate) type Queued<T> = Entry<Payload<T>>;

/// A message in flight or dead-lettered: deliveries and dead letters handed
/// out share its payload, which stays readable while they live.
pub(crate) type Held<T> = Entry<SharedPayload<T>>;

/// The messages of a batch received as one: taken from the ready queue as
/// they were, and shared by the batch, its lease, and (after the lease
/// ends without an ack) whatever its messages become next. One allocation
/// for the whole batch instead of one shared payload per message.
pub(crate) type Batched<T> = Arc<Vec<Queued<T>>>;

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
    /// Held by value in the batch it was received in, at this index (see
    /// [`share_batched`]): never nested deeper than that.
    InBatch(Batched<T>, u32),
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
            SharedPayload::InBatch(batch, index) => &batch[*index as usize].payload,
        }
    }
}

impl<T> Clone for SharedPayload<T> {
    #[inline]
    fn clone(&self) -> Self {
        match self {
            SharedPayload::Alone(payload) => SharedPayload::Alone(Arc::clone(payload)),
            SharedPayload::InBatch(batch, index) => {
                SharedPayload::InBatch(Arc::clone(batch), *index)
            }
        }
    }
}

/// The `index`th message of `batch`, on its own again (its lease ended
/// without an ack, or it is to be settled alone). Its payload refers to
/// the batch; a payload the batch itself only refers to is referred to
/// directly, so a message received in batch after batch keeps at most one
/// of them alive.
pub(crate) fn share_batched<T>(batch: &Batched<T>, index: usize) -> Held<T> {
    let entry = &batch[index];
    let payload = match &entry.payload {
        Payload::Owned(_) => SharedPayload::InBatch(Arc::clone(batch), index as u32),
        Payload::Shared(payload) => payload.clone(),
    };
    Entry {
        id: entry.id,
        payload,
        enqueued_at: entry.enqueued_at,
        receive_count: entry.receive_count,
        leases: entry.leases,
        extra: entry.extra.clone(),
    }
}

#[derive(Clone, Default)]
struct Extra {
    key: Option<Arc<str>>,
    /// The error texts consumers gave through `fail`, oldest first.
    errors: Vec<String>,
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

    /// Counts a new lease on it and returns the count: unique for this
    /// message in this process (it would take 2^32 deliveries of one
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
        Entry {
            id: self.id,
            payload: self.payload.clone(),
            enqueued_at: self.enqueued_at,
            receive_count: self.receive_count,
            leases: self.leases,
            extra: self.extra.clone(),
        }
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

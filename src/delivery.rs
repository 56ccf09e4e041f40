//! A received message under a lease.

use crate::clock::{self, Nanos};
use crate::error::SettleError;
use crate::message::{Held, MessageId, SharedPayload};
use crate::shared::{Logged, Shared};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A message handed to a consumer, invisible to other consumers until its
/// lease runs out.
///
/// Settle it exactly once: [`ack`](Self::ack) when done;
/// [`nack`](Self::nack), [`fail`](Self::fail) or
/// [`retry_after`](Self::retry_after) to try again later;
/// [`dead_letter`](Self::dead_letter) to give up on it. Dropping it
/// unsettled is a `nack`: the message is released at once and the attempt
/// counts as failed.
///
/// Every delivery carries its own lease. Once the lease has run out (the
/// visibility timeout passed without an ack or an
/// [`extend`](Self::extend)), the message is visible again and may already
/// be delivered to someone else; settling through this delivery then
/// returns [`SettleError::LeaseExpired`] and changes nothing.
///
/// A `Delivery` derefs to the payload.
pub struct Delivery<T> {
    source: Source<T>,
    payload: SharedPayload<T>,
    id: MessageId,
    token: u64,
    key: Option<Arc<str>>,
    receive_count: u32,
    enqueued_at: Nanos,
    settled: bool,
    /// From receive to settle (feature `tracing`; zero-sized without).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    span: crate::observe::DeliverySpan,
}

/// What acknowledging without waiting left to wait for.
pub(crate) enum Acked<T> {
    /// A local queue's record.
    Local(Arc<Shared<T>>, Logged),
    /// Nothing: done on the server.
    #[cfg(feature = "redis")]
    Done,
}

/// The queue, as the deliveries of one [`Consumer`](crate::Consumer) handle
/// hold it. A delivery must keep its queue alive, which costs an atomic
/// increment when it is made and a decrement when it is dropped; through
/// one `Origin` per handle, consumers on different threads do those on
/// different cache lines instead of all on the queue's one count.
pub(crate) struct Origin<T> {
    pub(crate) shared: Arc<Shared<T>>,
    /// The lease shard of this handle's deliveries.
    pub(crate) home: usize,
}

/// Where a handle's messages live: this process's queue, or a queue on
/// a Redis server (feature `redis`). Without the feature it has one
/// variant, and every `match` on it compiles to the local call alone.
pub(crate) enum Source<T> {
    Local(Arc<Origin<T>>),
    #[cfg(feature = "redis")]
    Redis(Arc<crate::redis::Remote<T>>),
}

impl<T> Clone for Source<T> {
    fn clone(&self) -> Self {
        match self {
            Source::Local(origin) => Source::Local(Arc::clone(origin)),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => Source::Redis(Arc::clone(remote)),
        }
    }
}

impl<T> Source<T> {
    /// The queue's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        match self {
            Source::Local(origin) => &origin.shared.config.name,
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.name(),
        }
    }
}

impl<T> Delivery<T> {
    pub(crate) fn new(origin: Arc<Origin<T>>, entry: &Held<T>, token: u64) -> Self {
        Self::from_source(Source::Local(origin), entry, token)
    }

    pub(crate) fn from_source(source: Source<T>, entry: &Held<T>, token: u64) -> Self {
        Delivery {
            payload: entry.payload.clone(),
            id: entry.id,
            token,
            key: entry.key().cloned(),
            receive_count: entry.receive_count,
            enqueued_at: entry.enqueued_at,
            settled: false,
            span: crate::observe::delivery_span(
                source.name(),
                entry.id,
                entry.key().map(|k| &**k),
                entry.receive_count,
            ),
            source,
        }
    }

    /// This delivery's span (feature `tracing`): `spool.delivery` with
    /// the queue's name, the message's id, key and receive count, open
    /// from the receive until the delivery is settled or dropped. It is
    /// not entered for you: enter it around the work (or make it the
    /// parent of the handler's spans).
    #[cfg(feature = "tracing")]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The idempotency key it was sent with, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Which delivery of this message this is: 1 the first time, 2 after
    /// one failed attempt, and so on.
    pub fn receive_count(&self) -> u32 {
        self.receive_count
    }

    /// When the message was first enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        clock::from_nanos(self.enqueued_at)
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// [`ack`](Self::ack) without waiting for the disk: the queue, and
    /// the record to wait for there.
    pub(crate) fn ack_logged(mut self) -> Result<Acked<T>, SettleError> {
        self.settled = true;
        match &self.source {
            Source::Local(origin) => {
                let shared = Arc::clone(&origin.shared);
                let logged = shared.ack_logged(self.id, self.token)?;
                Ok(Acked::Local(shared, logged))
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                remote.ack(self.token, &[self.id])?;
                Ok(Acked::Done)
            }
        }
    }

    /// Done: removes the message from the queue for good.
    pub fn ack(mut self) -> Result<(), SettleError> {
        self.settled = true;
        match &self.source {
            Source::Local(origin) => origin.shared.ack(self.id, self.token),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.ack(self.token, &[self.id]),
        }
    }

    /// Not done: makes the message visible again after the queue's
    /// [`Backoff`](crate::Backoff) (by default about 1 s, doubling with
    /// each attempt), or dead-letters it if this was its last allowed
    /// receive.
    pub fn nack(mut self) -> Result<(), SettleError> {
        self.settled = true;
        self.release(None, None)
    }

    fn release(&self, delay: Option<Duration>, error: Option<String>) -> Result<(), SettleError> {
        match &self.source {
            Source::Local(origin) => origin.shared.release(self.id, self.token, delay, error),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.release(self.token, &[self.id], delay, error),
        }
    }

    /// A `nack` that records why the attempt failed: any error or text
    /// (`&str`, `String`, `io::Error`, ...). Its text (up to
    /// [`MAX_TEXT_BYTES`](crate::MAX_TEXT_BYTES)) is kept with the message
    /// and shown if it is dead-lettered.
    pub fn fail(mut self, error: impl fmt::Display) -> Result<(), SettleError> {
        self.settled = true;
        let error = crate::producer::bounded_text(error.to_string());
        self.release(None, Some(error))
    }

    /// A `nack` with an explicit delay instead of the queue's backoff.
    pub fn retry_after(mut self, delay: Duration) -> Result<(), SettleError> {
        self.settled = true;
        self.release(Some(delay), None)
    }

    /// Moves the message to the dead-letter queue now, with `reason`.
    pub fn dead_letter(mut self, reason: impl Into<String>) -> Result<(), SettleError> {
        self.settled = true;
        let reason = crate::producer::bounded_text(reason.into());
        match &self.source {
            Source::Local(origin) => origin.shared.reject(self.id, self.token, reason),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.reject(self.token, &[self.id], reason),
        }
    }

    /// Keeps the lease for `by` from now (the heartbeat of a long job).
    pub fn extend(&self, by: Duration) -> Result<(), SettleError> {
        match &self.source {
            Source::Local(origin) => origin.shared.extend(self.id, self.token, by),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.extend(self.token, &[self.id], by).map(drop),
        }
    }

    /// [`ack`](Self::ack) for async code: waits for the disk (under
    /// [`Durability::Sync`](crate::Durability::Sync)) without blocking the
    /// thread.
    ///
    /// Cancel safety: the ack is made at the first poll. Dropped before
    /// that, the delivery is dropped unsettled (a `nack`); dropped after,
    /// the message is acknowledged and only the wait for the disk is given
    /// up (a [`Queue::sync_async`](crate::Queue::sync_async) then waits for
    /// it).
    pub async fn ack_async(mut self) -> Result<(), SettleError> {
        self.settled = true;
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let logged = shared.ack_logged(self.id, self.token)?;
                shared.settled_async(logged).await
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let (remote, id, token) = (remote.core(), self.id, self.token);
                crate::redis::offload(move || remote.ack(token, &[id])).await
            }
        }
    }

    /// [`nack`](Self::nack) for async code. Only a message this sends to
    /// the dead-letter queue waits for the disk. Cancel safety as
    /// [`ack_async`](Self::ack_async).
    pub async fn nack_async(mut self) -> Result<(), SettleError> {
        self.settled = true;
        self.release_async(None, None).await
    }

    async fn release_async(
        &self,
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), SettleError> {
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let logged = shared.release_logged(self.id, self.token, delay, error)?;
                shared.settled_async(logged).await
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let (remote, id, token) = (remote.core(), self.id, self.token);
                crate::redis::offload(move || remote.release(token, &[id], delay, error)).await
            }
        }
    }

    /// [`fail`](Self::fail) for async code. Only a message this sends to
    /// the dead-letter queue waits for the disk. Cancel safety as
    /// [`ack_async`](Self::ack_async).
    pub fn fail_async(
        mut self,
        error: impl fmt::Display,
    ) -> impl std::future::Future<Output = Result<(), SettleError>> + Send
    where
        T: Send + Sync,
    {
        // The text is made now: the error's type need not be `Send`.
        let error = crate::producer::bounded_text(error.to_string());
        async move {
            self.settled = true;
            self.release_async(None, Some(error)).await
        }
    }

    /// [`retry_after`](Self::retry_after) for async code. Only a message
    /// this sends to the dead-letter queue waits for the disk. Cancel
    /// safety as [`ack_async`](Self::ack_async).
    pub async fn retry_after_async(mut self, delay: Duration) -> Result<(), SettleError> {
        self.settled = true;
        self.release_async(Some(delay), None).await
    }

    /// [`dead_letter`](Self::dead_letter) for async code. Cancel safety as
    /// [`ack_async`](Self::ack_async).
    pub async fn dead_letter_async(mut self, reason: impl Into<String>) -> Result<(), SettleError> {
        self.settled = true;
        let reason = crate::producer::bounded_text(reason.into());
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let logged = shared.reject_logged(self.id, self.token, reason)?;
                shared.settled_async(logged).await
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let (remote, id, token) = (remote.core(), self.id, self.token);
                crate::redis::offload(move || remote.reject(token, &[id], reason)).await
            }
        }
    }

    /// A handle on this delivery's lease that another thread can extend or
    /// release while this delivery is busy (the worker pool's heartbeat).
    /// Whether this delivery came from `shared`.
    pub(crate) fn is_from(&self, source: &Source<T>) -> bool {
        match (&self.source, source) {
            (Source::Local(mine), Source::Local(theirs)) => {
                Arc::ptr_eq(&mine.shared, &theirs.shared)
            }
            #[cfg(feature = "redis")]
            (Source::Redis(mine), Source::Redis(theirs)) => Arc::ptr_eq(mine, theirs),
            #[cfg(feature = "redis")]
            _ => false,
        }
    }

    /// Undoes the receive of a Redis queue whose caller is gone (a dropped
    /// async receive): the message goes back to the front of the ready
    /// queue with its receive count as it was.
    #[cfg(feature = "redis")]
    pub(crate) fn unreceive(mut self) {
        self.settled = true;
        match &self.source {
            Source::Local(_) => self.settled = false, // dropped: released
            Source::Redis(remote) => remote.core().unreceive_later(self.token, vec![self.id]),
        }
    }

    /// Hands the settling over to the caller (a batch ack): dropping the
    /// delivery then releases nothing.
    pub(crate) fn into_lease(mut self) -> (MessageId, u64) {
        self.settled = true;
        (self.id, self.token)
    }

    /// Its payload, shared (for a worker's [`Job`](crate::Job)).
    pub(crate) fn shared_payload(&self) -> SharedPayload<T> {
        self.payload.clone()
    }

    pub(crate) fn lease(&self) -> LeaseHandle<T> {
        LeaseHandle {
            source: self.source.clone(),
            id: self.id,
            token: self.token,
        }
    }
}

/// The lease of one delivery, detached from it: fenced by the same token,
/// so it can change nothing once the delivery is settled or expired.
pub(crate) struct LeaseHandle<T> {
    source: Source<T>,
    id: MessageId,
    token: u64,
}

impl<T> LeaseHandle<T> {
    /// As [`Delivery::extend`], returning the new deadline.
    pub(crate) fn extend_to(&self, by: Duration) -> Result<Nanos, SettleError> {
        match &self.source {
            Source::Local(origin) => origin.shared.extend_to(self.id, self.token, by),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.extend(self.token, &[self.id], by),
        }
    }

    /// The lease's deadline, if it is still current.
    pub(crate) fn deadline(&self) -> Option<Nanos> {
        match &self.source {
            Source::Local(origin) => origin.shared.lease_deadline_of(self.id, self.token),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.deadline(self.id, self.token),
        }
    }

    /// As [`Delivery::nack`]: the delivery itself can then settle nothing.
    pub(crate) fn release(&self) -> Result<(), SettleError> {
        match &self.source {
            Source::Local(origin) => origin.shared.release(self.id, self.token, None, None),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.release(self.token, &[self.id], None, None),
        }
    }
}

impl<T> Deref for Delivery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.payload
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        if !self.settled {
            // An expired lease has nothing left to release. Nobody sees
            // the outcome, so nothing waits for the disk (a drop in async
            // code must not block).
            match &self.source {
                Source::Local(origin) => {
                    let _ = (origin.shared).release_logged(self.id, self.token, None, None);
                }
                // A drop must not wait on the network: a helper thread
                // releases it.
                #[cfg(feature = "redis")]
                Source::Redis(remote) => remote.core().release_later(self.token, vec![self.id]),
            }
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("key", &self.key())
            .field("receive_count", &self.receive_count)
            .field("payload", &*self.payload)
            .finish_non_exhaustive()
    }
}

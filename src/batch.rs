//! Messages received together under one lease.

use crate::clock;
use crate::delivery::{Delivery, Origin, Source};
use crate::error::SettleError;
use crate::lease::NO_LEASE;
use crate::message::{Batched, MessageId};
use std::fmt;
use std::iter::FusedIterator;
use std::ops::Index;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Messages received together by [`Consumer::recv_batch`](crate::Consumer::recv_batch),
/// under one lease: invisible to other consumers until it runs out, and
/// settled all at once.
///
/// [`ack`](Self::ack) acknowledges every message of the batch;
/// [`nack`](Self::nack) and [`retry_after`](Self::retry_after) release
/// every one of them, each with its own backoff (and dead-lettered if that
/// was its last allowed receive). Dropping it unsettled is a `nack`. To
/// settle its messages one by one instead, turn it
/// [`into_deliveries`](Self::into_deliveries).
///
/// A batch costs the queue about what one [`Delivery`] does, whatever its
/// size: one lease, one reference to the queue, one allocation for all its
/// payloads. Settled whole or split, its payloads leave that allocation,
/// so a message that lives on (released, retried, dead-lettered) keeps
/// none of its siblings alive. Only if the lease runs out while you still
/// hold the batch do the messages that come back share its allocation
/// with it, until the last of them is gone.
///
/// ```
/// use spool::Queue;
/// use std::time::Duration;
///
/// let queue: Queue<u32> = Queue::builder().open()?;
/// queue.producer().send_batch((1..=64).collect())?;
/// let batch = queue.consumer().recv_batch(64, Duration::from_secs(1))?;
/// let total: u32 = batch.iter().sum();
/// batch.ack()?;
/// assert_eq!((total, queue.stats().acked), (2080, 64));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batch<T> {
    source: Source<T>,
    messages: Batched<T>,
    token: u64,
    settled: bool,
}

impl<T> Batch<T> {
    pub(crate) fn new(origin: Arc<Origin<T>>, messages: Batched<T>, token: u64) -> Self {
        Self::from_source(Source::Local(origin), messages, token)
    }

    pub(crate) fn from_source(source: Source<T>, messages: Batched<T>, token: u64) -> Self {
        Batch {
            source,
            messages,
            token,
            settled: false,
        }
    }

    /// How many messages it holds (at least one).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it holds no message: never true, as a receive returns a
    /// batch only once it has a message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payloads, in the order they were received.
    pub fn iter(&self) -> BatchIter<'_, T> {
        BatchIter {
            batch: self,
            range: 0..self.len(),
        }
    }

    /// The messages with what is known about each, in the order they were
    /// received.
    pub fn messages(&self) -> impl ExactSizeIterator<Item = BatchMessage<'_, T>> + '_ {
        (0..self.len()).map(move |index| BatchMessage { batch: self, index })
    }

    /// The `index`th message, if there is one.
    pub fn get(&self, index: usize) -> Option<BatchMessage<'_, T>> {
        (index < self.len()).then_some(BatchMessage { batch: self, index })
    }

    /// The id of the message that names the batch's lease (its first).
    fn lease_id(&self) -> MessageId {
        self.messages.entry(0).id
    }

    /// Gives up this batch's reference to its messages, to settle them:
    /// with none left but the lease's, they can leave the batch's store.
    fn take_messages(&mut self) -> Batched<T> {
        self.settled = true;
        std::mem::take(&mut self.messages)
    }

    /// The ids of the batch's messages.
    #[cfg(feature = "redis")]
    fn ids(messages: &Batched<T>) -> Vec<MessageId> {
        messages.ids().collect()
    }

    /// Releases every message, after `delay` or each one's backoff,
    /// recording `error` as each one's failed attempt.
    fn release(
        &mut self,
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), SettleError> {
        let id = self.lease_id();
        let messages = self.take_messages();
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let logged = shared.release_batch_logged(id, self.token, delay, error, messages)?;
                shared.settled(logged)
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                remote.release(self.token, &Self::ids(&messages), delay, error)
            }
        }
    }

    /// [`release`](Self::release) for async code.
    async fn release_async(
        &mut self,
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), SettleError> {
        let id = self.lease_id();
        let messages = self.take_messages();
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let logged = shared.release_batch_logged(id, self.token, delay, error, messages)?;
                shared.settled_async(logged).await
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let (core, token, ids) = (remote.core(), self.token, Self::ids(&messages));
                crate::redis::offload(move || core.release(token, &ids, delay, error)).await
            }
        }
    }

    /// [`ack`](Self::ack) for async code: waits for the disk (under
    /// [`Durability::Sync`](crate::Durability::Sync)) without blocking the
    /// thread.
    ///
    /// Cancel safety: the ack is made at the first poll. Dropped before
    /// that, the batch is dropped unsettled (a `nack`); dropped after, the
    /// messages are acknowledged and only the wait for the disk is given
    /// up.
    pub async fn ack_async(mut self) -> Result<(), SettleError> {
        self.settled = true;
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let logged = shared.ack_batch_lease_logged(self.lease_id(), self.token)?;
                shared.settled_async(logged).await
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let (core, token, ids) = (remote.core(), self.token, Self::ids(&self.messages));
                crate::redis::offload(move || core.ack(token, &ids)).await
            }
        }
    }

    /// [`nack`](Self::nack) for async code: only messages it sends to the
    /// dead-letter queue wait for the disk. Cancel safety as
    /// [`ack_async`](Self::ack_async).
    pub async fn nack_async(mut self) -> Result<(), SettleError> {
        self.release_async(None, None).await
    }

    /// [`fail`](Self::fail) for async code. Cancel safety as
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
        async move { self.release_async(None, Some(error)).await }
    }

    /// [`retry_after`](Self::retry_after) for async code. Cancel safety as
    /// [`ack_async`](Self::ack_async).
    pub async fn retry_after_async(mut self, delay: Duration) -> Result<(), SettleError> {
        self.release_async(Some(delay), None).await
    }

    /// Done with all of them: removes every message of the batch from the
    /// queue for good. On a persistent queue, one write (and one wait for
    /// the disk) for all.
    pub fn ack(mut self) -> Result<(), SettleError> {
        self.settled = true;
        match &self.source {
            Source::Local(origin) => (origin.shared).ack_batch_lease(self.lease_id(), self.token),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.ack(self.token, &Self::ids(&self.messages)),
        }
    }

    /// Not done with any of them: makes each visible again after the
    /// queue's [`Backoff`](crate::Backoff), or dead-letters it if this was
    /// its last allowed receive.
    pub fn nack(mut self) -> Result<(), SettleError> {
        self.release(None, None)
    }

    /// A `nack` that records why the attempt failed, as
    /// [`Delivery::fail`] does, for every message of the batch: any error
    /// or text, kept (up to [`MAX_TEXT_BYTES`](crate::MAX_TEXT_BYTES)) with
    /// each message and shown if it is dead-lettered.
    pub fn fail(mut self, error: impl fmt::Display) -> Result<(), SettleError> {
        let error = crate::producer::bounded_text(error.to_string());
        self.release(None, Some(error))
    }

    /// A `nack` with an explicit delay, the same for every message, instead
    /// of the queue's backoff.
    pub fn retry_after(mut self, delay: Duration) -> Result<(), SettleError> {
        self.release(Some(delay), None)
    }

    /// Keeps the lease for `by` from now.
    pub fn extend(&self, by: Duration) -> Result<(), SettleError> {
        match &self.source {
            Source::Local(origin) => (origin.shared).extend(self.lease_id(), self.token, by),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                (remote.extend(self.token, &Self::ids(&self.messages), by)).map(drop)
            }
        }
    }

    /// Undoes the receive of a Redis queue whose caller is gone (a dropped
    /// async receive): the messages go back to the front of the ready
    /// queue with their receive counts as they were.
    #[cfg(feature = "redis")]
    pub(crate) fn unreceive(mut self) {
        // Only Redis receives are undone; a local batch dropped is released.
        let Source::Redis(remote) = &self.source else {
            return;
        };
        let core = remote.core();
        let messages = self.take_messages();
        core.unreceive_later(self.token, Self::ids(&messages));
    }

    /// One [`Delivery`] per message, in order, each under a lease of its own
    /// that runs out when the batch's would have; settle each as you like.
    ///
    /// If the batch's lease has already run out, the deliveries still read
    /// their payloads, but settling any of them returns
    /// [`SettleError::LeaseExpired`] (as settling the batch would have).
    pub fn into_deliveries(mut self) -> Vec<Delivery<T>> {
        let id = self.lease_id();
        let messages = self.take_messages();
        // One arm without the `redis` feature, two with it.
        #[allow(clippy::infallible_destructuring_match)]
        let origin = match &self.source {
            Source::Local(origin) => origin,
            // Every message of a Redis batch has a lease of its own under
            // the batch's token already.
            #[cfg(feature = "redis")]
            Source::Redis(_) => {
                let source = &self.source;
                return (0..messages.len())
                    .map(|index| {
                        Delivery::from_source(source.clone(), &messages.share(index), self.token)
                    })
                    .collect();
            }
        };
        let split = origin
            .shared
            .split_batch(id, self.token, messages, |entry, token| {
                Delivery::new(Arc::clone(origin), entry, token)
            });
        split.unwrap_or_else(|messages| {
            (0..messages.len())
                .map(|index| Delivery::new(Arc::clone(origin), &messages.share(index), NO_LEASE))
                .collect()
        })
    }
}

impl<T> Drop for Batch<T> {
    fn drop(&mut self) {
        if !self.settled {
            // An expired lease has nothing left to release. Nobody sees
            // the outcome: nothing waits for the disk (or the network).
            let id = self.lease_id();
            let messages = self.take_messages();
            match &self.source {
                Source::Local(origin) => {
                    let shared = &origin.shared;
                    let _ = shared.release_batch_logged(id, self.token, None, None, messages);
                }
                #[cfg(feature = "redis")]
                Source::Redis(remote) => remote
                    .core()
                    .release_later(self.token, Self::ids(&messages)),
            }
        }
    }
}

impl<T> Index<usize> for Batch<T> {
    type Output = T;

    /// The `index`th payload; panics if there are not that many.
    fn index(&self, index: usize) -> &T {
        self.messages.payload(index)
    }
}

impl<'a, T> IntoIterator for &'a Batch<T> {
    type Item = &'a T;
    type IntoIter = BatchIter<'a, T>;

    fn into_iter(self) -> BatchIter<'a, T> {
        self.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.messages()).finish()
    }
}

/// The payloads of a [`Batch`], in order.
pub struct BatchIter<'a, T> {
    batch: &'a Batch<T>,
    range: std::ops::Range<usize>,
}

impl<'a, T> Iterator for BatchIter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        self.range.next().map(|index| &self.batch[index])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl<T> DoubleEndedIterator for BatchIter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.range.next_back().map(|index| &self.batch[index])
    }
}

impl<T> ExactSizeIterator for BatchIter<'_, T> {}

impl<T> FusedIterator for BatchIter<'_, T> {}

/// One message of a [`Batch`]: its payload (it derefs to it) and what is
/// known about it.
pub struct BatchMessage<'a, T> {
    batch: &'a Batch<T>,
    index: usize,
}

impl<'a, T> BatchMessage<'a, T> {
    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.batch.messages.entry(self.index).id
    }

    /// The idempotency key it was sent with, if any.
    pub fn key(&self) -> Option<&'a str> {
        let entry = self.batch.messages.entry(self.index);
        entry.key().map(|key| &**key)
    }

    /// Which delivery of this message this is: 1 the first time, 2 after
    /// one failed attempt, and so on.
    pub fn receive_count(&self) -> u32 {
        self.batch.messages.entry(self.index).receive_count
    }

    /// When the message was first enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        clock::from_nanos(self.batch.messages.entry(self.index).enqueued_at)
    }

    /// The payload.
    pub fn payload(&self) -> &'a T {
        &self.batch[self.index]
    }
}

impl<T> std::ops::Deref for BatchMessage<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.payload()
    }
}

impl<T: fmt::Debug> fmt::Debug for BatchMessage<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchMessage")
            .field("id", &self.id())
            .field("key", &self.key())
            .field("receive_count", &self.receive_count())
            .field("payload", self.payload())
            .finish_non_exhaustive()
    }
}

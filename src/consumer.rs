//! The receiving side.

use crate::batch::Batch;
use crate::delivery::{Acked, Delivery, Source};
use crate::error::{RecvError, SettleError};
use crate::recv::{Iter, RecvBatchFuture, RecvFuture, RecvStream};
use crate::shared::{ForWorker, Receiving, Shared, Take, Wait};
use crate::Message;
use std::fmt;
use std::sync::atomic::AtomicBool;
#[cfg(feature = "redis")]
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Receives messages from a queue. Cheap to clone; use from any thread.
///
/// Each call hands out a [`Delivery`] under a lease of the queue's
/// visibility timeout. When the queue is closed and nothing is left ready,
/// in flight or delayed, every receive returns [`RecvError::Closed`], so
/// `while let Ok(delivery) = consumer.recv()` ends.
///
/// With one producer and no failures, messages arrive in send order. A
/// message released or expired goes to the back of the ready queue (after
/// its backoff, if any), so retries do not keep their place.
pub struct Consumer<T> {
    /// The queue, as this handle's deliveries hold it (see [`Origin`]).
    source: Source<T>,
}

impl<T: Message> Consumer<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>) -> Self {
        Consumer {
            source: Source::Local(shared.origin()),
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn remote(remote: Arc<crate::redis::Remote<T>>) -> Self {
        Consumer {
            source: Source::Redis(remote),
        }
    }

    /// Receives a message, blocking until one is ready or the queue is
    /// closed and drained.
    pub fn recv(&self) -> Result<Delivery<T>, RecvError> {
        self.one(Wait::Forever)
    }

    /// Receives a message if one is ready now ([`RecvError::Empty`] if not).
    pub fn try_recv(&self) -> Result<Delivery<T>, RecvError> {
        self.one(Wait::No)
    }

    /// Receives a message, waiting at most `timeout`
    /// ([`RecvError::Timeout`] if none came).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Delivery<T>, RecvError> {
        self.one(Wait::timeout(timeout))
    }

    /// Waits up to `timeout` for a first message, then takes up to `max` in
    /// all of those ready without waiting further, as one [`Batch`] under
    /// one lease. On a persistent queue their receives are recorded
    /// together.
    ///
    /// A `max` of 0 is taken as 1: a batch holds at least one message.
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Batch<T>, RecvError> {
        let max = max.max(1);
        match &self.source {
            Source::Local(origin) => {
                (origin.shared).receive_batch(origin, max, Wait::timeout(timeout))
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let leased = remote.receive(max, Wait::timeout(timeout), &|| false)?;
                Ok(self.remote_batch_of(leased.ok_or(RecvError::Timeout)?))
            }
        }
    }

    /// Messages leased on a Redis server as a batch.
    #[cfg(feature = "redis")]
    pub(crate) fn remote_batch(
        &self,
        leased: crate::redis::Leased<T>,
    ) -> Result<Batch<T>, RecvError> {
        Ok(self.remote_batch_of(leased))
    }

    #[cfg(feature = "redis")]
    fn remote_batch_of(&self, leased: crate::redis::Leased<T>) -> Batch<T> {
        let mut messages = crate::message::BatchBuilder::with_capacity(leased.entries.len());
        for entry in leased.entries {
            messages.push(entry.into_queued());
        }
        Batch::from_source(
            self.source.clone(),
            Arc::new(messages.finish()),
            leased.token,
        )
    }

    /// One message leased on a Redis server as a delivery.
    #[cfg(feature = "redis")]
    pub(crate) fn remote_delivery(
        &self,
        leased: crate::redis::Leased<T>,
    ) -> Result<Delivery<T>, RecvError> {
        let entry = leased.entries.into_iter().next().ok_or(RecvError::Empty)?;
        Ok(Delivery::from_source(
            self.source.clone(),
            &entry,
            leased.token,
        ))
    }

    /// Acknowledges several deliveries at once: one capacity release for
    /// all, and on a persistent queue one write (and one wait for the disk)
    /// for all. Returns how many were acknowledged: a delivery whose lease
    /// has expired is skipped, as its own [`ack`](Delivery::ack) would have
    /// failed, and changes nothing. (Messages received together as a
    /// [`Batch`] cost less still: [`Batch::ack`].)
    ///
    /// ```
    /// use spool::Queue;
    /// use std::time::Duration;
    ///
    /// let queue: Queue<u32> = Queue::builder().open()?;
    /// queue.producer().send_batch((0..64).collect())?;
    /// let consumer = queue.consumer();
    /// let deliveries = (0..64)
    ///     .map(|_| consumer.recv_timeout(Duration::from_secs(1)))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let total: u32 = deliveries.iter().map(|delivery| **delivery).sum();
    /// assert_eq!(consumer.ack_batch(deliveries)?, 64);
    /// assert_eq!((total, queue.stats().acked), (2016, 64));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Deliveries from another queue are acknowledged on their own queue,
    /// one by one.
    pub fn ack_batch(
        &self,
        deliveries: impl IntoIterator<Item = Delivery<T>>,
    ) -> Result<usize, SettleError> {
        let acks = self.ack_all(deliveries)?;
        for acked in acks.waits {
            match acked {
                Acked::Local(shared, logged) => shared.settled(logged)?,
                #[cfg(feature = "redis")]
                Acked::Done => {}
            }
        }
        acks.first_error.map_or(Ok(acks.acked), Err)
    }

    /// Acknowledges `deliveries` without waiting for the disk: this
    /// queue's together, others' on their own queue.
    fn ack_all(
        &self,
        deliveries: impl IntoIterator<Item = Delivery<T>>,
    ) -> Result<Acks<T>, SettleError> {
        let mut leases = Vec::new();
        let mut acks = Acks {
            acked: 0,
            first_error: None,
            waits: Vec::new(),
        };
        for delivery in deliveries {
            if delivery.is_from(&self.source) {
                leases.push(delivery.into_lease());
                continue;
            }
            match delivery.ack_logged() {
                Ok(wait) => {
                    acks.acked += 1;
                    acks.waits.push(wait);
                }
                Err(SettleError::LeaseExpired { .. }) => {}
                Err(error) => acks.first_error = acks.first_error.or(Some(error)),
            }
        }
        match &self.source {
            Source::Local(origin) => {
                let shared = &origin.shared;
                let (ours, logged) = shared.ack_batch_logged(&leases)?;
                acks.acked += ours;
                acks.waits.push(Acked::Local(Arc::clone(shared), logged));
            }
            #[cfg(feature = "redis")]
            Source::Redis(remote) => acks.acked += remote.ack_each(&leases)?,
        }
        Ok(acks)
    }

    /// [`recv`](Self::recv) for async code: waits for a message without
    /// blocking the thread, on any executor. Cancel safe: see
    /// [`RecvFuture`].
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let queue: spool::Queue<String> = spool::Queue::builder().open()?;
    /// queue.producer().send_async("hello".to_string()).await?;
    /// let delivery = queue.consumer().recv_async().await?;
    /// assert_eq!(*delivery, "hello");
    /// delivery.ack_async().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn recv_async(&self) -> RecvFuture<'_, T> {
        RecvFuture::new(self, None)
    }

    /// [`recv_timeout`](Self::recv_timeout) for async code, with a timeout
    /// kept by the queue itself (no runtime timer needed).
    pub fn recv_timeout_async(&self, timeout: Duration) -> RecvFuture<'_, T> {
        RecvFuture::new(self, Instant::now().checked_add(timeout))
    }

    /// [`recv_batch`](Self::recv_batch) for async code: waits up to
    /// `timeout` for a first message, then takes up to `max` of those
    /// ready. Cancel safe: see [`RecvBatchFuture`].
    pub fn recv_batch_async(&self, max: usize, timeout: Duration) -> RecvBatchFuture<'_, T> {
        RecvBatchFuture::new(self, max.max(1), Instant::now().checked_add(timeout))
    }

    /// The deliveries as a [`Stream`](futures_core::Stream), which ends once
    /// the queue is closed and drained. It receives through a clone of
    /// this handle.
    ///
    /// ```
    /// use futures::StreamExt;
    /// # futures::executor::block_on(async {
    /// let queue: spool::Queue<u32> = spool::Queue::builder().open()?;
    /// queue.producer().send_batch_async(vec![1, 2, 3]).await?;
    /// queue.close();
    /// let mut total = 0;
    /// let mut deliveries = queue.consumer().stream();
    /// while let Some(delivery) = deliveries.next().await {
    ///     total += *delivery;
    ///     delivery.ack_async().await?;
    /// }
    /// assert_eq!(total, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn stream(&self) -> RecvStream<T> {
        RecvStream::new(self.clone())
    }

    /// The deliveries as a blocking iterator: each step is a
    /// [`recv`](Self::recv); it ends once the queue is closed and drained.
    /// `for delivery in &consumer` does the same.
    ///
    /// ```
    /// let queue: spool::Queue<u32> = spool::Queue::builder().open()?;
    /// queue.producer().send_batch(vec![1, 2, 3])?;
    /// queue.close();
    /// let consumer = queue.consumer();
    /// let mut total = 0;
    /// for delivery in &consumer {
    ///     total += *delivery;
    ///     delivery.ack()?;
    /// }
    /// assert_eq!(total, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter::new(self)
    }

    /// [`ack_batch`](Self::ack_batch) for async code. Cancel safety: every
    /// ack is made at the first poll; dropped after that, only the wait
    /// for the disk is given up.
    pub async fn ack_batch_async(
        &self,
        deliveries: impl IntoIterator<Item = Delivery<T>>,
    ) -> Result<usize, SettleError> {
        #[cfg(feature = "redis")]
        if let Source::Redis(_) = &self.source {
            let deliveries: Vec<Delivery<T>> = deliveries.into_iter().collect();
            let consumer = self.clone();
            return crate::redis::offload(move || consumer.ack_batch(deliveries)).await;
        }
        let acks = self.ack_all(deliveries)?;
        for acked in acks.waits {
            match acked {
                Acked::Local(shared, logged) => shared.settled_async(logged).await?,
                #[cfg(feature = "redis")]
                Acked::Done => {}
            }
        }
        acks.first_error.map_or(Ok(acks.acked), Err)
    }

    pub(crate) fn source(&self) -> &Source<T> {
        &self.source
    }

    fn one(&self, wait: Wait) -> Result<Delivery<T>, RecvError> {
        match &self.source {
            Source::Local(origin) => origin.shared.receive_one(origin, wait),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let leased = remote.receive(1, wait, &|| false)?;
                self.remote_delivery(leased.ok_or(RecvError::Timeout)?)
            }
        }
    }

    /// Receives for a worker of a pool: `Ok(None)` once `stop` is set, or
    /// once `until_idle` is set and the closed queue has nothing ready or
    /// delayed (see `Shared::receive_for_worker`).
    pub(crate) fn recv_for_worker(
        &self,
        stop: &AtomicBool,
        until_idle: &AtomicBool,
    ) -> Result<Option<Delivery<T>>, RecvError> {
        match &self.source {
            Source::Local(origin) => (origin.shared).receive_for_worker(origin, stop, until_idle),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => {
                let idle = || {
                    until_idle.load(std::sync::atomic::Ordering::SeqCst)
                        && remote.is_closed()
                        && remote.drained().unwrap_or(false)
                };
                let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst) || idle();
                if stopped() {
                    return Ok(None);
                }
                match remote.receive(1, Wait::Forever, &stopped)? {
                    Some(leased) => self.remote_delivery(leased).map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// [`recv_for_worker`](Self::recv_for_worker) for a task.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) async fn recv_for_worker_async(
        &self,
        stop: &AtomicBool,
        until_idle: &AtomicBool,
    ) -> Result<Option<Delivery<T>>, RecvError> {
        // One arm without the `redis` feature, two with it.
        #[allow(clippy::infallible_destructuring_match)]
        let origin = match &self.source {
            Source::Local(origin) => origin,
            #[cfg(feature = "redis")]
            Source::Redis(_) => loop {
                // The flags are the pool's, borrowed: the helper thread
                // waits at most one POLL, and the flags are read again
                // between waits.
                if stop.load(SeqCst) {
                    return Ok(None);
                }
                let until_idle = until_idle.load(SeqCst);
                let consumer = self.clone();
                let polled = crate::redis::offload(move || {
                    match consumer.recv_timeout(crate::redis::POLL) {
                        Ok(delivery) => Ok(Some(delivery)),
                        Err(RecvError::Timeout) if until_idle => {
                            let Source::Redis(remote) = &consumer.source else {
                                return Err(RecvError::Timeout);
                            };
                            if remote.is_closed() && remote.drained().map_err(RecvError::Storage)? {
                                Ok(None)
                            } else {
                                Err(RecvError::Timeout)
                            }
                        }
                        Err(error) => Err(error),
                    }
                })
                .await;
                match polled {
                    Err(RecvError::Timeout) => continue,
                    other => return other,
                }
            },
        };
        let take = ForWorker { stop, until_idle };
        let mut receiving = CancelOnDrop {
            shared: &origin.shared,
            receiving: Receiving::default(),
            take: std::marker::PhantomData::<ForWorker<'_>>,
        };
        std::future::poll_fn(|cx| receiving.receiving.poll(&take, origin, None, cx)).await
    }

    /// The queue's visibility timeout (for the worker pool's heartbeat).
    pub(crate) fn visibility_timeout(&self) -> Duration {
        match &self.source {
            Source::Local(origin) => origin.shared.config.visibility_timeout,
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.visibility_timeout(),
        }
    }

    /// The queue's clock, read now.
    pub(crate) fn now(&self) -> crate::clock::Nanos {
        match &self.source {
            Source::Local(origin) => origin.shared.now(),
            #[cfg(feature = "redis")]
            Source::Redis(_) => crate::clock::to_nanos(std::time::SystemTime::now()),
        }
    }
}

impl<T> Consumer<T> {
    /// Wakes the queue's blocked consumers (after setting a worker flag).
    pub(crate) fn wake(&self) {
        match &self.source {
            Source::Local(origin) => origin.shared.wake_consumers(),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => remote.wake_consumers(),
        }
    }
}

/// What [`Consumer::ack_all`] did: how many it acknowledged, the first
/// failure, and the records to wait for, by queue.
struct Acks<T> {
    acked: usize,
    first_error: Option<SettleError>,
    waits: Vec<Acked<T>>,
}

/// A receive's state, given back if its task is dropped.
struct CancelOnDrop<'a, T, K: Take<T>> {
    shared: &'a Shared<T>,
    receiving: Receiving<K::Entries>,
    take: std::marker::PhantomData<K>,
}

impl<T, K: Take<T>> Drop for CancelOnDrop<'_, T, K> {
    fn drop(&mut self) {
        self.receiving.cancel::<T, K>(self.shared);
    }
}

impl<T> Clone for Consumer<T> {
    /// A handle of its own: clones used on different threads count their
    /// deliveries' references apart.
    fn clone(&self) -> Self {
        let source = match &self.source {
            Source::Local(origin) => Source::Local(origin.shared.origin()),
            #[cfg(feature = "redis")]
            Source::Redis(remote) => Source::Redis(Arc::clone(remote)),
        };
        Consumer { source }
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

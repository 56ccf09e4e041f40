//! Receiving without a blocking call: the futures of
//! [`Consumer::recv_async`] and [`Consumer::recv_batch_async`], the
//! [`Stream`] of [`Consumer::stream`], and the blocking iterator of
//! [`Consumer::iter`].
//!
//! The futures wait on the same event count as a blocked thread (see
//! `signal.rs`), so a send, a settle, `close()`, a lease running out or a
//! delay coming due wakes tasks as it wakes threads, on any executor: the
//! deadlines are kept by a process-wide alarm thread (`alarm.rs`), not by a
//! runtime's timer.

use crate::batch::Batch;
use crate::consumer::Consumer;
use crate::delivery::{Delivery, Source};
use crate::error::RecvError;
use crate::message::{BatchBuilder, Queued};
use crate::shared::{Many, One, Receiving};
use crate::Message;
use futures_core::{FusedStream, Stream};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The future of [`Consumer::recv_async`] and
/// [`Consumer::recv_timeout_async`].
///
/// Cancel safety: dropped at any point before it is ready, it has leased
/// nothing and lost nothing. A message it had taken while it waited for
/// the disk to record the receive goes back to the ready queue with its
/// receive count as it was.
#[must_use = "a future does nothing unless polled"]
pub struct RecvFuture<'a, T: Message> {
    consumer: &'a Consumer<T>,
    receiving: Receiving<Queued<T>>,
    deadline: Option<Instant>,
    /// The receive on a helper thread, for a Redis queue.
    #[cfg(feature = "redis")]
    remote: Option<Remote<Delivery<T>>>,
}

/// An offloaded receive of a Redis queue.
#[cfg(feature = "redis")]
type Remote<R> = crate::redis::Offloaded<Result<R, RecvError>>;

/// A receive of a Redis queue on a helper thread: up to `max` messages,
/// waiting until `deadline` (for ever without one), made into `R` by
/// `make`. Dropped, the future stops the wait within one `POLL`, and
/// messages leased anyway go back as they were.
#[cfg(feature = "redis")]
fn offloaded<T: Message, R: Undo + Send + 'static>(
    consumer: &Consumer<T>,
    deadline: Option<Instant>,
    max: usize,
    make: fn(&Consumer<T>, crate::redis::Leased<T>) -> Result<R, RecvError>,
) -> Remote<R> {
    let consumer = consumer.clone();
    let receive = move |stop: &std::sync::atomic::AtomicBool| {
        let Source::Redis(remote) = consumer.source() else {
            return Err(RecvError::Closed);
        };
        let wait = deadline.map_or(crate::shared::Wait::Forever, crate::shared::Wait::Until);
        let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
        match remote.receive(max, wait, &stopped)? {
            Some(leased) => make(&consumer, leased),
            // Stopped: nobody waits for the answer.
            None => Err(RecvError::Timeout),
        }
    };
    crate::redis::offload_abandonable(receive, |received: Result<R, RecvError>| {
        if let Ok(received) = received {
            received.undo();
        }
    })
}

/// What a dropped receive of a Redis queue puts back.
#[cfg(feature = "redis")]
trait Undo {
    fn undo(self);
}

#[cfg(feature = "redis")]
impl<T> Undo for Delivery<T> {
    fn undo(self) {
        self.unreceive();
    }
}

#[cfg(feature = "redis")]
impl<T> Undo for Batch<T> {
    fn undo(self) {
        self.unreceive();
    }
}

impl<'a, T: Message> RecvFuture<'a, T> {
    pub(crate) fn new(consumer: &'a Consumer<T>, deadline: Option<Instant>) -> Self {
        RecvFuture {
            consumer,
            receiving: Receiving::default(),
            deadline,
            #[cfg(feature = "redis")]
            remote: None,
        }
    }
}

// Never pinned through: the fields move freely.
impl<T: Message> Unpin for RecvFuture<'_, T> {}

impl<T: Message> Future for RecvFuture<'_, T> {
    type Output = Result<Delivery<T>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.consumer.source() {
            Source::Local(origin) => this.receiving.poll(&One, origin, this.deadline, cx),
            #[cfg(feature = "redis")]
            Source::Redis(_) => {
                let (consumer, deadline) = (this.consumer, this.deadline);
                let remote = (this.remote).get_or_insert_with(|| {
                    offloaded(consumer, deadline, 1, Consumer::remote_delivery)
                });
                Pin::new(remote).poll(cx)
            }
        }
    }
}

impl<T: Message> Drop for RecvFuture<'_, T> {
    fn drop(&mut self) {
        match self.consumer.source() {
            Source::Local(origin) => self.receiving.cancel::<T, One>(&origin.shared),
            #[cfg(feature = "redis")]
            Source::Redis(_) => {}
        }
    }
}

impl<T: Message> fmt::Debug for RecvFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture").finish_non_exhaustive()
    }
}

/// The future of [`Consumer::recv_batch_async`]. Cancel safety as
/// [`RecvFuture`], for every message of the batch.
#[must_use = "a future does nothing unless polled"]
pub struct RecvBatchFuture<'a, T: Message> {
    consumer: &'a Consumer<T>,
    receiving: Receiving<BatchBuilder<T>>,
    max: usize,
    deadline: Option<Instant>,
    #[cfg(feature = "redis")]
    remote: Option<Remote<Batch<T>>>,
}

impl<'a, T: Message> RecvBatchFuture<'a, T> {
    pub(crate) fn new(consumer: &'a Consumer<T>, max: usize, deadline: Option<Instant>) -> Self {
        RecvBatchFuture {
            consumer,
            receiving: Receiving::default(),
            max,
            deadline,
            #[cfg(feature = "redis")]
            remote: None,
        }
    }
}

impl<T: Message> Unpin for RecvBatchFuture<'_, T> {}

impl<T: Message> Future for RecvBatchFuture<'_, T> {
    type Output = Result<Batch<T>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.consumer.source() {
            Source::Local(origin) => {
                (this.receiving).poll(&Many(this.max), origin, this.deadline, cx)
            }
            #[cfg(feature = "redis")]
            Source::Redis(_) => {
                let (consumer, deadline, max) = (this.consumer, this.deadline, this.max);
                let remote = (this.remote).get_or_insert_with(|| {
                    offloaded(consumer, deadline, max, Consumer::remote_batch)
                });
                Pin::new(remote).poll(cx)
            }
        }
    }
}

impl<T: Message> Drop for RecvBatchFuture<'_, T> {
    fn drop(&mut self) {
        match self.consumer.source() {
            Source::Local(origin) => self.receiving.cancel::<T, Many>(&origin.shared),
            #[cfg(feature = "redis")]
            Source::Redis(_) => {}
        }
    }
}

impl<T: Message> fmt::Debug for RecvBatchFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatchFuture")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

/// The deliveries of a queue as a [`Stream`]: see [`Consumer::stream`].
///
/// It ends once the queue is closed and drained, or at the first other
/// error (a failed write-ahead file), which [`error`](Self::error) then
/// gives. Cancel safety as [`RecvFuture`]: dropping the stream, or not
/// polling it again, between items leases nothing.
#[must_use = "a stream does nothing unless polled"]
pub struct RecvStream<T: Message> {
    consumer: Consumer<T>,
    receiving: Receiving<Queued<T>>,
    ended: bool,
    error: Option<RecvError>,
    #[cfg(feature = "redis")]
    remote: Option<Remote<Delivery<T>>>,
}

impl<T: Message> RecvStream<T> {
    pub(crate) fn new(consumer: Consumer<T>) -> Self {
        RecvStream {
            consumer,
            receiving: Receiving::default(),
            ended: false,
            error: None,
            #[cfg(feature = "redis")]
            remote: None,
        }
    }

    /// The error that ended the stream, if it was not the queue closing.
    pub fn error(&self) -> Option<&RecvError> {
        self.error.as_ref()
    }

    /// The consumer handle the stream receives through.
    pub fn consumer(&self) -> &Consumer<T> {
        &self.consumer
    }
}

impl<T: Message> Unpin for RecvStream<T> {}

impl<T: Message> Stream for RecvStream<T> {
    type Item = Delivery<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery<T>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let received = match this.consumer.source() {
            Source::Local(origin) => std::task::ready!(this.receiving.poll(&One, origin, None, cx)),
            #[cfg(feature = "redis")]
            Source::Redis(_) => {
                let consumer = &this.consumer;
                let remote = (this.remote)
                    .get_or_insert_with(|| offloaded(consumer, None, 1, Consumer::remote_delivery));
                let received = std::task::ready!(Pin::new(remote).poll(cx));
                this.remote = None;
                received
            }
        };
        match received {
            Ok(delivery) => Poll::Ready(Some(delivery)),
            Err(error) => {
                this.ended = true;
                if !matches!(error, RecvError::Closed) {
                    this.error = Some(error);
                }
                Poll::Ready(None)
            }
        }
    }
}

impl<T: Message> FusedStream for RecvStream<T> {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl<T: Message> Drop for RecvStream<T> {
    fn drop(&mut self) {
        match self.consumer.source() {
            Source::Local(origin) => self.receiving.cancel::<T, One>(&origin.shared),
            #[cfg(feature = "redis")]
            Source::Redis(_) => {}
        }
    }
}

impl<T: Message> fmt::Debug for RecvStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("ended", &self.ended)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A blocking iterator over deliveries: see [`Consumer::iter`].
///
/// Each `next` is a [`Consumer::recv`]; it ends once the queue is closed
/// and drained, or at the first other error (a failed write-ahead file),
/// which [`error`](Self::error) then gives.
pub struct Iter<'a, T: Message> {
    consumer: &'a Consumer<T>,
    ended: bool,
    error: Option<RecvError>,
}

impl<'a, T: Message> Iter<'a, T> {
    pub(crate) fn new(consumer: &'a Consumer<T>) -> Self {
        Iter {
            consumer,
            ended: false,
            error: None,
        }
    }

    /// The error that ended the iteration, if it was not the queue closing.
    pub fn error(&self) -> Option<&RecvError> {
        self.error.as_ref()
    }
}

impl<T: Message> Iterator for Iter<'_, T> {
    type Item = Delivery<T>;

    fn next(&mut self) -> Option<Delivery<T>> {
        if self.ended {
            return None;
        }
        match self.consumer.recv() {
            Ok(delivery) => Some(delivery),
            Err(error) => {
                self.ended = true;
                if !matches!(error, RecvError::Closed) {
                    self.error = Some(error);
                }
                None
            }
        }
    }
}

impl<T: Message> std::iter::FusedIterator for Iter<'_, T> {}

impl<T: Message> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<'a, T: Message> IntoIterator for &'a Consumer<T> {
    type Item = Delivery<T>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

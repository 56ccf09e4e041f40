//! What a worker's handler sees of a job, and what it decides.
//!
//! A handler given to [`Workers::spawn_jobs`](crate::Workers::spawn_jobs)
//! receives a [`Job`]: the payload with its metadata (id, key, receive
//! count, enqueue time), the lease's current deadline, and a [`LeaseLost`]
//! signal. It returns an [`Outcome`], which the pool turns into the
//! matching settle of the delivery:
//!
//! | outcome | delivery |
//! |---|---|
//! | [`Outcome::Ack`] | [`ack`](crate::Delivery::ack) |
//! | [`Outcome::Retry`] | [`nack`](crate::Delivery::nack): the queue's backoff, `max_receives` applies |
//! | [`Outcome::RetryAfter(d)`](Outcome::RetryAfter) | [`retry_after(d)`](crate::Delivery::retry_after) |
//! | [`Outcome::DeadLetter(reason)`](Outcome::DeadLetter) | [`dead_letter(reason)`](crate::Delivery::dead_letter) |
//!
//! The lease signal is a flag with a condition variable: the pool's
//! heartbeat sets it when it finds the lease gone (it could not extend it:
//! the lease ran out, on a [`ManualClock`](crate::ManualClock) that jumped
//! say) and a shutdown sets it when it releases the message of a handler
//! still running at its deadline. Once set, nothing the handler returns
//! can settle the message any more (it is visible again, maybe already
//! redelivered); the pool counts such a late settle in
//! [`WorkerStats::lease_expired`](crate::WorkerStats::lease_expired).

use crate::clock::{self, Nanos};
use crate::message::{MessageId, SharedPayload};
use parking_lot::{Condvar, Mutex};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// What a job handler decided; see [`Workers::spawn_jobs`](crate::Workers::spawn_jobs).
///
/// An `Err` from the handler fails the delivery with the error's text
/// ([`Delivery::fail`](crate::Delivery::fail)), and a panic with
/// `"panicked: <message>"`, as with the `&T` handlers of
/// [`Workers::spawn`](crate::Workers::spawn).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done: acknowledged, gone for good.
    Ack,
    /// Try again after the queue's [`Backoff`](crate::Backoff); a failed
    /// attempt, so on the last allowed receive the message is
    /// dead-lettered instead.
    Retry,
    /// Try again after this delay instead of the backoff (an HTTP 429's
    /// `Retry-After`); a failed attempt as [`Retry`](Self::Retry) is.
    RetryAfter(Duration),
    /// Give up now: dead-lettered with this reason (cut to
    /// [`MAX_TEXT_BYTES`](crate::MAX_TEXT_BYTES)), whatever its receive
    /// count.
    DeadLetter(String),
}

impl Outcome {
    /// [`Outcome::DeadLetter`] with the text of `reason`.
    pub fn dead_letter(reason: impl fmt::Display) -> Self {
        Outcome::DeadLetter(reason.to_string())
    }
}

/// A message being handled by a worker of a pool, with what is known about
/// it; derefs to the payload.
///
/// It owns what it holds (the payload is shared with the delivery, not
/// copied), so a handler can move it, or its [`LeaseLost`] signal, to
/// another thread.
pub struct Job<T> {
    payload: SharedPayload<T>,
    id: MessageId,
    key: Option<Arc<str>>,
    receive_count: u32,
    enqueued_at: Nanos,
    lease: LeaseLost,
}

impl<T> Job<T> {
    pub(crate) fn new(
        payload: SharedPayload<T>,
        id: MessageId,
        key: Option<Arc<str>>,
        receive_count: u32,
        enqueued_at: Nanos,
        lease: LeaseLost,
    ) -> Self {
        Job {
            payload,
            id,
            key,
            receive_count,
            enqueued_at,
            lease,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
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

    /// When the lease runs out unless the heartbeat extends it again (it
    /// does every half visibility timeout while the handler runs), on the
    /// queue's clock.
    pub fn lease_deadline(&self) -> SystemTime {
        self.lease.deadline()
    }

    /// Whether the lease is known to be lost (see [`LeaseLost`]).
    pub fn is_lease_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// The signal that fires when the lease is lost: poll it, wait on it,
    /// or clone it into the threads doing the work.
    pub fn lease_lost(&self) -> &LeaseLost {
        &self.lease
    }
}

impl<T> Deref for Job<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.payload
    }
}

impl<T: fmt::Debug> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("key", &self.key())
            .field("receive_count", &self.receive_count)
            .field("lease_lost", &self.is_lease_lost())
            .field("payload", &*self.payload)
            .finish_non_exhaustive()
    }
}

/// Fires once when a running job's lease is lost: the worker pool's
/// heartbeat could not extend it (it had run out), or a shutdown released
/// the message at its deadline. From then on the message is visible to
/// other consumers again, and whatever the handler returns settles
/// nothing: stop the work.
///
/// Cheap to clone; every clone sees the same signal.
#[derive(Clone)]
pub struct LeaseLost {
    inner: Arc<Watch>,
}

struct Watch {
    lost: AtomicBool,
    deadline: AtomicU64,
    /// The tasks waiting for it (`wait_async`).
    lock: Mutex<Vec<Waker>>,
    fired: Condvar,
}

impl LeaseLost {
    pub(crate) fn new(deadline: Nanos) -> Self {
        LeaseLost {
            inner: Arc::new(Watch {
                lost: AtomicBool::new(false),
                deadline: AtomicU64::new(deadline),
                lock: Mutex::new(Vec::new()),
                fired: Condvar::new(),
            }),
        }
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.load(SeqCst)
    }

    /// Waits until the lease is lost or `timeout` has passed (real time);
    /// returns whether it is lost. `Duration::MAX` waits as long as it
    /// takes.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.inner.lock.lock();
        while !self.is_lost() {
            match deadline {
                Some(deadline) => {
                    if self
                        .inner
                        .fired
                        .wait_until(&mut guard, deadline)
                        .timed_out()
                    {
                        break;
                    }
                }
                None => self.inner.fired.wait(&mut guard),
            }
        }
        self.is_lost()
    }

    /// Waits as a task until the lease is lost (an async handler races it
    /// against its work, with `tokio::select!` say). A dropped future's
    /// waker stays listed until the signal fires or the job and its clones
    /// are gone (one waker per task that waited).
    pub async fn wait_async(&self) {
        std::future::poll_fn(|cx| {
            if self.is_lost() {
                return Poll::Ready(());
            }
            let mut waiting = self.inner.lock.lock();
            // Checked again under the lock, which `fire` takes to set it.
            if self.is_lost() {
                return Poll::Ready(());
            }
            if !waiting.iter().any(|waker| waker.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// The lease's deadline as last known.
    pub(crate) fn deadline(&self) -> SystemTime {
        clock::from_nanos(self.inner.deadline.load(SeqCst))
    }

    /// The heartbeat extended the lease to `deadline`.
    pub(crate) fn extended(&self, deadline: Nanos) {
        self.inner.deadline.store(deadline, SeqCst);
    }

    /// Sets the signal and wakes whoever waits on it.
    pub(crate) fn fire(&self) {
        let mut waiting = self.inner.lock.lock();
        self.inner.lost.store(true, SeqCst);
        let tasks = std::mem::take(&mut *waiting);
        drop(waiting);
        self.inner.fired.notify_all();
        tasks.into_iter().for_each(Waker::wake);
    }
}

impl fmt::Debug for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseLost")
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

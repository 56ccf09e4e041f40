//! A pool of tasks that run an async handler over a consumer, on a tokio
//! runtime (the `tokio` feature).
//!
//! The async twin of [`Workers`](crate::Workers), with the same [`Job`],
//! [`Outcome`]s and counts: each worker task loops: receive a delivery
//! (`recv_async`'s wait, stopped by the pool's flag), run the handler's
//! future with every poll inside [`catch_unwind`], settle by the outcome
//! (with the `_async` settles). While the handler runs, the same task
//! extends the lease each time half a visibility timeout has passed on the
//! queue's clock (looking at least every 25 ms, so that a
//! [`ManualClock`](crate::ManualClock) that jumps is seen too), and fires
//! the job's [`LeaseLost`](crate::LeaseLost) if it could not. A worker
//! publishes its lease, fenced as the delivery is, so that a shutdown
//! deadline can release it; unlike a thread, a task can be cancelled, so
//! at the deadline the handler's future is dropped.
//!
//! Other executors: the pool needs tokio's `spawn` and timer only. On
//! another runtime, drive [`Consumer::stream`](crate::Consumer::stream)
//! with `StreamExt::for_each_concurrent`, settle each delivery with the
//! `*_async` calls, and call [`Delivery::extend`](crate::Delivery::extend)
//! from the runtime's timer for long handlers.

use crate::clock::{self, Nanos};
use crate::consumer::Consumer;
use crate::delivery::{Delivery, LeaseHandle};
use crate::error::SettleError;
use crate::job::{Job, LeaseLost, Outcome};
use crate::workers::{panic_message, Counts, ShutdownReport, WorkerStats};
use crate::Message;
use parking_lot::Mutex;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The longest a worker waits between looks at its lease.
const MAX_NAP: Duration = Duration::from_millis(25);

/// Runs an async handler over a [`Consumer`] on tasks of a tokio runtime.
///
/// ```
/// use spool::{AsyncWorkers, Queue};
/// use std::time::Duration;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let queue: Queue<u32> = Queue::builder()
///     .max_receives(2)
///     .backoff(spool::Backoff::None)
///     .open()?;
/// let pool = AsyncWorkers::new(queue.consumer())
///     .concurrency(4)
///     .spawn(|job: spool::Job<u32>| async move {
///         match *job % 2 {
///             0 => Ok(()),
///             _ => Err(format!("{} is odd", *job)),
///         }
///     })?;
/// for n in 0..4 {
///     queue.producer().send_async(n).await?;
/// }
/// queue.close(); // the workers drain the queue, then stop
/// let report = pool.join(Duration::from_secs(10)).await;
/// assert_eq!(report.totals().acked, 2);
/// assert_eq!(report.totals().failed, 4); // 1 and 3, twice each
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct AsyncWorkers<T> {
    consumer: Consumer<T>,
    concurrency: usize,
}

impl<T: Message> AsyncWorkers<T> {
    /// A pool of one task over `consumer`; see
    /// [`concurrency`](Self::concurrency).
    pub fn new(consumer: Consumer<T>) -> Self {
        AsyncWorkers {
            consumer,
            concurrency: 1,
        }
    }

    /// How many handlers may run at once: one task each (at least 1).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
        self
    }

    /// Spawns the tasks on the current tokio runtime, each running
    /// `handler` on one [`Job`] at a time: `Ok(())` acks, as
    /// [`Workers::spawn`](crate::Workers::spawn)'s handlers do; see
    /// [`spawn_jobs`](Self::spawn_jobs) for the rest.
    ///
    /// Fails if called outside a tokio runtime.
    pub fn spawn<F, Fut, E>(self, handler: F) -> std::io::Result<AsyncWorkerPool<T>>
    where
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        self.spawn_jobs(move |job| {
            let handled = handler(job);
            async move { handled.await.map(|()| Outcome::Ack) }
        })
    }

    /// Spawns the tasks on the current tokio runtime, each running
    /// `handler` on one [`Job`] at a time and settling by the [`Outcome`]
    /// its future returns, as
    /// [`Workers::spawn_jobs`](crate::Workers::spawn_jobs) does:
    ///
    /// | handler's future | delivery | counted in [`WorkerStats`] |
    /// |---|---|---|
    /// | `Ok(Outcome::Ack)` | acked (the ack's wait for the disk awaited) | `acked` |
    /// | `Ok(Outcome::Retry)` | nacked: the queue's backoff | `retried` |
    /// | `Ok(Outcome::RetryAfter(d))` | visible again after `d` | `retried` |
    /// | `Ok(Outcome::DeadLetter(reason))` | dead-lettered now | `dead_lettered` |
    /// | `Err(e)` | failed with `e.to_string()` | `failed` |
    /// | panics (when called or polled) | failed with `"panicked: <message>"` | `panicked` |
    /// | returns after its lease was lost | nothing: the message is visible again | `lease_expired` |
    /// | runs past half the visibility timeout | lease extended, again every half timeout | `lease_extensions` |
    ///
    /// A job's [`LeaseLost`] fires when its lease could not be extended or
    /// a shutdown released it; [`LeaseLost::wait_async`] waits for that in
    /// a task.
    ///
    /// Fails if called outside a tokio runtime.
    pub fn spawn_jobs<F, Fut, E>(self, handler: F) -> std::io::Result<AsyncWorkerPool<T>>
    where
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, E>> + Send + 'static,
        E: fmt::Display,
    {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        let pool = Arc::new(Pool {
            consumer: self.consumer,
            stopping: AtomicBool::new(false),
            until_idle: AtomicBool::new(false),
            counts: (0..self.concurrency).map(|_| Counts::default()).collect(),
            active: (0..self.concurrency).map(|_| Mutex::new(None)).collect(),
        });
        let handler = Arc::new(handler);
        let tasks = (0..self.concurrency)
            .map(|index| {
                let (pool, handler) = (Arc::clone(&pool), Arc::clone(&handler));
                runtime.spawn(async move { pool.work(index, &*handler).await })
            })
            .collect();
        Ok(AsyncWorkerPool { pool, tasks })
    }
}

impl<T> fmt::Debug for AsyncWorkers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncWorkers")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Running worker tasks, from [`AsyncWorkers::spawn`].
///
/// End it with [`shutdown`](Self::shutdown) (stop now, let running
/// handlers finish until a deadline) or [`join`](Self::join) (let the
/// workers drain a closed queue). Dropping it stops the workers: idle ones
/// end at once, running handlers finish in the background and settle.
pub struct AsyncWorkerPool<T> {
    pool: Arc<Pool<T>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<T: Message> AsyncWorkerPool<T> {
    /// Each worker's counts so far, by task index.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.pool.counts.iter().map(Counts::read).collect()
    }

    /// The counts of all workers together.
    pub fn totals(&self) -> WorkerStats {
        self.stats().into_iter().sum()
    }

    /// Stops taking new messages; running handlers go on. Returns at once.
    pub fn stop(&self) {
        self.pool.stop();
    }

    /// Stops taking new messages, waits until `timeout` for running
    /// handlers to finish and settle, and reports. A handler still running
    /// at the deadline has its lease released (its message retried, or
    /// dead-lettered if that was its last receive; counted as a release in
    /// the queue's stats) and its future dropped; its worker is listed in
    /// [`unfinished`](ShutdownReport::unfinished). `Duration::MAX` waits as
    /// long as it takes.
    ///
    /// Called from one of the pool's own handlers, it waits for the other
    /// workers only; the caller's message is settled by its handler's
    /// outcome once it returns.
    pub async fn shutdown(self, timeout: Duration) -> ShutdownReport {
        self.pool.stop();
        self.finish(timeout).await
    }

    /// Waits until `timeout` for the workers to stop by themselves, which
    /// they do once the queue is closed and drained (or its write-ahead
    /// file failed), then reports; at the deadline it acts as
    /// [`shutdown`](Self::shutdown) with no time left.
    pub async fn join(self, timeout: Duration) -> ShutdownReport {
        if self.caller().is_some() {
            self.pool.until_idle.store(true, SeqCst);
            self.pool.consumer.wake();
        }
        self.finish(timeout).await
    }

    /// The index of the calling task, if it is one of the pool's workers.
    fn caller(&self) -> Option<usize> {
        let me = tokio::task::try_id()?;
        self.tasks.iter().position(|task| task.id() == me)
    }

    async fn finish(mut self, timeout: Duration) -> ShutdownReport {
        let caller = self.caller();
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut late = Vec::new();
        for (index, task) in self.tasks.iter_mut().enumerate() {
            if Some(index) == caller {
                continue;
            }
            let ended = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, &mut *task).await.is_ok(),
                None => {
                    let _ = (&mut *task).await;
                    true
                }
            };
            if !ended {
                late.push(index);
            }
        }
        self.pool.stop();
        let mut released = 0;
        for &index in &late {
            // Released through its fenced lease first, then the task is
            // cancelled: the delivery it drops then releases nothing.
            let active = self.pool.active[index].lock().take();
            if let Some(active) = active {
                if active.lease.release().is_ok() {
                    released += 1;
                }
                active.signal.fire();
            }
            self.tasks[index].abort();
            let _ = (&mut self.tasks[index]).await;
        }
        self.tasks.clear();
        ShutdownReport {
            workers: self.stats(),
            unfinished: late,
            released,
        }
    }
}

impl<T> Drop for AsyncWorkerPool<T> {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.pool.stop();
        }
    }
}

impl<T> fmt::Debug for AsyncWorkerPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncWorkerPool")
            .field("tasks", &self.tasks.len())
            .field("stopping", &self.pool.stopping.load(SeqCst))
            .finish_non_exhaustive()
    }
}

/// What the worker tasks share.
struct Pool<T> {
    consumer: Consumer<T>,
    stopping: AtomicBool,
    /// Set by a `join` called from a worker: stop once the closed queue
    /// has nothing ready or delayed.
    until_idle: AtomicBool,
    counts: Box<[Counts]>,
    /// The lease each worker's handler runs under, if any.
    active: Box<[Mutex<Option<Active<T>>>]>,
}

/// A running handler's lease, and its job's signal.
struct Active<T> {
    lease: LeaseHandle<T>,
    signal: LeaseLost,
}

impl<T> Pool<T> {
    fn stop(&self) {
        self.stopping.store(true, SeqCst);
        self.consumer.wake();
    }
}

impl<T: Message> Pool<T> {
    /// One worker task.
    async fn work<F, Fut, E>(&self, index: usize, handler: &F)
    where
        F: Fn(Job<T>) -> Fut,
        Fut: Future<Output = Result<Outcome, E>>,
        E: fmt::Display,
    {
        while !self.stopping.load(SeqCst) {
            let received = (self.consumer)
                .recv_for_worker_async(&self.stopping, &self.until_idle)
                .await;
            let delivery = match received {
                Ok(Some(delivery)) => delivery,
                // Stopped; or closed and drained, or the write-ahead file failed.
                Ok(None) | Err(_) => break,
            };
            Counts::bump(&self.counts[index].received);
            self.handle(index, delivery, handler).await;
        }
    }

    async fn handle<F, Fut, E>(&self, index: usize, delivery: Delivery<T>, handler: &F)
    where
        F: Fn(Job<T>) -> Fut,
        Fut: Future<Output = Result<Outcome, E>>,
        E: fmt::Display,
    {
        let counts = &self.counts[index];
        let lease = delivery.lease();
        // An expired lease has no deadline: the first look fires the signal.
        let signal = LeaseLost::new(lease.deadline().unwrap_or_else(|| self.consumer.now()));
        let job = Job::new(
            delivery.shared_payload(),
            delivery.id(),
            delivery.key().map(Into::into),
            delivery.receive_count(),
            clock::to_nanos(delivery.enqueued_at()),
            signal.clone(),
        );
        *self.active[index].lock() = Some(Active { lease, signal });
        let outcome = match panic::catch_unwind(AssertUnwindSafe(|| handler(job))) {
            Ok(future) => self.run(index, future).await,
            Err(panic) => Err(panic),
        };
        // Taken back before settling: a shutdown deadline then finds none.
        self.active[index].lock().take();
        // The error becomes its text before any await: `E` need not be `Send`.
        let settled = match Self::decide(counts, outcome) {
            Decided::Settle(outcome) => {
                let (settled, counter) = match outcome {
                    Outcome::Ack => (delivery.ack_async().await, &counts.acked),
                    Outcome::Retry => (delivery.nack_async().await, &counts.retried),
                    Outcome::RetryAfter(delay) => {
                        (delivery.retry_after_async(delay).await, &counts.retried)
                    }
                    Outcome::DeadLetter(reason) => {
                        let settled = delivery.dead_letter_async(reason).await;
                        (settled, &counts.dead_lettered)
                    }
                };
                if settled.is_ok() {
                    Counts::bump(counter);
                }
                settled
            }
            Decided::Fail(text) => delivery.fail_async(text).await,
        };
        if let Err(refused) = settled {
            Counts::bump(&counts.lease_lost);
            if matches!(refused, SettleError::LeaseExpired { .. }) {
                Counts::bump(&counts.lease_expired);
            }
        }
    }

    /// What to do with a handler's outcome; failures counted.
    fn decide<E: fmt::Display>(
        counts: &Counts,
        outcome: Result<Result<Outcome, E>, Box<dyn std::any::Any + Send>>,
    ) -> Decided {
        match outcome {
            Ok(Ok(outcome)) => Decided::Settle(outcome),
            Ok(Err(error)) => {
                Counts::bump(&counts.failed);
                Decided::Fail(error.to_string())
            }
            Err(panic) => {
                Counts::bump(&counts.panicked);
                Decided::Fail(format!("panicked: {}", panic_message(&*panic)))
            }
        }
    }

    /// Polls the handler's future to its end, each poll inside
    /// `catch_unwind`, and keeps its lease alive meanwhile.
    async fn run<R>(
        &self,
        index: usize,
        future: impl Future<Output = R>,
    ) -> Result<R, Box<dyn std::any::Any + Send>> {
        let timeout = self.consumer.visibility_timeout();
        let half = clock::duration_nanos(timeout / 2).max(1);
        let mut since: Nanos = self.consumer.now();
        let mut lost = false;
        let mut future = pin!(future);
        let mut nap = pin!(tokio::time::sleep(MAX_NAP));
        std::future::poll_fn(|cx| {
            match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(Poll::Ready(result)) => return Poll::Ready(Ok(result)),
                Ok(Poll::Pending) => {}
                Err(panic) => return Poll::Ready(Err(panic)),
            }
            while !lost && nap.as_mut().poll(cx).is_ready() {
                let now = self.consumer.now();
                if now.saturating_sub(since) >= half {
                    let active = self.active[index].lock();
                    let Some(active) = active.as_ref() else {
                        lost = true;
                        continue;
                    };
                    match active.lease.extend_to(timeout) {
                        Ok(deadline) => {
                            since = now;
                            active.signal.extended(deadline);
                            Counts::bump(&self.counts[index].lease_extensions);
                        }
                        // Expired or released: the settle will tell.
                        Err(_) => {
                            lost = true;
                            active.signal.fire();
                        }
                    }
                }
                let due = since.saturating_add(half);
                let wait = Duration::from_nanos(due.saturating_sub(now)).min(MAX_NAP);
                nap.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            Poll::Pending
        })
        .await
    }
}

/// What a worker does with a handler's outcome.
enum Decided {
    Settle(Outcome),
    Fail(String),
}

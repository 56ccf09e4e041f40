//! A pool of threads that run a handler over a consumer.
//!
//! Each worker thread loops: receive a delivery, run the handler on its
//! [`Job`] (a `&T` handler is one that reads the payload and acks) inside
//! [`catch_unwind`], settle the delivery by the outcome (the
//! [`Outcome`] chosen; `Err` and panics [`fail`](crate::Delivery::fail) it
//! with their text, so the queue's backoff and `max_receives` apply and
//! the texts reach the dead-letter queue). A settle refused because the
//! lease was lost is counted in `lease_expired`, never as a success.
//!
//! One more thread, the heartbeat, keeps the leases of running handlers
//! alive: a handler that has run for half the visibility timeout since its
//! lease was taken or last extended gets its lease extended by a full
//! visibility timeout. Workers publish their current lease in a slot (a
//! [`LeaseHandle`], fenced like the delivery itself) and take it back
//! before settling, so the heartbeat never extends a settled lease. The
//! heartbeat reads the queue's [`Clock`](crate::Clock) and sleeps until
//! the next extension is due, but never longer than [`MAX_NAP`], so that a
//! [`ManualClock`](crate::ManualClock) that jumps is noticed too; it sleeps
//! without a timeout while no handler runs.
//!
//! Stopping: a worker waiting for a message also waits for the pool's stop
//! flag (whoever sets it wakes the queue's consumers), so an idle worker
//! stops at once. `shutdown`, `join` and drop find out whether they run on
//! one of the pool's own workers (a handler ending its pool) by thread id,
//! and then neither wait for nor release the caller's own message.

use crate::clock::{self, Nanos};
use crate::consumer::Consumer;
use crate::delivery::{Delivery, LeaseHandle};
use crate::error::SettleError;
use crate::job::{Job, LeaseLost, Outcome};
use crate::Message;
use parking_lot::{Condvar, Mutex};
use std::any::Any;
use std::fmt;
use std::io;
use std::iter::Sum;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest the heartbeat sleeps while a handler runs.
const MAX_NAP: Duration = Duration::from_millis(25);

/// Runs a handler over a [`Consumer`] on a pool of threads.
///
/// Each worker receives one message at a time and settles it by the
/// handler's outcome (see [`spawn`](Self::spawn)); failures go through the
/// queue's own retry rule, so its backoff and `max_receives` apply and the
/// error texts reach its dead-letter queue. While a handler runs, a
/// heartbeat thread extends its lease by a full visibility timeout each
/// time half a timeout has passed on the queue's clock (checked at least
/// every 25 ms, so a [`ManualClock`](crate::ManualClock) that jumps is seen
/// too). Idle workers notice [`stop`](WorkerPool::stop) at once.
///
/// ```
/// use spool::{Queue, Workers};
/// use std::time::Duration;
///
/// let queue: Queue<u32> = Queue::builder().max_receives(2).open()?;
/// let pool = Workers::new(queue.consumer())
///     .threads(2)
///     .spawn(|n: &u32| if n % 2 == 0 { Ok(()) } else { Err(format!("{n} is odd")) })?;
///
/// for n in 0..4 {
///     queue.producer().send(n)?;
/// }
/// queue.close(); // the workers drain the queue, then stop
/// let report = pool.join(Duration::from_secs(10));
/// assert!(report.unfinished.is_empty());
/// assert_eq!(report.totals().acked, 2);
/// assert_eq!(report.totals().failed, 4); // 1 and 3, twice each
/// let dead = queue.dead_letters().list();
/// assert_eq!(dead[0].errors(), ["1 is odd", "1 is odd"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Workers<T> {
    consumer: Consumer<T>,
    threads: usize,
    name: String,
}

impl<T: Message> Workers<T> {
    /// A pool of one thread over `consumer`; see [`threads`](Self::threads).
    pub fn new(consumer: Consumer<T>) -> Self {
        Workers {
            consumer,
            threads: 1,
            name: "spool-worker".to_owned(),
        }
    }

    /// How many worker threads to run (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The name of the threads: `<name>-<index>`, and `<name>-heartbeat`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the threads, each running `handler` on one message at a time:
    ///
    /// | handler | delivery |
    /// |---|---|
    /// | `Ok(())` | acked |
    /// | `Err(e)` | [`fail`](crate::Delivery::fail)ed with `e.to_string()` |
    /// | panics | failed with `"panicked: <message>"` (the panic hook still prints it) |
    /// | runs past half the visibility timeout | lease extended, again every half timeout |
    ///
    /// Fails only if a thread cannot be spawned; those already started
    /// then stop.
    ///
    /// To read the receive count, choose the retry delay or dead-letter at
    /// once, use [`spawn_jobs`](Self::spawn_jobs).
    pub fn spawn<F, E>(self, handler: F) -> io::Result<WorkerPool<T>>
    where
        F: Fn(&T) -> Result<(), E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.spawn_jobs(move |job: Job<T>| handler(job.payload()).map(|()| Outcome::Ack))
    }

    /// Starts the threads, each running `handler` on one [`Job`] at a time
    /// (the payload, its id, key, receive count, enqueue time, lease
    /// deadline, and a [`LeaseLost`] signal) and settling the delivery by
    /// the [`Outcome`] it returns:
    ///
    /// | handler | delivery | counted in [`WorkerStats`] |
    /// |---|---|---|
    /// | `Ok(Outcome::Ack)` | acked | `acked` |
    /// | `Ok(Outcome::Retry)` | [`nack`](crate::Delivery::nack)ed: the queue's backoff | `retried` |
    /// | `Ok(Outcome::RetryAfter(d))` | visible again after `d` | `retried` |
    /// | `Ok(Outcome::DeadLetter(reason))` | dead-lettered now with `reason` | `dead_lettered` |
    /// | `Err(e)` | [`fail`](crate::Delivery::fail)ed with `e.to_string()` | `failed` |
    /// | panics | failed with `"panicked: <message>"` | `panicked` |
    /// | returns after its lease was lost | nothing: the message is visible again | `lease_expired` |
    ///
    /// Retries, failures and panics are failed attempts: on the message's
    /// last allowed receive it is dead-lettered instead. Leases are kept
    /// alive as for [`spawn`](Self::spawn); when the heartbeat finds one
    /// lost anyway, or a shutdown releases it at its deadline, the job's
    /// [`LeaseLost`] fires so that the handler can stop.
    ///
    /// ```
    /// use spool::{Outcome, Queue, Workers};
    /// use std::time::Duration;
    ///
    /// let queue: Queue<u16> = Queue::builder().open()?;
    /// let pool = Workers::new(queue.consumer()).spawn_jobs(|job| match *job {
    ///     200 => Ok(Outcome::Ack),
    ///     410 => Ok(Outcome::dead_letter("410: gone")),
    ///     429 if job.receive_count() == 1 => Ok(Outcome::RetryAfter(Duration::from_millis(1))),
    ///     status if job.receive_count() < 3 => Err(format!("status {status}")),
    ///     _ => Ok(Outcome::Ack), // a third attempt always works
    /// })?;
    /// for status in [200, 410, 429, 503] {
    ///     queue.producer().send(status)?;
    /// }
    /// queue.close();
    /// let totals = pool.join(Duration::from_secs(10)).totals();
    /// assert_eq!((totals.acked, totals.dead_lettered), (3, 1));
    /// // 429: retried, then failed once; 503: failed twice.
    /// assert_eq!((totals.retried, totals.failed), (1, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_jobs<F, E>(self, handler: F) -> io::Result<WorkerPool<T>>
    where
        F: Fn(Job<T>) -> Result<Outcome, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let pool = Arc::new(Pool::new(self.consumer, self.threads));
        let handler = Arc::new(handler);
        let mut threads = Vec::with_capacity(self.threads);
        let mut spawned = || -> io::Result<JoinHandle<()>> {
            for index in 0..self.threads {
                let (pool, handler) = (Arc::clone(&pool), Arc::clone(&handler));
                threads.push(
                    thread::Builder::new()
                        .name(format!("{}-{index}", self.name))
                        .spawn(move || pool.work(index, &*handler))?,
                );
            }
            let pool = Arc::clone(&pool);
            thread::Builder::new()
                .name(format!("{}-heartbeat", self.name))
                .spawn(move || pool.heartbeat())
        };
        match spawned() {
            Ok(heartbeat) => Ok(WorkerPool {
                pool,
                threads,
                heartbeat: Some(heartbeat),
            }),
            Err(error) => {
                pool.stop();
                Err(error)
            }
        }
    }
}

impl<T> fmt::Debug for Workers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Running worker threads, from [`Workers::spawn`].
///
/// End it with [`shutdown`](Self::shutdown) (stop now, let running
/// handlers finish) or [`join`](Self::join) (let the workers drain a closed
/// queue). A handler may end its own pool (reaching it through a shared
/// slot, say): the call then waits for the other workers only, and the
/// caller's message is settled as its handler returns.
///
/// Dropping it stops the workers without waiting for running handlers:
/// idle workers are woken and their threads joined before `drop` returns;
/// a worker running a handler is left to finish it in the background, its
/// lease still kept alive by the heartbeat, and settles its message when
/// the handler returns. Until then that worker and the heartbeat hold the
/// queue: a persistent queue's directory stays locked
/// ([`OpenError::Locked`](crate::OpenError::Locked)) until the last running
/// handler has returned and its message is settled, and no longer. With no
/// handler running, nothing of the pool holds the queue once `drop`
/// returns.
pub struct WorkerPool<T> {
    pool: Arc<Pool<T>>,
    threads: Vec<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl<T: Message> WorkerPool<T> {
    /// Each worker's counts so far, by thread index.
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
    /// handlers to finish and settle, joins the threads and reports.
    /// `Duration::MAX` waits as long as it takes.
    ///
    /// Messages not yet received stay in the queue. If a handler is still
    /// running at the deadline, its thread is left to finish on its own
    /// (threads cannot be cancelled) and listed in
    /// [`unfinished`](ShutdownReport::unfinished); its message is released
    /// back to the queue at once (a failed attempt released as by `nack`,
    /// counted in `stats().nacked`: it is retried, or dead-lettered if that
    /// was its last receive), and that handler's own settle is then refused and counted
    /// in `lease_lost`.
    ///
    /// Called from the pool's own handler, it waits for the other workers
    /// only: the calling worker is neither waited for, nor listed in
    /// `unfinished`, nor is its message released. Its message is settled
    /// by its handler's result once the handler returns (after the report
    /// was made: the report's counts do not include it); the heartbeat
    /// keeps its lease alive until then, and its thread then ends.
    pub fn shutdown(self, timeout: Duration) -> ShutdownReport {
        self.pool.stop();
        self.finish(timeout)
    }

    /// Waits until `timeout` for the workers to stop by themselves, which
    /// they do once the queue is closed and drained
    /// ([`RecvError::Closed`](crate::RecvError::Closed)), or when a receive
    /// fails because a persistent queue's write-ahead file failed (watch
    /// [`Event::Poisoned`](crate::Event::Poisoned)), then reports. At
    /// the deadline it acts as [`shutdown`](Self::shutdown) with no time
    /// left: it stops the workers and releases what they hold.
    /// `Duration::MAX` waits as long as it takes.
    ///
    /// Called from the pool's own handler, it waits for the other workers
    /// only, as [`shutdown`](Self::shutdown) does. The caller's message is
    /// in flight until its handler returns, so the queue cannot drain
    /// before: the other workers stop once the queue is closed and nothing
    /// is left ready or delayed (what is left is in flight). Should the
    /// caller's handler then fail, its message is retried by whoever
    /// receives from the queue next, no longer by this pool.
    pub fn join(self, timeout: Duration) -> ShutdownReport {
        if self.caller().is_some() {
            self.pool.until_idle.store(true, SeqCst);
            self.pool.consumer.wake();
        }
        self.finish(timeout)
    }

    /// The index of the calling thread, if it is one of the pool's workers.
    fn caller(&self) -> Option<usize> {
        let me = thread::current().id();
        self.threads.iter().position(|t| t.thread().id() == me)
    }

    fn finish(mut self, timeout: Duration) -> ShutdownReport {
        let caller = self.caller();
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.pool.state.lock();
        // The caller is a running worker: wait for the others.
        while state.running > usize::from(caller.is_some()) {
            let timed_out = match deadline {
                Some(deadline) => self
                    .pool
                    .changed
                    .wait_until(&mut state, deadline)
                    .timed_out(),
                None => {
                    self.pool.changed.wait(&mut state);
                    false
                }
            };
            if timed_out {
                break;
            }
        }
        let abandoned: Vec<Active<T>> = (state.active.iter_mut().enumerate())
            .filter(|&(index, _)| Some(index) != caller)
            .filter_map(|(_, slot)| slot.take())
            .collect();
        // The caller's lease is kept alive until its handler returns.
        state.heartbeat_stop = caller.is_none();
        drop(state);
        self.pool.stop();

        // Outside the lock: releasing may call the queue's event hook.
        let released = abandoned
            .iter()
            .filter(|active| {
                let released = active.lease.release().is_ok();
                active.signal.fire(); // released or already lost
                released
            })
            .count();
        let unfinished = self.end_threads(caller);
        ShutdownReport {
            workers: self.stats(),
            unfinished,
            released,
        }
    }
}

impl<T> WorkerPool<T> {
    /// Waits until every worker but `caller` has stopped or is running a
    /// handler (idle ones stop at once once woken), joins the stopped
    /// ones and the heartbeat if it has ended, and returns the workers
    /// left running, detached. The pool must be stopping.
    fn end_threads(&mut self, caller: Option<usize>) -> Vec<usize> {
        let mut state = self.pool.state.lock();
        let settling = |state: &State<T>, index: usize| {
            Some(index) != caller && !state.finished[index] && !state.busy[index]
        };
        while (0..self.threads.len()).any(|index| settling(&state, index)) {
            self.pool.changed.wait(&mut state);
        }
        let unfinished: Vec<usize> = (0..self.threads.len())
            .filter(|&index| Some(index) != caller && !state.finished[index])
            .collect();
        let heartbeat_ends = state.heartbeat_stop || state.running == 0;
        drop(state);
        for (index, thread) in self.threads.drain(..).enumerate() {
            if Some(index) != caller && !unfinished.contains(&index) {
                let _ = thread.join(); // it has finished; a panic here is not the handler's
            }
        }
        if let Some(heartbeat) = self.heartbeat.take().filter(|_| heartbeat_ends) {
            let _ = heartbeat.join();
        }
        unfinished
    }
}

impl<T> Drop for WorkerPool<T> {
    /// Stops the workers; see the type's docs for what still holds the
    /// queue afterwards. Does nothing after `shutdown` or `join`.
    fn drop(&mut self) {
        if self.threads.is_empty() && self.heartbeat.is_none() {
            return;
        }
        self.pool.stop();
        let me = thread::current().id();
        let caller = self.threads.iter().position(|t| t.thread().id() == me);
        self.end_threads(caller);
    }
}

impl<T> fmt::Debug for WorkerPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .field("stopping", &self.pool.stopping.load(SeqCst))
            .finish_non_exhaustive()
    }
}

/// What the worker threads share.
struct Pool<T> {
    consumer: Consumer<T>,
    stopping: AtomicBool,
    /// Set by a `join` called from a worker: stop once the closed queue
    /// has nothing ready or delayed.
    until_idle: AtomicBool,
    counts: Box<[Counts]>,
    state: Mutex<State<T>>,
    /// Signalled when a lease is taken or given back, or a worker exits.
    changed: Condvar,
}

struct State<T> {
    /// The lease each worker's handler is running under, if any.
    active: Vec<Option<Active<T>>>,
    /// Whether each worker is running its handler (still set after a
    /// shutdown deadline took its lease from `active`).
    busy: Vec<bool>,
    finished: Vec<bool>,
    running: usize,
    heartbeat_stop: bool,
}

struct Active<T> {
    lease: LeaseHandle<T>,
    /// The handler's signal, fired when the lease is found lost.
    signal: LeaseLost,
    /// When the lease was taken or last extended, on the queue's clock.
    since: Nanos,
    /// The heartbeat could not extend it (it had already expired).
    lost: bool,
}

impl<T: Message> Pool<T> {
    fn new(consumer: Consumer<T>, threads: usize) -> Self {
        Pool {
            consumer,
            stopping: AtomicBool::new(false),
            until_idle: AtomicBool::new(false),
            counts: (0..threads).map(|_| Counts::default()).collect(),
            state: Mutex::new(State {
                active: (0..threads).map(|_| None).collect(),
                busy: vec![false; threads],
                finished: vec![false; threads],
                running: threads,
                heartbeat_stop: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// One worker thread.
    fn work<F, E>(&self, index: usize, handler: &F)
    where
        F: Fn(Job<T>) -> Result<Outcome, E>,
        E: fmt::Display,
    {
        let counts = &self.counts[index];
        let _exit = Exit { pool: self, index };
        while !self.stopping.load(SeqCst) {
            let delivery = match self
                .consumer
                .recv_for_worker(&self.stopping, &self.until_idle)
            {
                Ok(Some(delivery)) => delivery,
                // Stopped; or closed and drained, or the write-ahead file failed.
                Ok(None) | Err(_) => break,
            };
            Counts::bump(&counts.received);
            self.handle(index, delivery, handler);
        }
    }

    fn handle<F, E>(&self, index: usize, delivery: Delivery<T>, handler: &F)
    where
        F: Fn(Job<T>) -> Result<Outcome, E>,
        E: fmt::Display,
    {
        let counts = &self.counts[index];
        let lease = delivery.lease();
        let since = self.consumer.now();
        // An expired lease has no deadline: the heartbeat then fires the
        // signal at its first look.
        let signal = LeaseLost::new(lease.deadline().unwrap_or(since));
        let job = Job::new(
            delivery.shared_payload(),
            delivery.id(),
            delivery.key().map(Into::into),
            delivery.receive_count(),
            clock::to_nanos(delivery.enqueued_at()),
            signal.clone(),
        );
        let mut state = self.state.lock();
        state.active[index] = Some(Active {
            lease,
            signal,
            since,
            lost: false,
        });
        state.busy[index] = true;
        drop(state);
        self.changed.notify_all();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handler(job)));
        // Taken back before settling, so the heartbeat leaves it alone.
        let mut state = self.state.lock();
        state.active[index] = None;
        state.busy[index] = false;
        drop(state);
        let settled = match outcome {
            Ok(Ok(outcome)) => {
                let (settled, counter) = match outcome {
                    Outcome::Ack => (delivery.ack(), &counts.acked),
                    Outcome::Retry => (delivery.nack(), &counts.retried),
                    Outcome::RetryAfter(delay) => (delivery.retry_after(delay), &counts.retried),
                    Outcome::DeadLetter(reason) => {
                        (delivery.dead_letter(reason), &counts.dead_lettered)
                    }
                };
                if settled.is_ok() {
                    Counts::bump(counter);
                }
                settled
            }
            Ok(Err(error)) => {
                Counts::bump(&counts.failed);
                delivery.fail(error)
            }
            Err(panic) => {
                Counts::bump(&counts.panicked);
                delivery.fail(format!("panicked: {}", panic_message(&*panic)))
            }
        };
        if let Err(refused) = settled {
            Counts::bump(&counts.lease_lost);
            if matches!(refused, SettleError::LeaseExpired { .. }) {
                Counts::bump(&counts.lease_expired);
            }
        }
    }

    /// The heartbeat thread: extends the leases of long-running handlers.
    fn heartbeat(&self) {
        let timeout = self.consumer.visibility_timeout();
        let half = clock::duration_nanos(timeout / 2).max(1);
        let mut state = self.state.lock();
        loop {
            if state.heartbeat_stop || (self.stopping.load(SeqCst) && state.running == 0) {
                return;
            }
            let now = self.consumer.now();
            let mut next_due: Option<Nanos> = None;
            for (index, slot) in state.active.iter_mut().enumerate() {
                let Some(active) = slot.as_mut().filter(|a| !a.lost) else {
                    continue;
                };
                if now.saturating_sub(active.since) >= half {
                    match active.lease.extend_to(timeout) {
                        Ok(deadline) => {
                            active.since = now;
                            active.signal.extended(deadline);
                            Counts::bump(&self.counts[index].lease_extensions);
                        }
                        Err(_) => {
                            active.lost = true; // the worker's settle will tell
                            active.signal.fire();
                            continue;
                        }
                    }
                }
                let due = active.since.saturating_add(half);
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
            }
            match next_due {
                None => self.changed.wait(&mut state),
                Some(due) => {
                    let nap = Duration::from_nanos(due.saturating_sub(now)).min(MAX_NAP);
                    self.changed.wait_for(&mut state, nap);
                }
            }
        }
    }
}

impl<T> Pool<T> {
    /// Sets the stop flag and wakes the workers waiting for a message and
    /// the threads waiting on `changed`.
    fn stop(&self) {
        self.stopping.store(true, SeqCst);
        self.consumer.wake();
        self.changed.notify_all();
    }
}

/// Marks a worker finished however its loop ends (a panic outside the
/// handler included), so that nobody waits for it for ever.
struct Exit<'a, T> {
    pool: &'a Pool<T>,
    index: usize,
}

impl<T> Drop for Exit<'_, T> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock();
        state.finished[self.index] = true;
        state.busy[self.index] = false;
        state.running -= 1;
        drop(state);
        self.pool.changed.notify_all();
    }
}

/// The text of a panic payload: `panic!` gives a `&str` or a `String`.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "a non-string payload"
    }
}

/// One worker's counters.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) received: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) lease_extensions: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) lease_expired: AtomicU64,
}

impl Counts {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn read(&self) -> WorkerStats {
        WorkerStats {
            received: self.received.load(Relaxed),
            acked: self.acked.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            lease_extensions: self.lease_extensions.load(Relaxed),
            lease_lost: self.lease_lost.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            lease_expired: self.lease_expired.load(Relaxed),
        }
    }
}

/// What one worker (or, summed, a pool) has done.
///
/// Every received message ends in exactly one of `acked`, `retried`,
/// `dead_lettered`, `failed` or `panicked` once its handler returns,
/// except an `Ok` outcome whose settle was refused, which counts only in
/// `lease_lost` (and, if its lease had been lost, in `lease_expired`): a
/// handler that finishes after its lease was lost is never counted as a
/// success. `lease_lost` counts settles refused because the lease had run
/// out (or was released at a shutdown deadline), so the queue redelivers
/// them, or because a persistent queue's write-ahead file failed;
/// `lease_expired` counts the first kind only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Deliveries taken from the queue.
    pub received: u64,
    /// Handler returned `Ok` and the ack went through.
    pub acked: u64,
    /// Handler returned `Err`.
    pub failed: u64,
    /// Handler panicked.
    pub panicked: u64,
    /// Leases extended by the heartbeat.
    pub lease_extensions: u64,
    /// Settles refused because the lease had already run out, or the
    /// write-ahead file failed.
    pub lease_lost: u64,
    /// Job outcomes [`Retry`](Outcome::Retry) and
    /// [`RetryAfter`](Outcome::RetryAfter) that went through.
    pub retried: u64,
    /// Job outcomes [`DeadLetter`](Outcome::DeadLetter) that went through.
    pub dead_lettered: u64,
    /// Handlers that returned after their lease was lost (it ran out, or a
    /// shutdown released it): whatever they returned settled nothing
    /// ([`SettleError::LeaseExpired`]), and the message is visible again.
    pub lease_expired: u64,
}

impl Sum for WorkerStats {
    fn sum<I: Iterator<Item = WorkerStats>>(iter: I) -> WorkerStats {
        iter.fold(WorkerStats::default(), |a, b| WorkerStats {
            received: a.received + b.received,
            acked: a.acked + b.acked,
            failed: a.failed + b.failed,
            panicked: a.panicked + b.panicked,
            lease_extensions: a.lease_extensions + b.lease_extensions,
            lease_lost: a.lease_lost + b.lease_lost,
            retried: a.retried + b.retried,
            dead_lettered: a.dead_lettered + b.dead_lettered,
            lease_expired: a.lease_expired + b.lease_expired,
        })
    }
}

/// What [`WorkerPool::shutdown`] or [`WorkerPool::join`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Each worker's counts when the pool ended, by thread index.
    pub workers: Vec<WorkerStats>,
    /// Workers whose handler was still running at the deadline; their
    /// threads finish on their own, detached.
    pub unfinished: Vec<usize>,
    /// Messages those handlers held, released back to the queue.
    pub released: usize,
}

impl ShutdownReport {
    /// The counts of all workers together.
    pub fn totals(&self) -> WorkerStats {
        self.workers.iter().copied().sum()
    }
}

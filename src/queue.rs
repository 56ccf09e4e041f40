//! The queue handle: opens producers, consumers and the dead-letter queue.

use crate::backend::Backend;
use crate::builder::Builder;
use crate::consumer::Consumer;
use crate::controls::RateLimit;
use crate::dead_letter::DeadLetters;
use crate::error::{CancelError, LimitError, StorageError};
use crate::message::MessageId;
use crate::producer::Producer;
use crate::schedule::{Runner, Schedule, ScheduleError, Scheduled};
use crate::shared::Peeked;
use crate::stats::Stats;
use crate::wal::RecoveryReport;
use crate::Message;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// An in-process message queue with leases, retries, idempotency keys and
/// a dead-letter queue.
///
/// Open one with [`Queue::builder`], then hand [`Producer`]s and
/// [`Consumer`]s to your threads. A `Queue` handle can itself make more of
/// them, so it keeps the queue open like a producer does: consumers get
/// [`RecvError::Closed`](crate::RecvError::Closed) once the queue is drained
/// and either [`close`](Self::close) was called or every `Queue` and
/// `Producer` handle is gone.
///
/// ```
/// use spool::Queue;
///
/// let queue: Queue<String> = Queue::builder().capacity(100).open()?;
/// let producer = queue.producer();
/// let consumer = queue.consumer();
///
/// let worker = std::thread::spawn(move || {
///     let mut done = Vec::new();
///     while let Ok(job) = consumer.recv() {
///         done.push(job.to_uppercase());
///         job.ack().unwrap();
///     }
///     done
/// });
/// producer.send("resize".to_string())?;
/// producer.send("upload".to_string())?;
/// queue.close();
/// assert_eq!(worker.join().unwrap(), ["RESIZE", "UPLOAD"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    backend: Backend<T>,
}

/// The error of a call a Redis queue does not offer.
#[cfg(feature = "redis")]
fn unsupported(what: &'static str) -> StorageError {
    StorageError::unsupported(crate::redis::BACKEND, what)
}

impl<T: Message> Queue<T> {
    /// Settings for a new queue; finish with [`Builder::open`].
    pub fn builder() -> Builder<T> {
        Builder::new()
    }

    pub(crate) fn new(backend: Backend<T>) -> Self {
        backend.add_sender();
        Queue { backend }
    }

    /// The queue's name ([`Builder::name`]).
    pub fn name(&self) -> &str {
        match &self.backend {
            Backend::Local(shared) => &shared.config.name,
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.name(),
        }
    }

    /// A new sending handle.
    pub fn producer(&self) -> Producer<T> {
        Producer::new(self.backend.clone())
    }

    /// A new receiving handle.
    pub fn consumer(&self) -> Consumer<T> {
        match &self.backend {
            Backend::Local(shared) => Consumer::new(Arc::clone(shared)),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => Consumer::remote(Arc::clone(remote)),
        }
    }

    /// The attached dead-letter queue.
    pub fn dead_letters(&self) -> DeadLetters<T> {
        DeadLetters::new(self.backend.clone())
    }

    /// Cancels message `id` if no consumer has received it yet: it is
    /// ready, or waiting for its delay (or `at` time, or a retry backoff).
    /// Says where it was found; [`CancelError::NotFound`] if it is in
    /// flight, acknowledged, dead-lettered or unknown.
    ///
    /// The message is gone as if acknowledged (counted in
    /// [`Stats::cancelled`]); its slot frees and its idempotency key stays
    /// remembered for the rest of its window. A persistent queue records
    /// the cancel and waits for it as an ack does, so it survives a reopen.
    /// Cancelling a ready message moves the ready queue once: O(ready
    /// messages), with the consumers held meanwhile; a delayed one,
    /// O(delayed messages). A message coming due at that very instant
    /// (moved by another thread) can be missed: `NotFound` then, and a
    /// second call finds it ready.
    ///
    /// ```
    /// use spool::{CancelError, Cancelled, Queue, SendOptions};
    /// use std::time::Duration;
    ///
    /// let queue: Queue<u32> = Queue::builder().open()?;
    /// let producer = queue.producer();
    /// let now = producer.send(1)?;
    /// let later = producer.send_with(2, SendOptions::new().delay(Duration::from_secs(60)))?;
    /// assert_eq!(queue.cancel(now), Ok(Cancelled::Ready));
    /// assert_eq!(queue.cancel(later.id()), Ok(Cancelled::Delayed));
    /// assert_eq!(queue.cancel(now), Err(CancelError::NotFound(now)));
    /// assert_eq!(queue.stats().cancelled, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, id: MessageId) -> Result<Cancelled, CancelError> {
        match &self.backend {
            Backend::Local(shared) => shared.cancel(id),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.cancel(id),
        }
    }

    /// Cancels the message sent with idempotency key `key`, as
    /// [`cancel`](Self::cancel) does; returns its id too. The key must
    /// still be remembered (within the dedup window):
    /// [`CancelError::UnknownKey`] if not.
    pub fn cancel_key(&self, key: &str) -> Result<(MessageId, Cancelled), CancelError> {
        match &self.backend {
            Backend::Local(shared) => shared.cancel_key(key),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.cancel_key(key),
        }
    }

    /// [`cancel`](Self::cancel) for async code: waits for the disk without
    /// blocking the thread. Cancel safety: the message is cancelled at the
    /// first poll; dropped after, only the wait for the disk is given up.
    pub async fn cancel_async(&self, id: MessageId) -> Result<Cancelled, CancelError> {
        match &self.backend {
            Backend::Local(shared) => {
                let (found, ticket) = shared.cancel_logged(id)?;
                (shared.durable_async(ticket).await).map_err(CancelError::Storage)?;
                Ok(found)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => {
                let remote = Arc::clone(remote);
                crate::redis::offload(move || remote.cancel(id)).await
            }
        }
    }

    /// [`cancel_key`](Self::cancel_key) for async code; cancel safety as
    /// [`cancel_async`](Self::cancel_async).
    pub async fn cancel_key_async(&self, key: &str) -> Result<(MessageId, Cancelled), CancelError> {
        match &self.backend {
            Backend::Local(shared) => {
                let id = shared.id_of_key(key)?;
                Ok((id, self.cancel_async(id).await?))
            }
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => {
                let (remote, key) = (Arc::clone(remote), key.to_owned());
                crate::redis::offload(move || remote.cancel_key(&key)).await
            }
        }
    }

    /// Starts a periodic job: a thread that sends `make(tick)` at each
    /// tick of `schedule`, with an idempotency key per tick so that no
    /// tick is enqueued twice (within the dedup window: across restarts of
    /// a persistent queue, and between schedules of the same name). What
    /// happens to ticks missed while no schedule ran is the schedule's
    /// [`Missed`](crate::Missed) policy; see [`Schedule`](crate::Schedule)
    /// for the details.
    ///
    /// ```
    /// use spool::{ManualClock, Queue, Schedule};
    /// use std::time::{Duration, SystemTime};
    ///
    /// let clock = ManualClock::new();
    /// let queue: Queue<SystemTime> = Queue::builder().clock(clock.clone()).open()?;
    /// let health = queue.schedule(Schedule::every("health", Duration::from_secs(60)), |tick| tick)?;
    /// clock.advance(Duration::from_secs(60));
    /// let check = queue.consumer().recv_timeout(Duration::from_secs(10))?;
    /// assert_eq!(check.key().map(|k| k.starts_with("health@")), Some(true));
    /// check.ack()?;
    /// assert_eq!(health.stop().sent, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn schedule(
        &self,
        schedule: Schedule,
        make: impl Fn(SystemTime) -> T + Send + Sync + 'static,
    ) -> Result<Scheduled, ScheduleError> {
        let window = match &self.backend {
            Backend::Local(shared) => shared.config.dedup_window,
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.dedup_window(),
        };
        Runner::start(schedule, self.producer(), window, make)
    }

    /// Counts and counters, exact when nothing else is changing the queue.
    pub fn stats(&self) -> Stats {
        match &self.backend {
            Backend::Local(shared) => shared.stats(),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.stats().unwrap_or_else(|_| Stats {
                capacity: remote.capacity(),
                ..Stats::default()
            }),
        }
    }

    /// [`stats`](Self::stats), with the error of a backend that failed: a
    /// local queue never fails; on a Redis queue, `stats` gives zeros
    /// (but the capacity) when the server cannot be reached, and this
    /// says why.
    pub fn try_stats(&self) -> Result<Stats, StorageError> {
        match &self.backend {
            Backend::Local(shared) => Ok(shared.stats()),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.stats(),
        }
    }

    /// Pauses the queue: receives (blocking and async, and worker pools)
    /// wait until [`resume`](Self::resume), sends go on, messages in
    /// flight can still be settled and leases still expire. A persistent
    /// queue records it (returning once it is as durable as the queue's
    /// durability promises), so a queue paused when it is closed or
    /// crashes opens paused. [`Stats::paused`] says whether it is. A closed
    /// queue that is paused does not drain: its consumers (and a worker
    /// pool waiting for it to drain) wait for the resume. A topic
    /// subscription is a queue: pause it through
    /// [`Topic::subscription`](crate::Topic::subscription).
    ///
    /// # Errors
    ///
    /// A persistent queue whose record cannot be written (or whose file
    /// already failed) returns the [`StorageError`] and stays as it was
    /// in memory (as for any failed write, the record may or may not have
    /// reached the disk).
    ///
    /// ```
    /// use spool::{Queue, RecvError};
    ///
    /// let queue = Queue::<u32>::builder().open()?;
    /// queue.producer().send(1)?;
    /// queue.pause()?;
    /// assert!(queue.stats().paused);
    /// assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
    /// queue.resume()?;
    /// assert_eq!(*queue.consumer().try_recv()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pause(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.set_paused(true),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Err(unsupported("pause")),
        }
    }

    /// Resumes a paused queue and wakes every waiting receive.
    pub fn resume(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.set_paused(false),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Err(unsupported("resume")),
        }
    }

    /// Sets (or with `None` removes) the cap on messages in flight across
    /// all consumers ([`Builder::max_in_flight`](crate::Builder::max_in_flight)).
    /// Lowering it leases nothing back: receives wait until enough
    /// messages have left flight. Not kept in the write-ahead file.
    pub fn set_max_in_flight(&self, max: Option<usize>) -> Result<(), LimitError> {
        if max == Some(0) {
            return Err(LimitError::ZeroMaxInFlight);
        }
        match &self.backend {
            Backend::Local(shared) => {
                shared.set_max_in_flight(max);
                Ok(())
            }
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Err(LimitError::Unsupported {
                backend: crate::redis::BACKEND,
                what: "max_in_flight",
            }),
        }
    }

    /// The cap on messages in flight, if any.
    pub fn max_in_flight(&self) -> Option<usize> {
        match &self.backend {
            Backend::Local(shared) => shared.max_in_flight(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    /// Sets (or with `None` removes) the receive rate limit
    /// ([`Builder::rate_limit`](crate::Builder::rate_limit)); a new limit
    /// starts with a full bucket. Not kept in the write-ahead file.
    /// [`LimitError::Unsupported`] on a Redis queue.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<(), LimitError> {
        match &self.backend {
            Backend::Local(shared) => {
                shared.set_rate_limit(limit);
                Ok(())
            }
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Err(LimitError::Unsupported {
                backend: crate::redis::BACKEND,
                what: "rate_limit",
            }),
        }
    }

    /// The receive rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        match &self.backend {
            Backend::Local(shared) => shared.rate_limit(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    /// Copies of up to `max` of the next ready messages, in the order
    /// receives would take them, without leasing them: for inspection.
    /// Nothing changes (no receive count, no lease); what it shows may be
    /// received by the time the caller looks. Delayed, in-flight and
    /// dead-lettered messages are not shown, nor ready ones whose time to
    /// live has run out. O(`max`) plus, at times, the messages sent as one
    /// batch with the last one shown.
    ///
    /// ```
    /// use spool::Queue;
    ///
    /// let queue = Queue::<String>::builder().open()?;
    /// queue.producer().send("a".to_owned())?;
    /// queue.producer().send("b".to_owned())?;
    /// let next: Vec<String> = queue.peek(5).into_iter().map(|p| p.message).collect();
    /// assert_eq!(next, ["a", "b"]);
    /// assert_eq!(queue.stats().ready, 2, "still there");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peek(&self, max: usize) -> Vec<Peeked<T>>
    where
        T: Clone,
    {
        match &self.backend {
            Backend::Local(shared) => shared.peek(max),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.peek(max).unwrap_or_default(),
        }
    }

    /// Stops new sends (they return [`SendError::Closed`](crate::SendError::Closed)
    /// and blocked senders wake with it). Consumers drain what is left
    /// (including in-flight messages that come back) and then get
    /// [`RecvError::Closed`](crate::RecvError::Closed).
    pub fn close(&self) {
        match &self.backend {
            Backend::Local(shared) => shared.close(),
            // Failing, it is retried by the next call of `close`; every
            // process sees the queue closed once one call succeeds.
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => {
                let _ = remote.close();
            }
        }
    }

    /// Whether the queue is closed to new messages.
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Local(shared) => shared.is_closed(),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => remote.is_closed(),
        }
    }

    /// Makes every operation recorded so far durable (on disk), whatever
    /// the [`Durability`](crate::Durability) level. Dropping the last handle
    /// also syncs, but ignores a failure: call `sync` before a planned
    /// shutdown of an `Interval` or `None` queue to see it. A no-op in
    /// memory.
    pub fn sync(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.sync(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Ok(()),
        }
    }

    /// [`sync`](Self::sync) for async code: waits for the disk without
    /// blocking the thread. Dropped before it ends, it leaves nothing
    /// behind (the writer syncs all the same).
    pub async fn sync_async(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.sync_async().await,
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Ok(()),
        }
    }

    /// Compacts the write-ahead file now: seals the active segment and
    /// rewrites every file before it as one base file holding only the
    /// live state, then returns. Compaction runs on a thread of its own,
    /// so sends, receives and settles go on meanwhile; it also runs by
    /// itself as segments fill, so call this only to reclaim the disk at
    /// once (after draining a large backlog, say). A no-op in memory.
    ///
    /// A failure (a full disk) leaves the files as they were and does not
    /// stop the queue; an error after the write-ahead file stopped is that
    /// earlier failure.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("spool-doc-compact-{}", std::process::id()));
    /// let queue: spool::Queue<u64> = spool::Queue::builder().path(&dir).open()?;
    /// let producer = queue.producer();
    /// let consumer = queue.consumer();
    /// for i in 0..1_000 {
    ///     producer.send(i)?;
    ///     consumer.try_recv()?.ack()?;
    /// }
    /// let before = queue.disk_usage()?;
    /// queue.compact()?;
    /// assert!(queue.disk_usage()? < before);
    /// # drop((producer, consumer, queue));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.compact(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Err(unsupported("compact")),
        }
    }

    /// Bytes the write-ahead files take on disk (0 in memory). Acknowledged
    /// messages are reclaimed by compaction as segments fill, so this stays
    /// within a small multiple of the live messages plus six segments
    /// (`docs/FORMAT.md`, section 8).
    pub fn disk_usage(&self) -> Result<u64, StorageError> {
        match &self.backend {
            Backend::Local(shared) => shared.disk_usage(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => Err(unsupported("disk_usage")),
        }
    }

    #[cfg(test)]
    pub(crate) fn journal_poisoned(&self) -> bool {
        match &self.backend {
            Backend::Local(shared) => shared.journal_poisoned(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => false,
        }
    }

    /// Publishes this queue's statistics to the `metrics` recorder now
    /// (feature `metrics`; a reporter thread also does it every second
    /// for every open queue). See `src/observe/metrics.rs` for the
    /// metrics and their names.
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        match &self.backend {
            Backend::Local(shared) => crate::observe::Report::report(&**shared),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => crate::observe::Report::report(&*remote.core()),
        }
    }

    /// For a persistent queue, what opening it found and repaired: files
    /// and records replayed, a torn tail truncated, damaged regions skipped
    /// by salvage. `None` for an in-memory queue.
    pub fn recovery_report(&self) -> Option<RecoveryReport> {
        match &self.backend {
            Backend::Local(shared) => shared.recovery_report().cloned(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        self.backend.add_sender();
        Queue {
            backend: self.backend.clone(),
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.backend.drop_sender();
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Queue");
        match &self.backend {
            Backend::Local(shared) => debug.field("config", &shared.config),
            #[cfg(feature = "redis")]
            Backend::Redis(remote) => debug.field("redis", remote.name()),
        };
        debug.finish_non_exhaustive()
    }
}

/// Where [`Queue::cancel`] found the message it cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Visible to consumers, not yet received.
    Ready,
    /// Waiting for its delay, its `at` time or a retry backoff.
    Delayed,
}

//! An embeddable, in-process message queue with broker semantics.
//!
//! spool gives the threads of one process what a job broker (SQS, RabbitMQ)
//! gives a fleet, without a broker to run:
//!
//! - **Backpressure**: a bounded queue; [`Producer::send`] blocks while it
//!   is full, [`Producer::try_send`] gives the message back.
//! - **At-least-once delivery with leases**: a received [`Delivery`] is
//!   invisible to other consumers for the visibility timeout; if it is not
//!   acknowledged in time it comes back, and a late ack through the old
//!   lease is refused ([`SettleError::LeaseExpired`]).
//! - **Retries with backoff** ([`Backoff`]) and a **dead-letter queue**
//!   ([`DeadLetters`]) that catches messages after `max_receives` attempts,
//!   with the errors of each attempt, ready to inspect, fix and redrive.
//! - **Idempotency keys** ([`SendOptions::key`]) that drop duplicate sends
//!   within a window, and **delays** ([`SendOptions::delay`], or a
//!   wall-clock time with [`SendOptions::at`]).
//! - **Batches**: [`Producer::send_batch`] and [`Consumer::recv_batch`]
//!   move many messages as one, under one lease ([`Batch`]), for about the
//!   cost of one.
//! - **Exact statistics** ([`Queue::stats`]) and a replaceable [`Clock`]
//!   so that tests of timeouts are exact.
//! - **Persistence**, optional: [`Builder::path`] keeps the queue in a
//!   write-ahead file, so that with [`Durability::Sync`] nothing
//!   acknowledged to a producer is lost when the process or the machine
//!   dies (format: `docs/FORMAT.md`).
//! - **Periodic jobs** with [`Queue::schedule`]: every interval, or on a
//!   cron expression (feature `cron`), with a key per tick so that no tick
//!   is enqueued twice across restarts, and a [`Missed`] policy per
//!   schedule.
//! - **Fan-out** with [`Topic`] (each subscription a full queue), **worker
//!   pools** with [`Workers`] (whose handlers can read a [`Job`]'s metadata
//!   and choose its [`Outcome`]: ack, retry, retry after a delay, or
//!   dead-letter), and [`RateAlert`] on the dead-letter rate.
//! - **Across processes** (feature `redis`): `Builder::redis` keeps the
//!   queue on a Redis server, shared by every process that opens it, with
//!   the same handles and semantics (fenced leases, retries, dead letters,
//!   keys, batches, topics, worker pools, async); the README lists every
//!   difference.
//! - **Async**: every call that waits has a twin that waits without
//!   blocking a thread, on any executor ([`Producer::send_async`],
//!   [`Consumer::recv_async`], [`Consumer::stream`],
//!   [`Delivery::ack_async`], ...), each with its cancel safety written
//!   down; with the `tokio` feature, `AsyncWorkers` runs async handlers on
//!   a tokio runtime.
//!
//! # Example
//!
//! ```
//! use spool::{Queue, RecvError};
//! use std::time::Duration;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Resize { image: String, width: u32 }
//!
//! let queue: Queue<Resize> = Queue::builder()
//!     .capacity(1_000)
//!     .visibility_timeout(Duration::from_secs(30))
//!     .max_receives(3)
//!     .open()?;
//!
//! let producer = queue.producer();
//! producer.send(Resize { image: "cat.png".into(), width: 200 })?;
//! producer.send(Resize { image: "".into(), width: 200 })?;
//! queue.close(); // no more sends; consumers drain, then see Closed
//!
//! let consumer = queue.consumer();
//! loop {
//!     match consumer.recv() {
//!         Ok(job) if job.image.is_empty() => job.dead_letter("no image name")?,
//!         Ok(job) => job.ack()?,
//!         Err(RecvError::Closed) => break,
//!         Err(other) => return Err(other.into()),
//!     }
//! }
//! assert_eq!(queue.dead_letters().len(), 1);
//! assert_eq!(queue.stats().acked, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Semantics
//!
//! | event | what happens |
//! |---|---|
//! | `send` while full | blocks until a message is acked or dead-lettered (`try_send`: `Full`, `send_timeout`: `Timeout`) |
//! | `recv` | leases the oldest ready message for the visibility timeout; its receive count goes up |
//! | `recv_batch(n)` | leases up to `n` of the oldest ready messages as one [`Batch`], under one lease: `ack`, `nack`, `retry_after` and `extend` act on all of them; `into_deliveries` splits it into one lease per message |
//! | `ack` | the message is gone for good; its slot frees |
//! | `nack`, `fail`, drop unsettled | visible again after the backoff; `fail` records the error text |
//! | `retry_after(d)` | visible again after `d` |
//! | `extend(d)` | the lease now runs until `d` from now |
//! | `send_with(.., delay(d))` | invisible for `d` |
//! | `send_with(.., at(t))` | invisible until the wall-clock time `t` (kept as that time across a restart) |
//! | `redrive` from the dead-letter queue | back in the queue with a fresh receive count |
//! | lease expires | as a `nack`; counted in `expired` |
//! | any failure on the `max_receives`-th receive | dead-lettered instead (the message's own [`SendOptions::max_receives`] if it has one) |
//! | [`SendOptions::ttl`] runs out before any receive | dead-lettered as [`DeadLetterReason::Expired`], as of then |
//! | `dead_letter(reason)` | dead-lettered now |
//! | `Queue::cancel(id)` while ready or delayed | gone as if acked, counted in `cancelled`; in flight or settled: `NotFound` |
//! | `DeadLetters::remove(id)` | that dead letter is gone for good |
//! | settle after the lease expired | `Err(LeaseExpired)`, nothing changes |
//! | same key within the window | nothing enqueued, `Sent::Duplicate(original id)`; different payload: `KeyConflict` |
//! | `Queue::pause()` / `resume()` | receives wait while paused, sends go on; recorded, so kept across a reopen |
//! | `max_in_flight(n)`, `rate_limit(..)` | a receive waits while `n` messages are in flight, or for the next token of the rate limit |
//! | `Queue::peek(n)` | copies of the next `n` ready messages, nothing leased |
//! | `close()` or every `Queue`/`Producer` dropped | sends fail with `Closed`; consumers drain, then get `Closed` |
//!
//! Ordering: with one producer and no failures, consumers see messages in
//! send order. Retried messages go to the back of the queue, unless they
//! are in a message group ([`SendOptions::group`]: one message of a group
//! at a time, in send order, across retries); [`SendOptions::priority`]
//! picks one of three levels, taken highest first with a fair share for
//! the lower ones (see [`Priority`]). Messages that
//! become visible at the same instant (expired leases, delays coming due)
//! are queued in the order they came due, then by id.
//!
//! Timing: receive and ack read a cheaper, coarse clock
//! ([`Clock::now_coarse_nanos`]) and a lease's deadline adds the lag that
//! clock may have ([`Clock::coarse_lag`]), so a lease runs for at least its
//! visibility timeout and up to that lag longer (with [`SystemClock`] on
//! Linux two ticks, 2 to 8 ms; an ack is accepted up to one more tick
//! late). A send to an in-memory queue without a key or a delay reads it
//! too, so its `enqueued_at` may be up to the lag early; delays,
//! idempotency windows and sends to a write-ahead file read the precise
//! clock. [`ManualClock`] has no lag. Time saturates at the year 2554,
//! and so do deadlines: any duration, `Duration::MAX` included, is
//! accepted; a lease or key window that would end later never runs out,
//! a delay that would end later comes due then (see [`Clock`]).
//!
//! Capacity counts ready, in-flight and delayed messages; a message whose
//! lease expires keeps its slot, so it always has room to come back.
//!
//! # Features
//!
//! All off by default; without them none of their code is compiled in.
//!
//! | feature | what |
//! |---|---|
//! | `cli` | the `spool` binary and `spool::admin`: stats, verify, dump, dead letters and compaction of a queue directory from a shell |
//! | `metrics` | per-queue counters and gauges through the `metrics` facade (`Queue::record_metrics`) |
//! | `tracing` | a span per delivery (`Delivery::span`), dead-lettering at warn, poisoning at error |
//! | `tokio` | `AsyncWorkers`: async handlers on a tokio runtime (the async calls themselves need no feature) |

#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "cli")]
pub mod admin;
mod alarm;
mod alert;
#[cfg(feature = "tokio")]
mod async_workers;
mod backend;
mod backoff;
mod batch;
mod builder;
mod capacity;
mod clock;
mod codec;
mod consumer;
mod controls;
mod dead_letter;
mod dedup;
mod delivery;
mod error;
mod event;
mod expiry;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod job;
mod lease;
#[cfg(all(test, loom))]
mod loom_tests;
mod message;
mod monotonic;
mod observe;
mod order;
mod padded;
mod persist;
mod producer;
mod queue;
mod ready;
mod recv;
#[cfg(feature = "redis")]
mod redis;
mod schedule;
mod shared;
mod signal;
mod stats;
mod sync;
mod timer;
mod topic;
mod wal;
mod workers;

pub use alert::{Alert, RateAlert};
#[cfg(feature = "tokio")]
pub use async_workers::{AsyncWorkerPool, AsyncWorkers};
pub use backoff::Backoff;
pub use batch::{Batch, BatchIter, BatchMessage};
pub use builder::{Builder, MAX_CAPACITY, MAX_IDLE_SPIN, MAX_MESSAGE_BYTES, UNNAMED};
pub use clock::{Clock, ClockWaker, ManualClock, SystemClock};
pub use consumer::Consumer;
pub use controls::RateLimit;
pub use dead_letter::{DeadLetter, DeadLetterReason, DeadLetters};
pub use delivery::Delivery;
pub use error::{
    CancelError, LimitError, OpenError, PriorityError, RecvError, RedriveError, SendError,
    SettleError, StorageError,
};
pub use event::Event;
pub use job::{Job, LeaseLost, Outcome};
pub use message::MessageId;
pub use order::{Priority, FAIR_SHARE, MAX_GROUP_BYTES};
pub use producer::{Producer, SendOptions, Sent, MAX_KEY_BYTES, MAX_TEXT_BYTES};
pub use queue::{Cancelled, Queue};
pub use recv::{Iter, RecvBatchFuture, RecvFuture, RecvStream};
pub use schedule::{Missed, Schedule, ScheduleError, ScheduleStats, Scheduled};
pub use shared::Peeked;
pub use stats::Stats;
pub use topic::{
    PublishError, Published, Refusal, Refused, SubscribeError, Topic, MAX_SUBSCRIPTION_NAME,
};
pub use wal::{Durability, RecoveryReport, SalvagedRegion};
pub use workers::{ShutdownReport, WorkerPool, WorkerStats, Workers};

/// What a queue can carry: any `serde` type that can cross threads.
///
/// Implemented for every such type. The payload is encoded only when
/// needed: for a persistent queue's write-ahead file, and to compare
/// payloads under an idempotency key.
pub trait Message: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}

impl<T> Message for T where T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{}

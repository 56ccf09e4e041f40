//! Counts and counters, for dashboards and alerts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of a queue, from [`Queue::stats`](crate::Queue::stats).
///
/// The counts are exact when no other thread is changing the queue; under
/// concurrent use each is exact at some instant during the call, and a
/// message moving between states may be seen in neither or both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// The queue's capacity.
    pub capacity: usize,
    /// Messages visible to consumers now.
    pub ready: usize,
    /// Messages delivered and not yet settled (under a lease).
    pub in_flight: usize,
    /// Messages waiting for a delay or a retry backoff to pass.
    pub delayed: usize,
    /// Messages in the dead-letter queue now.
    pub dead_letters: usize,
    /// How long the oldest ready message has been waiting since it became
    /// ready (sent, released or redriven); `None` when nothing is ready.
    pub oldest_ready_age: Option<Duration>,
    /// Messages enqueued (not counting duplicates).
    pub sent: u64,
    /// Sends dropped because their idempotency key was seen.
    pub duplicates: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries released by the consumer: `nack`, `fail`, `retry_after`,
    /// or dropped unsettled. A release that dead-letters the message (its
    /// last allowed receive) counts here and in `dead_lettered`.
    pub nacked: u64,
    /// Leases that ran out before their delivery was settled.
    pub expired: u64,
    /// Messages moved to the dead-letter queue, ever.
    pub dead_lettered: u64,
    /// Messages moved back from the dead-letter queue.
    pub redriven: u64,
    /// Dead letters deleted by a purge or
    /// [`DeadLetters::remove`](crate::DeadLetters::remove).
    pub purged: u64,
    /// Messages cancelled before they were received
    /// ([`Queue::cancel`](crate::Queue::cancel)).
    pub cancelled: u64,
    /// Whether the queue is paused ([`Queue::pause`](crate::Queue::pause)):
    /// receives wait, sends go on.
    pub paused: bool,
}

/// The counters behind [`Stats`]: plain atomics, bumped as things happen,
/// none on the hot path: sends are counted by their ids, acknowledgements
/// by the lease table under its locks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) duplicates: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) redriven: AtomicU64,
    pub(crate) purged: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    pub(crate) fn fill(&self, stats: &mut Stats) {
        stats.duplicates = self.duplicates.load(Relaxed);
        stats.nacked = self.nacked.load(Relaxed);
        stats.expired = self.expired.load(Relaxed);
        stats.dead_lettered = self.dead_lettered.load(Relaxed);
        stats.redriven = self.redriven.load(Relaxed);
        stats.purged = self.purged.load(Relaxed);
        stats.cancelled = self.cancelled.load(Relaxed);
    }
}

//! Metrics through the `metrics` facade (feature `metrics`), labelled
//! `queue` with the queue's [name](crate::Queue::name).
//!
//! | metric | kind | from |
//! |---|---|---|
//! | `spool_sent_total`, `spool_acked_total`, `spool_released_total`, `spool_expired_total`, `spool_dead_lettered_total`, `spool_redriven_total` | counter | [`Stats`](crate::Stats) (`released` is `nacked`) |
//! | `spool_ready`, `spool_in_flight`, `spool_delayed`, `spool_dead_letters` | gauge | [`Stats`](crate::Stats) |
//! | `spool_oldest_ready_age_seconds` | gauge | [`Stats`](crate::Stats) (0 when nothing is ready) |
//! | `spool_wal_bytes_written_total`, `spool_wal_syncs_total` | counter | the write-ahead file's writer thread |
//! | `spool_wal_sync_seconds` | histogram | the same |
//!
//! The counts and counters come from the queue's own exact counters, so
//! the operations pay nothing more for them: one reporter thread per
//! process (`spool-metrics`) publishes every open queue's
//! [`stats`](crate::Queue::stats) every [`REPORT_EVERY`], and
//! [`Queue::record_metrics`](crate::Queue::record_metrics) publishes one
//! queue's at once. Counters start from zero at each open, as
//! [`Stats`](crate::Stats) does; Prometheus reads that as a restart. Two
//! queues with the same name report as one series: name them apart.
//!
//! The write-ahead file's metrics are recorded by its writer thread as
//! it writes and syncs, off the callers' path.

use crate::shared::Shared;
use metrics::{Counter, Histogram};
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the reporter publishes every queue's statistics.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// A queue the reporter can publish.
pub(crate) trait Report: Send + Sync {
    fn report(&self);
}

impl<T: Send + Sync + 'static> Report for Shared<T> {
    fn report(&self) {
        publish(&self.name(), &self.stats());
    }
}

/// A Redis queue publishes the server's counts, the same in every
/// process that has it open (a failed call publishes nothing).
#[cfg(feature = "redis")]
impl Report for crate::redis::Core {
    fn report(&self) {
        if let Ok(stats) = self.stats() {
            publish(self.name(), &stats);
        }
    }
}

/// Publishes one queue's statistics.
fn publish(queue: &str, stats: &crate::Stats) {
    {
        let label = [("queue", queue.to_string())];
        let counters = [
            ("spool_sent_total", stats.sent),
            ("spool_acked_total", stats.acked),
            ("spool_released_total", stats.nacked),
            ("spool_expired_total", stats.expired),
            ("spool_dead_lettered_total", stats.dead_lettered),
            ("spool_redriven_total", stats.redriven),
        ];
        for (name, value) in counters {
            metrics::counter!(name, &label).absolute(value);
        }
        let gauges = [
            ("spool_ready", stats.ready as f64),
            ("spool_in_flight", stats.in_flight as f64),
            ("spool_delayed", stats.delayed as f64),
            ("spool_dead_letters", stats.dead_letters as f64),
            (
                "spool_oldest_ready_age_seconds",
                stats.oldest_ready_age.map_or(0.0, |age| age.as_secs_f64()),
            ),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name, &label).set(value);
        }
    }
}

/// The queues the reporter publishes; dropped queues fall out.
fn queues() -> &'static Mutex<Vec<Weak<dyn Report>>> {
    static QUEUES: OnceLock<Mutex<Vec<Weak<dyn Report>>>> = OnceLock::new();
    QUEUES.get_or_init(|| {
        // Started once per process; if the thread cannot be started, the
        // queues still publish through `Queue::record_metrics`.
        let _ = std::thread::Builder::new()
            .name("spool-metrics".into())
            .spawn(|| loop {
                std::thread::sleep(REPORT_EVERY);
                let alive: Vec<Arc<dyn Report>> = {
                    let mut list = queues().lock();
                    list.retain(|q| q.strong_count() > 0);
                    list.iter().filter_map(Weak::upgrade).collect()
                };
                for queue in alive {
                    queue.report();
                }
            });
        Mutex::new(Vec::new())
    })
}

/// Adds a newly opened queue to the reporter's list.
pub(crate) fn register<T: Send + Sync + 'static>(queue: &Arc<Shared<T>>) {
    let weak: Weak<Shared<T>> = Arc::downgrade(queue);
    queues().lock().push(weak);
}

/// Adds a newly opened Redis queue to the reporter's list.
#[cfg(feature = "redis")]
pub(crate) fn register_remote(queue: &Arc<crate::redis::Core>) {
    let weak: Weak<crate::redis::Core> = Arc::downgrade(queue);
    queues().lock().push(weak);
}

/// The write-ahead file's metrics, registered once when it opens.
#[derive(Debug, Clone)]
pub(crate) struct WalMetrics {
    bytes: Counter,
    syncs: Counter,
    sync_seconds: Histogram,
}

impl Default for WalMetrics {
    fn default() -> Self {
        WalMetrics::new(crate::builder::UNNAMED)
    }
}

impl WalMetrics {
    pub(crate) fn new(queue: &str) -> Self {
        let label = [("queue", queue.to_string())];
        WalMetrics {
            bytes: metrics::counter!("spool_wal_bytes_written_total", &label),
            syncs: metrics::counter!("spool_wal_syncs_total", &label),
            sync_seconds: metrics::histogram!("spool_wal_sync_seconds", &label),
        }
    }

    /// When a sync starts.
    pub(crate) fn sync_started(&self) -> Instant {
        Instant::now()
    }

    pub(crate) fn synced(&self, started: Instant) {
        self.syncs.increment(1);
        self.sync_seconds.record(started.elapsed().as_secs_f64());
    }

    pub(crate) fn written(&self, bytes: usize) {
        self.bytes.increment(bytes as u64);
    }
}

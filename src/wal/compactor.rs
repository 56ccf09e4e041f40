//! The compactor thread: compaction beside the writer, never in its way
//! (FORMAT.md, section 8).
//!
//! The writer seals a segment and tells the [`Compactor`] how far the
//! sealed files go ([`Compactor::sealed`]); the compactor thread rewrites
//! the sealed files as base files while the writer goes on appending to
//! the active segment. The two never touch the same file: compaction reads
//! and replaces files up to the newest sealed one only.
//!
//! When it runs, automatically ([`Plan::due`]): once the sealed files
//! after the base reach the size of the base, or [`COMPACT_FLOOR`] if that
//! is more (so the log replayed on reopen stays within about twice the
//! live data plus a few floors, whatever the segment size: see
//! [`Compactor::rotate_at`]), and they would let it reclaim at least a
//! quarter of the log ([`Reclaim`]: a queue that only fills is not
//! rewritten again and again for nothing); right after open when files
//! piled up or a region was salvaged; and when
//! [`Wal::compact`](super::Wal::compact) asks. A failed automatic compaction (a full disk, say) changes nothing
//! on disk and is tried again once another segment is sealed; open never
//! waits for one.
//!
//! Backpressure: a writer that seals faster than the compactor keeps up
//! waits at a rotation while the sealed files exceed [`MAX_BEHIND`]
//! thresholds and a compaction is running or due, so disk use stays
//! bounded.
//!
//! # What a compaction still costs the writer
//!
//! No write waits for a compaction, but both share the disk and, on a
//! small machine, the cores. Traced on this project's 2-core VM (ext4,
//! `data=ordered`, `discard`), with the writer's own `fdatasync`s, its
//! wake-ups (`/proc/thread-self/schedstat`) and each step of the compactor
//! timed during `benches/compaction.rs`:
//!
//! - Freeing a replaced file's blocks in one call (the `rename` of a base
//!   file over the segment it replaces, the `remove` of the others) took
//!   8-20 ms with ext4's journal held, and the writer's `fdatasync`, which
//!   commits that journal, waited as long: the 8-14 ms worst sends. The
//!   storage now frees them a MiB at a time (`storage::Unlinked`); the
//!   writer's syncs beside those steps took at most 1.3-3.7 ms in calm
//!   runs. Cause of the old tail's top; fixed.
//! - Base files are synced every `WRITE_CHUNK` (1 MiB,
//!   `compaction.rs`), and a writer's `fdatasync` that meets one of
//!   those syncs waits for it; unpaced, at 170-270 MB/s, 36 of the
//!   writer's 42 syncs slower than 1.5 ms met one in a traced run.
//!   Neither smaller chunks nor skipping their journal commits helped:
//!   the disk is what the two share. A compaction now paces its writes
//!   (`pace`, 48 MiB/s by default past its first 4 MiB) unless the
//!   writer waits for it ([`Compactor::sealed`]).
//! - A contended parking_lot lock yields its core before it sleeps, and a
//!   yield hands the core to the runnable compactor until the next tick
//!   (4 ms): the writer's and the callers' lock of the state no longer
//!   yields (`Shared::lock` in `writer.rs`).
//! - While the compactor runs, it holds one of the two cores (at the
//!   lowest priority, see `background`), so a writer woken when its sync
//!   completes finds no idle core more often, and may wait behind another
//!   process or for a halted virtual core.
//!
//! Figures (`benches/compaction.rs`, every 10,000th message cancelled
//! so that a compaction rewrites about 97 MB, 6 rounds pooled, 3 to 8
//! runs each, alternated where they are compared): `Sync` send p99.9
//! during a compaction 3.4-4.5 ms (1.0-1.1 ms without: ratio 3.4-6.6)
//! before both changes, 2.0-3.2 ms (ratio 2.2-3.2) with the lock that
//! does not yield, 1.6-3.3 ms (ratio 1.6-3.0) paced as well, and
//! 1.6-2.9 ms (ratio 1.6-2.7, median 1.8, within 2 in 5 of 8 runs) once
//! the writer also woke a round's callers after letting go of the lock
//! (24 or 32 MiB/s did no better); a compaction then takes about 2.0 s
//! instead of 0.5 s, and about the same CPU (0.36-0.79 s). What is
//! left: a round alone still reaches 3.5 (its p99.9 is its third or
//! fourth worst send); the writer's syncs slower than 1 ms are 1-2
//! times as many as without a compaction, and those over 0.5 ms 2-5
//! times (three traced runs), whatever the rate; and now and then a
//! woken producer waits a millisecond or more for a core.

use super::compaction::{compact, CompactionReport, Steps};
use super::error::WalError;
use super::options::WalOptions;
use super::pace::Pace;
use super::record::Record;
use super::storage::{ReadFile, Storage, WrappedReads};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The least log after the base that makes an automatic compaction due,
/// and the size at which the active segment is sealed while the base is
/// smaller than it (capped by the segment size). Reopening replays about
/// 120 MB/s on this project's test machine, so a mostly acknowledged log
/// (base, up to one floor sealed, one floor active) replays in well under
/// 100 ms.
pub(crate) const COMPACT_FLOOR: u64 = 4 << 20;

/// Sealed files that make an open compact them (FORMAT.md, section 8).
pub(crate) const COMPACT_AT_OPEN_FILES: usize = 8;

/// Sealed files after the base of this many thresholds are compacted
/// whatever the estimate says, so that an estimate fooled by a workload
/// (acked messages far larger than the live ones) cannot let the disk
/// grow without bound.
const MUST_COMPACT_AT: u64 = 4;

/// The writer waits at a rotation while the sealed files after the base
/// exceed this many thresholds and a compaction is running or due: disk use
/// stays below about 3 x live data + 4 thresholds, or 6 while the reclaim
/// estimate holds compaction off (FORMAT.md, section 8).
const MAX_BEHIND: u64 = 2;

/// Where the answer to an explicit compaction goes.
pub(crate) type CompactionReply = Sender<Result<CompactionReport, WalError>>;

/// What the compactor knows of the files, under its lock.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The newest sealed file (0: none yet).
    sealed_through: u64,
    /// Size of what the last compaction left (base files and files kept).
    base_bytes: u64,
    /// Size of the sealed files after the base.
    sealed_bytes: u64,
    /// Bytes of records appended lately, and what compacting them would
    /// reclaim: both halve once they cover four thresholds of log, so
    /// their ratio follows the recent mix of records.
    recent_bytes: u64,
    recent_reclaim: u64,
    /// A purge was appended since the last compaction started.
    purged: bool,
    /// Enqueue records appended since open, and their bytes: the average
    /// size of what an ack frees.
    enqueues: u64,
    enqueued_bytes: u64,
    /// Explicit compactions waiting; each was asked after its caller's
    /// records were sealed.
    requests: Vec<CompactionReply>,
    /// Compact at the next chance whatever the sizes (after open).
    forced: bool,
    /// No automatic compaction until [`Compactor::start`]: the queue
    /// restores its state first, without a compaction beside it.
    held: bool,
    /// An automatic compaction through this file failed: not retried
    /// until a newer file is sealed.
    failed_through: u64,
    /// Automatic compactions that failed in a row, and the sealed size
    /// they wait for before the next try (a threshold more for each
    /// failure, doubling, so a failure that repeats costs less and less).
    failures: u32,
    retry_at: u64,
    running: bool,
    /// The writer waits for the running compaction (at a rotation, see
    /// [`Compactor::sealed`]): it must not pace itself.
    writer_waits: bool,
    stop: bool,
    /// Compactions finished, with or without success.
    finished: u64,
}

impl Plan {
    /// The sealed size after the base that makes a compaction due.
    fn threshold(&self, options: &WalOptions) -> u64 {
        self.base_bytes.max(floor(options))
    }

    /// Whether a compaction should start now.
    fn due(&self, options: &WalOptions) -> bool {
        if !self.requests.is_empty() {
            return true;
        }
        let threshold = self.threshold(options);
        !self.held
            && options.auto_compact
            && self.sealed_through > self.failed_through
            && self.sealed_bytes >= self.retry_at
            && (self.forced
                || (self.sealed_bytes >= threshold
                    && (self.worth_it()
                        || self.sealed_bytes >= MUST_COMPACT_AT.saturating_mul(threshold))))
    }

    /// Whether compacting would reclaim at least a quarter of the log
    /// (base and sealed files), as far as the recent records tell: the
    /// sealed files times the share of recent bytes that is reclaimable.
    fn worth_it(&self) -> bool {
        if self.purged {
            return true; // how much a purge frees is not known
        }
        let share = self.recent_reclaim as f64 / self.recent_bytes.max(1) as f64;
        let estimate = self.sealed_bytes as f64 * share.min(1.0);
        estimate * 4.0 >= (self.base_bytes + self.sealed_bytes) as f64
    }
}

/// What records appended to the log will let a compaction reclaim,
/// counted as they are appended (under the writer's lock, no atomics).
///
/// Compaction folds every record but an enqueue into the state of the
/// message it is about (a receive count, an error text) or drops it, and
/// an ack frees its message's enqueue record (of the average size). A
/// purge frees dead letters of unknown size: it makes the next
/// compaction worth it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reclaim {
    /// Bytes of records other than enqueues.
    folded: u64,
    acks: u64,
    enqueues: u64,
    enqueued_bytes: u64,
    purged: bool,
}

impl Reclaim {
    /// Adds what `other` counted.
    pub(crate) fn merge(&mut self, other: Reclaim) {
        self.folded += other.folded;
        self.acks += other.acks;
        self.enqueues += other.enqueues;
        self.enqueued_bytes += other.enqueued_bytes;
        self.purged |= other.purged;
    }

    /// Counts one appended record of `len` bytes.
    pub(crate) fn note(&mut self, record: &Record<'_>, len: u64) {
        match record {
            Record::Enqueue { .. } => {
                self.enqueues += 1;
                self.enqueued_bytes += len;
            }
            Record::Ack { .. } => {
                self.acks += 1;
                self.folded += len;
            }
            Record::PurgeDeadLetters => {
                self.purged = true;
                self.folded += len;
            }
            _ => self.folded += len,
        }
    }
}

/// The least log after the base worth compacting.
fn floor(options: &WalOptions) -> u64 {
    options.segment_size.clamp(1, COMPACT_FLOOR)
}

/// Shared by the writer, the [`Wal`](super::Wal) handle and the compactor
/// thread.
#[derive(Debug)]
pub(crate) struct Compactor {
    options: WalOptions,
    plan: Mutex<Plan>,
    /// Wakes the compactor thread.
    work: Condvar,
    /// Wakes a writer waiting for the compactor to catch up, and tests.
    progress: Condvar,
    /// Wakes a compaction waiting out its pace: the writer waits for it,
    /// or the log closes.
    hurry: Condvar,
    /// The size at which the writer seals the active segment.
    rotate_at: AtomicU64,
    /// Set when the log closes: a running compaction gives up (its reads
    /// fail, see [`CancellableRead`]).
    cancel: Arc<AtomicBool>,
}

impl Compactor {
    /// The state after open: the recovered files are all sealed, up to
    /// `sealed_through`.
    pub(crate) fn new(
        options: WalOptions,
        sealed_through: u64,
        base_bytes: u64,
        sealed_bytes: u64,
        forced: bool,
    ) -> Self {
        let plan = Plan {
            sealed_through,
            base_bytes,
            sealed_bytes,
            // What recovered files would reclaim is not known: assume it
            // is worth it, as it was before this estimate existed.
            recent_bytes: 0,
            recent_reclaim: 0,
            purged: true,
            enqueues: 0,
            enqueued_bytes: 0,
            requests: Vec::new(),
            forced,
            held: true,
            failed_through: 0,
            failures: 0,
            retry_at: 0,
            running: false,
            writer_waits: false,
            stop: false,
            finished: 0,
        };
        let compactor = Compactor {
            rotate_at: AtomicU64::new(options.segment_size),
            options,
            plan: Mutex::new(plan),
            work: Condvar::new(),
            progress: Condvar::new(),
            hurry: Condvar::new(),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        compactor.set_rotate_at(&compactor.plan.lock());
        compactor
    }

    /// Lets automatic compactions run (they are held from open until the
    /// queue has restored its state).
    pub(crate) fn start(&self) {
        let mut plan = self.plan.lock();
        plan.held = false;
        if plan.due(&self.options) {
            self.work.notify_one();
        }
    }

    /// The active segment is sealed once it reaches this size: the
    /// threshold while the base is smaller than a segment, so that a
    /// mostly acknowledged log is compacted in steps of the floor rather
    /// than of whole segments.
    pub(crate) fn rotate_at(&self) -> u64 {
        self.rotate_at.load(Ordering::Relaxed)
    }

    fn set_rotate_at(&self, plan: &Plan) {
        let options = &self.options;
        // Segments grow with the sealed files when compactions are not
        // worth it (a queue that only fills), so files stay few.
        let at = match options.auto_compact {
            true => options
                .segment_size
                .min(plan.threshold(options).max(plan.sealed_bytes)),
            false => options.segment_size,
        };
        self.rotate_at.store(at.max(1), Ordering::Relaxed);
    }

    /// Counts what the records written since the last seal would let a
    /// compaction reclaim (where rounds end does not matter: the estimate
    /// is a share of recent bytes).
    fn count(&self, plan: &mut Plan, reclaim: Reclaim) {
        plan.enqueues += reclaim.enqueues;
        plan.enqueued_bytes += reclaim.enqueued_bytes;
        let freed_per_ack = plan.enqueued_bytes.checked_div(plan.enqueues).unwrap_or(0);
        plan.recent_bytes += reclaim.folded + reclaim.enqueued_bytes;
        plan.recent_reclaim += reclaim.folded + reclaim.acks.saturating_mul(freed_per_ack);
        plan.purged |= reclaim.purged;
        // Forget the older half once they cover more than a few
        // thresholds of log.
        let window = plan.threshold(&self.options).saturating_mul(4);
        if plan.recent_bytes > window {
            plan.recent_bytes /= 2;
            plan.recent_reclaim /= 2;
        }
    }

    /// The writer sealed file `seq` of `bytes`, having written records
    /// that would let a compaction reclaim `reclaim` since the last seal.
    /// Waits while the compactor is far behind (see the module docs).
    pub(crate) fn sealed(&self, seq: u64, bytes: u64, reclaim: Reclaim) {
        let options = &self.options;
        let mut plan = self.plan.lock();
        self.count(&mut plan, reclaim);
        plan.sealed_through = seq;
        plan.sealed_bytes += bytes;
        self.set_rotate_at(&plan);
        if plan.due(options) {
            self.work.notify_one();
        }
        while (plan.running || plan.due(options))
            && plan.failures == 0
            && !plan.stop
            && plan.sealed_bytes > MAX_BEHIND.saturating_mul(plan.threshold(options))
        {
            plan.writer_waits = true;
            self.hurry.notify_all();
            self.progress.wait(&mut plan);
        }
        plan.writer_waits = false;
    }

    /// Asks for a compaction of everything sealed so far; the answer goes
    /// to `reply`.
    pub(crate) fn request(&self, reply: CompactionReply) {
        let mut plan = self.plan.lock();
        if plan.stop {
            let _ = reply.send(Err(WalError::Closed));
            return;
        }
        plan.requests.push(reply);
        self.work.notify_one();
    }

    /// Stops the thread: a running compaction gives up (leaving the files
    /// as they were), waiting requests get `Closed`.
    pub(crate) fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let mut plan = self.plan.lock();
        plan.stop = true;
        for reply in plan.requests.drain(..) {
            let _ = reply.send(Err(WalError::Closed));
        }
        self.work.notify_one();
        self.progress.notify_all();
        self.hurry.notify_all();
    }

    /// Whether the log is closing (checked by a running compaction).
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The compactor thread's loop; returns once stopped. Runs at the
    /// lowest CPU priority, so that on a machine with few cores the writer
    /// and the callers it wakes are not kept waiting for a core.
    pub(crate) fn run(&self, storage: &dyn Storage) {
        background::lower_this_threads_priority();
        let _stopped = Stopped(self);
        let options = &self.options;
        let mut plan = self.plan.lock();
        loop {
            while !plan.stop && !plan.due(options) {
                self.work.wait(&mut plan);
            }
            if plan.stop {
                return;
            }
            let through = plan.sealed_through;
            let sealed_bytes = plan.sealed_bytes;
            let purged = std::mem::take(&mut plan.purged);
            // One explicit request per run: each caller gets its own
            // outcome (a second one meets a compacted log and is quick).
            let request = match plan.requests.is_empty() {
                true => None,
                false => Some(plan.requests.remove(0)),
            };
            plan.forced = false;
            plan.running = true;
            drop(plan);

            let reads = WrappedReads::new(storage, |_: &str, inner| {
                let cancel = Arc::clone(&self.cancel);
                Box::new(CancellableRead { inner, cancel }) as Box<dyn ReadFile>
            });
            let steps = Paced {
                compactor: self,
                pace: RefCell::new(Pace::new(options.compaction_rate, Instant::now())),
            };
            let outcome = compact(&reads, through, options, &steps).map_err(|e| {
                if self.cancelled() {
                    WalError::Closed
                } else {
                    e
                }
            });

            plan = self.plan.lock();
            plan.running = false;
            plan.finished += 1;
            match &outcome {
                Ok(report) => {
                    plan.base_bytes = report.bytes_out;
                    plan.sealed_bytes -= sealed_bytes;
                    plan.failed_through = 0;
                    plan.failures = 0;
                    plan.retry_at = 0;
                }
                Err(_) => {
                    plan.failed_through = through;
                    plan.purged |= purged;
                    plan.failures = plan.failures.saturating_add(1);
                    let wait = plan.threshold(options) << plan.failures.min(8);
                    plan.retry_at = plan.sealed_bytes.saturating_add(wait);
                }
            }
            self.set_rotate_at(&plan);
            if let Some(reply) = request {
                let _ = reply.send(outcome);
            }
            self.progress.notify_all();
        }
    }

    /// Tests: waits until no compaction is running or due.
    #[cfg(test)]
    pub(crate) fn quiesce(&self) {
        let mut plan = self.plan.lock();
        while !plan.stop && (plan.running || plan.due(&self.options)) {
            self.progress.wait(&mut plan);
        }
    }

    /// Tests: compactions finished so far.
    #[cfg(test)]
    pub(crate) fn finished(&self) -> u64 {
        self.plan.lock().finished
    }
}

/// The compactor thread's compactions: they give up when the log closes,
/// and pace their writes (see `pace`) while the writer does not wait for
/// them.
struct Paced<'a> {
    compactor: &'a Compactor,
    pace: RefCell<Pace>,
}

impl Steps for Paced<'_> {
    fn cancelled(&self) -> bool {
        self.compactor.cancelled()
    }

    fn wrote(&self, bytes: u64) {
        let now = Instant::now();
        let wait = self.pace.borrow_mut().wrote(bytes, now);
        if wait.is_zero() {
            return;
        }
        // A wait too long to add to an `Instant` lasts until a hurry.
        let until = now.checked_add(wait);
        let compactor = self.compactor;
        let mut plan = compactor.plan.lock();
        while !plan.writer_waits && !plan.stop {
            match until {
                Some(until) => {
                    if compactor.hurry.wait_until(&mut plan, until).timed_out() {
                        return;
                    }
                }
                None => compactor.hurry.wait(&mut plan),
            }
        }
    }
}

/// Marks the compactor stopped however its thread ends: after a panic
/// nobody may wait for it (the writer at a rotation, a caller of
/// `Wal::compact`), and later requests are answered `Closed`.
struct Stopped<'a>(&'a Compactor);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let mut plan = self.0.plan.lock();
        plan.running = false;
        plan.stop = true;
        for reply in plan.requests.drain(..) {
            let _ = reply.send(Err(WalError::Closed));
        }
        self.0.progress.notify_all();
    }
}

/// The compactor thread's priority.
///
/// `benches/compaction.rs` on this project's 2-core machine: with the
/// compactor at the lowest priority, `Sync` sends during a compaction of
/// 1,000,000 live messages had a p99 of 1.2-1.4 ms and a p99.9 of
/// 6.2-9.3 ms, against 4.5-7.8 ms and 11-20 ms at normal priority (the
/// compactor, the writer and the producer share two cores). That measured
/// need is why this module holds `unsafe` code: one call into the C
/// library, on Linux only.
mod background {
    /// Lowers the calling thread's CPU priority to the least (nice 19).
    /// Best effort: a failure changes nothing else.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[allow(unsafe_code)]
    pub(super) fn lower_this_threads_priority() {
        // SAFETY: `setpriority` takes plain integers and touches no memory
        // of ours; on Linux, `PRIO_PROCESS` with id 0 names the calling
        // thread (each thread is a task with its own nice value), so it
        // changes nothing but this thread's scheduling priority.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    }

    /// Elsewhere the compactor runs at the normal priority.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn lower_this_threads_priority() {}
}

/// A file read by a compaction: reads fail once the log closes, so that a
/// compaction replaying a large log gives up at once rather than holding
/// the directory (and its lock) until it is done.
struct CancellableRead {
    inner: Box<dyn ReadFile>,
    cancel: Arc<AtomicBool>,
}

impl io::Read for CancellableRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the write-ahead file is closing"));
        }
        self.inner.read(buf)
    }
}

impl io::Seek for CancellableRead {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::pace::MIN_COMPACTION_RATE;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Far longer than any test: a pace left waiting fails the test
    /// instead of hanging it.
    const BOUND: Duration = Duration::from_secs(30);

    /// A compactor whose compaction is running, paced at the least rate,
    /// and a thread in that compaction's pace, told to wait for about
    /// 1,000 s; returns the compactor and what the thread sends once it is
    /// done waiting.
    fn pacing() -> (Arc<Compactor>, mpsc::Receiver<()>) {
        let mut options = WalOptions::new(0);
        options.segment_size = 4096;
        options.compaction_rate = MIN_COMPACTION_RATE;
        let compactor = Arc::new(Compactor::new(options, 0, 0, 0, false));
        compactor.plan.lock().running = true;
        let (done, waited) = mpsc::channel();
        let paced = Arc::clone(&compactor);
        std::thread::spawn(move || {
            let steps = Paced {
                compactor: &paced,
                pace: RefCell::new(Pace::new(MIN_COMPACTION_RATE, Instant::now())),
            };
            steps.wrote(1 << 30);
            let _ = done.send(());
        });
        // It waits (a broken pace would return at once).
        assert!(waited.recv_timeout(Duration::from_millis(50)).is_err());
        (compactor, waited)
    }

    #[test]
    fn a_paced_compaction_hurries_once_the_writer_waits_for_it() {
        let (compactor, waited) = pacing();
        // The writer seals far more than the compactor may fall behind
        // while a compaction runs: it waits, and the compaction stops
        // pacing itself.
        let writer = Arc::clone(&compactor);
        let sealing = std::thread::spawn(move || writer.sealed(1, 1 << 20, Reclaim::default()));
        assert_eq!(waited.recv_timeout(BOUND), Ok(()));
        // The compaction ends; the writer goes on.
        let mut plan = compactor.plan.lock();
        plan.running = false;
        plan.sealed_bytes = 0;
        compactor.progress.notify_all();
        drop(plan);
        sealing.join().unwrap();
        assert!(!compactor.plan.lock().writer_waits);
    }

    #[test]
    fn a_paced_compaction_stops_waiting_when_the_log_closes() {
        let (compactor, waited) = pacing();
        compactor.stop();
        assert_eq!(waited.recv_timeout(BOUND), Ok(()));
    }
}

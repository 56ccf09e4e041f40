//! The state every handle of one queue shares, and every state change.
//!
//! A message is in exactly one place: the ready queue, the delay queue, the
//! lease table, or the dead-letter store (or it is gone, acknowledged).
//! Each operation moves an [`Entry`] from one place to another, so a
//! message can be neither lost nor duplicated by the bookkeeping itself.
//!
//! Nothing here takes a lock that all operations share. Send takes a
//! capacity slot (an atomic that only producers write) and pushes onto the
//! lock-free ready queue; receive pops (under a lock that only consumers
//! take, see `ready.rs`) and inserts into its consumer handle's lease
//! shard; ack removes from that shard and gives the slot
//! back (an atomic that only consumers write). Delays and retries go
//! through the delay queue's own lock; dead letters through the store's.
//! Every atomic write on this path is one that costs: the hot path was
//! trimmed to the ones the semantics need (see the README's performance
//! section).
//!
//! Deadlines (lease expiry, delays and backoffs coming due) are handled by
//! [`Shared::tick`], which every operation calls first, so that whatever
//! came due is queued before anything the operation adds. It costs one
//! clock read and one atomic load unless something is due, and then pops
//! only what is due. Receive and ack read the clock's coarse reading (a
//! few loads), the precise one when a deadline is near. Blocked consumers
//! sleep no later than the next deadline, so a lease expires on time even
//! if nobody calls in.
//!
//! A persistent queue also appends a record of each change to its
//! [`Journal`] before the change becomes visible to another thread (see
//! `persist.rs` for which operations wait for their record).
//!
//! | file | operations |
//! |---|---|
//! | `send` | send, send_batch, delays |
//! | `receive` | receive, tick (deadlines) |
//! | `settle` | ack, release, extend, reject, retries, dead-lettering |
//! | `dead_letters` | redrive, purge, remove |
//! | `cancel` | cancelling a ready or delayed message |
//! | `expire` | times to live running out |
//! | `flow` | pause, resume, the in-flight cap and the rate limit |
//! | `peek` | reading ready messages without leasing them |
//! | `order` | priorities and message groups (rules in `order.rs`) |
//! | `restore` | rebuilding the state a journal recovered |
//! | `task` | the task forms of the operations that wait (async) |

mod cancel;
mod dead_letters;
mod expire;
mod flow;
mod order;
mod peek;
mod receive;
mod restore;
mod send;
mod settle;
mod task;

pub use peek::Peeked;
pub(crate) use settle::Logged;
pub(crate) use task::{ForWorker, Many, One, Receiving, Take};

use crate::alarm::Alarm;
use crate::backoff::Random;
use crate::builder::Config;
use crate::capacity::Capacity;
use crate::clock::{self, Clock, ClockListener, Nanos};
use crate::controls::Controls;
use crate::dead_letter::{DeadLetterReason, DeadLetterStore};
use crate::dedup::Dedup;
use crate::error::{SendError, StorageError};
use crate::event::Event;
use crate::expiry::ExpiryQueue;
use crate::lease::LeaseTable;
use crate::message::Held;
use crate::order::Order;
use crate::padded::Padded;
use crate::persist::Journal;
use crate::ready::ReadyQueue;
use crate::stats::{Counters, Stats};
use crate::timer::DelayQueue;
use crate::wal::{Record, RecoveryReport, Ticket};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long an operation may block.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all.
    No,
    /// Until it can go ahead.
    Forever,
    /// Until this instant.
    Until(Instant),
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }
}

/// Where a message goes after a failed attempt.
enum Next<T> {
    Dead(Held<T>, DeadLetterReason),
    VisibleAt(Nanos, Held<T>),
}

/// Whether taking capacity had to wait (and the clock must be read again).
enum Waited {
    No,
    Yes,
}

/// Why a capacity slot was not taken.
enum NoRoom {
    Full,
    Timeout,
    Closed,
}

impl NoRoom {
    fn refuse<T>(self, message: T) -> SendError<T> {
        match self {
            NoRoom::Full => SendError::Full(message),
            NoRoom::Timeout => SendError::Timeout(message),
            NoRoom::Closed => SendError::Closed(message),
        }
    }
}

/// Message ids, handed out to sends only, so that they also count sends:
/// one atomic add per send where a separate counter would be a second.
struct Ids {
    next: AtomicU64,
    /// The first id this process handed out (after what a journal held).
    first: AtomicU64,
    /// Ids handed out to sends that then failed or were duplicates.
    unsent: AtomicU64,
}

impl Ids {
    /// Takes `n` consecutive ids; returns the first.
    fn take(&self, n: u64) -> u64 {
        self.next.fetch_add(n, Relaxed)
    }

    /// Sends by this process: counted from when a send takes its id, until
    /// it fails or turns out a duplicate (then taken off again).
    fn sent(&self) -> u64 {
        let unsent = self.unsent.load(SeqCst);
        let next = self.next.load(SeqCst);
        next.saturating_sub(self.first.load(SeqCst))
            .saturating_sub(unsent)
    }
}

pub(crate) struct Shared<T> {
    pub(crate) config: Config,
    clock: Arc<dyn Clock>,
    /// How far the clock's coarse reading may lag: added to every lease
    /// deadline set from one, so that leases do not run out early.
    coarse_lag: Nanos,
    ready: ReadyQueue<T>,
    /// Ready messages with a priority or a group, and every group's
    /// members (`order.rs`).
    order: Order<T>,
    capacity: Capacity,
    leases: LeaseTable<T>,
    delayed: DelayQueue<T>,
    /// When messages sent with a time to live expire.
    expiry: ExpiryQueue,
    /// Pause, the in-flight cap and the rate limit (`flow.rs`).
    controls: Controls,
    dedup: Dedup,
    dead: DeadLetterStore<T>,
    counters: Counters,
    random: Random,
    /// Bumped by producers.
    ids: Padded<Ids>,
    closed: AtomicBool,
    /// `Queue` and `Producer` handles alive: when none is left, nothing new
    /// can be sent and the queue counts as closed.
    senders: AtomicUsize,
    /// No lease expires and no delayed message comes due before this.
    next_deadline: AtomicU64,
    ticking: Mutex<()>,
    journal: Option<Journal>,
    recovery: Option<RecoveryReport>,
    /// Whether the event hook was told that the journal failed.
    poison_reported: AtomicBool,
    /// Wakes the waiting tasks at `next_deadline`, as a sleeping thread
    /// wakes itself then: one alarm for the queue, not one per task.
    deadline_alarm: Mutex<Alarm>,
    /// The `next_deadline` the alarm is set for (`Nanos::MAX`: none).
    armed_for: AtomicU64,
    /// What the alarm wakes: this queue's waiting tasks.
    deadline_waker: std::sync::OnceLock<Waker>,
}

/// The waker of a queue's deadline alarm.
struct DeadlineWake(std::sync::Weak<dyn DeadlineListener>);

/// A queue told that its deadline alarm rang.
trait DeadlineListener: Send + Sync {
    fn deadline_rang(&self);
}

impl std::task::Wake for DeadlineWake {
    fn wake(self: Arc<Self>) {
        if let Some(queue) = self.0.upgrade() {
            queue.deadline_rang();
        }
    }
}

impl<T: Send + Sync> DeadlineListener for Shared<T> {
    fn deadline_rang(&self) {
        self.armed_for.store(Nanos::MAX, SeqCst);
        self.ready.signal.notify_all();
    }
}

impl<T: Send + Sync + 'static> Shared<T> {
    pub(crate) fn new(
        config: Config,
        clock: Arc<dyn Clock>,
        seed: u64,
        persisted: Option<(Journal, RecoveryReport)>,
    ) -> Arc<Self> {
        let (journal, recovery) = persisted.unzip();
        let shared = Arc::new(Shared {
            ready: ReadyQueue::new(config.capacity, config.idle_spin),
            order: Order::default(),
            capacity: Capacity::new(config.capacity),
            leases: LeaseTable::new(),
            delayed: DelayQueue::new(),
            expiry: ExpiryQueue::default(),
            controls: Controls::default(),
            dedup: Dedup::with_keys_only(
                clock::duration_nanos(config.dedup_window),
                config.dedup_key_only,
            ),
            dead: DeadLetterStore::default(),
            counters: Counters::default(),
            random: Random::new(seed),
            ids: Padded(Ids {
                next: AtomicU64::new(1),
                first: AtomicU64::new(1),
                unsent: AtomicU64::new(0),
            }),
            closed: AtomicBool::new(false),
            senders: AtomicUsize::new(0),
            next_deadline: AtomicU64::new(Nanos::MAX),
            ticking: Mutex::new(()),
            journal,
            recovery,
            poison_reported: AtomicBool::new(false),
            deadline_alarm: Mutex::new(Alarm::default()),
            armed_for: AtomicU64::new(Nanos::MAX),
            deadline_waker: std::sync::OnceLock::new(),
            config,
            coarse_lag: clock::duration_nanos(clock.coarse_lag()),
            clock,
        });
        shared
            .controls
            .set_max_in_flight(shared.config.max_in_flight);
        let now = shared.now();
        shared
            .controls
            .set_rate_limit(shared.config.rate_limit, now);
        let deadlines: Arc<dyn DeadlineListener> = shared.clone();
        let wake = Arc::new(DeadlineWake(Arc::downgrade(&deadlines)));
        let _ = shared.deadline_waker.set(Waker::from(wake));
        let listener: Arc<dyn ClockListener> = shared.clone();
        shared
            .clock
            .register_waker(clock::ClockWaker(Arc::downgrade(&listener)));
        shared
    }
}

impl<T: Send + Sync> ClockListener for Shared<T> {
    fn clock_jumped(&self) {
        self.ready.signal.notify_all();
    }
}

impl<T> Shared<T> {
    pub(crate) fn now(&self) -> Nanos {
        self.clock.now_nanos()
    }

    /// The queue's clock (for a schedule, which waits on it).
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The time, up to `coarse_lag` behind: for receive, acknowledge and
    /// plain in-memory sends, the hot paths where a millisecond does not
    /// matter (see [`Clock::now_coarse_nanos`]).
    fn now_coarse(&self) -> Nanos {
        self.clock.now_coarse_nanos()
    }

    /// The coarse reading, or the precise one near the next deadline: a
    /// coarse reading would not see the deadline come due for up to a
    /// tick (a consumer woken for it would spin until then, and the
    /// message would be late). For receive and plain in-memory sends.
    fn now_for_tick(&self) -> Nanos {
        let now = self.now_coarse();
        if now.saturating_add(self.coarse_lag) >= self.next_deadline.load(SeqCst) {
            return self.now();
        }
        now
    }

    /// Makes sure the waiting tasks are woken at the next deadline (as a
    /// sleeping thread wakes itself): sets the queue's alarm if it is not
    /// set for that deadline or an earlier one. One atomic load when it is.
    fn arm_deadline(&self) {
        let next = self.next_deadline.load(SeqCst);
        if next == Nanos::MAX || self.armed_for.load(SeqCst) <= next {
            return;
        }
        // The instant of the deadline read above, the one `armed_for` will
        // say (not a later one a tick may have set meanwhile).
        let (Some(at), Some(waker)) = (self.instant_of(next), self.deadline_waker.get()) else {
            return;
        };
        let mut alarm = self.deadline_alarm.lock();
        if self.armed_for.load(SeqCst) > next {
            alarm.set(Some(at), waker);
            self.armed_for.store(next, SeqCst);
        }
    }

    // ----- handles and closing -------------------------------------------

    pub(crate) fn add_sender(&self) {
        self.senders.fetch_add(1, SeqCst);
    }

    pub(crate) fn drop_sender(&self) {
        if self.senders.fetch_sub(1, SeqCst) == 1 {
            self.wake_everyone();
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.wake_everyone();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst) || self.senders.load(SeqCst) == 0
    }

    /// Closed, and nothing ready, in flight or delayed: nothing can arrive.
    fn is_drained(&self) -> bool {
        self.is_closed() && self.capacity.held() == 0
    }

    fn wake_everyone(&self) {
        self.ready.signal.notify_all();
        self.capacity.signal.notify_all();
    }

    // ----- capacity --------------------------------------------------------

    /// Takes `n` capacity slots, waiting as allowed.
    fn take_slots(&self, n: usize, wait: Wait) -> Result<Waited, NoRoom> {
        if self.is_closed() {
            return Err(NoRoom::Closed);
        }
        if n > self.capacity.limit() {
            return Err(NoRoom::Full);
        }
        let mut first = true;
        let mut attempt = || {
            let taken = self.try_slots(n, first);
            first = false;
            taken
        };
        let signal = &self.capacity.signal;
        let taken = match wait {
            Wait::No => attempt(),
            Wait::Forever => signal.wait(None, || None, attempt),
            Wait::Until(deadline) => signal.wait(Some(deadline), || None, attempt),
        };
        match taken {
            Some(Ok(waited)) => Ok(waited),
            Some(Err(no_room)) => Err(no_room),
            None if matches!(wait, Wait::No) => Err(NoRoom::Full),
            None => Err(NoRoom::Timeout),
        }
    }

    /// One try at taking `n` slots: `None` if they are not free; `first`
    /// if nothing was waited for before.
    fn try_slots(&self, n: usize, first: bool) -> Option<Result<Waited, NoRoom>> {
        if self.is_closed() {
            return Some(Err(NoRoom::Closed));
        }
        if !self.capacity.try_take(n) {
            return None;
        }
        // Checked again after taking: a consumer that saw the queue
        // closed and empty must not miss this message (see `is_drained`).
        if self.is_closed() {
            self.free_slots(n);
            return Some(Err(NoRoom::Closed));
        }
        Some(Ok(if first { Waited::No } else { Waited::Yes }))
    }

    /// Gives slots back; once closed, the last one lets consumers finish.
    fn free_slots(&self, n: usize) {
        self.capacity.give_back(n);
        if self.is_closed() {
            self.ready.signal.notify_all();
        }
        self.left_flight();
    }

    // ----- the journal -------------------------------------------------------

    /// Appends records to the journal, if the queue has one, without
    /// waiting for them to be durable and without telling the event hook
    /// about a failure: safe under a lock. Pass an error through
    /// [`failed`](Self::failed) once the lock is released.
    fn append(&self, records: &[Record<'_>]) -> Result<Option<Ticket>, StorageError> {
        match &self.journal {
            Some(journal) => journal.append(records).map(Some),
            None => Ok(None),
        }
    }

    /// [`append`](Self::append), reporting a failure. Not under a lock.
    fn log(&self, records: &[Record<'_>]) -> Result<Option<Ticket>, StorageError> {
        self.append(records).map_err(|e| self.failed(e))
    }

    /// Waits until a logged record is as durable as the queue promises.
    fn durable(&self, ticket: Option<Ticket>) -> Result<(), StorageError> {
        match (&self.journal, ticket) {
            (Some(journal), Some(ticket)) => journal.commit(ticket).map_err(|e| self.failed(e)),
            _ => Ok(()),
        }
    }

    /// Tells the event hook (once) that the journal stopped, if `error` is
    /// such a failure. Never call it under a lock: the hook may call back.
    fn failed(&self, error: StorageError) -> StorageError {
        if error.stops_the_journal() && !self.poison_reported.swap(true, SeqCst) {
            crate::observe::poisoned(&self.config.name, &error);
            self.emit(|| Event::Poisoned {
                queue: self.name(),
                error: error.clone(),
            });
        }
        error
    }

    // ----- observing -------------------------------------------------------

    /// Tells the event hook, if there is one. A panic in the hook is
    /// contained: it must not leave a message half moved.
    fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(hook) = &self.config.on_event {
            let event = event();
            let call = std::panic::AssertUnwindSafe(|| (hook.0)(&event));
            let _ = std::panic::catch_unwind(call);
        }
    }

    /// The queue's name, for events (a reference count, no copy).
    pub(crate) fn name(&self) -> Arc<str> {
        Arc::clone(&self.config.name)
    }

    pub(crate) fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.recovery.as_ref()
    }

    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        match &self.journal {
            Some(journal) => journal.sync().map_err(|e| self.failed(e)),
            None => Ok(()),
        }
    }

    pub(crate) fn start_compaction(&self) {
        if let Some(journal) = &self.journal {
            journal.start_compaction();
        }
    }

    pub(crate) fn compact(&self) -> Result<(), StorageError> {
        match &self.journal {
            Some(journal) => journal.compact().map_err(|e| self.failed(e)),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    pub(crate) fn journal_poisoned(&self) -> bool {
        self.journal.as_ref().is_some_and(Journal::is_poisoned)
    }

    pub(crate) fn disk_usage(&self) -> Result<u64, StorageError> {
        self.journal.as_ref().map_or(Ok(0), Journal::disk_usage)
    }

    pub(crate) fn stats(&self) -> Stats {
        let now = self.now();
        self.tick(now);
        let mut stats = Stats {
            capacity: self.capacity.limit(),
            ready: self.ready_len(),
            in_flight: self.leases.len(),
            delayed: self.delayed.len(),
            dead_letters: self.dead.len(),
            paused: self.controls.is_paused(),
            oldest_ready_age: self
                .ready
                .oldest_since(now)
                .into_iter()
                .chain(self.order.oldest_enqueued())
                .min()
                .map(|since| Duration::from_nanos(now.saturating_sub(since))),
            ..Stats::default()
        };
        self.counters.fill(&mut stats);
        stats.sent = self.ids.sent();
        stats.acked = self.leases.acked();
        stats
    }
}

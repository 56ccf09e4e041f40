//! The state every handle of one queue shares, and every state change.
//!
//! A message is in exactly one place: the ready queue, the delay queue, the
//! lease table, or the dead-letter store (or it is gone, acknowledged).
//! Each operation below moves an [`Entry`] from one place to another, so a
//! message can be neither lost nor duplicated by the bookkeeping itself.
//!
//! Nothing here takes a lock that all operations share. Send takes a
//! capacity slot (an atomic) and pushes onto the lock-free ready queue;
//! receive pops and inserts into one lease shard; ack removes from that
//! shard and returns the slot. Delays and retries go through the delay
//! queue's own lock; dead letters through the store's.
//!
//! Deadlines (lease expiry, delays and backoffs coming due) are handled by
//! [`Shared::tick`], which every operation calls first, so that whatever
//! came due is queued before anything the operation adds. It
//! costs one clock read and one atomic load unless something is due, and
//! then pops only what is due. Blocked consumers sleep no later than the
//! next deadline, so a lease expires on time even if nobody calls in.

use crate::backoff::Random;
use crate::builder::Config;
use crate::capacity::Capacity;
use crate::clock::{self, Clock, ClockListener, Nanos};
use crate::codec;
use crate::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterStore};
use crate::dedup::{Dedup, KeyStatus};
use crate::delivery::Delivery;
use crate::error::{RecvError, RedriveError, SendError, SettleError};
use crate::event::Event;
use crate::lease::LeaseTable;
use crate::message::{Entry, MessageId};
use crate::producer::{SendOptions, Sent};
use crate::ready::ReadyQueue;
use crate::stats::{Counters, Stats};
use crate::timer::DelayQueue;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
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
    Dead(Entry<T>, DeadLetterReason),
    VisibleAt(Nanos, Entry<T>),
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

pub(crate) struct Shared<T> {
    pub(crate) config: Config,
    clock: Arc<dyn Clock>,
    ready: ReadyQueue<T>,
    capacity: Capacity,
    leases: LeaseTable<T>,
    delayed: DelayQueue<T>,
    dedup: Dedup,
    dead: DeadLetterStore<T>,
    counters: Counters,
    random: Random,
    next_id: AtomicU64,
    next_token: AtomicU64,
    closed: AtomicBool,
    /// `Queue` and `Producer` handles alive: when none is left, nothing new
    /// can be sent and the queue counts as closed.
    senders: AtomicUsize,
    /// No lease expires and no delayed message comes due before this.
    next_deadline: AtomicU64,
    ticking: Mutex<()>,
}

impl<T: Send + Sync + 'static> Shared<T> {
    pub(crate) fn new(config: Config, clock: Arc<dyn Clock>, seed: u64) -> Arc<Self> {
        let shared = Arc::new(Shared {
            ready: ReadyQueue::new(config.capacity),
            capacity: Capacity::new(config.capacity),
            leases: LeaseTable::new(),
            delayed: DelayQueue::new(),
            dedup: Dedup::new(clock::duration_nanos(config.dedup_window)),
            dead: DeadLetterStore::default(),
            counters: Counters::default(),
            random: Random::new(seed),
            next_id: AtomicU64::new(1),
            next_token: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            senders: AtomicUsize::new(0),
            next_deadline: AtomicU64::new(Nanos::MAX),
            ticking: Mutex::new(()),
            config,
            clock,
        });
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

    fn take_slots(&self, n: usize, wait: Wait) -> Result<(), NoRoom> {
        if self.is_closed() {
            return Err(NoRoom::Closed);
        }
        if n > self.capacity.limit() {
            return Err(NoRoom::Full);
        }
        let attempt = || {
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
            Some(Ok(()))
        };
        let signal = &self.capacity.signal;
        match wait {
            Wait::No => attempt().unwrap_or(Err(NoRoom::Full)),
            Wait::Forever => signal
                .wait(None, || None, attempt)
                .unwrap_or(Err(NoRoom::Timeout)),
            Wait::Until(deadline) => signal
                .wait(Some(deadline), || None, attempt)
                .unwrap_or(Err(NoRoom::Timeout)),
        }
    }

    /// Gives slots back; once closed, the last one lets consumers finish.
    fn free_slots(&self, n: usize) {
        self.capacity.give_back(n);
        if self.is_closed() {
            self.ready.signal.notify_all();
        }
    }

    // ----- sending ---------------------------------------------------------

    pub(crate) fn send(
        &self,
        message: T,
        options: SendOptions,
        wait: Wait,
    ) -> Result<Sent, SendError<T>>
    where
        T: Serialize,
    {
        self.tick(self.now());
        if self.is_closed() {
            return Err(SendError::Closed(message));
        }
        let keyed = match options.key {
            None => None,
            Some(key) => {
                let hash = match codec::encode(&message) {
                    Ok(bytes) => codec::fingerprint(&bytes),
                    Err(reason) => return Err(SendError::Encode { message, reason }),
                };
                match self.dedup.check(&key, hash, self.now()) {
                    KeyStatus::New => Some((key, hash)),
                    KeyStatus::Duplicate(original) => {
                        Counters::bump(&self.counters.duplicates, 1);
                        return Ok(Sent::Duplicate(original));
                    }
                    KeyStatus::Conflict(original) => {
                        return Err(SendError::KeyConflict { message, original })
                    }
                }
            }
        };
        if let Err(no_room) = self.take_slots(1, wait) {
            return Err(no_room.refuse(message));
        }
        let now = self.now();
        let id = MessageId(self.next_id.fetch_add(1, Relaxed));
        let mut key = None;
        if let Some((k, hash)) = keyed {
            // Claimed only now that the message has room: a send that times
            // out must not leave its key behind.
            match self.dedup.claim(&k, hash, id, now) {
                KeyStatus::New => key = Some(k),
                KeyStatus::Duplicate(original) => {
                    self.free_slots(1);
                    Counters::bump(&self.counters.duplicates, 1);
                    return Ok(Sent::Duplicate(original));
                }
                KeyStatus::Conflict(original) => {
                    self.free_slots(1);
                    return Err(SendError::KeyConflict { message, original });
                }
            }
        }
        let entry = Entry {
            id,
            payload: Arc::new(message),
            enqueued_at: now,
            receive_count: 0,
            key,
            errors: Vec::new(),
        };
        Counters::bump(&self.counters.sent, 1);
        self.make_visible(entry, clock::duration_nanos(options.delay), now);
        Ok(Sent::Enqueued(id))
    }

    pub(crate) fn send_batch(
        &self,
        messages: Vec<T>,
        wait: Wait,
    ) -> Result<Vec<MessageId>, SendError<Vec<T>>> {
        self.tick(self.now());
        if let Err(no_room) = self.take_slots(messages.len(), wait) {
            return Err(no_room.refuse(messages));
        }
        let now = self.now();
        let count = messages.len() as u64;
        let first = self.next_id.fetch_add(count, Relaxed);
        let ids: Vec<MessageId> = (first..first + count).map(MessageId).collect();
        for (id, message) in ids.iter().zip(messages) {
            self.ready.push(
                Entry {
                    id: *id,
                    payload: Arc::new(message),
                    enqueued_at: now,
                    receive_count: 0,
                    key: None,
                    errors: Vec::new(),
                },
                now,
            );
        }
        Counters::bump(&self.counters.sent, count);
        self.ready.signal.notify_all();
        Ok(ids)
    }

    /// Puts a message where consumers will find it: ready now, or delayed.
    fn make_visible(&self, entry: Entry<T>, delay: Nanos, now: Nanos) {
        if delay == 0 {
            self.ready.push(entry, now);
            self.ready.signal.notify_one();
        } else {
            self.hold_until(now.saturating_add(delay), entry);
        }
    }

    /// Makes sure `tick` runs by `deadline`, waking sleeping consumers if
    /// it is earlier than what they sleep towards.
    fn register_deadline(&self, deadline: Nanos) {
        if deadline < self.next_deadline.load(SeqCst)
            && deadline < self.next_deadline.fetch_min(deadline, SeqCst)
        {
            self.ready.signal.notify_all();
        }
    }

    // ----- deadlines ---------------------------------------------------------

    /// Moves whatever is due at `now`: expired leases are released (with
    /// backoff, or to the dead-letter queue), due delayed messages become
    /// ready. Each happens as of the time it came due, however late the
    /// tick: a backoff runs from the lease's expiry. Messages made visible
    /// in one tick go in order of the time they became visible, then of id.
    pub(crate) fn tick(&self, now: Nanos) {
        if now < self.next_deadline.load(SeqCst) {
            return;
        }
        let Some(guard) = self.ticking.try_lock() else {
            return; // another thread is on it
        };
        self.next_deadline.store(Nanos::MAX, SeqCst);
        let mut expired = Vec::new();
        let mut due = Vec::new();
        let next = self
            .leases
            .expire(now, &mut expired)
            .min(self.delayed.pop_due(now, &mut due));
        self.next_deadline.fetch_min(next, SeqCst);
        drop(guard);

        // Everything happens at the time it came due, not when this tick
        // noticed it: a backoff runs from the lease's expiry, and a message
        // counts as ready (for its age) from its due time.
        expired.sort_by_key(|(at, entry)| (*at, entry.id));
        let mut visible = due;
        for (expired_at, entry) in expired {
            Counters::bump(&self.counters.expired, 1);
            self.emit(|| Event::LeaseExpired {
                id: entry.id,
                receive_count: entry.receive_count,
            });
            match self.after_failure(entry, None, expired_at) {
                Next::Dead(entry, reason) => self.bury(entry, reason, expired_at),
                Next::VisibleAt(at, entry) if at <= now => visible.push((at, entry)),
                Next::VisibleAt(at, entry) => self.hold_until(at, entry),
            }
        }
        visible.sort_by_key(|(at, entry)| (*at, entry.id));
        for (at, entry) in visible {
            self.ready.push(entry, at);
        }
        // Also when nothing moved: a consumer that read `next_deadline`
        // while it was reset must recompute how long to sleep.
        self.ready.signal.notify_all();
    }

    /// The next instant a sleeping consumer should look again.
    fn next_wake(&self) -> Option<Instant> {
        let next = self.next_deadline.load(SeqCst);
        if next == Nanos::MAX {
            return None;
        }
        let wait = Duration::from_nanos(next.saturating_sub(self.now()));
        Instant::now().checked_add(wait)
    }

    // ----- receiving -------------------------------------------------------

    pub(crate) fn receive(self: &Arc<Self>, wait: Wait) -> Result<Delivery<T>, RecvError> {
        let attempt = || {
            let now = self.now();
            self.tick(now);
            if let Some(delivery) = self.take_ready(now) {
                return Some(Ok(delivery));
            }
            self.is_drained().then_some(Err(RecvError::Closed))
        };
        let signal = &self.ready.signal;
        match wait {
            Wait::No => attempt().unwrap_or(Err(RecvError::Empty)),
            Wait::Forever => signal
                .wait(None, || self.next_wake(), attempt)
                .unwrap_or(Err(RecvError::Timeout)),
            Wait::Until(deadline) => signal
                .wait(Some(deadline), || self.next_wake(), attempt)
                .unwrap_or(Err(RecvError::Timeout)),
        }
    }

    /// Leases the oldest ready message, if any.
    pub(crate) fn take_ready(self: &Arc<Self>, now: Nanos) -> Option<Delivery<T>> {
        let mut entry = self.ready.pop()?;
        entry.receive_count = entry.receive_count.saturating_add(1);
        let token = self.next_token.fetch_add(1, Relaxed);
        let deadline = now.saturating_add(clock::duration_nanos(self.config.visibility_timeout));
        let delivery = Delivery::new(Arc::clone(self), &entry, token);
        self.leases.insert(entry, token, deadline);
        self.register_deadline(deadline);
        Some(delivery)
    }

    // ----- settling --------------------------------------------------------

    pub(crate) fn ack(&self, id: MessageId, token: u64) -> Result<(), SettleError> {
        let now = self.now();
        self.tick(now);
        self.leases.remove(id, token, now)?;
        Counters::bump(&self.counters.acked, 1);
        self.free_slots(1);
        Ok(())
    }

    /// Ends a lease early: the message is retried after `delay` (or the
    /// backoff), or dead-lettered if it has used up its receives.
    pub(crate) fn release(
        &self,
        id: MessageId,
        token: u64,
        delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), SettleError> {
        let now = self.now();
        self.tick(now);
        let mut entry = self.leases.remove(id, token, now)?;
        entry.errors.extend(error);
        Counters::bump(&self.counters.nacked, 1);
        self.retry(entry, delay.map(clock::duration_nanos), now);
        Ok(())
    }

    pub(crate) fn extend(
        &self,
        id: MessageId,
        token: u64,
        by: Duration,
    ) -> Result<(), SettleError> {
        let now = self.now();
        self.tick(now);
        let deadline = now.saturating_add(clock::duration_nanos(by));
        self.leases.extend(id, token, now, deadline)?;
        self.register_deadline(deadline);
        Ok(())
    }

    pub(crate) fn reject(
        &self,
        id: MessageId,
        token: u64,
        reason: String,
    ) -> Result<(), SettleError> {
        let now = self.now();
        self.tick(now);
        let entry = self.leases.remove(id, token, now)?;
        self.bury(entry, DeadLetterReason::Rejected(reason), now);
        Ok(())
    }

    /// A failed attempt at `at`: try again later, or give up after
    /// `max_receives`.
    fn retry(&self, entry: Entry<T>, delay: Option<Nanos>, at: Nanos) {
        match self.after_failure(entry, delay, at) {
            Next::Dead(entry, reason) => self.bury(entry, reason, at),
            Next::VisibleAt(due, entry) if due <= at => {
                self.ready.push(entry, due);
                self.ready.signal.notify_one();
            }
            Next::VisibleAt(due, entry) => self.hold_until(due, entry),
        }
    }

    /// Where a message goes after a failed attempt at `at`.
    fn after_failure(&self, entry: Entry<T>, delay: Option<Nanos>, at: Nanos) -> Next<T> {
        if entry.receive_count >= self.config.max_receives {
            let reason = DeadLetterReason::MaxReceives(entry.receive_count);
            return Next::Dead(entry, reason);
        }
        let delay = delay.unwrap_or_else(|| {
            let backoff = self.config.backoff.delay(entry.receive_count, &self.random);
            clock::duration_nanos(backoff)
        });
        Next::VisibleAt(at.saturating_add(delay), entry)
    }

    /// Keeps a message in the delay queue until `due`.
    fn hold_until(&self, due: Nanos, entry: Entry<T>) {
        self.delayed.push(due, entry);
        self.register_deadline(due);
    }

    /// Moves a message to the dead-letter queue.
    fn bury(&self, entry: Entry<T>, reason: DeadLetterReason, now: Nanos) {
        let id = entry.id;
        let event_reason = self.config.on_event.is_some().then(|| reason.clone());
        self.dead.insert(DeadLetter::new(entry, reason, now));
        Counters::bump(&self.counters.dead_lettered, 1);
        self.free_slots(1);
        if let Some(reason) = event_reason {
            self.emit(|| Event::DeadLettered { id, reason });
        }
    }

    /// Tells the event hook, if there is one.
    fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(hook) = &self.config.on_event {
            (hook.0)(&event());
        }
    }

    // ----- dead letters ----------------------------------------------------

    pub(crate) fn dead_letters(&self) -> &DeadLetterStore<T> {
        self.tick(self.now());
        &self.dead
    }

    /// Moves one dead letter back to the ready queue with a fresh receive
    /// count, optionally with a corrected payload.
    pub(crate) fn redrive(
        &self,
        id: MessageId,
        replacement: Option<T>,
    ) -> Result<(), RedriveError> {
        if !self.dead.contains(id) {
            return Err(RedriveError::NotFound(id));
        }
        match self.take_slots(1, Wait::No) {
            Ok(()) => {}
            Err(NoRoom::Closed) => return Err(RedriveError::Closed),
            Err(_) => return Err(RedriveError::Full { redriven: 0 }),
        }
        let Some(dead) = self.dead.remove(id) else {
            self.free_slots(1); // redriven or purged meanwhile
            return Err(RedriveError::NotFound(id));
        };
        let mut entry = dead.into_entry();
        entry.receive_count = 0;
        entry.errors.clear();
        if let Some(payload) = replacement {
            entry.payload = Arc::new(payload);
        }
        Counters::bump(&self.counters.redriven, 1);
        self.ready.push(entry, self.now());
        self.ready.signal.notify_one();
        self.emit(|| Event::Redriven { id });
        Ok(())
    }

    /// Redrives each of `ids` in turn, stopping at the first refusal.
    pub(crate) fn redrive_each(&self, ids: Vec<MessageId>) -> Result<usize, RedriveError> {
        let mut redriven = 0;
        for id in ids {
            match self.redrive(id, None) {
                Ok(()) => redriven += 1,
                Err(RedriveError::NotFound(_)) => {} // purged or redriven meanwhile
                Err(RedriveError::Full { .. }) => return Err(RedriveError::Full { redriven }),
                Err(other) => return Err(other),
            }
        }
        Ok(redriven)
    }

    pub(crate) fn purge(&self) -> usize {
        let purged = self.dead.clear();
        Counters::bump(&self.counters.purged, purged as u64);
        purged
    }

    // ----- observing -------------------------------------------------------

    pub(crate) fn stats(&self) -> Stats {
        let now = self.now();
        self.tick(now);
        let mut stats = Stats {
            capacity: self.capacity.limit(),
            ready: self.ready.len(),
            in_flight: self.leases.len(),
            delayed: self.delayed.len(),
            dead_letters: self.dead.len(),
            oldest_ready_age: self
                .ready
                .oldest_since()
                .map(|since| Duration::from_nanos(now.saturating_sub(since))),
            ..Stats::default()
        };
        self.counters.fill(&mut stats);
        stats
    }
}

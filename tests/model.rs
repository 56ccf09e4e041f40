//! Model-based test of the in-memory queue.
//!
//! A plain reference model (a `VecDeque` for the ready FIFO, maps for
//! leases, delayed messages, dead letters and idempotency keys, and the
//! counters) runs beside a real [`Queue`] with a [`ManualClock`]. proptest
//! generates sequences of operations (sends of every kind, batch sends
//! that may be refused whole, receives through several consumer handles,
//! settling held deliveries in every way, one by one or several at once
//! with `Consumer::ack_batch`, receiving batches and settling or splitting
//! them whole, clock jumps, dead-letter operations, cancellations, sends
//! with a time to live or their own `max_receives`, close, pause and
//! resume, an in-flight cap set and removed, peeks) and shrinks any
//! disagreement to a minimal sequence. Most cases use a small queue, so
//! that it is often full; some (see [`BULK_CAPACITY`]) a queue of up to 40
//! with more and larger batches, so that batches of 10 to 30 messages are
//! received, settled, split and run out.
//!
//! After every step the test compares each result the queue returned with
//! the model's (ids, duplicates, error variants, each delivery's and each
//! batch message's payload, key, receive count and enqueue time, the id a
//! `LeaseExpired` names), then the full `stats()` and the full dead-letter
//! list (reasons, errors, receive counts, times), in order.
//!
//! The model follows the queue's rules as written in `src/shared/`:
//!
//! - Every operation (sends, receives, settles, `stats`, every dead-letter
//!   operation) first processes what is due at the clock's `now`: leases
//!   with `deadline <= now` and delayed messages with `due <= now`; so a
//!   lease that ran out before a release is queued ahead of the released
//!   message. [`Op::AdvanceThen`] jumps the clock and acts before the
//!   step's checks look at the queue.
//! - Each deadline takes effect as of its own time, however late it is
//!   processed: an expired lease's backoff runs from its deadline, it is
//!   dead-lettered "at" its deadline, and a message counts as ready (for
//!   `oldest_ready_age`) from the instant it became visible. Messages made
//!   visible in one processing join the back of the ready queue in order
//!   of (instant they became visible, id). `oldest_ready_age` is the age of
//!   the message at the front of the ready queue.
//! - A batch (`recv_batch(max)`) leases up to `max` (at least one) of the
//!   front of the ready queue under one lease, named by its first message.
//!   Settling it needs that lease current, as for a delivery, and fails
//!   with `LeaseExpired` naming its first message otherwise. `ack` frees
//!   every slot; `nack`, `retry_after` and dropping release its messages
//!   in batch order, each with its own backoff (those visible at once join
//!   the back of the ready queue in batch order), each dead-lettered if it
//!   was on its last allowed receive; `extend` moves the one deadline. A
//!   batch lease that runs out brings its messages back as of its
//!   deadline, merged with every other expiry of that processing, so in
//!   order of (instant visible, id), not in batch order. `into_deliveries`
//!   gives one lease per message with the batch's deadline, or, if the
//!   batch's lease is no longer current, deliveries that show the batch's
//!   messages and whose every settle fails.
//! - Ids are handed out only to messages enqueued: refused and duplicate
//!   sends use none (single-threaded; under contention a send that loses a
//!   key race after taking its slot would burn one).
//! - A closed queue refuses every send with `Closed` first, keyed or not,
//!   and batches of any size. Otherwise a keyed send looks its key up
//!   before taking room, so a duplicate or a conflict is reported even when
//!   the queue is full. A redrive checks `NotFound`, then `Closed`, then
//!   `Full`.
//! - A batch send is all or nothing: unless there is room for all of it
//!   now, `try_send_batch` gives the whole batch back in `Full` and
//!   `send_batch_timeout` (zero or tiny) in `Timeout`; a batch larger than
//!   the capacity could never fit and is `Full` at once, whatever the wait.
//!   An empty batch is sent (no ids) unless the queue is closed.
//! - Consumer handles (`queue.consumer()`, `Consumer::clone`) each lease
//!   into a shard of their own, handed out in turn (16 shards, so a 17th
//!   handle shares the first's). None of that is visible: the model knows
//!   no handles, and whichever handle receives, the same message comes
//!   out, under a lease that only its own token settles. A dropped handle
//!   leaves its deliveries and batches as they were. `ack_batch`, through
//!   any handle, acknowledges each delivery whose lease is current, as
//!   its own `ack` would, skips the others (changing nothing), and returns
//!   how many it acknowledged.
//! - The event hook sees `LeaseExpired`, `DeadLettered` and `Redriven` in
//!   the order they happen; the test compares them after every step.
//! - A message sent with a time to live and never received is
//!   dead-lettered as `Expired` when the processing of what is due finds
//!   its expiry passed, as of that expiry, wherever it waits (ready,
//!   delayed, or coming due in that same processing), before the expired
//!   leases of that processing, in order of (expiry, id). A received one
//!   is out of reach of it; a redrive clears it. A message's own
//!   `max_receives` replaces the queue's in every failure rule.
//! - `cancel` takes a ready message out (the others keep their order and
//!   their ready-since instants) or a delayed one, counts it in
//!   `cancelled`, and frees its slot; anything else is `NotFound`.
//!   `cancel_key` finds the id through a live key (else `UnknownKey`).
//!   `DeadLetters::remove` deletes one letter and counts it in `purged`.
//! - While paused, a receive takes nothing (as if nothing were ready); with
//!   an in-flight cap, a receive takes at most the cap less what is in
//!   flight (a batch, up to that many). `peek(n)` shows the front `n` of
//!   the ready queue and changes nothing.
//!
//! Priorities and message groups have a model of their own,
//! `tests/model_order.rs`.
//!
//! Not covered here: threads and real blocking (a blocking call the model
//! says would wait is made as a `try_` call instead, a timeout elapses
//! with nothing else running), backoff jitter, dropping every
//! `Queue`/`Producer` handle, payloads that fail to encode, persistence,
//! `ack_batch` of deliveries from another queue, and queues larger than
//! 40 (a lease shard's deadline heap is compacted only in the fixed
//! scenario [`a_shard_full_of_settled_leases_still_expires_on_time`]).
//!
//! All times are whole milliseconds since the clock was created.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use spool::{
    Backoff, Batch, CancelError, Cancelled, Consumer, DeadLetter, DeadLetterReason, DeadLetters,
    Delivery, Event, ManualClock, MessageId, Producer, Queue, RecvError, RedriveError, SendError,
    SendOptions, Sent, SettleError, Stats,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ----- configuration and operations ------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Config {
    capacity: usize,
    max_receives: u32,
    visibility: u64,
    dedup_window: u64,
    backoff: ModelBackoff,
    /// Consumer handles opened at the start (each has a lease shard of its
    /// own; past 16 they share shards again).
    consumers: usize,
}

#[derive(Debug, Clone, Copy)]
enum ModelBackoff {
    None,
    Fixed(u64),
    /// Without jitter, so that delays are exact.
    Exponential {
        initial: u64,
        max: u64,
    },
}

impl ModelBackoff {
    fn policy(self) -> Backoff {
        match self {
            ModelBackoff::None => Backoff::None,
            ModelBackoff::Fixed(d) => Backoff::Fixed(ms(d)),
            ModelBackoff::Exponential { initial, max } => Backoff::Exponential {
                initial: ms(initial),
                max: ms(max),
                jitter: false,
            },
        }
    }

    /// The delay after `receive_count` failed attempts.
    fn delay(self, receive_count: u32) -> u64 {
        match self {
            ModelBackoff::None => 0,
            ModelBackoff::Fixed(d) => d,
            ModelBackoff::Exponential { initial, max } => {
                let doublings = receive_count.saturating_sub(1).min(63);
                initial
                    .checked_mul(1u64 << doublings)
                    .unwrap_or(max)
                    .min(max)
            }
        }
    }
}

/// How a send or receive waits. A blocking call that the model says would
/// wait forever is made without waiting instead (and expects `Full` or
/// `Empty`): the test is single-threaded.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Blocking,
    Try,
    /// `send_timeout` / `recv_timeout` / `send_batch_timeout` /
    /// `recv_batch` with a zero timeout: no room (or nothing ready) now is
    /// `Timeout`.
    ZeroTimeout,
    /// The same with [`TINY`]: nothing else runs meanwhile, so it ends as
    /// a zero timeout does (after spinning for about that long).
    TinyTimeout,
}

/// The "tiny" timeout: long enough to take the waiting path, too short to
/// slow the test.
const TINY: Duration = Duration::from_micros(2);

impl Wait {
    fn times_out(self) -> bool {
        matches!(self, Wait::ZeroTimeout | Wait::TinyTimeout)
    }
}

/// How far a clock step goes.
#[derive(Debug, Clone, Copy)]
enum Advance {
    By(u64),
    /// To the next lease deadline, delay or key expiry, plus -1, 0 or +1 ms.
    ToDeadline(i8),
}

#[derive(Debug, Clone)]
enum Op {
    /// `send`, `try_send` or `send_timeout` (zero or tiny), fresh payload,
    /// no key.
    Send {
        wait: Wait,
    },
    /// A keyed send: few keys, two payloads per key.
    SendKeyed {
        key: u8,
        variant: u8,
        delay: u64,
        blocking: bool,
    },
    /// `send_with` / `try_send_with` with a delay.
    SendDelayed {
        delay: u64,
        blocking: bool,
    },
    /// A send with a time to live and/or its own `max_receives`, maybe
    /// delayed.
    SendLimited {
        ttl: Option<u64>,
        max_receives: Option<u32>,
        delay: u64,
    },
    /// `Queue::cancel` of an id handed out (any state), or `cancel_key` of
    /// one of the keys.
    Cancel {
        which: usize,
        by_key: bool,
    },
    /// `DeadLetters::remove` of a dead letter, or of any id handed out.
    RemoveDead {
        which: usize,
        from_dlq: bool,
    },
    /// `send_batch`, `try_send_batch` or `send_batch_timeout` (zero or
    /// tiny): all or nothing. A blocking one that would wait (fits the
    /// capacity but not the room left) is made as `try_send_batch`.
    SendBatch {
        len: BatchLen,
        wait: Wait,
    },
    /// `recv`, `try_recv` or `recv_timeout` (zero or tiny), through
    /// consumer handle `via` (modulo how many are open).
    Recv {
        wait: Wait,
        via: usize,
    },
    /// `recv_batch(max, timeout)` through handle `via`: a timeout of zero,
    /// tiny, or (`Blocking`, when something is ready) `Duration::MAX`.
    /// With `hold`, the batch is kept whole (for [`Op::SettleBatch`]);
    /// without, it is split into deliveries at once.
    RecvBatch {
        max: usize,
        hold: bool,
        wait: Wait,
        via: usize,
    },
    /// `Consumer::ack_batch` through handle `via` of some held deliveries
    /// (whichever handles received them; current, expired or never
    /// current alike).
    AckMany {
        via: usize,
        picks: Picks,
    },
    /// Opens another consumer handle: `queue.consumer()`, or a clone of
    /// an open one (index modulo how many are open).
    AddConsumer {
        clone_of: Option<usize>,
    },
    /// Drops a consumer handle (not the last); its deliveries and batches
    /// live on.
    DropConsumer {
        which: usize,
    },
    /// Settles one held delivery (index modulo how many are held).
    Settle {
        which: usize,
        how: Settle,
    },
    /// Settles or splits one held batch (index modulo how many are held).
    SettleBatch {
        which: usize,
        how: SettleBatch,
    },
    Advance(Advance),
    /// Jumps the clock, then does something (a send or a settle, which
    /// processes what came due itself) before the step's checks do.
    AdvanceThen(Advance, Box<Op>),
    /// `len`, `is_empty` and `get` of one id the queue has handed out.
    Inspect {
        which: usize,
    },
    /// Redrives one id: from the dead-letter list, or any id seen so far.
    Redrive {
        which: usize,
        from_dlq: bool,
    },
    RedriveWith {
        which: usize,
        from_dlq: bool,
    },
    RedriveAll,
    RedriveWhere(Select),
    Purge,
    Close,
    /// `Queue::pause` (`true`) or `Queue::resume`.
    Pause(bool),
    /// `Queue::set_max_in_flight`.
    MaxInFlight(Option<usize>),
    /// `Queue::peek(n)`: the front of the ready queue, nothing leased.
    Peek(usize),
}

/// How many messages a batch send carries.
#[derive(Debug, Clone, Copy)]
enum BatchLen {
    Exact(usize),
    /// The room left now, plus -2 to +1: fits (a large batch when the
    /// queue is large and empty), or one too many.
    Room(i8),
    /// The capacity, plus -1 to +1: fits only an empty queue, or never.
    Capacity(i8),
}

/// Which held deliveries go to one `ack_batch`.
#[derive(Debug, Clone)]
enum Picks {
    /// Each index modulo how many are still held, taken in turn.
    Some(Vec<usize>),
    All,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Nack,
    Fail,
    RetryAfter(u64),
    Extend(u64),
    DeadLetter,
    Drop,
}

/// What is done with a held batch, whole.
#[derive(Debug, Clone, Copy)]
enum SettleBatch {
    Ack,
    Nack,
    RetryAfter(u64),
    Extend(u64),
    Drop,
    /// `into_deliveries`: its messages join the held deliveries.
    Split,
}

#[derive(Debug, Clone, Copy)]
enum Select {
    OddIds,
    MaxReceives,
    Rejected,
    WithErrors,
}

impl Select {
    fn matches(self, id: u64, reason: &DeadLetterReason, errors: &[String]) -> bool {
        match self {
            Select::OddIds => id % 2 == 1,
            Select::MaxReceives => matches!(reason, DeadLetterReason::MaxReceives(_)),
            Select::Rejected => matches!(reason, DeadLetterReason::Rejected(_)),
            Select::WithErrors => !errors.is_empty(),
        }
    }
}

// ----- what the queue returns, in comparable form ------------------------------

#[derive(Debug, PartialEq)]
enum SendOutcome {
    Enqueued(u64),
    Duplicate(u64),
    Full(u32),
    Timeout(u32),
    Closed(u32),
    Conflict { message: u32, original: u64 },
    Other(String),
}

fn send_outcome(result: Result<Sent, SendError<u32>>) -> SendOutcome {
    match result {
        Ok(Sent::Enqueued(id)) => SendOutcome::Enqueued(id.get()),
        Ok(Sent::Duplicate(id)) => SendOutcome::Duplicate(id.get()),
        Err(SendError::Full(m)) => SendOutcome::Full(m),
        Err(SendError::Timeout(m)) => SendOutcome::Timeout(m),
        Err(SendError::Closed(m)) => SendOutcome::Closed(m),
        Err(SendError::KeyConflict { message, original }) => SendOutcome::Conflict {
            message,
            original: original.get(),
        },
        Err(other) => SendOutcome::Other(format!("{other:?}")),
    }
}

#[derive(Debug, PartialEq)]
enum BatchOutcome {
    Ids(Vec<u64>),
    Full(Vec<u32>),
    Timeout(Vec<u32>),
    Closed(Vec<u32>),
    Other(String),
}

fn batch_outcome(result: Result<Vec<MessageId>, SendError<Vec<u32>>>) -> BatchOutcome {
    match result {
        Ok(ids) => BatchOutcome::Ids(ids.into_iter().map(MessageId::get).collect()),
        Err(SendError::Full(m)) => BatchOutcome::Full(m),
        Err(SendError::Timeout(m)) => BatchOutcome::Timeout(m),
        Err(SendError::Closed(m)) => BatchOutcome::Closed(m),
        Err(other) => BatchOutcome::Other(format!("{other:?}")),
    }
}

/// A delivery (or a message of a batch) as a consumer sees it.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    id: u64,
    payload: u32,
    key: Option<String>,
    receive_count: u32,
    enqueued_at: SystemTime,
}

fn got(delivery: &Delivery<u32>) -> Got {
    Got {
        id: delivery.id().get(),
        payload: *delivery.payload(),
        key: delivery.key().map(str::to_owned),
        receive_count: delivery.receive_count(),
        enqueued_at: delivery.enqueued_at(),
    }
}

/// A batch as a consumer sees it; checks that its accessors agree.
fn batch_view(batch: &Batch<u32>) -> Vec<Got> {
    let view: Vec<Got> = batch
        .messages()
        .map(|m| Got {
            id: m.id().get(),
            payload: *m.payload(),
            key: m.key().map(str::to_owned),
            receive_count: m.receive_count(),
            enqueued_at: m.enqueued_at(),
        })
        .collect();
    assert_eq!(batch.len(), view.len(), "len() against messages()");
    assert!(!batch.is_empty(), "a batch holds a message");
    let payloads: Vec<u32> = view.iter().map(|g| g.payload).collect();
    assert_eq!(
        batch.iter().copied().collect::<Vec<_>>(),
        payloads,
        "iter()"
    );
    assert_eq!(
        batch[batch.len() - 1],
        payloads[payloads.len() - 1],
        "index"
    );
    assert!(batch.get(batch.len()).is_none(), "get() past the end");
    view
}

#[derive(Debug, PartialEq)]
enum SettleOutcome {
    Ok,
    LeaseExpired(u64),
    Other(String),
}

fn settle_outcome(result: Result<(), SettleError>) -> SettleOutcome {
    match result {
        Ok(()) => SettleOutcome::Ok,
        Err(SettleError::LeaseExpired { id }) => SettleOutcome::LeaseExpired(id.get()),
        Err(other) => SettleOutcome::Other(format!("{other:?}")),
    }
}

#[derive(Debug, PartialEq)]
enum RedriveOutcome {
    NotFound(u64),
    Full { redriven: usize },
    Closed,
    Other(String),
}

fn redrive_outcome<V>(result: Result<V, RedriveError>) -> Result<V, RedriveOutcome> {
    result.map_err(|e| match e {
        RedriveError::NotFound(id) => RedriveOutcome::NotFound(id.get()),
        RedriveError::Full { redriven } => RedriveOutcome::Full { redriven },
        RedriveError::Closed => RedriveOutcome::Closed,
        other => RedriveOutcome::Other(format!("{other:?}")),
    })
}

/// An event as the hook saw it.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    DeadLettered(u64, DeadLetterReason),
    LeaseExpired(u64, u32),
    Redriven(u64),
    Other(String),
}

fn ev(event: &Event) -> Ev {
    match event {
        Event::DeadLettered { id, reason, .. } => Ev::DeadLettered(id.get(), reason.clone()),
        Event::LeaseExpired {
            id, receive_count, ..
        } => Ev::LeaseExpired(id.get(), *receive_count),
        Event::Redriven { id, .. } => Ev::Redriven(id.get()),
        other => Ev::Other(format!("{other:?}")),
    }
}

/// A dead letter as `list()` and `get()` show it.
#[derive(Debug, PartialEq)]
struct LetterView {
    id: u64,
    key: Option<String>,
    payload: u32,
    receive_count: u32,
    reason: DeadLetterReason,
    errors: Vec<String>,
    enqueued_at: SystemTime,
    dead_lettered_at: SystemTime,
}

fn letter_view(letter: &DeadLetter<u32>) -> LetterView {
    LetterView {
        id: letter.id().get(),
        key: letter.key().map(str::to_owned),
        payload: *letter.payload(),
        receive_count: letter.receive_count(),
        reason: letter.reason().clone(),
        errors: letter.errors().to_vec(),
        enqueued_at: letter.enqueued_at(),
        dead_lettered_at: letter.dead_lettered_at(),
    }
}

/// A refused cancel, comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CancelOutcome {
    NotFound(u64),
    UnknownKey(String),
    Other(String),
}

fn cancel_outcome<V>(result: Result<V, CancelError>) -> Result<V, CancelOutcome> {
    result.map_err(|error| match error {
        CancelError::NotFound(id) => CancelOutcome::NotFound(id.get()),
        CancelError::UnknownKey(key) => CancelOutcome::UnknownKey(key),
        other => CancelOutcome::Other(other.to_string()),
    })
}

// ----- the reference model -----------------------------------------------------

#[derive(Debug, Clone)]
struct Msg {
    id: u64,
    payload: u32,
    key: Option<String>,
    enqueued_at: u64,
    receive_count: u32,
    errors: Vec<String>,
    /// Its time to live's end (`SendOptions::ttl`), until it is received
    /// or redriven.
    expires_at: Option<u64>,
    /// Its own `max_receives`.
    max_receives: Option<u32>,
}

impl Msg {
    /// Never received, and its time to live is over at `now`.
    fn expired(&self, now: u64) -> bool {
        self.receive_count == 0 && self.expires_at.is_some_and(|at| at <= now)
    }
}

struct Lease {
    token: u64,
    deadline: u64,
    msg: Msg,
}

/// The one lease of a held batch.
struct BatchLease {
    deadline: u64,
    /// In batch order; the first names the lease.
    msgs: Vec<Msg>,
}

struct Letter {
    msg: Msg,
    reason: DeadLetterReason,
    at: u64,
}

struct Seen {
    id: u64,
    payload: u32,
    expires: u64,
}

#[derive(Default)]
struct Counters {
    sent: u64,
    duplicates: u64,
    acked: u64,
    nacked: u64,
    expired: u64,
    dead_lettered: u64,
    redriven: u64,
    purged: u64,
    cancelled: u64,
}

/// A send's per-message limits (`SendOptions::ttl`, `max_receives`).
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    ttl: Option<u64>,
    max_receives: Option<u32>,
}

/// How the model settles a lease.
enum Settling {
    Ack,
    Release {
        delay: Option<u64>,
        error: Option<String>,
    },
    Reject(String),
    Extend(u64),
}

struct Model {
    config: Config,
    now: u64,
    next_id: u64,
    next_token: u64,
    closed: bool,
    /// Receives take nothing while paused.
    paused: bool,
    /// Receives take nothing while this many are in flight.
    max_in_flight: Option<usize>,
    /// Ready messages, front first, with the instant each became ready.
    ready: VecDeque<(Msg, u64)>,
    /// In flight under one-message leases, by id (including leases run
    /// out but not yet processed).
    leases: BTreeMap<u64, Lease>,
    /// In flight under batch leases, by token (likewise).
    batches: BTreeMap<u64, BatchLease>,
    /// (due, message), in no particular order.
    delayed: Vec<(u64, Msg)>,
    dead: BTreeMap<u64, Letter>,
    keys: HashMap<String, Seen>,
    counters: Counters,
    /// Events for the hook, not yet compared.
    events: Vec<Ev>,
}

impl Model {
    fn new(config: Config) -> Self {
        Model {
            config,
            now: 0,
            next_id: 1,
            next_token: 1,
            closed: false,
            paused: false,
            max_in_flight: None,
            ready: VecDeque::new(),
            leases: BTreeMap::new(),
            batches: BTreeMap::new(),
            delayed: Vec::new(),
            dead: BTreeMap::new(),
            keys: HashMap::new(),
            counters: Counters::default(),
            events: Vec::new(),
        }
    }

    /// Slots taken: ready + in flight + delayed.
    fn held(&self) -> usize {
        self.ready.len() + self.in_flight() + self.delayed.len()
    }

    /// Messages under a lease, of one message or of a batch.
    fn in_flight(&self) -> usize {
        let batched: usize = self.batches.values().map(|b| b.msgs.len()).sum();
        self.leases.len() + batched
    }

    fn free(&self) -> usize {
        self.config.capacity - self.held()
    }

    fn live_key(&self, key: &str) -> Option<&Seen> {
        self.keys.get(key).filter(|seen| seen.expires > self.now)
    }

    /// The next instant anything changes by itself, after `now`.
    fn next_deadline(&self) -> Option<u64> {
        let leases = self.leases.values().map(|l| l.deadline);
        let batches = self.batches.values().map(|b| b.deadline);
        let delays = self.delayed.iter().map(|(due, _)| *due);
        let keys = self.keys.values().map(|s| s.expires);
        let waiting =
            (self.ready.iter().map(|(m, _)| m)).chain(self.delayed.iter().map(|(_, m)| m));
        let expiries = waiting
            .filter(|m| m.receive_count == 0)
            .filter_map(|m| m.expires_at);
        leases
            .chain(batches)
            .chain(delays)
            .chain(keys)
            .chain(expiries)
            .filter(|&t| t > self.now)
            .min()
    }

    /// Processes every lease deadline and delay due at `now`.
    fn tick(&mut self) {
        let now = self.now;
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut expired: Vec<(u64, Msg)> = expired
            .into_iter()
            .map(|id| self.leases.remove(&id).expect("listed"))
            .map(|lease| (lease.deadline, lease.msg))
            .collect();
        // A batch lease that runs out brings back each of its messages, as
        // of its deadline.
        let batches: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in batches {
            let batch = self.batches.remove(&token).expect("listed");
            let deadline = batch.deadline;
            expired.extend(batch.msgs.into_iter().map(|msg| (deadline, msg)));
        }
        // Whatever the lease, expiries go in order of deadline, then id
        // (not in batch order).
        expired.sort_by_key(|(deadline, msg)| (*deadline, msg.id));
        let (mut visible, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(due, _)| *due <= now);
        self.delayed = waiting;
        // Times to live that ran out, before the expired leases: messages
        // never received, wherever they wait, dead-lettered as of their
        // expiry, in order of (expiry, id).
        let mut gone: Vec<Msg> = Vec::new();
        let (out, kept): (Vec<_>, Vec<_>) = visible.into_iter().partition(|(_, m)| m.expired(now));
        visible = kept;
        gone.extend(out.into_iter().map(|(_, m)| m));
        let (out, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(_, m)| m.expired(now));
        self.delayed = kept;
        gone.extend(out.into_iter().map(|(_, m)| m));
        let (out, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(m, _)| m.expired(now));
        self.ready = kept;
        gone.extend(out.into_iter().map(|(m, _)| m));
        gone.sort_by_key(|m| (m.expires_at, m.id));
        for msg in gone {
            let at = msg.expires_at.expect("expired");
            self.bury(msg, DeadLetterReason::Expired, at);
        }
        // Each expiry takes effect as of its deadline: the backoff runs from
        // there, and a message already visible by `now` counts as ready
        // since then.
        for (deadline, msg) in expired {
            self.counters.expired += 1;
            self.events
                .push(Ev::LeaseExpired(msg.id, msg.receive_count));
            match self.after_failure(msg, None, deadline) {
                Err((msg, reason)) => self.bury(msg, reason, deadline),
                Ok((at, msg)) if at <= now => visible.push((at, msg)),
                Ok((at, msg)) => self.delayed.push((at, msg)),
            }
        }
        visible.sort_by_key(|(at, msg)| (*at, msg.id));
        self.ready
            .extend(visible.into_iter().map(|(at, msg)| (msg, at)));
    }

    /// Where a message goes after an attempt failed at `at`: visible again
    /// at some instant, or (`Err`) to the dead-letter queue.
    fn after_failure(
        &self,
        msg: Msg,
        delay: Option<u64>,
        at: u64,
    ) -> Result<(u64, Msg), (Msg, DeadLetterReason)> {
        if msg.receive_count >= msg.max_receives.unwrap_or(self.config.max_receives) {
            let reason = DeadLetterReason::MaxReceives(msg.receive_count);
            return Err((msg, reason));
        }
        let delay = delay.unwrap_or_else(|| self.config.backoff.delay(msg.receive_count));
        Ok((at + delay, msg))
    }

    /// A failed attempt now (a release by the consumer).
    fn retry(&mut self, msg: Msg, delay: Option<u64>) {
        match self.after_failure(msg, delay, self.now) {
            Err((msg, reason)) => self.bury(msg, reason, self.now),
            Ok((at, msg)) if at <= self.now => self.ready.push_back((msg, at)),
            Ok((at, msg)) => self.delayed.push((at, msg)),
        }
    }

    fn bury(&mut self, msg: Msg, reason: DeadLetterReason, at: u64) {
        self.counters.dead_lettered += 1;
        self.events.push(Ev::DeadLettered(msg.id, reason.clone()));
        self.dead.insert(msg.id, Letter { msg, reason, at });
    }

    fn send_would_block(&self, key: Option<&str>) -> bool {
        !self.closed && key.and_then(|k| self.live_key(k)).is_none() && self.free() == 0
    }

    /// A send that does not wait for room.
    fn send(&mut self, payload: u32, key: Option<&str>, delay: u64, limits: Limits) -> SendOutcome {
        if self.closed {
            return SendOutcome::Closed(payload);
        }
        if let Some(seen) = key.and_then(|k| self.live_key(k)) {
            if seen.payload == payload {
                let id = seen.id;
                self.counters.duplicates += 1;
                return SendOutcome::Duplicate(id);
            }
            return SendOutcome::Conflict {
                message: payload,
                original: seen.id,
            };
        }
        if self.free() == 0 {
            return SendOutcome::Full(payload);
        }
        let id = self.next_id;
        self.next_id += 1;
        if let Some(k) = key {
            let expires = self.now + self.config.dedup_window;
            self.keys.insert(
                k.to_owned(),
                Seen {
                    id,
                    payload,
                    expires,
                },
            );
        }
        self.counters.sent += 1;
        let msg = Msg {
            id,
            payload,
            key: key.map(str::to_owned),
            enqueued_at: self.now,
            receive_count: 0,
            errors: Vec::new(),
            expires_at: limits.ttl.map(|ttl| self.now + ttl),
            max_receives: limits.max_receives,
        };
        if delay == 0 {
            self.ready.push_back((msg, self.now));
        } else {
            self.delayed.push((self.now + delay, msg));
        }
        SendOutcome::Enqueued(id)
    }

    fn batch_would_block(&self, len: usize) -> bool {
        len <= self.config.capacity && !self.closed && len > self.free()
    }

    /// A batch send that does not wait for room: `Full` (or, with a
    /// timeout, `Timeout`) gives the whole batch back unless all of it
    /// fits now. A batch larger than the capacity could never fit: `Full`
    /// at once, whatever the wait.
    fn send_batch(&mut self, payloads: Vec<u32>, timeout: bool) -> BatchOutcome {
        if self.closed {
            return BatchOutcome::Closed(payloads);
        }
        if payloads.len() > self.config.capacity {
            return BatchOutcome::Full(payloads);
        }
        if payloads.len() > self.free() {
            return match timeout {
                true => BatchOutcome::Timeout(payloads),
                false => BatchOutcome::Full(payloads),
            };
        }
        let mut ids = Vec::new();
        for payload in payloads {
            let id = self.next_id;
            self.next_id += 1;
            ids.push(id);
            self.counters.sent += 1;
            let msg = Msg {
                id,
                payload,
                key: None,
                enqueued_at: self.now,
                receive_count: 0,
                errors: Vec::new(),
                expires_at: None,
                max_receives: None,
            };
            self.ready.push_back((msg, self.now));
        }
        BatchOutcome::Ids(ids)
    }

    /// Leases the front of the ready queue (after processing deadlines).
    fn recv(&mut self) -> Result<(Msg, u64), RecvError> {
        self.tick();
        let allowed = self.may_take(1) > 0;
        allowed
            .then(|| self.take_ready())
            .flatten()
            .ok_or(if self.drained() {
                RecvError::Closed
            } else {
                RecvError::Empty
            })
    }

    /// How many of `want` a receive may take now: none while paused, at
    /// most what the in-flight cap leaves.
    fn may_take(&self, want: usize) -> usize {
        if self.paused {
            return 0;
        }
        match self.max_in_flight {
            Some(max) => want.min(max.saturating_sub(self.in_flight())),
            None => want,
        }
    }

    /// Whether a receive would find something it may take.
    fn can_take(&self) -> bool {
        !self.ready.is_empty() && self.may_take(1) > 0
    }

    /// Closed, and nothing ready, in flight or delayed.
    fn drained(&self) -> bool {
        self.closed && self.held() == 0
    }

    /// The front of the ready queue, received once more (not leased yet).
    fn pop_ready(&mut self) -> Option<Msg> {
        let (mut msg, _) = self.ready.pop_front()?;
        msg.receive_count += 1;
        Some(msg)
    }

    /// A token no lease had before. No lease has token 0: it stands for
    /// the deliveries of a batch split after its lease ran out.
    fn new_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    fn take_ready(&mut self) -> Option<(Msg, u64)> {
        let msg = self.pop_ready()?;
        let token = self.new_token();
        let lease = Lease {
            token,
            deadline: self.now + self.config.visibility,
            msg: msg.clone(),
        };
        self.leases.insert(msg.id, lease);
        Some((msg, token))
    }

    /// Leases up to `max` (at least one) of the front of the ready queue
    /// under one batch lease (after processing deadlines); returns them and
    /// the lease's token.
    fn recv_batch(&mut self, max: usize) -> Result<(Vec<Msg>, u64), RecvError> {
        self.tick();
        let mut msgs = Vec::new();
        let max = self.may_take(max.max(1));
        while msgs.len() < max {
            match self.pop_ready() {
                Some(msg) => msgs.push(msg),
                None => break,
            }
        }
        if msgs.is_empty() {
            return Err(if self.drained() {
                RecvError::Closed
            } else {
                RecvError::Empty
            });
        }
        let token = self.new_token();
        let lease = BatchLease {
            deadline: self.now + self.config.visibility,
            msgs: msgs.clone(),
        };
        self.batches.insert(token, lease);
        Ok((msgs, token))
    }

    /// Settles the batch lease `token` (named by message `first`) whole:
    /// it must still be current (the caller has processed deadlines).
    fn settle_batch(&mut self, first: u64, token: u64, how: Settling) -> SettleOutcome {
        let now = self.now;
        let Some(lease) = self.batches.get_mut(&token).filter(|b| b.deadline > now) else {
            return SettleOutcome::LeaseExpired(first);
        };
        if let Settling::Extend(by) = how {
            lease.deadline = now + by;
            return SettleOutcome::Ok;
        }
        let msgs = self.batches.remove(&token).expect("checked").msgs;
        match how {
            Settling::Ack => self.counters.acked += msgs.len() as u64,
            // In batch order, each with its own backoff: those visible at
            // once join the back of the ready queue in batch order.
            Settling::Release { delay, error } => {
                assert!(error.is_none(), "a batch has no fail()");
                for msg in msgs {
                    self.counters.nacked += 1;
                    self.retry(msg, delay);
                }
            }
            Settling::Reject(_) => unreachable!("a batch has no dead_letter()"),
            Settling::Extend(_) => unreachable!("handled above"),
        }
        SettleOutcome::Ok
    }

    /// Replaces the batch lease `token` by one lease per message with its
    /// deadline, and returns their tokens in batch order; `None` if the
    /// lease is no longer current (nothing changes).
    fn split(&mut self, token: u64) -> Option<Vec<u64>> {
        let now = self.now;
        self.batches.get(&token).filter(|b| b.deadline > now)?;
        let BatchLease { deadline, msgs } = self.batches.remove(&token).expect("checked");
        let tokens = msgs
            .into_iter()
            .map(|msg| {
                let token = self.new_token();
                self.leases.insert(
                    msg.id,
                    Lease {
                        token,
                        deadline,
                        msg,
                    },
                );
                token
            })
            .collect();
        Some(tokens)
    }

    /// Settling needs the current lease and a deadline still ahead (the
    /// caller has processed deadlines).
    fn settle(&mut self, id: u64, token: u64, how: Settling) -> SettleOutcome {
        let now = self.now;
        let Some(lease) = self
            .leases
            .get_mut(&id)
            .filter(|l| l.token == token && l.deadline > now)
        else {
            return SettleOutcome::LeaseExpired(id);
        };
        if let Settling::Extend(by) = how {
            lease.deadline = now + by;
            return SettleOutcome::Ok;
        }
        let mut msg = self.leases.remove(&id).expect("checked").msg;
        match how {
            Settling::Ack => self.counters.acked += 1,
            Settling::Release { delay, error } => {
                msg.errors.extend(error);
                self.counters.nacked += 1;
                self.retry(msg, delay);
            }
            Settling::Reject(reason) => {
                self.bury(msg, DeadLetterReason::Rejected(reason), now);
            }
            Settling::Extend(_) => unreachable!("handled above"),
        }
        SettleOutcome::Ok
    }

    /// `Consumer::ack_batch`: acknowledges each delivery, `(id, token)`,
    /// whose lease is current, skipping the others; returns how many. The
    /// caller has processed deadlines.
    fn ack_many(&mut self, leases: &[(u64, u64)]) -> usize {
        leases
            .iter()
            .filter(|&&(id, token)| self.settle(id, token, Settling::Ack) == SettleOutcome::Ok)
            .count()
    }

    /// One redrive; the caller has processed deadlines.
    fn redrive(&mut self, id: u64, replacement: Option<u32>) -> Result<(), RedriveOutcome> {
        if !self.dead.contains_key(&id) {
            return Err(RedriveOutcome::NotFound(id));
        }
        if self.closed {
            return Err(RedriveOutcome::Closed);
        }
        if self.free() == 0 {
            return Err(RedriveOutcome::Full { redriven: 0 });
        }
        let mut msg = self.dead.remove(&id).expect("checked").msg;
        msg.receive_count = 0;
        msg.errors.clear();
        msg.expires_at = None;
        if let Some(payload) = replacement {
            msg.payload = payload;
        }
        self.counters.redriven += 1;
        self.events.push(Ev::Redriven(id));
        self.ready.push_back((msg, self.now));
        Ok(())
    }

    fn redrive_each(&mut self, ids: Vec<u64>) -> Result<usize, RedriveOutcome> {
        let mut redriven = 0;
        for id in ids {
            match self.redrive(id, None) {
                Ok(()) => redriven += 1,
                Err(RedriveOutcome::NotFound(_)) => {}
                Err(RedriveOutcome::Full { .. }) => {
                    return Err(RedriveOutcome::Full { redriven });
                }
                Err(other) => return Err(other),
            }
        }
        Ok(redriven)
    }

    fn stats(&mut self) -> Stats {
        self.tick();
        let mut stats = Stats::default();
        stats.capacity = self.config.capacity;
        stats.ready = self.ready.len();
        stats.in_flight = self.in_flight();
        stats.delayed = self.delayed.len();
        stats.dead_letters = self.dead.len();
        stats.paused = self.paused;
        stats.oldest_ready_age = self.ready.front().map(|(_, since)| ms(self.now - since));
        let c = &self.counters;
        stats.sent = c.sent;
        stats.duplicates = c.duplicates;
        stats.acked = c.acked;
        stats.nacked = c.nacked;
        stats.expired = c.expired;
        stats.dead_lettered = c.dead_lettered;
        stats.redriven = c.redriven;
        stats.purged = c.purged;
        stats.cancelled = c.cancelled;
        stats
    }

    /// Cancels a message no one holds: ready (keeping the others' order)
    /// or delayed.
    fn cancel(&mut self, id: u64) -> Result<Cancelled, CancelOutcome> {
        self.tick();
        let found = if let Some(at) = self.ready.iter().position(|(m, _)| m.id == id) {
            self.ready.remove(at);
            Cancelled::Ready
        } else if let Some(at) = self.delayed.iter().position(|(_, m)| m.id == id) {
            self.delayed.remove(at);
            Cancelled::Delayed
        } else {
            return Err(CancelOutcome::NotFound(id));
        };
        self.counters.cancelled += 1;
        Ok(found)
    }

    fn letter(&self, letter: &Letter, start: SystemTime) -> LetterView {
        LetterView {
            id: letter.msg.id,
            key: letter.msg.key.clone(),
            payload: letter.msg.payload,
            receive_count: letter.msg.receive_count,
            reason: letter.reason.clone(),
            errors: letter.msg.errors.clone(),
            enqueued_at: start + ms(letter.msg.enqueued_at),
            dead_lettered_at: start + ms(letter.at),
        }
    }

    fn got(msg: &Msg, start: SystemTime) -> Got {
        Got {
            id: msg.id,
            payload: msg.payload,
            key: msg.key.clone(),
            receive_count: msg.receive_count,
            enqueued_at: start + ms(msg.enqueued_at),
        }
    }
}

// ----- the harness: one real queue, one model -----------------------------------

struct Held {
    delivery: Delivery<u32>,
    id: u64,
    token: u64,
}

/// A batch kept whole, with what it showed when received.
struct HeldBatch {
    batch: Batch<u32>,
    /// The model's token for its lease, and the message that names it.
    token: u64,
    first: u64,
    seen: Vec<Got>,
}

/// The model's token for the deliveries of a batch split after its lease
/// ran out: no lease has it, so each of their settles fails.
const NO_LEASE: u64 = 0;

struct Harness {
    clock: ManualClock,
    start: SystemTime,
    queue: Queue<u32>,
    producer: Producer<u32>,
    /// Open consumer handles, each with a lease shard of its own (in turn,
    /// so from the 17th on shared with an earlier one).
    consumers: Vec<Consumer<u32>>,
    dlq: DeadLetters<u32>,
    /// Deliveries not yet settled, including ones whose lease ran out.
    held: Vec<Held>,
    /// Batches kept whole and not yet settled or split, likewise.
    batches: Vec<HeldBatch>,
    /// Every id the queue handed out.
    ids: BTreeMap<u64, MessageId>,
    model: Model,
    /// What the event hook was called with, not yet compared.
    events: Arc<Mutex<Vec<Ev>>>,
    next_payload: u32,
    next_text: u32,
    /// Steps run so far.
    steps: usize,
}

impl Harness {
    fn new(config: Config) -> Self {
        let clock = ManualClock::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&events);
        let queue = Queue::builder()
            .capacity(config.capacity)
            .max_receives(config.max_receives)
            .visibility_timeout(ms(config.visibility))
            .dedup_window(ms(config.dedup_window))
            .backoff(config.backoff.policy())
            .clock(clock.clone())
            .jitter_seed(7)
            .on_event(move |event| hook.lock().expect("hook").push(ev(event)))
            .open()
            .expect("valid configuration");
        // Half opened from the queue, half cloned: each is a handle of its
        // own either way.
        let mut consumers: Vec<Consumer<u32>> = Vec::new();
        for i in 0..config.consumers.max(1) {
            consumers.push(match i % 2 {
                0 => queue.consumer(),
                _ => consumers[i - 1].clone(),
            });
        }
        Harness {
            start: spool::Clock::now(&clock),
            clock,
            producer: queue.producer(),
            consumers,
            dlq: queue.dead_letters(),
            queue,
            held: Vec::new(),
            batches: Vec::new(),
            ids: BTreeMap::new(),
            model: Model::new(config),
            events,
            next_payload: 1_000,
            next_text: 0,
            steps: 0,
        }
    }

    fn fresh_payload(&mut self) -> u32 {
        self.next_payload += 1;
        self.next_payload
    }

    fn fresh_text(&mut self, what: &str) -> String {
        self.next_text += 1;
        format!("{what} {}", self.next_text)
    }

    fn remember(&mut self, id: MessageId) {
        self.ids.insert(id.get(), id);
    }

    fn apply(&mut self, op: &Op, step: &str) {
        match *op {
            Op::Send { wait } => {
                let payload = self.fresh_payload();
                self.send(payload, None, 0, wait, step);
            }
            Op::SendKeyed {
                key,
                variant,
                delay,
                blocking,
            } => {
                let payload = 100 * u32::from(key) + u32::from(variant);
                let wait = if blocking { Wait::Blocking } else { Wait::Try };
                self.send(payload, Some(format!("key-{key}")), delay, wait, step);
            }
            Op::SendDelayed { delay, blocking } => {
                let payload = self.fresh_payload();
                let wait = if blocking { Wait::Blocking } else { Wait::Try };
                self.send(payload, None, delay, wait, step);
            }
            Op::SendLimited {
                ttl,
                max_receives,
                delay,
            } => {
                let payload = self.fresh_payload();
                let limits = Limits { ttl, max_receives };
                self.send_limited(payload, None, delay, limits, Wait::Try, step);
            }
            Op::Cancel { which, by_key } => self.cancel(which, by_key, step),
            Op::RemoveDead { which, from_dlq } => self.remove_dead(which, from_dlq, step),
            Op::SendBatch { len, wait } => {
                self.model.tick();
                let len = match len {
                    BatchLen::Exact(len) => len,
                    BatchLen::Room(plus) => self.model.free().saturating_add_signed(plus.into()),
                    BatchLen::Capacity(plus) => self
                        .model
                        .config
                        .capacity
                        .saturating_add_signed(plus.into()),
                };
                self.send_batch(len, wait, step);
            }
            Op::Recv { wait, via } => self.recv(wait, via, step),
            Op::RecvBatch {
                max,
                hold,
                wait,
                via,
            } => self.recv_batch(max, hold, wait, via, step),
            Op::AckMany { via, ref picks } => self.ack_many(via, picks, step),
            Op::AddConsumer { clone_of } => {
                if self.consumers.len() < MAX_CONSUMERS {
                    let consumer = match clone_of {
                        Some(i) => self.consumers[i % self.consumers.len()].clone(),
                        None => self.queue.consumer(),
                    };
                    self.consumers.push(consumer);
                }
            }
            Op::DropConsumer { which } => {
                if self.consumers.len() > 1 {
                    let which = which % self.consumers.len();
                    drop(self.consumers.remove(which));
                }
            }
            Op::Settle { which, how } => self.settle(which, how, step),
            Op::SettleBatch { which, how } => self.settle_batch(which, how, step),
            Op::Advance(advance) => self.advance(advance),
            Op::AdvanceThen(advance, ref then) => {
                self.advance(advance);
                self.apply(then, step);
            }
            Op::Inspect { which } => self.inspect(which, step),
            Op::Redrive { which, from_dlq } => self.redrive(which, from_dlq, false, step),
            Op::RedriveWith { which, from_dlq } => self.redrive(which, from_dlq, true, step),
            Op::RedriveAll => {
                self.model.tick();
                let ids = self.model.dead.keys().copied().collect();
                let expected = self.model.redrive_each(ids);
                let real = redrive_outcome(self.dlq.redrive_all());
                assert_eq!(real, expected, "{step}: redrive_all");
            }
            Op::RedriveWhere(select) => {
                self.model.tick();
                let snapshot: Vec<u64> = self.model.dead.keys().copied().collect();
                let chosen = self
                    .model
                    .dead
                    .values()
                    .filter(|l| select.matches(l.msg.id, &l.reason, &l.msg.errors))
                    .map(|l| l.msg.id)
                    .collect();
                let expected = self.model.redrive_each(chosen);
                let mut seen = Vec::new();
                let real = redrive_outcome(self.dlq.redrive_where(|letter| {
                    seen.push(letter.id().get());
                    select.matches(letter.id().get(), letter.reason(), letter.errors())
                }));
                assert_eq!(seen, snapshot, "{step}: letters shown to the predicate");
                assert_eq!(real, expected, "{step}: redrive_where");
            }
            Op::Purge => {
                self.model.tick();
                let expected = self.model.dead.len();
                self.model.dead.clear();
                self.model.counters.purged += expected as u64;
                assert_eq!(self.dlq.purge(), Ok(expected), "{step}: purge");
            }
            Op::Close => {
                self.model.closed = true;
                self.queue.close();
            }
            Op::Pause(paused) => {
                self.model.paused = paused;
                let done = match paused {
                    true => self.queue.pause(),
                    false => self.queue.resume(),
                };
                assert_eq!(done, Ok(()), "{step}: pause");
            }
            Op::MaxInFlight(max) => {
                self.model.max_in_flight = max;
                assert_eq!(self.queue.set_max_in_flight(max), Ok(()), "{step}");
            }
            Op::Peek(n) => {
                self.model.tick();
                let expected: Vec<(u64, u32, u32)> = (self.model.ready.iter().take(n))
                    .map(|(m, _)| (m.id, m.payload, m.receive_count))
                    .collect();
                let real: Vec<(u64, u32, u32)> = (self.queue.peek(n).into_iter())
                    .map(|p| (p.id.get(), p.message, p.receive_count))
                    .collect();
                assert_eq!(real, expected, "{step}: peek");
            }
        }
    }

    fn send(&mut self, payload: u32, key: Option<String>, delay: u64, wait: Wait, step: &str) {
        self.send_limited(payload, key, delay, Limits::default(), wait, step);
    }

    fn send_limited(
        &mut self,
        payload: u32,
        key: Option<String>,
        delay: u64,
        limits: Limits,
        wait: Wait,
        step: &str,
    ) {
        self.model.tick(); // every operation processes what is due first
        let wait = match wait {
            Wait::Blocking if self.model.send_would_block(key.as_deref()) => Wait::Try,
            other => other,
        };
        let mut expected = self.model.send(payload, key.as_deref(), delay, limits);
        if let (true, SendOutcome::Full(m)) = (wait.times_out(), &expected) {
            expected = SendOutcome::Timeout(*m);
        }
        let plain = limits.ttl.is_none() && limits.max_receives.is_none();
        let real = if key.is_none() && delay == 0 && plain {
            let real = match wait {
                Wait::Blocking => self.producer.send(payload),
                Wait::Try => self.producer.try_send(payload),
                Wait::ZeroTimeout => self.producer.send_timeout(payload, Duration::ZERO),
                Wait::TinyTimeout => self.producer.send_timeout(payload, TINY),
            };
            real.map(Sent::Enqueued)
        } else {
            let mut options = SendOptions::new().delay(ms(delay));
            if let Some(key) = key {
                options = options.key(key);
            }
            if let Some(ttl) = limits.ttl {
                options = options.ttl(ms(ttl));
            }
            if let Some(max) = limits.max_receives {
                options = options.max_receives(max);
            }
            match wait {
                Wait::Blocking => self.producer.send_with(payload, options),
                _ => self.producer.try_send_with(payload, options),
            }
        };
        if let Ok(sent) = real {
            self.remember(sent.id());
        }
        assert_eq!(send_outcome(real), expected, "{step}: send result");
    }

    fn send_batch(&mut self, len: usize, wait: Wait, step: &str) {
        self.model.tick();
        let wait = match wait {
            Wait::Blocking if self.model.batch_would_block(len) => Wait::Try,
            other => other,
        };
        let payloads: Vec<u32> = (0..len).map(|_| self.fresh_payload()).collect();
        let expected = self.model.send_batch(payloads.clone(), wait.times_out());
        let real = match wait {
            Wait::Blocking => self.producer.send_batch(payloads),
            Wait::Try => self.producer.try_send_batch(payloads),
            Wait::ZeroTimeout => self.producer.send_batch_timeout(payloads, Duration::ZERO),
            Wait::TinyTimeout => self.producer.send_batch_timeout(payloads, TINY),
        };
        if let Ok(ids) = &real {
            for id in ids {
                self.remember(*id);
            }
        }
        assert_eq!(
            batch_outcome(real),
            expected,
            "{step}: send_batch of {len} result"
        );
    }

    fn consumer(&self, via: usize) -> &Consumer<u32> {
        &self.consumers[via % self.consumers.len()]
    }

    fn recv(&mut self, wait: Wait, via: usize, step: &str) {
        // Both sides process what is due before looking, so the model may
        // do it first to tell whether `recv` would block.
        self.model.tick();
        let would_block = !self.model.can_take() && !self.model.drained();
        let expected = match (self.model.recv(), wait.times_out()) {
            (Err(RecvError::Empty), true) => Err(RecvError::Timeout),
            (other, _) => other,
        };
        let consumer = self.consumer(via);
        let real = match wait {
            Wait::Blocking if !would_block => consumer.recv(),
            Wait::Blocking | Wait::Try => consumer.try_recv(),
            Wait::ZeroTimeout => consumer.recv_timeout(Duration::ZERO),
            Wait::TinyTimeout => consumer.recv_timeout(TINY),
        };
        self.compare_deliveries(real.map(|d| vec![d]), expected.map(|e| vec![e]), step);
    }

    fn recv_batch(&mut self, max: usize, hold: bool, wait: Wait, via: usize, step: &str) {
        self.model.tick();
        let would_block = !self.model.can_take() && !self.model.drained();
        let timeout = match wait {
            // As good as for ever (no deadline at all).
            Wait::Blocking if !would_block => Duration::MAX,
            Wait::Blocking | Wait::Try | Wait::ZeroTimeout => Duration::ZERO,
            Wait::TinyTimeout => TINY,
        };
        let expected = match self.model.recv_batch(max) {
            // The wait runs out at once (there is no `try_recv_batch`).
            Err(RecvError::Empty) => Err(RecvError::Timeout),
            other => other,
        };
        let real = self.consumer(via).recv_batch(max, timeout);
        let real_view = real.as_ref().map(batch_view).map_err(Clone::clone);
        let expected_view = expected.as_ref().map_err(Clone::clone).map(|(msgs, _)| {
            msgs.iter()
                .map(|m| Model::got(m, self.start))
                .collect::<Vec<_>>()
        });
        assert_eq!(real_view, expected_view, "{step}: received batch");
        let (Ok(batch), Ok((msgs, token)), Ok(seen)) = (real, expected, expected_view) else {
            return;
        };
        for message in batch.messages() {
            self.remember(message.id());
        }
        let held = HeldBatch {
            batch,
            token,
            first: msgs[0].id,
            seen,
        };
        if hold {
            self.batches.push(held);
        } else {
            self.split(held, step);
        }
    }

    /// `into_deliveries`; the caller has processed deadlines. The
    /// deliveries show what the batch showed, whether or not its lease is
    /// still current, and join the held ones.
    fn split(&mut self, held: HeldBatch, step: &str) {
        let HeldBatch {
            batch,
            token,
            first,
            seen,
        } = held;
        let tokens = self.model.split(token);
        let deliveries = batch.into_deliveries();
        let view: Vec<Got> = deliveries.iter().map(got).collect();
        assert_eq!(view, seen, "{step}: split of batch #{first}");
        let tokens = tokens.unwrap_or_else(|| vec![NO_LEASE; deliveries.len()]);
        for (delivery, token) in deliveries.into_iter().zip(tokens) {
            let id = delivery.id().get();
            self.held.push(Held {
                delivery,
                id,
                token,
            });
        }
    }

    fn settle_batch(&mut self, which: usize, how: SettleBatch, step: &str) {
        if self.batches.is_empty() {
            return;
        }
        self.model.tick();
        let index = which % self.batches.len();
        if let SettleBatch::Extend(by) = how {
            let HeldBatch { first, token, .. } = self.batches[index];
            let expected = self.model.settle_batch(first, token, Settling::Extend(by));
            let real = self.batches[index].batch.extend(ms(by));
            assert_eq!(
                settle_outcome(real),
                expected,
                "{step}: extend batch #{first}"
            );
            return;
        }
        let held = self.batches.remove(index);
        let (first, token) = (held.first, held.token);
        let release = |delay| Settling::Release { delay, error: None };
        let (settling, real) = match how {
            SettleBatch::Ack => (Settling::Ack, held.batch.ack()),
            SettleBatch::Nack => (release(None), held.batch.nack()),
            SettleBatch::RetryAfter(d) => (release(Some(d)), held.batch.retry_after(ms(d))),
            SettleBatch::Drop => {
                drop(held);
                // Dropping is a nack that reports nothing.
                let _ = self.model.settle_batch(first, token, release(None));
                return;
            }
            SettleBatch::Split => return self.split(held, step),
            SettleBatch::Extend(_) => unreachable!("handled above"),
        };
        let expected = self.model.settle_batch(first, token, settling);
        assert_eq!(
            settle_outcome(real),
            expected,
            "{step}: {how:?} batch #{first}"
        );
    }

    fn compare_deliveries(
        &mut self,
        real: Result<Vec<Delivery<u32>>, RecvError>,
        expected: Result<Vec<(Msg, u64)>, RecvError>,
        step: &str,
    ) {
        let real_view = real
            .as_ref()
            .map(|ds| ds.iter().map(got).collect::<Vec<_>>());
        let expected_view = expected.as_ref().map(|ms| {
            ms.iter()
                .map(|(m, _)| Model::got(m, self.start))
                .collect::<Vec<_>>()
        });
        assert_eq!(real_view, expected_view, "{step}: received");
        if let (Ok(deliveries), Ok(expected)) = (real, expected) {
            for (delivery, (msg, token)) in deliveries.into_iter().zip(expected) {
                self.remember(delivery.id());
                self.held.push(Held {
                    delivery,
                    id: msg.id,
                    token,
                });
            }
        }
    }

    /// `ack_batch` through handle `via` of the picked held deliveries.
    fn ack_many(&mut self, via: usize, picks: &Picks, step: &str) {
        self.model.tick();
        let picked: Vec<Held> = match picks {
            Picks::All => std::mem::take(&mut self.held),
            Picks::Some(which) => {
                let mut picked = Vec::new();
                for &which in which {
                    if self.held.is_empty() {
                        break;
                    }
                    picked.push(self.held.remove(which % self.held.len()));
                }
                picked
            }
        };
        let leases: Vec<(u64, u64)> = picked.iter().map(|h| (h.id, h.token)).collect();
        let expected = self.model.ack_many(&leases);
        let real = self
            .consumer(via)
            .ack_batch(picked.into_iter().map(|h| h.delivery));
        assert_eq!(real, Ok(expected), "{step}: ack_batch of {leases:?}");
    }

    fn settle(&mut self, which: usize, how: Settle, step: &str) {
        if self.held.is_empty() {
            return;
        }
        self.model.tick();
        let index = which % self.held.len();
        if let Settle::Extend(by) = how {
            let Held { id, token, .. } = self.held[index];
            let expected = self.model.settle(id, token, Settling::Extend(by));
            let real = self.held[index].delivery.extend(ms(by));
            assert_eq!(settle_outcome(real), expected, "{step}: extend #{id}");
            return;
        }
        let Held {
            delivery,
            id,
            token,
        } = self.held.remove(index);
        let (settling, real) = match how {
            Settle::Ack => (Settling::Ack, delivery.ack()),
            Settle::Nack => (
                Settling::Release {
                    delay: None,
                    error: None,
                },
                delivery.nack(),
            ),
            Settle::Fail => {
                let text = self.fresh_text("error");
                let settling = Settling::Release {
                    delay: None,
                    error: Some(text.clone()),
                };
                (settling, delivery.fail(text))
            }
            Settle::RetryAfter(d) => (
                Settling::Release {
                    delay: Some(d),
                    error: None,
                },
                delivery.retry_after(ms(d)),
            ),
            Settle::DeadLetter => {
                let reason = self.fresh_text("reason");
                (
                    Settling::Reject(reason.clone()),
                    delivery.dead_letter(reason),
                )
            }
            Settle::Drop => {
                drop(delivery);
                // Dropping is a nack that reports nothing.
                let settling = Settling::Release {
                    delay: None,
                    error: None,
                };
                let _ = self.model.settle(id, token, settling);
                return;
            }
            Settle::Extend(_) => unreachable!("handled above"),
        };
        let expected = self.model.settle(id, token, settling);
        assert_eq!(settle_outcome(real), expected, "{step}: {how:?} #{id}");
    }

    fn advance(&mut self, advance: Advance) {
        let by = match advance {
            Advance::By(by) => by,
            Advance::ToDeadline(offset) => match self.model.next_deadline() {
                Some(at) => at
                    .saturating_add_signed(i64::from(offset))
                    .saturating_sub(self.model.now),
                None => 1,
            },
        };
        self.model.now += by;
        self.clock.advance(ms(by));
    }

    fn inspect(&mut self, which: usize, step: &str) {
        self.model.tick();
        let len = self.model.dead.len();
        assert_eq!(self.dlq.len(), len, "{step}: dead_letters().len()");
        assert_eq!(self.dlq.is_empty(), len == 0, "{step}: is_empty()");
        if self.ids.is_empty() {
            return;
        }
        let id = *self
            .ids
            .values()
            .nth(which % self.ids.len())
            .expect("index");
        let expected = self
            .model
            .dead
            .get(&id.get())
            .map(|l| self.model.letter(l, self.start));
        let real = self.dlq.get(id).as_ref().map(letter_view);
        assert_eq!(real, expected, "{step}: get({id})");
    }

    fn redrive(&mut self, which: usize, from_dlq: bool, fix: bool, step: &str) {
        self.model.tick();
        let id = if from_dlq {
            let dead: Vec<u64> = self.model.dead.keys().copied().collect();
            if dead.is_empty() {
                return;
            }
            self.ids[&dead[which % dead.len()]]
        } else {
            if self.ids.is_empty() {
                return;
            }
            *self
                .ids
                .values()
                .nth(which % self.ids.len())
                .expect("index")
        };
        let replacement = fix.then(|| self.fresh_payload());
        let expected = self.model.redrive(id.get(), replacement);
        let real = match replacement {
            Some(payload) => self.dlq.redrive_with(id, payload),
            None => self.dlq.redrive(id),
        };
        assert_eq!(redrive_outcome(real), expected, "{step}: redrive {id}");
    }

    fn cancel(&mut self, which: usize, by_key: bool, step: &str) {
        self.model.tick();
        if by_key {
            let key = format!("key-{}", which % 4); // key-3 is never sent
            let expected = match self.model.live_key(&key).map(|seen| seen.id) {
                Some(id) => self.model.cancel(id).map(|found| (id, found)),
                None => Err(CancelOutcome::UnknownKey(key.clone())),
            };
            let real = cancel_outcome(self.queue.cancel_key(&key));
            let real = real.map(|(id, found)| (id.get(), found));
            assert_eq!(real, expected, "{step}: cancel_key {key}");
            return;
        }
        if self.ids.is_empty() {
            return;
        }
        let id = *self
            .ids
            .values()
            .nth(which % self.ids.len())
            .expect("index");
        let expected = self.model.cancel(id.get());
        let real = cancel_outcome(self.queue.cancel(id));
        assert_eq!(real, expected, "{step}: cancel {id}");
    }

    fn remove_dead(&mut self, which: usize, from_dlq: bool, step: &str) {
        self.model.tick();
        let id = if from_dlq {
            let dead: Vec<u64> = self.model.dead.keys().copied().collect();
            if dead.is_empty() {
                return;
            }
            self.ids[&dead[which % dead.len()]]
        } else {
            if self.ids.is_empty() {
                return;
            }
            *self
                .ids
                .values()
                .nth(which % self.ids.len())
                .expect("index")
        };
        let expected = self.model.dead.remove(&id.get()).map(|letter| {
            self.model.counters.purged += 1;
            self.model.letter(&letter, self.start)
        });
        let real = self.dlq.remove(id).expect("in memory");
        assert_eq!(
            real.as_ref().map(letter_view),
            expected,
            "{step}: remove {id}"
        );
    }

    /// Compares everything observable without changing anything (beyond
    /// processing what is due, which both sides do here).
    fn check(&mut self, step: &str) {
        let expected = self.model.stats();
        assert_eq!(self.queue.stats(), expected, "{step}: stats");
        let expected: Vec<LetterView> = self
            .model
            .dead
            .values()
            .map(|l| self.model.letter(l, self.start))
            .collect();
        let real: Vec<LetterView> = self.dlq.list().iter().map(letter_view).collect();
        assert_eq!(real, expected, "{step}: dead-letter list");
        let real = std::mem::take(&mut *self.events.lock().expect("hook"));
        let expected = std::mem::take(&mut self.model.events);
        assert_eq!(real, expected, "{step}: events");
        assert_eq!(
            self.queue.is_closed(),
            self.model.closed,
            "{step}: is_closed"
        );
        assert_eq!(
            self.producer.is_closed(),
            self.model.closed,
            "{step}: producer.is_closed"
        );
        assert_eq!(
            spool::Clock::now(&self.clock),
            self.start + ms(self.model.now),
            "{step}: clock"
        );
    }
}

fn run(config: Config, ops: &[Op]) -> Harness {
    let mut harness = Harness::new(config);
    harness.check("before any step");
    harness.run(ops);
    harness
}

impl Harness {
    /// Applies `ops` in turn, checking everything after each.
    fn run(&mut self, ops: &[Op]) {
        for op in ops {
            let step = format!("step {} ({op:?}) at t={}ms", self.steps, self.model.now);
            self.steps += 1;
            self.apply(op, &step);
            self.check(&step);
        }
    }
}

// ----- strategies ----------------------------------------------------------------

fn config_strategy() -> impl Strategy<Value = Config> {
    let backoff = prop_oneof![
        Just(ModelBackoff::None),
        Just(ModelBackoff::Fixed(0)),
        Just(ModelBackoff::Fixed(3)),
        // Doubling, and the cap (2, then 4 capped at 3).
        Just(ModelBackoff::Exponential {
            initial: 1,
            max: 10
        }),
        Just(ModelBackoff::Exponential { initial: 2, max: 3 }),
    ];
    (
        // Mostly small, so that the queue is often full; sometimes room
        // for batches of 10 to 30 and more.
        prop_oneof![2 => 1usize..=2, 8 => 3usize..=6, 4 => 10usize..=40],
        1u32..=3,
        prop_oneof![Just(4u64), Just(10)],
        prop_oneof![Just(6u64), Just(25)],
        backoff,
        // A few handles, each in a shard of its own; or more than there
        // are shards, so that some share one.
        prop_oneof![4 => 1usize..=3, 1 => 16usize..=18],
    )
        .prop_map(
            |(capacity, max_receives, visibility, dedup_window, backoff, consumers)| Config {
                capacity,
                max_receives,
                visibility,
                dedup_window,
                backoff,
                consumers,
            },
        )
}

fn delay_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(3), Just(5), Just(12)]
}

fn advance_strategy() -> impl Strategy<Value = Advance> {
    prop_oneof![
        3 => prop_oneof![Just(0u64), Just(1), Just(2), Just(3), Just(5), Just(10), Just(30)]
            .prop_map(Advance::By),
        2 => (-1i8..=1).prop_map(Advance::ToDeadline),
    ]
}

fn settle_strategy() -> impl Strategy<Value = Settle> {
    prop_oneof![
        3 => Just(Settle::Ack),
        2 => Just(Settle::Nack),
        3 => Just(Settle::Fail),
        2 => delay_strategy().prop_map(Settle::RetryAfter),
        2 => prop_oneof![Just(0u64), Just(1), Just(4), Just(15)].prop_map(Settle::Extend),
        1 => Just(Settle::DeadLetter),
        1 => Just(Settle::Drop),
    ]
}

fn settle_batch_strategy() -> impl Strategy<Value = SettleBatch> {
    prop_oneof![
        3 => Just(SettleBatch::Ack),
        2 => Just(SettleBatch::Nack),
        2 => delay_strategy().prop_map(SettleBatch::RetryAfter),
        2 => prop_oneof![Just(0u64), Just(1), Just(4), Just(15)].prop_map(SettleBatch::Extend),
        1 => Just(SettleBatch::Drop),
        3 => Just(SettleBatch::Split),
    ]
}

fn wait_strategy() -> impl Strategy<Value = Wait> {
    prop_oneof![
        3 => Just(Wait::Blocking),
        3 => Just(Wait::Try),
        2 => Just(Wait::ZeroTimeout),
        1 => Just(Wait::TinyTimeout),
    ]
}

/// A capacity from which a case is a bulk one: more batches, and larger.
const BULK_CAPACITY: usize = 10;

/// A batch's length or a receive's `max`: mostly a few, sometimes 8 to 32
/// (beyond a small queue's capacity: refused whole, or all that is ready);
/// in a bulk case, 8 to 32 as often as 2 to 7.
fn batch_len_strategy(bulk: bool) -> impl Strategy<Value = usize> {
    let large = if bulk { 6 } else { 3 };
    prop_oneof![1 => 0usize..=1, 6 => 2usize..=7, large => 8usize..=32]
}

/// A batch send's length, fixed or as large as the queue allows (give or
/// take one).
fn send_batch_len_strategy(bulk: bool) -> impl Strategy<Value = BatchLen> {
    prop_oneof![
        4 => batch_len_strategy(bulk).prop_map(BatchLen::Exact),
        3 => (-2i8..=1).prop_map(BatchLen::Room),
        1 => (-1i8..=1).prop_map(BatchLen::Capacity),
    ]
}

fn send_strategy(bulk: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => wait_strategy().prop_map(|wait| Op::Send { wait }),
        3 => (0u8..3, 0u8..2, prop_oneof![3 => Just(0u64), 1 => delay_strategy()], any::<bool>())
            .prop_map(|(key, variant, delay, blocking)| Op::SendKeyed {
                key,
                variant,
                delay,
                blocking,
            }),
        1 => (delay_strategy(), any::<bool>())
            .prop_map(|(delay, blocking)| Op::SendDelayed { delay, blocking }),
        2 => (
            prop_oneof![1 => Just(None), 3 => delay_strategy().prop_map(Some)],
            prop_oneof![3 => Just(None), 1 => (1u32..=4).prop_map(Some)],
            prop_oneof![3 => Just(0u64), 1 => delay_strategy()],
        )
            .prop_map(|(ttl, max_receives, delay)| Op::SendLimited {
                ttl,
                max_receives,
                delay,
            }),
        if bulk { 8 } else { 3 } => (send_batch_len_strategy(bulk), wait_strategy())
            .prop_map(|(len, wait)| Op::SendBatch { len, wait }),
    ]
}

fn ack_many_strategy() -> impl Strategy<Value = Op> {
    let picks = prop_oneof![
        3 => proptest::collection::vec(any::<usize>(), 0..=6).prop_map(Picks::Some),
        1 => Just(Picks::All),
    ];
    (any::<usize>(), picks).prop_map(|(via, picks)| Op::AckMany { via, picks })
}

/// Operations that follow a clock jump before anything is checked.
fn lazy_op_strategy(bulk: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => send_strategy(bulk),
        20 => (any::<usize>(), settle_strategy()).prop_map(|(which, how)| Op::Settle { which, how }),
        8 => (any::<usize>(), settle_batch_strategy())
            .prop_map(|(which, how)| Op::SettleBatch { which, how }),
        6 => ack_many_strategy(),
        1 => Just(Op::Close),
    ]
}

/// The operations of a case; `bulk` for a large queue (see
/// [`BULK_CAPACITY`]).
fn op_strategy(bulk: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => send_strategy(bulk),
        if bulk { 24 } else { 32 } => (wait_strategy(), any::<usize>())
            .prop_map(|(wait, via)| Op::Recv { wait, via }),
        4 => (0usize..=3, wait_strategy(), any::<usize>()).prop_map(|(max, wait, via)| {
            Op::RecvBatch {
                max,
                hold: false,
                wait,
                via,
            }
        }),
        if bulk { 20 } else { 10 } => (batch_len_strategy(bulk), wait_strategy(), any::<usize>()).prop_map(
            |(max, wait, via)| Op::RecvBatch {
                max,
                hold: true,
                wait,
                via,
            }
        ),
        8 => ack_many_strategy(),
        2 => prop_oneof![Just(None), any::<usize>().prop_map(Some)]
            .prop_map(|clone_of| Op::AddConsumer { clone_of }),
        1 => any::<usize>().prop_map(|which| Op::DropConsumer { which }),
        48 => (any::<usize>(), settle_strategy()).prop_map(|(which, how)| Op::Settle { which, how }),
        14 => (any::<usize>(), settle_batch_strategy())
            .prop_map(|(which, how)| Op::SettleBatch { which, how }),
        24 => advance_strategy().prop_map(Op::Advance),
        8 => (advance_strategy(), lazy_op_strategy(bulk))
            .prop_map(|(advance, then)| Op::AdvanceThen(advance, Box::new(then))),
        4 => any::<usize>().prop_map(|which| Op::Inspect { which }),
        8 => (any::<usize>(), prop_oneof![3 => Just(true), 1 => Just(false)])
            .prop_map(|(which, from_dlq)| Op::Redrive { which, from_dlq }),
        4 => (any::<usize>(), any::<bool>())
            .prop_map(|(which, from_dlq)| Op::RedriveWith { which, from_dlq }),
        4 => Just(Op::RedriveAll),
        4 => prop_oneof![
            Just(Select::OddIds),
            Just(Select::MaxReceives),
            Just(Select::Rejected),
            Just(Select::WithErrors),
        ]
        .prop_map(Op::RedriveWhere),
        2 => Just(Op::Purge),
        4 => (any::<usize>(), any::<bool>())
            .prop_map(|(which, by_key)| Op::Cancel { which, by_key }),
        2 => (any::<usize>(), any::<bool>())
            .prop_map(|(which, from_dlq)| Op::RemoveDead { which, from_dlq }),
        1 => Just(Op::Close),
        2 => any::<bool>().prop_map(Op::Pause),
        1 => prop_oneof![Just(None), (1usize..=4).prop_map(Some)].prop_map(Op::MaxInFlight),
        2 => (0usize..=6).prop_map(Op::Peek),
    ]
}

/// Sequences are short enough that a thousand of them take well under a
/// second; `PROPTEST_CASES` overrides the count.
const DEFAULT_CASES: u32 = 1024;
const MAX_STEPS: usize = 80;
/// Most consumer handles open at once.
const MAX_CONSUMERS: usize = 20;

fn proptest_config() -> ProptestConfig {
    let mut config = ProptestConfig {
        // Failures are kept as named regression tests below, not in a file.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    config
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn queue_matches_the_model(
        (config, ops) in config_strategy().prop_flat_map(|config| {
            let bulk = config.capacity >= BULK_CAPACITY;
            let ops = proptest::collection::vec(op_strategy(bulk), 1..MAX_STEPS);
            (Just(config), ops)
        }),
    ) {
        run(config, &ops);
    }
}

// ----- regression tests and fixed scenarios --------------------------------------

const SMALL: Config = Config {
    capacity: 4,
    max_receives: 2,
    visibility: 10,
    dedup_window: 25,
    backoff: ModelBackoff::None,
    consumers: 1,
};

fn send() -> Op {
    Op::Send { wait: Wait::Try }
}

fn recv() -> Op {
    Op::Recv {
        wait: Wait::Try,
        via: 0,
    }
}

fn settle(which: usize, how: Settle) -> Op {
    Op::Settle { which, how }
}

/// Receives up to `max` as a batch kept whole.
fn hold_batch(max: usize) -> Op {
    Op::RecvBatch {
        max,
        hold: true,
        wait: Wait::ZeroTimeout,
        via: 0,
    }
}

/// Settles the first held batch.
fn settle_batch(how: SettleBatch) -> Op {
    Op::SettleBatch { which: 0, how }
}

fn after(advance: Advance, op: Op) -> Op {
    Op::AdvanceThen(advance, Box::new(op))
}

impl Model {
    fn ready_ids(&self) -> Vec<u64> {
        self.ready.iter().map(|(msg, _)| msg.id).collect()
    }
}

/// A lease that ran out but was not yet processed when another delivery was
/// released: the release processes it first, so it goes first.
#[test]
fn an_expiry_not_yet_processed_orders_before_a_later_release() {
    let mut harness = run(
        SMALL,
        &[
            send(),
            send(),
            recv(),
            Op::Advance(Advance::By(5)),
            recv(),
            after(Advance::By(5), settle(1, Settle::Nack)),
        ],
    );
    assert_eq!(harness.model.ready_ids(), [1, 2]);
    harness.run(&[recv(), recv()]);
}

/// Enough room, receives and no backoff for batches to come and go.
const ROOMY: Config = Config {
    capacity: 6,
    max_receives: 3,
    visibility: 10,
    dedup_window: 25,
    backoff: ModelBackoff::None,
    consumers: 1,
};

/// Messages 2, 3, 1 at the front of the ready queue, in that order (1 was
/// received and released), and 4 sent after; 2, 3, 1 then held as one batch.
fn batch_out_of_id_order() -> Vec<Op> {
    vec![
        send(),
        send(),
        send(),
        recv(),
        settle(0, Settle::Nack),
        // With a backoff, 1 comes back after it.
        Op::Advance(Advance::By(5)),
        hold_batch(3),
        send(),
    ]
}

/// A batch released whole joins the back of the ready queue in batch order,
/// after what was sent meanwhile; each message keeps its receive count.
#[test]
fn a_released_batch_goes_to_the_back_in_batch_order() {
    for how in [
        SettleBatch::Nack,
        SettleBatch::Drop,
        SettleBatch::RetryAfter(0),
    ] {
        let mut harness = run(ROOMY, &batch_out_of_id_order());
        harness.run(&[settle_batch(how)]);
        assert_eq!(harness.model.ready_ids(), [4, 2, 3, 1], "{how:?}");
        assert_eq!(harness.model.counters.nacked, 1 + 3, "{how:?}");
        harness.run(&[recv(), recv(), recv(), recv()]);
    }
}

/// A batch whose lease runs out comes back as every expiry does: in order
/// of the instant each message is visible again, then of id, whatever the
/// batch order.
#[test]
fn an_expired_batch_comes_back_by_due_time_then_id() {
    // No backoff: all visible at the deadline, so in id order.
    let mut harness = run(ROOMY, &batch_out_of_id_order());
    harness.run(&[Op::Advance(Advance::By(10))]);
    assert_eq!(harness.model.ready_ids(), [4, 1, 2, 3]);
    assert_eq!(harness.model.counters.expired, 3);
    harness.run(&[hold_batch(4)]);

    // Backoff by receive count: 2 and 3 (first receive) are back 1 ms after
    // the deadline, 1 (second receive) 2 ms after.
    let backoff = ModelBackoff::Exponential {
        initial: 1,
        max: 10,
    };
    let config = Config { backoff, ..ROOMY };
    let mut harness = run(config, &batch_out_of_id_order());
    harness.run(&[Op::Advance(Advance::By(30))]);
    assert_eq!(harness.model.ready_ids(), [4, 2, 3, 1]);
    harness.run(&[hold_batch(4)]);
}

/// A batch on its last allowed receive is dead-lettered whole, message by
/// message, when released (now) or when its lease runs out (as of then).
#[test]
fn a_batch_on_its_last_receive_is_dead_lettered() {
    let config = Config {
        max_receives: 1,
        ..ROOMY
    };
    let harness = run(
        config,
        &[
            send(),
            send(),
            hold_batch(2),
            settle_batch(SettleBatch::Nack),
        ],
    );
    assert_eq!(
        harness.model.dead.keys().copied().collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(harness.model.counters.nacked, 2);

    let harness = run(
        config,
        &[
            send(),
            send(),
            hold_batch(2),
            Op::Advance(Advance::By(30)),
            settle_batch(SettleBatch::Ack),
        ],
    );
    assert_eq!(harness.model.dead.len(), 2);
    assert_eq!(harness.model.counters.expired, 2);
    assert_eq!(harness.model.counters.acked, 0);
}

/// `extend` moves the one deadline of the batch; at that deadline, settling
/// the batch fails naming its first message, and changes nothing.
#[test]
fn an_extended_batch_runs_out_at_its_new_deadline() {
    let harness = run(
        ROOMY,
        &[
            send(),
            send(),
            hold_batch(2),
            Op::Advance(Advance::By(5)),
            settle_batch(SettleBatch::Extend(15)),
            Op::Advance(Advance::By(10)),
            settle_batch(SettleBatch::Extend(4)),
            after(Advance::ToDeadline(0), settle_batch(SettleBatch::Ack)),
        ],
    );
    assert_eq!(harness.model.now, 19);
    assert_eq!(harness.model.counters.acked, 0);
    assert_eq!(harness.model.counters.expired, 2);
    assert_eq!(harness.model.ready_ids(), [1, 2]);
}

/// Split just before its deadline, a batch gives deliveries that run out
/// at that deadline; split at it, deliveries whose every settle fails.
#[test]
fn a_batch_split_keeps_its_deadline_or_settles_nothing() {
    let harness = run(
        ROOMY,
        &[
            send(),
            send(),
            hold_batch(2),
            after(Advance::ToDeadline(-1), settle_batch(SettleBatch::Split)),
            settle(0, Settle::Ack),
            Op::Advance(Advance::By(1)),
            settle(0, Settle::Ack),
        ],
    );
    assert_eq!(harness.model.counters.acked, 1);
    assert_eq!(harness.model.counters.expired, 1);

    let harness = run(
        ROOMY,
        &[
            send(),
            send(),
            hold_batch(2),
            after(Advance::ToDeadline(0), settle_batch(SettleBatch::Split)),
            // 1 received again, under a lease of its own (held third).
            recv(),
            settle(0, Settle::Ack),
            settle(0, Settle::Extend(4)),
            settle(0, Settle::Drop),
        ],
    );
    assert_eq!(harness.model.counters.acked, 0);
    assert_eq!(harness.model.counters.expired, 2);
    assert_eq!(harness.model.dead.len(), 0);
    assert_eq!(harness.model.ready_ids(), [2]);
    assert_eq!(harness.model.leases.len(), 1, "the new lease of 1");
}

/// Settling exactly at the deadline is refused and changes nothing.
#[test]
fn settling_at_the_deadline_is_refused() {
    run(
        SMALL,
        &[
            Op::Send {
                wait: Wait::Blocking,
            },
            recv(),
            Op::AdvanceThen(
                Advance::ToDeadline(0),
                Box::new(Op::Settle {
                    which: 0,
                    how: Settle::Ack,
                }),
            ),
            recv(),
            Op::Settle {
                which: 0,
                how: Settle::Fail,
            },
            recv(),
        ],
    );
}

fn send_batch(len: BatchLen, wait: Wait) -> Op {
    Op::SendBatch { len, wait }
}

fn recv_via(via: usize) -> Op {
    Op::Recv {
        wait: Wait::Try,
        via,
    }
}

fn ack_many(via: usize, picks: Picks) -> Op {
    Op::AckMany { via, picks }
}

/// A batch send is refused whole while there is no room for all of it,
/// `Full` or `Timeout` by the call, and `Full` whatever the call when it
/// could never fit; one that fits exactly is sent.
#[test]
fn a_batch_send_is_all_or_nothing() {
    let waits = [
        Wait::Blocking, // made as `try_send_batch`: it would wait
        Wait::Try,
        Wait::ZeroTimeout,
        Wait::TinyTimeout,
    ];
    let mut harness = run(SMALL, &[send(), recv()]);
    for wait in waits {
        harness.run(&[
            send_batch(BatchLen::Room(1), wait),
            send_batch(BatchLen::Capacity(1), wait),
            send_batch(BatchLen::Capacity(0), wait),
        ]);
    }
    assert_eq!(harness.model.counters.sent, 1);
    harness.run(&[send_batch(BatchLen::Room(0), Wait::ZeroTimeout)]);
    assert_eq!(harness.model.counters.sent, 4, "exactly the room left");
    // Full now: only an empty batch goes, and room made by an ack is
    // taken whole.
    harness.run(&[
        send_batch(BatchLen::Exact(1), Wait::TinyTimeout),
        send_batch(BatchLen::Exact(0), Wait::Try),
        settle(0, Settle::Ack),
        send_batch(BatchLen::Exact(2), Wait::Try),
        send_batch(BatchLen::Exact(1), Wait::Blocking),
    ]);
    assert_eq!(harness.model.counters.sent, 5);
    harness.run(&[Op::Close]);
    for wait in waits {
        harness.run(&[
            send_batch(BatchLen::Exact(0), wait),
            send_batch(BatchLen::Capacity(1), wait),
        ]);
    }
}

/// Deliveries received through different handles (in shards of their
/// own, or sharing one past the 16th), some split from a batch, some run
/// out, acknowledged together through yet another handle: only the
/// current ones count.
#[test]
fn deliveries_from_several_handles_are_acknowledged_together() {
    let config = Config {
        capacity: 40,
        consumers: 18,
        ..ROOMY
    };
    let mut harness = run(
        config,
        &[
            send_batch(BatchLen::Exact(12), Wait::Try),
            recv_via(0),
            recv_via(16), // the same shard as handle 0
            Op::Advance(Advance::By(5)),
            Op::RecvBatch {
                max: 4,
                hold: false,
                wait: Wait::ZeroTimeout,
                via: 3,
            },
            recv_via(17),
            Op::AddConsumer { clone_of: Some(3) },
            recv_via(18),
            Op::DropConsumer { which: 3 },
            // 0 and 16 ran out; 1 and 2 come back behind the rest.
            Op::Advance(Advance::By(5)),
            recv_via(5),
        ],
    );
    assert_eq!(harness.held.len(), 9);
    assert_eq!(harness.model.counters.expired, 2);
    harness.run(&[ack_many(7, Picks::All)]);
    assert_eq!(harness.model.counters.acked, 7, "3 to 9");
    assert!(harness.held.is_empty());
    // Nothing held: nothing to acknowledge.
    harness.run(&[ack_many(0, Picks::All), ack_many(1, Picks::Some(vec![3]))]);
}

/// Batches of 10 to 30: received whole across the edges of the chunks
/// they were sent in, settled whole, split and settled in parts, and run
/// out, through several handles.
#[test]
fn large_batches_come_and_go_whole_or_in_parts() {
    let config = Config {
        capacity: 40,
        consumers: 3,
        ..ROOMY
    };
    let mut harness = run(
        config,
        &[
            send(),
            send_batch(BatchLen::Exact(25), Wait::Blocking),
            send_batch(BatchLen::Room(0), Wait::TinyTimeout),
            Op::RecvBatch {
                max: 20,
                hold: true,
                wait: Wait::Blocking,
                via: 1,
            },
            Op::RecvBatch {
                max: 30,
                hold: true,
                wait: Wait::TinyTimeout,
                via: 2,
            },
        ],
    );
    assert_eq!(harness.model.counters.sent, 40);
    let lens: Vec<usize> = harness.batches.iter().map(|b| b.batch.len()).collect();
    assert_eq!(lens, [20, 20]);
    harness.run(&[
        settle_batch(SettleBatch::Split),
        ack_many(0, Picks::Some(vec![0, 2, 4, 6, 8, 10, 12])),
        settle(3, Settle::Fail),
        Op::Advance(Advance::By(4)),
        settle_batch(SettleBatch::Nack),
        Op::RecvBatch {
            max: 32,
            hold: true,
            wait: Wait::ZeroTimeout,
            via: 0,
        },
        // The 12 split deliveries left run out, and with them nothing else.
        Op::Advance(Advance::By(6)),
        ack_many(2, Picks::All),
        Op::RecvBatch {
            max: 32,
            hold: true,
            wait: Wait::Try,
            via: 1,
        },
        settle_batch(SettleBatch::Ack),
        settle_batch(SettleBatch::Ack),
    ]);
    assert_eq!(harness.model.counters.acked, 7 + 33);
    assert_eq!(harness.model.held(), 0);
}

/// Leases settled long before their deadline leave stale entries in their
/// shard's deadline heap, which is compacted once they pile up; the
/// leases still held (one extended to an earlier deadline, one to the same
/// deadline twice, one to a later one) must run out on time all the same.
#[test]
fn a_shard_full_of_settled_leases_still_expires_on_time() {
    let config = Config {
        capacity: 10,
        consumers: 2,
        ..ROOMY
    };
    let mut ops = vec![
        send_batch(BatchLen::Room(0), Wait::Try),
        recv_via(0),
        recv_via(0),
        recv_via(1),
        settle(1, Settle::Extend(25)),
    ];
    for round in 0..100 {
        // Held: the three above, then this round's.
        ops.extend([recv_via(0), settle(3, Settle::Ack), send()]);
        match round {
            10 | 60 => ops.push(settle(0, Settle::Extend(10))),
            90 => ops.push(settle(2, Settle::Extend(7))),
            _ => {}
        }
    }
    let mut harness = run(config, &ops);
    assert_eq!(harness.held.len(), 3);
    assert_eq!(harness.model.counters.acked, 100);
    harness.run(&[Op::Advance(Advance::ToDeadline(-1))]);
    assert_eq!((harness.model.now, harness.model.counters.expired), (6, 0));
    for (at, expired) in [(7, 1), (10, 2), (25, 3)] {
        harness.run(&[Op::Advance(Advance::ToDeadline(0))]);
        assert_eq!(
            (harness.model.now, harness.model.counters.expired),
            (at, expired)
        );
    }
    assert_eq!(harness.model.in_flight(), 0);
}

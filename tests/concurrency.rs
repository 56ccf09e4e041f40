//! The concurrency ledger: several producers and consumers on one queue
//! with a short real lease. Consumers pick at random (from a seeded PRNG)
//! to ack, nack, fail, retry later, drop, extend, dead-letter, or sleep past
//! the lease. Every send and every delivery is written down, and at the end
//! the ledger must balance:
//!
//! - every sent message ends acked or dead-lettered, exactly once; none is
//!   lost and none appears that was not sent;
//! - a message is delivered again only after its previous delivery was
//!   released or its lease expired, with receive counts 1, 2, 3, ... and
//!   none repeated;
//! - each dead letter carries the right reason, receive count and the error
//!   texts of its failed attempts in order;
//! - the queue's counters agree with the ledger.
//!
//! The same ledger runs with async consumers (tasks on a tokio runtime)
//! beside blocking ones, and with async producers, so that threads and
//! tasks wait on the same queue.
//!
//! Every wait is bounded ([`DEADLINE`]), so a bug fails the test instead of
//! hanging it. The ledger of message groups (send order and one message
//! out per group, under retries, lease expiry and pause) is
//! `tests/concurrency_groups.rs`.

mod common;

use common::Rng;
use spool::{
    Backoff, Clock, Consumer, DeadLetter, DeadLetterReason, Delivery, MessageId, Queue, RecvError,
    SendError, SendOptions, SettleError, SystemClock,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PRODUCERS: u64 = 3;
const CONSUMERS: u64 = 3;
const PER_PRODUCER: u64 = 1_000;
const CAPACITY: usize = 64;
const LEASE: Duration = Duration::from_millis(40);
const MAX_RECEIVES: u32 = 4;
/// Every thread gives up (and fails the test) after this long.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a consumer waits for a message before it looks at the clock.
const POLL: Duration = Duration::from_millis(50);

/// A global order of events across threads.
#[derive(Default)]
struct Sequence(AtomicU64);

impl Sequence {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, SeqCst)
    }
}

/// How one delivery ended, as its consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// `nack` or `retry_after` accepted.
    Released,
    /// `fail(text)` accepted.
    Failed(String),
    /// `dead_letter(reason)` accepted.
    Rejected(String),
    /// Dropped unsettled: released, unless the lease had run out already.
    Dropped,
    /// A settle was refused with `LeaseExpired`.
    Expired,
}

impl Outcome {
    /// Whether the message may be delivered again after this.
    fn retries(&self) -> bool {
        !matches!(self, Outcome::Acked | Outcome::Rejected(_))
    }
}

#[derive(Debug)]
struct Event {
    id: MessageId,
    payload: u64,
    receive_count: u32,
    /// Taken before asking for a message, so before the lease began.
    asked_at: Instant,
    /// Sequence number taken after the delivery arrived.
    received_seq: u64,
    /// Sequence number taken just before settling (or dropping).
    settling_seq: u64,
    /// Time taken after the delivery arrived.
    received_at: Instant,
    outcome: Outcome,
}

struct Sent {
    ids: Vec<(MessageId, u64)>,
    duplicates: u64,
}

fn produce(queue: &Queue<u64>, producer_no: u64, started: Instant) -> Sent {
    let producer = queue.producer();
    let deadline = started + DEADLINE;
    let mut ids = Vec::new();
    let mut duplicates = 0;
    let mut batch = Vec::new();
    for seq in 0..PER_PRODUCER {
        let payload = producer_no << 32 | seq;
        if seq % 10 == 0 {
            let key = SendOptions::new().key(format!("{producer_no}-{seq}"));
            let id = send_keyed(&producer, payload, &key, deadline);
            assert!(!id.is_duplicate(), "fresh key {producer_no}-{seq}");
            let again = send_keyed(&producer, payload, &key, deadline);
            assert_eq!(again, spool::Sent::Duplicate(id.id()));
            duplicates += 1;
            ids.push((id.id(), payload));
        } else if producer_no == 0 {
            // Producer 0 sends the rest in batches of up to three.
            batch.push(payload);
            if batch.len() == 3 || seq % 10 == 9 || seq + 1 == PER_PRODUCER {
                let left = deadline.saturating_duration_since(Instant::now());
                let sent = producer
                    .send_batch_timeout(std::mem::take(&mut batch), left)
                    .expect("room within the deadline");
                ids.extend(sent.into_iter().zip(payloads_of(producer_no, seq, 3)));
            }
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            let id = producer
                .send_timeout(payload, left)
                .expect("room within the deadline");
            ids.push((id, payload));
        }
    }
    assert!(batch.is_empty());
    Sent { ids, duplicates }
}

/// The payloads of the unkeyed sends of `producer_no` up to `last`, the
/// last `at_most` of them (those of a batch ending at `last`).
fn payloads_of(producer_no: u64, last: u64, at_most: usize) -> Vec<u64> {
    let mut payloads: Vec<u64> = (0..=last)
        .rev()
        .filter(|seq| seq % 10 != 0)
        .take(at_most)
        .map(|seq| producer_no << 32 | seq)
        .collect();
    payloads.reverse();
    payloads
}

/// `send_with` has no timeout; poll `try_send_with` up to the deadline.
fn send_keyed(
    producer: &spool::Producer<u64>,
    payload: u64,
    options: &SendOptions,
    deadline: Instant,
) -> spool::Sent {
    loop {
        match producer.try_send_with(payload, options.clone()) {
            Ok(sent) => return sent,
            Err(SendError::Full(_)) => {
                assert!(Instant::now() < deadline, "no room before the deadline");
                thread::sleep(Duration::from_millis(1));
            }
            Err(other) => panic!("keyed send failed: {other:?}"),
        }
    }
}

fn consume(
    consumer: &Consumer<u64>,
    consumer_no: u64,
    sequence: &Sequence,
    started: Instant,
) -> Vec<Event> {
    let mut rng = Rng(100 + consumer_no);
    let mut events = Vec::new();
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "consumer {consumer_no} still busy after {DEADLINE:?}"
        );
        let asked_at = Instant::now();
        if consumer_no == 0 {
            // Consumer 0 receives batches of up to three; it settles some
            // whole and splits the others.
            let batch = match consumer.recv_batch(3, POLL) {
                Ok(batch) => batch,
                Err(RecvError::Timeout) => continue,
                Err(RecvError::Closed) => return events,
                Err(other) => panic!("unexpected {other:?}"),
            };
            let received = Received::now(asked_at, sequence);
            let roll = rng.below(100);
            if roll >= 40 {
                received.settle_each(batch.into_deliveries(), &mut rng, sequence, &mut events);
                continue;
            }
            let messages: Vec<(MessageId, u64, u32)> = batch
                .messages()
                .map(|m| (m.id(), *m, m.receive_count()))
                .collect();
            let settling_seq = sequence.next();
            let settled = if roll < 30 {
                batch.ack().map(|()| Outcome::Acked)
            } else {
                batch.nack().map(|()| Outcome::Released)
            };
            let outcome = match settled {
                Ok(outcome) => outcome,
                Err(SettleError::LeaseExpired { .. }) => Outcome::Expired,
                Err(other) => panic!("unexpected {other:?}"),
            };
            for (id, payload, receive_count) in messages {
                events.push(received.event(
                    id,
                    payload,
                    receive_count,
                    settling_seq,
                    outcome.clone(),
                ));
            }
            continue;
        }
        let delivery = match consumer.recv_timeout(POLL) {
            Ok(delivery) => delivery,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Closed) => return events,
            Err(other) => panic!("unexpected {other:?}"),
        };
        let received = Received::now(asked_at, sequence);
        received.settle_each(vec![delivery], &mut rng, sequence, &mut events);
    }
}

/// When a receive asked and got its messages.
struct Received {
    asked_at: Instant,
    received_seq: u64,
    received_at: Instant,
}

impl Received {
    fn now(asked_at: Instant, sequence: &Sequence) -> Self {
        let received_seq = sequence.next();
        Received {
            asked_at,
            received_seq,
            received_at: Instant::now(),
        }
    }

    fn event(
        &self,
        id: MessageId,
        payload: u64,
        receive_count: u32,
        settling_seq: u64,
        outcome: Outcome,
    ) -> Event {
        Event {
            id,
            payload,
            receive_count,
            asked_at: self.asked_at,
            received_seq: self.received_seq,
            settling_seq,
            received_at: self.received_at,
            outcome,
        }
    }

    /// Settles each of `deliveries` as the dice say, writing down how.
    fn settle_each(
        &self,
        deliveries: Vec<Delivery<u64>>,
        rng: &mut Rng,
        sequence: &Sequence,
        events: &mut Vec<Event>,
    ) {
        for delivery in deliveries {
            let (id, payload, receive_count) = (delivery.id(), *delivery, delivery.receive_count());
            let settling_seq = sequence.next();
            let outcome = settle(delivery, rng.below(100));
            events.push(self.event(id, payload, receive_count, settling_seq, outcome));
        }
    }
}

/// Does what `roll` (0..100) picks with `delivery`.
fn settle(delivery: Delivery<u64>, roll: u64) -> Outcome {
    let text = format!("attempt {} of {}", delivery.receive_count(), delivery.id());
    let (result, outcome) = match roll {
        0..=59 => (delivery.ack(), Outcome::Acked),
        60..=67 => (delivery.nack(), Outcome::Released),
        68..=72 => (
            delivery.retry_after(Duration::from_millis(2)),
            Outcome::Released,
        ),
        73..=80 => (delivery.fail(text.clone()), Outcome::Failed(text)),
        81..=86 => {
            drop(delivery);
            return Outcome::Dropped;
        }
        87..=91 => (delivery.dead_letter(text.clone()), Outcome::Rejected(text)),
        92..=97 => {
            let extended = delivery.extend(LEASE);
            let acked = delivery.ack();
            assert!(
                extended.is_ok() || acked.is_err(),
                "ack after a refused extend"
            );
            (acked, Outcome::Acked)
        }
        _ => {
            // A lease may run on for the clock's coarse lag, and an ack
            // read one tick of that clock late: sleep past both.
            let lag = SystemClock::new().coarse_lag();
            thread::sleep(LEASE + 2 * lag + Duration::from_millis(10));
            let id = delivery.id();
            let refused = delivery.ack();
            assert_eq!(refused, Err(SettleError::LeaseExpired { id }));
            return Outcome::Expired;
        }
    };
    match result {
        Ok(()) => outcome,
        Err(SettleError::LeaseExpired { .. }) => Outcome::Expired,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_message_ends_acked_or_dead_lettered_exactly_once() {
    let queue = ledger_queue();
    let sequence = Arc::new(Sequence::default());
    let started = Instant::now();

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|no| {
            let (consumer, sequence) = (queue.consumer(), sequence.clone());
            thread::spawn(move || consume(&consumer, no, &sequence, started))
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|no| {
            let queue = queue.clone();
            thread::spawn(move || produce(&queue, no, started))
        })
        .collect();

    let sent: Vec<Sent> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    queue.close();
    let events: Vec<Event> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();

    check_ledger(&queue, &sent, events);
}

/// The consumers of [`consume`], as tasks: the same picks, through the
/// async calls.
async fn consume_async(
    consumer: Consumer<u64>,
    consumer_no: u64,
    sequence: Arc<Sequence>,
    started: Instant,
) -> Vec<Event> {
    let mut rng = Rng(100 + consumer_no);
    let mut events = Vec::new();
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "consumer {consumer_no} still busy after {DEADLINE:?}"
        );
        let asked_at = Instant::now();
        if consumer_no == 0 {
            let batch = match consumer.recv_batch_async(3, POLL).await {
                Ok(batch) => batch,
                Err(RecvError::Timeout) => continue,
                Err(RecvError::Closed) => return events,
                Err(other) => panic!("unexpected {other:?}"),
            };
            let received = Received::now(asked_at, &sequence);
            let roll = rng.below(100);
            if roll >= 40 {
                for delivery in batch.into_deliveries() {
                    received
                        .settle_async(delivery, &mut rng, &sequence, &mut events)
                        .await;
                }
                continue;
            }
            let messages: Vec<(MessageId, u64, u32)> = batch
                .messages()
                .map(|m| (m.id(), *m, m.receive_count()))
                .collect();
            let settling_seq = sequence.next();
            let settled = if roll < 30 {
                batch.ack_async().await.map(|()| Outcome::Acked)
            } else {
                batch.nack_async().await.map(|()| Outcome::Released)
            };
            let outcome = match settled {
                Ok(outcome) => outcome,
                Err(SettleError::LeaseExpired { .. }) => Outcome::Expired,
                Err(other) => panic!("unexpected {other:?}"),
            };
            for (id, payload, receive_count) in messages {
                events.push(received.event(
                    id,
                    payload,
                    receive_count,
                    settling_seq,
                    outcome.clone(),
                ));
            }
            continue;
        }
        let delivery = match consumer.recv_timeout_async(POLL).await {
            Ok(delivery) => delivery,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Closed) => return events,
            Err(other) => panic!("unexpected {other:?}"),
        };
        let received = Received::now(asked_at, &sequence);
        received
            .settle_async(delivery, &mut rng, &sequence, &mut events)
            .await;
    }
}

impl Received {
    /// [`settle_each`](Self::settle_each) for one delivery, from a task.
    async fn settle_async(
        &self,
        delivery: Delivery<u64>,
        rng: &mut Rng,
        sequence: &Sequence,
        events: &mut Vec<Event>,
    ) {
        let (id, payload, receive_count) = (delivery.id(), *delivery, delivery.receive_count());
        let settling_seq = sequence.next();
        let outcome = settle_async(delivery, rng.below(100)).await;
        events.push(self.event(id, payload, receive_count, settling_seq, outcome));
    }
}

/// [`settle`], through the async calls.
async fn settle_async(delivery: Delivery<u64>, roll: u64) -> Outcome {
    let text = format!("attempt {} of {}", delivery.receive_count(), delivery.id());
    let (result, outcome) = match roll {
        0..=59 => (delivery.ack_async().await, Outcome::Acked),
        60..=67 => (delivery.nack_async().await, Outcome::Released),
        68..=72 => (
            delivery.retry_after_async(Duration::from_millis(2)).await,
            Outcome::Released,
        ),
        73..=80 => (
            delivery.fail_async(text.clone()).await,
            Outcome::Failed(text),
        ),
        81..=86 => {
            drop(delivery);
            return Outcome::Dropped;
        }
        87..=91 => (
            delivery.dead_letter_async(text.clone()).await,
            Outcome::Rejected(text),
        ),
        92..=97 => {
            let extended = delivery.extend(LEASE);
            let acked = delivery.ack_async().await;
            assert!(
                extended.is_ok() || acked.is_err(),
                "ack after a refused extend"
            );
            (acked, Outcome::Acked)
        }
        _ => {
            let lag = SystemClock::new().coarse_lag();
            tokio::time::sleep(LEASE + 2 * lag + Duration::from_millis(10)).await;
            let id = delivery.id();
            let refused = delivery.ack_async().await;
            assert_eq!(refused, Err(SettleError::LeaseExpired { id }));
            return Outcome::Expired;
        }
    };
    match result {
        Ok(()) => outcome,
        Err(SettleError::LeaseExpired { .. }) => Outcome::Expired,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

fn ledger_queue() -> Queue<u64> {
    Queue::builder()
        .capacity(CAPACITY)
        .visibility_timeout(LEASE)
        .max_receives(MAX_RECEIVES)
        .backoff(Backoff::exponential(
            Duration::from_millis(1),
            Duration::from_millis(4),
        ))
        .jitter_seed(1)
        .open()
        .unwrap()
}

#[test]
fn the_ledger_balances_with_async_consumers_beside_a_blocking_one() {
    let queue = ledger_queue();
    let sequence = Arc::new(Sequence::default());
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    // Consumer 0 (batches) and 1 are tasks; consumer 2 is a thread.
    let tasks: Vec<_> = (0..2)
        .map(|no| {
            runtime.spawn(consume_async(
                queue.consumer(),
                no,
                sequence.clone(),
                started,
            ))
        })
        .collect();
    let thread_consumer = {
        let (consumer, sequence) = (queue.consumer(), sequence.clone());
        thread::spawn(move || consume(&consumer, 2, &sequence, started))
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|no| {
            let queue = queue.clone();
            thread::spawn(move || produce(&queue, no, started))
        })
        .collect();

    let sent: Vec<Sent> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    queue.close();
    let mut events: Vec<Event> = thread_consumer.join().unwrap();
    for task in tasks {
        events.extend(runtime.block_on(task).unwrap());
    }
    check_ledger(&queue, &sent, events);
}

/// The unkeyed sends of [`produce`], from a task: every message through
/// `send_async`, except producer 0's, which go in batches of three.
async fn produce_async(queue: Queue<u64>, producer_no: u64) -> Sent {
    let producer = queue.producer();
    let mut ids = Vec::new();
    let payloads: Vec<u64> = (0..PER_PRODUCER)
        .map(|seq| producer_no << 32 | seq)
        .collect();
    if producer_no == 0 {
        for chunk in payloads.chunks(3) {
            let sent = producer.send_batch_async(chunk.to_vec()).await.unwrap();
            ids.extend(sent.into_iter().zip(chunk.iter().copied()));
        }
    } else {
        for payload in payloads {
            ids.push((producer.send_async(payload).await.unwrap(), payload));
        }
    }
    Sent { ids, duplicates: 0 }
}

#[test]
fn the_ledger_balances_with_async_producers_and_blocking_consumers() {
    let queue = ledger_queue();
    let sequence = Arc::new(Sequence::default());
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|no| {
            let (consumer, sequence) = (queue.consumer(), sequence.clone());
            thread::spawn(move || consume(&consumer, no, &sequence, started))
        })
        .collect();
    // Every producer a task on one thread: a send that blocked its thread
    // would stop the others, and the deadline would catch it.
    let producing = async {
        let producers = (0..PRODUCERS).map(|no| tokio::spawn(produce_async(queue.clone(), no)));
        let mut sent = Vec::new();
        for producer in producers.collect::<Vec<_>>() {
            sent.push(producer.await.unwrap());
        }
        sent
    };
    let sent = runtime.block_on(async {
        tokio::time::timeout(DEADLINE, producing)
            .await
            .expect("producers done within the deadline")
    });
    queue.close();
    let events: Vec<Event> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    check_ledger(&queue, &sent, events);
}

/// Checks that the ledger balances; see the top of the file.
fn check_ledger(queue: &Queue<u64>, sent: &[Sent], events: Vec<Event>) {
    let mut payload_of: HashMap<MessageId, u64> = HashMap::new();
    for &(id, payload) in sent.iter().flat_map(|s| &s.ids) {
        assert!(payload_of.insert(id, payload).is_none(), "{id} sent twice");
    }
    assert_eq!(payload_of.len() as u64, PRODUCERS * PER_PRODUCER);
    let deliveries = events.len() as u64;
    let (expired_seen, released_seen, dropped_seen) = (
        count(&events, |o| *o == Outcome::Expired),
        count(&events, |o| {
            matches!(o, Outcome::Released | Outcome::Failed(_))
        }),
        count(&events, |o| *o == Outcome::Dropped),
    );

    let mut history_of: BTreeMap<MessageId, Vec<Event>> = BTreeMap::new();
    for event in events {
        history_of.entry(event.id).or_default().push(event);
    }
    let letters: BTreeMap<MessageId, DeadLetter<u64>> = queue
        .dead_letters()
        .list()
        .into_iter()
        .map(|letter| (letter.id(), letter))
        .collect();

    let (mut acked, mut rejected) = (0, 0);
    for (&id, &payload) in &payload_of {
        let mut history = history_of
            .remove(&id)
            .unwrap_or_else(|| panic!("{id} was never delivered"));
        history.sort_by_key(|e| e.receive_count);
        check_history(id, payload, &history);

        let last = history.last().expect("delivered");
        let letter = letters.get(&id);
        match (&last.outcome, letter) {
            (Outcome::Acked, None) => acked += 1,
            (Outcome::Rejected(reason), Some(letter)) => {
                assert_eq!(letter.reason(), &DeadLetterReason::Rejected(reason.clone()));
                rejected += 1;
            }
            (outcome, Some(letter)) if outcome.retries() => {
                assert_eq!(history.len() as u32, MAX_RECEIVES, "{id}: {history:?}");
                assert_eq!(
                    letter.reason(),
                    &DeadLetterReason::MaxReceives(MAX_RECEIVES)
                );
            }
            (outcome, letter) => {
                panic!("{id} lost or doubled: last {outcome:?}, dead letter {letter:?}")
            }
        }
        if let Some(letter) = letter {
            let errors: Vec<&str> = history
                .iter()
                .filter_map(|e| match &e.outcome {
                    Outcome::Failed(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(letter.errors(), errors, "{id}");
            assert_eq!(letter.receive_count(), history.len() as u32, "{id}");
            assert_eq!(*letter.payload(), payload, "{id}");
        }
    }
    assert!(
        history_of.is_empty(),
        "delivered but never sent: {history_of:?}"
    );
    assert_eq!(acked + letters.len() as u64, PRODUCERS * PER_PRODUCER);

    // The run went through every path it claims to test.
    let max_receives = letters.len() as u64 - rejected;
    for (path, seen) in [
        ("expired", expired_seen),
        ("released", released_seen),
        ("dropped", dropped_seen),
        ("rejected", rejected),
        ("dead-lettered after max receives", max_receives),
    ] {
        assert!(seen > 0, "no delivery was {path}");
    }

    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
    assert_eq!(stats.sent, PRODUCERS * PER_PRODUCER);
    assert_eq!(
        stats.duplicates,
        sent.iter().map(|s| s.duplicates).sum::<u64>()
    );
    assert_eq!(stats.acked, acked);
    assert_eq!(stats.dead_letters, letters.len());
    assert_eq!(stats.dead_lettered, letters.len() as u64);
    // Each delivery ended in exactly one way.
    assert_eq!(
        deliveries,
        stats.acked + stats.nacked + stats.expired + rejected,
        "{stats:?}"
    );
    assert!(stats.expired >= expired_seen, "{stats:?}");
    assert!(
        (released_seen..=released_seen + dropped_seen).contains(&stats.nacked),
        "{stats:?}"
    );
}

/// The deliveries of one message, by receive count: 1, 2, 3, ... each
/// after the previous one was released or its lease ran out.
fn check_history(id: MessageId, payload: u64, history: &[Event]) {
    let counts: Vec<u32> = history.iter().map(|e| e.receive_count).collect();
    let expected: Vec<u32> = (1..=history.len() as u32).collect();
    assert_eq!(counts, expected, "{id}: receive counts");
    assert!(
        history.iter().all(|e| e.payload == payload),
        "{id}: payload"
    );
    for pair in history.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let released_first = before.settling_seq < after.received_seq;
        let lease_ran_out = after.received_at >= before.asked_at + LEASE;
        let allowed = match before.outcome {
            Outcome::Released | Outcome::Failed(_) => released_first,
            Outcome::Expired => lease_ran_out,
            Outcome::Dropped => released_first || lease_ran_out,
            Outcome::Acked | Outcome::Rejected(_) => false,
        };
        assert!(
            allowed,
            "{id} delivered again too early: {before:?} then {after:?}"
        );
    }
}

fn count(events: &[Event], select: impl Fn(&Outcome) -> bool) -> u64 {
    events.iter().filter(|e| select(&e.outcome)).count() as u64
}

#[test]
fn every_send_accepted_while_the_queue_closes_is_delivered() {
    for round in 0..20 {
        let queue: Queue<u64> = Queue::builder().capacity(16).open().unwrap();
        let started = Instant::now();
        let producers: Vec<_> = (0..2u64)
            .map(|no| {
                let producer = queue.producer();
                thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for seq in 0.. {
                        assert!(started.elapsed() < DEADLINE, "producer {no} stuck");
                        match producer.send_timeout(no << 32 | seq, POLL) {
                            Ok(id) => accepted.push(id),
                            Err(SendError::Timeout(_)) => {}
                            Err(SendError::Closed(_)) => return accepted,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let consumer = queue.consumer();
                thread::spawn(move || {
                    let mut acked = Vec::new();
                    loop {
                        assert!(started.elapsed() < DEADLINE, "consumer stuck");
                        match consumer.recv_timeout(POLL) {
                            Ok(delivery) => {
                                acked.push(delivery.id());
                                delivery.ack().unwrap();
                            }
                            Err(RecvError::Timeout) => {}
                            Err(RecvError::Closed) => return acked,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();

        // Let some traffic through, then close in the middle of it.
        while queue.stats().acked < 50 + round {
            assert!(started.elapsed() < DEADLINE, "no traffic");
            thread::yield_now();
        }
        queue.close();

        let mut accepted: Vec<MessageId> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        let mut acked: Vec<MessageId> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        accepted.sort_unstable();
        acked.sort_unstable();
        assert_eq!(acked, accepted, "round {round}");
        assert_eq!(queue.stats().sent, accepted.len() as u64);
    }
}

/// The ledger under flow control: a cap of two messages in flight set at
/// open, and a thread that pauses and resumes the queue over and over
/// while blocking consumers and tasks receive (the tasks wake only if
/// resuming and each message leaving flight notify them). Nothing is lost
/// or delivered twice at once, and the queue never has more than two
/// messages leased.
#[test]
fn the_ledger_balances_under_pause_and_an_in_flight_cap() {
    const CAP: usize = 2;
    let queue: Queue<u64> = Queue::builder()
        .capacity(CAPACITY)
        .visibility_timeout(LEASE)
        .max_receives(MAX_RECEIVES)
        .backoff(Backoff::exponential(
            Duration::from_millis(1),
            Duration::from_millis(4),
        ))
        .jitter_seed(1)
        .max_in_flight(CAP)
        .open()
        .unwrap();
    let sequence = Arc::new(Sequence::default());
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|no| {
            runtime.spawn(consume_async(
                queue.consumer(),
                no,
                sequence.clone(),
                started,
            ))
        })
        .collect();
    let thread_consumer = {
        let (consumer, sequence) = (queue.consumer(), sequence.clone());
        thread::spawn(move || consume(&consumer, 2, &sequence, started))
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggler = {
        let (queue, done) = (queue.clone(), done.clone());
        thread::spawn(move || {
            let mut pauses = 0u64;
            while !done.load(SeqCst) {
                assert!(started.elapsed() < DEADLINE, "toggler still busy");
                queue.pause().unwrap();
                assert!(queue.stats().paused);
                pauses += 1;
                queue.resume().unwrap();
                let stats = queue.stats();
                assert!(!stats.paused);
                assert!(stats.in_flight <= CAP, "{} in flight", stats.in_flight);
                thread::yield_now();
            }
            pauses
        })
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|no| {
            let queue = queue.clone();
            thread::spawn(move || produce(&queue, no, started))
        })
        .collect();

    let sent: Vec<Sent> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    done.store(true, SeqCst);
    assert!(toggler.join().unwrap() > 0);
    queue.close();
    let mut events: Vec<Event> = thread_consumer.join().unwrap();
    for task in tasks {
        events.extend(runtime.block_on(task).unwrap());
    }
    check_ledger(&queue, &sent, events);
}

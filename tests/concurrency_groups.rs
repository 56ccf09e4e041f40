//! The concurrency ledger for priorities and message groups: producers
//! send grouped messages (and some plain ones) at random priorities,
//! four consumers (three taking one message at a time, one taking
//! batches) ack, nack, fail, retry later, drop, dead-letter, or abandon
//! their deliveries to lease expiry, while a thread pauses and resumes the
//! queue. Time is a [`ManualClock`] that a thread of the test moves on in
//! steps of a millisecond, so leases and backoffs run out while the
//! consumers work, without any test outcome depending on a sleep.
//!
//! Every delivery is written down with a global sequence number taken
//! when it arrived and one taken just before it was settled, and the
//! clock's reading before it was asked for. At the end the ledger must
//! balance:
//!
//! - every sent message ends acked or dead-lettered, exactly once;
//! - within a group, deliveries come in send order: the ids delivered,
//!   in the order they arrived, never go down (a failing message is
//!   delivered again before any later one of its group);
//! - a group never has two messages out at once: each delivery of a
//!   group comes after the previous one was settled, or after its lease
//!   ran out on the clock;
//! - the queue ends empty, its counters agreeing with the ledger.
//!
//! Every wait is bounded ([`DEADLINE`]).

mod common;

use common::Rng;
use spool::{
    Backoff, Batch, Consumer, DeadLetterReason, Delivery, ManualClock, MessageId, Priority, Queue,
    RecvError, SendOptions, SettleError,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PRODUCERS: u64 = 2;
const PER_PRODUCER: u64 = 300;
/// Groups per producer: a group's messages all come from one producer,
/// so that its send order is that producer's.
const GROUPS: u64 = 12;
const CONSUMERS: u64 = 4;
const LEASE: Duration = Duration::from_millis(20);
const MAX_RECEIVES: u32 = 4;
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Acked,
    Released,
    Rejected,
    Dropped,
    /// Left to its lease (or a settle refused with `LeaseExpired`).
    Expired,
}

#[derive(Debug)]
struct Event {
    id: MessageId,
    payload: u64,
    receive_count: u32,
    /// The manual clock before the receive asked (so before the lease).
    asked_clock: Duration,
    received_seq: u64,
    /// The manual clock after the delivery arrived.
    received_clock: Duration,
    settling_seq: u64,
    outcome: Outcome,
}

/// A message's group, if it has one: `None` for every 7th.
fn group_of(payload: u64) -> Option<String> {
    let (producer, seq) = (payload >> 32, payload & 0xFFFF_FFFF);
    (seq % 7 != 3).then(|| format!("p{producer}-g{}", seq % GROUPS))
}

fn produce(queue: &Queue<u64>, producer_no: u64, started: Instant) -> Vec<(MessageId, u64)> {
    let producer = queue.producer();
    let mut rng = Rng(7 + producer_no);
    let mut ids = Vec::new();
    for seq in 0..PER_PRODUCER {
        let payload = producer_no << 32 | seq;
        let priority = Priority::from_level(rng.below(3) as u8).unwrap();
        let mut options = SendOptions::new().priority(priority);
        if let Some(group) = group_of(payload) {
            options = options.group(group);
        }
        loop {
            assert!(started.elapsed() < DEADLINE, "no room before the deadline");
            match producer.try_send_with(payload, options.clone()) {
                Ok(sent) => {
                    ids.push((sent.id(), payload));
                    break;
                }
                Err(spool::SendError::Full(_)) => thread::yield_now(),
                Err(other) => panic!("{other:?}"),
            }
        }
    }
    ids
}

struct Ledger {
    sequence: AtomicU64,
    clock: ManualClock,
}

impl Ledger {
    fn next(&self) -> u64 {
        self.sequence.fetch_add(1, SeqCst)
    }
}

/// Settles `delivery` as `roll` (0..100) says; abandoned deliveries go to
/// `stale`, to run out.
fn settle(
    delivery: Delivery<u64>,
    roll: u64,
    asked_clock: Duration,
    received_seq: u64,
    ledger: &Ledger,
    stale: &mut Vec<Delivery<u64>>,
) -> Event {
    let (id, payload, receive_count) = (delivery.id(), *delivery, delivery.receive_count());
    let received_clock = ledger.clock.elapsed();
    let settling_seq = ledger.next();
    let (result, outcome) = match roll {
        0..=59 => (delivery.ack(), Outcome::Acked),
        60..=67 => (delivery.nack(), Outcome::Released),
        68..=73 => (
            delivery.retry_after(Duration::from_millis(3)),
            Outcome::Released,
        ),
        74..=79 => (delivery.fail("boom"), Outcome::Released),
        80..=85 => {
            drop(delivery);
            (Ok(()), Outcome::Dropped)
        }
        86..=89 => (delivery.dead_letter("bad"), Outcome::Rejected),
        _ => {
            stale.push(delivery);
            (Ok(()), Outcome::Expired)
        }
    };
    let outcome = match result {
        Ok(()) => outcome,
        Err(SettleError::LeaseExpired { .. }) => Outcome::Expired,
        Err(other) => panic!("{other:?}"),
    };
    Event {
        id,
        payload,
        receive_count,
        asked_clock,
        received_seq,
        received_clock,
        settling_seq,
        outcome,
    }
}

fn consume(consumer: Consumer<u64>, no: u64, ledger: &Ledger, started: Instant) -> Vec<Event> {
    let mut rng = Rng(100 + no);
    let mut events = Vec::new();
    let mut stale = Vec::new();
    loop {
        assert!(started.elapsed() < DEADLINE, "consumer {no} still busy");
        let asked_clock = ledger.clock.elapsed();
        // Consumer 0 takes batches, the others one message at a time.
        let received = if no == 0 {
            consumer
                .recv_batch(3, POLL)
                .map(|batch: Batch<u64>| batch.into_deliveries())
        } else {
            consumer.recv_timeout(POLL).map(|delivery| vec![delivery])
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Closed) => break,
            Err(other) => panic!("{other:?}"),
        };
        let received_seq = ledger.next();
        for delivery in deliveries {
            let roll = rng.below(100);
            events.push(settle(
                delivery,
                roll,
                asked_clock,
                received_seq,
                ledger,
                &mut stale,
            ));
        }
    }
    // Drained: every lease left here has run out; dropping settles nothing.
    drop(stale);
    events
}

#[test]
fn groups_keep_send_order_and_one_message_out_under_retries_expiry_and_pause() {
    let clock = ManualClock::new();
    let queue: Queue<u64> = Queue::builder()
        .clock(clock.clone())
        .capacity(64)
        .visibility_timeout(LEASE)
        .max_receives(MAX_RECEIVES)
        .backoff(Backoff::exponential(
            Duration::from_millis(1),
            Duration::from_millis(4),
        ))
        .jitter_seed(3)
        .open()
        .unwrap();
    let ledger = Arc::new(Ledger {
        sequence: AtomicU64::new(0),
        clock: clock.clone(),
    });
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // Time: a millisecond per step, until the consumers are done.
    let ticker = {
        let (clock, done) = (clock.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(SeqCst) {
                assert!(started.elapsed() < DEADLINE, "ticker still busy");
                clock.advance(Duration::from_millis(1));
                thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let pauses = Arc::new(Mutex::new(0u64));
    let toggler = {
        let (queue, done, pauses) = (queue.clone(), done.clone(), pauses.clone());
        thread::spawn(move || {
            while !done.load(SeqCst) {
                assert!(started.elapsed() < DEADLINE, "toggler still busy");
                queue.pause().unwrap();
                queue.resume().unwrap();
                *pauses.lock().unwrap() += 1;
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|no| {
            let (consumer, ledger) = (queue.consumer(), ledger.clone());
            thread::spawn(move || consume(consumer, no, &ledger, started))
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|no| {
            let queue = queue.clone();
            thread::spawn(move || produce(&queue, no, started))
        })
        .collect();
    let sent: Vec<(MessageId, u64)> = producers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    queue.close();
    let events: Vec<Event> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    done.store(true, SeqCst);
    ticker.join().unwrap();
    toggler.join().unwrap();
    assert!(*pauses.lock().unwrap() > 0);
    check(&queue, &sent, events);
}

fn check(queue: &Queue<u64>, sent: &[(MessageId, u64)], events: Vec<Event>) {
    let payload_of: HashMap<MessageId, u64> = sent.iter().copied().collect();
    assert_eq!(payload_of.len() as u64, PRODUCERS * PER_PRODUCER);
    let letters: BTreeMap<MessageId, DeadLetterReason> = queue
        .dead_letters()
        .list()
        .into_iter()
        .map(|l| (l.id(), l.reason().clone()))
        .collect();

    // Nothing lost, nothing doubled.
    let mut history: BTreeMap<MessageId, Vec<&Event>> = BTreeMap::new();
    for event in &events {
        assert_eq!(payload_of.get(&event.id), Some(&event.payload), "{event:?}");
        history.entry(event.id).or_default().push(event);
    }
    let mut acked = 0;
    for (id, _) in sent {
        let mut deliveries = history.remove(id).unwrap_or_default();
        assert!(!deliveries.is_empty(), "{id} never delivered");
        deliveries.sort_by_key(|e| e.receive_count);
        let counts: Vec<u32> = deliveries.iter().map(|e| e.receive_count).collect();
        assert_eq!(
            counts,
            (1..=counts.len() as u32).collect::<Vec<_>>(),
            "{id}"
        );
        let last = deliveries.last().unwrap();
        match (&last.outcome, letters.get(id)) {
            (Outcome::Acked, None) => acked += 1,
            (Outcome::Rejected, Some(DeadLetterReason::Rejected(_))) => {}
            (_, Some(DeadLetterReason::MaxReceives(n))) => {
                assert_eq!(
                    (*n, counts.len() as u32),
                    (MAX_RECEIVES, MAX_RECEIVES),
                    "{id}"
                );
            }
            (outcome, letter) => panic!("{id} lost or doubled: {outcome:?}, {letter:?}"),
        }
    }
    assert!(history.is_empty());
    assert_eq!(acked + letters.len() as u64, PRODUCERS * PER_PRODUCER);

    // Per group: send order, one message out at a time.
    let mut by_group: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for event in &events {
        if let Some(group) = group_of(event.payload) {
            by_group.entry(group).or_default().push(event);
        }
    }
    assert_eq!(by_group.len() as u64, PRODUCERS * GROUPS);
    for (group, mut deliveries) in by_group {
        deliveries.sort_by_key(|e| e.received_seq);
        for pair in deliveries.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            assert!(
                before.id <= after.id,
                "{group}: {} delivered after {}",
                before.id,
                after.id
            );
            let settled_first =
                before.settling_seq < after.received_seq && before.outcome != Outcome::Expired;
            let ran_out = after.received_clock >= before.asked_clock + LEASE;
            assert!(
                settled_first || ran_out,
                "{group}: two out at once: {before:?} then {after:?}"
            );
        }
    }
    let expired = events
        .iter()
        .filter(|e| e.outcome == Outcome::Expired)
        .count();
    let retried = events
        .iter()
        .filter(|e| e.outcome == Outcome::Released)
        .count();
    assert!(
        expired > 0 && retried > 0,
        "{expired} expired, {retried} retried"
    );
    let max_receives = letters
        .values()
        .filter(|r| matches!(r, DeadLetterReason::MaxReceives(_)))
        .count();
    assert!(max_receives > 0, "no message used up its receives");

    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
    assert_eq!(stats.acked, acked);
    assert_eq!(stats.dead_letters, letters.len());
}

//! Power cuts at the queue level: a workload runs on a simulated disk that
//! loses power after its Nth operation, for every N; the queue reopened on
//! what was synced must keep every promise made before the cut.

use crate::wal::{SimStorage, Storage, Torn};
use crate::{ManualClock, MessageId, Queue, RecvError, SendOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// What the workload was told succeeded.
#[derive(Default, Debug)]
struct Ledger {
    sent: BTreeMap<MessageId, u32>,
    /// Last receive count handed out, since the last redrive.
    received: BTreeMap<MessageId, u32>,
    /// Acknowledged or purged: must never come back.
    gone: BTreeSet<MessageId>,
    /// Dead-lettered by the consumer and not redriven or purged since.
    rejected: BTreeSet<MessageId>,
}

fn try_open(storage: &SimStorage, clock: &ManualClock) -> Result<Queue<u32>, crate::OpenError> {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    Queue::builder()
        .path("sim")
        .clock(clock.clone())
        .max_receives(3)
        .visibility_timeout(10 * SEC)
        .open_on_storage(storage)
}

fn open(storage: &SimStorage, clock: &ManualClock) -> Queue<u32> {
    try_open(storage, clock).expect("open")
}

/// Runs until the first failed operation; records what succeeded.
fn workload(queue: &Queue<u32>, clock: &ManualClock, ledger: &mut Ledger) -> Option<()> {
    let producer = queue.producer();
    let consumer = queue.consumer();
    for i in 0..10u32 {
        let options = match i % 4 {
            0 => SendOptions::new().key(format!("k{i}")),
            1 => SendOptions::new().delay(5 * SEC),
            _ => SendOptions::new(),
        };
        let id = producer.send_with(i, options).ok()?.id();
        ledger.sent.insert(id, i);
    }
    let ids = producer.send_batch(vec![100, 101, 102]).ok()?;
    for (id, payload) in ids.into_iter().zip(100..) {
        ledger.sent.insert(id, payload);
    }
    for round in 0..4u64 {
        let batch = match consumer.recv_batch(4, Duration::ZERO) {
            Ok(batch) => batch,
            Err(RecvError::Timeout | RecvError::Empty) => Vec::new(),
            Err(_) => return None,
        };
        for delivery in batch {
            let id = delivery.id();
            ledger.received.insert(id, delivery.receive_count());
            match (id.get() + round) % 5 {
                0 | 1 => {
                    delivery.ack().ok()?;
                    ledger.gone.insert(id);
                }
                2 => delivery.fail("flaky").ok()?,
                3 => {
                    delivery.dead_letter("bad input").ok()?;
                    ledger.rejected.insert(id);
                }
                _ => drop(delivery),
            }
        }
        clock.advance(6 * SEC);
    }
    let dead = queue.dead_letters();
    if let Some(&id) = ledger.rejected.iter().next() {
        dead.redrive(id).ok()?;
        ledger.rejected.remove(&id);
        ledger.received.insert(id, 0);
    }
    let in_dlq: Vec<MessageId> = dead.list().iter().map(|l| l.id()).collect();
    dead.purge().ok()?;
    ledger.gone.extend(in_dlq);
    ledger.rejected.clear();
    Some(())
}

/// Reopens what survived and checks it against the ledger.
fn check(storage: &SimStorage, clock: &ManualClock, ledger: &Ledger, case: &str) {
    let queue = open(storage, clock);
    clock.advance(3600 * SEC); // every delay and backoff has passed
    let consumer = queue.consumer();
    let mut held = Vec::new();
    loop {
        match consumer.try_recv() {
            Ok(delivery) => held.push(delivery),
            Err(RecvError::Empty) => break,
            Err(other) => panic!("{case}: {other}"),
        }
    }
    let letters = queue.dead_letters().list();
    let mut present = BTreeMap::new();
    for delivery in &held {
        // A fresh delivery: its count is the recovered count plus one.
        present.insert(delivery.id(), (**delivery, delivery.receive_count() - 1));
    }
    for letter in &letters {
        present.insert(letter.id(), (*letter.payload(), letter.receive_count()));
    }
    for (id, payload) in &ledger.sent {
        if ledger.gone.contains(id) {
            assert!(
                !present.contains_key(id),
                "{case}: acknowledged {id} came back"
            );
            continue;
        }
        let Some((found, count)) = present.get(id) else {
            panic!("{case}: sent {id} is missing");
        };
        assert_eq!(found, payload, "{case}: payload of {id}");
        if let Some(received) = ledger.received.get(id) {
            assert!(
                count >= received,
                "{case}: receive count of {id} went down: {count} < {received}"
            );
        }
    }
    for id in &ledger.rejected {
        assert!(
            letters.iter().any(|l| l.id() == *id),
            "{case}: dead letter {id} is missing"
        );
    }
}

#[test]
fn every_promise_survives_a_power_cut_at_every_point() {
    let mut cuts = 0;
    for cut_after in 0.. {
        let disk = SimStorage::new();
        let clock = ManualClock::new();
        let mut ledger = Ledger::default();
        disk.cut_power_after(cut_after);
        // The power may go while opening, too.
        let finished = try_open(&disk, &clock)
            .is_ok_and(|queue| workload(&queue, &clock, &mut ledger).is_some());
        for torn in [Torn::Lost, Torn::Prefix(9), Torn::Zeroed(40)] {
            let case = format!("cut after {cut_after} operations, torn {torn:?}");
            check(&disk.crash(torn), &clock, &ledger, &case);
        }
        cuts += 1;
        if finished && !disk.power_is_cut() {
            break;
        }
        assert!(cut_after < 10_000, "the workload never finished");
    }
    assert!(cuts > 50, "only {cuts} cut points");
}

#[test]
fn a_message_that_kills_every_delivery_ends_dead_lettered_after_max_receives_restarts() {
    let mut disk = SimStorage::new();
    let clock = ManualClock::new();
    let id = open(&disk, &clock).producer().send(7).unwrap();
    for attempt in 1..=3 {
        let queue = open(&disk, &clock);
        let delivery = queue.consumer().try_recv().unwrap();
        assert_eq!(delivery.receive_count(), attempt);
        // The process dies while handling it: the disk is what it is now.
        let crashed = disk.crash(Torn::Lost);
        drop(delivery);
        drop(queue);
        disk = crashed;
    }
    let queue = open(&disk, &clock);
    assert!(matches!(queue.consumer().try_recv(), Err(RecvError::Empty)));
    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].id(), letters[0].receive_count()), (id, 3));
}

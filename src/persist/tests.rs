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
    /// The subjects of the operation that failed: it may or may not have
    /// taken effect (its record may be written, only not synced).
    uncertain: BTreeSet<MessageId>,
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
            Err(RecvError::Timeout | RecvError::Empty) => continue,
            Err(_) => return None,
        };
        if round == 3 {
            // The last batch is acknowledged whole.
            let ids: Vec<_> = batch
                .messages()
                .map(|m| (m.id(), m.receive_count()))
                .collect();
            for &(id, receive_count) in &ids {
                ledger.received.insert(id, receive_count);
                ledger.uncertain.insert(id);
            }
            batch.ack().ok()?;
            for (id, _) in ids {
                ledger.gone.insert(id);
                ledger.uncertain.remove(&id);
            }
            continue;
        }
        for delivery in batch.into_deliveries() {
            let id = delivery.id();
            ledger.received.insert(id, delivery.receive_count());
            ledger.uncertain.insert(id);
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
            ledger.uncertain.remove(&id);
        }
        clock.advance(6 * SEC);
    }
    let dead = queue.dead_letters();
    if let Some(&id) = ledger.rejected.iter().next() {
        ledger.uncertain.insert(id);
        dead.redrive(id).ok()?;
        ledger.uncertain.remove(&id);
        ledger.rejected.remove(&id);
        ledger.received.insert(id, 0);
    }
    let in_dlq: Vec<MessageId> = dead.list().iter().map(|l| l.id()).collect();
    ledger.uncertain.extend(in_dlq.iter().copied());
    dead.purge().ok()?;
    for id in &in_dlq {
        ledger.uncertain.remove(id);
    }
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
        if ledger.uncertain.contains(id) {
            continue;
        }
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
    for id in ledger.rejected.difference(&ledger.uncertain) {
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
    eprintln!("queue power cuts: {cuts} cut points, each with 3 kinds of torn tail");
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

// Regressions found in review: each failed before its fix.

fn sim_builder(clock: &ManualClock) -> crate::Builder<u32> {
    Queue::builder().path("sim").clock(clock.clone())
}

fn on(disk: &SimStorage) -> Arc<dyn Storage> {
    Arc::new(disk.clone())
}

#[test]
fn regression_a_key_survives_a_reopen_when_an_older_live_message_holds_it() {
    let disk = SimStorage::new();
    let clock = ManualClock::new();
    let open = || {
        sim_builder(&clock)
            .dedup_window(60 * SEC)
            .open_on_storage(on(&disk))
            .unwrap()
    };
    let queue = open();
    let producer = queue.producer();
    // A holds key k but is delayed an hour, long past its key's window.
    producer
        .send_with(1, SendOptions::new().key("k").delay(3600 * SEC))
        .unwrap();
    clock.advance(120 * SEC);
    // B takes the key anew and is acked.
    assert!(!producer
        .send_with(2, SendOptions::new().key("k"))
        .unwrap()
        .is_duplicate());
    queue.consumer().try_recv().unwrap().ack().unwrap();
    drop((producer, queue));

    let queue = open();
    let again = queue
        .producer()
        .send_with(2, SendOptions::new().key("k"))
        .unwrap();
    assert!(again.is_duplicate(), "B's key was forgotten: {again:?}");
}

#[test]
fn regression_an_overlong_key_is_refused_and_claims_nothing() {
    let disk = SimStorage::new();
    let clock = ManualClock::new();
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = events.clone();
    let queue = sim_builder(&clock)
        .max_message_bytes(1024)
        .on_event(move |event| seen.lock().push(event.clone()))
        .open_on_storage(on(&disk))
        .unwrap();
    let producer = queue.producer();
    let key = "x".repeat(crate::MAX_KEY_BYTES + 1);
    for _ in 0..2 {
        let refused = producer.send_with(5, SendOptions::new().key(key.as_str()));
        assert!(
            matches!(
                refused,
                Err(crate::SendError::KeyTooLong { message: 5, .. })
            ),
            "{refused:?}"
        );
    }
    assert_eq!(
        producer.send(6).unwrap(),
        MessageId(1),
        "no id was used, nothing poisoned"
    );
    assert!(events.lock().is_empty(), "{:?}", events.lock());
}

#[test]
fn regression_large_batches_fit_in_frames() {
    let disk = SimStorage::new();
    let clock = ManualClock::new();
    let queue = sim_builder(&clock)
        .max_message_bytes(1024)
        .capacity(20_000)
        .open_on_storage(on(&disk))
        .unwrap();
    queue.producer().send_batch((0..6000).collect()).unwrap();
    let batch = queue.consumer().recv_batch(6000, Duration::ZERO).unwrap();
    assert_eq!(batch.len(), 6000);
    assert!(batch.iter().zip(0..).all(|(payload, n)| *payload == n));
}

#[test]
fn regression_an_event_hook_may_call_back_when_the_journal_fails() {
    let disk = SimStorage::new();
    let clock = ManualClock::new();
    let cell: Arc<std::sync::OnceLock<Queue<u32>>> = Arc::new(std::sync::OnceLock::new());
    let hook_cell = cell.clone();
    let queue = sim_builder(&clock)
        .on_event(move |event| {
            if let (crate::Event::Poisoned { .. }, Some(queue)) = (event, hook_cell.get()) {
                let _ = queue.stats(); // a hook that looks at the queue
            }
        })
        .open_on_storage(on(&disk))
        .unwrap();
    queue.producer().send_batch(vec![1, 2]).unwrap();
    let consumer = queue.consumer();
    let (first, second) = (consumer.try_recv().unwrap(), consumer.try_recv().unwrap());
    // A release nobody waits for fails in the writer; nobody is told yet.
    disk.fail_write(1);
    let _ = first.nack();
    let deadline = std::time::Instant::now() + 10 * SEC;
    while !queue.journal_poisoned() {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never failed"
        );
        std::thread::yield_now();
    }
    let _ = cell.set(queue);
    // The next dead-lettering hears of it first, with the store's lock taken.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(tx.send(second.dead_letter("bad"))));
    let settled = rx.recv_timeout(10 * SEC).expect("dead_letter deadlocked");
    assert!(
        matches!(settled, Err(crate::SettleError::Storage(_))),
        "{settled:?}"
    );
}

#[test]
fn regression_a_duplicate_is_reported_only_once_its_original_is_durable() {
    let clock = ManualClock::new();
    for round in 0..40u32 {
        let disk = SimStorage::new();
        disk.sync_delay(Duration::from_millis(2));
        let queue: Arc<Queue<Vec<u8>>> = Arc::new(
            Queue::builder()
                .path("sim")
                .clock(clock.clone())
                .open_on_storage(on(&disk))
                .unwrap(),
        );
        let key = format!("k{round}");
        let body = vec![round as u8; 100_000];
        let start = Arc::new(std::sync::Barrier::new(2));
        let original = {
            let (queue, key, body, start) =
                (queue.clone(), key.clone(), body.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                queue
                    .producer()
                    .send_with(body, SendOptions::new().key(key.as_str()))
            })
        };
        start.wait();
        let resent = queue
            .producer()
            .send_with(body, SendOptions::new().key(key.as_str()));
        // The moment a duplicate is reported, cut the power.
        let crashed =
            matches!(resent, Ok(crate::Sent::Duplicate(_))).then(|| disk.crash(Torn::Lost));
        original.join().unwrap().unwrap();
        drop(queue);
        if let Some(crashed) = crashed {
            let queue: Queue<Vec<u8>> = Queue::builder()
                .path("sim")
                .clock(clock.clone())
                .open_on_storage(on(&crashed))
                .unwrap();
            assert!(
                queue.consumer().try_recv().is_ok(),
                "round {round}: the original was lost"
            );
        }
    }
}

#[test]
fn regression_a_long_dead_letter_reason_is_cut_and_recorded() {
    let disk = SimStorage::new();
    let clock = ManualClock::new();
    let open = || {
        sim_builder(&clock)
            .max_message_bytes(1024)
            .open_on_storage(on(&disk))
            .unwrap()
    };
    let queue = open();
    queue.producer().send(9).unwrap();
    let delivery = queue.consumer().try_recv().unwrap();
    delivery.dead_letter("r".repeat(70_000)).unwrap();
    let letters = queue.dead_letters().list();
    let crate::DeadLetterReason::Rejected(reason) = letters[0].reason() else {
        panic!("{:?}", letters[0].reason());
    };
    assert_eq!(reason.len(), crate::MAX_TEXT_BYTES);
    assert_eq!(queue.dead_letters().purge(), Ok(1));
    queue.producer().send(10).unwrap();
    drop(queue);

    let queue = open();
    let consumer = queue.consumer();
    let mut back = Vec::new();
    while let Ok(delivery) = consumer.try_recv() {
        back.push(*delivery);
        delivery.ack().unwrap();
    }
    assert_eq!(back, [10], "the purged message came back");
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Write(u64),
    Sync(u64),
    SpaceLeft(u64),
}

#[test]
fn a_failed_write_or_sync_or_a_full_disk_poisons_the_queue_and_loses_nothing_acknowledged() {
    let mut cases = 0;
    for kind in 0..3 {
        for n in 1.. {
            let fault = match kind {
                0 => Fault::Write(n),
                1 => Fault::Sync(n),
                _ => Fault::SpaceLeft((n - 1) * 150),
            };
            let disk = SimStorage::new();
            let clock = ManualClock::new();
            let mut ledger = Ledger::default();
            let queue = open(&disk, &clock);
            match fault {
                Fault::Write(n) => disk.fail_write(n),
                Fault::Sync(n) => disk.fail_sync(n),
                Fault::SpaceLeft(bytes) => disk.limit_space(bytes),
            }
            let finished = workload(&queue, &clock, &mut ledger).is_some();
            if !finished {
                // Poisoned: whatever needs a record fails from now on.
                let refused = queue.producer().send(1_000);
                assert!(
                    matches!(&refused, Err(crate::SendError::Storage { error, .. }) if error.is_poisoned()),
                    "{fault:?}: a send after the failure returned {refused:?}"
                );
                if let Fault::SpaceLeft(_) = fault {
                    let Err(crate::SendError::Storage { error, .. }) = refused else {
                        unreachable!()
                    };
                    assert!(error.is_disk_full(), "{fault:?}: {error}");
                }
            }
            drop(queue);
            // What the disk holds, and what a restarted process would find.
            check(
                &disk.crash(Torn::Lost),
                &clock,
                &ledger,
                &format!("{fault:?}, power lost"),
            );
            check(
                &disk.fork(),
                &clock,
                &ledger,
                &format!("{fault:?}, restarted"),
            );
            cases += 1;
            if finished {
                break;
            }
            assert!(n < 10_000, "the workload never finished");
        }
    }
    eprintln!("queue faults: {cases} failed writes, failed syncs and full disks");
    assert!(cases > 30, "only {cases} fault cases");
}

/// `redrive_all` and `redrive_where` wait once for all the messages they
/// move, not for one sync per message, and report none as redriven
/// before their records are on disk.
#[test]
fn redrive_all_and_where_commit_once() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock);
    let producer = queue.producer();
    let consumer = queue.consumer();
    for i in 0..100 {
        producer.send(i).unwrap();
    }
    for _ in 0..100 {
        consumer.try_recv().unwrap().dead_letter("bad").unwrap();
    }
    let dead = queue.dead_letters();
    // The writer syncs each round while the redrive logs its records, so
    // a few syncs may happen; waiting per message made exactly one sync
    // per message (50 and 50). Slow syncs keep the rounds few.
    storage.sync_delay(Duration::from_millis(10));
    let before = storage.syncs();
    assert_eq!(dead.redrive_where(|l| l.payload() % 2 == 0).unwrap(), 50);
    let after_where = storage.syncs();
    assert_eq!(dead.redrive_all().unwrap(), 50);
    let after_all = storage.syncs();
    let syncs = (after_where - before, after_all - after_where);
    assert!(syncs.0 < 25 && syncs.1 < 25, "syncs: {syncs:?}");
    // What they reported is on disk.
    drop((producer, consumer, dead, queue));
    let reopened = open(&storage.crash(Torn::Lost), &clock);
    assert_eq!(reopened.stats().ready, 100);
    assert!(reopened.dead_letters().is_empty());
}

/// `durable_receives(false)`: a receive is recorded in order but does not
/// wait for the disk. Shown with a sync that fails: the default receive
/// reports the failure and hands out nothing; the lazy one has already
/// handed out the message, whose receive is then lost with the log (it
/// comes back with its old receive count), while the ack that would
/// have waited for it is refused.
#[test]
fn receives_wait_for_the_disk_unless_asked_not_to() {
    for durable in [true, false] {
        let storage = SimStorage::new();
        let clock = ManualClock::new();
        let open = |storage: &SimStorage| {
            Queue::<u32>::builder()
                .path("sim")
                .clock(clock.clone())
                .durable_receives(durable)
                .open_on_storage(Arc::new(storage.clone()))
                .unwrap()
        };
        let queue = open(&storage);
        queue.producer().send(7).unwrap();
        storage.fail_sync(1);
        let consumer = queue.consumer();
        match consumer.try_recv() {
            Ok(delivery) => {
                assert!(!durable, "a durable receive returned before its sync");
                assert_eq!((*delivery, delivery.receive_count()), (7, 1));
                assert!(delivery.ack().is_err(), "ack after a failed sync");
            }
            Err(RecvError::Storage(_)) => assert!(durable, "a lazy receive waited"),
            Err(other) => panic!("durable {durable}: {other:?}"),
        }
        drop((consumer, queue));
        let reopened = open(&storage.crash(Torn::Lost));
        let delivery = reopened.consumer().try_recv().unwrap();
        assert_eq!(
            (*delivery, delivery.receive_count()),
            (7, 1),
            "durable {durable}"
        );
    }
}

//! Persistence seen from outside: what a reopened queue holds, what its
//! directory refuses, and what its files look like (DESIGN section 3,
//! `docs/FORMAT.md`).
//!
//! A clean reopen drops every handle and opens the directory again. A crash
//! is imitated by copying the directory while the queue is still open
//! ([`crash_image`]): after `sync`, that copy is exactly what a crash at
//! that moment leaves (the LOCK file is copied, but not the lock). The real
//! `kill -9` is `tests/crash_kill.rs`; power cuts at every storage
//! operation, truncation at every offset and injected I/O failures are the
//! crate's own tests (`src/persist/tests.rs`, `src/wal/tests/`).

mod common;

use common::{NS, SEC};
use spool::{
    Backoff, Builder, DeadLetterReason, Durability, ManualClock, OpenError, Queue, RecvError,
    SendError, SendOptions, Sent,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

const LEASE: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(300);

/// A persistent queue of `u32` in `dir`, on `clock`.
fn builder(dir: &Path, clock: &ManualClock) -> Builder<u32> {
    Queue::builder()
        .path(dir)
        .clock(clock.clone())
        .visibility_timeout(LEASE)
        .dedup_window(WINDOW)
        .max_receives(3)
        .backoff(Backoff::None)
}

fn open(dir: &Path, clock: &ManualClock) -> Queue<u32> {
    builder(dir, clock).open().unwrap()
}

/// The write-ahead files of `dir`, in log order.
fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    files.sort();
    files
}

/// What a crash of `queue` would leave in `dir` right now: a copy of the
/// directory, taken after everything recorded so far reached the disk.
fn crash_image(queue: &Queue<u32>, dir: &Path) -> TempDir {
    queue.sync().unwrap();
    let image = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, image.path().join(path.file_name().unwrap())).unwrap();
    }
    image
}

/// Receives every ready message: (payload, receive count), in order.
fn drain(queue: &Queue<u32>) -> Vec<(u32, u32)> {
    let consumer = queue.consumer();
    let mut got = Vec::new();
    loop {
        match consumer.try_recv() {
            Ok(delivery) => {
                got.push((*delivery, delivery.receive_count()));
                delivery.ack().unwrap();
            }
            Err(RecvError::Empty) => return got,
            Err(other) => panic!("recv: {other:?}"),
        }
    }
}

fn keyed(key: &str) -> SendOptions {
    SendOptions::new().key(key)
}

#[test]
fn ready_messages_come_back_in_order_with_their_receive_counts_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (first_enqueued, last_id);
    {
        let queue = open(dir.path(), &clock);
        let (producer, consumer) = (queue.producer(), queue.consumer());
        for payload in 1..=5 {
            producer.send(payload).unwrap();
            clock.advance(SEC);
        }
        let one = consumer.try_recv().unwrap();
        first_enqueued = one.enqueued_at();
        drop(one); // a nack: 1 goes to the back
        clock.advance(SEC);
        consumer.try_recv().unwrap().fail("boom").unwrap(); // 2, to the back
        clock.advance(SEC);
        consumer.try_recv().unwrap().ack().unwrap(); // 3, gone
        last_id = producer.send(6).unwrap();
        // In memory now: 4, 5, 1, 2, 6.
        assert_eq!(queue.stats().ready, 5);
    }

    let queue = open(dir.path(), &clock);
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (5, 0, 0));
    assert_eq!(
        (stats.sent, stats.acked, stats.nacked),
        (0, 0, 0),
        "counters restart"
    );
    let consumer = queue.consumer();
    let four = consumer.try_recv().unwrap();
    assert_eq!((*four, four.receive_count()), (4, 1));
    four.nack().unwrap(); // to the back, behind 6
    let one_after_five = [consumer.try_recv().unwrap(), consumer.try_recv().unwrap()];
    assert_eq!((*one_after_five[0], *one_after_five[1]), (5, 1));
    let one = &one_after_five[1];
    assert_eq!(one.receive_count(), 2);
    assert_eq!(one.enqueued_at(), first_enqueued);
    drop(one_after_five);
    assert_eq!(drain(&queue), [(2, 2), (6, 1), (4, 2), (5, 2), (1, 3)]);

    // Ids are never reused, even once every message was acknowledged.
    drop((consumer, queue));
    let queue = open(dir.path(), &clock);
    assert_eq!(queue.stats().ready, 0);
    let next = queue.producer().send(7).unwrap();
    assert!(next > last_id, "{next} reuses an id up to {last_id}");
}

#[test]
fn delayed_messages_keep_their_remaining_delay() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let queue = open(dir.path(), &clock);
        let options = SendOptions::new().delay(Duration::from_secs(10));
        queue.producer().send_with(1, options).unwrap();
        queue.producer().send(2).unwrap();
        queue
            .consumer()
            .try_recv()
            .unwrap()
            .retry_after(20 * SEC)
            .unwrap();
        clock.advance(4 * SEC);
    }

    let queue = open(dir.path(), &clock);
    let consumer = queue.consumer();
    assert_eq!((queue.stats().delayed, queue.stats().ready), (2, 0));
    clock.advance(6 * SEC - NS);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(NS);
    let delivery = consumer.try_recv().unwrap();
    assert_eq!((*delivery, delivery.receive_count()), (1, 1));
    delivery.ack().unwrap();
    clock.advance(10 * SEC - NS);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(NS);
    let delivery = consumer.try_recv().unwrap();
    assert_eq!((*delivery, delivery.receive_count()), (2, 2));
}

#[test]
fn dead_letters_keep_their_reason_errors_receive_count_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let before: Vec<_>;
    {
        let queue = open(dir.path(), &clock);
        let (producer, consumer) = (queue.producer(), queue.consumer());
        producer.send_with(1, keyed("one")).unwrap();
        for attempt in 1..=3 {
            clock.advance(SEC);
            let delivery = consumer.try_recv().unwrap();
            assert_eq!(*delivery, 1);
            delivery.fail(format!("attempt {attempt}")).unwrap();
        }
        clock.advance(SEC);
        producer.send(2).unwrap();
        clock.advance(SEC);
        consumer
            .try_recv()
            .unwrap()
            .dead_letter("bad input")
            .unwrap();
        before = queue.dead_letters().list();
        assert_eq!(before.len(), 2);
    }

    let queue = open(dir.path(), &clock);
    let after = queue.dead_letters().list();
    assert_eq!(queue.stats().dead_letters, 2);
    let fields = |l: &spool::DeadLetter<u32>| {
        (
            l.id(),
            l.key().map(str::to_owned),
            *l.payload(),
            l.receive_count(),
            l.enqueued_at(),
            l.dead_lettered_at(),
            l.reason().clone(),
            l.errors().to_vec(),
        )
    };
    let before: Vec<_> = before.iter().map(fields).collect();
    let after: Vec<_> = after.iter().map(fields).collect();
    assert_eq!(after, before);
    assert_eq!(after[0].6, DeadLetterReason::MaxReceives(3));
    assert_eq!(after[0].7, ["attempt 1", "attempt 2", "attempt 3"]);
    assert_eq!(after[1].6, DeadLetterReason::Rejected("bad input".into()));
    assert_eq!(after[1].3, 1);

    // They can leave the dead-letter queue as they could before, and that
    // survives too.
    queue.dead_letters().redrive(after[0].0).unwrap();
    drop(queue);
    let queue = open(dir.path(), &clock);
    assert_eq!(queue.dead_letters().len(), 1);
    assert_eq!(drain(&queue), vec![(1, 1)]);
    assert_eq!(queue.dead_letters().purge().unwrap(), 1);
    drop(queue);
    let queue = open(dir.path(), &clock);
    assert!(queue.dead_letters().is_empty());
    assert_eq!(queue.stats().ready, 0);
}

#[test]
fn idempotency_keys_survive_a_reopen_for_the_rest_of_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (acked, live);
    {
        let queue = open(dir.path(), &clock);
        acked = queue.producer().send_with(1, keyed("acked")).unwrap().id();
        live = queue.producer().send_with(2, keyed("live")).unwrap().id();
        queue.consumer().try_recv().unwrap().ack().unwrap();
    }
    clock.advance(WINDOW - NS);

    let queue = open(dir.path(), &clock);
    let producer = queue.producer();
    assert_eq!(
        producer.send_with(1, keyed("acked")).unwrap(),
        Sent::Duplicate(acked)
    );
    assert_eq!(
        producer.send_with(2, keyed("live")).unwrap(),
        Sent::Duplicate(live)
    );
    match producer.send_with(3, keyed("acked")) {
        Err(SendError::KeyConflict { message, original }) => {
            assert_eq!((message, original), (3, acked));
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
    assert_eq!(queue.stats().ready, 1);
    drop((producer, queue));
    clock.advance(NS);

    // The window ran out while the queue was closed.
    let queue = open(dir.path(), &clock);
    let again = queue.producer().send_with(1, keyed("acked")).unwrap();
    assert!(
        matches!(again, Sent::Enqueued(id) if id > live),
        "{again:?}"
    );
    let other = queue.producer().send_with(9, keyed("live")).unwrap();
    assert!(!other.is_duplicate());
    assert_eq!(drain(&queue), vec![(2, 1), (1, 1), (9, 1)]);
}

#[test]
fn messages_in_flight_at_a_crash_come_back_ready_with_their_receive_count() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let queue = open(dir.path(), &clock);
    for payload in 1..=5 {
        queue.producer().send(payload).unwrap();
    }
    clock.advance(SEC);
    let consumer = queue.consumer();
    consumer.try_recv().unwrap().nack().unwrap(); // 1: ready again
    let two = consumer.try_recv().unwrap();
    let _held = [consumer.try_recv().unwrap(), consumer.try_recv().unwrap()]; // 3, 4
    two.ack().unwrap();
    let image = crash_image(&queue, dir.path());
    drop(queue);
    clock.advance(SEC);

    let reopened = open(image.path(), &clock);
    let stats = reopened.stats();
    assert_eq!((stats.ready, stats.in_flight), (4, 0));
    let mut got = drain(&reopened);
    got.sort();
    assert_eq!(got, [(1, 2), (3, 2), (4, 2), (5, 1)]);
}

#[test]
fn a_message_that_crashes_every_delivery_is_dead_lettered_after_max_receives_restarts() {
    let clock = ManualClock::new();
    let first = tempfile::tempdir().unwrap();
    let queue = open(first.path(), &clock);
    let id = queue.producer().send(7).unwrap();
    let mut image = first;
    let mut queue = queue;
    for count in 1..=3 {
        let delivery = queue.consumer().try_recv().unwrap();
        assert_eq!((delivery.id(), delivery.receive_count()), (id, count));
        let crashed = crash_image(&queue, image.path());
        drop(delivery);
        drop(queue);
        image = crashed;
        clock.advance(SEC);
        queue = open(image.path(), &clock);
    }
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id(), id);
    assert_eq!(letters[0].receive_count(), 3);
    assert_eq!(letters[0].reason(), &DeadLetterReason::MaxReceives(3));
    assert_eq!(queue.stats().ready, 0);
    // And it stays there.
    drop(queue);
    let queue = open(image.path(), &clock);
    assert_eq!(queue.dead_letters().len(), 1);
}

#[test]
fn a_second_open_is_locked_until_every_handle_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let locked = |what: &str| match builder(dir.path(), &clock).open() {
        Err(OpenError::Locked { path }) => {
            assert!(path.contains(dir.path().to_str().unwrap()), "{path}");
        }
        Err(other) => panic!("{what}: expected Locked, got {other}"),
        Ok(_) => panic!("{what}: opened twice"),
    };
    {
        let queue = open(dir.path(), &clock);
        queue.producer().send(1).unwrap();
        locked("queue alive");
    }
    type Handle = Box<dyn FnOnce(&Queue<u32>) -> Box<dyn std::any::Any>>;
    let handles: Vec<(&str, Handle)> = vec![
        ("producer", Box::new(|q| Box::new(q.producer()))),
        ("consumer", Box::new(|q| Box::new(q.consumer()))),
        ("dead letters", Box::new(|q| Box::new(q.dead_letters()))),
        (
            "delivery",
            Box::new(|q| Box::new(q.consumer().try_recv().unwrap())),
        ),
    ];
    for (what, make) in handles {
        let queue = open(dir.path(), &clock);
        let handle = make(&queue);
        drop(queue);
        locked(what);
        drop(handle);
        let queue = builder(dir.path(), &clock).open();
        let queue = queue.unwrap_or_else(|e| panic!("after dropping the {what}: {e}"));
        assert_eq!(queue.stats().ready, 1, "after the {what}");
    }
}

#[test]
fn a_directory_of_another_message_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    open(dir.path(), &clock).producer().send(1).unwrap();

    let other = Queue::<String>::builder().path(dir.path()).open();
    match other {
        Err(OpenError::WrongMessageType { file }) => {
            let name = Path::new(&file).file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("wal-") && name.ends_with(".log"), "{file}");
        }
        Err(other) => panic!("expected WrongMessageType, got {other}"),
        Ok(_) => panic!("a queue of u32 opened as a queue of String"),
    }
    // The refusal changed nothing.
    assert_eq!(drain(&open(dir.path(), &clock)), vec![(1, 1)]);
}

#[cfg(unix)]
#[test]
fn every_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let queue = builder(dir.path(), &clock)
        .segment_size(4 << 10)
        .open()
        .unwrap();
    for payload in 0..200 {
        queue.producer().send(payload).unwrap();
    }
    let files: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 3, "{files:?}"); // LOCK and segments
    assert!(files.iter().any(|f| f.ends_with("LOCK")));
    for file in files {
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

/// Sends `payloads` one at a time to a fresh queue in `dir` and closes it;
/// returns the file they went to and where each frame starts and ends.
fn frames_of(dir: &Path, clock: &ManualClock, payloads: u32) -> (PathBuf, Vec<u64>) {
    let queue = open(dir, clock);
    let file = wal_files(dir).pop().unwrap();
    let mut bounds = vec![fs::metadata(&file).unwrap().len()];
    for payload in 0..payloads {
        queue.producer().send(payload).unwrap();
        bounds.push(fs::metadata(&file).unwrap().len());
    }
    drop(queue);
    assert_eq!(wal_files(dir), std::slice::from_ref(&file));
    assert_eq!(fs::metadata(&file).unwrap().len(), *bounds.last().unwrap());
    (file, bounds)
}

#[test]
fn a_torn_last_record_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (file, bounds) = frames_of(dir.path(), &clock, 10);
    let last_frame = bounds[10] - bounds[9];
    let cut = 5;
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(bounds[10] - cut)
        .unwrap();

    let queue = open(dir.path(), &clock);
    let report = queue.recovery_report().unwrap();
    assert_eq!(report.torn_bytes, last_frame - cut);
    assert_eq!(report.frames, 9);
    assert!(report.salvaged.is_empty());
    let payloads: Vec<u32> = drain(&queue).into_iter().map(|(p, _)| p).collect();
    assert_eq!(payloads, (0..9).collect::<Vec<_>>());

    // Repaired for good: the next open finds nothing torn.
    drop(queue);
    let queue = open(dir.path(), &clock);
    assert_eq!(queue.recovery_report().unwrap().torn_bytes, 0);
}

#[test]
fn a_damaged_record_in_the_middle_is_an_error_unless_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let (file, bounds) = frames_of(dir.path(), &clock, 10);
    // A byte in the body of the third frame, which seven frames follow.
    let mut bytes = fs::read(&file).unwrap();
    let damaged = usize::try_from(bounds[2]).unwrap() + 20;
    bytes[damaged] ^= 0x40;
    fs::write(&file, &bytes).unwrap();

    match builder(dir.path(), &clock).open() {
        Err(OpenError::Corrupted {
            file: f, offset, ..
        }) => {
            assert_eq!(Path::new(&f).file_name(), file.file_name(), "{f}");
            assert_eq!(offset, bounds[2]);
        }
        Err(other) => panic!("expected Corrupted, got {other}"),
        Ok(_) => panic!("opened a damaged log without salvage"),
    }
    // The refusal changed nothing: it is refused again.
    assert!(matches!(
        builder(dir.path(), &clock).open(),
        Err(OpenError::Corrupted { .. })
    ));

    let queue = builder(dir.path(), &clock).salvage(true).open().unwrap();
    let report = queue.recovery_report().unwrap();
    assert_eq!(report.salvaged.len(), 1, "{report:?}");
    let region = &report.salvaged[0];
    assert_eq!(Path::new(&region.file).file_name(), file.file_name());
    assert_eq!(
        (region.offset, region.len),
        (bounds[2], bounds[3] - bounds[2])
    );
    let payloads: Vec<u32> = drain(&queue).into_iter().map(|(p, _)| p).collect();
    assert_eq!(payloads, [0, 1, 3, 4, 5, 6, 7, 8, 9]);

    // The damage left the disk: an ordinary open works again.
    drop(queue);
    let queue = open(dir.path(), &clock);
    assert!(queue.recovery_report().unwrap().salvaged.is_empty());
    assert_eq!(queue.stats().ready, 0);
}

#[test]
fn a_message_larger_than_max_message_bytes_is_refused_and_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let queue: Queue<String> = Queue::builder()
        .path(dir.path())
        .max_message_bytes(100)
        .open()
        .unwrap();
    let producer = queue.producer();
    producer.send("x".repeat(90)).unwrap();
    let big = "y".repeat(200);
    match producer.send(big.clone()) {
        Err(SendError::TooLarge { message, size, max }) => {
            assert_eq!(message, big);
            assert!(size > 200, "{size}");
            assert_eq!(max, 100);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let batch = vec!["ok".to_string(), big.clone()];
    match producer.send_batch(batch.clone()) {
        Err(SendError::TooLarge { message, max, .. }) => {
            assert_eq!((message, max), (batch, 100));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(queue.stats().ready, 1);
    drop((producer, queue));
    let queue: Queue<String> = Queue::builder().path(dir.path()).open().unwrap();
    assert_eq!(queue.stats().ready, 1);
}

#[test]
fn every_durability_level_reopens_everything_after_a_clean_drop() {
    let levels = [
        Durability::Sync,
        Durability::Interval(Duration::from_millis(50)),
        Durability::None,
    ];
    for durability in levels {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let with = |b: Builder<u32>| b.durability(durability).open().unwrap();
        let rejected;
        {
            let queue = with(builder(dir.path(), &clock));
            let ids = queue.producer().send_batch((0..100).collect()).unwrap();
            assert_eq!(ids.len(), 100);
            clock.advance(SEC);
            let consumer = queue.consumer();
            for _ in 0..30 {
                consumer.try_recv().unwrap().ack().unwrap();
            }
            let dead = consumer.try_recv().unwrap();
            rejected = dead.id();
            dead.dead_letter("no").unwrap();
            let _in_flight = consumer.try_recv().unwrap(); // 31: dropped, nack
        }
        let queue = with(builder(dir.path(), &clock));
        let letters = queue.dead_letters().list();
        assert_eq!(letters.len(), 1, "{durability:?}");
        assert_eq!(letters[0].id(), rejected, "{durability:?}");
        let got = drain(&queue);
        let mut expected: Vec<(u32, u32)> = (32..100).map(|p| (p, 1)).collect();
        expected.push((31, 2));
        assert_eq!(got, expected, "{durability:?}");
    }
}

#[test]
fn disk_use_stays_bounded_under_churn() {
    const SEGMENT: u64 = 16 << 10;
    const ROUNDS: u32 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let queue: Queue<Vec<u8>> = Queue::builder()
        .backoff(Backoff::None)
        .path(dir.path())
        .durability(Durability::None) // the bound does not depend on it; fast
        .segment_size(SEGMENT)
        .visibility_timeout(Duration::from_secs(600))
        .open()
        .unwrap();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    // A few messages stay in flight throughout, as a slow job would: their
    // records must outlive every compaction.
    for i in 0..5u8 {
        producer.send(vec![i; 64]).unwrap();
    }
    let slow: Vec<_> = (0..5).map(|_| consumer.try_recv().unwrap()).collect();
    let mut most = 0;
    for i in 0..ROUNDS {
        producer.send(i.to_le_bytes().repeat(16)).unwrap();
        let mut delivery = consumer.try_recv().unwrap();
        if i % 3 == 0 {
            delivery.fail("retry me").unwrap(); // more records to reclaim
            delivery = consumer.try_recv().unwrap();
            assert_eq!(delivery.receive_count(), 2);
        }
        assert_eq!(*delivery, i.to_le_bytes().repeat(16));
        delivery.ack().unwrap();
        most = most.max(queue.disk_usage().unwrap());
    }
    // FORMAT.md section 8: below about 3 x live data + 4 thresholds (here
    // segments: the compactor runs beside the writer, which waits for it
    // only once two thresholds are waiting); the live data here (five
    // 64-byte messages) is well under 1 KiB.
    assert!(
        most <= 4 * SEGMENT + 3 * 1024,
        "disk use reached {most} bytes with {SEGMENT}-byte segments"
    );
    // Under `None` the writer may still be writing: let it finish before
    // comparing two readings of the directory. The compactor may still be
    // finishing too (it runs beside the writer): the readings agree once it
    // is done, and nothing else writes.
    queue.sync().unwrap();
    let agree = (0..1000).any(|_| {
        let on_disk: u64 = wal_files(dir.path())
            .iter()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let reported = queue.disk_usage().unwrap();
        reported == on_disk || {
            std::thread::sleep(Duration::from_millis(1));
            false
        }
    });
    assert!(agree, "disk_usage never matched the files");

    // What compaction kept is what was live: a crash now brings back the
    // five slow messages, and nothing else.
    queue.sync().unwrap();
    let image = copy_of_live_directory(dir.path());
    drop(slow);
    let reopened: Queue<Vec<u8>> = Queue::builder()
        .backoff(Backoff::None)
        .path(image.path())
        .open()
        .unwrap();
    let consumer = reopened.consumer();
    let back: Vec<_> = (0..5).map(|_| consumer.try_recv().unwrap()).collect();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    for (i, delivery) in (0..5u8).zip(&back) {
        assert_eq!((&**delivery, delivery.receive_count()), (&vec![i; 64], 2));
    }
}

/// A copy of a directory that an open queue may be compacting meanwhile:
/// any copy is a state the queue passed through, except one that missed a
/// file removed between the listing and its copy; such a copy is taken
/// again.
fn copy_of_live_directory(dir: &Path) -> tempfile::TempDir {
    'again: for _ in 0..100 {
        let image = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match fs::copy(&path, image.path().join(path.file_name().unwrap())) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'again,
                Err(e) => panic!("copy {}: {e}", path.display()),
            }
        }
        return image;
    }
    panic!("the directory kept changing");
}

/// DESIGN section 3: "Disk use stays bounded ... whatever the consumer
/// pattern", also for a queue reopened often (a CLI tool, a service in a
/// restart loop): every open starts a new segment, and opening compacts
/// once they pile up.
#[test]
fn reopening_often_keeps_disk_use_bounded() {
    const SEGMENT: u64 = 16 << 10;
    let dir = tempfile::tempdir().unwrap();
    let mut most = (0, 0);
    for i in 0..300u32 {
        let queue: Queue<Vec<u8>> = Queue::builder()
            .path(dir.path())
            .segment_size(SEGMENT)
            .open()
            .unwrap();
        queue.producer().send(i.to_le_bytes().repeat(16)).unwrap();
        queue.consumer().try_recv().unwrap().ack().unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        most = most.max((queue.disk_usage().unwrap(), files));
    }
    // Nothing is live: FORMAT.md section 8 promises below about 2 segments.
    assert!(
        most.0 <= 2 * SEGMENT + 4096,
        "300 opens with nothing live left {} bytes in {} files",
        most.0,
        most.1
    );
}

/// A manual clock whose coarse reading lags its precise one by a fixed
/// amount, as the `Clock` contract allows (a real coarse clock lags by up
/// to a few milliseconds).
#[derive(Debug, Clone)]
struct Lagging {
    inner: ManualClock,
    lag: Duration,
}

impl spool::Clock for Lagging {
    fn now(&self) -> std::time::SystemTime {
        self.inner.now()
    }

    fn now_coarse_nanos(&self) -> u64 {
        self.now_nanos() - self.lag.as_nanos() as u64
    }

    fn coarse_lag(&self) -> Duration {
        self.lag
    }

    fn register_waker(&self, waker: spool::ClockWaker) {
        self.inner.register_waker(waker)
    }
}

/// The order `work` leaves the ready messages in, in memory and after a
/// reopen of a persistent queue, on a clock whose coarse reading lags.
fn order_now_and_after_reopen(work: impl Fn(&Queue<u32>)) -> (Vec<u32>, Vec<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Lagging {
        inner: ManualClock::new(),
        lag: Duration::from_millis(3),
    };
    let builder = || Queue::<u32>::builder().clock(clock.clone());
    let drain = |queue: &Queue<u32>| -> Vec<u32> {
        let batch = queue.consumer().recv_batch(100, Duration::ZERO).unwrap();
        batch.iter().copied().collect()
    };
    let in_memory = builder().open().unwrap();
    work(&in_memory);
    {
        let persistent = builder().path(dir.path()).open().unwrap();
        work(&persistent);
    }
    let reopened = builder().path(dir.path()).open().unwrap();
    (drain(&in_memory), drain(&reopened))
}

#[test]
fn sends_keep_their_order_across_a_reopen_whatever_clock_reading_they_take() {
    // A keyed send reads the precise clock; a plain send right after it
    // must not be recorded as visible earlier.
    let (before, after) = order_now_and_after_reopen(|queue| {
        queue.producer().send_with(1, keyed("k")).unwrap();
        queue.producer().send(2).unwrap();
        queue.producer().send_batch(vec![3, 4]).unwrap();
    });
    assert_eq!(before, [1, 2, 3, 4]);
    assert_eq!(after, before);

    // A retried message goes behind what is sent after it, also on disk.
    let (before, after) = order_now_and_after_reopen(|queue| {
        queue.producer().send(1).unwrap();
        let delivery = queue.consumer().try_recv().unwrap();
        delivery.retry_after(Duration::ZERO).unwrap();
        queue.producer().send(2).unwrap();
    });
    assert_eq!(before, [1, 2]);
    assert_eq!(after, before);
}

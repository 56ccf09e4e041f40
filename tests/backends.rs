//! One behaviour suite, three backends: each test body runs on a queue in
//! memory, on a write-ahead file, and on a Redis server of its own
//! (`common/redis_server.rs`).
//!
//! A Redis queue keeps the server's clock, so these bodies use real time:
//! short visibility timeouts and delays, and waits bounded by
//! [`common::WAIT`] that assert on what arrives, never on how long it
//! took. The exact timing rules are tested on a manual clock in the other
//! files, on the local backends.
#![cfg(feature = "redis")]

mod common;

use common::redis_server::RedisServer;
use common::WAIT;
use spool::{
    Backoff, Builder, Cancelled, DeadLetterReason, Queue, RecvError, SendError, SendOptions, Sent,
    SettleError, Topic, Workers,
};
use std::time::Duration;

/// A short visibility timeout: long enough for a slow machine to settle
/// in time, short enough to wait for its expiry.
const LEASE: Duration = Duration::from_millis(600);

/// Where a test's queue lives; holds what must outlive the queue.
enum Place {
    Memory,
    Wal(PathBuf),
    Redis(RedisServer),
}

use std::path::PathBuf;

impl Place {
    fn memory() -> Self {
        Place::Memory
    }

    fn wal(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("spool-backends-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Place::Wal(dir)
    }

    fn redis() -> Self {
        Place::Redis(RedisServer::start())
    }

    /// A builder for queue `name` here, retrying at once unless the body
    /// sets a backoff.
    fn builder<T: spool::Message>(&self, name: &str) -> Builder<T> {
        let builder = Queue::builder().backoff(Backoff::None);
        match self {
            Place::Memory => builder.name(name),
            Place::Wal(dir) => builder.path(dir.join(name)),
            Place::Redis(server) => builder.redis(server.url(), name),
        }
    }

    fn open<T: spool::Message>(
        &self,
        configure: impl FnOnce(Builder<T>) -> Builder<T>,
    ) -> Queue<T> {
        configure(self.builder("q")).open().expect("open")
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Place::Wal(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs a body `fn(&Place)` on each backend, as three tests.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn memory() {
                    super::$name(&super::Place::memory());
                }

                #[test]
                fn wal() {
                    super::$name(&super::Place::wal(stringify!($name)));
                }

                #[test]
                fn redis() {
                    super::$name(&super::Place::redis());
                }
            }
        )*
    };
}

on_every_backend!(
    send_receive_ack_and_exact_stats,
    a_full_queue_refuses_and_frees_room_on_ack,
    an_expired_lease_is_fenced_and_the_message_comes_back,
    extend_keeps_the_lease,
    failures_dead_letter_after_max_receives_with_every_error,
    redrive_redrive_with_remove_and_purge,
    retry_after_and_delays_hide_a_message_until_due,
    idempotency_keys_drop_duplicates_and_refuse_conflicts,
    cancel_by_id_and_by_key,
    a_time_to_live_dead_letters_an_unreceived_message,
    close_refuses_sends_and_ends_receives_once_drained,
    batches_send_receive_settle_and_split,
    ack_batch_acknowledges_live_leases_only,
    async_calls_work_on_any_executor,
    a_worker_pool_processes_everything,
    a_topic_reaches_every_subscription,
    every_counter_stays_exact_through_every_path,
    a_batch_of_one_message_is_sent_once,
    every_batch_id_names_its_own_message,
    a_key_is_forgotten_once_its_window_ends,
);

#[cfg(feature = "tokio")]
on_every_backend!(an_async_worker_pool_processes_everything);

#[test]
fn another_message_type_is_refused_on_a_wal() {
    another_message_type_is_refused(&Place::wal("another_type"));
}

#[test]
fn another_message_type_is_refused_on_redis() {
    another_message_type_is_refused(&Place::redis());
}

fn send_receive_ack_and_exact_stats(place: &Place) {
    let queue: Queue<String> = place.open(|b| b.capacity(10));
    let producer = queue.producer();
    let first = producer.send("a".to_string()).unwrap();
    producer.send("b".to_string()).unwrap();
    let consumer = queue.consumer();
    let delivery = consumer.recv_timeout(WAIT).unwrap();
    assert_eq!(
        (delivery.id(), delivery.as_str(), delivery.receive_count()),
        (first, "a", 1)
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.sent, stats.capacity),
        (1, 1, 2, 10)
    );
    delivery.ack().unwrap();
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.acked), (1, 0, 1));
    assert_eq!(consumer.try_recv().unwrap().as_str(), "b");
}

fn a_full_queue_refuses_and_frees_room_on_ack(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.capacity(2));
    let producer = queue.producer();
    producer.send(1).unwrap();
    producer.send(2).unwrap();
    assert_eq!(producer.try_send(3), Err(SendError::Full(3)));
    let timed_out = producer.send_timeout(3, Duration::from_millis(50));
    assert_eq!(timed_out, Err(SendError::Timeout(3)));
    assert!(matches!(
        producer.try_send_batch(vec![4, 5, 6]),
        Err(SendError::Full(_))
    ));
    // In flight still counts against capacity; an ack frees a slot, and a
    // sender blocked for room goes on.
    let delivery = queue.consumer().try_recv().unwrap();
    let blocked = {
        let producer = producer.clone();
        common::in_thread(move || producer.send(3))
    };
    delivery.ack().unwrap();
    assert!(blocked.recv_timeout(WAIT).unwrap().is_ok());
    assert_eq!(queue.stats().ready, 2);
}

fn an_expired_lease_is_fenced_and_the_message_comes_back(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.visibility_timeout(LEASE));
    queue.producer().send(7).unwrap();
    let consumer = queue.consumer();
    let stale = consumer.try_recv().unwrap();
    // Invisible while leased, back once the lease runs out.
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    let again = consumer.recv_timeout(WAIT).unwrap();
    assert_eq!((*again, again.receive_count()), (7, 2));
    let id = stale.id();
    assert_eq!(stale.ack(), Err(SettleError::LeaseExpired { id }));
    again.ack().unwrap();
    let stats = queue.stats();
    assert_eq!(
        (stats.acked, stats.expired, stats.in_flight, stats.ready),
        (1, 1, 0, 0)
    );
}

fn extend_keeps_the_lease(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.visibility_timeout(LEASE));
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();
    let delivery = consumer.try_recv().unwrap();
    delivery.extend(Duration::from_secs(30)).unwrap();
    // Past the first deadline, nobody else gets it.
    assert_eq!(
        consumer.recv_timeout(LEASE * 2).unwrap_err(),
        RecvError::Timeout
    );
    delivery.ack().unwrap();
}

fn failures_dead_letter_after_max_receives_with_every_error(place: &Place) {
    let queue: Queue<String> = place.open(|b| b.max_receives(3));
    queue.producer().send("job".to_string()).unwrap();
    let consumer = queue.consumer();
    consumer.try_recv().unwrap().fail("first").unwrap();
    consumer.try_recv().unwrap().nack().unwrap();
    consumer.try_recv().unwrap().fail("third").unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason(), &DeadLetterReason::MaxReceives(3));
    assert_eq!(letters[0].errors(), ["first", "third"]);
    assert_eq!(letters[0].payload(), "job");
    let stats = queue.stats();
    assert_eq!(
        (stats.dead_letters, stats.dead_lettered, stats.nacked),
        (1, 1, 3)
    );
    // A consumer may also give up at once, with a reason.
    queue.producer().send("bad".to_string()).unwrap();
    consumer
        .try_recv()
        .unwrap()
        .dead_letter("unparseable")
        .unwrap();
    let letters = queue.dead_letters().list();
    assert_eq!(
        letters[1].reason(),
        &DeadLetterReason::Rejected("unparseable".into())
    );
}

fn redrive_redrive_with_remove_and_purge(place: &Place) {
    let queue: Queue<String> = place.open(|b| b.max_receives(1).capacity(2));
    let producer = queue.producer();
    let consumer = queue.consumer();
    let mut ids = Vec::new();
    for text in ["a", "b", "c", "d"] {
        ids.push(producer.send(text.to_string()).unwrap());
        consumer.try_recv().unwrap().fail("boom").unwrap();
    }
    let dlq = queue.dead_letters();
    assert_eq!(dlq.len(), 4);
    dlq.redrive(ids[0]).unwrap();
    dlq.redrive_with(ids[1], "B".to_string()).unwrap();
    // Full: the letter stays.
    assert!(matches!(
        dlq.redrive(ids[2]),
        Err(spool::RedriveError::Full { .. })
    ));
    let first = consumer.try_recv().unwrap();
    assert_eq!((first.as_str(), first.receive_count()), ("a", 1));
    first.ack().unwrap();
    let fixed = consumer.try_recv().unwrap();
    assert_eq!(fixed.as_str(), "B");
    fixed.ack().unwrap();
    let removed = dlq.remove(ids[2]).unwrap().unwrap();
    assert_eq!(removed.payload(), "c");
    assert!(dlq.remove(ids[2]).unwrap().is_none());
    assert_eq!(dlq.purge().unwrap(), 1);
    assert!(dlq.is_empty());
    assert_eq!(
        dlq.redrive(ids[3]),
        Err(spool::RedriveError::NotFound(ids[3]))
    );
    let stats = queue.stats();
    assert_eq!((stats.redriven, stats.purged), (2, 2));
}

fn retry_after_and_delays_hide_a_message_until_due(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer
        .send_with(1, SendOptions::new().delay(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(queue.stats().delayed, 1);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    let delivery = consumer.recv_timeout(WAIT).unwrap();
    delivery.retry_after(Duration::from_millis(300)).unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    let delivery = consumer.recv_timeout(WAIT).unwrap();
    assert_eq!(delivery.receive_count(), 2);
    delivery.ack().unwrap();
}

fn idempotency_keys_drop_duplicates_and_refuse_conflicts(place: &Place) {
    let queue: Queue<String> = place.open(|b| b);
    let producer = queue.producer();
    let keyed = || SendOptions::new().key("upload-42");
    let first = producer.send_with("x".to_string(), keyed()).unwrap();
    assert!(matches!(first, Sent::Enqueued(_)));
    let again = producer.send_with("x".to_string(), keyed()).unwrap();
    assert_eq!(again, Sent::Duplicate(first.id()));
    match producer.send_with("y".to_string(), keyed()) {
        Err(SendError::KeyConflict { original, .. }) => assert_eq!(original, first.id()),
        other => panic!("expected a key conflict, got {other:?}"),
    }
    // Acknowledged, the key is still remembered.
    queue.consumer().try_recv().unwrap().ack().unwrap();
    let after = producer.send_with("x".to_string(), keyed()).unwrap();
    assert_eq!(after, Sent::Duplicate(first.id()));
    let stats = queue.stats();
    assert_eq!((stats.sent, stats.duplicates), (1, 2));
}

/// Past its window a key is forgotten: the same key sends a new message
/// (on Redis the windows share a sorted set with the times to live).
fn a_key_is_forgotten_once_its_window_ends(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.dedup_window(Duration::from_millis(200)));
    let producer = queue.producer();
    let keyed = || SendOptions::new().key("once");
    let first = producer.send_with(1, keyed()).unwrap();
    assert!(matches!(first, Sent::Enqueued(_)));
    // A time to live beside it, in the same set on Redis: both come due.
    let ttl = SendOptions::new().delay(Duration::from_secs(60));
    producer
        .send_with(2, ttl.ttl(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let again = loop {
        match producer.send_with(1, keyed()).unwrap() {
            Sent::Duplicate(id) => assert_eq!(id, first.id()),
            sent => break sent,
        }
        assert!(std::time::Instant::now() < deadline, "the key never lapsed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(again, Sent::Enqueued(id) if id != first.id()));
    // The message sent with a time to live expired meanwhile or soon.
    while queue.dead_letters().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.dead_lettered), (2, 1));
}

fn cancel_by_id_and_by_key(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    let producer = queue.producer();
    let now = producer.send(1).unwrap();
    let later = producer
        .send_with(
            2,
            SendOptions::new().delay(Duration::from_secs(60)).key("k"),
        )
        .unwrap();
    assert_eq!(queue.cancel(now), Ok(Cancelled::Ready));
    assert_eq!(queue.cancel_key("k"), Ok((later.id(), Cancelled::Delayed)));
    assert_eq!(queue.cancel(now), Err(spool::CancelError::NotFound(now)));
    assert!(matches!(
        queue.cancel_key("unknown"),
        Err(spool::CancelError::UnknownKey(_))
    ));
    let stats = queue.stats();
    assert_eq!((stats.cancelled, stats.ready, stats.delayed), (2, 0, 0));
}

/// Found by review: on Redis a batch of one took the single send's path,
/// whose reply the batch did not expect, and failed after enqueueing.
fn a_batch_of_one_message_is_sent_once(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    let producer = queue.producer();
    let ids = producer.send_batch(vec![7]).unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(queue.stats().sent, 1);
    let delivery = queue.consumer().try_recv().unwrap();
    assert_eq!((delivery.id(), *delivery), (ids[0], 7));
    delivery.ack().unwrap();
}

/// Each id a batch send returns names the message it was given, across
/// ids of one to four digits (on Redis the library builds a batch's id
/// strings from a shared prefix and two digits, which a carry could get
/// wrong).
fn every_batch_id_names_its_own_message(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.capacity(2_000));
    let producer = queue.producer();
    let mut sent = std::collections::HashMap::new();
    // Batches of 37 and 64 from id 1 to past 1,100: every hundred is
    // crossed, some mid-batch, some at a batch's first message.
    let mut next = 0;
    for size in [37, 64].into_iter().cycle().take(23) {
        let batch: Vec<u32> = (next..next + size).collect();
        next += size;
        let ids = producer.send_batch(batch.clone()).unwrap();
        assert_eq!(ids.len(), batch.len());
        for (id, n) in ids.into_iter().zip(batch) {
            assert!(sent.insert(id, n).is_none(), "id {id} given twice");
        }
    }
    let consumer = queue.consumer();
    let mut seen = 0;
    while seen < sent.len() {
        let batch = consumer
            .recv_batch(500, Duration::from_secs(5))
            .expect("every message sent is received");
        for message in batch.messages() {
            let id = message.id();
            assert_eq!(sent.get(&id), Some(message.payload()), "{id}");
        }
        seen += batch.len();
        batch.ack().unwrap();
    }
    assert_eq!(queue.stats().ready, 0);
}

/// Every counter and gauge of `stats()` after each way a message can
/// come and go (on Redis, `sent` and `acked` are derived from the others,
/// not counted, so this pins the derivation).
fn every_counter_stays_exact_through_every_path(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.max_receives(2));
    let producer = queue.producer();
    let consumer = queue.consumer();
    let cancelled = producer.send(1).unwrap();
    let rejected = [2, 3, 4].map(|n| producer.send(n).unwrap())[2];
    producer.send_batch(vec![5, 6]).unwrap();
    producer.send_with(7, SendOptions::new().key("k")).unwrap();
    let again = producer.send_with(7, SendOptions::new().key("k")).unwrap();
    assert!(matches!(again, Sent::Duplicate(_)));
    let delay = SendOptions::new().delay(Duration::from_secs(600));
    producer.send_with(8, delay).unwrap();
    assert_eq!(queue.cancel(cancelled), Ok(Cancelled::Ready));
    // Whatever order the backend delivers in: 2, 5 and 7 are acked; 3 is
    // nacked twice (dead-lettered by max_receives); 4 is rejected; 6 is
    // nacked once, then held.
    let mut held = Vec::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 20, "more deliveries than messages");
        let delivery = match consumer.try_recv() {
            Ok(delivery) => delivery,
            Err(RecvError::Empty) => break,
            Err(other) => panic!("{other:?}"),
        };
        match (*delivery.payload(), delivery.receive_count()) {
            (2 | 5 | 7, _) => delivery.ack().unwrap(),
            (3, _) | (6, 1) => delivery.nack().unwrap(),
            (4, _) => delivery.dead_letter("bad").unwrap(),
            (6, _) => held.push(delivery),
            other => panic!("unexpected delivery {other:?}"),
        }
    }
    assert_eq!(held.len(), 1);
    let dlq = queue.dead_letters();
    assert_eq!(dlq.len(), 2);
    dlq.redrive(rejected).unwrap();
    assert_eq!(dlq.purge().unwrap(), 1);
    let stats = queue.stats();
    assert_eq!(
        (stats.sent, stats.duplicates, stats.cancelled, stats.acked),
        (8, 1, 1, 3)
    );
    assert_eq!(
        (
            stats.nacked,
            stats.dead_lettered,
            stats.redriven,
            stats.purged
        ),
        (3, 2, 1, 1)
    );
    assert_eq!(
        (
            stats.ready,
            stats.in_flight,
            stats.delayed,
            stats.dead_letters
        ),
        (1, 1, 1, 0)
    );
}

fn a_time_to_live_dead_letters_an_unreceived_message(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    let producer = queue.producer();
    // Delayed past its time to live: no consumer can receive it in time.
    let options = SendOptions::new()
        .delay(Duration::from_secs(60))
        .ttl(Duration::from_millis(200));
    producer.send_with(1, options).unwrap();
    let consumer = queue.consumer();
    let deadline = std::time::Instant::now() + WAIT;
    while queue.dead_letters().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        assert_eq!(
            consumer
                .recv_timeout(Duration::from_millis(50))
                .unwrap_err(),
            RecvError::Timeout
        );
    }
    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason(), &DeadLetterReason::Expired);
    let stats = queue.stats();
    assert_eq!((stats.delayed, stats.dead_lettered), (0, 1));
}

fn close_refuses_sends_and_ends_receives_once_drained(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    let producer = queue.producer();
    producer.send(1).unwrap();
    let consumer = queue.consumer();
    let waiting = {
        let consumer = queue.consumer();
        common::in_thread(move || {
            let first = consumer.recv().map(|d| {
                let value = *d;
                d.ack().unwrap();
                value
            });
            (first, consumer.recv().map(|d| *d))
        })
    };
    queue.close();
    assert!(producer.is_closed() && queue.is_closed());
    assert_eq!(producer.send(2), Err(SendError::Closed(2)));
    let (first, second) = waiting.recv_timeout(WAIT).unwrap();
    assert_eq!(first, Ok(1));
    assert_eq!(second, Err(RecvError::Closed));
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
}

fn batches_send_receive_settle_and_split(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    let producer = queue.producer();
    producer.send_batch((0..10).collect()).unwrap();
    let consumer = queue.consumer();
    let batch = consumer.recv_batch(4, WAIT).unwrap();
    assert_eq!(batch.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    batch.ack().unwrap();
    let batch = consumer.recv_batch(4, WAIT).unwrap();
    batch.nack().unwrap();
    let batch = consumer.recv_batch(100, WAIT).unwrap();
    assert_eq!(batch.len(), 6);
    let mut seen: Vec<u32> = batch.iter().copied().collect();
    seen.sort();
    assert_eq!(seen, [4, 5, 6, 7, 8, 9]);
    let deliveries = batch.into_deliveries();
    for delivery in deliveries {
        delivery.ack().unwrap();
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.acked, stats.nacked, stats.in_flight, stats.ready),
        (10, 4, 0, 0)
    );
}

fn ack_batch_acknowledges_live_leases_only(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.visibility_timeout(LEASE));
    let producer = queue.producer();
    producer.send(1).unwrap();
    let consumer = queue.consumer();
    let stale = consumer.try_recv().unwrap();
    let back = consumer.recv_timeout(WAIT).unwrap(); // 1 again, once its lease ran out
    producer.send(2).unwrap();
    let fresh = consumer.try_recv().unwrap();
    assert_eq!(consumer.ack_batch(vec![stale, fresh]).unwrap(), 1);
    back.ack().unwrap();
    assert_eq!(queue.stats().acked, 2);
}

fn async_calls_work_on_any_executor(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b);
    futures::executor::block_on(async {
        let producer = queue.producer();
        producer.send_async(1).await.unwrap();
        producer.send_batch_async(vec![2, 3]).await.unwrap();
        let consumer = queue.consumer();
        let delivery = consumer.recv_async().await.unwrap();
        assert_eq!(*delivery, 1);
        delivery.ack_async().await.unwrap();
        let batch = consumer.recv_batch_async(2, WAIT).await.unwrap();
        assert_eq!(batch.len(), 2);
        batch.nack_async().await.unwrap();
        queue.close();
        use futures::StreamExt;
        let mut total = 0;
        let mut stream = consumer.stream();
        while let Some(delivery) = stream.next().await {
            total += *delivery;
            delivery.ack_async().await.unwrap();
        }
        assert_eq!(total, 5);
    });
    assert_eq!(queue.stats().acked, 3);
}

fn a_worker_pool_processes_everything(place: &Place) {
    let queue: Queue<u32> = place.open(|b| b.capacity(1000));
    queue.producer().send_batch((0..200).collect()).unwrap();
    let pool = Workers::new(queue.consumer())
        .threads(3)
        .spawn(|job: &u32| {
            if job.is_multiple_of(50) {
                Err("flaky")
            } else {
                Ok(())
            }
        })
        .unwrap();
    queue.close();
    let report = pool.join(WAIT * 3);
    assert!(report.unfinished.is_empty());
    let totals = report.totals();
    // Every 50th always fails: dead-lettered after its receives.
    assert_eq!((totals.acked, queue.stats().dead_letters), (196, 4));
    assert_eq!(queue.stats().acked, totals.acked);
}

fn a_topic_reaches_every_subscription(place: &Place) {
    let topic: Topic<String> = Topic::new();
    let thumbnails = topic
        .subscribe("thumbnails", place.builder("thumbnails"))
        .unwrap();
    let search = topic.subscribe("search", place.builder("search")).unwrap();
    let published = topic.publish("cat.png".to_string()).unwrap();
    assert_eq!(published.len(), 2);
    for queue in [&thumbnails, &search] {
        let delivery = queue.consumer().recv_timeout(WAIT).unwrap();
        assert_eq!(delivery.as_str(), "cat.png");
        delivery.ack().unwrap();
    }
}

fn another_message_type_is_refused(place: &Place) {
    {
        let queue: Queue<String> = place.open(|b| b);
        queue.producer().send("text".to_string()).unwrap();
    }
    let other = place.builder::<(u64, u64)>("q").open();
    assert!(matches!(
        other,
        Err(spool::OpenError::WrongMessageType { .. })
    ));
}

#[cfg(feature = "tokio")]
fn an_async_worker_pool_processes_everything(place: &Place) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let queue: Queue<u32> = place.open(|b| b.capacity(1000).max_receives(2));
    runtime.block_on(async {
        let pool = spool::AsyncWorkers::new(queue.consumer())
            .concurrency(4)
            .spawn(|job: spool::Job<u32>| async move {
                tokio::task::yield_now().await;
                if job.is_multiple_of(25) {
                    Err(format!("{} failed", *job))
                } else {
                    Ok(())
                }
            })
            .unwrap();
        queue
            .producer()
            .send_batch_async((0..100).collect())
            .await
            .unwrap();
        queue.close();
        let report = pool.join(WAIT * 3).await;
        assert!(report.unfinished.is_empty());
        let totals = report.totals();
        assert_eq!((totals.acked, totals.failed), (96, 8));
    });
    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 4);
    assert_eq!(letters[0].errors(), ["0 failed", "0 failed"]);
}

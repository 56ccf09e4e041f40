//! Acknowledging many deliveries at once.

mod common;

use common::{manual, SEC};
use spool::{Queue, RecvError};
use std::time::Duration;

#[test]
fn ack_batch_acknowledges_every_current_lease_and_frees_their_slots() {
    let queue: Queue<u32> = Queue::builder().capacity(8).open().unwrap();
    let producer = queue.producer();
    producer.send_batch((0..8).collect()).unwrap();
    let consumer = queue.consumer();
    let batch = consumer.recv_batch(8, Duration::ZERO).unwrap();
    assert!(producer.try_send(99).is_err(), "full while in flight");

    assert_eq!(consumer.ack_batch(batch).unwrap(), 8);

    let stats = queue.stats();
    assert_eq!((stats.acked, stats.in_flight, stats.ready), (8, 0, 0));
    assert!(producer.try_send(99).is_ok(), "the slots are free again");
}

#[test]
fn ack_batch_skips_expired_leases_and_changes_nothing_for_them() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(30 * SEC).open().unwrap();
    queue.producer().send_batch(vec![1, 2]).unwrap();
    let consumer = queue.consumer();
    let early = consumer.try_recv().unwrap();
    clock.advance(20 * SEC);
    let late = consumer.try_recv().unwrap();
    clock.advance(15 * SEC); // `early`'s lease ran out at 30 s; `late`'s runs to 50 s

    assert_eq!(consumer.ack_batch(vec![early, late]).unwrap(), 1);

    let again = consumer.try_recv().unwrap();
    assert_eq!((*again, again.receive_count()), (1, 2));
    assert_eq!(queue.stats().acked, 1);
}

#[test]
fn ack_batch_of_nothing_is_zero() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    assert_eq!(queue.consumer().ack_batch(Vec::new()).unwrap(), 0);
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn batch_acks_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Queue<u32> { Queue::builder().path(dir.path()).open().unwrap() };
    {
        let queue = open();
        queue.producer().send_batch((0..100).collect()).unwrap();
        let consumer = queue.consumer();
        let batch = consumer.recv_batch(60, Duration::ZERO).unwrap();
        assert_eq!(consumer.ack_batch(batch).unwrap(), 60);
    }
    let queue = open();
    let consumer = queue.consumer();
    let rest = consumer.recv_batch(100, Duration::ZERO).unwrap();
    let payloads: Vec<u32> = rest.iter().map(|delivery| **delivery).collect();
    assert_eq!(payloads, (60..100).collect::<Vec<_>>());
}

#[test]
fn deliveries_of_any_consumer_handle_settle_through_any_other() {
    // Each handle leases into a shard of its own: settling must find the
    // lease whichever handle (or none) does it.
    let queue: Queue<u32> = Queue::builder().capacity(16).open().unwrap();
    let other: Queue<u32> = Queue::builder().open().unwrap();
    queue.producer().send_batch((0..12).collect()).unwrap();
    other.producer().send(100).unwrap();
    let (a, b, c) = (queue.consumer(), queue.consumer(), queue.consumer().clone());
    let mut mixed = a.recv_batch(4, Duration::ZERO).unwrap();
    mixed.extend(b.recv_batch(4, Duration::ZERO).unwrap());
    mixed.push(other.consumer().try_recv().unwrap());
    let last = c.recv_batch(4, Duration::ZERO).unwrap();

    assert_eq!(
        c.ack_batch(mixed).unwrap(),
        9,
        "4 + 4 here, 1 on the other queue"
    );
    for delivery in last {
        delivery.ack().unwrap();
    }
    let stats = queue.stats();
    assert_eq!((stats.acked, stats.in_flight, stats.ready), (12, 0, 0));
    assert_eq!(other.stats().acked, 1);
}

//! Receiving and settling many messages at once: a `Batch` under one
//! lease, and `ack_batch` over deliveries.

mod common;

use common::{manual, SEC};
use spool::{Backoff, Queue, RecvError, SettleError};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

#[test]
fn a_batch_is_one_lease_over_the_oldest_ready_messages_acked_whole() {
    let queue: Queue<u32> = Queue::builder().capacity(10).open().unwrap();
    let producer = queue.producer();
    producer.send_batch((0..10).collect()).unwrap();
    let consumer = queue.consumer();
    let batch = consumer.recv_batch(4, Duration::ZERO).unwrap();
    assert_eq!(batch.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!((batch.len(), batch[2], *batch.get(3).unwrap()), (4, 2, 3));
    assert!(batch.get(4).is_none());
    let ids: Vec<u64> = batch.messages().map(|m| m.id().get()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(batch
        .messages()
        .all(|m| m.receive_count() == 1 && m.key().is_none()));
    assert_eq!((queue.stats().in_flight, queue.stats().ready), (4, 6));
    assert!(producer.try_send(99).is_err(), "full while in flight");

    batch.ack().unwrap();

    let stats = queue.stats();
    assert_eq!((stats.acked, stats.in_flight, stats.ready), (4, 0, 6));
    assert!(producer.try_send(99).is_ok(), "the slots are free again");
}

#[test]
fn a_batch_takes_what_is_ready_up_to_max_and_at_least_one() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    let consumer = queue.consumer();
    let empty = consumer.recv_batch(8, Duration::ZERO).unwrap_err();
    assert_eq!(empty, RecvError::Timeout);
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let one = consumer.recv_batch(0, Duration::ZERO).unwrap();
    assert_eq!((one.len(), one[0]), (1, 1), "a max of 0 is taken as 1");
    let rest = consumer.recv_batch(100, Duration::ZERO).unwrap();
    assert_eq!(rest.iter().copied().collect::<Vec<_>>(), [2, 3]);
    one.ack().unwrap();
    rest.ack().unwrap();
    queue.close();
    let closed = consumer.recv_batch(8, Duration::ZERO).unwrap_err();
    assert_eq!(closed, RecvError::Closed);
}

#[test]
fn an_expired_batch_comes_back_whole_and_can_no_longer_be_settled() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(30 * SEC).open().unwrap();
    queue.producer().send_batch(vec![10, 11, 12]).unwrap();
    let consumer = queue.consumer();
    let stale = consumer.recv_batch(3, Duration::ZERO).unwrap();
    let first = stale.messages().next().unwrap().id();
    clock.advance(29 * SEC);
    stale.extend(10 * SEC).unwrap();
    clock.advance(9 * SEC);
    assert_eq!(
        consumer.try_recv().unwrap_err(),
        RecvError::Empty,
        "extended"
    );
    clock.advance(SEC);

    let again = consumer.recv_batch(3, Duration::ZERO).unwrap();
    let seen: Vec<(u32, u32)> = again.messages().map(|m| (*m, m.receive_count())).collect();
    assert_eq!(seen, [(10, 2), (11, 2), (12, 2)]);
    assert_eq!(queue.stats().expired, 3);
    assert_eq!(stale.iter().sum::<u32>(), 33, "the old batch still reads");
    assert_eq!(
        stale.extend(SEC),
        Err(SettleError::LeaseExpired { id: first })
    );
    assert_eq!(stale.ack(), Err(SettleError::LeaseExpired { id: first }));
    assert_eq!(queue.stats().in_flight, 3, "the new lease is untouched");
    again.ack().unwrap();
    assert_eq!(queue.stats().acked, 3);
}

#[test]
fn nack_and_retry_after_release_every_message_and_dead_letter_the_last_attempt() {
    let (clock, builder) = manual();
    let queue = builder
        .max_receives(3)
        .backoff(Backoff::Fixed(5 * SEC))
        .open()
        .unwrap();
    queue.producer().send_batch(vec![1, 2]).unwrap();
    let consumer = queue.consumer();

    consumer
        .recv_batch(2, Duration::ZERO)
        .unwrap()
        .nack()
        .unwrap();
    assert_eq!(queue.stats().delayed, 2, "each under its backoff");
    clock.advance(5 * SEC);
    let second = consumer.recv_batch(2, Duration::ZERO).unwrap();
    assert!(second.messages().all(|m| m.receive_count() == 2));
    second.retry_after(SEC).unwrap();
    clock.advance(SEC);
    let third = consumer.recv_batch(2, Duration::ZERO).unwrap();
    drop(third); // a nack, on the last allowed receive

    let dead = queue.dead_letters().list();
    let dead: Vec<(u32, u32)> = dead
        .iter()
        .map(|l| (*l.payload(), l.receive_count()))
        .collect();
    assert_eq!(dead, [(1, 3), (2, 3)]);
    let stats = queue.stats();
    assert_eq!(
        (stats.nacked, stats.dead_lettered, stats.in_flight),
        (6, 2, 0)
    );
}

#[test]
fn into_deliveries_settles_one_by_one_within_the_batch_lease() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(30 * SEC).open().unwrap();
    queue.producer().send_batch(vec![1, 2, 3, 4]).unwrap();
    let consumer = queue.consumer();
    let batch = consumer.recv_batch(4, Duration::ZERO).unwrap();
    clock.advance(10 * SEC);
    let mut deliveries = batch.into_deliveries().into_iter();
    let (one, two, three, four) = (
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
        deliveries.next().unwrap(),
    );
    assert_eq!((*one, *four, four.receive_count()), (1, 4, 1));
    one.ack().unwrap();
    two.fail("no").unwrap();
    three.extend(60 * SEC).unwrap();
    assert_eq!(queue.stats().in_flight, 2);

    clock.advance(20 * SEC); // the batch's lease ran out at 30 s
    let back = consumer.recv_batch(4, Duration::ZERO).unwrap();
    assert_eq!(back.iter().copied().collect::<Vec<_>>(), [2, 4]);
    assert!(matches!(four.ack(), Err(SettleError::LeaseExpired { .. })));
    three.ack().unwrap();
    back.ack().unwrap();
    assert_eq!(queue.stats().acked, 4);
}

#[test]
fn into_deliveries_of_an_expired_batch_read_but_settle_nothing() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(SEC).open().unwrap();
    queue.producer().send_batch(vec![7, 8]).unwrap();
    let consumer = queue.consumer();
    let batch = consumer.recv_batch(2, Duration::ZERO).unwrap();
    clock.advance(SEC);
    let again = consumer.recv_batch(2, Duration::ZERO).unwrap();

    let late = batch.into_deliveries();
    assert_eq!(late.iter().map(|d| **d).collect::<Vec<_>>(), [7, 8]);
    for delivery in late {
        assert!(matches!(
            delivery.ack(),
            Err(SettleError::LeaseExpired { .. })
        ));
    }
    assert_eq!(queue.stats().in_flight, 2, "the new batch is untouched");
    again.ack().unwrap();
}

#[test]
fn messages_of_batch_after_batch_keep_their_payloads() {
    // A message that comes back from a batch shares that batch's memory;
    // received in a new batch, and in another after that, it must still
    // read as itself once the old batches are gone.
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(SEC).open().unwrap();
    queue
        .producer()
        .send_batch((0..8).map(|i| i * 100).collect())
        .unwrap();
    let consumer = queue.consumer();
    for round in 0..4 {
        let batch = consumer.recv_batch(8 - round, Duration::ZERO).unwrap();
        let first = batch[0];
        let mut deliveries = batch.into_deliveries();
        deliveries.remove(0).ack().unwrap(); // one fewer each round
        drop(deliveries); // the others are released at once
        clock.advance(SEC);
        assert_eq!(first, round as u32 * 100);
    }
    let single = consumer.try_recv().unwrap();
    assert_eq!((*single, single.receive_count()), (400, 5));
    let rest = consumer.recv_batch(8, Duration::ZERO).unwrap();
    assert_eq!(rest.iter().copied().collect::<Vec<_>>(), [500, 600, 700]);
}

#[test]
fn batches_from_several_consumers_are_leased_apart() {
    let queue: Queue<u32> = Queue::builder().backoff(Backoff::None).open().unwrap();
    queue.producer().send_batch((0..9).collect()).unwrap();
    let (a, b) = (queue.consumer(), queue.consumer());
    let from_a = a.recv_batch(3, Duration::ZERO).unwrap();
    let from_b = b.recv_batch(3, Duration::ZERO).unwrap();
    let from_a_again = a.recv_batch(3, Duration::ZERO).unwrap();
    from_b.nack().unwrap();
    from_a.ack().unwrap();
    assert_eq!(queue.stats().in_flight, 3);
    from_a_again.ack().unwrap();
    let back = b.recv_batch(9, Duration::ZERO).unwrap();
    assert_eq!(back.iter().copied().collect::<Vec<_>>(), [3, 4, 5]);
}

#[test]
fn ack_batch_acknowledges_every_current_lease_and_frees_their_slots() {
    let queue: Queue<u32> = Queue::builder().capacity(8).open().unwrap();
    let producer = queue.producer();
    producer.send_batch((0..8).collect()).unwrap();
    let consumer = queue.consumer();
    let deliveries = consumer
        .recv_batch(8, Duration::ZERO)
        .unwrap()
        .into_deliveries();
    assert!(producer.try_send(99).is_err(), "full while in flight");

    assert_eq!(consumer.ack_batch(deliveries).unwrap(), 8);

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
fn batch_receives_and_acks_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Queue<u32> {
        Queue::builder()
            .backoff(Backoff::None)
            .path(dir.path())
            .open()
            .unwrap()
    };
    {
        let queue = open();
        queue.producer().send_batch((0..100).collect()).unwrap();
        let consumer = queue.consumer();
        consumer
            .recv_batch(50, Duration::ZERO)
            .unwrap()
            .ack()
            .unwrap();
        let deliveries = consumer
            .recv_batch(10, Duration::ZERO)
            .unwrap()
            .into_deliveries();
        assert_eq!(consumer.ack_batch(deliveries).unwrap(), 10);
        consumer
            .recv_batch(5, Duration::ZERO)
            .unwrap()
            .nack()
            .unwrap();
    }
    let queue = open();
    let consumer = queue.consumer();
    let rest = consumer.recv_batch(100, Duration::ZERO).unwrap();
    let seen: Vec<(u32, u32)> = rest.messages().map(|m| (*m, m.receive_count())).collect();
    // Released messages go to the back.
    let expected: Vec<(u32, u32)> = (65..100)
        .map(|p| (p, 1))
        .chain((60..65).map(|p| (p, 2)))
        .collect();
    assert_eq!(
        seen, expected,
        "the nacked batch is back, its receive counted"
    );
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
    let mut mixed = a.recv_batch(4, Duration::ZERO).unwrap().into_deliveries();
    mixed.extend(b.recv_batch(4, Duration::ZERO).unwrap().into_deliveries());
    mixed.push(other.consumer().try_recv().unwrap());
    let last = c.recv_batch(4, Duration::ZERO).unwrap();

    assert_eq!(
        c.ack_batch(mixed).unwrap(),
        9,
        "4 + 4 here, 1 on the other queue"
    );
    last.ack().unwrap();
    let stats = queue.stats();
    assert_eq!((stats.acked, stats.in_flight, stats.ready), (12, 0, 0));
    assert_eq!(other.stats().acked, 1);
}

/// A payload that counts how many of its kind are alive, to see what a
/// queue keeps after the messages are gone. One counter per test: tests run
/// in parallel.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counted(u64, usize);

static ALIVE: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

impl Counted {
    fn new(value: u64, counter: usize) -> Self {
        ALIVE[counter].fetch_add(1, SeqCst);
        Counted(value, counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        ALIVE[self.1].fetch_sub(1, SeqCst);
    }
}

#[test]
fn a_message_retried_in_batch_after_batch_keeps_no_earlier_batch_alive() {
    let queue: Queue<Counted> = Queue::builder().backoff(Backoff::None).open().unwrap();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    // Each round: the message nacked last round comes back with a new one;
    // the old one is acked, the new one nacked.
    for round in 0..1_000 {
        producer.send(Counted::new(round, 0)).unwrap();
        let batch = consumer.recv_batch(2, Duration::ZERO).unwrap();
        for delivery in batch.into_deliveries() {
            if delivery.0 == round {
                delivery.nack().unwrap();
            } else {
                delivery.ack().unwrap();
            }
        }
    }
    assert_eq!(queue.stats().ready, 1);
    assert_eq!(ALIVE[0].load(SeqCst), 1, "only the message still queued");
}

#[test]
fn settled_messages_of_a_batch_are_freed_while_a_sibling_lives_on() {
    let queue: Queue<Counted> = Queue::builder().max_receives(1).open().unwrap();
    let batch: Vec<Counted> = (0..3).map(|i| Counted::new(i, 1)).collect();
    queue.producer().send_batch(batch).unwrap();
    let consumer = queue.consumer();
    let mut deliveries = consumer
        .recv_batch(3, Duration::ZERO)
        .unwrap()
        .into_deliveries();
    deliveries.pop().unwrap().dead_letter("kept").unwrap();
    consumer.ack_batch(deliveries).unwrap();
    assert_eq!(queue.dead_letters().len(), 1);
    assert_eq!(ALIVE[1].load(SeqCst), 1, "only the dead letter");

    // Nacked whole, a batch's messages leave its store too.
    let batch: Vec<Counted> = (0..3).map(|i| Counted::new(10 + i, 1)).collect();
    queue.producer().send_batch(batch).unwrap();
    consumer
        .recv_batch(3, Duration::ZERO)
        .unwrap()
        .nack()
        .unwrap(); // dead-lettered
    queue.dead_letters().purge().unwrap();
    assert_eq!(ALIVE[1].load(SeqCst), 0);
}

#[test]
fn a_batch_whose_lease_ran_out_shares_its_payloads_until_both_are_done() {
    let (clock, _) = manual();
    let queue: Queue<Counted> = Queue::builder()
        .backoff(Backoff::None)
        .clock(clock.clone())
        .visibility_timeout(SEC)
        .open()
        .unwrap();
    let batch: Vec<Counted> = (0..4).map(|i| Counted::new(i, 2)).collect();
    queue.producer().send_batch(batch).unwrap();
    let consumer = queue.consumer();
    let held = consumer.recv_batch(4, Duration::ZERO).unwrap();
    clock.advance(SEC);
    let again = consumer.recv_batch(4, Duration::ZERO).unwrap();
    assert_eq!(again.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    drop(held);
    assert_eq!(ALIVE[2].load(SeqCst), 4, "still read through `again`");
    again.ack().unwrap();
    assert_eq!(ALIVE[2].load(SeqCst), 0);
}

#[test]
fn handles_deliveries_and_batches_cross_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<spool::Batch<u32>>();
    send_and_sync::<spool::Delivery<u32>>();
    send_and_sync::<spool::Consumer<u32>>();
    send_and_sync::<spool::Producer<u32>>();

    // A batch received on one thread is read and acked on another.
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let batch = queue.consumer().recv_batch(3, Duration::ZERO).unwrap();
    let total = std::thread::spawn(move || {
        let total: u32 = batch.iter().sum();
        batch.ack().map(|()| total)
    });
    assert_eq!(total.join().unwrap(), Ok(6));
    assert_eq!(queue.stats().acked, 3);
}

#[test]
fn a_failed_batch_records_any_error_on_every_message_and_dead_letters_the_last_attempts() {
    let queue: Queue<u32> = Queue::builder()
        .backoff(Backoff::None)
        .max_receives(2)
        .open()
        .unwrap();
    queue.producer().send_batch(vec![1, 2]).unwrap();
    let consumer = queue.consumer();
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    consumer
        .recv_batch(2, Duration::ZERO)
        .unwrap()
        .fail(refused)
        .unwrap();
    let again = consumer.recv_batch(2, Duration::ZERO).unwrap();
    assert_eq!(again.iter().copied().collect::<Vec<_>>(), [1, 2]);
    again.fail(format_args!("attempt {}", 2)).unwrap();

    let dead = queue.dead_letters().list();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.errors() == ["refused", "attempt 2"]));
}

//! Exact statistics: counts of ready, in-flight, delayed and dead-lettered
//! messages, counters of what happened, and the age of the oldest ready
//! message.

mod common;

use common::{manual, SEC};
use spool::{Backoff, SendOptions, Stats};
use std::time::Duration;

#[test]
fn a_new_queue_reports_its_capacity_and_nothing_else() {
    let (_clock, builder) = manual();
    let queue = builder.capacity(10).open().unwrap();

    let mut expected = Stats::default();
    expected.capacity = 10;
    assert_eq!(queue.stats(), expected);
}

#[test]
fn stats_are_exact_after_each_step_of_a_scripted_run() {
    let (clock, builder) = manual();
    let queue = builder
        .capacity(10)
        .visibility_timeout(30 * SEC)
        .max_receives(2)
        .backoff(Backoff::Fixed(5 * SEC))
        .open()
        .unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    let dlq = queue.dead_letters();
    let mut expected = Stats::default();
    expected.capacity = 10;
    let age = |secs: u64| Some(Duration::from_secs(secs));

    // t = 0: two sends.
    producer.send_batch(vec![1, 2]).unwrap();
    (expected.ready, expected.sent, expected.oldest_ready_age) = (2, 2, age(0));
    assert_eq!(queue.stats(), expected, "after two sends");

    clock.advance(4 * SEC); // t = 4
    expected.oldest_ready_age = age(4);
    assert_eq!(queue.stats(), expected, "after waiting");

    let one = consumer.try_recv().unwrap();
    (expected.ready, expected.in_flight) = (1, 1);
    assert_eq!(queue.stats(), expected, "after a receive");

    producer.send_with(3, SendOptions::new().key("k")).unwrap();
    producer.send_with(3, SendOptions::new().key("k")).unwrap();
    (expected.ready, expected.sent, expected.duplicates) = (2, 3, 1);
    assert_eq!(
        queue.stats(),
        expected,
        "after a keyed send and its duplicate"
    );

    one.nack().unwrap(); // retried at t = 9
    (expected.in_flight, expected.delayed, expected.nacked) = (0, 1, 1);
    assert_eq!(queue.stats(), expected, "after a nack");

    let two = consumer.try_recv().unwrap();
    assert_eq!(*two, 2);
    two.ack().unwrap();
    (expected.ready, expected.acked, expected.oldest_ready_age) = (1, 1, age(0));
    assert_eq!(queue.stats(), expected, "after an ack");

    clock.advance(5 * SEC); // t = 9: message 1 is due again
    (expected.ready, expected.delayed, expected.oldest_ready_age) = (2, 0, age(5));
    assert_eq!(queue.stats(), expected, "after the backoff");

    let three = consumer.try_recv().unwrap();
    let one = consumer.try_recv().unwrap();
    assert_eq!((*three, *one, one.receive_count()), (3, 1, 2));
    (
        expected.ready,
        expected.in_flight,
        expected.oldest_ready_age,
    ) = (0, 2, None);
    assert_eq!(queue.stats(), expected, "after two receives");

    clock.advance(30 * SEC); // t = 39: both leases run out
    expected.in_flight = 0;
    expected.expired = 2;
    expected.delayed = 1; // 3 waits out its backoff
    (expected.dead_letters, expected.dead_lettered) = (1, 1); // 1 used up its receives
    assert_eq!(queue.stats(), expected, "after two leases expired");
    drop((one, three));
    assert_eq!(
        queue.stats(),
        expected,
        "dropping expired deliveries changes nothing"
    );

    assert_eq!(dlq.redrive_all(), Ok(1));
    (expected.dead_letters, expected.redriven) = (0, 1);
    (expected.ready, expected.oldest_ready_age) = (1, age(0));
    assert_eq!(queue.stats(), expected, "after a redrive");

    producer
        .send_with(4, SendOptions::new().delay(60 * SEC))
        .unwrap();
    (expected.delayed, expected.sent) = (2, 4);
    assert_eq!(queue.stats(), expected, "after a delayed send");

    clock.advance(5 * SEC); // t = 44: 3 is due again
    (expected.ready, expected.delayed, expected.oldest_ready_age) = (2, 1, age(5));
    assert_eq!(queue.stats(), expected, "after the second backoff");

    let one = consumer.try_recv().unwrap();
    assert_eq!((*one, one.receive_count()), (1, 1));
    one.dead_letter("rejected").unwrap();
    (expected.ready, expected.oldest_ready_age) = (1, age(0));
    (expected.dead_letters, expected.dead_lettered) = (1, 2);
    assert_eq!(queue.stats(), expected, "after a rejection");

    assert_eq!(dlq.purge(), Ok(1));
    (expected.dead_letters, expected.purged) = (0, 1);
    assert_eq!(queue.stats(), expected, "after a purge");

    let three = consumer.try_recv().unwrap();
    three.retry_after(SEC).unwrap(); // its second receive: dead-lettered
    (expected.ready, expected.oldest_ready_age) = (0, None);
    expected.nacked = 2;
    (expected.dead_letters, expected.dead_lettered) = (1, 3);
    assert_eq!(queue.stats(), expected, "after a retry on the last receive");
}

#[test]
fn oldest_ready_age_follows_the_oldest_ready_message() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer.send(1).unwrap();
    clock.advance(3 * SEC);
    producer.send(2).unwrap();
    clock.advance(4 * SEC);

    assert_eq!(queue.stats().oldest_ready_age, Some(7 * SEC));
    let first = consumer.try_recv().unwrap();
    assert_eq!(queue.stats().oldest_ready_age, Some(4 * SEC));
    first.nack().unwrap(); // ready again now, behind 2
    clock.advance(SEC);
    assert_eq!(queue.stats().oldest_ready_age, Some(5 * SEC));
    consumer.try_recv().unwrap().ack().unwrap();
    assert_eq!(queue.stats().oldest_ready_age, Some(SEC));
    consumer.try_recv().unwrap().ack().unwrap();
    assert_eq!(queue.stats().oldest_ready_age, None);
}

#[test]
fn oldest_ready_age_of_a_delayed_message_counts_from_when_it_came_due() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    queue
        .producer()
        .send_with(1, SendOptions::new().delay(10 * SEC))
        .unwrap();

    clock.advance(15 * SEC); // nobody looked at the queue when it came due

    assert_eq!(queue.stats().oldest_ready_age, Some(5 * SEC));
}

#[test]
fn a_growing_dead_letter_queue_shows_in_stats() {
    let (_clock, builder) = manual();
    let queue = builder.max_receives(1).open().unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();

    for n in 0..5 {
        producer.send(n).unwrap();
        consumer.try_recv().unwrap().fail("always").unwrap();
        let stats = queue.stats();
        assert_eq!(stats.dead_letters, n as usize + 1);
        assert_eq!(stats.dead_lettered, u64::from(n) + 1);
        assert_eq!(stats.nacked, u64::from(n) + 1);
    }
}

#[test]
fn a_message_that_came_due_is_queued_ahead_of_a_later_send() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let producer = queue.producer();
    producer
        .send_with(1, SendOptions::new().delay(5 * SEC))
        .unwrap();
    clock.advance(7 * SEC);

    producer.send(2).unwrap();

    assert_eq!(queue.stats().oldest_ready_age, Some(2 * SEC));
    let consumer = queue.consumer();
    assert_eq!(*consumer.try_recv().unwrap(), 1);
    assert_eq!(*consumer.try_recv().unwrap(), 2);
}

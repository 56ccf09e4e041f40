//! Delayed sends: a message sent with a delay is invisible until then.

mod common;

use common::{ack_all_ready, in_thread, manual, NS, SEC, WAIT};
use spool::{Queue, RecvError, SendOptions};
use std::time::Duration;

fn after(delay: Duration) -> SendOptions {
    SendOptions::new().delay(delay)
}

#[test]
fn a_delayed_message_is_invisible_until_exactly_its_delay() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let consumer = queue.consumer();
    let sent = queue.producer().send_with(1, after(10 * SEC)).unwrap();

    clock.advance(10 * SEC - NS);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);

    clock.advance(NS);
    let delivery = consumer.try_recv().unwrap();
    assert_eq!((delivery.id(), *delivery), (sent.id(), 1));
    assert_eq!(delivery.receive_count(), 1);
}

#[test]
fn a_delayed_message_is_counted_as_delayed_until_due() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    queue.producer().send_with(1, after(10 * SEC)).unwrap();

    let stats = queue.stats();
    assert_eq!((stats.delayed, stats.ready, stats.sent), (1, 0, 1));
    assert_eq!(stats.oldest_ready_age, None);

    clock.advance(10 * SEC);
    let stats = queue.stats();
    assert_eq!((stats.delayed, stats.ready), (0, 1));
}

#[test]
fn a_zero_delay_is_no_delay() {
    let (_clock, builder) = manual();
    let queue = builder.open().unwrap();
    queue
        .producer()
        .send_with(1, after(Duration::ZERO))
        .unwrap();

    assert_eq!(queue.stats().delayed, 0);
    assert_eq!(*queue.consumer().try_recv().unwrap(), 1);
}

#[test]
fn undelayed_messages_overtake_delayed_ones() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let producer = queue.producer();
    producer.send_with(1, after(5 * SEC)).unwrap();
    producer.send(2).unwrap();

    assert_eq!(ack_all_ready(&queue.consumer()), [2]);
    clock.advance(5 * SEC);
    assert_eq!(ack_all_ready(&queue.consumer()), [1]);
}

#[test]
fn delayed_messages_become_ready_in_due_order_then_send_order() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let producer = queue.producer();
    producer.send_with(1, after(3 * SEC)).unwrap();
    producer.send_with(2, after(SEC)).unwrap();
    producer.send_with(3, after(2 * SEC)).unwrap();
    producer.send_with(4, after(SEC)).unwrap();

    clock.advance(10 * SEC);

    assert_eq!(ack_all_ready(&queue.consumer()), [2, 4, 3, 1]);
}

#[test]
fn a_delayed_message_becomes_visible_one_by_one_as_time_passes() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let producer = queue.producer();
    for n in 1..=3 {
        producer.send_with(n, after(n * SEC)).unwrap();
    }

    let mut seen = Vec::new();
    for _ in 1..=3 {
        clock.advance(SEC);
        seen.push(ack_all_ready(&queue.consumer()));
    }

    assert_eq!(seen, [vec![1], vec![2], vec![3]]);
}

#[test]
fn a_delayed_message_takes_a_capacity_slot() {
    let (_clock, builder) = manual();
    let queue = builder.capacity(1).open().unwrap();
    let producer = queue.producer();
    producer.send_with(1, after(60 * SEC)).unwrap();

    assert!(producer.try_send(2).is_err());
    assert!(producer.try_send_with(2, after(SEC)).is_err());
}

#[test]
fn a_blocked_recv_wakes_when_a_delay_comes_due() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    queue.producer().send_with(7, after(3600 * SEC)).unwrap();
    let consumer = queue.consumer();

    let waiting = in_thread(move || consumer.recv_timeout(WAIT).map(|d| *d));
    std::thread::sleep(Duration::from_millis(50));
    clock.advance(3600 * SEC);

    assert_eq!(waiting.recv_timeout(2 * WAIT).unwrap(), Ok(7));
}

#[test]
fn a_short_real_delay_is_waited_out_by_a_blocked_consumer() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    queue
        .producer()
        .send_with(7, after(Duration::from_millis(20)))
        .unwrap();

    let delivery = queue.consumer().recv_timeout(WAIT).unwrap();

    assert_eq!(*delivery, 7);
    assert_eq!(queue.stats().delayed, 0);
}

#[test]
fn a_message_sent_at_a_wall_clock_time_is_invisible_until_exactly_then() {
    use spool::Clock;
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let consumer = queue.consumer();
    let at = clock.now() + 60 * SEC;
    // `at` replaces a delay set before it, and the other way round.
    let options = SendOptions::new().delay(SEC).at(at);
    let sent = queue.producer().send_with(1, options).unwrap();
    queue
        .producer()
        .send_with(2, SendOptions::new().at(at).delay(30 * SEC))
        .unwrap();
    assert_eq!(queue.stats().delayed, 2);

    clock.advance(30 * SEC);
    assert_eq!(ack_all_ready(&consumer), [2]);
    clock.advance(30 * SEC - NS);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(NS);
    let delivery = consumer.try_recv().unwrap();
    assert_eq!((delivery.id(), *delivery), (sent.id(), 1));
}

#[test]
fn a_time_already_past_is_visible_at_once_in_send_order() {
    use spool::Clock;
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    clock.advance(3600 * SEC);
    let past = clock.now() - 60 * SEC;
    queue.producer().send(1).unwrap();
    let options = SendOptions::new().at(past);
    queue.producer().send_with(2, options).unwrap();
    let options = SendOptions::new().at(std::time::UNIX_EPOCH);
    queue.producer().send_with(3, options).unwrap();
    assert_eq!(ack_all_ready(&queue.consumer()), [1, 2, 3]);
}

#[test]
fn a_wall_clock_time_survives_a_reopen_and_one_passed_meanwhile_is_due() {
    use spool::Clock;
    let dir = tempfile::tempdir().unwrap();
    let clock = spool::ManualClock::new();
    let open = || -> Queue<u32> {
        Queue::builder()
            .path(dir.path())
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let start = clock.now();
    let queue = open();
    let producer = queue.producer();
    producer
        .send_with(1, SendOptions::new().at(start + 100 * SEC))
        .unwrap();
    producer
        .send_with(2, SendOptions::new().at(start + 10 * SEC))
        .unwrap();
    drop((producer, queue));

    clock.advance(50 * SEC); // down for 50 s: the second one came due meanwhile
    let queue = open();
    assert_eq!((queue.stats().ready, queue.stats().delayed), (1, 1));
    assert_eq!(ack_all_ready(&queue.consumer()), [2]);
    clock.advance(50 * SEC - NS);
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(NS);
    assert_eq!(ack_all_ready(&queue.consumer()), [1]);
}

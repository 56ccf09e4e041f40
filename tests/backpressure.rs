//! A bounded queue: at most `capacity` messages are held (ready, in flight
//! and delayed together), and producers are held back, never dropped.

mod common;

use common::{in_thread, manual, SEC, STILL_BLOCKED, WAIT};
use spool::{Backoff, Queue, SendError, SendOptions};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

fn queue_of(capacity: usize) -> Queue<u32> {
    Queue::builder()
        .capacity(capacity)
        .backoff(Backoff::None)
        .open()
        .unwrap()
}

#[test]
fn try_send_on_a_full_queue_gives_the_message_back() {
    let queue = queue_of(2);
    let producer = queue.producer();
    producer.try_send(1).unwrap();
    producer.try_send(2).unwrap();

    assert_eq!(producer.try_send(3), Err(SendError::Full(3)));
    assert_eq!(
        producer.try_send_with(4, SendOptions::new().key("k")),
        Err(SendError::Full(4))
    );
    assert_eq!(queue.stats().ready, 2);
    assert_eq!(queue.stats().sent, 2);
}

#[test]
fn send_blocks_while_full_and_proceeds_after_an_ack() {
    let queue = queue_of(1);
    let producer = queue.producer();
    producer.send(1).unwrap();

    let blocked = {
        let producer = producer.clone();
        in_thread(move || producer.send(2))
    };
    assert_eq!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout),
        "send must wait while the queue is full"
    );

    let consumer = queue.consumer();
    let first = consumer.try_recv().unwrap();
    assert_eq!(*first, 1);
    first.ack().unwrap();

    let id = blocked.recv_timeout(WAIT).unwrap().unwrap();
    let second = consumer.recv_timeout(WAIT).unwrap();
    assert_eq!((second.id(), *second), (id, 2));
}

#[test]
fn send_with_also_blocks_while_full() {
    let queue = queue_of(1);
    let producer = queue.producer();
    producer.send(1).unwrap();

    let blocked = {
        let producer = producer.clone();
        in_thread(move || producer.send_with(2, SendOptions::new().key("two")))
    };
    assert_eq!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    );
    queue.consumer().try_recv().unwrap().ack().unwrap();

    let sent = blocked.recv_timeout(WAIT).unwrap().unwrap();
    assert!(!sent.is_duplicate());
    assert_eq!(queue.consumer().try_recv().unwrap().key(), Some("two"));
}

#[test]
fn send_timeout_on_a_full_queue_gives_the_message_back_with_timeout() {
    let queue = queue_of(1);
    let producer = queue.producer();
    producer.send(1).unwrap();

    let refused = producer.send_timeout(2, Duration::from_millis(20));

    assert_eq!(refused, Err(SendError::Timeout(2)));
    assert_eq!(refused.unwrap_err().into_inner(), 2);
    assert_eq!(queue.stats().sent, 1);
}

#[test]
fn send_timeout_succeeds_when_room_frees_in_time() {
    let queue = queue_of(1);
    let producer = queue.producer();
    producer.send(1).unwrap();

    let waiting = {
        let producer = producer.clone();
        in_thread(move || producer.send_timeout(2, WAIT))
    };
    queue.consumer().try_recv().unwrap().ack().unwrap();

    assert!(waiting.recv_timeout(WAIT).unwrap().is_ok());
    assert_eq!(queue.stats().ready, 1);
}

#[test]
fn capacity_counts_ready_in_flight_and_delayed_messages() {
    let (_clock, builder) = manual();
    let queue = builder.capacity(3).open().unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer.send(1).unwrap();
    let in_flight = consumer.try_recv().unwrap();
    producer.send(2).unwrap();
    producer
        .send_with(3, SendOptions::new().delay(60 * SEC))
        .unwrap();

    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.delayed), (1, 1, 1));
    assert_eq!(producer.try_send(4), Err(SendError::Full(4)));

    in_flight.ack().unwrap();
    assert!(producer.try_send(4).is_ok());
    assert_eq!(producer.try_send(5), Err(SendError::Full(5)));
}

#[test]
fn a_nacked_message_keeps_its_slot() {
    let queue = queue_of(1);
    let producer = queue.producer();
    producer.send(1).unwrap();
    queue.consumer().try_recv().unwrap().nack().unwrap();

    assert_eq!(producer.try_send(2), Err(SendError::Full(2)));
    assert_eq!(*queue.consumer().try_recv().unwrap(), 1);
}

#[test]
fn an_expired_lease_has_room_to_come_back_while_producers_fill_the_queue() {
    let (clock, builder) = manual();
    let queue = builder
        .capacity(2)
        .visibility_timeout(30 * SEC)
        .open()
        .unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer.send(1).unwrap();
    producer.send(2).unwrap();
    let lost = consumer.try_recv().unwrap();
    assert_eq!(producer.try_send(3), Err(SendError::Full(3)));

    let blocked = {
        let producer = producer.clone();
        in_thread(move || producer.send(4))
    };
    clock.advance(30 * SEC);

    // The expired message comes back; the blocked producer took no slot.
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.expired), (2, 0, 1));
    assert_eq!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    );
    let two = consumer.try_recv().unwrap();
    let one_again = consumer.try_recv().unwrap();
    assert_eq!((*two, *one_again), (2, 1));
    assert_eq!(one_again.receive_count(), 2);
    assert!(lost.ack().is_err());

    // Only an ack makes room for the blocked producer.
    two.ack().unwrap();
    assert!(blocked.recv_timeout(WAIT).unwrap().is_ok());
    one_again.ack().unwrap();
    assert_eq!(*consumer.try_recv().unwrap(), 4);
}

#[test]
fn dead_lettering_frees_a_slot() {
    let queue = queue_of(1);
    let producer = queue.producer();
    producer.send(1).unwrap();
    queue
        .consumer()
        .try_recv()
        .unwrap()
        .dead_letter("bad")
        .unwrap();

    assert!(producer.try_send(2).is_ok());
}

#[test]
fn send_batch_waits_for_room_for_the_whole_batch() {
    let queue = queue_of(4);
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer.send_batch(vec![1, 2, 3]).unwrap();

    let blocked = {
        let producer = producer.clone();
        in_thread(move || producer.send_batch(vec![4, 5]))
    };
    assert_eq!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout),
        "one free slot is not room for a batch of two"
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.ready, stats.sent),
        (3, 3),
        "nothing of the batch sent"
    );

    consumer.try_recv().unwrap().ack().unwrap();
    let ids = blocked.recv_timeout(WAIT).unwrap().unwrap();

    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    let mut received = Vec::new();
    while let Ok(delivery) = consumer.try_recv() {
        received.push((delivery.id(), *delivery));
        delivery.ack().unwrap();
    }
    assert_eq!(received.len(), 4);
    assert_eq!(received[2..], [(ids[0], 4), (ids[1], 5)]);
}

#[test]
fn send_batch_larger_than_capacity_is_refused_at_once_with_the_batch() {
    let queue = queue_of(2);
    let producer = queue.producer();

    let refused = producer.send_batch(vec![1, 2, 3]);

    assert_eq!(refused, Err(SendError::Full(vec![1, 2, 3])));
    assert_eq!(queue.stats().sent, 0);
    assert_eq!(producer.send_batch(vec![1, 2]).unwrap().len(), 2);
}

#[test]
fn try_send_batch_and_send_batch_timeout_give_the_whole_batch_back_without_room() {
    let queue = queue_of(4);
    let producer = queue.producer();
    assert_eq!(producer.try_send_batch(vec![1, 2, 3]).unwrap().len(), 3);

    let refused = producer.try_send_batch(vec![4, 5]);
    assert_eq!(refused, Err(SendError::Full(vec![4, 5])));
    // No slot frees meanwhile, so the wait can only run out.
    let timed_out = producer.send_batch_timeout(vec![6, 7], Duration::from_millis(20));
    assert_eq!(timed_out, Err(SendError::Timeout(vec![6, 7])));
    assert_eq!(queue.stats().sent, 3, "nothing of either batch sent");

    assert_eq!(producer.send_batch_timeout(vec![8], WAIT).unwrap().len(), 1);
    queue.close();
    let closed = producer.try_send_batch(vec![9]);
    assert_eq!(closed, Err(SendError::Closed(vec![9])));
}

#[test]
fn a_burst_larger_than_capacity_is_absorbed_not_dropped() {
    let queue = queue_of(8);
    let producer = queue.producer();
    let consumer = queue.consumer();
    let sending = in_thread(move || (0..200).all(|n| producer.send_timeout(n, WAIT).is_ok()));

    let mut received = Vec::new();
    while received.len() < 200 {
        let delivery = consumer.recv_timeout(WAIT).unwrap();
        received.push(*delivery);
        delivery.ack().unwrap();
    }

    assert!(sending.recv_timeout(WAIT).unwrap());
    assert_eq!(received, (0..200).collect::<Vec<u32>>());
}

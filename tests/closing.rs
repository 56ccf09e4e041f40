//! Shutdown: `close()` (or dropping every `Queue` and `Producer` handle)
//! stops new sends; consumers drain what is left, including messages that
//! come back from a lease or a delay, and then get `Closed`.

mod common;

use common::{in_thread, manual, SEC, STILL_BLOCKED, WAIT};
use spool::{Queue, RecvError, RedriveError, SendError, SendOptions};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn open() -> Queue<u32> {
    Queue::builder().open().unwrap()
}

#[test]
fn after_close_every_kind_of_send_fails_with_closed_and_gives_the_message_back() {
    let queue = open();
    let producer = queue.producer();

    queue.close();

    assert!(queue.is_closed());
    assert!(producer.is_closed());
    assert_eq!(producer.send(1), Err(SendError::Closed(1)));
    assert_eq!(producer.try_send(2), Err(SendError::Closed(2)));
    assert_eq!(producer.send_timeout(3, SEC), Err(SendError::Closed(3)));
    assert_eq!(
        producer.send_with(4, SendOptions::new().key("k")),
        Err(SendError::Closed(4))
    );
    assert_eq!(
        producer.try_send_with(5, SendOptions::new().delay(SEC)),
        Err(SendError::Closed(5))
    );
    assert_eq!(
        producer.send_batch(vec![6, 7]),
        Err(SendError::Closed(vec![6, 7]))
    );
    assert_eq!(queue.stats().sent, 0);
}

#[test]
fn a_closed_empty_queue_answers_closed_to_every_receive() {
    let queue = open();
    let consumer = queue.consumer();
    queue.close();

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(consumer.recv_timeout(WAIT).unwrap_err(), RecvError::Closed);
    assert_eq!(consumer.recv_batch(4, WAIT).unwrap_err(), RecvError::Closed);
    let blocking = in_thread(move || consumer.recv().map(|d| *d));
    assert_eq!(blocking.recv_timeout(WAIT).unwrap(), Err(RecvError::Closed));
}

#[test]
fn consumers_drain_ready_in_flight_and_delayed_messages_before_closed() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(LEASE).open().unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer.send(1).unwrap();
    let in_flight = consumer.try_recv().unwrap();
    producer.send(2).unwrap();
    producer
        .send_with(3, SendOptions::new().delay(60 * SEC))
        .unwrap();

    queue.close();

    let ready = consumer.try_recv().unwrap();
    assert_eq!(*ready, 2);
    ready.ack().unwrap();
    // The in-flight message is still to come: not closed yet.
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    in_flight.nack().unwrap();
    let back = consumer.try_recv().unwrap();
    assert_eq!((*back, back.receive_count()), (1, 2));
    clock.advance(LEASE);
    assert!(back.ack().is_err(), "its lease ran out");
    let expired_back = consumer.try_recv().unwrap();
    assert_eq!(*expired_back, 1);
    expired_back.ack().unwrap();
    // The delayed message is still to come.
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(30 * SEC);
    let delayed = consumer.try_recv().unwrap();
    assert_eq!(*delayed, 3);
    delayed.ack().unwrap();

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(consumer.recv().unwrap_err(), RecvError::Closed);
    assert_eq!(queue.stats().acked, 3);
}

#[test]
fn a_message_in_flight_keeps_a_closed_queue_open_for_consumers() {
    let queue = open();
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();
    let delivery = consumer.try_recv().unwrap();
    queue.close();

    assert_eq!(
        consumer
            .recv_timeout(Duration::from_millis(10))
            .unwrap_err(),
        RecvError::Timeout
    );
    delivery.ack().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
}

#[test]
fn dead_lettering_the_last_message_lets_consumers_finish() {
    let queue = open();
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();
    let delivery = consumer.try_recv().unwrap();
    queue.close();

    delivery.dead_letter("poison").unwrap();

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(queue.dead_letters().len(), 1, "dead letters stay");
}

#[test]
fn a_blocked_recv_wakes_with_closed_when_the_last_in_flight_message_is_acked() {
    let queue = open();
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();
    let delivery = consumer.try_recv().unwrap();
    queue.close();

    let waiting = {
        let consumer = consumer.clone();
        in_thread(move || consumer.recv().map(|d| *d))
    };
    assert_eq!(
        waiting.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout),
        "a message is still in flight"
    );
    delivery.ack().unwrap();

    assert_eq!(waiting.recv_timeout(WAIT).unwrap(), Err(RecvError::Closed));
}

#[test]
fn a_blocked_recv_wakes_on_close() {
    let queue = open();
    let consumer = queue.consumer();
    let waiting = in_thread(move || consumer.recv().map(|d| *d));
    assert_eq!(
        waiting.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    );

    queue.close();

    assert_eq!(waiting.recv_timeout(WAIT).unwrap(), Err(RecvError::Closed));
}

#[test]
fn a_blocked_recv_timeout_wakes_on_close() {
    let queue = open();
    let consumer = queue.consumer();
    let waiting = in_thread(move || consumer.recv_timeout(10 * WAIT).map(|d| *d));
    std::thread::sleep(Duration::from_millis(50));

    queue.close();

    assert_eq!(waiting.recv_timeout(WAIT).unwrap(), Err(RecvError::Closed));
}

#[test]
fn a_blocked_send_wakes_on_close_with_its_message() {
    let queue: Queue<u32> = Queue::builder().capacity(1).open().unwrap();
    let producer = queue.producer();
    producer.send(1).unwrap();
    let blocked = {
        let producer = producer.clone();
        in_thread(move || producer.send(2))
    };
    assert_eq!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    );

    queue.close();

    assert_eq!(
        blocked.recv_timeout(WAIT).unwrap(),
        Err(SendError::Closed(2))
    );
    assert_eq!(queue.stats().sent, 1);
}

#[test]
fn a_blocked_send_batch_wakes_on_close_with_its_messages() {
    let queue: Queue<u32> = Queue::builder().capacity(2).open().unwrap();
    let producer = queue.producer();
    producer.send(1).unwrap();
    let blocked = {
        let producer = producer.clone();
        in_thread(move || producer.send_batch(vec![2, 3]))
    };
    assert_eq!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    );

    queue.close();

    assert_eq!(
        blocked.recv_timeout(WAIT).unwrap(),
        Err(SendError::Closed(vec![2, 3]))
    );
}

#[test]
fn dropping_every_queue_and_producer_handle_closes_the_queue() {
    let queue = open();
    let producer = queue.producer();
    let consumer = queue.consumer();
    let dead_letters = queue.dead_letters();
    producer.send(1).unwrap();
    producer.send(2).unwrap();
    consumer.try_recv().unwrap().dead_letter("bad").unwrap();
    let second_handle = queue.clone();

    drop(queue);
    drop(producer);
    assert!(!second_handle.is_closed(), "a Queue handle is still alive");
    drop(second_handle);

    let last = consumer.try_recv().unwrap();
    assert_eq!(*last, 2);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    last.ack().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
    assert_eq!(dead_letters.redrive_all(), Err(RedriveError::Closed));
}

#[test]
fn dropping_one_of_several_producers_does_not_close_the_queue() {
    let queue = open();
    let producer = queue.producer();
    let other = producer.clone();
    drop(producer);

    assert!(!queue.is_closed());
    assert!(other.send(1).is_ok());
}

#[test]
fn a_blocked_recv_wakes_when_the_last_sending_handle_is_dropped() {
    let queue = open();
    let producer = queue.producer();
    let consumer = queue.consumer();
    drop(queue);
    let waiting = in_thread(move || consumer.recv().map(|d| *d));
    assert_eq!(
        waiting.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout),
        "a producer is still alive"
    );

    drop(producer);

    assert_eq!(waiting.recv_timeout(WAIT).unwrap(), Err(RecvError::Closed));
}

#[test]
fn redriving_into_a_closed_queue_is_refused_and_the_letters_stay() {
    let queue = open();
    let id = queue.producer().send(1).unwrap();
    queue
        .consumer()
        .try_recv()
        .unwrap()
        .dead_letter("bad")
        .unwrap();
    queue.close();

    let dlq = queue.dead_letters();
    assert_eq!(dlq.redrive(id), Err(RedriveError::Closed));
    assert_eq!(dlq.redrive_with(id, 2), Err(RedriveError::Closed));
    assert_eq!(dlq.redrive_all(), Err(RedriveError::Closed));
    assert_eq!(dlq.redrive_where(|_| true), Err(RedriveError::Closed));
    assert_eq!(dlq.len(), 1);
    assert_eq!(queue.stats().redriven, 0);
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Closed);
}

#[test]
fn closing_twice_is_harmless() {
    let queue = open();
    queue.producer().send(1).unwrap();
    queue.close();
    queue.close();

    let consumer = queue.consumer();
    consumer.try_recv().unwrap().ack().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Closed);
}

#[test]
fn a_worker_loop_ends_after_draining_when_the_queue_is_closed() {
    let queue = open();
    let consumer = queue.consumer();
    let worker = in_thread(move || {
        let mut done = Vec::new();
        while let Ok(job) = consumer.recv() {
            done.push(*job);
            job.ack().unwrap();
        }
        done
    });
    let producer = queue.producer();
    for n in 0..100 {
        producer.send(n).unwrap();
    }

    queue.close();

    assert_eq!(
        worker.recv_timeout(WAIT).unwrap(),
        (0..100).collect::<Vec<u32>>()
    );
}

#[test]
fn after_close_a_resent_key_is_refused_not_reported_as_a_duplicate() {
    let queue = open();
    let producer = queue.producer();
    let options = || SendOptions::new().key("order-1");
    assert!(producer.send_with(1, options()).is_ok());

    queue.close();

    assert_eq!(producer.send_with(1, options()), Err(SendError::Closed(1)));
    assert_eq!(queue.stats().duplicates, 0);
}

#[test]
fn after_close_an_oversized_batch_is_refused_as_closed() {
    let queue: Queue<u32> = Queue::builder().capacity(2).open().unwrap();
    let producer = queue.producer();

    queue.close();

    assert_eq!(
        producer.send_batch(vec![1, 2, 3]),
        Err(SendError::Closed(vec![1, 2, 3]))
    );
}

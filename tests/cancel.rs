//! Cancelling messages no consumer holds (`Queue::cancel`, `cancel_key`)
//! and deleting one dead letter (`DeadLetters::remove`).

mod common;

use common::{ack_all_ready, manual, NS, SEC};
use spool::{Backoff, CancelError, Cancelled, ManualClock, Queue, RecvError, SendOptions};

#[test]
fn a_ready_or_delayed_message_is_cancelled_and_the_rest_keep_their_order() {
    let (clock, builder) = manual();
    let queue = builder.capacity(5).open().unwrap();
    let producer = queue.producer();
    let ids: Vec<_> = (1..=4).map(|n| producer.send(n).unwrap()).collect();
    let delayed = producer
        .send_with(5, SendOptions::new().delay(10 * SEC))
        .unwrap()
        .id();
    assert!(producer.try_send(6).is_err(), "full");

    assert_eq!(queue.cancel(ids[1]), Ok(Cancelled::Ready));
    assert_eq!(queue.cancel(delayed), Ok(Cancelled::Delayed));
    assert_eq!(queue.cancel(ids[1]), Err(CancelError::NotFound(ids[1])));
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.delayed, stats.cancelled), (3, 0, 2));
    producer.try_send(6).unwrap(); // the slots are free again

    clock.advance(10 * SEC);
    assert_eq!(ack_all_ready(&queue.consumer()), [1, 3, 4, 6]);
    assert_eq!(queue.stats().acked, 4);
}

#[test]
fn a_message_in_flight_dead_lettered_or_acked_cannot_be_cancelled() {
    let (_clock, builder) = manual();
    let queue = builder.max_receives(1).open().unwrap();
    let producer = queue.producer();
    let (a, b, c) = (
        producer.send(1).unwrap(),
        producer.send(2).unwrap(),
        producer.send(3).unwrap(),
    );
    let consumer = queue.consumer();
    let first = consumer.try_recv().unwrap();
    assert_eq!(queue.cancel(a), Err(CancelError::NotFound(a)));
    first.ack().unwrap();
    assert_eq!(queue.cancel(a), Err(CancelError::NotFound(a)));
    consumer.try_recv().unwrap().fail("no").unwrap(); // dead: max_receives 1
    assert_eq!(queue.cancel(b), Err(CancelError::NotFound(b)));
    let in_flight = consumer.try_recv().unwrap();
    assert_eq!(queue.cancel(c), Err(CancelError::NotFound(c)));
    in_flight.ack().unwrap();
    assert_eq!(queue.stats().cancelled, 0);
}

#[test]
fn a_message_waiting_out_its_backoff_is_cancelled_as_delayed() {
    let (clock, builder) = manual();
    let queue = builder.backoff(Backoff::Fixed(5 * SEC)).open().unwrap();
    let id = queue.producer().send(1).unwrap();
    queue.consumer().try_recv().unwrap().nack().unwrap();
    assert_eq!(queue.cancel(id), Ok(Cancelled::Delayed));
    clock.advance(5 * SEC);
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn cancel_key_finds_the_message_by_its_idempotency_key_within_the_window() {
    let (clock, builder) = manual();
    let queue = builder.dedup_window(60 * SEC).open().unwrap();
    let producer = queue.producer();
    let sent = producer
        .send_with(1, SendOptions::new().key("invoice-7").delay(SEC))
        .unwrap();
    assert_eq!(
        queue.cancel_key("invoice-7"),
        Ok((sent.id(), Cancelled::Delayed))
    );
    assert_eq!(
        queue.cancel_key("invoice-7"),
        Err(CancelError::NotFound(sent.id()))
    );
    // The key stays taken for the rest of its window, as after an ack.
    let again = producer.send_with(1, SendOptions::new().key("invoice-7"));
    assert_eq!(again.unwrap().id(), sent.id());
    assert_eq!(
        queue.cancel_key("other"),
        Err(CancelError::UnknownKey("other".into()))
    );
    clock.advance(60 * SEC);
    assert!(matches!(
        queue.cancel_key("invoice-7"),
        Err(CancelError::UnknownKey(_))
    ));
}

#[test]
fn cancels_and_removed_dead_letters_stay_gone_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let open = || -> Queue<u32> {
        Queue::builder()
            .path(dir.path())
            .clock(clock.clone())
            .max_receives(2)
            .open()
            .unwrap()
    };
    let queue = open();
    let producer = queue.producer();
    let ready = producer.send(1).unwrap();
    producer.send(2).unwrap();
    let delayed = producer
        .send_with(3, SendOptions::new().delay(SEC))
        .unwrap()
        .id();
    let (dead, kept) = (producer.send(4).unwrap(), producer.send(5).unwrap());
    assert_eq!(queue.cancel(ready), Ok(Cancelled::Ready));
    assert_eq!(queue.cancel(delayed), Ok(Cancelled::Delayed));
    let consumer = queue.consumer();
    assert_eq!(*consumer.try_recv().unwrap(), 2); // back to ready on reopen
    for _ in 0..2 {
        consumer.try_recv().unwrap().dead_letter("bad").unwrap();
    }
    let removed = queue.dead_letters().remove(dead).unwrap().unwrap();
    assert_eq!((removed.id(), *removed.payload()), (dead, 4));
    assert!(queue.dead_letters().remove(dead).unwrap().is_none());
    assert_eq!(queue.stats().purged, 1);
    drop((consumer, producer, queue));

    clock.advance(SEC + NS);
    let queue = open();
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.delayed, stats.dead_letters), (1, 0, 1));
    assert_eq!(ack_all_ready(&queue.consumer()), [2]);
    assert_eq!(queue.dead_letters().list()[0].id(), kept);
}

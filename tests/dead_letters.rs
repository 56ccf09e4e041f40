//! The dead-letter queue: messages that failed `max_receives` times, or
//! were rejected by a consumer, with their history; and the ways back out
//! (redrive) or away (purge).

mod common;

use common::{ack_all_ready, manual, SEC};
use spool::{
    Clock, Consumer, DeadLetterReason, ManualClock, MessageId, Queue, RecvError, RedriveError,
    SendError, SendOptions,
};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn queue_with_max_receives(max: u32) -> (ManualClock, Queue<u32>, Consumer<u32>) {
    let (clock, builder) = manual();
    let queue = builder
        .capacity(4)
        .visibility_timeout(LEASE)
        .max_receives(max)
        .open()
        .unwrap();
    let consumer = queue.consumer();
    (clock, queue, consumer)
}

/// Sends `payload` and dead-letters it at once; returns its id.
fn reject(queue: &Queue<u32>, payload: u32) -> MessageId {
    let id = queue.producer().send(payload).unwrap();
    let delivery = queue.consumer().try_recv().unwrap();
    assert_eq!(delivery.id(), id);
    delivery.dead_letter(format!("bad {payload}")).unwrap();
    id
}

#[test]
fn a_message_is_dead_lettered_after_max_receives_failed_attempts_of_any_kind() {
    let (clock, queue, consumer) = queue_with_max_receives(5);
    let sent = queue
        .producer()
        .send_with(42, SendOptions::new().key("job-42"))
        .unwrap();
    // Attempt 1: dropped unsettled at the end of the statement.
    let sent_at = consumer.try_recv().unwrap().enqueued_at();
    clock.advance(SEC);
    consumer.try_recv().unwrap().fail("disk full").unwrap(); // attempt 2
    clock.advance(SEC);
    let expiring = consumer.try_recv().unwrap(); // attempt 3: the lease runs out
    clock.advance(LEASE);
    assert!(expiring.ack().is_err());
    consumer.try_recv().unwrap().nack().unwrap(); // attempt 4
    clock.advance(SEC);
    let last = consumer.try_recv().unwrap(); // attempt 5
    assert_eq!(last.receive_count(), 5);
    clock.advance(SEC);
    last.fail("timeout talking to S3").unwrap();

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    let dlq = queue.dead_letters();
    assert_eq!(dlq.len(), 1);
    let letter = dlq.get(sent.id()).unwrap();
    assert_eq!(letter.id(), sent.id());
    assert_eq!(letter.key(), Some("job-42"));
    assert_eq!(*letter.payload(), 42);
    assert_eq!(letter.receive_count(), 5);
    assert_eq!(letter.reason(), &DeadLetterReason::MaxReceives(5));
    assert_eq!(letter.errors(), ["disk full", "timeout talking to S3"]);
    assert_eq!(letter.enqueued_at(), sent_at);
    assert_eq!(letter.dead_lettered_at(), clock.now());
}

#[test]
fn a_lease_expiring_on_the_last_receive_dead_letters_the_message() {
    let (clock, queue, consumer) = queue_with_max_receives(2);
    queue.producer().send(1).unwrap();
    consumer.try_recv().unwrap().nack().unwrap();
    let last = consumer.try_recv().unwrap();

    clock.advance(LEASE);

    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason(), &DeadLetterReason::MaxReceives(2));
    assert_eq!(
        letters[0].dead_lettered_at(),
        clock.now(),
        "dead-lettered when the lease ran out"
    );
    assert!(letters[0].errors().is_empty());
    assert!(last.ack().is_err());
    let stats = queue.stats();
    assert_eq!((stats.expired, stats.dead_lettered), (1, 1));
    assert_eq!((stats.in_flight, stats.dead_letters), (0, 1));
}

#[test]
fn retry_after_on_the_last_receive_dead_letters_the_message() {
    let (_clock, queue, consumer) = queue_with_max_receives(1);
    queue.producer().send(1).unwrap();

    consumer.try_recv().unwrap().retry_after(SEC).unwrap();

    assert_eq!(queue.dead_letters().len(), 1);
    assert_eq!(queue.stats().delayed, 0);
}

#[test]
fn dead_letter_moves_the_message_at_once_with_the_reason() {
    let (clock, queue, consumer) = queue_with_max_receives(5);
    let id = queue.producer().send(9).unwrap();
    clock.advance(SEC);

    consumer
        .try_recv()
        .unwrap()
        .dead_letter("unknown schema version")
        .unwrap();

    let letter = queue.dead_letters().get(id).unwrap();
    assert_eq!(
        letter.reason(),
        &DeadLetterReason::Rejected("unknown schema version".into())
    );
    assert_eq!(letter.receive_count(), 1);
    assert_eq!(
        letter
            .dead_lettered_at()
            .duration_since(letter.enqueued_at())
            .unwrap(),
        SEC
    );
    let stats = queue.stats();
    assert_eq!((stats.dead_lettered, stats.nacked), (1, 0));
}

#[test]
fn a_rejected_message_keeps_the_errors_of_earlier_attempts() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    let id = queue.producer().send(9).unwrap();
    consumer.try_recv().unwrap().fail("first").unwrap();

    consumer.try_recv().unwrap().dead_letter("enough").unwrap();

    let letter = queue.dead_letters().get(id).unwrap();
    assert_eq!(letter.errors(), ["first"]);
    assert_eq!(letter.receive_count(), 2);
}

#[test]
fn dead_letters_are_listed_in_id_order() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    let ids = queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let mut batch = consumer.recv_batch(3, SEC).unwrap().into_deliveries();
    batch.pop().unwrap().dead_letter("third first").unwrap();
    batch.pop().unwrap().ack().unwrap();
    batch.pop().unwrap().dead_letter("first last").unwrap();

    let listed: Vec<MessageId> = queue.dead_letters().list().iter().map(|l| l.id()).collect();

    assert_eq!(listed, [ids[0], ids[2]]);
}

#[test]
fn get_returns_none_for_a_message_that_is_not_dead_lettered() {
    let (_clock, queue, _consumer) = queue_with_max_receives(5);
    let id = queue.producer().send(1).unwrap();

    assert!(queue.dead_letters().get(id).is_none());
    assert!(queue.dead_letters().is_empty());
}

#[test]
fn redrive_moves_a_dead_letter_back_with_a_fresh_receive_count_and_no_errors() {
    let (clock, queue, consumer) = queue_with_max_receives(2);
    let id = queue.producer().send(5).unwrap();
    let sent_at = consumer.try_recv().unwrap().enqueued_at();
    // That first delivery was dropped; the second fails for good.
    consumer.try_recv().unwrap().fail("first life").unwrap();
    clock.advance(SEC);

    queue.dead_letters().redrive(id).unwrap();

    assert!(queue.dead_letters().is_empty());
    let again = consumer.try_recv().unwrap();
    assert_eq!((again.id(), *again, again.receive_count()), (id, 5, 1));
    assert_eq!(again.enqueued_at(), sent_at);
    again.fail("second life").unwrap();
    consumer
        .try_recv()
        .unwrap()
        .fail("second life, again")
        .unwrap();
    let letter = queue.dead_letters().get(id).unwrap();
    assert_eq!(letter.errors(), ["second life", "second life, again"]);
    assert_eq!(letter.reason(), &DeadLetterReason::MaxReceives(2));
    let stats = queue.stats();
    assert_eq!((stats.redriven, stats.dead_lettered), (1, 2));
}

#[test]
fn redrive_with_replaces_the_payload() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    let id = reject(&queue, 13);

    queue.dead_letters().redrive_with(id, 14).unwrap();

    let fixed = consumer.try_recv().unwrap();
    assert_eq!((fixed.id(), *fixed, fixed.receive_count()), (id, 14, 1));
    assert_eq!(queue.stats().redriven, 1);
}

#[test]
fn redrive_all_moves_every_dead_letter_back_in_id_order() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    for payload in [1, 2, 3] {
        reject(&queue, payload);
    }

    assert_eq!(queue.dead_letters().redrive_all(), Ok(3));

    assert!(queue.dead_letters().is_empty());
    assert_eq!(ack_all_ready(&consumer), [1, 2, 3]);
    let stats = queue.stats();
    assert_eq!((stats.redriven, stats.dead_letters), (3, 0));
}

#[test]
fn redrive_where_moves_back_only_the_chosen_dead_letters() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    for payload in [1, 2, 3, 4] {
        reject(&queue, payload);
    }

    let moved = queue
        .dead_letters()
        .redrive_where(|letter| letter.payload() % 2 == 0);

    assert_eq!(moved, Ok(2));
    assert_eq!(ack_all_ready(&consumer), [2, 4]);
    let left: Vec<u32> = queue
        .dead_letters()
        .list()
        .iter()
        .map(|l| *l.payload())
        .collect();
    assert_eq!(left, [1, 3]);
    assert_eq!(queue.stats().redriven, 2);
}

#[test]
fn redrive_where_can_select_by_reason() {
    let (_clock, queue, consumer) = queue_with_max_receives(1);
    reject(&queue, 1);
    queue.producer().send(2).unwrap();
    consumer.try_recv().unwrap().nack().unwrap(); // MaxReceives(1)

    let moved = queue
        .dead_letters()
        .redrive_where(|letter| matches!(letter.reason(), DeadLetterReason::MaxReceives(_)));

    assert_eq!(moved, Ok(1));
    assert_eq!(ack_all_ready(&consumer), [2]);
}

#[test]
fn purge_deletes_every_dead_letter_and_counts_them() {
    let (_clock, queue, _consumer) = queue_with_max_receives(5);
    for payload in [1, 2, 3] {
        reject(&queue, payload);
    }

    assert_eq!(queue.dead_letters().purge(), Ok(3));

    assert!(queue.dead_letters().is_empty());
    let stats = queue.stats();
    assert_eq!(
        (stats.purged, stats.dead_letters, stats.dead_lettered),
        (3, 0, 3)
    );
    assert_eq!(queue.dead_letters().purge(), Ok(0));
}

#[test]
fn dead_letters_do_not_count_against_capacity() {
    let (_clock, queue, _consumer) = queue_with_max_receives(5);
    for payload in 0..10 {
        reject(&queue, payload); // capacity is 4
    }

    let producer = queue.producer();
    for payload in 0..4 {
        producer.try_send(payload).unwrap();
    }

    assert_eq!(producer.try_send(4), Err(SendError::Full(4)));
    assert_eq!(queue.dead_letters().len(), 10);
}

#[test]
fn redrive_all_into_a_full_queue_moves_what_fits_and_leaves_the_rest() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    let ids: Vec<MessageId> = [1, 2, 3, 4, 5].map(|p| reject(&queue, p)).to_vec();
    let producer = queue.producer();
    producer.send(10).unwrap();
    producer.send(11).unwrap();

    let result = queue.dead_letters().redrive_all();

    assert_eq!(result, Err(RedriveError::Full { redriven: 2 }));
    let left: Vec<MessageId> = queue.dead_letters().list().iter().map(|l| l.id()).collect();
    assert_eq!(left, ids[2..]);
    assert_eq!(queue.stats().redriven, 2);
    assert_eq!(ack_all_ready(&consumer), [10, 11, 1, 2]);
}

#[test]
fn redrive_into_a_full_queue_is_refused_and_the_letter_stays() {
    let (_clock, queue, _consumer) = queue_with_max_receives(5);
    let id = reject(&queue, 1);
    for payload in 0..4 {
        queue.producer().send(payload).unwrap();
    }

    assert_eq!(
        queue.dead_letters().redrive(id),
        Err(RedriveError::Full { redriven: 0 })
    );
    assert_eq!(
        queue.dead_letters().redrive_with(id, 2),
        Err(RedriveError::Full { redriven: 0 })
    );
    assert_eq!(*queue.dead_letters().get(id).unwrap().payload(), 1);
    assert_eq!(queue.stats().redriven, 0);
}

#[test]
fn redrive_where_into_a_full_queue_reports_how_many_moved() {
    let (_clock, queue, _consumer) = queue_with_max_receives(5);
    for payload in [1, 2, 3, 4, 5, 6] {
        reject(&queue, payload);
    }
    queue.producer().send(0).unwrap();

    let result = queue.dead_letters().redrive_where(|l| *l.payload() > 1);

    assert_eq!(result, Err(RedriveError::Full { redriven: 3 }));
    let left: Vec<u32> = queue
        .dead_letters()
        .list()
        .iter()
        .map(|l| *l.payload())
        .collect();
    assert_eq!(left, [1, 5, 6]);
}

#[test]
fn redrive_of_an_unknown_id_is_not_found() {
    let (_clock, queue, consumer) = queue_with_max_receives(5);
    let acked = queue.producer().send(1).unwrap();
    consumer.try_recv().unwrap().ack().unwrap();
    let in_queue = queue.producer().send(2).unwrap();

    let dlq = queue.dead_letters();
    assert_eq!(dlq.redrive(acked), Err(RedriveError::NotFound(acked)));
    assert_eq!(dlq.redrive(in_queue), Err(RedriveError::NotFound(in_queue)));
    assert_eq!(
        dlq.redrive_with(acked, 3),
        Err(RedriveError::NotFound(acked))
    );
    assert_eq!(queue.stats().ready, 1, "nothing was added");
}

#[test]
fn a_purged_or_redriven_letter_is_not_found_again() {
    let (_clock, queue, _consumer) = queue_with_max_receives(5);
    let redriven = reject(&queue, 1);
    let purged = reject(&queue, 2);
    let dlq = queue.dead_letters();
    dlq.redrive(redriven).unwrap();
    dlq.purge().unwrap();

    assert_eq!(dlq.redrive(redriven), Err(RedriveError::NotFound(redriven)));
    assert_eq!(dlq.redrive(purged), Err(RedriveError::NotFound(purged)));
    assert_eq!(dlq.redrive_all(), Ok(0));
}

#[test]
fn fail_takes_any_error_and_keeps_its_text() {
    let (_clock, queue, consumer) = queue_with_max_receives(3);
    queue.producer().send(7).unwrap();
    let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "410 gone");
    consumer.try_recv().unwrap().fail(gone).unwrap();
    let text = String::from("borrowed");
    consumer.try_recv().unwrap().fail(&text).unwrap();
    let long = "é".repeat(spool::MAX_TEXT_BYTES);
    consumer.try_recv().unwrap().fail(long).unwrap();
    let letter = &queue.dead_letters().list()[0];
    assert_eq!(&letter.errors()[..2], ["410 gone", "borrowed"]);
    assert_eq!(
        letter.errors()[2].len(),
        spool::MAX_TEXT_BYTES,
        "cut at a char boundary"
    );
}

//! Idempotency keys: a key sent again within the dedup window (measured
//! from its first send) enqueues nothing and names the original message; a
//! key reused for another payload is a conflict.

mod common;

use common::{in_thread, manual, NS, SEC, WAIT};
use spool::{ManualClock, Queue, SendError, SendOptions, Sent};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(300);

fn keyed(key: &str) -> SendOptions {
    SendOptions::new().key(key)
}

fn dedup_queue() -> (ManualClock, Queue<u32>) {
    let (clock, builder) = manual();
    let queue = builder.dedup_window(WINDOW).open().unwrap();
    (clock, queue)
}

#[test]
fn a_duplicate_within_the_window_returns_the_original_id_and_enqueues_nothing() {
    let (_clock, queue) = dedup_queue();
    let producer = queue.producer();

    let first = producer.send_with(1, keyed("order-1")).unwrap();
    let again = producer.send_with(1, keyed("order-1")).unwrap();

    assert!(matches!(first, Sent::Enqueued(_)));
    assert_eq!(again, Sent::Duplicate(first.id()));
    assert!(again.is_duplicate());
    let stats = queue.stats();
    assert_eq!((stats.sent, stats.duplicates, stats.ready), (1, 1, 1));
}

#[test]
fn the_delivery_carries_its_key() {
    let (_clock, queue) = dedup_queue();
    queue.producer().send_with(1, keyed("order-1")).unwrap();
    queue.producer().send(2).unwrap();

    let consumer = queue.consumer();
    assert_eq!(consumer.try_recv().unwrap().key(), Some("order-1"));
    assert_eq!(consumer.try_recv().unwrap().key(), None);
}

#[test]
fn a_key_stays_a_duplicate_after_the_original_was_acked() {
    let (clock, queue) = dedup_queue();
    let producer = queue.producer();
    let first = producer.send_with(1, keyed("order-1")).unwrap();
    queue.consumer().try_recv().unwrap().ack().unwrap();
    clock.advance(WINDOW - NS);

    let again = producer.send_with(1, keyed("order-1")).unwrap();

    assert_eq!(again, Sent::Duplicate(first.id()));
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.duplicates), (0, 1));
}

#[test]
fn a_key_stays_a_duplicate_while_the_original_is_dead_lettered() {
    let (_clock, queue) = dedup_queue();
    let producer = queue.producer();
    let first = producer.send_with(1, keyed("order-1")).unwrap();
    queue
        .consumer()
        .try_recv()
        .unwrap()
        .dead_letter("bad")
        .unwrap();

    let again = producer.try_send_with(1, keyed("order-1")).unwrap();

    assert_eq!(again, Sent::Duplicate(first.id()));
    assert_eq!(
        queue.dead_letters().get(first.id()).unwrap().key(),
        Some("order-1")
    );
}

#[test]
fn every_duplicate_is_counted() {
    let (_clock, queue) = dedup_queue();
    let producer = queue.producer();
    producer.send_with(1, keyed("a")).unwrap();
    producer.send_with(2, keyed("b")).unwrap();

    for _ in 0..3 {
        producer.send_with(1, keyed("a")).unwrap();
    }
    producer.try_send_with(2, keyed("b")).unwrap();

    let stats = queue.stats();
    assert_eq!((stats.sent, stats.duplicates), (2, 4));
}

#[test]
fn a_key_reused_with_another_payload_is_a_conflict_that_gives_the_message_back() {
    let (_clock, queue) = dedup_queue();
    let producer = queue.producer();
    let first = producer.send_with(1, keyed("order-1")).unwrap();

    let refused = producer.send_with(2, keyed("order-1"));

    assert_eq!(
        refused,
        Err(SendError::KeyConflict {
            message: 2,
            original: first.id()
        })
    );
    assert_eq!(refused.unwrap_err().into_inner(), 2);
    let stats = queue.stats();
    assert_eq!((stats.sent, stats.duplicates, stats.ready), (1, 0, 1));
}

#[test]
fn different_keys_are_independent() {
    let (_clock, queue) = dedup_queue();
    let producer = queue.producer();

    let a = producer.send_with(1, keyed("a")).unwrap();
    let b = producer.send_with(1, keyed("b")).unwrap();
    let unkeyed = producer.send(1).unwrap();

    assert!(!a.is_duplicate() && !b.is_duplicate());
    assert_ne!(a.id(), b.id());
    assert_ne!(b.id(), unkeyed);
    assert_eq!(queue.stats().ready, 3);
}

#[test]
fn after_the_window_the_key_is_new_again() {
    let (clock, queue) = dedup_queue();
    let producer = queue.producer();
    let first = producer.send_with(1, keyed("order-1")).unwrap();

    clock.advance(WINDOW);
    let again = producer.send_with(1, keyed("order-1")).unwrap();

    assert!(matches!(again, Sent::Enqueued(id) if id != first.id()));
    assert_eq!(queue.stats().ready, 2);
}

#[test]
fn after_the_window_the_key_can_carry_another_payload() {
    let (clock, queue) = dedup_queue();
    let producer = queue.producer();
    producer.send_with(1, keyed("order-1")).unwrap();

    clock.advance(WINDOW);
    let second = producer.send_with(2, keyed("order-1")).unwrap();

    assert!(!second.is_duplicate());
    assert_eq!(
        producer.send_with(2, keyed("order-1")),
        Ok(Sent::Duplicate(second.id()))
    );
}

#[test]
fn the_window_is_measured_from_the_first_send_not_the_last_duplicate() {
    let (clock, queue) = dedup_queue();
    let producer = queue.producer();
    let first = producer.send_with(1, keyed("order-1")).unwrap();
    clock.advance(WINDOW - SEC);
    assert_eq!(
        producer.send_with(1, keyed("order-1")),
        Ok(Sent::Duplicate(first.id()))
    );

    clock.advance(SEC);

    assert!(!producer
        .send_with(1, keyed("order-1"))
        .unwrap()
        .is_duplicate());
}

#[test]
fn a_send_refused_for_lack_of_room_leaves_no_key_behind() {
    let (_clock, builder) = manual();
    let queue = builder.capacity(1).open().unwrap();
    let producer = queue.producer();
    producer.send(0).unwrap();

    assert_eq!(
        producer.try_send_with(1, keyed("order-1")),
        Err(SendError::Full(1))
    );
    assert_eq!(
        producer.send_timeout(0, Duration::from_millis(1)),
        Err(SendError::Timeout(0))
    );
    queue.consumer().try_recv().unwrap().ack().unwrap();

    let sent = producer.try_send_with(1, keyed("order-1")).unwrap();
    assert!(!sent.is_duplicate());
}

#[test]
fn a_duplicate_is_reported_even_when_the_queue_is_full() {
    let (_clock, builder) = manual();
    let queue = builder.capacity(1).open().unwrap();
    let producer = queue.producer();
    let first = producer.send_with(1, keyed("order-1")).unwrap();

    assert_eq!(
        producer.try_send_with(1, keyed("order-1")),
        Ok(Sent::Duplicate(first.id()))
    );
}

#[test]
fn concurrent_sends_with_one_key_enqueue_exactly_one_message() {
    const THREADS: usize = 4;
    const ROUNDS: u32 = 50;
    let queue: Queue<u32> = Queue::builder().open().unwrap();

    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(THREADS));
        let key = format!("round-{round}");
        let answers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (producer, barrier, key) = (queue.producer(), barrier.clone(), key.clone());
                in_thread(move || {
                    barrier.wait();
                    producer.send_with(round, SendOptions::new().key(key))
                })
            })
            .collect();
        let sent: Vec<Sent> = answers
            .into_iter()
            .map(|answer| answer.recv_timeout(WAIT).unwrap().unwrap())
            .collect();

        let enqueued: Vec<&Sent> = sent.iter().filter(|s| !s.is_duplicate()).collect();
        assert_eq!(enqueued.len(), 1, "round {round}: {sent:?}");
        let id = enqueued[0].id();
        assert!(sent.iter().all(|s| s.id() == id), "round {round}: {sent:?}");
    }

    let stats = queue.stats();
    assert_eq!(stats.sent, u64::from(ROUNDS));
    assert_eq!(stats.duplicates, u64::from(ROUNDS) * (THREADS as u64 - 1));
    assert_eq!(stats.ready, ROUNDS as usize);
}

#[test]
fn with_dedup_key_only_another_payload_under_the_key_is_a_duplicate_even_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let open = |key_only: bool| -> Queue<u32> {
        Queue::builder()
            .path(dir.path())
            .clock(clock.clone())
            .dedup_window(WINDOW)
            .dedup_key_only(key_only)
            .open()
            .unwrap()
    };
    let queue = open(true);
    let first = queue.producer().send_with(1, keyed("event-9")).unwrap();
    let again = queue.producer().send_with(2, keyed("event-9")).unwrap();
    assert_eq!(again, Sent::Duplicate(first.id()));
    drop(queue);

    let queue = open(true);
    clock.advance(WINDOW - NS);
    let again = queue.producer().send_with(3, keyed("event-9")).unwrap();
    assert_eq!(again, Sent::Duplicate(first.id()));
    let delivery = queue.consumer().try_recv().unwrap();
    assert_eq!(*delivery, 1, "the first payload is the one kept");
    delivery.ack().unwrap();
    drop(queue);

    // Without the option, the recovered key compares payloads again.
    let queue = open(false);
    let refused = queue.producer().send_with(4, keyed("event-9")).unwrap_err();
    assert!(
        matches!(refused, SendError::KeyConflict { .. }),
        "{refused:?}"
    );
    clock.advance(NS);
    let sent = queue.producer().send_with(4, keyed("event-9")).unwrap();
    assert!(!sent.is_duplicate(), "the window has passed");
}

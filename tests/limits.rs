//! Per-message limits: `SendOptions::max_receives` and a time to live
//! (`SendOptions::ttl`) after which a message never received is
//! dead-lettered as `Expired`.

mod common;

use common::{ack_all_ready, manual, NS, SEC};
use spool::{Clock, DeadLetterReason, ManualClock, Queue, RecvError, SendOptions};

fn ttl(ttl: std::time::Duration) -> SendOptions {
    SendOptions::new().ttl(ttl)
}

#[test]
fn a_message_s_own_max_receives_replaces_the_queue_s() {
    let (_clock, builder) = manual();
    let queue = builder.max_receives(5).open().unwrap();
    let producer = queue.producer();
    let once = producer
        .send_with(1, SendOptions::new().max_receives(1))
        .unwrap()
        .id();
    let twice = producer
        .send_with(2, SendOptions::new().max_receives(0)) // taken as 1
        .unwrap()
        .id();
    let many = producer
        .send_with(3, SendOptions::new().max_receives(7))
        .unwrap()
        .id();
    let consumer = queue.consumer();
    for _ in 0..7 {
        while let Ok(delivery) = consumer.try_recv() {
            delivery.fail("no").unwrap();
        }
    }
    let dead = queue.dead_letters();
    assert_eq!(
        dead.get(once).unwrap().reason(),
        &DeadLetterReason::MaxReceives(1)
    );
    assert_eq!(
        dead.get(twice).unwrap().reason(),
        &DeadLetterReason::MaxReceives(1)
    );
    assert_eq!(
        dead.get(many).unwrap().reason(),
        &DeadLetterReason::MaxReceives(7)
    );
}

#[test]
fn a_message_never_received_is_dead_lettered_as_expired_exactly_at_its_ttl() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let sent_at = clock.now();
    let id = queue.producer().send_with(1, ttl(10 * SEC)).unwrap().id();
    queue.producer().send(2).unwrap();

    clock.advance(10 * SEC - NS);
    assert_eq!((queue.stats().ready, queue.stats().dead_letters), (2, 0));
    clock.advance(NS);
    let stats = queue.stats();
    assert_eq!(
        (stats.ready, stats.dead_letters, stats.dead_lettered),
        (1, 1, 1)
    );
    let letter = queue.dead_letters().get(id).unwrap();
    assert_eq!(letter.reason(), &DeadLetterReason::Expired);
    assert_eq!(letter.reason().to_string(), "expired");
    assert_eq!(letter.dead_lettered_at(), sent_at + 10 * SEC);
    assert_eq!(letter.receive_count(), 0);
    assert_eq!(ack_all_ready(&queue.consumer()), [2]);
}

#[test]
fn a_late_look_still_dead_letters_as_of_the_expiry_and_never_delivers() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let sent_at = clock.now();
    let id = queue.producer().send_with(1, ttl(SEC)).unwrap().id();
    clock.advance(60 * SEC);
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
    let letter = queue.dead_letters().get(id).unwrap();
    assert_eq!(letter.dead_lettered_at(), sent_at + SEC);
}

#[test]
fn a_delayed_message_expires_at_its_ttl_even_before_its_delay_ends() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let options = ttl(5 * SEC).delay(10 * SEC);
    let id = queue.producer().send_with(1, options).unwrap().id();
    clock.advance(5 * SEC);
    let stats = queue.stats();
    assert_eq!((stats.delayed, stats.dead_letters), (0, 1));
    assert!(queue.dead_letters().get(id).is_some());
    clock.advance(10 * SEC);
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn a_received_message_is_out_of_reach_of_its_ttl_and_a_redrive_clears_it() {
    let (clock, builder) = manual();
    let queue = builder.max_receives(2).open().unwrap();
    let producer = queue.producer();
    let received = producer.send_with(1, ttl(SEC)).unwrap().id();
    let expiring = producer.send_with(2, ttl(SEC)).unwrap().id();
    let consumer = queue.consumer();
    consumer.try_recv().unwrap().nack().unwrap(); // 1, back to ready
    let again = consumer.try_recv().unwrap(); // 2 is next: keep it in flight
    assert_eq!(again.id(), expiring);
    again.nack().unwrap();
    clock.advance(SEC);
    assert_eq!(queue.stats().dead_letters, 0, "both were received");
    let first = consumer.try_recv().unwrap();
    assert_eq!(first.id(), received);
    first.dead_letter("inspect").unwrap();

    queue.dead_letters().redrive(received).unwrap();
    clock.advance(10 * SEC);
    assert_eq!(
        queue.stats().ready,
        2,
        "a redrive gives it a life without ttl"
    );
    assert_eq!(queue.cancel(expiring).map(|_| ()), Ok(()));
    assert_eq!(ack_all_ready(&consumer), [1]);
}

#[test]
fn limits_survive_a_reopen_and_what_expired_meanwhile_is_dead_lettered_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let open = || -> Queue<u32> {
        Queue::builder()
            .path(dir.path())
            .clock(clock.clone())
            .backoff(spool::Backoff::None)
            .max_receives(5)
            .open()
            .unwrap()
    };
    let start = clock.now();
    let queue = open();
    let producer = queue.producer();
    let short = producer.send_with(1, ttl(10 * SEC)).unwrap().id();
    let long = producer.send_with(2, ttl(100 * SEC)).unwrap().id();
    let once = producer
        .send_with(3, SendOptions::new().max_receives(1))
        .unwrap()
        .id();
    queue.compact().unwrap(); // the limits must outlive a compaction too
    drop((producer, queue));

    clock.advance(50 * SEC);
    let queue = open();
    let letter = queue.dead_letters().get(short).unwrap();
    assert_eq!(letter.reason(), &DeadLetterReason::Expired);
    assert_eq!(letter.dead_lettered_at(), start + 10 * SEC);
    assert_eq!(queue.stats().ready, 2);
    let consumer = queue.consumer();
    let third = loop {
        let delivery = consumer.try_recv().unwrap();
        if delivery.id() == once {
            break delivery;
        }
    }; // 2 was received (and dropped), so its ttl no longer applies
    third.fail("once").unwrap();
    let dead = queue.dead_letters().get(once).unwrap();
    assert_eq!(dead.reason(), &DeadLetterReason::MaxReceives(1));
    drop((consumer, queue));

    clock.advance(100 * SEC);
    let queue = open();
    assert_eq!(queue.stats().dead_letters, 2);
    let delivery = queue.consumer().try_recv().unwrap();
    assert_eq!((delivery.id(), delivery.receive_count()), (long, 2));
}

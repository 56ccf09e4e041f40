//! Retries: a failed attempt (nack, fail, drop, lease expiry) makes the
//! message visible again after the queue's backoff, or after the delay a
//! consumer asked for with `retry_after`.

mod common;

use common::{ack_all_ready, manual, NS, SEC};
use spool::{Backoff, Consumer, Delivery, ManualClock, Queue, RecvError};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn queue_with(backoff: Backoff) -> (ManualClock, Queue<u32>, Consumer<u32>) {
    let (clock, builder) = manual();
    let queue = builder
        .visibility_timeout(LEASE)
        .max_receives(20)
        .backoff(backoff)
        .jitter_seed(7)
        .open()
        .unwrap();
    let consumer = queue.consumer();
    (clock, queue, consumer)
}

/// Asserts that the message is invisible until exactly `delay` from now,
/// and visible then; returns that delivery.
fn visible_again_after(
    delay: Duration,
    clock: &ManualClock,
    consumer: &Consumer<u32>,
) -> Delivery<u32> {
    clock.advance(delay - NS);
    assert_eq!(
        consumer.try_recv().unwrap_err(),
        RecvError::Empty,
        "visible before {delay:?}"
    );
    clock.advance(NS);
    consumer.try_recv().expect("visible at the due time")
}

const FIXED: Duration = Duration::from_secs(10);

#[test]
fn fixed_backoff_applies_after_a_nack() {
    let (clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    consumer.try_recv().unwrap().nack().unwrap();

    let stats = queue.stats();
    assert_eq!((stats.ready, stats.delayed, stats.nacked), (0, 1, 1));
    let again = visible_again_after(FIXED, &clock, &consumer);
    assert_eq!(again.receive_count(), 2);
}

#[test]
fn fixed_backoff_applies_after_a_fail() {
    let (clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    consumer.try_recv().unwrap().fail("boom").unwrap();

    visible_again_after(FIXED, &clock, &consumer);
}

#[test]
fn fixed_backoff_applies_after_a_drop() {
    let (clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    drop(consumer.try_recv().unwrap());

    assert_eq!(queue.stats().delayed, 1);
    visible_again_after(FIXED, &clock, &consumer);
}

#[test]
fn fixed_backoff_applies_after_a_lease_expires() {
    let (clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    let lost = consumer.try_recv().unwrap();
    clock.advance(LEASE);

    let stats = queue.stats();
    assert_eq!((stats.expired, stats.delayed, stats.ready), (1, 1, 0));
    let again = visible_again_after(FIXED, &clock, &consumer);
    assert_eq!(again.receive_count(), 2);
    assert!(lost.ack().is_err());
}

#[test]
fn backoff_after_a_lease_expiry_runs_from_the_expiry_even_if_noticed_late() {
    // Nobody looks at the queue between the expiry (30 s) and 41 s: the
    // retry was due at 40 s, so the message is visible at 41 s.
    let (clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    let lost = consumer.try_recv().unwrap();

    clock.advance(LEASE + FIXED + SEC);

    let again = consumer.try_recv().expect("the backoff has passed");
    assert_eq!(again.receive_count(), 2);
    drop(lost);
}

#[test]
fn exponential_backoff_without_jitter_doubles_up_to_the_cap() {
    let (clock, queue, consumer) = queue_with(Backoff::Exponential {
        initial: SEC,
        max: 5 * SEC,
        jitter: false,
    });
    queue.producer().send(1).unwrap();
    let mut delivery = consumer.try_recv().unwrap();

    for (attempt, expected) in [1, 2, 4, 5, 5, 5].into_iter().enumerate() {
        assert_eq!(delivery.receive_count(), attempt as u32 + 1);
        delivery.nack().unwrap();
        delivery = visible_again_after(expected * SEC, &clock, &consumer);
    }
}

#[test]
fn exponential_backoff_applies_to_every_kind_of_failed_attempt() {
    let (clock, queue, consumer) = queue_with(Backoff::Exponential {
        initial: SEC,
        max: 60 * SEC,
        jitter: false,
    });
    queue.producer().send(1).unwrap();

    consumer.try_recv().unwrap().nack().unwrap();
    let second = visible_again_after(SEC, &clock, &consumer);
    second.fail("boom").unwrap();
    let third = visible_again_after(2 * SEC, &clock, &consumer);
    drop(third);
    let fourth = visible_again_after(4 * SEC, &clock, &consumer);
    clock.advance(LEASE);
    assert_eq!(queue.stats().expired, 1);
    let fifth = visible_again_after(8 * SEC, &clock, &consumer);
    assert_eq!(fifth.receive_count(), 5);
    assert!(fourth.ack().is_err());
}

#[test]
fn exponential_backoff_with_jitter_stays_between_half_and_all_of_the_delay() {
    let (clock, queue, consumer) = queue_with(Backoff::Exponential {
        initial: SEC,
        max: 16 * SEC,
        jitter: true,
    });
    queue.producer().send(1).unwrap();
    let mut delivery = consumer.try_recv().unwrap();

    for full in [1, 2, 4, 8, 16, 16].map(|s| s * SEC) {
        delivery.nack().unwrap();
        clock.advance(full / 2 - NS);
        assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
        clock.advance(full - full / 2 + NS);
        delivery = consumer.try_recv().expect("visible by the full delay");
    }
}

#[test]
fn jitter_spreads_retries_that_fail_together() {
    let (clock, queue, consumer) = queue_with(Backoff::exponential(4 * SEC, 4 * SEC));
    queue.producer().send_batch((0..20).collect()).unwrap();
    let batch = consumer.recv_batch(20, SEC).unwrap();
    assert_eq!(batch.len(), 20);
    batch.nack().unwrap();

    clock.advance(3 * SEC);
    let early = queue.stats().ready;
    clock.advance(SEC);
    let stats = queue.stats();

    assert!(
        early > 0 && early < 20,
        "{early} of 20 ready at 3/4 of the delay"
    );
    assert_eq!((stats.ready, stats.delayed), (20, 0));
}

#[test]
fn the_same_jitter_seed_gives_the_same_retry_times() {
    let ready_at_three_quarters = |seed: u64| {
        let (clock, builder) = manual();
        let queue = builder
            .backoff(Backoff::exponential(4 * SEC, 4 * SEC))
            .jitter_seed(seed)
            .open()
            .unwrap();
        queue.producer().send_batch((0..20).collect()).unwrap();
        queue
            .consumer()
            .recv_batch(20, SEC)
            .unwrap()
            .nack()
            .unwrap();
        clock.advance(3 * SEC);
        ack_all_ready(&queue.consumer())
    };

    assert_eq!(ready_at_three_quarters(99), ready_at_three_quarters(99));
}

#[test]
fn retry_after_overrides_the_backoff() {
    let (clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    consumer.try_recv().unwrap().retry_after(3 * SEC).unwrap();

    assert_eq!(queue.stats().nacked, 1);
    let again = visible_again_after(3 * SEC, &clock, &consumer);
    assert_eq!(again.receive_count(), 2);
}

#[test]
fn retry_after_delays_even_without_a_backoff_policy() {
    let (clock, queue, consumer) = queue_with(Backoff::None);
    queue.producer().send(1).unwrap();
    consumer.try_recv().unwrap().retry_after(90 * SEC).unwrap();

    assert_eq!(queue.stats().delayed, 1);
    visible_again_after(90 * SEC, &clock, &consumer);
}

#[test]
fn retry_after_zero_is_visible_at_once() {
    let (_clock, queue, consumer) = queue_with(Backoff::Fixed(FIXED));
    queue.producer().send(1).unwrap();
    consumer
        .try_recv()
        .unwrap()
        .retry_after(Duration::ZERO)
        .unwrap();

    assert_eq!(consumer.try_recv().unwrap().receive_count(), 2);
}

#[test]
fn without_backoff_a_nacked_message_goes_to_the_back_of_the_queue() {
    let (_clock, queue, consumer) = queue_with(Backoff::None);
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    consumer.try_recv().unwrap().nack().unwrap();

    assert_eq!(ack_all_ready(&consumer), [2, 3, 1]);
}

#[test]
fn retries_coming_due_together_are_queued_by_due_time_then_id() {
    let (clock, queue, consumer) = queue_with(Backoff::None);
    queue.producer().send_batch(vec![1, 2, 3, 4]).unwrap();
    let batch = consumer.recv_batch(4, SEC).unwrap();
    let mut batch = batch.into_deliveries().into_iter();
    let (one, two, three, four) = (
        batch.next().unwrap(),
        batch.next().unwrap(),
        batch.next().unwrap(),
        batch.next().unwrap(),
    );
    four.retry_after(2 * SEC).unwrap();
    three.retry_after(3 * SEC).unwrap();
    two.retry_after(2 * SEC).unwrap();
    one.retry_after(SEC).unwrap();

    clock.advance(10 * SEC);

    assert_eq!(ack_all_ready(&consumer), [1, 2, 4, 3]);
}

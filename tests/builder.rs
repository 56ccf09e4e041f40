//! Opening a queue: every invalid setting is refused with its own typed
//! error; valid settings take effect.

mod common;

use common::{manual, NS, SEC};
use spool::{Backoff, ManualClock, OpenError, Queue, MAX_CAPACITY, MAX_IDLE_SPIN};
use std::time::Duration;

fn open_error(builder: spool::Builder<u32>) -> OpenError {
    builder.open().unwrap_err()
}

#[test]
fn zero_capacity_is_refused() {
    assert_eq!(
        open_error(Queue::builder().capacity(0)),
        OpenError::ZeroCapacity
    );
}

#[test]
fn a_capacity_above_the_maximum_is_refused_with_both_numbers() {
    assert_eq!(
        open_error(Queue::builder().capacity(MAX_CAPACITY + 1)),
        OpenError::CapacityTooLarge {
            requested: MAX_CAPACITY + 1,
            max: MAX_CAPACITY
        }
    );
}

#[test]
fn an_idle_spin_above_the_maximum_is_refused_and_the_maximum_opens() {
    let too_long = MAX_IDLE_SPIN + NS;
    match open_error(Queue::builder().idle_spin(too_long)) {
        OpenError::IdleSpinTooLong { requested, max } => {
            assert_eq!((requested, max), (too_long, MAX_IDLE_SPIN))
        }
        other => panic!("unexpected {other:?}"),
    }
    let queue: Queue<u32> = Queue::builder().idle_spin(MAX_IDLE_SPIN).open().unwrap();
    queue.producer().send(1).unwrap();
    assert_eq!(*queue.consumer().recv().unwrap(), 1);
}

#[test]
fn a_compaction_rate_below_a_mib_per_second_is_refused_and_unlimited_opens() {
    let dir = tempfile::tempdir().unwrap();
    for requested in [0, (1 << 20) - 1] {
        assert_eq!(
            open_error(Queue::builder().path(dir.path()).compaction_rate(requested)),
            OpenError::InvalidCompactionRate {
                requested,
                min: 1 << 20
            }
        );
    }
    // Without a path it is a persistence setting without one.
    assert_eq!(
        open_error(Queue::builder().compaction_rate(u64::MAX)),
        OpenError::NoPath
    );
    let queue: Queue<u32> = Queue::builder()
        .path(dir.path())
        .compaction_rate(u64::MAX)
        .open()
        .unwrap();
    queue.producer().send(1).unwrap();
    queue.compact().unwrap();
    assert_eq!(*queue.consumer().recv().unwrap(), 1);
}

#[test]
fn a_zero_visibility_timeout_is_refused() {
    assert_eq!(
        open_error(Queue::builder().visibility_timeout(Duration::ZERO)),
        OpenError::ZeroVisibilityTimeout
    );
}

#[test]
fn zero_max_receives_is_refused() {
    assert_eq!(
        open_error(Queue::builder().max_receives(0)),
        OpenError::ZeroMaxReceives
    );
}

#[test]
fn a_zero_dedup_window_is_refused() {
    assert_eq!(
        open_error(Queue::builder().dedup_window(Duration::ZERO)),
        OpenError::ZeroDedupWindow
    );
}

#[test]
fn exponential_backoff_with_a_zero_initial_delay_is_refused() {
    let error = open_error(Queue::builder().backoff(Backoff::exponential(Duration::ZERO, SEC)));
    assert!(matches!(error, OpenError::InvalidBackoff(_)), "{error:?}");
}

#[test]
fn exponential_backoff_with_a_cap_below_its_initial_delay_is_refused() {
    let error = open_error(Queue::builder().backoff(Backoff::Exponential {
        initial: 2 * SEC,
        max: SEC,
        jitter: false,
    }));
    assert!(matches!(error, OpenError::InvalidBackoff(_)), "{error:?}");
}

#[test]
fn open_errors_explain_themselves() {
    let message = OpenError::CapacityTooLarge {
        requested: 5,
        max: 4,
    }
    .to_string();
    assert!(message.contains('5') && message.contains('4'), "{message}");
    assert!(!OpenError::ZeroMaxReceives.to_string().is_empty());
}

#[test]
fn the_smallest_valid_settings_open() {
    let queue: Queue<u32> = Queue::builder()
        .capacity(1)
        .visibility_timeout(NS)
        .max_receives(1)
        .dedup_window(NS)
        .backoff(Backoff::Fixed(Duration::ZERO))
        .open()
        .unwrap();
    assert_eq!(queue.stats().capacity, 1);
}

#[test]
fn exponential_backoff_with_equal_initial_and_cap_opens() {
    let opened: Result<Queue<u32>, _> = Queue::builder()
        .backoff(Backoff::exponential(SEC, SEC))
        .open();
    assert!(opened.is_ok());
}

#[test]
fn the_default_capacity_is_ten_thousand() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    assert_eq!(queue.stats().capacity, 10_000);
}

#[test]
fn the_default_visibility_timeout_is_thirty_seconds() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();
    let delivery = consumer.try_recv().unwrap();

    clock.advance(30 * SEC - NS);
    assert!(consumer.try_recv().is_err());
    clock.advance(NS);
    assert!(delivery.ack().is_err());
    assert_eq!(consumer.try_recv().unwrap().receive_count(), 2);
}

#[test]
fn the_default_max_receives_is_five() {
    let (_clock, builder) = manual();
    let queue = builder.open().unwrap();
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();

    for attempt in 1..=5 {
        assert!(queue.dead_letters().is_empty(), "before attempt {attempt}");
        consumer.try_recv().unwrap().nack().unwrap();
    }

    assert_eq!(queue.dead_letters().len(), 1);
}

#[test]
fn the_default_dedup_window_is_five_minutes() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let producer = queue.producer();
    let key = || spool::SendOptions::new().key("k");
    producer.send_with(1, key()).unwrap();

    clock.advance(300 * SEC - NS);
    assert!(producer.send_with(1, key()).unwrap().is_duplicate());
    clock.advance(NS);
    assert!(!producer.send_with(1, key()).unwrap().is_duplicate());
}

#[test]
fn the_default_backoff_waits_about_a_second_then_doubles() {
    let clock = ManualClock::new();
    let queue: Queue<u32> = Queue::builder().clock(clock.clone()).open().unwrap();
    assert_eq!(Backoff::default(), Backoff::DEFAULT);
    queue.producer().send(1).unwrap();
    let consumer = queue.consumer();
    let step = Duration::from_millis(10);
    let mut delivery = consumer.try_recv().unwrap();
    let mut waits = Vec::new();
    for attempt in 1..=3 {
        assert_eq!(delivery.receive_count(), attempt);
        delivery.nack().unwrap();
        let mut waited = Duration::ZERO;
        delivery = loop {
            if let Ok(next) = consumer.try_recv() {
                break next;
            }
            assert!(waited < Duration::from_secs(10), "no redelivery");
            clock.advance(step);
            waited += step;
        };
        waits.push(waited);
    }
    delivery.ack().unwrap();
    // Equal jitter: within [d/2, d] of 1 s, 2 s, 4 s (to the 10 ms step).
    for (wait, full) in waits.iter().zip([1, 2, 4]) {
        let full = Duration::from_secs(full);
        assert!(*wait >= full / 2 && *wait <= full + step, "{waits:?}");
    }
}

//! Time at its limits: a [`ManualClock`] advanced by `Duration::MAX`, and
//! `Duration::MAX` given wherever a duration is taken. The queue's time
//! saturates at `u64::MAX` nanoseconds after the Unix epoch (in 2554);
//! nothing panics, and leases granted there still work.

mod common;

use common::{manual, NS, SEC};
use spool::{ManualClock, Queue, RecvError, SendOptions, SettleError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant the queue can represent.
fn end_of_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::MAX)
}

/// Issue 10, fault 4: `advance(Duration::MAX)` panicked in `now()`, and
/// past the clock's saturation point a fresh lease was already expired.
#[test]
fn manual_clock_advance_duration_max_panics() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(30 * SEC).open().unwrap();
    clock.advance(Duration::MAX);
    assert_eq!(spool::Clock::now(&clock), end_of_time());
    clock.advance(Duration::MAX); // and again: it stays there
    clock.advance(SEC);
    assert_eq!(spool::Clock::now(&clock), end_of_time());

    queue.producer().send(1).unwrap();
    let delivery = queue.consumer().try_recv().unwrap();
    assert_eq!(delivery.enqueued_at(), end_of_time());
    clock.advance(Duration::MAX);
    assert_eq!(
        delivery.ack(),
        Ok(()),
        "a lease granted at the end of time holds"
    );
    let stats = queue.stats();
    assert_eq!((stats.acked, stats.expired, stats.in_flight), (1, 0, 0));

    // An idempotency window that saturated there still holds its key.
    let keyed = || SendOptions::new().key("once");
    let first = queue.producer().send_with(2, keyed()).unwrap();
    let again = queue.producer().send_with(2, keyed()).unwrap();
    assert!(again.is_duplicate() && again.id() == first.id());
}

/// Near the saturation point, a lease whose deadline saturates still
/// holds when the clock reaches that same instant; one whose deadline
/// fits runs out as usual.
#[test]
fn leases_near_the_saturation_point_run_out_only_when_they_fit() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(30 * SEC).open().unwrap();
    let ten_before_the_end = Duration::from_nanos(u64::MAX) - 10 * SEC;
    let now = spool::Clock::now(&clock)
        .duration_since(UNIX_EPOCH)
        .unwrap();
    let since_start = ten_before_the_end - now;
    clock.advance(since_start);
    assert_eq!(spool::Clock::now(&clock), UNIX_EPOCH + ten_before_the_end);

    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send(1).unwrap();
    producer.send(2).unwrap();
    let saturated = consumer.try_recv().unwrap(); // deadline: the end of time
    let fits = consumer.try_recv().unwrap();
    fits.extend(5 * SEC).unwrap(); // deadline: 5 s before the end
    clock.advance(5 * SEC - NS);
    assert_eq!(
        fits.extend(5 * SEC),
        Ok(()),
        "not run out yet; now 1 ns before the end"
    );
    clock.advance(Duration::MAX); // at the end of time
    assert!(matches!(fits.ack(), Err(SettleError::LeaseExpired { .. })));
    assert_eq!(saturated.ack(), Ok(()));
    let again = consumer.try_recv().unwrap();
    assert_eq!((*again, again.receive_count()), (2, 2));
    assert_eq!(again.ack(), Ok(()));
    assert_eq!(queue.stats().expired, 1);
}

/// Delays and backoffs that would end beyond the end of time come due
/// there; before it they wait.
#[test]
fn delays_that_saturate_come_due_at_the_end_of_time() {
    let (clock, builder) = manual();
    let queue = builder.open().unwrap();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer
        .send_with(1, SendOptions::new().delay(Duration::MAX))
        .unwrap();
    producer.send(2).unwrap();
    let delivery = consumer.try_recv().unwrap();
    delivery.retry_after(Duration::MAX).unwrap();
    clock.advance(Duration::from_secs(500 * 365 * 24 * 3600)); // year 2525
    assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
    assert_eq!(queue.stats().delayed, 2);

    clock.advance(Duration::MAX);
    let mut seen: Vec<u32> = (0..2)
        .map(|_| {
            let delivery = consumer.try_recv().unwrap();
            let payload = *delivery;
            delivery.ack().unwrap();
            payload
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [1, 2]);

    // At the end of time, a short delay comes due at once (it cannot end
    // later), and a lease still holds.
    producer
        .send_with(3, SendOptions::new().delay(SEC))
        .unwrap();
    let late = consumer.try_recv().unwrap();
    assert_eq!((*late, late.ack()), (3, Ok(())));
}

/// `Duration::MAX` as a visibility timeout, an extension, a retry delay, a
/// send delay and a wait, on a manual clock and on the system clock: no
/// panic, and what each means.
#[test]
fn duration_max_is_taken_everywhere_a_duration_is() {
    let manual = ManualClock::new();
    let on_manual: Queue<u32> = Queue::builder()
        .clock(manual.clone())
        .visibility_timeout(Duration::MAX)
        .open()
        .unwrap();
    let on_system: Queue<u32> = Queue::builder()
        .visibility_timeout(Duration::MAX)
        .open()
        .unwrap();
    for (queue, clock) in [(&on_manual, Some(&manual)), (&on_system, None)] {
        let (producer, consumer) = (queue.producer(), queue.consumer());
        producer.send_timeout(1, Duration::MAX).unwrap();
        producer
            .send_with(2, SendOptions::new().delay(Duration::MAX))
            .unwrap();
        let delivery = consumer.recv_timeout(Duration::MAX).unwrap();
        assert_eq!(*delivery, 1);
        delivery.extend(Duration::MAX).unwrap();
        if let Some(clock) = clock {
            clock.advance(Duration::from_secs(400 * 365 * 24 * 3600));
        }
        delivery.extend(Duration::MAX).unwrap();
        delivery.retry_after(Duration::MAX).unwrap();
        assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
        assert!(matches!(
            consumer.recv_timeout(Duration::from_millis(1)),
            Err(RecvError::Timeout)
        ));
        let stats = queue.stats();
        assert_eq!((stats.delayed, stats.in_flight, stats.expired), (2, 0, 0));

        queue.close();
        producer.send(3).unwrap_err();
        assert!(matches!(
            producer.send_timeout(4, Duration::MAX),
            Err(spool::SendError::Closed(4))
        ));
        if let Some(clock) = clock {
            clock.advance(Duration::MAX); // both come due at the end of time
            let payloads: Vec<u32> = (0..2)
                .map(|_| {
                    let delivery = consumer.recv_timeout(Duration::MAX).unwrap();
                    let payload = *delivery;
                    delivery.ack().unwrap();
                    payload
                })
                .collect();
            assert_eq!(payloads.len(), 2);
            assert!(matches!(
                consumer.recv_timeout(Duration::MAX),
                Err(RecvError::Closed)
            ));
        }
    }
}

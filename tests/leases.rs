//! At-least-once delivery with leases: a received message is invisible for
//! the visibility timeout, comes back when the lease runs out, and a
//! delivery whose lease ran out can no longer change it.

mod common;

use common::{in_thread, manual, NS, SEC, WAIT};
use spool::{Backoff, Consumer, Delivery, ManualClock, Queue, RecvError, SettleError, Stats};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

/// A queue with a 30 s lease and plenty of receives, holding message `7`.
fn one_message() -> (ManualClock, Queue<u32>, Consumer<u32>) {
    let (clock, builder) = manual();
    let queue = builder
        .visibility_timeout(LEASE)
        .max_receives(10)
        .open()
        .unwrap();
    queue.producer().send(7).unwrap();
    let consumer = queue.consumer();
    (clock, queue, consumer)
}

/// Receives message 7 again after its first lease ran out; returns the
/// stale delivery and the fresh one.
fn expired_and_redelivered(
    clock: &ManualClock,
    consumer: &Consumer<u32>,
) -> (Delivery<u32>, Delivery<u32>) {
    let stale = consumer.try_recv().unwrap();
    clock.advance(LEASE);
    let fresh = consumer.try_recv().unwrap();
    (stale, fresh)
}

#[test]
fn a_received_message_is_invisible_to_other_consumers() {
    let (_clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();

    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(queue.stats().in_flight, 1);
    assert_eq!(queue.stats().ready, 0);
    drop(delivery);
}

#[test]
fn a_lease_does_not_expire_one_nanosecond_before_the_visibility_timeout() {
    let (clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();

    clock.advance(LEASE - NS);

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(queue.stats().expired, 0);
    assert_eq!(delivery.ack(), Ok(()));
    assert_eq!(queue.stats().acked, 1);
}

#[test]
fn a_lease_expires_exactly_at_the_visibility_timeout() {
    let (clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();

    clock.advance(LEASE);

    let id = delivery.id();
    assert_eq!(delivery.ack(), Err(SettleError::LeaseExpired { id }));
    let again = consumer.try_recv().unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(queue.stats().expired, 1);
}

#[test]
fn each_redelivery_increments_the_receive_count() {
    let (clock, queue, consumer) = one_message();
    let first = consumer.try_recv().unwrap();
    assert_eq!(first.receive_count(), 1);
    let sent_at = first.enqueued_at();

    let mut expired = vec![first];
    for expected in 2..=4 {
        clock.advance(LEASE);
        let again = consumer.try_recv().unwrap();
        assert_eq!(again.receive_count(), expected);
        assert_eq!(again.enqueued_at(), sent_at, "first enqueue time is kept");
        expired.push(again); // held unsettled until its lease runs out
    }
    assert_eq!(queue.stats().expired, 3);
}

/// What must be unchanged after a settle through a stale lease: the fresh
/// delivery is still in flight and every counter is as it was.
fn assert_unchanged(queue: &Queue<u32>, before: &Stats) {
    assert_eq!(&queue.stats(), before);
}

#[test]
fn ack_through_an_expired_lease_is_refused_and_changes_nothing() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(stale.ack(), Err(SettleError::LeaseExpired { id }));

    assert_unchanged(&queue, &before);
    assert_eq!(fresh.ack(), Ok(()), "the fresh lease still holds");
}

#[test]
fn nack_through_an_expired_lease_is_refused_and_changes_nothing() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(stale.nack(), Err(SettleError::LeaseExpired { id }));

    assert_unchanged(&queue, &before);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(fresh.ack(), Ok(()));
}

#[test]
fn fail_through_an_expired_lease_is_refused_and_records_nothing() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(
        stale.fail("too late"),
        Err(SettleError::LeaseExpired { id })
    );

    assert_unchanged(&queue, &before);
    fresh.dead_letter("inspect").unwrap();
    let letter = queue.dead_letters().get(id).unwrap();
    assert!(letter.errors().is_empty(), "{:?}", letter.errors());
}

#[test]
fn retry_after_through_an_expired_lease_is_refused_and_changes_nothing() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(
        stale.retry_after(SEC),
        Err(SettleError::LeaseExpired { id })
    );

    assert_unchanged(&queue, &before);
    assert_eq!(fresh.ack(), Ok(()));
}

#[test]
fn dead_letter_through_an_expired_lease_is_refused_and_changes_nothing() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(
        stale.dead_letter("give up"),
        Err(SettleError::LeaseExpired { id })
    );

    assert_unchanged(&queue, &before);
    assert!(queue.dead_letters().is_empty());
    assert_eq!(fresh.ack(), Ok(()));
}

#[test]
fn extend_through_an_expired_lease_is_refused_and_does_not_extend_the_new_one() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(
        stale.extend(10 * LEASE),
        Err(SettleError::LeaseExpired { id })
    );

    assert_unchanged(&queue, &before);
    clock.advance(LEASE);
    assert_eq!(fresh.ack(), Err(SettleError::LeaseExpired { id }));
    assert_eq!(consumer.try_recv().unwrap().receive_count(), 3);
}

#[test]
fn an_expired_lease_is_refused_even_before_anyone_looks_at_the_queue() {
    let (clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();
    clock.advance(LEASE);

    let id = delivery.id();
    assert_eq!(delivery.nack(), Err(SettleError::LeaseExpired { id }));

    let stats = queue.stats();
    assert_eq!((stats.nacked, stats.expired, stats.ready), (0, 1, 1));
}

#[test]
fn a_stale_lease_stays_refused_after_the_redelivery_was_acked() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    fresh.ack().unwrap();
    let before = queue.stats();

    let id = stale.id();
    assert_eq!(stale.extend(LEASE), Err(SettleError::LeaseExpired { id }));
    assert_eq!(stale.ack(), Err(SettleError::LeaseExpired { id }));

    assert_unchanged(&queue, &before);
    assert_eq!(before.acked, 1);
}

#[test]
fn dropping_a_stale_delivery_changes_nothing() {
    let (clock, queue, consumer) = one_message();
    let (stale, fresh) = expired_and_redelivered(&clock, &consumer);
    let before = queue.stats();

    drop(stale);

    assert_unchanged(&queue, &before);
    assert_eq!(fresh.ack(), Ok(()));
}

#[test]
fn extend_keeps_the_lease_past_the_visibility_timeout() {
    let (clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();
    clock.advance(20 * SEC);

    delivery.extend(LEASE).unwrap(); // now due at 50 s

    clock.advance(LEASE - NS);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(queue.stats().expired, 0);
    assert_eq!(delivery.ack(), Ok(()));
}

#[test]
fn an_extended_lease_expires_at_its_new_deadline() {
    let (clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();
    clock.advance(20 * SEC);
    delivery.extend(LEASE).unwrap();

    clock.advance(LEASE);

    let id = delivery.id();
    assert_eq!(delivery.ack(), Err(SettleError::LeaseExpired { id }));
    assert_eq!(consumer.try_recv().unwrap().receive_count(), 2);
    assert_eq!(queue.stats().expired, 1);
}

#[test]
fn extend_sets_the_deadline_from_now_even_when_that_is_sooner() {
    let (clock, _queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();

    delivery.extend(SEC).unwrap();
    clock.advance(SEC);

    let id = delivery.id();
    assert_eq!(delivery.ack(), Err(SettleError::LeaseExpired { id }));
    assert_eq!(consumer.try_recv().unwrap().receive_count(), 2);
}

#[test]
fn repeated_extends_work_as_a_heartbeat() {
    let (clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();

    for _ in 0..10 {
        clock.advance(LEASE - NS);
        delivery.extend(LEASE).unwrap();
    }

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(delivery.ack(), Ok(()));
    assert_eq!(queue.stats().expired, 0);
}

#[test]
fn dropping_a_delivery_unsettled_releases_it_at_once_as_a_failed_attempt() {
    let (_clock, queue, consumer) = one_message();
    let delivery = consumer.try_recv().unwrap();

    drop(delivery);

    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight), (1, 0));
    assert_eq!((stats.nacked, stats.expired), (1, 0));
    assert_eq!(consumer.try_recv().unwrap().receive_count(), 2);
}

#[test]
fn dropping_a_delivery_on_its_last_receive_dead_letters_it() {
    let (_clock, builder) = manual();
    let queue = builder.max_receives(1).open().unwrap();
    queue.producer().send(7).unwrap();

    drop(queue.consumer().try_recv().unwrap());

    assert_eq!(queue.dead_letters().len(), 1);
    assert_eq!(queue.stats().nacked, 1);
}

#[test]
fn nack_makes_the_message_visible_again_at_once() {
    let (_clock, queue, consumer) = one_message();
    consumer.try_recv().unwrap().nack().unwrap();

    let again = consumer.try_recv().unwrap();

    assert_eq!((*again, again.receive_count()), (7, 2));
    assert_eq!(queue.stats().nacked, 1);
}

#[test]
fn an_acked_message_is_gone_for_good() {
    let (clock, queue, consumer) = one_message();
    consumer.try_recv().unwrap().ack().unwrap();

    clock.advance(10 * LEASE);

    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.acked), (0, 0, 1));
}

#[test]
fn every_delivery_of_a_batch_has_its_own_lease() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(LEASE).open().unwrap();
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let consumer = queue.consumer();

    let mut batch = consumer.recv_batch(10, WAIT).unwrap().into_deliveries();
    assert_eq!(batch.iter().map(|d| **d).collect::<Vec<_>>(), [1, 2, 3]);
    batch.remove(0).ack().unwrap();
    batch[0].extend(2 * LEASE).unwrap();
    clock.advance(LEASE);

    let third = batch.pop().unwrap();
    assert!(third.ack().is_err(), "its lease ran out");
    assert_eq!(batch.pop().unwrap().ack(), Ok(()), "extended");
    assert_eq!(*consumer.try_recv().unwrap(), 3);
}

#[test]
fn a_blocked_recv_wakes_when_the_manual_clock_expires_a_lease() {
    let (clock, queue, consumer) = one_message();
    let first = consumer.try_recv().unwrap();

    let waiting = {
        let consumer = consumer.clone();
        in_thread(move || consumer.recv().map(|d| (*d, d.receive_count())))
    };
    // Give the thread time to block; the outcome is the same if it has not.
    std::thread::sleep(Duration::from_millis(50));
    clock.advance(LEASE);

    assert_eq!(waiting.recv_timeout(WAIT).unwrap(), Ok((7, 2)));
    assert!(first.ack().is_err());
    queue.close();
}

#[test]
fn a_blocked_recv_timeout_wakes_when_the_manual_clock_expires_a_lease() {
    // The lease is far longer than the wait: without the clock's wake-up the
    // consumer would time out, as real time never reaches the lease deadline.
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(3600 * SEC).open().unwrap();
    queue.producer().send(7).unwrap();
    let consumer = queue.consumer();
    let first = consumer.try_recv().unwrap();

    let waiting = {
        let consumer = consumer.clone();
        in_thread(move || consumer.recv_timeout(WAIT).map(|d| d.receive_count()))
    };
    std::thread::sleep(Duration::from_millis(50));
    clock.advance(3600 * SEC);

    assert_eq!(waiting.recv_timeout(2 * WAIT).unwrap(), Ok(2));
    drop(first);
}

/// A manual clock whose coarse reading is rounded down to a 4 ms tick, as
/// Linux's `CLOCK_MONOTONIC_COARSE` is, so the lag the queue allows for is
/// exact in a test.
#[derive(Debug, Clone, Default)]
struct TickingClock(ManualClock);

const TICK: Duration = Duration::from_millis(4);

impl spool::Clock for TickingClock {
    fn now(&self) -> std::time::SystemTime {
        self.0.now()
    }

    fn now_coarse_nanos(&self) -> u64 {
        let now = self.now_nanos();
        now - now % TICK.as_nanos() as u64
    }

    fn coarse_lag(&self) -> Duration {
        TICK
    }

    fn register_waker(&self, waker: spool::ClockWaker) {
        self.0.register_waker(waker);
    }
}

fn ticking_queue() -> (ManualClock, Queue<u32>) {
    let clock = TickingClock::default();
    let manual = clock.0.clone();
    let queue = Queue::builder()
        .backoff(Backoff::None)
        .visibility_timeout(LEASE)
        .max_receives(10)
        .clock(clock)
        .open()
        .unwrap();
    (manual, queue)
}

#[test]
fn with_a_coarse_clock_a_lease_runs_its_timeout_and_at_most_two_ticks_more() {
    let (clock, queue) = ticking_queue();
    queue.producer().send(7).unwrap();
    let consumer = queue.consumer();
    clock.advance(Duration::from_millis(1)); // the coarse clock still says 0
    let first = consumer.try_recv().unwrap();
    // Not a nanosecond early, although the coarse reading at the receive
    // was a millisecond behind.
    clock.advance(LEASE - NS);
    assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
    // A send reads the precise clock: it does not expire the lease either.
    queue.producer().try_send(8).unwrap();
    let other = consumer.try_recv().unwrap();
    assert_eq!(*other, 8);
    other.ack().unwrap();
    // Two ticks past the timeout it has run out, for every reader.
    clock.advance(2 * TICK + NS);
    let again = consumer.try_recv().unwrap();
    assert_eq!((*again, again.receive_count()), (7, 2));
    assert!(matches!(first.ack(), Err(SettleError::LeaseExpired { .. })));
    again.ack().unwrap();
}

#[test]
fn with_a_coarse_clock_an_ack_before_the_lag_runs_out_counts() {
    let (clock, queue) = ticking_queue();
    queue.producer().send(7).unwrap();
    let consumer = queue.consumer();
    clock.advance(Duration::from_millis(1));
    let delivery = consumer.try_recv().unwrap();
    // Past the timeout by 2 ms, within the tick the deadline adds.
    clock.advance(LEASE + 2 * Duration::from_millis(1));
    delivery.ack().unwrap();
    assert_eq!(queue.stats().acked, 1);
    assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
}

#[test]
fn with_a_coarse_clock_what_comes_due_is_seen_when_it_is_due() {
    let (clock, queue) = ticking_queue();
    let consumer = queue.consumer();
    clock.advance(Duration::from_millis(1));
    let delay = spool::SendOptions::new().delay(Duration::from_millis(10));
    queue.producer().send_with(7, delay).unwrap();
    clock.advance(Duration::from_millis(10) - NS);
    assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
    // Due now, while the coarse reading is still 3 ms behind.
    clock.advance(NS);
    let delivery = consumer.try_recv().unwrap();
    assert_eq!(*delivery, 7);
    // That receive read the precise clock too (a deadline was near), so
    // the lease's deadline is 11 ms + lag + timeout, and it runs out then.
    clock.advance(LEASE + TICK - NS);
    assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
    clock.advance(NS);
    assert_eq!(consumer.try_recv().unwrap().receive_count(), 2);
    drop(delivery);
}

//! RateAlert: fires once when the count of events in a sliding window
//! reaches the threshold, and again only after falling back below it.
//! Every time is set by a ManualClock, so the window edges are exact.

use spool::{Alert, DeadLetterReason, Event, ManualClock, MessageId, Queue, RateAlert};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: Duration = Duration::from_nanos(1);
const MINUTE: Duration = Duration::from_secs(60);

/// An alert of 3 in a minute on a manual clock, and the alerts it fired.
fn three_a_minute() -> (ManualClock, RateAlert, Arc<Mutex<Vec<Alert>>>) {
    let clock = ManualClock::new();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&fired);
    let alert = RateAlert::new(3, MINUTE)
        .clock(clock.clone())
        .on_fire(move |alert| log.lock().unwrap().push(alert.clone()));
    (clock, alert, fired)
}

/// A dead-letter event.
fn dead() -> Event {
    Event::DeadLettered {
        queue: "uploads".into(),
        id: first_id(),
        reason: DeadLetterReason::Rejected("corrupt".into()),
    }
}

#[test]
fn fires_once_when_the_threshold_is_reached_within_the_window() {
    let (clock, alert, fired) = three_a_minute();
    let event = dead();
    alert.observe(&event);
    clock.advance(Duration::from_secs(30));
    alert.observe(&event);
    clock.advance(Duration::from_secs(30) - NS); // 1 ns before the first leaves
    assert!(fired.lock().unwrap().is_empty());
    alert.observe(&event);
    {
        let fired = fired.lock().unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].count, fired[0].threshold, fired[0].window),
            (3, 3, MINUTE)
        );
        assert_eq!(fired[0].at, clock_now(&clock));
    }
    alert.observe(&event); // a fourth: still the same burst, no second alert
    assert_eq!((alert.count(), alert.fired()), (4, 1));
    assert!(alert.is_firing());
}

fn clock_now(clock: &ManualClock) -> std::time::SystemTime {
    use spool::Clock;
    clock.now()
}

#[test]
fn events_spread_wider_than_the_window_never_fire() {
    let (clock, alert, fired) = three_a_minute();
    let event = dead();
    for _ in 0..10 {
        alert.observe(&event);
        clock.advance(Duration::from_secs(30)); // exactly 2 in any minute
    }
    assert!(fired.lock().unwrap().is_empty());
    assert_eq!(alert.count(), 1);
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        alert.count(),
        0,
        "an event leaves the window exactly `window` later"
    );
}

#[test]
fn rearms_after_the_count_falls_below_the_threshold() {
    let (clock, alert, fired) = three_a_minute();
    let event = dead();
    (0..3).for_each(|_| alert.observe(&event));
    assert_eq!(alert.fired(), 1);
    clock.advance(MINUTE); // all three leave
    assert!(!alert.is_firing());
    (0..2).for_each(|_| alert.observe(&event));
    assert_eq!(alert.fired(), 1);
    alert.observe(&event);
    assert_eq!(alert.fired(), 2);
    assert_eq!(fired.lock().unwrap().len(), 2);
}

#[test]
fn counts_only_what_it_is_told_to() {
    let (clock, alert, _) = three_a_minute();
    let expired = Event::LeaseExpired {
        queue: "uploads".into(),
        id: first_id(),
        receive_count: 1,
    };
    (0..5).for_each(|_| alert.observe(&expired));
    assert_eq!(alert.count(), 0, "dead letters only by default");

    let leases = RateAlert::new(2, MINUTE)
        .clock(clock.clone())
        .counting(|e| matches!(e, Event::LeaseExpired { .. }));
    leases.observe(&expired);
    leases.observe(&dead());
    assert_eq!(leases.count(), 1);
    leases.observe(&expired);
    assert_eq!(leases.fired(), 1);
}

fn first_id() -> MessageId {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    queue.producer().send(0).unwrap()
}

#[test]
fn fed_by_queue_events_from_several_queues() {
    let (clock, alert, fired) = three_a_minute();
    let queue = |max| -> Queue<u32> {
        Queue::builder()
            .clock(clock.clone())
            .max_receives(max)
            .on_event(alert.hook())
            .open()
            .unwrap()
    };
    let (a, b) = (queue(1), queue(2));
    for n in 0..2 {
        a.producer().send(n).unwrap();
        b.producer().send(n).unwrap();
    }
    a.consumer().try_recv().unwrap().fail("bad").unwrap(); // dead: max_receives 1
    b.consumer().try_recv().unwrap().fail("bad").unwrap(); // retried
    b.consumer()
        .try_recv()
        .unwrap()
        .dead_letter("rejected")
        .unwrap(); // dead
    assert_eq!((alert.count(), alert.fired()), (2, 0));
    a.consumer().try_recv().unwrap().nack().unwrap(); // dead: the third
    assert_eq!(alert.fired(), 1);
    assert_eq!(fired.lock().unwrap()[0].count, 3);
    let reasons: Vec<DeadLetterReason> = a
        .dead_letters()
        .list()
        .iter()
        .map(|l| l.reason().clone())
        .collect();
    assert_eq!(
        reasons,
        [
            DeadLetterReason::MaxReceives(1),
            DeadLetterReason::MaxReceives(1)
        ]
    );
}

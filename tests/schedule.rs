//! Periodic jobs (`Queue::schedule`): one message per tick under a key
//! per tick, the missed-tick policies, and no tick twice across restarts
//! or between schedules of the same name.

mod common;

use common::{SEC, WAIT};
use spool::{Clock, ManualClock, Missed, Queue, Schedule, ScheduleError, ScheduleStats, Scheduled};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const MINUTE: Duration = Duration::from_secs(60);

/// Polls until `done` holds, failing the test after [`WAIT`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn wait_for(schedule: &Scheduled, what: &str, stats: impl Fn(ScheduleStats) -> bool) {
    wait_until(what, || stats(schedule.stats()));
}

/// Receives every ready message: (payload, key).
fn drain(queue: &Queue<SystemTime>) -> Vec<(SystemTime, String)> {
    let consumer = queue.consumer();
    let mut got = Vec::new();
    while let Ok(delivery) = consumer.try_recv() {
        got.push((*delivery, delivery.key().unwrap().to_owned()));
        delivery.ack().unwrap();
    }
    got
}

fn key(name: &str, tick: SystemTime) -> String {
    let nanos = tick
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}@{nanos}")
}

fn in_memory(clock: &ManualClock) -> Queue<SystemTime> {
    Queue::builder().clock(clock.clone()).open().unwrap()
}

#[test]
fn each_tick_sends_one_message_keyed_by_its_instant() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let start = clock.now(); // a whole minute
    let running = queue
        .schedule(Schedule::every("health", MINUTE), |tick| tick)
        .unwrap();
    clock.advance(MINUTE - Duration::from_nanos(1));
    thread::sleep(Duration::from_millis(20));
    assert_eq!(running.stats().sent, 0, "no tick before its time");
    clock.advance(Duration::from_nanos(1));
    wait_for(&running, "the first tick", |s| s.sent == 1);
    clock.advance(MINUTE);
    wait_for(&running, "the second tick", |s| s.sent == 2);
    let ticks = [start + MINUTE, start + 2 * MINUTE];
    let expected: Vec<_> = ticks.iter().map(|&t| (t, key("health", t))).collect();
    assert_eq!(drain(&queue), expected);
    let stats = running.stop();
    assert_eq!((stats.sent, stats.duplicates, stats.skipped), (2, 0, 0));
}

#[test]
fn skip_sends_only_the_latest_of_ticks_that_came_due_at_once() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let start = clock.now();
    let running = queue
        .schedule(Schedule::every("skip", MINUTE), |tick| tick)
        .unwrap();
    clock.advance(3 * MINUTE + 30 * SEC);
    wait_for(&running, "the latest tick", |s| s.sent == 1);
    assert_eq!(running.stats().skipped, 2);
    assert_eq!(drain(&queue)[0].0, start + 3 * MINUTE);
}

#[test]
fn catch_up_sends_the_latest_missed_ticks_in_order_at_start_and_after_a_gap() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let start = clock.now(); // a tick: at start it is due, as is the one before
    let running = queue
        .schedule(
            Schedule::every("catch-up", MINUTE).missed(Missed::CatchUp(2)),
            |tick| tick,
        )
        .unwrap();
    // At start: the latest two ticks of the dedup window (5 min), of five.
    wait_for(&running, "the catch-up at start", |s| s.sent == 2);
    assert_eq!(running.stats().skipped, 3);
    clock.advance(3 * MINUTE);
    wait_for(&running, "two of the three ticks", |s| s.sent == 4);
    assert_eq!(running.stats().skipped, 4);
    let sent: Vec<_> = drain(&queue).into_iter().map(|(t, _)| t).collect();
    let expected = [
        start - MINUTE,
        start,
        start + 2 * MINUTE,
        start + 3 * MINUTE,
    ];
    assert_eq!(sent, expected);
}

#[test]
fn an_offset_moves_the_ticks() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let start = clock.now();
    let hourly = Schedule::every("report", 60 * MINUTE).offset(5 * MINUTE);
    let running = queue.schedule(hourly, |tick| tick).unwrap();
    clock.advance(5 * MINUTE);
    wait_for(&running, "five past", |s| s.sent == 1);
    assert_eq!(drain(&queue)[0].0, start + 5 * MINUTE);
}

#[test]
fn two_schedules_of_the_same_name_send_each_tick_once() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let make = |_: &str| Schedule::every("twice", MINUTE);
    let a = queue.schedule(make("a"), |tick| tick).unwrap();
    let b = queue.schedule(make("b"), |tick| tick).unwrap();
    clock.advance(MINUTE);
    wait_until("both looked at the tick", || {
        a.stats().sent + a.stats().duplicates + b.stats().sent + b.stats().duplicates == 2
    });
    assert_eq!(a.stats().sent + b.stats().sent, 1);
    assert_eq!(drain(&queue).len(), 1);
}

fn persistent(dir: &Path, clock: &ManualClock) -> Queue<SystemTime> {
    Queue::builder()
        .path(dir)
        .clock(clock.clone())
        .open()
        .unwrap()
}

#[test]
fn a_restart_neither_repeats_a_tick_nor_with_skip_sends_one_missed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let start = clock.now();
    let catch_up = || Schedule::every("job", MINUTE).missed(Missed::CatchUp(3));

    let queue = persistent(dir.path(), &clock);
    let running = queue.schedule(catch_up(), |tick| tick).unwrap();
    wait_for(&running, "the catch-up at start", |s| s.sent == 3);
    clock.advance(MINUTE);
    wait_for(&running, "the next tick", |s| s.sent == 4);
    drop(running);
    drop(queue);

    // Back 30 s later: the three latest ticks were sent, and their keys
    // (kept in the file) say so.
    clock.advance(30 * SEC);
    let queue = persistent(dir.path(), &clock);
    let running = queue.schedule(catch_up(), |tick| tick).unwrap();
    wait_for(&running, "the catch-up", |s| s.duplicates == 3);
    assert_eq!(running.stats().sent, 0);
    drop(running);
    drop(queue);

    // Down over the next tick: Skip leaves it unsent.
    clock.advance(MINUTE);
    let queue = persistent(dir.path(), &clock);
    let running = queue
        .schedule(Schedule::every("job", MINUTE), |tick| tick)
        .unwrap();
    clock.advance(30 * SEC); // the tick after it
    wait_for(&running, "the next tick", |s| s.sent == 1);
    let sent: Vec<_> = drain(&queue).into_iter().map(|(t, _)| t).collect();
    let expected = [
        start - 2 * MINUTE,
        start - MINUTE,
        start,
        start + MINUTE,
        start + 3 * MINUTE,
    ];
    assert_eq!(sent, expected);
}

#[test]
fn a_bad_schedule_is_refused_and_a_closed_queue_ends_one() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let zero = queue.schedule(Schedule::every("z", Duration::ZERO), |t| t);
    assert_eq!(zero.unwrap_err(), ScheduleError::BadInterval);
    let late = Schedule::every("o", MINUTE).offset(MINUTE);
    assert_eq!(
        queue.schedule(late, |t| t).unwrap_err(),
        ScheduleError::BadInterval
    );
    let long = Schedule::every("n".repeat(spool::MAX_KEY_BYTES), MINUTE);
    assert!(matches!(
        queue.schedule(long, |t| t),
        Err(ScheduleError::NameTooLong { .. })
    ));
    let running = queue.schedule(Schedule::every("c", MINUTE), |t| t).unwrap();
    queue.close();
    clock.advance(MINUTE);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(running.stop().sent, 0);
    let refused = queue.schedule(Schedule::every("c", MINUTE), |t| t);
    assert_eq!(refused.unwrap_err(), ScheduleError::Closed);
}

#[cfg(feature = "cron")]
#[test]
fn a_cron_schedule_ticks_on_its_matching_instants() {
    let clock = ManualClock::new();
    let queue = in_memory(&clock);
    let start = clock.now(); // 2025-01-01 00:00 UTC
    let every_5 = Schedule::cron("cron", "*/5 * * * *").unwrap();
    let running = queue.schedule(every_5, |tick| tick).unwrap();
    clock.advance(5 * MINUTE);
    wait_for(&running, "00:05", |s| s.sent == 1);
    assert_eq!(drain(&queue)[0].0, start + 5 * MINUTE);
    assert!(Schedule::cron("bad", "61 * * * *").is_err());
}

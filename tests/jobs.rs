//! Job handlers (`Workers::spawn_jobs`): the job's metadata, outcomes that
//! choose the settle, and the signal of a lost lease.

mod common;

use common::{manual, SEC, WAIT};
use spool::{Clock, DeadLetterReason, Job, Outcome, Queue, RecvError, SendOptions, Workers};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Polls `done` until it holds, failing the test after [`WAIT`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_job_carries_its_metadata_and_lease_deadline() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(30 * SEC).open().unwrap();
    let sent_at = clock.now();
    let id = queue
        .producer()
        .send_with(7, SendOptions::new().key("order-7"))
        .unwrap()
        .id();
    clock.advance(SEC);
    let (seen_tx, seen) = mpsc::channel();
    let pool = Workers::new(queue.consumer())
        .spawn_jobs(move |job: Job<u32>| {
            let seen = (
                *job,
                job.id(),
                job.key().map(str::to_owned),
                job.receive_count(),
                job.enqueued_at(),
                job.lease_deadline(),
                job.is_lease_lost(),
            );
            seen_tx.send(seen).unwrap();
            Ok::<_, String>(Outcome::Ack)
        })
        .unwrap();
    let seen = seen.recv_timeout(WAIT).unwrap();
    let deadline = sent_at + SEC + 30 * SEC;
    let expected = (
        7,
        id,
        Some("order-7".to_owned()),
        1,
        sent_at,
        deadline,
        false,
    );
    assert_eq!(seen, expected);
    queue.close();
    assert_eq!(pool.join(WAIT).totals().acked, 1);
}

#[test]
fn outcomes_ack_retry_with_backoff_retry_after_and_dead_letter() {
    let (clock, builder) = manual();
    let queue = builder
        .max_receives(5)
        .backoff(spool::Backoff::Fixed(10 * SEC))
        .open()
        .unwrap();
    let pool = Workers::new(queue.consumer())
        .spawn_jobs(|job: Job<u32>| match (*job, job.receive_count()) {
            (200, _) => Ok(Outcome::Ack),
            (410, _) => Ok(Outcome::dead_letter(format_args!("{} gone", *job))),
            (429, 1) => Ok(Outcome::RetryAfter(30 * SEC)),
            (503, 1) => Ok(Outcome::Retry),
            (500, 1) => Err("internal error"),
            _ => Ok(Outcome::Ack),
        })
        .unwrap();
    for status in [200, 410, 429, 503, 500] {
        queue.producer().send(status).unwrap();
    }
    wait_until("every first attempt", || {
        let totals = pool.totals();
        totals.acked + totals.retried + totals.dead_lettered + totals.failed == 5
    });
    let totals = pool.totals();
    assert_eq!(
        (
            totals.acked,
            totals.retried,
            totals.dead_lettered,
            totals.failed
        ),
        (1, 2, 1, 1)
    );
    let dead = queue.dead_letters().list();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason(),
        &DeadLetterReason::Rejected("410 gone".into())
    );
    assert_eq!(queue.stats().delayed, 3);

    clock.advance(10 * SEC - Duration::from_nanos(1));
    assert_eq!(
        queue.stats().delayed,
        3,
        "nothing is due before the backoff"
    );
    clock.advance(Duration::from_nanos(1)); // the backoff of 503 and 500
    wait_until("the two backoffs", || pool.totals().acked == 3);
    assert_eq!(queue.stats().delayed, 1, "429 waits for its own delay");
    clock.advance(20 * SEC);
    wait_until("the retry after 30 s", || pool.totals().acked == 4);

    queue.close();
    let report = pool.join(WAIT);
    assert_eq!(report.totals().lease_expired, 0);
    assert_eq!(queue.stats().acked, 4);
}

#[test]
fn a_retry_on_the_last_allowed_receive_dead_letters() {
    let queue: Queue<u32> = Queue::builder().max_receives(2).open().unwrap();
    let pool = Workers::new(queue.consumer())
        .spawn_jobs(|_: Job<u32>| Ok::<_, String>(Outcome::RetryAfter(Duration::ZERO)))
        .unwrap();
    queue.producer().send(1).unwrap();
    queue.close();
    let totals = pool.join(WAIT).totals();
    assert_eq!((totals.received, totals.retried), (2, 2));
    let dead = queue.dead_letters().list();
    assert_eq!(dead[0].reason(), &DeadLetterReason::MaxReceives(2));
}

#[test]
fn a_lost_lease_fires_the_signal_and_a_late_settle_counts_as_lease_expired() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(10 * SEC).open().unwrap();
    let (started_tx, started) = mpsc::channel();
    let pool = Workers::new(queue.consumer())
        .spawn_jobs(move |job: Job<u32>| {
            if job.receive_count() == 1 {
                started_tx.send(()).unwrap();
                // Stop as soon as nobody will accept the result.
                assert!(job.lease_lost().wait_timeout(WAIT), "the lease was lost");
            }
            Ok::<_, String>(Outcome::Ack)
        })
        .unwrap();
    queue.producer().send(1).unwrap();
    started.recv_timeout(WAIT).unwrap();

    clock.advance(10 * SEC); // the deadline: the heartbeat can no longer extend
    wait_until("the redelivery is acked", || pool.totals().acked == 1);

    queue.close();
    let totals = pool.join(WAIT).totals();
    assert_eq!((totals.received, totals.acked), (2, 1));
    assert_eq!((totals.lease_expired, totals.lease_lost), (1, 1));
    assert_eq!(queue.stats().expired, 1);
}

#[test]
fn the_deadline_follows_the_heartbeat_s_extensions() {
    let (clock, builder) = manual();
    let queue = builder.visibility_timeout(10 * SEC).open().unwrap();
    let (deadlines_tx, deadlines) = mpsc::channel();
    let (open, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let pool = Workers::new(queue.consumer())
        .spawn_jobs(move |job: Job<u32>| {
            deadlines_tx.send(job.lease_deadline()).unwrap();
            gate.lock().unwrap().recv_timeout(WAIT).unwrap();
            deadlines_tx.send(job.lease_deadline()).unwrap();
            Ok::<_, String>(Outcome::Ack)
        })
        .unwrap();
    let start = clock.now();
    queue.producer().send(1).unwrap();
    assert_eq!(deadlines.recv_timeout(WAIT).unwrap(), start + 10 * SEC);
    clock.advance(6 * SEC);
    wait_until("the extension", || pool.totals().lease_extensions == 1);
    open.send(()).unwrap();
    assert_eq!(deadlines.recv_timeout(WAIT).unwrap(), start + 16 * SEC);
    assert_eq!(pool.shutdown(WAIT).totals().acked, 1);
}

#[test]
fn a_shutdown_that_releases_a_running_job_fires_its_signal() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (lost_tx, lost) = mpsc::channel();
    let pool = Workers::new(queue.consumer())
        .spawn_jobs(move |job: Job<u32>| {
            started_tx.send(()).unwrap();
            lost_tx.send(job.lease_lost().wait_timeout(WAIT)).unwrap();
            Ok::<_, String>(Outcome::Ack)
        })
        .unwrap();
    queue.producer().send(1).unwrap();
    started.recv_timeout(WAIT).unwrap();
    let report = pool.shutdown(Duration::ZERO);
    // (Whether the handler counts as unfinished depends on whether it has
    // returned, once signalled, by the time the report is made.)
    assert_eq!(report.released, 1);
    assert_eq!(lost.recv_timeout(WAIT), Ok(true));
    // Released: visible again, and the handler's late ack settles nothing.
    let again = queue.consumer().recv_timeout(WAIT).unwrap();
    assert_eq!((*again, again.receive_count()), (1, 2));
    again.ack().unwrap();
    queue.close();
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Closed);
}

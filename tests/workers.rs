//! Worker pools: handler outcomes settle deliveries, panics are caught,
//! long handlers keep their leases, and shutdown loses nothing.

use spool::{
    Backoff, DeadLetterReason, Durability, Event, ManualClock, Queue, WorkerPool, Workers,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for the pool to do what it must; only a bug waits this long.
const WAIT: Duration = Duration::from_secs(10);

/// Keeps the default panic output for everything but the panics these
/// tests cause on purpose (which start with "boom").
fn quiet_boom() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.payload().downcast_ref::<String>().map(String::as_str);
            if !text.is_some_and(|t| t.starts_with("boom")) {
                default(info);
            }
        }));
    });
}

/// Polls `done` until it holds, failing the test after [`WAIT`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// A gate a handler waits at, and the signal that it has arrived there.
fn gate() -> (Sender<()>, Arc<Mutex<Receiver<()>>>) {
    let (open, wait) = mpsc::channel();
    (open, Arc::new(Mutex::new(wait)))
}

#[test]
fn a_pool_acks_everything_and_counts_per_worker() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    let pool = Workers::new(queue.consumer())
        .threads(3)
        .name("acker")
        .spawn(|_: &u32| Ok::<(), String>(()))
        .unwrap();
    for n in 0..300 {
        queue.producer().send(n).unwrap();
    }
    queue.close();
    let report = pool.join(WAIT);
    assert!(report.unfinished.is_empty());
    assert_eq!(report.workers.len(), 3);
    let totals = report.totals();
    assert_eq!((totals.received, totals.acked), (300, 300));
    assert_eq!(
        (totals.failed, totals.panicked, totals.lease_lost),
        (0, 0, 0)
    );
    assert_eq!(queue.stats().acked, 300);
}

#[test]
fn errors_and_panics_reach_the_dead_letter_queue_with_their_texts() {
    quiet_boom();
    let queue: Queue<u32> = Queue::builder().max_receives(3).open().unwrap();
    let pool = Workers::new(queue.consumer())
        .threads(2)
        .spawn(|n: &u32| {
            if n % 2 == 1 {
                panic!("boom {n}");
            }
            Err(format!("bad input {n}"))
        })
        .unwrap();
    for n in 0..4 {
        queue.producer().send(n).unwrap();
    }
    queue.close();
    let report = pool.join(WAIT);
    let totals = report.totals();
    assert_eq!(
        (totals.received, totals.failed, totals.panicked),
        (12, 6, 6)
    );
    assert_eq!(totals.acked, 0);

    let letters = queue.dead_letters().list();
    assert_eq!(letters.len(), 4);
    for letter in &letters {
        let n = *letter.payload();
        let text = if n % 2 == 1 {
            format!("panicked: boom {n}")
        } else {
            format!("bad input {n}")
        };
        assert_eq!(letter.errors(), [text.clone(), text.clone(), text]);
        assert_eq!(letter.reason(), &DeadLetterReason::MaxReceives(3));
    }
}

#[test]
fn a_long_handler_keeps_its_lease_alive() {
    let expired = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&expired);
    let queue: Queue<u32> = Queue::builder()
        // The heartbeat extends at half the timeout: 200 ms of margin for a
        // descheduled thread on a loaded CI machine.
        .visibility_timeout(Duration::from_millis(400))
        .on_event(move |event| {
            if let Event::LeaseExpired { .. } = event {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
        .open()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let pool = Workers::new(queue.consumer())
        .threads(2) // an idle second worker would pick up an expired lease
        .spawn(move |_: &u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(1_000)); // 2.5 timeouts
            Ok::<(), String>(())
        })
        .unwrap();
    queue.producer().send(1).unwrap();
    queue.close();
    let report = pool.join(WAIT);
    let totals = report.totals();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "delivered once: receive count 1"
    );
    assert_eq!(
        (totals.received, totals.acked, totals.lease_lost),
        (1, 1, 0)
    );
    assert!(totals.lease_extensions >= 2, "{totals:?}");
    assert_eq!(expired.load(Ordering::SeqCst), 0);
    assert_eq!(queue.stats().expired, 0);
}

#[test]
fn the_heartbeat_follows_a_manual_clock_exactly() {
    let clock = ManualClock::new();
    let queue: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .visibility_timeout(Duration::from_secs(10))
        .open()
        .unwrap();
    let (started_tx, started) = mpsc::channel();
    let (open, wait) = gate();
    let pool = Workers::new(queue.consumer())
        .spawn(move |_: &u32| {
            started_tx.send(()).unwrap();
            wait.lock().unwrap().recv_timeout(WAIT).unwrap();
            Ok::<(), String>(())
        })
        .unwrap();
    queue.producer().send(1).unwrap();
    started.recv_timeout(WAIT).unwrap();

    clock.advance(Duration::from_secs(4)); // under half the timeout: nothing to do
    clock.advance(Duration::from_secs(2)); // 6 s: due, extended to 16 s
    wait_until("the first extension", || {
        pool.totals().lease_extensions == 1
    });
    clock.advance(Duration::from_secs(6)); // 12 s: past the first deadline of 10 s
    wait_until("the second extension", || {
        pool.totals().lease_extensions == 2
    });
    let stats = queue.stats();
    assert_eq!((stats.in_flight, stats.expired), (1, 0));

    open.send(()).unwrap();
    let report = pool.shutdown(WAIT);
    assert_eq!(report.totals().acked, 1);
    assert_eq!(report.totals().lease_extensions, 2);
}

#[test]
fn shutdown_finishes_running_handlers_and_leaves_the_rest_queued() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (open, wait) = gate();
    let pool = Workers::new(queue.consumer())
        .spawn(move |n: &u32| {
            started_tx.send(*n).unwrap();
            wait.lock().unwrap().recv_timeout(WAIT).unwrap();
            Ok::<(), String>(())
        })
        .unwrap();
    for n in 0..10 {
        queue.producer().send(n).unwrap();
    }
    assert_eq!(started.recv_timeout(WAIT).unwrap(), 0);
    let running = pool.stats();
    assert_eq!((running[0].received, running[0].acked), (1, 0));

    pool.stop(); // no new messages from here on
    open.send(()).unwrap(); // the running handler may finish
    let report = pool.shutdown(WAIT);
    assert!(report.unfinished.is_empty());
    assert_eq!(
        (
            report.released,
            report.totals().received,
            report.totals().acked
        ),
        (0, 1, 1)
    );
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.acked), (9, 0, 1));
    assert_eq!(
        *queue.consumer().try_recv().unwrap(),
        1,
        "the rest, in order"
    );
}

#[test]
fn at_the_shutdown_deadline_a_stuck_handler_s_message_is_released() {
    let queue: Queue<u32> = Queue::builder().backoff(Backoff::None).open().unwrap();
    let (started_tx, started) = mpsc::channel();
    let (open, wait) = gate();
    let pool = Workers::new(queue.consumer())
        .spawn(move |_: &u32| {
            started_tx.send(()).unwrap();
            wait.lock().unwrap().recv_timeout(WAIT).unwrap();
            Ok::<(), String>(())
        })
        .unwrap();
    queue.producer().send(7).unwrap();
    started.recv_timeout(WAIT).unwrap();

    let report = pool.shutdown(Duration::from_millis(20));
    assert_eq!(report.unfinished, [0]);
    assert_eq!(report.released, 1);
    let stats = queue.stats();
    assert_eq!((stats.ready, stats.in_flight), (1, 0));
    let again = queue.consumer().try_recv().unwrap();
    assert_eq!((*again, again.receive_count()), (7, 2));

    open.send(()).unwrap(); // the detached handler's ack is refused
    again.ack().unwrap();
    assert_eq!(queue.stats().acked, 1);
}

/// How a handler ends its own pool.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Shutdown,
    Join,
    Drop,
}

/// Issue 10, fault 3: a handler that ends its own pool (here through a
/// slot it shares with the test) waited for itself, for ever with
/// `Duration::MAX`, and its message was then released instead of acked.
/// The call must wait for the other workers only, and the caller's message
/// is settled as its handler returns.
#[test]
fn a_handler_that_shuts_down_its_own_pool_does_not_wait_for_itself() {
    for ending in [Ending::Shutdown, Ending::Join, Ending::Drop] {
        let queue: Queue<u32> = Queue::builder().open().unwrap();
        let slot: Arc<Mutex<Option<WorkerPool<u32>>>> = Arc::new(Mutex::new(None));
        let (report_tx, reports) = mpsc::channel();
        let in_handler = Arc::clone(&slot);
        let pool = Workers::new(queue.consumer())
            .threads(3)
            .spawn(move |n: &u32| {
                let pool = in_handler.lock().unwrap().take();
                if let Some(pool) = pool {
                    let report = match ending {
                        Ending::Shutdown => Some(pool.shutdown(Duration::MAX)),
                        Ending::Join => Some(pool.join(Duration::MAX)),
                        Ending::Drop => {
                            drop(pool);
                            None
                        }
                    };
                    report_tx.send((*n, report)).unwrap();
                }
                Ok::<(), String>(())
            })
            .unwrap();
        *slot.lock().unwrap() = Some(pool);
        let sent = if ending == Ending::Join { 5 } else { 1 };
        for n in 0..sent {
            queue.producer().send(n).unwrap();
        }
        if ending == Ending::Join {
            queue.close(); // the other workers drain the rest, then stop
        }

        let (caller, report) = reports
            .recv_timeout(WAIT)
            .expect("the handler's own shutdown returned");
        if let Some(report) = &report {
            assert!(report.unfinished.is_empty(), "{report:?}");
            assert_eq!(report.released, 0, "the caller's message is not released");
            assert_eq!(report.totals().received, sent as u64, "{ending:?}");
        }
        wait_until("every message is acked", || {
            queue.stats().acked == sent as u64
        });
        let stats = queue.stats();
        assert_eq!(
            (stats.ready, stats.in_flight, stats.delayed, stats.expired),
            (0, 0, 0, 0),
            "{ending:?}, caller's message: {caller}"
        );
    }
}

/// Issue 10, fault 7: once a pool was dropped without `join` and every
/// handle of a persistent queue was gone, an immediate reopen found the
/// directory still locked now and then, for up to a polling interval: the
/// dropped pool's idle workers still held the queue until they next looked
/// at their stop flag. Dropping the pool must wake and join its idle
/// workers, so the directory reopens at once, every time.
#[test]
fn the_directory_stays_locked_after_everything_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..60u32 {
        let queue: Queue<u32> = Queue::builder()
            .path(dir.path())
            .durability(Durability::None)
            .open()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let pool = Workers::new(queue.consumer())
            .threads(2)
            .spawn(|_: &u32| Ok::<(), String>(()))
            .unwrap();
        let producer = queue.producer();
        for n in 0..3 {
            producer.send(round * 3 + n).unwrap();
        }
        wait_until("the pool acks all three", || pool.totals().acked == 3);
        // The workers are idle in a receive now; nothing is settled late.
        drop(pool);
        drop(producer);
        drop(queue);
        if let Err(error) = Queue::<u32>::builder().path(dir.path()).open() {
            panic!("round {round}: reopening at once failed: {error}");
        }
    }
}

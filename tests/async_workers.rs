//! The async worker pool (the `tokio` feature): outcomes, counts, the
//! lease heartbeat on a manual clock, shutdown deadlines that cancel a
//! handler, and a handler that ends its own pool. Every test bounds its
//! waits, so a lost wake-up fails instead of hanging.

use spool::{
    AsyncWorkerPool, AsyncWorkers, Backoff, DeadLetterReason, Job, ManualClock, Outcome, Queue,
    RecvError,
};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex, Notify};

const DEADLINE: Duration = Duration::from_secs(30);

fn runtimes() -> [tokio::runtime::Runtime; 2] {
    [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ]
}

#[test]
fn outcomes_are_settled_and_counted_on_both_runtimes() {
    for runtime in runtimes() {
        runtime.block_on(async {
            let queue: Queue<u32> = Queue::builder()
                .max_receives(2)
                .backoff(Backoff::None)
                .open()
                .unwrap();
            let pool = AsyncWorkers::new(queue.consumer())
                .concurrency(3)
                .spawn(|job: Job<u32>| async move {
                    tokio::task::yield_now().await;
                    match *job % 3 {
                        0 => Ok(()),
                        1 => Err(format!("{} failed on try {}", *job, job.receive_count())),
                        _ => panic!("{} panicked", *job),
                    }
                })
                .unwrap();
            let producer = queue.producer();
            for n in 0..30 {
                producer.send_async(n).await.unwrap();
            }
            queue.close();
            let report = pool.join(DEADLINE).await;
            assert!(report.unfinished.is_empty());
            let totals = report.totals();
            assert_eq!(totals.acked, 10);
            assert_eq!(totals.failed, 20, "10 messages, two tries each");
            assert_eq!(totals.panicked, 20);
            assert_eq!(totals.received, 50);
            assert_eq!(totals.lease_lost, 0);
            let dead = queue.dead_letters().list();
            assert_eq!(dead.len(), 20);
            let one = dead.iter().find(|letter| *letter.payload() == 1).unwrap();
            assert_eq!(one.errors(), ["1 failed on try 1", "1 failed on try 2"]);
            let two = dead.iter().find(|letter| *letter.payload() == 2).unwrap();
            assert_eq!(
                two.errors(),
                ["panicked: 2 panicked", "panicked: 2 panicked"]
            );
        });
    }
}

#[test]
fn the_heartbeat_keeps_a_long_handler_s_lease_on_a_manual_clock() {
    for runtime in runtimes() {
        runtime.block_on(async {
            let clock = ManualClock::new();
            let timeout = Duration::from_secs(10);
            let queue: Queue<u32> = Queue::builder()
                .clock(clock.clone())
                .visibility_timeout(timeout)
                .open()
                .unwrap();
            let release = Arc::new(Notify::new());
            let pool = {
                let release = release.clone();
                AsyncWorkers::new(queue.consumer())
                    .spawn(move |_job: Job<u32>| {
                        let release = release.clone();
                        async move {
                            release.notified().await;
                            Ok::<(), String>(())
                        }
                    })
                    .unwrap()
            };
            queue.producer().send(1).unwrap();
            wait_until(|| pool.totals().received == 1).await;
            // Three times past the visibility timeout, in steps the
            // heartbeat sees (each above half a timeout, below a whole).
            for step in 1..=5u64 {
                clock.advance(timeout * 6 / 10);
                wait_until(|| pool.totals().lease_extensions == step).await;
            }
            release.notify_one();
            queue.close();
            let report = pool.join(DEADLINE).await;
            let totals = report.totals();
            assert_eq!((totals.acked, totals.lease_lost), (1, 0));
            assert_eq!(queue.stats().expired, 0);
        });
    }
}

/// Waits (yielding, bounded) until `done` holds.
async fn wait_until(mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < give_up, "timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn a_shutdown_deadline_cancels_a_running_handler_and_releases_its_message() {
    for runtime in runtimes() {
        runtime.block_on(async {
            let queue: Queue<u32> = Queue::builder().backoff(Backoff::None).open().unwrap();
            let (started, running) = oneshot::channel();
            let started = Arc::new(std::sync::Mutex::new(Some(started)));
            let (told, lost) = oneshot::channel();
            let told = Arc::new(std::sync::Mutex::new(Some(told)));
            let pool = AsyncWorkers::new(queue.consumer())
                .concurrency(2)
                .spawn(move |job: Job<u32>| {
                    if let Some(started) = started.lock().unwrap().take() {
                        let _ = started.send(());
                    }
                    // The job's signal, watched from a task of its own:
                    // the handler's future is dropped at the deadline.
                    let signal = job.lease_lost().clone();
                    let told = told.lock().unwrap().take();
                    tokio::spawn(async move {
                        signal.wait_async().await;
                        if let Some(told) = told {
                            let _ = told.send(());
                        }
                    });
                    std::future::pending::<Result<(), String>>()
                })
                .unwrap();
            queue.producer().send(7).unwrap();
            tokio::time::timeout(DEADLINE, running)
                .await
                .unwrap()
                .unwrap();
            let report = pool.shutdown(Duration::from_millis(20)).await;
            assert_eq!(
                report.unfinished,
                [report.workers.iter().position(|w| w.received == 1).unwrap()]
            );
            assert_eq!(report.released, 1);
            tokio::time::timeout(DEADLINE, lost).await.unwrap().unwrap();
            let stats = queue.stats();
            assert_eq!((stats.ready, stats.in_flight), (1, 0), "back in the queue");
            let again = queue.consumer().try_recv().unwrap();
            assert_eq!((*again, again.receive_count()), (7, 2));
        });
    }
}

#[test]
fn a_handler_that_shuts_down_its_own_pool_does_not_wait_for_itself() {
    for runtime in runtimes() {
        runtime.block_on(async {
            let queue: Queue<u32> = Queue::builder().open().unwrap();
            let slot: Arc<Mutex<Option<AsyncWorkerPool<u32>>>> = Arc::new(Mutex::new(None));
            let (reported, report) = oneshot::channel();
            let reported = Arc::new(std::sync::Mutex::new(Some(reported)));
            let pool = {
                let slot = slot.clone();
                AsyncWorkers::new(queue.consumer())
                    .concurrency(2)
                    .spawn(move |_job: Job<u32>| {
                        let (slot, reported) = (slot.clone(), reported.clone());
                        async move {
                            if let Some(pool) = slot.lock().await.take() {
                                let report = pool.shutdown(Duration::MAX).await;
                                let _ = reported.lock().unwrap().take().unwrap().send(report);
                            }
                            Ok::<(), String>(())
                        }
                    })
                    .unwrap()
            };
            *slot.lock().await = Some(pool);
            queue.producer().send(1).unwrap();
            let report = tokio::time::timeout(DEADLINE, report)
                .await
                .unwrap()
                .unwrap();
            assert!(report.unfinished.is_empty());
            assert_eq!(report.released, 0, "the caller's message is not released");
            // Its own message is settled as its handler returns.
            let give_up = tokio::time::Instant::now() + DEADLINE;
            while queue.stats().acked < 1 {
                assert!(tokio::time::Instant::now() < give_up);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(queue.stats().in_flight, 0);
        });
    }
}

#[test]
fn spawning_outside_a_runtime_is_an_error_not_a_panic() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    let spawned =
        AsyncWorkers::new(queue.consumer()).spawn(|_job: Job<u32>| async { Ok::<(), String>(()) });
    assert!(spawned.is_err());
    // The queue is untouched.
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn handlers_choose_their_outcome_as_job_handlers_of_workers_do() {
    for runtime in runtimes() {
        runtime.block_on(async {
            let clock = ManualClock::new();
            let queue: Queue<u32> = Queue::builder()
                .clock(clock.clone())
                .max_receives(5)
                .backoff(Backoff::None)
                .open()
                .unwrap();
            let pool = AsyncWorkers::new(queue.consumer())
                .concurrency(2)
                .spawn_jobs(|job: Job<u32>| async move {
                    match (*job, job.receive_count()) {
                        (0, _) => Ok(Outcome::Ack),
                        (1, 1) => Ok(Outcome::Retry),
                        (1, _) => Ok(Outcome::Ack),
                        (2, 1) => Ok(Outcome::RetryAfter(Duration::from_secs(30))),
                        (2, _) => Ok(Outcome::Ack),
                        (3, _) => Ok(Outcome::dead_letter("410 gone")),
                        _ => Err("unexpected"),
                    }
                })
                .unwrap();
            let producer = queue.producer();
            for n in 0..4 {
                producer.send(n).unwrap();
            }
            wait_until(|| {
                let totals = pool.totals();
                (totals.acked, totals.dead_lettered, queue.stats().delayed) == (2, 1, 1)
            })
            .await;
            // Message 2 waits for its 30 s, exactly.
            clock.advance(Duration::from_secs(29));
            tokio::task::yield_now().await;
            assert_eq!(queue.stats().delayed, 1);
            clock.advance(Duration::from_secs(1));
            wait_until(|| pool.totals().acked == 3).await;
            queue.close();
            let totals = pool.join(DEADLINE).await.totals();
            assert_eq!(
                (
                    totals.acked,
                    totals.retried,
                    totals.dead_lettered,
                    totals.failed
                ),
                (3, 2, 1, 0)
            );
            let dead = queue.dead_letters().list();
            assert_eq!(dead.len(), 1);
            assert_eq!(
                dead[0].reason(),
                &DeadLetterReason::Rejected("410 gone".into())
            );
        });
    }
}

// A hostile review's tests of the pool: handlers that panic when called,
// retries that only the deadline alarm brings back to a closed queue's
// workers, and a handler that blocks its thread past its lease.

#[test]
fn a_handler_that_panics_when_called_is_counted_and_failed() {
    for runtime in runtimes() {
        runtime.block_on(async {
            let queue: Queue<u32> = Queue::builder()
                .max_receives(2)
                .backoff(Backoff::None)
                .open()
                .unwrap();
            let pool = AsyncWorkers::new(queue.consumer())
                .concurrency(2)
                .spawn(|job: Job<u32>| {
                    if *job % 2 == 1 {
                        panic!("{} panicked when called", *job);
                    }
                    async move { Ok::<(), String>(()) }
                })
                .unwrap();
            for n in 0..10 {
                queue.producer().send_async(n).await.unwrap();
            }
            queue.close();
            let report = tokio::time::timeout(DEADLINE, pool.join(DEADLINE))
                .await
                .expect("join hung");
            assert!(report.unfinished.is_empty());
            let t = report.totals();
            assert_eq!((t.acked, t.panicked), (5, 10));
            let s = queue.stats();
            assert_eq!((s.ready, s.in_flight, s.dead_letters), (0, 0, 5));
        });
    }
}

#[test]
fn retries_after_a_delay_bring_a_closed_queue_s_workers_back() {
    // Every message is retried once after 40 ms, then acked. The queue is
    // closed with all of them delayed: only the queue's deadline alarm can
    // wake the idle worker tasks, and `join` must see them all acked.
    for runtime in runtimes() {
        runtime.block_on(async {
            let queue: Queue<u32> = Queue::builder().backoff(Backoff::None).open().unwrap();
            let pool = AsyncWorkers::new(queue.consumer())
                .concurrency(3)
                .spawn_jobs(|job: Job<u32>| async move {
                    Ok::<_, String>(match job.receive_count() {
                        1 => Outcome::RetryAfter(Duration::from_millis(40)),
                        _ => Outcome::Ack,
                    })
                })
                .unwrap();
            for n in 0..12 {
                queue.producer().send_async(n).await.unwrap();
            }
            queue.close();
            let report = tokio::time::timeout(DEADLINE, pool.join(DEADLINE))
                .await
                .expect("join hung");
            assert!(report.unfinished.is_empty(), "{report:?}");
            let t = report.totals();
            assert_eq!((t.acked, t.retried, t.received), (12, 12, 24));
        });
    }
}

#[test]
fn a_handler_that_blocks_past_its_lease_loses_it_and_the_message_comes_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let queue: Queue<u32> = Queue::builder()
            .backoff(Backoff::None)
            .visibility_timeout(Duration::from_millis(60))
            .open()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let pool = {
            let calls = calls.clone();
            AsyncWorkers::new(queue.consumer())
                .concurrency(2)
                .spawn(move |job: Job<u32>| {
                    let first = calls.fetch_add(1, SeqCst) == 0;
                    async move {
                        if first {
                            // Blocks its thread: no heartbeat can run.
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        let _ = job;
                        Ok::<(), String>(())
                    }
                })
                .unwrap()
        };
        queue.producer().send(1).unwrap();
        queue.close();
        let report = tokio::time::timeout(DEADLINE, pool.join(DEADLINE))
            .await
            .expect("join hung");
        let t = report.totals();
        assert_eq!(t.received, 2, "{t:?}");
        assert_eq!((t.acked, t.lease_expired), (1, 1), "{t:?}");
        let s = queue.stats();
        assert_eq!((s.ready, s.in_flight, s.acked), (0, 0, 1));
    });
}

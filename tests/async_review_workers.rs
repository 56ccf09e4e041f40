//! A hostile review of `AsyncWorkers` (feature `tokio`): handlers that
//! panic when called, retries that only the deadline alarm brings back to
//! a closed queue's workers, and a handler that blocks its thread past its
//! lease. Every wait is bounded.
#![cfg(feature = "tokio")]

use spool::{AsyncWorkers, Backoff, Job, Outcome, Queue};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

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

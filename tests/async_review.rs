//! A hostile review of the async calls: cancel safety under churn, wakers
//! that change between polls, deadlines that only the alarm thread can
//! notice, mixed blocking and async sides at capacity 1, and the ordering
//! promise with receives that wait for the disk. Every scenario is bounded:
//! a lost wake-up fails instead of hanging.

use spool::{Backoff, Durability, ManualClock, Queue, RecvError, SendError, SendOptions};
use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own; fails if it is not done in `limit`.
fn bounded<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, finished) = mpsc::channel();
    let runner = thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(limit) {
        Ok(r) => {
            runner.join().unwrap();
            r
        }
        Err(_) => {
            if runner.is_finished() {
                runner.join().unwrap(); // it panicked: show why
                unreachable!()
            }
            panic!("not done after {limit:?} (a lost wake-up or a hang)")
        }
    }
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn memory(capacity: usize) -> Queue<u64> {
    Queue::builder()
        .capacity(capacity)
        .backoff(Backoff::None)
        .open()
        .unwrap()
}

#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let c = Arc::new(Counting::default());
    (c.clone(), Waker::from(c))
}

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

// ----- timeouts of 1 µs around recv_async, many times ---------------------

#[test]
fn recv_async_cancelled_by_tiny_timeouts_receives_every_message_once() {
    const N: u64 = 4_000;
    bounded(Duration::from_secs(90), || {
        let queue = memory(8);
        let producer = queue.producer();
        let feeder = thread::spawn(move || {
            for i in 0..N {
                producer.send(i).unwrap();
            }
        });
        let consumer = queue.consumer();
        let seen = multi_thread().block_on(async {
            let mut seen = HashSet::new();
            let mut attempts = 0u64;
            while (seen.len() as u64) < N {
                attempts += 1;
                assert!(attempts < 5_000_000, "stuck at {}", seen.len());
                let got =
                    tokio::time::timeout(Duration::from_micros(1), consumer.recv_async()).await;
                if let Ok(got) = got {
                    let d = got.unwrap();
                    assert_eq!(d.receive_count(), 1, "message {} received twice", *d);
                    assert!(seen.insert(*d), "duplicate {}", *d);
                    d.ack_async().await.unwrap();
                }
            }
            seen
        });
        feeder.join().unwrap();
        assert_eq!(seen.len() as u64, N);
        let stats = queue.stats();
        assert_eq!((stats.ready, stats.in_flight, stats.delayed), (0, 0, 0));
        assert_eq!(stats.acked, N);
    });
}

#[test]
fn recv_batch_async_cancelled_by_tiny_timeouts_loses_and_duplicates_nothing() {
    const N: u64 = 4_000;
    bounded(Duration::from_secs(90), || {
        let queue = memory(16);
        let producer = queue.producer();
        let feeder = thread::spawn(move || {
            for i in 0..N {
                producer.send(i).unwrap();
            }
        });
        let consumer = queue.consumer();
        let seen = multi_thread().block_on(async {
            let mut seen = HashSet::new();
            let mut attempts = 0u64;
            while (seen.len() as u64) < N {
                attempts += 1;
                assert!(attempts < 5_000_000, "stuck at {}", seen.len());
                let got = tokio::time::timeout(
                    Duration::from_micros(1),
                    consumer.recv_batch_async(usize::MAX, Duration::MAX),
                )
                .await;
                if let Ok(got) = got {
                    let batch = got.unwrap();
                    for m in batch.iter() {
                        assert!(seen.insert(*m), "duplicate {}", *m);
                    }
                    batch.ack_async().await.unwrap();
                }
            }
            seen
        });
        feeder.join().unwrap();
        assert_eq!(seen.len() as u64, N);
        let stats = queue.stats();
        assert_eq!((stats.ready, stats.in_flight), (0, 0));
    });
}

// ----- wakers that change between polls -----------------------------------

#[test]
fn recv_async_polled_with_a_new_waker_wakes_the_new_one() {
    bounded(Duration::from_secs(20), || {
        let queue = memory(4);
        let consumer = queue.consumer();
        let (a_count, a) = counting();
        let (b_count, b) = counting();
        let mut recv = pin!(consumer.recv_async());
        assert!(poll_once(recv.as_mut(), &a).is_pending());
        assert!(poll_once(recv.as_mut(), &b).is_pending());
        queue.producer().send(1).unwrap();
        assert_eq!(b_count.0.load(SeqCst), 1, "the latest waker is woken");
        assert_eq!(a_count.0.load(SeqCst), 0, "not the stale one");
        match poll_once(recv.as_mut(), &b) {
            Poll::Ready(d) => assert_eq!(*d.unwrap(), 1),
            Poll::Pending => panic!("woken but not ready"),
        }
    });
}

#[test]
fn many_recv_async_pending_on_one_task_all_get_a_message() {
    // Eight receives polled by one task (one waker for all: `will_wake`
    // holds between them), eight sends one by one: every receive ends.
    bounded(Duration::from_secs(20), || {
        let queue = memory(16);
        let consumer = queue.consumer();
        let (_, waker) = counting();
        let mut futures: Vec<_> = (0..8).map(|_| Box::pin(consumer.recv_async())).collect();
        for f in &mut futures {
            assert!(poll_once(f.as_mut(), &waker).is_pending());
        }
        let producer = queue.producer();
        let mut done = [false; 8];
        for i in 0..8 {
            producer.send(i).unwrap();
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while done.iter().any(|d| !d) {
            assert!(Instant::now() < give_up, "only {} of 8 received", got.len());
            for (f, d) in futures.iter_mut().zip(done.iter_mut()) {
                if !*d {
                    if let Poll::Ready(r) = poll_once(f.as_mut(), &waker) {
                        got.push(r.unwrap());
                        *d = true;
                    }
                }
            }
        }
        assert_eq!(got.len(), 8);
        drop(futures);
        assert_eq!(queue.stats().in_flight, 8);
    });
}

// ----- deadlines nobody but the alarm thread sees ---------------------------

#[test]
fn lease_expiry_wakes_an_only_async_consumer_again_and_again() {
    // The lease runs out five times in a row; no thread ever calls in:
    // only the queue's deadline alarm can wake the task each time.
    bounded(Duration::from_secs(30), || {
        let queue: Queue<u64> = Queue::builder()
            .capacity(4)
            .backoff(Backoff::None)
            .max_receives(100)
            .visibility_timeout(Duration::from_millis(40))
            .open()
            .unwrap();
        queue.producer().send(7).unwrap();
        let consumer = queue.consumer();
        futures::executor::block_on(async {
            let mut kept = Vec::new();
            for round in 1..=5u32 {
                let d = consumer
                    .recv_timeout_async(Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
                assert_eq!(d.receive_count(), round);
                kept.push(d); // held, not settled: the lease must run out
            }
        });
    });
}

#[test]
fn delayed_messages_wake_an_only_async_consumer_again_and_again() {
    bounded(Duration::from_secs(30), || {
        let queue = memory(4);
        let producer = queue.producer();
        let consumer = queue.consumer();
        futures::executor::block_on(async {
            for round in 0..5u64 {
                let sent = Instant::now();
                producer
                    .send_with(round, SendOptions::new().delay(Duration::from_millis(30)))
                    .unwrap();
                let d = consumer
                    .recv_timeout_async(Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
                assert_eq!(*d, round);
                assert!(sent.elapsed() >= Duration::from_millis(30));
                assert!(
                    sent.elapsed() < Duration::from_secs(2),
                    "late: {:?}",
                    sent.elapsed()
                );
                d.ack_async().await.unwrap();
            }
        });
    });
}

#[test]
fn a_nearer_delay_sent_while_a_task_waits_for_a_later_one_is_not_late() {
    // The task waits with the alarm set for a message due in 2 s; a message
    // due in 30 ms is sent from another thread: the task must get it then.
    bounded(Duration::from_secs(30), || {
        let queue = memory(4);
        let producer = queue.producer();
        producer
            .send_with(1, SendOptions::new().delay(Duration::from_secs(2)))
            .unwrap();
        let consumer = queue.consumer();
        let sender = {
            let producer = queue.producer();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                let at = Instant::now();
                producer
                    .send_with(2, SendOptions::new().delay(Duration::from_millis(30)))
                    .unwrap();
                at
            })
        };
        let (d, got_at) = futures::executor::block_on(async {
            let d = consumer
                .recv_timeout_async(Duration::from_secs(10))
                .await
                .unwrap();
            (d, Instant::now())
        });
        let sent_at = sender.join().unwrap();
        assert_eq!(*d, 2);
        let late = got_at.duration_since(sent_at);
        assert!(late < Duration::from_millis(1_000), "took {late:?}");
    });
}

#[test]
fn many_queues_many_tasks_all_woken_by_their_delays() {
    bounded(Duration::from_secs(60), || {
        let queues: Vec<Queue<u64>> = (0..40).map(|_| memory(8)).collect();
        for (i, q) in queues.iter().enumerate() {
            for j in 0..4u64 {
                let delay = Duration::from_millis(5 + ((i as u64 * 7 + j * 13) % 60));
                q.producer()
                    .send_with(j, SendOptions::new().delay(delay))
                    .unwrap();
            }
        }
        multi_thread().block_on(async {
            let mut tasks = Vec::new();
            for q in &queues {
                for _ in 0..4 {
                    let consumer = q.consumer();
                    tasks.push(tokio::spawn(async move {
                        let d = consumer
                            .recv_timeout_async(Duration::from_secs(10))
                            .await
                            .unwrap();
                        d.ack_async().await.unwrap();
                    }));
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        for q in &queues {
            let s = q.stats();
            assert_eq!((s.ready, s.in_flight, s.delayed, s.acked), (0, 0, 0, 4));
        }
    });
}

#[test]
fn manual_clock_advance_wakes_a_task_waiting_for_a_delay() {
    bounded(Duration::from_secs(20), || {
        let clock = ManualClock::new();
        let queue: Queue<u64> = Queue::builder().clock(clock.clone()).open().unwrap();
        for round in 0..5u64 {
            queue
                .producer()
                .send_with(round, SendOptions::new().delay(Duration::from_secs(60)))
                .unwrap();
            let consumer = queue.consumer();
            let (woken, waker) = counting();
            let mut recv = pin!(consumer.recv_async());
            assert!(poll_once(recv.as_mut(), &waker).is_pending());
            clock.advance(Duration::from_secs(61));
            assert!(woken.0.load(SeqCst) >= 1, "round {round}: not woken");
            match poll_once(recv.as_mut(), &waker) {
                Poll::Ready(d) => d.unwrap().ack().unwrap(),
                Poll::Pending => panic!("round {round}: woken but not ready"),
            }
        }
    });
}

// ----- mixed sides at capacity 1 ------------------------------------------

#[test]
fn blocking_and_async_sides_at_capacity_one_move_every_message_once() {
    const PER: u64 = 1_500;
    bounded(Duration::from_secs(120), || {
        let queue = memory(1);
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let mut threads = Vec::new();
        // Two blocking producers, with bounded waits.
        for p in 0..2u64 {
            let producer = queue.producer();
            threads.push(thread::spawn(move || {
                for i in 0..PER {
                    let mut m = p * 1_000_000 + i;
                    loop {
                        match producer.send_timeout(m, Duration::from_millis(1)) {
                            Ok(_) => break,
                            Err(SendError::Timeout(back)) => m = back,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            }));
        }
        // Two blocking consumers, with bounded waits.
        for _ in 0..2 {
            let consumer = queue.consumer();
            let seen = seen.clone();
            threads.push(thread::spawn(move || loop {
                match consumer.recv_timeout(Duration::from_millis(1)) {
                    Ok(d) => {
                        assert!(seen.lock().unwrap().insert(*d), "duplicate {}", *d);
                        d.ack().unwrap();
                    }
                    Err(RecvError::Timeout) => {}
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }));
        }
        let rt = multi_thread();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for p in 2..4u64 {
                let producer = queue.producer();
                tasks.push(tokio::spawn(async move {
                    for i in 0..PER {
                        let m = p * 1_000_000 + i;
                        loop {
                            // Dropped at random points by a short timeout.
                            match tokio::time::timeout(
                                Duration::from_micros(50),
                                producer.send_async(m),
                            )
                            .await
                            {
                                Ok(r) => {
                                    r.unwrap();
                                    break;
                                }
                                Err(_) => continue,
                            }
                        }
                    }
                }));
            }
            for _ in 0..2 {
                let consumer = queue.consumer();
                let seen = seen.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match consumer.recv_timeout_async(Duration::from_millis(1)).await {
                            Ok(d) => {
                                assert!(seen.lock().unwrap().insert(*d), "duplicate {}", *d);
                                d.ack_async().await.unwrap();
                            }
                            Err(RecvError::Timeout) => {}
                            Err(RecvError::Closed) => break,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }));
            }
            // Producers first (the first four threads/tasks), then close.
            let consumers = tasks.split_off(2);
            for t in tasks {
                t.await.unwrap();
            }
            for t in threads.drain(..2) {
                t.join().unwrap();
            }
            queue.close();
            for t in consumers {
                t.await.unwrap();
            }
        });
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(seen.lock().unwrap().len() as u64, 4 * PER);
        let s = queue.stats();
        assert_eq!((s.ready, s.in_flight, s.delayed), (0, 0, 0));
        assert_eq!(s.sent, 4 * PER);
    });
}

// ----- closing --------------------------------------------------------------

#[test]
fn send_async_waiting_for_a_slot_ends_when_the_queue_closes() {
    bounded(Duration::from_secs(20), || {
        let queue = memory(1);
        let producer = queue.producer();
        producer.send(0).unwrap();
        let (woken, waker) = counting();
        let mut send = pin!(producer.send_async(1));
        assert!(poll_once(send.as_mut(), &waker).is_pending());
        queue.close();
        assert!(woken.0.load(SeqCst) >= 1, "close woke the sender");
        match poll_once(send.as_mut(), &waker) {
            Poll::Ready(Err(SendError::Closed(1))) => {}
            other => panic!("{:?}", other.map(|r| r.map_err(|e| e.to_string()))),
        }
        let s = queue.stats();
        assert_eq!((s.ready, s.sent), (1, 1));
    });
}

#[test]
fn recv_batch_async_with_extreme_arguments() {
    bounded(Duration::from_secs(20), || {
        let queue = memory(8);
        queue.producer().send_batch(vec![1, 2, 3]).unwrap();
        let consumer = queue.consumer();
        current_thread().block_on(async {
            let b = consumer
                .recv_batch_async(usize::MAX, Duration::MAX)
                .await
                .unwrap();
            assert_eq!(b.len(), 3);
            b.ack_async().await.unwrap();
            let b = consumer.recv_batch_async(0, Duration::ZERO).await;
            assert!(matches!(b, Err(RecvError::Timeout)), "{:?}", b.err());
            queue.close();
            let b = consumer.recv_batch_async(usize::MAX, Duration::MAX).await;
            assert!(matches!(b, Err(RecvError::Closed)), "{:?}", b.err());
        });
    });
}

// ----- persistent queues ----------------------------------------------------

fn on_disk(dir: &std::path::Path, durability: Durability) -> Queue<u64> {
    Queue::builder()
        .path(dir)
        .durability(durability)
        .capacity(1_000_000)
        .backoff(Backoff::None)
        .open()
        .unwrap()
}

#[test]
fn a_receive_dropped_while_its_record_is_written_keeps_send_order() {
    // README: "With one producer and no failures consumers see messages in
    // send order". A receive dropped while it waits for the disk is no
    // failure: nothing was leased. The message it had taken must still be
    // the next one a consumer gets.
    bounded(Duration::from_secs(60), || {
        // A fresh queue until the first poll waits for the disk (the
        // writer thread had not synced the receive yet): then dropped.
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let queue = on_disk(dir.path(), Durability::Sync);
            let producer = queue.producer();
            for i in 1..=3 {
                producer.send(i).unwrap();
            }
            let consumer = queue.consumer();
            let (_, waker) = counting();
            {
                let mut recv = pin!(consumer.recv_async());
                if poll_once(recv.as_mut(), &waker).is_ready() {
                    continue; // the disk was quicker: try again
                }
                let s = queue.stats();
                assert_eq!((s.ready, s.in_flight), (2, 0), "took message 1, not leased");
            } // dropped while it waits for the receive record
            let next = consumer.try_recv().unwrap();
            assert_eq!(*next, 1, "the dropped receive's message lost its place");
            return;
        }
        panic!("the first poll never waited for the disk");
    });
}

#[test]
fn async_sends_racing_a_full_write_buffer_all_arrive() {
    // Payloads of 64 KiB fill the writer's buffer (512 KiB) in eight sends:
    // sends wait in `poll_room`; some are dropped there by timeouts.
    for durability in [
        Durability::Sync,
        Durability::Interval(Duration::from_millis(5)),
        Durability::None,
    ] {
        bounded(Duration::from_secs(120), move || {
            let dir = tempfile::tempdir().unwrap();
            let queue: Queue<Vec<u8>> = Queue::builder()
                .path(dir.path())
                .durability(durability)
                .capacity(100_000)
                .max_message_bytes(1 << 20)
                .open()
                .unwrap();
            const TASKS: usize = 8;
            const PER: usize = 40;
            let sent = multi_thread().block_on(async {
                let mut tasks = Vec::new();
                for t in 0..TASKS {
                    let producer = queue.producer();
                    tasks.push(tokio::spawn(async move {
                        let mut sent = 0;
                        let mut dropped = 0;
                        for i in 0..PER {
                            let mut payload = vec![0u8; 64 << 10];
                            payload[0] = t as u8;
                            payload[1] = i as u8;
                            let r = tokio::time::timeout(
                                Duration::from_micros(200),
                                producer.send_async(payload),
                            )
                            .await;
                            match r {
                                Ok(r) => {
                                    r.unwrap();
                                    sent += 1;
                                }
                                Err(_) => dropped += 1,
                            }
                        }
                        (sent, dropped)
                    }));
                }
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap().0;
                }
                total
            });
            // A send dropped while waiting for the disk was sent all the
            // same: at least `sent` arrive, and every one exactly once.
            queue.sync().unwrap();
            let s = queue.stats();
            assert!(s.ready >= sent, "{durability:?}: {} < {sent}", s.ready);
            assert_eq!(s.ready as u64, s.sent, "{durability:?}");
        });
    }
}

#[test]
fn timeout_churn_on_durable_receives_counts_no_receive_twice() {
    const N: u64 = 300;
    bounded(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        let queue = on_disk(dir.path(), Durability::Sync);
        let producer = queue.producer();
        for i in 0..N {
            producer.send(i).unwrap();
        }
        let consumer = queue.consumer();
        let got = multi_thread().block_on(async {
            let mut seen = HashSet::new();
            let mut attempts = 0u64;
            while (seen.len() as u64) < N {
                attempts += 1;
                assert!(attempts < 2_000_000, "stuck at {}", seen.len());
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_micros(20), consumer.recv_async()).await
                {
                    let d = r.unwrap();
                    assert_eq!(d.receive_count(), 1, "message {}", *d);
                    assert!(seen.insert(*d));
                    d.ack_async().await.unwrap();
                }
            }
            seen.len()
        });
        assert_eq!(got as u64, N);
        let s = queue.stats();
        assert_eq!((s.ready, s.in_flight), (0, 0));
    });
}

// ----- closing while a stream waits --------------------------------------------

#[test]
fn a_stream_ends_when_the_last_producer_goes() {
    use futures::StreamExt;
    bounded(Duration::from_secs(20), || {
        let queue = memory(4);
        let consumer = queue.consumer();
        let producer = queue.producer();
        drop(queue);
        let mut stream = consumer.stream();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            producer.send(5).unwrap();
            thread::sleep(Duration::from_millis(30));
            drop(producer);
        });
        current_thread().block_on(async {
            let d = stream.next().await.unwrap();
            assert_eq!(*d, 5);
            d.ack_async().await.unwrap();
            assert!(stream.next().await.is_none());
        });
        t.join().unwrap();
    });
}

#[test]
fn receive_counts_survive_reopen_after_timeout_churn_on_durable_receives() {
    // Receives dropped while their records were written must count no
    // receive, in memory and after a reopen.
    const N: u64 = 200;
    bounded(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().unwrap();
        {
            let queue = on_disk(dir.path(), Durability::Sync);
            let producer = queue.producer();
            for i in 0..N {
                producer.send(i).unwrap();
            }
            let consumer = queue.consumer();
            let kept = multi_thread().block_on(async {
                let mut kept = Vec::new();
                let mut attempts = 0u64;
                while (kept.len() as u64) < N {
                    attempts += 1;
                    assert!(attempts < 2_000_000, "stuck at {}", kept.len());
                    let timeout = Duration::from_micros(5 + attempts % 40);
                    if let Ok(r) = tokio::time::timeout(
                        timeout,
                        consumer.recv_batch_async(3, Duration::from_secs(5)),
                    )
                    .await
                    {
                        let b = r.unwrap();
                        for m in b.messages() {
                            assert_eq!(m.receive_count(), 1, "message {}", m.payload());
                        }
                        kept.push(b);
                    }
                    let n: usize = kept.iter().map(|b| b.len()).sum();
                    if n as u64 >= N {
                        break;
                    }
                }
                kept
            });
            drop(kept); // released (nacked): counts stay 1
            queue.sync().unwrap();
        }
        let queue = on_disk(dir.path(), Durability::Sync);
        let consumer = queue.consumer();
        let mut seen = HashSet::new();
        while let Ok(d) = consumer.try_recv() {
            assert_eq!(d.receive_count(), 2, "message {}", *d);
            assert!(seen.insert(*d));
            d.ack().unwrap();
        }
        assert_eq!(seen.len() as u64, N);
    });
}

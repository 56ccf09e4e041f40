//! The async calls, each scenario on three executors: tokio's
//! current-thread runtime (where a call that blocked its thread would stop
//! everything), tokio's multi-thread runtime, and `futures`' own
//! `block_on` (no runtime at all). Concurrency inside a scenario comes
//! from `futures::join!`, which every executor runs, and from plain
//! threads on the blocking side. Every scenario runs on a thread of its
//! own under a deadline, so a lost wake-up fails instead of hanging.

use futures::StreamExt;
use spool::{
    Backoff, Durability, ManualClock, MessageId, Queue, RecvError, SendError, SendOptions, Sent,
    SettleError,
};
use std::future::Future;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// Runs the scenario `make` builds on each executor, each under the
/// deadline.
fn on_every_executor<F, Fut>(make: F)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    type Run = fn(std::pin::Pin<Box<dyn Future<Output = ()>>>);
    let executors: [(&str, Run); 3] = [
        ("tokio current-thread", |future| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(future);
        }),
        ("tokio multi-thread", |future| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(future);
        }),
        ("futures block_on", |future| {
            futures::executor::block_on(future)
        }),
    ];
    for (name, run) in executors {
        let make = make.clone();
        let (done, finished) = mpsc::channel();
        let runner = thread::spawn(move || {
            run(Box::pin(make()));
            let _ = done.send(());
        });
        match finished.recv_timeout(DEADLINE) {
            Ok(()) => runner.join().unwrap(),
            Err(_) => match runner.is_finished() {
                // It panicked: show why.
                true => runner.join().unwrap(),
                false => panic!("{name}: not done after {DEADLINE:?}"),
            },
        }
    }
}

fn memory(capacity: usize) -> Queue<u64> {
    // Retries at once: these scenarios are about waking, not backoff.
    Queue::builder()
        .capacity(capacity)
        .backoff(Backoff::None)
        .open()
        .unwrap()
}

#[test]
fn send_receive_and_ack_without_blocking() {
    on_every_executor(|| async {
        let queue = memory(16);
        let producer = queue.producer();
        let consumer = queue.consumer();
        // The receive waits first; the send in the same task wakes it.
        let (received, sent) = futures::join!(consumer.recv_async(), producer.send_async(7));
        let delivery = received.unwrap();
        assert_eq!((*delivery, delivery.id()), (7, sent.unwrap()));
        assert_eq!(delivery.receive_count(), 1);
        delivery.ack_async().await.unwrap();
        let stats = queue.stats();
        assert_eq!((stats.sent, stats.acked, stats.in_flight), (1, 1, 0));
    });
}

#[test]
fn a_full_queue_makes_async_senders_wait_until_a_blocking_consumer_acks() {
    on_every_executor(|| async {
        let queue = memory(2);
        let consumer = queue.consumer();
        let blocking = thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(delivery) = consumer.recv_timeout(DEADLINE) {
                got.push(*delivery);
                delivery.ack().unwrap();
            }
            got
        });
        let producer = queue.producer();
        for i in 0..200 {
            producer.send_async(i).await.unwrap();
        }
        queue.close();
        assert_eq!(blocking.join().unwrap(), (0..200).collect::<Vec<_>>());
    });
}

#[test]
fn async_consumers_share_a_queue_with_a_blocking_producer() {
    on_every_executor(|| async {
        let queue = memory(4);
        let producer = queue.producer();
        let blocking = thread::spawn(move || {
            for i in 0..300 {
                producer.send(i).unwrap();
            }
        });
        let drain = |consumer: spool::Consumer<u64>| async move {
            let mut got = Vec::new();
            let mut deliveries = consumer.stream();
            while let Some(delivery) = deliveries.next().await {
                got.push(*delivery);
                delivery.ack_async().await.unwrap();
            }
            assert!(deliveries.error().is_none());
            got
        };
        let closing = async {
            // Closes once everything is sent and acknowledged.
            blocking_join(blocking).await;
            queue.close();
        };
        let (mut a, mut b, ()) =
            futures::join!(drain(queue.consumer()), drain(queue.consumer()), closing);
        a.append(&mut b);
        a.sort_unstable();
        assert_eq!(a, (0..300).collect::<Vec<_>>());
        assert_eq!(queue.stats().acked, 300);
    });
}

/// Joins a thread from a task without blocking the executor's thread:
/// polls `is_finished` between yields (bounded by the scenario deadline).
async fn blocking_join(handle: thread::JoinHandle<()>) {
    while !handle.is_finished() {
        yield_now().await;
    }
    handle.join().unwrap();
}

/// Gives the executor a turn (a runtime-free `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[test]
fn close_ends_a_waiting_receive_and_the_stream() {
    on_every_executor(|| async {
        let queue = memory(4);
        let consumer = queue.consumer();
        let closing = async {
            yield_now().await;
            queue.close();
        };
        let (received, ()) = futures::join!(consumer.recv_async(), closing);
        assert_eq!(received.unwrap_err(), RecvError::Closed);
        let mut stream = consumer.stream();
        assert!(stream.next().await.is_none());
        assert!(futures::stream::FusedStream::is_terminated(&stream));
        let refused = queue.producer().send_async(1).await;
        assert!(matches!(refused, Err(SendError::Closed(1))));
    });
}

#[test]
fn a_delayed_message_wakes_its_waiting_task_when_it_comes_due() {
    // Nothing else happens: only the queue's deadline (kept by the alarm
    // thread) can wake the task.
    on_every_executor(|| async {
        let queue = memory(4);
        let delay = Duration::from_millis(30);
        let sent_at = Instant::now();
        let options = SendOptions::new().delay(delay);
        queue.producer().send_with_async(5, options).await.unwrap();
        let delivery = queue.consumer().recv_async().await.unwrap();
        assert!(sent_at.elapsed() >= delay);
        assert_eq!(*delivery, 5);
        delivery.ack_async().await.unwrap();
    });
}

#[test]
fn an_expired_lease_wakes_a_task_waiting_for_its_message() {
    on_every_executor(|| async {
        let queue: Queue<u64> = Queue::builder()
            .visibility_timeout(Duration::from_millis(20))
            .open()
            .unwrap();
        queue.producer().send(1).unwrap();
        let consumer = queue.consumer();
        let first = consumer.recv_async().await.unwrap();
        // Held, never settled: the second receive waits for the lease.
        let second = consumer.recv_async().await.unwrap();
        assert_eq!((second.id(), second.receive_count()), (first.id(), 2));
        assert_eq!(
            first.ack_async().await,
            Err(SettleError::LeaseExpired { id: second.id() })
        );
        second.ack_async().await.unwrap();
        assert_eq!(queue.stats().expired, 1);
    });
}

#[test]
fn a_manual_clock_moves_async_waiters_as_it_moves_threads() {
    on_every_executor(|| async {
        let clock = ManualClock::new();
        let queue: Queue<u64> = Queue::builder().clock(clock.clone()).open().unwrap();
        let options = SendOptions::new().delay(Duration::from_secs(3600));
        queue.producer().send_with_async(9, options).await.unwrap();
        let consumer = queue.consumer();
        let advancing = async {
            yield_now().await;
            clock.advance(Duration::from_secs(3600));
        };
        let (received, ()) = futures::join!(consumer.recv_async(), advancing);
        assert_eq!(*received.unwrap(), 9);
    });
}

#[test]
fn timeouts_of_the_queue_itself() {
    on_every_executor(|| async {
        let queue = memory(4);
        let consumer = queue.consumer();
        let started = Instant::now();
        let timeout = Duration::from_millis(15);
        let got = consumer.recv_timeout_async(timeout).await;
        assert_eq!(got.unwrap_err(), RecvError::Timeout);
        assert!(started.elapsed() >= timeout);
        let batch = consumer.recv_batch_async(8, Duration::ZERO).await;
        assert_eq!(batch.unwrap_err(), RecvError::Timeout);
        // Extreme arguments are accepted, as for the blocking calls.
        queue.producer().send(3).unwrap();
        let batch = consumer
            .recv_batch_async(usize::MAX, Duration::MAX)
            .await
            .unwrap();
        assert_eq!(batch.len(), 1);
        batch.ack_async().await.unwrap();
    });
}

#[test]
fn batches_and_keys_async() {
    on_every_executor(|| async {
        let queue = memory(16);
        let producer = queue.producer();
        let ids = producer.send_batch_async(vec![1, 2, 3]).await.unwrap();
        let options = SendOptions::new().key("once");
        let first = producer.send_with_async(4, options.clone()).await.unwrap();
        let again = producer.send_with_async(4, options).await.unwrap();
        assert_eq!(again, Sent::Duplicate(first.id()));
        let consumer = queue.consumer();
        let batch = consumer
            .recv_batch_async(3, Duration::from_secs(1))
            .await
            .unwrap();
        let got: Vec<MessageId> = batch.messages().map(|m| m.id()).collect();
        assert_eq!(got, ids);
        batch.nack_async().await.unwrap();
        let deliveries = vec![
            consumer.recv_async().await.unwrap(),
            consumer.recv_async().await.unwrap(),
        ];
        assert_eq!(consumer.ack_batch_async(deliveries).await.unwrap(), 2);
        let batch = consumer.recv_batch_async(8, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 2);
        batch.retry_after_async(Duration::ZERO).await.unwrap();
        let last = consumer.recv_async().await.unwrap();
        last.dead_letter_async("done with it").await.unwrap();
        assert_eq!(queue.dead_letters().len(), 1);
    });
}

#[test]
fn a_persistent_queue_under_sync_awaits_the_disk() {
    on_every_executor(|| async {
        let dir = tempfile::tempdir().unwrap();
        {
            let queue: Queue<u64> = Queue::builder()
                .path(dir.path())
                .durability(Durability::Sync)
                .open()
                .unwrap();
            let producer = queue.producer();
            for i in 0..20 {
                producer.send_async(i).await.unwrap();
            }
            producer.send_batch_async(vec![20, 21]).await.unwrap();
            let consumer = queue.consumer();
            for _ in 0..10 {
                consumer
                    .recv_async()
                    .await
                    .unwrap()
                    .ack_async()
                    .await
                    .unwrap();
            }
            consumer
                .recv_async()
                .await
                .unwrap()
                .fail_async("io: timed out")
                .await
                .unwrap();
            queue.sync_async().await.unwrap();
        }
        let queue: Queue<u64> = Queue::builder().path(dir.path()).open().unwrap();
        let stats = queue.stats();
        // The failed one waits out its backoff.
        assert_eq!(
            (stats.ready, stats.delayed),
            (11, 1),
            "acked ones gone, the rest kept"
        );
    });
}

#[test]
fn the_blocking_iterator_ends_when_the_queue_is_drained() {
    let queue = memory(8);
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    queue.close();
    let consumer = queue.consumer();
    let mut iter = consumer.iter();
    let got: Vec<u64> = iter
        .by_ref()
        .map(|delivery| {
            let value = *delivery;
            delivery.ack().unwrap();
            value
        })
        .collect();
    assert_eq!(got, [1, 2, 3]);
    assert!(iter.error().is_none());
    assert!(iter.next().is_none(), "fused");
}

#[test]
fn cancel_and_remove_a_dead_letter_async() {
    on_every_executor(|| async {
        let dir = tempfile::tempdir().unwrap();
        let queue: Queue<u64> = Queue::builder()
            .path(dir.path())
            .durability(Durability::Sync)
            .open()
            .unwrap();
        let producer = queue.producer();
        let later = SendOptions::new().delay(Duration::from_secs(3600));
        let delayed = producer.send_with_async(1, later.key("k1")).await.unwrap();
        let ready = producer.send_async(2).await.unwrap();
        assert_eq!(
            queue.cancel_key_async("k1").await.unwrap(),
            (delayed.id(), spool::Cancelled::Delayed)
        );
        assert_eq!(
            queue.cancel_async(ready).await.unwrap(),
            spool::Cancelled::Ready
        );
        assert!(matches!(
            queue.cancel_async(ready).await,
            Err(spool::CancelError::NotFound(_))
        ));
        producer.send_async(3).await.unwrap();
        let delivery = queue.consumer().recv_async().await.unwrap();
        let id = delivery.id();
        delivery.dead_letter_async("bad").await.unwrap();
        let dead = queue.dead_letters();
        assert_eq!(
            dead.remove_async(id).await.unwrap().map(|l| *l.payload()),
            Some(3)
        );
        assert!(dead.remove_async(id).await.unwrap().is_none());
        let stats = queue.stats();
        assert_eq!((stats.ready, stats.delayed, stats.dead_letters), (0, 0, 0));
    });
}

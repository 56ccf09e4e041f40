//! Cancel safety of the async calls on a persistent queue: each future is
//! polled by hand (a counting waker, no executor) to every point where it
//! can wait, dropped there, and the queue checked, then reopened from what
//! reached the disk and checked again. The simulated disk holds its syncs
//! so that a future stays waiting for the disk for as long as the test
//! needs.

use crate::wal::{SimStorage, Storage, Torn};
use crate::{ManualClock, Queue, RecvError};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// Counts its wake-ups.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn waker() -> (Arc<Counting>, Waker) {
    let counting = Arc::new(Counting::default());
    (counting.clone(), Waker::from(counting))
}

fn open(storage: &SimStorage, clock: &ManualClock, capacity: usize) -> Queue<u32> {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    Queue::builder()
        .path("sim")
        .clock(clock.clone())
        .capacity(capacity)
        .backoff(crate::Backoff::None)
        .max_receives(3)
        .visibility_timeout(Duration::from_secs(10))
        .open_on_storage(storage)
        .expect("open")
}

/// Polls until the future is pending on something the test controls:
/// returns `Pending`, or what it gave.
fn poll<F: Future>(future: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// Waits (bounded) until `done` holds: the writer thread works on its own.
fn eventually(mut done: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < give_up, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_receive_dropped_at_every_wait_leases_nothing_and_counts_no_receive() {
    // Poll points of `recv_async` on a queue whose receives wait for the
    // disk: 0 = never polled; 1 = polled with nothing ready (registered);
    // 2 = polled after a send woke it: took the message, waits for its
    // receive to be durable; 3 = the disk synced: ready.
    for stop_after in 0..=3 {
        let storage = SimStorage::new();
        let clock = ManualClock::new();
        let queue = open(&storage, &clock, 10);
        let consumer = queue.consumer();
        let (woken, waker) = waker();
        let mut delivered = None;
        {
            let mut receive = pin!(consumer.recv_async());
            if stop_after >= 1 {
                assert!(poll(receive.as_mut(), &waker).is_pending());
            }
            queue.producer().send(7).unwrap();
            if stop_after >= 1 {
                assert!(woken.0.load(SeqCst) >= 1, "the send woke the task");
            }
            storage.hold_syncs();
            if stop_after >= 2 {
                assert!(poll(receive.as_mut(), &waker).is_pending());
                let stats = queue.stats();
                assert_eq!((stats.ready, stats.in_flight), (0, 0), "taken, not leased");
            }
            storage.release_syncs();
            if stop_after >= 3 {
                let give_up = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    if let Poll::Ready(got) = poll(receive.as_mut(), &waker) {
                        delivered = Some(got.unwrap());
                        break;
                    }
                    assert!(std::time::Instant::now() < give_up, "never durable");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        } // dropped here, at `stop_after`
        let stats = queue.stats();
        match delivered {
            Some(delivery) => {
                assert_eq!((stats.ready, stats.in_flight), (0, 1));
                assert_eq!(delivery.receive_count(), 1);
                delivery.ack().unwrap();
            }
            None => {
                assert_eq!((stats.ready, stats.in_flight), (1, 0), "point {stop_after}");
                let again = consumer.try_recv().unwrap();
                assert_eq!(
                    again.receive_count(),
                    1,
                    "no receive counted at {stop_after}"
                );
                drop(again); // a nack: receive count 1 now, recorded
            }
        }
        queue.sync().unwrap();
        drop((consumer, queue));
        // What the disk holds agrees.
        let queue = open(&storage.crash(Torn::Lost), &clock, 10);
        let stats = queue.stats();
        match stop_after {
            3 => assert_eq!(stats.ready, 0, "acked"),
            _ => {
                assert_eq!(stats.ready, 1);
                let delivery = queue.consumer().try_recv().unwrap();
                assert_eq!(
                    delivery.receive_count(),
                    2,
                    "the dropped receive counted none"
                );
            }
        }
    }
}

#[test]
fn a_batch_receive_dropped_while_waiting_for_the_disk_puts_every_message_back() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock, 10);
    queue.producer().send_batch(vec![1, 2, 3]).unwrap();
    let consumer = queue.consumer();
    let (_, waker) = waker();
    storage.hold_syncs();
    {
        let mut receive = pin!(consumer.recv_batch_async(10, Duration::from_secs(5)));
        assert!(poll(receive.as_mut(), &waker).is_pending());
        assert_eq!(queue.stats().ready, 0);
    }
    storage.release_syncs();
    assert_eq!(queue.stats().ready, 3);
    let batch = consumer.recv_batch(10, Duration::ZERO).unwrap();
    let counts: Vec<u32> = batch.messages().map(|m| m.receive_count()).collect();
    assert_eq!(counts, [1, 1, 1]);
    let order: Vec<u32> = batch.iter().copied().collect();
    assert_eq!(order, [1, 2, 3], "back in their order");
}

#[test]
fn a_send_dropped_while_waiting_for_the_disk_is_sent() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock, 10);
    let producer = queue.producer();
    let (_, waker) = waker();
    storage.hold_syncs();
    {
        let mut send = pin!(producer.send_async(5));
        assert!(
            poll(send.as_mut(), &waker).is_pending(),
            "waits for the disk"
        );
        assert_eq!(queue.stats().ready, 0, "not visible before it is durable");
    }
    assert_eq!(queue.stats().ready, 1, "sent, visible once dropped");
    storage.release_syncs();
    queue.sync().unwrap();
    drop((producer, queue));
    let queue = open(&storage.crash(Torn::Lost), &clock, 10);
    assert_eq!(*queue.consumer().try_recv().unwrap(), 5);
}

#[test]
fn a_send_dropped_while_waiting_for_room_sends_nothing_and_holds_no_slot() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock, 1);
    let producer = queue.producer();
    producer.send(1).unwrap();
    let (woken, waker) = waker();
    {
        let mut send = pin!(producer.send_async(2));
        assert!(poll(send.as_mut(), &waker).is_pending(), "full");
        assert!(
            poll(send.as_mut(), &waker).is_pending(),
            "a second poll too"
        );
    }
    let consumer = queue.consumer();
    consumer.try_recv().unwrap().ack().unwrap();
    assert_eq!(woken.0.load(SeqCst), 0, "a dropped wait is not woken");
    assert_eq!(queue.stats().sent, 1);
    // The slot is free for the next send, and only it arrives.
    producer.try_send(3).unwrap();
    let third = consumer.try_recv().unwrap();
    assert_eq!(*third, 3);
    third.ack().unwrap();
    assert!(matches!(consumer.try_recv(), Err(RecvError::Empty)));
}

#[test]
fn a_send_waiting_for_room_is_woken_by_an_ack_and_sends() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock, 1);
    let producer = queue.producer();
    producer.send(1).unwrap();
    let (woken, waker) = waker();
    let mut send = pin!(producer.send_async(2));
    assert!(poll(send.as_mut(), &waker).is_pending());
    let consumer = queue.consumer();
    consumer.try_recv().unwrap().ack().unwrap();
    assert!(woken.0.load(SeqCst) >= 1, "the ack woke it");
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    let id = loop {
        if let Poll::Ready(sent) = poll(send.as_mut(), &waker) {
            break sent.unwrap();
        }
        assert!(std::time::Instant::now() < give_up);
        std::thread::sleep(Duration::from_millis(1));
    };
    let delivery = consumer.try_recv().unwrap();
    assert_eq!((*delivery, delivery.id()), (2, id));
}

#[test]
fn an_ack_dropped_while_waiting_for_the_disk_is_made() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock, 10);
    queue.producer().send(1).unwrap();
    let delivery = queue.consumer().try_recv().unwrap();
    let (woken, waker) = waker();
    storage.hold_syncs();
    {
        let mut ack = pin!(delivery.ack_async());
        assert!(
            poll(ack.as_mut(), &waker).is_pending(),
            "waits for the disk"
        );
    }
    assert_eq!(queue.stats().acked, 1);
    storage.release_syncs();
    // A task waiting for `sync_async` is woken when the disk is done.
    {
        let mut sync = pin!(queue.sync_async());
        eventually(|| match poll(sync.as_mut(), &waker) {
            Poll::Ready(synced) => {
                synced.unwrap();
                true
            }
            Poll::Pending => false,
        });
    }
    let _ = woken;
    drop(queue);
    let queue = open(&storage.crash(Torn::Lost), &clock, 10);
    assert_eq!(queue.stats().ready, 0, "the ack reached the disk");
}

#[test]
fn a_task_waiting_for_the_disk_is_woken_when_the_round_ends() {
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open(&storage, &clock, 10);
    let producer = queue.producer();
    let (woken, waker) = waker();
    storage.hold_syncs();
    let mut send = pin!(producer.send_async(9));
    assert!(poll(send.as_mut(), &waker).is_pending());
    assert_eq!(woken.0.load(SeqCst), 0);
    storage.release_syncs();
    eventually(|| woken.0.load(SeqCst) >= 1);
    assert!(matches!(poll(send.as_mut(), &waker), Poll::Ready(Ok(_))));
    assert_eq!(queue.stats().ready, 1);
}

//! Review tests of the async calls on a persistent queue whose disk can
//! hold its syncs (`SimStorage::hold_syncs`): the writer's buffer fills,
//! and the calls that must wait for room do so without blocking a thread.

use crate::wal::{SimStorage, Storage};
use crate::{ManualClock, Queue, SendOptions};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

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

fn open(storage: &SimStorage) -> Queue<Vec<u8>> {
    open_with(storage, &ManualClock::new())
}

fn open_with(storage: &SimStorage, clock: &ManualClock) -> Queue<Vec<u8>> {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    Queue::builder()
        .path("sim")
        .clock(clock.clone())
        .capacity(10_000)
        .max_message_bytes(1 << 20)
        .open_on_storage(storage)
        .expect("open")
}

/// With syncs held, appends 64 KiB sends (each future polled once and
/// dropped: appended, then published) until a send's first poll waits
/// for room in the writer's buffer without appending.
fn fill_the_write_buffer(queue: &Queue<Vec<u8>>) {
    let producer = queue.producer();
    let (_, waker) = waker();
    for _ in 0..64 {
        let before = queue.stats().sent;
        {
            let mut send = pin!(producer.send_async(vec![7; 64 << 10]));
            let polled = send.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(polled.is_pending(), "syncs are held: nothing is durable");
        }
        if queue.stats().sent == before {
            return; // it waited for room: full
        }
        // Let the writer take the first round and block in its sync.
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the writer's buffer never filled");
}

#[test]
fn a_keyed_async_send_does_not_block_its_thread_behind_a_blocking_send_waiting_for_room() {
    let storage = SimStorage::new();
    let queue = open(&storage);
    storage.hold_syncs();
    fill_the_write_buffer(&queue);
    // A blocking keyed send waits for room (a thread may block).
    let blocking = {
        let producer = queue.producer();
        std::thread::spawn(move || {
            producer
                .send_with(vec![1], SendOptions::new().key("order-1"))
                .map(|sent| sent.id())
                .map_err(|e| e.to_string())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    // A task's keyed send, polled once: it may only return `Pending`.
    let (done, polled) = mpsc::channel();
    let task = {
        let producer = queue.producer();
        std::thread::spawn(move || {
            let (_, waker) = waker();
            let started = Instant::now();
            let mut send =
                pin!(producer.send_with_async(vec![2], SendOptions::new().key("order-1")));
            let first = send.as_mut().poll(&mut Context::from_waker(&waker));
            let _ = done.send((first.is_pending(), started.elapsed()));
        })
    };
    // Control: an unkeyed async send's first poll returns at once.
    {
        let producer = queue.producer();
        let (_, waker) = waker();
        let started = Instant::now();
        let mut send = pin!(producer.send_async(vec![3]));
        assert!(send
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert!(started.elapsed() < Duration::from_millis(100));
    }
    let outcome = polled.recv_timeout(Duration::from_millis(1_000));
    storage.release_syncs(); // whatever happened, let everyone go on
    blocking.join().unwrap().unwrap();
    task.join().unwrap();
    let (pending, took) =
        outcome.expect("the first poll of send_with_async blocked its thread for over 1 s");
    assert!(pending);
    assert!(took < Duration::from_millis(100), "the poll took {took:?}");
}

#[test]
fn an_async_send_waiting_for_room_is_woken_and_sends_once_the_disk_goes_on() {
    let storage = SimStorage::new();
    let queue = open(&storage);
    storage.hold_syncs();
    fill_the_write_buffer(&queue);
    let producer = queue.producer();
    let (woken, waker) = waker();
    let sent_before = queue.stats().sent;
    {
        let mut send = pin!(producer.send_async(vec![9; 16]));
        let mut cx = Context::from_waker(&waker);
        assert!(send.as_mut().poll(&mut cx).is_pending());
        assert_eq!(queue.stats().sent, sent_before, "not appended: no room");
        storage.release_syncs();
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if woken.0.load(SeqCst) > 0 {
                if let Poll::Ready(sent) = send.as_mut().poll(&mut cx) {
                    sent.unwrap();
                    break;
                }
            }
            assert!(Instant::now() < give_up, "never woken or never sent");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    queue.sync().unwrap();
    assert_eq!(queue.stats().sent, sent_before + 1);
}

#[test]
fn a_delayed_async_send_that_waited_for_room_is_delayed_from_when_it_was_sent() {
    // The send waits for room while the clock moves 60 s; its 10 s delay
    // must run from when it is enqueued (as after a wait for a slot, where
    // the time is read again), not from before the wait: else it is
    // visible at once, and its record's time is older than records
    // appended while it waited.
    let storage = SimStorage::new();
    let clock = ManualClock::new();
    let queue = open_with(&storage, &clock);
    storage.hold_syncs();
    fill_the_write_buffer(&queue);
    let producer = queue.producer();
    let (_, waker) = waker();
    let mut cx = Context::from_waker(&waker);
    let mut send =
        pin!(producer.send_with_async(vec![1], SendOptions::new().delay(Duration::from_secs(10))));
    assert!(send.as_mut().poll(&mut cx).is_pending(), "waits for room");
    clock.advance(Duration::from_secs(60));
    storage.release_syncs();
    let give_up = Instant::now() + Duration::from_secs(10);
    while send.as_mut().poll(&mut cx).is_pending() {
        assert!(Instant::now() < give_up, "never sent");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        queue.stats().delayed,
        1,
        "its delay ran while it waited for room"
    );
}

#[test]
fn sends_dropped_while_waiting_for_room_do_not_keep_their_tasks_wakers() {
    // Each send below is polled once by a task of its own (its own waker)
    // and dropped while it waits for room. A dropped wait must not keep
    // its task's waker (in tokio, the whole task's memory) until the disk
    // goes on: under a stalled disk that grows with every request.
    let storage = SimStorage::new();
    let queue = open(&storage);
    storage.hold_syncs();
    fill_the_write_buffer(&queue);
    let producer = queue.producer();
    let wakers: Vec<Arc<Counting>> = (0..1_000).map(|_| Arc::default()).collect();
    for counting in &wakers {
        let waker = Waker::from(counting.clone());
        let mut send = pin!(producer.send_async(vec![1]));
        assert!(send
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
    }
    let kept = wakers.iter().filter(|c| Arc::strong_count(c) > 1).count();
    storage.release_syncs();
    assert_eq!(kept, 0, "wakers of dropped sends still held");
}

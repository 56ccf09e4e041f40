//! Flow control: pause and resume, the in-flight cap, the receive rate
//! limit, and peek. Blocking waits are bounded by timeouts; the async
//! waits are polled by hand with a waker that records its wake-ups, so a
//! lost wake-up fails the test instead of hanging it.

use spool::{Durability, LimitError, ManualClock, OpenError, Queue, RateLimit, RecvError, Topic};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn queue() -> Queue<u32> {
    Queue::builder().capacity(64).open().unwrap()
}

#[test]
fn a_paused_queue_takes_sends_and_holds_receives_until_resumed() {
    let queue = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send(1).unwrap();
    queue.pause().unwrap();
    assert!(queue.stats().paused);
    producer.send(2).unwrap();
    assert_eq!(queue.stats().ready, 2, "sends go on");
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(
        consumer
            .recv_timeout(Duration::from_millis(20))
            .unwrap_err(),
        RecvError::Timeout
    );
    assert_eq!(
        consumer.recv_batch(10, Duration::ZERO).unwrap_err(),
        RecvError::Timeout
    );
    // A blocked receive wakes on resume.
    let waiting = thread::spawn(move || *consumer.recv_timeout(LONG).unwrap());
    queue.resume().unwrap();
    assert_eq!(waiting.join().unwrap(), 1);
    assert!(!queue.stats().paused);
}

#[test]
fn resume_wakes_a_waiting_task() {
    let queue = queue();
    queue.producer().send(7).unwrap();
    queue.pause().unwrap();
    let consumer = queue.consumer();
    let counting = Arc::new(Counting::default());
    let waker = Waker::from(Arc::clone(&counting));
    let mut cx = Context::from_waker(&waker);
    let mut receive = pin!(consumer.recv_async());
    assert!(receive.as_mut().poll(&mut cx).is_pending(), "paused");
    let woken = counting.0.load(SeqCst);
    queue.resume().unwrap();
    assert!(counting.0.load(SeqCst) > woken, "resume wakes the task");
    match receive.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(delivery)) => assert_eq!(*delivery, 7),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[test]
fn a_pause_is_kept_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Queue::<u32>::builder()
            .path(dir.path())
            .durability(Durability::Sync)
            .open()
            .unwrap()
    };
    let queue = open();
    queue.producer().send(1).unwrap();
    queue.pause().unwrap();
    drop(queue);
    let queue = open();
    assert!(queue.stats().paused, "still paused");
    assert_eq!(queue.consumer().try_recv().unwrap_err(), RecvError::Empty);
    queue.resume().unwrap();
    drop(queue);
    let queue = open();
    assert!(!queue.stats().paused);
    assert_eq!(*queue.consumer().try_recv().unwrap(), 1);
}

#[test]
fn a_topic_subscription_pauses_alone() {
    let topic = Topic::<u32>::new();
    let fast = topic.subscribe("fast", Queue::builder()).unwrap();
    let slow = topic.subscribe("slow", Queue::builder()).unwrap();
    slow.pause().unwrap();
    topic.publish(5).unwrap();
    assert_eq!(*fast.consumer().try_recv().unwrap(), 5);
    assert_eq!(slow.consumer().try_recv().unwrap_err(), RecvError::Empty);
    assert!(topic.subscription("slow").unwrap().stats().paused);
    slow.resume().unwrap();
    assert_eq!(*slow.consumer().try_recv().unwrap(), 5);
}

#[test]
fn max_in_flight_caps_leases_across_consumers_and_an_ack_frees_one() {
    let queue = Queue::<u32>::builder().max_in_flight(2).open().unwrap();
    let producer = queue.producer();
    for i in 0..10 {
        producer.send(i).unwrap();
    }
    let (a, b) = (queue.consumer(), queue.consumer());
    let first = a.try_recv().unwrap();
    let _second = b.try_recv().unwrap();
    assert_eq!(a.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(
        b.recv_batch(10, Duration::ZERO).unwrap_err(),
        RecvError::Timeout
    );
    // A blocked receive wakes when a message leaves flight.
    let waiting = thread::spawn(move || b.recv_timeout(LONG).unwrap());
    first.ack().unwrap();
    let third = waiting.join().unwrap();
    assert_eq!(*third, 2);
    assert_eq!(queue.stats().in_flight, 2);
    // Raised on the open queue: a batch takes at most what is left.
    queue.set_max_in_flight(Some(5)).unwrap();
    assert_eq!(queue.max_in_flight(), Some(5));
    let batch = a.recv_batch(10, Duration::ZERO).unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(a.try_recv().unwrap_err(), RecvError::Empty);
    queue.set_max_in_flight(None).unwrap();
    assert_eq!(a.recv_batch(10, Duration::ZERO).unwrap().len(), 4);
}

#[test]
fn a_zero_cap_is_a_typed_error() {
    assert_eq!(
        Queue::<u32>::builder().max_in_flight(0).open().unwrap_err(),
        OpenError::ZeroMaxInFlight
    );
    let queue = Queue::<u32>::builder()
        .max_in_flight(usize::MAX)
        .open()
        .unwrap();
    assert_eq!(
        queue.set_max_in_flight(Some(0)),
        Err(LimitError::ZeroMaxInFlight)
    );
    queue.producer().send(1).unwrap();
    assert_eq!(
        *queue.consumer().try_recv().unwrap(),
        1,
        "usize::MAX is no cap"
    );
}

#[test]
fn the_rate_limit_lets_n_through_per_period_on_the_queue_clock() {
    let clock = ManualClock::new();
    let limit = RateLimit::new(2, Duration::from_secs(1)).unwrap();
    let queue = Queue::<u32>::builder()
        .clock(clock.clone())
        .rate_limit(limit)
        .open()
        .unwrap();
    let producer = queue.producer();
    for i in 0..6 {
        producer.send(i).unwrap();
    }
    let consumer = queue.consumer();
    let burst = consumer.recv_batch(10, Duration::ZERO).unwrap();
    assert_eq!(burst.len(), 2, "a burst of n");
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(Duration::from_millis(499));
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(Duration::from_millis(1));
    let _third = consumer.try_recv().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    // A blocked receive wakes when the clock brings the next token.
    let waiting = {
        let consumer = queue.consumer();
        thread::spawn(move || consumer.recv_timeout(LONG).unwrap())
    };
    clock.advance(Duration::from_millis(500));
    let fourth = waiting.join().unwrap();
    assert_eq!(*fourth, 3);
    // Adjusted on the open queue: a new limit starts full.
    queue
        .set_rate_limit(Some(RateLimit::new(10, Duration::from_secs(1)).unwrap()))
        .unwrap();
    assert_eq!(queue.rate_limit().map(|l| l.n()), Some(10));
    assert_eq!(consumer.recv_batch(10, Duration::ZERO).unwrap().len(), 2);
    queue.set_rate_limit(None).unwrap();
    assert_eq!(queue.rate_limit(), None);
}

#[test]
fn a_rate_limited_receive_wakes_by_itself_for_the_next_token() {
    // The system clock, and nobody else acting: the waiting receive must
    // wake at the token's time on its own.
    let limit = RateLimit::new(1, Duration::from_millis(200)).unwrap();
    let queue = Queue::<u32>::builder().rate_limit(limit).open().unwrap();
    queue.producer().send(1).unwrap();
    queue.producer().send(2).unwrap();
    let consumer = queue.consumer();
    let _first = consumer.try_recv().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(*consumer.recv_timeout(LONG).unwrap(), 2);
}

#[test]
fn a_rate_limited_task_wakes_for_the_next_token() {
    let clock = ManualClock::new();
    let queue = Queue::<u32>::builder()
        .clock(clock.clone())
        .rate_limit(RateLimit::new(1, Duration::from_secs(1)).unwrap())
        .open()
        .unwrap();
    queue.producer().send(1).unwrap();
    queue.producer().send(2).unwrap();
    let consumer = queue.consumer();
    let _first = consumer.try_recv().unwrap();
    let counting = Arc::new(Counting::default());
    let waker = Waker::from(Arc::clone(&counting));
    let mut cx = Context::from_waker(&waker);
    let mut receive = pin!(consumer.recv_async());
    assert!(receive.as_mut().poll(&mut cx).is_pending());
    let woken = counting.0.load(SeqCst);
    clock.advance(Duration::from_secs(1));
    assert!(counting.0.load(SeqCst) > woken, "the clock's jump wakes it");
    match receive.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(delivery)) => assert_eq!(*delivery, 2),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[test]
fn peek_shows_the_next_ready_messages_and_leases_nothing() {
    let clock = ManualClock::new();
    let queue = Queue::<String>::builder()
        .clock(clock.clone())
        .open()
        .unwrap();
    let producer = queue.producer();
    assert!(queue.peek(3).is_empty());
    for word in ["a", "b", "c"] {
        producer.send(word.to_owned()).unwrap();
    }
    producer
        .send_batch(vec!["d".to_owned(), "e".to_owned()])
        .unwrap();
    let words = |peeked: Vec<spool::Peeked<String>>| -> Vec<String> {
        peeked.into_iter().map(|p| p.message).collect()
    };
    assert_eq!(words(queue.peek(2)), ["a", "b"]);
    assert_eq!(words(queue.peek(usize::MAX)), ["a", "b", "c", "d", "e"]);
    assert_eq!(queue.stats().ready, 5);
    assert_eq!(queue.stats().in_flight, 0);
    let consumer = queue.consumer();
    let a = consumer.try_recv().unwrap();
    assert_eq!(*a, "a", "peek changed nothing");
    a.nack().unwrap();
    let peeked = queue.peek(10);
    let retried = peeked.iter().find(|p| p.message == "a");
    // The default backoff delays a nacked message: not ready, not shown.
    assert!(retried.is_none() || retried.unwrap().receive_count == 1);
    assert_eq!(words(queue.peek(1)), ["b"]);
    assert_eq!(queue.peek(0), Vec::new());
}

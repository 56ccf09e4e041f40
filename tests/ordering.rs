//! Priorities and message groups: receive order, the starvation rule,
//! one message of a group at a time across retries, lease expiry,
//! dead-lettering, redrive, cancel and times to live, and restarts. Time
//! is a manual clock; nothing sleeps.

mod common;

use common::{manual, SEC};
use spool::{
    Backoff, Consumer, DeadLetterReason, Durability, ManualClock, Priority, PriorityError, Queue,
    RecvError, SendError, SendOptions, FAIR_SHARE, MAX_GROUP_BYTES,
};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn queue() -> (ManualClock, Queue<u32>) {
    let (clock, builder) = manual();
    let queue = builder
        .visibility_timeout(LEASE)
        .max_receives(3)
        .open()
        .unwrap();
    (clock, queue)
}

fn grouped(group: &str) -> SendOptions {
    SendOptions::new().group(group)
}

fn prio(priority: Priority) -> SendOptions {
    SendOptions::new().priority(priority)
}

/// Takes whatever can be taken now, acking each at once.
fn drain(consumer: &Consumer<u32>) -> Vec<u32> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        match consumer.try_recv() {
            Ok(delivery) => {
                seen.push(*delivery);
                delivery.ack().unwrap();
            }
            Err(RecvError::Empty) => return seen,
            Err(other) => panic!("{other:?}"),
        }
    }
    panic!("more than 10,000 messages")
}

#[test]
fn a_receive_takes_the_highest_level_first() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send(1).unwrap();
    producer.send_with(2, prio(Priority::Low)).unwrap();
    producer.send_with(3, prio(Priority::High)).unwrap();
    producer.send_with(4, prio(Priority::Normal)).unwrap();
    producer.send_with(5, prio(Priority::High)).unwrap();
    assert_eq!(queue.stats().ready, 5);
    assert_eq!(
        queue.peek(10).iter().map(|p| p.message).collect::<Vec<_>>(),
        [3, 5, 1, 4, 2],
        "peek shows the receive order"
    );
    assert_eq!(drain(&consumer), [3, 5, 1, 4, 2]);
    assert_eq!(queue.stats().ready, 0);
}

#[test]
fn a_lower_level_gets_one_receive_in_every_fair_share_while_it_waits() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    for low in 0..3 {
        producer.send_with(1000 + low, prio(Priority::Low)).unwrap();
    }
    // A steady stream of high messages: the lows still get their share.
    let mut seen = Vec::new();
    for high in 0..40 {
        producer.send_with(high, prio(Priority::High)).unwrap();
        let delivery = consumer.try_recv().unwrap();
        seen.push(*delivery);
        delivery.ack().unwrap();
    }
    let lows: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] >= 1000).collect();
    let share = FAIR_SHARE as usize;
    assert_eq!(lows, [share - 1, 2 * share - 1, 3 * share - 1], "{seen:?}");
    assert_eq!(
        lows.iter().map(|&i| seen[i]).collect::<Vec<_>>(),
        [1000, 1001, 1002],
        "in their order"
    );
}

#[test]
fn a_batch_takes_by_priority_and_one_message_per_group() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send_with(1, prio(Priority::Low)).unwrap();
    producer.send_with(2, grouped("a")).unwrap();
    producer.send_with(3, grouped("a")).unwrap();
    producer.send_with(4, grouped("b")).unwrap();
    producer
        .send_with(5, grouped("b").priority(Priority::High))
        .unwrap();
    producer.send(6).unwrap();
    let batch = consumer.recv_batch(10, Duration::ZERO).unwrap();
    // b's first message is normal: b is held at 4 and 5 waits behind it.
    assert_eq!(batch.iter().copied().collect::<Vec<_>>(), [2, 4, 6, 1]);
    batch.ack().unwrap();
    let batch = consumer.recv_batch(10, Duration::ZERO).unwrap();
    assert_eq!(batch.iter().copied().collect::<Vec<_>>(), [5, 3]);
    batch.ack().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn a_group_has_one_message_in_flight_and_keeps_send_order_across_retries() {
    let (clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    for body in [1, 2, 3] {
        producer.send_with(body, grouped("customer-1")).unwrap();
    }
    producer.send_with(10, grouped("customer-2")).unwrap();
    producer.send(100).unwrap();

    let first = consumer.try_recv().unwrap();
    assert_eq!(*first, 1);
    // The other customer and the plain message go on; 2 waits for 1.
    let other = consumer.try_recv().unwrap();
    assert_eq!(*other, 10);
    let plain = consumer.try_recv().unwrap();
    assert_eq!(*plain, 100);
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(queue.stats().ready, 2, "held back, still ready");

    // A nack with a backoff: 1 holds its group until it is due again.
    first.retry_after(5 * SEC).unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    clock.advance(5 * SEC);
    let again = consumer.try_recv().unwrap();
    assert_eq!((*again, again.receive_count()), (1, 2));

    // A lease that runs out: 1 comes back, and nothing else of the group.
    other.ack().unwrap();
    plain.ack().unwrap();
    clock.advance(LEASE + SEC);
    let third = consumer.try_recv().unwrap();
    assert_eq!((*third, third.receive_count()), (1, 3));
    drop(again); // its lease ran out: it settles nothing
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);

    // Its last receive fails: dead-lettered, and the group moves on.
    third.fail("boom").unwrap();
    assert_eq!(queue.dead_letters().len(), 1);
    assert_eq!(drain(&consumer), [2, 3]);
    assert_eq!(queue.stats().ready, 0);
}

#[test]
fn a_redriven_message_rejoins_its_group_by_send_order() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    let first = producer.send_with(1, grouped("g")).unwrap().id();
    for body in [2, 3] {
        producer.send_with(body, grouped("g")).unwrap();
    }
    consumer
        .try_recv()
        .unwrap()
        .dead_letter("bad input")
        .unwrap();
    let second = consumer.try_recv().unwrap();
    assert_eq!(*second, 2);
    queue.dead_letters().redrive(first).unwrap();
    // 2 is out: the redriven 1 waits for it, then goes before 3.
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    second.ack().unwrap();
    assert_eq!(drain(&consumer), [1, 3]);
}

#[test]
fn cancel_and_times_to_live_take_a_message_out_of_its_group() {
    let (clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send_with(1, grouped("g").ttl(10 * SEC)).unwrap();
    let held = producer.send_with(2, grouped("g")).unwrap().id();
    producer.send_with(3, grouped("g")).unwrap();
    // A message held back by its group can be cancelled.
    assert!(queue.cancel(held).is_ok());
    // 1 expires unreceived: the group moves on to 3.
    clock.advance(10 * SEC);
    let dead = queue.dead_letters().list();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason(), &DeadLetterReason::Expired);
    let current = consumer.try_recv().unwrap();
    assert_eq!(*current, 3);
    // Cancelling the current message's group peers is fine; the current
    // message itself is in flight and cannot be cancelled.
    assert!(queue.cancel(current.id()).is_err());
    current.ack().unwrap();
    assert_eq!(queue.stats().ready, 0);
}

#[test]
fn a_delayed_send_holds_the_messages_sent_after_it_in_its_group() {
    let (clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send_with(1, grouped("g").delay(5 * SEC)).unwrap();
    producer.send_with(2, grouped("g")).unwrap();
    producer.send_with(3, grouped("h")).unwrap();
    assert_eq!(drain(&consumer), [3]);
    clock.advance(5 * SEC);
    assert_eq!(drain(&consumer), [1, 2]);
}

#[test]
fn bad_input_is_a_typed_error() {
    let (_clock, queue) = queue();
    let long = "g".repeat(MAX_GROUP_BYTES + 1);
    match queue
        .producer()
        .send_with(7, SendOptions::new().group(long))
    {
        Err(SendError::GroupTooLong { message, len, max }) => {
            assert_eq!(
                (message, len, max),
                (7, MAX_GROUP_BYTES + 1, MAX_GROUP_BYTES)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(queue.stats().ready, 0);
    let exact = "g".repeat(MAX_GROUP_BYTES);
    assert!(queue
        .producer()
        .send_with(8, SendOptions::new().group(exact))
        .is_ok());
    assert_eq!(
        Priority::from_level(3),
        Err(PriorityError::OutOfRange { level: 3, max: 2 })
    );
    assert_eq!(Priority::try_from(1), Ok(Priority::Normal));
}

#[test]
fn a_paused_ordered_queue_holds_every_level_and_group() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send_with(1, prio(Priority::High)).unwrap();
    producer.send_with(2, grouped("g")).unwrap();
    queue.pause().unwrap();
    assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
    queue.resume().unwrap();
    assert_eq!(drain(&consumer), [1, 2]);
}

/// What a crash of `queue` would leave in `dir` now: a copy of the
/// directory once everything recorded has reached the disk.
fn crash_image(queue: &Queue<u32>, dir: &std::path::Path) -> tempfile::TempDir {
    queue.sync().unwrap();
    let image = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, image.path().join(path.file_name().unwrap())).unwrap();
    }
    image
}

fn open_at(dir: &std::path::Path, clock: &ManualClock) -> Queue<u32> {
    Queue::<u32>::builder()
        .path(dir)
        .durability(Durability::Sync)
        .clock(clock.clone())
        .backoff(Backoff::None)
        .visibility_timeout(LEASE)
        .open()
        .unwrap()
}

#[test]
fn priorities_and_groups_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let queue = open_at(dir.path(), &clock);
    let producer = queue.producer();
    producer.send(1).unwrap();
    producer.send_with(2, prio(Priority::Low)).unwrap();
    for body in [10, 11, 12] {
        producer.send_with(body, grouped("g")).unwrap();
    }
    producer
        .send_with(3, prio(Priority::High).group("h"))
        .unwrap();
    let consumer = queue.consumer();
    // 3 is in flight at the crash; 10 failed once and is in flight again.
    let three = consumer.try_recv().unwrap();
    assert_eq!(*three, 3);
    // Normal: the plain lane and the group merge by id.
    let one = consumer.try_recv().unwrap();
    assert_eq!(*one, 1);
    one.ack().unwrap();
    let ten = consumer.try_recv().unwrap();
    assert_eq!(*ten, 10);
    ten.nack().unwrap();
    let ten = consumer.try_recv().unwrap();
    assert_eq!((*ten, ten.receive_count()), (10, 2));
    let image = crash_image(&queue, dir.path());

    let reopened = open_at(image.path(), &clock);
    assert_eq!(reopened.stats().ready, 5);
    let consumer = reopened.consumer();
    let mut seen = Vec::new();
    let mut current = None;
    for _ in 0..10 {
        match consumer.try_recv() {
            Ok(delivery) if *delivery == 10 => {
                seen.push((10, delivery.receive_count()));
                current = Some(delivery); // holds its group
            }
            Ok(delivery) => {
                seen.push((*delivery, delivery.receive_count()));
                delivery.ack().unwrap();
            }
            Err(RecvError::Empty) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    // High first (3, back with its count), then the group, held at 10,
    // then low.
    assert_eq!(seen, [(3, 2), (10, 3), (2, 1)]);
    current.unwrap().ack().unwrap();
    assert_eq!(drain(&consumer), [11, 12]);
    drop((three, ten));
}

#[test]
fn compaction_keeps_priorities_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let queue = open_at(dir.path(), &clock);
    let producer = queue.producer();
    producer
        .send_with(1, grouped("g").priority(Priority::Low).max_receives(9))
        .unwrap();
    producer.send_with(2, grouped("g")).unwrap();
    producer.send_with(3, prio(Priority::High)).unwrap();
    producer.send(4).unwrap();
    queue.compact().unwrap();
    drop(producer);
    drop(queue);

    let queue = open_at(dir.path(), &clock);
    let consumer = queue.consumer();
    // 3 high; 4 normal; the group's first is low, and holds 2 behind it.
    assert_eq!(drain(&consumer), [3, 4, 1, 2]);
}

#[test]
fn async_receives_follow_the_same_order() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    producer.send_with(1, grouped("g")).unwrap();
    producer.send_with(2, grouped("g")).unwrap();
    producer.send_with(3, prio(Priority::High)).unwrap();
    futures::executor::block_on(async {
        let high = consumer.recv_async().await.unwrap();
        assert_eq!(*high, 3);
        let first = consumer.recv_async().await.unwrap();
        assert_eq!(*first, 1);
        // 2 waits for 1: a batch finds nothing more.
        let none = consumer.recv_batch_async(5, Duration::ZERO).await;
        assert!(none.is_err(), "{:?}", none.map(|b| b.len()));
        first.ack_async().await.unwrap();
        assert_eq!(*consumer.recv_async().await.unwrap(), 2);
        high.ack_async().await.unwrap();
    });
}

#[test]
fn a_topic_publish_keeps_the_group_in_every_subscription() {
    let topic: spool::Topic<u32> = spool::Topic::new();
    let a = topic.subscribe("a", Queue::builder()).unwrap();
    let b = topic.subscribe("b", Queue::builder()).unwrap();
    for body in [1, 2] {
        topic.publish_with(body, grouped("g")).unwrap();
    }
    for queue in [a, b] {
        let consumer = queue.consumer();
        let first = consumer.try_recv().unwrap();
        assert_eq!(*first, 1);
        assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Empty);
        first.ack().unwrap();
        assert_eq!(*consumer.try_recv().unwrap(), 2);
    }
}

#[test]
fn a_batch_counts_each_message_toward_the_fair_share() {
    let (_clock, queue) = queue();
    let (producer, consumer) = (queue.producer(), queue.consumer());
    for low in 0..2 {
        producer.send_with(1000 + low, prio(Priority::Low)).unwrap();
    }
    for high in 0..20 {
        producer.send_with(high, prio(Priority::High)).unwrap();
    }
    let share = FAIR_SHARE as usize;
    let batch = consumer.recv_batch(2 * share, Duration::ZERO).unwrap();
    let got: Vec<u32> = batch.iter().copied().collect();
    let lows: Vec<usize> = (0..got.len()).filter(|&i| got[i] >= 1000).collect();
    assert_eq!(lows, [share - 1, 2 * share - 1], "{got:?}");
    batch.ack().unwrap();
}

//! Fan-out: every published message reaches every subscription, each of
//! which retries, dead-letters and fills up on its own.

use spool::{
    Backoff, Consumer, DeadLetterReason, PublishError, Queue, Refusal, SendOptions, Sent,
    SubscribeError, Topic,
};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// How long to wait for another thread; only a bug makes a test wait this long.
const WAIT: Duration = Duration::from_secs(10);
/// How long to watch a thread that must stay blocked.
const STILL_BLOCKED: Duration = Duration::from_millis(100);

/// Runs `work` on a new thread; its result arrives on the returned channel.
fn in_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || drop(tx.send(work())));
    rx
}

/// Receives and acks every message ready now, in the order received.
fn ack_all_ready(consumer: &Consumer<u32>) -> Vec<u32> {
    let mut payloads = Vec::new();
    while let Ok(delivery) = consumer.try_recv() {
        payloads.push(*delivery);
        delivery.ack().unwrap();
    }
    payloads
}

fn topic_with(names: &[&str]) -> (Topic<u32>, Vec<Queue<u32>>) {
    let topic = Topic::new();
    let queues = names
        .iter()
        .map(|name| topic.subscribe(name, Queue::builder()).unwrap())
        .collect();
    (topic, queues)
}

#[test]
fn every_message_reaches_every_subscription_once() {
    let (topic, queues) = topic_with(&["transcode", "thumbnail", "moderation", "index"]);
    for n in 0..100 {
        let published = topic.publish(n).unwrap();
        assert_eq!(published.len(), 4);
        assert!(published.iter().all(|(_, sent)| !sent.is_duplicate()));
    }
    for queue in &queues {
        assert_eq!(
            ack_all_ready(&queue.consumer()),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(queue.stats().sent, 100);
    }
}

#[test]
fn concurrent_publishers_deliver_exactly_once_per_subscription() {
    let (topic, queues) = topic_with(&["a", "b", "c"]);
    let publishers: Vec<_> = (0..2u32)
        .map(|p| {
            let topic = topic.clone();
            thread::spawn(move || (0..500).for_each(|n| drop(topic.publish(p * 1000 + n).unwrap())))
        })
        .collect();
    publishers.into_iter().for_each(|p| p.join().unwrap());
    for queue in &queues {
        let mut got = ack_all_ready(&queue.consumer());
        got.sort_unstable();
        let want: Vec<u32> = (0..500).chain(1000..1500).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn a_failing_subscription_retries_and_dead_letters_alone() {
    let topic: Topic<u32> = Topic::new();
    let healthy = topic.subscribe("healthy", Queue::builder()).unwrap();
    let failing = topic
        .subscribe(
            "failing",
            Queue::builder().max_receives(2).backoff(Backoff::None),
        )
        .unwrap();
    for n in 0..5 {
        topic.publish(n).unwrap();
    }
    let consumer = failing.consumer();
    while let Ok(delivery) = consumer.try_recv() {
        let text = format!("cannot handle {}", *delivery);
        delivery.fail(text).unwrap();
    }
    assert_eq!(failing.dead_letters().len(), 5);
    let letter = &failing.dead_letters().list()[0];
    assert_eq!(letter.reason(), &DeadLetterReason::MaxReceives(2));
    assert_eq!(letter.errors(), ["cannot handle 0", "cannot handle 0"]);

    assert_eq!(ack_all_ready(&healthy.consumer()), [0, 1, 2, 3, 4]);
    let stats = healthy.stats();
    assert_eq!((stats.acked, stats.nacked, stats.dead_letters), (5, 0, 0));
}

#[test]
fn a_stuck_subscription_does_not_delay_the_others() {
    let topic: Topic<u32> = Topic::new();
    let _stuck = topic.subscribe("stuck", Queue::builder()).unwrap(); // never read
    let live = topic.subscribe("live", Queue::builder()).unwrap();
    let consumer = live.consumer();
    let reader = in_thread(move || {
        (0..50)
            .map(|_| {
                let delivery = consumer.recv_timeout(WAIT).unwrap();
                let n = *delivery;
                delivery.ack().unwrap();
                n
            })
            .collect::<Vec<_>>()
    });
    for n in 0..50 {
        topic.publish(n).unwrap();
    }
    assert_eq!(
        reader.recv_timeout(WAIT).unwrap(),
        (0..50).collect::<Vec<_>>()
    );
}

#[test]
fn a_late_subscription_gets_only_later_messages() {
    let (topic, early) = topic_with(&["early"]);
    topic.publish(1).unwrap();
    let late = topic.subscribe("late", Queue::builder()).unwrap();
    topic.publish(2).unwrap();
    assert_eq!(ack_all_ready(&early[0].consumer()), [1, 2]);
    assert_eq!(ack_all_ready(&late.consumer()), [2]);
    assert_eq!(topic.subscriptions(), ["early", "late"]);
}

#[test]
fn a_repeated_key_is_a_duplicate_in_every_subscription() {
    let (topic, queues) = topic_with(&["a", "b"]);
    let key = || SendOptions::new().key("video-42");
    let first = topic.publish_with(42, key()).unwrap();
    let again = topic.publish_with(42, key()).unwrap();
    assert!(!first.is_duplicate());
    assert!(again.is_duplicate());
    for (name, queue) in ["a", "b"].iter().zip(&queues) {
        assert_eq!(
            again.get(name),
            Some(Sent::Duplicate(first.get(name).unwrap().id()))
        );
        assert_eq!((queue.stats().ready, queue.stats().duplicates), (1, 1));
    }
    // Another payload under the key is refused everywhere, and given back.
    match topic.publish_with(7, key()) {
        Err(PublishError::Refused {
            message,
            published,
            refused,
        }) => {
            assert_eq!(message, 7);
            assert!(published.is_empty());
            assert_eq!(refused.len(), 2);
            assert!(refused
                .iter()
                .all(|r| matches!(r.reason, Refusal::KeyConflict { .. })));
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
}

#[test]
fn publish_blocks_until_a_full_subscription_has_room_and_the_others_have_it_at_once() {
    let topic: Topic<u32> = Topic::new();
    let full = topic
        .subscribe("full", Queue::builder().capacity(1))
        .unwrap();
    let roomy = topic.subscribe("roomy", Queue::builder()).unwrap();
    topic.publish(1).unwrap();

    let publisher = topic.clone();
    let blocked = in_thread(move || publisher.publish(2));
    assert!(matches!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    ));
    // Meanwhile the subscription with room already has message 2.
    assert_eq!(ack_all_ready(&roomy.consumer()), [1, 2]);

    full.consumer().try_recv().unwrap().ack().unwrap();
    let published = blocked.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(published.len(), 2);
    assert_eq!(ack_all_ready(&full.consumer()), [2]);
}

#[test]
fn try_publish_delivers_where_there_is_room_and_names_the_full_ones() {
    let topic: Topic<u32> = Topic::new();
    let a = topic.subscribe("a", Queue::builder()).unwrap();
    let full = topic
        .subscribe("full", Queue::builder().capacity(1))
        .unwrap();
    let c = topic.subscribe("c", Queue::builder()).unwrap();
    topic.try_publish(1).unwrap();

    let key = || SendOptions::new().key("upload-2");
    let err = topic.try_publish_with(2, key()).unwrap_err();
    assert_eq!(err.to_string(), "not published to full (full)");
    let PublishError::Refused {
        message,
        published,
        refused,
    } = err
    else {
        panic!("expected Refused");
    };
    assert_eq!(message, 2, "the message is given back");
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].subscription.as_str(), &refused[0].reason),
        ("full", &Refusal::Full)
    );
    let names: Vec<&str> = published.iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["a", "c"]);

    // Retrying with the key before there is room changes nothing...
    assert!(topic.try_publish_with(2, key()).is_err());
    // ...and after, completes the publish without duplicates.
    full.consumer().try_recv().unwrap().ack().unwrap();
    let retry = topic.try_publish_with(2, key()).unwrap();
    assert!(retry.get("a").unwrap().is_duplicate());
    assert!(!retry.get("full").unwrap().is_duplicate());
    assert!(retry.get("c").unwrap().is_duplicate());
    for queue in [&a, &c] {
        assert_eq!(ack_all_ready(&queue.consumer()), [1, 2]);
    }
    assert_eq!(ack_all_ready(&full.consumer()), [2]);
}

#[test]
fn subscription_names_are_checked() {
    let (topic, _queues) = topic_with(&["thumbnail"]);
    assert_eq!(
        topic.subscribe("thumbnail", Queue::builder()).unwrap_err(),
        SubscribeError::Duplicate("thumbnail".into())
    );
    for bad in ["", "..", "Thumb", "a/b", "nul", &"x".repeat(65)] {
        let err = topic.subscribe(bad, Queue::builder()).unwrap_err();
        assert!(
            matches!(err, SubscribeError::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
    }
    let err = topic
        .subscribe("zero", Queue::builder().capacity(0))
        .unwrap_err();
    assert!(matches!(err, SubscribeError::Open(_)));
    assert_eq!(topic.subscriptions(), ["thumbnail"]);
}

#[test]
fn close_closes_every_subscription_and_wakes_blocked_publishers() {
    let (topic, queues) = topic_with(&["a"]);
    let full = topic
        .subscribe("full", Queue::builder().capacity(1))
        .unwrap();
    topic.publish(1).unwrap();
    let publisher = topic.clone();
    let blocked = in_thread(move || publisher.publish(2));
    assert!(matches!(
        blocked.recv_timeout(STILL_BLOCKED),
        Err(RecvTimeoutError::Timeout)
    ));
    topic.close();
    match blocked.recv_timeout(WAIT).unwrap() {
        Err(PublishError::Refused {
            refused, published, ..
        }) => {
            assert_eq!(refused[0].reason, Refusal::Closed);
            assert_eq!(published.len(), 1, "`a` had room and took it");
        }
        other => panic!("expected Refused(Closed), got {other:?}"),
    }
    assert!(matches!(topic.publish(3), Err(PublishError::Closed(3))));
    assert!(matches!(
        topic.subscribe("b", Queue::builder()),
        Err(SubscribeError::Closed)
    ));
    assert!(queues[0].is_closed() && full.is_closed());
    // Consumers drain, then see Closed.
    assert_eq!(ack_all_ready(&queues[0].consumer()), [1, 2]);
    assert!(queues[0].consumer().recv_timeout(WAIT).is_err());
}

#[test]
fn unsubscribe_stops_the_fan_out_but_keeps_the_queue() {
    let (topic, _queues) = topic_with(&["a", "b"]);
    topic.publish(1).unwrap();
    let b = topic.unsubscribe("b").unwrap();
    topic.publish(2).unwrap();
    assert_eq!(topic.subscriptions(), ["a"]);
    assert!(topic.unsubscribe("b").is_none());
    assert_eq!(ack_all_ready(&b.consumer()), [1]);
    assert_eq!(
        ack_all_ready(&topic.subscription("a").unwrap().consumer()),
        [1, 2]
    );
}

#[test]
fn a_topic_without_subscriptions_accepts_and_reports_nobody() {
    let topic: Topic<u32> = Topic::new();
    let published = topic.publish(1).unwrap();
    assert!(published.is_empty() && !published.is_duplicate());
}

#[test]
fn a_persistent_topic_keeps_each_subscriptions_state_across_a_reopen() {
    let dir = std::env::temp_dir().join(format!("spool-topic-reopen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let topic: Topic<u32> = Topic::with_path(&dir);
        let mailer = topic.subscribe("mailer", Queue::builder()).unwrap();
        let audit = topic.subscribe("audit", Queue::builder()).unwrap();
        for n in 1..=3 {
            topic
                .publish_with(n, SendOptions::new().key(format!("n{n}")))
                .unwrap();
        }
        // The mailer handles one message; the audit log none yet.
        let first = mailer.consumer().try_recv().unwrap();
        assert_eq!(*first, 1);
        first.ack().unwrap();
        drop(audit);
    }
    assert!(dir.join("mailer").is_dir() && dir.join("audit").is_dir());

    let topic: Topic<u32> = Topic::with_path(&dir);
    let mailer = topic.subscribe("mailer", Queue::builder()).unwrap();
    let audit = topic.subscribe("audit", Queue::builder()).unwrap();
    assert_eq!(ack_all_ready(&mailer.consumer()), [2, 3]);
    assert_eq!(ack_all_ready(&audit.consumer()), [1, 2, 3]);
    // The idempotency keys survived too: a retried publish is a duplicate.
    let again = topic.publish_with(2, SendOptions::new().key("n2")).unwrap();
    assert!(again.is_duplicate());
    drop((mailer, audit, topic));
    std::fs::remove_dir_all(&dir).unwrap();
}

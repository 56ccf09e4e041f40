//! Queue names: given, or taken from the directory or the subscription,
//! and carried by every event.

mod common;

use common::{manual, SEC};
use spool::{Event, Queue, Topic, UNNAMED};
use std::sync::{Arc, Mutex};

/// A hook that keeps each event's queue name and kind.
fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&Event) + Send + Sync) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let hook = move |event: &Event| {
        let kind = match event {
            Event::DeadLettered { .. } => "dead-lettered",
            Event::LeaseExpired { .. } => "lease-expired",
            Event::Redriven { .. } => "redriven",
            _ => "other",
        };
        log.lock()
            .unwrap()
            .push(format!("{}:{kind}", event.queue()));
    };
    (seen, hook)
}

#[test]
fn every_event_carries_the_name_the_builder_gave() {
    let (clock, builder) = manual();
    let (seen, hook) = recorder();
    let queue = builder
        .name("thumbnails")
        .visibility_timeout(SEC)
        .max_receives(5)
        .on_event(hook)
        .open()
        .unwrap();
    assert_eq!(queue.name(), "thumbnails");
    queue.producer().send(1).unwrap();
    let delivery = queue.consumer().try_recv().unwrap();
    clock.advance(2 * SEC);
    assert!(matches!(
        delivery.ack(),
        Err(spool::SettleError::LeaseExpired { .. })
    ));
    queue
        .consumer()
        .try_recv()
        .unwrap()
        .dead_letter("bad")
        .unwrap();
    let id = queue.dead_letters().list()[0].id();
    queue.dead_letters().redrive(id).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "thumbnails:lease-expired",
            "thumbnails:dead-lettered",
            "thumbnails:redriven"
        ]
    );
}

#[test]
fn an_in_memory_queue_without_a_name_is_unnamed() {
    let queue: Queue<u32> = Queue::builder().open().unwrap();
    assert_eq!(queue.name(), UNNAMED);
}

#[test]
fn a_persistent_queue_is_named_after_its_directory_unless_named() {
    let dir = tempfile::tempdir().unwrap();
    let queue: Queue<u32> = Queue::builder()
        .path(dir.path().join("uploads"))
        .open()
        .unwrap();
    assert_eq!(queue.name(), "uploads");
    drop(queue);
    let queue: Queue<u32> = Queue::builder()
        .path(dir.path().join("uploads"))
        .name("videos")
        .open()
        .unwrap();
    assert_eq!(queue.name(), "videos");
}

#[test]
fn a_subscription_is_named_after_itself_unless_its_builder_names_it() {
    let topic: Topic<u32> = Topic::new();
    let (seen, hook) = recorder();
    let mailer = topic
        .subscribe("mailer", Queue::builder().on_event(hook))
        .unwrap();
    let audit = topic
        .subscribe("audit", Queue::builder().name("audit-log"))
        .unwrap();
    assert_eq!((mailer.name(), audit.name()), ("mailer", "audit-log"));
    topic.publish(7).unwrap();
    mailer
        .consumer()
        .try_recv()
        .unwrap()
        .dead_letter("no")
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), ["mailer:dead-lettered"]);
}

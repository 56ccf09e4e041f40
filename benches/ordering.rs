//! Priorities and message groups, when used: 20,000 64-byte messages
//! send → recv → ack, one producer and four consumer threads (2 cores),
//! in memory. Each group has the plain queue as its baseline, in the same
//! run:
//!
//! - `groups_1p4c_64B`: `plain` sends no option; `groups_1000` sends each
//!   message in one of 1,000 groups (round robin, so 20 per group);
//!   `plain_on_ordered_queue` sends plain messages after one at high
//!   priority, which turns the ordered receive path on: what a plain
//!   message pays on a queue that uses ordering.
//! - `priorities_1p4c_64B`: `plain` again; `levels_3` sends each message
//!   at one of three priorities (round robin).
//!
//! What limits the ordered rows: every receive takes the controls' lock
//! and the order's lock (one for all consumers), and a grouped message
//! costs a hash-map lookup of its group at send, receive and ack.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spool::{Priority, Queue, SendOptions};
use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 20_000;
const CONSUMERS: u64 = 4;
const CAPACITY: usize = 1_024;
type Payload = [u64; 8];

/// How each message is sent.
#[derive(Clone, Copy)]
enum Sending {
    Plain,
    /// Plain messages on a queue that has seen one ordered message.
    PlainOrdered,
    Groups(u64),
    Levels,
}

fn round(sending: Sending, groups: &[Arc<str>]) -> Duration {
    let queue: Queue<Payload> = Queue::builder().capacity(CAPACITY).open().unwrap();
    let mut extra = 0;
    if let Sending::PlainOrdered = sending {
        let high = SendOptions::new().priority(Priority::High);
        queue.producer().send_with([0; 8], high).unwrap();
        extra = 1;
    }
    let start = Instant::now();
    thread::scope(|s| {
        let producer = queue.producer();
        s.spawn(move || {
            for i in 0..MESSAGES {
                let options = match sending {
                    Sending::Plain | Sending::PlainOrdered => {
                        producer.send([i; 8]).unwrap();
                        continue;
                    }
                    Sending::Groups(n) => {
                        SendOptions::new().group(Arc::clone(&groups[(i % n) as usize]))
                    }
                    Sending::Levels => {
                        SendOptions::new().priority(Priority::from_level((i % 3) as u8).unwrap())
                    }
                };
                producer.send_with([i; 8], options).unwrap();
            }
        });
        for c in 0..CONSUMERS {
            let consumer = queue.consumer();
            let mine = MESSAGES / CONSUMERS + if c == 0 { extra } else { 0 };
            s.spawn(move || {
                for _ in 0..mine {
                    let delivery = consumer.recv().unwrap();
                    black_box(delivery[0]);
                    delivery.ack().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn ordering(c: &mut Criterion) {
    let groups: Vec<Arc<str>> = (0..1_000)
        .map(|g| Arc::from(format!("customer-{g}")))
        .collect();
    let mut run = |name: &str, rows: &[(&str, Sending)]| {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(MESSAGES));
        group.sample_size(20);
        for &(row, sending) in rows {
            group.bench_function(BenchmarkId::new(row, "20k"), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| round(sending, &groups)).sum())
            });
        }
        group.finish();
    };
    run(
        "groups_1p4c_64B",
        &[
            ("plain", Sending::Plain),
            ("plain_on_ordered_queue", Sending::PlainOrdered),
            ("groups_1000", Sending::Groups(1_000)),
        ],
    );
    run(
        "priorities_1p4c_64B",
        &[("plain", Sending::Plain), ("levels_3", Sending::Levels)],
    );
}

criterion_group!(benches, ordering);
criterion_main!(benches);

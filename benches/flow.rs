//! Flow control, when used: 20,000 64-byte messages send → recv → ack,
//! one producer and four consumer threads (2 cores), in memory. The
//! baseline in the same group is the same queue with no control on; the
//! other rows turn on an in-flight cap or a rate limit. A row that names
//! a generous limit measures the cost of the gated receive path (a lock,
//! the lease count); `max_in_flight_4` also waits on the cap itself
//! (every consumer holds at most one message, so four in flight is the
//! most it could use; one consumer must wait for a slot whenever the
//! others hold theirs). The rate limit's period is one nanosecond per
//! message, so its bucket never runs dry here.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spool::{Queue, RateLimit};
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 20_000;
const CONSUMERS: u64 = 4;
const CAPACITY: usize = 1_024;
type Payload = [u64; 8];

fn round(queue: Queue<Payload>) -> Duration {
    let start = Instant::now();
    thread::scope(|s| {
        let producer = queue.producer();
        s.spawn(move || {
            for i in 0..MESSAGES {
                producer.send([i; 8]).unwrap();
            }
        });
        for _ in 0..CONSUMERS {
            let consumer = queue.consumer();
            s.spawn(move || {
                for _ in 0..MESSAGES / CONSUMERS {
                    let delivery = consumer.recv().unwrap();
                    black_box(delivery[0]);
                    delivery.ack().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn flow(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_1p4c_64B");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(20);
    type Make = fn() -> Queue<Payload>;
    let rows: [(&str, Make); 4] = [
        ("no_control", || {
            Queue::builder().capacity(CAPACITY).open().unwrap()
        }),
        ("max_in_flight_1024", || {
            let builder = Queue::builder().capacity(CAPACITY).max_in_flight(CAPACITY);
            builder.open().unwrap()
        }),
        ("max_in_flight_4", || {
            let builder = Queue::builder().capacity(CAPACITY).max_in_flight(4);
            builder.open().unwrap()
        }),
        ("rate_limit_unreached", || {
            let limit = RateLimit::new(1_000_000, Duration::from_millis(1)).unwrap();
            Queue::builder()
                .capacity(CAPACITY)
                .rate_limit(limit)
                .open()
                .unwrap()
        }),
    ];
    for (name, make) in rows {
        group.bench_function(BenchmarkId::new(name, "20k"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| round(make())).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, flow);
criterion_main!(benches);

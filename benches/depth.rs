//! The cost of send → recv → ack as the queue gets deep, and with many
//! leases in flight: each must stay O(1).
//!
//! One thread, 64-byte payloads, in memory. `shallow` and `deep` prefill
//! 1,000 and 1,000,000 ready messages; `leased` prefills 1,000 and holds
//! 100,000 deliveries in flight. Each iteration sends one message, receives
//! the oldest, and acks it, so the depth stays constant.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spool::{Delivery, Queue};
use std::time::Duration;

type Payload = [u64; 8];

struct Setup {
    queue: Queue<Payload>,
    _held: Vec<Delivery<Payload>>,
}

fn setup(ready: u64, in_flight: u64) -> Setup {
    let queue: Queue<Payload> = Queue::builder()
        .capacity(2_000_000)
        .visibility_timeout(Duration::from_secs(3600))
        .open()
        .unwrap();
    let producer = queue.producer();
    for chunk in (0..ready + in_flight).collect::<Vec<_>>().chunks(10_000) {
        producer
            .send_batch(chunk.iter().map(|&i| [i; 8]).collect())
            .unwrap();
    }
    let consumer = queue.consumer();
    let mut held = Vec::new();
    while (held.len() as u64) < in_flight {
        let want = (in_flight as usize - held.len()).min(10_000);
        let batch = consumer.recv_batch(want, Duration::ZERO).unwrap();
        held.extend(batch.into_deliveries()); // one lease each
    }
    Setup { queue, _held: held }
}

fn depth(c: &mut Criterion) {
    let mut group = c.benchmark_group("depth_send_recv_ack_64B");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for (name, ready, in_flight) in [
        ("shallow_1k", 1_000, 0),
        ("deep_1m", 1_000_000, 0),
        ("leased_100k", 1_000, 100_000),
    ] {
        let state = setup(ready, in_flight);
        let producer = state.queue.producer();
        let consumer = state.queue.consumer();
        group.bench_function(name, |b| {
            b.iter(|| {
                producer.send([7; 8]).unwrap();
                consumer.try_recv().unwrap().ack().unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, depth);
criterion_main!(benches);

//! In-memory throughput: spool's send → recv → ack beside a raw
//! `crossbeam_channel::bounded` send → recv of the same 64-byte payload, in
//! the same run, so the report shows the ratio.
//!
//! Each iteration moves `MESSAGES` messages from P producer threads to C
//! consumer threads and is timed as a whole (`iter_custom`); criterion
//! reports time per iteration, and throughput in messages per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spool::Queue;
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 20_000;
const CAPACITY: usize = 1_024;
/// 64 bytes (serde implements arrays up to 32 elements, so eight `u64`s).
type Payload = [u64; 8];

fn split(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

fn crossbeam_round(producers: u64, consumers: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Payload>(CAPACITY);
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..producers {
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..split(MESSAGES, producers, p) {
                    tx.send([i; 8]).unwrap();
                }
            });
        }
        for c in 0..consumers {
            let rx = rx.clone();
            s.spawn(move || {
                for _ in 0..split(MESSAGES, consumers, c) {
                    black_box(rx.recv().unwrap());
                }
            });
        }
    });
    start.elapsed()
}

fn spool_round(producers: u64, consumers: u64, batch: usize) -> Duration {
    let queue: Queue<Payload> = Queue::builder().capacity(CAPACITY).open().unwrap();
    let start = Instant::now();
    thread::scope(|s| {
        for p in 0..producers {
            let producer = queue.producer();
            s.spawn(move || {
                let mut left = split(MESSAGES, producers, p);
                while left > 0 {
                    if batch == 1 {
                        producer.send([left; 8]).unwrap();
                        left -= 1;
                    } else {
                        let n = (batch as u64).min(left);
                        producer.send_batch(vec![[n; 8]; n as usize]).unwrap();
                        left -= n;
                    }
                }
            });
        }
        for c in 0..consumers {
            let consumer = queue.consumer();
            s.spawn(move || {
                let mut left = split(MESSAGES, consumers, c) as usize;
                if batch == 1 {
                    for _ in 0..left {
                        let delivery = consumer.recv().unwrap();
                        black_box(delivery[0]);
                        delivery.ack().unwrap();
                    }
                    return;
                }
                while left > 0 {
                    let received = consumer
                        .recv_batch(batch.min(left), Duration::from_secs(10))
                        .unwrap();
                    left -= received.len();
                    for payload in &received {
                        black_box(payload[0]);
                    }
                    received.ack().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_recv_64B");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(20);
    for (p, c) in [(1, 1), (2, 2)] {
        let shape = format!("{p}p{c}c");
        group.bench_function(BenchmarkId::new("crossbeam_bounded", &shape), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| crossbeam_round(p, c)).sum())
        });
        group.bench_function(BenchmarkId::new("spool_in_memory", &shape), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| spool_round(p, c, 1)).sum())
        });
        group.bench_function(BenchmarkId::new("spool_in_memory_batch64", &shape), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| spool_round(p, c, 64)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);

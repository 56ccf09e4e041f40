//! Async throughput: spool's `send_async` → `recv_async` → `ack_async`
//! beside `tokio::sync::mpsc` and flume's async side moving the same
//! 64-byte payload, on the same tokio runtime, in the same run, so the
//! report shows the ratios.
//!
//! Each iteration moves `MESSAGES` messages from P producer tasks to C
//! consumer tasks on a multi-thread runtime of two workers (the machine
//! has two cores), timed as a whole (`iter_custom`). A current-thread
//! runtime row shows the same with every task on one thread.
//!
//! `executor_stall` is not a throughput: it is how long a ticking task on a
//! current-thread runtime waited for each of its turns (p50, p99, max) and
//! how many turns it got, while another task sent 2,000 messages to a
//! persistent queue under `Durability::Sync`, once with `send_async` and
//! once with the blocking `send` (which holds the only executor thread for
//! each disk sync). Printed, not asserted.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spool::{Durability, Queue};
use std::hint::black_box;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 20_000;
const CAPACITY: usize = 1_024;
type Payload = [u64; 8];

fn split(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

fn runtime(multi: bool) -> tokio::runtime::Runtime {
    let mut builder = match multi {
        true => tokio::runtime::Builder::new_multi_thread(),
        false => tokio::runtime::Builder::new_current_thread(),
    };
    if multi {
        builder.worker_threads(2);
    }
    builder.enable_all().build().unwrap()
}

async fn spool_round(producers: u64, consumers: u64) -> Duration {
    let queue: Queue<Payload> = Queue::builder().capacity(CAPACITY).open().unwrap();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let producer = queue.producer();
        tasks.spawn(async move {
            for i in 0..split(MESSAGES, producers, p) {
                producer.send_async([i; 8]).await.unwrap();
            }
        });
    }
    for c in 0..consumers {
        let consumer = queue.consumer();
        tasks.spawn(async move {
            for _ in 0..split(MESSAGES, consumers, c) {
                let delivery = consumer.recv_async().await.unwrap();
                black_box(delivery[0]);
                delivery.ack_async().await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    start.elapsed()
}

async fn tokio_round(producers: u64, consumers: u64) -> Duration {
    // tokio's mpsc has one receiver: consumers share it behind a lock.
    let (tx, rx) = tokio::sync::mpsc::channel::<Payload>(CAPACITY);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let tx = tx.clone();
        tasks.spawn(async move {
            for i in 0..split(MESSAGES, producers, p) {
                tx.send([i; 8]).await.unwrap();
            }
        });
    }
    for c in 0..consumers {
        let rx = rx.clone();
        tasks.spawn(async move {
            for _ in 0..split(MESSAGES, consumers, c) {
                black_box(rx.lock().await.recv().await.unwrap());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    start.elapsed()
}

async fn flume_round(producers: u64, consumers: u64) -> Duration {
    let (tx, rx) = flume::bounded::<Payload>(CAPACITY);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let tx = tx.clone();
        tasks.spawn(async move {
            for i in 0..split(MESSAGES, producers, p) {
                tx.send_async([i; 8]).await.unwrap();
            }
        });
    }
    for c in 0..consumers {
        let rx = rx.clone();
        tasks.spawn(async move {
            for _ in 0..split(MESSAGES, consumers, c) {
                black_box(rx.recv_async().await.unwrap());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_64B");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(10);
    for (multi, producers, consumers) in [(true, 1, 1), (true, 2, 2), (false, 1, 1)] {
        let rt = runtime(multi);
        let shape = format!(
            "{}_{producers}p{consumers}c",
            if multi { "mt2" } else { "ct" }
        );
        group.bench_with_input(BenchmarkId::new("tokio_mpsc", &shape), &(), |b, ()| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(tokio_round(producers, consumers)))
                    .sum()
            })
        });
        group.bench_with_input(BenchmarkId::new("flume", &shape), &(), |b, ()| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(flume_round(producers, consumers)))
                    .sum()
            })
        });
        group.bench_with_input(BenchmarkId::new("spool", &shape), &(), |b, ()| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(spool_round(producers, consumers)))
                    .sum()
            })
        });
    }
    group.finish();
}

/// How long a ticking task waited for each turn while 2,000 durable sends
/// ran beside it on a current-thread runtime: every wait, sorted.
fn executor_stall(blocking: bool) -> Vec<Duration> {
    let dir = std::env::temp_dir().join(format!(
        "spool-bench-stall-{}-{blocking}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let queue: Queue<u64> = Queue::builder()
        .path(&dir)
        .durability(Durability::Sync)
        .capacity(4_096)
        .open()
        .unwrap();
    let rt = runtime(false);
    let waits = rt.block_on(async {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut waits = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let asked = Instant::now();
                    tokio::task::yield_now().await;
                    waits.push(asked.elapsed());
                }
                waits.sort_unstable();
                waits
            })
        };
        let producer = queue.producer();
        for i in 0..2_000 {
            match blocking {
                true => drop(producer.send(i).unwrap()),
                false => drop(producer.send_async(i).await.unwrap()),
            }
            if blocking {
                tokio::task::yield_now().await;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        ticker.await.unwrap()
    });
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
    waits
}

fn stall(_: &mut Criterion) {
    // Runs unless a filter names other benchmarks only.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| "executor_stall".contains(f.as_str()))
    {
        return;
    }
    let summary = |waits: &[Duration]| {
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
        format!(
            "{} turns, wait p50 {:?} p99 {:?} max {:?}",
            waits.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        )
    };
    for round in 0..3 {
        let (a, b) = (executor_stall(false), executor_stall(true));
        println!(
            "executor_stall round {round}: send_async: {}; blocking send: {}",
            summary(&a),
            summary(&b)
        );
    }
}

criterion_group!(benches, throughput, stall);
criterion_main!(benches);

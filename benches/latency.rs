//! Latency from `send` to `recv` at a steady rate well below saturation,
//! beside a raw `crossbeam_channel::bounded` under the same load.
//!
//! A plain harness (not criterion): one producer thread sends 64-byte
//! messages at a fixed rate, pacing itself by spinning to a schedule; one
//! consumer thread receives (and, for spool, acks) and records how long each
//! message took from just before `send` to just after `recv` returned. The
//! first tenth is warm-up and not counted. Prints p50 / p99 / p99.9 / max.
//!
//! `cargo bench --bench latency` (set `SPOOL_LATENCY_RATE` and
//! `SPOOL_LATENCY_MESSAGES` to change the load; defaults 20,000/s, 100,000).

use spool::Queue;
use std::thread;
use std::time::{Duration, Instant};

/// 64 bytes: the send instant (as nanoseconds since `base`) and padding.
type Payload = [u64; 8];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `count` messages at `rate` per second through `send`.
fn pace(base: Instant, count: u64, rate: u64, mut send: impl FnMut(Payload)) {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut next = Instant::now();
    for _ in 0..count {
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        next += interval;
        let sent_at = base.elapsed().as_nanos() as u64;
        send([sent_at, 0, 0, 0, 0, 0, 0, 0]);
    }
}

fn report(name: &str, mut latencies: Vec<u64>) {
    let warm_up = latencies.len() / 10;
    latencies.drain(..warm_up);
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        Duration::from_nanos(latencies[index])
    };
    println!(
        "{name:<28} p50 {:>9.1?}  p99 {:>9.1?}  p99.9 {:>9.1?}  max {:>9.1?}  ({} messages)",
        at(0.50),
        at(0.99),
        at(0.999),
        Duration::from_nanos(*latencies.last().unwrap()),
        latencies.len()
    );
}

fn crossbeam(count: u64, rate: u64) -> Vec<u64> {
    let (tx, rx) = crossbeam_channel::bounded::<Payload>(1024);
    let base = Instant::now();
    let consumer = thread::spawn(move || {
        (0..count)
            .map(|_| {
                let message = rx.recv().unwrap();
                base.elapsed().as_nanos() as u64 - message[0]
            })
            .collect()
    });
    pace(base, count, rate, |message| tx.send(message).unwrap());
    consumer.join().unwrap()
}

fn spool(count: u64, rate: u64) -> Vec<u64> {
    let queue: Queue<Payload> = Queue::builder().capacity(1024).open().unwrap();
    let consumer = queue.consumer();
    let producer = queue.producer();
    let base = Instant::now();
    let receiver = thread::spawn(move || {
        (0..count)
            .map(|_| {
                let delivery = consumer.recv().unwrap();
                let latency = base.elapsed().as_nanos() as u64 - delivery[0];
                delivery.ack().unwrap();
                latency
            })
            .collect()
    });
    pace(base, count, rate, |message| {
        producer.send(message).unwrap();
    });
    receiver.join().unwrap()
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--test`: do nothing.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rate = env("SPOOL_LATENCY_RATE", 20_000);
    let count = env("SPOOL_LATENCY_MESSAGES", 100_000);
    println!("send -> recv latency, 1 producer / 1 consumer, 64-byte messages, {rate}/s");
    report("crossbeam_channel::bounded", crossbeam(count, rate));
    report("spool (in memory, + ack)", spool(count, rate));
}

//! `Durability::Sync` send latency while a large queue compacts, beside
//! the same sends with no compaction running, in one run.
//!
//! A plain harness (not criterion): a persistent `Sync` queue is filled
//! with `SPOOL_COMPACTION_LIVE` live 64-byte messages (default 1,000,000,
//! sent in batches of 1,000), none received. Then, `SPOOL_COMPACTION_ROUNDS`
//! times (default 3), two runs on the same queue:
//!
//! - `compacting`: one thread calls [`Queue::compact`], which compacts the
//!   whole log (about 100 MB) on the compactor thread, while the main
//!   thread sends one message at a time and times each `send` until the
//!   compaction returns;
//! - `quiet`: as many sends, timed the same way, with no compaction.
//!
//! With `SPOOL_COMPACTION_CANCEL=N` (default 0: off; 10000 cancels 100
//! messages spread over every file), every Nth of the messages still live
//! is cancelled before each round (from 4 threads), so that every file
//! loses some and the compaction rewrites nearly the whole live state;
//! without it, the backlog only waits, and a compaction reads it and keeps
//! its files as they are (`docs/FORMAT.md`, section 8) after the first
//! round.
//!
//! Prints p50 / p99 / p99.9 / max of each run and the ratio of the p99.9s.
//! Compaction runs beside the writer thread, so no send waits for it; what
//! is left is the disk and the two cores they share (the compactor's own
//! reads, writes and syncs compete with the writer's syncs; the compactor
//! runs at the lowest CPU priority).
//!
//! `cargo bench --bench compaction` (in `target/bench-spool/`, removed
//! afterwards).

use spool::{Durability, MessageId, Queue};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// 64 bytes; every word has its top bit set so it encodes at full width.
type Payload = [u64; 8];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(i: u64) -> Payload {
    [i | 1 << 63; 8]
}

/// Latencies in nanoseconds: p50, p99, p99.9, max.
fn summary(mut latencies: Vec<u64>) -> [Duration; 4] {
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        Duration::from_nanos(latencies[index])
    };
    [
        at(0.50),
        at(0.99),
        at(0.999),
        Duration::from_nanos(*latencies.last().unwrap()),
    ]
}

fn print(name: &str, count: usize, [p50, p99, p999, max]: [Duration; 4]) {
    println!(
        "{name:<12} p50 {p50:>9.1?}  p99 {p99:>9.1?}  p99.9 {p999:>9.1?}  max {max:>9.1?}  ({count} sends)"
    );
}

/// Times `send`s one by one until `done` says stop.
fn timed_sends(queue: &Queue<Payload>, mut done: impl FnMut(usize) -> bool) -> Vec<u64> {
    let producer = queue.producer();
    let mut latencies = Vec::new();
    while !done(latencies.len()) {
        let message = payload(latencies.len() as u64);
        let start = Instant::now();
        producer.send(message).unwrap();
        latencies.push(start.elapsed().as_nanos() as u64);
    }
    latencies
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--test`: do nothing.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let live = env("SPOOL_COMPACTION_LIVE", 1_000_000);
    let rounds = env("SPOOL_COMPACTION_ROUNDS", 3);
    let cancel_every = env("SPOOL_COMPACTION_CANCEL", 0) as usize;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-spool")
        .join(format!("compaction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let queue: Queue<Payload> = Queue::builder()
        .capacity(2 * live as usize + 1_000_000)
        .path(&dir)
        .durability(Durability::Sync)
        .open()
        .unwrap();
    let started = Instant::now();
    let producer = queue.producer();
    let mut ids: Vec<MessageId> = Vec::with_capacity(live as usize);
    for first in (0..live).step_by(1_000) {
        let batch = (first..(first + 1_000).min(live)).map(payload).collect();
        ids.extend(producer.send_batch(batch).unwrap());
    }
    println!(
        "Sync send latency, 64-byte messages, {live} live messages ({} MB on disk, filled in {:.1?})",
        queue.disk_usage().unwrap() >> 20,
        started.elapsed()
    );
    let (mut worst_ratio, mut best_ratio) = (0f64, f64::MAX);
    for _ in 0..rounds {
        if cancel_every > 0 {
            let start = Instant::now();
            let (cancel, keep): (Vec<_>, Vec<_>) = ids
                .iter()
                .enumerate()
                .partition(|(i, _)| i % cancel_every == cancel_every / 2);
            let cancel: Vec<MessageId> = cancel.into_iter().map(|(_, id)| *id).collect();
            ids = keep.into_iter().map(|(_, id)| *id).collect();
            thread::scope(|s| {
                for part in cancel.chunks(cancel.len().div_ceil(4).max(1)) {
                    let queue = &queue;
                    s.spawn(move || {
                        for id in part {
                            queue.cancel(*id).unwrap();
                        }
                    });
                }
            });
            println!(
                "cancelled {} messages (every {cancel_every}th) in {:.1?}",
                cancel.len(),
                start.elapsed()
            );
        }
        let compaction = thread::scope(|s| {
            let compactor = s.spawn(|| {
                let start = Instant::now();
                queue.compact().unwrap();
                start.elapsed()
            });
            let latencies = timed_sends(&queue, |_| compactor.is_finished());
            (latencies, compactor.join().unwrap())
        });
        let (compacting, took) = compaction;
        let count = compacting.len().max(1);
        let quiet = timed_sends(&queue, |sent| sent >= count);
        let (busy, calm) = (summary(compacting), summary(quiet));
        println!("compaction of the live state took {took:.1?}");
        print("compacting", count, busy);
        print("quiet", count, calm);
        let ratio = busy[2].as_secs_f64() / calm[2].as_secs_f64();
        println!("p99.9 compacting / quiet: {ratio:.2}");
        worst_ratio = worst_ratio.max(ratio);
        best_ratio = best_ratio.min(ratio);
    }
    println!(
        "p99.9 ratio over {rounds} rounds: {best_ratio:.2} to {worst_ratio:.2} (target: at most 2)"
    );
    drop((producer, queue));
    let _ = std::fs::remove_dir_all(&dir);
}

//! `Durability::Sync` send latency while a large queue compacts, beside
//! the same sends with no compaction running, in one run.
//!
//! A plain harness (not criterion): a persistent `Sync` queue is filled
//! with `SPOOL_COMPACTION_LIVE` live 64-byte messages (default 1,000,000,
//! sent in batches of 1,000), none received. Then, `SPOOL_COMPACTION_ROUNDS`
//! times (default 6), two runs on the same queue:
//!
//! - `compacting`: one thread calls [`Queue::compact`], which compacts the
//!   whole log (about 100 MB) on the compactor thread, while the main
//!   thread sends one message at a time and times each `send` until the
//!   compaction returns;
//! - `quiet`: as many sends, timed the same way, with no compaction.
//!
//! Even rounds time the compacting sends first and then the quiet ones;
//! odd rounds the quiet ones first (as many as the compacting runs before
//! averaged), so that neither side always runs in the other's wake (a
//! disk still busy with what a compaction left, say).
//!
//! With `SPOOL_COMPACTION_CANCEL=N` (default 0: off; 10000 cancels 100
//! messages spread over every file), every Nth of the messages still live
//! is cancelled before each round (from 4 threads), so that every file
//! loses some and the compaction rewrites nearly the whole live state;
//! without it, the backlog only waits, and a compaction reads it and keeps
//! its files as they are (`docs/FORMAT.md`, section 8) after the first
//! round.
//!
//! Prints p50 / p99 / p99.9 / max of each run, then of all rounds pooled,
//! and the ratio of the p99.9s. The pooled figures are the ones to judge:
//! a compaction lasts about two seconds (paced, see `compaction_rate`)
//! and a `Sync` send about 0.2-0.3 ms, so one round has a few thousand
//! sends a side, and its p99.9 is
//! its third or fourth worst send, which one stray scheduler tick moves
//! several-fold (one round's ratio went from 1.1 to 13 between rounds of
//! one run). Pooled over the rounds, each side's p99.9 rests on a few
//! dozen sends, and every send still counts: none is dropped, and the
//! quiet sends are timed in the same run, on the same queue, between the
//! compactions.
//!
//! Each compaction's line also gives the CPU time the compactor thread
//! used (from `/proc`, where there is one): on a machine of two cores,
//! what it takes from the writer.
//!
//! Compaction runs beside the writer thread, so no send waits for it;
//! what is left is the disk and the two cores they share: the compactor's
//! writes and syncs compete with the writer's syncs (so it paces them),
//! and while it runs it holds one of the two cores (at the lowest CPU
//! priority), so a writer woken by its disk more often waits for the
//! other one. See `src/wal/compactor.rs` for what each costs.
//! `SPOOL_COMPACTION_RATE=N` (bytes per second) sets the queue's
//! `compaction_rate`, to compare.
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

/// CPU time the compactor thread has used so far (its `schedstat`), where
/// `/proc` tells it: what it takes from the two cores the writer shares.
fn compactor_cpu() -> Option<Duration> {
    let mut total = None;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "spool-compact" {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
            *total.get_or_insert(Duration::ZERO) += Duration::from_nanos(ns);
        }
    }
    total
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
    let rounds = env("SPOOL_COMPACTION_ROUNDS", 6);
    let cancel_every = env("SPOOL_COMPACTION_CANCEL", 0) as usize;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-spool")
        .join(format!("compaction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut builder = Queue::builder();
    if let Some(rate) = std::env::var("SPOOL_COMPACTION_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.compaction_rate(rate);
    }
    let queue: Queue<Payload> = builder
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
    let (mut all_busy, mut all_calm) = (Vec::new(), Vec::new());
    let mut took = Vec::new();
    let mut cpus = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
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
        // Odd rounds measure the quiet sends first, as many as the
        // compaction before saw, so that neither side always follows the
        // other.
        let quiet_first = round % 2 == 1;
        let mut calm = Vec::new();
        if quiet_first {
            let count = all_busy.len() / round as usize;
            calm = timed_sends(&queue, |sent| sent >= count);
        }
        let cpu_before = compactor_cpu();
        let (busy, compaction) = thread::scope(|s| {
            let compactor = s.spawn(|| {
                let start = Instant::now();
                queue.compact().unwrap();
                start.elapsed()
            });
            let latencies = timed_sends(&queue, |_| compactor.is_finished());
            (latencies, compactor.join().unwrap())
        });
        if !quiet_first {
            let count = busy.len();
            calm = timed_sends(&queue, |sent| sent >= count);
        }
        let cpu = compactor_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        match cpu {
            Some(cpu) => {
                println!("compaction of the live state took {compaction:.1?} ({cpu:.1?} of CPU)");
                cpus.push(cpu.as_secs_f64());
            }
            None => println!("compaction of the live state took {compaction:.1?}"),
        }
        let (b, c) = (summary(busy.clone()), summary(calm.clone()));
        print("compacting", busy.len(), b);
        print("quiet", calm.len(), c);
        let ratio = b[2].as_secs_f64() / c[2].as_secs_f64();
        println!("p99.9 compacting / quiet: {ratio:.2} (this round alone)");
        ratios.push(ratio);
        took.push(compaction);
        all_busy.extend(busy);
        all_calm.extend(calm);
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        format!("{lo:.2} to {hi:.2}")
    };
    let took: Vec<f64> = took.iter().map(Duration::as_secs_f64).collect();
    let cpu = match cpus.is_empty() {
        true => String::new(),
        false => format!(", {} s of CPU", range(&cpus)),
    };
    println!(
        "\nall {rounds} rounds pooled (compactions took {} s{cpu}; per-round p99.9 ratios {}):",
        range(&took),
        range(&ratios)
    );
    let (busy, calm) = (summary(all_busy.clone()), summary(all_calm.clone()));
    print("compacting", all_busy.len(), busy);
    print("quiet", all_calm.len(), calm);
    println!(
        "p99.9 compacting / quiet: {:.2} (target: at most 2)",
        busy[2].as_secs_f64() / calm[2].as_secs_f64()
    );
    drop((producer, queue));
    let _ = std::fs::remove_dir_all(&dir);
}

//! Reopen time: how long `Queue::builder().path(..).open()` (recovery,
//! replaying the write-ahead file) plus `stats()` takes for a persistent
//! queue of 64-byte messages (`[u64; 8]`), 2-core machine.
//!
//! - `live_1M`: a log holding 1,000,000 live messages.
//! - `acked_1M_live_1k`: a log through which 1,000,000 messages were sent,
//!   received and acknowledged, with 1,000 still live. With the default
//!   64 MiB segments, compaction runs when a segment fills, so part of
//!   the acknowledged history is already reclaimed; the directory size is
//!   printed so the report can say how much is left.
//! - `acked_5M`: 5,000,000 messages sent, received and acknowledged, none
//!   live: the steady state of a busy queue that keeps up. While the live
//!   data is small the writer seals segments at the 4 MiB compaction
//!   floor, so what a reopen replays stays within a few floors whatever
//!   the history (it was a whole 64 MiB segment of acknowledged records,
//!   466 ms to reopen, before).
//!
//! Each directory is built once, outside the timed part, with
//! `Durability::None` and 1,000-message batches, then `sync()`ed and
//! closed. There is no baseline to run beside it in the same group; the
//! figure to compare is the read throughput of the printed directory size.
//! Each reopen also starts a fresh (empty) segment, as every open does.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use spool::{Durability, Queue};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 64 bytes (serde implements arrays up to 32 elements, so eight `u64`s).
type Payload = [u64; 8];

const MESSAGES: u64 = 1_000_000;
const BATCH: u64 = 1_000;
const CAPACITY: usize = 2_000_000;

fn payload(i: u64) -> Payload {
    [i | 1 << 63; 8]
}

/// A fresh directory under `target/bench-spool/`, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn fresh(name: &str) -> Dir {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-spool")
            .join(format!("reopen-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open(path: &Path, durability: Durability) -> Queue<Payload> {
    Queue::builder()
        .capacity(CAPACITY)
        .path(path)
        .durability(durability)
        .open()
        .unwrap()
}

fn batch(first: u64) -> Vec<Payload> {
    (first..first + BATCH).map(payload).collect()
}

/// Sends `live` messages that stay, after `acked` that are received and
/// acknowledged (in batches of [`BATCH`]).
fn build(path: &Path, acked: u64, live: u64) {
    let started = Instant::now();
    let queue = open(path, Durability::None);
    let (producer, consumer) = (queue.producer(), queue.consumer());
    for first in (0..acked).step_by(BATCH as usize) {
        producer.send_batch(batch(first)).unwrap();
        let received = consumer
            .recv_batch(BATCH as usize, Duration::from_secs(10))
            .unwrap();
        assert_eq!(received.len() as u64, BATCH);
        received.ack().unwrap();
    }
    for first in (0..live).step_by(BATCH as usize) {
        producer.send_batch(batch(acked + first)).unwrap();
    }
    queue.sync().unwrap();
    eprintln!(
        "reopen: built {} ({acked} acked, {live} live) in {:.1?}: {} log bytes",
        path.display(),
        started.elapsed(),
        queue.disk_usage().unwrap(),
    );
}

fn dir_bytes(path: &Path) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut files = Vec::new();
    for entry in fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let len = entry.metadata().unwrap().len();
        total += len;
        files.push(format!("{}={len}", entry.file_name().to_string_lossy()));
    }
    files.sort();
    (total, files)
}

fn reopen(c: &mut Criterion) {
    let mut group = c.benchmark_group("reopen_64B");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for (name, acked, live) in [
        ("live_1M", 0, MESSAGES),
        ("acked_1M_live_1k", MESSAGES, BATCH),
        ("acked_5M", 5 * MESSAGES, 0),
    ] {
        let dir = Dir::fresh(name);
        build(&dir.0, acked, live);
        let (bytes, files) = dir_bytes(&dir.0);
        eprintln!(
            "reopen: {name}: directory holds {bytes} bytes ({:.1} MiB): {}",
            bytes as f64 / (1 << 20) as f64,
            files.join(" ")
        );
        group.bench_function(BenchmarkId::new("open_stats", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let queue = open(&dir.0, Durability::None);
                    let stats = queue.stats();
                    total += start.elapsed();
                    assert_eq!(stats.ready as u64, live);
                }
                total
            })
        });
        let (bytes, files) = dir_bytes(&dir.0);
        eprintln!(
            "reopen: {name}: after the reopens: {bytes} bytes in {} files",
            files.len()
        );
    }
    group.finish();
}

criterion_group!(benches, reopen);
criterion_main!(benches);

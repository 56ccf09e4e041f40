//! Durable throughput: spool with a write-ahead file beside its baselines,
//! in the same run, so the report shows the ratios.
//!
//! Two groups, 64-byte payloads (`[u64; 8]`), 2-core machine:
//!
//! - `durable_send_64B`: the baseline is one writer thread appending one
//!   record of the size of spool's enqueue frame to a file, `write` then
//!   `fdatasync` per record (`write_fdatasync/1w`). Beside it,
//!   `Durability::Sync` sends from 1, 8 and 64 producer threads with no
//!   consumer running (`sync_send/Np`): each send returns once its record is
//!   on disk, and concurrent sends share one `fdatasync` (group commit).
//! - `durable_round_trip_64B`: send → recv → ack through the in-memory
//!   queue (the baseline here) and through persistent queues with
//!   `Durability::Sync`, `Interval(10 ms)` and `None`, P producers and C
//!   consumers (`PpCc`). Under `Sync`, a message costs three durable
//!   records: its enqueue, its receive and its ack; the
//!   `sync_lazy_receives` rows open with `durable_receives(false)`, where
//!   the receive is recorded without waiting. The `_batch64` rows
//!   move the messages 64 at a time (`send_batch`, `recv_batch`,
//!   `Batch::ack`): three frames per 64 messages.
//!
//! The enqueue frame size is measured at startup (the growth of the log
//! over fifty `Sync` sends) and printed; the baseline writes records of that
//! size. Payload words have their top bit set, so each one encodes at full
//! width (bincode varint: 9 bytes, 72 for the payload).
//!
//! Rounds are sized for ~50-200 ms each. `fdatasync` here costs from
//! ~0.1 ms to several ms depending on what else uses the disk, so the
//! `Sync` round sizes follow a probe of the baseline at startup (printed
//! with the frame size); compare throughputs, not times per round.
//!
//! Each iteration moves a whole round of messages and is timed as a whole
//! (`iter_custom`, threads started before the clock); criterion reports
//! time per round, and throughput in messages per second. Each round opens
//! its queue in a fresh directory under `target/bench-spool/`, removed
//! afterwards; opening and closing are outside the timed part.

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use spool::{Durability, Queue};
use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// 64 bytes (serde implements arrays up to 32 elements, so eight `u64`s).
type Payload = [u64; 8];
type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Messages per round where nothing waits for the disk: ~50-200 ms here.
const IN_MEMORY_ROUND: u64 = 100_000;
const WRITE_ROUND: u64 = 5_000;
/// How long a round of `Sync` sends by one producer should take. The cost
/// of an `fdatasync` on this (shared, virtual) disk ranges from ~0.1 ms to
/// several ms with the load of other processes, so the `Sync` round sizes
/// are derived from a probe at startup (printed): one round of the
/// baseline or of `sync_send/1p` takes about this long.
const SYNC_TARGET: Duration = Duration::from_millis(100);
const CAPACITY: usize = 1_024;

fn payload(i: u64) -> Payload {
    [i | 1 << 63; 8]
}

fn split(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

/// A fresh directory under `target/bench-spool/`, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn fresh(name: &str) -> Dir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-spool")
            .join(format!("durable-{name}-{}-{n}", std::process::id()));
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

fn open(dir: &Dir, durability: Durability, capacity: usize) -> Queue<Payload> {
    open_with(dir, durability, capacity, true)
}

fn open_with(
    dir: &Dir,
    durability: Durability,
    capacity: usize,
    durable_receives: bool,
) -> Queue<Payload> {
    Queue::builder()
        .capacity(capacity)
        .path(&dir.0)
        .durability(durability)
        .durable_receives(durable_receives)
        .open()
        .unwrap()
}

/// Bytes one single-message send adds to the log (frame header included).
/// Under `Sync`, one producer: each send is a frame of its own (the writer
/// frames appends written together as one frame).
fn enqueue_frame_bytes() -> usize {
    const SENDS: u64 = 50;
    let dir = Dir::fresh("frame-size");
    let queue = open(&dir, Durability::Sync, SENDS as usize);
    let before = queue.disk_usage().unwrap();
    let producer = queue.producer();
    for i in 0..SENDS {
        producer.send(payload(i)).unwrap();
    }
    queue.sync().unwrap();
    let grown = queue.disk_usage().unwrap() - before;
    assert_eq!(grown % SENDS, 0, "sends of one size grew the log unevenly");
    (grown / SENDS) as usize
}

/// Median time of a `record`-sized `write` + `fdatasync`, over a few.
fn probe_fdatasync(record: &[u8]) -> Duration {
    let mut times: Vec<Duration> = (0..21).map(|_| write_fdatasync_round(record, 1)).collect();
    times.sort();
    times[times.len() / 2]
}

/// The baseline: `write` + `fdatasync` of one `record`-sized append, `n` times.
fn write_fdatasync_round(record: &[u8], n: u64) -> Duration {
    let dir = Dir::fresh("baseline");
    let mut file: File = OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.0.join("log"))
        .unwrap();
    file.sync_all().unwrap();
    let start = Instant::now();
    for _ in 0..n {
        file.write_all(record).unwrap();
        file.sync_data().unwrap();
    }
    start.elapsed()
}

/// `Durability::Sync` sends of `n` messages from `producers` threads, no
/// consumer.
fn sync_send_round(producers: u64, n: u64) -> Duration {
    let dir = Dir::fresh("sync-send");
    let queue = open(&dir, Durability::Sync, n as usize);
    let start_line = Barrier::new(producers as usize + 1);
    let start = thread::scope(|s| {
        for p in 0..producers {
            let producer = queue.producer();
            let start_line = &start_line;
            s.spawn(move || {
                start_line.wait();
                for i in 0..split(n, producers, p) {
                    producer.send(payload(i)).unwrap();
                }
            });
        }
        start_line.wait();
        Instant::now()
    });
    let elapsed = start.elapsed();
    assert_eq!(queue.stats().ready, n as usize);
    elapsed
}

/// send → recv → ack of `n` messages, `producers` × `consumers` threads,
/// `batch` at a time (`send_batch`, `recv_batch`, `Batch::ack`) when above
/// one: in memory when `durability` is `None`, else persistent at that
/// level.
fn round_trip(
    durability: Option<(Durability, bool)>,
    producers: u64,
    consumers: u64,
    n: u64,
    batch: u64,
) -> Duration {
    let dir;
    let queue = match durability {
        None => Queue::builder().capacity(CAPACITY).open().unwrap(),
        Some((durability, durable_receives)) => {
            dir = Dir::fresh("round-trip");
            open_with(&dir, durability, CAPACITY, durable_receives)
        }
    };
    let start_line = Barrier::new((producers + consumers) as usize + 1);
    let start = thread::scope(|s| {
        for p in 0..producers {
            let producer = queue.producer();
            let start_line = &start_line;
            s.spawn(move || {
                start_line.wait();
                let mut left = split(n, producers, p);
                while left > 0 {
                    if batch == 1 {
                        producer.send(payload(left)).unwrap();
                        left -= 1;
                    } else {
                        let take = batch.min(left);
                        producer
                            .send_batch((0..take).map(payload).collect())
                            .unwrap();
                        left -= take;
                    }
                }
            });
        }
        for c in 0..consumers {
            let consumer = queue.consumer();
            let start_line = &start_line;
            s.spawn(move || {
                start_line.wait();
                let mut left = split(n, consumers, c);
                while left > 0 && batch == 1 {
                    let delivery = consumer.recv_timeout(Duration::from_secs(10)).unwrap();
                    black_box(delivery[0]);
                    delivery.ack().unwrap();
                    left -= 1;
                }
                while left > 0 {
                    let received = consumer
                        .recv_batch(batch.min(left) as usize, Duration::from_secs(10))
                        .unwrap();
                    left -= received.len() as u64;
                    for payload in &received {
                        black_box(payload[0]);
                    }
                    received.ack().unwrap();
                }
            });
        }
        start_line.wait();
        Instant::now()
    });
    start.elapsed()
}

fn bench(group: &mut Group<'_>, name: &str, shape: &str, n: u64, round: impl Fn() -> Duration) {
    group.throughput(Throughput::Elements(n));
    group.bench_function(BenchmarkId::new(name, shape), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| round()).sum())
    });
}

fn configure(group: &mut Group<'_>) {
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
}

fn durable(c: &mut Criterion) {
    let frame = enqueue_frame_bytes();
    let record = vec![0xa5; frame];
    let fsync = probe_fdatasync(&record);
    let one = (SYNC_TARGET.as_nanos() / fsync.as_nanos().max(1)).clamp(20, 2_000) as u64;
    eprintln!(
        "durable: spool's enqueue frame for a 64-byte payload is {frame} bytes (the baseline \
         writes records of this size); write + fdatasync probed at {fsync:.2?}; \
         Sync rounds: {one} sends (1p), {} (8p), {} (64p), {} round trips",
        one * 4,
        one * 16,
        one / 2
    );
    let mut group = c.benchmark_group("durable_send_64B");
    configure(&mut group);
    bench(&mut group, "write_fdatasync", "1w", one, || {
        write_fdatasync_round(&record, one)
    });
    for (p, n) in [(1, one), (8, one * 4), (64, one * 16)] {
        bench(&mut group, "sync_send", &format!("{p}p"), n, || {
            sync_send_round(p, n)
        });
    }
    // Again after the spool runs: the cost of a sync drifts with the other
    // processes' disk writes (an ext4 journal commit flushes theirs too),
    // and two baselines bracketing the runs show how much.
    bench(&mut group, "write_fdatasync", "1w_again", one, || {
        write_fdatasync_round(&record, one)
    });
    group.finish();

    let mut group = c.benchmark_group("durable_round_trip_64B");
    configure(&mut group);
    let interval = Some((Durability::Interval(Duration::from_millis(10)), true));
    let sync = Some((Durability::Sync, true));
    let none = Some((Durability::None, true));
    // `Sync` whose receives do not wait for the disk (`durable_receives`).
    let sync_lazy = Some((Durability::Sync, false));
    let cases = [
        ("in_memory", None, 1, IN_MEMORY_ROUND, 1),
        ("in_memory", None, 2, IN_MEMORY_ROUND, 1),
        ("sync", sync, 1, one / 2, 1),
        ("sync_lazy_receives", sync_lazy, 1, one / 2, 1),
        ("interval_10ms", interval, 1, WRITE_ROUND, 1),
        ("interval_10ms", interval, 2, WRITE_ROUND, 1),
        ("none", none, 1, WRITE_ROUND, 1),
        ("none", none, 2, WRITE_ROUND, 1),
        // The same in batches of 64: one frame (and under `Sync` one
        // fdatasync) for each send, receive and ack of a whole batch.
        ("in_memory_batch64", None, 1, IN_MEMORY_ROUND * 10, 64),
        ("sync_batch64", sync, 1, one * 16, 64),
        ("sync_lazy_receives_batch64", sync_lazy, 1, one * 16, 64),
        ("interval_10ms_batch64", interval, 1, WRITE_ROUND * 10, 64),
    ];
    for (name, durability, threads, n, batch) in cases {
        bench(
            &mut group,
            name,
            &format!("{threads}p{threads}c"),
            n,
            || round_trip(durability, threads, threads, n, batch),
        );
    }
    group.finish();
}

criterion_group!(benches, durable);
criterion_main!(benches);

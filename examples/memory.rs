//! Resident memory of a queue holding 1,000,000 queued 64-byte messages
//! (`[u64; 8]`), in memory and persistent (`Durability::None`, then
//! `sync()`, in a directory under `target/`).
//!
//! Linux only: it reads `VmRSS` (and the peak, `VmHWM`) from
//! `/proc/self/status`. Each case runs in
//! a child process of its own (this program re-run with an argument), so
//! that memory the allocator kept from one case does not hide the other's.
//!
//! The persistent queue fills 1,000,000 × ~108 bytes of log, so
//! compactions run while it fills (on their own thread), and the last one
//! may still be running when the figure is taken: it holds 56 bytes per
//! live message (not the payloads, which it copies from the sealed files),
//! about 45 MB for the last one here, and gives most of it back when done.
//!
//! ```text
//! cargo run --release --example memory
//! ```

use spool::{Durability, Queue};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// 64 bytes (serde implements arrays up to 32 elements, so eight `u64`s).
type Payload = [u64; 8];

const MESSAGES: usize = 1_000_000;
const BATCH: usize = 1_000;

/// A field of `/proc/self/status` in bytes (`VmRSS`: resident now;
/// `VmHWM`: the peak).
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("reading /proc/self/status (this example runs on Linux only)");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a size in kB");
    kib * 1024
}

fn rss() -> u64 {
    status("VmRSS")
}

fn fill(queue: &Queue<Payload>) {
    let producer = queue.producer();
    for first in (0..MESSAGES).step_by(BATCH) {
        let batch = (first..first + BATCH)
            .map(|i| [i as u64 | 1 << 63; 8])
            .collect();
        producer.send_batch(batch).unwrap();
    }
}

fn report(case: &str, before: u64, queue: &Queue<Payload>, started: Instant) {
    let after = rss();
    let stats = queue.stats();
    assert_eq!(stats.ready, MESSAGES);
    let grown = after - before;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "{case:>10}: {MESSAGES} ready 64-byte messages: RSS {:.1} MiB (was {:.1} MiB \
         before the queue; peak {:.1} MiB): {:.1} MiB for the queue, {} bytes per message; \
         filled in {:.2?}",
        mib(after),
        mib(before),
        mib(status("VmHWM")),
        mib(grown),
        grown / MESSAGES as u64,
        started.elapsed(),
    );
}

fn in_memory() {
    let before = rss();
    let started = Instant::now();
    let queue: Queue<Payload> = Queue::builder().capacity(MESSAGES).open().unwrap();
    fill(&queue);
    report("in memory", before, &queue, started);
}

fn persistent() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-spool")
        .join(format!("memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let before = rss();
    let started = Instant::now();
    let queue: Queue<Payload> = Queue::builder()
        .capacity(MESSAGES)
        .path(&dir)
        .durability(Durability::None)
        .open()
        .unwrap();
    fill(&queue);
    queue.sync().unwrap();
    report("persistent", before, &queue, started);
    println!(
        "{:>10}  write-ahead files: {:.1} MiB in {}",
        "",
        queue.disk_usage().unwrap() as f64 / (1 << 20) as f64,
        dir.display()
    );
    drop(queue);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("in-memory") => in_memory(),
        Some("persistent") => persistent(),
        _ => {
            let me = std::env::current_exe().unwrap();
            for case in ["in-memory", "persistent"] {
                let status = Command::new(&me).arg(case).status().unwrap();
                assert!(status.success(), "{case} failed: {status}");
            }
        }
    }
}

//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and, one
//! named test each, the crashes the fuzzer found
//! (`fuzz/regressions/<target>/`) through the fuzz targets' entry points,
//! on stable and without fuzzing: any input that panics fails the test.
//! Needs `--features fuzzing` (`.ci/run`).
//!
//! `write_seed_corpus` (ignored) writes the seed inputs the corpus grew
//! from: the files of real directories, written by queues through the
//! public API. See fuzz/README.md.

use spool::fuzzing::{
    frame_reader_target, join_directory, record_decode_target, recovery_target, Payload,
};
use spool::{Queue, SendOptions};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs every file under `fuzz/<folder>/<target>` through `run`; fails
/// naming every input that panicked. Returns how many inputs ran.
fn replay(folder: &str, target: &str, run: fn(&[u8])) -> usize {
    let dir = fuzz_dir().join(folder).join(target);
    let mut names: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    names.sort();
    let mut panicked = Vec::new();
    for path in &names {
        let input = fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(panicked.is_empty(), "inputs that panic: {panicked:#?}");
    names.len()
}

#[test]
fn record_decode_corpus_replays_without_panics() {
    assert!(replay("corpus", "record_decode", record_decode_target) > 0);
}

#[test]
fn frame_reader_corpus_replays_without_panics() {
    assert!(replay("corpus", "frame_reader", frame_reader_target) > 0);
}

#[test]
fn recovery_corpus_replays_without_panics() {
    assert!(replay("corpus", "recovery", recovery_target) > 0);
}

/// Every crash the fuzzer found, by name (fuzz/regressions/<target>/).
fn regression(target: &str, name: &str, run: fn(&[u8])) {
    let path = fuzz_dir().join("regressions").join(target).join(name);
    run(&fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
}

/// Salvage cut a torn tail holding the frame that vouched for an earlier
/// skipped region: recovering the repaired directory again lost the frames
/// between (`wal::tests::corruption::
/// salvage_keeps_the_frame_that_vouched_for_a_skipped_region`).
#[test]
fn recovery_salvage_torn_tail_cuts_voucher() {
    regression(
        "recovery",
        "salvage-torn-tail-cuts-voucher",
        recovery_target,
    );
    regression(
        "recovery",
        "salvage-torn-tail-cuts-voucher-full",
        recovery_target,
    );
}

// ---------------------------------------------------------------------
// The seed corpus.

/// The files of a queue's directory, by name, without the lock file.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(name, _)| name != "LOCK")
        .collect();
    files.sort();
    files
}

/// The frame bodies of a log file (header of 64 bytes, then frames of a
/// 16-byte header with the body's length at bytes 4..8).
fn bodies(file: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 64;
    while at + 16 <= file.len() {
        let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        let Some(body) = file.get(at + 16..at + 16 + len) else {
            break;
        };
        out.push(body);
        at += 16 + len;
    }
    out
}

fn open(dir: &Path) -> Queue<Payload> {
    Queue::builder()
        .path(dir)
        .segment_size(2048)
        .max_receives(2)
        .visibility_timeout(Duration::from_secs(60))
        .open()
        .unwrap()
}

/// Sends, receives and settles every way there is, and leaves some
/// messages delayed and dead-lettered, and one in flight (returned).
fn workload(queue: &Queue<Payload>, round: usize) -> spool::Delivery<Payload> {
    let producer = queue.producer();
    let consumer = queue.consumer();
    for i in 0..6 {
        let options = match i % 3 {
            0 => SendOptions::new().key(format!("key-{round}-{i}")),
            1 => SendOptions::new().delay(Duration::from_secs(3600)),
            _ => SendOptions::new(),
        };
        producer
            .send_with(format!("job {round}.{i}"), options)
            .unwrap();
    }
    producer
        .send_batch(vec!["batch a".into(), "batch b".into(), "batch c".into()])
        .unwrap();
    let first = consumer.try_recv().unwrap();
    first.ack().unwrap();
    consumer
        .try_recv()
        .unwrap()
        .fail("could not parse")
        .unwrap();
    consumer
        .try_recv()
        .unwrap()
        .dead_letter("no such image")
        .unwrap();
    let batch = consumer.recv_batch(2, Duration::ZERO).unwrap();
    batch.ack().unwrap();
    let dead = queue.dead_letters();
    if let Some(letter) = dead.list().first() {
        dead.redrive_with(letter.id(), "fixed".into()).unwrap();
    }
    if round % 2 == 1 {
        consumer.try_recv().unwrap().dead_letter("again").unwrap();
        dead.purge().unwrap();
    }
    consumer.try_recv().unwrap()
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand (fuzz/README.md)"]
fn write_seed_corpus() {
    let mut directories = Vec::new();
    // One open; several opens (several segments); enough opens that an
    // open compacts the sealed segments into a base file.
    for (name, opens) in [("once", 1), ("reopened", 3), ("compacted", 10)] {
        let tmp = tempfile::tempdir().unwrap();
        for round in 0..opens {
            let queue = open(tmp.path());
            let in_flight = workload(&queue, round);
            if round + 1 == opens {
                // As a crash would leave it: the last delivery unsettled.
                directories.push((name, files_of(tmp.path())));
            }
            drop(in_flight);
        }
    }
    let corpus = fuzz_dir().join("corpus");
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
    };
    for (name, files) in &directories {
        // As they are, and asking for the checksums to be fixed (they are
        // right already) so that mutations of the records reach replay.
        for (salvage, fix) in [(false, 0), (true, 0), (false, 3), (true, 3)] {
            let input = join_directory(salvage, fix, files);
            write("recovery", format!("seed-{name}-{salvage}-{fix}"), &input);
        }
        for (file, bytes) in files {
            for flags in [3u8, 0] {
                let mut input = vec![flags, 0, 0];
                input.extend_from_slice(bytes);
                write(
                    "frame_reader",
                    format!("seed-{name}-{file}-{flags}"),
                    &input,
                );
            }
            for (i, body) in bodies(bytes).into_iter().enumerate() {
                write("record_decode", format!("seed-{name}-{file}-{i}"), body);
            }
        }
    }
}

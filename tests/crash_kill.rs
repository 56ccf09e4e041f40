//! A real `kill -9`: the durability contract of `docs/FORMAT.md` and
//! DESIGN section 3, checked against a process that dies at a random moment.
//!
//! As sled's crash harness does, the test binary runs itself as the child
//! ([`crash_child`], which returns at once unless `SPOOL_CRASH_DIR` is set).
//! The child opens a persistent queue (`Durability::Sync`) in a directory
//! and works on it at random: sends (plain, keyed, batches), receives
//! (one message, or a batch split into deliveries or kept whole), acks,
//! nacks, fails, drops, dead-letters, redrives, purges, whole-batch acks,
//! nacks and drops, and lets some leases expire. Around each operation it
//! writes a line to stdout: `? <op>` before it and `! <result>` once the
//! call returned `Ok`. The parent reads the lines through a pipe, kills the
//! child with SIGKILL at a random moment, reopens the directory itself and
//! checks it against a model built from the `!` lines; only the last
//! operation, begun (`?`) but not reported (`!`), may have happened or not:
//!
//! - every message whose send was reported is there (ready or dead-lettered)
//!   unless its ack (or a purge) was reported; no acked message comes back;
//! - a ready message's delivery count is its last reported count plus one
//!   (the delivery the parent makes): receive counts never go down; one
//!   that reached `max_receives` is dead-lettered;
//! - reported dead letters are in the dead-letter queue with their reason,
//!   unless redriven or purged since;
//! - idempotency keys survive: a keyed send reported as new never reuses a
//!   key, and a duplicate names the original id;
//! - a batch kept whole is settled whole: a reported batch ack removes
//!   every message of it for good; a batch ack cut short by the kill
//!   removes all of them or none (its ack records are one append, which
//!   the writer never splits across frames, and a frame recovers whole or
//!   not at all: FORMAT.md, section 4). A tenth of the kills aim at such
//!   an ack, which a random moment seldom hits.
//!
//! The parent then settles what it saw into the model (its own deliveries
//! count as receives) and the next child reopens the same directory, so
//! the state, and the files, accumulate over the cycles.
//!
//! `SPOOL_CRASH_CYCLES` sets the number of cycles (30 by default) and
//! `SPOOL_CRASH_SEED` the seed (printed on failure).

#![cfg(unix)]

mod common;

use common::Rng;
use spool::{
    Batch, DeadLetterReason, Delivery, Durability, Queue, RecvError, SendOptions, SettleError,
};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Deliveries before a message is dead-lettered (small, so it happens).
const MAX_RECEIVES: u32 = 3;
/// The child's lease: short enough that some expire while it runs.
const CHILD_LEASE: Duration = Duration::from_millis(40);
/// The longest a child runs before it is killed.
const MAX_RUN: Duration = Duration::from_secs(1);
/// Watchdog for anything the parent waits on; only a bug reaches it.
const WATCHDOG: Duration = Duration::from_secs(10);
/// The child sends no more while this many messages are live.
const MAX_BACKLOG: usize = 200;
/// Keyed sends draw their key from this many, so keys get reused.
const KEYS: u64 = 150;

// ---------------------------------------------------------------------------
// The child.

/// The child's side. Returns at once in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("SPOOL_CRASH_DIR") else {
        return;
    };
    let seed: u64 = env_number("SPOOL_CRASH_CHILD_SEED").expect("seed");
    let cycle: u64 = env_number("SPOOL_CRASH_CHILD_CYCLE").expect("cycle");
    Worker::new(Path::new(&dir), seed, cycle).run();
}

struct Worker {
    queue: Queue<String>,
    rng: Rng,
    cycle: u64,
    sent: u64,
    serial: u64,
    held: Vec<Held>,
    out: std::io::StdoutLock<'static>,
}

/// What the child holds a lease on, by the serial it reported.
enum Held {
    /// One message (received alone, or split from a batch).
    One(u64, Delivery<String>),
    /// A batch kept whole: one lease for all its messages, settled whole.
    Whole(u64, Batch<String>),
}

impl Worker {
    fn new(dir: &Path, seed: u64, cycle: u64) -> Self {
        let mut out = std::io::stdout().lock();
        // Whatever the test harness printed stays on a line of its own.
        writeln!(out).unwrap();
        let queue = open(dir, CHILD_LEASE).expect("child: open");
        let mut child = Worker {
            queue,
            rng: Rng::new(seed),
            cycle,
            sent: 0,
            serial: 0,
            held: Vec::new(),
            out,
        };
        child.say("! open");
        child
    }

    /// Writes one line of the protocol and flushes it.
    fn say(&mut self, line: &str) {
        self.out.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.out.flush().unwrap();
    }

    fn run(mut self) {
        let give_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < give_up {
            let stats = self.queue.stats();
            let full = stats.ready + stats.in_flight >= MAX_BACKLOG;
            match self.rng.below(100) {
                0..=21 if !full => self.send_plain(),
                22..=31 if !full => self.send_keyed(),
                32..=39 if !full => self.send_batch(),
                0..=64 => self.receive(),
                65..=91 => self.settle(),
                92..=95 => self.redrive(),
                96 => self.purge(),
                _ => {
                    // Lets the leases held now run out.
                    self.say("? pause");
                    thread::sleep(CHILD_LEASE);
                    self.say("! pause");
                }
            }
            if self.held.len() > 8 {
                self.settle();
            }
        }
        panic!("child: not killed within 20 s");
    }

    fn payload(&mut self) -> String {
        self.sent += 1;
        format!("m{}x{}", self.cycle, self.sent)
    }

    fn send_plain(&mut self) {
        let payload = self.payload();
        self.say(&format!("? send {payload}"));
        let id = self.queue.producer().send(payload.clone()).expect("send");
        self.say(&format!("! sent {} {payload}", id.get()));
    }

    fn send_keyed(&mut self) {
        let k = self.rng.below(KEYS);
        let (key, payload) = (format!("key{k}"), format!("k{k}"));
        self.say(&format!("? send {payload} {key}"));
        let options = SendOptions::new().key(key.as_str());
        let sent = self.queue.producer().send_with(payload.clone(), options);
        let sent = sent.expect("keyed send");
        let verb = if sent.is_duplicate() { "dup" } else { "sent" };
        self.say(&format!("! {verb} {} {payload} {key}", sent.id().get()));
    }

    fn send_batch(&mut self) {
        let n = 2 + self.rng.below(3);
        let payloads: Vec<String> = (0..n).map(|_| self.payload()).collect();
        self.say(&format!("? batch {}", payloads.join(" ")));
        let ids = self.queue.producer().send_batch(payloads.clone());
        let ids = ids.expect("send_batch");
        let sent: Vec<String> = ids
            .iter()
            .zip(&payloads)
            .map(|(id, p)| format!("{}:{p}", id.get()))
            .collect();
        self.say(&format!("! batch {}", sent.join(" ")));
    }

    fn receive(&mut self) {
        self.say("? recv");
        let consumer = self.queue.consumer();
        let wait = Duration::from_millis(2);
        let received = match self.rng.below(6) {
            0 => consumer
                .recv_batch(3, wait)
                .map(|batch| batch.into_deliveries()),
            1 => match consumer.recv_batch(3, wait) {
                Ok(batch) => return self.keep_whole(batch),
                Err(e) => Err(e),
            },
            _ => consumer.recv_timeout(wait).map(|d| vec![d]),
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(RecvError::Timeout) => Vec::new(),
            Err(other) => panic!("child: recv: {other:?}"),
        };
        let mut line = String::from("! recv");
        for delivery in deliveries {
            self.serial += 1;
            let (id, count) = (delivery.id().get(), delivery.receive_count());
            line += &format!(" {id}:{count}:{}", self.serial);
            self.held.push(Held::One(self.serial, delivery));
        }
        self.say(&line);
    }

    /// Reports a batch kept whole: `! recvbatch <serial> <id>:<count>...`,
    /// one serial for its one lease.
    fn keep_whole(&mut self, batch: Batch<String>) {
        self.serial += 1;
        let mut line = format!("! recvbatch {}", self.serial);
        for message in batch.messages() {
            line += &format!(" {}:{}", message.id().get(), message.receive_count());
        }
        self.say(&line);
        self.held.push(Held::Whole(self.serial, batch));
    }

    /// Settles a batch kept whole: ack, nack or drop, all its messages at
    /// once. Lines: `? <verb>batch <serial> <id>...`, then the same with
    /// `!`, or `! stalebatch <serial> <id>...` if its lease had run out.
    fn settle_whole(&mut self, serial: u64, batch: Batch<String>) {
        let ids: Vec<String> = batch.messages().map(|m| m.id().get().to_string()).collect();
        let what = format!("{serial} {}", ids.join(" "));
        let (verb, result) = match self.rng.below(100) {
            0..=54 => {
                self.say(&format!("? ackbatch {what}"));
                ("ackbatch", batch.ack())
            }
            55..=79 => {
                self.say(&format!("? nackbatch {what}"));
                ("nackbatch", batch.nack())
            }
            _ => {
                self.say(&format!("? dropbatch {what}"));
                drop(batch);
                ("dropbatch", Ok(()))
            }
        };
        match result {
            Ok(()) => self.say(&format!("! {verb} {what}")),
            Err(SettleError::LeaseExpired { .. }) => self.say(&format!("! stalebatch {what}")),
            Err(other) => panic!("child: {verb} {what}: {other:?}"),
        }
    }

    fn settle(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let at = self.rng.below(self.held.len() as u64) as usize;
        let (serial, delivery) = match self.held.swap_remove(at) {
            Held::One(serial, delivery) => (serial, delivery),
            Held::Whole(serial, batch) => return self.settle_whole(serial, batch),
        };
        let id = delivery.id().get();
        let (verb, result) = match self.rng.below(100) {
            0..=44 => {
                self.say(&format!("? ack {id} {serial}"));
                ("ack", delivery.ack())
            }
            45..=59 => {
                self.say(&format!("? nack {id} {serial}"));
                ("nack", delivery.nack())
            }
            60..=74 => {
                self.say(&format!("? fail {id} {serial}"));
                ("fail", delivery.fail(format!("attempt{serial}")))
            }
            75..=84 => {
                let reason = format!("rejected{serial}");
                self.say(&format!("? dead {id} {serial} {reason}"));
                let result = delivery.dead_letter(reason.as_str());
                let line = format!("! dead {id} {serial} {reason}");
                return self.settled(line, id, serial, result);
            }
            _ => {
                self.say(&format!("? drop {id} {serial}"));
                drop(delivery);
                ("drop", Ok(()))
            }
        };
        self.settled(format!("! {verb} {id} {serial}"), id, serial, result);
    }

    fn settled(&mut self, line: String, id: u64, serial: u64, result: Result<(), SettleError>) {
        match result {
            Ok(()) => self.say(&line),
            Err(SettleError::LeaseExpired { .. }) => {
                self.say(&format!("! stale {id} {serial}"));
            }
            Err(other) => panic!("child: settle {id}: {other:?}"),
        }
    }

    fn redrive(&mut self) {
        let letters = self.queue.dead_letters().list();
        if letters.is_empty() {
            return;
        }
        let id = letters[self.rng.below(letters.len() as u64) as usize].id();
        self.say(&format!("? redrive {}", id.get()));
        self.queue.dead_letters().redrive(id).expect("redrive");
        self.say(&format!("! redrive {}", id.get()));
    }

    fn purge(&mut self) {
        // Only with nothing held: no lease can then expire into the
        // dead-letter queue unseen while it is purged.
        if !self.held.is_empty() {
            return;
        }
        self.say("? purge");
        let purged = self.queue.dead_letters().purge().expect("purge");
        self.say(&format!("! purge {purged}"));
    }
}

// ---------------------------------------------------------------------------
// The parent.

#[test]
fn every_reported_operation_survives_kill_9_at_a_random_moment() {
    let cycles: u64 = env_number("SPOOL_CRASH_CYCLES").unwrap_or(30);
    let seed: u64 = env_number("SPOOL_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_nanos() as u64
    });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut model = Model::default();
    let mut totals = Totals::default();
    for cycle in 0..cycles {
        let cycle_seed = Rng::new(seed ^ cycle.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next();
        let context = format!("cycle {cycle} of seed {seed} (SPOOL_CRASH_SEED={seed})");
        let lines = run_child(dir.path(), cycle_seed, cycle, &context);
        let pending = model.apply_lines(&lines, &context);
        totals.lines += lines.len();
        totals.uncertain += usize::from(pending.is_some());
        model.check_reopen(dir.path(), pending.as_deref(), &context, &mut totals);
    }
    eprintln!(
        "crash_kill: {cycles} kill -9 cycles in {:.1?} (seed {seed}): {} protocol lines; \
         {} messages sent, {} acked; after the reopens {} message states checked \
         ({} ready, {} dead-lettered, the rest gone); {} kills between an operation and \
         its report, {} unreported sends found; {} torn bytes truncated; up to {} files \
         read on reopen, {} obsolete files removed; whole batches settled: {} acked, \
         {} nacked, {} dropped, {} stale; {} kills during a whole-batch ack ({} found it \
         done, all or none)",
        started.elapsed(),
        totals.lines,
        model.messages.len(),
        model.acked,
        totals.checked,
        totals.found_ready,
        totals.found_dead,
        totals.uncertain,
        totals.found_unreported,
        totals.torn_bytes,
        totals.most_files,
        totals.obsolete_removed,
        model.whole_settled[0],
        model.whole_settled[1],
        model.whole_settled[2],
        model.whole_settled[3],
        totals.cut_batch_acks,
        totals.cut_batch_acks_done,
    );
    assert!(totals.checked > 0, "no message was ever checked");
}

#[derive(Default)]
struct Totals {
    lines: usize,
    checked: usize,
    uncertain: usize,
    found_ready: usize,
    found_dead: usize,
    found_unreported: usize,
    torn_bytes: u64,
    most_files: usize,
    obsolete_removed: usize,
    /// Kills between `? ackbatch` and its report, and how many of those
    /// found the batch acknowledged.
    cut_batch_acks: usize,
    cut_batch_acks_done: usize,
}

/// Runs one child until it is killed; returns the complete lines it wrote.
fn run_child(dir: &Path, seed: u64, cycle: u64, context: &str) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("SPOOL_CRASH_DIR", dir)
        .env("SPOOL_CRASH_CHILD_SEED", seed.to_string())
        .env("SPOOL_CRASH_CHILD_CYCLE", cycle.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = read_lines(&mut child);
    let spawned = Instant::now();
    let mut seen = Vec::new();
    // When to kill: a few times right after the spawn (during the child's
    // recovery, perhaps), else after some lines or some time of work.
    // One in ten aims at a whole-batch ack, which a kill at a random
    // moment seldom cuts short.
    let plan = match rng.below(10) {
        0 => Kill::AfterSpawn(Duration::from_micros(rng.below(30_000))),
        1..=4 => Kill::AfterLines(1 + rng.below(400) as usize),
        5 => Kill::AtBatchAck(1 + rng.below(3) as usize),
        _ => Kill::AfterOpen(Duration::from_micros(rng.below(300_000))),
    };
    let mut batch_acks_begun = 0;
    let mut opened: Option<Instant> = None;
    let mut child_exited_early = false;
    loop {
        let now = Instant::now();
        let kill_at = match (plan, opened) {
            (Kill::AfterSpawn(d), _) => spawned + d,
            (_, None) => spawned + WATCHDOG,
            (Kill::AfterOpen(d), Some(at)) => at + d,
            (Kill::AfterLines(_) | Kill::AtBatchAck(_), Some(at)) => at + MAX_RUN,
        };
        if now >= kill_at {
            assert!(
                opened.is_some() || plan.is_after_spawn(),
                "{context}: child did not open within {WATCHDOG:?}"
            );
            break;
        }
        match lines.recv_timeout(kill_at - now) {
            Ok(Some(line)) => {
                if line == "! open" {
                    opened = Some(Instant::now());
                }
                seen.push(line);
                match plan {
                    Kill::AfterLines(n) if opened.is_some() && seen.len() >= n => break,
                    Kill::AtBatchAck(n) if seen.last().unwrap().starts_with("? ackbatch ") => {
                        batch_acks_begun += 1;
                        if batch_acks_begun >= n {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                child_exited_early = true;
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !child_exited_early && status.signal() == Some(9),
        "{context}: the child ended by itself ({status}) instead of being killed"
    );
    // Everything the child wrote before it died, to the end of the pipe.
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(Some(line)) => seen.push(line),
            Ok(None) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("{context}: child's pipe not closed"),
        }
    }
    seen
}

/// When the parent kills the child.
#[derive(Clone, Copy)]
#[allow(clippy::enum_variant_names)] // reads as "kill after ..."
enum Kill {
    /// This long after the spawn (perhaps during the child's recovery).
    AfterSpawn(Duration),
    /// This long after the child opened the queue.
    AfterOpen(Duration),
    /// Once the child wrote this many lines.
    AfterLines(usize),
    /// As soon as the child began this many whole-batch acks.
    AtBatchAck(usize),
}

impl Kill {
    fn is_after_spawn(self) -> bool {
        matches!(self, Kill::AfterSpawn(_))
    }
}

/// Reads the child's stdout on a thread: each complete protocol line, then
/// `None` at the end. A last line cut short by the kill is not a report.
fn read_lines(child: &mut Child) -> Receiver<Option<String>> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    let line = line.trim_end_matches('\n');
                    if line.starts_with("? ") || line.starts_with("! ") {
                        let _ = tx.send(Some(line.to_owned()));
                    }
                }
                _ => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Ready, delayed or in flight: comes back ready (or dead-lettered if
    /// its count reached `MAX_RECEIVES`). `holder` is the serial of the
    /// child's delivery that holds its lease.
    Live { count: u32, holder: Option<u64> },
    Dead {
        count: u32,
        reason: DeadLetterReason,
    },
    /// Acked or purged.
    Gone,
}

#[derive(Debug)]
struct Message {
    payload: String,
    state: State,
}

#[derive(Default)]
struct Model {
    messages: BTreeMap<u64, Message>,
    keys: HashMap<String, u64>,
    max_id: u64,
    acked: usize,
    /// The messages of each batch the current child keeps whole, by its
    /// serial (serials start again with each child).
    batches: HashMap<u64, Vec<u64>>,
    /// Whole-batch settlements reported: ack, nack, drop, stale.
    whole_settled: [usize; 4],
}

impl Model {
    /// Applies the reported operations; returns the last operation begun
    /// but not reported, if any.
    fn apply_lines(&mut self, lines: &[String], context: &str) -> Option<Vec<String>> {
        let mut pending = None;
        for (n, line) in lines.iter().enumerate() {
            let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
            if words[0] == "?" {
                pending = Some(words[1..].to_vec());
            } else {
                let context = format!("{context}, line {n} `{line}`");
                self.apply(&words[1..], &context);
                pending = None;
            }
        }
        pending
    }

    fn apply(&mut self, words: &[String], context: &str) {
        let num = |i: usize| -> u64 { words[i].parse().unwrap() };
        match words[0].as_str() {
            "open" | "pause" => {}
            "sent" => self.enqueued(num(1), &words[2], words.get(3), context),
            "dup" => {
                let original = self.keys.get(&words[3]).copied();
                assert_eq!(original, Some(num(1)), "{context}: duplicate of another id");
                assert_eq!(self.messages[&num(1)].payload, words[2], "{context}");
            }
            "batch" => {
                for item in &words[1..] {
                    let (id, payload) = item.split_once(':').unwrap();
                    self.enqueued(id.parse().unwrap(), payload, None, context);
                }
            }
            "recv" => {
                for item in &words[1..] {
                    let parts: Vec<u64> = item.split(':').map(|x| x.parse().unwrap()).collect();
                    self.received(parts[0], parts[1] as u32, parts[2], context);
                }
            }
            "recvbatch" => {
                let serial = num(1);
                let mut ids = Vec::new();
                for item in &words[2..] {
                    let (id, count) = item.split_once(':').unwrap();
                    let id: u64 = id.parse().unwrap();
                    self.received(id, count.parse().unwrap(), serial, context);
                    ids.push(id);
                }
                assert!(!ids.is_empty(), "{context}: an empty batch");
                let previous = self.batches.insert(serial, ids);
                assert_eq!(previous, None, "{context}: serial {serial} reused");
            }
            "ackbatch" | "nackbatch" | "dropbatch" | "stalebatch" => {
                let verb = words[0].as_str();
                let serial = num(1);
                let ids = self.batches.remove(&serial);
                let listed: Vec<u64> = words[2..].iter().map(|w| w.parse().unwrap()).collect();
                assert_eq!(
                    ids.as_ref(),
                    Some(&listed),
                    "{context}: not the batch received"
                );
                for &id in &listed {
                    match verb {
                        // The batch's lease was current: every message of
                        // it was still held through it.
                        "ackbatch" => {
                            self.held(id, serial, context);
                            self.message(id, context).state = State::Gone;
                            self.acked += 1;
                        }
                        "nackbatch" => {
                            let count = self.held(id, serial, context);
                            self.message(id, context).state = released(count);
                        }
                        // As for one delivery: its lease may have run out,
                        // and each message been received again since.
                        _ => self.release_if_held(id, serial, context),
                    }
                }
                let which = ["ackbatch", "nackbatch", "dropbatch", "stalebatch"];
                let which = which.iter().position(|w| *w == verb).unwrap();
                self.whole_settled[which] += 1;
            }
            "ack" => {
                self.held(num(1), num(2), context);
                self.message(num(1), context).state = State::Gone;
                self.acked += 1;
            }
            "stale" | "drop" => self.release_if_held(num(1), num(2), context),
            "nack" | "fail" => {
                let count = self.held(num(1), num(2), context);
                self.message(num(1), context).state = released(count);
            }
            "dead" => {
                let count = self.held(num(1), num(2), context);
                let reason = DeadLetterReason::Rejected(words[3].clone());
                self.message(num(1), context).state = State::Dead { count, reason };
            }
            "redrive" => {
                let message = self.message(num(1), context);
                match message.state {
                    State::Dead { .. } => {}
                    // Dead-lettered by its lease's expiry, unseen.
                    State::Live { count, .. } if count >= MAX_RECEIVES => {}
                    ref other => panic!("{context}: redrove a message that was {other:?}"),
                }
                message.state = State::Live {
                    count: 0,
                    holder: None,
                };
            }
            "purge" => {
                let mut dead = 0;
                for message in self.messages.values_mut() {
                    if let State::Dead { .. } = message.state {
                        message.state = State::Gone;
                        dead += 1;
                    }
                }
                assert_eq!(num(1), dead, "{context}: purged count");
            }
            other => panic!("{context}: unknown report {other}"),
        }
    }

    /// The child's delivery `serial` received `id` with `count`.
    fn received(&mut self, id: u64, count: u32, serial: u64, context: &str) {
        let message = self.message(id, context);
        match message.state {
            State::Live { count: before, .. } => assert_eq!(
                count,
                before + 1,
                "{context}: receive count of #{id} (was {before})"
            ),
            ref other => panic!("{context}: received #{id} while {other:?}"),
        }
        assert!(
            count <= MAX_RECEIVES,
            "{context}: delivered past max_receives"
        );
        message.state = State::Live {
            count,
            holder: Some(serial),
        };
    }

    /// A settlement through a lease that ran out (and may have been
    /// replaced by a newer delivery), or a drop: changes the message only
    /// if the expiry has not been seen, by releasing it as a nack would.
    fn release_if_held(&mut self, id: u64, serial: u64, context: &str) {
        let message = self.message(id, context);
        if let State::Live {
            count,
            holder: Some(holder),
        } = message.state
        {
            if holder == serial {
                message.state = released(count);
            }
        }
    }

    fn enqueued(&mut self, id: u64, payload: &str, key: Option<&String>, context: &str) {
        assert!(
            id > self.max_id,
            "{context}: id #{id} not above #{}",
            self.max_id
        );
        self.max_id = id;
        if let Some(key) = key {
            let previous = self.keys.insert(key.clone(), id);
            assert_eq!(
                previous, None,
                "{context}: key {key} enqueued twice within its window"
            );
        }
        let state = State::Live {
            count: 0,
            holder: None,
        };
        let payload = payload.to_owned();
        self.messages.insert(id, Message { payload, state });
    }

    fn message(&mut self, id: u64, context: &str) -> &mut Message {
        self.messages
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{context}: unknown message #{id}"))
    }

    /// Checks that the child's delivery `serial` held `id`'s lease (an
    /// operation through it succeeded); returns the receive count.
    fn held(&mut self, id: u64, serial: u64, context: &str) -> u32 {
        match self.message(id, context).state {
            State::Live {
                count,
                holder: Some(holder),
            } if holder == serial => count,
            ref other => panic!("{context}: settled through delivery {serial} while {other:?}"),
        }
    }

    /// Reopens the directory and checks every message against the model,
    /// allowing the `pending` operation to have happened or not; then
    /// takes in what was found (including the parent's own deliveries).
    fn check_reopen(
        &mut self,
        dir: &Path,
        pending: Option<&[String]>,
        context: &str,
        totals: &mut Totals,
    ) {
        let queue = open(dir, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{context}: reopen after kill -9: {e}"));
        let report = queue
            .recovery_report()
            .expect("a persistent queue has a report");
        assert!(report.salvaged.is_empty(), "{context}: {report:?}");
        totals.torn_bytes += report.torn_bytes;
        totals.most_files = totals.most_files.max(report.files_read);
        totals.obsolete_removed += report.obsolete_files_removed;
        let stats = queue.stats();
        assert_eq!(stats.delayed, 0, "{context}: the child delays nothing");
        assert_eq!(stats.in_flight, 0, "{context}");

        let dead: BTreeMap<u64, (u32, DeadLetterReason, String)> = queue
            .dead_letters()
            .list()
            .into_iter()
            .map(|l| {
                (
                    l.id().get(),
                    (l.receive_count(), l.reason().clone(), l.payload().clone()),
                )
            })
            .collect();
        let consumer = queue.consumer();
        let mut deliveries = BTreeMap::new();
        loop {
            match consumer.try_recv() {
                Ok(delivery) => {
                    let id = delivery.id().get();
                    assert!(
                        deliveries.insert(id, delivery).is_none(),
                        "{context}: #{id} twice"
                    );
                }
                Err(RecvError::Empty) => break,
                Err(other) => panic!("{context}: parent recv: {other:?}"),
            }
        }

        let op = pending.map(|p| p[0].as_str()).unwrap_or("");
        let whole = matches!(op, "ackbatch" | "nackbatch" | "dropbatch");
        let pending_id = pending
            .and_then(|p| p.get(1))
            .filter(|_| !whole)
            .and_then(|w| w.parse::<u64>().ok());
        // A whole-batch ack cut short by the kill: its ack records are one
        // append, which the writer never splits across frames, and a frame
        // recovers whole or not at all (FORMAT.md, section 4). So either
        // every message of the batch is gone or none is, and all of them
        // only if the batch still held every one (else the ack failed).
        let (cut_serial, cut_batch): (u64, Vec<u64>) = match pending {
            Some(p) if op == "ackbatch" => {
                let ids = p[2..].iter().map(|w| w.parse().unwrap()).collect();
                (p[1].parse().unwrap(), ids)
            }
            _ => (0, Vec::new()),
        };
        let cut_batch_held = cut_batch.iter().all(|id| {
            matches!(
                self.messages.get(id).map(|m| &m.state),
                Some(State::Live { holder: Some(h), .. }) if *h == cut_serial
            )
        });
        let mut cut_batch_gone = 0;
        let may_be_new: Vec<&str> = match op {
            "send" => vec![pending.unwrap()[1].as_str()],
            "batch" => pending.unwrap()[1..].iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        let mut purge_happened = None;

        for (&id, message) in &mut self.messages {
            let context = format!("{context}: #{id} ({:?})", message.state);
            let in_dlq = dead.get(&id);
            let ready = deliveries.get(&id);
            if let Some((_, _, payload)) = in_dlq {
                assert_eq!(payload, &message.payload, "{context}: payload");
            }
            if let Some(delivery) = ready {
                assert_eq!(**delivery, message.payload, "{context}: payload");
            }
            let this = pending_id == Some(id);
            match &message.state {
                State::Gone => assert!(
                    in_dlq.is_none() && ready.is_none(),
                    "{context}: acknowledged or purged, but came back"
                ),
                State::Dead { count, reason } => match (in_dlq, ready) {
                    (Some((c, r, _)), None) => {
                        assert_eq!((c, r), (count, reason), "{context}: dead letter");
                        if op == "purge" {
                            assert_ne!(purge_happened, Some(true), "{context}: half a purge");
                            purge_happened = Some(false);
                        }
                    }
                    (None, None) if op == "purge" => {
                        assert_ne!(purge_happened, Some(false), "{context}: half a purge");
                        purge_happened = Some(true);
                    }
                    (None, Some(d)) if op == "redrive" && this => {
                        assert_eq!(d.receive_count(), 1, "{context}: redriven");
                    }
                    _ => panic!("{context}: reported dead letter is missing from the DLQ"),
                },
                State::Live { count, .. } => {
                    let count = *count;
                    let recv = op == "recv";
                    match (in_dlq, ready) {
                        (None, Some(d)) => {
                            let before = d.receive_count() - 1;
                            // Dead-lettered by an unseen expiry, then redriven.
                            let redriven = op == "redrive" && this && before == 0;
                            assert!(
                                before == count || (recv && before == count + 1) || redriven,
                                "{context}: came back with receive count {before}"
                            );
                            assert!(before < MAX_RECEIVES, "{context}: count {before} not dead");
                        }
                        (Some((c, r, _)), None) => {
                            let rejected = op == "dead" && this;
                            let ok = match r {
                                DeadLetterReason::MaxReceives(n) => {
                                    n == c
                                        && (*c == count || (recv && *c == count + 1))
                                        && *c >= MAX_RECEIVES
                                }
                                DeadLetterReason::Rejected(_) => rejected && *c == count,
                                _ => false,
                            };
                            assert!(ok, "{context}: dead-lettered as {r:?} with count {c}");
                        }
                        (None, None) if cut_batch.contains(&id) => cut_batch_gone += 1,
                        (None, None) => assert!(
                            op == "ack" && this,
                            "{context}: sent (and not acked) but missing after the crash"
                        ),
                        (Some(_), Some(_)) => panic!("{context}: both ready and dead"),
                    }
                }
            }
            totals.checked += 1;
            totals.found_ready += usize::from(ready.is_some());
            totals.found_dead += usize::from(in_dlq.is_some());
        }

        if !cut_batch.is_empty() {
            assert!(
                cut_batch_gone == 0 || (cut_batch_held && cut_batch_gone == cut_batch.len()),
                "{context}: the ack of batch {cut_serial} {cut_batch:?} (held whole: \
                 {cut_batch_held}), cut short by the kill, left {cut_batch_gone} of its \
                 messages acknowledged: all or none"
            );
            totals.cut_batch_acks += 1;
            totals.cut_batch_acks_done += usize::from(cut_batch_gone > 0);
        }
        self.batches.clear(); // the next child numbers its own

        // Messages the model does not know: only the unreported send.
        let known = |id: &u64| self.messages.contains_key(id);
        for (&id, delivery) in deliveries.iter().filter(|(id, _)| !known(id)) {
            assert!(
                id > self.max_id && may_be_new.contains(&delivery.as_str()),
                "{context}: unknown message #{id} {:?} came back",
                **delivery
            );
            assert_eq!(delivery.receive_count(), 1, "{context}: new #{id}");
            totals.found_unreported += 1;
        }
        let unknown_dead = dead.keys().find(|id| !known(id));
        assert_eq!(unknown_dead, None, "{context}: unknown dead letter");

        // Take in what was found; the parent's deliveries count as receives.
        for (&id, delivery) in &deliveries {
            let count = delivery.receive_count();
            let message = self.messages.entry(id).or_insert_with(|| Message {
                payload: (**delivery).clone(),
                state: State::Gone,
            });
            self.max_id = self.max_id.max(id);
            if op == "send" && pending.unwrap().len() == 3 && pending.unwrap()[1] == **delivery {
                self.keys.entry(pending.unwrap()[2].clone()).or_insert(id);
            }
            message.state = released(count);
        }
        for (id, message) in &mut self.messages {
            if let Some((count, reason, _)) = dead.get(id) {
                let (count, reason) = (*count, reason.clone());
                message.state = State::Dead { count, reason };
            } else if !deliveries.contains_key(id) {
                if let State::Live { .. } = message.state {
                    self.acked += 1; // the unreported ack
                }
                message.state = State::Gone;
            }
        }
        drop(deliveries); // nacks; those at MAX_RECEIVES are dead-lettered
        queue.sync().unwrap();
        let live = self.count(|s| matches!(s, State::Live { .. }));
        let dead = self.count(|s| matches!(s, State::Dead { .. }));
        let stats = queue.stats();
        assert_eq!(
            (stats.ready, stats.dead_letters),
            (live, dead),
            "{context}: after the parent's nacks"
        );
    }

    fn count(&self, which: impl Fn(&State) -> bool) -> usize {
        self.messages.values().filter(|m| which(&m.state)).count()
    }
}

/// Where a message goes when a delivery with `count` ends unacked.
fn released(count: u32) -> State {
    if count >= MAX_RECEIVES {
        let reason = DeadLetterReason::MaxReceives(count);
        State::Dead { count, reason }
    } else {
        State::Live {
            count,
            holder: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Shared by both sides.

fn open(dir: &Path, lease: Duration) -> Result<Queue<String>, spool::OpenError> {
    Queue::builder()
        .path(dir)
        .durability(Durability::Sync)
        .capacity(10_000)
        .max_receives(MAX_RECEIVES)
        .backoff(spool::Backoff::None) // retries within the child's short run
        .visibility_timeout(lease)
        .segment_size(64 << 10)
        .open()
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().expect(name))
}

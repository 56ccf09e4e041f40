//! Helpers shared by the behaviour tests.
//!
//! Time-dependent tests drive a [`ManualClock`]; tests where real threads
//! must meet use [`in_thread`] and wait on its answer with a generous bound
//! ([`WAIT`]), asserting on what happened rather than on how long it took.

// Each test file uses only some of these.
#![allow(dead_code)]

pub mod redis_server;

use spool::{Backoff, Builder, Consumer, ManualClock, Queue};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

/// One nanosecond: the smallest step a [`ManualClock`] can take.
pub const NS: Duration = Duration::from_nanos(1);
/// One second.
pub const SEC: Duration = Duration::from_secs(1);

/// How long to wait for another thread to do what it must do. Generous:
/// only a bug makes a test wait this long, never a slow machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long to watch a thread that must stay blocked. A wrong unblock
/// would usually show within this; a right block never fails the check.
pub const STILL_BLOCKED: Duration = Duration::from_millis(100);

/// A builder for a queue of `u32` on a fresh manual clock, retrying at
/// once ([`Backoff::None`]; the default backoff is tested on its own).
pub fn manual() -> (ManualClock, Builder<u32>) {
    let clock = ManualClock::new();
    let builder = Queue::builder().clock(clock.clone()).backoff(Backoff::None);
    (clock, builder)
}

/// Runs `work` on a new thread; its result arrives on the returned channel.
pub fn in_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Receiver<R> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx
}

/// Receives and acks every message ready now, returning their payloads in
/// the order they were received.
pub fn ack_all_ready(consumer: &Consumer<u32>) -> Vec<u32> {
    let mut payloads = Vec::new();
    while let Ok(delivery) = consumer.try_recv() {
        payloads.push(*delivery);
        delivery.ack().unwrap();
    }
    payloads
}

/// SplitMix64: small, deterministic, no dependency; for the tests that
/// pick their actions from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

//! # Traffic spike: a bounded queue absorbs a burst and drops nothing
//!
//! 10,000 orders arrive at once from 4 producer threads. One consumer
//! handles 500 orders per second. The queue holds at most 1,000 messages.
//!
//! What you will see:
//!
//! 1. **Backpressure.** Once 1,000 orders are waiting, `send` blocks until
//!    the consumer acknowledges one, so the burst is accepted at the
//!    consumer's pace (about 18 s for the 9,000 that did not fit) and memory
//!    stays bounded. The example counts how often `try_send` would have
//!    returned `Full` and how long the producers waited, and compares with a
//!    queue large enough for the whole burst.
//! 2. **Draining.** A line of [`Stats`] every 2 s: ready, in flight, the age
//!    of the oldest ready message (bounded by capacity ÷ rate = 2 s), sent,
//!    acked, and how many producers are blocked.
//! 3. **The tally.** sent == acked == 10,000, every order seen exactly once
//!    and in send order per producer, nothing dead-lettered. If any of this
//!    does not hold, the example exits with a non-zero code.
//!
//! Time is accelerated: the consumer's 500 per second runs [`SPEEDUP`] times
//! faster in real time, so that the 20 s of the story take 4 s. Every time
//! printed is **simulated time = real time × `SPEEDUP`**, except the one
//! marked "real" (a measurement of the unbounded baseline, which nothing
//! paces). The consumer paces itself with real sleeps to a schedule; this is
//! a demonstration, not a benchmark.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example traffic_spike
//! ```

use serde::{Deserialize, Serialize};
use spool::{Queue, RecvError, SendError, Stats};
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How many times faster than the story the example runs.
const SPEEDUP: u32 = 5;
/// Orders in the burst.
const BURST: usize = 10_000;
/// Threads the burst comes from; each sends `BURST / PRODUCERS` orders.
const PRODUCERS: usize = 4;
/// The queue's bound.
const CAPACITY: usize = 1_000;
/// What the consumer handles per (simulated) second.
const RATE_PER_SEC: u32 = 500;
/// How often (simulated) a line of stats is printed.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// The message: which producer sent it, and its place in that producer's
/// sequence (so the consumer can check that nothing is lost, duplicated or
/// reordered).
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    producer: usize,
    seq: usize,
}

/// What one producer thread measured.
struct ProducerReport {
    /// Sends that found the queue full (where `try_send` gave `Full`).
    full: usize,
    /// Real time spent blocked in `send`.
    blocked: Duration,
    /// The longest single wait in `send` (real).
    longest_wait: Duration,
    /// When its last order was accepted (real, since the burst started).
    done_at: Duration,
}

/// What the consumer saw.
struct ConsumerReport {
    handled: usize,
    unique: usize,
    out_of_order: usize,
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("Traffic spike: {BURST} orders from {PRODUCERS} threads at once,");
    println!("a queue bounded at {CAPACITY}, one consumer handling {RATE_PER_SEC}/s.");
    println!("Times are simulated (real time x {SPEEDUP}) unless marked real.\n");

    let unbounded = unbounded_baseline()?;
    println!(
        "Baseline: a queue with room for all {BURST} takes the burst in {:.1} ms (real time);",
        unbounded.as_secs_f64() * 1e3
    );
    println!(
        "then all {BURST} sit in memory, and the last waits {:.0} s for the consumer.\n",
        BURST as f64 / f64::from(RATE_PER_SEC)
    );

    let queue: Queue<Order> = Queue::builder()
        .capacity(CAPACITY)
        .visibility_timeout(Duration::from_secs(30))
        .open()?;
    let started = Instant::now();
    let blocked_now = Arc::new(AtomicUsize::new(0));

    let consumer = {
        let consumer = queue.consumer();
        thread::spawn(move || consume(&consumer))
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producer = queue.producer();
            let blocked_now = Arc::clone(&blocked_now);
            thread::spawn(move || produce(&producer, p, &blocked_now, started))
        })
        .collect();

    println!("With capacity {CAPACITY}:");
    println!(
        "{:>7} {:>6} {:>9} {:>13} {:>6} {:>6} {:>18}",
        "t", "ready", "in flight", "oldest ready", "sent", "acked", "producers blocked"
    );
    let mut peak_held = 0;
    let mut peak_age = Duration::ZERO;
    let mut tick = 1;
    let mut last_printed = None;
    loop {
        let next = started + REPORT_EVERY * tick / SPEEDUP;
        while Instant::now() < next && !consumer.is_finished() {
            thread::sleep(Duration::from_millis(5));
        }
        tick += 1;
        // Read before the stats, so the last line printed shows the end.
        let drained = consumer.is_finished();
        let stats = queue.stats();
        peak_held = peak_held.max(stats.ready + stats.in_flight + stats.delayed);
        peak_age = peak_age.max(stats.oldest_ready_age.unwrap_or_default());
        if last_printed.as_ref() != Some(&stats) {
            print_line(started.elapsed(), &stats, blocked_now.load(Relaxed));
        }
        if stats.sent == BURST as u64 && !queue.is_closed() {
            // Every order is in: let the consumer finish once it is drained.
            queue.close();
        }
        if drained {
            break;
        }
        last_printed = Some(stats);
    }

    let mut reports = Vec::new();
    for producer in producers {
        reports.push(
            producer
                .join()
                .map_err(|_| "a producer thread panicked")??,
        );
    }
    queue.close();
    let seen = consumer
        .join()
        .map_err(|_| "the consumer thread panicked")??;

    print_backpressure(&reports, unbounded, peak_held, peak_age);
    tally(&queue.stats(), &seen, queue.dead_letters().len())
}

/// Sends one producer's share, measuring how backpressure held it up.
///
/// It tries `try_send` first so it can count how often the queue was full,
/// then falls back to the blocking `send`.
fn produce(
    producer: &spool::Producer<Order>,
    p: usize,
    blocked_now: &AtomicUsize,
    started: Instant,
) -> Result<ProducerReport, String> {
    let mut report = ProducerReport {
        full: 0,
        blocked: Duration::ZERO,
        longest_wait: Duration::ZERO,
        done_at: Duration::ZERO,
    };
    for seq in 0..BURST / PRODUCERS {
        let order = match producer.try_send(Order { producer: p, seq }) {
            Ok(_) => continue,
            Err(SendError::Full(order)) => order,
            Err(other) => return Err(format!("producer {p}: try_send failed: {other}")),
        };
        report.full += 1;
        blocked_now.fetch_add(1, Relaxed);
        let waiting = Instant::now();
        let sent = producer.send(order);
        let waited = waiting.elapsed();
        blocked_now.fetch_sub(1, Relaxed);
        sent.map_err(|e| format!("producer {p}: send failed: {e}"))?;
        report.blocked += waited;
        report.longest_wait = report.longest_wait.max(waited);
    }
    report.done_at = started.elapsed();
    Ok(report)
}

/// Receives until the queue is closed and drained, taking `1 / RATE_PER_SEC`
/// (simulated) per order, paced by real sleeps to an absolute schedule.
fn consume(consumer: &spool::Consumer<Order>) -> Result<ConsumerReport, String> {
    let per_order = Duration::from_secs(1) / RATE_PER_SEC / SPEEDUP;
    let mut seen = vec![false; BURST];
    let mut next_seq = [0; PRODUCERS];
    let mut report = ConsumerReport {
        handled: 0,
        unique: 0,
        out_of_order: 0,
    };
    // When the order in hand is done, on the consumer's schedule. Sleeping
    // to this absolute time (not for `per_order`) keeps oversleeping from
    // adding up.
    let mut busy_until = Instant::now();
    loop {
        let order = match consumer.try_recv() {
            Err(RecvError::Empty) => {
                // Idle: the schedule restarts when the next order arrives.
                let order = consumer.recv();
                busy_until = Instant::now();
                order
            }
            ready_or_closed => ready_or_closed,
        };
        let order = match order {
            Ok(order) => order,
            Err(RecvError::Closed) => return Ok(report),
            Err(other) => return Err(format!("consumer: recv failed: {other}")),
        };
        busy_until += per_order;
        thread::sleep(busy_until.saturating_duration_since(Instant::now()));

        report.handled += 1;
        let index = order.producer * (BURST / PRODUCERS) + order.seq;
        if !std::mem::replace(&mut seen[index], true) {
            report.unique += 1;
        }
        if order.seq != next_seq[order.producer] {
            report.out_of_order += 1;
        }
        next_seq[order.producer] = order.seq + 1;
        order
            .ack()
            .map_err(|e| format!("consumer: ack failed: {e}"))?;
    }
}

/// Sends the same burst into a queue with room for all of it, with no
/// consumer, and returns how long that took (real time).
fn unbounded_baseline() -> Result<Duration, Box<dyn Error>> {
    let queue: Queue<Order> = Queue::builder().capacity(BURST).open()?;
    let started = Instant::now();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producer = queue.producer();
            thread::spawn(move || {
                (0..BURST / PRODUCERS)
                    .try_for_each(|seq| producer.try_send(Order { producer: p, seq }).map(drop))
                    .map_err(|e| format!("baseline producer {p}: {e}"))
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a baseline producer panicked")??;
    }
    let took = started.elapsed();
    let held = queue.stats().ready;
    if held != BURST {
        return Err(format!("baseline: expected {BURST} orders held, found {held}").into());
    }
    Ok(took)
}

fn print_line(real: Duration, stats: &Stats, blocked: usize) {
    let oldest = match stats.oldest_ready_age {
        Some(age) => format!("{:.2} s", simulated(age)),
        None => "-".to_string(),
    };
    println!(
        "{:>5.1} s {:>6} {:>9} {:>13} {:>6} {:>6} {:>18}",
        simulated(real),
        stats.ready,
        stats.in_flight,
        oldest,
        stats.sent,
        stats.acked,
        blocked
    );
}

fn print_backpressure(
    reports: &[ProducerReport],
    unbounded: Duration,
    peak_held: usize,
    peak_age: Duration,
) {
    let accepted = reports.iter().map(|r| r.done_at).max().unwrap_or_default();
    let full: usize = reports.iter().map(|r| r.full).sum();
    let blocked: Duration = reports.iter().map(|r| r.blocked).sum();
    let longest = reports
        .iter()
        .map(|r| r.longest_wait)
        .max()
        .unwrap_or_default();
    println!("\nBackpressure:");
    println!(
        "  the burst was accepted in {:.1} s (with room for all of it: {:.1} ms real)",
        simulated(accepted),
        unbounded.as_secs_f64() * 1e3
    );
    println!("  at most {peak_held} orders were held in any sample (bound: {CAPACITY})");
    println!(
        "  the oldest ready order was at most {:.2} s old (capacity / rate = {:.2} s)",
        simulated(peak_age),
        CAPACITY as f64 / f64::from(RATE_PER_SEC)
    );
    println!("  {full} of {BURST} sends found the queue full (try_send would have returned Full)");
    println!(
        "  producers spent {:.1} s blocked in send, summed over {PRODUCERS} threads",
        simulated(blocked)
    );
    println!(
        "  a blocked send waited {:.1} ms on average, {:.1} ms at most: blocked senders are",
        simulated(blocked) * 1e3 / full.max(1) as f64,
        simulated(longest) * 1e3
    );
    println!(
        "  not served first come, first served, so one producer can finish well before another:"
    );
    for (p, r) in reports.iter().enumerate() {
        println!(
            "    producer {p}: {} sends found it full, blocked {:.1} s, last accepted at {:.1} s",
            r.full,
            simulated(r.blocked),
            simulated(r.done_at)
        );
    }
}

/// Checks that nothing was lost, duplicated, reordered or dead-lettered.
fn tally(stats: &Stats, seen: &ConsumerReport, dead_letters: usize) -> Result<(), Box<dyn Error>> {
    let burst = BURST as u64;
    let checks = [
        ("sent == 10,000", stats.sent == burst),
        ("acked == 10,000", stats.acked == burst),
        ("consumer handled 10,000", seen.handled == BURST),
        ("every order seen exactly once", seen.unique == BURST),
        (
            "each producer's orders in send order",
            seen.out_of_order == 0,
        ),
        (
            "nothing left ready, in flight or delayed",
            stats.ready + stats.in_flight + stats.delayed == 0,
        ),
        (
            "no retries (nacked, expired == 0)",
            stats.nacked + stats.expired == 0,
        ),
        (
            "dead-letter queue empty",
            dead_letters == 0 && stats.dead_lettered == 0,
        ),
    ];
    println!("\nTally:");
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
    let failed = checks.iter().filter(|(_, ok)| !ok).count();
    if failed > 0 {
        return Err(format!("{failed} check(s) failed: see the tally above").into());
    }
    println!("\nNothing was dropped: {BURST} sent, {BURST} acknowledged, 0 dead letters.");
    Ok(())
}

/// A real duration as simulated seconds.
fn simulated(real: Duration) -> f64 {
    real.as_secs_f64() * f64::from(SPEEDUP)
}

//! # Dead letters: a bad job fails three times, is parked, fixed and redriven
//!
//! A payment service queues `Charge` jobs that come from a web form. One of
//! them has a typo in its amount (`"19.9O"`, a letter O), so the worker
//! cannot parse it. What you will see:
//!
//! 1. The worker `fail`s the bad job with the parse error. The queue retries
//!    it after an exponential backoff (30 s, then 60 s); on its third
//!    receive (`max_receives(3)`) the failure moves it to the dead-letter
//!    queue instead. The good jobs are acknowledged meanwhile.
//! 2. Inspecting the dead letter: id, idempotency key, payload, receive
//!    count, reason, the error text of every attempt, and when it was sent
//!    and dead-lettered.
//! 3. Why not just send a corrected job? Its idempotency key is still
//!    within the dedup window, so a different payload under the same key is
//!    refused (`KeyConflict`). Instead `redrive_with` puts the corrected
//!    payload back under the same id and key, with a fresh receive count.
//! 4. The worker now succeeds, and the final stats account for everything.
//!
//! Time comes from a `ManualClock` that the example moves forward whenever
//! the worker has nothing to do, so the retries' backoff passes instantly and
//! the times printed (`t+…`, since the start) are exact. If the story does
//! not happen as printed, the example exits with a non-zero code.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example dead_letters
//! ```

use serde::{Deserialize, Serialize};
use spool::{
    Backoff, Clock, Consumer, DeadLetterReason, Delivery, ManualClock, Queue, RecvError, SendError,
    SendOptions,
};
use std::error::Error;
use std::time::{Duration, SystemTime};

/// A job: charge a customer for an order. `amount` is the text the web
/// form sent, in dollars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    order: u32,
    customer: String,
    amount: String,
}

/// One delivery the worker handled: which order, which receive, and
/// whether it succeeded.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    order: u32,
    receive_count: u32,
    ok: bool,
}

/// The queue, the clock that drives it, and the start of the story.
struct World {
    queue: Queue<Charge>,
    clock: ManualClock,
    start: SystemTime,
}

fn main() -> Result<(), Box<dyn Error>> {
    let clock = ManualClock::new();
    let queue: Queue<Charge> = Queue::builder()
        .max_receives(3)
        .backoff(Backoff::Exponential {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(300),
            jitter: false,
        })
        .clock(clock.clone())
        .open()?;
    let world = World {
        start: clock.now(),
        queue,
        clock,
    };
    let producer = world.queue.producer();
    let consumer = world.queue.consumer();
    let dlq = world.queue.dead_letters();

    println!("Queue: max_receives 3, backoff 30 s doubling, a manual clock.\n");
    let jobs = [
        charge(1001, "alice", "12.50"),
        charge(1002, "bob", "19.9O"), // a letter O: the form let it through
        charge(1003, "carol", "7.25"),
    ];
    for job in jobs {
        let key = format!("order-{}", job.order);
        let sent = producer.send_with(job.clone(), SendOptions::new().key(key.as_str()))?;
        println!("sent {} key {key:<10} {job:?}", sent.id());
    }

    println!("\nThe worker runs:");
    let mut log = Vec::new();
    work_until_idle(&world, &consumer, &mut log)?;

    println!("\nThe dead-letter queue holds {} message(s):", dlq.len());
    let letters = dlq.list();
    let Some(letter) = letters.first() else {
        return Err("expected one dead letter, found none".into());
    };
    println!("  id               {}", letter.id());
    println!("  key              {}", letter.key().unwrap_or("(none)"));
    println!("  payload          {:?}", letter.payload());
    println!("  receive count    {}", letter.receive_count());
    println!("  reason           {}", letter.reason());
    for (n, error) in letter.errors().iter().enumerate() {
        println!("  error, attempt {} {error}", n + 1);
    }
    println!("  first enqueued   {}", world.at(letter.enqueued_at()));
    println!("  dead-lettered    {}", world.at(letter.dead_lettered_at()));
    let letter_story = [
        (
            "the dead letter is order 1002",
            letter.payload().order == 1002 && letter.key() == Some("order-1002"),
        ),
        (
            "it was received 3 times",
            letter.receive_count() == 3 && letter.reason() == &DeadLetterReason::MaxReceives(3),
        ),
        ("it kept 3 error texts", letter.errors().len() == 3),
        ("it is the only dead letter", letters.len() == 1),
    ];

    let mut fixed = letter.payload().clone();
    fixed.amount = "19.90".to_string();
    println!(
        "\nA fix: amount {:?} -> {:?}.",
        letter.payload().amount,
        fixed.amount
    );
    let resend = producer.send_with(fixed.clone(), SendOptions::new().key("order-1002"));
    let refused = match resend {
        Err(SendError::KeyConflict { original, .. }) => {
            println!(
                "Sending it again under key order-1002 is refused: the key belongs to {original} \
                 with another payload (KeyConflict)."
            );
            original == letter.id()
        }
        Err(other) => {
            println!("Sending it again under key order-1002 failed: {other}");
            false
        }
        Ok(sent) => {
            println!("Sending it again under key order-1002 returned {sent:?}");
            false
        }
    };
    dlq.redrive_with(letter.id(), fixed)?;
    let after = world.queue.stats();
    println!(
        "redrive_with({}, fixed): dead letters {}, ready {}, redriven {}.",
        letter.id(),
        after.dead_letters,
        after.ready,
        after.redriven
    );

    println!("\nThe worker runs again:");
    let before_redrive = log.len();
    work_until_idle(&world, &consumer, &mut log)?;

    let stats = world.queue.stats();
    println!("\nFinal stats:");
    println!(
        "  sent {}, acked {}, nacked {}, dead-lettered {}, redriven {}, duplicates {}",
        stats.sent,
        stats.acked,
        stats.nacked,
        stats.dead_lettered,
        stats.redriven,
        stats.duplicates
    );
    println!(
        "  now: ready {}, in flight {}, delayed {}, dead letters {}",
        stats.ready, stats.in_flight, stats.delayed, stats.dead_letters
    );

    let attempt = |order, receive_count, ok| Attempt {
        order,
        receive_count,
        ok,
    };
    let mut first_run = log[..before_redrive].to_vec();
    first_run.sort_by_key(|a| (a.order, a.receive_count));
    let story = [
        (
            "first run: 1001 and 1003 succeed at once, 1002 fails 3 times",
            first_run
                == [
                    attempt(1001, 1, true),
                    attempt(1002, 1, false),
                    attempt(1002, 2, false),
                    attempt(1002, 3, false),
                    attempt(1003, 1, true),
                ],
        ),
        (
            "after the redrive: 1002 succeeds on a fresh first receive",
            log[before_redrive..] == [attempt(1002, 1, true)],
        ),
        (
            "a corrected resend under the same key is a KeyConflict",
            refused,
        ),
        (
            "stats add up: 3 sent, 3 acked, 3 failures, 1 dead-lettered and redriven",
            (stats.sent, stats.acked, stats.nacked) == (3, 3, 3)
                && (stats.dead_lettered, stats.redriven, stats.dead_letters) == (1, 1, 0)
                && stats.ready + stats.in_flight + stats.delayed == 0,
        ),
    ];
    let checks: Vec<_> = letter_story.into_iter().chain(story).collect();
    println!("\nChecks:");
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
    let failed = checks.iter().filter(|(_, ok)| !ok).count();
    if failed > 0 {
        return Err(format!("{failed} check(s) failed: see above").into());
    }
    Ok(())
}

/// Handles deliveries until nothing is ready or waiting for a retry. When
/// only retries are pending, moves the clock forward 10 s at a time.
fn work_until_idle(
    world: &World,
    consumer: &Consumer<Charge>,
    log: &mut Vec<Attempt>,
) -> Result<(), Box<dyn Error>> {
    loop {
        match consumer.try_recv() {
            Ok(delivery) => log.push(handle(world, delivery)?),
            Err(RecvError::Empty) if world.queue.stats().delayed > 0 => {
                world.clock.advance(Duration::from_secs(10));
            }
            Err(RecvError::Empty) => return Ok(()),
            Err(other) => return Err(other.into()),
        }
    }
}

/// The worker: charges the customer, or fails the delivery with the reason.
fn handle(world: &World, job: Delivery<Charge>) -> Result<Attempt, Box<dyn Error>> {
    let (id, receive_count, order) = (job.id(), job.receive_count(), job.order);
    let head = format!(
        "{:>7}  {id} order {order} receive {receive_count}:",
        world.at(world.clock.now())
    );
    match parse_cents(&job.amount) {
        Ok(cents) => {
            let customer = job.customer.clone();
            job.ack()?;
            println!(
                "{head} charged {customer} ${}.{:02} -> ack",
                cents / 100,
                cents % 100
            );
            Ok(Attempt {
                order,
                receive_count,
                ok: true,
            })
        }
        Err(error) => {
            job.fail(error.as_str())?;
            let outcome = if world.queue.dead_letters().get(id).is_some() {
                "dead-lettered"
            } else {
                "will retry after the backoff"
            };
            println!("{head} error: {error} -> fail, {outcome}");
            Ok(Attempt {
                order,
                receive_count,
                ok: false,
            })
        }
    }
}

/// Parses a dollar amount such as `"12.50"` into cents.
fn parse_cents(amount: &str) -> Result<u64, String> {
    let invalid = || format!("bad amount {amount:?}, expected dollars.cents");
    let (dollars, cents) = amount.split_once('.').ok_or_else(invalid)?;
    if cents.len() != 2 {
        return Err(invalid());
    }
    let dollars: u64 = dollars.parse().map_err(|_| invalid())?;
    let cents: u64 = cents.parse().map_err(|_| invalid())?;
    Ok(dollars * 100 + cents)
}

fn charge(order: u32, customer: &str, amount: &str) -> Charge {
    Charge {
        order,
        customer: customer.to_string(),
        amount: amount.to_string(),
    }
}

impl World {
    /// A time as an offset from the start of the story, e.g. `t+1m30s`.
    fn at(&self, time: SystemTime) -> String {
        let secs = time
            .duration_since(self.start)
            .unwrap_or_default()
            .as_secs();
        format!("t+{}m{:02}s", secs / 60, secs % 60)
    }
}

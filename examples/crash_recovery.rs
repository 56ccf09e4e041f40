//! A persistent queue survives a crash: what was sent and not acknowledged
//! comes back, what was acknowledged does not, deliveries in flight come
//! back ready with their receive counts, and the dead letter keeps its
//! reason.
//!
//! The example runs itself twice: a child process that opens the queue in
//! `target/spool-example-crash`, works on it and then crashes
//! (`std::process::abort`, with deliveries still in flight), and the
//! parent, which reopens the directory and shows what came back. It exits
//! with an error if anything is not as it should be.
//!
//! ```text
//! cargo run --example crash_recovery
//! ```

use serde::{Deserialize, Serialize};
use spool::{DeadLetterReason, Durability, Queue, SendOptions};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    number: u32,
    task: String,
}

const TASKS: [&str; 6] = [
    "resize cat.png",
    "resize dog.png",
    "transcode intro.mov",
    "send welcome email",
    "bill order 17",
    "send invoice 6",
];

fn open(dir: &Path) -> Result<Queue<Job>, spool::OpenError> {
    Queue::builder()
        .path(dir)
        .durability(Durability::Sync) // every send and ack is on disk when it returns
        .visibility_timeout(Duration::from_secs(30))
        .max_receives(5)
        .backoff(spool::Backoff::None) // a failed job is retried at once
        .open()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "crash" {
        crash(Path::new(&args[2]))
    } else {
        recover()
    }
}

/// The child: does some work, then dies with deliveries in flight.
fn crash(dir: &Path) -> Result<(), Box<dyn Error>> {
    let queue = open(dir)?;
    let (producer, consumer) = (queue.producer(), queue.consumer());
    for (number, task) in (1..).zip(TASKS) {
        let job = Job {
            number,
            task: task.to_string(),
        };
        if number == 6 {
            producer.send_with(job, SendOptions::new().key("invoice-6"))?;
        } else {
            producer.send(job)?;
        }
    }
    consumer.try_recv()?.ack()?; // 1
    consumer.try_recv()?.ack()?; // 2
    consumer.try_recv()?.dead_letter("corrupt input file")?; // 3
    consumer.try_recv()?.fail("smtp: connection refused")?; // 4, to the back
    let in_flight = [
        consumer.try_recv()?,
        consumer.try_recv()?,
        consumer.try_recv()?,
    ];
    let held: Vec<String> = in_flight
        .iter()
        .map(|d| format!("job {} (receive {})", d.number, d.receive_count()))
        .collect();
    println!("child:  sent jobs 1-6, acked 1 and 2, dead-lettered 3, job 4 failed once;");
    println!("child:  in flight: {}", held.join(", "));
    println!("child:  crashing now (abort: no destructors, nothing flushed)");
    std::process::abort();
}

/// The parent: runs the child, then reopens the directory.
fn recover() -> Result<(), Box<dyn Error>> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "target", "spool-example-crash"]
        .iter()
        .collect();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let status = Command::new(std::env::current_exe()?)
        .arg("crash")
        .arg(&dir)
        .status()?;
    if status.success() {
        return Err("the child was meant to crash, but exited cleanly".into());
    }
    println!("parent: child died ({status}); reopening {}", dir.display());

    let queue = open(&dir)?;
    let report = queue.recovery_report().ok_or("no recovery report")?;
    println!(
        "parent: recovery read {} file(s), {} frames, {} records; {} torn bytes truncated",
        report.files_read, report.frames, report.records, report.torn_bytes
    );

    let mut ready = BTreeMap::new();
    let consumer = queue.consumer();
    let mut deliveries = Vec::new();
    while let Ok(delivery) = consumer.try_recv() {
        println!(
            "parent: ready again: job {} \"{}\", now on receive {}",
            delivery.number,
            delivery.task,
            delivery.receive_count()
        );
        ready.insert(delivery.number, delivery.receive_count());
        deliveries.push(delivery);
    }
    let letters = queue.dead_letters().list();
    for letter in &letters {
        println!(
            "parent: dead letter: job {} \"{}\" after {} receive(s): {}",
            letter.payload().number,
            letter.payload().task,
            letter.receive_count(),
            letter.reason()
        );
    }
    let invoice = Job {
        number: 6,
        task: TASKS[5].to_string(),
    };
    let resend = queue
        .producer()
        .send_with(invoice, SendOptions::new().key("invoice-6"))?;
    println!(
        "parent: sending invoice-6 again is a duplicate of {}: {}",
        resend.id(),
        resend.is_duplicate()
    );

    // The story, checked: 1 and 2 were acked and stay gone; 3 is dead; 4, 5
    // and 6 were in flight and come back with one more receive each.
    let expected: BTreeMap<u32, u32> = [(4, 3), (5, 2), (6, 2)].into();
    let dead_ok = letters.len() == 1
        && letters[0].payload().number == 3
        && letters[0].reason() == &DeadLetterReason::Rejected("corrupt input file".into());
    if ready != expected || !dead_ok || !resend.is_duplicate() {
        return Err(format!(
            "unexpected state after the crash: ready {ready:?}, dead letters ok: {dead_ok}"
        )
        .into());
    }
    for delivery in deliveries {
        delivery.ack()?;
    }
    println!("parent: everything that was promised came back; jobs 4-6 done now");
    Ok(())
}

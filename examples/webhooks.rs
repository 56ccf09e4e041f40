//! A webhook-delivery service on a worker pool (issue 12).
//!
//! Each job posts one event to one endpoint (simulated here, so that the
//! example runs anywhere in well under a second):
//!
//! - `200`: acknowledged;
//! - `429 Too Many Requests`: retried after the delay the server asked for
//!   (`Outcome::RetryAfter`);
//! - `410 Gone`: the endpoint is gone for good, dead-lettered at once
//!   (`Outcome::DeadLetter`) instead of burning every attempt;
//! - `5xx`: retried after the queue's exponential backoff
//!   (`Outcome::Retry`), up to `max_receives`.
//!
//! A schedule sends a health check every 50 ms, with a key per tick so
//! that no tick is enqueued twice, and one delivery, booked for later, is
//! cancelled before it is due (the customer deleted the endpoint).
//!
//! Run with `cargo run --example webhooks`.

use spool::{Backoff, Cancelled, Job, Outcome, Queue, Schedule, SendOptions, Workers};
use std::collections::HashMap;
use std::error::Error;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Task {
    Deliver { endpoint: String, event: u32 },
    HealthCheck,
}

/// What the simulated endpoints answer: a status, and for a 429 the
/// delay they ask for.
fn post(endpoint: &str, attempt: u32) -> (u16, Option<Duration>) {
    match (endpoint, attempt) {
        ("https://shop.example/hooks", _) => (200, None),
        ("https://busy.example/hooks", 1) => (429, Some(Duration::from_millis(30))),
        ("https://busy.example/hooks", _) => (200, None),
        ("https://old.example/hooks", _) => (410, None),
        ("https://flaky.example/hooks", 1 | 2) => (503, None),
        ("https://flaky.example/hooks", _) => (200, None),
        _ => (404, None),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let queue: Queue<Task> = Queue::builder()
        .max_receives(5)
        .backoff(Backoff::exponential(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ))
        .open()?;

    let log = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&log);
    let pool = Workers::new(queue.consumer())
        .threads(2)
        .name("webhooks")
        .spawn_jobs(move |job: Job<Task>| {
            let Task::Deliver { endpoint, event } = job.payload() else {
                return Ok(Outcome::Ack); // a health check: nothing to post
            };
            let (status, retry_after) = post(endpoint, job.receive_count());
            let line = format!(
                "event {event} -> {endpoint} (attempt {}): {status}",
                job.receive_count()
            );
            seen.lock().unwrap().push(line);
            match status {
                200..=299 => Ok(Outcome::Ack),
                429 => Ok(Outcome::RetryAfter(
                    retry_after.unwrap_or(Duration::from_secs(1)),
                )),
                410 => Ok(Outcome::dead_letter(format!("{endpoint}: 410 Gone"))),
                500..=599 => Ok(Outcome::Retry),
                other => Err(format!("{endpoint}: unexpected status {other}")),
            }
        })?;

    let health = queue.schedule(
        Schedule::every("health-check", Duration::from_millis(50)),
        |_tick: SystemTime| Task::HealthCheck,
    )?;

    let producer = queue.producer();
    let endpoints = [
        "https://shop.example/hooks",
        "https://busy.example/hooks",
        "https://old.example/hooks",
        "https://flaky.example/hooks",
    ];
    for (event, endpoint) in (1..).zip(endpoints) {
        let task = Task::Deliver {
            endpoint: endpoint.to_string(),
            event,
        };
        producer.send_with(task, SendOptions::new().key(format!("event-{event}")))?;
    }
    // Booked for a minute from now, then cancelled: the customer deleted
    // the endpoint meanwhile.
    let later = Task::Deliver {
        endpoint: "https://deleted.example/hooks".to_string(),
        event: 99,
    };
    let in_a_minute = SystemTime::now() + Duration::from_secs(60);
    producer.send_with(later, SendOptions::new().key("event-99").at(in_a_minute))?;
    let (id, found) = queue.cancel_key("event-99")?;
    assert_eq!(found, Cancelled::Delayed);
    println!("cancelled delivery {id} (it was {found:?})");

    // Wait (at most 10 s) until the first attempts have settled and a few
    // health checks have run; `join` below drains whatever retries remain.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = queue.stats();
        let settled = stats.acked >= 3 + 2 && stats.dead_letters == 1;
        if settled && health.stats().sent >= 2 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not settled in time: {stats:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let health = health.stop();
    queue.close();
    let report = pool.join(Duration::from_secs(10));

    let mut lines = log.lock().unwrap().clone();
    lines.sort();
    for line in &lines {
        println!("{line}");
    }
    for letter in queue.dead_letters().list() {
        println!("dead letter {}: {}", letter.id(), letter.reason());
    }
    let totals = report.totals();
    println!(
        "health checks sent: {}; workers: acked {}, retried {}, dead-lettered {}, failed {}",
        health.sent, totals.acked, totals.retried, totals.dead_lettered, totals.failed
    );
    let attempts: HashMap<&str, usize> = endpoints
        .iter()
        .map(|e| (*e, lines.iter().filter(|l| l.contains(e)).count()))
        .collect();
    assert_eq!(attempts["https://old.example/hooks"], 1, "410: no retries");
    assert_eq!(attempts["https://busy.example/hooks"], 2, "429: once more");
    assert_eq!(
        attempts["https://flaky.example/hooks"], 3,
        "503 twice, then 200"
    );
    assert_eq!(queue.stats().cancelled, 1);
    Ok(())
}

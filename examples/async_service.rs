//! An async service: request handlers enqueue jobs, an async worker pool
//! works them, with retries and a dead-letter queue, and shuts down
//! gracefully on a signal.
//!
//! The "requests" are tasks standing in for an HTTP framework's handlers
//! (axum's would look the same): each validates its input and enqueues a
//! webhook delivery with `send_with_async`, keyed by the request id so
//! that a client retrying its request enqueues nothing twice. The pool
//! (`AsyncWorkers`, eight handlers at once on this runtime) "delivers" the
//! webhooks: some endpoints fail now and then and are retried with
//! backoff; one is gone for good and its deliveries end in the dead-letter
//! queue with every attempt's error. The queue is persistent under
//! `Durability::Sync`: every send and ack waits for the disk without
//! blocking a thread of the runtime.
//!
//! Shutdown: on Ctrl-C (or once the demo traffic is done) the service
//! stops taking requests, closes the queue, lets the pool drain it for up
//! to five seconds, and reports.
//!
//! Run with `cargo run --example async_service --features tokio`. Exits
//! non-zero if any step of that story did not happen.

use spool::{AsyncWorkers, Backoff, Durability, Queue, SendOptions, Sent};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Webhook {
    request_id: u64,
    endpoint: String,
    body: String,
}

const REQUESTS: u64 = 200;

/// A request handler: validates, then enqueues. Returns what a web
/// framework would answer.
async fn handle_request(
    producer: &spool::Producer<Webhook>,
    request_id: u64,
) -> Result<&'static str, String> {
    let endpoint = match request_id % 20 {
        0 => "https://gone.example/hook".to_string(),
        n => format!("https://customer-{n}.example/hook"),
    };
    let webhook = Webhook {
        request_id,
        endpoint,
        body: format!("{{\"order\":{request_id}}}"),
    };
    let options = SendOptions::new().key(format!("request-{request_id}"));
    match producer.send_with_async(webhook, options).await {
        Ok(Sent::Enqueued(_)) => Ok("202 Accepted"),
        Ok(Sent::Duplicate(_)) => Ok("202 Accepted (already queued)"),
        Err(error) => Err(format!("503: {error}")),
    }
}

/// "Delivers" a webhook: a flaky endpoint fails its first try; the gone
/// one always fails.
async fn deliver(webhook: &Webhook, attempt: u32, calls: &AtomicU32) -> Result<(), String> {
    calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2)).await; // the HTTP call
    if webhook.endpoint.contains("gone") {
        return Err(format!("{}: 410 Gone", webhook.endpoint));
    }
    if webhook.request_id % 7 == 3 && attempt == 1 {
        return Err(format!("{}: 503 Service Unavailable", webhook.endpoint));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("async_service: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile_dir()?;
    let queue: Queue<Webhook> = Queue::builder()
        .path(&dir)
        .durability(Durability::Sync)
        .capacity(64)
        .max_receives(3)
        .visibility_timeout(Duration::from_secs(5))
        .backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ))
        .open()?;
    let calls = Arc::new(AtomicU32::new(0));
    let pool = {
        let calls = calls.clone();
        AsyncWorkers::new(queue.consumer()).concurrency(8).spawn(
            move |job: spool::Job<Webhook>| {
                let calls = calls.clone();
                async move { deliver(&job, job.receive_count(), &calls).await }
            },
        )?
    };

    // The "server": request handlers running concurrently, each retried
    // once by an impatient client (the key makes the retry harmless).
    let mut requests = tokio::task::JoinSet::new();
    for request_id in 0..REQUESTS {
        let producer = queue.producer();
        requests.spawn(async move {
            let first = handle_request(&producer, request_id).await?;
            let retry = handle_request(&producer, request_id).await?;
            Ok::<_, String>((first, retry))
        });
    }
    let mut duplicates = 0;
    let served = async {
        while let Some(answer) = requests.join_next().await {
            let (_, retry) = answer??;
            duplicates += usize::from(retry.contains("already"));
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    tokio::select! {
        served = served => served?,
        _ = tokio::signal::ctrl_c() => println!("signal: stopping early"),
    }
    println!("served {REQUESTS} requests ({duplicates} retried requests enqueued nothing)");

    // Graceful shutdown: no new jobs, drain what is queued, then report.
    queue.close();
    let report = pool.join(Duration::from_secs(5)).await;
    let totals = report.totals();
    let dead = queue.dead_letters().list();
    println!(
        "pool: {} delivered, {} failed attempts, {} calls, {} unfinished",
        totals.acked,
        totals.failed,
        calls.load(Ordering::Relaxed),
        report.unfinished.len()
    );
    for letter in dead.iter().take(2) {
        println!(
            "dead letter {}: request {} after {:?}",
            letter.id(),
            letter.payload().request_id,
            letter.errors()
        );
    }
    println!("... {} dead letters in all", dead.len());

    let gone = REQUESTS / 20;
    let expected = [
        (
            "every retried request deduplicated",
            duplicates as u64 == REQUESTS,
        ),
        (
            "every good webhook delivered",
            totals.acked == REQUESTS - gone,
        ),
        ("the gone endpoint dead-lettered", dead.len() as u64 == gone),
        (
            "three attempts each",
            dead.iter().all(|l| l.errors().len() == 3),
        ),
        ("nothing left unfinished", report.unfinished.is_empty()),
    ];
    drop(queue);
    std::fs::remove_dir_all(&dir)?;
    for (what, held) in expected {
        if !held {
            return Err(format!("expected: {what}").into());
        }
    }
    println!("ok");
    Ok(())
}

/// A fresh directory for the queue's write-ahead file.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("spool-async-service-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(dir)
}

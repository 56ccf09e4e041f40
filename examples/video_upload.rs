//! One "uploaded" event, four independent consumers.
//!
//! An upload handler publishes `Uploaded { video_id }` to a topic and
//! returns at once. Four subscriptions react, each a queue of its own served
//! by a worker pool: a slow transcoder (its jobs outlast the visibility
//! timeout, so the pool extends their leases), a thumbnailer, a moderation
//! check that rejects some inputs, and an indexer. The rejected inputs land
//! in moderation's dead-letter queue only, a rate alert fires, and after a
//! "fix" they are redriven and pass.
//!
//! Run with `cargo run --example video_upload`. Exits non-zero if any step
//! of that story did not happen.

use spool::{Backoff, Queue, RateAlert, SendOptions, Topic, WorkerPool, Workers};
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Uploaded {
    video_id: u64,
}

const UPLOADS: u64 = 24;
/// Set once the moderation bug is "fixed".
static CODEC_SUPPORT_SHIPPED: AtomicBool = AtomicBool::new(false);

fn transcode(video: &Uploaded) -> Result<(), String> {
    let _ = video;
    thread::sleep(Duration::from_millis(120)); // longer than its 100 ms lease
    Ok(())
}

fn thumbnail(_: &Uploaded) -> Result<(), String> {
    thread::sleep(Duration::from_millis(5));
    Ok(())
}

fn moderate(video: &Uploaded) -> Result<(), String> {
    thread::sleep(Duration::from_millis(10));
    if video.video_id % 6 == 5 && !CODEC_SUPPORT_SHIPPED.load(Ordering::SeqCst) {
        return Err(format!("video {}: unsupported codec (av2)", video.video_id));
    }
    Ok(())
}

fn index(_: &Uploaded) -> Result<(), String> {
    thread::sleep(Duration::from_millis(1));
    Ok(())
}

struct Subscriber {
    name: &'static str,
    queue: Queue<Uploaded>,
    pool: WorkerPool<Uploaded>,
}

impl Subscriber {
    fn acked(&self) -> u64 {
        self.pool.totals().acked
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("\nstory complete");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\nFAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let alert = RateAlert::new(3, Duration::from_secs(10)).on_fire(|alert| {
        println!(
            "  ALERT: {} moderation dead letters within {:?}",
            alert.count, alert.window
        );
    });

    let topic: Topic<Uploaded> = Topic::new();
    let transcoder = topic.subscribe(
        "transcoder",
        Queue::builder().visibility_timeout(Duration::from_millis(100)),
    )?;
    let thumbnails = topic.subscribe("thumbnail", Queue::builder())?;
    let moderation = topic.subscribe(
        "moderation",
        Queue::builder()
            .max_receives(3)
            .backoff(Backoff::Fixed(Duration::from_millis(20)))
            .on_event(alert.hook()),
    )?;
    let indexer = topic.subscribe("indexer", Queue::builder())?;

    let serve = |name: &'static str,
                 queue: Queue<Uploaded>,
                 threads,
                 handler: fn(&Uploaded) -> Result<(), String>| {
        let pool = Workers::new(queue.consumer())
            .threads(threads)
            .name(name)
            .spawn(handler)?;
        Ok::<_, std::io::Error>(Subscriber { name, queue, pool })
    };
    let subscribers = [
        serve("transcoder", transcoder, 2, transcode)?,
        serve("thumbnail", thumbnails, 2, thumbnail)?,
        serve("moderation", moderation, 1, moderate)?,
        serve("indexer", indexer, 1, index)?,
    ];

    // The upload handler: publish and return.
    println!("uploads:");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for video_id in 1..=UPLOADS {
        let at = Instant::now();
        let key = SendOptions::new().key(format!("upload-{video_id}"));
        let published = topic.publish_with(Uploaded { video_id }, key)?;
        let took = at.elapsed();
        slowest = slowest.max(took);
        if video_id <= 3 {
            println!(
                "  upload {video_id} confirmed in {} µs, queued for {} subscribers",
                took.as_micros(),
                published.len()
            );
        }
    }
    println!(
        "  ... {UPLOADS} uploads confirmed, slowest publish {} µs",
        slowest.as_micros()
    );
    check(
        slowest < Duration::from_millis(50),
        "publishing did not wait for any subscriber",
    )?;

    let retry = topic.publish_with(Uploaded { video_id: 7 }, SendOptions::new().key("upload-7"))?;
    println!(
        "  client retried upload 7: duplicate in all {} subscriptions: {}",
        retry.len(),
        retry.is_duplicate()
    );
    check(
        retry.is_duplicate(),
        "a retried upload is a duplicate everywhere",
    )?;

    println!("\nprogress (acked / dead-lettered):");
    let settled = |s: &Subscriber| s.acked() + s.queue.dead_letters().len() as u64;
    wait_for(&subscribers, started, |subs| {
        subs.iter().all(|s| settled(s) == UPLOADS)
    })?;

    println!("\ndead letters:");
    for s in &subscribers {
        let letters = s.queue.dead_letters().list();
        println!("  {:<11} {}", s.name, letters.len());
        for letter in &letters {
            println!(
                "    video {}: {:?}, last error: {}",
                letter.payload().video_id,
                letter.reason(),
                letter.errors().last().map_or("-", String::as_str)
            );
        }
    }
    let dead: Vec<usize> = subscribers
        .iter()
        .map(|s| s.queue.dead_letters().len())
        .collect();
    check(
        dead == [0, 0, 4, 0],
        "the failures land in moderation's DLQ only",
    )?;
    check(alert.fired() == 1, "the dead-letter alert fired once")?;

    println!("\nshipping av2 support, redriving moderation's dead letters");
    CODEC_SUPPORT_SHIPPED.store(true, Ordering::SeqCst);
    let redriven = subscribers[2].queue.dead_letters().redrive_all()?;
    println!("  redriven: {redriven}");
    wait_for(&subscribers, started, |subs| {
        subs.iter().all(|s| s.acked() == UPLOADS)
    })?;

    println!("\nshutdown (received / acked / failed / panicked / lease extensions):");
    let mut extended = 0;
    for s in subscribers {
        let expired = s.queue.stats().expired;
        let report = s.pool.shutdown(Duration::from_secs(1));
        let t = report.totals();
        println!(
            "  {:<11} {:>3} {:>3} {:>3} {:>3} {:>3}   leases expired: {expired}",
            s.name, t.received, t.acked, t.failed, t.panicked, t.lease_extensions
        );
        check(
            report.unfinished.is_empty() && expired == 0,
            "clean shutdown, no lease expired",
        )?;
        if s.name == "transcoder" {
            extended = t.lease_extensions;
        }
    }
    check(
        extended >= UPLOADS,
        "every transcode outlived its lease and was extended",
    )?;
    Ok(())
}

/// Prints each subscriber's progress until `done`, for at most 10 s.
fn wait_for(
    subscribers: &[Subscriber],
    started: Instant,
    done: impl Fn(&[Subscriber]) -> bool,
) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let finished = done(subscribers);
        let mut line = format!("  {:>5} ms", started.elapsed().as_millis());
        for s in subscribers {
            let dead = s.queue.dead_letters().len();
            let dead = if dead > 0 {
                format!("/{dead}")
            } else {
                String::new()
            };
            line += &format!("  {} {:>2}{dead}", s.name, s.acked());
        }
        println!("{line}");
        if finished {
            return Ok(());
        }
        check(
            Instant::now() < deadline,
            "subscribers finished within 10 s",
        )?;
        thread::sleep(Duration::from_millis(150));
    }
}

fn check(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    if ok {
        Ok(())
    } else {
        Err(format!("expected: {what}").into())
    }
}

//! The video-upload story across processes: one "uploaded" event, three
//! subscriptions on a Redis server, each served by a worker pool in a
//! process of its own.
//!
//! The main process publishes `Uploaded { video_id }` to a topic whose
//! subscriptions are Redis queues, then starts one child process per
//! subscription (this same binary, with `worker <queue>`). Each child opens
//! its queue by name on the server and runs a worker pool until the queue
//! is closed and drained. Moderation rejects some videos: they land in its
//! dead-letter queue only, where the main process finds them. `close()`
//! on the main process ends the children: every process sees it.
//!
//! Run with `cargo run --features redis --example redis_pipeline`, against
//! the server in `SPOOL_REDIS_URL` or, without it, a `redis-server` of its
//! own on a free loopback port (stopped at the end). Exits non-zero if any
//! step did not happen.

use spool::{Backoff, Builder, Queue, Topic, Workers};
use std::error::Error;
use std::net::TcpListener;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Uploaded {
    video_id: u64,
}

const UPLOADS: u64 = 30;
const SUBSCRIPTIONS: [&str; 3] = ["thumbnails", "transcode", "moderation"];

/// Every process opens a queue with the same settings.
fn builder(url: &str, queue: &str) -> Builder<Uploaded> {
    Queue::builder()
        .redis(url, queue)
        .visibility_timeout(Duration::from_secs(5))
        .max_receives(2)
        .backoff(Backoff::Fixed(Duration::from_millis(20)))
}

/// A child: serves one subscription until it is closed and drained.
fn worker(url: &str, queue: &str, subscription: &str) -> Result<(), Box<dyn Error>> {
    let queue = builder(url, queue).open()?;
    let subscription = subscription.to_owned();
    let handler = move |video: &Uploaded| -> Result<(), String> {
        match subscription.as_str() {
            "transcode" => thread::sleep(Duration::from_millis(20)),
            "moderation" if video.video_id % 7 == 3 => {
                return Err(format!("video {}: unsupported codec", video.video_id))
            }
            _ => thread::sleep(Duration::from_millis(2)),
        }
        Ok(())
    };
    let pool = Workers::new(queue.consumer()).threads(3).spawn(handler)?;
    let report = pool.join(Duration::from_secs(60));
    let totals = report.totals();
    println!(
        "  [pid {}] {}: {} acked, {} failed attempts",
        std::process::id(),
        queue.name(),
        totals.acked,
        totals.failed
    );
    Ok(())
}

/// A redis-server of the example's own, stopped when dropped.
struct Server {
    child: Child,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Result<(Server, String), Box<dyn Error>> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("spool-example-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir.to_string_lossy(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}): apt-get install -y redis-server")
            })?;
        let server = Server { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok((server, format!("redis://127.0.0.1:{port}/")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run() -> Result<bool, Box<dyn Error>> {
    let (_server, url) = match std::env::var("SPOOL_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let (server, url) = Server::start()?;
            (Some(server), url)
        }
    };
    // Names of this run's own, so that a shared server is not disturbed.
    let run = format!("video-{}", std::process::id());
    let topic: Topic<Uploaded> = Topic::new();
    let mut queues = Vec::new();
    for name in SUBSCRIPTIONS {
        let queue_name = format!("{run}-{name}");
        queues.push((name, topic.subscribe(name, builder(&url, &queue_name))?));
    }
    println!(
        "publishing {UPLOADS} uploads to {} subscriptions on {url}",
        SUBSCRIPTIONS.len()
    );
    for video_id in 0..UPLOADS {
        topic.publish(Uploaded { video_id })?;
    }

    let me = std::env::current_exe()?;
    let children: Vec<Child> = SUBSCRIPTIONS
        .iter()
        .map(|name| {
            Command::new(&me)
                .args(["worker", &url, &format!("{run}-{name}"), name])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    println!("started {} worker processes", children.len());

    // Wait until every message is acknowledged or dead-lettered, then
    // close: each child's pool sees it and ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (_, queue) in &queues {
        loop {
            let stats = queue.try_stats()?;
            if stats.acked + stats.dead_letters as u64 == UPLOADS {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not finish: {stats:?}", queue.name()).into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        queue.close();
    }
    for mut child in children {
        if !child.wait()?.success() {
            return Err("a worker process failed".into());
        }
    }

    let mut ok = true;
    for (name, queue) in &queues {
        let stats = queue.try_stats()?;
        let letters = queue.dead_letters().try_list()?;
        println!(
            "{name:>10}: {} acked, {} dead-lettered{}",
            stats.acked,
            letters.len(),
            letters
                .first()
                .map(|l| format!(" (first: {:?}, errors {:?})", l.payload(), l.errors()))
                .unwrap_or_default()
        );
        let rejected = (0..UPLOADS).filter(|id| id % 7 == 3).count();
        let expected = if *name == "moderation" { rejected } else { 0 };
        ok &= letters.len() == expected && stats.acked == UPLOADS - expected as u64;
        queue.dead_letters().purge()?;
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return match worker(&args[2], &args[3], &args[4]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("worker failed: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(true) => {
            println!("every upload went through each pool; rejected videos only in moderation's dead-letter queue");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("the counts are not what they should be");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

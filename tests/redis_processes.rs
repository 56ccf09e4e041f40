//! Several processes on one Redis queue: producers and consumers in child
//! processes, one consumer killed with SIGKILL while it holds leases, and a
//! ledger that checks every message was acknowledged exactly once.
//!
//! The children are this test binary again, running the ignored test
//! [`child`] with its role in the environment.
#![cfg(feature = "redis")]

mod common;

use common::redis_server::RedisServer;
use spool::{Queue, RecvError};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QUEUE: &str = "ledger";
/// How long the whole run may take before it counts as a hang.
const RUN: Duration = Duration::from_secs(120);
/// Short, so that the killed consumer's messages come back soon.
const LEASE: Duration = Duration::from_secs(2);

fn open(url: &str) -> Queue<u64> {
    Queue::builder()
        .redis(url, QUEUE)
        .capacity(200)
        .visibility_timeout(LEASE)
        .open()
        .expect("open")
}

/// A child process: role `producer` (sends `FROM..TO`), `consumer` (acks
/// with `THREADS` threads until the queue is closed and drained, printing
/// `ack <id>` for each ack that succeeded), or `hoarder` (leases `HOLD`
/// messages, prints `held`, and waits to be killed).
#[test]
#[ignore = "a child process of the tests in this file, started by them"]
fn child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let queue = open(&var("SPOOL_URL"));
    match var("SPOOL_ROLE").as_str() {
        "producer" => {
            let from: u64 = var("FROM").parse().unwrap();
            let to: u64 = var("TO").parse().unwrap();
            let producer = queue.producer();
            for id in from..to {
                producer.send(id).expect("send");
            }
        }
        "consumer" => {
            let threads: usize = var("THREADS").parse().unwrap();
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let consumer = queue.consumer();
                    std::thread::spawn(move || loop {
                        match consumer.recv_timeout(Duration::from_secs(60)) {
                            Ok(delivery) => {
                                let id = *delivery;
                                if delivery.ack().is_ok() {
                                    println!("ack {id}");
                                }
                            }
                            Err(RecvError::Closed) => break,
                            Err(error) => panic!("receive failed: {error}"),
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().expect("a consumer thread panicked");
            }
        }
        "hoarder" => {
            let hold: usize = var("HOLD").parse().unwrap();
            let consumer = queue.consumer();
            let held: Vec<_> = (0..hold)
                .map(|_| {
                    consumer
                        .recv_timeout(Duration::from_secs(60))
                        .expect("receive")
                })
                .collect();
            println!("held {}", held.len());
            std::thread::sleep(Duration::from_secs(600));
        }
        role => panic!("unknown role {role}"),
    }
}

fn spawn(url: &str, role: &str, env: &[(&str, String)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SPOOL_URL", url)
        .env("SPOOL_ROLE", role)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a child")
}

/// Waits for `child` to exit successfully, within the run's deadline.
fn finish(mut child: Child, deadline: Instant, what: &str) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed: {status}");
            return lines.join().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn processes_share_a_queue_and_a_killed_consumer_loses_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let queue = open(&url);
    let deadline = Instant::now() + RUN;
    const PER_PRODUCER: u64 = 1500;

    // One consumer takes 20 messages and is killed with them.
    let mut hoarder = spawn(&url, "hoarder", &[("HOLD", "20".into())]);
    queue
        .producer()
        .send_batch((1_000_000..1_000_020).collect())
        .unwrap();
    // The test harness prints its own words first, on the same line.
    let out = BufReader::new(hoarder.stdout.take().unwrap());
    let held = out
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.rsplit_once("held ").map(|(_, n)| n.to_owned()));
    assert_eq!(held.as_deref(), Some("20"));
    assert_eq!(queue.try_stats().unwrap().in_flight, 20);
    hoarder.kill().unwrap(); // SIGKILL
    hoarder.wait().unwrap();

    // Two producers (the capacity of 200 makes them wait for room across
    // processes) and two consumers of four threads each.
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let from = p * PER_PRODUCER;
            let env = [
                ("FROM", from.to_string()),
                ("TO", (from + PER_PRODUCER).to_string()),
            ];
            spawn(&url, "producer", &env)
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| spawn(&url, "consumer", &[("THREADS", "4".into())]))
        .collect();
    for producer in producers {
        finish(producer, deadline, "a producer");
    }
    queue.close();
    let mut acks: HashMap<u64, usize> = HashMap::new();
    for consumer in consumers {
        for line in finish(consumer, deadline, "a consumer") {
            if let Some((_, id)) = line.rsplit_once("ack ") {
                *acks.entry(id.parse().unwrap()).or_default() += 1;
            }
        }
    }

    let expected: Vec<u64> = (0..2 * PER_PRODUCER).chain(1_000_000..1_000_020).collect();
    let twice: Vec<_> = acks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "acknowledged twice: {twice:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !acks.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "never acknowledged: {} of them",
        missing.len()
    );
    assert_eq!(acks.len(), expected.len());
    let stats = queue.try_stats().unwrap();
    assert_eq!(stats.acked, expected.len() as u64);
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead_letters),
        (0, 0, 0)
    );
    assert!(stats.expired >= 20, "the killed consumer's leases ran out");
}

//! Redis throughput: spool queues on a Redis server beside a raw `redis`
//! crate loop on Redis streams, on the same server in the same run, so the
//! report shows the ratios.
//!
//! The bench starts its own `redis-server` (the one on `PATH`) on a free
//! loopback port, in a temporary directory, with `--save ""
//! --appendonly no`: nothing is written to disk, so these are throughput
//! figures for the script and the round trips, not for persistence. The
//! server is stopped (`SHUTDOWN NOSAVE`, then killed if it lingers) and its
//! directory removed at the end, and on a panic.
//!
//! Three groups, 64-byte payloads (a `Vec<u8>` of 64: 65 bytes encoded),
//! one consumer handle per thread:
//!
//! - `redis_single_64B`: one thread, `send` → `recv` → `ack` of one
//!   message per iteration (three script calls), beside the baseline on a
//!   stream with a consumer group: `XADD` → `XREADGROUP COUNT 1` → `XACK`
//!   (three commands, three round trips). Target: spool ≥ 0.5× raw.
//! - `redis_batch64_64B`: one thread, `send_batch` of 64 → `recv_batch(64)`
//!   → `Batch::ack` (three script calls for 64 messages), reported per
//!   message; beside it a raw batch of 64 (`XADD` × 64 pipelined,
//!   `XREADGROUP COUNT 64`, one `XACK` of 64 ids). Target: spool batches
//!   ≥ 10× spool single messages.
//! - `redis_scaling_64B`: a round of `SCALE_ROUND` messages is put in the
//!   queue first (untimed, in batches of 64), then drained by `recv` →
//!   `ack` from 1 consumer thread, from 4 and 8, and from 2 processes × 4
//!   threads (this binary started again as a helper process, see
//!   [`helper`]: it opens the queue, then drains its share of each round
//!   when told to and says when it is done; it lives for the whole group,
//!   so its connections are warm like the parent's). The 8-thread row
//!   tells apart what a second process adds from what 8 calls in flight
//!   add.
//!
//! After criterion, the bench prints a profile of one call of each kind
//! (outside criterion, `PROFILE_CALLS` calls each): the client's time per
//! call beside the server's (`INFO commandstats`: the script's or the
//! command's own time, `usec_per_call`), and a `PING` round trip, which
//! says how much of a call is the round trip and how much the script.
//!
//! Last, the two ratios the targets name, measured in paired rounds (see
//! [`paired`]): the VM's round trip changes within seconds, and a ratio
//! of two figures taken at different moments measures that change.
//!
//! `cargo bench --features redis --bench redis`: about a minute here.

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use redis::{Connection, Value};
use spool::{Producer, Queue};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// 64 payload bytes; bincode adds a one-byte length.
type Payload = Vec<u8>;
type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Messages per timed round of the scaling group.
const SCALE_ROUND: u64 = 2_000;
const BATCH: usize = 64;
/// Calls of each kind in the profile printed after criterion.
const PROFILE_CALLS: usize = 2_000;
/// Set in the environment of a helper process: the server's URL.
const HELPER_URL: &str = "SPOOL_REDIS_BENCH_HELPER_URL";
const HELPER_QUEUE: &str = "SPOOL_REDIS_BENCH_HELPER_QUEUE";
const HELPER_THREADS: usize = 4;

fn payload() -> Payload {
    (0..64).collect()
}

fn split(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

// ---- the server ----

/// A `redis-server` of the bench's own, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = tempfile::Builder::new()
            .prefix("spool-bench-redis-")
            .tempdir()
            .expect("a directory for redis-server");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.path().to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): `apt-get install -y redis-server`")
            });
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.connect().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection that answered `PING`.
    fn connect(&self) -> redis::RedisResult<Connection> {
        let mut conn = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut conn)?;
        Ok(conn)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The connection drops with the reply: the error is expected.
        if let Ok(mut conn) = self.connect() {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").exec(&mut conn);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open(url: &str, name: &str) -> Queue<Payload> {
    Queue::builder()
        .redis(url, name)
        .capacity(100_000)
        .open()
        .expect("open the queue")
}

// ---- the raw baseline: a stream and a consumer group ----

fn raw_stream(conn: &mut Connection, stream: &str) {
    let _: Value = redis::cmd("DEL").arg(stream).query(conn).unwrap();
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .exec(conn)
        .unwrap();
}

fn raw_add(stream: &str, payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*").arg("p").arg(payload);
    cmd
}

fn raw_read(conn: &mut Connection, stream: &str, count: usize) -> Vec<Vec<u8>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(conn)
        .unwrap();
    entries(reply)
}

/// The entry ids of an `XREADGROUP` reply on one stream, each entry's
/// payload given to `black_box`.
fn entries(reply: Value) -> Vec<Vec<u8>> {
    let array = |v: Value| match v {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    };
    let mut ids = Vec::new();
    for stream in array(reply) {
        let mut stream = array(stream).into_iter();
        let _name = stream.next();
        for entry in array(stream.next().expect("entries")) {
            let mut entry = array(entry).into_iter();
            match entry.next() {
                Some(Value::BulkString(id)) => ids.push(id),
                other => panic!("not an id: {other:?}"),
            }
            let fields = array(entry.next().expect("fields"));
            black_box(&fields[1]);
        }
    }
    ids
}

fn raw_ack(conn: &mut Connection, stream: &str, ids: &[Vec<u8>]) {
    let acked: usize = redis::cmd("XACK")
        .arg(stream)
        .arg("g")
        .arg(ids)
        .query(conn)
        .unwrap();
    assert_eq!(acked, ids.len());
}

// ---- 1 and 2: one thread ----

fn single(c: &mut Criterion, server: &Server) {
    let mut group = c.benchmark_group("redis_single_64B");
    group.throughput(Throughput::Elements(1));
    short(&mut group, 10, 3);
    let mut conn = server.connect().unwrap();
    raw_stream(&mut conn, "raw_single");
    let data = payload();
    group.bench_function("raw_xadd_xreadgroup_xack", |b| {
        b.iter(|| {
            let _: Vec<u8> = raw_add("raw_single", &data).query(&mut conn).unwrap();
            let ids = raw_read(&mut conn, "raw_single", 1);
            assert_eq!(ids.len(), 1);
            raw_ack(&mut conn, "raw_single", &ids);
        })
    });
    let queue = open(&server.url(), "single");
    let (producer, consumer) = (queue.producer(), queue.consumer());
    group.bench_function("spool_send_recv_ack", |b| {
        b.iter(|| {
            producer.send(data.clone()).unwrap();
            let delivery = consumer.recv().unwrap();
            black_box(delivery[0]);
            delivery.ack().unwrap();
        })
    });
    group.finish();
}

fn batches(c: &mut Criterion, server: &Server) {
    let mut group = c.benchmark_group("redis_batch64_64B");
    group.throughput(Throughput::Elements(BATCH as u64));
    short(&mut group, 10, 3);
    let mut conn = server.connect().unwrap();
    raw_stream(&mut conn, "raw_batch");
    let data = payload();
    group.bench_function("raw_pipelined_xadd_xreadgroup_xack", |b| {
        b.iter(|| {
            let mut pipe = redis::pipe();
            for _ in 0..BATCH {
                pipe.add_command(raw_add("raw_batch", &data)).ignore();
            }
            pipe.exec(&mut conn).unwrap();
            let ids = raw_read(&mut conn, "raw_batch", BATCH);
            assert_eq!(ids.len(), BATCH);
            raw_ack(&mut conn, "raw_batch", &ids);
        })
    });
    let queue = open(&server.url(), "batch");
    let (producer, consumer) = (queue.producer(), queue.consumer());
    group.bench_function("spool_send_batch_recv_batch_ack", |b| {
        b.iter(|| {
            producer.send_batch(vec![data.clone(); BATCH]).unwrap();
            let batch = consumer.recv_batch(BATCH, Duration::from_secs(5)).unwrap();
            assert_eq!(batch.len(), BATCH);
            for message in &batch {
                black_box(message[0]);
            }
            batch.ack().unwrap();
        })
    });
    group.finish();
}

/// Few samples and short runs: the whole bench stays under two minutes.
fn short(group: &mut Group<'_>, samples: usize, seconds: u64) {
    group.sample_size(samples);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(seconds));
}

// ---- 3: scaling ----

fn prefill(producer: &Producer<Payload>, messages: u64) {
    let mut left = messages as usize;
    while left > 0 {
        let n = left.min(BATCH);
        producer.send_batch(vec![payload(); n]).unwrap();
        left -= n;
    }
}

/// `messages` received and acknowledged by `threads` consumer threads.
fn drain(queue: &Queue<Payload>, threads: u64, messages: u64) {
    thread::scope(|s| {
        for t in 0..threads {
            let consumer = queue.consumer();
            s.spawn(move || {
                for _ in 0..split(messages, threads, t) {
                    let delivery = consumer.recv().unwrap();
                    black_box(delivery[0]);
                    delivery.ack().unwrap();
                }
            });
        }
    });
}

/// A helper process: this binary with [`HELPER_URL`] set, draining its
/// share of each round on [`HELPER_THREADS`] threads. It says `ready`
/// once its queue is open; then each line `go N` from the parent is
/// answered by `done` once it has received and acknowledged N messages.
/// It exits when its input closes.
struct Helper {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Helper {
    fn start(url: &str, queue: &str) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(HELPER_URL, url)
            .env(HELPER_QUEUE, queue)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a helper process");
        let to = child.stdin.take();
        let from = BufReader::new(child.stdout.take().unwrap());
        let mut helper = Helper { child, to, from };
        assert_eq!(helper.line(), "ready");
        helper
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.from.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn go(&mut self, messages: u64) {
        let to = self.to.as_mut().unwrap();
        writeln!(to, "go {messages}").unwrap();
        to.flush().unwrap();
    }

    fn wait_done(&mut self) {
        assert_eq!(self.line(), "done", "the helper process failed");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

/// The helper process's side of [`Helper`].
fn helper(url: &str, name: &str) {
    let queue = open(url, name);
    let stdout = std::io::stdout();
    let say = |word: &str| {
        let mut out = stdout.lock();
        writeln!(out, "{word}").unwrap();
        out.flush().unwrap();
    };
    say("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let messages: u64 = line
            .strip_prefix("go ")
            .and_then(|n| n.parse().ok())
            .expect("go N");
        drain(&queue, HELPER_THREADS as u64, messages);
        say("done");
    }
}

fn scaling(c: &mut Criterion, server: &Server) {
    let mut group = c.benchmark_group("redis_scaling_64B");
    group.throughput(Throughput::Elements(SCALE_ROUND));
    group.sampling_mode(SamplingMode::Flat);
    short(&mut group, 10, 4);
    let url = server.url();
    let queue = open(&url, "scale");
    let producer = queue.producer();
    for threads in [1, 4, 8] {
        let id = BenchmarkId::new("spool_recv_ack", format!("1proc_{threads}c"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        prefill(&producer, SCALE_ROUND);
                        let start = Instant::now();
                        drain(&queue, threads, SCALE_ROUND);
                        start.elapsed()
                    })
                    .sum()
            })
        });
    }
    let mut other = Helper::start(&url, "scale");
    let id = BenchmarkId::new("spool_recv_ack", format!("2proc_{HELPER_THREADS}c_each"));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    prefill(&producer, SCALE_ROUND);
                    let theirs = SCALE_ROUND / 2;
                    let start = Instant::now();
                    other.go(theirs);
                    drain(&queue, HELPER_THREADS as u64, SCALE_ROUND - theirs);
                    other.wait_done();
                    start.elapsed()
                })
                .sum()
        })
    });
    drop(other);
    group.finish();
    assert_eq!(queue.stats().ready, 0);
}

// ---- the profile ----

/// `(calls, usec)` of each command in `INFO commandstats`, by name.
fn commandstats(conn: &mut Connection) -> Vec<(String, u64, u64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.push((name.to_owned(), field("calls"), field("usec")));
    }
    out
}

/// Runs `calls` calls through `run`, and prints the client's time per call
/// beside the server's for `command` (and the commands a script made).
fn profile(conn: &mut Connection, what: &str, command: &str, calls: usize, run: impl FnOnce()) {
    redis::cmd("CONFIG").arg("RESETSTAT").exec(conn).unwrap();
    let start = Instant::now();
    run();
    let client = start.elapsed().as_secs_f64() * 1e6 / calls as f64;
    let stats = commandstats(conn);
    let (_, n, usec) = stats
        .iter()
        .find(|(name, ..)| name == command)
        .cloned()
        .unwrap_or_default();
    let server = usec as f64 / n.max(1) as f64;
    let inner: Vec<String> = stats
        .iter()
        .filter(|(name, ..)| {
            name != command
                && !["config", "info", "script"].contains(&name.split('|').next().unwrap())
        })
        .map(|(name, calls, _)| format!("{name} {:.1}", *calls as f64 / n.max(1) as f64))
        .collect();
    println!(
        "{what:<34} client {client:>6.1} µs/call  server {server:>5.1} µs/call ({n} {command})  {}",
        if inner.is_empty() {
            String::new()
        } else {
            format!("inside, per call: {}", inner.join(", "))
        }
    );
}

fn server_profile(server: &Server) {
    let mut conn = server.connect().unwrap();
    let mut other = server.connect().unwrap();
    let n = PROFILE_CALLS;
    println!("\nper call, {n} calls each, one thread (client: wall time; server: INFO commandstats usec_per_call)");
    profile(&mut conn, "PING round trip", "ping", n, || {
        for _ in 0..n {
            redis::cmd("PING").query::<String>(&mut other).unwrap();
        }
    });
    raw_stream(&mut other, "raw_profile");
    let data = payload();
    profile(&mut conn, "raw XADD", "xadd", n, || {
        for _ in 0..n {
            let _: Vec<u8> = raw_add("raw_profile", &data).query(&mut other).unwrap();
        }
    });
    let mut ids = Vec::new();
    profile(&mut conn, "raw XREADGROUP COUNT 1", "xreadgroup", n, || {
        for _ in 0..n {
            ids.extend(raw_read(&mut other, "raw_profile", 1));
        }
    });
    profile(&mut conn, "raw XACK", "xack", n, || {
        for id in &ids {
            raw_ack(&mut other, "raw_profile", std::slice::from_ref(id));
        }
    });
    let queue = open(&server.url(), "profile");
    let (producer, consumer) = (queue.producer(), queue.consumer());
    profile(&mut conn, "spool send", "fcall", n, || {
        for _ in 0..n {
            producer.send(data.clone()).unwrap();
        }
    });
    let mut deliveries = Vec::with_capacity(n);
    profile(&mut conn, "spool recv", "fcall", n, || {
        for _ in 0..n {
            deliveries.push(consumer.recv().unwrap());
        }
    });
    profile(&mut conn, "spool ack", "fcall", n, || {
        for delivery in deliveries.drain(..) {
            delivery.ack().unwrap();
        }
    });
    let batches = n / BATCH;
    profile(&mut conn, "spool send_batch(64)", "fcall", batches, || {
        for _ in 0..batches {
            producer.send_batch(vec![data.clone(); BATCH]).unwrap();
        }
    });
    let mut received = Vec::with_capacity(batches);
    profile(&mut conn, "spool recv_batch(64)", "fcall", batches, || {
        for _ in 0..batches {
            received.push(consumer.recv_batch(BATCH, Duration::from_secs(5)).unwrap());
        }
    });
    profile(&mut conn, "spool Batch::ack (64)", "fcall", batches, || {
        for batch in received.drain(..) {
            batch.ack().unwrap();
        }
    });
}

// ---- paired rounds ----

/// Rounds of the paired comparison printed after the profile.
const PAIRED_ROUNDS: usize = 9;
/// Messages per side of each round.
const PAIRED_MESSAGES: usize = 640;

/// The targets' ratios measured in alternating short rounds: this VM's
/// round trip swings from 8 to 80 µs with its load, within seconds, so
/// two criterion groups run a minute apart can see different machines.
/// Each round times the raw loop, spool single messages and spool
/// batches of 64 back to back (in an order that rotates), with a `PING`
/// beside them to show the round trip of the moment; the ratios are of
/// one round's figures, and the report gives their median and range.
fn paired(server: &Server) {
    let mut conn = server.connect().unwrap();
    raw_stream(&mut conn, "raw_paired");
    let queue = open(&server.url(), "paired");
    let (producer, consumer) = (queue.producer(), queue.consumer());
    let data = payload();
    let mut per_message = |side: usize| -> f64 {
        let start = Instant::now();
        match side {
            0 => {
                for _ in 0..PAIRED_MESSAGES {
                    let _: Vec<u8> = raw_add("raw_paired", &data).query(&mut conn).unwrap();
                    let ids = raw_read(&mut conn, "raw_paired", 1);
                    raw_ack(&mut conn, "raw_paired", &ids);
                }
            }
            1 => {
                for _ in 0..PAIRED_MESSAGES {
                    producer.send(data.clone()).unwrap();
                    consumer.recv().unwrap().ack().unwrap();
                }
            }
            _ => {
                for _ in 0..PAIRED_MESSAGES / BATCH {
                    producer.send_batch(vec![data.clone(); BATCH]).unwrap();
                    let batch = consumer.recv_batch(BATCH, Duration::from_secs(5)).unwrap();
                    assert_eq!(batch.len(), BATCH);
                    batch.ack().unwrap();
                }
            }
        }
        start.elapsed().as_secs_f64() * 1e6 / PAIRED_MESSAGES as f64
    };
    let mut ping = server.connect().unwrap();
    let (mut singles, mut batches, mut trips) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..PAIRED_ROUNDS {
        let mut took = [0.0; 3];
        for step in 0..3 {
            let side = (round + step) % 3;
            took[side] = per_message(side);
        }
        let start = Instant::now();
        for _ in 0..100 {
            redis::cmd("PING").query::<String>(&mut ping).unwrap();
        }
        trips.push(start.elapsed().as_secs_f64() * 1e4);
        singles.push(took[0] / took[1]);
        batches.push(took[1] / took[2]);
    }
    let spread = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (t0, t1, t2) = spread(trips);
    let (s0, s1, s2) = spread(singles);
    let (b0, b1, b2) = spread(batches);
    println!("\npaired rounds ({PAIRED_ROUNDS} of {PAIRED_MESSAGES} messages a side; PING {t0:.1}/{t1:.1}/{t2:.1} µs min/median/max)");
    println!(
        "spool single messages / raw loop: median {s1:.2}, range {s0:.2}-{s2:.2} (target >= 0.5)"
    );
    println!("spool batches of 64 / spool singles: median {b1:.1}x, range {b0:.1}-{b2:.1}x (target >= 10x)");
}

fn main() {
    if let Ok(url) = std::env::var(HELPER_URL) {
        let name = std::env::var(HELPER_QUEUE).expect("the helper's queue");
        return helper(&url, &name);
    }
    let server = Server::start();
    let mut c = Criterion::default().configure_from_args();
    single(&mut c, &server);
    batches(&mut c, &server);
    scaling(&mut c, &server);
    c.final_summary();
    // Only a benchmark run (criterion's rule: `--bench` without `--test`,
    // which `cargo test --benches` leaves out) prints the profile; a
    // profiler's `--profile-time` run wants the loops alone.
    let args: Vec<String> = std::env::args().collect();
    let quiet = ["--test", "--list", "--profile-time"];
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| quiet.contains(&a.as_str())) {
        server_profile(&server);
        paired(&server);
    }
}

//! The `spool` binary, run as a separate process on real directories:
//! healthy, torn, corrupt, and held open by this test's process (which
//! the tool must read without the lock, and refuse to change, naming
//! this process's id). Built with `--features cli`.

use serde_json::Value;
use spool::{Queue, SendOptions};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the built binary; its output must come within the test's time.
fn spool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(args)
        .output()
        .expect("the spool binary runs")
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn open(dir: &Path) -> Queue<String> {
    Queue::builder()
        .path(dir)
        .backoff(spool::Backoff::None)
        .visibility_timeout(Duration::from_secs(3600))
        .open()
        .unwrap()
}

/// A closed queue holding: id 1 dead-lettered after one failure, id 2
/// acked, id 3 ready under key "k3", id 4 delayed for an hour.
fn healthy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("uploads");
    let queue = open(&dir);
    let producer = queue.producer();
    let consumer = queue.consumer();
    producer.send("a".into()).unwrap();
    producer.send("b".into()).unwrap();
    producer
        .send_with("hello".into(), SendOptions::new().key("k3"))
        .unwrap();
    producer
        .send_with(
            "later".into(),
            SendOptions::new().delay(Duration::from_secs(3600)),
        )
        .unwrap();
    consumer
        .try_recv()
        .unwrap()
        .fail("timeout talking to S3")
        .unwrap();
    let first = consumer.try_recv().unwrap(); // id 2, then id 1 again
    assert_eq!(*first, "b");
    first.ack().unwrap();
    consumer.try_recv().unwrap(); // id 3: released on drop
    consumer
        .try_recv()
        .unwrap()
        .dead_letter("no such image")
        .unwrap();
    drop((producer, consumer, queue));
    (tmp, dir)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn dir_listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn stats_counts_each_state_and_reads_the_disk() {
    let (_tmp, dir) = healthy();
    let out = spool(&["stats", dir.to_str().unwrap(), "--json"]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(stats["ready"], 1);
    assert_eq!(stats["delayed"], 1);
    assert_eq!(stats["dead_letters"], 1);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["next_id"], 5);
    assert!(stats["oldest_ready_age_ms"].is_u64());
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["segments"], segments(&dir).len());
    assert!(stats["torn_tail"].is_null());
    let text = spool(&["stats", dir.to_str().unwrap()]);
    assert!(
        stdout(&text).contains("dead_letters: 1"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn dump_writes_each_live_message_as_a_json_line_with_its_bytes() {
    let (_tmp, dir) = healthy();
    let before = dir_listing(&dir);
    let out = spool(&["dump", dir.to_str().unwrap()]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let lines = json_lines(&out);
    let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 3, 4]);
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["dead_letter", "ready", "delayed"]);
    let hello = &lines[1];
    assert_eq!(hello["key"], "k3");
    assert_eq!(hello["receive_count"], 1);
    // bincode of "hello": its length as a varint, then the bytes.
    assert_eq!(hello["payload_base64"], "BWhlbGxv");
    assert_eq!(hello["payload_size"], 6);
    assert!(hello.get("payload").is_none(), "the binary knows no type");
    assert_eq!(lines[0]["reason"], "rejected: no such image");
    assert_eq!(dir_listing(&dir), before, "reading changed nothing");
}

#[test]
fn dump_shows_a_priority_and_a_group_where_a_message_has_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("orders");
    {
        let queue = open(&dir);
        let producer = queue.producer();
        producer.send("plain".into()).unwrap();
        let options = SendOptions::new()
            .group("customer-7")
            .priority(spool::Priority::High);
        producer.send_with("paid".into(), options).unwrap();
    }
    let out = spool(&["dump", dir.to_str().unwrap()]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let lines = json_lines(&out);
    assert!(lines[0].get("priority").is_none() && lines[0].get("group").is_none());
    assert_eq!(lines[1]["priority"], 0);
    assert_eq!(lines[1]["group"], "customer-7");
}

#[test]
fn verify_tells_clean_from_torn_from_corrupt_and_repairs_nothing() {
    let (_tmp, dir) = healthy();
    let d = dir.to_str().unwrap();
    let out = spool(&["verify", d]);
    assert_eq!(status(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("clean"));

    // A torn tail: half a frame header at the end of the last file.
    let last = segments(&dir).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[7; 9])
        .unwrap();
    let out = spool(&["verify", d]);
    assert_eq!(status(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("torn tail"), "{report}");
    assert!(report.contains(&last.display().to_string()), "{report}");
    assert!(report.contains(&format!("offset {len}")), "{report}");
    assert_eq!(fs::metadata(&last).unwrap().len(), len + 9, "not truncated");
    // Reads still work, and stop before the tail.
    let stats = spool(&["stats", d, "--json"]);
    assert_eq!(status(&stats), 0);
    // A reopen repairs it.
    drop(open(&dir));
    assert_eq!(status(&spool(&["verify", d])), 0);

    // Corruption: a flipped byte in a frame of a file that is not the last.
    let first = segments(&dir).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    bytes[64 + 16 + 2] ^= 0x40;
    fs::write(&first, &bytes).unwrap();
    let out = spool(&["verify", d]);
    assert_eq!(status(&out), 2, "{}{}", stdout(&out), stderr(&out));
    let report = stderr(&out);
    assert!(report.contains(&first.display().to_string()), "{report}");
    assert!(report.contains("offset 64"), "{report}");
    assert_eq!(status(&spool(&["dump", d])), 2, "every reader reports it");
}

#[test]
fn a_directory_held_open_is_read_without_the_lock_and_never_changed() {
    let (_tmp, dir) = healthy();
    let d = dir.to_str().unwrap();
    let queue = open(&dir);
    let job = queue.consumer().try_recv().unwrap(); // id 3, in flight
    let stats = spool(&["stats", d, "--json"]);
    assert_eq!(status(&stats), 0, "{}", stderr(&stats));
    let stats: Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(
        (&stats["ready"], &stats["in_flight"], &stats["dead_letters"]),
        (&Value::from(0), &Value::from(1), &Value::from(1))
    );
    assert_eq!(status(&spool(&["verify", d])), 0);
    assert_eq!(json_lines(&spool(&["dead-letters", d, "list"])).len(), 1);

    let pid = std::process::id().to_string();
    for args in [
        vec!["dead-letters", d, "purge"],
        vec!["dead-letters", d, "redrive", "1"],
        vec!["dead-letters", d, "remove", "1"],
        vec!["compact", d],
    ] {
        let out = spool(&args);
        assert_eq!(status(&out), 3, "{args:?}");
        let message = stderr(&out);
        assert!(message.contains("in use by process"), "{message}");
        assert!(message.contains(&pid), "{message}");
    }
    job.ack().unwrap();
    assert_eq!(queue.dead_letters().len(), 1, "nothing changed");
}

#[test]
fn dead_letters_are_listed_shown_redriven_removed_and_purged() {
    let (_tmp, dir) = healthy();
    let d = dir.to_str().unwrap();
    let list = json_lines(&spool(&["dead-letters", d, "list"]));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], 1);
    let show = json_lines(&spool(&["dead-letters", d, "show", "1"]));
    assert_eq!(
        show[0]["errors"],
        serde_json::json!(["timeout talking to S3"])
    );
    assert_eq!(show[0]["receive_count"], 2);
    // An id that is not a dead letter: refused, nothing changed.
    let out = spool(&["dead-letters", d, "redrive", "1", "3"]);
    assert_eq!(status(&out), 3);
    assert!(stderr(&out).contains("message 3 is not in the dead-letter queue"));
    assert_eq!(status(&spool(&["dead-letters", d, "show", "3"])), 3);

    let out = spool(&["dead-letters", d, "redrive", "1"]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    {
        let queue = open(&dir);
        assert_eq!(queue.dead_letters().len(), 0);
        assert_eq!(queue.stats().ready, 2);
        let consumer = queue.consumer();
        // Id 3 was ready before id 1 was redriven.
        let ready = consumer.try_recv().unwrap();
        assert_eq!((ready.id().get(), ready.receive_count()), (3, 2));
        let redriven = consumer.try_recv().unwrap();
        assert_eq!(redriven.id().get(), 1);
        assert_eq!(redriven.receive_count(), 1, "a fresh receive count");
        redriven.dead_letter("still broken").unwrap();
        ready.dead_letter("also").unwrap();
    }
    let out = spool(&["dead-letters", d, "remove", "1"]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let list = json_lines(&spool(&["dead-letters", d, "list"]));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], 3);
    let out = spool(&["dead-letters", d, "purge"]);
    assert_eq!(
        (status(&out), stdout(&out).trim()),
        (0, "purged: 1 dead letters")
    );
    let queue = open(&dir);
    assert_eq!(queue.dead_letters().len(), 0);
    assert_eq!(queue.stats().delayed, 1, "the delayed message is untouched");
}

#[test]
fn compact_reclaims_acknowledged_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    for round in 0..3 {
        let queue = open(&dir);
        for i in 0..200 {
            queue.producer().send(format!("{round}-{i}")).unwrap();
            queue.consumer().try_recv().unwrap().ack().unwrap();
        }
        queue.producer().send(format!("keep-{round}")).unwrap();
    }
    let size = |dir: &Path| -> u64 { dir_listing(dir).iter().map(|(_, len)| len).sum() };
    let before = size(&dir);
    let out = spool(&["compact", dir.to_str().unwrap()]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(size(&dir) < before / 4, "{} -> {}", before, size(&dir));
    let stats = spool(&["stats", dir.to_str().unwrap(), "--json"]);
    let stats: Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(
        (&stats["base_files"], &stats["ready"]),
        (&Value::from(1), &Value::from(3)),
        "{stats}"
    );
    let queue = open(&dir);
    assert_eq!(queue.stats().ready, 3);
}

#[test]
fn a_missing_directory_is_an_error_and_is_not_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nowhere");
    let out = spool(&["stats", dir.to_str().unwrap()]);
    assert_eq!(status(&out), 3);
    assert!(stderr(&out).contains("is not a directory"));
    assert!(!dir.exists());
    let empty = tmp.path();
    let out = spool(&["dump", empty.to_str().unwrap()]);
    assert_eq!(status(&out), 3);
    assert!(stderr(&out).contains("holds no spool queue"));
    assert_eq!(status(&spool(&["frobnicate"])), 64);
    assert_eq!(status(&spool(&["dead-letters", "x", "redrive"])), 64);
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Resize {
    image: String,
    width: u32,
}

#[test]
fn a_typed_admin_tool_decodes_payloads_as_json_and_refuses_other_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("resize");
    {
        let queue: Queue<Resize> = Queue::builder().path(&dir).open().unwrap();
        queue
            .producer()
            .send(Resize {
                image: "cat.png".into(),
                width: 200,
            })
            .unwrap();
    }
    let d = dir.to_str().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        spool::admin::run::<Resize>(["tool", "dump", d], &mut out, &mut err),
        0
    );
    let line: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        line["payload"],
        serde_json::json!({"image": "cat.png", "width": 200})
    );

    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        spool::admin::run::<u64>(["tool", "dump", d], &mut out, &mut err),
        3
    );
    let message = String::from_utf8(err).unwrap();
    assert!(message.contains("another message type"), "{message}");
}

#[test]
fn reads_beside_a_queue_that_is_writing_rotating_and_compacting_see_a_consistent_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("busy");
    let queue: Queue<String> = Queue::builder()
        .path(&dir)
        .segment_size(4096)
        .open()
        .unwrap();
    queue.producer().send("keep".into()).unwrap();
    let keep = queue.consumer().try_recv().unwrap(); // in flight throughout
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (queue, stop) = (queue.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            // Bounded: stops when told, or after a generous number of rounds.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && rounds < 1_000_000 {
                queue.producer().send(format!("job {rounds}")).unwrap();
                queue.consumer().try_recv().unwrap().ack().unwrap();
                rounds += 1;
                if rounds.is_multiple_of(50) {
                    queue.compact().unwrap(); // besides the ones rotation starts
                }
            }
            rounds
        })
    };
    let d = dir.to_str().unwrap();
    // Reads until at least one of them met a compaction's base file
    // (bounded: the writer rotates every few dozen operations).
    let mut compacted = false;
    for reads in 0..500 {
        if reads >= 15 && compacted {
            break;
        }
        let out = spool(&["stats", d, "--json"]);
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let live = stats["live"].as_u64().unwrap();
        assert!((1..=2).contains(&live), "{stats}");
        // "keep" is in flight, but shows as ready once a compaction has
        // rewritten its receive away (see src/wal/snapshot.rs).
        let ready_or_in_flight =
            stats["ready"].as_u64().unwrap() + stats["in_flight"].as_u64().unwrap();
        assert!(ready_or_in_flight >= 1, "{stats}");
        compacted |= stats["base_files"].as_u64().unwrap() > 0;
        let out = spool(&["verify", d]);
        assert!(
            [0, 1].contains(&status(&out)),
            "a write in progress may look torn, never corrupt: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(compacted, "no read met a compaction in {rounds} rounds");
    keep.ack().unwrap();
}

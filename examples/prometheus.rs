//! Serves a queue's metrics in the Prometheus text format.
//!
//! ```text
//! cargo run --example prometheus --features metrics            # serves http://127.0.0.1:9184/metrics
//! cargo run --example prometheus --features metrics -- --once  # prints one scrape and exits
//! ```
//!
//! Two queues, `emails` (in memory) and `uploads` (a write-ahead file in
//! a temporary directory), get traffic from a producer and a consumer that
//! fails one job in ten; their counters, gauges and (for `uploads`) the
//! write-ahead file's bytes, syncs and sync latency show up labelled with
//! the queue's name. The recorder comes from `metrics-exporter-prometheus`
//! and must be installed before the queues open. A scrape is answered by
//! a plain `TcpListener`, to keep the example free of an HTTP stack.

use metrics_exporter_prometheus::PrometheusBuilder;
use spool::Queue;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

fn traffic(queue: Queue<u64>) {
    let producer = queue.producer();
    std::thread::spawn(move || {
        for job in 0.. {
            if producer.send(job).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let consumer = queue.consumer();
    std::thread::spawn(move || {
        while let Ok(job) = consumer.recv() {
            let _ = if *job % 10 == 0 {
                job.fail("upstream timeout")
            } else {
                job.ack()
            };
        }
    });
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let dir = tempfile::tempdir()?;
    let emails: Queue<u64> = Queue::builder().name("emails").max_receives(3).open()?;
    let uploads: Queue<u64> = Queue::builder()
        .path(dir.path().join("uploads"))
        .max_receives(3)
        .open()?;
    traffic(emails.clone());
    traffic(uploads.clone());

    if std::env::args().any(|arg| arg == "--once") {
        std::thread::sleep(Duration::from_millis(300));
        emails.record_metrics();
        uploads.record_metrics();
        print!("{}", handle.render());
        return Ok(());
    }
    let listener = TcpListener::bind("127.0.0.1:9184")?;
    println!("serving http://127.0.0.1:9184/metrics (Ctrl-C to stop)");
    for stream in listener.incoming() {
        let mut stream = stream?;
        // The request line and headers, up to the blank line.
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        let body = handle.render();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    }
    Ok(())
}

//! Metrics (feature `metrics`) and traces (feature `tracing`): what a
//! queue publishes, labelled with its name. Metrics are read back in the
//! Prometheus text format through the recorder this test binary installs;
//! spans and events through a small subscriber that keeps what it sees.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use spool::Queue;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The process-wide recorder, installed once for every test here.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of `metric{queue="<queue>"}` in the rendered text.
fn value(text: &str, metric: &str, queue: &str) -> Option<f64> {
    let prefix = format!("{metric}{{queue=\"{queue}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn counters_and_gauges_per_queue_name() {
    let handle = recorder();
    let queue: Queue<u32> = Queue::builder()
        .name("metered")
        .backoff(spool::Backoff::None)
        .open()
        .unwrap();
    let producer = queue.producer();
    let consumer = queue.consumer();
    for i in 0..4 {
        producer.send(i).unwrap();
    }
    consumer.try_recv().unwrap().ack().unwrap();
    consumer.try_recv().unwrap().nack().unwrap();
    consumer.try_recv().unwrap().dead_letter("bad").unwrap();
    let id = queue.dead_letters().list()[0].id();
    queue.dead_letters().redrive(id).unwrap();
    let _held = consumer.try_recv().unwrap();
    queue.record_metrics();
    let text = handle.render();
    let q = "metered";
    assert_eq!(value(&text, "spool_sent_total", q), Some(4.0), "{text}");
    assert_eq!(value(&text, "spool_acked_total", q), Some(1.0));
    assert_eq!(value(&text, "spool_released_total", q), Some(1.0));
    assert_eq!(value(&text, "spool_dead_lettered_total", q), Some(1.0));
    assert_eq!(value(&text, "spool_redriven_total", q), Some(1.0));
    assert_eq!(value(&text, "spool_expired_total", q), Some(0.0));
    assert_eq!(value(&text, "spool_in_flight", q), Some(1.0));
    assert_eq!(value(&text, "spool_ready", q), Some(2.0));
    assert_eq!(value(&text, "spool_delayed", q), Some(0.0));
    assert_eq!(value(&text, "spool_dead_letters", q), Some(0.0));
    assert!(value(&text, "spool_oldest_ready_age_seconds", q).unwrap() >= 0.0);
}

#[test]
fn a_persistent_queue_reports_bytes_written_and_syncs() {
    let handle = recorder();
    let dir = tempfile::tempdir().unwrap();
    let queue: Queue<String> = Queue::builder()
        .path(dir.path().join("durable-metrics"))
        .open()
        .unwrap();
    queue.producer().send("x".repeat(100)).unwrap(); // returns once synced
    let text = handle.render();
    let q = "durable-metrics";
    assert!(
        value(&text, "spool_wal_bytes_written_total", q).unwrap() > 100.0,
        "{text}"
    );
    assert!(value(&text, "spool_wal_syncs_total", q).unwrap() >= 1.0);
    let count = format!("spool_wal_sync_seconds_count{{queue=\"{q}\"}} ");
    assert!(text.lines().any(|l| l.starts_with(&count)), "{text}");
}

/// Spans (with their fields), closes and events, as text.
#[derive(Default)]
struct Capture {
    seen: Mutex<Vec<String>>,
    next: std::sync::atomic::AtomicU64,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(format!("span {}", span.metadata().name()));
        span.record(&mut fields);
        self.seen.lock().unwrap().push(fields.0);
        Id::from_u64(1 + self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(format!("{}", event.metadata().level()));
        event.record(&mut fields);
        self.seen.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
    fn try_close(&self, id: Id) -> bool {
        self.seen
            .lock()
            .unwrap()
            .push(format!("close {}", id.into_u64()));
        true
    }
}

#[test]
fn a_span_per_delivery_from_receive_to_settle_and_a_warning_per_dead_letter() {
    let capture = std::sync::Arc::new(Capture::default());
    let queue: Queue<u32> = Queue::builder().name("traced").open().unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        queue
            .producer()
            .send_with(7, spool::SendOptions::new().key("order-7"))
            .unwrap();
        let delivery = queue.consumer().try_recv().unwrap();
        {
            let seen = capture.seen.lock().unwrap();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(
                seen[0],
                "span spool.delivery queue=\"traced\" id=1 key=\"order-7\" receive_count=1"
            );
        }
        let _ = delivery.span().enter();
        delivery.dead_letter("no such order").unwrap();
    });
    let seen = capture.seen.lock().unwrap();
    assert_eq!(
        seen[1..],
        [
            "WARN message=message dead-lettered queue=\"traced\" id=1 reason=rejected: no such order"
                .to_string(),
            "close 1".to_string(),
        ]
    );
}

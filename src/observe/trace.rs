//! Spans and logs through the `tracing` facade (feature `tracing`).
//!
//! | what | level | fields |
//! |---|---|---|
//! | span `spool.delivery`, from receive to settle (or drop) | info | `queue`, `id`, `key`, `receive_count` |
//! | a message dead-lettered | warn | `queue`, `id`, `reason` |
//! | the write-ahead file stopped after a failure | error | `queue`, `error` |
//!
//! The span is not entered for you (a delivery moves between threads):
//! enter [`Delivery::span`](crate::Delivery::span) around the work, or
//! use it as the parent of the handler's own spans.

use crate::dead_letter::DeadLetterReason;
use crate::error::StorageError;
use crate::message::MessageId;

/// A delivery's span.
pub(crate) type DeliverySpan = tracing::Span;

pub(crate) fn delivery_span(
    queue: &str,
    id: MessageId,
    key: Option<&str>,
    receive_count: u32,
) -> DeliverySpan {
    tracing::info_span!("spool.delivery", queue, id = id.get(), key, receive_count)
}

pub(crate) fn dead_lettered(queue: &str, id: MessageId, reason: &DeadLetterReason) {
    tracing::warn!(queue, id = id.get(), %reason, "message dead-lettered");
}

pub(crate) fn poisoned(queue: &str, error: &StorageError) {
    tracing::error!(queue, %error, "write-ahead file stopped: every later operation that needs a record fails until the queue is reopened");
}

#[cfg(test)]
mod tests {
    use crate::wal::{SimStorage, Storage};
    use crate::Queue;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Events, as their level and fields.
    #[derive(Default)]
    struct Capture(Mutex<Vec<String>>);

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
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(event.metadata().level().to_string());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn poisoning_is_logged_once_at_error_with_the_queue_name() {
        let disk = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let queue: Queue<u32> = Queue::builder()
            .name("fragile")
            .path("sim")
            .open_on_storage(storage)
            .unwrap();
        let capture = Arc::new(Capture::default());
        tracing::subscriber::with_default(capture.clone(), || {
            disk.fail_write(1);
            assert!(queue.producer().send(1).is_err());
            assert!(queue.producer().send(2).is_err(), "poisoned");
        });
        let seen = capture.0.lock().unwrap();
        let errors: Vec<&String> = seen.iter().filter(|e| e.starts_with("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{seen:?}");
        assert!(errors[0].contains("queue=\"fragile\""), "{seen:?}");
        assert!(errors[0].contains("write-ahead file stopped"), "{seen:?}");
    }
}

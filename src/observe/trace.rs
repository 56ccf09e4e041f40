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

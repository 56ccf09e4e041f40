//! A message as the queue holds it, between states.
//!
//! An [`Entry`] has exactly one owner at a time: the ready queue, the delay
//! queue, the lease table or the dead-letter store. Moving it between them
//! is what a state change is, so a message can never be in two states.

use crate::clock::Nanos;
use std::fmt;
use std::sync::Arc;

/// The identity of a message, unique within a queue and increasing in send
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub(crate) u64);

impl MessageId {
    /// The number behind this id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A message with the metadata that travels with it.
pub(crate) struct Entry<T> {
    pub(crate) id: MessageId,
    pub(crate) payload: Arc<T>,
    /// When the message was first enqueued (kept across retries and redrives).
    pub(crate) enqueued_at: Nanos,
    /// Deliveries so far; reset by a redrive.
    pub(crate) receive_count: u32,
    pub(crate) key: Option<Arc<str>>,
    /// The error texts consumers gave through `fail`, oldest first.
    pub(crate) errors: Vec<String>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            id: self.id,
            payload: Arc::clone(&self.payload),
            enqueued_at: self.enqueued_at,
            receive_count: self.receive_count,
            key: self.key.clone(),
            errors: self.errors.clone(),
        }
    }
}

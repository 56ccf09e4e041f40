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
///
/// Kept small (40 bytes) because a deep queue holds millions: the rarely
/// used idempotency key and error texts live behind one optional box.
pub(crate) struct Entry<T> {
    pub(crate) id: MessageId,
    pub(crate) payload: Arc<T>,
    /// When the message was first enqueued (kept across retries and redrives).
    pub(crate) enqueued_at: Nanos,
    /// Deliveries so far; reset by a redrive.
    pub(crate) receive_count: u32,
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Default)]
struct Extra {
    key: Option<Arc<str>>,
    /// The error texts consumers gave through `fail`, oldest first.
    errors: Vec<String>,
}

impl<T> Entry<T> {
    /// A message as sent: no receives, no errors.
    pub(crate) fn new(
        id: MessageId,
        payload: T,
        enqueued_at: Nanos,
        key: Option<Arc<str>>,
    ) -> Self {
        let mut entry = Entry {
            id,
            payload: Arc::new(payload),
            enqueued_at,
            receive_count: 0,
            extra: None,
        };
        if key.is_some() {
            entry.extra_mut().key = key;
        }
        entry
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The idempotency key it was sent with.
    pub(crate) fn key(&self) -> Option<&Arc<str>> {
        self.extra.as_ref()?.key.as_ref()
    }

    /// The error texts of its failed attempts, oldest first.
    pub(crate) fn errors(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |extra| &extra.errors)
    }

    pub(crate) fn push_error(&mut self, error: String) {
        self.extra_mut().errors.push(error);
    }

    pub(crate) fn set_errors(&mut self, errors: Vec<String>) {
        if !errors.is_empty() || self.extra.is_some() {
            self.extra_mut().errors = errors;
        }
    }
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            id: self.id,
            payload: Arc::clone(&self.payload),
            enqueued_at: self.enqueued_at,
            receive_count: self.receive_count,
            extra: self.extra.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_key_or_errors_stays_small() {
        assert!(std::mem::size_of::<Entry<[u64; 8]>>() <= 40);
        let mut entry = Entry::new(MessageId(1), 7u32, 0, None);
        assert!(entry.key().is_none() && entry.errors().is_empty());
        entry.push_error("boom".into());
        assert_eq!(entry.errors(), ["boom"]);
        entry.set_errors(Vec::new());
        assert!(entry.errors().is_empty());
    }
}

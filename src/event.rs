//! Notifications of what happens to messages and to the queue, for
//! alerting and metrics.

use crate::dead_letter::DeadLetterReason;
use crate::error::StorageError;
use crate::message::MessageId;
use std::sync::Arc;

/// Something that happened in a queue, passed to the hook set with
/// [`Builder::on_event`](crate::Builder::on_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message moved to the dead-letter queue.
    DeadLettered {
        /// The queue's [name](crate::Queue::name).
        queue: Arc<str>,
        /// The message.
        id: MessageId,
        /// Why.
        reason: DeadLetterReason,
    },
    /// A delivery's lease ran out before it was settled.
    LeaseExpired {
        /// The queue's [name](crate::Queue::name).
        queue: Arc<str>,
        /// The message, which is retried or dead-lettered next.
        id: MessageId,
        /// Deliveries so far.
        receive_count: u32,
    },
    /// A dead letter was moved back into the queue.
    Redriven {
        /// The queue's [name](crate::Queue::name).
        queue: Arc<str>,
        /// The message.
        id: MessageId,
    },
    /// The write-ahead file failed (a write, a sync, a full disk): from now
    /// on every operation that needs a record fails, until the queue is
    /// reopened. Sent once per queue.
    Poisoned {
        /// The queue's [name](crate::Queue::name).
        queue: Arc<str>,
        /// The first failure.
        error: StorageError,
    },
}

impl Event {
    /// The [name](crate::Queue::name) of the queue it happened in.
    pub fn queue(&self) -> &str {
        match self {
            Event::DeadLettered { queue, .. }
            | Event::LeaseExpired { queue, .. }
            | Event::Redriven { queue, .. }
            | Event::Poisoned { queue, .. } => queue,
        }
    }
}

/// The hook: called on the thread that caused the event, with no lock of
/// the queue held, so it may call back into the queue. Keep it quick.
pub(crate) type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;

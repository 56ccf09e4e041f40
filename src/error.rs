//! The errors of each operation.
//!
//! Errors that refuse a message give it back, as std's and
//! crossbeam-channel's do: match on the variant, or call
//! [`SendError::into_inner`].

use crate::message::MessageId;
use std::fmt;

/// Why a queue could not be opened: its configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// `capacity(0)`: a queue must be able to hold at least one message.
    #[error("capacity must be at least 1")]
    ZeroCapacity,
    /// The capacity is larger than spool supports.
    #[error("capacity {requested} exceeds the maximum of {max}")]
    CapacityTooLarge {
        /// What was asked for.
        requested: usize,
        /// The largest capacity spool accepts.
        max: usize,
    },
    /// `visibility_timeout(Duration::ZERO)`: every lease would expire at once.
    #[error("visibility timeout must be longer than zero")]
    ZeroVisibilityTimeout,
    /// `max_receives(0)`: no message could ever be delivered.
    #[error("max_receives must be at least 1")]
    ZeroMaxReceives,
    /// `dedup_window(Duration::ZERO)`: keys would be forgotten at once.
    #[error("dedup window must be longer than zero")]
    ZeroDedupWindow,
    /// The retry backoff policy is inconsistent.
    #[error("invalid backoff policy: {0}")]
    InvalidBackoff(&'static str),
}

/// Why a message was not enqueued. Every variant that refuses a message
/// gives it back.
#[derive(PartialEq, Eq, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue is at capacity ([`try_send`](crate::Producer::try_send), or
    /// a batch larger than the whole capacity).
    #[error("queue is full")]
    Full(T),
    /// The queue stayed full until the timeout
    /// ([`send_timeout`](crate::Producer::send_timeout)).
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was closed; nothing more can be sent.
    #[error("queue is closed")]
    Closed(T),
    /// The idempotency key was used within the dedup window for a
    /// different payload. To correct a message that failed, fix it in the
    /// dead-letter queue with
    /// [`DeadLetters::redrive_with`](crate::DeadLetters::redrive_with)
    /// rather than sending it again.
    #[error("idempotency key already used for a different payload (message {original})")]
    KeyConflict {
        /// The refused message.
        message: T,
        /// The message first sent with this key.
        original: MessageId,
    },
    /// The payload could not be encoded, which a keyed send needs to compare
    /// payloads.
    #[error("payload could not be encoded: {reason}")]
    Encode {
        /// The refused message.
        message: T,
        /// What the codec said.
        reason: String,
    },
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(m) | SendError::Timeout(m) | SendError::Closed(m) => m,
            SendError::KeyConflict { message, .. } | SendError::Encode { message, .. } => message,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::KeyConflict { original, .. } => f
                .debug_struct("KeyConflict")
                .field("original", original)
                .finish_non_exhaustive(),
            SendError::Encode { reason, .. } => f
                .debug_struct("Encode")
                .field("reason", reason)
                .finish_non_exhaustive(),
        }
    }
}

/// Why no delivery was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing is ready right now ([`try_recv`](crate::Consumer::try_recv)).
    #[error("no message is ready")]
    Empty,
    /// Nothing became ready before the timeout.
    #[error("timed out waiting for a message")]
    Timeout,
    /// Nothing can ever arrive: the queue is closed (or every `Queue` and
    /// `Producer` handle is gone) and no message is ready, in flight or
    /// delayed.
    #[error("queue is closed and drained")]
    Closed,
}

/// Why settling a delivery (ack, nack, extend, ...) changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The delivery's lease ran out before it was settled. The message is
    /// (or will shortly be) visible again, possibly already redelivered to
    /// another consumer; this delivery can no longer change it.
    #[error("the lease on message {id} has expired")]
    LeaseExpired {
        /// The message whose lease expired.
        id: MessageId,
    },
}

/// Why a redrive from the dead-letter queue did not (fully) happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedriveError {
    /// No dead letter has this id.
    #[error("no dead letter with id {0}")]
    NotFound(MessageId),
    /// The source queue ran out of room. The messages redriven before that
    /// are back in the queue; the rest stay dead-lettered.
    #[error("queue is full after redriving {redriven} message(s)")]
    Full {
        /// How many were moved before the queue filled up.
        redriven: usize,
    },
    /// The source queue is closed.
    #[error("queue is closed")]
    Closed,
}

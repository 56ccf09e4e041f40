//! The errors of each operation.
//!
//! Errors that refuse a message give it back, as std's and
//! crossbeam-channel's do: match on the variant, or call
//! [`SendError::into_inner`].

use crate::message::MessageId;
use crate::wal::WalError;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A failure of the write-ahead file while the queue runs: an I/O error, a
/// full disk, or (after one of those) the poisoned state that refuses every
/// later write. Nothing that failed this way was acknowledged; reopening the
/// queue restores the last durable state.
#[derive(Clone, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(pub(crate) Arc<WalError>);

impl StorageError {
    /// Whether the disk (or a quota) was full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self.root(), WalError::DiskFull { .. })
    }

    /// Whether this is the echo of an earlier failure: the write-ahead file
    /// stopped then and writes nothing more until the queue is reopened.
    pub fn is_poisoned(&self) -> bool {
        matches!(*self.0, WalError::Poisoned(_))
    }

    /// The operating system's error behind it, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self.root() {
            WalError::Io { source, .. } | WalError::DiskFull { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether a remote backend's server could not be reached (refused,
    /// dropped or timed out connection), or could not serve the call for
    /// now (still loading its data, a read-only replica, a cluster that is
    /// down): worth trying again later. An operation whose connection
    /// failed may or may not have happened on the server.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            *self.0,
            WalError::Remote {
                unreachable: true,
                ..
            }
        )
    }

    /// Whether the queue's backend does not offer the operation (see the
    /// README's table of what each backend supports).
    pub fn is_unsupported(&self) -> bool {
        matches!(*self.0, WalError::Unsupported { .. })
    }

    /// The error for an operation a backend does not offer.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn unsupported(backend: &'static str, what: &'static str) -> Self {
        WalError::Unsupported { backend, what }.into()
    }

    /// Whether the journal stopped because of it (an I/O failure, a full
    /// disk, or the echo of one), rather than refusing one record.
    pub(crate) fn stops_the_journal(&self) -> bool {
        self.is_poisoned() || self.io_error().is_some()
    }

    fn root(&self) -> &WalError {
        let mut error = &*self.0;
        while let WalError::Poisoned(cause) = error {
            error = cause;
        }
        error
    }
}

impl From<WalError> for StorageError {
    fn from(error: WalError) -> Self {
        StorageError(Arc::new(error))
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Two storage errors are equal when they are the same failure (or echoes
/// of it).
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for StorageError {}

/// Why a priority level was refused ([`Priority::from_level`](crate::Priority::from_level)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PriorityError {
    /// A level past the lowest: levels run from 0 (the highest) to `max`.
    #[error("priority level {level} is out of range 0..={max}")]
    OutOfRange {
        /// The level given.
        level: u8,
        /// The lowest priority's level.
        max: u8,
    },
}

/// Why a flow-control limit was refused ([`RateLimit::new`](crate::RateLimit::new),
/// [`Queue::set_max_in_flight`](crate::Queue::set_max_in_flight)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// A cap of zero messages in flight: nothing could ever be received.
    #[error("max_in_flight must be at least 1")]
    ZeroMaxInFlight,
    /// A rate of zero messages per period: nothing could ever be received.
    #[error("a rate limit must allow at least 1 message per period")]
    ZeroRate,
    /// The queue's backend does not offer this limit (see the README's
    /// table of what each backend supports).
    #[error("the {backend} backend does not support {what}")]
    Unsupported {
        /// Which backend ("redis").
        backend: &'static str,
        /// The limit.
        what: &'static str,
    },
    /// A rate limit over a period of zero.
    #[error("a rate limit's period must be longer than zero")]
    ZeroPeriod,
}

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
    /// `max_in_flight(0)`: no message could ever be received.
    #[error("max_in_flight must be at least 1")]
    ZeroMaxInFlight,
    /// `dedup_window(Duration::ZERO)`: keys would be forgotten at once.
    #[error("dedup window must be longer than zero")]
    ZeroDedupWindow,
    /// The retry backoff policy is inconsistent.
    #[error("invalid backoff policy: {0}")]
    InvalidBackoff(&'static str),
    /// `max_message_bytes` is zero or above
    /// [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES).
    #[error("max_message_bytes must be between 1 and {max}, not {requested}")]
    InvalidMaxMessageBytes {
        /// What was asked for.
        requested: usize,
        /// The largest accepted.
        max: usize,
    },
    /// `compaction_rate` is below 1 MiB/s: a compaction of a large queue
    /// would last hours.
    #[error("compaction_rate must be at least {min} bytes per second, not {requested}")]
    InvalidCompactionRate {
        /// What was asked for.
        requested: u64,
        /// The least accepted.
        min: u64,
    },
    /// `idle_spin` is above [`MAX_IDLE_SPIN`](crate::MAX_IDLE_SPIN).
    #[error("idle_spin must be at most {max:?}, not {requested:?}")]
    IdleSpinTooLong {
        /// What was asked for.
        requested: std::time::Duration,
        /// The longest accepted.
        max: std::time::Duration,
    },
    /// A setting the chosen backend does not offer (a custom clock, an
    /// event hook, flow-control limits or a path on a Redis queue: see the
    /// README's table of what each backend supports).
    #[error("the {backend} backend does not support {what}")]
    Unsupported {
        /// Which backend ("redis").
        backend: &'static str,
        /// The setting.
        what: &'static str,
    },
    /// Persistence settings (durability, salvage, ...) were given without a
    /// [`path`](crate::Builder::path).
    #[error("persistence settings need a path")]
    NoPath,
    /// Another queue, in this process or another, has the directory open.
    ///
    /// A queue keeps its directory until its last handle is gone: every
    /// `Queue`, `Producer`, `Consumer`, `Delivery`, `Batch` and
    /// `DeadLetters`, and every thread of a [`WorkerPool`](crate::WorkerPool)
    /// over it. A pool that was shut down, joined, or dropped while no
    /// handler ran holds nothing once that call returns; a pool dropped
    /// while handlers run holds the queue until the last of them has
    /// returned and its message is settled. An open waits up to a second
    /// for a directory held by its own process (a queue whose last handle
    /// was just dropped while a thread of the library held it a moment
    /// longer, such as the `metrics` feature's reporter) before it gives
    /// this error.
    #[error("{path} is already open by another queue")]
    Locked {
        /// The queue's directory.
        path: String,
    },
    /// A record in the middle of the write-ahead file is damaged (a torn
    /// record at the very end is not an error: it is truncated and counted
    /// in the [`RecoveryReport`](crate::RecoveryReport)). Opening with
    /// [`salvage`](crate::Builder::salvage) skips damaged records instead.
    #[error("write-ahead file {file} is corrupted at offset {offset}: {reason}")]
    Corrupted {
        /// The damaged file.
        file: String,
        /// Where the damaged record starts.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The directory was written by a queue of another message type.
    #[error("{file} was written for another message type")]
    WrongMessageType {
        /// The file whose header says so.
        file: String,
    },
    /// The directory was written by a newer version of spool's format (or
    /// its header is damaged in a way that names another version).
    #[error(
        "{file} has format version {found}; this build reads versions 1 to {supported} \
         (a newer spool wrote it)"
    )]
    UnsupportedFormat {
        /// The file whose header says so.
        file: String,
        /// The version found.
        found: u32,
        /// The newest version this build reads (it reads every version
        /// from 1 up to it, and writes it).
        supported: u32,
    },
    /// A Redis queue's keys are in an earlier layout than this build's,
    /// one it does not read (a layout of a spool that was never released,
    /// or one a later release stopped reading). Nothing was changed.
    #[error(
        "redis queue {queue} is in key layout {found}, which this build does not read \
         (it reads layout {current}); drain it with the spool that wrote it, or delete \
         its keys (spool:{{{queue}}}:*)"
    )]
    OutdatedLayout {
        /// The queue's name.
        queue: String,
        /// The layout its keys record.
        found: u32,
        /// The layout this build reads and writes.
        current: u32,
    },
    /// A stored payload could not be decoded as the message type.
    #[error("stored message {id} does not decode as this message type: {reason}")]
    Undecodable {
        /// The message.
        id: MessageId,
        /// What the codec said.
        reason: String,
    },
    /// Reading or writing the directory failed.
    #[error(transparent)]
    Storage(StorageError),
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
    /// The idempotency key is longer than
    /// [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES).
    #[error("idempotency key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLong {
        /// The refused message.
        message: T,
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message group key is longer than
    /// [`MAX_GROUP_BYTES`](crate::MAX_GROUP_BYTES).
    #[error("message group key of {len} bytes exceeds the maximum of {max}")]
    GroupTooLong {
        /// The refused message.
        message: T,
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded payload is larger than the queue's
    /// [`max_message_bytes`](crate::Builder::max_message_bytes) (for a
    /// batch on a persistent queue: the batch, counting 64 bytes of
    /// overhead per message, is larger than one write-ahead frame, 16 MiB
    /// or `max_message_bytes` + 64 KiB, whichever is larger).
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The refused message.
        message: T,
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The write-ahead file failed; the message was not enqueued.
    #[error("message not enqueued: {error}")]
    Storage {
        /// The refused message.
        message: T,
        /// What failed.
        error: StorageError,
    },
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(m) | SendError::Timeout(m) | SendError::Closed(m) => m,
            SendError::KeyConflict { message, .. }
            | SendError::Encode { message, .. }
            | SendError::TooLarge { message, .. }
            | SendError::KeyTooLong { message, .. }
            | SendError::GroupTooLong { message, .. }
            | SendError::Storage { message, .. } => message,
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
            SendError::KeyTooLong { len, max, .. } => f
                .debug_struct("KeyTooLong")
                .field("len", len)
                .field("max", max)
                .finish_non_exhaustive(),
            SendError::GroupTooLong { len, max, .. } => f
                .debug_struct("GroupTooLong")
                .field("len", len)
                .field("max", max)
                .finish_non_exhaustive(),
            SendError::TooLarge { size, max, .. } => f
                .debug_struct("TooLarge")
                .field("size", size)
                .field("max", max)
                .finish_non_exhaustive(),
            SendError::Storage { error, .. } => f
                .debug_struct("Storage")
                .field("error", error)
                .finish_non_exhaustive(),
        }
    }
}

/// Why no delivery was received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The receive could not be recorded in the write-ahead file, so no
    /// delivery was handed out.
    #[error("receive not recorded: {0}")]
    Storage(StorageError),
}

/// Why settling a delivery (ack, nack, extend, ...) failed: with
/// `LeaseExpired` nothing changed; with `Storage` the change happened in
/// memory but was not recorded.
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
    /// The settlement could not be recorded in the write-ahead file. It took
    /// effect in memory, but a reopen may not see it (for an ack: the
    /// message may be delivered again).
    #[error("settlement not recorded: {0}")]
    Storage(StorageError),
}

/// Why [`Queue::cancel`](crate::Queue::cancel) cancelled nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// No message with this id is ready or delayed: it was received (it is
    /// in flight), acknowledged, dead-lettered, cancelled already, or
    /// never sent.
    #[error("message {0} is neither ready nor delayed")]
    NotFound(MessageId),
    /// No message was sent with this idempotency key within the dedup
    /// window.
    #[error("no message was sent with key {0:?} within the dedup window")]
    UnknownKey(String),
    /// The cancel could not be recorded in the write-ahead file. If the
    /// record could not even be written, the message is back where it
    /// was; if only the wait for the disk failed, it is cancelled in
    /// memory, but a reopen may bring it back.
    #[error("cancel not recorded: {0}")]
    Storage(StorageError),
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
    /// The corrected payload is larger than the queue's
    /// [`max_message_bytes`](crate::Builder::max_message_bytes).
    #[error("corrected payload of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The corrected payload could not be encoded for the write-ahead file.
    #[error("corrected payload could not be encoded: {0}")]
    Encode(String),
    /// The redrive could not be recorded in the write-ahead file.
    #[error("redrive not recorded: {0}")]
    Storage(StorageError),
}

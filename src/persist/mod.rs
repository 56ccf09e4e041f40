//! The queue's side of the write-ahead file: opening a directory, turning
//! state changes into records, and restoring the state recovered from it.
//!
//! The rules the queue follows (see `docs/FORMAT.md` for the file itself):
//!
//! - A record is appended before its change becomes visible to another
//!   thread, so that the log's order is a valid order of the changes.
//! - `send`, `ack`, `dead_letter`, `redrive` and `purge` return only once
//!   their record is as durable as the [`Durability`] level promises, and so
//!   does every receive, before its delivery is handed out: a message that
//!   crashes the process on every delivery still reaches the dead-letter
//!   queue after `max_receives` restarts. With `durable_receives(false)`
//!   a receive is appended (in order, before its delivery is handed out)
//!   without waiting, and that promise is given up.
//! - Releases (nack, fail, expiry) are appended without waiting: losing one
//!   in a crash only loses a backoff or an error text, since a message in
//!   flight comes back ready anyway.
//! - The first failed write or sync poisons the log: every later operation
//!   that needs a record fails with [`StorageError`], and a reopen returns
//!   to the last durable state.

use crate::error::{OpenError, StorageError};
use crate::wal::{
    Durability, FsStorage, Record, Recovered, Storage, Ticket, WaitKey, Wal, WalError, WalOptions,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Where and how a persistent queue keeps its write-ahead file.
#[derive(Debug, Clone)]
pub(crate) struct PersistConfig {
    pub(crate) path: PathBuf,
    pub(crate) durability: Durability,
    /// Whether a receive waits for its record to be durable.
    pub(crate) durable_receives: bool,
    pub(crate) segment_size: u64,
    /// Bytes per second a compaction writes at most (`wal::pace`).
    pub(crate) compaction_rate: u64,
    pub(crate) salvage: bool,
    /// The queue's name, for the write-ahead file's metrics.
    pub(crate) name: Arc<str>,
}

/// An open write-ahead file, as the queue uses it.
#[derive(Debug)]
pub(crate) struct Journal {
    wal: Wal,
    max_frame: usize,
    durable_receives: bool,
}

impl Journal {
    /// Locks and recovers the directory for a queue of message type `T`.
    pub(crate) fn open<T>(
        config: &PersistConfig,
        max_message_bytes: usize,
    ) -> Result<(Journal, Recovered), OpenError> {
        let storage = FsStorage::new(&config.path).map_err(|source| {
            let path = config.path.display().to_string();
            open_error(WalError::io("create directory", path, source))
        })?;
        Self::open_on::<T>(Arc::new(storage), config, max_message_bytes)
    }

    /// Like [`open`](Self::open), on any storage (tests use a simulated
    /// disk that can lose power).
    pub(crate) fn open_on<T>(
        storage: Arc<dyn Storage>,
        config: &PersistConfig,
        max_message_bytes: usize,
    ) -> Result<(Journal, Recovered), OpenError> {
        let mut options = WalOptions::new(type_fingerprint::<T>());
        options.durability = config.durability;
        options.segment_size = config.segment_size;
        options.compaction_rate = config.compaction_rate;
        options.salvage = config.salvage;
        options.name = Arc::clone(&config.name);
        // Room for the largest message with its key and texts
        // (each at most 4 KiB), and for batches of many small ones.
        let frame = max_message_bytes.saturating_add(64 << 10).max(16 << 20);
        options.max_frame = u32::try_from(frame).unwrap_or(u32::MAX);
        let max_frame = options.max_frame() as usize;
        let (wal, recovered) = Wal::open(storage, options).map_err(open_error)?;
        let journal = Journal {
            wal,
            max_frame,
            durable_receives: config.durable_receives,
        };
        Ok((journal, recovered))
    }

    /// Whether a receive waits for its record to be durable
    /// ([`Builder::durable_receives`](crate::Builder::durable_receives)).
    pub(crate) fn durable_receives(&self) -> bool {
        self.durable_receives
    }

    /// The largest frame (one append) in bytes of records.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends records (one frame: they recover together or not at all),
    /// without waiting for the writer to catch up: receives and
    /// settlements are bounded by the messages sent, and a send waits for
    /// room first ([`wait_room`](Self::wait_room), or `poll_room` in a
    /// task), holding nothing.
    pub(crate) fn append(&self, records: &[Record<'_>]) -> Result<Ticket, StorageError> {
        Ok(self.wal.append_with(records, false)?)
    }

    /// Waits until `ticket` is as durable as the durability level promises.
    pub(crate) fn commit(&self, ticket: Ticket) -> Result<(), StorageError> {
        Ok(self.wal.commit(ticket)?)
    }

    /// The task's form of [`commit`](Self::commit).
    pub(crate) fn poll_commit(
        &self,
        ticket: Ticket,
        waker: &Waker,
        key: &mut WaitKey,
    ) -> Poll<Result<(), StorageError>> {
        (self.wal)
            .poll_commit(ticket, waker, key)
            .map_err(StorageError::from)
    }

    /// Waits until a send's append would not wait for room; returns
    /// whether it waited.
    pub(crate) fn wait_room(&self) -> bool {
        self.wal.wait_room()
    }

    /// Ready once a send's append would not wait for room.
    pub(crate) fn poll_room(&self, waker: &Waker, key: &mut WaitKey) -> Poll<()> {
        self.wal.poll_room(waker, key)
    }

    /// Takes a task's wait off the writer's lists (see [`Wal::forget`]).
    pub(crate) fn forget(&self, key: &mut WaitKey) {
        self.wal.forget(key);
    }

    /// The ticket of everything appended so far (with its durability
    /// awaited, a duplicate send's original is as durable as promised).
    pub(crate) fn last_ticket(&self) -> Ticket {
        self.wal.last_ticket()
    }

    /// The task's form of [`sync`](Self::sync), for a ticket from
    /// [`last_ticket`](Self::last_ticket).
    pub(crate) fn poll_synced(
        &self,
        ticket: Ticket,
        waker: &Waker,
        key: &mut WaitKey,
    ) -> Poll<Result<(), StorageError>> {
        (self.wal)
            .poll_synced(ticket, waker, key)
            .map_err(StorageError::from)
    }

    /// Appends and waits.
    pub(crate) fn record(&self, records: &[Record<'_>]) -> Result<(), StorageError> {
        self.commit(self.append(records)?)
    }

    /// Waits until everything appended so far is as durable as promised
    /// (a duplicate send waits for its original this way).
    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        self.record(&[])
    }

    /// Waits until everything appended so far is on disk, whatever the
    /// durability level.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        Ok(self.wal.sync()?)
    }

    /// Lets automatic compactions run, once the queue restored its state.
    pub(crate) fn start_compaction(&self) {
        self.wal.start_compaction();
    }

    /// Compacts every file up to the active segment (sealed first), on the
    /// compactor thread; returns once it is done.
    pub(crate) fn compact(&self) -> Result<(), StorageError> {
        Ok(self.wal.compact().map(drop)?)
    }

    /// Whether the writer has stopped after a failure.
    #[cfg(test)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.wal.is_poisoned()
    }

    /// Bytes of log files in the directory.
    pub(crate) fn disk_usage(&self) -> Result<u64, StorageError> {
        Ok(self.wal.disk_usage()?)
    }
}

/// Identifies a message type in file headers: FNV-1a of its Rust type
/// name. Type names are not guaranteed stable across compiler versions;
/// a mismatch after a toolchain change is refused rather than misread.
pub(crate) fn type_fingerprint<T>() -> u64 {
    crate::codec::fingerprint(std::any::type_name::<T>().as_bytes())
}

pub(crate) fn open_error(error: WalError) -> OpenError {
    match error {
        WalError::Locked { path } => OpenError::Locked { path },
        WalError::Corrupted {
            file,
            offset,
            reason,
        } => OpenError::Corrupted {
            file,
            offset,
            reason,
        },
        WalError::WrongType { file, .. } => OpenError::WrongMessageType { file },
        WalError::UnsupportedVersion {
            file,
            found,
            supported,
        } => OpenError::UnsupportedFormat {
            file,
            found,
            supported,
        },
        other => OpenError::Storage(other.into()),
    }
}

#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod tests;

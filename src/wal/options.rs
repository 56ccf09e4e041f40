//! How a write-ahead file is opened: durability level and limits.

use super::format::MAX_FRAME_LIMIT;
use std::time::Duration;

/// When an operation of a persistent queue counts as done: what a crash
/// can lose ([`Builder::durability`](crate::Builder::durability);
/// `docs/FORMAT.md`, section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `send`, `send_batch`, every receive, `ack`, `dead_letter`, `redrive`
    /// and `purge` return only after their record is on disk
    /// (`fdatasync`); concurrent callers share one sync. Releases (`nack`,
    /// `fail`, `retry_after`, a dropped delivery, a lease expiry) are
    /// written without waiting: a crash just after one can lose its
    /// backoff and error text, and the message then comes back ready at
    /// once. Lease extensions are not recorded (in-flight messages come
    /// back ready on reopen anyway).
    Sync,
    /// Operations return without waiting for the disk (they wait only
    /// while 512 KiB of records are pending); records are written in
    /// batches (within a millisecond, or `d` if shorter) and synced about
    /// every `d`, so a crash (of the process or the machine) loses about
    /// the last `d` of operations; while the disk is slow, that window can
    /// grow beyond `d`. A failed write loses at most about 1 MiB of records
    /// whose calls had returned `Ok`. An interval too long for the clock
    /// (`Duration::MAX`) means no sync on a timer, as under `None`.
    Interval(Duration),
    /// Operations return without waiting; records are written in batches
    /// (within about a millisecond) and synced only when a segment fills,
    /// on [`Queue::sync`] and when the queue is dropped, so a crash of the
    /// process loses the last moments (records not yet written: about the
    /// last millisecond), and a power loss whatever the OS had not yet put
    /// on disk.
    ///
    /// [`Queue::sync`]: crate::Queue::sync
    None,
}

/// Options of [`Wal::open`](super::Wal::open).
#[derive(Debug, Clone)]
pub(crate) struct WalOptions {
    /// Identifies the message type; a directory written with another
    /// fingerprint is refused (`WrongType`).
    pub(crate) fingerprint: u64,
    pub(crate) durability: Durability,
    /// A segment is sealed and a new one started once it reaches this size.
    pub(crate) segment_size: u64,
    /// The largest frame (one append) allowed, in bytes of records.
    pub(crate) max_frame: u32,
    /// Skip damaged regions instead of failing with `Corrupted`.
    pub(crate) salvage: bool,
    /// Compact automatically after rotations (FORMAT.md, section 8).
    pub(crate) auto_compact: bool,
    /// Bytes per second a compaction writes at most, past its first few
    /// MiB, while the writer does not wait for it (`pace`); `u64::MAX`:
    /// unpaced.
    pub(crate) compaction_rate: u64,
    /// The queue's name, for metrics.
    pub(crate) name: std::sync::Arc<str>,
}

impl WalOptions {
    /// Defaults: `Sync`, 64 MiB segments, 16 MiB frames, no salvage,
    /// automatic compaction, paced.
    pub(crate) fn new(fingerprint: u64) -> Self {
        WalOptions {
            fingerprint,
            durability: Durability::Sync,
            segment_size: 64 << 20,
            max_frame: 16 << 20,
            salvage: false,
            auto_compact: true,
            compaction_rate: super::pace::DEFAULT_COMPACTION_RATE,
            name: std::sync::Arc::from(crate::builder::UNNAMED),
        }
    }

    /// The max frame, within what the format allows.
    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame.clamp(1, MAX_FRAME_LIMIT)
    }
}

//! How a write-ahead file is opened: durability level and limits.

use super::format::MAX_FRAME_LIMIT;
use std::time::Duration;

/// When an append counts as done (FORMAT.md, section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// An append returns only after its record is on disk (`fdatasync`);
    /// concurrent appends share one sync.
    Sync,
    /// Operations return without waiting for the disk; records are written
    /// as they come and synced at least every `d`, so a crash (of the
    /// process or the machine) loses at most the operations of the last `d`.
    Interval(Duration),
    /// Operations return without waiting; records are written as they come
    /// and never synced by spool, so a crash of the process loses the last
    /// moments (records not yet written), and a power loss whatever the OS
    /// had not yet put on disk.
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
}

impl WalOptions {
    /// Defaults: `Sync`, 64 MiB segments, 16 MiB frames, no salvage,
    /// automatic compaction.
    pub(crate) fn new(fingerprint: u64) -> Self {
        WalOptions {
            fingerprint,
            durability: Durability::Sync,
            segment_size: 64 << 20,
            max_frame: 16 << 20,
            salvage: false,
            auto_compact: true,
        }
    }

    /// The max frame, within what the format allows.
    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame.clamp(1, MAX_FRAME_LIMIT)
    }
}

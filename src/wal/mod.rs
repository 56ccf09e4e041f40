//! The write-ahead file: the queue's state changes as a log on disk, and
//! the state rebuilt from it. The byte layout, the commit protocol and the
//! recovery rules are specified in `docs/FORMAT.md`.
//!
//! | file | what |
//! |---|---|
//! | `format` | constants, file header, frame layout and checksums |
//! | `record` | record kinds and their encoding |
//! | `storage` | the directory behind a trait; real files |
//! | `sim` | (tests, fuzzing) an in-memory directory with power cuts and faults |
//! | `options` | durability levels and limits |
//! | `journal` | [`Wal`]: open, append, commit, sync, compact, close |
//! | `writer` | the writer thread: group commit, rotation, poisoning |
//! | `reader` | streaming frame reader; torn tail or corruption |
//! | `state` | replaying records into the queue's state |
//! | `live` | the live messages of a replay, compact, in id order |
//! | `payload` | a replay's payloads: bytes, or where they lie, read back |
//! | `recovery` | surveying, replaying and repairing a directory |
//! | `compaction` | rewriting sealed files as base files, a window at a time |
//! | `compactor` | the compactor thread: when to compact, beside the writer |
//! | `pace` | how fast a compaction writes, so that the writer's syncs do not wait |
//! | `snapshot` | (`cli`) reading a directory without the lock, beside a running queue |
//! | `error` | [`WalError`] |

// The re-exports are the API the queue calls; unused until it is wired in.
#![allow(unused_imports)]

mod compaction;
mod compactor;
mod error;
mod format;
mod journal;
mod live;
mod options;
mod pace;
mod payload;
mod reader;
mod record;
mod recovery;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))] // the fuzz targets use a part
mod sim;
#[cfg(feature = "cli")]
mod snapshot;
mod state;
mod storage;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use compaction::CompactionReport;
pub(crate) use error::WalError;
pub(crate) use journal::{Ticket, WaitKey, Wal};
pub use options::Durability;
pub(crate) use options::WalOptions;
pub(crate) use pace::{DEFAULT_COMPACTION_RATE, MIN_COMPACTION_RATE};
pub(crate) use record::{KeyRef, MessageRef, ReasonRef, Record};
pub(crate) use recovery::Recovered;
pub use recovery::{RecoveryReport, SalvagedRegion};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use sim::SimStorage;
#[cfg(test)]
pub(crate) use sim::Torn;
#[cfg(feature = "cli")]
pub(crate) use snapshot::{lock_holder, read_snapshot, Snapshot};
pub(crate) use state::{DeadLettered, RecoveredKey, RecoveredMessage};
pub(crate) use storage::{FsStorage, Storage};

/// What the fuzz targets drive directly (`src/fuzzing.rs`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_api {
    pub(crate) use super::format::{
        salt_crc, seal_frame, FrameHeader, Header, FRAME_HEADER_LEN, HEADER_LEN,
    };
    pub(crate) use super::reader::{scan_after, FrameReader, Next, Scan};
    pub(crate) use super::recovery::recover;
}

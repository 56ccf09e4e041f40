//! The commands that change a queue: `dead-letters redrive`, `remove`
//! and `purge`, and `compact`. Each opens the write-ahead file as a queue
//! does (taking the lock, repairing a torn tail), appends its records in
//! one frame and waits for the sync, so that it takes effect entirely or
//! not at all; the queue's next open replays them.
//!
//! The records are those the queue writes itself (FORMAT.md, section 5):
//! a redrive is `REDRIVE` (fresh receive count, visible now), a purge is
//! `PURGE_DEAD_LETTERS`, and removing one dead letter is an `ACK` of it
//! (the message is gone; its idempotency key is kept until it expires,
//! as after a purge).

use super::error::AdminError;
use super::payload::Payloads;
use super::read;
use crate::clock;
use crate::wal::{lock_holder, FsStorage, Record, Recovered, Storage, Wal, WalError, WalOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Opens the directory for writing, or says who holds it.
fn open(dir: &Path, payloads: &Payloads) -> Result<(Wal, Recovered), AdminError> {
    // Read first: the message type (when the tool does not know it) and
    // the largest frame the files allow (compaction rewrites them).
    let snapshot = read::snapshot(dir, payloads)?;
    let fingerprint = snapshot.fingerprint.unwrap_or_default();
    let storage: Arc<dyn Storage> = Arc::new(
        FsStorage::new(dir).map_err(|e| WalError::io("open", dir.display().to_string(), e))?,
    );
    let mut options = WalOptions::new(fingerprint);
    // No writer to make room for: compact at full speed.
    options.compaction_rate = u64::MAX;
    options.max_frame = options.max_frame.max(snapshot.max_frame);
    match Wal::open(storage, options) {
        Ok(opened) => Ok(opened),
        Err(WalError::Locked { .. }) => Err(AdminError::InUse {
            dir: dir.to_path_buf(),
            holder: lock_holder(dir),
        }),
        Err(other) => Err(other.into()),
    }
}

/// Checks that every id is a dead letter, then appends `record(id)` for
/// each in one frame and waits for it to be on disk.
fn settle_dead(
    dir: &Path,
    payloads: &Payloads,
    ids: &[u64],
    record: impl Fn(u64) -> Record<'static>,
) -> Result<(), AdminError> {
    let (wal, recovered) = open(dir, payloads)?;
    let dead = |id: u64| {
        recovered
            .messages
            .binary_search_by_key(&id, |m| m.id)
            .is_ok_and(|i| recovered.messages[i].dead.is_some())
    };
    if let Some(&missing) = ids.iter().find(|&&id| !dead(id)) {
        return Err(AdminError::NotADeadLetter(missing));
    }
    let mut unique = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let records: Vec<Record<'static>> = unique.into_iter().map(record).collect();
    wal.append_commit(&records)?;
    Ok(wal.close()?)
}

/// `spool dead-letters DIR redrive ID...`.
pub(crate) fn redrive(
    dir: &Path,
    payloads: &Payloads,
    ids: &[u64],
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let at = clock::to_nanos(std::time::SystemTime::now());
    settle_dead(dir, payloads, ids, |id| Record::Redrive {
        id,
        at,
        payload: None,
    })?;
    writeln!(out, "redriven: {}", join(ids))?;
    Ok(())
}

/// `spool dead-letters DIR remove ID...`.
pub(crate) fn remove(
    dir: &Path,
    payloads: &Payloads,
    ids: &[u64],
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    settle_dead(dir, payloads, ids, |id| Record::Ack { id })?;
    writeln!(out, "removed: {}", join(ids))?;
    Ok(())
}

/// `spool dead-letters DIR purge`.
pub(crate) fn purge(
    dir: &Path,
    payloads: &Payloads,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let (wal, recovered) = open(dir, payloads)?;
    let count = recovered
        .messages
        .iter()
        .filter(|m| m.dead.is_some())
        .count();
    wal.append_commit(&[Record::PurgeDeadLetters])?;
    wal.close()?;
    writeln!(out, "purged: {count} dead letters")?;
    Ok(())
}

/// `spool compact DIR`: rewrites the sealed files as one base file.
pub(crate) fn compact(
    dir: &Path,
    payloads: &Payloads,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let (wal, _) = open(dir, payloads)?;
    let before = wal.disk_usage()?;
    wal.start_compaction();
    wal.compact()?;
    let after = wal.disk_usage()?;
    wal.close()?;
    writeln!(out, "compacted: {before} bytes before, {after} after")?;
    Ok(())
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

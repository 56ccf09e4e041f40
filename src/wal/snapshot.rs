//! Reading a directory without opening it: the state its files hold now,
//! for the `spool` command-line tool, even while a running queue holds
//! the directory (issue 15).
//!
//! [`read_snapshot`] takes no lock and writes nothing: no truncation of a
//! torn tail, no removal of superseded files, no new segment. It reads
//! what [`recover`](super::recovery::recover) would, by the same rules
//! (FORMAT.md, section 7), and says what a reopen would repair instead of
//! repairing it.
//!
//! # Consistency beside a running queue
//!
//! The running queue's writer appends to its last segment, rotates to new
//! ones, and its compactor replaces runs of sealed files with base files,
//! one at a time (each written aside, renamed over the last file of its
//! run, then the run's other files removed). The snapshot is the log's
//! prefix as it stood when the directory was listed:
//!
//! - each file is read up to the length it had then; a frame still being
//!   appended at that length reads as a torn tail, and the snapshot ends
//!   before it (reported as [`Snapshot::torn`], as a crash there would);
//! - every file is opened right after the listing and its header checked
//!   against the one the listing read: on Unix an open file stays readable
//!   after a compaction removes or replaces its name, though only for a
//!   moment (the compactor then cuts it down a step at a time, see
//!   `storage::Unlinked`); a file that is already gone or replaced (a
//!   compaction finished in between), or that ends early under the read
//!   and is no longer the file of that name, restarts the snapshot, at
//!   most [`ATTEMPTS`] times.
//!
//! What it reads is what the files hold: every durable record, and
//! possibly records written but not yet synced (a crash could still lose
//! those). Messages in flight are those whose last record is a receive;
//! a lease that ran out is seen only once the queue records the release,
//! and a message received before the last compaction shows as ready:
//! compaction keeps a message's receive count but not that it is in
//! flight (a reopen makes it ready anyway).

use super::error::WalError;
use super::format::{parse_file_name, Header, FRAME_HEADER_LEN, HEADER_LEN, KIND_BASE, LOCK_FILE};
use super::payload::Frame;
use super::reader::{scan_after, FrameReader, Next};
use super::record::Record;
use super::recovery::{survey, LogFile};
use super::state::{RecoveredMessage, Replay};
use super::storage::{ReadFile, Storage};
use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// How many times a snapshot restarts when a compaction changes the files
/// under it.
pub(crate) const ATTEMPTS: usize = 20;

/// A log file as the snapshot read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotFile {
    pub(crate) name: String,
    /// Whether it is a base file (written by compaction) or a segment.
    pub(crate) base: bool,
    /// Its length when listed.
    pub(crate) len: u64,
}

/// The state a directory's files hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The message type's fingerprint in the headers (`None`: no files).
    pub(crate) fingerprint: Option<u64>,
    /// The files that take part, in log order.
    pub(crate) files: Vec<SnapshotFile>,
    /// Bytes of every file in the directory (log files, leftovers, lock).
    pub(crate) disk_bytes: u64,
    /// Live messages in id order: ready, delayed, in flight, dead.
    pub(crate) messages: Vec<RecoveredMessage>,
    /// Ids of live messages whose last record is a receive.
    pub(crate) in_flight: HashSet<u64>,
    /// Idempotency keys of gone messages still remembered.
    pub(crate) dedup_keys: usize,
    pub(crate) next_id: u64,
    /// The largest frame any file's header allows (0: no files).
    pub(crate) max_frame: u32,
    pub(crate) frames: u64,
    pub(crate) records: u64,
    /// A torn tail: the file and the offset where it starts. A reopen
    /// truncates it (or, for a last file cut inside its header, removes it).
    pub(crate) torn: Option<(String, u64)>,
    /// Superseded files and unfinished compactions a reopen would remove.
    pub(crate) leftovers: Vec<String>,
}

/// Why one attempt gave up: the files changed under it, or a real error.
enum Attempt {
    Changed,
    Failed(WalError),
}

impl From<WalError> for Attempt {
    fn from(e: WalError) -> Self {
        match &e {
            WalError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Attempt::Changed
            }
            _ => Attempt::Failed(e),
        }
    }
}

/// Reads the state of the directory behind `storage` without locking or
/// changing it. `fingerprint`: the message type the files must have been
/// written for, or `None` to accept the type the newest file names.
/// A corrupt record is [`WalError::Corrupted`] with its file and offset.
pub(crate) fn read_snapshot(
    storage: &dyn Storage,
    fingerprint: Option<u64>,
) -> Result<Snapshot, WalError> {
    for _ in 0..ATTEMPTS {
        match attempt(storage, fingerprint) {
            Ok(snapshot) => return Ok(snapshot),
            Err(Attempt::Changed) => continue,
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Err(WalError::io(
        "read a stable listing of",
        storage.describe(""),
        io::Error::other(format!(
            "the files changed under {ATTEMPTS} attempts in a row"
        )),
    ))
}

/// The fingerprint in the header of the newest log file whose header
/// decodes (the one a reopen checks first).
fn newest_fingerprint(storage: &dyn Storage) -> Result<Option<u64>, Attempt> {
    let mut logs: Vec<(u64, String)> = storage
        .list()
        .map_err(WalError::on_file(storage, "list", ""))?
        .into_iter()
        .filter_map(|name| parse_file_name(&name).map(|seq| (seq, name)))
        .collect();
    logs.sort();
    for (_, name) in logs.iter().rev() {
        let mut file = storage
            .open_read(name)
            .map_err(WalError::on_file(storage, "read", name))?;
        if let Ok(header) = read_header(&mut file, &storage.describe(name)) {
            return Ok(Some(header.fingerprint));
        }
    }
    Ok(None)
}

fn read_header(file: &mut Box<dyn ReadFile>, path: &str) -> Result<Header, WalError> {
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.take(HEADER_LEN).read_to_end(&mut bytes))
        .map_err(|e| WalError::io("read", path, e))?;
    Header::decode(path, &bytes)
}

/// Opens `file` and checks it is still the file the listing saw.
fn open_same(storage: &dyn Storage, file: &LogFile) -> Result<Box<dyn ReadFile>, Attempt> {
    let path = storage.describe(&file.name);
    let mut handle = storage
        .open_read(&file.name)
        .map_err(WalError::on_file(storage, "read", &file.name))?;
    match read_header(&mut handle, &path) {
        Ok(header) if header == file.header => Ok(handle),
        _ => Err(Attempt::Changed),
    }
}

fn attempt(storage: &dyn Storage, fingerprint: Option<u64>) -> Result<Snapshot, Attempt> {
    let fingerprint = match fingerprint {
        Some(f) => Some(f),
        None => newest_fingerprint(storage)?,
    };
    let mut snapshot = Snapshot {
        fingerprint,
        ..Snapshot::default()
    };
    let Some(fingerprint) = fingerprint else {
        snapshot.disk_bytes = disk_bytes(storage)?;
        return Ok(snapshot);
    };
    let survey = survey(storage, fingerprint)?;
    snapshot.max_frame = survey
        .files
        .iter()
        .map(|f| f.header.max_frame)
        .max()
        .unwrap_or(0);
    // Opened at once, so that a compaction that removes them now cannot
    // take them away half read.
    let handles = survey
        .files
        .iter()
        .map(|file| open_same(storage, file))
        .collect::<Result<Vec<_>, _>>()?;
    let mut state: Replay<Vec<u8>> = Replay::default();
    let count = survey.files.len();
    for (i, (file, handle)) in survey.files.iter().zip(handles).enumerate() {
        let last = i + 1 == count;
        let frame_file = u32::try_from(i).unwrap_or(u32::MAX);
        let end = read_file(
            storage,
            file,
            handle,
            frame_file,
            last,
            &mut state,
            &mut snapshot,
        )?;
        snapshot.files.push(SnapshotFile {
            name: file.name.clone(),
            base: file.header.kind == KIND_BASE,
            len: file.len,
        });
        if let Some(offset) = end {
            snapshot.torn = Some((storage.describe(&file.name), offset));
        }
    }
    if let Some(name) = &survey.torn_header {
        snapshot.torn = Some((storage.describe(name), 0));
    }
    snapshot.leftovers = survey.tmp.iter().chain(&survey.obsolete).cloned().collect();
    snapshot.records = state.records;
    let (messages, keys, next_id) = state.finish();
    snapshot
        .in_flight
        .retain(|id| messages.binary_search_by_key(id, |m| m.id).is_ok());
    snapshot.messages = messages;
    snapshot.dedup_keys = keys.len();
    snapshot.next_id = next_id;
    snapshot.disk_bytes = disk_bytes(storage)?;
    Ok(snapshot)
}

/// Replays one file's frames; returns where a torn tail starts, if any.
/// The judgement is recovery's (`recovery::replay_file`) without salvage.
fn read_file(
    storage: &dyn Storage,
    file: &LogFile,
    handle: Box<dyn ReadFile>,
    index: u32,
    last: bool,
    state: &mut Replay<Vec<u8>>,
    snapshot: &mut Snapshot,
) -> Result<Option<u64>, Attempt> {
    let path = storage.describe(&file.name);
    let mut reader = FrameReader::new(handle, &file.header, file.len)
        .map_err(WalError::on_file(storage, "read", &file.name))?;
    loop {
        let next = match reader.next() {
            Ok(next) => next,
            // A file that a compaction removed or replaced after it was
            // opened is cut down under the read (`storage::Unlinked`
            // releases its blocks a step at a time): start again.
            Err(e) => {
                open_same(storage, file)?;
                return Err(WalError::on_file(storage, "read", &file.name)(e).into());
            }
        };
        let (offset, reason) = match next {
            Next::End => return Ok(None),
            Next::Bad { offset, reason } => (offset, reason),
            Next::Frame { offset, body } => {
                let records = Record::decode_all(body).map_err(|(at, reason)| {
                    let at = offset + FRAME_HEADER_LEN + at as u64;
                    WalError::corrupted(&path, at, format!("frame verifies but {reason}"))
                })?;
                snapshot.frames += 1;
                let frame = Frame {
                    file: index,
                    offset: offset + FRAME_HEADER_LEN,
                    body,
                };
                for record in &records {
                    track_in_flight(&mut snapshot.in_flight, record);
                    state.apply_in(record, &frame);
                }
                continue;
            }
        };
        let scan = scan_after(open_same(storage, file)?, &file.header, file.len, offset)
            .map_err(WalError::on_file(storage, "read", &file.name))?;
        if last && scan.vouched_by.is_none() {
            return Ok(Some(offset));
        }
        return Err(Attempt::Failed(WalError::corrupted(&path, offset, reason)));
    }
}

/// A receive puts a message in flight; any later record about it (a
/// release, an ack, a dead-lettering, a rewrite) takes it out.
fn track_in_flight(in_flight: &mut HashSet<u64>, record: &Record<'_>) {
    match record {
        Record::Receive { id, .. } => {
            in_flight.insert(*id);
        }
        Record::Release { id, .. }
        | Record::Ack { id }
        | Record::DeadLetter { id, .. }
        | Record::Redrive { id, .. }
        | Record::Enqueue { id, .. } => {
            in_flight.remove(id);
        }
        Record::Message(m) => {
            in_flight.remove(&m.id);
        }
        Record::Update(u) => {
            in_flight.remove(&u.id);
        }
        // Other records do not concern one message in flight; a message
        // they remove is dropped from the set with the live ones.
        _ => {}
    }
}

fn disk_bytes(storage: &dyn Storage) -> Result<u64, Attempt> {
    let mut total = 0u64;
    for name in storage
        .list()
        .map_err(WalError::on_file(storage, "list", ""))?
    {
        match storage.len(&name) {
            Ok(len) => total = total.saturating_add(len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // just removed
            Err(e) => return Err(WalError::on_file(storage, "stat", &name)(e).into()),
        }
    }
    Ok(total)
}

/// The process id the holder of the directory's lock wrote into the lock
/// file (FORMAT.md, section 1), if it is there and readable. Only
/// meaningful while the lock is held: a holder that exited leaves its id.
pub(crate) fn lock_holder(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(LOCK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::options::WalOptions;
    use crate::wal::storage::{FsStorage, WrappedReads};
    use crate::wal::writer::write_one_round;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A file whose first read past the header removes `victim` (as a
    /// compaction removes a file it replaced, its blocks then released).
    struct Trigger {
        inner: Box<dyn ReadFile>,
        pos: u64,
        storage: FsStorage,
        victim: Option<String>,
        removed: Arc<AtomicBool>,
    }

    impl Read for Trigger {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(victim) = &self.victim {
                if self.pos >= HEADER_LEN && !self.removed.swap(true, Ordering::SeqCst) {
                    self.storage.remove(victim)?;
                }
            }
            let n = self.inner.read(buf)?;
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl Seek for Trigger {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.pos = self.inner.seek(pos)?;
            Ok(self.pos)
        }
    }

    fn enqueue(id: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        Record::Enqueue {
            id,
            enqueued_at: id,
            visible_at: id,
            key: None,
            payload: &[7; 100],
        }
        .encode(&mut bytes);
        bytes
    }

    /// A file removed after the snapshot opened it is cut down under the
    /// read (`storage::Unlinked`): the snapshot starts again and reads the
    /// files that are left, rather than failing on the short read.
    #[test]
    fn a_file_removed_and_released_under_the_read_restarts_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsStorage::new(dir.path()).unwrap();
        let options = WalOptions::new(0x5eed_f00d);
        write_one_round(Arc::new(fs.clone()), &options, 1, &[enqueue(1), enqueue(2)]).unwrap();
        write_one_round(Arc::new(fs.clone()), &options, 2, &[enqueue(3)]).unwrap();
        // Real files, where the first file is removed as soon as the
        // snapshot starts reading its frames.
        let victim = crate::wal::format::file_name(1);
        let removed = Arc::new(AtomicBool::new(false));
        let storage = WrappedReads::new(&fs, |name: &str, inner| {
            Box::new(Trigger {
                inner,
                pos: 0,
                storage: fs.clone(),
                victim: (name == victim).then(|| name.to_owned()),
                removed: Arc::clone(&removed),
            }) as Box<dyn ReadFile>
        });
        let snapshot = read_snapshot(&storage, Some(0x5eed_f00d)).unwrap();
        assert!(removed.load(Ordering::SeqCst));
        let ids: Vec<u64> = snapshot.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![3]);
        assert_eq!(snapshot.files.len(), 1);
        assert!(snapshot.torn.is_none());
    }
}

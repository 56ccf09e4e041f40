//! Opening a directory: survey the files, replay them, repair the tail
//! (FORMAT.md, section 7).
//!
//! 1. [`survey`] reads every header, and sets aside the files a base file
//!    replaces (from its `first` up to itself), unfinished compactions
//!    (`*.tmp`) and a last file whose creation was cut short.
//! 2. [`replay_file`] streams each remaining file's frames into a
//!    [`Replay`]. At a bad frame, [`scan_after`] decides: torn tail (last
//!    file only; truncated and reported) or corruption (an error, or a
//!    skipped region under salvage).
//! 3. [`recover`] applies the repairs and hands back the state.

use super::error::WalError;
use super::format::{file_name, parse_file_name, Header, HEADER_LEN, KIND_BASE, TMP_SUFFIX};
use super::payload::{Frame, Hold};
use super::reader::{scan_after, FrameReader, Next};
use super::record::Record;
use super::state::{RecoveredKey, RecoveredMessage, Replay};
use super::storage::Storage;
use std::io::Read;

/// A log file that takes part in replay.
#[derive(Debug, Clone)]
pub(crate) struct LogFile {
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) len: u64,
    pub(crate) header: Header,
}

/// What [`survey`] found in the directory.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// Files to replay, in order; the first may be a base file.
    pub(crate) files: Vec<LogFile>,
    /// Files a newer base file supersedes.
    pub(crate) obsolete: Vec<String>,
    /// A last file no longer than a header that does not verify.
    pub(crate) torn_header: Option<String>,
    /// Unfinished compaction output.
    pub(crate) tmp: Vec<String>,
    /// The highest sequence number of any log file.
    pub(crate) max_seq: u64,
}

/// A damaged region of a write-ahead file that
/// [`salvage`](crate::Builder::salvage) skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvagedRegion {
    /// The file.
    pub file: String,
    /// Where the skipped bytes start.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
}

/// What opening a persistent queue found and repaired, from
/// [`Queue::recovery_report`](crate::Queue::recovery_report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Files replayed (base file and segments).
    pub files_read: usize,
    /// Frames replayed.
    pub frames: u64,
    /// Records replayed.
    pub records: u64,
    /// Records about ids that were not live (changed nothing).
    pub ignored_records: u64,
    /// Bytes of torn tail truncated from the last file.
    pub torn_bytes: u64,
    /// Last files removed because their header was cut short.
    pub torn_files_removed: usize,
    /// Files superseded by a base file, and unfinished compactions, removed.
    pub obsolete_files_removed: usize,
    /// Damaged regions skipped (salvage only).
    pub salvaged: Vec<SalvagedRegion>,
}

/// The state of the queue as the directory recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Live messages (ready, delayed, dead-lettered), in id order.
    pub(crate) messages: Vec<RecoveredMessage>,
    /// Idempotency keys of messages that are gone, still in their window.
    pub(crate) dedup_keys: Vec<RecoveredKey>,
    /// The id to give the next message.
    pub(crate) next_id: u64,
    /// Whether the queue was paused.
    pub(crate) paused: bool,
    pub(crate) report: RecoveryReport,
}

/// What the writer needs to know about the files after recovery.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// The sequence number of the next file to create.
    pub(crate) next_seq: u64,
    /// Size of the base files (0 if none).
    pub(crate) base_bytes: u64,
    /// Size of the other files.
    pub(crate) sealed_bytes: u64,
    /// How many other files there are.
    pub(crate) sealed_files: usize,
    /// The last file, when it is a segment that holds nothing but its
    /// header (the previous open wrote nothing): the writer removes it
    /// once its own segment exists, so that a queue opened and closed in
    /// a loop does not pile up empty files.
    pub(crate) empty_last: Option<String>,
}

fn read_header(
    storage: &dyn Storage,
    name: &str,
) -> Result<(u64, Result<Header, WalError>), WalError> {
    let len = storage
        .len(name)
        .map_err(WalError::on_file(storage, "stat", name))?;
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize);
    storage
        .open_read(name)
        .and_then(|f| f.take(HEADER_LEN).read_to_end(&mut bytes))
        .map_err(WalError::on_file(storage, "read", name))?;
    Ok((len, Header::decode(&storage.describe(name), &bytes)))
}

/// Reads the directory's headers and sorts its files out (step 3 of
/// FORMAT.md section 7). Checks type, version and codec of every file
/// that takes part in replay.
pub(crate) fn survey(storage: &dyn Storage, fingerprint: u64) -> Result<Survey, WalError> {
    survey_through(storage, fingerprint, u64::MAX)
}

/// [`survey`] of the files with a sequence number up to `through` only:
/// compaction's view, which leaves the files the writer is creating or
/// appending to alone.
pub(crate) fn survey_through(
    storage: &dyn Storage,
    fingerprint: u64,
    through: u64,
) -> Result<Survey, WalError> {
    let mut survey = Survey::default();
    let mut logs = Vec::new();
    for name in storage
        .list()
        .map_err(WalError::on_file(storage, "list", ""))?
    {
        if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
            if parse_file_name(stem).is_some_and(|seq| seq <= through) {
                survey.tmp.push(name);
            }
        } else if let Some(seq) = parse_file_name(&name).filter(|&seq| seq <= through) {
            logs.push((seq, name));
        }
    }
    logs.sort();
    survey.max_seq = logs.last().map_or(0, |(seq, _)| *seq);
    let mut headers = Vec::with_capacity(logs.len());
    for (seq, name) in logs {
        let (len, header) = read_header(storage, &name)?;
        headers.push((seq, name, len, header));
    }
    // A base file replaces the files numbered from its `first` up to its
    // own: walking back from the newest file, a file is obsolete once a
    // later base file's `first` is at or below its number.
    let count = headers.len();
    let mut obsolete = vec![false; count];
    let mut replaced_from = u64::MAX;
    for (i, (seq, _, _, header)) in headers.iter().enumerate().rev() {
        obsolete[i] = *seq >= replaced_from;
        if let Ok(h) = header {
            if h.kind == KIND_BASE {
                replaced_from = replaced_from.min(h.first);
            }
        }
    }
    for (i, (seq, name, len, header)) in headers.into_iter().enumerate() {
        if obsolete[i] {
            survey.obsolete.push(name);
            continue;
        }
        let path = storage.describe(&name);
        match header {
            Ok(header) => {
                header.check(&path, fingerprint, seq)?;
                survey.files.push(LogFile {
                    seq,
                    name,
                    len,
                    header,
                });
            }
            Err(WalError::Corrupted { .. }) if i + 1 == count && len <= HEADER_LEN => {
                survey.torn_header = Some(name);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(survey)
}

/// How one file's replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileEnd {
    /// At a frame boundary at the end of the file.
    Clean,
    /// At a torn tail starting at this offset (last file only).
    Torn(u64),
}

/// Replays one file, the `index`-th of the log, into `state`. `last`:
/// whether it is the last file of the log, the only one that may have a
/// torn tail.
pub(crate) fn replay_file<P: Hold>(
    storage: &dyn Storage,
    (index, file): (u32, &LogFile),
    last: bool,
    salvage: bool,
    state: &mut Replay<P>,
    report: &mut RecoveryReport,
) -> Result<FileEnd, WalError> {
    let path = storage.describe(&file.name);
    let open = || {
        storage
            .open_read(&file.name)
            .map_err(WalError::on_file(storage, "read", &file.name))
    };
    let mut reader = FrameReader::new(open()?, &file.header, file.len)
        .map_err(WalError::on_file(storage, "read", &file.name))?;
    report.files_read += 1;
    // The furthest frame that vouched for a region skipped under salvage:
    // a torn tail before it is not cut off (see below).
    let mut voucher = None;
    loop {
        let (offset, reason) = match reader
            .next()
            .map_err(WalError::on_file(storage, "read", &file.name))?
        {
            Next::End => return Ok(FileEnd::Clean),
            Next::Frame { offset, body } => match Record::decode_all(body) {
                Ok(records) => {
                    report.frames += 1;
                    let frame = Frame {
                        file: index,
                        offset: offset + super::format::FRAME_HEADER_LEN,
                        body,
                    };
                    for record in &records {
                        state.apply_in(record, &frame);
                    }
                    continue;
                }
                Err((at, reason)) if !salvage => {
                    let at = offset + super::format::FRAME_HEADER_LEN + at as u64;
                    return Err(WalError::corrupted(
                        &path,
                        at,
                        format!("frame verifies but {reason}"),
                    ));
                }
                Err(_) => {
                    let next = reader.offset();
                    report.salvaged.push(SalvagedRegion {
                        file: path.clone(),
                        offset,
                        len: next - offset,
                    });
                    continue;
                }
            },
            Next::Bad { offset, reason } => (offset, reason),
        };
        let scan = scan_after(open()?, &file.header, file.len, offset)
            .map_err(WalError::on_file(storage, "read", &file.name))?;
        // Cutting a torn tail that holds the frame that vouched for an
        // earlier skipped region would make that region read as a torn
        // tail in turn, should the open go no further (a crash before the
        // new segment): the frames between would be lost. So that tail is
        // skipped as damage instead, as it will be once the file is sealed.
        if last && scan.vouched_by.is_none() && voucher.is_none_or(|v| v < offset) {
            report.torn_bytes += file.len - offset;
            return Ok(FileEnd::Torn(offset));
        }
        if !salvage {
            return Err(WalError::corrupted(&path, offset, reason));
        }
        voucher = voucher.max(scan.vouched_by);
        let resume = scan.first_valid.unwrap_or(file.len);
        report.salvaged.push(SalvagedRegion {
            file: path.clone(),
            offset,
            len: resume - offset,
        });
        reader
            .seek(resume)
            .map_err(WalError::on_file(storage, "read", &file.name))?;
    }
}

/// Replays `files` in order into a fresh state, settled.
pub(crate) fn replay_files<P: Hold>(
    storage: &dyn Storage,
    files: &[LogFile],
    last_may_be_torn: bool,
    salvage: bool,
    report: &mut RecoveryReport,
) -> Result<(Replay<P>, FileEnd), WalError> {
    let mut state = Replay::default();
    let mut end = FileEnd::Clean;
    for (i, file) in (0u32..).zip(files) {
        let last = last_may_be_torn && i as usize + 1 == files.len();
        end = replay_file(storage, (i, file), last, salvage, &mut state, report)?;
    }
    state.settle();
    report.records = state.records;
    report.ignored_records = state.ignored();
    Ok((state, end))
}

/// Recovers the directory's state and repairs it: truncates a torn tail,
/// removes superseded and unfinished files. Takes no lock (the caller
/// holds it) and creates nothing.
pub(crate) fn recover(
    storage: &dyn Storage,
    fingerprint: u64,
    salvage: bool,
) -> Result<(Recovered, Layout), WalError> {
    let survey = survey(storage, fingerprint)?;
    if survey.max_seq == u64::MAX {
        // The open would fail to create the next file with an I/O error
        // (the name exists); no log reaches this number by rotating.
        return Err(WalError::corrupted(
            &storage.describe(&file_name(u64::MAX)),
            24,
            "sequence number leaves no room for a next file",
        ));
    }
    let mut report = RecoveryReport::default();
    let (state, end) = replay_files::<Vec<u8>>(storage, &survey.files, true, salvage, &mut report)?;

    let mut dir_changed = false;
    if let Some(file) = survey.files.last() {
        // The last file becomes a sealed one once a new segment follows it:
        // make it durable as replayed (a process crash can leave it valid
        // but unsynced in the page cache), or cut its torn tail durably.
        match end {
            FileEnd::Torn(offset) => storage.truncate(&file.name, offset),
            FileEnd::Clean => storage.sync_file(&file.name),
        }
        .map_err(WalError::on_file(storage, "sync", &file.name))?;
    }
    let removals = survey
        .tmp
        .iter()
        .chain(&survey.obsolete)
        .chain(&survey.torn_header);
    for name in removals {
        storage
            .remove(name)
            .map_err(WalError::on_file(storage, "remove", name))?;
        dir_changed = true;
    }
    if dir_changed {
        storage
            .sync_dir()
            .map_err(WalError::on_file(storage, "sync directory", ""))?;
    }
    report.obsolete_files_removed = survey.tmp.len() + survey.obsolete.len();
    report.torn_files_removed = usize::from(survey.torn_header.is_some());

    let mut layout = Layout {
        next_seq: survey.max_seq.saturating_add(1),
        ..Layout::default()
    };
    for (i, file) in survey.files.iter().enumerate() {
        let last = i + 1 == survey.files.len();
        let len = match end {
            FileEnd::Torn(offset) if last => offset,
            _ => file.len,
        };
        if last && file.header.kind != KIND_BASE && len == HEADER_LEN {
            layout.empty_last = Some(file.name.clone());
        } else if file.header.kind == KIND_BASE {
            layout.base_bytes += len;
        } else {
            layout.sealed_bytes += len;
            layout.sealed_files += 1;
        }
    }
    let paused = state.paused();
    let (messages, dedup_keys, next_id) = state.finish();
    Ok((
        Recovered {
            messages,
            dedup_keys,
            next_id,
            paused,
            report,
        },
        layout,
    ))
}

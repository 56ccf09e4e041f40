//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not
//! part of the API, and hidden from the docs).
//!
//! Each function runs the real code of the write-ahead file on bytes from
//! the fuzzer. Bad input must come back as a typed error; a function
//! panics only where the code under test panics, or where it breaks a
//! promise these checks can see:
//!
//! | function | runs | checks |
//! |---|---|---|
//! | [`decode_records`] | `Record::decode_all` on a frame body | a body that decodes encodes back to the same bytes, with the stated lengths; a body that does not decodes up to the bad record |
//! | [`read_frames`] | `FrameReader` and `scan_after` over one file, skipping bad regions as salvage does | every frame and verdict agrees with a plain reading of the bytes in memory |
//! | [`recover_directory`] | recovery of a directory, then a [`Queue`] opened on it | see below |
//!
//! Recovery runs on the in-memory directory of the crash tests (`SimStorage`)
//! rather than a temporary directory: no syscalls and no fsync per input,
//! nothing left behind
//! when a run is killed, and an I/O error can only be a bug, since
//! the simulated disk has no faults unless asked to. A recovered directory
//! must hold ids in order below the next id; recovering it again must
//! find nothing to repair and the same state; a queue opened on it must
//! hold every recovered message and sync, and after it is dropped the
//! directory must recover to the same messages with the same payloads.
//!
//! Checksums stand in the way of a fuzzer: a random change to a frame
//! almost never verifies. The inputs can therefore ask for the header
//! checksum and every frame checksum to be fixed before the code runs
//! ([`fix_checksums`]), so that mutations reach the records and replay;
//! inputs that do not ask keep exercising the checks themselves.

use crate::persist::{open_error, type_fingerprint};
use crate::wal::fuzz_api::{
    recover, salt_crc, scan_after, seal_frame, FrameHeader, FrameReader, Header, Next, Scan,
    FRAME_HEADER_LEN, HEADER_LEN,
};
use crate::wal::{Record, Recovered, SimStorage, Storage, WalError};
use crate::{ManualClock, OpenError, Queue};
use std::io::Cursor;
use std::sync::Arc;

/// The message type of the recovered queues (its fingerprint is in the
/// headers of the seed corpus).
pub type Payload = String;

/// Flag bit: recompute the file header's checksum (keeping its fields).
pub const FIX_HEADER: u8 = 1;
/// Flag bit: recompute the checksum of every frame along the length chain.
pub const FIX_FRAMES: u8 = 2;

const FRAME_HEADER: usize = FRAME_HEADER_LEN as usize;

/// The `record_decode` target: the input is a frame body.
pub fn record_decode_target(input: &[u8]) {
    let _ = decode_records(input);
}

/// The `frame_reader` target. Input: `flags:u8 flip:u16le file`. `flags`
/// bits 0-1 fix the file's checksums ([`fix_checksums`]); bit 2 then flips
/// bit `flip` of the file, so that a damaged frame can have valid ones
/// after it.
pub fn frame_reader_target(input: &[u8]) {
    if let [flags, f0, f1, file @ ..] = input {
        let mut file = file.to_vec();
        fix_checksums(&mut file, *flags);
        if flags & 4 != 0 && !file.is_empty() {
            let bit = usize::from(u16::from_le_bytes([*f0, *f1])) % (file.len() * 8);
            file[bit / 8] ^= 1 << (bit % 8);
        }
        let _ = read_frames(&file);
    }
}

/// The `recovery` target: the input is split by [`split_directory`].
pub fn recovery_target(input: &[u8]) {
    let (salvage, files) = split_directory(input);
    let _ = recover_directory(salvage, &files);
}

/// Decodes a frame body. `Ok(n)`: `n` records; `Err`: the decoder's offset
/// and reason.
pub fn decode_records(body: &[u8]) -> Result<usize, (usize, &'static str)> {
    match Record::decode_all(body) {
        Ok(records) => {
            let mut again = Vec::with_capacity(body.len());
            for record in &records {
                let before = again.len();
                record.encode(&mut again);
                assert_eq!(
                    (again.len() - before) as u64,
                    record.encoded_len(),
                    "encoded_len disagrees with encode for {record:?}"
                );
            }
            assert!(again == body, "a decoded body does not encode back");
            Ok(records.len())
        }
        Err((at, reason)) => {
            assert!(at < body.len(), "error offset {at} past the body");
            let before = Record::decode_all(&body[..at]);
            assert!(
                before.is_ok(),
                "the records before a bad one ({at}: {reason}) do not decode: {before:?}"
            );
            Err((at, reason))
        }
    }
}

/// Fixes the checksums of a file's bytes as `flags` asks ([`FIX_HEADER`],
/// [`FIX_FRAMES`]). The header is re-encoded from its fields, so magic and
/// version are made right too; frames are sealed along the chain of
/// lengths from the header's end while each length is non-zero, at most
/// the header's max frame and within the file.
pub fn fix_checksums(file: &mut [u8], flags: u8) {
    let Some(head) = file.get_mut(..HEADER_LEN as usize) else {
        return;
    };
    if flags & FIX_HEADER != 0 {
        let header = Header {
            kind: head[12],
            codec: head[13],
            fingerprint: u64_at(head, 16),
            seq: u64_at(head, 24),
            salt: u32_at(head, 32),
            max_frame: u32_at(head, 36),
            first: u64_at(head, 40),
        };
        head.copy_from_slice(&header.encode());
    }
    if flags & FIX_FRAMES == 0 {
        return;
    }
    let salt = salt_crc(u32_at(file, 32));
    let max_frame = u32_at(file, 36) as usize;
    let mut at = HEADER_LEN as usize;
    while file.len() - at >= FRAME_HEADER {
        let len = u32_at(file, at + 4) as usize;
        let end = at + FRAME_HEADER + len;
        if len == 0 || len > max_frame || end > file.len() {
            break;
        }
        let synced = u64_at(file, at + 8);
        seal_frame(&mut file[at..end], salt, synced);
        at = end;
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What [`read_frames`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FramesRead {
    /// Frames that verified.
    pub frames: usize,
    /// Bad frames met (each followed by a scan).
    pub bad: usize,
    /// Bad frames that a later frame vouched for (damage, not a torn tail).
    pub vouched: usize,
}

/// Reads one file (header and frames) as recovery does: frame by frame,
/// and at a bad frame, a scan of the rest of the file, resuming at the
/// first later frame that verifies. `Err`: the header does not decode.
pub fn read_frames(file: &[u8]) -> Result<FramesRead, OpenError> {
    let header = Header::decode("fuzz", file).map_err(open_error)?;
    let len = file.len() as u64;
    let open = || Box::new(Cursor::new(file.to_vec()));
    let mut reader = FrameReader::new(open(), &header, len).expect("in memory");
    let mut seen = FramesRead::default();
    loop {
        let expected = reader.offset();
        match reader.next().expect("in memory") {
            Next::End => {
                assert_eq!(expected, len, "End before the end of the file");
                return Ok(seen);
            }
            Next::Frame { offset, body } => {
                assert_eq!(offset, expected, "frames are contiguous");
                assert_eq!(plain_frame(file, &header, offset), Some(body));
                seen.frames += 1;
            }
            Next::Bad { offset, reason } => {
                assert_eq!(offset, expected, "a bad frame is where the reader was");
                assert_eq!(
                    plain_frame(file, &header, offset),
                    None,
                    "a frame that verifies called bad: {reason}"
                );
                assert_eq!(reader.offset(), offset, "the reader stays at a bad frame");
                seen.bad += 1;
                let scan = scan_after(open(), &header, len, offset).expect("in memory");
                assert_eq!(scan, plain_scan(file, &header, offset));
                seen.vouched += usize::from(scan.vouched_by.is_some());
                let Some(resume) = scan.first_valid else {
                    return Ok(seen);
                };
                reader.seek(resume).expect("in memory");
            }
        }
    }
}

/// The body of the frame at `at` if it is valid, read from memory.
fn plain_frame<'a>(file: &'a [u8], header: &Header, at: u64) -> Option<&'a [u8]> {
    let start = usize::try_from(at).ok()?;
    let raw: [u8; FRAME_HEADER] = file
        .get(start..start.checked_add(FRAME_HEADER)?)?
        .try_into()
        .ok()?;
    let frame = FrameHeader::parse(&raw);
    if frame
        .implausible(at, file.len() as u64, header.max_frame)
        .is_some()
    {
        return None;
    }
    let body = file.get(start + FRAME_HEADER..start + FRAME_HEADER + frame.len as usize)?;
    frame.verifies(header.salt, &raw, body).then_some(body)
}

/// What `scan_after` should find, read from memory.
fn plain_scan(file: &[u8], header: &Header, bad_at: u64) -> Scan {
    let mut scan = Scan::default();
    for at in bad_at + 1..file.len() as u64 {
        if plain_frame(file, header, at).is_none() {
            continue;
        }
        scan.first_valid.get_or_insert(at);
        let synced = u64_at(file, at as usize + 8);
        if synced > bad_at {
            scan.vouched_by = Some(at);
            break;
        }
    }
    scan
}

/// One file of a directory for [`recover_directory`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFile {
    /// The file's name in the directory.
    pub name: String,
    /// Its bytes (checksums already fixed as the input asked).
    pub bytes: Vec<u8>,
}

/// Splits fuzz input into directory files, the layout of the `recovery`
/// target's corpus:
///
/// ```text
/// input := options:u8 file*
/// file  := flags:u8 seq:u8 len:u16le bytes[len]   (len cut to what is left)
/// ```
///
/// `options` bit 0: open with salvage. `flags` bits 0-1: [`FIX_HEADER`],
/// [`FIX_FRAMES`]; bits 2-3: the name: `wal-<seq>.log`, `wal-<seq>.log.tmp`,
/// `wal-<u64::MAX - seq>.log`, or a file of another name.
pub fn split_directory(input: &[u8]) -> (bool, Vec<DirFile>) {
    let Some((&options, mut rest)) = input.split_first() else {
        return (false, Vec::new());
    };
    let mut files = Vec::new();
    while let [flags, seq, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let seq = u64::from(*seq);
        let name = match (flags >> 2) & 3 {
            0 => wal_name(seq),
            1 => format!("{}.tmp", wal_name(seq)),
            2 => wal_name(u64::MAX - seq),
            _ => format!("notes-{seq}"),
        };
        let mut bytes = bytes.to_vec();
        fix_checksums(&mut bytes, *flags);
        files.push(DirFile { name, bytes });
    }
    (options & 1 != 0, files)
}

/// The inverse of [`split_directory`]: how the seed corpus is written from
/// real directories, each file with the flags `fix`. Names that are not
/// log files become `notes-0`; files longer than 64 KiB are cut.
pub fn join_directory(salvage: bool, fix: u8, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![u8::from(salvage)];
    for (name, bytes) in files {
        let (kind, seq) = match name.strip_suffix(".tmp") {
            Some(stem) => (1, parse_wal_name(stem)),
            None => (0, parse_wal_name(name)),
        };
        let (kind, seq) = match seq {
            Some(seq) if seq <= 255 => (kind, seq as u8),
            _ => (3, 0),
        };
        let len = bytes.len().min(usize::from(u16::MAX));
        out.push((kind << 2) | (fix & 3));
        out.push(seq);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&bytes[..len]);
    }
    out
}

fn wal_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

fn parse_wal_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok())?
}

/// What [`recover_directory`] found.
#[derive(Debug)]
pub enum Recovery {
    /// Recovery refused the directory (the error a queue's open returns).
    Refused(OpenError),
    /// Recovery succeeded; opening a queue on it failed.
    OpenFailed(OpenError),
    /// Both succeeded, with this many live messages.
    Opened(usize),
}

/// Recovers a directory made of `files`, then opens a `Queue<`[`Payload`]`>`
/// on it, drops it and recovers again (see the module docs for the checks).
pub fn recover_directory(salvage: bool, files: &[DirFile]) -> Recovery {
    let disk = SimStorage::new();
    for file in files {
        // A name given twice keeps its first file.
        if let Ok(mut f) = disk.create(&file.name) {
            f.write_all(&file.bytes).expect("in memory");
            f.sync_data().expect("in memory");
        }
    }
    disk.sync_dir().expect("in memory");
    let fingerprint = type_fingerprint::<Payload>();

    let first = match recover(&disk, fingerprint, salvage) {
        Ok((first, _)) => first,
        Err(e) => {
            assert!(
                !matches!(e, WalError::Io { .. } | WalError::DiskFull { .. }),
                "I/O error on a disk without faults: {e}"
            );
            return Recovery::Refused(open_error(e));
        }
    };
    check_state(&first);
    let (again, _) = recover(&disk, fingerprint, salvage)
        .unwrap_or_else(|e| panic!("a repaired directory fails to recover: {e}"));
    assert_eq!(
        (&again.messages, &again.dedup_keys, again.next_id),
        (&first.messages, &first.dedup_keys, first.next_id),
        "recovering twice gives two states"
    );
    let report = &again.report;
    assert_eq!(
        (
            report.torn_bytes,
            report.torn_files_removed,
            report.obsolete_files_removed
        ),
        (0, 0, 0),
        "a repaired directory needs repair again: {report:?}"
    );
    assert_eq!(report.salvaged, first.report.salvaged);

    let opened = Queue::<Payload>::builder()
        .path("sim")
        .clock(ManualClock::new())
        .salvage(salvage)
        // No writer spin (as under `Sync`) and a small lease table: the
        // same recovery and restore at a fraction of the time per input.
        // The capacity is below what the corpus holds: restored messages
        // take slots beyond it.
        .durability(crate::Durability::None)
        .capacity(16)
        .open_on_storage(Arc::new(disk.clone()));
    let queue = match opened {
        Ok(queue) => queue,
        Err(e) => {
            assert!(
                !matches!(e, OpenError::Storage(_)),
                "I/O error on a disk without faults: {e}"
            );
            return Recovery::OpenFailed(e);
        }
    };
    let stats = queue.stats();
    let held = stats.ready + stats.delayed + stats.in_flight + stats.dead_letters;
    assert_eq!(held, first.messages.len(), "the queue holds {stats:?}");
    if let Err(e) = queue.sync() {
        panic!("a queue on a disk without faults fails to sync: {e}");
    }
    drop(queue);

    let (after, _) = recover(&disk, fingerprint, salvage)
        .unwrap_or_else(|e| panic!("the directory of a closed queue fails to recover: {e}"));
    let contents = |r: &Recovered| -> Vec<(u64, Vec<u8>)> {
        r.messages
            .iter()
            .map(|m| (m.id, m.payload.clone()))
            .collect()
    };
    assert_eq!(
        contents(&after),
        contents(&first),
        "opening and closing a queue changed its messages"
    );
    Recovery::Opened(first.messages.len())
}

/// The shape every recovered state must have.
fn check_state(state: &Recovered) {
    for pair in state.messages.windows(2) {
        assert!(pair[0].id < pair[1].id, "messages out of id order");
    }
    if let Some(last) = state.messages.last() {
        assert!(
            last.id < state.next_id || state.next_id == u64::MAX,
            "next id {} not above message {}",
            state.next_id,
            last.id
        );
    }
    for pair in state.dedup_keys.windows(2) {
        assert!(pair[0].key < pair[1].key, "keys not sorted and unique");
    }
}

//! Compaction: the net effect of the sealed files as one base file
//! (FORMAT.md, section 8).
//!
//! Replay every sealed file (from the newest base file on) into a
//! [`Replay`], write its content to `wal-N.log.tmp`, sync it, rename it
//! over `wal-N.log` (N: the newest sealed file), sync the directory, then
//! remove the files before N. A crash anywhere leaves either the old files
//! or the new base (which supersedes the files before it on open): the
//! same state either way.
//!
//! Memory: the live messages without their payloads (56 bytes each, see
//! `live`), the remembered keys, and the write buffers. The payloads stay
//! in the sealed files: the replay notes where each live one lies
//! (`payload`), and [`write_base`] copies it from there as it writes, in
//! id order, which is about file order.

use super::error::WalError;
use super::format::{
    encode_frame, file_name, random_salt, Header, CODEC_BINCODE2, HEADER_LEN, KIND_BASE,
    MAX_FRAME_LIMIT, TMP_SUFFIX,
};
use super::options::WalOptions;
use super::payload::{PayloadAt, PayloadReader};
use super::record::Record;
use super::recovery::{replay_files, survey_through, RecoveryReport};
use super::state::{key_ref, limits_record, message_record, Replay};
use super::storage::{Storage, WriteFile};

/// Frames of a base file hold records up to about this many bytes.
const BASE_FRAME_TARGET: u64 = 1 << 20;
/// Bytes buffered before a write, each write then synced (see `Writing::frame`).
const WRITE_CHUNK: usize = 1 << 20;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CompactionReport {
    /// The sequence number of the new base file (0: nothing to do).
    pub(crate) base_seq: u64,
    /// Files read and replaced.
    pub(crate) files_in: usize,
    pub(crate) bytes_in: u64,
    /// Size of the new base file.
    pub(crate) bytes_out: u64,
    /// Live messages and remembered keys written.
    pub(crate) messages: usize,
    pub(crate) keys: usize,
}

/// Compacts every log file with a sequence number up to `through`, which
/// must all be sealed; files after it are neither read nor touched.
/// `cancelled` is asked between steps: once it says yes, the compaction
/// gives up with `Closed` and leaves the files as they were.
pub(crate) fn compact(
    storage: &dyn Storage,
    through: u64,
    options: &WalOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<CompactionReport, WalError> {
    let found = survey_through(storage, options.fingerprint, through)?;
    let files = found.files;
    let Some(newest) = files.last() else {
        return Ok(CompactionReport::default());
    };
    if files.len() == 1 && newest.header.kind == KIND_BASE && found.obsolete.is_empty() {
        return Ok(CompactionReport {
            base_seq: newest.seq,
            files_in: 0,
            bytes_in: 0,
            bytes_out: newest.len,
            messages: 0,
            keys: 0,
        });
    }
    let mut ignored = RecoveryReport::default();
    let (state, _) =
        replay_files::<PayloadAt>(storage, &files, false, options.salvage, &mut ignored)?;
    if cancelled() {
        return Err(WalError::Closed);
    }
    let base_seq = newest.seq;
    let final_name = file_name(base_seq);
    let tmp = format!("{final_name}{TMP_SUFFIX}");
    let io = |op: &'static str, name: &str| {
        let path = storage.describe(name);
        move |e| WalError::io(op, path, e)
    };

    // A leftover from a failed compaction of the same file is garbage.
    let _ = storage.remove(&tmp);
    let source = PayloadReader::new(storage, &files);
    let bytes_out = match write_base(&tmp, base_seq, &state, source, options, cancelled) {
        Ok(len) => len,
        Err(e) => {
            let _ = storage.remove(&tmp);
            return Err(e);
        }
    };
    storage
        .rename(&tmp, &final_name)
        .map_err(io("rename", &tmp))?;
    storage
        .sync_dir()
        .map_err(io("sync directory", &final_name))?;
    let mut removed = false;
    for file in files.iter().filter(|f| f.seq < base_seq) {
        storage
            .remove(&file.name)
            .map_err(io("remove", &file.name))?;
        removed = true;
    }
    for name in &found.obsolete {
        storage.remove(name).map_err(io("remove", name))?;
        removed = true;
    }
    if removed {
        storage
            .sync_dir()
            .map_err(io("sync directory", &final_name))?;
    }
    Ok(CompactionReport {
        base_seq,
        files_in: files.len(),
        bytes_in: files.iter().map(|f| f.len).sum(),
        bytes_out,
        messages: state.live_count(),
        keys: state.gone_keys().len(),
    })
}

/// Writes `state` as base file `seq` under the name `tmp`, synced, with
/// the payloads read from `payloads`. Returns its size.
fn write_base(
    tmp: &str,
    seq: u64,
    state: &Replay<PayloadAt>,
    mut payloads: PayloadReader<'_>,
    options: &WalOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, WalError> {
    let storage = payloads.storage();
    let path = storage.describe(tmp);
    let keys = state.gone_keys();
    let next_id = Record::NextId {
        next_id: state.next_id(),
    };
    let key_records = || {
        keys.iter().map(|k| Record::DedupKey {
            id: k.id,
            key: key_ref(k),
        })
    };
    // The largest record decides the file's max frame: a message whose
    // errors grew past the queue's max frame must still fit.
    let largest = std::iter::once(next_id.encoded_len())
        .chain(key_records().map(|r| r.encoded_len()))
        .chain(
            state
                .messages()
                .map(|m| message_record(m, &[]).encoded_len() + u64::from(m.payload.len)),
        )
        .max()
        .unwrap_or(0);
    let max_frame = largest.max(u64::from(options.max_frame()));
    if max_frame > u64::from(MAX_FRAME_LIMIT) {
        return Err(WalError::TooLarge {
            len: largest,
            max: u64::from(MAX_FRAME_LIMIT),
        });
    }
    let target = BASE_FRAME_TARGET.min(max_frame);
    let header = Header {
        kind: KIND_BASE,
        codec: CODEC_BINCODE2,
        fingerprint: options.fingerprint,
        seq,
        salt: random_salt(),
        max_frame: max_frame as u32,
    };
    let mut file = storage
        .create(tmp)
        .map_err(|e| WalError::io("create", path.clone(), e))?;
    let mut out = Writing {
        file: &mut *file,
        buf: header.encode().to_vec(),
        len: 0,
        path: &path,
    };
    let mut body = Vec::new();
    let mut add = |record: &Record<'_>| {
        if !body.is_empty() && body.len() as u64 + record.encoded_len() > target {
            out.frame(header.salt, &body)?;
            body.clear();
            if cancelled() {
                return Err(WalError::Closed);
            }
        }
        record.encode(&mut body);
        Ok(())
    };
    add(&next_id)?;
    if state.paused() {
        add(&Record::Pause { paused: true })?;
    }
    for record in key_records() {
        add(&record)?;
    }
    for m in state.messages() {
        add(&message_record(m, payloads.read(m.payload)?))?;
        if let Some(limits) = limits_record(m) {
            add(&limits)?;
        }
    }
    if !body.is_empty() {
        out.frame(header.salt, &body)?;
    }
    out.flush()?;
    let len = out.len;
    file.sync_data()
        .map_err(|e| WalError::io("sync", path.clone(), e))?;
    Ok(len)
}

struct Writing<'a> {
    file: &'a mut dyn WriteFile,
    buf: Vec<u8>,
    /// Bytes already written.
    len: u64,
    path: &'a str,
}

impl Writing<'_> {
    fn frame(&mut self, salt: u32, body: &[u8]) -> Result<(), WalError> {
        // A base file is synced whole before it is renamed in: each frame
        // may claim everything before it as synced.
        let offset = self.len + self.buf.len() as u64;
        debug_assert!(offset >= HEADER_LEN);
        encode_frame(&mut self.buf, salt, offset, body);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
            // Synced chunk by chunk, so the file never holds much unsynced
            // data: on ext4 (data=ordered) the writer's own `fdatasync`
            // commits the journal, which first writes out every file's
            // dirty data, and 100 MB of unsynced base file made a `Sync`
            // send wait 40-50 ms (benches/compaction.rs; 11-20 ms with
            // 1 MiB chunks, 13-22 ms with 4 MiB).
            self.file
                .sync_data()
                .map_err(|e| WalError::io("sync", self.path.to_owned(), e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WalError> {
        self.file
            .write_all(&self.buf)
            .map_err(|e| WalError::io("write", self.path.to_owned(), e))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

//! How a replay holds the payloads of live messages: recovery keeps the
//! bytes (the queue decodes them), compaction keeps only where they lie
//! ([`PayloadAt`]) and copies them from the sealed files as it writes the
//! base file ([`PayloadReader`]), so that a compaction never holds the
//! live data a second time (issue 10).
//!
//! Reading a payload back needs no new checksum: it lies in a frame that
//! verified during the replay, in a sealed file, which nothing changes
//! until the compaction that read it has replaced it.

use super::error::WalError;
use super::recovery::LogFile;
use super::storage::{ReadFile, Storage};
use std::io::{BufReader, Read, Seek, SeekFrom};

/// The frame a record was decoded from: which file of the replay, where
/// its body starts, and the body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    /// Index of the file in the replayed list.
    pub(crate) file: u32,
    /// Offset of the body in the file.
    pub(crate) offset: u64,
    pub(crate) body: &'a [u8],
}

impl Frame<'_> {
    /// A frame that is in no file (tests replaying records directly):
    /// only for payloads held as bytes.
    #[cfg(test)]
    pub(crate) const DETACHED: Frame<'static> = Frame {
        file: u32::MAX,
        offset: 0,
        body: &[],
    };
}

/// How a replay holds a live message's payload.
pub(crate) trait Hold: Default + Clone {
    /// `payload` is a slice of `frame.body`.
    fn hold(payload: &[u8], frame: &Frame<'_>) -> Self;
    /// The file (index in the replay) it lies in, if the replay notes it.
    fn file(&self) -> u32;
}

/// Recovery: the bytes.
impl Hold for Vec<u8> {
    fn hold(payload: &[u8], _: &Frame<'_>) -> Self {
        payload.to_vec()
    }

    fn file(&self) -> u32 {
        u32::MAX
    }
}

/// Where a payload lies: in which file of the replay, at which offset, how
/// long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PayloadAt {
    pub(crate) file: u32,
    pub(crate) len: u32,
    pub(crate) offset: u64,
}

/// Compaction: the place.
impl Hold for PayloadAt {
    fn hold(payload: &[u8], frame: &Frame<'_>) -> Self {
        // Both point into one buffer: the decoder slices the body.
        let start = frame.body.as_ptr() as usize;
        let at = payload.as_ptr() as usize;
        debug_assert!(at >= start && at + payload.len() <= start + frame.body.len());
        PayloadAt {
            file: frame.file,
            // A frame's body is at most MAX_FRAME_LIMIT (1 GiB) long.
            len: payload.len() as u32,
            offset: frame.offset + at.saturating_sub(start) as u64,
        }
    }

    fn file(&self) -> u32 {
        self.file
    }
}

/// Bytes read at once. A payload beyond what is buffered is reached with a
/// seek, so live messages scattered through a long log cost one such read
/// each, not a read of the whole log.
const READ_CHUNK: usize = 32 << 10;

/// The file a [`PayloadReader`] has open: its index, reader and the
/// reader's position.
type OpenFile = (u32, BufReader<Box<dyn ReadFile>>, u64);

/// Reads payloads back from the files of a replay, mostly in file order.
pub(crate) struct PayloadReader<'a> {
    storage: &'a dyn Storage,
    files: &'a [LogFile],
    open: Option<OpenFile>,
    buf: Vec<u8>,
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(storage: &'a dyn Storage, files: &'a [LogFile]) -> Self {
        PayloadReader {
            storage,
            files,
            open: None,
            buf: Vec::new(),
        }
    }

    /// The payload at `at`.
    pub(crate) fn read(&mut self, at: PayloadAt) -> Result<&[u8], WalError> {
        let Some(file) = self.files.get(at.file as usize) else {
            return Err(WalError::corrupted(
                "",
                at.offset,
                "payload in a file that is not part of the compaction",
            ));
        };
        let path = || self.storage.describe(&file.name);
        let (_, reader, pos) = match &mut self.open {
            Some(open) if open.0 == at.file => open,
            open => {
                let src = self
                    .storage
                    .open_read(&file.name)
                    .map_err(|e| WalError::io("read", path(), e))?;
                open.insert((at.file, BufReader::with_capacity(READ_CHUNK, src), 0))
            }
        };
        let moved = match at.offset.checked_sub(*pos) {
            // Within or just past the buffer: no system call.
            Some(ahead) if ahead <= READ_CHUNK as u64 => reader.seek_relative(ahead as i64),
            _ => reader.seek(SeekFrom::Start(at.offset)).map(|_| ()),
        };
        self.buf.resize(at.len as usize, 0);
        moved
            .and_then(|()| reader.read_exact(&mut self.buf))
            .map_err(|e| WalError::io("read", path(), e))?;
        *pos = at.offset + u64::from(at.len);
        Ok(&self.buf)
    }
}

//! Reading frames back, one at a time, and judging a bad one.
//!
//! [`FrameReader`] streams a file through a buffer, holding one frame
//! body at a time: recovery never holds a whole file. At the first bad
//! frame it stops and says why; [`scan_after`] then looks at every later
//! offset for a frame that verifies, which is what tells a torn tail
//! (nothing valid after it, or only frames written before the damaged
//! bytes were synced) from damage in the middle (a later frame says the
//! damaged bytes had been synced). See FORMAT.md, section 7.

use super::format::{FrameHeader, Header, FRAME_HEADER_LEN, HEADER_LEN};
use super::storage::ReadFile;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

const HEADER: usize = FRAME_HEADER_LEN as usize;

/// What [`FrameReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<'a> {
    /// A frame that verifies, at `offset`.
    Frame { offset: u64, body: &'a [u8] },
    /// The clean end of the file.
    End,
    /// A frame at `offset` that does not verify.
    Bad { offset: u64, reason: &'static str },
}

/// Reads the frames of one file in order.
pub(crate) struct FrameReader {
    src: BufReader<Box<dyn ReadFile>>,
    offset: u64,
    file_len: u64,
    salt: u32,
    max_frame: u32,
    body: Vec<u8>,
}

impl FrameReader {
    /// Starts after the header of a file of `file_len` bytes.
    pub(crate) fn new(
        mut file: Box<dyn ReadFile>,
        header: &Header,
        file_len: u64,
    ) -> io::Result<Self> {
        file.seek(SeekFrom::Start(HEADER_LEN))?;
        Ok(FrameReader {
            src: BufReader::with_capacity(256 * 1024, file),
            offset: HEADER_LEN,
            file_len,
            salt: header.salt,
            max_frame: header.max_frame,
            body: Vec::new(),
        })
    }

    /// Where the next frame starts.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Continues at `offset` (after a skipped region).
    pub(crate) fn seek(&mut self, offset: u64) -> io::Result<()> {
        self.src.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// The next frame. After `Bad`, the reader stays where it was.
    pub(crate) fn next(&mut self) -> io::Result<Next<'_>> {
        let offset = self.offset;
        let left = self.file_len.saturating_sub(offset);
        if left == 0 {
            return Ok(Next::End);
        }
        if left < FRAME_HEADER_LEN {
            return Ok(Next::Bad {
                offset,
                reason: "frame header runs past the end of the file",
            });
        }
        let mut raw = [0u8; HEADER];
        self.src.read_exact(&mut raw)?;
        let header = FrameHeader::parse(&raw);
        let verdict = match header.implausible(offset, self.file_len, self.max_frame) {
            Some(reason) => Err(reason),
            None => {
                // Bounded: len <= max frame and fits in the file.
                self.body.resize(header.len as usize, 0);
                self.src.read_exact(&mut self.body)?;
                if header.verifies(self.salt, &raw, &self.body) {
                    Ok(())
                } else {
                    Err("frame checksum mismatch")
                }
            }
        };
        match verdict {
            Ok(()) => {
                self.offset = offset + FRAME_HEADER_LEN + u64::from(header.len);
                Ok(Next::Frame {
                    offset,
                    body: &self.body,
                })
            }
            Err(reason) => {
                self.seek(offset)?;
                Ok(Next::Bad { offset, reason })
            }
        }
    }
}

/// What lies after a bad frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// The first later offset where a frame verifies.
    pub(crate) first_valid: Option<u64>,
    /// A later valid frame that says the bad offset had been synced.
    pub(crate) vouched_by: Option<u64>,
}

/// Looks at every offset after `bad_at` for frames that verify, through a
/// window of at most about one frame plus 1 MiB.
pub(crate) fn scan_after(
    file: Box<dyn ReadFile>,
    header: &Header,
    file_len: u64,
    bad_at: u64,
) -> io::Result<Scan> {
    let mut window = Window::new(file, bad_at.saturating_add(1))?;
    let mut scan = Scan::default();
    let mut at = bad_at.saturating_add(1);
    while at.saturating_add(FRAME_HEADER_LEN) <= file_len {
        let mut raw = [0u8; HEADER];
        raw.copy_from_slice(window.get(at, HEADER)?);
        let frame = FrameHeader::parse(&raw);
        if frame.implausible(at, file_len, header.max_frame).is_none() {
            let bytes = window.get(at, HEADER + frame.len as usize)?;
            if frame.verifies(header.salt, &raw, &bytes[HEADER..]) {
                scan.first_valid.get_or_insert(at);
                if frame.synced > bad_at {
                    scan.vouched_by = Some(at);
                    break;
                }
            }
        }
        at += 1;
    }
    Ok(scan)
}

/// A forward-only window over a file.
struct Window {
    src: Box<dyn ReadFile>,
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    fn new(mut src: Box<dyn ReadFile>, start: u64) -> io::Result<Self> {
        src.seek(SeekFrom::Start(start))?;
        Ok(Window {
            src,
            start,
            buf: Vec::new(),
        })
    }

    /// Bytes `at .. at + len`; the caller keeps them within the file and
    /// never asks for anything before an earlier `at`.
    fn get(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let skip = usize::try_from(at - self.start).unwrap_or(usize::MAX);
        if skip > (1 << 20) {
            let skip = skip.min(self.buf.len());
            self.buf.drain(..skip);
            self.start += skip as u64;
        }
        let from = (at - self.start) as usize;
        let need = from + len;
        if self.buf.len() < need {
            let have = self.buf.len();
            let want = (need - have).max(64 * 1024) as u64;
            (&mut self.src).take(want).read_to_end(&mut self.buf)?;
            if self.buf.len() < need {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(&self.buf[from..need])
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{encode_frame, KIND_SEGMENT};
    use super::*;

    const SALT: u32 = 7;

    fn header() -> Header {
        Header {
            kind: KIND_SEGMENT,
            codec: 1,
            fingerprint: 1,
            seq: 1,
            salt: SALT,
            max_frame: 1024,
            first: 0,
        }
    }

    /// A file of three frames; the third written after a sync of the first
    /// two. Returns the bytes and the frame offsets.
    fn file() -> (Vec<u8>, Vec<u64>) {
        let mut b = header().encode().to_vec();
        let mut offsets = vec![b.len() as u64];
        encode_frame(&mut b, SALT, 64, b"one");
        offsets.push(b.len() as u64);
        encode_frame(&mut b, SALT, 64, b"two");
        let synced = b.len() as u64;
        offsets.push(synced);
        encode_frame(&mut b, SALT, synced, b"three");
        (b, offsets)
    }

    fn frames(bytes: &[u8]) -> (Vec<Vec<u8>>, Next<'static>) {
        let mut r = FrameReader::new(
            Box::new(io::Cursor::new(bytes.to_vec())),
            &header(),
            bytes.len() as u64,
        )
        .unwrap();
        let mut out = Vec::new();
        loop {
            match r.next().unwrap() {
                Next::Frame { body, .. } => out.push(body.to_vec()),
                Next::End => return (out, Next::End),
                Next::Bad { offset, reason } => return (out, Next::Bad { offset, reason }),
            }
        }
    }

    fn scan(bytes: &[u8], bad_at: u64) -> Scan {
        scan_after(
            Box::new(io::Cursor::new(bytes.to_vec())),
            &header(),
            bytes.len() as u64,
            bad_at,
        )
        .unwrap()
    }

    #[test]
    fn reads_frames_in_order() {
        let (b, _) = file();
        let (bodies, end) = frames(&b);
        assert_eq!(
            bodies,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(end, Next::End);
    }

    #[test]
    fn every_cut_stops_at_the_frame_it_damages() {
        let (b, offsets) = file();
        for cut in HEADER_LEN as usize..b.len() {
            let (bodies, end) = frames(&b[..cut]);
            let ends = [offsets[1], offsets[2], b.len() as u64];
            let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
            assert_eq!(bodies.len(), whole, "cut at {cut}");
            if cut as u64 == HEADER_LEN || ends.contains(&(cut as u64)) {
                assert_eq!(end, Next::End);
            } else {
                assert!(matches!(end, Next::Bad { offset, .. } if offset == offsets[whole]));
                assert_eq!(scan(&b[..cut], offsets[whole]), Scan::default());
            }
        }
    }

    #[test]
    fn a_later_frame_vouches_only_for_bytes_synced_before_it() {
        let (b, offsets) = file();
        // Damage the second frame: the third was written after a sync that
        // covered it, so the damage is in synced data.
        let mut damaged = b.clone();
        damaged[offsets[1] as usize + 17] ^= 1;
        let (bodies, end) = frames(&damaged);
        assert_eq!(bodies.len(), 1);
        assert!(matches!(end, Next::Bad { offset, .. } if offset == offsets[1]));
        let found = scan(&damaged, offsets[1]);
        assert_eq!(found.first_valid, Some(offsets[2]));
        assert_eq!(found.vouched_by, Some(offsets[2]));
        // Damage the first frame: the second was written in the same batch
        // (synced offset 64), the third vouches.
        let mut damaged = b.clone();
        damaged[offsets[0] as usize + 17] ^= 1;
        assert_eq!(
            scan(&damaged, offsets[0]),
            Scan {
                first_valid: Some(offsets[1]),
                vouched_by: Some(offsets[2])
            }
        );
        // Without the third frame, nothing vouches for the first.
        let cut = &damaged[..offsets[2] as usize];
        assert_eq!(scan(cut, offsets[0]).vouched_by, None);
    }

    #[test]
    fn frames_from_another_salt_do_not_verify() {
        let mut b = header().encode().to_vec();
        encode_frame(&mut b, SALT + 1, 64, b"alien");
        assert!(matches!(frames(&b).1, Next::Bad { .. }));
        assert_eq!(scan(&b, 63), Scan::default());
    }
}

//! The byte layout of files and frames (docs/FORMAT.md, sections 2-4).
//!
//! Every constant here is named as in FORMAT.md; change both together.

use super::error::WalError;

/// The first bytes of every file: `\x89SPOOL\r\n`.
pub(crate) const MAGIC: [u8; 8] = [0x89, b'S', b'P', b'O', b'O', b'L', b'\r', b'\n'];
/// The format version this build writes. Version 2 added the `LIMITS`
/// record and the `Expired` dead-letter reason, version 3 the `PAUSE`
/// record, version 4 the `OPTIONS` record (priorities and message groups),
/// the header's `first` field (base files that replace a range of files)
/// and the `UPDATE` record (FORMAT.md, section 10).
pub(crate) const FORMAT_VERSION: u32 = 4;
/// The oldest version this build reads: a file of versions 1 to 3 is a
/// version 4 file that uses none of the later additions (its `first` is
/// zero: a base file of those versions replaces every file before it).
pub(crate) const OLDEST_READABLE_VERSION: u32 = 1;
/// Header `kind`: a log segment.
pub(crate) const KIND_SEGMENT: u8 = 1;
/// Header `kind`: a base file written by compaction: it replaces the
/// files numbered from its header's `first` up to its own number.
pub(crate) const KIND_BASE: u8 = 2;
/// Header `codec`: payloads are bincode 2 (standard configuration) via serde.
pub(crate) const CODEC_BINCODE2: u8 = 1;
/// Length of the file header.
pub(crate) const HEADER_LEN: u64 = 64;
/// Length of a frame header (crc, len, synced offset).
pub(crate) const FRAME_HEADER_LEN: u64 = 16;
/// No file may allow frames longer than this (1 GiB).
pub(crate) const MAX_FRAME_LIMIT: u32 = 1 << 30;

/// Name of the lock file.
pub(crate) const LOCK_FILE: &str = "LOCK";
const FILE_PREFIX: &str = "wal-";
const FILE_SUFFIX: &str = ".log";
/// Suffix of a base file being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The name of file number `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{FILE_PREFIX}{seq:020}{FILE_SUFFIX}")
}

/// The sequence number in a file name, if it is a log file's name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// CRC-32/ISO-HDLC of `bytes`.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// The CRC-32 of a file's 4 salt bytes: every frame checksum of the file
/// starts from it ([`FrameHeader::verifies`], [`seal_frame`]), so the salt
/// is hashed once per file rather than once per frame.
pub(crate) fn salt_crc(salt: u32) -> u32 {
    crc32(&[&salt.to_le_bytes()])
}

/// The CRC-32 of the salt bytes followed by `parts`, from [`salt_crc`].
fn salted_crc32(salt_crc: u32, parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(salt_crc);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// What a file header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: u8,
    pub(crate) codec: u8,
    pub(crate) fingerprint: u64,
    pub(crate) seq: u64,
    pub(crate) salt: u32,
    pub(crate) max_frame: u32,
    /// A base file replaces the files numbered `first ..= seq` (0: every
    /// file before it, as in versions 1-3). Zero in a segment.
    pub(crate) first: u64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12] = self.kind;
        b[13] = self.codec;
        b[16..24].copy_from_slice(&self.fingerprint.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..36].copy_from_slice(&self.salt.to_le_bytes());
        b[36..40].copy_from_slice(&self.max_frame.to_le_bytes());
        b[40..48].copy_from_slice(&self.first.to_le_bytes());
        let crc = crc32(&[&b[0..60]]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header read from `file` (only the checks that
    /// need nothing but the bytes; see [`Header::check`] for the rest).
    pub(crate) fn decode(file: &str, b: &[u8]) -> Result<Header, WalError> {
        let Some(b) = b.get(..HEADER_LEN as usize) else {
            return Err(WalError::corrupted(file, 0, "file shorter than its header"));
        };
        if b[0..8] != MAGIC {
            return Err(WalError::corrupted(
                file,
                0,
                "not a spool write-ahead file (bad magic)",
            ));
        }
        let version = le_u32(&b[8..12]);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(WalError::UnsupportedVersion {
                file: file.to_owned(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if le_u32(&b[60..64]) != crc32(&[&b[0..60]]) {
            return Err(WalError::corrupted(file, 0, "header checksum mismatch"));
        }
        let header = Header {
            kind: b[12],
            codec: b[13],
            fingerprint: le_u64(&b[16..24]),
            seq: le_u64(&b[24..32]),
            salt: le_u32(&b[32..36]),
            max_frame: le_u32(&b[36..40]),
            first: le_u64(&b[40..48]),
        };
        if header.kind != KIND_SEGMENT && header.kind != KIND_BASE {
            return Err(WalError::corrupted(file, 12, "unknown file kind"));
        }
        if header.kind == KIND_SEGMENT && header.first != 0 || header.first > header.seq {
            return Err(WalError::corrupted(
                file,
                40,
                "first replaced file out of range",
            ));
        }
        if header.max_frame == 0 || header.max_frame > MAX_FRAME_LIMIT {
            return Err(WalError::corrupted(
                file,
                36,
                "max frame length out of range",
            ));
        }
        Ok(header)
    }

    /// Checks what the header must agree with: codec, fingerprint, name.
    pub(crate) fn check(&self, file: &str, fingerprint: u64, seq: u64) -> Result<(), WalError> {
        if self.codec != CODEC_BINCODE2 {
            return Err(WalError::UnsupportedCodec {
                file: file.to_owned(),
                found: self.codec,
            });
        }
        if self.fingerprint != fingerprint {
            return Err(WalError::WrongType {
                file: file.to_owned(),
                expected: fingerprint,
                found: self.fingerprint,
            });
        }
        if self.seq != seq {
            return Err(WalError::corrupted(
                file,
                24,
                "sequence number does not match the file name",
            ));
        }
        Ok(())
    }
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Appends one frame holding `body` to `out`. The caller has checked
/// `body.len()` against the file's max frame. (Tests: compaction seals its
/// frames in place, as the writer does.)
#[cfg(test)]
pub(crate) fn encode_frame(out: &mut Vec<u8>, salt: u32, synced: u64, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN as usize]);
    out.extend_from_slice(body);
    seal_frame(&mut out[start..], salt_crc(salt), synced);
}

/// Makes `frame` (16 bytes of room for the header, then the body) a frame:
/// writes its length, its synced offset, then its checksum, seeded with the
/// file's [`salt_crc`]. The writer seals frames in place this way as it
/// writes them, since only it knows their file and synced offset. The
/// caller has checked the body length against the file's max frame.
pub(crate) fn seal_frame(frame: &mut [u8], salt_crc: u32, synced: u64) {
    let len = frame.len() - FRAME_HEADER_LEN as usize;
    let len = u32::try_from(len).expect("frame length checked against the max frame");
    frame[4..8].copy_from_slice(&len.to_le_bytes());
    frame[8..16].copy_from_slice(&synced.to_le_bytes());
    let crc = salted_crc32(salt_crc, &[&frame[4..]]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// The parsed fixed part of a frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    pub(crate) crc: u32,
    pub(crate) len: u32,
    pub(crate) synced: u64,
}

impl FrameHeader {
    pub(crate) fn parse(b: &[u8; FRAME_HEADER_LEN as usize]) -> FrameHeader {
        FrameHeader {
            crc: le_u32(&b[0..4]),
            len: le_u32(&b[4..8]),
            synced: le_u64(&b[8..16]),
        }
    }

    /// Checks that need no body: why a frame with this header at `offset`
    /// of a file of `file_len` bytes cannot be valid, if it cannot.
    pub(crate) fn implausible(
        &self,
        offset: u64,
        file_len: u64,
        max_frame: u32,
    ) -> Option<&'static str> {
        if self.len == 0 {
            return Some("frame length is zero");
        }
        if self.len > max_frame {
            return Some("frame length above the file's maximum");
        }
        if self.synced < HEADER_LEN || self.synced > offset {
            return Some("synced offset out of range");
        }
        let end = offset
            .checked_add(FRAME_HEADER_LEN)
            .and_then(|e| e.checked_add(u64::from(self.len)));
        match end {
            Some(end) if end <= file_len => None,
            _ => Some("frame runs past the end of the file"),
        }
    }

    /// Whether the checksum matches, given the frame bytes after the crc
    /// (`raw[4..16]` of the header and the body).
    pub(crate) fn verifies(
        &self,
        salt: u32,
        header: &[u8; FRAME_HEADER_LEN as usize],
        body: &[u8],
    ) -> bool {
        salted_crc32(salt_crc(salt), &[&header[4..], body]) == self.crc
    }
}

/// A random salt for a new file (std's random hasher keys, no extra crate).
pub(crate) fn random_salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: KIND_SEGMENT,
            codec: CODEC_BINCODE2,
            fingerprint: 0xfeed,
            seq: 7,
            salt: 0x1234_5678,
            max_frame: 1 << 20,
            first: 0,
        }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let b = header().encode();
        assert_eq!(&b[0..8], b"\x89SPOOL\r\n");
        assert_eq!(le_u32(&b[8..12]), 4);
        assert_eq!(b[40..60], [0u8; 20]);
        assert_eq!(Header::decode("f", &b).unwrap(), header());
        assert!(header().check("f", 0xfeed, 7).is_ok());
    }

    #[test]
    fn header_checks_fail_with_typed_errors() {
        let b = header().encode();
        let mut v = b;
        v[8] = 5;
        assert!(matches!(
            Header::decode("f", &v),
            Err(WalError::UnsupportedVersion { found: 5, .. })
        ));
        v[8] = 0;
        assert!(matches!(
            Header::decode("f", &v),
            Err(WalError::UnsupportedVersion { found: 0, .. })
        ));
        assert!(matches!(
            header().check("f", 0xbeef, 7),
            Err(WalError::WrongType { .. })
        ));
        assert!(matches!(
            header().check("f", 0xfeed, 8),
            Err(WalError::Corrupted { .. })
        ));
        let other_codec = Header {
            codec: 9,
            ..header()
        };
        assert!(matches!(
            other_codec.check("f", 0xfeed, 7),
            Err(WalError::UnsupportedCodec { found: 9, .. })
        ));
        assert!(matches!(
            Header::decode("f", &b[..63]),
            Err(WalError::Corrupted { .. })
        ));
        for bit in 0..(HEADER_LEN as usize * 8) {
            let mut v = b;
            v[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Header::decode("f", &v).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(file_name(42), "wal-00000000000000000042.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("wal-1.log"), None);
        assert_eq!(parse_file_name("wal-00000000000000000042.log.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn frame_round_trip_and_checks() {
        let mut out = vec![0u8; HEADER_LEN as usize];
        encode_frame(&mut out, 99, 64, b"hello");
        let raw: [u8; 16] = out[64..80].try_into().unwrap();
        let fh = FrameHeader::parse(&raw);
        assert_eq!(fh.len, 5);
        assert_eq!(fh.synced, 64);
        assert_eq!(fh.implausible(64, out.len() as u64, 1024), None);
        assert!(fh.verifies(99, &raw, b"hello"));
        assert!(
            !fh.verifies(98, &raw, b"hello"),
            "the salt seeds the checksum"
        );
        assert!(!fh.verifies(99, &raw, b"hellp"));
        assert!(fh.implausible(64, out.len() as u64 - 1, 1024).is_some());
        assert!(fh.implausible(64, out.len() as u64, 4).is_some());
        assert!(fh.implausible(63, out.len() as u64, 1024).is_some());
    }

    #[test]
    fn a_frame_sealed_in_place_has_the_documented_layout() {
        let body = b"records of one append, long enough to take the folding path of crc32fast";
        let mut whole = Vec::new();
        encode_frame(&mut whole, 0xdead_beef, 4096, body);
        assert_eq!(le_u32(&whole[4..8]) as usize, body.len());
        assert_eq!(le_u64(&whole[8..16]), 4096);
        assert_eq!(&whole[16..], body);
        // The checksum is the CRC-32 of salt, then bytes 4.. of the frame.
        let mut salted = 0xdead_beef_u32.to_le_bytes().to_vec();
        salted.extend_from_slice(&whole[4..]);
        assert_eq!(le_u32(&whole[0..4]), crc32(&[&salted]));
    }
}

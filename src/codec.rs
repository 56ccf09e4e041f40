//! The one place that turns payloads into bytes and back.
//!
//! bincode 2 through serde, standard configuration (little-endian,
//! variable-length integers). Everything that needs a payload's bytes (the
//! idempotency check now, the write-ahead file later) goes through here, so
//! the codec can change in one file.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes a payload.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

/// Decodes a payload that must span all of `bytes`.
#[allow(dead_code)] // used by the write-ahead file
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    if read != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the payload",
            bytes.len() - read
        ));
    }
    Ok(value)
}

/// A stable 64-bit fingerprint of encoded bytes (FNV-1a), used to tell a
/// duplicate send from a reused key with another payload. Stable across
/// platforms and Rust versions, unlike `DefaultHasher`, because it will be
/// written to disk.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let value = (42u32, String::from("hello"), vec![1u8, 2, 3]);
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<(u32, String, Vec<u8>)>(&bytes).unwrap(), value);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&7u8).unwrap();
        bytes.push(0);
        assert!(decode::<u8>(&bytes).is_err());
    }

    #[test]
    fn fingerprint_is_fnv1a() {
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
    }
}

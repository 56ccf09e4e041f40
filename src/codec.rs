//! The one place that turns payloads into bytes and back.
//!
//! bincode 2 through serde, standard configuration (little-endian,
//! variable-length integers). Everything that needs a payload's bytes (the
//! idempotency check now, the write-ahead file later) goes through here, so
//! the codec can change in one file.

use bincode::enc::write::SizeWriter;
use bincode::error::EncodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Payloads up to this size are encoded on the stack first.
const STACK_BYTES: usize = 256;

/// Encodes a payload into a `Vec` of exactly its size, allocated once:
/// on the stack and copied if it fits in [`STACK_BYTES`], else measured
/// and then encoded into place. (`encode_to_vec` grows its `Vec` by
/// doubling from empty: several reallocations per payload, a measurable
/// share of a persistent send.)
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let config = bincode::config::standard();
    let mut stack = [0u8; STACK_BYTES];
    match bincode::serde::encode_into_slice(value, &mut stack, config) {
        Ok(len) => return Ok(stack[..len].to_vec()),
        Err(EncodeError::UnexpectedEnd) => {} // larger than the stack buffer
        Err(e) => return Err(e.to_string()),
    }
    let mut size = SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(size.bytes_written);
    bincode::serde::encode_into_std_write(value, &mut out, config).map_err(|e| e.to_string())?;
    Ok(out)
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
    fn payloads_on_either_side_of_the_stack_buffer_encode_as_bincode_does() {
        let reference =
            |v: &Vec<u8>| bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap();
        for len in [0, 1, STACK_BYTES - 4, STACK_BYTES - 1, STACK_BYTES, 10_000] {
            let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = encode(&value).unwrap();
            assert_eq!(bytes, reference(&value), "len {len}");
            // Not grown by doubling: allocated at its size.
            assert!(bytes.capacity() <= bytes.len() + 16, "len {len}");
            assert_eq!(decode::<Vec<u8>>(&bytes).unwrap(), value);
        }
    }

    #[test]
    fn a_value_that_fails_to_encode_is_an_error_on_both_paths() {
        struct Fails(usize);
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{Error, SerializeTuple};
                let mut t = s.serialize_tuple(self.0 + 1)?;
                for _ in 0..self.0 {
                    t.serialize_element(&0xffu8)?;
                }
                Err(S::Error::custom("no"))
            }
        }
        assert!(encode(&Fails(3)).is_err());
        assert!(encode(&Fails(STACK_BYTES * 2)).is_err());
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

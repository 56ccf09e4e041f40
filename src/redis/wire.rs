//! Reading the library's replies: ids, numbers, payload bytes and the
//! message metadata (a small JSON object, see `queue.lua`).

use super::conn::malformed;
use crate::clock::Nanos;
use crate::dead_letter::DeadLetterReason;
use crate::error::StorageError;
use crate::message::{Held, MessageId, Queued};
use ::redis::Value;
use serde_json::Value as Json;
use std::sync::Arc;

pub(super) fn items(value: Value, operation: &'static str) -> Result<Vec<Value>, StorageError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(malformed(operation, &format!("{other:?}"))),
    }
}

/// Item `index` of a reply, or a typed error if the reply is too short.
pub(super) fn at<'a>(
    reply: &'a [Value],
    index: usize,
    operation: &'static str,
) -> Result<&'a Value, StorageError> {
    reply
        .get(index)
        .ok_or_else(|| malformed(operation, "a reply too short"))
}

pub(super) fn int(value: &Value, operation: &'static str) -> Result<i64, StorageError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| malformed(operation, "a number")),
        Value::SimpleString(text) => text.parse().map_err(|_| malformed(operation, "a number")),
        other => Err(malformed(operation, &format!("{other:?}"))),
    }
}

pub(super) fn text(value: &Value, operation: &'static str) -> Result<String, StorageError> {
    match value {
        Value::BulkString(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(malformed(operation, &format!("{other:?}"))),
    }
}

/// The bytes of a bulk-string reply (`mod.rs`'s `bulk` writes one).
pub(super) fn bytes<'a>(
    value: &'a Value,
    operation: &'static str,
) -> Result<&'a [u8], StorageError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        other => Err(malformed(operation, &format!("{other:?}"))),
    }
}

pub(super) fn id(value: &Value, operation: &'static str) -> Result<MessageId, StorageError> {
    let n = int(value, operation)?;
    u64::try_from(n)
        .map(MessageId)
        .map_err(|_| malformed(operation, "a message id"))
}

/// Milliseconds of the server's clock as the crate's nanoseconds.
pub(super) fn nanos(ms: i64) -> Nanos {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

/// A message's metadata, as the script keeps it.
pub(super) struct Meta {
    pub(super) receive_count: u32,
    pub(super) enqueued_at: Nanos,
    key: Option<Arc<str>>,
    max_receives: Option<u32>,
    expires_at: Option<Nanos>,
    errors: Vec<String>,
    /// Why and when it was dead-lettered, if it was.
    pub(super) dead: Option<(DeadLetterReason, Nanos)>,
}

impl Meta {
    /// A message's record as the library keeps it, "receives token
    /// metadata\npayload" (see `queue.lua`): its metadata, and where its
    /// payload starts.
    pub(super) fn parse_record(
        record: &[u8],
        operation: &'static str,
    ) -> Result<(Meta, usize), StorageError> {
        let bad = || malformed(operation, "a message's record");
        let space = |from: usize| {
            record[from..]
                .iter()
                .position(|&b| b == b' ')
                .map(|at| from + at)
                .ok_or_else(bad)
        };
        let receives_end = space(0)?;
        let meta_start = space(receives_end + 1)? + 1;
        let meta_end = record[meta_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|at| meta_start + at)
            .ok_or_else(bad)?;
        let receives = std::str::from_utf8(&record[..receives_end])
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(bad)?;
        let receives = u32::try_from(receives).unwrap_or(u32::MAX);
        let meta = Self::parse_bytes(&record[meta_start..meta_end], receives, operation)?;
        Ok((meta, meta_end + 1))
    }

    fn parse_bytes(
        raw: &[u8],
        receive_count: u32,
        operation: &'static str,
    ) -> Result<Meta, StorageError> {
        let json: Json =
            serde_json::from_slice(raw).map_err(|e| malformed(operation, &e.to_string()))?;
        // A message sent without options keeps only its enqueue time.
        if let Some(ms) = json.as_f64() {
            return Ok(Meta {
                receive_count,
                enqueued_at: nanos(ms as i64),
                key: None,
                max_receives: None,
                expires_at: None,
                errors: Vec::new(),
                dead: None,
            });
        }
        let number = |field: &str| json.get(field).and_then(Json::as_f64);
        let ms = |field: &str| number(field).map(|ms| nanos(ms as i64));
        let string = |field: &str| json.get(field).and_then(Json::as_str);
        // An empty list reads back from Lua as an empty object.
        let errors = match json.get("err") {
            Some(Json::Array(texts)) => texts
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let dead = string("dr").map(|kind| {
            let reason = match kind {
                "max" => DeadLetterReason::MaxReceives(receive_count),
                "exp" => DeadLetterReason::Expired,
                _ => DeadLetterReason::Rejected(string("dt").unwrap_or_default().to_owned()),
            };
            (reason, ms("da").unwrap_or(0))
        });
        Ok(Meta {
            receive_count,
            enqueued_at: ms("e").unwrap_or(0),
            key: string("k").map(Arc::from),
            max_receives: number("m").map(|m| m as u32),
            expires_at: ms("x"),
            errors,
            dead,
        })
    }

    /// The message as the handles hold it.
    pub(super) fn into_held<T>(self, id: MessageId, payload: T) -> Held<T> {
        let mut entry = Queued::new(id, payload, self.enqueued_at, self.key);
        entry.receive_count = self.receive_count;
        entry.set_limits(self.max_receives, self.expires_at);
        entry.set_errors(self.errors);
        entry.into_held()
    }
}

#[cfg(test)]
mod tests {
    use super::Meta;

    #[test]
    fn a_record_gives_its_metadata_and_where_its_payload_starts() {
        let record = b"2 77 1700000000000\npay\nload";
        let (meta, at) = Meta::parse_record(record, "t").unwrap();
        assert_eq!(meta.receive_count, 2);
        assert_eq!(meta.enqueued_at, 1_700_000_000_000 * 1_000_000);
        assert_eq!(&record[at..], b"pay\nload");
        let record = br#"0 - {"e":5,"k":"a key","err":["x"]}"#;
        let mut record = record.to_vec();
        record.extend_from_slice(b"\n");
        let (meta, at) = Meta::parse_record(&record, "t").unwrap();
        assert_eq!(meta.receive_count, 0);
        assert_eq!(meta.key.as_deref(), Some("a key"));
        assert_eq!(meta.errors, ["x"]);
        assert_eq!(at, record.len());
    }

    #[test]
    fn a_damaged_record_is_a_typed_error() {
        for bad in [
            &b""[..],
            b"1",
            b"1 2",
            b"1 2 5",
            b"x 2 5\n",
            b"1 2 {\n",
            b"99999999999999999999999 2 5\n",
        ] {
            assert!(Meta::parse_record(bad, "t").is_err(), "{bad:?}");
        }
    }
}

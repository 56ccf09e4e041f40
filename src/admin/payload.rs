//! How the admin commands show payloads: always the bytes (base64), and
//! for a tool built with [`main`](super::main) also the value, decoded as
//! the application's message type and written as JSON.

use crate::codec;
use crate::Message;
use base64::Engine;
use serde_json::{Map, Value};

/// Decodes a payload's bytes as the application's type, into JSON.
type DecodeJson = fn(&[u8]) -> Result<Value, String>;

/// What the tool knows of the message type.
#[derive(Clone, Copy)]
pub(crate) struct Payloads {
    /// The type's fingerprint, which every file must carry; `None`: any.
    pub(crate) fingerprint: Option<u64>,
    decode: Option<DecodeJson>,
}

impl Payloads {
    /// Bytes only, any message type.
    pub(crate) fn raw() -> Self {
        Payloads {
            fingerprint: None,
            decode: None,
        }
    }

    /// Files written for `T` only, payloads decoded as `T`.
    pub(crate) fn typed<T: Message>() -> Self {
        Payloads {
            fingerprint: Some(crate::persist::type_fingerprint::<T>()),
            decode: Some(decode_json::<T>),
        }
    }

    /// Adds `payload_size`, `payload_base64` and, for a known type,
    /// `payload` (or `payload_error` if it does not decode) to `object`.
    pub(crate) fn describe(&self, bytes: &[u8], object: &mut Map<String, Value>) {
        object.insert("payload_size".into(), bytes.len().into());
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        object.insert("payload_base64".into(), encoded.into());
        match self.decode.map(|decode| decode(bytes)) {
            Some(Ok(value)) => {
                object.insert("payload".into(), value);
            }
            Some(Err(error)) => {
                object.insert("payload_error".into(), error.into());
            }
            None => {}
        }
    }
}

fn decode_json<T: Message>(bytes: &[u8]) -> Result<Value, String> {
    let value: T = codec::decode(bytes)?;
    serde_json::to_value(&value).map_err(|e| e.to_string())
}

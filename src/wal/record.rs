//! Record kinds and their byte encoding (docs/FORMAT.md, section 5).
//!
//! A [`Record`] borrows its strings and payloads: encoding needs no copy of
//! a payload the queue already holds, and decoding points into the frame
//! buffer, so replay copies only what stays live.
//!
//! Decoding never panics and never allocates more than the input can hold:
//! every length is checked against the bytes left before it is used.

/// Record kind bytes, as in FORMAT.md.
pub(crate) const ENQUEUE: u8 = 1;
pub(crate) const RECEIVE: u8 = 2;
pub(crate) const RELEASE: u8 = 3;
pub(crate) const ACK: u8 = 4;
pub(crate) const DEAD_LETTER: u8 = 5;
pub(crate) const REDRIVE: u8 = 6;
pub(crate) const PURGE_DEAD_LETTERS: u8 = 7;
pub(crate) const DEDUP_KEY: u8 = 8;
pub(crate) const MESSAGE: u8 = 9;
pub(crate) const NEXT_ID: u8 = 10;
/// Since format version 2.
pub(crate) const LIMITS: u8 = 11;
/// Since format version 3.
pub(crate) const PAUSE: u8 = 12;
/// Since format version 4.
pub(crate) const OPTIONS: u8 = 13;

/// The levels a priority byte may hold (`Priority::level`: 0 is the
/// highest); [`NORMAL_PRIORITY`] is what a message without one has.
pub(crate) const PRIORITY_LEVELS: u8 = 3;
pub(crate) const NORMAL_PRIORITY: u8 = 1;
/// Since format version 4.
pub(crate) const UPDATE: u8 = 14;

const REASON_MAX_RECEIVES: u8 = 1;
const REASON_REJECTED: u8 = 2;
/// Since format version 2.
const REASON_EXPIRED: u8 = 3;

/// An idempotency key with what the dedup table keeps about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRef<'a> {
    pub(crate) key: &'a str,
    /// FNV-1a of the encoded payload (`codec::fingerprint`).
    pub(crate) payload_hash: u64,
    pub(crate) expires_at: u64,
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReasonRef<'a> {
    MaxReceives(u32),
    Rejected(&'a str),
    Expired,
}

/// The full state of one live message (compaction's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageRef<'a> {
    pub(crate) id: u64,
    pub(crate) enqueued_at: u64,
    pub(crate) visible_at: u64,
    pub(crate) receive_count: u32,
    pub(crate) key: Option<KeyRef<'a>>,
    pub(crate) errors: Vec<&'a str>,
    /// Dead-lettered at, and why.
    pub(crate) dead: Option<(u64, ReasonRef<'a>)>,
    pub(crate) payload: &'a [u8],
}

/// Everything about a live message but its payload, enqueue time and key
/// (compaction's output, since format version 4): replaces what the
/// message had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpdateRef<'a> {
    pub(crate) id: u64,
    pub(crate) visible_at: u64,
    pub(crate) receive_count: u32,
    pub(crate) errors: Vec<&'a str>,
    /// Dead-lettered at, and why.
    pub(crate) dead: Option<(u64, ReasonRef<'a>)>,
    pub(crate) max_receives: Option<u32>,
    pub(crate) expires_at: Option<u64>,
}

/// One state change of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Enqueue {
        id: u64,
        enqueued_at: u64,
        visible_at: u64,
        key: Option<KeyRef<'a>>,
        payload: &'a [u8],
    },
    Receive {
        id: u64,
        receive_count: u32,
    },
    Release {
        id: u64,
        visible_at: u64,
        error: Option<&'a str>,
    },
    Ack {
        id: u64,
    },
    DeadLetter {
        id: u64,
        at: u64,
        reason: ReasonRef<'a>,
        error: Option<&'a str>,
    },
    Redrive {
        id: u64,
        at: u64,
        payload: Option<&'a [u8]>,
    },
    PurgeDeadLetters,
    DedupKey {
        id: u64,
        key: KeyRef<'a>,
    },
    Message(MessageRef<'a>),
    NextId {
        next_id: u64,
    },
    /// Per-message overrides, written in the frame of its `ENQUEUE` (and
    /// after its `MESSAGE` by compaction).
    Limits {
        id: u64,
        max_receives: Option<u32>,
        expires_at: Option<u64>,
    },
    /// The queue was paused (`true`) or resumed (`false`); the last one
    /// read wins. Since format version 3.
    Pause {
        paused: bool,
    },
    /// A message's `LIMITS` with its priority level and message group,
    /// for a message that has either (kind `OPTIONS`; written where
    /// `LIMITS` would be). Since format version 4.
    Options {
        id: u64,
        max_receives: Option<u32>,
        expires_at: Option<u64>,
        priority: u8,
        group: Option<&'a str>,
    },
    /// A live message's state without its payload. Since format version 4.
    Update(UpdateRef<'a>),
}

impl Record<'_> {
    /// The message this record is about, if it is about one (a
    /// `DEDUP_KEY` names a message that is gone: not one it is about).
    pub(crate) fn message_id(&self) -> Option<u64> {
        match self {
            Record::Enqueue { id, .. }
            | Record::Receive { id, .. }
            | Record::Release { id, .. }
            | Record::Ack { id }
            | Record::DeadLetter { id, .. }
            | Record::Redrive { id, .. }
            | Record::Limits { id, .. }
            | Record::Options { id, .. } => Some(*id),
            Record::Message(m) => Some(m.id),
            Record::Update(u) => Some(u.id),
            Record::PurgeDeadLetters
            | Record::DedupKey { .. }
            | Record::NextId { .. }
            | Record::Pause { .. } => None,
        }
    }

    /// Appends this record's bytes to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Encoder(out);
        match self {
            Record::Enqueue {
                id,
                enqueued_at,
                visible_at,
                key,
                payload,
            } => {
                e.u8(ENQUEUE);
                e.u64(*id);
                e.u64(*enqueued_at);
                e.u64(*visible_at);
                e.opt(key.as_ref(), Encoder::key);
                e.bytes(payload);
            }
            Record::Receive { id, receive_count } => {
                e.u8(RECEIVE);
                e.u64(*id);
                e.u32(*receive_count);
            }
            Record::Release {
                id,
                visible_at,
                error,
            } => {
                e.u8(RELEASE);
                e.u64(*id);
                e.u64(*visible_at);
                e.opt(*error, Encoder::str);
            }
            Record::Ack { id } => {
                e.u8(ACK);
                e.u64(*id);
            }
            Record::DeadLetter {
                id,
                at,
                reason,
                error,
            } => {
                e.u8(DEAD_LETTER);
                e.u64(*id);
                e.u64(*at);
                e.reason(*reason);
                e.opt(*error, Encoder::str);
            }
            Record::Redrive { id, at, payload } => {
                e.u8(REDRIVE);
                e.u64(*id);
                e.u64(*at);
                e.opt(*payload, Encoder::bytes);
            }
            Record::PurgeDeadLetters => e.u8(PURGE_DEAD_LETTERS),
            Record::DedupKey { id, key } => {
                e.u8(DEDUP_KEY);
                e.u64(*id);
                e.key(key);
            }
            Record::Message(m) => {
                e.u8(MESSAGE);
                e.u64(m.id);
                e.u64(m.enqueued_at);
                e.u64(m.visible_at);
                e.u32(m.receive_count);
                e.opt(m.key.as_ref(), Encoder::key);
                e.u32(len32(m.errors.len()));
                for error in &m.errors {
                    e.str(error);
                }
                e.opt(m.dead.as_ref(), |e, (at, reason)| {
                    e.u64(*at);
                    e.reason(*reason);
                });
                e.bytes(m.payload);
            }
            Record::NextId { next_id } => {
                e.u8(NEXT_ID);
                e.u64(*next_id);
            }
            Record::Limits {
                id,
                max_receives,
                expires_at,
            } => {
                e.u8(LIMITS);
                e.u64(*id);
                e.opt(*max_receives, Encoder::u32);
                e.opt(*expires_at, Encoder::u64);
            }
            Record::Pause { paused } => {
                e.u8(PAUSE);
                e.u8(u8::from(*paused));
            }
            Record::Options {
                id,
                max_receives,
                expires_at,
                priority,
                group,
            } => {
                e.u8(OPTIONS);
                e.u64(*id);
                e.opt(*max_receives, Encoder::u32);
                e.opt(*expires_at, Encoder::u64);
                e.u8(*priority);
                e.opt(*group, Encoder::str);
            }
            Record::Update(u) => {
                e.u8(UPDATE);
                e.u64(u.id);
                e.u64(u.visible_at);
                e.u32(u.receive_count);
                e.u32(len32(u.errors.len()));
                for error in &u.errors {
                    e.str(error);
                }
                e.opt(u.dead.as_ref(), |e, (at, reason)| {
                    e.u64(*at);
                    e.reason(*reason);
                });
                e.opt(u.max_receives, Encoder::u32);
                e.opt(u.expires_at, Encoder::u64);
            }
        }
    }

    /// The number of bytes [`Record::encode`] appends (saturating).
    pub(crate) fn encoded_len(&self) -> u64 {
        let key_len = |k: &Option<KeyRef<'_>>| k.map_or(1, |k| 1 + 4 + k.key.len() as u64 + 16);
        let opt_str = |s: &Option<&str>| s.map_or(1, |s| 1 + 4 + s.len() as u64);
        let reason_len = |r: &ReasonRef<'_>| match r {
            ReasonRef::MaxReceives(_) => 5,
            ReasonRef::Rejected(s) => 5 + s.len() as u64,
            ReasonRef::Expired => 1,
        };
        1 + match self {
            Record::Enqueue { key, payload, .. } => 24 + key_len(key) + 4 + payload.len() as u64,
            Record::Receive { .. } => 12,
            Record::Release { error, .. } => 16 + opt_str(error),
            Record::Ack { .. } => 8,
            Record::DeadLetter { reason, error, .. } => 16 + reason_len(reason) + opt_str(error),
            Record::Redrive { payload, .. } => 16 + payload.map_or(1, |p| 5 + p.len() as u64),
            Record::PurgeDeadLetters => 0,
            Record::DedupKey { key, .. } => 8 + key_len(&Some(*key)) - 1,
            Record::Message(m) => {
                28 + key_len(&m.key)
                    + 4
                    + m.errors.iter().map(|e| 4 + e.len() as u64).sum::<u64>()
                    + m.dead.as_ref().map_or(1, |(_, r)| 9 + reason_len(r))
                    + 4
                    + m.payload.len() as u64
            }
            Record::NextId { .. } => 8,
            Record::Limits {
                max_receives,
                expires_at,
                ..
            } => 8 + max_receives.map_or(1, |_| 5) + expires_at.map_or(1, |_| 9),
            Record::Pause { .. } => 1,
            Record::Options {
                max_receives,
                expires_at,
                group,
                ..
            } => {
                8 + max_receives.map_or(1, |_| 5) + expires_at.map_or(1, |_| 9) + 1 + opt_str(group)
            }
            Record::Update(u) => {
                20 + 4
                    + u.errors.iter().map(|e| 4 + e.len() as u64).sum::<u64>()
                    + u.dead.as_ref().map_or(1, |(_, r)| 9 + reason_len(r))
                    + u.max_receives.map_or(1, |_| 5)
                    + u.expires_at.map_or(1, |_| 9)
            }
        }
    }

    /// Decodes every record of a frame body. `Err` says why the body is
    /// malformed and at which offset within it.
    pub(crate) fn decode_all(body: &[u8]) -> Result<Vec<Record<'_>>, (usize, &'static str)> {
        let mut d = Decoder { b: body, at: 0 };
        let mut records = Vec::new();
        while d.at < body.len() {
            let start = d.at;
            records.push(d.record().map_err(|reason| (start, reason))?);
        }
        Ok(records)
    }
}

/// Lengths above u32 are refused before encoding (frames are at most 1 GiB).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

struct Encoder<'o>(&'o mut Vec<u8>);

impl Encoder<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(len32(v.len()));
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn key(&mut self, k: &KeyRef<'_>) {
        self.str(k.key);
        self.u64(k.payload_hash);
        self.u64(k.expires_at);
    }
    fn reason(&mut self, r: ReasonRef<'_>) {
        match r {
            ReasonRef::MaxReceives(n) => {
                self.u8(REASON_MAX_RECEIVES);
                self.u32(n);
            }
            ReasonRef::Rejected(text) => {
                self.u8(REASON_REJECTED);
                self.str(text);
            }
            ReasonRef::Expired => self.u8(REASON_EXPIRED),
        }
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }
}

type Decoded<T> = Result<T, &'static str>;

struct Decoder<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or("length overflow")?;
        let s = self
            .b
            .get(self.at..end)
            .ok_or("record runs past the end of its frame")?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Decoded<u32> {
        Ok(super::format::le_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Decoded<u64> {
        Ok(super::format::le_u64(self.take(8)?))
    }
    fn bytes(&mut self) -> Decoded<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn str(&mut self) -> Decoded<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "string is not UTF-8")
    }
    fn key(&mut self) -> Decoded<KeyRef<'a>> {
        Ok(KeyRef {
            key: self.str()?,
            payload_hash: self.u64()?,
            expires_at: self.u64()?,
        })
    }
    fn reason(&mut self) -> Decoded<ReasonRef<'a>> {
        match self.u8()? {
            REASON_MAX_RECEIVES => Ok(ReasonRef::MaxReceives(self.u32()?)),
            REASON_REJECTED => Ok(ReasonRef::Rejected(self.str()?)),
            REASON_EXPIRED => Ok(ReasonRef::Expired),
            _ => Err("unknown dead-letter reason"),
        }
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Decoded<T>) -> Decoded<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err("bad option tag"),
        }
    }

    fn record(&mut self) -> Decoded<Record<'a>> {
        Ok(match self.u8()? {
            ENQUEUE => Record::Enqueue {
                id: self.u64()?,
                enqueued_at: self.u64()?,
                visible_at: self.u64()?,
                key: self.opt(Self::key)?,
                payload: self.bytes()?,
            },
            RECEIVE => Record::Receive {
                id: self.u64()?,
                receive_count: self.u32()?,
            },
            RELEASE => Record::Release {
                id: self.u64()?,
                visible_at: self.u64()?,
                error: self.opt(Self::str)?,
            },
            ACK => Record::Ack { id: self.u64()? },
            DEAD_LETTER => Record::DeadLetter {
                id: self.u64()?,
                at: self.u64()?,
                reason: self.reason()?,
                error: self.opt(Self::str)?,
            },
            REDRIVE => Record::Redrive {
                id: self.u64()?,
                at: self.u64()?,
                payload: self.opt(Self::bytes)?,
            },
            PURGE_DEAD_LETTERS => Record::PurgeDeadLetters,
            DEDUP_KEY => Record::DedupKey {
                id: self.u64()?,
                key: self.key()?,
            },
            MESSAGE => Record::Message(self.message()?),
            NEXT_ID => Record::NextId {
                next_id: self.u64()?,
            },
            LIMITS => Record::Limits {
                id: self.u64()?,
                max_receives: self.opt(Self::u32)?,
                expires_at: self.opt(Self::u64)?,
            },
            PAUSE => Record::Pause {
                paused: match self.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err("pause flag is neither 0 nor 1"),
                },
            },
            OPTIONS => Record::Options {
                id: self.u64()?,
                max_receives: self.opt(Self::u32)?,
                expires_at: self.opt(Self::u64)?,
                priority: match self.u8()? {
                    level if level < PRIORITY_LEVELS => level,
                    _ => return Err("priority level out of range"),
                },
                group: self.opt(Self::str)?,
            },
            UPDATE => Record::Update(self.update()?),
            _ => return Err("unknown record kind"),
        })
    }

    /// Error texts: a count, then that many strings.
    fn errors(&mut self) -> Decoded<Vec<&'a str>> {
        let count = self.u32()? as usize;
        // Each error takes at least its 4-byte length: refuse a count the
        // rest of the body cannot hold before reserving room for it.
        if count > (self.b.len() - self.at) / 4 {
            return Err("error count larger than the frame can hold");
        }
        let mut errors = Vec::with_capacity(count);
        for _ in 0..count {
            errors.push(self.str()?);
        }
        Ok(errors)
    }

    fn update(&mut self) -> Decoded<UpdateRef<'a>> {
        Ok(UpdateRef {
            id: self.u64()?,
            visible_at: self.u64()?,
            receive_count: self.u32()?,
            errors: self.errors()?,
            dead: self.opt(|d| Ok((d.u64()?, d.reason()?)))?,
            max_receives: self.opt(Self::u32)?,
            expires_at: self.opt(Self::u64)?,
        })
    }

    fn message(&mut self) -> Decoded<MessageRef<'a>> {
        let id = self.u64()?;
        let enqueued_at = self.u64()?;
        let visible_at = self.u64()?;
        let receive_count = self.u32()?;
        let key = self.opt(Self::key)?;
        let errors = self.errors()?;
        let dead = self.opt(|d| Ok((d.u64()?, d.reason()?)))?;
        Ok(MessageRef {
            id,
            enqueued_at,
            visible_at,
            receive_count,
            key,
            errors,
            dead,
            payload: self.bytes()?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One record of every kind and variant.
    pub(crate) fn samples() -> Vec<Record<'static>> {
        let key = KeyRef {
            key: "video-42",
            payload_hash: 0xabcd,
            expires_at: 5_000,
        };
        vec![
            Record::Enqueue {
                id: 1,
                enqueued_at: 100,
                visible_at: 100,
                key: None,
                payload: b"payload one",
            },
            Record::Enqueue {
                id: 2,
                enqueued_at: 101,
                visible_at: 900,
                key: Some(key),
                payload: b"",
            },
            Record::Receive {
                id: 1,
                receive_count: 3,
            },
            Record::Release {
                id: 1,
                visible_at: 200,
                error: Some("parse error"),
            },
            Record::Release {
                id: 1,
                visible_at: 200,
                error: None,
            },
            Record::Ack { id: 1 },
            Record::DeadLetter {
                id: 2,
                at: 300,
                reason: ReasonRef::MaxReceives(5),
                error: Some("boom"),
            },
            Record::DeadLetter {
                id: 2,
                at: 300,
                reason: ReasonRef::Rejected("no image"),
                error: None,
            },
            Record::Redrive {
                id: 2,
                at: 400,
                payload: Some(b"fixed"),
            },
            Record::Redrive {
                id: 2,
                at: 400,
                payload: None,
            },
            Record::PurgeDeadLetters,
            Record::DedupKey { id: 9, key },
            Record::Message(MessageRef {
                id: 3,
                enqueued_at: 1,
                visible_at: 2,
                receive_count: 4,
                key: Some(key),
                errors: vec!["a", "", "ccc"],
                dead: Some((7, ReasonRef::Rejected("why"))),
                payload: b"state",
            }),
            Record::Message(MessageRef {
                id: 4,
                enqueued_at: 1,
                visible_at: 2,
                receive_count: 0,
                key: None,
                errors: vec![],
                dead: None,
                payload: b"",
            }),
            Record::NextId { next_id: 77 },
            Record::DeadLetter {
                id: 4,
                at: 500,
                reason: ReasonRef::Expired,
                error: None,
            },
            Record::Limits {
                id: 4,
                max_receives: Some(2),
                expires_at: Some(600),
            },
            Record::Limits {
                id: 5,
                max_receives: None,
                expires_at: None,
            },
            Record::Pause { paused: true },
            Record::Pause { paused: false },
            Record::Options {
                id: 6,
                max_receives: Some(3),
                expires_at: None,
                priority: 0,
                group: Some("customer-7"),
            },
            Record::Options {
                id: 7,
                max_receives: None,
                expires_at: Some(9),
                priority: 2,
                group: None,
            },
            Record::Update(UpdateRef {
                id: 3,
                visible_at: 9,
                receive_count: 2,
                errors: vec!["x", ""],
                dead: Some((8, ReasonRef::MaxReceives(2))),
                max_receives: Some(2),
                expires_at: None,
            }),
            Record::Update(UpdateRef {
                id: 4,
                visible_at: 9,
                receive_count: 0,
                errors: vec![],
                dead: None,
                max_receives: None,
                expires_at: Some(10),
            }),
        ]
    }

    #[test]
    fn every_record_round_trips_with_its_stated_length() {
        let mut body = Vec::new();
        for record in samples() {
            let before = body.len();
            record.encode(&mut body);
            assert_eq!(
                (body.len() - before) as u64,
                record.encoded_len(),
                "{record:?}"
            );
            let mut alone = Vec::new();
            record.encode(&mut alone);
            assert_eq!(Record::decode_all(&alone).unwrap(), vec![record]);
        }
        assert_eq!(Record::decode_all(&body).unwrap(), samples());
    }

    #[test]
    fn every_truncation_and_bit_flip_decodes_or_errs_without_panicking() {
        for record in samples() {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            for cut in 0..bytes.len() {
                // A cut body is either an error, or (for a cut at a record
                // boundary, impossible here with one record) shorter data.
                assert!(
                    Record::decode_all(&bytes[..cut]).map_or(true, |r| cut == 0 && r.is_empty())
                );
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let _ = Record::decode_all(&flipped); // must not panic
            }
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut bytes = vec![MESSAGE];
        bytes.extend_from_slice(&[0; 28]);
        bytes.push(0); // no key
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode_all(&bytes).is_err());
        let mut bytes = vec![ENQUEUE];
        bytes.extend_from_slice(&[0; 24]);
        bytes.push(0);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode_all(&bytes).is_err());
        let mut bytes = vec![UPDATE];
        bytes.extend_from_slice(&[0; 20]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode_all(&bytes).is_err());
        assert!(Record::decode_all(&[200]).is_err());
        assert!(Record::decode_all(&[PAUSE, 2]).is_err(), "a flag is 0 or 1");
        assert!(Record::decode_all(&[PAUSE]).is_err());
        let mut bytes = vec![OPTIONS];
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[0, 0, PRIORITY_LEVELS, 0]);
        assert!(Record::decode_all(&bytes).is_err(), "no such priority");
        assert!(
            Record::decode_all(&[RELEASE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7])
                .is_err()
        );
    }
}

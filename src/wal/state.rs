//! The queue's state as the log describes it, built by replaying records.
//!
//! [`Replay`] applies records in log order (FORMAT.md, section 5, "effect
//! on replay"); [`Replay::finish`] yields what the queue needs to start
//! again. Recovery and compaction share it: compaction writes a
//! [`Replay`]'s content back as `MESSAGE`, `DEDUP_KEY` and `NEXT_ID`
//! records. It holds the live messages and the remembered keys, nothing
//! proportional to the length of the log.

use super::live::{Live, LiveTable, Rare};
use super::payload::{Frame, Hold};
use super::record::{KeyRef, MessageRef, ReasonRef, Record, UpdateRef, NORMAL_PRIORITY};
use crate::dead_letter::DeadLetterReason;
use std::collections::HashMap;

/// An idempotency key with what the dedup table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoveredKey {
    pub(crate) key: String,
    /// FNV-1a of the encoded payload (`codec::fingerprint`).
    pub(crate) payload_hash: u64,
    /// The message the key was first sent with.
    pub(crate) id: u64,
    pub(crate) expires_at: u64,
}

/// When and why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLettered {
    pub(crate) at: u64,
    pub(crate) reason: DeadLetterReason,
}

/// A live message: ready (visible at or before now), delayed (visible
/// later) or dead-lettered. Messages in flight at the crash are ready,
/// with the receive count of their last delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoveredMessage {
    pub(crate) id: u64,
    /// The payload, as the codec encoded it.
    pub(crate) payload: Vec<u8>,
    pub(crate) enqueued_at: u64,
    pub(crate) visible_at: u64,
    pub(crate) receive_count: u32,
    pub(crate) key: Option<RecoveredKey>,
    /// Error texts of failed attempts, oldest first.
    pub(crate) errors: Vec<String>,
    pub(crate) dead: Option<DeadLettered>,
    /// Its own `max_receives` (a `LIMITS` record).
    pub(crate) max_receives: Option<u32>,
    /// When its time to live runs out (a `LIMITS` record).
    pub(crate) expires_at: Option<u64>,
    /// Its priority level if not the normal one, 0 the highest (an
    /// `OPTIONS` record).
    pub(crate) priority: Option<u8>,
    /// Its message group (an `OPTIONS` record).
    pub(crate) group: Option<String>,
}

/// The state replayed so far; `P`: how it holds payloads (the bytes for
/// recovery, where they lie for compaction: see `payload`).
#[derive(Debug, Clone)]
pub(crate) struct Replay<P = Vec<u8>> {
    messages: LiveTable<P>,
    /// Keys of messages that are gone, still in their window, with the
    /// file (index in the replay) of the record that created their
    /// message, or of the `DEDUP_KEY` that named them.
    gone_keys: HashMap<String, (RecoveredKey, u32)>,
    next_id: u64,
    /// Whether the queue is paused (the last `PAUSE` record).
    paused: bool,
    /// The latest time any record says it was written at.
    log_time: u64,
    /// Records applied.
    pub(crate) records: u64,
    /// Records about ids that are not live (changed nothing).
    ignored: u64,
    /// Compaction: the ids of the messages records were about, and
    /// whether a `PAUSE` was read, since [`Replay::take_touched`].
    touched: Option<Touched>,
}

/// What records touched (see [`Replay::track_touched`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Touched {
    /// Ids, in record order, with repeats.
    pub(crate) ids: Vec<u64>,
    pub(crate) paused: bool,
}

impl<P> Default for Replay<P> {
    fn default() -> Self {
        Replay {
            messages: LiveTable::default(),
            gone_keys: HashMap::new(),
            next_id: 0,
            paused: false,
            log_time: 0,
            records: 0,
            ignored: 0,
            touched: None,
        }
    }
}

fn owned_key(key: &KeyRef<'_>, id: u64) -> RecoveredKey {
    RecoveredKey {
        key: key.key.to_owned(),
        payload_hash: key.payload_hash,
        id,
        expires_at: key.expires_at,
    }
}

fn owned_reason(reason: &ReasonRef<'_>) -> DeadLetterReason {
    match reason {
        ReasonRef::MaxReceives(n) => DeadLetterReason::MaxReceives(*n),
        ReasonRef::Rejected(text) => DeadLetterReason::Rejected((*text).to_owned()),
        ReasonRef::Expired => DeadLetterReason::Expired,
    }
}

impl Replay<Vec<u8>> {
    /// Applies one record that comes from no file, and settles (tests).
    #[cfg(test)]
    pub(crate) fn apply(&mut self, record: &Record<'_>) {
        self.apply_in(record, &Frame::DETACHED);
        self.settle();
    }

    /// Hands over the state.
    pub(crate) fn finish(mut self) -> (Vec<RecoveredMessage>, Vec<RecoveredKey>, u64) {
        self.settle();
        let keys = self
            .gone_keys()
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        let next_id = self.next_id();
        let messages = self.messages.into_iter().map(recovered).collect();
        (messages, keys, next_id)
    }
}

impl<P: Hold> Replay<P> {
    /// Applies one record, decoded from `frame`.
    pub(crate) fn apply_in(&mut self, record: &Record<'_>, frame: &Frame<'_>) {
        self.records += 1;
        if let Some(touched) = &mut self.touched {
            match record.message_id() {
                Some(id) => touched.ids.push(id),
                None => touched.paused |= matches!(record, Record::Pause { .. }),
            }
        }
        let applied = match record {
            Record::Enqueue {
                id,
                enqueued_at,
                visible_at,
                key,
                payload,
            } => {
                self.see(*id, *enqueued_at);
                let mut fresh = Live::new(*id, *enqueued_at, *visible_at, P::hold(payload, frame));
                if let Some(k) = key {
                    self.gone_keys.remove(k.key);
                    fresh.rare_mut().key = Some(owned_key(k, *id));
                }
                // Replacing a message with the same id counts as ignored
                // (`LiveTable::replaced`).
                self.messages.insert(fresh);
                true
            }
            Record::Receive { id, receive_count } => self.live(*id, |m| {
                m.receive_count = *receive_count;
            }),
            Record::Release {
                id,
                visible_at,
                error,
            } => self.live(*id, |m| {
                m.visible_at = *visible_at;
                if let Some(error) = error {
                    m.rare_mut().errors.push((*error).to_owned());
                }
            }),
            Record::Ack { id } => self.remove(*id),
            Record::DeadLetter {
                id,
                at,
                reason,
                error,
            } => {
                self.log_time = self.log_time.max(*at);
                self.live(*id, |m| {
                    let rare = m.rare_mut();
                    rare.errors.extend(error.map(str::to_owned));
                    rare.dead = Some(DeadLettered {
                        at: *at,
                        reason: owned_reason(reason),
                    });
                })
            }
            Record::Redrive { id, at, payload } => {
                self.log_time = self.log_time.max(*at);
                match self.messages.get_mut(*id) {
                    Some(m) if m.dead().is_some() => {
                        let rare = m.rare_mut();
                        rare.dead = None;
                        rare.errors = Vec::new();
                        rare.expires_at = None; // a redrive starts a new life
                        m.receive_count = 0;
                        m.visible_at = *at;
                        if let Some(p) = payload {
                            let origin = m.origin();
                            m.rare_mut().origin = Some(origin);
                            m.payload = P::hold(p, frame);
                        }
                        true
                    }
                    _ => false,
                }
            }
            Record::PurgeDeadLetters => {
                for (id, mut rare, payload) in self.messages.remove_where(|m| m.dead().is_some()) {
                    if let Some(touched) = &mut self.touched {
                        touched.ids.push(id);
                    }
                    if let Some(key) = rare.key.take() {
                        self.remember(key, rare.origin.unwrap_or_else(|| payload.file()));
                    }
                }
                true
            }
            Record::DedupKey { id, key } => {
                self.see(*id, 0);
                self.remember(owned_key(key, *id), frame.file);
                true
            }
            Record::Message(m) => {
                self.see(m.id, m.enqueued_at);
                self.messages.insert(from_ref(m, P::hold(m.payload, frame)));
                true
            }
            Record::Pause { paused } => {
                self.paused = *paused;
                true
            }
            Record::NextId { next_id } => {
                self.next_id = self.next_id.max(*next_id);
                true
            }
            Record::Limits {
                id,
                max_receives,
                expires_at,
            } => match self.messages.get_mut(*id) {
                Some(m) => {
                    if max_receives.is_some() || expires_at.is_some() {
                        let rare = m.rare_mut();
                        rare.max_receives = *max_receives;
                        rare.expires_at = *expires_at;
                    }
                    true
                }
                None => false,
            },
            Record::Options {
                id,
                max_receives,
                expires_at,
                priority,
                group,
            } => match self.messages.get_mut(*id) {
                Some(m) => {
                    let rare = m.rare_mut();
                    rare.max_receives = *max_receives;
                    rare.expires_at = *expires_at;
                    rare.priority = (*priority != NORMAL_PRIORITY).then_some(*priority);
                    rare.group = group.map(str::to_owned);
                    true
                }
                None => false,
            },
            Record::Update(u) => match self.messages.get_mut(u.id) {
                Some(m) => {
                    apply_update(m, u);
                    true
                }
                None => false,
            },
        };
        if !applied {
            self.ignored += 1;
        }
    }

    fn see(&mut self, id: u64, time: u64) {
        self.next_id = self.next_id.max(id.saturating_add(1));
        self.log_time = self.log_time.max(time);
    }

    fn live(&mut self, id: u64, change: impl FnOnce(&mut Live<P>)) -> bool {
        match self.messages.get_mut(id) {
            Some(m) if m.dead().is_none() => {
                change(m);
                true
            }
            _ => false,
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        match self.messages.remove(id) {
            Some((mut rare, payload)) => {
                if let Some(key) = rare.key.take() {
                    self.remember(key, rare.origin.unwrap_or_else(|| payload.file()));
                }
                true
            }
            None => false,
        }
    }

    /// Keeps a gone message's key, noted in file `home`; of two entries
    /// for one key, the one that expires later wins.
    fn remember(&mut self, key: RecoveredKey, home: u32) {
        match self.gone_keys.get(&key.key) {
            Some((old, _)) if old.expires_at >= key.expires_at => {}
            _ => {
                self.gone_keys.insert(key.key.clone(), (key, home));
            }
        }
    }

    /// Compaction: from now on, note which messages records touch (see
    /// [`Replay::take_touched`]).
    pub(crate) fn track_touched(&mut self) {
        self.touched = Some(Touched::default());
    }

    /// What records touched since the last call (or since
    /// [`Replay::track_touched`]).
    pub(crate) fn take_touched(&mut self) -> Touched {
        self.touched
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Empties the state for another replay, keeping the memory of its
    /// table of live messages (see [`LiveTable::clear`]).
    pub(crate) fn clear(&mut self) {
        self.messages.clear();
        self.gone_keys.clear();
        self.next_id = 0;
        self.paused = false;
        self.log_time = 0;
        self.records = 0;
        self.ignored = 0;
        self.touched = None;
    }

    /// How many messages are live.
    pub(crate) fn live_count(&self) -> usize {
        self.messages.len()
    }

    /// How many indexes [`Replay::seek`] may give (live messages and
    /// removed ones not yet swept out).
    pub(crate) fn slots(&mut self) -> usize {
        self.messages.settle();
        self.messages.slots()
    }

    /// Where the live message `id` is: [`LiveTable::seek`].
    pub(crate) fn seek(&mut self, from: usize, id: u64) -> (usize, Option<usize>) {
        self.messages.seek(from, id)
    }

    /// The message at `index`, from [`Replay::seek`].
    pub(crate) fn at(&self, index: usize) -> &Live<P> {
        self.messages.at(index)
    }

    /// Merges messages that the log holds out of id order: the reading
    /// methods below need it done after the last record.
    pub(crate) fn settle(&mut self) {
        self.messages.settle();
    }

    /// Records about ids that were not live (changed nothing), and
    /// messages replaced by another with the same id.
    pub(crate) fn ignored(&self) -> u64 {
        self.ignored + self.messages.replaced
    }

    /// Live messages in id order.
    pub(crate) fn messages(&self) -> impl Iterator<Item = &Live<P>> {
        self.messages.iter()
    }

    /// Keys of gone messages that are still in their window (as far as the
    /// log can tell) and not superseded by a live message holding the same
    /// key for at least as long, sorted by key.
    /// With each key, the file (index in the replay) it was noted in.
    pub(crate) fn gone_keys(&self) -> Vec<(&RecoveredKey, u32)> {
        let mut held: HashMap<&str, u64> = HashMap::new();
        for key in self.messages.iter().filter_map(Live::key) {
            let expires = held.entry(key.key.as_str()).or_insert(0);
            *expires = (*expires).max(key.expires_at);
        }
        let superseded =
            |k: &RecoveredKey| held.get(k.key.as_str()).is_some_and(|&e| e >= k.expires_at);
        let mut keys: Vec<(&RecoveredKey, u32)> = self
            .gone_keys
            .values()
            .filter(|(k, _)| k.expires_at > self.log_time && !superseded(k))
            .map(|(k, home)| (k, *home))
            .collect();
        keys.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        keys
    }

    /// The id the next message gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.max(1)
    }

    /// Whether the queue is paused.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }
}

fn from_ref<P>(m: &MessageRef<'_>, payload: P) -> Live<P> {
    let mut live = Live::new(m.id, m.enqueued_at, m.visible_at, payload);
    live.receive_count = m.receive_count;
    let rare = Rare {
        key: m.key.as_ref().map(|k| owned_key(k, m.id)),
        errors: m.errors.iter().map(|e| (*e).to_owned()).collect(),
        dead: m.dead.as_ref().map(|(at, reason)| DeadLettered {
            at: *at,
            reason: owned_reason(reason),
        }),
        ..Rare::default()
    };
    if rare != Rare::default() {
        *live.rare_mut() = rare;
    }
    live
}

/// What the queue gets back of a live message.
fn recovered(mut m: Live<Vec<u8>>) -> RecoveredMessage {
    let rare = m.take_rare();
    RecoveredMessage {
        id: m.id,
        payload: m.payload,
        enqueued_at: m.enqueued_at,
        visible_at: m.visible_at,
        receive_count: m.receive_count,
        key: rare.key,
        errors: rare.errors,
        dead: rare.dead,
        max_receives: rare.max_receives,
        expires_at: rare.expires_at,
        priority: rare.priority,
        group: rare.group,
    }
}

/// The record that restores `m`, with `payload`, exactly (compaction's
/// output).
pub(crate) fn message_record<'a, P>(m: &'a Live<P>, payload: &'a [u8]) -> Record<'a> {
    Record::Message(MessageRef {
        id: m.id,
        enqueued_at: m.enqueued_at,
        visible_at: m.visible_at,
        receive_count: m.receive_count,
        key: m.key().map(key_ref),
        errors: m.errors().iter().map(String::as_str).collect(),
        dead: m.dead().map(|d| (d.at, reason_ref(&d.reason))),
        payload,
    })
}

/// Applies an `UPDATE` record: everything but the payload, enqueue time
/// and key.
fn apply_update<P>(m: &mut Live<P>, u: &UpdateRef<'_>) {
    m.visible_at = u.visible_at;
    m.receive_count = u.receive_count;
    let had_rare = !m.errors().is_empty()
        || m.dead().is_some()
        || m.max_receives().is_some()
        || m.expires_at().is_some();
    let has_rare = !u.errors.is_empty()
        || u.dead.is_some()
        || u.max_receives.is_some()
        || u.expires_at.is_some();
    if !had_rare && !has_rare {
        return;
    }
    let rare = m.rare_mut();
    rare.errors = u.errors.iter().map(|e| (*e).to_owned()).collect();
    rare.dead = u.dead.as_ref().map(|(at, reason)| DeadLettered {
        at: *at,
        reason: owned_reason(reason),
    });
    rare.max_receives = u.max_receives;
    rare.expires_at = u.expires_at;
}

/// The `UPDATE` record that restores `m`'s state but its payload,
/// enqueue time and key (compaction's output).
pub(crate) fn update_record<P>(m: &Live<P>) -> Record<'_> {
    Record::Update(UpdateRef {
        id: m.id,
        visible_at: m.visible_at,
        receive_count: m.receive_count,
        errors: m.errors().iter().map(String::as_str).collect(),
        dead: m.dead().map(|d| (d.at, reason_ref(&d.reason))),
        max_receives: m.max_receives(),
        expires_at: m.expires_at(),
    })
}

fn reason_ref(reason: &DeadLetterReason) -> ReasonRef<'_> {
    match reason {
        DeadLetterReason::MaxReceives(n) => ReasonRef::MaxReceives(*n),
        DeadLetterReason::Rejected(text) => ReasonRef::Rejected(text),
        DeadLetterReason::Expired => ReasonRef::Expired,
    }
}

/// The `LIMITS` record that goes after `m`'s [`message_record`], if it
/// has per-message overrides, or the `OPTIONS` record if it also has a
/// priority or a group (compaction's output).
pub(crate) fn limits_record<P>(m: &Live<P>) -> Option<Record<'_>> {
    let (max_receives, expires_at) = (m.max_receives(), m.expires_at());
    if m.priority().is_some() || m.group().is_some() {
        return Some(Record::Options {
            id: m.id,
            max_receives,
            expires_at,
            priority: m.priority().unwrap_or(NORMAL_PRIORITY),
            group: m.group(),
        });
    }
    (max_receives.is_some() || expires_at.is_some()).then_some(Record::Limits {
        id: m.id,
        max_receives,
        expires_at,
    })
}

pub(crate) fn key_ref(k: &RecoveredKey) -> KeyRef<'_> {
    KeyRef {
        key: &k.key,
        payload_hash: k.payload_hash,
        expires_at: k.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueue(id: u64, at: u64, key: Option<&'static str>) -> Record<'static> {
        Record::Enqueue {
            id,
            enqueued_at: at,
            visible_at: at,
            key: key.map(|key| KeyRef {
                key,
                payload_hash: id * 10,
                expires_at: at + 1000,
            }),
            payload: b"p",
        }
    }

    fn replay(records: &[Record<'_>]) -> Replay {
        let mut r = Replay::default();
        for record in records {
            r.apply(record);
        }
        r
    }

    #[test]
    fn in_flight_messages_come_back_ready_with_their_receive_count() {
        let r = replay(&[
            enqueue(1, 100, None),
            Record::Receive {
                id: 1,
                receive_count: 1,
            },
            Record::Release {
                id: 1,
                visible_at: 150,
                error: Some("e1"),
            },
            Record::Receive {
                id: 1,
                receive_count: 2,
            },
        ]);
        let m: Vec<_> = r.messages().cloned().collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].receive_count, 2);
        assert_eq!(m[0].visible_at, 150);
        assert_eq!(m[0].errors(), ["e1".to_string()]);
        assert_eq!(r.next_id(), 2);
    }

    #[test]
    fn dead_letters_redrive_and_purge() {
        let r = replay(&[
            enqueue(1, 100, Some("k1")),
            enqueue(2, 100, None),
            enqueue(3, 100, None),
            Record::Receive {
                id: 1,
                receive_count: 1,
            },
            Record::DeadLetter {
                id: 1,
                at: 200,
                reason: ReasonRef::Rejected("bad"),
                error: Some("last"),
            },
            Record::Receive {
                id: 2,
                receive_count: 3,
            },
            Record::DeadLetter {
                id: 2,
                at: 210,
                reason: ReasonRef::MaxReceives(3),
                error: None,
            },
            Record::Redrive {
                id: 2,
                at: 300,
                payload: Some(b"fixed"),
            },
            Record::Redrive {
                id: 3,
                at: 300,
                payload: None,
            }, // not dead: ignored
            Record::PurgeDeadLetters,
        ]);
        let m: Vec<_> = r.messages().cloned().collect();
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(m[0].payload, b"fixed");
        assert_eq!(
            (m[0].receive_count, m[0].visible_at, m[0].dead().cloned()),
            (0, 300, None)
        );
        assert_eq!(r.ignored, 1);
        // The purged message's key lives on until it expires.
        let keys: Vec<_> = r.gone_keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].key.as_str(), keys[0].id, keys[0].payload_hash),
            ("k1", 1, 10)
        );
    }

    #[test]
    fn keys_outlive_their_message_until_the_log_passes_their_expiry() {
        let mut r = replay(&[enqueue(1, 100, Some("a")), Record::Ack { id: 1 }]);
        assert_eq!(r.gone_keys().len(), 1);
        r.apply(&enqueue(2, 1099, None));
        assert_eq!(r.gone_keys().len(), 1, "expires at 1100");
        r.apply(&enqueue(3, 1100, None));
        assert!(r.gone_keys().is_empty());
        // A key re-used by a live message is owned by that message.
        let r = replay(&[
            Record::DedupKey {
                id: 1,
                key: KeyRef {
                    key: "a",
                    payload_hash: 0,
                    expires_at: 50,
                },
            },
            enqueue(2, 10, Some("a")),
        ]);
        assert!(r.gone_keys().is_empty());
        assert_eq!(r.next_id(), 3);
    }

    #[test]
    fn compaction_records_restore_the_same_state() {
        let mut r = replay(&[
            enqueue(1, 100, Some("k")),
            enqueue(2, 100, Some("gone")),
            Record::Ack { id: 2 },
            Record::Receive {
                id: 1,
                receive_count: 2,
            },
            Record::DeadLetter {
                id: 1,
                at: 200,
                reason: ReasonRef::MaxReceives(2),
                error: Some("x"),
            },
            enqueue(7, 100, None),
            Record::Ack { id: 7 },
            enqueue(8, 100, None),
            Record::Limits {
                id: 8,
                max_receives: Some(9),
                expires_at: Some(500),
            },
            enqueue(9, 100, None),
            Record::Limits {
                id: 9,
                max_receives: None,
                expires_at: Some(150),
            },
            Record::DeadLetter {
                id: 9,
                at: 150,
                reason: ReasonRef::Expired,
                error: None,
            },
        ]);
        let mut copy = Replay::default();
        copy.apply(&Record::NextId {
            next_id: r.next_id(),
        });
        for (k, _) in r.gone_keys() {
            copy.apply(&Record::DedupKey {
                id: k.id,
                key: key_ref(k),
            });
        }
        for m in r.messages() {
            copy.apply(&message_record(m, &m.payload));
            if let Some(limits) = limits_record(m) {
                copy.apply(&limits);
            }
        }
        r.ignored = 0;
        let (messages, _, _) = r.clone().finish();
        let limits: Vec<_> = messages
            .iter()
            .map(|m| (m.id, m.max_receives, m.expires_at))
            .collect();
        let dead = messages.iter().find(|m| m.id == 9).unwrap().dead.clone();
        assert_eq!(
            limits,
            [
                (1, None, None),
                (8, Some(9), Some(500)),
                (9, None, Some(150))
            ]
        );
        assert_eq!(dead.unwrap().reason, DeadLetterReason::Expired);
        assert_eq!(copy.clone().finish(), r.clone().finish());
        assert_eq!(copy.finish().2, 10, "ids are never reused");
    }

    #[test]
    fn an_update_replaces_everything_but_payload_time_and_key() {
        let mut r = replay(&[
            enqueue(1, 100, Some("k")),
            Record::Receive {
                id: 1,
                receive_count: 1,
            },
            Record::DeadLetter {
                id: 1,
                at: 150,
                reason: ReasonRef::MaxReceives(1),
                error: Some("old"),
            },
        ]);
        r.apply(&Record::Update(UpdateRef {
            id: 1,
            visible_at: 300,
            receive_count: 4,
            errors: vec!["a", "b"],
            dead: None,
            max_receives: Some(9),
            expires_at: None,
        }));
        // About an id that is not live: ignored.
        r.apply(&Record::Update(UpdateRef {
            id: 7,
            visible_at: 1,
            receive_count: 1,
            errors: vec![],
            dead: None,
            max_receives: None,
            expires_at: None,
        }));
        assert_eq!(r.ignored, 1);
        let (messages, _, _) = r.finish();
        let m = &messages[0];
        assert_eq!((m.visible_at, m.receive_count), (300, 4));
        assert_eq!(m.errors, ["a", "b"]);
        assert_eq!((m.dead.clone(), m.max_receives), (None, Some(9)));
        assert_eq!((m.payload.as_slice(), m.enqueued_at), (&b"p"[..], 100));
        assert_eq!(m.key.as_ref().map(|k| k.key.as_str()), Some("k"));
    }

    #[test]
    fn records_about_unknown_ids_change_nothing() {
        let r = replay(&[
            Record::Ack { id: 5 },
            Record::Receive {
                id: 5,
                receive_count: 1,
            },
            Record::Release {
                id: 5,
                visible_at: 1,
                error: None,
            },
        ]);
        assert_eq!(r.ignored, 3);
        assert_eq!(r.messages().count(), 0);
    }
}

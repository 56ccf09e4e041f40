//! Crash, corruption and fault tests of the whole write-ahead file, on
//! [`SimStorage`] (and a few on real files).
//!
//! The reference for every check is [`Replay`] over a prefix of the frames
//! the test appended: a recovered state must equal the state after some
//! prefix that contains every frame acknowledged as durable, never a state
//! that no prefix produces (no lost, reordered or wrong payloads).

mod compaction;
mod corruption;
mod crash;
mod faults;
mod framing;
mod merged;
mod open;

use super::format::{file_name, parse_file_name, HEADER_LEN};
use super::options::{Durability, WalOptions};
use super::reader::{FrameReader, Next};
use super::record::{KeyRef, ReasonRef, Record};
use super::recovery::Recovered;
use super::sim::{SimStorage, Torn};
use super::state::{RecoveredKey, RecoveredMessage, Replay};
use super::storage::{FsStorage, Storage, WriteFile};
use super::{Wal, WalError};
use std::sync::Arc;
use std::time::Duration;

pub(super) const FINGERPRINT: u64 = 0x5eed_f00d;

pub(super) fn options() -> WalOptions {
    WalOptions {
        segment_size: 1 << 20,
        ..WalOptions::new(FINGERPRINT)
    }
}

/// Opens as the queue does: compaction starts once the state is restored.
pub(super) fn open(
    storage: &SimStorage,
    options: WalOptions,
) -> Result<(Wal, Recovered), WalError> {
    let (wal, recovered) = Wal::open(Arc::new(storage.clone()), options)?;
    wal.start_compaction();
    Ok((wal, recovered))
}

pub(super) type State = (Vec<RecoveredMessage>, Vec<RecoveredKey>, u64);

pub(super) fn state_of(r: &Recovered) -> State {
    (r.messages.clone(), r.dedup_keys.clone(), r.next_id)
}

/// The state after each prefix of `frames` (index k: the first k frames).
pub(super) fn prefix_states(frames: &[Vec<u8>]) -> Vec<State> {
    let mut replay = Replay::default();
    let mut states = vec![replay.clone().finish()];
    for body in frames {
        for record in Record::decode_all(body).unwrap() {
            replay.apply(&record);
        }
        states.push(replay.clone().finish());
    }
    states
}

/// The index of a prefix (at least `min` frames long) whose state `r` is.
pub(super) fn prefix_of(r: &Recovered, states: &[State], min: usize) -> Option<usize> {
    let got = state_of(r);
    (min..states.len()).find(|&k| states[k] == got)
}

pub(super) fn append(wal: &Wal, body: &[u8]) -> Result<(), WalError> {
    wal.append_commit(&Record::decode_all(body).unwrap())
}

pub(super) fn body(records: &[Record<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    for r in records {
        r.encode(&mut b);
    }
    b
}

/// A deterministic mix of every record kind, as frame bodies: sends (some
/// keyed, some delayed, some with a priority and a group, some in atomic
/// batches), receives, releases with errors, acks, dead letters, redrives
/// and purges.
pub(super) fn workload(steps: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut frames = Vec::new();
    let mut live: Vec<(u64, u32)> = Vec::new(); // (id, receive count)
    let mut dead: Vec<u64> = Vec::new();
    let mut id = 0u64;
    let mut now = 1_000u64;
    for step in 0..steps {
        now += 10;
        let payload = format!("payload of step {step}").into_bytes();
        let choice = if live.is_empty() { 0 } else { next(9) };
        let frame = match choice {
            0 | 1 => {
                id += 1;
                live.push((id, 0));
                let key = (step % 3 == 0).then(|| format!("key-{step}"));
                let group = format!("group-{}", step % 4);
                let enqueue = Record::Enqueue {
                    id,
                    enqueued_at: now,
                    visible_at: if step % 4 == 0 { now + 500 } else { now },
                    key: key.as_deref().map(|key| KeyRef {
                        key,
                        payload_hash: step as u64,
                        expires_at: now + 300,
                    }),
                    payload: &payload,
                };
                // Some with a priority and a group (OPTIONS), in the
                // frame of their ENQUEUE as a send writes them.
                if step % 5 == 0 {
                    body(&[
                        enqueue,
                        Record::Options {
                            id,
                            max_receives: Some(4),
                            expires_at: None,
                            priority: (step % 3) as u8,
                            group: (step % 2 == 0).then_some(group.as_str()),
                        },
                    ])
                } else {
                    body(&[enqueue])
                }
            }
            2 => {
                let records: Vec<_> = (0..3)
                    .map(|i| {
                        id += 1;
                        live.push((id, 0));
                        Record::Enqueue {
                            id,
                            enqueued_at: now,
                            visible_at: now,
                            key: None,
                            payload: if i == 1 { b"batched" } else { &payload },
                        }
                    })
                    .collect();
                body(&records)
            }
            3 | 4 => {
                let i = next(live.len() as u64) as usize;
                live[i].1 += 1;
                body(&[Record::Receive {
                    id: live[i].0,
                    receive_count: live[i].1,
                }])
            }
            5 => {
                let i = next(live.len() as u64) as usize;
                body(&[Record::Release {
                    id: live[i].0,
                    visible_at: now + 5,
                    error: Some("failed attempt"),
                }])
            }
            6 => body(&[Record::Ack {
                id: live.swap_remove(next(live.len() as u64) as usize).0,
            }]),
            7 => {
                let (victim, count) = live.swap_remove(next(live.len() as u64) as usize);
                dead.push(victim);
                let reason = if count % 2 == 0 {
                    ReasonRef::Rejected("no image")
                } else {
                    ReasonRef::MaxReceives(count)
                };
                body(&[Record::DeadLetter {
                    id: victim,
                    at: now,
                    reason,
                    error: Some("last error"),
                }])
            }
            _ => match dead.pop() {
                Some(back) if step % 2 == 0 => {
                    live.push((back, 0));
                    body(&[Record::Redrive {
                        id: back,
                        at: now,
                        payload: Some(b"corrected"),
                    }])
                }
                _ => {
                    dead.clear();
                    body(&[Record::PurgeDeadLetters])
                }
            },
        };
        frames.push(frame);
    }
    frames
}

pub(super) fn last_log_file(s: &SimStorage) -> String {
    s.names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
        .max()
        .unwrap()
}

/// Start offsets of the frames of a file (and its length at the end).
pub(super) fn frame_offsets(bytes: &[u8]) -> Vec<u64> {
    let header = super::format::Header::decode("f", bytes).unwrap();
    let mut reader = FrameReader::new(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        &header,
        bytes.len() as u64,
    )
    .unwrap();
    let mut offsets = Vec::new();
    loop {
        let at = reader.offset();
        match reader.next().unwrap() {
            Next::Frame { .. } => offsets.push(at),
            Next::End => break,
            Next::Bad { .. } => panic!("bad frame in a clean file"),
        }
    }
    offsets.push(bytes.len() as u64);
    offsets
}

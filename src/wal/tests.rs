//! Crash, corruption and fault tests of the whole write-ahead file, on
//! [`SimStorage`] (and a few on real files).
//!
//! The reference for every check is [`Replay`] over a prefix of the frames
//! the test appended: a recovered state must equal the state after some
//! prefix that contains every frame acknowledged as durable, never a state
//! that no prefix produces (no lost, reordered or wrong payloads).

use super::format::{file_name, parse_file_name, HEADER_LEN};
use super::options::{Durability, WalOptions};
use super::reader::{FrameReader, Next};
use super::record::{KeyRef, ReasonRef, Record};
use super::recovery::Recovered;
use super::sim::{SimStorage, Torn};
use super::state::{RecoveredKey, RecoveredMessage, Replay};
use super::storage::{FsStorage, Storage};
use super::{Wal, WalError};
use std::sync::Arc;
use std::time::Duration;

const FINGERPRINT: u64 = 0x5eed_f00d;

fn options() -> WalOptions {
    WalOptions {
        segment_size: 1 << 20,
        ..WalOptions::new(FINGERPRINT)
    }
}

fn open(storage: &SimStorage, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
    Wal::open(Arc::new(storage.clone()), options)
}

type State = (Vec<RecoveredMessage>, Vec<RecoveredKey>, u64);

fn state_of(r: &Recovered) -> State {
    (r.messages.clone(), r.dedup_keys.clone(), r.next_id)
}

/// The state after each prefix of `frames` (index k: the first k frames).
fn prefix_states(frames: &[Vec<u8>]) -> Vec<State> {
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
fn prefix_of(r: &Recovered, states: &[State], min: usize) -> Option<usize> {
    let got = state_of(r);
    (min..states.len()).find(|&k| states[k] == got)
}

fn append(wal: &Wal, body: &[u8]) -> Result<(), WalError> {
    wal.append_commit(&Record::decode_all(body).unwrap())
}

fn body(records: &[Record<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    for r in records {
        r.encode(&mut b);
    }
    b
}

/// A deterministic mix of every record kind, as frame bodies: sends (some
/// keyed, some delayed, some in atomic batches), receives, releases with
/// errors, acks, dead letters, redrives and purges.
fn workload(steps: usize, seed: u64) -> Vec<Vec<u8>> {
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
                body(&[Record::Enqueue {
                    id,
                    enqueued_at: now,
                    visible_at: if step % 4 == 0 { now + 500 } else { now },
                    key: key.as_deref().map(|key| KeyRef {
                        key,
                        payload_hash: step as u64,
                        expires_at: now + 300,
                    }),
                    payload: &payload,
                }])
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

fn last_log_file(s: &SimStorage) -> String {
    s.names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
        .max()
        .unwrap()
}

/// Start offsets of the frames of a file (and its length at the end).
fn frame_offsets(bytes: &[u8]) -> Vec<u64> {
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

#[test]
fn a_reopen_restores_exactly_what_was_written() {
    let frames = workload(300, 7);
    let states = prefix_states(&frames);
    let s = SimStorage::new();
    let (wal, recovered) = open(&s, options()).unwrap();
    assert_eq!(recovered.messages.len(), 0);
    assert_eq!(recovered.next_id, 1);
    for f in &frames {
        append(&wal, f).unwrap();
    }
    wal.close().unwrap();
    let (_, recovered) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
    assert_eq!(recovered.report.frames, frames.len() as u64);
    assert_eq!(recovered.report.torn_bytes, 0);
    let (messages, _, _) = &states[frames.len()];
    assert!(
        messages.iter().any(|m| m.dead.is_some()),
        "the workload leaves dead letters"
    );
    assert!(messages
        .iter()
        .any(|m| m.receive_count > 0 && !m.errors.is_empty()));
}

#[test]
fn power_cut_at_every_storage_operation_keeps_every_acknowledged_frame() {
    let frames = workload(40, 11);
    let states = prefix_states(&frames);
    let mut cases = 0;
    for cut in 0.. {
        let s = SimStorage::new();
        let (wal, _) = open(&s, options()).unwrap();
        s.cut_power_after(cut);
        let mut acked = 0;
        for f in &frames {
            if append(&wal, f).is_err() {
                break;
            }
            acked += 1;
        }
        drop(wal);
        let finished = !s.power_is_cut();
        for torn in [
            Torn::Lost,
            Torn::Prefix(9),
            Torn::Prefix(1 << 20),
            Torn::Zeroed(50),
            Torn::LaterPageOnly(200),
        ] {
            let after = s.crash(torn);
            let (wal, recovered) = open(&after, options()).unwrap();
            let k = prefix_of(&recovered, &states, acked);
            assert!(
                k.is_some(),
                "cut {cut}, {torn:?}: acked {acked}, state is no prefix"
            );
            drop(wal);
            // Recovery's repair is itself durable and idempotent.
            let (_, again) = open(&after.crash(Torn::Lost), options()).unwrap();
            assert_eq!(
                state_of(&again),
                state_of(&recovered),
                "cut {cut}, {torn:?}"
            );
            cases += 1;
        }
        if finished {
            assert_eq!(acked, frames.len());
            break;
        }
    }
    assert!(cases > 150, "{cases} cases");
}

#[test]
fn power_cut_during_recovery_repairs_loses_nothing() {
    let frames = workload(30, 5);
    let states = prefix_states(&frames);
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    drop(wal);
    // A torn tail plus a leftover compaction file, so that open has to
    // truncate, remove and create.
    let name = last_log_file(&s);
    let mut bytes = s.read(&name).unwrap();
    let whole = bytes.len();
    bytes.truncate(whole - 3);
    s.overwrite(&name, bytes);
    let base = s.crash(Torn::Lost);
    base.create(&format!("{}.tmp", file_name(1))).unwrap();
    base.sync_dir().unwrap();
    for cut in 0..20 {
        let t = base.crash(Torn::Lost);
        t.cut_power_after(cut);
        let _ = open(&t, options());
        let (_, recovered) = open(&t.crash(Torn::Lost), options()).unwrap();
        assert_eq!(state_of(&recovered), states[frames.len() - 1], "cut {cut}");
    }
}

#[test]
fn truncation_at_every_offset_of_the_last_frames_recovers_a_prefix() {
    let frames = workload(60, 3);
    let states = prefix_states(&frames);
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    wal.close().unwrap();
    let name = last_log_file(&s);
    let bytes = s.read(&name).unwrap();
    let offsets = frame_offsets(&bytes);
    assert_eq!(offsets.len(), frames.len() + 1);
    let from = offsets[frames.len() - 8] as usize;
    let mut cases = 0;
    for cut in from..=bytes.len() {
        let t = s.snapshot();
        t.overwrite(&name, bytes[..cut].to_vec());
        let (_, recovered) = open(&t, options()).unwrap();
        let whole = offsets.iter().filter(|&&o| o <= cut as u64).count() - 1;
        assert_eq!(state_of(&recovered), states[whole], "cut at {cut}");
        assert_eq!(recovered.report.torn_bytes, cut as u64 - offsets[whole]);
        cases += 1;
    }
    // Every cut inside the header of the last file: the file is dropped.
    let t = s.snapshot();
    t.overwrite(&name, bytes[..HEADER_LEN as usize - 1].to_vec());
    let (_, recovered) = open(&t, options()).unwrap();
    assert_eq!(recovered.report.torn_files_removed, 1);
    assert!(cases > 200, "{cases} cases");
}

#[test]
fn every_bit_flip_in_the_last_frames_is_a_prefix_or_a_typed_error() {
    let frames = workload(40, 9);
    let states = prefix_states(&frames);
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    wal.close().unwrap();
    let name = last_log_file(&s);
    let bytes = s.read(&name).unwrap();
    let offsets = frame_offsets(&bytes);
    let last = frames.len() - 1;
    let first = frames.len() - 4;
    let mut cases = (0, 0, 0);
    for byte in offsets[first] as usize..bytes.len() {
        let frame = offsets.iter().rposition(|&o| o <= byte as u64).unwrap();
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << bit;
            let t = s.snapshot();
            t.overwrite(&name, flipped);
            match open(&t, options()) {
                Ok((_, recovered)) => {
                    // Only the last frame (the last write) may read as torn.
                    assert_eq!(frame, last, "byte {byte} bit {bit}");
                    assert_eq!(state_of(&recovered), states[last]);
                    cases.0 += 1;
                }
                Err(WalError::Corrupted { offset, .. }) => {
                    assert!(frame < last);
                    assert_eq!(offset, offsets[frame], "byte {byte} bit {bit}");
                    cases.1 += 1;
                }
                Err(other) => panic!("byte {byte} bit {bit}: {other}"),
            }
            // Salvage skips exactly the damaged frame.
            let t = s.snapshot();
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << bit;
            t.overwrite(&name, flipped);
            let (_, recovered) = open(
                &t,
                WalOptions {
                    salvage: true,
                    ..options()
                },
            )
            .unwrap();
            let without: Vec<Vec<u8>> = frames
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != frame)
                .map(|(_, f)| f.clone())
                .collect();
            let expected = prefix_states(&without);
            assert_eq!(
                state_of(&recovered),
                expected[without.len()],
                "salvage byte {byte} bit {bit}"
            );
            cases.2 += 1;
        }
    }
    assert!(cases.0 > 50 && cases.1 > 500, "{cases:?}");
    // Header flips of a file with frames are errors (never a silent skip).
    for bit in 0..HEADER_LEN as usize * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let t = s.snapshot();
        t.overwrite(&name, flipped);
        match open(&t, options()) {
            Err(
                WalError::Corrupted { .. }
                | WalError::UnsupportedVersion { .. }
                | WalError::WrongType { .. }
                | WalError::UnsupportedCodec { .. },
            ) => {}
            Err(other) => panic!("header bit {bit}: {other}"),
            Ok(_) => panic!("header bit {bit}: flip went unnoticed"),
        }
    }
}

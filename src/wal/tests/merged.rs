//! The real writer's merged frames (several appends of a round in one
//! frame): concurrent `Sync` callers under power cuts, cuts at every
//! offset of writer-built merged frames, no lost wake-up among callers,
//! syncs and compactions, and an idle writer once poisoned.

use super::*;
use std::collections::BTreeSet;

fn enqueue(id: u64, payload: &[u8]) -> Record<'_> {
    Record::Enqueue {
        id,
        enqueued_at: 1,
        visible_at: 1,
        key: None,
        payload,
    }
}

/// Several threads append_commit under `Sync` while syncs are slow, so
/// that rounds hold several appends (merged frames); the power is cut
/// after `cut` storage operations. Every acknowledged id must come back,
/// and each thread's recovered ids must be a prefix of what it sent.
#[test]
fn concurrent_sync_callers_under_power_cuts_keep_every_acknowledged_append() {
    let threads = 4u64;
    let per_thread = 25u64;
    let mut merged_seen = false;
    for cut in (2..60).step_by(3) {
        let s = SimStorage::new();
        s.sync_delay(Duration::from_micros(300));
        let (wal, _) = open(
            &s,
            WalOptions {
                segment_size: 4096,
                auto_compact: false,
                ..options()
            },
        )
        .unwrap();
        s.cut_power_after(cut);
        let acked: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let wal = &wal;
                    scope.spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0..per_thread {
                            let id = t * 1000 + i + 1;
                            let payload = vec![t as u8; 40];
                            if wal.append_commit(&[enqueue(id, &payload)]).is_err() {
                                break;
                            }
                            acked.push(id);
                        }
                        acked
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        drop(wal);
        for torn in [
            Torn::Lost,
            Torn::Prefix(100),
            Torn::Prefix(1 << 20),
            Torn::LaterPageOnly(300),
        ] {
            let (_, recovered) = open(&s.crash(torn), options()).unwrap();
            let ids: BTreeSet<u64> = recovered.messages.iter().map(|m| m.id).collect();
            if recovered.report.frames < ids.len() as u64 {
                merged_seen = true;
            }
            for (t, acked) in acked.iter().enumerate() {
                for id in acked {
                    assert!(ids.contains(id), "cut {cut} {torn:?}: acked id {id} lost");
                }
                // Per thread, a prefix of its sends.
                let got: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| id / 1000 == t as u64)
                    .collect();
                let want: Vec<u64> = (1..=got.len() as u64)
                    .map(|i| t as u64 * 1000 + i)
                    .collect();
                assert_eq!(got, want, "cut {cut} {torn:?}: thread {t} not a prefix");
            }
        }
    }
    assert!(
        merged_seen,
        "no round held more than one append: test too weak"
    );
}

/// Merged frames built by the real writer (several appends per round,
/// rounds synced in between so synced offsets > 64): truncation at every
/// offset of the file recovers a prefix of the appends that contains
/// every append synced before the cut's frame.
#[test]
fn truncation_at_every_offset_of_writer_built_merged_frames() {
    let frames = workload(120, 41);
    let states = prefix_states(&frames);
    let s = SimStorage::new();
    let (wal, _) = open(
        &s,
        WalOptions {
            durability: Durability::Interval(Duration::from_secs(3600)),
            max_frame: 400,
            ..options()
        },
    )
    .unwrap();
    for chunk in frames.chunks(10) {
        for f in chunk {
            wal.append(&Record::decode_all(f).unwrap()).unwrap();
        }
        wal.sync().unwrap();
    }
    wal.close().unwrap();
    let name = last_log_file(&s);
    let bytes = s.read(&name).unwrap();
    let offsets = frame_offsets(&bytes);
    let nframes = offsets.len() - 1;
    assert!(
        nframes < frames.len(),
        "appends were not merged: {nframes} frames"
    );
    let mut cases = 0;
    for cut in HEADER_LEN as usize..=bytes.len() {
        let t = s.snapshot();
        t.overwrite(&name, bytes[..cut].to_vec());
        let (_, recovered) = open(&t, options()).unwrap();
        let whole = offsets.iter().filter(|&&o| o <= cut as u64).count() - 1;
        assert!(
            prefix_of(&recovered, &states, 0).is_some(),
            "cut {cut}: no prefix"
        );
        assert_eq!(recovered.report.frames, whole as u64, "cut {cut}");
        assert_eq!(recovered.report.torn_bytes, cut as u64 - offsets[whole]);
        cases += 1;
    }
    assert!(cases > 1000);
}

/// Under `Interval`, a write that fails after earlier unsynced writes
/// poisons the writer with `written > durable`. Its idle loop found the
/// sync deadline past on every pass and ran empty poisoned rounds back to
/// back, burning a core until the log was dropped. A poisoned writer has
/// nothing left to do: it must start no round until it is asked to stop.
#[test]
fn a_poisoned_interval_writer_goes_idle() {
    let s = SimStorage::new();
    let interval = Duration::from_millis(20);
    let (wal, _) = open(
        &s,
        WalOptions {
            durability: Durability::Interval(interval),
            ..options()
        },
    )
    .unwrap();
    wal.append(&[enqueue(1, b"one")]).unwrap();
    wal.wait_written().unwrap(); // written, not yet synced
    s.fail_write(1);
    wal.append(&[enqueue(2, b"two")]).unwrap();
    let _ = wal.wait_written(); // the write fails: poisoned
    assert!(wal.is_poisoned());
    let rounds = wal.rounds_started();
    // Several sync deadlines go by: none may start a round.
    std::thread::sleep(5 * interval);
    assert_eq!(wal.rounds_started(), rounds);
}

/// Lost wake-ups: Sync callers, explicit syncs and compactions, small
/// segments (rotations and automatic compactions mid-round), slow syncs.
/// Every call must return; the final state must hold every message.
#[test]
fn sync_callers_syncs_and_compactions_all_return() {
    let s = SimStorage::new();
    s.sync_delay(Duration::from_micros(200));
    let (wal, _) = open(
        &s,
        WalOptions {
            segment_size: 2048,
            ..options()
        },
    )
    .unwrap();
    let threads = 5u64;
    let per_thread = 150u64;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (wal, done_tx) = (&wal, done_tx.clone());
            scope.spawn(move || {
                for i in 0..per_thread {
                    let id = t * 1000 + i + 1;
                    let payload = vec![i as u8; 30 + (i as usize % 50)];
                    wal.append_commit(&[enqueue(id, &payload)]).unwrap();
                    if i % 17 == 0 {
                        wal.sync().unwrap();
                    }
                    if t == 0 && i % 25 == 0 {
                        wal.compact().unwrap();
                    }
                }
                done_tx.send(()).unwrap();
            });
        }
        drop(done_tx);
        for _ in 0..threads {
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("a caller never returned (lost wake-up?)");
        }
    });
    wal.close().unwrap();
    let (_, recovered) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(recovered.messages.len() as u64, threads * per_thread);
}

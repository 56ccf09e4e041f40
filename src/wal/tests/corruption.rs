//! Truncation at every offset and every bit flip of the last frames.

use super::*;

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
    eprintln!("truncation cases: {cases:?}");
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
    eprintln!("bit flips (torn, corrupted, salvaged): {cases:?}");
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

/// Found by the `recovery` fuzz target. Last file: frames A B C V, where
/// V was written after a sync that covered A and B (not C); A and C are
/// damaged. Under salvage, V vouches that A was synced, so A is skipped
/// and B replayed. C has no voucher, and cutting it off as a torn tail
/// would cut V too: if the open then stopped before its new segment (a
/// power cut), the next open would find A unvouched, call it a torn tail
/// and lose B. C is skipped instead, and both opens agree.
#[test]
fn salvage_keeps_the_frame_that_vouched_for_a_skipped_region() {
    use super::super::format::{encode_frame, Header, CODEC_BINCODE2, KIND_SEGMENT};
    let enqueue = |id: u64| {
        body(&[Record::Enqueue {
            id,
            enqueued_at: 1,
            visible_at: 1,
            key: None,
            payload: b"p",
        }])
    };
    let header = Header {
        kind: KIND_SEGMENT,
        codec: CODEC_BINCODE2,
        fingerprint: FINGERPRINT,
        seq: 1,
        salt: 9,
        max_frame: 1 << 20,
        first: 0,
    };
    let mut file = header.encode().to_vec();
    let mut offsets = Vec::new();
    for id in 1..=3 {
        offsets.push(file.len());
        encode_frame(&mut file, 9, HEADER_LEN, &enqueue(id));
    }
    let synced = offsets[2] as u64; // A and B synced, C not
    encode_frame(&mut file, 9, synced, &enqueue(4));
    file[offsets[0] + 20] ^= 1; // A
    file[offsets[2] + 20] ^= 1; // C
    let salvage = WalOptions {
        salvage: true,
        ..options()
    };
    let ids = |r: &Recovered| r.messages.iter().map(|m| m.id).collect::<Vec<_>>();

    let s = SimStorage::new();
    s.create(&file_name(1)).unwrap().write_all(&file).unwrap();
    s.sync_file(&file_name(1)).unwrap();
    s.sync_dir().unwrap();
    let (wal, recovered) = open(&s.snapshot(), salvage.clone()).unwrap();
    drop(wal);
    assert_eq!(ids(&recovered), vec![2, 4]);
    assert_eq!(recovered.report.torn_bytes, 0);
    assert_eq!(recovered.report.salvaged.len(), 2);

    // The power goes right after the repair, before the new segment.
    s.cut_power_after(1);
    assert!(open(&s, salvage.clone()).is_err());
    let (_, again) = open(&s.crash(Torn::Lost), salvage).unwrap();
    assert_eq!(ids(&again), vec![2, 4]);
}

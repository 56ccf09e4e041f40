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

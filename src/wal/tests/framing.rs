//! The writer puts the appends of one round into shared frames: recovery
//! sees them whole, never split, and a cut anywhere yields a prefix.

use super::*;
use crate::wal::writer::{write_one_round, MERGE_BYTES};

/// Writes `frames` (one append each) as one round into segment 1.
fn one_round(frames: &[Vec<u8>], options: &WalOptions) -> SimStorage {
    let s = SimStorage::new();
    write_one_round(Arc::new(s.clone()), options, 1, frames).unwrap();
    s
}

/// Bodies of the frames of every log file, in order.
fn frame_bodies(s: &SimStorage) -> Vec<Vec<u8>> {
    let mut names: Vec<String> = s
        .names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
        .collect();
    names.sort();
    let mut bodies = Vec::new();
    for name in names {
        let bytes = s.read(&name).unwrap();
        let header = super::super::format::Header::decode("f", &bytes).unwrap();
        let mut reader = FrameReader::new(
            Box::new(std::io::Cursor::new(bytes.clone())),
            &header,
            bytes.len() as u64,
        )
        .unwrap();
        loop {
            match reader.next().unwrap() {
                Next::Frame { body, .. } => bodies.push(body.to_vec()),
                Next::End => break,
                Next::Bad { .. } => panic!("bad frame in a clean file"),
            }
        }
    }
    bodies
}

/// Whether `bodies` are `appends` grouped without splitting any.
fn groups_whole_appends(bodies: &[Vec<u8>], appends: &[Vec<u8>]) -> bool {
    let mut appends = appends.iter();
    bodies.iter().all(|body| {
        let mut rest = &body[..];
        while !rest.is_empty() {
            match appends.next() {
                Some(a) if rest.starts_with(a) => rest = &rest[a.len()..],
                _ => return false,
            }
        }
        true
    }) && appends.next().is_none()
}

#[test]
fn a_round_of_appends_is_one_frame_and_recovers_whole() {
    let frames = workload(200, 21);
    let states = prefix_states(&frames);
    let s = one_round(&frames, &options());
    let bodies = frame_bodies(&s);
    assert_eq!(bodies.len(), 1);
    assert!(groups_whole_appends(&bodies, &frames));
    let (_, recovered) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
    assert_eq!(recovered.report.frames, 1);
}

#[test]
fn frames_close_at_the_max_frame_and_never_split_an_append() {
    let frames = workload(200, 22);
    let states = prefix_states(&frames);
    let max = 256;
    assert!(frames.iter().all(|f| f.len() <= max));
    let options = WalOptions {
        max_frame: max as u32,
        ..options()
    };
    let s = one_round(&frames, &options);
    let bodies = frame_bodies(&s);
    assert!(bodies.len() > 10 && bodies.len() < frames.len() / 2);
    assert!(bodies.iter().all(|b| b.len() <= max));
    assert!(groups_whole_appends(&bodies, &frames));
    let (_, recovered) = open(&s.crash(Torn::Lost), options).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
}

#[test]
fn an_append_larger_than_the_merge_limit_is_a_frame_of_its_own() {
    let big = body(&[Record::Enqueue {
        id: 1,
        enqueued_at: 5,
        visible_at: 5,
        key: None,
        payload: &vec![7; MERGE_BYTES + MERGE_BYTES / 2],
    }]);
    let small = |id| body(&[Record::Ack { id }]);
    let frames = vec![small(9), big.clone(), small(10), small(11), big, small(12)];
    let options = WalOptions {
        segment_size: 64 << 20,
        ..options()
    };
    let s = one_round(&frames, &options);
    let bodies = frame_bodies(&s);
    let lens: Vec<usize> = bodies.iter().map(Vec::len).collect();
    assert_eq!(lens.len(), 5, "{lens:?}");
    assert_eq!(lens[2], 2 * small(10).len(), "{lens:?}");
    assert!(groups_whole_appends(&bodies, &frames));
}

#[test]
fn a_round_that_fills_segments_rotates_between_appends() {
    let frames = workload(300, 23);
    let states = prefix_states(&frames);
    let largest = frames.iter().map(Vec::len).max().unwrap() as u64;
    let options = WalOptions {
        segment_size: 1024,
        auto_compact: false,
        ..options()
    };
    let s = one_round(&frames, &options);
    let files: Vec<String> = s
        .names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
        .collect();
    assert!(files.len() > 5, "{files:?}");
    for name in &files {
        let len = s.read(name).unwrap().len() as u64;
        assert!(len < 1024 + largest + 16, "{name}: {len} bytes");
    }
    assert!(groups_whole_appends(&frame_bodies(&s), &frames));
    let (_, recovered) = open(&s.crash(Torn::Lost), options).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
}

#[test]
fn a_cut_anywhere_in_shared_frames_recovers_a_prefix() {
    let frames = workload(60, 24);
    let states = prefix_states(&frames);
    let options = WalOptions {
        max_frame: 512,
        ..options()
    };
    let s = one_round(&frames, &options);
    let name = last_log_file(&s);
    let bytes = s.read(&name).unwrap();
    let offsets = frame_offsets(&bytes);
    // The frames' ends, as prefixes of the appends.
    let bodies = frame_bodies(&s);
    let mut whole_appends = vec![0];
    let mut appended = frames.iter().map(Vec::len);
    for body in &bodies {
        let mut len = 0;
        let mut count = *whole_appends.last().unwrap();
        while len < body.len() {
            len += appended.next().unwrap();
            count += 1;
        }
        whole_appends.push(count);
    }
    let from = offsets[offsets.len() - 4] as usize;
    for cut in from..=bytes.len() {
        let t = s.snapshot();
        t.overwrite(&name, bytes[..cut].to_vec());
        let (_, recovered) = open(&t, options.clone()).unwrap();
        let whole = offsets.iter().filter(|&&o| o <= cut as u64).count() - 1;
        assert_eq!(
            state_of(&recovered),
            states[whole_appends[whole]],
            "cut at {cut}"
        );
        assert_eq!(recovered.report.torn_bytes, cut as u64 - offsets[whole]);
    }
}

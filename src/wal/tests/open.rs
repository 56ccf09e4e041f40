//! Opening: the lock, the type fingerprint, versions, real files,
//! durability levels and group commit.

use super::*;
use std::io::Read;

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    assert!(matches!(open(&s, options()), Err(WalError::Locked { .. })));
    drop(wal);
    assert!(open(&s, options()).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let fs = || Arc::new(FsStorage::new(dir.path()).unwrap()) as Arc<dyn Storage>;
    let (wal, _) = Wal::open(fs(), options()).unwrap();
    let err = Wal::open(fs(), options()).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }));
    assert!(err.to_string().contains("already open"), "{err}");
    drop(wal);
    assert!(Wal::open(fs(), options()).is_ok());
}

#[test]
fn another_message_type_or_a_newer_format_is_refused() {
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    append(&wal, &workload(1, 1)[0]).unwrap();
    wal.close().unwrap();
    let other = WalOptions::new(FINGERPRINT + 1);
    match open(&s, other) {
        Err(WalError::WrongType {
            expected, found, ..
        }) => {
            assert_eq!((expected, found), (FINGERPRINT + 1, FINGERPRINT));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let name = last_log_file(&s);
    let mut bytes = s.read(&name).unwrap();
    bytes[8] = 5; // format version 5
    s.overwrite(&name, bytes);
    assert!(matches!(
        open(&s, options()),
        Err(WalError::UnsupportedVersion {
            found: 5,
            supported: 4,
            ..
        })
    ));
}

#[test]
fn version_1_to_3_directories_open_and_the_files_added_are_version_4() {
    for version in [1u32, 2, 3] {
        let s = SimStorage::new();
        let frames = workload(300, 17);
        let states = prefix_states(&frames);
        let (wal, _) = open(&s, options()).unwrap();
        for frame in &frames {
            append(&wal, frame).unwrap();
        }
        wal.close().unwrap();
        // As that version wrote them: the same layout, the version field
        // changed.
        let old: Vec<String> = s
            .names()
            .into_iter()
            .filter(|n| parse_file_name(n).is_some())
            .collect();
        for name in &old {
            let mut bytes = s.read(name).unwrap();
            bytes[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = crc32fast::hash(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
            s.overwrite(name, bytes);
        }
        let (wal, recovered) = open(&s, options()).unwrap();
        assert_eq!(state_of(&recovered), states[frames.len()], "v{version}");
        assert!(!recovered.paused);
        wal.close().unwrap();
        let new = last_log_file(&s);
        assert!(!old.contains(&new));
        let bytes = s.read(&new).unwrap();
        assert_eq!(bytes[8..12], 4u32.to_le_bytes());
    }
}

/// A version 3 directory holds at most one base file, which replaced
/// every file before it (its header's bytes 40-48, now `first`, are
/// zero), and perhaps files it superseded that a crash left behind.
/// Version 4 reads it the same way, and compacts it into version 4 base
/// files of at most a segment each.
#[test]
fn a_version_3_base_file_replaces_every_file_before_it() {
    let frames = workload(400, 23);
    let expected = prefix_states(&frames).pop().unwrap();
    let manual = WalOptions {
        auto_compact: false,
        ..options()
    };
    let s = SimStorage::new();
    let half = frames.len() / 2;
    for part in [&frames[..half], &frames[half..]] {
        let (wal, _) = open(&s, manual.clone()).unwrap();
        for f in part {
            append(&wal, f).unwrap();
        }
        wal.close().unwrap();
    }
    let first = s
        .names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
        .min()
        .unwrap();
    let superseded = s.read(&first).unwrap();
    // One window (1 MiB segments): one base file replacing both segments.
    let (wal, _) = open(&s, manual.clone()).unwrap();
    let report = wal.compact().unwrap();
    assert_eq!(report.files_written, 1, "{report:?}");
    wal.close().unwrap();
    // As version 3 left it after a crash before its removals: the base
    // (first = 0) and a segment it replaced.
    s.create(&first).unwrap().write_all(&superseded).unwrap();
    for name in s
        .names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
    {
        let mut bytes = s.read(&name).unwrap();
        assert_eq!(bytes[40..48], [0; 8], "{name}");
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        s.overwrite(&name, bytes);
    }
    let (wal, recovered) = open(&s, manual.clone()).unwrap();
    assert_eq!(state_of(&recovered), expected);
    assert_eq!(recovered.report.obsolete_files_removed, 1);
    assert!(!s.names().contains(&first));
    wal.close().unwrap();
    // With half its messages acknowledged, a compaction with small
    // segments rewrites it as a version 4 base file (a window of its own)
    // and what follows as others, each replacing what came before it.
    let small = WalOptions {
        segment_size: 2048,
        ..manual
    };
    let mut frames = frames;
    for m in expected.0.iter().step_by(2) {
        frames.push(body(&[Record::Ack { id: m.id }]));
    }
    let expected = prefix_states(&frames).pop().unwrap();
    let (wal, _) = open(&s, small.clone()).unwrap();
    for f in &frames[400..] {
        append(&wal, f).unwrap();
    }
    let report = wal.compact().unwrap();
    wal.close().unwrap();
    assert!(report.files_written >= 1, "{report:?}");
    assert!(report.bytes_out < report.bytes_in, "{report:?}");
    let (_, recovered) = open(&s, small).unwrap();
    assert_eq!(state_of(&recovered), expected);
    for name in s
        .names()
        .into_iter()
        .filter(|n| parse_file_name(n).is_some())
    {
        assert_eq!(s.read(&name).unwrap()[8..12], 4u32.to_le_bytes(), "{name}");
    }
}

#[test]
fn the_last_pause_record_wins_across_a_reopen_and_a_compaction() {
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    append(&wal, &body(&[Record::Pause { paused: true }])).unwrap();
    wal.close().unwrap();
    let (wal, recovered) = open(&s, options()).unwrap();
    assert!(recovered.paused);
    wal.compact().unwrap();
    wal.close().unwrap();
    let (wal, recovered) = open(&s, options()).unwrap();
    assert!(recovered.paused, "compaction keeps it");
    append(&wal, &body(&[Record::Pause { paused: false }])).unwrap();
    wal.close().unwrap();
    let (wal, recovered) = open(&s, options()).unwrap();
    assert!(!recovered.paused);
    wal.compact().unwrap();
    wal.close().unwrap();
    let (_wal, recovered) = open(&s, options()).unwrap();
    assert!(!recovered.paused, "after a resume and a compaction");
}

#[test]
fn limits_and_the_expired_reason_survive_a_reopen_and_a_compaction() {
    let s = SimStorage::new();
    let records = [
        Record::Enqueue {
            id: 1,
            enqueued_at: 10,
            visible_at: 10,
            key: None,
            payload: b"one",
        },
        Record::Limits {
            id: 1,
            max_receives: Some(2),
            expires_at: Some(99),
        },
        Record::Enqueue {
            id: 2,
            enqueued_at: 10,
            visible_at: 10,
            key: None,
            payload: b"two",
        },
        Record::Limits {
            id: 2,
            max_receives: None,
            expires_at: Some(50),
        },
        Record::DeadLetter {
            id: 2,
            at: 50,
            reason: ReasonRef::Expired,
            error: None,
        },
    ];
    let (wal, _) = open(&s, options()).unwrap();
    append(&wal, &body(&records)).unwrap();
    wal.close().unwrap();
    let expected = prefix_states(&[body(&records)]).pop().unwrap();
    let (wal, recovered) = open(&s, options()).unwrap();
    assert_eq!(state_of(&recovered), expected);
    let limits: Vec<_> = (recovered.messages.iter())
        .map(|m| (m.id, m.max_receives, m.expires_at))
        .collect();
    assert_eq!(limits, [(1, Some(2), Some(99)), (2, None, Some(50))]);
    wal.compact().unwrap();
    wal.close().unwrap();
    let (_wal, recovered) = open(&s, options()).unwrap();
    assert_eq!(state_of(&recovered), expected, "after compaction");
}

#[test]
fn priorities_and_groups_survive_a_reopen_and_a_compaction() {
    let s = SimStorage::new();
    let enqueue = |id| Record::Enqueue {
        id,
        enqueued_at: 10,
        visible_at: 10,
        key: None,
        payload: b"x",
    };
    let records = [
        enqueue(1),
        Record::Options {
            id: 1,
            max_receives: Some(4),
            expires_at: None,
            priority: 0,
            group: Some("customer-7"),
        },
        enqueue(2),
        Record::Options {
            id: 2,
            max_receives: None,
            expires_at: None,
            priority: 2,
            group: None,
        },
        enqueue(3),
    ];
    let (wal, _) = open(&s, options()).unwrap();
    append(&wal, &body(&records)).unwrap();
    wal.close().unwrap();
    let options_of = |recovered: &crate::wal::Recovered| -> Vec<_> {
        (recovered.messages.iter())
            .map(|m| (m.id, m.max_receives, m.priority, m.group.clone()))
            .collect()
    };
    let expected = vec![
        (1, Some(4), Some(0), Some("customer-7".to_owned())),
        (2, None, Some(2), None),
        (3, None, None, None),
    ];
    let (wal, recovered) = open(&s, options()).unwrap();
    assert_eq!(options_of(&recovered), expected);
    wal.compact().unwrap();
    wal.close().unwrap();
    let (_wal, recovered) = open(&s, options()).unwrap();
    assert_eq!(options_of(&recovered), expected, "after compaction");
}

#[test]
fn real_files_round_trip_with_owner_only_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let frames = workload(200, 31);
    let states = prefix_states(&frames);
    let storage = || Arc::new(FsStorage::new(dir.path()).unwrap()) as Arc<dyn Storage>;
    let (wal, _) = Wal::open(
        storage(),
        WalOptions {
            segment_size: 2048,
            ..options()
        },
    )
    .unwrap();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    wal.close().unwrap();
    let (wal, recovered) = Wal::open(storage(), options()).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
    drop(wal);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mut head = [0u8; 8];
        if entry.file_name() != "LOCK" {
            std::fs::File::open(entry.path())
                .unwrap()
                .read_exact(&mut head)
                .unwrap();
            assert_eq!(&head, b"\x89SPOOL\r\n");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                entry.metadata().unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}

#[test]
fn group_commit_shares_one_sync_among_concurrent_callers() {
    let s = SimStorage::new();
    s.sync_delay(Duration::from_millis(2));
    let (wal, _) = open(&s, options()).unwrap();
    let syncs_before = s.syncs();
    let threads = 8;
    let per_thread = 40u64;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let wal = &wal;
            scope.spawn(move || {
                for i in 0..per_thread {
                    let id = t * per_thread + i + 1;
                    let payload = id.to_le_bytes();
                    wal.append_commit(&[Record::Enqueue {
                        id,
                        enqueued_at: 1,
                        visible_at: 1,
                        key: None,
                        payload: &payload,
                    }])
                    .unwrap();
                }
            });
        }
    });
    let appends = threads * per_thread;
    let syncs = s.syncs() - syncs_before;
    assert!(syncs * 2 < appends, "{syncs} syncs for {appends} appends");
    drop(wal);
    let (_, recovered) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(recovered.messages.len() as u64, appends);
    assert!(recovered
        .messages
        .iter()
        .all(|m| m.payload == m.id.to_le_bytes()));
}

#[test]
fn interval_and_none_hand_frames_to_the_os_and_sync_later() {
    let frames = workload(10, 41);
    let states = prefix_states(&frames);
    // Interval: in the OS at once, on disk within the interval.
    let s = SimStorage::new();
    let (wal, _) = open(
        &s,
        WalOptions {
            durability: Durability::Interval(Duration::from_millis(20)),
            ..options()
        },
    )
    .unwrap();
    let syncs = s.syncs();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    wal.wait_written().unwrap(); // appends return at once; the writer follows
    let (_, in_os) = open(&s.snapshot(), options()).unwrap();
    assert_eq!(state_of(&in_os), states[frames.len()]);
    assert!(s.syncs() - syncs < frames.len() as u64);
    // Synced by the writer on its own within the interval (polled, so a
    // loaded machine does not make the test flaky).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, on_disk) = open(&s.crash(Torn::Lost), options()).unwrap();
        if state_of(&on_disk) == states[frames.len()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not synced within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(wal);

    // None: in the OS at once; on disk after an explicit sync (or close).
    let s = SimStorage::new();
    let (wal, _) = open(
        &s,
        WalOptions {
            durability: Durability::None,
            ..options()
        },
    )
    .unwrap();
    let syncs = s.syncs();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    assert_eq!(s.syncs(), syncs, "None never syncs on its own");
    let (_, lost) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(state_of(&lost), states[0]);
    wal.sync().unwrap();
    let (_, synced) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(state_of(&synced), states[frames.len()]);
}

#[test]
fn a_cut_short_segment_header_is_removed_but_garbage_elsewhere_is_corruption() {
    let s = SimStorage::new();
    let (wal, _) = open(&s, options()).unwrap();
    append(&wal, &workload(1, 1)[0]).unwrap();
    wal.close().unwrap();
    // A crash while creating the next segment left 30 bytes of it.
    let mut f = s.create(&file_name(99)).unwrap();
    f.write_all(&[0xAB; 30]).unwrap();
    let (wal, recovered) = open(&s, options()).unwrap();
    assert_eq!(recovered.report.torn_files_removed, 1);
    assert_eq!(recovered.messages.len(), 1);
    drop(wal);
    // The same garbage before the last file is not a torn tail.
    let mut f = s.create(&file_name(50)).unwrap();
    f.write_all(&[0xAB; 30]).unwrap();
    assert!(matches!(
        open(&s, options()),
        Err(WalError::Corrupted { offset: 0, .. })
    ));
}

#[test]
fn concurrent_syncs_under_interval_all_return_with_their_records_on_disk() {
    // The writer's rounds under `Interval` write without syncing unless a
    // caller asked for it before the round began: a caller whose round
    // ends unsynced must wait for the next one, and be woken by it.
    let s = SimStorage::new();
    s.sync_delay(Duration::from_millis(1));
    let (wal, _) = open(
        &s,
        WalOptions {
            durability: Durability::Interval(Duration::from_secs(3600)),
            ..options()
        },
    )
    .unwrap();
    let threads = 6;
    let per_thread = 30u64;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (wal, s) = (&wal, &s);
            scope.spawn(move || {
                for i in 0..per_thread {
                    let id = t * per_thread + i + 1;
                    let payload = id.to_le_bytes();
                    wal.append_commit(&[Record::Enqueue {
                        id,
                        enqueued_at: 1,
                        visible_at: 1,
                        key: None,
                        payload: &payload,
                    }])
                    .unwrap();
                    if i % 3 == t % 3 {
                        wal.sync().unwrap();
                        let (_, on_disk) = open(&s.crash(Torn::Lost), options()).unwrap();
                        assert!(on_disk.messages.iter().any(|m| m.id == id));
                    }
                }
            });
        }
    });
    wal.sync().unwrap();
    let (_, recovered) = open(&s.crash(Torn::Lost), options()).unwrap();
    assert_eq!(recovered.messages.len() as u64, threads * per_thread);
}

/// Found while writing the `recovery` fuzz target: a file numbered
/// `u64::MAX` left no name for the next segment, and the open failed with
/// an I/O error (the name exists) instead of saying what is wrong.
#[test]
fn a_file_numbered_u64_max_is_corruption_not_an_io_error() {
    use super::super::format::{Header, CODEC_BINCODE2, KIND_SEGMENT};
    let header = Header {
        kind: KIND_SEGMENT,
        codec: CODEC_BINCODE2,
        fingerprint: FINGERPRINT,
        seq: u64::MAX,
        salt: 1,
        max_frame: 1 << 20,
        first: 0,
    };
    let s = SimStorage::new();
    let name = file_name(u64::MAX);
    s.create(&name)
        .unwrap()
        .write_all(&header.encode())
        .unwrap();
    match open(&s, options()) {
        Err(WalError::Corrupted { file, offset, .. }) => {
            assert_eq!((file, offset), (format!("sim:{name}"), 24));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

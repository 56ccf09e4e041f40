//! Failed writes, failed syncs and a full disk: the writer poisons, no
//! false acknowledgement, and a reopen restores the last durable state.

use super::*;

/// Appends `frames` until one fails; checks that every later append fails
/// too. Returns how many were acknowledged and the first error.
fn run_until_failure(wal: &Wal, frames: &[Vec<u8>]) -> (usize, Option<WalError>) {
    for (i, f) in frames.iter().enumerate() {
        if let Err(e) = append(wal, f) {
            for later in &frames[i..] {
                assert!(matches!(append(wal, later), Err(WalError::Poisoned(_))));
            }
            assert!(matches!(wal.sync(), Err(WalError::Poisoned(_))));
            return (i, Some(e));
        }
    }
    (frames.len(), None)
}

fn root(e: &WalError) -> &WalError {
    match e {
        WalError::Poisoned(inner) => root(inner),
        other => other,
    }
}

#[test]
fn a_failed_write_poisons_and_a_reopen_keeps_the_acknowledged_prefix() {
    let frames = workload(20, 21);
    let states = prefix_states(&frames);
    for n in 1..=8 {
        let s = SimStorage::new();
        let (wal, _) = open(&s, options()).unwrap();
        s.fail_write(n);
        let (acked, error) = run_until_failure(&wal, &frames);
        assert_eq!(acked, n as usize - 1);
        assert!(matches!(
            root(error.as_ref().unwrap()),
            WalError::Io {
                operation: "write",
                ..
            }
        ));
        drop(wal);
        // Reopen as it is (the process lived on) and after a power loss:
        // the half-written frame is a torn tail, nothing more is lost.
        for after in [
            s.snapshot(),
            s.crash(Torn::Lost),
            s.crash(Torn::Prefix(1 << 20)),
        ] {
            let (wal, recovered) = open(&after, options()).unwrap();
            assert_eq!(state_of(&recovered), states[acked], "write {n}");
            append(&wal, &frames[acked]).unwrap(); // and it works again
        }
    }
}

#[test]
fn a_failed_sync_poisons_and_acknowledges_nothing_unsynced() {
    let frames = workload(20, 22);
    let states = prefix_states(&frames);
    for n in 1..=8 {
        let s = SimStorage::new();
        let (wal, _) = open(&s, options()).unwrap();
        s.fail_sync(n);
        let (acked, error) = run_until_failure(&wal, &frames);
        assert_eq!(acked, n as usize - 1);
        assert!(matches!(
            root(error.as_ref().unwrap()),
            WalError::Io {
                operation: "sync",
                ..
            }
        ));
        drop(wal);
        // The written-but-unsynced frame may survive in the page cache,
        // never as an acknowledged one; after a power loss it is gone.
        let (_, recovered) = open(&s.snapshot(), options()).unwrap();
        assert!(prefix_of(&recovered, &states, acked).is_some_and(|k| k <= acked + 1));
        let (_, recovered) = open(&s.crash(Torn::Lost), options()).unwrap();
        assert_eq!(state_of(&recovered), states[acked]);
    }
}

#[test]
fn a_full_disk_is_an_error_not_corruption() {
    let frames = workload(30, 23);
    let states = prefix_states(&frames);
    let mut full = 0;
    for room in [0u64, 1, 15, 16, 17, 100, 333, 1000] {
        let s = SimStorage::new();
        let (wal, _) = open(&s, options()).unwrap();
        s.limit_space(room);
        let (acked, error) = run_until_failure(&wal, &frames);
        assert!(acked < frames.len(), "room {room}");
        assert!(
            matches!(root(error.as_ref().unwrap()), WalError::DiskFull { .. }),
            "room {room}: {error:?}"
        );
        drop(wal);
        // Still full: opening fails with DiskFull (it needs room for a new
        // segment), or succeeds if truncating the torn tail freed enough;
        // it never reports corruption.
        match open(&s, options()) {
            Err(WalError::DiskFull { .. }) => full += 1,
            Ok((_, recovered)) => assert_eq!(state_of(&recovered), states[acked], "room {room}"),
            Err(other) => panic!("room {room}: {other}"),
        }
        // With room again, the partial frame is a torn tail.
        let (_, recovered) = open(&s.snapshot(), options()).unwrap();
        assert_eq!(state_of(&recovered), states[acked], "room {room}");
    }
    assert!(full > 0);
}

#[test]
fn a_too_large_frame_is_refused_without_poisoning() {
    let s = SimStorage::new();
    let (wal, _) = open(
        &s,
        WalOptions {
            max_frame: 100,
            ..options()
        },
    )
    .unwrap();
    let big = vec![7u8; 200];
    let record = Record::Enqueue {
        id: 1,
        enqueued_at: 1,
        visible_at: 1,
        key: None,
        payload: &big,
    };
    assert!(matches!(
        wal.append(&[record]),
        Err(WalError::TooLarge { max: 100, .. })
    ));
    wal.append_commit(&[Record::Ack { id: 1 }]).unwrap();
}

//! Power cuts at every storage operation.

use super::*;

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
    eprintln!("power-cut cases: {cases:?}");
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
fn a_process_crash_then_a_power_loss_after_reopening_loses_nothing_replayed() {
    // Under `None`, frames sit unsynced in the page cache. The process
    // dies; a new one recovers them (they are valid) and starts a new
    // segment; then the power goes. What the second process recovered
    // must not turn into corruption or vanish.
    let frames = workload(30, 13);
    let states = prefix_states(&frames);
    let s = SimStorage::new();
    let (wal, _) = open(
        &s,
        WalOptions {
            durability: Durability::None,
            ..options()
        },
    )
    .unwrap();
    for f in &frames {
        append(&wal, f).unwrap();
    }
    wal.wait_written().unwrap(); // appends return at once; the writer follows
    let after_process_crash = s.fork();
    drop(wal);
    let (wal, recovered) = open(&after_process_crash, options()).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
    drop(wal);
    let (_, recovered) = open(&after_process_crash.crash(Torn::Lost), options()).unwrap();
    assert_eq!(state_of(&recovered), states[frames.len()]);
}

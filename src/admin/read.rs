//! The commands that only read: `stats`, `verify`, `dump`, and
//! `dead-letters list` and `show`. Each reads a
//! [`Snapshot`](crate::wal::Snapshot): no lock taken, nothing written.

use super::error::AdminError;
use super::payload::Payloads;
use crate::clock::{self, Nanos};
use crate::wal::{read_snapshot, FsStorage, RecoveredMessage, Snapshot, WalError};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// The state of a live message, as the snapshot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    InFlight,
    Delayed,
    DeadLetter,
}

impl State {
    fn of(snapshot: &Snapshot, m: &RecoveredMessage, now: Nanos) -> State {
        if m.dead.is_some() {
            State::DeadLetter
        } else if snapshot.in_flight.contains(&m.id) {
            State::InFlight
        } else if m.visible_at > now {
            State::Delayed
        } else {
            State::Ready
        }
    }

    /// The name `dump` writes.
    fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::InFlight => "in_flight",
            State::Delayed => "delayed",
            State::DeadLetter => "dead_letter",
        }
    }
}

/// Reads `dir` without changing it. A directory that does not exist is an
/// error (opening a queue would create it; looking at one must not), and
/// so is one without a write-ahead file.
pub(crate) fn snapshot(dir: &Path, payloads: &Payloads) -> Result<Snapshot, AdminError> {
    if !dir.is_dir() {
        return Err(AdminError::NoDirectory(dir.to_path_buf()));
    }
    let storage =
        FsStorage::new(dir).map_err(|e| WalError::io("open", dir.display().to_string(), e))?;
    let snapshot = read_snapshot(&storage, payloads.fingerprint)?;
    if snapshot.fingerprint.is_none() {
        return Err(AdminError::NotAQueue(dir.to_path_buf()));
    }
    Ok(snapshot)
}

fn millis(nanos: Nanos) -> u64 {
    nanos / 1_000_000
}

/// `spool stats DIR`.
pub(crate) fn stats(
    dir: &Path,
    payloads: &Payloads,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let snapshot = snapshot(dir, payloads)?;
    let now = clock::to_nanos(std::time::SystemTime::now());
    let mut counts = [0usize; 4]; // ready, in flight, delayed, dead
    let mut oldest_ready: Option<Nanos> = None;
    let mut payload_bytes = 0u64;
    for m in &snapshot.messages {
        payload_bytes += m.payload.len() as u64;
        let state = State::of(&snapshot, m, now);
        counts[state as usize] += 1;
        if state == State::Ready {
            let since = m.visible_at.max(m.enqueued_at);
            oldest_ready = Some(oldest_ready.map_or(since, |o| o.min(since)));
        }
    }
    let age_ms = oldest_ready.map(|since| millis(now.saturating_sub(since)));
    let segments = snapshot.files.iter().filter(|f| !f.base).count();
    let base = snapshot.files.iter().filter(|f| f.base).count();
    let stats = json!({
        "ready": counts[0],
        "in_flight": counts[1],
        "delayed": counts[2],
        "dead_letters": counts[3],
        "live": snapshot.messages.len(),
        "oldest_ready_age_ms": age_ms,
        "payload_bytes": payload_bytes,
        "dedup_keys": snapshot.dedup_keys,
        "next_id": snapshot.next_id,
        "disk_bytes": snapshot.disk_bytes,
        "segments": segments,
        "base_files": base,
        "torn_tail": snapshot.torn.as_ref().map(|(file, offset)| json!({"file": file, "offset": offset})),
    });
    if as_json {
        writeln!(out, "{stats}")?;
        return Ok(());
    }
    if let Value::Object(fields) = stats {
        for (name, value) in fields {
            let text = match value {
                Value::Null => "none".to_string(),
                Value::Object(torn) => format!("{} at offset {}", torn["file"], torn["offset"]),
                other => other.to_string(),
            };
            writeln!(out, "{name}: {text}")?;
        }
    }
    Ok(())
}

/// `spool verify DIR`: the exit status (0 clean, 1 torn tail), or the
/// corruption as an error (exit 2).
pub(crate) fn verify(
    dir: &Path,
    payloads: &Payloads,
    out: &mut dyn Write,
) -> Result<u8, AdminError> {
    let snapshot = snapshot(dir, payloads)?;
    let files = snapshot.files.len();
    let (frames, records) = (snapshot.frames, snapshot.records);
    writeln!(
        out,
        "{files} files, {frames} frames, {records} records verified"
    )?;
    for name in &snapshot.leftovers {
        writeln!(
            out,
            "superseded or unfinished file {name}: a reopen removes it"
        )?;
    }
    match &snapshot.torn {
        Some((file, offset)) => {
            writeln!(
                out,
                "torn tail: {file} at offset {offset}: a reopen truncates it (if a process has the queue open, it may be a write in progress)"
            )?;
            Ok(1)
        }
        None => {
            writeln!(out, "clean")?;
            Ok(0)
        }
    }
}

/// One message as a JSON object.
fn describe(
    snapshot: &Snapshot,
    m: &RecoveredMessage,
    now: Nanos,
    payloads: &Payloads,
    with_errors: bool,
) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), m.id.into());
    object.insert("state".into(), State::of(snapshot, m, now).name().into());
    object.insert("receive_count".into(), m.receive_count.into());
    object.insert("key".into(), m.key.as_ref().map(|k| k.key.clone()).into());
    object.insert("enqueued_at_ms".into(), millis(m.enqueued_at).into());
    object.insert("visible_at_ms".into(), millis(m.visible_at).into());
    // Only for messages sent with them (0 is the highest priority).
    if let Some(level) = m.priority {
        object.insert("priority".into(), level.into());
    }
    if let Some(group) = &m.group {
        object.insert("group".into(), group.clone().into());
    }
    if let Some(dead) = &m.dead {
        object.insert("dead_lettered_at_ms".into(), millis(dead.at).into());
        object.insert("reason".into(), dead.reason.to_string().into());
    }
    if with_errors {
        object.insert("errors".into(), m.errors.clone().into());
    }
    payloads.describe(&m.payload, &mut object);
    Value::Object(object)
}

/// `spool dump DIR`: every live message, one JSON object a line, in id order.
pub(crate) fn dump(dir: &Path, payloads: &Payloads, out: &mut dyn Write) -> Result<(), AdminError> {
    let snapshot = snapshot(dir, payloads)?;
    let now = clock::to_nanos(std::time::SystemTime::now());
    for m in &snapshot.messages {
        writeln!(out, "{}", describe(&snapshot, m, now, payloads, false))?;
    }
    Ok(())
}

/// `spool dead-letters DIR list`: every dead letter, a JSON line each.
pub(crate) fn list_dead(
    dir: &Path,
    payloads: &Payloads,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let snapshot = snapshot(dir, payloads)?;
    let now = clock::to_nanos(std::time::SystemTime::now());
    for m in snapshot.messages.iter().filter(|m| m.dead.is_some()) {
        writeln!(out, "{}", describe(&snapshot, m, now, payloads, false))?;
    }
    Ok(())
}

/// `spool dead-letters DIR show ID`: one dead letter with the error of
/// each failed attempt.
pub(crate) fn show_dead(
    dir: &Path,
    payloads: &Payloads,
    id: u64,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let snapshot = snapshot(dir, payloads)?;
    let now = clock::to_nanos(std::time::SystemTime::now());
    let found = snapshot
        .messages
        .iter()
        .find(|m| m.id == id && m.dead.is_some())
        .ok_or(AdminError::NotADeadLetter(id))?;
    writeln!(out, "{}", describe(&snapshot, found, now, payloads, true))?;
    Ok(())
}

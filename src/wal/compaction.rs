//! Compaction: the sealed files rewritten as base files of at most about
//! a segment each, one at a time (FORMAT.md, section 8).
//!
//! A first replay of every sealed file gives the **goal**: which messages
//! are live at the end, which idempotency keys are still remembered, and
//! the next id. A second replay goes through the files again, oldest
//! first, and gathers them into **windows** of consecutive files whose
//! rewrite stays within the segment size. Each window is written as one
//! base file, `wal-E.log.tmp` (E: the window's last file), synced, renamed
//! over `wal-E.log`, and the directory synced; its header says it replaces
//! the files from the window's first on (`first`), so the others are
//! obsolete at once, and removed.
//!
//! The second replay is skipped when every message live at the end was
//! touched by one file only (a backlog that waits, with acks and cancels
//! here and there): the state of such a message at the end of any window
//! holding its file is its state at the end of the log, which the first
//! replay left, so the windows are gathered from what the first replay
//! noted each file touched, over its state. The base files come out the
//! same either way (tests compare them record for record).
//!
//! What a window's base file holds is the state **as of the window's end**
//! of what the window's files recorded, less what is gone by the end of
//! the log:
//!
//! - a message created in the window and live at the end: its `ENQUEUE`
//!   (if nothing else happened to it by then) or `MESSAGE`, and `LIMITS`;
//! - a message created before the window, live at the end, and touched
//!   in it: an `UPDATE` (or a `MESSAGE`, if a redrive gave it a payload
//!   in the window);
//! - the remembered keys first noted in the window, `NEXT_ID`, and `PAUSE`
//!   if the window recorded one;
//! - nothing of a message that is gone by the end of the log.
//!
//! Why a crash between two windows changes nothing: the files after the
//! last rewritten window are as they were, and replaying them on top of
//! the base files gives what they gave on top of the files replaced,
//! since those base files hold the same state as of the same point for
//! every message that is still live. Their records about messages that
//! are gone name ids the base files no longer hold, which replay ignores
//! (FORMAT.md, section 5). A state "as of the end" (rather than as of
//! the end of the log) is what lets the later files' records apply on
//! top without repeating anything, such as an error text.
//!
//! Free disk: the base file being written, at most about a segment (a
//! window closes before its rewrite would pass the segment size), beside
//! the files it replaces, which are removed right after; a base file
//! holds no more than the files it replaces. One larger file (a base file
//! written before format version 4, as one file of all live data) is a
//! window of its own and needs its own size once.
//!
//! A file of at least half a segment is a window of its own, and when
//! rewriting it would lose nothing (every message it touches is still
//! live) and shrink it by less than a tenth, it is kept as it is (a base
//! file, or a segment: replaying it gives what its rewrite would): a
//! backlog that only waits is not rewritten at each compaction.
//!
//! Memory: the live messages without their payloads (56 bytes each, see
//! `live`), in one table that the second replay, if any, reuses (cleared:
//! allocating it afresh faulted in and zeroed every page of it again, then
//! unmapped it), the live ids of the goal when there is a second replay
//! (8 bytes each), the remembered keys, the ids a window touches, and the
//! ids the first replay notes for each file (8 bytes each, at most one
//! per live message and [`NOTED_SLACK`] more; past that they are dropped
//! and the second replay runs). The payloads stay in the sealed files:
//! the replay notes where each live one lies (`payload`), and a window's
//! writing copies it from there.
//!
//! CPU: the compactor's share of the two cores is what the writer waits
//! behind (see `compactor`). Counted with callgrind (user instructions)
//! over two compactions of a queue of 200,000 live 64-byte messages with
//! every 10,000th cancelled before each (as `benches/compaction.rs` does
//! with 1,000,000): 1.36 G with two replays, a fresh table for each, a
//! binary search per id in the goal and in the state (three per id) and
//! frames copied in from a body buffer; 0.99 G with the table reused,
//! galloping lookups and frames sealed in place; 0.82 G with one replay;
//! 0.74 G without the goal's ids and with one word per planned message.
//! The compactor thread's minor faults per compaction of 1,000,000 live
//! messages went from 30-35 thousand to 14-17.5 thousand (the 56 MB table
//! is most of what is left), and its CPU time per compaction in
//! `benches/compaction.rs` from 0.55-0.87 s to 0.27-0.46 s (on a shared,
//! noisy machine).

use super::error::WalError;
use super::format::{
    file_name, random_salt, salt_crc, seal_frame, Header, CODEC_BINCODE2, FRAME_HEADER_LEN,
    HEADER_LEN, KIND_BASE, MAX_FRAME_LIMIT, TMP_SUFFIX,
};
use super::live::{gallop, Live};
use super::options::WalOptions;
use super::payload::{Hold, PayloadAt, PayloadReader};
use super::record::Record;
use super::recovery::{replay_file, survey_through, LogFile, RecoveryReport};
use super::state::{
    key_ref, limits_record, message_record, update_record, RecoveredKey, Replay, Touched,
};
use super::storage::{Storage, WriteFile};

/// Frames of a base file hold records up to about this many bytes.
const BASE_FRAME_TARGET: u64 = 1 << 20;
/// Ids the first replay may note beyond one per live message (see
/// [`Noted::add`]).
const NOTED_SLACK: usize = 1 << 16;
/// Bytes buffered before a write, each write then synced (see `Writing::frame`).
const WRITE_CHUNK: usize = 1 << 20;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CompactionReport {
    /// The sequence number of the newest base file (0: nothing to do).
    pub(crate) base_seq: u64,
    /// Files read.
    pub(crate) files_in: usize,
    pub(crate) bytes_in: u64,
    /// Size of the base files after it (written or kept).
    pub(crate) bytes_out: u64,
    /// Base files written.
    pub(crate) files_written: usize,
    /// Live messages and remembered keys.
    pub(crate) messages: usize,
    pub(crate) keys: usize,
    /// Replays of the files: 2, or 1 when the second was not needed.
    pub(crate) replays: u32,
}

/// What the log says at its end: what a window's base file must keep.
struct Goal {
    /// Ids of the live messages, sorted; `None` when the compaction's
    /// state is the one at the end of the log (one replay), which says it.
    live: Option<Vec<u64>>,
    /// Remembered keys, with the file (index) each was first noted in.
    keys: Vec<(RecoveredKey, u32)>,
    next_id: u64,
}

/// What a compaction asks of whoever runs it, between its steps.
pub(crate) trait Steps {
    /// Whether to give up: the compaction then returns `Closed`, leaving
    /// the files in a state that recovers the same (the windows done so
    /// far are done).
    fn cancelled(&self) -> bool;

    /// `bytes` more of a base file are written and synced. The compactor
    /// thread waits here to pace its writes (see `pace`).
    fn wrote(&self, bytes: u64) {
        let _ = bytes;
    }
}

/// A closure that says whether to give up, and no pacing (tests, tools).
impl<F: Fn() -> bool> Steps for F {
    fn cancelled(&self) -> bool {
        self()
    }
}

/// Compacts every log file with a sequence number up to `through`, which
/// must all be sealed; files after it are neither read nor touched.
/// `steps` is asked between steps whether to give up, and told of each
/// chunk written.
pub(crate) fn compact(
    storage: &dyn Storage,
    through: u64,
    options: &WalOptions,
    steps: &dyn Steps,
) -> Result<CompactionReport, WalError> {
    compact_with(storage, through, options, steps, Replays::AsNeeded)
}

/// Whether a compaction may skip its second replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replays {
    /// When every live message was touched by one file only.
    AsNeeded,
    /// Never (tests: the base files must come out the same).
    #[cfg(test)]
    Two,
}

/// [`compact`], told whether it may skip the second replay.
pub(crate) fn compact_with(
    storage: &dyn Storage,
    through: u64,
    options: &WalOptions,
    steps: &dyn Steps,
    replays: Replays,
) -> Result<CompactionReport, WalError> {
    let found = survey_through(storage, options.fingerprint, through)?;
    // Files a base file replaces, left by a compaction cut short after its
    // rename: gone before anything else is written.
    for name in &found.obsolete {
        storage
            .remove(name)
            .map_err(WalError::on_file(storage, "remove", name))?;
    }
    if !found.obsolete.is_empty() {
        storage
            .sync_dir()
            .map_err(WalError::on_file(storage, "sync directory", ""))?;
    }
    let files = found.files;
    if files.is_empty() {
        return Ok(CompactionReport::default());
    }
    let mut ignored = RecoveryReport::default();
    let mut state = Replay::<PayloadAt>::default();
    state.track_touched();
    // What each file touched, noted so that the windows can be gathered
    // without a second replay, while that stays within about one id per
    // live message.
    let mut noted = Some(Noted::default());
    for (i, file) in (0u32..).zip(&files) {
        replay_file(
            storage,
            (i, file),
            false,
            options.salvage,
            &mut state,
            &mut ignored,
        )?;
        let touched = state.take_touched();
        if let Some(n) = &mut noted {
            if !n.add(touched, state.paused(), state.live_count()) {
                noted = None;
            }
        }
        if steps.cancelled() {
            return Err(WalError::Closed);
        }
    }
    state.settle();
    let noted =
        noted.filter(|n| replays == Replays::AsNeeded && n.each_live_in_one_file(&mut state));
    let goal = Goal {
        live: match noted {
            Some(_) => None,
            None => Some(state.messages().map(|m| m.id).collect()),
        },
        keys: state
            .gone_keys()
            .into_iter()
            .map(|(k, home)| (k.clone(), home))
            .collect(),
        next_id: state.next_id(),
    };
    let messages = state.live_count();
    let mut run = Run {
        storage,
        files: &files,
        options,
        steps,
        goal: &goal,
        state,
        window: Window::default(),
        first: 0,
        removed: false,
        report: CompactionReport {
            files_in: files.len(),
            bytes_in: files.iter().map(|f| f.len).sum(),
            messages,
            keys: goal.keys.len(),
            replays: if noted.is_some() { 1 } else { 2 },
            ..CompactionReport::default()
        },
    };
    if let Some(noted) = noted {
        // Every live message was touched by one file only: its state at
        // the end of any window that holds that file is its state at the
        // end of the log, which the first replay left. The windows are
        // those the second replay would gather, from what each file
        // touched: the base files come out the same, with no second
        // replay (issue 10).
        for ((i, file), (ids, paused, paused_at_end)) in (0u32..).zip(&files).zip(noted.files) {
            if run.closes_before(file) {
                run.close()?;
            }
            run.window.join(i, ids, paused, paused_at_end);
        }
    } else {
        // The second replay starts afresh in the first one's memory.
        run.state.clear();
        run.state.track_touched();
        for (i, file) in (0u32..).zip(&files) {
            if run.closes_before(file) {
                run.close()?;
            }
            replay_file(
                storage,
                (i, file),
                false,
                options.salvage,
                &mut run.state,
                &mut ignored,
            )?;
            let touched = run.state.take_touched();
            let paused_at_end = run.state.paused();
            run.window
                .join(i, touched.ids, touched.paused, paused_at_end);
            if steps.cancelled() {
                return Err(WalError::Closed);
            }
        }
    }
    run.close()?;
    if run.removed {
        storage
            .sync_dir()
            .map_err(WalError::on_file(storage, "sync directory", ""))?;
    }
    Ok(run.report)
}

/// Files gathered for one base file.
#[derive(Debug, Default)]
struct Window {
    /// Indexes of its files, consecutive.
    files: Vec<u32>,
    /// Ids its records touched (with repeats until [`Run::plan`] sorts them out).
    ids: Vec<u64>,
    /// Whether it recorded a `PAUSE`.
    paused: bool,
    /// Whether the queue was paused at its end.
    paused_at_end: bool,
}

impl Window {
    /// Adds file `i`, which touched `ids`, recorded a `PAUSE` if `paused`,
    /// and left the queue paused if `paused_at_end`: the same whether that
    /// comes from the second replay or from what the first one noted.
    fn join(&mut self, i: u32, ids: Vec<u64>, paused: bool, paused_at_end: bool) {
        match self.ids.is_empty() {
            true => self.ids = ids,
            false => self.ids.extend(ids),
        }
        self.paused |= paused;
        self.paused_at_end = paused_at_end;
        self.files.push(i);
    }
}

/// What the first replay noted of each file: the ids its records touched
/// (sorted, without repeats), whether it recorded a `PAUSE`, and whether
/// the queue was paused at its end.
#[derive(Debug, Default)]
struct Noted {
    files: Vec<(Vec<u64>, bool, bool)>,
    ids: usize,
}

impl Noted {
    /// Notes the next file; says no (and should be dropped) once the ids
    /// noted pass the `live` messages by more than [`NOTED_SLACK`], so
    /// that a log of many messages since gone costs no more memory than
    /// the second replay would.
    fn add(&mut self, touched: Touched, paused_at_end: bool, live: usize) -> bool {
        let mut ids = touched.ids;
        ids.sort_unstable();
        ids.dedup();
        self.ids += ids.len();
        if self.ids > live.saturating_add(NOTED_SLACK) {
            return false;
        }
        ids.shrink_to_fit();
        self.files.push((ids, touched.paused, paused_at_end));
        true
    }

    /// Whether every message live in `state` (at the end of the log) was
    /// touched by one file only.
    fn each_live_in_one_file<P: Hold>(&self, state: &mut Replay<P>) -> bool {
        let mut seen = vec![false; state.slots()];
        for (ids, _, _) in &self.files {
            let mut from = 0;
            for &id in ids {
                let (next, found) = state.seek(from, id);
                from = next;
                if let Some(index) = found {
                    if seen[index] {
                        return false;
                    }
                    seen[index] = true;
                }
            }
        }
        true
    }
}

/// What a window's base file holds for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// Its whole state and payload: created in the window (or given a new
    /// payload there).
    Whole,
    /// Its state without the payload: created before the window.
    Update,
}

/// What a window's base file holds, from [`Run::plan`].
struct Planned {
    /// Each touched message still live, in id order.
    out: Vec<Slot>,
    /// The base file's size.
    size: u64,
    /// Whether anything the window's files hold is gone.
    lost: bool,
    /// The largest of those messages' records.
    largest: u64,
}

/// A message a window's base file holds: its index in the state (see
/// [`Replay::at`]) and what of it, in one word (the lowest bit says
/// [`Out::Whole`]), since a window may hold a million.
#[derive(Debug, Clone, Copy)]
struct Slot(usize);

impl Slot {
    fn new(index: usize, kind: Out) -> Slot {
        Slot(index << 1 | usize::from(kind == Out::Whole))
    }

    fn index(self) -> usize {
        self.0 >> 1
    }

    fn kind(self) -> Out {
        match self.0 & 1 {
            1 => Out::Whole,
            _ => Out::Update,
        }
    }
}

/// One compaction's windows, gathered over its second replay, if any.
struct Run<'a> {
    storage: &'a dyn Storage,
    files: &'a [LogFile],
    options: &'a WalOptions,
    steps: &'a dyn Steps,
    goal: &'a Goal,
    /// The state as of the end of the files replayed so far (with one
    /// replay: of the log, which is every window's for what it writes).
    state: Replay<PayloadAt>,
    window: Window,
    /// The first file the next base file replaces.
    first: u64,
    /// Files removed since the last directory sync.
    removed: bool,
    report: CompactionReport,
}

impl Run<'_> {
    /// The most a window's base file may take: one segment.
    fn cap(&self) -> u64 {
        self.options.segment_size.max(1)
    }

    /// A file large enough to be a window of its own, so that it can be
    /// kept as it is if rewriting it would lose nothing and fold little.
    fn stands_alone(&self, file: &LogFile) -> bool {
        file.len >= self.cap() / 2
    }

    /// Whether the window closes before `file` joins it.
    fn closes_before(&mut self, file: &LogFile) -> bool {
        let Some(&last) = self.window.files.last() else {
            return false;
        };
        if self.stands_alone(file) || self.stands_alone(&self.files[last as usize]) {
            return true;
        }
        let size = self.plan().size;
        size.saturating_add(file.len) > self.cap()
    }

    /// The window's first file (index).
    fn start(&self) -> u32 {
        self.window.files.first().copied().unwrap_or(0)
    }

    /// What the window's base file holds (see [`Planned`]).
    fn plan(&mut self) -> Planned {
        let mut ids = std::mem::take(&mut self.window.ids);
        ids.sort_unstable();
        ids.dedup();
        let start = self.start();
        let mut out = Vec::with_capacity(ids.len());
        let mut lost = false;
        let mut largest = 0;
        let mut size = HEADER_LEN + FRAME_HEADER_LEN + 9 + 2;
        // The ids go up: each search goes on from where the last ended.
        let (mut in_goal, mut in_state) = (0, 0);
        for &id in ids.iter() {
            let (next, found) = self.state.seek(in_state, id);
            in_state = next;
            let live = match &self.goal.live {
                Some(live) => {
                    in_goal = gallop(live, in_goal, |&live| live < id);
                    live.get(in_goal) == Some(&id)
                }
                None => found.is_some(),
            };
            if !live {
                lost = true;
                continue;
            }
            let Some(index) = found else {
                continue;
            };
            let m = self.state.at(index);
            let kind = match m.origin() >= start || m.payload.file >= start {
                true => Out::Whole,
                false => Out::Update,
            };
            let len = record_len(m, kind);
            size += len;
            largest = largest.max(len);
            out.push(Slot::new(index, kind));
        }
        self.window.ids = ids;
        for key in self.keys() {
            size += Record::DedupKey {
                id: key.id,
                key: key_ref(key),
            }
            .encoded_len();
        }
        // A frame header per frame of records.
        size += (size / BASE_FRAME_TARGET) * FRAME_HEADER_LEN;
        Planned {
            out,
            size,
            lost,
            largest,
        }
    }

    /// The remembered keys first noted in the window.
    fn keys(&self) -> impl Iterator<Item = &RecoveredKey> {
        let start = self.start();
        let end = self.window.files.last().map_or(0, |&l| l + 1);
        self.goal
            .keys
            .iter()
            .filter(move |(_, home)| (start..end).contains(home))
            .map(|(k, _)| k)
    }

    /// Writes the window's base file (or keeps its one file as it is)
    /// and starts the next window.
    fn close(&mut self) -> Result<(), WalError> {
        let Some(&last) = self.window.files.last() else {
            return Ok(());
        };
        let last_file = &self.files[last as usize];
        let planned = self.plan();
        let (size, lost) = (planned.size, planned.lost);
        if self.window.files.len() == 1
            && !lost
            && size.saturating_mul(10) >= last_file.len.saturating_mul(9)
        {
            // Nothing gone and little to fold: kept as it is.
            self.report.bytes_out += last_file.len;
        } else {
            let len = self.write(&planned, last_file)?;
            self.report.bytes_out += len;
            self.report.files_written += 1;
        }
        self.report.base_seq = last_file.seq;
        self.first = last_file.seq + 1;
        self.window = Window::default();
        if self.steps.cancelled() {
            return Err(WalError::Closed);
        }
        Ok(())
    }

    /// Writes the window's base file over its last file, then removes the
    /// other files it replaces. Returns its size.
    fn write(&mut self, planned: &Planned, last_file: &LogFile) -> Result<u64, WalError> {
        let storage = self.storage;
        let seq = last_file.seq;
        let name = file_name(seq);
        let tmp = format!("{name}{TMP_SUFFIX}");
        // A leftover from a failed compaction of the same file is garbage.
        let _ = storage.remove(&tmp);
        let written = self.write_base(&tmp, seq, planned);
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                let _ = storage.remove(&tmp);
                return Err(e);
            }
        };
        storage
            .rename(&tmp, &name)
            .map_err(WalError::on_file(storage, "rename", &tmp))?;
        // Also makes the removals of the previous window durable.
        storage
            .sync_dir()
            .map_err(WalError::on_file(storage, "sync directory", &name))?;
        self.removed = false;
        for &i in &self.window.files {
            let file = &self.files[i as usize];
            if file.seq != seq {
                storage
                    .remove(&file.name)
                    .map_err(WalError::on_file(storage, "remove", &file.name))?;
                self.removed = true;
            }
        }
        Ok(len)
    }

    /// Writes the window's base file `seq` under the name `tmp`, synced,
    /// with the payloads read from the files it replaces. Returns its size.
    fn write_base(&mut self, tmp: &str, seq: u64, planned: &Planned) -> Result<u64, WalError> {
        let storage = self.storage;
        let path = storage.describe(tmp);
        let next_id = Record::NextId {
            next_id: self.goal.next_id,
        };
        let pause = self.window.paused.then_some(Record::Pause {
            paused: self.window.paused_at_end,
        });
        // The largest record decides the file's max frame: a message whose
        // errors grew past the queue's max frame must still fit.
        let mut largest = next_id.encoded_len().max(planned.largest);
        for key in self.keys() {
            let record = Record::DedupKey {
                id: key.id,
                key: key_ref(key),
            };
            largest = largest.max(record.encoded_len());
        }
        let max_frame = largest.max(u64::from(self.options.max_frame()));
        if max_frame > u64::from(MAX_FRAME_LIMIT) {
            return Err(WalError::TooLarge {
                len: largest,
                max: u64::from(MAX_FRAME_LIMIT),
            });
        }
        let target = BASE_FRAME_TARGET.min(max_frame);
        let header = Header {
            kind: KIND_BASE,
            codec: CODEC_BINCODE2,
            fingerprint: self.options.fingerprint,
            seq,
            salt: random_salt(),
            max_frame: max_frame as u32,
            first: self.first,
        };
        let mut file = storage
            .create(tmp)
            .map_err(|e| WalError::io("create", path.clone(), e))?;
        let mut out = Writing {
            file: &mut *file,
            buf: header.encode().to_vec(),
            len: 0,
            path: &path,
            open: None,
            target,
            salt_crc: salt_crc(header.salt),
            steps: self.steps,
        };
        out.add(&next_id)?;
        if let Some(pause) = &pause {
            out.add(pause)?;
        }
        let keys: Vec<&RecoveredKey> = self.keys().collect();
        for key in keys {
            out.add(&Record::DedupKey {
                id: key.id,
                key: key_ref(key),
            })?;
        }
        let mut payloads = PayloadReader::new(storage, self.files);
        for slot in &planned.out {
            let m = self.state.at(slot.index());
            match slot.kind() {
                Out::Update => out.add(&update_record(m))?,
                Out::Whole => {
                    let payload = payloads.read(m.payload)?;
                    out.add(&whole_record(m, payload))?;
                    if let Some(limits) = limits_record(m) {
                        out.add(&limits)?;
                    }
                }
            }
        }
        out.finish()?;
        let len = out.len;
        file.sync_data()
            .map_err(|e| WalError::io("sync", path.clone(), e))?;
        Ok(len)
    }
}

/// Whether `m` is as its `ENQUEUE` made it: never received, no error, not
/// dead-lettered (then its `ENQUEUE` restores it, 9 bytes shorter than a
/// `MESSAGE`).
fn pristine<P>(m: &Live<P>) -> bool {
    m.receive_count == 0 && m.errors().is_empty() && m.dead().is_none()
}

/// The record that creates `m` with `payload` as it is.
fn whole_record<'a, P>(m: &'a Live<P>, payload: &'a [u8]) -> Record<'a> {
    match pristine(m) {
        true => Record::Enqueue {
            id: m.id,
            enqueued_at: m.enqueued_at,
            visible_at: m.visible_at,
            key: m.key().map(key_ref),
            payload,
        },
        false => message_record(m, payload),
    }
}

/// The bytes a window's base file spends on `m`.
fn record_len(m: &Live<PayloadAt>, kind: Out) -> u64 {
    match kind {
        Out::Update => update_record(m).encoded_len(),
        Out::Whole => {
            whole_record(m, &[]).encoded_len()
                + u64::from(m.payload.len)
                + limits_record(m).map_or(0, |r| r.encoded_len())
        }
    }
}

struct Writing<'a> {
    file: &'a mut dyn WriteFile,
    /// Frames not yet written, then the frame being gathered, if any.
    buf: Vec<u8>,
    /// Bytes already written.
    len: u64,
    path: &'a str,
    /// Where in `buf` the frame being gathered starts (its header's room),
    /// if one is: records are encoded in place, not copied in after.
    open: Option<usize>,
    target: u64,
    salt_crc: u32,
    steps: &'a dyn Steps,
}

impl Writing<'_> {
    /// The body of the frame being gathered, so far.
    fn body_len(&self) -> u64 {
        self.open.map_or(0, |start| {
            (self.buf.len() - start) as u64 - FRAME_HEADER_LEN
        })
    }

    /// Adds a record to the frame being gathered.
    fn add(&mut self, record: &Record<'_>) -> Result<(), WalError> {
        let body = self.body_len();
        if body > 0 && body + record.encoded_len() > self.target {
            self.frame()?;
            if self.steps.cancelled() {
                return Err(WalError::Closed);
            }
        }
        if self.open.is_none() {
            self.open = Some(self.buf.len());
            self.buf.extend_from_slice(&[0; FRAME_HEADER_LEN as usize]);
        }
        record.encode(&mut self.buf);
        Ok(())
    }

    fn frame(&mut self) -> Result<(), WalError> {
        let Some(start) = self.open.take() else {
            return Ok(());
        };
        // A base file is synced whole before it is renamed in: each frame
        // may claim everything before it as synced.
        let offset = self.len + start as u64;
        debug_assert!(offset >= HEADER_LEN);
        seal_frame(&mut self.buf[start..], self.salt_crc, offset);
        if self.buf.len() >= WRITE_CHUNK {
            let chunk = self.buf.len() as u64;
            self.flush()?;
            // Synced chunk by chunk, so the file never holds much unsynced
            // data: on ext4 (data=ordered) the writer's own `fdatasync`
            // commits the journal, which first writes out every file's
            // dirty data, and 100 MB of unsynced base file made a `Sync`
            // send wait 40-50 ms (benches/compaction.rs; 11-20 ms with
            // 1 MiB chunks, 13-22 ms with 4 MiB).
            self.file
                .sync_data()
                .map_err(|e| WalError::io("sync", self.path.to_owned(), e))?;
            self.steps.wrote(chunk);
        }
        Ok(())
    }

    /// Writes the last frame and what is buffered.
    fn finish(&mut self) -> Result<(), WalError> {
        if self.body_len() > 0 {
            self.frame()?;
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), WalError> {
        debug_assert!(self.open.is_none(), "a frame is being gathered");
        self.file
            .write_all(&self.buf)
            .map_err(|e| WalError::io("write", self.path.to_owned(), e))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

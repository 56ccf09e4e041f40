//! The writer thread: group commit, rotation, poisoning (FORMAT.md,
//! section 6).
//!
//! Callers encode their records straight into one shared buffer under
//! [`Shared`]'s mutex, in call order, each append getting a ticket (a
//! counter) and its end offset noted. The one writer thread loops: swap
//! the buffer for its spare (so neither side allocates in the steady
//! state), frame what it holds (several appends to a frame, up to 1 MiB),
//! write the frames, `fdatasync` once (under `Sync`), publish the last
//! ticket as written/durable and
//! wake that round's waiters. While it writes and syncs, new callers
//! queue up and go out together in the next round, so the number of
//! syncs adapts to the load: one caller, one sync per append; many
//! callers, one sync per round (the classic group commit of database
//! logs).
//!
//! Framing: the appends of a round go out as one frame, not one frame
//! each (FORMAT.md, section 6), so the checksum runs once over many
//! records instead of once per small frame (it was the writer's largest
//! cost), and each append saves a frame header. A frame is the unit of
//! atomicity, and appends written in one `write` (and synced together)
//! lose nothing by sharing one: recovery still yields a prefix of the
//! appends, only with fewer possible cut points. A frame closes early at
//! [`MERGE_BYTES`] (or the file's max frame; an append never spans two
//! frames), and when the segment fills up. The buffer starts with room
//! for the first frame's header; a later frame's header overwrites the
//! last 16 bytes of the frame before it, once that one is written.
//!
//! When the writer wakes: an append into an empty buffer wakes it. Under
//! `Sync` it writes at once. Under `Interval` and `None` nobody waits for
//! the write, so the writer lets appends gather for up to [`WRITE_DELAY`]
//! (or until [`WRITE_AT_BYTES`] are pending, whichever comes first) and
//! writes them in one go: one wake-up and one `write` per batch rather
//! than per append, which matters when the writer shares two cores with
//! the producers and consumers.
//!
//! Any failure of a write, a sync or a file creation poisons the writer:
//! it stops writing, and every waiting or later caller gets the error.
//! Tickets are published as durable only after their sync returned `Ok`.

use super::compactor::{CompactionReply, Compactor, Reclaim};
use super::error::WalError;
use super::format::{
    file_name, random_salt, salt_crc, seal_frame, Header, CODEC_BINCODE2, FRAME_HEADER_LEN,
    HEADER_LEN, KIND_SEGMENT,
};
use super::options::{Durability, WalOptions};
use super::storage::{Storage, WriteFile};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Under `Interval` and `None`, the longest the writer lets appends gather
/// before it writes them (at most the interval itself). A crash of the
/// process loses what was not yet written: at most about this much.
pub(crate) const WRITE_DELAY: Duration = Duration::from_millis(1);

/// Pending bytes that make the writer write at once, whatever the level.
pub(crate) const WRITE_AT_BYTES: usize = 256 << 10;

/// Frames the writer builds from several appends stop growing at this
/// size (an append alone may be larger, up to the max frame).
pub(crate) const MERGE_BYTES: usize = 1 << 20;

/// The writer keeps a spare buffer up to this size between rounds.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// Under `Sync`, how long the writer, done with a round, keeps looking
/// for the next append before it sleeps. A sleeping writer takes the OS
/// tens of microseconds to wake, which a producer sending one durable
/// message after another pays on every send (with the `fdatasync` itself
/// at about 120 µs, a sixth of its time).
const WRITER_SPIN: Duration = Duration::from_micros(100);

/// How long [`Shared::lock`] spins for the state's lock before it blocks.
/// Everyone holds that lock for a few microseconds (an encode, a swap of
/// buffers); a holder that is off its core takes longer, and then
/// blocking is right.
const LOCK_SPIN: Duration = Duration::from_micros(50);

/// State shared by callers and the writer thread.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the writer.
    pub(crate) work: Condvar,
    /// Wakes callers waiting for their ticket, by the parity of the round
    /// that publishes it ([`State::round_for`]): the end of a round wakes
    /// its own callers only, not those whose appends missed it (under
    /// `Sync` with many producers, half of them at any time).
    pub(crate) rounds: [Condvar; 2],
    /// Wakes appends waiting for room in the buffer.
    pub(crate) room: Condvar,
    /// The tasks waiting as the `rounds` and `room` threads do. A task
    /// registers under `state`'s lock (then this one), having seen that
    /// what it waits for has not happened; the writer takes the list after
    /// it changed `state`: no wake-up is lost, and none runs under `state`.
    pub(crate) tasks: Mutex<TaskLists>,
    /// Whether `state.poison` is set, readable without the lock (so that
    /// a commit that waits for nothing takes no lock).
    poisoned: AtomicBool,
    /// `state.appended`, readable without the lock: what an idle writer
    /// watches while it spins (see [`WRITER_SPIN`]).
    pub(crate) appended: AtomicU64,
}

impl Shared {
    /// Takes the state's lock, spinning up to [`LOCK_SPIN`] before it
    /// blocks; every caller and the writer take it this way.
    ///
    /// Why not `state.lock()`: contended, parking_lot's mutex yields its
    /// core (`sched_yield`) several times before it sleeps, and a yield
    /// hands the core to any other runnable thread, the compactor
    /// included. Nothing wakes the yielder (it is runnable, not asleep),
    /// so it gets the core back only at the next scheduler tick (4 ms on a
    /// 250 Hz kernel), whatever the compactor's priority. Traced in
    /// `benches/compaction.rs`: the producer appends while the writer,
    /// just done with a round, takes the lock again, and 265 of 11,000
    /// `Sync` sends during a compaction waited 1-5 ms for the writer to
    /// take their round, nearly all of them in such a yield; spinning
    /// instead, 1-8 did.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        if let Some(st) = self.state.try_lock() {
            return st;
        }
        let until = Instant::now() + LOCK_SPIN;
        loop {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            if let Some(st) = self.state.try_lock() {
                return st;
            }
            if Instant::now() >= until {
                return self.state.lock();
            }
        }
    }

    /// Records the first failure; later ones are dropped.
    pub(crate) fn poison(&self, st: &mut State, error: WalError) {
        if st.poison.is_none() {
            st.poison = Some(Arc::new(error));
            self.poisoned.store(true, Ordering::Release);
        }
    }

    /// Wakes everyone waiting: the writer stopped or failed.
    pub(crate) fn wake_all(&self) {
        for round in &self.rounds {
            round.notify_all();
        }
        self.room.notify_all();
    }

    /// Wakes the tasks waiting for a round's end or room: call it after
    /// `state` shows what they wait for, and not under that lock (a waker
    /// may run code that appends).
    pub(crate) fn wake_tasks(&self, which: &[Tasks]) {
        let mut woken = Vec::new();
        {
            let mut tasks = self.tasks.lock();
            for &list in which {
                woken.extend(tasks.list(list).drain(..).map(|(_, waker)| waker));
            }
        }
        woken.into_iter().for_each(Waker::wake);
    }

    /// Whether an earlier write or sync failed (without the lock).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

#[derive(Default)]
pub(crate) struct State {
    /// Records waiting for the writer, in ticket order, after 16 bytes of
    /// room for a frame header (when not empty). Appends wait while it
    /// holds `MAX_PENDING_BYTES` or more.
    pub(crate) pending: Vec<u8>,
    /// The end offset in `pending` of each append's records.
    pub(crate) ends: Vec<usize>,
    /// Tickets handed out (the last one's number).
    pub(crate) appended: u64,
    /// Tickets up to this one are in the OS.
    pub(crate) written: u64,
    /// Tickets up to this one are on disk.
    pub(crate) durable: u64,
    /// A caller waits for tickets up to this one to be on disk.
    pub(crate) want_durable: u64,
    /// A caller waits for tickets up to this one to be in the OS.
    pub(crate) want_written: u64,
    /// Rounds of the writer started and finished (finished == started,
    /// or one less while a round is in flight).
    pub(crate) started: u64,
    pub(crate) finished: u64,
    /// The last ticket taken by the latest round.
    pub(crate) taken: u64,
    /// What the appends since the writer last looked would let a
    /// compaction reclaim.
    pub(crate) reclaim: Reclaim,
    /// The first failure; set once, never cleared.
    pub(crate) poison: Option<Arc<WalError>>,
    /// No more appends; the writer finishes the queue, syncs and exits.
    pub(crate) closing: bool,
    /// The writer thread has exited.
    pub(crate) stopped: bool,
    pub(crate) compactions: Vec<CompactionReply>,
}

/// Which tasks to wake.
#[derive(Clone, Copy)]
pub(crate) enum Tasks {
    /// Waiting for a round to end (as the `rounds` threads).
    Round,
    /// Waiting for room in `pending` (as the `room` threads).
    Room,
}

/// The tasks waiting on the writer, each under a key that its future
/// gives back when dropped (so that a task that gave up is not kept).
#[derive(Default)]
pub(crate) struct TaskLists {
    round: Vec<(u64, Waker)>,
    room: Vec<(u64, Waker)>,
    next: u64,
}

impl TaskLists {
    fn list(&mut self, which: Tasks) -> &mut Vec<(u64, Waker)> {
        match which {
            Tasks::Round => &mut self.round,
            Tasks::Room => &mut self.room,
        }
    }

    /// Lists the task (once: `key` keeps its place across polls).
    pub(crate) fn add(&mut self, which: Tasks, waker: &Waker, key: &mut Option<u64>) {
        let next = &mut self.next;
        let list = match which {
            Tasks::Round => &mut self.round,
            Tasks::Room => &mut self.room,
        };
        if let Some(listed) = key.and_then(|k| list.iter_mut().find(|(l, _)| *l == k)) {
            if !listed.1.will_wake(waker) {
                listed.1.clone_from(waker);
            }
            return;
        }
        *next += 1;
        list.push((*next, waker.clone()));
        *key = Some(*next);
    }

    /// Takes a task off the list (its future was dropped or is done).
    pub(crate) fn remove(&mut self, which: Tasks, key: u64) {
        self.list(which).retain(|(k, _)| *k != key);
    }
}

impl State {
    /// The round that will publish `ticket` (as written, and as durable
    /// if the caller has asked for that before this round started): the
    /// round in flight if it took the ticket, else the next one. A caller
    /// whose round ends without publishing what it waits for asks again.
    pub(crate) fn round_for(&self, ticket: u64) -> u64 {
        if self.started > self.finished && ticket <= self.taken {
            self.started
        } else {
            self.started + 1
        }
    }
}

/// The segment being appended to.
pub(crate) struct Active {
    pub(crate) seq: u64,
    file: Box<dyn WriteFile>,
    /// The CRC of the file's salt, where every frame checksum starts.
    salt_crc: u32,
    /// Bytes written (the offset of the next frame).
    len: u64,
    /// Bytes known to be on disk.
    synced: u64,
}

/// Creates segment `seq` durably: header written, synced, directory synced.
/// On failure the file is removed again (as far as the disk lets it), so
/// that a failed open or rotation leaves the directory as it found it.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    seq: u64,
    options: &WalOptions,
) -> Result<Active, WalError> {
    let name = file_name(seq);
    let path = || storage.describe(&name);
    let salt = random_salt();
    let header = Header {
        kind: KIND_SEGMENT,
        codec: CODEC_BINCODE2,
        fingerprint: options.fingerprint,
        seq,
        salt,
        max_frame: options.max_frame(),
        first: 0,
    };
    let mut file = storage
        .create(&name)
        .map_err(|e| WalError::io("create", path(), e))?;
    let written = file
        .write_all(&header.encode())
        .map_err(|e| WalError::io("write", path(), e))
        .and_then(|()| {
            file.sync_data()
                .map_err(|e| WalError::io("sync", path(), e))
        })
        .and_then(|()| {
            storage
                .sync_dir()
                .map_err(|e| WalError::io("sync directory", path(), e))
        });
    if let Err(e) = written {
        drop(file);
        remove_segment(storage, &name);
        return Err(e);
    }
    Ok(Active {
        seq,
        file,
        salt_crc: salt_crc(salt),
        len: HEADER_LEN,
        synced: HEADER_LEN,
    })
}

/// Removes a segment that never took a record (best effort: the error
/// that led here is the one worth reporting).
pub(crate) fn remove_segment(storage: &dyn Storage, name: &str) {
    if storage.remove(name).is_ok() {
        let _ = storage.sync_dir();
    }
}

/// The writer thread's own state.
pub(crate) struct Writer {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) options: WalOptions,
    pub(crate) active: Active,
    /// Told of every sealed segment; compacts them on its own thread.
    pub(crate) compactor: Arc<Compactor>,
    /// What the records written since the last seal would reclaim,
    /// handed to the compactor at the next seal (no lock per round).
    pub(crate) unsealed: Reclaim,
    /// Bytes written, syncs and their latency (feature `metrics`).
    pub(crate) metrics: crate::observe::WalMetrics,
}

impl Writer {
    fn path(&self) -> String {
        self.storage.describe(&file_name(self.active.seq))
    }

    fn sync(&mut self) -> Result<(), WalError> {
        if self.active.synced < self.active.len {
            let started = self.metrics.sync_started();
            self.active
                .file
                .sync_data()
                .map_err(|e| WalError::io("sync", self.path(), e))?;
            self.metrics.synced(started);
            self.active.synced = self.active.len;
        }
        Ok(())
    }

    fn write_buf(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        if !bytes.is_empty() {
            let result = self.active.file.write_all(bytes);
            // Count the bytes even on failure: the file may hold part of them.
            self.active.len += bytes.len() as u64;
            result.map_err(|e| WalError::io("write", self.path(), e))?;
            self.metrics.written(bytes.len());
        }
        Ok(())
    }

    /// Seals the active segment (synced), starts the next one, and hands
    /// the sealed one to the compactor (which may make it wait while it
    /// is far behind).
    fn rotate(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let next = create_segment(&*self.storage, self.active.seq + 1, &self.options)?;
        let sealed = std::mem::replace(&mut self.active, next);
        let reclaim = std::mem::take(&mut self.unsealed);
        self.compactor.sealed(sealed.seq, sealed.len, reclaim);
        Ok(())
    }

    /// Frames and writes a round's records: `buf` as laid out in
    /// [`State::pending`], `ends` the end of each append in it. One write
    /// per frame; rotates when a segment fills up (at the compactor's
    /// [`Compactor::rotate_at`]).
    fn write(&mut self, buf: &mut [u8], ends: &[usize]) -> Result<(), WalError> {
        const ROOM: usize = FRAME_HEADER_LEN as usize;
        let limit = MERGE_BYTES.min(self.options.max_frame() as usize);
        // The frame being built: header at `buf[start..start + ROOM]`,
        // body up to `end`, the end of its last append.
        let mut start = 0;
        let mut end = ROOM;
        for &append_end in ends {
            if end > start + ROOM && append_end - (start + ROOM) > limit {
                self.write_frame(&mut buf[start..end])?;
                start = end - ROOM;
            }
            end = append_end;
            if self.active.len + (end - start) as u64 >= self.compactor.rotate_at() {
                self.write_frame(&mut buf[start..end])?;
                start = end - ROOM;
                self.rotate()?;
            }
        }
        if end > start + ROOM {
            self.write_frame(&mut buf[start..end])?;
        }
        Ok(())
    }

    /// Seals `frame` (header room, then body) for the active segment and
    /// writes it.
    fn write_frame(&mut self, frame: &mut [u8]) -> Result<(), WalError> {
        seal_frame(frame, self.active.salt_crc, self.active.synced);
        self.write_buf(frame)
    }

    /// The writer thread's loop; returns when the log is closed.
    pub(crate) fn run(mut self, shared: &Shared) {
        let interval = match self.options.durability {
            Durability::Interval(d) => Some(d),
            _ => None,
        };
        // How long appends may gather before they are written.
        let write_delay = match self.options.durability {
            Durability::Sync => Duration::ZERO,
            Durability::Interval(d) => d.min(WRITE_DELAY),
            Durability::None => WRITE_DELAY,
        };
        let mut last_sync = Instant::now();
        // When the writer first saw the pending frames.
        let mut pending_since: Option<Instant> = None;
        // The buffers swapped with the callers' at each round.
        let mut frames = Vec::new();
        let mut ends = Vec::new();
        let mut st = shared.lock();
        loop {
            // Wait for something to do.
            let mut spun = false;
            loop {
                let asked = st.want_durable > st.durable || st.want_written > st.written;
                if st.closing
                    || !st.compactions.is_empty()
                    || (asked && st.poison.is_none())
                    || st.pending.len() >= WRITE_AT_BYTES
                    || (!st.pending.is_empty() && write_delay.is_zero())
                {
                    break;
                }
                let mut deadline = None;
                if !st.pending.is_empty() {
                    deadline = Some(*pending_since.get_or_insert_with(Instant::now) + write_delay);
                }
                // A poisoned writer syncs nothing more: no deadline. An
                // interval too long to add to an `Instant` never comes due.
                if let Some(sync_at) = interval
                    .filter(|_| st.written > st.durable && st.poison.is_none())
                    .and_then(|d| last_sync.checked_add(d))
                {
                    deadline = Some(deadline.map_or(sync_at, |at: Instant| at.min(sync_at)));
                }
                match deadline {
                    Some(at) if Instant::now() >= at => break,
                    Some(at) => {
                        shared.work.wait_until(&mut st, at);
                    }
                    None if write_delay.is_zero() && !spun && st.poison.is_none() => {
                        // `Sync`: spin a while before sleeping, once, then
                        // look again under the lock.
                        spun = true;
                        let seen = st.appended;
                        drop(st);
                        let until = Instant::now() + WRITER_SPIN;
                        while shared.appended.load(Ordering::Acquire) == seen
                            && Instant::now() < until
                        {
                            for _ in 0..16 {
                                std::hint::spin_loop();
                            }
                        }
                        st = shared.lock();
                    }
                    None => shared.work.wait(&mut st),
                }
            }
            pending_since = None;
            std::mem::swap(&mut st.pending, &mut frames);
            std::mem::swap(&mut st.ends, &mut ends);
            self.unsealed.merge(std::mem::take(&mut st.reclaim));
            shared.room.notify_all();
            let last = st.appended;
            st.started += 1;
            st.taken = last;
            let wants_sync = st.want_durable > st.durable || st.closing;
            let closing = st.closing;
            let compaction = st.compactions.pop();
            let poisoned = st.poison.clone();
            drop(st);
            shared.wake_tasks(&[Tasks::Room]);

            let mut synced = false;
            let result = match poisoned {
                Some(p) => Err(WalError::Poisoned(p)),
                None => (|| {
                    self.write(&mut frames, &ends)?;
                    if compaction.is_some() && self.active.len > HEADER_LEN {
                        // Seal what the caller appended before asking.
                        self.rotate()?;
                    }
                    let sync = match self.options.durability {
                        Durability::Sync => true,
                        Durability::Interval(d) => wants_sync || last_sync.elapsed() >= d,
                        Durability::None => wants_sync,
                    };
                    if sync {
                        self.sync()?;
                        last_sync = Instant::now();
                        synced = true;
                    }
                    Ok(())
                })(),
            };
            frames.clear();
            ends.clear();
            if frames.capacity() > KEEP_BUFFER_BYTES {
                frames = Vec::new(); // after a burst of huge frames
            }

            st = shared.lock();
            match result {
                Ok(()) => {
                    st.written = last;
                    if synced {
                        st.durable = last;
                    }
                }
                Err(WalError::Poisoned(_)) => {}
                Err(e) => shared.poison(&mut st, e),
            }
            st.finished = st.started;
            let finished = st.finished;
            let poisoned = st.poison.is_some();
            if poisoned {
                shared.wake_all();
            }
            drop(st);
            if !poisoned {
                // After the unlock: notified under it, the callers would
                // wake only to queue for the lock the writer holds, and a
                // caller that finds it taken yields its core (see
                // `Shared::lock`).
                shared.rounds[(finished % 2) as usize].notify_all();
            }
            // Outside the lock (see `Shared::tasks`); every task, as a
            // failure ends the waits for room too.
            shared.wake_tasks(&[Tasks::Round, Tasks::Room]);
            st = shared.lock();
            if let Some(reply) = compaction {
                match &st.poison {
                    Some(p) => drop(reply.send(Err(WalError::Poisoned(Arc::clone(p))))),
                    None => self.compactor.request(reply),
                }
            }
            if closing && st.pending.is_empty() && st.compactions.is_empty() {
                st.stopped = true;
                shared.wake_all();
                drop(st);
                shared.wake_tasks(&[Tasks::Round, Tasks::Room]);
                return;
            }
        }
    }
}

/// Tests: writes `appends` (each the record bytes of one append) as one
/// round of the writer into a new segment `seq`, and syncs it.
#[cfg(test)]
pub(crate) fn write_one_round(
    storage: Arc<dyn Storage>,
    options: &WalOptions,
    seq: u64,
    appends: &[Vec<u8>],
) -> Result<(), WalError> {
    let active = create_segment(&*storage, seq, options)?;
    let options = WalOptions {
        auto_compact: false,
        ..options.clone()
    };
    let compactor = Arc::new(Compactor::new(options.clone(), seq - 1, 0, 0, false));
    let mut writer = Writer {
        storage,
        metrics: crate::observe::WalMetrics::new(&options.name),
        options,
        active,
        compactor,
        unsealed: Reclaim::default(),
    };
    let mut buf = vec![0; FRAME_HEADER_LEN as usize];
    let mut ends = Vec::new();
    for append in appends {
        buf.extend_from_slice(append);
        ends.push(buf.len());
    }
    writer.write(&mut buf, &ends)?;
    writer.sync()
}

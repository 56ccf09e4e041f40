//! [`Wal`]: the handle the queue holds. Open (recover, repair, start the
//! writer), append, commit, sync, compact, close.
//!
//! ```text
//! let (wal, recovered) = Wal::open(storage, options)?;   // replayed state
//! let ticket = wal.append(&[Record::Enqueue { .. }])?;   // in log order
//! wal.commit(ticket)?;                                   // per durability
//! ```
//!
//! The order of records in the log is the order of `append` calls. The
//! queue must append a message's record before it makes the change
//! visible to other threads (for example, append `Enqueue` before pushing
//! the message onto the ready queue), so that a later record about the
//! same message (a `Receive`) is always behind it in the log.

use super::compaction::CompactionReport;
use super::compactor::{Compactor, COMPACT_AT_OPEN_FILES};
use super::error::WalError;
use super::format::FRAME_HEADER_LEN;
use super::options::{Durability, WalOptions};
use super::record::Record;
use super::recovery::{recover, Recovered};
use super::storage::{LockGuard, Storage};
use super::writer::{create_segment, remove_segment, Shared, Tasks, Writer, WRITE_AT_BYTES};
use std::io;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::thread::JoinHandle;

/// Appends wait while the writer has this many bytes still to write:
/// what a failed write can lose under `Interval` and `None`, beside the
/// round being written (README, Durability).
pub(crate) const MAX_PENDING_BYTES: usize = 2 * WRITE_AT_BYTES;

/// A task's place on the writer's lists of waiting tasks, kept across
/// polls; give it back with [`Wal::forget`] when the wait ends or is
/// dropped.
#[derive(Debug, Default)]
pub(crate) struct WaitKey(Option<u64>);

/// A place in the log: what [`Wal::append`] returns and [`Wal::commit`]
/// waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

/// An open write-ahead file.
pub(crate) struct Wal {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    compactor: Arc<Compactor>,
    compactor_thread: Option<JoinHandle<()>>,
    durability: Durability,
    max_frame: u32,
    storage: Arc<dyn Storage>,
    _lock: LockGuard,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("storage", &self.storage)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Locks the directory, recovers its state, repairs a torn tail,
    /// starts a new segment, the writer thread and the compactor thread.
    ///
    /// Open writes nothing but the new segment's header (and the repair):
    /// it needs no more free space than that, never waits for a
    /// compaction, and a failed open removes the segment it created.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        options: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let lock = storage.lock().map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => WalError::Locked {
                path: storage.describe(""),
            },
            _ => WalError::io("lock", storage.describe(super::format::LOCK_FILE), e),
        })?;
        let (recovered, layout) = recover(&*storage, options.fingerprint, options.salvage)?;
        let active = create_segment(&*storage, layout.next_seq, &options)?;
        let seq = active.seq;
        if let Some(empty) = &layout.empty_last {
            // Holds nothing (a lost removal brings back an empty file, as
            // harmless as it was).
            let _ = storage.remove(empty);
        }
        // Each open starts a new segment, so a queue reopened often would
        // pile up small files that only a rotation compacts: compact soon
        // after open too once there are many (and a salvaged file, so that
        // the damage is gone), on the compactor's thread.
        let forced =
            !recovered.report.salvaged.is_empty() || layout.sealed_files >= COMPACT_AT_OPEN_FILES;
        let compactor = Arc::new(Compactor::new(
            options.clone(),
            layout.next_seq - 1,
            layout.base_bytes,
            layout.sealed_bytes,
            forced,
        ));
        let writer = Writer {
            storage: Arc::clone(&storage),
            options: options.clone(),
            active,
            compactor: Arc::clone(&compactor),
            unsealed: Default::default(),
            metrics: crate::observe::WalMetrics::new(&options.name),
        };
        let shared = Arc::new(Shared::default());
        let spawn_failed = |e| {
            remove_segment(&*storage, &super::format::file_name(seq));
            WalError::io("spawn thread", storage.describe(""), e)
        };
        let compactor_thread = {
            let compactor = Arc::clone(&compactor);
            let storage = Arc::clone(&storage);
            std::thread::Builder::new()
                .name("spool-compact".into())
                .spawn(move || compactor.run(&*storage))
                .map_err(spawn_failed)?
        };
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("spool-wal".into())
                .spawn(move || {
                    let _stopped = StopGuard(&shared);
                    writer.run(&shared);
                })
        };
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                compactor.stop();
                let _ = compactor_thread.join();
                return Err(spawn_failed(e));
            }
        };
        let wal = Wal {
            shared,
            thread: Some(thread),
            compactor,
            compactor_thread: Some(compactor_thread),
            durability: options.durability,
            max_frame: options.max_frame(),
            storage,
            _lock: lock,
        };
        Ok((wal, recovered))
    }

    /// Queues `records` as one append, which goes into one frame (with
    /// other appends of its round): they recover all together or not at
    /// all. Returns at once; [`Wal::commit`] waits for the frame.
    /// `TooLarge` refuses the frame without harming the log.
    ///
    /// The records are encoded straight into the writer's pending buffer,
    /// under its lock: no allocation per frame, and the lock is held for
    /// little more than copying their bytes. (The writer may put the
    /// records of several appends in one frame: see `writer.rs`.)
    ///
    /// With `wait_for_room`, it first waits while the writer has
    /// `MAX_PENDING_BYTES` to write. The queue appends without it: a send
    /// waits for room beforehand, holding nothing
    /// ([`wait_room`](Self::wait_room), [`poll_room`](Self::poll_room)),
    /// so the bound may be passed by one append per waiting sender; the
    /// records of receives and settlements are bounded by the messages
    /// sent.
    pub(crate) fn append_with(
        &self,
        records: &[Record<'_>],
        wait_for_room: bool,
    ) -> Result<Ticket, WalError> {
        let len: u64 = records.iter().map(Record::encoded_len).sum();
        if len > u64::from(self.max_frame) {
            return Err(WalError::TooLarge {
                len,
                max: u64::from(self.max_frame),
            });
        }
        let mut st = self.shared.lock();
        if let Some(poison) = &st.poison {
            return Err(WalError::Poisoned(Arc::clone(poison)));
        }
        // A writer that stopped for any reason writes nothing more: no
        // append may be acknowledged then.
        if st.closing || st.stopped {
            return Err(WalError::Closed);
        }
        if len == 0 {
            return Ok(Ticket(st.appended));
        }
        // Backpressure: a writer that falls behind (under `Interval` and
        // `None` nobody waits for it) must not let memory grow unbounded.
        while wait_for_room
            && st.pending.len() >= MAX_PENDING_BYTES
            && st.poison.is_none()
            && !st.stopped
        {
            self.shared.room.wait(&mut st);
        }
        if let Some(poison) = &st.poison {
            return Err(WalError::Poisoned(Arc::clone(poison)));
        }
        if st.stopped {
            return Err(WalError::Closed);
        }
        let before = st.pending.len();
        if before == 0 {
            // Room for the header of the first frame (see `writer.rs`).
            st.pending
                .extend_from_slice(&[0; FRAME_HEADER_LEN as usize]);
        }
        // Fits in usize: at most the max frame.
        st.pending.reserve(len as usize);
        let start = st.pending.len();
        for record in records {
            let at = st.pending.len();
            record.encode(&mut st.pending);
            let len = (st.pending.len() - at) as u64;
            st.reclaim.note(record, len);
        }
        let after = st.pending.len();
        debug_assert_eq!((after - start) as u64, len);
        st.ends.push(after);
        st.appended += 1;
        self.shared
            .appended
            .store(st.appended, std::sync::atomic::Ordering::Release);
        let ticket = Ticket(st.appended);
        drop(st);
        // An idle writer needs waking; a gathering one only once enough
        // is pending (see `writer.rs`).
        if before == 0 || (before < WRITE_AT_BYTES && after >= WRITE_AT_BYTES) {
            self.shared.work.notify_one();
        }
        Ok(ticket)
    }

    /// Waits until the frame of `ticket` (and every frame before it) is
    /// as durable as the durability level promises: on disk under `Sync`.
    /// Under `Interval` and `None` it does not wait at all (the writer
    /// thread writes within `WRITE_DELAY` on its own): it only reports an
    /// earlier failure, without taking the lock when there was none.
    pub(crate) fn commit(&self, ticket: Ticket) -> Result<(), WalError> {
        if self.durability == Durability::Sync {
            return self.wait(ticket, true);
        }
        if !self.shared.is_poisoned() {
            return Ok(());
        }
        match &self.shared.lock().poison {
            Some(poison) => Err(WalError::Poisoned(Arc::clone(poison))),
            None => Ok(()),
        }
    }

    /// [`append_with`](Self::append_with), waiting for room.
    pub(crate) fn append(&self, records: &[Record<'_>]) -> Result<Ticket, WalError> {
        self.append_with(records, true)
    }

    /// The task's form of [`commit`](Self::commit): `Pending` (the task
    /// woken when the writer ends a round) until it would return.
    pub(crate) fn poll_commit(
        &self,
        ticket: Ticket,
        waker: &Waker,
        key: &mut WaitKey,
    ) -> Poll<Result<(), WalError>> {
        if self.durability == Durability::Sync {
            return self.poll_wait(ticket, waker, key);
        }
        Poll::Ready(self.commit(ticket))
    }

    /// Waits until an append that waits for room would not wait (or would
    /// fail at once); returns whether it waited. A send waits here before
    /// it takes a slot or claims its key, so that it waits holding nothing.
    pub(crate) fn wait_room(&self) -> bool {
        let mut st = self.shared.lock();
        let mut waited = false;
        while st.pending.len() >= MAX_PENDING_BYTES && st.poison.is_none() && !st.stopped {
            self.shared.room.wait(&mut st);
            waited = true;
        }
        waited
    }

    /// Ready once an append that waits for room would not wait (or would
    /// fail at once).
    pub(crate) fn poll_room(&self, waker: &Waker, key: &mut WaitKey) -> Poll<()> {
        let st = self.shared.lock();
        if st.pending.len() < MAX_PENDING_BYTES || st.poison.is_some() || st.stopped {
            return Poll::Ready(());
        }
        // Under `state`'s lock: see `Shared::tasks`.
        self.shared.tasks.lock().add(Tasks::Room, waker, &mut key.0);
        Poll::Pending
    }

    /// Takes a task's wait for room or a round off the writer's lists,
    /// when it is dropped or done: a task that gave up is not kept.
    pub(crate) fn forget(&self, key: &mut WaitKey) {
        if let Some(k) = key.0.take() {
            let mut tasks = self.shared.tasks.lock();
            tasks.remove(Tasks::Room, k);
            tasks.remove(Tasks::Round, k);
        }
    }

    /// The ticket of the last append so far: [`sync`](Self::sync) waits
    /// for it to be on disk, and a task with
    /// [`poll_synced`](Self::poll_synced).
    pub(crate) fn last_ticket(&self) -> Ticket {
        Ticket(self.shared.lock().appended)
    }

    /// The task's form of [`sync`](Self::sync), for a ticket from
    /// [`last_ticket`](Self::last_ticket).
    pub(crate) fn poll_synced(
        &self,
        ticket: Ticket,
        waker: &Waker,
        key: &mut WaitKey,
    ) -> Poll<Result<(), WalError>> {
        self.poll_wait(ticket, waker, key)
    }

    /// The task's form of `wait(ticket, true)`.
    fn poll_wait(
        &self,
        Ticket(ticket): Ticket,
        waker: &Waker,
        key: &mut WaitKey,
    ) -> Poll<Result<(), WalError>> {
        let mut st = self.shared.lock();
        if st.want_durable < ticket {
            st.want_durable = ticket;
            self.shared.work.notify_one();
        }
        if st.durable >= ticket {
            return Poll::Ready(Ok(()));
        }
        if let Some(poison) = &st.poison {
            return Poll::Ready(Err(WalError::Poisoned(Arc::clone(poison))));
        }
        if st.stopped {
            return Poll::Ready(Err(WalError::Closed));
        }
        // Under `state`'s lock: see `Shared::tasks`.
        self.shared
            .tasks
            .lock()
            .add(Tasks::Round, waker, &mut key.0);
        Poll::Pending
    }

    /// [`Wal::append`] then [`Wal::commit`].
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn append_commit(&self, records: &[Record<'_>]) -> Result<(), WalError> {
        let ticket = self.append(records)?;
        self.commit(ticket)
    }

    /// Waits until every frame appended so far is on disk, whatever the
    /// durability level.
    pub(crate) fn sync(&self) -> Result<(), WalError> {
        self.wait(self.last_ticket(), true)
    }

    fn wait(&self, Ticket(ticket): Ticket, on_disk: bool) -> Result<(), WalError> {
        let mut st = self.shared.lock();
        let wanted = match on_disk {
            true => &mut st.want_durable,
            false => &mut st.want_written,
        };
        if *wanted < ticket {
            *wanted = ticket;
            self.shared.work.notify_one();
        }
        loop {
            let reached = if on_disk { st.durable } else { st.written };
            if reached >= ticket {
                return Ok(());
            }
            if let Some(poison) = &st.poison {
                return Err(WalError::Poisoned(Arc::clone(poison)));
            }
            if st.stopped {
                return Err(WalError::Closed);
            }
            let round = st.round_for(ticket);
            self.shared.rounds[(round % 2) as usize].wait(&mut st);
        }
    }

    /// Seals the active segment and compacts every sealed file into base
    /// files of about a segment each, on the compactor thread (appends go
    /// on meanwhile).
    pub(crate) fn compact(&self) -> Result<CompactionReport, WalError> {
        let (reply, outcome) = crossbeam_channel::bounded(1);
        {
            let mut st = self.shared.lock();
            if let Some(poison) = &st.poison {
                return Err(WalError::Poisoned(Arc::clone(poison)));
            }
            if st.closing {
                return Err(WalError::Closed);
            }
            st.compactions.push(reply);
            self.shared.work.notify_one();
        }
        outcome.recv().unwrap_or(Err(WalError::Closed))
    }

    /// Waits until every frame appended so far is written to the OS.
    #[cfg(test)]
    pub(crate) fn wait_written(&self) -> Result<(), WalError> {
        let ticket = Ticket(self.shared.lock().appended);
        self.wait(ticket, false)
    }

    /// Whether an earlier write or sync failed.
    #[cfg(test)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Lets automatic compactions run: the queue calls it once it has
    /// restored its state, so that no compaction competes with that.
    pub(crate) fn start_compaction(&self) {
        self.compactor.start();
    }

    /// Waits until no compaction is running or due.
    #[cfg(test)]
    pub(crate) fn quiesce(&self) {
        self.compactor.quiesce();
    }

    /// Compactions finished so far.
    #[cfg(test)]
    pub(crate) fn compactions_finished(&self) -> u64 {
        self.compactor.finished()
    }

    /// Rounds the writer has started so far.
    #[cfg(test)]
    pub(crate) fn rounds_started(&self) -> u64 {
        self.shared.lock().started
    }

    /// Bytes of log files in the directory (for the compaction bound).
    pub(crate) fn disk_usage(&self) -> Result<u64, WalError> {
        let io = |e| WalError::io("list", self.storage.describe(""), e);
        let mut total = 0;
        for name in self.storage.list().map_err(io)? {
            if super::format::parse_file_name(&name).is_some()
                || name.ends_with(super::format::TMP_SUFFIX)
            {
                match self.storage.len(&name) {
                    Ok(len) => total += len,
                    // Removed by a compaction since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        Ok(total)
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Writes and syncs everything appended, stops the writer, and
    /// releases the lock. Dropping a `Wal` does the same, ignoring errors.
    pub(crate) fn close(mut self) -> Result<(), WalError> {
        let result = self.sync();
        self.stop();
        result
    }

    fn stop(&mut self) {
        // First the compactor: a running compaction gives up, and a writer
        // waiting at a rotation for it to catch up goes on, so that closing
        // never waits for a compaction.
        self.compactor.stop();
        {
            let mut st = self.shared.lock();
            st.closing = true;
            self.shared.work.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.compactor_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Marks the writer stopped however its thread ends, so that no caller
/// waits forever; a panic poisons the log.
struct StopGuard<'a>(&'a Shared);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if std::thread::panicking() {
            let panic = io::Error::other("the writer thread panicked");
            self.0
                .poison(&mut st, WalError::io("write", "spool-wal", panic));
        }
        st.stopped = true;
        // Compactions still asked for get their answer: `Closed`.
        st.compactions.clear();
        self.0.wake_all();
        drop(st);
        self.0.wake_tasks(&[Tasks::Round, Tasks::Room]);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop();
    }
}

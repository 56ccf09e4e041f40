//! The writer thread: group commit, rotation, poisoning (FORMAT.md,
//! section 6).
//!
//! Callers hand encoded frame bodies to [`Shared`] under its mutex, in call
//! order, each getting a ticket (a counter). The one writer thread loops:
//! take every waiting body, frame them into one buffer, write it with one
//! `write`, `fdatasync` once (under `Sync`), publish the last ticket as
//! written/durable and wake all waiters. While it writes and syncs, new
//! callers queue up and go out together in the next round, so the number
//! of syncs adapts to the load: one caller, one sync per append; many
//! callers, one sync per round (the classic group commit of database logs).
//!
//! Any failure of a write, a sync or a file creation poisons the writer:
//! it stops writing, and every waiting or later caller gets the error.
//! Tickets are published as durable only after their sync returned `Ok`.

use super::compaction::{compact, CompactionReport};
use super::error::WalError;
use super::format::{
    encode_frame, file_name, random_salt, Header, CODEC_BINCODE2, FRAME_HEADER_LEN, HEADER_LEN,
    KIND_SEGMENT,
};
use super::options::{Durability, WalOptions};
use super::storage::{Storage, WriteFile};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// State shared by callers and the writer thread.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes the writer.
    pub(crate) work: Condvar,
    /// Wakes callers waiting for their ticket.
    pub(crate) done: Condvar,
}

pub(crate) type CompactionReply = Sender<Result<CompactionReport, WalError>>;

#[derive(Default)]
pub(crate) struct State {
    /// Frame bodies waiting for the writer, in ticket order.
    pub(crate) queue: Vec<Vec<u8>>,
    /// Their bytes: appends wait while it exceeds `MAX_PENDING_BYTES`.
    pub(crate) pending_bytes: usize,
    /// Tickets handed out (the last one's number).
    pub(crate) appended: u64,
    /// Tickets up to this one are in the OS.
    pub(crate) written: u64,
    /// Tickets up to this one are on disk.
    pub(crate) durable: u64,
    /// A caller waits for tickets up to this one to be on disk.
    pub(crate) want_durable: u64,
    /// The first failure; set once, never cleared.
    pub(crate) poison: Option<Arc<WalError>>,
    /// No more appends; the writer finishes the queue, syncs and exits.
    pub(crate) closing: bool,
    /// The writer thread has exited.
    pub(crate) stopped: bool,
    pub(crate) compactions: Vec<CompactionReply>,
}

/// The segment being appended to.
pub(crate) struct Active {
    seq: u64,
    file: Box<dyn WriteFile>,
    salt: u32,
    /// Bytes written (the offset of the next frame).
    len: u64,
    /// Bytes known to be on disk.
    synced: u64,
}

/// Creates segment `seq` durably: header written, synced, directory synced.
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
    };
    let mut file = storage
        .create(&name)
        .map_err(|e| WalError::io("create", path(), e))?;
    file.write_all(&header.encode())
        .map_err(|e| WalError::io("write", path(), e))?;
    file.sync_data()
        .map_err(|e| WalError::io("sync", path(), e))?;
    storage
        .sync_dir()
        .map_err(|e| WalError::io("sync directory", path(), e))?;
    Ok(Active {
        seq,
        file,
        salt,
        len: HEADER_LEN,
        synced: HEADER_LEN,
    })
}

/// The writer thread's own state.
pub(crate) struct Writer {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) options: WalOptions,
    pub(crate) active: Active,
    /// Size of the newest base file.
    pub(crate) base_bytes: u64,
    /// Size of the sealed files other than the base.
    pub(crate) sealed_bytes: u64,
}

impl Writer {
    fn path(&self) -> String {
        self.storage.describe(&file_name(self.active.seq))
    }

    fn sync(&mut self) -> Result<(), WalError> {
        if self.active.synced < self.active.len {
            self.active
                .file
                .sync_data()
                .map_err(|e| WalError::io("sync", self.path(), e))?;
            self.active.synced = self.active.len;
        }
        Ok(())
    }

    fn write_buf(&mut self, buf: &mut Vec<u8>) -> Result<(), WalError> {
        if !buf.is_empty() {
            let result = self.active.file.write_all(buf);
            // Count the bytes even on failure: the file may hold part of them.
            self.active.len += buf.len() as u64;
            buf.clear();
            result.map_err(|e| WalError::io("write", self.path(), e))?;
        }
        Ok(())
    }

    /// Seals the active segment (synced) and starts the next one.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let next = create_segment(&*self.storage, self.active.seq + 1, &self.options)?;
        self.sealed_bytes += self.active.len;
        self.active = next;
        Ok(())
    }

    /// Writes `bodies` as frames, one write per segment touched, rotating
    /// when a segment fills up. Returns whether it rotated.
    fn write(&mut self, bodies: &[Vec<u8>]) -> Result<bool, WalError> {
        let mut rotated = false;
        let mut buf = Vec::with_capacity(
            bodies
                .iter()
                .map(|b| b.len() + FRAME_HEADER_LEN as usize)
                .sum(),
        );
        for body in bodies {
            let offset = self.active.len + buf.len() as u64;
            encode_frame(&mut buf, self.active.salt, self.active.synced, body);
            if offset + (FRAME_HEADER_LEN + body.len() as u64) >= self.options.segment_size {
                self.write_buf(&mut buf)?;
                self.rotate()?;
                rotated = true;
                // Within a long batch too, so that disk use stays bounded.
                // A failed compaction leaves the log as it was.
                if self.should_compact() {
                    let _ = self.compact_now();
                }
            }
        }
        self.write_buf(&mut buf)?;
        Ok(rotated)
    }

    fn should_compact(&self) -> bool {
        self.options.auto_compact
            && self.sealed_bytes >= self.base_bytes.max(self.options.segment_size)
    }

    /// Compacts every sealed file. A failure leaves the log as it was.
    fn compact_now(&mut self) -> Result<CompactionReport, WalError> {
        let report = compact(&*self.storage, self.active.seq - 1, &self.options)?;
        self.base_bytes = report.bytes_out;
        self.sealed_bytes = 0;
        Ok(report)
    }

    /// The writer thread's loop; returns when the log is closed.
    pub(crate) fn run(mut self, shared: &Shared) {
        let mut last_sync = Instant::now();
        let interval = match self.options.durability {
            Durability::Interval(d) => Some(d),
            _ => None,
        };
        let mut st = shared.state.lock();
        loop {
            // Wait for something to do.
            loop {
                let dirty = st.written > st.durable;
                let interval_due = dirty && interval.is_some_and(|d| last_sync.elapsed() >= d);
                if !st.queue.is_empty()
                    || st.closing
                    || !st.compactions.is_empty()
                    || (st.want_durable > st.durable && st.poison.is_none())
                    || interval_due
                {
                    break;
                }
                match interval {
                    Some(d) if dirty => {
                        let left = d
                            .saturating_sub(last_sync.elapsed())
                            .max(Duration::from_micros(100));
                        shared.work.wait_for(&mut st, left);
                    }
                    _ => shared.work.wait(&mut st),
                }
            }
            let bodies = std::mem::take(&mut st.queue);
            st.pending_bytes = 0;
            let last = st.appended;
            let wants_sync = st.want_durable > st.durable || st.closing;
            let closing = st.closing;
            let compaction = st.compactions.pop();
            let poisoned = st.poison.clone();
            drop(st);

            let mut rotated = false;
            let mut synced = false;
            let result = match poisoned {
                Some(p) => Err(WalError::Poisoned(p)),
                None => (|| {
                    rotated = self.write(&bodies)?;
                    if compaction.is_some() && self.active.len > HEADER_LEN {
                        // Seal what the caller appended before asking.
                        self.rotate()?;
                        rotated = true;
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

            st = shared.state.lock();
            match result {
                Ok(()) => {
                    st.written = last;
                    if synced {
                        st.durable = last;
                    }
                }
                Err(WalError::Poisoned(_)) => {}
                Err(e) => st.poison = Some(Arc::new(e)),
            }
            shared.done.notify_all();
            let poison = st.poison.clone();
            if compaction.is_some() || (rotated && poison.is_none() && self.should_compact()) {
                drop(st);
                let outcome = match poison {
                    Some(p) => Err(WalError::Poisoned(p)),
                    None => self.compact_now(),
                };
                match compaction {
                    Some(reply) => {
                        let _ = reply.send(outcome);
                    }
                    None => drop(outcome),
                }
                st = shared.state.lock();
            }
            if closing && st.queue.is_empty() && st.compactions.is_empty() {
                st.stopped = true;
                shared.done.notify_all();
                return;
            }
        }
    }
}

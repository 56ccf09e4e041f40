//! An in-memory [`Storage`] for crash and fault tests.
//!
//! Each file keeps two images, as redb's crash tests do: what was written
//! (what a reader of the running process sees) and what was synced (what
//! survives a power loss). The directory keeps two maps the same way: the
//! names as they are and the names as of the last directory sync.
//!
//! - [`SimStorage::crash`] returns the storage a reboot would find: the
//!   synced directory, each file's synced image, plus optionally a torn
//!   part of the unsynced bytes ([`Torn`]).
//! - [`SimStorage::cut_power_after`] makes every mutating operation after
//!   the Nth fail, as if the machine died there; the workload carries on
//!   against a dead disk, then the test calls `crash`.
//! - Faults: the Nth write fails (after writing half its bytes), the Nth
//!   sync fails (syncing nothing), or the disk is full past N bytes (a
//!   write fills it up, then fails with `StorageFull`).

use super::storage::{LockGuard, ReadFile, Storage, WriteFile};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// What of the unsynced bytes of a file survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Torn {
    /// Nothing: each file is its synced image.
    Lost,
    /// The first `n` unsynced bytes, as written.
    Prefix(usize),
    /// `n` bytes of zeros (the size reached the disk, the data did not).
    Zeroed(usize),
    /// `n` unsynced bytes whose first half is zeros (a later page reached
    /// the disk, an earlier one did not).
    LaterPageOnly(usize),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct Sim {
    inodes: Vec<Inode>,
    dir: BTreeMap<String, usize>,
    durable_dir: BTreeMap<String, usize>,
    locked: bool,
    ops: u64,
    cut_after: Option<u64>,
    writes: u64,
    syncs: u64,
    fail_write: Option<u64>,
    fail_sync: Option<u64>,
    space: Option<u64>,
    sync_delay: Option<std::time::Duration>,
    /// Data syncs wait while this is set.
    syncs_held: bool,
}

impl Sim {
    /// Counts a mutating operation; fails once the power is cut.
    fn begin(&mut self) -> io::Result<()> {
        if self.cut_after.is_some_and(|n| self.ops >= n) {
            return Err(io::Error::other("simulated power loss"));
        }
        self.ops += 1;
        Ok(())
    }

    fn inode(&self, name: &str) -> io::Result<usize> {
        self.dir
            .get(name)
            .copied()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn used(&self) -> u64 {
        self.dir
            .values()
            .map(|&i| self.inodes[i].data.len() as u64)
            .sum()
    }
}

/// An in-memory directory; clones share it (like two handles on one disk).
#[derive(Debug, Clone, Default)]
pub(crate) struct SimStorage {
    sim: Arc<Mutex<Sim>>,
}

impl SimStorage {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The storage a reboot finds now: synced names and bytes, plus `torn`.
    pub(crate) fn crash(&self, torn: Torn) -> SimStorage {
        let sim = self.sim.lock();
        let mut fresh = Sim::default();
        for (name, &ino) in &sim.durable_dir {
            let inode = &sim.inodes[ino];
            let mut data = inode.synced.clone();
            if inode.data.starts_with(&inode.synced) {
                let unsynced = &inode.data[inode.synced.len()..];
                match torn {
                    Torn::Lost => {}
                    Torn::Prefix(n) => data.extend_from_slice(&unsynced[..n.min(unsynced.len())]),
                    Torn::Zeroed(n) => data.resize(data.len() + n.min(unsynced.len()), 0),
                    Torn::LaterPageOnly(n) => {
                        let kept = &unsynced[..n.min(unsynced.len())];
                        data.resize(data.len() + kept.len() / 2, 0);
                        data.extend_from_slice(&kept[kept.len() / 2..]);
                    }
                }
            }
            fresh.inodes.push(Inode {
                synced: data.clone(),
                data,
            });
            fresh.dir.insert(name.clone(), fresh.inodes.len() - 1);
        }
        fresh.durable_dir = fresh.dir.clone();
        SimStorage {
            sim: Arc::new(Mutex::new(fresh)),
        }
    }

    /// A copy of the current (written) state, as if everything was synced.
    pub(crate) fn snapshot(&self) -> SimStorage {
        let sim = self.sim.lock();
        let mut fresh = Sim::default();
        for (name, &ino) in &sim.dir {
            let data = sim.inodes[ino].data.clone();
            fresh.inodes.push(Inode {
                synced: data.clone(),
                data,
            });
            fresh.dir.insert(name.clone(), fresh.inodes.len() - 1);
        }
        fresh.durable_dir = fresh.dir.clone();
        SimStorage {
            sim: Arc::new(Mutex::new(fresh)),
        }
    }

    /// A copy of the directory as another process would find it after this
    /// one died: everything written, with what is synced and what is not
    /// (no lock, no faults).
    pub(crate) fn fork(&self) -> SimStorage {
        let sim = self.sim.lock();
        let fresh = Sim {
            inodes: sim.inodes.clone(),
            dir: sim.dir.clone(),
            durable_dir: sim.durable_dir.clone(),
            ..Sim::default()
        };
        SimStorage {
            sim: Arc::new(Mutex::new(fresh)),
        }
    }

    /// Every mutating operation after `n` more fails (the power is gone).
    pub(crate) fn cut_power_after(&self, n: u64) {
        let mut sim = self.sim.lock();
        sim.cut_after = Some(sim.ops + n);
    }

    /// Whether the power was cut (an operation was refused or would be).
    pub(crate) fn power_is_cut(&self) -> bool {
        let sim = self.sim.lock();
        sim.cut_after.is_some_and(|n| sim.ops >= n)
    }

    /// The `n`th write from now (1-based) fails after writing half its bytes.
    pub(crate) fn fail_write(&self, n: u64) {
        let mut sim = self.sim.lock();
        sim.fail_write = Some(sim.writes + n);
    }

    /// The `n`th data sync from now (1-based) fails, syncing nothing.
    pub(crate) fn fail_sync(&self, n: u64) {
        let mut sim = self.sim.lock();
        sim.fail_sync = Some(sim.syncs + n);
    }

    /// The disk holds at most `bytes` more than it does now.
    pub(crate) fn limit_space(&self, bytes: u64) {
        let mut sim = self.sim.lock();
        sim.space = Some(sim.used() + bytes);
    }

    /// Every data sync takes this long (as a disk would), so that callers
    /// pile up behind it.
    pub(crate) fn sync_delay(&self, delay: std::time::Duration) {
        self.sim.lock().sync_delay = Some(delay);
    }

    /// Makes every data sync wait until [`release_syncs`](Self::release_syncs)
    /// (for at most 30 s): a caller waiting for one stays waiting.
    pub(crate) fn hold_syncs(&self) {
        self.sim.lock().syncs_held = true;
    }

    /// Lets data syncs go on.
    pub(crate) fn release_syncs(&self) {
        self.sim.lock().syncs_held = false;
    }

    /// Data syncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.sim.lock().syncs
    }

    /// Total bytes of the files in the directory.
    pub(crate) fn used(&self) -> u64 {
        self.sim.lock().used()
    }

    /// The written bytes of a file.
    pub(crate) fn read(&self, name: &str) -> Option<Vec<u8>> {
        let sim = self.sim.lock();
        sim.dir.get(name).map(|&i| sim.inodes[i].data.clone())
    }

    /// Replaces a file's contents, written and synced (for corruption tests).
    pub(crate) fn overwrite(&self, name: &str, data: Vec<u8>) {
        let mut sim = self.sim.lock();
        let ino = sim.dir[name];
        sim.inodes[ino] = Inode {
            synced: data.clone(),
            data,
        };
    }

    /// The names in the directory, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.sim.lock().dir.keys().cloned().collect()
    }
}

struct SimLock(Arc<Mutex<Sim>>);

impl Drop for SimLock {
    fn drop(&mut self) {
        self.0.lock().locked = false;
    }
}

impl Storage for SimStorage {
    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }

    fn lock(&self) -> io::Result<LockGuard> {
        let mut sim = self.sim.lock();
        if sim.locked {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        sim.locked = true;
        Ok(LockGuard::new(SimLock(Arc::clone(&self.sim))))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        if sim.dir.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        sim.inodes.push(Inode::default());
        let ino = sim.inodes.len() - 1;
        sim.dir.insert(name.to_owned(), ino);
        Ok(Box::new(SimFile {
            sim: Arc::clone(&self.sim),
            ino,
        }))
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
        let sim = self.sim.lock();
        let data = sim.inodes[sim.inode(name)?].data.clone();
        Ok(Box::new(io::Cursor::new(data)))
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let sim = self.sim.lock();
        Ok(sim.inodes[sim.inode(name)?].data.len() as u64)
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        sim.syncs += 1;
        let ino = sim.inode(name)?;
        let inode = &mut sim.inodes[ino];
        inode.synced = inode.data.clone();
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        let ino = sim.inode(name)?;
        let inode = &mut sim.inodes[ino];
        inode
            .data
            .truncate(usize::try_from(len).unwrap_or(usize::MAX));
        inode.synced = inode.data.clone();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        let ino = sim.inode(from)?;
        sim.dir.remove(from);
        sim.dir.insert(to.to_owned(), ino);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        sim.inode(name)?;
        sim.dir.remove(name);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        sim.durable_dir = sim.dir.clone();
        Ok(())
    }
}

struct SimFile {
    sim: Arc<Mutex<Sim>>,
    ino: usize,
}

impl WriteFile for SimFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut sim = self.sim.lock();
        sim.begin()?;
        sim.writes += 1;
        if sim.fail_write == Some(sim.writes) {
            sim.inodes[self.ino]
                .data
                .extend_from_slice(&data[..data.len() / 2]);
            return Err(io::Error::other("simulated write failure"));
        }
        if let Some(space) = sim.space {
            let room = usize::try_from(space.saturating_sub(sim.used())).unwrap_or(usize::MAX);
            if data.len() > room {
                sim.inodes[self.ino].data.extend_from_slice(&data[..room]);
                return Err(io::ErrorKind::StorageFull.into());
            }
        }
        sim.inodes[self.ino].data.extend_from_slice(data);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let delay = self.sim.lock().sync_delay;
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.sim.lock().syncs_held && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let mut sim = self.sim.lock();
        sim.begin()?;
        sim.syncs += 1;
        if sim.fail_sync == Some(sim.syncs) {
            return Err(io::Error::other("simulated sync failure"));
        }
        let inode = &mut sim.inodes[self.ino];
        inode.synced = inode.data.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(s: &SimStorage, name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        s.open_read(name).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn a_crash_keeps_what_was_synced() {
        let s = SimStorage::new();
        let mut f = s.create("a").unwrap();
        f.write_all(b"durable").unwrap();
        f.sync_data().unwrap();
        s.sync_dir().unwrap();
        f.write_all(b"-lost").unwrap();
        let mut g = s.create("b").unwrap(); // never made durable by a dir sync
        g.write_all(b"x").unwrap();
        g.sync_data().unwrap();

        let after = s.crash(Torn::Lost);
        assert_eq!(after.names(), vec!["a".to_string()]);
        assert_eq!(read_all(&after, "a"), b"durable");
        assert_eq!(read_all(&s.crash(Torn::Prefix(3)), "a"), b"durable-lo");
        assert_eq!(read_all(&s.crash(Torn::Zeroed(2)), "a"), b"durable\0\0");
        assert_eq!(
            read_all(&s.crash(Torn::LaterPageOnly(4)), "a"),
            b"durable\0\0os"
        );
    }

    #[test]
    fn renames_are_durable_only_after_a_directory_sync() {
        let s = SimStorage::new();
        s.create("a").unwrap().sync_data().unwrap();
        s.sync_dir().unwrap();
        s.rename("a", "b").unwrap();
        assert_eq!(s.crash(Torn::Lost).names(), vec!["a".to_string()]);
        s.sync_dir().unwrap();
        assert_eq!(s.crash(Torn::Lost).names(), vec!["b".to_string()]);
    }

    #[test]
    fn faults_fire_once_where_asked() {
        let s = SimStorage::new();
        let mut f = s.create("a").unwrap();
        s.fail_write(2);
        f.write_all(b"ok").unwrap();
        assert!(f.write_all(b"half").is_err());
        assert_eq!(read_all(&s, "a"), b"okha");
        s.fail_sync(1);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        s.limit_space(3);
        let err = f.write_all(b"12345").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(s.used(), 7);
        s.cut_power_after(0);
        assert!(s.power_is_cut());
        assert!(s.sync_dir().is_err());
        assert_eq!(s.syncs(), 2);
    }

    #[test]
    fn the_lock_is_exclusive() {
        let s = SimStorage::new();
        let guard = s.lock().unwrap();
        assert_eq!(
            s.clone().lock().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(guard);
        assert!(s.lock().is_ok());
    }
}

//! The directory the write-ahead file lives in, behind a trait.
//!
//! [`Storage`] names the few operations the log needs: list, create,
//! read, append, sync a file's data, truncate, rename, remove, sync the
//! directory, and lock it. [`FsStorage`] does them on real files;
//! `SimStorage` (tests only, `sim.rs`) keeps a written and a synced image
//! of each file so that tests can cut the power at any point.
//!
//! Files are named by plain strings relative to the directory; the
//! storage decides what they are.

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A directory of files, as the write-ahead file uses it.
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// A human-readable name for `name`, for error messages.
    fn describe(&self, name: &str) -> String;
    /// Takes the directory's exclusive lock, held until the guard drops.
    /// Fails with [`io::ErrorKind::WouldBlock`] when someone else holds it.
    fn lock(&self) -> io::Result<LockGuard>;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates a new, empty file (mode 0600); fails if it exists.
    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>>;
    /// Opens a file for reading from the start.
    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>>;
    /// The length of a file in bytes.
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Makes a whole existing file durable (`fdatasync`).
    fn sync_file(&self, name: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes and syncs it.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable after [`Storage::sync_dir`]).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file (durable after [`Storage::sync_dir`]).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// A file open for appending.
pub(crate) trait WriteFile: Send {
    /// Appends all of `data` (or fails, possibly after writing a part).
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes what was written durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// A file open for reading.
pub(crate) trait ReadFile: io::Read + io::Seek + Send {}
impl<T: io::Read + io::Seek + Send> ReadFile for T {}

/// A storage whose every call goes to `inner`, except that each file it
/// opens for reading is what `wrap` (given the file's name) makes of it:
/// a compaction's reads that give up once the log closes, a test that acts
/// in the middle of a read.
pub(crate) struct WrappedReads<'a, F> {
    inner: &'a dyn Storage,
    wrap: F,
}

impl<'a, F> WrappedReads<'a, F>
where
    F: Fn(&str, Box<dyn ReadFile>) -> Box<dyn ReadFile> + Send + Sync,
{
    pub(crate) fn new(inner: &'a dyn Storage, wrap: F) -> Self {
        WrappedReads { inner, wrap }
    }
}

impl<F> fmt::Debug for WrappedReads<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WrappedReads").field(&self.inner).finish()
    }
}

impl<F> Storage for WrappedReads<'_, F>
where
    F: Fn(&str, Box<dyn ReadFile>) -> Box<dyn ReadFile> + Send + Sync,
{
    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
    fn lock(&self) -> io::Result<LockGuard> {
        self.inner.lock()
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        self.inner.create(name)
    }
    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
        Ok((self.wrap)(name, self.inner.open_read(name)?))
    }
    fn len(&self, name: &str) -> io::Result<u64> {
        self.inner.len(name)
    }
    fn sync_file(&self, name: &str) -> io::Result<()> {
        self.inner.sync_file(name)
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.inner.truncate(name, len)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
}

/// Holds a directory's lock; dropping it releases the lock.
pub(crate) struct LockGuard(#[allow(dead_code)] Box<dyn Any + Send + Sync>);

impl LockGuard {
    pub(crate) fn new(inner: impl Any + Send + Sync) -> Self {
        LockGuard(Box::new(inner))
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Real files in a directory.
#[derive(Debug, Clone)]
pub(crate) struct FsStorage {
    dir: PathBuf,
}

/// How long an open waits for a lock held by its own process (see
/// `FsStorage::lock`).
const SAME_PROCESS_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl FsStorage {
    /// The process id written in a lock file by its holder, if readable.
    fn holder(file: &mut fs::File) -> Option<u32> {
        use std::io::{Read, Seek};
        let mut text = String::new();
        file.seek(io::SeekFrom::Start(0)).ok()?;
        file.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// Uses `dir`, creating it (mode 0700) if needed.
    pub(crate) fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        Ok(FsStorage { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn options() -> OpenOptions {
        let mut options = OpenOptions::new();
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
    }
}

impl Storage for FsStorage {
    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    // `File::try_lock` (Rust 1.89, the crate's minimum). The holder writes
    // its process id into the file, so that a tool refused the lock can
    // say who holds it (`spool` in the `cli` feature).
    fn lock(&self) -> io::Result<LockGuard> {
        let mut file = Self::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path(super::format::LOCK_FILE))?;
        // Held by this very process, the lock is usually a queue whose
        // last handle was just dropped while a thread of the library still
        // held it for a moment (the metrics reporter, a worker finishing its
        // handler): wait a little for it to go, then give up as for another
        // process. A second open of a queue this process holds waits too.
        let give_up = std::time::Instant::now() + SAME_PROCESS_LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    // From the start: reading the holder (below) moved
                    // the position past the old text, and writing there
                    // would leave zeros before the id.
                    file.set_len(0)?;
                    io::Seek::rewind(&mut file)?;
                    writeln!(file, "{}", std::process::id())?;
                    return Ok(LockGuard::new(file));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let ours = Self::holder(&mut file) == Some(std::process::id());
                    if !ours || std::time::Instant::now() >= give_up {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        let file = Self::options()
            .write(true)
            .create_new(true)
            .open(self.path(name))?;
        Ok(Box::new(FsFile(file)))
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(self.path(name))?))
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name))?.len())
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(self.path(name))?
            .sync_data()
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    // Renaming over a file and removing one free its blocks: see
    // `Unlinked` for why that is done a step at a time.
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let replaced = Unlinked::open(&self.path(to));
        fs::rename(self.path(from), self.path(to))?;
        if let Some(replaced) = replaced {
            replaced.release();
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let removed = Unlinked::open(&self.path(name));
        fs::remove_file(self.path(name))?;
        if let Some(removed) = removed {
            removed.release();
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        #[cfg(unix)]
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// Bytes an unlinked file gives back at a time (see [`Unlinked`]).
const RELEASE_STEP: u64 = 1 << 20;

/// A file about to lose its name (removed, or replaced by a rename), held
/// open so that its blocks are freed a [`RELEASE_STEP`] at a time once the
/// name is gone, rather than all at once by the `unlink` or `rename`.
///
/// Why: freeing a 64 MiB segment's blocks in one call held ext4's journal
/// for 8-20 ms (the compactor's `rename` of a base file over the segment it
/// replaces, and its `remove` of the others), and the writer's
/// `fdatasync`, which commits that journal, waited as long: `Sync` sends
/// during a compaction stalled 8-14 ms (benches/compaction.rs). Cut down a
/// step at a time, each step holds the journal for well under a
/// millisecond and the writer's commits go through between them.
///
/// What a crash sees does not change: the name goes (or is replaced) in
/// one system call as before; an inode that loses its last name while held
/// open is freed by the file system on its next mount if the process dies
/// before releasing it.
struct Unlinked(File);

impl Unlinked {
    /// Opens the file at `path` for the release, if it exists and can be
    /// opened for writing (if not, it is freed the ordinary way). Unix
    /// only: elsewhere a file held open may refuse to be renamed over.
    fn open(path: &Path) -> Option<Self> {
        if !cfg!(unix) {
            return None;
        }
        OpenOptions::new().write(true).open(path).ok().map(Unlinked)
    }

    /// Cuts the file, now without a name, down to nothing a step at a time;
    /// the rest (if a step fails) is freed when it is closed. Best effort:
    /// the removal or rename has already succeeded.
    fn release(self) {
        let Ok(metadata) = self.0.metadata() else {
            return;
        };
        // Another name still holds it (a hard link an operator made, for
        // a backup say): its data is that name's, never cut.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if metadata.nlink() > 0 {
                return;
            }
        }
        let mut len = metadata.len();
        while len > 0 {
            len = len.saturating_sub(RELEASE_STEP);
            if self.0.set_len(len).is_err() {
                return;
            }
        }
    }
}

struct FsFile(File);

impl WriteFile for FsFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn files_round_trip_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path().join("q")).unwrap();
        let mut file = storage.create("a").unwrap();
        file.write_all(b"hello world").unwrap();
        file.sync_data().unwrap();
        assert!(storage.create("a").is_err(), "create never overwrites");
        assert_eq!(storage.len("a").unwrap(), 11);
        storage.truncate("a", 5).unwrap();
        storage.rename("a", "b").unwrap();
        storage.sync_dir().unwrap();
        let mut text = String::new();
        storage
            .open_read("b")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        assert_eq!(storage.list().unwrap(), vec!["b".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("q/b"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        storage.remove("b").unwrap();
        assert!(storage.list().unwrap().is_empty());
    }

    /// Replacing or removing a file of several release steps: the name
    /// then holds the new file or nothing, and the old file, still open
    /// elsewhere, has been cut down to nothing (on Unix, where it is).
    #[cfg(unix)]
    #[test]
    fn replaced_and_removed_files_are_released_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let big = vec![7u8; (RELEASE_STEP * 3 + 5) as usize];
        for name in ["old", "gone"] {
            let mut file = storage.create(name).unwrap();
            file.write_all(&big).unwrap();
        }
        let mut new = storage.create("new").unwrap();
        new.write_all(b"new").unwrap();
        let old = File::open(dir.path().join("old")).unwrap();
        let gone = File::open(dir.path().join("gone")).unwrap();
        storage.rename("new", "old").unwrap();
        storage.remove("gone").unwrap();
        assert_eq!(fs::read(dir.path().join("old")).unwrap(), b"new");
        assert_eq!(storage.list().unwrap(), vec!["old".to_string()]);
        assert_eq!(old.metadata().unwrap().len(), 0);
        assert_eq!(gone.metadata().unwrap().len(), 0);
        // A rename onto a new name and a removal of a missing file.
        storage.rename("old", "other").unwrap();
        assert_eq!(fs::read(dir.path().join("other")).unwrap(), b"new");
        let missing = storage.remove("missing").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    /// A file with another name (a hard link made for a backup) keeps
    /// its data when spool removes or replaces its own name for it.
    #[cfg(unix)]
    #[test]
    fn a_file_linked_elsewhere_is_never_cut() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let big = vec![7u8; (RELEASE_STEP * 2 + 5) as usize];
        for name in ["replaced", "removed"] {
            let mut file = storage.create(name).unwrap();
            file.write_all(&big).unwrap();
            fs::hard_link(
                dir.path().join(name),
                dir.path().join(format!("{name}.bak")),
            )
            .unwrap();
        }
        let mut new = storage.create("new").unwrap();
        new.write_all(b"new").unwrap();
        storage.rename("new", "replaced").unwrap();
        storage.remove("removed").unwrap();
        for name in ["replaced.bak", "removed.bak"] {
            assert_eq!(fs::read(dir.path().join(name)).unwrap(), big, "{name}");
        }
    }

    #[test]
    fn the_lock_refuses_a_second_holder_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let guard = storage.lock().unwrap();
        let holder = fs::read_to_string(dir.path().join(super::super::format::LOCK_FILE)).unwrap();
        assert_eq!(holder, format!("{}\n", std::process::id()));
        let err = storage.lock().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(guard);
        assert!(storage.lock().is_ok());
    }

    /// Found by CI (`spool` said "another process" instead of the
    /// holder's id, now and then): an open that waited for its own
    /// process's lock to go wrote its id after the old one's length, past
    /// a run of zeros, which no reader could parse.
    #[test]
    fn a_lock_taken_after_waiting_for_this_process_names_it_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path()).unwrap();
        let guard = storage.lock().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            drop(guard);
        });
        // Held by this process: the second lock waits for the first.
        let _second = storage.lock().unwrap();
        release.join().unwrap();
        let holder = fs::read(dir.path().join(super::super::format::LOCK_FILE)).unwrap();
        assert_eq!(holder, format!("{}\n", std::process::id()).into_bytes());
    }
}

//! The storage engine's view of a disk: one directory of named files.
//!
//! Behind a trait so that tests (and a simulator) can model a crash: the
//! in-memory disk keeps, per file, how much was made durable by `sync`, and
//! [`MemDisk::crash`] throws away everything after that, which is what a
//! power loss does to data that was written but not fsynced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::WriterHost;

/// A file open for appending.
pub trait DiskFile: Send {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
}

pub trait Disk: Send + Sync + 'static {
    /// Where the files are, for error messages.
    fn path(&self, name: &str) -> PathBuf;
    fn list(&self) -> io::Result<Vec<String>>;
    fn len(&self, name: &str) -> io::Result<u64>;
    fn open_read(&self, name: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Creates (or empties) a file for writing.
    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>>;
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Atomically replaces `to` with `from` and makes the rename durable.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes an existing file's contents durable. Recovery needs it: a node
    /// that stopped on a failed write restarts with its page cache intact,
    /// so what it reads back may never have reached the disk.
    fn sync_file(&self, name: &str) -> io::Result<()>;
    fn exists(&self, name: &str) -> bool {
        self.len(name).is_ok()
    }
    /// Where the log and snapshot writers of this disk run: on threads of
    /// their own, since a disk's calls block, unless it says otherwise.
    fn writer_host(&self) -> WriterHost {
        WriterHost::Thread
    }
}

/// The real file system.
#[derive(Debug, Clone)]
pub struct FsDisk {
    dir: PathBuf,
}

impl FsDisk {
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<FsDisk> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FsDisk { dir })
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

struct FsFile(File);

impl DiskFile for FsFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[allow(clippy::disallowed_methods, reason = "the production Disk: the one place that touches files")]
impl Disk for FsDisk {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name))?.len())
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, File::open(self.path(name))?)))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(self.path(name))?;
        // The new name must survive a crash too, or a synced log could vanish
        // with its directory entry.
        self.sync_dir()?;
        Ok(Box::new(FsFile(file)))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))?;
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))?;
        self.sync_dir()
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        OpenOptions::new().write(true).open(self.path(name))?.sync_all()
    }
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    synced: usize,
}

/// An in-memory disk for tests. Directory operations are durable at once;
/// file contents only up to the last `sync`, and a `sync` that fails loses
/// what it would have made durable.
#[derive(Debug, Default, Clone)]
pub struct MemDisk {
    files: Arc<Mutex<BTreeMap<String, MemFile>>>,
    /// While set, every call that would change the disk fails with this.
    failing: Arc<Mutex<Option<io::ErrorKind>>>,
    refused: Arc<AtomicU64>,
    writers: WriterHost,
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// This disk (the same files), with its writers run where `host` says:
    /// a simulator runs them as tasks it schedules, since this disk never
    /// blocks.
    pub fn with_writer_host(&self, host: WriterHost) -> MemDisk {
        MemDisk { writers: host, ..self.clone() }
    }

    /// From now on every write, sync, create, truncate, rename and removal
    /// fails with `kind` (`StorageFull` for a full disk, `Other` for an I/O
    /// error), until called with `None`. Reads keep working.
    pub fn fail(&self, kind: Option<io::ErrorKind>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = kind;
    }

    pub fn failing(&self) -> Option<io::ErrorKind> {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many calls the disk has refused, ever.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn check(&self) -> io::Result<()> {
        match self.failing() {
            Some(kind) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(io::Error::new(kind, "simulated disk fault"))
            }
            None => Ok(()),
        }
    }

    /// Loses every byte that was not synced, like a power failure.
    pub fn crash(&self) {
        for file in self.lock().values_mut() {
            file.data.truncate(file.synced);
        }
    }

    /// Direct access for tests that damage files on purpose.
    pub fn with_file<R>(&self, name: &str, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        let mut files = self.lock();
        let file = files.get_mut(name)?;
        let r = f(&mut file.data);
        file.synced = file.synced.min(file.data.len());
        Some(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemFile>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct MemHandle {
    disk: MemDisk,
    name: String,
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name} does not exist"))
}

impl DiskFile for MemHandle {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.disk.check()?;
        let mut files = self.disk.lock();
        files.get_mut(&self.name).ok_or_else(|| not_found(&self.name))?.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.disk.sync_file(&self.name)
    }
}

impl Disk for MemDisk {
    fn path(&self, name: &str) -> PathBuf {
        Path::new("mem:").join(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        self.lock().get(name).map(|f| f.data.len() as u64).ok_or_else(|| not_found(name))
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        let data = self.lock().get(name).ok_or_else(|| not_found(name))?.data.clone();
        Ok(Box::new(io::Cursor::new(data)))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>> {
        self.check()?;
        self.lock().insert(name.to_string(), MemFile::default());
        Ok(Box::new(MemHandle { disk: self.clone(), name: name.to_string() }))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.check()?;
        let mut files = self.lock();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        file.data.truncate(len as usize);
        file.synced = file.data.len();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.check()?;
        let mut files = self.lock();
        let file = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_string(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.check()?;
        self.lock().remove(name).map(|_| ()).ok_or_else(|| not_found(name))
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        let failed = self.check();
        let mut files = self.lock();
        let file = files.get_mut(name).ok_or_else(|| not_found(name))?;
        if failed.is_err() {
            // As Linux may after a failed fsync: the dirty pages are marked
            // clean or dropped, so what was not synced is gone even without
            // a crash, and a later fsync that succeeds does not bring it
            // back.
            file.data.truncate(file.synced);
            return failed;
        }
        file.synced = file.data.len();
        Ok(())
    }

    fn writer_host(&self) -> WriterHost {
        self.writers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(disk: &MemDisk, name: &str) -> Vec<u8> {
        let mut data = Vec::new();
        disk.open_read(name).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    #[test]
    fn a_failed_sync_loses_what_was_not_synced_for_good() {
        let disk = MemDisk::new();
        let mut file = disk.create("log").unwrap();
        file.write_all(b"synced ").unwrap();
        file.sync().unwrap();
        file.write_all(b"pending").unwrap();
        assert_eq!(contents(&disk, "log"), b"synced pending");

        disk.fail(Some(io::ErrorKind::Other));
        assert!(file.sync().is_err());
        assert_eq!(contents(&disk, "log"), b"synced ");
        disk.fail(None);
        file.sync().unwrap();
        file.write_all(b"later").unwrap();
        file.sync().unwrap();
        disk.crash();
        assert_eq!(contents(&disk, "log"), b"synced later");
    }
}

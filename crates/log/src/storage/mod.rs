//! The file-system boundary: every byte chorus-log reads or writes goes
//! through [`Storage`].
//!
//! Two implementations: [`FsStorage`] (std::fs, production) and
//! [`FaultyStorage`] (in memory, deterministic from a seed, injects crashes
//! that lose unsynced writes, torn writes, fsync errors and ENOSPC; used by the
//! tests and the simulator). The durability model both follow is POSIX's:
//! file data is durable only after [`Storage::sync`] returns `Ok`; a file's
//! creation, rename or removal is durable only after [`Storage::sync_dir`] on
//! its directory returns `Ok`.

mod faulty;

use std::io;
use std::path::Path;

pub use faulty::{FaultConfig, FaultyStorage, StorageStats};

/// How to open a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist (its directory entry is durable
    /// only after `sync_dir`).
    pub create: bool,
    /// Every write is durable when it returns (`O_DSYNC`): ra's `o_sync`
    /// write strategy.
    pub sync_writes: bool,
}

impl OpenOptions {
    pub const EXISTING: OpenOptions = OpenOptions {
        create: false,
        sync_writes: false,
    };
    pub const CREATE: OpenOptions = OpenOptions {
        create: true,
        sync_writes: false,
    };
}

/// The small file-system interface chorus-log needs. Paths are absolute or
/// relative to the process; implementations need not support anything else.
pub trait Storage: Send + Sync + 'static {
    type File: Send + 'static;

    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens (or creates, see [`OpenOptions`]) a file for reading and writing.
    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<Self::File>;
    /// Writes all of `data` at the end of the file.
    fn append(&self, file: &mut Self::File, data: &[u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset` (extending the file if needed).
    fn write_at(&self, file: &mut Self::File, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file).
    fn read_at(&self, file: &Self::File, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    fn len(&self, file: &Self::File) -> io::Result<u64>;
    /// Makes the file's data durable (fdatasync).
    fn sync(&self, file: &mut Self::File) -> io::Result<()>;
    fn truncate(&self, file: &mut Self::File, len: u64) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the entries in `dir`, sorted. A missing
    /// directory is `NotFound`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// Reads a whole file.
pub fn read_file<S: Storage>(storage: &S, path: &Path) -> io::Result<Vec<u8>> {
    let file = storage.open(path, OpenOptions::EXISTING)?;
    read_all(storage, &file)
}

/// Reads a whole open file.
pub fn read_all<S: Storage>(storage: &S, file: &S::File) -> io::Result<Vec<u8>> {
    let len = storage.len(file)?;
    let mut buf = vec![0u8; len as usize];
    read_exact_at(storage, file, 0, &mut buf)?;
    Ok(buf)
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_exact_at<S: Storage>(
    storage: &S,
    file: &S::File,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = storage.read_at(file, offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        done += n;
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically and durably: write
/// `dir/name.tmp`, fsync it, rename it over `dir/name`, fsync `dir`. A crash at
/// any point leaves either the old file or the new one, never a mix.
pub fn write_file_atomic<S: Storage>(
    storage: &S,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    // A leftover temp file from a crash is garbage: start it afresh.
    match storage.remove(&temp) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = storage.open(&temp, OpenOptions::CREATE)?;
    storage.append(&mut file, bytes)?;
    // Durability: the data must be on disk before the rename can expose it.
    storage.sync(&mut file)?;
    drop(file);
    storage.rename(&temp, &target)?;
    // Durability: the rename itself is durable only once the directory is.
    storage.sync_dir(dir)?;
    Ok(())
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists<S: Storage>(storage: &S, path: &Path) -> io::Result<()> {
    match storage.remove(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Lists a directory, treating a missing one as empty.
pub fn list_or_empty<S: Storage>(storage: &S, dir: &Path) -> io::Result<Vec<String>> {
    match storage.list(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        other => other,
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

/// An open file of [`FsStorage`].
#[derive(Debug)]
pub struct FsFile {
    file: std::fs::File,
    len: u64,
}

impl Storage for FsStorage {
    type File = FsFile;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<FsFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut open = std::fs::OpenOptions::new();
        open.read(true).write(true).create(options.create);
        if options.sync_writes {
            open.custom_flags(libc::O_DSYNC);
        }
        let file = open.open(path)?;
        let len = file.metadata()?.len();
        Ok(FsFile { file, len })
    }

    fn append(&self, file: &mut FsFile, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.file.write_all_at(data, file.len)?;
        file.len += data.len() as u64;
        Ok(())
    }

    fn write_at(&self, file: &mut FsFile, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.file.write_all_at(data, offset)?;
        file.len = file.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn read_at(&self, file: &FsFile, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        file.file.read_at(buf, offset)
    }

    fn len(&self, file: &FsFile) -> io::Result<u64> {
        Ok(file.len)
    }

    fn sync(&self, file: &mut FsFile) -> io::Result<()> {
        file.file.sync_data()
    }

    fn truncate(&self, file: &mut FsFile, len: u64) -> io::Result<()> {
        file.file.set_len(len)?;
        file.len = len;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

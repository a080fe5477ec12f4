//! An in-memory [`Storage`] that injects faults, deterministically from a
//! seed: the same seed and the same sequence of calls give the same faults.
//!
//! Model (per file, "inode"): `data` is what reads see; `durable` is what
//! survives a crash. `sync` copies `data` to `durable`. Directory entries are
//! modelled the same way: `names` is what `list`/`open` see, `durable_names`
//! what survives; `sync_dir` copies one directory's entries across.
//! Directories themselves are always durable (chorus-log creates them once and
//! syncs their parent).
//!
//! [`FaultyStorage::crash`] simulates power loss and restart: every directory
//! reverts to its durable entries and every file to its durable bytes plus a
//! random prefix of its unsynced bytes (writeback may have started), part of
//! which may be garbage (a torn sector).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{OpenOptions, Storage};

/// Which faults to inject.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// The mutating operation with this number (counted from 0 across all
    /// files: open-with-create, append, write_at, sync, truncate, sync_dir,
    /// rename, remove) fails and the storage stops working, as if the machine
    /// died during it; a failing write leaves a random prefix of its bytes.
    /// Call [`FaultyStorage::crash`] to "reboot".
    pub crash_at_operation: Option<u64>,
    /// Probability that a `sync` fails with EIO. The unsynced data then stays
    /// un-durable (Linux may have dropped the dirty pages).
    pub sync_error_probability: f64,
    /// The `sync` with this number (counted from 0) fails with EIO.
    pub sync_error_at: Option<u64>,
    /// Total bytes the "disk" holds; writes that would exceed it fail with
    /// `StorageFull` (ENOSPC) and write nothing.
    pub capacity_bytes: Option<u64>,
}

/// Counters, for tests and the simulator's reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub operations: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub bytes_written: u64,
    pub crashes: u64,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// The lowest offset written or truncated since the last sync; `data`
    /// and `durable` agree below it. Lets a sync copy only what changed
    /// (a sync of a growing WAL would otherwise copy the whole file).
    dirty_from: Option<usize>,
}

impl Inode {
    fn touch(&mut self, offset: usize) {
        self.dirty_from = Some(self.dirty_from.map_or(offset, |from| from.min(offset)));
    }

    /// `durable` becomes a copy of `data`.
    fn make_durable(&mut self) {
        if let Some(from) = self.dirty_from.take() {
            let from = from.min(self.durable.len()).min(self.data.len());
            self.durable.truncate(from);
            self.durable.extend_from_slice(&self.data[from..]);
        }
    }
}

#[derive(Debug)]
struct State {
    rng: ChaCha8Rng,
    config: FaultConfig,
    stats: StorageStats,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    /// Set once the crash point is reached: every call fails until `crash`.
    dead: bool,
}

/// The in-memory, fault-injecting storage. Cloning shares the same "disk".
#[derive(Clone, Debug)]
pub struct FaultyStorage {
    state: Arc<Mutex<State>>,
}

/// An open file of [`FaultyStorage`].
#[derive(Debug)]
pub struct FaultyFile {
    inode: u64,
    sync_writes: bool,
}

fn dead_error() -> io::Error {
    io::Error::other("simulated machine crash")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FaultyStorage {
    pub fn new(seed: u64, config: FaultConfig) -> Self {
        FaultyStorage {
            state: Arc::new(Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(seed),
                config,
                stats: StorageStats::default(),
                inodes: HashMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                next_inode: 1,
                dead: false,
            })),
        }
    }

    /// A storage that injects nothing (until `set_faults`).
    pub fn reliable(seed: u64) -> Self {
        Self::new(seed, FaultConfig::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock poisons it; the state is still
        // consistent (every mutation is a few field writes), so carry on.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn set_faults(&self, config: FaultConfig) {
        self.lock().config = config;
    }

    pub fn stats(&self) -> StorageStats {
        self.lock().stats
    }

    /// True once the configured crash point was hit.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Power loss and reboot: unsynced data and directory entries are lost
    /// (a random prefix of unsynced file data may survive, possibly torn).
    /// Clears the crash point; other faults stay configured.
    pub fn crash(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        state.stats.crashes += 1;
        state.dead = false;
        state.config.crash_at_operation = None;
        state.names = state.durable_names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        let mut inode_ids: Vec<u64> = state.inodes.keys().copied().collect();
        inode_ids.sort_unstable(); // HashMap order is not deterministic
        for id in inode_ids {
            let inode = state.inodes.get_mut(&id).expect("listed");
            if inode.data == inode.durable {
                continue;
            }
            let common = inode
                .data
                .iter()
                .zip(inode.durable.iter())
                .take_while(|(a, b)| a == b)
                .count();
            let kept = state.rng.gen_range(common..=inode.data.len());
            let mut survived = inode.data[..kept].to_vec();
            if inode.durable.len() > kept {
                survived.extend_from_slice(&inode.durable[kept..]);
            }
            // Only bytes that were written since the last sync can be torn.
            let dirty_end = if inode.data.len() > inode.durable.len() {
                inode.data.len()
            } else {
                inode
                    .data
                    .iter()
                    .zip(inode.durable.iter())
                    .rposition(|(a, b)| a != b)
                    .map_or(common, |last| last + 1)
            };
            let torn_end = kept.min(dirty_end);
            // A torn sector: part of the unsynced region that made it out is
            // garbage.
            if torn_end > common && state.rng.gen_bool(0.3) {
                let start = state.rng.gen_range(common..torn_end);
                let end = state.rng.gen_range(start..=torn_end.min(start + 512));
                let zeros = state.rng.gen_bool(0.5);
                for byte in &mut survived[start..end] {
                    *byte = if zeros { 0 } else { state.rng.gen() };
                }
            }
            inode.data = survived.clone();
            inode.durable = survived;
            inode.dirty_from = None;
        }
    }

    /// Flips one bit of a file's data (durable and visible): models media
    /// corruption for the tests of "corruption is a typed error".
    pub fn corrupt(&self, path: &Path, offset: u64) -> io::Result<()> {
        let mut state = self.lock();
        let id = *state.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = state.inodes.get_mut(&id).expect("named inode exists");
        let offset = offset as usize;
        if offset >= inode.data.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "past end"));
        }
        inode.data[offset] ^= 0x10;
        if offset < inode.durable.len() {
            inode.durable[offset] ^= 0x10;
        }
        Ok(())
    }

    /// Total bytes of every file's visible data.
    pub fn used_bytes(&self) -> u64 {
        self.lock()
            .inodes
            .values()
            .map(|inode| inode.data.len() as u64)
            .sum()
    }

    /// Every visible file path, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().names.keys().cloned().collect()
    }
}

impl State {
    /// Counts a mutating operation; fails it if it is the crash point.
    fn mutation(&mut self) -> io::Result<bool> {
        if self.dead {
            return Err(dead_error());
        }
        let number = self.stats.operations;
        self.stats.operations += 1;
        if self.config.crash_at_operation == Some(number) {
            self.dead = true;
            return Ok(true);
        }
        Ok(false)
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(dead_error());
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    fn write(&mut self, file: &FaultyFile, offset: Option<u64>, data: &[u8]) -> io::Result<()> {
        let crashing = self.mutation()?;
        let inode_len = self
            .inodes
            .get(&file.inode)
            .ok_or_else(|| io::Error::other("file was removed by a crash"))?
            .data
            .len();
        let offset = offset.map(|o| o as usize).unwrap_or(inode_len);
        let new_end = (offset + data.len()).max(inode_len);
        if let Some(capacity) = self.config.capacity_bytes {
            if self.used() - inode_len as u64 + new_end as u64 > capacity {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (simulated)",
                ));
            }
        }
        let written = if crashing {
            self.rng.gen_range(0..=data.len())
        } else {
            data.len()
        };
        let inode = self.inodes.get_mut(&file.inode).expect("checked above");
        if inode.data.len() < offset + written {
            inode.data.resize(offset + written, 0);
        }
        inode.data[offset..offset + written].copy_from_slice(&data[..written]);
        inode.touch(offset);
        self.stats.bytes_written += written as u64;
        if crashing {
            return Err(dead_error());
        }
        if file.sync_writes {
            inode.make_durable();
        }
        Ok(())
    }
}

impl Storage for FaultyStorage {
    type File = FaultyFile;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, options: OpenOptions) -> io::Result<FaultyFile> {
        let mut state = self.lock();
        state.check_alive()?;
        if let Some(&inode) = state.names.get(path) {
            return Ok(FaultyFile {
                inode,
                sync_writes: options.sync_writes,
            });
        }
        if !options.create {
            return Err(not_found(path));
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() && !state.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        if state.mutation()? {
            return Err(dead_error());
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.names.insert(path.to_path_buf(), inode);
        Ok(FaultyFile {
            inode,
            sync_writes: options.sync_writes,
        })
    }

    fn append(&self, file: &mut FaultyFile, data: &[u8]) -> io::Result<()> {
        self.lock().write(file, None, data)
    }

    fn write_at(&self, file: &mut FaultyFile, offset: u64, data: &[u8]) -> io::Result<()> {
        self.lock().write(file, Some(offset), data)
    }

    fn read_at(&self, file: &FaultyFile, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let state = self.lock();
        state.check_alive()?;
        let inode = state
            .inodes
            .get(&file.inode)
            .ok_or_else(|| io::Error::other("file was removed by a crash"))?;
        let offset = offset as usize;
        if offset >= inode.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(inode.data.len() - offset);
        buf[..n].copy_from_slice(&inode.data[offset..offset + n]);
        Ok(n)
    }

    fn len(&self, file: &FaultyFile) -> io::Result<u64> {
        let state = self.lock();
        state.check_alive()?;
        Ok(state
            .inodes
            .get(&file.inode)
            .map(|inode| inode.data.len() as u64)
            .unwrap_or(0))
    }

    fn sync(&self, file: &mut FaultyFile) -> io::Result<()> {
        let mut state = self.lock();
        if state.mutation()? {
            return Err(dead_error());
        }
        let number = state.stats.syncs;
        state.stats.syncs += 1;
        let probability = state.config.sync_error_probability;
        let injected = state.config.sync_error_at == Some(number)
            || (probability > 0.0 && state.rng.gen_bool(probability.min(1.0)));
        if injected {
            return Err(io::Error::other("fsync: input/output error (simulated)"));
        }
        if let Some(inode) = state.inodes.get_mut(&file.inode) {
            inode.make_durable();
        }
        Ok(())
    }

    fn truncate(&self, file: &mut FaultyFile, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        if state.mutation()? {
            return Err(dead_error());
        }
        if let Some(inode) = state.inodes.get_mut(&file.inode) {
            let old_len = inode.data.len();
            inode.data.resize(len as usize, 0);
            inode.touch(old_len.min(len as usize));
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.mutation()? {
            return Err(dead_error());
        }
        state.stats.dir_syncs += 1;
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, inode)| (path.clone(), *inode))
            .collect();
        state.durable_names.retain(|path, _| !in_dir(path));
        state.durable_names.extend(current);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if state.mutation()? {
            return Err(dead_error());
        }
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        if !state.names.contains_key(path) {
            return Err(not_found(path));
        }
        if state.mutation()? {
            return Err(dead_error());
        }
        state.names.remove(path);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_alive()?;
        if state.names.keys().any(|name| name.starts_with(path))
            || state.dirs.iter().any(|d| d != path && d.starts_with(path))
        {
            return Err(io::Error::other("directory not empty"));
        }
        if !state.dirs.remove(path) {
            return Err(not_found(path));
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check_alive()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names: Vec<String> = state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .chain(state.dirs.iter().filter(|d| d.parent() == Some(dir)))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_names_are_lost_on_crash() {
        let storage = FaultyStorage::reliable(1);
        let dir = Path::new("/d");
        storage.create_dir_all(dir).unwrap();
        let mut a = storage.open(&dir.join("a"), OpenOptions::CREATE).unwrap();
        storage.append(&mut a, b"durable").unwrap();
        storage.sync(&mut a).unwrap();
        storage.sync_dir(dir).unwrap();
        storage.append(&mut a, b"-maybe").unwrap();
        let _b = storage.open(&dir.join("b"), OpenOptions::CREATE).unwrap();
        storage.crash();
        assert_eq!(storage.list(dir).unwrap(), vec!["a".to_string()]);
        let data = crate::storage::read_file(&storage, &dir.join("a")).unwrap();
        assert!(data.starts_with(b"durable"));
        assert!(data.len() <= b"durable-maybe".len());
    }

    #[test]
    fn crash_point_and_sync_errors_and_enospc() {
        let storage = FaultyStorage::new(
            2,
            FaultConfig {
                sync_error_at: Some(0),
                capacity_bytes: Some(10),
                ..FaultConfig::default()
            },
        );
        storage.create_dir_all(Path::new("/d")).unwrap();
        let mut a = storage
            .open(Path::new("/d/a"), OpenOptions::CREATE)
            .unwrap();
        storage.append(&mut a, b"12345").unwrap();
        assert!(storage.sync(&mut a).is_err());
        let full = storage.append(&mut a, b"123456").unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        storage.set_faults(FaultConfig {
            crash_at_operation: Some(storage.stats().operations),
            ..FaultConfig::default()
        });
        assert!(storage.append(&mut a, b"x").is_err());
        assert!(storage.is_dead());
        assert!(storage.list(Path::new("/d")).is_err());
        storage.crash();
        // The file's creation was never made durable by sync_dir.
        assert!(storage.list(Path::new("/d")).unwrap().is_empty());
    }
}

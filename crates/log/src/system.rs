//! [`LogSystem`]: one node's log storage for all of its Raft servers.
//!
//! # Log epochs
//!
//! Every server has a *log epoch*, a node-wide unique number stored in its
//! `meta` (set at creation) and in its `snapshot` (a new one for each
//! snapshot saved with `keep_log_after = false`). Every WAL record and segment
//! file carries the epoch of its server at write time. Recovery ignores
//! records and segments older than the server's current epoch: this is how a
//! snapshot that discards the whole log, and a deleted server re-created
//! under the same id, stay discarded even though their old WAL records are
//! still in the shared WAL. The epoch is durable (snapshot rename, meta
//! creation) before any record of the new epoch is written.
//!
//! # Replay
//!
//! A server's log is rebuilt by applying, in order, its segment files (by
//! sequence number) and then its WAL records, each with the core's append
//! rule: entries whose first index is at or below the log's end first
//! truncate the log from that index (Raft §5.3). A record that starts past
//! the end (possible only after a snapshot) restarts the log. Finally,
//! entries at or below the snapshot index are dropped. Replaying a record
//! twice is harmless, so a crash between "segments written" and "WAL file
//! deleted" needs no special case.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chorus_raft::{
    Configuration, Entry, HardState, LogIndex, Persisted, ServerId, SnapshotMeta, Term,
};

use crate::checkpoint::{self, Checkpoint, SegmentSummary, CHECKPOINT_FILE_NAME};
use crate::config::LogConfig;
use crate::error::{ApiError, LogResult, StorageError};
use crate::meta::{self, MetaState, ServerConfigFile};
use crate::segment::{self, EntryLocation, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::snapshot::{self, SnapshotHeader};
use crate::storage::{self, OpenOptions, Storage};
use crate::wal::{self, Durable, FlushJob, Wal, WAL_HEADER_BYTES};

const META_FILE_NAME: &str = "meta";
const CONFIG_FILE_NAME: &str = "config";
const SNAPSHOT_FILE_NAME: &str = "snapshot";
const SERVERS_DIR_NAME: &str = "servers";

fn server_dir_name(server: ServerId) -> String {
    format!("{:020}", server.0)
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub servers: usize,
    /// A valid checkpoint let recovery skip WAL files and segment scans.
    pub used_checkpoint: bool,
    pub wal_files_replayed: usize,
    pub wal_records_replayed: u64,
    pub segment_files_scanned: usize,
    /// A torn batch at the end of the newest WAL file, cut off.
    pub torn_wal_tail: Option<TornTail>,
    /// Segment files whose torn tail (an interrupted rollover whose WAL was
    /// still there) was cut off.
    pub torn_segment_tails: Vec<TornTail>,
    /// Every server's last index after recovery.
    pub last_indexes: BTreeMap<ServerId, LogIndex>,
}

#[derive(Clone, Debug)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the valid bytes end (the file now has this length).
    pub offset: u64,
    pub bytes_dropped: u64,
    pub reason: String,
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub entries_appended: u64,
    /// Batches written to the WAL (one write each).
    pub wal_batches: u64,
    /// fdatasyncs of WAL batches (0 with the o_sync strategy).
    pub wal_syncs: u64,
    pub wal_bytes_written: u64,
    pub rollovers: u64,
    pub segment_files_created: u64,
    pub checkpoints: u64,
    /// How long each WAL batch took to write and sync (threaded use).
    pub wal_flush_latency: LatencyHistogram,
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, microseconds: 100 µs
/// doubling up to 3.3 s (etcd's fsync histogram starts at 1 ms, too coarse
/// for fast disks); a last bucket counts everything slower.
pub const LATENCY_BOUNDS_US: [u64; 16] = {
    let mut bounds = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        bounds[i] = 100 << i;
        i += 1;
    }
    bounds
};

/// Counts of durations by bucket ([`LATENCY_BOUNDS_US`], plus one for
/// slower), and their sum: what a Prometheus histogram exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub counts: [u64; 17],
    pub sum_us: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, micros: u64) {
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(micros);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One segment file in a server's log view.
#[derive(Debug)]
struct SegmentRef {
    seq: u64,
    epoch: u64,
    first: LogIndex,
    /// Last index physically in the file.
    last: LogIndex,
    /// Last index still part of the log (a later overwrite may cut it).
    effective_last: LogIndex,
    len_bytes: u64,
    /// Loaded on first read (recovery from a checkpoint does not read them).
    locations: Option<Vec<EntryLocation>>,
}

impl SegmentRef {
    fn count(&self) -> u64 {
        self.last + 1 - self.first
    }
}

/// One server's log: snapshot base, then segments, then the memory table.
/// Invariant: the ranges are contiguous and ascending.
#[derive(Debug)]
struct ServerLog {
    dir: PathBuf,
    epoch: u64,
    meta: MetaState,
    meta_slot: usize,
    snapshot: Option<SnapshotHeader>,
    segments: Vec<SegmentRef>,
    /// Segment files no longer part of the log, deleted once what replaced
    /// them is durable in a newer segment.
    obsolete_segments: Vec<u64>,
    /// Entries not yet in segments (ra's mem table). Reads see them as soon
    /// as they are appended, before they are durable.
    mem: Vec<Entry>,
}

impl ServerLog {
    fn base(&self) -> (LogIndex, Term) {
        self.snapshot
            .as_ref()
            .map(|s| (s.meta.index, s.meta.term))
            .unwrap_or((0, 0))
    }

    fn last_index(&self) -> LogIndex {
        if let Some(entry) = self.mem.last() {
            entry.index
        } else if let Some(segment) = self.segments.last() {
            segment.effective_last.max(self.base().0)
        } else {
            self.base().0
        }
    }

    fn last_term(&self) -> Term {
        if let Some(entry) = self.mem.last() {
            return entry.term;
        }
        if let Some(segment) = self.segments.last() {
            if segment.effective_last > self.base().0 {
                if let Some(locations) = &segment.locations {
                    return locations[(segment.effective_last - segment.first) as usize].term;
                }
            }
        }
        self.base().1
    }

    /// Drops entries at and after `index`.
    fn truncate_from(&mut self, index: LogIndex) {
        if let Some(first) = self.mem.first().map(|e| e.index) {
            if index <= first {
                self.mem.clear();
            } else {
                self.mem.truncate((index - first) as usize);
            }
        }
        while let Some(segment) = self.segments.last_mut() {
            if segment.first >= index {
                let seq = segment.seq;
                self.segments.pop();
                self.obsolete_segments.push(seq);
            } else {
                segment.effective_last = segment.effective_last.min(index - 1);
                break;
            }
        }
    }

    /// The append rule (Raft §5.3): overwrite from the first index.
    /// `entries` are non-empty and consecutive; a first index past the end
    /// restarts the log (replay only: the API refuses gaps).
    fn apply_append(&mut self, entries: Vec<Entry>) {
        let first = entries[0].index;
        let last = self.last_index();
        if first <= last {
            self.truncate_from(first);
        } else if first > last + 1 {
            self.truncate_from(0);
        }
        self.mem.extend(entries);
    }

    /// Drops entries at and below `index`; returns the segment files that
    /// hold nothing above it.
    fn drop_through(&mut self, index: LogIndex) -> Vec<u64> {
        let keep_from = self.mem.partition_point(|e| e.index <= index);
        self.mem.drain(..keep_from);
        let mut reclaimed = Vec::new();
        self.segments.retain(|segment| {
            let keep = segment.effective_last > index;
            if !keep {
                reclaimed.push(segment.seq);
            }
            keep
        });
        reclaimed
    }

    /// First index of the log after the snapshot, if any entries remain.
    fn first_index(&self) -> Option<LogIndex> {
        let base = self.base().0;
        self.segments
            .first()
            .map(|s| s.first.max(base + 1))
            .or_else(|| self.mem.first().map(|e| e.index))
    }
}

/// A node's log storage. See the crate docs for how it is driven.
pub struct LogSystem<S: Storage> {
    config: LogConfig,
    storage: Arc<S>,
    servers_dir: PathBuf,
    wal: Wal<S>,
    /// Older WAL files still holding entries not yet in segments.
    old_wal_seqs: Vec<u64>,
    servers: BTreeMap<ServerId, ServerLog>,
    next_epoch: u64,
    next_segment_seq: u64,
    /// Incremented by every append; a flush covers every append before it.
    generation: u64,
    failed: Option<String>,
    stats: LogStats,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |error| StorageError::io(path, error)
}

impl<S: Storage> LogSystem<S> {
    /// Opens the log in `config`'s directories, recovering every server.
    pub fn open(config: LogConfig, storage: S) -> LogResult<(Self, RecoveryReport)> {
        config.validate();
        let storage = Arc::new(storage);
        let servers_dir = config.data_dir.join(SERVERS_DIR_NAME);
        for dir in [&config.data_dir, &servers_dir, &config.wal_data_dir] {
            storage.create_dir_all(dir).map_err(io_error(dir))?;
        }
        // The new directories' names must be durable before files in them.
        for dir in [&config.data_dir, &servers_dir, &config.wal_data_dir] {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage.sync_dir(parent).map_err(io_error(parent))?;
            }
        }
        let mut report = RecoveryReport::default();
        let checkpoint = read_checkpoint(&*storage, &config.data_dir);
        report.used_checkpoint = checkpoint.is_some();
        let checkpoint = checkpoint.unwrap_or_default();
        let summaries: BTreeMap<(ServerId, u64), SegmentSummary> = checkpoint
            .servers
            .iter()
            .flat_map(|(server, list)| list.iter().map(move |s| ((*server, s.seq), *s)))
            .collect();

        let mut next_epoch = checkpoint.next_epoch.max(1);
        let mut next_segment_seq = checkpoint.next_segment_seq.max(1);
        let mut servers = BTreeMap::new();
        let names =
            storage::list_or_empty(&*storage, &servers_dir).map_err(io_error(&servers_dir))?;
        for name in names {
            let Ok(id) = name.parse::<u64>() else {
                continue;
            };
            let server = ServerId(id);
            let dir = servers_dir.join(&name);
            let loaded = load_server(&*storage, server, &dir, &summaries, &mut report)?;
            let Some(log) = loaded else {
                // No meta: an interrupted creation or deletion. Finish
                // deleting it.
                remove_server_files(&*storage, &dir)?;
                continue;
            };
            next_epoch = next_epoch.max(log.epoch + 1);
            for segment in &log.segments {
                next_segment_seq = next_segment_seq.max(segment.seq + 1);
            }
            for seq in &log.obsolete_segments {
                next_segment_seq = next_segment_seq.max(seq + 1);
            }
            servers.insert(server, log);
        }

        // WAL replay.
        let wal_dir = config.wal_data_dir.clone();
        let mut wal_seqs: Vec<u64> = storage::list_or_empty(&*storage, &wal_dir)
            .map_err(io_error(&wal_dir))?
            .iter()
            .filter_map(|name| wal::parse_wal_file_name(name))
            .collect();
        wal_seqs.sort_unstable();
        let mut max_wal_seq = checkpoint.wal_seq;
        let mut live_wal_seqs = Vec::new();
        let newest = wal_seqs.last().copied();
        for &seq in &wal_seqs {
            max_wal_seq = max_wal_seq.max(seq);
            let path = wal_dir.join(wal::wal_file_name(seq));
            if seq < checkpoint.wal_seq {
                // Durability: the checkpoint was written only after every
                // entry of this file was durable in segments.
                storage::remove_if_exists(&*storage, &path).map_err(io_error(&path))?;
                continue;
            }
            let mut file = storage
                .open(&path, OpenOptions::EXISTING)
                .map_err(io_error(&path))?;
            let bytes = storage::read_all(&*storage, &file).map_err(io_error(&path))?;
            let is_newest = Some(seq) == newest;
            if is_newest
                && bytes.len() <= WAL_HEADER_BYTES
                && wal::decode_wal_header(&bytes).is_err()
            {
                // Torn creation: the header was never synced, so no batch in
                // it was ever acknowledged.
                drop(file);
                storage.remove(&path).map_err(io_error(&path))?;
                continue;
            }
            let scan = wal::scan_wal(&bytes).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                offset: e.offset,
                error: e.error,
            })?;
            if let Some(error) = scan.torn_tail {
                if !is_newest {
                    // Only the newest file can have an unsynced tail: every
                    // older one was complete and synced before rollover.
                    return Err(StorageError::Corrupt {
                        path,
                        offset: scan.valid_len,
                        error,
                    }
                    .into());
                }
                let dropped = bytes.len() as u64 - scan.valid_len;
                tracing::warn!(path = %path.display(), offset = scan.valid_len, dropped, "truncating torn WAL tail");
                storage
                    .truncate(&mut file, scan.valid_len)
                    .and_then(|()| storage.sync(&mut file))
                    .map_err(io_error(&path))?;
                report.torn_wal_tail = Some(TornTail {
                    path: path.clone(),
                    offset: scan.valid_len,
                    bytes_dropped: dropped,
                    reason: error.to_string(),
                });
            }
            report.wal_files_replayed += 1;
            for record in scan.records {
                report.wal_records_replayed += 1;
                next_epoch = next_epoch.max(record.epoch + 1);
                let Some(log) = servers.get_mut(&record.server) else {
                    continue; // a deleted server's leftovers
                };
                if record.epoch < log.epoch {
                    continue; // discarded by a snapshot or an earlier life
                }
                log.apply_append(record.entries);
            }
            live_wal_seqs.push(seq);
        }

        // Apply snapshots and check contiguity.
        for (server, log) in &mut servers {
            let (base, _) = log.base();
            let reclaimed = log.drop_through(base);
            log.obsolete_segments.extend(reclaimed);
            if let Some(first) = log.first_index() {
                if first != base + 1 {
                    return Err(StorageError::Inconsistent {
                        server: *server,
                        reason: format!("log starts at {first} but the snapshot ends at {base}"),
                    }
                    .into());
                }
            }
            report.last_indexes.insert(*server, log.last_index());
        }
        report.servers = servers.len();

        let wal = Wal::create(
            &*storage,
            &wal_dir,
            max_wal_seq + 1,
            config.wal_compute_checksums,
            config.wal_write_strategy,
        )?;
        let mut system = LogSystem {
            config,
            storage,
            servers_dir,
            wal,
            old_wal_seqs: live_wal_seqs,
            servers,
            next_epoch,
            next_segment_seq,
            generation: 0,
            failed: None,
            stats: LogStats::default(),
        };
        // Segments already below snapshots (a crash before reclamation) go
        // now; obsolete ones wait for the next rollover.
        system.reclaim_below_snapshots()?;
        Ok((system, report))
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// Counts one WAL batch's write-and-sync time (the writer thread
    /// measures it around [`FlushJob::run`]).
    pub fn record_flush_latency(&mut self, micros: u64) {
        self.stats.wal_flush_latency.record(micros);
    }

    pub fn servers(&self) -> Vec<ServerId> {
        self.servers.keys().copied().collect()
    }

    pub fn contains(&self, server: ServerId) -> bool {
        self.servers.contains_key(&server)
    }

    /// The error of an earlier failure, if any.
    pub fn check_healthy(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(StorageError::Failed {
                reason: reason.clone(),
            }),
            None => self.wal.check_healthy(),
        }
    }

    /// Records a fatal failure: from now on every call fails.
    fn fail(&mut self, error: StorageError) -> StorageError {
        if self.failed.is_none() {
            let reason = error.to_string();
            tracing::error!(%reason, "log system failed");
            self.wal.fail(reason.clone());
            self.failed = Some(reason);
        }
        error
    }

    /// Runs `f`; a storage error it returns fails the whole system.
    fn fatal<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StorageError>) -> LogResult<T> {
        self.check_healthy()?;
        match f(self) {
            Ok(value) => Ok(value),
            Err(error) => Err(self.fail(error).into()),
        }
    }

    fn server(&self, server: ServerId) -> Result<&ServerLog, ApiError> {
        self.servers
            .get(&server)
            .ok_or(ApiError::UnknownServer(server))
    }

    fn server_mut(&mut self, server: ServerId) -> Result<&mut ServerLog, ApiError> {
        self.servers
            .get_mut(&server)
            .ok_or(ApiError::UnknownServer(server))
    }

    /// Creates a server's storage with its initial configuration and opaque
    /// runtime bytes; durable when it returns.
    pub fn create_server(
        &mut self,
        server: ServerId,
        initial_config: Configuration,
        server_config: Bytes,
    ) -> LogResult<()> {
        self.check_healthy()?;
        if self.servers.contains_key(&server) {
            return Err(ApiError::ServerExists(server).into());
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let dir = self.servers_dir.join(server_dir_name(server));
        let servers_dir = self.servers_dir.clone();
        let meta_state = MetaState {
            seq: 1,
            hard_state: HardState::default(),
            last_applied: 0,
            epoch,
        };
        self.fatal(|system| {
            let storage = &*system.storage;
            remove_server_files(storage, &dir)?;
            storage.create_dir_all(&dir).map_err(io_error(&dir))?;
            storage
                .sync_dir(&servers_dir)
                .map_err(io_error(&servers_dir))?;
            let config_file = meta::encode_config_file(&ServerConfigFile {
                initial_config,
                server_config,
            });
            storage::write_file_atomic(storage, &dir, CONFIG_FILE_NAME, &config_file)
                .map_err(io_error(&dir))?;
            // Durability: `meta` appearing is the commit point of creation;
            // it is written last.
            storage::write_file_atomic(
                storage,
                &dir,
                META_FILE_NAME,
                &meta::encode_meta_file(&meta_state),
            )
            .map_err(io_error(&dir))?;
            Ok(())
        })?;
        self.servers.insert(
            server,
            ServerLog {
                dir,
                epoch,
                meta: meta_state,
                meta_slot: 0,
                snapshot: None,
                segments: Vec::new(),
                obsolete_segments: Vec::new(),
                mem: Vec::new(),
            },
        );
        Ok(())
    }

    fn write_meta(
        &mut self,
        server: ServerId,
        update: impl FnOnce(&mut MetaState),
    ) -> LogResult<()> {
        self.check_healthy()?;
        let log = self.server(server)?;
        let mut state = log.meta;
        update(&mut state);
        if state == log.meta {
            return Ok(()); // already durable
        }
        state.seq += 1;
        let (offset, slot) = meta::encode_meta_update(&state, log.meta_slot);
        let path = log.dir.join(META_FILE_NAME);
        self.fatal(|system| {
            let storage = &*system.storage;
            let mut file = storage
                .open(&path, OpenOptions::EXISTING)
                .map_err(io_error(&path))?;
            storage
                .write_at(&mut file, offset, &slot)
                .map_err(io_error(&path))?;
            // Durability: barrier. The term and vote are on disk before this
            // returns (Raft Figure 2: "updated on stable storage before
            // responding to RPCs"). A failed fsync fails the system.
            storage.sync(&mut file).map_err(io_error(&path))
        })?;
        let log = self.servers.get_mut(&server).expect("checked above");
        log.meta = state;
        log.meta_slot = 1 - log.meta_slot;
        Ok(())
    }

    /// Barrier: the term and vote are durable when this returns.
    pub fn save_hard_state(&mut self, server: ServerId, hard_state: HardState) -> LogResult<()> {
        self.write_meta(server, |state| state.hard_state = hard_state)
    }

    /// Records the last applied index (durable when this returns).
    pub fn save_last_applied(&mut self, server: ServerId, index: LogIndex) -> LogResult<()> {
        self.write_meta(server, |state| state.last_applied = index)
    }

    pub fn hard_state(&self, server: ServerId) -> LogResult<HardState> {
        Ok(self.server(server)?.meta.hard_state)
    }

    pub fn last_applied(&self, server: ServerId) -> LogResult<LogIndex> {
        Ok(self.server(server)?.meta.last_applied)
    }

    /// The last index and its term (the snapshot's if the log is empty).
    pub fn last_index_term(&self, server: ServerId) -> LogResult<(LogIndex, Term)> {
        let log = self.server(server)?;
        Ok((log.last_index(), log.last_term()))
    }

    /// The snapshot's index and term ((0, 0) without one).
    pub fn snapshot_index_term(&self, server: ServerId) -> LogResult<(LogIndex, Term)> {
        Ok(self.server(server)?.base())
    }

    /// Buffers `entries` for `server` (the core's `AppendLog`): if the first
    /// index is not past the log's end the log is first truncated from it.
    /// Reads see the entries at once; they are durable once a later
    /// [`LogSystem::flush`] reports it.
    pub fn append(&mut self, server: ServerId, entries: Vec<Entry>) -> LogResult<()> {
        self.check_healthy()?;
        let log = self.server(server)?;
        if entries.is_empty()
            || entries
                .windows(2)
                .any(|pair| pair[0].index.checked_add(1) != Some(pair[1].index))
        {
            return Err(ApiError::NotConsecutive.into());
        }
        let first = entries[0].index;
        let (base, _) = log.base();
        if first <= base {
            return Err(ApiError::BelowSnapshot {
                first,
                snapshot_index: base,
            }
            .into());
        }
        let last = log.last_index();
        if first > last + 1 {
            return Err(ApiError::Gap { first, last }.into());
        }
        let epoch = log.epoch;
        self.wal.append(server, epoch, &entries);
        self.stats.appends += 1;
        self.stats.entries_appended += entries.len() as u64;
        self.generation += 1;
        self.server_mut(server)?.apply_append(entries);
        Ok(())
    }

    /// Bytes appended and not yet handed to a flush.
    pub fn buffered_bytes(&self) -> usize {
        self.wal.buffered_bytes()
    }

    /// Number of appends so far; a flush started after an append covers it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Group commit: one write and one fdatasync for everything buffered by
    /// every server; returns which entries became durable. Rolls the WAL
    /// over to segments when it reached `wal_max_size_bytes`.
    pub fn flush(&mut self) -> LogResult<Vec<Durable>> {
        match self.begin_flush()? {
            None => Ok(Vec::new()),
            Some(mut job) => {
                job.run(&self.storage);
                self.finish_flush(job)
            }
        }
    }

    /// First half of [`LogSystem::flush`] for a writer thread: takes the
    /// batch (with the generation it covers). Run the job without holding
    /// the system, then pass it to [`LogSystem::finish_flush`].
    pub fn begin_flush(&mut self) -> LogResult<Option<FlushJob<S>>> {
        self.check_healthy()?;
        Ok(self.wal.begin_flush()?)
    }

    /// Second half of [`LogSystem::flush`].
    pub fn finish_flush(&mut self, job: FlushJob<S>) -> LogResult<Vec<Durable>> {
        let bytes = job.len_bytes() as u64;
        let notices = match self.wal.finish_flush(job) {
            Ok(notices) => notices,
            Err(error) => return Err(self.fail(error).into()),
        };
        self.stats.wal_batches += 1;
        self.stats.wal_bytes_written += bytes;
        if self.config.wal_write_strategy == crate::WalWriteStrategy::Default {
            self.stats.wal_syncs += 1;
        }
        let mut notices = notices;
        if self.wal.file_len() >= self.config.wal_max_size_bytes {
            // Appends made while the job ran (threaded use) must be in the
            // WAL before its entries move to segments: flush them first.
            let storage = Arc::clone(&self.storage);
            let more = match self.wal.flush(&storage) {
                Ok(more) => more,
                Err(error) => return Err(self.fail(error).into()),
            };
            if !more.is_empty() {
                self.stats.wal_batches += 1;
                if self.config.wal_write_strategy == crate::WalWriteStrategy::Default {
                    self.stats.wal_syncs += 1;
                }
            }
            notices.extend(more);
            self.fatal(|system| system.roll_over())?;
        }
        Ok(notices)
    }

    /// Moves every memory table to segments, starts a new WAL file, writes
    /// the checkpoint and deletes the old WAL files. Everything buffered must
    /// have been flushed.
    fn roll_over(&mut self) -> Result<(), StorageError> {
        assert_eq!(
            self.wal.buffered_bytes(),
            0,
            "roll over with unflushed appends"
        );
        let ids: Vec<ServerId> = self.servers.keys().copied().collect();
        for id in ids {
            self.write_segments(id)?;
        }
        let old_seq = self.wal.seq();
        let new_wal = Wal::create(
            &*self.storage,
            &self.config.wal_data_dir,
            old_seq + 1,
            self.config.wal_compute_checksums,
            self.config.wal_write_strategy,
        )?;
        self.wal = new_wal;
        self.old_wal_seqs.push(old_seq);
        // Durability: the checkpoint (which says "WAL files below the new
        // one are in segments") is written only after every segment is
        // synced, and the old WAL files are deleted only after that.
        self.write_checkpoint()?;
        let wal_dir = self.config.wal_data_dir.clone();
        for seq in std::mem::take(&mut self.old_wal_seqs) {
            let path = wal_dir.join(wal::wal_file_name(seq));
            storage::remove_if_exists(&*self.storage, &path).map_err(io_error(&path))?;
        }
        self.storage
            .sync_dir(&wal_dir)
            .map_err(io_error(&wal_dir))?;
        self.stats.rollovers += 1;
        Ok(())
    }

    /// The segment writer: appends a server's memory table to its segment
    /// files (`segment_max_entries` per file), syncs them, then deletes the
    /// segment files it made obsolete.
    fn write_segments(&mut self, id: ServerId) -> Result<(), StorageError> {
        let max_entries = self.config.segment_max_entries;
        let storage = Arc::clone(&self.storage);
        let log = self.servers.get_mut(&id).expect("listed server");
        let entries = std::mem::take(&mut log.mem);
        let mut position = 0;
        let mut created = false;
        while position < entries.len() {
            let first = entries[position].index;
            let appendable = log.segments.last().is_some_and(|s| {
                s.epoch == log.epoch
                    && s.effective_last == s.last
                    && s.last + 1 == first
                    && s.count() < max_entries
                    && s.locations.is_some()
            });
            let (mut file, path) = if appendable {
                let segment = log.segments.last().expect("appendable");
                let path = log.dir.join(segment::segment_file_name(segment.seq));
                let file = storage
                    .open(&path, OpenOptions::EXISTING)
                    .map_err(io_error(&path))?;
                (file, path)
            } else {
                let seq = self.next_segment_seq;
                self.next_segment_seq += 1;
                let path = log.dir.join(segment::segment_file_name(seq));
                let mut file = storage
                    .open(&path, OpenOptions::CREATE)
                    .map_err(io_error(&path))?;
                let header = segment::encode_segment_header(SegmentHeader {
                    server: id,
                    epoch: log.epoch,
                    seq,
                });
                storage
                    .append(&mut file, &header)
                    .map_err(io_error(&path))?;
                log.segments.push(SegmentRef {
                    seq,
                    epoch: log.epoch,
                    first,
                    last: first - 1,
                    effective_last: first - 1,
                    len_bytes: SEGMENT_HEADER_BYTES as u64,
                    locations: Some(Vec::new()),
                });
                created = true;
                self.stats.segment_files_created += 1;
                (file, path)
            };
            let segment = log.segments.last_mut().expect("pushed or appendable");
            let room = max_entries - segment.count().min(max_entries);
            let take = (room as usize).min(entries.len() - position);
            assert!(take > 0, "segment writer made no progress");
            let mut buffer = Vec::new();
            let locations = segment.locations.as_mut().expect("checked");
            for entry in &entries[position..position + take] {
                let offset = segment.len_bytes + buffer.len() as u64;
                let len = segment::encode_entry_record(&mut buffer, entry);
                locations.push(EntryLocation {
                    offset,
                    len: len as u32,
                    term: entry.term,
                });
            }
            storage
                .append(&mut file, &buffer)
                .map_err(io_error(&path))?;
            // Durability: segments are synced before the WAL file holding
            // the same entries may be deleted.
            storage.sync(&mut file).map_err(io_error(&path))?;
            segment.len_bytes += buffer.len() as u64;
            segment.last = entries[position + take - 1].index;
            segment.effective_last = segment.last;
            position += take;
        }
        if created {
            storage.sync_dir(&log.dir).map_err(io_error(&log.dir))?;
        }
        // What replaced the obsolete segments is durable now (in the
        // segments just written, or below a durable snapshot).
        for seq in std::mem::take(&mut log.obsolete_segments) {
            let path = log.dir.join(segment::segment_file_name(seq));
            storage::remove_if_exists(&*storage, &path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    fn write_checkpoint(&mut self) -> Result<(), StorageError> {
        let checkpoint = Checkpoint {
            wal_seq: self.wal.seq(),
            next_epoch: self.next_epoch,
            next_segment_seq: self.next_segment_seq,
            servers: self
                .servers
                .iter()
                .map(|(id, log)| {
                    let summaries = log
                        .segments
                        .iter()
                        .map(|s| SegmentSummary {
                            seq: s.seq,
                            epoch: s.epoch,
                            first: s.first,
                            last: s.last,
                            len_bytes: s.len_bytes,
                        })
                        .collect();
                    (*id, summaries)
                })
                .collect(),
        };
        let bytes = checkpoint::encode_checkpoint(&checkpoint);
        let dir = self.config.data_dir.clone();
        storage::write_file_atomic(&*self.storage, &dir, CHECKPOINT_FILE_NAME, &bytes)
            .map_err(io_error(&dir))?;
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Flushes, moves every memory table to segments and writes the recovery
    /// checkpoint, so the next open replays nothing. Called on orderly
    /// shutdown; also happens at every WAL rollover.
    pub fn checkpoint(&mut self) -> LogResult<Vec<Durable>> {
        let notices = self.flush()?;
        self.fatal(|system| system.roll_over())?;
        Ok(notices)
    }

    /// Orderly shutdown: a checkpoint, then the system is dropped. Returns
    /// the last durability notices.
    pub fn close(mut self) -> LogResult<Vec<Durable>> {
        self.checkpoint()
    }

    /// Barrier (the core's `SaveSnapshot`): stores the snapshot durably, then
    /// drops entries up to `meta.index`, and every entry after it too unless
    /// `keep_log_after`. Segment files left wholly below the snapshot are
    /// deleted.
    ///
    /// The three steps [`begin_snapshot`](Self::begin_snapshot),
    /// [`SnapshotWrite::write`] and [`finish_snapshot`](Self::finish_snapshot)
    /// in one call. A caller that shares the log system between threads
    /// runs them separately, so the file's write and fsync do not hold up
    /// other servers' appends.
    pub fn save_snapshot(
        &mut self,
        server: ServerId,
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    ) -> LogResult<()> {
        let write = self.begin_snapshot(server, meta, data, keep_log_after)?;
        self.finish_snapshot(write.write())
    }

    /// Checks a snapshot of `server` and prepares its file's write; nothing
    /// changes until [`finish_snapshot`](Self::finish_snapshot). Only one
    /// snapshot of a server may be under way at a time (its Raft server
    /// issues them one after the other).
    pub fn begin_snapshot(
        &mut self,
        server: ServerId,
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    ) -> LogResult<SnapshotWrite<S>> {
        self.check_healthy()?;
        let log = self.server(server)?;
        if meta.size_bytes != data.len() as u64 {
            return Err(ApiError::SnapshotSize {
                declared: meta.size_bytes,
                actual: data.len() as u64,
            }
            .into());
        }
        let (base, _) = log.base();
        let dir = log.dir.clone();
        let current_epoch = log.epoch;
        if meta.index < base {
            return Err(ApiError::Compacted {
                index: meta.index,
                snapshot_index: base,
            }
            .into());
        }
        let epoch = if keep_log_after {
            current_epoch
        } else {
            // A new epoch makes every record and segment written so far for
            // this server obsolete, atomically with the snapshot's rename.
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            epoch
        };
        Ok(SnapshotWrite {
            storage: Arc::clone(&self.storage),
            server,
            dir,
            meta,
            data,
            epoch,
            keep_log_after,
        })
    }

    /// Records a snapshot whose file [`SnapshotWrite::write`] wrote, and
    /// compacts the server's log to it. A failed write fails the log
    /// system, as every storage error does; a server deleted while its
    /// snapshot was written is [`ApiError::UnknownServer`] (its files,
    /// the snapshot's included, went with it).
    pub fn finish_snapshot(&mut self, written: WrittenSnapshot) -> LogResult<()> {
        self.check_healthy()?;
        let WrittenSnapshot { server, header } = written;
        self.server(server)?;
        let header = header.map_err(|error| self.fail(error))?;
        let log = self.server_mut(server)?;
        let keep_log_after = header.keep_log_after;
        log.epoch = header.epoch;
        log.snapshot = Some(header);
        if !keep_log_after {
            log.truncate_from(0);
            self.wal.forget_pending(server);
        }
        self.fatal(|system| system.reclaim(server))
    }

    /// Deletes segment files no longer needed by `server`: below its
    /// snapshot, or obsolete with a durable snapshot replacing them.
    fn reclaim(&mut self, server: ServerId) -> Result<(), StorageError> {
        let log = self.servers.get_mut(&server).expect("known server");
        let (base, _) = log.base();
        let mut doomed = log.drop_through(base);
        // With a snapshot at or past every obsolete segment's entries, or a
        // new epoch, the obsolete files are safe to delete now. Otherwise
        // they wait for the next rollover.
        if log.mem.is_empty() {
            doomed.append(&mut log.obsolete_segments);
        }
        for seq in doomed {
            let path = log.dir.join(segment::segment_file_name(seq));
            storage::remove_if_exists(&*self.storage, &path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    fn reclaim_below_snapshots(&mut self) -> LogResult<()> {
        let ids: Vec<ServerId> = self.servers.keys().copied().collect();
        for id in ids {
            let log = &self.servers[&id];
            if log.snapshot.is_some() {
                let doomed = {
                    let log = self.servers.get_mut(&id).expect("listed");
                    let (base, _) = log.base();
                    log.drop_through(base)
                };
                let dir = self.servers[&id].dir.clone();
                self.fatal(|system| {
                    for seq in doomed {
                        let path = dir.join(segment::segment_file_name(seq));
                        storage::remove_if_exists(&*system.storage, &path)
                            .map_err(io_error(&path))?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Entries `range.start .. range.end` of `server`, from the memory
    /// table or segments (including appended but not yet durable entries).
    pub fn read(&mut self, server: ServerId, range: Range<LogIndex>) -> LogResult<Vec<Entry>> {
        self.check_healthy()?;
        let log = self.server(server)?;
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let (base, _) = log.base();
        if range.start <= base {
            return Err(ApiError::Compacted {
                index: range.start,
                snapshot_index: base,
            }
            .into());
        }
        let last = log.last_index();
        if range.end - 1 > last {
            return Err(ApiError::PastEnd {
                index: range.end - 1,
                last,
            }
            .into());
        }
        let storage = Arc::clone(&self.storage);
        let log = self.servers.get_mut(&server).expect("checked above");
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut index = range.start;
        let mem_first = log.mem.first().map(|e| e.index).unwrap_or(LogIndex::MAX);
        while index < range.end && index < mem_first {
            let position = log.segments.partition_point(|s| s.effective_last < index);
            let segment = &mut log.segments[position];
            assert!(segment.first <= index, "segments are contiguous");
            let until = range.end.min(segment.effective_last + 1);
            let path = log.dir.join(segment::segment_file_name(segment.seq));
            read_from_segment(&*storage, &path, segment, index..until, &mut out)?;
            index = until;
        }
        if index < range.end {
            let start = (index - mem_first) as usize;
            let end = (range.end - mem_first) as usize;
            out.extend_from_slice(&log.mem[start..end]);
        }
        Ok(out)
    }

    /// Everything the core needs to restart `server` (its `Persisted`).
    pub fn recover(&mut self, server: ServerId) -> LogResult<Persisted> {
        self.check_healthy()?;
        let log = self.server(server)?;
        let hard_state = log.meta.hard_state;
        let dir = log.dir.clone();
        let has_snapshot = log.snapshot.is_some();
        let range = log.base().0 + 1..log.last_index() + 1;
        let snapshot = if has_snapshot {
            let path = dir.join(SNAPSHOT_FILE_NAME);
            let bytes = storage::read_file(&*self.storage, &path)
                .map_err(|e| StorageError::io(&path, e))?;
            let (header, data) =
                snapshot::decode_snapshot_file(&bytes).map_err(|error| StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    error,
                })?;
            Some((header.meta, Bytes::copy_from_slice(data)))
        } else {
            None
        };
        let entries = self.read(server, range)?;
        let config = self.server_config_file(server)?;
        Ok(Persisted {
            hard_state,
            snapshot,
            entries,
            initial_config: config.initial_config,
        })
    }

    fn server_config_file(&self, server: ServerId) -> LogResult<ServerConfigFile> {
        let log = self.server(server)?;
        let path = log.dir.join(CONFIG_FILE_NAME);
        let bytes =
            storage::read_file(&*self.storage, &path).map_err(|e| StorageError::io(&path, e))?;
        Ok(
            meta::decode_config_file(&bytes).map_err(|error| StorageError::Corrupt {
                path,
                offset: 0,
                error,
            })?,
        )
    }

    /// The opaque bytes given at creation.
    pub fn server_config(&self, server: ServerId) -> LogResult<Bytes> {
        Ok(self.server_config_file(server)?.server_config)
    }

    /// Removes every file of `server` (force delete, end of life). Its
    /// records left in the shared WAL are ignored by recovery and vanish at
    /// the next rollover.
    pub fn delete_server(&mut self, server: ServerId) -> LogResult<()> {
        self.check_healthy()?;
        let log = self.server(server)?;
        let dir = log.dir.clone();
        let servers_dir = self.servers_dir.clone();
        self.fatal(|system| {
            let storage = &*system.storage;
            // Durability: removing `meta` is the commit point; recovery
            // finishes deleting a directory without one.
            let meta_path = dir.join(META_FILE_NAME);
            storage::remove_if_exists(storage, &meta_path).map_err(io_error(&meta_path))?;
            storage.sync_dir(&dir).map_err(io_error(&dir))?;
            remove_server_files(storage, &dir)?;
            storage
                .sync_dir(&servers_dir)
                .map_err(io_error(&servers_dir))
        })?;
        self.servers.remove(&server);
        self.wal.forget_pending(server);
        Ok(())
    }

    /// Total bytes of the files of `server` (segments, snapshot, meta,
    /// config), for disk-usage checks.
    pub fn server_disk_bytes(&self, server: ServerId) -> LogResult<u64> {
        let log = self.server(server)?;
        let names = storage::list_or_empty(&*self.storage, &log.dir)
            .map_err(|e| StorageError::io(&log.dir, e))?;
        let mut total = 0;
        for name in names {
            let path = log.dir.join(&name);
            let file = self
                .storage
                .open(&path, OpenOptions::EXISTING)
                .map_err(|e| StorageError::io(&path, e))?;
            total += self
                .storage
                .len(&file)
                .map_err(|e| StorageError::io(&path, e))?;
        }
        Ok(total)
    }

    /// Number of segment files `server` has.
    pub fn segment_count(&self, server: ServerId) -> LogResult<usize> {
        Ok(self.server(server)?.segments.len())
    }
}

fn read_from_segment<S: Storage>(
    storage: &S,
    path: &Path,
    segment: &mut SegmentRef,
    range: Range<LogIndex>,
    out: &mut Vec<Entry>,
) -> Result<(), StorageError> {
    let file = storage
        .open(path, OpenOptions::EXISTING)
        .map_err(io_error(path))?;
    if segment.locations.is_none() {
        let bytes = storage::read_all(storage, &file).map_err(io_error(path))?;
        let scan = segment::scan_segment(&bytes).map_err(|error| StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            error,
        })?;
        if scan.first != segment.first || scan.last().unwrap_or(0) < segment.last {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: scan.valid_len,
                error: scan.bad_tail.unwrap_or_else(|| {
                    crate::codec::DecodeError::invalid("segment holds fewer entries than recorded")
                }),
            });
        }
        segment.locations = Some(scan.locations);
    }
    let locations = segment.locations.as_ref().expect("loaded above");
    let first = &locations[(range.start - segment.first) as usize];
    let last = &locations[(range.end - 1 - segment.first) as usize];
    let start = first.offset;
    let end = last.offset + last.len as u64;
    let mut bytes = vec![0u8; (end - start) as usize];
    storage::read_exact_at(storage, &file, start, &mut bytes).map_err(io_error(path))?;
    for index in range {
        let location = locations[(index - segment.first) as usize];
        let relative = EntryLocation {
            offset: location.offset - start,
            ..location
        };
        let entry =
            segment::decode_entry_at(&bytes, &relative).map_err(|error| StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: location.offset,
                error,
            })?;
        if entry.index != index {
            return Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                offset: location.offset,
                error: crate::codec::DecodeError::invalid("entry index differs from its position"),
            });
        }
        out.push(entry);
    }
    Ok(())
}

fn read_checkpoint<S: Storage>(storage: &S, data_dir: &Path) -> Option<Checkpoint> {
    let path = data_dir.join(CHECKPOINT_FILE_NAME);
    let bytes = match storage::read_file(storage, &path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(%error, "cannot read the recovery checkpoint; scanning everything");
            return None;
        }
    };
    match checkpoint::decode_checkpoint(&bytes) {
        Ok(checkpoint) => Some(checkpoint),
        Err(error) => {
            // The checkpoint is a cache: ignoring it costs time, never data.
            tracing::warn!(%error, "invalid recovery checkpoint; scanning everything");
            None
        }
    }
}

/// Removes a server directory and everything in it (missing is fine).
fn remove_server_files<S: Storage>(storage: &S, dir: &Path) -> Result<(), StorageError> {
    let names = storage::list_or_empty(storage, dir).map_err(io_error(dir))?;
    if names.is_empty() && storage.list(dir).is_err() {
        return Ok(());
    }
    for name in names {
        let path = dir.join(&name);
        storage::remove_if_exists(storage, &path).map_err(io_error(&path))?;
    }
    match storage.remove_dir(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io(dir, error))
        }
        _ => Ok(()),
    }
}

/// Loads one server directory; `None` if it has no `meta` (not a server).
fn load_server<S: Storage>(
    storage: &S,
    server: ServerId,
    dir: &Path,
    summaries: &BTreeMap<(ServerId, u64), SegmentSummary>,
    report: &mut RecoveryReport,
) -> Result<Option<ServerLog>, StorageError> {
    let names: BTreeSet<String> = storage::list_or_empty(storage, dir)
        .map_err(io_error(dir))?
        .into_iter()
        .collect();
    if !names.contains(META_FILE_NAME) {
        return Ok(None);
    }
    for name in names.iter().filter(|n| n.ends_with(".tmp")) {
        let path = dir.join(name);
        storage::remove_if_exists(storage, &path).map_err(io_error(&path))?;
    }
    let meta_path = dir.join(META_FILE_NAME);
    let bytes = storage::read_file(storage, &meta_path).map_err(io_error(&meta_path))?;
    let (meta_state, meta_slot) =
        meta::decode_meta_file(&bytes).map_err(|error| StorageError::Corrupt {
            path: meta_path.clone(),
            offset: 0,
            error,
        })?;
    let snapshot = if names.contains(SNAPSHOT_FILE_NAME) {
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let file = storage
            .open(&path, OpenOptions::EXISTING)
            .map_err(io_error(&path))?;
        let len = storage.len(&file).map_err(io_error(&path))?;
        // Header plus meta; the data is checked when recovered.
        let mut head = vec![0u8; len.min(1 << 20) as usize];
        storage::read_exact_at(storage, &file, 0, &mut head).map_err(io_error(&path))?;
        let header = match snapshot::decode_snapshot_header(&head) {
            Ok(header) => header,
            Err(error) if error.is_incomplete() && len > head.len() as u64 => {
                let all = storage::read_all(storage, &file).map_err(io_error(&path))?;
                snapshot::decode_snapshot_header(&all).map_err(|error| StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    error,
                })?
            }
            Err(error) => {
                return Err(StorageError::Corrupt {
                    path,
                    offset: 0,
                    error,
                })
            }
        };
        if header.data_offset() + header.data_len != len {
            return Err(StorageError::Corrupt {
                path,
                offset: len,
                error: crate::codec::DecodeError::invalid(
                    "snapshot file length disagrees with its header",
                ),
            });
        }
        Some(header)
    } else {
        None
    };
    let epoch = meta_state
        .epoch
        .max(snapshot.as_ref().map_or(0, |s| s.epoch));
    let mut log = ServerLog {
        dir: dir.to_path_buf(),
        epoch,
        meta: meta_state,
        meta_slot,
        snapshot,
        segments: Vec::new(),
        obsolete_segments: Vec::new(),
        mem: Vec::new(),
    };
    let mut seqs: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_segment_file_name(n))
        .collect();
    seqs.sort_unstable();
    let newest = seqs.last().copied();
    for seq in seqs {
        let path = dir.join(segment::segment_file_name(seq));
        let mut file = storage
            .open(&path, OpenOptions::EXISTING)
            .map_err(io_error(&path))?;
        let len = storage.len(&file).map_err(io_error(&path))?;
        let known = summaries
            .get(&(server, seq))
            .filter(|summary| summary.len_bytes == len);
        let (segment_epoch, first, last, locations) = if let Some(summary) = known {
            (summary.epoch, summary.first, summary.last, None)
        } else {
            report.segment_files_scanned += 1;
            let bytes = storage::read_all(storage, &file).map_err(io_error(&path))?;
            let is_newest = Some(seq) == newest;
            let scan = match segment::scan_segment(&bytes) {
                Ok(scan) => scan,
                Err(_) if is_newest && bytes.len() <= SEGMENT_HEADER_BYTES => {
                    // Torn creation during a rollover whose WAL still holds
                    // the entries.
                    drop(file);
                    storage.remove(&path).map_err(io_error(&path))?;
                    continue;
                }
                Err(error) => {
                    return Err(StorageError::Corrupt {
                        path,
                        offset: 0,
                        error,
                    })
                }
            };
            if scan.header.server != server || scan.header.seq != seq {
                return Err(StorageError::Corrupt {
                    path,
                    offset: 0,
                    error: crate::codec::DecodeError::invalid(
                        "segment header names another server or sequence",
                    ),
                });
            }
            if let Some(error) = scan.bad_tail.clone() {
                if !is_newest {
                    return Err(StorageError::Corrupt {
                        path,
                        offset: scan.valid_len,
                        error,
                    });
                }
                // An interrupted rollover: the tail was never synced and the
                // WAL that held it was not deleted (it is deleted only after
                // this file was synced).
                storage
                    .truncate(&mut file, scan.valid_len)
                    .and_then(|()| storage.sync(&mut file))
                    .map_err(io_error(&path))?;
                report.torn_segment_tails.push(TornTail {
                    path: path.clone(),
                    offset: scan.valid_len,
                    bytes_dropped: len - scan.valid_len,
                    reason: error.to_string(),
                });
            }
            let Some(last) = scan.last() else {
                drop(file);
                storage.remove(&path).map_err(io_error(&path))?;
                continue;
            };
            (scan.header.epoch, scan.first, last, Some(scan.locations))
        };
        let len = storage.len(&file).map_err(io_error(&path))?;
        if segment_epoch < log.epoch {
            // Discarded by a snapshot with keep_log_after = false.
            drop(file);
            storage.remove(&path).map_err(io_error(&path))?;
            continue;
        }
        // Replay the segment as an append (Raft §5.3 overwrite rule).
        let current_last = log.segments.last().map_or(0, |s| s.effective_last);
        if first <= current_last {
            log.truncate_from(first);
        } else if !log.segments.is_empty() && first > current_last + 1 {
            log.truncate_from(0);
        }
        log.segments.push(SegmentRef {
            seq,
            epoch: segment_epoch,
            first,
            last,
            effective_last: last,
            len_bytes: len,
            locations,
        });
    }
    Ok(Some(log))
}

/// A snapshot file to write: from [`LogSystem::begin_snapshot`], for
/// [`LogSystem::finish_snapshot`]. Writing it needs no access to the log
/// system.
pub struct SnapshotWrite<S: Storage> {
    storage: Arc<S>,
    server: ServerId,
    dir: PathBuf,
    meta: SnapshotMeta,
    data: Bytes,
    epoch: u64,
    keep_log_after: bool,
}

/// A snapshot file's write and how it went.
pub struct WrittenSnapshot {
    server: ServerId,
    /// The written file's header.
    header: Result<SnapshotHeader, StorageError>,
}

impl<S: Storage> SnapshotWrite<S> {
    /// Encodes the snapshot file and stores it durably.
    pub fn write(self) -> WrittenSnapshot {
        let bytes =
            snapshot::encode_snapshot_file(&self.meta, self.epoch, self.keep_log_after, &self.data);
        let header = snapshot::decode_snapshot_header(&bytes).expect("just encoded");
        // Durability: barrier. temp file, fsync, rename, fsync dir.
        let written =
            storage::write_file_atomic(&*self.storage, &self.dir, SNAPSHOT_FILE_NAME, &bytes)
                .map_err(io_error(&self.dir));
        WrittenSnapshot {
            server: self.server,
            header: written.map(|()| header),
        }
    }
}

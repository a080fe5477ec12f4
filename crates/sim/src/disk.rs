//! A simulated server's disk: the real chorus-log over its fault-injecting
//! in-memory storage, so every seed exercises the production write path,
//! crash recovery included.
//!
//! It executes the core's persistence actions with their contract
//! (`chorus_raft::Action`): hard state and snapshots are barriers; log writes
//! are buffered and become durable at a later sync event (one `flush`, one
//! write and one fsync). A crash loses whatever was not synced — the storage
//! may have kept a torn part of it, which recovery must cut off — and the
//! server restarts from what `LogSystem::open` + `recover` rebuild.

use bytes::Bytes;
use chorus_log::{FaultyStorage, LogConfig, LogSystem};
use chorus_raft::{
    Configuration, Entry, HardState, LogIndex, Persisted, ServerId, SnapshotMeta, Term,
};

/// Small limits, so short runs roll WAL files over into segments and write
/// recovery checkpoints.
const WAL_MAX_SIZE_BYTES: u64 = 32 << 10;
const SEGMENT_MAX_ENTRIES: u64 = 64;

pub struct Disk {
    server: ServerId,
    storage: FaultyStorage,
    config: LogConfig,
    /// `None` between a crash and the restart.
    log: Option<LogSystem<FaultyStorage>>,
    /// Writes buffered since the last sync.
    unsynced: bool,
}

impl Disk {
    /// A fresh disk holding one new server.
    pub fn new(seed: u64, server: ServerId, initial_config: Configuration) -> Result<Self, String> {
        let storage = FaultyStorage::reliable(seed);
        let mut config = LogConfig::new("/node");
        config.wal_max_size_bytes = WAL_MAX_SIZE_BYTES;
        config.segment_max_entries = SEGMENT_MAX_ENTRIES;
        let (mut log, _) =
            LogSystem::open(config.clone(), storage.clone()).map_err(|e| e.to_string())?;
        log.create_server(server, initial_config, Bytes::new())
            .map_err(|e| e.to_string())?;
        Ok(Disk {
            server,
            storage,
            config,
            log: Some(log),
            unsynced: false,
        })
    }

    fn log(&mut self) -> Result<&mut LogSystem<FaultyStorage>, String> {
        self.log
            .as_mut()
            .ok_or_else(|| "disk used while crashed".to_string())
    }

    pub fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), String> {
        let server = self.server;
        self.log()?
            .save_hard_state(server, hard_state)
            .map_err(|e| e.to_string())
    }

    /// Buffer a log write. Returns whether a sync needs scheduling.
    pub fn append(&mut self, entries: Vec<Entry>) -> Result<bool, String> {
        let server = self.server;
        self.log()?
            .append(server, entries)
            .map_err(|e| e.to_string())?;
        let schedule = !self.unsynced;
        self.unsynced = true;
        Ok(schedule)
    }

    pub fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    ) -> Result<(), String> {
        let server = self.server;
        self.log()?
            .save_snapshot(server, meta, data, keep_log_after)
            .map_err(|e| e.to_string())
    }

    /// One write + one fsync of everything buffered. Returns the newest
    /// durable entry, for the core's `log_durable`.
    pub fn sync(&mut self) -> Result<Option<(LogIndex, Term)>, String> {
        self.unsynced = false;
        let server = self.server;
        let notices = self.log()?.flush().map_err(|e| e.to_string())?;
        Ok(notices
            .iter()
            .filter(|d| d.server == server)
            .map(|d| (d.index, d.term))
            .max())
    }

    /// Power loss: unsynced writes are lost (or torn).
    pub fn crash(&mut self) {
        self.log = None;
        self.unsynced = false;
        self.storage.crash();
    }

    /// What a restarting server recovers.
    pub fn recover(&mut self) -> Result<Persisted, String> {
        if self.log.is_none() {
            let (log, _) = LogSystem::open(self.config.clone(), self.storage.clone())
                .map_err(|e| format!("recovery failed: {e}"))?;
            self.log = Some(log);
        }
        let server = self.server;
        self.log()?
            .recover(server)
            .map_err(|e| format!("recovery failed: {e}"))
    }
}

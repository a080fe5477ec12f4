//! The node's handle on chorus-log, whatever the storage underneath (the
//! file system, or memory for tests and the in-memory benchmark).
//!
//! Appends go through a [`LogWriter`] (group commit: one write and one
//! fsync for every server with pending entries); its writer thread hands
//! the durability notices to the node, which routes them to the servers.
//! Barriers (hard state, snapshots) and server creation run under the log's
//! lock on the calling task; a snapshot that keeps the log after it is
//! written by a job that runs without it.

use std::sync::Arc;

use bytes::Bytes;
use chorus_log::{Durable, LogResult, LogStats, LogSystem, LogWriter, Storage};
use chorus_raft::{Configuration, Entry, HardState, Persisted, ServerId, SnapshotMeta};

/// A snapshot's file write and its recording (see
/// [`DurableLog::begin_snapshot`]).
pub(crate) type SnapshotJob = Box<dyn FnOnce() -> LogResult<()> + Send>;

pub(crate) trait DurableLog: Send + Sync + 'static {
    fn append(&self, server: ServerId, entries: Vec<Entry>) -> LogResult<()>;
    fn save_hard_state(&self, server: ServerId, hard_state: HardState) -> LogResult<()>;
    fn save_snapshot(
        &self,
        server: ServerId,
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    ) -> LogResult<()>;
    /// Starts storing a snapshot that keeps the log after it (the core's
    /// `release_cursor`): checked now; the returned job writes its file
    /// and records it, without holding the log, on whatever thread runs
    /// it. Until the job is done the log keeps every entry, so a crash
    /// meanwhile recovers from the previous snapshot and the whole log.
    fn begin_snapshot(
        self: Arc<Self>,
        server: ServerId,
        meta: SnapshotMeta,
        data: Bytes,
    ) -> LogResult<SnapshotJob>;
    fn create_server(
        &self,
        server: ServerId,
        config: Configuration,
        record: Bytes,
    ) -> LogResult<()>;
    fn recover(&self, server: ServerId) -> LogResult<Persisted>;
    fn server_record(&self, server: ServerId) -> LogResult<Bytes>;
    fn contains(&self, server: ServerId) -> bool;
    fn servers(&self) -> Vec<ServerId>;
    fn delete_server(&self, server: ServerId) -> LogResult<()>;
    fn stats(&self) -> LogStats;
    /// Flushes, checkpoints and stops the writer (orderly shutdown).
    fn close(&self) -> LogResult<()>;
}

/// A [`LogWriter`] that can be closed through a shared reference.
pub(crate) struct SharedLog<S: Storage> {
    writer: std::sync::RwLock<Option<LogWriter<S>>>,
}

impl<S: Storage> SharedLog<S> {
    pub(crate) fn start(
        log: LogSystem<S>,
        on_durable: Box<dyn FnMut(Vec<Durable>) + Send>,
    ) -> Self {
        SharedLog {
            writer: std::sync::RwLock::new(Some(LogWriter::start(log, on_durable))),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&LogWriter<S>) -> LogResult<R>) -> LogResult<R> {
        let guard = self
            .writer
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        match guard.as_ref() {
            Some(writer) => f(writer),
            None => Err(chorus_log::ApiError::Closed.into()),
        }
    }
}

impl<S: Storage> DurableLog for SharedLog<S> {
    fn append(&self, server: ServerId, entries: Vec<Entry>) -> LogResult<()> {
        self.with(|w| w.append(server, entries).map(|_| ()))
    }

    fn save_hard_state(&self, server: ServerId, hard_state: HardState) -> LogResult<()> {
        self.with(|w| w.with_log(|log| log.save_hard_state(server, hard_state)))
    }

    fn save_snapshot(
        &self,
        server: ServerId,
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    ) -> LogResult<()> {
        self.with(|w| w.with_log(|log| log.save_snapshot(server, meta, data, keep_log_after)))
    }

    fn begin_snapshot(
        self: Arc<Self>,
        server: ServerId,
        meta: SnapshotMeta,
        data: Bytes,
    ) -> LogResult<SnapshotJob> {
        let write =
            self.with(|w| w.with_log(|log| log.begin_snapshot(server, meta, data, true)))?;
        Ok(Box::new(move || {
            // Without the log's lock, which every server's appends take.
            let written = write.write();
            self.with(|w| w.with_log(|log| log.finish_snapshot(written)))
        }))
    }

    fn create_server(
        &self,
        server: ServerId,
        config: Configuration,
        record: Bytes,
    ) -> LogResult<()> {
        self.with(|w| w.with_log(|log| log.create_server(server, config, record)))
    }

    fn recover(&self, server: ServerId) -> LogResult<Persisted> {
        self.with(|w| w.with_log(|log| log.recover(server)))
    }

    fn server_record(&self, server: ServerId) -> LogResult<Bytes> {
        self.with(|w| w.with_log(|log| log.server_config(server)))
    }

    fn contains(&self, server: ServerId) -> bool {
        self.with(|w| Ok(w.with_log(|log| log.contains(server))))
            .unwrap_or(false)
    }

    fn servers(&self) -> Vec<ServerId> {
        self.with(|w| Ok(w.with_log(|log| log.servers())))
            .unwrap_or_default()
    }

    fn delete_server(&self, server: ServerId) -> LogResult<()> {
        self.with(|w| w.with_log(|log| log.delete_server(server)))
    }

    fn stats(&self) -> LogStats {
        self.with(|w| Ok(w.with_log(|log| log.stats())))
            .unwrap_or_default()
    }

    fn close(&self) -> LogResult<()> {
        let writer = self
            .writer
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        match writer {
            Some(writer) => writer.stop()?.close().map(|_| ()),
            None => Ok(()),
        }
    }
}

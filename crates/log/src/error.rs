//! Errors. Storage/fatal errors ([`StorageError`]) are kept apart from API
//! misuse ([`LogError::Api`]): the first means the disk or the files are in a
//! bad state and the node's log must stop; the second means the caller asked
//! for something that does not make sense and nothing was changed.

use std::io;
use std::path::PathBuf;

use chorus_raft::{LogIndex, ServerId};
use thiserror::Error;

use crate::codec::DecodeError;

/// The disk or the files are bad. Fatal for the log system that returns it.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bytes on disk that are not a torn tail: never silently skipped.
    #[error("corrupt file {path} at offset {offset}: {error}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        #[source]
        error: DecodeError,
    },
    /// The files contradict each other (for example a log with a gap that no
    /// snapshot covers).
    #[error("inconsistent log for {server}: {reason}")]
    Inconsistent { server: ServerId, reason: String },
    /// An earlier write or fsync failed; nothing written since (or buffered
    /// then) can be trusted to be durable, so every later call fails too.
    /// Restart and recover.
    #[error("the log system failed earlier and refuses further work: {reason}")]
    Failed { reason: String },
}

impl StorageError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The caller's request cannot be carried out; nothing changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("no server {0} in this log")]
    UnknownServer(ServerId),
    #[error("server {0} already exists")]
    ServerExists(ServerId),
    #[error("entries must be non-empty and have consecutive indexes")]
    NotConsecutive,
    /// The first entry would leave a hole after the log's last index.
    #[error("append at {first} leaves a gap after last index {last}")]
    Gap { first: LogIndex, last: LogIndex },
    /// The entries start at or below the snapshot: they cannot replace it.
    #[error("append at {first} is at or below the snapshot index {snapshot_index}")]
    BelowSnapshot {
        first: LogIndex,
        snapshot_index: LogIndex,
    },
    /// The range asks for entries the snapshot replaced.
    #[error("index {index} is compacted into the snapshot at {snapshot_index}")]
    Compacted {
        index: LogIndex,
        snapshot_index: LogIndex,
    },
    #[error("index {index} is past the log's last index {last}")]
    PastEnd { index: LogIndex, last: LogIndex },
    #[error("snapshot data is {actual} bytes but its meta says {declared}")]
    SnapshotSize { declared: u64, actual: u64 },
    #[error("the log system was shut down")]
    Closed,
}

/// Any error a log operation returns.
#[derive(Debug, Error)]
pub enum LogError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl LogError {
    /// True when the log system can no longer be used (restart it).
    pub fn is_fatal(&self) -> bool {
        matches!(self, LogError::Storage(_))
    }
}

pub type LogResult<T> = Result<T, LogError>;

//! Settings, mirroring ra's storage `environment_param`s.

use std::path::PathBuf;

/// How the WAL makes a batch durable (ra's `wal_write_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WalWriteStrategy {
    /// One `write` of the whole batch, then one `fdatasync` (ra's `default`).
    #[default]
    Default,
    /// The WAL file is opened `O_DSYNC`: the `write` itself is durable when
    /// it returns and no separate sync is issued (ra's `o_sync`).
    OSync,
}

/// The log system's settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Per-server directories (metadata, snapshots, segments) and the
    /// recovery checkpoint live here (ra's `data_dir`).
    pub data_dir: PathBuf,
    /// The shared WAL files live here; may be another disk (ra's
    /// `wal_data_dir`). Default: `data_dir/wal`.
    pub wal_data_dir: PathBuf,
    /// Entries per segment file before a new one is started (ra's
    /// `segment_max_entries`). Default 4096, ra's default: small enough that
    /// reclaiming below a snapshot frees space promptly, large enough that a
    /// server does not own thousands of files.
    pub segment_max_entries: u64,
    /// A WAL file is rolled over (its entries moved to segments and the file
    /// deleted) once it reaches this size (ra's `wal_max_size_bytes`).
    /// Default 256 MB, ra's default: it bounds both the memory the in-memory
    /// tables hold and the WAL replayed after a crash.
    pub wal_max_size_bytes: u64,
    /// crc32c every WAL record (ra's `wal_compute_checksums`). Default true.
    /// Segment, snapshot and metadata files are always checksummed.
    pub wal_compute_checksums: bool,
    /// Default: [`WalWriteStrategy::Default`].
    pub wal_write_strategy: WalWriteStrategy,
    /// Bytes of appends buffered and not yet handed to the WAL before
    /// [`crate::LogWriter::append`] blocks the caller (backpressure). Default
    /// 64 MiB: a few fsync latencies' worth of appends at disk speed.
    pub wal_buffer_bytes_max: usize,
}

/// ra's default `segment_max_entries`.
pub const SEGMENT_MAX_ENTRIES_DEFAULT: u64 = 4096;
/// ra's default `wal_max_size_bytes`.
pub const WAL_MAX_SIZE_BYTES_DEFAULT: u64 = 256_000_000;
/// See [`LogConfig::wal_buffer_bytes_max`].
pub const WAL_BUFFER_BYTES_MAX_DEFAULT: usize = 64 << 20;

impl LogConfig {
    /// Defaults for everything but the directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        LogConfig {
            wal_data_dir: data_dir.join("wal"),
            data_dir,
            segment_max_entries: SEGMENT_MAX_ENTRIES_DEFAULT,
            wal_max_size_bytes: WAL_MAX_SIZE_BYTES_DEFAULT,
            wal_compute_checksums: true,
            wal_write_strategy: WalWriteStrategy::Default,
            wal_buffer_bytes_max: WAL_BUFFER_BYTES_MAX_DEFAULT,
        }
    }

    pub(crate) fn validate(&self) {
        assert!(self.segment_max_entries >= 1, "segment_max_entries >= 1");
        assert!(self.wal_max_size_bytes >= 1, "wal_max_size_bytes >= 1");
    }
}

//! chorus-log: every durable byte of a chorus node.
//!
//! # What it is and where it sits
//!
//! The storage under `chorus-raft`'s pure core, used by `chorus-node` (with
//! the real file system) and by `chorus-sim` (with [`FaultyStorage`]). It
//! executes the core's storage actions: `SaveHardState` ([`LogSystem::save_hard_state`],
//! a barrier), `AppendLog` ([`LogSystem::append`], asynchronous: durability is
//! reported later as [`Durable`] notices) and `SaveSnapshot`
//! ([`LogSystem::save_snapshot`], a barrier), and gives each server its
//! [`chorus_raft::Persisted`] state on restart ([`LogSystem::recover`]).
//!
//! The design is ra's: **one write-ahead log per node shared by every Raft
//! server on it** (group commit: one write and one fdatasync for many
//! servers' entries), per-server in-memory tables of recent entries, a
//! segment writer that moves entries into per-server segment files when the
//! WAL rolls over (`wal_max_size_bytes`), and per-server snapshots and
//! metadata. A recovery checkpoint written at every rollover and on orderly
//! shutdown lets a restart of thousands of servers skip WAL replay and
//! segment scans.
//!
//! # Driving it
//!
//! Without threads (the simulator): `open` → `append` for any servers →
//! `flush` (one write + one sync, returns the notices) → …; crash the
//! [`FaultyStorage`] at any point and `open` again.
//!
//! With threads (the runtime): wrap the [`LogSystem`] in a [`LogWriter`];
//! callers `append` concurrently and a writer thread batches everything
//! waiting into one flush while the previous one syncs.
//!
//! ```
//! use bytes::Bytes;
//! use chorus_log::{FaultyStorage, LogConfig, LogSystem};
//! use chorus_raft::{Configuration, Entry, HardState, Payload, ServerId};
//!
//! let storage = FaultyStorage::reliable(7);
//! let config = LogConfig::new("/node");
//! let (mut log, _report) = LogSystem::open(config.clone(), storage.clone()).unwrap();
//! let server = ServerId(1);
//! log.create_server(server, Configuration::voters([server]), Bytes::new()).unwrap();
//! log.save_hard_state(server, HardState { term: 1, voted_for: Some(server) }).unwrap();
//! let entry = Entry { index: 1, term: 1, time_ms: 0, payload: Payload::Noop };
//! log.append(server, vec![entry.clone()]).unwrap();
//! let durable = log.flush().unwrap();
//! assert_eq!((durable[0].index, durable[0].term), (1, 1));
//! drop(log);
//! storage.crash(); // power loss: what was flushed survives
//! let (mut log, _report) = LogSystem::open(config, storage).unwrap();
//! let persisted = log.recover(server).unwrap();
//! assert_eq!(persisted.entries, vec![entry]);
//! assert_eq!(persisted.hard_state.term, 1);
//! ```
//!
//! # Files on disk
//!
//! ```text
//! data_dir/
//!   checkpoint                      recovery checkpoint (CCKP)
//!   servers/<server id, 20 digits>/
//!     meta                          term, vote, last applied, log epoch (CMET, two slots)
//!     config                        initial configuration + opaque server config (CCFG)
//!     snapshot                      newest snapshot (CSNP)
//!     <seq, 20 digits>.seg          segment files (CSEG)
//! wal_data_dir/ (default data_dir/wal)
//!   <seq, 20 digits>.wal            shared WAL files (CWAL)
//! ```
//!
//! Every file starts with a magic number and [`FORMAT_VERSION`]; docs/formats.md
//! describes each byte.
//!
//! # Failure model
//!
//! A torn batch at the end of the newest WAL file is cut off on recovery
//! and reported ([`RecoveryReport::torn_wal_tail`]); bad bytes anywhere else
//! are a [`StorageError::Corrupt`] naming the file and offset. Any failed
//! write or fsync makes the whole [`LogSystem`] refuse further work
//! ([`StorageError::Failed`]): nothing is retried, nothing reported durable
//! that might not be. Restart and recover.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod error;
pub mod meta;
pub mod segment;
pub mod snapshot;
pub mod storage;
pub mod system;
pub mod wal;
pub mod writer;

pub use codec::{DecodeError, FORMAT_VERSION};
pub use config::{LogConfig, WalWriteStrategy};
pub use error::{ApiError, LogError, LogResult, StorageError};
pub use storage::{FaultConfig, FaultyStorage, FsStorage, OpenOptions, Storage, StorageStats};
pub use system::{
    LatencyHistogram, LogStats, LogSystem, RecoveryReport, SnapshotWrite, TornTail,
    WrittenSnapshot, LATENCY_BOUNDS_US,
};
pub use wal::Durable;
pub use writer::{DurableCallback, LogWriter, Ticket};

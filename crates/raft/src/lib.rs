//! chorus-raft: the sans-IO Raft core.
pub mod action;
pub mod config;
mod election;
pub mod error;
mod log;
pub mod machine;
mod membership;
pub mod message;
mod progress;
mod raft;
mod read;
mod replication;
mod snapshot;
pub mod types;

pub use action::*;
pub use config::Config;
pub use election::TransferOutcome;
pub use error::{ProposeError, RecoveryError, StepError};
pub use machine::{ApplyMeta, Effect, Effects, Machine, RestoreError, SubscriberId};
pub use membership::MembershipChange;
pub use message::*;
#[cfg(feature = "planted-bugs")]
pub use raft::PlantedBugs;
pub use raft::{Raft, Status};
pub use types::*;

/// What a server recovered from its storage, handed to [`Raft::new`].
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The newest durable snapshot, if any.
    pub snapshot: Option<(SnapshotMeta, bytes::Bytes)>,
    /// The log entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The configuration the server was started with (ra's initial member
    /// list); used until the log or a snapshot holds one.
    pub initial_config: Configuration,
}

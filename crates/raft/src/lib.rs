//! chorus-raft: the sans-IO Raft core.
pub mod action;
pub mod config;
pub mod error;
pub mod machine;
pub mod message;
pub mod types;

pub use action::*;
pub use config::Config;
pub use error::{ProposeError, RestoreError, StepError};
pub use machine::{ApplyMeta, Effect, Effects, Machine, SubscriberId};
pub use message::*;
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

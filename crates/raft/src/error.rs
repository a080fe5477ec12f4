//! Typed errors of the core's entry points.

use thiserror::Error;

use crate::types::{ClusterId, LogIndex, ServerId};

/// A message the core refused. Every case leaves the core's state intact.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StepError {
    #[error("message for cluster {got:?} reached a server of cluster {expected:?}")]
    ForeignCluster { expected: ClusterId, got: ClusterId },
    #[error("message addressed to {to} reached {me}")]
    Misaddressed { to: ServerId, me: ServerId },
    #[error("malformed append from {from}: {reason}")]
    MalformedAppend {
        from: ServerId,
        reason: &'static str,
    },
    #[error("malformed snapshot chunk from {from}: {reason}")]
    MalformedSnapshot { from: ServerId, reason: String },
    #[error("server has reached end of life")]
    Terminated,
}

/// Why a proposal, membership change, query or transfer was refused.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<ServerId> },
    #[error("a membership change is already in progress")]
    ConfigChangeInProgress,
    #[error(
        "the leader has not yet committed an entry of its term; membership changes wait for it"
    )]
    LeaderNotReady,
    #[error("{0} is already a member")]
    AlreadyMember(ServerId),
    #[error("{0} is not a member")]
    NotMember(ServerId),
    #[error("{0} is already a voter")]
    AlreadyVoter(ServerId),
    #[error("removing {0} would leave the cluster with no voter")]
    LastVoter(ServerId),
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("{0} is not a voter and cannot lead")]
    NotVoter(ServerId),
    #[error("the command cannot be encoded: {0}")]
    Encode(String),
    #[error("too many proposals waiting ({0}); retry later")]
    Busy(usize),
    #[error("server has reached end of life")]
    Terminated,
}

/// The persisted state handed to [`crate::Raft::new`] is inconsistent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecoveryError {
    #[error("log entries are not contiguous at index {index}")]
    Gap { index: LogIndex },
    #[error("log entry {index} has term {term}, older than its predecessor's")]
    TermRegression { index: LogIndex, term: u64 },
    #[error("hard state term {hard_term} is older than log term {log_term}")]
    TermBehindLog { hard_term: u64, log_term: u64 },
    #[error(transparent)]
    Machine(#[from] crate::machine::RestoreError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

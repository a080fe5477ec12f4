//! Typed errors. [`NodeError`] is about the node itself (configuration,
//! storage, sockets); the others are the results of API calls, and can
//! cross nodes (they are serializable).

use chorus_raft::{NodeId, ProposeError, ServerId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::ServerRef;

/// The node could not start, or failed.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid node configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] chorus_log::LogError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why the core refused a request (ra's `{error, Reason}`), in a form that
/// can cross nodes.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    #[error("a membership change is already in progress")]
    ConfigChangeInProgress,
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
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
    #[error("too many proposals waiting ({0}); retry later")]
    Busy(usize),
    #[error("the server has reached end of life")]
    Terminated,
    #[error("the command cannot be encoded: {0}")]
    Encode(String),
}

impl Refusal {
    /// The core's refusal, or `None` for "not the leader" (callers redirect
    /// instead of failing).
    pub(crate) fn from_core(error: ProposeError) -> Result<Refusal, Option<ServerId>> {
        Ok(match error {
            ProposeError::NotLeader { leader } => return Err(leader),
            ProposeError::ConfigChangeInProgress => Refusal::ConfigChangeInProgress,
            ProposeError::LeaderNotReady => Refusal::LeaderNotReady,
            ProposeError::AlreadyMember(id) => Refusal::AlreadyMember(id),
            ProposeError::NotMember(id) => Refusal::NotMember(id),
            ProposeError::AlreadyVoter(id) => Refusal::AlreadyVoter(id),
            ProposeError::LastVoter(id) => Refusal::LastVoter(id),
            ProposeError::TransferInProgress => Refusal::TransferInProgress,
            ProposeError::NotVoter(id) => Refusal::NotVoter(id),
            ProposeError::Encode(reason) => Refusal::Encode(reason),
            ProposeError::Busy(n) => Refusal::Busy(n),
            ProposeError::Terminated => Refusal::Terminated,
        })
    }
}

/// The result of an API call that did not succeed.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallError {
    /// ra's `{timeout, ServerId}`: no answer in time. For commands the
    /// outcome is unknown: the command may still be applied.
    #[error("timed out waiting for {0}")]
    Timeout(ServerRef),
    /// ra's `noproc`: no such server is running on its node.
    #[error("no server {0} is running")]
    NoSuchServer(ServerRef),
    /// ra's `nodedown`: the node hosting the server is unreachable.
    #[error("node n{} is down or unreachable", .0 .0)]
    NodeDown(NodeId),
    /// The server is not the leader and knows no leader to redirect to
    /// (for calls that do not wait for one).
    #[error("{server} is not the leader (leader: {leader:?})")]
    NotLeader {
        server: ServerRef,
        leader: Option<ServerRef>,
    },
    /// The server lost leadership before the command was applied: it may
    /// still be applied under the next leader (the outcome is unknown).
    #[error("leadership changed before the command was applied; its outcome is unknown")]
    LeadershipLost { leader: Option<ServerRef> },
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Bytes from another node or the log did not decode as this machine's
    /// types (a different machine, or a different version of it).
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    /// A `local_query` closure can only run on a server of this process.
    #[error("{0} is not hosted by this node; closures cannot cross nodes")]
    NotLocal(ServerRef),
    /// The server's machine is not the type the caller named.
    #[error("{server} runs machine {actual:?}, not the requested type")]
    WrongMachine { server: ServerRef, actual: String },
    /// The server cannot apply the next entry with this code (see
    /// `chorus_raft::Action::ApplyHalted`).
    #[error("{server} halted applying at index {index}: {reason}")]
    Halted {
        server: ServerRef,
        index: u64,
        reason: String,
    },
    #[error("storage failure: {0}")]
    Storage(String),
    /// Too many redirects: leadership is moving faster than the call.
    #[error("leadership kept moving; gave up after {0} redirects")]
    Redirects(usize),
    /// The server stopped (stop_server, delete, end of life, a storage
    /// failure) before answering; for a command the outcome is unknown.
    #[error("{0} stopped before answering")]
    Stopped(ServerRef),
    /// A call was given no server to send to.
    #[error("no server to send the call to")]
    NoTargets,
}

/// Why a server could not be started or restarted.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartError {
    #[error("invalid name {0:?}: 1 to 255 printable bytes, no '/'")]
    InvalidName(String),
    /// Two names on one node hash to the same 32-bit id.
    #[error("server name {name:?} collides with {existing:?} on this node; pick another name")]
    NameCollision { name: String, existing: String },
    #[error("{0} is already running")]
    AlreadyRunning(ServerRef),
    /// `start_server` found stored data: use `restart_server`.
    #[error("{0} already exists on its node; restart it instead")]
    AlreadyExists(ServerRef),
    /// restart_server: no data for this server on its node.
    #[error("{0} was never started on its node (or was deleted)")]
    NotFound(ServerRef),
    /// ra's `name_not_registered`: the machine kind the server runs is not
    /// registered on its node.
    #[error("machine {0:?} is not registered on this node")]
    NameNotRegistered(String),
    #[error("the machine could not be initialised: {0}")]
    MachineInit(String),
    #[error("server record is unreadable: {0}")]
    BadRecord(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

impl From<chorus_log::LogError> for StartError {
    fn from(error: chorus_log::LogError) -> Self {
        StartError::Storage(error.to_string())
    }
}

impl From<chorus_log::LogError> for CallError {
    fn from(error: chorus_log::LogError) -> Self {
        CallError::Storage(error.to_string())
    }
}

/// ra's `{error, cluster_not_formed}`: at most half of the servers started,
/// or no leader was elected in time. The servers that did start were
/// deleted again.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("cluster not formed: {} of {members} servers could not start{}", not_started.len(),
    if *no_leader { " and no leader was elected in time" } else { "" })]
pub struct ClusterNotFormed {
    pub members: usize,
    pub not_started: Vec<(ServerRef, StartError)>,
    pub no_leader: bool,
}

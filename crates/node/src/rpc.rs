//! Requests to servers and nodes, and their answers, as bytes-level values.
//!
//! Every API call becomes a [`NodeRequest`] handled by the node hosting its
//! target, whether that node is this one (no encoding of the request itself)
//! or another (sent in a [`crate::wire::Frame`]). Commands, queries and
//! replies travel as postcard-encoded bytes of the machine's own types, so
//! this layer is independent of any machine type; the typed server task
//! decodes them.

use bytes::Bytes;
use chorus_raft::{Correlation, LogIndex, Membership, Priority, Role, ServerId, Term};
use serde::{Deserialize, Serialize};

use crate::error::{CallError, Refusal, StartError};
use crate::ids::ServerRef;
use crate::overview::Overview;

/// A request to one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ServerRequest {
    /// ra's process_command: answered once applied.
    Command {
        command: Bytes,
        priority: Priority,
    },
    /// ra's pipeline_command: answered on the caller's event stream.
    Pipeline {
        command: Bytes,
        priority: Priority,
        /// The caller's stream ([`CallerId`]'s number) and its correlation.
        correlation: Option<(u64, Correlation)>,
    },
    ConsistentQuery {
        query: Bytes,
    },
    /// Runs on the leader over its current state (may be stale).
    LeaderQuery {
        query: Bytes,
    },
    /// Runs on this server, whatever its role.
    LocalQuery {
        query: Bytes,
    },
    Members,
    AddMember {
        member: ServerRef,
        membership: Membership,
    },
    RemoveMember {
        member: ServerId,
    },
    TransferLeadership {
        target: ServerId,
    },
    TriggerElection,
    /// Commit the end-of-life command (delete_cluster).
    DeleteCluster,
    Status,
    PromoteMember {
        member: ServerId,
    },
}

impl ServerRequest {
    /// Requests that only a leader can serve: a follower redirects them, or
    /// holds them until it knows a leader.
    pub(crate) fn needs_leader(&self) -> bool {
        !matches!(
            self,
            ServerRequest::LocalQuery { .. }
                | ServerRequest::Status
                | ServerRequest::TriggerElection
                | ServerRequest::Pipeline { .. }
        )
    }
}

/// A server's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ServerResponse {
    /// The command was applied at `index`.
    Applied {
        index: LogIndex,
        reply: Bytes,
    },
    /// A query's answer, from a server that `leader` leads (or followed).
    Query {
        index: LogIndex,
        term: Term,
        reply: Bytes,
        leader: Option<ServerId>,
    },
    /// Not the leader: try `leader`.
    Redirect {
        leader: ServerId,
    },
    /// The membership change was appended at `index`.
    Appended {
        index: LogIndex,
    },
    Members {
        members: Vec<(ServerId, Membership)>,
        leader: Option<ServerId>,
    },
    /// transfer_leadership: the target is already the leader.
    AlreadyLeader,
    Done,
    Status(Box<ServerStatus>),
    Refused(Refusal),
    /// The server lost leadership with the command unapplied.
    LeadershipLost {
        leader: Option<ServerId>,
    },
    Failed(CallError),
}

/// One server's state, for `overview` and operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub server: ServerRef,
    pub cluster: String,
    pub machine: String,
    pub role: Role,
    pub term: Term,
    pub leader: Option<ServerId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub members: Vec<(ServerId, Membership)>,
    /// The leader told its followers the cluster is idle: no timers run.
    pub quiesced: bool,
    pub halted_at: Option<LogIndex>,
}

/// What a server needs to start: stored with its log (formats.md,
/// "server record") so it can restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub cluster: String,
    pub server: ServerRef,
    /// The registered machine kind ([`crate::Node::register_machine`]).
    pub machine: String,
    /// Opaque bytes handed to the machine's factory.
    pub machine_config: Bytes,
    /// The initial members (all voters). A server not among them starts
    /// with no configuration and waits to be added by the cluster's leader
    /// (a new member of an existing cluster).
    pub members: Vec<ServerRef>,
}

/// A request to a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum NodeRequest {
    Server {
        to: ServerId,
        request: ServerRequest,
    },
    StartServer {
        record: ServerRecord,
    },
    RestartServer {
        name: String,
    },
    StopServer {
        name: String,
    },
    ForceDeleteServer {
        name: String,
    },
    /// The name of the local server with this id.
    WhoIs {
        id: ServerId,
    },
    Overview,
}

/// A node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum NodeResponse {
    Server(ServerResponse),
    Started,
    StartFailed(StartError),
    Done,
    Name(Option<ServerRef>),
    Overview(Box<Overview>),
    Failed(CallError),
}

/// A pipeline event, bytes-level (decoded by the caller's stream).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum RawEvent {
    Applied {
        leader: ServerId,
        replies: Vec<(Correlation, Bytes)>,
    },
    Rejected {
        leader: Option<ServerId>,
        correlation: Correlation,
    },
}

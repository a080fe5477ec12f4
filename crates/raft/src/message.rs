//! The protocol messages servers exchange. The runtime carries them; their
//! byte encoding is described in `docs/formats.md`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{ClusterId, Entry, LogIndex, ServerId, SnapshotMeta, Term};

/// A message with its routing header.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub cluster: ClusterId,
    pub from: ServerId,
    pub to: ServerId,
    /// The sender's term (for a pre-vote request: the term it would campaign
    /// in; for a granted pre-vote: that same term).
    pub term: Term,
    pub message: Message,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    Vote(VoteRequest),
    VoteResponse(VoteResponse),
    Append(AppendRequest),
    AppendResponse(AppendResponse),
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    InstallSnapshot(SnapshotChunk),
    InstallSnapshotResponse(SnapshotResponse),
    /// Leadership transfer (thesis §3.10): "start an election now".
    TimeoutNow,
}

impl Message {
    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote(_) => "pre_vote",
            Message::PreVoteResponse(_) => "pre_vote_response",
            Message::Vote(_) => "vote",
            Message::VoteResponse(_) => "vote_response",
            Message::Append(_) => "append",
            Message::AppendResponse(_) => "append_response",
            Message::Heartbeat(_) => "heartbeat",
            Message::HeartbeatResponse(_) => "heartbeat_response",
            Message::InstallSnapshot(_) => "install_snapshot",
            Message::InstallSnapshotResponse(_) => "install_snapshot_response",
            Message::TimeoutNow => "timeout_now",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VoteRequest {
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    /// The machine version the candidate's code runs. A server never votes for
    /// a candidate older than itself, so an upgraded cluster is led by
    /// upgraded code.
    pub machine_version: u32,
    /// Set when the election was started by a leadership transfer: voters
    /// then set aside their leader lease (thesis §4.2.3).
    pub leadership_transfer: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VoteResponse {
    pub granted: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AppendRequest {
    pub prev_log_index: LogIndex,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: LogIndex,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to `match_index`, and those
    /// entries are durable on the follower.
    Accepted { match_index: LogIndex },
    /// The follower's log does not contain an entry at `prev_log_index` with
    /// the expected term. The hint lets the leader skip a whole term at a time.
    Rejected {
        prev_log_index: LogIndex,
        hint: ConflictHint,
    },
}

/// Fast backtracking (Raft §5.3, the optimisation the paper sketches).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at `prev_log_index`, or 0 when its log
    /// is shorter than that.
    pub term: Term,
    /// The first index the follower holds with `term`, or its last index + 1
    /// when its log is shorter.
    pub index: LogIndex,
}

/// Leadership assertion without log matching (sent when idle and to confirm
/// reads). `commit` is already capped at what the follower is known to match.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub commit: LogIndex,
    /// The newest ReadIndex round this heartbeat confirms. Rounds also order
    /// a leader's quiescence: every heartbeat of one round has the same
    /// `quiesce` flag, so a follower obeys the newest round it has seen and
    /// ignores older (reordered) heartbeats' flags.
    pub read_round: u64,
    /// The leader is quiescing ([`crate::Config::quiesce`]): the follower
    /// has everything, `commit` is the leader's last index, and no more
    /// heartbeats will come while the cluster is idle. The follower stops its
    /// election timer until the leader is active again or reported down.
    pub quiesce: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub read_round: u64,
    /// The follower's last log index, for diagnostics: the leader acts only
    /// on acknowledged (durable) match indexes.
    pub last_index: LogIndex,
    /// Answering a quiescing heartbeat: the follower stopped its election
    /// timer for this leader.
    pub quiesced: bool,
}

/// One chunk of a snapshot being installed on a follower (Raft §7).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Bytes,
    pub done: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SnapshotResponse {
    /// Chunks up to `next_offset` are held; send the next one.
    Chunk { index: LogIndex, next_offset: u64 },
    /// The snapshot at `index` is installed and durable.
    Installed { index: LogIndex },
    /// The chunk did not fit the transfer in progress; restart from
    /// `next_offset` (0 restarts the transfer).
    Retry { index: LogIndex, next_offset: u64 },
}

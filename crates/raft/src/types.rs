//! Identifiers, log entries, configurations: the vocabulary every layer shares.
//!
//! Everything here is plain data. The byte encoding of these types (postcard,
//! format version [`ENTRY_FORMAT_VERSION`]) is documented in `docs/formats.md`;
//! chorus-log stores it and chorus-node sends it.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Raft term. Terms only grow (Raft §5.1).
pub type Term = u64;

/// A position in the replicated log; the first entry has index 1, index 0
/// means "before the first entry".
pub type LogIndex = u64;

/// Version of the encoding of [`Entry`], [`HardState`], [`SnapshotMeta`] and
/// the protocol messages. Bumped on any incompatible change; decoders refuse
/// versions they do not know.
pub const ENTRY_FORMAT_VERSION: u16 = 1;

/// Identifies one member of one Raft cluster. The runtime chooses the values;
/// they only have to be distinct within a cluster (chorus-node packs the
/// hosting node's id and a per-node number into it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerId(pub u64);

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Identifies a Raft cluster. Every message carries it, so a message that
/// strays into another cluster is refused instead of being obeyed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

/// A node (a process hosting Raft servers). Machines may monitor nodes and
/// hear when they go down or come back ([`crate::MachineEvent`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// Command priority, as in ra: `Low` commands are held back and appended in
/// batches; a `Normal` command proposed later may be appended before them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum Priority {
    #[default]
    Normal,
    Low,
}

/// The role a server plays in its current term.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum Role {
    #[default]
    Follower,
    /// Running a pre-vote round (thesis §9.6): asking whether it could win
    /// before disturbing anyone with a higher term.
    PreCandidate,
    Candidate,
    Leader,
}

/// What the log holds at one index.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    /// The leader's clock (milliseconds, as given to the core) when it
    /// appended the entry. Replicated, so machines that need time (lease
    /// expiry) see the same value on every replica.
    pub time_ms: u64,
    pub payload: Payload,
}

/// The kinds of log entry.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader (Raft §8: commits the previous terms'
    /// entries and lets ReadIndex start).
    Noop,
    /// A machine command, encoded by the core with postcard.
    Command(Bytes),
    /// Timer firings and node up/down notices, delivered to the machine
    /// through the log so every replica sees them at the same index.
    Event(MachineEvent),
    /// A new cluster configuration; it takes effect as soon as it is
    /// appended (thesis §4.1), committed or not.
    Config(Configuration),
    /// From this index on, the machine runs at this version (ra's machine
    /// versioning: the cluster upgrades at one agreed point of the log).
    MachineVersion(u32),
    /// ra's end-of-life command: each server that applies it shuts down and
    /// deletes its data; the leader goes last.
    EndOfLife,
}

impl Entry {
    /// An estimate of the entry's size, used for batch and window limits.
    pub fn size_bytes(&self) -> usize {
        const HEADER_BYTES: usize = 24;
        HEADER_BYTES
            + match &self.payload {
                Payload::Command(data) => data.len(),
                Payload::Config(config) => 16 * config.members.len(),
                Payload::Event(MachineEvent::Timer { name }) => name.len(),
                _ => 8,
            }
    }
}

/// Events the runtime feeds to a machine through the log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum MachineEvent {
    /// A timer the machine set with [`crate::Effect::Timer`] fired.
    Timer { name: String },
    /// A node the machine monitors came up.
    NodeUp(NodeId),
    /// A node the machine monitors went down.
    NodeDown(NodeId),
}

/// How a member takes part in the cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Membership {
    /// Votes and counts towards commit quorums.
    Voter,
    /// Receives the log, never votes, never counts.
    NonVoter,
    /// A non-voter that the leader promotes to voter once its log reaches
    /// `target_index` (ra's `promotable`).
    Promotable { target_index: LogIndex },
}

/// The set of members of a cluster.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Configuration {
    pub members: BTreeMap<ServerId, Membership>,
}

impl Configuration {
    /// A configuration in which every listed server votes.
    pub fn voters(ids: impl IntoIterator<Item = ServerId>) -> Self {
        Configuration {
            members: ids.into_iter().map(|id| (id, Membership::Voter)).collect(),
        }
    }

    pub fn contains(&self, id: ServerId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn is_voter(&self, id: ServerId) -> bool {
        matches!(self.members.get(&id), Some(Membership::Voter))
    }

    pub fn voter_ids(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| matches!(m, Membership::Voter))
            .map(|(id, _)| *id)
    }

    pub fn voter_count(&self) -> usize {
        self.voter_ids().count()
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }
}

/// The state a server must make durable before it answers anyone:
/// Raft §5.1 / Figure 2 "persistent state on all servers" (the log aside).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<ServerId>,
}

/// What a snapshot stands for: the machine state after applying every entry
/// up to and including `index`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    /// The configuration in force at `index`.
    pub config: Configuration,
    /// The machine version in force at `index`.
    pub machine_version: u32,
    /// Length of the machine's snapshot bytes.
    pub size_bytes: u64,
}

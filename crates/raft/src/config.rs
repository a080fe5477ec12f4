//! Tunables of one Raft server, with their defaults and the reason for each.

use crate::error::RecoveryError;
use crate::types::{ClusterId, ServerId};

#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: ClusterId,
    pub id: ServerId,
    /// Followers wait a random time in `[election_timeout_ms, 2 ×
    /// election_timeout_ms)` without hearing from a leader before campaigning
    /// (Raft §5.2); a leader checks its quorum at this period.
    pub election_timeout_ms: u64,
    /// An idle leader asserts itself this often. Must be well below the
    /// election timeout (Raft §5.6: broadcastTime ≪ electionTimeout).
    pub heartbeat_interval_ms: u64,
    /// Pre-vote (thesis §9.6): a server that cannot win does not bump terms.
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2): a leader that has not heard from a quorum
    /// within an election timeout steps down.
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Most payload bytes in one AppendEntries message (at least one entry is
    /// always sent, however large).
    pub append_bytes_max: usize,
    /// Most AppendEntries in flight to one follower (pipelining window).
    pub inflight_appends_max: usize,
    /// Most bytes in flight to one follower.
    pub inflight_bytes_max: usize,
    /// Snapshot transfer chunk size.
    pub snapshot_chunk_bytes: usize,
    /// A release_cursor closer than this to the last snapshot is ignored, so
    /// a machine that releases on every command does not snapshot on every
    /// command (ra's `min_snapshot_interval`).
    pub snapshot_interval_entries_min: u64,
    /// Most low-priority commands appended per batch.
    pub low_priority_batch_max: usize,
    /// Most proposals (of either priority) waiting for their reply or batch
    /// before the core refuses more with [`crate::ProposeError::Busy`].
    pub pending_proposals_max: usize,
    /// Quiescence: an idle leader stops heartbeating and its followers stop
    /// their election timers, so an idle cluster sends nothing and needs no
    /// timer ([`crate::Raft::next_deadline_ms`] returns `None`). Liveness
    /// then comes from the runtime's node-level failure detector, which must
    /// call [`crate::Raft::peer_down`] and [`crate::Raft::peer_up`]: turn this
    /// on only in a runtime that does. A quiesced leader is not ticked, so
    /// [`crate::Machine::tick`] does not run while it is quiesced (machines
    /// that need time to pass while idle ask for timer effects). Off by
    /// default; the rules are in `quiesce.rs` and under "Deviations from
    /// Raft" in the crate docs.
    pub quiesce: bool,
}

impl Config {
    pub fn new(cluster: ClusterId, id: ServerId) -> Self {
        Config {
            cluster,
            id,
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            pre_vote: true,
            check_quorum: true,
            append_entries_max: 4_096,
            append_bytes_max: 1 << 20,
            inflight_appends_max: 16,
            inflight_bytes_max: 16 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_interval_entries_min: 4_096,
            low_priority_batch_max: 256,
            pending_proposals_max: 1 << 20,
            quiesce: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), RecoveryError> {
        let fail = |what: &str| Err(RecoveryError::Config(what.to_string()));
        if self.election_timeout_ms == 0 {
            return fail("election_timeout_ms must be positive");
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.election_timeout_ms
        {
            return fail("heartbeat_interval_ms must be positive and below election_timeout_ms");
        }
        if self.append_entries_max == 0 || self.inflight_appends_max == 0 {
            return fail("append_entries_max and inflight_appends_max must be positive");
        }
        if self.snapshot_chunk_bytes == 0 || self.low_priority_batch_max == 0 {
            return fail("snapshot_chunk_bytes and low_priority_batch_max must be positive");
        }
        Ok(())
    }
}

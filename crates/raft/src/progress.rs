//! The leader's view of one follower (Raft §5.3 nextIndex / matchIndex),
//! with the flow control that pipelines AppendEntries.

use std::collections::VecDeque;

use crate::types::LogIndex;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ReplicationState {
    /// Unsure where the follower's log ends: one AppendEntries at a time.
    Probe,
    /// The follower is in step: AppendEntries are sent optimistically, up to
    /// the in-flight window.
    Replicate,
    /// Sending a snapshot, one chunk at a time.
    Snapshot { index: LogIndex, offset: u64 },
}

#[derive(Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log and be durable there.
    pub(crate) match_index: LogIndex,
    /// Next index to send. Invariant: `match_index < next_index`.
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In Probe / Snapshot state: a message is outstanding.
    pub(crate) waiting: bool,
    /// Last index and size of each AppendEntries in flight (Replicate state).
    inflight: VecDeque<(LogIndex, usize)>,
    inflight_bytes: usize,
    /// When the follower last acknowledged anything (ms), for retransmission.
    pub(crate) last_ack_ms: u64,
    /// Heard from since the last check-quorum round (thesis §6.2).
    pub(crate) recently_active: bool,
    /// Newest ReadIndex round the follower has confirmed.
    pub(crate) read_round: u64,
    /// The highest commit index this follower has been told it may apply.
    pub(crate) commit_told: LogIndex,
    /// The follower confirmed the leader's current quiescing round.
    pub(crate) quiesce_acked: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, now_ms: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            waiting: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_ack_ms: now_ms,
            recently_active: false,
            read_round: 0,
            commit_told: 0,
            quiesce_acked: false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.next_index = self.match_index + 1;
        self.waiting = false;
        self.clear_inflight();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.waiting = false;
        self.clear_inflight();
    }

    pub(crate) fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ReplicationState::Snapshot { index, offset: 0 };
        self.waiting = false;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Whether another AppendEntries may be sent now.
    pub(crate) fn can_send(&self, inflight_max: usize, inflight_bytes_max: usize) -> bool {
        match self.state {
            ReplicationState::Probe => !self.waiting,
            ReplicationState::Replicate => {
                self.inflight.len() < inflight_max && self.inflight_bytes < inflight_bytes_max
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// Record an AppendEntries carrying entries up to `last` (or none).
    pub(crate) fn sent(&mut self, last: Option<LogIndex>, bytes: usize) {
        match self.state {
            ReplicationState::Probe => self.waiting = true,
            ReplicationState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            ReplicationState::Snapshot { .. } => self.waiting = true,
        }
    }

    /// The follower matches through `index`. Returns whether it moved forward.
    pub(crate) fn acknowledge(&mut self, index: LogIndex, now_ms: u64) -> bool {
        self.last_ack_ms = now_ms;
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        if self.state == ReplicationState::Probe {
            self.waiting = false;
        }
        advanced
    }

    pub(crate) fn has_inflight(&self) -> bool {
        !self.inflight.is_empty() || self.waiting
    }

    /// Holds everything up to `last` durably, with nothing in flight and no
    /// snapshot transfer: the leader has nothing left to send it.
    pub(crate) fn caught_up(&self, last: LogIndex) -> bool {
        self.match_index == last
            && self.state == ReplicationState::Replicate
            && !self.has_inflight()
    }
}

//! Linearizable reads by ReadIndex (thesis §6.4), the basis of ra's
//! `consistent_query`.
//!
//! 1. The leader must have committed an entry of its term, so its commit
//!    index is at least every previously committed entry; reads wait for it.
//! 2. It records its commit index as the read index.
//! 3. It confirms it is still leader by a heartbeat round acknowledged by a
//!    quorum, sent *after* the read was registered. Reads that arrive before
//!    a round is broadcast share it (batching).
//! 4. Once the machine has applied the read index, the query runs.

use std::collections::VecDeque;

use crate::action::{Action, RequestId};
use crate::error::ProposeError;
use crate::machine::Machine;
use crate::raft::Raft;
use crate::types::{LogIndex, Role, ServerId};

struct PendingRead<M: Machine> {
    round: u64,
    index: LogIndex,
    request: RequestId,
    query: M::Query,
}

pub(crate) struct ReadState<M: Machine> {
    /// The newest heartbeat round number handed out. Only grows.
    pub(crate) round: u64,
    /// Whether `round` has reads that no heartbeat has carried yet.
    unsent: bool,
    /// The newest round broadcast; heartbeats sent between broadcasts carry
    /// it, since every read of it was registered before it went out.
    pub(crate) broadcast_round: u64,
    /// Waiting for the leader's first commit in its term.
    blocked: Vec<(RequestId, M::Query)>,
    /// Waiting for their round to be acknowledged by a quorum.
    pending: VecDeque<PendingRead<M>>,
    /// Confirmed; waiting for the machine to apply their index.
    ready: VecDeque<(LogIndex, RequestId, M::Query)>,
}

impl<M: Machine> Default for ReadState<M> {
    fn default() -> Self {
        ReadState {
            round: 0,
            unsent: false,
            broadcast_round: 0,
            blocked: Vec::new(),
            pending: VecDeque::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<M: Machine> Raft<M> {
    /// A linearizable query (ra's `consistent_query`): the answer reflects
    /// every command committed before the call. Answered later with
    /// [`Action::QueryReply`] or [`Action::QueryAbandoned`].
    pub fn consistent_query(
        &mut self,
        now_ms: u64,
        request: RequestId,
        query: M::Query,
    ) -> Result<(), ProposeError> {
        self.tick(now_ms);
        if self.terminated {
            return Err(ProposeError::Terminated);
        }
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        self.wake();
        #[cfg(feature = "planted-bugs")]
        if self.bugs.read_without_read_index {
            let reply = self.machine.query(&query);
            self.actions.push(Action::QueryReply { request, reply });
            return Ok(());
        }
        if self.log.term(self.log.commit) != Some(self.term) {
            self.reads.blocked.push((request, query));
        } else {
            self.register_read(request, query);
        }
        Ok(())
    }

    fn register_read(&mut self, request: RequestId, query: M::Query) {
        if !self.reads.unsent {
            self.reads.round += 1;
            self.reads.unsent = true;
        }
        self.reads.pending.push_back(PendingRead {
            round: self.reads.round,
            index: self.log.commit,
            request,
            query,
        });
        // A single voter confirms its own leadership.
        self.confirm_reads();
    }

    /// Start the heartbeat round for reads registered since the last one.
    pub(crate) fn flush_read_round(&mut self) {
        if self.reads.unsent {
            self.broadcast_heartbeat();
        }
    }

    /// Called whenever a heartbeat round is broadcast.
    pub(crate) fn read_round_sent(&mut self) {
        self.reads.unsent = false;
        self.reads.broadcast_round = self.reads.round;
    }

    /// Hand out a round that no read belongs to and mark it broadcast, so
    /// every heartbeat from now on carries it. Quiescing and waking each
    /// start one: a follower can then tell the newer of two heartbeats
    /// apart. Requires no unsent reads (a read registered later gets the
    /// next round).
    pub(crate) fn fresh_read_round(&mut self) -> u64 {
        assert!(!self.reads.unsent, "reads would join a round already sent");
        self.reads.round += 1;
        self.read_round_sent();
        self.reads.round
    }

    /// No read is waiting in any stage (quiescence requires it).
    pub(crate) fn reads_idle(&self) -> bool {
        !self.reads.unsent
            && self.reads.blocked.is_empty()
            && self.reads.pending.is_empty()
            && self.reads.ready.is_empty()
    }

    /// The leader's first commit of its term unblocks waiting reads.
    pub(crate) fn release_blocked_reads(&mut self) {
        if self.reads.blocked.is_empty() || self.log.term(self.log.commit) != Some(self.term) {
            return;
        }
        for (request, query) in std::mem::take(&mut self.reads.blocked) {
            self.register_read(request, query);
        }
    }

    /// Move reads whose round a quorum of voters has acknowledged to `ready`.
    pub(crate) fn confirm_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        // The newest round a quorum of voters has acknowledged. Rounds only
        // grow and followers echo what they were sent, so a round nobody has
        // been sent yet is acknowledged by the leader alone: enough only when
        // it is the single voter.
        let Some(confirmed_round) = self.quorum_value(u64::MAX, |p| p.read_round) else {
            return;
        };
        while self
            .reads
            .pending
            .front()
            .is_some_and(|r| r.round <= confirmed_round)
        {
            if let Some(read) = self.reads.pending.pop_front() {
                self.reads
                    .ready
                    .push_back((read.index, read.request, read.query));
            }
        }
        self.answer_ready_reads();
    }

    /// Answer confirmed reads whose index the machine has applied.
    pub(crate) fn answer_ready_reads(&mut self) {
        while self
            .reads
            .ready
            .front()
            .is_some_and(|(index, _, _)| *index <= self.log.applied)
        {
            if let Some((_, request, query)) = self.reads.ready.pop_front() {
                let reply = self.machine.query(&query);
                self.actions.push(Action::QueryReply { request, reply });
            }
        }
    }

    /// The leader lost its role: unconfirmed reads go back to their callers.
    /// Confirmed ones stay valid and are answered once applied.
    pub(crate) fn abandon_reads(&mut self, leader: Option<ServerId>) {
        let blocked = std::mem::take(&mut self.reads.blocked)
            .into_iter()
            .map(|(r, _)| r);
        let pending: Vec<RequestId> = std::mem::take(&mut self.reads.pending)
            .into_iter()
            .map(|r| r.request)
            .collect();
        for request in blocked.chain(pending) {
            self.actions
                .push(Action::QueryAbandoned { request, leader });
        }
        self.reads.unsent = false;
    }
}

//! Quiescence ([`crate::Config::quiesce`]): an idle cluster sends no
//! heartbeats and runs no timers, so a runtime can host thousands of idle
//! servers for nothing. Liveness then comes from the runtime's node-level
//! failure detector ([`Raft::peer_down`], [`Raft::peer_up`]), as ra's comes
//! from aten and CockroachDB's quiesced ranges rely on node liveness.
//!
//! # Leader
//!
//! 1. It is *idle* when nothing is unwritten, waiting for a reply, batched,
//!    being read, transferred or reconfigured; its whole log is durable,
//!    committed and applied; every follower not reported down holds the
//!    whole log durably with nothing in flight; and the voters not reported
//!    down (with itself) are a quorum.
//! 2. An idle leader starts a *quiescing round*: a fresh ReadIndex round
//!    whose heartbeats all carry `quiesce` and commit = its last index.
//!    Heartbeats continue at the usual interval (every one of that round
//!    carries the flag, so a lost one is resent) until every follower not
//!    reported down has confirmed the round.
//! 3. Then it is *quiesced*: no heartbeats, no check-quorum, no deadline.
//! 4. Anything that makes it not idle wakes it: a proposal, a query, a
//!    membership change, a transfer, replication to a follower, `peer_up`,
//!    or a member campaigning. Waking starts a fresh round, so followers
//!    learn from the next heartbeat that it is active again, and restarts
//!    the heartbeat and check-quorum timers.
//!
//! # Follower
//!
//! A follower obeys the newest heartbeat round of its leader: a quiescing
//! round stops its election timer, a later non-quiescing one (or new
//! entries, a new commit index, a snapshot it lacks) restarts it; after
//! such activity only a later round can quiesce it again. It does not
//! quiesce for a leader the detector reports down. A
//! follower that starts (or restarts) has no leader and runs the normal
//! timer until it hears a quiescing leader. `peer_down(leader)` makes it
//! forget the leader's contact, so no lease holds up votes, and campaign
//! (pre-vote) after a random delay in `[0, election_timeout_ms / 4)`.
//!
//! # Safety
//!
//! None of this touches terms, votes, the log or the commit rule, so safety
//! does not depend on the detector being right: a false suspicion costs at
//! most an election. Quiesced followers still answer (pre-)votes by the
//! usual rules; the leader lease is time-based, and they heard from their
//! leader long ago, so they grant.

use rand::Rng;

use crate::machine::Machine;
use crate::raft::Raft;
use crate::types::{Role, ServerId};

impl<M: Machine> Raft<M> {
    /// The runtime's failure detector suspects the node hosting `peer` (the
    /// suspicion may be false; that costs at most an election). A follower
    /// whose leader is reported down campaigns soon; a leader stops sending
    /// to `peer`, no longer waits for it to quiesce, and steps down if the
    /// voters not reported down are no longer a quorum.
    pub fn peer_down(&mut self, now_ms: u64, peer: ServerId) {
        self.advance_clock(now_ms);
        if self.terminated || peer == self.config.id {
            return;
        }
        // Kept only for members and the leader, which bounds the set.
        let members = self.membership().clone();
        let leader = self.leader;
        self.down
            .retain(|id| members.contains(*id) || leader == Some(*id));
        if members.contains(peer) || leader == Some(peer) {
            self.down.insert(peer);
        }
        match self.role {
            // Check-quorum by liveness (thesis §6.2, with the detector
            // standing in for missing heartbeat answers): a quiesced leader
            // runs no quorum timer, so this is where it learns it has lost
            // its quorum.
            Role::Leader if self.config.check_quorum && !self.live_quorum() => {
                self.become_follower(self.term, None);
            }
            _ if self.leader == Some(peer) && !self.ignores_leader_down() => {
                // The leader's node is suspected: forget its contact so the
                // lease (thesis §4.2.3) no longer refuses votes here, and
                // campaign quickly. The delay is random so that the
                // followers, told at about the same time, rarely split the
                // vote; pre-vote keeps a false suspicion from bumping terms
                // unless a quorum also lost the leader. Until `peer_up`, a
                // heartbeat from it (one in flight, say) does not quiesce
                // this follower again.
                self.leader_contact_ms = None;
                let was_quiesced = std::mem::take(&mut self.quiesced);
                let spread = (self.config.election_timeout_ms / 4).max(1);
                let deadline = self.now_ms + self.rng.gen_range(0..spread);
                if was_quiesced || deadline < self.election_deadline_ms {
                    self.election_deadline_ms = deadline;
                }
            }
            _ => {}
        }
    }

    #[cfg(feature = "planted-bugs")]
    fn ignores_leader_down(&self) -> bool {
        self.bugs.ignore_leader_down
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn ignores_leader_down(&self) -> bool {
        false
    }

    /// The node hosting `peer` is reachable again. A leader wakes and brings
    /// `peer` up to date.
    pub fn peer_up(&mut self, now_ms: u64, peer: ServerId) {
        self.advance_clock(now_ms);
        if self.terminated {
            return;
        }
        let was_down = self.down.remove(&peer);
        if self.role != Role::Leader || !self.progress.contains_key(&peer) {
            return;
        }
        self.wake();
        if was_down {
            // What was in flight to it was probably lost: probe afresh.
            let now = self.now_ms;
            if let Some(progress) = self.progress.get_mut(&peer) {
                progress.become_probe();
                progress.last_ack_ms = now;
            }
        }
        self.send_append(peer);
    }

    /// Leader: the followers not reported down.
    pub(crate) fn live_peers(&self) -> Vec<ServerId> {
        self.progress
            .keys()
            .filter(|id| !self.down.contains(id))
            .copied()
            .collect()
    }

    /// The voters not reported down (this server included) are a quorum.
    fn live_quorum(&self) -> bool {
        let config = self.membership();
        let live = config
            .voter_ids()
            .filter(|id| !self.down.contains(id))
            .count();
        live >= config.quorum()
    }

    /// Leader: nothing to do, and every follower not reported down has it
    /// all (step 1 of the module docs).
    fn idle(&self) -> bool {
        let last = self.log.last_index();
        self.unwritten.is_empty()
            && self.low_priority.is_empty()
            && self.waiting.is_empty()
            && self.reads_idle()
            && self.transfer.is_none()
            && self.config_committed()
            && self.log.durable == last
            && self.log.commit == last
            && self.log.applied == last
            && self.live_quorum()
            && self
                .progress
                .iter()
                .all(|(id, progress)| self.down.contains(id) || progress.caught_up(last))
    }

    /// Leader, after each batch of inputs: wake if no longer idle; else
    /// start quiescing, or finish once every live follower confirmed.
    pub(crate) fn update_quiescence(&mut self) {
        if !self.config.quiesce || self.role != Role::Leader || self.terminated {
            return;
        }
        if !self.idle() {
            self.wake();
            return;
        }
        if self.quiesced {
            return;
        }
        if self.quiescing.is_none() {
            let round = self.fresh_read_round();
            self.quiescing = Some(round);
            for progress in self.progress.values_mut() {
                progress.quiesce_acked = false;
            }
            for peer in self.live_peers() {
                self.send_heartbeat(peer, round);
            }
        }
        let confirmed = self
            .progress
            .iter()
            .all(|(id, progress)| self.down.contains(id) || progress.quiesce_acked);
        if confirmed {
            self.quiesced = true;
        }
    }

    /// Leader: leave quiescence (or abandon a quiescing round). The fresh
    /// round tells followers at the next heartbeat that the leader is active;
    /// timers restart as after an election.
    pub(crate) fn wake(&mut self) {
        if self.role != Role::Leader || self.quiescing.is_none() {
            return;
        }
        self.quiescing = None;
        for progress in self.progress.values_mut() {
            progress.quiesce_acked = false;
        }
        if self.reads_idle() {
            self.fresh_read_round();
        }
        if std::mem::take(&mut self.quiesced) {
            let now = self.now_ms;
            // Activity from before the quiet period says nothing about now.
            for progress in self.progress.values_mut() {
                progress.recently_active = false;
            }
            self.quorum_check_deadline_ms = now + self.config.election_timeout_ms;
            self.heartbeat_deadline_ms = now;
        }
    }

    /// Leader: a member asks for (pre-)votes, so it has not heard from us —
    /// expected while we are quiesced or it is reported down. Tell it now,
    /// so that it follows us instead of starting an election.
    pub(crate) fn answer_campaigning_member(&mut self, from: ServerId) {
        if !self.progress.contains_key(&from) || !(self.config.quiesce || self.down.contains(&from))
        {
            return;
        }
        self.wake();
        self.send_heartbeat(from, self.reads.broadcast_round);
    }
}

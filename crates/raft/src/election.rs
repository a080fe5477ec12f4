//! Leader election (Raft §5.2), pre-vote (thesis §9.6), check-quorum
//! (thesis §6.2), leadership transfer (thesis §3.10).

use crate::action::Action;
use crate::error::ProposeError;
use crate::machine::Machine;
use crate::message::{Envelope, Message, VoteRequest, VoteResponse};
use crate::raft::Raft;
use crate::types::{Role, ServerId, Term};

/// What [`Raft::transfer_leadership`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TransferOutcome {
    /// The target is being brought up to date and will be told to campaign.
    Started,
    /// The target is this server, already the leader (ra's `already_leader`).
    AlreadyLeader,
}

impl<M: Machine> Raft<M> {
    /// Raft §5.1: react to the term in a message before anything else.
    /// Returns whether the message should be handled further.
    pub(crate) fn observe_term(&mut self, envelope: &Envelope) -> bool {
        let term = envelope.term;
        if term > self.term {
            match &envelope.message {
                // A pre-vote request carries the term the sender would campaign
                // in; answering it changes nothing here (thesis §9.6).
                Message::PreVote(_) => return true,
                // A granted pre-vote echoes the term we would campaign in; a
                // refusal carries the refuser's term, and a newer one is real.
                Message::PreVoteResponse(response) if response.granted => return true,
                Message::Vote(request) => {
                    // Thesis §4.2.3: a server that hears from a leader within
                    // the minimum election timeout ignores vote requests, so a
                    // removed or partitioned server cannot depose a healthy
                    // leader. A leadership transfer lifts this.
                    if self.in_leader_lease() && !request.leadership_transfer {
                        return false;
                    }
                    self.become_follower(term, None);
                }
                Message::Append(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                    self.become_follower(term, Some(envelope.from));
                }
                _ => self.become_follower(term, None),
            }
        } else if term < self.term {
            match &envelope.message {
                // A deposed leader learns of the newer term from our answer
                // and steps down (with pre-vote and check-quorum it might
                // otherwise never hear of it).
                Message::Append(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                    let last_index = self.log.last_index();
                    self.send(
                        envelope.from,
                        self.term,
                        Message::HeartbeatResponse(crate::message::HeartbeatResponse {
                            read_round: 0,
                            last_index,
                            quiesced: false,
                        }),
                    );
                }
                Message::PreVote(_) => {
                    self.send(
                        envelope.from,
                        self.term,
                        Message::PreVoteResponse(VoteResponse { granted: false }),
                    );
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// Whether a leader of the current term was heard from recently enough
    /// that an election now would be a disruption.
    pub(crate) fn in_leader_lease(&self) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        match (self.leader, self.leader_contact_ms) {
            (Some(_), Some(contact)) => self.now_ms < contact + self.config.election_timeout_ms,
            _ => false,
        }
    }

    pub(crate) fn tick_election(&mut self) {
        if self.quiesced {
            // The leader quiesced: no timer runs; it is the failure
            // detector's `peer_down` that starts an election (quiesce.rs).
            return;
        }
        if !self.can_campaign() {
            // Non-voters never campaign; they wait to be promoted.
            self.reset_election_deadline();
            return;
        }
        if self.now_ms >= self.election_deadline_ms {
            self.campaign(self.config.pre_vote, false);
        }
    }

    /// Start an election now (ra's `trigger_election`). A leader ignores it.
    pub fn trigger_election(&mut self, now_ms: u64) {
        self.tick(now_ms);
        if self.role != Role::Leader && self.can_campaign() && !self.terminated {
            self.campaign(self.config.pre_vote, false);
        }
    }

    fn campaign(&mut self, pre_vote: bool, leadership_transfer: bool) {
        self.reset_election_deadline();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        let term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            // Raft §5.2: increment the term and vote for yourself, durably,
            // before asking anyone.
            self.enter_term(self.term + 1);
            self.voted_for = Some(self.config.id);
            self.role = Role::Candidate;
            self.save_hard_state();
            self.term
        };
        self.leader = None;
        self.leader_contact_ms = None;
        self.leader_round = 0;
        self.quiesced = false;
        self.actions.push(Action::RoleChanged {
            role: self.role,
            term: self.term,
            leader: None,
        });
        if self.tally_votes(pre_vote) {
            return;
        }
        let request = VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            machine_version: M::VERSION,
            leadership_transfer,
        };
        let voters: Vec<ServerId> = self
            .membership()
            .voter_ids()
            .filter(|id| *id != self.config.id)
            .collect();
        for voter in voters {
            let message = if pre_vote {
                Message::PreVote(request.clone())
            } else {
                Message::Vote(request.clone())
            };
            self.send(voter, term, message);
        }
    }

    /// Count votes; win or lose the round if it is decided. Returns whether
    /// the round ended.
    fn tally_votes(&mut self, pre_vote: bool) -> bool {
        let config = self.membership();
        let quorum = config.quorum();
        let granted = self
            .votes
            .iter()
            .filter(|(id, granted)| **granted && config.is_voter(**id))
            .count();
        let refused = self
            .votes
            .iter()
            .filter(|(id, granted)| !**granted && config.is_voter(**id))
            .count();
        if granted >= quorum {
            if pre_vote {
                self.campaign(false, false);
            } else {
                self.become_leader();
            }
            true
        } else if refused >= quorum {
            // Lost: wait for the next timeout as a follower of this term.
            self.become_follower(self.term, None);
            true
        } else {
            false
        }
    }

    pub(crate) fn on_vote_request(
        &mut self,
        from: ServerId,
        term: Term,
        request: VoteRequest,
        pre_vote: bool,
    ) {
        if self.role == Role::Leader {
            self.answer_campaigning_member(from);
        }
        // Raft §5.4.1: only vote for a candidate whose log is at least as up
        // to date as ours. And never for code older than ours, so an upgraded
        // cluster stays led by upgraded code.
        let log_ok = self
            .log
            .is_up_to_date(request.last_log_index, request.last_log_term)
            && request.machine_version >= M::VERSION;
        let granted = if pre_vote {
            // Thesis §9.6: grant a pre-vote only if we too have not heard
            // from a leader lately and the candidate could win.
            log_ok && term > self.term && (!self.in_leader_lease() || request.leadership_transfer)
        } else {
            // Raft §5.2: at most one vote per term, first come first served
            // (observe_term has already moved us to `term`).
            let can_vote =
                self.voted_for == Some(from) || (self.voted_for.is_none() && self.leader.is_none());
            #[cfg(feature = "planted-bugs")]
            let can_vote = can_vote || self.bugs.double_vote;
            term == self.term && can_vote && log_ok
        };
        if granted && !pre_vote {
            self.voted_for = Some(from);
            self.save_hard_state();
            self.reset_election_deadline();
        }
        let response = VoteResponse { granted };
        // A granted pre-vote echoes the prospective term so the pre-candidate
        // counts it; a refusal carries our term, so a pre-candidate behind us
        // catches up (it would otherwise never win a pre-vote here).
        let reply_term = if pre_vote && granted { term } else { self.term };
        let message = if pre_vote {
            Message::PreVoteResponse(response)
        } else {
            Message::VoteResponse(response)
        };
        self.send(from, reply_term, message);
    }

    pub(crate) fn on_vote_response(
        &mut self,
        from: ServerId,
        term: Term,
        granted: bool,
        pre_vote: bool,
    ) {
        let expected = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => term == self.term + 1,
            (Role::Candidate, false) => term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        self.votes.insert(from, granted);
        self.tally_votes(pre_vote);
    }

    pub(crate) fn on_timeout_now(&mut self) {
        // Thesis §3.10: the transfer target campaigns at once, skipping
        // pre-vote and the leader lease of its peers.
        if self.role != Role::Leader && self.can_campaign() {
            self.campaign(false, true);
        }
    }

    /// Hand leadership to `target` (ra's `transfer_leadership`): stop taking
    /// proposals, bring the target up to date, tell it to campaign. Abandoned
    /// after an election timeout.
    pub fn transfer_leadership(
        &mut self,
        now_ms: u64,
        target: ServerId,
    ) -> Result<TransferOutcome, ProposeError> {
        self.tick(now_ms);
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.config.id {
            return Ok(TransferOutcome::AlreadyLeader);
        }
        if !self.membership().is_voter(target) {
            return Err(ProposeError::NotVoter(target));
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        self.wake();
        self.transfer = Some((target, self.now_ms + self.config.election_timeout_ms));
        self.maybe_send_timeout_now(target);
        Ok(TransferOutcome::Started)
    }

    /// Send TimeoutNow once the transfer target has every entry.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: ServerId) {
        let Some((target, _)) = self.transfer else {
            return;
        };
        if target != peer {
            return;
        }
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(target, self.term, Message::TimeoutNow);
        } else {
            self.send_append(target);
        }
    }

    /// Thesis §6.2: a leader that has not heard from a quorum within an
    /// election timeout steps down, so a partitioned leader stops serving.
    pub(crate) fn check_quorum(&mut self) {
        let config = self.membership();
        let mut active = usize::from(config.is_voter(self.config.id));
        for (id, progress) in &self.progress {
            if progress.recently_active && config.is_voter(*id) {
                active += 1;
            }
        }
        let quorum = config.quorum();
        for progress in self.progress.values_mut() {
            progress.recently_active = false;
        }
        if self.config.check_quorum && active < quorum {
            self.become_follower(self.term, None);
        }
    }
}

//! Membership changes one server at a time (thesis §4.1–4.2), non-voting
//! and promotable members (ra's `promotable`).

use crate::action::ReplyTo;
use crate::error::ProposeError;
use crate::machine::Machine;
use crate::progress::Progress;
use crate::raft::Raft;
use crate::types::{LogIndex, Membership, Payload, Role, ServerId};

/// One membership change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MembershipChange {
    /// Add a voter at once (it votes and counts before it has caught up).
    AddVoter(ServerId),
    /// Add a member that receives the log but never votes.
    AddNonVoter(ServerId),
    /// Add a non-voter that the leader promotes to voter once it has caught
    /// up with the log as it was when it was added.
    AddPromotable(ServerId),
    /// Remove a member (possibly the leader itself).
    Remove(ServerId),
    /// Make a non-voter a voter once it has caught up with the log as it
    /// is now (it becomes promotable; etcd's learner promotion).
    Promote(ServerId),
}

impl<M: Machine> Raft<M> {
    /// Append a membership change (ra's `add_member` / `remove_member`): it
    /// takes effect at once and the call returns the entry's index; it is
    /// safe once committed.
    pub fn change_membership(
        &mut self,
        now_ms: u64,
        change: MembershipChange,
    ) -> Result<LogIndex, ProposeError> {
        self.tick(now_ms);
        self.check_can_propose()?;
        self.check_can_change_membership()?;
        let mut config = self.membership().clone();
        match change {
            MembershipChange::AddVoter(id)
            | MembershipChange::AddNonVoter(id)
            | MembershipChange::AddPromotable(id) => {
                if config.contains(id) {
                    return Err(ProposeError::AlreadyMember(id));
                }
                let membership = match change {
                    MembershipChange::AddVoter(_) => Membership::Voter,
                    MembershipChange::AddNonVoter(_) => Membership::NonVoter,
                    _ => Membership::Promotable {
                        target_index: self.log.last_index(),
                    },
                };
                config.members.insert(id, membership);
            }
            MembershipChange::Remove(id) => {
                if !config.contains(id) {
                    return Err(ProposeError::NotMember(id));
                }
                if config.is_voter(id) && config.voter_count() == 1 {
                    return Err(ProposeError::LastVoter(id));
                }
                config.members.remove(&id);
            }
            MembershipChange::Promote(id) => match config.members.get(&id) {
                None => return Err(ProposeError::NotMember(id)),
                Some(Membership::Voter) => return Err(ProposeError::AlreadyVoter(id)),
                Some(_) => {
                    config.members.insert(
                        id,
                        Membership::Promotable {
                            target_index: self.log.last_index(),
                        },
                    );
                }
            },
        }
        let index = self.append_entry(Payload::Config(config), ReplyTo::Nobody);
        self.sync_progress();
        Ok(index)
    }

    /// Thesis §4.1: one change at a time — the previous configuration entry
    /// must be committed. And (the fix to the single-server algorithm found
    /// after the thesis, raft-dev 2015) the leader must have committed an
    /// entry of its own term first.
    fn check_can_change_membership(&self) -> Result<(), ProposeError> {
        if self.log.term(self.log.commit) != Some(self.term) {
            return Err(ProposeError::LeaderNotReady);
        }
        if !self.config_committed() {
            return Err(ProposeError::ConfigChangeInProgress);
        }
        Ok(())
    }

    /// Whether the configuration in force is committed. With no
    /// configuration entry above the snapshot, the snapshot's is in force,
    /// and it is committed.
    pub(crate) fn config_committed(&self) -> bool {
        self.configs
            .last()
            .is_none_or(|(index, _)| *index <= self.log.commit)
    }

    /// Leader: keep a progress record for every member but itself.
    pub(crate) fn sync_progress(&mut self) {
        let members: Vec<ServerId> = self
            .membership()
            .members
            .keys()
            .copied()
            .filter(|id| *id != self.config.id)
            .collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            if !self.progress.contains_key(&id) {
                self.progress.insert(id, Progress::new(next, self.now_ms));
                self.send_append(id);
            }
        }
    }

    /// Promote a promotable member that has caught up (ra's promotable
    /// members; the change goes through the usual one-at-a-time rule).
    pub(crate) fn maybe_promote(&mut self, peer: ServerId) {
        if self.role != Role::Leader || self.transfer.is_some() {
            return;
        }
        let Some(Membership::Promotable { target_index }) =
            self.membership().members.get(&peer).copied()
        else {
            return;
        };
        let caught_up = self
            .progress
            .get(&peer)
            .is_some_and(|p| p.match_index >= target_index);
        if !caught_up || self.check_can_change_membership().is_err() {
            return;
        }
        let mut config = self.membership().clone();
        config.members.insert(peer, Membership::Voter);
        self.append_entry(Payload::Config(config), ReplyTo::Nobody);
        self.sync_progress();
    }

    /// Thesis §4.2.2: a leader removed from the configuration steps down once
    /// the configuration without it is committed.
    pub(crate) fn maybe_step_down_after_removal(&mut self) {
        let removed = !self.membership().is_voter(self.config.id);
        if self.role == Role::Leader && removed && self.config_committed() {
            self.become_follower(self.term, None);
        }
    }
}

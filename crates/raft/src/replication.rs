//! Proposals, log replication (Raft §5.3), commitment (§5.4.2) and applying
//! committed entries to the machine.

use bytes::Bytes;

use crate::action::{Action, ReplyTo};
use crate::error::{ProposeError, StepError};
use crate::log::AppendOutcome;
use crate::machine::{ApplyMeta, Effect, Effects, Machine};
use crate::message::{
    AppendRequest, AppendResponse, ConflictHint, Heartbeat, HeartbeatResponse, Message,
};
use crate::progress::{Progress, ReplicationState};
use crate::raft::Raft;
use crate::types::{Entry, LogIndex, MachineEvent, Payload, Priority, Role, ServerId};

impl<M: Machine> Raft<M> {
    /// Propose a command (ra's `process_command` / `pipeline_command`).
    /// Normal commands join the current batch; low-priority ones wait for a
    /// batch of their own and may be overtaken. The batch is appended and
    /// replicated at the next [`Raft::take_actions`].
    pub fn propose(
        &mut self,
        now_ms: u64,
        command: M::Command,
        priority: Priority,
        reply_to: ReplyTo,
    ) -> Result<(), ProposeError> {
        self.tick(now_ms);
        self.check_can_propose()?;
        self.propose_command(command, priority, reply_to)
    }

    /// Deliver a timer firing or a node up/down notice to the machine
    /// through the log (leader only).
    pub fn propose_event(
        &mut self,
        now_ms: u64,
        event: MachineEvent,
    ) -> Result<LogIndex, ProposeError> {
        self.tick(now_ms);
        self.check_can_propose()?;
        Ok(self.append_entry(Payload::Event(event), ReplyTo::Nobody))
    }

    /// Commit ra's end-of-life command: every member applies it, shuts down
    /// and deletes its data; the leader goes last, once every member has it.
    pub fn propose_end_of_life(&mut self, now_ms: u64) -> Result<LogIndex, ProposeError> {
        self.tick(now_ms);
        self.check_can_propose()?;
        Ok(self.append_entry(Payload::EndOfLife, ReplyTo::Nobody))
    }

    pub(crate) fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.terminated || self.end_of_life.is_some() {
            return Err(ProposeError::Terminated);
        }
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            // Thesis §3.10: the old leader stops accepting proposals while it
            // hands over, or the transfer might never catch up.
            return Err(ProposeError::TransferInProgress);
        }
        let pending = self.waiting.len() + self.low_priority.len();
        if pending >= self.config.pending_proposals_max {
            return Err(ProposeError::Busy(pending));
        }
        Ok(())
    }

    pub(crate) fn propose_command(
        &mut self,
        command: M::Command,
        priority: Priority,
        reply_to: ReplyTo,
    ) -> Result<(), ProposeError> {
        let data =
            postcard::to_allocvec(&command).map_err(|e| ProposeError::Encode(e.to_string()))?;
        match priority {
            Priority::Normal => {
                self.append_entry(Payload::Command(Bytes::from(data)), reply_to);
            }
            Priority::Low => {
                self.wake();
                self.low_priority.push_back((Bytes::from(data), reply_to));
            }
        }
        Ok(())
    }

    /// Leader: append one entry of the current term to the log.
    pub(crate) fn append_entry(&mut self, payload: Payload, reply_to: ReplyTo) -> LogIndex {
        self.wake();
        let index = self.log.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            time_ms: self.now_ms,
            payload,
        };
        if let Payload::Config(config) = &entry.payload {
            self.configs.push((index, config.clone()));
        }
        self.log.push(entry.clone());
        self.unwritten.push(entry);
        if reply_to != ReplyTo::Nobody {
            self.waiting.push_back((index, reply_to));
        }
        index
    }

    /// Close the current batch: append a batch of low-priority commands
    /// behind the normal ones, then replicate.
    pub(crate) fn flush_proposals(&mut self) {
        let batch = self
            .low_priority
            .len()
            .min(self.config.low_priority_batch_max);
        for _ in 0..batch {
            if let Some((data, reply_to)) = self.low_priority.pop_front() {
                self.append_entry(Payload::Command(data), reply_to);
            }
        }
        if !self.unwritten.is_empty() {
            self.write_unwritten();
            self.broadcast_append();
            // A single-voter cluster commits on its own durability alone.
            self.advance_commit();
        }
    }

    pub(crate) fn broadcast_append(&mut self) {
        let peers: Vec<ServerId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_append(peer);
        }
    }

    /// Send the follower what it is missing, as far as flow control allows.
    /// Returns whether anything was sent.
    pub(crate) fn send_append(&mut self, peer: ServerId) -> bool {
        let mut sent = false;
        loop {
            let Some(progress) = self.progress.get(&peer) else {
                return sent;
            };
            if !progress.can_send(
                self.config.inflight_appends_max,
                self.config.inflight_bytes_max,
            ) {
                return sent;
            }
            let next = progress.next_index;
            let is_probe = progress.state == ReplicationState::Probe;
            let prev_index = next - 1;
            let Some(prev_term) = self.log.term(prev_index) else {
                // The entries the follower needs were compacted away.
                self.start_snapshot_transfer(peer);
                return true;
            };
            let entries = self.log.slice(
                next,
                self.config.append_entries_max,
                self.config.append_bytes_max,
            );
            if entries.is_empty() && !is_probe {
                return sent;
            }
            let last = entries.last().map(|e| e.index);
            let bytes: usize = entries.iter().map(Entry::size_bytes).sum();
            let request = AppendRequest {
                prev_log_index: prev_index,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.commit,
            };
            let commit = self.log.commit;
            if let Some(progress) = self.progress.get_mut(&peer) {
                progress.sent(last, bytes);
                // The follower commits at most through the message's end.
                let told = commit.min(last.unwrap_or(prev_index));
                progress.commit_told = progress.commit_told.max(told);
            }
            // Replicating is activity: a quiesced leader resumes its timers
            // (retransmission needs them).
            self.wake();
            self.send(peer, self.term, Message::Append(request));
            sent = true;
            if is_probe || last.is_none() {
                return sent;
            }
        }
    }

    pub(crate) fn on_append(
        &mut self,
        from: ServerId,
        request: AppendRequest,
    ) -> Result<(), StepError> {
        self.note_leader_contact(from);
        // Validate at the gateway: entries contiguous from prev + 1 with
        // terms that never exceed the leader's or go backwards.
        let well_formed = crate::log::check_run(
            request.prev_log_index,
            request.prev_log_term,
            &request.entries,
        );
        if !well_formed.is_ok_and(|last_term| last_term <= self.term) {
            return Err(StepError::MalformedAppend {
                from,
                reason: "entries not contiguous, terms out of order or newer than the leader's",
            });
        }
        // Entries at or below our snapshot are committed and so match the
        // leader's (Leader Completeness); skip them.
        let snapshot_index = self.log.snapshot_index();
        let leader_commit = request.leader_commit;
        let mut entries = request.entries;
        let (prev_index, prev_term) = if request.prev_log_index < snapshot_index {
            let skip = (snapshot_index - request.prev_log_index) as usize;
            if skip >= entries.len() {
                self.leader_match = self.leader_match.max(snapshot_index);
                self.acknowledge_leader_now();
                return Ok(());
            }
            entries.drain(..skip);
            (
                snapshot_index,
                self.log.term(snapshot_index).unwrap_or_default(),
            )
        } else {
            (request.prev_log_index, request.prev_log_term)
        };
        // Never let a message overwrite a committed entry (State Machine
        // Safety): a leader that asks for it is faulty.
        if let Some(conflict) = entries
            .iter()
            .find(|e| self.log.term(e.index).is_some_and(|t| t != e.term))
        {
            if conflict.index <= self.log.commit {
                return Err(StepError::MalformedAppend {
                    from,
                    reason: "would overwrite a committed entry",
                });
            }
        }
        match self.log.try_append(prev_index, prev_term, entries) {
            AppendOutcome::Mismatch => {
                let hint = if prev_index > self.log.last_index() {
                    ConflictHint {
                        term: 0,
                        index: self.log.last_index() + 1,
                    }
                } else {
                    ConflictHint {
                        term: self.log.term(prev_index).unwrap_or_default(),
                        index: self.log.first_index_of_term_at(prev_index),
                    }
                };
                self.send(
                    from,
                    self.term,
                    Message::AppendResponse(AppendResponse::Rejected {
                        prev_log_index: prev_index,
                        hint,
                    }),
                );
            }
            AppendOutcome::Matched { matched, written } => {
                let wrote = !written.is_empty();
                if let Some(first) = written.first() {
                    // A rewritten suffix may have held configuration entries
                    // and acknowledgements: forget them (thesis §4.1).
                    self.configs.retain(|(index, _)| *index < first.index);
                    self.acknowledged = self.acknowledged.min(first.index - 1);
                    self.leader_match = self.leader_match.min(first.index - 1);
                    for entry in &written {
                        if let Payload::Config(config) = &entry.payload {
                            self.configs.push((entry.index, config.clone()));
                        }
                    }
                    self.actions.push(Action::AppendLog(written));
                }
                self.leader_match = self.leader_match.max(matched);
                // Raft §5.3 rule 5: commit = min(leaderCommit, last new entry).
                let commit = leader_commit.min(matched);
                let news = wrote || commit > self.log.commit;
                if commit > self.log.commit {
                    self.log.commit = commit;
                    self.apply_committed();
                }
                if news {
                    // New entries or a new commit index: the leader is
                    // active again, so the election timer runs again. (A
                    // duplicate of an old append carries neither.)
                    self.quiesced_leader_active();
                }
                // Answer now if everything this message matched is durable;
                // otherwise `log_durable` answers once it is.
                if self.log.durable >= matched {
                    self.acknowledge_leader_now();
                }
            }
        }
        Ok(())
    }

    /// `from` leads the current term (observe_term has checked the term):
    /// follow it. A candidate hearing from the leader of its term steps down
    /// (Raft §5.2); the election timer restarts.
    pub(crate) fn note_leader_contact(&mut self, from: ServerId) {
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(from));
        }
        if self.leader != Some(from) {
            self.leader = Some(from);
            self.leader_round = 0;
            self.quiesced = false;
            self.announce_role();
        }
        self.leader_contact_ms = Some(self.now_ms);
        self.reset_election_deadline();
    }

    /// Follower: the leader shows activity other than a heartbeat (entries,
    /// a commit index, a snapshot), so the election timer runs again. A
    /// leader that became active after quiescing in round `r` has started
    /// round `r + 1` at least (`wake`), and will quiesce again only with a
    /// later round: heartbeats of round `r` are stale from now on, and a
    /// reordered one must not quiesce this follower again (found by the
    /// simulator: a leader that removed itself left its followers waiting).
    pub(crate) fn quiesced_leader_active(&mut self) {
        if std::mem::take(&mut self.quiesced) {
            self.leader_round += 1;
        }
    }

    /// Answer the leader with what is both matched and durable. Called after
    /// an AppendEntries, so the leader always hears back.
    fn acknowledge_leader_now(&mut self) {
        let Some(leader) = self.leader else { return };
        let index = self.leader_match.min(self.log.durable);
        self.acknowledged = self.acknowledged.max(index);
        self.send(
            leader,
            self.term,
            Message::AppendResponse(AppendResponse::Accepted { match_index: index }),
        );
    }

    /// After new durability: acknowledge entries the leader is waiting for.
    /// A follower never acknowledges an entry before it is durable — the
    /// leader would count it towards a commit that a crash could undo.
    pub(crate) fn acknowledge_leader(&mut self) {
        if self.leader.is_none() || self.role != Role::Follower {
            return;
        }
        let index = self.leader_match.min(self.log.durable);
        if index > self.acknowledged {
            self.acknowledge_leader_now();
        }
    }

    /// Leader: `from` answered. Returns its progress, marked active for
    /// check-quorum; `None` when this server does not lead or `from` is not a
    /// member (a stale answer).
    pub(crate) fn heard_from(&mut self, from: ServerId) -> Option<&mut Progress> {
        if self.role != Role::Leader {
            return None;
        }
        let progress = self.progress.get_mut(&from)?;
        progress.recently_active = true;
        Some(progress)
    }

    /// Leader: `from`'s log now matches further (`advanced`) or was
    /// confirmed: commit, promote, finish end of life or a transfer, and send
    /// what it still lacks (or at least the new commit index).
    pub(crate) fn after_acknowledgement(&mut self, from: ServerId, advanced: bool) {
        if advanced {
            self.advance_commit();
            self.maybe_promote(from);
            self.maybe_finish_end_of_life();
        }
        self.maybe_send_timeout_now(from);
        if !self.send_append(from) {
            self.tell_commit(from);
        }
    }

    pub(crate) fn on_append_response(&mut self, from: ServerId, response: AppendResponse) {
        let now = self.now_ms;
        let last_index = self.log.last_index();
        let Some(progress) = self.heard_from(from) else {
            return;
        };
        match response {
            AppendResponse::Accepted { match_index } => {
                let match_index = match_index.min(last_index);
                let advanced = progress.acknowledge(match_index, now);
                if progress.state == ReplicationState::Probe {
                    progress.become_replicate();
                }
                self.after_acknowledgement(from, advanced);
            }
            AppendResponse::Rejected {
                prev_log_index,
                hint,
            } => {
                progress.last_ack_ms = now;
                // Ignore stale rejections (reordered or duplicated): one at
                // or below what the follower has since matched, or, while
                // probing, one that does not answer the probe in flight.
                let stale = match progress.state {
                    ReplicationState::Replicate => prev_log_index <= progress.match_index,
                    ReplicationState::Probe => prev_log_index + 1 != progress.next_index,
                    ReplicationState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                // Fast backtracking: skip the follower's whole conflicting
                // term, or jump to its log's end.
                let next = if hint.term == 0 {
                    hint.index
                } else {
                    match self.log.last_index_of_term(hint.term) {
                        Some(last) => last + 1,
                        None => hint.index,
                    }
                };
                let Some(progress) = self.progress.get_mut(&from) else {
                    return;
                };
                progress.become_probe();
                progress.next_index = next.clamp(
                    progress.match_index + 1,
                    prev_log_index.max(progress.match_index + 1),
                );
                self.send_append(from);
            }
        }
    }

    pub(crate) fn on_heartbeat(&mut self, from: ServerId, heartbeat: Heartbeat) {
        self.note_leader_contact(from);
        // The leader capped `commit` at what it knows we match.
        let commit = heartbeat.commit.min(self.log.last_index());
        if commit > self.log.commit {
            self.log.commit = commit;
            self.apply_committed();
        }
        // Every heartbeat of one round carries the same `quiesce` flag (a
        // leader starts a fresh round to quiesce and another to wake), so
        // the newest round seen decides; an older, reordered heartbeat does
        // not undo it.
        // A leader the failure detector reports down is not trusted to be
        // there when needed: keep the timer (a stale quiescing heartbeat
        // must not cancel the campaign `peer_down` started).
        if heartbeat.read_round >= self.leader_round {
            self.leader_round = heartbeat.read_round;
            self.quiesced = heartbeat.quiesce && !self.down.contains(&from);
        }
        let last_index = self.log.last_index();
        self.send(
            from,
            self.term,
            Message::HeartbeatResponse(HeartbeatResponse {
                read_round: heartbeat.read_round,
                last_index,
                quiesced: heartbeat.quiesce && self.quiesced,
            }),
        );
    }

    pub(crate) fn on_heartbeat_response(&mut self, from: ServerId, response: HeartbeatResponse) {
        let last = self.log.last_index();
        let quiescing = self.quiescing;
        let Some(progress) = self.heard_from(from) else {
            return;
        };
        progress.read_round = progress.read_round.max(response.read_round);
        // Only an answer to this quiescing round counts: rounds only grow
        // and a wake starts a new one, so a stale confirmation is ignored.
        if response.quiesced && quiescing.is_some_and(|round| response.read_round >= round) {
            progress.quiesce_acked = true;
        }
        if progress.match_index < last {
            self.send_append(from);
        }
        self.confirm_reads();
    }

    pub(crate) fn tick_leader(&mut self) {
        if self.quiesced {
            // No timers while quiesced; only an input wakes the leader.
            return;
        }
        let now = self.now_ms;
        if now >= self.quorum_check_deadline_ms {
            self.quorum_check_deadline_ms = now + self.config.election_timeout_ms;
            self.check_quorum();
            if self.role != Role::Leader {
                return;
            }
        }
        if let Some((_, until)) = self.transfer {
            if now >= until {
                self.transfer = None;
            }
        }
        if now >= self.heartbeat_deadline_ms {
            self.heartbeat_deadline_ms = now + self.config.heartbeat_interval_ms;
            self.retransmit();
            self.broadcast_heartbeat();
        }
        let mut effects = Effects::new();
        self.machine.tick(now, &mut effects);
        self.run_effects(effects);
    }

    /// Messages get lost: a follower whose window has seen no
    /// acknowledgement for two heartbeat intervals is probed again.
    fn retransmit(&mut self) {
        let now = self.now_ms;
        let patience = 2 * self.config.heartbeat_interval_ms;
        let mut resend = Vec::new();
        for (id, progress) in self.progress.iter_mut() {
            // No traffic to peers reported down; `peer_up` probes them.
            if self.down.contains(id) {
                continue;
            }
            if progress.has_inflight() && now >= progress.last_ack_ms + patience {
                match progress.state {
                    ReplicationState::Snapshot { .. } => progress.waiting = false,
                    _ => progress.become_probe(),
                }
                progress.last_ack_ms = now;
                resend.push(*id);
            }
        }
        for id in resend {
            match self.progress.get(&id).map(|p| p.state) {
                Some(ReplicationState::Snapshot { .. }) => self.send_snapshot_chunk(id),
                _ => {
                    self.send_append(id);
                }
            }
        }
    }

    /// A heartbeat to every follower not reported down, carrying the newest
    /// ReadIndex round.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.read_round_sent();
        let round = self.reads.round;
        let peers = self.live_peers();
        for peer in peers {
            self.send_heartbeat(peer, round);
        }
    }

    /// A heartbeat to a follower that may apply more than it has been told
    /// and has nothing else coming.
    fn tell_commit(&mut self, peer: ServerId) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        if self.log.commit.min(progress.match_index) > progress.commit_told {
            self.send_heartbeat(peer, self.reads.broadcast_round);
        }
    }

    /// `read_round` must be a round whose reads were all registered before
    /// now (see `read.rs`): the follower's echo confirms them.
    pub(crate) fn send_heartbeat(&mut self, peer: ServerId, read_round: u64) {
        let Some(progress) = self.progress.get(&peer) else {
            return;
        };
        // Capped at what the follower is known to match, so the heartbeat
        // never commits an entry it might hold differently.
        let commit = self.log.commit.min(progress.match_index);
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.commit_told = progress.commit_told.max(commit);
        }
        let heartbeat = Heartbeat {
            commit,
            read_round,
            quiesce: self.quiescing.is_some(),
        };
        self.send(peer, self.term, Message::Heartbeat(heartbeat));
    }

    /// Raft §5.3/§5.4: the commit index is the highest index durable on a
    /// quorum of voters — counting the leader only for what it has itself
    /// made durable.
    pub(crate) fn advance_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let Some(candidate) = self.quorum_value(self.log.durable, |p| p.match_index) else {
            return;
        };
        if candidate <= self.log.commit {
            return;
        }
        // Raft §5.4.2: only entries from the current term are committed by
        // counting replicas; earlier ones commit with them (Figure 8).
        let current_term = self.log.term(candidate) == Some(self.term);
        #[cfg(feature = "planted-bugs")]
        let current_term = current_term || self.bugs.commit_previous_term;
        if !current_term {
            return;
        }
        self.log.commit = candidate;
        self.apply_committed();
        self.release_blocked_reads();
        self.confirm_reads();
        self.maybe_step_down_after_removal();
        let peers: Vec<ServerId> = self.progress.keys().copied().collect();
        for peer in &peers {
            self.maybe_promote(*peer);
        }
        // Followers learn the new commit index with the next append; a
        // follower with nothing left to receive gets a heartbeat instead, so
        // it applies without waiting for the heartbeat interval.
        for peer in peers {
            if !self.send_append(peer) {
                self.tell_commit(peer);
            }
        }
    }

    /// Apply committed entries to the machine, in order (State Machine
    /// Safety: every replica applies the same entries in the same order).
    pub(crate) fn apply_committed(&mut self) {
        while self.log.applied < self.log.commit && self.halted_at.is_none() && !self.terminated {
            let index = self.log.applied + 1;
            let Some(entry) = self.log.entry(index) else {
                break;
            };
            let meta = ApplyMeta {
                index,
                term: entry.term,
                time_ms: entry.time_ms,
                machine_version: self.machine_version,
            };
            let mut effects = Effects::new();
            let mut reply = None;
            // Commands decode straight from the log's bytes; only the rare
            // kinds are cloned out of it.
            let mut undecodable = None;
            let payload = match &entry.payload {
                Payload::Command(data) => {
                    match postcard::from_bytes::<M::Command>(data) {
                        Ok(command) => {
                            reply = Some(self.machine.apply(&meta, command, &mut effects))
                        }
                        Err(error) => undecodable = Some(error.to_string()),
                    }
                    Payload::Noop
                }
                Payload::Config(_) => Payload::Noop,
                other => other.clone(),
            };
            if let Some(error) = undecodable {
                self.halt(
                    index,
                    format!("command cannot be decoded by this code: {error}"),
                );
                break;
            }
            match payload {
                Payload::Noop | Payload::Config(_) | Payload::Command(_) => {}
                Payload::Event(event) => self.machine.event(&meta, event, &mut effects),
                Payload::MachineVersion(version) => {
                    if version > M::VERSION {
                        self.halt(
                            index,
                            format!(
                                "log requires machine version {version}, this code runs {}",
                                M::VERSION
                            ),
                        );
                        break;
                    }
                    if version > self.machine_version {
                        let from = self.machine_version;
                        self.machine_version = version;
                        self.machine.upgrade(&meta, from);
                    }
                }
                Payload::EndOfLife => self.end_of_life = Some(index),
            }
            self.log.applied = index;
            let release = effects
                .list
                .iter()
                .any(|e| matches!(e, Effect::ReleaseCursor));
            if let Some(reply) = reply {
                if let Some(reply_to) = self.take_waiting(index) {
                    self.deliver_reply(reply_to, index, reply);
                }
            } else {
                self.take_waiting(index);
            }
            self.run_effects(effects);
            if release {
                self.release_cursor(index);
            }
        }
        self.flush_stream_replies();
        self.answer_ready_reads();
        if self.end_of_life.is_some() {
            self.maybe_finish_end_of_life();
        }
    }

    fn halt(&mut self, index: LogIndex, reason: String) {
        self.halted_at = Some(index);
        self.actions.push(Action::ApplyHalted { index, reason });
    }

    /// ra's end of life: a follower stops as soon as it applies the entry;
    /// the leader stops once every member holds it.
    pub(crate) fn maybe_finish_end_of_life(&mut self) {
        let Some(index) = self.end_of_life else {
            return;
        };
        if self.terminated || self.log.applied < index {
            return;
        }
        let leader = self.role == Role::Leader;
        let everyone_has_it = !leader || self.progress.values().all(|p| p.match_index >= index);
        if everyone_has_it {
            if leader {
                // A follower may hold the entry without knowing it is
                // committed (the commit advanced on another member's
                // acknowledgement, and only that member was told): tell
                // every one before stopping, or it would wait for good on
                // a leader that is gone.
                let peers: Vec<ServerId> = self.progress.keys().copied().collect();
                for peer in peers {
                    self.tell_commit(peer);
                }
            }
            self.terminated = true;
            self.actions.push(Action::EndOfLife);
        }
    }
}

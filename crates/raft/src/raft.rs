//! The `Raft` server: its state, constructor, entry points and the role
//! transitions every concern shares. Protocol details live in the sibling
//! modules: `election`, `replication`, `membership`, `read`, `snapshot`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::action::{Abandoned, Action, CallerId, Correlation, ReplyTo};
use crate::config::Config;
use crate::error::{RecoveryError, StepError};
use crate::log::{RaftLog, RunFault};
use crate::machine::{Effect, Effects, Machine};
use crate::message::{Envelope, Message};
use crate::progress::Progress;
use crate::read::ReadState;
use crate::snapshot::IncomingSnapshot;
use crate::types::{Configuration, HardState, LogIndex, Role, ServerId, SnapshotMeta, Term};
use crate::Persisted;

/// Known protocol bugs that tests switch on to prove the simulator's checkers
/// catch them (STYLE.md rule 13). All off by default.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default)]
pub struct PlantedBugs {
    /// Commit entries of earlier terms by counting replicas (breaks §5.4.2).
    pub commit_previous_term: bool,
    /// Grant a vote even after voting for someone else in the term.
    pub double_vote: bool,
    /// Answer consistent queries from local state without ReadIndex.
    pub read_without_read_index: bool,
    /// A follower ignores `peer_down` of its leader (a quiesced follower
    /// then never campaigns: breaks failover, not safety).
    pub ignore_leader_down: bool,
}

/// A snapshot of the server's state for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: ServerId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<ServerId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_index: LogIndex,
    pub last_term: Term,
    pub durable_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub machine_version: u32,
    pub members: Configuration,
    pub terminated: bool,
    /// A leader: quiesced (idle, no heartbeats, no timers). A follower: told
    /// by its leader that it quiesced, so its election timer is stopped.
    pub quiesced: bool,
}

/// The part of [`Status`] that changes as the server runs, without the
/// configuration: cheap to take after every step (runtimes publish it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerProgress {
    pub role: Role,
    pub term: Term,
    pub leader: Option<ServerId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub terminated: bool,
}

/// One Raft server: a deterministic state machine driven by
/// [`Raft::step`], [`Raft::tick`], [`Raft::propose`] and friends, whose
/// outputs are drained with [`Raft::take_actions`].
pub struct Raft<M: Machine> {
    pub(crate) config: Config,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) machine: M,
    /// The machine version in force at the applied index.
    pub(crate) machine_version: u32,
    pub(crate) term: Term,
    pub(crate) voted_for: Option<ServerId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<ServerId>,
    pub(crate) log: RaftLog,
    /// Configuration as of the snapshot boundary.
    pub(crate) snapshot_config: Configuration,
    /// Configuration entries above the snapshot, in log order. The newest
    /// one is in force, committed or not (thesis §4.1).
    pub(crate) configs: Vec<(LogIndex, Configuration)>,
    /// The newest snapshot, kept to send to followers that fell behind.
    pub(crate) snapshot: Option<(SnapshotMeta, Bytes)>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    pub(crate) now_ms: u64,
    /// Follower / candidate: when to campaign.
    pub(crate) election_deadline_ms: u64,
    /// Leader: when to send the next round of heartbeats.
    pub(crate) heartbeat_deadline_ms: u64,
    /// Leader: when to check that a quorum is still in touch.
    pub(crate) quorum_check_deadline_ms: u64,
    /// When this server last heard from the leader of its term.
    pub(crate) leader_contact_ms: Option<u64>,
    pub(crate) votes: BTreeMap<ServerId, bool>,
    pub(crate) progress: BTreeMap<ServerId, Progress>,
    /// Leader: entries appended since the last `AppendLog` action.
    pub(crate) unwritten: Vec<crate::types::Entry>,
    /// Leader: low-priority commands waiting for their batch.
    pub(crate) low_priority: VecDeque<(Bytes, ReplyTo)>,
    /// Leader: proposals waiting for their entry to be applied, by index.
    pub(crate) waiting: VecDeque<(LogIndex, ReplyTo)>,
    /// Replies to stream callers gathered during one apply pass.
    pub(crate) stream_replies: BTreeMap<CallerId, Vec<(Correlation, M::Reply)>>,
    pub(crate) reads: ReadState<M>,
    /// Leader: a leadership transfer to `.0`, abandoned at `.1` (ms).
    pub(crate) transfer: Option<(ServerId, u64)>,
    /// Follower: the highest index this term's leader's log is known to
    /// match ours through, and the highest index acknowledged so far.
    pub(crate) leader_match: LogIndex,
    pub(crate) acknowledged: LogIndex,
    /// Leader: idle and quiesced, every live follower has confirmed it (no
    /// heartbeats, no timers). Follower: its leader said it is quiescing, so
    /// the election timer is stopped until the leader is active again or is
    /// reported down (see `quiesce.rs`).
    pub(crate) quiesced: bool,
    /// Leader: the ReadIndex round whose heartbeats announce quiescence,
    /// while quiescing or quiesced. Invariant: `quiesced` on a leader implies
    /// `quiescing.is_some()`.
    pub(crate) quiescing: Option<u64>,
    /// Follower: the newest heartbeat round seen from this term's leader; a
    /// heartbeat of an older round does not change `quiesced`.
    pub(crate) leader_round: u64,
    /// Peers whose node the runtime's failure detector suspects
    /// ([`Raft::peer_down`]); only members of the configuration in force and
    /// the known leader are kept, which bounds it.
    pub(crate) down: BTreeSet<ServerId>,
    /// The end-of-life entry's index, once applied.
    pub(crate) end_of_life: Option<LogIndex>,
    pub(crate) terminated: bool,
    /// Applying stopped at this index (an entry this code cannot apply).
    pub(crate) halted_at: Option<LogIndex>,
    pub(crate) actions: Vec<Action<M>>,
    #[cfg(feature = "planted-bugs")]
    pub(crate) bugs: PlantedBugs,
}

impl<M: Machine> Raft<M> {
    /// Build a server from what its storage recovered. `machine` is the
    /// initial state, used when there is no snapshot; `seed` drives every
    /// random choice (election timeouts), so the same inputs replay exactly.
    pub fn new(
        config: Config,
        persisted: Persisted,
        machine: M,
        seed: u64,
        now_ms: u64,
    ) -> Result<Self, RecoveryError> {
        config.validate()?;
        let Persisted {
            hard_state,
            snapshot,
            entries,
            initial_config,
        } = persisted;
        let (snapshot_index, snapshot_term) =
            snapshot.as_ref().map_or((0, 0), |(m, _)| (m.index, m.term));
        // Validate at the gateway: the log must be contiguous with
        // non-decreasing terms, and the hard state no older than the log.
        let previous_term = crate::log::check_run(snapshot_index, snapshot_term, &entries)
            .map_err(|fault| match fault {
                RunFault::Gap { index } => RecoveryError::Gap { index },
                RunFault::TermRegression { index, term } => {
                    RecoveryError::TermRegression { index, term }
                }
            })?;
        if hard_state.term < previous_term {
            return Err(RecoveryError::TermBehindLog {
                hard_term: hard_state.term,
                log_term: previous_term,
            });
        }
        let (machine, machine_version, snapshot_config) = match &snapshot {
            Some((meta, data)) => (M::restore(data)?, meta.machine_version, meta.config.clone()),
            None => (machine, 0, initial_config),
        };
        let configs = entries
            .iter()
            .filter_map(|e| match &e.payload {
                crate::types::Payload::Config(c) => Some((e.index, c.clone())),
                _ => None,
            })
            .collect();
        let mut raft = Raft {
            rng: ChaCha8Rng::seed_from_u64(seed),
            machine,
            machine_version,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            log: RaftLog::new(snapshot_index, snapshot_term, entries),
            snapshot_config,
            configs,
            snapshot,
            incoming_snapshot: None,
            now_ms,
            election_deadline_ms: 0,
            heartbeat_deadline_ms: 0,
            quorum_check_deadline_ms: 0,
            leader_contact_ms: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            unwritten: Vec::new(),
            low_priority: VecDeque::new(),
            waiting: VecDeque::new(),
            stream_replies: BTreeMap::new(),
            reads: ReadState::default(),
            transfer: None,
            leader_match: 0,
            acknowledged: 0,
            quiesced: false,
            quiescing: None,
            leader_round: 0,
            down: BTreeSet::new(),
            end_of_life: None,
            terminated: false,
            halted_at: None,
            actions: Vec::new(),
            config,
            #[cfg(feature = "planted-bugs")]
            bugs: PlantedBugs::default(),
        };
        raft.reset_election_deadline();
        Ok(raft)
    }

    #[cfg(feature = "planted-bugs")]
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        self.bugs = bugs;
    }

    // ----- entry points ---------------------------------------------------

    /// Handle a message from another server.
    pub fn step(&mut self, now_ms: u64, envelope: Envelope) -> Result<(), StepError> {
        self.advance_clock(now_ms);
        if self.terminated {
            return Err(StepError::Terminated);
        }
        if envelope.cluster != self.config.cluster {
            return Err(StepError::ForeignCluster {
                expected: self.config.cluster,
                got: envelope.cluster,
            });
        }
        if envelope.to != self.config.id {
            return Err(StepError::Misaddressed {
                to: envelope.to,
                me: self.config.id,
            });
        }
        if envelope.from == self.config.id {
            return Ok(());
        }
        if !self.observe_term(&envelope) {
            return Ok(());
        }
        let from = envelope.from;
        match envelope.message {
            Message::PreVote(request) => self.on_vote_request(from, envelope.term, request, true),
            Message::Vote(request) => self.on_vote_request(from, envelope.term, request, false),
            Message::PreVoteResponse(response) => {
                self.on_vote_response(from, envelope.term, response.granted, true)
            }
            Message::VoteResponse(response) => {
                self.on_vote_response(from, envelope.term, response.granted, false)
            }
            Message::Append(request) => self.on_append(from, request)?,
            Message::AppendResponse(response) => self.on_append_response(from, response),
            Message::Heartbeat(heartbeat) => self.on_heartbeat(from, heartbeat),
            Message::HeartbeatResponse(response) => self.on_heartbeat_response(from, response),
            Message::InstallSnapshot(chunk) => self.on_snapshot_chunk(from, chunk)?,
            Message::InstallSnapshotResponse(response) => self.on_snapshot_response(from, response),
            Message::TimeoutNow => self.on_timeout_now(),
        }
        Ok(())
    }

    /// Let time pass: elections, heartbeats, quorum checks, retransmissions,
    /// the machine's tick.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        if self.terminated {
            return;
        }
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// The entries up to `index`, which had term `term` when written, are
    /// durable. A notice about entries since overwritten is ignored.
    pub fn log_durable(&mut self, now_ms: u64, index: LogIndex, term: Term) {
        self.advance_clock(now_ms);
        let index = index.min(self.log.last_index());
        if index <= self.log.durable || self.log.term(index) != Some(term) {
            return;
        }
        self.log.durable = index;
        match self.role {
            Role::Leader => self.advance_commit(),
            _ => self.acknowledge_leader(),
        }
    }

    /// Drain the actions produced since the last call, after flushing the
    /// current batch of proposals. Execute them in order (see [`Action`]).
    /// An idle leader with [`Config::quiesce`] starts or completes its
    /// quiescence here, so ask [`Raft::next_deadline_ms`] after this call.
    pub fn take_actions(&mut self) -> Vec<Action<M>> {
        if self.role == Role::Leader {
            self.flush_proposals();
            self.flush_read_round();
            self.update_quiescence();
        }
        self.write_unwritten();
        std::mem::take(&mut self.actions)
    }

    /// When the core next needs a [`Raft::tick`] (ms), if ever. `None` for a
    /// quiesced server (leader or follower): the runtime may park it with no
    /// timer until a message, a proposal or a failure-detector notice.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.terminated || self.quiesced {
            return None;
        }
        match self.role {
            Role::Leader => {
                let mut deadline = self
                    .heartbeat_deadline_ms
                    .min(self.quorum_check_deadline_ms);
                if let Some((_, until)) = self.transfer {
                    deadline = deadline.min(until);
                }
                Some(deadline)
            }
            _ if self.can_campaign() => Some(self.election_deadline_ms),
            _ => None,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.log.commit,
            applied_index: self.log.applied,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            durable_index: self.log.durable,
            snapshot_index: self.log.snapshot_index(),
            machine_version: self.machine_version,
            members: self.membership().clone(),
            terminated: self.terminated,
            quiesced: self.quiesced,
        }
    }

    /// [`Raft::status`] without the configuration (no allocation).
    pub fn progress(&self) -> ServerProgress {
        ServerProgress {
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.log.commit,
            applied_index: self.log.applied,
            terminated: self.terminated,
        }
    }

    pub fn id(&self) -> ServerId {
        self.config.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> Option<ServerId> {
        self.leader
    }

    /// The machine's current state (for local queries).
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The log entries above the snapshot, for tests and inspection.
    pub fn log_entries(&self) -> impl DoubleEndedIterator<Item = &crate::types::Entry> {
        self.log.entries()
    }

    /// The configuration in force (the newest in the log, thesis §4.1).
    pub fn membership(&self) -> &Configuration {
        self.configs
            .last()
            .map_or(&self.snapshot_config, |(_, c)| c)
    }

    // ----- shared helpers -------------------------------------------------

    pub(crate) fn advance_clock(&mut self, now_ms: u64) {
        // Time is an input; tolerate a runtime whose clock steps back by
        // never moving ours backwards.
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The highest value that a quorum of voters has reached: `mine` for
    /// this server, `theirs(progress)` for the others (0 if unknown).
    pub(crate) fn quorum_value(&self, mine: u64, theirs: impl Fn(&Progress) -> u64) -> Option<u64> {
        let config = self.membership();
        let mut values: Vec<u64> = config
            .voter_ids()
            .map(|id| {
                if id == self.config.id {
                    mine
                } else {
                    self.progress.get(&id).map_or(0, &theirs)
                }
            })
            .collect();
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        Some(values[config.quorum() - 1])
    }

    pub(crate) fn is_voter(&self) -> bool {
        self.membership().is_voter(self.config.id)
    }

    /// Whether this server may start an election: it votes in the newest
    /// configuration, or that configuration is not committed yet and it
    /// voted in the one before. (A leader that removed itself and stepped
    /// down before the removal committed may hold the only log that can
    /// commit it; without this the cluster could never elect again.)
    pub(crate) fn can_campaign(&self) -> bool {
        if self.is_voter() {
            return true;
        }
        if self.config_committed() {
            return false;
        }
        let previous = match self.configs.len() {
            0 | 1 => &self.snapshot_config,
            n => &self.configs[n - 2].1,
        };
        previous.is_voter(self.config.id)
    }

    pub(crate) fn send(&mut self, to: ServerId, term: Term, message: Message) {
        self.actions.push(Action::Send(Envelope {
            cluster: self.config.cluster,
            from: self.config.id,
            to,
            term,
            message,
        }));
    }

    pub(crate) fn save_hard_state(&mut self) {
        self.actions.push(Action::SaveHardState(HardState {
            term: self.term,
            voted_for: self.voted_for,
        }));
    }

    /// Emit the leader's appended-but-unwritten entries as one write.
    pub(crate) fn write_unwritten(&mut self) {
        if !self.unwritten.is_empty() {
            let entries = std::mem::take(&mut self.unwritten);
            self.actions.push(Action::AppendLog(entries));
        }
    }

    pub(crate) fn reset_election_deadline(&mut self) {
        // Raft §5.2: randomized timeouts in [T, 2T) make split votes rare.
        let timeout = self.config.election_timeout_ms;
        self.election_deadline_ms = self.now_ms + timeout + self.rng.gen_range(0..timeout);
    }

    pub(crate) fn announce_role(&mut self) {
        self.actions.push(Action::RoleChanged {
            role: self.role,
            term: self.term,
            leader: self.leader,
        });
        let mut effects = Effects::new();
        self.machine.state_enter(self.role, &mut effects);
        self.run_effects(effects);
    }

    /// Move to a newer term. What this server knew about the previous
    /// term's leader's log (how far it matches ours) does not carry over.
    pub(crate) fn enter_term(&mut self, term: Term) {
        assert!(term > self.term, "Raft §5.1: terms only grow");
        self.term = term;
        self.voted_for = None;
        self.leader_match = 0;
        self.acknowledged = 0;
        self.leader_round = 0;
    }

    /// Become a follower in `term` (which may be the current one).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<ServerId>) {
        let was = (self.role, self.term, self.leader);
        if term > self.term {
            self.enter_term(term);
            self.save_hard_state();
        }
        if self.role == Role::Leader {
            self.step_down_cleanup(leader);
        }
        self.role = Role::Follower;
        if self.leader != leader {
            self.leader_round = 0;
        }
        self.leader = leader;
        self.votes.clear();
        // Quiescence belongs to one leader's idle period: a follower starts
        // out with its election timer running.
        self.quiesced = false;
        self.quiescing = None;
        self.reset_election_deadline();
        if was != (self.role, self.term, self.leader) {
            self.announce_role();
        }
    }

    /// Everything a leader holds for its callers is released when it stops
    /// leading: waiting proposals get `Abandoned` (their entries may still
    /// commit), unconfirmed reads are returned to their callers.
    fn step_down_cleanup(&mut self, leader: Option<ServerId>) {
        self.write_unwritten();
        let commit = self.log.commit;
        // Entries up to the commit index will still be applied here and
        // answered; the rest have an unknown fate.
        let mut kept = VecDeque::new();
        for (index, reply_to) in std::mem::take(&mut self.waiting) {
            if index <= commit {
                kept.push_back((index, reply_to));
            } else {
                self.actions.push(Action::Abandoned {
                    reply_to,
                    why: Abandoned::LostLeadership { leader },
                });
            }
        }
        self.waiting = kept;
        for (_, reply_to) in std::mem::take(&mut self.low_priority) {
            self.actions.push(Action::Abandoned {
                reply_to,
                why: Abandoned::LostLeadership { leader },
            });
        }
        self.abandon_reads(leader);
        self.progress.clear();
        self.transfer = None;
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate that won becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.transfer = None;
        self.quiesced = false;
        self.quiescing = None;
        let next = self.log.last_index() + 1;
        let now = self.now_ms;
        self.progress = self
            .membership()
            .members
            .keys()
            .filter(|id| **id != self.config.id)
            .map(|id| (*id, Progress::new(next, now)))
            .collect();
        self.heartbeat_deadline_ms = now;
        self.quorum_check_deadline_ms = now + self.config.election_timeout_ms;
        // Raft §8: a new leader appends a no-op so that entries of earlier
        // terms get committed (they cannot be committed by counting, §5.4.2)
        // and so that ReadIndex has an entry of the current term to wait for.
        self.append_entry(crate::types::Payload::Noop, ReplyTo::Nobody);
        let log_version = self.log_machine_version();
        if M::VERSION > log_version {
            self.append_entry(
                crate::types::Payload::MachineVersion(M::VERSION),
                ReplyTo::Nobody,
            );
        }
        self.announce_role();
        self.broadcast_append();
    }

    /// The machine version in force at the end of the log.
    fn log_machine_version(&self) -> u32 {
        self.log
            .entries()
            .rev()
            .find_map(|e| match e.payload {
                crate::types::Payload::MachineVersion(v) => Some(v),
                _ => None,
            })
            .unwrap_or(self.machine_version)
    }

    /// Carry out machine effects: some inside the core, the rest handed to
    /// the runtime (leader only, as in ra).
    pub(crate) fn run_effects(&mut self, effects: Effects<M>) {
        for effect in effects.list {
            match effect {
                Effect::ReleaseCursor => {}
                Effect::Append(command) => {
                    if self.role == Role::Leader {
                        // A machine-requested command has no caller; if the
                        // leader is busy it will be asked again at the next tick.
                        let _ = self.propose_command(
                            command,
                            crate::types::Priority::Normal,
                            ReplyTo::Nobody,
                        );
                    }
                }
                other => {
                    if self.role == Role::Leader {
                        self.actions.push(Action::Effect(other));
                    }
                }
            }
        }
    }

    /// Reply routing for one applied entry of this leader's.
    pub(crate) fn take_waiting(&mut self, index: LogIndex) -> Option<ReplyTo> {
        while let Some(&(waiting_index, _)) = self.waiting.front() {
            if waiting_index > index {
                return None;
            }
            let (waiting_index, reply_to) = self.waiting.pop_front()?;
            if waiting_index == index {
                return Some(reply_to);
            }
        }
        None
    }

    pub(crate) fn deliver_reply(&mut self, reply_to: ReplyTo, index: LogIndex, reply: M::Reply) {
        match reply_to {
            ReplyTo::Nobody => {}
            ReplyTo::Request(request) => self.actions.push(Action::Reply {
                request,
                index,
                reply,
            }),
            ReplyTo::Stream {
                caller,
                correlation,
            } => {
                self.stream_replies
                    .entry(caller)
                    .or_default()
                    .push((correlation, reply));
            }
        }
    }

    pub(crate) fn flush_stream_replies(&mut self) {
        for (caller, replies) in std::mem::take(&mut self.stream_replies) {
            self.actions.push(Action::Applied { caller, replies });
        }
    }
}

//! Shared test support: a tiny counter machine and an explicit, step-by-step
//! harness that executes the core's actions by the ordering rule.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use chorus_raft::{
    Abandoned, Action, ApplyMeta, CallerId, ClusterId, Config, Configuration, Correlation, Effects,
    Entry, Envelope, HardState, LogIndex, Machine, MachineEvent, Message, Payload, Persisted, Raft,
    ReplyTo, RequestId, RestoreError, Role, ServerId, SnapshotMeta, StepError, SubscriberId, Term,
};
use serde::{Deserialize, Serialize};

pub const CLUSTER: ClusterId = ClusterId(7);

// ----- the test machine ------------------------------------------------------

/// A counter that remembers every addition (so its snapshot spans several
/// chunks) and every upgrade. `V` is its code's machine version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter<const V: u32> {
    pub total: i64,
    pub history: Vec<i64>,
    /// `(index, from_version)` of every `upgrade` call.
    pub upgrades: Vec<(LogIndex, u32)>,
    pub events: Vec<MachineEvent>,
}

pub type TestMachine = Counter<0>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// Add to the counter; replies with the new total.
    Add(i64),
    /// Allow a snapshot of the state after this entry.
    Release,
    /// Send the total to a local subscriber.
    Notify(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Total,
    Len,
}

impl<const V: u32> Machine for Counter<V> {
    type Command = Cmd;
    type Reply = i64;
    type Query = Query;
    type QueryReply = i64;
    type Message = i64;

    const VERSION: u32 = V;

    fn apply(&mut self, _meta: &ApplyMeta, command: Cmd, effects: &mut Effects<Self>) -> i64 {
        match command {
            Cmd::Add(n) => {
                self.total += n;
                self.history.push(n);
            }
            Cmd::Release => effects.release_cursor(),
            Cmd::Notify(to) => effects.send(SubscriberId(to), self.total),
        }
        self.total
    }

    fn event(&mut self, _meta: &ApplyMeta, event: MachineEvent, _effects: &mut Effects<Self>) {
        self.events.push(event);
    }

    fn upgrade(&mut self, meta: &ApplyMeta, from_version: u32) {
        self.upgrades.push((meta.index, from_version));
    }

    fn query(&self, query: &Query) -> i64 {
        match query {
            Query::Total => self.total,
            Query::Len => self.history.len() as i64,
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("counter state encodes")
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        let (machine, rest) =
            postcard::take_from_bytes::<Self>(data).map_err(|e| RestoreError {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(RestoreError {
                reason: format!("{} trailing bytes", rest.len()),
            });
        }
        Ok(machine)
    }
}

/// The machines the harness drives: counters of any version.
pub trait TestMachineT:
    Machine<Reply = i64, QueryReply = i64, Command = Cmd, Query = Query> + Default + std::fmt::Debug
{
}
impl<
        M: Machine<Reply = i64, QueryReply = i64, Command = Cmd, Query = Query>
            + Default
            + std::fmt::Debug,
    > TestMachineT for M
{
}

// ----- comparable actions ----------------------------------------------------

/// [`Action`] with comparable contents, for exact assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    SaveHardState(HardState),
    AppendLog(Vec<Entry>),
    SaveSnapshot {
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    },
    Send(Envelope),
    Reply {
        request: RequestId,
        index: LogIndex,
        reply: i64,
    },
    Applied {
        caller: CallerId,
        replies: Vec<(Correlation, i64)>,
    },
    Abandoned {
        reply_to: ReplyTo,
        why: Abandoned,
    },
    QueryReply {
        request: RequestId,
        reply: i64,
    },
    QueryAbandoned {
        request: RequestId,
        leader: Option<ServerId>,
    },
    /// The effect's Debug form.
    Effect(String),
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<ServerId>,
    },
    EndOfLife,
    ApplyHalted {
        index: LogIndex,
        reason: String,
    },
}

pub fn to_act<M: TestMachineT>(action: Action<M>) -> Act {
    match action {
        Action::SaveHardState(hs) => Act::SaveHardState(hs),
        Action::AppendLog(entries) => Act::AppendLog(entries),
        Action::SaveSnapshot {
            meta,
            data,
            keep_log_after,
        } => Act::SaveSnapshot {
            meta,
            data,
            keep_log_after,
        },
        Action::Send(envelope) => Act::Send(envelope),
        Action::Reply {
            request,
            index,
            reply,
        } => Act::Reply {
            request,
            index,
            reply,
        },
        Action::Applied { caller, replies } => Act::Applied { caller, replies },
        Action::Abandoned { reply_to, why } => Act::Abandoned { reply_to, why },
        Action::QueryReply { request, reply } => Act::QueryReply { request, reply },
        Action::QueryAbandoned { request, leader } => Act::QueryAbandoned { request, leader },
        Action::Effect(effect) => Act::Effect(format!("{effect:?}")),
        Action::RoleChanged { role, term, leader } => Act::RoleChanged { role, term, leader },
        Action::EndOfLife => Act::EndOfLife,
        Action::ApplyHalted { index, reason } => Act::ApplyHalted { index, reason },
    }
}

/// Drain a server's actions as comparable values.
pub fn acts<M: TestMachineT>(raft: &mut Raft<M>) -> Vec<Act> {
    raft.take_actions().into_iter().map(to_act).collect()
}

/// The envelopes among `acts`.
pub fn sends(acts: &[Act]) -> Vec<Envelope> {
    acts.iter()
        .filter_map(|a| match a {
            Act::Send(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

// ----- builders --------------------------------------------------------------

pub fn s(n: u64) -> ServerId {
    ServerId(n)
}

pub fn voters(ids: &[u64]) -> Configuration {
    Configuration::voters(ids.iter().map(|i| ServerId(*i)))
}

pub fn config(id: u64) -> Config {
    Config::new(CLUSTER, ServerId(id))
}

pub fn env(from: u64, to: u64, term: Term, message: Message) -> Envelope {
    Envelope {
        cluster: CLUSTER,
        from: ServerId(from),
        to: ServerId(to),
        term,
        message,
    }
}

pub fn encode(cmd: &Cmd) -> Bytes {
    Bytes::from(postcard::to_allocvec(cmd).expect("command encodes"))
}

pub fn entry(index: LogIndex, term: Term, payload: Payload) -> Entry {
    Entry {
        index,
        term,
        time_ms: 0,
        payload,
    }
}

pub fn entry_at(index: LogIndex, term: Term, time_ms: u64, payload: Payload) -> Entry {
    Entry {
        index,
        term,
        time_ms,
        payload,
    }
}

pub fn cmd_entry(index: LogIndex, term: Term, time_ms: u64, cmd: Cmd) -> Entry {
    entry_at(index, term, time_ms, Payload::Command(encode(&cmd)))
}

pub fn decode(entry: &Entry) -> Option<Cmd> {
    match &entry.payload {
        Payload::Command(data) => postcard::from_bytes(data).ok(),
        _ => None,
    }
}

/// A server that has never run, in a cluster of `members` voters.
pub fn fresh<M: TestMachineT>(id: u64, members: &[u64]) -> Raft<M> {
    fresh_with(config(id), members)
}

pub fn fresh_with<M: TestMachineT>(config: Config, members: &[u64]) -> Raft<M> {
    let seed = config.id.0;
    let persisted = Persisted {
        initial_config: voters(members),
        ..Persisted::default()
    };
    Raft::new(config, persisted, M::default(), seed, 0).expect("valid fresh server")
}

pub fn recovered<M: TestMachineT>(
    id: u64,
    members: &[u64],
    term: Term,
    entries: Vec<Entry>,
) -> Raft<M> {
    let persisted = Persisted {
        hard_state: HardState {
            term,
            voted_for: None,
        },
        snapshot: None,
        entries,
        initial_config: voters(members),
    };
    Raft::new(config(id), persisted, M::default(), id, 0).expect("valid recovered server")
}

/// Make `raft` leader by feeding it granted pre-votes and votes from `peers`
/// (crafted messages, not a real cluster). Returns the actions of winning.
pub fn win_election<M: TestMachineT>(raft: &mut Raft<M>, peers: &[u64], now: u64) -> Vec<Act> {
    use chorus_raft::VoteResponse;
    let me = raft.id().0;
    raft.trigger_election(now);
    let mut out = acts(raft);
    let pre_term = raft.term() + 1;
    for peer in peers {
        if raft.role() != Role::PreCandidate {
            break;
        }
        raft.step(
            now,
            env(
                *peer,
                me,
                pre_term,
                Message::PreVoteResponse(VoteResponse { granted: true }),
            ),
        )
        .expect("pre-vote response accepted");
        out.extend(acts(raft));
    }
    let term = raft.term();
    for peer in peers {
        if raft.role() != Role::Candidate {
            break;
        }
        raft.step(
            now,
            env(
                *peer,
                me,
                term,
                Message::VoteResponse(VoteResponse { granted: true }),
            ),
        )
        .expect("vote response accepted");
        out.extend(acts(raft));
    }
    assert_eq!(raft.role(), Role::Leader, "crafted election must be won");
    out
}

// ----- the cluster harness ---------------------------------------------------

/// What one server's storage holds.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<(SnapshotMeta, Bytes)>,
    /// Entries after the snapshot.
    pub entries: Vec<Entry>,
    pub initial_config: Configuration,
}

impl Disk {
    pub fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            initial_config: self.initial_config.clone(),
        }
    }
}

pub struct Node<M: TestMachineT> {
    pub raft: Raft<M>,
    pub config: Config,
    pub disk: Disk,
    /// Writes issued but not yet reported durable, oldest first.
    pub pending_durable: VecDeque<(LogIndex, Term)>,
    /// Everything the server produced other than storage and sends.
    pub outputs: Vec<Act>,
}

pub struct Cluster<M: TestMachineT> {
    pub nodes: BTreeMap<ServerId, Node<M>>,
    pub now: u64,
    /// Messages in flight, in send order.
    pub net: VecDeque<Envelope>,
    /// Servers cut off from everyone: their messages are dropped both ways.
    pub cut: BTreeSet<ServerId>,
    /// Report every write durable as soon as its batch has run.
    pub auto_durable: bool,
    /// Every action executed, by server, in order.
    pub trace: Vec<(ServerId, Act)>,
}

impl<M: TestMachineT> Cluster<M> {
    /// `n` voters `s1..=sn`, each with default config adjusted by `tweak`.
    pub fn new(n: u64, tweak: impl Fn(&mut Config)) -> Self {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            now: 0,
            net: VecDeque::new(),
            cut: BTreeSet::new(),
            auto_durable: true,
            trace: Vec::new(),
        };
        let members: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            cluster.add_node(id, &members, &tweak);
        }
        cluster
    }

    /// Start a server whose initial configuration is `members` voters.
    pub fn add_node(&mut self, id: u64, members: &[u64], tweak: &impl Fn(&mut Config)) {
        let mut config = config(id);
        tweak(&mut config);
        let disk = Disk {
            initial_config: voters(members),
            ..Disk::default()
        };
        let raft = Raft::new(config.clone(), disk.persisted(), M::default(), id, self.now)
            .expect("valid server");
        self.nodes.insert(
            ServerId(id),
            Node {
                raft,
                config,
                disk,
                pending_durable: VecDeque::new(),
                outputs: Vec::new(),
            },
        );
    }

    /// Crash and restart a server from its disk (every issued write landed).
    pub fn restart(&mut self, id: ServerId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("known server");
        let seed = id.0 * 1000 + now;
        node.raft = Raft::new(
            node.config.clone(),
            node.disk.persisted(),
            M::default(),
            seed,
            now,
        )
        .expect("disk recovers");
        node.pending_durable.clear();
    }

    pub fn node(&self, id: u64) -> &Node<M> {
        &self.nodes[&ServerId(id)]
    }

    pub fn raft(&mut self, id: u64) -> &mut Raft<M> {
        &mut self
            .nodes
            .get_mut(&ServerId(id))
            .expect("known server")
            .raft
    }

    pub fn ids(&self) -> Vec<ServerId> {
        self.nodes.keys().copied().collect()
    }

    /// Run one server's pending actions by the ordering rule.
    pub fn execute(&mut self, id: ServerId) -> Vec<Act> {
        let mut all = Vec::new();
        loop {
            let batch = match self.nodes.get_mut(&id) {
                Some(node) => node.raft.take_actions(),
                None => return all,
            };
            if batch.is_empty() {
                let has_pending = self
                    .nodes
                    .get(&id)
                    .is_some_and(|n| !n.pending_durable.is_empty());
                if self.auto_durable && has_pending {
                    self.report_durable(id);
                    continue;
                }
                return all;
            }
            for action in batch {
                let act = to_act(action);
                self.perform(id, &act);
                self.trace.push((id, act.clone()));
                all.push(act);
            }
        }
    }

    /// Tell a server its issued writes are durable; run what follows.
    pub fn durable(&mut self, id: u64) -> Vec<Act> {
        self.report_durable(ServerId(id));
        self.execute(ServerId(id))
    }

    fn report_durable(&mut self, id: ServerId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("known server");
        while let Some((index, term)) = node.pending_durable.pop_front() {
            node.raft.log_durable(now, index, term);
        }
    }

    fn perform(&mut self, id: ServerId, act: &Act) {
        let node = self.nodes.get_mut(&id).expect("known server");
        match act {
            Act::SaveHardState(hs) => {
                assert!(
                    hs.term >= node.disk.hard_state.term,
                    "{id}: durable term went back: {hs:?}"
                );
                node.disk.hard_state = *hs;
            }
            Act::AppendLog(entries) => {
                let first = entries.first().expect("AppendLog carries entries");
                let disk_last = node
                    .disk
                    .entries
                    .last()
                    .map(|e| e.index)
                    .or(node.disk.snapshot.as_ref().map(|(m, _)| m.index))
                    .unwrap_or(0);
                assert!(
                    first.index <= disk_last + 1,
                    "{id}: AppendLog leaves a gap: {} after {disk_last}",
                    first.index
                );
                node.disk.entries.retain(|e| e.index < first.index);
                node.disk.entries.extend(entries.iter().cloned());
                let last = entries.last().expect("non-empty");
                node.pending_durable.push_back((last.index, last.term));
            }
            Act::SaveSnapshot {
                meta,
                data,
                keep_log_after,
            } => {
                if *keep_log_after {
                    node.disk.entries.retain(|e| e.index > meta.index);
                } else {
                    node.disk.entries.clear();
                }
                node.disk.snapshot = Some((meta.clone(), data.clone()));
            }
            Act::Send(envelope) => {
                // The barrier rule, checked: a message never carries a term
                // (or a granted vote) that is not yet on disk.
                let hs = node.disk.hard_state;
                match &envelope.message {
                    Message::PreVote(_) | Message::PreVoteResponse(_) => {}
                    Message::Vote(_) => {
                        assert_eq!(
                            hs,
                            HardState {
                                term: envelope.term,
                                voted_for: Some(id)
                            },
                            "{id}: vote request before its hard state is durable"
                        );
                    }
                    Message::VoteResponse(r) if r.granted => {
                        assert_eq!(
                            hs,
                            HardState {
                                term: envelope.term,
                                voted_for: Some(envelope.to)
                            },
                            "{id}: vote granted before it is durable"
                        );
                    }
                    _ => assert!(
                        envelope.term <= hs.term,
                        "{id}: sent term {} with durable term {}",
                        envelope.term,
                        hs.term
                    ),
                }
                if !self.cut.contains(&envelope.from) && !self.cut.contains(&envelope.to) {
                    self.net.push_back(envelope.clone());
                }
            }
            other => node.outputs.push(other.clone()),
        }
    }

    /// Hand a message to its addressee and run what follows.
    pub fn step(&mut self, envelope: Envelope) -> (Result<(), StepError>, Vec<Act>) {
        let to = envelope.to;
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&to) else {
            return (Ok(()), Vec::new());
        };
        let result = node.raft.step(now, envelope);
        (result, self.execute(to))
    }

    /// Deliver the oldest message in flight (dropping it if its ends are cut).
    pub fn deliver_one(&mut self) -> Option<(Envelope, Result<(), StepError>, Vec<Act>)> {
        let envelope = self.net.pop_front()?;
        if self.cut.contains(&envelope.from) || self.cut.contains(&envelope.to) {
            return Some((envelope, Ok(()), Vec::new()));
        }
        let (result, acts) = self.step(envelope.clone());
        Some((envelope, result, acts))
    }

    /// Deliver until the network is quiet. Step errors other than a
    /// terminated server fail the test.
    pub fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            let Some((envelope, result, _)) = self.deliver_one() else {
                return;
            };
            match result {
                Ok(()) | Err(StepError::Terminated) => {}
                Err(e) => panic!("delivering {envelope:?}: {e}"),
            }
        }
        panic!("network never went quiet");
    }

    /// Advance time by `ms` and tick every server.
    pub fn tick(&mut self, ms: u64) {
        self.now += ms;
        for id in self.ids() {
            let now = self.now;
            self.raft(id.0).tick(now);
            self.execute(id);
        }
    }

    /// Let `ms` pass in `step_ms` steps, delivering everything after each.
    pub fn run(&mut self, ms: u64, step_ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.tick(step_ms.min(end - self.now));
            self.deliver_all();
        }
    }

    /// Make `id` campaign now and deliver until quiet; it must win.
    pub fn elect(&mut self, id: u64) {
        let now = self.now;
        self.raft(id).trigger_election(now);
        self.execute(ServerId(id));
        self.deliver_all();
        assert_eq!(self.raft(id).role(), Role::Leader, "s{id} should have won");
    }

    pub fn propose(
        &mut self,
        id: u64,
        cmd: Cmd,
        reply_to: ReplyTo,
    ) -> Result<(), chorus_raft::ProposeError> {
        let now = self.now;
        let result = self
            .raft(id)
            .propose(now, cmd, chorus_raft::Priority::Normal, reply_to);
        self.execute(ServerId(id));
        result
    }

    /// The leader with the highest term, if any.
    pub fn leader(&self) -> Option<ServerId> {
        self.nodes
            .values()
            .filter(|n| n.raft.role() == Role::Leader)
            .max_by_key(|n| n.raft.term())
            .map(|n| n.raft.id())
    }

    pub fn isolate(&mut self, id: u64) {
        self.cut.insert(ServerId(id));
    }

    pub fn heal(&mut self, id: u64) {
        self.cut.remove(&ServerId(id));
    }
}

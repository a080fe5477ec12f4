//! One Raft server: a tokio task owning a [`Raft`] core and its machine.
//!
//! The task sleeps until its mailbox has input, the log reports entries
//! durable, or the core or a machine timer needs the time. Each wake-up
//! takes everything waiting (up to `server_batch_max` inputs), feeds it to
//! the core, then carries out the core's actions in order (the ordering rule
//! of `chorus_raft::Action`: hard state and snapshots are durable before the
//! next action runs; appends are asynchronous and come back through
//! [`ServerShared::durable`]). Batching falls out of this: a burst of
//! commands becomes one log append and one message per follower.
//!
//! A quiesced server (see `chorus_raft::Config::quiesce`) has no deadline:
//! the task costs nothing until something arrives.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_raft::{
    Abandoned, Action, CallerId, Config, Correlation, Effect, Envelope, LogIndex, Machine,
    MachineEvent, MembershipChange, NodeId, Persisted, Priority, Raft, ReplyTo, RequestId, Role,
    ServerId, ServerProgress, Term, TransferOutcome,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::error::{CallError, Refusal};
use crate::ids::{cluster_id, node_of};
use crate::node::NodeInner;
use crate::rpc::{RawEvent, ServerRecord, ServerRequest, ServerResponse, ServerStatus};
use crate::wire::Frame;

/// A machine the node can host: its commands, replies and queries cross
/// nodes, so they are serializable.
pub trait NodeMachine:
    Machine<
        Command: Send,
        Reply: Serialize + DeserializeOwned + Send,
        Query: Send,
        QueryReply: Send,
        Message: Send + 'static,
    > + Send
    + 'static
{
}

impl<M> NodeMachine for M where
    M: Machine<
            Command: Send,
            Reply: Serialize + DeserializeOwned + Send,
            Query: Send,
            QueryReply: Send,
            Message: Send + 'static,
        > + Send
        + 'static
{
}

/// Most requests a server holds while it knows no leader.
const HELD_REQUESTS_MAX: usize = 65_536;

/// Where a server's answer goes.
pub(crate) enum Responder {
    Local(oneshot::Sender<ServerResponse>),
    Remote {
        node: NodeId,
        id: u64,
    },
    /// Nobody waits (pipelined commands answer on the caller's stream).
    Nobody,
}

/// A closure run over the machine state (`local_query` with a closure).
pub(crate) type LocalClosure = Box<dyn FnOnce(&dyn Any, LogIndex, Term) + Send>;

pub(crate) enum Input {
    Message(Envelope),
    Request(ServerRequest, Responder),
    Closure(LocalClosure),
    /// A node hosting members went down or came back.
    Liveness {
        node: NodeId,
        up: bool,
    },
    /// Stop the task; with `delete`, delete the server's data too.
    Stop {
        delete: bool,
        done: oneshot::Sender<()>,
    },
}

/// What the node keeps about a running server.
pub(crate) struct ServerShared {
    pub(crate) record: ServerRecord,
    pub(crate) id: ServerId,
    pub(crate) mailbox: mpsc::Sender<Input>,
    /// The newest durability notice not yet given to the core.
    pub(crate) durable: Mutex<Option<(LogIndex, Term)>>,
    pub(crate) durable_notify: Notify,
    pub(crate) machine_type: std::any::TypeId,
    /// Published after every wake-up that changed it ([`crate::Node::progress`]).
    pub(crate) progress: watch::Sender<ServerProgress>,
}

impl ServerShared {
    /// Called by the log's writer thread.
    pub(crate) fn notify_durable(&self, index: LogIndex, term: Term) {
        let mut slot = self
            .durable
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Notices arrive in write order; the newest covers every earlier
        // write (the WAL is flushed in order).
        *slot = Some((index, term));
        drop(slot);
        self.durable_notify.notify_one();
    }
}

enum Pending {
    Command(Responder),
    Query(Responder),
}

struct ServerTask<M: NodeMachine> {
    node: Arc<NodeInner>,
    shared: Arc<ServerShared>,
    raft: Raft<M>,
    mailbox: mpsc::Receiver<Input>,
    next_request: u64,
    pending: HashMap<RequestId, Pending>,
    /// Requests that need a leader, while none is known.
    held: Vec<(ServerRequest, Responder)>,
    /// Membership changes and end-of-life commands answered once the
    /// leader's own log holds them durably ("after the change is appended").
    appended: Vec<(LogIndex, Responder)>,
    /// Machine timers (leader only): name → deadline (ms).
    timers: BTreeMap<String, u64>,
    monitored: BTreeSet<NodeId>,
    halted: Option<(LogIndex, String)>,
    leader: Option<ServerId>,
    /// The snapshot being written off this task, if any: its job's answer.
    snapshot_job: Option<std::sync::mpsc::Receiver<chorus_log::LogResult<()>>>,
}

/// Starts the task of a server whose storage exists; returns its handle.
pub(crate) fn spawn<M: NodeMachine>(
    node: &Arc<NodeInner>,
    record: ServerRecord,
    persisted: Persisted,
    machine: M,
) -> Result<Arc<ServerShared>, crate::StartError> {
    let id = record.server.id();
    let mut config = Config::new(cluster_id(&record.cluster), id);
    config.election_timeout_ms = node.config.election_timeout_ms;
    config.heartbeat_interval_ms = node.config.heartbeat_interval_ms;
    config.append_entries_max = node.config.append_entries_max;
    config.snapshot_interval_entries_min = node.config.snapshot_interval_entries_min;
    config.quiesce = true;
    let seed = id.0 ^ node.clock.now_ms().rotate_left(17);
    let now = node.clock.now_ms();
    let raft = Raft::new(config, persisted, machine, seed, now)
        .map_err(|error| crate::StartError::Storage(error.to_string()))?;
    let (tx, rx) = mpsc::channel(node.config.mailbox_capacity);
    let shared = Arc::new(ServerShared {
        record,
        id,
        mailbox: tx,
        durable: Mutex::new(None),
        durable_notify: Notify::new(),
        machine_type: std::any::TypeId::of::<M>(),
        progress: watch::Sender::new(raft.progress()),
    });
    let mut task = ServerTask {
        node: Arc::clone(node),
        shared: Arc::clone(&shared),
        raft,
        mailbox: rx,
        next_request: 1,
        pending: HashMap::new(),
        held: Vec::new(),
        appended: Vec::new(),
        timers: BTreeMap::new(),
        monitored: BTreeSet::new(),
        halted: None,
        leader: None,
        snapshot_job: None,
    };
    // Members on nodes already believed down: tell the core now.
    let members: Vec<ServerId> = task.raft.membership().members.keys().copied().collect();
    for member in members {
        let member_node = node_of(member);
        if member != id && member_node != node.config.node && !node.transport.is_up(member_node) {
            task.raft.peer_down(now, member);
        }
    }
    // Registered before the task runs, so no durability notice or message
    // for it can miss it.
    node.register(Arc::clone(&shared));
    tokio::spawn(task.run());
    Ok(shared)
}

impl<M: NodeMachine> ServerTask<M> {
    async fn run(mut self) {
        let sleep = tokio::time::sleep(std::time::Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<u64> = None;
        loop {
            let wake = self.next_wake_ms();
            if wake != armed {
                if let Some(at) = wake {
                    sleep.as_mut().reset(self.node.clock.instant_at(at));
                }
                armed = wake;
            }
            let first = tokio::select! {
                biased;
                input = self.mailbox.recv() => match input {
                    Some(input) => Some(input),
                    None => return, // the node dropped us
                },
                _ = self.shared.durable_notify.notified() => None,
                _ = &mut sleep, if armed.is_some() => { armed = None; None }
            };
            let now = self.node.clock.now_ms();
            let mut stop = None;
            if let Some(input) = first {
                stop = self.handle(now, input);
            }
            let mut taken = 1;
            while stop.is_none() && taken < self.node.config.server_batch_max {
                match self.mailbox.try_recv() {
                    Ok(input) => stop = self.handle(now, input),
                    Err(_) => break,
                }
                taken += 1;
            }
            self.take_durable(now);
            self.fire_timers(now);
            // The core ticks itself on every proposal and message; it needs
            // an explicit tick only once its own deadline has passed.
            if self
                .raft
                .next_deadline_ms()
                .is_some_and(|deadline| deadline <= now)
            {
                self.raft.tick(now);
            }
            if !self.execute(now) {
                self.exit(false, None);
                return;
            }
            if let Some((delete, done)) = stop {
                self.exit(delete, Some(done));
                return;
            }
            let progress = self.raft.progress();
            self.shared.progress.send_if_modified(|published| {
                let changed = *published != progress;
                *published = progress;
                changed
            });
            if progress.terminated {
                // End of life applied (and, on the leader, replicated).
                self.exit(true, None);
                return;
            }
        }
    }

    fn next_wake_ms(&self) -> Option<u64> {
        let timer = self.timers.values().min().copied();
        match (self.raft.next_deadline_ms(), timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_durable(&mut self, now: u64) {
        let notice = self
            .shared
            .durable
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some((index, term)) = notice {
            self.raft.log_durable(now, index, term);
        }
    }

    fn fire_timers(&mut self, now: u64) {
        if self.timers.values().all(|at| *at > now) {
            return;
        }
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.timers.remove(&name);
            // A timer fires through the log so every replica sees it at the
            // same index; only a leader can append it.
            let _ = self
                .raft
                .propose_event(now, MachineEvent::Timer { name: name.clone() });
        }
    }

    /// Handles one input; returns a stop request if the server must stop.
    fn handle(&mut self, now: u64, input: Input) -> Option<(bool, oneshot::Sender<()>)> {
        match input {
            Input::Message(envelope) => {
                if let Err(error) = self.raft.step(now, envelope) {
                    tracing::debug!(server = %self.shared.record.server, %error, "message refused");
                }
            }
            Input::Request(request, responder) => self.request(now, request, responder),
            Input::Closure(closure) => {
                let status = self.raft.status();
                closure(
                    self.raft.machine() as &dyn Any,
                    status.applied_index,
                    status.term,
                );
            }
            Input::Liveness { node, up } => self.liveness(now, node, up),
            Input::Stop { delete, done } => return Some((delete, done)),
        }
        None
    }

    fn liveness(&mut self, now: u64, node: NodeId, up: bool) {
        let peers: Vec<ServerId> = self
            .raft
            .membership()
            .members
            .keys()
            .copied()
            .filter(|member| node_of(*member) == node && *member != self.shared.id)
            .collect();
        for peer in peers {
            if up {
                self.raft.peer_up(now, peer);
            } else {
                self.raft.peer_down(now, peer);
            }
        }
        if self.monitored.contains(&node) && self.raft.role() == Role::Leader {
            let event = if up {
                MachineEvent::NodeUp(node)
            } else {
                MachineEvent::NodeDown(node)
            };
            let _ = self.raft.propose_event(now, event);
        }
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    fn request(&mut self, now: u64, request: ServerRequest, responder: Responder) {
        if request.needs_leader() && self.raft.role() != Role::Leader {
            return self.not_leader(request, responder, self.raft.leader());
        }
        // Kept to hold or redirect the request if the core refuses it for
        // want of leadership (cheap: payloads are reference-counted).
        let original = request.clone();
        match request {
            ServerRequest::Command { command, priority } => {
                let command = match decode::<M::Command>(&command, "command") {
                    Ok(command) => command,
                    Err(failure) => return self.respond(responder, failure),
                };
                let id = self.next_request_id();
                match self
                    .raft
                    .propose(now, command, priority, ReplyTo::Request(id))
                {
                    Ok(()) => {
                        self.pending.insert(id, Pending::Command(responder));
                    }
                    Err(error) => self.refused(error, original, responder),
                }
            }
            ServerRequest::Pipeline {
                command,
                priority,
                correlation,
            } => self.pipeline(now, command, priority, correlation),
            ServerRequest::ConsistentQuery { query } => {
                let query = match decode::<M::Query>(&query, "query") {
                    Ok(query) => query,
                    Err(failure) => return self.respond(responder, failure),
                };
                let id = self.next_request_id();
                match self.raft.consistent_query(now, id, query) {
                    Ok(()) => {
                        self.pending.insert(id, Pending::Query(responder));
                    }
                    Err(error) => self.refused(error, original, responder),
                }
            }
            ServerRequest::LeaderQuery { query } | ServerRequest::LocalQuery { query } => {
                let query = match decode::<M::Query>(&query, "query") {
                    Ok(query) => query,
                    Err(failure) => return self.respond(responder, failure),
                };
                let reply = self.raft.machine().query(&query);
                let response = match postcard::to_allocvec(&reply) {
                    Ok(bytes) => {
                        let status = self.raft.status();
                        ServerResponse::Query {
                            index: status.applied_index,
                            term: status.term,
                            reply: Bytes::from(bytes),
                            leader: status.leader,
                        }
                    }
                    Err(error) => ServerResponse::Refused(Refusal::Encode(error.to_string())),
                };
                self.respond(responder, response);
            }
            ServerRequest::Members => {
                let members = self
                    .raft
                    .membership()
                    .members
                    .iter()
                    .map(|(id, m)| (*id, *m))
                    .collect();
                let leader = self.raft.leader();
                self.respond(responder, ServerResponse::Members { members, leader });
            }
            ServerRequest::AddMember { member, membership } => {
                self.node.directory_insert(member.clone());
                let id = member.id();
                let change = match membership {
                    chorus_raft::Membership::Voter => MembershipChange::AddVoter(id),
                    chorus_raft::Membership::NonVoter => MembershipChange::AddNonVoter(id),
                    chorus_raft::Membership::Promotable { .. } => {
                        MembershipChange::AddPromotable(id)
                    }
                };
                self.membership_change(now, change, original, responder);
            }
            ServerRequest::RemoveMember { member } => {
                self.membership_change(now, MembershipChange::Remove(member), original, responder)
            }
            ServerRequest::PromoteMember { member } => {
                self.membership_change(now, MembershipChange::Promote(member), original, responder)
            }
            ServerRequest::TransferLeadership { target } => {
                match self.raft.transfer_leadership(now, target) {
                    Ok(TransferOutcome::Started) => self.respond(responder, ServerResponse::Done),
                    Ok(TransferOutcome::AlreadyLeader) => {
                        self.respond(responder, ServerResponse::AlreadyLeader)
                    }
                    Err(error) => self.refused(error, original, responder),
                }
            }
            ServerRequest::TriggerElection => {
                self.raft.trigger_election(now);
                self.respond(responder, ServerResponse::Done);
            }
            ServerRequest::DeleteCluster => match self.raft.propose_end_of_life(now) {
                Ok(index) => self.appended.push((index, responder)),
                Err(error) => self.refused(error, original, responder),
            },
            ServerRequest::Status => {
                let status = self.status();
                self.respond(responder, ServerResponse::Status(Box::new(status)));
            }
        }
    }

    fn pipeline(
        &mut self,
        now: u64,
        command: Bytes,
        priority: Priority,
        correlation: Option<(u64, Correlation)>,
    ) {
        let reject = |task: &Self, leader: Option<ServerId>| {
            if let Some((caller, correlation)) = correlation {
                task.node.deliver_event(
                    CallerId(caller),
                    RawEvent::Rejected {
                        leader,
                        correlation,
                    },
                );
            }
        };
        let command = match postcard::from_bytes::<M::Command>(&command) {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%error, "pipelined command does not decode; dropped");
                return reject(self, self.raft.leader());
            }
        };
        let reply_to = match correlation {
            Some((caller, correlation)) => ReplyTo::Stream {
                caller: CallerId(caller),
                correlation,
            },
            None => ReplyTo::Nobody,
        };
        if let Err(error) = self.raft.propose(now, command, priority, reply_to) {
            let leader = match error {
                chorus_raft::ProposeError::NotLeader { leader } => leader,
                _ => self.raft.leader(),
            };
            reject(self, leader);
        }
    }

    fn membership_change(
        &mut self,
        now: u64,
        change: MembershipChange,
        original: ServerRequest,
        responder: Responder,
    ) {
        match self.raft.change_membership(now, change) {
            Ok(index) => self.appended.push((index, responder)),
            Err(error) => self.refused(error, original, responder),
        }
    }

    /// The core refused: redirect (or hold) on "not leader", else report.
    fn refused(
        &mut self,
        error: chorus_raft::ProposeError,
        request: ServerRequest,
        responder: Responder,
    ) {
        match Refusal::from_core(error) {
            Ok(refusal) => self.respond(responder, ServerResponse::Refused(refusal)),
            Err(leader) => self.not_leader(request, responder, leader),
        }
    }

    fn not_leader(
        &mut self,
        request: ServerRequest,
        responder: Responder,
        leader: Option<ServerId>,
    ) {
        match leader {
            Some(leader) if leader != self.shared.id => {
                self.respond(responder, ServerResponse::Redirect { leader })
            }
            // ra: hold the request until a leader is known.
            _ if self.held.len() < HELD_REQUESTS_MAX => self.held.push((request, responder)),
            _ => self.respond(
                responder,
                ServerResponse::Refused(Refusal::Busy(HELD_REQUESTS_MAX)),
            ),
        }
    }

    fn status(&self) -> ServerStatus {
        let status = self.raft.status();
        ServerStatus {
            server: self.shared.record.server.clone(),
            cluster: self.shared.record.cluster.clone(),
            machine: self.shared.record.machine.clone(),
            role: status.role,
            term: status.term,
            leader: status.leader,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            last_index: status.last_index,
            snapshot_index: status.snapshot_index,
            members: status
                .members
                .members
                .iter()
                .map(|(id, m)| (*id, *m))
                .collect(),
            quiesced: status.quiesced,
            halted_at: self.halted.as_ref().map(|(index, _)| *index),
        }
    }

    fn respond(&self, responder: Responder, response: ServerResponse) {
        match responder {
            Responder::Local(tx) => {
                // The caller may have given up (timeout): nothing to do.
                let _ = tx.send(response);
            }
            Responder::Remote { node, id } => {
                self.node.transport.send(
                    node,
                    Frame::Response {
                        id,
                        response: crate::rpc::NodeResponse::Server(response),
                    },
                );
            }
            Responder::Nobody => {}
        }
    }

    /// Carries out the core's actions in order. Returns false when the
    /// server must stop because storage failed.
    fn execute(&mut self, now: u64) -> bool {
        loop {
            let actions = self.raft.take_actions();
            if actions.is_empty() {
                return true;
            }
            for action in actions {
                if !self.execute_one(now, action) {
                    return false;
                }
            }
        }
    }

    fn execute_one(&mut self, now: u64, action: Action<M>) -> bool {
        let id = self.shared.id;
        match action {
            Action::SaveHardState(hard_state) => {
                if let Err(error) = self.node.log.save_hard_state(id, hard_state) {
                    return self.storage_failed(error);
                }
            }
            Action::AppendLog(entries) => {
                if let Err(error) = self.node.log.append(id, entries) {
                    return self.storage_failed(error);
                }
            }
            Action::SaveSnapshot {
                meta,
                data,
                keep_log_after,
            } => {
                // One snapshot of a server at a time, in order: the one
                // being written is recorded before the next begins.
                if !self.finish_snapshot_job() {
                    return false;
                }
                if keep_log_after {
                    // Written off this task: storing the whole machine state
                    // here would stall this server's replication and replies
                    // for as long as the write and fsync take. Safe to
                    // finish at any time: the core no longer needs the
                    // entries it covers, and the log keeps them until the
                    // snapshot is recorded.
                    match Arc::clone(&self.node.log).begin_snapshot(id, meta, data) {
                        Ok(job) => {
                            let (done, answer) = std::sync::mpsc::sync_channel(1);
                            tokio::task::spawn_blocking(move || {
                                let _ = done.send(job());
                            });
                            self.snapshot_job = Some(answer);
                        }
                        Err(error) => return self.storage_failed(error),
                    }
                } else if let Err(error) = self.node.log.save_snapshot(id, meta, data, false) {
                    // A follower installing its leader's snapshot replaces
                    // its whole log: one barrier.
                    return self.storage_failed(error);
                }
            }
            Action::Send(envelope) => self.node.send_envelope(envelope),
            Action::Reply {
                request,
                index,
                reply,
            } => {
                if let Some(Pending::Command(responder)) = self.pending.remove(&request) {
                    let response = match postcard::to_allocvec(&reply) {
                        Ok(bytes) => ServerResponse::Applied {
                            index,
                            reply: Bytes::from(bytes),
                        },
                        Err(error) => ServerResponse::Refused(Refusal::Encode(error.to_string())),
                    };
                    self.respond(responder, response);
                }
            }
            Action::Applied { caller, replies } => {
                let mut encoded = Vec::with_capacity(replies.len());
                for (correlation, reply) in replies {
                    match postcard::to_allocvec(&reply) {
                        Ok(bytes) => encoded.push((correlation, Bytes::from(bytes))),
                        Err(error) => tracing::error!(%error, "reply does not encode"),
                    }
                }
                self.node.deliver_event(
                    caller,
                    RawEvent::Applied {
                        leader: id,
                        replies: encoded,
                    },
                );
            }
            Action::Abandoned { reply_to, why } => {
                let Abandoned::LostLeadership { leader } = why;
                match reply_to {
                    ReplyTo::Request(request) => {
                        if let Some(pending) = self.pending.remove(&request) {
                            let responder = match pending {
                                Pending::Command(r) | Pending::Query(r) => r,
                            };
                            self.respond(responder, ServerResponse::LeadershipLost { leader });
                        }
                    }
                    ReplyTo::Stream {
                        caller,
                        correlation,
                    } => self.node.deliver_event(
                        caller,
                        RawEvent::Rejected {
                            leader,
                            correlation,
                        },
                    ),
                    ReplyTo::Nobody => {}
                }
            }
            Action::QueryReply { request, reply } => {
                if let Some(Pending::Query(responder)) = self.pending.remove(&request) {
                    let status = self.raft.status();
                    let response = match postcard::to_allocvec(&reply) {
                        Ok(bytes) => ServerResponse::Query {
                            index: status.applied_index,
                            term: status.term,
                            reply: Bytes::from(bytes),
                            leader: Some(id),
                        },
                        Err(error) => ServerResponse::Refused(Refusal::Encode(error.to_string())),
                    };
                    self.respond(responder, response);
                }
            }
            Action::QueryAbandoned { request, leader } => {
                if let Some(pending) = self.pending.remove(&request) {
                    let responder = match pending {
                        Pending::Command(r) | Pending::Query(r) => r,
                    };
                    self.respond(responder, ServerResponse::LeadershipLost { leader });
                }
            }
            Action::Effect(effect) => self.effect(now, effect),
            Action::RoleChanged { role, leader, .. } => {
                self.leader = leader;
                if role != Role::Leader {
                    // Machine timers belong to a leadership; the next leader
                    // re-arms them in state_enter.
                    self.timers.clear();
                }
                if leader.is_some() && !self.held.is_empty() {
                    for (request, responder) in std::mem::take(&mut self.held) {
                        self.request(now, request, responder);
                    }
                }
            }
            Action::EndOfLife => {}
            Action::ApplyHalted { index, reason } => {
                tracing::error!(server = %self.shared.record.server, index, %reason,
                    "applying halted: this code cannot apply the next entry; upgrade it");
                self.halted = Some((index, reason));
            }
        }
        // Answer membership changes once the leader's own log holds them.
        if !self.appended.is_empty() {
            let durable = self.raft.status().durable_index;
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.appended)
                .into_iter()
                .partition(|(index, _)| *index <= durable);
            self.appended = waiting;
            for (index, responder) in done {
                self.respond(responder, ServerResponse::Appended { index });
            }
        }
        true
    }

    fn effect(&mut self, now: u64, effect: Effect<M>) {
        match effect {
            Effect::Send { to, message } => self.node.deliver_message::<M>(to, message),
            Effect::Timer { name, after_ms } => match after_ms {
                Some(after) => {
                    self.timers.insert(name, now + after);
                }
                None => {
                    self.timers.remove(&name);
                }
            },
            Effect::MonitorNode(node) => {
                // ra: monitoring a node that is already down reports it at once.
                if node != self.node.config.node && !self.node.transport.is_up(node) {
                    let _ = self.raft.propose_event(now, MachineEvent::NodeDown(node));
                }
                self.monitored.insert(node);
            }
            Effect::DemonitorNode(node) => {
                self.monitored.remove(&node);
            }
            // The core carries these out itself.
            Effect::ReleaseCursor | Effect::Append(_) => {}
        }
    }

    /// Waits for the snapshot being written off this task, if any. False
    /// when storing it failed.
    fn finish_snapshot_job(&mut self) -> bool {
        let Some(answer) = self.snapshot_job.take() else {
            return true;
        };
        match answer.recv() {
            Ok(Ok(())) => true,
            Ok(Err(error)) => self.storage_failed(error),
            // The job ended without answering: it panicked.
            Err(_) => self.storage_failed(chorus_log::ApiError::Closed.into()),
        }
    }

    fn storage_failed(&mut self, error: chorus_log::LogError) -> bool {
        tracing::error!(server = %self.shared.record.server, %error,
            "storage failed; stopping the server (restart the node to recover)");
        false
    }

    fn exit(mut self, delete: bool, done: Option<oneshot::Sender<()>>) {
        let id = self.shared.id;
        // Every waiting caller gets an answer: a dropped remote responder
        // would leave its caller waiting for its timeout.
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for pending in pending {
            let responder = match pending {
                Pending::Command(r) | Pending::Query(r) => r,
            };
            self.respond(
                responder,
                ServerResponse::Failed(CallError::Stopped(self.shared.record.server.clone())),
            );
        }
        for (_, responder) in std::mem::take(&mut self.held) {
            self.respond(
                responder,
                ServerResponse::Failed(CallError::Stopped(self.shared.record.server.clone())),
            );
        }
        // A membership change or end-of-life command that committed is
        // appended, even if this server's own copy was not durable yet (a
        // leader may commit on its followers' acknowledgements and apply end
        // of life before its own write completes).
        let commit_index = self.raft.status().commit_index;
        for (index, responder) in std::mem::take(&mut self.appended) {
            let response = if index <= commit_index {
                ServerResponse::Appended { index }
            } else {
                ServerResponse::Failed(CallError::Stopped(self.shared.record.server.clone()))
            };
            self.respond(responder, response);
        }
        // A snapshot still being written is recorded (or its failure
        // logged) before the data may be deleted or the log closed.
        self.finish_snapshot_job();
        if delete {
            if let Err(error) = self.node.log.delete_server(id) {
                tracing::error!(server = %self.shared.record.server, %error, "deleting data failed");
            }
        }
        // Unregistered only after its data is deleted, so restart_server
        // cannot find the data of a server being deleted and revive it.
        self.node.unregister(id, &self.shared);
        if let Some(done) = done {
            let _ = done.send(());
        }
        tracing::info!(server = %self.shared.record.server, delete, "server stopped");
    }
}

/// Decodes bytes a caller sent in the machine's own types.
fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, ServerResponse> {
    postcard::from_bytes(bytes).map_err(|error| {
        ServerResponse::Failed(CallError::Decode {
            what: what.to_string(),
            reason: error.to_string(),
        })
    })
}

//! [`Node`]: ra's "system" — the process-wide host of Raft servers — and the
//! API over it.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use chorus_log::{FaultyStorage, FsStorage, LogSystem};
use chorus_raft::{
    CallerId, Configuration, Correlation, Envelope, LogIndex, Membership, NodeId, Persisted,
    Priority, ServerId, ServerProgress, SubscriberId, Term,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{NodeConfig, StorageMode};
use crate::error::{CallError, ClusterNotFormed, NodeError, Refusal, StartError};
use crate::ids::{check_name, node_of, server_id, ServerRef};
use crate::overview::Overview;
use crate::rpc::{
    NodeRequest, NodeResponse, RawEvent, ServerRecord, ServerRequest, ServerResponse, ServerStatus,
};
use crate::server::{self, Input, NodeMachine, Responder, ServerShared};
use crate::storage::{DurableLog, SharedLog};
use crate::transport::{Inbound, RequestFailure, Transport, TransportConfig};
use crate::wire::Frame;

/// Version byte in front of a stored [`ServerRecord`] (formats.md).
const SERVER_RECORD_VERSION: u8 = 1;
/// Most redirects one call follows before giving up.
const REDIRECTS_MAX: usize = 16;
/// Most undelivered event batches a pipeline caller's stream holds; later
/// ones are dropped (the caller resends after its own timeout, as ra's
/// documentation prescribes for pipelined commands).
const PIPELINE_EVENTS_MAX: usize = 65_536;
/// Most undelivered machine messages per subscriber.
const SUBSCRIBER_MESSAGES_MAX: usize = 65_536;
/// How often start_cluster checks whether a leader was elected.
const LEADER_POLL: Duration = Duration::from_millis(20);

type Routes = RwLock<HashMap<ServerId, Arc<ServerShared>>>;

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poison| poison.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poison| poison.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Builds servers of one registered machine type.
trait MachineFactory: Send + Sync {
    fn spawn(
        &self,
        node: &Arc<NodeInner>,
        record: ServerRecord,
        persisted: Persisted,
    ) -> Result<Arc<ServerShared>, StartError>;
}

struct Factory<M, F> {
    make: F,
    machine: PhantomData<fn() -> M>,
}

impl<M, F> MachineFactory for Factory<M, F>
where
    M: NodeMachine,
    F: Fn(&[u8]) -> Result<M, String> + Send + Sync,
{
    fn spawn(
        &self,
        node: &Arc<NodeInner>,
        record: ServerRecord,
        persisted: Persisted,
    ) -> Result<Arc<ServerShared>, StartError> {
        let machine = (self.make)(&record.machine_config).map_err(StartError::MachineInit)?;
        server::spawn::<M>(node, record, persisted, machine)
    }
}

pub(crate) struct NodeInner {
    pub(crate) config: NodeConfig,
    pub(crate) clock: Clock,
    pub(crate) log: Arc<dyn DurableLog>,
    pub(crate) transport: Arc<Transport>,
    routes: Arc<Routes>,
    /// Names of servers anywhere, by core id (filled from records, calls
    /// and WhoIs answers).
    directory: RwLock<HashMap<ServerId, ServerRef>>,
    machines: RwLock<HashMap<String, Arc<dyn MachineFactory>>>,
    callers: Mutex<HashMap<CallerId, mpsc::Sender<RawEvent>>>,
    subscribers: Mutex<HashMap<SubscriberId, Box<dyn Any + Send + Sync>>>,
    next_local_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    local_addr: Option<SocketAddr>,
}

/// Hands transport events to the node without a reference cycle.
struct InboundAdapter(Weak<NodeInner>);

impl Inbound for InboundAdapter {
    fn frame(&self, from: NodeId, frame: Frame) {
        if let Some(node) = self.0.upgrade() {
            node.inbound_frame(from, frame);
        }
    }

    fn liveness(&self, node: NodeId, up: bool) {
        if let Some(inner) = self.0.upgrade() {
            inner.liveness(node, up);
        }
    }
}

/// A command's result (ra's `{ok, Reply, Leader}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandReply<R> {
    pub reply: R,
    /// Where the command sits in the log.
    pub index: LogIndex,
    /// The leader that applied it.
    pub leader: ServerRef,
}

/// A query's result (ra's `{ok, {IdxTerm, Result}, Leader}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryReply<R> {
    pub reply: R,
    /// The applied index the answer reflects, and the server's term.
    pub index: LogIndex,
    pub term: Term,
    pub leader: Option<ServerRef>,
}

/// A membership change or end-of-life command in the leader's log (ra's
/// `{ok, IdxTerm, Leader}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub index: LogIndex,
    pub leader: ServerRef,
}

/// A cluster's members as its leader sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members {
    pub members: Vec<(ServerRef, Membership)>,
    pub leader: Option<ServerRef>,
}

/// ra's `ok | already_leader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferResult {
    Started,
    AlreadyLeader,
}

/// ra's `{ok, Started, NotStarted}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStarted {
    pub started: Vec<ServerRef>,
    pub not_started: Vec<(ServerRef, StartError)>,
    pub leader: ServerRef,
}

/// ra's `ra_event`s on a pipeline caller's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineEvent<R> {
    /// `{applied, [{Correlation, Reply}]}`, batched.
    Applied {
        leader: ServerRef,
        replies: Vec<(Correlation, R)>,
    },
    /// `{rejected, {not_leader, Leader, Correlation}}`: resend to `leader`.
    /// A command rejected because its server lost leadership may still
    /// have been applied.
    Rejected {
        leader: Option<ServerRef>,
        correlation: Correlation,
    },
}

/// Where a call may be sent: one server or a list tried in order (ra's
/// `ServerLoc`).
pub trait Targets {
    fn targets(&self) -> Vec<ServerRef>;
}

impl Targets for ServerRef {
    fn targets(&self) -> Vec<ServerRef> {
        vec![self.clone()]
    }
}

impl Targets for [ServerRef] {
    fn targets(&self) -> Vec<ServerRef> {
        self.to_vec()
    }
}

impl Targets for Vec<ServerRef> {
    fn targets(&self) -> Vec<ServerRef> {
        self.clone()
    }
}

impl<const N: usize> Targets for [ServerRef; N] {
    fn targets(&self) -> Vec<ServerRef> {
        self.to_vec()
    }
}

/// A pipeline caller's event stream (the Rust form of the calling process's
/// mailbox in ra). Pass [`PipelineStream::caller`] to
/// [`Node::pipeline_command`].
pub struct PipelineStream<M: NodeMachine> {
    node: Arc<NodeInner>,
    caller: CallerId,
    events: mpsc::Receiver<RawEvent>,
    machine: PhantomData<fn() -> M>,
}

impl<M: NodeMachine> PipelineStream<M> {
    pub fn caller(&self) -> CallerId {
        self.caller
    }

    /// The next event; `None` once the node has shut down.
    pub async fn next(&mut self) -> Option<Result<PipelineEvent<M::Reply>, CallError>> {
        let raw = self.events.recv().await?;
        Some(match raw {
            RawEvent::Applied { leader, replies } => {
                let mut decoded = Vec::with_capacity(replies.len());
                for (correlation, bytes) in replies {
                    match postcard::from_bytes(&bytes) {
                        Ok(reply) => decoded.push((correlation, reply)),
                        Err(error) => {
                            return Some(Err(CallError::Decode {
                                what: "reply".into(),
                                reason: error.to_string(),
                            }))
                        }
                    }
                }
                Ok(PipelineEvent::Applied {
                    leader: self.node.resolve(leader).await,
                    replies: decoded,
                })
            }
            RawEvent::Rejected {
                leader,
                correlation,
            } => Ok(PipelineEvent::Rejected {
                leader: match leader {
                    Some(id) => Some(self.node.resolve(id).await),
                    None => None,
                },
                correlation,
            }),
        })
    }
}

impl<M: NodeMachine> Drop for PipelineStream<M> {
    fn drop(&mut self) {
        lock(&self.node.callers).remove(&self.caller);
    }
}

/// A node: hosts any number of Raft servers of any registered machine
/// types, over one shared WAL and one TCP connection per peer node.
/// Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// Opens the node's log (recovering it) and starts its transport.
    /// Servers are not restarted: call [`Node::restart_server`] (as with ra).
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let routes: Arc<Routes> = Arc::new(RwLock::new(HashMap::new()));
        let notices = Arc::clone(&routes);
        let on_durable = Box::new(move |durable: Vec<chorus_log::Durable>| {
            let routes = read(&notices);
            for notice in durable {
                if let Some(server) = routes.get(&notice.server) {
                    server.notify_durable(notice.index, notice.term);
                }
            }
        });
        let log: Arc<dyn DurableLog> = match config.storage {
            StorageMode::Disk => {
                let (log, report) = LogSystem::open(config.log.clone(), FsStorage)?;
                tracing::info!(
                    servers = report.servers,
                    used_checkpoint = report.used_checkpoint,
                    wal_records = report.wal_records_replayed,
                    "log recovered"
                );
                Arc::new(SharedLog::start(log, on_durable))
            }
            StorageMode::Memory => {
                let storage = FaultyStorage::reliable(config.node.0);
                let (log, _) = LogSystem::open(config.log.clone(), storage)?;
                Arc::new(SharedLog::start(log, on_durable))
            }
        };
        let listener =
            match config.listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| NodeError::Io {
                        what: format!("cannot listen for peers on {addr}"),
                        source,
                    },
                )?),
                None => None,
            };
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let clock = Clock::new();
        let transport_config = TransportConfig {
            node: config.node,
            cluster_token: config.cluster_token,
            ping_interval_ms: config.ping_interval_ms,
            phi_threshold: config.phi_threshold,
            phi_min_std_deviation_ms: config.phi_min_std_deviation_ms,
            peer_queue_capacity: config.peer_queue_capacity,
            write_batch_bytes_max: config.write_batch_bytes_max,
        };
        let inner = Arc::new_cyclic(|weak: &Weak<NodeInner>| {
            let inbound = Arc::new(InboundAdapter(weak.clone()));
            NodeInner {
                transport: Transport::new(transport_config, clock, inbound, shutdown_rx),
                config,
                clock,
                log,
                routes,
                directory: RwLock::new(HashMap::new()),
                machines: RwLock::new(HashMap::new()),
                callers: Mutex::new(HashMap::new()),
                subscribers: Mutex::new(HashMap::new()),
                next_local_id: AtomicU64::new(1),
                shutdown,
                local_addr,
            }
        });
        inner.transport.start_liveness();
        if let Some(listener) = listener {
            inner.transport.serve(listener);
        }
        for (peer, addr) in inner.config.peers.clone() {
            inner.transport.add_peer(peer, addr);
        }
        // Stored servers' names, so ids in messages resolve without asking.
        for id in inner.log.servers() {
            if let Ok(record) = inner.stored_record(id) {
                inner.directory_insert(record.server.clone());
                for member in record.members {
                    inner.directory_insert(member);
                }
            }
        }
        Ok(Node { inner })
    }

    pub fn id(&self) -> NodeId {
        self.inner.config.node
    }

    /// The address peers connect to, once listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Adds (or moves) a peer node.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        self.inner.transport.add_peer(node, addr);
    }

    /// Whether a peer node is currently believed up.
    pub fn is_node_up(&self, node: NodeId) -> bool {
        node == self.inner.config.node || self.inner.transport.is_up(node)
    }

    /// Registers a machine type under `kind` (the Rust form of ra's
    /// `{module, Mod, Args}`): `make` builds the initial machine from the
    /// opaque config given at start. Every node that hosts servers of this
    /// kind registers it.
    pub fn register_machine<M, F>(&self, kind: &str, make: F)
    where
        M: NodeMachine,
        F: Fn(&[u8]) -> Result<M, String> + Send + Sync + 'static,
    {
        let factory: Arc<dyn MachineFactory> = Arc::new(Factory {
            make,
            machine: PhantomData,
        });
        write(&self.inner.machines).insert(kind.to_string(), factory);
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.default_timeout_ms)
    }

    /// ra's `start_cluster`: starts every server, elects a leader. Succeeds
    /// when more than half the servers started and a leader was elected
    /// within `timeout`; otherwise the started servers are deleted again.
    pub async fn start_cluster(
        &self,
        cluster: &str,
        machine: &str,
        machine_config: Bytes,
        members: &[ServerRef],
        timeout: Duration,
    ) -> Result<ClusterStarted, ClusterNotFormed> {
        let deadline = Instant::now() + timeout;
        let mut starts = tokio::task::JoinSet::new();
        for member in members {
            let record = ServerRecord {
                cluster: cluster.to_string(),
                server: member.clone(),
                machine: machine.to_string(),
                machine_config: machine_config.clone(),
                members: members.to_vec(),
            };
            let inner = Arc::clone(&self.inner);
            let member = member.clone();
            starts.spawn(async move {
                let result = inner.start_server_at(record, deadline).await;
                (member, result)
            });
        }
        let mut started = Vec::new();
        let mut not_started = Vec::new();
        while let Some(joined) = starts.join_next().await {
            if let Ok((member, result)) = joined {
                match result {
                    Ok(()) => started.push(member),
                    Err(error) => not_started.push((member, error)),
                }
            }
        }
        // Keep the caller's order.
        started.sort_by_key(|s| members.iter().position(|m| m == s));
        if started.len() * 2 > members.len() {
            // ra: a brand-new cluster is told to elect at once.
            let _ = self.trigger_election(&started[0]).await;
            loop {
                if let Ok(found) = self.inner.members_at(&started, deadline).await {
                    if let Some(leader) = found.leader {
                        return Ok(ClusterStarted {
                            started,
                            not_started,
                            leader,
                        });
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(LEADER_POLL).await;
            }
        }
        let no_leader = started.len() * 2 > members.len();
        for server in &started {
            let _ = self.force_delete_server(server).await;
        }
        Err(ClusterNotFormed {
            members: members.len(),
            not_started,
            no_leader,
        })
    }

    /// ra's `start_server`: starts `server` as a member of `cluster`. If
    /// `server` is among `members` it is an initial member; otherwise it
    /// starts empty and waits for the leader to add it ([`Node::add_member`]).
    pub async fn start_server(
        &self,
        cluster: &str,
        server: &ServerRef,
        machine: &str,
        machine_config: Bytes,
        members: &[ServerRef],
    ) -> Result<(), StartError> {
        let record = ServerRecord {
            cluster: cluster.to_string(),
            server: server.clone(),
            machine: machine.to_string(),
            machine_config,
            members: members.to_vec(),
        };
        let deadline = Instant::now() + self.default_timeout();
        self.inner.start_server_at(record, deadline).await
    }

    /// ra's `restart_server`: restarts a server stopped with its data kept
    /// (after [`Node::stop_server`] or a node restart).
    pub async fn restart_server(&self, server: &ServerRef) -> Result<(), StartError> {
        let request = NodeRequest::RestartServer {
            name: server.name.to_string(),
        };
        match self
            .inner
            .node_call(server.node, request, self.default_timeout())
            .await?
        {
            NodeResponse::Started => Ok(()),
            NodeResponse::StartFailed(error) => Err(error),
            other => Err(unexpected(other).into()),
        }
    }

    /// ra's `stop_server`: stops the server, keeping its data.
    pub async fn stop_server(&self, server: &ServerRef) -> Result<(), CallError> {
        let request = NodeRequest::StopServer {
            name: server.name.to_string(),
        };
        self.inner
            .expect_done(server.node, request, self.default_timeout())
            .await
    }

    /// ra's `force_delete_server`: stops the server and deletes its data,
    /// whatever the cluster thinks.
    pub async fn force_delete_server(&self, server: &ServerRef) -> Result<(), CallError> {
        let request = NodeRequest::ForceDeleteServer {
            name: server.name.to_string(),
        };
        self.inner
            .expect_done(server.node, request, self.default_timeout())
            .await
    }

    /// ra's `delete_cluster`: commits the end-of-life command; each member
    /// stops and deletes its data once it applies it, the leader last (after
    /// replicating it to everyone). Returns the leader.
    pub async fn delete_cluster(
        &self,
        servers: &(impl Targets + ?Sized),
    ) -> Result<Appended, CallError> {
        let (response, leader) = self
            .inner
            .leader_call(
                &servers.targets(),
                ServerRequest::DeleteCluster,
                self.default_timeout(),
            )
            .await?;
        self.inner.appended(response, leader).await
    }

    /// ra's `add_member`: adds `member` as a voter. Returns once the change
    /// is in the leader's log (durably); start the new server with
    /// [`Node::start_server`] before or after.
    pub async fn add_member(
        &self,
        cluster: &(impl Targets + ?Sized),
        member: &ServerRef,
    ) -> Result<Appended, CallError> {
        self.add_member_as(cluster, member, Membership::Voter).await
    }

    /// `add_member` with ra's membership options: voter, non-voter, or
    /// promotable (a non-voter promoted once caught up).
    pub async fn add_member_as(
        &self,
        cluster: &(impl Targets + ?Sized),
        member: &ServerRef,
        membership: Membership,
    ) -> Result<Appended, CallError> {
        self.inner.directory_insert(member.clone());
        let request = ServerRequest::AddMember {
            member: member.clone(),
            membership,
        };
        self.membership_change(cluster, request).await
    }

    /// ra's `remove_member`: returns once the change is in the leader's log.
    pub async fn remove_member(
        &self,
        cluster: &(impl Targets + ?Sized),
        member: &ServerRef,
    ) -> Result<Appended, CallError> {
        let request = ServerRequest::RemoveMember {
            member: member.id(),
        };
        self.membership_change(cluster, request).await
    }

    /// Make a non-voting member a voter once it has caught up with the
    /// leader's log as it is now (etcd's learner promotion): returns once
    /// the change is in the leader's log; the promotion itself follows
    /// when the member has caught up.
    pub async fn promote_member(
        &self,
        cluster: &(impl Targets + ?Sized),
        member: &ServerRef,
    ) -> Result<Appended, CallError> {
        let request = ServerRequest::PromoteMember {
            member: member.id(),
        };
        self.membership_change(cluster, request).await
    }

    /// Sends a membership change to the cluster's leader; answers once it
    /// is in the leader's log, durably.
    async fn membership_change(
        &self,
        cluster: &(impl Targets + ?Sized),
        request: ServerRequest,
    ) -> Result<Appended, CallError> {
        let (response, leader) = self
            .inner
            .leader_call(&cluster.targets(), request, self.default_timeout())
            .await?;
        self.inner.appended(response, leader).await
    }

    /// ra's `leave_and_terminate`: removes `server` from the cluster, then
    /// stops it (its data is kept).
    pub async fn leave_and_terminate(
        &self,
        cluster: &(impl Targets + ?Sized),
        server: &ServerRef,
    ) -> Result<(), CallError> {
        self.remove_member(cluster, server).await?;
        self.stop_server(server).await
    }

    /// ra's `leave_and_delete_server`: removes `server` from the cluster,
    /// then deletes it.
    pub async fn leave_and_delete_server(
        &self,
        cluster: &(impl Targets + ?Sized),
        server: &ServerRef,
    ) -> Result<(), CallError> {
        self.remove_member(cluster, server).await?;
        self.force_delete_server(server).await
    }

    /// ra's `members`: the configuration, as the leader sees it.
    pub async fn members(&self, cluster: &(impl Targets + ?Sized)) -> Result<Members, CallError> {
        let deadline = Instant::now() + self.default_timeout();
        self.inner.members_at(&cluster.targets(), deadline).await
    }

    /// ra's `process_command` with the node's default timeout.
    pub async fn process_command<M: NodeMachine>(
        &self,
        servers: &(impl Targets + ?Sized),
        command: M::Command,
    ) -> Result<CommandReply<M::Reply>, CallError> {
        self.process_command_timeout::<M>(servers, command, self.default_timeout())
            .await
    }

    /// ra's `process_command`: returns after the command is applied, with
    /// the machine's reply and the leader. A follower redirects the call to
    /// its leader, or holds it until one is known. On timeout the outcome is
    /// unknown ([`CallError::Timeout`]).
    pub async fn process_command_timeout<M: NodeMachine>(
        &self,
        servers: &(impl Targets + ?Sized),
        command: M::Command,
        timeout: Duration,
    ) -> Result<CommandReply<M::Reply>, CallError> {
        let command = encode(&command)?;
        let request = ServerRequest::Command {
            command,
            priority: Priority::Normal,
        };
        let (response, leader) = self
            .inner
            .leader_call(&servers.targets(), request, timeout)
            .await?;
        match response {
            ServerResponse::Applied { index, reply } => Ok(CommandReply {
                reply: decode(&reply, "reply")?,
                index,
                leader: self.inner.resolve(leader).await,
            }),
            other => Err(self.inner.failure(other).await),
        }
    }

    /// A new event stream for pipelined commands' notifications.
    pub fn pipeline_stream<M: NodeMachine>(&self) -> PipelineStream<M> {
        let (tx, rx) = mpsc::channel(PIPELINE_EVENTS_MAX);
        let caller = CallerId((self.inner.config.node.0 << 32) | self.inner.next_local());
        lock(&self.inner.callers).insert(caller, tx);
        PipelineStream {
            node: Arc::clone(&self.inner),
            caller,
            events: rx,
            machine: PhantomData,
        }
    }

    /// ra's `pipeline_command`: submits without waiting. With a correlation
    /// (and the caller's stream id), the caller's [`PipelineStream`] hears
    /// `Applied` (batched) or `Rejected` (not the leader). `Low` priority
    /// commands are appended in batches and may be overtaken by `Normal`
    /// ones.
    pub async fn pipeline_command<M: NodeMachine>(
        &self,
        server: &ServerRef,
        command: M::Command,
        correlation: Option<(CallerId, Correlation)>,
        priority: Priority,
    ) -> Result<(), CallError> {
        let request = ServerRequest::Pipeline {
            command: encode(&command)?,
            priority,
            correlation: correlation.map(|(caller, correlation)| (caller.0, correlation)),
        };
        self.inner.cast(server, request).await
    }

    /// ra's `consistent_query`: runs `query` on the leader after confirming
    /// its leadership with a round of heartbeats (ReadIndex), so the answer
    /// reflects every command committed before the call.
    pub async fn consistent_query<M: NodeMachine>(
        &self,
        server: &(impl Targets + ?Sized),
        query: M::Query,
    ) -> Result<QueryReply<M::QueryReply>, CallError> {
        let request = ServerRequest::ConsistentQuery {
            query: encode(&query)?,
        };
        self.query::<M>(server, request).await
    }

    /// ra's `leader_query`: runs `query` on the leader's current state
    /// without confirming leadership (may be stale).
    pub async fn leader_query<M: NodeMachine>(
        &self,
        server: &(impl Targets + ?Sized),
        query: M::Query,
    ) -> Result<QueryReply<M::QueryReply>, CallError> {
        let request = ServerRequest::LeaderQuery {
            query: encode(&query)?,
        };
        self.query::<M>(server, request).await
    }

    /// ra's `local_query`: runs `query` on `server` whatever its role (may
    /// be arbitrarily stale).
    pub async fn local_query<M: NodeMachine>(
        &self,
        server: &ServerRef,
        query: M::Query,
    ) -> Result<QueryReply<M::QueryReply>, CallError> {
        let request = ServerRequest::LocalQuery {
            query: encode(&query)?,
        };
        let deadline = Instant::now() + self.default_timeout();
        let response = self
            .inner
            .call(server.id(), request, deadline)
            .await
            .map_err(|error| named(error, server, server.id()))?;
        self.inner.query_reply(response).await
    }

    /// `local_query` with a closure over the machine (ra's query fun). The
    /// server must be hosted by this node.
    pub async fn local_query_with<M, R, F>(
        &self,
        server: &ServerRef,
        query: F,
    ) -> Result<QueryReply<R>, CallError>
    where
        M: NodeMachine,
        R: Send + 'static,
        F: FnOnce(&M) -> R + Send + 'static,
    {
        if server.node != self.inner.config.node {
            return Err(CallError::NotLocal(server.clone()));
        }
        let shared = self
            .inner
            .route(server.id())
            .ok_or_else(|| CallError::NoSuchServer(server.clone()))?;
        if shared.machine_type != std::any::TypeId::of::<M>() {
            return Err(CallError::WrongMachine {
                server: server.clone(),
                actual: shared.record.machine.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        let closure: server::LocalClosure = Box::new(move |machine, index, term| {
            if let Some(machine) = machine.downcast_ref::<M>() {
                let _ = tx.send((query(machine), index, term));
            }
        });
        let timeout = self.default_timeout();
        let sent =
            tokio::time::timeout(timeout, shared.mailbox.send(Input::Closure(closure))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(CallError::NoSuchServer(server.clone())),
            Err(_) => return Err(CallError::Timeout(server.clone())),
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok((reply, index, term))) => Ok(QueryReply {
                reply,
                index,
                term,
                leader: None,
            }),
            Ok(Err(_)) => Err(CallError::NoSuchServer(server.clone())),
            Err(_) => Err(CallError::Timeout(server.clone())),
        }
    }

    async fn query<M: NodeMachine>(
        &self,
        servers: &(impl Targets + ?Sized),
        request: ServerRequest,
    ) -> Result<QueryReply<M::QueryReply>, CallError> {
        let targets = servers.targets();
        let deadline = Instant::now() + self.default_timeout();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (response, _) = self
                .inner
                .leader_call(&targets, request.clone(), remaining)
                .await?;
            match response {
                // A read has no side effects: retry where leadership went.
                ServerResponse::LeadershipLost { .. } if Instant::now() < deadline => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                other => return self.inner.query_reply(other).await,
            }
        }
    }

    /// ra's `transfer_leadership`.
    pub async fn transfer_leadership(
        &self,
        server: &ServerRef,
        target: &ServerRef,
    ) -> Result<TransferResult, CallError> {
        let request = ServerRequest::TransferLeadership {
            target: target.id(),
        };
        let (response, _) = self
            .inner
            .leader_call(&server.targets(), request, self.default_timeout())
            .await?;
        match response {
            ServerResponse::Done => Ok(TransferResult::Started),
            ServerResponse::AlreadyLeader => Ok(TransferResult::AlreadyLeader),
            other => Err(self.inner.failure(other).await),
        }
    }

    /// ra's `trigger_election`: the server starts a (pre-)election now.
    pub async fn trigger_election(&self, server: &ServerRef) -> Result<(), CallError> {
        let deadline = Instant::now() + self.default_timeout();
        match self
            .inner
            .call(server.id(), ServerRequest::TriggerElection, deadline)
            .await
            .map_err(|error| named(error, server, server.id()))?
        {
            ServerResponse::Done => Ok(()),
            other => Err(self.inner.failure(other).await),
        }
    }

    /// A local server's role, term, leader, commit and applied index, as a
    /// watch channel updated after every batch of work that changed them:
    /// the way to follow a server without polling (a watch service waits
    /// for `applied_index` to move; metrics read the latest value). The
    /// channel closes when the server stops.
    pub fn progress(
        &self,
        server: &ServerRef,
    ) -> Result<watch::Receiver<ServerProgress>, CallError> {
        if server.node != self.inner.config.node {
            return Err(CallError::NotLocal(server.clone()));
        }
        let shared = self
            .inner
            .route(server.id())
            .ok_or_else(|| CallError::NoSuchServer(server.clone()))?;
        Ok(shared.progress.subscribe())
    }

    /// The node's clock (milliseconds since the Unix epoch, never going
    /// back): the time the node gives its Raft cores, so the time machines
    /// see in `ApplyMeta::time_ms` on the entries this node leads.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The shared log's counters, with the WAL write-and-sync latency
    /// histogram (for metrics).
    pub fn log_stats(&self) -> chorus_log::LogStats {
        self.inner.log.stats()
    }

    /// ra's `overview`: this node's servers, WAL and links.
    pub async fn overview(&self) -> Overview {
        self.inner.overview().await
    }

    /// A subscriber for machine messages (ra's `send_msg` effect target):
    /// give the id to the machine in a command; it sends with
    /// `Effect::Send`. Messages are sent by the leader only.
    pub fn subscribe<M: NodeMachine>(&self) -> (SubscriberId, mpsc::Receiver<M::Message>) {
        let (tx, rx) = mpsc::channel::<M::Message>(SUBSCRIBER_MESSAGES_MAX);
        let id = SubscriberId((self.inner.config.node.0 << 32) | self.inner.next_local());
        lock(&self.inner.subscribers).insert(id, Box::new(tx));
        (id, rx)
    }

    /// Orderly shutdown: stops every server (keeping its data), stops the
    /// transport, flushes and checkpoints the log.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let _ = self.inner.shutdown.send(true);
        let servers: Vec<Arc<ServerShared>> = read(&self.inner.routes).values().cloned().collect();
        for server in servers {
            let (done, wait) = oneshot::channel();
            if server
                .mailbox
                .send(Input::Stop {
                    delete: false,
                    done,
                })
                .await
                .is_ok()
            {
                let _ = wait.await;
            }
        }
        let log = Arc::clone(&self.inner.log);
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|error| NodeError::Config(format!("log close task failed: {error}")))??;
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, CallError> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|error| Refusal::Encode(error.to_string()).into())
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, CallError> {
    postcard::from_bytes(bytes).map_err(|error| CallError::Decode {
        what: what.to_string(),
        reason: error.to_string(),
    })
}

/// An error about the server the caller named (`to` is `target`), named as
/// the caller named it: a node that does not host a server can only name it
/// by its id.
fn named(error: CallError, target: &ServerRef, to: ServerId) -> CallError {
    if to != target.id() {
        return error;
    }
    match error {
        CallError::NoSuchServer(_) => CallError::NoSuchServer(target.clone()),
        CallError::Timeout(_) => CallError::Timeout(target.clone()),
        other => other,
    }
}

/// An answer of the wrong kind for the request (a peer running other code).
fn unexpected(response: impl std::fmt::Debug) -> CallError {
    CallError::Decode {
        what: "response".into(),
        reason: format!("unexpected answer {response:?}"),
    }
}

impl NodeInner {
    fn next_local(&self) -> u64 {
        self.next_local_id.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff
    }

    pub(crate) fn route(&self, id: ServerId) -> Option<Arc<ServerShared>> {
        read(&self.routes).get(&id).cloned()
    }

    pub(crate) fn register(&self, shared: Arc<ServerShared>) {
        write(&self.routes).insert(shared.id, shared);
    }

    pub(crate) fn unregister(&self, id: ServerId, shared: &Arc<ServerShared>) {
        let mut routes = write(&self.routes);
        if routes.get(&id).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            routes.remove(&id);
        }
    }

    pub(crate) fn directory_insert(&self, server: ServerRef) {
        let id = server.id();
        if read(&self.directory).get(&id) != Some(&server) {
            write(&self.directory).insert(id, server);
        }
    }

    /// The name of server `id`, asking its node when unknown here.
    pub(crate) async fn resolve(&self, id: ServerId) -> ServerRef {
        if let Some(known) = read(&self.directory).get(&id) {
            return known.clone();
        }
        let node = node_of(id);
        let answer = if node == self.config.node {
            Ok(NodeResponse::Name(self.local_name(id)))
        } else {
            self.transport
                .request(node, NodeRequest::WhoIs { id }, self.short_timeout())
                .await
        };
        match answer {
            Ok(NodeResponse::Name(Some(server))) => {
                self.directory_insert(server.clone());
                server
            }
            // Unknown even to its node (deleted): name it by its id.
            _ => ServerRef::new(format!("#{:08x}", id.0 & 0xffff_ffff), node),
        }
    }

    fn short_timeout(&self) -> Duration {
        Duration::from_millis(self.config.default_timeout_ms.min(1_000))
    }

    fn local_name(&self, id: ServerId) -> Option<ServerRef> {
        if let Some(server) = self.route(id) {
            return Some(server.record.server.clone());
        }
        self.stored_record(id).ok().map(|record| record.server)
    }

    fn stored_record(&self, id: ServerId) -> Result<ServerRecord, StartError> {
        let bytes = self.log.server_record(id)?;
        decode_record(&bytes)
    }

    /// One request to one server, wherever it is.
    pub(crate) async fn call(
        &self,
        to: ServerId,
        request: ServerRequest,
        deadline: Instant,
    ) -> Result<ServerResponse, CallError> {
        let node = node_of(to);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if node == self.config.node {
            let Some(server) = self.route(to) else {
                return Err(CallError::NoSuchServer(self.resolve(to).await));
            };
            let (tx, rx) = oneshot::channel();
            let input = Input::Request(request, Responder::Local(tx));
            let outcome = tokio::time::timeout(remaining, async {
                server.mailbox.send(input).await.map_err(|_| ())?;
                rx.await.map_err(|_| ())
            })
            .await;
            return match outcome {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(())) => Err(CallError::NoSuchServer(self.resolve(to).await)),
                Err(_) => Err(CallError::Timeout(self.resolve(to).await)),
            };
        }
        match self
            .transport
            .request(node, NodeRequest::Server { to, request }, remaining)
            .await
        {
            Ok(NodeResponse::Server(response)) => Ok(response),
            Ok(NodeResponse::Failed(error)) => Err(error),
            Ok(other) => Err(unexpected(other)),
            Err(RequestFailure::NodeDown(node)) => Err(CallError::NodeDown(node)),
            Err(RequestFailure::TimedOut) => Err(CallError::Timeout(self.resolve(to).await)),
        }
    }

    /// A request that only a leader serves: tries `targets` in order,
    /// following redirects. Returns the answer and who gave it.
    pub(crate) async fn leader_call(
        &self,
        targets: &[ServerRef],
        request: ServerRequest,
        timeout: Duration,
    ) -> Result<(ServerResponse, ServerId), CallError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        for target in targets {
            let mut to = target.id();
            let mut redirects = 0;
            loop {
                match self.call(to, request.clone(), deadline).await {
                    Ok(ServerResponse::Redirect { leader }) => {
                        redirects += 1;
                        if redirects > REDIRECTS_MAX {
                            return Err(CallError::Redirects(redirects - 1));
                        }
                        to = leader;
                    }
                    Ok(response) => return Ok((response, to)),
                    // ra: try the next server in the list.
                    Err(error @ (CallError::NodeDown(_) | CallError::NoSuchServer(_))) => {
                        last_error = Some(named(error, target, to));
                        break;
                    }
                    Err(error) => return Err(named(error, target, to)),
                }
            }
        }
        Err(last_error.unwrap_or(CallError::NoTargets))
    }

    /// A fire-and-forget request (pipelined commands).
    async fn cast(&self, server: &ServerRef, request: ServerRequest) -> Result<(), CallError> {
        let id = server.id();
        if server.node == self.config.node {
            let Some(shared) = self.route(id) else {
                return Err(CallError::NoSuchServer(server.clone()));
            };
            return shared
                .mailbox
                .send(Input::Request(request, Responder::Nobody))
                .await
                .map_err(|_| CallError::NoSuchServer(server.clone()));
        }
        let frame = Frame::Request {
            id: 0,
            request: NodeRequest::Server { to: id, request },
        };
        if self.transport.send(server.node, frame) {
            Ok(())
        } else {
            Err(CallError::NodeDown(server.node))
        }
    }

    async fn node_call(
        self: &Arc<Self>,
        node: NodeId,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<NodeResponse, CallError> {
        if node == self.config.node {
            return Ok(Arc::clone(self).handle_node_request(request).await);
        }
        match self.transport.request(node, request, timeout).await {
            Ok(response) => Ok(response),
            Err(RequestFailure::NodeDown(node)) => Err(CallError::NodeDown(node)),
            // A node-level call has no single server to blame.
            Err(RequestFailure::TimedOut) => Err(CallError::NodeDown(node)),
        }
    }

    async fn expect_done(
        self: &Arc<Self>,
        node: NodeId,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<(), CallError> {
        match self.node_call(node, request, timeout).await? {
            NodeResponse::Done => Ok(()),
            NodeResponse::Failed(error) => Err(error),
            other => Err(unexpected(other)),
        }
    }

    async fn start_server_at(
        self: &Arc<Self>,
        record: ServerRecord,
        deadline: Instant,
    ) -> Result<(), StartError> {
        let node = record.server.node;
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self
            .node_call(node, NodeRequest::StartServer { record }, timeout)
            .await?
        {
            NodeResponse::Started => Ok(()),
            NodeResponse::StartFailed(error) => Err(error),
            other => Err(unexpected(other).into()),
        }
    }

    async fn members_at(
        &self,
        targets: &[ServerRef],
        deadline: Instant,
    ) -> Result<Members, CallError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (response, _) = self
            .leader_call(targets, ServerRequest::Members, timeout)
            .await?;
        match response {
            ServerResponse::Members { members, leader } => {
                let mut named = Vec::with_capacity(members.len());
                for (id, membership) in members {
                    named.push((self.resolve(id).await, membership));
                }
                let leader = match leader {
                    Some(id) => Some(self.resolve(id).await),
                    None => None,
                };
                Ok(Members {
                    members: named,
                    leader,
                })
            }
            other => Err(self.failure(other).await),
        }
    }

    async fn appended(
        &self,
        response: ServerResponse,
        leader: ServerId,
    ) -> Result<Appended, CallError> {
        match response {
            ServerResponse::Appended { index } => Ok(Appended {
                index,
                leader: self.resolve(leader).await,
            }),
            other => Err(self.failure(other).await),
        }
    }

    async fn query_reply<R: serde::de::DeserializeOwned>(
        &self,
        response: ServerResponse,
    ) -> Result<QueryReply<R>, CallError> {
        match response {
            ServerResponse::Query {
                index,
                term,
                reply,
                leader,
            } => Ok(QueryReply {
                reply: decode(&reply, "query reply")?,
                index,
                term,
                leader: match leader {
                    Some(id) => Some(self.resolve(id).await),
                    None => None,
                },
            }),
            other => Err(self.failure(other).await),
        }
    }

    /// The error for an answer that is not the expected success.
    async fn failure(&self, response: ServerResponse) -> CallError {
        match response {
            ServerResponse::Refused(refusal) => CallError::Refused(refusal),
            ServerResponse::Failed(error) => error,
            ServerResponse::LeadershipLost { leader } => CallError::LeadershipLost {
                leader: match leader {
                    Some(id) => Some(self.resolve(id).await),
                    None => None,
                },
            },
            other => unexpected(other),
        }
    }

    /// Routes a Raft message to its server, here or on its node.
    pub(crate) fn send_envelope(&self, envelope: Envelope) {
        let node = node_of(envelope.to);
        if node == self.config.node {
            self.deliver_local(envelope);
        } else {
            self.transport.send(node, Frame::Raft(envelope));
        }
    }

    fn deliver_local(&self, envelope: Envelope) {
        if let Some(server) = self.route(envelope.to) {
            // A full mailbox drops the message: Raft resends.
            let _ = server.mailbox.try_send(Input::Message(envelope));
        }
    }

    /// Delivers a pipeline event to its caller's stream, here or remote.
    pub(crate) fn deliver_event(&self, caller: CallerId, event: RawEvent) {
        let node = NodeId(caller.0 >> 32);
        if node != self.config.node {
            self.transport.send(
                node,
                Frame::Events {
                    caller: caller.0,
                    event,
                },
            );
            return;
        }
        let sender = lock(&self.callers).get(&caller).cloned();
        if let Some(sender) = sender {
            if sender.try_send(event).is_err() {
                tracing::warn!(
                    caller = caller.0,
                    "pipeline event dropped: the caller's stream is full or gone"
                );
            }
        }
    }

    /// Delivers a machine message to a local subscriber.
    pub(crate) fn deliver_message<M: NodeMachine>(&self, to: SubscriberId, message: M::Message) {
        let subscribers = lock(&self.subscribers);
        let Some(sender) = subscribers
            .get(&to)
            .and_then(|s| s.downcast_ref::<mpsc::Sender<M::Message>>())
        else {
            return;
        };
        if sender.try_send(message).is_err() {
            tracing::warn!(
                subscriber = to.0,
                "machine message dropped: subscriber full or gone"
            );
        }
    }

    fn inbound_frame(self: Arc<Self>, from: NodeId, frame: Frame) {
        match frame {
            Frame::Raft(envelope) => self.deliver_local(envelope),
            Frame::Request {
                id,
                request: NodeRequest::Server { to, request },
            } => {
                let responder = if id == 0 {
                    Responder::Nobody
                } else {
                    Responder::Remote { node: from, id }
                };
                match self.route(to) {
                    Some(server) => {
                        if let Err(mpsc::error::TrySendError::Full(input)) =
                            server.mailbox.try_send(Input::Request(request, responder))
                        {
                            // Never block the connection's reader: wait elsewhere.
                            tokio::spawn(async move {
                                let _ = server.mailbox.send(input).await;
                            });
                        }
                    }
                    None if id != 0 => {
                        let node = Arc::clone(&self);
                        tokio::spawn(async move {
                            let error = CallError::NoSuchServer(node.resolve(to).await);
                            node.transport.send(
                                from,
                                Frame::Response {
                                    id,
                                    response: NodeResponse::Failed(error),
                                },
                            );
                        });
                    }
                    None => {}
                }
            }
            Frame::Request { id, request } => {
                tokio::spawn(async move {
                    let response = Arc::clone(&self).handle_node_request(request).await;
                    self.transport.send(from, Frame::Response { id, response });
                });
            }
            Frame::Events { caller, event } => self.deliver_event(CallerId(caller), event),
            // The transport handles these itself.
            Frame::Ping | Frame::Response { .. } => {}
        }
    }

    fn liveness(self: Arc<Self>, node: NodeId, up: bool) {
        let servers: Vec<Arc<ServerShared>> = read(&self.routes).values().cloned().collect();
        tokio::spawn(async move {
            for server in servers {
                let _ = server.mailbox.send(Input::Liveness { node, up }).await;
            }
        });
    }

    async fn handle_node_request(self: Arc<Self>, request: NodeRequest) -> NodeResponse {
        match request {
            NodeRequest::Server { to, request } => {
                let deadline =
                    Instant::now() + Duration::from_millis(self.config.default_timeout_ms);
                match self.call(to, request, deadline).await {
                    Ok(response) => NodeResponse::Server(response),
                    Err(error) => NodeResponse::Failed(error),
                }
            }
            NodeRequest::StartServer { record } => match self.start_local(record) {
                Ok(()) => NodeResponse::Started,
                Err(error) => NodeResponse::StartFailed(error),
            },
            NodeRequest::RestartServer { name } => match self.restart_local(&name) {
                Ok(()) => NodeResponse::Started,
                Err(error) => NodeResponse::StartFailed(error),
            },
            NodeRequest::StopServer { name } => self.stop_local(&name, false).await,
            NodeRequest::ForceDeleteServer { name } => self.stop_local(&name, true).await,
            NodeRequest::WhoIs { id } => NodeResponse::Name(self.local_name(id)),
            NodeRequest::Overview => NodeResponse::Overview(Box::new(self.overview().await)),
        }
    }

    fn factory(&self, kind: &str) -> Result<Arc<dyn MachineFactory>, StartError> {
        read(&self.machines)
            .get(kind)
            .cloned()
            .ok_or_else(|| StartError::NameNotRegistered(kind.to_string()))
    }

    /// Refuses a name whose id is taken by another name on this node.
    fn check_collision(&self, server: &ServerRef) -> Result<(), StartError> {
        let id = server.id();
        let existing = self
            .route(id)
            .map(|s| s.record.server.clone())
            .or_else(|| self.stored_record(id).ok().map(|r| r.server));
        match existing {
            Some(other) if other.name != server.name => Err(StartError::NameCollision {
                name: server.name.to_string(),
                existing: other.name.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn start_local(self: &Arc<Self>, record: ServerRecord) -> Result<(), StartError> {
        check_name(&record.server.name)?;
        check_name(&record.cluster)?;
        let id = record.server.id();
        if record.server.node != self.config.node {
            return Err(StartError::NotFound(record.server));
        }
        let factory = self.factory(&record.machine)?;
        self.check_collision(&record.server)?;
        if self.route(id).is_some() {
            return Err(StartError::AlreadyRunning(record.server));
        }
        if self.log.contains(id) {
            return Err(StartError::AlreadyExists(record.server));
        }
        let initial = if record.members.contains(&record.server) {
            Configuration::voters(record.members.iter().map(ServerRef::id))
        } else {
            // A new member of a running cluster: it learns the
            // configuration from the leader that adds it.
            Configuration::default()
        };
        self.log
            .create_server(id, initial, encode_record(&record)?)?;
        let persisted = self.log.recover(id)?;
        for member in &record.members {
            self.directory_insert(member.clone());
        }
        self.directory_insert(record.server.clone());
        factory.spawn(self, record, persisted)?;
        Ok(())
    }

    fn restart_local(self: &Arc<Self>, name: &str) -> Result<(), StartError> {
        let server = ServerRef::new(name, self.config.node);
        let id = server_id(self.config.node, name);
        if self.route(id).is_some() {
            return Err(StartError::AlreadyRunning(server));
        }
        if !self.log.contains(id) {
            return Err(StartError::NotFound(server));
        }
        let record = self.stored_record(id)?;
        if record.server.name != server.name {
            return Err(StartError::NotFound(server));
        }
        let factory = self.factory(&record.machine)?;
        let persisted = self.log.recover(id)?;
        factory.spawn(self, record, persisted)?;
        Ok(())
    }

    async fn stop_local(&self, name: &str, delete: bool) -> NodeResponse {
        let server = ServerRef::new(name, self.config.node);
        let id = server.id();
        if let Some(shared) = self.route(id) {
            let (done, wait) = oneshot::channel();
            if shared
                .mailbox
                .send(Input::Stop { delete, done })
                .await
                .is_ok()
            {
                let _ = wait.await;
            }
            return NodeResponse::Done;
        }
        if delete && self.log.contains(id) {
            return match self.log.delete_server(id) {
                Ok(()) => NodeResponse::Done,
                Err(error) => NodeResponse::Failed(error.into()),
            };
        }
        if delete {
            // ra: deleting what is not there is fine.
            return NodeResponse::Done;
        }
        NodeResponse::Failed(CallError::NoSuchServer(server))
    }

    async fn overview(&self) -> Overview {
        let servers: Vec<Arc<ServerShared>> = read(&self.routes).values().cloned().collect();
        let mut statuses: Vec<ServerStatus> = Vec::with_capacity(servers.len());
        let deadline = Instant::now() + self.short_timeout();
        for server in servers {
            if let Ok(ServerResponse::Status(status)) =
                self.call(server.id, ServerRequest::Status, deadline).await
            {
                statuses.push(*status);
            }
        }
        statuses.sort_by(|a, b| a.server.cmp(&b.server));
        Overview {
            node: self.config.node,
            servers: statuses,
            wal: self.log.stats().into(),
            transport: self.transport.stats(),
            // Peers added with add_peer too, not only the configured ones.
            peers: self.transport.peers(),
        }
    }
}

fn encode_record(record: &ServerRecord) -> Result<Bytes, StartError> {
    let mut bytes = vec![SERVER_RECORD_VERSION];
    let body = postcard::to_allocvec(record).map_err(|e| StartError::BadRecord(e.to_string()))?;
    bytes.extend_from_slice(&body);
    Ok(Bytes::from(bytes))
}

fn decode_record(bytes: &[u8]) -> Result<ServerRecord, StartError> {
    match bytes.split_first() {
        Some((&SERVER_RECORD_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StartError::BadRecord(e.to_string()))
        }
        Some((version, _)) => Err(StartError::BadRecord(format!(
            "server record version {version} is not supported (this build reads {SERVER_RECORD_VERSION})"
        ))),
        None => Err(StartError::BadRecord("empty server record".into())),
    }
}

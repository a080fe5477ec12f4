//! [`EmbeddedKv`]: the chorus-kv machine in a Raft cluster hosted by a
//! chorus-node [`Node`] in this process.
//!
//! Writes are commands through Raft ([`Node::process_command_timeout`]),
//! reads are consistent queries (ReadIndex on the leader), a read-only
//! txn is a query. A watch is a task that pulls the machine's event
//! history ([`KvMachine::events`]) whenever the server reports progress
//! ([`Node::progress`]): the same way on leaders and followers, with
//! nothing registered in replicated state.
//!
//! The helpers that host the machine ([`register_kv_machine`],
//! [`open_kv_server`]) and pull its events ([`pull_events`]) are the
//! ones `chorus serve` uses for its own key-value server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_kv::{
    Command, DeleteRangeRequest, DeleteRangeResponse, EventBatch, KeyRange, KvConfig, KvError,
    KvMachine, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, Query, QueryResponse, RangeRequest, RangeResponse, Response,
    TxnRequest, TxnResponse,
};
use chorus_node::{CallError, Node, NodeConfig, ServerRef, StartError};
use chorus_raft::NodeId;
use tokio::sync::mpsc;

use crate::{BackendError, KvBackend, Watch, WatchRequest, WATCH_BUFFER_BATCHES};

/// The machine kind the key-value servers register under.
pub const KV_MACHINE: &str = "chorus-kv";
/// The Raft cluster of an embedded store's key-value server (and of
/// `chorus serve`'s).
pub const KV_CLUSTER: &str = "chorus-kv";
/// The key-value server's name on every node.
pub const KV_SERVER: &str = "kv";
/// Most events one pull takes per watcher: bounds the time the machine
/// is borrowed and the size of one delivery.
const EVENTS_PER_PULL: usize = 1_000;

/// Registers the chorus-kv machine on `node` under [`KV_MACHINE`]; its
/// configuration travels as postcard bytes of a [`KvConfig`].
pub fn register_kv_machine(node: &Node) {
    node.register_machine(KV_MACHINE, |bytes: &[u8]| {
        let kv_config: KvConfig =
            postcard::from_bytes(bytes).map_err(|error| format!("kv machine config: {error}"))?;
        match kv_config.problem() {
            Some(problem) => Err(problem.to_string()),
            None => Ok(KvMachine::new(kv_config)),
        }
    });
}

/// What [`open_kv_server`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvServerOpened {
    /// The server existed and was restarted from its log.
    Restarted,
    /// The server was created.
    Created,
}

/// Restarts `local` (a key-value server of cluster `cluster` on `node`,
/// whose machine must be registered) or, if the node has never hosted
/// it, creates it with `kv_config` and the initial members `initial`
/// (empty: a member that waits to be added to an existing cluster).
pub async fn open_kv_server(
    node: &Node,
    cluster: &str,
    local: &ServerRef,
    kv_config: &KvConfig,
    initial: &[ServerRef],
) -> Result<KvServerOpened, StartError> {
    match node.restart_server(local).await {
        Ok(()) => Ok(KvServerOpened::Restarted),
        Err(StartError::NotFound(_)) => {
            let machine_config = postcard::to_allocvec(kv_config)
                .map_err(|error| StartError::MachineInit(format!("kv machine config: {error}")))?;
            node.start_server(
                cluster,
                local,
                KV_MACHINE,
                Bytes::from(machine_config),
                initial,
            )
            .await?;
            Ok(KvServerOpened::Created)
        }
        Err(error) => Err(error),
    }
}

/// One visit to the machine for several watchers.
#[derive(Debug)]
pub struct Pulled<K> {
    /// The store's revision when the events were taken.
    pub revision: i64,
    /// The store's compacted revision then.
    pub compact_revision: i64,
    /// For each watcher, in the order asked: its next events (empty when
    /// it is caught up), or `Compacted` when it asked for history the
    /// store no longer has.
    pub batches: Vec<(K, Result<EventBatch, KvError>)>,
}

/// Takes, in one visit to the machine of `server` (hosted here), the
/// events each watcher `(key, range, from)` is missing from revision
/// `from` on, at most [`EVENTS_PER_PULL`] each.
pub async fn pull_events<K: Send + 'static>(
    node: &Node,
    server: &ServerRef,
    wants: Vec<(K, KeyRange, i64)>,
) -> Result<Pulled<K>, CallError> {
    let reply = node
        .local_query_with::<KvMachine, _, _>(server, move |machine| {
            let revision = machine.revision();
            let batches = wants
                .into_iter()
                .map(|(key, range, from)| {
                    let batch = if from > revision {
                        Ok(EventBatch {
                            events: Vec::new(),
                            next_revision: from,
                        })
                    } else {
                        machine.events(from, &range, EVENTS_PER_PULL)
                    };
                    (key, batch)
                })
                .collect();
            Pulled {
                revision,
                compact_revision: machine.compact_revision(),
                batches,
            }
        })
        .await?;
    Ok(reply.reply)
}

/// Settings of a store of its own ([`EmbeddedKv::open_with`]).
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Where the node keeps its write-ahead log and snapshots.
    pub data_dir: PathBuf,
    /// How long a request may wait for its answer (a leader, commit and
    /// apply); past it the outcome is unknown.
    pub request_timeout_ms: u64,
    /// The machine's settings, fixed when the store is created.
    pub kv: KvConfig,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            request_timeout_ms: 5_000,
            kv: KvConfig::default(),
        }
    }
}

/// A key-value store in this process. See the module docs.
#[derive(Clone)]
pub struct EmbeddedKv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKv")
            .field("node", &self.inner.node.id())
            .field("server", &self.inner.server)
            .finish()
    }
}

struct Inner {
    node: Node,
    /// The key-value server on this node: calls go here and follow its
    /// redirects to the leader.
    server: ServerRef,
    timeout: Duration,
    /// Whether this handle started the node (and so shuts it down).
    owns_node: bool,
}

impl EmbeddedKv {
    /// A single-node store of its own in `data_dir` (created if missing,
    /// recovered if it exists).
    pub async fn open(data_dir: impl Into<PathBuf>) -> Result<EmbeddedKv, BackendError> {
        EmbeddedKv::open_with(EmbeddedConfig::new(data_dir)).await
    }

    /// [`EmbeddedKv::open`] with settings.
    pub async fn open_with(config: EmbeddedConfig) -> Result<EmbeddedKv, BackendError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| {
            BackendError::Failed(format!(
                "creating data dir {}: {error}",
                config.data_dir.display()
            ))
        })?;
        // One node, no peers, no listener: nothing else can reach it.
        let mut node_config = NodeConfig::new(NodeId(1), &config.data_dir);
        node_config.default_timeout_ms = config.request_timeout_ms;
        // A single voter elects itself as soon as its timer fires; keep
        // the wait before the first request short.
        node_config.election_timeout_ms = 150;
        node_config.heartbeat_interval_ms = 50;
        let node = Node::start(node_config)
            .await
            .map_err(|error| BackendError::Failed(error.to_string()))?;
        register_kv_machine(&node);
        let server = ServerRef::new(KV_SERVER, node.id());
        if let Err(error) = open_kv_server(
            &node,
            KV_CLUSTER,
            &server,
            &config.kv,
            std::slice::from_ref(&server),
        )
        .await
        {
            // Close the log before reporting: the caller may retry.
            let _ = node.shutdown().await;
            return Err(BackendError::Failed(error.to_string()));
        }
        Ok(EmbeddedKv {
            inner: Arc::new(Inner {
                node,
                server,
                timeout: Duration::from_millis(config.request_timeout_ms),
                owns_node: true,
            }),
        })
    }

    /// A handle on the key-value server `server` that `node` already
    /// hosts (a `chorus serve` member's): requests go through it to its
    /// cluster's leader. [`EmbeddedKv::shutdown`] leaves the node alone.
    pub fn attach(node: Node, server: ServerRef, request_timeout: Duration) -> EmbeddedKv {
        EmbeddedKv {
            inner: Arc::new(Inner {
                node,
                server,
                timeout: request_timeout,
                owns_node: false,
            }),
        }
    }

    /// The node the store runs on.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Stops the node (if [`EmbeddedKv::open`] started it): every server
    /// stops and the write-ahead log is flushed and closed. Calls on any
    /// handle fail afterwards.
    pub async fn shutdown(&self) -> Result<(), BackendError> {
        if self.inner.owns_node {
            self.inner
                .node
                .shutdown()
                .await
                .map_err(|error| BackendError::Failed(error.to_string()))?;
        }
        Ok(())
    }

    async fn command(&self, command: Command) -> Result<Response, BackendError> {
        let reply = self
            .inner
            .node
            .process_command_timeout::<KvMachine>(
                std::slice::from_ref(&self.inner.server),
                command,
                self.inner.timeout,
            )
            .await?;
        Ok(reply.reply?)
    }

    async fn query(&self, query: Query) -> Result<QueryResponse, BackendError> {
        let reply = self
            .inner
            .node
            .consistent_query::<KvMachine>(std::slice::from_ref(&self.inner.server), query)
            .await?;
        Ok(reply.reply?)
    }
}

fn unexpected(what: &str) -> BackendError {
    BackendError::Failed(format!(
        "the kv machine answered {what} with the wrong kind of response"
    ))
}

impl KvBackend for EmbeddedKv {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, BackendError> {
        match self.query(Query::Range(request)).await? {
            QueryResponse::Range(response) => Ok(response),
            _ => Err(unexpected("a range")),
        }
    }

    async fn put(&self, request: PutRequest) -> Result<PutResponse, BackendError> {
        match self.command(Command::Put(request)).await? {
            Response::Put(response) => Ok(response),
            _ => Err(unexpected("a put")),
        }
    }

    async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, BackendError> {
        match self.command(Command::DeleteRange(request)).await? {
            Response::DeleteRange(response) => Ok(response),
            _ => Err(unexpected("a delete")),
        }
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, BackendError> {
        // A txn that only reads needs no log entry (and takes no revision).
        let response = if request.is_read_only() {
            match self.query(Query::Txn(request)).await? {
                QueryResponse::Txn(response) => Some(response),
                _ => None,
            }
        } else {
            match self.command(Command::Txn(request)).await? {
                Response::Txn(response) => Some(response),
                _ => None,
            }
        };
        response.ok_or_else(|| unexpected("a txn"))
    }

    async fn lease_grant(&self, ttl_s: i64) -> Result<LeaseGrantResponse, BackendError> {
        let request = LeaseGrantRequest { ttl: ttl_s, id: 0 };
        match self.command(Command::LeaseGrant(request)).await? {
            Response::LeaseGrant(response) => Ok(response),
            _ => Err(unexpected("a lease grant")),
        }
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), BackendError> {
        match self
            .command(Command::LeaseRevoke(LeaseRevokeRequest { id }))
            .await?
        {
            Response::LeaseRevoke(_) => Ok(()),
            _ => Err(unexpected("a lease revoke")),
        }
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, BackendError> {
        match self
            .command(Command::LeaseKeepAlive(LeaseKeepAliveRequest { id }))
            .await?
        {
            Response::LeaseKeepAlive(response) => Ok(response),
            _ => Err(unexpected("a lease keep-alive")),
        }
    }

    async fn lease_time_to_live(&self, id: i64) -> Result<LeaseTimeToLiveResponse, BackendError> {
        // The remaining time is counted down on this node's clock, the
        // clock the node gives its Raft cores.
        let query = Query::LeaseTimeToLive {
            request: LeaseTimeToLiveRequest { id, keys: false },
            now_ms: self.inner.node.now_ms(),
        };
        match self.query(query).await? {
            QueryResponse::LeaseTimeToLive(response) => Ok(response),
            _ => Err(unexpected("a lease time-to-live")),
        }
    }

    async fn watch(&self, request: WatchRequest) -> Result<Watch, BackendError> {
        let node = self.inner.node.clone();
        let server = self.inner.server.clone();
        let mut progress = node.progress(&server)?;
        let range = KeyRange::new(request.key, request.range_end);
        let from = if request.start_revision > 0 {
            request.start_revision
        } else {
            // Changes after now: one past the revision a linearizable read
            // sees.
            let head = self
                .range(RangeRequest {
                    key: Bytes::from_static(b"\0"),
                    count_only: true,
                    ..Default::default()
                })
                .await?;
            head.header.revision + 1
        };
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER_BATCHES);
        let prev_kv = request.prev_kv;
        tokio::spawn(async move {
            let mut next = from;
            loop {
                let pulled =
                    match pull_events(&node, &server, vec![((), range.clone(), next)]).await {
                        Ok(pulled) => pulled,
                        Err(error) => {
                            let _ = sender.send(Err(error.into())).await;
                            return;
                        }
                    };
                let mut caught_up = true;
                for ((), batch) in pulled.batches {
                    match batch {
                        Ok(batch) => {
                            caught_up = batch.next_revision > pulled.revision;
                            next = batch.next_revision;
                            if batch.events.is_empty() {
                                continue;
                            }
                            let events = batch
                                .events
                                .into_iter()
                                .map(|mut event| {
                                    if !prev_kv {
                                        event.prev_kv = None;
                                    }
                                    event
                                })
                                .collect();
                            if sender.send(Ok(events)).await.is_err() {
                                return; // the watch was dropped
                            }
                        }
                        Err(error) => {
                            let _ = sender.send(Err(error.into())).await;
                            return;
                        }
                    }
                }
                if caught_up {
                    tokio::select! {
                        changed = progress.changed() => {
                            if changed.is_err() {
                                // The server stopped.
                                let _ = sender.send(Err(BackendError::Closed)).await;
                                return;
                            }
                        }
                        () = sender.closed() => return,
                    }
                }
            }
        });
        Ok(Watch::new(receiver))
    }
}

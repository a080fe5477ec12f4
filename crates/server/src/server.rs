//! [`Server`]: a chorus member serving etcd's API.
//!
//! Starting: open the node (its log recovers), restart this member's
//! key-value server, or create it (`new`: as one of the initial members;
//! `existing`: as a member that waits for the cluster to add it), then
//! serve gRPC and HTTP on every client URL. In the background the member
//! publishes its name and URLs in the member directory, learns the peer
//! addresses of members added later, and counts leader changes.
//!
//! Stopping ([`Server::shutdown`], on SIGTERM or Ctrl-C in the binary):
//! stop accepting, let requests in progress finish (streams end), stop
//! every Raft server and flush and close the write-ahead log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use chorus_backend::{open_kv_server, KvServerOpened};
use chorus_kv::{Command, KvConfig, KvMachine, MemberInfo, Query, QueryResponse};
use chorus_node::{Node, NodeConfig, ServerRef};
use chorus_raft::NodeId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::admin::AdminService;
use crate::backend::{Backend, KV_CLUSTER, KV_SERVER};
use crate::cluster::{ClusterService, MaintenanceService};
use crate::config::{parse_url, ClusterState, ServeConfig};
use crate::error::ServeError;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::metrics::Metrics;
use crate::pb::admin::admin_server::AdminServer;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::watch::WatchService;

/// gRPC framing on top of the largest request (etcd's allowance).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// How often the background task retries publishing this member.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);
/// How long the health check's read may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// etcd's default watch progress notification interval.
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// A running chorus member.
pub struct Server {
    node: Node,
    backend: Arc<Backend>,
    client_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    background: JoinHandle<()>,
}

impl Server {
    /// Starts a member as `config` says (see the module docs).
    pub async fn start(config: ServeConfig) -> Result<Server, ServeError> {
        Server::start_with(config, PROGRESS_NOTIFY_INTERVAL).await
    }

    /// [`Server::start`] with another watch progress notification interval
    /// (tests).
    pub async fn start_with(
        config: ServeConfig,
        progress_interval: Duration,
    ) -> Result<Server, ServeError> {
        config.validate()?;
        let members = config.initial_members()?;
        let me = config.member_id();
        let Some(entry) = members.iter().find(|m| m.name == config.name) else {
            return Err(ServeError::Config(
                "this member is not in initial-cluster".into(),
            ));
        };
        if entry.id != me {
            return Err(ServeError::Config(format!(
                "initial-cluster gives {:?} the peer URLs {:?}, but initial-advertise-peer-urls is {:?}",
                config.name, entry.peer_urls, config.initial_advertise_peer_urls
            )));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::Io {
            what: format!("creating data dir {}", config.data_dir.display()),
            source,
        })?;
        let mut node_config = NodeConfig::new(me, &config.data_dir);
        node_config.cluster_token = chorus_node::cluster_id(&config.initial_cluster_token).0;
        node_config.listen = Some(parse_url(&config.listen_peer_urls[0])?);
        for member in members.iter().filter(|m| m.id != me) {
            node_config
                .peers
                .insert(member.id, parse_url(&member.peer_urls[0])?);
        }
        node_config.election_timeout_ms = config.election_timeout;
        node_config.heartbeat_interval_ms = config.heartbeat_interval;
        // etcd's request timeout: 5 s plus two election timeouts.
        node_config.default_timeout_ms = 5_000 + 2 * config.election_timeout;
        let timeout = Duration::from_millis(node_config.default_timeout_ms);
        let node = Node::start(node_config).await?;
        chorus_backend::register_kv_machine(&node);
        let local = ServerRef::new(KV_SERVER, me);
        let kv_config = KvConfig {
            release_cursor_every_entries: config.snapshot_count,
            txn_ops_max: config.max_txn_ops,
            ..KvConfig::default()
        };
        let initial: Vec<ServerRef> = match config.initial_cluster_state {
            ClusterState::New => members
                .iter()
                .map(|m| ServerRef::new(KV_SERVER, m.id))
                .collect(),
            ClusterState::Existing => Vec::new(),
        };
        match open_kv_server(&node, KV_CLUSTER, &local, &kv_config, &initial).await? {
            KvServerOpened::Restarted => {
                tracing::info!(member = %format!("{:x}", me.0), "restarted from {}", config.data_dir.display())
            }
            KvServerOpened::Created => {
                tracing::info!(member = %format!("{:x}", me.0), state = ?config.initial_cluster_state, "created a new member");
            }
        }
        let progress = node.progress(&local)?;
        let (stop, stopping) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let backend = Arc::new(Backend::new(
            node.clone(),
            local,
            chorus_node::cluster_id(&config.initial_cluster_token).0,
            progress,
            config.max_request_bytes,
            config.max_concurrent_requests,
            timeout,
            metrics,
            stopping,
            config.sessions(),
        ));
        let mut listeners = Vec::new();
        let mut client_addrs = Vec::new();
        for url in &config.listen_client_urls {
            let listener = bind(url).await?;
            client_addrs.push(listener.local_addr().map_err(|source| ServeError::Io {
                what: format!("listening on {url}"),
                source,
            })?);
            listeners.push(tokio::spawn(serve_grpc(
                Arc::clone(&backend),
                config.clone(),
                listener,
                progress_interval,
            )));
        }
        for url in &config.listen_metrics_urls {
            let listener = bind(url).await?;
            let routes = tonic::service::Routes::from(http_routes(Arc::clone(&backend)));
            listeners.push(tokio::spawn(serve(Arc::clone(&backend), routes, listener)));
        }
        let background = tokio::spawn(background(Arc::clone(&backend), config.clone()));
        crate::sessions::start_cleaner(&backend, config.sessions_cleaner());
        tracing::info!(
            name = %config.name,
            member = %format!("{:x}", me.0),
            clients = ?client_addrs,
            "serving the etcd v3 API"
        );
        Ok(Server {
            node,
            backend,
            client_addrs,
            stop,
            listeners,
            background,
        })
    }

    /// This member's key-value store as a
    /// [`KvBackend`](chorus_backend::KvBackend), for what runs inside the
    /// server (durable servers, sessions): requests go through this
    /// member's key-value server to the leader, as gRPC requests do.
    pub fn kv(&self) -> chorus_backend::EmbeddedKv {
        chorus_backend::EmbeddedKv::attach(
            self.node.clone(),
            self.backend.local.clone(),
            self.backend.timeout,
        )
    }

    /// Where clients reach this member (the bound addresses: a port 0 in
    /// the configuration is resolved here).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// This member's id (etcd's member id; chorus's node id).
    pub fn member_id(&self) -> u64 {
        self.backend.member_id
    }

    /// The node hosting this member (for embedding: more Raft clusters
    /// can run on it).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Clean shutdown: stop accepting, end streams, let requests in
    /// progress finish, stop the Raft servers and close the log.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        for listener in self.listeners {
            match listener.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "client listener failed"),
                Err(error) => tracing::warn!(%error, "client listener task failed"),
            }
        }
        self.background.abort();
        self.node.shutdown().await?;
        Ok(())
    }
}

async fn bind(url: &str) -> Result<TcpListener, ServeError> {
    let address = parse_url(url)?;
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("listening on {url}"),
            source,
        })
}

/// gRPC and the HTTP endpoints on one client listener (as etcd serves
/// them), until the server stops.
async fn serve_grpc(
    backend: Arc<Backend>,
    config: ServeConfig,
    listener: TcpListener,
    progress_interval: Duration,
) -> Result<(), tonic::transport::Error> {
    let limit = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let routes = tonic::service::Routes::from(http_routes(Arc::clone(&backend)))
        .add_service(
            KvServer::new(KvService(Arc::clone(&backend))).max_decoding_message_size(limit),
        )
        .add_service(
            WatchServer::new(WatchService {
                backend: Arc::clone(&backend),
                progress_interval,
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            LeaseServer::new(LeaseService(Arc::clone(&backend))).max_decoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(ClusterService {
                backend: Arc::clone(&backend),
                token: config.initial_cluster_token.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService {
                backend: Arc::clone(&backend),
                data_dir: config.data_dir.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            AdminServer::new(AdminService(Arc::clone(&backend))).max_decoding_message_size(limit),
        )
        .add_service(crate::sessions::service(&backend, limit));
    serve(backend, routes, listener).await
}

/// Serves `routes` (gRPC over HTTP/2, and HTTP/1.1 for the plain HTTP
/// endpoints) on `listener` until the server stops.
async fn serve(
    backend: Arc<Backend>,
    routes: tonic::service::Routes,
    listener: TcpListener,
) -> Result<(), tonic::transport::Error> {
    // Small writes (a watch event, a unary reply) go out at once: with
    // Nagle's algorithm they wait for the client's delayed ACK (40 ms on
    // Linux). tonic sets TCP_NODELAY only on sockets it accepts itself.
    let incoming = TcpListenerStream::new(listener).map(|connection| {
        if let Ok(stream) = &connection {
            let _ = stream.set_nodelay(true);
        }
        connection
    });
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, backend.stopped())
        .await
}

/// `/health` (etcd's answer: `{"health":"true","reason":""}`, 503 when a
/// linearizable read fails) and `/metrics` (Prometheus text).
fn http_routes(backend: Arc<Backend>) -> axum::Router {
    let health_backend = Arc::clone(&backend);
    let sessions_routes = crate::sessions::routes(&backend);
    let durable_backend = Arc::clone(&backend);
    axum::Router::new()
        .route(
            "/health",
            get(move || {
                let backend = Arc::clone(&health_backend);
                async move { health(&backend).await }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let backend = Arc::clone(&backend);
                async move {
                    let progress = *backend.progress.borrow();
                    let text = backend.metrics.render(&progress, &backend.node.log_stats());
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .merge(sessions_routes)
        .merge(crate::durable::routes(&durable_backend))
}

async fn health(backend: &Backend) -> (axum::http::StatusCode, String) {
    let reason = if !backend.has_leader() {
        Some(crate::error::NO_LEADER.to_string())
    } else {
        let probe = Query::Range(chorus_kv::RangeRequest {
            key: Bytes::from_static(b"health"),
            count_only: true,
            ..Default::default()
        });
        match tokio::time::timeout(HEALTH_TIMEOUT, backend.read("Health", 0, probe, false)).await {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status.message().to_string()),
            Err(_) => Some(crate::error::TIMEOUT.to_string()),
        }
    };
    match reason {
        None => (
            axum::http::StatusCode::OK,
            "{\"health\":\"true\",\"reason\":\"\"}".into(),
        ),
        Some(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{{\"health\":\"false\",\"reason\":{reason:?}}}"),
        ),
    }
}

/// Publishes this member in the directory (until it is there as
/// configured), adds peers the directory names, counts leader changes.
async fn background(backend: Arc<Backend>, config: ServeConfig) {
    let me = MemberInfo {
        id: backend.member_id,
        name: config.name.clone(),
        peer_urls: config.initial_advertise_peer_urls.clone(),
        client_urls: config.advertise_client_urls.clone(),
    };
    let mut progress = backend.progress.clone();
    let mut leader = progress.borrow().leader;
    let mut published = false;
    let mut peers: BTreeMap<u64, SocketAddr> = BTreeMap::new();
    loop {
        let directory = match backend
            .node
            .local_query::<KvMachine>(&backend.local, Query::Members)
            .await
        {
            Ok(reply) => match reply.reply {
                Ok(QueryResponse::Members(members)) => members,
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        for member in directory.iter().filter(|m| m.id != me.id) {
            let Some(Ok(address)) = member.peer_urls.first().map(|url| parse_url(url)) else {
                continue;
            };
            if peers.insert(member.id, address) != Some(address) {
                backend.node.add_peer(NodeId(member.id), address);
            }
        }
        if !published && directory.contains(&me) {
            published = true;
        }
        if !published && backend.has_leader() {
            match backend
                .write("MemberPut", 0, Command::MemberPut(me.clone()))
                .await
            {
                Ok(_) => published = true,
                Err(status) => {
                    tracing::debug!(%status, "publishing this member failed; will retry")
                }
            }
        }
        let wait = async {
            if published {
                progress.changed().await
            } else {
                // Not yet published: try again as soon as something
                // changes (a leader is elected), or after a pause.
                match tokio::time::timeout(PUBLISH_RETRY, progress.changed()).await {
                    Ok(changed) => changed,
                    Err(_) => Ok(()),
                }
            }
        };
        if wait.await.is_err() {
            return;
        }
        let now = progress.borrow_and_update().leader;
        if now != leader && now.is_some() {
            backend.metrics.leader_changed();
        }
        leader = now;
        // Directory changes are rare; look again at most once a second.
        if published {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

//! What every service shares: the node, this member's key-value server,
//! the request limits, and the two paths into the machine (a write is a
//! command through Raft; a read is a query, linearizable by default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_backend::EmbeddedKv;
use chorus_kv::{Command, KvMachine, Query, QueryResponse, Reply, Response};
use chorus_node::{CallError, Node, ServerRef};
use chorus_raft::ServerProgress;
use chorus_sessions::{Sessions, SessionsConfig};
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tonic::Status;

use crate::error::{call_status, kv_status, REQUEST_TOO_LARGE, STOPPED, TOO_MANY_REQUESTS};
use crate::metrics::Metrics;
use crate::pb::etcdserverpb::ResponseHeader;

pub use chorus_backend::{KV_CLUSTER, KV_MACHINE, KV_SERVER};

/// etcd refuses new requests while the applied index trails the commit
/// index by more than this (its `maxGapBetweenApplyAndCommitIndex`).
const APPLY_LAG_MAX: u64 = 5_000;

pub(crate) struct Backend {
    pub(crate) node: Node,
    /// This member's key-value server: calls go here first and follow
    /// its redirects to the leader, so any member serves any request.
    pub(crate) local: ServerRef,
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) progress: watch::Receiver<ServerProgress>,
    pub(crate) max_request_bytes: usize,
    pub(crate) timeout: Duration,
    inflight: Semaphore,
    pub(crate) metrics: Arc<Metrics>,
    /// Flips to true when the server starts shutting down: streams end.
    pub(crate) stopping: watch::Receiver<bool>,
    /// The sessions namespace: one handle (and cache) for the gRPC
    /// service, the HTTP routes and the cleaner.
    pub(crate) sessions: Sessions<EmbeddedKv>,
}

impl Backend {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node: Node,
        local: ServerRef,
        cluster_id: u64,
        progress: watch::Receiver<ServerProgress>,
        max_request_bytes: usize,
        max_concurrent_requests: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
        stopping: watch::Receiver<bool>,
        sessions: SessionsConfig,
    ) -> Backend {
        let sessions = crate::sessions::namespace(
            EmbeddedKv::attach(node.clone(), local.clone(), timeout),
            sessions,
        );
        Backend {
            sessions,
            member_id: local.node.0,
            node,
            local,
            cluster_id,
            progress,
            max_request_bytes,
            timeout,
            inflight: Semaphore::new(max_concurrent_requests),
            metrics,
            stopping,
        }
    }

    /// The header of a response answered at `revision`.
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.progress.borrow().term,
        }
    }

    /// etcd's admission checks: request size, requests in progress, and
    /// how far applying trails committing.
    pub(crate) fn admit(&self, request_bytes: usize) -> Result<SemaphorePermit<'_>, Status> {
        if request_bytes > self.max_request_bytes {
            return Err(Status::invalid_argument(REQUEST_TOO_LARGE));
        }
        if *self.stopping.borrow() {
            return Err(Status::unavailable(STOPPED));
        }
        let progress = *self.progress.borrow();
        if progress.commit_index.saturating_sub(progress.applied_index) > APPLY_LAG_MAX {
            return Err(Status::resource_exhausted(TOO_MANY_REQUESTS));
        }
        self.inflight
            .try_acquire()
            .map_err(|_| Status::resource_exhausted(TOO_MANY_REQUESTS))
    }

    /// Runs a write through Raft and returns the machine's answer, its
    /// refusals as etcd's statuses.
    pub(crate) async fn write(
        &self,
        method: &'static str,
        request_bytes: usize,
        command: Command,
    ) -> Result<Response, Status> {
        self.write_via(
            method,
            request_bytes,
            std::slice::from_ref(&self.local),
            command,
        )
        .await
    }

    /// [`Backend::write`] through other members' servers (tried in
    /// order): for when this member's own server may no longer be in the
    /// cluster (it was just removed).
    pub(crate) async fn write_via(
        &self,
        method: &'static str,
        request_bytes: usize,
        servers: &[ServerRef],
        command: Command,
    ) -> Result<Response, Status> {
        self.command_via(method, request_bytes, servers, command)
            .await?
            .map_err(|error| kv_status(&error))
    }

    /// Runs a write through Raft: `Err` when it did not reach the
    /// machine (or its outcome is unknown), else the machine's reply.
    pub(crate) async fn command(
        &self,
        method: &'static str,
        request_bytes: usize,
        command: Command,
    ) -> Result<Reply, Status> {
        self.command_via(
            method,
            request_bytes,
            std::slice::from_ref(&self.local),
            command,
        )
        .await
    }

    async fn command_via(
        &self,
        method: &'static str,
        request_bytes: usize,
        servers: &[ServerRef],
        command: Command,
    ) -> Result<Reply, Status> {
        let started = Instant::now();
        let result = self.command_inner(request_bytes, servers, command).await;
        let outcome = match &result {
            Ok(Err(error)) => Err(kv_status(error)),
            Ok(Ok(_)) => Ok(()),
            Err(status) => Err(status.clone()),
        };
        self.metrics.observe(method, started, &outcome);
        result
    }

    async fn command_inner(
        &self,
        request_bytes: usize,
        servers: &[ServerRef],
        command: Command,
    ) -> Result<Reply, Status> {
        let _permit = self.admit(request_bytes)?;
        let reply = self
            .node
            .process_command_timeout::<KvMachine>(servers, command, self.timeout)
            .await
            .map_err(|error| self.call_failed(error))?;
        Ok(reply.reply)
    }

    /// Answers a read: on the leader after a ReadIndex round
    /// (linearizable), or from this member's state (`serializable`).
    pub(crate) async fn read(
        &self,
        method: &'static str,
        request_bytes: usize,
        query: Query,
        serializable: bool,
    ) -> Result<QueryResponse, Status> {
        let started = Instant::now();
        let servers = std::slice::from_ref(&self.local);
        let result = self
            .read_inner(request_bytes, servers, query, serializable)
            .await;
        self.metrics.observe(method, started, &result);
        result
    }

    /// A linearizable read through other members' servers (tried in
    /// order); see [`Backend::write_via`].
    pub(crate) async fn read_via(
        &self,
        method: &'static str,
        servers: &[ServerRef],
        query: Query,
    ) -> Result<QueryResponse, Status> {
        let started = Instant::now();
        let result = self.read_inner(0, servers, query, false).await;
        self.metrics.observe(method, started, &result);
        result
    }

    async fn read_inner(
        &self,
        request_bytes: usize,
        servers: &[ServerRef],
        query: Query,
        serializable: bool,
    ) -> Result<QueryResponse, Status> {
        let _permit = self.admit(request_bytes)?;
        let reply = if serializable {
            self.node.local_query::<KvMachine>(&self.local, query).await
        } else {
            self.node
                .consistent_query::<KvMachine>(servers, query)
                .await
        }
        .map_err(|error| self.call_failed(error))?;
        reply.reply.map_err(|error| kv_status(&error))
    }

    pub(crate) fn call_failed(&self, error: CallError) -> Status {
        tracing::debug!(%error, "request failed");
        call_status(&error)
    }

    /// Resolves when the server starts shutting down.
    pub(crate) async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        // The guard `wait_for` returns is dropped in this statement.
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// Whether this member knows a leader (for /health).
    pub(crate) fn has_leader(&self) -> bool {
        self.progress.borrow().leader.is_some()
    }
}

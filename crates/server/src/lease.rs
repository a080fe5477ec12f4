//! etcd's `Lease` service. Keep-alives are commands (chorus-kv's crate
//! docs, "Lease expiry"): a lease's remaining time survives a leader
//! change.

use std::pin::Pin;
use std::sync::Arc;

use chorus_kv::{
    Command, KvError, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, Query, QueryResponse, Response,
};
use futures_util::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response as Reply, Status, Streaming};

use crate::backend::Backend;
use crate::error::{kv_status, unexpected_answer};
use crate::pb::etcdserverpb as pb;

pub(crate) struct LeaseService(pub(crate) Arc<Backend>);

/// Most keep-alive answers queued for a slow client.
const KEEP_ALIVE_QUEUE: usize = 64;

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

impl LeaseService {
    /// One keep-alive: the renewed TTL, or 0 for a lease that does not
    /// exist (etcd answers so on the stream instead of failing it).
    async fn keep_alive(backend: &Backend, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let command = Command::LeaseKeepAlive(LeaseKeepAliveRequest { id });
        match backend.command("LeaseKeepAlive", 0, command).await? {
            Ok(Response::LeaseKeepAlive(response)) => Ok(pb::LeaseKeepAliveResponse {
                header: Some(backend.header(response.header.revision)),
                id,
                ttl: response.ttl,
            }),
            Ok(_) => Err(unexpected_answer()),
            Err(KvError::LeaseNotFound) => Ok(pb::LeaseKeepAliveResponse {
                header: Some(backend.header(0)),
                id,
                ttl: 0,
            }),
            Err(error) => Err(kv_status(&error)),
        }
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Reply<pb::LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let command = Command::LeaseGrant(LeaseGrantRequest {
            ttl: request.ttl,
            id: request.id,
        });
        match self.0.write("LeaseGrant", size, command).await? {
            Response::LeaseGrant(response) => Ok(Reply::new(pb::LeaseGrantResponse {
                header: Some(self.0.header(response.header.revision)),
                id: response.id,
                ttl: response.ttl,
                error: String::new(),
            })),
            _ => Err(unexpected_answer()),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Reply<pb::LeaseRevokeResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let command = Command::LeaseRevoke(LeaseRevokeRequest { id: request.id });
        match self.0.write("LeaseRevoke", size, command).await? {
            Response::LeaseRevoke(response) => Ok(Reply::new(pb::LeaseRevokeResponse {
                header: Some(self.0.header(response.header.revision)),
            })),
            _ => Err(unexpected_answer()),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Reply<KeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let backend = Arc::clone(&self.0);
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.next() => next,
                    _ = backend.stopped() => None,
                };
                let Some(Ok(request)) = next else { return };
                let answer = LeaseService::keep_alive(&backend, request.id).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Reply::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Reply<pb::LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let query = Query::LeaseTimeToLive {
            request: LeaseTimeToLiveRequest {
                id: request.id,
                keys: request.keys,
            },
            now_ms: self.0.node.now_ms(),
        };
        match self.0.read("LeaseTimeToLive", size, query, false).await? {
            QueryResponse::LeaseTimeToLive(response) => {
                Ok(Reply::new(pb::LeaseTimeToLiveResponse {
                    header: Some(self.0.header(response.header.revision)),
                    id: response.id,
                    ttl: response.ttl,
                    granted_ttl: response.granted_ttl,
                    keys: response.keys,
                }))
            }
            _ => Err(unexpected_answer()),
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Reply<pb::LeaseLeasesResponse>, Status> {
        match self
            .0
            .read("LeaseLeases", 0, Query::LeaseLeases, false)
            .await?
        {
            QueryResponse::LeaseLeases(response) => Ok(Reply::new(pb::LeaseLeasesResponse {
                header: Some(self.0.header(response.header.revision)),
                leases: response
                    .leases
                    .into_iter()
                    .map(|id| pb::LeaseStatus { id })
                    .collect(),
            })),
            _ => Err(unexpected_answer()),
        }
    }
}

//! chorus's `Admin` service: ra-style operations on the Raft servers this
//! node hosts.

use std::sync::Arc;

use chorus_node::{ServerRef, TransferResult};
use chorus_raft::{Membership, NodeId, Role};
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::pb::admin as pb;

pub(crate) struct AdminService(pub(crate) Arc<Backend>);

fn server_ref(id: Option<pb::ServerId>) -> Result<ServerRef, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("chorus: a server is required"))?;
    if id.name.is_empty() {
        return Err(Status::invalid_argument(
            "chorus: a server name is required",
        ));
    }
    Ok(ServerRef::new(id.name, NodeId(id.node)))
}

fn server_id(server: &ServerRef) -> pb::ServerId {
    pb::ServerId {
        name: server.name.to_string(),
        node: server.node.0,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre_candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn overview(
        &self,
        _request: Request<pb::OverviewRequest>,
    ) -> Result<Response<pb::OverviewResponse>, Status> {
        let overview = self.0.node.overview().await;
        Ok(Response::new(pb::OverviewResponse {
            node: overview.node.0,
            servers: overview
                .servers
                .iter()
                .map(|s| pb::ServerStatus {
                    server: Some(server_id(&s.server)),
                    cluster: s.cluster.clone(),
                    machine: s.machine.clone(),
                    role: role_name(s.role).into(),
                    term: s.term,
                    leader_node: s.leader.map_or(0, |l| chorus_node::node_of(l).0),
                    commit_index: s.commit_index,
                    applied_index: s.applied_index,
                    last_index: s.last_index,
                    snapshot_index: s.snapshot_index,
                    quiesced: s.quiesced,
                })
                .collect(),
            peers: overview
                .peers
                .iter()
                .map(|(node, up)| pb::Peer {
                    node: node.0,
                    up: *up,
                })
                .collect(),
            wal_appends: overview.wal.appends,
            wal_syncs: overview.wal.syncs,
            wal_bytes_written: overview.wal.bytes_written,
        }))
    }

    async fn trigger_election(
        &self,
        request: Request<pb::ServerRequest>,
    ) -> Result<Response<pb::ServerReply>, Status> {
        let server = server_ref(request.into_inner().server)?;
        self.0
            .node
            .trigger_election(&server)
            .await
            .map_err(|error| self.0.call_failed(error))?;
        Ok(Response::new(pb::ServerReply::default()))
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::ServerReply>, Status> {
        let request = request.into_inner();
        let server = server_ref(request.server)?;
        let target = server_ref(request.target)?;
        let result = self
            .0
            .node
            .transfer_leadership(&server, &target)
            .await
            .map_err(|error| self.0.call_failed(error))?;
        Ok(Response::new(pb::ServerReply {
            already_leader: result == TransferResult::AlreadyLeader,
        }))
    }

    async fn members(
        &self,
        request: Request<pb::ServerRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let server = server_ref(request.into_inner().server)?;
        let members = self
            .0
            .node
            .members(&server)
            .await
            .map_err(|error| self.0.call_failed(error))?;
        Ok(Response::new(pb::MembersResponse {
            members: members
                .members
                .iter()
                .map(|(member, membership)| pb::Member {
                    server: Some(server_id(member)),
                    membership: match membership {
                        Membership::Voter => "voter",
                        Membership::NonVoter => "non_voter",
                        Membership::Promotable { .. } => "promotable",
                    }
                    .into(),
                    leader: members.leader.as_ref() == Some(member),
                })
                .collect(),
        }))
    }
}

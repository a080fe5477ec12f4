//! etcd's `Cluster` and `Maintenance` services.
//!
//! Members are chorus nodes; the member id is the node id. Raft's
//! configuration of the key-value cluster says who is a member and who
//! votes (a learner is a non-voter); the member directory in the
//! key-value machine ([`chorus_kv::MemberInfo`]) holds names and URLs.

use std::sync::Arc;
use std::time::Duration;

use chorus_kv::{Command, KvMachine, MemberInfo, Query, QueryResponse, Response};
use chorus_node::{CallError, Refusal, ServerRef};
use chorus_raft::{Membership, NodeId};
use tonic::{Request, Response as Reply, Status};

use crate::backend::{Backend, KV_SERVER};
use crate::config::{member_id, parse_url};
use crate::error::{
    unexpected_answer, BAD_LEADER_TRANSFEREE, MEMBER_EXISTS, MEMBER_NOT_FOUND, MEMBER_NOT_LEARNER,
    PEER_URL_EXISTS,
};
use crate::pb::etcdserverpb as pb;

/// The etcd API version chorus speaks (reported by `Status`).
pub const ETCD_API_VERSION: &str = "3.5.0";
/// How often a promotion or removal is checked while waiting for it.
const PROMOTION_POLL: Duration = Duration::from_millis(50);
/// How long one look at the configuration may take while a removal
/// settles.
const REMOVAL_LOOK: Duration = Duration::from_millis(500);

pub(crate) struct ClusterService {
    pub(crate) backend: Arc<Backend>,
    pub(crate) token: String,
}

fn kv_server(id: u64) -> ServerRef {
    ServerRef::new(KV_SERVER, NodeId(id))
}

impl ClusterService {
    async fn directory(
        &self,
        servers: &[ServerRef],
        linearizable: bool,
    ) -> Result<Vec<MemberInfo>, Status> {
        let answer = if linearizable {
            self.backend
                .read_via("MemberList", servers, Query::Members)
                .await?
        } else {
            self.backend
                .read("MemberList", 0, Query::Members, true)
                .await?
        };
        match answer {
            QueryResponse::Members(members) => Ok(members),
            _ => Err(unexpected_answer()),
        }
    }

    /// Raft's members of the key-value cluster, with their directory
    /// entries, in id order.
    async fn members(&self, linearizable: bool) -> Result<Vec<pb::Member>, Status> {
        self.members_via(std::slice::from_ref(&self.backend.local), linearizable)
            .await
    }

    /// [`ClusterService::members`] asking `servers` (in order) rather
    /// than this member's own server.
    async fn members_via(
        &self,
        servers: &[ServerRef],
        linearizable: bool,
    ) -> Result<Vec<pb::Member>, Status> {
        let config = self
            .backend
            .node
            .members(servers)
            .await
            .map_err(|error| self.backend.call_failed(error))?;
        let directory = self.directory(servers, linearizable).await?;
        let mut members: Vec<pb::Member> = config
            .members
            .iter()
            .map(|(server, membership)| {
                let id = server.node.0;
                let info = directory.iter().find(|m| m.id == id);
                pb::Member {
                    id,
                    name: info.map(|m| m.name.clone()).unwrap_or_default(),
                    peer_ur_ls: info.map(|m| m.peer_urls.clone()).unwrap_or_default(),
                    client_ur_ls: info.map(|m| m.client_urls.clone()).unwrap_or_default(),
                    is_learner: !matches!(membership, Membership::Voter),
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Ok(members)
    }

    /// Waits until a leader other than `id` has a configuration without
    /// it. Each look is short: a server that knows no leader holds
    /// requests until it learns one, and a removed leader never learns
    /// the next.
    async fn wait_for_leader_without(
        &self,
        id: u64,
        staying: &[ServerRef],
        deadline: tokio::time::Instant,
    ) -> Result<(), Status> {
        loop {
            let look = tokio::time::timeout(REMOVAL_LOOK, self.backend.node.members(staying)).await;
            if let Ok(Ok(config)) = look {
                let gone = !config.members.iter().any(|(s, _)| s.node.0 == id);
                if gone && config.leader.as_ref().is_some_and(|l| l.node.0 != id) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(crate::error::TIMEOUT));
            }
            tokio::time::sleep(PROMOTION_POLL).await;
        }
    }

    /// Drops member `id` from the directory through `staying`; idempotent,
    /// so retried when leadership moved while it was in flight.
    async fn remove_from_directory(
        &self,
        id: u64,
        staying: &[ServerRef],
        deadline: tokio::time::Instant,
    ) -> Result<(), Status> {
        loop {
            let command = Command::MemberRemove { id };
            match self
                .backend
                .write_via("MemberRemove", 0, staying, command)
                .await
            {
                Ok(Response::Members(_)) => return Ok(()),
                Ok(_) => return Err(unexpected_answer()),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(PROMOTION_POLL).await;
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// Removes member `id` from the Raft configuration through `staying`.
    /// A change whose outcome is unknown (leadership moved while it was
    /// in flight) is checked and, if it did not take, retried.
    async fn remove_from_raft(&self, id: u64, staying: &[ServerRef]) -> Result<(), Status> {
        let backend = &self.backend;
        let deadline = tokio::time::Instant::now() + backend.timeout;
        loop {
            let error = match backend.node.remove_member(staying, &kv_server(id)).await {
                Ok(_) | Err(CallError::Refused(Refusal::NotMember(_))) => return Ok(()),
                Err(error) => error,
            };
            let retry = matches!(
                error,
                CallError::LeadershipLost { .. }
                    | CallError::NotLeader { .. }
                    | CallError::Refused(
                        Refusal::LeaderNotReady
                            | Refusal::ConfigChangeInProgress
                            | Refusal::TransferInProgress
                    )
            );
            if !retry || tokio::time::Instant::now() >= deadline {
                return Err(backend.call_failed(error));
            }
            tokio::time::sleep(PROMOTION_POLL).await;
        }
    }

    /// If member `id` leads, moves leadership to another voter and waits
    /// until `id` no longer leads.
    async fn hand_off_leadership(&self, id: u64, members: &[pb::Member]) -> Result<(), Status> {
        let backend = &self.backend;
        let deadline = tokio::time::Instant::now() + backend.timeout;
        loop {
            let config = backend
                .node
                .members(&backend.local)
                .await
                .map_err(|error| backend.call_failed(error))?;
            let Some(leader) = config.leader else {
                return Err(Status::unavailable(crate::error::NO_LEADER));
            };
            if leader.node.0 != id {
                return Ok(());
            }
            let Some(target) = members
                .iter()
                .find(|m| m.id != id && !m.is_learner)
                .map(|m| kv_server(m.id))
            else {
                // The last voter cannot leave; Raft refuses the removal.
                return Ok(());
            };
            match backend.node.transfer_leadership(&leader, &target).await {
                Ok(_) | Err(CallError::Refused(Refusal::TransferInProgress)) => {}
                Err(error) => return Err(backend.call_failed(error)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(crate::error::TIMEOUT));
            }
            tokio::time::sleep(PROMOTION_POLL).await;
        }
    }

    async fn put_member(&self, info: MemberInfo) -> Result<(), Status> {
        match self
            .backend
            .write("MemberPut", 0, Command::MemberPut(info))
            .await?
        {
            Response::Members(_) => Ok(()),
            _ => Err(unexpected_answer()),
        }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.backend.header(0))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Reply<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let address = peer_address(&request.peer_ur_ls)?;
        let existing = self.members(true).await?;
        if existing.iter().any(|m| {
            m.peer_ur_ls
                .iter()
                .any(|url| request.peer_ur_ls.contains(url))
        }) {
            return Err(Status::failed_precondition(PEER_URL_EXISTS));
        }
        let id = member_id(&request.peer_ur_ls, &self.token);
        if existing.iter().any(|m| m.id == id.0) {
            return Err(Status::failed_precondition(MEMBER_EXISTS));
        }
        // The directory entry first: a member listed without a Raft
        // membership is harmless, the reverse would have no URLs.
        let info = MemberInfo {
            id: id.0,
            name: String::new(),
            peer_urls: request.peer_ur_ls.clone(),
            client_urls: Vec::new(),
        };
        self.put_member(info).await?;
        self.backend.node.add_peer(id, address);
        let membership = if request.is_learner {
            Membership::NonVoter
        } else {
            Membership::Voter
        };
        self.backend
            .node
            .add_member_as(&self.backend.local, &kv_server(id.0), membership)
            .await
            .map_err(|error| self.backend.call_failed(error))?;
        let members = self.members(true).await?;
        let member = members.iter().find(|m| m.id == id.0).cloned();
        Ok(Reply::new(pb::MemberAddResponse {
            header: self.header(),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Reply<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        let members = self.members(true).await?;
        if !members.iter().any(|m| m.id == id) {
            return Err(Status::not_found(MEMBER_NOT_FOUND));
        }
        // A member that leaves (this one, when a client removes the member
        // it talks to) no longer reaches the cluster through its own
        // server: the rest of the request goes through the members that
        // stay, this one first if it stays.
        let me = self.backend.member_id;
        let mut staying: Vec<ServerRef> = members
            .iter()
            .filter(|m| m.id != id)
            .map(|m| kv_server(m.id))
            .collect();
        staying.sort_by_key(|server| server.node.0 != me);
        // A change in the leader's log is not yet committed: if leadership
        // moves before it commits it can be lost. Like etcd, answer only
        // once it holds: after the directory update (a later write) has
        // committed, the configuration must still be without the member;
        // else the removal was lost and is made again.
        let deadline = tokio::time::Instant::now() + self.backend.timeout;
        loop {
            // Thesis §3.10: a leader that is to be removed hands leadership
            // to a member that stays first, so the cluster never waits out
            // an election timeout (or a quiesced follower's failure
            // detector) for a leader that stepped down. Again on every
            // attempt: a lost removal leaves `id` a voter, and it may lead
            // again, where the members that stay cannot reach it for the
            // removal (CI saw that attempt time out).
            self.hand_off_leadership(id, &members).await?;
            self.remove_from_raft(id, &staying).await?;
            self.wait_for_leader_without(id, &staying, deadline).await?;
            self.remove_from_directory(id, &staying, deadline).await?;
            let members = self.members_via(&staying, true).await?;
            if !members.iter().any(|m| m.id == id) {
                return Ok(Reply::new(pb::MemberRemoveResponse {
                    header: self.header(),
                    members,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(crate::error::TIMEOUT));
            }
        }
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Reply<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let address = peer_address(&request.peer_ur_ls)?;
        let members = self.members(true).await?;
        let Some(member) = members.iter().find(|m| m.id == request.id) else {
            return Err(Status::not_found(MEMBER_NOT_FOUND));
        };
        self.put_member(MemberInfo {
            id: member.id,
            name: member.name.clone(),
            peer_urls: request.peer_ur_ls.clone(),
            client_urls: member.client_ur_ls.clone(),
        })
        .await?;
        self.backend.node.add_peer(NodeId(request.id), address);
        Ok(Reply::new(pb::MemberUpdateResponse {
            header: self.header(),
            members: self.members(true).await?,
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Reply<pb::MemberListResponse>, Status> {
        let linearizable = request.into_inner().linearizable;
        Ok(Reply::new(pb::MemberListResponse {
            header: self.header(),
            members: self.members(linearizable).await?,
        }))
    }

    /// Makes a learner a voter once it has caught up with the leader's
    /// log; answers when it votes, or with etcd's "not in sync" error if it
    /// has not caught up within the request timeout.
    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Reply<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let Some(member) = self.members(true).await?.into_iter().find(|m| m.id == id) else {
            return Err(Status::not_found(MEMBER_NOT_FOUND));
        };
        if !member.is_learner {
            return Err(Status::failed_precondition(MEMBER_NOT_LEARNER));
        }
        self.backend
            .node
            .promote_member(&self.backend.local, &kv_server(id))
            .await
            .map_err(|error| self.backend.call_failed(error))?;
        let deadline = tokio::time::Instant::now() + self.backend.timeout;
        loop {
            let members = self.members(true).await?;
            if members.iter().any(|m| m.id == id && !m.is_learner) {
                return Ok(Reply::new(pb::MemberPromoteResponse {
                    header: self.header(),
                    members,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::failed_precondition(
                    "etcdserver: can only promote a learner member which is in sync with leader",
                ));
            }
            tokio::time::sleep(PROMOTION_POLL).await;
        }
    }
}

pub(crate) struct MaintenanceService {
    pub(crate) backend: Arc<Backend>,
    pub(crate) data_dir: std::path::PathBuf,
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    /// chorus raises no alarms (it has no space quota): listing answers
    /// none; raising one is refused rather than pretended.
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Reply<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        match AlarmAction::try_from(request.into_inner().action) {
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {
                Ok(Reply::new(pb::AlarmResponse {
                    header: Some(self.backend.header(0)),
                    alarms: Vec::new(),
                }))
            }
            _ => Err(Status::unimplemented(
                "chorus: alarms cannot be raised by clients",
            )),
        }
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Reply<pb::StatusResponse>, Status> {
        let backend = &self.backend;
        let progress = *backend.progress.borrow();
        let revision = backend
            .node
            .local_query_with::<KvMachine, _, _>(&backend.local, |machine| machine.revision())
            .await
            .map_err(|error| backend.call_failed(error))?
            .reply;
        let overview = backend.node.overview().await;
        let is_learner = overview
            .servers
            .iter()
            .find(|s| s.server == backend.local)
            .and_then(|s| s.members.iter().find(|(id, _)| *id == backend.local.id()))
            .is_some_and(|(_, membership)| !matches!(membership, Membership::Voter));
        let db_size = directory_bytes(&self.data_dir);
        let mut errors = Vec::new();
        if progress.leader.is_none() {
            errors.push(crate::error::NO_LEADER.to_string());
        }
        Ok(Reply::new(pb::StatusResponse {
            header: Some(backend.header(revision)),
            version: ETCD_API_VERSION.into(),
            db_size,
            leader: progress
                .leader
                .map_or(0, |leader| chorus_node::node_of(leader).0),
            raft_index: progress.commit_index,
            raft_term: progress.term,
            raft_applied_index: progress.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner,
        }))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Reply<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let backend = &self.backend;
        let members = backend
            .node
            .members(&backend.local)
            .await
            .map_err(|error| backend.call_failed(error))?;
        if !members
            .members
            .iter()
            .any(|(server, m)| server.node.0 == target && matches!(m, Membership::Voter))
        {
            return Err(Status::failed_precondition(BAD_LEADER_TRANSFEREE));
        }
        backend
            .node
            .transfer_leadership(&backend.local, &kv_server(target))
            .await
            .map_err(|error| backend.call_failed(error))?;
        // etcd answers once the transferee leads.
        let deadline = tokio::time::Instant::now() + backend.timeout;
        let mut progress = backend.progress.clone();
        loop {
            let leader = progress.borrow_and_update().leader;
            if leader.is_some_and(|l| chorus_node::node_of(l).0 == target) {
                break;
            }
            if tokio::time::timeout_at(deadline, progress.changed())
                .await
                .is_err()
            {
                return Err(Status::unavailable(crate::error::TIMEOUT));
            }
        }
        Ok(Reply::new(pb::MoveLeaderResponse {
            header: Some(backend.header(0)),
        }))
    }
}

/// Where a member's peers reach it: the first of its peer URLs.
fn peer_address(peer_urls: &[String]) -> Result<std::net::SocketAddr, Status> {
    let Some(first) = peer_urls.first() else {
        return Err(Status::invalid_argument(
            "etcdserver: member peer URLs are not given",
        ));
    };
    parse_url(first).map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Bytes in the data directory's files (etcd's `dbSize`).
fn directory_bytes(dir: &std::path::Path) -> i64 {
    let mut total: u64 = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) => total = total.saturating_add(meta.len()),
                Err(_) => {}
            }
        }
    }
    i64::try_from(total).unwrap_or(i64::MAX)
}

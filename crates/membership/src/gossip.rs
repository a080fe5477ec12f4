//! The sans-IO gossip core: anti-entropy of the membership CRDT plus heartbeats
//! for the phi-accrual failure detector, for one `(cluster, local site)`.
//!
//! # Protocol (Scuttlebutt-style push-pull, three messages per exchange)
//!
//! Every `gossip_interval_ms` the driver calls [`GossipNode::on_tick`]. The site
//! bumps its own heartbeat counter and sends `Syn { digest }` to `fanout` random
//! active members. The digest lists, per site, the op clock known completely and
//! the highest heartbeat counter seen. The peer answers `SynAck` with its own
//! digest, the ops the initiator lacks and the newer heartbeats; the initiator
//! closes with `Ack`, carrying what the peer lacks. Both directions exchange state,
//! so an update reaches all `N` sites in `O(log N)` rounds (push-pull epidemic).
//!
//! Heartbeats travel inside the gossip: a site's counter reaching us — directly or
//! through any number of peers — is one heartbeat arrival for that site's
//! [`PhiAccrualDetector`]. Each site also gossips whom it suspects, so a
//! [`FailureReport`] can say who suspects a node.
//!
//! A site joins by sending `JoinRequest` to a seed; the seed checks the cluster
//! id, admits it with the checked [`Membership::join`] and answers with the full
//! state. Any message carrying another cluster id is refused.
//!
//! # Driver loop
//!
//! 1. every `gossip_interval_ms`: `on_tick(now_ms, rng)`, send the returned
//!    [`Outgoing`] messages (best effort: loss is fine, anti-entropy repairs it);
//! 2. on every received datagram: `on_bytes(bytes, now_ms, rng)` (or
//!    `on_message` for an already decoded envelope), send what it returns;
//! 3. drain [`GossipNode::drain_status_changes`] and feed them to the tracker;
//!    call `membership_mut().flush(now_ms)` to deliver membership events.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::crdt::{Clock, Digest};
use crate::detector::{FailureReport, NodeStatus, PhiAccrualDetector, PhiConfig};
use crate::events::{BoundedQueue, StatusChange};
use crate::membership::{Membership, MembershipConfig, MembershipDump, MembershipError};
use crate::site::{ClusterId, NodeAddr, SiteId};
use crate::wire::{self, DigestEntry, Envelope, HeartbeatEntry, Message, RejectReason, WireError};

/// Tuning and bounds of the gossip core.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GossipConfig {
    /// Expected period of `on_tick` in ms; also the detector's first estimate of
    /// the heartbeat interval.
    pub gossip_interval_ms: u64,
    /// Peers contacted per tick. 3 converges in about `log4(N)` + a few rounds.
    pub fanout: usize,
    /// Maximum ops in one `SynAck`/`Ack` delta: bounds message size; a larger
    /// backlog drains over several rounds.
    pub delta_ops_max: usize,
    /// Maximum heartbeat entries in one `SynAck`/`Ack`: bounds message size.
    pub heartbeats_per_message_max: usize,
    /// Maximum suspects a site announces with its heartbeat.
    pub suspects_per_heartbeat_max: usize,
    /// A joining site retries its `JoinRequest` this often (ms).
    pub join_retry_interval_ms: u64,
    /// Kicked sites are forgotten this long (ms) after the kick was first seen
    /// here; `on_tick` runs the cleanup.
    pub forget_after_ms: u64,
    /// Failure detector tuning.
    pub phi: PhiConfig,
    /// Maximum status changes waiting for `drain_status_changes`.
    pub status_changes_pending_max: usize,
    /// Membership bounds.
    pub membership: MembershipConfig,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            gossip_interval_ms: 200,
            fanout: 3,
            delta_ops_max: 2_048,
            heartbeats_per_message_max: 4_096,
            suspects_per_heartbeat_max: 64,
            join_retry_interval_ms: 1_000,
            forget_after_ms: 24 * 60 * 60 * 1_000,
            phi: PhiConfig {
                first_heartbeat_estimate_ms: 200,
                min_std_deviation_ms: 100.0,
                ..PhiConfig::default()
            },
            status_changes_pending_max: 4_096,
            membership: MembershipConfig::default(),
        }
    }
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The destination site, when known (a seed's site is not known yet).
    pub to_site: Option<SiteId>,
    /// The destination node.
    pub to_node: NodeAddr,
    /// The message; [`wire::encode`] makes the bytes.
    pub envelope: Envelope,
}

/// Where a site stands with respect to joining.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinState {
    /// Not a member yet; asking the seeds.
    Joining {
        /// When the last request was sent.
        last_attempt_ms: Option<u64>,
    },
    /// A member (or was one: see `members().warning`).
    Member,
    /// A seed refused to admit this site.
    Rejected(RejectReason),
}

/// Counters for the status page and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStats {
    /// Messages returned for sending, by kind.
    pub sent: BTreeMap<String, u64>,
    /// Messages handled, by kind.
    pub received: BTreeMap<String, u64>,
    /// Messages refused because they came from another cluster.
    pub foreign_rejected: u64,
    /// Byte strings that did not decode.
    pub decode_errors: u64,
}

/// Human-readable state: membership plus failure detection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GossipDump {
    /// The membership state.
    pub membership: MembershipDump,
    /// Our node.
    pub node: NodeAddr,
    /// Our heartbeat counter.
    pub heartbeat: u64,
    /// Join state.
    pub join_state: JoinState,
    /// One report per active member.
    pub failures: Vec<FailureReport>,
    /// Counters.
    pub stats: GossipStats,
}

impl fmt::Display for GossipDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.membership)?;
        writeln!(
            f,
            "  node {} heartbeat {} {:?}",
            self.node, self.heartbeat, self.join_state
        )?;
        for report in &self.failures {
            writeln!(f, "  {report}")?;
        }
        Ok(())
    }
}

/// The gossip core of one local site.
#[derive(Debug)]
pub struct GossipNode {
    membership: Membership,
    node: NodeAddr,
    config: GossipConfig,
    seeds: Vec<NodeAddr>,
    join_state: JoinState,
    /// Our own heartbeat counter; bumped once per tick while a member.
    heartbeat: u64,
    /// Latest heartbeat entry seen per other site (bounded by membership: entries
    /// of sites that are not active members are dropped each tick).
    heartbeats: BTreeMap<SiteId, HeartbeatEntry>,
    /// One detector per active member other than us.
    detectors: BTreeMap<SiteId, PhiAccrualDetector>,
    /// Last status reported per active member (to emit transitions once).
    statuses: BTreeMap<SiteId, NodeStatus>,
    status_changes: BoundedQueue<StatusChange>,
    stats: GossipStats,
}

impl GossipNode {
    /// Founds a new cluster whose only member is `local` at `node`.
    pub fn found(
        cluster: ClusterId,
        local: SiteId,
        node: NodeAddr,
        config: GossipConfig,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Self {
        let mut membership = Membership::new(cluster, local, config.membership.clone());
        membership.found(node.clone(), now_ms, rng);
        Self::with_membership(membership, node, Vec::new(), JoinState::Member, config)
    }

    /// A site that will join `cluster` through one of `seeds` (retried on tick).
    pub fn joining(
        cluster: ClusterId,
        local: SiteId,
        node: NodeAddr,
        seeds: Vec<NodeAddr>,
        config: GossipConfig,
    ) -> Self {
        let membership = Membership::new(cluster, local, config.membership.clone());
        Self::with_membership(
            membership,
            node,
            seeds,
            JoinState::Joining {
                last_attempt_ms: None,
            },
            config,
        )
    }

    /// Wraps an existing (for example restored) membership instance.
    pub fn with_membership(
        membership: Membership,
        node: NodeAddr,
        seeds: Vec<NodeAddr>,
        join_state: JoinState,
        config: GossipConfig,
    ) -> Self {
        GossipNode {
            membership,
            node,
            seeds,
            join_state,
            heartbeat: 0,
            heartbeats: BTreeMap::new(),
            detectors: BTreeMap::new(),
            statuses: BTreeMap::new(),
            status_changes: BoundedQueue::new(config.status_changes_pending_max),
            stats: GossipStats::default(),
            config,
        }
    }

    /// The membership state.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The membership state, mutable (for `kick`, `flush`, hooks...).
    pub fn membership_mut(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// Our site.
    pub fn site(&self) -> SiteId {
        self.membership.local()
    }

    /// Our node.
    pub fn node(&self) -> &NodeAddr {
        &self.node
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Join state.
    pub fn join_state(&self) -> &JoinState {
        &self.join_state
    }

    /// Counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Our heartbeat counter.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat
    }

    fn envelope(&self, body: Message) -> Envelope {
        Envelope {
            cluster: self.membership.cluster().clone(),
            from_site: self.site(),
            from_node: self.node.clone(),
            body,
        }
    }

    fn send(&mut self, to_site: Option<SiteId>, to_node: NodeAddr, body: Message) -> Outgoing {
        *self.stats.sent.entry(body.kind().to_string()).or_default() += 1;
        Outgoing {
            to_site,
            to_node,
            envelope: self.envelope(body),
        }
    }

    /// One gossip round: heartbeat, cleanup, failure detection, then `Syn` to
    /// `fanout` random members (or a `JoinRequest` to a seed while joining).
    pub fn on_tick(&mut self, now_ms: u64, rng: &mut impl Rng) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if let JoinState::Joining { last_attempt_ms } = self.join_state {
            let due = last_attempt_ms.is_none_or(|last| {
                now_ms.saturating_sub(last) >= self.config.join_retry_interval_ms
            });
            if due {
                if let Some(seed) = self.seeds.choose(rng).cloned() {
                    self.join_state = JoinState::Joining {
                        last_attempt_ms: Some(now_ms),
                    };
                    out.push(self.send(None, seed, Message::JoinRequest));
                }
            }
            return out;
        }
        if !self.membership.is_member(self.site()) {
            // Kicked or refused: a non-member does not gossip (its view is stale).
            return out;
        }
        self.heartbeat += 1;
        self.membership
            .cleanup(self.config.forget_after_ms, now_ms, rng);
        self.update_detectors(now_ms);

        let node_of_site = self.membership.node_of_site();
        let peers: Vec<(SiteId, NodeAddr)> = self
            .membership
            .members()
            .sites
            .into_iter()
            .filter(|&site| site != self.site())
            .filter_map(|site| node_of_site.get(&site).map(|node| (site, node.clone())))
            .collect();
        let chosen: Vec<(SiteId, NodeAddr)> = peers
            .choose_multiple(rng, self.config.fanout)
            .cloned()
            .collect();
        for (site, node) in chosen {
            let digest = self.digest_entries();
            out.push(self.send(Some(site), node, Message::Syn { digest }));
        }
        out
    }

    /// Tracks detectors for exactly the active members other than us, and queues
    /// a [`StatusChange`] whenever a member's status differs from the last one
    /// reported (each transition is reported once).
    fn update_detectors(&mut self, now_ms: u64) {
        let members: BTreeSet<SiteId> = self
            .membership
            .members()
            .sites
            .into_iter()
            .filter(|&site| site != self.site())
            .collect();
        let node_of_site = self.membership.node_of_site();
        // Sites no longer members: stop tracking, report them offline once.
        let gone: Vec<SiteId> = self
            .statuses
            .keys()
            .filter(|site| !members.contains(site))
            .copied()
            .collect();
        for site in gone {
            if self.statuses.remove(&site) == Some(NodeStatus::Online) {
                self.status_changes.push(StatusChange {
                    site,
                    node: node_of_site.get(&site).cloned(),
                    status: NodeStatus::Offline,
                    phi: 0.0,
                    at_ms: now_ms,
                });
            }
            self.detectors.remove(&site);
        }
        self.heartbeats.retain(|site, _| members.contains(site));
        for &site in &members {
            let detector = self.detectors.entry(site).or_insert_with(|| {
                // Monitoring starts as if a heartbeat just arrived (as Akka does):
                // a new member gets the benefit of the doubt.
                let mut detector = PhiAccrualDetector::new(self.config.phi.clone());
                detector.heartbeat(now_ms);
                detector
            });
            let status = detector.status(now_ms);
            let phi = detector.phi(now_ms);
            if self.statuses.get(&site) != Some(&status) {
                self.statuses.insert(site, status);
                self.status_changes.push(StatusChange {
                    site,
                    node: node_of_site.get(&site).cloned(),
                    status,
                    phi,
                    at_ms: now_ms,
                });
            }
        }
    }

    fn own_heartbeat_entry(&self) -> HeartbeatEntry {
        let suspects = self
            .statuses
            .iter()
            .filter(|(_, status)| **status == NodeStatus::Offline)
            .map(|(site, _)| *site)
            .take(self.config.suspects_per_heartbeat_max)
            .collect();
        HeartbeatEntry {
            site: self.site(),
            counter: self.heartbeat,
            suspects,
        }
    }

    fn digest_entries(&self) -> Vec<DigestEntry> {
        let digest = self.membership.digest();
        let mut sites: BTreeSet<SiteId> = digest.versions.keys().copied().collect();
        sites.extend(self.heartbeats.keys().copied());
        sites.insert(self.site());
        sites
            .into_iter()
            .map(|site| DigestEntry {
                site,
                version: digest.get(site),
                heartbeat: if site == self.site() {
                    self.heartbeat
                } else {
                    self.heartbeats.get(&site).map_or(0, |entry| entry.counter)
                },
            })
            .collect()
    }

    fn newer_heartbeats(&self, theirs: &[DigestEntry]) -> Vec<HeartbeatEntry> {
        let known: BTreeMap<SiteId, u64> = theirs
            .iter()
            .map(|entry| (entry.site, entry.heartbeat))
            .collect();
        let mut entries = Vec::new();
        let own = self.own_heartbeat_entry();
        if own.counter > known.get(&own.site).copied().unwrap_or(0) {
            entries.push(own);
        }
        for (site, entry) in &self.heartbeats {
            if entries.len() >= self.config.heartbeats_per_message_max {
                break;
            }
            if entry.counter > known.get(site).copied().unwrap_or(0) {
                entries.push(entry.clone());
            }
        }
        entries
    }

    fn merge_heartbeats(&mut self, entries: Vec<HeartbeatEntry>, now_ms: u64) {
        for mut entry in entries {
            if entry.site == self.site() {
                // Someone saw a higher counter of ours: we restarted. Jump past it
                // so our new beats are not mistaken for old ones.
                self.heartbeat = self.heartbeat.max(entry.counter);
                continue;
            }
            if !self.membership.is_member(entry.site) {
                continue;
            }
            let known = self.heartbeats.get(&entry.site).map_or(0, |e| e.counter);
            if entry.counter > known {
                entry
                    .suspects
                    .truncate(self.config.suspects_per_heartbeat_max);
                let site = entry.site;
                self.heartbeats.insert(site, entry);
                if let Some(detector) = self.detectors.get_mut(&site) {
                    detector.heartbeat(now_ms);
                }
            }
        }
    }

    fn digest_from(entries: &[DigestEntry]) -> Digest {
        Digest {
            versions: entries
                .iter()
                .filter(|entry| entry.version > 0)
                .map(|entry| (entry.site, entry.version))
                .collect(),
        }
    }

    fn observe_digest(&mut self, entries: &[DigestEntry]) {
        let local = self.site();
        if let Some(entry) = entries.iter().find(|entry| entry.site == local) {
            // A peer knows ops of ours up to this clock: new ones must be newer.
            self.membership.observe_clock(entry.version);
        }
    }

    /// Decodes bytes from the network and handles the message.
    pub fn on_bytes(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Result<Vec<Outgoing>, WireError> {
        match wire::decode(bytes) {
            Ok((envelope, _)) => Ok(self.on_message(envelope, now_ms, rng)),
            Err(error) => {
                self.stats.decode_errors += 1;
                Err(error)
            }
        }
    }

    /// Handles one message; returns the replies.
    pub fn on_message(
        &mut self,
        envelope: Envelope,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<Outgoing> {
        let Envelope {
            cluster,
            from_site,
            from_node,
            body,
        } = envelope;
        *self
            .stats
            .received
            .entry(body.kind().to_string())
            .or_default() += 1;
        if let Message::Rejected { reason } = body {
            // A refusal names the refuser's cluster, which is foreign by
            // definition when we asked the wrong cluster: accept it as an answer.
            // A seed that is not a member (yet) is not an answer: retry another.
            if matches!(self.join_state, JoinState::Joining { .. })
                && reason != RejectReason::NotAMember
            {
                self.join_state = JoinState::Rejected(reason);
            }
            return Vec::new();
        }
        if cluster != *self.membership.cluster() {
            self.stats.foreign_rejected += 1;
            let reason = RejectReason::ForeignCluster {
                theirs: self.membership.cluster().clone(),
            };
            return vec![self.send(Some(from_site), from_node, Message::Rejected { reason })];
        }
        match body {
            Message::Syn { digest } => {
                self.observe_digest(&digest);
                let theirs = Self::digest_from(&digest);
                let delta =
                    self.membership
                        .delta_for(&theirs, self.config.delta_ops_max, rng.gen());
                let heartbeats = self.newer_heartbeats(&digest);
                let reply = Message::SynAck {
                    digest: self.digest_entries(),
                    delta,
                    heartbeats,
                };
                vec![self.send(Some(from_site), from_node, reply)]
            }
            Message::SynAck {
                digest,
                delta,
                heartbeats,
            } => {
                self.observe_digest(&digest);
                self.membership.apply_delta(delta, now_ms);
                self.merge_heartbeats(heartbeats, now_ms);
                let theirs = Self::digest_from(&digest);
                let delta =
                    self.membership
                        .delta_for(&theirs, self.config.delta_ops_max, rng.gen());
                let heartbeats = self.newer_heartbeats(&digest);
                if delta.is_empty() && heartbeats.is_empty() {
                    return Vec::new();
                }
                vec![self.send(
                    Some(from_site),
                    from_node,
                    Message::Ack { delta, heartbeats },
                )]
            }
            Message::Ack { delta, heartbeats } => {
                self.membership.apply_delta(delta, now_ms);
                self.merge_heartbeats(heartbeats, now_ms);
                Vec::new()
            }
            Message::JoinRequest => self.on_join_request(from_site, from_node, now_ms, rng),
            Message::JoinAccepted { delta } => {
                self.membership.apply_delta(delta, now_ms);
                if self.membership.is_member(self.site()) {
                    self.join_state = JoinState::Member;
                }
                Vec::new()
            }
            // Handled before the cluster check.
            Message::Rejected { .. } => Vec::new(),
        }
    }

    fn on_join_request(
        &mut self,
        from_site: SiteId,
        from_node: NodeAddr,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<Outgoing> {
        let cluster = self.membership.cluster().clone();
        let result = self
            .membership
            .join(from_site, from_node.clone(), &cluster, now_ms, rng);
        let body = match result {
            // A retried request (our earlier answer was lost) is admitted again.
            Ok(_) | Err(MembershipError::AlreadyMember(_)) => Message::JoinAccepted {
                delta: self.membership.get_data(0, Clock::MAX).delta,
            },
            Err(MembershipError::LocalNotMember { .. }) => Message::Rejected {
                reason: RejectReason::NotAMember,
            },
            Err(MembershipError::ForeignCluster { ours, .. }) => Message::Rejected {
                reason: RejectReason::ForeignCluster { theirs: ours },
            },
            Err(_) => Message::Rejected {
                reason: RejectReason::SitesLimit,
            },
        };
        vec![self.send(Some(from_site), from_node, body)]
    }

    /// Takes the queued status transitions (each transition appears once).
    pub fn drain_status_changes(&mut self) -> Vec<StatusChange> {
        self.status_changes.drain().0
    }

    /// The locally derived status of `site` (`None` for non-members; the local
    /// site is always online to itself).
    pub fn status_of(&self, site: SiteId) -> Option<NodeStatus> {
        if site == self.site() {
            return self
                .membership
                .is_member(site)
                .then_some(NodeStatus::Online);
        }
        self.statuses.get(&site).copied()
    }

    /// Why each active member has its status: phi, last heartbeat, who suspects it.
    pub fn failure_reports(&self, now_ms: u64) -> Vec<FailureReport> {
        let node_of_site = self.membership.node_of_site();
        let mut suspected_by: BTreeMap<SiteId, Vec<SiteId>> = BTreeMap::new();
        for (reporter, entry) in &self.heartbeats {
            for suspect in &entry.suspects {
                suspected_by.entry(*suspect).or_default().push(*reporter);
            }
        }
        self.membership
            .members()
            .sites
            .into_iter()
            .map(|site| {
                let detector = self.detectors.get(&site);
                let status = if site == self.site() {
                    NodeStatus::Online
                } else {
                    detector.map_or(NodeStatus::Online, |d| d.status(now_ms))
                };
                let mut suspects = suspected_by.remove(&site).unwrap_or_default();
                if status == NodeStatus::Offline {
                    suspects.push(self.site());
                }
                suspects.sort();
                suspects.dedup();
                FailureReport {
                    site,
                    node: node_of_site.get(&site).cloned(),
                    status,
                    phi: detector.map_or(0.0, |d| d.phi(now_ms)),
                    threshold: self.config.phi.threshold,
                    last_heartbeat_ms: detector.and_then(|d| d.last_heartbeat_ms()),
                    heartbeat_counter: if site == self.site() {
                        self.heartbeat
                    } else {
                        self.heartbeats.get(&site).map_or(0, |e| e.counter)
                    },
                    mean_interval_ms: detector.map_or(0.0, |d| d.mean_interval_ms()),
                    suspected_by: suspects,
                }
            })
            .collect()
    }

    /// Human-readable state: membership, heartbeats and failure reports.
    pub fn dump(&self, now_ms: u64) -> GossipDump {
        GossipDump {
            membership: self.membership.dump(),
            node: self.node.clone(),
            heartbeat: self.heartbeat,
            join_state: self.join_state.clone(),
            failures: self.failure_reports(now_ms),
            stats: self.stats.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn config() -> GossipConfig {
        GossipConfig {
            gossip_interval_ms: 100,
            ..GossipConfig::default()
        }
    }

    #[test]
    fn join_then_exchange_is_a_three_way_handshake() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let cluster = ClusterId::new("c");
        let mut seed = GossipNode::found(
            cluster.clone(),
            SiteId(1),
            NodeAddr::new("n1"),
            config(),
            0,
            &mut rng,
        );
        let mut joiner = GossipNode::joining(
            cluster,
            SiteId(2),
            NodeAddr::new("n2"),
            vec![NodeAddr::new("n1")],
            config(),
        );
        let request = joiner.on_tick(0, &mut rng);
        assert_eq!(request.len(), 1);
        assert_eq!(request[0].envelope.body, Message::JoinRequest);
        // Through the wire format, as a real driver would.
        let bytes = wire::encode(&request[0].envelope).unwrap();
        let reply = seed.on_bytes(&bytes, 1, &mut rng).unwrap();
        assert_eq!(reply[0].envelope.body.kind(), "join_accepted");
        joiner.on_message(reply[0].envelope.clone(), 2, &mut rng);
        assert_eq!(joiner.join_state(), &JoinState::Member);
        assert_eq!(
            joiner.membership().members().sites,
            vec![SiteId(1), SiteId(2)]
        );

        let syn = joiner.on_tick(100, &mut rng);
        assert_eq!(syn.len(), 1);
        assert_eq!(syn[0].envelope.body.kind(), "syn");
        let syn_ack = seed.on_message(syn[0].envelope.clone(), 100, &mut rng);
        assert_eq!(syn_ack[0].envelope.body.kind(), "syn_ack");
        let ack = joiner.on_message(syn_ack[0].envelope.clone(), 100, &mut rng);
        // The seed had not beaten yet; the joiner has one heartbeat to push.
        assert_eq!(ack[0].envelope.body.kind(), "ack");
        assert!(seed
            .on_message(ack[0].envelope.clone(), 100, &mut rng)
            .is_empty());
        assert_eq!(
            seed.membership().crdt().ops(),
            joiner.membership().crdt().ops()
        );
    }

    #[test]
    fn foreign_cluster_is_rejected() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seed = GossipNode::found(
            ClusterId::new("c"),
            SiteId(1),
            NodeAddr::new("n1"),
            config(),
            0,
            &mut rng,
        );
        let mut stranger = GossipNode::joining(
            ClusterId::new("other"),
            SiteId(9),
            NodeAddr::new("n9"),
            vec![NodeAddr::new("n1")],
            config(),
        );
        let request = stranger.on_tick(0, &mut rng);
        let reply = seed.on_message(request[0].envelope.clone(), 0, &mut rng);
        stranger.on_message(reply[0].envelope.clone(), 0, &mut rng);
        assert_eq!(
            stranger.join_state(),
            &JoinState::Rejected(RejectReason::ForeignCluster {
                theirs: ClusterId::new("c")
            })
        );
        assert_eq!(seed.membership().members().sites, vec![SiteId(1)]);
        assert_eq!(seed.stats().foreign_rejected, 1);
        // A rejected site stops asking.
        assert!(stranger.on_tick(10_000, &mut rng).is_empty());
    }

    #[test]
    fn garbage_bytes_are_a_typed_error() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seed = GossipNode::found(
            ClusterId::new("c"),
            SiteId(1),
            NodeAddr::new("n1"),
            config(),
            0,
            &mut rng,
        );
        assert_eq!(
            seed.on_bytes(b"nonsense", 0, &mut rng),
            Err(WireError::BadMagic)
        );
        assert_eq!(seed.stats().decode_errors, 1);
    }
}

//! classy's membership API over the CRDT, for one `(cluster, local site)`, and
//! the registry of every local `(cluster, site)` pair.
//!
//! Everything here is pure: time is a `now_ms` argument and the tie-breaking
//! magic of new ops comes from an injected RNG.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::crdt::{ApplyOutcome, Clock, Crdt, CrdtLimits, Delta, Digest, Key, KeyKind, Op, Value};
use crate::events::{BoundedQueue, MembershipEvent};
use crate::site::{ClusterId, NodeAddr, SiteId};

/// Bounds and tuning of one membership instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipConfig {
    /// Bounds on the CRDT's metadata.
    pub limits: CrdtLimits,
    /// Maximum events queued between two `flush` calls; past it the oldest are
    /// dropped and an [`MembershipEvent::Overflow`] reports how many.
    pub events_pending_max: usize,
    /// Maximum `cast_sync` batches waiting for the next `flush`; a cast beyond it
    /// is refused with [`MembershipError::InboxFull`] (the sender retries by gossip).
    pub sync_inbox_max: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            limits: CrdtLimits::default(),
            events_pending_max: 4_096,
            sync_inbox_max: 64,
        }
    }
}

/// Errors of the checked membership operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// State or a join request from a cluster with another id.
    #[error("site belongs to cluster {theirs}, not {ours}")]
    ForeignCluster {
        /// This instance's cluster.
        ours: ClusterId,
        /// The other side's cluster.
        theirs: ClusterId,
    },
    /// The local site is not an active member, so it may not admit or kick others
    /// (its view may be stale: see [`MembersWarning`]).
    #[error("local site {local} is not an active member of the cluster")]
    LocalNotMember {
        /// The local site.
        local: SiteId,
    },
    /// `join` of a site that is already an active member.
    #[error("site {0} is already a member")]
    AlreadyMember(SiteId),
    /// `kick` of a site that is not an active member.
    #[error("site {0} is not a member")]
    NotAMember(SiteId),
    /// The state already holds [`CrdtLimits::sites_max`] sites.
    #[error("the membership state is full (sites_max reached)")]
    SitesLimit,
    /// `cast_sync` while [`MembershipConfig::sync_inbox_max`] batches wait.
    #[error("sync inbox full ({inbox_max} batches waiting for flush)")]
    InboxFull {
        /// The configured bound.
        inbox_max: usize,
    },
    /// No local instance for this `(cluster, site)`.
    #[error("no local site {site} in cluster {cluster}")]
    UnknownLocalSite {
        /// The cluster asked for.
        cluster: ClusterId,
        /// The site asked for.
        site: SiteId,
    },
}

/// Why the result of [`Membership::members`] cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembersWarning {
    /// classy: "if Local is not a member of the returned list, then the local
    /// system may be permanently out of sync with the Cluster or the
    /// `{Cluster, Local}` server may be inactive. In both cases the result value
    /// can't be trusted."
    LocalNotMember {
        /// The local site.
        local: SiteId,
    },
}

/// The active members as perceived locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Active members, sorted.
    pub sites: Vec<SiteId>,
    /// Set when the local site is not among them.
    pub warning: Option<MembersWarning>,
}

/// A batch of membership data for push (`cast_sync`) or pull (`call_sync`) sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncData {
    /// The cluster the data belongs to; data of another cluster is refused.
    pub cluster: ClusterId,
    /// The ops and their coverage.
    pub delta: Delta,
}

/// Which local sites to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Only instances currently running.
    Running,
    /// Every instance, running or stopped.
    All,
}

/// Human-readable state of one instance, for tests and debugging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipDump {
    /// The cluster.
    pub cluster: ClusterId,
    /// The local site.
    pub local: SiteId,
    /// Lamport clock.
    pub clock: Clock,
    /// Active members.
    pub members: Vec<SiteId>,
    /// Every register, one line each (`site value @(clock, magic, origin)`).
    pub entries: Vec<String>,
    /// Sync digest: origin -> clock known completely.
    pub digest: Vec<(SiteId, Clock)>,
}

impl fmt::Display for MembershipDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster {} local {:?} clock {}",
            self.cluster, self.local, self.clock
        )?;
        writeln!(f, "  members: {:?}", self.members)?;
        for entry in &self.entries {
            writeln!(f, "  {entry}")?;
        }
        writeln!(f, "  digest: {:?}", self.digest)
    }
}

/// A hook run by `flush` on every delivered event.
pub type Hook = Box<dyn FnMut(&MembershipEvent) + Send>;

/// What the local site knows about one site, to diff before/after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SiteView {
    active: bool,
    host: Option<NodeAddr>,
    forgotten: bool,
}

/// The membership of one cluster as perceived by one local site.
pub struct Membership {
    cluster: ClusterId,
    local: SiteId,
    crdt: Crdt,
    config: MembershipConfig,
    events: BoundedQueue<MembershipEvent>,
    inbox: Vec<SyncData>,
    hooks: Vec<Hook>,
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Membership")
            .field("cluster", &self.cluster)
            .field("local", &self.local)
            .field("crdt", &self.crdt)
            .field("events_pending", &self.events.len())
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl Membership {
    /// An instance with empty state (not a member of anything yet).
    pub fn new(cluster: ClusterId, local: SiteId, config: MembershipConfig) -> Self {
        let crdt = Crdt::new(config.limits.clone());
        Self::with_crdt(cluster, local, config, crdt)
    }

    /// An instance restored from a persisted [`Crdt::encode_snapshot`].
    pub fn with_crdt(
        cluster: ClusterId,
        local: SiteId,
        config: MembershipConfig,
        crdt: Crdt,
    ) -> Self {
        Membership {
            cluster,
            local,
            crdt,
            events: BoundedQueue::new(config.events_pending_max),
            config,
            inbox: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// The cluster id.
    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    /// The local site.
    pub fn local(&self) -> SiteId {
        self.local
    }

    /// The underlying CRDT (read only).
    pub fn crdt(&self) -> &Crdt {
        &self.crdt
    }

    /// Starts a new cluster with the local site as its only member at `node`.
    pub fn found(&mut self, node: NodeAddr, now_ms: u64, rng: &mut impl Rng) {
        self.set_member(self.local, true, now_ms, rng);
        self.set_host(self.local, node, now_ms, rng);
    }

    fn view(&self, site: SiteId) -> SiteView {
        let member = self.crdt.get(&Key {
            site,
            kind: KeyKind::Member,
        });
        let host = self.crdt.get(&Key {
            site,
            kind: KeyKind::Host,
        });
        let forget = self.crdt.get(&Key {
            site,
            kind: KeyKind::Forget,
        });
        SiteView {
            active: member.is_some_and(|s| s.op.value == Value::Member(true)),
            host: host.and_then(|s| match &s.op.value {
                Value::Host(node) => Some(node.clone()),
                _ => None,
            }),
            forgotten: forget.is_some() && member.is_none() && host.is_none(),
        }
    }

    fn emit_diff(&mut self, site: SiteId, before: &SiteView, after: &SiteView) {
        if !before.active && after.active {
            self.events.push(MembershipEvent::Joined { site });
        }
        if before.active && !after.active {
            self.events.push(MembershipEvent::Kicked { site });
        }
        if before.host != after.host {
            self.events.push(MembershipEvent::HostChanged {
                site,
                node: after.host.clone(),
            });
        }
        if !before.forgotten && after.forgotten {
            self.events.push(MembershipEvent::Forgotten { site });
        }
    }

    fn make(&mut self, site: SiteId, value: Value, now_ms: u64, rng: &mut impl Rng) -> Op {
        let before = self.view(site);
        let (op, outcome) = self.crdt.make(self.local, site, value, rng.gen(), now_ms);
        debug_assert!(
            outcome != ApplyOutcome::Stale && outcome != ApplyOutcome::Voided,
            "a fresh local op is newer than anything seen"
        );
        let after = self.view(site);
        self.emit_diff(site, &before, &after);
        op
    }

    /// Low-level: sets `target`'s membership to `member`.
    ///
    /// **WARNING (as in classy):** this does not check that `target` exists or is
    /// part of the cluster. Called with an invalid target, it creates a new entry
    /// that will eventually make its way to the entire cluster: the fictitious
    /// site becomes a member until kicked, and even then records about it are kept
    /// until `cleanup` forgets it (and a compact tombstone after that). Use
    /// [`Membership::join`] / [`Membership::kick`] unless you are repairing state.
    ///
    /// If the state is full ([`CrdtLimits::sites_max`]) the op is made but not
    /// stored; the returned op is for inspection only.
    pub fn set_member(
        &mut self,
        target: SiteId,
        member: bool,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Op {
        self.make(target, Value::Member(member), now_ms, rng)
    }

    /// Low-level: records that `target` runs at `node` (no checks, as `set_member`).
    pub fn set_host(
        &mut self,
        target: SiteId,
        node: NodeAddr,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Op {
        self.make(target, Value::Host(node), now_ms, rng)
    }

    fn check_local_member(&self) -> Result<(), MembershipError> {
        if self.is_member(self.local) {
            Ok(())
        } else {
            Err(MembershipError::LocalNotMember { local: self.local })
        }
    }

    fn check_room_for(&self, site: SiteId) -> Result<(), MembershipError> {
        let known = self.view(site);
        let live_sites = self
            .crdt
            .entries()
            .filter(|(key, _)| key.kind != KeyKind::Forget)
            .map(|(key, _)| key.site)
            .collect::<BTreeSet<_>>()
            .len();
        if !known.active && known.host.is_none() && live_sites >= self.crdt.limits().sites_max {
            return Err(MembershipError::SitesLimit);
        }
        Ok(())
    }

    /// High-level, checked: admits `target` (running at `node`, claiming to belong
    /// to `target_cluster`). Refuses a site of another cluster, a site that is
    /// already a member, and acts only if the local site is itself a member.
    /// A kicked or forgotten site may join again: its new ops are newer than the
    /// tombstone.
    pub fn join(
        &mut self,
        target: SiteId,
        node: NodeAddr,
        target_cluster: &ClusterId,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Result<Vec<Op>, MembershipError> {
        if *target_cluster != self.cluster {
            return Err(MembershipError::ForeignCluster {
                ours: self.cluster.clone(),
                theirs: target_cluster.clone(),
            });
        }
        self.check_local_member()?;
        if self.is_member(target) {
            return Err(MembershipError::AlreadyMember(target));
        }
        self.check_room_for(target)?;
        Ok(vec![
            self.set_member(target, true, now_ms, rng),
            self.set_host(target, node, now_ms, rng),
        ])
    }

    /// High-level, checked: removes `target` from the active members. The
    /// `membership := false` op is a tombstone that wins by LWW order over every
    /// older op, and is kept at least `forget_after` (see [`Membership::cleanup`]).
    /// A site may kick itself (leave).
    pub fn kick(
        &mut self,
        target: SiteId,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Result<Op, MembershipError> {
        self.check_local_member()?;
        if !self.is_member(target) {
            return Err(MembershipError::NotAMember(target));
        }
        Ok(self.set_member(target, false, now_ms, rng))
    }

    /// Forgets sites that this site has known as kicked for at least
    /// `forget_after_ms` (measured on the local clock from when the kick was
    /// first seen here, so every site keeps the tombstone at least that long).
    /// Forgetting writes a compact `forget(site)` tombstone that voids every older
    /// op about the site, so stale peers cannot bring it back. Never forgets the
    /// local site. Returns the forgotten sites.
    pub fn cleanup(
        &mut self,
        forget_after_ms: u64,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<SiteId> {
        let expired: Vec<SiteId> = self
            .crdt
            .entries()
            .filter(|(key, stored)| {
                key.kind == KeyKind::Member
                    && key.site != self.local
                    && stored.op.value == Value::Member(false)
                    && now_ms.saturating_sub(stored.seen_at_ms) >= forget_after_ms
            })
            .map(|(key, _)| key.site)
            .collect();
        for &site in &expired {
            self.make(site, Value::Forget, now_ms, rng);
        }
        if !expired.is_empty() {
            self.crdt.prune_versions(self.local);
        }
        expired
    }

    /// True if `site` is an active member.
    pub fn is_member(&self, site: SiteId) -> bool {
        self.crdt
            .get(&Key {
                site,
                kind: KeyKind::Member,
            })
            .is_some_and(|stored| stored.op.value == Value::Member(true))
    }

    /// The active members of the cluster as perceived by the local site, with a
    /// warning when the local site is not among them (then the list may be stale
    /// for good and must not be trusted).
    pub fn members(&self) -> Members {
        let sites: Vec<SiteId> = self
            .crdt
            .entries()
            .filter(|(key, stored)| {
                key.kind == KeyKind::Member && stored.op.value == Value::Member(true)
            })
            .map(|(key, _)| key.site)
            .collect();
        let warning = if sites.contains(&self.local) {
            None
        } else {
            Some(MembersWarning::LocalNotMember { local: self.local })
        };
        Members { sites, warning }
    }

    /// Sites mapped to their nodes. **Includes kicked members** (until forgotten).
    pub fn node_of_site(&self) -> BTreeMap<SiteId, NodeAddr> {
        self.crdt
            .entries()
            .filter_map(|(key, stored)| match &stored.op.value {
                Value::Host(node) => Some((key.site, node.clone())),
                _ => None,
            })
            .collect()
    }

    /// Nodes mapped to their sites. **Includes kicked members** (until
    /// forgotten). If two sites claim one node, the active member wins, then the
    /// newer claim.
    pub fn site_of_node(&self) -> BTreeMap<NodeAddr, SiteId> {
        let mut claims: BTreeMap<NodeAddr, (bool, crate::crdt::OpOrder, SiteId)> = BTreeMap::new();
        for (key, stored) in self.crdt.entries() {
            if let Value::Host(node) = &stored.op.value {
                let claim = (self.is_member(key.site), stored.op.order, key.site);
                let entry = claims.entry(node.clone()).or_insert(claim);
                if claim > *entry {
                    *entry = claim;
                }
            }
        }
        claims
            .into_iter()
            .map(|(node, (_, _, site))| (node, site))
            .collect()
    }

    /// Human-readable state for tests and debugging.
    pub fn dump(&self) -> MembershipDump {
        MembershipDump {
            cluster: self.cluster.clone(),
            local: self.local,
            clock: self.crdt.clock(),
            members: self.members().sites,
            entries: self
                .crdt
                .entries()
                .map(|(_, stored)| stored.op.to_string())
                .collect(),
            digest: self.crdt.digest().versions.into_iter().collect(),
        }
    }

    /// Registers a hook that `flush` runs on every delivered event, in order.
    pub fn add_hook(&mut self, hook: Hook) {
        self.hooks.push(hook);
    }

    /// Applies pending `cast_sync` batches, then delivers every pending event to
    /// the hooks and returns them (classy's "force sending of events and
    /// execution of hooks").
    pub fn flush(&mut self, now_ms: u64) -> Vec<MembershipEvent> {
        for data in std::mem::take(&mut self.inbox) {
            // Cluster ids were checked when the batch was accepted.
            self.apply_delta(data.delta, now_ms);
        }
        let (mut events, dropped) = self.events.drain();
        if dropped > 0 {
            events.insert(0, MembershipEvent::Overflow { dropped });
        }
        for event in &events {
            for hook in &mut self.hooks {
                hook(event);
            }
        }
        events
    }

    /// Number of events waiting for `flush`.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Membership data whose op clocks are in `from_clock..to_clock` (classy's
    /// `get_data`). `get_data(0, Clock::MAX)` is a full snapshot.
    pub fn get_data(&self, from_clock: Clock, to_clock: Clock) -> SyncData {
        SyncData {
            cluster: self.cluster.clone(),
            delta: self.crdt.range(from_clock, to_clock),
        }
    }

    fn check_cluster(&self, data: &SyncData) -> Result<(), MembershipError> {
        if data.cluster != self.cluster {
            return Err(MembershipError::ForeignCluster {
                ours: self.cluster.clone(),
                theirs: data.cluster.clone(),
            });
        }
        Ok(())
    }

    /// Pull sync: applies `data` (typically fetched with a peer's `get_data`) now.
    /// Returns how many registers changed.
    pub fn call_sync(&mut self, data: SyncData, now_ms: u64) -> Result<usize, MembershipError> {
        self.check_cluster(&data)?;
        Ok(self.apply_delta(data.delta, now_ms))
    }

    /// Push sync: queues `data` to be applied at the next `flush`.
    pub fn cast_sync(&mut self, data: SyncData) -> Result<(), MembershipError> {
        self.check_cluster(&data)?;
        if self.inbox.len() >= self.config.sync_inbox_max {
            return Err(MembershipError::InboxFull {
                inbox_max: self.config.sync_inbox_max,
            });
        }
        self.inbox.push(data);
        Ok(())
    }

    /// The sync digest (what this site knows completely, per origin).
    pub fn digest(&self) -> Digest {
        self.crdt.digest()
    }

    /// The ops a peer with digest `theirs` lacks (at most `ops_max`).
    pub fn delta_for(&self, theirs: &Digest, ops_max: usize, start: usize) -> Delta {
        self.crdt.delta_for(theirs, ops_max, start)
    }

    /// Raises the Lamport clock (a peer's digest shows ops this site made before
    /// a restart: new ops must be newer still).
    pub fn observe_clock(&mut self, clock: Clock) {
        self.crdt.observe_clock(clock);
    }

    /// Applies a delta, queueing events for what changed. Returns how many
    /// registers changed.
    pub fn apply_delta(&mut self, delta: Delta, now_ms: u64) -> usize {
        let sites: BTreeSet<SiteId> = delta.ops.iter().map(|op| op.site).collect();
        let before: Vec<(SiteId, SiteView)> =
            sites.iter().map(|&site| (site, self.view(site))).collect();
        let changed = self.crdt.apply_delta(delta, now_ms).len();
        if changed > 0 {
            for (site, before) in before {
                let after = self.view(site);
                self.emit_diff(site, &before, &after);
            }
        }
        changed
    }

    /// Encodes the state for persistence (see `docs/formats.md`).
    pub fn snapshot(&self) -> Vec<u8> {
        self.crdt.encode_snapshot()
    }
}

/// Every local `(cluster, site)` instance: classy's `list_local_sites` and
/// `known_clusters` live here.
#[derive(Debug, Default)]
pub struct MembershipRegistry {
    instances: BTreeMap<(ClusterId, SiteId), (Membership, bool)>,
}

impl MembershipRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an instance, running.
    pub fn insert(&mut self, membership: Membership) {
        let key = (membership.cluster().clone(), membership.local());
        self.instances.insert(key, (membership, true));
    }

    /// Marks an instance running or stopped (a stopped instance keeps its state).
    pub fn set_running(
        &mut self,
        cluster: &ClusterId,
        site: SiteId,
        running: bool,
    ) -> Result<(), MembershipError> {
        let (_, flag) = self
            .instances
            .get_mut(&(cluster.clone(), site))
            .ok_or_else(|| MembershipError::UnknownLocalSite {
                cluster: cluster.clone(),
                site,
            })?;
        *flag = running;
        Ok(())
    }

    /// The instance for `(cluster, site)`.
    pub fn get(&self, cluster: &ClusterId, site: SiteId) -> Option<&Membership> {
        self.instances
            .get(&(cluster.clone(), site))
            .map(|(membership, _)| membership)
    }

    /// The instance for `(cluster, site)`, mutable.
    pub fn get_mut(&mut self, cluster: &ClusterId, site: SiteId) -> Option<&mut Membership> {
        self.instances
            .get_mut(&(cluster.clone(), site))
            .map(|(membership, _)| membership)
    }

    /// Local sites and their clusters.
    pub fn list_local_sites(&self, listing: Listing) -> Vec<(ClusterId, SiteId)> {
        self.instances
            .iter()
            .filter(|(_, (_, running))| listing == Listing::All || *running)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The clusters where `site` is or was a peer (as far as local state shows:
    /// it is a local site of the cluster, or the cluster's state has records of
    /// it, kicked included), each with its active members.
    pub fn known_clusters(&self, site: SiteId) -> BTreeMap<ClusterId, Vec<SiteId>> {
        let mut clusters = BTreeMap::new();
        for ((cluster, local), (membership, _)) in &self.instances {
            let known = *local == site
                || membership
                    .crdt()
                    .entries()
                    .any(|(key, _)| key.site == site && key.kind != KeyKind::Forget);
            if known {
                clusters.insert(cluster.clone(), membership.members().sites);
            }
        }
        clusters
    }

    /// Dumps every instance, keyed `cluster/site`.
    pub fn dump(&self) -> BTreeMap<String, MembershipDump> {
        self.instances
            .iter()
            .map(|((cluster, site), (membership, _))| {
                (format!("{cluster}/{site}"), membership.dump())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cluster() -> ClusterId {
        ClusterId::new("c1")
    }

    fn founded(site: u128, rng: &mut ChaCha8Rng) -> Membership {
        let mut membership = Membership::new(cluster(), SiteId(site), Default::default());
        membership.found(NodeAddr::new(format!("n{site}")), 0, rng);
        membership
    }

    #[test]
    fn found_join_kick_and_events() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut a = founded(1, &mut rng);
        assert_eq!(
            a.flush(0),
            vec![
                MembershipEvent::Joined { site: SiteId(1) },
                MembershipEvent::HostChanged {
                    site: SiteId(1),
                    node: Some(NodeAddr::new("n1"))
                }
            ]
        );
        a.join(SiteId(2), NodeAddr::new("n2"), &cluster(), 1, &mut rng)
            .unwrap();
        assert_eq!(
            a.join(SiteId(2), NodeAddr::new("n2"), &cluster(), 1, &mut rng),
            Err(MembershipError::AlreadyMember(SiteId(2)))
        );
        assert!(matches!(
            a.join(
                SiteId(3),
                NodeAddr::new("n3"),
                &ClusterId::new("other"),
                1,
                &mut rng
            ),
            Err(MembershipError::ForeignCluster { .. })
        ));
        assert_eq!(a.members().sites, vec![SiteId(1), SiteId(2)]);
        a.kick(SiteId(2), 2, &mut rng).unwrap();
        assert_eq!(
            a.kick(SiteId(2), 2, &mut rng),
            Err(MembershipError::NotAMember(SiteId(2)))
        );
        assert_eq!(a.members().sites, vec![SiteId(1)]);
        // Kicked members are still mapped until forgotten.
        assert_eq!(a.node_of_site().len(), 2);
        assert_eq!(a.site_of_node()[&NodeAddr::new("n2")], SiteId(2));
        let events = a.flush(2);
        assert!(events.contains(&MembershipEvent::Kicked { site: SiteId(2) }));
    }

    #[test]
    fn members_warns_when_local_is_not_a_member() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let a = founded(1, &mut rng);
        let mut b = Membership::new(cluster(), SiteId(2), Default::default());
        assert_eq!(
            b.members().warning,
            Some(MembersWarning::LocalNotMember { local: SiteId(2) })
        );
        b.call_sync(a.get_data(0, Clock::MAX), 0).unwrap();
        assert_eq!(b.members().sites, vec![SiteId(1)]);
        assert!(b.members().warning.is_some());
        assert!(matches!(
            b.kick(SiteId(1), 0, &mut rng),
            Err(MembershipError::LocalNotMember { .. })
        ));
    }

    #[test]
    fn cleanup_forgets_after_forget_after_and_stale_ops_cannot_resurrect() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut a = founded(1, &mut rng);
        a.join(SiteId(2), NodeAddr::new("n2"), &cluster(), 0, &mut rng)
            .unwrap();
        // A stale peer captured the state while site 2 was a member.
        let stale = a.get_data(0, Clock::MAX);
        a.kick(SiteId(2), 100, &mut rng).unwrap();
        assert!(a.cleanup(1_000, 1_099, &mut rng).is_empty());
        assert_eq!(a.cleanup(1_000, 1_100, &mut rng), vec![SiteId(2)]);
        assert!(!a.node_of_site().contains_key(&SiteId(2)));
        a.flush(1_100);
        a.call_sync(stale.clone(), 1_200).unwrap();
        assert!(!a.is_member(SiteId(2)));
        assert!(!a.node_of_site().contains_key(&SiteId(2)));
        // Pushed through the inbox: same result.
        a.cast_sync(stale).unwrap();
        a.flush(1_300);
        assert!(!a.is_member(SiteId(2)));
        // Bounded: one tombstone register for the forgotten site.
        assert_eq!(a.crdt().len(), 3);
        // Deliberate re-join works.
        a.join(SiteId(2), NodeAddr::new("n2b"), &cluster(), 1_400, &mut rng)
            .unwrap();
        assert!(a.is_member(SiteId(2)));
    }

    #[test]
    fn push_and_pull_sync_refuse_foreign_clusters_and_inbox_is_bounded() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let a = founded(1, &mut rng);
        let mut foreign = Membership::new(ClusterId::new("x"), SiteId(5), Default::default());
        assert!(matches!(
            foreign.call_sync(a.get_data(0, Clock::MAX), 0),
            Err(MembershipError::ForeignCluster { .. })
        ));
        let mut b = Membership::new(
            cluster(),
            SiteId(2),
            MembershipConfig {
                sync_inbox_max: 1,
                ..Default::default()
            },
        );
        b.cast_sync(a.get_data(0, Clock::MAX)).unwrap();
        assert_eq!(
            b.cast_sync(a.get_data(0, Clock::MAX)),
            Err(MembershipError::InboxFull { inbox_max: 1 })
        );
        assert!(b.members().sites.is_empty());
        b.flush(0);
        assert_eq!(b.members().sites, vec![SiteId(1)]);
    }

    #[test]
    fn hooks_run_on_flush() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut a = Membership::new(cluster(), SiteId(1), Default::default());
        let sink = seen.clone();
        a.add_hook(Box::new(move |event| {
            sink.lock().unwrap().push(event.clone())
        }));
        a.found(NodeAddr::new("n1"), 0, &mut rng);
        assert!(seen.lock().unwrap().is_empty());
        a.flush(0);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn event_overflow_is_reported() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut a = Membership::new(
            cluster(),
            SiteId(1),
            MembershipConfig {
                events_pending_max: 2,
                ..Default::default()
            },
        );
        a.found(NodeAddr::new("n1"), 0, &mut rng);
        a.set_member(SiteId(9), true, 0, &mut rng);
        let events = a.flush(0);
        assert_eq!(events[0], MembershipEvent::Overflow { dropped: 1 });
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn registry_lists_sites_and_known_clusters() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut registry = MembershipRegistry::new();
        let mut a = founded(1, &mut rng);
        a.join(SiteId(2), NodeAddr::new("n2"), &cluster(), 0, &mut rng)
            .unwrap();
        a.kick(SiteId(2), 0, &mut rng).unwrap();
        registry.insert(a);
        let mut other = Membership::new(ClusterId::new("c2"), SiteId(1), Default::default());
        other.found(NodeAddr::new("n1"), 0, &mut rng);
        registry.insert(other);
        registry
            .set_running(&ClusterId::new("c2"), SiteId(1), false)
            .unwrap();
        assert_eq!(registry.list_local_sites(Listing::All).len(), 2);
        assert_eq!(
            registry.list_local_sites(Listing::Running),
            vec![(cluster(), SiteId(1))]
        );
        assert_eq!(registry.known_clusters(SiteId(1)).len(), 2);
        let was_peer = registry.known_clusters(SiteId(2));
        assert_eq!(was_peer.len(), 1);
        assert_eq!(was_peer[&cluster()], vec![SiteId(1)]);
        assert_eq!(registry.dump().len(), 2);
        assert!(registry
            .dump()
            .values()
            .next()
            .unwrap()
            .to_string()
            .contains("members"));
    }
}

//! A deterministic in-memory network of gossip sites, for tests and benchmarks.
//!
//! Everything derives from one seed: site ids, peer choices, message loss.
//! Time is simulated. One **round** = every live site ticks once (in a seeded
//! random order) and every message — and every reply it causes — is delivered or
//! dropped before the next round: the network's latency is assumed below the
//! gossip interval. Faults: message loss, partitions into groups, crashes (a
//! killed site neither sends nor receives), and churn (new sites joining).
//!
//! Each site runs a [`Tracker`] fed by its gossip core's status changes, with an
//! [`AlertStream`] recording every alert it hears, so tests can check that each
//! transition is heard exactly once.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::events::NodeUpdate;
use crate::gossip::{GossipConfig, GossipNode, JoinState, Outgoing};
use crate::site::{ClusterId, NodeAddr, SiteId};
use crate::tracker::{AlertStream, Mode, Tracker, TrackerConfig};
use crate::wire;

/// Maximum messages delivered in one round, replies included: a guard against a
/// protocol bug that would make sites answer each other forever.
pub const ROUND_MESSAGES_MAX: usize = 10_000_000;

/// One simulated site.
#[derive(Debug)]
pub struct SimSite {
    /// Its gossip core.
    pub gossip: GossipNode,
    /// Its node tracker.
    pub tracker: Tracker,
    /// Its `alert_me` stream.
    pub alerts: AlertStream,
    /// Every alert heard, in order, with the time it was drained.
    pub heard: Vec<(u64, NodeUpdate)>,
    /// False once killed.
    pub alive: bool,
}

/// Traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent (including those then lost).
    pub messages: u64,
    /// Bytes sent, when encoding is on.
    pub bytes: u64,
    /// Messages dropped by loss, partition or a dead receiver.
    pub dropped: u64,
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Simulation {
    seed: u64,
    rng: ChaCha8Rng,
    now_ms: u64,
    cluster: ClusterId,
    config: GossipConfig,
    sites: BTreeMap<SiteId, SimSite>,
    by_node: BTreeMap<NodeAddr, SiteId>,
    /// Site -> partition group; messages between different groups are dropped.
    groups: BTreeMap<SiteId, u32>,
    loss_probability: f64,
    encode: bool,
    traffic: Traffic,
    next_index: u64,
    rounds: u64,
}

impl Simulation {
    /// An empty simulation of `cluster`.
    pub fn new(seed: u64, cluster: ClusterId, config: GossipConfig) -> Self {
        Simulation {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now_ms: 0,
            cluster,
            config,
            sites: BTreeMap::new(),
            by_node: BTreeMap::new(),
            groups: BTreeMap::new(),
            loss_probability: 0.0,
            encode: false,
            traffic: Traffic::default(),
            next_index: 0,
            rounds: 0,
        }
    }

    /// The seed everything derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Rounds run so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Traffic so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Sends every message through [`wire::encode`] / [`wire::decode`] (slower;
    /// counts bytes).
    pub fn set_encode(&mut self, encode: bool) {
        self.encode = encode;
    }

    /// Probability that any one message is lost.
    pub fn set_loss(&mut self, probability: f64) {
        self.loss_probability = probability;
    }

    /// The seeded RNG (for tests that draw their own fault schedule).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    fn new_identity(&mut self) -> (SiteId, NodeAddr) {
        let site = SiteId::generate(&mut self.rng);
        let node = NodeAddr::new(format!("sim-{}", self.next_index));
        self.next_index += 1;
        (site, node)
    }

    fn insert(&mut self, gossip: GossipNode) -> SiteId {
        let site = gossip.site();
        let tracker = Tracker::new(
            Mode::Clustered,
            gossip.node().clone(),
            TrackerConfig::default(),
            self.now_ms,
        );
        let alerts = tracker.alert_me();
        self.by_node.insert(gossip.node().clone(), site);
        self.sites.insert(
            site,
            SimSite {
                gossip,
                tracker,
                alerts,
                heard: Vec::new(),
                alive: true,
            },
        );
        site
    }

    /// Adds the founding site of the cluster.
    pub fn found(&mut self) -> SiteId {
        let (site, node) = self.new_identity();
        let gossip = GossipNode::found(
            self.cluster.clone(),
            site,
            node,
            self.config.clone(),
            self.now_ms,
            &mut self.rng,
        );
        self.insert(gossip)
    }

    /// Adds a site of `cluster` (normally the simulation's own) that will ask
    /// `seeds` to admit it.
    pub fn add_joining(&mut self, cluster: ClusterId, seeds: Vec<NodeAddr>) -> SiteId {
        let (site, node) = self.new_identity();
        let gossip = GossipNode::joining(cluster, site, node, seeds, self.config.clone());
        self.insert(gossip)
    }

    /// A site.
    pub fn site(&self, site: SiteId) -> &SimSite {
        &self.sites[&site]
    }

    /// A site, mutable.
    pub fn site_mut(&mut self, site: SiteId) -> &mut SimSite {
        self.sites.get_mut(&site).expect("simulated site exists")
    }

    /// Every site id.
    pub fn site_ids(&self) -> Vec<SiteId> {
        self.sites.keys().copied().collect()
    }

    /// Ids of live sites.
    pub fn live_sites(&self) -> Vec<SiteId> {
        self.sites
            .iter()
            .filter(|(_, s)| s.alive)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The node of a site.
    pub fn node_of(&self, site: SiteId) -> NodeAddr {
        self.sites[&site].gossip.node().clone()
    }

    /// Crashes a site: it stops sending and receiving for good.
    pub fn kill(&mut self, site: SiteId) {
        self.site_mut(site).alive = false;
    }

    /// Splits live sites into partitions: `group_of` gives each site its group.
    pub fn partition(&mut self, mut group_of: impl FnMut(SiteId) -> u32) {
        self.groups = self.sites.keys().map(|&s| (s, group_of(s))).collect();
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.groups.clear();
    }

    fn reachable(&self, from: SiteId, to: SiteId) -> bool {
        self.groups.get(&from).copied().unwrap_or(0) == self.groups.get(&to).copied().unwrap_or(0)
    }

    /// Runs one round (see the module docs).
    pub fn round(&mut self, gossip_interval_ms: u64) {
        self.now_ms += gossip_interval_ms;
        self.rounds += 1;
        let now_ms = self.now_ms;
        let mut order = self.live_sites();
        order.shuffle(&mut self.rng);
        let mut queue: std::collections::VecDeque<(SiteId, Outgoing)> = Default::default();
        for site in order {
            let sim_site = self.sites.get_mut(&site).expect("live site exists");
            for message in sim_site.gossip.on_tick(now_ms, &mut self.rng) {
                queue.push_back((site, message));
            }
        }
        let mut delivered = 0usize;
        while let Some((from, message)) = queue.pop_front() {
            delivered += 1;
            assert!(delivered < ROUND_MESSAGES_MAX, "message storm in one round");
            self.traffic.messages += 1;
            let envelope = if self.encode {
                let bytes = wire::encode(&message.envelope).expect("simulated message fits");
                self.traffic.bytes += bytes.len() as u64;
                wire::decode(&bytes).expect("own encoding decodes").0
            } else {
                message.envelope
            };
            let Some(&to) = self.by_node.get(&message.to_node) else {
                self.traffic.dropped += 1;
                continue;
            };
            let lost = self.loss_probability > 0.0 && self.rng.gen_bool(self.loss_probability);
            if lost || !self.sites[&to].alive || !self.reachable(from, to) {
                self.traffic.dropped += 1;
                continue;
            }
            let receiver = self.sites.get_mut(&to).expect("site exists");
            for reply in receiver.gossip.on_message(envelope, now_ms, &mut self.rng) {
                queue.push_back((to, reply));
            }
        }
        for sim_site in self.sites.values_mut().filter(|s| s.alive) {
            for change in sim_site.gossip.drain_status_changes() {
                sim_site.tracker.apply_status_change(&change);
            }
            sim_site.gossip.membership_mut().flush(now_ms);
            for update in sim_site.alerts.drain() {
                sim_site.heard.push((now_ms, update));
            }
        }
    }

    /// Live sites that are members (by their own account).
    pub fn live_members(&self) -> Vec<SiteId> {
        self.sites
            .iter()
            .filter(|(id, s)| s.alive && s.gossip.membership().is_member(**id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// True when every live member holds exactly the same replicated state.
    pub fn converged(&self) -> bool {
        let mut states = self
            .live_members()
            .into_iter()
            .map(|id| self.sites[&id].gossip.membership().crdt().ops());
        match states.next() {
            None => true,
            Some(first) => states.all(|state| state == first),
        }
    }

    /// Runs rounds until [`Simulation::converged`]; returns how many it took, or
    /// `None` if it did not within `rounds_max`.
    pub fn run_until_converged(&mut self, gossip_interval_ms: u64, rounds_max: u64) -> Option<u64> {
        for taken in 0..=rounds_max {
            if self.converged() {
                return Some(taken);
            }
            self.round(gossip_interval_ms);
        }
        None
    }

    /// Live sites whose join is still pending.
    pub fn joining(&self) -> BTreeSet<SiteId> {
        self.sites
            .iter()
            .filter(|(_, s)| s.alive && matches!(s.gossip.join_state(), JoinState::Joining { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A one-line description of the sites' views, for failure messages.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        for (id, sim_site) in &self.sites {
            line.push_str(&format!(
                "{:?}{} members={} ops={}; ",
                id,
                if sim_site.alive { "" } else { "(dead)" },
                sim_site.gossip.membership().members().sites.len(),
                sim_site.gossip.membership().crdt().len()
            ));
        }
        line
    }
}

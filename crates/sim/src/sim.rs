//! One simulated run: N servers, a network, disks, clients and faults, all
//! driven by one seeded RNG and one event queue.

use std::collections::{BTreeMap, BTreeSet};

use chorus_raft::{
    Action, ClusterId, Config, Configuration, Envelope, MembershipChange, Message, Priority,
    ProposeError, Raft, ReplyTo, RequestId, Role, ServerId, StepError,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::Checker;
use crate::detector::Detector;
use crate::disk::Disk;
use crate::kv::{KvCommand, KvQuery, KvReply, SimKv};
use crate::linearizability::{self, KvOp, KvOutput, Operation, Verdict};

/// Planted protocol bugs a run can switch on (see `chorus_raft::PlantedBugs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    pub commit_previous_term: bool,
    pub double_vote: bool,
    pub read_without_read_index: bool,
    pub ignore_leader_down: bool,
}

impl Bugs {
    /// The `--bug` flags that reproduce this set.
    pub fn flags(&self) -> String {
        let mut flags = String::new();
        for (on, name) in [
            (self.commit_previous_term, "commit-previous-term"),
            (self.double_vote, "double-vote"),
            (self.read_without_read_index, "read-without-read-index"),
            (self.ignore_leader_down, "ignore-leader-down"),
        ] {
            if on {
                flags.push_str(" --bug ");
                flags.push_str(name);
            }
        }
        flags
    }
}

/// Everything a run does follows from these; [`SimConfig::from_seed`]
/// derives them all from the seed, so the seed alone replays a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub keys: u64,
    pub loss_percent: u32,
    pub duplicate_percent: u32,
    /// Network delay is uniform in 0.1 ms ..= this (µs); varying delays reorder.
    pub delay_max_us: u64,
    /// Whether a link may reorder messages. When not, each link is FIFO, as
    /// over the runtime's one TCP connection per node pair.
    pub reorder: bool,
    pub partitions: bool,
    pub crashes: bool,
    /// Crash leaders moments after they win (Raft Figure 8 needs exactly
    /// that: a new leader dying before its own entries replicate).
    pub crash_new_leaders: bool,
    /// The Figure-8 adversary: every few tens of ms crash whoever leads,
    /// restarting crashed servers whenever fewer than a quorum are up, so
    /// leaders keep dying with their entries half-replicated.
    pub leader_churn: bool,
    pub election_timeout_ms: u64,
    /// Faults strike at random intervals up to this long (µs).
    pub fault_interval_max_us: u64,
    /// Per-node clock rate error, up to ± this many parts per million.
    pub clock_skew_ppm: i64,
    pub membership_changes: bool,
    pub transfers: bool,
    pub low_priority_percent: u32,
    /// The machine releases a cursor every this many commands.
    pub release_every: u64,
    pub snapshot_interval_entries_min: u64,
    pub snapshot_chunk_bytes: usize,
    /// Replication batch and window sizes (small ones stretch replication
    /// over many messages, which exposes more interleavings).
    pub append_entries_max: usize,
    pub inflight_appends_max: usize,
    pub fault_phase_ms: u64,
    pub heal_phase_ms: u64,
    /// Servers quiesce when idle (`chorus_raft::Config::quiesce`).
    pub quiesce: bool,
    /// A node-level failure detector tells servers `peer_down` / `peer_up`
    /// (always on with `quiesce`, which needs it for liveness).
    pub failure_detector: bool,
    /// The detector reports within 1 ms ..= this after a change.
    pub detector_delay_max_ms: u64,
    /// The detector also suspects live peers at random during the faults.
    pub false_suspicions: bool,
    /// With `quiesce`: clients start no new operation in the last this-many
    /// ms, and at the end every member of the leader's configuration must be
    /// quiesced with no deadline (quiescence is reached, not just safe).
    pub idle_tail_ms: u64,
    pub bugs: Bugs,
}

impl SimConfig {
    pub fn from_seed(seed: u64, bugs: Bugs) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0f1_6000_0000);
        let nodes = [1, 3, 3, 3, 5, 5][rng.gen_range(0..6)];
        let leader_churn = nodes >= 3 && rng.gen_bool(0.2);
        let mut config = SimConfig {
            seed,
            nodes,
            clients: rng.gen_range(1..=6),
            keys: rng.gen_range(1..=4),
            loss_percent: [0, 0, 1, 5, 15][rng.gen_range(0..5)],
            duplicate_percent: [0, 0, 2, 10][rng.gen_range(0..4)],
            // Raft §5.6 needs broadcast time ≪ election timeout: the short
            // churn timeouts get the short delays.
            delay_max_us: if leader_churn {
                [300, 2_000][rng.gen_range(0..2)]
            } else {
                [300, 2_000, 10_000, 40_000][rng.gen_range(0..4)]
            },
            reorder: rng.gen_bool(0.3),
            partitions: rng.gen_bool(0.7),
            crashes: rng.gen_bool(0.7),
            crash_new_leaders: rng.gen_bool(0.3),
            leader_churn,
            // Churn wants many elections: shorter timeouts and a longer run.
            election_timeout_ms: if leader_churn { 40 } else { 150 },
            fault_interval_max_us: [60_000, 150_000, 400_000][rng.gen_range(0..3)],
            clock_skew_ppm: [0, 10_000, 50_000][rng.gen_range(0..3)],
            membership_changes: nodes > 1 && rng.gen_bool(0.4),
            transfers: nodes > 1 && rng.gen_bool(0.4),
            low_priority_percent: [0, 0, 30][rng.gen_range(0..3)],
            release_every: [0, 7, 50][rng.gen_range(0..3)],
            snapshot_interval_entries_min: [1, 16][rng.gen_range(0..2)],
            snapshot_chunk_bytes: [16, 128, 1 << 20][rng.gen_range(0..3)],
            append_entries_max: 0,
            inflight_appends_max: [4, 16][rng.gen_range(0..2)],
            fault_phase_ms: if leader_churn { 8_000 } else { 3_000 },
            heal_phase_ms: 3_000,
            quiesce: false,
            failure_detector: false,
            detector_delay_max_ms: 0,
            false_suspicions: false,
            idle_tail_ms: 0,
            bugs,
        };
        // Tiny batches stretch replication over many messages; on slow or
        // reordering links (where pipelining falls back to probing) a
        // far-behind member would take longer to catch up than the run
        // lasts, so they only go with fast FIFO links.
        config.append_entries_max = if config.delay_max_us <= 2_000 && !config.reorder {
            [1, 4, 64][rng.gen_range(0..3)]
        } else {
            64
        };
        // Drawn last, so the knobs above stay what they were for each seed.
        config.quiesce = rng.gen_bool(0.5);
        config.failure_detector = config.quiesce || rng.gen_bool(0.5);
        config.detector_delay_max_ms =
            config.election_timeout_ms * [1, 2, 4][rng.gen_range(0..3)] / 2;
        config.false_suspicions = config.failure_detector && rng.gen_bool(0.5);
        config.idle_tail_ms = if config.quiesce { 1_000 } else { 0 };
        config
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p chorus-sim --release -- --seed {}{}",
            self.seed,
            self.bugs.flags()
        )
    }
}

/// Why a run failed, with the command that replays it.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub seed: u64,
    pub message: String,
    pub replay: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed: {}\n  replay: {}",
            self.seed, self.message, self.replay
        )
    }
}

/// What a run did, for reports and for checking that runs are not trivial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub messages: u64,
    pub operations: usize,
    pub completed: usize,
    pub unknown: usize,
    pub committed: u64,
    pub leaders: usize,
    pub crashes: u64,
    /// Snapshots saved (taken on release_cursor or installed from a leader).
    pub snapshots_saved: u64,
    /// InstallSnapshot chunks sent to followers that fell behind.
    pub snapshot_chunks_sent: u64,
    pub membership_changes: u64,
    pub transfers: u64,
    /// Times a leader became quiesced (every live follower confirmed).
    pub quiescences: u64,
    /// `peer_down` / `peer_up` notices the failure detector delivered.
    pub detector_reports: u64,
    /// Of those, suspicions of live peers.
    pub false_suspicions: u64,
    /// Leaders of quiesced clusters killed at the end, each replaced.
    pub failovers: u64,
    /// The longest of those failovers, kill to new leader (ms, 1 ms steps).
    pub failover_ms_max: u64,
    /// Their sum (ms), for the mean.
    pub failover_ms_total: u64,
    /// A digest of the whole run: the same seed must give the same trace.
    pub trace_digest: u64,
}

#[derive(Debug)]
enum Event {
    Tick(usize),
    Deliver {
        to: usize,
        incarnation: u64,
        envelope: Envelope,
    },
    Sync {
        node: usize,
        incarnation: u64,
    },
    ClientNext(usize),
    ClientTimeout {
        client: usize,
        op: usize,
    },
    Fault,
    Restart(usize),
    Crash {
        node: usize,
        incarnation: u64,
    },
    Churn,
    Admin,
    Heal,
    /// The failure detector re-examines `observer`'s view of `peer`.
    Detect {
        observer: usize,
        peer: usize,
    },
    FalseSuspicion,
}

struct Node {
    raft: Option<Raft<SimKv>>,
    disk: Disk,
    incarnation: u64,
    rate_ppm: i64,
    offset_ms: u64,
    /// Requests this incarnation holds: request id → (client, history index).
    requests: BTreeMap<u64, (usize, usize)>,
    /// Leads and is quiesced (to count quiescences).
    quiesced_leader: bool,
}

struct Client {
    current: Option<usize>,
    /// A request for `current` is held by some server: no other attempt
    /// may start (a command sent twice would apply twice).
    in_flight: bool,
    target: usize,
    /// The last value this client saw per key, for compare-and-swap.
    seen: BTreeMap<u64, Option<u64>>,
}

pub struct Sim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now_us: u64,
    sequence: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    /// Directed links that drop everything.
    blocked: BTreeSet<(usize, usize)>,
    /// Per directed link, the latest scheduled delivery (FIFO links).
    link_clock: BTreeMap<(usize, usize), u64>,
    loss_percent: u32,
    duplicate_percent: u32,
    healed_at_us: Option<u64>,
    next_request: u64,
    next_value: u64,
    checker: Checker,
    detector: Option<Detector>,
    /// With `quiesce`: clients start nothing new from this time (µs).
    idle_from_us: u64,
    report: Report,
    /// Print every event (set CHORUS_SIM_TRACE=1 when replaying a seed).
    trace: bool,
}

const OP_TIMEOUT_US: u64 = 1_500_000;

fn server_id(node: usize) -> ServerId {
    ServerId(node as u64 + 1)
}

fn node_index(id: ServerId) -> usize {
    (id.0 - 1) as usize
}

impl Sim {
    pub fn new(config: SimConfig) -> Result<Self, Failure> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let members = Configuration::voters((0..config.nodes).map(server_id));
        let mut nodes = Vec::new();
        for node in 0..config.nodes {
            let disk =
                Disk::new(rng.gen(), server_id(node), members.clone()).map_err(|e| Failure {
                    seed: config.seed,
                    message: format!("node {node}: cannot create its disk: {e}"),
                    replay: config.replay_command(),
                })?;
            nodes.push(Node {
                raft: None,
                disk,
                incarnation: 0,
                rate_ppm: if config.clock_skew_ppm > 0 {
                    rng.gen_range(-config.clock_skew_ppm..=config.clock_skew_ppm)
                } else {
                    0
                },
                offset_ms: rng.gen_range(0..1_000_000),
                requests: BTreeMap::new(),
                quiesced_leader: false,
            });
        }
        let clients = (0..config.clients)
            .map(|_| Client {
                current: None,
                in_flight: false,
                target: rng.gen_range(0..config.nodes),
                seen: BTreeMap::new(),
            })
            .collect();
        let detector = config
            .failure_detector
            .then(|| Detector::new(config.seed, config.detector_delay_max_ms));
        let idle_from_us =
            (config.fault_phase_ms + config.heal_phase_ms - config.idle_tail_ms) * 1_000;
        Ok(Sim {
            loss_percent: config.loss_percent,
            duplicate_percent: config.duplicate_percent,
            config,
            rng,
            now_us: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            nodes,
            clients,
            history: Vec::new(),
            blocked: BTreeSet::new(),
            link_clock: BTreeMap::new(),
            healed_at_us: None,
            next_request: 1,
            next_value: 1,
            checker: Checker::default(),
            detector,
            idle_from_us,
            report: Report::default(),
            trace: std::env::var_os("CHORUS_SIM_TRACE").is_some(),
        })
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            seed: self.config.seed,
            message,
            replay: self.config.replay_command(),
        }
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.sequence += 1;
        self.queue.insert((at_us, self.sequence), event);
    }

    fn local_ms(&self, node: usize) -> u64 {
        let n = &self.nodes[node];
        let scaled = (self.now_us as i128 * (1_000_000 + n.rate_ppm as i128) / 1_000_000) as u64;
        n.offset_ms + scaled / 1_000
    }

    /// Global µs after which `ms` of the node's local time has passed.
    fn local_delay_us(&self, node: usize, ms: u64) -> u64 {
        let rate = 1_000_000 + self.nodes[node].rate_ppm;
        (ms * 1_000 * 1_000_000 / rate as u64).max(1)
    }

    fn start_node(&mut self, node: usize) -> Result<(), Failure> {
        let mut config = Config::new(ClusterId(7), server_id(node));
        config.election_timeout_ms = self.config.election_timeout_ms;
        config.heartbeat_interval_ms = self.config.election_timeout_ms / 5;
        config.snapshot_interval_entries_min = self.config.snapshot_interval_entries_min;
        config.snapshot_chunk_bytes = self.config.snapshot_chunk_bytes;
        config.append_entries_max = self.config.append_entries_max;
        config.inflight_appends_max = self.config.inflight_appends_max;
        config.low_priority_batch_max = 8;
        config.quiesce = self.config.quiesce;
        let persisted = self.nodes[node]
            .disk
            .recover()
            .map_err(|e| self.fail(format!("node {node}: {e}")))?;
        let seed = self.rng.gen();
        let now = self.local_ms(node);
        let raft = Raft::new(
            config,
            persisted,
            SimKv::new(self.config.release_every),
            seed,
            now,
        )
        .map_err(|e| self.fail(format!("node {node} cannot restart from its disk: {e}")))?;
        #[cfg(feature = "planted-bugs")]
        {
            let mut raft = raft;
            raft.plant_bugs(chorus_raft::PlantedBugs {
                commit_previous_term: self.config.bugs.commit_previous_term,
                double_vote: self.config.bugs.double_vote,
                read_without_read_index: self.config.bugs.read_without_read_index,
                ignore_leader_down: self.config.bugs.ignore_leader_down,
            });
            self.nodes[node].raft = Some(raft);
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            self.nodes[node].raft = Some(raft);
        }
        self.nodes[node].incarnation += 1;
        self.nodes[node].quiesced_leader = false;
        self.checker
            .node_restarted(node, self.nodes[node].raft.as_ref());
        // The new server has been told nothing: the detector tells it what
        // it sees, and tells the others this node is back.
        if let Some(detector) = self.detector.as_mut() {
            detector.forget_observer(node);
        }
        for other in 0..self.config.nodes {
            if other != node {
                self.schedule_detect(node, other);
                self.schedule_detect(other, node);
            }
        }
        let first_tick = self.now_us + self.local_delay_us(node, self.tick_ms());
        self.schedule(first_tick, Event::Tick(node));
        Ok(())
    }

    fn crash_node(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.raft = None;
        n.disk.crash();
        n.requests.clear();
        self.report.crashes += 1;
        for other in 0..self.config.nodes {
            if other != node {
                self.schedule_detect(other, node);
            }
        }
    }

    // ----- the failure detector ----------------------------------------------

    /// Have the detector look at `observer`'s view of `peer` after its delay.
    fn schedule_detect(&mut self, observer: usize, peer: usize) {
        let Some(detector) = self.detector.as_mut() else {
            return;
        };
        let at = self.now_us + detector.delay_us();
        self.schedule(at, Event::Detect { observer, peer });
    }

    /// The links changed: every view may have.
    fn schedule_detect_all(&mut self) {
        for observer in 0..self.config.nodes {
            for peer in 0..self.config.nodes {
                if observer != peer {
                    self.schedule_detect(observer, peer);
                }
            }
        }
    }

    /// Tell `observer`'s server what the detector now believes of `peer`.
    fn report_peer(&mut self, observer: usize, peer: usize, down: bool) -> Result<(), Failure> {
        let now = self.local_ms(observer);
        let (Some(detector), Some(raft)) =
            (self.detector.as_mut(), self.nodes[observer].raft.as_mut())
        else {
            return Ok(());
        };
        detector.report(observer, peer, down);
        if down {
            raft.peer_down(now, server_id(peer));
        } else {
            raft.peer_up(now, server_id(peer));
        }
        self.report.detector_reports += 1;
        if self.trace {
            eprintln!(
                "{:>10} node {observer}: detector says node {peer} is {}",
                self.now_us,
                if down { "down" } else { "up" }
            );
        }
        self.process_actions(observer)
    }

    /// The truth: `observer` hears from `peer`'s node.
    fn peer_reachable(&self, observer: usize, peer: usize) -> bool {
        self.nodes[peer].raft.is_some() && !self.blocked.contains(&(peer, observer))
    }

    fn detect(&mut self, observer: usize, peer: usize) -> Result<(), Failure> {
        let Some(detector) = self.detector.as_ref() else {
            return Ok(());
        };
        let down = !self.peer_reachable(observer, peer);
        if self.nodes[observer].raft.is_none() || detector.reported_down(observer, peer) == down {
            return Ok(());
        }
        self.report_peer(observer, peer, down)
    }

    fn false_suspicion(&mut self) -> Result<(), Failure> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        let running: Vec<usize> = (0..self.config.nodes)
            .filter(|n| self.nodes[*n].raft.is_some())
            .collect();
        let nodes = self.config.nodes;
        let interval_max_us = self.config.fault_interval_max_us;
        let Some(detector) = self.detector.as_mut() else {
            return Ok(());
        };
        let picked = detector.pick_suspicion(&running, nodes);
        let next = self.now_us + detector.suspicion_interval_us(interval_max_us);
        self.schedule(next, Event::FalseSuspicion);
        let Some((observer, peer)) = picked else {
            return Ok(());
        };
        if !self.peer_reachable(observer, peer) {
            return Ok(());
        }
        self.report.false_suspicions += 1;
        self.report_peer(observer, peer, true)?;
        // Corrected once the detector looks again.
        self.schedule_detect(observer, peer);
        Ok(())
    }

    /// Run to the end; check everything.
    pub fn run(mut self) -> Result<Report, Failure> {
        for node in 0..self.config.nodes {
            self.start_node(node)?;
        }
        // ra: a brand-new cluster needs one election triggered.
        let first = self.rng.gen_range(0..self.config.nodes);
        let now = self.local_ms(first);
        if let Some(raft) = self.nodes[first].raft.as_mut() {
            raft.trigger_election(now);
        }
        self.process_actions(first)?;
        for client in 0..self.config.clients {
            let at = self.rng.gen_range(0..50_000);
            self.schedule(at, Event::ClientNext(client));
        }
        if self.config.partitions || self.config.crashes || self.config.loss_percent > 0 {
            let at = self.rng.gen_range(50_000..300_000);
            self.schedule(at, Event::Fault);
        }
        if self.config.leader_churn && self.config.crashes {
            self.schedule(self.config.election_timeout_ms * 3_000, Event::Churn);
        }
        if self.config.membership_changes || self.config.transfers {
            let at = self.rng.gen_range(200_000..600_000);
            self.schedule(at, Event::Admin);
        }
        if self.config.false_suspicions {
            let at = self.rng.gen_range(50_000..300_000);
            self.schedule(at, Event::FalseSuspicion);
        }
        let heal_at = self.config.fault_phase_ms * 1_000;
        self.schedule(heal_at, Event::Heal);
        let end_us = heal_at + self.config.heal_phase_ms * 1_000;
        self.run_until(end_us)?;
        if self.config.quiesce {
            self.check_quiesced()?;
            self.check_failover()?;
        }
        self.finish()
    }

    /// Handle every event up to `end_us`; the clock then reads `end_us`.
    fn run_until(&mut self, end_us: u64) -> Result<(), Failure> {
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at > end_us {
                break;
            }
            let Some((_, event)) = self.queue.pop_first() else {
                break;
            };
            self.now_us = at;
            self.report.events += 1;
            self.report.trace_digest = crate::kv::fnv(self.report.trace_digest, &at.to_le_bytes());
            if self.trace {
                eprintln!("{at:>10} {event:?}");
            }
            self.handle(event)?;
            if self.report.events % 2_000 == 0 {
                self.check_log_matching()?;
            }
        }
        self.now_us = end_us;
        Ok(())
    }

    /// Kill the leader of the quiesced cluster for good: its followers have
    /// no timers, so only the failure detector's `peer_down` can get them to
    /// elect a new leader. They campaign within a quarter election timeout
    /// of the report; followers told at about the same time may split the
    /// vote, and each split costs a randomized timeout `[T, 2T)` more — often,
    /// in the seeds whose message delays are not much below the election
    /// timeout (Raft §5.6 wants broadcast time ≪ election timeout). So: the
    /// detector's delay, a quarter timeout, up to four split rounds and
    /// their round trips, with 10 % for clock skew. Without `peer_down` the
    /// quiesced followers would never elect.
    fn check_failover(&mut self) -> Result<(), Failure> {
        let Some(leader) = self.newest_leader() else {
            return Ok(());
        };
        let Some(raft) = self.nodes[leader].raft.as_ref() else {
            return Ok(());
        };
        let (members, term) = (raft.membership().clone(), raft.term());
        let survivors = members
            .voter_ids()
            .filter(|id| *id != server_id(leader))
            .count();
        if survivors < members.quorum() {
            return Ok(());
        }
        self.crash_node(leader);
        let killed_at = self.now_us;
        let window_us = (self.config.detector_delay_max_ms
            + self.config.election_timeout_ms / 4
            + 4 * 2 * self.config.election_timeout_ms)
            * 1_100
            + 4 * 4 * self.config.delay_max_us;
        let mut elected_at = None;
        while elected_at.is_none() && self.now_us < killed_at + window_us {
            self.run_until((self.now_us + 1_000).min(killed_at + window_us))?;
            let new_leader = self
                .nodes
                .iter()
                .filter_map(|n| n.raft.as_ref())
                .any(|r| r.role() == Role::Leader && r.term() > term);
            if new_leader {
                elected_at = Some(self.now_us);
            }
        }
        let Some(elected_at) = elected_at else {
            return Err(self.fail(format!(
                "failover: no new leader {} ms after the quiesced leader {} was killed; servers:{}",
                window_us / 1_000,
                server_id(leader),
                self.statuses()
            )));
        };
        let took_ms = (elected_at - killed_at).div_ceil(1_000);
        self.report.failovers += 1;
        self.report.failover_ms_max = self.report.failover_ms_max.max(took_ms);
        self.report.failover_ms_total += took_ms;
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Tick(node) => {
                let now = self.local_ms(node);
                let Some(raft) = self.nodes[node].raft.as_mut() else {
                    return Ok(());
                };
                // As in the runtime, a server with no deadline is parked and
                // not ticked at all.
                if raft.next_deadline_ms().is_some() {
                    raft.tick(now);
                }
                let next = self.now_us + self.local_delay_us(node, self.tick_ms());
                self.schedule(next, Event::Tick(node));
                self.process_actions(node)?;
            }
            Event::Deliver {
                to,
                incarnation,
                envelope,
            } => {
                if self.nodes[to].incarnation != incarnation {
                    return Ok(());
                }
                let now = self.local_ms(to);
                let Some(raft) = self.nodes[to].raft.as_mut() else {
                    return Ok(());
                };
                self.report.trace_digest =
                    crate::kv::fnv(self.report.trace_digest, envelope.message.kind().as_bytes());
                match raft.step(now, envelope) {
                    Ok(()) | Err(StepError::Terminated) => {}
                    Err(error) => {
                        return Err(self.fail(format!("node {to} refused a message: {error}")))
                    }
                }
                self.process_actions(to)?;
            }
            Event::Sync { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation {
                    return Ok(());
                }
                let now = self.local_ms(node);
                let n = &mut self.nodes[node];
                let Some(raft) = n.raft.as_mut() else {
                    return Ok(());
                };
                let synced = match n.disk.sync() {
                    Ok(synced) => synced,
                    Err(e) => return Err(self.fail(format!("node {node}: storage: {e}"))),
                };
                if self.trace {
                    eprintln!("{:>10} node {node}: synced {synced:?}", self.now_us);
                }
                if let Some((index, term)) = synced {
                    raft.log_durable(now, index, term);
                }
                self.process_actions(node)?;
            }
            Event::ClientNext(client) => self.client_next(client)?,
            Event::ClientTimeout { client, op } => {
                if self.clients[client].current == Some(op) {
                    self.finish_op(client, op, None);
                }
            }
            Event::Fault => self.inject_fault()?,
            Event::Crash { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation
                    && self.nodes[node].raft.is_some()
                    && self.healed_at_us.is_none()
                {
                    self.crash_node(node);
                    let at = self.now_us
                        + self
                            .rng
                            .gen_range(10_000..=self.config.fault_interval_max_us);
                    self.schedule(at, Event::Restart(node));
                }
            }
            Event::Churn => {
                if self.healed_at_us.is_some() {
                    return Ok(());
                }
                if let Some(leader) = self.newest_leader() {
                    self.crash_node(leader);
                }
                let n = self.config.nodes;
                let up = (0..n).filter(|i| self.nodes[*i].raft.is_some()).count();
                if up <= n / 2 {
                    let down: Vec<usize> =
                        (0..n).filter(|i| self.nodes[*i].raft.is_none()).collect();
                    let node = down[self.rng.gen_range(0..down.len())];
                    self.start_node(node)?;
                }
                // Mostly short pauses, sometimes long enough to elect.
                let pause = if self.rng.gen_bool(0.1) {
                    self.rng
                        .gen_range(0..self.config.election_timeout_ms * 1_000)
                } else {
                    self.rng.gen_range(0..13_000)
                };
                let at = self.now_us + pause + 1;
                self.schedule(at, Event::Churn);
            }
            Event::Restart(node) => {
                if self.nodes[node].raft.is_none() && self.healed_at_us.is_none() {
                    self.start_node(node)?;
                }
            }
            Event::Admin => self.admin()?,
            Event::Heal => {
                self.healed_at_us = Some(self.now_us);
                self.blocked.clear();
                self.loss_percent = 0;
                self.duplicate_percent = 0;
                for node in 0..self.config.nodes {
                    if self.nodes[node].raft.is_none() {
                        self.start_node(node)?;
                    }
                }
                // From here on the detector reports the truth.
                self.schedule_detect_all();
            }
            Event::Detect { observer, peer } => self.detect(observer, peer)?,
            Event::FalseSuspicion => self.false_suspicion()?,
        }
        Ok(())
    }

    fn process_actions(&mut self, node: usize) -> Result<(), Failure> {
        let Some(raft) = self.nodes[node].raft.as_mut() else {
            return Ok(());
        };
        let actions = raft.take_actions();
        for action in actions {
            match action {
                Action::SaveHardState(hard_state) => {
                    let saved = self.nodes[node].disk.save_hard_state(hard_state);
                    saved.map_err(|e| self.fail(format!("node {node}: storage: {e}")))?;
                }
                Action::AppendLog(entries) => {
                    if self.trace {
                        let range = entries
                            .first()
                            .zip(entries.last())
                            .map(|(a, b)| (a.index, b.index, b.term));
                        eprintln!("{:>10} node {node}: write {range:?}", self.now_us);
                    }
                    let appended = self.nodes[node].disk.append(entries);
                    if appended.map_err(|e| self.fail(format!("node {node}: storage: {e}")))? {
                        let at = self.now_us + self.rng.gen_range(100..3_000);
                        let incarnation = self.nodes[node].incarnation;
                        self.schedule(at, Event::Sync { node, incarnation });
                    }
                }
                Action::SaveSnapshot {
                    meta,
                    data,
                    keep_log_after,
                } => {
                    self.report.snapshots_saved += 1;
                    let saved = self.nodes[node]
                        .disk
                        .save_snapshot(meta, data, keep_log_after);
                    saved.map_err(|e| self.fail(format!("node {node}: storage: {e}")))?;
                }
                Action::Send(envelope) => self.send(node, envelope),
                Action::Reply { request, reply, .. } => {
                    let output = match reply {
                        KvReply::Ok => KvOutput::Ok,
                        KvReply::Swapped(swapped) => KvOutput::Swapped(swapped),
                    };
                    self.reply(node, request, Some(output));
                }
                Action::QueryReply { request, reply } => {
                    self.reply(node, request, Some(KvOutput::Value(reply)))
                }
                Action::Abandoned { reply_to, .. } => {
                    if let ReplyTo::Request(request) = reply_to {
                        // The command may still commit: its outcome is unknown.
                        self.reply(node, request, None);
                    }
                }
                Action::QueryAbandoned { request, leader } => {
                    // A read that was never confirmed had no effect: retry.
                    let retry = self.nodes[node].requests.remove(&request.0);
                    if let Some((client, _)) =
                        retry.filter(|(c, op)| self.clients[*c].current == Some(*op))
                    {
                        self.clients[client].in_flight = false;
                        if let Some(leader) = leader {
                            self.clients[client].target = node_index(leader);
                        }
                        let at = self.now_us + 1_000;
                        self.schedule(at, Event::ClientNext(client));
                    }
                }
                Action::RoleChanged { role, term, leader } => {
                    if role == Role::Leader
                        && self.config.crashes
                        && self.config.crash_new_leaders
                        && self.healed_at_us.is_none()
                        && self.rng.gen_bool(0.5)
                    {
                        let at = self.now_us + self.rng.gen_range(0..30_000);
                        let incarnation = self.nodes[node].incarnation;
                        self.schedule(at, Event::Crash { node, incarnation });
                    }
                    if self.trace {
                        eprintln!(
                            "{:>10} node {node}: {role:?} term {term} leader {leader:?}",
                            self.now_us
                        );
                    }
                }
                Action::Applied { .. } | Action::Effect(_) => {}
                Action::EndOfLife => {
                    return Err(self.fail(format!("node {node} reached end of life unasked")))
                }
                Action::ApplyHalted { index, reason } => {
                    return Err(
                        self.fail(format!("node {node} halted applying at {index}: {reason}"))
                    )
                }
            }
        }
        let raft = self.nodes[node].raft.as_ref();
        if let Some(raft) = raft {
            self.checker
                .check_node(node, raft)
                .map_err(|m| self.fail(m))?;
            let quiesced_leader = raft.role() == Role::Leader && raft.status().quiesced;
            if quiesced_leader && !self.nodes[node].quiesced_leader {
                self.report.quiescences += 1;
                if self.trace {
                    eprintln!("{:>10} node {node}: quiesced", self.now_us);
                }
            }
            self.nodes[node].quiesced_leader = quiesced_leader;
        }
        Ok(())
    }

    fn send(&mut self, from: usize, envelope: Envelope) {
        self.report.messages += 1;
        if matches!(envelope.message, Message::InstallSnapshot(_)) {
            self.report.snapshot_chunks_sent += 1;
        }
        let to = node_index(envelope.to);
        if to >= self.nodes.len() || self.blocked.contains(&(from, to)) {
            return;
        }
        if self.rng.gen_range(0..100) < self.loss_percent {
            return;
        }
        let copies = if self.rng.gen_range(0..100) < self.duplicate_percent {
            2
        } else {
            1
        };
        let incarnation = self.nodes[to].incarnation;
        for _ in 0..copies {
            let mut at = self.now_us + self.rng.gen_range(100..=self.config.delay_max_us.max(100));
            if !self.config.reorder {
                let last = self.link_clock.entry((from, to)).or_insert(0);
                at = at.max(*last);
                *last = at;
            }
            self.schedule(
                at,
                Event::Deliver {
                    to,
                    incarnation,
                    envelope: envelope.clone(),
                },
            );
        }
    }

    // ----- clients ----------------------------------------------------------

    fn client_next(&mut self, client: usize) -> Result<(), Failure> {
        if self.clients[client].in_flight {
            // A stale retry: the current attempt is still being served.
            return Ok(());
        }
        let op = match self.clients[client].current {
            Some(op) => op,
            // The idle tail: nothing new, so the cluster can quiesce.
            None if self.config.quiesce && self.now_us >= self.idle_from_us => return Ok(()),
            None => {
                let key = self.rng.gen_range(0..self.config.keys);
                let kind = self.rng.gen_range(0..3);
                let op = match kind {
                    0 => KvOp::Get { key },
                    1 => {
                        self.next_value += 1;
                        KvOp::Put {
                            key,
                            value: self.next_value,
                        }
                    }
                    _ => {
                        self.next_value += 1;
                        let expected = self.clients[client].seen.get(&key).copied().flatten();
                        KvOp::Cas {
                            key,
                            expected,
                            new: self.next_value,
                        }
                    }
                };
                let index = self.history.len();
                self.history.push(Operation {
                    client: client as u64,
                    invoke: self.now_us,
                    complete: u64::MAX,
                    op,
                    output: None,
                });
                self.clients[client].current = Some(index);
                self.schedule(
                    self.now_us + OP_TIMEOUT_US,
                    Event::ClientTimeout { client, op: index },
                );
                index
            }
        };
        let node = self.clients[client].target;
        let now = self.local_ms(node);
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let low = self.rng.gen_range(0..100) < self.config.low_priority_percent;
        let Some(raft) = self.nodes[node].raft.as_mut() else {
            self.clients[client].target = self.rng.gen_range(0..self.config.nodes);
            self.schedule(self.now_us + 5_000, Event::ClientNext(client));
            return Ok(());
        };
        let result = match self.history[op].op.clone() {
            KvOp::Get { key } => raft.consistent_query(now, request, KvQuery { key }),
            KvOp::Put { key, value } => raft.propose(
                now,
                KvCommand::Put { key, value },
                if low { Priority::Low } else { Priority::Normal },
                ReplyTo::Request(request),
            ),
            KvOp::Cas { key, expected, new } => raft.propose(
                now,
                KvCommand::Cas { key, expected, new },
                Priority::Normal,
                ReplyTo::Request(request),
            ),
        };
        match result {
            Ok(()) => {
                self.clients[client].in_flight = true;
                self.nodes[node].requests.insert(request.0, (client, op));
            }
            Err(ProposeError::NotLeader { leader }) => {
                self.clients[client].target = match leader {
                    Some(leader) => node_index(leader),
                    None => self.rng.gen_range(0..self.config.nodes),
                };
                let at = self.now_us + self.rng.gen_range(1_000..10_000);
                self.schedule(at, Event::ClientNext(client));
            }
            Err(_) => {
                let at = self.now_us + self.rng.gen_range(5_000..20_000);
                self.schedule(at, Event::ClientNext(client));
            }
        }
        self.process_actions(node)
    }

    fn reply(&mut self, node: usize, request: RequestId, output: Option<KvOutput>) {
        let Some((client, op)) = self.nodes[node].requests.remove(&request.0) else {
            return;
        };
        if self.trace {
            eprintln!(
                "{:>10} node {node} answers client {client} op #{op}: {output:?}",
                self.now_us
            );
        }
        if self.clients[client].current == Some(op) {
            self.finish_op(client, op, output);
        }
    }

    fn finish_op(&mut self, client: usize, op: usize, output: Option<KvOutput>) {
        let entry = &mut self.history[op];
        if output.is_some() {
            entry.complete = self.now_us;
            self.report.completed += 1;
        } else {
            self.report.unknown += 1;
        }
        match (&entry.op, &output) {
            (KvOp::Get { key }, Some(KvOutput::Value(value))) => {
                self.clients[client].seen.insert(*key, *value);
            }
            (KvOp::Put { key, value }, Some(_)) => {
                self.clients[client].seen.insert(*key, Some(*value));
            }
            (KvOp::Cas { key, new, .. }, Some(KvOutput::Swapped(true))) => {
                self.clients[client].seen.insert(*key, Some(*new));
            }
            _ => {}
        }
        entry.output = output;
        self.clients[client].current = None;
        self.clients[client].in_flight = false;
        let think = self.rng.gen_range(0..5_000);
        self.schedule(self.now_us + think, Event::ClientNext(client));
    }

    // ----- faults -----------------------------------------------------------

    fn inject_fault(&mut self) -> Result<(), Failure> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        let n = self.config.nodes;
        let partitioned_before = self.blocked.clone();
        match self.rng.gen_range(0..6) {
            0 | 1 if self.config.partitions && n > 1 => {
                // Cut the nodes in two groups, or one way between two nodes.
                self.blocked.clear();
                if self.rng.gen_bool(0.3) {
                    let a = self.rng.gen_range(0..n);
                    let b = (a + self.rng.gen_range(1..n)) % n;
                    self.blocked.insert((a, b));
                } else {
                    let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                    for a in 0..n {
                        for b in 0..n {
                            if side[a] != side[b] {
                                self.blocked.insert((a, b));
                            }
                        }
                    }
                }
            }
            2 => self.blocked.clear(),
            3 | 4 if self.config.crashes => {
                // Leaders are the interesting victims (Raft Figure 8): crash
                // the newest one half the time, else anyone.
                let node = match self.newest_leader() {
                    Some(leader) if self.rng.gen_bool(0.5) => leader,
                    _ => self.rng.gen_range(0..n),
                };
                if self.nodes[node].raft.is_some() {
                    self.crash_node(node);
                    let at = self.now_us
                        + self
                            .rng
                            .gen_range(10_000..=self.config.fault_interval_max_us);
                    self.schedule(at, Event::Restart(node));
                } else {
                    self.start_node(node)?;
                }
            }
            _ => {
                self.loss_percent =
                    [0, 1, 5, 20][self.rng.gen_range(0..4)].max(self.config.loss_percent.min(5));
            }
        }
        if partitioned_before != self.blocked {
            self.schedule_detect_all();
        }
        let next = self.now_us
            + self
                .rng
                .gen_range(20_000..=self.config.fault_interval_max_us);
        self.schedule(next, Event::Fault);
        Ok(())
    }

    /// Servers tick at a tenth of the election timeout.
    fn tick_ms(&self) -> u64 {
        (self.config.election_timeout_ms / 10).max(1)
    }

    /// The running server that leads the newest term, if any.
    fn newest_leader(&self) -> Option<usize> {
        (0..self.config.nodes)
            .filter(|i| {
                self.nodes[*i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .max_by_key(|i| self.nodes[*i].raft.as_ref().map_or(0, |r| r.term()))
    }

    fn admin(&mut self) -> Result<(), Failure> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        if let Some(leader) = self.newest_leader() {
            let now = self.local_ms(leader);
            let n = self.config.nodes;
            let target = self.rng.gen_range(0..n);
            let change = self.config.membership_changes
                && (!self.config.transfers || self.rng.gen_bool(0.5));
            if let Some(raft) = self.nodes[leader].raft.as_mut() {
                if change {
                    let id = server_id(target);
                    let members = raft.membership().clone();
                    let change = if members.contains(id) {
                        if !members.is_voter(id) && self.rng.gen_bool(0.5) {
                            MembershipChange::Promote(id)
                        } else {
                            MembershipChange::Remove(id)
                        }
                    } else if self.rng.gen_bool(0.5) {
                        MembershipChange::AddPromotable(id)
                    } else {
                        MembershipChange::AddVoter(id)
                    };
                    if raft.change_membership(now, change).is_ok() {
                        self.report.membership_changes += 1;
                    }
                } else if raft.transfer_leadership(now, server_id(target)).is_ok() {
                    self.report.transfers += 1;
                }
            }
            self.process_actions(leader)?;
        }
        let next = self.now_us + self.rng.gen_range(150_000..600_000);
        self.schedule(next, Event::Admin);
        Ok(())
    }

    // ----- final checks -----------------------------------------------------

    fn check_log_matching(&self) -> Result<(), Failure> {
        let rafts: Vec<&Raft<SimKv>> = self.nodes.iter().filter_map(|n| n.raft.as_ref()).collect();
        crate::checker::check_log_matching(&rafts).map_err(|m| self.fail(m))
    }

    /// Every running server's status, for failure reports.
    fn statuses(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .map(|r| {
                format!(
                    "\n    {:?} next deadline {:?}",
                    r.status(),
                    r.next_deadline_ms()
                )
            })
            .collect()
    }

    /// After the idle tail, every member of the newest leader's configuration
    /// is quiesced with no deadline (a server outside it may still campaign:
    /// thesis §4.2.3's removed servers).
    fn check_quiesced(&self) -> Result<(), Failure> {
        let Some(leader) = self.newest_leader() else {
            return Ok(());
        };
        let members = match self.nodes[leader].raft.as_ref() {
            Some(raft) => raft.membership().clone(),
            None => return Ok(()),
        };
        let busy: Vec<ServerId> = self
            .nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| members.contains(r.id()))
            .filter(|r| !r.status().quiesced || r.next_deadline_ms().is_some())
            .map(|r| r.id())
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        Err(self.fail(format!(
            "quiescence: {busy:?} not quiesced after {} idle ms; servers:{}",
            self.config.idle_tail_ms,
            self.statuses()
        )))
    }

    fn finish(mut self) -> Result<Report, Failure> {
        self.check_log_matching()?;
        // Liveness: once faults heal, the cluster elects a leader and serves.
        let healed = self.healed_at_us.unwrap_or(0);
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .any(|r| r.role() == Role::Leader && r.membership().is_voter(r.id()));
        if !leader {
            return Err(self.fail(format!(
                "liveness: no leader {} ms after faults healed; servers:{}",
                self.config.heal_phase_ms,
                self.statuses()
            )));
        }
        let served = self
            .history
            .iter()
            .any(|op| op.invoke >= healed && op.output.is_some());
        if !served {
            return Err(self.fail(format!(
                "liveness: no client operation completed in the {} ms after faults healed; servers:{}",
                self.config.heal_phase_ms,
                self.statuses()
            )));
        }
        // Operations still running at the end have unknown outcomes.
        match linearizability::check(&self.history, 2_000_000) {
            Verdict::Linearizable => {}
            Verdict::Violation { .. } => {
                let prefix = shortest_failing_prefix(&self.history);
                let verdict = linearizability::check(&prefix, 2_000_000);
                let description = linearizability::describe(&prefix, &verdict);
                return Err(self.fail(format!(
                    "client history is not linearizable:\n{description}"
                )));
            }
            Verdict::Undecided { key } => {
                return Err(self.fail(format!(
                    "linearizability undecided for key {key} within the step budget"
                )));
            }
        }
        self.report.operations = self.history.len();
        self.report.committed = self.checker.committed();
        self.report.leaders = self.checker.leaders();
        Ok(self.report)
    }
}

/// The history as it stood at time `at`: operations invoked by then, those
/// not yet answered then having unknown outcomes.
fn history_at(history: &[Operation], at: u64) -> Vec<Operation> {
    history
        .iter()
        .filter(|op| op.invoke <= at)
        .map(|op| {
            let mut op = op.clone();
            if op.complete > at {
                op.output = None;
                op.complete = u64::MAX;
            }
            op
        })
        .collect()
}

/// The shortest prefix of a non-linearizable history that is already not
/// linearizable (binary search on time), so a report shows where it broke.
fn shortest_failing_prefix(history: &[Operation]) -> Vec<Operation> {
    let mut times: Vec<u64> = history
        .iter()
        .flat_map(|op| [op.invoke, op.complete])
        .filter(|t| *t != u64::MAX)
        .collect();
    times.sort_unstable();
    times.dedup();
    let fails = |at: u64| {
        matches!(
            linearizability::check(&history_at(history, at), 2_000_000),
            Verdict::Violation { .. }
        )
    };
    let (mut low, mut high) = (0, times.len());
    while low < high {
        let middle = (low + high) / 2;
        if fails(times[middle]) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    match times.get(low) {
        Some(at) => history_at(history, *at),
        None => history.to_vec(),
    }
}

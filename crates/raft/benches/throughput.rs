//! Throughput of the bare core: a 3-member cluster driven directly (no
//! runtime, no I/O), entries "durable" as soon as they are written,
//! 256-byte commands. Measures commands applied per second on every replica
//! with batching, and proposal-to-commit latency in message rounds.
//!
//! `cargo bench -p chorus-raft` prints criterion's report, then a markdown
//! summary that `scripts/bench-docs.py` puts into docs/benchmarks.md.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;
use chorus_raft::{
    Action, ApplyMeta, ClusterId, Config, Configuration, Effects, Envelope, Machine, Persisted,
    Priority, Raft, ReplyTo, RequestId, RestoreError, Role, ServerId,
};
use criterion::{BenchmarkId, Criterion, Throughput};

const COMMAND_BYTES: usize = 256;
const BATCHES: [u64; 3] = [1, 256, 4_096];

/// Counts what it applies; nothing else.
#[derive(Default)]
struct Sink {
    applied: u64,
    bytes: u64,
}

impl Machine for Sink {
    type Command = Bytes;
    type Reply = u64;
    type Query = ();
    type QueryReply = u64;
    type Message = ();

    fn apply(&mut self, _meta: &ApplyMeta, command: Bytes, _effects: &mut Effects<Self>) -> u64 {
        self.applied += 1;
        self.bytes += command.len() as u64;
        self.applied
    }

    fn query(&self, _query: &()) -> u64 {
        self.applied
    }

    fn snapshot(&self) -> Vec<u8> {
        self.applied.to_le_bytes().to_vec()
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        let bytes: [u8; 8] = data.try_into().map_err(|_| RestoreError {
            reason: "expected 8 bytes".into(),
        })?;
        Ok(Sink {
            applied: u64::from_le_bytes(bytes),
            bytes: 0,
        })
    }
}

struct Cluster {
    servers: Vec<Raft<Sink>>,
    network: VecDeque<Envelope>,
    now_ms: u64,
    replies: u64,
}

impl Cluster {
    fn new() -> Self {
        let ids: Vec<ServerId> = (1..=3).map(ServerId).collect();
        let servers = ids
            .iter()
            .map(|id| {
                let mut config = Config::new(ClusterId(1), *id);
                config.pending_proposals_max = usize::MAX;
                config.append_entries_max = 8_192;
                config.append_bytes_max = 8 << 20;
                let persisted = Persisted {
                    initial_config: Configuration::voters(ids.iter().copied()),
                    ..Persisted::default()
                };
                match Raft::new(config, persisted, Sink::default(), id.0, 0) {
                    Ok(raft) => raft,
                    Err(error) => panic!("bench cluster: {error}"),
                }
            })
            .collect();
        let mut cluster = Cluster {
            servers,
            network: VecDeque::new(),
            now_ms: 0,
            replies: 0,
        };
        cluster.servers[0].trigger_election(0);
        cluster.settle();
        assert_eq!(cluster.servers[0].role(), Role::Leader);
        cluster
    }

    /// Execute one server's actions until it has none: writes are durable
    /// at once, so what waits on durability goes out in the same round.
    fn drain(&mut self, index: usize) -> bool {
        let mut busy = false;
        loop {
            let actions = self.servers[index].take_actions();
            if actions.is_empty() {
                return busy;
            }
            busy = true;
            let mut durable = None;
            for action in actions {
                match action {
                    Action::AppendLog(entries) => {
                        durable = entries.last().map(|e| (e.index, e.term))
                    }
                    Action::Send(envelope) => self.network.push_back(envelope),
                    Action::Reply { .. } => self.replies += 1,
                    _ => {}
                }
            }
            if let Some((log_index, term)) = durable {
                self.servers[index].log_durable(self.now_ms, log_index, term);
            }
        }
    }

    /// Deliver every message in flight: one message round.
    fn round(&mut self) -> bool {
        let mut busy = false;
        for index in 0..self.servers.len() {
            busy |= self.drain(index);
        }
        let in_flight: Vec<Envelope> = self.network.drain(..).collect();
        busy |= !in_flight.is_empty();
        for envelope in in_flight {
            let to = (envelope.to.0 - 1) as usize;
            if let Err(error) = self.servers[to].step(self.now_ms, envelope) {
                panic!("bench cluster refused a message: {error}");
            }
        }
        busy
    }

    fn settle(&mut self) {
        while self.round() {}
    }

    fn applied_everywhere(&self) -> u64 {
        self.servers
            .iter()
            .map(|s| s.machine().applied)
            .min()
            .unwrap_or(0)
    }

    /// Propose `count` commands as one batch and run until all replicas
    /// applied them.
    fn run_batch(&mut self, count: u64, command: &Bytes) {
        let target = self.applied_everywhere() + count;
        for _ in 0..count {
            if let Err(error) = self.servers[0].propose(
                self.now_ms,
                command.clone(),
                Priority::Normal,
                ReplyTo::Nobody,
            ) {
                panic!("bench propose: {error}");
            }
        }
        while self.applied_everywhere() < target {
            if !self.round() {
                let statuses: Vec<_> = self.servers.iter().map(|s| s.status()).collect();
                panic!("bench cluster stalled short of {target}: {statuses:#?}");
            }
        }
    }

    /// Message rounds from proposing one command to its reply at the leader.
    fn rounds_to_commit(&mut self, command: &Bytes) -> u64 {
        let before = self.replies;
        if let Err(error) = self.servers[0].propose(
            self.now_ms,
            command.clone(),
            Priority::Normal,
            ReplyTo::Request(RequestId(1)),
        ) {
            panic!("bench propose: {error}");
        }
        // Count the rounds in which messages crossed the network before
        // the leader produced the reply.
        let mut rounds = 0;
        loop {
            for index in 0..self.servers.len() {
                self.drain(index);
            }
            if self.replies > before {
                break;
            }
            rounds += 1;
            self.round();
        }
        self.settle();
        rounds
    }
}

/// criterion's median estimate (ns per iteration) for one benchmark.
fn median_ns(group: &str, id: &str) -> Option<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let at = text.find("\"median\"")?;
    let rest = &text[at..];
    let start = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let end = rest[start..].find(',')? + start;
    rest[start..end].trim().parse().ok()
}

fn main() {
    let command = Bytes::from(vec![7u8; COMMAND_BYTES]);
    let mut criterion = Criterion::default().configure_from_args();
    let group_name = "raft_core_3_members";
    let mut group = criterion.benchmark_group(group_name);
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::new("apply", batch), &batch, |bench, &batch| {
            let mut cluster = Cluster::new();
            bench.iter(|| cluster.run_batch(batch, &command));
        });
    }
    group.finish();
    criterion.final_summary();

    let rounds = Cluster::new().rounds_to_commit(&command);
    let mut section = String::from(
        "## Raft core (`cargo bench -p chorus-raft`)\n\n\
         3 members in one thread, driven directly (no runtime, no I/O, writes durable at once), \
         256-byte commands, every command applied on all three replicas. Median of criterion's samples.\n\n\
         | batch (commands per round) | commands applied / s | vs target 3,000,000 / s |\n|---:|---:|---:|\n",
    );
    for batch in BATCHES {
        match median_ns(group_name, &format!("apply/{batch}")) {
            Some(ns) => {
                let per_second = batch as f64 / (ns * 1e-9);
                section.push_str(&format!(
                    "| {batch} | {per_second:.0} | {:.2}× |\n",
                    per_second / 3_000_000.0
                ));
            }
            None => section.push_str(&format!("| {batch} | (no criterion estimate) | |\n")),
        }
    }
    section.push_str(&format!(
        "\nProposal to commit (reply at the leader), one command, idle cluster: **{rounds} message rounds** \
         (AppendEntries out, acknowledgement back).\n\
         For orientation: openraft's own in-memory 3-member benchmark reaches 1.3–1.5M commands/s on this \
         machine (steering team's figure; it includes openraft's runtime).\n\n"
    ));
    // scripts/bench-docs.py splices this block into docs/benchmarks.md.
    println!("\n<!-- raft-core:begin -->\n{section}<!-- raft-core:end -->");
}

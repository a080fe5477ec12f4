//! The node runtime's Raft API under load, in the shapes the issue asks for
//! (and in which ra and openraft were measured on this machine):
//!
//! * `one-node`: 3 members hosted by one Node, sharing its WAL (fsync on);
//! * `three-nodes`: 3 Nodes in this process on loopback TCP, each with its
//!   own WAL (fsync on);
//! * `memory`: 3 members in one Node with an in-memory log (openraft's
//!   cluster benchmark shape);
//! * `clusters`: 1,000 three-member clusters over 3 Nodes (one per node
//!   each): RSS and CPU while idle, aggregate throughput.
//!
//! Each row: `process_command` with 1, 16, 64, 256 concurrent callers
//! (throughput, p50 / p99 latency) and `pipeline_command` (normal and low
//! priority). 256-byte commands. The markdown table goes to stdout between
//! `<!-- node:begin -->` / `<!-- node:end -->` for `scripts/bench-docs.py`.
//!
//! ```text
//! cargo run --release -p chorus-bench --bin node-bench            # full run
//! cargo run --release -p chorus-bench --bin node-bench -- --quick # smoke run
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chorus_node::{Node, NodeConfig, PipelineEvent, ServerRef, StorageMode};
use chorus_raft::{ApplyMeta, Effects, Machine, NodeId, Priority, RestoreError};
use clap::Parser;
use hdrhistogram::Histogram;

/// Size of every command's payload (the bench issue's value size).
const VALUE_BYTES: usize = 256;
/// Pipelined commands in flight per caller.
const PIPELINE_WINDOW: u64 = 4_096;

#[derive(Parser, Debug)]
#[command(about = "chorus-node benchmarks")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// A smoke run: short measurements, fewer clusters.
    #[arg(long)]
    quick: bool,
    /// Where the on-disk topologies keep their data (must be a real disk:
    /// fsync on tmpfs measures nothing).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Number of clusters for the many-clusters row.
    #[arg(long, default_value_t = 1_000)]
    clusters: usize,
    /// Only these sections (one-node, three-nodes, memory, clusters).
    #[arg(long)]
    only: Vec<String>,
}

/// The benchmark's machine: counts commands and bytes, releases its log
/// regularly (as a real machine must, to keep memory bounded).
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

    fn apply(&mut self, _: &ApplyMeta, command: Bytes, effects: &mut Effects<Self>) -> u64 {
        self.applied += 1;
        self.bytes += command.len() as u64;
        if self.applied.is_multiple_of(4_096) {
            effects.release_cursor();
        }
        self.applied
    }

    fn query(&self, _: &()) -> u64 {
        self.applied
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = self.applied.to_le_bytes().to_vec();
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        let bad = || RestoreError {
            reason: "a Sink snapshot is 16 bytes".into(),
        };
        let applied = data.get(..8).ok_or_else(bad)?;
        let bytes = data.get(8..16).ok_or_else(bad)?;
        Ok(Sink {
            applied: u64::from_le_bytes(applied.try_into().map_err(|_| bad())?),
            bytes: u64::from_le_bytes(bytes.try_into().map_err(|_| bad())?),
        })
    }
}

const KIND: &str = "sink";

struct Row {
    topology: String,
    call: String,
    callers: usize,
    ops_per_second: f64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    errors: u64,
    note: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn wants(args: &Args, section: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|s| s == section)
}

async fn run(args: Args) -> Result<()> {
    let seconds = if args.quick { 0.5 } else { args.seconds };
    let duration = Duration::from_secs_f64(seconds);
    let scratch;
    let data_dir: &Path = match &args.data_dir {
        Some(dir) => dir,
        None => {
            // Under target/: on the real disk (fsync on tmpfs measures
            // nothing) and ignored by git.
            std::fs::create_dir_all("target")?;
            scratch = tempfile::Builder::new()
                .prefix("node-bench-data")
                .tempdir_in("target")
                .context("creating a data dir under target/")?;
            scratch.path()
        }
    };
    let mut rows = Vec::new();
    let caller_counts: &[usize] = if args.quick {
        &[1, 16]
    } else {
        &[1, 16, 64, 256]
    };

    for (section, topology, storage, nodes) in [
        (
            "one-node",
            "3 members, 1 node, shared WAL (fsync)",
            StorageMode::Disk,
            1u64,
        ),
        (
            "three-nodes",
            "3 nodes, loopback TCP (fsync)",
            StorageMode::Disk,
            3,
        ),
        (
            "memory",
            "3 members, 1 node, in-memory log",
            StorageMode::Memory,
            1,
        ),
    ] {
        if !wants(&args, section) {
            continue;
        }
        let dir = data_dir.join(section);
        let nodes = start_nodes(nodes, &dir, storage.clone()).await?;
        let members: Vec<ServerRef> = (0..3u64)
            .map(|i| {
                let node = nodes[(i as usize) % nodes.len()].id();
                ServerRef::new(format!("bench-{i}"), node)
            })
            .collect();
        let started = nodes[0]
            .start_cluster(
                "bench",
                KIND,
                Bytes::new(),
                &members,
                Duration::from_secs(10),
            )
            .await
            .context("starting the benchmark cluster")?;
        let leader = started.leader.clone();
        let client = nodes
            .iter()
            .find(|n| n.id() == leader.node)
            .context("leader's node")?
            .clone();
        let mut counts: Vec<usize> = caller_counts.to_vec();
        if section == "memory" && !args.quick {
            counts.extend([1_024, 4_096]);
        }
        for &callers in &counts {
            let row =
                process_commands(&client, std::slice::from_ref(&leader), callers, duration).await;
            eprintln!("{topology}: process_command x{callers}: {:.0} ops/s", row.0);
            rows.push(row.into_row(topology, "process_command", callers));
        }
        for priority in [Priority::Normal, Priority::Low] {
            let (rate, errors) = pipeline(&client, &leader, priority, duration).await;
            eprintln!("{topology}: pipeline_command {priority:?}: {rate:.0} ops/s");
            rows.push(Row {
                topology: topology.to_string(),
                call: format!(
                    "pipeline_command ({})",
                    format!("{priority:?}").to_lowercase()
                ),
                callers: 1,
                ops_per_second: rate,
                p50_us: None,
                p99_us: None,
                errors,
                note: format!("window {PIPELINE_WINDOW}"),
            });
        }
        for node in &nodes {
            node.shutdown().await?;
        }
    }

    if wants(&args, "clusters") {
        let clusters = if args.quick { 50 } else { args.clusters };
        rows.extend(
            many_clusters(clusters, &data_dir.join("clusters"), duration, args.quick).await?,
        );
    }

    print_table(&rows, seconds);
    Ok(())
}

async fn start_nodes(count: u64, dir: &Path, storage: StorageMode) -> Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::new();
    for id in 1..=count {
        let mut config = NodeConfig::new(NodeId(id), dir.join(format!("n{id}")));
        if matches!(storage, StorageMode::Memory) {
            // An in-memory WAL file grows by reallocation; rolling over
            // sooner keeps each copy small.
            config.log.wal_max_size_bytes = 16 << 20;
        }
        config.storage = storage.clone();
        config.listen = Some("127.0.0.1:0".parse()?);
        config.cluster_token = 0xBE4C;
        let node = Node::start(config).await?;
        node.register_machine(KIND, |_: &[u8]| Ok(Sink::default()));
        nodes.push(node);
    }
    for a in &nodes {
        for b in &nodes {
            if a.id() != b.id() {
                a.add_peer(b.id(), b.local_addr().context("listening")?);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes
        .iter()
        .all(|a| nodes.iter().all(|b| a.is_node_up(b.id())))
    {
        if Instant::now() > deadline {
            bail!("nodes did not connect");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(nodes)
}

struct Measured(f64, Histogram<u64>, u64);

impl Measured {
    fn into_row(self, topology: &str, call: &str, callers: usize) -> Row {
        let Measured(rate, histogram, errors) = self;
        let has = !histogram.is_empty();
        Row {
            topology: topology.to_string(),
            call: call.to_string(),
            callers,
            ops_per_second: rate,
            p50_us: has.then(|| histogram.value_at_quantile(0.5)),
            p99_us: has.then(|| histogram.value_at_quantile(0.99)),
            errors,
            note: String::new(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// `callers` tasks, each submitting one command at a time to a random
/// server of `servers` for `duration`.
async fn process_commands(
    node: &Node,
    servers: &[ServerRef],
    callers: usize,
    duration: Duration,
) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut tasks = Vec::with_capacity(callers);
    // Warm-up: let every caller start before the clock does.
    let started = Instant::now();
    for caller in 0..callers {
        let node = node.clone();
        let stop = Arc::clone(&stop);
        let errors = Arc::clone(&errors);
        let value = value.clone();
        let servers = servers.to_vec();
        tasks.push(tokio::spawn(async move {
            // Raw samples: a histogram per caller would cost thousands of
            // callers hundreds of MiB of fresh pages.
            let mut latencies: Vec<u64> = Vec::new();
            let mut next = caller;
            while !stop.load(Ordering::Relaxed) {
                let server = &servers[next % servers.len()];
                next = next.wrapping_add(7);
                let sent = Instant::now();
                match node.process_command::<Sink>(server, value.clone()).await {
                    Ok(_) => latencies.push(sent.elapsed().as_micros().max(1) as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for task in tasks {
        if let Ok(latencies) = task.await {
            for latency in latencies {
                let _ = all.record(latency);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Measured(
        all.len() as f64 / elapsed,
        all,
        errors.load(Ordering::Relaxed),
    )
}

/// One caller pipelining with up to PIPELINE_WINDOW commands in flight.
async fn pipeline(
    node: &Node,
    leader: &ServerRef,
    priority: Priority,
    duration: Duration,
) -> (f64, u64) {
    let mut stream = node.pipeline_stream::<Sink>();
    let value = Bytes::from(vec![9u8; VALUE_BYTES]);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut applied: u64 = 0;
    let mut errors: u64 = 0;
    let end = started + duration;
    loop {
        let now = Instant::now();
        if now >= end && applied >= sent {
            break;
        }
        while now < end && sent - applied < PIPELINE_WINDOW {
            let correlation = Some((stream.caller(), sent));
            if node
                .pipeline_command::<Sink>(leader, value.clone(), correlation, priority)
                .await
                .is_err()
            {
                errors += 1;
            }
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(PipelineEvent::Applied { replies, .. }))) => applied += replies.len() as u64,
            Ok(Some(Ok(PipelineEvent::Rejected { .. }))) | Ok(Some(Err(_))) => {
                errors += 1;
                applied += 1;
            }
            Ok(None) | Err(_) => {
                errors += sent - applied;
                break;
            }
        }
    }
    (applied as f64 / started.elapsed().as_secs_f64(), errors)
}

/// CPU time used by this process so far (user + system), in µs.
fn cpu_us() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Resident set size, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

async fn many_clusters(
    clusters: usize,
    dir: &Path,
    duration: Duration,
    quick: bool,
) -> Result<Vec<Row>> {
    let topology = format!("{clusters} clusters x 3 members, 3 nodes (fsync)");
    let nodes = start_nodes(3, dir, StorageMode::Disk).await?;
    let rss_before = rss_kib();
    let mut leaders = Vec::with_capacity(clusters);
    let started = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    for c in 0..clusters {
        let node = nodes[c % 3].clone();
        let members: Vec<ServerRef> = (1..=3u64)
            .map(|n| ServerRef::new(format!("c{c}"), NodeId(n)))
            .collect();
        pending.spawn(async move {
            node.start_cluster(
                &format!("c{c}"),
                KIND,
                Bytes::new(),
                &members,
                Duration::from_secs(60),
            )
            .await
        });
        while pending.len() >= 32 {
            if let Some(joined) = pending.join_next().await {
                leaders.push(joined?.map_err(|e| anyhow::anyhow!("{e}"))?.leader);
            }
        }
    }
    while let Some(joined) = pending.join_next().await {
        leaders.push(joined?.map_err(|e| anyhow::anyhow!("{e}"))?.leader);
    }
    let start_seconds = started.elapsed().as_secs_f64();
    eprintln!("{clusters} clusters started in {start_seconds:.1} s");
    // One write each, then let everything quiesce.
    for leader in &leaders {
        let node = nodes
            .iter()
            .find(|n| n.id() == leader.node)
            .context("leader node")?;
        node.process_command::<Sink>(leader, Bytes::from_static(b"x"))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let servers = clusters * 3;
    let rss_idle = rss_kib();
    let idle_window = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let cpu_before = cpu_us();
    let wall = Instant::now();
    tokio::time::sleep(idle_window).await;
    let idle_cpu = (cpu_us() - cpu_before) as f64 / wall.elapsed().as_micros() as f64;
    let per_server_kib = rss_idle.saturating_sub(rss_before) as f64 / servers as f64;
    eprintln!(
        "idle: {:.2}% of a core for {servers} servers on 3 nodes; RSS +{} KiB ({per_server_kib:.1} KiB per server)",
        idle_cpu * 100.0,
        rss_idle.saturating_sub(rss_before)
    );
    let mut rows = vec![Row {
        topology: topology.clone(),
        call: "idle".into(),
        callers: 0,
        ops_per_second: 0.0,
        p50_us: None,
        p99_us: None,
        errors: 0,
        note: format!(
            "CPU {:.2}% of one core per node; {per_server_kib:.1} KiB RSS per server ({:.0} MiB per node); started in {start_seconds:.1} s",
            idle_cpu * 100.0 / 3.0,
            rss_idle.saturating_sub(rss_before) as f64 / 3.0 / 1024.0,
        ),
    }];
    // Aggregate throughput: callers on every node, each calling clusters
    // whose leader is local to it.
    let mut measured = Vec::new();
    for node in &nodes {
        let local: Vec<ServerRef> = leaders
            .iter()
            .filter(|l| l.node == node.id())
            .cloned()
            .collect();
        if local.is_empty() {
            continue;
        }
        let node = node.clone();
        measured.push(tokio::spawn(async move {
            process_commands(&node, &local, 86, duration).await
        }));
    }
    let mut rate = 0.0;
    let mut all = histogram();
    let mut errors = 0;
    for task in measured {
        let Measured(r, h, e) = task.await?;
        rate += r;
        let _ = all.add(&h);
        errors += e;
    }
    eprintln!("{topology}: aggregate {rate:.0} ops/s");
    let mut row =
        Measured(rate, all, errors).into_row(&topology, "process_command (aggregate)", 258);
    row.note = "86 callers per node, spread over the clusters it leads".into();
    rows.push(row);
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok(rows)
}

fn print_table(rows: &[Row], seconds: f64) {
    println!("<!-- node:begin -->");
    println!(
        "### chorus-node: the Raft API (`cargo run --release -p chorus-bench --bin node-bench`)\n"
    );
    println!("{seconds} s per row, 256-byte commands, 2 worker threads; process_command callers each wait for their reply before sending the next.\n");
    println!("| topology | call | callers | ops/s | p50 µs | p99 µs | errors | note |");
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let us = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            row.topology,
            row.call,
            row.callers,
            row.ops_per_second,
            us(row.p50_us),
            us(row.p99_us),
            row.errors,
            row.note
        );
    }
    println!("<!-- node:end -->");
}

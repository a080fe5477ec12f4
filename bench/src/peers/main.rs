//! `peers-bench`: chorus against etcd on this machine, side by side, with
//! the identical etcd v3 client load (issue 7).
//!
//! It starts the servers itself — etcd 3.4 from Debian's etcd-server
//! (installed with apt-get when missing) and `chorus serve`, 1 and 3
//! members on loopback, data on the real disk — measures the latency
//! floors (fdatasync, loopback round trip), then runs each row (members ×
//! workload × clients) against both with `etcd-load`'s code in a child
//! process of its own, reading the servers' CPU and peak RSS from /proc;
//! then watch delivery latency and restart time with a large log. The
//! markdown block goes to stdout between `<!-- peers:begin -->` and
//! `<!-- peers:end -->` for `scripts/bench-docs.py`; progress goes to
//! stderr. The Raft API and 1,000-cluster rows are node-bench's
//! (`--bin node-bench`); the gates quote its block in docs/benchmarks.md.
//!
//! ```text
//! cargo build --release -p chorus-server        # the chorus binary it runs
//! cargo run --release -p chorus-bench --bin peers-bench              # full run
//! cargo run --release -p chorus-bench --bin peers-bench -- --quick   # smoke run
//! cargo run --release -p chorus-bench --bin peers-bench -- \
//!     --members 3 --clients 64 --workloads put --perf-row put/3/64   # one row, profiled
//! ```

mod cluster;
mod floors;
mod install;
mod report;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chorus_bench::load::{Line, LoadArgs, Workload, KEY_SPACE_DEFAULT, VALUE_BYTES_DEFAULT};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use cluster::{Cluster, System};
use report::{Measured, Outcome, Restart, RestartTimes, Row, Run};

/// Per-row limits accepted on the command line.
const SECONDS_MAX: f64 = 3_600.0;
const RUNS_MAX: usize = 9;
const MEMBERS_MAX: usize = 7;
const CLIENTS_MAX: usize = 10_000;
const WATCHERS_MAX: usize = 100_000;
const RESTART_MIB_MAX: u64 = 16 * 1024;
/// A generator process may overrun its row by this much (setup, preload,
/// draining) before it is killed and the row counted as failed.
const ROW_GRACE_SECONDS: u64 = 180;
/// The restart row's values, bytes: large, so 1 GiB is a few thousand
/// entries, yet under both servers' 1.5 MiB request limit.
const RESTART_VALUE_BYTES: usize = 512 << 10;
/// Writers filling the restart row's log.
const RESTART_WRITERS: usize = 8;
/// Bound on one restart (replaying the log), seconds.
const RESTART_PATIENCE_SECONDS: u64 = 600;
/// Idle CPU is sampled over this window right after a cluster starts.
const IDLE_WINDOW_MS: u64 = 2_000;
/// perf is given this long to write its file after SIGINT.
const PERF_STOP_SECONDS: u64 = 120;

#[derive(Parser, Debug)]
#[command(
    about = "chorus against etcd, side by side, with the identical etcd v3 client load",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// One load run (what the harness runs in a child process; the same as
    /// the etcd-load binary).
    #[command(hide = true)]
    Load(LoadArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct BenchArgs {
    /// A smoke run for CI: 1 member, 16 clients, 1 s per row, a small
    /// watch and restart. It proves the harness works, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Seconds per measured row (and run).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Runs of each row (alternating etcd and chorus); the median is shown.
    /// Three short runs resist a burst of load from a neighbour on this
    /// shared machine better than one long one.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Concurrent clients per row.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    #[arg(long, value_delimiter = ',', value_enum, default_value = "put,get,txn")]
    workloads: Vec<Workload>,
    /// Watchers of the watch row (0: no watch row).
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// The watch row's writer, puts per second.
    #[arg(long, default_value_t = 100.0)]
    watch_rate: f64,
    /// MiB of values written before the restart row (0: no restart row).
    #[arg(long, default_value_t = 1_024)]
    restart_mib: u64,
    /// Seconds each latency floor is measured.
    #[arg(long, default_value_t = 2.0)]
    floor_seconds: f64,
    /// Where the servers keep their data (a fresh directory is made in it
    /// and removed after); default: the cargo target dir. Must be a real
    /// disk.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The etcd binary (default: `etcd` on PATH, installed with apt-get
    /// when missing).
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// The chorus binary (default: `chorus` beside this program; build it
    /// with `cargo build --release -p chorus-server`).
    #[arg(long)]
    chorus: Option<PathBuf>,
    /// Run chorus alone.
    #[arg(long)]
    no_etcd: bool,
    /// The benchmarks document whose node-bench block the Raft API gates
    /// quote, read when the run starts (so run node-bench first).
    #[arg(long, default_value = "docs/benchmarks.md")]
    docs: PathBuf,
    /// Record a perf profile of both systems' servers during this row,
    /// given as WORKLOAD/MEMBERS/CLIENTS (e.g. put/3/64).
    #[arg(long)]
    perf_row: Option<String>,
    /// Options for `perf record` with --perf-row.
    #[arg(long, default_value = "-F 999 -g", allow_hyphen_values = true)]
    perf_args: String,
}

impl BenchArgs {
    /// The quick run's settings replace the row settings.
    fn effective(&self) -> BenchArgs {
        let mut args = self.clone();
        if self.quick {
            args.seconds = 1.0;
            args.runs = 1;
            args.members = vec![1];
            args.clients = vec![16];
            args.workloads = vec![Workload::Put, Workload::Get, Workload::Txn];
            args.watchers = 50;
            args.restart_mib = 8;
            args.floor_seconds = 0.3;
        }
        args
    }

    fn check(&self) -> Result<()> {
        if !(self.seconds > 0.0 && self.seconds <= SECONDS_MAX) {
            bail!(
                "--seconds must be in (0, {SECONDS_MAX}], not {}",
                self.seconds
            );
        }
        if !(self.floor_seconds > 0.0 && self.floor_seconds <= SECONDS_MAX) {
            bail!("--floor-seconds must be in (0, {SECONDS_MAX}]");
        }
        if self.runs == 0 || self.runs > RUNS_MAX {
            bail!("--runs must be 1..={RUNS_MAX}, not {}", self.runs);
        }
        if self.members.iter().any(|&m| m == 0 || m > MEMBERS_MAX) {
            bail!("--members must each be 1..={MEMBERS_MAX}");
        }
        if self.clients.iter().any(|&c| c == 0 || c > CLIENTS_MAX) {
            bail!("--clients must each be 1..={CLIENTS_MAX}");
        }
        if self.clients.iter().any(|&c| c as u64 > KEY_SPACE_DEFAULT) {
            bail!("--clients must each be at most the key space ({KEY_SPACE_DEFAULT})");
        }
        if self.watchers > WATCHERS_MAX {
            bail!("--watchers must be at most {WATCHERS_MAX}");
        }
        if !(self.watch_rate > 0.0 && self.watch_rate <= 100_000.0) {
            bail!("--watch-rate must be in (0, 100000]");
        }
        if self.restart_mib > RESTART_MIB_MAX {
            bail!("--restart-mib must be at most {RESTART_MIB_MAX}");
        }
        if let Some(row) = &self.perf_row {
            PerfRow::parse(row)?;
        }
        Ok(())
    }
}

/// The row --perf-row profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PerfRow {
    workload: String,
    members: usize,
    clients: usize,
}

impl PerfRow {
    fn parse(text: &str) -> Result<PerfRow> {
        let parts: Vec<&str> = text.split('/').collect();
        let [workload, members, clients] = parts.as_slice() else {
            bail!("--perf-row is WORKLOAD/MEMBERS/CLIENTS, e.g. put/3/64, not {text:?}");
        };
        Ok(PerfRow {
            workload: workload.to_string(),
            members: members
                .parse()
                .with_context(|| format!("--perf-row members {members:?}"))?,
            clients: clients
                .parse()
                .with_context(|| format!("--perf-row clients {clients:?}"))?,
        })
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(Sub::Load(load)) = cli.command {
        if let Err(error) = chorus_bench::load::main_with(load) {
            eprintln!("etcd-load: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    // One thread: every child is spawned from it, which PR_SET_PDEATHSIG
    // needs (the signal follows the spawning thread); the heavy lifting is
    // in the child processes.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("peers-bench: starting the runtime: {error}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        let interrupt = async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match terminate.as_mut() {
                        Some(signal) => { signal.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        };
        // Whichever ends first: on a signal the run's future is dropped,
        // and with it every cluster (their Drop kills the servers) and
        // load process (kill_on_drop).
        tokio::select! {
            result = run(cli.bench) => match result {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("peers-bench: {error:#}");
                    1
                }
            },
            _ = interrupt => {
                eprintln!("peers-bench: interrupted; stopping every server it started");
                130
            }
        }
    });
    drop(runtime);
    std::process::exit(code);
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

fn target_dir() -> Option<PathBuf> {
    // target/release/peers-bench -> target
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

async fn run(args: BenchArgs) -> Result<()> {
    let args = args.effective();
    args.check()?;
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("this program's directory")?
        .to_path_buf();
    let chorus = args
        .chorus
        .clone()
        .unwrap_or_else(|| exe_dir.join("chorus"));
    if !chorus.is_file() {
        bail!(
            "no chorus binary at {}: build it with `cargo build --release -p chorus-server` (or pass --chorus)",
            chorus.display()
        );
    }
    let base = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => target_dir().unwrap_or_else(|| PathBuf::from(".")),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let disk = floors::check_real_disk(&base)?;
    let scratch = tempfile::Builder::new()
        .prefix("peers-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("making a data dir in {}", base.display()))?;
    let dir = scratch.path().to_path_buf();

    let etcd = if args.no_etcd {
        Err("--no-etcd".to_string())
    } else {
        eprintln!("peers-bench: looking for etcd (installing Debian's etcd-server if missing)");
        match install::find_or_install_etcd(args.etcd.as_deref()).await {
            Ok(found) => Ok(found),
            Err(error) if args.quick => {
                eprintln!("peers-bench: etcd skipped: {error:#}; checking chorus alone");
                Err(format!("{error:#}"))
            }
            Err(error) => {
                return Err(error
                    .context("etcd is needed for the comparison (--no-etcd runs chorus alone)"))
            }
        }
    };
    let systems: Vec<System> = match &etcd {
        Ok(_) => vec![System::Etcd, System::Chorus],
        Err(_) => vec![System::Chorus],
    };
    let binary = |system: System| -> PathBuf {
        match (system, &etcd) {
            (System::Etcd, Ok((path, _))) => path.clone(),
            _ => chorus.clone(),
        }
    };
    let perf_row = args.perf_row.as_deref().map(PerfRow::parse).transpose()?;

    let rows_per_topology = args.workloads.len() * args.clients.len() * args.runs * systems.len()
        + usize::from(args.watchers > 0) * systems.len();
    let steps = 1
        + args.members.len() * rows_per_topology
        + usize::from(args.restart_mib > 0) * systems.len();
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let say = |text: String| bar.suspend(|| eprintln!("{text}"));

    let mut run = Run {
        command: command_line(),
        quick: args.quick,
        seconds: args.seconds,
        runs: args.runs,
        value_bytes: VALUE_BYTES_DEFAULT,
        key_space: KEY_SPACE_DEFAULT,
        disk: disk.clone(),
        etcd_version: etcd.as_ref().map(|(_, v)| v.clone()).map_err(Clone::clone),
        chorus_version: chorus_version(&chorus).await,
        load_average_start: load_average(),
        load_average_end: String::new(),
        floors: None,
        idle: Vec::new(),
        rows: Vec::new(),
        watch: Vec::new(),
        watch_rate: args.watch_rate,
        restarts: Vec::new(),
        node_block: node_block(&args.docs),
        perf_files: Vec::new(),
    };

    bar.set_message("floors: fdatasync and loopback round trip");
    let floor_dir = dir.clone();
    let floor_seconds = args.floor_seconds;
    let floors =
        tokio::task::spawn_blocking(move || floors::measure(&floor_dir, floor_seconds)).await??;
    say(format!(
        "floors: fdatasync p50 {} µs (growing) / {} µs (preallocated); loopback round trip p50 {} µs",
        floors.fsync_growing.p50_us,
        floors.fsync_preallocated.p50_us,
        floors.loopback_round_trip.p50_us
    ));
    run.floors = Some(floors);
    bar.inc(1);

    for &members in &args.members {
        let mut clusters = Vec::new();
        for &system in &systems {
            bar.set_message(format!("starting {members} {} member(s)", system.name()));
            let mut cluster = Cluster::start(
                system,
                &binary(system),
                members,
                &dir.join(format!("{}-{members}", system.name())),
            )?;
            cluster
                .wait_ready(Duration::from_secs(cluster::START_PATIENCE_SECONDS))
                .await?;
            clusters.push(cluster);
        }
        let idle = idle_cores(&clusters).await;
        run.idle.push((
            members,
            idle.iter()
                .find(|(s, _)| *s == System::Etcd)
                .and_then(|(_, c)| *c),
            idle.iter()
                .find(|(s, _)| *s == System::Chorus)
                .and_then(|(_, c)| *c),
        ));
        for &workload in &args.workloads {
            let mut preloaded = Vec::new();
            for &clients in &args.clients {
                let mut results: Vec<(System, Vec<Measured>, Option<String>)> = systems
                    .iter()
                    .map(|&system| (system, Vec::new(), None))
                    .collect();
                for attempt in 0..args.runs {
                    // Alternate who goes first, so neither always meets the
                    // machine right after the other's load.
                    let mut order: Vec<usize> = (0..clusters.len()).collect();
                    if attempt % 2 == 1 {
                        order.reverse();
                    }
                    for index in order {
                        let cluster = &mut clusters[index];
                        let system = cluster.system;
                        bar.set_message(format!(
                            "{members} member(s): {} x{clients} {} (run {}/{})",
                            workload.name(),
                            system.name(),
                            attempt + 1,
                            args.runs
                        ));
                        let preload = workload == Workload::Get && !preloaded.contains(&system);
                        let load = LoadArgs {
                            endpoints: cluster.endpoints.clone(),
                            clients,
                            connections: None,
                            duration: Some(args.seconds),
                            ops: None,
                            value_size: VALUE_BYTES_DEFAULT,
                            key_space: KEY_SPACE_DEFAULT,
                            workload,
                            preload,
                            rate: args.watch_rate,
                        };
                        let profile = (attempt == 0
                            && perf_row.as_ref().is_some_and(|p| {
                                p.workload == workload.name()
                                    && p.members == members
                                    && p.clients == clients
                            }))
                        .then(|| {
                            dir.parent().unwrap_or(&dir).join(format!(
                                "perf-{}-{}-{members}m-{clients}c.data",
                                system.name(),
                                workload.name()
                            ))
                        });
                        let outcome = measure_row(
                            cluster,
                            &load,
                            args.seconds,
                            profile
                                .as_deref()
                                .map(|path| (path, args.perf_args.as_str())),
                        )
                        .await;
                        if let Some(path) = &profile {
                            run.perf_files.push(path.display().to_string());
                        }
                        let slot = results
                            .iter_mut()
                            .find(|(s, _, _)| *s == system)
                            .context("a system's results")?;
                        match outcome {
                            Ok(measured) => {
                                if preload {
                                    preloaded.push(system);
                                }
                                say(summary(members, system, &measured));
                                slot.1.push(measured);
                            }
                            Err(error) => {
                                say(format!(
                                    "{members} member(s) {} x{clients} {}: failed: {error:#}",
                                    workload.name(),
                                    system.name()
                                ));
                                slot.2.get_or_insert(format!("{error:#}"));
                            }
                        }
                        bar.inc(1);
                    }
                }
                run.rows
                    .push(row_of(members, workload.name(), clients, results));
            }
        }
        if args.watchers > 0 {
            let mut results = Vec::new();
            for cluster in clusters.iter_mut() {
                let system = cluster.system;
                bar.set_message(format!(
                    "{members} member(s): watch, {} watchers, {}",
                    args.watchers,
                    system.name()
                ));
                let load = LoadArgs {
                    endpoints: cluster.endpoints.clone(),
                    clients: args.watchers,
                    connections: None,
                    duration: Some(args.seconds),
                    ops: None,
                    value_size: VALUE_BYTES_DEFAULT,
                    key_space: KEY_SPACE_DEFAULT,
                    workload: Workload::Watch,
                    preload: false,
                    rate: args.watch_rate,
                };
                let outcome = measure_row(cluster, &load, args.seconds, None).await;
                match outcome {
                    Ok(measured) => {
                        say(summary(members, system, &measured));
                        results.push((system, vec![measured], None));
                    }
                    Err(error) => {
                        say(format!(
                            "{members} member(s) watch {}: failed: {error:#}",
                            system.name()
                        ));
                        results.push((system, Vec::new(), Some(format!("{error:#}"))));
                    }
                }
                bar.inc(1);
            }
            run.watch
                .push(row_of(members, "watch", args.watchers, results));
        }
        // The clusters stop here (Drop), before the next topology starts.
    }

    if args.restart_mib > 0 {
        for &system in &systems {
            bar.set_message(format!(
                "restart: writing {} MiB to 1 {} member, then SIGKILL and restart",
                args.restart_mib,
                system.name()
            ));
            let restart = restart_row(
                system,
                &binary(system),
                &dir.join(format!("{}-restart", system.name())),
                args.restart_mib,
            )
            .await;
            say(format!(
                "restart {}: {}",
                system.name(),
                match &restart.outcome {
                    Ok(times) => format!(
                        "{:.2} s with {:.0} MiB on disk",
                        times.seconds, restart.disk_mib
                    ),
                    Err(why) => format!("failed: {why}"),
                }
            ));
            run.restarts.push(restart);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    run.load_average_end = load_average();
    let text = run.markdown();
    print!("{text}");
    if args.quick {
        // CI's check that the harness works: every chorus row ran and
        // answered, and a skipped etcd was said out loud.
        let chorus_failed = run
            .rows
            .iter()
            .chain(&run.watch)
            .any(|row| !matches!(row.chorus, Outcome::Done(ref m) if m.report.ops > 0))
            || run
                .restarts
                .iter()
                .any(|r| r.system == System::Chorus && r.outcome.is_err());
        if chorus_failed {
            bail!("the quick run's chorus rows did not all complete (see the table above)");
        }
        if let Err(why) = &run.etcd_version {
            eprintln!("peers-bench: etcd was skipped ({why}); chorus checked alone");
        }
    }
    Ok(())
}

/// How this run was started, for the block's title: bench-docs.py runs
/// the defaults.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        "python3 scripts/bench-docs.py peers".into()
    } else {
        format!(
            "cargo run --release -p chorus-bench --bin peers-bench -- {}",
            args.join(" ")
        )
    }
}

fn summary(members: usize, system: System, m: &Measured) -> String {
    let show = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    format!(
        "{members} member(s) {} x{} {}: {:.0} ops/s, p50 {} µs, p99 {} µs, p999 {} µs, {} errors, server CPU {} cores, load generator {} cores, peak RSS {} MiB",
        m.report.workload,
        m.report.clients,
        system.name(),
        m.report.ops_per_second,
        show(m.report.p50_us),
        show(m.report.p99_us),
        show(m.report.p999_us),
        m.report.errors,
        m.cpu_cores.map_or_else(|| "-".into(), |c| format!("{c:.2}")),
        m.load_cpu_cores.map_or_else(|| "-".into(), |c| format!("{c:.2}")),
        m.peak_rss_mib.map_or_else(|| "-".into(), |r| format!("{r:.0}")),
    )
}

fn row_of(
    members: usize,
    workload: &str,
    clients: usize,
    results: Vec<(System, Vec<Measured>, Option<String>)>,
) -> Row {
    let mut row = Row {
        members,
        workload: workload.to_string(),
        clients,
        etcd: Outcome::Skipped,
        chorus: Outcome::Skipped,
    };
    for (system, runs, failure) in results {
        let outcome = match (report::median(runs), failure) {
            (Some(measured), _) => Outcome::Done(Box::new(measured)),
            (None, Some(failure)) => Outcome::Failed(failure),
            (None, None) => Outcome::Failed("no run completed".into()),
        };
        match system {
            System::Etcd => row.etcd = outcome,
            System::Chorus => row.chorus = outcome,
        }
    }
    row
}

/// Server CPU of each cluster over the same idle window, in cores.
async fn idle_cores(clusters: &[Cluster]) -> Vec<(System, Option<f64>)> {
    let before: Vec<Option<f64>> = clusters.iter().map(|c| cpu_of(&c.pids())).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(IDLE_WINDOW_MS)).await;
    let wall = started.elapsed().as_secs_f64();
    clusters
        .iter()
        .zip(before)
        .map(|(cluster, before)| {
            let after = cpu_of(&cluster.pids());
            (
                cluster.system,
                before.zip(after).map(|(b, a)| (a - b).max(0.0) / wall),
            )
        })
        .collect()
}

/// Summed CPU seconds of `pids`, if every one could be read.
fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| cluster::cpu_seconds(pid)).sum()
}

/// Runs one load in a child process against `cluster`, reading the
/// servers' CPU and peak RSS around the generator's measured window.
async fn measure_row(
    cluster: &mut Cluster,
    load: &LoadArgs,
    seconds: f64,
    profile: Option<(&Path, &str)>,
) -> Result<Measured> {
    cluster.check_alive()?;
    cluster.compact().await?;
    let pids = cluster.pids();
    let exe = std::env::current_exe().context("finding this program")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("load")
        .args(load.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: as in cluster::die_with_parent: only prctl(2) between fork
    // and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().context("starting the load generator")?;
    let load_pid = child.id();
    let stdout = child.stdout.take().context("the generator's stdout")?;
    let mut stderr = child.stderr.take().context("the generator's stderr")?;
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut window: Option<(Instant, Option<f64>, Option<f64>)> = None;
    let mut finished = None;
    let mut perf = None;
    let limit = Duration::from_secs_f64(seconds) + Duration::from_secs(ROW_GRACE_SECONDS);
    let reading = async {
        while let Some(line) = lines.next_line().await? {
            match serde_json::from_str::<Line>(&line) {
                Ok(Line::Measuring) => {
                    for &pid in &pids {
                        cluster::reset_peak_rss(pid);
                    }
                    if let Some((path, perf_args)) = profile {
                        perf = Some(start_perf(&pids, path, perf_args)?);
                    }
                    window = Some((
                        Instant::now(),
                        cpu_of(&pids),
                        load_pid.and_then(cluster::cpu_seconds),
                    ));
                }
                Ok(Line::Report(report)) => {
                    let ended = Instant::now();
                    let cpu_after = cpu_of(&pids);
                    let load_cpu_after = load_pid.and_then(cluster::cpu_seconds);
                    if let Some(perf) = perf.take() {
                        stop_perf(perf).await;
                    }
                    finished = Some((*report, ended, cpu_after, load_cpu_after));
                }
                // Not one of the generator's lines: ignored.
                Err(_) => {}
            }
        }
        anyhow::Ok(())
    };
    let read = tokio::time::timeout(limit, reading).await;
    if let Some(perf) = perf.take() {
        stop_perf(perf).await;
    }
    if read.is_err() {
        let _ = child.kill().await;
        bail!(
            "the load generator did not finish within {} s",
            limit.as_secs()
        );
    }
    read.unwrap_or(Ok(()))?;
    let status = child
        .wait()
        .await
        .context("waiting for the load generator")?;
    let stderr_text = stderr_text.await.unwrap_or_default();
    if !status.success() {
        bail!(
            "the load generator failed ({status}): {}",
            cluster::text_tail(&stderr_text)
        );
    }
    let (report, ended, cpu_after, load_cpu_after) =
        finished.context("the load generator printed no report")?;
    let (started, cpu_before, load_cpu_before) =
        window.context("the load generator never started measuring")?;
    let wall = (ended - started).as_secs_f64().max(1e-9);
    let cpu_cores = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| (after - before).max(0.0) / wall);
    let load_cpu_cores = load_cpu_before
        .zip(load_cpu_after)
        .map(|(before, after)| (after - before).max(0.0) / wall);
    let peak_rss_mib = pids
        .iter()
        .filter_map(|&pid| cluster::peak_rss_kib(pid))
        .max()
        .map(|kib| kib as f64 / 1024.0);
    cluster.check_alive()?;
    Ok(Measured {
        errors_all_runs: report.errors,
        report,
        cpu_cores,
        load_cpu_cores,
        peak_rss_mib,
        runs: 1,
    })
}

fn start_perf(pids: &[u32], path: &Path, perf_args: &str) -> Result<tokio::process::Child> {
    let pid_list = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let log = std::fs::File::create(path.with_extension("log"))?;
    let mut command = tokio::process::Command::new("perf");
    command
        .arg("record")
        .args(perf_args.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    command.arg("-o").arg(path).args(["-p", &pid_list]);
    command
        .spawn()
        .context("starting perf record (apt-get install linux-perf)")
}

async fn stop_perf(mut perf: tokio::process::Child) {
    if let Some(pid) = perf.id() {
        // SAFETY: kill(2) with our own child's pid, not yet reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGINT);
        }
    }
    if tokio::time::timeout(Duration::from_secs(PERF_STOP_SECONDS), perf.wait())
        .await
        .is_err()
    {
        let _ = perf.kill().await;
    }
}

/// One member: write `mib` MiB, SIGKILL, start again, time to the first
/// linearizable get.
async fn restart_row(system: System, binary: &Path, dir: &Path, mib: u64) -> Restart {
    let entries = ((mib << 20) / RESTART_VALUE_BYTES as u64).max(1);
    let mut restart = Restart {
        system,
        written_mib: 0.0,
        write_mib_per_second: 0.0,
        disk_mib: 0.0,
        entries,
        outcome: Err(String::new()),
    };
    restart.outcome = restart_measure(system, binary, dir, entries, &mut restart)
        .await
        .map_err(|error| format!("{error:#}"));
    restart
}

async fn restart_measure(
    system: System,
    binary: &Path,
    dir: &Path,
    entries: u64,
    restart: &mut Restart,
) -> Result<RestartTimes> {
    let mut cluster = Cluster::start(system, binary, 1, dir)?;
    cluster
        .wait_ready(Duration::from_secs(cluster::START_PATIENCE_SECONDS))
        .await?;
    let load = LoadArgs {
        endpoints: cluster.endpoints.clone(),
        clients: RESTART_WRITERS.min(entries as usize),
        connections: None,
        duration: None,
        ops: Some(entries),
        value_size: RESTART_VALUE_BYTES,
        key_space: entries,
        workload: Workload::Put,
        preload: false,
        rate: 1.0,
    };
    let written = measure_row(&mut cluster, &load, RESTART_PATIENCE_SECONDS as f64, None).await?;
    if written.report.errors > 0 {
        bail!(
            "{} of the writes failed; first: {}",
            written.report.errors,
            written.report.first_error.unwrap_or_default()
        );
    }
    let written_bytes = written.report.ops as f64 * RESTART_VALUE_BYTES as f64;
    restart.written_mib = written_bytes / (1 << 20) as f64;
    restart.write_mib_per_second = restart.written_mib / written.report.seconds.max(1e-9);
    let url = cluster.client_url(0);
    let revision_before = linearizable_revision(&url, Duration::from_secs(30)).await?;
    restart.disk_mib = cluster::dir_bytes(cluster.data_dir(0)) as f64 / (1 << 20) as f64;
    cluster.kill_member(0)?;
    let started = Instant::now();
    cluster.start_member(0)?;
    let deadline = started + Duration::from_secs(RESTART_PATIENCE_SECONDS);
    loop {
        cluster.check_alive()?;
        if let Ok(revision) = linearizable_revision(&url, Duration::from_millis(500)).await {
            let seconds = started.elapsed().as_secs_f64();
            if revision < revision_before {
                bail!("the revision went back from {revision_before} to {revision} across the restart");
            }
            let rss_mib = cluster
                .pids()
                .first()
                .and_then(|&pid| cluster::peak_rss_kib(pid))
                .map(|kib| kib as f64 / 1024.0);
            return Ok(RestartTimes { seconds, rss_mib });
        }
        if Instant::now() > deadline {
            bail!("not serving {RESTART_PATIENCE_SECONDS} s after the restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The store's revision as a linearizable get sees it.
async fn linearizable_revision(url: &str, timeout: Duration) -> Result<i64> {
    let attempt = async {
        let mut client = etcd_client::Client::connect([url], None).await?;
        let answer = client.get("bench/ready", None).await?;
        anyhow::Ok(answer.header().map_or(0, |h| h.revision()))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .context("timed out")?
}

async fn chorus_version(binary: &Path) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(binary)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    match output {
        Ok(Ok(output)) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("chorus")
            .trim()
            .to_string(),
        _ => format!("{}", binary.display()),
    }
}

/// node-bench's block from the benchmarks document, for the Raft API
/// gates. The document is read at run time from `docs` (not from where the
/// program was compiled: a binary built in another checkout would quote
/// that checkout's figures).
fn node_block(docs: &Path) -> Option<String> {
    let text = std::fs::read_to_string(docs).ok()?;
    let start = text.find("<!-- node:begin -->")?;
    let end = text[start..].find("<!-- node:end -->")? + start;
    Some(text[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_refused() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("peers-bench").chain(args.iter().copied()))
                .map_err(anyhow::Error::from)
                .and_then(|cli| cli.bench.effective().check())
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--quick"]).is_ok());
        for bad in [
            &["--seconds", "0"][..],
            &["--seconds", "nan"],
            &["--runs", "0"],
            &["--members", "0"],
            &["--members", "1,x"],
            &["--clients", "20000"],
            &["--workloads", "nope"],
            &["--perf-row", "put/3"],
            &["--perf-row", "put/x/64"],
            &["--restart-mib", "99999999"],
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            PerfRow::parse("put/3/64").unwrap(),
            PerfRow {
                workload: "put".into(),
                members: 3,
                clients: 64
            }
        );
    }
}

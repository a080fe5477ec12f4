//! What a run measured, as the markdown block `scripts/bench-docs.py`
//! splices into docs/benchmarks.md, and the gates judged on it.

use std::fmt::Write as _;

use chorus_bench::load::Report;

use crate::cluster::System;
use crate::floors::{Floor, Floors};

/// One system's result on one row: the median run's figures.
#[derive(Clone, Debug)]
pub struct Measured {
    pub report: Report,
    /// Server CPU over the measured window, in cores (all members).
    pub cpu_cores: Option<f64>,
    /// The load generator's CPU over the same window, in cores (it shares
    /// the machine's 2 cores with the servers).
    pub load_cpu_cores: Option<f64>,
    /// Peak RSS during the window of the largest member, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Errors summed over every run of the row (never only the median's).
    pub errors_all_runs: u64,
    pub runs: usize,
}

impl Measured {
    /// Server CPU per operation, µs.
    pub fn cpu_us_per_op(&self) -> Option<f64> {
        let cores = self.cpu_cores?;
        (self.report.ops_per_second > 0.0).then(|| cores * 1e6 / self.report.ops_per_second)
    }
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Done(Box<Measured>),
    Failed(String),
    /// The system was not run (etcd missing in a quick run, --no-etcd).
    Skipped,
}

impl Outcome {
    pub fn measured(&self) -> Option<&Measured> {
        match self {
            Outcome::Done(measured) => Some(measured),
            _ => None,
        }
    }
}

/// The median run by throughput (its latencies come along), with errors
/// summed over all runs.
pub fn median(mut runs: Vec<Measured>) -> Option<Measured> {
    if runs.is_empty() {
        return None;
    }
    let errors = runs.iter().map(|m| m.report.errors).sum();
    let count = runs.len();
    runs.sort_by(|a, b| a.report.ops_per_second.total_cmp(&b.report.ops_per_second));
    let mut chosen = runs.swap_remove(count / 2);
    chosen.errors_all_runs = errors;
    chosen.runs = count;
    Some(chosen)
}

/// A row of the side-by-side table.
#[derive(Clone, Debug)]
pub struct Row {
    pub members: usize,
    pub workload: String,
    pub clients: usize,
    pub etcd: Outcome,
    pub chorus: Outcome,
}

#[derive(Clone, Debug)]
pub struct Restart {
    pub system: System,
    pub written_mib: f64,
    pub write_mib_per_second: f64,
    pub disk_mib: f64,
    pub entries: u64,
    pub outcome: Result<RestartTimes, String>,
}

#[derive(Clone, Debug)]
pub struct RestartTimes {
    pub seconds: f64,
    pub rss_mib: Option<f64>,
}

/// Everything a run produced, for the markdown block.
pub struct Run {
    pub command: String,
    pub quick: bool,
    pub seconds: f64,
    pub runs: usize,
    pub value_bytes: usize,
    pub key_space: u64,
    pub disk: String,
    pub etcd_version: Result<String, String>,
    pub chorus_version: String,
    pub load_average_start: String,
    pub load_average_end: String,
    pub floors: Option<Floors>,
    /// Idle server CPU of each topology's clusters, cores: (members,
    /// etcd, chorus).
    pub idle: Vec<(usize, Option<f64>, Option<f64>)>,
    pub rows: Vec<Row>,
    pub watch: Vec<Row>,
    pub watch_rate: f64,
    pub restarts: Vec<Restart>,
    /// The node-bench block of docs/benchmarks.md, if there is one.
    pub node_block: Option<String>,
    pub perf_files: Vec<String>,
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), number)
}

fn us(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

fn latencies(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done(m) => format!(
            "{} / {} / {}",
            us(m.report.p50_us),
            us(m.report.p99_us),
            us(m.report.p999_us)
        ),
        Outcome::Failed(_) => "failed".into(),
        Outcome::Skipped => "skipped".into(),
    }
}

fn pair(row: &Row, cell: impl Fn(&Measured) -> String) -> String {
    let one = |outcome: &Outcome| outcome.measured().map_or_else(|| "-".into(), &cell);
    format!("{} / {}", one(&row.etcd), one(&row.chorus))
}

fn ratio(row: &Row, value: impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
    let etcd = value(row.etcd.measured()?)?;
    let chorus = value(row.chorus.measured()?)?;
    (etcd > 0.0).then(|| chorus / etcd)
}

fn ratio_text(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |r| format!("{r:.2}×"))
}

fn ops(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done(m) => format!("{:.0}", m.report.ops_per_second),
        Outcome::Failed(_) => "failed".into(),
        Outcome::Skipped => "skipped".into(),
    }
}

fn p99(m: &Measured) -> Option<f64> {
    m.report.p99_us.map(|v| v as f64)
}

fn throughput(m: &Measured) -> Option<f64> {
    Some(m.report.ops_per_second)
}

impl Run {
    fn row(&self, members: usize, workload: &str, clients: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.members == members && r.workload == workload && r.clients == clients)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = self.write_markdown(&mut out);
        out
    }

    fn write_markdown(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "<!-- peers:begin -->")?;
        writeln!(out, "## chorus against etcd (`{}`)\n", self.command)?;
        if self.quick {
            writeln!(
                out,
                "**Quick smoke run**: it proves the harness works; its figures mean nothing.\n"
            )?;
        }
        writeln!(
            out,
            "Both servers run on this machine (2 cores) on loopback, started by the harness with the same etcd flags, data on the real disk ({}), fsync on in both; etcd: {}; chorus: {}. \
             The load is `etcd-load` (the `etcd-client` crate, identical for both): {}-byte values, keys drawn from {} (the same seeded sequence for both), each client one request in flight, clients spread over up to 8 gRPC connections, connection i to member i mod n with the leader first (so 1 client talks to the leader). \
             `get` is linearizable. `txn` is \"if mod_revision(key) = last seen then put\", each client on its own keys. \
             Before every run the harness compacts the store at its current revision (physical, outside the measured window), so each row starts from the same state whatever the rows before it wrote. {} s per row, {} run(s) per row alternating etcd and chorus with both clusters up; the median run by throughput is shown (errors: summed over all runs). \
             Server CPU is utime + stime of all members over the measured window (from /proc), in cores (the load generator's CPU, measured the same way, shares the same 2 cores); peak RSS is the largest member's VmHWM, reset before each row. \
             Load average at start: {}; at end: {}.\n",
            self.disk,
            match &self.etcd_version {
                Ok(version) => version.clone(),
                Err(why) => format!("skipped ({why})"),
            },
            self.chorus_version,
            self.value_bytes,
            self.key_space,
            number(self.seconds),
            self.runs,
            self.load_average_start,
            self.load_average_end,
        )?;

        if let Some(floors) = &self.floors {
            writeln!(out, "### Floors, measured in the same run\n")?;
            writeln!(out, "| floor | p50 µs | p99 µs | per second |")?;
            writeln!(out, "|---|---:|---:|---:|")?;
            for floor in [
                &floors.fsync_growing,
                &floors.fsync_preallocated,
                &floors.loopback_round_trip,
            ] {
                writeln!(
                    out,
                    "| {} | {} | {} | {:.0} |",
                    floor.name, floor.p50_us, floor.p99_us, floor.per_second
                )?;
            }
            writeln!(out)?;
        }

        if !self.rows.is_empty() {
            writeln!(out, "### KV requests\n")?;
            writeln!(out, "| members | workload | clients | etcd ops/s | chorus ops/s | chorus / etcd | etcd p50 / p99 / p999 µs | chorus p50 / p99 / p999 µs | p99 chorus / etcd | errors etcd / chorus | server CPU, cores etcd / chorus | CPU µs per op etcd / chorus | load generator CPU, cores etcd / chorus | peak RSS MiB etcd / chorus |")?;
            writeln!(
                out,
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            for row in &self.rows {
                self.write_row(out, row)?;
            }
            writeln!(out)?;
        }

        if !self.watch.is_empty() {
            writeln!(out, "### Watch: delivery latency\n")?;
            writeln!(out, "One writer puts one key {} times a second (to the leader); every watcher (its own watch stream, spread over the members) receives each event. Latency: from the writer sending the put to a watcher receiving the event. ops/s: events delivered per second; errors include events not delivered.\n", number(self.watch_rate))?;
            writeln!(out, "| members | watchers | etcd events/s | chorus events/s | etcd p50 / p99 / p999 µs | chorus p50 / p99 / p999 µs | p99 chorus / etcd | errors etcd / chorus | server CPU, cores etcd / chorus | peak RSS MiB etcd / chorus |")?;
            writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
            for row in &self.watch {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.members,
                    row.clients,
                    ops(&row.etcd),
                    ops(&row.chorus),
                    latencies(&row.etcd),
                    latencies(&row.chorus),
                    ratio_text(ratio(row, p99)),
                    pair(row, |m| m.errors_all_runs.to_string()),
                    pair(row, |m| opt(m.cpu_cores)),
                    pair(row, |m| opt(m.peak_rss_mib)),
                )?;
            }
            writeln!(out)?;
        }

        if !self.restarts.is_empty() {
            writeln!(out, "### Restart with a large log\n")?;
            writeln!(out, "One member; the values are written with 8 clients, the member is killed with SIGKILL, started again, and timed from the start of its process to its first successful linearizable get (which also checks that the revision survived). Both include waiting out one election timeout (1 s, both servers' default) before the lone member leads.\n")?;
            writeln!(out, "| system | written | entries | write MiB/s | data dir on disk | restart to first linearizable get | RSS after restart |")?;
            writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
            for restart in &self.restarts {
                let (seconds, rss) = match &restart.outcome {
                    Ok(times) => (
                        format!("{:.2} s", times.seconds),
                        times
                            .rss_mib
                            .map_or_else(|| "-".into(), |m| format!("{m:.0} MiB")),
                    ),
                    Err(why) => (format!("failed: {}", one_line(why)), "-".into()),
                };
                writeln!(
                    out,
                    "| {} | {:.0} MiB | {} | {:.1} | {:.0} MiB | {} | {} |",
                    restart.system.name(),
                    restart.written_mib,
                    restart.entries,
                    restart.write_mib_per_second,
                    restart.disk_mib,
                    seconds,
                    rss
                )?;
            }
            writeln!(out)?;
        }

        if !self.idle.is_empty() {
            let idle: Vec<String> = self
                .idle
                .iter()
                .map(|(members, etcd, chorus)| {
                    format!(
                        "{members} member(s): etcd {} / chorus {} cores",
                        opt(*etcd),
                        opt(*chorus)
                    )
                })
                .collect();
            writeln!(
                out,
                "Idle server CPU right after start (both clusters up, no load): {}.\n",
                idle.join("; ")
            )?;
        }

        let failures: Vec<String> = self
            .rows
            .iter()
            .chain(&self.watch)
            .flat_map(|row| {
                [(&row.etcd, "etcd"), (&row.chorus, "chorus")]
                    .into_iter()
                    .filter_map(move |(outcome, system)| match outcome {
                        Outcome::Failed(why) => Some(format!(
                            "{} member(s) {} x{} {system}: {}",
                            row.members,
                            row.workload,
                            row.clients,
                            one_line(why)
                        )),
                        Outcome::Done(m) => m.report.first_error.as_ref().map(|e| {
                            format!(
                                "{} member(s) {} x{} {system}: {} error(s), first: {}",
                                row.members,
                                row.workload,
                                row.clients,
                                m.errors_all_runs,
                                one_line(e)
                            )
                        }),
                        Outcome::Skipped => None,
                    })
            })
            .collect();
        if !failures.is_empty() {
            writeln!(out, "Errors and failed rows:\n")?;
            for failure in failures {
                writeln!(out, "- {failure}")?;
            }
            writeln!(out)?;
        }

        self.write_gates(out)?;
        if !self.perf_files.is_empty() {
            writeln!(out, "\nProfiles recorded: {}.", self.perf_files.join(", "))?;
        }
        writeln!(out, "<!-- peers:end -->")
    }

    fn write_row(&self, out: &mut String, row: &Row) -> std::fmt::Result {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.members,
            row.workload,
            row.clients,
            ops(&row.etcd),
            ops(&row.chorus),
            ratio_text(ratio(row, throughput)),
            latencies(&row.etcd),
            latencies(&row.chorus),
            ratio_text(ratio(row, p99)),
            pair(row, |m| m.errors_all_runs.to_string()),
            pair(row, |m| opt(m.cpu_cores)),
            pair(row, |m| opt(m.cpu_us_per_op())),
            pair(row, |m| opt(m.load_cpu_cores)),
            pair(row, |m| opt(m.peak_rss_mib)),
        )
    }

    fn write_gates(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "### Gates (issue 7)\n")?;
        for gate in self.gates() {
            writeln!(out, "- {gate}")?;
        }
        Ok(())
    }

    /// Each gate as "**met** / **missed** / not measured: ...".
    pub fn gates(&self) -> Vec<String> {
        let mut gates = Vec::new();
        let verdict = |met: bool| if met { "**met**" } else { "**missed**" };
        match self.row(3, "put", 64).map(|row| {
            (
                row,
                ratio(row, throughput),
                ratio(row, p99),
            )
        }) {
            Some((row, Some(speed), Some(tail))) => gates.push(format!(
                "{}: put, 3 members, 64 clients: chorus {} ops/s = {speed:.2}× etcd's {} (needs ≥ 3×); p99 {} µs = {tail:.2}× etcd's {} µs (needs ≤ 0.5×)",
                verdict(speed >= 3.0 && tail <= 0.5),
                ops(&row.chorus),
                ops(&row.etcd),
                us(row.chorus.measured().and_then(|m| m.report.p99_us)),
                us(row.etcd.measured().and_then(|m| m.report.p99_us)),
            )),
            _ => gates.push("not measured: put, 3 members, 64 clients, against etcd".into()),
        }
        let chorus_one = self
            .row(3, "put", 1)
            .and_then(|row| row.chorus.measured())
            .and_then(|m| m.report.p50_us);
        match (chorus_one, &self.floors) {
            (Some(p50), Some(floors)) => {
                let floor = |fsync: &Floor| fsync.p50_us + floors.loopback_round_trip.p50_us;
                let growing = floor(&floors.fsync_growing);
                let preallocated = floor(&floors.fsync_preallocated);
                let etcd = self
                    .row(3, "put", 1)
                    .and_then(|row| row.etcd.measured())
                    .and_then(|m| m.report.p50_us);
                gates.push(format!(
                    "{}: put, 3 members, 1 client: chorus p50 {p50} µs = {:.2}× the floor of {growing} µs (fdatasync p50 on a growing file {} µs + loopback round trip p50 {} µs; needs ≤ 1.2×). Against the preallocated-file floor ({preallocated} µs): {:.2}×. etcd: {} µs = {}× the growing-file floor.",
                    verdict(p50 as f64 <= 1.2 * growing as f64),
                    p50 as f64 / growing.max(1) as f64,
                    floors.fsync_growing.p50_us,
                    floors.loopback_round_trip.p50_us,
                    p50 as f64 / preallocated.max(1) as f64,
                    us(etcd),
                    etcd.map_or_else(|| "-".into(), |e| format!("{:.2}", e as f64 / growing.max(1) as f64)),
                ));
            }
            _ => gates.push("not measured: put, 3 members, 1 client, against the floors".into()),
        }
        match self.row(3, "get", 64).map(|row| (row, ratio(row, throughput))) {
            Some((row, Some(speed))) => gates.push(format!(
                "{}: linearizable get, 3 members, 64 clients: chorus {} ops/s = {speed:.2}× etcd's {} (needs ≥ 3×)",
                verdict(speed >= 3.0),
                ops(&row.chorus),
                ops(&row.etcd),
            )),
            _ => gates.push("not measured: linearizable get, 3 members, 64 clients, against etcd".into()),
        }
        gates.extend(node_gates(self.node_block.as_deref()));
        gates
    }
}

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").replace('|', "/");
    if line.len() > 200 {
        let mut cut = 200;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &line[..cut])
    } else {
        line
    }
}

/// ra's figures on this machine (issue 7), the upper end of each range:
/// (node-bench's call, callers, ra's ops/s, how the issue quotes it).
const RA_FIGURES: [(&str, usize, f64, &str); 6] = [
    ("process_command", 1, 7_700.0, "5.8–7.7k"),
    ("process_command", 16, 33_000.0, "~33k"),
    ("process_command", 64, 43_000.0, "38–43k"),
    ("process_command", 256, 47_000.0, "43–47k"),
    ("pipeline_command (normal)", 1, 63_000.0, "~63k"),
    ("pipeline_command (low)", 1, 89_000.0, "70–89k"),
];
/// node-bench's topology that matches ra's (3 members in one node, fsync).
const NODE_TOPOLOGY: &str = "3 members, 1 node, shared WAL (fsync)";
/// ra's aggregate over 1,000 three-member clusters, upper end, ops/s.
const RA_CLUSTERS_OPS: f64 = 13_000.0;
/// The 1,000-cluster gates: RSS per node, MB; idle CPU, % of a core.
const CLUSTERS_RSS_MB_MAX: f64 = 100.0;
const CLUSTERS_IDLE_CPU_PERCENT_MAX: f64 = 2.0;

/// The Raft API and 1,000-cluster gates, judged on node-bench's own block
/// (a separate run: `cargo run --release -p chorus-bench --bin node-bench`).
pub fn node_gates(block: Option<&str>) -> Vec<String> {
    let Some(block) = block else {
        return vec!["not evaluated: the Raft API and 1,000-cluster gates (no node-bench block in docs/benchmarks.md; run `python3 scripts/bench-docs.py node`)".into()];
    };
    let verdict = |met: bool| if met { "**met**" } else { "**missed**" };
    let rows: Vec<Vec<String>> = block
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| topology"))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect();
    let find = |topology: &dyn Fn(&str) -> bool, call: &str, callers: Option<usize>| {
        rows.iter().find(|cells| {
            cells.len() >= 4
                && topology(&cells[0])
                && cells[1] == call
                && callers.is_none_or(|c| cells[2] == c.to_string())
        })
    };
    let mut gates = Vec::new();
    let mut parts = Vec::new();
    let mut all_met = true;
    for (call, callers, ra, quoted) in RA_FIGURES {
        let ops = find(&|t| t == NODE_TOPOLOGY, call, Some(callers))
            .and_then(|cells| cells[3].parse::<f64>().ok());
        match ops {
            Some(ops) => {
                all_met &= ops > ra;
                parts.push(format!(
                    "{call} x{callers}: {ops:.0} vs ra {quoted} ({:.2}×)",
                    ops / ra
                ));
            }
            None => {
                all_met = false;
                parts.push(format!("{call} x{callers}: not in the block"));
            }
        }
    }
    let clusters = |call: &str| find(&|t| t.contains("clusters x 3 members"), call, None);
    let aggregate = clusters("process_command (aggregate)").and_then(|c| c[3].parse::<f64>().ok());
    match aggregate {
        Some(ops) => {
            all_met &= ops > RA_CLUSTERS_OPS;
            parts.push(format!(
                "1,000 clusters aggregate: {ops:.0} vs ra 12–13k ({:.2}×)",
                ops / RA_CLUSTERS_OPS
            ));
        }
        None => {
            all_met = false;
            parts.push("1,000 clusters aggregate: not in the block".into());
        }
    }
    gates.push(format!(
        "{}: Raft API ahead of ra on every row (node-bench's own run, its block below; ra's upper figures): {}",
        verdict(all_met),
        parts.join("; ")
    ));
    let note = clusters("idle").and_then(|cells| cells.get(7).cloned());
    let cpu = note
        .as_deref()
        .and_then(|n| between(n, "CPU ", "% of one core per node"));
    let rss_mib = note
        .as_deref()
        .and_then(|n| between(n, "(", " MiB per node)"));
    match (cpu, rss_mib) {
        (Some(cpu), Some(rss_mib)) => {
            let rss_mb = rss_mib * 1.048_576;
            gates.push(format!(
                "{}: 1,000 three-member clusters per node: {rss_mb:.0} MB RSS per node (needs ≤ {CLUSTERS_RSS_MB_MAX:.0} MB), idle CPU {cpu:.2}% of a core (needs ≤ {CLUSTERS_IDLE_CPU_PERCENT_MAX:.0}%) (node-bench's own run)",
                verdict(rss_mb <= CLUSTERS_RSS_MB_MAX && cpu <= CLUSTERS_IDLE_CPU_PERCENT_MAX)
            ));
        }
        _ => gates.push(
            "not evaluated: 1,000 clusters per node (no idle row in node-bench's block)".into(),
        ),
    }
    gates
}

fn between(text: &str, start: &str, end: &str) -> Option<f64> {
    let tail = &text[text.find(start)? + start.len()..];
    tail[..tail.find(end)?].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
| topology | call | callers | ops/s | p50 µs | p99 µs | errors | note |
|---|---|---:|---:|---:|---:|---:|---|
| 3 members, 1 node, shared WAL (fsync) | process_command | 1 | 2863 | 300 | 679 | 0 |  |
| 3 members, 1 node, shared WAL (fsync) | process_command | 16 | 23685 | 614 | 1650 | 0 |  |
| 3 members, 1 node, shared WAL (fsync) | process_command | 64 | 59747 | 937 | 3753 | 0 |  |
| 3 members, 1 node, shared WAL (fsync) | process_command | 256 | 109382 | 2038 | 5831 | 0 |  |
| 3 members, 1 node, shared WAL (fsync) | pipeline_command (normal) | 1 | 350985 | - | - | 0 | window 4096 |
| 3 members, 1 node, shared WAL (fsync) | pipeline_command (low) | 1 | 411836 | - | - | 0 | window 4096 |
| 1000 clusters x 3 members, 3 nodes (fsync) | idle | 0 | 0 | - | - | 0 | CPU 0.48% of one core per node; 3.1 KiB RSS per server (3 MiB per node); started in 4.7 s |
| 1000 clusters x 3 members, 3 nodes (fsync) | process_command (aggregate) | 258 | 9593 | 8047 | 24911 | 0 | 86 callers per node |
";

    #[test]
    fn node_gates_read_node_bench_rows() {
        let gates = node_gates(Some(BLOCK));
        assert_eq!(gates.len(), 2, "{gates:?}");
        assert!(gates[0].starts_with("**missed**"), "{}", gates[0]);
        assert!(
            gates[0].contains("process_command x1: 2863 vs ra 5.8–7.7k"),
            "{}",
            gates[0]
        );
        assert!(
            gates[0].contains("1,000 clusters aggregate: 9593"),
            "{}",
            gates[0]
        );
        assert!(gates[1].starts_with("**met**"), "{}", gates[1]);
        assert!(gates[1].contains("idle CPU 0.48%"), "{}", gates[1]);
        assert!(node_gates(None)[0].starts_with("not evaluated"));
        // Garbage never panics.
        assert_eq!(
            node_gates(Some("| x |\n| 1000 clusters x 3 members | idle | CPU")).len(),
            2
        );
    }

    fn measured(ops: f64, p99: u64, errors: u64) -> Measured {
        Measured {
            report: Report {
                ops_per_second: ops,
                p50_us: Some(p99 / 2),
                p99_us: Some(p99),
                errors,
                ..Report::default()
            },
            cpu_cores: Some(1.0),
            load_cpu_cores: Some(0.5),
            peak_rss_mib: Some(10.0),
            errors_all_runs: errors,
            runs: 1,
        }
    }

    #[test]
    fn median_takes_the_middle_run_and_sums_errors() {
        let chosen = median(vec![
            measured(300.0, 9, 1),
            measured(100.0, 7, 2),
            measured(200.0, 8, 0),
        ])
        .unwrap();
        assert_eq!(chosen.report.ops_per_second, 200.0);
        assert_eq!((chosen.errors_all_runs, chosen.runs), (3, 3));
        assert!(median(Vec::new()).is_none());
    }

    #[test]
    fn put_gate_compares_throughput_and_tail() {
        let mut run = Run {
            command: "x".into(),
            quick: false,
            seconds: 1.0,
            runs: 1,
            value_bytes: 256,
            key_space: 10,
            disk: "ext4".into(),
            etcd_version: Ok("3.4".into()),
            chorus_version: "0.1".into(),
            load_average_start: "0".into(),
            load_average_end: "0".into(),
            floors: None,
            idle: Vec::new(),
            rows: vec![Row {
                members: 3,
                workload: "put".into(),
                clients: 64,
                etcd: Outcome::Done(Box::new(measured(1_000.0, 10_000, 0))),
                chorus: Outcome::Done(Box::new(measured(3_500.0, 4_000, 0))),
            }],
            watch: Vec::new(),
            watch_rate: 100.0,
            restarts: Vec::new(),
            node_block: None,
            perf_files: Vec::new(),
        };
        assert!(run.gates()[0].starts_with("**met**"), "{}", run.gates()[0]);
        run.rows[0].chorus = Outcome::Done(Box::new(measured(3_500.0, 6_000, 0)));
        assert!(run.gates()[0].starts_with("**missed**"));
        run.rows[0].chorus = Outcome::Failed("boom".into());
        assert!(run.gates()[0].starts_with("not measured"));
        let text = run.markdown();
        assert!(
            text.starts_with("<!-- peers:begin -->\n") && text.ends_with("<!-- peers:end -->\n")
        );
        assert!(text.contains("| 3 | put | 64 | 1000 | failed |"), "{text}");
    }
}

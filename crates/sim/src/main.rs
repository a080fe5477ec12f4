//! `chorus-sim`: replay one seed, or sweep a range of seeds.
//!
//! ```text
//! cargo run -p chorus-sim --release -- --seed 42
//! cargo run -p chorus-sim --release -- --from 0 --count 100000
//! cargo run -p chorus-sim --release -- --seed 7 --bug double-vote
//! ```

use anyhow::{bail, Result};
use chorus_sim::{run_seed, Bugs, Report, SimConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of chorus Raft clusters")]
struct Args {
    /// Run exactly this seed and print what it did.
    #[arg(long)]
    seed: Option<u64>,
    /// First seed of a sweep.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Number of seeds in a sweep.
    #[arg(long, default_value_t = 1_000)]
    count: u64,
    /// Plant a known bug: commit-previous-term, double-vote, read-without-read-index,
    /// ignore-leader-down.
    #[arg(long = "bug")]
    bugs: Vec<String>,
}

fn parse_bugs(names: &[String]) -> Result<Bugs> {
    let mut bugs = Bugs::default();
    for name in names {
        match name.as_str() {
            "commit-previous-term" => bugs.commit_previous_term = true,
            "double-vote" => bugs.double_vote = true,
            "read-without-read-index" => bugs.read_without_read_index = true,
            "ignore-leader-down" => bugs.ignore_leader_down = true,
            other => bail!("unknown bug {other:?}"),
        }
    }
    Ok(bugs)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bugs = parse_bugs(&args.bugs)?;
    if let Some(seed) = args.seed {
        println!("{:?}", SimConfig::from_seed(seed, bugs));
        match run_seed(seed, bugs) {
            Ok(report) => println!("ok: {report:?}"),
            Err(failure) => bail!("{failure}"),
        }
        return Ok(());
    }
    let mut failures = 0u64;
    let mut totals = Report::default();
    let mut quiescing_seeds = 0u64;
    let started = std::time::Instant::now();
    for seed in args.from..args.from + args.count {
        match run_seed(seed, bugs) {
            Ok(report) => {
                quiescing_seeds += u64::from(report.quiescences > 0);
                totals.completed += report.completed;
                totals.quiescences += report.quiescences;
                totals.detector_reports += report.detector_reports;
                totals.false_suspicions += report.false_suspicions;
                totals.failovers += report.failovers;
                totals.failover_ms_total += report.failover_ms_total;
                totals.failover_ms_max = totals.failover_ms_max.max(report.failover_ms_max);
            }
            Err(failure) => {
                failures += 1;
                eprintln!("{failure}");
            }
        }
        let done = seed - args.from + 1;
        if done % 1_000 == 0 {
            eprintln!("{done} seeds, {failures} failed, {:.0?}", started.elapsed());
        }
    }
    println!("{} passed, {} failed", args.count - failures, failures);
    println!(
        "passing seeds: {} client operations completed; {} quiescences in {quiescing_seeds} seeds; \
         {} failure-detector reports ({} false suspicions); {} quiesced leaders killed and \
         replaced (mean {} ms, slowest {} ms)",
        totals.completed,
        totals.quiescences,
        totals.detector_reports,
        totals.false_suspicions,
        totals.failovers,
        totals.failover_ms_total / totals.failovers.max(1),
        totals.failover_ms_max
    );
    if failures > 0 {
        bail!("{failures} seeds failed");
    }
    Ok(())
}

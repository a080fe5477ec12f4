//! `chorus-sim`: replay one seed, or sweep a range of seeds.
//!
//! ```text
//! cargo run -p chorus-sim --release -- --seed 42
//! cargo run -p chorus-sim --release -- --from 0 --count 100000
//! cargo run -p chorus-sim --release -- --seed 7 --bug double-vote
//! ```

use anyhow::{bail, Result};
use chorus_sim::{run_seed, Bugs, SimConfig};
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
    /// Plant a known bug: commit-previous-term, double-vote, read-without-read-index.
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
    let started = std::time::Instant::now();
    for seed in args.from..args.from + args.count {
        if let Err(failure) = run_seed(seed, bugs) {
            failures += 1;
            eprintln!("{failure}");
        }
        let done = seed - args.from + 1;
        if done % 1_000 == 0 {
            eprintln!("{done} seeds, {failures} failed, {:.0?}", started.elapsed());
        }
    }
    println!("{} passed, {} failed", args.count - failures, failures);
    if failures > 0 {
        bail!("{failures} seeds failed");
    }
    Ok(())
}

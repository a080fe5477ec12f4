//! The seed sweep: every seed is a whole simulated run with faults, checked
//! for Raft's safety properties, linearizability and liveness. A failure
//! prints the command that replays it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chorus_sim::{run_seed, Bugs, Failure, Report};

/// Seeds swept by `cargo test` (override with CHORUS_SIM_SEEDS).
const SWEEP_SEEDS: u64 = 2_000;
/// Seeds the planted-bug tests may search before declaring the bug missed.
const BUG_SEARCH_SEEDS: u64 = 3_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn workers() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u64)
}

/// Run seeds `from..from + count` on every core; collect reports and failures.
fn sweep(from: u64, count: u64, bugs: Bugs) -> (Vec<Report>, Vec<Failure>) {
    let next = AtomicU64::new(from);
    let reports = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers() {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= from + count {
                    return;
                }
                match run_seed(seed, bugs) {
                    Ok(report) => reports
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(report),
                    Err(failure) => failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(failure),
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|f| f.seed);
    (
        reports.into_inner().unwrap_or_else(|e| e.into_inner()),
        failures,
    )
}

fn assert_sweep_passes(from: u64, count: u64) {
    let (reports, failures) = sweep(from, count, Bugs::default());
    for failure in &failures {
        eprintln!("{failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed (see above)",
        failures.len()
    );
    // The sweep must not pass vacuously: the faults and features it claims
    // to exercise have to have happened.
    let total = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let completed = total(|r| r.completed as u64);
    let crashes = total(|r| r.crashes);
    let snapshots = total(|r| r.snapshots_saved);
    let chunks = total(|r| r.snapshot_chunks_sent);
    let changes = total(|r| r.membership_changes);
    let transfers = total(|r| r.transfers);
    let quiescences = total(|r| r.quiescences);
    let quiescing_seeds = reports.iter().filter(|r| r.quiescences > 0).count();
    let detector_reports = total(|r| r.detector_reports);
    let false_suspicions = total(|r| r.false_suspicions);
    let failovers = total(|r| r.failovers);
    let failover_ms_max = reports.iter().map(|r| r.failover_ms_max).max().unwrap_or(0);
    let failover_ms_mean = total(|r| r.failover_ms_total) / failovers.max(1);
    println!(
        "{count} seeds: {completed} client operations completed, {crashes} crashes, {snapshots} snapshots saved, \
         {chunks} snapshot chunks sent, \
         {changes} membership changes, {transfers} leadership transfers, \
         {quiescences} quiescences in {quiescing_seeds} seeds, \
         {detector_reports} failure-detector reports ({false_suspicions} false suspicions), \
         {failovers} quiesced leaders killed and replaced (mean {failover_ms_mean} ms, slowest {failover_ms_max} ms)"
    );
    assert!(
        completed > count * 100,
        "too few operations completed: {completed}"
    );
    assert!(crashes > 0 && snapshots > 0 && chunks > 0 && changes > 0 && transfers > 0);
    // Quiescence is switched on for about half the seeds, and each of those
    // ends with an idle tail that must quiesce the cluster.
    assert!(
        quiescing_seeds as u64 * 3 > count,
        "quiescence happened in only {quiescing_seeds} of {count} seeds"
    );
    assert!(detector_reports > 0 && false_suspicions > 0 && failovers > 0);
}

#[test]
fn seed_sweep() {
    let count = env_u64("CHORUS_SIM_SEEDS", SWEEP_SEEDS);
    let from = env_u64("CHORUS_SIM_FROM", 0);
    assert_sweep_passes(from, count);
}

/// `cargo test -p chorus-sim --release -- --ignored soak`
#[test]
#[ignore = "soak: 100,000 seeds, about 20 minutes on 2 cores"]
fn soak() {
    assert_sweep_passes(1_000_000, 100_000);
}

#[test]
fn same_seed_same_trace() {
    for seed in [1, 17, 4242] {
        let first = run_seed(seed, Bugs::default()).map_err(|f| f.to_string());
        let second = run_seed(seed, Bugs::default()).map_err(|f| f.to_string());
        assert_eq!(first, second, "seed {seed} is not deterministic");
    }
}

/// Search seeds in order until one fails; the first failure found.
fn first_failure(bugs: Bugs) -> Option<Failure> {
    const BATCH: u64 = 200;
    (0..BUG_SEARCH_SEEDS)
        .step_by(BATCH as usize)
        .find_map(|from| sweep(from, BATCH, bugs).1.into_iter().next())
}

fn assert_caught(bugs: Bugs, checker: &str) {
    let failure = first_failure(bugs).unwrap_or_else(|| {
        panic!(
            "planted bug {bugs:?} survived {BUG_SEARCH_SEEDS} seeds: the checkers are blind to it"
        )
    });
    println!("caught: {failure}");
    assert!(
        failure.message.contains(checker),
        "expected the {checker} checker to fire, got: {failure}"
    );
    assert!(failure.replay.contains(&format!("--seed {}", failure.seed)));
    assert!(failure.replay.contains("--bug"));
}

#[test]
fn planted_double_vote_is_caught() {
    assert_caught(
        Bugs {
            double_vote: true,
            ..Bugs::default()
        },
        "election safety",
    );
}

#[test]
fn planted_read_without_read_index_is_caught() {
    assert_caught(
        Bugs {
            read_without_read_index: true,
            ..Bugs::default()
        },
        "not linearizable",
    );
}

#[test]
fn planted_ignore_leader_down_is_caught() {
    // Quiesced followers have no election timer: only the failure
    // detector's peer_down of their leader gets them to elect.
    assert_caught(
        Bugs {
            ignore_leader_down: true,
            ..Bugs::default()
        },
        "failover",
    );
}

#[test]
fn planted_commit_previous_term_is_caught() {
    // Raft Figure 8: the committed entry is later lost; the leader
    // completeness or state machine safety checker sees it first.
    let failure = first_failure(Bugs {
        commit_previous_term: true,
        ..Bugs::default()
    })
    .unwrap_or_else(|| {
        panic!("committing previous-term entries survived {BUG_SEARCH_SEEDS} seeds")
    });
    println!("caught: {failure}");
    assert!(
        [
            "leader completeness",
            "state machine safety",
            "refused a message",
            "not linearizable"
        ]
        .iter()
        .any(|checker| failure.message.contains(checker)),
        "unexpected failure: {failure}"
    );
}

//! chorus-sim: deterministic simulation of chorus Raft clusters.
pub mod checker;
pub mod detector;
pub mod disk;
pub mod kv;
pub mod linearizability;
pub mod sim;

pub use sim::{Bugs, Failure, Report, Sim, SimConfig};

/// Run one seed.
pub fn run_seed(seed: u64, bugs: Bugs) -> Result<Report, Failure> {
    Sim::new(SimConfig::from_seed(seed, bugs))?.run()
}

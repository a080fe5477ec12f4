//! Gossip convergence and failure-detection benchmark over the deterministic
//! simulator. Prints markdown tables; `scripts/bench-docs.py` puts them in docs/benchmarks.md.
//!
//! Run: `cargo bench -p chorus-membership --bench convergence`
//! (optionally `-- --quick` for fewer seeds).

use chorus_membership::sim::Simulation;
use chorus_membership::{ClusterId, GossipConfig, NodeStatus, PhiConfig, SiteId};

const GOSSIP_INTERVAL_MS: u64 = 100;
const ROUNDS_MAX: u64 = 200;

fn config(threshold: f64) -> GossipConfig {
    GossipConfig {
        gossip_interval_ms: GOSSIP_INTERVAL_MS,
        join_retry_interval_ms: 500,
        phi: PhiConfig {
            threshold,
            window_samples_max: 100,
            min_std_deviation_ms: 100.0,
            acceptable_heartbeat_pause_ms: 0,
            first_heartbeat_estimate_ms: GOSSIP_INTERVAL_MS,
        },
        ..GossipConfig::default()
    }
}

struct Formation {
    join_rounds: u64,
    converge_rounds: u64,
}

/// Founder + `sites - 1` joiners through the founder, until all joined and agree.
fn form(sim: &mut Simulation, sites: usize) -> Formation {
    let founder = sim.found();
    let seed_node = sim.node_of(founder);
    for _ in 1..sites {
        sim.add_joining(ClusterId::new("bench"), vec![seed_node.clone()]);
    }
    let start = sim.rounds();
    while !sim.joining().is_empty() {
        assert!(sim.rounds() - start < ROUNDS_MAX, "joins did not finish");
        sim.round(GOSSIP_INTERVAL_MS);
    }
    let join_rounds = sim.rounds() - start;
    let converge_rounds = sim
        .run_until_converged(GOSSIP_INTERVAL_MS, ROUNDS_MAX)
        .expect("formation converges");
    Formation {
        join_rounds,
        converge_rounds,
    }
}

struct Dissemination {
    rounds: u64,
    messages: u64,
    bytes: u64,
}

/// One site kicks another; rounds and traffic until every live site agrees.
fn disseminate(sim: &mut Simulation) -> Dissemination {
    let ids = sim.site_ids();
    let (kicker, victim) = (ids[ids.len() / 2], ids[ids.len() / 3]);
    let now = sim.now_ms();
    let mut rng = sim.rng().clone();
    sim.site_mut(kicker)
        .gossip
        .membership_mut()
        .kick(victim, now, &mut rng)
        .expect("victim is a member");
    *sim.rng() = rng;
    let before = sim.traffic();
    let rounds = sim
        .run_until_converged(GOSSIP_INTERVAL_MS, ROUNDS_MAX)
        .expect("an update spreads");
    let after = sim.traffic();
    Dissemination {
        rounds,
        messages: after.messages - before.messages,
        bytes: after.bytes - before.bytes,
    }
}

fn convergence_table(seeds: &[u64]) {
    println!("### Gossip convergence against cluster size\n");
    println!(
        "Fanout {}, one gossip round = every site ticks once, {} seeds per size, \
         figures are means over seeds. *Formation*: all sites ask one seed to join at once. \
         *Update*: one site kicks another; rounds and traffic until every live site holds \
         the identical state (3 messages per exchange, bytes as encoded on the wire).\n",
        GossipConfig::default().fanout,
        seeds.len()
    );
    println!(
        "| sites | log2(sites) | formation: rounds to admit all | formation: rounds to converge | update: rounds to converge (max) | update: messages | update: messages per site | update: KiB on the wire |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &sites in &[10usize, 100, 1_000] {
        let mut join = 0.0;
        let mut converge = 0.0;
        let mut rounds = 0.0;
        let mut rounds_max = 0;
        let mut messages = 0.0;
        let mut bytes = 0.0;
        for &seed in seeds {
            let mut sim = Simulation::new(seed, ClusterId::new("bench"), config(8.0));
            let formation = form(&mut sim, sites);
            sim.set_encode(true);
            let update = disseminate(&mut sim);
            join += formation.join_rounds as f64;
            converge += formation.converge_rounds as f64;
            rounds += update.rounds as f64;
            rounds_max = rounds_max.max(update.rounds);
            messages += update.messages as f64;
            bytes += update.bytes as f64;
        }
        let n = seeds.len() as f64;
        println!(
            "| {sites} | {:.1} | {:.1} | {:.1} | {:.1} ({rounds_max}) | {:.0} | {:.1} | {:.0} |",
            (sites as f64).log2(),
            join / n,
            converge / n,
            rounds / n,
            messages / n,
            messages / n / sites as f64,
            bytes / n / 1024.0,
        );
    }
    println!();
}

struct Detection {
    first_ms: u64,
    all_ms: u64,
    false_positives: usize,
}

fn detect(seed: u64, sites: usize, threshold: f64, loss: f64) -> Detection {
    let mut sim = Simulation::new(seed, ClusterId::new("bench"), config(threshold));
    form(&mut sim, sites);
    sim.set_loss(loss);
    // Steady state: count false suspicions of live sites.
    for _ in 0..100 {
        sim.round(GOSSIP_INTERVAL_MS);
    }
    let false_positives: usize = sim
        .live_sites()
        .into_iter()
        .map(|site| {
            sim.site(site)
                .heard
                .iter()
                .filter(|(_, update)| update.status == NodeStatus::Offline)
                .count()
        })
        .sum();
    let victim: SiteId = sim.site_ids()[sites / 2];
    let victim_node = sim.node_of(victim);
    sim.kill(victim);
    let killed_at = sim.now_ms();
    let mut first_ms = None;
    loop {
        sim.round(GOSSIP_INTERVAL_MS);
        let offline = sim
            .live_sites()
            .into_iter()
            .filter(|&site| {
                sim.site(site)
                    .tracker
                    .node_row(&victim_node)
                    .is_some_and(|row| row.status == NodeStatus::Offline)
            })
            .count();
        if offline > 0 && first_ms.is_none() {
            first_ms = Some(sim.now_ms() - killed_at);
        }
        if offline == sim.live_sites().len() {
            break;
        }
        assert!(sim.now_ms() - killed_at < 120_000, "never detected");
    }
    Detection {
        first_ms: first_ms.unwrap_or(0),
        all_ms: sim.now_ms() - killed_at,
        false_positives,
    }
}

fn detection_table(seeds: &[u64]) {
    let sites = 50;
    println!("### Failure-detection time against the phi threshold\n");
    println!(
        "{sites} sites, gossip every {GOSSIP_INTERVAL_MS} ms, heartbeats carried by gossip, \
         min std-dev 100 ms, {} seeds (means). One site is killed after 100 steady rounds; \
         time until the first / every live site's tracker marks it offline. False positives: \
         offline alerts about live sites heard during the 100 steady rounds, summed over all sites.\n",
        seeds.len()
    );
    println!("| phi threshold | message loss | first site detects (ms) | all sites detect (ms) | false positives (steady 10 s) |");
    println!("|---:|---:|---:|---:|---:|");
    for &loss in &[0.0, 0.1] {
        for &threshold in &[1.0, 2.0, 4.0, 8.0, 12.0, 16.0] {
            let mut first = 0.0;
            let mut all = 0.0;
            let mut false_positives = 0.0;
            for &seed in seeds {
                let detection = detect(seed, sites, threshold, loss);
                first += detection.first_ms as f64;
                all += detection.all_ms as f64;
                false_positives += detection.false_positives as f64;
            }
            let n = seeds.len() as f64;
            println!(
                "| {threshold} | {:.0}% | {:.0} | {:.0} | {:.1} |",
                loss * 100.0,
                first / n,
                all / n,
                false_positives / n
            );
        }
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no
    // arguments in debug: keep that quick.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let seeds: Vec<u64> = if quick { vec![1] } else { vec![1, 2, 3, 4, 5] };
    if quick && !args.iter().any(|a| a == "--quick") {
        println!("(smoke run: pass --bench or --quick for the tables)");
        return;
    }
    println!("<!-- membership:begin -->");
    println!("## chorus-membership: gossip and failure detection (simulated)\n");
    println!(
        "Generated by `cargo bench -p chorus-membership --bench convergence` \
         (deterministic simulator, seeded; time is simulated, so the figures do not \
         depend on the machine).\n"
    );
    convergence_table(&seeds);
    detection_table(&seeds);
    println!("<!-- membership:end -->");
}

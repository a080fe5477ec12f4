//! Deterministic simulations of 50+ sites: partitions, churn, message loss.
//!
//! Every run derives from one seed. Set `CHORUS_SIM_SEED=<n>` to replay one seed;
//! a failure prints the seed and the command that reproduces it.

use chorus_membership::crdt::{Key, KeyKind};
use chorus_membership::sim::Simulation;
use chorus_membership::{
    ClusterId, GossipConfig, JoinState, NodeStatus, NodeUpdate, PhiConfig, RejectReason, SiteId,
    SubscriptionKind, TrackerEvent,
};
use rand::seq::SliceRandom;
use rand::Rng;

const GOSSIP_INTERVAL_MS: u64 = 100;
const SITES: usize = 50;
/// After faults heal, live sites must agree within this many rounds.
const HEAL_CONVERGENCE_ROUNDS_MAX: u64 = 40;
/// A killed node must be offline everywhere within this many rounds.
const DETECTION_ROUNDS_MAX: u64 = 30;
const FORGET_AFTER_MS: u64 = 3_000;

fn config() -> GossipConfig {
    GossipConfig {
        gossip_interval_ms: GOSSIP_INTERVAL_MS,
        forget_after_ms: FORGET_AFTER_MS,
        join_retry_interval_ms: 300,
        phi: PhiConfig {
            threshold: 8.0,
            window_samples_max: 100,
            min_std_deviation_ms: 100.0,
            acceptable_heartbeat_pause_ms: 0,
            first_heartbeat_estimate_ms: GOSSIP_INTERVAL_MS,
        },
        ..GossipConfig::default()
    }
}

fn cluster() -> ClusterId {
    ClusterId::new("sim")
}

fn seeds() -> Vec<u64> {
    match std::env::var("CHORUS_SIM_SEED") {
        Ok(text) => vec![text.parse().expect("CHORUS_SIM_SEED is a u64")],
        Err(_) => vec![1, 2, 3],
    }
}

fn reproduce(seed: u64, test: &str) -> String {
    format!(
        "seed {seed} failed; reproduce with: CHORUS_SIM_SEED={seed} cargo test -p chorus-membership --test simulation {test}"
    )
}

/// A founder plus `SITES - 1` joiners, all admitted and converged.
fn formed(seed: u64, test: &str) -> Simulation {
    let mut sim = Simulation::new(seed, cluster(), config());
    let founder = sim.found();
    let seed_node = sim.node_of(founder);
    for _ in 1..SITES {
        sim.add_joining(cluster(), vec![seed_node.clone()]);
    }
    for _ in 0..10 {
        if sim.joining().is_empty() {
            break;
        }
        sim.round(GOSSIP_INTERVAL_MS);
    }
    assert!(sim.joining().is_empty(), "{}", reproduce(seed, test));
    let rounds = sim.run_until_converged(GOSSIP_INTERVAL_MS, 40);
    assert!(rounds.is_some(), "{}", reproduce(seed, test));
    assert_eq!(sim.live_members().len(), SITES, "{}", reproduce(seed, test));
    sim
}

#[test]
fn live_sites_converge_after_partitions_churn_and_loss() {
    for seed in seeds() {
        let test = "live_sites_converge_after_partitions_churn_and_loss";
        let mut sim = formed(seed, test);
        let founder_node = sim.node_of(sim.site_ids()[0]);
        let founder = sim.site_ids()[0];
        let mut killed = Vec::new();
        sim.set_loss(0.2);
        for round in 0..70u64 {
            match round % 20 {
                0 => {
                    let rng = sim.rng().clone();
                    let mut rng = rng;
                    sim.partition(|_| rng.gen_range(0..2));
                    *sim.rng() = rng;
                }
                12 => sim.heal(),
                _ => {}
            }
            if round % 10 == 5 {
                // Crash a random site (never the founder, the joiners' seed).
                let live: Vec<SiteId> = sim
                    .live_members()
                    .into_iter()
                    .filter(|&s| s != founder)
                    .collect();
                let victim = *live.choose(sim.rng()).expect("live sites");
                sim.kill(victim);
                killed.push(victim);
                // Some live member notices and kicks it.
                let kicker = **live
                    .iter()
                    .filter(|&&s| s != victim)
                    .collect::<Vec<_>>()
                    .choose(sim.rng())
                    .expect("another live site");
                let now = sim.now_ms();
                let mut rng = sim.rng().clone();
                let _ = sim
                    .site_mut(kicker)
                    .gossip
                    .membership_mut()
                    .kick(victim, now, &mut rng);
                *sim.rng() = rng;
            }
            if round % 10 == 7 {
                // Churn: a new site joins through the founder and a random member.
                let members = sim.live_members();
                let other = *members.choose(sim.rng()).expect("members");
                let seeds = vec![founder_node.clone(), sim.node_of(other)];
                sim.add_joining(cluster(), seeds);
            }
            sim.round(GOSSIP_INTERVAL_MS);
        }
        sim.heal();
        sim.set_loss(0.0);
        // Joins still in flight complete after the heal, then everything converges.
        let rounds = sim.run_until_converged(GOSSIP_INTERVAL_MS, HEAL_CONVERGENCE_ROUNDS_MAX);
        let rounds =
            rounds.unwrap_or_else(|| panic!("{} ({})", reproduce(seed, test), sim.summary()));
        for _ in 0..10 {
            if sim.joining().is_empty() {
                break;
            }
            sim.round(GOSSIP_INTERVAL_MS);
        }
        assert!(sim.joining().is_empty(), "{}", reproduce(seed, test));
        assert!(
            sim.run_until_converged(GOSSIP_INTERVAL_MS, HEAL_CONVERGENCE_ROUNDS_MAX)
                .is_some(),
            "{}",
            reproduce(seed, test)
        );
        // Every live site is a member in every live site's view; killed ones are not.
        let live = sim.live_members();
        assert_eq!(
            live.len(),
            sim.live_sites().len(),
            "{}",
            reproduce(seed, test)
        );
        for &site in &live {
            let members = sim.site(site).gossip.membership().members();
            assert!(members.warning.is_none());
            for &other in &live {
                assert!(members.sites.contains(&other), "{}", reproduce(seed, test));
            }
            for dead in &killed {
                assert!(!members.sites.contains(dead), "{}", reproduce(seed, test));
            }
        }
        eprintln!("seed {seed}: converged {rounds} rounds after healing");
    }
}

#[test]
fn killed_node_goes_offline_everywhere_and_each_transition_is_heard_once() {
    for seed in seeds() {
        let test = "killed_node_goes_offline_everywhere_and_each_transition_is_heard_once";
        let mut sim = formed(seed, test);
        // Warm up the detectors with steady heartbeats.
        for _ in 0..30 {
            sim.round(GOSSIP_INTERVAL_MS);
        }
        let observer = sim.site_ids()[0];
        let mut detailed = sim
            .site(observer)
            .tracker
            .subscribe(SubscriptionKind::Detailed);
        let live = sim.live_sites();
        let victim = *live.last().expect("sites");
        let victim_node = sim.node_of(victim);
        // No false suspicion in a healthy cluster.
        for &site in &live {
            assert!(
                sim.site(site)
                    .heard
                    .iter()
                    .all(|(_, update)| update.status == NodeStatus::Online),
                "false positive; {}",
                reproduce(seed, test)
            );
        }
        sim.kill(victim);
        let killed_at_ms = sim.now_ms();
        let mut detected_rounds = None;
        for round in 1..=DETECTION_ROUNDS_MAX {
            sim.round(GOSSIP_INTERVAL_MS);
            let everywhere = sim.live_sites().into_iter().all(|site| {
                sim.site(site)
                    .tracker
                    .node_row(&victim_node)
                    .is_some_and(|row| row.status == NodeStatus::Offline)
            });
            if everywhere {
                detected_rounds = Some(round);
                break;
            }
        }
        let detected_rounds =
            detected_rounds.unwrap_or_else(|| panic!("not detected; {}", reproduce(seed, test)));
        for _ in 0..20 {
            sim.round(GOSSIP_INTERVAL_MS);
        }
        for site in sim.live_sites() {
            let heard: Vec<&NodeUpdate> = sim
                .site(site)
                .heard
                .iter()
                .map(|(_, update)| update)
                .filter(|update| update.node == victim_node)
                .collect();
            assert_eq!(
                heard,
                vec![
                    &NodeUpdate {
                        node: victim_node.clone(),
                        status: NodeStatus::Online
                    },
                    &NodeUpdate {
                        node: victim_node.clone(),
                        status: NodeStatus::Offline
                    }
                ],
                "site {site:?}; {}",
                reproduce(seed, test)
            );
            // Never about itself.
            let own = sim.node_of(site);
            assert!(sim.site(site).heard.iter().all(|(_, u)| u.node != own));
            // The failure report explains it.
            let report = sim
                .site(site)
                .gossip
                .failure_reports(sim.now_ms())
                .into_iter()
                .find(|r| r.site == victim)
                .expect("victim is still a member");
            assert_eq!(report.status, NodeStatus::Offline);
            assert!(report.phi >= 8.0);
            assert!(report.suspected_by.contains(&site));
            // The victim's last counter may still be spreading for a few rounds
            // after its death; no newer one can ever arrive.
            assert!(report
                .last_heartbeat_ms
                .is_some_and(|t| t <= killed_at_ms + 10 * GOSSIP_INTERVAL_MS));
            assert!(report.heartbeat_counter > 0);
        }
        let offline_events = detailed
            .drain()
            .into_iter()
            .filter(|event| {
                matches!(event, TrackerEvent::Detailed { row, .. }
                    if row.node == victim_node && row.status == NodeStatus::Offline)
            })
            .count();
        assert_eq!(offline_events, 1, "{}", reproduce(seed, test));
        let dump = sim.site(observer).gossip.dump(sim.now_ms()).to_string();
        assert!(dump.contains("offline"), "{dump}");
        eprintln!("seed {seed}: offline everywhere after {detected_rounds} rounds");
    }
}

#[test]
fn kicked_sites_are_forgotten_and_a_stale_peer_cannot_resurrect_them() {
    for seed in seeds() {
        let test = "kicked_sites_are_forgotten_and_a_stale_peer_cannot_resurrect_them";
        let mut sim = formed(seed, test);
        let ids = sim.site_ids();
        let (kicker, stale, victim) = (ids[0], ids[1], ids[2]);
        // The stale peer is cut off while it still believes the victim is a member.
        sim.partition(|site| u32::from(site == stale));
        sim.kill(victim);
        let now = sim.now_ms();
        let mut rng = sim.rng().clone();
        sim.site_mut(kicker)
            .gossip
            .membership_mut()
            .kick(victim, now, &mut rng)
            .expect("victim is a member");
        *sim.rng() = rng;
        let rounds_to_forget = FORGET_AFTER_MS / GOSSIP_INTERVAL_MS + 15;
        for _ in 0..rounds_to_forget {
            sim.round(GOSSIP_INTERVAL_MS);
        }
        let forgotten_everywhere = |sim: &Simulation| {
            sim.live_sites().into_iter().all(|site| {
                let membership = sim.site(site).gossip.membership();
                !membership.node_of_site().contains_key(&victim)
                    && membership
                        .crdt()
                        .get(&Key {
                            site: victim,
                            kind: KeyKind::Forget,
                        })
                        .is_some()
            })
        };
        assert!(
            sim.live_sites()
                .into_iter()
                .filter(|&s| s != stale)
                .all(|site| !sim
                    .site(site)
                    .gossip
                    .membership()
                    .node_of_site()
                    .contains_key(&victim)),
            "{}",
            reproduce(seed, test)
        );
        assert!(sim.site(stale).gossip.membership().is_member(victim));
        sim.heal();
        let rounds = sim.run_until_converged(GOSSIP_INTERVAL_MS, HEAL_CONVERGENCE_ROUNDS_MAX);
        assert!(rounds.is_some(), "{}", reproduce(seed, test));
        assert!(forgotten_everywhere(&sim), "{}", reproduce(seed, test));
        // Metadata is bounded: 2 registers per live site plus one tombstone.
        let live = sim.live_members().len();
        assert_eq!(
            sim.site(kicker).gossip.membership().crdt().len(),
            2 * live + 1,
            "{}",
            reproduce(seed, test)
        );
        // And it stays forgotten.
        for _ in 0..20 {
            sim.round(GOSSIP_INTERVAL_MS);
        }
        assert!(forgotten_everywhere(&sim), "{}", reproduce(seed, test));
    }
}

#[test]
fn a_site_of_another_cluster_cannot_join() {
    for seed in seeds() {
        let test = "a_site_of_another_cluster_cannot_join";
        let mut sim = formed(seed, test);
        let founder = sim.site_ids()[0];
        let stranger = sim.add_joining(ClusterId::new("elsewhere"), vec![sim.node_of(founder)]);
        for _ in 0..10 {
            sim.round(GOSSIP_INTERVAL_MS);
        }
        assert_eq!(
            sim.site(stranger).gossip.join_state(),
            &JoinState::Rejected(RejectReason::ForeignCluster { theirs: cluster() }),
            "{}",
            reproduce(seed, test)
        );
        for site in sim.live_members() {
            assert!(!sim.site(site).gossip.membership().is_member(stranger));
        }
        assert!(sim.site(founder).gossip.stats().foreign_rejected >= 1);
        assert!(sim.converged());
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let run = |seed: u64| {
        let mut sim = formed(seed, "the_same_seed_gives_the_same_trace");
        sim.set_loss(0.1);
        sim.set_encode(true);
        let victim = sim.site_ids()[7];
        sim.kill(victim);
        for _ in 0..30 {
            sim.round(GOSSIP_INTERVAL_MS);
        }
        let dumps: Vec<String> = sim
            .live_sites()
            .into_iter()
            .map(|site| sim.site(site).gossip.dump(sim.now_ms()).to_string())
            .collect();
        (dumps, sim.traffic())
    };
    for seed in seeds() {
        assert_eq!(
            run(seed),
            run(seed),
            "{}",
            reproduce(seed, "the_same_seed_gives_the_same_trace")
        );
    }
}

/// STYLE.md rule 13: the convergence checker can fail. A change made while its
/// site is cut off must show as divergence until the partition heals.
#[test]
fn the_convergence_checker_detects_divergence() {
    let seed = seeds()[0];
    let mut sim = formed(seed, "the_convergence_checker_detects_divergence");
    let lonely = sim.site_ids()[4];
    sim.partition(|site| u32::from(site == lonely));
    let now = sim.now_ms();
    let mut rng = sim.rng().clone();
    let target = sim.site_ids()[5];
    sim.site_mut(lonely)
        .gossip
        .membership_mut()
        .kick(target, now, &mut rng)
        .expect("target is a member");
    *sim.rng() = rng;
    for _ in 0..5 {
        sim.round(GOSSIP_INTERVAL_MS);
        assert!(!sim.converged());
    }
    sim.heal();
    assert!(sim
        .run_until_converged(GOSSIP_INTERVAL_MS, HEAL_CONVERGENCE_ROUNDS_MAX)
        .is_some());
}

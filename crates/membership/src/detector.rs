//! The phi-accrual failure detector (Hayashibara et al., 2004), the one failure
//! detector in chorus.
//!
//! Instead of a boolean "timed out", it outputs a suspicion level
//! `phi = -log10(P(a heartbeat arrives later than now))`, computed from a sliding
//! window of observed heartbeat intervals, assumed normally distributed. phi = 1
//! means a 10% chance the node is actually alive and we are wrong, phi = 8 a
//! 0.000001% chance. A node is [`NodeStatus::Offline`] once phi reaches the
//! configured threshold.
//!
//! The type is pure: heartbeat arrival times and "now" are arguments in ms, so the
//! gossip layer (heartbeats learned indirectly through gossip) and the node
//! runtime (direct heartbeats for Raft elections) can both feed it, and tests
//! replay it exactly.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::site::{NodeAddr, SiteId};

/// Whether a node is believed to be up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// phi is below the threshold.
    Online,
    /// phi reached the threshold (or the node was never seen).
    Offline,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
        })
    }
}

/// Tuning of a [`PhiAccrualDetector`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhiConfig {
    /// phi at or above which the node is offline. Akka and Cassandra use 8; lower
    /// detects faster with more false positives.
    pub threshold: f64,
    /// Number of most recent intervals kept (bounds memory and how fast the
    /// estimate adapts: a larger window is steadier).
    pub window_samples_max: usize,
    /// Floor of the standard deviation in ms: with perfectly regular heartbeats
    /// the deviation tends to 0 and one late heartbeat would look fatal.
    pub min_std_deviation_ms: f64,
    /// Extra pause in ms added to the mean: tolerates GC pauses or a slow
    /// network without raising suspicion.
    pub acceptable_heartbeat_pause_ms: u64,
    /// The interval in ms assumed before any was measured: the first heartbeat
    /// seeds the window with `estimate ± estimate/4`.
    pub first_heartbeat_estimate_ms: u64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            window_samples_max: 200,
            min_std_deviation_ms: 100.0,
            acceptable_heartbeat_pause_ms: 0,
            first_heartbeat_estimate_ms: 1_000,
        }
    }
}

/// A phi-accrual failure detector for one monitored node.
#[derive(Clone, Debug)]
pub struct PhiAccrualDetector {
    config: PhiConfig,
    /// Invariant: `intervals.len() <= config.window_samples_max`, and `sum_ms` /
    /// `squared_sum_ms` are the sums of its elements and of their squares.
    intervals_ms: VecDeque<u64>,
    sum_ms: f64,
    squared_sum_ms: f64,
    last_heartbeat_ms: Option<u64>,
    heartbeats: u64,
}

impl PhiAccrualDetector {
    /// A detector that has seen no heartbeat yet.
    pub fn new(config: PhiConfig) -> Self {
        assert!(config.window_samples_max >= 2, "window needs 2+ samples");
        assert!(config.threshold > 0.0, "phi threshold must be positive");
        PhiAccrualDetector {
            config,
            intervals_ms: VecDeque::new(),
            sum_ms: 0.0,
            squared_sum_ms: 0.0,
            last_heartbeat_ms: None,
            heartbeats: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// Records a heartbeat that arrived at `now_ms`. A time earlier than the last
    /// heartbeat (a reordered input) is ignored rather than recorded as negative.
    pub fn heartbeat(&mut self, now_ms: u64) {
        match self.last_heartbeat_ms {
            None => {
                let estimate = self.config.first_heartbeat_estimate_ms;
                let spread = estimate / 4;
                self.push_interval(estimate.saturating_sub(spread));
                self.push_interval(estimate + spread);
            }
            Some(last) if now_ms < last => return,
            Some(last) => self.push_interval(now_ms - last),
        }
        self.last_heartbeat_ms = Some(now_ms);
        self.heartbeats += 1;
    }

    fn push_interval(&mut self, interval_ms: u64) {
        if self.intervals_ms.len() == self.config.window_samples_max {
            if let Some(old) = self.intervals_ms.pop_front() {
                self.sum_ms -= old as f64;
                self.squared_sum_ms -= (old as f64) * (old as f64);
            }
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum_ms += interval_ms as f64;
        self.squared_sum_ms += (interval_ms as f64) * (interval_ms as f64);
    }

    /// Mean of the observed intervals in ms (without the acceptable pause).
    pub fn mean_interval_ms(&self) -> f64 {
        if self.intervals_ms.is_empty() {
            return self.config.first_heartbeat_estimate_ms as f64;
        }
        self.sum_ms / self.intervals_ms.len() as f64
    }

    /// Standard deviation of the intervals in ms, floored at the configured minimum.
    pub fn std_deviation_ms(&self) -> f64 {
        let samples = self.intervals_ms.len() as f64;
        if samples == 0.0 {
            return self.config.min_std_deviation_ms;
        }
        let mean = self.sum_ms / samples;
        let variance = (self.squared_sum_ms / samples - mean * mean).max(0.0);
        variance.sqrt().max(self.config.min_std_deviation_ms)
    }

    /// The suspicion level at `now_ms`; 0 before the first heartbeat. Always finite.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_heartbeat_ms else {
            return 0.0;
        };
        let elapsed_ms = now_ms.saturating_sub(last) as f64;
        let mean = self.mean_interval_ms() + self.config.acceptable_heartbeat_pause_ms as f64;
        let deviation = self.std_deviation_ms();
        phi_of(elapsed_ms, mean, deviation)
    }

    /// Online while phi is below the threshold.
    pub fn status(&self, now_ms: u64) -> NodeStatus {
        if self.phi(now_ms) < self.config.threshold {
            NodeStatus::Online
        } else {
            NodeStatus::Offline
        }
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_heartbeat_ms
    }

    /// How many heartbeats were recorded.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// Number of intervals in the window.
    pub fn samples(&self) -> usize {
        self.intervals_ms.len()
    }
}

/// phi for a normal distribution of intervals, using the logistic approximation
/// of the normal CDF (as Akka does), rewritten so that it never overflows:
/// `phi = -log10(1 - F(elapsed))`.
fn phi_of(elapsed_ms: f64, mean_ms: f64, deviation_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / deviation_ms;
    let exponent = y * (1.5976 + 0.070566 * y * y);
    // 1 - F(y) = e / (1 + e) with e = exp(-exponent).
    if exponent > 0.0 {
        // -log10(e / (1 + e)) = exponent / ln 10 + log10(1 + e), e < 1.
        exponent / std::f64::consts::LN_10 + (-exponent).exp().ln_1p() / std::f64::consts::LN_10
    } else {
        // -log10(e / (1 + e)) = log10(1 + 1/e) with 1/e = exp(exponent) <= 1.
        exponent.exp().ln_1p() / std::f64::consts::LN_10
    }
}

/// Why a node has the status it has, as seen by one site: for `dump()`, the
/// server's status page and admin JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureReport {
    /// The monitored site.
    pub site: SiteId,
    /// Its node (address), if known.
    pub node: Option<NodeAddr>,
    /// The status this site derives from phi.
    pub status: NodeStatus,
    /// Current phi.
    pub phi: f64,
    /// The threshold phi is compared with.
    pub threshold: f64,
    /// Local time in ms of the last heartbeat seen (directly or via gossip).
    pub last_heartbeat_ms: Option<u64>,
    /// The monitored site's own heartbeat counter, as last seen.
    pub heartbeat_counter: u64,
    /// Mean heartbeat interval in ms observed here.
    pub mean_interval_ms: f64,
    /// Sites that currently report this one offline (this site included when it
    /// does), as gossiped with their heartbeats.
    pub suspected_by: Vec<SiteId>,
}

impl fmt::Display for FailureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} node={} {} phi={:.2}/{:.1} heartbeat={} last_seen_ms={} mean_interval_ms={:.0} suspected_by={:?}",
            self.site,
            self.node.as_ref().map_or("?".to_string(), |n| n.to_string()),
            self.status,
            self.phi,
            self.threshold,
            self.heartbeat_counter,
            self.last_heartbeat_ms.map_or("never".to_string(), |t| t.to_string()),
            self.mean_interval_ms,
            self.suspected_by
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PhiConfig {
        PhiConfig {
            threshold: 8.0,
            window_samples_max: 100,
            min_std_deviation_ms: 10.0,
            acceptable_heartbeat_pause_ms: 0,
            first_heartbeat_estimate_ms: 100,
        }
    }

    #[test]
    fn no_heartbeat_means_no_suspicion_yet() {
        let detector = PhiAccrualDetector::new(config());
        assert_eq!(detector.phi(1_000_000), 0.0);
        assert_eq!(detector.last_heartbeat_ms(), None);
    }

    #[test]
    fn phi_grows_with_silence_and_crosses_the_threshold() {
        let mut detector = PhiAccrualDetector::new(config());
        for beat in 0..50 {
            detector.heartbeat(beat * 100);
        }
        let last = 49 * 100;
        assert!(detector.phi(last + 50) < 0.5);
        assert_eq!(detector.status(last + 100), NodeStatus::Online);
        let mut previous = 0.0;
        for after in (0..2_000).step_by(10) {
            let phi = detector.phi(last + after);
            assert!(phi >= previous, "phi must be monotone in silence");
            assert!(phi.is_finite());
            previous = phi;
        }
        assert_eq!(detector.status(last + 2_000), NodeStatus::Offline);
        assert!(detector.phi(u64::MAX).is_finite());
    }

    #[test]
    fn acceptable_pause_delays_suspicion() {
        let mut strict = PhiAccrualDetector::new(config());
        let mut lenient = PhiAccrualDetector::new(PhiConfig {
            acceptable_heartbeat_pause_ms: 500,
            ..config()
        });
        for beat in 0..20 {
            strict.heartbeat(beat * 100);
            lenient.heartbeat(beat * 100);
        }
        let now = 19 * 100 + 400;
        assert_eq!(strict.status(now), NodeStatus::Offline);
        assert_eq!(lenient.status(now), NodeStatus::Online);
    }

    #[test]
    fn window_is_bounded_and_reordered_beats_are_ignored() {
        let mut detector = PhiAccrualDetector::new(PhiConfig {
            window_samples_max: 5,
            ..config()
        });
        for beat in 0..100 {
            detector.heartbeat(beat * 10);
        }
        assert_eq!(detector.samples(), 5);
        assert!((detector.mean_interval_ms() - 10.0).abs() < 1e-9);
        detector.heartbeat(5);
        assert_eq!(detector.last_heartbeat_ms(), Some(990));
    }

    #[test]
    fn phi_matches_the_normal_tail() {
        // One standard deviation past the mean: P(later) ~ 0.16, phi ~ 0.8.
        let phi = phi_of(110.0, 100.0, 10.0);
        assert!((phi - 0.8).abs() < 0.05, "phi={phi}");
        // At the mean: P = 0.5, phi = log10(2).
        assert!((phi_of(100.0, 100.0, 10.0) - 2f64.log10()).abs() < 1e-9);
    }
}

//! A simulated node-level failure detector, standing in for the runtime's
//! (ra's aten): each observer hears about each peer's node. It reports
//! `peer_down` some time after the peer crashed or the link from the peer to
//! the observer was cut (so asymmetric partitions are seen one way only), and
//! `peer_up` some time after it is back. During the fault phase it also
//! suspects live peers at random; a suspicion is corrected later. After the
//! faults heal it reports only the truth.
//!
//! It owns its own RNG (derived from the seed), so turning it on does not
//! change the rest of a run's random choices.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Detector {
    rng: ChaCha8Rng,
    /// Reports reach an observer uniformly within 1 ms ..= this (µs) after
    /// the change (or the suspicion) that prompted them.
    delay_max_us: u64,
    /// `(observer, peer)`: what each observer's server was last told. A
    /// server starts believing every peer up.
    down: BTreeSet<(usize, usize)>,
}

impl Detector {
    pub fn new(seed: u64, delay_max_ms: u64) -> Self {
        Detector {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xde7e_c70f_0000_0000),
            delay_max_us: delay_max_ms.max(1) * 1_000,
            down: BTreeSet::new(),
        }
    }

    /// How long until the detector reports a change.
    pub fn delay_us(&mut self) -> u64 {
        self.rng.gen_range(1_000..=self.delay_max_us.max(1_000))
    }

    /// Whether `observer`'s server was last told `peer` is down.
    pub fn reported_down(&self, observer: usize, peer: usize) -> bool {
        self.down.contains(&(observer, peer))
    }

    /// Record what `observer`'s server has just been told.
    pub fn report(&mut self, observer: usize, peer: usize, down: bool) {
        if down {
            self.down.insert((observer, peer));
        } else {
            self.down.remove(&(observer, peer));
        }
    }

    /// `observer` restarted: its new server has been told nothing.
    pub fn forget_observer(&mut self, observer: usize) {
        self.down.retain(|(o, _)| *o != observer);
    }

    /// A false suspicion: some running observer and a peer it believes up,
    /// or `None` if there is none.
    pub fn pick_suspicion(&mut self, running: &[usize], nodes: usize) -> Option<(usize, usize)> {
        if running.is_empty() || nodes < 2 {
            return None;
        }
        let observer = running[self.rng.gen_range(0..running.len())];
        let peer = (observer + self.rng.gen_range(1..nodes)) % nodes;
        (!self.reported_down(observer, peer)).then_some((observer, peer))
    }

    /// When the next false suspicion strikes (µs from now).
    pub fn suspicion_interval_us(&mut self, max_us: u64) -> u64 {
        self.rng.gen_range(20_000..=max_us.max(20_000))
    }
}

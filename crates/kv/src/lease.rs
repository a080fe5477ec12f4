//! Leases and the replicated lease clock their deadlines are measured on
//! (the rules and the clock assumption are in the crate docs, "Lease
//! expiry").

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The replicated clock lease deadlines are measured on (rules in the
/// crate docs, "Lease expiry").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseClock {
    /// Lease time at the last applied entry (ms).
    pub(crate) now_ms: u64,
    /// `time_ms` of the last applied entry: its leader's clock.
    pub(crate) entry_time_ms: u64,
    /// Term of the last applied entry.
    pub(crate) entry_term: u64,
}

impl LeaseClock {
    /// Move the clock for an entry appended at `time_ms` by the leader of
    /// `term`.
    pub(crate) fn observe(&mut self, term: u64, time_ms: u64, clock_skew_max_ms: u64) {
        if term == self.entry_term {
            // One leader's clock: its elapsed time is trustworthy, whatever
            // its offset from the others. A clock that stepped back adds
            // nothing.
            self.now_ms = self
                .now_ms
                .saturating_add(time_ms.saturating_sub(self.entry_time_ms));
        }
        // Any leader's clock, less the skew bound, is a time every clock
        // has reached; never go back.
        self.now_ms = self.now_ms.max(time_ms.saturating_sub(clock_skew_max_ms));
        self.entry_time_ms = time_ms;
        self.entry_term = term;
    }

    /// Lease time now, as a node whose clock reads `local_now_ms` would
    /// make it with an entry of its own in the last entry's term (exact on
    /// that entry's leader; off by the skew elsewhere).
    pub(crate) fn estimate(&self, local_now_ms: u64, clock_skew_max_ms: u64) -> u64 {
        self.now_ms
            .saturating_add(local_now_ms.saturating_sub(self.entry_time_ms))
            .max(local_now_ms.saturating_sub(clock_skew_max_ms))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// Granted TTL (seconds).
    pub(crate) ttl_s: i64,
    /// Expires when the lease clock reaches this (ms).
    pub(crate) deadline_ms: u64,
    /// Keys attached now; rebuilt from the store on restore.
    #[serde(skip)]
    pub(crate) keys: BTreeSet<Bytes>,
}

/// Every lease, by id and by deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Leases {
    by_id: BTreeMap<i64, Lease>,
    /// `(deadline_ms, id)` of every lease in `by_id`.
    by_deadline: BTreeSet<(u64, i64)>,
}

impl Leases {
    pub(crate) fn by_id(&self) -> &BTreeMap<i64, Lease> {
        &self.by_id
    }

    pub(crate) fn get(&self, id: i64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn grant(&mut self, id: i64, ttl_s: i64, deadline_ms: u64) {
        let lease = Lease {
            ttl_s,
            deadline_ms,
            keys: BTreeSet::new(),
        };
        assert!(
            self.by_id.insert(id, lease).is_none(),
            "lease {id} granted twice"
        );
        self.by_deadline.insert((deadline_ms, id));
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(lease.deadline_ms, id));
        Some(lease)
    }

    /// Set a new deadline; false if there is no such lease.
    pub(crate) fn renew(&mut self, id: i64, deadline_ms: u64) -> bool {
        let Some(lease) = self.by_id.get_mut(&id) else {
            return false;
        };
        self.by_deadline.remove(&(lease.deadline_ms, id));
        lease.deadline_ms = deadline_ms;
        self.by_deadline.insert((deadline_ms, id));
        true
    }

    pub(crate) fn attach(&mut self, id: i64, key: Bytes) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.insert(key);
        }
    }

    pub(crate) fn detach(&mut self, id: i64, key: &Bytes) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// The earliest deadline, if any lease exists.
    pub(crate) fn first_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Up to `max` leases whose deadline is `<= now_ms`, earliest first.
    pub(crate) fn due(&self, now_ms: u64, max: usize) -> Vec<i64> {
        self.by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Rebuild from a snapshot's leases; keys are attached afterwards.
    pub(crate) fn from_parts(by_id: BTreeMap<i64, Lease>) -> Self {
        let by_deadline = by_id
            .iter()
            .map(|(id, lease)| (lease.deadline_ms, *id))
            .collect();
        Leases { by_id, by_deadline }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW_MS: u64 = 500;

    #[test]
    fn the_first_entry_sets_the_clock_to_its_time_less_the_skew_bound() {
        let mut clock = LeaseClock::default();
        clock.observe(1, 10_000, SKEW_MS);
        assert_eq!(clock.now_ms, 9_500);
        clock.observe(1, 12_000, SKEW_MS);
        assert_eq!(clock.now_ms, 11_500);
        assert_eq!(clock.estimate(13_000, SKEW_MS), 12_500);
    }

    #[test]
    fn a_new_leader_ahead_moves_the_clock_to_its_time_less_the_skew_bound() {
        let mut clock = LeaseClock::default();
        clock.observe(1, 10_000, SKEW_MS);
        clock.observe(2, 20_000, SKEW_MS);
        assert_eq!(clock.now_ms, 19_500);
    }

    #[test]
    fn a_leader_behind_drives_the_clock_by_its_elapsed_time() {
        let mut clock = LeaseClock::default();
        clock.observe(1, 1_000_000, SKEW_MS);
        let before = clock.now_ms;
        // Its clock reads far behind: the lease clock stays put...
        clock.observe(2, 5, SKEW_MS);
        assert_eq!(clock.now_ms, before);
        // ...then moves by this leader's elapsed time.
        clock.observe(2, 1_005, SKEW_MS);
        assert_eq!(clock.now_ms, before + 1_000);
        assert_eq!(clock.estimate(2_005, SKEW_MS), before + 2_000);
        // A clock that steps back adds nothing.
        clock.observe(2, 505, SKEW_MS);
        assert_eq!(clock.now_ms, before + 1_000);
    }

    #[test]
    fn leases_are_due_in_deadline_order() {
        let mut leases = Leases::default();
        leases.grant(7, 5, 300);
        leases.grant(3, 5, 100);
        leases.grant(9, 5, 200);
        assert_eq!(leases.due(250, 10), vec![3, 9]);
        assert_eq!(leases.due(250, 1), vec![3]);
        assert!(leases.renew(3, 1_000));
        assert_eq!(leases.due(250, 10), vec![9]);
        assert_eq!(leases.first_deadline_ms(), Some(200));
        assert!(leases.remove(9).is_some());
        assert!(!leases.renew(9, 1));
        assert_eq!(leases.first_deadline_ms(), Some(300));
    }
}

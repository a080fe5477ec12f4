//! The membership CRDT: last-writer-wins registers over per-site keys.
//!
//! # Model (classy's, with bounded metadata)
//!
//! Every change is an [`Op`] on one [`Key`] — `membership(site)`, `host(site)` or
//! `forget(site)` — stamped with an [`OpOrder`] `(clock, magic, origin)`: a Lamport
//! clock, a random tie-breaker and the site that made it. Ops are totally ordered
//! by `(order, value)`; for each key the state keeps **only the greatest op** (the
//! log per key is bounded to the single winner).
//!
//! A `forget(site)` op is a tombstone over the whole site: every `membership` and
//! `host` op about that site whose order is *not greater* than the forget op's is
//! void, now and forever. That is what keeps a stale peer, gossiping ops it made
//! before the site was forgotten, from resurrecting it; only a deliberate re-join
//! (a new op made after the forget, hence with a greater Lamport clock) brings the
//! site back.
//!
//! The state is therefore a pure function of the *set* of ops ever seen:
//! for each key the maximum op, minus membership/host ops voided by the maximum
//! forget op of their site. Merging is set union, so it is commutative,
//! associative and idempotent (`tests/crdt_properties.rs` checks it with proptest).
//! The one exception is the explicit bound [`CrdtLimits::forgotten_sites_max`]: past
//! it, the oldest tombstones are evicted (documented in `docs/formats.md`).
//!
//! # Delta sync
//!
//! Each state keeps a [`Digest`]: for every origin site, the clock up to which it
//! knows that origin's ops *completely* (every op of that origin with a smaller or
//! equal clock is either held or superseded by a greater op). A peer answers a
//! digest with a [`Delta`]: its winning ops newer than the digest, grouped by
//! origin and sorted by clock, and for each origin the clock it now covers. A
//! delta truncated by a size limit covers only the prefix it carries, so the
//! "complete up to" claim stays true and anti-entropy converges.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::site::{NodeAddr, SiteId};

/// A Lamport clock value.
pub type Clock = u64;

/// The total order of ops: clock first, then the random magic, then the origin.
///
/// Field order matters: the derived `Ord` compares fields top to bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpOrder {
    /// Lamport clock of the origin when it made the op.
    pub clock: Clock,
    /// Arbitrary value breaking ties between ops with the same clock.
    pub magic: u64,
    /// The site that made the op.
    pub origin: SiteId,
}

/// What an op says about its site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// `membership(site) := bool` — `false` is a kick (a tombstone of membership).
    Member(bool),
    /// `host(site) := node` — the network address the site runs at.
    Host(NodeAddr),
    /// `forget(site)` — void every older op about the site.
    Forget,
}

/// Which register of a site an op writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyKind {
    /// The `membership(site)` register.
    Member,
    /// The `host(site)` register.
    Host,
    /// The `forget(site)` tombstone.
    Forget,
}

/// A register: one kind about one site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The site the register is about.
    pub site: SiteId,
    /// Which register.
    pub kind: KeyKind,
}

/// One last-writer-wins operation. The key's kind is implied by the value, so an
/// op can never carry a value of the wrong kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Op {
    /// Total order of the op (compared first).
    pub order: OpOrder,
    /// The site the op is about.
    pub site: SiteId,
    /// The new value.
    pub value: Value,
    /// The origin's local time in ms when it made the op (informational only:
    /// wall clocks of different sites are not comparable, so nothing orders by it).
    pub origin_time_ms: u64,
}

impl Op {
    /// The register this op writes.
    pub fn key(&self) -> Key {
        let kind = match self.value {
            Value::Member(_) => KeyKind::Member,
            Value::Host(_) => KeyKind::Host,
            Value::Forget => KeyKind::Forget,
        };
        Key {
            site: self.site,
            kind,
        }
    }
}

/// Explicit bounds on the CRDT's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtLimits {
    /// Maximum number of distinct sites with live (non-forgotten) registers. Ops
    /// about a new site beyond it are refused, so a buggy or hostile peer cannot
    /// grow the state without bound. Counted per site, at most 2 registers each.
    pub sites_max: usize,
    /// Maximum number of `forget` tombstones kept (about 60 bytes each). Past it,
    /// the tombstone with the lowest order is evicted: a peer that was partitioned
    /// for longer than it took to forget this many sites could then resurrect the
    /// oldest one. 100,000 tombstones are about 6 MB.
    pub forgotten_sites_max: usize,
}

impl Default for CrdtLimits {
    fn default() -> Self {
        CrdtLimits {
            sites_max: 16_384,
            forgotten_sites_max: 100_000,
        }
    }
}

/// What happened to one op offered to [`Crdt::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The op is the new winner of its register.
    Accepted,
    /// The register already holds this op or a greater one.
    Stale,
    /// A `forget` of the op's site with a greater or equal order voids it.
    Voided,
    /// The op is about a new site and [`CrdtLimits::sites_max`] is reached.
    SitesLimit,
}

/// A stored op plus local bookkeeping that is *not* part of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The winning op.
    pub op: Op,
    /// Local time in ms at which this site first held this op (drives `cleanup`).
    pub seen_at_ms: u64,
}

/// For each origin, the clock up to which its ops are known completely.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// `origin -> clock`.
    pub versions: BTreeMap<SiteId, Clock>,
}

impl Digest {
    /// The clock known for `origin` (0 when unknown).
    pub fn get(&self, origin: SiteId) -> Clock {
        self.versions.get(&origin).copied().unwrap_or(0)
    }
}

/// A batch of ops plus what it covers: after applying it, the receiver knows
/// origin `o` completely up to `covered[o]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Ops grouped by origin, each group sorted by clock.
    pub ops: Vec<Op>,
    /// `(origin, clock)` pairs: complete knowledge of `origin` up to `clock`.
    pub covered: Vec<(SiteId, Clock)>,
}

impl Delta {
    /// True if the delta carries nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.covered.is_empty()
    }
}

/// The replicated state: one winning op per register, plus the sync digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crdt {
    /// Invariant: each stored op is the greatest op seen for its key, and no
    /// `Member`/`Host` op is stored whose order is `<=` its site's `Forget` order.
    entries: BTreeMap<Key, Stored>,
    /// Invariant: `versions[o] <= clock` for all `o`; complete knowledge claims.
    versions: BTreeMap<SiteId, Clock>,
    /// Lamport clock: `>=` the clock of every op seen or made.
    clock: Clock,
    limits: CrdtLimits,
}

impl Crdt {
    /// An empty state.
    pub fn new(limits: CrdtLimits) -> Self {
        Crdt {
            entries: BTreeMap::new(),
            versions: BTreeMap::new(),
            clock: 0,
            limits,
        }
    }

    /// The current Lamport clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The limits in force.
    pub fn limits(&self) -> &CrdtLimits {
        &self.limits
    }

    /// Raises the Lamport clock to at least `clock` (used when a peer's digest
    /// shows that this site made ops before a restart).
    pub fn observe_clock(&mut self, clock: Clock) {
        self.clock = self.clock.max(clock);
    }

    /// Makes a new op at `origin` (the local site): ticks the Lamport clock,
    /// applies the op and records it in the digest.
    pub fn make(
        &mut self,
        origin: SiteId,
        site: SiteId,
        value: Value,
        magic: u64,
        now_ms: u64,
    ) -> (Op, ApplyOutcome) {
        // Lamport: a new op is later than everything this site has seen.
        let floor = self.versions.get(&origin).copied().unwrap_or(0);
        self.clock = self.clock.max(floor) + 1;
        let op = Op {
            order: OpOrder {
                clock: self.clock,
                magic,
                origin,
            },
            site,
            value,
            origin_time_ms: now_ms,
        };
        let outcome = self.apply(op.clone(), now_ms);
        // The local stream is trivially complete up to its own newest op.
        self.versions.insert(origin, self.clock);
        (op, outcome)
    }

    /// Applies one op (from anywhere). Never advances the digest by itself.
    pub fn apply(&mut self, op: Op, now_ms: u64) -> ApplyOutcome {
        self.clock = self.clock.max(op.order.clock);
        let key = op.key();
        if key.kind != KeyKind::Forget {
            let forget_key = Key {
                site: op.site,
                kind: KeyKind::Forget,
            };
            if let Some(forget) = self.entries.get(&forget_key) {
                // The tombstone voids everything about the site not newer than it.
                if op.order <= forget.op.order {
                    return ApplyOutcome::Voided;
                }
            }
        }
        match self.entries.get(&key) {
            Some(existing) if existing.op >= op => return ApplyOutcome::Stale,
            Some(_) => {}
            None => {
                if key.kind != KeyKind::Forget
                    && !self.has_live_site(op.site)
                    && self.live_site_count() >= self.limits.sites_max
                {
                    return ApplyOutcome::SitesLimit;
                }
            }
        }
        let order = op.order;
        self.entries.insert(
            key,
            Stored {
                op,
                seen_at_ms: now_ms,
            },
        );
        if key.kind == KeyKind::Forget {
            for kind in [KeyKind::Member, KeyKind::Host] {
                let voided_key = Key {
                    site: key.site,
                    kind,
                };
                if self
                    .entries
                    .get(&voided_key)
                    .is_some_and(|stored| stored.op.order <= order)
                {
                    self.entries.remove(&voided_key);
                }
            }
            self.evict_tombstones_over_limit();
        }
        ApplyOutcome::Accepted
    }

    fn has_live_site(&self, site: SiteId) -> bool {
        [KeyKind::Member, KeyKind::Host]
            .iter()
            .any(|&kind| self.entries.contains_key(&Key { site, kind }))
    }

    fn live_site_count(&self) -> usize {
        let mut count = 0;
        let mut last = None;
        for key in self.entries.keys() {
            if key.kind != KeyKind::Forget && last != Some(key.site) {
                count += 1;
                last = Some(key.site);
            }
        }
        count
    }

    fn evict_tombstones_over_limit(&mut self) {
        let tombstones = self
            .entries
            .iter()
            .filter(|(key, _)| key.kind == KeyKind::Forget)
            .count();
        if tombstones <= self.limits.forgotten_sites_max {
            return;
        }
        let mut by_order: Vec<(OpOrder, Key)> = self
            .entries
            .iter()
            .filter(|(key, _)| key.kind == KeyKind::Forget)
            .map(|(key, stored)| (stored.op.order, *key))
            .collect();
        by_order.sort();
        for (_, key) in by_order
            .into_iter()
            .take(tombstones - self.limits.forgotten_sites_max)
        {
            self.entries.remove(&key);
        }
    }

    /// Applies a delta: every op, then the coverage claims.
    /// Returns the keys whose winner changed.
    pub fn apply_delta(&mut self, delta: Delta, now_ms: u64) -> Vec<Key> {
        let mut changed = Vec::new();
        for op in delta.ops {
            let key = op.key();
            if self.apply(op, now_ms) == ApplyOutcome::Accepted {
                changed.push(key);
            }
        }
        for (origin, clock) in delta.covered {
            self.clock = self.clock.max(clock);
            let known = self.versions.entry(origin).or_insert(0);
            *known = (*known).max(clock);
        }
        changed
    }

    /// This state's digest.
    pub fn digest(&self) -> Digest {
        Digest {
            versions: self.versions.clone(),
        }
    }

    /// The ops a peer with digest `theirs` lacks, at most `ops_max` of them.
    /// Origins are visited starting at index `start` (pass a random number so
    /// that truncated deltas do not always favour the same origins).
    pub fn delta_for(&self, theirs: &Digest, ops_max: usize, start: usize) -> Delta {
        let mut groups: BTreeMap<SiteId, Vec<&Op>> = BTreeMap::new();
        for stored in self.entries.values() {
            let origin = stored.op.order.origin;
            if stored.op.order.clock > theirs.get(origin) {
                groups.entry(origin).or_default().push(&stored.op);
            }
        }
        let origins: Vec<SiteId> = groups.keys().copied().collect();
        let mut delta = Delta::default();
        if origins.is_empty() {
            return delta;
        }
        let offset = start % origins.len();
        for index in 0..origins.len() {
            let origin = origins[(offset + index) % origins.len()];
            let Some(group) = groups.get_mut(&origin) else {
                continue;
            };
            group.sort_by_key(|op| op.order);
            let room = ops_max.saturating_sub(delta.ops.len());
            if room == 0 {
                break;
            }
            if group.len() <= room {
                delta.ops.extend(group.iter().map(|op| (*op).clone()));
                // Claim our own knowledge, which may be less than the ops we hold
                // (ops applied outside a delta): never claim more than we know.
                let covered = self.versions.get(&origin).copied().unwrap_or(0);
                if covered > theirs.get(origin) {
                    delta.covered.push((origin, covered));
                }
            } else {
                let prefix = &group[..room];
                delta.ops.extend(prefix.iter().map(|op| (*op).clone()));
                if let Some(last) = prefix.last() {
                    let covered = self.versions.get(&origin).copied().unwrap_or(0);
                    delta.covered.push((origin, last.order.clock.min(covered)));
                }
                break;
            }
        }
        delta
    }

    /// Ops whose clock is in `from_clock..to_clock` (classy's `get_data`). A range
    /// starting at 0 is a complete snapshot below `to_clock`, so it also carries
    /// coverage; any other range carries ops only.
    pub fn range(&self, from_clock: Clock, to_clock: Clock) -> Delta {
        let mut ops: Vec<Op> = self
            .entries
            .values()
            .filter(|stored| (from_clock..to_clock).contains(&stored.op.order.clock))
            .map(|stored| stored.op.clone())
            .collect();
        ops.sort_by_key(|op| op.order);
        let covered = if from_clock == 0 {
            self.versions
                .iter()
                .map(|(&origin, &clock)| (origin, clock.min(to_clock.saturating_sub(1))))
                .filter(|&(_, clock)| clock > 0)
                .collect()
        } else {
            Vec::new()
        };
        Delta { ops, covered }
    }

    /// The winning op of a register.
    pub fn get(&self, key: &Key) -> Option<&Stored> {
        self.entries.get(key)
    }

    /// All stored registers in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, &Stored)> {
        self.entries.iter()
    }

    /// All winning ops in key order (the replicated state, without local
    /// bookkeeping): two states are converged when these are equal.
    pub fn ops(&self) -> Vec<Op> {
        self.entries
            .values()
            .map(|stored| stored.op.clone())
            .collect()
    }

    /// Forgets the digest entries of origins that no longer have a winning op and
    /// are not `keep` (the local site). Safe: a digest is only a lower bound, and a
    /// peer answers a missing entry with that origin's (absent) ops.
    pub fn prune_versions(&mut self, keep: SiteId) {
        let mut with_ops: std::collections::BTreeSet<SiteId> = Default::default();
        for stored in self.entries.values() {
            with_ops.insert(stored.op.order.origin);
        }
        self.versions
            .retain(|origin, _| *origin == keep || with_ops.contains(origin));
    }

    /// Number of stored registers (at most 2 per live site plus one per tombstone).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Merges another state into this one (set union of their ops).
    pub fn merge(&mut self, other: &Crdt, now_ms: u64) {
        for stored in other.entries.values() {
            self.apply(stored.op.clone(), now_ms);
        }
        for (&origin, &clock) in &other.versions {
            let known = self.versions.entry(origin).or_insert(0);
            *known = (*known).max(clock);
        }
        self.clock = self.clock.max(other.clock);
    }

    /// Encodes the whole state for persistence (format in `docs/formats.md`).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let body = SnapshotBody {
            clock: self.clock,
            versions: self.versions.iter().map(|(&o, &c)| (o, c)).collect(),
            entries: self.entries.values().cloned().collect(),
        };
        // Serialising plain owned data into a Vec cannot fail.
        let payload = postcard::to_allocvec(&body).unwrap_or_default();
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes a snapshot made by [`Crdt::encode_snapshot`], validating it.
    pub fn decode_snapshot(bytes: &[u8], limits: CrdtLimits) -> Result<Crdt, SnapshotError> {
        if bytes.len() < 14 {
            return Err(SnapshotError::Incomplete);
        }
        if bytes[0..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version });
        }
        let length = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        let stored_crc = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
        let payload = &bytes[14..];
        if payload.len() < length {
            return Err(SnapshotError::Incomplete);
        }
        if payload.len() > length {
            return Err(SnapshotError::Invalid("trailing bytes".into()));
        }
        if crc32c::crc32c(payload) != stored_crc {
            return Err(SnapshotError::Checksum);
        }
        let body: SnapshotBody =
            postcard::from_bytes(payload).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let mut crdt = Crdt::new(limits);
        // Re-applying validates the invariants instead of trusting the bytes.
        for stored in body.entries {
            crdt.apply(stored.op, stored.seen_at_ms);
        }
        for (origin, clock) in body.versions {
            crdt.versions.insert(origin, clock);
        }
        crdt.clock = crdt
            .clock
            .max(body.clock)
            .max(crdt.versions.values().copied().max().unwrap_or(0));
        Ok(crdt)
    }
}

/// Magic number of a persisted membership state.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"CHMS";
/// Version of the persisted membership state format.
pub const SNAPSHOT_VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    clock: Clock,
    versions: Vec<(SiteId, Clock)>,
    entries: Vec<Stored>,
}

/// Why persisted membership state could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the header or its declared length.
    #[error("membership snapshot is incomplete")]
    Incomplete,
    /// Not a membership snapshot.
    #[error("not a chorus membership snapshot (bad magic)")]
    BadMagic,
    /// Unknown version.
    #[error("membership snapshot version {found} is not supported (expected {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The checksum does not match.
    #[error("membership snapshot checksum mismatch")]
    Checksum,
    /// The payload does not decode.
    #[error("membership snapshot is invalid: {0}")]
    Invalid(String),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match &self.value {
            Value::Member(true) => "member=true".to_string(),
            Value::Member(false) => "member=false".to_string(),
            Value::Host(node) => format!("host={node}"),
            Value::Forget => "forget".to_string(),
        };
        write!(
            f,
            "{:?} {} @({}, {:x}, {:?})",
            self.site, value, self.order.clock, self.order.magic, self.order.origin
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(clock: Clock, origin: u128, site: u128, value: Value) -> Op {
        Op {
            order: OpOrder {
                clock,
                magic: 0,
                origin: SiteId(origin),
            },
            site: SiteId(site),
            value,
            origin_time_ms: 0,
        }
    }

    #[test]
    fn last_writer_wins_by_clock_then_magic_then_origin() {
        let mut crdt = Crdt::new(CrdtLimits::default());
        assert_eq!(
            crdt.apply(op(2, 1, 9, Value::Member(true)), 0),
            ApplyOutcome::Accepted
        );
        assert_eq!(
            crdt.apply(op(1, 5, 9, Value::Member(false)), 0),
            ApplyOutcome::Stale
        );
        assert_eq!(
            crdt.apply(op(2, 2, 9, Value::Member(false)), 0),
            ApplyOutcome::Accepted
        );
        let key = Key {
            site: SiteId(9),
            kind: KeyKind::Member,
        };
        assert_eq!(crdt.get(&key).unwrap().op.value, Value::Member(false));
        assert_eq!(crdt.clock(), 2);
    }

    #[test]
    fn forget_voids_older_ops_and_not_newer_ones() {
        let mut crdt = Crdt::new(CrdtLimits::default());
        crdt.apply(op(3, 1, 9, Value::Member(false)), 0);
        crdt.apply(op(4, 1, 9, Value::Host(NodeAddr::new("a"))), 0);
        assert_eq!(
            crdt.apply(op(10, 1, 9, Value::Forget), 0),
            ApplyOutcome::Accepted
        );
        assert_eq!(crdt.len(), 1);
        // A stale peer's old "member" op cannot resurrect the site.
        assert_eq!(
            crdt.apply(op(5, 2, 9, Value::Member(true)), 0),
            ApplyOutcome::Voided
        );
        // A deliberate re-join made later can.
        assert_eq!(
            crdt.apply(op(11, 2, 9, Value::Member(true)), 0),
            ApplyOutcome::Accepted
        );
    }

    #[test]
    fn tombstones_are_bounded() {
        let limits = CrdtLimits {
            sites_max: 100,
            forgotten_sites_max: 3,
        };
        let mut crdt = Crdt::new(limits);
        for site in 0..10 {
            crdt.apply(op(site as u64 + 1, 1, site, Value::Forget), 0);
        }
        assert_eq!(crdt.len(), 3);
        let kept: Vec<u128> = crdt.entries().map(|(k, _)| k.site.0).collect();
        assert_eq!(kept, vec![7, 8, 9]);
    }

    #[test]
    fn live_sites_are_bounded() {
        let limits = CrdtLimits {
            sites_max: 2,
            forgotten_sites_max: 3,
        };
        let mut crdt = Crdt::new(limits);
        assert_eq!(
            crdt.apply(op(1, 1, 1, Value::Member(true)), 0),
            ApplyOutcome::Accepted
        );
        assert_eq!(
            crdt.apply(op(2, 1, 2, Value::Member(true)), 0),
            ApplyOutcome::Accepted
        );
        assert_eq!(
            crdt.apply(op(3, 1, 2, Value::Host(NodeAddr::new("b"))), 0),
            ApplyOutcome::Accepted
        );
        assert_eq!(
            crdt.apply(op(4, 1, 3, Value::Member(true)), 0),
            ApplyOutcome::SitesLimit
        );
    }

    #[test]
    fn truncated_delta_covers_only_its_prefix() {
        let mut source = Crdt::new(CrdtLimits::default());
        for site in 0..5u128 {
            source.make(SiteId(1), SiteId(100 + site), Value::Member(true), 0, 0);
        }
        let delta = source.delta_for(&Digest::default(), 2, 0);
        assert_eq!(delta.ops.len(), 2);
        assert_eq!(delta.covered, vec![(SiteId(1), 2)]);
        let mut sink = Crdt::new(CrdtLimits::default());
        sink.apply_delta(delta, 0);
        let rest = source.delta_for(&sink.digest(), 100, 0);
        assert_eq!(rest.ops.len(), 3);
        sink.apply_delta(rest, 0);
        assert_eq!(sink.ops(), source.ops());
        assert_eq!(sink.digest(), source.digest());
        assert!(source.delta_for(&sink.digest(), 100, 0).is_empty());
    }

    #[test]
    fn snapshot_round_trip_and_errors() {
        let mut crdt = Crdt::new(CrdtLimits::default());
        crdt.make(SiteId(1), SiteId(1), Value::Member(true), 7, 5);
        crdt.make(SiteId(1), SiteId(1), Value::Host(NodeAddr::new("n1")), 8, 5);
        let bytes = crdt.encode_snapshot();
        let back = Crdt::decode_snapshot(&bytes, CrdtLimits::default()).unwrap();
        assert_eq!(back, crdt);
        assert_eq!(
            Crdt::decode_snapshot(&bytes[..5], CrdtLimits::default()),
            Err(SnapshotError::Incomplete)
        );
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            Crdt::decode_snapshot(&bad, CrdtLimits::default()),
            Err(SnapshotError::Checksum)
        );
        let mut bad = bytes.clone();
        bad[4] = 7;
        assert!(matches!(
            Crdt::decode_snapshot(&bad, CrdtLimits::default()),
            Err(SnapshotError::UnsupportedVersion { found: 7 })
        ));
    }
}

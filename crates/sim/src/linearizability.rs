//! Linearizability checking for key-value client histories.
//!
//! The simulator records, for every client request, when it was invoked, when
//! (and with what answer) it completed, or that its outcome is unknown (the
//! client timed out or crashed). [`check`] decides whether that history is
//! *linearizable* with respect to a map of independent registers: whether the
//! operations can be arranged in one sequential order that
//!
//! 1. respects real time — if `a` completed before `b` was invoked
//!    (`a.complete < b.invoke`, strictly), `a` comes before `b`; and
//! 2. is legal for the sequential specification — every register starts absent
//!    (`None`), `Put` stores `Some(value)` and answers `Ok`, `Get` answers the
//!    current value, `Cas` swaps iff the current value equals `expected`
//!    (`None` meaning "absent") and answers whether it swapped.
//!
//! # Algorithm
//!
//! **Locality / P-compositionality.** Herlihy & Wing ("Linearizability: A
//! Correctness Condition for Concurrent Objects", 1990) showed that a history
//! is linearizable iff its restriction to every object is. Every operation here
//! touches exactly one key, so each key is an independent register and is
//! checked on its own; this is the partitioning that Horn & Kroening ("Faster
//! linearizability checking via P-compositionality", FORTE 2015) exploit. It
//! turns one exponential search over the whole history into many small ones.
//!
//! **Wing & Gong search.** For a single key we use the depth-first search of
//! Wing & Gong ("Testing and Verifying Concurrent Objects", JPDC 1993): a
//! *configuration* is the set of operations linearized so far plus the
//! register value they produce. An unlinearized operation `c` is a *candidate*
//! if no other unlinearized (known) operation completed before `c` was
//! invoked — equivalently `c.invoke <= min { a.complete }` over the
//! unlinearized known operations (the "deadline"). The search tries each
//! candidate whose output is consistent with the sequential specification in
//! the current state, applies it, and recurses; on a dead end it backtracks.
//! The history is linearizable iff some branch linearizes every operation.
//!
//! **Memoisation and just-in-time linearisation (Lowe).** Lowe ("Testing for
//! linearizability", Concurrency and Computation: Practice and Experience,
//! 2017) observed that Wing & Gong's search revisits the same configuration
//! along many different orders, and that caching configurations already
//! explored (linearized set as a bitset, plus the object state) removes this
//! blow-up — the reachable configurations of a history with bounded
//! concurrency are few. We keep such a cache. In the spirit of his
//! *just-in-time* linearisation (linearize an operation only when it is forced
//! or useful), we also:
//!
//! * linearize greedily, without branching, any *read-only* known candidate
//!   whose output matches the current state (a matching `Get`, a `Cas` that
//!   correctly reports failure). An operation is read-only when *every*
//!   application consistent with its output leaves the register unchanged.
//!   This is sound: every operation that must precede such a candidate is
//!   already linearized, and moving a read-only operation to an earlier point
//!   of a valid linearization where it is also consistent leaves every other
//!   operation's state unchanged. (A `Put` of the current value is *not*
//!   eligible: later in the order it might be the write that changes the
//!   value back.);
//! * try candidates in order of their completion time (the operation whose
//!   response comes first is the one that is forced first).
//!
//! **Unknown outcomes.** An operation with `output: None` may have taken effect
//! at any instant after its invocation, or never. It is modelled as an
//! operation with completion time `+∞` that is *optional*: it never constrains
//! other operations' real-time order, its output is unconstrained, and the
//! search succeeds as soon as every *known* operation is linearized. Such
//! operations would otherwise stay candidates forever and multiply the search
//! space, so further reductions apply to them:
//!
//! * only unknown operations that change the register in the current state
//!   are branched on (unknown `Get`s are dropped up front; an unknown `Cas`
//!   that would fail, or a `Put` of the current value, is left for later);
//! * an unknown operation is never immediately followed by a `Put` (known or
//!   unknown): the put overwrites its effect before anything observes it, so
//!   a linearization that contains the pair remains valid without it;
//! * available unknown operations with the same action are interchangeable,
//!   so only the first unused one of each kind is branched on;
//! * a configuration is *dominated* by one with the same known operations and
//!   state but a subset of the unknown operations used (the latter can do
//!   everything the former can), so the cache stores, per (known set, state),
//!   the unknown sets already explored (an antichain) and prunes any
//!   configuration that is a superset of one of them. The "last operation was
//!   unknown, no `Put` next" restriction is stored as one more bit of that set.
//!
//! **Cheap refutations.** Before searching, known operations that can never
//! be linearized are detected directly (a wrong kind of output, or a `Get` /
//! successful `Cas` that observes a value no operation invoked early enough
//! ever wrote); these make the key a violation without any search.
//!
//! The search is iterative (no recursion) and bounded by `max_steps_per_key`
//! configuration expansions per key; if the bound is hit, the key is reported
//! as [`Verdict::Undecided`].
//!
//! # Example
//!
//! ```text
//! let history = vec![
//!     Operation { client: 1, invoke: 0, complete: 10,
//!                 op: KvOp::Put { key: 7, value: 1 }, output: Some(KvOutput::Ok) },
//!     Operation { client: 2, invoke: 20, complete: 30,
//!                 op: KvOp::Get { key: 7 }, output: Some(KvOutput::Value(None)) },
//! ];
//! // The get started after the put completed, yet saw the register absent.
//! assert!(matches!(check(&history, 1_000_000), Verdict::Violation { key: 7, .. }));
//! println!("{}", describe(&history, &check(&history, 1_000_000)));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// A client operation on a key-value register map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set the register to `Some(value)`.
    Put { key: u64, value: u64 },
    /// Read the register.
    Get { key: u64 },
    /// Set the register to `Some(new)` iff it currently equals `expected`
    /// (`None` meaning absent).
    Cas {
        key: u64,
        expected: Option<u64>,
        new: u64,
    },
}

impl KvOp {
    /// The key this operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Cas { key, .. } => key,
        }
    }
}

/// What the system answered. `Cas` answers whether it swapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    /// Answer to a `Put`.
    Ok,
    /// Answer to a `Get`: the value read (`None` = absent).
    Value(Option<u64>),
    /// Answer to a `Cas`: whether the swap happened.
    Swapped(bool),
}

/// One entry of a history: invoked at `invoke`, completed at `complete`
/// (simulated nanoseconds/ms, any monotonic unit).
///
/// `output: None` means the outcome is unknown (timed out, crashed client): the
/// operation may have taken effect at any point after `invoke`, or never; its
/// output is unconstrained. `complete` is then ignored.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: u64,
    pub invoke: u64,
    pub complete: u64,
    pub op: KvOp,
    pub output: Option<KvOutput>,
}

/// Result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history has a linearization.
    Linearizable,
    /// No linearization exists for this key; `operations` are the indices
    /// (into the input slice, ascending) of that key's operations, for the
    /// report.
    Violation { key: u64, operations: Vec<usize> },
    /// The search hit `max_steps` for a key without deciding.
    Undecided { key: u64 },
}

/// Checks `history` for linearizability, key by key (in ascending key order).
///
/// Returns the first [`Verdict::Violation`] found; if no key is violated but
/// some key's search exceeded `max_steps_per_key` configuration expansions,
/// returns [`Verdict::Undecided`] for the first such key; otherwise
/// [`Verdict::Linearizable`].
pub fn check(history: &[Operation], max_steps_per_key: u64) -> Verdict {
    let mut by_key: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.op.key()).or_default().push(i);
    }
    let mut undecided = None;
    for (key, indices) in by_key {
        match KeyProblem::new(history, &indices).solve(max_steps_per_key) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::Violation => {
                return Verdict::Violation {
                    key,
                    operations: indices,
                }
            }
            KeyOutcome::Undecided => {
                undecided.get_or_insert(key);
            }
        }
    }
    match undecided {
        Some(key) => Verdict::Undecided { key },
        None => Verdict::Linearizable,
    }
}

/// A human-readable explanation of a verdict. For a violation: the key's
/// operations sorted by invoke time, with their outputs (for the simulator's
/// failure report).
pub fn describe(history: &[Operation], verdict: &Verdict) -> String {
    match verdict {
        Verdict::Linearizable => "history is linearizable\n".to_string(),
        Verdict::Violation { key, operations } => {
            let mut s = format!(
                "linearizability violation on key {key}: no sequential order of these {} \
                 operations respects both real time and register semantics \
                 (register starts absent; `a` must precede `b` when a.complete < b.invoke; \
                 unknown outcomes may take effect any time after invoke, or never).\n\
                 Operations sorted by invoke time:\n",
                operations.len()
            );
            write_operations(&mut s, history, operations);
            s
        }
        Verdict::Undecided { key } => {
            let indices: Vec<usize> = history
                .iter()
                .enumerate()
                .filter(|(_, o)| o.op.key() == *key)
                .map(|(i, _)| i)
                .collect();
            let mut s = format!(
                "linearizability of key {key} undecided: search step budget exhausted over {} \
                 operations. Operations sorted by invoke time:\n",
                indices.len()
            );
            write_operations(&mut s, history, &indices);
            s
        }
    }
}

fn write_operations(s: &mut String, history: &[Operation], indices: &[usize]) {
    let mut sorted: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| i < history.len())
        .collect();
    sorted.sort_by_key(|&i| (history[i].invoke, history[i].complete, i));
    for i in sorted {
        let o = &history[i];
        let op = match &o.op {
            KvOp::Put { key, value } => format!("put(key={key}, value={value})"),
            KvOp::Get { key } => format!("get(key={key})"),
            KvOp::Cas { key, expected, new } => format!(
                "cas(key={key}, expected={}, new={new})",
                fmt_value(*expected)
            ),
        };
        let (end, out) = match &o.output {
            None => (
                "?".to_string(),
                "unknown (may have taken effect after invoke, or never)".to_string(),
            ),
            Some(out) => (
                o.complete.to_string(),
                match out {
                    KvOutput::Ok => "ok".to_string(),
                    KvOutput::Value(v) => fmt_value(*v),
                    KvOutput::Swapped(true) => "swapped".to_string(),
                    KvOutput::Swapped(false) => "not swapped".to_string(),
                },
            ),
        };
        let _ = writeln!(
            s,
            "  #{i:<6} client {:<6} [{:>10}, {:>10}]  {op} -> {out}",
            o.client, o.invoke, end
        );
    }
}

fn fmt_value(v: Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Per-key search
// ---------------------------------------------------------------------------

/// The register value.
type State = Option<u64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Put(u64),
    Get,
    Cas { expected: Option<u64>, new: u64 },
}

/// Constraint on the output (`Any` for unknown outcomes).
#[derive(Clone, Copy, Debug)]
enum Expect {
    Any,
    Ok,
    Value(Option<u64>),
    Swapped(bool),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    invoke: u64,
    /// `u64::MAX` for unknown outcomes; clamped to `>= invoke` otherwise.
    complete: u64,
    action: Action,
    expect: Expect,
    /// Every application consistent with the output leaves the register
    /// unchanged (reads, failed CASes, CASes from `v` to `v`).
    read_only: bool,
}

impl Entry {
    fn new(o: &Operation) -> Self {
        let action = match o.op {
            KvOp::Put { value, .. } => Action::Put(value),
            KvOp::Get { .. } => Action::Get,
            KvOp::Cas { expected, new, .. } => Action::Cas { expected, new },
        };
        let (expect, complete) = match &o.output {
            None => (Expect::Any, u64::MAX),
            Some(KvOutput::Ok) => (Expect::Ok, o.complete.max(o.invoke)),
            Some(KvOutput::Value(v)) => (Expect::Value(*v), o.complete.max(o.invoke)),
            Some(KvOutput::Swapped(b)) => (Expect::Swapped(*b), o.complete.max(o.invoke)),
        };
        let read_only = match (action, expect) {
            (Action::Get, _) | (Action::Cas { .. }, Expect::Swapped(false)) => true,
            (Action::Cas { expected, new }, Expect::Swapped(true)) => expected == Some(new),
            _ => false,
        };
        Entry {
            invoke: o.invoke,
            complete,
            action,
            expect,
            read_only,
        }
    }

    /// Applies the operation to `state`; `None` if its output is inconsistent.
    #[inline]
    fn step(&self, state: State) -> Option<State> {
        match (self.action, self.expect) {
            (Action::Put(v), Expect::Any | Expect::Ok) => Some(Some(v)),
            (Action::Get, Expect::Any) => Some(state),
            (Action::Get, Expect::Value(v)) => (v == state).then_some(state),
            (Action::Cas { expected, new }, e) => {
                let swapped = state == expected;
                let next = if swapped { Some(new) } else { state };
                match e {
                    Expect::Any => Some(next),
                    Expect::Swapped(b) if b == swapped => Some(next),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The value this operation may write, if any.
    fn writes(&self) -> Option<u64> {
        match (self.action, self.expect) {
            (Action::Put(v), Expect::Any | Expect::Ok) => Some(v),
            (Action::Cas { new, .. }, Expect::Any | Expect::Swapped(true)) => Some(new),
            _ => None,
        }
    }
}

#[inline]
fn words(n: usize) -> usize {
    n.div_ceil(64)
}

#[inline]
fn bit_get(bits: &[u64], i: usize) -> bool {
    (bits[i / 64] >> (i % 64)) & 1 == 1
}

#[inline]
fn bit_set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

#[inline]
fn bit_clear(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

#[inline]
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

enum KeyOutcome {
    Linearizable,
    Violation,
    Undecided,
}

#[derive(Clone, Copy)]
enum Pick {
    Known(usize),
    Unknown(usize),
}

/// A search configuration.
#[derive(Clone)]
struct Node {
    /// Linearized known operations (indexed like `KeyProblem::known`).
    known_done: Vec<u64>,
    /// Linearized unknown operations (indexed like `KeyProblem::unknown`),
    /// plus one extra bit (index `unknown.len()`): "the last operation
    /// linearized was an unknown one", which forbids a `Put` next. Setting
    /// that bit only removes options, so the subset-dominance of the memo
    /// covers it too.
    unknown_done: Vec<u64>,
    state: State,
    /// Number of known operations not yet linearized.
    remaining: usize,
    /// All of `known[..lo]` are linearized (derived, not part of identity).
    lo: usize,
    /// All of `by_deadline[..dl]` are linearized (derived).
    dl: usize,
}

struct Frame {
    node: Node,
    candidates: Vec<(Pick, State)>,
    next: usize,
}

/// Explored configurations: (known set, state) -> unknown sets explored with
/// it (an antichain under inclusion).
#[derive(Default)]
struct Memo {
    seen: HashMap<(Vec<u64>, State), Vec<Vec<u64>>>,
}

impl Memo {
    /// Records `node`; returns false if it (or a configuration dominating it)
    /// was already explored.
    fn insert(&mut self, node: &Node) -> bool {
        let key = (node.known_done.clone(), node.state);
        let explored = self.seen.entry(key).or_default();
        if explored.iter().any(|u| is_subset(u, &node.unknown_done)) {
            return false;
        }
        explored.retain(|u| !is_subset(&node.unknown_done, u));
        explored.push(node.unknown_done.clone());
        true
    }
}

/// The sub-history of one key.
struct KeyProblem {
    /// Operations with a known outcome, sorted by invoke time.
    known: Vec<Entry>,
    /// Indices into `known`, sorted by completion time.
    by_deadline: Vec<usize>,
    /// Operations with an unknown outcome that could change the register,
    /// sorted by invoke time.
    unknown: Vec<Entry>,
}

impl KeyProblem {
    fn new(history: &[Operation], indices: &[usize]) -> Self {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for &i in indices {
            let o = &history[i];
            let e = Entry::new(o);
            if o.output.is_some() {
                known.push(e);
            } else if !matches!(e.action, Action::Get) {
                // Unknown gets never affect anything: drop them.
                unknown.push(e);
            }
        }
        // Stable sorts keep input order among ties (determinism).
        known.sort_by_key(|e| e.invoke);
        unknown.sort_by_key(|e| e.invoke);
        let mut by_deadline: Vec<usize> = (0..known.len()).collect();
        by_deadline.sort_by_key(|&i| (known[i].complete, known[i].invoke));
        KeyProblem {
            known,
            by_deadline,
            unknown,
        }
    }

    /// Whether some known operation can be refuted without any search.
    fn trivially_impossible(&self) -> bool {
        // value -> invoke times of (distinct) operations that may write it.
        let mut writers: HashMap<u64, Vec<(u64, usize)>> = HashMap::new();
        let all = self.known.iter().enumerate().chain(
            self.unknown
                .iter()
                .enumerate()
                .map(|(i, e)| (i + self.known.len(), e)),
        );
        for (id, e) in all {
            if let Some(v) = e.writes() {
                writers.entry(v).or_default().push((e.invoke, id));
            }
        }
        let written_in_time = |v: u64, by: u64, me: usize| {
            writers
                .get(&v)
                .is_some_and(|ws| ws.iter().any(|&(inv, id)| id != me && inv <= by))
        };
        self.known.iter().enumerate().any(|(id, e)| {
            match (e.action, e.expect) {
                (Action::Put(_), Expect::Ok) => false,
                (Action::Get, Expect::Value(None)) => false,
                (Action::Get, Expect::Value(Some(v))) => !written_in_time(v, e.complete, id),
                (Action::Cas { expected, .. }, Expect::Swapped(true)) => {
                    expected.is_some_and(|v| !written_in_time(v, e.complete, id))
                }
                (Action::Cas { .. }, Expect::Swapped(false)) => false,
                // A known operation with the wrong kind of output.
                _ => true,
            }
        })
    }

    fn advance(&self, node: &mut Node) {
        while node.lo < self.known.len() && bit_get(&node.known_done, node.lo) {
            node.lo += 1;
        }
        while node.dl < self.by_deadline.len()
            && bit_get(&node.known_done, self.by_deadline[node.dl])
        {
            node.dl += 1;
        }
    }

    /// Earliest completion among unlinearized known operations: only
    /// operations invoked no later than this may be linearized next.
    fn deadline(&self, node: &Node) -> u64 {
        self.by_deadline
            .get(node.dl)
            .map_or(u64::MAX, |&i| self.known[i].complete)
    }

    /// Greedily linearizes candidates that are consistent and leave the
    /// register unchanged (sound: see the module docs).
    fn close(&self, node: &mut Node) {
        loop {
            self.advance(node);
            if node.remaining == 0 {
                return;
            }
            let deadline = self.deadline(node);
            let mut progressed = false;
            for i in node.lo..self.known.len() {
                let e = &self.known[i];
                if e.invoke > deadline {
                    break;
                }
                if e.read_only && !bit_get(&node.known_done, i) && e.step(node.state).is_some() {
                    bit_set(&mut node.known_done, i);
                    node.remaining -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Candidates worth branching on (after `close`), with resulting states.
    fn candidates(&self, node: &Node) -> Vec<(Pick, State)> {
        let deadline = self.deadline(node);
        let mut out: Vec<(Pick, State)> = Vec::new();
        for (i, e) in self.known.iter().enumerate().skip(node.lo) {
            if e.invoke > deadline {
                break;
            }
            if bit_get(&node.known_done, i) {
                continue;
            }
            if let Some(next) = e.step(node.state) {
                out.push((Pick::Known(i), next));
            }
        }
        // Just-in-time flavour: the operation whose response comes first is
        // the one that is forced first.
        out.sort_by_key(|&(p, _)| match p {
            Pick::Known(i) => self.known[i].complete,
            Pick::Unknown(_) => u64::MAX,
        });
        let after_unknown = bit_get(&node.unknown_done, self.unknown.len());
        if after_unknown {
            // An unknown operation immediately followed by a put is useless.
            out.retain(|&(p, _)| match p {
                Pick::Known(i) => !matches!(self.known[i].action, Action::Put(_)),
                Pick::Unknown(_) => true,
            });
        }
        // Available unknown operations with identical actions are
        // interchangeable (both may take effect any time from now on): only
        // branch on the first unused one of each kind. This also keeps the
        // used ones of each kind a prefix, so the memo identifies them.
        let mut kinds: Vec<Action> = Vec::new();
        for (i, e) in self.unknown.iter().enumerate() {
            if e.invoke > deadline {
                break;
            }
            if bit_get(&node.unknown_done, i)
                || (after_unknown && matches!(e.action, Action::Put(_)))
                || kinds.contains(&e.action)
            {
                continue;
            }
            kinds.push(e.action);
            match e.step(node.state) {
                Some(next) if next != node.state => out.push((Pick::Unknown(i), next)),
                _ => {}
            }
        }
        out
    }

    fn solve(&self, max_steps: u64) -> KeyOutcome {
        if self.trivially_impossible() {
            return KeyOutcome::Violation;
        }
        let mut root = Node {
            known_done: vec![0; words(self.known.len())],
            unknown_done: vec![0; words(self.unknown.len() + 1)],
            state: None,
            remaining: self.known.len(),
            lo: 0,
            dl: 0,
        };
        self.close(&mut root);
        if root.remaining == 0 {
            return KeyOutcome::Linearizable;
        }
        let mut memo = Memo::default();
        memo.insert(&root);
        let candidates = self.candidates(&root);
        let mut stack = vec![Frame {
            node: root,
            candidates,
            next: 0,
        }];
        let mut steps: u64 = 0;
        while let Some(frame) = stack.last_mut() {
            let Some(&(pick, next_state)) = frame.candidates.get(frame.next) else {
                stack.pop();
                continue;
            };
            frame.next += 1;
            if steps >= max_steps {
                return KeyOutcome::Undecided;
            }
            steps += 1;
            let mut child = frame.node.clone();
            let flag = self.unknown.len();
            match pick {
                Pick::Known(i) => {
                    bit_set(&mut child.known_done, i);
                    child.remaining -= 1;
                    bit_clear(&mut child.unknown_done, flag);
                }
                Pick::Unknown(i) => {
                    bit_set(&mut child.unknown_done, i);
                    bit_set(&mut child.unknown_done, flag);
                }
            }
            child.state = next_state;
            let before = child.remaining;
            self.close(&mut child);
            if child.remaining != before {
                bit_clear(&mut child.unknown_done, flag);
            }
            if child.remaining == 0 {
                return KeyOutcome::Linearizable;
            }
            if !memo.insert(&child) {
                continue;
            }
            let candidates = self.candidates(&child);
            if !candidates.is_empty() {
                stack.push(Frame {
                    node: child,
                    candidates,
                    next: 0,
                });
            }
        }
        KeyOutcome::Violation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::{Duration, Instant};

    const STEPS: u64 = 10_000_000;

    fn put(client: u64, invoke: u64, complete: u64, key: u64, value: u64) -> Operation {
        Operation {
            client,
            invoke,
            complete,
            op: KvOp::Put { key, value },
            output: Some(KvOutput::Ok),
        }
    }

    fn get(client: u64, invoke: u64, complete: u64, key: u64, value: Option<u64>) -> Operation {
        Operation {
            client,
            invoke,
            complete,
            op: KvOp::Get { key },
            output: Some(KvOutput::Value(value)),
        }
    }

    fn cas(
        client: u64,
        invoke: u64,
        complete: u64,
        key: u64,
        expected: Option<u64>,
        new: u64,
        swapped: bool,
    ) -> Operation {
        Operation {
            client,
            invoke,
            complete,
            op: KvOp::Cas { key, expected, new },
            output: Some(KvOutput::Swapped(swapped)),
        }
    }

    fn unknown(client: u64, invoke: u64, op: KvOp) -> Operation {
        Operation {
            client,
            invoke,
            complete: invoke + 1,
            op,
            output: None,
        }
    }

    fn assert_lin(h: &[Operation]) {
        let v = check(h, STEPS);
        assert_eq!(v, Verdict::Linearizable, "{}", describe(h, &v));
    }

    fn assert_violation(h: &[Operation], key: u64) {
        match check(h, STEPS) {
            Verdict::Violation { key: k, operations } => {
                assert_eq!(k, key);
                let expected: Vec<usize> = (0..h.len()).filter(|&i| h[i].op.key() == key).collect();
                assert_eq!(operations, expected);
            }
            v => panic!("expected violation on key {key}, got {v:?}"),
        }
    }

    #[test]
    fn empty_and_trivial_histories() {
        assert_lin(&[]);
        assert_lin(&[get(1, 0, 1, 0, None)]);
        assert_lin(&[put(1, 0, 1, 0, 5), get(1, 2, 3, 0, Some(5))]);
        assert_violation(&[get(1, 0, 1, 0, Some(5))], 0);
    }

    #[test]
    fn stale_read_after_completed_write() {
        let h = vec![
            put(1, 0, 10, 1, 1),
            put(1, 20, 30, 1, 2),
            get(2, 40, 50, 1, Some(1)),
        ];
        assert_violation(&h, 1);
        // Same read overlapping the second write is fine.
        let h = vec![
            put(1, 0, 10, 1, 1),
            put(1, 20, 30, 1, 2),
            get(2, 25, 50, 1, Some(1)),
        ];
        assert_lin(&h);
        // Reading absent after a completed write.
        assert_violation(&[put(1, 0, 10, 1, 1), get(2, 11, 12, 1, None)], 1);
    }

    #[test]
    fn real_time_order_is_strict() {
        // a.complete == b.invoke: concurrent, so the get may precede the put.
        assert_lin(&[put(1, 0, 10, 1, 1), get(2, 10, 20, 1, None)]);
        assert_violation(&[put(1, 0, 10, 1, 1), get(2, 11, 20, 1, None)], 1);
    }

    #[test]
    fn concurrent_writes_read_in_inconsistent_orders() {
        // Client 3 sees 1 then 2, client 4 sees 2 then 1: the writes would
        // have to be ordered both ways.
        let h = vec![
            put(1, 0, 100, 7, 1),
            put(2, 0, 100, 7, 2),
            get(3, 10, 20, 7, Some(1)),
            get(3, 30, 40, 7, Some(2)),
            get(4, 10, 20, 7, Some(2)),
            get(4, 30, 40, 7, Some(1)),
        ];
        assert_violation(&h, 7);
        // Both clients agreeing on one order is fine.
        let h = vec![
            put(1, 0, 100, 7, 1),
            put(2, 0, 100, 7, 2),
            get(3, 10, 20, 7, Some(1)),
            get(3, 30, 40, 7, Some(2)),
            get(4, 10, 20, 7, Some(1)),
            get(4, 30, 40, 7, Some(2)),
        ];
        assert_lin(&h);
        // A single reader flipping back: 1, 2, 1 needs three writes.
        let h = vec![
            put(1, 0, 100, 7, 1),
            put(2, 0, 100, 7, 2),
            get(3, 10, 20, 7, Some(1)),
            get(3, 30, 40, 7, Some(2)),
            get(3, 50, 60, 7, Some(1)),
        ];
        assert_violation(&h, 7);
    }

    #[test]
    fn lost_cas() {
        // CAS reported success, but its write is lost.
        let h = vec![
            put(1, 0, 10, 3, 1),
            cas(1, 20, 30, 3, Some(1), 2, true),
            get(2, 40, 50, 3, Some(1)),
        ];
        assert_violation(&h, 3);
        // Two concurrent CASes from the same expected value both succeed.
        let h = vec![
            put(1, 0, 10, 3, 1),
            cas(1, 20, 30, 3, Some(1), 2, true),
            cas(2, 20, 30, 3, Some(1), 3, true),
        ];
        assert_violation(&h, 3);
        // One succeeds, one fails: fine.
        let h = vec![
            put(1, 0, 10, 3, 1),
            cas(1, 20, 30, 3, Some(1), 2, true),
            cas(2, 20, 30, 3, Some(1), 3, false),
            get(3, 40, 50, 3, Some(2)),
        ];
        assert_lin(&h);
        // CAS failing although the value matched.
        let h = vec![put(1, 0, 10, 3, 1), cas(1, 20, 30, 3, Some(1), 2, false)];
        assert_violation(&h, 3);
        // CAS on absent.
        let h = vec![
            cas(1, 0, 10, 3, None, 4, true),
            cas(2, 20, 30, 3, None, 5, false),
            get(3, 40, 50, 3, Some(4)),
        ];
        assert_lin(&h);
    }

    #[test]
    fn unknown_operation_that_must_have_happened() {
        let h = vec![
            put(1, 0, 10, 1, 1),
            unknown(2, 5, KvOp::Put { key: 1, value: 2 }),
            get(3, 20, 30, 1, Some(2)),
        ];
        assert_lin(&h);
        // The unknown write may take effect long after its recorded
        // `complete` (which is ignored).
        let h = vec![
            put(1, 0, 10, 1, 1),
            unknown(2, 5, KvOp::Put { key: 1, value: 2 }),
            get(3, 20, 30, 1, Some(1)),
            get(3, 40, 50, 1, Some(2)),
        ];
        assert_lin(&h);
        // An unknown CAS that must have succeeded.
        let h = vec![
            put(1, 0, 10, 1, 1),
            unknown(
                2,
                12,
                KvOp::Cas {
                    key: 1,
                    expected: Some(1),
                    new: 9,
                },
            ),
            get(3, 20, 30, 1, Some(9)),
        ];
        assert_lin(&h);
        // ... but not when the register no longer held the expected value.
        let h = vec![
            put(1, 0, 10, 1, 1),
            put(1, 11, 12, 1, 2),
            unknown(
                2,
                13,
                KvOp::Cas {
                    key: 1,
                    expected: Some(1),
                    new: 9,
                },
            ),
            get(3, 20, 30, 1, Some(9)),
        ];
        assert_violation(&h, 1);
        // An unknown write invoked after the read completed cannot explain it.
        let h = vec![
            put(1, 0, 10, 1, 1),
            get(3, 20, 30, 1, Some(2)),
            unknown(2, 31, KvOp::Put { key: 1, value: 2 }),
        ];
        assert_violation(&h, 1);
        // It takes effect at most once.
        let h = vec![
            put(1, 0, 10, 1, 2),
            unknown(2, 11, KvOp::Put { key: 1, value: 1 }),
            get(3, 20, 30, 1, Some(1)),
            put(1, 40, 50, 1, 2),
            get(3, 60, 70, 1, Some(1)),
        ];
        assert_violation(&h, 1);
    }

    #[test]
    fn unknown_operation_that_must_not_be_required() {
        let h = vec![
            put(1, 0, 10, 1, 1),
            unknown(2, 5, KvOp::Put { key: 1, value: 2 }),
            get(3, 20, 30, 1, Some(1)),
            get(3, 40, 50, 1, Some(1)),
        ];
        assert_lin(&h);
        // Unknown ops alone: nothing to linearize.
        let h = vec![
            unknown(1, 0, KvOp::Put { key: 1, value: 2 }),
            unknown(2, 0, KvOp::Get { key: 1 }),
            unknown(
                3,
                0,
                KvOp::Cas {
                    key: 1,
                    expected: None,
                    new: 3,
                },
            ),
        ];
        assert_lin(&h);
        // Many pending unknown writes that never happened.
        let mut h: Vec<Operation> = (0..40)
            .map(|i| {
                unknown(
                    i,
                    i,
                    KvOp::Put {
                        key: 1,
                        value: 100 + i,
                    },
                )
            })
            .collect();
        h.push(get(99, 1000, 1001, 1, None));
        h.push(put(99, 1002, 1003, 1, 7));
        h.push(get(99, 1004, 1005, 1, Some(7)));
        assert_lin(&h);
    }

    #[test]
    fn put_of_current_value_may_be_the_later_write() {
        // Both orders of the concurrent puts must be considered even when one
        // of them rewrites the current value.
        let h = vec![
            put(1, 51, 64, 2, 0),
            put(1, 65, 94, 2, 1),
            put(2, 65, 95, 2, 0),
            cas(1, 98, 105, 2, Some(1), 1, false),
            get(2, 106, 129, 2, Some(0)),
        ];
        assert_lin(&h);
    }

    #[test]
    fn wrong_output_kind_is_a_violation() {
        let h = vec![Operation {
            client: 1,
            invoke: 0,
            complete: 1,
            op: KvOp::Put { key: 4, value: 1 },
            output: Some(KvOutput::Swapped(true)),
        }];
        assert_violation(&h, 4);
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = vec![
            put(1, 0, 10, 1, 1),
            put(1, 0, 10, 2, 1),
            get(2, 20, 30, 1, Some(1)),
            get(2, 20, 30, 2, None),
            get(3, 20, 30, 1, Some(1)),
        ];
        assert_violation(&h, 2);
        let v = check(&h, STEPS);
        assert_eq!(
            v,
            Verdict::Violation {
                key: 2,
                operations: vec![1, 3]
            }
        );
    }

    #[test]
    fn malformed_interval_is_clamped() {
        // complete < invoke is treated as complete == invoke.
        assert_lin(&[put(1, 10, 5, 1, 1), get(2, 10, 12, 1, Some(1))]);
    }

    #[test]
    fn step_budget_yields_undecided() {
        let h = vec![
            put(1, 0, 10, 5, 1),
            put(2, 0, 10, 5, 2),
            get(3, 0, 10, 5, Some(1)),
        ];
        assert_eq!(check(&h, 0), Verdict::Undecided { key: 5 });
        assert_lin(&h);
        // A violation elsewhere takes precedence over undecided.
        let mut h2 = h.clone();
        h2.push(get(1, 20, 30, 6, Some(1)));
        assert!(matches!(check(&h2, 0), Verdict::Violation { key: 6, .. }));
        assert!(describe(&h, &Verdict::Undecided { key: 5 }).contains("undecided"));
    }

    #[test]
    fn describe_violation() {
        let h = vec![
            put(1, 0, 10, 1, 1),
            unknown(
                4,
                3,
                KvOp::Cas {
                    key: 1,
                    expected: None,
                    new: 3,
                },
            ),
            put(1, 20, 30, 1, 2),
            get(2, 40, 50, 1, Some(1)),
            get(2, 40, 50, 9, None),
        ];
        let v = check(&h, STEPS);
        let text = describe(&h, &v);
        assert!(!text.is_empty());
        assert!(text.contains("key 1"), "{text}");
        assert!(text.contains("put(key=1, value=2)"), "{text}");
        assert!(text.contains("unknown"), "{text}");
        assert!(!text.contains("key=9"), "{text}");
        // Sorted by invoke: the unknown CAS (invoke 3) is listed before the
        // second put (invoke 20).
        assert!(text.find("cas(").unwrap() < text.find("value=2").unwrap());
        assert!(!describe(&h[..1], &check(&h[..1], STEPS)).is_empty());
    }

    // -----------------------------------------------------------------------
    // Cross-check against a brute-force reference
    // -----------------------------------------------------------------------

    /// Linearizability straight from the definition, over the whole history
    /// (no per-key split, no memoisation, no reductions): try every order of
    /// every subset of the unknown operations together with all known ones.
    fn brute_force(h: &[Operation]) -> bool {
        fn go(h: &[Operation], used: &mut Vec<bool>, state: &mut HashMap<u64, u64>) -> bool {
            if h.iter()
                .zip(used.iter())
                .all(|(o, &u)| u || o.output.is_none())
            {
                return true;
            }
            for j in 0..h.len() {
                if used[j] {
                    continue;
                }
                // Every known operation that completed before `j` was
                // invoked must already be placed.
                let blocked = (0..h.len()).any(|a| {
                    a != j && !used[a] && h[a].output.is_some() && h[a].complete < h[j].invoke
                });
                if blocked {
                    continue;
                }
                let key = h[j].op.key();
                let before = state.get(&key).copied();
                let (after, out) = match h[j].op {
                    KvOp::Put { value, .. } => (Some(value), KvOutput::Ok),
                    KvOp::Get { .. } => (before, KvOutput::Value(before)),
                    KvOp::Cas { expected, new, .. } => {
                        if before == expected {
                            (Some(new), KvOutput::Swapped(true))
                        } else {
                            (before, KvOutput::Swapped(false))
                        }
                    }
                };
                if h[j].output.as_ref().is_some_and(|o| *o != out) {
                    continue;
                }
                let set = |state: &mut HashMap<u64, u64>, v: Option<u64>| match v {
                    Some(v) => state.insert(key, v),
                    None => state.remove(&key),
                };
                used[j] = true;
                set(state, after);
                let ok = go(h, used, state);
                set(state, before);
                used[j] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        go(h, &mut vec![false; h.len()], &mut HashMap::new())
    }

    fn random_small_history(rng: &mut StdRng) -> Vec<Operation> {
        let n = rng.gen_range(1..=7);
        let keys = rng.gen_range(1..=2);
        let value = |rng: &mut StdRng| rng.gen_range(0..3);
        let opt_value = |rng: &mut StdRng| {
            if rng.gen_ratio(1, 4) {
                None
            } else {
                Some(rng.gen_range(0..3))
            }
        };
        let unknown_pct = rng.gen_range(0..=60);
        (0..n)
            .map(|i| {
                let key = rng.gen_range(0..keys);
                let invoke = rng.gen_range(0..20);
                let complete = invoke + rng.gen_range(0..10);
                let (op, out) = match rng.gen_range(0..3) {
                    0 => (
                        KvOp::Put {
                            key,
                            value: value(rng),
                        },
                        KvOutput::Ok,
                    ),
                    1 => (KvOp::Get { key }, KvOutput::Value(opt_value(rng))),
                    _ => (
                        KvOp::Cas {
                            key,
                            expected: opt_value(rng),
                            new: value(rng),
                        },
                        KvOutput::Swapped(rng.gen_bool(0.5)),
                    ),
                };
                let output = if rng.gen_ratio(unknown_pct, 100) {
                    None
                } else {
                    Some(out)
                };
                Operation {
                    client: i,
                    invoke,
                    complete,
                    op,
                    output,
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..30_000 {
            let h = random_small_history(&mut rng);
            let expected = brute_force(&h);
            let v = check(&h, STEPS);
            assert_eq!(
                v == Verdict::Linearizable,
                expected,
                "brute force says {expected}, checker says {v:?} for {h:#?}"
            );
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        assert!(yes > 3_000 && no > 3_000, "unbalanced sample: {yes} / {no}");
    }

    #[test]
    fn agrees_with_brute_force_on_model_histories() {
        // Model histories with one output perturbed: mixes near-misses of
        // both verdicts, with more concurrency and unknown operations.
        let mut rng = StdRng::seed_from_u64(0xfeed);
        for _ in 0..3_000 {
            let p = params(3, 3, 1, 3, 40);
            let mut h = generate(&mut rng, &p);
            let i = rng.gen_range(0..h.len());
            h[i].output = match (&h[i].op, &h[i].output) {
                (_, None) => None,
                (KvOp::Put { .. }, _) => Some(KvOutput::Ok),
                (KvOp::Get { .. }, _) => Some(KvOutput::Value(Some(rng.gen_range(0..3)))),
                (KvOp::Cas { .. }, _) => Some(KvOutput::Swapped(rng.gen_bool(0.5))),
            };
            let expected = brute_force(&h);
            let v = check(&h, STEPS);
            assert_eq!(v == Verdict::Linearizable, expected, "{v:?} for {h:#?}");
        }
    }

    // -----------------------------------------------------------------------
    // Generated histories
    // -----------------------------------------------------------------------

    struct GenParams {
        keys: u64,
        clients: u64,
        ops_per_client: usize,
        values: u64,
        unknown_pct: u32,
        max_gap: u64,
        max_duration: u64,
    }

    /// Runs a sequential reference model: each client issues operations one
    /// after another; each operation takes effect at a random instant inside
    /// its interval (unknown ones: at a random instant after invoke, or
    /// never), and outputs are computed by applying operations in order of
    /// those instants.
    fn generate(rng: &mut StdRng, p: &GenParams) -> Vec<Operation> {
        let mut ops = Vec::new();
        // (linearization point, index, takes effect)
        let mut points: Vec<(u64, usize, bool)> = Vec::new();
        let mut is_unknown: Vec<bool> = Vec::new();
        for client in 0..p.clients {
            let mut t = rng.gen_range(0..=p.max_gap);
            for _ in 0..p.ops_per_client {
                let invoke = t + rng.gen_range(0..=p.max_gap);
                let complete = invoke + rng.gen_range(0..=p.max_duration);
                let key = rng.gen_range(0..p.keys);
                let op = match rng.gen_range(0..10) {
                    0..=3 => KvOp::Put {
                        key,
                        value: rng.gen_range(0..p.values),
                    },
                    4..=7 => KvOp::Get { key },
                    _ => KvOp::Cas {
                        key,
                        expected: if rng.gen_ratio(1, 5) {
                            None
                        } else {
                            Some(rng.gen_range(0..p.values))
                        },
                        new: rng.gen_range(0..p.values),
                    },
                };
                let unknown = rng.gen_ratio(p.unknown_pct, 100);
                let (point, effect) = if unknown {
                    (
                        invoke + rng.gen_range(0..=4 * p.max_duration + 1),
                        rng.gen_bool(0.5),
                    )
                } else {
                    (rng.gen_range(invoke..=complete), true)
                };
                points.push((point, ops.len(), effect));
                is_unknown.push(unknown);
                ops.push(Operation {
                    client,
                    invoke,
                    complete,
                    op,
                    output: None,
                });
                t = complete;
            }
        }
        points.sort();
        let mut model: HashMap<u64, u64> = HashMap::new();
        for &(_, i, effect) in &points {
            if !effect {
                continue;
            }
            let out = match ops[i].op {
                KvOp::Put { key, value } => {
                    model.insert(key, value);
                    KvOutput::Ok
                }
                KvOp::Get { key } => KvOutput::Value(model.get(&key).copied()),
                KvOp::Cas { key, expected, new } => {
                    let swapped = model.get(&key).copied() == expected;
                    if swapped {
                        model.insert(key, new);
                    }
                    KvOutput::Swapped(swapped)
                }
            };
            if !is_unknown[i] {
                ops[i].output = Some(out);
            }
        }
        ops
    }

    fn params(
        clients: u64,
        ops_per_client: usize,
        keys: u64,
        values: u64,
        unknown_pct: u32,
    ) -> GenParams {
        GenParams {
            keys,
            clients,
            ops_per_client,
            values,
            unknown_pct,
            max_gap: 5,
            max_duration: 30,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn model_histories_are_linearizable(
            seed in any::<u64>(),
            clients in 1u64..8,
            ops_per_client in 1usize..25,
            keys in 1u64..4,
            values in 1u64..6,
            unknown_pct in 0u32..30,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let h = generate(&mut rng, &params(clients, ops_per_client, keys, values, unknown_pct));
            let v = check(&h, STEPS);
            prop_assert_eq!(&v, &Verdict::Linearizable, "{}", describe(&h, &v));
        }

        #[test]
        fn impossible_read_is_a_violation(
            seed in any::<u64>(),
            clients in 1u64..8,
            ops_per_client in 1usize..25,
            keys in 1u64..4,
            values in 1u64..6,
            unknown_pct in 0u32..30,
            pick in any::<prop::sample::Index>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut h = generate(&mut rng, &params(clients, ops_per_client, keys, values, unknown_pct));
            let gets: Vec<usize> = (0..h.len())
                .filter(|&i| matches!(h[i].op, KvOp::Get { .. }) && h[i].output.is_some())
                .collect();
            prop_assume!(!gets.is_empty());
            let target = gets[pick.index(gets.len())];
            // Values are drawn from 0..values, so this one was never written.
            h[target].output = Some(KvOutput::Value(Some(1_000_000)));
            let key = h[target].op.key();
            match check(&h, STEPS) {
                Verdict::Violation { key: k, operations } => {
                    prop_assert_eq!(k, key);
                    prop_assert!(operations.contains(&target));
                    let text = describe(&h, &Verdict::Violation { key: k, operations });
                    prop_assert!(!text.is_empty());
                }
                v => prop_assert!(false, "expected violation, got {:?}", v),
            }
        }
    }

    /// The search itself (not the cheap refutation) must also reject
    /// mutations that are only detectable by exhausting the configurations.
    #[test]
    fn stale_read_appended_to_generated_history_is_a_violation() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut h = generate(&mut rng, &params(6, 15, 1, 3, 10));
            let end = h.iter().map(|o| o.complete).max().unwrap() + 100;
            // Every value in 0..3 is possibly written earlier; after a
            // completed put of 3 nothing else can be observed.
            h.push(put(100, end, end + 1, 0, 0));
            h.push(put(100, end + 2, end + 3, 0, 3));
            h.push(get(101, end + 4, end + 5, 0, Some(0)));
            // Unknown ops from the generated prefix could still take effect
            // late, so only assert for histories without them.
            if h.iter().any(|o| o.output.is_none()) {
                continue;
            }
            assert_violation(&h, 0);
        }
    }

    fn perf_history(seed: u64, unknown_pct: u32) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = GenParams {
            keys: 1,
            clients: 8,
            ops_per_client: 25,
            values: 3,
            unknown_pct,
            max_gap: 2,
            max_duration: 40,
        };
        generate(&mut rng, &p)
    }

    #[test]
    fn performance_200_ops_concurrency_8() {
        for seed in 0..5 {
            for unknown_pct in [0, 5] {
                let h = perf_history(seed, unknown_pct);
                assert_eq!(h.len(), 200);
                let start = Instant::now();
                let v = check(&h, STEPS);
                let elapsed = start.elapsed();
                assert_eq!(v, Verdict::Linearizable, "{}", describe(&h, &v));
                assert!(
                    elapsed < Duration::from_millis(500),
                    "seed {seed}: took {elapsed:?}"
                );
            }
        }
    }

    #[test]
    fn performance_violation_requires_exhaustive_search() {
        for seed in 0..3 {
            let mut h = perf_history(seed, 0);
            let end = h.iter().map(|o| o.complete).max().unwrap() + 100;
            h.push(put(100, end, end + 1, 0, 0));
            h.push(put(100, end + 2, end + 3, 0, 2));
            h.push(get(101, end + 4, end + 5, 0, Some(0)));
            let start = Instant::now();
            let v = check(&h, STEPS);
            let elapsed = start.elapsed();
            assert!(matches!(v, Verdict::Violation { key: 0, .. }), "{v:?}");
            assert!(
                elapsed < Duration::from_millis(500),
                "seed {seed}: took {elapsed:?}"
            );
        }
    }
}

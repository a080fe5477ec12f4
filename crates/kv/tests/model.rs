//! Model-based property tests: the MVCC store against a reference model
//! that keeps the whole keyspace at every revision, plus snapshot
//! round-trips and determinism.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_kv::*;
use chorus_raft::Machine;
use common::*;
use proptest::prelude::*;

const KEYS: [&str; 6] = ["a", "b", "ba", "c", "d", "e"];

#[derive(Clone, Debug)]
enum Span {
    Single(usize),
    To(usize, usize),
    FromKey(usize),
}

impl Span {
    fn key_and_end(&self) -> (Bytes, Bytes) {
        match self {
            Span::Single(k) => (b(KEYS[*k]), Bytes::new()),
            Span::To(k, e) => (b(KEYS[*k]), b(KEYS[*e])),
            Span::FromKey(k) => (b(KEYS[*k]), Bytes::from_static(b"\0")),
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Span::Single(k) => key == KEYS[*k].as_bytes(),
            Span::To(k, e) => key >= KEYS[*k].as_bytes() && key < KEYS[*e].as_bytes(),
            Span::FromKey(k) => key >= KEYS[*k].as_bytes(),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize, u8),
    Delete(Span),
    Range(Span),
}

#[derive(Clone, Debug)]
enum Step {
    Write(Op),
    Txn {
        compare: Option<(usize, CompareResult, i64)>,
        success: Vec<Op>,
        failure: Vec<Op>,
    },
    Compact(i64),
    Read {
        span: Span,
        revision: i64,
        limit: i64,
    },
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![
        (0..KEYS.len()).prop_map(Span::Single),
        (0..KEYS.len(), 0..KEYS.len()).prop_map(|(k, e)| Span::To(k, e)),
        (0..KEYS.len()).prop_map(Span::FromKey),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS.len(), 0u8..4).prop_map(|(k, v)| Op::Put(k, v)),
        1 => span().prop_map(Op::Delete),
        1 => span().prop_map(Op::Range),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::NotEqual),
        Just(CompareResult::Less),
        Just(CompareResult::Greater),
    ];
    prop_oneof![
        6 => op().prop_map(Step::Write),
        3 => (
            proptest::option::of((0..KEYS.len(), result, 0i64..3)),
            proptest::collection::vec(op(), 0..4),
            proptest::collection::vec(op(), 0..3),
        )
            .prop_map(|(compare, success, failure)| Step::Txn { compare, success, failure }),
        1 => (0i64..40).prop_map(Step::Compact),
        3 => (span(), 0i64..40, 0i64..3).prop_map(|(span, revision, limit)| Step::Read { span, revision, limit }),
    ]
}

fn request(op: &Op) -> RequestOp {
    match op {
        Op::Put(k, v) => RequestOp::Put(PutRequest {
            key: b(KEYS[*k]),
            value: Bytes::from(vec![b'0' + v]),
            prev_kv: true,
            ..PutRequest::default()
        }),
        Op::Delete(span) => {
            let (key, range_end) = span.key_and_end();
            RequestOp::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: true,
            })
        }
        Op::Range(span) => {
            let (key, range_end) = span.key_and_end();
            RequestOp::Range(RangeRequest {
                key,
                range_end,
                ..RangeRequest::default()
            })
        }
    }
}

type State = BTreeMap<Bytes, KeyValue>;

/// The reference: the keyspace at every revision, by brute force.
struct Model {
    /// `states[r]` is the keyspace at revision `r` (index 0 unused).
    states: Vec<State>,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![State::new(), State::new()],
            compacted: 0,
        }
    }

    fn revision(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn current(&self) -> &State {
        self.states.last().unwrap()
    }

    /// etcd's duplicate rule for a flat list of ops.
    fn duplicate(ops: &[Op]) -> bool {
        let puts: Vec<usize> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(k, _) => Some(*k),
                _ => None,
            })
            .collect();
        let mut unique = puts.clone();
        unique.sort();
        unique.dedup();
        unique.len() != puts.len()
            || ops.iter().any(|op| match op {
                Op::Delete(span) => puts.iter().any(|k| span.contains(KEYS[*k].as_bytes())),
                _ => false,
            })
    }

    /// Run ops on a copy of the current state at the next revision; the
    /// result a response would show for each op.
    fn run(&self, ops: &[Op]) -> (State, Vec<Vec<KeyValue>>) {
        let next = self.revision() + 1;
        let mut state = self.current().clone();
        let mut results = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let key = b(KEYS[*k]);
                    let previous = state.get(&key).cloned();
                    let (create_revision, version) = previous
                        .as_ref()
                        .map_or((next, 1), |kv| (kv.create_revision, kv.version + 1));
                    state.insert(
                        key.clone(),
                        KeyValue {
                            key,
                            create_revision,
                            mod_revision: next,
                            version,
                            value: Bytes::from(vec![b'0' + v]),
                            lease: 0,
                        },
                    );
                    results.push(previous.into_iter().collect());
                }
                Op::Delete(span) => {
                    let gone: Vec<KeyValue> = state
                        .values()
                        .filter(|kv| span.contains(&kv.key))
                        .cloned()
                        .collect();
                    for kv in &gone {
                        state.remove(&kv.key);
                    }
                    results.push(gone);
                }
                Op::Range(span) => {
                    results.push(
                        state
                            .values()
                            .filter(|kv| span.contains(&kv.key))
                            .cloned()
                            .collect(),
                    );
                }
            }
        }
        (state, results)
    }

    fn commit(&mut self, state: State) {
        if &state != self.current() {
            self.states.push(state);
        }
    }

    fn read(&self, span: &Span, revision: i64) -> Result<Vec<KeyValue>, KvError> {
        if revision > self.revision() {
            return Err(KvError::FutureRevision);
        }
        let revision = if revision <= 0 {
            self.revision()
        } else {
            revision
        };
        if revision < self.compacted {
            return Err(KvError::Compacted {
                compact_revision: self.compacted,
            });
        }
        Ok(self.states[revision as usize]
            .values()
            .filter(|kv| span.contains(&kv.key))
            .cloned()
            .collect())
    }

    /// Events from `from` on, each revision's sorted by key.
    fn events(&self, from: i64) -> Vec<(i64, Bytes, Option<KeyValue>, Option<KeyValue>)> {
        let mut events = Vec::new();
        for revision in from.max(2)..=self.revision() {
            let before = &self.states[revision as usize - 1];
            let after = &self.states[revision as usize];
            let mut keys: Vec<&Bytes> = before.keys().chain(after.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if before.get(key) != after.get(key) {
                    events.push((
                        revision,
                        key.clone(),
                        after.get(key).cloned(),
                        before.get(key).cloned(),
                    ));
                }
            }
        }
        events
    }
}

fn op_result(response: &ResponseOp) -> Vec<KeyValue> {
    match response {
        ResponseOp::Put(r) => r.prev_kv.clone().into_iter().collect(),
        ResponseOp::DeleteRange(r) => r.prev_kvs.clone(),
        ResponseOp::Range(r) => r.kvs.clone(),
        ResponseOp::Txn(_) => unreachable!("the model generates no nested txns"),
    }
}

fn check_events(h: &Harness, model: &Model) {
    for from in model.compacted..=model.revision() + 1 {
        let machine = h
            .machine
            .events(from, &KeyRange::all(), usize::MAX)
            .unwrap();
        assert_eq!(machine.next_revision, model.revision() + 1);
        let mut got: Vec<_> = machine
            .events
            .into_iter()
            .map(|e| {
                let kv = match e.kind {
                    EventKind::Put => Some(e.kv.clone()),
                    EventKind::Delete => None,
                };
                (e.kv.mod_revision, e.kv.key, kv, e.prev_kv)
            })
            .collect();
        got.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        assert_eq!(got, model.events(from), "events from {from}");
    }
    if model.compacted > 1 {
        assert_eq!(
            h.machine.events(model.compacted - 1, &KeyRange::all(), 10),
            Err(KvError::Compacted {
                compact_revision: model.compacted
            })
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_store_matches_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        let mut h = Harness::default();
        let mut model = Model::new();
        for step in &steps {
            match step {
                Step::Write(op) => {
                    let (state, results) = model.run(std::slice::from_ref(op));
                    let reply = h.apply(match request(op) {
                        RequestOp::Put(put) => Command::Put(put),
                        RequestOp::DeleteRange(delete) => Command::DeleteRange(delete),
                        range => Command::Txn(TxnRequest { success: vec![range], ..TxnRequest::default() }),
                    }).unwrap();
                    let got = match &reply {
                        Response::Put(r) => r.prev_kv.clone().into_iter().collect(),
                        Response::DeleteRange(r) => r.prev_kvs.clone(),
                        Response::Txn(r) => op_result(&r.responses[0]),
                        other => panic!("unexpected {other:?}"),
                    };
                    prop_assert_eq!(&got, &results[0]);
                    model.commit(state);
                }
                Step::Txn { compare: guard, success, failure } => {
                    let holds = guard.is_none_or(|(k, result, version)| {
                        let actual = model.current().get(&b(KEYS[k])).map_or(0, |kv| kv.version);
                        match result {
                            CompareResult::Equal => actual == version,
                            CompareResult::NotEqual => actual != version,
                            CompareResult::Less => actual < version,
                            CompareResult::Greater => actual > version,
                        }
                    });
                    let txn = TxnRequest {
                        compare: guard.iter().map(|(k, result, version)| {
                            compare(KEYS[*k], *result, CompareTarget::Version(*version))
                        }).collect(),
                        success: success.iter().map(request).collect(),
                        failure: failure.iter().map(request).collect(),
                    };
                    let reply = h.txn(txn);
                    if Model::duplicate(success) || Model::duplicate(failure) {
                        prop_assert_eq!(reply, Err(KvError::DuplicateKey));
                        continue;
                    }
                    let reply = reply.unwrap();
                    prop_assert_eq!(reply.succeeded, holds);
                    let ops = if holds { success } else { failure };
                    let (state, results) = model.run(ops);
                    let got: Vec<_> = reply.responses.iter().map(op_result).collect();
                    prop_assert_eq!(&got, &results);
                    model.commit(state);
                    prop_assert_eq!(reply.header.revision, model.revision());
                }
                Step::Compact(revision) => {
                    let expected = if *revision <= model.compacted {
                        Err(KvError::Compacted { compact_revision: model.compacted })
                    } else if *revision > model.revision() {
                        Err(KvError::FutureRevision)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(h.compact(*revision).map(|_| ()), expected.clone());
                    if expected.is_ok() {
                        model.compacted = *revision;
                    }
                }
                Step::Read { span, revision, limit } => {
                    let (key, range_end) = span.key_and_end();
                    let got = h.range(RangeRequest {
                        key, range_end, revision: *revision, limit: *limit,
                        ..RangeRequest::default()
                    });
                    match model.read(span, *revision) {
                        Ok(all) => {
                            let got = got.unwrap();
                            let limit = *limit as usize;
                            let shown = if limit > 0 { all.len().min(limit) } else { all.len() };
                            prop_assert_eq!(&got.kvs[..], &all[..shown]);
                            prop_assert_eq!(got.count, all.len() as i64);
                            prop_assert_eq!(got.more, shown < all.len());
                            prop_assert_eq!(got.header.revision, model.revision());
                        }
                        Err(error) => prop_assert_eq!(got.unwrap_err(), error),
                    }
                }
            }
            prop_assert_eq!(h.machine.revision(), model.revision());
            prop_assert_eq!(h.machine.compact_revision(), model.compacted);
        }
        check_events(&h, &model);
    }
}

/// Random commands touching every part of the state: keys, history,
/// leases and their keys, compaction, the lease clock.
#[derive(Clone, Debug)]
enum Mixed {
    Put(usize, u8, Option<i64>),
    Delete(Span),
    Grant(i64, i64),
    Revoke(i64),
    KeepAlive(i64),
    Expire,
    Compact(i64),
    Wait(u64),
    NewTerm,
}

fn mixed() -> impl Strategy<Value = Mixed> {
    prop_oneof![
        4 => (0..KEYS.len(), 0u8..4, proptest::option::of(0i64..4)).prop_map(|(k, v, l)| Mixed::Put(k, v, l)),
        1 => span().prop_map(Mixed::Delete),
        2 => (0i64..4, 1i64..20).prop_map(|(id, ttl)| Mixed::Grant(id, ttl)),
        1 => (0i64..4).prop_map(Mixed::Revoke),
        1 => (0i64..4).prop_map(Mixed::KeepAlive),
        1 => Just(Mixed::Expire),
        1 => (0i64..30).prop_map(Mixed::Compact),
        2 => (0u64..8_000).prop_map(Mixed::Wait),
        1 => Just(Mixed::NewTerm),
    ]
}

/// Apply one random command; the reply, for comparing replicas.
fn apply_any(h: &mut Harness, step: &Mixed) -> String {
    let command = match step {
        Mixed::Put(k, v, lease) => Command::Put(PutRequest {
            key: b(KEYS[*k]),
            value: Bytes::from(vec![b'0' + v]),
            lease: lease.unwrap_or(0),
            ..PutRequest::default()
        }),
        Mixed::Delete(span) => {
            let (key, range_end) = span.key_and_end();
            Command::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: true,
            })
        }
        Mixed::Grant(id, ttl) => Command::LeaseGrant(LeaseGrantRequest { ttl: *ttl, id: *id }),
        Mixed::Revoke(id) => Command::LeaseRevoke(LeaseRevokeRequest { id: *id }),
        Mixed::KeepAlive(id) => Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: *id }),
        Mixed::Compact(revision) => Command::Compact(CompactionRequest {
            revision: *revision,
        }),
        Mixed::Expire => {
            let meta = h.meta();
            return format!("{:?}", h.machine.expire_leases(&meta).reply);
        }
        Mixed::Wait(ms) => {
            h.time_ms += ms;
            return String::new();
        }
        Mixed::NewTerm => {
            h.term += 1;
            return String::new();
        }
    };
    format!("{:?}", h.apply(command))
}

fn small_release_config() -> KvConfig {
    KvConfig {
        release_cursor_every_entries: 7,
        ..KvConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn restore_of_a_snapshot_is_the_same_machine(
        steps in proptest::collection::vec(mixed(), 0..80),
        after in proptest::collection::vec(mixed(), 0..10),
    ) {
        let mut h = Harness::new(small_release_config());
        for step in &steps {
            apply_any(&mut h, step);
        }
        let snapshot = h.machine.snapshot();
        let restored = KvMachine::restore(&snapshot).unwrap();
        prop_assert_eq!(&restored, &h.machine);
        prop_assert_eq!(restored.snapshot(), snapshot);
        // And it behaves the same from there on.
        let mut twin = Harness::new(small_release_config());
        twin.machine = restored;
        (twin.index, twin.term, twin.time_ms) = (h.index, h.term, h.time_ms);
        for step in &after {
            prop_assert_eq!(apply_any(&mut h, step), apply_any(&mut twin, step));
        }
        prop_assert_eq!(&twin.machine, &h.machine);
    }

    #[test]
    fn the_same_commands_give_the_same_snapshot_bytes(
        steps in proptest::collection::vec(mixed(), 0..80),
    ) {
        let mut one = Harness::new(small_release_config());
        let mut two = Harness::new(small_release_config());
        for step in &steps {
            prop_assert_eq!(apply_any(&mut one, step), apply_any(&mut two, step));
        }
        prop_assert_eq!(one.machine.snapshot(), two.machine.snapshot());
    }

    #[test]
    fn restore_never_panics_on_corrupt_bytes(
        steps in proptest::collection::vec(mixed(), 0..30),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut h = Harness::new(small_release_config());
        for step in &steps {
            apply_any(&mut h, step);
        }
        let snapshot = h.machine.snapshot();
        let mut corrupt = snapshot.clone();
        for (at, mask) in flips {
            let at = at.index(corrupt.len());
            corrupt[at] ^= mask;
        }
        prop_assert!(KvMachine::restore(&corrupt).is_err());
        let truncated = &snapshot[..cut.index(snapshot.len())];
        prop_assert!(KvMachine::restore(truncated).is_err());
    }

    #[test]
    fn restore_never_panics_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = KvMachine::restore(&data);
    }
}

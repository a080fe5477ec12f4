//! Property tests: the membership CRDT's merge is commutative, associative and
//! idempotent, independent of delivery order, and delta anti-entropy (with
//! truncated deltas) converges to the merge of everything.

use chorus_membership::crdt::{Crdt, CrdtLimits, Op, OpOrder, Value};
use chorus_membership::{NodeAddr, SiteId};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Member),
        prop_oneof![Just("a"), Just("b")].prop_map(|n| Value::Host(NodeAddr::new(n))),
        Just(Value::Forget),
    ]
}

/// Small domains so that ops collide on keys, clocks and even whole orders.
fn op() -> impl Strategy<Value = Op> {
    (0u64..8, 0u64..2, 0u128..3, 0u128..4, value()).prop_map(
        |(clock, magic, origin, site, value)| Op {
            order: OpOrder {
                clock,
                magic,
                origin: SiteId(origin),
            },
            site: SiteId(site),
            value,
            origin_time_ms: 0,
        },
    )
}

fn state(ops: &[Op]) -> Crdt {
    let mut crdt = Crdt::new(CrdtLimits::default());
    for op in ops {
        crdt.apply(op.clone(), 0);
    }
    crdt
}

fn merged(a: &Crdt, b: &Crdt) -> Crdt {
    let mut out = a.clone();
    out.merge(b, 0);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative(a in prop::collection::vec(op(), 0..20), b in prop::collection::vec(op(), 0..20)) {
        let (a, b) = (state(&a), state(&b));
        prop_assert_eq!(merged(&a, &b).ops(), merged(&b, &a).ops());
    }

    #[test]
    fn merge_is_associative(
        a in prop::collection::vec(op(), 0..15),
        b in prop::collection::vec(op(), 0..15),
        c in prop::collection::vec(op(), 0..15),
    ) {
        let (a, b, c) = (state(&a), state(&b), state(&c));
        prop_assert_eq!(merged(&merged(&a, &b), &c).ops(), merged(&a, &merged(&b, &c)).ops());
    }

    #[test]
    fn merge_is_idempotent(a in prop::collection::vec(op(), 0..20), b in prop::collection::vec(op(), 0..20)) {
        let (a, b) = (state(&a), state(&b));
        prop_assert_eq!(merged(&a, &a).ops(), a.ops());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b).ops(), ab.ops());
    }

    #[test]
    fn delivery_order_does_not_matter(ops in prop::collection::vec(op(), 0..30), seed in any::<u64>()) {
        use rand::{seq::SliceRandom, SeedableRng};
        let mut shuffled = ops.clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        shuffled.shuffle(&mut rng);
        // Duplicates too: delivering an op twice changes nothing.
        shuffled.extend(ops.iter().take(5).cloned());
        prop_assert_eq!(state(&ops).ops(), state(&shuffled).ops());
    }

    #[test]
    fn no_op_survives_a_newer_forget_of_its_site(ops in prop::collection::vec(op(), 0..30)) {
        let crdt = state(&ops);
        for (key, stored) in crdt.entries() {
            if let Some(forget) = ops.iter().filter(|op| op.site == key.site && op.value == Value::Forget).max() {
                if stored.op.value != Value::Forget {
                    prop_assert!(stored.op.order > forget.order);
                }
            }
        }
    }

    /// Three replicas make ops (through `make`, as sites do) and exchange
    /// truncated deltas in a random schedule; after a final round of complete
    /// exchanges all equal the merge of every op ever made.
    #[test]
    fn delta_anti_entropy_converges(
        steps in prop::collection::vec((0usize..3, 0usize..3, 0u128..4, value(), any::<bool>(), 1usize..4), 1..60),
    ) {
        let origins = [SiteId(10), SiteId(11), SiteId(12)];
        let mut replicas: Vec<Crdt> = (0..3).map(|_| Crdt::new(CrdtLimits::default())).collect();
        let mut all_ops = Vec::new();
        for (index, (actor, peer, site, value, exchange, ops_max)) in steps.into_iter().enumerate() {
            if exchange {
                let digest = replicas[peer].digest();
                let delta = replicas[actor].delta_for(&digest, ops_max, index);
                replicas[peer].apply_delta(delta, 0);
            } else {
                let (op, _) = replicas[actor].make(origins[actor], SiteId(site), value, index as u64, 0);
                all_ops.push(op);
            }
        }
        for _ in 0..all_ops.len() + 2 {
            for from in 0..3 {
                for to in 0..3 {
                    if from != to {
                        let digest = replicas[to].digest();
                        let delta = replicas[from].delta_for(&digest, 2, from + to);
                        replicas[to].apply_delta(delta, 0);
                    }
                }
            }
        }
        let expected = state(&all_ops).ops();
        for replica in &replicas {
            prop_assert_eq!(replica.ops(), expected.clone());
        }
    }
}

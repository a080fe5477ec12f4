//! One test per operation and per error, against etcd's documented
//! behaviour.

mod common;

use bytes::Bytes;
use chorus_kv::*;
use common::*;

#[test]
fn an_empty_store_is_at_revision_1_and_each_put_takes_the_next() {
    let mut h = Harness::default();
    assert_eq!(h.machine.revision(), 1);
    let put = h.put("a", "1");
    assert_eq!(put.header.revision, 2);
    assert_eq!(put.prev_kv, None);
    h.put("a", "2");
    let kv = h.get("a").unwrap();
    assert_eq!(
        kv,
        KeyValue {
            key: b("a"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: b("2"),
            lease: 0,
        }
    );
    // A delete resets the version; the next put creates the key anew.
    h.delete("a", "");
    assert_eq!(h.get("a"), None);
    h.put("a", "3");
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn put_returns_the_previous_value_when_asked() {
    let mut h = Harness::default();
    h.put("k", "old");
    let put = h
        .put_request(PutRequest {
            key: b("k"),
            value: b("new"),
            prev_kv: true,
            ..PutRequest::default()
        })
        .unwrap();
    assert_eq!(put.prev_kv.unwrap().value, b("old"));
}

#[test]
fn ignore_value_and_ignore_lease_keep_what_the_key_holds() {
    let mut h = Harness::default();
    let lease = h.grant(7, 60).unwrap().id;
    h.put_request(PutRequest {
        key: b("k"),
        value: b("v"),
        lease,
        ..PutRequest::default()
    })
    .unwrap();
    h.put_request(PutRequest {
        key: b("k"),
        ignore_value: true,
        ..PutRequest::default()
    })
    .unwrap();
    let kv = h.get("k").unwrap();
    assert_eq!((kv.value, kv.lease, kv.version), (b("v"), 0, 2));
    h.put_request(PutRequest {
        key: b("k"),
        value: b("w"),
        lease,
        ..PutRequest::default()
    })
    .unwrap();
    h.put_request(PutRequest {
        key: b("k"),
        value: b("x"),
        ignore_lease: true,
        ..PutRequest::default()
    })
    .unwrap();
    let kv = h.get("k").unwrap();
    assert_eq!((kv.value, kv.lease), (b("x"), lease));
}

#[test]
fn put_errors_are_etcds_and_change_nothing() {
    let mut h = Harness::default();
    let cases = [
        (
            PutRequest {
                key: Bytes::new(),
                ..PutRequest::default()
            },
            KvError::EmptyKey,
            "etcdserver: key is not provided",
        ),
        (
            PutRequest {
                key: b("k"),
                value: b("v"),
                ignore_value: true,
                ..PutRequest::default()
            },
            KvError::ValueProvided,
            "etcdserver: value is provided",
        ),
        (
            PutRequest {
                key: b("k"),
                lease: 5,
                ignore_lease: true,
                ..PutRequest::default()
            },
            KvError::LeaseProvided,
            "etcdserver: lease is provided",
        ),
        (
            PutRequest {
                key: b("missing"),
                ignore_value: true,
                ..PutRequest::default()
            },
            KvError::KeyNotFound,
            "etcdserver: key not found",
        ),
        (
            PutRequest {
                key: b("k"),
                lease: 42,
                ..PutRequest::default()
            },
            KvError::LeaseNotFound,
            "etcdserver: requested lease not found",
        ),
    ];
    for (request, error, message) in cases {
        // The stateless ones are caught before proposing too.
        let stateless = !matches!(error, KvError::KeyNotFound | KvError::LeaseNotFound);
        let checked = Command::Put(request.clone()).check(h.machine.config());
        assert_eq!(checked.is_err(), stateless, "{error:?}");
        assert_eq!(h.put_request(request), Err(error.clone()));
        assert_eq!(error.to_string(), message);
    }
    assert_eq!(h.machine.revision(), 1);
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: b(key),
        range_end: b(range_end),
        ..RangeRequest::default()
    }
}

#[test]
fn ranges_follow_etcds_key_conventions() {
    let mut h = Harness::default();
    for key in ["a", "ab", "abc", "b", "c"] {
        h.put(key, key);
    }
    assert_eq!(h.keys("ab", ""), ["ab"]);
    assert_eq!(h.keys("a", "b"), ["a", "ab", "abc"]);
    assert_eq!(
        h.keys("ab", std::str::from_utf8(&prefix_end(b"ab")).unwrap()),
        ["ab", "abc"]
    );
    assert_eq!(h.keys("b", "\0"), ["b", "c"]);
    assert_eq!(h.keys("\0", "\0"), ["a", "ab", "abc", "b", "c"]);
    // A range that ends before it starts is empty, not a panic.
    assert!(h.keys("c", "a").is_empty());
    assert_eq!(h.keys("zz", ""), Vec::<String>::new());
    assert_eq!(h.range(range("", "")), Err(KvError::EmptyKey));
}

#[test]
fn limit_count_and_more() {
    let mut h = Harness::default();
    for key in ["a", "b", "c", "d"] {
        h.put(key, "v");
    }
    let response = h
        .range(RangeRequest {
            limit: 2,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(response.kvs.len(), 2);
    assert!(response.more);
    assert_eq!(response.count, 4);
    assert_eq!(response.header.revision, 5);
    let response = h
        .range(RangeRequest {
            limit: 4,
            ..range("a", "\0")
        })
        .unwrap();
    assert!(!response.more);
    let response = h
        .range(RangeRequest {
            count_only: true,
            ..range("b", "\0")
        })
        .unwrap();
    assert_eq!((response.count, response.kvs.len()), (3, 0));
    let response = h
        .range(RangeRequest {
            keys_only: true,
            ..range("a", "")
        })
        .unwrap();
    assert_eq!(response.kvs[0].value, Bytes::new());
}

#[test]
fn sorting_by_every_target() {
    let mut h = Harness::default();
    h.put("a", "3");
    h.put("b", "1");
    h.put("c", "2");
    h.put("b", "1'");
    let sorted = |h: &Harness, order, target| -> Vec<String> {
        h.range(RangeRequest {
            sort_order: order,
            sort_target: target,
            ..range("a", "\0")
        })
        .unwrap()
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
    };
    assert_eq!(
        sorted(&h, SortOrder::Descend, SortTarget::Key),
        ["c", "b", "a"]
    );
    assert_eq!(
        sorted(&h, SortOrder::Ascend, SortTarget::Value),
        ["b", "c", "a"]
    );
    // A target other than the key sorts ascending by default.
    assert_eq!(
        sorted(&h, SortOrder::None, SortTarget::Mod),
        ["a", "c", "b"]
    );
    assert_eq!(
        sorted(&h, SortOrder::Descend, SortTarget::Create),
        ["c", "b", "a"]
    );
    assert_eq!(
        sorted(&h, SortOrder::Descend, SortTarget::Version),
        ["b", "a", "c"]
    );
    // Limit applies after sorting.
    let top = h
        .range(RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            limit: 1,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (top.kvs[0].key.clone(), top.more, top.count),
        (b("b"), true, 3)
    );
}

#[test]
fn revision_filters_prune_after_counting() {
    let mut h = Harness::default();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("c", "1"); // 4
    h.put("a", "2"); // 5
    let filtered = |request: RangeRequest| {
        let response = h.range(request).unwrap();
        let keys: Vec<_> = response.kvs.iter().map(|kv| kv.key.clone()).collect();
        (keys, response.count)
    };
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 4,
            ..range("a", "\0")
        }),
        (vec![b("a"), b("c")], 3)
    );
    assert_eq!(
        filtered(RangeRequest {
            max_mod_revision: 3,
            ..range("a", "\0")
        }),
        (vec![b("b")], 3)
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 3,
            max_create_revision: 3,
            ..range("a", "\0")
        }),
        (vec![b("b")], 3)
    );
}

#[test]
fn reads_at_past_revisions_and_their_errors() {
    let mut h = Harness::default();
    h.put("k", "1"); // 2
    h.put("k", "2"); // 3
    h.delete("k", ""); // 4
    let at = |h: &Harness, revision| {
        h.range(RangeRequest {
            revision,
            ..range("k", "")
        })
        .map(|r| r.kvs.first().map(|kv| kv.value.clone()))
    };
    assert_eq!(at(&h, 1), Ok(None));
    assert_eq!(at(&h, 2), Ok(Some(b("1"))));
    assert_eq!(at(&h, 3), Ok(Some(b("2"))));
    assert_eq!(at(&h, 4), Ok(None));
    let future = at(&h, 5).unwrap_err();
    assert_eq!(future, KvError::FutureRevision);
    assert_eq!(
        future.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    h.compact(3).unwrap();
    let compacted = at(&h, 2).unwrap_err();
    assert_eq!(
        compacted,
        KvError::Compacted {
            compact_revision: 3
        }
    );
    assert_eq!(
        compacted.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(at(&h, 3), Ok(Some(b("2"))));
    // The header always carries the newest revision.
    let response = h
        .range(RangeRequest {
            revision: 3,
            ..range("k", "")
        })
        .unwrap();
    assert_eq!(response.header.revision, 4);
}

#[test]
fn delete_range_counts_returns_previous_values_and_bumps_once() {
    let mut h = Harness::default();
    for key in ["a", "b", "c"] {
        h.put(key, key);
    }
    let deleted = h.delete("a", "c");
    assert_eq!(deleted.deleted, 2);
    assert_eq!(
        deleted
            .prev_kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        [b("a"), b("b")]
    );
    assert_eq!(deleted.header.revision, 5);
    // Deleting nothing writes nothing.
    let nothing = h.delete("a", "c");
    assert_eq!((nothing.deleted, nothing.header.revision), (0, 5));
    assert_eq!(
        h.apply(Command::DeleteRange(DeleteRangeRequest::default())),
        Err(KvError::EmptyKey)
    );
}

#[test]
fn txn_compares_every_target_with_every_result() {
    let mut h = Harness::default();
    let lease = h.grant(9, 60).unwrap().id;
    h.put("k", "m");
    h.put_request(PutRequest {
        key: b("k"),
        value: b("m"),
        lease,
        ..PutRequest::default()
    })
    .unwrap();
    // k: create 2, mod 3, version 2, value "m", lease 9.
    let holds = |h: &mut Harness, compare: Compare| {
        h.txn(TxnRequest {
            compare: vec![compare],
            ..TxnRequest::default()
        })
        .unwrap()
        .succeeded
    };
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (Version(2), Equal, true),
        (Version(1), Greater, true),
        (Version(3), Less, true),
        (Version(2), NotEqual, false),
        (Create(2), Equal, true),
        (Mod(3), Equal, true),
        (Mod(2), Less, false),
        (Value(b("m")), Equal, true),
        (Value(b("l")), Greater, true),
        (Value(b("n")), Less, true),
        (Lease(lease), Equal, true),
        (Lease(0), NotEqual, true),
    ];
    for (target, result, expected) in cases {
        assert_eq!(
            holds(&mut h, compare("k", result, target.clone())),
            expected,
            "{target:?} {result:?}"
        );
    }
    // A missing key compares as zero, except on its value.
    assert!(holds(&mut h, compare("missing", Equal, Version(0))));
    assert!(holds(&mut h, compare("missing", Equal, Create(0))));
    assert!(!holds(
        &mut h,
        compare("missing", Equal, Value(Bytes::new()))
    ));
    assert!(!holds(&mut h, compare("missing", NotEqual, Value(b("x")))));
    // Read-only txns never bump the revision.
    assert_eq!(h.machine.revision(), 3);
}

#[test]
fn a_compare_over_a_range_needs_every_key_to_match() {
    let mut h = Harness::default();
    h.put("a1", "x");
    h.put("a2", "x");
    let over_range = |h: &mut Harness, value: &str| {
        h.txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Value(b(value)),
                key: b("a"),
                range_end: prefix_end(b"a"),
            }],
            ..TxnRequest::default()
        })
        .unwrap()
        .succeeded
    };
    assert!(over_range(&mut h, "x"));
    h.put("a3", "y");
    assert!(!over_range(&mut h, "x"));
}

#[test]
fn a_write_txn_takes_one_revision_and_reads_its_own_writes() {
    let mut h = Harness::default();
    h.put("counter", "0");
    let response = h
        .txn(TxnRequest {
            compare: vec![compare(
                "counter",
                CompareResult::Equal,
                CompareTarget::Value(b("0")),
            )],
            success: vec![
                put_op("counter", "1"),
                put_op("other", "x"),
                range_op("counter"),
            ],
            failure: vec![range_op("counter")],
        })
        .unwrap();
    assert!(response.succeeded);
    assert_eq!(response.header.revision, 3);
    let ResponseOp::Range(read) = &response.responses[2] else {
        panic!("{response:?}")
    };
    assert_eq!(read.kvs[0].value, b("1"));
    assert_eq!(read.header.revision, 3);
    assert_eq!(h.get("counter").unwrap().mod_revision, 3);
    assert_eq!(h.get("other").unwrap().mod_revision, 3);
    // The failure branch runs when a compare fails.
    let response = h
        .txn(TxnRequest {
            compare: vec![compare(
                "counter",
                CompareResult::Equal,
                CompareTarget::Value(b("0")),
            )],
            success: vec![put_op("counter", "2")],
            failure: vec![range_op("counter")],
        })
        .unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.header.revision, 3);
}

#[test]
fn nested_txns_choose_their_branch_on_the_state_before_the_write() {
    let mut h = Harness::default();
    h.put("a", "1");
    let inner = TxnRequest {
        compare: vec![compare(
            "b",
            CompareResult::Equal,
            CompareTarget::Version(0),
        )],
        success: vec![put_op("c", "b-was-missing")],
        failure: vec![put_op("c", "b-existed")],
    };
    let response = h
        .txn(TxnRequest {
            compare: vec![],
            success: vec![put_op("b", "new"), RequestOp::Txn(inner)],
            failure: vec![],
        })
        .unwrap();
    let ResponseOp::Txn(nested) = &response.responses[1] else {
        panic!("{response:?}")
    };
    assert!(nested.succeeded);
    assert_eq!(nested.header.revision, 3);
    assert_eq!(h.get("c").unwrap().value, b("b-was-missing"));
}

#[test]
fn duplicate_keys_in_a_txn_are_refused() {
    let mut h = Harness::default();
    let refused = |h: &mut Harness, success: Vec<RequestOp>| {
        h.txn(TxnRequest {
            success,
            ..TxnRequest::default()
        })
    };
    let duplicate = Err(KvError::DuplicateKey);
    assert_eq!(
        refused(&mut h, vec![put_op("a", "1"), put_op("a", "2")]),
        duplicate
    );
    assert_eq!(
        refused(&mut h, vec![delete_op("a", "c"), put_op("b", "1")]),
        duplicate
    );
    assert_eq!(
        refused(&mut h, vec![put_op("b", "1"), delete_op("a", "\0")]),
        duplicate
    );
    let nested = |op: RequestOp| {
        RequestOp::Txn(TxnRequest {
            success: vec![op],
            ..TxnRequest::default()
        })
    };
    assert_eq!(
        refused(&mut h, vec![put_op("a", "1"), nested(put_op("a", "2"))]),
        duplicate
    );
    assert_eq!(
        refused(&mut h, vec![delete_op("a", ""), nested(put_op("a", "2"))]),
        duplicate
    );
    assert_eq!(
        refused(&mut h, vec![nested(put_op("a", "2")), delete_op("a", "")]),
        duplicate
    );
    assert_eq!(
        KvError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    // Allowed: the two branches of one txn exclude each other, deletes may
    // overlap each other, and the top-level branches are separate.
    let branches = RequestOp::Txn(TxnRequest {
        success: vec![put_op("a", "then")],
        failure: vec![put_op("a", "else")],
        ..TxnRequest::default()
    });
    assert!(refused(&mut h, vec![branches]).is_ok());
    assert!(refused(&mut h, vec![delete_op("a", "c"), delete_op("b", "d")]).is_ok());
    assert!(h
        .txn(TxnRequest {
            success: vec![put_op("x", "1")],
            failure: vec![put_op("x", "2")],
            ..TxnRequest::default()
        })
        .is_ok());
}

#[test]
fn too_many_ops_per_level_and_in_nested_levels() {
    let mut h = Harness::default();
    let ops = |n: usize| {
        (0..n)
            .map(|i| put_op(&format!("k{i}"), "v"))
            .collect::<Vec<_>>()
    };
    let too_many = h.txn(TxnRequest {
        success: ops(129),
        ..TxnRequest::default()
    });
    assert_eq!(too_many, Err(KvError::TooManyOps));
    assert_eq!(
        KvError::TooManyOps.to_string(),
        "etcdserver: too many operations in txn request"
    );
    assert!(h
        .txn(TxnRequest {
            success: ops(128),
            ..TxnRequest::default()
        })
        .is_ok());
    // A nested level gets what its parent leaves: 100 + 29 > 128.
    let mut outer = ops(99);
    outer.push(RequestOp::Txn(TxnRequest {
        success: (0..29).map(|i| put_op(&format!("n{i}"), "v")).collect(),
        ..TxnRequest::default()
    }));
    assert_eq!(
        h.txn(TxnRequest {
            success: outer,
            ..TxnRequest::default()
        }),
        Err(KvError::TooManyOps)
    );
    assert_eq!(
        h.txn(TxnRequest {
            compare: vec![compare("", CompareResult::Equal, CompareTarget::Version(0))],
            ..TxnRequest::default()
        }),
        Err(KvError::EmptyKey)
    );
}

#[test]
fn a_failing_txn_changes_nothing() {
    let mut h = Harness::default();
    let before = h.machine.clone();
    let response = h.txn(TxnRequest {
        success: vec![
            put_op("a", "1"),
            RequestOp::Put(PutRequest {
                key: b("b"),
                lease: 77,
                ..PutRequest::default()
            }),
        ],
        ..TxnRequest::default()
    });
    assert_eq!(response, Err(KvError::LeaseNotFound));
    let response = h.txn(TxnRequest {
        success: vec![
            put_op("a", "1"),
            RequestOp::Range(RangeRequest {
                key: b("a"),
                revision: 50,
                ..RangeRequest::default()
            }),
        ],
        ..TxnRequest::default()
    });
    assert_eq!(response, Err(KvError::FutureRevision));
    assert_eq!(h.machine.revision(), before.revision());
    assert_eq!(h.get("a"), None);
}

#[test]
fn read_only_txns_are_served_as_queries() {
    let mut h = Harness::default();
    h.put("a", "1");
    let read = TxnRequest {
        compare: vec![compare(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(b("1")),
        )],
        success: vec![range_op("a")],
        failure: vec![],
    };
    assert!(read.is_read_only());
    let Ok(QueryResponse::Txn(response)) = h.machine.read(&Query::Txn(read)) else {
        panic!()
    };
    assert!(response.succeeded);
    assert_eq!(response.header.revision, 2);
    let write = TxnRequest {
        failure: vec![put_op("a", "2")],
        ..TxnRequest::default()
    };
    assert!(!write.is_read_only());
    assert_eq!(
        h.machine.read(&Query::Txn(write)),
        Err(KvError::TxnNotReadOnly)
    );
}

#[test]
fn compaction_errors_and_history() {
    let mut h = Harness::default();
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.put("b", "1"); // 4
    assert_eq!(h.compact(5), Err(KvError::FutureRevision));
    assert_eq!(
        h.compact(0),
        Err(KvError::Compacted {
            compact_revision: 0
        })
    );
    let response = h.compact(3).unwrap();
    assert_eq!(response.header.revision, 4);
    assert_eq!(h.machine.compact_revision(), 3);
    assert_eq!(
        h.compact(3),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
    assert_eq!(h.compact(4).unwrap().header.revision, 4);
    // Compaction does not change what the newest revision reads.
    assert_eq!(h.keys("a", "\0"), ["a", "b"]);
}

#[test]
fn events_carry_every_change_with_its_previous_value() {
    let mut h = Harness::default();
    h.put("a", "1"); // 2
    h.txn(TxnRequest {
        success: vec![put_op("a", "2"), put_op("b", "1")],
        ..TxnRequest::default()
    })
    .unwrap(); // 3
    h.delete("a", ""); // 4
    let batch = h.machine.events(2, &KeyRange::all(), 100).unwrap();
    assert_eq!(batch.next_revision, 5);
    let summary: Vec<_> = batch
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.kv.key.clone(),
                e.kv.mod_revision,
                e.prev_kv.as_ref().map(|kv| kv.value.clone()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, b("a"), 2, None),
            (EventKind::Put, b("a"), 3, Some(b("1"))),
            (EventKind::Put, b("b"), 3, None),
            (EventKind::Delete, b("a"), 4, Some(b("2"))),
        ]
    );
    let only_b = h.machine.events(1, &KeyRange::single("b"), 100).unwrap();
    assert_eq!(only_b.events.len(), 1);
    // Batches end at a revision boundary.
    let first = h.machine.events(2, &KeyRange::all(), 2).unwrap();
    assert_eq!((first.events.len(), first.next_revision), (3, 4));
    let rest = h
        .machine
        .events(first.next_revision, &KeyRange::all(), 2)
        .unwrap();
    assert_eq!((rest.events.len(), rest.next_revision), (1, 5));
    // After compaction the history before it is gone, but events at the
    // compacted revision keep their previous values.
    h.compact(3).unwrap();
    assert_eq!(
        h.machine.events(2, &KeyRange::all(), 100),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
    let kept = h.machine.events(3, &KeyRange::all(), 100).unwrap();
    assert_eq!(kept.events.len(), 3);
    assert_eq!(kept.events[0].prev_kv.as_ref().unwrap().value, b("1"));
}

#[test]
fn release_cursor_is_asked_every_n_commands() {
    let mut h = Harness::new(KvConfig {
        release_cursor_every_entries: 3,
        ..KvConfig::default()
    });
    let released: Vec<bool> = (0..7)
        .map(|i| {
            let meta = h.meta();
            h.machine
                .apply_command(
                    &meta,
                    Command::Put(PutRequest {
                        key: b(&format!("k{i}")),
                        ..PutRequest::default()
                    }),
                )
                .release_cursor
        })
        .collect();
    assert_eq!(released, [false, false, true, false, false, true, false]);
}

#[test]
fn auto_compaction_keeps_the_configured_history() {
    let mut h = Harness::new(KvConfig {
        auto_compact_retention_revisions: 10,
        ..KvConfig::default()
    });
    for i in 0..18 {
        h.put("k", &i.to_string());
    }
    assert_eq!(
        (h.machine.revision(), h.machine.compact_revision()),
        (19, 0)
    );
    h.put("k", "x");
    assert_eq!(
        (h.machine.revision(), h.machine.compact_revision()),
        (20, 10)
    );
    assert!(h.machine.events(10, &KeyRange::all(), 100).is_ok());
    assert!(h.machine.events(9, &KeyRange::all(), 100).is_err());
}

#[test]
fn command_check_refuses_what_etcd_refuses_before_proposing() {
    let config = KvConfig::default();
    assert_eq!(
        Command::LeaseGrant(LeaseGrantRequest {
            ttl: LEASE_TTL_MAX_S + 1,
            id: 0
        })
        .check(&config),
        Err(KvError::LeaseTtlTooLarge)
    );
    assert_eq!(
        Command::Txn(TxnRequest {
            success: vec![put_op("a", "1"), put_op("a", "1")],
            ..TxnRequest::default()
        })
        .check(&config),
        Err(KvError::DuplicateKey)
    );
}

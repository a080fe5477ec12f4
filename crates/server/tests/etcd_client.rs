//! chorus serve through the `etcd-client` crate: every RPC of etcd's v3
//! API that chorus implements (KV, Watch, Lease, Cluster, Maintenance),
//! with the answers and errors an etcd user expects, on one member and on
//! in-process three-member clusters; and chorus's own Admin service
//! through its generated client.

mod common;

use std::time::Duration;

use common::{assert_status, cluster, eventually, single, single_with, Member};
use etcd_client::{
    AlarmAction, AlarmType, Client, CompactionOptions, Compare, CompareOp, DeleteOptions,
    EventType, GetOptions, KeyValue, LeaseGrantOptions, LeaseTimeToLiveOptions, MemberAddOptions,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};
use tonic::Code;

const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";

/// How long a stream may take to deliver what the test expects.
const STREAM_WAIT: Duration = Duration::from_secs(10);

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter()
        .map(|kv| kv.key_str().expect("utf-8 key"))
        .collect()
}

fn values(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter()
        .map(|kv| kv.value_str().expect("utf-8 value"))
        .collect()
}

async fn revision(client: &mut Client) -> i64 {
    client
        .get("any", Some(GetOptions::new().with_count_only()))
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

async fn put_rev(client: &mut Client, key: &str, value: &str) -> i64 {
    client
        .put(key, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
}

async fn value_of(client: &mut Client, key: &str, options: Option<GetOptions>) -> Option<String> {
    let response = client.get(key, options).await.expect("get");
    response
        .kvs()
        .first()
        .map(|kv| kv.value_str().expect("utf-8").to_string())
}

async fn next_message(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(STREAM_WAIT, stream.message())
        .await
        .expect("a watch response in time")
        .expect("the watch stream works")
        .expect("the watch stream is open")
}

/// The created response of a new watcher: its id.
async fn created(stream: &mut WatchStream) -> i64 {
    let response = next_message(stream).await;
    assert!(
        response.created(),
        "expected a created response: {response:?}"
    );
    assert!(!response.canceled(), "{response:?}");
    response.watch_id()
}

/// Reads responses until `count` events arrived for `watch_id` (any
/// other kind of response fails the test).
async fn events(stream: &mut WatchStream, watch_id: i64, count: usize) -> Vec<etcd_client::Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let response = next_message(stream).await;
        assert_eq!(response.watch_id(), watch_id, "{response:?}");
        assert!(!response.canceled() && !response.created(), "{response:?}");
        assert!(!response.events().is_empty(), "unexpected {response:?}");
        events.extend(response.events().iter().cloned());
    }
    assert_eq!(events.len(), count, "more events than expected: {events:?}");
    events
}

fn event_summary(event: &etcd_client::Event) -> (EventType, String, String, i64) {
    let kv = event.kv().expect("an event has a kv");
    (
        event.event_type(),
        kv.key_str().expect("utf-8").to_string(),
        kv.value_str().expect("utf-8").to_string(),
        kv.mod_revision(),
    )
}

// ---------------------------------------------------------------- KV: put

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_stores_values_and_returns_the_previous_one_on_request() {
    let (member, mut client) = single().await;
    assert_eq!(
        revision(&mut client).await,
        1,
        "a new store is at revision 1"
    );

    let first = client.put("k", "v1", None).await.unwrap();
    let header = first.header().unwrap();
    assert_eq!(header.revision(), 2);
    assert_eq!(header.member_id(), member.id());
    assert_ne!(header.cluster_id(), 0);
    assert!(header.raft_term() >= 1);
    assert!(first.prev_key().is_none());

    let second = client
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(second.header().unwrap().revision(), 3);
    let prev = second.prev_key().expect("prev_kv asked for");
    assert_eq!(
        (prev.key(), prev.value(), prev.version()),
        (&b"k"[..], &b"v1"[..], 1)
    );
    assert_eq!((prev.create_revision(), prev.mod_revision()), (2, 2));

    // prev_kv of a new key is absent.
    let fresh = client
        .put("new", "x", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert!(fresh.prev_key().is_none());
    // Without prev_kv nothing is returned.
    let third = client.put("k", "v3", None).await.unwrap();
    assert!(third.prev_key().is_none());

    let got = client.get("k", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(kv.value(), b"v3");
    assert_eq!(
        (kv.version(), kv.create_revision(), kv.mod_revision()),
        (3, 2, 5)
    );
    assert_eq!(got.header().unwrap().revision(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_lease_ignore_value_and_ignore_lease() {
    let (_member, mut client) = single().await;
    let lease = client.lease_grant(60, None).await.unwrap().id();

    client
        .put("k", "v1", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let kv = client.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease()), (&b"v1"[..], lease));

    // ignore_value: the value stays, the lease changes (here: detached).
    client
        .put("k", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap();
    let kv = client.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease(), kv.version()), (&b"v1"[..], 0, 2));

    // ignore_lease: the lease stays, the value changes.
    client
        .put("k", "v2", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    client
        .put("k", "v3", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    let kv = client.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease()), (&b"v3"[..], lease));

    // Both: a touch that keeps value and lease but bumps the version.
    client
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_ignore_lease()),
        )
        .await
        .unwrap();
    let kv = client.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.value(), kv.lease(), kv.version()),
        (&b"v3"[..], lease, 5)
    );

    // The errors.
    let revision_before = revision(&mut client).await;
    assert_status(
        client
            .put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        client
            .put("missing", "v", Some(PutOptions::new().with_ignore_lease()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        client
            .put("k", "v", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        client
            .put(
                "k",
                "v",
                Some(PutOptions::new().with_ignore_lease().with_lease(lease)),
            )
            .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_status(
        client
            .put("k", "v", Some(PutOptions::new().with_lease(0x7777)))
            .await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    assert_eq!(
        revision(&mut client).await,
        revision_before,
        "refused puts change nothing"
    );
    assert!(value_of(&mut client, "missing", None).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_keys_are_refused() {
    let (_member, mut client) = single().await;
    assert_status(
        client.put("", "v", None).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        client.get("", None).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        client.delete("", None).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        client
            .txn(Txn::new().and_then([TxnOp::put("", "v", None)]))
            .await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        client
            .txn(
                Txn::new()
                    .when([Compare::version("", CompareOp::Equal, 0)])
                    .and_then([TxnOp::put("k", "v", None)]),
            )
            .await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_eq!(revision(&mut client).await, 1);
}

// ---------------------------------------------------------------- KV: get

/// Keys for the range tests, written in this order (revisions 2..=9).
const FIXTURE: [(&str, &str); 8] = [
    ("a", "3"),
    ("b", "1"),
    ("c", "2"),
    ("d", "0"),
    ("foo", "7"),
    ("foo/1", "6"),
    ("foo/2", "5"),
    ("fop", "4"),
];

async fn fixture(client: &mut Client) {
    for (key, value) in FIXTURE {
        client.put(key, value, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_single_keys_ranges_prefixes_and_from_key() {
    let (_member, mut client) = single().await;
    fixture(&mut client).await;

    let one = client.get("b", None).await.unwrap();
    assert_eq!(
        (keys(one.kvs()), one.count(), one.more()),
        (vec!["b"], 1, false)
    );
    let none = client.get("bb", None).await.unwrap();
    assert_eq!((none.kvs().len(), none.count()), (0, 0));

    let range = client
        .get("b", Some(GetOptions::new().with_range("d")))
        .await
        .unwrap();
    assert_eq!(keys(range.kvs()), ["b", "c"]);
    assert_eq!(values(range.kvs()), ["1", "2"]);

    let prefix = client
        .get("foo", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(prefix.kvs()), ["foo", "foo/1", "foo/2"]);

    let from = client
        .get("d", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys(from.kvs()), ["d", "foo", "foo/1", "foo/2", "fop"]);

    let all = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(all.count(), 8);
    assert_eq!(
        keys(all.kvs()),
        FIXTURE.iter().map(|(k, _)| *k).collect::<Vec<_>>()
    );
    assert_eq!(all.header().unwrap().revision(), 9);

    let serializable = client
        .get(
            "foo",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .unwrap();
    assert_eq!(keys(serializable.kvs()), ["foo", "foo/1", "foo/2"]);
    assert_eq!(serializable.header().unwrap().revision(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_limit_keys_only_count_only_and_revision_filters() {
    let (_member, mut client) = single().await;
    fixture(&mut client).await;
    let all = || GetOptions::new().with_all_keys();

    let limited = client.get("", Some(all().with_limit(3))).await.unwrap();
    assert_eq!(keys(limited.kvs()), ["a", "b", "c"]);
    assert!(limited.more());
    assert_eq!(limited.count(), 8, "count ignores the limit");
    let exact = client.get("", Some(all().with_limit(8))).await.unwrap();
    assert_eq!((exact.kvs().len(), exact.more()), (8, false));

    let keys_only = client
        .get(
            "foo",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap();
    assert_eq!(keys(keys_only.kvs()), ["foo", "foo/1", "foo/2"]);
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()));
    assert!(keys_only.kvs().iter().all(|kv| kv.mod_revision() > 0));

    let count_only = client.get("", Some(all().with_count_only())).await.unwrap();
    assert_eq!((count_only.kvs().len(), count_only.count()), (0, 8));

    // "c" is revision 4, "foo" revision 6.
    let modded = client
        .get(
            "",
            Some(all().with_min_mod_revision(4).with_max_mod_revision(6)),
        )
        .await
        .unwrap();
    assert_eq!(keys(modded.kvs()), ["c", "d", "foo"]);
    let created = client
        .get("", Some(all().with_min_create_revision(8)))
        .await
        .unwrap();
    assert_eq!(keys(created.kvs()), ["foo/2", "fop"]);
    let created = client
        .get("", Some(all().with_max_create_revision(3)))
        .await
        .unwrap();
    assert_eq!(keys(created.kvs()), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sorts_by_every_target_in_both_orders() {
    let (_member, mut client) = single().await;
    fixture(&mut client).await;
    // Versions: "d" three times, "b" twice; they are now the newest.
    client.put("d", "0", None).await.unwrap();
    client.put("d", "0", None).await.unwrap();
    client.put("b", "1", None).await.unwrap();
    let sorted = |target, order| Some(GetOptions::new().with_all_keys().with_sort(target, order));

    let response = client
        .get("", sorted(SortTarget::Key, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(
        keys(response.kvs()),
        ["fop", "foo/2", "foo/1", "foo", "d", "c", "b", "a"]
    );
    let response = client
        .get("", sorted(SortTarget::Value, SortOrder::Ascend))
        .await
        .unwrap();
    assert_eq!(
        values(response.kvs()),
        ["0", "1", "2", "3", "4", "5", "6", "7"]
    );
    // etcd sorts ascending when a target other than the key has no order.
    let response = client
        .get("", sorted(SortTarget::Value, SortOrder::None))
        .await
        .unwrap();
    assert_eq!(
        values(response.kvs()),
        ["0", "1", "2", "3", "4", "5", "6", "7"]
    );
    let response = client
        .get("", sorted(SortTarget::Create, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(
        keys(response.kvs()),
        ["fop", "foo/2", "foo/1", "foo", "d", "c", "b", "a"]
    );
    let response = client
        .get("", sorted(SortTarget::Mod, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(keys(response.kvs())[..3], ["b", "d", "fop"]);
    let response = client
        .get("", sorted(SortTarget::Version, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(keys(response.kvs())[..2], ["d", "b"]);
    assert_eq!(
        response
            .kvs()
            .iter()
            .map(|kv| kv.version())
            .collect::<Vec<_>>(),
        [3, 2, 1, 1, 1, 1, 1, 1]
    );

    // Sorting applies before the limit: the newest key, and more.
    let newest = client
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(1),
            ),
        )
        .await
        .unwrap();
    assert_eq!((keys(newest.kvs()), newest.more()), (vec!["b"], true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_at_past_revisions_and_compaction() {
    let (_member, mut client) = single().await;
    let r1 = put_rev(&mut client, "k", "v1").await;
    let r2 = put_rev(&mut client, "k", "v2").await;
    let r3 = client
        .delete("k", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let r4 = put_rev(&mut client, "k", "v4").await;
    assert_eq!((r1 + 1, r2 + 1, r3 + 1), (r2, r3, r4));

    let at = |revision| Some(GetOptions::new().with_revision(revision));
    assert_eq!(
        value_of(&mut client, "k", at(r1)).await.as_deref(),
        Some("v1")
    );
    assert_eq!(
        value_of(&mut client, "k", at(r2)).await.as_deref(),
        Some("v2")
    );
    assert_eq!(value_of(&mut client, "k", at(r3)).await, None);
    assert_eq!(
        value_of(&mut client, "k", at(r4)).await.as_deref(),
        Some("v4")
    );
    // The header carries the store's revision, not the one read at.
    let old = client.get("k", at(r1)).await.unwrap();
    assert_eq!(old.header().unwrap().revision(), r4);
    assert_status(
        client.get("k", at(r4 + 1)).await,
        Code::OutOfRange,
        FUTURE_REVISION,
    );

    let compacted = client
        .compact(r2, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(compacted.header().unwrap().revision(), r4);
    assert_status(client.get("k", at(r1)).await, Code::OutOfRange, COMPACTED);
    // The compaction revision itself is still readable.
    assert_eq!(
        value_of(&mut client, "k", at(r2)).await.as_deref(),
        Some("v2")
    );
    assert_eq!(
        value_of(&mut client, "k", None).await.as_deref(),
        Some("v4")
    );

    assert_status(client.compact(r2, None).await, Code::OutOfRange, COMPACTED);
    assert_status(client.compact(r1, None).await, Code::OutOfRange, COMPACTED);
    assert_status(
        client.compact(r4 + 10, None).await,
        Code::OutOfRange,
        FUTURE_REVISION,
    );
    client.compact(r4, None).await.unwrap();
    assert_status(client.get("k", at(r3)).await, Code::OutOfRange, COMPACTED);
    // Compaction is not a write: the revision did not move.
    assert_eq!(revision(&mut client).await, r4);
}

// ------------------------------------------------------------- KV: delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_keys_ranges_and_prefixes_with_prev_kv() {
    let (_member, mut client) = single().await;
    fixture(&mut client).await;

    let one = client
        .delete("a", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(one.deleted(), 1);
    assert_eq!(keys(one.prev_kvs()), ["a"]);
    assert_eq!(values(one.prev_kvs()), ["3"]);
    let deleted_at = one.header().unwrap().revision();
    assert_eq!(deleted_at, 10);

    // Deleting nothing is no write: the revision stays.
    let nothing = client.delete("a", None).await.unwrap();
    assert_eq!(nothing.deleted(), 0);
    assert_eq!(nothing.header().unwrap().revision(), deleted_at);

    let range = client
        .delete("b", Some(DeleteOptions::new().with_range("d")))
        .await
        .unwrap();
    assert_eq!(range.deleted(), 2);
    assert!(range.prev_kvs().is_empty(), "prev_kv was not asked for");

    let prefix = client
        .delete(
            "foo",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(prefix.deleted(), 3);
    assert_eq!(keys(prefix.prev_kvs()), ["foo", "foo/1", "foo/2"]);
    // One delete, one revision, for all three keys.
    assert_eq!(prefix.header().unwrap().revision(), deleted_at + 2);

    let left = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(keys(left.kvs()), ["d", "fop"]);

    let from = client
        .delete("d", Some(DeleteOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(from.deleted(), 2);
    let count = client
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(count.count(), 0);
}

// ---------------------------------------------------------------- KV: txn

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_value_version_revisions_and_lease() {
    let (_member, mut client) = single().await;
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let created = put_rev(&mut client, "k", "v1").await;
    let modified = put_rev(&mut client, "k", "v2").await;
    client
        .put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    client.put("p/1", "a", None).await.unwrap();
    client.put("p/2", "b", None).await.unwrap();

    let holds = |compare: Compare| {
        let mut client = client.clone();
        async move {
            let response = client
                .txn(Txn::new().when([compare]).and_then([]).or_else([]))
                .await
                .unwrap();
            response.succeeded()
        }
    };
    let cases = [
        (Compare::value("k", CompareOp::Equal, "v2"), true),
        (Compare::value("k", CompareOp::Equal, "v1"), false),
        (Compare::value("k", CompareOp::NotEqual, "v1"), true),
        (Compare::value("k", CompareOp::Greater, "v1"), true),
        (Compare::value("k", CompareOp::Less, "v1"), false),
        (Compare::version("k", CompareOp::Equal, 2), true),
        (Compare::version("k", CompareOp::Greater, 2), false),
        (
            Compare::create_revision("k", CompareOp::Equal, created),
            true,
        ),
        (
            Compare::create_revision("k", CompareOp::Less, created),
            false,
        ),
        (Compare::mod_revision("k", CompareOp::Equal, modified), true),
        (
            Compare::mod_revision("k", CompareOp::Greater, created),
            true,
        ),
        (Compare::mod_revision("k", CompareOp::Less, modified), false),
        (Compare::lease("leased", CompareOp::Equal, lease), true),
        (Compare::lease("k", CompareOp::Equal, 0), true),
        (Compare::lease("leased", CompareOp::NotEqual, lease), false),
        // A missing key has version, revisions and lease 0 (the
        // create-if-absent idiom); a value compare on it fails.
        (Compare::version("missing", CompareOp::Equal, 0), true),
        (
            Compare::create_revision("missing", CompareOp::Equal, 0),
            true,
        ),
        (Compare::value("missing", CompareOp::Equal, ""), false),
        (Compare::value("missing", CompareOp::NotEqual, "x"), false),
        // Over a range, every key must satisfy the compare.
        (
            Compare::version("p/", CompareOp::Equal, 1).with_prefix(),
            true,
        ),
        (
            Compare::value("p/", CompareOp::Equal, "a").with_prefix(),
            false,
        ),
        (
            Compare::value("p/1", CompareOp::Equal, "a").with_range("p/2"),
            true,
        ),
    ];
    for (compare, expected) in cases {
        let shown = format!("{compare:?}");
        assert_eq!(holds(compare).await, expected, "{shown}");
    }

    // Several compares: all must hold.
    let both = client
        .txn(Txn::new().when([
            Compare::value("k", CompareOp::Equal, "v2"),
            Compare::version("k", CompareOp::Equal, 1),
        ]))
        .await
        .unwrap();
    assert!(!both.succeeded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_runs_the_branch_the_compares_choose() {
    let (_member, mut client) = single().await;
    put_rev(&mut client, "k", "v1").await;
    put_rev(&mut client, "gone", "x").await;

    // Success: every op runs at one new revision.
    let success = client
        .txn(
            Txn::new()
                .when([Compare::value("k", CompareOp::Equal, "v1")])
                .and_then([
                    TxnOp::put("k", "v2", Some(PutOptions::new().with_prev_key())),
                    TxnOp::put("other", "o", None),
                    TxnOp::delete("gone", Some(DeleteOptions::new().with_prev_key())),
                    TxnOp::get("k", None),
                ])
                .or_else([TxnOp::put("failed", "1", None)]),
        )
        .await
        .unwrap();
    assert!(success.succeeded());
    let at = success.header().unwrap().revision();
    assert_eq!(at, 4);
    let responses = success.op_responses();
    assert_eq!(responses.len(), 4);
    match &responses[0] {
        TxnOpResponse::Put(put) => {
            assert_eq!(put.prev_key().expect("prev_kv").value(), b"v1");
        }
        other => panic!("expected a put response, got {other:?}"),
    }
    match &responses[2] {
        TxnOpResponse::Delete(delete) => {
            assert_eq!(delete.deleted(), 1);
            assert_eq!(values(delete.prev_kvs()), ["x"]);
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    match &responses[3] {
        TxnOpResponse::Get(get) => {
            // A read in a txn sees the txn's earlier writes.
            assert_eq!(values(get.kvs()), ["v2"]);
            assert_eq!(get.kvs()[0].mod_revision(), at);
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    let other = client.get("other", None).await.unwrap();
    assert_eq!(other.kvs()[0].mod_revision(), at);
    assert!(value_of(&mut client, "failed", None).await.is_none());
    assert!(value_of(&mut client, "gone", None).await.is_none());

    // Failure: the else branch runs.
    let failure = client
        .txn(
            Txn::new()
                .when([Compare::value("k", CompareOp::Equal, "v1")])
                .and_then([TxnOp::put("k", "v3", None)])
                .or_else([TxnOp::put("failed", "1", None), TxnOp::get("k", None)]),
        )
        .await
        .unwrap();
    assert!(!failure.succeeded());
    assert_eq!(failure.header().unwrap().revision(), at + 1);
    match &failure.op_responses()[1] {
        TxnOpResponse::Get(get) => assert_eq!(values(get.kvs()), ["v2"]),
        other => panic!("expected a get response, got {other:?}"),
    }
    assert_eq!(
        value_of(&mut client, "k", None).await.as_deref(),
        Some("v2")
    );
    assert_eq!(
        value_of(&mut client, "failed", None).await.as_deref(),
        Some("1")
    );

    // A txn without compares succeeds.
    let plain = client
        .txn(Txn::new().and_then([TxnOp::put("plain", "p", None)]))
        .await
        .unwrap();
    assert!(plain.succeeded());

    // Nested: the outer txn succeeds, the inner one fails, so the inner
    // else branch runs.
    let nested = client
        .txn(
            Txn::new()
                .when([Compare::version("k", CompareOp::Greater, 0)])
                .and_then([
                    TxnOp::put("outer", "1", None),
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::value("k", CompareOp::Equal, "nope")])
                            .and_then([TxnOp::put("inner-then", "1", None)])
                            .or_else([
                                TxnOp::put("inner-else", "1", None),
                                TxnOp::get("outer", None),
                            ]),
                    ),
                ]),
        )
        .await
        .unwrap();
    assert!(nested.succeeded());
    let nested_at = nested.header().unwrap().revision();
    match &nested.op_responses()[1] {
        TxnOpResponse::Txn(inner) => {
            assert!(!inner.succeeded());
            match &inner.op_responses()[1] {
                TxnOpResponse::Get(get) => assert_eq!(values(get.kvs()), ["1"]),
                other => panic!("expected a get response, got {other:?}"),
            }
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    assert!(value_of(&mut client, "inner-then", None).await.is_none());
    let inner_else = client.get("inner-else", None).await.unwrap();
    assert_eq!(inner_else.kvs()[0].mod_revision(), nested_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_txn_reads_without_a_new_revision() {
    let (_member, mut client) = single().await;
    put_rev(&mut client, "a", "1").await;
    let at = put_rev(&mut client, "b", "2").await;

    let read = client
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "1")])
                .and_then([
                    TxnOp::get("a", None),
                    TxnOp::get(
                        "",
                        Some(GetOptions::new().with_all_keys().with_count_only()),
                    ),
                    TxnOp::txn(Txn::new().and_then([TxnOp::get("b", None)])),
                ])
                .or_else([TxnOp::get("b", None)]),
        )
        .await
        .unwrap();
    assert!(read.succeeded());
    assert_eq!(read.header().unwrap().revision(), at);
    let responses = read.op_responses();
    match (&responses[0], &responses[1], &responses[2]) {
        (TxnOpResponse::Get(a), TxnOpResponse::Get(count), TxnOpResponse::Txn(inner)) => {
            assert_eq!(values(a.kvs()), ["1"]);
            assert_eq!(count.count(), 2);
            match &inner.op_responses()[0] {
                TxnOpResponse::Get(b) => assert_eq!(values(b.kvs()), ["2"]),
                other => panic!("expected a get response, got {other:?}"),
            }
        }
        other => panic!("unexpected responses {other:?}"),
    }
    assert_eq!(revision(&mut client).await, at);

    // A read at a past revision inside a txn honours it, and its errors.
    let past = client
        .txn(Txn::new().and_then([TxnOp::get(
            "b",
            Some(GetOptions::new().with_revision(at - 1)),
        )]))
        .await
        .unwrap();
    match &past.op_responses()[0] {
        TxnOpResponse::Get(get) => assert!(get.kvs().is_empty()),
        other => panic!("expected a get response, got {other:?}"),
    }
    assert_status(
        client
            .txn(Txn::new().and_then([TxnOp::get(
                "b",
                Some(GetOptions::new().with_revision(at + 5)),
            )]))
            .await,
        Code::OutOfRange,
        FUTURE_REVISION,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_limits_and_duplicate_keys_are_refused() {
    let (_member, mut client) = single().await;
    let puts = |count: usize| {
        (0..count)
            .map(|i| TxnOp::put(format!("key-{i:03}"), "v", None))
            .collect::<Vec<_>>()
    };
    // etcd's --max-txn-ops default: 128 ops is fine, 129 is not.
    client
        .txn(Txn::new().and_then(puts(128)))
        .await
        .expect("128 ops");
    let before = revision(&mut client).await;
    assert_status(
        client.txn(Txn::new().and_then(puts(129))).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    assert_status(
        client.txn(Txn::new().and_then([]).or_else(puts(129))).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let compares: Vec<Compare> = (0..129)
        .map(|i| Compare::version(format!("key-{i:03}"), CompareOp::Greater, -1))
        .collect();
    assert_status(
        client.txn(Txn::new().when(compares)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );

    const DUPLICATE: &str = "etcdserver: duplicate key given in txn request";
    assert_status(
        client
            .txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await,
        Code::InvalidArgument,
        DUPLICATE,
    );
    assert_status(
        client
            .txn(Txn::new().and_then([
                TxnOp::put("d/1", "1", None),
                TxnOp::delete("d/", Some(DeleteOptions::new().with_prefix())),
            ]))
            .await,
        Code::InvalidArgument,
        DUPLICATE,
    );
    assert_status(
        client
            .txn(Txn::new().and_then([
                TxnOp::put("d", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("d", "2", None)])),
            ]))
            .await,
        Code::InvalidArgument,
        DUPLICATE,
    );
    assert_eq!(
        revision(&mut client).await,
        before,
        "refused txns write nothing"
    );

    // The same key in the two branches is fine (only one runs), and so is
    // reading a key that is written.
    client
        .txn(
            Txn::new()
                .when([Compare::version("d", CompareOp::Equal, 0)])
                .and_then([TxnOp::put("d", "then", None), TxnOp::get("d", None)])
                .or_else([TxnOp::put("d", "else", None)]),
        )
        .await
        .expect("one write per key per branch");
    assert_eq!(
        value_of(&mut client, "d", None).await.as_deref(),
        Some("then")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_the_server_keeps_serving() {
    let (_member, mut client) = single().await;
    // Above --max-request-bytes (1.5 MiB) but within gRPC's allowance
    // (1.5 MiB + 512 KiB): etcd's own refusal.
    let big = vec![b'x'; 1_700_000];
    assert_status(
        client.put("big", big.clone(), None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    assert_status(
        client
            .txn(Txn::new().and_then([TxnOp::put("big", big, None)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    // Beyond what gRPC decodes: a transport-level refusal.
    let huge = vec![b'x'; 2_300_000];
    let error = client
        .put("huge", huge, None)
        .await
        .expect_err("a 2.3 MB put must fail");
    if let etcd_client::Error::GRpcStatus(status) = &error {
        assert_ne!(status.code(), Code::Ok);
    }
    assert!(value_of(&mut client, "big", None).await.is_none());
    assert!(value_of(&mut client, "huge", None).await.is_none());

    // Just below the limit is accepted, and the server serves on.
    let fits = vec![b'y'; 1_500_000];
    client.put("fits", fits.clone(), None).await.unwrap();
    let got = client.get("fits", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), &fits[..]);
    client.put("small", "ok", None).await.unwrap();
    assert_eq!(
        value_of(&mut client, "small", None).await.as_deref(),
        Some("ok")
    );
}

// -------------------------------------------------------------- Watch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_a_key_sees_its_puts_and_deletes() {
    let (_member, mut client) = single().await;
    let mut stream = client.watch("k", None).await.unwrap();
    let id = created(&mut stream).await;

    let r1 = put_rev(&mut client, "k", "v1").await;
    put_rev(&mut client, "other", "x").await;
    put_rev(&mut client, "k2", "x").await;
    let r2 = put_rev(&mut client, "k", "v2").await;
    let r3 = client
        .delete("k", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    let got = events(&mut stream, id, 3).await;
    let summary: Vec<_> = got.iter().map(event_summary).collect();
    assert_eq!(
        summary,
        [
            (EventType::Put, "k".into(), "v1".into(), r1),
            (EventType::Put, "k".into(), "v2".into(), r2),
            (EventType::Delete, "k".into(), String::new(), r3),
        ]
    );
    let put = got[1].kv().unwrap();
    assert_eq!((put.version(), put.create_revision()), (2, r1));
    assert!(
        got.iter().all(|e| e.prev_kv().is_none()),
        "prev_kv not asked for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prefixes_ranges_and_from_key() {
    let (_member, mut client) = single().await;
    let mut stream = client
        .watch("foo", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let prefix_id = created(&mut stream).await;
    stream
        .watch("b", Some(WatchOptions::new().with_range("d")))
        .await
        .unwrap();
    let range_id = created(&mut stream).await;
    stream
        .watch("foo/", Some(WatchOptions::new().with_from_key()))
        .await
        .unwrap();
    let from_id = created(&mut stream).await;
    assert!(prefix_id != range_id && range_id != from_id && from_id != prefix_id);

    fixture(&mut client).await;
    // Each watcher's events, in order.
    let mut seen: [Vec<String>; 3] = Default::default();
    while seen.iter().map(Vec::len).sum::<usize>() < 8 {
        let response = next_message(&mut stream).await;
        let keys = response
            .events()
            .iter()
            .map(|e| e.kv().unwrap().key_str().unwrap().to_string());
        let watcher = [prefix_id, range_id, from_id]
            .iter()
            .position(|id| *id == response.watch_id())
            .unwrap_or_else(|| panic!("unexpected {response:?}"));
        seen[watcher].extend(keys);
    }
    assert_eq!(seen[0], ["foo", "foo/1", "foo/2"]);
    assert_eq!(seen[1], ["b", "c"]);
    assert_eq!(seen[2], ["foo/1", "foo/2", "fop"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_past_revision_replays_history_with_prev_kv() {
    let (_member, mut client) = single().await;
    let r1 = put_rev(&mut client, "k", "v1").await;
    let r2 = put_rev(&mut client, "k", "v2").await;
    let r3 = client
        .delete("k", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    put_rev(&mut client, "unrelated", "x").await;

    let mut stream = client
        .watch(
            "k",
            Some(WatchOptions::new().with_start_revision(r1).with_prev_key()),
        )
        .await
        .unwrap();
    let id = created(&mut stream).await;
    let r4 = put_rev(&mut client, "k", "v4").await;
    let got = events(&mut stream, id, 4).await;
    let summary: Vec<_> = got.iter().map(event_summary).collect();
    assert_eq!(
        summary,
        [
            (EventType::Put, "k".into(), "v1".into(), r1),
            (EventType::Put, "k".into(), "v2".into(), r2),
            (EventType::Delete, "k".into(), String::new(), r3),
            (EventType::Put, "k".into(), "v4".into(), r4),
        ]
    );
    let prev: Vec<Option<&str>> = got
        .iter()
        .map(|e| e.prev_kv().map(|kv| kv.value_str().unwrap()))
        .collect();
    assert_eq!(prev, [None, Some("v1"), Some("v2"), None]);

    // From a later start revision only the rest is replayed.
    let mut stream = client
        .watch("k", Some(WatchOptions::new().with_start_revision(r3)))
        .await
        .unwrap();
    let id = created(&mut stream).await;
    let got = events(&mut stream, id, 2).await;
    assert_eq!(
        got.iter().map(|e| e.event_type()).collect::<Vec<_>>(),
        [EventType::Delete, EventType::Put]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_drop_puts_or_deletes() {
    let (_member, mut client) = single().await;
    let mut stream = client
        .watch(
            "k",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
        )
        .await
        .unwrap();
    let no_put = created(&mut stream).await;
    stream
        .watch(
            "k",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])),
        )
        .await
        .unwrap();
    let no_delete = created(&mut stream).await;

    put_rev(&mut client, "k", "v1").await;
    client.delete("k", None).await.unwrap();
    put_rev(&mut client, "k", "v2").await;

    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    while deletes.is_empty() || puts.len() < 2 {
        let response = next_message(&mut stream).await;
        let kinds = response.events().iter().map(|e| e.event_type());
        if response.watch_id() == no_put {
            deletes.extend(kinds);
        } else {
            assert_eq!(response.watch_id(), no_delete, "{response:?}");
            puts.extend(kinds);
        }
    }
    assert_eq!(deletes, [EventType::Delete]);
    assert_eq!(puts, [EventType::Put, EventType::Put]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cancel_stops_one_watcher_of_a_stream() {
    let (_member, mut client) = single().await;
    let mut stream = client.watch("a", None).await.unwrap();
    let a = created(&mut stream).await;
    stream
        .watch("b", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    assert_eq!(
        created(&mut stream).await,
        7,
        "the client's watch id is used"
    );

    // A watch id already in use is refused on the stream, under no
    // watcher's id (etcd's InvalidWatchID, -1): watcher 7 lives on.
    stream
        .watch("c", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let duplicate = next_message(&mut stream).await;
    assert!(duplicate.created() && duplicate.canceled(), "{duplicate:?}");
    assert_eq!(duplicate.watch_id(), -1);
    assert_eq!(
        duplicate.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // So is a range that holds no key.
    stream
        .watch("z", Some(WatchOptions::new().with_range("a")))
        .await
        .unwrap();
    let empty = next_message(&mut stream).await;
    assert!(empty.created() && empty.canceled(), "{empty:?}");
    assert_eq!(empty.watch_id(), -1);
    assert_eq!(empty.cancel_reason(), "mvcc: watcher range is empty");

    stream.cancel(a).await.unwrap();
    let canceled = next_message(&mut stream).await;
    assert!(canceled.canceled(), "{canceled:?}");
    assert_eq!(canceled.watch_id(), a);

    // Canceling a watcher the stream does not have answers nothing (as
    // etcd): the next response is the next watcher's creation.
    stream.cancel(999).await.unwrap();
    // A new watcher never reuses a canceled watcher's id.
    stream.watch("c", None).await.unwrap();
    let c = created(&mut stream).await;
    assert!(c != a && c != 7, "watch id {c} reused");

    // Were watcher `a` alive, its event would come first.
    put_rev(&mut client, "a", "1").await;
    let at = put_rev(&mut client, "b", "1").await;
    let got = events(&mut stream, 7, 1).await;
    assert_eq!(
        event_summary(&got[0]),
        (EventType::Put, "b".into(), "1".into(), at)
    );
    let at = put_rev(&mut client, "c", "1").await;
    let got = events(&mut stream, c, 1).await;
    assert_eq!(got[0].kv().unwrap().mod_revision(), at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_request_reports_the_current_revision() {
    let (_member, mut client) = single().await;
    let at = put_rev(&mut client, "x", "1").await;
    let mut stream = client.watch("quiet", None).await.unwrap();
    let created_response = next_message(&mut stream).await;
    assert!(created_response.created());
    assert_eq!(created_response.header().unwrap().revision(), at);

    stream.request_progress().await.unwrap();
    let progress = next_message(&mut stream).await;
    assert_eq!(progress.watch_id(), -1, "a stream-wide progress response");
    assert!(progress.events().is_empty() && !progress.canceled() && !progress.created());
    assert_eq!(progress.header().unwrap().revision(), at);

    let later = put_rev(&mut client, "x", "2").await;
    stream.request_progress().await.unwrap();
    let progress = next_message(&mut stream).await;
    assert_eq!(progress.watch_id(), -1);
    assert_eq!(progress.header().unwrap().revision(), later);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_notify_arrives_while_idle() {
    let (_member, mut client) = single_with(Some(Duration::from_millis(200))).await;
    let mut stream = client
        .watch("k", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    let id = created(&mut stream).await;
    let at = revision(&mut client).await;

    let notification = next_message(&mut stream).await;
    assert_eq!(notification.watch_id(), id);
    assert!(notification.events().is_empty(), "{notification:?}");
    assert_eq!(notification.header().unwrap().revision(), at);

    // Writes elsewhere move the notified revision on.
    let later = put_rev(&mut client, "elsewhere", "1").await;
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    loop {
        let response = next_message(&mut stream).await;
        assert_eq!(response.watch_id(), id);
        assert!(response.events().is_empty(), "{response:?}");
        assert!(!response.canceled());
        if response.header().unwrap().revision() == later {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification at revision {later}"
        );
    }

    // A watcher that did not ask hears nothing but its events.
    let mut quiet = client.watch("q", None).await.unwrap();
    let quiet_id = created(&mut quiet).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let at = put_rev(&mut client, "q", "1").await;
    let got = events(&mut quiet, quiet_id, 1).await;
    assert_eq!(got[0].kv().unwrap().mod_revision(), at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_below_the_compaction_point_is_canceled() {
    let (_member, mut client) = single().await;
    let r1 = put_rev(&mut client, "k", "v1").await;
    let r2 = put_rev(&mut client, "k", "v2").await;
    let r3 = put_rev(&mut client, "k", "v3").await;
    client.compact(r2, None).await.unwrap();

    let mut stream = client
        .watch("k", Some(WatchOptions::new().with_start_revision(r1)))
        .await
        .unwrap();
    let first = next_message(&mut stream).await;
    let canceled = if first.created() && !first.canceled() {
        next_message(&mut stream).await
    } else {
        first
    };
    assert!(canceled.canceled(), "{canceled:?}");
    assert_eq!(canceled.compact_revision(), r2);
    assert!(canceled.events().is_empty());
    let compacted_id = canceled.watch_id();

    // The stream serves on, and the next watcher gets a new id.
    stream.watch("k", None).await.unwrap();
    let next = created(&mut stream).await;
    assert_ne!(next, compacted_id, "a canceled watcher's id is not reused");
    let r4 = put_rev(&mut client, "k", "v4").await;
    let got = events(&mut stream, next, 1).await;
    assert_eq!(got[0].kv().unwrap().mod_revision(), r4);

    // From the compaction point itself history is still there.
    let mut stream = client
        .watch("k", Some(WatchOptions::new().with_start_revision(r2)))
        .await
        .unwrap();
    let id = created(&mut stream).await;
    let got = events(&mut stream, id, 3).await;
    assert_eq!(
        got.iter()
            .map(|e| e.kv().unwrap().mod_revision())
            .collect::<Vec<_>>(),
        [r2, r3, r4]
    );
}

// -------------------------------------------------------------- Lease

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_time_to_live_leases_and_revoke() {
    let (_member, mut client) = single().await;
    let granted = client.lease_grant(30, None).await.unwrap();
    assert_ne!(granted.id(), 0);
    assert_eq!(granted.ttl(), 30);
    assert!(granted.error().is_empty());
    let lease = granted.id();

    // A chosen id, and a TTL below the minimum raised to it.
    let chosen = client
        .lease_grant(1, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap();
    assert_eq!(chosen.id(), 0x1234);
    assert_eq!(chosen.ttl(), 2, "the shortest lease chorus grants");

    client
        .put("l/1", "a", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    client
        .put("l/2", "b", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    client.put("kept", "c", None).await.unwrap();

    let ttl = client
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!((ttl.id(), ttl.granted_ttl()), (lease, 30));
    assert!(
        (25..=30).contains(&ttl.ttl()),
        "remaining TTL {}",
        ttl.ttl()
    );
    let mut attached: Vec<&[u8]> = ttl.keys().iter().map(Vec::as_slice).collect();
    attached.sort();
    assert_eq!(attached, [&b"l/1"[..], &b"l/2"[..]]);
    let without_keys = client.lease_time_to_live(lease, None).await.unwrap();
    assert!(without_keys.keys().is_empty());

    let mut leases: Vec<i64> = client
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    leases.sort();
    let mut expected = vec![lease, 0x1234];
    expected.sort();
    assert_eq!(leases, expected);

    let before = revision(&mut client).await;
    let revoked = client.lease_revoke(lease).await.unwrap();
    assert_eq!(
        revoked.header().unwrap().revision(),
        before + 1,
        "revoking deletes the keys in one revision"
    );
    let left = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(keys(left.kvs()), ["kept"]);
    let ids: Vec<i64> = client
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(ids, [0x1234]);
    let gone = client.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(gone.ttl(), -1);

    // Revoking a lease without keys writes nothing.
    let at = revision(&mut client).await;
    let revoked = client.lease_revoke(0x1234).await.unwrap();
    assert_eq!(revoked.header().unwrap().revision(), at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_errors_for_unknown_or_bad_leases() {
    let (_member, mut client) = single().await;
    assert_status(
        client.lease_revoke(0x4242).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    let ttl = client.lease_time_to_live(0x4242, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1);
    assert!(ttl.keys().is_empty());
    match client.lease_keep_alive(0x4242).await {
        Err(etcd_client::Error::LeaseKeepAliveError(_)) => {}
        other => panic!("keeping an unknown lease alive must fail: {other:?}"),
    }

    client
        .lease_grant(10, Some(LeaseGrantOptions::new().with_id(7)))
        .await
        .unwrap();
    assert_status(
        client
            .lease_grant(10, Some(LeaseGrantOptions::new().with_id(7)))
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    assert_status(
        client.lease_grant(9_000_000_001, None).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_renews_past_the_ttl() {
    let (_member, mut client) = single().await;
    let lease = client.lease_grant(2, None).await.unwrap().id();
    client
        .put("kept-alive", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await.unwrap();
    assert_eq!(keeper.id(), lease);

    // Renew every half second for twice the TTL.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4_000) {
        keeper.keep_alive().await.unwrap();
        let response = tokio::time::timeout(STREAM_WAIT, responses.message())
            .await
            .expect("a keep-alive answer in time")
            .unwrap()
            .expect("the stream is open");
        assert_eq!((response.id(), response.ttl()), (lease, 2));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        value_of(&mut client, "kept-alive", None).await.as_deref(),
        Some("v"),
        "a renewed lease keeps its keys"
    );
    let ttl = client.lease_time_to_live(lease, None).await.unwrap();
    assert!(ttl.ttl() >= 1, "remaining TTL {}", ttl.ttl());

    // Once renewals stop, it expires.
    drop(keeper);
    drop(responses);
    eventually("the lease expires", || {
        let mut client = client.clone();
        async move { (client.lease_time_to_live(lease, None).await.ok()?.ttl() == -1).then_some(()) }
    })
    .await;
    assert!(value_of(&mut client, "kept-alive", None).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_an_expired_lease_are_deleted() {
    let (_member, mut client) = single().await;
    let lease = client.lease_grant(2, None).await.unwrap().id();
    let granted_at = tokio::time::Instant::now();
    client
        .put("short/1", "a", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    client
        .put("short/2", "b", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let mut stream = client
        .watch("short/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let id = created(&mut stream).await;
    let present = client
        .get(
            "short/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(present.count(), 2);

    let deleted = events(&mut stream, id, 2).await;
    assert!(
        granted_at.elapsed() >= Duration::from_millis(1_900),
        "the lease expired early, after {:?}",
        granted_at.elapsed()
    );
    assert!(deleted.iter().all(|e| e.event_type() == EventType::Delete));
    let gone = client
        .get(
            "short/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(gone.count(), 0);
    assert_eq!(
        client.lease_time_to_live(lease, None).await.unwrap().ttl(),
        -1
    );
    assert!(client.leases().await.unwrap().leases().is_empty());
}

// ------------------------------------------- Cluster and Maintenance, alone

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_names_the_lone_member() {
    let (member, mut client) = single().await;
    let cluster_id = client
        .put("k", "v", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .cluster_id();
    // The member publishes its name and client URLs in the background.
    let list = eventually("the member is published", || {
        let mut client = client.clone();
        async move {
            let list = client.member_list().await.ok()?;
            (list.members().len() == 1 && !list.members()[0].name().is_empty()).then_some(list)
        }
    })
    .await;
    assert_eq!(list.header().unwrap().cluster_id(), cluster_id);
    let me = &list.members()[0];
    assert_eq!(me.id(), member.id());
    assert_eq!(me.name(), "solo");
    assert_eq!(me.peer_urls(), [member.peer_url().to_string()]);
    assert_eq!(me.client_urls(), [member.client_url().to_string()]);
    assert!(!me.is_learner());

    assert_status(
        client.member_remove(0xdead).await,
        Code::NotFound,
        MEMBER_NOT_FOUND,
    );
    assert_status(
        client.member_promote(member.id()).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
    assert_status(
        client
            .member_add([member.peer_url().to_string()], None)
            .await,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_status_and_alarms() {
    let (member, mut client) = single().await;
    let written = put_rev(&mut client, "k", "v").await;
    let status = client.status().await.unwrap();
    assert!(status.version().starts_with("3."), "{}", status.version());
    assert_eq!(status.leader(), member.id());
    assert!(status.raft_term() >= 1);
    assert!(status.raft_index() >= 1);
    assert!(status.raft_applied_index() >= 1);
    assert!(status.raft_applied_index() <= status.raft_index());
    assert!(status.db_size() > 0, "db size {}", status.db_size());
    assert!(status.errors().is_empty(), "{:?}", status.errors());
    assert!(!status.is_learner());
    let header = status.header().unwrap();
    assert_eq!(header.member_id(), member.id());
    assert_eq!(header.revision(), written);

    // A later write moves the Raft index on.
    put_rev(&mut client, "k", "v2").await;
    let later = client.status().await.unwrap();
    assert!(later.raft_index() > status.raft_index());

    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty());
    let alarms = client
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, None)
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty());
    // chorus has no space quota: clients cannot raise alarms.
    let refused = client
        .alarm(AlarmAction::Activate, AlarmType::Nospace, None)
        .await;
    assert_eq!(
        common::status_of(refused.expect_err("raising an alarm is refused")).code(),
        Code::Unimplemented
    );
    assert!(client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap()
        .alarms()
        .is_empty());

    // Moving leadership to a member that does not exist is refused; to
    // the leader itself it is a no-op.
    assert_status(
        client.move_leader(0xdead).await,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    client.move_leader(member.id()).await.unwrap();
    assert_eq!(client.status().await.unwrap().leader(), member.id());
}

// ------------------------------------------------- Three members together

/// Which member leads, as the first member's status says.
async fn leader_index(members: &[Member]) -> usize {
    let leader = members[0].client().await.status().await.unwrap().leader();
    members
        .iter()
        .position(|m| m.server.is_some() && m.id() == leader)
        .expect("the leader is one of the members")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_and_serve_everywhere() {
    let mut members = cluster(3).await;
    let mut clients = Vec::new();
    for member in &members {
        clients.push(member.client().await);
    }
    let leader = leader_index(&members).await;
    let follower = (leader + 1) % 3;

    // A watch on the other follower sees writes made elsewhere.
    let watcher = (leader + 2) % 3;
    let mut stream = clients[watcher].watch("replicated", None).await.unwrap();
    let watch_id = created(&mut stream).await;

    // Writes through a follower's endpoint work (forwarded to the
    // leader), and the answer comes from that follower.
    let put = clients[follower]
        .put("replicated", "v1", None)
        .await
        .unwrap();
    let header = put.header().unwrap();
    assert_eq!(header.member_id(), members[follower].id());
    let at = header.revision();
    let txn = clients[follower]
        .txn(
            Txn::new()
                .when([Compare::value("replicated", CompareOp::Equal, "v1")])
                .and_then([TxnOp::put("replicated", "v2", None)]),
        )
        .await
        .unwrap();
    assert!(txn.succeeded());
    assert_eq!(txn.header().unwrap().revision(), at + 1);

    // Linearizable reads anywhere see the latest write at once.
    for client in &mut clients {
        let got = client.get("replicated", None).await.unwrap();
        assert_eq!(values(got.kvs()), ["v2"]);
        assert_eq!(got.header().unwrap().revision(), at + 1);
    }
    // Serializable reads catch up.
    for (i, client) in clients.iter().enumerate() {
        eventually(&format!("member {i} applies the write"), || {
            let mut client = client.clone();
            async move {
                let got = client
                    .get("replicated", Some(GetOptions::new().with_serializable()))
                    .await
                    .ok()?;
                (values(got.kvs()) == ["v2"]).then_some(())
            }
        })
        .await;
    }
    let seen = events(&mut stream, watch_id, 2).await;
    assert_eq!(
        seen.iter()
            .map(|e| e.kv().unwrap().value_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        ["v1", "v2"]
    );

    // Leases granted through one member hold on another.
    let lease = clients[follower].lease_grant(30, None).await.unwrap().id();
    clients[watcher]
        .put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let ttl = clients[leader]
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    clients[watcher].lease_revoke(lease).await.unwrap();
    assert!(value_of(&mut clients[leader], "leased", None)
        .await
        .is_none());

    // Every member lists all three, with names and URLs once published.
    for client in &clients {
        let list = eventually("all three members are published", || {
            let mut client = client.clone();
            async move {
                let list = client.member_list().await.ok()?;
                (list.members().len() == 3 && list.members().iter().all(|m| !m.name().is_empty()))
                    .then_some(list)
            }
        })
        .await;
        for member in &members {
            let listed = list
                .members()
                .iter()
                .find(|m| m.id() == member.id())
                .expect("every member is listed");
            assert_eq!(listed.name(), member.name);
            assert_eq!(listed.peer_urls(), [member.peer_url().to_string()]);
            assert_eq!(listed.client_urls(), [member.client_url().to_string()]);
            assert!(!listed.is_learner());
        }
    }

    // Every member reports the same leader.
    for client in &mut clients {
        let status = client.status().await.unwrap();
        assert_eq!(status.leader(), members[leader].id());
        assert!(!status.is_learner());
    }

    // Move leadership to a follower.
    let target = members[follower].id();
    clients[leader].move_leader(target).await.unwrap();
    for client in &clients {
        eventually("every member sees the new leader", || {
            let mut client = client.clone();
            async move { (client.status().await.ok()?.leader() == target).then_some(()) }
        })
        .await;
    }
    assert_status(
        clients[follower].move_leader(0xdead).await,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    // The cluster writes on under its new leader.
    let after = put_rev(&mut clients[leader], "after-move", "1").await;
    assert!(after > at + 1);
    for client in &mut clients {
        assert_eq!(
            value_of(client, "after-move", None).await.as_deref(),
            Some("1")
        );
    }

    for member in &mut members {
        member.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_as_learners_promoted_updated_and_removed() {
    let mut members = cluster(3).await;
    let mut client = members[0].client().await;
    client.put("before-join", "1", None).await.unwrap();

    // Add a learner, then start it as an existing-cluster member.
    let mut joiner = Member::new("m3");
    let added = client
        .member_add(
            [joiner.peer_url().to_string()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let new = added.member().expect("the added member").clone();
    assert!(new.is_learner());
    assert_eq!(new.peer_urls(), [joiner.peer_url().to_string()]);
    assert_eq!(added.member_list().len(), 4);
    assert_status(
        client
            .member_add([joiner.peer_url().to_string()], None)
            .await,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );

    joiner.config.initial_cluster = members
        .iter()
        .chain(std::iter::once(&joiner))
        .map(Member::initial_cluster_entry)
        .collect::<Vec<_>>()
        .join(",");
    joiner.config.initial_cluster_state = chorus_server::ClusterState::Existing;
    joiner.start().await;
    assert_eq!(
        joiner.id(),
        new.id(),
        "the joiner computes the id it was added with"
    );
    let mut joined = joiner.client().await;
    eventually("the learner catches up", || {
        let mut joined = joined.clone();
        async move {
            let got = joined
                .get("before-join", Some(GetOptions::new().with_serializable()))
                .await
                .ok()?;
            (values(got.kvs()) == ["1"]).then_some(())
        }
    })
    .await;
    assert!(joined.status().await.unwrap().is_learner());

    // Promote it: it votes from now on.
    let promoted = client.member_promote(new.id()).await.unwrap();
    let listed = promoted
        .members()
        .iter()
        .find(|m| m.id() == new.id())
        .expect("listed");
    assert!(!listed.is_learner());
    assert_status(
        client.member_promote(new.id()).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
    eventually("the joiner knows it votes", || {
        let mut joined = joined.clone();
        async move { (!joined.status().await.ok()?.is_learner()).then_some(()) }
    })
    .await;
    // It publishes its name and client URLs itself.
    eventually("the joiner is published", || {
        let mut client = client.clone();
        let id = new.id();
        let url = joiner.client_url().to_string();
        async move {
            let list = client.member_list().await.ok()?;
            let me = list.members().iter().find(|m| m.id() == id)?;
            (me.name() == "m3" && me.client_urls() == [url]).then_some(())
        }
    })
    .await;
    // Writes through the new member work; reads there are linearizable.
    client.put("after-join", "2", None).await.unwrap();
    assert_eq!(
        value_of(&mut joined, "after-join", None).await.as_deref(),
        Some("2")
    );
    joined.put("from-joiner", "3", None).await.unwrap();
    assert_eq!(
        value_of(&mut client, "from-joiner", None).await.as_deref(),
        Some("3")
    );

    // Update a member's peer URLs (a second URL; the first still reaches
    // it).
    let extra = format!("http://127.0.0.1:{}", common::free_port());
    let urls = vec![joiner.peer_url().to_string(), extra];
    let updated = client.member_update(new.id(), urls.clone()).await.unwrap();
    let listed = updated
        .members()
        .iter()
        .find(|m| m.id() == new.id())
        .expect("listed");
    assert_eq!(listed.peer_urls(), urls);
    assert_eq!(listed.name(), "m3", "an update keeps the name");
    assert_status(
        client.member_update(0xdead, urls).await,
        Code::NotFound,
        MEMBER_NOT_FOUND,
    );

    // Remove a member that does not lead.
    let leader = leader_index(&members).await;
    let victim = (leader + 1) % 3;
    let victim_id = members[victim].id();
    let survivor = (leader + 2) % 3;
    let mut survivor_client = members[survivor].client().await;
    let removed = survivor_client.member_remove(victim_id).await.unwrap();
    assert_eq!(removed.members().len(), 3);
    assert!(removed.members().iter().all(|m| m.id() != victim_id));
    members[victim].stop().await;
    assert_status(
        survivor_client.member_remove(victim_id).await,
        Code::NotFound,
        MEMBER_NOT_FOUND,
    );
    let list = survivor_client.member_list().await.unwrap();
    let mut ids: Vec<u64> = list.members().iter().map(|m| m.id()).collect();
    ids.sort();
    let mut expected: Vec<u64> = members
        .iter()
        .filter(|m| m.server.is_some())
        .map(Member::id)
        .chain(std::iter::once(new.id()))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);

    // The three left write and read on.
    survivor_client
        .put("after-remove", "4", None)
        .await
        .unwrap();
    assert_eq!(
        value_of(&mut joined, "after-remove", None).await.as_deref(),
        Some("4")
    );
    let mut leader_client = members[leader].client().await;
    assert_eq!(
        value_of(&mut leader_client, "after-remove", None)
            .await
            .as_deref(),
        Some("4")
    );

    // Remove the leader through its own endpoint (etcd answers once the
    // change is made; the members that stay elect a new leader).
    let leader_id = survivor_client.status().await.unwrap().leader();
    let mut running: Vec<&mut Member> = members
        .iter_mut()
        .filter(|m| m.server.is_some())
        .chain(std::iter::once(&mut joiner))
        .collect();
    let leaving = running
        .iter()
        .position(|m| m.id() == leader_id)
        .expect("the leader runs");
    let mut leaving_client = running[leaving].client().await;
    let started = tokio::time::Instant::now();
    let removed = leaving_client.member_remove(leader_id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "removing the leader took {:?}",
        started.elapsed()
    );
    let mut ids: Vec<u64> = removed.members().iter().map(|m| m.id()).collect();
    ids.sort();
    let mut staying: Vec<u64> = running
        .iter()
        .map(|m| m.id())
        .filter(|id| *id != leader_id)
        .collect();
    staying.sort();
    assert_eq!(ids, staying);
    running[leaving].stop().await;
    running.remove(leaving);
    for member in &running {
        let mut client = member.client().await;
        let status = client.status().await.unwrap();
        assert!(staying.contains(&status.leader()), "{status:?}");
        let list = client.member_list().await.unwrap();
        assert_eq!(list.members().len(), 2);
        assert!(list.members().iter().all(|m| !m.name().is_empty()));
        client
            .put(format!("from-{}", member.name), "6", None)
            .await
            .unwrap();
    }
    for member in &running {
        let mut client = member.client().await;
        for other in &running {
            let key = format!("from-{}", other.name);
            assert_eq!(
                value_of(&mut client, &key, None).await.as_deref(),
                Some("6")
            );
        }
    }

    joiner.stop().await;
    for member in &mut members {
        member.stop().await;
    }
}

// ---------------------------------------------------- chorus's Admin service

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_reports_and_steers_the_kv_server() {
    use chorus_server::pb::admin::admin_client::AdminClient;
    use chorus_server::pb::admin::{
        OverviewRequest, ServerId, ServerRequest, TransferLeadershipRequest,
    };
    use chorus_server::{KV_CLUSTER, KV_MACHINE, KV_SERVER};

    let (member, mut client) = single().await;
    put_rev(&mut client, "k", "v").await;
    let mut admin = AdminClient::connect(member.client_url().to_string())
        .await
        .unwrap();
    let me = ServerId {
        name: KV_SERVER.into(),
        node: member.id(),
    };

    let overview = admin
        .overview(OverviewRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overview.node, member.id());
    let kv = overview
        .servers
        .iter()
        .find(|s| s.server.as_ref() == Some(&me))
        .expect("the key-value server is listed");
    assert_eq!(
        (kv.cluster.as_str(), kv.machine.as_str()),
        (KV_CLUSTER, KV_MACHINE)
    );
    assert_eq!(kv.role, "leader");
    assert_eq!(kv.leader_node, member.id());
    assert!(kv.term >= 1 && kv.commit_index >= 1 && kv.applied_index >= 1);
    assert!(overview.wal_appends >= 1 && overview.wal_bytes_written > 0);

    let members = admin
        .members(ServerRequest {
            server: Some(me.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].server.as_ref(), Some(&me));
    assert_eq!(members[0].membership, "voter");
    assert!(members[0].leader);

    let reply = admin
        .transfer_leadership(TransferLeadershipRequest {
            server: Some(me.clone()),
            target: Some(me.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.already_leader);

    // Triggering an election on the leader itself is a no-op (ra's
    // semantics): it still leads, in the same term.
    let term = client.status().await.unwrap().raft_term();
    admin
        .trigger_election(ServerRequest {
            server: Some(me.clone()),
        })
        .await
        .unwrap();
    let status = client.status().await.unwrap();
    assert_eq!((status.leader(), status.raft_term()), (member.id(), term));
    put_rev(&mut client, "k", "after-election").await;

    let missing = admin
        .members(ServerRequest { server: None })
        .await
        .expect_err("a server is required");
    assert_eq!(missing.code(), Code::InvalidArgument);
    let unnamed = admin
        .members(ServerRequest {
            server: Some(ServerId {
                name: String::new(),
                node: member.id(),
            }),
        })
        .await
        .expect_err("a server name is required");
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    admin
        .members(ServerRequest {
            server: Some(ServerId {
                name: "no-such-server".into(),
                node: member.id(),
            }),
        })
        .await
        .expect_err("an unknown server");
}

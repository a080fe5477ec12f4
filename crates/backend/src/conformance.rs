//! The conformance suite every [`KvBackend`] runs (STYLE: one suite per
//! trait). Each check works under its own key prefix, so the suite can
//! run against a store that holds other data (a shared etcd).
//!
//! A check that fails panics with what it expected: this module is for
//! tests (feature `conformance`).

use std::time::Duration;

use bytes::Bytes;

use crate::{
    BackendError, Compare, CompareResult, CompareTarget, EventKind, KvBackend, KvError, PutRequest,
    RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, WatchRequest,
};

/// How long a check waits for a watch event before failing.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Runs every check, each under `prefix` plus its own name.
pub async fn run<B: KvBackend>(backend: &B, prefix: &str) {
    put_get_delete(backend, &format!("{prefix}/put")).await;
    ranges(backend, &format!("{prefix}/range")).await;
    txns(backend, &format!("{prefix}/txn")).await;
    refusals(backend, &format!("{prefix}/refuse")).await;
    leases(backend, &format!("{prefix}/lease")).await;
    watches(backend, &format!("{prefix}/watch")).await;
}

fn key(prefix: &str, name: &str) -> Bytes {
    Bytes::from(format!("{prefix}/{name}"))
}

async fn put<B: KvBackend>(backend: &B, key: &Bytes, value: &str) -> i64 {
    backend
        .put(PutRequest {
            key: key.clone(),
            value: Bytes::from(value.to_string()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|error| panic!("put {key:?}: {error}"))
        .header
        .revision
}

/// Put, read back with metadata, overwrite, delete.
pub async fn put_get_delete<B: KvBackend>(backend: &B, prefix: &str) {
    let k = key(prefix, "a");
    let first = put(backend, &k, "one").await;
    let found = backend.get(k.clone()).await.expect("get").expect("key");
    assert_eq!(found.value, "one");
    assert_eq!(found.create_revision, first);
    assert_eq!(found.mod_revision, first);
    assert_eq!(found.version, 1);
    let previous = backend
        .put(PutRequest {
            key: k.clone(),
            value: "two".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("second put");
    assert!(
        previous.header.revision > first,
        "every write is a new revision"
    );
    assert_eq!(previous.prev_kv.map(|kv| kv.value), Some("one".into()));
    let found = backend.get(k.clone()).await.expect("get").expect("key");
    assert_eq!((found.version, found.create_revision), (2, first));
    let deleted = backend
        .delete_range(crate::DeleteRangeRequest {
            key: k.clone(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("delete");
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].value, "two");
    assert_eq!(backend.get(k.clone()).await.expect("get"), None);
    // Reading at an older revision still sees the old value.
    let old = backend
        .range(RangeRequest {
            key: k,
            revision: first,
            ..Default::default()
        })
        .await
        .expect("read at a past revision");
    assert_eq!(old.kvs[0].value, "one");
}

/// Prefix reads in key order, limits and counts, sorting.
pub async fn ranges<B: KvBackend>(backend: &B, prefix: &str) {
    for name in ["c", "a", "b", "d"] {
        put(backend, &key(prefix, name), name).await;
    }
    let all = backend
        .get_prefix(format!("{prefix}/"))
        .await
        .expect("prefix read");
    let keys: Vec<Bytes> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<Bytes> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| key(prefix, n))
        .collect();
    assert_eq!(keys, want, "a prefix read is in key order");
    assert_eq!(all.count, 4);
    let limited = backend
        .range(RangeRequest {
            key: key(prefix, ""),
            range_end: crate::prefix_end(&key(prefix, "")),
            limit: 2,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Key,
            ..Default::default()
        })
        .await
        .expect("limited read");
    assert_eq!(limited.kvs.len(), 2);
    assert!(limited.more);
    assert_eq!(limited.count, 4);
    assert_eq!(limited.kvs[0].key, key(prefix, "d"));
    let counted = backend
        .range(RangeRequest {
            key: key(prefix, ""),
            range_end: crate::prefix_end(&key(prefix, "")),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count");
    assert_eq!((counted.count, counted.kvs.len()), (4, 0));
}

/// A compare-and-swap on mod_revision: the winner's writes all land at
/// one revision, the loser's branch runs instead.
pub async fn txns<B: KvBackend>(backend: &B, prefix: &str) {
    let guard = key(prefix, "guard");
    let other = key(prefix, "other");
    let written = put(backend, &guard, "v1").await;
    let swap = |expected: i64, value: &str| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Mod(expected),
            key: guard.clone(),
            range_end: Bytes::new(),
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: guard.clone(),
                value: Bytes::from(value.to_string()),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: other.clone(),
                value: Bytes::from(value.to_string()),
                ..Default::default()
            }),
        ],
        failure: vec![RequestOp::Range(RangeRequest {
            key: guard.clone(),
            ..Default::default()
        })],
    };
    let won = backend.txn(swap(written, "v2")).await.expect("txn");
    assert!(won.succeeded);
    let a = backend.get(guard.clone()).await.expect("get").expect("key");
    let b = backend.get(other.clone()).await.expect("get").expect("key");
    assert_eq!(a.mod_revision, won.header.revision);
    assert_eq!(b.mod_revision, won.header.revision, "one revision per txn");
    let lost = backend
        .txn(swap(written, "v3"))
        .await
        .expect("txn that loses");
    assert!(!lost.succeeded);
    match &lost.responses[..] {
        [ResponseOp::Range(range)] => assert_eq!(range.kvs[0].value, "v2"),
        other => panic!("the failure branch answered {other:?}"),
    }
    // A txn that only creates when absent (version 0).
    let create = |value: &str| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: key(prefix, "once"),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: key(prefix, "once"),
            value: Bytes::from(value.to_string()),
            ..Default::default()
        })],
        failure: vec![],
    };
    assert!(
        backend
            .txn(create("first"))
            .await
            .expect("create")
            .succeeded
    );
    assert!(
        !backend
            .txn(create("second"))
            .await
            .expect("create")
            .succeeded
    );
}

/// The store's refusals arrive as typed [`KvError`]s.
pub async fn refusals<B: KvBackend>(backend: &B, prefix: &str) {
    let empty = backend.put(PutRequest::default()).await;
    assert_eq!(empty.err(), Some(BackendError::Kv(KvError::EmptyKey)));
    let head = put(backend, &key(prefix, "x"), "x").await;
    let future = backend
        .range(RangeRequest {
            key: key(prefix, "x"),
            revision: head + 1_000_000,
            ..Default::default()
        })
        .await;
    assert_eq!(
        future.err(),
        Some(BackendError::Kv(KvError::FutureRevision))
    );
    let duplicate = backend
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: key(prefix, "d"),
                    value: "1".into(),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: key(prefix, "d"),
                    value: "2".into(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        })
        .await;
    assert_eq!(
        duplicate.err(),
        Some(BackendError::Kv(KvError::DuplicateKey))
    );
}

/// Keys on a lease go with it; a dead lease is typed.
pub async fn leases<B: KvBackend>(backend: &B, prefix: &str) {
    let granted = backend.lease_grant(60).await.expect("grant");
    assert!(granted.id != 0 && granted.ttl >= 60);
    let k = key(prefix, "leased");
    backend
        .put(PutRequest {
            key: k.clone(),
            value: "v".into(),
            lease: granted.id,
            ..Default::default()
        })
        .await
        .expect("put on lease");
    assert_eq!(
        backend
            .get(k.clone())
            .await
            .expect("get")
            .map(|kv| kv.lease),
        Some(granted.id)
    );
    let alive = backend.lease_keep_alive(granted.id).await.expect("renew");
    assert_eq!((alive.id, alive.ttl), (granted.id, granted.ttl));
    let left = backend
        .lease_time_to_live(granted.id)
        .await
        .expect("time to live");
    assert!(
        left.ttl > 0 && left.ttl <= granted.ttl,
        "ttl {} of {}",
        left.ttl,
        granted.ttl
    );
    backend.lease_revoke(granted.id).await.expect("revoke");
    assert_eq!(
        backend.get(k).await.expect("get"),
        None,
        "revoking deletes the keys"
    );
    assert_eq!(
        backend.lease_keep_alive(granted.id).await.err(),
        Some(BackendError::Kv(KvError::LeaseNotFound))
    );
    assert_eq!(
        backend.lease_revoke(granted.id).await.err(),
        Some(BackendError::Kv(KvError::LeaseNotFound))
    );
    let gone = backend
        .lease_time_to_live(granted.id)
        .await
        .expect("time to live of a dead lease");
    assert_eq!(gone.ttl, -1);
    let put_missing = backend
        .put(PutRequest {
            key: key(prefix, "orphan"),
            value: "v".into(),
            lease: granted.id,
            ..Default::default()
        })
        .await;
    assert_eq!(
        put_missing.err(),
        Some(BackendError::Kv(KvError::LeaseNotFound))
    );
}

async fn next_events(watch: &mut crate::Watch) -> Vec<crate::Event> {
    match tokio::time::timeout(EVENT_WAIT, watch.next()).await {
        Ok(Some(Ok(events))) => events,
        Ok(Some(Err(error))) => panic!("the watch failed: {error}"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => panic!("no watch event within {EVENT_WAIT:?}"),
    }
}

/// Watches from now and from the past, in revision order, with prev_kv.
pub async fn watches<B: KvBackend>(backend: &B, prefix: &str) {
    let first = put(backend, &key(prefix, "a"), "1").await;
    put(backend, &key(prefix, "a"), "2").await;
    let mut live = backend
        .watch(WatchRequest {
            prev_kv: true,
            ..WatchRequest::prefix(format!("{prefix}/"))
        })
        .await
        .expect("watch from now");
    // From the past: both earlier puts, in order.
    let mut past = backend
        .watch(WatchRequest::prefix(format!("{prefix}/")).from_revision(first))
        .await
        .expect("watch from a past revision");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_events(&mut past).await);
    }
    let values: Vec<Bytes> = seen.iter().map(|e| e.kv.value.clone()).collect();
    assert_eq!(values, vec![Bytes::from("1"), Bytes::from("2")]);
    assert!(seen[0].prev_kv.is_none(), "prev_kv only when asked");
    // Live: a put and a delete, each with its previous value.
    let put_at = put(backend, &key(prefix, "a"), "3").await;
    let deleted = backend
        .delete_range(crate::DeleteRangeRequest {
            key: key(prefix, "a"),
            ..Default::default()
        })
        .await
        .expect("delete");
    put(backend, &format!("{prefix}-outside").into(), "x").await;
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(next_events(&mut live).await);
    }
    assert_eq!(events.len(), 2, "only keys in the range: {events:?}");
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.mod_revision, put_at);
    assert_eq!(
        events[0].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some("2".into())
    );
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].kv.mod_revision, deleted.header.revision);
    assert_eq!(
        events[1].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some("3".into())
    );
    // A txn's changes arrive together, at one revision.
    let txn = backend
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: key(prefix, "t1"),
                    value: "t".into(),
                    ..Default::default()
                }),
                RequestOp::Put(PutRequest {
                    key: key(prefix, "t2"),
                    value: "t".into(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        })
        .await
        .expect("txn");
    let together = next_events(&mut live).await;
    assert_eq!(together.len(), 2, "one batch per revision: {together:?}");
    assert!(together
        .iter()
        .all(|e| e.kv.mod_revision == txn.header.revision));
}

/// A real etcd (Debian's `etcd-server` package: `/usr/bin/etcd`) on free
/// loopback ports, in a fresh data directory; killed and removed when
/// dropped.
pub struct EtcdProcess {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// `http://127.0.0.1:port` for clients.
    pub endpoint: String,
}

impl EtcdProcess {
    /// Starts etcd and waits until it serves; fails when the binary is
    /// missing (install `etcd-server`) or it does not come up in time.
    pub async fn start() -> Result<EtcdProcess, String> {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map(|addr| addr.port())
                .map_err(|error| format!("finding a free port: {error}"))
        };
        let (client, peer) = (free_port()?, free_port()?);
        let dir = std::env::temp_dir().join(format!("chorus-etcd-{}-{client}", std::process::id()));
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .args(["--name", "conformance", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("conformance={peer_url}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|error| {
                format!("starting etcd (install Debian's etcd-server package): {error}")
            })?;
        let process = EtcdProcess {
            child,
            dir,
            endpoint,
        };
        let store = crate::EtcdKv::connect(crate::EtcdConfig::new([process.endpoint.clone()]))
            .map_err(|error| error.to_string())?;
        for _ in 0..100 {
            if store.get("ready").await.is_ok() {
                return Ok(process);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("etcd did not answer within 10 s".into())
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

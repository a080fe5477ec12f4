//! The embedded backend: the conformance suite, and a store that keeps
//! its data across a restart.

use chorus_backend::{AnyBackend, EmbeddedKv, KvBackend, PutRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedKv::open(dir.path()).await.expect("open");
    chorus_backend::conformance::run(&store, "conformance").await;
    // The same store chosen at run time.
    let any = AnyBackend::Embedded(store.clone());
    chorus_backend::conformance::run(&any, "conformance-any").await;
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedKv::open(dir.path()).await.expect("open");
    let mut revision = 0;
    for i in 0..100 {
        revision = store
            .put(PutRequest {
                key: format!("k{i:03}").into(),
                value: format!("v{i}").into(),
                ..Default::default()
            })
            .await
            .expect("put")
            .header
            .revision;
    }
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = EmbeddedKv::open(dir.path()).await.expect("reopen");
    let all = store.get_prefix("k").await.expect("read");
    assert_eq!(all.kvs.len(), 100);
    assert_eq!(all.header.revision, revision);
    assert_eq!(all.kvs[42].value, "v42");
    store.shutdown().await.expect("shutdown");
}

//! The scenarios on the embedded store (several handles on one store),
//! and everything surviving a restart of the store.

use chorus_backend::EmbeddedKv;
use chorus_sessions::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_scenarios() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedKv::open(dir.path()).await.expect("open");
    // Clones are separate handles (separate session caches when wrapped).
    let handles = vec![store.clone(), store.clone(), store.clone()];
    conformance::run(&handles, "scenarios").await;
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedKv::open(dir.path()).await.expect("open");
    let written = conformance::before_restart(&store, "restart/").await;
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = EmbeddedKv::open(dir.path()).await.expect("reopen");
    conformance::after_restart(&store, "restart/", &written).await;
    store.shutdown().await.expect("shutdown");
}

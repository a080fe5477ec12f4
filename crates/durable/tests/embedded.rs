//! The scenarios on the embedded store (EmbeddedKv in a temp dir), and
//! the restart test, which needs a store this process can close and
//! reopen.

mod scenarios;

use chorus_backend::EmbeddedKv;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedKv::open(dir.path()).await.expect("open");
    scenarios::all(store.clone(), "embedded").await;
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_under_other_crash_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedKv::open(dir.path()).await.expect("open");
    for seed in [1, 2] {
        scenarios::guard(
            "exactly_once",
            scenarios::exactly_once_with_crashes(store.clone(), &format!("seed-{seed}"), seed),
        )
        .await;
    }
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_and_queue_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let store = EmbeddedKv::open(&path).await.expect("open");
    scenarios::guard(
        "restart",
        scenarios::survives_restart(store, "restart", |store: EmbeddedKv| async move {
            store.shutdown().await.expect("shutdown");
            drop(store);
            EmbeddedKv::open(&path).await.expect("reopen")
        }),
    )
    .await;
}

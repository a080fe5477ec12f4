//! chorus-backend's etcd backend against `chorus serve` (one member and
//! three), and its embedded backend attached to a running member: both
//! run the backend conformance suite.

mod common;

use chorus_backend::{EtcdConfig, EtcdKv, KvBackend, PutRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms_against_one_member() {
    let cluster = common::cluster(1).await;
    let endpoints = cluster
        .iter()
        .map(|m| m.client_url().to_string())
        .collect::<Vec<_>>();
    let store = EtcdKv::connect(EtcdConfig::new(endpoints)).expect("connect");
    chorus_backend::conformance::run(&store, "etcd-one").await;
    // The server's own handle on its store sees what the gRPC client wrote.
    let inside = cluster[0].server.as_ref().expect("running").kv();
    chorus_backend::conformance::run(&inside, "attached").await;
    let seen = inside.get("etcd-one/range/a").await.expect("read");
    assert_eq!(seen.map(|kv| kv.value), Some("a".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms_against_three_members_and_fails_over() {
    let mut cluster = common::cluster(3).await;
    let endpoints = cluster
        .iter()
        .map(|m| m.client_url().to_string())
        .collect::<Vec<_>>();
    let store = EtcdKv::connect(EtcdConfig::new(endpoints)).expect("connect");
    chorus_backend::conformance::run(&store, "etcd-three").await;
    // Stop the member requests go to first: the client moves on.
    cluster[0].stop().await;
    // Until the survivors elect a leader (when the stopped member led),
    // writes are refused as transient.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let revision = loop {
        match store
            .put(PutRequest {
                key: "after-stop".into(),
                value: "v".into(),
                ..Default::default()
            })
            .await
        {
            Ok(response) => break response.header.revision,
            Err(error) if error.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(error) => panic!("put after a member stopped: {error}"),
        }
    };
    assert!(revision > 1, "the write got a revision: {revision}");
    let found = store.get("after-stop").await.expect("read");
    assert_eq!(found.map(|kv| kv.value), Some("v".into()));
}

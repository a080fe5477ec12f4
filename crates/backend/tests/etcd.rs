//! The etcd backend against a real etcd (Debian's etcd-server, which CI
//! installs): the conformance suite, a long watch from the past, and
//! how an unreachable endpoint fails.

use chorus_backend::conformance::EtcdProcess;
use chorus_backend::{EtcdConfig, EtcdKv, KvBackend, PutRequest, WatchRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms_against_real_etcd() {
    let etcd = EtcdProcess::start().await.expect("etcd");
    let store = EtcdKv::connect(EtcdConfig::new([etcd.endpoint.clone()])).expect("connect");
    chorus_backend::conformance::run(&store, "real-etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_are_unavailable_not_indeterminate() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let store =
        EtcdKv::connect(EtcdConfig::new([format!("http://127.0.0.1:{port}")])).expect("connect");
    let error = store
        .put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(error, chorus_backend::BackendError::Unavailable(_)),
        "a refused connection never sent the write: {error:?}"
    );
    assert!(EtcdKv::connect(EtcdConfig::new(Vec::<String>::new())).is_err());
    assert!(EtcdKv::connect(EtcdConfig::new(["not a url"])).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_past_sees_every_change_once() {
    let etcd = EtcdProcess::start().await.expect("etcd");
    let store = EtcdKv::connect(EtcdConfig::new([etcd.endpoint.clone()])).expect("connect");
    let mut first = 0;
    for i in 0..200 {
        let revision = store
            .put(PutRequest {
                key: format!("w/{}", i % 7).into(),
                value: format!("{i}").into(),
                ..Default::default()
            })
            .await
            .expect("put")
            .header
            .revision;
        if i == 0 {
            first = revision;
        }
    }
    let mut watch = store
        .watch(WatchRequest::prefix("w/").from_revision(first))
        .await
        .expect("watch");
    let mut values = Vec::new();
    while values.len() < 200 {
        let events = watch.next().await.expect("open").expect("events");
        values.extend(events.into_iter().map(|e| e.kv.value));
    }
    let want: Vec<bytes::Bytes> = (0..200).map(|i| format!("{i}").into()).collect();
    assert_eq!(values, want);
}

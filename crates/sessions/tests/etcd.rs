//! The same scenarios on a real etcd (Debian's `etcd-server`), through
//! several independent clients.

use chorus_backend::conformance::EtcdProcess;
use chorus_backend::{EtcdConfig, EtcdKv};
use chorus_sessions::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_etcd_passes_the_scenarios() {
    let etcd = EtcdProcess::start().await.expect("start etcd");
    let handles: Vec<EtcdKv> = (0..3)
        .map(|_| EtcdKv::connect(EtcdConfig::new([etcd.endpoint.clone()])).expect("connect"))
        .collect();
    conformance::run(&handles, "scenarios").await;
    // A restart of the client side: new handles see the same state.
    let written = conformance::before_restart(&handles[0], "restart/").await;
    drop(handles);
    let fresh = EtcdKv::connect(EtcdConfig::new([etcd.endpoint.clone()])).expect("connect");
    conformance::after_restart(&fresh, "restart/", &written).await;
}

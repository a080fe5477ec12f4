//! The scenarios on a real etcd (Debian's etcd-server, started here).

mod scenarios;

use chorus_backend::conformance::EtcdProcess;
use chorus_backend::{EtcdConfig, EtcdKv};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_on_a_real_etcd() {
    let etcd = EtcdProcess::start().await.expect("start etcd");
    let store = EtcdKv::connect(EtcdConfig::new([etcd.endpoint.clone()])).expect("connect");
    scenarios::all(store, "etcd").await;
}

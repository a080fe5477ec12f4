mod common;

use std::time::Duration;

use chorus_node::StorageMode;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_and_apply() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("c", &[1, 2, 3]);
    let started = nodes[0]
        .start_cluster(
            "c",
            KIND,
            Default::default(),
            &servers,
            Duration::from_secs(5),
        )
        .await
        .expect("cluster forms");
    assert_eq!(started.started.len(), 3);
    let reply = nodes[1]
        .process_command::<Registry>(&servers[2], Command::Put("a".into(), 1))
        .await
        .expect("applied");
    assert_eq!(reply.reply, None);
    assert_eq!(reply.leader, started.leader);
}

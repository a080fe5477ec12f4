//! 1,000 clusters × 3 members across 3 nodes start, elect and serve, then
//! go quiet: an idle cluster runs no timers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use chorus_node::StorageMode;
use common::*;

const CLUSTERS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_clusters_start_elect_serve_and_quiesce() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let mut starts = tokio::task::JoinSet::new();
    let mut leaders = Vec::with_capacity(CLUSTERS);
    for c in 0..CLUSTERS {
        let node = nodes[c % 3].clone();
        let name = format!("c{c}");
        let servers = members(&name, &[1, 2, 3]);
        starts.spawn(async move {
            node.start_cluster(&name, KIND, Bytes::new(), &servers, Duration::from_secs(60))
                .await
                .map(|started| (c, started.leader))
        });
        while starts.len() >= 64 {
            let joined = starts.join_next().await.expect("a start").expect("joined");
            leaders.push(joined.expect("cluster forms"));
        }
    }
    while let Some(joined) = starts.join_next().await {
        leaders.push(joined.expect("joined").expect("cluster forms"));
    }
    assert_eq!(leaders.len(), CLUSTERS);

    // Every cluster serves a write and a consistent read.
    for (c, leader) in &leaders {
        let servers = members(&format!("c{c}"), &[1, 2, 3]);
        let node = &nodes[(*c + 1) % 3];
        let written = node
            .process_command::<Registry>(&servers, Command::Put("k".into(), *c as u64))
            .await
            .expect("write");
        assert_eq!(&written.leader, leader);
        let read = node
            .consistent_query::<Registry>(&servers, Query::Get("k".into()))
            .await
            .expect("read");
        assert_eq!(read.reply, Answer::Value(Some(*c as u64)));
    }

    // Then every server goes quiet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut quiet = 0;
        let mut total = 0;
        for node in &nodes {
            for server in node.overview().await.servers {
                total += 1;
                quiet += usize::from(server.quiesced);
            }
        }
        assert_eq!(total, 3 * CLUSTERS);
        if quiet == total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{quiet} of {total} servers quiesced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in &nodes {
        let overview = node.overview().await;
        assert!(overview.peers.iter().all(|(_, up)| *up));
    }
    for node in &nodes {
        node.shutdown().await.expect("orderly shutdown");
    }
}

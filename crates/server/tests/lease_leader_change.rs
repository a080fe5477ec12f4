//! A lease's remaining time survives a leader change, end to end: etcd
//! gives every lease its full TTL again when a new leader takes over (a
//! long-standing complaint); chorus replicates keep-alives and continues
//! each deadline where the old leader left it.

mod common;

use std::time::{Duration, Instant};

use common::cluster;
use etcd_client::PutOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_ttl_survives_leader_changes() {
    let members = cluster(3).await;
    let mut client = members[0].client().await;
    let granted_at = Instant::now();
    let lease = client.lease_grant(8, None).await.unwrap().id();
    client
        .put(
            "held",
            "by-lease",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();

    // Two leader changes, ~1.5 s apart, while the lease runs.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let leader = client.status().await.unwrap().leader();
        let target = members
            .iter()
            .map(|m| m.id())
            .find(|id| *id != leader)
            .unwrap();
        // move_leader must reach the leader: ask every member.
        let mut moved = false;
        for member in &members {
            if member.client().await.move_leader(target).await.is_ok() {
                moved = true;
                break;
            }
        }
        assert!(moved, "leadership moved to {target:x}");
    }
    let elapsed = granted_at.elapsed().as_secs_f64();
    let ttl = client.lease_time_to_live(lease, None).await.unwrap().ttl();
    // etcd would report the full 8 s again here.
    assert!(
        (ttl as f64) <= 8.0 - elapsed + 1.0 && ttl < 8,
        "after {elapsed:.1} s and two leader changes the lease reports {ttl} s left"
    );

    // And it expires on schedule: gone within its TTL plus the skew bound
    // (0.5 s) and a timer round, not a full TTL after the last change.
    let deadline = granted_at + Duration::from_millis(8_000 + 500 + 1_500);
    loop {
        let gone = client.get("held", None).await.unwrap().kvs().is_empty();
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the key outlived its lease: {:.1} s after the grant",
            granted_at.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired_after = granted_at.elapsed();
    assert!(
        expired_after >= Duration::from_secs(8),
        "expired early: {expired_after:?}"
    );
    println!("lease of 8 s across two leader changes expired after {expired_after:?}");
}

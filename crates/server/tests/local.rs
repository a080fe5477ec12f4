//! `chorus local --nodes 3`: three processes on etcd's local ports that
//! form a cluster, serve clients, and all stop on SIGTERM.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Local(Child);

impl Drop for Local {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for. SIGTERM,
        // so that it stops its members too.
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_starts_a_three_member_cluster_and_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = Local(
        Command::new(env!("CARGO_BIN_EXE_chorus"))
            .args(["local", "--nodes", "3", "--data-dir"])
            .arg(dir.path())
            .spawn()
            .expect("start chorus local"),
    );
    let endpoints = ["127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        if let Ok(mut client) = etcd_client::Client::connect(endpoints, None).await {
            if client.put("hello", "world", None).await.is_ok() {
                break client;
            }
        }
        assert!(Instant::now() < deadline, "chorus local never served a put");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Members publish their names once a leader is known.
    loop {
        let members = client.member_list().await.expect("member list");
        let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
        names.sort_unstable();
        if names == ["node1", "node2", "node3"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members never published names: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every member answers, and agrees on the value (linearizable reads).
    for endpoint in endpoints {
        let mut one = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect");
        let got = one.get("hello", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"world", "{endpoint}");
    }
    // SIGTERM to `chorus local` stops every member cleanly.
    let pid = libc::pid_t::try_from(local.0.id()).expect("pid fits");
    // SAFETY: as in Drop.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = local.0.wait().expect("chorus local exits");
    assert!(status.success(), "{status}");
    for endpoint in endpoints {
        assert!(
            std::net::TcpStream::connect(endpoint).is_err(),
            "{endpoint} still listening after chorus local stopped"
        );
    }
}

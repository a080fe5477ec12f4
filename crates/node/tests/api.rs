//! Every public call of [`Node`], with ra's semantics, on several nodes in
//! one process over loopback TCP. Each test builds its own nodes so a
//! failure points at one feature. No timing assertions: conditions are
//! awaited with generous deadlines.

mod common;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use chorus_node::{
    new_uid, CallError, ClusterStarted, Node, NodeConfig, PipelineEvent, ServerRef, StartError,
    StorageMode, TransferResult,
};
use chorus_raft::{ApplyMeta, Effects, Machine, Membership, NodeId, Priority, RestoreError, Role};
use common::*;

/// How long any awaited condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A second, tiny machine type: for a kind registered on some nodes only,
/// and for `local_query_with`'s type check.
#[derive(Default)]
struct Counter(u64);

impl Machine for Counter {
    type Command = u64;
    type Reply = u64;
    type Query = ();
    type QueryReply = u64;
    type Message = ();

    fn apply(&mut self, _: &ApplyMeta, add: u64, _: &mut Effects<Self>) -> u64 {
        self.0 += add;
        self.0
    }

    fn query(&self, _: &()) -> u64 {
        self.0
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        let bytes = data.try_into().map_err(|_| RestoreError {
            reason: "a counter is 8 bytes".into(),
        })?;
        Ok(Counter(u64::from_le_bytes(bytes)))
    }
}

const COUNTER: &str = "counter";

fn register_counter(node: &Node) {
    node.register_machine(COUNTER, |_config: &[u8]| Ok(Counter::default()));
}

/// Retries `attempt` until it yields a value.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not done in {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node hosting `server` (nodes are numbered from 1).
fn host<'a>(nodes: &'a [Node], server: &ServerRef) -> &'a Node {
    &nodes[server.node.0 as usize - 1]
}

async fn start(node: &Node, cluster: &str, servers: &[ServerRef]) -> ClusterStarted {
    node.start_cluster(cluster, KIND, Bytes::new(), servers, START_TIMEOUT)
        .await
        .expect("cluster forms")
}

async fn leader_of(node: &Node, servers: &[ServerRef]) -> ServerRef {
    eventually("a leader is known", || async {
        node.members(servers).await.ok().and_then(|m| m.leader)
    })
    .await
}

async fn put(node: &Node, servers: &[ServerRef], key: &str, value: u64) {
    node.process_command::<Registry>(servers, Command::Put(key.into(), value))
        .await
        .expect("put applied");
}

/// Waits until `server`'s own state holds `key = value` (local_query).
async fn sees(node: &Node, server: &ServerRef, key: &str, value: u64) {
    eventually("the server applies the put", || async {
        let reply = node
            .local_query::<Registry>(server, Query::Get(key.into()))
            .await
            .ok()?;
        (reply.reply == Answer::Value(Some(value))).then_some(())
    })
    .await
}

/// Membership changes go one at a time: retry while the previous one is
/// still in flight (ra's `cluster_change_not_permitted`).
async fn change_membership<F, Fut>(what: &str, change: F) -> chorus_node::Appended
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<chorus_node::Appended, CallError>>,
{
    try_change_membership(what, change, false)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// [`change_membership`], except that `NotLeader` (the server asked is no
/// longer the leader: nothing was appended) answers false.
async fn change_membership_or_not_leader<F, Fut>(what: &str, change: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<chorus_node::Appended, CallError>>,
{
    try_change_membership(what, change, true).await.is_ok()
}

async fn try_change_membership<F, Fut>(
    what: &str,
    mut change: F,
    not_leader_ok: bool,
) -> Result<chorus_node::Appended, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<chorus_node::Appended, CallError>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match change().await {
            Ok(appended) => return Ok(appended),
            Err(CallError::Refused(
                chorus_node::Refusal::ConfigChangeInProgress | chorus_node::Refusal::LeaderNotReady,
            )) => {}
            Err(error @ CallError::NotLeader { .. }) if not_leader_ok => return Err(error),
            Err(error) => panic!("{what}: {error}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not done in {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_cluster_needs_more_than_half() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("k", &[1, 2, 3]);

    // The kind is registered on node 1 only: 1 of 3 starts, which is not a
    // majority, so the cluster is not formed and the started one is deleted.
    register_counter(&nodes[0]);
    let failed = nodes[0]
        .start_cluster("k", COUNTER, Bytes::new(), &servers, START_TIMEOUT)
        .await
        .expect_err("1 of 3 is not a majority");
    assert_eq!(failed.members, 3);
    assert!(!failed.no_leader);
    let mut not_started: Vec<ServerRef> =
        failed.not_started.iter().map(|(s, _)| s.clone()).collect();
    not_started.sort();
    assert_eq!(not_started, servers[1..].to_vec());
    for (_, error) in &failed.not_started {
        assert_eq!(*error, StartError::NameNotRegistered(COUNTER.into()));
    }
    assert_eq!(
        nodes[0].restart_server(&servers[0]).await,
        Err(StartError::NotFound(servers[0].clone())),
        "the server that did start was deleted again"
    );

    // Registered on 2 of 3: a majority starts.
    register_counter(&nodes[1]);
    let started = nodes[0]
        .start_cluster("k", COUNTER, Bytes::new(), &servers, START_TIMEOUT)
        .await
        .expect("2 of 3 is a majority");
    assert_eq!(started.started, servers[..2].to_vec());
    assert_eq!(
        started.not_started,
        vec![(
            servers[2].clone(),
            StartError::NameNotRegistered(COUNTER.into())
        )]
    );
    assert!(started.started.contains(&started.leader));
    let reply = nodes[2]
        .process_command::<Counter>(&servers, 5)
        .await
        .expect("applied");
    assert_eq!(reply.reply, 5);
    assert_eq!(reply.leader, started.leader);

    // ra: retry the missing server later with start_server; it catches up.
    register_counter(&nodes[2]);
    nodes[2]
        .start_server("k", &servers[2], COUNTER, Bytes::new(), &servers)
        .await
        .expect("the missing member starts");
    eventually("the late member catches up", || async {
        let reply = nodes[2]
            .local_query::<Counter>(&servers[2], ())
            .await
            .ok()?;
        (reply.reply == 5).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_server_errors_and_membership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("m", &[1, 2]);
    start(&nodes[0], "m", &servers).await;
    put(&nodes[0], &servers, "a", 1).await;

    // start_server's refusals.
    assert_eq!(
        nodes[0]
            .start_server("m", &servers[1], KIND, Bytes::new(), &servers)
            .await,
        Err(StartError::AlreadyRunning(servers[1].clone()))
    );
    let bad = ServerRef::new("a/b", NodeId(2));
    assert_eq!(
        nodes[0]
            .start_server("m", &bad, KIND, Bytes::new(), std::slice::from_ref(&bad))
            .await,
        Err(StartError::InvalidName("a/b".into()))
    );
    let other = ServerRef::new("other", NodeId(2));
    assert_eq!(
        nodes[0]
            .start_server(
                "o",
                &other,
                "no-such-kind",
                Bytes::new(),
                std::slice::from_ref(&other)
            )
            .await,
        Err(StartError::NameNotRegistered("no-such-kind".into()))
    );

    // A new member started outside the initial members, then added.
    let third = ServerRef::new("m-3", NodeId(3));
    nodes[0]
        .start_server("m", &third, KIND, Bytes::new(), &servers)
        .await
        .expect("a new member starts empty");
    let added = change_membership("add_member", || nodes[1].add_member(&servers, &third)).await;
    let leader = leader_of(&nodes[0], &servers).await;
    assert_eq!(added.leader, leader);
    assert!(added.index > 0);
    sees(&nodes[0], &third, "a", 1).await;
    let voters: Vec<ServerRef> = servers.iter().cloned().chain([third.clone()]).collect();
    let found = nodes[2].members(&third).await.expect("members");
    assert_eq!(found.leader, Some(leader.clone()));
    let mut listed = found.members.clone();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        listed,
        voters
            .iter()
            .map(|s| (s.clone(), Membership::Voter))
            .collect::<Vec<_>>()
    );

    // A non-voter.
    let watcher = ServerRef::new("m-watcher", NodeId(3));
    nodes[2]
        .start_server("m", &watcher, KIND, Bytes::new(), &servers)
        .await
        .expect("starts");
    change_membership("add a non-voter", || {
        nodes[0].add_member_as(&voters, &watcher, Membership::NonVoter)
    })
    .await;
    sees(&nodes[0], &watcher, "a", 1).await;
    let found = nodes[0].members(&voters).await.expect("members");
    assert!(found
        .members
        .contains(&(watcher.clone(), Membership::NonVoter)));

    // A promotable member becomes a voter once caught up.
    let promoted = ServerRef::new("m-promoted", NodeId(1));
    nodes[0]
        .start_server("m", &promoted, KIND, Bytes::new(), &servers)
        .await
        .expect("starts");
    change_membership("add a promotable member", || {
        nodes[0].add_member_as(
            &voters,
            &promoted,
            Membership::Promotable { target_index: 0 },
        )
    })
    .await;
    eventually("the promotable member is promoted", || async {
        let found = nodes[0].members(&voters).await.ok()?;
        found
            .members
            .contains(&(promoted.clone(), Membership::Voter))
            .then_some(())
    })
    .await;

    // remove_member returns once appended; the member is gone from the
    // configuration.
    let removed = change_membership("remove_member", || {
        nodes[0].remove_member(&voters, &promoted)
    })
    .await;
    assert!(removed.index > added.index);
    eventually("the removed member is gone", || async {
        let found = nodes[0].members(&voters).await.ok()?;
        (!found.members.iter().any(|(s, _)| *s == promoted)).then_some(())
    })
    .await;

    // force_delete_server: stopped and its data gone.
    nodes[1]
        .force_delete_server(&promoted)
        .await
        .expect("deleted");
    assert_eq!(
        nodes[0].restart_server(&promoted).await,
        Err(StartError::NotFound(promoted.clone()))
    );

    // leave_and_terminate: removed and stopped, data kept.
    eventually("leave_and_terminate", || async {
        match nodes[0].leave_and_terminate(&voters, &watcher).await {
            Ok(()) => Some(()),
            Err(CallError::Refused(chorus_node::Refusal::ConfigChangeInProgress)) => None,
            Err(error) => panic!("leave_and_terminate: {error}"),
        }
    })
    .await;
    assert!(matches!(
        nodes[0].local_query::<Registry>(&watcher, Query::Len).await,
        Err(CallError::NoSuchServer(_))
    ));
    assert_eq!(
        nodes[2]
            .start_server("m", &watcher, KIND, Bytes::new(), &servers)
            .await,
        Err(StartError::AlreadyExists(watcher.clone())),
        "leave_and_terminate keeps the data"
    );
    let found = nodes[0].members(&voters).await.expect("members");
    assert!(!found.members.iter().any(|(s, _)| *s == watcher));

    // leave_and_delete_server: removed and deleted.
    eventually("leave_and_delete_server", || async {
        match nodes[0].leave_and_delete_server(&voters, &third).await {
            Ok(()) => Some(()),
            Err(CallError::Refused(chorus_node::Refusal::ConfigChangeInProgress)) => None,
            Err(error) => panic!("leave_and_delete_server: {error}"),
        }
    })
    .await;
    assert_eq!(
        nodes[0].restart_server(&third).await,
        Err(StartError::NotFound(third.clone()))
    );
    let found = nodes[0].members(&servers).await.expect("members");
    let mut listed: Vec<ServerRef> = found.members.iter().map(|(s, _)| s.clone()).collect();
    listed.sort();
    assert_eq!(listed, servers);
    put(&nodes[2], &servers, "b", 2).await;

    // A stopped server's data is there: start_server refuses.
    nodes[0].stop_server(&servers[0]).await.expect("stopped");
    assert_eq!(
        nodes[0]
            .start_server("m", &servers[0], KIND, Bytes::new(), &servers)
            .await,
        Err(StartError::AlreadyExists(servers[0].clone()))
    );
    assert_eq!(
        nodes[1].stop_server(&servers[0]).await,
        Err(CallError::NoSuchServer(servers[0].clone())),
        "stopping a stopped server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_stop_and_after_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = nodes(3, dir.path(), StorageMode::Disk).await;
    let servers = members("r", &[1, 2, 3]);

    let never = ServerRef::new("never", NodeId(2));
    assert_eq!(
        nodes[0].restart_server(&never).await,
        Err(StartError::NotFound(never.clone()))
    );

    start(&nodes[0], "r", &servers).await;
    put(&nodes[0], &servers, "a", 1).await;

    // stop_server keeps the data; restart_server brings it back.
    nodes[0].stop_server(&servers[1]).await.expect("stopped");
    assert!(matches!(
        nodes[1]
            .local_query::<Registry>(&servers[1], Query::Len)
            .await,
        Err(CallError::NoSuchServer(_))
    ));
    put(&nodes[0], &servers, "b", 2).await;
    nodes[2]
        .restart_server(&servers[1])
        .await
        .expect("restarted");
    assert_eq!(
        nodes[2].restart_server(&servers[1]).await,
        Err(StartError::AlreadyRunning(servers[1].clone()))
    );
    sees(&nodes[1], &servers[1], "a", 1).await;
    sees(&nodes[1], &servers[1], "b", 2).await;

    // A node restart: same config and data dir. Servers do not restart by
    // themselves, and not without their machine registered.
    let n3 = nodes.pop().expect("three nodes");
    n3.shutdown().await.expect("clean shutdown");
    drop(n3);
    put(&nodes[0], &servers, "c", 3).await;
    let n3 = Node::start(config(3, dir.path(), StorageMode::Disk))
        .await
        .expect("node restarts");
    nodes.push(n3);
    connect(&nodes);
    wait_connected(&nodes).await;
    assert!(matches!(
        nodes[0]
            .local_query::<Registry>(&servers[2], Query::Len)
            .await,
        Err(CallError::NoSuchServer(_))
    ));
    assert_eq!(
        nodes[0].restart_server(&servers[2]).await,
        Err(StartError::NameNotRegistered(KIND.into()))
    );
    register(&nodes[2]);
    nodes[0]
        .restart_server(&servers[2])
        .await
        .expect("restarted");
    sees(&nodes[2], &servers[2], "a", 1).await;
    sees(&nodes[2], &servers[2], "c", 3).await;
    put(&nodes[2], &servers, "d", 4).await;
    for server in &servers {
        sees(&nodes[0], server, "d", 4).await;
    }
    for node in &nodes {
        node.shutdown().await.expect("clean shutdown");
    }
}

/// Snapshots (the machine releases its cursor every 1,000 entries) are
/// written off the servers' tasks and recorded; after every node restarts,
/// each server recovers from its snapshot plus the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_written_and_recovered_after_a_restart() {
    const PUTS: u64 = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let tweak = |config: &mut NodeConfig| config.snapshot_interval_entries_min = 500;
    let nodes = nodes_with(3, dir.path(), StorageMode::Disk, tweak).await;
    let servers = members("snap", &[1, 2, 3]);
    start(&nodes[0], "snap", &servers).await;
    for i in 0..PUTS {
        put(&nodes[0], &servers, &format!("k{i}"), i).await;
    }
    // Two snapshots (at 1,000 and 2,000 applied commands, plus the few
    // entries before the first command) on every member.
    for (node, server) in nodes.iter().zip(&servers) {
        let index = eventually("the member took its snapshots", || async {
            let overview = node.overview().await;
            let status = overview.servers.iter().find(|s| s.server == *server)?;
            (status.snapshot_index >= 2_000).then_some(status.snapshot_index)
        })
        .await;
        assert!(index < 2_000 + 10, "snapshot at {index}");
    }
    for node in &nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    drop(nodes);

    let nodes = nodes_with(3, dir.path(), StorageMode::Disk, tweak).await;
    for server in &servers {
        nodes[0].restart_server(server).await.expect("restarted");
    }
    for (node, server) in nodes.iter().zip(&servers) {
        let overview = node.overview().await;
        let status = overview
            .servers
            .iter()
            .find(|s| s.server == *server)
            .expect("restarted server");
        assert!(
            status.snapshot_index >= 2_000,
            "{server} recovered from snapshot {}",
            status.snapshot_index
        );
        sees(node, server, "k0", 0).await;
        sees(node, server, &format!("k{}", PUTS - 1), PUTS - 1).await;
    }
    put(&nodes[1], &servers, "after", 1).await;
    for node in &nodes {
        node.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cluster_deletes_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("d", &[1, 2, 3]);
    let started = start(&nodes[0], "d", &servers).await;
    put(&nodes[0], &servers, "a", 1).await;

    let deleted = nodes[1].delete_cluster(&servers).await.expect("deleted");
    assert_eq!(deleted.leader, started.leader);
    // Every member applies end of life, stops and deletes its data.
    eventually("every member stops", || async {
        for node in &nodes {
            if !node.overview().await.servers.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .await;
    for server in &servers {
        assert_eq!(
            nodes[0].restart_server(server).await,
            Err(StartError::NotFound(server.clone())),
            "{server}'s data is deleted"
        );
    }
    assert!(matches!(
        nodes[0]
            .process_command::<Registry>(&servers, Command::Put("b".into(), 2))
            .await,
        Err(CallError::NoSuchServer(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("q", &[1, 2, 3]);
    let started = start(&nodes[0], "q", &servers).await;
    let leader = started.leader.clone();
    let follower = servers
        .iter()
        .find(|s| **s != leader)
        .expect("a follower")
        .clone();

    // To a follower: redirected; the reply names the leader.
    let reply = nodes[0]
        .process_command::<Registry>(&follower, Command::Put("a".into(), 1))
        .await
        .expect("applied");
    assert_eq!(reply.reply, None);
    assert_eq!(reply.leader, leader);
    let reply = nodes[0]
        .process_command::<Registry>(&follower, Command::Put("a".into(), 2))
        .await
        .expect("applied");
    assert_eq!(reply.reply, Some(1), "the machine's reply comes back");

    // A list whose first entry does not exist: the next one is tried.
    let ghost = ServerRef::new("ghost", NodeId(1));
    let reply = nodes[1]
        .process_command::<Registry>(
            &[ghost.clone(), follower.clone()],
            Command::Put("b".into(), 1),
        )
        .await
        .expect("falls through to the next server");
    assert_eq!(reply.leader, leader);
    assert_eq!(
        nodes[1]
            .process_command::<Registry>(&ghost, Command::Put("c".into(), 1))
            .await,
        Err(CallError::NoSuchServer(ghost.clone()))
    );
    let remote_ghost = ServerRef::new("ghost", NodeId(3));
    assert_eq!(
        nodes[0]
            .process_command::<Registry>(&remote_ghost, Command::Put("c".into(), 1))
            .await,
        Err(CallError::NoSuchServer(remote_ghost.clone()))
    );
    let unknown_node = ServerRef::new("q-9", NodeId(9));
    assert_eq!(
        nodes[0]
            .process_command::<Registry>(&unknown_node, Command::Put("c".into(), 1))
            .await,
        Err(CallError::NodeDown(NodeId(9)))
    );

    // Queries: consistent (sees everything committed before it), leader
    // (asks the leader), local (any server, possibly stale).
    let reply = nodes[2]
        .consistent_query::<Registry>(&follower, Query::Get("a".into()))
        .await
        .expect("answered");
    assert_eq!(reply.reply, Answer::Value(Some(2)));
    assert_eq!(reply.leader, Some(leader.clone()));
    assert!(reply.index >= 3);
    let reply = nodes[2]
        .leader_query::<Registry>(&follower, Query::Len)
        .await
        .expect("answered");
    assert_eq!(reply.reply, Answer::Len(2));
    assert_eq!(reply.leader, Some(leader.clone()));
    for server in &servers {
        sees(&nodes[0], server, "b", 1).await;
    }

    // local_query_with: a closure over the machine, on this node only, of
    // the right type.
    let local = ServerRef::new("q-1", NodeId(1));
    let reply = eventually("the closure sees the puts", || async {
        let reply = nodes[0]
            .local_query_with::<Registry, _, _>(&local, |machine| machine.values.clone())
            .await
            .expect("closure runs");
        (reply.reply.len() == 2).then_some(reply)
    })
    .await;
    assert_eq!(reply.reply.get("a"), Some(&2));
    assert!(reply.index >= 3);
    assert_eq!(
        nodes[0]
            .local_query_with::<Registry, _, _>(&servers[1], |machine| machine.applied)
            .await,
        Err(CallError::NotLocal(servers[1].clone()))
    );
    assert_eq!(
        nodes[0]
            .local_query_with::<Counter, _, _>(&local, |machine| machine.0)
            .await,
        Err(CallError::WrongMachine {
            server: local.clone(),
            actual: KIND.into()
        })
    );
    assert_eq!(
        nodes[0]
            .local_query_with::<Registry, _, _>(&ghost, |machine| machine.applied)
            .await,
        Err(CallError::NoSuchServer(ghost.clone()))
    );

    // Without a quorum a command cannot be applied: the caller times out
    // (the outcome is unknown to it). The leader may first step down
    // (check-quorum, thesis §6.2), which chorus reports as LeadershipLost;
    // after that the server knows no leader and holds the command (ra),
    // so the caller times out.
    for server in servers.iter().filter(|s| **s != leader) {
        nodes[0].stop_server(server).await.expect("stopped");
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = nodes[1]
            .process_command_timeout::<Registry>(
                &leader,
                Command::Put("z".into(), 1),
                Duration::from_secs(1),
            )
            .await;
        match result {
            Err(CallError::Timeout(server)) => {
                assert_eq!(server, leader);
                break;
            }
            Err(CallError::LeadershipLost { leader: None }) if attempts < 3 => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_commands() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("p", &[1, 2, 3]);
    let leader = start(&nodes[0], "p", &servers).await.leader;
    let follower = servers
        .iter()
        .find(|s| **s != leader)
        .expect("a follower")
        .clone();
    // The caller lives on a node that does not host the leader, so events
    // cross nodes.
    let caller_node = nodes
        .iter()
        .find(|n| n.id() != leader.node)
        .expect("another node");
    let mut stream = caller_node.pipeline_stream::<Registry>();

    caller_node
        .pipeline_command::<Registry>(
            &leader,
            Command::Put("a".into(), 1),
            Some((stream.caller(), 1)),
            Priority::Normal,
        )
        .await
        .expect("sent");
    caller_node
        .pipeline_command::<Registry>(
            &leader,
            Command::Put("b".into(), 1),
            Some((stream.caller(), 2)),
            Priority::Low,
        )
        .await
        .expect("sent");
    let mut applied = Vec::new();
    while applied.len() < 2 {
        let event = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("the event decodes");
        match event {
            PipelineEvent::Applied {
                leader: from,
                replies,
            } => {
                assert_eq!(from, leader);
                applied.extend(replies);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    applied.sort();
    assert_eq!(applied, vec![(1, None), (2, None)]);

    // To a follower: rejected, naming the leader.
    caller_node
        .pipeline_command::<Registry>(
            &follower,
            Command::Put("c".into(), 1),
            Some((stream.caller(), 3)),
            Priority::Normal,
        )
        .await
        .expect("sent");
    let event = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("the event decodes");
    assert_eq!(
        event,
        PipelineEvent::Rejected {
            leader: Some(leader.clone()),
            correlation: 3
        }
    );

    // Without a correlation: applied, and nobody is told.
    caller_node
        .pipeline_command::<Registry>(&leader, Command::Put("d".into(), 4), None, Priority::Normal)
        .await
        .expect("sent");
    sees(&nodes[0], &leader, "d", 4).await;
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(quiet.is_err(), "no event without a correlation: {quiet:?}");

    // Pipelining to a server that is not there fails at once.
    let ghost = ServerRef::new("ghost", caller_node.id());
    assert_eq!(
        caller_node
            .pipeline_command::<Registry>(&ghost, Command::Put("e".into(), 1), None, Priority::Low)
            .await,
        Err(CallError::NoSuchServer(ghost.clone()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_and_overview() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    let servers = members("l", &[1, 2, 3]);
    let leader = start(&nodes[0], "l", &servers).await.leader;
    put(&nodes[0], &servers, "a", 1).await;
    let target = servers
        .iter()
        .find(|s| **s != leader)
        .expect("a follower")
        .clone();

    assert_eq!(
        nodes[0].transfer_leadership(&leader, &target).await,
        Ok(TransferResult::Started)
    );
    eventually("the target leads", || async {
        let found = nodes[1].members(&servers).await.ok()?;
        (found.leader.as_ref() == Some(&target)).then_some(())
    })
    .await;
    assert_eq!(
        nodes[2].transfer_leadership(&servers[0], &target).await,
        Ok(TransferResult::AlreadyLeader)
    );
    put(&nodes[2], &servers, "b", 2).await;

    // trigger_election on a follower: accepted; the cluster keeps working.
    let other = servers
        .iter()
        .find(|s| **s != target)
        .expect("a follower")
        .clone();
    nodes[0]
        .trigger_election(&other)
        .await
        .expect("election triggered");
    put(&nodes[1], &servers, "c", 3).await;
    for server in &servers {
        sees(&nodes[0], server, "c", 3).await;
    }

    // overview: each node hosts one server with its role, term and
    // indexes; the WAL wrote and the peers are up.
    let mut leader_terms = Vec::new();
    for node in &nodes {
        let overview = node.overview().await;
        assert_eq!(overview.node, node.id());
        assert_eq!(overview.servers.len(), 1, "{overview:?}");
        let status = &overview.servers[0];
        assert_eq!(status.server.node, node.id());
        assert_eq!(status.cluster, "l");
        assert_eq!(status.machine, KIND);
        assert!(status.term > 0);
        assert!(status.commit_index >= 4, "{status:?}");
        assert!(status.last_index >= status.commit_index);
        assert_eq!(status.members.len(), 3);
        if status.role == Role::Leader {
            leader_terms.push(status.term);
        }
        assert!(overview.wal.appends > 0, "{:?}", overview.wal);
        assert!(overview.wal.entries_appended > 0, "{:?}", overview.wal);
        assert!(overview.wal.batches > 0, "{:?}", overview.wal);
        assert!(overview.wal.syncs > 0, "{:?}", overview.wal);
        assert!(overview.wal.bytes_written > 0, "{:?}", overview.wal);
        assert!(overview.transport.frames_sent > 0);
        assert!(overview.transport.connections_opened > 0);
        assert_eq!(overview.peers.len(), 2);
        assert!(overview.peers.iter().all(|(_, up)| *up), "{overview:?}");
    }
    // Election safety: at most one leader per term (overviews are taken one
    // node at a time, so an old leader may not have heard of a new term).
    let count = leader_terms.len();
    leader_terms.sort();
    leader_terms.dedup();
    assert_eq!(leader_terms.len(), count, "two leaders in one term");

    let uid = new_uid("orders");
    assert!(uid.starts_with("ORDERS"));
    assert_ne!(uid, new_uid("orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_effects_reach_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = nodes(3, dir.path(), StorageMode::Memory).await;
    // Members on nodes 1 and 2 only: node 3 is the one that goes down.
    let servers = members("e", &[1, 2]);
    start(&nodes[0], "e", &servers).await;
    let leader = leader_of(&nodes[0], &servers).await;

    // Effect::Send: messages to a subscriber on the leader's node.
    let (subscriber, mut messages) = host(&nodes, &leader).subscribe::<Registry>();
    nodes[0]
        .process_command::<Registry>(&servers, Command::Subscribe(subscriber))
        .await
        .expect("subscribed");
    put(&nodes[2], &servers, "k", 7).await;
    let message = tokio::time::timeout(PATIENCE, messages.recv())
        .await
        .expect("a message in time")
        .expect("the channel is open");
    assert_eq!(message, ("k".to_string(), 7));

    // Effect::Timer: the timeout comes back as an applied event.
    nodes[0]
        .process_command::<Registry>(&servers, Command::SetTimer("tick".into(), 100))
        .await
        .expect("timer set");
    eventually("the timer fires", || async {
        let reply = nodes[1]
            .consistent_query::<Registry>(&servers, Query::TimersFired)
            .await
            .ok()?;
        (reply.reply == Answer::Names(vec!["tick".into()])).then_some(())
    })
    .await;

    // Effect::MonitorNode: node 3 going down is applied as an event.
    nodes[0]
        .process_command::<Registry>(&servers, Command::Monitor(3))
        .await
        .expect("monitoring");
    let n3 = nodes.pop().expect("three nodes");
    n3.shutdown().await.expect("clean shutdown");
    drop(n3);
    eventually("node 3's fall is applied", || async {
        let reply = nodes[0]
            .consistent_query::<Registry>(&servers, Query::NodeEvents)
            .await
            .ok()?;
        match reply.reply {
            Answer::Events(events) => events.contains(&(3, false)).then_some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refuses_a_foreign_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Node::start(config(1, dir.path(), StorageMode::Memory))
        .await
        .expect("starts");
    let mut foreign_config: NodeConfig = config(2, dir.path(), StorageMode::Memory);
    foreign_config.cluster_token ^= 1;
    let foreign = Node::start(foreign_config).await.expect("starts");
    let nodes = [ours, foreign];
    connect(&nodes);
    eventually("a handshake is refused", || async {
        let refused: u64 = {
            let mut total = 0;
            for node in &nodes {
                total += node.overview().await.transport.handshakes_refused;
            }
            total
        };
        (refused > 0).then_some(())
    })
    .await;
    for node in &nodes {
        let other = nodes.iter().find(|n| n.id() != node.id()).expect("two");
        assert!(!node.is_node_up(other.id()));
        assert_eq!(node.overview().await.transport.connections_opened, 0);
    }
}

/// A leader removed from its cluster steps down once the removal commits;
/// the members that stay elect a new leader within a few election
/// timeouts, even though the removed leader's node stays up (no failure
/// detector fires) and the cluster may have quiesced before the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_leaves_a_cluster_that_elects_another() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let nodes = nodes(3, dir.path(), StorageMode::Memory).await;
        let servers = members(&format!("rm{round}"), &[1, 2, 3]);
        start(&nodes[0], &format!("rm{round}"), &servers).await;
        put(&nodes[0], &servers, "k", 1).await;
        // Let the cluster go idle (and quiesce) first on some rounds.
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        // Leadership may move between asking who leads and the removal
        // (an election under load): then ask again.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let leader = loop {
            let leader = leader_of(&nodes[0], &servers).await;
            let removed = change_membership_or_not_leader("remove the leader", || {
                host(&nodes, &leader).remove_member(&servers, &leader)
            })
            .await;
            if removed {
                break leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the leader kept moving for {PATIENCE:?}"
            );
        };
        let staying: Vec<ServerRef> = servers.iter().filter(|s| **s != leader).cloned().collect();
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(10);
        loop {
            let members = tokio::time::timeout(
                Duration::from_millis(300),
                host(&nodes, &staying[0]).members(&staying),
            )
            .await;
            if let Ok(Ok(members)) = members {
                if members.leader.as_ref().is_some_and(|l| *l != leader)
                    && !members.members.iter().any(|(s, _)| *s == leader)
                {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: no new leader 10 s after removing {leader}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("round {round}: new leader after {:?}", started.elapsed());
        for node in &nodes {
            node.shutdown().await.unwrap();
        }
    }
}

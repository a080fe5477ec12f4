//! A node's configuration, with the default of every field and why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use chorus_log::LogConfig;
use chorus_raft::NodeId;

use crate::ids::NODE_ID_MAX;

/// Where a node keeps its data.
#[derive(Clone, Debug)]
pub enum StorageMode {
    /// The real file system with fsync: the default.
    Disk,
    /// An in-memory file system: nothing survives the process. For tests and
    /// for measuring the runtime without the disk (openraft's benchmark
    /// shape).
    Memory,
}

/// Configuration of one [`crate::Node`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id, unique among the nodes that talk to each other;
    /// at most [`NODE_ID_MAX`].
    pub node: NodeId,
    /// Identifies the set of nodes: a connection from a node with another
    /// token is refused (etcd's `--initial-cluster-token`).
    pub cluster_token: u64,
    /// Where to accept peer connections; `None` for a node that talks only
    /// to itself. Port 0 picks a free port ([`crate::Node::local_addr`]).
    pub listen: Option<SocketAddr>,
    /// Addresses of the other nodes. The node with the lower id dials, so
    /// each pair shares exactly one connection.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The log's settings (data dir, WAL size, segment size, ...).
    pub log: LogConfig,
    pub storage: StorageMode,
    /// Raft election timeout. Servers that were told their leader went
    /// quiet do not use it: the node failure detector starts elections.
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval while a cluster is busy.
    pub heartbeat_interval_ms: u64,
    /// How often a node sends a liveness ping to each peer (one per node
    /// pair, whatever the number of servers). Also the detector's first
    /// estimate of the interval.
    pub ping_interval_ms: u64,
    /// phi-accrual threshold at which a peer node counts as down (8 is
    /// Akka's and Cassandra's choice: about one false alarm in 10^8).
    pub phi_threshold: f64,
    /// Floor on the detector's estimated deviation; keeps a few late pings
    /// on a busy machine from looking like a crash.
    pub phi_min_std_deviation_ms: f64,
    /// Most entries the leader puts in one AppendEntries message.
    pub append_entries_max: usize,
    /// Most requests and messages a server takes from its mailbox before it
    /// acts on them (a batch: one log append, one message per follower).
    pub server_batch_max: usize,
    /// Capacity of each server's mailbox. Callers wait when it is full;
    /// Raft messages that find it full are dropped (the protocol resends).
    pub mailbox_capacity: usize,
    /// Capacity of each peer connection's outgoing queue (frames). Frames
    /// that find it full are dropped and counted.
    pub peer_queue_capacity: usize,
    /// Most bytes written to a peer connection in one system call.
    pub write_batch_bytes_max: usize,
    /// Default timeout of API calls that take none.
    pub default_timeout_ms: u64,
    /// Most entries a follower may lag before it is sent a snapshot instead.
    pub snapshot_interval_entries_min: u64,
}

impl NodeConfig {
    /// A durable node `node` storing its data in `data_dir`, with defaults.
    pub fn new(node: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            node,
            cluster_token: 0,
            listen: None,
            peers: BTreeMap::new(),
            log: LogConfig::new(data_dir),
            storage: StorageMode::Disk,
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 100,
            ping_interval_ms: 100,
            phi_threshold: 8.0,
            phi_min_std_deviation_ms: 50.0,
            append_entries_max: 4_096,
            server_batch_max: 4_096,
            mailbox_capacity: 8_192,
            peer_queue_capacity: 65_536,
            write_batch_bytes_max: 1 << 20,
            default_timeout_ms: 5_000,
            snapshot_interval_entries_min: 4_096,
        }
    }

    /// Checked once when the node starts.
    pub(crate) fn validate(&self) -> Result<(), crate::NodeError> {
        let fail = |what: &str| Err(crate::NodeError::Config(what.to_string()));
        if self.node.0 == 0 || self.node.0 > NODE_ID_MAX {
            return fail("node id must be in 1..=4294967295");
        }
        if self.peers.contains_key(&self.node) {
            return fail("peers must not include this node");
        }
        if self
            .peers
            .keys()
            .any(|peer| peer.0 == 0 || peer.0 > NODE_ID_MAX)
        {
            return fail("peer node ids must be in 1..=4294967295");
        }
        if self.ping_interval_ms == 0 || self.phi_threshold <= 0.0 {
            return fail("ping_interval_ms and phi_threshold must be positive");
        }
        if self.server_batch_max == 0 || self.mailbox_capacity == 0 {
            return fail("server_batch_max and mailbox_capacity must be positive");
        }
        if self.peer_queue_capacity == 0 || self.write_batch_bytes_max == 0 {
            return fail("peer_queue_capacity and write_batch_bytes_max must be positive");
        }
        Ok(())
    }
}

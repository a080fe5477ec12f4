//! ra's `overview/0`: what a node hosts and how its log and links are doing.

use chorus_raft::NodeId;
use serde::{Deserialize, Serialize};

use crate::rpc::ServerStatus;
use crate::transport::TransportStats;

/// A node's state for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    pub node: NodeId,
    pub servers: Vec<ServerStatus>,
    pub wal: WalOverview,
    pub transport: TransportStats,
    /// Peer nodes and whether each is believed up.
    pub peers: Vec<(NodeId, bool)>,
}

/// The shared write-ahead log's counters since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalOverview {
    pub appends: u64,
    pub entries_appended: u64,
    pub batches: u64,
    pub syncs: u64,
    pub bytes_written: u64,
    pub rollovers: u64,
    pub checkpoints: u64,
}

impl From<chorus_log::LogStats> for WalOverview {
    fn from(stats: chorus_log::LogStats) -> Self {
        WalOverview {
            appends: stats.appends,
            entries_appended: stats.entries_appended,
            batches: stats.wal_batches,
            syncs: stats.wal_syncs,
            bytes_written: stats.wal_bytes_written,
            rollovers: stats.rollovers,
            checkpoints: stats.checkpoints,
        }
    }
}

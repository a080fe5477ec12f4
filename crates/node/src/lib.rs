//! chorus-node: the runtime that hosts Raft servers (ra's "system").
//!
//! # Where it sits
//!
//! The only crate where tokio, sockets, timers and the pure core meet (see
//! `DESIGN.md`). It drives `chorus-raft` cores with `chorus-log` storage
//! and carries their messages over TCP; `chorus-kv` and users' machines run
//! on it; the `chorus` server sits on top.
//!
//! # Shape
//!
//! * A [`Node`] hosts any number of Raft servers of any registered machine
//!   types ([`Node::register_machine`]). Each server is a tokio task
//!   (`server`), not a thread; all of a node's servers share one WAL (group
//!   commit: one write and one fdatasync for every server with pending
//!   entries).
//! * One TCP connection per peer node carries every server's traffic
//!   (`transport`): a handshake refuses foreign clusters and unknown
//!   versions; frames are length-prefixed and checksummed; writes are
//!   batched across servers (`wire`, formats.md).
//! * **Idle clusters cost nothing.** Once a cluster is idle its leader
//!   quiesces (no heartbeats, no timers); liveness comes from the node's
//!   failure detector (one ping per node pair, phi-accrual), which starts
//!   elections when a leader's node goes down, as ra's servers rely on aten.
//! * The API is ra's, with typed results: [`Node::start_cluster`],
//!   [`Node::process_command`], [`Node::pipeline_command`],
//!   [`Node::consistent_query`], membership changes, leadership transfer,
//!   [`Node::overview`] and the rest.
//!
//! ```no_run
//! # async fn demo(machine_config: bytes::Bytes) -> Result<(), Box<dyn std::error::Error>> {
//! use chorus_node::{Node, NodeConfig, ServerRef};
//! use chorus_raft::NodeId;
//! # use chorus_raft::*;
//! # #[derive(Default)] struct Counter(u64);
//! # impl Machine for Counter {
//! #     type Command = u64; type Reply = u64; type Query = (); type QueryReply = u64; type Message = ();
//! #     fn apply(&mut self, _: &ApplyMeta, add: u64, _: &mut Effects<Self>) -> u64 { self.0 += add; self.0 }
//! #     fn query(&self, _: &()) -> u64 { self.0 }
//! #     fn snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
//! #     fn restore(d: &[u8]) -> Result<Self, RestoreError> {
//! #         Ok(Counter(u64::from_le_bytes(d.try_into().map_err(|_| RestoreError { reason: "len".into() })?)))
//! #     }
//! # }
//! let node = Node::start(NodeConfig::new(NodeId(1), "./data")).await?;
//! node.register_machine("counter", |_config: &[u8]| Ok(Counter::default()));
//! let members = [ServerRef::new("c1", NodeId(1))];
//! node.start_cluster("c1", "counter", machine_config, &members, std::time::Duration::from_secs(5))
//!     .await?;
//! let reply = node.process_command::<Counter>(&members[0], 5).await?;
//! assert_eq!(reply.reply, 5);
//! # Ok(()) }
//! ```

mod clock;
mod config;
mod error;
mod ids;
mod node;
mod overview;
mod rpc;
mod server;
mod storage;
mod transport;
mod wire;

pub use config::{NodeConfig, StorageMode};
pub use error::{CallError, ClusterNotFormed, NodeError, Refusal, StartError};
pub use ids::{cluster_id, new_uid, node_of, server_id, ServerRef, NODE_ID_MAX};
pub use node::{
    Appended, ClusterStarted, CommandReply, Members, Node, PipelineEvent, PipelineStream,
    QueryReply, Targets, TransferResult,
};
pub use overview::{Overview, WalOverview};
pub use rpc::{ServerRecord, ServerStatus};
pub use server::NodeMachine;
pub use transport::TransportStats;
pub use wire::{WireError, PROTOCOL_VERSION};

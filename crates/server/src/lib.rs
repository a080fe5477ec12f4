//! chorus-server: `chorus serve`, a replicated key-value store with etcd
//! v3's data model and gRPC API on chorus-node, so `etcdctl` and etcd
//! client libraries work against it unchanged.
//!
//! * [`ServeConfig`]: etcd's flags (or a TOML file with the same keys);
//!   the default is a durable single-node member on etcd's ports.
//! * [`Server`]: a running member: the key-value Raft server on its node,
//!   the etcd services (`KV`, `Watch`, `Lease`, `Cluster`,
//!   `Maintenance`), chorus's `Admin` service, and `/health` and
//!   `/metrics` on every client URL.
//!
//! Reads are linearizable (ReadIndex on the leader) unless a request asks
//! for serializable; any member serves any request (writes and
//! linearizable reads are forwarded to the leader). Errors carry etcd's
//! gRPC codes and messages. The wire format is etcd's (`proto/`,
//! docs/formats.md).

mod admin;
mod backend;
mod cluster;
pub mod config;
mod convert;
mod durable;
mod error;
mod kv;
mod lease;
mod metrics;
mod server;
mod sessions;
mod watch;

pub use backend::{KV_CLUSTER, KV_MACHINE, KV_SERVER};
pub use cluster::ETCD_API_VERSION;
pub use config::{ClusterState, ServeConfig};
pub use error::ServeError;
pub use server::Server;

/// The generated protobuf messages and gRPC stubs (clients included, for
/// embedding and tools).
pub use chorus_proto as pb;

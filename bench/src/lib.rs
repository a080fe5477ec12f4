//! chorus's benchmark harness, shared by its binaries:
//!
//! * `node-bench`: the node runtime's Raft API under load (in-process);
//! * `etcd-load`: an etcd v3 load generator built on the `etcd-client`
//!   crate, so etcd and `chorus serve` are driven by identical client code
//!   ([`load`]);
//! * `peers-bench`: starts etcd and chorus side by side on this machine,
//!   runs `etcd-load`'s workloads against both and writes the comparison
//!   table for docs/benchmarks.md.

pub mod load;

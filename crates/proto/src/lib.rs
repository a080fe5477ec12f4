//! chorus-proto: the gRPC wire format, generated from the `.proto` files
//! in `proto/` (documented in `docs/formats.md`).
//!
//! # Where it sits
//!
//! Below everything that speaks gRPC: the `chorus` server serves these
//! services, and chorus-backend's etcd backend calls them on any etcd v3
//! endpoint. The files are compiled by protox, a protobuf compiler in
//! Rust, so building chorus needs no `protoc`.
//!
//! * [`mvccpb`] and [`etcdserverpb`]: etcd v3's packages, with etcd's
//!   message, field and service names and numbers, so every etcd client
//!   speaks to chorus and chorus speaks to etcd.
//! * [`admin`]: chorus's own administration service (`chorus.admin.v1`).
//! * [`sessions`]: client sessions, connections and cluster state
//!   documents (`chorus.sessions.v1`, crate chorus-sessions).
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod admin {
    tonic::include_proto!("chorus.admin.v1");
}
pub mod sessions {
    tonic::include_proto!("chorus.sessions.v1");
}

//! The errors a request can get, with etcd's messages where etcd has one.
//!
//! Every one of them is deterministic: replicas applying the same command
//! reach the same error, so an error reply is part of the replicated
//! outcome, not a fault.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a request was refused. The messages are etcd's (`rpctypes`), so a
/// gRPC layer can pass them through unchanged.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// The revision asked for is older than the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compacted revision (etcd's watch response reports it).
        compact_revision: i64,
    },
    /// The revision asked for is newer than the store's revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put with `ignore_value` also gave a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` also gave a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// Two puts of one key, or a put inside a deleted range, in one txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// More operations in one txn level than `txn_ops_max`, or more than
    /// [`crate::TXN_OPS_TOTAL_MAX`] in the whole txn.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A txn sent down the read path holds a write (chorus's own error:
    /// etcd routes such a txn through consensus instead).
    #[error("chorus: a txn with writes cannot be served as a read")]
    TxnNotReadOnly,
}

//! chorus-backend: the [`KvBackend`] trait and its two backends.
//!
//! # Where it sits
//!
//! chorus-durable and chorus-sessions keep all their state in a
//! transactional, ordered key-value store with watches and leases: etcd
//! v3's data model. They reach it through [`KvBackend`], so one program
//! can start on the embedded store and later point the same code at an
//! existing distributed store (see `DESIGN.md`):
//!
//! * [`EmbeddedKv`] (the default, no setup): the chorus-kv machine in a
//!   Raft cluster hosted by a chorus-node [`Node`](chorus_node::Node) —
//!   a single-node store of its own in a directory
//!   ([`EmbeddedKv::open`]), or the key-value server of a running
//!   `chorus serve` member ([`EmbeddedKv::attach`]).
//! * [`EtcdKv`]: any etcd v3 endpoint over gRPC — a real etcd cluster or
//!   `chorus serve` itself.
//!
//! Requests and responses are chorus-kv's etcd-shaped types (re-exported
//! here), so both backends carry etcd's semantics unchanged: every write
//! is one revision, txns compare and act atomically, reads are
//! linearizable, leases expire their keys, watches deliver every change
//! in revision order from any revision not yet compacted.
//!
//! Every backend runs the same conformance suite (feature
//! `conformance`, module `conformance`).
//!
//! # Errors and retries
//!
//! [`BackendError`] says whether a failed write may have happened:
//! [`BackendError::Unavailable`] means it did not (retrying is safe),
//! [`BackendError::Indeterminate`] means its outcome is unknown (it may
//! commit later), and [`BackendError::Kv`] is the store's deterministic
//! refusal. Callers that must not apply a write twice make it
//! conditional (a txn comparing a revision) and retry that.
//!
//! ```no_run
//! use chorus_backend::{EmbeddedKv, KvBackend, PutRequest};
//!
//! # async fn demo() -> Result<(), chorus_backend::BackendError> {
//! let store = EmbeddedKv::open("./state").await?;
//! store
//!     .put(PutRequest { key: "greeting".into(), value: "hello".into(), ..Default::default() })
//!     .await?;
//! let found = store.get("greeting").await?;
//! assert_eq!(found.map(|kv| kv.value), Some("hello".into()));
//! store.shutdown().await?;
//! # Ok(())
//! # }
//! ```
use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;

#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
mod error;
mod etcd;

pub use chorus_kv::{
    prefix_end, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse,
    Event, EventKind, KeyRange, KeyValue, KvError, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
pub use embedded::{
    open_kv_server, pull_events, register_kv_machine, EmbeddedConfig, EmbeddedKv, KvServerOpened,
    Pulled, KV_CLUSTER, KV_MACHINE, KV_SERVER,
};
pub use error::BackendError;
pub use etcd::{EtcdConfig, EtcdKv};

/// Batches a watch buffers before its producer waits for the consumer:
/// a slow consumer slows its own watch, never memory.
pub const WATCH_BUFFER_BATCHES: usize = 64;

/// A transactional, ordered key-value store with watches and leases, in
/// etcd v3's model. Reads are linearizable. Cloning is cheap (a handle).
///
/// Methods return `Send` futures so callers can spawn them; the trait is
/// used as a generic bound (`S: KvBackend`), which costs no boxing.
pub trait KvBackend: Clone + Send + Sync + 'static {
    /// Reads keys (linearizable).
    fn range(
        &self,
        request: RangeRequest,
    ) -> impl Future<Output = Result<RangeResponse, BackendError>> + Send;

    fn put(
        &self,
        request: PutRequest,
    ) -> impl Future<Output = Result<PutResponse, BackendError>> + Send;

    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> impl Future<Output = Result<DeleteRangeResponse, BackendError>> + Send;

    /// If every compare holds, runs `success`, else `failure`: atomically,
    /// at one revision.
    fn txn(
        &self,
        request: TxnRequest,
    ) -> impl Future<Output = Result<TxnResponse, BackendError>> + Send;

    /// Grants a lease of `ttl_s` seconds (the store may raise it to its
    /// minimum); keys put with its id are deleted when it expires.
    fn lease_grant(
        &self,
        ttl_s: i64,
    ) -> impl Future<Output = Result<LeaseGrantResponse, BackendError>> + Send;

    /// Revokes a lease and deletes its keys. `Kv(LeaseNotFound)` if it
    /// does not exist.
    fn lease_revoke(&self, id: i64) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Renews a lease to its full TTL. `Kv(LeaseNotFound)` if it has
    /// expired or never existed.
    fn lease_keep_alive(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<LeaseKeepAliveResponse, BackendError>> + Send;

    /// A lease's remaining TTL (`ttl` is -1 when it does not exist).
    fn lease_time_to_live(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<LeaseTimeToLiveResponse, BackendError>> + Send;

    /// Watches a key range: every change from `start_revision` on, in
    /// revision order, all events of one revision in one batch.
    fn watch(
        &self,
        request: WatchRequest,
    ) -> impl Future<Output = Result<Watch, BackendError>> + Send;

    /// The key's current value, if it exists.
    fn get(
        &self,
        key: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<Option<KeyValue>, BackendError>> + Send {
        let request = RangeRequest {
            key: key.into(),
            ..Default::default()
        };
        async move { Ok(self.range(request).await?.kvs.into_iter().next()) }
    }

    /// Every key starting with `prefix`, in key order, with the revision
    /// they were read at.
    fn get_prefix(
        &self,
        prefix: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<RangeResponse, BackendError>> + Send {
        let key: Bytes = prefix.into();
        let request = RangeRequest {
            range_end: prefix_end(&key),
            key,
            ..Default::default()
        };
        self.range(request)
    }
}

/// What to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Bytes,
    /// As in [`RangeRequest::range_end`]: empty watches `key` alone.
    pub range_end: Bytes,
    /// The first revision to deliver; `<= 0` means changes after now.
    pub start_revision: i64,
    /// Deliver each event's previous key-value.
    pub prev_kv: bool,
}

impl WatchRequest {
    /// Watches every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> WatchRequest {
        let key: Bytes = prefix.into();
        WatchRequest {
            range_end: prefix_end(&key),
            key,
            ..Default::default()
        }
    }

    /// This request starting at `revision`.
    pub fn from_revision(mut self, revision: i64) -> WatchRequest {
        self.start_revision = revision;
        self
    }
}

/// A running watch. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watch {
    batches: mpsc::Receiver<Result<Vec<Event>, BackendError>>,
}

impl Watch {
    /// The next batch of events (never empty, all of one or more whole
    /// revisions, in order). An `Err` ends the watch: the next call
    /// returns `None`. `Kv(Compacted)` means the watch asked for (or fell
    /// behind to) a revision the store no longer has.
    pub async fn next(&mut self) -> Option<Result<Vec<Event>, BackendError>> {
        self.batches.recv().await
    }

    /// A watch fed through `batches`, for [`KvBackend`] implementations:
    /// their producer sends the batches in order, ends with at most one
    /// `Err`, and stops when the receiver is dropped (the caller's watch
    /// was dropped, which cancels it).
    pub fn new(batches: mpsc::Receiver<Result<Vec<Event>, BackendError>>) -> Watch {
        Watch { batches }
    }
}

/// Either backend, chosen at run time (from a configuration file, say).
#[derive(Clone, Debug)]
pub enum AnyBackend {
    Embedded(EmbeddedKv),
    Etcd(EtcdKv),
}

/// Forwards one call to whichever backend an [`AnyBackend`] holds.
macro_rules! forward {
    ($self:ident, $method:ident($($arg:ident),*)) => {
        match $self {
            AnyBackend::Embedded(backend) => backend.$method($($arg),*).await,
            AnyBackend::Etcd(backend) => backend.$method($($arg),*).await,
        }
    };
}

impl KvBackend for AnyBackend {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, BackendError> {
        forward!(self, range(request))
    }

    async fn put(&self, request: PutRequest) -> Result<PutResponse, BackendError> {
        forward!(self, put(request))
    }

    async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, BackendError> {
        forward!(self, delete_range(request))
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, BackendError> {
        forward!(self, txn(request))
    }

    async fn lease_grant(&self, ttl_s: i64) -> Result<LeaseGrantResponse, BackendError> {
        forward!(self, lease_grant(ttl_s))
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), BackendError> {
        forward!(self, lease_revoke(id))
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, BackendError> {
        forward!(self, lease_keep_alive(id))
    }

    async fn lease_time_to_live(&self, id: i64) -> Result<LeaseTimeToLiveResponse, BackendError> {
        forward!(self, lease_time_to_live(id))
    }

    async fn watch(&self, request: WatchRequest) -> Result<Watch, BackendError> {
        forward!(self, watch(request))
    }
}

//! [`Unsure`]: a store whose answers to chosen enqueues are lost, as when
//! leadership changes or a connection breaks after a txn was sent. It
//! wraps a real store and injects only that fault: the txn is applied or
//! not, something else may happen meanwhile, and the publisher hears
//! `Indeterminate` either way.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chorus_backend::{
    BackendError, DeleteRangeRequest, DeleteRangeResponse, KvBackend, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, TxnResponse, Watch, WatchRequest,
};

/// Work done on the store between the lost txn and its `Indeterminate`.
pub type Meanwhile = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What happens to one enqueue txn.
pub struct Fault {
    /// Whether the store applies the txn before its answer is lost.
    pub apply: bool,
    pub meanwhile: Option<Meanwhile>,
}

/// A store whose next enqueues meet the queued [`Fault`]s, in order.
#[derive(Clone)]
pub struct Unsure<B> {
    inner: B,
    faults: Arc<Mutex<VecDeque<Fault>>>,
}

impl<B: KvBackend> Unsure<B> {
    pub fn new(inner: B) -> Unsure<B> {
        Unsure {
            inner,
            faults: Arc::default(),
        }
    }

    /// The next enqueue txn meets `fault`.
    pub fn next_enqueue(&self, fault: Fault) {
        self.faults.lock().expect("faults").push_back(fault);
    }

    /// Faults that have not struck yet.
    pub fn pending(&self) -> usize {
        self.faults.lock().expect("faults").len()
    }
}

/// An enqueue is the txn that puts a tenant's queue counter (`<tenant>\0n`).
fn is_enqueue(request: &TxnRequest) -> bool {
    request
        .success
        .iter()
        .any(|op| matches!(op, RequestOp::Put(put) if put.key.ends_with(b"\0n")))
}

impl<B: KvBackend> KvBackend for Unsure<B> {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, BackendError> {
        self.inner.range(request).await
    }

    async fn put(&self, request: PutRequest) -> Result<PutResponse, BackendError> {
        self.inner.put(request).await
    }

    async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, BackendError> {
        self.inner.delete_range(request).await
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, BackendError> {
        let fault = if is_enqueue(&request) {
            self.faults.lock().expect("faults").pop_front()
        } else {
            None
        };
        let Some(fault) = fault else {
            return self.inner.txn(request).await;
        };
        if fault.apply {
            self.inner.txn(request).await?;
        }
        if let Some(meanwhile) = fault.meanwhile {
            meanwhile().await;
        }
        Err(BackendError::Indeterminate(
            "injected: the answer was lost".into(),
        ))
    }

    async fn lease_grant(&self, ttl_s: i64) -> Result<LeaseGrantResponse, BackendError> {
        self.inner.lease_grant(ttl_s).await
    }

    async fn lease_revoke(&self, id: i64) -> Result<(), BackendError> {
        self.inner.lease_revoke(id).await
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, BackendError> {
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_time_to_live(&self, id: i64) -> Result<LeaseTimeToLiveResponse, BackendError> {
        self.inner.lease_time_to_live(id).await
    }

    async fn watch(&self, request: WatchRequest) -> Result<Watch, BackendError> {
        self.inner.watch(request).await
    }
}

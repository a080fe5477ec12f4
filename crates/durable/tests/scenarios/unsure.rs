//! [`Unsure`]: a store whose answers to chosen enqueues are lost, as when
//! leadership changes or a connection breaks after a txn was sent. It
//! wraps a real store and injects only that fault: the txn is applied or
//! not, something else may happen meanwhile, and the publisher hears
//! `Indeterminate` either way. On request its watches break too
//! ([`Unsure::break_watches`]), as a watch stream does when its member
//! goes away, and resuming one is refused every other time as if the
//! store had compacted the revisions it asks for.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chorus_backend::{
    BackendError, DeleteRangeRequest, DeleteRangeResponse, KvBackend, KvError, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, TxnResponse, Watch, WatchRequest,
};
use tokio::sync::mpsc;

/// Work done on the store between the lost txn and its `Indeterminate`.
pub type Meanwhile = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What happens to one enqueue txn.
pub struct Fault {
    /// Whether the store applies the txn before its answer is lost.
    pub apply: bool,
    pub meanwhile: Option<Meanwhile>,
    /// The answer is not lost but late: the applied txn's own answer
    /// arrives after `meanwhile` (with `apply` only).
    pub late: bool,
}

/// A store whose next enqueues meet the queued [`Fault`]s, in order.
#[derive(Clone)]
pub struct Unsure<B> {
    inner: B,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    watches: Arc<Mutex<WatchFaults>>,
}

/// How watches opened through an [`Unsure`] fail.
#[derive(Default)]
struct WatchFaults {
    /// Batches a watch delivers before it breaks; `None`: it does not.
    break_after: Option<usize>,
    /// Watches opened at a given revision so far (every other one is
    /// refused).
    resumed: u64,
    /// Breaks and refusals so far.
    struck: u64,
}

impl<B: KvBackend> Unsure<B> {
    pub fn new(inner: B) -> Unsure<B> {
        Unsure {
            inner,
            faults: Arc::default(),
            watches: Arc::default(),
        }
    }

    /// The next enqueue txn meets `fault`.
    pub fn next_enqueue(&self, fault: Fault) {
        self.faults.lock().expect("faults").push_back(fault);
    }

    /// From now on every watch breaks (a transient error) after `batches`
    /// batches, and every other watch from a given revision is refused as
    /// compacted.
    pub fn break_watches(&self, batches: usize) {
        self.watches.lock().expect("watch faults").break_after = Some(batches);
    }

    /// Watch breaks and refusals so far.
    pub fn watch_faults(&self) -> u64 {
        self.watches.lock().expect("watch faults").struck
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
        let answer = if fault.apply {
            Some(self.inner.txn(request).await?)
        } else {
            None
        };
        if let Some(meanwhile) = fault.meanwhile {
            meanwhile().await;
        }
        if let (true, Some(answer)) = (fault.late, answer) {
            return Ok(answer);
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
        // What this watch meets, decided before any await.
        let fault = {
            let mut faults = self.watches.lock().expect("watch faults");
            faults.break_after.map(|break_after| {
                let refuse = request.start_revision > 0 && {
                    faults.resumed += 1;
                    faults.resumed.is_multiple_of(2)
                };
                if refuse {
                    faults.struck += 1;
                }
                (break_after, refuse)
            })
        };
        let break_after = match fault {
            None => return self.inner.watch(request).await,
            Some((_, true)) => {
                return Err(BackendError::Kv(KvError::Compacted {
                    compact_revision: request.start_revision,
                }))
            }
            Some((break_after, false)) => break_after,
        };
        let mut inner = self.inner.watch(request).await?;
        let watches = Arc::clone(&self.watches);
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..break_after {
                let Some(batch) = inner.next().await else {
                    return;
                };
                if sender.send(batch).await.is_err() {
                    return;
                }
            }
            watches.lock().expect("watch faults").struck += 1;
            let broken = BackendError::Unavailable("injected: the watch broke".into());
            let _ = sender.send(Err(broken)).await;
        });
        Ok(Watch::new(receiver))
    }
}

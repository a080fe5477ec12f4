//! Small constructors for the txn pieces every operation is built from,
//! and retry of transient store errors.

use std::time::Duration;

use bytes::Bytes;
use chorus_backend::{
    prefix_end, BackendError, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue,
    PutRequest, RangeRequest, RequestOp, ResponseOp, TxnResponse,
};

use crate::error::Error;

/// First wait after a transient store error, doubled up to
/// [`BACKOFF_MAX`]: the store is electing a leader or unreachable.
pub const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest wait between retries of a transient store error.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub fn put(key: Bytes, value: Bytes) -> RequestOp {
    RequestOp::Put(PutRequest {
        key,
        value,
        ..Default::default()
    })
}

pub fn put_leased(key: Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp::Put(PutRequest {
        key,
        value,
        lease,
        ..Default::default()
    })
}

pub fn delete(key: Bytes) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key,
        ..Default::default()
    })
}

pub fn delete_prefix(prefix: Bytes) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        ..Default::default()
    })
}

pub fn get(key: Bytes) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key,
        ..Default::default()
    })
}

/// The first `limit` keys under `prefix`, in key order.
pub fn first(prefix: Bytes, limit: i64) -> RequestOp {
    RequestOp::Range(RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        limit,
        ..Default::default()
    })
}

/// The key's `mod_revision` is `revision` (0: the key does not exist).
pub fn mod_is(key: Bytes, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Mod(revision),
        key,
        range_end: Bytes::new(),
    }
}

/// The key's `create_revision` is `revision` (a fencing token).
pub fn created_at(key: Bytes, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Create(revision),
        key,
        range_end: Bytes::new(),
    }
}

/// The key does not exist.
pub fn absent(key: Bytes) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
        key,
        range_end: Bytes::new(),
    }
}

/// The key exists.
pub fn present(key: Bytes) -> Compare {
    Compare {
        result: CompareResult::Greater,
        target: CompareTarget::Version(0),
        key,
        range_end: Bytes::new(),
    }
}

/// The keys of the `index`th response of a txn (a Range op).
pub fn range_kvs(response: &TxnResponse, index: usize) -> Result<&[KeyValue], Error> {
    match response.responses.get(index) {
        Some(ResponseOp::Range(range)) => Ok(&range.kvs),
        _ => Err(Error::Backend(BackendError::Failed(format!(
            "txn response {index} is not the range it asked for"
        )))),
    }
}

/// The single key of the `index`th response, if it exists.
pub fn range_one(response: &TxnResponse, index: usize) -> Result<Option<&KeyValue>, Error> {
    Ok(range_kvs(response, index)?.first())
}

/// Waits before retrying a transient error; returns the next wait.
pub async fn backoff(wait: Duration) -> Duration {
    tokio::time::sleep(wait).await;
    (wait * 2).min(BACKOFF_MAX)
}

/// Runs a read (or a write that is safe to repeat, such as a
/// compare-guarded txn whose caller re-checks the outcome) until it stops
/// failing transiently.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut wait = BACKOFF_MIN;
    loop {
        match attempt().await {
            Err(error) if error.is_transient() => wait = backoff(wait).await,
            other => return other.map_err(Error::Backend),
        }
    }
}

/// Sends a write until it stops failing with `Unavailable` (which means
/// it did not happen). `Indeterminate` is returned: the caller cannot
/// tell whether it took effect and must not simply repeat it.
pub async fn retrying_unavailable<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut wait = BACKOFF_MIN;
    loop {
        match attempt().await {
            Err(BackendError::Unavailable(_)) => wait = backoff(wait).await,
            other => return other.map_err(Error::Backend),
        }
    }
}

//! What an operator sees of a durable server (the admin HTTP route):
//! sizes and counts, read in one txn, without decoding user data.

use chorus_backend::{prefix_end, KvBackend, RangeRequest, RequestOp, TxnRequest};
use serde::Serialize;

use crate::error::Error;
use crate::format::Keys;
use crate::ops;
use crate::registry::Registry;

/// One durable server's figures at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TenantStats {
    pub tenant: String,
    /// Whether the state exists (false: never started, or killed).
    pub exists: bool,
    /// The stored state record's size in bytes.
    pub state_bytes: u64,
    pub queue_depth: u64,
    pub dead_letters: u64,
    /// Calls whose callers wait (or whose replies wait to be taken).
    pub waiting_calls: u64,
    /// Whether a message holds the lock.
    pub locked: bool,
    /// The store revision the figures were read at.
    pub revision: i64,
}

/// A registered server and its figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegisteredStats {
    pub name: String,
    pub server_type: String,
    #[serde(flatten)]
    pub stats: TenantStats,
}

fn count(prefix: bytes::Bytes) -> RequestOp {
    RequestOp::Range(RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        count_only: true,
        ..Default::default()
    })
}

/// The figures of the server in `tenant`.
pub async fn tenant_stats<B: KvBackend>(backend: &B, tenant: &str) -> Result<TenantStats, Error> {
    let keys = Keys::new(tenant)?;
    let request = TxnRequest {
        compare: Vec::new(),
        success: vec![
            ops::get(keys.state()),
            count(keys.queue_prefix()),
            count(keys.dead_prefix()),
            count(keys.waiter_prefix()),
            RequestOp::Range(RangeRequest {
                key: keys.lock(),
                count_only: true,
                ..Default::default()
            }),
        ],
        failure: Vec::new(),
    };
    let response = ops::retrying(|| backend.txn(request.clone())).await?;
    let counted = |index: usize| -> Result<u64, Error> {
        match response.responses.get(index) {
            Some(chorus_backend::ResponseOp::Range(range)) => Ok(range.count.max(0) as u64),
            _ => Err(Error::Backend(chorus_backend::BackendError::Failed(
                "txn response is not the count it asked for".into(),
            ))),
        }
    };
    let state = ops::range_one(&response, 0)?;
    Ok(TenantStats {
        tenant: tenant.to_string(),
        exists: state.is_some(),
        state_bytes: state.map_or(0, |kv| kv.value.len() as u64),
        queue_depth: counted(1)?,
        dead_letters: counted(2)?,
        waiting_calls: counted(3)?,
        locked: counted(4)? > 0,
        revision: response.header.revision,
    })
}

/// Every registered server with its figures, by name.
pub async fn registered_stats<B: KvBackend>(backend: &B) -> Result<Vec<RegisteredStats>, Error> {
    let mut all = Vec::new();
    for (name, registration) in Registry::new(backend.clone()).list().await? {
        let stats = tenant_stats(backend, &registration.tenant).await?;
        all.push(RegisteredStats {
            name,
            server_type: registration.server_type,
            stats,
        });
    }
    Ok(all)
}

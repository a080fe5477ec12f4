//! Checking, planning and executing writes (single puts and deletes are
//! one-operation transactions).
//!
//! A write goes through three steps, so it is all-or-nothing:
//!
//! 1. **check** the request alone (etcd's gRPC-side checks: empty keys,
//!    `ignore_*` misuse, too many operations, duplicate keys);
//! 2. **plan** it against the state before the write: evaluate every
//!    compare (nested ones too, as etcd's `compareToPath` does), resolve
//!    `ignore_value`/`ignore_lease`, check leases and read revisions. Any
//!    error stops the write here, before anything changed;
//! 3. **execute** the plan at one new revision. Execution cannot fail.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::api::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
    TxnResponse,
};
use crate::error::KvError;
use crate::lease::Leases;
use crate::mvcc::{Live, Store, Write};
use crate::range::KeyRange;

/// Most operations in one txn, counting every level (compares, success
/// and failure ops). etcd bounds only each level (`txn_ops_max`) and the
/// request's size; since the budget of a nested level is what its parent
/// left, one level's bound alone still admits exponentially many ops in a
/// tree. This bounds one entry's validation and apply time.
pub const TXN_OPS_TOTAL_MAX: usize = 4096;

pub(crate) fn check_range(request: &RangeRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

pub(crate) fn check_put(request: &PutRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

pub(crate) fn check_delete(request: &DeleteRangeRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` and `checkIntervals`.
pub(crate) fn check_txn(request: &TxnRequest, ops_max: usize) -> Result<(), KvError> {
    let mut total = 0;
    check_txn_level(request, ops_max, &mut total)?;
    footprint(&request.success)?;
    footprint(&request.failure)?;
    Ok(())
}

/// A level may hold `budget` ops in each of its lists; the levels below
/// share what it leaves (etcd: `maxTxnOps - opc`).
fn check_txn_level(request: &TxnRequest, budget: usize, total: &mut usize) -> Result<(), KvError> {
    let level = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if level > budget {
        return Err(KvError::TooManyOps);
    }
    *total += request.compare.len() + request.success.len() + request.failure.len();
    if *total > TXN_OPS_TOTAL_MAX {
        return Err(KvError::TooManyOps);
    }
    if request.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in request.success.iter().chain(&request.failure) {
        match op {
            RequestOp::Range(range) => check_range(range)?,
            RequestOp::Put(put) => check_put(put)?,
            RequestOp::DeleteRange(delete) => check_delete(delete)?,
            RequestOp::Txn(txn) => check_txn_level(txn, budget - level, total)?,
        }
    }
    Ok(())
}

/// The keys a list of ops may put and the ranges it may delete.
#[derive(Default)]
struct Footprint {
    puts: Vec<Bytes>,
    deletes: Vec<KeyRange>,
}

/// etcd's duplicate-key rule: within one list of ops, no two ops put the
/// same key and no op puts a key another op deletes. A nested txn counts
/// as one op whose footprint is both its branches (they exclude each
/// other, so a key put in both is fine). etcd checks a nested txn's puts
/// only against deletes of ops before it; this check is symmetric.
fn footprint(ops: &[RequestOp]) -> Result<Footprint, KvError> {
    let mut parts = Vec::with_capacity(ops.len());
    for op in ops {
        parts.push(match op {
            RequestOp::Range(_) => Footprint::default(),
            RequestOp::Put(put) => Footprint {
                puts: vec![put.key.clone()],
                deletes: Vec::new(),
            },
            RequestOp::DeleteRange(delete) => Footprint {
                puts: Vec::new(),
                deletes: vec![KeyRange::new(delete.key.clone(), delete.range_end.clone())],
            },
            RequestOp::Txn(txn) => {
                let mut both = footprint(&txn.success)?;
                let failure = footprint(&txn.failure)?;
                both.puts.extend(failure.puts);
                both.deletes.extend(failure.deletes);
                both
            }
        });
    }
    let mut put_by: BTreeMap<Bytes, usize> = BTreeMap::new();
    for (op, part) in parts.iter().enumerate() {
        for key in &part.puts {
            if let Some(other) = put_by.insert(key.clone(), op) {
                if other != op {
                    return Err(KvError::DuplicateKey);
                }
            }
        }
    }
    for (op, part) in parts.iter().enumerate() {
        for deleted in &part.deletes {
            let Some((start, end)) = deleted.bounds() else {
                continue;
            };
            let mut hit = put_by.range::<[u8], _>((Bound::Included(start), end));
            if hit.any(|(_, put_op)| *put_op != op) {
                return Err(KvError::DuplicateKey);
            }
        }
    }
    let mut all = Footprint::default();
    for part in parts {
        all.puts.extend(part.puts);
        all.deletes.extend(part.deletes);
    }
    Ok(all)
}

/// Does `request` only read, in every branch at every level?
pub(crate) fn is_read_only(request: &TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match op {
            RequestOp::Range(_) => true,
            RequestOp::Txn(txn) => is_read_only(txn),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
        })
}

/// Do all compares hold at the store's newest revision?
pub(crate) fn compares_hold(store: &Store, compares: &[Compare]) -> bool {
    compares.iter().all(|compare| compare_holds(store, compare))
}

/// etcd's `applyCompare`: every key in the range must satisfy the compare;
/// an empty range compares a zero key, except that a value compare fails.
fn compare_holds(store: &Store, compare: &Compare) -> bool {
    let range = KeyRange::new(compare.key.clone(), compare.range_end.clone());
    let mut seen = false;
    for (_, version, live) in store.scan(&range, store.revision()) {
        seen = true;
        if !compare_one(compare, version.revision.main, Some(live)) {
            return false;
        }
    }
    seen || (!matches!(compare.target, CompareTarget::Value(_)) && compare_one(compare, 0, None))
}

fn compare_one(compare: &Compare, mod_revision: i64, live: Option<&Live>) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(v) => live.map_or(0, |l| l.version).cmp(v),
        CompareTarget::Create(v) => live.map_or(0, |l| l.create_revision).cmp(v),
        CompareTarget::Mod(v) => mod_revision.cmp(v),
        CompareTarget::Lease(v) => live.map_or(0, |l| l.lease).cmp(v),
        CompareTarget::Value(v) => live.map_or(&[][..], |l| &l.value[..]).cmp(&v[..]),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// A put whose value and lease are resolved against the state before the
/// write.
pub(crate) struct PlannedPut {
    key: Bytes,
    value: Bytes,
    lease: i64,
    prev_kv: bool,
}

/// An operation ready to execute: its branch chosen, its checks passed.
pub(crate) enum Planned {
    Range(RangeRequest),
    Put(PlannedPut),
    Delete(DeleteRangeRequest),
    Txn { succeeded: bool, ops: Vec<Planned> },
}

pub(crate) fn plan_put(
    store: &Store,
    leases: &Leases,
    request: PutRequest,
) -> Result<PlannedPut, KvError> {
    let PutRequest {
        key,
        value,
        lease,
        prev_kv,
        ignore_value,
        ignore_lease,
    } = request;
    let (value, lease) = if ignore_value || ignore_lease {
        let current = store
            .get(&key, store.revision())
            .ok_or(KvError::KeyNotFound)?;
        (
            if ignore_value { current.value } else { value },
            if ignore_lease { current.lease } else { lease },
        )
    } else {
        (value, lease)
    };
    if lease != 0 && !leases.contains(lease) {
        return Err(KvError::LeaseNotFound);
    }
    Ok(PlannedPut {
        key,
        value,
        lease,
        prev_kv,
    })
}

/// Plan the ops of the branch a txn takes (at every level).
pub(crate) fn plan(
    store: &Store,
    leases: &Leases,
    ops: Vec<RequestOp>,
) -> Result<Vec<Planned>, KvError> {
    ops.into_iter()
        .map(|op| {
            Ok(match op {
                RequestOp::Range(range) => {
                    if range.revision > 0 {
                        store.read_revision(range.revision)?;
                    }
                    Planned::Range(range)
                }
                RequestOp::Put(put) => Planned::Put(plan_put(store, leases, put)?),
                RequestOp::DeleteRange(delete) => Planned::Delete(delete),
                RequestOp::Txn(txn) => {
                    let succeeded = compares_hold(store, &txn.compare);
                    let branch = if succeeded { txn.success } else { txn.failure };
                    Planned::Txn {
                        succeeded,
                        ops: plan(store, leases, branch)?,
                    }
                }
            })
        })
        .collect()
}

pub(crate) fn execute(
    write: &mut Write,
    leases: &mut Leases,
    ops: Vec<Planned>,
) -> Vec<ResponseOp> {
    ops.into_iter()
        .map(|op| match op {
            Planned::Range(range) => {
                // Planning checked an explicit revision; the newest one
                // includes the txn's own earlier writes.
                let revision = if range.revision > 0 {
                    range.revision
                } else {
                    write.read_revision()
                };
                ResponseOp::Range(write.store().range(&range, revision))
            }
            Planned::Put(put) => ResponseOp::Put(execute_put(write, leases, put)),
            Planned::Delete(delete) => {
                ResponseOp::DeleteRange(execute_delete(write, leases, delete))
            }
            Planned::Txn { succeeded, ops } => ResponseOp::Txn(TxnResponse {
                header: ResponseHeader::default(),
                succeeded,
                responses: execute(write, leases, ops),
            }),
        })
        .collect()
}

pub(crate) fn execute_put(write: &mut Write, leases: &mut Leases, put: PlannedPut) -> PutResponse {
    let PlannedPut {
        key,
        value,
        lease,
        prev_kv,
    } = put;
    let previous = write.put(key.clone(), value, lease);
    let previous_lease = previous.as_ref().map_or(0, |kv| kv.lease);
    if previous_lease != lease {
        if previous_lease != 0 {
            leases.detach(previous_lease, &key);
        }
        if lease != 0 {
            leases.attach(lease, key);
        }
    }
    PutResponse {
        header: ResponseHeader::default(),
        prev_kv: previous.filter(|_| prev_kv),
    }
}

pub(crate) fn execute_delete(
    write: &mut Write,
    leases: &mut Leases,
    request: DeleteRangeRequest,
) -> DeleteRangeResponse {
    let range = KeyRange::new(request.key, request.range_end);
    let revision = write.read_revision();
    let keys: Vec<Bytes> = write
        .store()
        .scan(&range, revision)
        .map(|(key, _, _)| key.clone())
        .collect();
    let deleted: Vec<KeyValue> = keys
        .iter()
        .filter_map(|key| {
            let previous = write.delete(key)?;
            if previous.lease != 0 {
                leases.detach(previous.lease, key);
            }
            Some(previous)
        })
        .collect();
    DeleteRangeResponse {
        header: ResponseHeader::default(),
        deleted: i64::try_from(deleted.len()).unwrap_or(i64::MAX),
        prev_kvs: if request.prev_kv { deleted } else { Vec::new() },
    }
}

/// Stamp every (nested) response with the txn's revision.
pub(crate) fn stamp(responses: &mut [ResponseOp], revision: i64) {
    for response in responses {
        let header = match response {
            ResponseOp::Range(r) => &mut r.header,
            ResponseOp::Put(r) => &mut r.header,
            ResponseOp::DeleteRange(r) => &mut r.header,
            ResponseOp::Txn(r) => {
                stamp(&mut r.responses, revision);
                &mut r.header
            }
        };
        header.revision = revision;
    }
}

/// Answer a read-only txn (checked with [`is_read_only`]) without writing.
pub(crate) fn read(store: &Store, request: &TxnRequest) -> Result<TxnResponse, KvError> {
    let succeeded = compares_hold(store, &request.compare);
    let branch = if succeeded {
        &request.success
    } else {
        &request.failure
    };
    let responses = branch
        .iter()
        .map(|op| match op {
            RequestOp::Range(range) => {
                let revision = store.read_revision(range.revision)?;
                Ok(ResponseOp::Range(store.range(range, revision)))
            }
            RequestOp::Txn(txn) => Ok(ResponseOp::Txn(read(store, txn)?)),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => Err(KvError::TxnNotReadOnly),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TxnResponse {
        header: ResponseHeader::default(),
        succeeded,
        responses,
    })
}

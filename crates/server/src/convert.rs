//! etcd's protobuf messages to chorus-kv's requests and back. Field by
//! field; enum values outside etcd's ranges are refused with
//! INVALID_ARGUMENT (prost keeps unknown enum values as integers).

use chorus_kv as kv;
use tonic::Status;

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::{compare, request_op, response_op};
use crate::pb::mvccpb;

fn invalid(what: &str, value: i32) -> Status {
    Status::invalid_argument(format!("etcdserver: unknown {what} {value}"))
}

pub(crate) fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub(crate) fn event(event: kv::Event, prev_kv: bool) -> mvccpb::Event {
    let kind = match event.kind {
        kv::EventKind::Put => mvccpb::event::EventType::Put,
        kv::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value(event.kv)),
        prev_kv: if prev_kv {
            event.prev_kv.map(key_value)
        } else {
            None
        },
    }
}

/// A range request, and whether it asked for a serializable read.
pub(crate) fn range_request(request: pb::RangeRequest) -> Result<(kv::RangeRequest, bool), Status> {
    use pb::range_request::{SortOrder, SortTarget};
    let sort_order = match SortOrder::try_from(request.sort_order) {
        Ok(SortOrder::None) => kv::SortOrder::None,
        Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
        Ok(SortOrder::Descend) => kv::SortOrder::Descend,
        Err(_) => return Err(invalid("sort order", request.sort_order)),
    };
    let sort_target = match SortTarget::try_from(request.sort_target) {
        Ok(SortTarget::Key) => kv::SortTarget::Key,
        Ok(SortTarget::Version) => kv::SortTarget::Version,
        Ok(SortTarget::Create) => kv::SortTarget::Create,
        Ok(SortTarget::Mod) => kv::SortTarget::Mod,
        Ok(SortTarget::Value) => kv::SortTarget::Value,
        Err(_) => return Err(invalid("sort target", request.sort_target)),
    };
    Ok((
        kv::RangeRequest {
            key: request.key,
            range_end: request.range_end,
            limit: request.limit,
            revision: request.revision,
            sort_order,
            sort_target,
            keys_only: request.keys_only,
            count_only: request.count_only,
            min_mod_revision: request.min_mod_revision,
            max_mod_revision: request.max_mod_revision,
            min_create_revision: request.min_create_revision,
            max_create_revision: request.max_create_revision,
        },
        request.serializable,
    ))
}

pub(crate) fn range_response(
    response: kv::RangeResponse,
    header: pb::ResponseHeader,
) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: response.kvs.into_iter().map(key_value).collect(),
        more: response.more,
        count: response.count,
    }
}

pub(crate) fn put_request(request: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: request.key,
        value: request.value,
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    }
}

pub(crate) fn put_response(
    response: kv::PutResponse,
    header: pb::ResponseHeader,
) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: response.prev_kv.map(key_value),
    }
}

pub(crate) fn delete_request(request: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: request.key,
        range_end: request.range_end,
        prev_kv: request.prev_kv,
    }
}

pub(crate) fn delete_response(
    response: kv::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(key_value).collect(),
    }
}

fn compare(compare: pb::Compare) -> Result<kv::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget};
    let result = match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => kv::CompareResult::Equal,
        Ok(CompareResult::Greater) => kv::CompareResult::Greater,
        Ok(CompareResult::Less) => kv::CompareResult::Less,
        Ok(CompareResult::NotEqual) => kv::CompareResult::NotEqual,
        Err(_) => return Err(invalid("compare result", compare.result)),
    };
    // etcd reads the operand of the type `target` names; a missing or
    // mismatched operand compares against the zero value.
    let union = compare.target_union;
    let number =
        |pick: fn(&compare::TargetUnion) -> Option<i64>| union.as_ref().and_then(pick).unwrap_or(0);
    let target = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Version) => kv::CompareTarget::Version(number(|u| match u {
            compare::TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Create) => kv::CompareTarget::Create(number(|u| match u {
            compare::TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv::CompareTarget::Mod(number(|u| match u {
            compare::TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv::CompareTarget::Lease(number(|u| match u {
            compare::TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Value) => kv::CompareTarget::Value(match &union {
            Some(compare::TargetUnion::Value(value)) => value.clone(),
            _ => Default::default(),
        }),
        Err(_) => return Err(invalid("compare target", compare.target)),
    };
    Ok(kv::Compare {
        result,
        target,
        key: compare.key,
        range_end: compare.range_end,
    })
}

fn request_op(op: pb::RequestOp) -> Result<kv::RequestOp, Status> {
    Ok(match op.request {
        Some(request_op::Request::RequestRange(range)) => {
            kv::RequestOp::Range(range_request(range)?.0)
        }
        Some(request_op::Request::RequestPut(put)) => kv::RequestOp::Put(put_request(put)),
        Some(request_op::Request::RequestDeleteRange(delete)) => {
            kv::RequestOp::DeleteRange(delete_request(delete))
        }
        Some(request_op::Request::RequestTxn(txn)) => kv::RequestOp::Txn(txn_request(txn)?),
        None => return Err(Status::invalid_argument("etcdserver: empty request in txn")),
    })
}

pub(crate) fn txn_request(request: pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    Ok(kv::TxnRequest {
        compare: request
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: request
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: request
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

/// A txn response; each nested response's header carries the revision
/// the machine stamped it with.
pub(crate) fn txn_response(
    response: kv::TxnResponse,
    header: pb::ResponseHeader,
) -> pb::TxnResponse {
    let responses = response
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                kv::ResponseOp::Range(range) => {
                    let header = at(header, range.header.revision);
                    response_op::Response::ResponseRange(range_response(range, header))
                }
                kv::ResponseOp::Put(put) => {
                    let header = at(header, put.header.revision);
                    response_op::Response::ResponsePut(put_response(put, header))
                }
                kv::ResponseOp::DeleteRange(delete) => {
                    let header = at(header, delete.header.revision);
                    response_op::Response::ResponseDeleteRange(delete_response(delete, header))
                }
                kv::ResponseOp::Txn(txn) => {
                    let header = at(header, txn.header.revision);
                    response_op::Response::ResponseTxn(txn_response(txn, header))
                }
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(header),
        succeeded: response.succeeded,
        responses,
    }
}

fn at(header: pb::ResponseHeader, revision: i64) -> pb::ResponseHeader {
    pb::ResponseHeader { revision, ..header }
}

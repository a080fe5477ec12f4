//! Helpers shared by the integration tests: a machine driven without Raft.
#![allow(dead_code)] // each test binary uses its own subset

use bytes::Bytes;
use chorus_kv::*;
use chorus_raft::ApplyMeta;

/// A machine with a log position and a leader clock to stamp commands with.
pub struct Harness {
    pub machine: KvMachine,
    pub index: u64,
    pub term: u64,
    pub time_ms: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new(KvConfig::default())
    }
}

pub fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

impl Harness {
    pub fn new(config: KvConfig) -> Self {
        Harness {
            machine: KvMachine::new(config),
            index: 0,
            term: 1,
            time_ms: 1_000_000,
        }
    }

    pub fn meta(&mut self) -> ApplyMeta {
        self.index += 1;
        ApplyMeta {
            index: self.index,
            term: self.term,
            time_ms: self.time_ms,
            machine_version: 0,
        }
    }

    pub fn apply(&mut self, command: Command) -> Reply {
        let meta = self.meta();
        self.machine.apply_command(&meta, command).reply
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.put_request(PutRequest {
            key: b(key),
            value: b(value),
            ..PutRequest::default()
        })
        .expect("put")
    }

    pub fn put_request(&mut self, request: PutRequest) -> Result<PutResponse, KvError> {
        match self.apply(Command::Put(request))? {
            Response::Put(response) => Ok(response),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        match self.apply(Command::DeleteRange(DeleteRangeRequest {
            key: b(key),
            range_end: b(range_end),
            prev_kv: true,
        })) {
            Ok(Response::DeleteRange(response)) => response,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, KvError> {
        match self.apply(Command::Txn(request))? {
            Response::Txn(response) => Ok(response),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, KvError> {
        match self.apply(Command::Compact(CompactionRequest { revision }))? {
            Response::Compact(response) => Ok(response),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, KvError> {
        match self.apply(Command::LeaseGrant(LeaseGrantRequest { ttl, id }))? {
            Response::LeaseGrant(response) => Ok(response),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn range(&self, request: RangeRequest) -> Result<RangeResponse, KvError> {
        match self.machine.read(&Query::Range(request))? {
            QueryResponse::Range(response) => Ok(response),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.range(RangeRequest {
            key: b(key),
            ..RangeRequest::default()
        })
        .expect("get")
        .kvs
        .pop()
    }

    pub fn keys(&self, key: &str, range_end: &str) -> Vec<String> {
        self.range(RangeRequest {
            key: b(key),
            range_end: b(range_end),
            ..RangeRequest::default()
        })
        .expect("range")
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
    }

    pub fn time_to_live(&self, id: i64, now_ms: u64) -> LeaseTimeToLiveResponse {
        match self.machine.read(&Query::LeaseTimeToLive {
            request: LeaseTimeToLiveRequest { id, keys: true },
            now_ms,
        }) {
            Ok(QueryResponse::LeaseTimeToLive(response)) => response,
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(key),
        value: b(value),
        ..PutRequest::default()
    })
}

pub fn delete_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: b(key),
        range_end: b(range_end),
        prev_kv: false,
    })
}

pub fn range_op(key: &str) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: b(key),
        ..RangeRequest::default()
    })
}

pub fn compare(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: b(key),
        range_end: Bytes::new(),
    }
}

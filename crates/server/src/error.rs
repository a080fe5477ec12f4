//! The server's errors, and how every failure reaches a client: as the
//! gRPC status code and message etcd gives for it (etcd's `rpctypes`), so
//! clients that match on them behave the same against chorus.

use chorus_kv::KvError;
use chorus_node::{CallError, NodeError, Refusal, StartError};
use thiserror::Error;
use tonic::{Code, Status};

/// Why the server could not start or stopped badly.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("starting the key-value server: {0}")]
    Start(#[from] StartError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster did not elect a leader within {0} ms")]
    NoLeader(u64),
}

// etcd's messages (rpctypes) for failures outside the machine.
pub(crate) const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub(crate) const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
pub(crate) const TIMEOUT: &str = "etcdserver: request timed out";
pub(crate) const LEADER_CHANGED: &str = "etcdserver: leader changed";
pub(crate) const STOPPED: &str = "etcdserver: server stopped";
pub(crate) const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
pub(crate) const MEMBER_EXISTS: &str = "etcdserver: member ID already exist";
pub(crate) const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
pub(crate) const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
pub(crate) const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";

/// The machine answered a request with a response of another kind: a
/// bug, reported as INTERNAL rather than a panic.
pub(crate) fn unexpected_answer() -> Status {
    Status::internal("chorus: the key-value machine answered with the wrong kind of response")
}

/// A machine error as etcd's gRPC layer reports it.
pub(crate) fn kv_status(error: &KvError) -> Status {
    let code = match error {
        KvError::Compacted { .. } | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
            Code::OutOfRange
        }
        KvError::LeaseNotFound => Code::NotFound,
        KvError::LeaseExists => Code::FailedPrecondition,
        KvError::EmptyKey
        | KvError::KeyNotFound
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::DuplicateKey
        | KvError::TooManyOps
        | KvError::TxnNotReadOnly => Code::InvalidArgument,
    };
    Status::new(code, error.to_string())
}

/// A runtime failure as etcd reports its nearest equivalent. Anything a
/// client may retry is UNAVAILABLE (etcd clients retry those on another
/// endpoint).
pub(crate) fn call_status(error: &CallError) -> Status {
    match error {
        CallError::Timeout(_) => Status::unavailable(TIMEOUT),
        CallError::LeadershipLost { .. } => Status::unavailable(LEADER_CHANGED),
        CallError::NotLeader { .. }
        | CallError::NodeDown(_)
        | CallError::Redirects(_)
        | CallError::NoTargets => Status::unavailable(NO_LEADER),
        CallError::NoSuchServer(_) | CallError::Stopped(_) => Status::unavailable(STOPPED),
        CallError::Refused(Refusal::Busy(_)) => Status::resource_exhausted(TOO_MANY_REQUESTS),
        CallError::Refused(Refusal::LeaderNotReady) => Status::unavailable(NO_LEADER),
        CallError::Refused(Refusal::NotMember(_)) => Status::not_found(MEMBER_NOT_FOUND),
        CallError::Refused(Refusal::AlreadyMember(_)) => Status::failed_precondition(MEMBER_EXISTS),
        CallError::Refused(Refusal::AlreadyVoter(_)) => {
            Status::failed_precondition(MEMBER_NOT_LEARNER)
        }
        CallError::Refused(Refusal::NotVoter(_)) => {
            Status::failed_precondition(BAD_LEADER_TRANSFEREE)
        }
        CallError::Refused(
            refusal @ (Refusal::ConfigChangeInProgress
            | Refusal::TransferInProgress
            | Refusal::LastVoter(_)),
        ) => Status::failed_precondition(format!("etcdserver: {refusal}")),
        CallError::Refused(Refusal::Terminated) => Status::unavailable(STOPPED),
        CallError::Refused(Refusal::Encode(reason)) => {
            Status::invalid_argument(format!("etcdserver: {reason}"))
        }
        CallError::Decode { .. }
        | CallError::NotLocal(_)
        | CallError::WrongMachine { .. }
        | CallError::Halted { .. }
        | CallError::Storage(_) => Status::internal(format!("chorus: {error}")),
    }
}

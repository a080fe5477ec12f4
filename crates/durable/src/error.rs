//! What a durable-server operation can fail with. Bad bytes read from the
//! store are [`Error::Corrupt`], never a panic (STYLE 7: validate at the
//! gateway); the store's own failures are [`Error::Backend`], which says
//! whether a write may have happened.

use std::time::Duration;

use chorus_backend::BackendError;
use thiserror::Error;

/// Why a durable-server operation failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The store failed; see [`BackendError`] for whether a write may have
    /// taken effect (`Indeterminate`) or certainly did not (`Unavailable`).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A value in the store is not a record this version understands.
    #[error("bad record at key {key}: {problem}")]
    Corrupt { key: String, problem: FormatProblem },
    /// A message, reply or state could not be encoded.
    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    /// No reply within the call's timeout. The message stays queued and
    /// is processed; its reply is discarded.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The message failed `attempts` times and went to the dead-letter
    /// queue.
    #[error("message dead-lettered after {attempts} failed attempts")]
    DeadLetter { attempts: u32 },
    /// The server was killed while the call waited.
    #[error("the durable server was killed")]
    Killed,
    /// The tenant holds no durable server (never started, or killed).
    #[error("no durable server in tenant {0:?}")]
    NotFound(String),
    /// A handler returned an error or panicked (priority messages and
    /// handler results a message cannot use).
    #[error("handler failed: {0}")]
    Handler(String),
    /// The handler stopped the server while handling this call.
    #[error("the server stopped: {reason}")]
    Stopped { reason: String },
    /// The handler answered a call with `noreply`.
    #[error("the handler returned no reply to a call")]
    NoReply,
    /// The tenant (or registry name) is not usable as a key prefix.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The registry name belongs to another tenant.
    #[error("registry name {name:?} is registered to tenant {tenant:?}")]
    NameTaken { name: String, tenant: String },
    /// Too many concurrent writers won the race first.
    #[error("gave up after {attempts} conflicting attempts")]
    Contention { attempts: u32 },
    /// A batch larger than [`CAST_BATCH_MAX`](crate::CAST_BATCH_MAX).
    #[error("a batch of {len} messages exceeds the limit of {max}")]
    BatchTooLarge { len: usize, max: usize },
}

/// What is wrong with a stored value (see docs/formats.md, "chorus-durable
/// formats").
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FormatProblem {
    /// Shorter than the magic and version.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Not a chorus-durable record.
    #[error("bad magic {0:02x?}")]
    Magic([u8; 4]),
    /// Written by a version this code does not read.
    #[error("unknown format version {0}")]
    Version(u8),
    /// The body does not decode.
    #[error("invalid body: {0}")]
    Invalid(String),
    /// A valid record of the wrong kind for its key.
    #[error("expected a {expected} record, found {found}")]
    WrongRecord {
        expected: &'static str,
        found: &'static str,
    },
    /// A key under the tenant that is not in the layout.
    #[error("unexpected key")]
    Key,
}

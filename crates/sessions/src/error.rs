//! What a sessions call can fail with.

use chorus_backend::BackendError;
use thiserror::Error;

use crate::{ConnectionId, SessionId};

/// Why a [`Sessions`](crate::Sessions) call failed. The `NotFound`
/// variants are the seed's `no_return` cases: asking for (or removing)
/// a document that does not exist.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SessionsError {
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    #[error("connection {connection} of session {session} not found")]
    ConnectionNotFound {
        session: SessionId,
        connection: ConnectionId,
    },
    #[error("cluster state document {0:?} not found")]
    StateNotFound(String),
    /// The caller holds an older (or newer) incarnation of the session
    /// than the store: it was removed, or removed and re-established,
    /// since the caller got its fence. `current` is `None` when the
    /// session no longer exists.
    #[error("session {session} is fenced: presented token {presented}, current {current:?}")]
    Fenced {
        session: SessionId,
        presented: i64,
        current: Option<i64>,
    },
    /// The cleaner key is no longer held by this cleaner's lease: its
    /// decisions are refused.
    #[error("this node no longer holds the cleaner key")]
    NotCleaner,
    /// A malformed argument (an id that is not a UUID, an empty state id).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{what} is {bytes} bytes, more than the limit of {limit_bytes}")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        limit_bytes: usize,
    },
    /// A stored value this version cannot read (bad magic, unknown
    /// version, checksum mismatch, truncated): never trusted, never a
    /// panic.
    #[error("corrupt value at {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl SessionsError {
    /// Whether the same call may succeed if sent again (see
    /// [`BackendError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, SessionsError::Backend(error) if error.is_transient())
    }
}

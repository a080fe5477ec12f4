//! What a backend call can fail with, sorted by what the caller may do
//! next.

use chorus_kv::KvError;
use chorus_node::{CallError, Refusal};
use thiserror::Error;

/// Why a [`KvBackend`](crate::KvBackend) call failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BackendError {
    /// The store refused the request (etcd's message). Deterministic:
    /// sending it again gets the same answer.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The request did not take effect (no leader, not reachable,
    /// overloaded); sending it again is safe.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request may or may not take effect (a timeout, or leadership
    /// changed after it was sent). A write must be checked or made
    /// conditional before it is sent again.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The store answered something this client cannot use (a bug or an
    /// incompatible server), or failed internally (storage).
    #[error("backend failure: {0}")]
    Failed(String),
    /// The backend was shut down.
    #[error("the backend is shut down")]
    Closed,
}

impl BackendError {
    /// Whether sending the same request again may succeed: the store is
    /// momentarily without a leader, unreachable or busy. For a write
    /// that failed [`Indeterminate`](BackendError::Indeterminate), only
    /// if sending it twice is harmless.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::Unavailable(_) | BackendError::Indeterminate(_)
        )
    }
}

impl From<CallError> for BackendError {
    fn from(error: CallError) -> BackendError {
        let text = error.to_string();
        match error {
            // Never reached a leader: nothing was appended.
            CallError::NotLeader { .. }
            | CallError::NoTargets
            | CallError::Redirects(_)
            | CallError::NoSuchServer(_) => BackendError::Unavailable(text),
            CallError::Refused(Refusal::Terminated) => BackendError::Closed,
            CallError::Refused(_) => BackendError::Unavailable(text),
            // Sent, perhaps appended, no answer.
            CallError::Timeout(_)
            | CallError::LeadershipLost { .. }
            | CallError::NodeDown(_)
            | CallError::Stopped(_) => BackendError::Indeterminate(text),
            CallError::Decode { .. }
            | CallError::NotLocal(_)
            | CallError::WrongMachine { .. }
            | CallError::Halted { .. }
            | CallError::Storage(_) => BackendError::Failed(text),
        }
    }
}

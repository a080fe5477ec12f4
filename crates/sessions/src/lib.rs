//! chorus-sessions: client sessions, their connections, and cluster state
//! documents (onedata's `dao_cluster`, generalised from FUSE sessions to
//! client sessions of any kind), kept in a [`KvBackend`].
//!
//! # Where it sits
//!
//! Above the [`KvBackend`] trait, beside chorus-durable; below the
//! `chorus` binary, which serves it over gRPC (`chorus.sessions.v1`),
//! admin HTTP (`GET /sessions`) and `chorus sessions ...`. Any backend
//! works: the embedded store, a `chorus serve` cluster, a real etcd.
//!
//! # Rules (the seed's, and how they are enforced)
//!
//! * A session has an id (a v4 UUID), an absolute deadline `valid_to_ms`
//!   (ms since the Unix epoch) and owner bytes. Saving one whose deadline
//!   is in the past stores `now + default_validity_ms` instead.
//! * Deadlines are values in the store, never lease TTLs: they survive a
//!   leader change or a restart of every node unchanged (no reset to the
//!   full validity, no early expiry). A session is expired when
//!   `valid_to_ms < now`; `list_sessions(t)` returns those with
//!   `valid_to_ms >= t`.
//! * Connections belong to a session (`<prefix>c/<session>/<connection>`)
//!   and are only written by a txn that checks their session exists, so
//!   no connection outlives its session's deletion.
//! * [`Sessions::clear_sessions`]: every expired session with at least one
//!   live connection ([`ConnectionHook::is_live`]) is extended to
//!   `now + default_validity_ms`; every other expired session is deleted
//!   with its connections, which are closed through the hook. Each
//!   decision is a txn guarded by the session's mod_revision (and, for a
//!   delete, by "no connection changed since it was read"), so a
//!   concurrent save always wins over the cleaner.
//! * Fencing: a session's token is the create_revision of its key. It
//!   stays the same while the session is saved, renewed or extended, and
//!   changes when the session is removed and saved again (re-established).
//!   Fenced calls compare it in their txn and fail with
//!   [`SessionsError::Fenced`] when it differs.
//! * The periodic cleaner ([`Sessions::spawn_cleaner`]) runs on one node
//!   at a time: whoever creates the lease-backed cleaner key; its
//!   decisions also compare that key's lease, so a node that lost the
//!   role cannot act on it.
//! * Reads by id go through a per-handle cache ([`Staleness::Ok`], stale
//!   results allowed) or refresh it first ([`Staleness::UpdateBefore`]).
//!
//! ```no_run
//! use chorus_backend::EmbeddedKv;
//! use chorus_sessions::{SessionSpec, Sessions, SessionsConfig, Staleness};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = EmbeddedKv::open("./state").await?;
//! let sessions = Sessions::new(store, SessionsConfig::default());
//! let session = sessions.save_session(SessionSpec::new(0, "alice")).await?;
//! let again = sessions.get_session(session.id, Staleness::UpdateBefore).await?;
//! assert_eq!(again.fence(), session.fence());
//! # Ok(())
//! # }
//! ```

mod cleaner;
mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod format;
mod handle;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
pub use chorus_backend::KvBackend;
use uuid::Uuid;

pub use cleaner::{Cleaner, CleanerConfig};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::SessionsError;
pub use handle::{ClearPlan, ClearReport, Decision, Sessions};

/// The id of the default cluster state document (the seed's).
pub const CLUSTER_STATE_ID: &str = "cluster_state";
/// Largest owner data of a session: sessions are read whole on every
/// scan, so keep them small (etcd's request limit is 1.5 MiB).
pub const OWNER_BYTES_MAX: usize = 64 * 1024;
/// Largest data of a connection (as for owners).
pub const CONNECTION_DATA_BYTES_MAX: usize = 64 * 1024;
/// Largest cluster state document: below etcd's 1.5 MiB request limit.
pub const STATE_BYTES_MAX: usize = 1024 * 1024;
/// Longest cluster state document id.
pub const STATE_ID_BYTES_MAX: usize = 256;
/// Sessions read per page when scanning (list, clear): bounds one
/// response's size.
pub const SCAN_PAGE_SESSIONS: i64 = 256;

/// A session's id: a v4 UUID, written hyphenated in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub Uuid);

/// A connection's id: a v4 UUID, unique within its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub Uuid);

macro_rules! uuid_id {
    ($name:ident) => {
        impl $name {
            /// A new random (v4) id.
            pub fn random() -> $name {
                $name(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = SessionsError;

            fn from_str(text: &str) -> Result<$name, SessionsError> {
                Uuid::parse_str(text).map($name).map_err(|error| {
                    SessionsError::InvalidArgument(format!("{text:?} is not a UUID: {error}"))
                })
            }
        }
    };
}

uuid_id!(SessionId);
uuid_id!(ConnectionId);

/// What to save as a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    pub id: SessionId,
    /// Deadline, ms since the Unix epoch; in the past (0 included) means
    /// "now + the default validity".
    pub valid_to_ms: u64,
    pub owner: Bytes,
}

impl SessionSpec {
    /// A new session (random id).
    pub fn new(valid_to_ms: u64, owner: impl Into<Bytes>) -> SessionSpec {
        SessionSpec {
            id: SessionId::random(),
            valid_to_ms,
            owner: owner.into(),
        }
    }
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub valid_to_ms: u64,
    pub owner: Bytes,
    /// The fencing token: the create_revision of the session's key.
    pub fence_token: i64,
    /// The store revision of the session's last change (its mod_revision).
    pub revision: i64,
}

impl Session {
    /// The fence a holder of this session presents to fenced calls.
    pub fn fence(&self) -> Fence {
        Fence {
            session: self.id,
            token: self.fence_token,
        }
    }

    /// Whether the deadline has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.valid_to_ms < now_ms
    }
}

/// Proof of holding one incarnation of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    pub session: SessionId,
    pub token: i64,
}

/// A connection as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub session: SessionId,
    pub id: ConnectionId,
    pub data: Bytes,
    /// The store revision of the connection's last change.
    pub revision: i64,
}

/// Where a read by id may come from (the seed's `{stale, ok}` and
/// `{stale, update_before}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Staleness {
    /// From this handle's cache when it has the session (possibly out of
    /// date), else from the store.
    #[default]
    Ok,
    /// From the store; the cache is refreshed (or the entry dropped).
    UpdateBefore,
}

/// Settings of a sessions namespace.
#[derive(Clone, Debug)]
pub struct SessionsConfig {
    /// Every key starts with this (docs/formats.md).
    pub prefix: String,
    /// What a deadline in the past becomes (`now +` this), and how far
    /// the cleaner extends a session that still has a live connection.
    pub default_validity_ms: u64,
    /// Most sessions one handle caches; past it the least recently
    /// stored entry is dropped.
    pub cache_sessions_max: usize,
}

impl Default for SessionsConfig {
    fn default() -> SessionsConfig {
        SessionsConfig {
            prefix: "chorus/sessions/".into(),
            default_validity_ms: 10 * 60 * 1_000,
            cache_sessions_max: 10_000,
        }
    }
}

/// What the application does with connections: the seed closes the
/// connection's process and asks whether it is alive. Called outside any
/// lock; must not block (spawn if closing takes time).
pub trait ConnectionHook: Send + Sync + 'static {
    /// Whether the connection is still in use (the cleaner keeps its
    /// session). The default: a connection in the store is live.
    fn is_live(&self, connection: &Connection) -> bool {
        let _ = connection;
        true
    }

    /// Called once for each connection a close removed from the store.
    fn close(&self, connection: &Connection) {
        let _ = connection;
    }
}

/// The hook used when none is registered: every stored connection is
/// live; closing does nothing beyond removing it.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl ConnectionHook for NoHook {}

//! What the core asks its runtime to do.
//!
//! # The ordering rule
//!
//! The runtime executes a batch of actions **in order**, with two kinds of
//! durability:
//!
//! * [`Action::SaveHardState`] and [`Action::SaveSnapshot`] are *barriers*:
//!   they must be durable before any later action of the batch runs. A vote
//!   or term must never leave in a message before it is on disk (Raft §5.1,
//!   Figure 2: "updated on stable storage before responding to RPCs").
//! * [`Action::AppendLog`] is *asynchronous*: the runtime writes it and later
//!   calls [`crate::Raft::log_durable`]. Nothing the core emits depends on
//!   those entries being durable until it has been told so: followers
//!   acknowledge entries only after that call, and the leader counts itself
//!   towards a commit quorum only for durable entries (thesis §10.2.1 lets
//!   the leader send AppendEntries before its own write completes).

use bytes::Bytes;

use crate::machine::{Effect, Machine};
use crate::message::Envelope;
use crate::types::{Entry, HardState, LogIndex, Role, ServerId, SnapshotMeta, Term};

/// A runtime-chosen token naming a caller waiting for a reply.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RequestId(pub u64);

/// A runtime-chosen token naming a caller's event stream (ra's pipeline
/// caller process).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CallerId(pub u64);

/// A caller's own identifier for a pipelined command (ra's correlation).
pub type Correlation = u64;

/// How the proposer of a command hears about it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReplyTo {
    /// Nobody is told.
    Nobody,
    /// One waiting caller gets [`Action::Reply`] (ra's `process_command`).
    Request(RequestId),
    /// The caller's stream gets the reply in a batched [`Action::Applied`]
    /// (ra's `pipeline_command` with a correlation).
    Stream {
        caller: CallerId,
        correlation: Correlation,
    },
}

/// Why a waiting proposal will get no reply from this server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Abandoned {
    /// This server stopped being leader before the entry was applied. The
    /// entry may still commit under the new leader: the outcome is unknown.
    LostLeadership { leader: Option<ServerId> },
}

#[derive(Debug)]
pub enum Action<M: Machine> {
    /// Barrier: make the term and vote durable before the next action.
    SaveHardState(HardState),
    /// Write these entries. If the first entry's index is not past the log's
    /// end, the log is first truncated from that index (a follower replacing
    /// a conflicting suffix, Raft §5.3). Asynchronous: report with
    /// [`crate::Raft::log_durable`].
    AppendLog(Vec<Entry>),
    /// Barrier: store this snapshot durably. Once stored, log entries up to
    /// `meta.index` are no longer needed and may be deleted; entries after it
    /// are kept when `keep_log_after` is set and discarded otherwise.
    SaveSnapshot {
        meta: SnapshotMeta,
        data: Bytes,
        keep_log_after: bool,
    },
    /// Transmit a message. Losing it is fine; the protocol retries.
    Send(Envelope),
    /// The reply to a [`ReplyTo::Request`] proposal.
    Reply {
        request: RequestId,
        index: LogIndex,
        reply: M::Reply,
    },
    /// Batched replies to [`ReplyTo::Stream`] proposals of one caller.
    Applied {
        caller: CallerId,
        replies: Vec<(Correlation, M::Reply)>,
    },
    /// A waiting proposal that this server will not answer.
    Abandoned { reply_to: ReplyTo, why: Abandoned },
    /// The answer to a consistent (ReadIndex) query.
    QueryReply {
        request: RequestId,
        reply: M::QueryReply,
    },
    /// A consistent query this server cannot answer any more (it lost
    /// leadership before the read was confirmed); the caller should retry at
    /// `leader`.
    QueryAbandoned {
        request: RequestId,
        leader: Option<ServerId>,
    },
    /// A machine effect to carry out (see [`Effect`] for which run where).
    Effect(Effect<M>),
    /// The server's role, term or known leader changed.
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<ServerId>,
    },
    /// The end-of-life entry was applied (and, on the leader, replicated to
    /// every member): stop this server and delete its data.
    EndOfLife,
    /// Applying stopped at `index`: the entry cannot be applied by this
    /// code (a newer machine version, or a command this version cannot
    /// decode). The server stays safe (it never applies past an entry it does
    /// not understand) but needs an upgrade.
    ApplyHalted { index: LogIndex, reason: String },
}

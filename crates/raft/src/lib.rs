//! chorus-raft: the sans-IO Raft consensus core.
//!
//! # Where it sits
//!
//! The bottom of chorus's layers (see `DESIGN.md`): a pure, deterministic
//! state machine with no I/O, threads, clock or global randomness. Time
//! enters as the `now_ms` argument of every entry point; randomness comes
//! from the seed given to [`Raft::new`]. The same inputs always give the
//! same outputs, which is what lets `chorus-sim` replay any run from a seed.
//! `chorus-log` stores what it asks to persist; `chorus-node` carries its
//! messages and runs many servers per process. Machines ([`Machine`]) depend
//! only on this crate.
//!
//! # The driver loop
//!
//! A runtime feeds inputs and executes the actions that come out, in order,
//! honouring the ordering rule documented on [`Action`]:
//!
//! 1. Build the server from what storage recovered: [`Raft::new`].
//! 2. Feed it inputs: [`Raft::step`] (a message), [`Raft::tick`] (time
//!    passed; [`Raft::next_deadline_ms`] says when it is next needed),
//!    [`Raft::propose`], [`Raft::consistent_query`],
//!    [`Raft::change_membership`], [`Raft::transfer_leadership`], …
//! 3. Drain [`Raft::take_actions`]; execute them in order. `SaveHardState`
//!    and `SaveSnapshot` are barriers; `AppendLog` is written asynchronously.
//! 4. When written entries are durable, call [`Raft::log_durable`] and go
//!    back to 3.
//!
//! ```
//! use chorus_raft::*;
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Machine for Counter {
//!     type Command = u64;
//!     type Reply = u64;
//!     type Query = ();
//!     type QueryReply = u64;
//!     type Message = ();
//!     fn apply(&mut self, _: &ApplyMeta, add: u64, _: &mut Effects<Self>) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn query(&self, _: &()) -> u64 { self.0 }
//!     fn snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
//!     fn restore(data: &[u8]) -> Result<Self, RestoreError> {
//!         let bytes = data.try_into().map_err(|_| RestoreError { reason: "8 bytes".into() })?;
//!         Ok(Counter(u64::from_le_bytes(bytes)))
//!     }
//! }
//!
//! let me = ServerId(1);
//! let persisted = Persisted { initial_config: Configuration::voters([me]), ..Persisted::default() };
//! // 1. build
//! let mut raft = Raft::new(Config::new(ClusterId(9), me), persisted, Counter::default(), 42, 0).unwrap();
//! // 2. inputs: a brand-new cluster is told to elect (ra's trigger_election)
//! raft.trigger_election(0);
//! raft.propose(1, 5, Priority::Normal, ReplyTo::Request(RequestId(7))).unwrap();
//! let mut durable = None;
//! let mut reply = None;
//! for _round in 0..2 {
//!     // 3. execute the actions in order
//!     for action in raft.take_actions() {
//!         match action {
//!             Action::SaveHardState(_) | Action::SaveSnapshot { .. } => { /* write + fsync now */ }
//!             Action::AppendLog(entries) => durable = entries.last().map(|e| (e.index, e.term)),
//!             Action::Send(_) => { /* to the network */ }
//!             Action::Reply { request, reply: r, .. } => reply = Some((request, r)),
//!             _ => {}
//!         }
//!     }
//!     // 4. the write completed
//!     if let Some((index, term)) = durable.take() {
//!         raft.log_durable(2, index, term);
//!     }
//! }
//! assert_eq!(reply, Some((RequestId(7), 5)));
//! ```
//!
//! # What it implements
//!
//! Leader election with randomized timeouts, pre-vote and check-quorum
//! (`election`); pipelined replication with fast backtracking, batching,
//! priorities and commitment by current-term counting (`replication`);
//! one-at-a-time membership changes with non-voting and promotable members
//! (`membership`); ReadIndex reads (`read`); snapshots on release_cursor and
//! chunked installation (`snapshot`); leadership transfer; the end-of-life
//! command; machine versions carried in the log.
//!
//! # Deviations from Raft
//!
//! * **Pre-vote refusals do not count as losses.** A refusal carries the
//!   refuser's term; only grants echo the prospective term. A pre-candidate
//!   that cannot win simply times out again. Safe: pre-votes change nothing.
//! * **A removed server may still campaign** while the configuration that
//!   removed it is uncommitted and it voted in the previous one. A leader
//!   that removed itself and lost leadership before the removal committed
//!   may hold the only log able to commit it; without this rule the cluster
//!   could never elect again (found by the simulator). Votes are still
//!   counted in the newest configuration, so it cannot win without a quorum
//!   of that configuration, and it steps down once the removal commits
//!   (thesis §4.2.2).
//! * **Membership changes wait for a current-term commit** (the fix to the
//!   single-server algorithm published after the thesis).
//! * **Heartbeats are separate from AppendEntries** and carry a commit index
//!   capped at what the follower is known to match, so a heartbeat never
//!   commits an entry the follower might hold a different version of.
//! * **The leader counts itself only for durable entries** (thesis §10.2.1
//!   lets it send before its own write completes); followers acknowledge
//!   only durable entries.
//! * **The log above the last snapshot is held in memory.** Machines bound it
//!   with release_cursor (as ra's machines bound their logs on disk); a
//!   machine that never releases grows memory as well as disk.
//! * **Voters refuse candidates running an older machine version** (ra's
//!   rule), so an upgraded cluster stays led by upgraded code.
//! * **Quiescence** (opt-in, [`Config::quiesce`]; rules in `quiesce.rs`). An
//!   idle leader whose live followers hold and have committed its whole log
//!   announces a quiescing heartbeat round, then, once every live follower
//!   confirmed it, stops heartbeats and check-quorum; its followers stop
//!   their election timers. Raft's liveness argument (§5.2: a follower that
//!   hears nothing campaigns) is replaced by the runtime's node-level failure
//!   detector: [`Raft::peer_down`] of its leader makes a follower forget the
//!   leader's contact (the lease of thesis §4.2.3) and campaign after a
//!   random delay in `[0, election_timeout_ms / 4)` instead of `[T, 2T)`.
//!   Safe: terms, votes, the log and the commit rule are untouched, so a
//!   detector that is wrong costs elections, never safety; quiesced
//!   followers grant (pre-)votes by the usual rules. Live only as long as the
//!   detector eventually reports real failures.
//! * **Check-quorum by liveness.** A leader whose voters not reported down
//!   ([`Raft::peer_down`]) are no longer a quorum steps down at once (with
//!   `check_quorum`), quiesced or not: a quiesced leader runs no quorum
//!   timer. It sends no heartbeats or retransmissions to peers reported down
//!   and probes them afresh on [`Raft::peer_up`].
//! * **A leader answers a member's (pre-)vote request with a heartbeat**
//!   when quiescence is on or the member is reported down: the member has
//!   not heard from it, and a heartbeat in the current term makes it follow
//!   again instead of winning an election (a restarted follower, or a false
//!   suspicion). The request itself is refused as before.
pub mod action;
pub mod config;
mod election;
pub mod error;
mod log;
pub mod machine;
mod membership;
pub mod message;
mod progress;
mod quiesce;
mod raft;
mod read;
mod replication;
mod snapshot;
pub mod types;

pub use action::*;
pub use config::Config;
pub use election::TransferOutcome;
pub use error::{ProposeError, RecoveryError, StepError};
pub use machine::{ApplyMeta, Effect, Effects, Machine, RestoreError, SubscriberId};
pub use membership::MembershipChange;
pub use message::*;
#[cfg(feature = "planted-bugs")]
pub use raft::PlantedBugs;
pub use raft::{Raft, ServerProgress, Status};
pub use types::*;

/// What a server recovered from its storage, handed to [`Raft::new`].
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The newest durable snapshot, if any.
    pub snapshot: Option<(SnapshotMeta, bytes::Bytes)>,
    /// The log entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The configuration the server was started with (ra's initial member
    /// list); used until the log or a snapshot holds one.
    pub initial_config: Configuration,
}

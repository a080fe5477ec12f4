//! chorus-kv: the replicated key-value machine with etcd v3's data model.
//!
//! # Where it sits
//!
//! A [`chorus_raft::Machine`], depending on chorus-raft only (see
//! `DESIGN.md`), so the simulator runs it deterministically. chorus-node
//! hosts it in a Raft cluster; the `chorus` server puts the etcd v3 gRPC
//! API on top, and chorus-durable and chorus-sessions reach it through
//! their `KvBackend` trait. This crate holds the state and its rules; it
//! does no I/O and reads no clock.
//!
//! # Data model
//!
//! etcd's MVCC keyspace: a global revision (1 for an empty store) that
//! grows by one per write transaction (its changes share the revision and
//! are ordered by a sub revision); every key carries
//! `create_revision`, `mod_revision`, `version`, value and lease
//! ([`KeyValue`]); history is kept until [`Command::Compact`] so reads at
//! an older revision and watches from a past revision work. Requests and
//! responses ([`api`] module) are shaped like etcd's protobuf messages
//! and errors ([`KvError`]) carry etcd's messages.
//!
//! * Writes are [`Command`]s carried in the log: put, delete range, txn
//!   (compares on value, version, create/mod revision, lease; nested txns;
//!   one revision per write txn; read-only txns do not bump it), compact,
//!   lease grant/revoke/keep-alive. Lease expiry is the leader's timer,
//!   also carried in the log.
//! * Reads are [`Query`]s over the applied state: range, read-only txn,
//!   lease time-to-live, lease list. A server serves serializable reads
//!   with a local query and linearizable ones with a consistent query.
//!
//! # Driving it
//!
//! Through chorus-raft, as any machine: the core calls
//! [`Machine::apply`](chorus_raft::Machine::apply) for every committed
//! command; the reply goes to the proposer. Every
//! `release_cursor_every_entries` entries the machine asks for a snapshot
//! ([`KvConfig`]). Without Raft (tests, simulators),
//! [`KvMachine::apply_command`], [`KvMachine::expire_leases`] (a timer
//! firing, due after [`KvMachine::lease_timer_ms`]) and
//! [`KvMachine::read`] do the same.
//!
//! ```
//! use chorus_kv::*;
//! use chorus_raft::ApplyMeta;
//!
//! let mut kv = KvMachine::default();
//! // What chorus-raft passes for the committed entry at index 1.
//! let meta = ApplyMeta { index: 1, term: 1, time_ms: 1_700_000_000_000, machine_version: 0 };
//! let put = PutRequest { key: "greeting".into(), value: "hello".into(), ..Default::default() };
//! let Ok(Response::Put(reply)) = kv.apply_command(&meta, Command::Put(put)).reply else {
//!     unreachable!()
//! };
//! assert_eq!(reply.header.revision, 2); // an empty store is at revision 1
//!
//! // A serializable read: a local query.
//! let get = Query::Range(RangeRequest { key: "greeting".into(), ..Default::default() });
//! let Ok(QueryResponse::Range(found)) = kv.read(&get) else { unreachable!() };
//! assert_eq!(found.kvs[0].value, "hello");
//!
//! // A node's watch service pulls what was applied since it last looked.
//! let batch = kv.events(2, &KeyRange::all(), 100).unwrap();
//! assert_eq!(batch.events[0].kind, EventKind::Put);
//! assert_eq!(batch.next_revision, 3);
//! ```
//!
//! ## Watches
//!
//! Watchers are local to a node and not replicated; the machine keeps
//! the history and the runtime pulls from it. Every applied write is in
//! the history as [`Event`]s (put or delete, with the key's previous
//! value) until compaction, and [`KvMachine::events`] returns them from
//! any revision on, for a key range, in bounded batches. A node's watch
//! service:
//!
//! 1. on a new watch from revision `s` (etcd's `start_revision`, or the
//!    current revision plus one), catches up with `events(s, range, max)`
//!    until `next_revision` passes [`KvMachine::revision`], then joins
//!    the live feed;
//! 2. after each batch of actions the core returns, if the machine's
//!    revision moved past the last revision delivered `d`, calls
//!    `events(d + 1, KeyRange::all(), max)` once and routes each event to
//!    the watchers whose range contains its key;
//! 3. on `Compacted` (a watcher or the whole feed fell behind a
//!    compaction, or a snapshot was installed that starts later) cancels
//!    the watchers concerned with the compacted revision, as etcd does.
//!
//! This works the same on leaders and followers (a follower applies the
//! same entries; machine effects run only on leaders, so a push design
//! would not reach followers' watchers), costs nothing per watcher on the
//! apply path, and needs no registration in replicated state.
//!
//! ## Lease expiry
//!
//! The leader decides when a lease expires, and the decision is a log
//! entry. The machine keeps one timer, [`LEASE_TIMER`], armed (through
//! [`Effect::Timer`](chorus_raft::Effect::Timer), which runs on the leader
//! only) for the earliest lease deadline: re-armed whenever that deadline
//! moves, fired at once when a server becomes leader. When it fires the
//! runtime appends the firing to the log; applying it
//! ([`KvMachine::expire_leases`]) revokes the leases whose deadline the
//! *lease clock* has reached (at most `lease_expire_batch_max` per firing,
//! each at its own revision) and re-arms the timer, so every replica
//! revokes the same leases at the same index. A timer, because a quiesced
//! leader is not ticked; while it is ticked,
//! [`Machine::tick`](chorus_raft::Machine::tick) re-arms the timer from
//! the leader's own clock ([`KvMachine::lease_timer_ms_at`]), which
//! corrects a timer armed while a restarted leader replayed old entries.
//! Keep-alives are commands too.
//!
//! The lease clock is part of the replicated state and moves only when an
//! entry is applied, by rules that use nothing but the entry's term and
//! `time_ms` (the leader's clock, written into the log), so every replica
//! agrees on it:
//!
//! * within a term (one leader, one clock) it advances by the leader's
//!   elapsed time since the previous entry (a clock that steps back adds
//!   nothing);
//! * at every entry it moves up to the entry's `time_ms` minus
//!   `clock_skew_max_ms` if that is ahead: a time every node's clock has
//!   reached. It never goes back.
//!
//! A lease granted or renewed when the lease clock reads `r` expires when
//! it reaches `r + clock_skew_max_ms + ttl`. A new leader continues every
//! deadline where the old one left it: a lease's remaining time survives a
//! leader change, instead of restarting at the full TTL as in etcd.
//!
//! **Clock assumption.** The runtime's `now_ms` is wall-clock time
//! (milliseconds since the Unix epoch; chorus-node's clock is) and any two
//! nodes' clocks differ by at most `clock_skew_max_ms`. Under it:
//!
//! * no lease expires before its TTL has passed since the grant or the
//!   last keep-alive was applied, whichever leaders' clocks were involved:
//!   the lease clock never runs ahead of the fastest node's clock less the
//!   bound, and a deadline is the granting leader's clock plus the TTL or
//!   later;
//! * a lease expires at most `clock_skew_max_ms` after its TTL (plus the
//!   time the timer's firing takes to commit), and, across a leader
//!   change to a leader whose clock is behind, at most the time between
//!   the old leader's last entry and the new one's first later still.
//!
//! When the assumption breaks, a new leader whose clock is behind (even
//! reset to zero) still drives the lease clock by its own elapsed time
//! from where the log left it (its election fires the timer at once, which
//! puts an entry of its own in the log), so it never extends leases beyond
//! that gap; only a leader whose clock is ahead by more than the bound
//! expires leases early, by the excess. `LeaseTimeToLive` reports the TTL
//! without the skew margin, counted down on the serving node's clock.
//!
//! # Departures from etcd
//!
//! * Lease keep-alives go through the log (etcd renews on the leader
//!   only, and a new leader grants every lease its full TTL again).
//! * Lease ids chosen by the machine derive from the log index, not from
//!   the member id and a clock.
//! * The duplicate-key check of txns is symmetric (etcd misses a nested
//!   txn's put under a later sibling's delete), and a whole txn holds at
//!   most [`TXN_OPS_TOTAL_MAX`] operations.
//! * Compaction keeps each key's value just below the compacted revision
//!   when it is live, so events at the compacted revision keep their
//!   `prev_kv`.
pub mod api;
mod error;
mod lease;
mod machine;
mod mvcc;
mod range;
mod snapshot;
mod txn;

pub use api::*;
pub use error::KvError;
pub use machine::{
    Applied, Command, KvConfig, KvMachine, Query, QueryReply, QueryResponse, Reply, Response,
    LEASE_TIMER, LEASE_TTL_MAX_S,
};
pub use range::{prefix_end, KeyRange};
pub use txn::TXN_OPS_TOTAL_MAX;

//! The replicated machine: commands, queries, configuration, and the
//! [`Machine`] implementation chorus-raft drives.

use std::collections::BTreeMap;
use std::convert::Infallible;

use chorus_raft::{ApplyMeta, Effect, Effects, Machine, MachineEvent, RestoreError, Role};
use serde::{Deserialize, Serialize};

use crate::api::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, EventBatch,
    ExpireLeasesResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MemberInfo, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::error::KvError;
use crate::lease::{LeaseClock, Leases};
use crate::mvcc::Store;
use crate::range::KeyRange;
use crate::{snapshot, txn};

/// The largest TTL a lease may ask for (etcd's `MaxLeaseTTL`, seconds).
pub const LEASE_TTL_MAX_S: i64 = 9_000_000_000;

/// The name of the machine's one timer ([`Effect::Timer`]): when it fires,
/// the leader appends it to the log and applying it expires leases.
pub const LEASE_TIMER: &str = "chorus-kv/lease-expiry";

/// The machine's settings. Part of the replicated state (stored in
/// snapshots), so every replica decides alike; set once when the cluster
/// is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvConfig {
    /// Ask for a snapshot (`release_cursor`) after this many applied
    /// entries (commands and lease timer firings), so the log stays
    /// bounded; 0 never asks.
    pub release_cursor_every_entries: u64,
    /// Most operations per txn level (etcd's `--max-txn-ops`, 128).
    pub txn_ops_max: usize,
    /// Shortest lease TTL granted, seconds; shorter asks are raised to it
    /// (etcd derives it from the election timeout: a lease must outlive a
    /// leader change). At least 1.
    pub lease_ttl_min_s: i64,
    /// Bound on the difference between any two nodes' clocks: how far a
    /// new leader's clock is trusted when it is ahead (crate docs, "Lease
    /// expiry").
    pub clock_skew_max_ms: u64,
    /// Most leases one firing of the lease timer revokes (etcd revokes at
    /// most 1000 per second); the timer fires again at once for the rest.
    /// At least 1.
    pub lease_expire_batch_max: usize,
    /// Compact automatically, keeping this many revisions of history,
    /// once twice as many have accumulated; 0 leaves compaction to
    /// clients (etcd's default).
    pub auto_compact_retention_revisions: i64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            release_cursor_every_entries: 10_000,
            txn_ops_max: 128,
            lease_ttl_min_s: 2,
            clock_skew_max_ms: 500,
            lease_expire_batch_max: 1_000,
            auto_compact_retention_revisions: 0,
        }
    }
}

impl KvConfig {
    /// Why the configuration cannot be used, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.txn_ops_max == 0 {
            Some("txn_ops_max must be at least 1")
        } else if !(1..=LEASE_TTL_MAX_S).contains(&self.lease_ttl_min_s) {
            Some("lease_ttl_min_s must be between 1 and LEASE_TTL_MAX_S")
        } else if self.lease_expire_batch_max == 0 {
            Some("lease_expire_batch_max must be at least 1")
        } else if self.auto_compact_retention_revisions < 0 {
            Some("auto_compact_retention_revisions must not be negative")
        } else {
            None
        }
    }
}

/// The writes carried in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseKeepAlive(LeaseKeepAliveRequest),
    /// Add or replace a member's entry in the member directory (neither
    /// touches the keyspace's revision).
    MemberPut(MemberInfo),
    /// Drop a member's entry.
    MemberRemove {
        id: u64,
    },
}

impl Command {
    /// The checks that need no state (etcd does them before proposing).
    /// A server may call this to refuse a request without a log entry;
    /// applying repeats them, so skipping it is safe.
    pub fn check(&self, config: &KvConfig) -> Result<(), KvError> {
        match self {
            Command::Put(put) => txn::check_put(put),
            Command::DeleteRange(delete) => txn::check_delete(delete),
            Command::Txn(request) => txn::check_txn(request, config.txn_ops_max),
            Command::LeaseGrant(grant) if grant.ttl > LEASE_TTL_MAX_S => {
                Err(KvError::LeaseTtlTooLarge)
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// The directory after a `MemberPut` or `MemberRemove`.
    Members(Vec<MemberInfo>),
}

/// What applying a command returns to its proposer.
pub type Reply = Result<Response, KvError>;

/// The reads, served over the machine's current state (serializable reads
/// locally, linearizable ones through Raft's ReadIndex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Range(RangeRequest),
    /// Only a txn that reads in every branch ([`TxnRequest::is_read_only`]).
    Txn(TxnRequest),
    /// `now_ms` is the serving node's clock (the time the runtime gives
    /// the core), used to count down from the last applied command.
    LeaseTimeToLive {
        request: LeaseTimeToLiveRequest,
        now_ms: u64,
    },
    LeaseLeases,
    /// The member directory, by id.
    Members,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResponse {
    Range(RangeResponse),
    Txn(TxnResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
    Members(Vec<MemberInfo>),
}

pub type QueryReply = Result<QueryResponse, KvError>;

impl TxnRequest {
    /// Does the txn only read, in every branch at every level (so it may
    /// be served as a [`Query`])?
    pub fn is_read_only(&self) -> bool {
        txn::is_read_only(self)
    }
}

/// The outcome of [`KvMachine::apply_command`] and
/// [`KvMachine::expire_leases`].
#[derive(Debug)]
pub struct Applied<T = Reply> {
    pub reply: T,
    /// The state after this command may be snapshotted and the log below
    /// it released.
    pub release_cursor: bool,
}

/// The etcd v3 key-value machine (see the crate docs).
#[derive(Clone, Debug, PartialEq)]
pub struct KvMachine {
    pub(crate) config: KvConfig,
    pub(crate) store: Store,
    pub(crate) leases: Leases,
    pub(crate) clock: LeaseClock,
    /// Entries applied since the last release_cursor.
    pub(crate) entries_since_release: u64,
    /// The member directory ([`MemberInfo`]), by id.
    pub(crate) members: BTreeMap<u64, MemberInfo>,
}

impl Default for KvMachine {
    fn default() -> Self {
        KvMachine::new(KvConfig::default())
    }
}

impl KvMachine {
    /// An empty store (revision 1). Panics on a configuration with a
    /// [`KvConfig::problem`]: that is a programming error.
    pub fn new(config: KvConfig) -> Self {
        if let Some(problem) = config.problem() {
            panic!("bad KvConfig: {problem}");
        }
        KvMachine {
            config,
            store: Store::default(),
            leases: Leases::default(),
            clock: LeaseClock::default(),
            entries_since_release: 0,
            members: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// The newest revision (1 for an empty store).
    pub fn revision(&self) -> i64 {
        self.store.revision()
    }

    /// History below this revision is gone (0 before any compaction).
    pub fn compact_revision(&self) -> i64 {
        self.store.compacted()
    }

    /// The events of keys in `range` at revisions `>= from_revision`, for
    /// watchers: whole revisions, stopping after the revision in which
    /// `events_max` is reached. `Compacted` when `from_revision` is below
    /// the compacted revision (a watcher must then be cancelled, as etcd
    /// does, with [`KvMachine::compact_revision`]).
    pub fn events(
        &self,
        from_revision: i64,
        range: &KeyRange,
        events_max: usize,
    ) -> Result<EventBatch, KvError> {
        self.store.events(from_revision, range, events_max)
    }

    /// How long until the earliest lease deadline, on the lease clock as
    /// of the last applied entry (0 when one has passed); `None` without
    /// leases. The delay the lease timer is armed with right after an
    /// entry is applied.
    pub fn lease_timer_ms(&self) -> Option<u64> {
        self.leases
            .first_deadline_ms()
            .map(|deadline_ms| deadline_ms.saturating_sub(self.clock.now_ms))
    }

    /// The same delay for a leader whose clock reads `now_ms`: counted
    /// from now, so it also corrects a timer armed while old entries were
    /// applied late (a restarted leader replaying its log). 0 when this
    /// clock reads earlier than the last entry's: that was another
    /// leader's clock, and an entry of this leader's puts the lease clock
    /// on its own.
    pub fn lease_timer_ms_at(&self, now_ms: u64) -> Option<u64> {
        let skew_ms = self.config.clock_skew_max_ms;
        self.leases.first_deadline_ms().map(|deadline_ms| {
            if now_ms < self.clock.entry_time_ms {
                0
            } else {
                deadline_ms.saturating_sub(self.clock.estimate(now_ms, skew_ms))
            }
        })
    }

    /// Apply one command: what [`Machine::apply`] does, without the
    /// effects plumbing, so simulators and tests can drive the machine
    /// directly.
    pub fn apply_command(&mut self, meta: &ApplyMeta, command: Command) -> Applied {
        self.clock
            .observe(meta.term, meta.time_ms, self.config.clock_skew_max_ms);
        let reply = match command {
            Command::Put(request) => self.put(request).map(Response::Put),
            Command::DeleteRange(request) => self.delete_range(request).map(Response::DeleteRange),
            Command::Txn(request) => self.txn(request).map(Response::Txn),
            Command::Compact(request) => self.compact(request).map(Response::Compact),
            Command::LeaseGrant(request) => {
                self.lease_grant(meta, request).map(Response::LeaseGrant)
            }
            Command::LeaseRevoke(request) => self.lease_revoke(request).map(Response::LeaseRevoke),
            Command::LeaseKeepAlive(request) => {
                self.lease_keep_alive(request).map(Response::LeaseKeepAlive)
            }
            Command::MemberPut(member) => {
                self.members.insert(member.id, member);
                Ok(Response::Members(self.members.values().cloned().collect()))
            }
            Command::MemberRemove { id } => {
                self.members.remove(&id);
                Ok(Response::Members(self.members.values().cloned().collect()))
            }
        };
        self.finish_entry(reply)
    }

    /// Expire the leases whose deadline the lease clock has reached at
    /// this entry (at most `lease_expire_batch_max`, earliest first), each
    /// at its own revision as etcd revokes each expired lease on its own:
    /// what applying a [`LEASE_TIMER`] firing does.
    pub fn expire_leases(&mut self, meta: &ApplyMeta) -> Applied<ExpireLeasesResponse> {
        self.clock
            .observe(meta.term, meta.time_ms, self.config.clock_skew_max_ms);
        let expired = self
            .leases
            .due(self.clock.now_ms, self.config.lease_expire_batch_max);
        for id in &expired {
            self.revoke(*id);
        }
        let reply = ExpireLeasesResponse {
            header: self.header(),
            expired,
        };
        self.finish_entry(reply)
    }

    /// What follows every applied entry: automatic compaction and the
    /// release_cursor count.
    fn finish_entry<T>(&mut self, reply: T) -> Applied<T> {
        self.auto_compact();
        self.entries_since_release += 1;
        let every = self.config.release_cursor_every_entries;
        let release_cursor = every > 0 && self.entries_since_release >= every;
        if release_cursor {
            self.entries_since_release = 0;
        }
        Applied {
            reply,
            release_cursor,
        }
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: self.store.revision(),
        }
    }

    fn put(&mut self, request: PutRequest) -> Result<PutResponse, KvError> {
        txn::check_put(&request)?;
        let planned = txn::plan_put(&self.store, &self.leases, request)?;
        let mut write = self.store.write();
        let mut response = txn::execute_put(&mut write, &mut self.leases, planned);
        write.finish();
        response.header = self.header();
        Ok(response)
    }

    fn delete_range(
        &mut self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        txn::check_delete(&request)?;
        let mut write = self.store.write();
        let mut response = txn::execute_delete(&mut write, &mut self.leases, request);
        write.finish();
        response.header = self.header();
        Ok(response)
    }

    fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, KvError> {
        txn::check_txn(&request, self.config.txn_ops_max)?;
        let succeeded = txn::compares_hold(&self.store, &request.compare);
        let branch = if succeeded {
            request.success
        } else {
            request.failure
        };
        let planned = txn::plan(&self.store, &self.leases, branch)?;
        let mut write = self.store.write();
        let mut responses = txn::execute(&mut write, &mut self.leases, planned);
        let revision = write.finish();
        txn::stamp(&mut responses, revision);
        Ok(TxnResponse {
            header: self.header(),
            succeeded,
            responses,
        })
    }

    fn compact(&mut self, request: CompactionRequest) -> Result<CompactionResponse, KvError> {
        // etcd's order: at or below the compacted revision first.
        if request.revision <= self.store.compacted() {
            return Err(KvError::Compacted {
                compact_revision: self.store.compacted(),
            });
        }
        if request.revision > self.store.revision() {
            return Err(KvError::FutureRevision);
        }
        self.store.compact(request.revision);
        Ok(CompactionResponse {
            header: self.header(),
        })
    }

    fn auto_compact(&mut self) {
        let retention = self.config.auto_compact_retention_revisions;
        let history = self.store.revision() - self.store.compacted();
        if retention > 0 && history >= retention.saturating_mul(2) {
            self.store.compact(self.store.revision() - retention);
        }
    }

    /// A lease renewed now for `ttl_s` expires at this lease time: the
    /// TTL plus the skew bound, so that no leader's clock can make it
    /// expire early (crate docs, "Lease expiry").
    fn deadline_ms(&self, ttl_s: i64) -> u64 {
        let ttl_ms = u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1_000);
        self.clock
            .now_ms
            .saturating_add(self.config.clock_skew_max_ms)
            .saturating_add(ttl_ms)
    }

    fn lease_grant(
        &mut self,
        meta: &ApplyMeta,
        request: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, KvError> {
        if request.ttl > LEASE_TTL_MAX_S {
            return Err(KvError::LeaseTtlTooLarge);
        }
        let id = match request.id {
            0 => self.choose_lease_id(meta.index),
            id if self.leases.contains(id) => return Err(KvError::LeaseExists),
            id => id,
        };
        let ttl = request.ttl.max(self.config.lease_ttl_min_s);
        self.leases.grant(id, ttl, self.deadline_ms(ttl));
        Ok(LeaseGrantResponse {
            header: self.header(),
            id,
            ttl,
        })
    }

    /// A positive id no lease holds, derived from the log index (the same
    /// on every replica) and spread like etcd's generated ids.
    fn choose_lease_id(&self, index: u64) -> i64 {
        let mut seed = index;
        loop {
            seed = splitmix64(seed);
            // The top bit cleared: positive as an i64.
            let id = i64::try_from(seed >> 1).unwrap_or(i64::MAX);
            if id != 0 && !self.leases.contains(id) {
                return id;
            }
        }
    }

    fn lease_revoke(
        &mut self,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, KvError> {
        if !self.revoke(request.id) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(LeaseRevokeResponse {
            header: self.header(),
        })
    }

    /// Remove a lease and delete its keys at one revision.
    fn revoke(&mut self, id: i64) -> bool {
        let Some(lease) = self.leases.remove(id) else {
            return false;
        };
        let mut write = self.store.write();
        for key in &lease.keys {
            write.delete(key);
        }
        write.finish();
        true
    }

    fn lease_keep_alive(
        &mut self,
        request: LeaseKeepAliveRequest,
    ) -> Result<LeaseKeepAliveResponse, KvError> {
        // A lease past its deadline is gone even if its expiry has not been
        // applied yet (etcd refuses to renew an expired lease).
        let ttl = match self.leases.get(request.id) {
            Some(lease) if lease.deadline_ms > self.clock.now_ms => lease.ttl_s,
            _ => return Err(KvError::LeaseNotFound),
        };
        self.leases.renew(request.id, self.deadline_ms(ttl));
        Ok(LeaseKeepAliveResponse {
            header: self.header(),
            id: request.id,
            ttl,
        })
    }

    fn time_to_live(
        &self,
        request: &LeaseTimeToLiveRequest,
        now_ms: u64,
    ) -> LeaseTimeToLiveResponse {
        let Some(lease) = self.leases.get(request.id) else {
            return LeaseTimeToLiveResponse {
                header: self.header(),
                id: request.id,
                ttl: -1,
                ..LeaseTimeToLiveResponse::default()
            };
        };
        // The TTL the client counts down, without the skew margin.
        let skew_ms = self.config.clock_skew_max_ms;
        let remaining_ms = lease
            .deadline_ms
            .saturating_sub(skew_ms)
            .saturating_sub(self.clock.estimate(now_ms, skew_ms));
        let remaining_s = i64::try_from(remaining_ms / 1_000).unwrap_or(i64::MAX);
        LeaseTimeToLiveResponse {
            header: self.header(),
            id: request.id,
            ttl: remaining_s.min(lease.ttl_s),
            granted_ttl: lease.ttl_s,
            keys: if request.keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Answer a read: what [`Machine::query`] does.
    pub fn read(&self, query: &Query) -> QueryReply {
        match query {
            Query::Range(request) => {
                txn::check_range(request)?;
                let revision = self.store.read_revision(request.revision)?;
                let mut response = self.store.range(request, revision);
                response.header = self.header();
                Ok(QueryResponse::Range(response))
            }
            Query::Txn(request) => {
                if !request.is_read_only() {
                    return Err(KvError::TxnNotReadOnly);
                }
                txn::check_txn(request, self.config.txn_ops_max)?;
                let mut response = txn::read(&self.store, request)?;
                let header = self.header();
                txn::stamp(&mut response.responses, header.revision);
                response.header = header;
                Ok(QueryResponse::Txn(response))
            }
            Query::LeaseTimeToLive { request, now_ms } => Ok(QueryResponse::LeaseTimeToLive(
                self.time_to_live(request, *now_ms),
            )),
            Query::LeaseLeases => Ok(QueryResponse::LeaseLeases(LeaseLeasesResponse {
                header: self.header(),
                leases: self.leases.by_id().keys().copied().collect(),
            })),
            Query::Members => Ok(QueryResponse::Members(
                self.members.values().cloned().collect(),
            )),
        }
    }
}

impl KvMachine {
    /// Arm the lease timer for the earliest deadline, or cancel it when
    /// no lease is left. Effects run on the leader only, so only its timer
    /// runs.
    fn arm_lease_timer(&self, effects: &mut Effects<Self>) {
        effects.push(Effect::Timer {
            name: LEASE_TIMER.to_string(),
            after_ms: self.lease_timer_ms(),
        });
    }
}

/// SplitMix64: a bijective mixer, so ids derived from distinct indexes
/// differ.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Machine for KvMachine {
    type Command = Command;
    type Reply = Reply;
    type Query = Query;
    type QueryReply = QueryReply;
    /// The machine sends no messages: watchers pull events
    /// ([`KvMachine::events`]).
    type Message = Infallible;

    fn apply(&mut self, meta: &ApplyMeta, command: Command, effects: &mut Effects<Self>) -> Reply {
        let first_deadline_ms = self.leases.first_deadline_ms();
        let applied = self.apply_command(meta, command);
        if applied.release_cursor {
            effects.release_cursor();
        }
        // Re-arm the timer only when the earliest deadline moved (a grant,
        // a keep-alive or a revoke of the earliest lease).
        if self.leases.first_deadline_ms() != first_deadline_ms {
            self.arm_lease_timer(effects);
        }
        applied.reply
    }

    fn event(&mut self, meta: &ApplyMeta, event: MachineEvent, effects: &mut Effects<Self>) {
        let MachineEvent::Timer { name } = event else {
            return;
        };
        if name != LEASE_TIMER {
            return;
        }
        let applied = self.expire_leases(meta);
        if applied.release_cursor {
            effects.release_cursor();
        }
        self.arm_lease_timer(effects);
    }

    fn state_enter(&mut self, role: Role, effects: &mut Effects<Self>) {
        // A new leader fires the timer at once: the firing puts the lease
        // clock on this leader's time (see "Lease expiry" in the crate
        // docs) and re-arms it with the exact delay.
        if role == Role::Leader && self.leases.first_deadline_ms().is_some() {
            effects.push(Effect::Timer {
                name: LEASE_TIMER.to_string(),
                after_ms: Some(0),
            });
        }
    }

    fn tick(&self, now_ms: u64, effects: &mut Effects<Self>) {
        // Keep the timer true to this leader's clock while it is ticked (a
        // quiesced leader is not, and relies on the timer as armed).
        if let Some(after_ms) = self.lease_timer_ms_at(now_ms) {
            effects.push(Effect::Timer {
                name: LEASE_TIMER.to_string(),
                after_ms: Some(after_ms),
            });
        }
    }

    fn query(&self, query: &Query) -> QueryReply {
        self.read(query)
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    fn restore(data: &[u8]) -> Result<Self, RestoreError> {
        snapshot::decode(data).map_err(|reason| RestoreError { reason })
    }
}

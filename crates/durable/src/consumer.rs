//! The consumer: takes queued messages in order, runs the callbacks and
//! commits each result in one txn.
//!
//! # The commit
//!
//! A message at position `p` commits with
//!
//! ```text
//! compare  mod(s) == state revision read     -- nobody committed since
//!          mod(q/p) == item revision read     -- still queued, not requeued
//!          version(l) == 0                    -- no lock
//!          create(o/p) == claim revision      -- still our claim (dead letters on)
//! success  put s = new state; delete q/p; delete a/p, o/p
//!          txn { version(w/p) > 0 ? put w/p = reply }   -- calls
//! failure  get s                              -- refresh and re-read
//! ```
//!
//! so a message's effects (state, reply, dequeue) happen together exactly
//! once: a consumer that dies before the commit leaves the item queued; a
//! consumer that loses a race (another consumer, a priority message, a
//! lock) fails its compares and discards its result. An `Indeterminate`
//! commit is re-sent: if the first one landed, the repeat fails its
//! compares, and the re-read finds the message gone.
//!
//! # Dead letters
//!
//! With a threshold, a consumer first *claims* the message: one txn
//! increments `a/p` (the attempt count) and puts `o/p` on the consumer's
//! lease, guarded by both keys' revisions. The count is durable before
//! the handler runs, so a crash counts: the lease expires, `o/p` goes,
//! and the next claim sees the higher count. A failing handler releases
//! the claim (deletes `o/p`). A message whose count has reached the
//! threshold is moved to `d/p` instead, with `handle_dead_letter`'s state
//! and a `DeadLetter` reply, in one txn.
//!
//! # Locks
//!
//! `Lock` commits the state and moves the message from `q/p` into the
//! lock key `l`; the lock's fencing token is `create(l)`, the commit's
//! revision. `handle_locked` runs outside any txn; its result commits
//! only under `create(l) == token`. Another consumer that sees the same
//! token for `lock_timeout` (timed on its own monotonic clock, so clock
//! skew between nodes does not matter) deletes `l` and puts the message
//! back at `q/p`: the holder's commit then fails, and the message is
//! handled again, first in line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_backend::{
    BackendError, KeyValue, KvBackend, KvError, RangeRequest, RequestOp, TxnRequest, TxnResponse,
    Watch, WatchRequest,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::format::{
    decode, encode, encode_user, wrong, DeadRecord, Item, ItemKind, LockRecord, Record, ReplyRecord,
};
use crate::handle::{decode_message, state_bytes, Shared};
use crate::ops;
use crate::server::{guarded, Action, DurableServer, Outcome};

/// Queue items read at once: the consumer works through them with one
/// commit each before reading again.
pub const PREFETCH_ITEMS_MAX: i64 = 16;
/// Wait before retrying a message whose handler failed when dead letters
/// are off (the message is retried for ever; the wait keeps a poison
/// message from spinning a core).
pub const FAILURE_RETRY_WAIT: Duration = Duration::from_millis(100);

/// Why a consumer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerExit {
    /// [`Durable::shutdown`](crate::Durable::shutdown) asked it to.
    Shutdown,
    /// A handler returned `Stop`.
    Stopped { reason: String },
    /// The server was killed (its state is gone).
    Killed,
}

/// What the consumer found in one read.
struct Snapshot {
    revision: i64,
    lock: Option<KeyValue>,
    /// `(position, item, mod_revision)`, in order.
    items: Vec<(u64, Item, i64)>,
    /// Attempt counts by position: `(count, mod_revision)`.
    attempts: HashMap<u64, (u32, i64)>,
    /// Claims by position: `(lease, create_revision)`.
    owners: HashMap<u64, (i64, i64)>,
}

/// What became of one message.
enum Processed {
    Committed,
    /// Something changed under us: read again.
    Reread,
    /// Another consumer holds it: wait for a change.
    Wait,
    Exit(ConsumerExit),
}

/// A lease and the task that keeps it alive (aborted with it).
struct Lease {
    id: i64,
    lost: Arc<AtomicBool>,
    keep_alive: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

struct Consumer<S: DurableServer, B: KvBackend> {
    shared: Arc<Shared<S, B>>,
    /// The state's bytes and `mod_revision` as last read or committed.
    state: Option<(Vec<u8>, i64)>,
    lease: Option<Lease>,
    /// The lock token first seen and when (this consumer's clock).
    lock_seen: Option<(i64, Instant)>,
    /// The watch on the tenant, kept open across waits (see
    /// [`Consumer::wait_change`]); `None` until the first wait and after
    /// it ends.
    changes: Option<Watch>,
    stop: watch::Receiver<bool>,
}

/// The consumer task.
pub(crate) async fn run<S: DurableServer, B: KvBackend>(
    shared: Arc<Shared<S, B>>,
    stop: watch::Receiver<bool>,
) -> Result<ConsumerExit, Error> {
    let mut consumer = Consumer {
        shared,
        state: None,
        lease: None,
        lock_seen: None,
        changes: None,
        stop,
    };
    let mut wait = ops::BACKOFF_MIN;
    loop {
        if *consumer.stop.borrow() {
            return Ok(ConsumerExit::Shutdown);
        }
        match consumer.step().await {
            Ok(Some(exit)) => return Ok(exit),
            Ok(None) => wait = ops::BACKOFF_MIN,
            Err(Error::Backend(error)) if error.is_transient() => {
                tracing::debug!(%error, "consumer: transient store error");
                wait = ops::backoff(wait).await;
            }
            Err(error) => {
                tracing::warn!(%error, tenant = %consumer.shared.options.tenant, "consumer stops");
                return Err(error);
            }
        }
    }
}

/// Runs actions after a commit; a panicking action is logged, not
/// propagated (the commit stands).
pub(crate) fn run_actions(actions: Vec<Action>) {
    for action in actions {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(action)).is_err() {
            tracing::warn!("a durable-server action panicked");
        }
    }
}

/// Deletes the lock `lock` (if it still has the same token) and puts its
/// message back at its queue position. Whether it did.
pub(crate) async fn clear_lock<S, B: KvBackend>(
    shared: &Shared<S, B>,
    lock: &KeyValue,
) -> Result<bool, Error> {
    let record = match decode(&lock.key, &lock.value)? {
        Record::Lock(record) => record,
        other => return Err(wrong(&lock.key, "lock", &other)),
    };
    let keys = &shared.keys;
    let request = TxnRequest {
        compare: vec![ops::created_at(keys.lock(), lock.create_revision)],
        success: vec![
            ops::delete(keys.lock()),
            ops::put(keys.item(record.seq), encode(&Record::Item(record.item))?),
        ],
        failure: Vec::new(),
    };
    let backend = shared.backend.clone();
    let response = ops::retrying(|| backend.txn(request.clone())).await?;
    Ok(response.succeeded)
}

/// A call's reply as a nested txn: written only while the caller still
/// waits (its waiter key exists), so a caller that gave up leaves nothing
/// behind.
fn reply_op(waiter: Bytes, reply: ReplyRecord) -> Result<RequestOp, Error> {
    Ok(RequestOp::Txn(TxnRequest {
        compare: vec![ops::present(waiter.clone())],
        success: vec![ops::put(waiter, encode(&Record::Reply(reply))?)],
        failure: Vec::new(),
    }))
}

impl<S: DurableServer, B: KvBackend> Consumer<S, B> {
    fn claims(&self) -> Option<u32> {
        self.shared.options.dead_letter_threshold
    }

    /// One read and the messages it found. `Some` when the consumer ends.
    async fn step(&mut self) -> Result<Option<ConsumerExit>, Error> {
        let Some(snapshot) = self.read().await? else {
            return Ok(Some(ConsumerExit::Killed));
        };
        if let Some(lock) = &snapshot.lock {
            self.wait_locked(lock, snapshot.revision).await?;
            return Ok(None);
        }
        self.lock_seen = None;
        if snapshot.items.is_empty() {
            self.wait_change(snapshot.revision, None).await?;
            return Ok(None);
        }
        for (seq, item, item_mod) in &snapshot.items {
            match self.process(*seq, item, *item_mod, &snapshot).await? {
                Processed::Committed => {
                    if *self.stop.borrow() {
                        return Ok(None);
                    }
                }
                Processed::Reread => return Ok(None),
                Processed::Wait => {
                    self.wait_change(snapshot.revision, None).await?;
                    return Ok(None);
                }
                Processed::Exit(exit) => return Ok(Some(exit)),
            }
        }
        Ok(None)
    }

    /// Reads the state (unless the cache is still valid), the lock and the
    /// head of the queue in one read-only txn. `None` when the state is
    /// gone (killed).
    async fn read(&mut self) -> Result<Option<Snapshot>, Error> {
        let keys = &self.shared.keys;
        let cached = self.shared.options.cache && self.state.is_some();
        let claims = self.claims().is_some();
        let mut success = vec![
            RequestOp::Range(RangeRequest {
                key: keys.state(),
                keys_only: cached,
                ..Default::default()
            }),
            ops::get(keys.lock()),
            ops::first(keys.queue_prefix(), PREFETCH_ITEMS_MAX),
        ];
        if claims {
            success.push(ops::first(keys.attempts_prefix(), PREFETCH_ITEMS_MAX));
            success.push(ops::first(keys.owner_prefix(), PREFETCH_ITEMS_MAX));
        }
        let request = TxnRequest {
            compare: Vec::new(),
            success,
            failure: Vec::new(),
        };
        let backend = self.shared.backend.clone();
        let response = ops::retrying(|| backend.txn(request.clone())).await?;
        let Some(state) = ops::range_one(&response, 0)? else {
            return Ok(None);
        };
        let cache_valid = cached
            && self
                .state
                .as_ref()
                .is_some_and(|(_, revision)| *revision == state.mod_revision);
        if !cache_valid {
            if cached {
                // The keys-only read showed a newer state: fetch it.
                let (bytes, revision) = match self.shared.read_state().await {
                    Ok(found) => found,
                    Err(Error::NotFound(_)) => return Ok(None),
                    Err(error) => return Err(error),
                };
                self.state = Some((bytes, revision));
            } else {
                self.state = Some((state_bytes(&state.key, &state.value)?, state.mod_revision));
            }
        }
        let lock = ops::range_one(&response, 1)?.cloned();
        let mut items = Vec::new();
        let queue_prefix = keys.queue_prefix();
        for kv in ops::range_kvs(&response, 2)? {
            let seq = keys.seq_of(&queue_prefix, &kv.key)?;
            match decode(&kv.key, &kv.value)? {
                Record::Item(item) => items.push((seq, item, kv.mod_revision)),
                other => return Err(wrong(&kv.key, "item", &other)),
            }
        }
        let mut attempts = HashMap::new();
        let mut owners = HashMap::new();
        if claims {
            let prefix = keys.attempts_prefix();
            for kv in ops::range_kvs(&response, 3)? {
                let seq = keys.seq_of(&prefix, &kv.key)?;
                match decode(&kv.key, &kv.value)? {
                    Record::Attempts(count) => {
                        attempts.insert(seq, (count, kv.mod_revision));
                    }
                    other => return Err(wrong(&kv.key, "attempts", &other)),
                }
            }
            let prefix = keys.owner_prefix();
            for kv in ops::range_kvs(&response, 4)? {
                let seq = keys.seq_of(&prefix, &kv.key)?;
                owners.insert(seq, (kv.lease, kv.create_revision));
            }
        }
        Ok(Some(Snapshot {
            revision: response.header.revision,
            lock,
            items,
            attempts,
            owners,
        }))
    }

    /// Waits for any change to the tenant after `revision`, until
    /// `deadline`, or until asked to stop. Watching, not polling.
    ///
    /// One watch on the tenant stays open across waits: etcd delivers to a
    /// watch created at a past revision (one the store has already passed,
    /// as it has whenever anything was written since the read) from a
    /// resync loop that runs every 100 ms, so a watch opened per wait cost
    /// up to 100 ms per message there. The events the open watch buffered
    /// while the consumer worked are skipped up to `revision`: the read
    /// already saw them.
    async fn wait_change(&mut self, revision: i64, deadline: Option<Instant>) -> Result<(), Error> {
        let mut changes = match self.changes.take() {
            Some(changes) => changes,
            None => {
                let request =
                    WatchRequest::prefix(self.shared.keys.prefix()).from_revision(revision + 1);
                match self.shared.backend.watch(request).await {
                    Ok(changes) => changes,
                    // The store compacted past the read since: read again.
                    Err(BackendError::Kv(KvError::Compacted { .. })) => return Ok(()),
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // The handle is gone: nobody can stop us any more,
                        // so treat it as a stop request.
                        return Err(Error::Backend(BackendError::Closed));
                    }
                    break;
                }
                () = &mut sleep => break,
                batch = changes.next() => match batch {
                    Some(Ok(events)) => {
                        if events.iter().any(|event| event.kv.mod_revision > revision) {
                            break;
                        }
                    }
                    // The watch ended: read again, and open another at the
                    // next wait.
                    Some(Err(error)) if error.is_transient() => return Err(error.into()),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "consumer watch ended; reading again");
                        return Ok(());
                    }
                    None => return Ok(()),
                },
            }
        }
        self.changes = Some(changes);
        Ok(())
    }

    /// The queue is locked: wait for the holder, or clear a lock held
    /// longer than `lock_timeout`.
    async fn wait_locked(&mut self, lock: &KeyValue, revision: i64) -> Result<(), Error> {
        let now = Instant::now();
        let token = lock.create_revision;
        let first_seen = match self.lock_seen {
            Some((seen, at)) if seen == token => at,
            _ => {
                self.lock_seen = Some((token, now));
                now
            }
        };
        let deadline = match self.shared.options.lock_timeout {
            Some(timeout) if now.duration_since(first_seen) >= timeout => {
                if clear_lock(&self.shared, lock).await? {
                    tracing::warn!(token, tenant = %self.shared.options.tenant,
                        "cleared a lock held past lock_timeout; its message is requeued");
                }
                return Ok(());
            }
            Some(timeout) => Some(first_seen + timeout),
            None => None,
        };
        self.wait_change(revision, deadline).await
    }

    /// This consumer's lease (granted, or granted again if it was lost).
    async fn lease(&mut self) -> Result<i64, Error> {
        if let Some(lease) = &self.lease {
            if !lease.lost.load(Ordering::Relaxed) {
                return Ok(lease.id);
            }
        }
        let ttl_s = self.shared.options.claim_ttl_s;
        let backend = self.shared.backend.clone();
        let granted = ops::retrying(|| backend.lease_grant(ttl_s)).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let id = granted.id;
        let period = Duration::from_millis((granted.ttl.max(1) as u64 * 1000) / 3);
        let backend = self.shared.backend.clone();
        let flag = Arc::clone(&lost);
        let keep_alive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match backend.lease_keep_alive(id).await {
                    Ok(_) => {}
                    Err(error) if error.is_transient() => {}
                    Err(_) => {
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
        self.lease = Some(Lease {
            id,
            lost,
            keep_alive,
        });
        Ok(id)
    }

    async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Error> {
        let backend = self.shared.backend.clone();
        // Every txn here is compare-guarded: a repeat after an unknown
        // outcome fails its compares if the first one landed.
        ops::retrying(|| backend.txn(request.clone())).await
    }

    /// Takes the state from a commit's failure branch (`get s` at
    /// `index`); `false` if it is gone.
    fn refresh_state(&mut self, response: &TxnResponse, index: usize) -> Result<bool, Error> {
        match ops::range_one(response, index)? {
            Some(kv) => {
                self.state = Some((state_bytes(&kv.key, &kv.value)?, kv.mod_revision));
                Ok(true)
            }
            None => {
                self.state = None;
                Ok(false)
            }
        }
    }

    fn current_state(&self) -> Result<(S::State, i64), Error> {
        let key = self.shared.keys.state();
        match &self.state {
            Some((bytes, revision)) => Ok((crate::format::decode_user(&key, bytes)?, *revision)),
            None => Err(Error::NotFound(self.shared.options.tenant.clone())),
        }
    }

    async fn process(
        &mut self,
        seq: u64,
        item: &Item,
        item_mod: i64,
        snapshot: &Snapshot,
    ) -> Result<Processed, Error> {
        let keys = self.shared.keys.clone();
        let token = match self.claims() {
            None => None,
            Some(threshold) => {
                let mine = match &self.lease {
                    Some(lease) if !lease.lost.load(Ordering::Relaxed) => Some(lease.id),
                    _ => None,
                };
                match snapshot.owners.get(&seq) {
                    Some((lease, created)) if Some(*lease) == mine => Some(*created),
                    Some(_) => return Ok(Processed::Wait),
                    None => {
                        let (count, count_mod) =
                            snapshot.attempts.get(&seq).copied().unwrap_or((0, 0));
                        if count >= threshold {
                            return self
                                .dead_letter(seq, item, item_mod, count, count_mod)
                                .await;
                        }
                        let lease = self.lease().await?;
                        let request = TxnRequest {
                            compare: vec![
                                ops::mod_is(keys.attempts(seq), count_mod),
                                ops::absent(keys.owner(seq)),
                                ops::mod_is(keys.item(seq), item_mod),
                                ops::absent(keys.lock()),
                            ],
                            success: vec![
                                ops::put(keys.attempts(seq), encode(&Record::Attempts(count + 1))?),
                                ops::put_leased(keys.owner(seq), encode(&Record::Owner)?, lease),
                            ],
                            failure: Vec::new(),
                        };
                        let response = self.txn(request).await?;
                        if !response.succeeded {
                            return Ok(Processed::Reread);
                        }
                        Some(response.header.revision)
                    }
                }
            }
        };
        let (state, state_mod) = self.current_state()?;
        let server = &self.shared.server;
        let outcome = match decode_message::<S>(&keys.item(seq), item) {
            Ok(message) => guarded(|| match message {
                crate::Message::Call(call) => server.handle_call(call, state),
                crate::Message::Cast(cast) => server.handle_cast(cast, state),
            }),
            Err(error) => Err(error.to_string()),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(reason) => {
                tracing::warn!(seq, %reason, tenant = %self.shared.options.tenant,
                    "handler failed; the message stays queued");
                match token {
                    Some(token) => {
                        let request = TxnRequest {
                            compare: vec![ops::created_at(keys.owner(seq), token)],
                            success: vec![ops::delete(keys.owner(seq))],
                            failure: Vec::new(),
                        };
                        self.txn(request).await?;
                    }
                    None => tokio::time::sleep(FAILURE_RETRY_WAIT).await,
                }
                return Ok(Processed::Reread);
            }
        };
        let mut compare = vec![
            ops::mod_is(keys.state(), state_mod),
            ops::mod_is(keys.item(seq), item_mod),
            ops::absent(keys.lock()),
        ];
        let mut success = vec![ops::delete(keys.item(seq))];
        if let Some(token) = token {
            compare.push(ops::created_at(keys.owner(seq), token));
            success.push(ops::delete(keys.attempts(seq)));
            success.push(ops::delete(keys.owner(seq)));
        }
        if let Outcome::Lock { state } = outcome {
            let state = encode_user("the state", &state)?;
            success.push(ops::put(
                keys.state(),
                encode(&Record::State(state.clone()))?,
            ));
            let lock = LockRecord {
                seq,
                item: item.clone(),
            };
            success.push(ops::put(keys.lock(), encode(&Record::Lock(lock))?));
            let response = self
                .txn(TxnRequest {
                    compare,
                    success,
                    failure: vec![ops::get(keys.state())],
                })
                .await?;
            if !response.succeeded {
                return self.lost(&response);
            }
            let token = response.header.revision;
            self.state = Some((state, token));
            return self.run_locked(seq, item, token).await;
        }
        let (state, reply, actions, exit) = settle(outcome, item.kind)?;
        let state = encode_user("the state", &state)?;
        success.push(ops::put(
            keys.state(),
            encode(&Record::State(state.clone()))?,
        ));
        if let Some(reply) = reply {
            success.push(reply_op(keys.waiter(seq), reply)?);
        }
        let response = self
            .txn(TxnRequest {
                compare,
                success,
                failure: vec![ops::get(keys.state())],
            })
            .await?;
        if !response.succeeded {
            return self.lost(&response);
        }
        self.state = Some((state, response.header.revision));
        run_actions(actions);
        Ok(match exit {
            Some(reason) => Processed::Exit(ConsumerExit::Stopped { reason }),
            None => Processed::Committed,
        })
    }

    /// A commit whose compares failed: refresh the state and read again.
    fn lost(&mut self, response: &TxnResponse) -> Result<Processed, Error> {
        Ok(if self.refresh_state(response, 0)? {
            Processed::Reread
        } else {
            Processed::Exit(ConsumerExit::Killed)
        })
    }

    /// Moves a message that failed `count` times to the dead-letter queue.
    async fn dead_letter(
        &mut self,
        seq: u64,
        item: &Item,
        item_mod: i64,
        count: u32,
        count_mod: i64,
    ) -> Result<Processed, Error> {
        let keys = self.shared.keys.clone();
        let (state, state_mod) = self.current_state()?;
        let server = &self.shared.server;
        let handled = match decode_message::<S>(&keys.item(seq), item) {
            Ok(message) => guarded(|| server.handle_dead_letter(message, count, state)),
            Err(error) => Err(error.to_string()),
        };
        let mut compare = vec![
            ops::mod_is(keys.item(seq), item_mod),
            ops::mod_is(keys.attempts(seq), count_mod),
            ops::absent(keys.owner(seq)),
            ops::mod_is(keys.state(), state_mod),
        ];
        let dead = DeadRecord {
            item: item.clone(),
            attempts: count,
        };
        let mut success = vec![
            ops::delete(keys.item(seq)),
            ops::delete(keys.attempts(seq)),
            ops::put(keys.dead(seq), encode(&Record::Dead(dead))?),
        ];
        if item.kind == ItemKind::Call {
            success.push(reply_op(
                keys.waiter(seq),
                ReplyRecord::DeadLetter { attempts: count },
            )?);
        }
        let mut actions = Vec::new();
        let mut new_state = None;
        match handled {
            Ok(outcome) => {
                let (state, taken) = match outcome {
                    Outcome::Reply { state, actions, .. } | Outcome::NoReply { state, actions } => {
                        (state, actions)
                    }
                    Outcome::Lock { state } | Outcome::Stop { state, .. } => (state, Vec::new()),
                };
                actions = taken;
                let state = encode_user("the state", &state)?;
                success.push(ops::put(
                    keys.state(),
                    encode(&Record::State(state.clone()))?,
                ));
                new_state = Some(state);
            }
            Err(reason) => {
                tracing::warn!(seq, %reason, "handle_dead_letter failed; state unchanged");
                compare.pop();
            }
        }
        tracing::warn!(seq, attempts = count, tenant = %self.shared.options.tenant,
            "message dead-lettered");
        let response = self
            .txn(TxnRequest {
                compare,
                success,
                failure: vec![ops::get(keys.state())],
            })
            .await?;
        if !response.succeeded {
            return self.lost(&response);
        }
        if let Some(state) = new_state {
            self.state = Some((state, response.header.revision));
        }
        run_actions(actions);
        Ok(Processed::Committed)
    }

    /// Runs `handle_locked` for the message at `seq` under lock `token`
    /// and commits its result if the lock is still ours.
    async fn run_locked(&mut self, seq: u64, item: &Item, token: i64) -> Result<Processed, Error> {
        let keys = self.shared.keys.clone();
        loop {
            let (state, state_mod) = self.current_state()?;
            let message = decode_message::<S>(&keys.item(seq), item)?;
            let shared = Arc::clone(&self.shared);
            // Long work by design: off the async workers.
            let outcome = tokio::task::spawn_blocking(move || {
                guarded(|| shared.server.handle_locked(message, state))
            })
            .await
            .unwrap_or_else(|error| Err(format!("handle_locked task: {error}")));
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(reason) => {
                    tracing::warn!(seq, %reason, "handle_locked failed; the message is requeued");
                    let lock = KeyValue {
                        key: keys.lock(),
                        create_revision: token,
                        value: encode(&Record::Lock(LockRecord {
                            seq,
                            item: item.clone(),
                        }))?,
                        ..Default::default()
                    };
                    clear_lock(&self.shared, &lock).await?;
                    if self.claims().is_none() {
                        tokio::time::sleep(FAILURE_RETRY_WAIT).await;
                    }
                    return Ok(Processed::Reread);
                }
            };
            let (state, reply, actions, exit) = settle(outcome, item.kind)?;
            let state = encode_user("the state", &state)?;
            let mut success = vec![
                ops::put(keys.state(), encode(&Record::State(state.clone()))?),
                ops::delete(keys.lock()),
            ];
            if let Some(reply) = reply {
                success.push(reply_op(keys.waiter(seq), reply)?);
            }
            let response = self
                .txn(TxnRequest {
                    compare: vec![
                        ops::created_at(keys.lock(), token),
                        ops::mod_is(keys.state(), state_mod),
                    ],
                    success,
                    failure: vec![ops::get(keys.state()), ops::get(keys.lock())],
                })
                .await?;
            if response.succeeded {
                self.state = Some((state, response.header.revision));
                run_actions(actions);
                return Ok(match exit {
                    Some(reason) => Processed::Exit(ConsumerExit::Stopped { reason }),
                    None => Processed::Committed,
                });
            }
            if !self.refresh_state(&response, 0)? {
                return Ok(Processed::Exit(ConsumerExit::Killed));
            }
            let still_ours =
                ops::range_one(&response, 1)?.is_some_and(|lock| lock.create_revision == token);
            if !still_ours {
                tracing::warn!(
                    seq,
                    token,
                    "lock superseded; handle_locked's result discarded"
                );
                return Ok(Processed::Reread);
            }
            // The lock is ours but a priority message changed the state:
            // handle the message again against the new state.
        }
    }
}

/// A committed outcome's parts: state, reply record (calls only), actions,
/// and the stop reason.
type Settled<S> = (
    <S as DurableServer>::State,
    Option<ReplyRecord>,
    Vec<Action>,
    Option<String>,
);

fn settle<S: DurableServer>(outcome: Outcome<S>, kind: ItemKind) -> Result<Settled<S>, Error> {
    let call = kind == ItemKind::Call;
    let encode_reply = |reply: &S::Reply| -> Result<ReplyRecord, Error> {
        Ok(ReplyRecord::Reply(encode_user("a reply", reply)?))
    };
    Ok(match outcome {
        Outcome::Reply {
            reply,
            state,
            actions,
        } => {
            let reply = if call {
                Some(encode_reply(&reply)?)
            } else {
                None
            };
            (state, reply, actions, None)
        }
        Outcome::NoReply { state, actions } => {
            (state, call.then_some(ReplyRecord::NoReply), actions, None)
        }
        Outcome::Stop {
            reason,
            reply,
            state,
        } => {
            let reply = match (call, reply) {
                (false, _) => None,
                (true, Some(reply)) => Some(encode_reply(&reply)?),
                (true, None) => Some(ReplyRecord::Stopped {
                    reason: reason.clone(),
                }),
            };
            (state, reply, Vec::new(), Some(reason))
        }
        // Reached only from handle_locked (a first lock is committed by
        // `process`): locking while locked is refused, the state kept.
        Outcome::Lock { state } => (
            state,
            call.then(|| {
                ReplyRecord::Failed("handle_locked returned lock, which is refused".into())
            }),
            Vec::new(),
            None,
        ),
    })
}

//! [`Durable`]: one process's handle on a durable server: it publishes
//! (call, cast, batches, outbox casts), runs priority messages itself,
//! and, with `consume`, runs a consumer task (`consumer.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_backend::{
    BackendError, Compare, Event, EventKind, KvBackend, KvError, RequestOp, TxnRequest,
    TxnResponse, WatchRequest,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::consumer::{self, ConsumerExit};
use crate::error::Error;
use crate::format::{
    check_name, decode, decode_user, encode, encode_user, wrong, Item, ItemKind, Keys, Record,
    ReplyRecord,
};
use crate::ops;
use crate::options::{StartOptions, CALL_TIMEOUT_DEFAULT};
use crate::registry::Registry;
use crate::replies::{reply_in, Delivery, Replies};
use crate::server::{guarded, DurableServer, Message, Outcome};

/// Most messages in one [`Durable::cast_batch`]: the batch is one txn with
/// a put per message plus the counter's, and etcd refuses txns of more
/// than 128 ops by default (`--max-txn-ops`).
pub const CAST_BATCH_MAX: usize = 100;
/// Most times an enqueue retries after losing the race for the queue
/// counter to other publishers before giving up with
/// [`Error::Contention`].
pub const ENQUEUE_CONFLICTS_MAX: u32 = 1_000;
/// Most times a priority message is re-run after the state changed under
/// it (a queued message or another priority message committed first).
pub const PRIORITY_CONFLICTS_MAX: u32 = 100;

/// What a handle and its consumer share.
pub(crate) struct Shared<S, B> {
    pub(crate) server: S,
    pub(crate) backend: B,
    pub(crate) keys: Keys,
    pub(crate) options: StartOptions,
    /// The queue counter as last seen: `(next position, mod_revision)`.
    /// A guess that saves a read per enqueue; the enqueue txn compares it.
    counter: Mutex<Option<(u64, i64)>>,
    /// Hands this handle's calls their replies.
    replies: Replies<B>,
}

/// A consumer task and the switch that stops it.
struct ConsumerTask {
    join: Option<JoinHandle<Result<ConsumerExit, Error>>>,
    stop: watch::Sender<bool>,
}

impl Drop for ConsumerTask {
    fn drop(&mut self) {
        if let Some(join) = &self.join {
            join.abort();
        }
    }
}

/// Where an outbox cast goes: add `compare` to your txn's compares and
/// `success` to its success ops. The message is enqueued if and only if
/// your txn commits. If your txn fails because these compares failed
/// (another publisher took the position), ask for a new outbox cast.
#[derive(Clone, Debug)]
pub struct OutboxCast {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    /// The queue position the message takes.
    pub seq: u64,
}

/// A dead-lettered message.
pub struct DeadLetter<S: DurableServer> {
    pub seq: u64,
    pub message: Message<S>,
    pub attempts: u32,
}

/// One process's handle on a durable server. Dropping it abandons its
/// consumer (use [`Durable::shutdown`] to let it finish its message).
pub struct Durable<S: DurableServer, B: KvBackend> {
    shared: Arc<Shared<S, B>>,
    consumer: Option<ConsumerTask>,
}

impl<S: DurableServer, B: KvBackend> Durable<S, B> {
    /// Joins (or creates) the durable server in `options.tenant`: writes
    /// `server.init()` if the tenant has no state (or `reset`), registers
    /// `options.name`, and starts a consumer if `options.consume`.
    pub async fn start(server: S, backend: B, options: StartOptions) -> Result<Self, Error> {
        let keys = Keys::new(&options.tenant)?;
        if let Some(name) = &options.name {
            check_name(name)?;
        }
        let replies = Replies::new(backend.clone(), keys.clone());
        let shared = Arc::new(Shared {
            server,
            backend,
            keys,
            options,
            counter: Mutex::new(None),
            replies,
        });
        shared.ensure_state().await?;
        if let Some(name) = &shared.options.name {
            Registry::new(shared.backend.clone())
                .register(name, &shared.options.tenant, std::any::type_name::<S>())
                .await?;
        }
        let mut durable = Durable {
            shared,
            consumer: None,
        };
        if durable.shared.options.consume {
            durable.start_consumer();
        }
        Ok(durable)
    }

    /// Starts a consumer in this process (if none runs).
    pub fn start_consumer(&mut self) {
        if self
            .consumer
            .as_ref()
            .is_some_and(|task| task.join.as_ref().is_some_and(|join| !join.is_finished()))
        {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let join = tokio::spawn(consumer::run(Arc::clone(&self.shared), stopped));
        self.consumer = Some(ConsumerTask {
            join: Some(join),
            stop,
        });
    }

    /// Abandons the consumer wherever it is (between a read and its
    /// commit, say), as a crash would: its message stays queued for
    /// another consumer. For tests and fast exits.
    pub fn abort_consumer(&mut self) {
        self.consumer = None;
    }

    /// Stops the consumer after its current message and waits for it;
    /// returns why it ended (`None`: there was none).
    pub async fn shutdown(&mut self) -> Result<Option<ConsumerExit>, Error> {
        let Some(mut task) = self.consumer.take() else {
            return Ok(None);
        };
        let _ = task.stop.send(true);
        match task.join.take() {
            Some(join) => match join.await {
                Ok(exit) => exit.map(Some),
                Err(error) => Err(Error::Handler(format!("consumer task: {error}"))),
            },
            None => Ok(None),
        }
    }

    /// Waits for the consumer to end on its own (killed, or a handler
    /// returned `Stop`).
    pub async fn consumer_exit(&mut self) -> Result<Option<ConsumerExit>, Error> {
        let Some(task) = self.consumer.as_mut() else {
            return Ok(None);
        };
        let Some(join) = task.join.take() else {
            return Ok(None);
        };
        self.consumer = None;
        match join.await {
            Ok(exit) => exit.map(Some),
            Err(error) => Err(Error::Handler(format!("consumer task: {error}"))),
        }
    }

    /// The tenant's keys start with this (`<tenant>` and a NUL byte).
    pub fn key_prefix(&self) -> Bytes {
        self.shared.keys.prefix()
    }

    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// A call through the queue with the default 5 s timeout.
    pub async fn call(&self, call: S::Call) -> Result<S::Reply, Error> {
        self.call_timeout(call, Some(CALL_TIMEOUT_DEFAULT)).await
    }

    /// A call through the queue; `None` waits for ever. On timeout the
    /// message stays queued (it is processed; its reply is dropped).
    pub async fn call_timeout(
        &self,
        call: S::Call,
        timeout: Option<Duration>,
    ) -> Result<S::Reply, Error> {
        let item = Item {
            kind: ItemKind::Call,
            message: encode_user("a call", &call)?,
        };
        let (seq, revision) = self.shared.enqueue(vec![item], true).await?;
        let waiting = self.shared.await_reply(seq, revision);
        let outcome = match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, waiting).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout(timeout)),
            },
            None => waiting.await,
        };
        if !matches!(outcome, Err(Error::Killed)) {
            // The waiter key is the caller's to remove; after a timeout
            // its absence tells the consumer to drop the reply.
            let key = self.shared.keys.waiter(seq);
            let backend = self.shared.backend.clone();
            if let Err(error) =
                ops::retrying(|| backend.txn(TxnRequest::with(vec![ops::delete(key.clone())])))
                    .await
            {
                tracing::warn!(%error, "removing a waiter key");
            }
        }
        let reply = outcome?;
        self.shared.reply_of(seq, reply)
    }

    /// Enqueues a cast; returns once it is durably queued, exactly once
    /// even if the store's answer is lost in a failover.
    pub async fn cast(&self, cast: S::Cast) -> Result<(), Error> {
        let item = Item {
            kind: ItemKind::Cast,
            message: encode_user("a cast", &cast)?,
        };
        self.shared.enqueue(vec![item], false).await.map(|_| ())
    }

    /// Enqueues every cast in one txn: all or none, contiguous and in
    /// order.
    pub async fn cast_batch(&self, casts: Vec<S::Cast>) -> Result<(), Error> {
        if casts.len() > CAST_BATCH_MAX {
            return Err(Error::BatchTooLarge {
                len: casts.len(),
                max: CAST_BATCH_MAX,
            });
        }
        if casts.is_empty() {
            return Ok(());
        }
        let items = casts
            .iter()
            .map(|cast| {
                Ok(Item {
                    kind: ItemKind::Cast,
                    message: encode_user("a cast", cast)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.shared.enqueue(items, false).await.map(|_| ())
    }

    /// The compares and ops that enqueue `cast` inside the caller's own
    /// txn (dgen's outbox): the message is queued if and only if that txn
    /// commits.
    pub async fn outbox_cast(&self, cast: S::Cast) -> Result<OutboxCast, Error> {
        let item = Item {
            kind: ItemKind::Cast,
            message: encode_user("a cast", &cast)?,
        };
        let (next, counter_mod) = self.shared.read_counter().await?;
        let keys = &self.shared.keys;
        Ok(OutboxCast {
            compare: vec![
                ops::mod_is(keys.counter(), counter_mod),
                ops::present(keys.state()),
            ],
            success: vec![
                ops::put(keys.counter(), encode(&Record::Counter(next + 1))?),
                ops::put(keys.item(next), encode(&Record::Item(item))?),
            ],
            seq: next,
        })
    }

    /// Handles `call` now, in this process, bypassing the queue, its order
    /// and any lock: use with caution (snapshot reads are the typical
    /// use). Re-run if the state changes before it commits.
    pub async fn priority_call(&self, call: S::Call) -> Result<S::Reply, Error> {
        let bytes = encode_user("a call", &call)?;
        let key = self.shared.keys.state();
        let server = &self.shared.server;
        let done = self
            .shared
            .priority(|state| {
                let call = decode_user(&key, &bytes)
                    .map_err(|error| -> crate::Failure { Box::new(error) })?;
                server.handle_call(call, state)
            })
            .await?;
        match done {
            (Some(reply), _) => Ok(reply),
            (None, Some(reason)) => Err(Error::Stopped { reason }),
            (None, None) => Err(Error::NoReply),
        }
    }

    /// Like [`Durable::priority_call`] for a cast: handled when this
    /// returns.
    pub async fn priority_cast(&self, cast: S::Cast) -> Result<(), Error> {
        let bytes = encode_user("a cast", &cast)?;
        let key = self.shared.keys.state();
        let server = &self.shared.server;
        self.shared
            .priority(|state| {
                let cast = decode_user(&key, &bytes)
                    .map_err(|error| -> crate::Failure { Box::new(error) })?;
                server.handle_cast(cast, state)
            })
            .await
            .map(|_| ())
    }

    /// Runs `handle_info` now against the durable state (as a priority
    /// message: no queue, no lock).
    pub async fn info(&self, info: S::Info) -> Result<(), Error>
    where
        S::Info: Clone,
    {
        let server = &self.shared.server;
        self.shared
            .priority(|state| server.handle_info(info.clone(), state))
            .await
            .map(|_| ())
    }

    /// Deletes the state, the queue, the dead letters, the lock and every
    /// waiting call (their callers get [`Error::Killed`]), and the
    /// registry entry; consumers everywhere stop with
    /// [`ConsumerExit::Killed`].
    pub async fn kill(&mut self) -> Result<(), Error> {
        let mut success = vec![ops::delete_prefix(self.shared.keys.prefix())];
        if let Some(name) = &self.shared.options.name {
            success.push(ops::delete(Registry::<B>::key(name)));
        }
        let backend = self.shared.backend.clone();
        ops::retrying(|| backend.txn(TxnRequest::with(success.clone()))).await?;
        if let Some(mut task) = self.consumer.take() {
            let _ = task.stop.send(true);
            if let Some(join) = task.join.take() {
                let _ = join.await;
            }
        }
        Ok(())
    }

    /// The state as committed now (a linearizable read).
    pub async fn state(&self) -> Result<S::State, Error> {
        let (bytes, _) = self.shared.read_state().await?;
        decode_user(&self.shared.keys.state(), &bytes)
    }

    /// Messages waiting in the queue.
    pub async fn queue_len(&self) -> Result<u64, Error> {
        let stats =
            crate::stats::tenant_stats(&self.shared.backend, &self.shared.options.tenant).await?;
        Ok(stats.queue_depth)
    }

    /// The dead-letter queue, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter<S>>, Error> {
        let keys = &self.shared.keys;
        let backend = self.shared.backend.clone();
        let prefix = keys.dead_prefix();
        let found = ops::retrying(|| backend.get_prefix(prefix.clone())).await?;
        found
            .kvs
            .iter()
            .map(|kv| {
                let seq = keys.seq_of(&prefix, &kv.key)?;
                match decode(&kv.key, &kv.value)? {
                    Record::Dead(dead) => Ok(DeadLetter {
                        seq,
                        message: decode_message::<S>(&kv.key, &dead.item)?,
                        attempts: dead.attempts,
                    }),
                    other => Err(wrong(&kv.key, "dead", &other)),
                }
            })
            .collect()
    }

    /// Clears the lock now, requeueing its message at its place (for an
    /// operator when `lock_timeout` is off). Whether there was a lock.
    pub async fn clear_lock(&self) -> Result<bool, Error> {
        let lock_key = self.shared.keys.lock();
        let backend = self.shared.backend.clone();
        let Some(kv) = ops::retrying(|| backend.get(lock_key.clone())).await? else {
            return Ok(false);
        };
        crate::consumer::clear_lock(&self.shared, &kv).await
    }
}

/// Decodes the user's message in a queue item.
pub(crate) fn decode_message<S: DurableServer>(
    key: &[u8],
    item: &Item,
) -> Result<Message<S>, Error> {
    Ok(match item.kind {
        ItemKind::Call => Message::Call(decode_user(key, &item.message)?),
        ItemKind::Cast => Message::Cast(decode_user(key, &item.message)?),
    })
}

/// A txn with only success ops and no compares.
trait TxnWith {
    fn with(success: Vec<RequestOp>) -> TxnRequest;
}

impl TxnWith for TxnRequest {
    fn with(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure: Vec::new(),
        }
    }
}

impl<S: DurableServer, B: KvBackend> Shared<S, B> {
    /// Writes the initial state unless one exists (or always, on reset).
    async fn ensure_state(&self) -> Result<(), Error> {
        let key = self.keys.state();
        if !self.options.reset {
            let backend = self.backend.clone();
            if ops::retrying(|| backend.get(key.clone())).await?.is_some() {
                return Ok(());
            }
        }
        let state = guarded(|| self.server.init()).map_err(Error::Handler)?;
        let value = encode(&Record::State(encode_user("the state", &state)?))?;
        let compare = if self.options.reset {
            Vec::new()
        } else {
            vec![ops::absent(key.clone())]
        };
        let request = TxnRequest {
            compare,
            success: vec![ops::put(key, value)],
            failure: Vec::new(),
        };
        let backend = self.backend.clone();
        // Repeating is harmless: the same value, guarded (or a reset).
        ops::retrying(|| backend.txn(request.clone())).await?;
        Ok(())
    }

    /// The state's bytes and `mod_revision`; `NotFound` if there is none.
    pub(crate) async fn read_state(&self) -> Result<(Vec<u8>, i64), Error> {
        let key = self.keys.state();
        let backend = self.backend.clone();
        match ops::retrying(|| backend.get(key.clone())).await? {
            Some(kv) => Ok((state_bytes(&kv.key, &kv.value)?, kv.mod_revision)),
            None => Err(Error::NotFound(self.options.tenant.clone())),
        }
    }

    async fn read_counter(&self) -> Result<(u64, i64), Error> {
        let key = self.keys.counter();
        let backend = self.backend.clone();
        let found = ops::retrying(|| backend.get(key.clone())).await?;
        counter_of(found.as_ref())
    }

    /// Appends `items` to the queue in one txn that also advances the
    /// counter (compared against the last value seen, so positions are
    /// unique and the order total); with `waiter`, puts the call's waiter
    /// key. Returns the first position and the txn's revision.
    ///
    /// A txn whose outcome is unknown (`Indeterminate`: leadership changed
    /// or the connection broke after it was sent) is settled by
    /// [`settle_enqueue`](Shared::settle_enqueue), so a failover neither
    /// loses the message nor queues it twice.
    pub(crate) async fn enqueue(
        &self,
        items: Vec<Item>,
        waiter: bool,
    ) -> Result<(u64, i64), Error> {
        let keys = &self.keys;
        let cached = self.counter.lock().ok().and_then(|counter| *counter);
        let (mut next, mut counter_mod) = match cached {
            Some(counter) => counter,
            None => self.read_counter().await?,
        };
        let records = items
            .into_iter()
            .map(|item| encode(&Record::Item(item)))
            .collect::<Result<Vec<_>, Error>>()?;
        let waiting = encode(&Record::Waiting)?;
        let tag: u64 = rand::random();
        let mut wait = ops::BACKOFF_MIN;
        for _ in 0..ENQUEUE_CONFLICTS_MAX {
            let end = next + records.len() as u64;
            let counter = encode(&Record::Enqueued { next: end, tag })?;
            let mut success = vec![ops::put(keys.counter(), counter)];
            for (offset, record) in records.iter().enumerate() {
                success.push(ops::put(keys.item(next + offset as u64), record.clone()));
            }
            if waiter {
                success.push(ops::put(keys.waiter(next), waiting.clone()));
            }
            let request = TxnRequest {
                compare: vec![
                    ops::mod_is(keys.counter(), counter_mod),
                    ops::present(keys.state()),
                ],
                success,
                failure: vec![ops::get(keys.counter()), ops::get(keys.state())],
            };
            let outcome = match self.backend.txn(request.clone()).await {
                Ok(response) if response.succeeded => Enqueue::Applied(response.header.revision),
                Ok(response) => Enqueue::Refused(response),
                Err(error @ BackendError::Unavailable(_)) => {
                    tracing::debug!(%error, "enqueue: retrying");
                    wait = ops::backoff(wait).await;
                    continue;
                }
                Err(BackendError::Indeterminate(unknown)) => {
                    tracing::debug!(%unknown, "enqueue: settling an unknown outcome");
                    self.settle_enqueue(&request, counter_mod, tag, unknown)
                        .await?
                }
                Err(error) => return Err(error.into()),
            };
            let response = match outcome {
                Enqueue::Applied(revision) => {
                    if let Ok(mut counter) = self.counter.lock() {
                        *counter = Some((end, revision));
                    }
                    return Ok((next, revision));
                }
                Enqueue::Refused(response) => response,
            };
            if ops::range_one(&response, 1)?.is_none() {
                return Err(Error::NotFound(self.options.tenant.clone()));
            }
            (next, counter_mod) = counter_of(ops::range_one(&response, 0)?)?;
        }
        Err(Error::Contention {
            attempts: ENQUEUE_CONFLICTS_MAX,
        })
    }

    /// Whether the enqueue `request`, which came back `Indeterminate`,
    /// took effect.
    ///
    /// Sending the same txn again is safe: it compares the counter's
    /// `mod_revision`, which the first copy to apply moves, so at most one
    /// copy ever applies (a copy still in flight fails its compare when it
    /// lands). If the copy sent now applies, that is the enqueue. If it is
    /// refused and the counter is where the enqueue expected it, neither
    /// copy applied. Otherwise the counter's first change after
    /// `counter_mod` is the only write this enqueue could have been: it
    /// was, exactly if it carries this enqueue's `tag`. Only if the store
    /// compacted that change away does the outcome stay unknown.
    async fn settle_enqueue(
        &self,
        request: &TxnRequest,
        counter_mod: i64,
        tag: u64,
        unknown: String,
    ) -> Result<Enqueue, Error> {
        let backend = self.backend.clone();
        let response = ops::retrying(|| backend.txn(request.clone())).await?;
        if response.succeeded {
            return Ok(Enqueue::Applied(response.header.revision));
        }
        let seen = ops::range_one(&response, 0)?.map_or(0, |kv| kv.mod_revision);
        if seen == counter_mod {
            return Ok(Enqueue::Refused(response));
        }
        let Some(first) = self.first_change(self.keys.counter(), counter_mod).await? else {
            return Err(Error::Backend(BackendError::Indeterminate(format!(
                "{unknown} (the counter's history since revision {counter_mod} is compacted, \
                 so whether the enqueue applied cannot be told)"
            ))));
        };
        let ours = first.kind == EventKind::Put
            && matches!(
                decode(&first.kv.key, &first.kv.value)?,
                Record::Enqueued { tag: written, .. } if written == tag
            );
        Ok(if ours {
            Enqueue::Applied(first.kv.mod_revision)
        } else {
            Enqueue::Refused(response)
        })
    }

    /// The first change of `key` after revision `after` (waiting for one);
    /// `None` if the store compacted that history away.
    async fn first_change(&self, key: Bytes, after: i64) -> Result<Option<Event>, Error> {
        let request = WatchRequest {
            key,
            start_revision: after + 1,
            ..Default::default()
        };
        let mut wait = ops::BACKOFF_MIN;
        loop {
            let backend = self.backend.clone();
            let mut watch = ops::retrying(|| backend.watch(request.clone())).await?;
            match watch.next().await {
                Some(Ok(events)) => {
                    if let Some(event) = events.into_iter().next() {
                        return Ok(Some(event));
                    }
                }
                Some(Err(BackendError::Kv(KvError::Compacted { .. }))) => return Ok(None),
                Some(Err(error)) if !error.is_transient() => return Err(error.into()),
                // The watch broke: open it again.
                Some(Err(_)) | None => wait = ops::backoff(wait).await,
            }
        }
    }

    /// Waits until the waiter key of call `seq` (put at `revision`) holds
    /// a reply; `Killed` if it is deleted first. The handle's one watch on
    /// the waiter keys delivers it (see `replies.rs` for why nothing can
    /// fall between the enqueue and that watch).
    async fn await_reply(&self, seq: u64, revision: i64) -> Result<ReplyRecord, Error> {
        let mut registration = self.replies.register(seq, Some(revision));
        let mut wait = ops::BACKOFF_MIN;
        loop {
            if registration.read_first {
                let key = self.keys.waiter(seq);
                let backend = self.backend.clone();
                let current = ops::retrying(|| backend.get(key.clone())).await?;
                let Some(kv) = current else {
                    return Err(Error::Killed);
                };
                if let Some(reply) = reply_in(&kv.key, &kv.value)? {
                    return Ok(reply);
                }
            }
            match (&mut registration.delivery).await {
                Ok(Delivery::Reply(reply)) => return Ok(reply),
                Ok(Delivery::Killed) => return Err(Error::Killed),
                // The watch started again (or ended): read, and wait on
                // the next one. The wait keeps a watch that keeps failing
                // from spinning.
                Ok(Delivery::ReadAgain) | Err(_) => {
                    wait = ops::backoff(wait).await;
                    registration = self.replies.register(seq, None);
                }
            }
        }
    }

    /// The caller's view of a reply record.
    fn reply_of(&self, seq: u64, reply: ReplyRecord) -> Result<S::Reply, Error> {
        match reply {
            ReplyRecord::Reply(bytes) => decode_user(&self.keys.waiter(seq), &bytes),
            ReplyRecord::NoReply => Err(Error::NoReply),
            ReplyRecord::Stopped { reason } => Err(Error::Stopped { reason }),
            ReplyRecord::DeadLetter { attempts } => Err(Error::DeadLetter { attempts }),
            ReplyRecord::Failed(reason) => Err(Error::Handler(reason)),
        }
    }

    /// Runs `handle` against the current state and commits the new state
    /// if the state did not change meanwhile (else runs it again). Returns
    /// the reply and, for `Stop`, the reason.
    async fn priority(
        &self,
        mut handle: impl FnMut(S::State) -> Result<Outcome<S>, crate::Failure>,
    ) -> Result<(Option<S::Reply>, Option<String>), Error> {
        let key = self.keys.state();
        let (mut bytes, mut state_mod) = self.read_state().await?;
        for _ in 0..PRIORITY_CONFLICTS_MAX {
            let state: S::State = decode_user(&key, &bytes)?;
            let outcome = guarded(|| handle(state)).map_err(Error::Handler)?;
            let (state, reply, stopped, actions) = match outcome {
                Outcome::Reply {
                    reply,
                    state,
                    actions,
                } => (state, Some(reply), None, actions),
                Outcome::NoReply { state, actions } => (state, None, None, actions),
                Outcome::Stop {
                    reason,
                    reply,
                    state,
                } => (state, reply, Some(reason), Vec::new()),
                Outcome::Lock { .. } => {
                    return Err(Error::Handler(
                        "a priority message may not take the lock".into(),
                    ))
                }
            };
            let value = encode(&Record::State(encode_user("the state", &state)?))?;
            let request = TxnRequest {
                compare: vec![ops::mod_is(key.clone(), state_mod)],
                success: vec![ops::put(key.clone(), value)],
                failure: vec![ops::get(key.clone())],
            };
            let backend = self.backend.clone();
            // Not repeated after an unknown outcome: a repeat that found
            // its own commit would run the handler twice.
            let response = ops::retrying_unavailable(|| backend.txn(request.clone())).await?;
            if response.succeeded {
                crate::consumer::run_actions(actions);
                return Ok((reply, stopped));
            }
            match ops::range_one(&response, 0)? {
                Some(kv) => {
                    bytes = state_bytes(&kv.key, &kv.value)?;
                    state_mod = kv.mod_revision;
                }
                None => return Err(Error::NotFound(self.options.tenant.clone())),
            }
        }
        Err(Error::Contention {
            attempts: PRIORITY_CONFLICTS_MAX,
        })
    }
}

/// The user's state bytes in a state record.
pub(crate) fn state_bytes(key: &[u8], value: &[u8]) -> Result<Vec<u8>, Error> {
    match decode(key, value)? {
        Record::State(bytes) => Ok(bytes),
        other => Err(wrong(key, "state", &other)),
    }
}

/// What became of one enqueue txn.
enum Enqueue {
    /// It applied, at this revision.
    Applied(i64),
    /// Its compares failed; the failure branch's reads.
    Refused(TxnResponse),
}

/// The counter's next position and `mod_revision` (0 and 0 if absent).
fn counter_of(found: Option<&chorus_backend::KeyValue>) -> Result<(u64, i64), Error> {
    match found {
        None => Ok((0, 0)),
        Some(kv) => match decode(&kv.key, &kv.value)? {
            Record::Counter(next) | Record::Enqueued { next, .. } => Ok((next, kv.mod_revision)),
            other => Err(wrong(&kv.key, "counter", &other)),
        },
    }
}

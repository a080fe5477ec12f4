//! The durable-server scenarios, written once and run against every
//! backend (embedded chorus-kv, a real etcd, `chorus serve` over gRPC).
//! Each works in its own tenant, so they can share a store.
//!
//! No scenario measures time: waits are for events (a call's reply, a
//! signal from a handler), and `guard` is only a generous hang guard.
#![allow(dead_code)] // each test binary uses its own subset

mod unsure;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chorus_backend::{KvBackend, PutRequest, TxnRequest};
use chorus_durable::{
    ConsumerExit, Durable, DurableServer, Error, Failure, Message, Outcome, Registry, StartOptions,
};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use unsure::{Fault, Meanwhile, Unsure};

/// Longest any scenario may take before it counts as hung.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

pub async fn guard<T>(name: &str, work: impl Future<Output = T>) -> T {
    eprintln!("scenario {name}");
    match tokio::time::timeout(HANG_GUARD, work).await {
        Ok(value) => value,
        Err(_) => panic!("scenario {name} hung for {HANG_GUARD:?}"),
    }
}

/// What the ledger server has processed, in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// How many times each id was processed.
    pub seen: BTreeMap<u64, u32>,
    pub order: Vec<u64>,
    pub dead: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Cast {
    Record(u64),
    /// Always fails.
    Poison(u64),
    /// Always panics.
    Panic(u64),
    /// Takes the lock; `handle_locked` records it.
    Locked(u64),
    /// Waits at the gate (first time only), then records.
    Stall(u64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call {
    Record(u64),
    Poison(u64),
    /// How many messages were processed.
    Total,
}

/// A gate `handle_locked` may be told to wait at (its first invocation
/// only), and that says when it got there.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    arrived: bool,
    open: bool,
}

impl Gate {
    pub fn arm(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.armed = true;
        }
    }

    /// Blocks (on a blocking thread) until the handler waits at the gate.
    pub async fn arrived(self: &Arc<Self>) {
        let gate = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut state = gate.state.lock().expect("gate");
            while !state.arrived {
                state = gate.changed.wait(state).expect("gate");
            }
        })
        .await
        .expect("gate task");
    }

    pub fn open(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.open = true;
            self.changed.notify_all();
        }
    }

    fn pass(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if !state.armed {
            return;
        }
        state.armed = false;
        state.arrived = true;
        self.changed.notify_all();
        while !state.open {
            state = match self.changed.wait(state) {
                Ok(state) => state,
                Err(_) => return,
            };
        }
    }
}

/// The test server: records ids; poison fails; locked takes the lock.
#[derive(Clone, Default)]
pub struct LedgerServer {
    pub poison_attempts: Arc<AtomicU32>,
    pub locked_runs: Arc<AtomicU32>,
    pub gate: Arc<Gate>,
}

fn record(mut ledger: Ledger, id: u64) -> Ledger {
    *ledger.seen.entry(id).or_insert(0) += 1;
    ledger.order.push(id);
    ledger
}

impl DurableServer for LedgerServer {
    type State = Ledger;
    type Call = Call;
    type Cast = Cast;
    type Reply = u64;
    type Info = u64;

    fn init(&self) -> Result<Ledger, Failure> {
        Ok(Ledger::default())
    }

    fn handle_call(&self, call: Call, state: Ledger) -> Result<Outcome<Self>, Failure> {
        match call {
            Call::Record(id) => {
                let state = record(state, id);
                let count = u64::from(state.seen[&id]);
                Ok(Outcome::reply(count, state))
            }
            Call::Poison(_) => {
                self.poison_attempts.fetch_add(1, Ordering::SeqCst);
                Err("poisoned call".into())
            }
            Call::Total => Ok(Outcome::reply(state.order.len() as u64, state)),
        }
    }

    fn handle_cast(&self, cast: Cast, state: Ledger) -> Result<Outcome<Self>, Failure> {
        match cast {
            Cast::Record(id) => Ok(Outcome::noreply(record(state, id))),
            Cast::Poison(_) => {
                self.poison_attempts.fetch_add(1, Ordering::SeqCst);
                Err("poisoned cast".into())
            }
            Cast::Panic(_) => {
                self.poison_attempts.fetch_add(1, Ordering::SeqCst);
                panic!("a panicking cast")
            }
            Cast::Locked(_) => Ok(Outcome::lock(state)),
            Cast::Stall(id) => {
                self.gate.pass();
                Ok(Outcome::noreply(record(state, id)))
            }
        }
    }

    fn handle_info(&self, id: u64, state: Ledger) -> Result<Outcome<Self>, Failure> {
        Ok(Outcome::noreply(record(state, id)))
    }

    fn handle_locked(
        &self,
        message: Message<Self>,
        state: Ledger,
    ) -> Result<Outcome<Self>, Failure> {
        self.locked_runs.fetch_add(1, Ordering::SeqCst);
        self.gate.pass();
        match message {
            Message::Cast(Cast::Locked(id)) => Ok(Outcome::noreply(record(state, id))),
            other => Err(format!("unexpected locked message {other:?}").into()),
        }
    }

    fn handle_dead_letter(
        &self,
        message: Message<Self>,
        _attempts: u32,
        mut state: Ledger,
    ) -> Result<Outcome<Self>, Failure> {
        let id = match message {
            Message::Cast(Cast::Poison(id) | Cast::Panic(id) | Cast::Stall(id))
            | Message::Call(Call::Poison(id)) => id,
            _ => u64::MAX,
        };
        state.dead.push(id);
        Ok(Outcome::noreply(state))
    }
}

pub type Handle<B> = Durable<LedgerServer, B>;

pub async fn start<B: KvBackend>(
    backend: &B,
    server: &LedgerServer,
    options: StartOptions,
) -> Handle<B> {
    Durable::start(server.clone(), backend.clone(), options)
        .await
        .expect("start")
}

/// A call queued after everything before it: when it answers, all of it
/// has been processed (queue order), without waiting on a clock.
async fn drain<B: KvBackend>(handle: &Handle<B>) -> u64 {
    handle
        .call_timeout(Call::Total, None)
        .await
        .expect("draining call")
}

/// Every message processed exactly once while consumers are aborted at
/// random points (between a read and a commit, mid-commit, ...) and
/// restarted: 4 consumers, one publisher of ordered casts and batches,
/// concurrent callers.
pub async fn exactly_once_with_crashes<B: KvBackend>(backend: B, tenant: &str, seed: u64) {
    const CASTS: u64 = 150;
    const BATCH: u64 = 5;
    const CALLERS: u64 = 4;
    const CALLS_EACH: u64 = 5;
    let server = LedgerServer::default();
    let options = StartOptions::new(tenant).cache(true);
    let publisher = Arc::new(start(&backend, &server, options.clone().consume(false)).await);
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(start(&backend, &server, options.clone()).await);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let crasher = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut crashes = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1..15))).await;
                let victim = rng.gen_range(0..consumers.len());
                // A crash: the task is dropped wherever it is; a fresh
                // consumer takes its place.
                consumers[victim].abort_consumer();
                crashes += 1;
                consumers[victim].start_consumer();
            }
            (crashes, consumers)
        })
    };
    let casting = {
        let publisher = Arc::clone(&publisher);
        tokio::spawn(async move {
            let mut id = 0;
            while id < CASTS {
                if id % 30 == 0 {
                    let batch = (id..id + BATCH).map(Cast::Record).collect();
                    publisher.cast_batch(batch).await.expect("cast_batch");
                    id += BATCH;
                } else {
                    publisher.cast(Cast::Record(id)).await.expect("cast");
                    id += 1;
                }
            }
        })
    };
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let publisher = Arc::clone(&publisher);
        callers.push(tokio::spawn(async move {
            for k in 0..CALLS_EACH {
                let id = 10_000 + caller * 100 + k;
                let count = publisher
                    .call_timeout(Call::Record(id), None)
                    .await
                    .expect("call");
                assert_eq!(count, 1, "call {id} was processed {count} times");
            }
        }));
    }
    casting.await.expect("casting task");
    for caller in callers {
        caller.await.expect("caller task");
    }
    let total = drain(&publisher).await;
    stop.store(true, Ordering::SeqCst);
    let (crashes, mut consumers) = crasher.await.expect("crasher task");
    assert!(crashes > 0, "the crasher never struck");
    let expected = CASTS + CALLERS * CALLS_EACH;
    assert_eq!(total, expected, "messages processed (crashes: {crashes})");
    let ledger = publisher.state().await.expect("state");
    for (id, count) in &ledger.seen {
        assert_eq!(*count, 1, "message {id} processed {count} times");
    }
    assert_eq!(ledger.seen.len() as u64, expected, "a message was lost");
    let casts: Vec<u64> = ledger
        .order
        .iter()
        .copied()
        .filter(|id| *id < CASTS)
        .collect();
    assert_eq!(
        casts,
        (0..CASTS).collect::<Vec<_>>(),
        "casts out of queue order"
    );
    assert_eq!(publisher.queue_len().await.expect("queue"), 0);
    for consumer in &mut consumers {
        consumer.shutdown().await.expect("shutdown");
    }
}

/// The state and the queue survive closing and reopening the store (a
/// restart of the process): `reopen` closes the old store and opens it
/// again.
pub async fn survives_restart<B, F, Fut>(backend: B, tenant: &str, reopen: F)
where
    B: KvBackend,
    F: FnOnce(B) -> Fut,
    Fut: Future<Output = B>,
{
    let server = LedgerServer::default();
    let options = StartOptions::new(tenant).cache(true);
    let mut consumer = start(&backend, &server, options.clone()).await;
    for id in 0..5 {
        consumer.cast(Cast::Record(id)).await.expect("cast");
    }
    assert_eq!(drain(&consumer).await, 5);
    consumer.shutdown().await.expect("shutdown");
    // Queued with nobody consuming: must survive the restart too.
    for id in 5..10 {
        consumer.cast(Cast::Record(id)).await.expect("cast");
    }
    drop(consumer);
    let backend = reopen(backend).await;
    let consumer = start(&backend, &server, options).await;
    assert_eq!(drain(&consumer).await, 10);
    let ledger = consumer.state().await.expect("state");
    assert_eq!(ledger.order, (0..10).collect::<Vec<_>>());
}

/// A lock holds the queue (priority messages pass), `handle_locked`
/// commits before the next message runs.
pub async fn locks<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    server.gate.arm();
    let options = StartOptions::new(tenant).lock_timeout(None);
    let mut consumer = start(&backend, &server, options).await;
    consumer.cast(Cast::Locked(1)).await.expect("cast");
    consumer.cast(Cast::Record(2)).await.expect("cast");
    server.gate.arrived().await;
    // Locked: the queue waits, a priority call does not.
    let stats = chorus_durable::stats::tenant_stats(&backend, tenant)
        .await
        .expect("stats");
    assert!(stats.locked, "{stats:?}");
    assert_eq!(
        stats.queue_depth, 1,
        "the locked message left the queue: {stats:?}"
    );
    assert_eq!(
        consumer.priority_call(Call::Total).await.expect("priority"),
        0
    );
    consumer.info(3).await.expect("info");
    server.gate.open();
    assert_eq!(drain(&consumer).await, 3);
    let ledger = consumer.state().await.expect("state");
    // The info ran during the lock; the locked message before 2.
    assert_eq!(ledger.order, vec![3, 1, 2]);
    // The info changed the state under handle_locked, whose first result
    // was therefore not committed: it ran again on the new state.
    assert_eq!(server.locked_runs.load(Ordering::SeqCst), 2);
    consumer.shutdown().await.expect("shutdown");
}

/// A lock held past lock_timeout is cleared by another consumer and its
/// message requeued and handled again; the superseded holder's result is
/// discarded when it finally finishes.
pub async fn lock_fencing<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    server.gate.arm();
    let options = StartOptions::new(tenant).lock_timeout(Some(Duration::from_millis(300)));
    let mut holder = start(&backend, &server, options.clone()).await;
    holder.cast(Cast::Locked(1)).await.expect("cast");
    server.gate.arrived().await;
    // The holder is stuck in handle_locked; a second consumer clears the
    // stale lock and handles the message itself.
    let mut rescuer = start(&backend, &server, options).await;
    assert_eq!(drain(&rescuer).await, 1);
    server.gate.open();
    // The holder's commit fails on the fencing token; it goes on
    // consuming, and a later message is processed once.
    holder.cast(Cast::Record(2)).await.expect("cast");
    assert_eq!(drain(&holder).await, 2);
    let ledger = rescuer.state().await.expect("state");
    assert_eq!(
        ledger.order,
        vec![1, 2],
        "the superseded result was committed"
    );
    assert_eq!(server.locked_runs.load(Ordering::SeqCst), 2);
    holder.shutdown().await.expect("shutdown");
    rescuer.shutdown().await.expect("shutdown");
}

/// Priority messages skip the queue (and its order).
pub async fn priority_bypass<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let mut handle = start(&backend, &server, StartOptions::new(tenant).consume(false)).await;
    handle.cast(Cast::Record(1)).await.expect("cast");
    assert_eq!(
        handle.priority_call(Call::Total).await.expect("priority"),
        0
    );
    handle
        .priority_cast(Cast::Record(7))
        .await
        .expect("priority cast");
    assert_eq!(
        handle
            .priority_call(Call::Record(8))
            .await
            .expect("priority"),
        1
    );
    assert_eq!(handle.queue_len().await.expect("queue"), 1);
    handle.start_consumer();
    assert_eq!(drain(&handle).await, 3);
    assert_eq!(handle.state().await.expect("state").order, vec![7, 8, 1]);
    handle.shutdown().await.expect("shutdown");
}

/// A batch is one txn: its messages are contiguous in the queue even
/// with concurrent batches, and a refused batch enqueues nothing.
pub async fn batch_atomicity<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let mut handle = start(&backend, &server, StartOptions::new(tenant).consume(false)).await;
    let too_many = (0..chorus_durable::CAST_BATCH_MAX as u64 + 1)
        .map(Cast::Record)
        .collect();
    assert!(matches!(
        handle.cast_batch(too_many).await,
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(handle.queue_len().await.expect("queue"), 0);
    let handle_arc =
        Arc::new(start(&backend, &server, StartOptions::new(tenant).consume(false)).await);
    let mut tasks = Vec::new();
    for publisher in 0..4u64 {
        let handle = Arc::clone(&handle_arc);
        tasks.push(tokio::spawn(async move {
            for batch in 0..3u64 {
                let base = publisher * 1_000 + batch * 100;
                let casts = (base..base + 20).map(Cast::Record).collect();
                handle.cast_batch(casts).await.expect("batch");
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    assert_eq!(handle.queue_len().await.expect("queue"), 4 * 3 * 20);
    handle.start_consumer();
    assert_eq!(drain(&handle).await, 4 * 3 * 20);
    let order = handle.state().await.expect("state").order;
    for chunk in order.chunks(20) {
        let expected: Vec<u64> = (chunk[0]..chunk[0] + 20).collect();
        assert_eq!(chunk, expected.as_slice(), "a batch was split or reordered");
    }
    handle.shutdown().await.expect("shutdown");
}

/// A message failing `threshold` times (errors, panics) is dead-lettered:
/// its caller gets DeadLetter, handle_dead_letter runs, the queue moves on.
pub async fn dead_letters<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let options = StartOptions::new(tenant).dead_letter_threshold(Some(3));
    let mut handle = start(&backend, &server, options).await;
    handle.cast(Cast::Poison(1)).await.expect("cast");
    handle.cast(Cast::Record(2)).await.expect("cast");
    handle.cast(Cast::Panic(3)).await.expect("cast");
    match handle.call_timeout(Call::Poison(4), None).await {
        Err(Error::DeadLetter { attempts: 3 }) => {}
        other => panic!("expected DeadLetter after 3 attempts, got {other:?}"),
    }
    assert_eq!(drain(&handle).await, 1);
    assert_eq!(server.poison_attempts.load(Ordering::SeqCst), 9);
    let ledger = handle.state().await.expect("state");
    assert_eq!(ledger.dead, vec![1, 3, 4]);
    assert_eq!(ledger.order, vec![2]);
    let dead = handle.dead_letters().await.expect("dead letters");
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|letter| letter.attempts == 3));
    assert!(matches!(dead[0].message, Message::Cast(Cast::Poison(1))));
    handle.shutdown().await.expect("shutdown");
}

/// A consumer that dies holding a claimed message counts as a failed
/// attempt: the count was durable before the handler ran, and the claim
/// goes with the consumer's lease. The lease's expiry is simulated by
/// revoking it while the holder is stuck in its handler; when the holder
/// wakes up, its commit is fenced off (its claim is gone).
/// (Needs a multi-threaded runtime: the handler blocks a worker.)
pub async fn crash_counts_as_attempt<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    server.gate.arm();
    let options = StartOptions::new(tenant).dead_letter_threshold(Some(1));
    let mut first = start(&backend, &server, options.clone()).await;
    first.cast(Cast::Stall(1)).await.expect("cast");
    first.cast(Cast::Record(2)).await.expect("cast");
    server.gate.arrived().await;
    let mut owners = tenant.as_bytes().to_vec();
    owners.extend_from_slice(b"\0o/");
    let claims = backend.get_prefix(owners).await.expect("claims");
    assert_eq!(claims.kvs.len(), 1, "the stalled message is claimed");
    backend
        .lease_revoke(claims.kvs[0].lease)
        .await
        .expect("revoke");
    let mut second = start(&backend, &server, options).await;
    assert_eq!(drain(&second).await, 1);
    server.gate.open();
    second.shutdown().await.expect("shutdown");
    // The stalled holder finishes its handler; its commit must fail.
    first.shutdown().await.expect("shutdown");
    let ledger = second.state().await.expect("state");
    assert_eq!(ledger.dead, vec![1], "the crashed attempt did not count");
    assert_eq!(ledger.order, vec![2], "a fenced-off claim holder committed");
}

/// Kill deletes everything; waiting callers and consumers learn of it.
pub async fn kill<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let mut consumer = start(
        &backend,
        &server,
        StartOptions::new(tenant).name(format!("{tenant}-name")),
    )
    .await;
    consumer.cast(Cast::Record(1)).await.expect("cast");
    assert_eq!(drain(&consumer).await, 1);
    consumer.shutdown().await.expect("shutdown");
    let mut killer = start(
        &backend,
        &server,
        StartOptions::new(tenant)
            .consume(false)
            .name(format!("{tenant}-name")),
    )
    .await;
    let waiting = {
        let caller = start(&backend, &server, StartOptions::new(tenant).consume(false)).await;
        tokio::spawn(async move { caller.call_timeout(Call::Record(2), None).await })
    };
    // The call is queued when the queue holds it.
    while killer.queue_len().await.expect("queue") == 0 {
        tokio::task::yield_now().await;
    }
    killer.kill().await.expect("kill");
    assert!(matches!(waiting.await.expect("caller"), Err(Error::Killed)));
    let stats = chorus_durable::stats::tenant_stats(&backend, tenant)
        .await
        .expect("stats");
    assert!(
        !stats.exists && stats.queue_depth == 0 && stats.waiting_calls == 0,
        "{stats:?}"
    );
    assert!(matches!(
        killer.cast(Cast::Record(3)).await,
        Err(Error::NotFound(_))
    ));
    consumer.start_consumer();
    assert_eq!(
        consumer.consumer_exit().await.expect("exit"),
        Some(ConsumerExit::Killed)
    );
    let registry = Registry::new(backend.clone());
    assert!(registry
        .lookup(&format!("{tenant}-name"))
        .await
        .expect("lookup")
        .is_none());
}

/// An outbox cast is enqueued exactly when the caller's own txn commits.
pub async fn outbox<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let mut handle = start(&backend, &server, StartOptions::new(tenant)).await;
    let own_key = format!("{tenant}-own");
    // A txn whose own compare fails: neither its write nor the cast.
    let outbox = handle.outbox_cast(Cast::Record(1)).await.expect("outbox");
    let mut compare = outbox.compare.clone();
    compare.push(chorus_backend::Compare {
        result: chorus_backend::CompareResult::Equal,
        target: chorus_backend::CompareTarget::Value("never".into()),
        key: own_key.clone().into(),
        range_end: Default::default(),
    });
    let mut success = outbox.success.clone();
    success.push(chorus_backend::RequestOp::Put(PutRequest {
        key: own_key.clone().into(),
        value: "written".into(),
        ..Default::default()
    }));
    let failed = backend
        .txn(TxnRequest {
            compare,
            success: success.clone(),
            failure: Vec::new(),
        })
        .await
        .expect("txn");
    assert!(!failed.succeeded);
    let committed = backend
        .txn(TxnRequest {
            compare: outbox.compare.clone(),
            success,
            failure: Vec::new(),
        })
        .await
        .expect("txn");
    assert!(committed.succeeded);
    assert_eq!(drain(&handle).await, 1);
    assert_eq!(handle.state().await.expect("state").order, vec![1]);
    handle.shutdown().await.expect("shutdown");
}

/// The registry resolves names and refuses a name taken by another
/// tenant; stats list registered servers.
pub async fn registry<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let name = format!("{tenant}-registered");
    let mut handle = start(
        &backend,
        &server,
        StartOptions::new(tenant).name(&name).consume(false),
    )
    .await;
    let registry = Registry::new(backend.clone());
    let found = registry
        .lookup(&name)
        .await
        .expect("lookup")
        .expect("registered");
    assert_eq!(found.tenant, tenant);
    let other = Durable::start(
        server.clone(),
        backend.clone(),
        StartOptions::new(format!("{tenant}-other")).name(&name),
    )
    .await;
    assert!(
        matches!(other, Err(Error::NameTaken { .. })),
        "{:?}",
        other.err()
    );
    handle.cast(Cast::Record(1)).await.expect("cast");
    let listed = chorus_durable::stats::registered_stats(&backend)
        .await
        .expect("stats");
    let mine = listed
        .iter()
        .find(|entry| entry.name == name)
        .expect("listed");
    assert_eq!(mine.stats.queue_depth, 1);
    assert!(mine.stats.state_bytes > 0);
    handle.kill().await.expect("kill");
}

/// Bad bytes in the store are typed errors, never panics.
pub async fn corrupt_state<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let handle = start(&backend, &server, StartOptions::new(tenant).consume(false)).await;
    let mut key = tenant.as_bytes().to_vec();
    key.extend_from_slice(b"\0s");
    backend
        .put(PutRequest {
            key: key.into(),
            value: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect("put");
    match handle.state().await {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        handle.priority_call(Call::Total).await,
        Err(Error::Corrupt { .. })
    ));
}

/// Enqueues whose answers are lost (the store applied the txn, or not)
/// are settled by the publisher: every message is queued exactly once
/// and in the order the store took them, also when another publisher
/// enqueued meanwhile.
pub async fn unknown_enqueue_outcomes<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let options = StartOptions::new(tenant);
    let consumer = Arc::new(start(&backend, &server, options.clone()).await);
    let unsure = Unsure::new(backend.clone());
    let publisher = start(&unsure, &server, options.consume(false)).await;
    let another = |id| -> Option<Meanwhile> {
        let other = Arc::clone(&consumer);
        Some(Box::new(move || {
            Box::pin(async move {
                other
                    .cast(Cast::Record(id))
                    .await
                    .expect("the other publisher's cast")
            })
        }))
    };
    let fault = |apply, meanwhile| Fault {
        apply,
        meanwhile,
        late: false,
    };
    unsure.next_enqueue(fault(true, None));
    publisher.cast(Cast::Record(1)).await.expect("applied cast");
    unsure.next_enqueue(fault(false, None));
    publisher.cast(Cast::Record(2)).await.expect("lost cast");
    // Lost, and the other publisher took the position it asked for.
    unsure.next_enqueue(fault(false, another(100)));
    publisher.cast(Cast::Record(3)).await.expect("lost cast");
    // Applied, and the other publisher enqueued after it.
    unsure.next_enqueue(fault(true, another(101)));
    publisher.cast(Cast::Record(4)).await.expect("applied cast");
    unsure.next_enqueue(fault(true, None));
    let count = publisher
        .call_timeout(Call::Record(5), None)
        .await
        .expect("applied call");
    assert_eq!(count, 1, "call 5 was processed {count} times");
    unsure.next_enqueue(fault(false, None));
    publisher
        .cast_batch(vec![Cast::Record(6), Cast::Record(7)])
        .await
        .expect("lost batch");
    assert_eq!(unsure.pending(), 0, "a fault did not strike");
    assert_eq!(drain(&consumer).await, 9);
    let ledger = consumer.state().await.expect("state");
    for (id, count) in &ledger.seen {
        assert_eq!(*count, 1, "message {id} processed {count} times");
    }
    assert_eq!(ledger.order, [1, 2, 100, 3, 4, 101, 5, 6, 7]);
}

/// A call whose enqueue is answered late: by the time the caller hears
/// that it committed, its reply is written and the handle's reply watch
/// has handed out later replies. The call still gets its reply (it reads
/// it: the watch has passed it).
pub async fn late_enqueue_answer<B: KvBackend>(backend: B, tenant: &str) {
    let server = LedgerServer::default();
    let options = StartOptions::new(tenant);
    let consumer = start(&backend, &server, options.clone()).await;
    let unsure = Unsure::new(backend.clone());
    let publisher = Arc::new(start(&unsure, &server, options.consume(false)).await);
    // The handle's reply watch runs from its first call on.
    let first = publisher.call_timeout(Call::Record(1), None).await;
    assert_eq!(first.expect("the first call"), 1);
    // The slow call is queued before the later one, so it is answered
    // first: once the later call has its reply, the watch is past both.
    let later = Arc::clone(&publisher);
    unsure.next_enqueue(Fault {
        apply: true,
        meanwhile: Some(Box::new(move || {
            Box::pin(async move {
                let count = later.call_timeout(Call::Record(3), None).await;
                assert_eq!(count.expect("the later call"), 1);
            })
        })),
        late: true,
    });
    let slow = publisher.call_timeout(Call::Record(2), None).await;
    assert_eq!(slow.expect("the slow call"), 1);
    assert_eq!(unsure.pending(), 0, "the fault did not strike");
    let ledger = consumer.state().await.expect("state");
    assert_eq!(ledger.order, [1, 2, 3]);
}

/// Calls, their consumer and a concurrent caller through a store whose
/// watches break after every batch and whose resumptions are refused every
/// other time as compacted: every call still gets its reply, and every
/// message is handled once.
pub async fn broken_watches<B: KvBackend>(backend: B, tenant: &str) {
    const CALLERS: u64 = 4;
    const CALLS_EACH: u64 = 10;
    let server = LedgerServer::default();
    let unsure = Unsure::new(backend.clone());
    unsure.break_watches(1);
    let handle = Arc::new(start(&unsure, &server, StartOptions::new(tenant)).await);
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let handle = Arc::clone(&handle);
        callers.push(tokio::spawn(async move {
            for k in 0..CALLS_EACH {
                let id = caller * 100 + k;
                let count = handle
                    .call_timeout(Call::Record(id), None)
                    .await
                    .expect("call");
                assert_eq!(count, 1, "call {id} was processed {count} times");
            }
        }));
    }
    for caller in callers {
        caller.await.expect("caller task");
    }
    assert_eq!(drain(&handle).await, CALLERS * CALLS_EACH);
    assert!(unsure.watch_faults() > 0, "no watch broke");
    let ledger = handle.state().await.expect("state");
    for (id, count) in &ledger.seen {
        assert_eq!(*count, 1, "message {id} processed {count} times");
    }
}

/// Every scenario that any store runs, in its own tenants under `prefix`.
pub async fn all<B: KvBackend>(backend: B, prefix: &str) {
    guard(
        "exactly_once",
        exactly_once_with_crashes(backend.clone(), &format!("{prefix}/once"), 7),
    )
    .await;
    guard("locks", locks(backend.clone(), &format!("{prefix}/locks"))).await;
    guard(
        "lock_fencing",
        lock_fencing(backend.clone(), &format!("{prefix}/fence")),
    )
    .await;
    guard(
        "priority",
        priority_bypass(backend.clone(), &format!("{prefix}/priority")),
    )
    .await;
    guard(
        "batch",
        batch_atomicity(backend.clone(), &format!("{prefix}/batch")),
    )
    .await;
    guard(
        "dead_letters",
        dead_letters(backend.clone(), &format!("{prefix}/dead")),
    )
    .await;
    guard("kill", kill(backend.clone(), &format!("{prefix}/kill"))).await;
    guard(
        "outbox",
        outbox(backend.clone(), &format!("{prefix}/outbox")),
    )
    .await;
    guard(
        "registry",
        registry(backend.clone(), &format!("{prefix}/registry")),
    )
    .await;
    guard(
        "corrupt",
        corrupt_state(backend.clone(), &format!("{prefix}/corrupt")),
    )
    .await;
    guard(
        "unknown_enqueues",
        unknown_enqueue_outcomes(backend.clone(), &format!("{prefix}/unknown")),
    )
    .await;
    guard(
        "crash_counts",
        crash_counts_as_attempt(backend.clone(), &format!("{prefix}/crash")),
    )
    .await;
    guard(
        "late_answer",
        late_enqueue_answer(backend.clone(), &format!("{prefix}/late")),
    )
    .await;
    guard(
        "broken_watches",
        broken_watches(backend.clone(), &format!("{prefix}/broken")),
    )
    .await;
}

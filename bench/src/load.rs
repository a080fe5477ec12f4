//! The etcd v3 load generator behind `etcd-load` and `peers-bench`.
//!
//! One process drives any etcd v3 server (etcd itself or `chorus serve`)
//! through the `etcd-client` crate, so both are measured with the same
//! client code. Workloads:
//!
//! * `put`: each client writes a random key of the key space, one request
//!   at a time;
//! * `get` / `get-serializable`: each client reads a random key
//!   (linearizable, or served by the member it talks to);
//! * `txn`: "if the key's mod_revision is still the one I last saw, put"
//!   — each client owns a contiguous slice of the key space, so compares
//!   fail only when something outside the benchmark wrote its keys;
//! * `watch`: `--clients` watchers on one key, one writer putting it at
//!   `--rate` per second; the latency is from the writer's request to each
//!   watcher's receipt of the event;
//! * `lease`: each client keeps its own lease alive as fast as the server
//!   answers (a keep-alive storm).
//!
//! Every request has a deadline; an error or a timeout is counted (and the
//! first one's text kept), never retried. Output is JSON lines on stdout:
//! `{"event":"measuring"}` when the clock starts (connections, watchers and
//! any preload are ready), then one `{"event":"report",...}` line.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// The issue's value size, bytes.
pub const VALUE_BYTES_DEFAULT: usize = 256;
/// Distinct keys written and read by default.
pub const KEY_SPACE_DEFAULT: u64 = 10_000;
/// Largest value accepted, bytes: above both servers' request limit
/// (1.5 MiB by default) so the servers, not this tool, refuse big ones.
pub const VALUE_BYTES_MAX: usize = 64 << 20;
/// Most concurrent clients (tasks) one generator runs.
pub const CLIENTS_MAX: usize = 100_000;
/// Longest run, seconds.
pub const DURATION_SECONDS_MAX: f64 = 86_400.0;
/// A request still unanswered after this counts as an error.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 10;
/// Establishing one connection (or one watch stream) may take this long.
const CONNECT_TIMEOUT_SECONDS: u64 = 10;
/// Connections opened by default when `--connections` is not given: enough
/// that neither server handles every stream on one HTTP/2 connection task,
/// few enough that connection setup stays negligible.
const CONNECTIONS_DEFAULT_MAX: usize = 8;
/// Watch streams sharing one HTTP/2 connection, kept well under hyper's
/// default limit of 200 concurrent streams per connection.
const WATCH_STREAMS_PER_CONNECTION_MAX: usize = 64;
/// Writers of the preload (a setup step, not measured).
const PRELOAD_CONCURRENCY: usize = 64;
/// After an error a client waits this long before its next request, so a
/// dead server gives a countable error rate instead of a busy loop.
const ERROR_PAUSE_MS: u64 = 10;
/// How long watchers may take to receive the writer's last events once it
/// has stopped.
const WATCH_DRAIN_SECONDS: u64 = 5;
/// Latencies above this are recorded as this, µs (one hour).
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// The key every watcher watches.
const WATCH_KEY: &[u8] = b"bench/watch";
/// Lease TTL of the keep-alive storm, seconds: long enough that no lease
/// expires between keep-alives even on a loaded machine.
const LEASE_TTL_SECONDS: i64 = 60;
/// Seed of the clients' key choices, so every server sees the same keys.
const SEED: u64 = 0x5EED_CAFE_F00D_0001;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Put,
    Get,
    GetSerializable,
    Txn,
    Watch,
    Lease,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::GetSerializable => "get-serializable",
            Workload::Txn => "txn",
            Workload::Watch => "watch",
            Workload::Lease => "lease",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Client URLs (comma-separated), e.g. http://127.0.0.1:2379. Connection
    /// i goes to endpoint i mod n; a single client uses the first.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight (watchers for
    /// `watch`).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections the clients share (default: one per client, at most
    /// 8; `watch` opens more so no connection carries over 64 streams).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Seconds to run (default 10 unless --ops is given).
    #[arg(long, conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Total requests to make, spread over the clients (for `watch`: the
    /// writer's puts).
    #[arg(long)]
    pub ops: Option<u64>,
    #[arg(long, default_value_t = VALUE_BYTES_DEFAULT)]
    pub value_size: usize,
    /// Keys are bench/0000000000 .. bench/{key-space - 1}.
    #[arg(long, default_value_t = KEY_SPACE_DEFAULT)]
    pub key_space: u64,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Before measuring, write every key of the key space once (for `get`).
    #[arg(long)]
    pub preload: bool,
    /// `watch`: the writer's puts per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
}

impl LoadArgs {
    /// Refuses arguments the generator cannot run, with the reason.
    pub fn check(&self) -> Result<()> {
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            bail!("--endpoints needs at least one URL");
        }
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            bail!("--clients must be 1..={CLIENTS_MAX}, not {}", self.clients);
        }
        if let Some(connections) = self.connections {
            if connections == 0 || connections > self.clients {
                bail!("--connections must be 1..=--clients, not {connections}");
            }
        }
        if let Some(seconds) = self.duration {
            if !(seconds > 0.0 && seconds <= DURATION_SECONDS_MAX) {
                bail!("--duration must be in (0, {DURATION_SECONDS_MAX}] seconds, not {seconds}");
            }
        }
        if self.ops == Some(0) {
            bail!("--ops must be at least 1");
        }
        if self.value_size > VALUE_BYTES_MAX {
            bail!(
                "--value-size must be at most {VALUE_BYTES_MAX} bytes, not {}",
                self.value_size
            );
        }
        if self.workload == Workload::Watch && self.value_size < 8 {
            bail!("watch values carry an 8-byte timestamp: --value-size must be at least 8");
        }
        if self.key_space == 0 {
            bail!("--key-space must be at least 1");
        }
        if self.workload == Workload::Txn && self.key_space < self.clients as u64 {
            bail!("txn gives each client its own keys: --key-space must be at least --clients");
        }
        if self.workload == Workload::Watch && !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            bail!(
                "--rate must be in (0, 1000000] puts per second, not {}",
                self.rate
            );
        }
        Ok(())
    }

    /// The command-line arguments that parse back into these arguments
    /// (how the harness hands a row to a generator process).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--endpoints".to_string(),
            self.endpoints.join(","),
            "--clients".into(),
            self.clients.to_string(),
            "--value-size".into(),
            self.value_size.to_string(),
            "--key-space".into(),
            self.key_space.to_string(),
            "--workload".into(),
            self.workload.name().into(),
            "--rate".into(),
            self.rate.to_string(),
        ];
        if let Some(connections) = self.connections {
            args.extend(["--connections".into(), connections.to_string()]);
        }
        if let Some(seconds) = self.duration {
            args.extend(["--duration".into(), seconds.to_string()]);
        }
        if let Some(ops) = self.ops {
            args.extend(["--ops".into(), ops.to_string()]);
        }
        if self.preload {
            args.push("--preload".into());
        }
        args
    }

    fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    }

    fn connection_count(&self) -> usize {
        let wanted = self
            .connections
            .unwrap_or_else(|| self.clients.min(CONNECTIONS_DEFAULT_MAX));
        if self.workload == Workload::Watch {
            // +1: the writer has a connection of its own.
            wanted
                .max(self.clients.div_ceil(WATCH_STREAMS_PER_CONNECTION_MAX))
                .max(1)
        } else {
            wanted.max(1)
        }
    }

    fn duration(&self) -> Option<Duration> {
        match (self.duration, self.ops) {
            (Some(seconds), _) => Some(Duration::from_secs_f64(seconds)),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }
}

/// One line of the generator's output.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Line {
    /// Setup is done; the measured window starts now.
    Measuring,
    /// The measured window is over.
    Report(Box<Report>),
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Report {
    pub workload: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub connections: usize,
    pub value_size: usize,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Requests (for `watch`: events delivered) completed successfully.
    pub ops: u64,
    pub ops_per_second: f64,
    /// Failed or timed-out requests (for `watch`: also events not
    /// delivered to a watcher).
    pub errors: u64,
    pub first_error: Option<String>,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub max_us: Option<u64>,
    pub mean_us: Option<f64>,
    /// `txn`: transactions whose compare failed (another writer).
    pub failed_compares: u64,
    /// `watch`: acknowledged puts × watchers.
    pub watch_events_expected: u64,
    /// `watch`: events the watchers received.
    pub watch_events_received: u64,
}

/// Runs the generator with its own runtime and prints its JSON lines on
/// stdout (and a one-line summary on stderr). Used by both binaries.
pub fn main_with(args: LoadArgs) -> Result<()> {
    args.check()?;
    // The machine has 2 cores; the servers need them as much as we do.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(run(&args, &mut |line| {
        let mut out = std::io::stdout().lock();
        // A closed stdout (the harness gone) is no reason to stop early:
        // the run is bounded anyway.
        if let Ok(text) = serde_json::to_string(line) {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }))?;
    eprintln!(
        "{} x{}: {:.0} ops/s, p50 {} µs, p99 {} µs, p999 {} µs, {} errors{}",
        report.workload,
        report.clients,
        report.ops_per_second,
        show(report.p50_us),
        show(report.p99_us),
        show(report.p999_us),
        report.errors,
        report
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(())
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Runs one workload; `emit` receives the `Measuring` line when the clock
/// starts and the `Report` line at the end.
pub async fn run(args: &LoadArgs, emit: &mut dyn FnMut(&Line)) -> Result<Report> {
    args.check()?;
    let endpoints = args.endpoints();
    let connection_count = args.connection_count();
    let mut connections = Vec::with_capacity(connection_count);
    for i in 0..connection_count {
        connections.push(connect(&endpoints[i % endpoints.len()]).await?);
    }
    let shared = Arc::new(Shared::default());
    let outcome = match args.workload {
        Workload::Watch => watch(args, &endpoints, &connections, &shared, emit).await?,
        _ => requests(args, &connections, &shared, emit).await?,
    };
    let report = outcome.into_report(args, &endpoints, connection_count, &shared);
    emit(&Line::Report(Box::new(report.clone())));
    Ok(report)
}

async fn connect(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECONDS))
        // A bounded keep-alive: an idle connection to a stopped server is
        // noticed, never kept open for ever.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
    tokio::time::timeout(
        Duration::from_secs(CONNECT_TIMEOUT_SECONDS),
        Client::connect([endpoint], Some(options)),
    )
    .await
    .with_context(|| format!("connecting to {endpoint}: timed out"))?
    .with_context(|| format!("connecting to {endpoint}"))
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    errors: AtomicU64,
    failed_compares: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, what: impl Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                *first = Some(what.to_string());
            }
        }
    }
}

/// What a run measured, before it becomes a [`Report`].
struct Outcome {
    elapsed: Duration,
    latencies_us: Vec<Vec<u64>>,
    ops: u64,
    watch_expected: u64,
    watch_received: u64,
}

impl Outcome {
    fn into_report(
        self,
        args: &LoadArgs,
        endpoints: &[String],
        connections: usize,
        shared: &Shared,
    ) -> Report {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)
            .unwrap_or_else(|_| unreachable!("constant, valid histogram bounds"));
        for latency in self.latencies_us.iter().flatten() {
            histogram.saturating_record((*latency).clamp(1, LATENCY_US_MAX));
        }
        let has = !histogram.is_empty();
        let seconds = self.elapsed.as_secs_f64();
        let missing = self.watch_expected.saturating_sub(self.watch_received);
        Report {
            workload: args.workload.name().to_string(),
            endpoints: endpoints.to_vec(),
            clients: args.clients,
            connections,
            value_size: args.value_size,
            seconds,
            ops: self.ops,
            ops_per_second: if seconds > 0.0 {
                self.ops as f64 / seconds
            } else {
                0.0
            },
            errors: shared.errors.load(Ordering::Relaxed) + missing,
            first_error: shared.first_error.lock().ok().and_then(|e| e.clone()),
            p50_us: has.then(|| histogram.value_at_quantile(0.5)),
            p99_us: has.then(|| histogram.value_at_quantile(0.99)),
            p999_us: has.then(|| histogram.value_at_quantile(0.999)),
            max_us: has.then(|| histogram.max()),
            mean_us: has.then(|| histogram.mean()),
            failed_compares: shared.failed_compares.load(Ordering::Relaxed),
            watch_events_expected: self.watch_expected,
            watch_events_received: self.watch_received,
        }
    }
}

fn key(index: u64) -> Vec<u8> {
    format!("bench/{index:010}").into_bytes()
}

/// A value of `size` bytes that does not compress to nothing.
fn value(size: usize) -> Vec<u8> {
    let mut rng = SplitMix64(SEED ^ size as u64);
    (0..size).map(|_| b'a' + (rng.next() % 26) as u8).collect()
}

/// A small, seedable generator: each client's key sequence is the same on
/// every server.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        // The modulo bias is irrelevant for key choice.
        self.next() % bound.max(1)
    }
}

async fn timed<T, E: Display>(
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(REQUEST_TIMEOUT_SECONDS), request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT_SECONDS} s")),
    }
}

/// Writes every key of the key space once, `PRELOAD_CONCURRENCY` at a time.
async fn preload(args: &LoadArgs, connections: &[Client]) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let value = value(args.value_size);
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..PRELOAD_CONCURRENCY.min(args.key_space as usize).max(1) {
        let mut kv = connections[writer % connections.len()].kv_client();
        let next = Arc::clone(&next);
        let value = value.clone();
        let key_space = args.key_space;
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= key_space {
                    return Ok::<(), String>(());
                }
                timed(kv.put(key(index), value.clone(), None))
                    .await
                    .map_err(|e| format!("preloading {}: {e}", index))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => bail!("{error}"),
            Err(error) => bail!("a preload task failed: {error}"),
        }
    }
    Ok(())
}

/// The request-per-client workloads: put, get, get-serializable, txn, lease.
async fn requests(
    args: &LoadArgs,
    connections: &[Client],
    shared: &Arc<Shared>,
    emit: &mut dyn FnMut(&Line),
) -> Result<Outcome> {
    if args.preload {
        preload(args, connections).await?;
    }
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let value = value(args.value_size);
    let per_client_keys = args.key_space / args.clients as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..args.clients {
        let connection = connections[client % connections.len()].clone();
        let quota = args.ops.map(|ops| {
            let base = ops / args.clients as u64;
            base + u64::from((client as u64) < ops % args.clients as u64)
        });
        let mut setup = ClientSetup {
            workload: args.workload,
            key_space: args.key_space,
            value: value.clone(),
            // txn: this client's own contiguous keys.
            first_key: client as u64 * per_client_keys,
            own_keys: per_client_keys,
            rng: SplitMix64(SEED ^ ((client as u64) << 20)),
            quota,
        };
        let shared = Arc::clone(shared);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let prepared = setup.prepare(connection).await;
            // Everyone passes the barrier, ready or not, so a failed setup
            // cannot leave the others waiting.
            barrier.wait().await;
            match prepared {
                Ok(state) => Ok(setup.run(state, &shared).await),
                Err(error) => Err(error),
            }
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    emit(&Line::Measuring);
    if let Some(duration) = args.duration() {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            shared.stop.store(true, Ordering::Relaxed);
        });
    }
    let mut latencies_us = Vec::with_capacity(args.clients);
    let mut setup_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(latencies)) => latencies_us.push(latencies),
            Ok(Err(error)) => {
                shared.stop.store(true, Ordering::Relaxed);
                setup_error.get_or_insert(error);
            }
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                setup_error.get_or_insert(anyhow::anyhow!("a client task failed: {error}"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(error) = setup_error {
        return Err(error.context("setting up a client"));
    }
    let ops = latencies_us.iter().map(|l| l.len() as u64).sum();
    Ok(Outcome {
        elapsed,
        latencies_us,
        ops,
        watch_expected: 0,
        watch_received: 0,
    })
}

struct ClientSetup {
    workload: Workload,
    key_space: u64,
    value: Vec<u8>,
    first_key: u64,
    own_keys: u64,
    rng: SplitMix64,
    quota: Option<u64>,
}

/// A client's connection-bound state, made before the clock starts.
enum ClientState {
    Kv(KvClient),
    /// txn: the last mod_revision seen of each own key (0: absent).
    Txn(KvClient, Vec<i64>),
    Lease(Box<Lease>),
}

/// lease: this client's lease, its keep-alive stream, and the connection
/// to revoke it on.
struct Lease {
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
    client: Client,
}

impl ClientSetup {
    async fn prepare(&mut self, connection: Client) -> Result<ClientState> {
        match self.workload {
            Workload::Put | Workload::Get | Workload::GetSerializable => {
                Ok(ClientState::Kv(connection.kv_client()))
            }
            Workload::Txn => {
                let mut kv = connection.kv_client();
                let mut revisions = vec![0i64; self.own_keys as usize];
                let end = key(self.first_key + self.own_keys);
                let options = GetOptions::new().with_range(end).with_keys_only();
                let found = timed(kv.get(key(self.first_key), Some(options)))
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the txn keys' revisions: {e}"))?;
                for kv_pair in found.kvs() {
                    let index = std::str::from_utf8(kv_pair.key())
                        .ok()
                        .and_then(|k| k.strip_prefix("bench/"))
                        .and_then(|n| n.parse::<u64>().ok());
                    if let Some(slot) = index
                        .and_then(|i| i.checked_sub(self.first_key))
                        .and_then(|offset| revisions.get_mut(offset as usize))
                    {
                        *slot = kv_pair.mod_revision();
                    }
                }
                Ok(ClientState::Txn(kv, revisions))
            }
            Workload::Lease => {
                let mut client = connection;
                let granted = timed(client.lease_grant(LEASE_TTL_SECONDS, None))
                    .await
                    .map_err(|e| anyhow::anyhow!("granting a lease: {e}"))?;
                let (keeper, stream) = timed(client.lease_keep_alive(granted.id()))
                    .await
                    .map_err(|e| anyhow::anyhow!("opening a keep-alive stream: {e}"))?;
                Ok(ClientState::Lease(Box::new(Lease {
                    keeper,
                    stream,
                    client,
                })))
            }
            Workload::Watch => bail!("watch is not a request workload"),
        }
    }

    /// Requests until told to stop (or the quota is done); the latency of
    /// each success, µs.
    async fn run(&mut self, mut state: ClientState, shared: &Shared) -> Vec<u64> {
        let mut latencies = Vec::new();
        let mut done: u64 = 0;
        loop {
            if shared.stop.load(Ordering::Relaxed) || self.quota.is_some_and(|q| done >= q) {
                break;
            }
            done += 1;
            let sent = Instant::now();
            let result = match &mut state {
                ClientState::Kv(kv) => {
                    let index = self.rng.below(self.key_space);
                    match self.workload {
                        Workload::Put => timed(kv.put(key(index), self.value.clone(), None))
                            .await
                            .map(drop),
                        Workload::Get => timed(kv.get(key(index), None)).await.map(drop),
                        _ => timed(kv.get(key(index), Some(GetOptions::new().with_serializable())))
                            .await
                            .map(drop),
                    }
                }
                ClientState::Txn(kv, revisions) => {
                    let offset = self.rng.below(self.own_keys) as usize;
                    txn(
                        kv,
                        key(self.first_key + offset as u64),
                        &self.value,
                        revisions,
                        offset,
                        shared,
                    )
                    .await
                }
                ClientState::Lease(lease) => {
                    let keep_alive = async {
                        lease.keeper.keep_alive().await?;
                        match lease.stream.message().await? {
                            Some(answer) if answer.ttl() > 0 => Ok(()),
                            Some(_) => Err(etcd_client::Error::LeaseKeepAliveError(
                                "lease not found".into(),
                            )),
                            None => Err(etcd_client::Error::LeaseKeepAliveError(
                                "keep-alive stream closed".into(),
                            )),
                        }
                    };
                    timed(keep_alive).await
                }
            };
            match result {
                Ok(()) => latencies.push(sent.elapsed().as_micros() as u64),
                Err(error) => {
                    shared.error(error);
                    tokio::time::sleep(Duration::from_millis(ERROR_PAUSE_MS)).await;
                }
            }
        }
        if let ClientState::Lease(mut lease) = state {
            // Tidying up, outside the measured window; a failure here is
            // harmless (the lease expires).
            let _ = tokio::time::timeout(
                Duration::from_secs(REQUEST_TIMEOUT_SECONDS),
                lease.client.lease_revoke(lease.keeper.id()),
            )
            .await;
        }
        latencies
    }
}

/// One compare-and-put; a failed compare is counted and the key's current
/// revision fetched (untimed as a request of its own, but inside the
/// window) so this client's next txn on it can succeed.
async fn txn(
    kv: &mut KvClient,
    key: Vec<u8>,
    value: &[u8],
    revisions: &mut [i64],
    offset: usize,
    shared: &Shared,
) -> Result<(), String> {
    let Some(revision) = revisions.get_mut(offset) else {
        return Err(format!("txn key offset {offset} out of range"));
    };
    let request = Txn::new()
        .when([Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            *revision,
        )])
        .and_then([TxnOp::put(key.clone(), value.to_vec(), None)]);
    let answer = timed(kv.txn(request)).await?;
    if answer.succeeded() {
        // The put is the txn's only write: its revision is the key's new
        // mod_revision.
        *revision = answer.header().map_or(0, |h| h.revision());
        return Ok(());
    }
    shared.failed_compares.fetch_add(1, Ordering::Relaxed);
    let current = timed(kv.get(key, None)).await?;
    *revision = current.kvs().first().map_or(0, |kv| kv.mod_revision());
    Ok(())
}

/// One writer, `--clients` watchers of its key.
async fn watch(
    args: &LoadArgs,
    endpoints: &[String],
    connections: &[Client],
    shared: &Arc<Shared>,
    emit: &mut dyn FnMut(&Line),
) -> Result<Outcome> {
    let origin = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_watchers, stopped) = tokio::sync::watch::channel(false);
    let mut watchers = tokio::task::JoinSet::new();
    for watcher in 0..args.clients {
        let mut client = connections[watcher % connections.len()].clone();
        let mut stream = tokio::time::timeout(
            Duration::from_secs(CONNECT_TIMEOUT_SECONDS),
            client.watch(WATCH_KEY, None),
        )
        .await
        .context("opening a watch stream: timed out")?
        .context("opening a watch stream")?;
        // The server confirms the watch before any event can be expected.
        match tokio::time::timeout(
            Duration::from_secs(CONNECT_TIMEOUT_SECONDS),
            stream.message(),
        )
        .await
        {
            Ok(Ok(Some(answer))) if answer.created() => {}
            Ok(Ok(Some(answer))) => bail!(
                "watch {watcher}: expected the creation response, got {} events",
                answer.events().len()
            ),
            Ok(Ok(None)) => bail!("watch {watcher}: the stream closed at once"),
            Ok(Err(error)) => bail!("watch {watcher}: {error}"),
            Err(_) => bail!("watch {watcher}: not confirmed within {CONNECT_TIMEOUT_SECONDS} s"),
        }
        let received = Arc::clone(&received);
        let shared = Arc::clone(shared);
        let mut stopped = stopped.clone();
        watchers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    message = stream.message() => match message {
                        Ok(Some(answer)) => {
                            let now_ns = origin.elapsed().as_nanos() as u64;
                            for event in answer.events() {
                                let Some(sent_ns) = event
                                    .kv()
                                    .and_then(|kv| kv.value().get(..8))
                                    .and_then(|bytes| bytes.try_into().ok())
                                    .map(u64::from_le_bytes)
                                else {
                                    continue;
                                };
                                received.fetch_add(1, Ordering::Relaxed);
                                latencies.push(now_ns.saturating_sub(sent_ns) / 1_000);
                            }
                        }
                        Ok(None) => {
                            shared.error("a watch stream closed");
                            break;
                        }
                        Err(error) => {
                            shared.error(error);
                            break;
                        }
                    }
                }
            }
            latencies
        });
    }
    // The writer's connection: the first endpoint (the harness puts the
    // leader there), of its own so it does not queue behind watch traffic.
    let mut writer = connect(&endpoints[0]).await?.kv_client();
    let mut value = self::value(args.value_size);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    // A slow put delays the next one rather than bunching the ones missed.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    emit(&Line::Measuring);
    let end = args.duration().map(|d| started + d);
    let mut acknowledged: u64 = 0;
    let mut puts: u64 = 0;
    loop {
        if end.is_some_and(|end| Instant::now() >= end) || args.ops.is_some_and(|ops| puts >= ops) {
            break;
        }
        tick.tick().await;
        puts += 1;
        let sent_ns = origin.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&sent_ns.to_le_bytes());
        match timed(writer.put(WATCH_KEY, value.clone(), None)).await {
            Ok(_) => acknowledged += 1,
            Err(error) => shared.error(format!("watch writer: {error}")),
        }
    }
    let expected = acknowledged * args.clients as u64;
    let drain_end = Instant::now() + Duration::from_secs(WATCH_DRAIN_SECONDS);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop_watchers.send(true);
    let mut latencies_us = Vec::with_capacity(args.clients);
    while let Some(joined) = watchers.join_next().await {
        match joined {
            Ok(latencies) => latencies_us.push(latencies),
            Err(error) => shared.error(format!("a watcher task failed: {error}")),
        }
    }
    let watch_received = received.load(Ordering::Relaxed);
    Ok(Outcome {
        elapsed,
        latencies_us,
        ops: watch_received,
        watch_expected: expected,
        watch_received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadArgs> {
        let cli = Cli::try_parse_from(std::iter::once("etcd-load").chain(args.iter().copied()))?;
        cli.load.check()?;
        Ok(cli.load)
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for bad in [
            &["--endpoints", "", "--clients", "1"][..],
            &["--endpoints", "http://x", "--clients", "0"],
            &["--endpoints", "http://x", "--duration", "-1"],
            &["--endpoints", "http://x", "--duration", "NaN"],
            &["--endpoints", "http://x", "--ops", "0"],
            &["--endpoints", "http://x", "--key-space", "0"],
            &[
                "--endpoints",
                "http://x",
                "--clients",
                "4",
                "--connections",
                "5",
            ],
            &[
                "--endpoints",
                "http://x",
                "--workload",
                "txn",
                "--clients",
                "8",
                "--key-space",
                "4",
            ],
            &[
                "--endpoints",
                "http://x",
                "--workload",
                "watch",
                "--value-size",
                "4",
            ],
            &[
                "--endpoints",
                "http://x",
                "--workload",
                "watch",
                "--rate",
                "0",
            ],
            &["--endpoints", "http://x", "--workload", "nope"],
            &["--endpoints", "http://x", "--duration", "1", "--ops", "5"],
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        let good = parse(&["--endpoints", "http://a,http://b", "--clients", "64"]).unwrap();
        assert_eq!(good.connection_count(), 8);
        let watch = parse(&[
            "--endpoints",
            "http://a",
            "--clients",
            "1000",
            "--workload",
            "watch",
        ])
        .unwrap();
        assert_eq!(watch.connection_count(), 16);
        let mut txn = parse(&[
            "--endpoints",
            "http://a,http://b",
            "--clients",
            "16",
            "--workload",
            "txn",
            "--duration",
            "2.5",
            "--connections",
            "4",
            "--preload",
        ])
        .unwrap();
        let again = parse(&txn.to_args().iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{txn:?}"));
        txn.duration = None;
        txn.ops = Some(99);
        let again = parse(&txn.to_args().iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{txn:?}"));
    }

    #[test]
    fn keys_sort_as_numbers_and_reports_round_trip() {
        assert!(key(9) < key(10) && key(99_999) < key(100_000));
        let line = Line::Report(Box::new(Report {
            workload: "put".into(),
            ops: 3,
            p50_us: Some(7),
            ..Report::default()
        }));
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with(r#"{"event":"report""#), "{text}");
        match serde_json::from_str::<Line>(&text).unwrap() {
            Line::Report(report) => assert_eq!((report.ops, report.p50_us), (3, Some(7))),
            Line::Measuring => panic!("wrong line"),
        }
        let measuring = serde_json::to_string(&Line::Measuring).unwrap();
        assert_eq!(measuring, r#"{"event":"measuring"}"#);
    }
}

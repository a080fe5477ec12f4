//! calls/s and casts/s of a durable server with 1 and 4 consumers, on the
//! embedded store, on `chorus serve` through its etcd API, and on a real
//! etcd, side by side. Prints a markdown block between
//! `<!-- durable:begin -->` and `<!-- durable:end -->` for
//! scripts/bench-docs.py.
//!
//!     cargo bench -p chorus-durable --bench durable [-- --seconds 2]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_backend::conformance::EtcdProcess;
use chorus_backend::{EmbeddedKv, EtcdConfig, EtcdKv, KvBackend};
use chorus_durable::{Durable, DurableServer, Failure, Outcome, StartOptions};
use chorus_server::{ServeConfig, Server};

/// Concurrent publishers (casts) and callers (calls) in every row.
const CLIENTS: usize = 4;
/// Default length of each measurement, in seconds.
const SECONDS_DEFAULT: f64 = 2.0;

struct Counter;

impl DurableServer for Counter {
    type State = u64;
    type Call = u64;
    type Cast = u64;
    type Reply = u64;
    type Info = ();

    fn init(&self) -> Result<u64, Failure> {
        Ok(0)
    }
    fn handle_call(&self, add: u64, count: u64) -> Result<Outcome<Self>, Failure> {
        Ok(Outcome::reply(count + add, count + add))
    }
    fn handle_cast(&self, add: u64, count: u64) -> Result<Outcome<Self>, Failure> {
        Ok(Outcome::noreply(count + add))
    }
}

struct Row {
    backend: &'static str,
    consumers: usize,
    casts_per_s: f64,
    calls_per_s: f64,
}

async fn consumers<B: KvBackend>(
    store: &B,
    tenant: &str,
    count: usize,
) -> Vec<Durable<Counter, B>> {
    let mut all = Vec::new();
    for _ in 0..count {
        let options = StartOptions::new(tenant).cache(true);
        all.push(
            Durable::start(Counter, store.clone(), options)
                .await
                .expect("consumer"),
        );
    }
    all
}

/// Casts from CLIENTS publishers for `seconds`, then a call queued behind
/// them: casts per second until that call is answered.
async fn casts<B: KvBackend>(store: &B, tenant: &str, consumer_count: usize, seconds: f64) -> f64 {
    let mut running = consumers(store, tenant, consumer_count).await;
    let publisher = Arc::new(
        Durable::start(
            Counter,
            store.clone(),
            StartOptions::new(tenant).consume(false),
        )
        .await
        .expect("publisher"),
    );
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let publisher = Arc::clone(&publisher);
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                publisher.cast(1).await.expect("cast");
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    let total = publisher.call_timeout(0, None).await.expect("drain");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(
        total,
        sent.load(Ordering::Relaxed),
        "every cast processed once"
    );
    for consumer in &mut running {
        consumer.shutdown().await.expect("shutdown");
    }
    total as f64 / elapsed
}

/// Calls from CLIENTS callers for `seconds`.
async fn calls<B: KvBackend>(store: &B, tenant: &str, consumer_count: usize, seconds: f64) -> f64 {
    let mut running = consumers(store, tenant, consumer_count).await;
    let caller = Arc::new(
        Durable::start(
            Counter,
            store.clone(),
            StartOptions::new(tenant).consume(false),
        )
        .await
        .expect("caller"),
    );
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let caller = Arc::clone(&caller);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                caller.call_timeout(1, None).await.expect("call");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    for consumer in &mut running {
        consumer.shutdown().await.expect("shutdown");
    }
    done.load(Ordering::Relaxed) as f64 / elapsed
}

async fn rows<B: KvBackend>(name: &'static str, store: B, seconds: f64, out: &mut Vec<Row>) {
    for consumer_count in [1, 4] {
        let casts_per_s = casts(
            &store,
            &format!("bench/{name}/casts/{consumer_count}"),
            consumer_count,
            seconds,
        )
        .await;
        let calls_per_s = calls(
            &store,
            &format!("bench/{name}/calls/{consumer_count}"),
            consumer_count,
            seconds,
        )
        .await;
        eprintln!("{name}, {consumer_count} consumers: {casts_per_s:.0} casts/s, {calls_per_s:.0} calls/s");
        out.push(Row {
            backend: name,
            consumers: consumer_count,
            casts_per_s,
            calls_per_s,
        });
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut seconds = SECONDS_DEFAULT;
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--seconds") {
        seconds = args
            .get(at + 1)
            .and_then(|value| value.parse().ok())
            .unwrap_or(SECONDS_DEFAULT);
    }
    let mut out = Vec::new();

    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = EmbeddedKv::open(dir.path().join("embedded"))
        .await
        .expect("embedded");
    rows("embedded chorus-kv", embedded.clone(), seconds, &mut out).await;
    embedded.shutdown().await.expect("shutdown");

    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let config = ServeConfig {
        name: "bench".into(),
        data_dir: dir.path().join("serve"),
        listen_client_urls: vec![client.clone()],
        advertise_client_urls: vec![client.clone()],
        listen_peer_urls: vec![peer.clone()],
        initial_advertise_peer_urls: vec![peer],
        ..ServeConfig::default()
    };
    let server = Server::start(config).await.expect("chorus serve");
    let serve = EtcdKv::connect(EtcdConfig::new([client])).expect("connect");
    while serve.get("ready").await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rows("chorus serve (etcd API)", serve, seconds, &mut out).await;
    server.shutdown().await.expect("shutdown");

    let etcd = EtcdProcess::start().await.expect("etcd");
    let real = EtcdKv::connect(EtcdConfig::new([etcd.endpoint.clone()])).expect("connect");
    rows("etcd 3.4 (etcd API)", real, seconds, &mut out).await;
    drop(etcd);

    println!("<!-- durable:begin -->");
    println!("### Durable servers (chorus-durable)\n");
    println!(
        "A counter server; {CLIENTS} concurrent publishers (casts, measured until a call queued \
         behind them is answered, so every cast is processed) or {CLIENTS} concurrent callers \
         (calls: enqueue, consume, reply); {seconds} s per cell; state cache on; one node, \
         data in a temp dir. `cargo bench -p chorus-durable --bench durable`.\n"
    );
    println!("| backend | consumers | casts/s | calls/s |");
    println!("|---|---:|---:|---:|");
    for row in &out {
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            row.backend, row.consumers, row.casts_per_s, row.calls_per_s
        );
    }
    println!("<!-- durable:end -->");
}

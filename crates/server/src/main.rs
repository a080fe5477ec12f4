//! The `chorus` binary: `serve` (the default), `local`, `status`, `sessions`.

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chorus_server::pb::etcdserverpb::cluster_client::ClusterClient;
use chorus_server::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use chorus_server::pb::etcdserverpb::{MemberListRequest, StatusRequest};
use chorus_server::{ClusterState, ServeConfig, Server};
use clap::{Args, Parser, Subcommand};

mod sessions_cli;

#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "chorus: a replicated key-value store speaking etcd's v3 API, on Raft"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a member (the default). With no flags: a durable single-node
    /// store in ./chorus-data, clients on 127.0.0.1:2379.
    Serve(Box<ServeArgs>),
    /// Start a cluster of local processes on loopback to try chorus out;
    /// Ctrl-C stops them all.
    Local(LocalArgs),
    /// Print every member's role, term and indexes.
    Status(StatusArgs),
    /// Client sessions, their connections and cluster state documents
    /// (the chorus.sessions.v1 service).
    Sessions(sessions_cli::SessionsArgs),
}

impl Default for Commands {
    fn default() -> Self {
        Commands::Serve(Box::default())
    }
}

/// etcd's flags, with etcd's names (a config file takes the same keys).
#[derive(Args, Default)]
struct ServeArgs {
    /// A TOML file with the settings below (flags override it).
    #[arg(long)]
    config_file: Option<PathBuf>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Comma-separated URLs.
    #[arg(long)]
    listen_client_urls: Option<String>,
    #[arg(long)]
    advertise_client_urls: Option<String>,
    #[arg(long)]
    listen_peer_urls: Option<String>,
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    #[arg(long)]
    listen_metrics_urls: Option<String>,
    /// name=peer-url,... for every initial member.
    #[arg(long)]
    initial_cluster: Option<String>,
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// new or existing.
    #[arg(long)]
    initial_cluster_state: Option<ClusterState>,
    #[arg(long)]
    max_request_bytes: Option<usize>,
    #[arg(long)]
    max_txn_ops: Option<usize>,
    /// Milliseconds.
    #[arg(long)]
    election_timeout: Option<u64>,
    /// Milliseconds.
    #[arg(long)]
    heartbeat_interval: Option<u64>,
    /// Applied entries between snapshots (default 100000, as etcd).
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Key prefix of the sessions service (default chorus/sessions/).
    #[arg(long)]
    sessions_prefix: Option<String>,
    /// Milliseconds a session saved with a past deadline gets, and an
    /// expired session with a live connection is extended by (default
    /// 600000).
    #[arg(long)]
    sessions_default_validity: Option<u64>,
    /// Milliseconds between clean-ups of expired sessions (default 60000).
    #[arg(long)]
    sessions_clean_interval: Option<u64>,
}

#[derive(Args)]
struct LocalArgs {
    /// How many members (1 to 6).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the members keep their data (one directory each).
    #[arg(long, default_value = "chorus-local")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct StatusArgs {
    /// Comma-separated client URLs of the members to ask.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
}

fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(String::from)
        .collect()
}

impl ServeArgs {
    fn config(self) -> Result<ServeConfig> {
        let mut config = match &self.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                ServeConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => ServeConfig::default(),
        };
        if let Some(name) = self.name {
            config.name = name;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(list) = self.listen_client_urls {
            config.listen_client_urls = urls(&list);
            // etcd advertises what it listens on unless told otherwise.
            if self.advertise_client_urls.is_none() {
                config.advertise_client_urls = config.listen_client_urls.clone();
            }
        }
        if let Some(list) = self.advertise_client_urls {
            config.advertise_client_urls = urls(&list);
        }
        if let Some(list) = self.listen_peer_urls {
            config.listen_peer_urls = urls(&list);
            if self.initial_advertise_peer_urls.is_none() {
                config.initial_advertise_peer_urls = config.listen_peer_urls.clone();
            }
        }
        if let Some(list) = self.initial_advertise_peer_urls {
            config.initial_advertise_peer_urls = urls(&list);
        }
        if let Some(list) = self.listen_metrics_urls {
            config.listen_metrics_urls = urls(&list);
        }
        if let Some(cluster) = self.initial_cluster {
            config.initial_cluster = cluster;
        }
        if let Some(token) = self.initial_cluster_token {
            config.initial_cluster_token = token;
        }
        if let Some(state) = self.initial_cluster_state {
            config.initial_cluster_state = state;
        }
        if let Some(bytes) = self.max_request_bytes {
            config.max_request_bytes = bytes;
        }
        if let Some(ops) = self.max_txn_ops {
            config.max_txn_ops = ops;
        }
        if let Some(ms) = self.election_timeout {
            config.election_timeout = ms;
        }
        if let Some(ms) = self.heartbeat_interval {
            config.heartbeat_interval = ms;
        }
        if let Some(count) = self.snapshot_count {
            config.snapshot_count = count;
        }
        if let Some(prefix) = self.sessions_prefix {
            config.sessions_prefix = prefix;
        }
        if let Some(ms) = self.sessions_default_validity {
            config.sessions_default_validity = ms;
        }
        if let Some(ms) = self.sessions_clean_interval {
            config.sessions_clean_interval = ms;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or_default() {
        Commands::Serve(args) => args.config().and_then(serve),
        Commands::Local(args) => local(args),
        Commands::Status(args) => status(args),
        Commands::Sessions(args) => sessions_cli::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chorus: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(config: ServeConfig) -> Result<()> {
    runtime()?.block_on(async move {
        let server = Server::start(config).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing requests in progress and syncing the log");
        server.shutdown().await?;
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

/// etcd's local-cluster ports (its Procfile): member 1 serves clients on
/// 2379 and peers on 2380, member i > 1 on (i + 1)·10000 + 2379 and + 2380
/// (22379, 32379, ...).
fn local_ports(i: usize) -> (u16, u16) {
    let client = if i == 0 {
        2379
    } else {
        2379 + 10_000 * (i as u16 + 1)
    };
    (client, client + 1)
}

fn local(args: LocalArgs) -> Result<()> {
    if !(1..=6).contains(&args.nodes) {
        bail!("--nodes must be between 1 and 6");
    }
    let exe = std::env::current_exe().context("finding the chorus executable")?;
    let cluster: Vec<String> = (0..args.nodes)
        .map(|i| format!("node{}=http://127.0.0.1:{}", i + 1, local_ports(i).1))
        .collect();
    let mut children: Vec<Child> = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..args.nodes {
        let (client, peer) = local_ports(i);
        let name = format!("node{}", i + 1);
        let child = Command::new(&exe)
            .arg("serve")
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(args.data_dir.join(&name))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "chorus-local"])
            .spawn()
            .with_context(|| format!("starting {name}"));
        match child {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_all(&mut children);
                return Err(error);
            }
        }
        endpoints.push(format!("127.0.0.1:{client}"));
    }
    println!(
        "chorus local: {} members; data in {}\n  endpoints: {}\n  try: etcdctl --endpoints={} put hello world\n  Ctrl-C stops them all.",
        args.nodes,
        args.data_dir.display(),
        endpoints.join(","),
        endpoints.join(",")
    );
    let waited = runtime()?.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    });
    stop_all(&mut children);
    waited.context("waiting for Ctrl-C")
}

/// SIGTERM to every member (a clean shutdown each), then wait for them.
fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            continue;
        };
        // SAFETY: kill(2) takes plain integers; the pid is our own child,
        // not yet waited for, so it cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}

fn status(args: StatusArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let endpoints = urls(&args.endpoints);
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let mut names = std::collections::BTreeMap::new();
        println!(
            "{:<26} {:<16} {:<10} {:<8} {:>6} {:>10} {:>10} {:>9} {:>10}  errors",
            "endpoint",
            "member",
            "name",
            "role",
            "term",
            "commit",
            "applied",
            "revision",
            "db bytes"
        );
        for endpoint in &endpoints {
            let connect = tokio::time::timeout(
                Duration::from_secs(3),
                tonic::transport::Endpoint::from_shared(endpoint.clone())?.connect(),
            )
            .await;
            let channel = match connect {
                Ok(Ok(channel)) => channel,
                Ok(Err(error)) => {
                    println!("{endpoint:<26} unreachable: {error}");
                    continue;
                }
                Err(_) => {
                    println!("{endpoint:<26} unreachable: timed out");
                    continue;
                }
            };
            if names.is_empty() {
                if let Ok(list) = ClusterClient::new(channel.clone())
                    .member_list(MemberListRequest::default())
                    .await
                {
                    for member in list.into_inner().members {
                        names.insert(member.id, member.name);
                    }
                }
            }
            match MaintenanceClient::new(channel)
                .status(StatusRequest {})
                .await
            {
                Ok(reply) => {
                    let status = reply.into_inner();
                    let header = status.header.unwrap_or_default();
                    let role = if status.leader == header.member_id {
                        "leader"
                    } else if status.is_learner {
                        "learner"
                    } else {
                        "follower"
                    };
                    println!(
                        "{:<26} {:<16x} {:<10} {:<8} {:>6} {:>10} {:>10} {:>9} {:>10}  {}",
                        endpoint,
                        header.member_id,
                        names.get(&header.member_id).map_or("", String::as_str),
                        role,
                        status.raft_term,
                        status.raft_index,
                        status.raft_applied_index,
                        header.revision,
                        status.db_size,
                        status.errors.join("; ")
                    );
                }
                Err(error) => println!("{endpoint:<26} error: {}", error.message()),
            }
        }
        Ok(())
    })
}

//! Shared helpers for the integration tests: members on loopback with
//! their own data directories and ports, etcd clients for them, and
//! waiting for conditions that only become true eventually.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::time::Duration;

use chorus_server::{ClusterState, ServeConfig, Server};
use etcd_client::{Client, ConnectOptions};
use tempfile::TempDir;

/// Raft timings short enough for tests (etcd's flags, milliseconds).
pub const ELECTION_TIMEOUT_MS: u64 = 500;
pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
/// The longest any test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A port that was free a moment ago (members must know each other's
/// peer URLs before any of them starts).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// One member's settings and data directory; `server` while it runs.
pub struct Member {
    pub name: String,
    /// Kept for its lifetime: the data directory goes with the member.
    _dir: TempDir,
    pub config: ServeConfig,
    pub server: Option<Server>,
}

impl Member {
    /// A member named `name` with fresh ports and data directory, not yet
    /// started.
    pub fn new(name: &str) -> Member {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let config = ServeConfig {
            name: name.to_string(),
            data_dir: dir.path().join("data"),
            listen_client_urls: vec![client.clone()],
            advertise_client_urls: vec![client],
            listen_peer_urls: vec![peer.clone()],
            initial_advertise_peer_urls: vec![peer],
            initial_cluster_token: "chorus-etcd-client-test".into(),
            election_timeout: ELECTION_TIMEOUT_MS,
            heartbeat_interval: HEARTBEAT_INTERVAL_MS,
            ..ServeConfig::default()
        };
        Member {
            name: name.to_string(),
            _dir: dir,
            config,
            server: None,
        }
    }

    pub fn peer_url(&self) -> &str {
        &self.config.initial_advertise_peer_urls[0]
    }

    pub fn client_url(&self) -> &str {
        &self.config.advertise_client_urls[0]
    }

    /// `name=peer-url`, as `--initial-cluster` lists it.
    pub fn initial_cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    pub async fn start(&mut self) {
        self.start_with(None).await
    }

    /// Starts the member; `progress` overrides the watch progress
    /// notification interval.
    pub async fn start_with(&mut self, progress: Option<Duration>) {
        assert!(self.server.is_none(), "{} is already running", self.name);
        let config = self.config.clone();
        let server = match progress {
            Some(interval) => Server::start_with(config, interval).await,
            None => Server::start(config).await,
        }
        .unwrap_or_else(|error| panic!("starting {}: {error}", self.name));
        assert_eq!(
            server.client_addrs()[0].to_string(),
            self.client_url().trim_start_matches("http://"),
            "the member listens where it advertises"
        );
        self.server = Some(server);
    }

    pub fn id(&self) -> u64 {
        self.server.as_ref().expect("running").member_id()
    }

    pub async fn client(&self) -> Client {
        connect(self.client_url()).await
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A client for one endpoint, with timeouts so a test fails instead of
/// hanging.
pub async fn connect(endpoint: &str) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(15));
    Client::connect([endpoint], Some(options))
        .await
        .expect("connect")
}

/// A running single-member cluster and a client for it, once it has a
/// leader.
pub async fn single() -> (Member, Client) {
    single_with(None).await
}

pub async fn single_with(progress: Option<Duration>) -> (Member, Client) {
    let mut member = Member::new("solo");
    member.start_with(progress).await;
    let mut client = member.client().await;
    let leader = wait_for_leader(&mut client).await;
    assert_eq!(leader, member.id(), "a lone member leads itself");
    (member, client)
}

/// `count` members started together as a new cluster, once they agree on
/// a leader.
pub async fn cluster(count: usize) -> Vec<Member> {
    let mut members: Vec<Member> = (0..count).map(|i| Member::new(&format!("m{i}"))).collect();
    let initial = members
        .iter()
        .map(Member::initial_cluster_entry)
        .collect::<Vec<_>>()
        .join(",");
    for member in &mut members {
        member.config.initial_cluster = initial.clone();
        member.config.initial_cluster_state = ClusterState::New;
    }
    for member in &mut members {
        member.start().await;
    }
    let mut leaders = Vec::new();
    for member in &members {
        let mut client = member.client().await;
        leaders.push(wait_for_leader(&mut client).await);
    }
    // Members may see different leaders for a moment after an election.
    eventually("every member reports the same leader", || {
        let members = &members;
        async move {
            let mut seen = Vec::new();
            for member in members {
                let status = member.client().await.status().await.ok()?;
                seen.push(status.leader());
            }
            (seen.iter().all(|l| *l == seen[0] && *l != 0)).then_some(())
        }
    })
    .await;
    members
}

/// Waits until the member behind `client` knows a leader; returns it.
pub async fn wait_for_leader(client: &mut Client) -> u64 {
    let client = client.clone();
    eventually("a leader is elected", move || {
        let mut client = client.clone();
        async move {
            let status = client.status().await.ok()?;
            (status.leader() != 0).then_some(status.leader())
        }
    })
    .await
}

/// Polls `check` until it answers `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gRPC status inside a client error (panics on any other error).
pub fn status_of(error: etcd_client::Error) -> tonic::Status {
    match error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Asserts that `result` failed with `code` and exactly etcd's `message`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, etcd_client::Error>,
    code: tonic::Code,
    message: &str,
) {
    let status = status_of(result.expect_err("the request should fail"));
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "unexpected status {status:?}"
    );
}

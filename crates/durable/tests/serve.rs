//! The scenarios on `chorus serve` through its etcd gRPC API (EtcdKv), the
//! way a program points durable servers at a chorus cluster.

mod scenarios;

use chorus_backend::{EtcdConfig, EtcdKv};
use chorus_server::{ServeConfig, Server};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_on_chorus_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let config = ServeConfig {
        name: "durable".into(),
        data_dir: dir.path().join("data"),
        listen_client_urls: vec![client.clone()],
        advertise_client_urls: vec![client.clone()],
        listen_peer_urls: vec![peer.clone()],
        initial_advertise_peer_urls: vec![peer],
        election_timeout: 500,
        heartbeat_interval: 50,
        ..ServeConfig::default()
    };
    let server = Server::start(config).await.expect("chorus serve");
    let store = EtcdKv::connect(EtcdConfig::new([client.clone()])).expect("connect");
    // Wait for a leader: the first read succeeds once there is one.
    scenarios::guard("leader", async {
        while chorus_backend::KvBackend::get(&store, "ready")
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    scenarios::all(store.clone(), "serve").await;
    scenarios::guard("admin_http", admin_http(store, &client)).await;
    server.shutdown().await.expect("shutdown");
}

/// `GET /durable` lists registered servers with their queue depth and
/// state size; `?tenant=` shows one tenant.
async fn admin_http(store: EtcdKv, client_url: &str) {
    let server = scenarios::LedgerServer::default();
    let options = chorus_durable::StartOptions::new("admin/demo")
        .consume(false)
        .name("admin-demo");
    let handle = scenarios::start(&store, &server, options).await;
    handle.cast(scenarios::Cast::Record(1)).await.expect("cast");
    handle.cast(scenarios::Cast::Record(2)).await.expect("cast");
    let address = client_url.trim_start_matches("http://");
    let listed = http_get_json(address, "/durable").await;
    let servers = listed["servers"].as_array().expect("servers array");
    let demo = servers
        .iter()
        .find(|entry| entry["name"] == "admin-demo")
        .unwrap_or_else(|| panic!("admin-demo not listed: {listed}"));
    assert_eq!(demo["tenant"], "admin/demo");
    assert_eq!(demo["queue_depth"], 2);
    assert!(demo["state_bytes"].as_u64().expect("state_bytes") > 0);
    let one = http_get_json(address, "/durable?tenant=admin%2Fdemo").await;
    assert_eq!(one["queue_depth"], 2, "{one}");
    assert_eq!(one["exists"], true, "{one}");
    let missing = http_get_json(address, "/durable?tenant=nobody").await;
    assert_eq!(missing["exists"], false, "{missing}");
}

/// A minimal HTTP/1.1 GET (the test needs no HTTP client crate).
async fn http_get_json(address: &str, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The body may be chunked: take the JSON object in it.
    let start = body.find('{').expect("a JSON body");
    let end = body.rfind('}').expect("a JSON body");
    serde_json::from_str(&body[start..=end]).expect("JSON")
}

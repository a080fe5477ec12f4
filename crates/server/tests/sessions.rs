//! chorus-sessions on `chorus serve`: the scenarios through the etcd
//! backend and attached to members (one member, and three at once), a
//! restart of every member, and the server's own surface: the
//! `chorus.sessions.v1` gRPC service, `chorus sessions ...` and
//! `GET /sessions`.

mod common;

use std::process::Command;

use chorus_backend::{EtcdConfig, EtcdKv, KvBackend};
use chorus_server::pb::sessions as pb;
use chorus_server::pb::sessions::sessions_client::SessionsClient;
use chorus_sessions::conformance;
use common::{cluster, single, Member};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The code of a call that must fail.
fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Code {
    result.expect_err("the call should fail").code()
}

fn etcd_handles(members: &[&Member]) -> Vec<EtcdKv> {
    members
        .iter()
        .map(|m| EtcdKv::connect(EtcdConfig::new([m.client_url().to_string()])).expect("connect"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_passes_the_scenarios_over_etcd_and_attached() {
    let (mut member, _client) = single().await;
    let handles = etcd_handles(&[&member, &member, &member]);
    conformance::run(&handles, "over-etcd").await;
    let attached = vec![member.server.as_ref().expect("running").kv()];
    conformance::run(&attached, "attached").await;
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_sessions_and_survive_a_restart_of_all() {
    let mut members = cluster(3).await;
    // Each handle is attached to a different member's store: several
    // nodes at once (requests reach the leader through Raft).
    let attached: Vec<_> = members
        .iter()
        .map(|m| m.server.as_ref().expect("running").kv())
        .collect();
    conformance::run(&attached, "attached").await;
    let over_etcd = etcd_handles(&members.iter().collect::<Vec<_>>());
    conformance::concurrent_handles(&over_etcd, "over-etcd/concurrent/").await;
    conformance::fencing(&over_etcd, "over-etcd/fence/").await;

    let written = conformance::before_restart(&over_etcd[0], "restart/").await;
    drop(attached);
    for member in &mut members {
        member.stop().await;
    }
    for member in &mut members {
        member.start().await;
    }
    let after = etcd_handles(&members.iter().collect::<Vec<_>>());
    // Any member answers once the cluster has a leader again.
    conformance::guard("a leader after the restart", async {
        while after[1].get("probe").await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    conformance::after_restart(&after[1], "restart/", &written).await;
    for member in &mut members {
        member.stop().await;
    }
}

/// Saves a session through the gRPC service; the saved session.
async fn save(
    client: &mut SessionsClient<tonic::transport::Channel>,
    request: pb::SaveSessionRequest,
) -> pb::Session {
    client
        .save_session(request)
        .await
        .expect("save")
        .into_inner()
        .session
        .expect("a session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_service_maps_errors_to_codes() {
    let (mut member, _client) = single().await;
    let mut client = SessionsClient::connect(member.client_url().to_string())
        .await
        .expect("connect");
    let saved = save(
        &mut client,
        pb::SaveSessionRequest {
            owner: "alice".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(saved.valid_to_ms > 0 && saved.fence > 0);
    let read = client
        .get_session(pb::GetSessionRequest {
            id: saved.id.clone(),
            update_before: true,
        })
        .await
        .expect("get")
        .into_inner()
        .session
        .expect("a session");
    assert_eq!(read, saved);
    let connection = client
        .save_connection(pb::SaveConnectionRequest {
            session: saved.id.clone(),
            fence: saved.fence,
            data: "tcp".into(),
            ..Default::default()
        })
        .await
        .expect("connect")
        .into_inner()
        .connection
        .expect("a connection");
    let listed = client
        .list_connections(pb::ListConnectionsRequest {
            session: saved.id.clone(),
        })
        .await
        .expect("list")
        .into_inner()
        .connections;
    assert_eq!(listed, vec![connection.clone()]);

    assert_eq!(
        code(
            client
                .get_session(pb::GetSessionRequest {
                    id: uuid(),
                    update_before: true
                })
                .await
        ),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(
            client
                .get_session(pb::GetSessionRequest {
                    id: "nope".into(),
                    update_before: false
                })
                .await
        ),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .save_connection(pb::SaveConnectionRequest {
                    session: saved.id.clone(),
                    fence: saved.fence + 1_000,
                    ..Default::default()
                })
                .await
        ),
        tonic::Code::FailedPrecondition,
        "a stale fence"
    );
    assert_eq!(
        code(
            client
                .get_state(pb::StateRequest { id: String::new() })
                .await
        ),
        tonic::Code::NotFound
    );
    let closed = client
        .close_session(pb::SessionRequest {
            id: saved.id.clone(),
            fence: saved.fence,
        })
        .await
        .expect("close")
        .into_inner()
        .closed;
    assert_eq!(closed, vec![connection]);
    member.stop().await;
}

fn uuid() -> String {
    chorus_sessions::SessionId::random().to_string()
}

/// Runs `chorus sessions --endpoints URL args...`; its stdout on success.
fn cli(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["sessions", "--endpoints", endpoint])
        .args(args)
        .output()
        .expect("run chorus");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The value of `key=` in a line of CLI output.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

async fn http_get(member: &Member, path: &str) -> String {
    let address = member
        .client_url()
        .trim_start_matches("http://")
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_admin_http_work_against_a_member() {
    let (mut member, _client) = single().await;
    let url = member.client_url().to_string();
    let run = |args: &[&str]| {
        let url = url.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            cli(&url, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let saved = run(&["save", "--owner", "alice"])
        .await
        .expect("join")
        .expect("save");
    let id = field(&saved, "id").to_string();
    let fence = field(&saved, "fence").to_string();
    let got = run(&["get", &id, "--update-before"])
        .await
        .expect("join")
        .expect("get");
    assert_eq!(got, saved);
    let listed = run(&["list"]).await.expect("join").expect("list");
    assert!(listed.contains(&id));
    let connected = run(&[
        "connections",
        "save",
        &id,
        "--data",
        "tcp",
        "--fence",
        &fence,
    ])
    .await
    .expect("join")
    .expect("connect");
    let connection = field(&connected, "id").to_string();
    let connections = run(&["connections", "list", &id])
        .await
        .expect("join")
        .expect("list");
    assert_eq!(field(&connections, "id"), connection);

    let one = http_get(&member, &format!("/sessions/{id}")).await;
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    assert!(
        one.contains("\"owner\":\"alice\"") && one.contains(&connection),
        "{one}"
    );
    let all = http_get(&member, "/sessions").await;
    assert!(
        all.starts_with("HTTP/1.1 200") && all.contains(&id),
        "{all}"
    );
    let missing = http_get(&member, &format!("/sessions/{}", uuid())).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let bad = http_get(&member, "/sessions?valid_from_ms=soon").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    let closed = run(&["close", &id]).await.expect("join").expect("close");
    assert_eq!(field(&closed, "id"), connection);
    let error = run(&["get", &id, "--update-before"])
        .await
        .expect("join")
        .expect_err("gone");
    assert!(error.contains("NotFound"), "{error}");
    let error = run(&["connections", "close", &id, &connection])
        .await
        .expect("join")
        .expect_err("gone");
    assert!(error.contains("NotFound"), "{error}");

    run(&["state", "save", "green"])
        .await
        .expect("join")
        .expect("save state");
    assert_eq!(
        run(&["state", "get"])
            .await
            .expect("join")
            .expect("get state"),
        "green\n"
    );
    run(&["state", "clear"])
        .await
        .expect("join")
        .expect("clear state");
    let error = run(&["state", "get"])
        .await
        .expect("join")
        .expect_err("cleared");
    assert!(error.contains("NotFound"), "{error}");
    let cleared = run(&["clear"]).await.expect("join").expect("clear");
    assert!(cleared.starts_with("extended="), "{cleared}");
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_starts_its_cleaner_once_sessions_are_used() {
    let (mut member, _client) = single().await;
    let store = member.server.as_ref().expect("running").kv();
    let sessions =
        chorus_sessions::Sessions::new(store, chorus_sessions::SessionsConfig::default());
    assert_eq!(
        sessions.cleaner_holder().await,
        Ok(None),
        "nothing written for an unused namespace"
    );
    sessions
        .save_session(chorus_sessions::SessionSpec::new(0, "x"))
        .await
        .expect("save");
    let holder = conformance::guard("the member takes the cleaner role", async {
        loop {
            if let Ok(Some(holder)) = sessions.cleaner_holder().await {
                return holder;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(holder, member.name);
    member.stop().await;
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// `--sessions-prefix`, `--sessions-default-validity` and
/// `--sessions-clean-interval` reach the member's sessions service and
/// its cleaner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_settings_of_serve_are_used() {
    const VALIDITY_MS: u64 = 3_000;
    let mut member = Member::new("configured");
    member.config.sessions_prefix = "ops/sessions/".into();
    member.config.sessions_default_validity = VALIDITY_MS;
    member.config.sessions_clean_interval = 100;
    member.start().await;
    let mut etcd = member.client().await;
    common::wait_for_leader(&mut etcd).await;
    let mut client = SessionsClient::connect(member.client_url().to_string())
        .await
        .expect("connect");

    // A deadline in the past becomes now + the default validity.
    let before = wall_ms();
    let kept = save(
        &mut client,
        pb::SaveSessionRequest {
            valid_to_ms: 1,
            owner: "kept".into(),
            ..Default::default()
        },
    )
    .await;
    let after = wall_ms();
    assert!(
        (before + VALIDITY_MS..=after + VALIDITY_MS).contains(&kept.valid_to_ms),
        "valid_to {} not {VALIDITY_MS} ms after [{before}, {after}]",
        kept.valid_to_ms
    );
    let under = |prefix: &'static str| {
        let mut etcd = etcd.clone();
        async move {
            etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .expect("range")
                .kvs()
                .len()
        }
    };
    assert!(under("ops/sessions/").await > 0, "keys under the prefix");
    assert_eq!(
        under("chorus/sessions/").await,
        0,
        "nothing under the default"
    );

    // A session about to expire, without connections: the cleaner (every
    // 100 ms, not the default minute) deletes it soon after.
    let doomed = save(
        &mut client,
        pb::SaveSessionRequest {
            valid_to_ms: wall_ms() + 200,
            owner: "doomed".into(),
            ..Default::default()
        },
    )
    .await;
    conformance::guard("the cleaner deletes the expired session", async {
        loop {
            let found = client
                .get_session(pb::GetSessionRequest {
                    id: doomed.id.clone(),
                    update_before: true,
                })
                .await;
            if matches!(&found, Err(status) if status.code() == tonic::Code::NotFound) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    // The first session is still valid: kept.
    client
        .get_session(pb::GetSessionRequest {
            id: kept.id.clone(),
            update_before: true,
        })
        .await
        .expect("the valid session stays");
    member.stop().await;
}

//! Drives a real `etcdctl` (Debian's etcd-client package; `.ci/run`
//! installs it) against a `chorus serve` process: the claim that etcd's
//! own tool works against chorus unchanged, checked on its output.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

/// Kills the server if the test fails half-way.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!("cannot run etcdctl ({error}): install it with `apt-get install etcd-client` (bash .ci/run does)")
    });
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .expect("write to etcdctl");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("etcdctl runs")
}

/// Runs etcdctl and returns its stdout, failing the test on an error.
fn ok(endpoint: &str, args: &[&str]) -> String {
    ok_with(endpoint, args, None)
}

fn ok_with(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = etcdctl(endpoint, args, stdin);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs etcdctl expecting failure; returns stderr.
fn fails(endpoint: &str, args: &[&str]) -> String {
    let output = etcdctl(endpoint, args, None);
    assert!(!output.status.success(), "etcdctl {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn start(data_dir: &Path, client: u16, peer: u16) -> ServerProcess {
    let log = std::fs::File::create(data_dir.with_extension("log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .stderr(log)
        .spawn()
        .expect("start chorus serve");
    ServerProcess(child)
}

fn wait_healthy(endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if etcdctl(endpoint, &["endpoint", "health"], None)
            .status
            .success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chorus serve never became healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn etcdctl_drives_chorus_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("127.0.0.1:{client}");
    let mut server = start(&data_dir, client, peer);
    wait_healthy(&endpoint);

    // put / get, with the JSON view of revisions.
    assert_eq!(ok(&endpoint, &["put", "greeting", "hello"]), "OK\n");
    assert_eq!(ok(&endpoint, &["get", "greeting"]), "greeting\nhello\n");
    let json = ok(&endpoint, &["get", "greeting", "-w", "json"]);
    assert!(json.contains("\"version\":1"), "{json}");
    assert!(json.contains("\"create_revision\":2"), "{json}");

    // Prefix reads, limits, keys only.
    for (key, value) in [
        ("fruit/apple", "red"),
        ("fruit/kiwi", "green"),
        ("fruit/plum", "purple"),
    ] {
        ok(&endpoint, &["put", key, value]);
    }
    assert_eq!(
        ok(&endpoint, &["get", "--prefix", "fruit/", "--keys-only"]),
        "fruit/apple\n\nfruit/kiwi\n\nfruit/plum\n\n"
    );
    assert_eq!(
        ok(&endpoint, &["get", "--prefix", "fruit/", "--limit", "1"]),
        "fruit/apple\nred\n"
    );
    let count = ok(
        &endpoint,
        &["get", "--prefix", "fruit/", "--keys-only", "-w", "json"],
    );
    assert!(count.contains("\"count\":3"), "{count}");
    assert_eq!(
        ok(
            &endpoint,
            &[
                "get",
                "fruit/",
                "--prefix",
                "--consistency=s",
                "--sort-by=VALUE",
                "--order=DESCEND",
                "--print-value-only"
            ]
        ),
        "red\npurple\ngreen\n"
    );

    // A txn: compare, then the success branch; again, the failure branch.
    let txn = "value(\"greeting\") = \"hello\"\n\nput greeting bonjour\n\nput greeting nope\n\n";
    assert_eq!(ok_with(&endpoint, &["txn"], Some(txn)), "SUCCESS\n\nOK\n");
    assert_eq!(ok_with(&endpoint, &["txn"], Some(txn)), "FAILURE\n\nOK\n");
    assert_eq!(
        ok(&endpoint, &["get", "greeting", "--print-value-only"]),
        "nope\n"
    );

    // A watch sees puts and deletes, from a past revision too.
    let watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["watch", "--prefix", "fruit/", "--rev=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let mut watch = ServerProcess(watch);
    ok(&endpoint, &["del", "fruit/kiwi"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.0.kill();
    let mut events = String::new();
    std::io::Read::read_to_string(
        &mut watch.0.stdout.take().expect("piped stdout"),
        &mut events,
    )
    .expect("watch output");
    assert!(
        events.starts_with("PUT\nfruit/apple\nred\nPUT\nfruit/kiwi\ngreen\nPUT\nfruit/plum\npurple\nDELETE\nfruit/kiwi\n"),
        "{events}"
    );

    // Leases: grant, attach, time-to-live, keep-alive once, revoke.
    let granted = ok(&endpoint, &["lease", "grant", "60"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    ok(
        &endpoint,
        &["put", "session", "alive", &format!("--lease={lease}")],
    );
    let ttl = ok(&endpoint, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("attached keys([session])"), "{ttl}");
    assert!(ok(&endpoint, &["lease", "keep-alive", "--once", &lease]).contains("TTL(60)"));
    assert!(ok(&endpoint, &["lease", "list"]).contains(&lease));
    assert!(ok(&endpoint, &["lease", "revoke", &lease]).contains("revoked"));
    assert_eq!(ok(&endpoint, &["get", "session"]), "");
    assert!(fails(&endpoint, &["lease", "revoke", &lease]).contains("requested lease not found"));

    // Compaction, and the error for reading below it.
    ok(&endpoint, &["compact", "5"]);
    assert!(fails(&endpoint, &["get", "greeting", "--rev=3"])
        .contains("required revision has been compacted"));
    assert!(fails(&endpoint, &["get", "greeting", "--rev=100000"]).contains("future revision"));
    assert!(fails(&endpoint, &["put", "", "x"]).contains("key is not provided"));

    // Cluster and maintenance views.
    let members = ok(&endpoint, &["member", "list"]);
    assert!(
        members.contains(", started, default, http://127.0.0.1:"),
        "{members}"
    );
    let status = ok(&endpoint, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"version\":\"3.5.0\""), "{status}");
    assert!(ok(&endpoint, &["alarm", "list"]).is_empty());

    // A clean stop on SIGTERM, and the data is there after a restart.
    // SAFETY: kill(2) on our own child, not yet waited for.
    let pid = libc::pid_t::try_from(server.0.id()).expect("pid fits");
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = server.0.wait().expect("server exits");
    assert!(
        status.success(),
        "SIGTERM should stop chorus cleanly: {status}"
    );
    let _restarted = start(&data_dir, client, peer);
    wait_healthy(&endpoint);
    assert_eq!(
        ok(&endpoint, &["get", "greeting", "--print-value-only"]),
        "nope\n"
    );
    assert_eq!(ok(&endpoint, &["get", "fruit/kiwi"]), "");
}

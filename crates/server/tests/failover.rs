//! Failover: three `chorus serve` processes on loopback; the leader's
//! process is killed (SIGKILL) in the middle of a write workload. Clients
//! must keep working, no acknowledged write may be lost, the killed member
//! must catch up when restarted, every member must stop cleanly on
//! SIGTERM, and every acknowledged write must survive a full restart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MEMBERS: usize = 3;
/// Tasks whose client knows all three endpoints.
const BALANCED_TASKS: usize = 4;
/// Bound on every "eventually" in this test (a loaded 2-core machine).
const PATIENCE: Duration = Duration::from_secs(10);
/// Bound on a cluster's start (three debug-build processes electing).
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(25);

// ---------------------------------------------------------------------
// The processes.

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

/// Three members' settings and processes. Dropping it (a panic included)
/// kills every process still running; on a panic it prints their logs.
struct Cluster {
    members: Vec<Member>,
    initial_cluster: String,
    // Last, so the processes are gone before their directories.
    _dir: tempfile::TempDir,
}

/// Ports nothing listens on now: all bound at once (so they differ), then
/// released for the servers.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let ports = free_ports(2 * MEMBERS);
        let members: Vec<Member> = (0..MEMBERS)
            .map(|i| Member {
                name: format!("n{}", i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("n{}", i + 1)),
                log: dir.path().join(format!("n{}.log", i + 1)),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            members,
            initial_cluster,
            _dir: dir,
        }
    }

    fn endpoints(&self, which: &[usize]) -> Vec<String> {
        which.iter().map(|&i| self.members[i].endpoint()).collect()
    }

    /// Starts member `i` (again: same arguments, same data dir); its
    /// stdout and stderr go to its log file, appended.
    fn start(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let member = &mut self.members[i];
        assert!(member.child.is_none(), "{} is already running", member.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("opening a log file");
        writeln!(log, "===== test: starting {} =====", member.name).unwrap();
        let client_url = member.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .arg("serve")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", "chorus-failover-test"])
            .args(["--initial-cluster-state", "new"])
            .args(["--election-timeout", "500"])
            .args(["--heartbeat-interval", "50"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting chorus serve");
        member.child = Some(child);
    }

    fn start_all(&mut self) {
        for i in 0..MEMBERS {
            self.start(i);
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    fn kill(&mut self, i: usize) {
        let mut child = self.members[i].child.take().expect("member not running");
        child.kill().expect("killing a member");
        let status = child.wait().expect("reaping a member");
        println!(
            "killed {} (pid {}): {status}",
            self.members[i].name,
            child.id()
        );
    }

    /// SIGTERM to every running member at once, then waits for each to
    /// exit: its exit status and how long it took, or `None` if it did not
    /// exit within `PATIENCE` (it is then killed).
    async fn terminate_all(&mut self) -> Vec<Option<(ExitStatus, Duration)>> {
        let started = Instant::now();
        for member in &self.members {
            let child = member.child.as_ref().expect("member not running");
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill(2) takes plain integers; the pid is our own
            // child, not yet reaped, so it cannot have been reused.
            let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
            assert_eq!(sent, 0, "SIGTERM to {}", member.name);
        }
        let mut outcomes = Vec::new();
        for member in &mut self.members {
            let mut child = member.child.take().unwrap();
            let outcome = loop {
                if let Some(status) = child.try_wait().expect("waiting for a member") {
                    break Some((status, started.elapsed()));
                }
                if started.elapsed() > PATIENCE {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                tokio::time::sleep(POLL).await;
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for member in &self.members {
                let text = std::fs::read_to_string(&member.log).unwrap_or_default();
                eprintln!(
                    "\n===== log of {} ({}) =====\n{text}===== end of {} =====",
                    member.name,
                    member.log.display(),
                    member.name
                );
            }
        }
    }
}

// ---------------------------------------------------------------------
// Talking to the members.

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3))
}

async fn connect(endpoints: &[String]) -> Client {
    // The balanced channel connects lazily: this does not wait for the
    // members to be up.
    Client::connect(endpoints, Some(options()))
        .await
        .expect("creating a client")
}

/// `GET /health` on a member's client port (raw HTTP/1.1): `Ok` when it
/// answers 200 with etcd's `{"health":"true",...}`.
async fn health(port: u16) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| "timed out".to_string())??;
    if answer.starts_with("HTTP/1.1 200") && answer.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(answer)
    }
}

/// Polls `/health` on the given members until all answer healthy.
async fn wait_healthy(cluster: &Cluster, which: &[usize], patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut problems = Vec::new();
        for &i in which {
            if let Err(problem) = health(cluster.members[i].client_port).await {
                problems.push(format!("{}: {problem}", cluster.members[i].name));
            }
        }
        if problems.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "members not healthy after {:?}: {problems:?}",
            started.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Each member's id and the leader it reports (Maintenance.Status on that
/// member alone), or why it did not answer.
async fn status(endpoint: &str) -> Result<(u64, u64), String> {
    let mut client = connect(&[endpoint.to_string()]).await;
    let reply = client.status().await.map_err(|e| e.to_string())?;
    let member = reply
        .header()
        .ok_or_else(|| "status without a header".to_string())?
        .member_id();
    Ok((member, reply.leader()))
}

/// Polls the given members until one says it leads and every other one
/// agrees: the leader's index in `cluster.members` and every member's id.
async fn find_leader(cluster: &Cluster, which: &[usize]) -> (usize, Vec<(usize, u64)>) {
    let started = Instant::now();
    loop {
        let mut ids = Vec::new();
        let mut leaders = BTreeSet::new();
        let mut problems = Vec::new();
        for &i in which {
            match status(&cluster.members[i].endpoint()).await {
                Ok((id, leader)) => {
                    ids.push((i, id));
                    leaders.insert(leader);
                }
                Err(problem) => problems.push(format!("{}: {problem}", cluster.members[i].name)),
            }
        }
        if problems.is_empty() && leaders.len() == 1 {
            let leader = *leaders.first().unwrap();
            if let Some(&(i, _)) = ids.iter().find(|(_, id)| *id == leader) {
                return (i, ids);
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no agreed leader after {:?}: ids {ids:x?}, leaders {leaders:x?}, {problems:?}",
            started.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------
// The workload.

/// One acknowledged put.
#[derive(Clone, Debug)]
struct Ack {
    task: usize,
    key: String,
    value: String,
    /// When the attempt that was acknowledged was sent.
    sent: Instant,
    acked: Instant,
}

#[derive(Default)]
struct Workload {
    acks: Mutex<Vec<Ack>>,
    stop: AtomicBool,
}

impl Workload {
    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }
}

/// Sequential puts of `k/<task>/<n>`: each is retried until acknowledged
/// (an error may mean the outcome is unknown; repeating the same put is
/// harmless), and only acknowledged ones are recorded. Returns the failed
/// attempts' errors, counted.
async fn writer(
    task: usize,
    mut client: Client,
    workload: Arc<Workload>,
) -> BTreeMap<String, usize> {
    let mut failures = BTreeMap::new();
    let mut n = 0u64;
    while !workload.stop.load(Ordering::Relaxed) {
        let key = format!("k/{task}/{n}");
        let value = format!("value of {key} from task {task}");
        while !workload.stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                client.put(key.as_str(), value.as_str(), None),
            )
            .await;
            match attempt {
                Ok(Ok(_)) => {
                    workload.acks.lock().unwrap().push(Ack {
                        task,
                        key: key.clone(),
                        value: value.clone(),
                        sent,
                        acked: Instant::now(),
                    });
                    break;
                }
                Ok(Err(error)) => {
                    let kind = match &error {
                        etcd_client::Error::GRpcStatus(status) => {
                            format!("{:?}: {}", status.code(), status.message())
                        }
                        other => other.to_string(),
                    };
                    *failures.entry(kind).or_default() += 1;
                    // Not a wait for a condition: a pause before retrying.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    *failures.entry("no answer in 5 s".into()).or_default() += 1;
                    // Not a wait for a condition: a pause before retrying.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        n += 1;
    }
    failures
}

/// Reads every acknowledged key (linearizable gets, retried on errors,
/// never on a wrong answer) through `endpoints`; panics on a key missing
/// or holding another value.
async fn verify_all(endpoints: &[String], acks: &[Ack], what: &str) {
    let started = Instant::now();
    let client = connect(endpoints).await;
    let chunk = acks.len().div_ceil(4).max(1);
    let mut readers = Vec::new();
    for part in acks.chunks(chunk) {
        let part = part.to_vec();
        let mut client = client.clone();
        let what = what.to_string();
        readers.push(tokio::spawn(async move {
            for ack in part {
                let read_started = Instant::now();
                let reply = loop {
                    match client.get(ack.key.as_str(), None).await {
                        Ok(reply) => break reply,
                        Err(error) => {
                            assert!(
                                read_started.elapsed() < PATIENCE,
                                "{what}: reading {} kept failing: {error}",
                                ack.key
                            );
                            tokio::time::sleep(POLL).await;
                        }
                    }
                };
                let values: Vec<&[u8]> = reply.kvs().iter().map(|kv| kv.value()).collect();
                assert_eq!(
                    values,
                    vec![ack.value.as_bytes()],
                    "{what}: acknowledged write {} (task {}) lost or changed",
                    ack.key,
                    ack.task
                );
            }
        }));
    }
    for reader in readers {
        reader.await.expect("a reader panicked");
    }
    println!(
        "{what}: all {} acknowledged writes read back (linearizable) in {} ms",
        acks.len(),
        started.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_process_killed_mid_workload_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new();
    let all: Vec<usize> = (0..MEMBERS).collect();

    // 1, 2: three processes, all healthy.
    cluster.start_all();
    let took = wait_healthy(&cluster, &all, START_PATIENCE).await;
    println!("cluster healthy after {} ms", took.as_millis());
    let (first_leader, ids) = find_leader(&cluster, &all).await;
    let expected_ids: BTreeSet<u64> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(expected_ids.len(), MEMBERS, "member ids: {ids:x?}");

    // 3: the workload. One task talks only to a member that does not
    // lead (its requests are forwarded to the leader).
    let single = (first_leader + 1) % MEMBERS;
    let workload = Arc::new(Workload::default());
    let mut tasks = Vec::new();
    for task in 0..BALANCED_TASKS {
        let client = connect(&cluster.endpoints(&all)).await;
        tasks.push(tokio::spawn(writer(task, client, Arc::clone(&workload))));
    }
    let single_task = BALANCED_TASKS;
    let client = connect(&cluster.endpoints(&[single])).await;
    tasks.push(tokio::spawn(writer(
        single_task,
        client,
        Arc::clone(&workload),
    )));
    let task_count = BALANCED_TASKS + 1;

    // Every task is writing.
    let started = Instant::now();
    loop {
        let writing: BTreeSet<usize> = workload.acks().iter().map(|a| a.task).collect();
        if writing.len() == task_count {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "only tasks {writing:?} got a write acknowledged"
        );
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 4: kill the leader's process. It must not be the member the single
    // task talks to (if leadership moved there, move it away first).
    let (mut leader, _) = find_leader(&cluster, &all).await;
    if leader == single {
        let target = (single + 1) % MEMBERS;
        let target_id = ids.iter().find(|(i, _)| *i == target).unwrap().1;
        let mut client = connect(&cluster.endpoints(&[single])).await;
        client
            .move_leader(target_id)
            .await
            .expect("moving leadership off the single-endpoint task's member");
        leader = find_leader(&cluster, &all).await.0;
    }
    assert_ne!(leader, single);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let before_kill = workload.acks().len();
    println!(
        "{} writes acknowledged before the kill; killing the leader {}",
        before_kill, cluster.members[leader].name
    );
    let killed_at = Instant::now();
    cluster.kill(leader);

    // Wait for a write sent after the kill to be acknowledged.
    let failover = loop {
        let first = workload
            .acks()
            .iter()
            .filter(|a| a.sent >= killed_at)
            .map(|a| a.acked - killed_at)
            .min();
        if let Some(first) = first {
            break first;
        }
        assert!(
            killed_at.elapsed() < PATIENCE,
            "no write sent after the kill was acknowledged within {:?}",
            killed_at.elapsed()
        );
        tokio::time::sleep(POLL).await;
    };
    let first_ack_after_kill = workload
        .acks()
        .iter()
        .filter(|a| a.acked >= killed_at)
        .map(|a| a.acked - killed_at)
        .min()
        .unwrap();
    println!(
        "failover: {} ms (first acknowledgement of a put sent after the kill; first acknowledgement of any put: {} ms)",
        failover.as_millis(),
        first_ack_after_kill.as_millis()
    );
    assert!(failover < PATIENCE, "failover took {failover:?}");

    // 5: two more seconds of workload; then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    workload.stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in tasks {
        failures.push(task.await.expect("a writer panicked"));
    }
    let acks = workload.acks();
    let after_kill: Vec<&Ack> = acks.iter().filter(|a| a.sent >= killed_at).collect();
    for (task, failed) in failures.iter().enumerate() {
        let total = acks.iter().filter(|a| a.task == task).count();
        let after = after_kill.iter().filter(|a| a.task == task).count();
        println!(
            "task {task}{}: {total} writes acknowledged ({after} sent after the kill), {} failed attempts: {:?}",
            if task == single_task {
                format!(" (only {})", cluster.members[single].name)
            } else {
                String::new()
            },
            failed.values().sum::<usize>(),
            failed
        );
        assert!(
            after > 0,
            "task {task} got no write acknowledged after the kill"
        );
    }
    println!(
        "writes acknowledged: {} in all, {} sent after the kill",
        acks.len(),
        after_kill.len()
    );
    let keys: BTreeSet<&str> = acks.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys.len(), acks.len(), "a key was recorded twice");

    // 6: nothing acknowledged is lost on the survivors.
    verify_all(&cluster.endpoints(&survivors), &acks, "survivors").await;

    // The killed member restarts and catches up: a serializable get on it
    // (its own state) sees each task's last acknowledged write.
    let restarted_at = Instant::now();
    cluster.start(leader);
    let mut client = connect(&cluster.endpoints(&[leader])).await;
    let last_writes: Vec<&Ack> = (0..task_count)
        .filter_map(|task| {
            acks.iter()
                .filter(|a| a.task == task)
                .max_by_key(|a| a.acked)
        })
        .collect();
    for ack in &last_writes {
        loop {
            let seen = client
                .get(
                    ack.key.as_str(),
                    Some(GetOptions::new().with_serializable()),
                )
                .await
                .ok()
                .and_then(|reply| reply.kvs().first().map(|kv| kv.value().to_vec()));
            if seen.as_deref() == Some(ack.value.as_bytes()) {
                break;
            }
            assert!(
                restarted_at.elapsed() < PATIENCE,
                "restarted {} does not see {} after {:?} (sees {:?})",
                cluster.members[leader].name,
                ack.key,
                restarted_at.elapsed(),
                seen.map(|v| String::from_utf8_lossy(&v).into_owned())
            );
            tokio::time::sleep(POLL).await;
        }
    }
    println!(
        "restarted {} caught up in {} ms",
        cluster.members[leader].name,
        restarted_at.elapsed().as_millis()
    );
    let members = loop {
        match client.member_list().await {
            Ok(reply) => break reply.members().to_vec(),
            Err(error) => {
                assert!(
                    restarted_at.elapsed() < PATIENCE,
                    "member list on the restarted member: {error}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    };
    let listed: BTreeSet<u64> = members.iter().map(|m| m.id()).collect();
    assert_eq!(listed, expected_ids, "member list: {members:?}");
    wait_healthy(&cluster, &all, PATIENCE).await;

    // 7: SIGTERM stops every member cleanly.
    for (i, outcome) in cluster.terminate_all().await.into_iter().enumerate() {
        let name = &cluster.members[i].name;
        let Some((status, took)) = outcome else {
            panic!("{name} did not exit within {PATIENCE:?} of SIGTERM");
        };
        println!(
            "{name} exited after SIGTERM in {} ms: {status}",
            took.as_millis()
        );
        assert!(status.success(), "{name} exited with {status} on SIGTERM");
    }

    // Durability across a full restart.
    cluster.start_all();
    let took = wait_healthy(&cluster, &all, START_PATIENCE).await;
    println!(
        "cluster healthy again after a full restart: {} ms",
        took.as_millis()
    );
    verify_all(&cluster.endpoints(&all), &acks, "after a full restart").await;
}

//! The servers under test: etcd or `chorus serve` members as child
//! processes on loopback, started with the same etcd-style flags, their
//! CPU time and peak RSS read from /proc.
//!
//! Every child is killed when its [`Cluster`] is dropped (an error, a
//! Ctrl-C and a panic included) and, should the harness itself die,
//! by the kernel (`PR_SET_PDEATHSIG`).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, CompactionOptions, ConnectOptions};

/// Bound on a cluster's start: processes up, a leader elected, a write
/// accepted (a loaded 2-core machine).
pub const START_PATIENCE_SECONDS: u64 = 60;
/// One status or probe request during start-up.
const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Between start-up polls.
const POLL_MS: u64 = 20;
/// Lines of a member's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// Bound on one compaction (physical: done when it answers).
const COMPACT_TIMEOUT_SECONDS: u64 = 120;
/// etcd's backend quota, bytes: its maximum (8 GiB), so the restart row's
/// 1 GiB of values never hits the default 2 GiB alarm.
const ETCD_QUOTA_BACKEND_BYTES: u64 = 8 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Etcd,
    Chorus,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Chorus => "chorus",
        }
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

/// A running cluster of one system.
pub struct Cluster {
    pub system: System,
    binary: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    /// Client URLs, the leader's first once [`Cluster::wait_ready`] has run.
    pub endpoints: Vec<String>,
    /// The revision of the last [`Cluster::compact`] (0: none yet).
    compacted: i64,
}

/// Ports nothing listens on now: bound all at once (so they differ), then
/// released for the servers.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

impl Cluster {
    /// Starts `size` members of `system` with data under `dir`.
    pub fn start(system: System, binary: &Path, size: usize, dir: &Path) -> Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ports = free_ports(2 * size)?;
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("{}{}", system.name(), i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.join(format!("member{}", i + 1)),
                log: dir.join(format!("member{}.log", i + 1)),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let endpoints = members.iter().map(Member::client_url).collect();
        let mut cluster = Cluster {
            system,
            binary: binary.to_path_buf(),
            members,
            initial_cluster,
            token: format!("{}-bench", system.name()),
            endpoints,
            compacted: 0,
        };
        for i in 0..size {
            cluster.start_member(i)?;
        }
        Ok(cluster)
    }

    /// Starts member `i` (again: same flags, same data dir).
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        let member = &mut self.members[i];
        if member.child.is_some() {
            bail!("{} is already running", member.name);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .with_context(|| format!("opening {}", member.log.display()))?;
        writeln!(log, "===== peers-bench: starting {} =====", member.name)?;
        let client_url = member.client_url();
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new(&self.binary);
        if self.system == System::Chorus {
            command.arg("serve").env("RUST_LOG", "warn");
        }
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"]);
        if self.system == System::Etcd {
            command
                .args(["--logger", "zap", "--log-level", "warn"])
                .arg(format!("--quota-backend-bytes={ETCD_QUOTA_BACKEND_BYTES}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        member.child = Some(child);
        Ok(())
    }

    /// SIGKILL (a crash: nothing flushed on the way out), then reaps it.
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().context("killing a member")?;
            child.wait().context("reaping a member")?;
        }
        Ok(())
    }

    /// Fails with the member's log tail if any member has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    member.child = None;
                    bail!(
                        "{} exited ({status}); its log ends:\n{}",
                        member.name,
                        log_tail(&member.log)
                    );
                }
            }
        }
        Ok(())
    }

    /// Waits until every member answers, all agree on a leader and the
    /// cluster accepts a write; then puts the leader's URL first in
    /// `endpoints`.
    pub async fn wait_ready(&mut self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            self.check_alive()?;
            let last_problem = match self.probe().await {
                Ok(leader_url) => {
                    self.endpoints.sort_by_key(|url| *url != leader_url);
                    return Ok(());
                }
                Err(problem) => problem,
            };
            if Instant::now() > deadline {
                bail!(
                    "{} members not ready within {} s: {last_problem}",
                    self.system.name(),
                    patience.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// The leader's client URL if the cluster is ready, else why not.
    async fn probe(&self) -> Result<String, String> {
        let mut leader = None;
        let mut leader_url = None;
        for member in &self.members {
            let url = member.client_url();
            let mut client = probe_client(&url).await?;
            let status =
                tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), client.status())
                    .await
                    .map_err(|_| format!("{url}: status timed out"))?
                    .map_err(|e| format!("{url}: {e}"))?;
            let me = status.header().map_or(0, |h| h.member_id());
            if status.leader() == 0 {
                return Err(format!("{url} knows no leader"));
            }
            if leader.is_some_and(|l| l != status.leader()) {
                return Err("members disagree on the leader".into());
            }
            leader = Some(status.leader());
            if me == status.leader() {
                leader_url = Some(url);
            }
        }
        let leader_url = leader_url.ok_or("the leader is not among the members")?;
        let mut client = probe_client(&leader_url).await?;
        tokio::time::timeout(
            Duration::from_millis(PROBE_TIMEOUT_MS),
            client.put("bench/ready", "1", None),
        )
        .await
        .map_err(|_| "a first write timed out".to_string())?
        .map_err(|e| format!("a first write failed: {e}"))?;
        Ok(leader_url)
    }

    /// Drops the history older than the current revision (etcd's
    /// Compact, physical), so a row starts from the same state whatever
    /// the rows before it wrote — without it the faster server would carry
    /// more history into every later row.
    pub async fn compact(&mut self) -> Result<()> {
        let url = self.endpoints.first().context("a cluster with no member")?;
        let work = async {
            let mut client = Client::connect([url], None).await?;
            let revision = client
                .get("bench/ready", None)
                .await?
                .header()
                .map_or(0, |h| h.revision());
            if revision > self.compacted {
                client
                    .compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await?;
            }
            anyhow::Ok(revision)
        };
        let revision = tokio::time::timeout(Duration::from_secs(COMPACT_TIMEOUT_SECONDS), work)
            .await
            .with_context(|| format!("compacting {url}: timed out"))?
            .with_context(|| format!("compacting {url}"))?;
        self.compacted = self.compacted.max(revision);
        Ok(())
    }

    /// Running members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url()
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
    }
}

async fn probe_client(url: &str) -> Result<Client, String> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_millis(PROBE_TIMEOUT_MS));
    tokio::time::timeout(
        Duration::from_millis(PROBE_TIMEOUT_MS),
        Client::connect([url], Some(options)),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))
}

/// Asks the kernel to SIGKILL the child when this thread's process dies,
/// so even a `kill -9` of the harness leaves no server behind. Children
/// are spawned from the main thread only (the harness's runtime is
/// single-threaded): the signal fires when the spawning thread exits.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub fn log_tail(path: &Path) -> String {
    text_tail(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The last lines of `text`.
pub fn text_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// CPU time (user + system) a process has used, seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: fields are counted
    // after its closing parenthesis, starting with the state (field 3).
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_second > 0).then(|| (utime + stime) as f64 / ticks_per_second as f64)
}

/// Resets the process's peak RSS to its current RSS (Linux ≥ 4.0; needs
/// the right to write its clear_refs, which we have over our children).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Peak resident set size since start or the last reset, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_and_rss() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(peak_rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(cpu_seconds(u32::MAX).is_none());
        assert!(peak_rss_kib(u32::MAX).is_none());
    }
}

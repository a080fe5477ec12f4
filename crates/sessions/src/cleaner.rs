//! The periodic clean-up, on one node at a time.
//!
//! Election: a node grants itself a lease and creates the cleaner key
//! with it in a txn that requires the key to be absent (create_revision
//! 0). While the key exists every other node's txn fails, and they try
//! again every `retry_ms`. The holder keeps the lease alive; when the
//! lease is lost (`LeaseNotFound`, or its key is gone) the holder stops
//! cleaning and campaigns again. Every clean-up txn of the holder also
//! compares the key's lease with its own, so a holder whose lease expired
//! while it was paused cannot apply a decision: the store refuses it.
//! Stopping revokes the lease, so another node takes over at once.

use std::time::Duration;

use chorus_backend::{
    BackendError, Compare, CompareResult, CompareTarget, KvBackend, KvError, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Sessions, SessionsError};

/// How the cleaner runs.
#[derive(Clone, Debug)]
pub struct CleanerConfig {
    /// Written in the cleaner key, so operators see who holds it.
    pub holder: String,
    /// Time between two clean-ups by the holder.
    pub interval_ms: u64,
    /// The election lease's TTL: how long the role stays with a node
    /// that stopped without revoking it.
    pub lease_ttl_s: i64,
    /// Time between two attempts to take the role while another node
    /// holds it (or the store is unreachable).
    pub retry_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> CleanerConfig {
        CleanerConfig {
            holder: "chorus".into(),
            interval_ms: 60_000,
            lease_ttl_s: 10,
            retry_ms: 1_000,
        }
    }
}

/// A running cleaner task; see the module docs.
#[derive(Debug)]
pub struct Cleaner {
    stop: watch::Sender<bool>,
    holding: watch::Receiver<bool>,
    runs: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Cleaner {
    /// Whether this cleaner holds the role now.
    pub fn is_holding(&self) -> bool {
        *self.holding.borrow()
    }

    /// Waits until [`Cleaner::is_holding`] is `holding`.
    pub async fn wait_holding(&self, holding: bool) {
        let mut watcher = self.holding.clone();
        let _ = watcher.wait_for(|now| *now == holding).await;
    }

    /// Clean-ups completed by this cleaner so far.
    pub fn runs(&self) -> u64 {
        *self.runs.borrow()
    }

    /// Waits until at least `count` clean-ups have completed.
    pub async fn wait_runs(&self, count: u64) {
        let mut watcher = self.runs.clone();
        let _ = watcher.wait_for(|runs| *runs >= count).await;
    }

    /// Stops the task and gives the role up (revoking the lease).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl<B: KvBackend> Sessions<B> {
    /// Starts the periodic clean-up on this node: it runs while this node
    /// holds the cleaner key (see the module docs of `cleaner`).
    pub fn spawn_cleaner(&self, config: CleanerConfig) -> Cleaner {
        let (stop, stopping) = watch::channel(false);
        let (holding_tx, holding) = watch::channel(false);
        let (runs_tx, runs) = watch::channel(0);
        let sessions = self.clone();
        let task = tokio::spawn(async move {
            let state = LoopState {
                sessions,
                config,
                stopping,
                holding: holding_tx,
                runs: runs_tx,
            };
            state.run().await;
        });
        Cleaner {
            stop,
            holding,
            runs,
            task,
        }
    }

    /// Who holds the cleaner role now (the holder name in the key).
    pub async fn cleaner_holder(&self) -> Result<Option<String>, SessionsError> {
        let kv = self.backend().get(self.keys().cleaner()).await?;
        Ok(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}

struct LoopState<B> {
    sessions: Sessions<B>,
    config: CleanerConfig,
    stopping: watch::Receiver<bool>,
    holding: watch::Sender<bool>,
    runs: watch::Sender<u64>,
}

impl<B: KvBackend> LoopState<B> {
    async fn run(mut self) {
        let retry = Duration::from_millis(self.config.retry_ms);
        while !*self.stopping.borrow() {
            match self.campaign().await {
                Ok(Some(lease)) => {
                    self.holding.send_replace(true);
                    tracing::info!(holder = %self.config.holder, lease, "took the sessions cleaner role");
                    self.hold(lease).await;
                    self.holding.send_replace(false);
                    // Best effort: the lease may be gone already, and if
                    // this fails it expires within its TTL.
                    let _ = self.sessions.backend().lease_revoke(lease).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "campaign for the cleaner role failed"),
            }
            if self.pause(retry).await {
                break;
            }
        }
    }

    /// Sleeps for `duration`; true when asked to stop meanwhile.
    async fn pause(&mut self, duration: Duration) -> bool {
        let mut stopping = self.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => *self.stopping.borrow(),
            _ = stopping.wait_for(|stop| *stop) => true,
        }
    }

    /// Takes the role if nobody holds it: the lease id on success.
    async fn campaign(&self) -> Result<Option<i64>, BackendError> {
        let backend = self.sessions.backend();
        let key = self.sessions.keys().cleaner();
        // A read first: while someone holds the role, trying costs no
        // write (no lease granted and revoked every retry).
        if backend.get(key.clone()).await?.is_some() {
            return Ok(None);
        }
        let lease = backend.lease_grant(self.config.lease_ttl_s).await?.id;
        let taken = backend
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Create(0),
                    key: key.clone(),
                    range_end: Default::default(),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: self.config.holder.clone().into(),
                    lease,
                    ..Default::default()
                })],
                failure: vec![RequestOp::Range(RangeRequest {
                    key,
                    ..Default::default()
                })],
            })
            .await;
        match taken {
            Ok(response) if response.succeeded => Ok(Some(lease)),
            other => {
                let _ = backend.lease_revoke(lease).await;
                other.map(|_| None)
            }
        }
    }

    /// Cleans every `interval_ms` and keeps the lease alive (three times
    /// per TTL) until the role is lost or the cleaner is stopped.
    async fn hold(&mut self, lease: i64) {
        let interval = Duration::from_millis(self.config.interval_ms);
        let ttl_ms = u64::try_from(self.config.lease_ttl_s.max(1)).unwrap_or(1) * 1_000;
        let keep_alive_every = Duration::from_millis(ttl_ms / 3);
        let mut next_clear = tokio::time::Instant::now();
        let mut next_keep_alive = tokio::time::Instant::now() + keep_alive_every;
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_keep_alive {
                match self.sessions.backend().lease_keep_alive(lease).await {
                    Ok(_) => {}
                    Err(BackendError::Kv(KvError::LeaseNotFound)) => {
                        tracing::warn!("the sessions cleaner lease expired; giving up the role");
                        return;
                    }
                    Err(error) => tracing::debug!(%error, "cleaner keep-alive failed"),
                }
                next_keep_alive = now + keep_alive_every;
            }
            if now >= next_clear {
                match self.clear(lease).await {
                    Ok(()) => {}
                    Err(SessionsError::NotCleaner) => {
                        tracing::warn!("lost the sessions cleaner role");
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "sessions clean-up failed"),
                }
                next_clear = tokio::time::Instant::now() + interval;
            }
            let wake = next_clear.min(next_keep_alive);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.stopping.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn clear(&self, lease: i64) -> Result<(), SessionsError> {
        // The key may be gone (deleted by an operator, or its lease
        // expired and another node took it) while the lease lives on.
        let held = self
            .sessions
            .backend()
            .get(self.sessions.keys().cleaner())
            .await?;
        if held.map(|kv| kv.lease) != Some(lease) {
            return Err(SessionsError::NotCleaner);
        }
        let plan = self.sessions.plan_clear().await?;
        let report = self.sessions.apply_clear_guarded(plan, Some(lease)).await?;
        if !report.deleted.is_empty() || !report.extended.is_empty() {
            tracing::info!(
                deleted = report.deleted.len(),
                extended = report.extended.len(),
                skipped = report.skipped.len(),
                "cleared expired sessions"
            );
        }
        self.runs.send_modify(|runs| *runs += 1);
        Ok(())
    }
}

//! The node's clock: wall-clock milliseconds at start, advanced by a
//! monotonic clock, so time never goes backwards within a process (the core
//! requires that) and stays close across nodes (machines see the leader's
//! clock in `ApplyMeta::time_ms`, e.g. for lease expiry).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    started: Instant,
    started_unix_ms: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            started: Instant::now(),
            started_unix_ms,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.started_unix_ms + self.started.elapsed().as_millis() as u64
    }

    /// The instant at which `now_ms()` reaches `ms`.
    pub(crate) fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        let offset = ms.saturating_sub(self.started_unix_ms);
        tokio::time::Instant::from_std(self.started + std::time::Duration::from_millis(offset))
    }
}

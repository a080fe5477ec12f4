//! Prometheus metrics, in the text exposition format (version 0.0.4):
//! Raft progress, apply lag, leader changes, the WAL's write-and-sync
//! latency, and request latency and errors by gRPC method.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chorus_log::{LatencyHistogram, LATENCY_BOUNDS_US};
use chorus_raft::{Role, ServerProgress};
use tonic::Status;

/// Counters the server updates as it runs; gauges are read at scrape time.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<&'static str, LatencyHistogram>>,
    errors: Mutex<BTreeMap<(&'static str, String), u64>>,
    leader_changes: AtomicU64,
}

impl Metrics {
    /// Counts one request of `method` that started at `started`.
    pub fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        lock(&self.requests)
            .entry(method)
            .or_default()
            .record(micros);
        if let Err(status) = result {
            *lock(&self.errors)
                .entry((method, format!("{:?}", status.code())))
                .or_default() += 1;
        }
    }

    pub fn leader_changed(&self) {
        self.leader_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition: this member's Raft progress, the WAL's latency
    /// histogram and the request metrics.
    pub fn render(&self, progress: &ServerProgress, wal: &chorus_log::LogStats) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "chorus_raft_term",
            "Current Raft term.",
            progress.term,
        );
        gauge(
            &mut out,
            "chorus_raft_commit_index",
            "Highest log index known committed.",
            progress.commit_index,
        );
        gauge(
            &mut out,
            "chorus_raft_applied_index",
            "Highest log index applied to the key-value machine.",
            progress.applied_index,
        );
        gauge(
            &mut out,
            "chorus_raft_apply_lag",
            "Committed entries not yet applied.",
            progress.commit_index.saturating_sub(progress.applied_index),
        );
        gauge(
            &mut out,
            "chorus_raft_is_leader",
            "1 if this member leads the key-value cluster.",
            u64::from(progress.role == Role::Leader),
        );
        gauge(
            &mut out,
            "chorus_raft_has_leader",
            "1 if this member knows a leader.",
            u64::from(progress.leader.is_some()),
        );
        let _ = writeln!(
            out,
            "# HELP chorus_raft_leader_changes_total Leader changes seen by this member.\n# TYPE chorus_raft_leader_changes_total counter\nchorus_raft_leader_changes_total {}",
            self.leader_changes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP chorus_wal_syncs_total WAL fdatasyncs.\n# TYPE chorus_wal_syncs_total counter\nchorus_wal_syncs_total {}",
            wal.wal_syncs
        );
        let _ = writeln!(
            out,
            "# HELP chorus_wal_bytes_written_total Bytes written to the WAL.\n# TYPE chorus_wal_bytes_written_total counter\nchorus_wal_bytes_written_total {}",
            wal.wal_bytes_written
        );
        let name = "chorus_wal_flush_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to write and sync one WAL batch.\n# TYPE {name} histogram"
        );
        histogram(&mut out, name, "", &wal.wal_flush_latency);
        let name = "chorus_grpc_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a gRPC request, by method.\n# TYPE {name} histogram"
        );
        for (method, latency) in lock(&self.requests).iter() {
            histogram(&mut out, name, &format!("method=\"{method}\","), latency);
        }
        let name = "chorus_grpc_request_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} gRPC requests answered with an error, by method and code.\n# TYPE {name} counter"
        );
        for ((method, code), count) in lock(&self.errors).iter() {
            let _ = writeln!(out, "{name}{{method=\"{method}\",code=\"{code}\"}} {count}");
        }
        out
    }
}

/// One histogram's series; `labels` is empty or ends with a comma.
fn histogram(out: &mut String, name: &str, labels: &str, latency: &LatencyHistogram) {
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BOUNDS_US.iter().zip(latency.counts.iter()) {
        cumulative += count;
        let seconds = *bound as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"{seconds}\"}} {cumulative}"
        );
    }
    let total = latency.count();
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {total}");
    let plain = labels.trim_end_matches(',');
    let braces = if plain.is_empty() {
        String::new()
    } else {
        format!("{{{plain}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", latency.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {total}");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let metrics = Metrics::default();
        let started = Instant::now();
        metrics.observe("Range", started, &Ok::<(), Status>(()));
        metrics.observe(
            "Range",
            started,
            &Err::<(), Status>(Status::unavailable("x")),
        );
        let mut wal = chorus_log::LogStats::default();
        wal.wal_flush_latency.record(150);
        wal.wal_flush_latency.record(10_000_000);
        let text = metrics.render(&ServerProgress::default(), &wal);
        assert!(text.contains("chorus_wal_flush_duration_seconds_bucket{le=\"0.0001\"} 0"));
        assert!(text.contains("chorus_wal_flush_duration_seconds_bucket{le=\"0.0002\"} 1"));
        assert!(text.contains("chorus_wal_flush_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("chorus_wal_flush_duration_seconds_count 2"));
        assert!(text.contains("chorus_grpc_request_duration_seconds_count{method=\"Range\"} 2"));
        assert!(text
            .contains("chorus_grpc_request_errors_total{method=\"Range\",code=\"Unavailable\"} 1"));
    }
}
